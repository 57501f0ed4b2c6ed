//! The config file: loading (TOML or YAML plus `NATSHOOK__…` env overrides, merged by
//! figment), and validation into the typed [`Config`] the rest of natshook uses.
//!
//! Validation collects every problem instead of stopping at the first, each named by
//! its key path (`endpoints[1].url: …`), because `natshook check` runs in CI pipelines
//! where one round trip per typo is painful. Unknown keys are errors: a misspelt key
//! must never silently change where webhooks go.
//!
//! How the parts fit, in the order a config passes through them:
//!
//! * `load`: reads the text, has `shape` check its nesting (and YAML's repeated keys)
//!   before figment parses it, merges the overrides of `env_override`, and extracts
//!   the raw shapes, taking every mistyped key out with its problem.
//! * `keys`: unknown keys, against the fields of the raw shapes.
//! * `raw`: the shapes as written (lenient types), which are also the lists of keys.
//! * `validate`: one module per section turns the raw shapes into the `model`, taking
//!   what is left out from `defaults`.
//! * `problems`: the [`Problem`]s, their collector and the checks sections share.
//!
//! `[ingress]` is validated here like every other section; the `ingress` module serves
//! the typed routes.

pub mod api;
pub mod defaults;
pub mod env_override;
mod keys;
mod load;
mod model;
mod problems;
mod raw;
mod shape;
#[cfg(test)]
mod tests;
mod validate;
pub mod write_limits;

use std::path::Path;

pub use keys::override_meant;
pub use keys::{secret_keys, unknown_keys, unknown_secret_list_keys};
pub use model::{
    AdminConfig, Backlog, Config, CopiedHeader, DeadLetterConfig, Endpoint, EndpointDefaults,
    Envelope, IngressConfig, NatsAuth, NatsConfig, NetworkKeys, Proxy, Rate, RegistryConfig, Route,
    RuntimeLimits, TlsFiles, Verify,
};
pub use problems::{past_max_duration, ConfigError, Problem, Problems, MAX_DURATION};
pub use raw::field_names;
pub use validate::{is_endpoint_name, url_for_logs};

/// Prefix of environment overrides: `NATSHOOK__DEFAULTS__TIMEOUT=5s`.
pub const ENV_PREFIX: &str = "NATSHOOK__";

/// The arrays of tables: their entries are addressed by index (`endpoints[1].url`).
pub(crate) const TABLE_ARRAYS: &[&str] = &["endpoints", "events"];

/// What a command that only reads natshook's own streams needs of a config (`natshook
/// dlq list`): the connection, the dead-letter settings, the endpoints' names.
pub struct StoreAccess {
    pub nats: NatsConfig,
    pub dead_letter: DeadLetterConfig,
    pub endpoint_names: Vec<String>,
}

impl Config {
    /// Loads `path` (TOML or YAML by extension) with env overrides and validates it.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let (figment, problems) = load::figment_for(path)?;
        load::from_figment(&figment, problems)
    }

    /// Loads of `path` only the endpoint `name` (with `[defaults]` and the mappings it
    /// is checked over), for `sign` and `verify`: the other endpoints' secrets, the
    /// admin token or NATS credentials, which they never use, need not be at hand
    /// where a receiver's developer runs them.
    pub fn load_endpoint(path: &Path, name: &str) -> Result<std::sync::Arc<Endpoint>, ConfigError> {
        let (figment, problems) = load::figment_for(path)?;
        load::one_endpoint(&figment, problems, name)
    }

    /// Loads of `path` only what [`StoreAccess`] holds, validating nothing else: the
    /// endpoints' secrets, which such a command never uses, need not be at hand (an
    /// operator's shell, a debug pod).
    pub fn load_store_access(path: &Path) -> Result<StoreAccess, ConfigError> {
        let (figment, problems) = load::figment_for(path)?;
        load::store_access(&figment, problems)
    }

    /// Parses a config from text, for tests and tools. `format` is "toml" or "yaml".
    pub fn from_str(text: &str, format: &str) -> Result<Self, ConfigError> {
        let (figment, problems) = load::figment_for_text(text, format)?;
        load::from_figment(&figment, problems)
    }
}

/// One endpoint `x` of a minimal config (stream `E`, every event), with `settings`
/// added to it as TOML lines: what unit tests elsewhere build their endpoint from.
#[cfg(test)]
pub fn test_endpoint(settings: &str) -> Endpoint {
    let text = format!(
        "[nats]\nstream = \"E\"\n[[events]]\nsubject = \"a\"\nevent = \"a\"\n[[endpoints]]\nname = \"x\"\nurl = \"https://example.com/\"\nevents = [\"*\"]\n{settings}\n"
    );
    match Config::from_str(&text, "toml") {
        Ok(mut c) => std::sync::Arc::unwrap_or_clone(c.endpoints.remove(0)),
        Err(e) => panic!("{e}"),
    }
}
