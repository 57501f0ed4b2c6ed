//! The typed config the rest of natshook reads: every key checked and every default
//! applied, so no user of it parses or guesses.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};

use super::defaults;
use crate::payload_filter::PayloadFilter;
use crate::route_path::RoutePath;
use crate::routing::{EventFilter, Router};
use crate::secret::{Secret, SecretRef};
use crate::signing::Signer;
use crate::ssrf::TargetPolicy;
use crate::subject_template::SubjectTemplate;

pub use crate::envelope::Envelope;

/// NATS authentication, at most one kind.
#[derive(Debug, Clone, PartialEq)]
pub enum NatsAuth {
    None,
    Token(Secret),
    UserPassword(String, Secret),
    CredsFile(PathBuf),
}

/// TLS to NATS or to one receiver: a private CA instead of the system roots, and a
/// client certificate for a server that requires mutual TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TlsFiles {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// The HTTP proxy an endpoint's connections go through: configured, or taken from the
/// environment (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, minus `NO_PROXY`) for this
/// endpoint's URL when the config loads.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Proxy {
    /// `http://host:port/` or `https://host:port/`, without credentials.
    pub uri: http::Uri,
    /// The `Proxy-Authorization` value (Basic), marked sensitive.
    pub authorization: Option<HeaderValue>,
    /// Read from the environment rather than the config (said in start-up logs).
    pub from_env: bool,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("uri", &self.uri)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("from_env", &self.from_env)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NatsConfig {
    pub urls: Vec<String>,
    pub auth: NatsAuth,
    pub tls: Option<TlsFiles>,
    pub stream: String,
    pub create_stream: bool,
    /// Replicas of every stream and bucket natshook creates.
    pub replicas: usize,
    pub consumer_prefix: String,
}

/// Everything natshook needs to deliver to one endpoint, defaults applied.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: String,
    pub url: http::Uri,
    pub events: EventFilter,
    /// Messages whose payload does not match are acked without a request.
    pub filter: PayloadFilter,
    /// Shared with the endpoint's deliverer, which starts from it: the keys are held
    /// once per endpoint, not once per holder.
    pub signer: std::sync::Arc<Signer>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub allow_http: bool,
    /// Which resolved addresses this endpoint may reach (SSRF guard).
    pub target: TargetPolicy,
    /// The secret references, re-read when a `{ file }` secret changes.
    pub secret_refs: Vec<SecretRef>,
    /// NATS message headers copied onto the request (besides W3C trace context).
    pub forward_headers: Vec<HeaderName>,
    pub tls: TlsFiles,
    /// `None`: connections go straight to the receiver.
    pub proxy: Option<Proxy>,
    pub timeout: Duration,
    pub retry_schedule: Vec<Duration>,
    pub max_attempts: u32,
    /// 0 disables pausing.
    pub disable_after_failures: u32,
    pub concurrency: usize,
    pub envelope: Envelope,
    pub envelope_fields: serde_json::Map<String, serde_json::Value>,
    /// Only messages of this tenant; `None`: every message, whatever its tenant.
    pub tenant: Option<String>,
    /// The standard envelope's field for the message's tenant; `None`: not written.
    pub tenant_field: Option<String>,
    pub ordered: bool,
    pub max_body: usize,
    pub probe_interval: Duration,
    pub probe_max_interval: Duration,
    /// Deliveries started per period at most, evenly spaced; `None` = unlimited.
    pub rate_limit: Option<Rate>,
    /// The backlog a runtime endpoint skips (created, or re-enabled with
    /// `skip_backlog`): acked without a request. Never set by a config file.
    pub skip: Option<Backlog>,
}

/// The messages a stream held when a runtime endpoint was created or re-enabled with
/// `skip_backlog`: the time it happened and, when the stream could be read then, its
/// last sequence.
///
/// The time is natshook's clock and a message's time is nats-server's, so the time
/// alone would skip the messages of the first moments after it on a replica whose
/// clock runs ahead. The sequence bounds the skip to what was stored already; the time
/// keeps a stream created again (its sequences start over) from being skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    pub before: std::time::SystemTime,
    pub through: Option<u64>,
}

impl Backlog {
    /// How recent a skip must be for the fan-out to have handled messages after it
    /// without the endpoint: a runtime endpoint joins the fan-out's targets within a
    /// second or so of its creation. An older skip belongs to an endpoint the fan-out
    /// served since (a reload restarted it).
    pub const RECENT: Duration = Duration::from_secs(60);

    /// The last sequence skipped, when the skip began at or after `since`.
    pub fn through_since(&self, since: std::time::SystemTime) -> Option<u64> {
        self.through.filter(|_| self.before >= since)
    }

    /// The last sequence skipped, when the skip began within [`Backlog::RECENT`].
    pub fn recent_through(&self) -> Option<u64> {
        let since = std::time::SystemTime::now().checked_sub(Self::RECENT)?;
        self.through_since(since)
    }

    /// Whether the message stored at `published` as `sequence` is part of the backlog.
    pub fn covers(&self, published: std::time::SystemTime, sequence: u64) -> bool {
        published < self.before && self.through.is_none_or(|last| sequence <= last)
    }
}

/// `rate_limit = "50/s"`: at most `count` deliveries started in any window of `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    /// The gap between two deliveries. Rounded up to the nanosecond, so `count + 1`
    /// deliveries never fit into one `per` (with 3/s, 333,333,334 ns, not …333).
    pub fn interval(&self) -> Duration {
        let per = self.per.as_nanos();
        let count = u128::from(self.count.max(1));
        let nanos = per.div_ceil(count).max(1);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// How many deliveries the rate allows within `span` (at least one).
    pub fn within(&self, span: Duration) -> u64 {
        let n = span.as_nanos() / self.interval().as_nanos().max(1);
        u64::try_from(n).unwrap_or(u64::MAX).max(1)
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per.as_secs() {
            60 => "m",
            3600 => "h",
            _ => "s",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

impl Endpoint {
    /// The endpoint as the config and its workers hold it, once. A clone holds no
    /// spare capacity of the strings and lists validation grew: with thousands of
    /// endpoints, about half their memory.
    #[allow(clippy::redundant_clone)]
    pub fn into_shared(self) -> std::sync::Arc<Endpoint> {
        std::sync::Arc::new(self.clone())
    }

    /// The delay before the retry that follows failed attempt `attempt` (1-based).
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        let idx = attempt.saturating_sub(1) as usize;
        self.retry_schedule
            .get(idx)
            .or(self.retry_schedule.last())
            .copied()
            .unwrap_or(Duration::from_secs(1))
    }
}

/// Equality as a reload sees it: an endpoint equal to the running one keeps running.
/// Secrets compare by their references (`secret_refs`), not by the keys read from
/// them: the running endpoint picks up a `{ file }` secret's new content itself
/// (`Deliverer::watch_secrets`), so that is no reason to restart it. Header values are
/// compared as read: nothing re-reads them but a restart.
impl PartialEq for Endpoint {
    fn eq(&self, other: &Self) -> bool {
        // Destructured so that a field added to Endpoint cannot be left out here.
        let Endpoint {
            name,
            url,
            events,
            filter,
            signer,
            headers,
            allow_http,
            target,
            secret_refs,
            forward_headers,
            tls,
            proxy,
            timeout,
            retry_schedule,
            max_attempts,
            disable_after_failures,
            concurrency,
            envelope,
            envelope_fields,
            tenant,
            tenant_field,
            ordered,
            max_body,
            probe_interval,
            probe_max_interval,
            rate_limit,
            skip,
        } = self;
        *name == other.name
            && *url == other.url
            && *events == other.events
            && *filter == other.filter
            && signer.scheme() == other.signer.scheme()
            && signer.header() == other.signer.header()
            && *headers == other.headers
            && *allow_http == other.allow_http
            && *target == other.target
            && *secret_refs == other.secret_refs
            && *forward_headers == other.forward_headers
            && *tls == other.tls
            && *proxy == other.proxy
            && *timeout == other.timeout
            && *retry_schedule == other.retry_schedule
            && *max_attempts == other.max_attempts
            && *disable_after_failures == other.disable_after_failures
            && *concurrency == other.concurrency
            && *envelope == other.envelope
            && *envelope_fields == other.envelope_fields
            && *tenant == other.tenant
            && *tenant_field == other.tenant_field
            && *ordered == other.ordered
            && *max_body == other.max_body
            && *probe_interval == other.probe_interval
            && *probe_max_interval == other.probe_max_interval
            && *rate_limit == other.rate_limit
            && *skip == other.skip
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetterConfig {
    pub max_age: Duration,
}

/// The admin API: off unless enabled, always behind a bearer token.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub token: Secret,
}

/// `[registry]`: where endpoints created at runtime live.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryConfig {
    pub bucket: String,
    pub replicas: usize,
    pub history: i64,
    /// Whether runtime endpoints may widen what they reach (`allow_private`,
    /// `allow_cidrs`, `allow_http`); a check of each record, so a reload applies it.
    pub network_keys: NetworkKeys,
    pub limits: RuntimeLimits,
}

/// `[registry] max_timeout`, `max_concurrency` and `min_retry_delay`: how far a write
/// through the API or `natshook endpoints` may take an endpoint's delivery settings.
/// Where customers give the URLs, one customer's receiver that hangs, or fails fast
/// with retries set to a millisecond, must not take what every other endpoint needs.
/// Checked on the keys a write sets, not on stored records: raising a limit later
/// makes no served endpoint invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeLimits {
    pub max_timeout: Duration,
    pub max_concurrency: usize,
    pub min_retry_delay: Duration,
}

impl Default for RuntimeLimits {
    fn default() -> Self {
        Self {
            max_timeout: defaults::REGISTRY_MAX_TIMEOUT,
            max_concurrency: defaults::REGISTRY_MAX_CONCURRENCY as usize,
            min_retry_delay: defaults::REGISTRY_MIN_RETRY_DELAY,
        }
    }
}

impl RegistryConfig {
    /// What natshook sets up at start from the section: changing it needs a restart.
    pub fn store(&self) -> (&str, usize, i64) {
        (&self.bucket, self.replicas, self.history)
    }
}

/// `[registry] allow_network_keys`: whether a runtime endpoint may set the keys that
/// widen which addresses and schemes it reaches. Where customers give the URLs, the
/// operator keeps that choice to `[defaults]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkKeys {
    #[default]
    Allowed,
    Refused,
}

impl NetworkKeys {
    /// The rule `config` sets for runtime endpoints.
    pub fn of(config: &Config) -> Self {
        config
            .registry
            .as_ref()
            .map_or(NetworkKeys::Allowed, |r| r.network_keys)
    }
}

/// The `[defaults]` section as written (mistyped keys taken out), kept so that an
/// endpoint created at runtime is validated over the same defaults as a file entry.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointDefaults(pub(super) figment::value::Value);

impl Default for EndpointDefaults {
    fn default() -> Self {
        Self(figment::value::Value::from(figment::value::Dict::new()))
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub nats: NatsConfig,
    pub listen: SocketAddr,
    pub router: Router,
    /// Shared with the workers that serve them: thousands of endpoints are held once.
    pub endpoints: Vec<std::sync::Arc<Endpoint>>,
    /// `[delivery] max_inflight`: deliveries in flight over all endpoints.
    pub max_inflight: usize,
    /// `[delivery] fan_out`: one consumer on the source stream copies each message to
    /// a work stream keyed by endpoint, instead of one source consumer per endpoint.
    pub fan_out: bool,
    pub dead_letter: DeadLetterConfig,
    /// `None` when `[delivery_log] enabled = false`.
    pub delivery_log: Option<crate::settings::LogSettings>,
    /// `None` unless `[admin] enabled = true`.
    pub admin: Option<AdminConfig>,
    pub shutdown_grace: Duration,
    /// Incoming webhooks (no routes unless configured).
    pub ingress: IngressConfig,
    /// `None` without `[tracing]`: no spans, trace context forwarded as received.
    pub tracing: Option<crate::settings::TracingSettings>,
    /// `None` unless `[registry] enabled = true`.
    pub registry: Option<RegistryConfig>,
    pub endpoint_defaults: EndpointDefaults,
}

/// How a route checks its sender.
#[derive(Debug, Clone)]
pub enum Verify {
    /// `scheme = "none"`, written out: the route accepts unsigned requests.
    None,
    Signed(Signer),
}

/// One request header copied into the NATS message: looked up by `name`, written
/// under `written` (as configured, since NATS header names keep their case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopiedHeader {
    pub name: HeaderName,
    pub written: String,
    /// A signature header: only its first value, the one verified, is stored, so a
    /// consumer that verifies the stored body again reads that one.
    pub first_only: bool,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub path: RoutePath,
    pub subject: SubjectTemplate,
    pub verify: Verify,
    /// The sender's message id, stored as `Nats-Msg-Id` so JetStream drops retries.
    pub id_header: HeaderName,
    pub max_body: usize,
    /// The scheme's signature headers first (so a consumer can verify the stored body
    /// again), then `forward_headers`.
    pub copy_headers: Vec<CopiedHeader>,
    /// The secret references, compared on reload.
    pub secret_refs: Vec<SecretRef>,
}

#[derive(Debug, Clone, Default)]
pub struct IngressConfig {
    /// `None`: the routes are served on the `[http]` listener.
    pub listen: Option<SocketAddr>,
    pub publish_timeout: Duration,
    pub routes: Vec<Route>,
}

#[cfg(test)]
mod tests {
    use super::Backlog;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn a_backlog_is_what_was_stored_before_its_time_up_to_its_last_sequence() {
        let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let early = at - Duration::from_millis(1);
        let late = at + Duration::from_millis(1);
        let by_time = Backlog {
            before: at,
            through: None,
        };
        assert!(by_time.covers(early, 1_000_000));
        assert!(!by_time.covers(late, 1));
        let bounded = Backlog {
            through: Some(41),
            ..by_time
        };
        assert!(bounded.covers(early, 41));
        // Stored after the sequence was read, though a clock ahead dates it before.
        assert!(!bounded.covers(early, 42));
        // A stream created again after the skip starts its sequences over.
        assert!(!bounded.covers(late, 3));
    }
}
