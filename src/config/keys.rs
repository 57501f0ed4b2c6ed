//! Unknown keys are errors: a misspelt key must never silently change where webhooks
//! go. The allowed keys of each table are the fields of its raw shape
//! ([`field_names`]), so they cannot drift apart.

use figment::value::Value;

use super::raw::{
    field_names, RawAdmin, RawConfig, RawDeadLetter, RawDelivery, RawDeliveryLog, RawEndpoint,
    RawEvent, RawHttp, RawIngress, RawNats, RawProxyTable, RawRegistry, RawRoute, RawSettings,
    RawSignature, RawTls, RawTracing, RawVerify,
};
use super::Problems;
use crate::secret::SecretRefTable;

/// How the problem of an unknown key begins; the allowed keys and `)` follow.
pub const UNKNOWN_KEY: &str = "unknown key (expected one of: ";

/// The keys of the top level that are not sections: in TOML, one written below a
/// `[section]` header lands in that section.
const TOP_LEVEL_VALUES: &[&str] = &["shutdown_grace"];

/// Reports each key of the table `value` (at key path `path`) that none of `allowed`
/// lists. Anything but a table is left to the type checks.
pub fn unknown_keys(value: Option<&Value>, path: &str, allowed: &[&[&str]], p: &mut Problems) {
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
            // A section's own key path: `nats`, not `endpoints[0]` or `nats.tls`.
            let in_section = !path.is_empty() && !path.contains(['.', '[']);
            let hint = match in_section && TOP_LEVEL_VALUES.contains(&key.as_str()) {
                true => format!("; {key} is a top-level key: in TOML write it above the first [section], since every key after a [section] header belongs to that section"),
                false => String::new(),
            };
            p.add(at, format_args!("{UNKNOWN_KEY}{}){hint}", all.join(", ")));
        }
    }
}

/// The tables at the top level, each with its keys.
fn sections() -> [(&'static str, &'static [&'static str]); 10] {
    [
        ("nats", field_names::<RawNats>()),
        ("http", field_names::<RawHttp>()),
        ("defaults", field_names::<RawSettings>()),
        ("delivery", field_names::<RawDelivery>()),
        ("dead_letter", field_names::<RawDeadLetter>()),
        ("delivery_log", field_names::<RawDeliveryLog>()),
        ("admin", field_names::<RawAdmin>()),
        ("ingress", field_names::<RawIngress>()),
        ("tracing", field_names::<RawTracing>()),
        ("registry", field_names::<RawRegistry>()),
    ]
}

/// The override a variable spelt with single underscores most likely meant:
/// `NATSHOOK_NATS_URL` → `NATSHOOK__NATS__URL`, when what follows `NATSHOOK_` is a
/// section and one of its keys (or a top-level key). Names of anything else (a
/// Kubernetes service's `NATSHOOK_SERVICE_HOST`, a variable of one's own) are none.
pub fn override_meant(variable: &str) -> Option<String> {
    let rest = variable.strip_prefix("NATSHOOK_")?;
    if rest.starts_with('_') {
        return None;
    }
    let lower = rest.to_ascii_lowercase();
    let meant = |path: &[&str]| format!("NATSHOOK__{}", path.join("__").to_ascii_uppercase());
    if TOP_LEVEL_VALUES.contains(&lower.as_str()) {
        return Some(meant(&[&lower]));
    }
    sections().into_iter().find_map(|(section, keys)| {
        let key = lower.strip_prefix(section)?.strip_prefix('_')?;
        keys.contains(&key).then(|| meant(&[section, key]))
    })
}

/// The keys of a secret table (`{ env }`, `{ file }`, `{ value }`).
pub fn secret_keys() -> &'static [&'static str] {
    field_names::<SecretRefTable>()
}

/// Unknown keys of each secret of a secret list: one secret (at `path`) or several
/// (at `path[j]`).
pub fn unknown_secret_list_keys(value: Option<&Value>, path: &str, p: &mut Problems) {
    match value {
        Some(Value::Array(_, list)) => {
            for (j, s) in list.iter().enumerate() {
                unknown_keys(Some(s), &format!("{path}[{j}]"), &[secret_keys()], p);
            }
        }
        other => unknown_keys(other, path, &[secret_keys()], p),
    }
}

fn items(value: Option<&Value>) -> Vec<&Value> {
    match value {
        Some(Value::Array(_, v)) => v.iter().collect(),
        _ => Vec::new(),
    }
}

/// `[defaults]` or an endpoint (whose own keys are `extra`).
fn settings(value: &Value, path: &str, extra: &[&str], p: &mut Problems) {
    unknown_keys(Some(value), path, &[field_names::<RawSettings>(), extra], p);
    unknown_keys(
        value.find_ref("signature"),
        &format!("{path}.signature"),
        &[field_names::<RawSignature>()],
        p,
    );
    let proxy = value.find_ref("proxy");
    let proxy_at = format!("{path}.proxy");
    unknown_keys(proxy, &proxy_at, &[field_names::<RawProxyTable>()], p);
    unknown_keys(
        proxy.and_then(|v| v.find_ref("password")),
        &format!("{proxy_at}.password"),
        &[secret_keys()],
        p,
    );
    if let Some(Value::Dict(_, headers)) = value.find_ref("headers") {
        for (name, v) in headers {
            let at = format!("{path}.headers.{name}");
            unknown_keys(Some(v), &at, &[secret_keys()], p);
        }
    }
}

/// Unknown keys under `[ingress]`, reported like the rest of the config's.
fn ingress(ingress: Option<&Value>, p: &mut Problems) {
    unknown_keys(ingress, "ingress", &[field_names::<RawIngress>()], p);
    let Some(Value::Array(_, routes)) = ingress.and_then(|i| i.find_ref("routes")) else {
        return;
    };
    for (i, r) in routes.iter().enumerate() {
        let at = format!("ingress.routes[{i}]");
        unknown_keys(Some(r), &at, &[field_names::<RawRoute>()], p);
        let verify = r.find_ref("verify");
        let verify_at = format!("{at}.verify");
        unknown_keys(verify, &verify_at, &[field_names::<RawVerify>()], p);
        let secret = verify.and_then(|v| v.find_ref("secret"));
        unknown_secret_list_keys(secret, &format!("{verify_at}.secret"), p);
    }
}

pub(super) fn check_unknown_keys(value: &Value, p: &mut Problems) {
    let section = |key: &str| value.find_ref(key);
    let secret = |key: &str, p: &mut Problems| unknown_keys(section(key), key, &[secret_keys()], p);
    unknown_keys(Some(value), "", &[field_names::<RawConfig>()], p);
    // `[defaults]` and `[ingress]` hold tables of their own, checked below.
    for (key, allowed) in sections() {
        if !matches!(key, "defaults" | "ingress") {
            unknown_keys(section(key), key, &[allowed], p);
        }
    }
    secret("nats.token", p);
    secret("nats.password", p);
    unknown_keys(
        section("nats.tls"),
        "nats.tls",
        &[field_names::<RawTls>()],
        p,
    );
    secret("admin.token", p);
    ingress(section("ingress"), p);
    if let Some(defaults) = section("defaults") {
        settings(defaults, "defaults", &[], p);
    }
    for (i, ev) in items(section("events")).into_iter().enumerate() {
        unknown_keys(
            Some(ev),
            &format!("events[{i}]"),
            &[field_names::<RawEvent>()],
            p,
        );
    }
    for (i, ep) in items(section("endpoints")).into_iter().enumerate() {
        let path = format!("endpoints[{i}]");
        settings(ep, &path, field_names::<RawEndpoint>(), p);
        unknown_secret_list_keys(ep.find_ref("secret"), &format!("{path}.secret"), p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_override_with_single_underscores_is_read_as_the_key_it_spells() {
        for (variable, meant) in [
            ("NATSHOOK_NATS_URL", Some("NATSHOOK__NATS__URL")),
            (
                "NATSHOOK_DELIVERY_MAX_INFLIGHT",
                Some("NATSHOOK__DELIVERY__MAX_INFLIGHT"),
            ),
            (
                "NATSHOOK_DELIVERY_LOG_ENABLED",
                Some("NATSHOOK__DELIVERY_LOG__ENABLED"),
            ),
            ("NATSHOOK_SHUTDOWN_GRACE", Some("NATSHOOK__SHUTDOWN_GRACE")),
            ("NATSHOOK__NATS__URL", None),
            ("NATSHOOK_SERVICE_HOST", None),
            ("NATSHOOK_PORT_9464_TCP", None),
            ("NATSHOOK_BIN", None),
            ("NATSHOOK_CONFIG", None),
            ("OTHER_NATS_URL", None),
        ] {
            assert_eq!(override_meant(variable).as_deref(), meant, "{variable}");
        }
    }
}
