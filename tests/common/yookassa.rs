//! The project's one fake YooKassa (`tests/fakes/yookassa.py`, shared with the Python
//! suite), started as a process on 127.0.0.1 and driven through its control API. The
//! engine talks to it over real HTTP through its real client.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

pub const SHOP_ID: &str = "506751";
pub const SECRET_KEY: &str = "test_SecretKey_42";
/// An address inside YooKassa's published networks.
pub const YOOKASSA_ADDR: &str = "185.71.76.10";

pub struct FakeYooKassa {
    pub url: String,
    control: String,
    agent: ureq::Agent,
    /// Holds the fake's standard input open: it exits when this closes.
    process: Child,
}

impl Drop for FakeYooKassa {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// A fake YooKassa, and a fixture on `db` that pays through it with `user` registered;
/// `adjust` changes the engine's config first.
pub fn paying_fixture(
    db: super::TestDb,
    user: &str,
    adjust: impl FnOnce(&mut billing_engine::YooKassaConfig),
) -> (FakeYooKassa, super::Fixture) {
    let fake = FakeYooKassa::start();
    let mut config = fake.config();
    adjust(&mut config);
    let f = super::Fixture::with_yookassa(db, config);
    f.billing.register_user(user, true).unwrap();
    (fake, f)
}

/// `user` buys `purchase` and pays; the notification is applied. The engine's payment id.
pub fn buy_and_pay(
    fake: &FakeYooKassa,
    f: &super::Fixture,
    user: &str,
    purchase: billing_engine::Purchase<'_>,
    save_method: bool,
    key: &str,
) -> String {
    let created = f.billing.create_payment(user, purchase, None, save_method, key, None).unwrap();
    fake.pay(&created.yookassa_payment_id);
    let outcome = deliver(&f.billing, &fake.notification("payment.succeeded", &created.yookassa_payment_id)).unwrap();
    assert_eq!(outcome.status, billing_engine::WebhookStatus::Applied);
    created.payment_id
}

/// Hands `body` to the engine as a notification from inside YooKassa's networks.
pub fn deliver(
    billing: &billing_engine::Billing,
    body: &[u8],
) -> billing_engine::Result<billing_engine::WebhookOutcome> {
    billing.handle_yookassa_webhook(body, Some(YOOKASSA_ADDR), &[])
}

/// The engine's config for the fake at `api_url`.
pub fn config_for(api_url: &str) -> billing_engine::YooKassaConfig {
    let mut config = billing_engine::YooKassaConfig::new(SHOP_ID, SECRET_KEY);
    config.api_url = api_url.to_owned();
    config.return_url = Some("https://app.example/billing/done".into());
    config.timeout = std::time::Duration::from_secs(2);
    config
}

impl FakeYooKassa {
    pub fn start() -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fakes/yookassa.py");
        let mut process = Command::new("python3")
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the fake YooKassa");
        let mut line = String::new();
        BufReader::new(process.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line.trim().to_owned();
        assert!(url.starts_with("http://127.0.0.1:"), "the fake printed `{url}`");
        let control = url.trim_end_matches("/v3").to_owned() + "/_control";
        let agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        Self { url, control, agent, process }
    }

    pub fn config(&self) -> billing_engine::YooKassaConfig {
        config_for(&self.url)
    }

    /// The fake's API address, for a worker process to build its config with.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn post(&self, path: &str, body: Value) -> Value {
        let mut response = self.agent.post(&format!("{}{path}", self.control)).send_json(body).unwrap();
        assert_eq!(response.status().as_u16(), 200, "control call {path}");
        response.body_mut().read_json().unwrap()
    }

    fn get(&self, path: &str) -> Value {
        let mut response = self.agent.get(&format!("{}{path}", self.control)).call().unwrap();
        assert_eq!(response.status().as_u16(), 200, "control call {path}");
        response.body_mut().read_json().unwrap()
    }

    fn state(&self) -> Value {
        self.get("/state")
    }

    /// The user pays: a one-stage payment succeeds, a two-stage one is held. With
    /// `save_payment_method` the card is saved.
    pub fn pay(&self, id: &str) {
        self.post("/pay", json!({ "id": id }));
    }

    /// Sets a payment's or a refund's status, as YooKassa moves it.
    pub fn set_status(&self, id: &str, status: &str) {
        self.post("/set_status", json!({ "id": id, "status": status }));
    }

    /// A notification of `event` carrying the object as the API has it now.
    pub fn notification(&self, event: &str, id: &str) -> Vec<u8> {
        serde_json::to_vec(&self.get(&format!("/notification?event={event}&id={id}"))).unwrap()
    }

    pub fn refund_notification(&self, refund_id: &str) -> Vec<u8> {
        self.notification("refund.succeeded", refund_id)
    }

    pub fn payment(&self, id: &str) -> Value {
        self.state()["payments"][id].clone()
    }

    /// Every payment object, in no particular order.
    pub fn payment_objects(&self) -> Vec<Value> {
        self.state()["payments"].as_object().map(|p| p.values().cloned().collect()).unwrap_or_default()
    }

    pub fn payments_created(&self) -> usize {
        self.state()["payments"].as_object().map_or(0, |p| p.len())
    }

    pub fn refund_ids(&self) -> Vec<String> {
        self.state()["refunds"].as_object().map(|r| r.keys().cloned().collect()).unwrap_or_default()
    }

    pub fn refund(&self, id: &str) -> Value {
        self.state()["refunds"][id].clone()
    }

    pub fn requests(&self) -> Vec<String> {
        serde_json::from_value(self.state()["requests"].clone()).unwrap()
    }

    /// The next `count` calls to paths starting with `path` answer `status` after doing
    /// their work (a 5xx), or, with `status` 0, answer `delay_s` seconds late.
    pub fn fail(&self, path: &str, count: usize, status: u16, delay_s: f64) {
        self.post("/fail", json!({ "path": path, "count": count, "status": status, "delay_s": delay_s }));
    }

    pub fn fail_next_creates(&self, n: usize) {
        self.fail("/payments", n, 500, 0.0);
    }

    pub fn decline_recurring(&self, decline: bool) {
        self.post("/decline_recurring", json!({ "on": decline }));
    }

    /// Charges of saved methods are declined for `reason` (`permission_revoked`, ...).
    pub fn decline_recurring_for(&self, reason: &str) {
        self.post("/decline_recurring", json!({ "on": true, "reason": reason }));
    }

    /// The user pays with a method of `method_type` (`yoo_money`, `sbp`, `bank_card`).
    pub fn pay_with(&self, id: &str, method_type: &str) {
        self.post("/pay", json!({ "id": id, "method_type": method_type }));
    }

    /// The shop fiscalizes through YooKassa: every payment and refund needs a receipt.
    pub fn require_receipts(&self, on: bool) {
        self.post("/receipts", json!({ "on": on }));
    }

    /// The receipts YooKassa accepted, as `(path, receipt)`, oldest first.
    pub fn receipts(&self) -> Vec<(String, Value)> {
        let receipts = self.state()["receipts"].as_array().cloned().unwrap_or_default();
        receipts.into_iter().map(|r| (r["path"].as_str().unwrap().to_owned(), r["receipt"].clone())).collect()
    }

    /// The shop refunds `amount` in YooKassa's dashboard; returns the refund's id.
    pub fn refund_in_dashboard(&self, payment_id: &str, amount: &str) -> String {
        self.post("/refund", json!({ "id": payment_id, "amount": amount }))["id"].as_str().unwrap().to_owned()
    }

    /// Overwrites fields of a payment as the API shows it.
    pub fn patch(&self, payment_id: &str, fields: Value) {
        self.post("/patch", json!({ "id": payment_id, "fields": fields }));
    }

    /// A saved method's status changes (`inactive`: it can no longer be charged).
    pub fn set_method_status(&self, method_id: &str, status: &str) {
        self.post("/method_status", json!({ "id": method_id, "status": status }));
    }

    /// The API has `object`, one of its `kind` (`payments`, `refunds`, `payment_methods`).
    pub fn put(&self, kind: &str, object: &Value) {
        self.post("/put", json!({ "kind": kind, "object": object }));
    }

    /// The next object YooKassa creates gets `id`.
    pub fn next_id(&self, id: &str) {
        self.post("/next_id", json!({ "id": id }));
    }

    pub fn refunds_pending(&self, pending: bool) {
        self.post("/refunds_pending", json!({ "on": pending }));
    }
}
