//! An endpoint's durable consumer: its settings (window, ack timer), binding it so
//! its filters follow the config, the pull stream on it, and letting it go when a
//! fan-out endpoint has no work left.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::consumer::{self, pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::stream::Stream;
use tokio::sync::Semaphore;

use super::{PullConsumer, Worker};
use crate::config::{Endpoint, Rate};
use crate::store::pull_stream::{self, Liveness, PullStream};
use crate::store::work_stream::{fan_out_consumer, WorkStream};
use crate::store::HeldFrom;

/// Unanswered consumer resets after which a reset counts as refused.
const RESET_TRIES: u32 = 3;

/// How long an `ordered` endpoint's bind waits for this process's drain of its
/// consumer to stop: the drain's last fetch runs out within 2 s.
const DRAIN_STOP: Duration = Duration::from_secs(10);

/// What [`Worker::start_source_consumer`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceConsumer {
    /// None was there: it is made now, after the copies still waiting.
    Made,
    /// The endpoint's own, as its bind left it.
    Own,
    /// One a drain has widened to move its messages out (the endpoint read copies
    /// meanwhile): the endpoint's bind takes it back ([`Worker::take_back`]), copies
    /// and all.
    Drained,
}

/// Why [`Worker::reset_from`] did not reset the consumer.
enum Reset {
    /// For good: tried again, it would be refused again.
    Refused(String),
    /// For now (a timeout, a leader election): the bind is tried again.
    Failed(String),
}

/// Whether a nats-server of `version` resets consumers (2.14 and later).
fn resets_consumers(version: &str) -> bool {
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 14)
}

/// What became of a consumer [`Worker::take_back`] took back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TakenBack {
    /// It is the endpoint's to read.
    Kept,
    /// It was deleted meanwhile (its drain finished on a replica that still reads
    /// copies for the endpoint): it is made again after the copies still waiting.
    Gone,
}

/// Whether a drain (`fanout::leftover`) has widened this `ordered` endpoint's consumer,
/// whose own window is one message: it may have moved messages out as copies.
fn drained(info: &consumer::Info) -> bool {
    info.config.max_ack_pending > 1
}

/// The durable consumer name for an endpoint.
pub fn consumer_name(prefix: &str, endpoint: &str) -> String {
    format!("{prefix}-{endpoint}")
}

/// A consumer's start right after stream sequence `handled`.
fn start_after(handled: u64) -> DeliverPolicy {
    DeliverPolicy::ByStartSequence {
        start_sequence: handled + 1,
    }
}

/// How long JetStream waits for an ack before redelivering. Longer than one attempt
/// so a delivery in progress is not handed out twice; progress acks extend it further
/// for anything that still runs long (e.g. waiting on a dead-letter publish).
pub fn ack_wait(endpoint: &Endpoint) -> Duration {
    (endpoint.timeout + Duration::from_secs(20)).max(Duration::from_secs(30))
}

/// What a consumer has not settled, as `natshook_consumer_pending` and
/// `natshook_fanout_pending` count it: messages waiting plus delivered and unacked.
pub fn unsettled(info: &consumer::Info) -> i64 {
    let n = info.num_pending + info.num_ack_pending as u64;
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// How often the ack timer of a message natshook holds is extended: three times per
/// `ack_wait`, so a message starts its attempt with at least two thirds of it left.
pub fn keep_alive_every(endpoint: &Endpoint) -> Duration {
    ack_wait(endpoint) / 3
}

/// How often a delivery in progress extends its message's ack timer
/// ([`keep_alive_every`]). `None` when the attempt's own timeout ends it first (every
/// `timeout` up to 10 s), so the delivery registers no timer for it.
pub fn progress_every(endpoint: &Endpoint) -> Option<Duration> {
    let every = keep_alive_every(endpoint);
    (every < endpoint.timeout).then_some(every)
}

/// Updates a bind makes after its own write while the rate limit keeps changing.
const WINDOW_ROUNDS: usize = 3;

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

impl Worker {
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

    fn consumer_config(&self, deliver_policy: DeliverPolicy) -> pull::Config {
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
            deliver_policy,
            ack_policy: AckPolicy::Explicit,
            ack_wait: ack_wait(&self.endpoint),
            max_deliver: -1,
            filter_subject,
            filter_subjects,
            max_ack_pending: window(&self.endpoint, self.rate_limit()),
            // A fan-out endpoint's consumer keeps its state in memory: a file per
            // consumer rewritten ten times a second is most of what nats-server spends
            // while a thousand endpoints drain. A server restart forgets the consumer;
            // the worker creates it again and every copy still on the subject comes
            // back: those not acked, and those acked since the last purge.
            memory_storage: self.lazy,
            ..Default::default()
        }
    }

    /// Creates or updates the durable consumer so its filters follow the config.
    pub(super) async fn bind(&self) -> Result<PullConsumer, String> {
        // A few at a time: JetStream creates consumers one after another, and a
        // thousand requests at once (every endpoint at start, or woken by one burst)
        // time out and come back after a back-off.
        if !self.lazy && self.shared.work.is_some() {
            // A drain of this ordered endpoint's consumer (it read copies until now)
            // is stopped before the turn is taken: its last fetch may take seconds to
            // run out, and the fan-out waits for the same turns.
            self.stop_drain().await?;
        }
        let _turn = self.shared.binds.acquire().await;
        let stream = self.own_stream().await?;
        let (start, existing) = self.start(&stream).await?;
        let config = self.consumer_config(start);
        let written = config.max_ack_pending;
        // An update when the consumer exists: one deleted since (its drain finished
        // on a replica that still reads copies for the endpoint) fails the bind, which
        // is tried again, rather than coming back from where it first started.
        let bound = match existing {
            true => stream
                .update_consumer(config)
                .await
                .map_err(|e| e.to_string()),
            false => stream
                .create_consumer(config)
                .await
                .map_err(|e| e.to_string()),
        };
        let mut bound = bound.map_err(|e| format!("consumer {}: {e}", self.consumer_name))?;
        // A rate change while this bind ran may have looked for the consumer before it
        // was made ([`Worker::follow_window`] found none), or written its window before
        // this bind's: the rate in force after the last write wins. A few rounds, as
        // each write can race one more change; the next bind settles any beyond.
        let mut written = written;
        for _ in 0..WINDOW_ROUNDS {
            let config = self.consumer_config(start);
            if config.max_ack_pending == written {
                break;
            }
            written = config.max_ack_pending;
            bound = stream
                .update_consumer(config)
                .await
                .map_err(|e| format!("consumer {}: {e}", self.consumer_name))?;
        }
        Ok(bound)
    }

    /// Brings the consumer's window in line with the rate limit in force, by an update
    /// of a consumer that exists, and nothing else: a bind run beside the serve loop's
    /// could make a consumer that was let go, or take back and reset one twice. An
    /// `ordered` endpoint's window is one message whatever the rate (a wider one is a
    /// drain's, which its bind must see); a parked endpoint has no consumer, and its
    /// next bind takes the rate in force. The update waits for a bind turn: a change
    /// of `[defaults] rate_limit` reaches every endpoint at once.
    pub(super) async fn follow_window(&self) -> Result<(), String> {
        if self.endpoint.ordered || self.is_parked() {
            return Ok(());
        }
        let _turn = self.shared.binds.acquire().await;
        let stream = self.own_stream().await?;
        let Some(info) = self.consumer_on(&stream).await? else {
            return Ok(());
        };
        let config = self.consumer_config(info.config.deliver_policy);
        if config.max_ack_pending == info.config.max_ack_pending {
            return Ok(());
        }
        stream
            .update_consumer(config)
            .await
            .map(|_| ())
            .map_err(|e| format!("consumer {}: {e}", self.consumer_name))
    }

    /// Where the consumer starts: at the stream's first message, but for an `ordered`
    /// endpoint's consumer on the source stream while fan-out is on, which
    /// [`Worker::start_source_consumer`] makes when there is none (the fan-out makes
    /// it before it leaves the endpoint out of a message; this covers a bind that
    /// comes first). The fan-out may have handled messages after a new runtime
    /// endpoint's recent `skip_through` without it: a worker that replaced none starts
    /// there if that is earlier (what it skips is acked without a request). One that
    /// replaced a worker (made `ordered` by a change) starts at the fan-out's ack
    /// floor: what came before was copied for it. A consumer that exists keeps where
    /// it started: JetStream does not change that on an update. Also says whether the
    /// consumer exists already (one a drain had is taken back first,
    /// [`Worker::take_back`]).
    async fn start(&self, stream: &Stream<()>) -> Result<(DeliverPolicy, bool), String> {
        if self.lazy || self.shared.work.is_none() {
            return Ok((DeliverPolicy::All, false));
        }
        // Taken back, but deleted meanwhile: it had handed out everything up to its
        // last delivery before, what came after is made again.
        let mut delivered_before = None;
        if let Some(info) = self.consumer_on(stream).await? {
            if !drained(&info) {
                if self.replaced_copy_reader.load(Ordering::Relaxed) {
                    self.forget_copies_ahead(&info).await?;
                }
                return Ok((info.config.deliver_policy, true));
            }
            if self.take_back(stream).await? == TakenBack::Kept {
                return Ok((info.config.deliver_policy, true));
            }
            delivered_before = Some(info.delivered.stream_sequence);
        }
        let fan_out = fan_out_consumer(&self.shared.consumer_prefix);
        let handled = crate::store::ack_floor(stream, &fan_out).await?;
        let handled = delivered_before.map_or(handled, |d| handled.min(d));
        let recent = (self.endpoint.skip)
            .filter(|_| !self.replaced_one.load(Ordering::Relaxed))
            .and_then(|s| s.recent_through());
        let handled = recent.map_or(handled, |through| handled.min(through));
        Ok((self.make_source_consumer(stream, handled).await?, false))
    }

    /// The stream the endpoint's consumer reads ([`Worker::consumer_stream`]).
    async fn own_stream(&self) -> Result<Stream<()>, String> {
        let name = self.consumer_stream();
        self.shared
            .js
            .get_stream_no_info(name)
            .await
            .map_err(|e| format!("stream {name}: {e}"))
    }

    /// The endpoint's consumer on `stream`, `None` when there is none.
    async fn consumer_on(&self, stream: &Stream<()>) -> Result<Option<consumer::Info>, String> {
        match stream.consumer_info(&self.consumer_name).await {
            Ok(info) => Ok(Some(info)),
            Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("consumer {}: {e}", self.consumer_name)),
        }
    }

    /// Stops this process's drain of the endpoint's consumer on the source stream, if
    /// one runs (`worker::drains`), and waits for its end.
    async fn stop_drain(&self) -> Result<(), String> {
        match self
            .shared
            .drains
            .stop(&self.consumer_name, DRAIN_STOP)
            .await
        {
            true => Ok(()),
            false => Err(format!(
                "consumer {}: its drain did not stop within {DRAIN_STOP:?}",
                self.consumer_name
            )),
        }
    }

    /// Takes the endpoint's consumer on the source stream back from the drain that
    /// moved its messages out as copies while the endpoint read copies
    /// (`fanout::leftover`), now that it is `ordered` again and reads that consumer.
    /// The drain here stops first. Then, if copies are waiting of messages the
    /// consumer has already handed out, or it has deliveries not acked (the drain's
    /// last batch, a retry waiting out its delay), the consumer is reset to the oldest
    /// of those copies or to right after its ack floor, whichever is earlier, so
    /// everything from there comes again, in order; and the copies go. A replica that
    /// has not seen the change yet may go on draining the consumer: apply such a change
    /// to every replica at about the same time. Without the reset (nats-server before
    /// 2.14, or a source stream that dropped messages at its head since) the copies
    /// stay, and the messages they hold are not delivered to the endpoint while it is
    /// `ordered`. A reset skips messages deleted from the stream's interior; if a copy
    /// is of one, the copies stay too ([`Worker::forget_copies`]). A reset starts the
    /// attempts of what it delivers again at 1.
    async fn take_back(&self, stream: &Stream<()>) -> Result<TakenBack, String> {
        let Some(work) = self.shared.work.as_ref() else {
            return Ok(TakenBack::Kept);
        };
        self.stop_drain().await?;
        let Some(info) = self.consumer_on(stream).await? else {
            return Ok(TakenBack::Gone);
        };
        let oldest = work
            .oldest_waiting(&self.shared.js, &self.endpoint.name, &self.consumer_name)
            .await
            .map_err(|e| e.to_string())?;
        let moved_out = oldest.filter(|o| *o <= info.delivered.stream_sequence);
        if moved_out.is_some() || info.num_ack_pending > 0 {
            let after_floor = info.ack_floor.stream_sequence + 1;
            let from = moved_out.map_or(after_floor, |o| o.min(after_floor));
            match self.reset_from(from).await {
                Ok(at) => {
                    tracing::info!(endpoint = %self.endpoint.name, from = at, "ordered endpoint's consumer reset to the oldest message its drain had moved out as a copy")
                }
                Err(Reset::Failed(e)) => return Err(e),
                Err(Reset::Refused(e)) if moved_out.is_some() => {
                    tracing::warn!(endpoint = %self.endpoint.name, error = %e, "the ordered endpoint's consumer cannot be reset: the messages its drain moved out as copies wait there, undelivered while it is ordered");
                    return Ok(TakenBack::Kept);
                }
                Err(Reset::Refused(e)) => {
                    tracing::debug!(endpoint = %self.endpoint.name, error = %e, "the ordered endpoint's consumer not reset: its deliveries not acked come back after their ack_wait");
                }
            }
        }
        if oldest.is_some() {
            // Copies of messages the consumer delivers (again): read later, by the
            // endpoint reading copies again, they would come twice. Tried again with
            // the bind when this fails; the reset is not repeated, since the consumer
            // has handed none of them out since.
            self.forget_copies(oldest).await?;
        }
        Ok(TakenBack::Kept)
    }

    /// Removes the endpoint's copies and its consumer on the work stream
    /// (`WorkStream::forget`), once it reads the source stream from before all of them;
    /// whether it did. Copies of messages the source stream no longer holds are kept:
    /// they are the only record left ([`Worker::source_holds_copies`]). Noted first
    /// (`store::forgotten`, with the copies' range and how far the endpoint's consumer
    /// had acked): a drain that stores one of them again within the work stream's
    /// duplicate window then gives it an id of its own, where the old id would have
    /// the copy dropped as a duplicate of the one removed. `oldest` is the source
    /// sequence of the oldest copy waiting, as the caller read it
    /// ([`WorkStream::oldest_waiting`](crate::store::work_stream::WorkStream::oldest_waiting)):
    /// a copy stored since is of a newer message.
    pub async fn forget_copies(&self, oldest: Option<u64>) -> Result<bool, String> {
        let Some(work) = self.shared.work.as_ref() else {
            return Ok(false);
        };
        let failed = |e: String| format!("removing the ordered endpoint's former copies: {e}");
        if let Some(oldest) = oldest {
            if !self
                .source_holds_copies(work, oldest)
                .await
                .map_err(failed)?
            {
                tracing::warn!(endpoint = %self.endpoint.name, from = oldest, "the source stream no longer holds every message the ordered endpoint's copies are of: the copies stay, undelivered while it is ordered");
                return Ok(false);
            }
        }
        let own = work.name_of(&self.endpoint.name);
        let stream = (self.shared.js.get_stream(own).await)
            .map_err(|e| failed(format!("stream {own}: {e}")))?;
        let through = stream.cached_info().state.last_sequence;
        let acked = match stream.consumer_info(&self.consumer_name).await {
            Ok(info) => info.ack_floor.stream_sequence,
            Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => 0,
            Err(e) => return Err(failed(e.to_string())),
        };
        (self.shared.forgotten)
            .note(&self.endpoint.name, acked, through)
            .await
            .map_err(|e| failed(e.to_string()))?;
        work.forget(&self.shared.js, &self.endpoint.name, &self.consumer_name)
            .await
            .map_err(|e| failed(e.to_string()))?;
        // A copy stored between the note and the purge (the fan-out finishing a copy
        // under the targets before) went too: the note is widened to it.
        let after = (self.shared.js.get_stream(own).await)
            .map_err(|e| failed(format!("stream {own}: {e}")))?
            .cached_info()
            .state
            .last_sequence;
        if after > through {
            (self.shared.forgotten)
                .note(&self.endpoint.name, acked, after)
                .await
                .map_err(|e| failed(e.to_string()))?;
        }
        Ok(true)
    }

    /// Removes the copies of an endpoint made `ordered` whose consumer on the source
    /// stream (`info`) no drain has touched, when they are all of messages it has not
    /// handed out yet: it delivers those itself, and the copies (those its worker held
    /// among them) would come again if the endpoint read copies again.
    async fn forget_copies_ahead(&self, info: &consumer::Info) -> Result<(), String> {
        let Some(work) = self.shared.work.as_ref() else {
            return Ok(());
        };
        let oldest = work
            .oldest_waiting(&self.shared.js, &self.endpoint.name, &self.consumer_name)
            .await
            .map_err(|e| e.to_string())?;
        if oldest.is_some_and(|o| o > info.delivered.stream_sequence) {
            self.forget_copies(oldest).await?;
        }
        Ok(())
    }

    /// Resets the endpoint's consumer on the source stream to deliver from `from` on
    /// ([`crate::store::reset_consumer`]); where it was reset to. Refused for good
    /// (tried again, it would fail again) when the server predates consumer resets,
    /// when the stream dropped messages from `from` on at its head or holds them under
    /// interest or work-queue retention (a reset would skip them, and which are gone is
    /// unknown), or when the server says no.
    async fn reset_from(&self, from: u64) -> Result<u64, Reset> {
        let js = &self.shared.js;
        if !resets_consumers(&js.client().server_info().version) {
            return Err(Reset::Refused(
                "the server is older than nats-server 2.14, which resets consumers".into(),
            ));
        }
        let name = &self.shared.stream_name;
        // Messages deleted from the stream's interior are skipped by the reset too, but
        // their copies are kept by the removal that follows it (`forget_copies`).
        let held = crate::store::held_from(js, name, from)
            .await
            .map_err(Reset::Failed)?;
        if held == HeldFrom::NotAll {
            return Err(Reset::Refused(format!(
                "stream {name} no longer holds every message from sequence {from} on"
            )));
        }
        let reset = crate::store::reset_consumer(js, name, &self.consumer_name, from).await;
        match reset {
            Ok(at) => {
                self.resets_unanswered.store(0, Ordering::Relaxed);
                Ok(at)
            }
            Err(crate::store::ResetError::Refused(e)) => {
                self.resets_unanswered.store(0, Ordering::Relaxed);
                Err(Reset::Refused(e))
            }
            // A server that never answers (a consumer leader older than the server
            // this process talks to, in a rolling upgrade) would keep the endpoint
            // unbound: after a few tries it counts as a refusal.
            Err(crate::store::ResetError::Failed(e)) => {
                match self.resets_unanswered.fetch_add(1, Ordering::Relaxed) + 1 {
                    n if n >= RESET_TRIES => Err(Reset::Refused(format!("{e} ({n} times)"))),
                    _ => Err(Reset::Failed(e)),
                }
            }
        }
    }

    /// Whether the source stream still holds the message of each of the endpoint's
    /// copies waiting, the oldest of which is of sequence `oldest`. Until then, a copy
    /// may be the only record left of its message, and the copies are kept. With
    /// messages deleted from the stream's interior since, the copies are read to tell
    /// whether one is of such a message; with more deletes than are listed, they are
    /// kept.
    async fn source_holds_copies(&self, work: &WorkStream, oldest: u64) -> Result<bool, String> {
        let js = &self.shared.js;
        match crate::store::held_from(js, &self.shared.stream_name, oldest).await? {
            HeldFrom::All => Ok(true),
            HeldFrom::NotAll | HeldFrom::AllBut(None) => Ok(false),
            HeldFrom::AllBut(Some(deleted)) => work
                .waits_for_any(js, &self.endpoint.name, &self.consumer_name, &deleted)
                .await
                .map(|any| !any)
                .map_err(|e| e.to_string()),
        }
    }

    /// Creates an `ordered` endpoint's consumer on the source stream (`stream`) when it
    /// has none, starting after `handled`, and says whether it did. The fan-out calls
    /// this before it leaves the endpoint out of any message, with its ack floor, so
    /// that an endpoint made `ordered` neither receives the stream again from its start
    /// nor misses the messages in between. Copies of it still waiting (a backlog, a
    /// retry waiting out its delay, copies on the lane, copies made while this failed)
    /// would never be read again: the consumer starts at the oldest of their source
    /// messages instead when that is earlier, and the copies go once it exists. A
    /// message delivered from a copy after that point comes twice; none is missed.
    /// Nothing to do for an endpoint that reads copies.
    pub async fn start_source_consumer(
        &self,
        stream: &Stream<()>,
        handled: u64,
    ) -> Result<SourceConsumer, String> {
        if self.lazy || self.shared.work.is_none() {
            return Ok(SourceConsumer::Own);
        }
        let _turn = self.shared.binds.acquire().await;
        match self.consumer_on(stream).await? {
            Some(info) if drained(&info) => return Ok(SourceConsumer::Drained),
            Some(_) => return Ok(SourceConsumer::Own),
            None => {}
        }
        self.make_source_consumer(stream, handled)
            .await
            .map(|_| SourceConsumer::Made)
    }

    /// Makes the consumer [`Worker::start_source_consumer`] describes, which does not
    /// exist yet, within a turn of `binds` already taken; returns where it starts.
    async fn make_source_consumer(
        &self,
        stream: &Stream<()>,
        handled: u64,
    ) -> Result<DeliverPolicy, String> {
        let Some(work) = self.shared.work.as_ref() else {
            return Ok(DeliverPolicy::All);
        };
        let waiting = work
            .oldest_waiting(&self.shared.js, &self.endpoint.name, &self.consumer_name)
            .await
            .map_err(|e| e.to_string())?;
        let handled = waiting.map_or(handled, |oldest| handled.min(oldest.saturating_sub(1)));
        let start = start_after(handled);
        stream
            .create_consumer(self.consumer_config(start))
            .await
            .map_err(|e| format!("consumer {}: {e}", self.consumer_name))?;
        if waiting.is_some() {
            tracing::info!(endpoint = %self.endpoint.name, from = handled + 1, "ordered endpoint reads the source stream from its oldest copy still waiting");
        }
        // Every copy of it left is of a message the new consumer delivers: read again
        // later (the endpoint reading copies again) it would come twice.
        if let Err(e) = self.forget_copies(waiting).await {
            tracing::warn!(endpoint = %self.endpoint.name, error = %e, "ordered endpoint's former copies kept");
        }
        Ok(start)
    }

    /// Sets `natshook_consumer_pending` from the consumer's info, listed for every
    /// worker of a stream at once (`None`: the consumer does not exist yet, and the
    /// last value stays).
    pub fn show_pending(&self, info: Option<&consumer::Info>) {
        if self.is_parked() {
            if self.metrics.created() {
                self.metrics.pending.set(0);
            }
            return;
        }
        if let Some(info) = info {
            self.metrics.pending.set(unsettled(info));
        }
    }

    /// Deletes a fan-out endpoint's consumer when it holds nothing: no copy waiting, none
    /// delivered and unacked (a retry waiting out its delay counts as unacked), none in
    /// flight here. Its acked copies are removed first, since the next consumer reads
    /// the subject from its start: a copy stored meanwhile stays, and its wake starts
    /// that consumer.
    pub(super) async fn let_consumer_go(&self, permits: &Semaphore) -> bool {
        if permits.available_permits() < self.endpoint.concurrency {
            return false;
        }
        let Some(work) = &self.shared.work else {
            return false;
        };
        let Ok(stream) = self.own_stream().await else {
            return false;
        };
        let acked_to = match stream.consumer_info(&self.consumer_name).await {
            Ok(info) if info.num_pending == 0 && info.num_ack_pending == 0 => {
                info.ack_floor.stream_sequence
            }
            _ => return false,
        };
        // Kept while its acked copies are: deleted without them, the next consumer would
        // deliver them again.
        if let Err(e) = work.release(&stream, &self.endpoint.name, acked_to).await {
            tracing::debug!(endpoint = %self.endpoint.name, error = %e, "idle consumer kept");
            return false;
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
    pub(super) async fn pull(&self, consumer: &PullConsumer) -> Result<PullStream, String> {
        let batch = self.endpoint.concurrency.clamp(16, 256);
        // A fan-out endpoint's consumer exists only while it has work.
        let liveness = if self.lazy {
            Liveness::Busy
        } else {
            Liveness::OneOf(self.shared.endpoints())
        };
        pull_stream::messages(consumer, batch, liveness).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_endpoint;

    fn endpoint(settings: &str) -> Endpoint {
        test_endpoint(&format!("secret = \"s\"\n{settings}"))
    }

    #[test]
    fn consumer_resets_come_with_nats_server_2_14() {
        for (version, resets) in [
            ("2.14.0", true),
            ("2.15.1", true),
            ("3.0.0", true),
            ("2.14.0-beta.1", true),
            ("2.13.9", false),
            ("2.10.24", false),
            ("2.9.25", false),
            ("", false),
        ] {
            assert_eq!(resets_consumers(version), resets, "{version}");
        }
    }

    #[test]
    fn only_an_attempt_that_can_outlast_a_third_of_ack_wait_extends_it() {
        assert_eq!(progress_every(&endpoint("timeout = \"10s\"")), None);
        assert_eq!(progress_every(&endpoint("timeout = \"2s\"")), None);
        assert_eq!(
            progress_every(&endpoint("timeout = \"40s\"")),
            Some(Duration::from_secs(20))
        );
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
