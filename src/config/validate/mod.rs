//! Validation of the raw shapes into the typed [`Config`], one section per module.
//! Every problem is collected, none stops the others; a key left out takes its value
//! from [`super::defaults`].

mod endpoint;
mod events;
mod ingress;
mod nats;
mod otlp;
mod proxy;
mod rate;
mod sections;
mod tls;
mod url;

pub(super) use endpoint::SECRET_FORMS;
pub use url::for_logs as url_for_logs;
pub(super) use url::CREDENTIALS_AS_HEADER;

use super::defaults;
use super::model::{Config, DeadLetterConfig};
use super::raw::{RawConfig, RawSettings};
use super::Problems;

/// Endpoint names: they name consumers, metrics and log lines.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'-' || b.is_ascii_digit())
}

/// Whether `s` can name an endpoint at all: a name that cannot is none the registry
/// holds, whatever it is asked for.
pub fn is_endpoint_name(s: &str) -> bool {
    valid_name(s) && s.chars().count() <= MAX_NAME_LEN && !RESERVED_NAMES.contains(&s)
}

/// The longest endpoint name: the consumer's name (`<prefix>-<name>`) must stay within
/// [`JS_MAX_NAME_LEN`] whatever the prefix, and a name is a metric label value on every
/// series of its endpoint.
pub(super) const MAX_NAME_LEN: usize = 128;

/// The longest stream or consumer name nats-server takes, in bytes (its
/// `JSMaxNameLen`).
pub(super) const JS_MAX_NAME_LEN: usize = 255;

/// The longest `nats.consumer_prefix`: room for `-` and the longest endpoint name.
pub(super) const MAX_PREFIX_LEN: usize = JS_MAX_NAME_LEN - 1 - MAX_NAME_LEN;

/// Names natshook gives consumers of its own (`<prefix>-fanout` on the source stream,
/// `<prefix>-lane` on the lane): an endpoint with one of them would bind the same
/// consumer.
pub(super) const RESERVED_NAMES: &[&str] = &["fanout", "lane"];

/// The endpoints of `raw` alone (one created at runtime), over its `[defaults]` and
/// the mappings in force.
pub(super) fn one_endpoint(
    raw: RawConfig,
    settings: Vec<RawSettings>,
    router: &crate::routing::Router,
    p: &mut Problems,
) -> Option<super::model::Endpoint> {
    endpoint::endpoints(raw.endpoints, settings, &raw.defaults, router, false, p).pop()
}

/// `settings`: each endpoint's settings, read from its table on their own.
/// The sections of [`super::StoreAccess`], validated as [`validate`] does.
pub(super) fn store_access(raw: RawConfig, p: &mut Problems) -> Option<super::StoreAccess> {
    let nats = nats::validate_nats(raw.nats, p);
    let max_age = sections::duration_or(
        raw.dead_letter.max_age.as_deref(),
        "dead_letter.max_age",
        defaults::DEAD_LETTER_MAX_AGE,
        p,
    );
    let endpoint_names = raw.endpoints.into_iter().filter_map(|e| e.name).collect();
    Some(super::StoreAccess {
        nats: nats?,
        dead_letter: DeadLetterConfig { max_age: max_age? },
        endpoint_names,
    })
}

pub(super) fn validate(
    raw: RawConfig,
    settings: Vec<RawSettings>,
    p: &mut Problems,
) -> Option<Config> {
    let nats = nats::validate_nats(raw.nats, p);
    let fan_out = raw.delivery.fan_out.unwrap_or(false);
    if let (Some(nats), true) = (&nats, fan_out) {
        nats::work_stream_names(nats, p);
    }
    let listen = sections::listen(&raw.http, p);
    let router = events::router(&raw.events, p);
    let nats_replicas = nats.as_ref().map_or(1, |n| n.replicas);
    let registry = sections::registry(&raw.registry, nats_replicas, p);
    // With a registry, endpoints can all be created at runtime.
    let require_one = !matches!(registry, Some(Some(_)));
    endpoint::defaults_tls(&raw.defaults, p);
    let endpoints = endpoint::endpoints(
        raw.endpoints,
        settings,
        &raw.defaults,
        &router,
        require_one,
        p,
    )
    .into_iter()
    .map(super::Endpoint::into_shared)
    .collect();
    let max_age = sections::duration_or(
        raw.dead_letter.max_age.as_deref(),
        "dead_letter.max_age",
        defaults::DEAD_LETTER_MAX_AGE,
        p,
    );
    let max_inflight = p.positive(
        "delivery.max_inflight",
        raw.delivery
            .max_inflight
            .unwrap_or(defaults::MAX_INFLIGHT as i64),
        1,
    );
    let delivery_log = sections::delivery_log(&raw.delivery_log, p);
    let admin = sections::admin(&raw.admin, p);
    let shutdown_grace = sections::duration_or(
        raw.shutdown_grace.as_deref(),
        "shutdown_grace",
        defaults::SHUTDOWN_GRACE,
        p,
    );
    let ingress = ingress::validate(raw.ingress, listen, p);
    let tracing = otlp::validate(raw.tracing.as_ref(), p);
    Some(Config {
        nats: nats?,
        listen: listen?,
        router,
        endpoints,
        max_inflight: max_inflight? as usize,
        fan_out,
        dead_letter: DeadLetterConfig { max_age: max_age? },
        delivery_log: delivery_log?,
        admin: admin?,
        shutdown_grace: shutdown_grace?,
        ingress: ingress?,
        tracing: tracing?,
        registry: registry?,
        endpoint_defaults: Default::default(),
    })
}
