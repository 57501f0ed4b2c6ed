//! One endpoint's JetStream consumer: fetch, deliver, then ack, NAK or dead-letter.
//! This module binds and fetches, holds messages while the endpoint is paused and
//! probes it; `message` delivers and settles one message, as `outcome` decides.
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
pub mod inflight;
mod message;
pub mod outcome;
pub mod throttle;
pub mod unmapped;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{self, pull, AckPolicy, DeliverPolicy},
    message::AckKind,
};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{watch, Semaphore};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::breaker::{Breaker, PauseReason, ResumeCause};
use self::inflight::{InflightLimit, Share};
use self::throttle::Throttle;
pub use self::unmapped::{bind_unmapped_counter, watch_unmapped};
use crate::backoff::Backoff;
use crate::config::{Endpoint, NatsConfig, Rate};
use crate::delivery::Deliverer;
use crate::events::OperatorEvents;
use crate::metrics::{EndpointMetrics, Metrics};
use crate::rate_limit::RateLimit;
use crate::routing::Router;
use crate::store::dead_letters::DeadLetters;
use crate::store::delivery_log::DeliveryLog;
use crate::store::pause_state::{PauseRecord, PauseState, ProbeGuard};
use crate::store::work_stream::WorkStream;
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

/// The durable consumer name for an endpoint.
pub fn consumer_name(prefix: &str, endpoint: &str) -> String {
    format!("{prefix}-{endpoint}")
}

/// How long JetStream waits for an ack before redelivering. Longer than one attempt
/// so a delivery in progress is not handed out twice; progress acks extend it further
/// for anything that still runs long (e.g. waiting on a dead-letter publish).
pub fn ack_wait(endpoint: &Endpoint) -> Duration {
    (endpoint.timeout + Duration::from_secs(20)).max(Duration::from_secs(30))
}

/// The consumer's window: at most this many messages unacked. Twice the concurrency
/// (one for `ordered`), and with a rate limit no more than the rate delivers in a third
/// of `ack_wait`, so a fetched message is started well within its ack timer.
pub fn window(endpoint: &Endpoint, rate: Option<Rate>) -> i64 {
    if endpoint.ordered {
        return 1;
    }
    let window = endpoint.concurrency as u64 * 2;
    let window = match rate {
        Some(rate) => window.min(rate.within(ack_wait(endpoint) / 3)),
        None => window,
    };
    i64::try_from(window).unwrap_or(i64::MAX)
}

/// Messages fetched but not started. They survive pauses and re-binds, so a message
/// the endpoint never tried costs no attempt and never waits out its ack timer.
type Held = VecDeque<jetstream::Message>;

/// How a wait for a permit ended.
enum Waited<T> {
    Done(T),
    /// The endpoint paused meanwhile.
    Paused,
    Leave(Leave),
}

/// Why feeding one pull stream ended.
#[derive(Debug)]
enum Leave {
    Drain,
    /// Pull again at once (missed heartbeat, stream ended).
    Rebind,
    /// Pull again after a back-off.
    RebindAfterError,
    /// Nothing came for `IDLE_AFTER` and nothing is in flight: a fan-out endpoint may
    /// let its consumer go.
    Idle,
}

/// How long a fan-out endpoint's consumer waits for work before the worker checks
/// whether it can let it go.
const IDLE_AFTER: Duration = Duration::from_secs(10);

/// What every worker shares: the NATS side and the process-wide stores.
#[derive(Clone)]
pub struct Shared {
    js: jetstream::Context,
    stream_name: String,
    consumer_prefix: String,
    metrics: Metrics,
    dead_letters: DeadLetters,
    delivery_log: Option<DeliveryLog>,
    /// Successful attempts logged per endpoint and second at most.
    log_successes_per_second: u32,
    pause_state: PauseState,
    events: OperatorEvents,
    /// `[delivery] max_inflight`, shared fairly by the endpoints.
    inflight: InflightLimit,
    /// With `[delivery] fan_out`: where endpoints read their copies.
    work: Option<WorkStream>,
    /// Consumer creations under way, over all endpoints.
    binds: Arc<Semaphore>,
}

/// Consumers created at once, over all endpoints.
const CONCURRENT_BINDS: usize = 16;

impl Shared {
    /// `log_successes_per_second` caps the successful attempts each endpoint writes to
    /// `delivery_log` (failed ones are always written); `max_inflight` bounds the
    /// deliveries in flight over all endpoints.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        js: jetstream::Context,
        nats: &NatsConfig,
        metrics: Metrics,
        dead_letters: DeadLetters,
        delivery_log: Option<DeliveryLog>,
        log_successes_per_second: u32,
        pause_state: PauseState,
        max_inflight: usize,
    ) -> Self {
        metrics.inflight_limit.set(max_inflight as i64);
        let inflight = InflightLimit::new(max_inflight, metrics.inflight_total.clone());
        Self {
            js,
            stream_name: nats.stream.clone(),
            consumer_prefix: nats.consumer_prefix.clone(),
            metrics,
            dead_letters,
            delivery_log,
            log_successes_per_second,
            pause_state,
            events: OperatorEvents::off(),
            inflight,
            work: None,
            binds: Arc::new(Semaphore::new(CONCURRENT_BINDS)),
        }
    }

    /// Endpoints read their copies from `work` (`[delivery] fan_out`), except ordered
    /// ones, which keep their own consumer on the source stream: copies made by
    /// several fan-out consumers in parallel would not keep the source's order.
    pub fn fanning_out(mut self, work: WorkStream) -> Self {
        self.work = Some(work);
        self
    }

    pub fn work_stream(&self) -> Option<&WorkStream> {
        self.work.as_ref()
    }

    /// Publishes the workers' operator events through `events` (off until then).
    pub fn raising(mut self, events: OperatorEvents) -> Self {
        self.events = events;
        self
    }

    pub fn pause_state(&self) -> &PauseState {
        &self.pause_state
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn dead_letters(&self) -> &DeadLetters {
        &self.dead_letters
    }

    pub fn delivery_log(&self) -> Option<&DeliveryLog> {
        self.delivery_log.as_ref()
    }

    pub fn js(&self) -> &jetstream::Context {
        &self.js
    }

    pub fn events(&self) -> &OperatorEvents {
        &self.events
    }
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
    /// Unix milliseconds; 0 = never.
    last_success_ms: AtomicU64,
    last_failure_ms: AtomicU64,
    last_error: Mutex<Option<String>>,
    success_log: RateLimit,
    /// Set once a `Nats-Msg-Id` was replaced by another id: a publisher that sets an
    /// unusable id usually does so for every message, so it is said once, not per message.
    msg_id_warned: AtomicBool,
    /// The `rate_limit` in force: it follows reloads without a restart, so a waiting
    /// message is never NAKed (which would cost it an attempt) for a new rate.
    throttle: watch::Sender<Option<Arc<Throttle>>>,
    /// With fan-out: the endpoint's copies are on the work stream, and its consumer
    /// exists only while it has work.
    lazy: bool,
    /// A lazy worker without a consumer, waiting for [`Worker::wake`].
    parked: AtomicBool,
    wake: tokio::sync::Notify,
}

/// Why a message did not get its token.
enum NoToken {
    Leave(Leave),
    /// The endpoint paused meanwhile; the message is held again.
    Paused,
}

fn endpoint_throttle(endpoint: &Endpoint) -> Option<Arc<Throttle>> {
    endpoint.rate_limit.map(|r| Arc::new(Throttle::new(r)))
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
        let breaker = Arc::new(
            Breaker::new(&endpoint.name, endpoint.disable_after_failures, em.clone())
                .announcing(Box::new(move |reason| {
                    let state = &announcer.pause_state;
                    state.announce(&name, reason.map(|r| state.record(r.into())));
                }))
                .raising(shared.events.clone(), endpoint.tenant.clone()),
        );
        let lazy = shared.work.is_some() && !endpoint.ordered;
        if !lazy {
            em.create();
        }
        Self {
            lazy,
            parked: AtomicBool::new(lazy),
            wake: tokio::sync::Notify::new(),
            consumer_name: consumer_name(&shared.consumer_prefix, &endpoint.name),
            deliverer,
            router,
            shared: Arc::clone(shared),
            metrics: em,
            breaker,
            bound: AtomicBool::new(false),
            last_success_ms: AtomicU64::new(0),
            last_failure_ms: AtomicU64::new(0),
            last_error: Mutex::new(None),
            success_log: RateLimit::new(shared.log_successes_per_second),
            msg_id_warned: AtomicBool::new(false),
            throttle: watch::Sender::new(endpoint_throttle(&endpoint)),
            endpoint,
        }
    }

    /// The endpoint as the worker was started. Its `rate_limit` follows reloads in
    /// place: read that one through [`Worker::rate_limit`].
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// The `rate_limit` in force.
    pub fn rate_limit(&self) -> Option<Rate> {
        self.throttle.borrow().as_ref().map(|t| t.rate())
    }

    /// Applies a new `rate_limit` without a restart: the next token comes at the new
    /// rate, and the consumer's window follows (the pull stream and the messages
    /// already fetched stay, so none of them is redelivered or costs an attempt).
    pub fn set_rate_limit(self: &Arc<Self>, rate: Option<Rate>) {
        self.throttle
            .send_replace(rate.map(|r| Arc::new(Throttle::new(r))));
        let this = Arc::clone(self);
        tokio::spawn(async move {
            match this.bind().await {
                Ok(_) => {
                    tracing::info!(endpoint = %this.endpoint.name, rate_limit = ?rate.map(|r| r.to_string()), "rate limit changed")
                }
                Err(e) => {
                    tracing::warn!(endpoint = %this.endpoint.name, error = %e, "rate limit changed; the consumer window follows at the next bind")
                }
            }
        });
    }

    /// Waits (at most `max_wait`) for a token of the endpoint's rate limit, for a
    /// request outside the fetch loop (the admin API's test event); `Err` is how long
    /// until one is free.
    pub async fn take_token_within(&self, max_wait: Duration) -> Result<(), Duration> {
        let throttle = self.throttle.borrow().clone();
        match throttle {
            Some(t) => t.take_within(max_wait).await,
            None => Ok(()),
        }
    }

    pub fn deliverer(&self) -> &Deliverer {
        &self.deliverer
    }

    /// Paused by an operator: no probes, only [`Worker::resume`] ends it.
    pub fn pause(&self) {
        self.breaker.pause(PauseReason::Manual);
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

    /// Starts from the shared pause state: a pause outlives restarts and reloads.
    async fn follow_current(&self) {
        match self.shared.pause_state.current(&self.endpoint.name).await {
            Ok(record) => {
                if record.is_some() {
                    self.follow(record.as_ref());
                }
            }
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

    /// The stream the endpoint's consumer is on.
    pub fn consumer_stream(&self) -> &str {
        match &self.shared.work {
            Some(work) if self.lazy => work.name_of(&self.endpoint.name),
            _ => &self.shared.stream_name,
        }
    }

    pub fn consumer_name(&self) -> &str {
        &self.consumer_name
    }

    fn consumer_config(&self) -> pull::Config {
        let subjects = match &self.shared.work {
            Some(work) if self.lazy => vec![work.subject(&self.endpoint.name)],
            _ => self
                .router
                .filter_subjects(&self.endpoint.events, self.endpoint.tenant.as_deref())
                .unwrap_or_default(),
        };
        let (filter_subject, filter_subjects) = match subjects.len() {
            1 => (subjects[0].clone(), Vec::new()),
            _ => (String::new(), subjects),
        };
        pull::Config {
            durable_name: Some(self.consumer_name.clone()),
            description: Some(format!(
                "natshook deliveries to endpoint {}",
                self.endpoint.name
            )),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: ack_wait(&self.endpoint),
            max_deliver: -1,
            filter_subject,
            filter_subjects,
            max_ack_pending: window(&self.endpoint, self.rate_limit()),
            // A fan-out endpoint's consumer keeps its state in memory: on the work
            // stream an acked copy is gone, so the state holds only what is in flight,
            // and a file per consumer rewritten ten times a second is most of what
            // nats-server spends while a thousand endpoints drain. A server restart
            // forgets the consumer; the worker creates it again and everything not
            // acked comes back.
            memory_storage: self.lazy,
            ..Default::default()
        }
    }

    /// Creates or updates the durable consumer so its filters follow the config.
    async fn bind(&self) -> Result<PullConsumer, String> {
        // A few at a time: JetStream creates consumers one after another, and a
        // thousand requests at once (every endpoint at start, or woken by one burst)
        // time out and come back after a back-off.
        let _turn = self.shared.binds.acquire().await;
        let name = self.consumer_stream();
        let stream = self
            .shared
            .js
            .get_stream_no_info(name)
            .await
            .map_err(|e| format!("stream {name}: {e}"))?;
        stream
            .create_consumer(self.consumer_config())
            .await
            .map_err(|e| format!("consumer {}: {e}", self.consumer_name))
    }

    /// Sets `natshook_consumer_pending` from the consumer's info, listed for every
    /// worker of a stream at once (`None`: the consumer does not exist).
    pub fn show_pending(&self, info: Option<&consumer::Info>) {
        if self.is_parked() {
            if self.metrics.created() {
                self.metrics.pending.set(0);
            }
            return;
        }
        if let Some(info) = info {
            let pending = info.num_pending + info.num_ack_pending as u64;
            self.metrics.pending.set(pending as i64);
        }
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
        let permits = Arc::new(Semaphore::new(self.endpoint.concurrency));
        let share = self.shared.inflight.share();
        let mut held = Held::new();
        let mut retry = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
        self.follow_current().await;
        while !stop.drain.is_cancelled() {
            if self.is_parked() {
                tokio::select! {
                    _ = stop.drain.cancelled() => break,
                    () = self.wake.notified() => self.parked.store(false, Ordering::Relaxed),
                }
            }
            let consumer = match self.bind().await {
                Ok(c) => c,
                Err(e) => {
                    self.bound.store(false, Ordering::Relaxed);
                    tracing::warn!(endpoint = %self.endpoint.name, error = %e, "cannot bind consumer; retrying");
                    tokio::select! {
                        _ = stop.drain.cancelled() => break,
                        _ = tokio::time::sleep(retry.next_delay()) => {}
                    }
                    continue;
                }
            };
            self.bound.store(true, Ordering::Relaxed);
            retry.reset();
            // Held messages may have waited through a re-bind: restart their ack timer
            // before they queue for a permit.
            self.extend_ack_wait(&held).await;

            let mut messages = match self.pull(&consumer).await {
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
            while let Some(Some(Ok(msg))) = messages.next().now_or_never() {
                held.push_back(msg);
            }
            drop(messages);
            match leave {
                Leave::Drain => break,
                Leave::Rebind => {}
                Leave::Idle => {
                    if held.is_empty() && self.let_consumer_go(&permits).await {
                        self.bound.store(false, Ordering::Relaxed);
                        self.parked.store(true, Ordering::Relaxed);
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
        // Fetched but never started: NAK for immediate redelivery (to the restarted or
        // reloaded worker, or another replica) instead of after ack_wait.
        for msg in held.drain(..) {
            self.ack(&msg, AckKind::Nak(None)).await;
        }
        self.bound.store(false, Ordering::Relaxed);
    }

    /// Deletes a fan-out endpoint's consumer when it holds nothing: no copy waiting, none
    /// delivered and unacked (a retry waiting out its delay counts as unacked), none in
    /// flight here. A copy stored meanwhile stays on the work stream, and its wake
    /// starts a new consumer, which reads the subject from its start.
    async fn let_consumer_go(&self, permits: &Semaphore) -> bool {
        if permits.available_permits() < self.endpoint.concurrency {
            return false;
        }
        let Ok(stream) = self
            .shared
            .js
            .get_stream_no_info(self.consumer_stream())
            .await
        else {
            return false;
        };
        match stream.consumer_info(&self.consumer_name).await {
            Ok(info) if info.num_pending == 0 && info.num_ack_pending == 0 => {}
            _ => return false,
        }
        match stream.delete_consumer(&self.consumer_name).await {
            Ok(_) => {
                self.metrics.pending.set(0);
                tracing::debug!(endpoint = %self.endpoint.name, "no work; consumer let go");
                true
            }
            Err(e) => {
                tracing::debug!(endpoint = %self.endpoint.name, error = %e, "idle consumer not deleted");
                false
            }
        }
    }

    /// A pull stream on the bound consumer. The server never sends more than
    /// max_ack_pending unacked messages, so a larger batch only saves pull round trips
    /// (ordered endpoints included).
    async fn pull(&self, consumer: &PullConsumer) -> Result<pull::Stream, String> {
        let batch = self.endpoint.concurrency.clamp(16, 256);
        consumer
            .stream()
            .max_messages_per_batch(batch)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| e.to_string())
    }

    /// Feeds one pull stream to delivery tasks, held messages first, until the worker
    /// drains or the stream must be replaced. A delivery starts with two permits: one of
    /// the endpoint's `concurrency`, then, once a message is there to send, one of the
    /// process-wide bound (an idle endpoint holds none).
    async fn fetch(
        self: &Arc<Self>,
        messages: &mut pull::Stream,
        held: &mut Held,
        permits: &Arc<Semaphore>,
        share: &Share,
        stop: &Stop,
        tracker: &TaskTracker,
    ) -> Leave {
        let mut paused = self.breaker.watch();
        // Held messages waiting for a token or a permit: their ack timers are extended on this
        // schedule (kept across messages, since one message may wait through many).
        let every = ack_wait(&self.endpoint) / 3;
        let mut keep_alive = tokio::time::interval_at(Instant::now() + every, every);
        keep_alive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            if self.breaker.is_paused() {
                match self.hold_while_paused(messages, held, stop).await {
                    Some(leave) => return leave,
                    None => continue,
                }
            }
            let acquire = std::pin::pin!(permits.clone().acquire_owned());
            let permit = match self
                .wait(acquire, messages, held, &mut keep_alive, stop)
                .await
            {
                Waited::Done(Ok(p)) => p,
                Waited::Done(Err(_)) => return Leave::Drain,
                Waited::Paused => continue,
                Waited::Leave(leave) => return leave,
            };
            if held.is_empty() {
                let next = tokio::select! {
                    _ = stop.drain.cancelled() => return Leave::Drain,
                    _ = paused.wait_for(|p| *p) => continue,
                    m = messages.next() => m,
                    () = tokio::time::sleep(IDLE_AFTER), if self.lazy => {
                        // Idle only with nothing in flight (this permit aside).
                        if permits.available_permits() + 1 >= self.endpoint.concurrency {
                            return Leave::Idle;
                        }
                        continue;
                    }
                };
                match next {
                    Some(Ok(msg)) => held.push_back(msg),
                    Some(Err(e)) => return self.fetch_failed(&e),
                    None => return Leave::Rebind,
                }
            }
            let Some(msg) = held.pop_front() else {
                continue;
            };
            // The token first: a message waiting for its rate holds no place in the
            // shared bound.
            let msg = match self
                .wait_for_token(msg, messages, held, stop, &mut keep_alive)
                .await
            {
                Ok(msg) => msg,
                Err(NoToken::Leave(leave)) => return leave,
                Err(NoToken::Paused) => continue,
            };
            held.push_front(msg);
            let global = std::pin::pin!(share.acquire());
            let global = match self
                .wait(global, messages, held, &mut keep_alive, stop)
                .await
            {
                Waited::Done(p) => p,
                Waited::Paused => continue,
                Waited::Leave(leave) => return leave,
            };
            if self.breaker.is_paused() {
                continue;
            }
            let Some(msg) = held.pop_front() else {
                continue;
            };
            let this = Arc::clone(self);
            let abort = stop.abort.clone();
            // Boxed, so the delivery future is copied once into the heap and the task
            // moves a pointer, not the future, through spawn and its stage changes.
            tracker.spawn(Box::pin(async move {
                this.handle(msg, &abort).await;
                drop(global);
                drop(permit);
            }));
        }
    }

    /// Holds `msg` until the rate limit gives it a token (at once without a limit, or
    /// for a message that becomes no request). While it waits, what the stream brings
    /// joins `held`, and the ack timers of `msg` and of everything held are extended on
    /// `keep_alive`'s schedule: waiting costs no attempt and no redelivery. On the way
    /// out without a token, `msg` goes back to the front of `held`.
    async fn wait_for_token(
        &self,
        msg: jetstream::Message,
        messages: &mut pull::Stream,
        held: &mut Held,
        stop: &Stop,
        keep_alive: &mut Interval,
    ) -> Result<jetstream::Message, NoToken> {
        if self.throttle.borrow().is_none() || !self.becomes_request(&msg) {
            return Ok(msg);
        }
        let mut changed = self.throttle.subscribe();
        let mut paused = self.breaker.watch();
        let mut waited_since = None;
        let leave = loop {
            let Some(throttle) = changed.borrow_and_update().clone() else {
                break None;
            };
            let next = match throttle.try_take() {
                Ok(()) => break None,
                Err(next) => next,
            };
            waited_since.get_or_insert_with(Instant::now);
            tokio::select! {
                _ = stop.drain.cancelled() => break Some(NoToken::Leave(Leave::Drain)),
                () = paused.wait_for(|p| *p).map(drop) => break Some(NoToken::Paused),
                () = tokio::time::sleep_until(next) => {}
                // A new rate (or none) applies to this message too.
                _ = changed.changed() => {}
                _ = keep_alive.tick() => {
                    self.ack(&msg, AckKind::Progress).await;
                    self.extend_ack_wait(held).await;
                }
                next = messages.next() => match next {
                    Some(Ok(m)) => held.push_back(m),
                    Some(Err(e)) => break Some(NoToken::Leave(self.fetch_failed(&e))),
                    None => break Some(NoToken::Leave(Leave::Rebind)),
                },
            }
        };
        if let Some(since) = waited_since {
            self.metrics
                .rate_limit_wait
                .inc_by(since.elapsed().as_secs_f64());
        }
        match leave {
            None => Ok(msg),
            Some(why) => {
                held.push_front(msg);
                Err(why)
            }
        }
    }

    /// Waits for a permit while keeping what the stream brings, and the ack timers of
    /// everything held, alive: a wait for the shared bound may outlast `ack_wait`, and
    /// a message that waited it out would come back as a second attempt.
    async fn wait<F: Future>(
        &self,
        mut permit: Pin<&mut F>,
        messages: &mut pull::Stream,
        held: &mut Held,
        keep_alive: &mut Interval,
        stop: &Stop,
    ) -> Waited<F::Output> {
        let mut paused = self.breaker.watch();
        loop {
            tokio::select! {
                biased;
                _ = stop.drain.cancelled() => return Waited::Leave(Leave::Drain),
                p = permit.as_mut() => return Waited::Done(p),
                () = paused.wait_for(|p| *p).map(drop) => return Waited::Paused,
                next = messages.next() => match next {
                    Some(Ok(msg)) => held.push_back(msg),
                    Some(Err(e)) => return Waited::Leave(self.fetch_failed(&e)),
                    None => return Waited::Leave(Leave::Rebind),
                },
                _ = keep_alive.tick() => self.extend_ack_wait(held).await,
            }
        }
    }

    fn fetch_failed(&self, e: &pull::MessagesError) -> Leave {
        use async_nats::jetstream::consumer::pull::MessagesErrorKind as K;
        match e.kind() {
            K::MissingHeartbeat => {
                // The server stopped answering this pull (it happens with max_ack_pending
                // = 1 after a burst): a fresh pull stream recovers at once, not after idling.
                tracing::debug!(endpoint = %self.endpoint.name, "missed heartbeat; pulling again");
                Leave::Rebind
            }
            _ => {
                tracing::warn!(endpoint = %self.endpoint.name, error = %e, "fetch failed; re-binding");
                Leave::RebindAfterError
            }
        }
    }

    /// While paused: keep what the stream brings (JetStream never sends more than
    /// max_ack_pending), extend its ack timers, and every probe interval try the oldest
    /// held message, if this replica holds the endpoint's probe lock. A probe's success
    /// resumes the endpoint on every replica (the breaker announces it). With nothing
    /// held there is nothing to probe with: the stream keeps being read, and the next
    /// message that comes is the probe (another replica may hold the rest). Returns
    /// `None` once resumed.
    ///
    /// Holding, rather than dropping the stream, is what keeps a pause from costing
    /// fetched messages an attempt and an ack_wait of delay.
    async fn hold_while_paused(
        &self,
        messages: &mut pull::Stream,
        held: &mut Held,
        stop: &Stop,
    ) -> Option<Leave> {
        let mut paused = self.breaker.watch();
        let mut wait = Backoff::new(
            self.endpoint.probe_interval,
            self.endpoint.probe_max_interval,
        );
        let probe_due = tokio::time::sleep(wait.next_delay());
        tokio::pin!(probe_due);
        let every = ack_wait(&self.endpoint) / 3;
        let mut keep_alive = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let mut probe: Option<Pin<Box<dyn Future<Output = ()> + Send + '_>>> = None;
        let mut probe_lock = None;
        let leave = loop {
            tokio::select! {
                _ = stop.drain.cancelled() => break Some(Leave::Drain),
                // Mapped to (): the watch guard must not live across the awaits below.
                () = paused.wait_for(|p| !*p).map(drop), if probe.is_none() => break None,
                next = messages.next() => match next {
                    Some(Ok(msg)) => held.push_back(msg),
                    Some(Err(e)) => break Some(self.fetch_failed(&e)),
                    None => break Some(Leave::Rebind),
                },
                _ = keep_alive.tick() => self.extend_ack_wait(held).await,
                () = &mut probe_due, if probe.is_none() => {
                    // Paused by an operator (here or on another replica, maybe since
                    // this pause began): no probes, only an explicit resume.
                    let manual = self.breaker.pause_reason() == Some(PauseReason::Manual);
                    let lock = if held.is_empty() || manual {
                        None
                    } else {
                        // A probe is a request like any other: it takes a token, or
                        // comes when the next one is free.
                        match self.try_take_token() {
                            Ok(()) => self.probe_turn(wait.peek()).await,
                            Err(next) => {
                                probe_due.as_mut().reset(next);
                                continue;
                            }
                        }
                    };
                    match lock {
                        Some(lock) => {
                            let msg = held.pop_front();
                            if let Some(msg) = msg {
                                tracing::info!(endpoint = %self.endpoint.name, "probing paused endpoint with one message");
                                probe_lock = lock;
                                probe = Some(Box::pin(self.handle(msg, &stop.abort)));
                            }
                        }
                        None => probe_due.as_mut().reset(tokio::time::Instant::now() + wait.next_delay()),
                    }
                }
                () = async { if let Some(p) = probe.as_mut() { p.await } }, if probe.is_some() => {
                    probe = None;
                    if !self.breaker.is_paused() {
                        if let Some(lock) = probe_lock.take() {
                            self.shared.pause_state.release_probe(lock).await;
                        }
                    }
                    probe_due.as_mut().reset(tokio::time::Instant::now() + wait.next_delay());
                }
            }
        };
        // A probe under way settles its message itself (NAK once the grace is over).
        if let Some(p) = probe {
            p.await;
        }
        if let Some(lock) = probe_lock.take() {
            if !self.breaker.is_paused() {
                self.shared.pause_state.release_probe(lock).await;
            }
        }
        if leave.is_none() {
            // Held messages now queue for permits behind the in-flight ones.
            self.extend_ack_wait(held).await;
        }
        leave
    }

    /// Whether this replica may probe now: `Some(lock)` when it may (`Some(None)` if the
    /// shared lock cannot be reached: probing twice costs an attempt, never probing
    /// would stall the endpoint), `None` while another replica has the turn.
    async fn probe_turn(&self, interval: Duration) -> Option<Option<ProbeGuard>> {
        // The turn covers this probe's attempt and the interval to the next one; a
        // replica that dies mid-probe leaves it to expire.
        let hold = interval + self.endpoint.timeout + Duration::from_secs(1);
        match self
            .shared
            .pause_state
            .try_probe(&self.endpoint.name, hold)
            .await
        {
            Ok(Some(lock)) => Some(Some(lock)),
            Ok(None) => {
                tracing::debug!(endpoint = %self.endpoint.name, "another replica is probing");
                None
            }
            Err(e) => {
                tracing::debug!(endpoint = %self.endpoint.name, error = %e, "probing without the shared probe lock");
                Some(None)
            }
        }
    }

    /// A token now, or when the next one is free (always one without a rate limit).
    fn try_take_token(&self) -> Result<(), Instant> {
        match self.throttle.borrow().as_ref() {
            Some(t) => t.try_take(),
            None => Ok(()),
        }
    }

    /// Restarts the ack timer of messages that are ours but not started.
    async fn extend_ack_wait(&self, held: &Held) {
        for msg in held {
            self.ack(msg, AckKind::Progress).await;
        }
    }

    async fn ack(&self, msg: &jetstream::Message, kind: AckKind) {
        if let Err(e) = msg.ack_with(kind).await {
            // The message comes back after ack_wait: a duplicate with the same id,
            // never a loss.
            tracing::warn!(endpoint = %self.endpoint.name, error = %e, "ack failed; message will be redelivered");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn endpoint(settings: &str) -> Endpoint {
        let text = format!(
            "[nats]\nstream = \"E\"\n[[events]]\nsubject = \"a\"\nevent = \"a\"\n[[endpoints]]\nname = \"x\"\nurl = \"https://example.com/\"\nevents = [\"*\"]\nsecret = \"s\"\n{settings}\n"
        );
        match Config::from_str(&text, "toml") {
            Ok(mut c) => std::sync::Arc::unwrap_or_clone(c.endpoints.remove(0)),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn the_window_is_what_the_rate_delivers_in_a_third_of_ack_wait() {
        let e = endpoint("");
        assert_eq!(window(&e, None), 128);
        // ack_wait is 30 s: 10 s at 200/s is more than twice the concurrency.
        let e = endpoint("rate_limit = \"200/s\"");
        assert_eq!(window(&e, e.rate_limit), 128);
        let e = endpoint("rate_limit = \"2/s\"");
        assert_eq!(window(&e, e.rate_limit), 20);
        // Slower than one per ten seconds: one message at a time.
        let e = endpoint("rate_limit = \"1/m\"");
        assert_eq!(window(&e, e.rate_limit), 1);
        let e = endpoint("rate_limit = \"2/s\"\ntimeout = \"40s\"");
        assert_eq!(window(&e, e.rate_limit), 40);
        let e = endpoint("rate_limit = \"2/s\"\nordered = true");
        assert_eq!(window(&e, e.rate_limit), 1);
    }
}
