//! Operations on runtime endpoints, the registry's records: create (with a generated
//! secret), change (keys replaced, `headers` and `signature` merged, guarded by the
//! revision), delete, and secret rotation with a grace period. The admin API and
//! `natshook endpoints` both call these, so a record written by either is checked,
//! stored and announced the same way; each caller only renders the outcome (JSON and
//! status codes, or lines and exit codes).
//!
//! A record is checked by the same code as a file `[[endpoints]]` entry, over the
//! config file in force ([`FileRules`]), before anything is written; the registry's
//! watch then starts, restarts or stops the worker in every natshook process on the
//! bucket. What a write means beyond the record is done here, once, by the process
//! that made it, not by every replica that sees it: the operator event of a disable or
//! enable, and the end of a pause when an endpoint is enabled.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream;
use serde_json::{Map, Value};

use crate::config::{api, Config, Endpoint, EndpointDefaults, NetworkKeys, Problem, RuntimeLimits};
use crate::events::{EndpointChange, EndpointEvent, EventFacts, OperatorEvents};
use crate::routing::Router;
use crate::store::dead_letters::DeadLetters;
use crate::store::delivery_log::DeliveryLog;
use crate::store::pause_state::{PauseCause, PauseState};
use crate::store::registry::{Record, Registry, RegistryError};

mod change;
mod secrets;
mod stale;
use self::secrets::{new_secret, plain_secret, signing_secret};
use self::stale::retrying_stale;

/// How long the old secret keeps signing after a rotation by default: receivers
/// usually take a day to roll out a new secret.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum RegistrarError {
    #[error("endpoint '{0}' is managed by the config file; change it there")]
    FileEndpoint(String),
    #[error("no endpoint named '{0}'")]
    NotFound(String),
    /// Every problem of a body, a change or a rotation, named by its field.
    #[error("the {what} is invalid")]
    Invalid {
        what: &'static str,
        problems: Vec<Problem>,
    },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("no randomness for a secret: {0}")]
    Randomness(String),
    /// A deleted endpoint of the name may still be delivering here: what it writes
    /// would land under the new endpoint.
    #[error(
        "the endpoint '{0}' was deleted and is still being removed; create it again in a moment"
    )]
    StillRemoving(String),
    /// A write without `If-Match` that lost to another change every time it was tried
    /// (eight times, [`stale`]): no revision was named, so not a failed precondition.
    #[error("the endpoint kept changing while this change was written; try again")]
    Contended,
    /// Also when NATS is down: whether a former endpoint left anything is not known.
    #[error(
        "could not clear what an earlier endpoint of this name may have left ({what}): {error}"
    )]
    Leftovers { what: &'static str, error: String },
}

fn invalid(what: &'static str, problems: Vec<Problem>) -> RegistrarError {
    RegistrarError::Invalid { what, problems }
}

/// Takes out, as problems, the keys natshook writes into a record itself: a request
/// that set them could start an endpoint after messages it must deliver (a future
/// `skip_before`), or keep a replaced secret signing for good.
fn refuse_own_keys(body: &mut Map<String, Value>, problems: &mut Vec<Problem>) {
    for (key, how) in [
        (api::SKIP_KEY, "\"skip_backlog\""),
        (api::SKIP_THROUGH_KEY, "\"skip_backlog\""),
        (api::GRACE_KEY, "POST /api/endpoints/{name}/secret/rotate"),
    ] {
        if body.remove(key).is_some() {
            problems.push(problem(
                key,
                format!("is set by natshook itself (through {how}), not by a request"),
            ));
        }
    }
}

fn problem(field: &str, message: impl Into<String>) -> Problem {
    Problem {
        path: field.to_string(),
        message: message.into(),
    }
}

/// What a runtime endpoint is checked against: the config file's `[defaults]` and
/// mappings, and the names its endpoints hold; and the stream it reads.
#[derive(Clone, Default)]
pub struct FileRules {
    pub defaults: EndpointDefaults,
    pub router: Router,
    pub file_names: BTreeSet<String>,
    /// The source stream, whose last sequence bounds a skipped backlog.
    pub stream: String,
    /// `[delivery] fan_out`: an endpoint gets copies of what arrives once it is
    /// served, never the stream's backlog.
    pub fan_out: bool,
    pub network_keys: NetworkKeys,
    /// What a write may set ([`RuntimeLimits`]).
    pub limits: RuntimeLimits,
}

impl FileRules {
    pub fn of(config: &Config) -> Self {
        Self {
            defaults: config.endpoint_defaults.clone(),
            router: config.router.clone(),
            file_names: config.endpoints.iter().map(|e| e.name.clone()).collect(),
            stream: config.nats.stream.clone(),
            fan_out: config.fan_out,
            network_keys: NetworkKeys::of(config),
            limits: config
                .registry
                .as_ref()
                .map_or_else(RuntimeLimits::default, |r| r.limits),
        }
    }

    pub fn is_file_endpoint(&self, name: &str) -> bool {
        self.file_names.contains(name)
    }

    /// The endpoint `entry` describes, checked as a file entry would be.
    pub fn check(&self, entry: &Map<String, Value>) -> Result<Endpoint, Vec<Problem>> {
        api::endpoint_from_json(entry, &self.defaults, &self.router, self.network_keys)
    }
}

/// A created endpoint and the secret it signs with (a string, or the list a body
/// gave), the one time it is shown.
pub struct Created {
    pub record: Record,
    pub secret: Value,
}

/// A rotated endpoint and its new secret, the one time it is shown.
pub struct Rotated {
    pub record: Record,
    pub secret: String,
}

/// Who makes a change, as operator events name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    AdminApi,
    Cli,
}

impl Actor {
    /// The event's `reason` code.
    fn reason(self) -> &'static str {
        match self {
            Actor::AdminApi => "admin_api",
            Actor::Cli => "cli",
        }
    }

    fn words(self) -> &'static str {
        match self {
            Actor::AdminApi => "through the admin API",
            Actor::Cli => "with natshook endpoints",
        }
    }
}

/// The operations, over one registry and the config file in force.
#[derive(Clone)]
pub struct Registrar {
    registry: Registry,
    rules: Arc<FileRules>,
    by: Actor,
    events: OperatorEvents,
    /// Where a pause is ended when an endpoint is enabled; `None`: not reachable here.
    pauses: Option<PauseState>,
    /// Where the source stream's last sequence is read when a backlog is skipped;
    /// `None`: the skip is bounded by time alone.
    js: Option<jetstream::Context>,
    /// Where a deleted endpoint's records are removed before its name is created
    /// again; `None`: not reachable here.
    leftovers: Option<Leftovers>,
}

/// The stores whose records outlive an endpoint: its delivery log (when kept) and its
/// dead letters. Its pause is ended through [`Registrar::resuming`]'s state.
#[derive(Clone)]
pub struct Leftovers {
    pub log: Option<DeliveryLog>,
    pub dead_letters: DeadLetters,
}

impl Registrar {
    /// Raises no events and ends no pauses until [`Registrar::raising`] and
    /// [`Registrar::resuming`].
    pub fn new(registry: Registry, rules: Arc<FileRules>, by: Actor) -> Self {
        Self {
            registry,
            rules,
            by,
            events: OperatorEvents::off(),
            pauses: None,
            js: None,
            leftovers: None,
        }
    }

    /// Removes what a deleted endpoint left under a name before it is created again
    /// ([`Registrar::clear_former`]).
    pub fn clearing(mut self, leftovers: Leftovers) -> Self {
        self.leftovers = Some(leftovers);
        self
    }

    /// Publishes `disabled` and `enabled` events through `events`.
    pub fn raising(mut self, events: OperatorEvents) -> Self {
        self.events = events;
        self
    }

    /// Ends an endpoint's shared pause when it is enabled.
    pub fn resuming(mut self, pauses: PauseState) -> Self {
        self.pauses = Some(pauses);
        self
    }

    /// Bounds a skipped backlog by the source stream's last sequence, read through `js`.
    pub fn reading_backlog(mut self, js: jetstream::Context) -> Self {
        self.js = Some(js);
        self
    }

    /// Marks the backlog as skipped in `record`: the stream's last sequence first, then
    /// the time, so that whatever is stored after the sequence was read is delivered.
    /// Without the sequence (the stream cannot be read), the time alone bounds it.
    async fn mark_backlog(&self, record: &mut Map<String, Value>) {
        let through = match &self.js {
            Some(js) => match js.get_stream(&self.rules.stream).await {
                Ok(stream) => Some(stream.cached_info().state.last_sequence),
                Err(e) => {
                    tracing::warn!(stream = %self.rules.stream, error = %e, "cannot read the stream's last sequence; the skipped backlog is bounded by time alone");
                    None
                }
            },
            None => None,
        };
        match through {
            Some(last) => record.insert(api::SKIP_THROUGH_KEY.into(), last.into()),
            None => record.remove(api::SKIP_THROUGH_KEY),
        };
        record.insert(
            api::SKIP_KEY.into(),
            crate::time::rfc3339_millis(SystemTime::now()).into(),
        );
    }

    pub fn rules(&self) -> &FileRules {
        &self.rules
    }

    fn not_file(&self, name: &str) -> Result<(), RegistrarError> {
        if self.rules.is_file_endpoint(name) {
            return Err(RegistrarError::FileEndpoint(name.to_string()));
        }
        Ok(())
    }

    fn check(&self, entry: &Map<String, Value>) -> Result<Endpoint, RegistrarError> {
        self.rules.check(entry).map_err(|p| invalid("endpoint", p))
    }

    /// Every runtime endpoint in the bucket, by name.
    pub async fn list(&self) -> Result<Vec<Record>, RegistrarError> {
        Ok(self.registry.all().await?)
    }

    pub async fn get(&self, name: &str) -> Result<Record, RegistrarError> {
        // Not a key to ask the bucket for (`*`, `>`, spaces): no such endpoint.
        if !crate::config::is_endpoint_name(name) {
            return Err(RegistrarError::NotFound(name.to_string()));
        }
        self.registry
            .get(name)
            .await?
            .ok_or_else(|| RegistrarError::NotFound(name.to_string()))
    }

    /// Whether the registry holds an entry named `name` now.
    pub async fn holds(&self, name: &str) -> Result<bool, RegistrarError> {
        Ok(self.registry.holds(name).await?)
    }

    /// Removes what an endpoint of `name` left (its delivery log, dead letters and
    /// pause: a runtime endpoint deleted, or a file endpoint taken out of the file)
    /// before `name` is created, perhaps for another customer: the new endpoint starts
    /// with none of it. Only what is older than this call goes (the log up to its
    /// last record now, dead letters and a pause from before now), so a create racing
    /// another one elsewhere cannot take the other's new records away. A name stored
    /// now is left to the create, which refuses it. `busy` says whether this process
    /// still serves or removes the name (its deliveries in flight may still write):
    /// then nothing is removed and the answer is [`RegistrarError::StillRemoving`].
    /// A name no endpoint may have is left to the create, which refuses it.
    pub async fn clear_former(
        &self,
        name: &str,
        busy: impl FnOnce() -> bool,
    ) -> Result<(), RegistrarError> {
        if !crate::config::is_endpoint_name(name) {
            return Ok(());
        }
        // A config-file endpoint's records are its own: the create refuses the name.
        self.not_file(name)?;
        let failed = |what: &'static str, e: &dyn std::fmt::Display| RegistrarError::Leftovers {
            what,
            error: e.to_string(),
        };
        let cutoff = SystemTime::now();
        let leftovers = self.leftovers.as_ref();
        let log = leftovers.and_then(|l| l.log.as_ref());
        let log_end = match log {
            Some(log) => Some((log.last_sequence().await).map_err(|e| failed("delivery log", &e))?),
            None => None,
        };
        if self.holds(name).await? {
            return Ok(());
        }
        if busy() {
            return Err(RegistrarError::StillRemoving(name.to_string()));
        }
        if let (Some(log), Some(through)) = (log, log_end) {
            (log.forget_through(name, through).await).map_err(|e| failed("delivery log", &e))?;
        }
        if let Some(leftovers) = leftovers {
            let removed = (leftovers.dead_letters.forget(name, cutoff).await)
                .map_err(|e| failed("dead letters", &e))?;
            // Most often a file endpoint taken out of the file, whose records the
            // operator may still have meant to replay: said where they look.
            if removed > 0 {
                tracing::warn!(endpoint = %name, records = removed, "dead letters of a former endpoint under this name removed: a runtime endpoint created under it starts with none");
            }
        }
        self.end_former_pause(name, cutoff)
            .await
            .map_err(|e| failed("pause", &e))
    }

    /// Ends a pause left in the shared state under `name` by an endpoint deleted
    /// before, so one created again under the name starts unpaused: one that began
    /// before `cutoff` (a later one is the new endpoint's own).
    async fn end_former_pause(&self, name: &str, cutoff: SystemTime) -> Result<(), RegistrarError> {
        let Some(pauses) = &self.pauses else {
            return Ok(());
        };
        let former = (pauses.current(name).await)
            .map_err(|e| RegistryError::Nats(e.to_string()))?
            .is_some_and(|p| humantime::parse_rfc3339_weak(&p.at).map_or(true, |at| at < cutoff));
        if former {
            (pauses.resume_now(name).await).map_err(|e| RegistryError::Nats(e.to_string()))?;
        }
        Ok(())
    }

    /// Stores a new endpoint, enabled unless the body says otherwise; without a
    /// `secret` one is generated in the form its signature scheme takes.
    ///
    /// A new endpoint starts from now, as a customer who registers a webhook expects:
    /// the messages the stream already holds are acked without a request
    /// (`skip_before` and `skip_through`, see [`crate::config::Backlog`]), unless the body
    /// says `"skip_backlog": false`.
    pub async fn create(&self, mut body: Map<String, Value>) -> Result<Created, RegistrarError> {
        let name = body.get("name").and_then(Value::as_str).map(str::to_string);
        if let Some(name) = &name {
            self.not_file(name)?;
        }
        // Every problem of the body in one answer: these two keys are not endpoint
        // keys, so the check below does not see them.
        let mut problems = Vec::new();
        refuse_own_keys(&mut body, &mut problems);
        plain_secret(&mut body);
        problems.extend(crate::config::write_limits::problems(
            &body,
            &self.rules.limits,
        ));
        let skip_backlog = match body.remove("skip_backlog") {
            None | Some(Value::Bool(true)) => true,
            Some(Value::Bool(false)) => false,
            Some(_) => {
                problems.push(problem("skip_backlog", "must be true or false"));
                true
            }
        };
        if !skip_backlog && self.rules.fan_out {
            problems.push(problem(
                "skip_backlog",
                "false is not possible with [delivery] fan_out: a new endpoint gets \
                 copies of what arrives from its creation on, never the stream's backlog",
            ));
        }
        // Without a secret, the scheme decides the secret's form: checked with a
        // stand-in first.
        let generate = !body.contains_key("secret");
        let checked = match generate {
            true => {
                let mut probe = body.clone();
                probe.insert("secret".into(), "stand-in".into());
                self.check(&probe)
            }
            false => self.check(&body),
        };
        let checked = match checked {
            Ok(checked) if problems.is_empty() => checked,
            Ok(_) => return Err(invalid("endpoint", problems)),
            Err(RegistrarError::Invalid {
                what,
                problems: more,
            }) => {
                problems.extend(more);
                return Err(invalid(what, problems));
            }
            Err(e) => return Err(e),
        };
        if generate {
            body.insert("secret".into(), new_secret(checked.signer.scheme())?.into());
            self.check(&body)?;
        }
        if skip_backlog {
            // Only for an endpoint about to be stored: it reads the stream.
            self.mark_backlog(&mut body).await;
        }
        let name = name.unwrap_or_default();
        body.entry("enabled").or_insert(true.into());
        let revision = self.registry.create(&name, &body).await?;
        let secret = signing_secret(body.get("secret"));
        Ok(Created {
            record: Record {
                name,
                revision,
                value: body,
            },
            secret,
        })
    }

    /// The stored record and the revision a write must replace: `if_match` when given
    /// (stale → [`RegistryError::Stale`]), else the one just read.
    async fn current(
        &self,
        name: &str,
        if_match: Option<u64>,
    ) -> Result<(Record, u64), RegistrarError> {
        self.not_file(name)?;
        let record = self.get(name).await?;
        let expected = if_match.unwrap_or(record.revision);
        if expected != record.revision {
            return Err(RegistryError::Stale(expected).into());
        }
        Ok((record, expected))
    }

    /// Applies `patch` key by key ([`change::apply`]; a `null` removes a key); `name`
    /// cannot change. `"skip_backlog": true`, with `"enabled": true`, makes the endpoint start
    /// from now: what it held while disabled (or paused) is not delivered.
    ///
    /// `"enabled": false` on an enabled endpoint raises `disabled`. `"enabled": true`
    /// also ends a pause (an operator's or the breaker's): whoever enables an endpoint
    /// means it to deliver, and a dashboard's switch shows no pause to lift besides.
    /// It raises `enabled` when it turned the endpoint on or ended a pause.
    pub async fn update(
        &self,
        name: &str,
        patch: Map<String, Value>,
        if_match: Option<u64>,
    ) -> Result<Record, RegistrarError> {
        retrying_stale(if_match, || self.update_once(name, patch.clone(), if_match)).await
    }

    async fn update_once(
        &self,
        name: &str,
        patch: Map<String, Value>,
        if_match: Option<u64>,
    ) -> Result<Record, RegistrarError> {
        let (mut record, expected) = self.current(name, if_match).await?;
        let was_enabled = record.enabled();
        let enabling = patch.get("enabled") == Some(&Value::Bool(true));
        let mut problems = Vec::new();
        let mut skip_backlog = false;
        let mut patch = patch;
        refuse_own_keys(&mut patch, &mut problems);
        plain_secret(&mut patch);
        // The keys the change sets to something new, not the record's: a record stored
        // under a higher limit can still be switched on and off, and a settings page
        // that sends back what it was shown is not refused for it.
        let changed: Map<String, Value> = (patch.iter())
            .filter(|(k, v)| record.value.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        problems.extend(crate::config::write_limits::problems(
            &changed,
            &self.rules.limits,
        ));
        let before = record.value.clone();
        for (key, value) in patch {
            match (key.as_str(), value) {
                ("name", Value::String(n)) if n == name => {}
                ("name", _) => problems.push(problem(
                    "name",
                    "cannot be changed (create a new endpoint instead)",
                )),
                ("skip_backlog", Value::Bool(skip)) => skip_backlog = skip,
                ("skip_backlog", _) => {
                    problems.push(problem("skip_backlog", "must be true or false"))
                }
                (_, Value::Null) => {
                    record.value.remove(&key);
                }
                (_, v) => change::apply(&mut record.value, key, v),
            }
        }
        if skip_backlog && !enabling {
            problems.push(problem(
                "skip_backlog",
                "goes with \"enabled\": true (it starts a re-enabled endpoint from now)",
            ));
        }
        let what = if problems.is_empty() {
            "endpoint"
        } else {
            "change"
        };
        if skip_backlog {
            // Stored, not acted on here: every replica's worker, and every later
            // start, acks what was stored before this time without a request.
            self.mark_backlog(&mut record.value).await;
        }
        // Every problem at once: the change's own beside the endpoint's.
        if let Err(found) = self.rules.check(&record.value) {
            problems.extend(found);
        }
        if !problems.is_empty() {
            return Err(invalid(what, problems));
        }
        // A change to what is stored already writes nothing: a new revision would
        // refuse everyone else's `If-Match` for nothing.
        if record.value == before {
            if enabling {
                // Enabling also ends a pause, stored or not.
                self.enabled(&record, was_enabled, false).await;
            }
            return Ok(record);
        }
        record.revision = self.registry.update(name, &record.value, expected).await?;
        if enabling {
            self.enabled(&record, was_enabled, skip_backlog).await;
        } else if was_enabled && !record.enabled() {
            let detail = format!(
                "disabled {}: its messages wait in the stream",
                self.by.words()
            );
            self.raise(EndpointChange::Disabled, &record, detail, None);
        }
        Ok(record)
    }

    /// After `record` was written enabled: ends its pause, if any, and raises
    /// `enabled` when something changed.
    async fn enabled(&self, record: &Record, was_enabled: bool, skipped: bool) {
        let mut pause = None;
        if let Some(pauses) = &self.pauses {
            match pauses.current(&record.name).await {
                Ok(Some(p)) => match pauses.resume_now(&record.name).await {
                    Ok(()) => pause = Some(p),
                    Err(e) => {
                        tracing::warn!(endpoint = %record.name, error = %e, "endpoint enabled, but its pause could not be ended; resume it with POST /api/endpoints/{{name}}/resume")
                    }
                },
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(endpoint = %record.name, error = %e, "endpoint enabled; whether it is paused cannot be read")
                }
            }
        }
        if was_enabled && pause.is_none() {
            return;
        }
        let mut detail = format!("enabled {}", self.by.words());
        if let Some(p) = &pause {
            let cause = match &p.cause {
                PauseCause::Failures { failures } => {
                    format!("after {failures} consecutive failures")
                }
                PauseCause::Gone => "on 410 Gone".to_string(),
                PauseCause::Manual => "by an operator".to_string(),
                PauseCause::Unrecognized { named } => format!("for {named}"),
            };
            detail.push_str(&format!("; its pause ({cause}) ended"));
        }
        if skipped {
            detail.push_str("; what it held is skipped");
        }
        self.raise(
            EndpointChange::Enabled,
            record,
            detail,
            pause.map(|p| p.at).filter(|at| !at.is_empty()),
        );
    }

    fn raise(
        &self,
        change: EndpointChange,
        record: &Record,
        detail: String,
        paused_at: Option<String>,
    ) {
        let tenant = record.tenant();
        let mut event = EndpointEvent::new(EventFacts::now(
            &record.name,
            tenant,
            self.by.reason(),
            detail,
        ));
        event.paused_at = paused_at;
        tracing::info!(endpoint = %record.name, reason = event.facts.reason, "{}", event.facts.detail);
        self.events.endpoint(change, &event);
    }

    pub async fn delete(&self, name: &str, if_match: Option<u64>) -> Result<(), RegistrarError> {
        retrying_stale(if_match, || async {
            let (_, expected) = self.current(name, if_match).await?;
            self.registry.delete(name, expected).await?;
            Ok(())
        })
        .await
    }

    /// A new secret, first in the list; the one it replaces goes on signing until
    /// `grace` (a duration such as `"24h"`, [`DEFAULT_GRACE`] when `None`) ends: beside
    /// the new one with `standard`, which signs with every secret; alone with `hex` and
    /// `sha256`, which send one signature (`Signer::during_rotation_grace`).
    pub async fn rotate(
        &self,
        name: &str,
        grace: Option<&str>,
        if_match: Option<u64>,
    ) -> Result<Rotated, RegistrarError> {
        // Not retried over a concurrent change, unlike a PATCH: two rotations at once
        // would both answer with a new secret, and the first would only sign through
        // the second's grace. One of them gets `412` and can rotate again.
        let (mut record, expected) = self.current(name, if_match).await?;
        let grace = secrets::grace(grace)?;
        let scheme = self.check(&record.value)?.signer.scheme();
        let secret = new_secret(scheme)?;
        secrets::rotate_into(&mut record.value, &secret, grace, SystemTime::now());
        self.check(&record.value)?;
        record.revision = self.registry.update(name, &record.value, expected).await?;
        Ok(Rotated { record, secret })
    }
}

/// A runtime endpoint as callers show it: its keys, never its secret, with `source`,
/// `enabled` and `revision`. Extra headers show by name only, since their values are
/// credentials for the receiver as often as not (an API key, a bearer token); a proxy
/// (in a record another tool wrote) shows without its password.
pub fn view(record: &Record) -> Map<String, Value> {
    let mut view = record.value.clone();
    view.remove("secret");
    if let Some(Value::Object(headers)) = view.get("headers") {
        let names: Vec<Value> = headers.keys().cloned().map(Value::String).collect();
        view.insert("headers".into(), Value::Array(names));
    }
    if let Some(Value::Object(proxy)) = view.get_mut("proxy") {
        proxy.remove("password");
    }
    view.insert("source".into(), "api".into());
    view.insert("enabled".into(), record.enabled().into());
    view.insert("revision".into(), record.revision.into());
    view
}
