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
//! (paused, at its `concurrency` or at its fair share of `max_inflight`,
//! rate-limited, or unknown to this replica) moves to the endpoint's own subject:
//! published there, then acked on the lane, with the attempts it had on the lane, so
//! its attempt numbers go on 1, 2, 3 ([`WorkStream::move_off_lane`]).
//! A failed attempt NAKs the copy on the lane with a short retry delay, as on an
//! endpoint's own consumer: the lane brings it back, and the attempt number is the
//! delivery count. A longer delay moves the copy to wait on its endpoint's subject
//! (`worker::message`), since a copy waiting on the lane keeps every later copy on the
//! lane stored. Only the process-wide bound (`max_inflight`) makes the lane wait, and
//! meanwhile it extends the ack timers of the copies it holds; in the fair sharing
//! of that bound the lane counts as one endpoint per endpoint it has deliveries under
//! way for.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{pull, AckPolicy, DeliverPolicy},
    message::AckKind,
};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::watch;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Targets, RETRY_DELAY};
use crate::backoff::Backoff;
use crate::store::pull_stream::{self, Liveness, PullStream};
use crate::store::unattempted::{self, Delivered, Unattempted};
use crate::store::work_stream::WorkStream;
use crate::worker::inflight::{Permit, Share};
use crate::worker::Worker;

/// How long the lane waits for an ack: an endpoint on the lane has a `timeout` of at
/// most a third of it, so its attempt ends well within it without progress acks.
const ACK_WAIT: Duration = Duration::from_secs(30);

/// Copies fetched ahead: enough to keep the deliveries fed between pulls.
const BATCH: usize = 256;

pub use crate::store::work_stream::lane_consumer as consumer_name;

/// The lane of one natshook deployment (its consumer is shared by the replicas).
pub struct Lane {
    js: jetstream::Context,
    work: WorkStream,
    consumer: String,
    targets: watch::Receiver<Arc<Targets>>,
    inflight: Arc<InFlight>,
    /// Copies held at shutdown are noted there as no attempt.
    unattempted: Unattempted,
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
        unattempted: Unattempted,
        (abort, tracker): (CancellationToken, TaskTracker),
    ) -> Self {
        Self {
            js,
            unattempted,
            work,
            consumer: consumer_name(consumer_prefix),
            targets,
            inflight: Arc::new(InFlight {
                share: {
                    // Active between two copies too: a permit freed while the lane moves
                    // a copy must not go to an endpoint above its share.
                    share.pin();
                    share
                },
                endpoints: Mutex::new(HashMap::new()),
            }),
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

    async fn bind(&self) -> Result<PullStream, String> {
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
        pull_stream::messages(&consumer, BATCH, Liveness::Busy).await
    }

    /// Feeds the lane's copies to their endpoints until `stop`; re-binds after errors.
    pub async fn run(self, stop: CancellationToken) {
        let mut retry = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
        // Received and not started yet: kept through a re-bind (their acks go by reply
        // subject), so a new pull stream costs them no delivery and no attempt.
        let mut held = VecDeque::new();
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
            let failed = self.feed(&mut messages, &mut held, &stop).await;
            while let Some(Some(Ok(msg))) = messages.next().now_or_never() {
                held.push_back(msg);
            }
            if failed {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(retry.next_delay()) => {}
                }
            }
        }
        // Shutting down: back to the lane (for another replica, or this one restarted)
        // now rather than after ack_wait, noted as no attempt (`store::unattempted`;
        // the NAK waits a second for a KV replica serving reads to have the note).
        let delivered: Vec<Delivered<'_>> = held.iter().filter_map(Delivered::of).collect();
        let delay = match self.unattempted.add(&delivered).await {
            Ok(()) if !delivered.is_empty() => Some(unattempted::NAK_DELAY),
            Ok(()) => None,
            Err(e) => {
                tracing::warn!(consumer = %self.consumer, error = %e, held = delivered.len(), "cannot note the held copies as unattempted; each counts one attempt more");
                None
            }
        };
        drop(delivered);
        for msg in held {
            let _ = msg.ack_with(AckKind::Nak(delay)).await;
        }
        self.bound.store(false, Ordering::Relaxed);
    }

    /// Hands each copy to its endpoint, held ones first; `true` when the pull stream
    /// ended on an error.
    async fn feed(
        &self,
        messages: &mut PullStream,
        held: &mut Held,
        stop: &CancellationToken,
    ) -> bool {
        let every = ACK_WAIT / 3;
        let mut keep_alive = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        keep_alive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            if stop.is_cancelled() {
                return false;
            }
            let msg = match held.pop_front() {
                Some(msg) => msg,
                None => {
                    let next = tokio::select! {
                        biased;
                        _ = stop.cancelled() => return false,
                        next = messages.next() => next,
                    };
                    match next {
                        Some(Ok(msg)) => msg,
                        Some(Err(e)) => {
                            tracing::info!(consumer = %self.consumer, error = %e, "lane fetch ended; pulling again");
                            return !matches!(e.kind(), pull::MessagesErrorKind::MissingHeartbeat);
                        }
                        None => return false,
                    }
                }
            };
            let mut waiting = Waiting {
                messages: &mut *messages,
                held: &mut *held,
                keep_alive: &mut keep_alive,
                stop,
            };
            self.dispatch(msg, &mut waiting).await;
        }
    }

    /// Starts a copy's delivery, or moves it to its endpoint's own subject.
    async fn dispatch(&self, msg: jetstream::Message, waiting: &mut Waiting<'_>) {
        let Some(endpoint) = self.work.lane_endpoint_of(&msg.subject).map(str::to_owned) else {
            // Only the fan-out publishes here: a copy it did not name cannot be delivered.
            tracing::warn!(subject = %msg.subject, "a message on the lane names no endpoint; acked");
            let _ = msg.ack().await;
            return;
        };
        let worker = self.targets.borrow().worker(&endpoint).cloned();
        let Some(worker) = worker else {
            // Disabled, or another replica knows an endpoint this one does not yet: its
            // own subject keeps the copy for whichever replica runs it.
            self.move_off(msg, &endpoint, None).await;
            return;
        };
        // An endpoint on the lane holds no more than its fair share of the bound, as it
        // would with a consumer of its own: one whose receiver is slow cannot take the
        // places the others' copies need, even while they happen to be free.
        let cap = self.inflight.share.fair_share();
        let Some(permit) = worker.lane_permit(cap) else {
            self.move_off(msg, &endpoint, Some(&worker)).await;
            return;
        };
        let busy = self.inflight.start(&endpoint);
        let Some(global) = waiting.acquire(&self.inflight.share, &msg).await else {
            waiting.held.push_front(msg);
            return;
        };
        // Paused, or given a rate limit, while the copy waited.
        if !worker.takes_lane_copies() {
            drop((permit, global, busy));
            self.move_off(msg, &endpoint, Some(&worker)).await;
            return;
        }
        worker.start_from_lane(
            msg,
            (permit, global, busy),
            self.abort.clone(),
            &self.tracker,
        );
    }

    /// Stores the copy on its endpoint's own subject with the attempts it had here, then
    /// acks it on the lane and wakes the endpoint; NAKs it when the copy was not stored.
    async fn move_off(
        &self,
        msg: jetstream::Message,
        endpoint: &str,
        worker: Option<&Arc<Worker>>,
    ) {
        // Every delivery on the lane but this one was an attempt, less those noted as
        // none (held when a process stopped).
        let delivered = msg
            .info()
            .map(|i| u32::try_from(i.delivered.saturating_sub(1)).unwrap_or(u32::MAX))
            .unwrap_or(0);
        let noted = match Delivered::of(&msg) {
            Some(d) if delivered > 0 => self.unattempted.of(&d).await.unwrap_or(0),
            _ => 0,
        };
        let attempts = delivered.saturating_sub(noted);
        match self
            .work
            .move_off_lane(&self.js, &msg, endpoint, attempts, None)
            .await
        {
            Ok(()) => {
                tracing::debug!(endpoint, attempts, "copy moved off the lane");
                if let Err(e) = msg.ack().await {
                    tracing::debug!(endpoint, error = %e, "lane ack not sent; the copy comes back and moves again as a duplicate, which is dropped");
                }
                if let Some(d) = Delivered::of(&msg).filter(|_| noted > 0) {
                    if let Err(e) = self.unattempted.forget(&d).await {
                        tracing::debug!(endpoint, error = %e, "a moved copy's unattempted deliveries not forgotten");
                    }
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

/// Copies received from the lane and not started yet.
type Held = VecDeque<jetstream::Message>;

/// The lane's claim on `max_inflight`, weighted by the endpoints it has deliveries under
/// way for: each of them counts as one endpoint in the fair sharing, as it would with a
/// consumer of its own.
struct InFlight {
    share: Share,
    /// Deliveries under way, by endpoint.
    endpoints: Mutex<HashMap<String, usize>>,
}

impl InFlight {
    /// Counts a delivery to `endpoint` until the returned guard drops.
    fn start(self: &Arc<Self>, endpoint: &str) -> Busy {
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        let n = endpoints.entry(endpoint.to_owned()).or_default();
        *n += 1;
        if *n == 1 {
            self.share.set_weight(endpoints.len());
        }
        Busy {
            inflight: Arc::clone(self),
            endpoint: endpoint.to_owned(),
        }
    }
}

/// One delivery from the lane, counted in its weight while it runs.
struct Busy {
    inflight: Arc<InFlight>,
    endpoint: String,
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut endpoints = (self.inflight.endpoints.lock()).unwrap_or_else(|e| e.into_inner());
        if let Some(n) = endpoints.get_mut(&self.endpoint) {
            *n -= 1;
            if *n == 0 {
                endpoints.remove(&self.endpoint);
                self.inflight.share.set_weight(endpoints.len());
            }
        }
    }
}

/// What a copy waiting for a place in `max_inflight` keeps going meanwhile: the ack
/// timers of what the lane already sent, read from the pull stream as it arrives.
struct Waiting<'a> {
    messages: &'a mut PullStream,
    held: &'a mut Held,
    keep_alive: &'a mut Interval,
    stop: &'a CancellationToken,
}

impl Waiting<'_> {
    /// A permit of `share`, or `None` on `stop`.
    async fn acquire(&mut self, share: &Share, msg: &jetstream::Message) -> Option<Permit> {
        let mut permit = std::pin::pin!(share.acquire());
        loop {
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return None,
                p = permit.as_mut() => return Some(p),
                _ = self.keep_alive.tick() => {
                    while let Some(Some(Ok(m))) = self.messages.next().now_or_never() {
                        self.held.push_back(m);
                    }
                    for m in std::iter::once(msg).chain(self.held.iter()) {
                        let _ = m.ack_with(AckKind::Progress).await;
                    }
                }
            }
        }
    }
}
