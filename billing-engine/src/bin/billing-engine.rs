//! `billing-engine`: the engine's command line. One command so far:
//!
//! ```text
//! billing-engine copy-to-postgres <sqlite-file> <postgresql-url> --tariffs <tariffs.toml>
//! ```
//!
//! copies every account, ledger entry (with its id, key and request fingerprint),
//! payment and saved card of a SQLite file into a PostgreSQL database, user by user,
//! then runs `verify_integrity` on the target and exits non-zero unless it holds. Stop
//! the writers of the file first. Run again after an interruption, it goes on with the
//! users not yet copied.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use billing_engine::store::{is_postgres_url, PostgresOptions, PostgresStore, SqliteOptions, SqliteStore};
use billing_engine::{Billing, BillingError, Catalog, SystemClock};

const USAGE: &str = "usage: billing-engine copy-to-postgres <sqlite-file> <postgresql-url> --tariffs <tariffs.toml>";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [command, from, to, flag, tariffs] = args.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    if command != "copy-to-postgres" || flag != "--tariffs" {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    match copy_to_postgres(from, to, tariffs) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("billing-engine: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Copies, then audits the target; whether the audit holds.
fn copy_to_postgres(from: &str, to: &str, tariffs: &str) -> Result<bool, String> {
    let failed = |error: BillingError| format!("{error} ({})", error.code());
    let catalog = Catalog::from_toml_file(tariffs).map_err(failed)?;
    if !Path::new(from).is_file() {
        return Err(format!("no SQLite file at {from}"));
    }
    let source = SqliteStore::open(from, SqliteOptions { lock_timeout: catalog.lock_timeout, ..Default::default() })
        .map_err(failed)?;
    if !is_postgres_url(to) {
        return Err("the target is not a postgresql:// URL".to_owned());
    }
    let options = PostgresOptions::from_url(to, catalog.lock_timeout).map_err(failed)?;
    let target = PostgresStore::open(to, options).map_err(failed)?;
    let report = target.copy_from(&source).map_err(failed)?;
    println!(
        "copied {} users ({} ledger entries, {} payments, {} usage events, {} overview rows) and {} audit \
         records; {} users already there, left as they were",
        report.users,
        report.entries,
        report.payments,
        report.usage_events,
        report.overview_rows,
        report.audit_records,
        report.skipped
    );
    let audit = Billing::new(target, catalog, Arc::new(SystemClock)).verify_integrity().map_err(failed)?;
    println!("verify_integrity: {} users, {} entries, ok = {}", audit.users_checked, audit.entries_checked, audit.ok);
    for mismatch in &audit.mismatches {
        println!("  {}: {} (ledger {}, stored {})", mismatch.user_id, mismatch.check, mismatch.ledger, mismatch.stored);
    }
    Ok(audit.ok)
}
