//! The tariffs parser: any text is a catalog or an INVALID_CATALOG, never a panic.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Err(error) = billing_engine::Catalog::from_toml(text) {
        common::assert_typed(&error);
        assert_eq!(error.code(), "INVALID_CATALOG", "{error}");
    }
});
