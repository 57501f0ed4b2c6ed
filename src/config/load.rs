//! Reading the config: the file's text, checked for its shape ([`super::shape`]), as a
//! figment with the `NATSHOOK__…` overrides merged ([`super::env_override`]), then
//! extracted into the raw shapes so that every mistyped key is reported and the rest
//! still validated.

use std::collections::HashSet;
use std::path::Path;

use figment::providers::{Format, Serialized, Toml, Yaml};
use figment::value::Value;
use figment::Figment;

use super::model::{Endpoint, EndpointDefaults};
use super::raw::{RawConfig, RawSettings};
use super::{env_override, keys, shape, validate};
use super::{Config, ConfigError, Problem, Problems, ENV_PREFIX, TABLE_ARRAYS};

/// Validates what `figment` holds. `problems`: found before (repeated YAML keys, env
/// overrides that name no entry).
pub(super) fn from_figment(
    figment: &Figment,
    problems: Vec<Problem>,
) -> Result<Config, ConfigError> {
    let mut problems = Problems(problems);
    let mut value = figment.extract::<Value>().map_err(figment_problems)?;
    shape::check_value(&value)?;
    keys::check_unknown_keys(&value, &mut problems);
    let before_types = problems.len();
    let settings = endpoint_settings(&mut value, &mut problems);
    let Some(raw) = extract_taking_mistyped::<RawConfig>(&mut value, "", &mut problems) else {
        return Err(ConfigError {
            problems: problems.0,
        });
    };
    let mistyped: HashSet<String> = problems
        .0
        .iter()
        .skip(before_types)
        .map(|p| p.path.clone())
        .collect();
    let endpoint_defaults = EndpointDefaults(
        value
            .find_ref("defaults")
            .cloned()
            .unwrap_or_else(|| Value::from(figment::value::Dict::new())),
    );
    let mut found = Problems::default();
    let config = validate::validate(raw, settings, &mut found);
    // A key taken out for its type is not also "missing".
    problems
        .0
        .extend(found.0.into_iter().filter(|p| !mistyped.contains(&p.path)));
    match config {
        Some(mut c) if problems.is_empty() => {
            c.endpoint_defaults = endpoint_defaults;
            Ok(c)
        }
        _ => Err(ConfigError {
            problems: problems.0,
        }),
    }
}

/// [`Config::load_endpoint`]: the config with only what makes endpoint `name` sign
/// (the stream's name, the mappings, `[defaults]`, that one entry), without what
/// signing never uses and another machine may lack (extra headers and their secrets,
/// TLS files, a proxy, the environment's included), validated as a whole config is;
/// its problems name the entry by its index in the file. Of the problems found in
/// reading the file, only those of what is kept count.
pub(super) fn one_endpoint(
    figment: &Figment,
    problems: Vec<Problem>,
    name: &str,
) -> Result<std::sync::Arc<Endpoint>, ConfigError> {
    let value = figment.extract::<Value>().map_err(figment_problems)?;
    let Value::Dict(tag, mut dict) = value else {
        return Err(ConfigError::single("config", "is not a table"));
    };
    dict.retain(|k, _| matches!(k.as_str(), "nats" | "events" | "defaults" | "endpoints"));
    if let Some(Value::Dict(_, nats)) = dict.get_mut("nats") {
        nats.retain(|k, _| k == "stream");
    }
    let signing_only = |table: &mut Value| {
        if let Value::Dict(_, keys) = table {
            for unused in ["headers", "ca_file", "cert_file", "key_file"] {
                keys.remove(unused);
            }
            keys.insert("proxy".into(), Value::from("none"));
        }
    };
    if let Some(defaults) = dict.get_mut("defaults") {
        signing_only(defaults);
    }
    let named = |e: &Value| e.find_ref("name").and_then(Value::as_str) == Some(name);
    let index = match dict.get_mut("endpoints") {
        Some(Value::Array(_, entries)) => {
            let index = entries.iter().position(named);
            entries.retain(named);
            entries.iter_mut().for_each(signing_only);
            index
        }
        _ => None,
    };
    let Some(index) = index else {
        return Err(ConfigError::single(
            "--endpoint",
            format!("no endpoint named '{name}' in the config"),
        ));
    };
    let entry = format!("endpoints[{index}]");
    let kept = |p: &Problem| {
        ["nats.stream", "events", "defaults", entry.as_str()]
            .iter()
            .any(|key| is_under(&p.path, key))
    };
    let mut found: Vec<Problem> = problems.into_iter().filter(kept).collect();
    let reduced = Figment::from(Serialized::defaults(Value::Dict(tag, dict)));
    let endpoint = match from_figment(&reduced, Vec::new()) {
        Ok(config) => config.endpoints.into_iter().next(),
        Err(e) => {
            found.extend(e.problems.into_iter().map(|mut p| {
                if let Some(rest) = p.path.strip_prefix("endpoints[0]") {
                    p.path = format!("{entry}{rest}");
                }
                p
            }));
            None
        }
    };
    match endpoint {
        Some(endpoint) if found.is_empty() => Ok(endpoint),
        _ if !found.is_empty() => Err(ConfigError { problems: found }),
        _ => Err(ConfigError::single(
            "--endpoint",
            format!("no endpoint named '{name}' in the config"),
        )),
    }
}

/// Whether the problem at key path `path` is of `key` or within it (`key.x`,
/// `key[0]`).
fn is_under(path: &str, key: &str) -> bool {
    path.strip_prefix(key)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// [`super::StoreAccess`] from `figment`: `nats`, `dead_letter` and the endpoints'
/// names, each checked as [`from_figment`] checks it; problems elsewhere are not
/// looked for.
pub(super) fn store_access(
    figment: &Figment,
    problems: Vec<Problem>,
) -> Result<super::StoreAccess, ConfigError> {
    let needed = |path: &str| ["nats", "dead_letter"].iter().any(|s| is_under(path, s));
    let mut problems = Problems(problems);
    let mut value = figment.extract::<Value>().map_err(figment_problems)?;
    shape::check_value(&value)?;
    let raw = extract_taking_mistyped::<RawConfig>(&mut value, "", &mut problems);
    let mut found = Problems::default();
    let access = raw.and_then(|raw| validate::store_access(raw, &mut found));
    problems.0.extend(found.0);
    let all = problems.0.clone();
    problems.0.retain(|p| needed(&p.path) || p.path.is_empty());
    match access {
        Some(access) if problems.is_empty() => Ok(access),
        // The file's shape stopped the extraction somewhere else.
        None if problems.is_empty() => Err(ConfigError { problems: all }),
        _ => Err(ConfigError {
            problems: problems.0,
        }),
    }
}

/// One `[[endpoints]]` entry given as a value (an endpoint created at runtime),
/// checked exactly as the file's entries are: unknown keys, types, then validation
/// over `defaults` and the mappings of `router`. Problems are named as in the file,
/// `endpoints[0].…`.
pub(super) fn endpoint_entry(
    entry: Value,
    defaults: &EndpointDefaults,
    router: &crate::routing::Router,
) -> Result<Endpoint, Vec<Problem>> {
    let mut doc = figment::value::Dict::new();
    doc.insert("defaults".into(), defaults.0.clone());
    doc.insert("endpoints".into(), Value::from(vec![entry]));
    let mut value = Value::from(doc);
    let mut problems = Problems::default();
    keys::check_unknown_keys(&value, &mut problems);
    let settings = endpoint_settings(&mut value, &mut problems);
    let Some(raw) = extract_taking_mistyped::<RawConfig>(&mut value, "", &mut problems) else {
        return Err(problems.0);
    };
    let mistyped: HashSet<String> = problems.0.iter().map(|p| p.path.clone()).collect();
    let mut found = Problems::default();
    let endpoint = validate::one_endpoint(raw, settings, router, &mut found);
    problems
        .0
        .extend(found.0.into_iter().filter(|p| !mistyped.contains(&p.path)));
    match endpoint {
        Some(e) if problems.is_empty() => Ok(e),
        _ => Err(problems.0),
    }
}

/// Each endpoint's settings, read from its table on their own (mistyped keys reported
/// under `endpoints[i]` and taken out), one per entry of `endpoints`.
fn endpoint_settings(value: &mut Value, problems: &mut Problems) -> Vec<RawSettings> {
    let Some(Value::Array(_, endpoints)) = dict_mut(value, "endpoints") else {
        return Vec::new();
    };
    let mut settings = Vec::new();
    for (i, endpoint) in endpoints.iter_mut().enumerate() {
        // An entry that is no table is reported once, by the extraction of the whole.
        let read = match endpoint {
            Value::Dict(..) => extract_taking_mistyped::<RawSettings>(
                endpoint,
                &format!("endpoints[{i}]"),
                problems,
            ),
            _ => None,
        };
        settings.push(read.unwrap_or_default());
    }
    settings
}

/// The file with env overrides merged, and the problems found on the way that do not
/// stop validation (repeated YAML keys, overrides that could not be applied). The file
/// is read once, so that what is checked is what figment reads.
pub(super) fn figment_for(path: &Path) -> Result<(Figment, Vec<Problem>), ConfigError> {
    let shown = path.display().to_string();
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let format = match ext.as_str() {
        "toml" => "toml",
        "yaml" | "yml" => "yaml",
        _ => {
            return Err(ConfigError::single(
                "--config",
                format!("{shown}: unknown extension '{ext}' (use .toml, .yaml or .yml)"),
            ))
        }
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::single("--config", format!("cannot read {shown}: {e}")))?;
    let (file, mut problems) = figment_for_text(&text, format)?;
    for (name, value) in std::env::vars_os() {
        if let (Some(name), Some(value)) = (name.to_str(), value.to_str()) {
            if name.starts_with(ENV_PREFIX) {
                shape::check_env_value(name, value)?;
            }
        }
    }
    let (figment, env_problems) = env_override::apply(file);
    problems.extend(env_problems);
    Ok((figment, problems))
}

/// The config text as a figment, once its shape has passed (`format`: "toml" or
/// "yaml"); the problems are repeated YAML keys.
pub(super) fn figment_for_text(
    text: &str,
    format: &str,
) -> Result<(Figment, Vec<Problem>), ConfigError> {
    if format == "yaml" {
        let problems = shape::check_yaml(text)?;
        Ok((Figment::from(Yaml::string(text)), problems))
    } else {
        shape::check_toml(text)?;
        Ok((Figment::from(Toml::string(text)), Vec::new()))
    }
}

pub(super) fn figment_problems(e: figment::Error) -> ConfigError {
    let problems = e
        .into_iter()
        .map(|e| Problem {
            path: if e.path.is_empty() {
                "config".to_string()
            } else {
                render_path(&e.path)
            },
            message: with_hint(&e.kind),
        })
        .collect();
    ConfigError { problems }
}

/// A type error's text, with what to write instead where the fix is one most miss:
/// a number where text is wanted (a duration without its unit, a tenant id that
/// looks like a number), or a YAML value that starts with `{`, read as a map.
fn with_hint(kind: &figment::error::Kind) -> String {
    use figment::error::{Actual, Kind};
    let text = kind.to_string();
    let Kind::InvalidType(actual, expected) = kind else {
        return text;
    };
    if expected != "a string" {
        return text;
    }
    match actual {
        Actual::Signed(_) | Actual::Unsigned(_) | Actual::Float(_) | Actual::Bool(_) => {
            format!("{text}: write it in quotes (\"123\"; a duration also names its unit: \"5s\")")
        }
        Actual::Map => format!("{text}{YAML_MAP_HINT}"),
        _ => text,
    }
}

/// What a map where text is wanted most often is in a file: YAML's flow mapping. A
/// JSON body (the admin API) leaves it out.
pub(super) const YAML_MAP_HINT: &str =
    ": in YAML, put a value that starts with { in quotes ('{2}'), or it is read as a map";

fn render_path(segments: &[String]) -> String {
    let mut out = String::new();
    for s in segments {
        if s.parse::<usize>().is_ok() {
            out.push_str(&format!("[{s}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(s);
        }
    }
    out
}

/// Extracts a `T` from `value`. A type error does not stop validation: it is recorded
/// under its key (`prefix` in front), the key is taken out of `value`, and the
/// extraction repeated, so that one run of `natshook check` names every mistyped key
/// and still validates the rest. `None` when an error has no key to take out.
fn extract_taking_mistyped<T: serde::de::DeserializeOwned>(
    value: &mut Value,
    prefix: &str,
    problems: &mut Problems,
) -> Option<T> {
    loop {
        let errors = match Figment::from(Serialized::defaults(&*value)).extract::<T>() {
            Ok(t) => return Some(t),
            Err(e) => e,
        };
        let mut taken = false;
        for e in errors {
            let at = render_path(&e.path);
            let path = match (prefix, at.as_str()) {
                ("", "") => "config".to_string(),
                (p, "") => p.to_string(),
                ("", a) => a.to_string(),
                (p, a) if a.starts_with('[') => format!("{p}{a}"),
                (p, a) => format!("{p}.{a}"),
            };
            problems.add(path, with_hint(&e.kind));
            taken |= take_key(value, &e.path);
        }
        if !taken {
            return None;
        }
    }
}

/// Removes the innermost table key on `path` (a list element goes with its list), but
/// never a whole `[[events]]` or `[[endpoints]]` array: its entries' indexes name
/// their problems.
fn take_key(value: &mut Value, path: &[String]) -> bool {
    let Some(depth) = path.iter().rposition(|s| s.parse::<usize>().is_err()) else {
        return false;
    };
    if depth == 0 && path.len() > 1 && TABLE_ARRAYS.contains(&path[0].as_str()) {
        return false;
    }
    let mut at = value;
    for segment in &path[..depth] {
        let next = match at {
            Value::Dict(_, d) => d.get_mut(segment),
            Value::Array(_, a) => segment.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        };
        match next {
            Some(v) => at = v,
            None => return false,
        }
    }
    match at {
        Value::Dict(_, d) => d.remove(&path[depth]).is_some(),
        _ => false,
    }
}

fn dict_mut<'a>(value: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    match value {
        Value::Dict(_, d) => d.get_mut(key),
        _ => None,
    }
}
