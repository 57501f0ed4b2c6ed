//! Pull streams on natshook's consumers, with one rule for how soon a stalled pull
//! request is noticed, and one way of recovering from it that loses nothing.
//!
//! A pull request can stall: the server stops serving it while messages are pending
//! and sends nothing, neither messages nor heartbeats. The client notices only when
//! two heartbeats are missed; until then the consumer delivers nothing. The heartbeat
//! interval therefore bounds how long a stall lasts, and costs one small message per
//! interval on a consumer with nothing to send.
//!
//! Two missed heartbeats also happen when the server is only slow for a moment (a
//! frozen node, a busy disk). Its answer to the old request may still come, so a
//! [`PullStream`] sends a new request on a new subscription and keeps reading the old
//! one until that too falls silent: a message the server hands to the old request is
//! still delivered now, not after its ack timer.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{
        pull::{self, MessagesError, MessagesErrorKind},
        Consumer,
    },
};
use futures_util::future::BoxFuture;
use futures_util::stream::{BoxStream, SelectAll};
use futures_util::{FutureExt, Stream, StreamExt};

/// How long a pull request waits on the server before the client renews it.
const EXPIRES: Duration = Duration::from_secs(30);

/// How long an earlier subscription is read after its last message (or after it
/// stopped requesting): past `EXPIRES`, so no request of it is left on the server
/// when it goes.
const RETIRED_FOR: Duration = Duration::from_secs(32);

/// The heartbeat of a consumer whose stall must end within two seconds.
const QUICKEST: Duration = Duration::from_secs(1);

/// The longest heartbeat, whatever the number of consumers: a stall lasts at most
/// twice this.
const SLOWEST: Duration = Duration::from_secs(5);

/// How a consumer is used, which sets its heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Carries traffic whenever it exists: the fan-out's consumer on the source
    /// stream, the lane, and a fan-out endpoint's consumer (deleted when idle). A
    /// stall holds up deliveries, so it ends within two seconds; the heartbeats cost
    /// nothing while messages flow, and there are few such consumers at rest.
    Busy,
    /// One of `consumers` long-lived consumers (each endpoint's own consumer without
    /// fan-out) that may all be idle at once: together their heartbeats are what they
    /// cost the server at rest. Up to 100 of them have one a second, like a busy
    /// consumer; more are spaced so that all together send 100 a second, and none
    /// waits longer than 5 s.
    OneOf(usize),
}

impl Liveness {
    /// The idle heartbeat the server sends on a pull request; the client pulls again
    /// after two are missed.
    pub fn heartbeat(self) -> Duration {
        match self {
            Liveness::Busy => QUICKEST,
            Liveness::OneOf(consumers) => {
                let spaced = Duration::from_millis(10)
                    .saturating_mul(u32::try_from(consumers).unwrap_or(u32::MAX));
                spaced.clamp(QUICKEST, SLOWEST)
            }
        }
    }
}

/// A pull stream on `consumer` that asks for `batch` messages at a time.
pub async fn messages(
    consumer: &Consumer<pull::Config>,
    batch: usize,
    liveness: Liveness,
) -> Result<PullStream, String> {
    let current = open(consumer.clone(), batch, liveness).await?;
    Ok(PullStream {
        consumer: consumer.clone(),
        batch,
        liveness,
        current,
        retiring: SelectAll::new(),
        renewing: None,
    })
}

/// A pull stream on `consumer` that takes over from `earlier`, a stream on the same
/// consumer with other settings (a new worker of the endpoint with another batch):
/// `earlier`'s subscriptions are read until they fall silent, as after a stall, so a
/// message the server sends to one of its requests is delivered now. On failure,
/// `earlier` comes back with the error.
pub async fn following(
    consumer: &Consumer<pull::Config>,
    batch: usize,
    liveness: Liveness,
    earlier: PullStream,
) -> Result<PullStream, (String, PullStream)> {
    let mut fresh = match messages(consumer, batch, liveness).await {
        Ok(fresh) => fresh,
        Err(e) => return Err((e, earlier)),
    };
    fresh.retiring.push(retire(earlier.current));
    fresh.retiring.extend(earlier.retiring);
    Ok(fresh)
}

async fn open(
    consumer: Consumer<pull::Config>,
    batch: usize,
    liveness: Liveness,
) -> Result<pull::Stream, String> {
    consumer
        .stream()
        .max_messages_per_batch(batch)
        .heartbeat(liveness.heartbeat())
        .expires(EXPIRES)
        .messages()
        .await
        .map_err(|e| e.to_string())
}

type Item = Result<jetstream::Message, MessagesError>;

/// The messages of a consumer's pull requests. Two missed heartbeats renew the request
/// on a new subscription; the old one is read until it falls silent too, so whatever
/// the server still hands it is delivered. `MissingHeartbeat` reaches the caller only
/// when the renewal itself fails.
pub struct PullStream {
    consumer: Consumer<pull::Config>,
    batch: usize,
    liveness: Liveness,
    current: pull::Stream,
    /// Earlier subscriptions, each read until it has been silent for longer than a
    /// request lives on the server ([`retire`]).
    retiring: SelectAll<BoxStream<'static, Item>>,
    /// A new subscription being opened, with the error that asked for it.
    renewing: Option<(
        BoxFuture<'static, Result<pull::Stream, String>>,
        MessagesError,
    )>,
}

impl Stream for PullStream {
    type Item = Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        let this = self.get_mut();
        loop {
            if let Some((mut renewing, missed)) = this.renewing.take() {
                let opened = match renewing.poll_unpin(cx) {
                    Poll::Ready(opened) => opened,
                    Poll::Pending => {
                        this.renewing = Some((renewing, missed));
                        return this.poll_retiring(cx);
                    }
                };
                match opened {
                    Ok(fresh) => {
                        let old = std::mem::replace(&mut this.current, fresh);
                        this.retiring.push(retire(old));
                        tracing::debug!(consumer = %this.consumer.cached_info().name, "two heartbeats missed; pulled again, still reading the old request");
                    }
                    Err(e) => {
                        tracing::debug!(consumer = %this.consumer.cached_info().name, error = %e, "two heartbeats missed and no new pull request");
                        return Poll::Ready(Some(Err(missed)));
                    }
                }
            }
            if let Poll::Ready(Some(msg)) = this.poll_retiring(cx) {
                return Poll::Ready(Some(msg));
            }
            match this.current.poll_next_unpin(cx) {
                Poll::Ready(Some(Err(e))) if e.kind() == MessagesErrorKind::MissingHeartbeat => {
                    let renew = open(this.consumer.clone(), this.batch, this.liveness).boxed();
                    this.renewing = Some((renew, e));
                }
                other => return other,
            }
        }
    }
}

/// The messages an earlier subscription still receives, until it has had none for
/// longer than its last request can live on the server. It sends no request from
/// here on: read as it is, it would pull again whenever messages come, and under
/// steady traffic never fall silent. Its missed heartbeats are expected meanwhile and
/// dropped.
fn retire(mut old: pull::Stream) -> BoxStream<'static, Item> {
    old.stop_requesting();
    futures_util::stream::unfold(old, |mut old| async move {
        let until = tokio::time::Instant::now() + RETIRED_FOR;
        loop {
            match tokio::time::timeout_at(until, old.next()).await {
                Ok(Some(Ok(msg))) => return Some((Ok(msg), old)),
                Ok(Some(Err(_))) => continue,
                Ok(None) | Err(_) => return None,
            }
        }
    })
    .boxed()
}

impl PullStream {
    /// Whether this stream pulls from `consumer` (the same stream and name): a worker
    /// that replaces another of its endpoint reads on from the old one's stream then.
    /// A request the server still serves cannot be withdrawn, and a message it sends
    /// there after the stream is dropped would wait out its ack timer.
    pub fn pulls_from(&self, consumer: &Consumer<pull::Config>) -> bool {
        let (mine, theirs) = (self.consumer.cached_info(), consumer.cached_info());
        mine.stream_name == theirs.stream_name && mine.name == theirs.name
    }

    /// Whether its requests ask for `batch` messages.
    pub fn asks_for(&self, batch: usize) -> bool {
        self.batch == batch
    }

    /// A message an earlier subscription still received; `Pending` otherwise (an
    /// empty set is not the end of the stream).
    fn poll_retiring(&mut self, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        if self.retiring.is_empty() {
            return Poll::Pending;
        }
        match self.retiring.poll_next_unpin(cx) {
            Poll::Ready(Some(msg)) => Poll::Ready(Some(msg)),
            _ => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_consumer_notices_a_stall_within_two_seconds() {
        assert_eq!(Liveness::Busy.heartbeat() * 2, Duration::from_secs(2));
        assert_eq!(Liveness::OneOf(1).heartbeat(), Liveness::Busy.heartbeat());
        assert_eq!(Liveness::OneOf(100).heartbeat(), Duration::from_secs(1));
    }

    #[test]
    fn up_to_five_hundred_consumers_send_at_most_a_hundred_heartbeats_a_second() {
        for n in [101, 250, 500] {
            let every = Liveness::OneOf(n).heartbeat();
            assert!(
                n as f64 / every.as_secs_f64() <= 100.0 + 1e-9,
                "{n}: {every:?}"
            );
        }
        assert_eq!(
            Liveness::OneOf(250).heartbeat(),
            Duration::from_millis(2500)
        );
        // Beyond, each waits no longer than SLOWEST, so a stall stays bounded.
        assert_eq!(Liveness::OneOf(999).heartbeat(), SLOWEST);
        assert_eq!(Liveness::OneOf(10_000).heartbeat(), SLOWEST);
        // The server takes a heartbeat of at most half the expiry.
        assert!(SLOWEST * 2 <= EXPIRES);
    }
}
