//! `natshook dlq`: dead-letter records listed and replayed from the command line,
//! with the same rules as the admin API's replay (a disabled or operator-paused
//! endpoint is refused; a record is removed only after a 2xx).

use std::io::Write;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::anyhow;
use clap::Subcommand;

use super::{to_stderr, ConfigArg, Failure};
use crate::config::{Config, Endpoint};
use crate::delivery::Deliverer;
use crate::store::dead_letters::{DeadLetters, ReplayFilter};
use crate::store::registry::Registry;

/// An `--endpoint` whose records can be asked for: the name is a token of the
/// records' subject, so one holding `.`, `*`, `>` or white space (or none at all)
/// would ask for other endpoints' records, or for none with a JetStream error.
fn record_endpoint(name: &str) -> Result<String, String> {
    let unusable = |c: char| matches!(c, '.' | '*' | '>') || c.is_whitespace();
    if name.is_empty() || name.contains(unusable) {
        return Err(format!(
            "'{name}' is not an endpoint name (no '.', '*', '>' or white space)"
        ));
    }
    Ok(name.to_string())
}

#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// Print dead-letter records, one JSON object per line (oldest first).
    List {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, value_parser = record_endpoint)]
        endpoint: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Deliver dead letters again (same id); each record is removed only after a 2xx.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "all"])))]
    Replay {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, value_parser = record_endpoint)]
        endpoint: String,
        /// Replay only the record with this id.
        #[arg(long)]
        id: Option<String>,
        /// Replay every record of the endpoint.
        #[arg(long)]
        all: bool,
        /// Only records dead-lettered since this RFC 3339 time or this long ago ("2h").
        #[arg(long)]
        since: Option<String>,
        /// Deliver them to this endpoint instead (--endpoint renamed in the config,
        /// say); a record of another tenant than its own is kept.
        #[arg(long, value_parser = record_endpoint)]
        to: Option<String>,
    },
}

fn find_endpoint<'a>(config: &'a Config, name: &str) -> Result<&'a Endpoint, Failure> {
    config
        .endpoints
        .iter()
        .find(|e| e.name == name)
        .map(|e| &**e)
        .ok_or_else(|| Failure::Usage(anyhow!("no endpoint named '{name}' in the config")))
}

/// The endpoint `name` whose dead letters are replayed: the config file's, or with
/// `[registry]` a runtime endpoint's record, served as natshook would serve it. A
/// disabled one is refused, as the admin API's replay refuses it: its customer
/// switched it off.
async fn replay_target(
    config: &Config,
    js: &async_nats::jetstream::Context,
    name: &str,
) -> Result<Arc<Endpoint>, Failure> {
    if let Ok(ep) = find_endpoint(config, name) {
        return Ok(Arc::new(ep.clone()));
    }
    let Some(registry) =
        (config.registry.as_ref()).filter(|_| crate::config::is_endpoint_name(name))
    else {
        return Err(Failure::Usage(anyhow!(
            "no endpoint named '{name}' in the config"
        )));
    };
    let registry = Registry::open(js, registry)
        .await
        .map_err(|e| Failure::Runtime(e.into()))?;
    let record = (registry.get(name).await)
        .map_err(|e| Failure::Runtime(e.into()))?
        .ok_or_else(|| {
            Failure::Usage(anyhow!(
                "no endpoint named '{name}' in the config or the registry"
            ))
        })?;
    if !record.enabled() {
        return Err(Failure::Usage(anyhow!(
            "endpoint '{name}' is disabled; enable it to replay its dead letters"
        )));
    }
    crate::app::registry_endpoint(&record, config).map_err(|problems| {
        let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
        Failure::Usage(anyhow!(
            "endpoint '{name}' is not served: {}",
            problems.join("; ")
        ))
    })
}

/// Refuses a replay to an endpoint paused until an operator resumes it, as the admin
/// API's replay does: whoever paused it wants nothing sent to its receiver.
async fn refuse_if_held(
    js: &async_nats::jetstream::Context,
    config: &Config,
    name: &str,
) -> Result<(), Failure> {
    let pauses = crate::store::pause_state::PauseState::new(js.clone(), config.nats.replicas);
    let record = (pauses.current(name).await).map_err(|e| {
        Failure::Runtime(anyhow!(
            "cannot read whether endpoint '{name}' is paused: {e}"
        ))
    })?;
    let reason = record.map(|r| crate::worker::breaker::PauseReason::from(&r.cause));
    match reason.filter(|r| !r.ends_on_success()) {
        Some(reason) => Err(Failure::Usage(anyhow!(
            "endpoint '{name}' is paused ({reason}); resume it (POST /api/endpoints/{name}/resume) to replay its dead letters"
        ))),
        None => Ok(()),
    }
}

fn parse_since(text: &str) -> Result<SystemTime, Failure> {
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Ok(t);
    }
    let ago = humantime::parse_duration(text).map_err(|_| {
        Failure::Usage(anyhow!(
            "--since '{text}': use an RFC 3339 time or a duration such as 2h"
        ))
    })?;
    Ok(SystemTime::now() - ago)
}

pub(super) async fn run(cmd: DlqCommand) -> Result<(), Failure> {
    let connect = |nats| async move {
        let client = crate::app::connect(nats, false, None)
            .await
            .map_err(|e| Failure::Runtime(e.into()))?;
        let js = async_nats::jetstream::new(client.clone());
        Ok::<_, Failure>((client, js))
    };
    match cmd {
        // Reads records only: the endpoints' secrets need not be at hand.
        DlqCommand::List {
            config,
            endpoint,
            limit,
        } => {
            let access = Config::load_store_access(&config.config)?;
            let (_client, js) = connect(&access.nats).await?;
            let dlq = DeadLetters::new(js, &access.dead_letter, access.nats.replicas);
            let records = dlq
                .list(endpoint.as_deref(), limit)
                .await
                .map_err(|e| Failure::Runtime(e.into()))?;
            let mut out = std::io::stdout().lock();
            for r in &records {
                let line = serde_json::to_string(&r.record).unwrap_or_default();
                let _ = writeln!(out, "{line}");
            }
            to_stderr(format_args!("{} record(s)", records.len()));
            // Records outlive their endpoint, so any name is listed; an empty answer
            // for a name the file lacks is more often a typo.
            let unknown = endpoint
                .as_deref()
                .filter(|name| !access.endpoint_names.iter().any(|e| e == name));
            if let Some(name) = unknown.filter(|_| records.is_empty()) {
                to_stderr(format_args!(
                    "no endpoint in the config is named '{name}' (a runtime endpoint, or one \
                     taken out of the file, keeps its records under its name until a runtime \
                     endpoint is created under it)"
                ));
            }
        }
        DlqCommand::Replay {
            config,
            endpoint,
            id,
            since,
            to,
            ..
        } => {
            let config = Config::load(&config.config)?;
            let (client, js) = connect(&config.nats).await?;
            let dlq = DeadLetters::for_config(js.clone(), &config);
            let ep = replay_target(&config, &js, to.as_deref().unwrap_or(&endpoint)).await?;
            refuse_if_held(&js, &config, &ep.name).await?;
            let since = since.as_deref().map(parse_since).transpose()?;
            let deliverer = Deliverer::new(ep.clone(), config.max_inflight)
                .map_err(|e| Failure::Runtime(e.into()))?;
            let summary = dlq
                .replay(
                    &endpoint,
                    &|| Some(deliverer.clone()),
                    &ReplayFilter {
                        id: id.clone(),
                        since,
                    },
                )
                .await
                .map_err(|e| Failure::Runtime(e.into()))?;
            for r in &summary.replayed {
                to_stderr(format_args!("replayed {r}"));
            }
            for (r, why) in &summary.failures {
                to_stderr(format_args!("replay of {r} failed: {why}; record kept"));
            }
            let (ok, failed) = (summary.replayed.len(), summary.failures.len());
            to_stderr(format_args!("{ok} replayed, {failed} failed"));
            let _ = client.flush().await;
            if failed > 0 {
                return Err(Failure::Runtime(anyhow!("{failed} replay(s) failed")));
            }
            if ok == 0 && id.is_some() {
                // Asked for a record that is not there (a typo, or replayed already):
                // the request's fault, not a failure of the replay.
                return Err(Failure::Usage(anyhow!(
                    "no dead letter of endpoint '{endpoint}' has that id (replayed already, or another endpoint's?)"
                )));
            }
        }
    }
    Ok(())
}
