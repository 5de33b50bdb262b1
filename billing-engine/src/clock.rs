//! Where "now" comes from: the system clock in production, a [`ManualClock`] in tests.

use std::sync::Mutex;

use time::{Duration, OffsetDateTime};

use crate::error::{BillingError, Result};
use crate::time_util;

pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> OffsetDateTime;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that moves only when told to; share it (`Arc`) between the test and the engine.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<OffsetDateTime>,
}

impl ManualClock {
    pub fn new(now: OffsetDateTime) -> Self {
        Self { now: Mutex::new(now) }
    }

    /// A clock set to an RFC 3339 time such as `2026-01-01T00:00:00Z`.
    pub fn parse(iso: &str) -> Result<Self> {
        Ok(Self::new(parse_clock_time(iso)?))
    }

    pub fn set(&self, now: OffsetDateTime) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) = now;
    }

    pub fn set_iso(&self, iso: &str) -> Result<()> {
        self.set(parse_clock_time(iso)?);
        Ok(())
    }

    /// Moves the clock by `by` (back when negative); a time outside what the clock can
    /// hold is INVALID_ARGUMENT and leaves it where it was.
    pub fn advance(&self, by: Duration) -> Result<()> {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now = now.checked_add(by).filter(|t| t.year().abs() <= 9999).ok_or_else(|| {
            BillingError::invalid(
                "clock",
                format!("advancing {} by {by} leaves the years 0000 to 9999", time_util::iso(*now)),
            )
        })?;
        Ok(())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn parse_clock_time(iso: &str) -> Result<OffsetDateTime> {
    time_util::parse_iso(iso)
        .ok_or_else(|| BillingError::invalid("clock", format!("expected an RFC 3339 time, got `{iso}`")))
}
