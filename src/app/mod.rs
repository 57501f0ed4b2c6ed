//! `natshook run` wired together: the NATS connection and stream checks (`nats`), one
//! worker per endpoint kept in step with the config (`supervisor`, reloaded by
//! `watch`), the HTTP listeners, and graceful shutdown.
//!
//! The order matters: the listeners come first (a taken port fails start-up, and
//! `/healthz` answers while NATS is still being reached), then the streams, then the
//! workers; on shutdown fetching stops first, in-flight deliveries drain within
//! `shutdown_grace`, acks are flushed, and the listeners close last.

mod nats;
mod pending;
mod registry;
pub mod runtime;
mod supervisor;
mod watch;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use futures_util::{FutureExt, StreamExt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use nats::{client_lost, connect};
pub use registry::judge as registry_endpoint;
pub use registry::loose_limits as loose_registry_limits;
pub use supervisor::{ApplyError, EndpointError, ReloadSummary, Supervisor};
pub use watch::WatchedConfig;

use crate::backoff::Backoff;
use crate::config::Config;
use crate::http::{self, Admin, AppView, ListenError};
use crate::metrics::Metrics;
use crate::store::pause_state::PauseState;
use crate::store::replicas::Replicas;
use crate::store::work_stream::WorkStream;
use supervisor::SECRET_POLL;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The key whose address could not be listened on, and why.
    #[error("{0}: {1}")]
    Listen(&'static str, ListenError),
    #[error("cannot connect to NATS: {0}")]
    Connect(String),
    #[error(
        "stream {0} does not exist (create it, or set nats.create_stream = true for development)"
    )]
    StreamMissing(String),
    #[error("cannot create stream {0}: {1}")]
    CreateStream(String, String),
    #[error(
        "stream {0} has work-queue retention, which lets one consumer take each message: \
         natshook reads every message with several consumers (one per endpoint, or the \
         fan-out's, and the unmapped-subject counter); use limits or interest retention"
    )]
    WorkQueueStream(String),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Ingress(#[from] crate::ingress::IngressError),
    #[error(transparent)]
    Tracing(#[from] crate::otel::TracingError),
    #[error("the NATS client stopped working (its connection task ended); exiting so that the process is restarted")]
    ClientLost,
}

/// Runs natshook until `shutdown` is cancelled, then drains within `shutdown_grace`.
/// With `config_file`, SIGHUP or a change of the file reloads it.
pub async fn run(
    config: Config,
    config_file: Option<WatchedConfig>,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    let config_file = config_file.map(WatchedConfig::catching_hangups);
    let metrics = Metrics::new();
    let traces = config
        .tracing
        .as_ref()
        .map(|t| crate::otel::Tracing::start(t, metrics.tracing_spans_dropped()))
        .transpose()?;
    if let Some(t) = &config.tracing {
        tracing::info!(collector = %t.traces_url, sample_ratio = t.sample_ratio, "exporting delivery traces");
    }
    let connected = Arc::new(AtomicBool::new(false));
    let client = nats::connect(
        &config.nats,
        true,
        Some((metrics.clone(), connected.clone())),
    )
    .await?;
    let sup = Arc::new(Supervisor::new(
        &config,
        &client,
        metrics,
        connected,
        shutdown.clone(),
        traces.as_ref().map(crate::otel::Tracing::tracer),
    ));
    // From here on: a client lost while the streams are set up stops the process too.
    let lost = watch_client(&client, &sup, &shutdown);
    tokio::spawn(
        sup.ingress()
            .clone()
            .watch_secrets(SECRET_POLL, shutdown.clone()),
    );
    tokio::spawn(crate::delivery::renew_on_tls_file_changes(
        SECRET_POLL,
        shutdown.clone(),
    ));
    let listeners = Listeners::start(&config, &sup).await?;
    let js = jetstream::new(client.clone());
    // Every step before the first worker waits for NATS; a shutdown asked for
    // meanwhile (a pod deleted while NATS is unreachable) ends the process now, not
    // after each request's timeout.
    let set_up = async {
        set_up_streams(&js, &config, &sup, &shutdown).await?;
        crate::store::dead_letters::log_size_limits(&client, &config.endpoints);
        load_known_pauses(sup.pause_state()).await;
        if sup.work_stream().is_some() {
            list_source_consumers(&js, &sup, &config.nats.stream).await;
        }
        Ok::<_, AppError>(())
    };
    tokio::select! {
        r = set_up => r?,
        _ = shutdown.cancelled() => {
            tracing::info!("shut down before start-up finished: nothing fetched, nothing to drain");
            listeners.close().await;
            if let Some(t) = traces {
                t.shutdown().await;
            }
            // A client lost (rather than a signal) still ends in a failure, so that a
            // supervisor restarting on failure starts the process again.
            return match lost.await {
                Ok(true) => Err(AppError::ClientLost),
                _ => Ok(()),
            };
        }
    }
    let mut config = config;
    sup.apply(config.clone()).await?;
    // The supervisor keeps the endpoints; thousands of them are worth not copying.
    config.endpoints = Vec::new();
    sup.mark_started();
    let registry = config.registry.as_ref().map(|r| {
        tokio::spawn(open_registry(
            js.clone(),
            r.clone(),
            sup.clone(),
            shutdown.clone(),
        ))
    });
    let replicas = Replicas::count(
        sup.pause_state().clone(),
        &config.nats.stream,
        &config.nats.consumer_prefix,
        sup.replicas().clone(),
        shutdown.clone(),
    );
    let mut background = Background::start(&js, &config, &sup, config_file, &shutdown);
    background
        .tasks
        .push(tokio::spawn(split_rates(sup.clone(), shutdown.clone())));
    if let Some((fan_out, lane_and_scan)) = sup.fan_out(&config.nats, shutdown.clone()) {
        // The fan-out acks a message once it is copied for every endpoint that wants
        // it, so one it copied before the registry's records are served would pass
        // every runtime endpoint by: those stored while no process ran, and on a
        // replica that starts beside running ones, a share of the traffic. The lane
        // waits too: it would move the copies of endpoints it does not know yet off
        // the lane, each to a consumer of its own.
        if !sup.registry_read() {
            tracing::info!("fan-out and lane wait for the endpoint registry's records; no endpoint gets a copy until then");
        }
        let fan_out = fan_out.run(shutdown.clone());
        for task in [fan_out.boxed(), lane_and_scan] {
            let (sup, stop) = (sup.clone(), shutdown.clone());
            background.tasks.push(tokio::spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    () = sup.registry_read_once() => task.await,
                }
            }));
        }
    }

    shutdown.cancelled().await;
    tracing::info!(grace = %humantime::format_duration(config.shutdown_grace), "shutting down: fetching stopped, draining in-flight deliveries");
    // The replica's key goes as fetching stops, so the others take its share of each
    // rate limit while this one drains.
    tokio::join!(sup.stop_all(config.shutdown_grace), replicas.left());
    background.abort();
    // Every attempt has ended: the spans still queued go out before the runtime does.
    if let Some(t) = traces {
        t.shutdown().await;
    }
    if let Some(r) = registry {
        r.abort();
    }
    // Acks are fire-and-forget publishes: flush them before the connection goes.
    let _ = tokio::time::timeout(Duration::from_secs(3), client.flush()).await;
    listeners.close().await;
    tracing::info!("stopped");
    match lost.await {
        Ok(true) => Err(AppError::ClientLost),
        _ => Ok(()),
    }
}

/// Stops the process when the NATS client is lost ([`nats::client_lost`]): nothing can
/// be fetched or acked any more, and a restart (by Kubernetes, systemd) connects anew,
/// the unacked messages redelivered. The task's result says whether it did.
fn watch_client(
    client: &async_nats::Client,
    sup: &Arc<Supervisor>,
    shutdown: &CancellationToken,
) -> JoinHandle<bool> {
    let client = client.clone();
    let sup = sup.clone();
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = nats::client_lost(&client, nats::CLIENT_CHECK) => {}
        }
        tracing::error!("the NATS client stopped working (its connection task ended): shutting down to be restarted");
        sup.client_lost();
        shutdown.cancel();
        true
    })
}

/// The `[http]` listener and, with `[ingress] listen`, the dedicated ingress one.
struct Listeners {
    stop: CancellationToken,
    http: JoinHandle<()>,
    ingress: Option<JoinHandle<()>>,
}

impl Listeners {
    async fn start(config: &Config, sup: &Arc<Supervisor>) -> Result<Self, AppError> {
        let stop = CancellationToken::new();
        let view: Arc<dyn AppView> = sup.clone();
        let admin = config
            .admin
            .clone()
            .map(|a| Admin::new(view.clone(), a.token));
        let (addr, http) = http::serve(config.listen, view, admin, stop.clone())
            .await
            .map_err(|e| AppError::Listen("http.listen", e))?;
        tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
        let ingress = match sup.ingress().listen() {
            Some(listen) => {
                let ingress = sup.ingress().clone();
                let (addr, handle) = http::serve_with(listen, stop.clone(), move |req| {
                    let ingress = ingress.clone();
                    async move { ingress.handle(req).await }
                })
                .await
                .map_err(|e| AppError::Listen("ingress.listen", e))?;
                tracing::info!(%addr, "serving incoming webhooks");
                Some(handle)
            }
            None => None,
        };
        Ok(Self {
            stop,
            http,
            ingress,
        })
    }

    /// Closes both and waits for them.
    async fn close(self) {
        self.stop.cancel();
        let _ = self.http.await;
        if let Some(s) = self.ingress {
            let _ = s.await;
        }
    }
}

/// The configured stream, the streams behind the ingress routes, and natshook's own
/// streams: each waited for while it cannot be looked up, until `shutdown`.
async fn set_up_streams(
    js: &jetstream::Context,
    config: &Config,
    sup: &Supervisor,
    shutdown: &CancellationToken,
) -> Result<(), AppError> {
    nats::ensure_stream(js, config, shutdown).await?;
    nats::check_mapped_subjects(js, config).await;
    crate::ingress::ensure_streams_at_start(js, &config.nats, &config.ingress.routes, shutdown)
        .await?;
    nats::ensure_own_streams(
        js,
        config,
        sup.dead_letters(),
        sup.delivery_log(),
        sup.pause_state(),
        sup.work_stream(),
        shutdown,
    )
    .await;
    Ok(())
}

/// Tasks that run beside the workers until shutdown: the unmapped-subject counter,
/// the `natshook_consumer_pending` poller and the config watcher.
struct Background {
    tasks: Vec<JoinHandle<()>>,
}

impl Background {
    fn start(
        js: &jetstream::Context,
        config: &Config,
        sup: &Arc<Supervisor>,
        config_file: Option<WatchedConfig>,
        shutdown: &CancellationToken,
    ) -> Self {
        let unmapped = tokio::spawn(crate::worker::watch_unmapped(
            js.clone(),
            config.nats.stream.clone(),
            config.nats.consumer_prefix.clone(),
            {
                let sup = sup.clone();
                move || sup.current_router()
            },
            sup.metrics().unmapped.clone(),
            shutdown.clone(),
        ));
        let fan_out = config.fan_out.then(|| pending::FanOutConsumer {
            stream: config.nats.stream.clone(),
            name: crate::fanout::consumer_name(&config.nats.consumer_prefix),
            lane_stream: WorkStream::new(&config.nats).lane_name().to_string(),
            lane: crate::fanout::lane::consumer_name(&config.nats.consumer_prefix),
        });
        let poller = tokio::spawn(pending::poll(
            js.clone(),
            sup.clone(),
            fan_out,
            shutdown.clone(),
        ));
        let pauses = tokio::spawn(follow_shared_pauses(sup.clone(), shutdown.clone()));
        let watcher = config_file
            .map(|f| tokio::spawn(watch::watch_config(sup.clone(), f, shutdown.clone())));
        Self {
            tasks: [poller, unmapped, pauses]
                .into_iter()
                .chain(watcher)
                .collect(),
        }
    }

    fn abort(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Reads the shared pauses before any worker exists, so that each starts paused if
/// its endpoint is; a bucket that does not answer within [`PAUSES_AT_START`] leaves
/// it to the watch and to each worker's own read when it starts fetching.
async fn load_known_pauses(state: &PauseState) {
    match tokio::time::timeout(PAUSES_AT_START, state.load_known()).await {
        Ok(Ok(n)) => tracing::debug!(paused = n, "shared pause state read"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot read the shared pause state at start; following it as it comes")
        }
        Err(_) => tracing::warn!(
            "the shared pause state did not answer at start; following it as it comes"
        ),
    }
}

/// How long the start waits for the shared pauses.
const PAUSES_AT_START: Duration = Duration::from_secs(5);

/// With fan-out, lists the source stream's consumers before any worker exists, so an
/// endpoint that still has a former one (made unordered, or `fan_out` switched on,
/// while no process ran) keeps its first copies off the lane, where the drain's
/// copies would not meet them. Without an answer within [`PAUSES_AT_START`], the
/// pending poll finds them within [`pending::PENDING_POLL`].
async fn list_source_consumers(js: &jetstream::Context, sup: &Supervisor, stream: &str) {
    let listing = sup.source_listings().begin();
    match tokio::time::timeout(PAUSES_AT_START, crate::store::consumer_infos(js, stream)).await {
        Ok(Ok(infos)) => (sup.source_listings()).record(listing, infos.into_keys().collect()),
        Ok(Err(e)) => {
            tracing::warn!(stream, error = %e, "cannot list the source stream's consumers at start")
        }
        Err(_) => {
            tracing::warn!(
                stream,
                "the source stream's consumers not listed at start in time"
            )
        }
    }
}

/// Applies pauses and resumes other replicas share (`store::pause_state`) to this
/// process's workers until `stop`; a broken watch is opened again.
async fn follow_shared_pauses(sup: Arc<Supervisor>, stop: CancellationToken) {
    let mut retry = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    while !stop.is_cancelled() {
        let generation = sup.pause_state().bucket_generation();
        match sup.pause_state().watch().await {
            Ok(changes) => {
                let mut changes = std::pin::pin!(changes);
                let every = crate::store::bucket::CHECK_EVERY;
                let mut check =
                    tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    let change = tokio::select! {
                        _ = stop.cancelled() => return,
                        c = changes.next() => c,
                        // Replaced here, or by a writer or the replica census that
                        // noticed first.
                        _ = check.tick() => {
                            let replaced = sup.pause_state().keep_bucket().await;
                            if replaced || sup.pause_state().bucket_generation() != generation {
                                break;
                            }
                            continue;
                        }
                    };
                    let Some(change) = change else { break };
                    retry.reset();
                    sup.pause_state().note(&change);
                    if let Some(w) = sup.worker(&change.endpoint) {
                        w.follow(change.record.as_ref());
                    }
                }
                tracing::debug!("shared pause state watch ended; watching again");
            }
            Err(e) => {
                if sup.pause_state().keep_bucket().await {
                    continue;
                }
                tracing::warn!(error = %e, "cannot watch the shared pause state; retrying")
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(retry.next_delay()) => {}
        }
    }
}

/// Hands each new count of live replicas (`store::replicas`) to the workers until
/// `stop`: each takes its share of its endpoint's rate limit at once.
async fn split_rates(sup: Arc<Supervisor>, stop: CancellationToken) {
    let mut count = sup.replicas().subscribe();
    loop {
        let n = *count.borrow_and_update();
        for w in sup.workers().iter() {
            w.split_rate(n);
        }
        tracing::info!(replicas = n, "live replicas counted");
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = count.changed() => if changed.is_err() { return },
        }
    }
}

/// Opens the registry bucket (creating it, retrying while JetStream refuses) and
/// watches it until `stop`.
async fn open_registry(
    js: jetstream::Context,
    config: crate::config::RegistryConfig,
    sup: Arc<Supervisor>,
    stop: CancellationToken,
) {
    let mut backoff =
        crate::backoff::Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    let registry = loop {
        match crate::store::registry::Registry::open(&js, &config).await {
            Ok(r) => break r,
            Err(e) => {
                tracing::warn!(bucket = %config.bucket, error = %e, "cannot open the endpoint registry; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    };
    tracing::info!(bucket = %config.bucket, "watching the endpoint registry");
    sup.set_registry(registry.clone());
    registry::watch(sup, registry, stop).await;
}
