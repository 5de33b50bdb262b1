//! Hostile input and tampering: amounts past what a `Decimal` holds or with more places
//! than money or credits have are refused naming the field, and change nothing; rows
//! rewritten, orphaned or garbled behind the engine's back are found by
//! `verify_integrity`, which reports each and goes on.

mod common;

use billing_engine::BillingError;
use common::{dec, Fixture};
use rusqlite::{params, Connection};

fn grant(f: &Fixture, user: &str, amount: &str, key: &str) -> Result<(), BillingError> {
    f.billing.grant_credits(user, dec(amount), key, "test").map(drop)
}

#[test]
fn amounts_too_large_or_too_precise_are_invalid_and_write_nothing() {
    let f = Fixture::new();
    f.billing.register_user("u", true).unwrap();
    grant(&f, "u", "999999999999999000", "near-max").unwrap();
    let before = f.snapshot();
    for (amount, field) in [
        ("79228162514264337593543950335", "amount"), // Decimal::MAX: the sum would overflow
        ("1000000000000000001", "amount"),
        ("1.0000001", "amount"),          // more places than credits have
        ("999999999999999999", "amount"), // fine alone, but the balance would pass the maximum
    ] {
        let err = grant(&f, "u", amount, &format!("k-{amount}")).unwrap_err();
        assert_eq!((err.code(), err.details()["field"].as_str()), ("INVALID_ARGUMENT", Some(field)), "{amount}: {err}");
    }
    let err = f.billing.import_user("v", dec("0.0000001"), 0, None).unwrap_err();
    assert_eq!(err.details()["field"], "credits");
    assert_eq!(f.snapshot(), before);
    assert!(f.billing.verify_integrity().unwrap().ok);
}

fn conn(f: &Fixture) -> Connection {
    Connection::open(f.location()).unwrap()
}

fn raw_entry(conn: &Connection, user: &str, delta: &str) {
    conn.execute(
        "INSERT INTO ledger (user_id, kind, source, credits_delta, credits_balance_after, ops_delta, created_at) \
         VALUES (?1, 'grant', 'credits', ?2, ?2, 0, 0)",
        params![user, delta],
    )
    .unwrap();
}

#[test]
fn verify_integrity_reports_a_stored_overflow_instead_of_panicking() {
    let f = Fixture::new();
    f.billing.register_user("u", false).unwrap();
    let conn = conn(&f);
    raw_entry(&conn, "u", "79228162514264337593543950335");
    raw_entry(&conn, "u", "79228162514264337593543950335");
    let report = f.billing.verify_integrity().unwrap();
    assert!(!report.ok);
    assert!(report.mismatches.iter().any(|m| m.check.starts_with("credits_overflow@")), "{:?}", report.mismatches);
}

#[test]
fn verify_integrity_finds_entries_whose_account_was_deleted() {
    let f = Fixture::new();
    f.billing.register_user("gone", true).unwrap();
    f.billing.register_user("kept", true).unwrap();
    conn(&f).execute("DELETE FROM accounts WHERE user_id = 'gone'", []).unwrap();
    let report = f.billing.verify_integrity().unwrap();
    assert_eq!(report.users_checked, 2);
    let orphan = report.mismatches.iter().find(|m| m.user_id == "gone").expect("reported");
    assert_eq!((orphan.check.as_str(), orphan.stored.as_str()), ("account", "no account"));
    assert_eq!(orphan.ledger, "1 entries, 0 payments");
    assert_eq!(report.mismatches.len(), 1);
}

#[test]
fn an_unreadable_value_is_reported_by_table_and_column_and_the_check_goes_on() {
    let f = Fixture::new();
    for user in ["a", "b"] {
        f.billing.register_user(user, true).unwrap();
    }
    let conn = conn(&f);
    raw_entry(&conn, "a", "twelve");
    conn.execute("UPDATE accounts SET credits = '999' WHERE user_id = 'b'", []).unwrap();
    let report = f.billing.verify_integrity().unwrap();
    assert_eq!(report.users_checked, 2);
    let unreadable = report.mismatches.iter().find(|m| m.user_id == "a").expect("reported");
    assert_eq!(unreadable.check, "unreadable:ledger.credits_delta");
    assert!(!format!("{report:?}").contains("twelve"), "no stored value in the report");
    assert!(report.mismatches.iter().any(|m| m.user_id == "b" && m.check == "credits"), "b is still checked");
    let err = f.billing.ledger("a", 10, None).unwrap_err();
    assert_eq!((err.code(), err.details()["column"].as_str()), ("STORAGE_ERROR", Some("ledger.credits_delta")));
    assert!(!format!("{err} {:?}", err.details()).contains("twelve"), "no stored value in the error: {err}");
}

#[test]
fn a_replaced_ledger_row_cannot_make_a_retried_key_charge_again() {
    let f = Fixture::new();
    f.billing.register_user("u", true).unwrap();
    let first = f.billing.charge("u", "generation", "req-1", None).unwrap();
    let replace = "INSERT OR REPLACE INTO ledger (id, user_id, kind, credits_delta, credits_balance_after, ops_delta, \
                   created_at) VALUES (?1, 'u', 'grant', '0', '0', 0, 0)";
    assert!(conn(&f).execute(replace, params![first.id]).unwrap_err().to_string().contains("append-only"));
    let again = f.billing.charge("u", "generation", "req-1", None).unwrap();
    assert!(again.replayed && again.id == first.id, "the key still stands: {again:?}");
    assert!(f.billing.verify_integrity().unwrap().ok);
}
