//! A fake YooKassa API v3 on 127.0.0.1 for the payment tests: real HTTP (a minimal
//! HTTP/1.1 server, one thread per connection), the real client. It checks Basic auth and `Idempotence-Key` the way YooKassa does (a repeat with
//! the same key and body gets the first answer; another body under the key is a 400),
//! and lets a test play the user (pay, hold a card) and the network (5xx answers).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use base64::Engine as _;
use serde_json::{json, Value};

pub const SHOP_ID: &str = "506751";
pub const SECRET_KEY: &str = "test_SecretKey_42";
/// An address inside YooKassa's published networks.
pub const YOOKASSA_ADDR: &str = "185.71.76.10";

#[derive(Default)]
struct State {
    payments: BTreeMap<String, Value>,
    refunds: BTreeMap<String, Value>,
    /// Idempotence-Key → (request line and body, status, answer).
    answered: HashMap<String, (String, u16, Value)>,
    /// Every request as `METHOD path`.
    log: Vec<String>,
    /// The next this many POST /payments answer 500, the first of them after creating
    /// the payment: the worst case for a client (did it go through or not?).
    fail_creates: usize,
    decline_recurring: bool,
    next_id: u64,
}

pub struct FakeYooKassa {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl FakeYooKassa {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v3", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        // One thread per connection; the listener thread ends with the test process.
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                thread::spawn(move || serve(stream, &state));
            }
        });
        Self { url, state }
    }

    pub fn config(&self) -> billing_engine::YooKassaConfig {
        let mut config = billing_engine::YooKassaConfig::new(SHOP_ID, SECRET_KEY);
        config.api_url = self.url.clone();
        config.return_url = Some("https://app.example/billing/done".into());
        config.timeout = std::time::Duration::from_secs(2);
        config
    }

    /// The user pays: a one-stage payment succeeds, a two-stage one is held. With
    /// `save_payment_method` the card is saved.
    pub fn pay(&self, id: &str) {
        let mut state = self.state.lock().unwrap();
        let payment = state.payments.get_mut(id).expect("a payment the engine created");
        let capture = payment["capture"].as_bool().unwrap_or(true);
        payment["status"] = json!(if capture { "succeeded" } else { "waiting_for_capture" });
        payment["paid"] = json!(true);
        let saved = payment["save_payment_method"].as_bool().unwrap_or(false);
        payment["payment_method"] = card(&format!("pm-{id}"), saved);
    }

    pub fn set_status(&self, id: &str, status: &str) {
        self.state.lock().unwrap().payments.get_mut(id).unwrap()["status"] = json!(status);
    }

    /// A notification of `event` carrying the payment as the API has it now, or with
    /// `status` put in its place.
    pub fn notification(&self, event: &str, id: &str) -> Vec<u8> {
        let object = self.state.lock().unwrap().payments[id].clone();
        serde_json::to_vec(&json!({ "type": "notification", "event": event, "object": object })).unwrap()
    }

    pub fn refund_notification(&self, refund_id: &str) -> Vec<u8> {
        let object = self.state.lock().unwrap().refunds[refund_id].clone();
        serde_json::to_vec(&json!({ "type": "notification", "event": "refund.succeeded", "object": object })).unwrap()
    }

    pub fn payment(&self, id: &str) -> Value {
        self.state.lock().unwrap().payments[id].clone()
    }

    pub fn payments_created(&self) -> usize {
        self.state.lock().unwrap().payments.len()
    }

    pub fn refund_ids(&self) -> Vec<String> {
        self.state.lock().unwrap().refunds.keys().cloned().collect()
    }

    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn fail_next_creates(&self, n: usize) {
        self.state.lock().unwrap().fail_creates = n;
    }

    pub fn decline_recurring(&self, decline: bool) {
        self.state.lock().unwrap().decline_recurring = decline;
    }
}

/// Answers one HTTP/1.1 request on `stream`, then closes it.
fn serve(stream: TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, url) = (parts.next().unwrap_or_default().to_owned(), parts.next().unwrap_or_default().to_owned());
    let mut headers = HashMap::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    let length = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let body = String::from_utf8_lossy(&body);
    let header = |name: &str| headers.get(name).map(String::as_str);
    let (status, answer) =
        handle(&mut state.lock().unwrap(), &method, &url, &body, header("authorization"), header("idempotence-key"));
    let answer = answer.to_string();
    let response = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    );
    let _ = reader.into_inner().write_all(response.as_bytes());
}

fn card(method_id: &str, saved: bool) -> Value {
    json!({
        "type": "bank_card", "id": method_id, "saved": saved, "title": "Bank card *4444",
        "card": {"first6": "555555", "last4": "4444", "expiry_month": "12", "expiry_year": "2030", "card_type": "MasterCard"}
    })
}

fn error(status: u16, code: &str, description: &str) -> (u16, Value) {
    (status, json!({ "type": "error", "code": code, "description": description }))
}

fn handle(
    state: &mut State,
    method: &str,
    url: &str,
    body: &str,
    auth: Option<&str>,
    key: Option<&str>,
) -> (u16, Value) {
    let path = url.trim_start_matches("/v3");
    state.log.push(format!("{method} {path}"));
    let expected =
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{SHOP_ID}:{SECRET_KEY}")));
    if auth != Some(expected.as_str()) {
        return error(401, "invalid_credentials", "Authentication by given credentials failed");
    }
    if method == "GET" {
        let found = match path.split('/').collect::<Vec<_>>().as_slice() {
            ["", "payments", id] => state.payments.get(*id).cloned(),
            ["", "refunds", id] => state.refunds.get(*id).cloned(),
            _ => None,
        };
        return found.map_or_else(|| error(404, "not_found", "Not found"), |object| (200, object));
    }
    let Some(key) = key.filter(|k| !k.is_empty() && k.len() <= 64) else {
        return error(400, "invalid_request", "Idempotence-Key header is missing or longer than 64 characters");
    };
    let failing = path == "/payments" && state.fail_creates > 0;
    if failing {
        state.fail_creates -= 1;
    }
    let (status, answer) = answer_once(state, method, path, body, key);
    if failing {
        return error(500, "internal_server_error", "Internal server error");
    }
    (status, answer)
}

/// Answers a POST the first time its key is seen, and repeats that answer after.
fn answer_once(state: &mut State, method: &str, path: &str, body: &str, key: &str) -> (u16, Value) {
    let request = format!("{method} {path} {body}");
    if let Some((first, status, answer)) = state.answered.get(key) {
        if *first != request {
            return error(400, "invalid_request", "Idempotence key duplicated");
        }
        return (*status, answer.clone());
    }
    let body: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    state.next_id += 1;
    let id = format!("2f{:06x}-000f-5000-9000-1b68e7b15f3f", state.next_id);
    let (status, answer) = match path.split('/').collect::<Vec<_>>().as_slice() {
        ["", "payments"] => create_payment(state, &id, body),
        ["", "payments", pid, "cancel"] => match state.payments.get_mut(*pid) {
            Some(p) if p["status"] == "waiting_for_capture" => {
                p["status"] = json!("canceled");
                p["cancellation_details"] = json!({"party": "merchant", "reason": "canceled_by_merchant"});
                (200, p.clone())
            }
            Some(_) => error(400, "invalid_request", "Payment is not waiting for capture"),
            None => error(404, "not_found", "Not found"),
        },
        ["", "refunds"] => {
            let pid = body["payment_id"].as_str().unwrap_or_default().to_owned();
            match state.payments.get(&pid) {
                Some(p) if p["status"] == "succeeded" => {
                    let refund = json!({"id": id, "payment_id": pid, "status": "succeeded", "amount": body["amount"]});
                    state.refunds.insert(id.clone(), refund.clone());
                    (200, refund)
                }
                _ => error(400, "invalid_request", "Payment cannot be refunded"),
            }
        }
        _ => error(404, "not_found", "Not found"),
    };
    state.answered.insert(key.to_owned(), (request, status, answer.clone()));
    (status, answer)
}

fn create_payment(state: &mut State, id: &str, body: Value) -> (u16, Value) {
    let value = body["amount"]["value"].as_str().unwrap_or_default();
    if value.split_once('.').map(|(_, cents)| cents.len()) != Some(2) {
        return error(400, "invalid_request", "amount.value must have two decimal places");
    }
    let mut payment = json!({
        "id": id, "status": "pending", "paid": false, "amount": body["amount"],
        "capture": body["capture"], "description": body["description"], "metadata": body["metadata"],
        "save_payment_method": body["save_payment_method"], "created_at": "2026-01-01T12:00:00.000Z",
    });
    if let Some(method_id) = body["payment_method_id"].as_str() {
        let declined = state.decline_recurring;
        payment["status"] = json!(if declined { "canceled" } else { "succeeded" });
        payment["paid"] = json!(!declined);
        payment["payment_method"] = card(method_id, true);
        if declined {
            payment["cancellation_details"] = json!({"party": "payment_network", "reason": "insufficient_funds"});
        }
    } else {
        let return_url = body["confirmation"]["return_url"].as_str().unwrap_or_default();
        payment["confirmation"] = json!({
            "type": "redirect", "return_url": return_url,
            "confirmation_url": format!("https://yoomoney.test/checkout/payments/v2/contract?orderId={id}"),
        });
    }
    state.payments.insert(id.to_owned(), payment.clone());
    (200, payment)
}
