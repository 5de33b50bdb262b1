//! The SQLite schema and its versioned upgrades, tracked in `PRAGMA user_version`.
//! A migration is never edited once released: add the next one.

use rusqlite::Connection;

use crate::error::StoreError;

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
];

/// Brings the schema up to date. Runs inside a write transaction, so processes that
/// open a new file at once migrate it exactly once.
pub(super) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let version: usize = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version > MIGRATIONS.len() {
        return Err(StoreError::Corrupt {
            column: "user_version",
            value: format!("schema version {version} is newer than this engine ({})", MIGRATIONS.len()),
        });
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(version) {
        conn.execute_batch(migration)?;
        conn.pragma_update(None, "user_version", i + 1)?;
    }
    Ok(())
}
