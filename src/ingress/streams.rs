//! A route whose subject no stream captures would have every request answered `503`,
//! so the routes' subjects are checked against the streams at start-up (waiting until
//! the streams can be listed; a missing one stops start-up) and on reload, and under
//! `create_stream = true` are added to `nats.stream`.

use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::{NatsConfig, Route};
use crate::routing::Pattern;

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
        return Ok(());
    }
    if !nats.create_stream {
        return Err(IngressError::NoStream(joined(&missing)));
    }
    extend_stream(js, nats, &missing).await
}

/// Every stream's name and subjects.
async fn stream_subjects(
    js: &jetstream::Context,
) -> Result<Vec<(String, Vec<Pattern>)>, IngressError> {
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
        streams.push((info.config.name, subjects));
    }
    Ok(streams)
}

/// The route subjects no stream holds; one that streams hold only part of is an error
/// (unless that part is `nats.stream` itself under `create_stream`, which is widened).
fn uncaptured(
    streams: &[(String, Vec<Pattern>)],
    nats: &NatsConfig,
    routes: &[Route],
) -> Result<Vec<Pattern>, IngressError> {
    let mut missing: Vec<Pattern> = Vec::new();
    for r in routes {
        let p = r.subject.pattern();
        if missing.contains(p)
            || streams
                .iter()
                .any(|(_, s)| s.iter().any(|s| p.is_subset_of(s)))
        {
            continue;
        }
        let partial: Vec<&str> = streams
            .iter()
            .filter(|(_, s)| s.iter().any(|s| s.overlaps(p)))
            .map(|(name, _)| name.as_str())
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

fn joined(subjects: &[Pattern]) -> String {
    subjects
        .iter()
        .map(Pattern::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Adds `missing` to `nats.stream` (`create_stream = true`).
async fn extend_stream(
    js: &jetstream::Context,
    nats: &NatsConfig,
    missing: &[Pattern],
) -> Result<(), IngressError> {
    let extend_error = |error: String| IngressError::ExtendStream {
        stream: nats.stream.clone(),
        subjects: joined(missing),
        error,
    };
    let mut stream = js
        .get_stream(&nats.stream)
        .await
        .map_err(|e| extend_error(e.to_string()))?;
    let mut cfg = stream
        .info()
        .await
        .map_err(|e| extend_error(e.to_string()))?
        .config
        .clone();
    for p in missing {
        // A subject the new one covers would overlap it, which JetStream refuses.
        cfg.subjects
            .retain(|s| !Pattern::parse(s).is_ok_and(|s| s.is_subset_of(p)));
        if !missing.iter().any(|q| q != p && p.is_subset_of(q)) {
            cfg.subjects.push(p.to_string());
        }
    }
    tracing::info!(stream = %nats.stream, subjects = %joined(missing), "adding ingress subjects to the stream (create_stream = true)");
    js.update_stream(cfg)
        .await
        .map(|_| ())
        .map_err(|e| extend_error(e.to_string()))
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
