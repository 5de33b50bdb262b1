//! The project's one fake chain indexer (`tests/fakes/indexer.py`, shared with the
//! Python suite), started as a process on 127.0.0.1: it mines transfers, hands back the
//! signed Alchemy notifications they make, and answers JSON-RPC about its chains.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use billing_engine::crypto::TxReceipt;
use serde_json::{json, Value};

pub const SIGNING_KEY: &str = "whsec_fake_indexer_signing_key";
pub const ETHEREUM: u64 = 1;
pub const USDT: &str = "0xdac17f958d2ee523a2206206994597c13d831ec7";
/// The example tariffs' gateway.
pub const GATEWAY: &str = "0x7a16ff8270133f063aab6c9977183d9e72835428";

pub struct FakeIndexer {
    pub url: String,
    agent: ureq::Agent,
    process: Child,
}

impl Drop for FakeIndexer {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// A notification as the indexer would post it.
#[derive(Debug, Clone)]
pub struct Notification {
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

/// A transfer the indexer mined.
#[derive(Debug, Clone)]
pub struct Mined {
    pub tx_hash: String,
    pub block_number: u64,
    pub notification: Notification,
}

fn notification(value: &Value) -> Notification {
    let headers = value["headers"].as_object().unwrap();
    Notification {
        body: value["body"].as_str().unwrap().as_bytes().to_vec(),
        headers: headers.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned())).collect(),
    }
}

impl FakeIndexer {
    pub fn start() -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fakes/indexer.py");
        let mut process = Command::new("python3")
            .arg(&script)
            .arg(SIGNING_KEY)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the fake indexer");
        let mut line = String::new();
        BufReader::new(process.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line.trim().to_owned();
        assert!(url.starts_with("http://127.0.0.1:"), "the indexer printed `{url}`");
        Self { url, agent: ureq::Agent::config_builder().http_status_as_error(false).build().into(), process }
    }

    fn post(&self, path: &str, body: Value) -> Value {
        let mut response = self.agent.post(&format!("{}{path}", self.url)).send_json(body).unwrap();
        assert_eq!(response.status().as_u16(), 200, "indexer call {path}");
        response.body_mut().read_json().unwrap()
    }

    /// A USDT transfer of `amount` base units to the gateway, mined in a new block.
    pub fn pay(&self, amount: &str) -> Mined {
        self.transfer(json!({ "chain_id": ETHEREUM, "token": USDT, "to": GATEWAY, "amount": amount }))
    }

    pub fn transfer(&self, transfer: Value) -> Mined {
        let mined = self.post("/_control/transfer", transfer);
        Mined {
            tx_hash: mined["tx_hash"].as_str().unwrap().to_owned(),
            block_number: mined["block_number"].as_u64().unwrap(),
            notification: notification(&mined["notification"]),
        }
    }

    /// `blocks` empty blocks on Ethereum; the new head.
    pub fn mine(&self, blocks: u64) -> u64 {
        self.post("/_control/mine", json!({ "chain_id": ETHEREUM, "blocks": blocks }))["head"].as_u64().unwrap()
    }

    /// Drops the transfer's block; the notification that says so.
    pub fn reorg(&self, tx_hash: &str) -> Notification {
        notification(&self.post("/_control/reorg", json!({ "tx_hash": tx_hash })))
    }

    /// The transfer's notification signed with another key.
    pub fn forged(&self, tx_hash: &str) -> Notification {
        notification(&self.post("/_control/notification", json!({ "tx_hash": tx_hash, "forged": true })))
    }

    fn rpc(&self, chain_id: u64, method: &str, params: Value) -> Value {
        let request = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
        self.post(&format!("/rpc/{chain_id}"), request)["result"].clone()
    }

    /// A transaction's receipt as a host's reconcile callback reads it from a node.
    pub fn receipt(&self, chain_id: u64, tx_hash: &str) -> billing_engine::Result<Option<TxReceipt>> {
        let hex = |value: &Value| u64::from_str_radix(value.as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
        let head = hex(&self.rpc(chain_id, "eth_blockNumber", json!([])));
        let receipt = self.rpc(chain_id, "eth_getTransactionReceipt", json!([tx_hash]));
        if receipt.is_null() {
            return Ok(None);
        }
        let block_number = hex(&receipt["blockNumber"]);
        Ok(Some(TxReceipt {
            block_number,
            block_hash: receipt["blockHash"].as_str().map(str::to_owned),
            confirmations: (head + 1 - block_number) as u32,
            failed: receipt["status"] == "0x0",
        }))
    }
}
