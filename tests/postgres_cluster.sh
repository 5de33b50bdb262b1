# Sourced by tests/all.sh: starts a throwaway PostgreSQL cluster for this run and stops
# it when the run ends. Exports BILLING_TEST_POSTGRES, the URL of a database the tests
# make their own schemas in, and BILLING_TEST_POSTGRES_CA, the CA of the server's TLS
# certificate. Fails (it never skips) when the server cannot start.
install_debian_packages() { apt-get update -q >/dev/null && apt-get install -y -q "$@" >/dev/null; }
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
if [ ! -x "$PG_BIN/initdb" ]; then
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
fi
if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
    echo "PostgreSQL's server binaries are missing: installing Debian's postgresql" >&2
    install_debian_packages postgresql
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
# TLS with a certificate of a throwaway CA; the role `tls_only` may connect over TLS only.
command -v openssl >/dev/null || install_debian_packages openssl
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=billing-test-ca \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
    -keyout "$PG_DIR/ca.key" -out "$PG_DIR/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=127.0.0.1 \
    -keyout "$PG_DIR/server.key" -out "$PG_DIR/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$PG_DIR/server.ext"
openssl x509 -req -in "$PG_DIR/server.csr" -CA "$PG_DIR/ca.pem" -CAkey "$PG_DIR/ca.key" -CAcreateserial -days 2 \
    -extfile "$PG_DIR/server.ext" -out "$PG_DIR/server.crt" 2>/dev/null
chmod 600 "$PG_DIR/server.key"
if [ "$(id -u)" = 0 ]; then
    chown nobody "$PG_DIR/server.key" "$PG_DIR/server.crt"
fi
{ echo "hostnossl all tls_only 0.0.0.0/0 reject"; cat "$PG_DIR/data/pg_hba.conf"; } > "$PG_DIR/pg_hba.conf"
as_owner cp "$PG_DIR/pg_hba.conf" "$PG_DIR/data/pg_hba.conf"
stop_postgres() { as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$PG_DIR"; }
trap stop_postgres EXIT
as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$PG_DIR -c max_connections=300 \
        -c ssl=on -c ssl_cert_file=$PG_DIR/server.crt -c ssl_key_file=$PG_DIR/server.key" >/dev/null \
    || { cat "$PG_DIR/server.log" >&2; exit 1; }
export BILLING_TEST_POSTGRES="postgresql://billing@127.0.0.1:$PG_PORT/postgres"
export BILLING_TEST_POSTGRES_CA="$PG_DIR/ca.pem"
"$PG_BIN/psql" -X -q "$BILLING_TEST_POSTGRES" -c "CREATE ROLE tls_only LOGIN SUPERUSER" >/dev/null
echo "postgresql: a throwaway cluster on 127.0.0.1:$PG_PORT"
