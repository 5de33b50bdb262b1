//! The analytics queries, one text for both backends: `$n` parameters (SQLite reads them
//! as named parameters bound in order), `CAST(... AS BIGINT)` for sums, no `::` casts.

pub(super) const INSERT_PERIOD: &str =
    "INSERT INTO purchased_periods (user_id, payment_id, plan_code, kind, starts_at, \
     ends_at, weight, monthly_micros, currency, network, provider, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

pub(super) const USER_PERIODS: &str = "SELECT user_id, payment_id, plan_code, kind, starts_at, ends_at, weight, \
     monthly_micros, currency, network, provider, created_at FROM purchased_periods WHERE user_id = $1 ORDER BY id";

pub(super) const INSERT_MONEY: &str = "INSERT INTO money_movements (user_id, payment_id, kind, micros, currency, \
     provider, network, plan_code, package_code, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

/// Per plan, currency and network: the periods in force at `$1` and their monthly value.
pub(super) const SEGMENTS_AT: &str = "SELECT plan_code, currency, network, CAST(SUM(weight) AS BIGINT), \
     CAST(SUM(monthly_micros) AS BIGINT) FROM purchased_periods WHERE starts_at <= $1 AND ends_at > $1 \
     GROUP BY plan_code, currency, network HAVING SUM(weight) > 0 ORDER BY plan_code, currency, network";

/// Per kind: the periods bought in `[$1, $2)`.
pub(super) const PERIOD_COUNTS: &str = "SELECT kind, COUNT(*) FROM purchased_periods \
     WHERE created_at >= $1 AND created_at < $2 AND kind IN ('new', 'renewal', 'reactivation') \
     GROUP BY kind ORDER BY kind";

/// Per currency: the subscriptions that ended in `($1, $2]` with nobody paying on, and the
/// monthly value they took with them (the `churn` rows).
pub(super) const CHURNED: &str = "SELECT currency, COUNT(*), CAST(SUM(monthly_micros) AS BIGINT) \
     FROM purchased_periods WHERE kind = 'churn' AND created_at > $1 AND created_at <= $2 \
     GROUP BY currency ORDER BY currency";

/// Money in `[$2, $3)`, summed per bucket of `$1` milliseconds, currency, kind and provider.
/// (Each `$n` first appears in order: SQLite numbers them as they come.)
pub(super) const MONEY_BUCKETS: &str = "SELECT (at / $1) * $1 AS bucket, currency, kind, provider, \
     CAST(SUM(micros) AS BIGINT), COUNT(*) FROM money_movements WHERE at >= $2 AND at < $3 \
     GROUP BY bucket, currency, kind, provider ORDER BY bucket, currency, kind, provider";

/// The columns a money movement is read by, its id first.
macro_rules! money_columns {
    () => {
        "id, user_id, payment_id, kind, micros, currency, provider, network, plan_code, package_code, at"
    };
}

/// Money movements matching the filter, with ids below `$9`, newest first, at most `$10`.
pub(super) const MONEY_RECORDS: &str = concat!(
    "SELECT ",
    money_columns!(),
    " FROM money_movements \
     WHERE (CAST($1 AS TEXT) IS NULL OR kind = $1) AND (CAST($2 AS TEXT) IS NULL OR provider = $2) \
     AND (CAST($3 AS TEXT) IS NULL OR network = $3) AND (CAST($4 AS TEXT) IS NULL OR plan_code = $4) \
     AND at >= $5 AND at < $6 AND micros >= $7 AND micros <= $8 AND id < $9 ORDER BY id DESC LIMIT $10"
);

/// Every money movement of user `$1`, oldest first.
pub(super) const USER_MONEY: &str =
    concat!("SELECT ", money_columns!(), " FROM money_movements WHERE user_id = $1 ORDER BY id");
