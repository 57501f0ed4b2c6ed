//! The lane: one durable consumer that reads the copies of every endpoint with nothing
//! waiting of its own, and hands each copy to its endpoint's worker.
//!
//! A consumer per busy endpoint costs nats-server and the client per message what
//! their wake-ups cost, since each one gathers a batch of one when traffic is spread
//! over many endpoints: with 1,000 busy endpoints, 2.5 times one endpoint's CPU on
//! nats-server. One consumer over all of them costs about what one endpoint's does
//! (`cargo bench --bench layouts`). So the fan-out puts a copy on the lane while its
//! endpoint takes one ([`Worker::takes_lane`]), and on the endpoint's own subject
//! otherwise.
//!
//! The lane never waits for one endpoint. A copy whose endpoint cannot start it now
//! (paused, at its `concurrency`, rate-limited, or removed) moves to the endpoint's
//! own subject: published there, then acked on the lane, with the attempts it had on
//! the lane, so its attempt numbers go on 1, 2, 3 ([`WorkStream::move_off_lane`]).
//! A failed attempt NAKs the copy on the lane with a short retry delay, as on an
//! endpoint's own consumer: the lane brings it back, and the attempt number is the
//! delivery count. A longer delay moves the copy to wait on its endpoint's subject
//! (`worker::message`), since a copy waiting on the lane keeps every later copy on the
//! lane stored. Only the process-wide bound (`max_inflight`) makes the lane wait:
//! it counts as one endpoint in the fair sharing of that bound.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{pull, AckPolicy, DeliverPolicy},
    message::AckKind,
};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Targets, RETRY_DELAY};
use crate::backoff::Backoff;
use crate::store::work_stream::WorkStream;
use crate::worker::inflight::Share;
use crate::worker::Worker;

/// How long the lane waits for an ack: an endpoint on the lane has a `timeout` of at
/// most a third of it, so its attempt ends well within it without progress acks.
const ACK_WAIT: Duration = Duration::from_secs(30);

/// Copies fetched ahead: enough to keep the deliveries fed between pulls.
const BATCH: usize = 256;

/// The name of the lane's consumer.
pub fn consumer_name(consumer_prefix: &str) -> String {
    format!("{consumer_prefix}-lane")
}

/// The lane of one natshook deployment (its consumer is shared by the replicas).
pub struct Lane {
    js: jetstream::Context,
    work: WorkStream,
    consumer: String,
    targets: watch::Receiver<Arc<Targets>>,
    share: Share,
    /// Cancelled when the shutdown grace is over: deliveries in flight NAK.
    abort: CancellationToken,
    /// Deliveries in flight, which shutdown waits for.
    tracker: TaskTracker,
    bound: Arc<AtomicBool>,
}

impl Lane {
    pub fn new(
        js: jetstream::Context,
        work: WorkStream,
        consumer_prefix: &str,
        targets: watch::Receiver<Arc<Targets>>,
        share: Share,
        (abort, tracker): (CancellationToken, TaskTracker),
    ) -> Self {
        Self {
            js,
            work,
            consumer: consumer_name(consumer_prefix),
            targets,
            share,
            abort,
            tracker,
            bound: Arc::new(AtomicBool::new(false)),
        }
    }

    /// True while the lane's consumer is bound: readiness waits for it.
    pub fn bound(&self) -> Arc<AtomicBool> {
        self.bound.clone()
    }

    fn consumer_config(&self) -> pull::Config {
        pull::Config {
            durable_name: Some(self.consumer.clone()),
            description: Some("natshook: copies for endpoints with no work of their own".into()),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            max_deliver: -1,
            // Retries wait out their delays unacked on the lane, however many; what
            // natshook holds is bounded by the batch and by `max_inflight`.
            max_ack_pending: -1,
            // As an endpoint's consumer: a server restart forgets it, and every copy the
            // lane still holds comes back to the consumer created again.
            memory_storage: true,
            ..Default::default()
        }
    }

    async fn bind(&self) -> Result<pull::Stream, String> {
        let name = self.work.lane_name();
        let stream = self
            .js
            .get_stream_no_info(name)
            .await
            .map_err(|e| format!("stream {name}: {e}"))?;
        let consumer = stream
            .create_consumer(self.consumer_config())
            .await
            .map_err(|e| format!("consumer {}: {e}", self.consumer))?;
        consumer
            .stream()
            .max_messages_per_batch(BATCH)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| e.to_string())
    }

    /// Feeds the lane's copies to their endpoints until `stop`; re-binds after errors.
    pub async fn run(self, stop: CancellationToken) {
        let mut retry = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
        while !stop.is_cancelled() {
            let mut messages = match self.bind().await {
                Ok(m) => m,
                Err(e) => {
                    self.bound.store(false, Ordering::Relaxed);
                    tracing::warn!(consumer = %self.consumer, error = %e, "cannot bind the lane consumer; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(retry.next_delay()) => continue,
                    }
                }
            };
            self.bound.store(true, Ordering::Relaxed);
            retry.reset();
            let failed = self.feed(&mut messages, &stop).await;
            // Received and not started: back to the lane at once, not after ack_wait.
            while let Some(Some(Ok(msg))) = messages.next().now_or_never() {
                let _ = msg.ack_with(AckKind::Nak(None)).await;
            }
            if failed {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(retry.next_delay()) => {}
                }
            }
        }
        self.bound.store(false, Ordering::Relaxed);
    }

    /// Hands each copy to its endpoint; `true` when the pull stream ended on an error.
    async fn feed(&self, messages: &mut pull::Stream, stop: &CancellationToken) -> bool {
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return false,
                next = messages.next() => next,
            };
            match next {
                Some(Ok(msg)) => self.dispatch(msg, stop).await,
                Some(Err(e)) => {
                    tracing::debug!(consumer = %self.consumer, error = %e, "lane fetch ended; pulling again");
                    return !matches!(e.kind(), pull::MessagesErrorKind::MissingHeartbeat);
                }
                None => return false,
            }
        }
    }

    /// Starts a copy's delivery, or moves it to its endpoint's own subject.
    async fn dispatch(&self, msg: jetstream::Message, stop: &CancellationToken) {
        let Some(endpoint) = self.work.lane_endpoint_of(&msg.subject).map(str::to_owned) else {
            // Only the fan-out publishes here: a copy it did not name cannot be delivered.
            tracing::warn!(subject = %msg.subject, "a message on the lane names no endpoint; acked");
            let _ = msg.ack().await;
            return;
        };
        let worker = self.targets.borrow().get(&endpoint).cloned();
        let Some(worker) = worker else {
            self.move_off(msg, &endpoint, None).await;
            return;
        };
        let Some(permit) = worker.lane_permit() else {
            self.move_off(msg, &endpoint, Some(&worker)).await;
            return;
        };
        let global = tokio::select! {
            _ = stop.cancelled() => {
                let _ = msg.ack_with(AckKind::Nak(None)).await;
                return;
            }
            global = self.share.acquire() => global,
        };
        worker.start_from_lane(msg, (permit, global), self.abort.clone(), &self.tracker);
    }

    /// Stores the copy on its endpoint's own subject with the attempts it had here, then
    /// acks it on the lane and wakes the endpoint; NAKs it when the copy was not stored.
    async fn move_off(
        &self,
        msg: jetstream::Message,
        endpoint: &str,
        worker: Option<&Arc<Worker>>,
    ) {
        // Every delivery on the lane but this one was an attempt.
        let attempts = msg
            .info()
            .map(|i| u32::try_from(i.delivered.saturating_sub(1)).unwrap_or(u32::MAX))
            .unwrap_or(0);
        match self
            .work
            .move_off_lane(&self.js, &msg, endpoint, attempts, None)
            .await
        {
            Ok(()) => {
                if let Err(e) = msg.ack().await {
                    tracing::debug!(endpoint, error = %e, "lane ack not sent; the copy comes back and moves again as a duplicate, which is dropped");
                }
                if let Some(w) = worker {
                    w.wake();
                }
            }
            Err(e) => {
                tracing::warn!(endpoint, error = %e, "cannot move a copy off the lane; it comes back");
                let _ = msg.ack_with(AckKind::Nak(Some(RETRY_DELAY))).await;
            }
        }
    }

    /// Removes the copies the lane's consumer has acked.
    pub async fn release(
        js: &jetstream::Context,
        work: &WorkStream,
        consumer: &str,
    ) -> Result<u64, String> {
        let stream = js
            .get_stream_no_info(work.lane_name())
            .await
            .map_err(|e| e.to_string())?;
        let floor = match stream.consumer_info(consumer).await {
            Ok(info) => info.ack_floor.stream_sequence,
            Err(e) => return Err(e.to_string()),
        };
        work.release_lane(&stream, floor)
            .await
            .map_err(|e| e.to_string())
    }
}
