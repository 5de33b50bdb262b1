//! Metered usage, holds and features: the calls of [`crate::usage`]'s rules. Each write
//! runs in one transaction of the user, which claims the idempotency key, moves the
//! counters and appends the events and ledger entries together; a refused check or
//! reservation writes nothing.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde_json::json;
use time::OffsetDateTime;

use super::{replay, Billing};
use crate::account::Account;
use crate::catalog::{CaptureOverrun, FeatureValue};
use crate::charge::{self, Spend};
use crate::error::{BillingError, Result};
use crate::events;
use crate::input;
use crate::ledger::{EntryKind, Fingerprint, LedgerEntry, NewEntry, Request};
use crate::lots::{self, CreditLot};
use crate::store::{Store, Transaction};
use crate::time_util;
use crate::usage::{
    self, Counters, Entitlement, Entitlements, HeldUsage, Hold, HoldStatus, NewUsage, UsageAmount, UsageCheck,
    UsageGroup, UsageLabels, UsageRecord, UsageRequest, UsageSummary, UsageTotal, Windows,
};

impl<S: Store> Billing<S> {
    // ---- metered usage ----

    /// Whether `usage` (metric → amount) fits the user's quotas now, and each metric's
    /// standing. Writes nothing.
    pub fn check_usage(&self, user_id: &str, usage: &BTreeMap<String, u64>) -> Result<UsageCheck> {
        Ok(self.checked(user_id, usage)?.0)
    }

    /// [`check_usage`](Self::check_usage) that fails with the refusal (QUOTA_EXCEEDED,
    /// or NOT_ENOUGH_CREDITS for overage the credits do not cover).
    pub fn require_usage(&self, user_id: &str, usage: &BTreeMap<String, u64>) -> Result<UsageCheck> {
        match self.checked(user_id, usage)? {
            (_, Some(refusal)) => Err(refusal),
            (check, None) => Ok(check),
        }
    }

    fn checked(&self, user_id: &str, usage: &BTreeMap<String, u64>) -> Result<(UsageCheck, Option<BillingError>)> {
        input::id("user_id", user_id)?;
        usage::checked_usage(&self.catalog, usage)?;
        let now = self.now();
        let checked = self.store.read(|tx| {
            let view = self.read_view(tx, user_id, now)?;
            let windows = usage::windows_at(&view.account, &self.catalog, now);
            let counters = live_counters(tx, user_id, &windows, &view.expired_holds)?;
            usage::check(&windows, &counters, usage, view.account.credits)
        })?;
        let outcome = if checked.0.allowed { "allowed" } else { "refused" };
        for metric in &checked.0.metrics {
            self.metrics.quota(&metric.metric, outcome);
        }
        Ok(checked)
    }

    /// Counts a hold's settlement (or placement), or its refusal, for `metrics_text`.
    fn count_hold(&self, event: &'static str, call: &'static str, hold: Result<Hold>) -> Result<Hold> {
        match &hold {
            Ok(hold) if !hold.replayed => self.metrics.hold(event),
            Ok(_) => {}
            Err(refusal) => self.metrics.refused(call, refusal.code()),
        }
        hold
    }

    /// Records usage that happened. It is never refused for a quota: usage past one is
    /// recorded with `over_limit`, and its overage, where the plan prices it, is charged
    /// (see [`CaptureOverrun`] for what the credits do not cover).
    pub fn track_usage(&self, user_id: &str, usage: &UsageRequest, idempotency_key: &str) -> Result<UsageRecord> {
        let mut records = self.track(user_id, std::slice::from_ref(usage), idempotency_key, "track_usage")?;
        Ok(records.remove(0))
    }

    /// Records many events of one user in one transaction, under one key.
    pub fn track_usage_batch(
        &self,
        user_id: &str,
        records: &[UsageRequest],
        idempotency_key: &str,
    ) -> Result<Vec<UsageRecord>> {
        input::batch_size(records.len())?;
        if records.is_empty() {
            return Err(BillingError::invalid("records", "at least one record is needed"));
        }
        self.track(user_id, records, idempotency_key, "track_usage_batch")
    }

    fn track(
        &self,
        user_id: &str,
        requests: &[UsageRequest],
        idempotency_key: &str,
        action: &'static str,
    ) -> Result<Vec<UsageRecord>> {
        input::id("user_id", user_id)?;
        input::id("idempotency_key", idempotency_key)?;
        let now = self.now();
        requests.iter().try_for_each(|r| r.check(&self.catalog, now))?;
        let mut fingerprint = Fingerprint::default();
        fingerprint.part(Some(action));
        requests.iter().for_each(|r| r.fingerprint_into(&mut fingerprint));
        let fingerprint = fingerprint.finish();
        let tracked = self.store.write(user_id, |tx| {
            let (earlier, hash) = tx.usage_by_key(user_id, idempotency_key)?;
            if !earlier.is_empty() {
                if hash.as_deref() != Some(fingerprint.as_str()) {
                    return Err(BillingError::IdempotencyConflict { key: idempotency_key.to_owned() });
                }
                return Ok(earlier.into_iter().map(|record| UsageRecord { replayed: true, ..record }).collect());
            }
            let mut account = self.current_account(tx, user_id, now)?;
            let balance = account.credits;
            let mut counters = WorkingCounters::default();
            let mut records = Vec::with_capacity(requests.len());
            let events = u32::try_from(requests.len()).unwrap_or(u32::MAX);
            // Events of one instant (all but those given an `at`) share their windows.
            let mut windows: Option<Windows<'_>> = None;
            for (i, usage) in requests.iter().enumerate() {
                // The call's key, with what a replay needs, goes on its first event.
                let key = (i == 0).then_some((idempotency_key, events, fingerprint.as_str()));
                let tracked = Tracked { usage, at: usage.at.map_or(now, time_util::truncate), hold_id: None };
                if windows.as_ref().is_none_or(|w| w.at != tracked.at) {
                    windows = Some(usage::windows_at(&account, &self.catalog, tracked.at));
                }
                let windows = windows.as_ref().expect("set above");
                records.push(self.track_in(tx, &mut account, &mut counters, windows, &tracked, key, true, now)?.0);
            }
            counters.save(tx, user_id)?;
            if account.credits != balance {
                tx.update_account(&account)?;
            }
            Ok(records)
        })?;
        for record in tracked.iter().filter(|r| !r.replayed) {
            self.metrics.quota(&record.metric, if record.over_limit { "over_limit" } else { "tracked" });
        }
        Ok(tracked)
    }

    /// Appends one event in the windows that held its time and moves their counters;
    /// returns it with the cost of its overage, which it charges if `charge` (a capture
    /// charges the overage of all its events at once).
    #[allow(clippy::too_many_arguments)]
    fn track_in(
        &self,
        tx: &mut dyn Transaction,
        account: &mut Account,
        working: &mut WorkingCounters,
        windows: &Windows<'_>,
        tracked: &Tracked<'_>,
        key: Option<(&str, u32, &str)>,
        charge: bool,
        now: OffsetDateTime,
    ) -> Result<(UsageRecord, Decimal)> {
        let usage = tracked.usage;
        let counters = working.load(tx, &account.user_id, windows)?;
        let cost = usage::tracked_overage(windows, counters, &usage.metric, usage.amount)?;
        let charged = if charge { self.chargeable(account, cost, Decimal::ZERO) } else { cost };
        let amount = i64::try_from(usage.amount).map_err(|_| BillingError::invalid("amount", "too large"))?;
        let was_over_limit = usage::is_over_limit(windows, &working.counters, &usage.metric);
        for window in [&windows.period, &windows.day] {
            working.add(&usage.metric, window, amount);
        }
        let new = NewUsage {
            record: UsageRecord {
                id: 0,
                user_id: account.user_id.clone(),
                metric: usage.metric.clone(),
                amount: usage.amount,
                model_id: usage.model_id.clone(),
                chat_id: usage.chat_id.clone(),
                hold_id: tracked.hold_id.map(str::to_owned),
                metadata: usage.metadata.clone(),
                at: tracked.at,
                over_limit: usage::is_over_limit(windows, &working.counters, &usage.metric),
                overage_credits: charged,
                replayed: false,
            },
            period_window: windows.period.clone(),
            day_window: windows.day.clone(),
            idempotency_key: key.map(|(key, _, _)| key.to_owned()),
            events: key.map(|(_, events, _)| events),
            request_hash: key.map(|(_, _, hash)| hash.to_owned()),
            created_at: now,
        };
        let id = tx.append_usage(&new)?;
        let stored = UsageRecord { id, ..new.record };
        if stored.over_limit && !was_over_limit {
            tx.append_event(&events::over_limit(&stored, now))?;
        }
        if charge && !cost.is_zero() {
            self.record(tx, account, NewEntry::overage(&stored, cost, charged, now))?;
        }
        Ok((stored, cost))
    }

    /// What of `cost` the user is charged, with `coming_back` credits about to return
    /// to the balance: all of it under `capture_overrun = "debt"`, else what the balance
    /// holds.
    fn chargeable(&self, account: &Account, cost: Decimal, coming_back: Decimal) -> Decimal {
        match self.catalog.capture_overrun {
            CaptureOverrun::Debt => cost,
            CaptureOverrun::Cap => cost.min((account.credits + coming_back).max(Decimal::ZERO)),
        }
    }

    /// A metric's standing in the current period (seed 001's `GET /usage/{metric}`).
    pub fn usage(&self, user_id: &str, metric: &str) -> Result<UsageSummary> {
        input::id("user_id", user_id)?;
        let unit = self.catalog.metric(metric)?.unit.clone();
        let now = self.now();
        self.store.read(|tx| {
            let view = self.read_view(tx, user_id, now)?;
            let windows = usage::windows_at(&view.account, &self.catalog, now);
            let (used, held) = live_counters(tx, user_id, &windows, &view.expired_holds)?.get(metric, &windows.period);
            let limit = windows.plan.quotas.get(metric).copied();
            Ok(UsageSummary {
                metric: metric.to_owned(),
                unit: unit.clone(),
                used,
                held,
                limit,
                remaining: limit.map(|limit| limit.saturating_sub(used.saturating_add(held))),
                period_start: windows.period_start,
                resets_at: windows.period_resets_at,
            })
        })
    }

    /// The user's usage of `metric` in `[since, until)`, totalled per model or chat.
    pub fn usage_breakdown(
        &self,
        user_id: &str,
        metric: &str,
        by: UsageGroup,
        since: Option<OffsetDateTime>,
        until: Option<OffsetDateTime>,
    ) -> Result<Vec<UsageTotal>> {
        input::id("user_id", user_id)?;
        self.catalog.metric(metric)?;
        self.store.read(|tx| {
            if tx.account(user_id)?.is_none() {
                return Err(BillingError::UnknownUser { user_id: user_id.to_owned() });
            }
            Ok(tx.usage_totals(user_id, metric, by, since, until)?)
        })
    }

    // ---- holds ----

    /// Reserves, in one step, `usage` against the quotas (with the credits for overage
    /// the plan prices) and, if `operation` is given, one operation from the charge
    /// order, for `ttl_s` seconds. Refused like a check or a charge, writing nothing.
    pub fn reserve(
        &self,
        user_id: &str,
        usage: &BTreeMap<String, u64>,
        operation: Option<&str>,
        idempotency_key: &str,
        ttl_s: u64,
    ) -> Result<Hold> {
        input::id("user_id", user_id)?;
        input::id("idempotency_key", idempotency_key)?;
        usage::checked_usage(&self.catalog, usage)?;
        let op = operation.map(|code| self.catalog.operation(code)).transpose()?;
        let ttl = usage::hold_ttl(ttl_s)?;
        if usage.is_empty() && op.is_none() {
            return Err(BillingError::invalid("usage", "a hold needs usage or an operation"));
        }
        let body = json!({ "usage": usage, "ttl_s": ttl_s });
        let request =
            Request { action: "reserve", target: operation.unwrap_or(""), amount: None, metadata: Some(&body) };
        let now = self.now();
        let placed = self.store.write(user_id, |tx| {
            if let Some(placed) = replay(tx, user_id, idempotency_key, &request)? {
                return replayed_hold(tx, &placed);
            }
            let mut account = self.current_account(tx, user_id, now)?;
            let spend = op.map(|op| charge::spend(&account, &self.catalog, op, now)).transpose()?;
            let op_credits = spend.as_ref().map_or(Decimal::ZERO, |spend| spend.credits);
            let windows = usage::windows_at(&account, &self.catalog, now);
            let counters = Counters::new(tx.usage_counters(user_id, &windows.period, &windows.day)?);
            let (check, refusal) = usage::check(&windows, &counters, usage, account.credits - op_credits)?;
            if let Some(refusal) = refusal {
                return Err(refusal);
            }
            let mut hold = new_hold(user_id, usage, &windows, op.map(|op| op.code.clone()), spend.as_ref(), now, ttl);
            hold.credits_held = op_credits + check.overage_credits;
            hold.overage_held = check.overage_credits;
            let entry = NewEntry::hold_placed(&hold, spend.as_ref(), now).keyed(idempotency_key, &request);
            hold.placed_entry_id = self.record(tx, &mut account, entry)?.id;
            move_held(tx, &hold, 1)?;
            tx.insert_hold(&hold)?;
            tx.update_account(&account)?;
            Ok(hold)
        });
        self.count_hold("placed", "reserve", placed)
    }

    /// Settles a hold with the usage the work really took (`None`: what was held). Less
    /// than held returns the rest; more is charged as far as the credits go (see
    /// [`CaptureOverrun`]). A capture after the hold expired still charges: the work
    /// was done. A hold settles once: a settled hold is returned as it is, `replayed`.
    /// Its usage events carry `labels` (the model and chat), for breakdowns.
    pub fn capture(
        &self,
        hold_id: &str,
        actual: Option<&BTreeMap<String, u64>>,
        labels: &UsageLabels,
        idempotency_key: &str,
    ) -> Result<Hold> {
        input::id("hold_id", hold_id)?;
        input::id("idempotency_key", idempotency_key)?;
        if let Some(actual) = actual {
            usage::checked_usage(&self.catalog, actual)?;
        }
        labels.check()?;
        let body = json!({ "actual": actual, "labels": labels });
        let request = Request { action: "capture", target: hold_id, amount: None, metadata: Some(&body) };
        let captured = self.settle(hold_id, idempotency_key, &request, |tx, account, hold, now| {
            self.capture_in(tx, account, hold, actual, labels, now)
        });
        self.count_hold("captured", "capture", captured)
    }

    /// Gives back everything a hold reserved. A hold settles once: a settled hold is
    /// returned as it is, `replayed`.
    pub fn release(&self, hold_id: &str, idempotency_key: &str) -> Result<Hold> {
        input::id("hold_id", hold_id)?;
        input::id("idempotency_key", idempotency_key)?;
        let request = Request { action: "release", target: hold_id, amount: None, metadata: None };
        let released = self.settle(hold_id, idempotency_key, &request, |tx, account, hold, now| {
            let entry = hold_undone(tx, account, hold, EntryKind::HoldReleased, now)?;
            move_held(tx, hold, -1)?;
            hold.status = HoldStatus::Released;
            Ok(entry)
        });
        self.count_hold("released", "release", released)
    }

    /// The frame of capture and release: the key's replay, the hold's owner and lock,
    /// and the one settlement of a hold.
    fn settle(
        &self,
        hold_id: &str,
        idempotency_key: &str,
        request: &Request<'_>,
        apply: impl Fn(&mut dyn Transaction, &mut Account, &mut Hold, OffsetDateTime) -> Result<NewEntry> + Send + Sync,
    ) -> Result<Hold> {
        let now = self.now();
        // A hold's user never changes, so it can be read before taking the user's lock.
        let owner = self.store.read(|tx| find_hold(tx, hold_id))?.user_id;
        self.store.write(&owner, |tx| {
            if let Some(entry) = replay(tx, &owner, idempotency_key, request)? {
                return replayed_hold(tx, &entry);
            }
            let mut account = self.current_account(tx, &owner, now)?;
            let mut hold = find_hold(tx, hold_id)?;
            let late_capture = hold.status == HoldStatus::Expired && request.action == "capture";
            if hold.status != HoldStatus::Open && !late_capture {
                return Ok(Hold { replayed: true, ..hold });
            }
            let entry = apply(tx, &mut account, &mut hold, now)?.keyed(idempotency_key, request);
            let entry = self.record(tx, &mut account, entry)?;
            hold.settled_at = Some(now);
            hold.settled_entry_id = Some(entry.id);
            tx.update_hold(&hold)?;
            tx.update_account(&account)?;
            Ok(hold)
        })
    }

    /// A capture's events and its entry: the held quota becomes the actual usage, and
    /// the overage is repriced on it. A late capture (the hold expired and gave back its
    /// draw) charges the operation again, from the charge order or, failing that, in
    /// credits as far as the overrun rule allows.
    fn capture_in(
        &self,
        tx: &mut dyn Transaction,
        account: &mut Account,
        hold: &mut Hold,
        actual: Option<&BTreeMap<String, u64>>,
        labels: &UsageLabels,
        now: OffsetDateTime,
    ) -> Result<NewEntry> {
        let late = hold.status == HoldStatus::Expired;
        if !late {
            move_held(tx, hold, -1)?;
        }
        let actual: Vec<UsageAmount> = match actual {
            Some(actual) => {
                actual.iter().map(|(metric, &amount)| UsageAmount { metric: metric.clone(), amount }).collect()
            }
            None => hold.usage.iter().map(|u| UsageAmount { metric: u.metric.clone(), amount: u.amount }).collect(),
        };
        // A late capture draws the operation again: from the charge order, else its cost
        // in credits under the overrun rule.
        let mut redraw = None;
        let mut unpaid_op = Decimal::ZERO;
        if late {
            if let Some(op) = hold.operation.as_deref().map(|code| self.catalog.operation(code)).transpose()? {
                match charge::spend(account, &self.catalog, op, now) {
                    Ok(spend) => redraw = Some(spend),
                    Err(_) => unpaid_op = op.credits,
                }
            }
        }
        let mut cost = unpaid_op;
        let mut counters = WorkingCounters::default();
        let at = hold.created_at.min(now);
        let windows = usage::windows_at(account, &self.catalog, at);
        for used in actual.iter().filter(|u| u.amount > 0) {
            let usage = UsageRequest {
                model_id: labels.model_id.clone(),
                chat_id: labels.chat_id.clone(),
                ..UsageRequest::new(&used.metric, used.amount)
            };
            let tracked = Tracked { usage: &usage, at, hold_id: Some(&hold.id) };
            cost += self.track_in(tx, account, &mut counters, &windows, &tracked, None, false, now)?.1;
        }
        counters.save(tx, &hold.user_id)?;
        let held_back = if late { Decimal::ZERO } else { hold.overage_held };
        let redrawn = redraw.as_ref().map_or(Decimal::ZERO, |spend| spend.credits);
        let charged = self.chargeable(account, cost, held_back - redrawn);
        hold.status = HoldStatus::Captured;
        hold.captured_late = late;
        hold.captured = actual;
        hold.overage_charged = charged;
        hold.shortfall = cost - charged;
        Ok(NewEntry::hold_captured(hold, held_back - redrawn - charged, redraw.as_ref(), now))
    }

    // ---- features ----

    /// Every feature of the catalog with its value on the user's plan now.
    pub fn entitlements(&self, user_id: &str) -> Result<Entitlements> {
        input::id("user_id", user_id)?;
        let now = self.now();
        let account = self.store.read(|tx| self.account_view(tx, user_id, now))?;
        let plan = account.current_plan(&self.catalog, now);
        let features = self
            .catalog
            .features
            .values()
            .map(|feature| match plan.feature_value(feature) {
                FeatureValue::Flag(enabled) => {
                    Entitlement { name: feature.name.clone(), kind: "flag".into(), enabled, limit: None }
                }
                FeatureValue::Limit(limit) => Entitlement {
                    name: feature.name.clone(),
                    kind: "limit".into(),
                    enabled: limit > 0,
                    limit: Some(limit),
                },
            })
            .collect();
        let valid_until = account.active_subscription(now).map(|sub| sub.expires_at);
        Ok(Entitlements { plan_code: plan.code.clone(), features, valid_until })
    }

    /// Whether the user's plan has `feature`: a flag that is on, or a limit above zero.
    pub fn has_feature(&self, user_id: &str, feature: &str) -> Result<bool> {
        Ok(self.feature_of(user_id, feature)?.enabled)
    }

    /// The feature's entitlement, or FEATURE_NOT_AVAILABLE naming the cheapest plan
    /// that has it.
    pub fn require_feature(&self, user_id: &str, feature: &str) -> Result<Entitlement> {
        let entitlement = self.feature_of(user_id, feature)?;
        if entitlement.enabled {
            return Ok(entitlement);
        }
        let cheapest_plan = usage::cheapest_plan_with(&self.catalog, feature).map(|plan| plan.code.clone());
        Err(BillingError::FeatureNotAvailable { feature: feature.to_owned(), cheapest_plan })
    }

    fn feature_of(&self, user_id: &str, feature: &str) -> Result<Entitlement> {
        let declared = self.catalog.feature(feature)?;
        let entitlements = self.entitlements(user_id)?;
        let found = entitlements.features.into_iter().find(|e| e.name == declared.name);
        found.ok_or_else(|| BillingError::invalid("feature", format!("no feature `{feature}`")))
    }

    // ---- expiry ----

    /// Records every hold of the account's user that expired by `now` (`hold_expired`,
    /// as of its expiry), and writes the account if there was one: part of reading an
    /// account for a write, so the next write after an expiry records it.
    pub(super) fn expire_holds(
        &self,
        tx: &mut dyn Transaction,
        account: &mut Account,
        now: OffsetDateTime,
    ) -> Result<()> {
        let expired = tx.expired_holds(&account.user_id, now)?;
        if expired.is_empty() {
            return Ok(());
        }
        for mut hold in expired {
            let entry = hold_undone(tx, account, &hold, EntryKind::HoldExpired, now)?;
            let entry = self.record(tx, account, entry)?;
            move_held(tx, &hold, -1)?;
            hold.status = HoldStatus::Expired;
            hold.settled_at = Some(hold.expires_at);
            hold.settled_entry_id = Some(entry.id);
            tx.update_hold(&hold)?;
        }
        tx.update_account(account)?;
        Ok(())
    }

    /// The user's account as a read sees it now: rolled forward, with every hold that
    /// expired by now given back and every lot that expired by now left out, in memory
    /// (a read writes nothing; the next write records them).
    pub(super) fn account_view(&self, tx: &mut dyn Transaction, user_id: &str, now: OffsetDateTime) -> Result<Account> {
        Ok(self.read_view(tx, user_id, now)?.account)
    }

    /// [`account_view`](Self::account_view), with the expired holds and the open lots it
    /// read to build it, for the reads that need them too.
    pub(super) fn read_view(&self, tx: &mut dyn Transaction, user_id: &str, now: OffsetDateTime) -> Result<ReadView> {
        let mut account =
            tx.account(user_id)?.ok_or_else(|| BillingError::UnknownUser { user_id: user_id.to_owned() })?;
        account.roll_forward(&self.catalog, now);
        let expired_holds = tx.expired_holds(user_id, now)?;
        for hold in &expired_holds {
            let entry = hold_undone(tx, &account, hold, EntryKind::HoldExpired, now)?;
            account.apply(&entry.entry).ok_or_else(|| BillingError::invalid("amount", "the balance overflows"))?;
        }
        let open_lots = tx.open_lots(user_id)?;
        // Lots that expired by now spend nothing from this instant on.
        account.credits -= lots::expired_remainder(&open_lots, now);
        Ok(ReadView { account, expired_holds, open_lots })
    }
}

/// The usage counters one transaction's events move: each pair of windows read once,
/// moved in memory, and each counter moved written once at the end, so a batch of a
/// thousand events costs a thousand inserts and a few counter writes.
#[derive(Default)]
struct WorkingCounters {
    counters: Counters,
    /// The `(period, day)` windows read.
    loaded: Vec<(String, String)>,
    /// What the events added to each counter, to write at the end.
    moved: Counters,
}

impl WorkingCounters {
    /// The counters of `windows` as this transaction has moved them: read from the store
    /// the first time, kept in memory after.
    fn load(&mut self, tx: &mut dyn Transaction, user_id: &str, windows: &Windows<'_>) -> Result<&Counters> {
        let loaded = self.loaded.iter().any(|(period, day)| *period == windows.period && *day == windows.day);
        if !loaded {
            // A window read before with another partner keeps what memory has of it.
            self.counters.insert_missing(tx.usage_counters(user_id, &windows.period, &windows.day)?);
            self.loaded.push((windows.period.clone(), windows.day.clone()));
        }
        Ok(&self.counters)
    }

    fn add(&mut self, metric: &str, window: &str, used: i64) {
        self.counters.add(metric, window, used, 0);
        self.moved.add(metric, window, used, 0);
    }

    fn save(&self, tx: &mut dyn Transaction, user_id: &str) -> Result<()> {
        for moved in self.moved.iter() {
            let used = i64::try_from(moved.used).map_err(|_| BillingError::invalid("amount", "too large"))?;
            tx.add_usage(user_id, &moved.metric, &moved.window, used, 0)?;
        }
        Ok(())
    }
}

/// One event to append: from a `track_usage` call, or a capture of `hold_id`.
struct Tracked<'a> {
    usage: &'a UsageRequest,
    at: OffsetDateTime,
    hold_id: Option<&'a str>,
}

/// What a read sees of a user: the account as [`Billing::account_view`] gives it, and
/// the expired holds and open lots read to build it.
pub(super) struct ReadView {
    pub account: Account,
    pub expired_holds: Vec<Hold>,
    pub open_lots: Vec<CreditLot>,
}

/// The counters of `windows`, with `expired` (holds that expired, whether or not their
/// expiry is recorded yet) left out.
fn live_counters(tx: &mut dyn Transaction, user_id: &str, windows: &Windows<'_>, expired: &[Hold]) -> Result<Counters> {
    let mut counters = Counters::new(tx.usage_counters(user_id, &windows.period, &windows.day)?);
    for hold in expired {
        for held in &hold.usage {
            let amount = i64::try_from(held.amount).unwrap_or(i64::MAX);
            counters.add(&held.metric, &held.period_window, 0, -amount);
            counters.add(&held.metric, &held.day_window, 0, -amount);
        }
    }
    Ok(counters)
}

/// Adds (`sign` 1) or takes back (-1) a hold's usage in the `held` counters it counts in.
fn move_held(tx: &mut dyn Transaction, hold: &Hold, sign: i64) -> Result<()> {
    for held in &hold.usage {
        let amount = sign * i64::try_from(held.amount).map_err(|_| BillingError::invalid("amount", "too large"))?;
        tx.add_usage(&hold.user_id, &held.metric, &held.period_window, 0, amount)?;
        tx.add_usage(&hold.user_id, &held.metric, &held.day_window, 0, amount)?;
    }
    Ok(())
}

/// The entry that gives back what a hold drew, as a refund gives back a charge.
fn hold_undone(
    tx: &mut dyn Transaction,
    account: &Account,
    hold: &Hold,
    kind: EntryKind,
    now: OffsetDateTime,
) -> Result<NewEntry> {
    let placed = tx
        .entry(hold.placed_entry_id)?
        .ok_or_else(|| BillingError::Unreadable { column: "holds.placed_entry_id".to_owned() })?;
    let back = charge::give_back(account, &placed);
    Ok(NewEntry::hold_undone(kind, hold, &placed, &back, now))
}

fn find_hold(tx: &mut dyn Transaction, hold_id: &str) -> Result<Hold> {
    tx.hold(hold_id)?.ok_or_else(|| BillingError::HoldNotFound { hold_id: hold_id.to_owned() })
}

/// The hold an earlier call with the same key placed or settled.
fn replayed_hold(tx: &mut dyn Transaction, entry: &LedgerEntry) -> Result<Hold> {
    let hold_id = entry.reference.as_deref().unwrap_or_default();
    Ok(Hold { replayed: true, ..find_hold(tx, hold_id)? })
}

fn new_hold(
    user_id: &str,
    usage: &BTreeMap<String, u64>,
    windows: &Windows<'_>,
    operation: Option<String>,
    spend: Option<&Spend>,
    now: OffsetDateTime,
    ttl: time::Duration,
) -> Hold {
    let usage = usage
        .iter()
        .filter(|(_, &amount)| amount > 0)
        .map(|(metric, &amount)| HeldUsage {
            metric: metric.clone(),
            amount,
            period_window: windows.period.clone(),
            day_window: windows.day.clone(),
        })
        .collect();
    Hold {
        id: format!("hold_{}", uuid::Uuid::new_v4().simple()),
        user_id: user_id.to_owned(),
        status: HoldStatus::Open,
        usage,
        operation,
        source: spend.map(|spend| spend.source),
        credits_held: Decimal::ZERO,
        overage_held: Decimal::ZERO,
        placed_entry_id: 0,
        created_at: now,
        expires_at: now + ttl,
        settled_at: None,
        captured: Vec::new(),
        overage_charged: Decimal::ZERO,
        shortfall: Decimal::ZERO,
        settled_entry_id: None,
        captured_late: false,
        replayed: false,
    }
}
