//! Alchemy Notify's Address Activity webhook as a [`CryptoProvider`]
//! (<https://docs.alchemy.com/reference/address-activity-webhook>): Alchemy posts the
//! ERC-20 transfers to and from the addresses a webhook tracks (here, the gateways),
//! block by block, and again with `log.removed: true` when a reorg drops one.
//!
//! Each request is signed: `X-Alchemy-Signature` is the hex HMAC-SHA256 of the raw body,
//! keyed by the webhook's signing key. It is checked in constant time before the body
//! is read; a missing, malformed or wrong signature is INVALID_WEBHOOK.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

use crate::crypto::{self, invalid_webhook, ChainObservation, CryptoProvider};
use crate::error::{BillingError, Result};

pub const SIGNATURE_HEADER: &str = "X-Alchemy-Signature";

/// Alchemy's names of the networks it serves, with their chain ids.
const NETWORKS: [(&str, u64); 12] = [
    ("ETH_MAINNET", 1),
    ("ETH_SEPOLIA", 11_155_111),
    ("ETH_HOLESKY", 17_000),
    ("MATIC_MAINNET", 137),
    ("MATIC_AMOY", 80_002),
    ("ARB_MAINNET", 42_161),
    ("OPT_MAINNET", 10),
    ("BASE_MAINNET", 8_453),
    ("BASE_SEPOLIA", 84_532),
    ("BNB_MAINNET", 56),
    ("AVAX_MAINNET", 43_114),
    ("ZKSYNC_MAINNET", 324),
];

/// The chain id of an Alchemy network name.
pub fn chain_id(network: &str) -> Option<u64> {
    NETWORKS.iter().find(|(name, _)| *name == network).map(|(_, id)| *id)
}

/// Notifications of one Alchemy webhook, checked with its signing key.
pub struct AlchemyNotify {
    signing_key: String,
}

impl std::fmt::Debug for AlchemyNotify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AlchemyNotify { signing_key: … }")
    }
}

impl AlchemyNotify {
    /// The webhook's signing key (Alchemy's dashboard shows it per webhook).
    pub fn new(signing_key: &str) -> Result<Self> {
        if signing_key.trim().is_empty() || signing_key.len() > 256 {
            return Err(BillingError::invalid("signing_key", "1 to 256 characters"));
        }
        Ok(Self { signing_key: signing_key.to_owned() })
    }

    fn verify(&self, body: &[u8], headers: &[(String, String)]) -> Result<()> {
        let signature = headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(SIGNATURE_HEADER))
            .map(|(_, value)| value.trim())
            .ok_or_else(|| invalid_webhook("no X-Alchemy-Signature header"))?;
        let signature = hex::decode(signature).map_err(|_| invalid_webhook("the signature is not hex"))?;
        let mut mac = Hmac::<Sha256>::new_from_slice(self.signing_key.as_bytes()).expect("any key length");
        mac.update(body);
        // `verify_slice` compares in constant time.
        mac.verify_slice(&signature).map_err(|_| invalid_webhook("the signature does not match the body"))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Notification {
    #[serde(rename = "type")]
    kind: String,
    event: Event,
}

#[derive(Deserialize)]
struct Event {
    network: String,
    #[serde(default)]
    activity: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Activity {
    category: String,
    from_address: Option<String>,
    to_address: String,
    raw_contract: RawContract,
    log: Option<Log>,
    hash: String,
    block_num: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawContract {
    raw_value: String,
    address: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Log {
    log_index: String,
    block_hash: Option<String>,
    #[serde(default)]
    removed: bool,
}

impl CryptoProvider for AlchemyNotify {
    fn name(&self) -> &str {
        "alchemy"
    }

    /// The ERC-20 transfers of an `ADDRESS_ACTIVITY` notification on a network Alchemy
    /// names. Other activity (ETH, NFTs) is left out: plans are priced in tokens.
    fn read_notification(&self, body: &[u8], headers: &[(String, String)]) -> Result<Vec<ChainObservation>> {
        self.verify(body, headers)?;
        let notification: Notification =
            serde_json::from_slice(body).map_err(|_| invalid_webhook("not an Alchemy notification"))?;
        if notification.kind != "ADDRESS_ACTIVITY" {
            return Ok(Vec::new());
        }
        let chain_id =
            chain_id(&notification.event.network).ok_or_else(|| invalid_webhook("a network Alchemy does not name"))?;
        let mut observations = Vec::new();
        for raw in notification.event.activity {
            let activity: Activity =
                serde_json::from_value(raw.clone()).map_err(|_| invalid_webhook("an activity of another shape"))?;
            if activity.category != "token" {
                continue;
            }
            observations.push(observation(chain_id, activity, raw)?);
        }
        Ok(observations)
    }
}

fn observation(chain_id: u64, activity: Activity, raw: Value) -> Result<ChainObservation> {
    let log = activity.log.ok_or_else(|| invalid_webhook("a token transfer without its log"))?;
    let token = activity.raw_contract.address.as_deref().and_then(crypto::address);
    Ok(ChainObservation {
        chain_id,
        tx_hash: crypto::tx_hash(&activity.hash).ok_or_else(|| invalid_webhook("a malformed transaction hash"))?,
        log_index: hex_number(&log.log_index).ok_or_else(|| invalid_webhook("a malformed log index"))? as u64,
        block_number: hex_number(&activity.block_num).ok_or_else(|| invalid_webhook("a malformed block number"))?
            as u64,
        block_hash: log.block_hash.as_deref().and_then(crypto::tx_hash),
        from: activity.from_address.as_deref().and_then(crypto::address),
        to: crypto::address(&activity.to_address).ok_or_else(|| invalid_webhook("a malformed address"))?,
        token: token.ok_or_else(|| invalid_webhook("a token transfer without its contract"))?,
        amount: hex_number(&activity.raw_contract.raw_value).ok_or_else(|| invalid_webhook("a malformed amount"))?,
        removed: log.removed,
        failed: false,
        raw,
    })
}

/// A `0x` hex quantity (`0x` alone is 0), up to 128 bits.
fn hex_number(text: &str) -> Option<u128> {
    let digits = text.strip_prefix("0x")?.trim_start_matches('0');
    if digits.is_empty() {
        return Some(0);
    }
    u128::from_str_radix(digits, 16).ok().filter(|_| digits.len() <= 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of Alchemy's documentation, with a USDT amount of 9.990137.
    fn sample() -> Value {
        serde_json::json!({
            "webhookId": "wh_k63lg72rxda78gce",
            "id": "whevt_vq499kv7elmlbp2v",
            "createdAt": "2024-01-23T07:42:26.411977228Z",
            "type": "ADDRESS_ACTIVITY",
            "event": {
                "network": "ETH_MAINNET",
                "activity": [{
                    "blockNum": "0xdf34a3",
                    "hash": "0x7a4a39da2a3fa1fc2ef88fd1eaea070286ed2aba21e0419dcfb6d5c5d9f02a72",
                    "fromAddress": "0x503828976d22510aad0201ac7ec88293211d23da",
                    "toAddress": "0xbe3f4b43db5eb49d1f48f53443b9abce45da3b79",
                    "value": 9.990137,
                    "erc721TokenId": null,
                    "erc1155Metadata": null,
                    "asset": "USDT",
                    "category": "token",
                    "rawContract": {
                        "rawValue": "0x0000000000000000000000000000000000000000000000000000000000986ff9",
                        "address": "0xdAC17F958D2ee523a2206206994597C13D831ec7",
                        "decimals": 6
                    },
                    "log": {
                        "address": "0xdac17f958d2ee523a2206206994597c13d831ec7",
                        "topics": [],
                        "data": "0x0000000000000000000000000000000000000000000000000000000000986ff9",
                        "blockNumber": "0xdf34a3",
                        "transactionHash": "0x7a4a39da2a3fa1fc2ef88fd1eaea070286ed2aba21e0419dcfb6d5c5d9f02a72",
                        "transactionIndex": "0x46",
                        "blockHash": "0xa99ec54413bd3db3f9bdb0c1ad3ab1400ee0ecefb47803e17f9d33c78d1e9dc5",
                        "logIndex": "0x6e",
                        "removed": false
                    }
                }]
            }
        })
    }

    fn signed(key: &str, body: &[u8]) -> Vec<(String, String)> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(body);
        vec![(SIGNATURE_HEADER.to_owned(), hex::encode(mac.finalize().into_bytes()))]
    }

    #[test]
    fn a_signed_notification_reads_as_its_transfers() {
        let provider = AlchemyNotify::new("whsec_test").unwrap();
        let body = serde_json::to_vec(&sample()).unwrap();
        let observations = provider.read_notification(&body, &signed("whsec_test", &body)).unwrap();
        assert_eq!(observations.len(), 1);
        let o = &observations[0];
        assert_eq!((o.chain_id, o.block_number, o.log_index, o.amount), (1, 0xdf34a3, 0x6e, 9_990_137));
        assert_eq!(o.token, "0xdac17f958d2ee523a2206206994597c13d831ec7");
        assert_eq!(o.to, "0xbe3f4b43db5eb49d1f48f53443b9abce45da3b79");
        assert!(!o.removed);
        assert_eq!(o.raw["asset"], "USDT", "the raw activity is kept");
    }

    #[test]
    fn a_missing_malformed_or_wrong_signature_is_refused() {
        let provider = AlchemyNotify::new("whsec_test").unwrap();
        let body = serde_json::to_vec(&sample()).unwrap();
        let header = |value: &str| vec![(SIGNATURE_HEADER.to_owned(), value.to_owned())];
        for headers in [vec![], header(""), header("not hex"), signed("another key", &body), header(&"0".repeat(64))] {
            let error = provider.read_notification(&body, &headers).unwrap_err();
            assert_eq!(error.code(), "INVALID_WEBHOOK", "{headers:?}");
        }
        let mut tampered = body.clone();
        tampered[10] ^= 1;
        assert!(provider.read_notification(&tampered, &signed("whsec_test", &body)).is_err());
    }

    #[test]
    fn hex_quantities_read_exactly() {
        assert_eq!(hex_number("0x"), Some(0));
        assert_eq!(hex_number("0x00ff"), Some(255));
        assert_eq!(hex_number(&format!("0x{}", "f".repeat(32))), Some(u128::MAX));
        assert_eq!(hex_number(&format!("0x1{}", "0".repeat(32))), None);
        assert_eq!(hex_number("ff"), None);
    }
}
