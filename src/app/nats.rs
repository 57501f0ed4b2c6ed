//! natshook's NATS connection (auth, TLS, reconnect forever) and the streams it
//! needs before any worker starts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::client::FlushErrorKind;
use async_nats::jetstream::{self, stream};
use async_nats::{ConnectOptions, Event};
use tokio_util::sync::CancellationToken;

use super::AppError;
use crate::backoff::Backoff;
use crate::config::{Config, NatsAuth, NatsConfig};
use crate::metrics::Metrics;
use crate::routing::{EventFilter, Pattern, Router};
use crate::store::dead_letters::DeadLetters;
use crate::store::delivery_log::DeliveryLog;
use crate::store::pause_state::PauseState;
use crate::store::stream_subjects;
use crate::store::work_stream::WorkStream;

/// How long the client waits, with the server silent, before it pings; three pings
/// unanswered and it reconnects. A server that hangs with its connections open (a
/// frozen process, a half-open TCP connection) says nothing, so this is how long
/// natshook takes to notice, report not-ready and move to a healthy node of a
/// cluster: about 15 s, where the client's default (60 s) took 3 minutes.
const PING_INTERVAL: Duration = Duration::from_secs(5);

/// Delay before each reconnect: 100 ms, doubling up to 5 s.
fn reconnect_delay() -> Backoff {
    Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
}

/// Connects with the configured auth and TLS. Reconnects forever with backoff: a
/// sidecar outlives NATS restarts.
pub async fn connect(
    nats: &NatsConfig,
    retry_initial: bool,
    on_event: Option<(Metrics, Arc<AtomicBool>)>,
) -> Result<async_nats::Client, AppError> {
    let reconnect = reconnect_delay();
    let mut opts = ConnectOptions::new()
        .name(concat!("natshook/", env!("CARGO_PKG_VERSION")))
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .ping_interval(PING_INTERVAL)
        .reconnect_delay_callback(move |attempts| reconnect.delay_after(attempts));
    if retry_initial {
        opts = opts.retry_on_initial_connect();
    }
    opts = with_auth(opts, nats).await?;
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
        let servers: Arc<str> = nats
            .urls
            .iter()
            .map(|u| shown(u))
            .collect::<Vec<_>>()
            .join(", ")
            .into();
        opts = opts.event_callback(move |event| {
            let metrics = metrics.clone();
            let connected = connected.clone();
            let servers = servers.clone();
            async move { on_connection_event(event, &metrics, &connected, &servers) }
        });
    }
    let addrs = nats
        .urls
        .iter()
        .map(|u| u.parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| AppError::Connect(e.to_string()))?;
    opts.connect(addrs)
        .await
        .map_err(|e| AppError::Connect(e.to_string()))
}

async fn with_auth(opts: ConnectOptions, nats: &NatsConfig) -> Result<ConnectOptions, AppError> {
    Ok(match &nats.auth {
        NatsAuth::None => opts,
        NatsAuth::Token(t) => opts.token(String::from_utf8_lossy(t.expose()).into_owned()),
        NatsAuth::UserPassword(u, p) => {
            opts.user_and_password(u.clone(), String::from_utf8_lossy(p.expose()).into_owned())
        }
        NatsAuth::CredsFile(path) => opts
            .credentials_file(path)
            .await
            .map_err(|e| AppError::Connect(format!("creds_file {}: {e}", path.display())))?,
    })
}

/// A server URL as logs show it: credentials in it are replaced.
fn shown(url: &str) -> String {
    let start = url.find("://").map_or(0, |s| s + 3);
    match url[start..].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]),
        None => url.to_string(),
    }
}

/// Keeps `natshook_nats_connected` and readiness in step with the connection. An
/// error names the servers tried: the client's own text ("IO error", "timed out")
/// does not, and a wrong `nats.url` is the usual cause.
fn on_connection_event(event: Event, metrics: &Metrics, connected: &AtomicBool, servers: &str) {
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
        // A slow consumer's dropped messages come back only after their ack timers, and
        // an error may be a permission refused: either explains a stall, so both show
        // at the default level.
        Event::ClientError(_) => {
            tracing::warn!(event = %event, servers, "NATS event");
        }
        Event::SlowConsumer(_) | Event::ServerError(_) => {
            tracing::warn!(event = %event, "NATS event");
        }
        other => tracing::info!(event = %other, "NATS event"),
    }
}

/// How often [`client_lost`] checks the client in `natshook run`.
pub const CLIENT_CHECK: Duration = Duration::from_secs(5);

/// Returns once `client` can no longer carry a command because its connection task
/// has ended, checking every `every`. async-nats never ends that task on its own while
/// it reconnects; it ends only by a panic inside the client. Then every publish, ack
/// and fetch fails for good while the connection events (and with them
/// `natshook_nats_connected`) stay silent, so without this check the process looks
/// alive and delivers nothing. A disconnected client is not lost: its commands wait
/// for the reconnect, and a check that waits longer than `every` is only repeated.
pub async fn client_lost(client: &async_nats::Client, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        if let Ok(Err(e)) = tokio::time::timeout(every, client.flush()).await {
            if e.kind() == FlushErrorKind::SendError {
                return;
            }
        }
    }
}

/// Subjects for a stream natshook creates itself: every mapped subject.
fn stream_subjects(router: &Router) -> Vec<String> {
    let all = EventFilter::parse(&["*"]).unwrap_or_else(|_| unreachable!("'*' is valid"));
    router.filter_subjects(&all, None).unwrap_or_else(|| {
        router
            .rules()
            .iter()
            .map(|r| r.subject.as_str().to_string())
            .collect()
    })
}

/// Waits until the stream can be looked up; creates it when allowed.
pub(super) async fn ensure_stream(
    js: &jetstream::Context,
    config: &Config,
    stop: &CancellationToken,
) -> Result<(), AppError> {
    let name = &config.nats.stream;
    let mut wait = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    loop {
        match js.get_stream(name).await {
            Ok(stream)
                if stream.cached_info().config.retention == stream::RetentionPolicy::WorkQueue =>
            {
                return Err(AppError::WorkQueueStream(name.clone()))
            }
            Ok(_) => return Ok(()),
            Err(e) => {
                let missing = crate::store::stream_not_found(&e);
                if missing && config.nats.create_stream {
                    let subjects = stream_subjects(&config.router);
                    tracing::info!(stream = %name, ?subjects, "creating stream (create_stream = true)");
                    return js
                        .get_or_create_stream(stream::Config {
                            name: name.clone(),
                            subjects,
                            num_replicas: config.nats.replicas,
                            ..Default::default()
                        })
                        .await
                        .map(|_| ())
                        .map_err(|e| AppError::CreateStream(name.clone(), e.to_string()));
                }
                if missing {
                    return Err(AppError::StreamMissing(name.clone()));
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

/// Warns of each event mapping whose subject the configured stream holds no part of:
/// it can never match a message (a mapping added for subjects the stream was never
/// given), and its endpoints would wait in silence. Under `create_stream` such
/// subjects are added to the stream instead, as the ingress routes' are, and so is
/// one that covers what the stream holds of it (which it replaces). A stream that
/// takes its messages from others (`sources`, `mirror`) or stores them under other
/// subjects (`subject_transform`) holds them under subjects it does not list, and is
/// not judged. At start and on each reload; a stream that cannot be read now is left
/// for the next.
pub(super) async fn check_mapped_subjects(js: &jetstream::Context, config: &Config) {
    let name = &config.nats.stream;
    let Ok(mut stream) = js.get_stream(name).await else {
        return;
    };
    let Ok(info) = stream.info().await else {
        return;
    };
    let listed = &info.config;
    if listed.subjects.is_empty()
        || listed.mirror.is_some()
        || listed.sources.as_ref().is_some_and(|s| !s.is_empty())
        || listed.subject_transform.is_some()
    {
        return;
    }
    let held: Vec<Pattern> = (listed.subjects.iter())
        .filter_map(|s| Pattern::parse(s).ok())
        .collect();
    let mapped: Vec<Pattern> = (stream_subjects(&config.router).iter())
        .filter_map(|s| Pattern::parse(s).ok())
        .collect();
    if config.nats.create_stream {
        // A subject the stream holds wholly needs nothing, and one it holds part of
        // cannot be added (JetStream refuses a subject overlapping one it holds, unless
        // the new one covers it, which `add` then replaces).
        let missing: Vec<Pattern> = (mapped.into_iter())
            .filter(|p| !held.iter().any(|h| p.is_subset_of(h)))
            .filter(|p| {
                (held.iter())
                    .filter(|h| h.overlaps(p))
                    .all(|h| h.is_subset_of(p))
            })
            .collect();
        if missing.is_empty() {
            return;
        }
        let subjects = stream_subjects::joined(&missing);
        tracing::info!(stream = %name, %subjects, "adding mapped subjects to the stream (create_stream = true)");
        if let Err(error) = stream_subjects::add(js, name, &missing).await {
            tracing::warn!(stream = %name, %subjects, %error, "cannot add mapped subjects to the stream: messages published on them are not stored, and their endpoints get nothing");
        }
        return;
    }
    // Only subjects the stream holds no part of: one it holds part of gets messages.
    let unheld: Vec<Pattern> = (mapped.into_iter())
        .filter(|p| !held.iter().any(|h| h.overlaps(p)))
        .collect();
    if unheld.is_empty() {
        return;
    }
    let subjects = stream_subjects::joined(&unheld);
    tracing::warn!(
        stream = %name,
        %subjects,
        held = %listed.subjects.join(", "),
        "[[events]] mappings on subjects the stream does not hold: no message will match them; add the subjects to the stream (or fix the mapping)"
    );
}

/// Sets up natshook's own streams (dead letters, the delivery log when it is on) and
/// the unmapped-subject counter's consumer, retrying every second until they are
/// there or `stop`.
pub(super) async fn ensure_own_streams(
    js: &jetstream::Context,
    config: &Config,
    dead_letters: &DeadLetters,
    delivery_log: Option<&DeliveryLog>,
    pause_state: &PauseState,
    work: Option<&WorkStream>,
    stop: &CancellationToken,
) {
    loop {
        let work_stream = match work {
            Some(w) => w.ensure(js).await.map_err(|e| e.to_string()),
            None => Ok(()),
        };
        let dlq = dead_letters.ensure_stream().await;
        let log = match delivery_log {
            Some(log) => log.ensure_stream().await.map_err(|e| e.to_string()),
            None => Ok(()),
        };
        let pauses = pause_state.ensure_bucket().await.map_err(|e| e.to_string());
        let counter = crate::worker::bind_unmapped_counter(
            js,
            &config.nats.stream,
            &config.nats.consumer_prefix,
        )
        .await
        .map(|_| ());
        match (dlq, log, pauses, counter, work_stream) {
            (Ok(()), Ok(()), Ok(()), Ok(()), Ok(())) => return,
            (d, l, p, c, w) => {
                tracing::warn!(dead_letters = ?d.err().map(|e| e.to_string()), delivery_log = ?l.err(), pause_state = ?p.err(), unmapped_counter = ?c.err(), work_stream = ?w.err(), "cannot set up natshook's streams yet; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn credentials_in_a_server_url_are_not_shown() {
        assert_eq!(
            shown("nats://u:p@10.0.0.1:4222"),
            "nats://***@10.0.0.1:4222"
        );
        assert_eq!(shown("tok@127.0.0.1:4222"), "***@127.0.0.1:4222");
        assert_eq!(shown("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    }
}
