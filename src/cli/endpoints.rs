//! `natshook endpoints …`: runtime endpoints managed from a shell, straight against
//! the registry bucket the config file names (`[registry]`), with the operations the
//! admin API uses (`registrar`), so both check, store and announce a change alike and
//! no natshook process needs to run. A secret is printed once, alone on stdout (so
//! `SECRET=$(natshook endpoints add …)` captures it), by `add` and `rotate-secret`;
//! nothing else prints one.
//!
//! Exit codes as every command's: 2 for what the command asked that cannot be done as
//! asked (an invalid endpoint, with every problem in `natshook check`'s words; a file
//! endpoint; an unknown or taken name), 1 for runtime failures (the registry cannot be
//! reached, or another writer changed the endpoint meanwhile).

use std::path::Path;
use std::sync::Arc;

use anyhow::anyhow;
use clap::{Args, Subcommand};
use serde_json::{Map, Value};

use super::{read_stdin, to_stderr, to_stdout, ConfigArg, Failure};
use crate::config::Config;
use crate::events::OperatorEvents;
use crate::registrar::{self, Actor, FileRules, Leftovers, Registrar, RegistrarError};
use crate::store::dead_letters::DeadLetters;
use crate::store::delivery_log::DeliveryLog;
use crate::store::pause_state::PauseState;
use crate::store::registry::{Registry, RegistryError};

#[derive(Subcommand, Debug)]
pub enum EndpointsCommand {
    /// List the config file's endpoints and the registry's (never a secret).
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this tenant's endpoints.
        #[arg(long)]
        tenant: Option<String>,
        /// One JSON document, `{"endpoints": [...]}`, instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create a runtime endpoint; prints its secret (alone on stdout) this once.
    ///
    /// The endpoint is the JSON of --json (the admin API's create body) with the
    /// flags over it. Without --secret one is generated: whsec_… for the standard
    /// scheme, else 64 hex characters.
    Add(AddArgs),
    /// Delete a runtime endpoint; running natshook processes finish its in-flight
    /// deliveries and delete its consumer, delivery log and dead letters (export
    /// those first with `natshook dlq list --endpoint NAME`).
    Rm {
        #[command(flatten)]
        config: ConfigArg,
        name: String,
    },
    /// Enable a runtime endpoint: it delivers again, what it held first, and a pause
    /// (by an operator or after failures) ends.
    Enable {
        #[command(flatten)]
        config: ConfigArg,
        name: String,
        /// Start from now: what the endpoint held while it was off is not delivered.
        #[arg(long)]
        skip_backlog: bool,
    },
    /// Disable a runtime endpoint: its messages wait in the stream until it is enabled.
    Disable {
        #[command(flatten)]
        config: ConfigArg,
        name: String,
    },
    /// A new secret for a runtime endpoint, printed this once; the old one keeps
    /// signing until the grace ends.
    RotateSecret {
        #[command(flatten)]
        config: ConfigArg,
        name: String,
        /// How long the old secret keeps signing ("0s": not at all).
        #[arg(long, default_value = "24h")]
        grace: String,
    },
}

#[derive(Args, Debug)]
pub struct AddArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The endpoint as JSON (the admin API's create body), or `-` to read it from
    /// stdin; the flags below go over it.
    #[arg(long)]
    pub json: Option<String>,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub url: Option<String>,
    /// An event name or pattern it takes (repeat for more; `*` for every event).
    #[arg(long = "event")]
    pub events: Vec<String>,
    /// Only this tenant's messages.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Its signing secret (generated when not given). On a shared machine prefer
    /// `--json -` with the secret on stdin: arguments show in `ps`.
    #[arg(long)]
    pub secret: Option<String>,
    /// Signature scheme: hex, sha256 or standard.
    #[arg(long)]
    pub scheme: Option<String>,
    /// Signature header for hex and sha256.
    #[arg(long)]
    pub signature_header: Option<String>,
    /// A header sent with every request, "Name: value" (repeat for more).
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    #[arg(long)]
    pub description: Option<String>,
    /// Allow an http:// URL.
    #[arg(long)]
    pub allow_http: bool,
    /// Allow private and internal addresses.
    #[arg(long)]
    pub allow_private: bool,
    /// Create it disabled.
    #[arg(long)]
    pub disabled: bool,
}

impl EndpointsCommand {
    fn config(&self) -> &Path {
        match self {
            EndpointsCommand::List { config, .. }
            | EndpointsCommand::Rm { config, .. }
            | EndpointsCommand::Enable { config, .. }
            | EndpointsCommand::Disable { config, .. }
            | EndpointsCommand::RotateSecret { config, .. } => &config.config,
            EndpointsCommand::Add(a) => &a.config.config,
        }
    }
}

/// How a failed operation ends the command.
impl From<RegistrarError> for Failure {
    fn from(e: RegistrarError) -> Self {
        match e {
            RegistrarError::Invalid { what, problems } => {
                let mut text = format!("the {what} is invalid ({} problem(s)):", problems.len());
                for p in &problems {
                    text.push_str(&format!("\n  {p}"));
                }
                Failure::Usage(anyhow!(text))
            }
            RegistrarError::FileEndpoint(_)
            | RegistrarError::NotFound(_)
            | RegistrarError::Registry(RegistryError::Exists(_)) => Failure::Usage(e.into()),
            RegistrarError::Registry(RegistryError::Stale(_)) => Failure::Runtime(anyhow!(
                "{e}: another writer changed it meanwhile; run the command again"
            )),
            RegistrarError::Registry(RegistryError::Nats(_))
            | RegistrarError::Randomness(_)
            | RegistrarError::StillRemoving(_)
            | RegistrarError::Contended
            | RegistrarError::Leftovers { .. } => Failure::Runtime(e.into()),
        }
    }
}

pub async fn run(cmd: EndpointsCommand) -> Result<(), Failure> {
    let config = Config::load(cmd.config())?;
    // What is read from stdin is read before connecting: a typo fails at once.
    let body = match &cmd {
        EndpointsCommand::Add(a) => Some(add_body(a)?),
        _ => None,
    };
    let Some(registry_config) = &config.registry else {
        return Err(Failure::Usage(anyhow!(
            "{}: no [registry] enabled = true; natshook endpoints works on the registry bucket it names",
            cmd.config().display()
        )));
    };
    let client = crate::app::connect(&config.nats, false, None)
        .await
        .map_err(|e| Failure::Runtime(e.into()))?;
    let js = async_nats::jetstream::new(client.clone());
    let registry = Registry::open(&js, registry_config)
        .await
        .map_err(|e| Failure::Runtime(e.into()))?;
    let events = OperatorEvents::new(client.clone());
    let leftovers = Leftovers {
        log: DeliveryLog::for_config(&client, &config),
        dead_letters: DeadLetters::for_config(js.clone(), &config),
    };
    let registrar = Registrar::new(registry, Arc::new(FileRules::of(&config)), Actor::Cli)
        .reading_backlog(js.clone())
        .raising(events.clone())
        .resuming(PauseState::new(js, config.nats.replicas))
        .clearing(leftovers);
    let result = match (cmd, body) {
        (EndpointsCommand::List { tenant, json, .. }, _) => {
            list(&registrar, &config, tenant.as_deref(), json).await
        }
        (EndpointsCommand::Add(_), Some(body)) => {
            // This process serves nothing: a natshook still delivering for a deleted
            // endpoint of the name is elsewhere (see the README's Tenant webhooks).
            if let Some(name) = body.get("name").and_then(Value::as_str) {
                registrar.clear_former(name, || false).await?;
            }
            let created = registrar.create(body).await?;
            to_stderr(format_args!(
                "created endpoint '{}' (revision {}); its secret, shown this once:",
                created.record.name, created.record.revision
            ));
            print_secret(&created.secret);
            Ok(())
        }
        (EndpointsCommand::Add(_), None) => Ok(()),
        (EndpointsCommand::Rm { name, .. }, _) => {
            registrar.delete(&name, None).await?;
            to_stderr(format_args!(
                "deleted endpoint '{name}': a running natshook removes its consumer, delivery log and dead letters once its deliveries in flight end"
            ));
            Ok(())
        }
        (
            EndpointsCommand::Enable {
                name, skip_backlog, ..
            },
            _,
        ) => {
            let mut patch = Map::new();
            patch.insert("enabled".into(), true.into());
            if skip_backlog {
                patch.insert("skip_backlog".into(), true.into());
            }
            let r = registrar.update(&name, patch, None).await?;
            let skipped = if skip_backlog {
                "; what it held is skipped"
            } else {
                ""
            };
            to_stderr(format_args!(
                "enabled endpoint '{name}' (revision {}){skipped}",
                r.revision
            ));
            Ok(())
        }
        (EndpointsCommand::Disable { name, .. }, _) => {
            let mut patch = Map::new();
            patch.insert("enabled".into(), false.into());
            let r = registrar.update(&name, patch, None).await?;
            to_stderr(format_args!(
                "disabled endpoint '{name}' (revision {}); its messages wait in the stream",
                r.revision
            ));
            Ok(())
        }
        (EndpointsCommand::RotateSecret { name, grace, .. }, _) => {
            let r = registrar.rotate(&name, Some(&grace), None).await?;
            let until = r
                .record
                .value
                .get(crate::config::api::GRACE_KEY)
                .and_then(Value::as_str)
                .map(|t| format!("; the old one signs too until {t}"))
                .unwrap_or_default();
            to_stderr(format_args!(
                "new secret for endpoint '{name}' (revision {}){until}; shown this once:",
                r.record.revision
            ));
            to_stdout(format_args!("{}", r.secret));
            Ok(())
        }
    };
    events.flush().await;
    let _ = client.flush().await;
    result
}

fn print_secret(secret: &Value) {
    match secret {
        Value::String(s) => to_stdout(format_args!("{s}")),
        Value::Array(list) => {
            for s in list.iter().filter_map(Value::as_str) {
                to_stdout(format_args!("{s}"));
            }
        }
        _ => {}
    }
}

/// The create body: `--json` (or stdin), then the flags over it.
fn add_body(a: &AddArgs) -> Result<Map<String, Value>, Failure> {
    let mut body = match a.json.as_deref() {
        None => Map::new(),
        Some(text) => {
            let bytes = if text == "-" {
                read_stdin()?
            } else {
                text.as_bytes().to_vec()
            };
            if let Some(key) = crate::config::api::repeated_key(&bytes) {
                return Err(Failure::Usage(anyhow!(
                    "--json: the key '{key}' is written twice in one object"
                )));
            }
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(o)) => o,
                Ok(_) => return Err(Failure::Usage(anyhow!("--json: not a JSON object"))),
                Err(e) => return Err(Failure::Usage(anyhow!("--json: {e}"))),
            }
        }
    };
    let mut set = |key: &str, value: Option<Value>| {
        if let Some(v) = value {
            body.insert(key.to_string(), v);
        }
    };
    set("name", a.name.clone().map(Value::from));
    set("url", a.url.clone().map(Value::from));
    set(
        "events",
        (!a.events.is_empty()).then(|| Value::from(a.events.clone())),
    );
    set("tenant", a.tenant.clone().map(Value::from));
    set("secret", a.secret.clone().map(Value::from));
    set("description", a.description.clone().map(Value::from));
    set("allow_http", a.allow_http.then_some(Value::Bool(true)));
    set(
        "allow_private",
        a.allow_private.then_some(Value::Bool(true)),
    );
    set("enabled", a.disabled.then_some(Value::Bool(false)));
    if a.scheme.is_some() || a.signature_header.is_some() {
        let signature = body
            .entry("signature")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(s) = signature {
            if let Some(scheme) = &a.scheme {
                s.insert("scheme".into(), scheme.clone().into());
            }
            if let Some(header) = &a.signature_header {
                s.insert("header".into(), header.clone().into());
            }
        }
    }
    if !a.headers.is_empty() {
        let headers = body
            .entry("headers")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(h) = headers {
            for line in &a.headers {
                let (name, value) = line.split_once(':').ok_or_else(|| {
                    Failure::Usage(anyhow!("--header '{line}': expected \"Name: value\""))
                })?;
                h.insert(name.trim().to_string(), value.trim().into());
            }
        }
    }
    Ok(body)
}

/// One row of `list`: the keys a table shows, and the JSON `--json` prints.
struct Row {
    name: String,
    source: &'static str,
    enabled: bool,
    tenant: String,
    events: String,
    url: String,
    json: Value,
}

async fn list(
    registrar: &Registrar,
    config: &Config,
    tenant: Option<&str>,
    json: bool,
) -> Result<(), Failure> {
    let mut rows: Vec<Row> = config
        .endpoints
        .iter()
        .map(|e| {
            let events = e.events.items().join(",");
            Row {
                name: e.name.clone(),
                source: "file",
                enabled: true,
                tenant: e.tenant.clone().unwrap_or_default(),
                url: e.url.to_string(),
                json: serde_json::json!({
                    "name": e.name, "source": "file", "enabled": true, "url": e.url.to_string(),
                    "events": e.events.items(), "tenant": e.tenant,
                }),
                events,
            }
        })
        .collect();
    for r in registrar.list().await? {
        let text = |k: &str| {
            r.value
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let events = match r.value.get("events") {
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(","),
            _ => String::new(),
        };
        rows.push(Row {
            name: r.name.clone(),
            source: "api",
            enabled: r.enabled(),
            tenant: text("tenant"),
            url: text("url"),
            events,
            json: Value::Object(registrar::view(&r)),
        });
    }
    if let Some(t) = tenant {
        rows.retain(|r| r.tenant == t);
    }
    if json {
        let all: Vec<Value> = rows.into_iter().map(|r| r.json).collect();
        to_stdout(format_args!("{}", serde_json::json!({ "endpoints": all })));
        return Ok(());
    }
    let table: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.source.to_string(),
                if r.enabled { "yes" } else { "no" }.to_string(),
                if r.tenant.is_empty() {
                    "-".to_string()
                } else {
                    r.tenant.clone()
                },
                r.events.clone(),
                r.url.clone(),
            ]
        })
        .collect();
    let header = ["NAME", "SOURCE", "ENABLED", "TENANT", "EVENTS", "URL"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&table) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        to_stdout(format_args!("{line}"));
    }
    Ok(())
}
