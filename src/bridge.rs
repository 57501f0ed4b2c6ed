//! Wires the parts together for `natshook run`: NATS connection, stream checks, one
//! worker per endpoint (kept in step with the config by hot reload), the HTTP
//! server, and graceful shutdown.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::{self, context::GetStreamErrorKind, stream, ErrorCode};
use async_nats::{ConnectOptions, Event};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backoff::Backoff;
use crate::config::{Config, Endpoint, NatsAuth, NatsConfig};
use crate::delivery::{ClientError, Deliverer};
use crate::metrics::Metrics;
use crate::routing::{EventFilter, Router};
use crate::server::{self, ServerError};
use crate::store::dead_letters::DeadLetters;
use crate::store::delivery_log::DeliveryLog;
use crate::worker::{Shared, Stop, Worker};

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("cannot connect to NATS: {0}")]
    Connect(String),
    #[error(
        "stream {0} does not exist (create it, or set nats.create_stream = true for development)"
    )]
    StreamMissing(String),
    #[error("cannot create stream {0}: {1}")]
    CreateStream(String, String),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Ingress(#[from] crate::ingress::IngressError),
}

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

/// How often `{ file }` secrets are re-read. Kubernetes updates mounted Secrets
/// within about a minute; a few seconds more is not noticeable, a read is cheap.
const SECRET_POLL: Duration = Duration::from_secs(2);

/// Connects with the configured auth and TLS. Reconnects forever with backoff: a
/// sidecar outlives NATS restarts.
pub async fn connect(
    nats: &NatsConfig,
    retry_initial: bool,
    on_event: Option<(Metrics, Arc<AtomicBool>)>,
) -> Result<async_nats::Client, BridgeError> {
    let mut opts = ConnectOptions::new()
        .name(concat!("natshook/", env!("CARGO_PKG_VERSION")))
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((100u64 << attempts.min(6)).min(5_000))
        });
    if retry_initial {
        opts = opts.retry_on_initial_connect();
    }
    opts = match &nats.auth {
        NatsAuth::None => opts,
        NatsAuth::Token(t) => opts.token(String::from_utf8_lossy(t.expose()).into_owned()),
        NatsAuth::UserPassword(u, p) => {
            opts.user_and_password(u.clone(), String::from_utf8_lossy(p.expose()).into_owned())
        }
        NatsAuth::CredsFile(path) => opts
            .credentials_file(path)
            .await
            .map_err(|e| BridgeError::Connect(format!("creds_file {}: {e}", path.display())))?,
    };
    if let Some(tls) = &nats.tls {
        opts = opts.require_tls(true);
        if let Some(ca) = &tls.ca_file {
            opts = opts.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            opts = opts.add_client_certificate(cert.clone(), key.clone());
        }
    }
    if let Some((metrics, connected)) = on_event {
        opts = opts.event_callback(move |event| {
            let metrics = metrics.clone();
            let connected = connected.clone();
            async move {
                match event {
                    Event::Connected => {
                        tracing::info!("connected to NATS");
                        metrics.nats_connected.set(1);
                        connected.store(true, Ordering::Relaxed);
                    }
                    Event::Disconnected => {
                        tracing::warn!("disconnected from NATS; reconnecting");
                        metrics.nats_connected.set(0);
                        connected.store(false, Ordering::Relaxed);
                    }
                    other => tracing::info!(event = %other, "NATS event"),
                }
            }
        });
    }
    let addrs = nats
        .urls
        .iter()
        .map(|u| u.parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BridgeError::Connect(e.to_string()))?;
    opts.connect(addrs)
        .await
        .map_err(|e| BridgeError::Connect(e.to_string()))
}

/// Subjects for a stream natshook creates itself: every mapped subject.
fn stream_subjects(router: &Router) -> Vec<String> {
    let all = EventFilter::parse(&["*"]).unwrap_or_else(|_| unreachable!("'*' is valid"));
    router.filter_subjects(&all).unwrap_or_else(|| {
        router
            .rules()
            .iter()
            .map(|r| r.subject.as_str().to_string())
            .collect()
    })
}

/// Waits until the stream can be looked up; creates it when allowed.
async fn ensure_stream(
    js: &jetstream::Context,
    config: &Config,
    stop: &CancellationToken,
) -> Result<(), BridgeError> {
    let name = &config.nats.stream;
    let mut wait = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    loop {
        match js.get_stream(name).await {
            Ok(_) => return Ok(()),
            Err(e) => {
                let missing = matches!(e.kind(), GetStreamErrorKind::JetStream(ref j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND);
                if missing && config.nats.create_stream {
                    let subjects = stream_subjects(&config.router);
                    tracing::info!(stream = %name, ?subjects, "creating stream (create_stream = true)");
                    return js
                        .get_or_create_stream(stream::Config {
                            name: name.clone(),
                            subjects,
                            ..Default::default()
                        })
                        .await
                        .map(|_| ())
                        .map_err(|e| BridgeError::CreateStream(name.clone(), e.to_string()));
                }
                if missing {
                    return Err(BridgeError::StreamMissing(name.clone()));
                }
                tracing::warn!(stream = %name, error = %e, "cannot look up stream yet; retrying");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(wait.next_delay()) => {}
        }
    }
}

/// How often the config file is checked for changes (besides SIGHUP).
const CONFIG_POLL: Duration = Duration::from_secs(2);

/// One running endpoint: its worker and the handles to stop it without losing
/// in-flight deliveries.
struct Running {
    worker: Arc<Worker>,
    stop: Stop,
    tracker: TaskTracker,
    handle: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops fetching and waits for in-flight deliveries (they finish and are acked
    /// or NAKed as usual). Used for removed and changed endpoints on reload.
    async fn drain(self) {
        self.stop.drain.cancel();
        let _ = self.handle.await;
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Owns the workers; the HTTP server and the admin API read from it.
pub struct Supervisor {
    shared: Shared,
    connected: Arc<AtomicBool>,
    shutdown: CancellationToken,
    /// The config in force (endpoints and mappings follow reloads).
    config: tokio::sync::Mutex<Config>,
    running: tokio::sync::Mutex<BTreeMap<String, Running>>,
    /// Snapshot for readiness and the admin API.
    snapshot: RwLock<Vec<Arc<Worker>>>,
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
    /// Incoming webhooks: the route table follows reloads.
    ingress: Arc<crate::ingress::Ingress>,
}

/// What a reload changed.
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReloadSummary {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub restarted: Vec<String>,
}

impl Supervisor {
    pub fn metrics(&self) -> &Metrics {
        self.shared.metrics()
    }

    pub fn dead_letters(&self) -> &DeadLetters {
        self.shared.dead_letters()
    }

    pub fn delivery_log(&self) -> Option<&DeliveryLog> {
        self.shared.delivery_log()
    }

    pub fn workers(&self) -> Vec<Arc<Worker>> {
        self.snapshot.read().map(|w| w.clone()).unwrap_or_default()
    }

    pub fn worker(&self, name: &str) -> Option<Arc<Worker>> {
        self.workers()
            .into_iter()
            .find(|w| w.endpoint().name == name)
    }

    /// `Ok` when NATS is connected and every consumer is bound.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let mut reasons = Vec::new();
        if !self.started.load(Ordering::Relaxed) {
            reasons.push("starting: streams and consumers are being set up".to_string());
        }
        if !self.connected.load(Ordering::Relaxed) {
            reasons.push("NATS is not connected".to_string());
        }
        for w in self.workers() {
            if !w.is_bound() {
                reasons.push(format!("consumer {} is not bound", w.consumer_name()));
            }
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }

    /// Starts a worker for a deliverer built beforehand: this part cannot fail, so a
    /// reload builds every deliverer first and starts workers only when all were built.
    fn start(&self, deliverer: Deliverer, router: Arc<Router>) -> Running {
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
        let tracker = TaskTracker::new();
        tracing::info!(endpoint = %worker.endpoint().name, consumer = %worker.consumer_name(), url = %worker.endpoint().url, "starting endpoint");
        let handle = tokio::spawn(worker.clone().run(stop.clone(), tracker.clone()));
        Running {
            worker,
            stop,
            tracker,
            handle,
        }
    }

    fn publish_snapshot(&self, running: &BTreeMap<String, Running>) {
        if let Ok(mut s) = self.snapshot.write() {
            *s = running.values().map(|r| r.worker.clone()).collect();
        }
    }

    /// Applies a new config: added endpoints start, removed ones drain and stop,
    /// changed ones (or all, when the mappings changed) restart. Draining happens in
    /// the background, so in-flight deliveries finish and nothing is dropped.
    /// Settings that need a restart (NATS, listen address, stores) are reported.
    ///
    /// All or nothing: what can fail (each new endpoint's HTTP client, with its TLS
    /// files) is built before any running endpoint is touched. On an error the running
    /// set stays exactly as it was, and no worker is left running outside it.
    pub async fn apply(&self, new: Config) -> Result<ReloadSummary, ApplyError> {
        let mut current = self.config.lock().await;
        let router_changed = current.router != new.router;
        let mut running = self.running.lock().await;

        let mut summary = ReloadSummary::default();
        let mut built = Vec::new();
        let mut failed = Vec::new();
        let mut wanted: Vec<(usize, &Endpoint)> = new.endpoints.iter().enumerate().collect();
        wanted.sort_by(|a, b| a.1.name.cmp(&b.1.name));
        for (index, e) in wanted {
            let changes = match running.get(&e.name) {
                None => &mut summary.added,
                Some(r) if router_changed || **r.worker.endpoint() != *e => &mut summary.restarted,
                Some(_) => continue,
            };
            changes.push(e.name.clone());
            match Deliverer::new(Arc::new(e.clone())) {
                Ok(d) => built.push(d),
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
        summary.removed = running
            .keys()
            .filter(|name| !new.endpoints.iter().any(|e| e.name == **name))
            .cloned()
            .collect();

        // From here on nothing fails.
        for (what, changed) in [
            ("nats", current.nats != new.nats),
            ("http.listen", current.listen != new.listen),
            ("admin", current.admin != new.admin),
            ("delivery_log", current.delivery_log != new.delivery_log),
            ("dead_letter", current.dead_letter != new.dead_letter),
            (
                "shutdown_grace",
                current.shutdown_grace != new.shutdown_grace,
            ),
        ] {
            if changed {
                tracing::warn!(
                    section = what,
                    "config change needs a restart to take effect"
                );
            }
        }
        let router = Arc::new(new.router.clone());
        let mut to_drain = Vec::new();
        for name in &summary.removed {
            to_drain.extend(running.remove(name));
        }
        for deliverer in built {
            let name = deliverer.endpoint().name.clone();
            let fresh = self.start(deliverer, router.clone());
            to_drain.extend(running.insert(name, fresh));
        }
        self.publish_snapshot(&running);
        for old in to_drain {
            self.draining.spawn(old.drain());
        }
        if let Ok(mut r) = self.router.write() {
            *r = router;
        }
        current.router = new.router;
        current.endpoints = new.endpoints;
        Ok(summary)
    }

    /// Re-reads the config file; an invalid one is logged and the running one stays.
    /// Reading and validating run on a blocking thread: they read files and parse,
    /// and the async workers serve `/healthz` and deliveries meanwhile.
    pub async fn reload(&self, path: &std::path::Path) {
        let owned = path.to_path_buf();
        let loaded = match tokio::task::spawn_blocking(move || Config::load(&owned)).await {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::error!(error = %e, "config reload failed; keeping the running config");
                return;
            }
        };
        match loaded {
            Err(e) => {
                for p in &e.problems {
                    tracing::error!(problem = %p, "config reload rejected; keeping the running config");
                }
            }
            Ok(config) => match self.apply(config.clone()).await {
                Ok(s) => {
                    self.ingress.apply(&config.ingress);
                    tracing::info!(added = ?s.added, removed = ?s.removed, restarted = ?s.restarted, "config reloaded")
                }
                Err(e) => {
                    for problem in &e.0 {
                        tracing::error!(%problem, "config reload failed; keeping the running config");
                    }
                }
            },
        }
    }

    /// Stops every worker, including ones still draining after a reload: drain within
    /// `grace`, then NAK what is still in flight.
    async fn stop_all(&self, grace: Duration) {
        let mut running = self.running.lock().await;
        let all: Vec<Running> = std::mem::take(&mut *running).into_values().collect();
        self.publish_snapshot(&running);
        drop(running);
        for r in &all {
            r.stop.drain.cancel();
        }
        let mut trackers = vec![self.draining.clone()];
        for r in all {
            let _ = r.handle.await;
            r.tracker.close();
            trackers.push(r.tracker);
        }
        self.draining.close();
        let wait_all = || async {
            for t in &trackers {
                t.wait().await;
            }
        };
        if tokio::time::timeout(grace, wait_all()).await.is_err() {
            tracing::warn!("grace period over; NAKing deliveries still in flight");
            self.abort.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(3), wait_all()).await;
        }
    }
}

/// Watches for SIGHUP and config file changes and reloads.
async fn watch_config(sup: Arc<Supervisor>, path: PathBuf, stop: CancellationToken) {
    let read = |p: &PathBuf| std::fs::read(p).ok();
    let mut last = read(&path);
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let hup_recv = async {
            match hup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hup_recv = std::future::pending::<()>();
        let by_signal = tokio::select! {
            _ = stop.cancelled() => return,
            _ = hup_recv => true,
            _ = tokio::time::sleep(CONFIG_POLL) => false,
        };
        let now = read(&path);
        if by_signal || now != last {
            tracing::info!(path = %path.display(), trigger = if by_signal { "SIGHUP" } else { "file changed" }, "reloading config");
            last = now;
            sup.reload(&path).await;
        }
    }
}

/// Runs the bridge until `shutdown` is cancelled, then drains within
/// `shutdown_grace`. With `config_path`, SIGHUP or a change of the file reloads it.
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    shutdown: CancellationToken,
) -> Result<(), BridgeError> {
    let metrics = Metrics::new();
    let connected = Arc::new(AtomicBool::new(false));
    let client = connect(
        &config.nats,
        true,
        Some((metrics.clone(), connected.clone())),
    )
    .await?;
    let js = jetstream::new(client.clone());
    let shared = Shared::new(
        js.clone(),
        &config.nats,
        metrics.clone(),
        DeadLetters::new(js.clone(), config.dead_letter.max_age),
        config
            .delivery_log
            .as_ref()
            .map(|_| DeliveryLog::new(client.clone())),
        config
            .delivery_log
            .as_ref()
            .map(|l| l.max_successes_per_second)
            .unwrap_or(0),
    );
    let sup = Arc::new(Supervisor {
        shared,
        connected,
        shutdown: shutdown.clone(),
        config: tokio::sync::Mutex::new(Config {
            endpoints: Vec::new(),
            ..config.clone()
        }),
        running: tokio::sync::Mutex::new(BTreeMap::new()),
        snapshot: RwLock::new(Vec::new()),
        router: RwLock::new(Arc::new(config.router.clone())),
        started: AtomicBool::new(false),
        abort: CancellationToken::new(),
        draining: TaskTracker::new(),
        ingress: Arc::new(crate::ingress::Ingress::new(
            client.clone(),
            metrics.clone(),
            &config.ingress,
            &config.nats,
        )),
    });

    tokio::spawn(
        sup.ingress
            .clone()
            .watch_secrets(SECRET_POLL, shutdown.clone()),
    );
    let server_stop = CancellationToken::new();
    let admin = config
        .admin
        .clone()
        .map(|a| crate::admin::Admin::new(sup.clone(), a.token));
    let (addr, server) =
        server::serve(config.listen, sup.clone(), admin, server_stop.clone()).await?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    let ingress_server = match sup.ingress.listen() {
        Some(listen) => {
            let (addr, handle) =
                crate::ingress::serve_dedicated(sup.ingress.clone(), listen, server_stop.clone())
                    .await?;
            tracing::info!(%addr, "serving incoming webhooks");
            Some(handle)
        }
        None => None,
    };

    ensure_stream(&js, &config, &shutdown).await?;
    crate::ingress::ensure_streams_at_start(&js, &config.nats, &config.ingress.routes, &shutdown)
        .await?;
    loop {
        let dlq = sup.dead_letters().ensure_stream().await;
        let log = match (sup.delivery_log(), &config.delivery_log) {
            (Some(log), Some(settings)) => {
                log.ensure_stream(settings).await.map_err(|e| e.to_string())
            }
            _ => Ok(()),
        };
        let counter = crate::worker::bind_unmapped_counter(
            &js,
            &config.nats.stream,
            &config.nats.consumer_prefix,
        )
        .await
        .map(|_| ());
        match (dlq, log, counter) {
            (Ok(()), Ok(()), Ok(())) => break,
            (d, l, c) => {
                tracing::warn!(dead_letters = ?d.err().map(|e| e.to_string()), delivery_log = ?l.err(), unmapped_counter = ?c.err(), "cannot set up natshook's streams yet; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }

    crate::store::dead_letters::log_size_limits(&client, &config.endpoints);
    sup.apply(config.clone()).await?;
    sup.started.store(true, Ordering::Relaxed);
    let unmapped = tokio::spawn(crate::worker::watch_unmapped(
        js.clone(),
        config.nats.stream.clone(),
        config.nats.consumer_prefix.clone(),
        {
            let sup = sup.clone();
            move || sup.current_router()
        },
        metrics.unmapped.clone(),
        shutdown.clone(),
    ));
    let poller = {
        let sup = sup.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                for w in sup.workers() {
                    w.refresh_pending().await;
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        })
    };
    let watcher = config_path.map(|p| tokio::spawn(watch_config(sup.clone(), p, shutdown.clone())));

    shutdown.cancelled().await;
    tracing::info!(grace = %humantime::format_duration(config.shutdown_grace), "shutting down: fetching stopped, draining in-flight deliveries");
    sup.stop_all(config.shutdown_grace).await;
    poller.abort();
    unmapped.abort();
    if let Some(w) = watcher {
        w.abort();
    }
    // Acks are fire-and-forget publishes: flush them before the connection goes.
    let _ = tokio::time::timeout(Duration::from_secs(3), client.flush()).await;
    server_stop.cancel();
    let _ = server.await;
    if let Some(s) = ingress_server {
        let _ = s.await;
    }
    tracing::info!("stopped");
    Ok(())
}

impl Supervisor {
    /// Incoming webhooks (the route table in force).
    pub fn ingress(&self) -> &Arc<crate::ingress::Ingress> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(settings: &str) -> Endpoint {
        let text = format!(
            "[nats]\nstream = \"E\"\n[[events]]\nsubject = \"a\"\nevent = \"a\"\n[[endpoints]]\nname = \"x\"\nurl = \"https://example.com/\"\nevents = [\"*\"]\n{settings}\n"
        );
        match Config::from_str(&text, "toml") {
            Ok(mut c) => c.endpoints.remove(0),
            Err(e) => panic!("{e}"),
        }
    }

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
