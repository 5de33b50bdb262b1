//! The PostgreSQL schema and its versioned upgrades, tracked in `billing_schema`. A
//! migration is never edited once released: add the next one.
//!
//! Every table of user data leads with `user_id` (its primary key, and every unique
//! key), so that a sharded PostgreSQL (Citus) can distribute the tables by it and keep
//! a user's rows together. Columns are those of the SQLite schema, under the same names.

use postgres::Client;

use super::postgres::pg_error;
use super::{StoreError, StoreResult};

const MIGRATIONS: &[&str] = &[
    // 1: everything the SQLite schema has at its version 3, and the per-user lock rows.
    r#"
    CREATE TABLE user_locks (
        user_id TEXT PRIMARY KEY   -- one row per user, locked FOR UPDATE by each write
    );

    CREATE TABLE accounts (
        user_id              TEXT PRIMARY KEY,
        created_at           BIGINT NOT NULL,     -- unix milliseconds
        credits              NUMERIC NOT NULL,
        free_trial_awarded   BOOLEAN NOT NULL,
        free_anchor          BIGINT NOT NULL,
        free_period_start    BIGINT NOT NULL,
        free_used            BIGINT NOT NULL,
        day                  INTEGER NOT NULL,    -- julian day in the catalog's offset
        day_subscription_ops BIGINT NOT NULL,
        day_freemium_ops     BIGINT NOT NULL,
        subscription         JSON,                -- the current or last subscription
        subscription_due_at  BIGINT               -- unix ms; NULL once ended
    );
    CREATE INDEX accounts_by_due ON accounts (subscription_due_at) WHERE subscription_due_at IS NOT NULL;

    CREATE TABLE ledger (
        id                    BIGINT GENERATED ALWAYS AS IDENTITY,
        user_id               TEXT NOT NULL,
        kind                  TEXT NOT NULL,
        source                TEXT,
        operation             TEXT,
        credits_delta         NUMERIC NOT NULL,
        credits_balance_after NUMERIC NOT NULL,
        ops_delta             INTEGER NOT NULL,
        allowance_owner       TEXT,
        allowance_start       BIGINT,
        op_day                INTEGER,
        idempotency_key       TEXT,
        request_hash          TEXT,
        reference             TEXT,
        metadata              JSON,
        created_at            BIGINT NOT NULL,
        PRIMARY KEY (user_id, id)
    );
    CREATE INDEX ledger_by_id ON ledger (id);
    CREATE UNIQUE INDEX ledger_by_key ON ledger (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
    CREATE UNIQUE INDEX ledger_one_refund ON ledger (user_id, reference) WHERE kind = 'refund';

    -- Append-only: a row is never changed or removed, and the table is never emptied.
    -- An INSERT cannot overwrite (there is no INSERT OR REPLACE; ON CONFLICT DO UPDATE
    -- is an UPDATE, refused here).
    CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'the ledger is append-only' USING ERRCODE = 'restrict_violation';
    END $$;
    CREATE TRIGGER ledger_no_update_or_delete BEFORE UPDATE OR DELETE ON ledger
        FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
    CREATE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON ledger
        FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

    CREATE TABLE payments (
        id                   TEXT NOT NULL,
        user_id              TEXT NOT NULL,
        purpose              TEXT NOT NULL,
        plan_code            TEXT,
        package_code         TEXT,
        amount               NUMERIC NOT NULL,
        currency             TEXT NOT NULL,
        credits              NUMERIC,
        description          TEXT NOT NULL,
        status               TEXT NOT NULL,
        provider_payment_id  TEXT,
        provider_key         TEXT NOT NULL,
        save_payment_method  BOOLEAN NOT NULL,
        return_url           TEXT,
        confirmation_url     TEXT,
        renewal_of           TEXT,               -- one renewal per subscription period
        refund_id            TEXT,
        payload              JSON,               -- the provider's last object
        idempotency_key      TEXT,
        request_hash         TEXT,
        created_at           BIGINT NOT NULL,
        updated_at           BIGINT NOT NULL,
        paid_at              BIGINT,
        refunded_amount      NUMERIC NOT NULL DEFAULT 0,
        paid_subscription_id TEXT,
        paid_from            BIGINT,
        paid_until           BIGINT,
        seq                  BIGINT GENERATED ALWAYS AS IDENTITY,  -- insertion order
        PRIMARY KEY (user_id, id)
    );
    CREATE INDEX payments_by_id ON payments (id);
    CREATE INDEX payments_by_provider_id ON payments (provider_payment_id);
    CREATE UNIQUE INDEX payments_one_provider_id ON payments (user_id, provider_payment_id);
    CREATE UNIQUE INDEX payments_by_key ON payments (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
    CREATE UNIQUE INDEX payments_one_renewal ON payments (user_id, renewal_of);
    CREATE INDEX payments_by_user ON payments (user_id, created_at, seq);
    CREATE INDEX payments_unsent ON payments (created_at) WHERE status = 'new' AND purpose = 'renewal';

    CREATE TABLE payment_methods (
        user_id  TEXT PRIMARY KEY,
        card     JSON NOT NULL,                  -- the saved card
        saved_at BIGINT NOT NULL
    );
    "#,
    // 2: metered usage, as the SQLite schema's version 4.
    r#"
    CREATE TABLE usage_events (
        id              BIGINT GENERATED ALWAYS AS IDENTITY,
        user_id         TEXT NOT NULL,
        metric          TEXT NOT NULL,
        amount          BIGINT NOT NULL,
        model_id        TEXT,
        chat_id         TEXT,
        hold_id         TEXT,
        at              BIGINT NOT NULL,    -- unix ms: when the usage happened
        period_window   TEXT NOT NULL,
        day_window      TEXT NOT NULL,
        over_limit      BOOLEAN NOT NULL,
        overage_credits NUMERIC NOT NULL,
        metadata        JSON,
        idempotency_key TEXT,               -- a keyed call's, on its first event only,
        events          INTEGER,            -- with the number of events the call recorded
        request_hash    TEXT,               -- and its request's fingerprint
        created_at      BIGINT NOT NULL,
        PRIMARY KEY (user_id, id)
    );
    CREATE INDEX usage_by_user ON usage_events (user_id, metric, at);
    CREATE UNIQUE INDEX usage_by_key ON usage_events (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
    CREATE TRIGGER usage_no_update_or_delete BEFORE UPDATE OR DELETE ON usage_events
        FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
    CREATE TRIGGER usage_no_truncate BEFORE TRUNCATE ON usage_events
        FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

    CREATE TABLE usage_counters (
        user_id TEXT NOT NULL,
        metric  TEXT NOT NULL,
        span    TEXT NOT NULL,              -- the window: p:<owner>:<start ms> or d:<day>
        used    BIGINT NOT NULL,
        held    BIGINT NOT NULL,
        PRIMARY KEY (user_id, span, metric)
    );

    CREATE TABLE holds (
        user_id    TEXT NOT NULL,
        id         TEXT NOT NULL,
        status     TEXT NOT NULL,
        expires_at BIGINT NOT NULL,         -- unix ms
        data       JSON NOT NULL,           -- the hold
        created_at BIGINT NOT NULL,
        PRIMARY KEY (user_id, id)
    );
    CREATE INDEX holds_by_id ON holds (id);
    CREATE INDEX holds_open ON holds (user_id, expires_at) WHERE status = 'open';
    "#,
    // 3: credit lots, as the SQLite schema's version 5.
    r#"
    CREATE TABLE credit_lots (
        user_id      TEXT NOT NULL,
        id           BIGINT NOT NULL,       -- the entry that created it
        amount       NUMERIC NOT NULL,
        remaining    NUMERIC NOT NULL,
        priority     SMALLINT NOT NULL,
        category     TEXT NOT NULL,
        effective_at BIGINT NOT NULL,       -- unix ms
        expires_at   BIGINT,                -- unix ms; NULL: never
        source       TEXT NOT NULL,
        reference    TEXT,
        PRIMARY KEY (user_id, id)
    );
    CREATE INDEX credit_lots_open ON credit_lots (user_id, id) WHERE remaining <> 0;

    CREATE TABLE lot_allocations (
        user_id  TEXT NOT NULL,
        entry_id BIGINT NOT NULL,
        lot_id   BIGINT NOT NULL,
        seq      INTEGER NOT NULL,          -- its place among the entry's allocations
        amount   NUMERIC NOT NULL,          -- drawn (+) or given back (-)
        PRIMARY KEY (user_id, entry_id, lot_id)
    );

    INSERT INTO credit_lots (user_id, id, amount, remaining, priority, category, effective_at, expires_at, source, reference)
    SELECT a.user_id, coalesce((SELECT max(l.id) FROM ledger l WHERE l.user_id = a.user_id), 0), a.credits, a.credits,
           50, 'paid', a.created_at, NULL, 'import', NULL
    FROM accounts a WHERE a.credits > 0;
    "#,
    // 4: saved methods by the provider's id, receipt contacts, and the claim of the call
    // sending a payment, as the SQLite schema's version 6.
    r#"
    ALTER TABLE payments ADD COLUMN sending_until BIGINT;    -- unix ms
    ALTER TABLE payment_methods ADD COLUMN method_id TEXT;
    UPDATE payment_methods SET method_id = card->>'method_id';
    CREATE INDEX payment_methods_by_id ON payment_methods (method_id);

    CREATE TABLE customer_contacts (
        user_id    TEXT PRIMARY KEY,
        email      TEXT,
        phone      TEXT,
        updated_at BIGINT NOT NULL
    );
    "#,
    // 5: the outbox of domain events and the audit log, as the SQLite schema's version 7.
    // Event ids come from a sequence, in the order transactions write them, not the order
    // they commit, so a cursor is the pair (writing transaction, id) and a reader takes
    // only events of transactions older than every one still running
    // (`pg_snapshot_xmin`): no event can later appear before what a consumer has
    // acknowledged.
    r#"
    CREATE TABLE events (
        user_id     TEXT NOT NULL,
        sequence    BIGINT NOT NULL,        -- 1, 2, 3 ... per user
        id          BIGINT GENERATED ALWAYS AS IDENTITY,
        tx_id       XID8 NOT NULL DEFAULT pg_current_xact_id(),
        event_id    TEXT NOT NULL,
        type        TEXT NOT NULL,
        occurred_at BIGINT NOT NULL,        -- unix ms
        payload     JSON NOT NULL,
        PRIMARY KEY (user_id, sequence)
    );
    CREATE INDEX events_in_commit_order ON events (tx_id, id);
    CREATE INDEX events_by_event_id ON events (event_id);
    CREATE INDEX events_by_time ON events (occurred_at);

    CREATE FUNCTION events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'events are never changed' USING ERRCODE = 'restrict_violation';
    END $$;
    CREATE TRIGGER events_no_update BEFORE UPDATE ON events
        FOR EACH ROW EXECUTE FUNCTION events_refuse_change();

    CREATE TABLE event_consumers (
        consumer        TEXT PRIMARY KEY,
        tx_id           XID8 NOT NULL DEFAULT '0',   -- the last event acknowledged
        id              BIGINT NOT NULL DEFAULT 0,
        failed_attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at BIGINT,                       -- unix ms
        stopped_at      BIGINT                        -- unix ms
    );

    -- Who did what, append-only like the ledger. user_id is '' for an operation about
    -- no user (a catalog reload, a webhook about nobody's payment).
    CREATE TABLE audit_log (
        user_id     TEXT NOT NULL,
        id          BIGINT GENERATED ALWAYS AS IDENTITY,
        actor       TEXT NOT NULL,
        action      TEXT NOT NULL,
        target      TEXT,
        outcome     TEXT NOT NULL,
        reason      TEXT,
        before      JSON,
        after       JSON,
        error       JSON,
        request_id  TEXT,
        created_at  BIGINT NOT NULL,        -- unix ms
        PRIMARY KEY (user_id, id)
    );
    CREATE INDEX audit_by_id ON audit_log (id);
    CREATE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'the audit log is append-only' USING ERRCODE = 'restrict_violation';
    END $$;
    CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit_log
        FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
    CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit_log
        FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

    -- Crypto payments, as in SQLite. The references and the chain heads are no user's
    -- (a reference table in Citus); a transfer's rows lead with the user it paid.
    ALTER TABLE payments ADD COLUMN crypto JSON;
    ALTER TABLE payments ADD COLUMN crypto_state TEXT;
    CREATE INDEX payments_by_crypto_state ON payments (crypto_state) WHERE crypto_state IS NOT NULL;

    CREATE TABLE crypto_references (
        chain_id   BIGINT NOT NULL,
        token      TEXT NOT NULL,
        reference  BIGINT NOT NULL,
        user_id    TEXT NOT NULL,
        payment_id TEXT NOT NULL,
        held_until BIGINT NOT NULL,
        PRIMARY KEY (chain_id, token, reference)
    );

    CREATE TABLE crypto_observations (
        user_id      TEXT NOT NULL,
        chain_id     BIGINT NOT NULL,
        tx_hash      TEXT NOT NULL,
        log_index    BIGINT NOT NULL,
        payment_id   TEXT,
        observation  JSON NOT NULL,
        seen_at      BIGINT NOT NULL,
        PRIMARY KEY (user_id, chain_id, tx_hash, log_index)
    );
    CREATE INDEX crypto_observations_by_payment ON crypto_observations (user_id, payment_id);

    CREATE TABLE chain_heads (
        chain_id     BIGINT PRIMARY KEY,
        block_number BIGINT NOT NULL
    );
    "#,
    // 6: the overview's purchased periods and money movements, as the SQLite schema's
    // version 8.
    r#"
    CREATE TABLE purchased_periods (
        user_id        TEXT NOT NULL,
        id             BIGINT GENERATED ALWAYS AS IDENTITY,
        payment_id     TEXT,
        plan_code      TEXT NOT NULL,
        kind           TEXT NOT NULL,
        starts_at      BIGINT NOT NULL,
        ends_at        BIGINT NOT NULL,
        weight         BIGINT NOT NULL,
        monthly_micros BIGINT NOT NULL,
        currency       TEXT NOT NULL,
        network        TEXT,
        provider       TEXT NOT NULL,
        created_at     BIGINT NOT NULL,
        PRIMARY KEY (user_id, id)
    );
    CREATE INDEX periods_by_end ON purchased_periods (ends_at, starts_at)
        INCLUDE (weight, monthly_micros, currency, plan_code, network);
    CREATE INDEX periods_by_creation ON purchased_periods (created_at, kind);
    CREATE INDEX periods_churned ON purchased_periods (created_at) INCLUDE (currency, monthly_micros)
        WHERE kind = 'churn';

    CREATE TABLE money_movements (
        user_id      TEXT NOT NULL,
        id           BIGINT GENERATED ALWAYS AS IDENTITY,
        payment_id   TEXT NOT NULL,
        kind         TEXT NOT NULL,
        micros       BIGINT NOT NULL,
        currency     TEXT NOT NULL,
        provider     TEXT NOT NULL,
        network      TEXT,
        plan_code    TEXT,
        package_code TEXT,
        at           BIGINT NOT NULL,
        PRIMARY KEY (user_id, id)
    );
    CREATE INDEX money_by_time ON money_movements (at) INCLUDE (currency, kind, provider, micros);
    CREATE INDEX money_by_id ON money_movements (id);

    CREATE FUNCTION analytics_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
    END $$;
    CREATE TRIGGER periods_no_change BEFORE UPDATE OR DELETE ON purchased_periods
        FOR EACH ROW EXECUTE FUNCTION analytics_refuse_change();
    CREATE TRIGGER money_no_change BEFORE UPDATE OR DELETE ON money_movements
        FOR EACH ROW EXECUTE FUNCTION analytics_refuse_change();
    "#,
];

/// Brings the schema of the connection's current schema (`search_path`) up to date, in
/// one transaction under an advisory lock keyed by that schema's name, so that servers
/// that start at once migrate it exactly once. A lock on a row cannot serve here: before
/// the first migration there is no table to hold one.
pub(super) fn migrate(client: &mut Client) -> StoreResult<()> {
    let mut tx = client.transaction().map_err(pg_error)?;
    tx.batch_execute(
        "SELECT pg_advisory_xact_lock(hashtext('billing-engine schema ' || coalesce(current_schema(), '')));
         CREATE TABLE IF NOT EXISTS billing_schema (version INTEGER NOT NULL);",
    )
    .map_err(pg_error)?;
    let version: Option<i32> =
        tx.query_opt("SELECT version FROM billing_schema", &[]).map_err(pg_error)?.map(|row| row.get(0));
    let version = version.map_or(0, |v| v as usize);
    if version > MIGRATIONS.len() {
        let known = MIGRATIONS.len();
        let reason =
            format!("the database's schema version {version} is newer than this engine ({known}): upgrade the engine");
        return Err(StoreError::unavailable(reason));
    }
    for migration in &MIGRATIONS[version..] {
        tx.batch_execute(migration).map_err(pg_error)?;
    }
    let latest = MIGRATIONS.len() as i32;
    if version == 0 {
        tx.execute("INSERT INTO billing_schema (version) VALUES ($1)", &[&latest]).map_err(pg_error)?;
    } else if version < MIGRATIONS.len() {
        tx.execute("UPDATE billing_schema SET version = $1", &[&latest]).map_err(pg_error)?;
    }
    tx.commit().map_err(pg_error)
}
