//! What a valid config most likely has wrong, said by `natshook check` and at start,
//! without refusing it.

use crate::config::Config;

/// What a valid config likely has wrong, said by `check` and at start: an endpoint's
/// `events` pattern that no mapping's event can match (a typo: `tickt.*`; the endpoint
/// still gets its other patterns' events, or start-up would refuse it), and a
/// `standard` secret not in Standard Webhooks' form, and a `[registry]` limit that a
/// runtime endpoint leaving its key out is not held to.
pub(super) fn of(config: &Config) -> Vec<String> {
    let mut warnings = unmatched_patterns(config);
    warnings.extend(plain_standard_secrets(config));
    warnings.extend(crate::app::loose_registry_limits(config));
    warnings
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
