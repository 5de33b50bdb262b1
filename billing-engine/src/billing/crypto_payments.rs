//! Crypto payments (seed 004): checkout, the indexer's notifications, and the worker
//! that reconciles with the chain. The rules (references, states) are `crypto.rs`;
//! this is where they meet the store, the ledger and the outbox.

use std::sync::Arc;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::{Duration, OffsetDateTime};

use super::checkout::{payment_summary, unknown_payment, Purchase};
use super::Billing;
use crate::audit::AuditOutcome;
use crate::crypto::{
    self, ChainObservation, CryptoDetails, CryptoProvider, CryptoState, StoredObservation, TxReceipt, REFERENCE_GRACE,
};
use crate::error::{BillingError, Result};
use crate::input;
use crate::ledger::Request;
use crate::payment::{self, Payment, PaymentStatus, Purpose};
use crate::provider::ProviderError;
use crate::store::{Store, Transaction};

/// How many references a checkout tries before it gives up (all taken is BUSY).
const REFERENCE_TRIES: usize = 32;

/// How long after crediting reconcile still looks for a reorg.
pub const RECENT: Duration = Duration::days(1);

/// What [`Billing::create_crypto_payment`] asks the payer to do.
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CryptoCheckout {
    pub payment_id: String,
    pub chain_id: u64,
    pub network: String,
    /// The token's contract.
    pub token: String,
    pub symbol: String,
    pub decimals: u32,
    /// Where to send it.
    pub address: String,
    /// Exactly what to send, in base units, as a string (it may pass 2^64).
    pub amount: String,
    /// The same amount in tokens (`9.990137`), for people.
    pub display_amount: Decimal,
    /// The digits the amount ends in that match the transfer to this payment.
    pub reference: u64,
    /// The EIP-681 URI a wallet opens.
    pub uri: String,
    #[serde(with = "crate::time_util::serde_iso")]
    pub expires_at: OffsetDateTime,
}

impl CryptoCheckout {
    fn of(payment: &Payment, details: &CryptoDetails) -> Self {
        Self {
            payment_id: payment.id.clone(),
            chain_id: details.chain_id,
            network: details.network.clone(),
            token: details.token.clone(),
            symbol: details.symbol.clone(),
            decimals: details.decimals,
            address: details.address.clone(),
            amount: details.amount.to_string(),
            display_amount: crypto::token_amount(details.amount, details.decimals),
            reference: details.reference,
            uri: details.uri.clone(),
            expires_at: details.expires_at,
        }
    }
}

/// What one notification of the chain did.
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CryptoWebhookOutcome {
    /// Transfers the notification reported.
    pub transfers: u32,
    /// Transfers that changed what the engine knew.
    pub applied: u32,
    /// Transfers the engine had seen just so.
    pub duplicates: u32,
    /// Transfers to a gateway that no payment holds the reference of (kept for review),
    /// or of a token or network the catalog does not price in.
    pub unmatched: u32,
    /// The payments the notification moved, each once.
    pub payments: Vec<String>,
}

/// What [`Billing::reconcile_crypto`] did.
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CryptoReconcileReport {
    /// Payments looked at.
    pub checked: u32,
    /// Payments whose state changed.
    pub changed: u32,
    /// Transactions the callback could not read (tried again next time).
    pub errors: u32,
}

/// How a transfer stood before an observation of it.
enum Seen {
    New,
    Same,
    Changed,
}

impl<S: Store> Billing<S> {
    /// Takes notifications of crypto transfers through `provider` (Alchemy's, say).
    /// The catalog needs a `[crypto]` table.
    pub fn with_crypto(mut self, provider: Arc<dyn CryptoProvider>) -> Result<Self> {
        if self.catalog.crypto.is_none() {
            return Err(BillingError::invalid("crypto", "the catalog has no [crypto] table of networks and tokens"));
        }
        self.crypto = Some(provider);
        Ok(self)
    }

    /// Records a `pending` crypto payment for a plan or a package on the network
    /// `chain_id`, and returns what the payer sends, where, and by when. The price is the
    /// item's first on that network; the amount adds the payment's reference in its
    /// lowest digits. Idempotent by key: a repeat returns the same checkout.
    pub fn create_crypto_payment(
        &self,
        user_id: &str,
        purchase: Purchase<'_>,
        chain_id: u64,
        idempotency_key: &str,
    ) -> Result<CryptoCheckout> {
        input::id("user_id", user_id)?;
        input::id("idempotency_key", idempotency_key)?;
        let crypto = self
            .catalog
            .crypto
            .as_ref()
            .ok_or_else(|| BillingError::invalid("chain_id", "no [crypto] in the catalog"))?;
        let network = crypto
            .networks
            .get(&chain_id)
            .ok_or_else(|| BillingError::invalid("chain_id", format!("no network {chain_id} in the catalog")))?;
        let (purpose, code, prices, description) = match purchase {
            Purchase::Plan(code) => {
                let plan = self.catalog.paid_plan(code)?;
                (Purpose::Plan, code, &plan.crypto_prices, payment::plan_description(&plan.name))
            }
            Purchase::Package(code) => {
                let package = self.catalog.package(code).ok_or_else(|| {
                    BillingError::invalid("package_code", format!("`{code}` is not a package of the catalog"))
                })?;
                (Purpose::Package, code, &package.crypto_prices, payment::package_description(package.credits))
            }
        };
        let price = prices
            .iter()
            .find(|p| p.chain_id == chain_id)
            .ok_or_else(|| BillingError::invalid("chain_id", format!("`{code}` has no price on network {chain_id}")))?;
        let token = crypto.token(chain_id, &price.contract).expect("validated: prices are of declared tokens");
        let request = Request { action: "create_crypto_payment", target: code, amount: None, metadata: None };
        let fingerprint = format!("{}:{chain_id}", request.fingerprint());
        let now = self.now();
        let audit = self.audit_record("payment.crypto_create", Some(user_id));
        self.store.write(user_id, |tx| {
            if let Some((earlier, hash)) = tx.payment_by_key(user_id, idempotency_key)? {
                if hash.as_deref() != Some(fingerprint.as_str()) {
                    return Err(BillingError::IdempotencyConflict { key: idempotency_key.to_owned() });
                }
                let details = earlier
                    .crypto
                    .as_ref()
                    .ok_or_else(|| BillingError::IdempotencyConflict { key: idempotency_key.to_owned() })?;
                tx.append_audit(&audit.clone().target(earlier.id.as_str()).outcome(AuditOutcome::Unchanged))?;
                return Ok(CryptoCheckout::of(&earlier, details));
            }
            let account = self.current_account(tx, user_id, now)?;
            if purpose == Purpose::Plan {
                if let Some(active) = account.active_subscription(now) {
                    return Err(BillingError::ActiveSubscription {
                        plan_code: active.plan_code.clone(),
                        expires_at: active.expires_at,
                    });
                }
            }
            let mut payment = self.new_payment(user_id, purpose, Decimal::ZERO, description.clone(), now);
            payment.status = PaymentStatus::Pending;
            payment.idempotency_key = Some(idempotency_key.to_owned());
            match purpose {
                Purpose::Plan => payment.plan_code = Some(code.to_owned()),
                _ => {
                    payment.package_code = Some(code.to_owned());
                    payment.credits = self.catalog.package(code).map(|p| p.credits);
                }
            }
            let expires_at = now + crypto.payment_window;
            let reference = (0..REFERENCE_TRIES)
                .map(|_| fastrand::u64(1..crypto.reference_modulus() as u64))
                .find_map(|reference| {
                    let until = expires_at + REFERENCE_GRACE;
                    match tx.claim_reference(chain_id, &token.contract, reference, user_id, &payment.id, until, now) {
                        Ok(true) => Some(Ok(reference)),
                        Ok(false) => None,
                        Err(error) => Some(Err(error)),
                    }
                })
                .ok_or(BillingError::Busy { waited_ms: 0 })??;
            let amount = price.amount + u128::from(reference);
            let details = CryptoDetails {
                chain_id,
                network: network.name.clone(),
                token: token.contract.clone(),
                symbol: token.symbol.clone(),
                decimals: token.decimals,
                address: network.gateway.clone(),
                amount,
                reference,
                uri: crypto::payment_uri(&token.contract, chain_id, &network.gateway, amount),
                expires_at,
                confirmations_required: network.confirmations,
                state: CryptoState::Pending,
                received: 0,
                tx_hash: None,
                confirmations: 0,
                credited_by: None,
            };
            payment.amount = crypto::token_amount(amount, token.decimals);
            payment.currency = token.symbol.clone();
            payment.crypto = Some(details.clone());
            tx.insert_payment(&payment, Some(&fingerprint))?;
            let record = audit.clone().target(payment.id.as_str()).change(None, Some(payment_summary(&payment)));
            tx.append_audit(&record)?;
            Ok(CryptoCheckout::of(&payment, &details))
        })
    }

    /// Handles a notification of the crypto provider: checks it (INVALID_WEBHOOK, for
    /// good, when it is forged or malformed), then applies each transfer it reports at
    /// most once: a transfer is keyed by `(chain_id, tx_hash, log_index)`, and a payment
    /// is credited once, by an entry keyed by the transfer that completed it, when its
    /// transfers have the network's confirmations. A transfer reorganized away before
    /// that is dropped; after it, the credit is reversed (`payment.reversed.v1`).
    /// Every outcome, a rejection included, is in the audit log (`webhook.crypto`).
    pub fn handle_crypto_webhook(&self, body: &[u8], headers: &[(String, String)]) -> Result<CryptoWebhookOutcome> {
        let audit = self.audit_record("webhook.crypto", None);
        let outcome = self.audited(&audit, || self.apply_crypto_notification(body, headers));
        self.count_webhook("crypto", &outcome, |o| if o.applied > 0 { "applied" } else { "duplicate" });
        let outcome = outcome?;
        let record = audit
            .outcome(if outcome.applied > 0 { AuditOutcome::Applied } else { AuditOutcome::Unchanged })
            .change(None, Some(json!(outcome)));
        self.append_audit(&record)?;
        Ok(outcome)
    }

    fn apply_crypto_notification(&self, body: &[u8], headers: &[(String, String)]) -> Result<CryptoWebhookOutcome> {
        let provider = self.crypto.as_ref().ok_or(ProviderError::NotConfigured)?;
        let observations = provider.read_notification(body, headers)?;
        let mut outcome = CryptoWebhookOutcome { transfers: observations.len() as u32, ..Default::default() };
        let mut chains = Vec::new();
        for observation in observations {
            if !observation.removed {
                self.store
                    .write_many(&[], |tx| Ok(tx.raise_chain_head(observation.chain_id, observation.block_number)?))?;
            }
            if !chains.contains(&observation.chain_id) {
                chains.push(observation.chain_id);
            }
            match self.apply_observation(observation)? {
                (_, None) => outcome.unmatched += 1,
                (Seen::Same, Some(_)) => outcome.duplicates += 1,
                (_, Some(payment_id)) => {
                    outcome.applied += 1;
                    if !outcome.payments.contains(&payment_id) {
                        outcome.payments.push(payment_id);
                    }
                }
            }
        }
        // A higher block confirms the transfers of other payments on the chain too.
        for payment_id in self.settle_confirming_payments(&chains)? {
            if !outcome.payments.contains(&payment_id) {
                outcome.payments.push(payment_id);
            }
        }
        Ok(outcome)
    }

    /// Stores one transfer with the payment that holds its reference (or as unmatched),
    /// and settles that payment; how the transfer stood, and the payment.
    fn apply_observation(&self, observation: ChainObservation) -> Result<(Seen, Option<String>)> {
        let now = self.now();
        let holder = self.holder_of(&observation)?;
        let Some((user_id, payment_id)) = holder else {
            let stored = StoredObservation { payment_id: None, observation, seen_at: now };
            self.store.write_many(&[], |tx| Ok(tx.save_observation("", &stored)?))?;
            return Ok((Seen::New, None));
        };
        self.store.write(&user_id, |tx| {
            let o = &observation;
            let seen = match tx.observation(&user_id, o.chain_id, &o.tx_hash, o.log_index)? {
                None => Seen::New,
                Some(earlier) if same_transfer(&earlier.observation, o) => Seen::Same,
                Some(_) => Seen::Changed,
            };
            if !matches!(seen, Seen::Same) {
                let stored =
                    StoredObservation { payment_id: Some(payment_id.clone()), observation: o.clone(), seen_at: now };
                tx.save_observation(&user_id, &stored)?;
            }
            self.settle_crypto_payment(tx, &user_id, &payment_id, now)?;
            Ok((seen, Some(payment_id.clone())))
        })
    }

    /// The user and payment a transfer is for: a transfer of a priced token to its
    /// network's gateway, whose amount ends in a reference a payment took.
    fn holder_of(&self, o: &ChainObservation) -> Result<Option<(String, String)>> {
        let Some(crypto) = self.catalog.crypto.as_ref() else { return Ok(None) };
        let ours = crypto.networks.get(&o.chain_id).is_some_and(|n| n.gateway == o.to)
            && crypto.token(o.chain_id, &o.token).is_some();
        let reference = (o.amount % crypto.reference_modulus()) as u64;
        if !ours || reference == 0 {
            return Ok(None);
        }
        self.store.read(|tx| Ok(tx.reference_holder(o.chain_id, &o.token, reference)?))
    }

    /// Settles the payments on `chains` whose transfers wait for confirmations, user by
    /// user (the only ones a higher block moves); the ones whose state changed. Each is
    /// read first, and locked only when it is one of them.
    fn settle_confirming_payments(&self, chains: &[u64]) -> Result<Vec<String>> {
        let now = self.now();
        let waiting = |payment: &Payment| {
            payment.crypto.as_ref().is_some_and(|c| c.state == CryptoState::Confirming && chains.contains(&c.chain_id))
        };
        let mut changed = Vec::new();
        for (user_id, payment_id) in self.store.read(|tx| Ok(tx.crypto_payments_to_check(now - RECENT)?))? {
            if !self.store.read(|tx| Ok(tx.payment(&payment_id)?))?.is_some_and(|p| waiting(&p)) {
                continue;
            }
            if self.store.write(&user_id, |tx| self.settle_crypto_payment(tx, &user_id, &payment_id, now))? {
                changed.push(payment_id);
            }
        }
        Ok(changed)
    }

    /// Brings a crypto payment to the state its transfers and the chain head say, and
    /// does what reaching it means: the credit (keyed by the completing transfer), the
    /// reversal of a credit whose transfer is gone, the failure of an expired or failed
    /// one. The one place a crypto payment changes; whether it did.
    fn settle_crypto_payment(
        &self,
        tx: &mut dyn Transaction,
        user_id: &str,
        payment_id: &str,
        now: OffsetDateTime,
    ) -> Result<bool> {
        let Some(mut payment) = tx.payment(payment_id)? else { return Ok(false) };
        let Some(mut details) = payment.crypto.clone() else { return Ok(false) };
        let head = tx.chain_head(details.chain_id)?.unwrap_or(0);
        let transfers = tx.payment_observations(user_id, payment_id)?;
        let live: Vec<&ChainObservation> =
            transfers.iter().map(|t| &t.observation).filter(|o| !o.removed && !o.failed).collect();
        let confirmations =
            |o: &ChainObservation| (head + 1).saturating_sub(o.block_number).min(u64::from(u32::MAX)) as u32;
        let counted: Vec<(u128, u32)> = live.iter().map(|o| (o.amount, confirmations(o))).collect();
        let failed = transfers.iter().any(|t| t.observation.failed && !t.observation.removed);
        let credit_gone = details.credited_by.as_ref().is_some_and(|key| !live.iter().any(|o| &o.key() == key));
        let next = if details.state.is_credited() && credit_gone {
            CryptoState::Reorged
        } else {
            crypto::next_state(&details, &counted, failed, now)
        };
        let latest = live.last().copied().or(transfers.last().map(|t| &t.observation));
        let before = (details.clone(), payment.status);
        details.received = live.iter().map(|o| o.amount).sum();
        details.confirmations = live.iter().map(|o| confirmations(o)).min().unwrap_or(0);
        details.tx_hash = latest.map(|o| o.tx_hash.clone()).or(details.tx_hash);
        let was = details.state;
        details.state = next;
        if next.is_credited() && !was.is_credited() {
            let completing = live.last().expect("a credited payment has transfers");
            details.credited_by = Some(completing.key());
            payment.crypto = Some(details);
            payment.status = PaymentStatus::Succeeded;
            payment.paid_at = Some(now);
            let key = completing.key();
            let request =
                Request { action: "crypto_credit", target: &payment.id.clone(), amount: None, metadata: None };
            self.apply_effects(tx, &mut payment, Some((&key, &request)), now)?;
        } else if next == CryptoState::Reorged && was != CryptoState::Reorged {
            payment.crypto = Some(details);
            self.reverse_crypto_credit(tx, &mut payment, now)?;
        } else if matches!(next, CryptoState::Expired | CryptoState::Failed) && !payment.status.is_final() {
            payment.crypto = Some(details);
            payment.status = PaymentStatus::Canceled;
            self.apply_effects(tx, &mut payment, None, now)?;
        } else {
            payment.crypto = Some(details);
        }
        if (payment.crypto.clone().expect("set above"), payment.status) == before {
            return Ok(false);
        }
        payment.updated_at = now;
        tx.update_payment(&payment)?;
        Ok(true)
    }

    /// Takes back what a credited payment gave, as a full refund would, recorded as a
    /// reversal: the money never stayed on chain.
    fn reverse_crypto_credit(
        &self,
        tx: &mut dyn Transaction,
        payment: &mut Payment,
        now: OffsetDateTime,
    ) -> Result<()> {
        let mut account = self.current_account(tx, &payment.user_id, now)?;
        let refundable = payment.refundable();
        let mut entry = payment::refund_effects(payment, None, refundable, &mut account, now);
        if let Some(metadata) = entry.entry.metadata.as_mut() {
            metadata["reason"] = json!("reorg");
        }
        self.record(tx, &mut account, entry)?;
        Ok(tx.update_account(&account)?)
    }

    /// Re-checks the crypto payments transfers can still move, and those credited in
    /// the last day, against the chain: `fetch(chain_id, tx_hash)` reads a transaction's
    /// receipt through the host's node (`None`: the chain has no such transaction now).
    /// A transfer whose receipt is gone was reorganized away, one whose transaction
    /// failed is failed, and the receipt's confirmations move the chain's head; a payment
    /// whose window passed with no transfer expires. This is seed 004's worker: run it
    /// every few minutes, since notifications get lost.
    pub fn reconcile_crypto(
        &self,
        fetch: &dyn Fn(u64, &str) -> Result<Option<TxReceipt>>,
    ) -> Result<CryptoReconcileReport> {
        let audit = self.audit_record("crypto.reconcile", None);
        let now = self.now();
        let mut report = CryptoReconcileReport::default();
        for (user_id, payment_id) in self.store.read(|tx| Ok(tx.crypto_payments_to_check(now - RECENT)?))? {
            report.checked += 1;
            let transfers = self.store.read(|tx| Ok(tx.payment_observations(&user_id, &payment_id)?))?;
            let mut updated = Vec::new();
            for stored in transfers.into_iter().filter(|t| !t.observation.removed) {
                let o = &stored.observation;
                match fetch(o.chain_id, &o.tx_hash) {
                    Err(_) => report.errors += 1,
                    Ok(receipt) => {
                        let checked = checked_against(o, receipt.as_ref());
                        if let Some(receipt) = receipt.filter(|r| r.confirmations > 0) {
                            let head = receipt.block_number + u64::from(receipt.confirmations) - 1;
                            self.store.write_many(&[], |tx| Ok(tx.raise_chain_head(o.chain_id, head)?))?;
                        }
                        if &checked != o {
                            updated.push(StoredObservation { observation: checked, ..stored.clone() });
                        }
                    }
                }
            }
            let changed = self.store.write(&user_id, |tx| {
                for stored in &updated {
                    tx.save_observation(&user_id, stored)?;
                }
                self.settle_crypto_payment(tx, &user_id, &payment_id, self.now())
            })?;
            report.changed += u32::from(changed);
        }
        self.append_audit(&audit.change(None, Some(json!(report))))?;
        Ok(report)
    }

    /// Records that the money of a credited crypto payment went back to the payer: the
    /// operator sent it on chain in the transaction `tx_hash`. What the payment bought is
    /// taken back as a full refund of a card payment is (a package's credits, the unused
    /// part of a plan's period), the payment is `refunded`, and `payment.refunded.v1` is
    /// written. A repeat changes nothing. Only a `succeeded` or `overpaid` payment can be
    /// refunded (INVALID_ARGUMENT `payment_id` otherwise).
    pub fn refund_crypto_payment(&self, payment_id: &str, tx_hash: &str) -> Result<Payment> {
        input::id("payment_id", payment_id)?;
        let tx_hash = crypto::tx_hash(tx_hash)
            .ok_or_else(|| BillingError::invalid("tx_hash", "a transaction hash: 0x and 64 hex digits"))?;
        let owner = self.payment(payment_id)?.user_id;
        let audit = self.audit_record("payment.crypto_refund", Some(&owner)).target(payment_id);
        let key = format!("crypto-refund:{payment_id}");
        let request = Request { action: "refund_crypto_payment", target: payment_id, amount: None, metadata: None };
        let now = self.now();
        self.store.write(&owner, |tx| {
            let mut payment = tx.payment(payment_id)?.ok_or_else(|| unknown_payment(payment_id))?;
            let mut details = payment.crypto.clone().ok_or_else(|| {
                BillingError::invalid("payment_id", format!("payment {payment_id} is not a crypto payment"))
            })?;
            if details.state == CryptoState::Refunded {
                tx.append_audit(&audit.clone().outcome(AuditOutcome::Unchanged))?;
                return Ok(payment);
            }
            if !details.state.is_credited() {
                let message = format!("payment {payment_id} is {}; only a credited one can be refunded", details.state);
                return Err(BillingError::invalid("payment_id", message));
            }
            let before = payment_summary(&payment);
            let mut account = self.current_account(tx, &owner, now)?;
            let refundable = payment.refundable();
            let entry = payment::refund_effects(&mut payment, Some(&tx_hash), refundable, &mut account, now);
            self.record(tx, &mut account, entry.keyed(&key, &request))?;
            tx.update_account(&account)?;
            details.state = CryptoState::Refunded;
            payment.crypto = Some(details);
            payment.updated_at = now;
            tx.update_payment(&payment)?;
            tx.append_audit(&audit.clone().change(Some(before), Some(payment_summary(&payment))))?;
            Ok(payment)
        })
    }

    /// The transfers seen of a crypto payment, with the raw payloads they came with.
    pub fn crypto_transfers(&self, payment_id: &str) -> Result<Vec<StoredObservation>> {
        let payment = self.payment(payment_id)?;
        self.store.read(|tx| Ok(tx.payment_observations(&payment.user_id, &payment.id)?))
    }
}

/// Whether two reports of one transfer say the same.
fn same_transfer(a: &ChainObservation, b: &ChainObservation) -> bool {
    (a.removed, a.failed, a.block_number, &a.block_hash, a.amount)
        == (b.removed, b.failed, b.block_number, &b.block_hash, b.amount)
}

/// A transfer as its transaction's receipt has it now.
fn checked_against(o: &ChainObservation, receipt: Option<&TxReceipt>) -> ChainObservation {
    let mut checked = o.clone();
    match receipt {
        None => checked.removed = true,
        Some(receipt) => {
            checked.failed = receipt.failed;
            checked.block_number = receipt.block_number;
            if receipt.block_hash.is_some() {
                checked.block_hash = receipt.block_hash.clone();
            }
        }
    }
    checked
}
