//! Runtime endpoints in the running process: the registry's records as this process
//! last saw them, each validated against the config file in force (its `[defaults]`
//! and mappings), and the watch that keeps them current. The `Supervisor` serves the
//! file's endpoints and the valid, enabled records together, names unique across both:
//! a record with a file endpoint's name is skipped, the file's endpoint is served.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::Supervisor;
use crate::backoff::Backoff;
use crate::config::{api, Config, Endpoint, NetworkKeys, Problem};
use crate::store::registry::{Change, KeptRecord, Record, Registry, GATHER};

/// Longest sleep before a rotated secret's grace end is checked again.
const IDLE_CHECK: Duration = Duration::from_secs(60);

/// Most changes applied in one go; the rest follow at once in the next batch.
const MAX_BATCH: usize = 1000;

/// One record and what it serves.
struct Entry {
    /// Shared with what the admin API reads ([`Supervisor::publish_records`]): each
    /// change publishes every record again, which with thousands of records must not
    /// copy each one's JSON.
    record: Arc<KeptRecord>,
    /// `Err`: why it is not served (invalid, shadowed by a file endpoint, its HTTP
    /// client not built), logged when seen and shown by the admin API.
    endpoint: Result<Arc<Endpoint>, Vec<Problem>>,
}

/// The registry's records as last seen.
#[derive(Default)]
pub(super) struct Runtime {
    entries: BTreeMap<String, Entry>,
}

impl Runtime {
    /// Takes `record` in, validated against `file`.
    fn put(&mut self, record: Record, file: &Config) {
        let endpoint = validate(&record, file);
        let record = Arc::new(KeptRecord::keep(&record));
        self.entries
            .insert(record.name.clone(), Entry { record, endpoint });
    }

    /// Validates every record again against a new config file.
    pub(super) fn revalidate(&mut self, file: &Config) {
        self.judge_all(file);
        self.log_unserved();
    }

    /// Validates every record against `file` without logging: a reload judges them by
    /// the new config before it knows whether that config runs
    /// ([`Runtime::log_unserved`] once it does).
    pub(super) fn judge_all(&mut self, file: &Config) {
        for e in self.entries.values_mut() {
            e.endpoint = judge(&e.record.record(), file);
        }
    }

    /// Logs why each record not served is not.
    pub(super) fn log_unserved(&self) {
        for e in self.entries.values() {
            if let Err(problems) = &e.endpoint {
                log_refusal(&e.record.name, problems);
            }
        }
    }

    /// Takes out the records whose endpoint cannot be started, with why.
    pub(super) fn disable_failed(&mut self, failed: Vec<(String, String)>) {
        for (name, error) in failed {
            if let Some(e) = self.entries.get_mut(&name) {
                e.endpoint = Err(vec![Problem {
                    path: "url".into(),
                    message: format!("cannot start: {error}"),
                }]);
            }
        }
    }

    /// The records not served, each with why.
    pub(super) fn unserved(&self) -> HashMap<String, Vec<Problem>> {
        self.entries
            .iter()
            .filter_map(|(name, e)| e.endpoint.as_ref().err().map(|p| (name.clone(), p.clone())))
            .collect()
    }

    /// The file's config with the valid, enabled records' endpoints after its own.
    pub(super) fn merged(&self, file: &Config) -> Config {
        let mut merged = file.clone();
        merged.endpoints.extend(
            self.entries
                .values()
                .filter(|e| e.record.enabled())
                .filter_map(|e| e.endpoint.clone().ok()),
        );
        merged
    }

    /// The valid, disabled records' endpoints: with `fan_out`, their copies wait for
    /// them.
    pub(super) fn held(&self) -> Vec<Arc<Endpoint>> {
        self.entries
            .values()
            .filter(|e| !e.record.enabled())
            .filter_map(|e| e.endpoint.clone().ok())
            .collect()
    }

    /// When the next rotated secret's grace ends.
    fn next_grace_end(&self) -> Option<SystemTime> {
        let now = SystemTime::now();
        self.entries
            .values()
            .filter_map(|e| e.record.grace_until(now))
            .min()
    }

    /// Every record, in name order.
    pub(super) fn records(&self) -> Vec<Arc<KeptRecord>> {
        self.entries
            .values()
            .map(|e| Arc::clone(&e.record))
            .collect()
    }

    /// Each record's name and revision, read in place: the admin API needs only these
    /// to tell whether a change has taken effect.
    pub(super) fn revisions(&self) -> HashMap<String, u64> {
        (self.entries.iter())
            .map(|(name, e)| (name.clone(), e.record.revision))
            .collect()
    }

    /// Applies `changes`; returns the names deleted (their consumers go too).
    fn apply(&mut self, changes: Vec<Change>, file: &Config) -> Vec<String> {
        let mut deleted = Vec::new();
        for c in changes {
            match c {
                Change::Put(r) => {
                    deleted.retain(|n| *n != r.name);
                    self.put(r, file);
                }
                Change::Delete(name) => {
                    if self.entries.remove(&name).is_some() {
                        deleted.push(name);
                    }
                }
            }
        }
        deleted
    }
}

/// The record's endpoint, or why it is not served (logged).
fn validate(record: &Record, file: &Config) -> Result<Arc<Endpoint>, Vec<Problem>> {
    let verdict = judge(record, file);
    if let Err(problems) = &verdict {
        log_refusal(&record.name, problems);
    }
    verdict
}

/// The record's endpoint as `file` serves it, or why it is not served.
pub fn judge(record: &Record, file: &Config) -> Result<Arc<Endpoint>, Vec<Problem>> {
    let refused = |message: &str| {
        Err(vec![Problem {
            path: "name".into(),
            message: message.into(),
        }])
    };
    if file.endpoints.iter().any(|e| e.name == record.name) {
        return refused("a config-file endpoint has this name; the file's is served");
    }
    if record.value.get("name").and_then(|v| v.as_str()) != Some(record.name.as_str()) {
        return refused("the stored endpoint's name differs from its key");
    }
    let network_keys = NetworkKeys::of(file);
    api::endpoint_from_json(
        &record.value,
        &file.endpoint_defaults,
        &file.router,
        network_keys,
    )
    .map(Endpoint::into_shared)
}

/// Each `[registry]` limit that a runtime endpoint leaving its key out is not held to
/// ([`crate::config::write_limits::below_defaults`]), as a line to warn of: at start,
/// on each reload and by `natshook check`.
pub fn loose_limits(config: &Config) -> Vec<String> {
    let Some(registry) = &config.registry else {
        return Vec::new();
    };
    crate::config::write_limits::below_defaults(config, &registry.limits)
        .into_iter()
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect()
}

fn log_refusal(endpoint: &str, problems: &[Problem]) {
    for problem in problems {
        tracing::error!(endpoint, %problem, "invalid registry endpoint; not served");
    }
}

impl Supervisor {
    /// Applies changes seen in the registry: the file's endpoints with the records'.
    pub(super) async fn apply_registry(&self, changes: Vec<Change>) {
        let mut runtime = self.runtime.lock().await;
        let file = self.file.lock().await.clone();
        let deleted = if changes.is_empty() {
            // A grace ended: the records' secrets are read again.
            runtime.revalidate(&file);
            Vec::new()
        } else {
            runtime.apply(changes, &file)
        };
        self.publish_records(&runtime);
        loop {
            match (self.apply_merged(runtime.merged(&file), &deleted, runtime.held())).await {
                Ok(s) => {
                    self.publish_applied(&runtime);
                    if s != Default::default() {
                        tracing::info!(added = ?s.added, removed = ?s.removed, restarted = ?s.restarted, "registry change applied");
                    }
                    return;
                }
                Err(e) => {
                    for problem in &e.0 {
                        tracing::error!(%problem, "registry endpoint cannot start; skipped");
                    }
                    // A file endpoint that fails was not changed by the registry:
                    // nothing more to take out.
                    if e.0
                        .iter()
                        .all(|f| file.endpoints.iter().any(|fe| fe.name == f.name))
                    {
                        return;
                    }
                    let failed =
                        e.0.iter()
                            .map(|f| (f.name.clone(), f.error.to_string()))
                            .collect();
                    runtime.disable_failed(failed);
                    self.publish_records(&runtime);
                }
            }
        }
    }
}

/// Makes the registry bucket again when it is gone, and writes the records this
/// process knows into one that replaced it ([`Registry::replaced`]); `true` then: the
/// watch starts again on it.
async fn keep_bucket(sup: &Supervisor, registry: &Registry) -> bool {
    let bucket = match registry.replaced().await {
        Ok(Some(bucket)) => bucket,
        Ok(None) => return false,
        Err(e) => {
            tracing::debug!(error = %e, "cannot check the endpoint registry bucket");
            return false;
        }
    };
    let known = sup.runtime.lock().await.records();
    match registry.write_back(&known, bucket).await {
        Ok(written) => {
            tracing::warn!(
                endpoints = known.len(),
                written,
                "the endpoint registry bucket was gone or made again: it holds the endpoints this process knows"
            );
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "the endpoint registry bucket was gone or made again; writing back the endpoints this process knows failed, retrying");
            false
        }
    }
}

/// Opens the registry (retrying while JetStream cannot create or find the bucket) and
/// applies every change until `stop`; a watch that ends is started again, and its
/// replay of every record changes nothing that is already served.
pub(super) async fn watch(sup: Arc<Supervisor>, registry: Registry, stop: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let mut changes = match registry.watch().await {
            Ok(w) => {
                backoff.reset();
                w
            }
            Err(e) => {
                if keep_bucket(&sup, &registry).await {
                    continue;
                }
                tracing::warn!(error = %e, "cannot watch the endpoint registry; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff.next_delay()) => continue,
                }
            }
        };
        // An empty bucket sends the watch nothing to replay, so the process would never
        // count the registry as read (not ready, and the admin API answering 503 for
        // runtime endpoints) until someone created one. Asked once the watch exists,
        // so that a record written after the answer still reaches it; asked until it
        // answers.
        while !sup.registry_read() {
            match registry.is_empty().await {
                Ok(empty) => {
                    if empty {
                        sup.mark_registry_synced();
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot tell whether the endpoint registry is empty; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
        backoff.reset();
        let mut check = tokio::time::interval_at(
            tokio::time::Instant::now() + crate::store::bucket::CHECK_EVERY,
            crate::store::bucket::CHECK_EVERY,
        );
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let grace_end = sup.runtime.lock().await.next_grace_end();
            let wake = grace_end
                .and_then(|t| t.duration_since(SystemTime::now()).ok())
                .unwrap_or(IDLE_CHECK)
                .min(IDLE_CHECK);
            let first = tokio::select! {
                _ = stop.cancelled() => return,
                c = changes.next() => c,
                _ = tokio::time::sleep(wake), if grace_end.is_some() => {
                    sup.apply_registry(Vec::new()).await;
                    continue;
                }
                // A watch on a bucket that is gone may neither end nor see the one
                // made in its place.
                _ = check.tick() => {
                    if keep_bucket(&sup, &registry).await {
                        break;
                    }
                    continue;
                }
            };
            let Some(first) = first else { break };
            let mut caught_up = first.caught_up;
            let mut batch = vec![first.change];
            // Gather what arrives together (a replay, a burst of writes).
            while batch.len() < MAX_BATCH {
                match tokio::time::timeout(GATHER, changes.next()).await {
                    Ok(Some(c)) => {
                        caught_up |= c.caught_up;
                        batch.push(c.change);
                    }
                    _ => break,
                }
            }
            sup.apply_registry(batch).await;
            // The registry counts as read once the replay of every record is applied,
            // not after its first batch: a bucket of thousands takes several.
            if caught_up {
                sup.mark_registry_synced();
            }
        }
        tracing::warn!("endpoint registry watch ended; watching again");
    }
}
