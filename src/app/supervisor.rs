//! The `Supervisor`: one worker per endpoint, kept in step with the config (`reload`
//! applies a new one), started and stopped without losing in-flight deliveries.

mod reload;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::Response;
use http_body_util::Full;
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use self::reload::{ReloadRefused, ReloadSummary};
use super::registry::Runtime;
use crate::config::{Config, NatsConfig, Problem};
use crate::delivery::{ClientError, Deliverer};
use crate::events::OperatorEvents;
use crate::fanout::lane::Lane;
use crate::fanout::{FanOut, Targets};
use crate::http::AppView;
use crate::ingress::Ingress;
use crate::metrics::Metrics;
use crate::name_marks::NameMarks;
use crate::otel::AttemptTracer;
use crate::registrar::{Actor, FileRules, Leftovers, Registrar};
use crate::routing::Router;
use crate::store::dead_letters::DeadLetters;
use crate::store::delivery_log::DeliveryLog;
use crate::store::pause_state::PauseState;
use crate::store::registry::{KeptRecord, Registry};
use crate::store::work_stream::WorkStream;
use crate::worker::{Shared, Stop, Worker, WorkerSet};

/// Why a config could not be applied: the endpoints whose HTTP client could not be
/// built, each named by its place in the config. Nothing was changed.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
pub struct ApplyError(pub Vec<EndpointError>);

#[derive(Debug, thiserror::Error)]
#[error("endpoints[{index}] ({name}): {error}")]
pub struct EndpointError {
    pub index: usize,
    pub name: String,
    pub error: ClientError,
}

/// How often `{ file }` secrets and endpoint TLS files are re-read. Kubernetes updates
/// mounted Secrets within about a minute; a few seconds more is not noticeable, a read
/// is cheap.
pub(super) const SECRET_POLL: Duration = Duration::from_secs(2);

/// One running endpoint: its worker and the handles to stop it without losing
/// in-flight deliveries.
struct Running {
    worker: Arc<Worker>,
    stop: Stop,
    tracker: TaskTracker,
    /// The worker's task; `None` once [`Running::stop_fetching`] saw it end.
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops fetching and waits for in-flight deliveries (they finish and are acked
    /// or NAKed as usual). Used for removed and changed endpoints on reload.
    async fn drain(self) {
        self.stop.drain.cancel();
        if let Some(handle) = self.handle {
            let _ = handle.await;
        }
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// For a worker a reload replaces: stops its fetching and waits up to `within` for
    /// it to leave what it holds for its successor (`Worker::hand_over_to`); its
    /// deliveries in flight go on. A worker that takes longer (a probe of a hanging
    /// receiver still running) NAKs what it holds when it stops, as before handovers.
    async fn stop_fetching(&mut self, within: Duration) {
        self.worker.will_hand_over();
        self.stop.drain.cancel();
        if let Some(handle) = self.handle.as_mut() {
            if tokio::time::timeout(within, handle).await.is_ok() {
                self.handle = None;
            }
        }
    }
}

/// Owns the workers; the HTTP server and the admin API read from it.
pub struct Supervisor {
    shared: Arc<Shared>,
    connected: Arc<AtomicBool>,
    shutdown: CancellationToken,
    /// The config in force, but for its endpoints, which the workers hold (the
    /// mappings follow reloads).
    config: tokio::sync::Mutex<Config>,
    /// Shared with the tasks that drain removed workers.
    running: Arc<tokio::sync::Mutex<BTreeMap<String, Running>>>,
    /// Snapshot for readiness, the pending poll and the admin API.
    snapshot: Arc<RwLock<Arc<WorkerSet>>>,
    /// The mapping in force, for the unmapped-subject counter.
    router: RwLock<Arc<Router>>,
    /// Streams set up and endpoints started: until then /readyz says no, even
    /// though no worker exists yet whose binding it could check.
    started: AtomicBool,
    /// Parent of every worker's abort token: cancelled once the shutdown grace is over.
    abort: CancellationToken,
    /// Workers removed or replaced by a reload that are still finishing in-flight
    /// deliveries; shutdown waits for them within the same grace period.
    draining: TaskTracker,
    /// Deleted endpoints whose deliveries or leftovers are still being finished here:
    /// the admin API creates none of these names again until they are done.
    removing: NameMarks,
    /// Incoming webhooks: the route table follows reloads.
    ingress: Arc<Ingress>,
    /// With `[tracing]`: traces every endpoint's attempts (read at start-up only).
    tracer: Option<AttemptTracer>,
    /// The config file as last applied: runtime endpoints are validated against it and
    /// served beside its endpoints.
    pub(super) file: tokio::sync::Mutex<Config>,
    /// The registry's records as this process saw them last.
    pub(super) runtime: tokio::sync::Mutex<Runtime>,
    /// Each record's revision once its workers run as it says (see
    /// [`AppView::applied_revision`]).
    applied: RwLock<HashMap<String, u64>>,
    /// Snapshots for the admin API: the records, and what a new one is checked against.
    records: RwLock<Vec<Arc<KeptRecord>>>,
    /// The records not served, each with why.
    unserved: RwLock<HashMap<String, Vec<Problem>>>,
    rules: RwLock<Arc<FileRules>>,
    /// Set once the bucket is open (with `[registry] enabled = true`).
    registry: OnceLock<Registry>,
    /// `false` while `[registry] enabled = true` and the registry's records are not
    /// applied yet: not ready, or a restart would answer for a moment without its
    /// runtime endpoints, and the fan-out waits ([`Self::registry_read_once`]).
    registry_read: tokio::sync::watch::Sender<bool>,
    /// `[registry] enabled = true` (set at start: the section needs a restart).
    registry_configured: bool,
    /// With `[delivery] fan_out`: the endpoints the fan-out copies to, kept in step
    /// with the running workers and the mapping.
    targets: tokio::sync::watch::Sender<Arc<Targets>>,
    /// With `[delivery] fan_out`: whether the fan-out consumer is bound (readiness).
    fan_out_bound: OnceLock<Arc<AtomicBool>>,
    /// With `[delivery] fan_out`: whether the lane's consumer is bound (readiness).
    lane_bound: OnceLock<Arc<AtomicBool>>,
}

impl Supervisor {
    /// A supervisor with no endpoints running yet: [`apply`](Self::apply) starts them.
    pub(super) fn new(
        config: &Config,
        client: &async_nats::Client,
        metrics: Metrics,
        connected: Arc<AtomicBool>,
        shutdown: CancellationToken,
        tracer: Option<AttemptTracer>,
    ) -> Self {
        let js = jetstream::new(client.clone());
        let shared = Shared::new(
            js.clone(),
            &config.nats,
            metrics.clone(),
            DeadLetters::for_config(js.clone(), config),
            DeliveryLog::for_config(client, config),
            PauseState::new(js.clone(), config.nats.replicas),
            config.max_inflight,
        )
        .raising(OperatorEvents::new(client.clone()));
        let shared = Arc::new(match config.fan_out {
            true => shared.fanning_out(WorkStream::new(&config.nats)),
            false => shared,
        });
        Supervisor {
            targets: tokio::sync::watch::Sender::new(Arc::new(Targets::default())),
            fan_out_bound: OnceLock::new(),
            lane_bound: OnceLock::new(),
            shared,
            connected,
            shutdown,
            config: tokio::sync::Mutex::new(Config {
                endpoints: Vec::new(),
                ..config.clone()
            }),
            running: Arc::new(tokio::sync::Mutex::new(BTreeMap::new())),
            snapshot: Arc::default(),
            router: RwLock::new(Arc::new(config.router.clone())),
            started: AtomicBool::new(false),
            abort: CancellationToken::new(),
            draining: TaskTracker::new(),
            removing: NameMarks::default(),
            ingress: Arc::new(Ingress::new(
                client.clone(),
                metrics,
                &config.ingress,
                &config.nats,
            )),
            tracer,
            file: tokio::sync::Mutex::new(config.clone()),
            runtime: tokio::sync::Mutex::new(Runtime::default()),
            applied: RwLock::new(HashMap::new()),
            records: RwLock::new(Vec::new()),
            unserved: RwLock::new(HashMap::new()),
            rules: RwLock::new(Arc::new(FileRules::of(config))),
            registry: OnceLock::new(),
            registry_read: tokio::sync::watch::Sender::new(config.registry.is_none()),
            registry_configured: config.registry.is_some(),
        }
    }

    /// The registry, once its bucket is open: the admin API's runtime routes use it.
    pub(super) fn set_registry(&self, registry: Registry) {
        let _ = self.registry.set(registry);
    }

    /// The registry's records present at start-up are applied.
    pub(super) fn mark_registry_synced(&self) {
        self.registry_read
            .send_if_modified(|read| !std::mem::replace(read, true));
    }

    /// Whether the registry's records have been read once ([`Self::mark_registry_synced`]).
    pub(super) fn registry_read(&self) -> bool {
        *self.registry_read.borrow()
    }

    /// Returns once the registry's records present at start-up are applied (at once
    /// without a registry).
    pub(super) async fn registry_read_once(&self) {
        let mut read = self.registry_read.subscribe();
        // The sender lives as long as `self`, so the wait ends only by the read.
        let _ = read.wait_for(|read| *read).await;
    }

    pub(super) fn publish_records(&self, runtime: &Runtime) {
        if let Ok(mut r) = self.records.write() {
            *r = runtime.records();
        }
        let unserved = runtime.unserved();
        // Without `[registry]` there are no records, and no series to show for them.
        if self.registry_configured {
            self.metrics()
                .registry_unserved()
                .set(i64::try_from(unserved.len()).unwrap_or(i64::MAX));
        }
        if let Ok(mut u) = self.unserved.write() {
            *u = unserved;
        }
    }

    /// The records' revisions, once the workers run as they say.
    pub(super) fn publish_applied(&self, runtime: &Runtime) {
        let applied = runtime.revisions();
        if let Ok(mut a) = self.applied.write() {
            *a = applied;
        }
    }

    /// Streams are set up and the endpoints started: readiness now checks the workers.
    pub(super) fn mark_started(&self) {
        self.started.store(true, Ordering::Release);
    }

    pub fn metrics(&self) -> &Metrics {
        self.shared.metrics()
    }

    pub fn dead_letters(&self) -> &DeadLetters {
        self.shared.dead_letters()
    }

    pub fn pause_state(&self) -> &PauseState {
        self.shared.pause_state()
    }

    pub fn replicas(&self) -> &tokio::sync::watch::Sender<usize> {
        self.shared.replicas()
    }

    pub fn work_stream(&self) -> Option<&WorkStream> {
        self.shared.work_stream()
    }

    pub fn forgotten(&self) -> &crate::store::forgotten::Forgotten {
        self.shared.forgotten()
    }

    /// See [`crate::worker::drains::Drains`].
    pub fn drains(&self) -> &crate::worker::drains::Drains {
        self.shared.drains()
    }

    pub fn source_listings(&self) -> &crate::worker::source_listings::SourceListings {
        self.shared.source_listings()
    }

    pub fn unattempted(&self) -> &crate::store::unattempted::Unattempted {
        self.shared.unattempted()
    }

    pub fn delivery_log(&self) -> Option<&DeliveryLog> {
        self.shared.delivery_log()
    }

    pub fn workers(&self) -> Arc<WorkerSet> {
        self.snapshot
            .read()
            .map(|w| Arc::clone(&w))
            .unwrap_or_default()
    }

    pub fn worker(&self, name: &str) -> Option<Arc<Worker>> {
        self.workers().get(name).cloned()
    }

    /// Shows a lost NATS client ([`super::nats::client_lost`]) as a disconnection while
    /// the process drains: no connection event comes for it.
    pub(super) fn client_lost(&self) {
        self.connected.store(false, Ordering::Relaxed);
        self.metrics().nats_connected.set(0);
    }

    /// `Ok` when the start-up and the registry's first read are done, NATS is
    /// connected, the fan-out and lane consumers (with `fan_out`) are bound, and so is
    /// every endpoint's own consumer but a runtime endpoint's that JetStream refused.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let mut reasons = Vec::new();
        if !self.started.load(Ordering::Acquire) {
            reasons.push("starting: streams and consumers are being set up".to_string());
        }
        if !self.registry_read() {
            reasons.push("the endpoint registry is being read".to_string());
        }
        if !self.connected.load(Ordering::Relaxed) {
            reasons.push("NATS is not connected".to_string());
        }
        if let Some(bound) = self.fan_out_bound.get() {
            if !bound.load(Ordering::Relaxed) {
                reasons.push("the fan-out consumer is not bound".to_string());
            }
        }
        if let Some(bound) = self.lane_bound.get() {
            if !bound.load(Ordering::Relaxed) {
                reasons.push("the lane consumer is not bound".to_string());
            }
        }
        // A fan-out endpoint binds whenever it has work and lets go when it has none:
        // readiness follows the fan-out consumer, not these comings and goings. A
        // runtime endpoint whose consumer JetStream refuses (its stream at its
        // consumer limit, say) is one customer's webhook: it shows as not bound in the
        // API and the log, and does not take every replica, with its admin API and
        // ingress, out of service. One still binding (at start) is waited for.
        let rules = self.rules.read().map(|r| Arc::clone(&r)).ok();
        let is_file = |w: &Worker| {
            rules
                .as_ref()
                .is_none_or(|r| r.is_file_endpoint(&w.endpoint().name))
        };
        for w in self.workers().own_readers() {
            if !w.is_bound() && (is_file(w) || !w.bind_refused()) {
                reasons.push(format!("consumer {} is not bound", w.consumer_name()));
            }
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }

    /// Starts a worker for a deliverer built beforehand, with what `replaced` (the
    /// worker a reload replaces, stopped) held: this part cannot fail, so a reload
    /// builds every deliverer first and starts workers only when all were built.
    fn start(
        &self,
        deliverer: Deliverer,
        router: Arc<Router>,
        replaced: Option<&Worker>,
    ) -> Running {
        let endpoint = deliverer.endpoint().clone();
        let stop = Stop {
            drain: self.shutdown.child_token(),
            abort: self.abort.child_token(),
        };
        tokio::spawn(
            deliverer
                .clone()
                .watch_secrets(SECRET_POLL, stop.drain.clone()),
        );
        let worker = Arc::new(Worker::new(endpoint, deliverer, router, &self.shared));
        if self.shared.work_stream().is_some() {
            // An `ordered` endpoint reads its consumer on the source stream: from here
            // on no drain of this process touches it (a drain under way stops, and its
            // bind waits for that).
            (self.shared.drains()).hold(worker.consumer_name(), !worker.fans_out());
        }
        if let Some(old) = replaced {
            worker.note_replaced(old);
            // Made unordered, or restarted while its former consumer on the source
            // stream drains: that consumer is drained next.
            worker.note_former_consumer(!old.fans_out() || old.has_former_consumer());
            if old.fans_out() && !worker.fans_out() {
                // Made `ordered`: its consumer on the source stream starts before every
                // copy not acked, those held included (a new one at the oldest, one
                // taken back from a drain reset to it), which delivered here first
                // would come twice and out of order.
                let left = old.let_held_go();
                if left > 0 {
                    tracing::debug!(endpoint = %worker.endpoint().name, left, "copies held by the replaced worker left to the ordered consumer");
                }
            } else {
                let held = old.hand_over_to(&worker);
                if held > 0 {
                    tracing::info!(endpoint = %worker.endpoint().name, held, "messages held by the replaced worker handed over");
                }
            }
        }
        let tracker = TaskTracker::new();
        let proxy = match &worker.endpoint().proxy {
            None => "none".to_string(),
            Some(p) if p.from_env => format!("{} (from the environment)", p.uri),
            Some(p) => p.uri.to_string(),
        };
        let url = crate::config::url_for_logs(&worker.endpoint().url.to_string());
        tracing::info!(endpoint = %worker.endpoint().name, consumer = %worker.consumer_name(), %url, %proxy, "starting endpoint");
        let handle = tokio::spawn(worker.clone().run(stop.clone(), tracker.clone()));
        Running {
            worker,
            stop,
            tracker,
            handle: Some(handle),
        }
    }

    fn publish_snapshot(&self, running: &BTreeMap<String, Running>) {
        let set = WorkerSet::new(running.values().map(|r| r.worker.clone()).collect());
        if let Ok(mut s) = self.snapshot.write() {
            *s = Arc::new(set);
        }
    }

    /// Stops every worker, including ones still draining after a reload: drain within
    /// `grace`, then NAK what is still in flight.
    ///
    /// The grace runs from the signal, over the workers' own ends too: a paused
    /// worker's task ends only when its probe does, and a probe of a hanging receiver
    /// lasts the endpoint's `timeout`, which must not push the exit past the grace
    /// (and past Kubernetes' `terminationGracePeriodSeconds`).
    pub(super) async fn stop_all(&self, grace: Duration) {
        let mut running = self.running.lock().await;
        let all: Vec<Running> = std::mem::take(&mut *running).into_values().collect();
        self.publish_snapshot(&running);
        drop(running);
        for r in &all {
            r.stop.drain.cancel();
        }
        let drained = async {
            let mut trackers = vec![self.draining.clone()];
            for r in all {
                if let Some(handle) = r.handle {
                    let _ = handle.await;
                }
                r.tracker.close();
                trackers.push(r.tracker);
            }
            self.draining.close();
            for t in &trackers {
                t.wait().await;
            }
        };
        tokio::pin!(drained);
        if tokio::time::timeout(grace, &mut drained).await.is_err() {
            tracing::warn!("grace period over; NAKing deliveries still in flight");
            self.abort.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(3), drained).await;
        }
    }

    /// With `[delivery] fan_out`: the fan-out consumer and the scan that wakes endpoints
    /// with work, to run until shutdown; `None` without fan-out. `config` is the start-up
    /// config's: a reload cannot change the stream or the consumer prefix.
    pub(super) fn fan_out(
        &self,
        config: &NatsConfig,
        stop: CancellationToken,
    ) -> Option<(FanOut, BoxFuture<'static, ()>)> {
        let work = self.shared.work_stream()?.clone();
        let js = self.shared.js().clone();
        let fan_out = FanOut::new(
            js.clone(),
            config.stream.clone(),
            &config.consumer_prefix,
            work.clone(),
            self.targets.subscribe(),
        );
        let _ = self.fan_out_bound.set(fan_out.bound());
        let lane = Lane::new(
            js.clone(),
            work.clone(),
            &config.consumer_prefix,
            self.targets.subscribe(),
            self.shared.inflight_share(),
            self.shared.unattempted().clone(),
            (self.abort.child_token(), self.draining.clone()),
        );
        let _ = self.lane_bound.set(lane.bound());
        let scan = crate::fanout::scan(
            js,
            work,
            config.stream.clone(),
            config.consumer_prefix.clone(),
            self.targets.subscribe(),
            stop.clone(),
        );
        let background = async move {
            tokio::join!(scan, lane.run(stop));
        };
        Some((fan_out, Box::pin(background)))
    }

    /// Incoming webhooks (the route table in force).
    pub fn ingress(&self) -> &Arc<Ingress> {
        &self.ingress
    }

    /// The mapping in force.
    pub fn current_router(&self) -> Arc<Router> {
        self.router
            .read()
            .map(|r| r.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }
}

impl AppView for Supervisor {
    fn metrics(&self) -> &Metrics {
        Supervisor::metrics(self)
    }

    fn readiness(&self) -> Result<(), Vec<String>> {
        Supervisor::readiness(self)
    }

    fn workers(&self) -> Arc<WorkerSet> {
        Supervisor::workers(self)
    }

    fn dead_letters(&self) -> &DeadLetters {
        Supervisor::dead_letters(self)
    }

    fn delivery_log(&self) -> Option<&DeliveryLog> {
        Supervisor::delivery_log(self)
    }

    /// Incoming webhooks share the `[http]` listener unless they have their own.
    fn serves(&self, path: &str) -> bool {
        self.ingress.serves_on_http(path)
    }

    fn handle(&self, req: http::Request<Incoming>) -> BoxFuture<'_, Response<Full<Bytes>>> {
        Box::pin(self.ingress.handle(req))
    }

    fn registrar(&self) -> Option<Registrar> {
        let rules = self.rules.read().map(|r| r.clone()).unwrap_or_default();
        let registry = self.registry.get()?.clone();
        Some(
            Registrar::new(registry, rules, Actor::AdminApi)
                .reading_backlog(self.shared.js().clone())
                .raising(self.shared.events().clone())
                .resuming(self.pause_state().clone())
                .clearing(Leftovers {
                    log: self.delivery_log().cloned(),
                    dead_letters: self.dead_letters().clone(),
                }),
        )
    }

    fn started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    fn registry_state(&self) -> crate::http::RegistryState {
        use crate::http::RegistryState;
        if !self.registry_configured {
            RegistryState::Off
        } else if self.registry.get().is_none() || !self.registry_read() {
            RegistryState::Opening
        } else {
            RegistryState::Open
        }
    }

    fn records(&self) -> Vec<Arc<KeptRecord>> {
        self.records.read().map(|r| r.clone()).unwrap_or_default()
    }

    fn record(&self, name: &str) -> Option<Arc<KeptRecord>> {
        let records = self.records.read().ok()?;
        // In name order, as `Runtime::records` gives them.
        let at = records
            .binary_search_by(|r| r.name.as_str().cmp(name))
            .ok()?;
        records.get(at).cloned()
    }

    fn unserved(&self, name: &str) -> Option<Vec<Problem>> {
        self.unserved.read().ok()?.get(name).cloned()
    }

    fn applied_revision(&self, name: &str) -> Option<u64> {
        self.applied.read().ok()?.get(name).copied()
    }

    fn removing(&self, name: &str) -> bool {
        self.removing.contains(name)
    }

    fn is_file_endpoint(&self, name: &str) -> bool {
        self.rules
            .read()
            .map(|r| r.is_file_endpoint(name))
            .unwrap_or(false)
    }

    fn router(&self) -> Arc<Router> {
        self.current_router()
    }

    fn waiting<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Option<i64>> {
        // An answer to show, not to wait for: a slow JetStream leaves it out.
        let wait = tokio::time::timeout(Duration::from_secs(1), waiting_for(&self.shared, name));
        Box::pin(async move { wait.await.ok().flatten() })
    }
}

/// What waits for the endpoint `name` while no worker reads for it: what its durable
/// consumer has not settled (on the source stream, or with `fan_out` on its work
/// stream, as a running worker counts it); with `fan_out` and no such consumer, the
/// copies on its own subject, where a disabled endpoint's copies wait (its acked ones
/// are released before its consumer goes).
async fn waiting_for(shared: &crate::worker::Shared, name: &str) -> Option<i64> {
    use futures_util::StreamExt;
    let js = shared.js();
    let consumer = crate::worker::consumer_name(shared.consumer_prefix(), name);
    let Some(work) = shared.work_stream() else {
        let stream = js.get_stream_no_info(shared.stream_name()).await.ok()?;
        let info = stream.consumer_info(&consumer).await.ok()?;
        return Some(crate::worker::unsettled(&info));
    };
    let stream = js.get_stream_no_info(work.name_of(name)).await.ok()?;
    if let Ok(info) = stream.consumer_info(&consumer).await {
        return Some(crate::worker::unsettled(&info));
    }
    let mut subjects = stream.info_with_subjects(work.subject(name)).await.ok()?;
    let mut copies = 0usize;
    while let Some(next) = subjects.next().await {
        copies = copies.saturating_add(next.ok()?.1);
    }
    Some(i64::try_from(copies).unwrap_or(i64::MAX))
}
