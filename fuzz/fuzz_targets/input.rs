//! The input validators: ids, keys and texts, decimals (credits and money), and JSON
//! metadata. Each value is accepted or refused as INVALID_ARGUMENT naming its field.
#![no_main]

#[path = "common.rs"]
mod common;

use arbitrary::Arbitrary;
use billing_engine::input;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Values {
    id: String,
    text: String,
    decimal: String,
    metadata: String,
}

fuzz_target!(|v: Values| {
    if let Err(e) = input::id("user_id", &v.id) {
        common::assert_invalid(&e, "user_id");
    }
    if let Err(e) = input::text("reason", &v.text) {
        common::assert_invalid(&e, "reason");
    }
    match input::decimal("amount", &v.decimal) {
        Ok(amount) => {
            for result in [input::credits("amount", amount), input::money("amount", amount)] {
                if let Err(e) = result {
                    common::assert_invalid(&e, "amount");
                }
            }
        }
        Err(e) => common::assert_invalid(&e, "amount"),
    }
    match input::json::<serde_json::Value>("metadata", Some(&v.metadata)) {
        Ok(value) => {
            if let Err(e) = input::metadata(value.as_ref()) {
                common::assert_invalid(&e, "metadata");
            }
        }
        Err(e) => common::assert_invalid(&e, "metadata"),
    }
});
