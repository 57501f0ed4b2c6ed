//! An endpoint's durable consumer: its settings (window, ack timer), binding it so
//! its filters follow the config, the pull stream on it, and letting it go when a
//! fan-out endpoint has no work left.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::{self, pull, AckPolicy, DeliverPolicy, IntoConsumerConfig};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::stream::Stream;
use tokio::sync::Semaphore;

use super::source_consumer::{drained, TakenBack};
use super::{lock, PullConsumer, Worker};
use crate::config::{Endpoint, Rate};
use crate::store::pull_stream::{self, Liveness, PullStream};
use crate::store::work_stream::fan_out_consumer;

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

/// Room in the window for messages waiting out a retry delay. JetStream counts a
/// message NAKed with a delay as unacked until it comes back, so without this room
/// twice `concurrency` messages a receiver keeps refusing (a payload it rejects with
/// a 4xx, say) would fill the window and hold every later message of a healthy
/// endpoint for their whole retry span (hours with the default `retry_schedule`).
/// `waiting` is the consumer's count of redelivered unacked messages (delivered twice
/// or more) plus the messages this process NAKed with a delay at their first delivery.
/// The room comes in steps of the window, so that a change of a few messages writes
/// nothing, and is at most [`ROOM_WINDOWS`] windows: retries that come due together
/// are all sent at once, whatever the window, and wait in natshook for a permit, so
/// the room bounds what a receiver that refuses everything (with
/// `disable_after_failures = 0`) can make natshook hold.
pub fn retry_room(base: i64, waiting: usize) -> i64 {
    let step = base.max(1) as u64;
    let steps = (waiting as u64).div_ceil(step).min(ROOM_WINDOWS);
    i64::try_from(steps * step).unwrap_or(i64::MAX)
}

/// The most retry room, in windows.
const ROOM_WINDOWS: u64 = 8;

/// Where an endpoint's consumer on the source stream (without fan-out) starts when it
/// is gone: deleted by hand, say, to clear a stuck state. Made again from the
/// stream's first message, it would send everything the stream retains once more,
/// millions of messages to a customer's endpoint; it starts after its ack floor as
/// last read instead (at least once: everything after the oldest message it had not
/// acked comes again). Only on a stream older than the consumer that floor was read
/// from: a stream made again numbers from 1, and starting past its first messages
/// would lose them.
#[derive(Default)]
pub(super) struct Resume {
    /// When the consumer the floor was read from was made (the server's clock).
    consumer_created: Option<async_nats::datetime::DateTime>,
    /// Its ack floor; 0 = nothing acked.
    acked_through: u64,
}

/// The subjects a listed consumer filters, in the form [`Worker::filter_differs`]
/// compares.
pub fn listed_filters(info: &consumer::Info) -> Vec<String> {
    filters(&info.config.filter_subject, &info.config.filter_subjects)
}

/// A consumer's filter subjects in one form: JetStream takes one subject in either
/// field, and in any order.
fn filters(one: &str, many: &[String]) -> Vec<String> {
    let mut all: Vec<String> = (many.iter().cloned())
        .chain((!one.is_empty()).then(|| one.to_string()))
        .collect();
    all.sort();
    all.dedup();
    all
}

/// The most first waits a worker keeps track of.
const MAX_FIRST_WAITS: usize = 65_536;

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

    pub(super) fn consumer_config(&self, deliver_policy: DeliverPolicy) -> pull::Config {
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
            max_ack_pending: self.window(),
            // A fan-out endpoint's consumer keeps its state in memory: a file per
            // consumer rewritten ten times a second is most of what nats-server spends
            // while a thousand endpoints drain. A server restart forgets the consumer;
            // the worker creates it again and every copy still on the subject comes
            // back: those not acked, and those acked since the last purge.
            memory_storage: self.lazy,
            ..Default::default()
        }
    }

    /// Whether the consumer as `info` lists it filters other subjects than this
    /// worker binds it with, while the worker is bound (a bind under way writes its
    /// own). The cause is most often a second natshook deployment on the same stream
    /// and `consumer_prefix` with an endpoint of the same name and another config:
    /// the last to bind sets the filter for both, and the other's messages are never
    /// delivered.
    pub fn filter_differs(&self, info: &consumer::Info) -> bool {
        if !self.bound.load(Ordering::Relaxed) {
            return false;
        }
        let want = self.consumer_config(info.config.deliver_policy);
        filters(&want.filter_subject, &want.filter_subjects) != listed_filters(info)
    }

    /// The window in force: [`window`] with the [`retry_room`] last seen (none for an
    /// `ordered` endpoint, which holds its later messages behind a retry by design).
    fn window(&self) -> i64 {
        let base = window(&self.endpoint, self.rate_limit());
        match self.endpoint.ordered {
            true => base,
            false => base.saturating_add(self.retry_room.load(Ordering::Relaxed)),
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
        let (mut start, existing) = self.start(&stream).await?;
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
            false => match stream.create_consumer(config).await {
                Ok(bound) => Ok(bound),
                Err(e) if self.shared.work.is_some() => Err(e.to_string()),
                // Without fan-out, made meanwhile by a replica that starts it after
                // another ack floor ([`Resume`]): kept as it starts.
                Err(e) => match self.consumer_on(&stream).await {
                    Ok(Some(info)) => {
                        start = info.config.deliver_policy;
                        (stream.update_consumer(self.consumer_config(start)).await)
                            .map_err(|e| e.to_string())
                    }
                    _ => Err(e.to_string()),
                },
            },
        };
        let mut bound = bound.map_err(|e| format!("consumer {}: {e}", self.consumer_name))?;
        self.note_acked(bound.cached_info());
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
        self.update_existing(|listed| {
            let config = self.consumer_config(listed.deliver_policy);
            (config.max_ack_pending != listed.max_ack_pending)
                .then(|| config.into_consumer_config())
        })
        .await
    }

    /// Updates the consumer, if it exists, to what `change` makes of its config as
    /// listed (`None`: nothing to write), under a bind turn.
    async fn update_existing(
        &self,
        change: impl FnOnce(&consumer::Config) -> Option<consumer::Config>,
    ) -> Result<(), String> {
        let _turn = self.shared.binds.acquire().await;
        let stream = self.own_stream().await?;
        let Some(info) = self.consumer_on(&stream).await? else {
            return Ok(());
        };
        let Some(config) = change(&info.config) else {
            return Ok(());
        };
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
        if self.lazy {
            return Ok((DeliverPolicy::All, false));
        }
        if self.shared.work.is_none() {
            return self.start_alone(stream).await;
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

    /// Where a consumer without fan-out starts, and whether it exists ([`Resume`]).
    async fn start_alone(&self, stream: &Stream<()>) -> Result<(DeliverPolicy, bool), String> {
        if let Some(info) = self.consumer_on(stream).await? {
            // Kept: an update cannot change where it started.
            return Ok((info.config.deliver_policy, true));
        }
        let (acked, consumer_created) = {
            let resume = lock(&self.resume);
            (resume.acked_through, resume.consumer_created)
        };
        let Some(consumer_created) = consumer_created.filter(|_| acked > 0) else {
            return Ok((DeliverPolicy::All, false));
        };
        let name = self.consumer_stream();
        let info = (self.shared.js.get_stream(name).await)
            .map_err(|e| format!("stream {name}: {e}"))?
            .cached_info()
            .clone();
        if info.created > consumer_created || acked > info.state.last_sequence {
            return Ok((DeliverPolicy::All, false));
        }
        tracing::warn!(
            endpoint = %self.endpoint.name,
            consumer = %self.consumer_name,
            after = acked,
            "the endpoint's consumer is gone: made again after its last ack floor"
        );
        Ok((
            DeliverPolicy::ByStartSequence {
                start_sequence: acked + 1,
            },
            false,
        ))
    }

    /// Notes the consumer's ack floor ([`Resume`]); a listing older than the last one
    /// noted (read from a consumer made before it) changes nothing.
    fn note_acked(&self, info: &consumer::Info) {
        if self.lazy || self.shared.work.is_some() {
            return;
        }
        let mut resume = lock(&self.resume);
        if resume
            .consumer_created
            .is_some_and(|noted| info.created < noted)
        {
            return;
        }
        resume.consumer_created = Some(info.created);
        resume.acked_through = info.ack_floor.stream_sequence;
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
    pub(super) async fn consumer_on(
        &self,
        stream: &Stream<()>,
    ) -> Result<Option<consumer::Info>, String> {
        match stream.consumer_info(&self.consumer_name).await {
            Ok(info) => Ok(Some(info)),
            Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("consumer {}: {e}", self.consumer_name)),
        }
    }

    /// Sets `natshook_consumer_pending` from the consumer's info, as listed for every
    /// consumer of a stream at once.
    pub fn show_pending(&self, info: &consumer::Info) {
        if self.is_parked() {
            // Let go since it was listed: nothing pending.
            self.show_no_consumer();
        } else {
            self.metrics.pending.set(unsettled(info));
            self.note_acked(info);
        }
    }

    /// Brings the consumer's window in line with its messages waiting out retry
    /// delays ([`retry_room`]), as `info` (its listing by the pending poll) shows them.
    /// Only the window is written, over the consumer's config as listed: a worker a
    /// reload replaced meanwhile must not write its filters back. One update at a
    /// time; a failed one is tried again at the next poll.
    pub fn follow_retries(self: &Arc<Self>, info: &consumer::Info) {
        let Some(wanted) = self.note_retries(info) else {
            return;
        };
        if self.hands_over.load(Ordering::Relaxed)
            || !self.records_deliveries()
            || self.window_writing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let (this, waiting) = (Arc::clone(self), info.num_redelivered);
        tokio::spawn(async move {
            match this.write_window(wanted).await {
                Ok(()) => tracing::info!(
                    endpoint = %this.endpoint.name,
                    window = wanted,
                    redelivered = waiting,
                    "the consumer's window follows the messages waiting out retry delays"
                ),
                Err(e) => {
                    tracing::debug!(endpoint = %this.endpoint.name, error = %e, "consumer window not updated")
                }
            }
            this.window_writing.store(false, Ordering::Release);
        });
    }

    /// Sets the consumer's `max_ack_pending` to `wanted`, nothing else.
    async fn write_window(&self, wanted: i64) -> Result<(), String> {
        self.update_existing(|listed| {
            (listed.max_ack_pending != wanted).then(|| consumer::Config {
                max_ack_pending: wanted,
                ..listed.clone()
            })
        })
        .await
    }

    /// Notes the retry room `info` calls for; the window to write when the consumer's
    /// differs in a way that involves retry room. A window without room is left to
    /// binds and rate changes.
    ///
    /// The room grows as soon as more is needed, and goes only once none is and the
    /// consumer has no more unacked messages than the base window over all replicas:
    /// each replica knows only its own first waits, and one that needs less must not
    /// write its value over another's, back and forth.
    fn note_retries(&self, info: &consumer::Info) -> Option<i64> {
        if self.endpoint.ordered || self.is_parked() {
            return None;
        }
        let base = window(&self.endpoint, self.rate_limit());
        let room = retry_room(base, info.num_redelivered + self.first_waits());
        self.retry_room.store(room, Ordering::Relaxed);
        let (written, wanted) = (info.config.max_ack_pending, base.saturating_add(room));
        let unacked = i64::try_from(info.num_ack_pending).unwrap_or(i64::MAX);
        let write = match room {
            0 => written > base && unacked <= base,
            _ => written < wanted,
        };
        write.then_some(wanted)
    }

    /// Notes a NAK of `msg` with `delay` on the endpoint's own consumer: at its first
    /// delivery, JetStream does not count it as redelivered until it comes back (a
    /// copy moved off the lane waits out its whole delay that way). A lane copy's NAK
    /// is the lane's, not this consumer's.
    pub(super) fn note_first_wait(&self, msg: &jetstream::Message, delay: Duration) {
        let first_here = msg
            .info()
            .is_ok_and(|i| i.delivered == 1 && i.consumer == self.consumer_name);
        if self.endpoint.ordered || !first_here {
            return;
        }
        let mut waits = lock(&self.first_waits);
        let now = std::time::Instant::now();
        if waits.len() >= 64 {
            waits.retain(|due| *due > now);
        }
        if waits.len() < MAX_FIRST_WAITS {
            waits.push(now + delay);
        }
    }

    /// How many messages NAKed at their first delivery still wait out their delay.
    fn first_waits(&self) -> usize {
        let mut waits = lock(&self.first_waits);
        let now = std::time::Instant::now();
        waits.retain(|due| *due > now);
        waits.len()
    }

    /// Shows nothing pending on a parked worker whose consumer a listing no longer
    /// holds (one that runs keeps its last value until its consumer is listed).
    /// `false` while its series do not exist yet: a replaced worker's successor
    /// shares them once they do, so the caller tries again.
    pub fn show_no_consumer(&self) -> bool {
        if !self.is_parked() {
            return true;
        }
        if !self.metrics.created() {
            return false;
        }
        self.metrics.pending.set(0);
        true
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

    /// A pull stream on `consumer`, the bound consumer, going on from `earlier`, the
    /// stream of the worker this one replaced, when that pulls from the same consumer:
    /// as it is when it asks for the same batch, else read beside the new one until it
    /// falls silent. One on another consumer (the endpoint switched between `ordered`
    /// and fan-out) is dropped. When no stream can be opened, `earlier` stays for the
    /// next try.
    ///
    /// The server never sends more than max_ack_pending unacked messages, so a larger
    /// batch only saves pull round trips (ordered endpoints included).
    pub(super) async fn pull(
        &self,
        consumer: &PullConsumer,
        earlier: &mut Option<PullStream>,
    ) -> Result<PullStream, String> {
        let batch = self.endpoint.concurrency.clamp(16, 256);
        // A fan-out endpoint's consumer exists only while it has work.
        let liveness = if self.lazy {
            Liveness::Busy
        } else {
            Liveness::OneOf(self.shared.endpoints())
        };
        match earlier.take() {
            Some(old) if old.pulls_from(consumer) && old.asks_for(batch) => Ok(old),
            Some(old) if old.pulls_from(consumer) => {
                pull_stream::following(consumer, batch, liveness, old)
                    .await
                    .map_err(|(e, old)| {
                        *earlier = Some(old);
                        e
                    })
            }
            _ => pull_stream::messages(consumer, batch, liveness).await,
        }
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
    fn the_retry_room_grows_in_steps_of_the_window_up_to_eight() {
        assert_eq!(retry_room(128, 0), 0);
        assert_eq!(retry_room(128, 1), 128);
        assert_eq!(retry_room(128, 128), 128);
        assert_eq!(retry_room(128, 129), 256);
        assert_eq!(retry_room(4, 9), 12);
        assert_eq!(retry_room(128, 5_000), 1_024);
        assert_eq!(retry_room(128, usize::MAX), 1_024);
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
