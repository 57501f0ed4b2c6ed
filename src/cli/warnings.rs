//! What a valid config most likely has wrong, said by `natshook check` and at start,
//! without refusing it.

use crate::config::Config;

/// What a valid config likely has wrong, said by `check` and at start: an endpoint's
/// `events` pattern that no mapping's event can match (a typo: `tickt.*`; the endpoint
/// still gets its other patterns' events, or start-up would refuse it), a `standard`
/// secret not in Standard Webhooks' form, a `[registry]` limit that a runtime
/// endpoint leaving its key out is not held to, and an override spelt with single
/// underscores. `text` is the config file's, whose `{ env }` references are read.
pub(super) fn of(config: &Config, text: &str) -> Vec<String> {
    let mut warnings = unmatched_patterns(config);
    warnings.extend(plain_standard_secrets(config));
    warnings.extend(crate::app::loose_registry_limits(config));
    warnings.extend(misspelt_overrides(
        std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()),
        text,
    ));
    warnings
}

/// Variables such as `NATSHOOK_NATS_URL`, which natshook does not read, where
/// `NATSHOOK__NATS__URL` was most likely meant: without this, the override changes
/// nothing without a word. One the config file names (a secret's `{ env = … }`) is
/// read, and not one of these.
fn misspelt_overrides(variables: impl Iterator<Item = String>, text: &str) -> Vec<String> {
    let mut found: Vec<(String, String)> = variables
        .filter(|v| !text.contains(v.as_str()))
        .filter_map(|v| crate::config::override_meant(&v).map(|meant| (v, meant)))
        .collect();
    found.sort();
    found
        .into_iter()
        .map(|(v, meant)| format!("environment variable {v} is not read by natshook; if it is meant to override a key, its name is {meant} (two underscores after NATSHOOK and between section and key)"))
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
    fn an_override_with_single_underscores_is_named_unless_the_config_reads_it() {
        let variables = || {
            [
                "NATSHOOK_NATS_URL",
                "NATSHOOK_ADMIN_TOKEN",
                "NATSHOOK_SERVICE_HOST",
            ]
            .map(String::from)
            .into_iter()
        };
        let text = "[admin]\ntoken = { env = \"NATSHOOK_ADMIN_TOKEN\" }\n";
        let warned = misspelt_overrides(variables(), text);
        assert_eq!(
            warned,
            ["environment variable NATSHOOK_NATS_URL is not read by natshook; if it is meant to override a key, its name is NATSHOOK__NATS__URL (two underscores after NATSHOOK and between section and key)"]
        );
        assert_eq!(misspelt_overrides(variables(), "").len(), 2);
    }
}
