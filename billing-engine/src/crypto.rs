//! Crypto payments on EVM networks (seed 004), provider-neutral: the catalog's
//! networks, tokens and prices; what a checkout asks the payer to send; how a transfer
//! seen on chain is matched to a payment; and the states a payment goes through as its
//! transfers are seen, confirmed, reorganized away or found failed.
//!
//! **Matching.** Every payment of a network's token goes to one receiving address (the
//! catalog's `gateway`). A checkout adds a *reference* to the price, in its lowest
//! `reference_digits` digits of base units (the price's own are zero there): 9.99 USDT
//! of 6 decimals is asked as `9990137` for reference 137. A transfer to the gateway
//! belongs to the payment whose reference its amount ends in, so a payer who sends less
//! (an exchange took a fee) or more is still matched, as underpaid or overpaid. A
//! reference stays with its payment until the payment's window and a grace after it
//! pass; only then can another checkout take it.
//!
//! **Money** is integer base units (`u128`) throughout: USDT has 6 decimals on Ethereum
//! and 18 on BNB Chain, so a token is keyed by `(chain_id, contract)`, never by symbol,
//! and never by a float.

use std::collections::BTreeMap;
use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::{Duration, OffsetDateTime};

use crate::error::{BillingError, Result};

/// How long after its window a reference stays with its payment, for a late transfer.
pub const REFERENCE_GRACE: Duration = Duration::days(7);

// ---- the catalog's side ----

/// `[crypto]` of the tariffs file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CryptoCatalog {
    /// How long a checkout's amount is held for the payer.
    pub payment_window: Duration,
    /// The lowest digits of an amount that carry a payment's reference.
    pub reference_digits: u32,
    pub networks: BTreeMap<u64, Network>,
    pub tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub chain_id: u64,
    pub name: String,
    /// Blocks on top of a transfer's (its own included) before it is credited.
    pub confirmations: u32,
    /// The receiving address of every payment on this network.
    pub gateway: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub chain_id: u64,
    /// The ERC-20 contract, lowercase.
    pub contract: String,
    /// For people only: never a key.
    pub symbol: String,
    pub decimals: u32,
}

/// A plan's or package's price on one network, in the token's base units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CryptoPrice {
    pub chain_id: u64,
    pub contract: String,
    #[serde(with = "units_text")]
    pub amount: u128,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCrypto {
    payment_window_minutes: Option<i64>,
    reference_digits: Option<i64>,
    #[serde(default)]
    networks: Vec<RawNetwork>,
    #[serde(default)]
    tokens: Vec<RawToken>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    chain_id: i64,
    name: String,
    confirmations: i64,
    gateway: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    chain_id: i64,
    contract: String,
    symbol: String,
    decimals: i64,
}

/// `crypto_prices = [{ chain_id = 1, contract = "0x…", amount = "9990000" }]`: the
/// amount is a string of base units, which a TOML integer could not hold.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCryptoPrice {
    chain_id: i64,
    contract: String,
    amount: String,
}

/// The largest amount a payment may ask: what a `Decimal` shows exactly.
const MAX_BASE_UNITS: u128 = (1 << 96) - 1;

type CatalogError = (String, String);

impl CryptoCatalog {
    /// `[crypto]` checked: networks with a gateway address and a confirmation count,
    /// tokens on declared networks with at most 28 decimals, and a reference of 1 to 9
    /// digits.
    pub(crate) fn validate(raw: RawCrypto) -> std::result::Result<Self, CatalogError> {
        let bad = |path: String, message: &str| (path, message.to_owned());
        let minutes = raw.payment_window_minutes.unwrap_or(60);
        if !(1..=7 * 24 * 60).contains(&minutes) {
            return Err(bad("crypto.payment_window_minutes".into(), "1 to 10080 (a week)"));
        }
        let reference_digits = raw.reference_digits.unwrap_or(4);
        if !(1..=9).contains(&reference_digits) {
            return Err(bad("crypto.reference_digits".into(), "1 to 9"));
        }
        let mut networks = BTreeMap::new();
        for (i, network) in raw.networks.into_iter().enumerate() {
            let at = |field: &str| format!("crypto.networks[{i}].{field}");
            let chain_id = chain_id(network.chain_id).ok_or_else(|| bad(at("chain_id"), "a positive chain id"))?;
            if networks.contains_key(&chain_id) {
                return Err(bad(at("chain_id"), "declared twice"));
            }
            let confirmations = u32::try_from(network.confirmations)
                .ok()
                .filter(|c| (1..=10_000).contains(c))
                .ok_or_else(|| bad(at("confirmations"), "1 to 10000"))?;
            let gateway =
                address(&network.gateway).ok_or_else(|| bad(at("gateway"), "an address: 0x and 40 hex digits"))?;
            let name = network.name.trim().to_owned();
            if name.is_empty() || name.len() > 64 {
                return Err(bad(at("name"), "1 to 64 characters"));
            }
            networks.insert(chain_id, Network { chain_id, name, confirmations, gateway });
        }
        let mut tokens: Vec<Token> = Vec::new();
        for (i, token) in raw.tokens.into_iter().enumerate() {
            let at = |field: &str| format!("crypto.tokens[{i}].{field}");
            let chain_id = chain_id(token.chain_id)
                .filter(|id| networks.contains_key(id))
                .ok_or_else(|| bad(at("chain_id"), "a network declared under [[crypto.networks]]"))?;
            let contract =
                address(&token.contract).ok_or_else(|| bad(at("contract"), "an address: 0x and 40 hex digits"))?;
            if tokens.iter().any(|t| t.chain_id == chain_id && t.contract == contract) {
                return Err(bad(at("contract"), "declared twice on this network"));
            }
            let decimals = u32::try_from(token.decimals)
                .ok()
                .filter(|d| *d <= 28)
                .ok_or_else(|| bad(at("decimals"), "0 to 28"))?;
            let symbol = token.symbol.trim().to_owned();
            if symbol.is_empty() || symbol.len() > 16 {
                return Err(bad(at("symbol"), "1 to 16 characters"));
            }
            tokens.push(Token { chain_id, contract, symbol, decimals });
        }
        Ok(Self {
            payment_window: Duration::minutes(minutes),
            reference_digits: reference_digits as u32,
            networks,
            tokens,
        })
    }

    /// A plan's or package's `crypto_prices`, each of a declared token, in base units
    /// whose reference digits are zero; one price per network and token.
    pub(crate) fn prices(
        &self,
        path: &str,
        raw: Vec<RawCryptoPrice>,
    ) -> std::result::Result<Vec<CryptoPrice>, CatalogError> {
        let mut prices: Vec<CryptoPrice> = Vec::new();
        for (i, price) in raw.into_iter().enumerate() {
            let at = |field: &str| format!("{path}[{i}].{field}");
            let chain_id =
                chain_id(price.chain_id).ok_or_else(|| (at("chain_id"), "a positive chain id".to_owned()))?;
            let contract = address(&price.contract).unwrap_or_default();
            if self.token(chain_id, &contract).is_none() {
                return Err((at("contract"), "not a token declared under [[crypto.tokens]] on that network".into()));
            }
            let amount = base_units(&price.amount)
                .filter(|a| *a > 0)
                .ok_or_else(|| (at("amount"), "a positive whole number of base units, as a string".to_owned()))?;
            let modulus = self.reference_modulus();
            if amount % modulus != 0 || amount + modulus > MAX_BASE_UNITS {
                let message =
                    format!("its lowest {} digits carry the reference: they must be 0", self.reference_digits);
                return Err((at("amount"), message));
            }
            if prices.iter().any(|p| p.chain_id == chain_id && p.contract == contract) {
                return Err((at("contract"), "priced twice".to_owned()));
            }
            prices.push(CryptoPrice { chain_id, contract, amount });
        }
        Ok(prices)
    }

    pub fn token(&self, chain_id: u64, contract: &str) -> Option<&Token> {
        self.tokens.iter().find(|t| t.chain_id == chain_id && t.contract == contract)
    }

    /// `10^reference_digits`: an amount's reference is what it leaves divided by this.
    pub fn reference_modulus(&self) -> u128 {
        10u128.pow(self.reference_digits)
    }
}

fn chain_id(raw: i64) -> Option<u64> {
    u64::try_from(raw).ok().filter(|id| *id > 0)
}

/// An EVM address (`0x` and 40 hex digits), lowercase; `None` when it is not one.
pub fn address(text: &str) -> Option<String> {
    hex_of_length(text, 40)
}

/// A transaction hash (`0x` and 64 hex digits), lowercase.
pub fn tx_hash(text: &str) -> Option<String> {
    hex_of_length(text, 64)
}

fn hex_of_length(text: &str, digits: usize) -> Option<String> {
    let hex = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X"))?;
    (hex.len() == digits && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("0x{}", hex.to_ascii_lowercase()))
}

/// A decimal string of base units.
pub fn base_units(text: &str) -> Option<u128> {
    if text.is_empty() || text.len() > 39 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Base units as the token's amount: `9990137` of 6 decimals is `9.990137`.
pub fn token_amount(base_units: u128, decimals: u32) -> Decimal {
    let units = i128::try_from(base_units.min(MAX_BASE_UNITS)).unwrap_or(i128::MAX);
    Decimal::from_i128_with_scale(units, decimals)
}

// ---- a payment's side ----

/// Where a crypto payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
pub enum CryptoState {
    /// Waiting for the payer's transfer.
    Pending,
    /// A transfer is seen, below the network's confirmation count.
    Confirming,
    /// Confirmed and credited.
    Succeeded,
    /// Confirmed, but less than the price arrived: not credited; a further transfer of
    /// the rest completes it.
    Underpaid,
    /// Confirmed with more than the price: credited; the excess is on the payment.
    Overpaid,
    /// The window passed with no transfer.
    Expired,
    /// The transfer's transaction failed on chain.
    Failed,
    /// A credited transfer was reorganized out of the chain: the credit was reversed.
    Reorged,
    /// The money was sent back to the payer (recorded by an operator).
    Refunded,
}

stored_names!(CryptoState {
    Pending => "pending",
    Confirming => "confirming",
    Succeeded => "succeeded",
    Underpaid => "underpaid",
    Overpaid => "overpaid",
    Expired => "expired",
    Failed => "failed",
    Reorged => "reorged",
    Refunded => "refunded",
});

impl CryptoState {
    /// Whether the payment was credited (and so a reorg now reverses it).
    pub fn is_credited(self) -> bool {
        matches!(self, Self::Succeeded | Self::Overpaid)
    }

    /// Whether transfers can still move it: reconcile looks at these.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Pending | Self::Confirming | Self::Underpaid)
    }
}

impl fmt::Display for CryptoState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a crypto payment asks and has seen; kept on the payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CryptoDetails {
    pub chain_id: u64,
    pub network: String,
    pub token: String,
    pub symbol: String,
    pub decimals: u32,
    /// Where to send: the network's gateway.
    pub address: String,
    /// Exactly what to send, in base units: the price and the reference.
    #[serde(with = "units_text")]
    pub amount: u128,
    /// The digits the amount ends in that tell this payment apart.
    pub reference: u64,
    /// The EIP-681 URI a wallet opens to pay.
    pub uri: String,
    #[serde(with = "crate::time_util::serde_iso")]
    pub expires_at: OffsetDateTime,
    pub confirmations_required: u32,
    pub state: CryptoState,
    /// What the transfers counted so far bring, in base units.
    #[serde(with = "units_text", default)]
    pub received: u128,
    /// The transfer that settled it, or the latest seen.
    #[serde(default)]
    pub tx_hash: Option<String>,
    #[serde(default)]
    pub confirmations: u32,
    /// The key of the ledger entry that credited it (`crypto:<chain>:<tx>:<log>`).
    #[serde(default)]
    pub credited_by: Option<String>,
}

mod units_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&value.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let text = String::deserialize(d)?;
        super::base_units(&text).ok_or_else(|| serde::de::Error::custom("not a base-unit amount"))
    }
}

/// The EIP-681 URI of an ERC-20 transfer: `ethereum:<token>@<chain>/transfer?address=<to>&uint256=<amount>`.
pub fn payment_uri(token: &str, chain_id: u64, to: &str, amount: u128) -> String {
    format!("ethereum:{token}@{chain_id}/transfer?address={to}&uint256={amount}")
}

/// One ERC-20 transfer (a log of a transaction) as an indexer or a node reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainObservation {
    pub chain_id: u64,
    pub tx_hash: String,
    pub log_index: u64,
    pub block_number: u64,
    pub block_hash: Option<String>,
    pub from: Option<String>,
    pub to: String,
    /// The token's contract.
    pub token: String,
    #[serde(with = "units_text")]
    pub amount: u128,
    /// The log was reorganized out of the chain.
    pub removed: bool,
    /// The transaction reverted.
    pub failed: bool,
    /// What the provider sent, kept with the observation.
    pub raw: Value,
}

impl ChainObservation {
    /// The chain triple that names the transfer, and keys its credit once.
    pub fn key(&self) -> String {
        format!("crypto:{}:{}:{}", self.chain_id, self.tx_hash, self.log_index)
    }
}

/// A transfer as the store keeps it, with what the engine made of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredObservation {
    /// The payment it was matched to; `None` when no payment holds its reference.
    pub payment_id: Option<String>,
    pub observation: ChainObservation,
    #[serde(with = "crate::time_util::serde_iso")]
    pub seen_at: OffsetDateTime,
}

/// A reference a payment took: `reference` of the token `(chain_id, token)`, held until
/// `held_until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferenceClaim {
    pub chain_id: u64,
    pub token: String,
    pub reference: u64,
    pub user_id: String,
    pub payment_id: String,
    #[serde(with = "crate::time_util::serde_iso")]
    pub held_until: OffsetDateTime,
}

/// What a transaction's receipt says now, as the host's node reads it for
/// [`reconcile_crypto`](crate::Billing::reconcile_crypto).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxReceipt {
    pub block_number: u64,
    pub block_hash: Option<String>,
    /// Blocks on top of it, its own included.
    pub confirmations: u32,
    /// `status` 0: the transaction reverted.
    pub failed: bool,
}

/// A source of chain observations: it checks a notification's signature and reads the
/// transfers it reports. Alchemy's Address Activity is [`crate::alchemy::AlchemyNotify`].
pub trait CryptoProvider: Send + Sync {
    /// The provider's name, for the audit log (`alchemy`).
    fn name(&self) -> &str;

    /// The transfers a verified `body` reports; INVALID_WEBHOOK when the signature is
    /// missing, malformed or wrong, or the body is not the provider's format.
    fn read_notification(&self, body: &[u8], headers: &[(String, String)]) -> Result<Vec<ChainObservation>>;
}

/// The state `details` reaches with the payment's `transfers` (those not removed or
/// failed, with their confirmations) at `now`. A payment that was credited stays so
/// until a credited transfer is removed; one reorged, refunded or failed stays so.
pub fn next_state(
    details: &CryptoDetails,
    transfers: &[(u128, u32)],
    failed: bool,
    now: OffsetDateTime,
) -> CryptoState {
    if matches!(details.state, CryptoState::Reorged | CryptoState::Refunded) {
        return details.state;
    }
    let received: u128 = transfers.iter().map(|(amount, _)| amount).sum();
    let confirmed = transfers.iter().all(|(_, confirmations)| *confirmations >= details.confirmations_required);
    let price = details.amount - u128::from(details.reference);
    match () {
        _ if details.state.is_credited() => details.state,
        _ if transfers.is_empty() && failed => CryptoState::Failed,
        _ if transfers.is_empty() && now >= details.expires_at => CryptoState::Expired,
        _ if transfers.is_empty() => CryptoState::Pending,
        _ if !confirmed => CryptoState::Confirming,
        _ if received < price => CryptoState::Underpaid,
        _ if received > details.amount => CryptoState::Overpaid,
        _ => CryptoState::Succeeded,
    }
}

/// INVALID_WEBHOOK for a crypto notification, with a fixed reason.
pub(crate) fn invalid_webhook(reason: &str) -> BillingError {
    BillingError::InvalidWebhook { reason: reason.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn details(state: CryptoState) -> CryptoDetails {
        CryptoDetails {
            chain_id: 1,
            network: "Ethereum".into(),
            token: "0xdac17f958d2ee523a2206206994597c13d831ec7".into(),
            symbol: "USDT".into(),
            decimals: 6,
            address: "0x1111111111111111111111111111111111111111".into(),
            amount: 9_990_137,
            reference: 137,
            uri: String::new(),
            expires_at: datetime!(2026-01-01 13:00 UTC),
            confirmations_required: 12,
            state,
            received: 0,
            tx_hash: None,
            confirmations: 0,
            credited_by: None,
        }
    }

    #[test]
    fn the_state_follows_the_transfers_their_confirmations_and_the_window() {
        let before = datetime!(2026-01-01 12:30 UTC);
        let after = datetime!(2026-01-01 13:30 UTC);
        let pending = details(CryptoState::Pending);
        use CryptoState::*;
        type Case<'a> = (&'a [(u128, u32)], bool, OffsetDateTime, CryptoState);
        let cases: [Case; 9] = [
            (&[], false, before, Pending),
            (&[], false, after, Expired),
            (&[], true, before, Failed),
            (&[(9_990_137, 3)], false, before, Confirming),
            (&[(9_990_137, 12)], false, before, Succeeded),
            (&[(9_990_137, 12)], false, after, Succeeded),
            (&[(8_990_137, 12)], false, before, Underpaid),
            (&[(8_990_137, 12), (1_000_000, 12)], false, before, Succeeded),
            (&[(10_990_137, 40)], false, before, Overpaid),
        ];
        for (transfers, failed, now, want) in cases {
            assert_eq!(next_state(&pending, transfers, failed, now), want, "{transfers:?} {failed} {now}");
        }
        // A price paid without its reference digits (an exchange rounded them off).
        assert_eq!(next_state(&pending, &[(9_990_000, 12)], false, before), Succeeded);
        // Credited stays credited while its transfers stand; reorged and refunded stay.
        assert_eq!(next_state(&details(Succeeded), &[(9_990_137, 1)], false, before), Succeeded);
        assert_eq!(next_state(&details(Reorged), &[(9_990_137, 40)], false, before), Reorged);
    }

    #[test]
    fn addresses_hashes_and_amounts_are_read_strictly() {
        assert_eq!(
            address("0xdAC17F958D2ee523a2206206994597C13D831ec7").as_deref(),
            Some("0xdac17f958d2ee523a2206206994597c13d831ec7")
        );
        for bad in [
            "",
            "0x",
            "dac17f958d2ee523a2206206994597c13d831ec7",
            "0xdac17f958d2ee523a2206206994597c13d831ec",
            "0xzz17f958d2ee523a2206206994597c13d831ec7",
        ] {
            assert_eq!(address(bad), None, "{bad}");
        }
        assert!(tx_hash(&format!("0x{}", "ab".repeat(32))).is_some());
        assert_eq!(base_units("9990137"), Some(9_990_137));
        for bad in ["", "-1", "1.5", "1e6", " 1", "99999999999999999999999999999999999999999"] {
            assert_eq!(base_units(bad), None, "{bad}");
        }
        assert_eq!(token_amount(9_990_137, 6).to_string(), "9.990137");
        assert_eq!(token_amount(9_990_000_000_000_000_000, 18).to_string(), "9.990000000000000000");
        assert_eq!(payment_uri("0xt", 1, "0xg", 9_990_137), "ethereum:0xt@1/transfer?address=0xg&uint256=9990137");
    }
}
