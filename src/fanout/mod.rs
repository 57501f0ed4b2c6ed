//! `[delivery] fan_out`: one durable consumer on the source stream copies each message
//! to the work stream, once per endpoint that delivers it, and acks the source
//! message only when every copy is stored. Each endpoint then reads its own subject
//! of the work stream (see `worker`), with a consumer that exists only while it has
//! work: the source stream needs one consumer however many endpoints there are, and
//! an idle endpoint costs no consumer, no pull request and no heartbeat.
//!
//! Nothing is lost on the way: a source message whose copies were not all stored is
//! NAKed and copied again, and the work stream drops a copy it already holds (its
//! `Nats-Msg-Id` names the source message and the endpoint). Retries, holds and pauses
//! happen on the endpoint's copies, exactly as on a consumer of the source stream.
//!
//! An endpoint learns that it has work from the copy this process stored, or from a
//! scan of the work stream's subjects, every few seconds and at start: that scan finds
//! work stored by another replica, or left by a process that died. Before it looks,
//! the scan removes the copies each endpoint's consumer has acked
//! ([`WorkStream::release`]), so a busy endpoint's subject holds a few seconds of
//! done work at most.

mod catch_up;
pub mod lane;
pub mod leftover;
mod scan;
pub mod targets;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{pull, AckPolicy, DeliverPolicy},
    context::PublishErrorKind,
    message::AckKind,
    stream::RetentionPolicy,
};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use self::scan::scan;
pub use self::targets::{Target, Targets};

use crate::backoff::Backoff;
use crate::store;
use crate::store::copy::{self, copy_headers, header_pairs, SourceFacts};
use crate::store::pull_stream::{self, Liveness, PullStream};
use crate::store::work_stream::WorkStream;
use crate::worker::{SourceConsumer, Worker};

/// Source messages being copied at once: enough to keep the work stream's publish
/// acks pipelined, few enough that a stalled JetStream holds little.
const IN_FLIGHT: usize = 256;

/// How long a failed copy waits before its source message comes back.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// How often the fan-out tries again to make an ordered endpoint's consumer that could
/// not be made.
const OWN_CONSUMER_RETRY: Duration = Duration::from_secs(10);

pub use crate::store::work_stream::fan_out_consumer as consumer_name;

/// The fan-out consumer of one natshook deployment (shared by its replicas).
pub struct FanOut {
    js: jetstream::Context,
    stream: String,
    consumer: String,
    work: WorkStream,
    targets: watch::Receiver<Arc<Targets>>,
    bound: Arc<AtomicBool>,
    /// Endpoints reading the source stream themselves whose consumer there is known to
    /// exist (made or found since they were last among the targets).
    own_consumers: HashSet<String>,
    /// Those whose consumer could not be made: copied for until it is.
    copying_for: HashSet<String>,
    /// The targets of the last bind: an endpoint that joins later is caught up
    /// ([`catch_up`]), and one that changed how it is served takes that over
    /// ([`FanOut::carry_over`]).
    previous: Arc<Targets>,
    /// Set at the end of this process's first bind.
    bound_once: bool,
    /// When this process made the fan-out.
    started: std::time::SystemTime,
    /// Those whose catch-up failed: tried again at the next bind, however long ago
    /// they started, and a bind comes within [`OWN_CONSUMER_RETRY`].
    catching_up: Vec<(Target, u64)>,
    /// The last source sequence copied under the targets in force (from the pull's
    /// start: where the consumer had delivered): a change of targets catches joined
    /// endpoints up to here, since what the pull brought after it is copied under the
    /// new targets, and copied both ways it could come twice.
    handled: u64,
    /// When a missing work stream was last made again ([`restore_work`]).
    work_restored: Option<tokio::time::Instant>,
}

impl FanOut {
    pub fn new(
        js: jetstream::Context,
        stream: String,
        consumer_prefix: &str,
        work: WorkStream,
        targets: watch::Receiver<Arc<Targets>>,
    ) -> Self {
        Self {
            js,
            stream,
            consumer: consumer_name(consumer_prefix),
            work,
            targets,
            bound: Arc::new(AtomicBool::new(false)),
            own_consumers: HashSet::new(),
            copying_for: HashSet::new(),
            previous: Arc::default(),
            bound_once: false,
            started: std::time::SystemTime::now(),
            catching_up: Vec::new(),
            handled: 0,
            work_restored: None,
        }
    }

    /// The earliest start the catch-up looks for ([`catch_up::since`]).
    fn since(&self) -> std::time::SystemTime {
        catch_up::since(!self.bound_once, self.started)
    }

    /// True while the fan-out consumer is bound: readiness waits for it.
    pub fn bound(&self) -> Arc<AtomicBool> {
        self.bound.clone()
    }

    fn consumer_config(&self, targets: &Targets) -> pull::Config {
        let (filter_subject, filter_subjects) = filters(targets);
        pull::Config {
            durable_name: Some(self.consumer.clone()),
            description: Some("natshook: copies each message to its endpoints".into()),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_deliver: -1,
            filter_subject,
            filter_subjects,
            max_ack_pending: (IN_FLIGHT * 2) as i64,
            ..Default::default()
        }
    }

    /// Copies messages until `stop`; re-binds after errors and when the mapping changes
    /// (the consumer's filters follow it).
    pub async fn run(mut self, stop: CancellationToken) {
        let mut retry = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
        while !stop.is_cancelled() {
            // One set of targets at a time: a change applies once the endpoints made
            // `ordered` have their own consumers.
            let current = self.targets.borrow_and_update().clone();
            let (mut current, mut messages) = match self.bind(current).await {
                Ok(m) => m,
                Err(e) => {
                    self.bound.store(false, Ordering::Relaxed);
                    tracing::warn!(consumer = %self.consumer, error = %e, "cannot bind the fan-out consumer; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(retry.next_delay()) => continue,
                    }
                }
            };
            self.bound.store(true, Ordering::Relaxed);
            retry.reset();
            let failed = loop {
                match self.copy_all(&mut messages, current.clone(), &stop).await {
                    Pulled::Changed if !stop.is_cancelled() => {}
                    Pulled::Changed | Pulled::Ended => break false,
                    Pulled::Failed => break true,
                }
                // New endpoints, or endpoints changed: the pull goes on under the new
                // targets as long as the consumer's filters stay (a change of the
                // mappings makes the consumer again). Dropping the pull would leave
                // what it had brought and not copied yet to wait out its ack timer.
                let next = self.targets.borrow_and_update().clone();
                if filters(&next) != filters(&current) {
                    break false;
                }
                match self.apply(next).await {
                    Ok(applied) => current = applied,
                    Err(e) => {
                        tracing::info!(consumer = %self.consumer, error = %e, "cannot apply new endpoints to the pull; binding again");
                        break false;
                    }
                }
            };
            // What the pull brought and nothing copied goes back at once.
            loop {
                match messages.next().now_or_never() {
                    Some(Some(Ok(msg))) => {
                        let _ = msg.ack_with(AckKind::Nak(None)).await;
                    }
                    Some(Some(Err(_))) => {}
                    Some(None) | None => break,
                }
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

    /// Applies new `targets` to the pull under way: the endpoints made `ordered` get
    /// their consumers, and those that joined are caught up to the last message
    /// copied under the targets before ([`FanOut::handled`]); what this pull brought
    /// and has yet to copy is copied under the new targets.
    async fn apply(&mut self, targets: Arc<Targets>) -> Result<Arc<Targets>, String> {
        let (stream, targets) = self.prepare(targets).await?;
        self.catch_up(&stream, &targets, self.handled).await;
        Ok(targets)
    }

    /// Binds the fan-out consumer for `targets`, after [`FanOut::start_own_readers`];
    /// returns the targets to copy for in this pull.
    async fn bind(&mut self, targets: Arc<Targets>) -> Result<(Arc<Targets>, PullStream), String> {
        let (stream, targets) = self.prepare(targets).await?;
        let consumer = stream
            .create_consumer(self.consumer_config(&targets))
            .await
            .map_err(|e| format!("consumer {}: {e}", self.consumer))?;
        self.handled = consumer.cached_info().delivered.stream_sequence;
        self.catch_up(&stream, &targets, self.handled).await;
        let messages = pull_stream::messages(&consumer, IN_FLIGHT, Liveness::Busy).await?;
        Ok((targets, messages))
    }

    /// The source stream, and `targets` as the fan-out copies for them once the
    /// endpoints made `ordered` have their consumers ([`FanOut::start_own_readers`]) and
    /// the running ones know what changed for them ([`FanOut::carry_over`]).
    async fn prepare(
        &mut self,
        targets: Arc<Targets>,
    ) -> Result<(jetstream::stream::Stream<()>, Arc<Targets>), String> {
        let stream = self
            .js
            .get_stream_no_info(&self.stream)
            .await
            .map_err(|e| format!("stream {}: {e}", self.stream))?;
        let targets = self.start_own_readers(&stream, targets).await?;
        self.carry_over(&targets);
        Ok((stream, targets))
    }

    /// Copies for the endpoints that joined the targets since the last bind what the
    /// fan-out handled without them after their start, up to `through`, where the
    /// fan-out consumer had delivered when it bound with them ([`catch_up`]). One
    /// whose catch-up failed is tried again at the next bind, with more to copy.
    async fn catch_up(
        &mut self,
        stream: &jetstream::stream::Stream<()>,
        targets: &Arc<Targets>,
        through: u64,
    ) {
        let mut joined = catch_up::joined(&self.previous, targets, self.since());
        for (target, after) in std::mem::take(&mut self.catching_up) {
            // Still to catch up as long as it skips the same backlog, whether it was
            // enabled, disabled or changed otherwise meanwhile.
            let through = |t: &Target| t.endpoint().skip.and_then(|s| s.through);
            let still =
                (targets.get(&target.endpoint().name)).filter(|t| through(t) == through(&target));
            if let Some(t) = still {
                if !joined.iter().any(|(w, _)| w.same(t)) {
                    joined.push((t.clone(), after));
                }
            }
        }
        self.previous = Arc::clone(targets);
        self.bound_once = true;
        if joined.is_empty() {
            return;
        }
        if let Err(e) =
            catch_up::catch_up(&self.js, &self.work, stream, targets, &joined, through).await
        {
            tracing::warn!(error = %e, "cannot copy what new endpoints missed yet; trying again shortly");
            self.catching_up = joined;
        }
    }

    /// Tells the running endpoints of `targets` what the last bind's targets knew of
    /// them. One that read the source stream itself (it was `ordered`), or whose
    /// worker was still draining such a consumer, has a former consumer there whose
    /// messages move to its own subject (`leftover`): its copies go there too, off the
    /// lane, so each message is stored once. So do those of one that was held
    /// (disabled), which may have been `ordered` before that, until the poller finds
    /// no such consumer (within 5 s); its copies wait on its own subject, and woken it
    /// takes them, oldest first, before newer ones.
    fn carry_over(&self, targets: &Targets) {
        for w in targets.all().iter().filter_map(Target::worker) {
            let name = &w.endpoint().name;
            let former = match self.previous.get(name) {
                Some(Target::Held(_)) => {
                    w.wake();
                    true
                }
                Some(Target::Serving(p)) => !Arc::ptr_eq(p, w) && p.has_former_consumer(),
                None => self.previous.reads_source(name),
            };
            if former {
                w.note_former_consumer(true);
            }
        }
    }

    /// Makes sure every endpoint of `targets` that reads the source stream itself has
    /// its consumer there before the fan-out leaves it out of a message. One that has
    /// none yet (an endpoint just made `ordered`) gets it starting right after the
    /// fan-out consumer's ack floor, since the fan-out handled everything up to it
    /// under the targets before, or at the oldest of its copies still waiting
    /// ([`Worker::start_source_consumer`]). One whose consumer cannot be made is copied
    /// for meanwhile, so nothing passes it by, and tried again every
    /// [`OWN_CONSUMER_RETRY`]; no endpoint's failure holds the others up.
    async fn start_own_readers(
        &mut self,
        stream: &jetstream::stream::Stream<()>,
        targets: Arc<Targets>,
    ) -> Result<Arc<Targets>, String> {
        let own: HashSet<&str> = targets
            .own_readers()
            .iter()
            .map(|w| w.endpoint().name.as_str())
            .collect();
        self.own_consumers.retain(|n| own.contains(n.as_str()));
        self.copying_for.retain(|n| own.contains(n.as_str()));
        let unsettled: Vec<&Arc<Worker>> = targets
            .own_readers()
            .iter()
            .filter(|w| !self.own_consumers.contains(&w.endpoint().name))
            .collect();
        if unsettled.is_empty() {
            return Ok(targets);
        }
        let handled = store::ack_floor(stream, &self.consumer).await?;
        for worker in unsettled {
            let name = &worker.endpoint().name;
            // New and recent: the fan-out handled the messages after its skip_through
            // without it, so its consumer starts right after that.
            let recent = (!self.previous.knows(name))
                .then(|| catch_up::recent_start(worker.endpoint(), self.since()))
                .flatten();
            let handled = recent.unwrap_or(handled);
            match worker.start_source_consumer(stream, handled).await {
                Ok(found) => {
                    // Copied for while its consumer existed (its own bind made it, or
                    // it was held while disabled): those copies are of messages that
                    // consumer delivers. A consumer made now starts at the oldest copy;
                    // one a drain has moved messages out of is reset by the endpoint's
                    // bind, which needs the copies to know where.
                    let was_copying = self.copying_for.remove(name);
                    let was_held = matches!(self.previous.get(name), Some(Target::Held(_)));
                    if (was_copying || was_held) && found == SourceConsumer::Own {
                        let oldest = (self.work)
                            .oldest_waiting(&self.js, name, worker.consumer_name())
                            .await
                            .map_err(|e| e.to_string());
                        let forgot = match oldest {
                            Ok(oldest) => worker.forget_copies(oldest).await,
                            Err(e) => Err(e),
                        };
                        if let Err(e) = forgot {
                            tracing::warn!(endpoint = %name, error = %e, "ordered endpoint's copies not removed");
                        }
                    }
                    self.own_consumers.insert(name.clone());
                }
                Err(e) => {
                    tracing::warn!(endpoint = %name, error = %e, "cannot create the ordered endpoint's consumer; its messages wait as copies meanwhile");
                    self.copying_for.insert(name.clone());
                }
            }
        }
        Ok(match self.copying_for.is_empty() {
            true => targets,
            false => Arc::new(targets.copying_also(&self.copying_for)),
        })
    }

    /// Feeds the pull stream under `current` until something changes. Copies in
    /// progress finish (or NAK) before it returns, so none is left to wait out its ack
    /// timer.
    async fn copy_all(
        &mut self,
        messages: &mut PullStream,
        current: Arc<Targets>,
        stop: &CancellationToken,
    ) -> Pulled {
        // Copies borrow the context and the work stream's names: cloning them would
        // cost every source message a string allocation per shard.
        let Self {
            js,
            work,
            targets,
            consumer,
            copying_for,
            catching_up,
            handled,
            work_restored,
            ..
        } = self;
        let mut copying = FuturesUnordered::new();
        // Once for the whole pull: a timer made in the loop would start again with
        // every message.
        let retry_own = tokio::time::sleep(OWN_CONSUMER_RETRY);
        tokio::pin!(retry_own);
        let pulled = loop {
            tokio::select! {
                _ = stop.cancelled() => break Pulled::Ended,
                Ok(()) = targets.changed() => break Pulled::Changed,
                () = &mut retry_own, if !copying_for.is_empty() || !catching_up.is_empty() => {
                    // Another try at the ordered endpoints' consumers, or at a
                    // catch-up that failed.
                    break Pulled::Changed;
                }
                Some((sequence, missing)) = copying.next(), if !copying.is_empty() => {
                    *handled = (*handled).max(sequence);
                    if missing {
                        restore_work(js, work, work_restored).await;
                    }
                }
                next = messages.next(), if copying.len() < IN_FLIGHT => match next {
                    Some(Ok(msg)) => {
                        copying.push(copy(js, work, current.clone(), msg));
                    }
                    Some(Err(e)) => {
                        tracing::info!(consumer = %consumer, error = %e, "fan-out fetch ended; pulling again");
                        match e.kind() {
                            pull::MessagesErrorKind::MissingHeartbeat => break Pulled::Ended,
                            _ => break Pulled::Failed,
                        }
                    }
                    None => break Pulled::Ended,
                },
            }
        };
        while let Some((sequence, _)) = copying.next().await {
            *handled = (*handled).max(sequence);
        }
        pulled
    }
}

/// The fan-out consumer's filter subjects under `targets`: one per rule, or the whole
/// stream when rules overlap, which JetStream refuses.
fn filters(targets: &Targets) -> (String, Vec<String>) {
    let rules = targets.router().rules();
    let subjects: Vec<String> = rules
        .iter()
        .map(|r| r.subject.as_str().to_string())
        .collect();
    let overlapping = rules.iter().enumerate().any(|(i, a)| {
        rules[i + 1..]
            .iter()
            .any(|b| a.subject.overlaps(&b.subject))
    });
    match subjects.len() {
        _ if overlapping => (String::new(), Vec::new()),
        1 => (subjects[0].clone(), Vec::new()),
        _ => (String::new(), subjects),
    }
}

/// How a pull ended.
enum Pulled {
    /// The targets changed, or a retry of an ordered endpoint's consumer or of a
    /// catch-up is due: the pull can go on under the new targets.
    Changed,
    /// Stopped, or the pull stream ended: bind again.
    Ended,
    /// A fetch failed: bind again after a pause.
    Failed,
}

/// Where `target`'s copy with `headers` and a payload of `payload_len` bytes goes, and
/// whether that is the lane: the lane while the endpoint takes lane copies and the copy
/// could leave the lane again ([`copy::fits_off_lane`]), else the endpoint's own
/// subject. The catch-up chooses as the fan-out does, so that a message copied both
/// ways is one message of one stream.
fn copy_subject(
    js: &jetstream::Context,
    work: &WorkStream,
    target: &Target,
    headers: &async_nats::HeaderMap,
    payload_len: usize,
) -> (String, bool) {
    let name = &target.endpoint().name;
    if target.takes_lane() && copy::fits_off_lane(headers, payload_len, js.client().max_payload()) {
        (work.lane_subject(name), true)
    } else {
        (work.subject(name), false)
    }
}

/// Copies one source message to each endpoint that delivers it, then acks it; NAKs it
/// when a copy was not stored. A message no rule maps, or no endpoint wants, is acked
/// (`watch_unmapped` counts the unmapped ones). Resolves to the message's source
/// sequence ([`FanOut::handled`]; 0 for one whose metadata does not parse), and whether
/// a copy found no stream to store it ([`restore_work`]).
///
/// An `async` block rather than an `async fn`: an `async fn` keeps its arguments twice
/// in its state, and this state is copied into the heap once per source message.
#[allow(clippy::manual_async_fn)]
fn copy<'a>(
    js: &'a jetstream::Context,
    work: &'a WorkStream,
    targets: Arc<Targets>,
    msg: jetstream::Message,
) -> impl std::future::Future<Output = (u64, bool)> + 'a {
    async move {
        let Ok(info) = msg.info() else {
            let _ = msg.ack_with(AckKind::Nak(None)).await;
            return (0, false);
        };
        let sequence = info.stream_sequence;
        let facts = SourceFacts::of_source(&msg, &info);
        let headers = header_pairs(&msg, false);
        let Some(mapped) = targets.router().route(&facts.subject, headers) else {
            let _ = msg.ack().await;
            return (sequence, false);
        };
        let mut acks = Vec::new();
        let mut woken = Vec::new();
        // Endpoints whose copy would never fit, dead-lettered once every other copy is
        // stored: a copy that fails sends the message round again, which must not
        // write their dead letters twice.
        let mut oversize = Vec::new();
        for worker in targets.of(&mapped) {
            let name = &worker.endpoint().name;
            let h = copy_headers(msg.headers.as_ref(), &facts, name);
            let (subject, on_lane) = copy_subject(js, work, worker, &h, msg.payload.len());
            match js
                .publish_with_headers(subject, h, msg.payload.clone())
                .await
            {
                Ok(ack) => {
                    acks.push(ack);
                    if !on_lane {
                        woken.push(worker.clone());
                    }
                }
                Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                    let reason = copy::too_large(&e);
                    match worker.worker() {
                        Some(w) => oversize.push((w.clone(), reason)),
                        // Its copy would be acked unsent.
                        None if !worker.endpoint().filter.matches(&msg.payload) => {}
                        // A disabled endpoint has no worker to write its dead letter:
                        // a stand-in waits for it ([`copy::uncopied_headers`]), where
                        // the source keeps the payload.
                        None => {
                            if !keeps_acked(js, &facts.stream).await {
                                tracing::warn!(endpoint = %name, "the copy for a disabled endpoint is larger than max_payload; the message comes back until it is enabled");
                                let _ = msg.ack_with(AckKind::Nak(Some(RETRY_DELAY))).await;
                                return (sequence, false);
                            }
                            let h =
                                copy::uncopied_headers(msg.headers.as_ref(), &facts, name, &reason);
                            match js
                                .publish_with_headers(work.subject(name), h, bytes::Bytes::new())
                                .await
                            {
                                Ok(ack) => acks.push(ack),
                                Err(e) => {
                                    tracing::warn!(endpoint = %name, error = %e, "the copy for a disabled endpoint is larger than max_payload, and its stand-in cannot be stored; the message comes back");
                                    let _ = msg.ack_with(AckKind::Nak(Some(RETRY_DELAY))).await;
                                    return (sequence, no_stream(&e));
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(endpoint = %name, error = %e, "cannot copy a message to the work stream; it comes back");
                    let _ = msg.ack_with(AckKind::Nak(Some(RETRY_DELAY))).await;
                    return (sequence, no_stream(&e));
                }
            }
        }
        for ack in acks {
            if let Err(e) = ack.await {
                tracing::warn!(error = %e, subject = %facts.subject, "the work stream did not store a copy; the message comes back");
                let _ = msg.ack_with(AckKind::Nak(Some(RETRY_DELAY))).await;
                return (sequence, no_stream(&e));
            }
        }
        for (w, reason) in oversize {
            if !w.dead_letter_uncopied(&msg, 0, &reason).await {
                // The copies stored meanwhile are dropped as duplicates when it comes back.
                let _ = msg.ack_with(AckKind::Nak(Some(RETRY_DELAY))).await;
                return (sequence, false);
            }
        }
        // A plain ack, not one JetStream confirms: a lost ack brings the message back
        // after ack_wait (30 s), well within the duplicate window (2 min) in which the work
        // stream drops its copies, so a confirmation would cost a reply per message for
        // nothing.
        if let Err(e) = msg.ack().await {
            tracing::debug!(error = %e, "fan-out ack not sent");
        }
        for w in woken {
            w.wake();
        }
        (sequence, false)
    }
}

/// Whether `stream` keeps what the fan-out acked (limits retention): only then can a
/// disabled endpoint's copy that does not fit wait as a stand-in, whose payload is
/// read from the source once the endpoint is enabled; interest and work-queue streams
/// drop it. Asked only when such a copy comes up; `false` when the stream cannot be
/// read (the message comes back and is asked about again).
async fn keeps_acked(js: &jetstream::Context, stream: &str) -> bool {
    match js.get_stream(stream).await {
        Ok(s) => s.cached_info().config.retention == RetentionPolicy::Limits,
        Err(e) => {
            tracing::debug!(stream, error = %e, "cannot read the source stream's retention");
            false
        }
    }
}

fn no_stream(e: &jetstream::context::PublishError) -> bool {
    e.kind() == PublishErrorKind::StreamNotFound
}

/// How often a missing work stream is made again at most, however many copies fail.
const RESTORE_EVERY: Duration = Duration::from_secs(5);

/// Makes the work streams again when a copy found none to store it: one was deleted,
/// or the server lost its store. Without them nothing is delivered until a restart,
/// since natshook makes them at start-up otherwise. The failed copies' messages come
/// back and are copied then.
async fn restore_work(
    js: &jetstream::Context,
    work: &WorkStream,
    last: &mut Option<tokio::time::Instant>,
) {
    if last.is_some_and(|t| t.elapsed() < RESTORE_EVERY) {
        return;
    }
    *last = Some(tokio::time::Instant::now());
    match work.ensure(js).await {
        Ok(()) => tracing::warn!("a work stream was missing: the work streams are made again"),
        Err(e) => {
            tracing::warn!(error = %e, "a work stream is missing and cannot be made yet")
        }
    }
}
