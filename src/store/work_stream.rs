//! The work stream of `[delivery] fan_out`: one copy of a source message per endpoint
//! that delivers it, on the subject `<prefix>.work.<stream>.<endpoint>`. An endpoint's
//! retries, holds and pauses then live on its own subject, read by a consumer that
//! exists only while the endpoint has work, so an idle endpoint costs JetStream
//! nothing and the source stream needs one consumer, not one per endpoint.
//!
//! What a copy carries from its source message, in `Natshook-Source-*` headers, is
//! [`super::copy`]'s.
//!
//! The streams keep their copies under limits retention, with no limit: an acked copy
//! stays until natshook purges the endpoint's subject below its consumer's ack floor
//! ([`WorkStream::release`]), every few seconds while the endpoint is busy and before
//! its consumer is deleted. A work-queue stream would remove each copy on its ack,
//! but only after asking every other consumer of the stream whether it still needs
//! it, and with a thousand busy endpoints that check was a sixth of nats-server's CPU
//! per delivery.

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::stream::ConsumerErrorKind;
use async_nats::jetstream::{self, stream, ErrorCode};
use futures_util::StreamExt;

use super::copy::{self, CopyAttempt, SourceFacts};
use crate::config::NatsConfig;

/// How long a copy's id is remembered: a source message redelivered within it (the
/// fan-out died between storing its copies and acking it) is not copied twice.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
#[error("work stream {stream}: {message}")]
pub struct WorkStreamError {
    stream: String,
    message: String,
}

/// How many work streams the copies are spread over, by endpoint: each stream stores
/// its copies through its own lock and file blocks, and lists its consumers for the
/// purge in one short page. A work stream that already exists keeps its retention:
/// with work-queue retention it removes each copy on its ack, and the purge finds
/// nothing to remove.
pub const SHARDS: usize = 16;

/// The name of the fan-out consumer on the source stream: `<prefix>-fanout`.
pub fn fan_out_consumer(consumer_prefix: &str) -> String {
    format!("{consumer_prefix}-fanout")
}

/// The name of the lane's consumer (on the lane): `<prefix>-lane`.
pub fn lane_consumer(consumer_prefix: &str) -> String {
    format!("{consumer_prefix}-lane")
}

/// Where the copies live: the streams and their subjects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkStream {
    /// `<stream>_<prefix>_WORK_<shard>`, by shard.
    names: Vec<String>,
    /// `<prefix>.work.<stream>.`
    subject_prefix: String,
    /// `<stream>_<prefix>_LANE`: the copies read through one shared consumer.
    lane: String,
    /// `<prefix>.lane.<stream>.`
    lane_prefix: String,
    /// The lane's consumer, [`lane_consumer`].
    lane_consumer: String,
    replicas: usize,
}

/// One page of an ephemeral consumer's messages: at most `max`, waiting up to 2 s for
/// them.
pub async fn fetch_page(
    consumer: &jetstream::consumer::PullConsumer,
    max: usize,
) -> Result<jetstream::consumer::pull::Batch, String> {
    consumer
        .fetch()
        .max_messages(max)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .map_err(|e| e.to_string())
}

impl WorkStream {
    pub fn new(nats: &NatsConfig) -> Self {
        Self::named(&nats.stream, &nats.consumer_prefix, nats.replicas)
    }

    fn named(stream: &str, prefix: &str, replicas: usize) -> Self {
        Self {
            names: (0..SHARDS)
                .map(|i| format!("{stream}_{prefix}_WORK_{i}"))
                .collect(),
            subject_prefix: format!("{prefix}.work.{stream}."),
            lane: format!("{stream}_{prefix}_LANE"),
            lane_prefix: format!("{prefix}.lane.{stream}."),
            lane_consumer: lane_consumer(prefix),
            replicas,
        }
    }

    /// The lane's consumer.
    pub fn lane_consumer(&self) -> &str {
        &self.lane_consumer
    }

    /// The work streams, by shard.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The stream that holds `endpoint`'s copies.
    pub fn name_of(&self, endpoint: &str) -> &str {
        &self.names[shard(endpoint)]
    }

    /// The subject of `endpoint`'s copies: `<prefix>.work.<stream>.<shard>.<endpoint>`.
    pub fn subject(&self, endpoint: &str) -> String {
        format!("{}{}.{endpoint}", self.subject_prefix, shard(endpoint))
    }

    /// Every endpoint's subject on shard `i`'s stream, for listing which have work.
    pub fn subjects_of(&self, i: usize) -> String {
        format!("{}{i}.>", self.subject_prefix)
    }

    /// The endpoint whose copies `subject` holds.
    pub fn endpoint_of<'a>(&self, subject: &'a str) -> Option<&'a str> {
        let (i, endpoint) = subject
            .strip_prefix(self.subject_prefix.as_str())?
            .split_once('.')?;
        let i: usize = i.parse().ok()?;
        Some(endpoint).filter(|e| !e.is_empty() && !e.contains('.') && shard(e) == i)
    }

    /// The lane: the stream whose copies one consumer reads for every endpoint.
    pub fn lane_name(&self) -> &str {
        &self.lane
    }

    /// The subject of `endpoint`'s copies on the lane: `<prefix>.lane.<stream>.<endpoint>`.
    pub fn lane_subject(&self, endpoint: &str) -> String {
        format!("{}{endpoint}", self.lane_prefix)
    }

    /// The endpoint whose copy on the lane has `subject`.
    pub fn lane_endpoint_of<'a>(&self, subject: &'a str) -> Option<&'a str> {
        subject
            .strip_prefix(self.lane_prefix.as_str())
            .filter(|e| !e.is_empty() && !e.contains('.'))
    }

    /// Creates the streams that are missing, with limits retention and no limit: a copy
    /// leaves only through [`WorkStream::release`] or [`WorkStream::release_lane`],
    /// after it was acked.
    pub async fn ensure(&self, js: &jetstream::Context) -> Result<(), WorkStreamError> {
        let lane = (self.lane.clone(), format!("{}>", self.lane_prefix));
        let shards = self
            .names
            .iter()
            .enumerate()
            .map(|(i, name)| (name.clone(), self.subjects_of(i)));
        for (name, subject) in shards.chain(std::iter::once(lane)) {
            js.get_or_create_stream(stream::Config {
                name: name.clone(),
                description: Some(
                    "natshook: each message copied once per endpoint that delivers it".into(),
                ),
                subjects: vec![subject],
                retention: stream::RetentionPolicy::Limits,
                storage: stream::StorageType::File,
                num_replicas: self.replicas,
                duplicate_window: DUPLICATE_WINDOW,
                // One consumer per endpoint with work; the server's default (1,000)
                // would cap the endpoints that can be busy at once.
                max_consumers: i32::MAX,
                ..Default::default()
            })
            .await
            .map_err(|e| WorkStreamError {
                stream: name.clone(),
                message: e.to_string(),
            })?;
        }
        Ok(())
    }

    /// Removes `endpoint`'s copies up to stream sequence `acked_to`, its consumer's ack
    /// floor: every copy at or below it is acked, so none of them is work. Returns how
    /// many were removed. On a work-queue stream there is nothing acked left to remove.
    pub async fn release<I>(
        &self,
        stream: &stream::Stream<I>,
        endpoint: &str,
        acked_to: u64,
    ) -> Result<u64, WorkStreamError> {
        self.purge_below(stream, endpoint, acked_to + 1, "acked copies")
            .await
    }

    /// Removes `endpoint`'s copies stored before stream sequence `first`, a disabled
    /// endpoint's copies of messages the source stream no longer keeps. Returns how
    /// many were removed.
    pub async fn expire<I>(
        &self,
        stream: &stream::Stream<I>,
        endpoint: &str,
        first: u64,
    ) -> Result<u64, WorkStreamError> {
        self.purge_below(stream, endpoint, first, "expired copies")
            .await
    }

    async fn purge_below<I>(
        &self,
        stream: &stream::Stream<I>,
        endpoint: &str,
        first: u64,
        what: &str,
    ) -> Result<u64, WorkStreamError> {
        if first <= 1 {
            return Ok(0);
        }
        stream
            .purge()
            .filter(self.subject(endpoint))
            .sequence(first)
            .await
            .map(|r| r.purged)
            .map_err(|e| WorkStreamError {
                stream: self.name_of(endpoint).to_string(),
                message: format!("purging {endpoint}'s {what}: {e}"),
            })
    }

    /// The first sequence of shard `i`'s stream stored at or after `time`, by
    /// nats-server's clock; the one after its last when none is. A consumer made to
    /// start at that time reports where it starts, so nothing is read.
    pub async fn first_stored_since(
        &self,
        js: &jetstream::Context,
        i: usize,
        time: time::OffsetDateTime,
    ) -> Result<u64, WorkStreamError> {
        let name = &self.names[i];
        let failed = |e: String| WorkStreamError {
            stream: name.clone(),
            message: format!("finding the copies stored since {time}: {e}"),
        };
        let stream = (js.get_stream_no_info(name).await).map_err(|e| failed(e.to_string()))?;
        let consumer = stream
            .create_consumer(pull::Config {
                deliver_policy: DeliverPolicy::ByStartTime { start_time: time },
                ack_policy: AckPolicy::None,
                memory_storage: true,
                inactive_threshold: Duration::from_secs(30),
                ..Default::default()
            })
            .await
            .map_err(|e| failed(e.to_string()))?;
        let info = consumer.cached_info();
        let first = info.delivered.stream_sequence + 1;
        let _ = stream.delete_consumer(&info.name).await;
        Ok(first)
    }

    /// Removes the lane's copies up to stream sequence `acked_to`, its consumer's ack
    /// floor. Returns how many were removed.
    pub async fn release_lane<I>(
        &self,
        lane: &stream::Stream<I>,
        acked_to: u64,
    ) -> Result<u64, WorkStreamError> {
        if acked_to == 0 {
            return Ok(0);
        }
        lane.purge()
            .sequence(acked_to + 1)
            .await
            .map(|r| r.purged)
            .map_err(|e| WorkStreamError {
                stream: self.lane.clone(),
                message: format!("purging acked copies: {e}"),
            })
    }

    /// The smallest source sequence among `endpoint`'s copies that may still be work:
    /// those past the ack floor of its consumer on its own subject (`consumer`; every
    /// copy when it has none) and of the lane's consumer on the lane. `None` when there
    /// is none.
    pub async fn oldest_waiting(
        &self,
        js: &jetstream::Context,
        endpoint: &str,
        consumer: &str,
    ) -> Result<Option<u64>, WorkStreamError> {
        let mut oldest: Option<u64> = None;
        self.scan_waiting(js, endpoint, consumer, |seq| {
            oldest = Some(oldest.map_or(seq, |o| o.min(seq)));
        })
        .await?;
        Ok(oldest)
    }

    /// Whether any of `endpoint`'s copies that may still be work (as
    /// [`WorkStream::oldest_waiting`] reads them) is of a source message in `sequences`.
    pub async fn waits_for_any(
        &self,
        js: &jetstream::Context,
        endpoint: &str,
        consumer: &str,
        sequences: &BTreeSet<u64>,
    ) -> Result<bool, WorkStreamError> {
        let mut any = false;
        self.scan_waiting(js, endpoint, consumer, |seq| {
            any |= sequences.contains(&seq);
        })
        .await?;
        Ok(any)
    }

    /// Hands `visit` the source sequence of each of `endpoint`'s copies that may still
    /// be work. Read with headers-only consumers of its own, so a backlog costs no
    /// payloads.
    async fn scan_waiting(
        &self,
        js: &jetstream::Context,
        endpoint: &str,
        consumer: &str,
        mut visit: impl FnMut(u64),
    ) -> Result<(), WorkStreamError> {
        let own = self.name_of(endpoint);
        let failed = |stream: &str, e: String| WorkStreamError {
            stream: stream.to_string(),
            message: format!("reading {endpoint}'s copies: {e}"),
        };
        // The lane first: a copy moves from the lane to the endpoint's own subject (is
        // stored there before it is acked on the lane), never back, so read in this
        // order no copy is missed on its way.
        let lane = js
            .get_stream_no_info(&self.lane)
            .await
            .map_err(|e| failed(&self.lane, e.to_string()))?;
        let lane_acked = super::ack_floor(&lane, &self.lane_consumer)
            .await
            .map_err(|e| failed(&self.lane, e))?;
        scan_sources(
            &lane,
            self.lane_subject(endpoint),
            lane_acked + 1,
            &mut visit,
        )
        .await
        .map_err(|e| failed(&self.lane, e))?;
        let work = js
            .get_stream_no_info(own)
            .await
            .map_err(|e| failed(own, e.to_string()))?;
        let acked = super::ack_floor(&work, consumer)
            .await
            .map_err(|e| failed(own, e))?;
        scan_sources(&work, self.subject(endpoint), acked + 1, &mut visit)
            .await
            .map_err(|e| failed(own, e))
    }

    /// Removes every copy of `endpoint` and its consumer on the work stream: once the
    /// endpoint reads the source stream from before all of them (`ordered`), they
    /// are no work of anyone's, and read again later they would come twice.
    pub async fn forget(
        &self,
        js: &jetstream::Context,
        endpoint: &str,
        consumer: &str,
    ) -> Result<(), WorkStreamError> {
        let own = self.name_of(endpoint);
        let failed = |stream: &str, e: String| WorkStreamError {
            stream: stream.to_string(),
            message: format!("removing {endpoint}'s copies: {e}"),
        };
        let work = js
            .get_stream_no_info(own)
            .await
            .map_err(|e| failed(own, e.to_string()))?;
        match work.delete_consumer(consumer).await {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ConsumerErrorKind::JetStream(ref j) if j.error_code() == ErrorCode::CONSUMER_NOT_FOUND) =>
                {}
            Err(e) => return Err(failed(own, e.to_string())),
        }
        work.purge()
            .filter(self.subject(endpoint))
            .await
            .map_err(|e| failed(own, e.to_string()))?;
        let lane = js
            .get_stream_no_info(&self.lane)
            .await
            .map_err(|e| failed(&self.lane, e.to_string()))?;
        lane.purge()
            .filter(self.lane_subject(endpoint))
            .await
            .map_err(|e| failed(&self.lane, e.to_string()))?;
        Ok(())
    }

    /// Stores a copy from the lane on `endpoint`'s own subject, after `attempts`
    /// attempts and to wait `wait` before the next: its headers stay the lane copy's, so
    /// it keeps its source and its `Nats-Msg-Id` (moving it twice stores it once), with
    /// the attempts and the wait added (`copy::moved_off_lane_headers`).
    /// Returns once JetStream stored it; the caller then acks it on the lane.
    pub async fn move_off_lane(
        &self,
        js: &jetstream::Context,
        msg: &jetstream::Message,
        endpoint: &str,
        attempts: u32,
        wait: Option<Duration>,
    ) -> Result<(), WorkStreamError> {
        let headers = copy::moved_off_lane_headers(msg.headers.as_ref(), attempts, wait);
        let failed = |e: String| WorkStreamError {
            stream: self.name_of(endpoint).to_string(),
            message: format!("moving a copy off the lane: {e}"),
        };
        js.publish_with_headers(self.subject(endpoint), headers, msg.payload.clone())
            .await
            .map_err(|e| failed(e.to_string()))?
            .await
            .map_err(|e| failed(e.to_string()))?;
        Ok(())
    }

    /// Which attempt a delivery of a copy from `stream` is, the `delivered`-th there.
    /// A copy moved off the lane counts on from the attempts it had there, and its
    /// first delivery on its own subject only waits out the retry delay it was moved
    /// with: that delivery is no attempt (`copy::attempt_of`).
    pub fn attempt_of(
        &self,
        msg: &jetstream::Message,
        stream: &str,
        delivered: i64,
    ) -> CopyAttempt {
        copy::attempt_of(msg.headers.as_ref(), self.is_lane(stream), delivered)
    }

    /// Whether `stream` is the lane.
    pub fn is_lane(&self, stream: &str) -> bool {
        stream == self.lane
    }

    /// A copy's source facts, or `None` when `msg` is not from this work stream (a
    /// message on the source stream is read as it is, whatever headers it has).
    pub fn source_of(&self, msg: &jetstream::Message, stream: &str) -> Option<SourceFacts> {
        if stream != self.lane && !self.names.iter().any(|n| n == stream) {
            return None;
        }
        SourceFacts::of_copy(msg.headers.as_ref()?)
    }
}

/// Hands `visit` the `Natshook-Source-Sequence` of each copy on `subject` from stream
/// sequence `from` on, read in pages through an ephemeral headers-only consumer until
/// none is left (copies removed meanwhile end it early: they were acked).
async fn scan_sources(
    stream: &stream::Stream<()>,
    subject: String,
    from: u64,
    visit: &mut impl FnMut(u64),
) -> Result<(), String> {
    const PAGE: usize = 1_000;
    // Empty pages in a row with copies still counted: a server this slow to answer
    // fails the read (and the bind, which is tried again) rather than ending it with
    // copies unread.
    const EMPTY_PAGES: u32 = 3;
    let mut consumer = stream
        .create_consumer(pull::Config {
            filter_subject: subject,
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ack_policy: AckPolicy::None,
            headers_only: true,
            memory_storage: true,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let name = consumer.cached_info().name.clone();
    let mut left = consumer.cached_info().num_pending;
    let result = async {
        let mut empty = 0;
        while left > 0 {
            let mut page = fetch_page(&consumer, PAGE).await?;
            let mut got = 0;
            while let Some(msg) = page.next().await {
                let msg = msg.map_err(|e| e.to_string())?;
                got += 1;
                left = msg.info().map_or(left.saturating_sub(1), |i| i.pending);
                let sequence = msg.headers.as_ref().and_then(copy::source_sequence);
                if let Some(seq) = sequence {
                    visit(seq);
                }
            }
            if got > 0 {
                empty = 0;
                continue;
            }
            // Nothing came: copies released since they were counted, or a slow
            // server. The server's count tells which.
            empty += 1;
            left = consumer
                .info()
                .await
                .map_err(|e| e.to_string())?
                .num_pending;
            if left > 0 && empty >= EMPTY_PAGES {
                return Err(format!(
                    "{left} copies still counted after {EMPTY_PAGES} empty pages"
                ));
            }
        }
        Ok(())
    }
    .await;
    let _ = stream.delete_consumer(&name).await;
    result
}

/// An endpoint's shard: FNV-1a of its name, the same in every replica and release.
fn shard(endpoint: &str) -> usize {
    let hash = endpoint.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % SHARDS as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work() -> WorkStream {
        WorkStream::named("EVENTS", "natshook", 1)
    }

    #[test]
    fn subjects_name_their_shard_and_endpoint() {
        let w = work();
        let i = shard("crm");
        let subject = w.subject("crm");
        assert_eq!(subject, format!("natshook.work.EVENTS.{i}.crm"));
        assert_eq!(w.endpoint_of(&subject), Some("crm"));
        assert_eq!(w.name_of("crm"), format!("EVENTS_natshook_WORK_{i}"));
        assert_eq!(w.endpoint_of(&format!("natshook.work.EVENTS.{i}.")), None);
        assert_eq!(w.endpoint_of(&format!("natshook.work.OTHER.{i}.crm")), None);
        assert_eq!(
            w.endpoint_of(&format!("natshook.work.EVENTS.{i}.a.b")),
            None
        );
        let other = (i + 1) % SHARDS;
        assert_eq!(
            w.endpoint_of(&format!("natshook.work.EVENTS.{other}.crm")),
            None
        );
        assert_eq!(w.endpoint_of("natshook.work.EVENTS.crm"), None);
    }

    #[test]
    fn endpoints_spread_over_every_shard() {
        let mut counts = [0usize; SHARDS];
        for i in 0..1000 {
            counts[shard(&format!("e{i}"))] += 1;
        }
        assert!(
            counts.iter().all(|&n| (30..=100).contains(&n)),
            "{counts:?}"
        );
    }
}
