//! Tariffs: plans, credit packages, operation costs and limits, loaded from TOML.
//!
//! The file format is `tariffs.example.toml`. Reading happens in two steps: serde
//! checks the shape (wrong types, unknown fields), then `validate` checks the rules
//! (one free tier, unique codes, non-negative limits, ...). Both report the offending
//! field as a path such as `plans[2].price`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize};
use time::UtcOffset;

use crate::crypto::{CryptoCatalog, CryptoPrice, RawCrypto, RawCryptoPrice};
use crate::error::{BillingError, Result};
use crate::input;
use crate::payment;
use crate::receipt::{ReceiptSettings, MAX_DESCRIPTION_CHARS};

/// Where a charge can be paid from; the catalog's `charge_order` lists them in the order tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
pub enum ChargeSource {
    /// One op of the active paid subscription's allowance.
    Subscription,
    /// One op of the free tier's allowance.
    Freemium,
    /// The operation's cost in credits.
    Credits,
}

impl ChargeSource {
    pub const ALL: [ChargeSource; 3] = [Self::Subscription, Self::Freemium, Self::Credits];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Subscription => "subscription",
            Self::Freemium => "freemium",
            Self::Credits => "credits",
        }
    }
}

impl fmt::Display for ChargeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChargeSource {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|source| source.as_str() == s).ok_or(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Free,
    Pro,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Pro => "pro",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    pub code: String,
    /// What one operation costs when paid from credits.
    pub credits: Decimal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub code: String,
    pub tier: Tier,
    pub name: String,
    pub name_ru: Option<String>,
    pub description: Option<String>,
    pub description_ru: Option<String>,
    pub price: Decimal,
    pub old_price: Option<Decimal>,
    /// How long one payment keeps the subscription active; `None` for the free tier.
    pub duration_days: Option<u32>,
    /// Ops per allowance period; `None` means unlimited.
    pub ops_limit: Option<u32>,
    /// Length of one allowance period, anchored at the period's first start.
    pub period_days: u32,
    /// Ops this plan's allowance gives per local day; `None` means no daily cap.
    pub daily_limit: Option<u32>,
    /// Days of history the plan shows; -1 means unlimited.
    pub history_days: i32,
    pub display_order: i32,
    pub is_popular: bool,
    /// The flag features the plan has, in the order the file lists them.
    pub features: Vec<String>,
    /// The plan's value of each `limit` feature it sets (`max_chats = 20`).
    pub feature_limits: BTreeMap<String, u64>,
    /// Metric quotas per allowance period (seed 001), such as `tokens_input`; a metric
    /// missing here is unlimited on this plan.
    pub quotas: BTreeMap<String, u64>,
    /// Metric quotas per local day (the catalog's `timezone_offset`).
    pub daily_quotas: BTreeMap<String, u64>,
    pub quota_mode: QuotaMode,
    /// Usage above a quota that is charged in credits instead of refused.
    pub overage: BTreeMap<String, Overage>,
    /// How the plan appears on a 54-FZ receipt: its own `receipt` over the catalog's.
    pub receipt: Option<ReceiptSettings>,
    /// Its prices in tokens, one per network and token (see `crate::crypto`).
    pub crypto_prices: Vec<CryptoPrice>,
}

impl Plan {
    pub fn is_free(&self) -> bool {
        self.tier == Tier::Free
    }

    pub fn has_feature(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }

    /// The plan's value of a declared feature: a flag is on or off, a limit is the
    /// plan's number (0 when the plan does not set it).
    pub fn feature_value(&self, feature: &Feature) -> FeatureValue {
        match feature.kind {
            FeatureKind::Flag => FeatureValue::Flag(self.has_feature(&feature.name)),
            FeatureKind::Limit => FeatureValue::Limit(self.feature_limits.get(&feature.name).copied().unwrap_or(0)),
        }
    }
}

/// What a metric adds up: the amounts tracked (`sum`, tokens), or one per event
/// (`count`, requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregation {
    Sum,
    Count,
}

/// A metered quantity, declared under `[metrics.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metric {
    pub name: String,
    pub aggregation: Aggregation,
    pub unit: String,
}

/// What a check does with usage above a quota: `hard` refuses it (unless the plan
/// prices it as overage), `soft` allows it and reports it as over the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaMode {
    Hard,
    Soft,
}

/// The credit price of usage above a quota: `credits` per `per` units, proportionally.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overage {
    pub credits: Decimal,
    pub per: u64,
}

/// What a capture does when the work cost more credits than the user has:
/// `cap` charges what the balance holds and records the shortfall; `debt` charges it
/// all, taking the balance below zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureOverrun {
    Cap,
    Debt,
}

/// A plan feature, declared under `[features.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feature {
    pub name: String,
    pub kind: FeatureKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatureKind {
    /// On or off (`gpt4_access`).
    Flag,
    /// A number (`max_chats = 20`).
    Limit,
}

/// A plan's value of one feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FeatureValue {
    Flag(bool),
    Limit(u64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Package {
    pub code: String,
    pub credits: Decimal,
    pub price: Decimal,
    /// How long the credits of one purchase last; `None`: they never expire.
    pub expires_after_days: Option<u32>,
    /// How the package appears on a 54-FZ receipt: its own `receipt` over the catalog's.
    pub receipt: Option<ReceiptSettings>,
    /// Its prices in tokens, one per network and token (see `crate::crypto`).
    pub crypto_prices: Vec<CryptoPrice>,
}

/// What becomes of credits a refund gives back to a lot that has expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RefundToExpired {
    /// They expire at once: the refund and a `credit_expired` entry.
    Expire,
    /// They come back as a new promotional lot that lives `reissue_days`.
    Reissue,
}

/// The validated tariffs. Build it with [`Catalog::from_toml`] or [`Catalog::from_toml_file`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    pub currency: String,
    #[serde(with = "offset_text")]
    pub timezone_offset: UtcOffset,
    pub charge_order: Vec<ChargeSource>,
    pub lock_timeout: Duration,
    pub free_trial_credits: Decimal,
    /// How long the free trial's credits last; `None`: they never expire.
    pub free_trial_expires_after_days: Option<u32>,
    /// The free trial lot's place in the burn order (see `crate::lots`).
    pub free_trial_priority: u8,
    pub refund_to_expired: RefundToExpired,
    /// How long a reissued lot lives (`refund_to_expired = "reissue"`).
    pub reissue_days: u32,
    pub operations: BTreeMap<String, Operation>,
    /// Sorted by `display_order`, then code.
    pub plans: Vec<Plan>,
    pub packages: Vec<Package>,
    pub metrics: BTreeMap<String, Metric>,
    pub features: BTreeMap<String, Feature>,
    pub capture_overrun: CaptureOverrun,
    /// The catalog's `[receipt]`: how a purchase appears on a 54-FZ receipt when its plan
    /// or package says nothing else, and how a card binding always does.
    pub receipt: Option<ReceiptSettings>,
    /// `[crypto]`: the networks and tokens plans and packages may be paid in.
    pub crypto: Option<CryptoCatalog>,
}

impl Catalog {
    pub fn from_toml(text: &str) -> Result<Self> {
        let document = toml::Deserializer::parse(text).map_err(|e| toml_error(text, String::new(), &e))?;
        let raw: RawCatalog = serde_path_to_error::deserialize(document).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            toml_error(text, path, e.inner())
        })?;
        validate(raw)
    }

    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(String::new(), format!("cannot read {}: {e}", path.display())))?;
        Self::from_toml(&text)
    }

    /// The plan every user is on when no paid subscription is active.
    pub fn free_plan(&self) -> &Plan {
        self.plans.iter().find(|p| p.is_free()).expect("validated: exactly one free plan")
    }

    pub fn plan(&self, code: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.code == code)
    }

    pub fn package(&self, code: &str) -> Option<&Package> {
        self.packages.iter().find(|p| p.code == code)
    }

    pub fn operation(&self, code: &str) -> Result<&Operation> {
        self.operations.get(code).ok_or_else(|| BillingError::UnknownOperation { operation: code.to_owned() })
    }

    pub fn metric(&self, name: &str) -> Result<&Metric> {
        self.metrics.get(name).ok_or_else(|| BillingError::UnknownMetric { metric: name.to_owned() })
    }

    /// A declared feature; an undeclared one is INVALID_ARGUMENT `feature`.
    pub fn feature(&self, name: &str) -> Result<&Feature> {
        self.features.get(name).ok_or_else(|| BillingError::invalid("feature", format!("no feature `{name}`")))
    }

    /// A paid plan a user can subscribe to, or INVALID_PLAN.
    /// How a purchase of the plan or package appears on a receipt; the catalog's own
    /// settings for anything else (a card binding).
    pub fn receipt_settings(&self, plan_code: Option<&str>, package_code: Option<&str>) -> Option<&ReceiptSettings> {
        let plan = plan_code.and_then(|code| self.plan(code)).map(|plan| plan.receipt.as_ref());
        let package = package_code.and_then(|code| self.package(code)).map(|package| package.receipt.as_ref());
        plan.or(package).unwrap_or(self.receipt.as_ref())
    }

    pub fn paid_plan(&self, code: &str) -> Result<&Plan> {
        match self.plan(code) {
            Some(plan) if !plan.is_free() => Ok(plan),
            Some(_) => {
                Err(BillingError::InvalidPlan { plan_code: code.to_owned(), reason: "the free tier is not sold" })
            }
            None => Err(BillingError::InvalidPlan { plan_code: code.to_owned(), reason: "no such plan" }),
        }
    }
}

/// INVALID_CATALOG for what the TOML reader refused: at the field's path, or, where the
/// text itself is broken, at its `line:column`; never with an empty message.
fn toml_error(text: &str, path: String, error: &toml::de::Error) -> BillingError {
    let message = error.message().trim();
    let message = if message.is_empty() { "invalid TOML" } else { message };
    match error.span() {
        Some(span) if path.is_empty() => {
            let (line, column) = line_column(text, span.start);
            invalid(format!("{line}:{column}"), format!("line {line}, column {column}: {message}"))
        }
        _ => invalid(path, message),
    }
}

/// The 1-based line and column (in characters) of a byte offset of `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (before.matches('\n').count() + 1, before[line_start..].chars().count() + 1)
}

/// An input rule's refusal (see [`crate::input`]), reported at the catalog path it
/// applies to.
fn at(path: &str) -> impl Fn(BillingError) -> BillingError + '_ {
    move |error| match error {
        BillingError::InvalidArgument { message, .. } => invalid(path, message),
        other => other,
    }
}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> BillingError {
    BillingError::InvalidCatalog { path: path.into(), message: message.into() }
}

// ---- the file's shape ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    currency: String,
    timezone_offset: String,
    #[serde(default)]
    charge_order: Option<Vec<String>>,
    #[serde(default)]
    lock_timeout_ms: Option<i64>,
    operations: BTreeMap<String, RawOperation>,
    #[serde(default)]
    free_trial: Option<RawFreeTrial>,
    plans: Vec<RawPlan>,
    #[serde(default)]
    packages: Vec<RawPackage>,
    #[serde(default)]
    metrics: BTreeMap<String, RawMetric>,
    #[serde(default)]
    features: BTreeMap<String, RawFeature>,
    #[serde(default)]
    capture_overrun: Option<CaptureOverrun>,
    #[serde(default)]
    refund_to_expired: Option<RefundToExpired>,
    #[serde(default)]
    reissue_days: Option<i64>,
    #[serde(default)]
    receipt: Option<RawReceipt>,
    #[serde(default)]
    crypto: Option<RawCrypto>,
}

/// `[receipt]`, or a plan's or package's `receipt = { ... }`; each field it leaves out
/// comes from the catalog's `[receipt]`, then the defaults.
#[derive(Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
struct RawReceipt {
    vat_code: Option<i64>,
    payment_subject: Option<String>,
    payment_mode: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetric {
    aggregation: Aggregation,
    unit: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeature {
    kind: FeatureKind,
}

/// A plan's features: a list of flags, or a table of flags (`true`/`false`) and limits.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawFeatures {
    Flags(Vec<String>),
    Values(BTreeMap<String, RawFeatureValue>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawFeatureValue {
    Flag(bool),
    Limit(i64),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverage {
    credits: Amount,
    per: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOperation {
    credits: Amount,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFreeTrial {
    credits: Amount,
    expires_after_days: Option<i64>,
    priority: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    code: String,
    tier: Tier,
    name: String,
    name_ru: Option<String>,
    description: Option<String>,
    description_ru: Option<String>,
    price: Money,
    old_price: Option<Money>,
    duration_days: Option<i64>,
    ops_limit: Option<i64>,
    period_days: Option<i64>,
    daily_limit: Option<i64>,
    history_days: Option<i64>,
    display_order: Option<i64>,
    #[serde(default)]
    is_popular: bool,
    #[serde(default)]
    features: Option<RawFeatures>,
    #[serde(default)]
    quotas: BTreeMap<String, i64>,
    #[serde(default)]
    daily_quotas: BTreeMap<String, i64>,
    #[serde(default)]
    quota_mode: Option<QuotaMode>,
    #[serde(default)]
    overage: BTreeMap<String, RawOverage>,
    #[serde(default)]
    receipt: Option<RawReceipt>,
    #[serde(default)]
    crypto_prices: Vec<RawCryptoPrice>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPackage {
    code: String,
    credits: Amount,
    price: Money,
    expires_after_days: Option<i64>,
    #[serde(default)]
    receipt: Option<RawReceipt>,
    #[serde(default)]
    crypto_prices: Vec<RawCryptoPrice>,
}

/// A price: only a decimal string is accepted, so a float never becomes money.
struct Money(Decimal);

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Money;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a decimal string such as \"299.00\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Money, E> {
                parse_decimal(s).map(Money).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// A credit amount: an integer, or a decimal string for fractional credits; never a float.
struct Amount(Decimal);

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Amount;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer or a decimal string")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Amount, E> {
                Ok(Amount(Decimal::from(v)))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Amount, E> {
                Ok(Amount(Decimal::from(v)))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Amount, E> {
                parse_decimal(s).map(Amount).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

fn parse_decimal(s: &str) -> Result<Decimal, String> {
    Decimal::from_str_exact(s.trim()).map_err(|_| format!("expected a decimal string, got `{s}`"))
}

// ---- the rules ----

const DEFAULT_LOCK_TIMEOUT_MS: i64 = 30_000;
/// SQLite takes its busy timeout as a C int of milliseconds; an hour is far below that
/// and far above any wait worth making.
const MAX_LOCK_TIMEOUT_MS: u64 = 3_600_000;
const DEFAULT_PERIOD_DAYS: u32 = 30;
const DEFAULT_REISSUE_DAYS: i64 = 30;

fn validate(raw: RawCatalog) -> Result<Catalog> {
    let currency = raw.currency.trim().to_owned();
    if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_uppercase()) {
        return Err(invalid("currency", format!("expected an ISO 4217 code such as \"RUB\", got `{currency}`")));
    }
    let timezone_offset = parse_offset(&raw.timezone_offset).ok_or_else(|| {
        invalid("timezone_offset", format!("expected an offset such as \"+03:00\", got `{}`", raw.timezone_offset))
    })?;
    let charge_order = validate_charge_order(raw.charge_order)?;
    let lock_timeout_ms = raw.lock_timeout_ms.unwrap_or(DEFAULT_LOCK_TIMEOUT_MS);
    let lock_timeout = Duration::from_millis(match non_negative("lock_timeout_ms", lock_timeout_ms)? {
        ms if ms <= MAX_LOCK_TIMEOUT_MS => ms,
        ms => return Err(invalid("lock_timeout_ms", format!("at most {MAX_LOCK_TIMEOUT_MS} (one hour), got {ms}"))),
    });

    if raw.operations.is_empty() {
        return Err(invalid("operations", "at least one operation is needed"));
    }
    let mut operations = BTreeMap::new();
    for (code, op) in raw.operations {
        let path = format!("operations.{code}.credits");
        let credits = non_negative_amount(&path, op.credits.0)?;
        operations.insert(code.clone(), Operation { code, credits });
    }
    let (free_trial_credits, free_trial_expires_after_days, free_trial_priority) = match raw.free_trial {
        Some(trial) => (
            non_negative_amount("free_trial.credits", trial.credits.0)?,
            trial.expires_after_days.map(|d| positive_days("free_trial.expires_after_days", d)).transpose()?,
            lot_priority("free_trial.priority", trial.priority)?,
        ),
        None => (Decimal::ZERO, None, crate::lots::DEFAULT_PRIORITY),
    };
    let reissue_days = positive_days("reissue_days", raw.reissue_days.unwrap_or(DEFAULT_REISSUE_DAYS))?;

    let metrics = validate_metrics(raw.metrics)?;
    let mut features = validate_features(raw.features)?;
    // A file that declares no features keeps the older format, in which a plan's
    // feature list is its own declaration of flags.
    let declared_features = !features.is_empty();

    let base_receipt = raw.receipt.as_ref();
    let receipt = receipt_settings("receipt", None, base_receipt)?;
    let crypto =
        raw.crypto.map(CryptoCatalog::validate).transpose().map_err(|(path, message)| invalid(path, message))?;
    let mut plans = Vec::with_capacity(raw.plans.len());
    for (i, mut plan) in raw.plans.into_iter().enumerate() {
        let own_receipt = plan.receipt.clone();
        let crypto_prices =
            crypto_prices(&format!("plans[{i}].crypto_prices"), crypto.as_ref(), &mut plan.crypto_prices)?;
        let mut plan = validate_plan(i, plan, &metrics)?;
        plan.crypto_prices = crypto_prices;
        plan.receipt = receipt_settings(&format!("plans[{i}].receipt"), own_receipt.as_ref(), base_receipt)?;
        for (name, kind) in plan_features(&plan) {
            match features.get(name) {
                Some(feature) if feature.kind == kind => {}
                Some(feature) => {
                    let message = format!("`{name}` is declared as a {:?} feature", feature.kind).to_lowercase();
                    return Err(invalid(format!("plans[{i}].features.{name}"), message));
                }
                None if declared_features => {
                    return Err(invalid(format!("plans[{i}].features.{name}"), "not declared under [features]"))
                }
                None => {
                    features.insert(name.to_owned(), Feature { name: name.to_owned(), kind });
                }
            }
        }
        if let Some(j) = plans.iter().position(|p: &Plan| p.code == plan.code) {
            return Err(invalid(
                format!("plans[{i}].code"),
                format!("duplicate code `{}` (also plans[{j}])", plan.code),
            ));
        }
        plans.push(plan);
    }
    match plans.iter().filter(|p| p.is_free()).count() {
        0 => return Err(invalid("plans", "a free tier is needed: one plan with tier = \"free\"")),
        1 => {}
        _ => return Err(invalid("plans", "only one plan may have tier = \"free\"")),
    }
    plans.sort_by(|a, b| a.display_order.cmp(&b.display_order).then_with(|| a.code.cmp(&b.code)));

    let mut packages: Vec<Package> = Vec::with_capacity(raw.packages.len());
    for (i, package) in raw.packages.into_iter().enumerate() {
        let code = non_empty_code(&format!("packages[{i}].code"), package.code)?;
        if packages.iter().any(|p| p.code == code) {
            return Err(invalid(format!("packages[{i}].code"), format!("duplicate code `{code}`")));
        }
        let credits = positive_amount(&format!("packages[{i}].credits"), package.credits.0)?;
        let price = price(&format!("packages[{i}].price"), package.price.0)?;
        let expires_after_days = package
            .expires_after_days
            .map(|days| positive_days(&format!("packages[{i}].expires_after_days"), days))
            .transpose()?;
        let receipt = receipt_settings(&format!("packages[{i}].receipt"), package.receipt.as_ref(), base_receipt)?;
        let mut raw_prices = package.crypto_prices;
        let crypto_prices = crypto_prices(&format!("packages[{i}].crypto_prices"), crypto.as_ref(), &mut raw_prices)?;
        packages.push(Package { code, credits, price, expires_after_days, receipt, crypto_prices });
    }

    Ok(Catalog {
        currency,
        timezone_offset,
        charge_order,
        lock_timeout,
        free_trial_credits,
        free_trial_expires_after_days,
        free_trial_priority,
        refund_to_expired: raw.refund_to_expired.unwrap_or(RefundToExpired::Expire),
        reissue_days,
        operations,
        plans,
        packages,
        metrics,
        features,
        capture_overrun: raw.capture_overrun.unwrap_or(CaptureOverrun::Cap),
        receipt,
        crypto,
    })
}

/// An item's `crypto_prices` (taken from `raw`), which need `[crypto]`.
fn crypto_prices(
    path: &str,
    crypto: Option<&CryptoCatalog>,
    raw: &mut Vec<RawCryptoPrice>,
) -> Result<Vec<CryptoPrice>> {
    let raw = std::mem::take(raw);
    match crypto {
        _ if raw.is_empty() => Ok(Vec::new()),
        None => Err(invalid(path, "crypto prices need a [crypto] table with its networks and tokens")),
        Some(crypto) => crypto.prices(path, raw).map_err(|(path, message)| invalid(path, message)),
    }
}

/// An item's receipt settings: its own fields over the catalog's `[receipt]`, then the
/// defaults (`service`, `full_payment`). `None` when neither says anything; a VAT code is
/// needed once either does.
fn receipt_settings(
    path: &str,
    own: Option<&RawReceipt>,
    base: Option<&RawReceipt>,
) -> Result<Option<ReceiptSettings>> {
    if own.is_none() && base.is_none() {
        return Ok(None);
    }
    let (own, base) = (own.cloned().unwrap_or_default(), base.cloned().unwrap_or_default());
    let vat_code = own.vat_code.or(base.vat_code).ok_or_else(|| invalid(format!("{path}.vat_code"), "required"))?;
    let settings = ReceiptSettings {
        vat_code: u8::try_from(vat_code).unwrap_or(0),
        payment_subject: own.payment_subject.or(base.payment_subject).unwrap_or_else(|| "service".into()),
        payment_mode: own.payment_mode.or(base.payment_mode).unwrap_or_else(|| "full_payment".into()),
    };
    settings.check().map_err(|(field, message)| invalid(format!("{path}.{field}"), message))?;
    Ok(Some(settings))
}

/// Every feature a plan names, with the kind its value shows.
fn plan_features(plan: &Plan) -> impl Iterator<Item = (&str, FeatureKind)> {
    let flags = plan.features.iter().map(|name| (name.as_str(), FeatureKind::Flag));
    flags.chain(plan.feature_limits.keys().map(|name| (name.as_str(), FeatureKind::Limit)))
}

fn validate_metrics(raw: BTreeMap<String, RawMetric>) -> Result<BTreeMap<String, Metric>> {
    let mut metrics = BTreeMap::new();
    for (name, metric) in raw {
        input::id("metric", &name).map_err(at(&format!("metrics.{name}")))?;
        let unit = metric.unit.trim().to_owned();
        if unit.is_empty() {
            return Err(invalid(format!("metrics.{name}.unit"), "must not be empty"));
        }
        metrics.insert(name.clone(), Metric { name, aggregation: metric.aggregation, unit });
    }
    Ok(metrics)
}

fn validate_features(raw: BTreeMap<String, RawFeature>) -> Result<BTreeMap<String, Feature>> {
    let mut features = BTreeMap::new();
    for (name, feature) in raw {
        input::id("feature", &name).map_err(at(&format!("features.{name}")))?;
        features.insert(name.clone(), Feature { name, kind: feature.kind });
    }
    Ok(features)
}

/// A plan's quotas of one kind (`quotas` or `daily_quotas`), each of a declared metric.
fn validate_quotas(
    path: &str,
    raw: BTreeMap<String, i64>,
    metrics: &BTreeMap<String, Metric>,
) -> Result<BTreeMap<String, u64>> {
    let mut quotas = BTreeMap::new();
    for (metric, limit) in raw {
        let path = format!("{path}.{metric}");
        if !metrics.contains_key(&metric) {
            return Err(invalid(path, format!("unknown metric `{metric}`; declare it under [metrics.{metric}]")));
        }
        let limit = non_negative(&path, limit)?;
        quotas.insert(metric, limit);
    }
    Ok(quotas)
}

fn validate_plan(i: usize, raw: RawPlan, metrics: &BTreeMap<String, Metric>) -> Result<Plan> {
    let at = |field: &str| format!("plans[{i}].{field}");
    let code = non_empty_code(&at("code"), raw.code)?;
    // The longest text the plan's name goes into must fit the provider's limit.
    if payment::renewal_description(&raw.name).chars().count() > MAX_DESCRIPTION_CHARS {
        let longest = MAX_DESCRIPTION_CHARS - payment::renewal_description("").chars().count();
        return Err(invalid(
            at("name"),
            format!("at most {longest} characters, so that payment descriptions fit {MAX_DESCRIPTION_CHARS}"),
        ));
    }
    let price = price(&at("price"), raw.price.0)?;
    let old_price = raw.old_price.map(|p| self::price(&at("old_price"), p.0)).transpose()?;
    let ops_limit = optional_count(&at("ops_limit"), raw.ops_limit)?;
    let daily_limit = optional_count(&at("daily_limit"), raw.daily_limit)?;
    let period_days = match raw.period_days {
        Some(days) => positive_days(&at("period_days"), days)?,
        None if ops_limit.is_some() => return Err(invalid(at("period_days"), "required when ops_limit is set")),
        None => DEFAULT_PERIOD_DAYS,
    };
    let duration_days = raw.duration_days.map(|d| positive_days(&at("duration_days"), d)).transpose()?;
    match raw.tier {
        Tier::Free if !price.is_zero() => return Err(invalid(at("price"), "the free tier's price must be \"0\"")),
        Tier::Pro if price.is_zero() => return Err(invalid(at("price"), "a paid plan needs a price above zero")),
        Tier::Pro if duration_days.is_none() => return Err(invalid(at("duration_days"), "required for a paid plan")),
        _ => {}
    }
    let history_days = match raw.history_days {
        None | Some(-1) => -1,
        Some(days) if days >= 0 => i32::try_from(days).map_err(|_| invalid(at("history_days"), "too large"))?,
        Some(days) => {
            return Err(invalid(at("history_days"), format!("expected -1 (unlimited) or a number of days, got {days}")))
        }
    };
    let display_order =
        i32::try_from(raw.display_order.unwrap_or(0)).map_err(|_| invalid(at("display_order"), "too large"))?;
    let quotas = validate_quotas(&at("quotas"), raw.quotas, metrics)?;
    let daily_quotas = validate_quotas(&at("daily_quotas"), raw.daily_quotas, metrics)?;
    let mut overage = BTreeMap::new();
    for (metric, price) in raw.overage {
        let path = at(&format!("overage.{metric}"));
        if !quotas.contains_key(&metric) && !daily_quotas.contains_key(&metric) {
            return Err(invalid(path, format!("`{metric}` has no quota on this plan to go over")));
        }
        let credits = positive_amount(&format!("{path}.credits"), price.credits.0)?;
        let per = match non_negative(&format!("{path}.per"), price.per)? {
            0 => return Err(invalid(format!("{path}.per"), "must be above zero")),
            per => per,
        };
        overage.insert(metric, Overage { credits, per });
    }
    let (features, feature_limits) = match raw.features {
        None => (Vec::new(), BTreeMap::new()),
        Some(RawFeatures::Flags(flags)) => (flags, BTreeMap::new()),
        Some(RawFeatures::Values(values)) => {
            let mut flags = Vec::new();
            let mut limits = BTreeMap::new();
            for (name, value) in values {
                match value {
                    RawFeatureValue::Flag(true) => flags.push(name),
                    RawFeatureValue::Flag(false) => {}
                    RawFeatureValue::Limit(limit) => {
                        let limit = non_negative(&at(&format!("features.{name}")), limit)?;
                        limits.insert(name, limit);
                    }
                }
            }
            (flags, limits)
        }
    };
    Ok(Plan {
        code,
        tier: raw.tier,
        name: raw.name,
        name_ru: raw.name_ru,
        description: raw.description,
        description_ru: raw.description_ru,
        price,
        old_price,
        duration_days,
        ops_limit,
        period_days,
        daily_limit,
        history_days,
        display_order,
        is_popular: raw.is_popular,
        features,
        feature_limits,
        quotas,
        daily_quotas,
        quota_mode: raw.quota_mode.unwrap_or(QuotaMode::Hard),
        overage,
        receipt: None,
        crypto_prices: Vec::new(),
    })
}

fn validate_charge_order(raw: Option<Vec<String>>) -> Result<Vec<ChargeSource>> {
    let Some(raw) = raw else {
        return Ok(ChargeSource::ALL.to_vec());
    };
    if raw.is_empty() {
        return Err(invalid("charge_order", "at least one source is needed"));
    }
    let mut order = Vec::with_capacity(raw.len());
    for (i, name) in raw.iter().enumerate() {
        let source = ChargeSource::from_str(name).map_err(|_| {
            invalid(
                format!("charge_order[{i}]"),
                format!("unknown source `{name}`; expected subscription, freemium or credits"),
            )
        })?;
        if order.contains(&source) {
            return Err(invalid(format!("charge_order[{i}]"), format!("`{name}` is listed twice")));
        }
        order.push(source);
    }
    Ok(order)
}

fn parse_offset(text: &str) -> Option<UtcOffset> {
    let text = text.trim();
    if text == "Z" {
        return Some(UtcOffset::UTC);
    }
    let format = time::macros::format_description!("[offset_hour sign:mandatory]:[offset_minute]");
    // Offsets in use on Earth run from -12:00 to +14:00.
    UtcOffset::parse(text, &format).ok().filter(|offset| (-12 * 3600..=14 * 3600).contains(&offset.whole_seconds()))
}

fn non_empty_code(path: &str, code: String) -> Result<String> {
    let code = code.trim().to_owned();
    if code.is_empty() {
        return Err(invalid(path, "must not be empty"));
    }
    Ok(code)
}

fn non_negative(path: &str, value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| invalid(path, format!("must not be negative, got {value}")))
}

fn optional_count(path: &str, value: Option<i64>) -> Result<Option<u32>> {
    value
        .map(|v| {
            let v = non_negative(path, v)?;
            u32::try_from(v).map_err(|_| invalid(path, format!("too large: {v}")))
        })
        .transpose()
}

/// A lot's priority: 0 (burns first) to 100; absent, the default.
fn lot_priority(path: &str, priority: Option<i64>) -> Result<u8> {
    match priority {
        None => Ok(crate::lots::DEFAULT_PRIORITY),
        Some(p) => u8::try_from(p)
            .ok()
            .filter(|p| *p <= crate::lots::MAX_PRIORITY)
            .ok_or_else(|| invalid(path, format!("expected 0 to {}, got {p}", crate::lots::MAX_PRIORITY))),
    }
}

fn positive_days(path: &str, days: i64) -> Result<u32> {
    match u32::try_from(days) {
        Ok(days) if days > 0 && days <= 3660 => Ok(days),
        _ => Err(invalid(path, format!("expected a number of days from 1 to 3660, got {days}"))),
    }
}

fn non_negative_amount(path: &str, amount: Decimal) -> Result<Decimal> {
    if amount.is_sign_negative() && !amount.is_zero() {
        return Err(invalid(path, format!("must not be negative, got {amount}")));
    }
    crate::input::credits("amount", amount).map_err(at(path))
}

fn positive_amount(path: &str, amount: Decimal) -> Result<Decimal> {
    if amount <= Decimal::ZERO {
        return Err(invalid(path, format!("must be above zero, got {amount}")));
    }
    non_negative_amount(path, amount)
}

/// Money has at most two decimal places, as the payment providers take it.
fn price(path: &str, price: Decimal) -> Result<Decimal> {
    let price = non_negative_amount(path, price)?;
    if price.is_zero() {
        return Ok(price);
    }
    crate::input::money("price", price).map_err(at(path))
}

mod offset_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::UtcOffset;

    pub fn serialize<S: Serializer>(offset: &UtcOffset, s: S) -> Result<S::Ok, S::Error> {
        let (h, m, _) = offset.as_hms();
        let sign = if offset.is_negative() { '-' } else { '+' };
        s.serialize_str(&format!("{sign}{:02}:{:02}", h.abs(), m.abs()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<UtcOffset, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_offset(&text).ok_or_else(|| serde::de::Error::custom("expected an offset such as \"+03:00\""))
    }
}
