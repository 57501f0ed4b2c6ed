//! What a valid config most likely has wrong, said by `natshook check` and at start,
//! without refusing it.

use crate::config::Config;

/// What a valid config likely has wrong, said by `check` and at start: an endpoint's
/// `events` pattern that no mapping's event can match (a typo: `tickt.*`; the endpoint
/// still gets its other patterns' events, or start-up would refuse it), a `standard`
/// secret not in Standard Webhooks' form, a `[registry]` limit that a runtime
/// endpoint leaving its key out is not held to, and an environment variable that
/// looks meant for natshook but is not read.
pub(super) fn of(config: &Config) -> Vec<String> {
    let mut warnings = unread_variables(std::env::vars_os().map(|(k, _)| k));
    warnings.extend(unmatched_patterns(config));
    warnings.extend(plain_standard_secrets(config));
    warnings.extend(crate::app::loose_registry_limits(config));
    warnings
}

/// The variables natshook reads by their own name; every other override is
/// `NATSHOOK__SECTION__KEY`.
const OWN_VARIABLES: &[&str] = &["NATSHOOK_CONFIG", "NATSHOOK_SECRET"];

/// Variables named `NATSHOOK_…` that natshook does not read: most often an override
/// with one underscore where it takes two (`NATSHOOK_NATS_URL`), which would
/// otherwise change nothing without a word.
fn unread_variables(names: impl Iterator<Item = std::ffi::OsString>) -> Vec<String> {
    let mut unread: Vec<String> = names
        .filter_map(|n| n.into_string().ok())
        .filter(|n| n.starts_with("NATSHOOK_") && !n.starts_with(crate::config::ENV_PREFIX))
        .filter(|n| !OWN_VARIABLES.contains(&n.as_str()))
        .collect();
    unread.sort();
    unread
        .into_iter()
        .map(|n| {
            format!("environment variable {n} is not read: an override is named NATSHOOK__SECTION__KEY, with two underscores after NATSHOOK and between section and key (NATSHOOK__NATS__URL for nats.url, NATSHOOK__DELIVERY__MAX_INFLIGHT for delivery.max_inflight)")
        })
        .collect()
}

fn unmatched_patterns(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    if config.router.rules().is_empty() {
        return warnings;
    }
    for e in &config.endpoints {
        for item in e.events.items().into_iter().filter(|i| *i != "*") {
            let Ok(one) = crate::routing::EventFilter::parse(&[item]) else {
                continue;
            };
            let subjects = config.router.filter_subjects(&one, e.tenant.as_deref());
            if subjects.is_some_and(|s| s.is_empty()) {
                warnings.push(format!(
                    "endpoint {}: events pattern '{item}' matches no event an [[events]] mapping produces",
                    e.name
                ));
            }
        }
    }
    warnings
}

/// Secrets under `standard` that are not in Standard Webhooks' form: valid (the
/// contract uses their bytes as the key), but official libraries decode any secret
/// as base64, so their signatures and natshook's would never match.
fn plain_standard_secrets(config: &Config) -> Vec<String> {
    let why = "under the standard scheme a secret without the whsec_ prefix is used as \
               written, while Standard Webhooks libraries read a secret as base64 (after \
               whsec_): give whsec_<base64 of the key> so that";
    let endpoints = (config.endpoints.iter())
        .filter(|e| e.signer.reads_plain_standard_secret())
        .map(|e| format!("endpoint {}: {why} receivers can verify", e.name));
    let routes = (config.ingress.routes.iter())
        .filter(|r| {
            matches!(&r.verify, crate::ingress::Verify::Signed(s) if s.reads_plain_standard_secret())
        })
        .map(|r| format!("{}: {why} senders' signatures verify", r.path));
    endpoints.chain(routes).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_variables_natshook_does_not_read_are_named() {
        let names = [
            "NATSHOOK_NATS_URL",
            "NATSHOOK__NATS__URL",
            "NATSHOOK_CONFIG",
            "NATSHOOK_SECRET",
            "HOME",
        ]
        .map(std::ffi::OsString::from);
        let warned = unread_variables(names.into_iter());
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(warned[0].starts_with("environment variable NATSHOOK_NATS_URL is not read"));
        assert!(
            warned[0].contains("NATSHOOK__NATS__URL for nats.url"),
            "{}",
            warned[0]
        );
    }
}
