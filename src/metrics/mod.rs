//! Prometheus metrics, named exactly as in the contract (dashboards and alert rules
//! depend on the names and labels).
//!
//! Label sets stay bounded: `endpoint` comes from config or the registry (an
//! endpoint's series go with it), `event` from the mapping table (names a `{n}` template
//! makes of subject tokens up to a bound, see [`OTHER_EVENT`]), `outcome`/`status` from
//! fixed lists. Per-endpoint children are resolved once so the delivery path does not
//! hash label values for them.

mod endpoint;

use prometheus::core::Collector;

use self::endpoint::EventLabels;
pub use self::endpoint::{EndpointChildren, EndpointMetrics, OTHER_EVENT};
use prometheus::{
    CounterVec, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Attempt latency buckets: 5 ms … 30 s.
const ATTEMPT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// End-to-end includes queueing and retries, so it reaches from loopback latency to
/// the longest retry delays.
const E2E_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 1800.0, 7200.0,
];

/// Ingress latency buckets, request in → answer out (the JetStream publish ack
/// included): 0.5 ms … 10 s.
const INGRESS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The `outcome` label of `natshook_ingress_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngressOutcome {
    /// Verified and stored (publish acked).
    Stored,
    /// Verified; JetStream already held this sender id (a provider retry).
    Duplicate,
    /// Missing or bad signature, or a stale timestamp.
    Unauthorized,
    TooLarge,
    /// Verified, but the subject could not be made from it (missing or unusable value).
    BadRequest,
    MethodNotAllowed,
    /// JetStream could not store it (down, slow, no stream): answered 503.
    Unavailable,
    /// No route has this path (dedicated ingress listener only).
    NotFound,
}

/// Every `outcome` label, in [`IngressOutcome::index`] order.
const INGRESS_OUTCOMES: [&str; 8] = [
    "stored",
    "duplicate",
    "unauthorized",
    "too_large",
    "bad_request",
    "method_not_allowed",
    "unavailable",
    "not_found",
];

impl IngressOutcome {
    fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        INGRESS_OUTCOMES[self.index()]
    }
}

/// `route` label for requests to a path no ingress route has: one fixed value keeps
/// the label set bounded whatever scanners try.
pub const INGRESS_UNMATCHED_ROUTE: &str = "unmatched";

/// Final outcome of one delivery (attempt) of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Retry,
    DeadLetter,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Retry => "retry",
            Outcome::DeadLetter => "dead_letter",
        }
    }
}

/// The `status` label of `natshook_delivery_attempts_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptStatus {
    Class(u16),
    Timeout,
    ConnectError,
}

/// Every `status` label, in [`AttemptStatus::index`] order.
const ATTEMPT_LABELS: [&str; 6] = ["2xx", "3xx", "4xx", "5xx", "timeout", "connect_error"];

impl AttemptStatus {
    fn index(self) -> usize {
        match self {
            AttemptStatus::Class(c) => match c / 100 {
                2 => 0,
                3 => 1,
                4 => 2,
                _ => 3,
            },
            AttemptStatus::Timeout => 4,
            AttemptStatus::ConnectError => 5,
        }
    }

    pub fn label(self) -> &'static str {
        ATTEMPT_LABELS[self.index()]
    }
}

/// All process metrics: a handle, cloned into every endpoint's metrics and worker, so
/// a clone is one pointer, not one per family.
#[derive(Clone)]
pub struct Metrics(std::sync::Arc<Families>);

impl std::ops::Deref for Metrics {
    type Target = Families;

    fn deref(&self) -> &Families {
        &self.0
    }
}

/// The metric families behind [`Metrics`].
pub struct Families {
    registry: Registry,
    deliveries: IntCounterVec,
    attempts: IntCounterVec,
    duration: HistogramVec,
    end_to_end: HistogramVec,
    paused: IntGaugeVec,
    consecutive_failures: IntGaugeVec,
    inflight: IntGaugeVec,
    pending: IntGaugeVec,
    dead_letters: IntCounterVec,
    rate_limit_wait: CounterVec,
    filtered: IntCounterVec,
    pub unmapped: IntCounter,
    pub nats_connected: IntGauge,
    /// Deliveries in flight over all endpoints, against `inflight_limit`.
    pub inflight_total: IntGauge,
    /// `[delivery] max_inflight`.
    pub inflight_limit: IntGauge,
    ingress_requests: IntCounterVec,
    ingress_duration: HistogramVec,
    /// Registered only when `[tracing]` is on (see [`Metrics::tracing_spans_dropped`]).
    tracing_dropped: std::sync::Arc<std::sync::OnceLock<IntCounterVec>>,
    /// Registered only with `[delivery] fan_out` (see [`Metrics::fanout_pending`]).
    fanout_pending: std::sync::OnceLock<IntGauge>,
    event_labels: std::sync::Mutex<EventLabels>,
    /// Registered only with `[registry]` (see [`Metrics::registry_unserved`]).
    registry_unserved: std::sync::OnceLock<IntGauge>,
    /// Registered only by `natshook run` with a config file (see
    /// [`Metrics::config_reload_successful`]).
    config_reload: std::sync::OnceLock<IntGauge>,
}

/// One ingress route's pre-resolved children.
#[derive(Clone)]
pub struct IngressRouteMetrics {
    route: String,
    requests: IntCounterVec,
    /// Indexed by [`IngressOutcome::index`]; created lazily except the two that alert
    /// rules watch, so only seen outcomes appear.
    children: std::sync::Arc<[std::sync::OnceLock<IntCounter>; 8]>,
    pub duration: Histogram,
}

impl IngressRouteMetrics {
    pub fn request(&self, outcome: IngressOutcome, took: std::time::Duration) {
        self.children[outcome.index()]
            .get_or_init(|| {
                self.requests
                    .with_label_values(&[self.route.as_str(), outcome.as_str()])
            })
            .inc();
        self.duration.observe(took.as_secs_f64());
    }
}

/// Registers `m` with `r`; the definitions are static, so a failure is a programming
/// error caught by the first test that builds [`Metrics`].
fn register<M: Collector + Clone + 'static>(r: &Registry, m: M) -> M {
    r.register(Box::new(m.clone()))
        .expect("metric registered once");
    m
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    register(r, c)
}

fn gauge_vec(r: &Registry, name: &str, help: &str) -> IntGaugeVec {
    let g =
        IntGaugeVec::new(Opts::new(name, help), &["endpoint"]).expect("static metric definition");
    register(r, g)
}

fn histogram_vec(r: &Registry, name: &str, help: &str, buckets: &[f64]) -> HistogramVec {
    labelled_histogram_vec(r, name, help, buckets, "endpoint")
}

fn labelled_histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
    label: &str,
) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        &[label],
    )
    .expect("static metric definition");
    register(r, h)
}

/// The process-wide families: `natshook_unmapped_messages_total`,
/// `natshook_nats_connected`, and `natshook_build_info` (set to 1 here).
fn process_families(r: &Registry) -> (IntCounter, IntGauge) {
    let unmapped = IntCounter::new(
        "natshook_unmapped_messages_total",
        "Messages on a subject no [[events]] mapping matches.",
    )
    .expect("static metric definition");
    let nats_connected = IntGauge::new("natshook_nats_connected", "1 when connected to NATS.")
        .expect("static metric definition");
    let build_info = IntGaugeVec::new(
        Opts::new("natshook_build_info", "Build information; always 1."),
        &["version"],
    )
    .expect("static metric definition");
    register(r, build_info)
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    (register(r, unmapped), register(r, nats_connected))
}

/// The process-wide bound on deliveries in flight: its use and its size.
fn inflight_families(r: &Registry) -> (IntGauge, IntGauge) {
    let total = IntGauge::new(
        "natshook_inflight_total",
        "Deliveries in flight over all endpoints (bounded by natshook_inflight_limit).",
    )
    .expect("static metric definition");
    let limit = IntGauge::new(
        "natshook_inflight_limit",
        "The process-wide bound on deliveries in flight ([delivery] max_inflight).",
    )
    .expect("static metric definition");
    (register(r, total), register(r, limit))
}

/// The ingress families: requests by route and outcome, and their duration.
fn ingress_families(r: &Registry) -> (IntCounterVec, HistogramVec) {
    let requests = counter_vec(
        r,
        "natshook_ingress_requests_total",
        "Incoming webhook requests by route (the configured path) and outcome.",
        &["route", "outcome"],
    );
    let duration = labelled_histogram_vec(
        r,
        "natshook_ingress_duration_seconds",
        "From an incoming webhook request to natshook's answer (publish ack included).",
        INGRESS_BUCKETS,
        "route",
    );
    (requests, duration)
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let deliveries = counter_vec(
            &r,
            "natshook_deliveries_total",
            "Deliveries by final outcome of the attempt: success, retry or dead_letter.",
            &["endpoint", "event", "outcome"],
        );
        let attempts = counter_vec(
            &r,
            "natshook_delivery_attempts_total",
            "HTTP attempts by response class, timeout or connect_error.",
            &["endpoint", "status"],
        );
        let dead_letters = counter_vec(
            &r,
            "natshook_dead_letters_total",
            "Messages written to the dead-letter stream.",
            &["endpoint"],
        );
        let filtered = counter_vec(
            &r,
            "natshook_filtered_messages_total",
            "Messages acked without a request because the endpoint's payload filter did not match.",
            &["endpoint"],
        );
        let duration = histogram_vec(
            &r,
            "natshook_delivery_duration_seconds",
            "Duration of one HTTP attempt.",
            ATTEMPT_BUCKETS,
        );
        let end_to_end = histogram_vec(
            &r,
            "natshook_end_to_end_seconds",
            "From NATS publish to the receiver's 2xx.",
            E2E_BUCKETS,
        );
        let paused = gauge_vec(
            &r,
            "natshook_endpoint_paused",
            "1 while the endpoint is paused.",
        );
        let consecutive_failures = gauge_vec(
            &r,
            "natshook_endpoint_consecutive_failures",
            "Failed attempts since the last success.",
        );
        let inflight = gauge_vec(&r, "natshook_inflight", "Deliveries in flight.");
        let pending = gauge_vec(
            &r,
            "natshook_consumer_pending",
            "Messages not yet delivered (consumer lag).",
        );
        let rate_limit_wait = CounterVec::new(
            Opts::new(
                "natshook_rate_limit_wait_seconds_total",
                "Time fetched messages waited for a rate_limit token before their attempt.",
            ),
            &["endpoint"],
        )
        .expect("static metric definition");
        let rate_limit_wait = register(&r, rate_limit_wait);
        let (unmapped, nats_connected) = process_families(&r);
        let (inflight_total, inflight_limit) = inflight_families(&r);
        let (ingress_requests, ingress_duration) = ingress_families(&r);
        Self(std::sync::Arc::new(Families {
            registry: r,
            deliveries,
            attempts,
            duration,
            end_to_end,
            paused,
            consecutive_failures,
            inflight,
            pending,
            dead_letters,
            rate_limit_wait,
            filtered,
            unmapped,
            nats_connected,
            inflight_total,
            inflight_limit,
            ingress_requests,
            ingress_duration,
            tracing_dropped: Default::default(),
            fanout_pending: Default::default(),
            event_labels: Default::default(),
            registry_unserved: Default::default(),
            config_reload: Default::default(),
        }))
    }

    /// `natshook_fanout_pending`: source messages the fan-out consumer has not yet
    /// copied to every endpoint that delivers them. Each endpoint's
    /// `natshook_consumer_pending` counts only the copies it holds, so a fan-out that
    /// falls behind shows here and nowhere else. Registered on first use, so a natshook
    /// without `fan_out` does not show it.
    pub fn fanout_pending(&self) -> &IntGauge {
        self.gauge_on_first_use(
            &self.fanout_pending,
            "natshook_fanout_pending",
            "Source messages not yet copied to every endpoint ([delivery] fan_out).",
        )
    }

    /// `natshook_registry_unserved_endpoints`: runtime endpoints stored in the registry
    /// that this process does not serve, because the record no longer passes
    /// validation against its config (a mapping or default changed since, say). The
    /// admin API shows why for each; this is what an alert watches. Registered on first
    /// use, so a natshook without `[registry]` does not show it.
    pub fn registry_unserved(&self) -> &IntGauge {
        self.gauge_on_first_use(
            &self.registry_unserved,
            "natshook_registry_unserved_endpoints",
            "Runtime endpoints in the registry this process does not serve (invalid against its config).",
        )
    }

    /// `natshook_config_last_reload_successful`: 0 while the config file on disk is
    /// one the process refused (it keeps running the config it had), 1 once the file
    /// it runs is the one on disk. A refused reload otherwise shows only in old log
    /// lines, while `natshook check` of the file may already pass. Registered by the
    /// config watcher, so a process without a config file does not show it.
    pub fn config_reload_successful(&self) -> &IntGauge {
        self.gauge_on_first_use(
            &self.config_reload,
            "natshook_config_last_reload_successful",
            "0 while the config file on disk is refused and the one loaded before still runs, else 1.",
        )
    }

    fn gauge_on_first_use<'a>(
        &'a self,
        slot: &'a std::sync::OnceLock<IntGauge>,
        name: &str,
        help: &str,
    ) -> &'a IntGauge {
        slot.get_or_init(|| {
            let g = IntGauge::new(name, help).expect("static metric definition");
            register(&self.registry, g)
        })
    }

    /// `natshook_tracing_spans_dropped_total{reason}`: trace spans lost because the
    /// export queue was full (`queue_full`) or their export failed (`export_failed`).
    /// Registered on first use, so a natshook without `[tracing]` does not show it.
    pub fn tracing_spans_dropped(&self) -> IntCounterVec {
        self.tracing_dropped
            .get_or_init(|| {
                let c = counter_vec(
                    &self.registry,
                    "natshook_tracing_spans_dropped_total",
                    "Trace spans lost: export queue full or export failed.",
                    &["reason"],
                );
                for reason in ["queue_full", "export_failed"] {
                    let _ = c.with_label_values(&[reason]);
                }
                c
            })
            .clone()
    }

    /// Children for the ingress route `route`; `stored` and `unauthorized` exist (at 0)
    /// from the start, so alert rules see a rise from the first failure on.
    pub fn ingress_route(&self, route: &str) -> IngressRouteMetrics {
        self.ingress_children(
            route,
            &[IngressOutcome::Stored, IngressOutcome::Unauthorized],
        )
    }

    /// Children for the paths no route has (`route="unmatched"`), which only ever
    /// answer `not_found`: that outcome alone exists, from the first such request.
    pub fn ingress_unmatched(&self) -> IngressRouteMetrics {
        self.ingress_children(INGRESS_UNMATCHED_ROUTE, &[IngressOutcome::NotFound])
    }

    fn ingress_children(&self, route: &str, at_zero: &[IngressOutcome]) -> IngressRouteMetrics {
        let children: [std::sync::OnceLock<IntCounter>; 8] = Default::default();
        for &o in at_zero {
            let _ = children[o.index()].set(
                self.ingress_requests
                    .with_label_values(&[route, o.as_str()]),
            );
        }
        IngressRouteMetrics {
            route: route.to_string(),
            requests: self.ingress_requests.clone(),
            children: std::sync::Arc::new(children),
            duration: self.ingress_duration.with_label_values(&[route]),
        }
    }

    /// Children for `endpoint`, created at first use (see [`EndpointMetrics::create`]).
    pub fn endpoint(&self, endpoint: &str) -> EndpointMetrics {
        EndpointMetrics::new(endpoint, self.clone())
    }

    /// Removes every series of `endpoint`, once it is gone (deleted, or removed from
    /// the file) and drained. Without it a platform whose customers create and delete
    /// endpoints grows its scrape for good, and an endpoint deleted while paused keeps
    /// `natshook_endpoint_paused` at 1, and the alert on it firing.
    pub fn forget_endpoint(&self, endpoint: &str) {
        // An error means the series was never created: nothing to remove.
        for event in self.take_event_labels(endpoint) {
            for outcome in [Outcome::Success, Outcome::Retry, Outcome::DeadLetter] {
                let _ = self
                    .deliveries
                    .remove_label_values(&[endpoint, &event, outcome.as_str()]);
            }
        }
        for status in ATTEMPT_LABELS {
            let _ = self.attempts.remove_label_values(&[endpoint, status]);
        }
        let one = [endpoint];
        let _ = self.duration.remove_label_values(&one);
        let _ = self.end_to_end.remove_label_values(&one);
        for gauge in [
            &self.paused,
            &self.consecutive_failures,
            &self.inflight,
            &self.pending,
        ] {
            let _ = gauge.remove_label_values(&one);
        }
        let _ = self.dead_letters.remove_label_values(&one);
        let _ = self.filtered.remove_label_values(&one);
        let _ = self.rate_limit_wait.remove_label_values(&one);
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 * 1024);
        // Encoding into a Vec only fails on invalid metric families, which the
        // registry prevents.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
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
    fn ingress_series_are_named_as_in_the_contract() {
        let m = Metrics::new();
        let r = m.ingress_route("/in/sendgrid");
        r.request(
            IngressOutcome::Duplicate,
            std::time::Duration::from_millis(2),
        );
        let text = String::from_utf8(m.render()).unwrap();
        for needle in [
            "natshook_ingress_requests_total{outcome=\"stored\",route=\"/in/sendgrid\"} 0",
            "natshook_ingress_requests_total{outcome=\"unauthorized\",route=\"/in/sendgrid\"} 0",
            "natshook_ingress_requests_total{outcome=\"duplicate\",route=\"/in/sendgrid\"} 1",
            "natshook_ingress_duration_seconds_count{route=\"/in/sendgrid\"} 1",
        ] {
            assert!(text.contains(needle), "missing {needle}\n{text}");
        }
        assert!(!text.contains("outcome=\"too_large\""));
    }

    #[test]
    fn contract_names_are_exposed() {
        let m = Metrics::new();
        let e = m.endpoint("crm");
        e.delivery("lead.created", false, Outcome::Success);
        e.attempt(AttemptStatus::Class(503));
        e.attempt(AttemptStatus::Timeout);
        let text = String::from_utf8(m.render()).unwrap();
        for needle in [
            "natshook_deliveries_total{endpoint=\"crm\",event=\"lead.created\",outcome=\"success\"} 1",
            "natshook_delivery_attempts_total{endpoint=\"crm\",status=\"5xx\"} 1",
            "natshook_delivery_attempts_total{endpoint=\"crm\",status=\"timeout\"} 1",
            "natshook_delivery_duration_seconds_bucket{endpoint=\"crm\",le=\"0.005\"} 0",
            "natshook_end_to_end_seconds_count{endpoint=\"crm\"} 0",
            "natshook_endpoint_paused{endpoint=\"crm\"} 0",
            "natshook_endpoint_consecutive_failures{endpoint=\"crm\"} 0",
            "natshook_inflight{endpoint=\"crm\"} 0",
            "natshook_consumer_pending{endpoint=\"crm\"} 0",
            "natshook_dead_letters_total{endpoint=\"crm\"} 0",
            "natshook_rate_limit_wait_seconds_total{endpoint=\"crm\"} 0",
            "natshook_filtered_messages_total{endpoint=\"crm\"} 0",
            "natshook_unmapped_messages_total 0",
            "natshook_nats_connected 0",
            "natshook_build_info{version=\"",
        ] {
            assert!(text.contains(needle), "missing {needle}\n{text}");
        }
    }
}
