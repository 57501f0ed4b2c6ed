//! An endpoint described as JSON (an admin API body, a registry entry): the keys of a
//! file `[[endpoints]]` entry, checked by the same code as the file's entries, so a
//! runtime endpoint can be nothing a file entry could not. Problems are named by the
//! entry's own key (`url`, `events[0]`, `headers.X-Key`) in the words `natshook check`
//! uses; a problem of `[defaults]` keeps its `defaults.…` path.
//!
//! Besides the file's keys (`tenant` among them, checked and served as in the file) an
//! entry carries `enabled` and `description`, which say how the registry keeps it, not
//! how it delivers, and the keys the registrar writes itself: when a rotated secret's
//! grace ends, and which messages a re-enabled endpoint skips.

use figment::providers::Serialized;
use figment::Figment;
use serde_json::{Map, Value};

use super::model::{Backlog, Endpoint, EndpointDefaults, NetworkKeys};
use super::{load, Problem, Problems};
use crate::routing::Router;

/// Keys of a runtime endpoint that a file entry does not have.
pub const RUNTIME_KEYS: &[&str] = &[
    "enabled",
    "description",
    GRACE_KEY,
    SKIP_KEY,
    SKIP_THROUGH_KEY,
];

/// When a rotated secret's older secrets stop signing (RFC 3339): until then `secret`
/// lists the new one first and the older ones after it.
pub const GRACE_KEY: &str = "previous_secrets_until";

/// A new endpoint, or one re-enabled with `skip_backlog`, acks the messages stored
/// before this time (RFC 3339, the time of the request) without a request; it stays
/// in the record, so every replica and every restart skips the same messages.
pub const SKIP_KEY: &str = "skip_before";

/// With [`SKIP_KEY`]: the source stream's last sequence at that time, the last
/// message skipped (see [`Backlog`]).
pub const SKIP_THROUGH_KEY: &str = "skip_through";

/// The backlog `entry` skips, if it has one.
pub fn skip(entry: &Map<String, Value>) -> Option<Backlog> {
    Some(Backlog {
        before: humantime::parse_rfc3339_weak(entry.get(SKIP_KEY)?.as_str()?).ok()?,
        through: entry.get(SKIP_THROUGH_KEY).and_then(Value::as_u64),
    })
}

/// When the older secrets of `entry` stop signing, if they still do at `now`.
pub fn grace_until(
    entry: &Map<String, Value>,
    now: std::time::SystemTime,
) -> Option<std::time::SystemTime> {
    let until = entry.get(GRACE_KEY)?.as_str()?;
    let until = humantime::parse_rfc3339_weak(until).ok()?;
    (until > now).then_some(until)
}

/// The longest `description`: every list of endpoints carries it, for every endpoint.
pub const MAX_DESCRIPTION_LEN: usize = 1024;

/// Keys that name natshook's own files: a caller of the API must not make natshook
/// read them.
const FILE_KEYS: &[&str] = &["ca_file", "cert_file", "key_file"];

/// The proxy is the operator's: natshook trusts its address (the SSRF guard never
/// sees it), may send it credentials, and a proxy the operator mandates for egress
/// must not be left out by a caller. Through the API it comes from `[defaults]` or
/// the environment only.
const OPERATOR_KEYS: &[&str] = &["proxy"];

const OPERATOR_KEY: &str = "not allowed here: the outbound proxy is the operator's choice ([defaults] proxy or the environment's HTTPS_PROXY)";

/// The keys that widen which addresses and schemes an endpoint reaches: refused in a
/// runtime endpoint under [`NetworkKeys::Refused`].
const NETWORK_KEYS: &[&str] = &["allow_private", "allow_cidrs", "allow_http"];

const NETWORK_KEY: &str = "not allowed here: [registry] allow_network_keys = false keeps which addresses and schemes a runtime endpoint reaches to [defaults]";

const OWN_REFERENCE: &str = "{ env } and { file } are not allowed here: they would read natshook's own environment and files; send the value itself";

/// The endpoint `entry` describes, over the `[defaults]` and mappings in force and
/// what `[registry]` lets a runtime endpoint set.
pub fn endpoint_from_json(
    entry: &Map<String, Value>,
    defaults: &EndpointDefaults,
    router: &Router,
    network_keys: NetworkKeys,
) -> Result<Endpoint, Vec<Problem>> {
    let mut p = Problems::default();
    runtime_keys(entry, &mut p);
    let mut file_entry: Map<String, Value> = entry
        .iter()
        .filter(|(k, _)| !RUNTIME_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // Taken out before validation, which would read them.
    take_own_references(&mut file_entry, &mut p);
    if network_keys == NetworkKeys::Refused {
        take_network_keys(&mut file_entry, &mut p);
    }
    // Once the grace is over, only the newest secret signs.
    let in_grace = grace_until(entry, std::time::SystemTime::now()).is_some();
    if entry.contains_key(GRACE_KEY) && !in_grace {
        if let Some(Value::Array(secrets)) = file_entry.get_mut("secret") {
            secrets.truncate(1);
        }
    }
    let value = Figment::from(Serialized::defaults(&file_entry))
        .extract::<figment::value::Value>()
        .map_err(|e| vec![problem("body", e.to_string())])?;
    let endpoint = match load::endpoint_entry(value, defaults, router) {
        Ok(e) => Some(Endpoint {
            skip: skip(entry),
            signer: if in_grace {
                std::sync::Arc::new((*e.signer).clone().during_rotation_grace())
            } else {
                e.signer
            },
            ..e
        }),
        Err(found) => {
            p.0.extend(found);
            None
        }
    };
    match endpoint {
        Some(e) if p.is_empty() => Ok(e),
        _ => Err(p.0.into_iter().map(|p| by_field(p, network_keys)).collect()),
    }
}

pub(super) fn problem(path: &str, message: impl Into<String>) -> Problem {
    Problem {
        path: path.to_string(),
        message: message.into(),
    }
}

/// `endpoints[0].url` is the entry's `url`; a hint in a config file's words (`{ env =
/// … }`, which the API refuses) is given in a JSON body's.
fn by_field(mut p: Problem, network_keys: NetworkKeys) -> Problem {
    p.message = p
        .message
        .replace(
            super::validate::SECRET_FORMS,
            "webhooks are always signed: give the secret as a string, or rotate it (POST /api/endpoints/{name}/secret/rotate)",
        )
        .replace(
            super::validate::CREDENTIALS_AS_HEADER,
            "send them as a header (\"headers\": {\"Authorization\": \"…\"})",
        );
    p.message = p.message.replace(super::load::YAML_MAP_HINT, "");
    if let Some(rest) = p.path.strip_prefix("endpoints[0].") {
        p.path = rest.to_string();
    } else if p.path == "endpoints[0]" || p.path == "endpoints" {
        p.path = "body".to_string();
    }
    // The keys a file endpoint takes are not the API's: it refuses some, and has
    // keys of its own.
    let listed = p
        .message
        .strip_prefix(super::keys::UNKNOWN_KEY)
        .and_then(|rest| rest.strip_suffix(')'));
    if let Some(listed) = listed.filter(|_| !p.path.contains('.')) {
        let mut keys: Vec<&str> = (listed.split(", "))
            .filter(|k| !FILE_KEYS.contains(k) && !OPERATOR_KEYS.contains(k))
            .filter(|k| network_keys != NetworkKeys::Refused || !NETWORK_KEYS.contains(k))
            .collect();
        keys.extend(["description", "enabled", "skip_backlog"]);
        p.message = format!("{}{})", super::keys::UNKNOWN_KEY, keys.join(", "));
    }
    p
}

fn refers_to_own(v: &Value) -> bool {
    match v {
        Value::Object(o) => o.contains_key("env") || o.contains_key("file"),
        Value::Array(a) => a.iter().any(refers_to_own),
        _ => false,
    }
}

/// Takes out, as problems, whatever would make natshook read its own environment or
/// files, or choose where it connects besides the endpoint's URL. A secret taken out
/// leaves a placeholder so that it is not also "required".
fn take_own_references(entry: &mut Map<String, Value>, p: &mut Problems) {
    if entry.get("secret").is_some_and(refers_to_own) {
        p.add("secret", OWN_REFERENCE);
        entry.insert("secret".into(), Value::String("taken-out".into()));
    }
    if let Some(Value::Object(headers)) = entry.get_mut("headers") {
        headers.retain(|name, v| {
            let own = refers_to_own(v);
            if own {
                p.add(format!("headers.{name}"), OWN_REFERENCE);
            }
            !own
        });
    }
    for key in FILE_KEYS {
        if entry.remove(*key).is_some() {
            p.add(*key, "not allowed here: it would read natshook's own files");
        }
    }
    for key in OPERATOR_KEYS {
        if entry.remove(*key).is_some() {
            p.add(*key, OPERATOR_KEY);
        }
    }
}

/// Takes out, as problems, the keys that would widen what the endpoint reaches beyond
/// `[defaults]`. A value that narrows it (`false`, no ranges) or removes the key
/// (`null`) stays.
fn take_network_keys(entry: &mut Map<String, Value>, p: &mut Problems) {
    for key in NETWORK_KEYS {
        let widens = match entry.get(*key) {
            None | Some(Value::Null) | Some(Value::Bool(false)) => false,
            Some(Value::Array(ranges)) => !ranges.is_empty(),
            Some(_) => true,
        };
        if widens {
            entry.remove(*key);
            p.add(*key, NETWORK_KEY);
        }
    }
}

fn runtime_keys(entry: &Map<String, Value>, p: &mut Problems) {
    match entry.get("enabled") {
        None | Some(Value::Bool(_)) => {}
        Some(_) => p.add("enabled", "must be true or false"),
    }
    for key in [GRACE_KEY, SKIP_KEY] {
        if entry.get(key).is_some_and(|v| {
            v.as_str()
                .is_none_or(|t| humantime::parse_rfc3339_weak(t).is_err())
        }) {
            p.add(key, "must be an RFC 3339 time");
        }
    }
    if entry
        .get(SKIP_THROUGH_KEY)
        .is_some_and(|v| v.as_u64().is_none())
    {
        p.add(
            SKIP_THROUGH_KEY,
            "must be a stream sequence (a whole number)",
        );
    }
    match entry.get("description") {
        None | Some(Value::Null) => {}
        Some(Value::String(d)) if d.chars().count() > MAX_DESCRIPTION_LEN => p.add(
            "description",
            format_args!(
                "{} characters, at most {MAX_DESCRIPTION_LEN} allowed",
                d.chars().count()
            ),
        ),
        Some(Value::String(_)) => {}
        Some(_) => p.add("description", "must be a string"),
    }
}

/// The first key written twice in one object of the JSON document `bytes` (with the
/// keys of the objects around it, `headers.X-Key`), if any. A JSON parser keeps one
/// of the two, and parsers disagree on which: a platform's backend that checks the
/// first `tenant` while natshook stores the last would check one customer and store
/// another, so a body with a repeated key is refused instead. Not a JSON document:
/// `None`, for the parser's own error to name.
pub fn repeated_key(bytes: &[u8]) -> Option<String> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    RepeatedKey.deserialize(&mut de).ok().flatten()
}

/// Walks a JSON value for [`repeated_key`], keeping nothing but the keys of the
/// object it is in.
struct RepeatedKey;

impl<'de> serde::de::DeserializeSeed<'de> for RepeatedKey {
    type Value = Option<String>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for RepeatedKey {
    type Value = Option<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(inner) = seq.next_element_seed(RepeatedKey)? {
            found = found.or(inner);
        }
        Ok(found)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut keys = std::collections::HashSet::new();
        let mut found = None;
        while let Some(key) = map.next_key::<String>()? {
            let inner = map.next_value_seed(RepeatedKey)?;
            if found.is_none() {
                found = match keys.contains(&key) {
                    true => Some(key.clone()),
                    false => inner.map(|k| format!("{key}.{k}")),
                };
            }
            keys.insert(key);
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_written_twice_in_one_object_is_found_with_its_path() {
        let repeated = |text: &str| repeated_key(text.as_bytes());
        assert_eq!(repeated(r#"{"name": "a", "tenant": "t"}"#), None);
        assert_eq!(
            repeated(r#"{"tenant": "org_1", "name": "a", "tenant": "org_2"}"#),
            Some("tenant".into())
        );
        assert_eq!(
            repeated(r#"{"headers": {"X-Key": "a", "X-Key": "b"}}"#),
            Some("headers.X-Key".into())
        );
        assert_eq!(
            repeated(r#"{"events": [{"a": 1}, {"b": 1, "b": 2}]}"#),
            Some("events.b".into())
        );
        // Two objects may share keys; other letter case is another key.
        assert_eq!(repeated(r#"[{"a": 1}, {"a": 1}]"#), None);
        assert_eq!(repeated(r#"{"A": 1, "a": 1}"#), None);
        assert_eq!(repeated("{not json"), None);
    }

    fn config() -> super::super::Config {
        let text = "[nats]\nstream = \"E\"\n[defaults]\ntimeout = \"3s\"\n[[events]]\nsubject = \"events.*.lead.created\"\nevent = \"lead.created\"\ntenant = \"{2}\"\n[[endpoints]]\nname = \"file\"\nurl = \"https://example.com/\"\nevents = [\"*\"]\nsecret = \"s\"\n";
        match super::super::Config::from_str(text, "toml") {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    fn check(entry: Value) -> Result<Endpoint, Vec<String>> {
        check_under(entry, NetworkKeys::Allowed)
    }

    fn check_under(entry: Value, network_keys: NetworkKeys) -> Result<Endpoint, Vec<String>> {
        check_over(config(), entry, network_keys)
    }

    fn check_over(
        c: super::super::Config,
        entry: Value,
        network_keys: NetworkKeys,
    ) -> Result<Endpoint, Vec<String>> {
        let Value::Object(entry) = entry else {
            panic!("not an object")
        };
        endpoint_from_json(&entry, &c.endpoint_defaults, &c.router, network_keys)
            .map_err(|ps| ps.iter().map(|p| p.to_string()).collect())
    }

    #[test]
    fn refused_network_keys_may_narrow_but_not_widen() {
        let base = serde_json::json!({
            "name": "acme", "url": "https://acme.example.com/hook", "events": ["lead.created"],
            "secret": "s",
        });
        let mut wide = base.clone();
        wide["allow_private"] = true.into();
        wide["allow_cidrs"] = serde_json::json!(["10.1.0.0/16"]);
        wide["allow_http"] = true.into();
        let e = check(wide.clone()).unwrap();
        assert!(e.target.allow_private && e.allow_http);
        let problems = check_under(wide, NetworkKeys::Refused).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        for (key, p) in ["allow_private", "allow_cidrs", "allow_http"]
            .iter()
            .zip(&problems)
        {
            assert!(
                p.starts_with(&format!(
                    "{key}: not allowed here: [registry] allow_network_keys = false"
                )),
                "{p}"
            );
        }
        // Over defaults that widen it, an endpoint may still narrow it.
        let wide_defaults = "[nats]\nstream = \"E\"\n[defaults]\nallow_private = true\nallow_http = true\nallow_cidrs = [\"10.1.0.0/16\"]\n[[events]]\nsubject = \"events.*.lead.created\"\nevent = \"lead.created\"\n[[endpoints]]\nname = \"file\"\nurl = \"https://example.com/\"\nevents = [\"*\"]\nsecret = \"s\"\n";
        let c = || super::super::Config::from_str(wide_defaults, "toml").unwrap();
        let e = check_over(c(), base.clone(), NetworkKeys::Refused).unwrap();
        assert!(e.target.allow_private && e.allow_http && e.target.allow_cidrs.len() == 1);
        let mut narrow = base;
        narrow["allow_private"] = false.into();
        narrow["allow_cidrs"] = serde_json::json!([]);
        narrow["allow_http"] = false.into();
        let e = check_over(c(), narrow.clone(), NetworkKeys::Refused).unwrap();
        assert!(!e.target.allow_private && e.target.allow_cidrs.is_empty() && !e.allow_http);
        narrow["allow_http"] = Value::Null;
        let e = check_over(c(), narrow, NetworkKeys::Refused).unwrap();
        assert!(e.allow_http, "null removes the key: the default applies");
    }

    #[test]
    fn with_the_registry_the_file_needs_no_endpoint() {
        let base = "[nats]\nstream = \"E\"\n[[events]]\nsubject = \"a\"\nevent = \"a\"\n";
        let without = super::super::Config::from_str(base, "toml").unwrap_err();
        assert!(without
            .to_string()
            .contains("at least one [[endpoints]] entry"));
        let with = format!("[registry]\nenabled = true\nreplicas = 3\n{base}");
        let c = super::super::Config::from_str(&with, "toml").unwrap();
        assert!(c.endpoints.is_empty());
        assert_eq!(c.registry.map(|r| r.replicas), Some(3));
    }

    /// The `[defaults]` TLS files are loaded once, with the config, whether an
    /// endpoint inherits them or not; a runtime endpoint inherits them without
    /// loading them again (a CA bundle loaded for each of thousands of records would
    /// cost seconds at start and at every reload), and the client set-up reads them
    /// when it starts.
    #[test]
    fn the_defaults_tls_files_are_loaded_with_the_config_not_for_each_runtime_endpoint() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let text = format!(
            "[registry]\nenabled = true\n[nats]\nstream = \"E\"\n[defaults]\nca_file = \"{}\"\n[[events]]\nsubject = \"a\"\nevent = \"a\"\n",
            ca.display()
        );
        std::fs::write(&ca, "not a certificate\n").unwrap();
        let refused = super::super::Config::from_str(&text, "toml").unwrap_err();
        assert!(
            refused.to_string().contains(&format!(
                "defaults.ca_file: no certificate in {}",
                ca.display()
            )),
            "{refused}"
        );

        let pem = rcgen::generate_simple_self_signed(vec!["ca.test".to_string()])
            .unwrap()
            .cert
            .pem();
        std::fs::write(&ca, pem).unwrap();
        let c = super::super::Config::from_str(&text, "toml").unwrap();
        std::fs::remove_file(&ca).unwrap();
        let e = check_over(
            c,
            serde_json::json!({"name": "acme", "url": "https://acme.example.com/hook",
                "events": ["a"], "secret": "whsec_c2VjcmV0"}),
            NetworkKeys::Allowed,
        )
        .unwrap();
        assert_eq!(e.tls.ca_file.as_deref(), Some(ca.as_path()));
    }

    #[test]
    fn allow_network_keys_is_read_from_the_registry_section() {
        let base = "[nats]\nstream = \"E\"\n[[events]]\nsubject = \"a\"\nevent = \"a\"\n";
        let read = |registry: &str| {
            let text = format!("[registry]\nenabled = true\n{registry}{base}");
            super::super::Config::from_str(&text, "toml").map(|c| NetworkKeys::of(&c))
        };
        assert_eq!(read("").unwrap(), NetworkKeys::Allowed);
        assert_eq!(
            read("allow_network_keys = false\n").unwrap(),
            NetworkKeys::Refused
        );
        let wrong = read("allow_network_keys = \"no\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            wrong.contains("registry.allow_network_keys: invalid type"),
            "{wrong}"
        );
    }

    #[test]
    fn a_valid_entry_takes_the_file_defaults() {
        let e = check(serde_json::json!({
            "name": "acme", "url": "https://acme.example.com/hook", "events": ["lead.created"],
            "secret": "whsec_c2VjcmV0", "signature": {"scheme": "standard"},
            "tenant": "org_1", "enabled": true, "description": "Acme CRM", "concurrency": 4
        }))
        .unwrap();
        assert_eq!(e.name, "acme");
        assert_eq!(e.timeout, std::time::Duration::from_secs(3));
        assert_eq!(e.concurrency, 4);
        assert_eq!(e.tenant.as_deref(), Some("org_1"));
    }

    #[test]
    fn skip_before_is_read_from_the_record_and_checked() {
        let base = serde_json::json!({
            "name": "acme", "url": "https://acme.example.com/hook", "events": ["lead.created"],
            "secret": "s",
        });
        assert_eq!(check(base.clone()).unwrap().skip, None);
        let mut with = base.clone();
        with["skip_before"] = "2026-12-02T10:00:00.250Z".into();
        let before = humantime::parse_rfc3339("2026-12-02T10:00:00.250Z").unwrap();
        let skip = Backlog {
            before,
            through: None,
        };
        assert_eq!(check(with.clone()).unwrap().skip, Some(skip));
        with["skip_through"] = 41.into();
        let skip = Backlog {
            through: Some(41),
            ..skip
        };
        assert_eq!(check(with).unwrap().skip, Some(skip));
        let mut bad = base;
        bad["skip_before"] = "yesterday".into();
        bad["skip_through"] = (-1).into();
        let problems = check(bad).unwrap_err();
        assert_eq!(
            problems,
            [
                "skip_before: must be an RFC 3339 time",
                "skip_through: must be a stream sequence (a whole number)"
            ]
        );
    }

    #[test]
    fn every_problem_is_named_by_its_field_in_check_words() {
        let problems = check(serde_json::json!({
            "name": "Bad Name", "url": "http://10.0.0.1/", "events": ["nothing.maps.this"],
            "secret": {"env": "HOME"}, "headers": {"X-Key": {"file": "/etc/passwd"}},
            "timeout": 5, "bogus": 1, "ca_file": "/etc/ssl/x.pem",
            "proxy": {"url": "http://127.0.0.1:3128", "username": "x", "password": {"file": "/proc/self/environ"}}
        }))
        .unwrap_err();
        let text = problems.join("\n");
        let bogus = problems.iter().find(|p| p.starts_with("bogus:")).unwrap();
        assert!(bogus.contains("allow_private"), "{bogus}");
        let refused = check_under(serde_json::json!({"bogus": 1}), NetworkKeys::Refused)
            .unwrap_err()
            .join("\n");
        assert!(refused.contains("bogus: unknown key"), "{refused}");
        assert!(!refused.contains("allow_private"), "{refused}");
        assert!(
            !bogus.contains("ca_file") && !bogus.contains("proxy"),
            "{bogus}"
        );
        for expected in [
            "name: 'Bad Name' must match [a-z0-9_-]+",
            "url: scheme must be https (set allow_http = true to permit http)",
            "secret: { env } and { file } are not allowed here",
            "headers.X-Key: { env } and { file } are not allowed here",
            "ca_file: not allowed here",
            "proxy: not allowed here: the outbound proxy is the operator's choice",
            "bogus: unknown key",
            "timeout:",
            ", description, enabled, skip_backlog)",
            "events: no [[events]] mapping produces any of these event names",
        ] {
            assert!(text.contains(expected), "{expected}\nin:\n{text}");
        }
    }

    /// The hints a 422 gives are in a JSON body's words, never the `{ env }` the API
    /// refuses.
    #[test]
    fn hints_speak_of_a_json_body() {
        let problems = check(serde_json::json!({
            "name": "x", "url": "https://user:pw@example.com/", "events": ["*"],
        }))
        .unwrap_err()
        .join("\n");
        assert!(!problems.contains("{ env"), "{problems}");
        assert!(
            problems.contains("give the secret as a string"),
            "{problems}"
        );
        assert!(
            problems.contains("\"headers\": {\"Authorization\""),
            "{problems}"
        );
        // An object where text is wanted is a JSON object here, not YAML's `{2}`.
        let problems = check(serde_json::json!({
            "name": "x", "url": "https://example.com/", "events": ["*"], "secret": "s",
            "tenant": {"a": 1},
        }))
        .unwrap_err()
        .join("\n");
        assert!(
            problems.contains("tenant: invalid type: found map"),
            "{problems}"
        );
        assert!(!problems.contains("YAML"), "{problems}");
    }
}
