//! Wires the parts together for `natshook run`: NATS connection, stream checks, one
//! worker per endpoint, the HTTP server, and graceful shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, context::GetStreamErrorKind, stream, ErrorCode};
use async_nats::{ConnectOptions, Event};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, NatsAuth, NatsConfig};
use crate::consumer::{Stop, Worker};
use crate::dead_letter::DeadLetters;
use crate::delivery::{ClientError, Deliverer};
use crate::metrics::Metrics;
use crate::routing::{EventFilter, Router};
use crate::server::{self, ServerError, Status};

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
    Client(#[from] ClientError),
}

/// How often `{ file }` secrets are re-read. Kubernetes updates mounted Secrets
/// within about a minute; a few seconds more is not noticeable, a read is cheap.
const SECRET_POLL: Duration = Duration::from_secs(2);

struct BridgeStatus {
    connected: Arc<AtomicBool>,
    workers: Vec<Arc<Worker>>,
}

impl Status for BridgeStatus {
    fn readiness(&self) -> Result<(), Vec<String>> {
        let mut reasons = Vec::new();
        if !self.connected.load(Ordering::Relaxed) {
            reasons.push("NATS is not connected".to_string());
        }
        for w in &self.workers {
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
}

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
    let mut wait = Duration::from_millis(250);
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
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// Runs the bridge until `shutdown` is cancelled, then drains within
/// `shutdown_grace`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), BridgeError> {
    let metrics = Metrics::new();
    let connected = Arc::new(AtomicBool::new(false));
    let client = connect(
        &config.nats,
        true,
        Some((metrics.clone(), connected.clone())),
    )
    .await?;
    let js = jetstream::new(client.clone());
    let dead_letters = DeadLetters::new(js.clone(), config.dead_letter.max_age);
    let router = Arc::new(config.router.clone());

    let mut workers = Vec::new();
    for endpoint in &config.endpoints {
        let endpoint = Arc::new(endpoint.clone());
        let deliverer = Deliverer::new(endpoint.clone())?;
        tokio::spawn(
            deliverer
                .clone()
                .watch_secrets(SECRET_POLL, shutdown.clone()),
        );
        workers.push(Arc::new(Worker::new(
            endpoint,
            deliverer,
            router.clone(),
            js.clone(),
            config.nats.stream.clone(),
            &config.nats.consumer_prefix,
            &metrics,
            dead_letters.clone(),
        )));
    }

    let server_stop = CancellationToken::new();
    let status = Arc::new(BridgeStatus {
        connected: connected.clone(),
        workers: workers.clone(),
    });
    let (addr, server) =
        server::serve(config.listen, metrics.clone(), status, server_stop.clone()).await?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");

    ensure_stream(&js, &config, &shutdown).await?;
    loop {
        match dead_letters.ensure_stream().await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, "cannot set up dead-letter stream yet; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }

    let stop = Stop {
        drain: shutdown.clone(),
        abort: CancellationToken::new(),
    };
    let tracker = TaskTracker::new();
    let mut loops = Vec::new();
    for w in &workers {
        tracing::info!(endpoint = %w.endpoint.name, consumer = %w.consumer_name(), url = %w.endpoint.url, "starting endpoint");
        loops.push(tokio::spawn(w.clone().run(stop.clone(), tracker.clone())));
    }
    let unmapped = tokio::spawn(crate::consumer::watch_unmapped(
        js.clone(),
        config.nats.stream.clone(),
        config.nats.consumer_prefix.clone(),
        router.clone(),
        metrics.unmapped.clone(),
        shutdown.clone(),
    ));
    let poller = {
        let workers = workers.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                for w in &workers {
                    w.refresh_pending().await;
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        })
    };

    shutdown.cancelled().await;
    tracing::info!(grace = %humantime::format_duration(config.shutdown_grace), "shutting down: fetching stopped, draining in-flight deliveries");
    for l in loops {
        let _ = l.await;
    }
    poller.abort();
    unmapped.abort();
    tracker.close();
    if tokio::time::timeout(config.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; NAKing deliveries still in flight");
        stop.abort.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(3), tracker.wait()).await;
    }
    // Acks are fire-and-forget publishes: flush them before the connection goes.
    let _ = tokio::time::timeout(Duration::from_secs(3), client.flush()).await;
    server_stop.cancel();
    let _ = server.await;
    tracing::info!("stopped");
    Ok(())
}
