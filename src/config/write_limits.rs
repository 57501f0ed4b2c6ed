//! What a write through the admin API or `natshook endpoints` may set on a runtime
//! endpoint beyond what validation checks: `[registry]`'s limits on its delivery
//! settings, and a secret long enough to keep. Where customers give the values, one
//! customer's endpoint must not take what every other endpoint needs.

use serde_json::{Map, Value};

use super::api::problem;
use super::model::{NetworkKeys, RuntimeLimits};
use super::{Config, Problem};

/// The keys of `entry` (a create body, or a change) past what a write may set:
/// `[registry]`'s limits on `timeout`, `concurrency`, and each delay of
/// `retry_schedule`, `probe_interval` and `probe_max_interval`, and a `secret` too
/// short to keep ([`short_secrets`]). A value that does not parse is left to the
/// endpoint's own check, which names it.
pub fn problems(entry: &Map<String, Value>, limits: &RuntimeLimits) -> Vec<Problem> {
    let duration = |v: &Value| {
        v.as_str()
            .and_then(|t| humantime::parse_duration(t.trim()).ok())
    };
    let mut found = Vec::new();
    if let Some(t) = entry.get("timeout").and_then(duration) {
        if t > limits.max_timeout {
            let max = humantime::format_duration(limits.max_timeout);
            found.push(problem(
                "timeout",
                format!("must be at most {max} ([registry] max_timeout)"),
            ));
        }
    }
    if let Some(n) = entry.get("concurrency").and_then(Value::as_u64) {
        if n > limits.max_concurrency as u64 {
            let max = limits.max_concurrency;
            found.push(problem(
                "concurrency",
                format!("must be at most {max} ([registry] max_concurrency)"),
            ));
        }
    }
    let min = humantime::format_duration(limits.min_retry_delay);
    let short = |d: Option<std::time::Duration>| d.is_some_and(|d| d < limits.min_retry_delay);
    let too_short = format!("must be at least {min} ([registry] min_retry_delay)");
    if let Some(Value::Array(delays)) = entry.get("retry_schedule") {
        for (j, d) in delays.iter().enumerate() {
            if short(duration(d)) {
                found.push(problem(&format!("retry_schedule[{j}]"), too_short.as_str()));
            }
        }
    }
    for key in ["probe_interval", "probe_max_interval"] {
        if short(entry.get(key).and_then(duration)) {
            found.push(problem(key, too_short.as_str()));
        }
    }
    found.extend(short_secrets(entry));
    found
}

/// The fewest key bytes a secret a write gives may hold; a generated one holds 32.
const MIN_SECRET_BYTES: usize = 16;

/// The secrets of `entry` (a string, or a rotation list) with fewer than
/// [`MIN_SECRET_BYTES`] key bytes: a `whsec_` secret's once decoded, another's as
/// written. Where customers choose secrets, one of a few bytes can be guessed from a
/// single signed request. `whsk_`/`whpk_` keys have a size of their own, and a value
/// that is no string is left to the endpoint's own check.
fn short_secrets(entry: &Map<String, Value>) -> Vec<Problem> {
    use base64::Engine;
    // Under `standard` a `whsec_` secret's key is its base64 decoded, under the other
    // schemes the whole text: the text after the prefix is the most either keeps
    // secret, and the decoded key when it decodes.
    let key_bytes = |s: &str| match s.strip_prefix("whsec_") {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_or(b64.len(), |k| k.len().min(b64.len())),
        None if s.starts_with("whsk_") || s.starts_with("whpk_") => usize::MAX,
        None => s.len(),
    };
    let message = format!(
        "must hold at least {MIN_SECRET_BYTES} bytes (a generated one holds 32): a shorter one can be guessed"
    );
    let given: Vec<(String, &str)> = match entry.get("secret") {
        Some(Value::String(s)) => vec![("secret".to_string(), s.as_str())],
        Some(Value::Array(list)) => (list.iter().enumerate())
            .filter_map(|(i, v)| Some((format!("secret[{i}]"), v.as_str()?)))
            .collect(),
        _ => Vec::new(),
    };
    given
        .into_iter()
        .filter(|(_, s)| key_bytes(s) < MIN_SECRET_BYTES)
        .map(|(path, _)| problem(&path, message.as_str()))
        .collect()
}

/// The `[registry]` limits tighter than what a runtime endpoint gets for a key it does
/// not set (`[defaults]`, else natshook's own default): such a limit holds only for
/// the customers who set the key, which natshook warns of at start and on reload
/// (not refused: `[defaults]` is the file endpoints' too, and a config valid before
/// the limits existed stays valid). Nothing when no such endpoint can be made.
pub fn below_defaults(config: &Config, limits: &RuntimeLimits) -> Vec<Problem> {
    let sample = serde_json::json!({
        "name": "limits", "url": "https://example.com/", "events": ["*"], "secret": "limits",
        "ordered": false,
    });
    let Some(sample) = sample.as_object() else {
        return Vec::new();
    };
    let Ok(e) = super::api::endpoint_from_json(
        sample,
        &config.endpoint_defaults,
        &config.router,
        NetworkKeys::Allowed,
    ) else {
        return Vec::new();
    };
    let below = |limit: &str, key: &str, default: String| {
        problem(
            &format!("registry.{limit}"),
            format!("is tighter than the {key} a runtime endpoint gets without setting it ({default}), which it keeps: set [defaults] {key} within the limit to hold every runtime endpoint to it"),
        )
    };
    let shown = |d: std::time::Duration| humantime::format_duration(d).to_string();
    let mut found = Vec::new();
    if e.timeout > limits.max_timeout {
        found.push(below("max_timeout", "timeout", shown(e.timeout)));
    }
    if e.concurrency > limits.max_concurrency {
        found.push(below(
            "max_concurrency",
            "concurrency",
            e.concurrency.to_string(),
        ));
    }
    let delays = [
        ("retry_schedule", e.retry_schedule.iter().min().copied()),
        ("probe_interval", Some(e.probe_interval)),
        ("probe_max_interval", Some(e.probe_max_interval)),
    ];
    for (key, shortest) in delays {
        if let Some(d) = shortest.filter(|d| *d < limits.min_retry_delay) {
            found.push(below("min_retry_delay", key, shown(d)));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only what a write sets is held to the limits, each key named, and a value that
    /// does not parse is left to the endpoint's own check.
    #[test]
    fn a_write_past_the_registry_limits_is_refused_key_by_key() {
        let limits = RuntimeLimits::default();
        let over = serde_json::json!({
            "timeout": "10y",
            "concurrency": 100000,
            "retry_schedule": ["1ms", "5s", "500ms"],
            "probe_interval": "10ms",
            "probe_max_interval": "2s",
        });
        let found: Vec<String> = problems(over.as_object().unwrap(), &limits)
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect();
        assert_eq!(
            found,
            [
                "timeout: must be at most 1m ([registry] max_timeout)",
                "concurrency: must be at most 64 ([registry] max_concurrency)",
                "retry_schedule[0]: must be at least 1s ([registry] min_retry_delay)",
                "retry_schedule[2]: must be at least 1s ([registry] min_retry_delay)",
                "probe_interval: must be at least 1s ([registry] min_retry_delay)",
            ]
        );
        let within = serde_json::json!({
            "timeout": "60s", "concurrency": 64, "retry_schedule": ["1s"], "bogus": "1ms",
            "probe_interval": "soon", "secret": ["0123456789abcdef", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
        });
        assert!(problems(within.as_object().unwrap(), &limits).is_empty());
        let short = serde_json::json!({
            "secret": ["long-enough-secret", "a", "whsec_YWJj", "whsec_secret1"],
        });
        let found: Vec<String> = problems(short.as_object().unwrap(), &limits)
            .into_iter()
            .map(|p| p.path)
            .collect();
        assert_eq!(found, ["secret[1]", "secret[2]", "secret[3]"]);
    }

    /// A limit tighter than the default a customer gets by leaving the key out is
    /// found (and warned of), naming the `[defaults]` key to set with it; the config
    /// stays valid.
    #[test]
    fn a_limit_below_the_defaults_is_found() {
        let text = |registry: &str, defaults: &str| {
            format!("[nats]\nstream = \"E\"\n[admin]\nenabled = true\ntoken = {{ value = \"0123456789abcdef0123\" }}\n[registry]\nenabled = true\n{registry}\n[defaults]\n{defaults}\n[[events]]\nsubject = \"a\"\nevent = \"a\"\n")
        };
        let found = |registry: &str, defaults: &str| {
            let c = match Config::from_str(&text(registry, defaults), "toml") {
                Ok(c) => c,
                Err(e) => panic!("{e}"),
            };
            let limits = c.registry.as_ref().map(|r| r.limits).unwrap_or_default();
            below_defaults(&c, &limits)
                .into_iter()
                .map(|p| format!("{}: {}", p.path, p.message))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let tight = "max_concurrency = 8\nmax_timeout = \"5s\"\nmin_retry_delay = \"2s\"";
        // `ordered` defaults would hide the concurrency of an unordered endpoint.
        let loose = found(tight, "ordered = true");
        for expected in [
            "registry.max_concurrency: is tighter than the concurrency a runtime endpoint gets without setting it (64), which it keeps: set [defaults] concurrency within the limit",
            "registry.max_timeout: is tighter than the timeout a runtime endpoint gets without setting it (10s)",
            "registry.min_retry_delay: is tighter than the retry_schedule a runtime endpoint gets without setting it (1s)",
        ] {
            assert!(loose.contains(expected), "{expected}\nin:\n{loose}");
        }
        let matched =
            "concurrency = 8\ntimeout = \"5s\"\nretry_schedule = [\"2s\"]\nprobe_interval = \"2s\"";
        assert_eq!(found(tight, matched), "");
    }
}
