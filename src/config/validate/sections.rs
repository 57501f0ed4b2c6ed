//! The small sections: `[http]`, `[dead_letter]`, `[delivery_log]`, `[admin]` and
//! `[registry]` and `shutdown_grace`.

use std::net::SocketAddr;
use std::time::Duration;

use super::super::defaults;
use super::super::model::{AdminConfig, NetworkKeys, RegistryConfig, RuntimeLimits};
use super::super::raw::{RawAdmin, RawDeliveryLog, RawHttp, RawRegistry};
use super::super::Problems;

pub(super) fn listen(http: &RawHttp, p: &mut Problems) -> Option<SocketAddr> {
    let text = http.listen.as_deref().unwrap_or(defaults::HTTP_LISTEN);
    match text.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            p.add(
                "http.listen",
                format_args!("'{text}' is not an address:port such as 0.0.0.0:9464"),
            );
            None
        }
    }
}

/// A duration key left out takes `default`.
pub(super) fn duration_or(
    text: Option<&str>,
    path: &str,
    default: Duration,
    p: &mut Problems,
) -> Option<Duration> {
    match text {
        None => Some(default),
        Some(t) => p.duration(path, t),
    }
}

/// `Some(None)` when the delivery log is off; `None` when a key is invalid.
pub(super) fn delivery_log(
    raw: &RawDeliveryLog,
    p: &mut Problems,
) -> Option<Option<crate::settings::LogSettings>> {
    if !raw.enabled.unwrap_or(defaults::DELIVERY_LOG_ENABLED) {
        return Some(None);
    }
    let max = raw
        .max_per_endpoint
        .unwrap_or(defaults::DELIVERY_LOG_MAX_PER_ENDPOINT);
    let max = p.positive("delivery_log.max_per_endpoint", max, 1);
    let age = duration_or(
        raw.max_age.as_deref(),
        "delivery_log.max_age",
        defaults::DELIVERY_LOG_MAX_AGE,
        p,
    );
    let per_second = p.positive(
        "delivery_log.max_successes_per_second",
        raw.max_successes_per_second
            .unwrap_or(defaults::DELIVERY_LOG_MAX_SUCCESSES_PER_SECOND),
        0,
    );
    let total = p.positive(
        "delivery_log.max_successes_per_second_total",
        raw.max_successes_per_second_total
            .unwrap_or(defaults::DELIVERY_LOG_MAX_SUCCESSES_PER_SECOND_TOTAL),
        0,
    );
    Some(Some(crate::settings::LogSettings {
        max_per_endpoint: i64::from(max?),
        max_age: age?,
        max_successes_per_second: per_second?,
        max_successes_per_second_total: total?,
    }))
}

/// `Some(None)` when the admin API is off; `None` when a key is invalid.
pub(super) fn admin(raw: &RawAdmin, p: &mut Problems) -> Option<Option<AdminConfig>> {
    if !raw.enabled.unwrap_or(defaults::ADMIN_ENABLED) {
        return Some(None);
    }
    let Some(t) = &raw.token else {
        p.add(
            "admin.token",
            "required when admin.enabled = true (e.g. { env = \"NATSHOOK_ADMIN_TOKEN\" })",
        );
        return None;
    };
    match t.resolve() {
        // A request's token is read without surrounding white space, so a token with
        // some could never be presented.
        Ok(token) if token.expose().trim_ascii() != token.expose() => {
            p.add(
                "admin.token",
                "must not start or end with white space (no request could present it)",
            );
            None
        }
        Ok(token) if token.expose().len() >= 16 => Some(Some(AdminConfig { token })),
        Ok(_) => {
            p.add("admin.token", "must be at least 16 characters");
            None
        }
        Err(e) => {
            p.add("admin.token", e);
            None
        }
    }
}

/// `Some(None)` when the registry is off; `None` when a key is invalid.
/// `nats_replicas`: the replicas of natshook's other stores, the default here too.
pub(super) fn registry(
    raw: &RawRegistry,
    nats_replicas: usize,
    p: &mut Problems,
) -> Option<Option<RegistryConfig>> {
    if !raw.enabled.unwrap_or(defaults::REGISTRY_ENABLED) {
        return Some(None);
    }
    let replicas = match raw.replicas {
        None => Some(nats_replicas as u32),
        Some(n @ 1..=5) => Some(n as u32),
        Some(n) => {
            p.add(
                "registry.replicas",
                format_args!("{n} is out of range: JetStream keeps 1 to 5 replicas"),
            );
            None
        }
    };
    let history = raw.history.unwrap_or(defaults::REGISTRY_HISTORY);
    let history = match history {
        1..=64 => Some(history),
        _ => {
            p.add(
                "registry.history",
                format_args!("must be 1 to 64 (got {history})"),
            );
            None
        }
    };
    let network_keys = if raw
        .allow_network_keys
        .unwrap_or(defaults::REGISTRY_ALLOW_NETWORK_KEYS)
    {
        NetworkKeys::Allowed
    } else {
        NetworkKeys::Refused
    };
    let limits = runtime_limits(raw, p);
    Some(Some(RegistryConfig {
        bucket: defaults::REGISTRY_BUCKET.to_string(),
        replicas: replicas? as usize,
        history: history?,
        network_keys,
        limits: limits?,
    }))
}

/// `[registry] max_timeout`, `max_concurrency` and `min_retry_delay`.
fn runtime_limits(raw: &RawRegistry, p: &mut Problems) -> Option<RuntimeLimits> {
    let built_in = RuntimeLimits::default();
    let max_timeout = match &raw.max_timeout {
        Some(t) => p.duration("registry.max_timeout", t),
        None => Some(built_in.max_timeout),
    };
    let max_concurrency = match raw.max_concurrency {
        Some(n) => p.positive("registry.max_concurrency", n, 1),
        None => Some(built_in.max_concurrency as u32),
    };
    let min_retry_delay = match &raw.min_retry_delay {
        Some(t) => p.duration("registry.min_retry_delay", t),
        None => Some(built_in.min_retry_delay),
    };
    Some(RuntimeLimits {
        max_timeout: max_timeout?,
        max_concurrency: max_concurrency? as usize,
        min_retry_delay: min_retry_delay?,
    })
}
