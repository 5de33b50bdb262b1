# Sourced by tests/all.sh: starts a throwaway PostgreSQL cluster for this run and stops
# it when the run ends. Exports BILLING_TEST_POSTGRES, the URL of a database the tests
# make their own schemas in. Fails (it never skips) when the server cannot start.
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
if [ ! -x "$PG_BIN/initdb" ]; then
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
fi
if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
    echo "PostgreSQL's server binaries are missing: installing Debian's postgresql" >&2
    apt-get install -y -q postgresql >/dev/null
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi

PG_DIR=$(mktemp -d /tmp/billing-pg.XXXXXX)
PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# initdb and the server refuse to run as root: run them as an unprivileged user, from a
# directory it may enter (the checkout may be under /root).
as_owner() { (cd "$PG_DIR" && "$@"); }
if [ "$(id -u)" = 0 ]; then
    chown nobody "$PG_DIR"
    as_owner() { (cd "$PG_DIR" && runuser -u nobody -- "$@"); }
fi
as_owner "$PG_BIN/initdb" -D "$PG_DIR/data" -U billing --auth=trust -E UTF8 --no-locale >"$PG_DIR/initdb.log" 2>&1 \
    || { cat "$PG_DIR/initdb.log" >&2; exit 1; }
stop_postgres() { as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$PG_DIR"; }
trap stop_postgres EXIT
as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$PG_DIR -c max_connections=300" >/dev/null \
    || { cat "$PG_DIR/server.log" >&2; exit 1; }
export BILLING_TEST_POSTGRES="postgresql://billing@127.0.0.1:$PG_PORT/postgres"
echo "postgresql: a throwaway cluster on 127.0.0.1:$PG_PORT"
