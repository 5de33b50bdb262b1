//! Random sequences of register / charge / replay / refund / grant / activate / time
//! passing, run against the engine and against a small reference model written
//! independently here. After every step both must agree on the outcome (source or
//! error code), on every user's credits and allowance use, and on the remainder of every
//! live credit lot (the trial expires after 3 days; grants come with random expiries,
//! priorities and categories); at the end the ledger must prove every balance.

mod common;

use std::sync::Arc;

use billing_engine::{Billing, BillingError, Catalog, ChargeSource, Clock, GrantTerms, LotCategory, ManualClock};
use proptest::prelude::*;
use rust_decimal::Decimal;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
const PERIOD_MS: i64 = 30 * DAY_MS;
const LOCAL_OFFSET_MS: i64 = 3 * HOUR_MS;
const FREE_OPS: u32 = 5;
const FREE_DAILY: u32 = 3;
const BASIC_OPS: u32 = 30;
const TRIAL: i64 = 10;
const TRIAL_DAYS: i64 = 3;
const TRIAL_PRIORITY: u8 = 20;
const USERS: [&str; 2] = ["u0", "u1"];
const OPERATIONS: [(&str, i64); 2] = [("generation", 2), ("assistant", 1)];

#[derive(Debug, Clone)]
enum Step {
    Register { user: usize, trial: bool },
    Charge { user: usize, op: usize },
    Replay { nth: usize },
    Refund { nth: usize },
    Grant { user: usize, amount: i64, expires_in_hours: Option<i64>, priority: u8, paid: bool },
    Activate { user: usize },
    Advance { hours: i64 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (0..2usize, any::<bool>()).prop_map(|(user, trial)| Step::Register { user, trial }),
        8 => (0..2usize, 0..2usize).prop_map(|(user, op)| Step::Charge { user, op }),
        1 => any::<usize>().prop_map(|nth| Step::Replay { nth }),
        2 => any::<usize>().prop_map(|nth| Step::Refund { nth }),
        2 => (
            (0..2usize, -6i64..12).prop_filter("non-zero", |(_, a)| *a != 0),
            prop::option::of(1i64..200),
            prop_oneof![Just(10u8), Just(50u8), Just(90u8)],
            any::<bool>(),
        )
            .prop_map(|((user, amount), expires_in_hours, priority, paid)| Step::Grant {
                user,
                amount,
                expires_in_hours,
                priority,
                paid
            }),
        1 => (0..2usize).prop_map(|user| Step::Activate { user }),
        3 => prop_oneof![1i64..30, 20i64..800].prop_map(|hours| Step::Advance { hours }),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Period {
    Free(i64),
    Sub(u32, i64),
}

#[derive(Debug, Clone)]
struct ModelSub {
    id: u32,
    start: i64,
    expires: i64,
    period: i64,
    used: u32,
}

/// A credit lot as the model keeps it; its place in `lots` is its creation order.
#[derive(Debug, Clone)]
struct ModelLot {
    remaining: i64,
    priority: u8,
    paid: bool,
    created: i64,
    expires: Option<i64>,
    seq: u64,
}

impl ModelLot {
    fn live(&self, now: i64) -> bool {
        self.expires.is_none_or(|expires| now < expires)
    }
}

#[derive(Debug, Clone, Default)]
struct ModelUser {
    registered: bool,
    trial_given: bool,
    lots: Vec<ModelLot>,
    /// What was spent beyond the lots: the balance below zero.
    debt: i64,
    anchor: i64,
    free_period: i64,
    free_used: u32,
    day: i64,
    day_free: u32,
    day_sub: u32,
    sub: Option<ModelSub>,
}

#[derive(Debug, Clone)]
struct ModelCharge {
    user: usize,
    op: usize,
    key: String,
    id: i64,
    source: ChargeSource,
    period: Option<Period>,
    day: i64,
    refunded: bool,
    /// What the charge drew from each lot (by index), in order.
    drawn: Vec<(usize, i64)>,
}

impl ModelUser {
    /// The balance at `now`: the live lots, less the debt.
    fn credits(&self, now: i64) -> i64 {
        self.lots.iter().filter(|lot| lot.live(now)).map(|lot| lot.remaining).sum::<i64>() - self.debt
    }

    /// A lot of `amount`, of which a debt takes what it can first.
    fn give(&mut self, amount: i64, priority: u8, paid: bool, now: i64, expires: Option<i64>, seq: u64) {
        let paid_debt = self.debt.min(amount);
        self.debt -= paid_debt;
        self.lots.push(ModelLot { remaining: amount - paid_debt, priority, paid, created: now, expires, seq });
    }

    /// Takes `amount` from the live lots: priority, soonest expiry (never last),
    /// promotional before paid, age, creation; what they lack becomes debt.
    fn draw(&mut self, amount: i64, now: i64) -> Vec<(usize, i64)> {
        let mut order: Vec<usize> = (0..self.lots.len()).filter(|&i| self.lots[i].live(now)).collect();
        order.sort_by_key(|&i| {
            let lot = &self.lots[i];
            (lot.priority, lot.expires.is_none(), lot.expires, lot.paid, lot.created, lot.seq)
        });
        let mut left = amount;
        let mut drawn = Vec::new();
        for i in order {
            let take = left.min(self.lots[i].remaining);
            if take > 0 {
                self.lots[i].remaining -= take;
                left -= take;
                drawn.push((i, take));
            }
        }
        self.debt += left;
        drawn
    }

    fn roll(&mut self, now: i64) {
        let period = (now - self.anchor).div_euclid(PERIOD_MS);
        if period > self.free_period {
            self.free_period = period;
            self.free_used = 0;
        }
        let day = (now + LOCAL_OFFSET_MS).div_euclid(DAY_MS);
        if day > self.day {
            self.day = day;
            self.day_free = 0;
            self.day_sub = 0;
        }
        if let Some(sub) = self.sub.as_mut() {
            let period = (now.min(sub.expires) - sub.start).div_euclid(PERIOD_MS);
            if period > sub.period {
                sub.period = period;
                sub.used = 0;
            }
        }
    }

    fn active_sub(&mut self, now: i64) -> Option<&mut ModelSub> {
        self.sub.as_mut().filter(|sub| now < sub.expires)
    }

    fn current_period(&self, source: ChargeSource) -> Option<Period> {
        match source {
            ChargeSource::Freemium => Some(Period::Free(self.free_period)),
            ChargeSource::Subscription => self.sub.as_ref().map(|s| Period::Sub(s.id, s.period)),
            ChargeSource::Credits => None,
        }
    }

    /// Subscription (30 ops, no daily cap) → freemium (5 per period, 3 per day) → credits.
    fn charge(&mut self, cost: i64, now: i64) -> Result<(ChargeSource, Option<Period>), &'static str> {
        if let Some(sub) = self.active_sub(now) {
            if sub.used < BASIC_OPS {
                sub.used += 1;
                self.day_sub += 1;
                return Ok((ChargeSource::Subscription, self.current_period(ChargeSource::Subscription)));
            }
        }
        let mut daily_hit = false;
        if self.free_used < FREE_OPS {
            if self.day_free < FREE_DAILY {
                self.free_used += 1;
                self.day_free += 1;
                return Ok((ChargeSource::Freemium, self.current_period(ChargeSource::Freemium)));
            }
            daily_hit = true;
        }
        if self.credits(now) >= cost {
            return Ok((ChargeSource::Credits, None));
        }
        Err(if daily_hit { "DAILY_LIMIT_REACHED" } else { "NOT_ENOUGH_CREDITS" })
    }
}

struct Run {
    billing: Billing,
    clock: Arc<ManualClock>,
    /// Kept for as long as the run: a file's directory is removed when it drops.
    _db: common::TestDb,
    now: i64,
    users: Vec<ModelUser>,
    charges: Vec<ModelCharge>,
    keys: u32,
}

impl Run {
    fn new() -> Self {
        let clock = Arc::new(ManualClock::parse("2026-01-01T12:00:00Z").unwrap());
        let db = common::TestDb::new();
        let billing = Billing::open_with_clock(&db.location, catalog(), clock.clone()).unwrap();
        let now = billing_engine::time_util::to_millis(clock.now());
        Self {
            _db: db,
            billing,
            clock,
            now,
            users: vec![ModelUser::default(); USERS.len()],
            charges: Vec::new(),
            keys: 0,
        }
    }

    fn key(&mut self) -> String {
        self.keys += 1;
        format!("k{}", self.keys)
    }

    fn apply(&mut self, step: &Step) -> Result<(), TestCaseError> {
        let now = self.now;
        for user in self.users.iter_mut().filter(|u| u.registered) {
            user.roll(now);
        }
        match *step {
            Step::Register { user, trial } => {
                self.billing.register_user(USERS[user], trial).unwrap();
                let model = &mut self.users[user];
                if !model.registered {
                    *model = ModelUser {
                        registered: true,
                        anchor: now,
                        free_period: 0,
                        day: (now + LOCAL_OFFSET_MS).div_euclid(DAY_MS),
                        ..ModelUser::default()
                    };
                }
                if trial && !model.trial_given {
                    model.trial_given = true;
                    let expires = Some(now + TRIAL_DAYS * DAY_MS);
                    let seq = u64::from(self.keys);
                    model.give(TRIAL, TRIAL_PRIORITY, false, now, expires, seq);
                }
            }
            Step::Charge { user, op } => {
                let key = self.key();
                let engine = self.billing.charge(USERS[user], OPERATIONS[op].0, &key, None);
                let model = &mut self.users[user];
                if !model.registered {
                    prop_assert_eq!(engine.unwrap_err().code(), "UNKNOWN_USER");
                    return Ok(());
                }
                let day = model.day;
                match (engine, model.charge(OPERATIONS[op].1, now)) {
                    (Ok(charge), Ok((source, period))) => {
                        prop_assert_eq!(charge.source, source);
                        let drawn = if source == ChargeSource::Credits {
                            model.draw(OPERATIONS[op].1, now)
                        } else {
                            Vec::new()
                        };
                        self.charges.push(ModelCharge {
                            user,
                            op,
                            key,
                            id: charge.id,
                            source,
                            period,
                            day,
                            refunded: false,
                            drawn,
                        });
                    }
                    (Err(err), Err(code)) => prop_assert_eq!(err.code(), code),
                    (engine, model) => prop_assert!(false, "engine {:?} vs model {:?}", engine, model),
                }
            }
            Step::Replay { nth } => {
                if self.charges.is_empty() {
                    return Ok(());
                }
                let charge = &self.charges[nth % self.charges.len()];
                let replay =
                    self.billing.charge(USERS[charge.user], OPERATIONS[charge.op].0, &charge.key, None).unwrap();
                prop_assert!(replay.replayed);
                prop_assert_eq!((replay.id, replay.source), (charge.id, charge.source));
            }
            Step::Refund { nth } => {
                if self.charges.is_empty() {
                    return Ok(());
                }
                let i = nth % self.charges.len();
                let key = self.key();
                let refund = self.billing.refund_charge(self.charges[i].id, &key, None).unwrap();
                let charge = &mut self.charges[i];
                prop_assert_eq!(refund.replayed, charge.refunded);
                if !charge.refunded {
                    charge.refunded = true;
                    let model = &mut self.users[charge.user];
                    match charge.source {
                        // A debt is paid first; the rest goes back last drawn first, and to a
                        // lot that expired, expires at once.
                        ChargeSource::Credits => {
                            let cost = OPERATIONS[charge.op].1;
                            let paid_debt = model.debt.min(cost);
                            model.debt -= paid_debt;
                            let mut left = cost - paid_debt;
                            for &(lot, amount) in charge.drawn.iter().rev() {
                                let back = amount.min(left);
                                left -= back;
                                if model.lots[lot].live(now) {
                                    model.lots[lot].remaining += back;
                                }
                            }
                        }
                        source => {
                            let returned = charge.period == model.current_period(source);
                            prop_assert_eq!(refund.op_returned, returned);
                            if returned {
                                if source == ChargeSource::Freemium {
                                    model.free_used -= 1;
                                } else {
                                    model.sub.as_mut().unwrap().used -= 1;
                                }
                                if charge.day == model.day {
                                    *(if source == ChargeSource::Freemium {
                                        &mut model.day_free
                                    } else {
                                        &mut model.day_sub
                                    }) -= 1;
                                }
                            }
                        }
                    }
                }
            }
            Step::Grant { user, amount, expires_in_hours, priority, paid } => {
                let key = self.key();
                let seq = u64::from(self.keys);
                let terms = GrantTerms {
                    expires_at: expires_in_hours.map(|hours| self.clock.now() + time::Duration::hours(hours)),
                    priority: Some(priority),
                    category: if paid { LotCategory::Paid } else { LotCategory::Promotional },
                };
                let engine = self.billing.grant_credits_on(USERS[user], Decimal::from(amount), &key, "model", &terms);
                let model = &mut self.users[user];
                if model.registered {
                    prop_assert_eq!(engine.unwrap().credits_delta, Decimal::from(amount));
                    if amount > 0 {
                        let expires = expires_in_hours.map(|hours| now + hours * HOUR_MS);
                        model.give(amount, priority, paid, now, expires, seq);
                    } else {
                        model.draw(-amount, now);
                    }
                } else {
                    prop_assert_eq!(engine.unwrap_err().code(), "UNKNOWN_USER");
                }
            }
            Step::Activate { user } => {
                let key = self.key();
                let engine = self.billing.activate_subscription(USERS[user], "basic", &key);
                let id = self.keys;
                let model = &mut self.users[user];
                let expected = if !model.registered {
                    Err("UNKNOWN_USER")
                } else if model.active_sub(now).is_some() {
                    Err("ACTIVE_SUBSCRIPTION")
                } else {
                    model.sub = Some(ModelSub { id, start: now, expires: now + PERIOD_MS, period: 0, used: 0 });
                    Ok(())
                };
                prop_assert_eq!(engine.map(drop).map_err(|e: BillingError| e.code()), expected);
            }
            Step::Advance { hours } => {
                self.clock.advance(time::Duration::hours(hours)).unwrap();
                self.now += hours * HOUR_MS;
            }
        }
        self.compare_states()
    }

    fn compare_states(&mut self) -> Result<(), TestCaseError> {
        let now = self.now;
        for (i, model) in self.users.iter_mut().enumerate() {
            let state = self.billing.state(USERS[i]);
            if !model.registered {
                prop_assert_eq!(state.unwrap_err().code(), "UNKNOWN_USER");
                continue;
            }
            model.roll(now);
            let state = state.unwrap();
            let active = model.active_sub(now).map(|s| s.used);
            prop_assert_eq!(state.credits, Decimal::from(model.credits(now)), "credits of {}", USERS[i]);
            // Every live lot's remainder, in the order both made them.
            let lots = self.billing.credit_lots(USERS[i]).unwrap();
            let engine_live: Vec<Decimal> =
                lots.iter().filter(|lot| lot.is_live(self.clock.now())).map(|lot| lot.remaining).collect();
            let model_live: Vec<Decimal> =
                model.lots.iter().filter(|lot| lot.live(now)).map(|lot| Decimal::from(lot.remaining)).collect();
            prop_assert_eq!(engine_live, model_live, "lots of {}", USERS[i]);
            prop_assert_eq!(state.freemium_ops_used, model.free_used, "freemium of {}", USERS[i]);
            prop_assert_eq!(state.subscription_ops_used, active, "subscription of {}", USERS[i]);
            let today = if active.is_some() { model.day_sub } else { model.day_free };
            prop_assert_eq!(state.used_today, today, "today of {}", USERS[i]);
        }
        Ok(())
    }
}

/// The example tariffs with a trial that expires after 3 days and burns before default lots.
fn catalog() -> Catalog {
    let text = std::fs::read_to_string(common::tariffs_path()).unwrap();
    let text = text.replace("# expires_after_days = 14", &format!("expires_after_days = {TRIAL_DAYS}")).replace(
        "priority = 50                       # optional, the default: the trial",
        &format!("priority = {TRIAL_PRIORITY} # the trial"),
    );
    Catalog::from_toml(&text).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn engine_agrees_with_the_reference_model(steps in prop::collection::vec(step(), 1..60)) {
        let mut run = Run::new();
        for step in &steps {
            run.apply(step)?;
        }
        let report = run.billing.verify_integrity().unwrap();
        prop_assert!(report.ok, "{:?}", report.mismatches);
    }
}
