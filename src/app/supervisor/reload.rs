//! Applying a config to the running set: which endpoints start, stop, restart or
//! change in place, all or nothing; and re-reading the config file for a reload.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use super::{ApplyError, EndpointError, Running, Supervisor};
use crate::config::{Config, Endpoint, RegistryConfig};
use crate::delivery::Deliverer;
use crate::fanout::Targets;
use crate::name_marks::NameMark;
use crate::registrar::FileRules;

/// What a reload changed.
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReloadSummary {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub restarted: Vec<String>,
    /// Changed in place, without a restart (only `rate_limit` differed).
    pub updated: Vec<String>,
}

/// How long a reload waits for a replaced worker to stop fetching and leave what it
/// holds to its successor; it stops at once unless JetStream is slow to answer.
const HANDOVER_WAIT: Duration = Duration::from_secs(5);

/// How long the copies of a disabled endpoint that is deleted may still be landing:
/// every replica's fan-out copies for it until the change reaches it (a tenth of a
/// second or so) and finishes the copies it has started. One landing later is of a
/// message stored before the deletion, which an endpoint created again under the name
/// skips.
const COPIES_SETTLE: Duration = Duration::from_secs(1);

/// Whether `new` differs from the running `old` in more than what a worker applies in
/// place (`rate_limit`), so that the endpoint must restart.
///
/// The same endpoint, shared, is known unchanged without the comparison, which copies
/// both: a registry put or delete passes every other record's endpoint as it was, and
/// with thousands of records the copies were most of what the change cost. (A reload
/// or a grace end judges every record again into new endpoints, which are compared.)
fn needs_restart(old: &Endpoint, new: &Endpoint) -> bool {
    if std::ptr::eq(old, new) {
        return false;
    }
    let in_place = |e: &Endpoint| Endpoint {
        rate_limit: None,
        ..e.clone()
    };
    in_place(old) != in_place(new)
}

impl Supervisor {
    /// Applies a new config: added endpoints start, removed ones drain and stop,
    /// changed ones (or all, when the mappings changed) restart. Draining happens in
    /// the background, so in-flight deliveries finish and nothing is dropped.
    /// Settings that need a restart (NATS, listen address, stores) are reported.
    ///
    /// All or nothing: what can fail (each new endpoint's HTTP client, with its TLS
    /// files) is built before any running endpoint is touched. On an error the running
    /// set stays exactly as it was, and no worker is left running outside it.
    pub async fn apply(&self, mut new: Config) -> Result<ReloadSummary, ApplyError> {
        let mut runtime = self.runtime.lock().await;
        let mut file = self.file.lock().await;
        let registry_dropped = new.registry.is_none() && self.registry_configured;
        if registry_dropped {
            // The registry runs until a restart, and so do the rules of its section.
            new.registry = file.registry.clone();
        }
        runtime.judge_all(&new);
        let summary = match self
            .apply_merged(runtime.merged(&new), &[], runtime.held())
            .await
        {
            Ok(summary) => summary,
            Err(e) => {
                // The running config stays, and the records are judged by it.
                runtime.judge_all(&file);
                return Err(e);
            }
        };
        if registry_dropped {
            warn_restart("registry");
        }
        // The records the new config refuses, in the log and as the API shows them.
        runtime.log_unserved();
        self.publish_records(&runtime);
        if let Ok(mut r) = self.rules.write() {
            *r = Arc::new(FileRules::of(&new));
        }
        *file = new;
        Ok(summary)
    }

    /// Applies the file's endpoints and the runtime ones together (`new`); the
    /// consumers of `forget` (runtime endpoints deleted) are deleted once their
    /// workers have drained. With `fan_out`, the disabled runtime endpoints (`held`)
    /// keep getting copies.
    pub(in crate::app) async fn apply_merged(
        &self,
        new: Config,
        forget: &[String],
        held: Vec<Arc<Endpoint>>,
    ) -> Result<ReloadSummary, ApplyError> {
        let mut current = self.config.lock().await;
        let router_changed = current.router != new.router;
        let mut running = self.running.lock().await;

        let mut summary = ReloadSummary::default();
        let mut built = Vec::new();
        let mut failed = Vec::new();
        let mut in_place = Vec::new();
        let mut to_build = Vec::new();
        let mut wanted: Vec<(usize, &Arc<Endpoint>)> = new.endpoints.iter().enumerate().collect();
        wanted.sort_by(|a, b| a.1.name.cmp(&b.1.name));
        for (index, e) in wanted {
            let changes = match running.get(&e.name) {
                None => &mut summary.added,
                Some(r) if router_changed || needs_restart(r.worker.endpoint(), e) => {
                    &mut summary.restarted
                }
                Some(r) => {
                    if r.worker.rate_limit() != e.rate_limit {
                        in_place.push((r.worker.clone(), r.stop.drain.clone(), e.rate_limit));
                    }
                    continue;
                }
            };
            changes.push(e.name.clone());
            to_build.push((index, e));
        }
        // New client shapes read their TLS files on the blocking pool: a slow mount
        // holds no runtime thread, and so neither deliveries nor `/healthz`.
        let clients =
            crate::delivery::ready_clients(to_build.iter().map(|(_, e)| &***e), new.max_inflight)
                .await;
        for (index, e) in to_build {
            match Deliverer::with_ready(Arc::clone(e), &clients) {
                Ok(d) => built.push(d.with_tracer(self.tracer.clone())),
                Err(error) => failed.push(EndpointError {
                    index,
                    name: e.name.clone(),
                    error,
                }),
            }
        }
        if !failed.is_empty() {
            failed.sort_by_key(|e| e.index);
            return Err(ApplyError(failed));
        }
        let names: BTreeSet<&str> = new.endpoints.iter().map(|e| e.name.as_str()).collect();
        summary.removed = running
            .keys()
            .filter(|name| !names.contains(name.as_str()))
            .cloned()
            .collect();

        // From here on nothing fails.
        warn_restart_needed(&current, &new);
        self.shared.set_endpoints(new.endpoints.len());
        for (worker, stopped, rate) in in_place {
            summary.updated.push(worker.endpoint().name.clone());
            worker.set_rate_limit(rate, stopped);
        }
        let router = Arc::new(new.router.clone());
        let mut to_drain = Vec::new();
        for name in &summary.removed {
            to_drain.extend(running.remove(name));
        }
        // Workers being replaced stop fetching first and leave what they hold (fetched
        // but not started, such as what a pause holds) to their successors, so a
        // reload costs those messages no attempt.
        let mut replaced: BTreeMap<String, Running> = built
            .iter()
            .filter_map(|d| {
                let name = &d.endpoint().name;
                running.remove(name).map(|r| (name.clone(), r))
            })
            .collect();
        futures_util::future::join_all(
            replaced
                .values_mut()
                .map(|r| r.stop_fetching(HANDOVER_WAIT)),
        )
        .await;
        let mut started = Vec::with_capacity(built.len());
        for deliverer in built {
            let name = deliverer.endpoint().name.clone();
            let old = replaced.remove(&name);
            let fresh = self.start(deliverer, router.clone(), old.as_ref().map(|o| &*o.worker));
            started.push(Arc::clone(&fresh.worker));
            running.insert(name, fresh);
            to_drain.extend(old);
        }
        // Marked before the deleted ones leave the snapshot: the admin API creates a
        // deleted name again only once it is neither served nor being removed here.
        let mut marks: BTreeMap<String, NameMark> = (forget.iter())
            .map(|name| (name.clone(), self.removing.mark(name)))
            .collect();
        self.publish_snapshot(&running);
        for w in started {
            w.follow_known();
        }
        for old in to_drain {
            let name = old.worker.endpoint().name.clone();
            let worker = Arc::clone(&old.worker);
            let drained = old.drain();
            if running.contains_key(&name) {
                // Replaced: its successor runs on.
                self.draining.spawn(drained);
                continue;
            }
            let deleted = forget.contains(&name);
            let gone = self.when_gone(name.clone(), move || worker.retire(deleted));
            let leftovers = deleted.then(|| self.remove_leftovers(name.clone()));
            let removing = marks.remove(&name);
            self.draining.spawn(async move {
                let _removing = removing;
                drained.await;
                if !gone.await {
                    tracing::info!(endpoint = %name, "created again while the removed one drained; its consumer, copies, log and series stay");
                    return;
                }
                if let Some(leftovers) = leftovers {
                    leftovers.await;
                }
            });
        }
        // Deleted while disabled: no worker to drain, the rest goes the same way. With
        // `fan_out` it was copied for until now: the copies in flight land first.
        let settle = match self.shared.work_stream() {
            Some(_) => COPIES_SETTLE,
            None => Duration::ZERO,
        };
        for name in forget {
            if running.contains_key(name) || summary.removed.contains(name) {
                continue;
            }
            let gone = self.when_gone(name.clone(), || {});
            let leftovers = self.remove_leftovers(name.clone());
            let removing = marks.remove(name);
            self.draining.spawn(async move {
                let _removing = removing;
                tokio::time::sleep(settle).await;
                if gone.await {
                    leftovers.await;
                }
            });
        }
        if let Ok(mut r) = self.router.write() {
            *r = router;
        }
        if self.shared.work_stream().is_some() {
            let workers = running.values().map(|r| r.worker.clone()).collect();
            self.targets
                .send_replace(Arc::new(Targets::new(new.router.clone(), workers, held)));
        }
        // The workers hold the endpoints: no second copy of thousands here.
        current.router = new.router;
        Ok(summary)
    }

    /// Resolves to whether no worker serves `name` once it is awaited, running `then`
    /// if so, both under the lock of the running set: no worker of the name starts in
    /// between and has its series or consumer taken away.
    fn when_gone(
        &self,
        name: String,
        then: impl FnOnce() + Send + 'static,
    ) -> impl std::future::Future<Output = bool> + Send + 'static {
        let running = Arc::clone(&self.running);
        async move {
            let running = running.lock().await;
            let gone = !running.contains_key(&name);
            if gone {
                then();
            }
            gone
        }
    }

    /// Removes what a deleted runtime endpoint leaves in JetStream once nothing
    /// delivers for it: its consumer (on the source stream, or with `fan_out` on its
    /// work stream: both are tried) and its notes of unattempted deliveries
    /// (`store::unattempted`), its copies, its delivery log, its dead letters and its
    /// pause, so an endpoint created later under the name (another customer's, say)
    /// starts from nothing, unpaused, and cannot replay or read what was the other's.
    fn remove_leftovers(
        &self,
        name: String,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let js = self.shared.js().clone();
        let log = self.shared.delivery_log().cloned();
        let dead_letters = self.shared.dead_letters().clone();
        let pause_state = self.shared.pause_state().clone();
        let unattempted = self.shared.unattempted().clone();
        let serving = Arc::clone(&self.snapshot);
        let consumer = crate::worker::consumer_name(self.shared.consumer_prefix(), &name);
        let mut streams = vec![self.shared.stream_name().to_string()];
        let mut copies = Vec::new();
        if let Some(w) = self.shared.work_stream() {
            streams.push(w.name_of(&name).to_string());
            copies.push((w.name_of(&name).to_string(), w.subject(&name)));
            copies.push((w.lane_name().to_string(), w.lane_subject(&name)));
        }
        async move {
            // Run once the deleted endpoint's deliveries have ended: its last dead
            // letters are older than this, one created again under the name writes
            // newer ones.
            let deleted_at = std::time::SystemTime::now();
            for stream in &streams {
                match js.delete_consumer_from_stream(&consumer, stream).await {
                    Ok(_) => {
                        tracing::info!(%consumer, %stream, "deleted endpoint's consumer removed")
                    }
                    Err(e) => {
                        tracing::debug!(%consumer, %stream, error = %e, "consumer not removed")
                    }
                }
            }
            // Not when created again meanwhile: the notes would be the new endpoint's.
            let again = || {
                serving
                    .read()
                    .map(|w| w.get(&name).is_some())
                    .unwrap_or(true)
            };
            if !again() {
                if let Err(e) = unattempted.forget_consumer(&consumer).await {
                    tracing::warn!(%consumer, error = %e, "deleted endpoint's notes of unattempted deliveries kept");
                }
            }
            if let Some(log) = log {
                if let Err(e) = log.forget(&name).await {
                    tracing::warn!(error = %e, "deleted endpoint's delivery log kept");
                }
            }
            for (stream, subject) in copies {
                let purged = match js.get_stream(&stream).await {
                    Ok(s) => s
                        .purge()
                        .filter(subject.as_str())
                        .await
                        .map(drop)
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = purged {
                    tracing::warn!(%subject, error = %e, "deleted endpoint's copies not purged");
                }
            }
            // Queued after every pause the retired worker announced, so none of them
            // lands after it; not when created again meanwhile. Only over a pause this
            // process knows of (any replica's, through the watch, its own at once):
            // the resume is a marker the bucket keeps for good, and customers delete
            // endpoints by the thousand. A name created again starts unpaused anyway
            // (the registrar ends a pause left under it).
            let paused = pause_state.known(&name).is_some() || !pause_state.known_loaded();
            if !again() && paused {
                pause_state.announce(&name, None);
            }
            // Last: it reads the records when there are any.
            match dead_letters.forget(&name, deleted_at).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(endpoint = %name, records = n, "deleted endpoint's dead letters removed")
                }
                Err(e) => {
                    tracing::warn!(endpoint = %name, error = %e, "deleted endpoint's dead letters kept")
                }
            }
        }
    }

    /// Re-reads the config file and applies it; an invalid one leaves the running one
    /// as it is, and the error says why for the caller to log. Reading and validating
    /// run on a blocking thread: they read files and parse, and the async workers
    /// serve `/healthz` and deliveries meanwhile.
    pub async fn reload(&self, path: &std::path::Path) -> Result<(), ReloadRefused> {
        let owned = path.to_path_buf();
        let config = match tokio::task::spawn_blocking(move || Config::load(&owned)).await {
            Ok(Ok(config)) => config,
            Ok(Err(e)) => {
                let problems = e.problems.iter().map(ToString::to_string).collect();
                return Err(ReloadRefused::Invalid(problems));
            }
            Err(e) => return Err(ReloadRefused::NotApplied(vec![e.to_string()])),
        };
        for warning in crate::app::loose_registry_limits(&config) {
            tracing::warn!("{warning}");
        }
        match self.apply(config.clone()).await {
            Ok(s) => {
                self.ingress.apply(&config.ingress);
                crate::app::nats::check_mapped_subjects(self.shared.js(), &config).await;
                tracing::info!(added = ?s.added, removed = ?s.removed, restarted = ?s.restarted, updated = ?s.updated, "config reloaded");
                Ok(())
            }
            Err(e) => Err(ReloadRefused::NotApplied(
                e.0.iter().map(ToString::to_string).collect(),
            )),
        }
    }
}

/// Why a reload left the running config as it was.
#[derive(Debug, PartialEq)]
pub enum ReloadRefused {
    /// The file does not pass validation: each problem names its key.
    Invalid(Vec<String>),
    /// The file is valid but could not be applied (an endpoint's client or secret
    /// could not be set up, or the read itself failed).
    NotApplied(Vec<String>),
}

impl ReloadRefused {
    /// One error line per problem.
    pub fn log(&self) {
        match self {
            ReloadRefused::Invalid(problems) => {
                for problem in problems {
                    tracing::error!(%problem, "config reload rejected; keeping the running config");
                }
            }
            ReloadRefused::NotApplied(problems) => {
                for problem in problems {
                    tracing::error!(%problem, "config reload failed; keeping the running config");
                }
            }
        }
    }
}

/// Logs the settings a reload changed that take effect only after a restart.
fn warn_restart_needed(current: &Config, new: &Config) {
    for section in restart_needed(current, new) {
        warn_restart(section);
    }
}

fn warn_restart(section: &str) {
    tracing::warn!(section, "config change needs a restart to take effect");
}

/// The settings `new` changes that natshook reads only at start-up: the connection
/// and the stores it sets up, its listeners, the process-wide delivery set-up (the
/// bound, and with `fan_out` the consumers and streams it runs on), the registry it
/// watches, tracing and the shutdown grace. Everything else a reload applies.
fn restart_needed(current: &Config, new: &Config) -> Vec<&'static str> {
    [
        ("nats", current.nats != new.nats),
        ("http.listen", current.listen != new.listen),
        ("admin", current.admin != new.admin),
        // Which keys a runtime endpoint may set is a check of its record, applied by
        // the reload like `[defaults]`.
        (
            "registry",
            current.registry.as_ref().map(RegistryConfig::store)
                != new.registry.as_ref().map(RegistryConfig::store),
        ),
        ("delivery_log", current.delivery_log != new.delivery_log),
        ("dead_letter", current.dead_letter != new.dead_letter),
        ("tracing", current.tracing != new.tracing),
        (
            "delivery.max_inflight",
            current.max_inflight != new.max_inflight,
        ),
        ("delivery.fan_out", current.fan_out != new.fan_out),
        (
            "ingress.listen",
            current.ingress.listen != new.ingress.listen,
        ),
        // The ingress publishes on a JetStream context whose ack timeout is set at
        // start-up: a longer timeout would not wait longer.
        (
            "ingress.publish_timeout",
            current.ingress.publish_timeout != new.ingress.publish_timeout,
        ),
        (
            "shutdown_grace",
            current.shutdown_grace != new.shutdown_grace,
        ),
    ]
    .into_iter()
    .filter_map(|(section, changed)| changed.then_some(section))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_endpoint as endpoint;

    #[test]
    fn reload_sees_changes_that_debug_output_hides() {
        let base = endpoint("secret = \"one\"\nheaders = { \"X-Key\" = \"k1\" }");
        assert!(base == endpoint("secret = \"one\"\nheaders = { \"X-Key\" = \"k1\" }"));
        assert_eq!(
            format!("{base:?}"),
            format!(
                "{:?}",
                endpoint("secret = \"two\"\nheaders = { \"X-Key\" = \"k2\" }")
            ),
            "Debug output hides secrets and header values"
        );
        assert!(base != endpoint("secret = \"two\"\nheaders = { \"X-Key\" = \"k1\" }"));
        assert!(base != endpoint("secret = \"one\"\nheaders = { \"X-Key\" = \"k2\" }"));
        assert!(base != endpoint("secret = [\"one\", \"two\"]\nheaders = { \"X-Key\" = \"k1\" }"));
        assert!(
            base != endpoint(
                "secret = \"one\"\nheaders = { \"X-Key\" = \"k1\" }\nsignature = { scheme = \"sha256\" }"
            )
        );
    }

    #[test]
    fn a_changed_rate_limit_alone_needs_no_restart() {
        let base = endpoint("secret = \"one\"\nrate_limit = \"50/s\"");
        let slower = endpoint("secret = \"one\"\nrate_limit = \"5/s\"");
        assert!(base != slower);
        assert!(!needs_restart(&base, &slower));
        assert!(!needs_restart(&base, &endpoint("secret = \"one\"")));
        assert!(needs_restart(
            &base,
            &endpoint("secret = \"one\"\nrate_limit = \"5/s\"\nconcurrency = 2")
        ));
    }

    #[test]
    fn the_same_endpoint_needs_no_restart_and_an_equal_copy_none_either() {
        let e = endpoint("secret = \"one\"\nconcurrency = 2");
        assert!(!needs_restart(&e, &e));
        assert!(!needs_restart(&e, &e.clone()));
        assert!(needs_restart(&e, &endpoint("secret = \"one\"")));
    }

    #[test]
    fn settings_read_at_start_up_only_are_reported() {
        let config = |text: &str| {
            let text = format!(
                "{text}\n[[events]]\nsubject = \"a\"\nevent = \"a\"\n[[endpoints]]\nname = \"x\"\nurl = \"https://example.com/\"\nevents = [\"*\"]\nsecret = \"s\"\n"
            );
            Config::from_str(&text, "toml").unwrap_or_else(|e| panic!("{e}"))
        };
        let nats = "[nats]\nstream = \"E\"";
        let base = config(nats);
        assert_eq!(restart_needed(&base, &config(nats)), Vec::<&str>::new());
        for (changed, section) in [
            (format!("{nats}\nconsumer_prefix = \"other\""), "nats"),
            (
                format!("{nats}\n[http]\nlisten = \"127.0.0.1:9000\""),
                "http.listen",
            ),
            (
                format!("{nats}\n[admin]\nenabled = true\ntoken = \"0123456789abcdef\""),
                "admin",
            ),
            (format!("{nats}\n[registry]\nenabled = true"), "registry"),
            (
                format!("{nats}\n[delivery_log]\nenabled = false"),
                "delivery_log",
            ),
            (
                format!("{nats}\n[dead_letter]\nmax_age = \"1d\""),
                "dead_letter",
            ),
            (
                format!("{nats}\n[tracing]\notlp_endpoint = \"http://127.0.0.1:4318\""),
                "tracing",
            ),
            (
                format!("{nats}\n[delivery]\nmax_inflight = 8"),
                "delivery.max_inflight",
            ),
            (
                format!("{nats}\n[delivery]\nfan_out = true"),
                "delivery.fan_out",
            ),
            (
                format!("{nats}\n[ingress]\nlisten = \"127.0.0.1:9465\""),
                "ingress.listen",
            ),
            (
                format!("{nats}\n[ingress]\npublish_timeout = \"9s\""),
                "ingress.publish_timeout",
            ),
            (format!("shutdown_grace = \"5s\"\n{nats}"), "shutdown_grace"),
        ] {
            assert_eq!(
                restart_needed(&base, &config(&changed)),
                [section],
                "{changed}"
            );
        }
        // What a reload applies: endpoints, mappings, defaults, ingress routes.
        let applied = "[defaults]\ntimeout = \"3s\"\n[[ingress.routes]]\npath = \"/in/x\"\nsubject = \"in.x\"\nverify = { scheme = \"none\" }";
        assert_eq!(
            restart_needed(&base, &config(&format!("{nats}\n{applied}"))),
            Vec::<&str>::new()
        );
        // So is which keys runtime endpoints may set: a check of each record.
        let registry = format!("{nats}\n[registry]\nenabled = true");
        assert_eq!(
            restart_needed(
                &config(&registry),
                &config(&format!("{registry}\nallow_network_keys = false"))
            ),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn a_file_secret_compares_by_its_reference() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let settings = format!("secret = {{ file = \"{}\" }}", path.display());
        std::fs::write(&path, "one").unwrap();
        let before = endpoint(&settings);
        // The running endpoint re-reads the file itself: new content needs no restart.
        std::fs::write(&path, "two").unwrap();
        assert!(before == endpoint(&settings));
        let other = dir.path().join("other");
        std::fs::write(&other, "one").unwrap();
        assert!(before != endpoint(&format!("secret = {{ file = \"{}\" }}", other.display())));
    }
}
