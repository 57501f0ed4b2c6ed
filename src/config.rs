//! The config file: loading (TOML or YAML plus `NATSHOOK__…` env overrides, merged by
//! figment), and validation into the typed [`Config`] the rest of natshook uses.
//!
//! Validation collects every problem instead of stopping at the first, each named by
//! its key path (`endpoints[1].url: …`), because `natshook check` runs in CI pipelines
//! where one round trip per typo is painful. Unknown keys are errors: a misspelt key
//! must never silently change where webhooks go.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Serialized, Toml, Yaml};
use figment::value::Value;
use figment::Figment;
use http::header::{HeaderName, HeaderValue};
use serde::Deserialize;

use crate::guard::TargetPolicy;
use crate::routing::{EventFilter, EventRule, EventTemplate, Pattern, Router};
use crate::secret::{Secret, SecretList, SecretRef, SECRET_KEYS};
use crate::signing::{check_signing_secret, Scheme, Signer};

mod shape;

/// Prefix of environment overrides: `NATSHOOK__DEFAULTS__TIMEOUT=5s`.
pub const ENV_PREFIX: &str = "NATSHOOK__";

/// The arrays of tables: their entries are addressed by index (`endpoints[1].url`).
pub(crate) const TABLE_ARRAYS: &[&str] = &["endpoints", "events"];

/// One problem found in the config, named by its key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found; never empty.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid config ({} problem(s)):", self.problems.len())?;
        for p in &self.problems {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    fn single(path: &str, message: impl Into<String>) -> Self {
        Self {
            problems: vec![Problem {
                path: path.to_string(),
                message: message.into(),
            }],
        }
    }
}

/// How a receiver gets the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Envelope {
    /// The JSON envelope of the contract.
    Standard,
    /// The payload bytes unchanged.
    Raw,
}

/// NATS authentication, at most one kind.
#[derive(Debug, Clone, PartialEq)]
pub enum NatsAuth {
    None,
    Token(Secret),
    UserPassword(String, Secret),
    CredsFile(PathBuf),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct NatsTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NatsConfig {
    pub urls: Vec<String>,
    pub auth: NatsAuth,
    pub tls: Option<NatsTls>,
    pub stream: String,
    pub create_stream: bool,
    pub consumer_prefix: String,
}

/// Everything natshook needs to deliver to one endpoint, defaults applied.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: String,
    pub url: http::Uri,
    pub events: EventFilter,
    pub signer: Signer,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub allow_http: bool,
    /// Which resolved addresses this endpoint may reach (SSRF guard).
    pub target: TargetPolicy,
    /// The secret references, re-read when a `{ file }` secret changes.
    pub secret_refs: Vec<SecretRef>,
    /// NATS message headers copied onto the request (besides W3C trace context).
    pub forward_headers: Vec<HeaderName>,
    pub tls: EndpointTls,
    pub timeout: Duration,
    pub retry_schedule: Vec<Duration>,
    pub max_attempts: u32,
    /// 0 disables pausing.
    pub disable_after_failures: u32,
    pub concurrency: usize,
    pub envelope: Envelope,
    pub envelope_fields: serde_json::Map<String, serde_json::Value>,
    pub ordered: bool,
    pub max_body: usize,
    pub probe_interval: Duration,
    pub probe_max_interval: Duration,
}

impl Endpoint {
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
            signer,
            headers,
            allow_http,
            target,
            secret_refs,
            forward_headers,
            tls,
            timeout,
            retry_schedule,
            max_attempts,
            disable_after_failures,
            concurrency,
            envelope,
            envelope_fields,
            ordered,
            max_body,
            probe_interval,
            probe_max_interval,
        } = self;
        *name == other.name
            && *url == other.url
            && *events == other.events
            && signer.scheme() == other.signer.scheme()
            && signer.header() == other.signer.header()
            && *headers == other.headers
            && *allow_http == other.allow_http
            && *target == other.target
            && *secret_refs == other.secret_refs
            && *forward_headers == other.forward_headers
            && *tls == other.tls
            && *timeout == other.timeout
            && *retry_schedule == other.retry_schedule
            && *max_attempts == other.max_attempts
            && *disable_after_failures == other.disable_after_failures
            && *concurrency == other.concurrency
            && *envelope == other.envelope
            && *envelope_fields == other.envelope_fields
            && *ordered == other.ordered
            && *max_body == other.max_body
            && *probe_interval == other.probe_interval
            && *probe_max_interval == other.probe_max_interval
    }
}

/// TLS to one receiver: a private CA instead of the system roots, and a client
/// certificate for receivers that require mutual TLS.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
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

#[derive(Debug, Clone)]
pub struct Config {
    pub nats: NatsConfig,
    pub listen: SocketAddr,
    pub router: Router,
    pub endpoints: Vec<Endpoint>,
    pub dead_letter: DeadLetterConfig,
    /// `None` when `[delivery_log] enabled = false`.
    pub delivery_log: Option<crate::delivery_log::LogSettings>,
    /// `None` unless `[admin] enabled = true`.
    pub admin: Option<AdminConfig>,
    pub shutdown_grace: Duration,
    /// Incoming webhooks (no routes unless configured).
    pub ingress: crate::ingress::IngressConfig,
}

// ---------------------------------------------------------------------------
// Raw shapes, as written. Types are lenient (durations and URLs are strings) so that
// one wrong value does not hide the others: the typed checks below report them all.

#[derive(Debug, Default, Deserialize)]
struct RawConfig {
    nats: Option<RawNats>,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    defaults: RawSettings,
    #[serde(default)]
    events: Vec<RawEvent>,
    #[serde(default)]
    endpoints: Vec<RawEndpoint>,
    #[serde(default)]
    dead_letter: RawDeadLetter,
    #[serde(default)]
    delivery_log: RawDeliveryLog,
    #[serde(default)]
    admin: RawAdmin,
    shutdown_grace: Option<String>,
    #[serde(default)]
    ingress: crate::ingress::RawIngress,
}

#[derive(Debug, Default, Deserialize)]
struct RawDeliveryLog {
    enabled: Option<bool>,
    max_per_endpoint: Option<i64>,
    max_age: Option<String>,
    max_successes_per_second: Option<i64>,
}

const DELIVERY_LOG_KEYS: &[&str] = &[
    "enabled",
    "max_per_endpoint",
    "max_age",
    "max_successes_per_second",
];

#[derive(Debug, Default, Deserialize)]
struct RawAdmin {
    enabled: Option<bool>,
    token: Option<SecretRef>,
}

const ADMIN_KEYS: &[&str] = &["enabled", "token"];

const TOP_KEYS: &[&str] = &[
    "nats",
    "http",
    "defaults",
    "events",
    "endpoints",
    "dead_letter",
    "delivery_log",
    "admin",
    "shutdown_grace",
    "ingress",
];

#[derive(Debug, Default, Deserialize)]
struct RawNats {
    url: Option<String>,
    stream: Option<String>,
    create_stream: Option<bool>,
    consumer_prefix: Option<String>,
    creds_file: Option<PathBuf>,
    token: Option<SecretRef>,
    user: Option<String>,
    password: Option<SecretRef>,
    tls: Option<RawNatsTls>,
}

const NATS_KEYS: &[&str] = &[
    "url",
    "stream",
    "create_stream",
    "consumer_prefix",
    "creds_file",
    "token",
    "user",
    "password",
    "tls",
];

#[derive(Debug, Default, Deserialize)]
struct RawNatsTls {
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

const TLS_KEYS: &[&str] = &["ca_file", "cert_file", "key_file"];

#[derive(Debug, Default, Deserialize)]
struct RawHttp {
    listen: Option<String>,
}

const HTTP_KEYS: &[&str] = &["listen"];

#[derive(Debug, Default, Deserialize)]
struct RawDeadLetter {
    max_age: Option<String>,
}

const DEAD_LETTER_KEYS: &[&str] = &["max_age"];

#[derive(Debug, Default, Deserialize)]
struct RawEvent {
    subject: Option<String>,
    event: Option<String>,
}

const EVENT_KEYS: &[&str] = &["subject", "event"];

/// Keys allowed both in `[defaults]` and on an endpoint.
#[derive(Debug, Default, Clone, Deserialize)]
struct RawSettings {
    timeout: Option<String>,
    retry_schedule: Option<Vec<String>>,
    max_attempts: Option<i64>,
    disable_after_failures: Option<i64>,
    concurrency: Option<i64>,
    signature: Option<RawSignature>,
    envelope: Option<String>,
    envelope_fields: Option<serde_json::Map<String, serde_json::Value>>,
    ordered: Option<bool>,
    max_body: Option<i64>,
    probe_interval: Option<String>,
    probe_max_interval: Option<String>,
    allow_http: Option<bool>,
    allow_private: Option<bool>,
    allow_cidrs: Option<Vec<String>>,
    headers: Option<BTreeMap<String, SecretRef>>,
    forward_headers: Option<Vec<String>>,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

const SETTINGS_KEYS: &[&str] = &[
    "timeout",
    "retry_schedule",
    "max_attempts",
    "disable_after_failures",
    "concurrency",
    "signature",
    "envelope",
    "envelope_fields",
    "ordered",
    "max_body",
    "probe_interval",
    "probe_max_interval",
    "allow_http",
    "allow_private",
    "allow_cidrs",
    "headers",
    "forward_headers",
    "ca_file",
    "cert_file",
    "key_file",
];

#[derive(Debug, Default, Clone, Deserialize)]
struct RawSignature {
    scheme: Option<String>,
    header: Option<String>,
}

const SIGNATURE_KEYS: &[&str] = &["scheme", "header"];

#[derive(Debug, Default, Deserialize)]
struct RawEndpoint {
    name: Option<String>,
    url: Option<String>,
    events: Option<Vec<String>>,
    secret: Option<SecretList>,
    #[serde(flatten)]
    settings: RawSettings,
}

const ENDPOINT_KEYS: &[&str] = &["name", "url", "events", "secret"];

/// Headers natshook sets itself; config `headers` may not replace them.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "user-agent",
    "transfer-encoding",
    "connection",
];
const RESERVED_HEADER_PREFIXES: &[&str] = &["x-webhook-", "webhook-"];

/// Top-level envelope keys natshook writes; `envelope_fields` may not shadow them.
const ENVELOPE_KEYS: &[&str] = &["id", "event", "timestamp", "data", "metadata"];

// ---------------------------------------------------------------------------

/// Collects problems while validating.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl fmt::Display) {
        self.0.push(Problem {
            path: path.into(),
            message: message.to_string(),
        });
    }

    fn duration(&mut self, path: &str, text: &str) -> Option<Duration> {
        match humantime::parse_duration(text.trim()) {
            Ok(d) if d.is_zero() => {
                self.add(path, "must be greater than zero");
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.add(
                    path,
                    format_args!("'{text}' is not a duration ({e}); use e.g. \"500ms\", \"5s\", \"2m\", \"2h\""),
                );
                None
            }
        }
    }

    fn positive(&mut self, path: &str, value: i64, min: i64) -> Option<u32> {
        if value < min || value > i64::from(u32::MAX) {
            self.add(path, format_args!("must be at least {min} (got {value})"));
            None
        } else {
            Some(value as u32)
        }
    }
}

impl Config {
    /// Loads `path` (TOML or YAML by extension) with env overrides and validates it.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let (figment, problems) = figment_for(path)?;
        Self::from_figment(&figment, problems)
    }

    /// Parses a config from text, for tests and tools. `format` is "toml" or "yaml".
    pub fn from_str(text: &str, format: &str) -> Result<Self, ConfigError> {
        let (figment, problems) = figment_for_text(text, format)?;
        Self::from_figment(&figment, problems)
    }

    /// `problems`: found before (repeated YAML keys, env overrides that name no entry).
    fn from_figment(figment: &Figment, problems: Vec<Problem>) -> Result<Self, ConfigError> {
        let mut problems = Problems(problems);
        let mut value = figment.extract::<Value>().map_err(figment_problems)?;
        shape::check_value(&value)?;
        check_unknown_keys(&value, &mut problems);
        let before_types = problems.0.len();
        // Flattened settings lose the key of a type error, so each endpoint's are
        // checked on their own first.
        if let Some(Value::Array(_, endpoints)) = dict_mut(&mut value, "endpoints") {
            for (i, endpoint) in endpoints.iter_mut().enumerate() {
                if !matches!(endpoint, Value::Dict(..)) {
                    continue; // reported once, below
                }
                extract_taking_mistyped::<RawSettings>(
                    endpoint,
                    &format!("endpoints[{i}]"),
                    &mut problems,
                );
            }
        }
        let Some(raw) = extract_taking_mistyped::<RawConfig>(&mut value, "", &mut problems) else {
            return Err(ConfigError {
                problems: problems.0,
            });
        };
        let mistyped: HashSet<String> = problems
            .0
            .iter()
            .skip(before_types)
            .map(|p| p.path.clone())
            .collect();
        let mut found = Problems::default();
        let config = validate(raw, &mut found);
        // A key taken out for its type is not also "missing".
        problems
            .0
            .extend(found.0.into_iter().filter(|p| !mistyped.contains(&p.path)));
        match config {
            Some(c) if problems.0.is_empty() => Ok(c),
            _ => Err(ConfigError {
                problems: problems.0,
            }),
        }
    }
}

/// The file with env overrides merged, and the problems found on the way that do not
/// stop validation (repeated YAML keys, overrides that could not be applied). The file
/// is read once, so that what is checked is what figment reads.
fn figment_for(path: &Path) -> Result<(Figment, Vec<Problem>), ConfigError> {
    let shown = path.display().to_string();
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let format = match ext.as_str() {
        "toml" => "toml",
        "yaml" | "yml" => "yaml",
        _ => {
            return Err(ConfigError::single(
                "--config",
                format!("{shown}: unknown extension '{ext}' (use .toml, .yaml or .yml)"),
            ))
        }
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::single("--config", format!("cannot read {shown}: {e}")))?;
    let (file, mut problems) = figment_for_text(&text, format)?;
    for (name, value) in std::env::vars_os() {
        if let (Some(name), Some(value)) = (name.to_str(), value.to_str()) {
            if name.starts_with(ENV_PREFIX) {
                shape::check_env_value(name, value)?;
            }
        }
    }
    let (figment, env_problems) = crate::env_override::apply(file);
    problems.extend(env_problems);
    Ok((figment, problems))
}

/// The config text as a figment, once its shape has passed (`format`: "toml" or
/// "yaml"); the problems are repeated YAML keys.
fn figment_for_text(text: &str, format: &str) -> Result<(Figment, Vec<Problem>), ConfigError> {
    if format == "yaml" {
        let problems = shape::check_yaml(text)?;
        Ok((Figment::from(Yaml::string(text)), problems))
    } else {
        shape::check_toml(text)?;
        Ok((Figment::from(Toml::string(text)), Vec::new()))
    }
}

pub(crate) fn figment_problems(e: figment::Error) -> ConfigError {
    let problems = e
        .into_iter()
        .map(|e| Problem {
            path: if e.path.is_empty() {
                "config".to_string()
            } else {
                render_path(&e.path)
            },
            message: e.kind.to_string(),
        })
        .collect();
    ConfigError { problems }
}

fn render_path(segments: &[String]) -> String {
    let mut out = String::new();
    for s in segments {
        if s.parse::<usize>().is_ok() {
            out.push_str(&format!("[{s}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(s);
        }
    }
    out
}

/// Extracts a `T` from `value`. A type error does not stop validation: it is recorded
/// under its key (`prefix` in front), the key is taken out of `value`, and the
/// extraction repeated, so that one run of `natshook check` names every mistyped key
/// and still validates the rest. `None` when an error has no key to take out.
fn extract_taking_mistyped<T: serde::de::DeserializeOwned>(
    value: &mut Value,
    prefix: &str,
    problems: &mut Problems,
) -> Option<T> {
    loop {
        let errors = match Figment::from(Serialized::defaults(&*value)).extract::<T>() {
            Ok(t) => return Some(t),
            Err(e) => e,
        };
        let mut taken = false;
        for e in errors {
            let at = render_path(&e.path);
            let path = match (prefix, at.as_str()) {
                ("", "") => "config".to_string(),
                (p, "") => p.to_string(),
                ("", a) => a.to_string(),
                (p, a) if a.starts_with('[') => format!("{p}{a}"),
                (p, a) => format!("{p}.{a}"),
            };
            problems.add(path, &e.kind);
            taken |= take_key(value, &e.path);
        }
        if !taken {
            return None;
        }
    }
}

/// Removes the innermost table key on `path` (a list element goes with its list), but
/// never a whole `[[events]]` or `[[endpoints]]` array: its entries' indexes name
/// their problems.
fn take_key(value: &mut Value, path: &[String]) -> bool {
    let Some(depth) = path.iter().rposition(|s| s.parse::<usize>().is_err()) else {
        return false;
    };
    if depth == 0 && path.len() > 1 && TABLE_ARRAYS.contains(&path[0].as_str()) {
        return false;
    }
    let mut at = value;
    for segment in &path[..depth] {
        let next = match at {
            Value::Dict(_, d) => d.get_mut(segment),
            Value::Array(_, a) => segment.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        };
        match next {
            Some(v) => at = v,
            None => return false,
        }
    }
    match at {
        Value::Dict(_, d) => d.remove(&path[depth]).is_some(),
        _ => false,
    }
}

fn dict_mut<'a>(value: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    match value {
        Value::Dict(_, d) => d.get_mut(key),
        _ => None,
    }
}

fn check_unknown_keys(value: &Value, problems: &mut Problems) {
    fn keys(value: Option<&Value>, path: &str, allowed: &[&[&str]], problems: &mut Problems) {
        let Some(Value::Dict(_, dict)) = value else {
            return;
        };
        for key in dict.keys() {
            if !allowed.iter().any(|set| set.contains(&key.as_str())) {
                let all: Vec<&str> = allowed.iter().flat_map(|s| s.iter().copied()).collect();
                let at = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                problems.add(
                    at,
                    format_args!("unknown key (expected one of: {})", all.join(", ")),
                );
            }
        }
    }
    fn items(value: Option<&Value>) -> Vec<&Value> {
        match value {
            Some(Value::Array(_, v)) => v.iter().collect(),
            _ => Vec::new(),
        }
    }
    fn settings(value: &Value, path: &str, extra: &[&str], problems: &mut Problems) {
        keys(Some(value), path, &[SETTINGS_KEYS, extra], problems);
        keys(
            value.find_ref("signature"),
            &format!("{path}.signature"),
            &[SIGNATURE_KEYS],
            problems,
        );
        if let Some(Value::Dict(_, headers)) = value.find_ref("headers") {
            for (name, v) in headers {
                keys(
                    Some(v),
                    &format!("{path}.headers.{name}"),
                    &[SECRET_KEYS],
                    problems,
                );
            }
        }
    }

    keys(Some(value), "", &[TOP_KEYS], problems);
    keys(value.find_ref("nats"), "nats", &[NATS_KEYS], problems);
    for k in ["token", "password"] {
        keys(
            value.find_ref(&format!("nats.{k}")),
            &format!("nats.{k}"),
            &[SECRET_KEYS],
            problems,
        );
    }
    keys(
        value.find_ref("nats.tls"),
        "nats.tls",
        &[TLS_KEYS],
        problems,
    );
    keys(value.find_ref("http"), "http", &[HTTP_KEYS], problems);
    keys(
        value.find_ref("dead_letter"),
        "dead_letter",
        &[DEAD_LETTER_KEYS],
        problems,
    );
    keys(
        value.find_ref("delivery_log"),
        "delivery_log",
        &[DELIVERY_LOG_KEYS],
        problems,
    );
    keys(value.find_ref("admin"), "admin", &[ADMIN_KEYS], problems);
    keys(
        value.find_ref("admin.token"),
        "admin.token",
        &[SECRET_KEYS],
        problems,
    );
    crate::ingress::check_unknown_keys(value.find_ref("ingress"), &mut problems.0);
    if let Some(defaults) = value.find_ref("defaults") {
        settings(defaults, "defaults", &[], problems);
    }
    for (i, ev) in items(value.find_ref("events")).into_iter().enumerate() {
        keys(Some(ev), &format!("events[{i}]"), &[EVENT_KEYS], problems);
    }
    for (i, ep) in items(value.find_ref("endpoints")).into_iter().enumerate() {
        let path = format!("endpoints[{i}]");
        settings(ep, &path, ENDPOINT_KEYS, problems);
        let secret = ep.find_ref("secret");
        let secrets = match secret {
            Some(Value::Array(_, v)) => v.iter().collect(),
            Some(v) => vec![v],
            None => vec![],
        };
        for s in secrets {
            keys(Some(s), &format!("{path}.secret"), &[SECRET_KEYS], problems);
        }
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn valid_stream_name(s: &str) -> bool {
    !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
}

fn validate(raw: RawConfig, p: &mut Problems) -> Option<Config> {
    let nats = validate_nats(raw.nats, p);

    let listen_text = raw.http.listen.as_deref().unwrap_or("0.0.0.0:9464");
    let listen = match listen_text.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            p.add(
                "http.listen",
                format_args!("'{listen_text}' is not an address:port such as 0.0.0.0:9464"),
            );
            None
        }
    };

    let mut rules = Vec::new();
    if raw.events.is_empty() {
        p.add(
            "events",
            "at least one [[events]] mapping (subject → event) is required",
        );
    }
    for (i, ev) in raw.events.iter().enumerate() {
        let path = format!("events[{i}]");
        let subject = match ev.subject.as_deref() {
            None => {
                p.add(format!("{path}.subject"), "required");
                None
            }
            Some(s) => Pattern::parse(s)
                .map_err(|e| p.add(format!("{path}.subject"), format_args!("'{s}' {e}")))
                .ok(),
        };
        let Some(subject) = subject else { continue };
        match ev.event.as_deref() {
            None => p.add(format!("{path}.event"), "required"),
            Some(t) => match EventTemplate::parse(t, &subject) {
                Ok(event) => rules.push(EventRule { subject, event }),
                Err(e) => p.add(format!("{path}.event"), format_args!("'{t}' {e}")),
            },
        }
    }
    let router = Router::new(rules);

    let defaults = raw.defaults;
    let mut endpoints = Vec::new();
    let mut names = HashSet::new();
    if raw.endpoints.is_empty() {
        p.add("endpoints", "at least one [[endpoints]] entry is required");
    }
    for (i, ep) in raw.endpoints.into_iter().enumerate() {
        let path = format!("endpoints[{i}]");
        if let Some(name) = &ep.name {
            if !names.insert(name.clone()) {
                p.add(
                    format!("{path}.name"),
                    format_args!("'{name}' is used by an earlier endpoint; names must be unique"),
                );
            }
        }
        if let Some(e) = validate_endpoint(ep, &defaults, &router, &path, p) {
            endpoints.push(e);
        }
    }

    let max_age = match raw.dead_letter.max_age.as_deref() {
        None => Some(Duration::from_secs(14 * 24 * 3600)),
        Some(t) => p.duration("dead_letter.max_age", t),
    };
    let delivery_log = if raw.delivery_log.enabled.unwrap_or(true) {
        let max = raw.delivery_log.max_per_endpoint.unwrap_or(1000);
        let max = p.positive("delivery_log.max_per_endpoint", max, 1);
        let age = match raw.delivery_log.max_age.as_deref() {
            None => Some(Duration::from_secs(7 * 24 * 3600)),
            Some(t) => p.duration("delivery_log.max_age", t),
        };
        let per_second = p.positive(
            "delivery_log.max_successes_per_second",
            raw.delivery_log.max_successes_per_second.unwrap_or(100),
            0,
        );
        match (max, age, per_second) {
            (Some(max), Some(age), Some(per_second)) => {
                Some(Some(crate::delivery_log::LogSettings {
                    max_per_endpoint: i64::from(max),
                    max_age: age,
                    max_successes_per_second: per_second,
                }))
            }
            _ => None,
        }
    } else {
        Some(None)
    };
    let admin = if raw.admin.enabled.unwrap_or(false) {
        match &raw.admin.token {
            None => {
                p.add(
                    "admin.token",
                    "required when admin.enabled = true (e.g. { env = \"NATSHOOK_ADMIN_TOKEN\" })",
                );
                None
            }
            Some(t) => match t.resolve() {
                Ok(token) if token.expose().len() >= 16 => Some(Some(AdminConfig { token })),
                Ok(_) => {
                    p.add("admin.token", "must be at least 16 characters");
                    None
                }
                Err(e) => {
                    p.add("admin.token", e);
                    None
                }
            },
        }
    } else {
        Some(None)
    };
    let shutdown_grace = match raw.shutdown_grace.as_deref() {
        None => Some(Duration::from_secs(25)),
        Some(t) => p.duration("shutdown_grace", t),
    };
    let ingress = crate::ingress::validate(raw.ingress, listen, &mut p.0);

    Some(Config {
        nats: nats?,
        listen: listen?,
        router,
        endpoints,
        dead_letter: DeadLetterConfig { max_age: max_age? },
        delivery_log: delivery_log?,
        admin: admin?,
        shutdown_grace: shutdown_grace?,
        ingress: ingress?,
    })
}

fn validate_nats(raw: Option<RawNats>, p: &mut Problems) -> Option<NatsConfig> {
    let Some(raw) = raw else {
        p.add(
            "nats",
            "required: the [nats] section with at least `stream`",
        );
        return None;
    };
    let url_text = raw.url.as_deref().unwrap_or("nats://127.0.0.1:4222");
    let mut urls = Vec::new();
    if url_text.trim().is_empty() {
        p.add(
            "nats.url",
            "must name at least one server (e.g. nats://127.0.0.1:4222)",
        );
    }
    for u in url_text
        .split(',')
        .map(str::trim)
        .filter(|_| !url_text.trim().is_empty())
    {
        match check_nats_url(u) {
            Ok(()) => urls.push(u.to_string()),
            Err(why) => p.add("nats.url", why),
        }
    }
    let stream = match raw.stream {
        Some(s) if valid_stream_name(&s) => Some(s),
        Some(s) => {
            p.add(
                "nats.stream",
                format_args!("'{s}' is not a valid stream name (no spaces, '.', '*', '>', '/')"),
            );
            None
        }
        None => {
            p.add("nats.stream", "required: the JetStream stream to consume");
            None
        }
    };
    let consumer_prefix = raw.consumer_prefix.unwrap_or_else(|| "natshook".into());
    if !valid_stream_name(&consumer_prefix) {
        p.add(
            "nats.consumer_prefix",
            format_args!("'{consumer_prefix}' is not a valid consumer name prefix"),
        );
    }
    let mut resolve =
        |path: &str, r: &SecretRef| r.resolve().map_err(|e| p.add(path.to_string(), e)).ok();
    let auth = match (raw.creds_file, raw.token, raw.user, raw.password) {
        (None, None, None, None) => Some(NatsAuth::None),
        (Some(f), None, None, None) => Some(NatsAuth::CredsFile(f)),
        (None, Some(t), None, None) => resolve("nats.token", &t).map(NatsAuth::Token),
        (None, None, Some(u), Some(pw)) => {
            resolve("nats.password", &pw).map(|pw| NatsAuth::UserPassword(u, pw))
        }
        (None, None, Some(_), None) => {
            p.add("nats.password", "required when nats.user is set");
            None
        }
        (None, None, None, Some(_)) => {
            p.add("nats.user", "required when nats.password is set");
            None
        }
        _ => {
            p.add(
                "nats",
                "set at most one of creds_file, token, or user + password",
            );
            None
        }
    };
    let tls = raw.tls.map(|t| {
        if t.cert_file.is_some() != t.key_file.is_some() {
            p.add("nats.tls", "cert_file and key_file must be set together");
        }
        for (key, file) in [
            ("ca_file", &t.ca_file),
            ("cert_file", &t.cert_file),
            ("key_file", &t.key_file),
        ] {
            if let Some(f) = file {
                if let Err(e) = std::fs::metadata(f) {
                    p.add(
                        format!("nats.tls.{key}"),
                        format_args!("cannot read {}: {e}", f.display()),
                    );
                }
            }
        }
        NatsTls {
            ca_file: t.ca_file,
            cert_file: t.cert_file,
            key_file: t.key_file,
        }
    });
    Some(NatsConfig {
        urls,
        auth: auth?,
        tls,
        stream: stream?,
        create_stream: raw.create_stream.unwrap_or(false),
        consumer_prefix,
    })
}

/// One server of `nats.url`. async-nats takes nearly any text (`x`, `nats://`, a host
/// with control characters) and only fails at run time, sending the name to the
/// resolver again on every reconnect; so its parse is one step here, and the address
/// must also have a host name or IP address and a port in range. Without a scheme
/// async-nats reads `host:port` as `nats://host:port`; a bare word without a port is
/// refused, being more likely a typo than a server.
fn check_nats_url(u: &str) -> Result<(), String> {
    let shown = u.escape_debug();
    if u.is_empty() {
        return Err(
            "an entry is empty (a list is comma-separated, e.g. nats://a:4222,nats://b:4222)"
                .into(),
        );
    }
    if u.chars().any(char::is_control) {
        return Err(format!("'{shown}' contains a control character"));
    }
    let addr = u
        .parse::<async_nats::ServerAddr>()
        .map_err(|e| format!("'{shown}' is not a NATS URL: {e}"))?;
    let url = addr.clone().into_inner();
    let host = addr.host();
    if host.is_empty() {
        return Err(format!(
            "'{shown}' has no host (e.g. nats://127.0.0.1:4222)"
        ));
    }
    if !u.contains("://") && url.port().is_none() {
        return Err(format!(
            "'{shown}' is neither a URL nor host:port (e.g. nats://{shown}:4222)"
        ));
    }
    let valid_name = host.len() <= 253
        && host.trim_end_matches('.').split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid_name && host.parse::<IpAddr>().is_err() {
        return Err(format!(
            "'{shown}': '{}' is not a host name or IP address",
            host.escape_debug()
        ));
    }
    if url.port() == Some(0) {
        return Err(format!(
            "'{shown}': port 0 is not a port a server listens on"
        ));
    }
    Ok(())
}

fn validate_endpoint(
    ep: RawEndpoint,
    defaults: &RawSettings,
    router: &Router,
    path: &str,
    p: &mut Problems,
) -> Option<Endpoint> {
    let at = |key: &str| format!("{path}.{key}");
    let s = &ep.settings;
    // Endpoint value, else [defaults] value: one key at a time.
    macro_rules! pick {
        ($field:ident) => {
            match &s.$field {
                Some(v) => (Some(v.clone()), at(stringify!($field))),
                None => (
                    defaults.$field.clone(),
                    format!("defaults.{}", stringify!($field)),
                ),
            }
        };
    }

    let name = match &ep.name {
        Some(n) if valid_name(n) => Some(n.clone()),
        Some(n) => {
            p.add(at("name"), format_args!("'{n}' must match [a-z0-9_-]+"));
            None
        }
        None => {
            p.add(at("name"), "required");
            None
        }
    };

    let (allow_http, _) = pick!(allow_http);
    let allow_http = allow_http.unwrap_or(false);
    let (allow_private, _) = pick!(allow_private);
    let (cidrs, cidrs_path) = pick!(allow_cidrs);
    let mut target = TargetPolicy {
        allow_private: allow_private.unwrap_or(false),
        allow_cidrs: Vec::new(),
    };
    for (j, c) in cidrs.unwrap_or_default().iter().enumerate() {
        match c.parse::<ipnet::IpNet>() {
            Ok(net) => target.allow_cidrs.push(net),
            Err(_) => match c.parse::<IpAddr>() {
                Ok(ip) => target.allow_cidrs.push(ipnet::IpNet::from(ip)),
                Err(_) => p.add(
                    format!("{cidrs_path}[{j}]"),
                    format_args!("'{c}' is not a CIDR range such as 10.1.0.0/16"),
                ),
            },
        }
    }
    let url = match &ep.url {
        None => {
            p.add(at("url"), "required");
            None
        }
        Some(u) => validate_url(u, allow_http, &target)
            .map_err(|m| p.add(at("url"), m))
            .ok(),
    };

    let events = match &ep.events {
        None => {
            p.add(
                at("events"),
                "required: the event names to deliver (\"*\" for all)",
            );
            None
        }
        Some(list) if list.is_empty() => {
            p.add(
                at("events"),
                "must list at least one event pattern (\"*\" for all)",
            );
            None
        }
        Some(list) => match EventFilter::parse(list) {
            Err((j, e)) => {
                p.add(
                    format!("{path}.events[{j}]"),
                    format_args!("'{}' {e}", list[j]),
                );
                None
            }
            Ok(filter) => {
                if !router.rules().is_empty()
                    && router
                        .filter_subjects(&filter)
                        .is_some_and(|s| s.is_empty())
                {
                    p.add(
                        at("events"),
                        "no [[events]] mapping produces any of these event names",
                    );
                }
                Some(filter)
            }
        },
    };

    let secrets = match &ep.secret {
        None => {
            p.add(
                at("secret"),
                "required: webhooks are always signed ({ env = \"…\" }, { file = \"…\" } or { value = \"…\" })",
            );
            None
        }
        Some(list) => {
            let refs = list.refs();
            if refs.is_empty() {
                p.add(at("secret"), "must list at least one secret");
            }
            let mut out = Vec::new();
            for (j, r) in refs.iter().enumerate() {
                let path = match list {
                    SecretList::One(_) => at("secret"),
                    SecretList::Many(_) => format!("{path}.secret[{j}]"),
                };
                match r.resolve() {
                    Ok(s) => out.push((path, s)),
                    Err(e) => p.add(path, e),
                }
            }
            Some(out)
        }
    };

    let (sig, _) = pick!(signature);
    let sig = sig.unwrap_or_default();
    let dsig = defaults.signature.clone().unwrap_or_default();
    let scheme_text = sig
        .scheme
        .or(dsig.scheme)
        .unwrap_or_else(|| "hex".to_string());
    let scheme = match scheme_text.parse::<Scheme>() {
        Ok(s) => Some(s),
        Err(()) => {
            p.add(
                at("signature.scheme"),
                format_args!("'{scheme_text}' is not one of hex, sha256, standard"),
            );
            None
        }
    };
    let header_text = sig
        .header
        .or(dsig.header)
        .unwrap_or_else(|| "X-Webhook-Signature".to_string());
    let sig_header = match HeaderName::from_bytes(header_text.as_bytes()) {
        Ok(h) => Some(h),
        Err(_) => {
            p.add(
                at("signature.header"),
                format_args!("'{header_text}' is not a valid header name"),
            );
            None
        }
    };
    let signer = match (scheme, sig_header, secrets) {
        (Some(scheme), Some(header), Some(secrets)) if !secrets.is_empty() => {
            // Each entry on its own first, so the error names the one of a rotation
            // list that is wrong (a whpk_ public key, a whsk_ key under hex, bad base64).
            let mut keys_ok = true;
            for (path, s) in &secrets {
                if let Err(e) = check_signing_secret(scheme, s) {
                    p.add(path.clone(), e);
                    keys_ok = false;
                }
            }
            if keys_ok {
                match Signer::new(
                    scheme,
                    header,
                    secrets.into_iter().map(|(_, s)| s).collect(),
                ) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        p.add(at("secret"), e);
                        None
                    }
                }
            } else {
                None
            }
        }
        _ => None,
    };

    let (headers_raw, headers_path) = pick!(headers);
    let mut headers = Vec::new();
    for (hname, value) in headers_raw.unwrap_or_default() {
        let hpath = format!("{headers_path}.{hname}");
        let lower = hname.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str())
            || RESERVED_HEADER_PREFIXES
                .iter()
                .any(|pre| lower.starts_with(pre))
        {
            p.add(
                hpath,
                "natshook sets this header itself; it cannot be overridden",
            );
            continue;
        }
        let Ok(n) = HeaderName::from_bytes(hname.as_bytes()) else {
            p.add(hpath, "is not a valid header name");
            continue;
        };
        match value.resolve() {
            Err(e) => p.add(hpath, e),
            Ok(secret) => match HeaderValue::from_bytes(secret.expose()) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    headers.push((n, v));
                }
                Err(_) => p.add(hpath, "value contains characters not allowed in a header (CR, LF, control characters)"),
            },
        }
    }

    let (forward, fwd_path) = pick!(forward_headers);
    let mut forward_headers = Vec::new();
    for (j, name) in forward.unwrap_or_default().iter().enumerate() {
        let lower = name.to_ascii_lowercase();
        match HeaderName::from_bytes(name.as_bytes()) {
            Err(_) => p.add(
                format!("{fwd_path}[{j}]"),
                format_args!("'{name}' is not a valid header name"),
            ),
            Ok(_)
                if RESERVED_HEADERS.contains(&lower.as_str())
                    || RESERVED_HEADER_PREFIXES
                        .iter()
                        .any(|pre| lower.starts_with(pre)) =>
            {
                p.add(
                    format!("{fwd_path}[{j}]"),
                    "natshook sets this header itself; it cannot be forwarded",
                )
            }
            Ok(h) => forward_headers.push(h),
        }
    }
    let mut tls = EndpointTls::default();
    for (key, slot) in [
        ("ca_file", &mut tls.ca_file),
        ("cert_file", &mut tls.cert_file),
        ("key_file", &mut tls.key_file),
    ] {
        let (file, fpath) = match key {
            "ca_file" => pick!(ca_file),
            "cert_file" => pick!(cert_file),
            _ => pick!(key_file),
        };
        if let Some(f) = file {
            if let Err(e) = crate::delivery::check_tls_file(key, &f) {
                p.add(fpath, e);
            }
            *slot = Some(f);
        }
    }
    if tls.cert_file.is_some() != tls.key_file.is_some() {
        p.add(
            at("cert_file"),
            "cert_file and key_file must be set together",
        );
    }

    let (timeout, tpath) = pick!(timeout);
    let timeout = match timeout {
        Some(t) => p.duration(&tpath, &t),
        None => Some(Duration::from_secs(10)),
    };
    let (schedule, spath) = pick!(retry_schedule);
    let schedule_text = schedule.unwrap_or_else(|| {
        ["1s", "5s", "30s", "5m", "30m", "2h"]
            .map(String::from)
            .to_vec()
    });
    let mut retry_schedule = Vec::new();
    for (j, t) in schedule_text.iter().enumerate() {
        if let Some(d) = p.duration(&format!("{spath}[{j}]"), t) {
            retry_schedule.push(d);
        }
    }
    let (max_attempts, mpath) = pick!(max_attempts);
    let max_attempts = match max_attempts {
        Some(n) => p.positive(&mpath, n, 1),
        None => Some(schedule_text.len() as u32 + 1),
    };
    if max_attempts.is_some_and(|n| n > 1) && schedule_text.is_empty() {
        p.add(&spath, "must not be empty when max_attempts > 1");
    }
    let (daf, dpath) = pick!(disable_after_failures);
    let disable_after_failures = match daf {
        Some(n) => p.positive(&dpath, n, 0),
        None => Some(10),
    };
    let (ordered, _) = pick!(ordered);
    let ordered = ordered.unwrap_or(false);
    let (concurrency, cpath) = pick!(concurrency);
    let concurrency = match concurrency {
        Some(n) => p.positive(&cpath, n, 1),
        None => Some(64),
    };
    let concurrency = if ordered { Some(1) } else { concurrency };
    let (envelope, epath) = pick!(envelope);
    let envelope = match envelope.as_deref() {
        None | Some("standard") => Some(Envelope::Standard),
        Some("raw") => Some(Envelope::Raw),
        Some(other) => {
            p.add(epath, format_args!("'{other}' is not one of standard, raw"));
            None
        }
    };
    let (fields, fpath) = pick!(envelope_fields);
    let envelope_fields = fields.unwrap_or_default();
    for key in envelope_fields.keys() {
        if ENVELOPE_KEYS.contains(&key.as_str()) {
            p.add(
                format!("{fpath}.{key}"),
                "natshook writes this envelope field itself",
            );
        }
    }
    let (max_body, bpath) = pick!(max_body);
    let max_body = match max_body {
        Some(n) => p.positive(&bpath, n, 1).map(|n| n as usize),
        None => Some(1024 * 1024),
    };
    let (probe, ppath) = pick!(probe_interval);
    let probe_interval = match probe {
        Some(t) => p.duration(&ppath, &t),
        None => Some(Duration::from_secs(30)),
    };
    let (probe_max, pmpath) = pick!(probe_max_interval);
    let probe_max_interval = match probe_max {
        Some(t) => p.duration(&pmpath, &t),
        None => Some(Duration::from_secs(600)),
    };

    Some(Endpoint {
        name: name?,
        url: url?,
        events: events?,
        signer: signer?,
        headers,
        allow_http,
        target,
        secret_refs: ep
            .secret
            .as_ref()
            .map(|l| l.refs().into_iter().cloned().collect())
            .unwrap_or_default(),
        forward_headers,
        tls,
        timeout: timeout?,
        retry_schedule,
        max_attempts: max_attempts?,
        disable_after_failures: disable_after_failures?,
        concurrency: concurrency? as usize,
        envelope: envelope?,
        envelope_fields,
        ordered,
        max_body: max_body?,
        probe_interval: probe_interval?,
        probe_max_interval: probe_max_interval?,
    })
}

/// Checks the URL text with the guard's own policy: an address, in any spelling the
/// resolver reads as one (`127.1`, `0x7f000001`), is refused here for the reason it
/// would be refused at connect time; names are checked again on every resolved
/// address at connect time.
fn validate_url(text: &str, allow_http: bool, target: &TargetPolicy) -> Result<http::Uri, String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|e| format!("'{text}' is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if allow_http => {}
        Some("http") => {
            return Err("scheme must be https (set allow_http = true to permit http)".into())
        }
        _ => return Err(format!("'{text}' must be an absolute http(s) URL")),
    }
    let host = uri.host().ok_or_else(|| format!("'{text}' has no host"))?;
    target
        .check_host(host)
        .map_err(|refusal| refusal.to_string())?;
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [nats]
        stream = "EVENTS"
        [[events]]
        subject = "crm.lead.created"
        event = "lead.created"
        [[events]]
        subject = "helpdesk.ticket.*"
        event = "ticket.{3}"
        [[endpoints]]
        name = "crm"
        url = "https://crm.example.com/hooks"
        events = ["lead.created", "ticket.*"]
        secret = { value = "s3cret" }
    "#;

    fn problems(text: &str) -> Vec<String> {
        match Config::from_str(text, "toml") {
            Ok(_) => vec![],
            Err(e) => e.problems.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn every_mistyped_key_is_named_and_the_rest_still_validated() {
        let text = format!(
            "shutdown_grace = 5\n{GOOD}concurrency = \"many\"\nordered = 1\n[[endpoints]]\nname = 5\nurl = \"ftp://x\"\nevents = [\"*\"]\nsecret = \"s\"\nmax_attempts = \"7\"\n"
        );
        let p = problems(&text);
        for needle in [
            "shutdown_grace: invalid type: found signed int `5`, expected a string",
            "endpoints[0].concurrency: invalid type: found string \"many\"",
            "endpoints[0].ordered: invalid type: found signed int `1`, expected a boolean",
            "endpoints[1].max_attempts: invalid type: found string \"7\"",
            "endpoints[1].name: invalid type: found signed int `5`, expected a string",
            "endpoints[1].url:",
        ] {
            assert!(p.iter().any(|x| x.starts_with(needle)), "{needle} in {p:?}");
        }
        // Taken out for its type, the name is not reported missing as well.
        assert!(
            !p.iter().any(|x| x == "endpoints[1].name: required"),
            "{p:?}"
        );
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::from_str(GOOD, "toml").unwrap();
        assert_eq!(c.nats.urls, vec!["nats://127.0.0.1:4222"]);
        assert_eq!(c.nats.consumer_prefix, "natshook");
        assert_eq!(c.listen, "0.0.0.0:9464".parse().unwrap());
        let e = &c.endpoints[0];
        assert_eq!(e.timeout, Duration::from_secs(10));
        assert_eq!(e.max_attempts, 7);
        assert_eq!(e.retry_schedule.len(), 6);
        assert_eq!(e.retry_delay(1), Duration::from_secs(1));
        assert_eq!(e.retry_delay(6), Duration::from_secs(7200));
        assert_eq!(e.retry_delay(60), Duration::from_secs(7200));
        assert_eq!(e.disable_after_failures, 10);
        assert_eq!(e.concurrency, 64);
        assert_eq!(e.signer.scheme(), Scheme::Hex);
        assert_eq!(e.signer.header().as_str(), "x-webhook-signature");
        assert_eq!(e.envelope, Envelope::Standard);
        assert_eq!(c.shutdown_grace, Duration::from_secs(25));
    }

    #[test]
    fn endpoint_overrides_defaults_key_by_key() {
        let text = GOOD.replacen(
            "[[events]]",
            "[defaults]\ntimeout = \"2s\"\nsignature = { scheme = \"sha256\", header = \"X-Sig\" }\n[[events]]",
            1,
        ) + "signature = { scheme = \"standard\" }\nretry_schedule = [\"1s\"]\n";
        let c = Config::from_str(&text, "toml").unwrap();
        let e = &c.endpoints[0];
        assert_eq!(e.timeout, Duration::from_secs(2));
        assert_eq!(e.signer.scheme(), Scheme::Standard);
        assert_eq!(e.max_attempts, 2);
    }

    #[test]
    fn every_problem_is_listed_with_its_key_path() {
        let text = r#"
            shutdown_grace = "soon"
            [nats]
            stream = "EVENTS"
            [[events]]
            subject = "a..b"
            event = "x"
            [[endpoints]]
            name = "Bad Name"
            url = "http://example.com/x"
            events = ["x"]
            secret = { env = "NATSHOOK_TEST_UNSET_SECRET" }
            timout = "5s"
            [[endpoints]]
            name = "ok"
            url = "https://10.0.0.1/x"
            events = []
            secret = "v"
            timeout = "fast"
            headers = { "X-Webhook-Id" = "spoof" }
            signature = { scheme = "md5" }
        "#;
        let got = problems(text);
        let expect = [
            "shutdown_grace: 'soon' is not a duration",
            "events[0].subject: 'a..b' has an empty token",
            "endpoints[0].name: 'Bad Name' must match [a-z0-9_-]+",
            "endpoints[0].url: scheme must be https (set allow_http = true to permit http)",
            "endpoints[0].secret: environment variable NATSHOOK_TEST_UNSET_SECRET is not set",
            "endpoints[0].timout: unknown key",
            "endpoints[1].url: 10.0.0.1 is a private",
            "endpoints[1].events: must list at least one",
            "endpoints[1].timeout: 'fast' is not a duration",
            "endpoints[1].headers.X-Webhook-Id: natshook sets this header itself",
            "endpoints[1].signature.scheme: 'md5' is not one of hex, sha256, standard",
        ];
        for e in expect {
            assert!(
                got.iter().any(|g| g.starts_with(e)),
                "missing {e:?} in {got:#?}"
            );
        }
    }

    #[test]
    fn unknown_top_level_and_nested_keys_are_errors() {
        let got = problems(&format!(
            "{GOOD}\n[http]\nlisten = \"0.0.0.0:1\"\nlissten = 1\n"
        ));
        assert!(
            got.iter()
                .any(|g| g.starts_with("http.lissten: unknown key")),
            "{got:?}"
        );
        let got = problems(&GOOD.replace("secret = { value", "secret = { valeu"));
        assert!(
            got.iter()
                .any(|g| g.starts_with("endpoints[0].secret.valeu: unknown key")),
            "{got:?}"
        );
    }

    #[test]
    fn events_no_mapping_produces_is_an_error() {
        let got = problems(&GOOD.replace("[\"lead.created\", \"ticket.*\"]", "[\"lead.craeted\"]"));
        assert!(
            got.iter()
                .any(|g| g.starts_with("endpoints[0].events: no [[events]] mapping")),
            "{got:?}"
        );
    }

    #[test]
    fn yaml_twin_parses() {
        let yaml = r#"
nats:
  stream: EVENTS
events:
  - subject: crm.lead.created
    event: lead.created
endpoints:
  - name: crm
    url: https://crm.example.com/hooks
    events: ["*"]
    secret: { value: s3cret }
    envelope: raw
"#;
        let c = Config::from_str(yaml, "yaml").unwrap();
        assert_eq!(c.endpoints[0].envelope, Envelope::Raw);
    }

    const GOOD_YAML: &str = "nats:\n  stream: EVENTS\nevents:\n  - subject: a\n    event: a\nendpoints:\n  - name: x\n    url: https://example.com/\n    events: [\"*\"]\n    secret: s\n";

    fn problems_in(text: &str, format: &str) -> Vec<String> {
        match Config::from_str(text, format) {
            Ok(_) => vec![],
            Err(e) => e.problems.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn a_repeated_yaml_key_is_an_error_named_by_its_path() {
        let text = format!(
            "{GOOD_YAML}    allow_private: false\n    allow_private: true\n    headers: {{ X-A: a, \"X-A\": b }}\n    envelope_fields:\n      env: prod\n      nested: {{ k: 1, k: 2 }}\n      env: dev\n    timeout: fast\n"
        );
        let got = problems_in(&text, "yaml");
        for needle in [
            "endpoints[0].allow_private: repeated key (lines 11 and 12)",
            "endpoints[0].headers.X-A: repeated key (twice on line 13)",
            "endpoints[0].envelope_fields.nested.k: repeated key (twice on line 16)",
            "endpoints[0].envelope_fields.env: repeated key (lines 15 and 17)",
            // The rest is still validated.
            "endpoints[0].timeout: 'fast' is not a duration",
        ] {
            assert!(
                got.iter().any(|g| g.starts_with(needle)),
                "missing {needle:?} in {got:#?}"
            );
        }
        assert_eq!(got.len(), 5, "{got:#?}");
        // The same key in different mappings, or a value repeated, is fine.
        let text = format!(
            "{GOOD_YAML}    envelope_fields: {{ a: {{ x: 1 }}, b: {{ x: 1 }}, c: [x, x] }}\n"
        );
        assert!(Config::from_str(&text, "yaml").is_ok());
    }

    #[test]
    fn deep_nesting_is_refused_at_once() {
        let n = 100_000;
        for (format, text) in [
            ("yaml", format!("a: {}{}\n", "[".repeat(n), "]".repeat(n))),
            (
                "yaml",
                format!("a: {}1{}\n", "{a: ".repeat(n), "}".repeat(n)),
            ),
            ("yaml", format!("a:\n{}x\n", "- ".repeat(n))),
            ("toml", format!("a = {}{}\n", "[".repeat(n), "]".repeat(n))),
            // toml_edit's limits (80 levels, 80-part keys) multiply: 79 x 79 deep.
            (
                "toml",
                format!(
                    "a = {}1{}\n",
                    format!("{{ {} = ", ["k"; 79].join(".")).repeat(79),
                    "}".repeat(79)
                ),
            ),
        ] {
            let started = std::time::Instant::now();
            let got = problems_in(&text, format);
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{format}: {:?}",
                started.elapsed()
            );
            assert_eq!(got.len(), 1, "{got:?}");
            assert!(
                got[0].starts_with("config: nests deeper than 64 levels"),
                "{got:?}"
            );
        }
    }

    #[test]
    fn a_toml_syntax_error_is_one_line_with_its_place() {
        assert_eq!(
            problems("a = 1\n[nats\n"),
            vec!["config: TOML syntax error at line 2, column 6: invalid table header; expected `.`, `]`"]
        );
    }

    #[test]
    fn nesting_up_to_the_limit_passes_and_brackets_in_strings_do_not_count() {
        // The top-level table, endpoints and the endpoint are 3 levels.
        let nested = |levels: usize| "{ a = ".repeat(levels) + "1" + &" }".repeat(levels);
        let at = |levels: usize| format!("{GOOD}envelope_fields = {}\n", nested(levels));
        assert!(Config::from_str(&at(61), "toml").is_ok());
        let got = problems(&at(62));
        assert!(
            got[0].starts_with(
                "config: nests deeper than 64 levels (under endpoints[0].envelope_fields.a.a"
            ),
            "{got:?}"
        );
        let yaml = |levels: usize| {
            format!(
                "{GOOD_YAML}    envelope_fields: {}\n",
                nested(levels).replace(" =", ":")
            )
        };
        assert!(Config::from_str(&yaml(61), "yaml").is_ok());
        let got = problems_in(&yaml(62), "yaml");
        assert!(
            got[0].starts_with("config: nests deeper than 64 levels at line 11, column "),
            "{got:?}"
        );

        let brackets = "[{".repeat(5000);
        let text = format!(
            "{GOOD_YAML}    envelope_fields:\n      quoted: \"{brackets}\"\n      single: '{brackets}'\n      plain: a{brackets}\n      block: |\n        {brackets}\n    # {brackets}\n"
        );
        assert!(Config::from_str(&text, "yaml").is_ok());
        let text = format!(
            "{GOOD}envelope_fields = {{ basic = \"{brackets}\", literal = '{brackets}', multi = \"\"\"\n{brackets}\"\"\" }}\n# {brackets}\n"
        );
        assert!(Config::from_str(&text, "toml").is_ok());
    }

    /// Aliases repeat a collection inside another: the merged config is checked too.
    #[test]
    fn nesting_through_yaml_aliases_is_refused() {
        let text = format!(
            "{GOOD_YAML}    envelope_fields:\n      a: &deep {}1{}\n      b: {}*deep{}\n",
            "[".repeat(40),
            "]".repeat(40),
            "[".repeat(40),
            "]".repeat(40)
        );
        let got = problems_in(&text, "yaml");
        assert!(
            got[0].starts_with(
                "config: nests deeper than 64 levels (under endpoints[0].envelope_fields.b[0]"
            ),
            "{got:?}"
        );
    }

    #[test]
    fn env_values_figment_would_parse_too_deep_are_refused() {
        let deep = "[".repeat(65) + &"]".repeat(65);
        let err = shape::check_env_value("NATSHOOK__X", &deep).unwrap_err();
        assert_eq!(
            err.problems[0].to_string(),
            "NATSHOOK__X: nests deeper than 64 levels"
        );
        let deep_dict = "{a=".repeat(65) + "1" + &"}".repeat(65);
        assert!(shape::check_env_value("NATSHOOK__X", &deep_dict).is_err());
        for fine in [
            "[".repeat(64) + &"]".repeat(64),
            format!("\"{}\"", "[".repeat(1000)),
            format!("[\"\\\"{}\", 1]", "[".repeat(1000)),
            "['[', ']', '{'],".repeat(100),
            format!("secret{}", "[".repeat(1000)),
            format!("{{\"{}\" = 1}}", "{".repeat(1000)),
            "[[[[]]]],".repeat(1000),
        ] {
            assert!(
                shape::check_env_value("NATSHOOK__X", &fine).is_ok(),
                "{fine}"
            );
        }
    }

    #[test]
    fn nats_urls_are_checked_one_by_one() {
        let with_url = |url: &str| {
            GOOD.replace(
                "stream = \"EVENTS\"",
                &format!("stream = \"EVENTS\"\nurl = \"{url}\""),
            )
        };
        for (url, words) in [
            ("", "nats.url: must name at least one server"),
            (" ", "nats.url: must name at least one server"),
            (
                "x",
                "nats.url: 'x' is neither a URL nor host:port (e.g. nats://x:4222)",
            ),
            ("nats://", "nats.url: 'nats://' has no host"),
            ("nats://:4222", "nats.url: 'nats://:4222' is not a NATS URL"),
            (
                "nats://a\\u0001b:4222",
                "nats.url: 'nats://a\\u{1}b:4222' contains a control character",
            ),
            (
                "nats://a\\nb:4222",
                "nats.url: 'nats://a\\nb:4222' contains a control character",
            ),
            (
                "nats://%41:4222",
                "nats.url: 'nats://%41:4222': '%41' is not a host name or IP address",
            ),
            ("nats://h:0", "nats.url: 'nats://h:0': port 0"),
            (
                "nats://h:65536",
                "nats.url: 'nats://h:65536' is not a NATS URL",
            ),
            (
                "http://h:4222",
                "nats.url: 'http://h:4222' is not a NATS URL: invalid scheme",
            ),
            (
                "nats://a:4222,,nats://b:4222",
                "nats.url: an entry is empty",
            ),
        ] {
            let got = problems(&with_url(url));
            assert!(
                got.iter().any(|g| g.starts_with(words)),
                "{url:?}: missing {words:?} in {got:#?}"
            );
        }
        for url in [
            "nats://x",
            "nats://nats:4222",
            "localhost:4222",
            "[::1]:4222",
            "tls://user:pw@nats.example.com:4222",
            "ws://127.0.0.1",
            "wss://nats.example.com:443",
            "nats://a:4222, nats://[::1]:4223",
        ] {
            let c =
                Config::from_str(&with_url(url), "toml").unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(c.nats.urls.join(","), url.replace(", ", ","));
        }
    }

    #[test]
    fn other_spellings_of_a_private_address_are_refused_as_the_guard_refuses_them() {
        for (host, words) in [
            ("2130706433", "2130706433 is 127.0.0.1, a private, loopback or link-local address (set allow_private = true or allow_cidrs to permit it)"),
            ("0x7f000001", "0x7f000001 is 127.0.0.1, a private"),
            ("017700000001", "017700000001 is 127.0.0.1, a private"),
            ("127.1", "127.1 is 127.0.0.1, a private"),
            ("0177.0.0.1", "0177.0.0.1 is 127.0.0.1, a private"),
            ("0xa9fea9fe", "0xa9fea9fe is 169.254.169.254, a private"),
            ("[fe80::1%25lo]", "fe80::1%25lo is an IPv6 address with a zone id, which a webhook URL cannot use"),
        ] {
            let text = GOOD.replace("https://crm.example.com/hooks", &format!("https://{host}/hooks"));
            let got = problems(&text);
            let expected = format!("endpoints[0].url: {words}");
            assert!(
                got.iter().any(|g| g.starts_with(&expected)),
                "{host}: missing {expected:?} in {got:#?}"
            );
        }
        let text = GOOD.replace("https://crm.example.com/hooks", "https://134744072/hooks");
        assert!(Config::from_str(&text, "toml").is_ok());
    }

    #[test]
    fn ordered_forces_concurrency_one() {
        let c = Config::from_str(&format!("{GOOD}ordered = true\n"), "toml").unwrap();
        assert_eq!(c.endpoints[0].concurrency, 1);
    }
}
