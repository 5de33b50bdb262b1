//! A user's billing account: credits, the free-tier allowance, today's op counters and
//! the current subscription, and the rule by which allowances reset.
//!
//! Resets are lazy: nothing runs on a timer. Every read and write first calls
//! [`Account::roll_forward`] with the current time, which starts whatever periods and
//! days have begun since the account was last written.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use time::{Date, Duration, OffsetDateTime, UtcOffset};

use crate::catalog::{Catalog, ChargeSource, Plan};
use crate::ledger::{AllowancePeriod, LedgerEntry, FREEMIUM_OWNER};
use crate::subscription::Subscription;

/// Ops used from an allowance within its current period.
///
/// Periods are anchored: period *k* starts at `anchor + k · period_days`, whenever it is
/// first looked at, so late reads never shift later boundaries (no drift).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allowance {
    #[serde(with = "crate::time_util::serde_iso")]
    pub anchor: OffsetDateTime,
    #[serde(with = "crate::time_util::serde_iso")]
    pub period_start: OffsetDateTime,
    pub used: u32,
}

impl Allowance {
    pub fn starting_at(at: OffsetDateTime) -> Self {
        Self { anchor: at, period_start: at, used: 0 }
    }

    /// The start of the anchored period that contains `now`. Before a restart scheduled
    /// by [`restart_at`](Self::restart_at), periods still follow the old anchor, and the
    /// stored `period_start` is one of its boundaries.
    pub fn period_start_at(&self, now: OffsetDateTime, period_days: u32) -> OffsetDateTime {
        let from = if now < self.anchor { self.period_start } else { self.anchor };
        latest_boundary(from, now, Duration::days(i64::from(period_days)))
    }

    /// Starts the period that contains `now` if it is newer than the stored one. A clock
    /// that goes back never reopens a finished period.
    pub fn roll_forward(&mut self, now: OffsetDateTime, period_days: u32) {
        let start = self.period_start_at(now, period_days);
        if start > self.period_start {
            self.period_start = start;
            self.used = 0;
        }
    }

    /// Schedules a fresh allowance from `at` on, anchored there; the current period and
    /// its use go on until then.
    pub fn restart_at(&mut self, at: OffsetDateTime) {
        self.anchor = at;
    }

    pub fn resets_at(&self, period_days: u32) -> OffsetDateTime {
        let next = self.period_start + Duration::days(i64::from(period_days));
        if self.anchor > self.period_start {
            next.min(self.anchor)
        } else {
            next
        }
    }

    /// Ops left in this period; `None` when the limit is `None` (unlimited).
    pub fn remaining(&self, limit: Option<u32>) -> Option<u32> {
        limit.map(|limit| limit.saturating_sub(self.used))
    }
}

/// The last of `from + k · period` (k ≥ 0) not after `now`; `from` when `now` is earlier.
fn latest_boundary(from: OffsetDateTime, now: OffsetDateTime, period: Duration) -> OffsetDateTime {
    if now <= from {
        return from;
    }
    let elapsed_periods = (now - from).whole_milliseconds() / period.whole_milliseconds();
    from + period * (elapsed_periods as i32)
}

/// Ops each allowance gave on one local day (the catalog's `timezone_offset`), for the
/// plans' daily limits. Credits are paid for, so they are never capped per day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayOps {
    pub day: Date,
    pub subscription: u32,
    pub freemium: u32,
}

impl DayOps {
    pub fn new(day: Date) -> Self {
        Self { day, subscription: 0, freemium: 0 }
    }

    pub fn roll_forward(&mut self, today: Date) {
        if today > self.day {
            *self = Self::new(today);
        }
    }

    pub fn used(&self, source: ChargeSource) -> u32 {
        match source {
            ChargeSource::Subscription => self.subscription,
            ChargeSource::Freemium => self.freemium,
            ChargeSource::Credits => 0,
        }
    }

    fn add(&mut self, source: ChargeSource, delta: i32) {
        let counter = match source {
            ChargeSource::Subscription => &mut self.subscription,
            ChargeSource::Freemium => &mut self.freemium,
            ChargeSource::Credits => return,
        };
        *counter = counter.saturating_add_signed(delta);
    }
}

/// The local calendar day of `now` where daily limits are counted.
pub fn local_day(now: OffsetDateTime, offset: UtcOffset) -> Date {
    now.to_offset(offset).date()
}

/// The instant the local day of `now` ends.
pub fn next_local_midnight(now: OffsetDateTime, offset: UtcOffset) -> OffsetDateTime {
    let tomorrow = local_day(now, offset).next_day().unwrap_or(Date::MAX);
    tomorrow.midnight().assume_offset(offset).to_offset(UtcOffset::UTC)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub user_id: String,
    #[serde(with = "crate::time_util::serde_iso")]
    pub created_at: OffsetDateTime,
    pub credits: Decimal,
    pub free_trial_awarded: bool,
    pub freemium: Allowance,
    pub today: DayOps,
    /// The current or last subscription; it pays only while [`Subscription::is_active`].
    pub subscription: Option<Subscription>,
}

impl Account {
    pub fn new(user_id: &str, now: OffsetDateTime, catalog: &Catalog) -> Self {
        Self {
            user_id: user_id.to_owned(),
            created_at: now,
            credits: Decimal::ZERO,
            free_trial_awarded: false,
            freemium: Allowance::starting_at(now),
            today: DayOps::new(local_day(now, catalog.timezone_offset)),
            subscription: None,
        }
    }

    /// Applies every reset due by `now`; see the module docs.
    pub fn roll_forward(&mut self, catalog: &Catalog, now: OffsetDateTime) {
        self.freemium.roll_forward(now, catalog.free_plan().period_days);
        if let Some(sub) = self.subscription.as_mut() {
            // A plan dropped from the catalog keeps its last period: it can no longer pay.
            if let Some(plan) = catalog.plan(&sub.plan_code) {
                sub.ops.roll_forward(now.min(sub.expires_at), plan.period_days);
            }
        }
        self.today.roll_forward(local_day(now, catalog.timezone_offset));
    }

    /// Applies what a ledger entry moves: its credits to the balance, and its ops to the
    /// allowance period and the local day they count toward, where those are this
    /// account's current ones (an op of a finished period or day changes no counter).
    /// The engine records every entry through this, and the audit replays the ledger
    /// through it. `None` when the balance would pass what a decimal holds.
    pub fn apply(&mut self, entry: &LedgerEntry) -> Option<()> {
        self.credits = self.credits.checked_add(entry.credits_delta)?;
        if entry.ops_delta == 0 {
            return Some(());
        }
        if let Some(allowance) = entry.allowance.as_ref().and_then(|period| self.allowance_of(period)) {
            allowance.used = allowance.used.saturating_add_signed(entry.ops_delta);
        }
        if let (Some(source), Some(day)) = (entry.source, entry.op_day) {
            if day == self.today.day {
                self.today.add(source, entry.ops_delta);
            }
        }
        Some(())
    }

    /// The allowance whose current period is `period`, if it is one of this account's.
    fn allowance_of(&mut self, period: &AllowancePeriod) -> Option<&mut Allowance> {
        if period.owner == FREEMIUM_OWNER {
            return Some(&mut self.freemium).filter(|free| free.period_start == period.start);
        }
        let sub = self.subscription.as_mut().filter(|sub| sub.id == period.owner)?;
        Some(&mut sub.ops).filter(|ops| ops.period_start == period.start)
    }

    /// The same account in the same periods and on the same day, with no credits and
    /// nothing used: where the audit starts replaying the ledger.
    pub(crate) fn with_nothing_used(&self) -> Account {
        let mut empty = self.clone();
        empty.credits = Decimal::ZERO;
        empty.freemium.used = 0;
        empty.today = DayOps::new(self.today.day);
        if let Some(sub) = empty.subscription.as_mut() {
            sub.ops.used = 0;
        }
        empty
    }

    /// When `process_due` must next look at this account: the end of a subscription not
    /// yet recorded as ended (renewal is tried a little before it). A store keeps it so
    /// that the due accounts are a query by time ([`crate::Transaction::users_due`]).
    pub fn due_at(&self) -> Option<OffsetDateTime> {
        self.subscription.as_ref().filter(|sub| sub.ended_at.is_none()).map(|sub| sub.expires_at)
    }

    pub fn active_subscription(&self, now: OffsetDateTime) -> Option<&Subscription> {
        self.subscription.as_ref().filter(|sub| sub.is_active(now))
    }

    pub fn active_subscription_mut(&mut self, now: OffsetDateTime) -> Option<&mut Subscription> {
        self.subscription.as_mut().filter(|sub| sub.is_active(now))
    }

    /// The plan whose terms apply now: the active subscription's, else the free tier.
    pub fn current_plan<'c>(&self, catalog: &'c Catalog, now: OffsetDateTime) -> &'c Plan {
        self.active_subscription(now)
            .and_then(|sub| catalog.plan(&sub.plan_code))
            .unwrap_or_else(|| catalog.free_plan())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    /// Kills two mutants: `now < anchor` as `<=`, and `restart_at` doing nothing.
    #[test]
    fn a_scheduled_restart_starts_a_period_exactly_at_its_instant() {
        let start = datetime!(2026-01-01 00:00 UTC);
        let mut allowance = Allowance::starting_at(start);
        let at = start + Duration::days(10) + Duration::hours(5); // no boundary of the old periods
        allowance.restart_at(at);
        assert_eq!(allowance.period_start_at(at - Duration::milliseconds(1), 30), start, "before: the old period");
        assert_eq!(allowance.period_start_at(at, 30), at, "at the instant: the new one");
        assert_eq!(allowance.period_start_at(at + Duration::days(31), 30), at + Duration::days(30));
    }

    #[test]
    fn periods_are_anchored_however_late_they_are_read() {
        let anchor = datetime!(2026-01-31 10:00 UTC);
        let mut allowance = Allowance { anchor, period_start: anchor, used: 4 };
        assert_eq!(allowance.period_start_at(anchor - Duration::days(3), 30), anchor, "before the anchor");
        assert_eq!(allowance.period_start_at(anchor + Duration::days(30) - Duration::milliseconds(1), 30), anchor);
        assert_eq!(allowance.period_start_at(anchor + Duration::days(30), 30), anchor + Duration::days(30));
        // Read 100 days late: period 3 starts on its anchored boundary, not at the read.
        allowance.roll_forward(anchor + Duration::days(100), 30);
        assert_eq!((allowance.period_start, allowance.used), (anchor + Duration::days(90), 0));
        allowance.used = 2;
        allowance.roll_forward(anchor + Duration::days(50), 30);
        assert_eq!(
            (allowance.period_start, allowance.used),
            (anchor + Duration::days(90), 2),
            "a clock going back reopens nothing"
        );
        assert_eq!(allowance.resets_at(30), anchor + Duration::days(120));
    }

    #[test]
    fn local_days_end_at_midnight_in_the_offset() {
        let msk = UtcOffset::from_hms(3, 0, 0).unwrap();
        assert_eq!(local_day(datetime!(2026-03-10 20:59:59 UTC), msk), time::macros::date!(2026 - 03 - 10));
        assert_eq!(local_day(datetime!(2026-03-10 21:00 UTC), msk), time::macros::date!(2026 - 03 - 11));
        assert_eq!(next_local_midnight(datetime!(2026-03-10 20:59:59 UTC), msk), datetime!(2026-03-10 21:00 UTC));
        let mut day = DayOps { day: time::macros::date!(2026 - 03 - 10), subscription: 2, freemium: 3 };
        day.roll_forward(time::macros::date!(2026 - 03 - 09));
        assert_eq!(day.freemium, 3, "an earlier day does not reset the counters");
        day.roll_forward(time::macros::date!(2026 - 03 - 11));
        assert_eq!((day.subscription, day.freemium), (0, 0));
    }
}
