//! The process-wide count of messages on subjects no mapping matches
//! (`natshook_unmapped_messages_total`): one consumer for the whole stream, since endpoint
//! consumers never see these messages.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{pull, AckPolicy, DeliverPolicy},
};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::PullConsumer;
use crate::backoff::Backoff;
use crate::routing::Router;
use crate::store::pull_stream::{self, Liveness};

/// Counts messages on subjects no mapping matches. Endpoint consumers are filtered to
/// mapped subjects, so they never see these; this headers-only, ack-less durable
/// consumer reads subjects and headers of every new stream message (no payloads),
/// which keeps its cost small. Its name cannot collide with an endpoint consumer
/// (`<prefix>-<name>`).
pub async fn bind_unmapped_counter(
    js: &jetstream::Context,
    stream_name: &str,
    prefix: &str,
) -> Result<PullConsumer, String> {
    let stream = js
        .get_stream(stream_name)
        .await
        .map_err(|e| e.to_string())?;
    stream
        .create_consumer(pull::Config {
            durable_name: Some(format!("{prefix}_unmapped")),
            description: Some("natshook: counts messages on unmapped subjects".into()),
            deliver_policy: DeliverPolicy::New,
            ack_policy: AckPolicy::None,
            headers_only: true,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())
}

/// Runs the counter bound by [`bind_unmapped_counter`] (bound before the endpoints
/// start, so nothing published after start-up escapes it); re-binds after errors.
pub async fn watch_unmapped(
    js: jetstream::Context,
    stream_name: String,
    prefix: String,
    router: impl Fn() -> Arc<Router>,
    counter: prometheus::IntCounter,
    stop: CancellationToken,
) {
    let mut retry = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    loop {
        let bound = async {
            let consumer = bind_unmapped_counter(&js, &stream_name, &prefix).await?;
            pull_stream::messages(&consumer, 512, Liveness::OneOf(1)).await
        };
        let mut messages = tokio::select! {
            _ = stop.cancelled() => return,
            r = bound => match r {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(error = %e, "unmapped-subject counter not bound yet");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(retry.next_delay()) => {}
                    }
                    continue;
                }
            },
        };
        retry.reset();
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                m = messages.next() => m,
            };
            match next {
                Some(Ok(msg)) => {
                    if !router().maps(&msg.subject) {
                        counter.inc();
                    }
                }
                Some(Err(e)) => {
                    use async_nats::jetstream::consumer::pull::MessagesErrorKind as K;
                    if !matches!(e.kind(), K::MissingHeartbeat) {
                        break;
                    }
                }
                None => break,
            }
        }
    }
}
