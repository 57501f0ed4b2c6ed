//! The fetch loop of one pull stream: messages wait for the endpoint's permit, its
//! rate-limit token and a share of the process-wide bound, in that order, and are then
//! handed to a delivery task. While they wait, what the stream brings is held (never
//! dropped unattempted, so it costs no attempt) and their ack timers are extended; a
//! pause holds them all while one probe at a time tests the endpoint.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, message::AckKind};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::task::TaskTracker;

use super::inflight::Share;
use super::{keep_alive_every, Stop, Worker};
use crate::backoff::Backoff;
use crate::store::pause_state::ProbeGuard;
use crate::store::pull_stream::PullStream;

/// Messages fetched but not started. They survive pauses and re-binds, so a message
/// the endpoint never tried costs no attempt and never waits out its ack timer.
pub(super) type Held = VecDeque<jetstream::Message>;

/// How a wait for a permit ended.
pub(super) enum Waited<T> {
    Done(T),
    /// The endpoint paused meanwhile.
    Paused,
    Leave(Leave),
}

/// Why feeding one pull stream ended.
#[derive(Debug)]
pub(super) enum Leave {
    Drain,
    /// Pull again at once (missed heartbeat, stream ended).
    Rebind,
    /// Pull again after a back-off.
    RebindAfterError,
    /// Nothing came for `IDLE_AFTER` and nothing is in flight: a fan-out endpoint may
    /// let its consumer go.
    Idle,
}

/// How often a fan-out endpoint's worker checks whether its consumer can go: when no
/// message started since the last check and none is in flight, after 10 to 20 s of
/// quiet.
const IDLE_AFTER: Duration = Duration::from_secs(10);

/// Why a message did not get its token.
enum NoToken {
    Leave(Leave),
    /// The endpoint paused meanwhile; the message is held again.
    Paused,
}

/// What `next` gives without waiting (the next message, a free permit), taken without
/// the select that waits for it, whose drain and pause futures each register on a
/// waiter list (a lock) and unregister again, for every message. Nothing once the
/// worker drains: the drain comes first.
fn ready_now<F: Future>(next: Pin<&mut F>, stop: &Stop) -> Option<F::Output> {
    if stop.drain.is_cancelled() {
        return None;
    }
    next.now_or_never()
}

impl Worker {
    /// Feeds one pull stream to delivery tasks, held messages first, until the worker
    /// drains or the stream must be replaced. A delivery starts with two permits: one of
    /// the endpoint's `concurrency`, then, once a message is there to send, one of the
    /// process-wide bound (an idle endpoint holds none).
    pub(super) async fn fetch(
        self: &Arc<Self>,
        messages: &mut PullStream,
        held: &mut Held,
        permits: &Arc<Semaphore>,
        share: &Share,
        stop: &Stop,
        tracker: &TaskTracker,
    ) -> Leave {
        // Held messages waiting for a token or a permit: their ack timers are extended on this
        // schedule (kept across messages, since one message may wait through many).
        let every = keep_alive_every(&self.endpoint);
        let mut keep_alive = tokio::time::interval_at(Instant::now() + every, every);
        keep_alive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // One idle check for the whole stream, not a timer per wait: when each message
        // arrives alone (traffic spread over many endpoints), a timer per wait is set
        // and cancelled once per message.
        let idle = tokio::time::sleep(IDLE_AFTER);
        tokio::pin!(idle);
        let mut started = false;
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
            // A message that meets no wait below goes from the stream to its delivery
            // task without a pass through `held`: each pass moves it (hundreds of bytes
            // with its JetStream context), for every message.
            let msg = match held.pop_front() {
                Some(msg) => msg,
                None => {
                    // Under load the next message is already there.
                    let next = match ready_now(std::pin::pin!(messages.next()), stop) {
                        Some(next) => next,
                        None => tokio::select! {
                            _ = stop.drain.cancelled() => return Leave::Drain,
                            () = self.breaker.until_paused(true) => continue,
                            m = messages.next() => m,
                            () = &mut idle, if self.lazy => {
                                // Idle only with nothing in flight (this permit aside).
                                let quiet = !std::mem::take(&mut started);
                                if quiet && permits.available_permits() + 1 >= self.endpoint.concurrency {
                                    return Leave::Idle;
                                }
                                idle.as_mut().reset(Instant::now() + IDLE_AFTER);
                                continue;
                            }
                        },
                    };
                    match next {
                        Some(Ok(msg)) => msg,
                        Some(Err(e)) => return self.fetch_failed(&e),
                        None => return Leave::Rebind,
                    }
                }
            };
            if let Some(wait) = self.waits_first(&msg) {
                self.ack(&msg, AckKind::Nak(Some(wait))).await;
                continue;
            }
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
            let mut global = std::pin::pin!(share.acquire());
            let (msg, global) = match ready_now(global.as_mut(), stop) {
                Some(global) => (msg, global),
                None => {
                    // Held while it waits, so that its ack timer is extended with the rest.
                    held.push_front(msg);
                    let global = match self
                        .wait(global, messages, held, &mut keep_alive, stop)
                        .await
                    {
                        Waited::Done(p) => p,
                        Waited::Paused => continue,
                        Waited::Leave(leave) => return leave,
                    };
                    let Some(msg) = held.pop_front() else {
                        continue;
                    };
                    (msg, global)
                }
            };
            if self.breaker.is_paused() {
                held.push_front(msg);
                continue;
            }
            started = true;
            let this = Arc::clone(self);
            let abort = stop.abort.clone();
            // Boxed, so the delivery future is copied once into the heap and the task
            // moves a pointer, not the future, through spawn and its stage changes.
            tracker.spawn(Box::pin(async move {
                this.handle(&msg, &abort).await;
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
        messages: &mut PullStream,
        held: &mut Held,
        stop: &Stop,
        keep_alive: &mut Interval,
    ) -> Result<jetstream::Message, NoToken> {
        if self.throttle.load().is_none() || !self.becomes_request(&msg) {
            return Ok(msg);
        }
        let mut changed = self.shared.throttles.subscribe();
        let mut waited_since = None;
        let leave = loop {
            // Seen before reading the throttle: a change from here on wakes the wait.
            changed.borrow_and_update();
            // At this replica's current share (a worker started while the count of
            // replicas changed catches up here).
            let Some(throttle) = self.current_throttle() else {
                break None;
            };
            let next = match throttle.try_take() {
                Ok(()) => break None,
                Err(next) => next,
            };
            waited_since.get_or_insert_with(Instant::now);
            tokio::select! {
                _ = stop.drain.cancelled() => break Some(NoToken::Leave(Leave::Drain)),
                () = self.breaker.until_paused(true) => break Some(NoToken::Paused),
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
        messages: &mut PullStream,
        held: &mut Held,
        keep_alive: &mut Interval,
        stop: &Stop,
    ) -> Waited<F::Output> {
        if let Some(p) = ready_now(permit.as_mut(), stop) {
            return Waited::Done(p);
        }
        loop {
            tokio::select! {
                biased;
                _ = stop.drain.cancelled() => return Waited::Leave(Leave::Drain),
                p = permit.as_mut() => return Waited::Done(p),
                () = self.breaker.until_paused(true) => return Waited::Paused,
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
        messages: &mut PullStream,
        held: &mut Held,
        stop: &Stop,
    ) -> Option<Leave> {
        let mut wait = Backoff::new(
            self.endpoint.probe_interval,
            self.endpoint.probe_max_interval,
        );
        let probe_due = tokio::time::sleep(wait.next_delay());
        tokio::pin!(probe_due);
        let every = keep_alive_every(&self.endpoint);
        let mut keep_alive = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let mut probe: Option<Pin<Box<dyn Future<Output = ()> + Send + '_>>> = None;
        let mut probe_lock = None;
        let leave = loop {
            tokio::select! {
                _ = stop.drain.cancelled() => break Some(Leave::Drain),
                () = self.breaker.until_paused(false), if probe.is_none() => break None,
                next = messages.next() => match next {
                    Some(Ok(msg)) => held.push_back(msg),
                    Some(Err(e)) => break Some(self.fetch_failed(&e)),
                    None => break Some(Leave::Rebind),
                },
                _ = keep_alive.tick() => self.extend_ack_wait(held).await,
                () = &mut probe_due, if probe.is_none() => {
                    // A copy that only waits out its retry delay proves nothing.
                    self.release_waiting(held).await;
                    // Paused by an operator (here or on another replica, maybe since
                    // this pause began), or for a cause not known here: no probes,
                    // only an explicit resume.
                    let no_probes = !self.breaker.pause_reason().is_some_and(|r| r.ends_on_success());
                    let lock = if held.is_empty() || no_probes {
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
                                let abort = &stop.abort;
                                probe = Some(Box::pin(async move { self.handle(&msg, abort).await }));
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
        // Resumed, or stopping (a shutdown, a reload): the turn goes back, so that
        // another replica, this process started again or the worker a reload starts
        // probes at its next interval rather than after the turn runs out (the probe
        // interval plus the endpoint's timeout). A stopping worker does not wait for
        // that write before it NAKs what it holds. A new pull keeps the turn: it is
        // this replica's when the loop starts again.
        if let Some(lock) = probe_lock.take() {
            match leave {
                None => self.shared.pause_state.release_probe(lock).await,
                Some(Leave::Drain) => {
                    let state = self.shared.pause_state.clone();
                    tokio::spawn(async move { state.release_probe(lock).await });
                }
                Some(_) => {}
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
        match self.current_throttle().as_ref() {
            Some(t) => t.try_take(),
            None => Ok(()),
        }
    }

    /// A copy moved off the lane to wait out its retry delay, on its first delivery:
    /// the delay to NAK it with, which is no attempt (see `message`).
    fn waits_first(&self, msg: &jetstream::Message) -> Option<Duration> {
        let work = self.shared.work.as_ref()?;
        let info = msg.info().ok()?;
        work.attempt_of(msg, info.stream, info.delivered).wait_first
    }

    /// NAKs the held copies that only wait out a retry delay, with that delay.
    pub(super) async fn release_waiting(&self, held: &mut Held) {
        let mut i = 0;
        while i < held.len() {
            match self.waits_first(&held[i]) {
                Some(wait) => {
                    if let Some(msg) = held.remove(i) {
                        self.ack(&msg, AckKind::Nak(Some(wait))).await;
                    }
                }
                None => i += 1,
            }
        }
    }

    /// Restarts the ack timer of messages that are ours but not started.
    pub(super) async fn extend_ack_wait(&self, held: &Held) {
        for msg in held {
            self.ack(msg, AckKind::Progress).await;
        }
    }
}
