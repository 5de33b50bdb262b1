//! What an engine handle counts for Prometheus (issue 18): charges by source, refusals by
//! code, payments by outcome and provider, webhook outcomes, how long writes take (the
//! lock wait is most of it under contention) and how many found the store busy, holds,
//! and quota checks. Counted in this process, since it started; encoded by the
//! `prometheus-client` crate in the OpenMetrics text format. Labels are the engine's own
//! `&'static` names (a metric's name aside), so counting a charge allocates nothing.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Source {
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Refusal {
    call: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PaymentLabels {
    status: &'static str,
    provider: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    provider: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HoldLabels {
    event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuotaLabels {
    metric: String,
    outcome: &'static str,
}

/// The counters of one engine handle.
pub(crate) struct Metrics {
    registry: Registry,
    charges: Family<Source, Counter>,
    refusals: Family<Refusal, Counter>,
    payments: Family<PaymentLabels, Counter>,
    webhooks: Family<WebhookLabels, Counter>,
    charge_seconds: Histogram,
    busy: Counter,
    holds: Family<HoldLabels, Counter>,
    quota: Family<QuotaLabels, Counter>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("billing");
        let metrics = Self {
            charges: Family::default(),
            refusals: Family::default(),
            payments: Family::default(),
            webhooks: Family::default(),
            // 50 µs to about 3 s.
            charge_seconds: Histogram::new(exponential_buckets(0.00005, 3.0, 11)),
            busy: Counter::default(),
            holds: Family::default(),
            quota: Family::default(),
            registry: Registry::default(),
        };
        registry.register("charges", "Charges by the source that paid", metrics.charges.clone());
        registry.register("refusals", "Refused calls by call and error code", metrics.refusals.clone());
        registry.register("payments", "Payments that ended, by outcome and provider", metrics.payments.clone());
        registry.register("webhook_outcomes", "Provider notifications by outcome", metrics.webhooks.clone());
        registry.register(
            "charge_seconds",
            "How long a charge took, its wait for the user's lock included",
            metrics.charge_seconds.clone(),
        );
        registry.register("store_busy", "Writes that found the store locked past the timeout", metrics.busy.clone());
        registry.register("holds", "Holds placed, captured, released and expired", metrics.holds.clone());
        registry.register(
            "quota_checks",
            "Quota checks and tracked usage by metric and outcome",
            metrics.quota.clone(),
        );
        Self { registry, ..metrics }
    }

    pub(crate) fn charged(&self, source: &'static str, seconds: f64) {
        self.charges.get_or_create(&Source { source }).inc();
        self.charge_seconds.observe(seconds);
    }

    pub(crate) fn refused(&self, call: &'static str, code: &'static str) {
        self.refusals.get_or_create(&Refusal { call, code }).inc();
        if code == "BUSY" {
            self.busy.inc();
        }
    }

    pub(crate) fn payment(&self, status: &'static str, provider: &'static str) {
        self.payments.get_or_create(&PaymentLabels { status, provider }).inc();
    }

    pub(crate) fn webhook(&self, provider: &'static str, outcome: &'static str) {
        self.webhooks.get_or_create(&WebhookLabels { provider, outcome }).inc();
    }

    pub(crate) fn hold(&self, event: &'static str) {
        self.holds.get_or_create(&HoldLabels { event }).inc();
    }

    pub(crate) fn quota(&self, metric: &str, outcome: &'static str) {
        self.quota.get_or_create(&QuotaLabels { metric: metric.to_owned(), outcome }).inc();
    }

    /// The OpenMetrics text exposition.
    pub(crate) fn text(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String never fails");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_appear_in_the_exposition_with_their_labels() {
        let metrics = Metrics::new();
        metrics.charged("credits", 0.001);
        metrics.charged("credits", 0.002);
        metrics.refused("charge", "BUSY");
        let text = metrics.text();
        assert!(text.contains(r#"billing_charges_total{source="credits"} 2"#), "{text}");
        assert!(text.contains(r#"billing_refusals_total{call="charge",code="BUSY"} 1"#), "{text}");
        assert!(text.contains("billing_store_busy_total 1"), "{text}");
        assert!(text.contains("billing_charge_seconds_count 2"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
