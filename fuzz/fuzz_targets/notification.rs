//! YooKassa notifications: the trust checks (sender address, signature header) and the
//! parser, through `handle_yookassa_webhook` on a real SQLite file with no payments. Any
//! body and headers are applied, ignored or refused as INVALID_WEBHOOK, and none
//! changes a table. Half the inputs carry a valid signature, so the parser behind the
//! checks is reached.
#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use billing_engine::webhook::{sign, SIGNATURE_HEADER};
use billing_engine::YooKassaConfig;
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "whsec-fuzz";

#[derive(Debug, Arbitrary)]
struct Delivery {
    body: Vec<u8>,
    /// Sign the body properly, else send `header` as the signature header.
    signed: bool,
    header: String,
    /// The signature's timestamp: `skew` seconds from now, within the tolerance, or with
    /// `far`, `skew` itself, any time at all.
    skew: i64,
    far: bool,
    remote_addr: Option<String>,
}

fn db() -> &'static common::Db {
    static DB: OnceLock<common::Db> = OnceLock::new();
    DB.get_or_init(|| {
        common::Db::open(|billing| {
            let mut config = YooKassaConfig::new("shop", "secret");
            config.api_url = "http://127.0.0.1:9/v3".into(); // never called: no fetch
            config.webhook_secrets = vec![SECRET.into()];
            config.trusted_networks = Some(vec!["127.0.0.0/8".into(), "::1/128".into()]);
            config.verify_by_fetch = false;
            billing.with_yookassa(&config).unwrap()
        })
    })
}

fuzz_target!(|d: Delivery| {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let timestamp = if d.far { d.skew } else { now + d.skew % 600 };
    let header = if d.signed { sign(SECRET, timestamp, &d.body) } else { d.header };
    let headers = vec![(SIGNATURE_HEADER.to_owned(), header)];
    let remote = d.remote_addr.as_deref().or(Some("127.0.0.1"));
    let before = db().dump();
    match db().billing.handle_yookassa_webhook(&d.body, remote, &headers) {
        Ok(outcome) => assert_ne!(outcome.status, billing_engine::WebhookStatus::Applied, "no payment to apply"),
        Err(error) => {
            common::assert_typed(&error);
            assert_eq!(error.code(), "INVALID_WEBHOOK", "{error}");
        }
    }
    assert_eq!(db().dump(), before);
});
