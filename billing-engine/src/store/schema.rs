//! The SQLite schema and its versioned upgrades, tracked in `PRAGMA user_version`.
//! A migration is never edited once released: add the next one.

use rusqlite::Connection;

use super::sqlite_error::SqliteError;

const MIGRATIONS: &[&str] = &[
    // 1: accounts and the ledger.
    r#"
    CREATE TABLE accounts (
        user_id              TEXT PRIMARY KEY,
        created_at           INTEGER NOT NULL,   -- unix milliseconds
        credits              TEXT NOT NULL,      -- decimal string
        free_trial_awarded   INTEGER NOT NULL,
        free_anchor          INTEGER NOT NULL,
        free_period_start    INTEGER NOT NULL,
        free_used            INTEGER NOT NULL,
        day                  INTEGER NOT NULL,   -- julian day in the catalog's offset
        day_subscription_ops INTEGER NOT NULL,
        day_freemium_ops     INTEGER NOT NULL,
        subscription         TEXT                -- JSON of the current or last subscription
    ) WITHOUT ROWID;

    CREATE TABLE ledger (
        id                    INTEGER PRIMARY KEY,
        user_id               TEXT NOT NULL,
        kind                  TEXT NOT NULL,
        source                TEXT,
        operation             TEXT,
        credits_delta         TEXT NOT NULL,
        credits_balance_after TEXT NOT NULL,
        ops_delta             INTEGER NOT NULL,
        allowance_owner       TEXT,
        allowance_start       INTEGER,
        op_day                INTEGER,
        idempotency_key       TEXT,
        request_hash          TEXT,
        reference             TEXT,
        metadata              TEXT,
        created_at            INTEGER NOT NULL
    );
    CREATE INDEX ledger_by_user ON ledger (user_id, id);
    CREATE UNIQUE INDEX ledger_by_key ON ledger (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
    CREATE UNIQUE INDEX ledger_one_refund ON ledger (reference) WHERE kind = 'refund';

    CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
    CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
    "#,
    // 2: payments, saved cards, and the subscription end as a column for `process_due`.
    r#"
    CREATE TABLE payments (
        id                  TEXT PRIMARY KEY,
        user_id             TEXT NOT NULL,
        purpose             TEXT NOT NULL,
        plan_code           TEXT,
        package_code        TEXT,
        amount              TEXT NOT NULL,
        currency            TEXT NOT NULL,
        credits             TEXT,
        description         TEXT NOT NULL,
        status              TEXT NOT NULL,
        provider_payment_id TEXT UNIQUE,
        provider_key        TEXT NOT NULL,
        save_payment_method INTEGER NOT NULL,
        return_url          TEXT,
        confirmation_url    TEXT,
        renewal_of          TEXT UNIQUE,        -- one renewal per subscription period
        refund_id           TEXT,
        payload             TEXT,               -- the provider's last object, JSON
        idempotency_key     TEXT,
        request_hash        TEXT,
        created_at          INTEGER NOT NULL,
        updated_at          INTEGER NOT NULL,
        paid_at             INTEGER
    );
    CREATE INDEX payments_by_user ON payments (user_id, created_at);
    CREATE UNIQUE INDEX payments_by_key ON payments (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
    CREATE INDEX payments_unsent ON payments (purpose) WHERE status = 'new';

    CREATE TABLE payment_methods (
        user_id      TEXT PRIMARY KEY,
        card         TEXT NOT NULL,             -- JSON of the saved card
        saved_at     INTEGER NOT NULL
    ) WITHOUT ROWID;

    ALTER TABLE accounts ADD COLUMN subscription_due_at INTEGER;  -- unix ms; NULL once ended
    UPDATE accounts SET subscription_due_at =
        CAST(round(unixepoch(json_extract(subscription, '$.expires_at'), 'subsec') * 1000) AS INTEGER)
        WHERE subscription IS NOT NULL;
    CREATE INDEX accounts_by_due ON accounts (subscription_due_at) WHERE subscription_due_at IS NOT NULL;
    "#,
    // 3: partial refunds and the period each payment bought; the ledger refuses
    // `INSERT OR REPLACE`, which would delete a row without firing the DELETE trigger.
    r#"
    ALTER TABLE payments ADD COLUMN refunded_amount TEXT NOT NULL DEFAULT '0';
    ALTER TABLE payments ADD COLUMN paid_subscription_id TEXT;
    ALTER TABLE payments ADD COLUMN paid_from INTEGER;   -- unix ms
    ALTER TABLE payments ADD COLUMN paid_until INTEGER;  -- unix ms
    UPDATE payments SET refunded_amount = amount WHERE status = 'refunded';
    -- The period a plan payment bought, from the entry that applied it. Its start is
    -- that entry's time: exact for an activation, a little early for an extension.
    UPDATE payments SET
        paid_subscription_id = (SELECT json_extract(l.metadata, '$.subscription_id') FROM ledger l
            WHERE l.user_id = payments.user_id AND l.reference = payments.id
              AND l.kind IN ('subscription_activated', 'subscription_renewed')),
        paid_from = (SELECT l.created_at FROM ledger l
            WHERE l.user_id = payments.user_id AND l.reference = payments.id
              AND l.kind IN ('subscription_activated', 'subscription_renewed')),
        paid_until = (SELECT CAST(round(unixepoch(json_extract(l.metadata, '$.expires_at'), 'subsec') * 1000) AS INTEGER)
            FROM ledger l
            WHERE l.user_id = payments.user_id AND l.reference = payments.id
              AND l.kind IN ('subscription_activated', 'subscription_renewed'))
        WHERE purpose IN ('plan', 'renewal');

    CREATE TRIGGER ledger_no_replace BEFORE INSERT ON ledger
    WHEN EXISTS (SELECT 1 FROM ledger WHERE id = NEW.id)
      OR (NEW.idempotency_key IS NOT NULL AND EXISTS
            (SELECT 1 FROM ledger WHERE user_id = NEW.user_id AND idempotency_key = NEW.idempotency_key))
      OR (NEW.kind = 'refund' AND EXISTS (SELECT 1 FROM ledger WHERE kind = 'refund' AND reference = NEW.reference))
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: that entry or key exists'); END;
    "#,
    // 4: metered usage: append-only events, a counter per (user, metric, window) kept in
    // the same transaction, and holds.
    r#"
    CREATE TABLE usage_events (
        id              INTEGER PRIMARY KEY,
        user_id         TEXT NOT NULL,
        metric          TEXT NOT NULL,
        amount          INTEGER NOT NULL,
        model_id        TEXT,
        chat_id         TEXT,
        hold_id         TEXT,
        at              INTEGER NOT NULL,   -- unix ms: when the usage happened
        period_window   TEXT NOT NULL,
        day_window      TEXT NOT NULL,
        over_limit      INTEGER NOT NULL,
        overage_credits TEXT NOT NULL,
        metadata        TEXT,
        idempotency_key TEXT,               -- a keyed call's, on its first event only,
        events          INTEGER,            -- with the number of events the call recorded
        request_hash    TEXT,               -- and its request's fingerprint
        created_at      INTEGER NOT NULL
    );
    CREATE INDEX usage_by_user ON usage_events (user_id, metric, at);
    CREATE UNIQUE INDEX usage_by_key ON usage_events (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
    CREATE TRIGGER usage_no_update BEFORE UPDATE ON usage_events
    BEGIN SELECT RAISE(ABORT, 'usage events are append-only'); END;
    CREATE TRIGGER usage_no_delete BEFORE DELETE ON usage_events
    BEGIN SELECT RAISE(ABORT, 'usage events are append-only'); END;

    CREATE TABLE usage_counters (
        user_id TEXT NOT NULL,
        metric  TEXT NOT NULL,
        span    TEXT NOT NULL,      -- the window: p:<owner>:<start ms> or d:<day>
        used    INTEGER NOT NULL,
        held    INTEGER NOT NULL,
        PRIMARY KEY (user_id, span, metric)
    ) WITHOUT ROWID;

    CREATE TABLE holds (
        user_id    TEXT NOT NULL,
        id         TEXT NOT NULL,
        status     TEXT NOT NULL,
        expires_at INTEGER NOT NULL,        -- unix ms
        data       TEXT NOT NULL,           -- JSON of the hold
        created_at INTEGER NOT NULL,
        PRIMARY KEY (user_id, id)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX holds_by_id ON holds (id);
    CREATE INDEX holds_open ON holds (user_id, expires_at) WHERE status = 'open';
    "#,
    // 5: credit lots, and what each entry drew from or gave back to each. A balance
    // stored before becomes one lot that never expires, keyed by the user's last entry.
    r#"
    CREATE TABLE credit_lots (
        user_id      TEXT NOT NULL,
        id           INTEGER NOT NULL,      -- the entry that created it
        amount       TEXT NOT NULL,
        remaining    TEXT NOT NULL,
        priority     INTEGER NOT NULL,
        category     TEXT NOT NULL,
        effective_at INTEGER NOT NULL,      -- unix ms
        expires_at   INTEGER,               -- unix ms; NULL: never
        source       TEXT NOT NULL,
        reference    TEXT,
        PRIMARY KEY (user_id, id)
    ) WITHOUT ROWID;
    CREATE INDEX credit_lots_open ON credit_lots (user_id, id) WHERE remaining <> '0';

    CREATE TABLE lot_allocations (
        user_id  TEXT NOT NULL,
        entry_id INTEGER NOT NULL,
        lot_id   INTEGER NOT NULL,
        seq      INTEGER NOT NULL,          -- its place among the entry's allocations
        amount   TEXT NOT NULL,             -- drawn (+) or given back (-)
        PRIMARY KEY (user_id, entry_id, lot_id)
    ) WITHOUT ROWID;

    INSERT INTO credit_lots (user_id, id, amount, remaining, priority, category, effective_at, expires_at, source, reference)
    SELECT a.user_id, coalesce((SELECT max(l.id) FROM ledger l WHERE l.user_id = a.user_id), 0), a.credits, a.credits,
           50, 'paid', a.created_at, NULL, 'import', NULL
    FROM accounts a WHERE CAST(a.credits AS REAL) > 0;
    "#,
    // 6: saved methods found by the provider's id (its notifications name only that),
    // where each user's 54-FZ receipts go, and the claim of the call sending a payment.
    r#"
    ALTER TABLE payments ADD COLUMN sending_until INTEGER;   -- unix ms
    ALTER TABLE payment_methods ADD COLUMN method_id TEXT;
    UPDATE payment_methods SET method_id = json_extract(card, '$.method_id');
    CREATE INDEX payment_methods_by_id ON payment_methods (method_id);
    CREATE TABLE customer_contacts (
        user_id    TEXT PRIMARY KEY,
        email      TEXT,
        phone      TEXT,
        updated_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 7: the outbox of domain events, written in the transaction of the change that
    // causes each, and each consumer's cursor in it (SQLite has one writer at a time, so
    // ids follow the order transactions commit and a cursor is an id); the audit log.
    r#"
    CREATE TABLE events (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id     TEXT NOT NULL,
        sequence    INTEGER NOT NULL,       -- 1, 2, 3 ... per user
        event_id    TEXT NOT NULL UNIQUE,
        type        TEXT NOT NULL,
        occurred_at INTEGER NOT NULL,       -- unix ms
        payload     TEXT NOT NULL
    );
    CREATE UNIQUE INDEX events_by_user ON events (user_id, sequence);
    CREATE INDEX events_by_time ON events (occurred_at);
    -- Never changed; old ones are deleted by prune_events.
    CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'events are never changed'); END;

    CREATE TABLE event_consumers (
        consumer        TEXT PRIMARY KEY,
        position        INTEGER NOT NULL,   -- the id of the last event acknowledged
        failed_attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER,            -- unix ms
        stopped_at      INTEGER             -- unix ms
    ) WITHOUT ROWID;

    -- Who did what, append-only like the ledger. user_id is '' for an operation about
    -- no user (a catalog reload, a webhook about nobody's payment).
    CREATE TABLE audit_log (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id     TEXT NOT NULL,
        actor       TEXT NOT NULL,
        action      TEXT NOT NULL,
        target      TEXT,
        outcome     TEXT NOT NULL,
        reason      TEXT,
        before      TEXT,                   -- JSON
        after       TEXT,                   -- JSON
        error       TEXT,                   -- JSON
        request_id  TEXT,
        created_at  INTEGER NOT NULL        -- unix ms
    );
    CREATE INDEX audit_by_user ON audit_log (user_id, id);
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;

    -- Crypto payments: what a payment asks and has seen (JSON), its state by itself for
    -- the reconciling worker's query; the references open payments hold; the transfers
    -- seen on chain (user_id '' for one no payment holds); each chain's highest block.
    ALTER TABLE payments ADD COLUMN crypto TEXT;
    ALTER TABLE payments ADD COLUMN crypto_state TEXT;
    CREATE INDEX payments_by_crypto_state ON payments (crypto_state) WHERE crypto_state IS NOT NULL;

    CREATE TABLE crypto_references (
        chain_id   INTEGER NOT NULL,
        token      TEXT NOT NULL,
        reference  INTEGER NOT NULL,
        user_id    TEXT NOT NULL,
        payment_id TEXT NOT NULL,
        held_until INTEGER NOT NULL,        -- unix ms: another payment may take it after
        PRIMARY KEY (chain_id, token, reference)
    ) WITHOUT ROWID;

    CREATE TABLE crypto_observations (
        user_id      TEXT NOT NULL,
        chain_id     INTEGER NOT NULL,
        tx_hash      TEXT NOT NULL,
        log_index    INTEGER NOT NULL,
        payment_id   TEXT,
        observation  TEXT NOT NULL,         -- JSON: the transfer, with the raw payload
        seen_at      INTEGER NOT NULL,      -- unix ms
        PRIMARY KEY (user_id, chain_id, tx_hash, log_index)
    ) WITHOUT ROWID;
    CREATE INDEX crypto_observations_by_payment ON crypto_observations (user_id, payment_id);

    CREATE TABLE chain_heads (
        chain_id     INTEGER PRIMARY KEY,
        block_number INTEGER NOT NULL
    );
    "#,
    // 8: what the operators' overview reads: the purchased periods (a cut is a row of
    // its own, weight -1; a churn, weight 0, marks a subscription ending with nobody
    // paying on) and the money movements, both append-only. Amounts are
    // micro-units (10^-6), so that SQLite sums them exactly.
    r#"
    CREATE TABLE purchased_periods (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id        TEXT NOT NULL,
        payment_id     TEXT,
        plan_code      TEXT NOT NULL,
        kind           TEXT NOT NULL,       -- new, renewal, reactivation, cut, churn
        starts_at      INTEGER NOT NULL,    -- unix ms
        ends_at        INTEGER NOT NULL,
        weight         INTEGER NOT NULL,    -- 1, or -1 for a cut
        monthly_micros INTEGER NOT NULL,
        currency       TEXT NOT NULL,
        network        TEXT,
        provider       TEXT NOT NULL,
        created_at     INTEGER NOT NULL
    );
    CREATE INDEX periods_by_user ON purchased_periods (user_id, id);
    -- Covering: what is in force at an instant is read from the index alone.
    CREATE INDEX periods_by_end ON purchased_periods (ends_at, starts_at, weight, monthly_micros, currency, plan_code, network);
    CREATE INDEX periods_by_creation ON purchased_periods (created_at, kind);
    CREATE INDEX periods_churned ON purchased_periods (created_at, currency, monthly_micros) WHERE kind = 'churn';

    CREATE TABLE money_movements (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id      TEXT NOT NULL,
        payment_id   TEXT NOT NULL,
        kind         TEXT NOT NULL,         -- gross, refund, reversal, failed
        micros       INTEGER NOT NULL,
        currency     TEXT NOT NULL,
        provider     TEXT NOT NULL,
        network      TEXT,
        plan_code    TEXT,
        package_code TEXT,
        at           INTEGER NOT NULL       -- unix ms
    );
    CREATE INDEX money_by_time ON money_movements (at, currency, kind, provider, micros);

    CREATE TRIGGER periods_no_update BEFORE UPDATE ON purchased_periods
    BEGIN SELECT RAISE(ABORT, 'purchased periods are append-only'); END;
    CREATE TRIGGER periods_no_delete BEFORE DELETE ON purchased_periods
    BEGIN SELECT RAISE(ABORT, 'purchased periods are append-only'); END;
    CREATE TRIGGER money_no_update BEFORE UPDATE ON money_movements
    BEGIN SELECT RAISE(ABORT, 'money movements are append-only'); END;
    CREATE TRIGGER money_no_delete BEFORE DELETE ON money_movements
    BEGIN SELECT RAISE(ABORT, 'money movements are append-only'); END;
    "#,
];

/// The version `migrate` brings a database to.
#[cfg(test)]
pub(super) const LATEST: usize = MIGRATIONS.len();

/// Brings the schema up to date. Runs inside a write transaction, so processes that
/// open a new file at once migrate it exactly once.
pub(super) fn migrate(conn: &Connection) -> Result<(), SqliteError> {
    let version: u32 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let version = version as usize;
    if version > MIGRATIONS.len() {
        return Err(SqliteError::NewerSchema { found: version, known: MIGRATIONS.len() });
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(version) {
        conn.execute_batch(migration)?;
        conn.pragma_update(None, "user_version", (i + 1) as u32)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_2_fills_the_due_column_from_stored_subscriptions() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        let insert = "INSERT INTO accounts VALUES (?1, 0, '0', 1, 0, 0, 0, 2461042, 0, 0, ?2)";
        let sub = r#"{"id":"s","plan_code":"basic","expires_at":"2026-02-01T12:00:00.123Z"}"#;
        conn.execute(insert, rusqlite::params!["with", sub]).unwrap();
        conn.execute(insert, rusqlite::params!["without", None::<String>]).unwrap();
        migrate(&conn).unwrap();
        let due = |user: &str| -> Option<i64> {
            conn.query_row("SELECT subscription_due_at FROM accounts WHERE user_id = ?1", [user], |r| r.get(0)).unwrap()
        };
        assert_eq!(due("with"), Some(1_769_947_200_123));
        assert_eq!(due("without"), None);
    }
}
