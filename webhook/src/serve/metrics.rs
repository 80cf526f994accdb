//! Prometheus metrics, served in text format on the health port.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// What became of one request to `/mutate`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    /// A gVisor pod, and the reply carries a patch.
    patched,
    /// A gVisor pod that needed no change.
    unchanged,
    /// Not a gVisor pod, not a Pod CREATE: allowed untouched.
    skipped,
    /// An AdmissionReview whose object could not be decoded: replied with the uid and the reason.
    decode_error,
    /// The mutation panicked: replied with the uid and an error.
    internal_error,
    /// Not an AdmissionReview at all (HTTP 400).
    bad_request,
    /// Wrong content type (HTTP 415).
    unsupported_media_type,
    /// Body over the limit (HTTP 413).
    too_large,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: Outcome,
}

/// Which listening port.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Port {
    webhook,
    health,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PortLabels {
    pub port: Port,
}

pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<OutcomeLabels, Counter>,
    pub latency: Histogram,
    pub in_flight: Gauge,
    pub cert_not_after: Gauge,
    pub cert_reloads: Counter,
    pub cert_reload_failures: Counter,
    pub gvisor_runtime_classes: Gauge,
    pub connections_accepted: Family<PortLabels, Counter>,
    pub connections_open: Family<PortLabels, Gauge>,
    pub review_bytes_reserved: Gauge,
    /// `requests` resolved once per outcome: counting a review is then one atomic add, no lock or hash.
    by_outcome: [Counter; Outcome::ALL.len()],
}

impl Outcome {
    const ALL: [Outcome; 8] = [
        Outcome::patched,
        Outcome::unchanged,
        Outcome::skipped,
        Outcome::decode_error,
        Outcome::internal_error,
        Outcome::bad_request,
        Outcome::unsupported_media_type,
        Outcome::too_large,
    ];
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mount_hints_webhook");
        let requests = Family::<OutcomeLabels, Counter>::default();
        registry.register("admission_requests", "Admission requests by outcome", requests.clone());
        // 50 us .. ~0.8 s: the mutation itself takes tens of microseconds, so the low buckets matter.
        let latency = Histogram::new(exponential_buckets(50e-6, 2.0, 15));
        registry.register("admission_duration_seconds", "Time to answer one admission request", latency.clone());
        let in_flight = Gauge::default();
        registry.register("admission_in_flight_requests", "Admission requests being answered", in_flight.clone());
        let cert_not_after = Gauge::default();
        registry.register(
            "certificate_not_after_timestamp_seconds",
            "Expiry of the serving certificate, as Unix time",
            cert_not_after.clone(),
        );
        let cert_reloads = Counter::default();
        registry.register("certificate_reloads", "Serving certificate reloads", cert_reloads.clone());
        let cert_reload_failures = Counter::default();
        registry.register(
            "certificate_reload_failures",
            "Changed certificate files that could not be loaded",
            cert_reload_failures.clone(),
        );
        let gvisor_runtime_classes = Gauge::default();
        registry.register(
            "gvisor_runtime_classes",
            "Runtime class names treated as gVisor",
            gvisor_runtime_classes.clone(),
        );
        let connections_accepted = Family::<PortLabels, Counter>::default();
        registry.register(
            "connections_accepted",
            "Connections accepted, by port (including those still waiting for a slot)",
            connections_accepted.clone(),
        );
        let connections_open = Family::<PortLabels, Gauge>::default();
        registry.register(
            "connections_open",
            "Connections holding a slot, by port (capped by --max-connections on the webhook port)",
            connections_open.clone(),
        );
        let review_bytes_reserved = Gauge::default();
        registry.register(
            "review_bytes_reserved",
            "Memory reserved by reviews in flight (capped by --max-bytes-in-flight)",
            review_bytes_reserved.clone(),
        );
        let by_outcome = Outcome::ALL.map(|outcome| requests.get_or_create(&OutcomeLabels { outcome }).clone());
        Metrics {
            registry,
            by_outcome,
            requests,
            latency,
            in_flight,
            cert_not_after,
            cert_reloads,
            cert_reload_failures,
            gvisor_runtime_classes,
            connections_accepted,
            connections_open,
            review_bytes_reserved,
        }
    }

    pub fn count(&self, outcome: Outcome) {
        self.by_outcome[outcome as usize].inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_outcome_counts_under_its_own_label() {
        let metrics = Metrics::new();
        for (i, outcome) in Outcome::ALL.into_iter().enumerate() {
            for _ in 0..=i {
                metrics.count(outcome);
            }
        }
        for (i, outcome) in Outcome::ALL.into_iter().enumerate() {
            assert_eq!(metrics.requests.get_or_create(&OutcomeLabels { outcome }).get(), i as u64 + 1, "{outcome:?}");
        }
    }
}
