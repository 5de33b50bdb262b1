//! Paid subscriptions: activation, cancellation and expiry back to the free tier.

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::account::Allowance;
use crate::catalog::Plan;
use crate::payment::PaidPeriod;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Tells this subscription's allowance apart from an earlier one's, even when both
    /// start at the same instant.
    pub id: String,
    pub plan_code: String,
    #[serde(with = "crate::time_util::serde_iso")]
    pub started_at: OffsetDateTime,
    /// The subscription is active strictly before this instant.
    #[serde(with = "crate::time_util::serde_iso")]
    pub expires_at: OffsetDateTime,
    pub autorenew: bool,
    /// When the user asked to cancel; the subscription then ends at `expires_at`.
    #[serde(with = "crate::time_util::serde_iso::option")]
    pub canceled_at: Option<OffsetDateTime>,
    /// Ops of the plan's allowance, anchored at `started_at`.
    pub ops: Allowance,
    /// When `process_due` recorded the end of the subscription. Until then a due
    /// subscription is still looked at for renewal.
    #[serde(with = "crate::time_util::serde_iso::option", default)]
    pub ended_at: Option<OffsetDateTime>,
}

impl Subscription {
    /// A subscription to `plan` for one `duration_days` from `now`.
    pub fn start(plan: &Plan, now: OffsetDateTime) -> Self {
        Self::until(plan, now, now + Duration::days(i64::from(plan.duration_days.unwrap_or(0))))
    }

    pub fn until(plan: &Plan, now: OffsetDateTime, expires_at: OffsetDateTime) -> Self {
        Self {
            id: uuid::Uuid::new_v4().simple().to_string(),
            plan_code: plan.code.clone(),
            started_at: now,
            expires_at,
            autorenew: false,
            canceled_at: None,
            ops: Allowance::starting_at(now),
            ended_at: None,
        }
    }

    /// Adds one paid `duration_days` to the end of the subscription, continuing it
    /// without a gap; the allowance starts afresh when the new period begins, so ops
    /// bought for the next period are not handed out early. Returns the period added.
    pub fn extend(&mut self, plan: &Plan) -> PaidPeriod {
        let period_end = self.expires_at;
        self.expires_at = period_end + Duration::days(i64::from(plan.duration_days.unwrap_or(0)));
        self.ops.restart_at(period_end);
        self.canceled_at = None;
        self.ended_at = None;
        PaidPeriod { subscription_id: self.id.clone(), start: period_end, end: self.expires_at }
    }

    /// Takes back the part of a refunded `period` that is still ahead: the subscription
    /// loses `[max(start, now), end)` of its time, and no longer renews. A period already
    /// over, or one of an earlier subscription, changes nothing. Returns whether it did.
    pub fn take_back(&mut self, period: &PaidPeriod, now: OffsetDateTime) -> bool {
        if period.subscription_id != self.id || period.end <= now || self.expires_at < period.end {
            return false;
        }
        let unused = period.end - period.start.max(now);
        self.expires_at -= unused;
        self.cancel(now, self.expires_at <= now);
        true
    }

    /// The period the payment that started this subscription bought.
    pub fn first_period(&self) -> PaidPeriod {
        PaidPeriod { subscription_id: self.id.clone(), start: self.started_at, end: self.expires_at }
    }

    /// Identifies the subscription's current paid period, so that one period is renewed
    /// at most once.
    pub fn period_key(&self) -> String {
        format!("{}@{}", self.id, crate::time_util::to_millis(self.expires_at))
    }

    pub fn is_active(&self, now: OffsetDateTime) -> bool {
        now < self.expires_at
    }

    /// Stops renewal; `immediate` also ends the subscription now instead of at period end.
    pub fn cancel(&mut self, now: OffsetDateTime, immediate: bool) {
        self.autorenew = false;
        self.canceled_at.get_or_insert(now);
        if immediate {
            self.expires_at = self.expires_at.min(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use time::macros::datetime;

    fn basic() -> Plan {
        let catalog =
            Catalog::from_toml_file(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/tariffs.toml")).unwrap();
        catalog.paid_plan("basic").unwrap().clone()
    }

    /// What a refund takes back: only the part of *this* subscription's period still
    /// ahead, never a period already over or already taken back. (Kills the mutants of
    /// each condition of `take_back`'s guard.)
    #[test]
    fn take_back_cuts_only_what_is_still_ahead_of_this_subscriptions_period() {
        let t0 = datetime!(2026-01-01 00:00 UTC);
        let day = Duration::days(1);
        let mut sub = Subscription::start(&basic(), t0);
        let first = sub.first_period();
        let second = sub.extend(&basic()); // [t0+30, t0+60)

        let other = PaidPeriod { subscription_id: "another".into(), ..first.clone() };
        assert!(!sub.clone().take_back(&other, t0 + day), "another subscription's period");
        assert!(!sub.clone().take_back(&first, t0 + day * 31), "a period already over");

        // The first purchase refunded 10 days in: its 20 days ahead go, the second stays.
        let mut cut = sub.clone();
        assert!(cut.take_back(&first, t0 + day * 10));
        assert_eq!(cut.expires_at, t0 + day * 40);
        assert!(cut.canceled_at.is_some() && !cut.autorenew);

        // The second refunded: the subscription ends with the first; again, nothing more.
        assert!(sub.take_back(&second, t0 + day * 10));
        assert_eq!(sub.expires_at, t0 + day * 30);
        assert!(!sub.take_back(&second, t0 + day * 11), "already taken back");
        assert_eq!(sub.expires_at, t0 + day * 30);
    }

    /// Each period has a key of its own, so each is renewed once. (Kills the mutants that
    /// make `period_key` a constant.)
    #[test]
    fn each_period_has_a_key_of_its_own() {
        let mut sub = Subscription::start(&basic(), datetime!(2026-01-01 00:00 UTC));
        let first = sub.period_key();
        sub.extend(&basic());
        assert_ne!(sub.period_key(), first);
        assert!(first.starts_with(&sub.id) && sub.period_key().starts_with(&sub.id));
        let other = Subscription::start(&basic(), datetime!(2026-01-01 00:00 UTC));
        assert_ne!(other.period_key(), first, "another subscription, the same end");
    }
}
