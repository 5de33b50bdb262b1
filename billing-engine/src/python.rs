//! The engine's result types as Python classes, for the PyO3 binding (the `python`
//! feature): each is a frozen class with a read-only attribute per field, so a field
//! added or renamed here is there in Python at once. Money arrives as `decimal.Decimal`,
//! times as aware `datetime`s, days as `date`s, enums as their names (`"credits"`), JSON
//! values as Python values; `to_dict()` gives the JSON shape (decimals as strings, except
//! the seed 003 number fields).

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;
use time::{Date, OffsetDateTime};

use crate::analytics::{CurrencyAmount, Overview, PaymentCount, RevenuePoint, Segment};
use crate::audit::{AuditOutcome, AuditRecord};
use crate::billing::{
    CryptoCheckout, CryptoReconcileReport, CryptoWebhookOutcome, DeliveryOutcome, DeliveryReport, MoneyMovement,
};
use crate::events::{Event, EventType};
use crate::lots::{CreditLot, ExpiringCredits, LotCategory, LotSource};
use crate::payment::CryptoHistory;
use crate::receipt::CustomerContact;
use crate::usage::{
    Entitlement, Entitlements, HeldUsage, Hold, HoldStatus, MetricCheck, UsageAmount, UsageCheck, UsageRecord,
    UsageSummary, UsageTotal,
};
use crate::{
    ledger::AllowancePeriod, BillingMe, BillingState, CardAction, CardDetails, Charge, ChargeSource, CreatedPayment,
    DueReport, EntryKind, IntegrityReport, LedgerEntry, Mismatch, PaidPeriod, Payment, PaymentHistory,
    PaymentHistoryItem, PaymentMethodView, PaymentStatus, PlanCard, Purpose, Quote, Refund, SubscriptionDetails,
    SubscriptionPlan, WebhookOutcome, WebhookStatus,
};

/// Enums cross as their names (`as_str`, the names they have in JSON too).
macro_rules! enum_as_name {
    ($($t:ty),* $(,)?) => {$(
        impl<'py> IntoPyObject<'py> for $t {
            type Target = PyString;
            type Output = Bound<'py, PyString>;
            type Error = std::convert::Infallible;

            fn into_pyobject(self, py: Python<'py>) -> Result<Self::Output, Self::Error> {
                Ok(PyString::new(py, self.as_str()))
            }
        }

        impl<'py> IntoPyObject<'py> for &$t {
            type Target = PyString;
            type Output = Bound<'py, PyString>;
            type Error = std::convert::Infallible;

            fn into_pyobject(self, py: Python<'py>) -> Result<Self::Output, Self::Error> {
                (*self).into_pyobject(py)
            }
        }
    )*};
}

enum_as_name!(
    ChargeSource,
    EntryKind,
    PaymentStatus,
    Purpose,
    CardAction,
    WebhookStatus,
    HoldStatus,
    LotCategory,
    LotSource,
    EventType,
    AuditOutcome,
    DeliveryOutcome
);

/// `to_dict()`, `repr()` and pickling for each class.
macro_rules! python_methods {
    ($($t:ty),* $(,)?) => {$(
        #[pymethods]
        impl $t {
            /// The JSON shape: decimals as strings (the seed 003 number fields as numbers),
            /// times as ISO 8601 UTC strings; ready for `json.dumps`.
            fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
                to_dict(py, self)
            }

            fn __repr__(&self) -> String {
                format!("{self:?}")
            }

            fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, (&'static str, String))> {
                reduce(py, stringify!($t), self)
            }
        }
    )*};
}

/// Calls `$m!` with every result class whose attributes `get_all` gives, after `$extra`:
/// the one list of them, for their methods and for unpickling.
macro_rules! plain_results {
    ($m:ident $(, $extra:ident)*) => {
        $m! {
            $($extra,)*
            AllowancePeriod,
            BillingMe,
            BillingState,
            CardDetails,
            Charge,
            CreatedPayment,
            CreditLot,
            CryptoCheckout,
            CryptoHistory,
            CryptoReconcileReport,
            CryptoWebhookOutcome,
            CurrencyAmount,
            CustomerContact,
            DeliveryReport,
            DueReport,
            Entitlement,
            Entitlements,
            ExpiringCredits,
            HeldUsage,
            Hold,
            IntegrityReport,
            MetricCheck,
            Mismatch,
            MoneyMovement,
            Overview,
            PaidPeriod,
            PaymentCount,
            PaymentHistory,
            PaymentHistoryItem,
            PaymentMethodView,
            PlanCard,
            Quote,
            Refund,
            RevenuePoint,
            Segment,
            SubscriptionDetails,
            SubscriptionPlan,
            UsageAmount,
            UsageCheck,
            UsageSummary,
            UsageTotal,
            WebhookOutcome,
        }
    };
}

plain_results!(python_methods);

/// Attributes of the classes that hold JSON values, which `get_all` cannot give: one
/// getter per field (a field left out here is caught by the Python suite, which compares
/// every class's attributes with its `to_dict()` keys).
macro_rules! getters {
    ($t:ty { $($field:ident: $ty:ty),* $(,)? } json { $($json:ident),* $(,)? }) => {
        #[pymethods]
        impl $t {
            $(
                #[getter]
                fn $field(&self) -> $ty {
                    self.$field.clone()
                }
            )*
            $(
                #[getter]
                fn $json<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
                    self.$json.as_ref().map(|value| to_dict(py, value)).transpose()
                }
            )*

            fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
                to_dict(py, self)
            }

            fn __repr__(&self) -> String {
                format!("{self:?}")
            }

            fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, (&'static str, String))> {
                reduce(py, stringify!($t), self)
            }
        }
    };
}

getters!(LedgerEntry {
    id: i64,
    user_id: String,
    kind: EntryKind,
    source: Option<ChargeSource>,
    operation: Option<String>,
    credits_delta: Decimal,
    credits_balance_after: Decimal,
    ops_delta: i32,
    allowance: Option<AllowancePeriod>,
    op_day: Option<Date>,
    idempotency_key: Option<String>,
    reference: Option<String>,
    created_at: OffsetDateTime,
} json { metadata });

getters!(Payment {
    id: String,
    user_id: String,
    purpose: Purpose,
    plan_code: Option<String>,
    package_code: Option<String>,
    amount: Decimal,
    currency: String,
    credits: Option<Decimal>,
    description: String,
    status: PaymentStatus,
    provider_payment_id: Option<String>,
    provider_key: String,
    save_payment_method: bool,
    return_url: Option<String>,
    confirmation_url: Option<String>,
    renewal_of: Option<String>,
    refund_id: Option<String>,
    refunded_amount: Decimal,
    paid_period: Option<PaidPeriod>,
    idempotency_key: Option<String>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
    paid_at: Option<OffsetDateTime>,
} json { payload, crypto });

getters!(UsageRecord {
    id: i64,
    user_id: String,
    metric: String,
    amount: u64,
    model_id: Option<String>,
    chat_id: Option<String>,
    hold_id: Option<String>,
    at: OffsetDateTime,
    over_limit: bool,
    overage_credits: Decimal,
    replayed: bool,
} json { metadata });

/// An event's attributes are its JSON's keys, `type` among them.
#[pymethods]
impl Event {
    #[getter]
    fn event_id(&self) -> String {
        self.event_id.clone()
    }

    #[getter]
    #[pyo3(name = "type")]
    fn event_type(&self) -> EventType {
        self.event_type
    }

    #[getter]
    fn user_id(&self) -> String {
        self.user_id.clone()
    }

    #[getter]
    fn sequence(&self) -> i64 {
        self.sequence
    }

    #[getter]
    fn occurred_at(&self) -> OffsetDateTime {
        self.occurred_at
    }

    #[getter]
    fn payload<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &self.payload)
    }

    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_dict(py, self)
    }

    fn __repr__(&self) -> String {
        format!("{self:?}")
    }

    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, (&'static str, String))> {
        reduce(py, "Event", self)
    }
}

getters!(AuditRecord {
    id: i64,
    user_id: Option<String>,
    actor: String,
    action: String,
    target: Option<String>,
    outcome: AuditOutcome,
    reason: Option<String>,
    request_id: Option<String>,
    created_at: OffsetDateTime,
} json { before, after, error });

/// Pickles a result as its class's name and its JSON, which [`restore`] reads back: the
/// JSON is the engine's own (serde) form, exact for decimals and times.
fn reduce<'py>(
    py: Python<'py>,
    class: &'static str,
    value: &impl Serialize,
) -> PyResult<(Bound<'py, PyAny>, (&'static str, String))> {
    let json = serde_json::to_string(value).map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    let restore = py.import("billing_engine._native")?.getattr("_restore")?;
    Ok((restore, (class, json)))
}

/// Rebuilds a pickled result (see `__reduce__`): `class` is its Rust type's name.
#[pyfunction]
pub fn _restore(py: Python<'_>, class_name: &str, json: &str) -> PyResult<Py<PyAny>> {
    macro_rules! restore {
        ($($t:ident),* $(,)?) => {
            match class_name {
                $(stringify!($t) => {
                    let value: $t = serde_json::from_str(json)
                        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
                    Ok(Py::new(py, value)?.into_any())
                })*
                other => Err(pyo3::exceptions::PyValueError::new_err(format!("no result class `{other}`"))),
            }
        };
    }
    plain_results!(restore, AuditRecord, Event, LedgerEntry, Payment, UsageRecord)
}

fn to_dict<'py>(py: Python<'py>, value: &impl Serialize) -> PyResult<Bound<'py, PyAny>> {
    let value = serde_json::to_value(value).map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    json_to_py(py, &value)
}

/// A JSON value as Python values. A number is an `int` when it is whole, else a `float`,
/// as `json.loads` reads it.
fn json_to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(flag) => flag.into_pyobject(py)?.to_owned().into_any(),
        Value::Number(number) => match number.to_string().parse::<Decimal>() {
            Ok(exact) if exact.fract().is_zero() => exact.trunc().mantissa().into_pyobject(py)?.into_any(),
            _ => number.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any(),
        },
        Value::String(text) => PyString::new(py, text).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (key, item) in map {
                dict.set_item(key, json_to_py(py, item)?)?;
            }
            dict.into_any()
        }
    })
}
