//! The demo the README's first command runs: tariffs from `examples/tariffs.toml`, a
//! real SQLite file, and seed 000's three scenarios with each user's ledger.
//!
//! `cargo run --example quickstart [-- path/to/billing.sqlite3]`

use std::sync::Arc;

use billing_engine::{Billing, BillingError, Catalog, ManualClock};
use time::Duration;

fn main() -> Result<(), BillingError> {
    let tariffs = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/tariffs.toml");
    let catalog = Catalog::from_toml_file(tariffs)?;
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| std::env::temp_dir().join("billing-quickstart.sqlite3").display().to_string());
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
    // A manual clock so the demo can show tomorrow and next month.
    let clock = Arc::new(ManualClock::parse("2026-01-01T09:00:00Z")?);
    let billing = Billing::open_with_clock(&path, catalog, clock.clone())?;
    println!("billing-engine quickstart — tariffs {tariffs}\nSQLite file {path}\n");

    println!("== A: a free user (10 trial credits, 5 free ops per 30 days, 3 per day)");
    billing.register_user("alice", true)?;
    for n in 1..=5 {
        report(&billing, "alice", "generation", &format!("alice-gen-{n}"));
    }
    clock.advance(Duration::days(1))?;
    println!("   -- next day");
    report(&billing, "alice", "generation", "alice-gen-6");
    show_state(&billing, "alice")?;

    println!("\n== B: a subscriber on `basic` (30 ops a month), then the free tier, then credits");
    billing.register_user("bob", true)?;
    billing.activate_subscription("bob", "basic", "bob-payment-1")?;
    for n in 1..=30 {
        billing.charge("bob", "assistant", &format!("bob-op-{n}"), None)?;
    }
    println!("   30 assistant ops paid by the subscription");
    report(&billing, "bob", "generation", "bob-gen-1");
    report(&billing, "bob", "generation", "bob-gen-1"); // a retried request: replayed, not charged twice
    show_state(&billing, "bob")?;
    clock.advance(Duration::days(30))?;
    println!("   -- 30 days later `basic` has ended: bob is back on the free tier");
    report(&billing, "bob", "generation", "bob-gen-2");
    show_state(&billing, "bob")?;

    println!("\n== C: nothing left");
    billing.register_user("carol", false)?;
    for n in 1..=4 {
        report(&billing, "carol", "assistant", &format!("carol-op-{n}"));
    }
    clock.advance(Duration::days(1))?;
    println!("   -- next day");
    for n in 5..=7 {
        report(&billing, "carol", "assistant", &format!("carol-op-{n}"));
    }
    let quote = billing.quote("carol", "generation")?;
    println!("   quote for a generation: allowed={} reason={:?}", quote.allowed, quote.reason_code);

    println!("\n== D: a trial whose credits expire (the same tariffs, with `[free_trial] expires_after_days = 7`)");
    let mut expiring = billing.catalog().clone();
    expiring.free_trial_expires_after_days = Some(7);
    let trial_billing = Billing::open_with_clock(&path, expiring, clock.clone())?;
    trial_billing.register_user("dave", true)?;
    let state = trial_billing.state("dave")?;
    for lot in &state.credits_expiring {
        println!("   {} credits expire at {}", lot.amount, billing_engine::time_util::iso(lot.expires_at));
    }
    clock.advance(Duration::days(7))?;
    println!("   -- 7 days later: credits {} (gone at the instant, on a read)", trial_billing.state("dave")?.credits);
    trial_billing.register_user("dave", true)?; // the next write records the expiry
    println!("   after dave's next login the ledger shows it: credit_expired");

    for user in ["alice", "bob", "carol", "dave"] {
        println!("\n-- ledger of {user}, newest first");
        for e in billing.ledger(user, 8, None)? {
            let source = e.source.map(|s| s.to_string()).unwrap_or_default();
            println!(
                "   #{:<3} {:<22} {:<12} credits {:>+4} -> {:<4} ops {:+} {}",
                e.id,
                e.kind.as_str(),
                source,
                e.credits_delta,
                e.credits_balance_after,
                e.ops_delta,
                e.idempotency_key.unwrap_or_default()
            );
        }
    }
    let integrity = billing.verify_integrity()?;
    println!(
        "\nverify_integrity: ok={} users={} entries={} mismatches={}",
        integrity.ok,
        integrity.users_checked,
        integrity.entries_checked,
        integrity.mismatches.len()
    );
    if !integrity.ok {
        std::process::exit(1);
    }
    Ok(())
}

fn report(billing: &Billing, user: &str, operation: &str, key: &str) {
    match billing.charge(user, operation, key, None) {
        Ok(c) => println!(
            "   {operation:<10} -> paid by {:<12} credits spent {} (balance {}){}",
            c.source,
            c.credits_spent,
            c.credits_balance,
            if c.replayed { "  [replayed]" } else { "" }
        ),
        Err(e) => println!("   {operation:<10} -> refused: {} ({e})", e.code()),
    }
}

fn show_state(billing: &Billing, user: &str) -> Result<(), BillingError> {
    let s = billing.state(user)?;
    println!(
        "   state: plan={} credits={} freemium {}/{:?} today {}/{:?} subscription {:?}/{:?}",
        s.plan_code,
        s.credits,
        s.freemium_ops_used,
        s.freemium_ops_limit,
        s.used_today,
        s.daily_limit,
        s.subscription_ops_used,
        s.subscription_ops_limit
    );
    Ok(())
}
