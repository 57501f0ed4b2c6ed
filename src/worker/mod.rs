//! One endpoint's JetStream consumer: fetch, deliver, then ack, NAK or dead-letter.
//! This module runs the loop that binds the consumer and keeps it (or, with fan-out,
//! lets it go when idle); `consumer` holds the consumer's settings and its life;
//! `fetch` feeds its pull stream to delivery tasks, holding messages while the
//! endpoint is paused or waits for a permit or a token; `message` delivers and settles
//! one message, as `outcome` decides; `rate` applies the endpoint's `rate_limit`;
//! `succession` hands a replaced worker's messages to its successor; `shared` is what
//! every worker shares.
//!
//! Each endpoint has its own durable pull consumer and its own task, so a slow or dead
//! receiver only ever holds its own messages. `max_ack_pending` is twice the endpoint's
//! concurrency: the next batch is already in the client while the current one is in
//! flight (without that, every ack round trip stalls the pipeline), yet the buffer
//! stays small enough that a buffered message never waits out its ack timer.
//!
//! Retries are JetStream redeliveries: a failed attempt NAKs with the delay for that
//! attempt, and the delivery count is the attempt number. `max_deliver` is unlimited
//! on purpose: natshook dead-letters at `max_attempts` itself, and a message whose
//! dead-letter publish failed must still come back. Because the delivery count is the
//! attempt number, fetched messages are never dropped unattempted: a pause holds them,
//! a re-bind keeps them, and shutdown NAKs them for immediate redelivery.
//!
//! With a `rate_limit`, a message waits for its token after it is taken and before
//! it is started (`throttle`): the wait costs no attempt, and the message and the
//! others fetched meanwhile get their ack timers extended while they wait. The
//! window (`max_ack_pending`) is then also bounded by what the rate delivers in a
//! third of `ack_wait`, so few messages are fetched ahead of their token.

pub mod breaker;
mod consumer;
pub mod drains;
mod fetch;
pub mod inflight;
mod message;
pub mod outcome;
mod rate;
mod set;
mod shared;
mod source_consumer;
pub mod source_listings;
mod succession;
pub mod throttle;
pub mod unmapped;
mod unwritten;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use async_nats::jetstream::{self, consumer::pull, message::AckKind};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::breaker::{Breaker, PauseReason, ResumeCause};
pub use self::consumer::{
    ack_wait, consumer_name, keep_alive_every, listed_filters, progress_every, unsettled, window,
};
use self::fetch::{Held, Leave};
use self::rate::throttle;
pub use self::set::WorkerSet;
pub use self::shared::Shared;
pub use self::source_consumer::SourceConsumer;
use self::source_listings::FormerNote;
use self::succession::Handover;
use self::throttle::Throttle;
pub use self::unmapped::{bind_unmapped_counter, watch_unmapped};
use crate::backoff::Backoff;
use crate::config::Endpoint;
use crate::delivery::Deliverer;
use crate::metrics::EndpointMetrics;
use crate::rate_limit::RateLimit;
use crate::routing::Router;
use crate::store::delivery_log::DeliveryLog;
use crate::store::pause_state::PauseRecord;
use crate::store::pull_stream::PullStream;
use crate::store::unattempted::{self, Delivered};
use crate::time;

type PullConsumer = jetstream::consumer::Consumer<pull::Config>;

/// Shutdown signals for a worker.
#[derive(Clone)]
pub struct Stop {
    /// Stop fetching; let in-flight deliveries finish.
    pub drain: CancellationToken,
    /// Grace period over: NAK whatever is still in flight.
    pub abort: CancellationToken,
}

/// An endpoint's state for the admin API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EndpointState {
    pub name: String,
    pub url: String,
    pub consumer: String,
    pub bound: bool,
    pub paused: bool,
    pub pause_reason: Option<String>,
    pub consecutive_failures: u32,
    pub inflight: i64,
    pub pending: i64,
    pub last_success: Option<String>,
    pub last_failure: Option<String>,
    pub last_error: Option<String>,
}

/// One endpoint's worker: binds its durable consumer, fetches, holds messages while
/// the endpoint is paused and probes it, and hands each message to a delivery task.
pub struct Worker {
    endpoint: Arc<Endpoint>,
    deliverer: Deliverer,
    router: Arc<Router>,
    /// Shared by every worker: one allocation, not a copy of its names per endpoint.
    shared: Arc<Shared>,
    consumer_name: String,
    metrics: EndpointMetrics,
    breaker: Arc<Breaker>,
    bound: AtomicBool,
    /// The last attempt to bind the consumer failed (it is retried).
    bind_refused: AtomicBool,
    /// Unix milliseconds; 0 = never.
    last_success_ms: AtomicU64,
    last_failure_ms: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// This endpoint's cap on logged successes; nothing is logged without a delivery log.
    success_log: RateLimit,
    /// Set once a `Nats-Msg-Id` was replaced by another id: a publisher that sets an
    /// unusable id usually does so for every message, so it is said once, not per message.
    msg_id_warned: AtomicBool,
    /// Deleted, its delivery log being removed: a late delivery records nothing.
    deleted: AtomicBool,
    /// The `rate_limit` in force: it follows reloads without a restart, so a waiting
    /// message is never NAKed (which would cost it an attempt) for a new rate. A
    /// change is announced on `shared.throttles`.
    throttle: ArcSwapOption<Throttle>,
    /// With fan-out: the endpoint's copies are on the work stream, and its consumer
    /// exists only while it has work.
    lazy: bool,
    /// A lazy worker without a consumer, waiting for [`Worker::wake`].
    parked: AtomicBool,
    /// A lazy worker whose endpoint still has a consumer on the source stream (it was
    /// `ordered`, or `fan_out` was off), being drained to its own subject: the
    /// fan-out's copies go there too, where a message both make is stored once. A
    /// listing begun after the note settles it ([`source_listings`]), so no one has to
    /// visit every worker to clear it.
    former_consumer: FormerNote,
    /// Started in place of a worker of the same endpoint (a change, not a creation or
    /// a process start): see where an `ordered` endpoint's consumer starts.
    replaced_one: AtomicBool,
    /// Started in place of a worker that read copies (made `ordered`): copies of the
    /// endpoint may still wait that its consumer on the source stream delivers.
    replaced_copy_reader: AtomicBool,
    /// Consumer resets in a row that got no answer (see `Worker::take_back`).
    resets_unanswered: AtomicU32,
    /// Without fan-out, where a consumer deleted by hand starts again
    /// ([`consumer::Resume`]).
    resume: Mutex<consumer::Resume>,
    /// The window's room for messages waiting out retry delays ([`consumer::retry_room`]).
    retry_room: AtomicI64,
    /// When the messages this process NAKed with a delay at their first delivery come
    /// back: JetStream counts them as redelivered only from then, but they hold a
    /// place in the window meanwhile ([`Worker::first_waits`]).
    first_waits: Mutex<Vec<std::time::Instant>>,
    /// An update of the consumer's window for its retry room is under way.
    window_writing: AtomicBool,
    /// The endpoint's shared pause as this process last saw it when the worker was
    /// made ([`PauseState::known`](crate::store::pause_state::PauseState::known)).
    known_at_start: Option<PauseRecord>,
    wake: tokio::sync::Notify,
    /// The endpoint's `concurrency`, shared by its own consumer's deliveries and the
    /// lane's.
    permits: Arc<Semaphore>,
    /// Messages fetched but not started and the pull stream: on a worker a reload
    /// replaces, what it had when it stopped, for its successor; on that successor,
    /// what it starts with.
    handover: Mutex<Handover>,
    /// Set on a worker a reload replaces: it leaves what it holds in `handover` rather
    /// than NAK it, which would cost each message an attempt (and, through a long pause
    /// with reloads, could take a message past `max_attempts` without a request).
    hands_over: AtomicBool,
}

/// Locks a mutex whose data stays consistent even if a holder panicked (each
/// critical section here moves a queue of messages).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Moves what `messages` has already received to the end of `held`, without waiting;
/// whether the stream is still sound (no error, not ended) and worth reading on.
fn take_ready(messages: &mut PullStream, held: &mut Held) -> bool {
    loop {
        match messages.next().now_or_never() {
            Some(Some(Ok(msg))) => held.push_back(msg),
            None => return true,
            Some(Some(Err(_)) | None) => return false,
        }
    }
}

fn from_unix_ms(ms: u64) -> Option<String> {
    (ms > 0).then(|| time::rfc3339_millis(time::from_unix_millis(ms)))
}

impl Worker {
    pub fn new(
        endpoint: Arc<Endpoint>,
        deliverer: Deliverer,
        router: Arc<Router>,
        shared: &Arc<Shared>,
    ) -> Self {
        let em = shared.metrics.endpoint(&endpoint.name);
        let announcer = Arc::clone(shared);
        let name = endpoint.name.clone();
        let retirement = em.retirement().clone();
        let breaker = Arc::new(
            Breaker::new(&endpoint.name, endpoint.disable_after_failures, em.clone())
                .announcing(Box::new(move |reason| {
                    let state = &announcer.pause_state;
                    retirement.unless_retired(|| {
                        state.announce(&name, reason.map(|r| state.record(r.into())))
                    });
                }))
                .raising(shared.events.clone(), endpoint.tenant.clone()),
        );
        let lazy = shared.work.is_some() && !endpoint.ordered;
        if !lazy {
            em.create();
        }
        let consumer_name = consumer_name(&shared.consumer_prefix, &endpoint.name);
        let former_consumer = FormerNote::new(shared.source_listings(), lazy, &consumer_name);
        let worker = Self {
            lazy,
            parked: AtomicBool::new(lazy),
            former_consumer,
            replaced_one: AtomicBool::new(false),
            replaced_copy_reader: AtomicBool::new(false),
            resets_unanswered: AtomicU32::new(0),
            resume: Mutex::default(),
            retry_room: AtomicI64::new(0),
            first_waits: Mutex::new(Vec::new()),
            window_writing: AtomicBool::new(false),
            known_at_start: shared.pause_state.known(&endpoint.name),
            handover: Mutex::default(),
            hands_over: AtomicBool::new(false),
            permits: Arc::new(Semaphore::new(endpoint.concurrency)),
            wake: tokio::sync::Notify::new(),
            consumer_name,
            deliverer,
            router,
            shared: Arc::clone(shared),
            metrics: em,
            breaker,
            bound: AtomicBool::new(false),
            bind_refused: AtomicBool::new(false),
            last_success_ms: AtomicU64::new(0),
            last_failure_ms: AtomicU64::new(0),
            last_error: Mutex::new(None),
            success_log: (shared.delivery_log.as_ref())
                .map_or(RateLimit::new(0), DeliveryLog::endpoint_cap),
            msg_id_warned: AtomicBool::new(false),
            deleted: AtomicBool::new(false),
            throttle: ArcSwapOption::new(throttle(
                endpoint.rate_limit,
                *shared.replicas.borrow(),
                None,
            )),
            endpoint,
        };
        // A pause outlives restarts and reloads: the worker starts from it, before it
        // fetches anything or the lane hands it a copy.
        if let Some(record) = &worker.known_at_start {
            worker.breaker.restore(PauseReason::from(&record.cause));
        }
        worker
    }

    /// Ends the effects of a removed endpoint's worker once it has drained: its series
    /// leave `/metrics`, and a late delivery (one the fan-out's lane started) neither
    /// brings them back nor pauses an endpoint created later under the name; when it
    /// was `deleted` (not disabled or taken out of the file), nor writes to the
    /// delivery log that goes with it.
    pub fn retire(&self, deleted: bool) {
        self.deleted.store(deleted, Ordering::Relaxed);
        self.metrics.retire();
    }

    /// See [`Worker::retire`].
    pub(super) fn records_deliveries(&self) -> bool {
        !self.deleted.load(Ordering::Relaxed)
    }

    /// The endpoint as the worker was started. Its `rate_limit` follows reloads in
    /// place: read that one through [`Worker::rate_limit`].
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    pub fn deliverer(&self) -> &Deliverer {
        &self.deliverer
    }

    /// Paused by an operator: no probes, only [`Worker::resume`] ends it.
    pub fn pause(&self) {
        self.breaker.pause(PauseReason::Manual);
    }

    /// Why the endpoint is paused, when only a resume ends it (an operator's pause,
    /// or one whose cause this version does not know): what sends to it on an
    /// operator's request (a dead-letter replay) waits for that resume too.
    pub fn held_until_resumed(&self) -> Option<PauseReason> {
        self.breaker.pause_reason().filter(|r| !r.ends_on_success())
    }

    /// Resumed by an operator, whatever paused it.
    pub fn resume(&self) {
        self.breaker.resume(ResumeCause::Manual);
    }

    /// Follows a pause or resume shared by another replica.
    pub fn follow(&self, record: Option<&PauseRecord>) {
        self.breaker
            .follow(record.map(|r| PauseReason::from(&r.cause)));
    }

    /// Follows a change of the endpoint's pause the watch saw between
    /// [`Worker::new`] (which starts from the pause last seen) and the supervisor
    /// listing the worker, when the change found no worker to apply to; called once
    /// listed. A pause the breaker made meanwhile is not undone: only a change of
    /// what was seen counts.
    pub fn follow_known(&self) {
        let known = self.shared.pause_state.known(&self.endpoint.name);
        if known != self.known_at_start {
            self.follow(known.as_ref());
        }
    }

    /// Reads the endpoint's shared pause from the bucket when the process could not
    /// read them all at start ([`PauseState::known_loaded`](crate::store::pause_state::PauseState::known_loaded)):
    /// the watch's replay may not have reached this worker yet.
    async fn follow_current(&self) {
        if self.shared.pause_state.known_loaded() {
            return;
        }
        match self.shared.pause_state.current(&self.endpoint.name).await {
            Ok(Some(record)) => self.follow(Some(&record)),
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(endpoint = %self.endpoint.name, error = %e, "shared pause state not readable at start");
            }
        }
    }

    pub fn state(&self) -> EndpointState {
        EndpointState {
            name: self.endpoint.name.clone(),
            url: self.endpoint.url.to_string(),
            consumer: self.consumer_name.clone(),
            bound: self.is_bound(),
            paused: self.breaker.is_paused(),
            pause_reason: self.breaker.pause_reason().map(|r| r.to_string()),
            consecutive_failures: self.breaker.consecutive_failures(),
            inflight: self.gauge(|m| m.inflight.get()),
            pending: self.gauge(|m| m.pending.get()),
            last_success: from_unix_ms(self.last_success_ms.load(Ordering::Relaxed)),
            last_failure: from_unix_ms(self.last_failure_ms.load(Ordering::Relaxed)),
            last_error: self.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }

    /// A gauge's value, 0 for an endpoint whose series were never created.
    fn gauge(&self, read: impl Fn(&EndpointMetrics) -> i64) -> i64 {
        if self.metrics.created() {
            read(&self.metrics)
        } else {
            0
        }
    }

    /// True once the durable consumer exists and fetching works, or while a fan-out
    /// endpoint has no work and so needs no consumer.
    pub fn is_bound(&self) -> bool {
        self.bound.load(Ordering::Relaxed) || self.is_parked()
    }

    /// Whether the last attempt to bind the consumer failed (JetStream refused it, or
    /// could not be reached); cleared once it binds.
    pub fn bind_refused(&self) -> bool {
        self.bind_refused.load(Ordering::Relaxed)
    }

    /// A fan-out endpoint without work: no consumer, no fetching.
    pub fn is_parked(&self) -> bool {
        self.parked.load(Ordering::Relaxed)
    }

    /// With fan-out: the endpoint has work on the work stream (a copy was just stored,
    /// or a scan found some). A worker that runs takes it as it comes anyway.
    pub fn wake(&self) {
        if self.lazy {
            self.wake.notify_one();
        }
    }

    /// Whether the endpoint reads copies from the work stream.
    pub fn fans_out(&self) -> bool {
        self.lazy
    }

    /// Whether the fan-out puts the endpoint's next copy on the lane: the endpoint has
    /// no consumer of its own (so no copy of its own waits), it is not paused, it has
    /// no rate limit to wait for, and an attempt ends within its `timeout` of at most
    /// a third of the lane's `ack_wait` (its attempts need no progress acks).
    pub fn takes_lane(&self) -> bool {
        self.is_parked()
            && !self.has_former_consumer()
            && progress_every(&self.endpoint).is_none()
            && self.takes_lane_copies()
    }

    /// Whether the endpoint's former consumer on the source stream still exists
    /// (`fanout::leftover` drains it): its copies stay off the lane meanwhile.
    pub fn note_former_consumer(&self, exists: bool) {
        (self.former_consumer).set(self.shared.source_listings(), self.lazy && exists);
    }

    /// See [`Worker::note_former_consumer`].
    pub fn has_former_consumer(&self) -> bool {
        (self.former_consumer).holds(self.shared.source_listings(), &self.consumer_name)
    }

    /// Whether the endpoint can start a copy from the lane: a fan-out endpoint that is
    /// not paused and has no rate limit to wait for.
    pub fn takes_lane_copies(&self) -> bool {
        self.lazy && !self.breaker.is_paused() && self.throttle.load().is_none()
    }

    /// A permit of the endpoint's `concurrency` for a copy from the lane, when the
    /// endpoint can start it now and has fewer than `cap` deliveries under way; `None`
    /// sends the copy to the endpoint's own subject.
    pub fn lane_permit(&self, cap: usize) -> Option<OwnedSemaphorePermit> {
        let under_way =
            (self.endpoint.concurrency).saturating_sub(self.permits.available_permits());
        if !self.takes_lane_copies() || under_way >= cap {
            return None;
        }
        Arc::clone(&self.permits).try_acquire_owned().ok()
    }

    /// Delivers a copy from the lane and settles it on the lane (a short retry is the
    /// lane redelivering it after the attempt's delay); `hold` (its permits) is
    /// released when the delivery ends.
    pub fn start_from_lane(
        self: &Arc<Self>,
        msg: jetstream::Message,
        hold: impl Send + 'static,
        abort: CancellationToken,
        tracker: &TaskTracker,
    ) {
        let this = Arc::clone(self);
        tracker.spawn(Box::pin(async move {
            this.handle(&msg, &abort).await;
            drop(hold);
        }));
    }

    /// Runs until `stop.drain`; in-flight deliveries are tracked by `tracker`. A fan-out
    /// endpoint waits for its first work before anything else: until then its task
    /// holds only this wait, not the fetch loop's state, and it reads nothing from NATS.
    pub async fn run(self: Arc<Self>, stop: Stop, tracker: TaskTracker) {
        if self.is_parked() {
            tokio::select! {
                _ = stop.drain.cancelled() => return,
                () = self.wake.notified() => self.parked.store(false, Ordering::Relaxed),
            }
        }
        Box::pin(self.serve(stop, tracker)).await;
    }

    async fn serve(self: Arc<Self>, stop: Stop, tracker: TaskTracker) {
        self.metrics.create();
        let permits = Arc::clone(&self.permits);
        let share = self.shared.inflight.share();
        // What the worker this one replaced held, oldest first, and its pull stream.
        let Handover { mut held, stream } = std::mem::take(&mut *lock(&self.handover));
        let mut stream = stream.map(|s| *s);
        let mut retry = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
        self.follow_current().await;
        while !stop.drain.is_cancelled() {
            if self.is_parked() {
                tokio::select! {
                    _ = stop.drain.cancelled() => break,
                    () = self.wake.notified() => self.parked.store(false, Ordering::Relaxed),
                }
            }
            // A bind may take seconds (an `ordered` endpoint taking its consumer back
            // from a drain): a worker replaced meanwhile must not finish it under its
            // successor.
            let bound = tokio::select! {
                _ = stop.drain.cancelled() => break,
                bound = self.bind() => bound,
            };
            let consumer = match bound {
                Ok(c) => c,
                Err(e) => {
                    self.bound.store(false, Ordering::Relaxed);
                    self.bind_refused.store(true, Ordering::Relaxed);
                    tracing::warn!(endpoint = %self.endpoint.name, error = %e, "cannot bind consumer; retrying");
                    tokio::select! {
                        _ = stop.drain.cancelled() => break,
                        _ = tokio::time::sleep(retry.next_delay()) => {}
                    }
                    continue;
                }
            };
            self.bound.store(true, Ordering::Relaxed);
            self.bind_refused.store(false, Ordering::Relaxed);
            retry.reset();
            // What the kept stream received meanwhile (the server may still send to
            // its request) waits with the held messages.
            if let Some(kept) = stream.as_mut() {
                if !take_ready(kept, &mut held) {
                    stream = None;
                }
            }
            // Held messages may have waited through a re-bind: restart their ack timer
            // before they queue for a permit.
            self.extend_ack_wait(&held).await;

            let mut messages = match self.pull(&consumer, &mut stream).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(endpoint = %self.endpoint.name, error = %e, "cannot start fetching; retrying");
                    tokio::select! {
                        _ = stop.drain.cancelled() => break,
                        _ = tokio::time::sleep(retry.next_delay()) => {}
                    }
                    continue;
                }
            };
            let leave = self
                .fetch(&mut messages, &mut held, &permits, &share, &stop, &tracker)
                .await;
            // What the stream already received is ours: dropping it would cost each
            // message an attempt and an ack_wait.
            let sound = take_ready(&mut messages, &mut held);
            match leave {
                Leave::Drain => {
                    // Kept for a successor: the server may still send to its request.
                    stream = Some(messages);
                    break;
                }
                Leave::Rebind => {}
                Leave::Idle => {
                    if held.is_empty() && self.let_consumer_go(&permits).await {
                        self.bound.store(false, Ordering::Relaxed);
                        self.parked.store(true, Ordering::Relaxed);
                    } else if sound {
                        // The consumer stays: so does the pull on it.
                        stream = Some(messages);
                    }
                }
                Leave::RebindAfterError => {
                    self.bound.store(false, Ordering::Relaxed);
                    tokio::select! {
                        _ = stop.drain.cancelled() => break,
                        _ = tokio::time::sleep(retry.next_delay()) => {}
                    }
                }
            }
        }
        {
            let mut slot = lock(&self.handover);
            if self.hands_over.load(Ordering::Relaxed) {
                // Replaced by a reload: the successor takes them as they are, and reads
                // on from the stream.
                slot.held.extend(held.drain(..));
                slot.stream = stream.take().map(Box::new);
            }
        }
        if let Some(mut messages) = stream.take() {
            take_ready(&mut messages, &mut held);
        }
        // Fetched but never started: NAK for redelivery (to the restarted process, or
        // another replica) instead of after ack_wait, once the ledger says this
        // delivery was no attempt; the delay lets a KV replica that serves reads catch
        // up with that write first. A copy that only waits out its retry delay goes
        // back with that delay, its delivery being no attempt already.
        self.release_waiting(&mut held).await;
        let delay = match self.note_unattempted(&held).await {
            true => Some(unattempted::NAK_DELAY),
            false => None,
        };
        for msg in held.drain(..) {
            self.ack(&msg, AckKind::Nak(delay)).await;
        }
        self.bound.store(false, Ordering::Relaxed);
    }

    /// Counts one unattempted delivery of each of `held` (`store::unattempted`);
    /// whether that was written. Without it, each counts one attempt more.
    async fn note_unattempted(&self, held: &Held) -> bool {
        let delivered: Vec<Delivered<'_>> = held.iter().filter_map(Delivered::of).collect();
        if delivered.is_empty() {
            return false;
        }
        match self.shared.unattempted.add(&delivered).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(endpoint = %self.endpoint.name, error = %e, held = delivered.len(), "cannot note the held messages as unattempted; each counts one attempt more");
                false
            }
        }
    }

    async fn ack(&self, msg: &jetstream::Message, kind: AckKind) {
        if let AckKind::Nak(Some(delay)) = kind {
            self.note_first_wait(msg, delay);
        }
        if let Err(e) = msg.ack_with(kind).await {
            // The message comes back after ack_wait: a duplicate with the same id,
            // never a loss.
            tracing::warn!(endpoint = %self.endpoint.name, error = %e, "ack failed; message will be redelivered");
        }
    }
}
