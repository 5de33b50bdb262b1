//! The tariffs file: the example loads as documented, and every invalid file is refused
//! with INVALID_CATALOG naming the offending field.

mod common;

use billing_engine::{BillingError, Catalog, ChargeSource, Tier};
use common::dec;

fn example() -> String {
    std::fs::read_to_string(common::tariffs_path()).unwrap()
}

fn refusal(text: &str) -> (String, String) {
    match Catalog::from_toml(text) {
        Err(BillingError::InvalidCatalog { path, message }) => (path, message),
        other => panic!("expected INVALID_CATALOG, got {other:?}"),
    }
}

#[test]
fn the_example_tariffs_load_as_documented() {
    let catalog = common::catalog();
    assert_eq!(catalog.currency, "RUB");
    assert_eq!(catalog.timezone_offset, time::UtcOffset::from_hms(3, 0, 0).unwrap());
    assert_eq!(catalog.charge_order, [ChargeSource::Subscription, ChargeSource::Freemium, ChargeSource::Credits]);
    assert_eq!(catalog.lock_timeout, std::time::Duration::from_millis(30_000));
    assert_eq!(catalog.free_trial_credits, dec("10"));
    assert_eq!(
        (catalog.operation("generation").unwrap().credits, catalog.operation("assistant").unwrap().credits),
        (dec("2"), dec("1"))
    );
    let free = catalog.free_plan();
    assert_eq!(
        (free.code.as_str(), free.tier, free.ops_limit, free.period_days, free.daily_limit),
        ("FREE", Tier::Free, Some(5), 30, Some(3))
    );
    let premium = catalog.plan("premium").unwrap();
    assert_eq!(
        (premium.price, premium.duration_days, premium.period_days, premium.ops_limit),
        (dec("7990.00"), Some(365), 30, Some(300))
    );
    let standard = catalog.plan("standard").unwrap();
    assert_eq!(
        (standard.old_price, standard.is_popular, standard.quotas["tokens_input"]),
        (Some(dec("899.00")), true, 1_000_000)
    );
    assert_eq!(catalog.package("credits_100").unwrap().credits, dec("100"));
    assert_eq!(catalog.operation("nope").unwrap_err().code(), "UNKNOWN_OPERATION");
}

#[test]
fn a_minimal_file_gets_the_documented_defaults() {
    let catalog = Catalog::from_toml(
        r#"
        currency = "EUR"
        timezone_offset = "-05:30"
        [operations]
        chat = { credits = "0.25" }
        [[plans]]
        code = "free"
        tier = "free"
        name = "Free"
        price = "0"
        "#,
    )
    .unwrap();
    assert_eq!(catalog.charge_order.len(), 3);
    assert_eq!(catalog.free_trial_credits, dec("0"));
    assert_eq!(catalog.operation("chat").unwrap().credits, dec("0.25"));
    assert_eq!(catalog.timezone_offset, time::UtcOffset::from_hms(-5, -30, 0).unwrap());
    assert_eq!((catalog.free_plan().ops_limit, catalog.free_plan().history_days), (None, -1));
}

#[test]
fn invalid_files_name_the_offending_field() {
    let base = example();
    // The line after the file's last, and the blank one the case adds.
    let comment_line = base.lines().count() + 2;
    let comment_path = format!("{comment_line}:38");
    let comment_message = format!("line {comment_line}, column 38: invalid comment character");
    let cases: Vec<(String, &str, &str)> = vec![
        (base.replace(r#"price = "699.00""#, "price = 699.0"), "plans[2].price", "decimal string"),
        (base.replace(r#"price = "7990.00""#, r#"price = "lots""#), "plans[3].price", "decimal string"),
        (base.replace(r#"price = "299.00""#, r#"price = "299.001""#), "plans[1].price", "at most 2 decimal places"),
        (base.replace(r#"price = "299.00""#, r#"price = "-1""#), "plans[1].price", "negative"),
        (base.replace(r#"code = "standard""#, r#"code = "basic""#), "plans[2].code", "duplicate"),
        (base.replace(r#"code = "credits_100""#, r#"code = "credits_20""#), "packages[1].code", "duplicate"),
        (
            base.replace(r#"tier = "free""#, r#"tier = "pro""#)
                .replace(r#"price = "0""#, "price = \"1\"\nduration_days = 30"),
            "plans",
            "free tier",
        ),
        (
            base.replace(
                r#"tier = "pro"
name = "Basic""#,
                r#"tier = "free"
name = "Basic""#,
            )
            .replace(r#"price = "299.00""#, r#"price = "0""#),
            "plans",
            "only one",
        ),
        (base.replace("ops_limit = 30", "ops_limit = -30"), "plans[1].ops_limit", "negative"),
        (base.replace("daily_limit = 3 ", "daily_limit = -1 "), "plans[0].daily_limit", "negative"),
        (base.replace(r#"timezone_offset = "+03:00""#, r#"timezone_offset = "Moscow""#), "timezone_offset", "offset"),
        (base.replace(r#"timezone_offset = "+03:00""#, r#"timezone_offset = "+25:00""#), "timezone_offset", "offset"),
        (
            base.replace(
                r#"charge_order = ["subscription", "freemium", "credits"]"#,
                r#"charge_order = ["subscription", "bonus"]"#,
            ),
            "charge_order[1]",
            "unknown source",
        ),
        (
            base.replace(
                r#"charge_order = ["subscription", "freemium", "credits"]"#,
                r#"charge_order = ["credits", "credits"]"#,
            ),
            "charge_order[1]",
            "twice",
        ),
        (
            base.replace("generation = { credits = 2 }", "generation = { credits = 2.5 }"),
            "operations.generation.credits",
            "integer or a decimal string",
        ),
        (
            base.replace("generation = { credits = 2 }", "generation = { credits = -2 }"),
            "operations.generation.credits",
            "negative",
        ),
        (base.replace("duration_days = 365", "duration_days = 0"), "plans[3].duration_days", "days"),
        (base.replace("is_popular = true", "is_popular = true\npopular = true"), "plans[2].popular", "unknown field"),
        (base.replace(r#"currency = "RUB""#, r#"currency = "rubles""#), "currency", "ISO 4217"),
        (base.replace("lock_timeout_ms = 30000", "lock_timeout_ms = -5"), "lock_timeout_ms", "negative"),
        (base.replace("credits = 20\n", "credits = 0\n"), "packages[0].credits", "above zero"),
        (base.replace("lock_timeout_ms = 30000", "lock_timeout_ms = 2147483648"), "lock_timeout_ms", "at most"),
        // Receipts follow YooKassa's documented lists; a plan's name fits its 128-character
        // description in every payment text it goes into.
        (base.replace("vat_code = 1 ", "vat_code = 13 "), "receipt.vat_code", "1 to 12"),
        (
            base.replace(r#"payment_subject = "service""#, r#"payment_subject = "services""#),
            "receipt.payment_subject",
            "documented",
        ),
        (
            base.replace(
                r#"receipt = { payment_mode = "full_prepayment" }"#,
                r#"receipt = { payment_mode = "prepaid" }"#,
            ),
            "packages[1].receipt.payment_mode",
            "documented",
        ),
        (base.replace(r#"name = "Basic""#, &format!("name = \"{}\"", "B".repeat(116))), "plans[1].name", "at most 115"),
        // Where the text itself is broken there is no field: the place is line:column.
        ("currency = \"RUB\"\n[[plans]\n".to_owned(), "2:9", "line 2, column 9: unclosed array table"),
        (format!("{base}\n# a comment with a control character \u{1}\n"), &comment_path, &comment_message),
        (base.replace(r#"currency = "RUB""#, r#"currency = "RUB"#), "5:16", "line 5, column 16: invalid basic string"),
    ];
    for (text, path, words) in cases {
        assert_ne!(text, base, "the case for {path} must change the file");
        let (found_path, message) = refusal(&text);
        assert_eq!(found_path, path, "{message}");
        assert!(message.contains(words) && message.len() > words.len(), "{path}: `{message}` should mention {words}");
        let err = BillingError::InvalidCatalog { path: found_path, message };
        assert_eq!(err.code(), "INVALID_CATALOG");
        assert!(err.to_string().contains(&format!("{path}: ")));
    }
}

#[test]
fn a_missing_file_is_an_invalid_catalog() {
    let err = Catalog::from_toml_file("/nonexistent/tariffs.toml").unwrap_err();
    assert_eq!(err.code(), "INVALID_CATALOG");
    assert!(err.to_string().contains("/nonexistent/tariffs.toml"));
}

#[test]
fn a_plan_name_of_115_characters_fits_and_receipt_settings_merge_over_the_catalog_s() {
    let base = example();
    let name = "Б".repeat(115); // characters, not bytes
    let catalog = Catalog::from_toml(&base.replace(r#"name = "Basic""#, &format!("name = \"{name}\""))).unwrap();
    assert_eq!(catalog.plan("basic").unwrap().name, name);
    let own = catalog.package("credits_100").unwrap().receipt.clone().unwrap();
    assert_eq!(
        (own.vat_code, own.payment_subject.as_str(), own.payment_mode.as_str()),
        (1, "service", "full_prepayment")
    );
    assert_eq!(catalog.receipt_settings(None, Some("credits_20")), catalog.receipt.as_ref());
}

/// `[crypto]`: networks, tokens keyed by chain and contract, and prices in base units
/// whose reference digits are free. Each rule names the field it refuses.
#[test]
fn crypto_prices_are_checked_against_their_networks_and_tokens() {
    let base = example();
    let catalog = Catalog::from_toml(&base).unwrap();
    let crypto = catalog.crypto.as_ref().unwrap();
    assert_eq!(
        (crypto.reference_digits, crypto.networks[&1].confirmations, crypto.networks[&56].confirmations),
        (4, 12, 15)
    );
    let bsc_usdt = crypto.token(56, "0x55d398326f99059ff775485246999027b3197955").unwrap();
    assert_eq!((bsc_usdt.symbol.as_str(), bsc_usdt.decimals), ("USDT", 18), "the same symbol, other decimals");
    let basic = catalog.plan("basic").unwrap();
    assert_eq!(basic.crypto_prices[1].amount, 3_990_000_000_000_000_000);

    let usdt = "0xdac17f958d2ee523a2206206994597c13d831ec7";
    let cases: Vec<(String, &str, &str)> = vec![
        (base.replace(r#"amount = "1990000""#, r#"amount = "1990001""#), "packages[0].crypto_prices[0].amount", "must be 0"),
        (base.replace(r#"amount = "1990000""#, r#"amount = "1.99""#), "packages[0].crypto_prices[0].amount", "whole number"),
        (base.replace(r#"amount = "1990000""#, r#"amount = "0""#), "packages[0].crypto_prices[0].amount", "positive"),
        (
            base.replace(&format!(r#"{{ chain_id = 1, contract = "{usdt}", amount = "1990000" }}"#), r#"{ chain_id = 1, contract = "0x1111111111111111111111111111111111111111", amount = "1990000" }"#),
            "packages[0].crypto_prices[0].contract",
            "not a token declared",
        ),
        (
            base.replace(&format!(r#"{{ chain_id = 1, contract = "{usdt}", amount = "1990000" }}"#), &format!(r#"{{ chain_id = 1, contract = "{usdt}", amount = "1990000" }}, {{ chain_id = 1, contract = "{usdt}", amount = "2990000" }}"#)),
            "packages[0].crypto_prices[1].contract",
            "priced twice",
        ),
        (base.replacen(r#"gateway = "0x7a16ff8270133f063aab6c9977183d9e72835428""#, r#"gateway = "not-an-address""#, 1), "crypto.networks[0].gateway", "an address"),
        (base.replacen("confirmations = 12", "confirmations = 0", 1), "crypto.networks[0].confirmations", "1 to 10000"),
        (base.replacen("chain_id = 56\nname", "chain_id = 1\nname", 1), "crypto.networks[1].chain_id", "declared twice"),
        (base.replacen("decimals = 18", "decimals = 40", 1), "crypto.tokens[1].decimals", "0 to 28"),
        (base.replacen("chain_id = 56\ncontract", "chain_id = 137\ncontract", 1), "crypto.tokens[1].chain_id", "a network declared"),
        (base.replace("reference_digits = 4", "reference_digits = 0"), "crypto.reference_digits", "1 to 9"),
    ];
    for (text, path, message) in cases {
        let (got_path, got_message) = refusal(&text);
        assert_eq!(got_path, path, "{got_message}");
        assert!(got_message.contains(message), "{path}: {got_message}");
    }
    // Prices without a [crypto] table to say what their tokens are.
    let start = base.find("[crypto]").unwrap();
    let end = base.find("[operations]").unwrap();
    let without = format!("{}{}", &base[..start], &base[end..]);
    assert_eq!(refusal(&without).0, "plans[1].crypto_prices");
}
