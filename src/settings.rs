//! Settings the config owns and the parts below it read. They live in this leaf so
//! that `config` imports nothing from the modules that use them.

use std::time::Duration;

/// OpenTelemetry export of delivery attempts (`[tracing]`).
#[derive(Debug, Clone, PartialEq)]
pub struct TracingSettings {
    /// The collector's OTLP/HTTP traces URL: `otlp_endpoint` plus `/v1/traces`.
    pub traces_url: http::Uri,
    pub service_name: String,
    /// The share of new traces (messages without a trace context) that are recorded.
    pub sample_ratio: f64,
    /// The longest one export may take, retries included.
    pub timeout: Duration,
    /// Finished spans waiting for export at most.
    pub max_queue: usize,
}

/// The delivery log's limits (`[delivery_log]`).
#[derive(Debug, Clone, PartialEq)]
pub struct LogSettings {
    pub max_per_endpoint: i64,
    pub max_age: Duration,
    /// Successful attempts recorded per endpoint and second at most; failed attempts
    /// are always recorded. Storing every success at thousands per second would cost
    /// nats-server as much as the deliveries themselves.
    pub max_successes_per_second: u32,
    /// The same over all endpoints of the process: with a thousand busy endpoints the
    /// per-endpoint cap alone would still log every success.
    pub max_successes_per_second_total: u32,
}
