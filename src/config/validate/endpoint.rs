//! `[[endpoints]]`: each key is the endpoint's own value, else `[defaults]`' (one key
//! at a time), else the default in [`defaults`]. A problem is named by the key path
//! the value came from, so a bad `[defaults]` value is reported once, under
//! `defaults.…`, however many endpoints use it (`Problems` keeps one of each).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use http::header::{HeaderName, HeaderValue};
use hyper_util::client::proxy::matcher::Matcher;

use super::super::defaults;
use super::super::model::{Endpoint, Envelope, TlsFiles};
use super::super::raw::{RawEndpoint, RawSettings, RawTls};
use super::super::Problems;
use super::proxy;
use super::tls::{tls_files, FileCheck, TlsPaths, INHERITED};
use super::url::endpoint_url;
use super::{valid_name, MAX_NAME_LEN, RESERVED_NAMES};
use crate::payload_filter::{PayloadFilter, Scalar};
use crate::routing::{tenant_id_problem, EventFilter, Router, TENANT_ID_RULE};
use crate::secret::{Secret, SecretList};
use crate::signing::{check_signing_secret, Scheme, Signer};
use crate::ssrf::TargetPolicy;

/// The forms a secret takes in a config file (the admin API words it for a JSON body:
/// `config::api`).
pub const SECRET_FORMS: &str =
    "webhooks are always signed ({ env = \"…\" }, { file = \"…\" } or { value = \"…\" })";

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

fn reserved_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    RESERVED_HEADERS.contains(&lower.as_str())
        || RESERVED_HEADER_PREFIXES
            .iter()
            .any(|pre| lower.starts_with(pre))
}

/// One endpoint's settings over `[defaults]`.
struct Settings<'a> {
    own: &'a RawSettings,
    defaults: &'a RawSettings,
    /// The endpoint's key path (`endpoints[1]`).
    path: &'a str,
}

impl Settings<'_> {
    /// The endpoint's value of a key, else `[defaults]`' value, and the key path it
    /// came from.
    fn pick<T: Clone>(
        &self,
        key: &str,
        field: fn(&RawSettings) -> &Option<T>,
    ) -> (Option<T>, String) {
        match field(self.own) {
            Some(v) => (Some(v.clone()), format!("{}.{key}", self.path)),
            None => (field(self.defaults).clone(), format!("defaults.{key}")),
        }
    }

    fn at(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }
}

/// `settings.pick("field", |r| &r.field)`, the key named once.
macro_rules! pick {
    ($settings:expr, $field:ident) => {
        $settings.pick(stringify!($field), |r| &r.$field)
    };
}

mod timing;
use timing::{attempts, probe_intervals, rate_limit};

/// Every `[[endpoints]]` entry that is valid; `settings` holds each entry's settings,
/// read on their own.
pub(super) fn endpoints(
    raw: Vec<RawEndpoint>,
    settings: Vec<RawSettings>,
    defaults: &RawSettings,
    router: &Router,
    require_one: bool,
    p: &mut Problems,
) -> Vec<Endpoint> {
    let mut endpoints = Vec::new();
    let mut names = HashSet::new();
    // Read once: every endpoint sees the same environment.
    let env_proxy = Matcher::from_env();
    if raw.is_empty() && require_one {
        p.add("endpoints", "at least one [[endpoints]] entry is required");
    }
    let settings = settings
        .into_iter()
        .chain(std::iter::repeat_with(RawSettings::default));
    for (i, (ep, own)) in raw.into_iter().zip(settings).enumerate() {
        let path = format!("endpoints[{i}]");
        if let Some(name) = &ep.name {
            if !names.insert(name.clone()) {
                p.add(
                    format!("{path}.name"),
                    format_args!("'{name}' is used by an earlier endpoint; names must be unique"),
                );
            }
        }
        let s = Settings {
            own: &own,
            defaults,
            path: &path,
        };
        if let Some(e) = validate_endpoint(ep, &s, router, &env_proxy, p) {
            endpoints.push(e);
        }
    }
    endpoints
}

fn validate_endpoint(
    ep: RawEndpoint,
    s: &Settings,
    router: &Router,
    env_proxy: &Matcher,
    p: &mut Problems,
) -> Option<Endpoint> {
    let name = match &ep.name {
        Some(n) if n.chars().count() > MAX_NAME_LEN => {
            p.add(
                s.at("name"),
                format_args!(
                    "{} characters, at most {MAX_NAME_LEN} allowed",
                    n.chars().count()
                ),
            );
            None
        }
        Some(n) if RESERVED_NAMES.contains(&n.as_str()) => {
            p.add(
                s.at("name"),
                format_args!("'{n}' is reserved: one of natshook's own consumers has this name"),
            );
            None
        }
        Some(n) if valid_name(n) => Some(n.clone()),
        Some(n) => {
            p.add(s.at("name"), format_args!("'{n}' must match [a-z0-9_-]+"));
            None
        }
        None => {
            p.add(s.at("name"), "required");
            None
        }
    };
    let (allow_http, target) = target(s, p);
    let url = match &ep.url {
        None => {
            p.add(s.at("url"), "required");
            None
        }
        Some(u) => endpoint_url(u, allow_http, &target)
            .map_err(|m| p.add(s.at("url"), m))
            .ok(),
    };
    let events = event_filter(ep.events.as_deref(), s, router, p);
    let tenant = tenant(ep.tenant, events.as_ref(), s, router, p);
    let filter = payload_filter(ep.filter.as_ref(), &s.at("filter"), p);
    let signer = signer(ep.secret.as_ref(), s, p);
    let headers = headers(s, p);
    let forward_headers = forward_headers(s, p);
    let tls = tls(s, p);
    let (raw_proxy, proxy_path) = pick!(s, proxy);
    // Left out everywhere, the environment decides; its problems belong to the endpoint.
    let proxy_path = if raw_proxy.is_none() {
        s.at("proxy")
    } else {
        proxy_path
    };
    let proxy = proxy::proxy(raw_proxy, &proxy_path, url.as_ref(), env_proxy, p);
    let attempts = attempts(s, p);
    let shape = request_shape(s, router.has_tenants(), p);
    let (probe_interval, probe_max_interval) = probe_intervals(s, p);
    let rate_limit = rate_limit(s, p);
    let (attempts, shape) = (attempts?, shape?);
    Some(Endpoint {
        name: name?,
        url: url?,
        events: events?,
        filter: filter?,
        signer: std::sync::Arc::new(signer?),
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
        proxy: proxy?,
        timeout: attempts.timeout,
        retry_schedule: attempts.retry_schedule,
        max_attempts: attempts.max_attempts,
        disable_after_failures: attempts.disable_after_failures,
        concurrency: shape.concurrency,
        envelope: shape.envelope,
        envelope_fields: shape.envelope_fields,
        tenant: tenant?,
        tenant_field: shape.tenant_field,
        ordered: shape.ordered,
        max_body: shape.max_body,
        probe_interval: probe_interval?,
        probe_max_interval: probe_max_interval?,
        rate_limit: rate_limit?,
        skip: None,
    })
}

/// `allow_http`, and which addresses the endpoint may reach (`allow_private`,
/// `allow_cidrs`).
fn target(s: &Settings, p: &mut Problems) -> (bool, TargetPolicy) {
    let (allow_http, _) = pick!(s, allow_http);
    let (allow_private, _) = pick!(s, allow_private);
    let (cidrs, cidrs_path) = pick!(s, allow_cidrs);
    let mut target = TargetPolicy {
        allow_private: allow_private.unwrap_or(defaults::ALLOW_PRIVATE),
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
    (allow_http.unwrap_or(defaults::ALLOW_HTTP), target)
}

/// The event names the endpoint takes; a list no `[[events]]` mapping can produce is
/// a problem (a typo would otherwise deliver nothing, silently).
fn event_filter(
    list: Option<&[String]>,
    s: &Settings,
    router: &Router,
    p: &mut Problems,
) -> Option<EventFilter> {
    match list {
        None => {
            p.add(
                s.at("events"),
                "required: the event names to deliver (\"*\" for all)",
            );
            None
        }
        Some([]) => {
            p.add(
                s.at("events"),
                "must list at least one event pattern (\"*\" for all)",
            );
            None
        }
        Some(list) => match EventFilter::parse(list) {
            Err((j, e)) => {
                p.add(
                    format!("{}.events[{j}]", s.path),
                    format_args!("'{}' {e}", list[j]),
                );
                None
            }
            Ok(filter) => {
                if !router.rules().is_empty()
                    && router
                        .filter_subjects(&filter, None)
                        .is_some_and(|subjects| subjects.is_empty())
                {
                    p.add(
                        s.at("events"),
                        "no [[events]] mapping produces any of these event names",
                    );
                }
                Some(filter)
            }
        },
    }
}

/// `tenant`: the one tenant whose messages the endpoint takes. A tenant that no
/// mapping producing the endpoint's events can give a message is a problem: the
/// endpoint would silently receive nothing. `None` when invalid, `Some(None)` when
/// the endpoint takes every message.
fn tenant(
    tenant: Option<String>,
    events: Option<&EventFilter>,
    s: &Settings,
    router: &Router,
    p: &mut Problems,
) -> Option<Option<String>> {
    let Some(tenant) = tenant else {
        return Some(None);
    };
    if let Some(problem) = tenant_id_problem(&tenant) {
        p.add(
            s.at("tenant"),
            format_args!("'{tenant}' is not a tenant id: it {problem} ({TENANT_ID_RULE})"),
        );
        return None;
    }
    if let Some(events) = events {
        let any = router.filter_subjects(events, None);
        let theirs = router.filter_subjects(events, Some(&tenant));
        if any.is_some_and(|a| !a.is_empty()) && theirs.is_some_and(|t| t.is_empty()) {
            p.add(
                s.at("tenant"),
                format_args!(
                    "no [[events]] mapping that produces these events gives a message the \
                     tenant '{tenant}' (set tenant or tenant_header on the mapping)"
                ),
            );
        }
    }
    Some(Some(tenant))
}

/// The signer: `secret` (a rotation list, newest first) under `signature`'s scheme and
/// header, merged with `[defaults]` key by key.
fn signer(list: Option<&SecretList>, s: &Settings, p: &mut Problems) -> Option<Signer> {
    let secrets = match list {
        None => {
            p.add(s.at("secret"), format!("required: {SECRET_FORMS}"));
            None
        }
        Some(list) => Some(p.secrets(list, &s.at("secret"))),
    };
    let (scheme, header) = signature(s, p);
    let (scheme, header, secrets) = (scheme?, header?, secrets?);
    if secrets.is_empty() {
        return None;
    }
    // Each entry on its own first, so the error names the one of a rotation list that
    // is wrong (a whpk_ public key, a whsk_ key under hex, bad base64).
    let mut keys_ok = true;
    for (path, secret) in &secrets {
        if let Err(e) = check_signing_secret(scheme, secret) {
            p.add(path.clone(), e);
            keys_ok = false;
        }
    }
    if !keys_ok {
        return None;
    }
    let secrets: Vec<Secret> = secrets.into_iter().map(|(_, s)| s).collect();
    Signer::new(scheme, header, secrets)
        .map_err(|e| p.add(s.at("secret"), e))
        .ok()
}

/// `signature.scheme` and `signature.header`.
fn signature(s: &Settings, p: &mut Problems) -> (Option<Scheme>, Option<HeaderName>) {
    // `sig_path` is `defaults.signature` when the endpoint has no table of its own.
    let (sig, sig_path) = pick!(s, signature);
    let sig = sig.unwrap_or_default();
    let dsig = s.defaults.signature.clone().unwrap_or_default();
    // Each key is named where its value came from: the endpoint, or `[defaults]`.
    let from = |own: Option<String>, default: Option<String>, key: &str, fallback: &str| match (
        own, default,
    ) {
        (Some(v), _) => (v, format!("{sig_path}.{key}")),
        (None, Some(v)) => (v, format!("defaults.signature.{key}")),
        (None, None) => (fallback.to_string(), format!("{sig_path}.{key}")),
    };
    let (scheme_text, scheme_path) = from(
        sig.scheme,
        dsig.scheme,
        "scheme",
        defaults::SIGNATURE_SCHEME,
    );
    let scheme = match scheme_text.parse::<Scheme>() {
        Ok(scheme) => Some(scheme),
        Err(()) => {
            p.add(
                scheme_path,
                format_args!("'{scheme_text}' is not one of hex, sha256, standard"),
            );
            None
        }
    };
    let own_header = sig.header.is_some();
    let (header_text, header_path) = from(
        sig.header,
        dsig.header,
        "header",
        defaults::SIGNATURE_HEADER,
    );
    let header = p.header_name(header_path.clone(), &header_text);
    if scheme == Some(Scheme::Standard) && own_header {
        p.add(
            header_path,
            "standard uses the webhook-id, webhook-timestamp and webhook-signature headers; header applies to hex and sha256",
        );
    } else if header.as_ref().is_some_and(|h| {
        reserved_header(h.as_str()) && !h.as_str().eq_ignore_ascii_case(defaults::SIGNATURE_HEADER)
    }) {
        p.add(
            header_path,
            "natshook sets this header itself; the signature cannot replace it",
        );
    }
    (scheme, header)
}

/// `headers`: extra request headers, their values read like secrets. Header names
/// ignore case, so two keys that differ only in case are one header set twice.
fn headers(s: &Settings, p: &mut Problems) -> Vec<(HeaderName, HeaderValue)> {
    let (headers_raw, headers_path) = pick!(s, headers);
    let mut headers = Vec::new();
    // Each header's name as written, by the name it is sent as.
    let mut written: HashMap<HeaderName, String> = HashMap::new();
    for (hname, value) in headers_raw.unwrap_or_default() {
        let hpath = format!("{headers_path}.{hname}");
        if reserved_header(&hname) {
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
        if let Some(first) = written.get(&n) {
            p.add(
                hpath,
                format_args!(
                    "the same header as '{first}' (header names ignore case); set it once"
                ),
            );
            continue;
        }
        written.insert(n.clone(), hname.clone());
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
    headers
}

/// `forward_headers`: NATS message headers copied onto the request.
fn forward_headers(s: &Settings, p: &mut Problems) -> Vec<HeaderName> {
    let (forward, fwd_path) = pick!(s, forward_headers);
    let mut forward_headers = Vec::new();
    for (j, name) in forward.unwrap_or_default().iter().enumerate() {
        let path = format!("{fwd_path}[{j}]");
        match p.header_name(&path, name) {
            None => {}
            Some(_) if reserved_header(name) => p.add(
                path,
                "natshook sets this header itself; it cannot be forwarded",
            ),
            Some(h) => forward_headers.push(h),
        }
    }
    forward_headers
}

/// `ca_file`, `cert_file` and `key_file`, the endpoint's own loaded as the client
/// set-up will (those from `[defaults]` are loaded once, by [`defaults_tls`]). A
/// certificate without its key (or a key without its certificate) is named where the
/// one that is set was written: a `[defaults]` half is one problem, not one per
/// endpoint.
fn tls(s: &Settings, p: &mut Problems) -> TlsFiles {
    let (ca_file, ca_path) = pick!(s, ca_file);
    let (cert_file, cert_path) = pick!(s, cert_file);
    let (key_file, key_path) = pick!(s, key_file);
    let set = if cert_file.is_some() {
        &cert_path
    } else {
        &key_path
    };
    let pair = if set.starts_with(INHERITED) {
        format!("{INHERITED}cert_file")
    } else {
        s.at("cert_file")
    };
    let raw = RawTls {
        ca_file,
        cert_file,
        key_file,
    };
    let at = TlsPaths {
        ca_file: ca_path,
        cert_file: cert_path,
        key_file: key_path,
        pair,
    };
    tls_files(raw, &at, LOADABLE, p)
}

/// Loads each endpoint TLS file as the client set-up will.
const LOADABLE: FileCheck = |key, f| crate::pem::check_tls_file(key, f).map_err(|e| e.to_string());

/// The `[defaults]` TLS files, loaded once for every endpoint that inherits them
/// (see [`INHERITED`]), whether or not one does.
pub(super) fn defaults_tls(defaults: &RawSettings, p: &mut Problems) {
    for (key, file) in [
        ("ca_file", &defaults.ca_file),
        ("cert_file", &defaults.cert_file),
        ("key_file", &defaults.key_file),
    ] {
        if let Some(f) = file {
            if let Err(e) = LOADABLE(key, f) {
                p.add(format!("{INHERITED}{key}"), e);
            }
        }
    }
}

/// How requests are made: in parallel or in order, and what their body holds.
struct RequestShape {
    concurrency: usize,
    ordered: bool,
    envelope: Envelope,
    envelope_fields: serde_json::Map<String, serde_json::Value>,
    tenant_field: Option<String>,
    max_body: usize,
}

/// `tenants`: some mapping gives messages a tenant, so `tenant_field` is written.
fn request_shape(s: &Settings, tenants: bool, p: &mut Problems) -> Option<RequestShape> {
    let (ordered, _) = pick!(s, ordered);
    let ordered = ordered.unwrap_or(defaults::ORDERED);
    let (concurrency, cpath) = pick!(s, concurrency);
    let concurrency = match concurrency {
        Some(n) => p.positive(&cpath, n, 1),
        None => Some(defaults::CONCURRENCY),
    };
    let concurrency = if ordered { Some(1) } else { concurrency };
    let (envelope, epath) = pick!(s, envelope);
    let envelope = match envelope.as_deref().unwrap_or(defaults::ENVELOPE) {
        "standard" => Some(Envelope::Standard),
        "raw" => Some(Envelope::Raw),
        other => {
            p.add(epath, format_args!("'{other}' is not one of standard, raw"));
            None
        }
    };
    let (fields, fpath) = pick!(s, envelope_fields);
    let envelope_fields = fields.unwrap_or_default();
    for key in envelope_fields.keys() {
        if ENVELOPE_KEYS.contains(&key.as_str()) {
            p.add(
                format!("{fpath}.{key}"),
                "natshook writes this envelope field itself",
            );
        }
    }
    let tenant_field = tenant_field(s, p);
    if let (Some(field), true, Some(Envelope::Standard)) = (&tenant_field, tenants, envelope) {
        if envelope_fields.contains_key(field) {
            p.add(
                format!("{fpath}.{field}"),
                "is also tenant_field, the field that carries the message's tenant; \
                 remove it, or set tenant_field to another name (\"\" for none)",
            );
        }
    }
    let (max_body, bpath) = pick!(s, max_body);
    let max_body = match max_body {
        Some(n) => p.positive(&bpath, n, 1).map(|n| n as usize),
        None => Some(defaults::MAX_BODY),
    };
    Some(RequestShape {
        concurrency: concurrency? as usize,
        ordered,
        envelope: envelope?,
        envelope_fields,
        tenant_field,
        max_body: max_body?,
    })
}

/// `tenant_field`: the standard envelope's top-level field for the message's tenant;
/// `""` writes none.
fn tenant_field(s: &Settings, p: &mut Problems) -> Option<String> {
    let (field, path) = pick!(s, tenant_field);
    match field.as_deref().unwrap_or(defaults::TENANT_FIELD) {
        "" => None,
        f if ENVELOPE_KEYS.contains(&f) => {
            p.add(
                path,
                format_args!("'{f}' is a field natshook writes itself"),
            );
            None
        }
        f => Some(f.to_string()),
    }
}

/// `filter`: each key a path into the payload, each value a list of JSON scalars.
/// Problems name the key quoted, since it holds dots: `endpoints[0].filter."data.x"`.
fn payload_filter(
    raw: Option<&BTreeMap<String, serde_json::Value>>,
    path: &str,
    p: &mut Problems,
) -> Option<PayloadFilter> {
    let Some(raw) = raw else {
        return Some(PayloadFilter::default());
    };
    let before = p.len();
    let mut keys = Vec::new();
    for (key, value) in raw {
        // A JSON string: quoted, with any quote or control character escaped.
        let at = format!("{path}.{}", serde_json::Value::from(key.as_str()));
        if let Err(e) = PayloadFilter::check_key(key) {
            p.add(&at, e);
            continue;
        }
        let Some(list) = value.as_array() else {
            p.add(
                &at,
                "must be a list of allowed values (strings, numbers, booleans, null)",
            );
            continue;
        };
        let mut values = Vec::with_capacity(list.len());
        for (i, v) in list.iter().enumerate() {
            match Scalar::from_json(v) {
                Some(s) => values.push(s),
                None => p.add(
                    format!("{at}[{i}]"),
                    "must be a string, number, boolean or null (objects and lists cannot be compared)",
                ),
            }
        }
        keys.push((key.as_str(), values));
    }
    if p.len() > before {
        return None;
    }
    PayloadFilter::new(keys)
        .map_err(|(key, e)| {
            let at = format!("{path}.{}", serde_json::Value::from(key.as_str()));
            p.add(at, e);
        })
        .ok()
}
