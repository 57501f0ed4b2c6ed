//! Every default value of the config, in one place: what a key is when it is left
//! out. Validation reads them from here, and README's key tables list the same values
//! (a changed default changes both).

use std::time::Duration;

// [nats]
pub const NATS_URL: &str = "nats://127.0.0.1:4222";
pub const CONSUMER_PREFIX: &str = "natshook";
pub const CREATE_STREAM: bool = false;
/// Copies of each stream and bucket natshook creates (1 on a single server; 3 on a
/// three-node cluster so that losing a node loses nothing).
pub const REPLICAS: usize = 1;

// [http]
pub const HTTP_LISTEN: &str = "0.0.0.0:9464";

// [defaults] and [[endpoints]]
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The delays between attempts; `max_attempts` defaults to one more than it lists.
pub const RETRY_SCHEDULE: &[&str] = &["1s", "5s", "30s", "5m", "30m", "2h"];
pub const DISABLE_AFTER_FAILURES: u32 = 10;
pub const CONCURRENCY: u32 = 64;
pub const SIGNATURE_SCHEME: &str = "hex";
pub const SIGNATURE_HEADER: &str = "X-Webhook-Signature";
pub const ENVELOPE: &str = "standard";
/// The envelope field that carries a message's tenant: the name the contract's
/// `envelope_fields` example gives a tenant, so a receiver that got its tenant as a
/// static field gets the same body from a tenant mapping.
pub const TENANT_FIELD: &str = "organization_id";
pub const ORDERED: bool = false;
pub const MAX_BODY: usize = 1024 * 1024;
pub const PROBE_INTERVAL: Duration = Duration::from_secs(30);
pub const PROBE_MAX_INTERVAL: Duration = Duration::from_secs(600);
/// `rate_limit`: none, so deliveries are bounded by `concurrency` alone.
pub const RATE_LIMIT: Option<super::model::Rate> = None;
pub const ALLOW_HTTP: bool = false;
pub const ALLOW_PRIVATE: bool = false;

// [delivery]
/// Deliveries in flight over all endpoints, shared fairly between the busy ones. Each
/// costs ~35 KiB over HTTP/1.1 (its connection and buffers), so this bound, not the sum
/// of every endpoint's `concurrency`, sizes natshook's peak memory: 50 endpoints at the
/// default `concurrency` of 64 would otherwise hold 3,200.
pub const MAX_INFLIGHT: usize = 256;

// [dead_letter]
pub const DEAD_LETTER_MAX_AGE: Duration = Duration::from_secs(14 * 24 * 3600);

// [delivery_log]
pub const DELIVERY_LOG_ENABLED: bool = true;
pub const DELIVERY_LOG_MAX_PER_ENDPOINT: i64 = 1000;
pub const DELIVERY_LOG_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
pub const DELIVERY_LOG_MAX_SUCCESSES_PER_SECOND: i64 = 100;
pub const DELIVERY_LOG_MAX_SUCCESSES_PER_SECOND_TOTAL: i64 = 200;

// [admin]
pub const ADMIN_ENABLED: bool = false;

// [registry]
pub const REGISTRY_ENABLED: bool = false;
/// The KV bucket of endpoints created at runtime.
pub const REGISTRY_BUCKET: &str = "NATSHOOK_ENDPOINTS";
/// Revisions kept per endpoint (JetStream allows at most 64).
pub const REGISTRY_HISTORY: i64 = 5;
/// Runtime endpoints may set `allow_private`, `allow_cidrs` and `allow_http`, as the
/// contract's create body lists them.
pub const REGISTRY_ALLOW_NETWORK_KEYS: bool = true;
/// The longest `timeout` a write through the API or `natshook endpoints` may set: a
/// receiver that never answers holds its places in `max_inflight` this long.
pub const REGISTRY_MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest `concurrency` such a write may set: the default, a quarter of the
/// default `max_inflight`, so no one customer's endpoint takes the process's bound.
pub const REGISTRY_MAX_CONCURRENCY: i64 = CONCURRENCY as i64;
/// The shortest retry delay and probe interval such a write may set.
pub const REGISTRY_MIN_RETRY_DELAY: Duration = Duration::from_secs(1);

pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(25);

// [tracing] (off unless `otlp_endpoint` is set)
/// The OpenTelemetry `service.name` of the exported spans.
pub const TRACING_SERVICE_NAME: &str = "natshook";
/// The share of new traces recorded; a message's own sampled flag decides for its trace.
pub const TRACING_SAMPLE_RATIO: f64 = 1.0;
/// The longest one export to the collector may take, retries included.
pub const TRACING_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished spans waiting for export at most; more are dropped and counted.
pub const TRACING_MAX_QUEUE: i64 = 2048;

// [ingress] and [[ingress.routes]]
/// The largest body a route accepts.
pub const INGRESS_MAX_BODY: usize = 1024 * 1024;
/// The wait for the JetStream publish ack before answering 503.
pub const INGRESS_PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
pub const INGRESS_ID_HEADER: &str = "webhook-id";
pub const INGRESS_SIGNATURE_HEADER: &str = SIGNATURE_HEADER;
