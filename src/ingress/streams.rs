//! A route whose subject no stream captures would have every request answered `503`,
//! so the routes' subjects are checked against the streams at start-up (waiting until
//! the streams can be listed; a missing one stops start-up) and on reload, and under
//! `create_stream = true` are added to `nats.stream`.

use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::{NatsConfig, Route, Verify};
use crate::routing::Pattern;
use crate::signing::{Scheme, WEBHOOK_ID};
use crate::store::stream_subjects::{self, joined};

#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("no JetStream stream captures {0} (create one over these subjects, or set nats.create_stream = true to add them to nats.stream)")]
    NoStream(String),
    #[error("cannot add ingress subjects {subjects} to stream {stream}: {error}")]
    ExtendStream {
        stream: String,
        subjects: String,
        error: String,
    },
    #[error("stream(s) {streams} capture only part of ingress subject {subject}; widen one stream's subjects to {subject}")]
    Partial { subject: String, streams: String },
    #[error("cannot list the JetStream streams to check the ingress subjects: {0}")]
    Lookup(String),
}

/// Checks that a stream captures all of every route's subjects (the template's
/// pattern must lie within one stream subject: JetStream's own lookup by subject also
/// names streams that hold only part of it). Subjects no stream holds are added to
/// `nats.stream` when `create_stream = true` (the development convenience); otherwise
/// that is an error, since every request on them would be answered 503.
pub async fn ensure_streams(
    js: &jetstream::Context,
    nats: &NatsConfig,
    routes: &[Route],
) -> Result<(), IngressError> {
    if routes.is_empty() {
        return Ok(());
    }
    let streams = stream_subjects(js).await?;
    let missing = uncaptured(&streams, nats, routes)?;
    if missing.is_empty() {
        warn_about_dedupe(&streams, nats, routes);
        return Ok(());
    }
    if !nats.create_stream {
        return Err(IngressError::NoStream(joined(&missing)));
    }
    extend_stream(js, nats, &missing).await?;
    warn_about_dedupe(&streams, nats, routes);
    Ok(())
}

/// One stream as the check reads it.
struct Listed {
    name: String,
    subjects: Vec<Pattern>,
    duplicate_window: Duration,
}

/// Every stream's name, subjects and duplicate window.
async fn stream_subjects(js: &jetstream::Context) -> Result<Vec<Listed>, IngressError> {
    let mut streams = Vec::new();
    let mut list = js.streams();
    while let Some(info) = list.next().await {
        let info = info.map_err(|e| IngressError::Lookup(e.to_string()))?;
        let subjects = info
            .config
            .subjects
            .iter()
            .filter_map(|s| Pattern::parse(s).ok())
            .collect();
        streams.push(Listed {
            name: info.config.name,
            subjects,
            duplicate_window: info.config.duplicate_window,
        });
    }
    Ok(streams)
}

/// The shortest duplicate window that keeps a captured `standard` request from being
/// stored twice: its timestamp passes within 5 minutes either side of the clock.
const STANDARD_WINDOW: Duration = Duration::from_secs(10 * 60);

/// Whether the route's stored id is one its signature covers (`standard`'s
/// `webhook-id`): anyone holding one request of another route can store any id.
fn signs_its_id(r: &Route) -> bool {
    matches!(&r.verify, Verify::Signed(s) if s.scheme() == Scheme::Standard)
        && r.id_header == WEBHOOK_ID
}

/// Warns about what the stream holding a route leaves open to a captured request:
/// a window too short for a `standard` route's tolerance, and ids another route
/// stores unsigned (`hex`, `sha256`, `none`), which make the `standard` route's later
/// message with that id a duplicate, answered `200` and never stored. Both are the
/// operator's to decide (the README says how); neither stops start-up. A route's
/// stream is the one that captures it, or `nats.stream` for one just added to it.
fn warn_about_dedupe(streams: &[Listed], nats: &NatsConfig, routes: &[Route]) {
    let stream_of = |r: &Route| {
        let p = r.subject.pattern();
        streams
            .iter()
            .find(|s| s.subjects.iter().any(|s| p.is_subset_of(s)))
            .or_else(|| streams.iter().find(|s| s.name == nats.stream))
    };
    let mut warned = std::collections::HashSet::new();
    for signed in routes.iter().filter(|r| signs_its_id(r)) {
        let Some(stream) = stream_of(signed) else {
            continue;
        };
        if stream.duplicate_window < STANDARD_WINDOW && warned.insert((stream.name.as_str(), "")) {
            tracing::warn!(
                stream = %stream.name,
                duplicate_window = ?stream.duplicate_window,
                route = %signed.path,
                "a standard ingress route's stream keeps ids for less than 10 minutes: a captured request can be stored again within its timestamp's tolerance; set the stream's duplicate_window to at least 10m"
            );
        }
        let unsigned = routes
            .iter()
            .filter(|r| !signs_its_id(r))
            .find(|r| stream_of(r).is_some_and(|s| s.name == stream.name));
        if let Some(unsigned) = unsigned {
            if warned.insert((stream.name.as_str(), "shared")) {
                tracing::warn!(
                    stream = %stream.name,
                    route = %signed.path,
                    unsigned = %unsigned.path,
                    "a standard ingress route shares its stream with a route whose ids are not signed: one captured request to that route can store any id and make the standard route's later message with it a duplicate, never stored; give standard routes a stream of their own"
                );
            }
        }
    }
}

/// The route subjects no stream holds; one that streams hold only part of is an error
/// (unless that part is `nats.stream` itself under `create_stream`, which is widened).
fn uncaptured(
    streams: &[Listed],
    nats: &NatsConfig,
    routes: &[Route],
) -> Result<Vec<Pattern>, IngressError> {
    let mut missing: Vec<Pattern> = Vec::new();
    for r in routes {
        let p = r.subject.pattern();
        if missing.contains(p)
            || streams
                .iter()
                .any(|s| s.subjects.iter().any(|s| p.is_subset_of(s)))
        {
            continue;
        }
        let partial: Vec<&str> = streams
            .iter()
            .filter(|s| s.subjects.iter().any(|s| s.overlaps(p)))
            .map(|s| s.name.as_str())
            .collect();
        match partial.as_slice() {
            [] if nats.create_stream => missing.push(p.clone()),
            [own] if nats.create_stream && *own == nats.stream => missing.push(p.clone()),
            [] => missing.push(p.clone()),
            _ => {
                return Err(IngressError::Partial {
                    subject: p.to_string(),
                    streams: partial.join(", "),
                })
            }
        }
    }
    Ok(missing)
}

/// Adds `missing` to `nats.stream` (`create_stream = true`).
async fn extend_stream(
    js: &jetstream::Context,
    nats: &NatsConfig,
    missing: &[Pattern],
) -> Result<(), IngressError> {
    tracing::info!(stream = %nats.stream, subjects = %joined(missing), "adding ingress subjects to the stream (create_stream = true)");
    stream_subjects::add(js, &nats.stream, missing)
        .await
        .map_err(|error| IngressError::ExtendStream {
            stream: nats.stream.clone(),
            subjects: joined(missing),
            error,
        })
}

/// [`ensure_streams`] at start-up: a stream that cannot be looked up yet is waited
/// for (as the bridge's own stream is); a missing one stops start-up.
pub async fn ensure_streams_at_start(
    js: &jetstream::Context,
    nats: &NatsConfig,
    routes: &[Route],
    stop: &CancellationToken,
) -> Result<(), IngressError> {
    // Connected by now, so the server's `max_payload` is known.
    super::log_size_limits(js.client().max_payload(), routes);
    let mut wait = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    loop {
        match ensure_streams(js, nats, routes).await {
            Err(IngressError::Lookup(error)) => {
                tracing::warn!(%error, "cannot check the ingress streams yet; retrying");
            }
            other => return other,
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(wait.next_delay()) => {}
        }
    }
}
