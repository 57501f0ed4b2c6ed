//! A fan-out endpoint's leftover consumer on the source stream: the one it read while
//! it was `ordered` (ordered endpoints keep a source consumer, see `fanout`), or before
//! `fan_out` was switched on.
//!
//! While an endpoint reads a consumer of its own on the source stream, the fan-out
//! makes no copies for it. Once it reads copies instead, the messages its old consumer
//! still holds (waiting, or waiting out a retry) would be read by nobody, so every
//! replica that sees such a consumer moves its messages to the endpoint's subject of
//! the work stream, as the fan-out copies a message, with the attempts they had, and
//! deletes the consumer once it holds nothing.
//!
//! Every message is copied, none acked without a copy, but one whose copy would exceed
//! the server's `max_payload`, which is dead-lettered as the fan-out does (one record,
//! whichever of the two comes upon it first: `DeadLetter::once_per_message`). One the
//! fan-out also copies (it came after the switch, or a replica applied the switch
//! later) is stored once within the work stream's duplicate window and delivered twice
//! after it, never lost. The drain first widens the consumer's window (an ordered
//! endpoint's is one message, so a retry waiting out its delay would hold every other
//! message behind it), and stops without deleting anything as soon as the endpoint
//! reads its own consumer again.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{pull, FromConsumer, PullConsumer},
    context::PublishErrorKind,
    message::AckKind,
    publish::PublishAck,
    stream::LastRawMessageErrorKind,
};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::store::copy::{self, leftover_copy_headers, SourceFacts, NATS_MSG_ID};
use crate::store::forgotten::Forgotten;
use crate::store::unattempted::{Delivered, Unattempted};
use crate::store::work_stream::WorkStream;
use crate::worker::Worker;

/// How long one fetch waits for the leftover's messages; a retry waiting out its delay
/// is looked for again after this.
const FETCH_WAIT: Duration = Duration::from_secs(2);

/// Messages moved per fetch.
const BATCH: usize = 256;

/// How many times a copy is stored again under a new id when its id is that of a
/// removed copy (once per removal within the duplicate window).
const RESTORE_TRIES: usize = 4;

/// Why a leftover consumer is not drained yet; the caller tries again later.
#[derive(Debug, thiserror::Error)]
#[error("leftover consumer {consumer} on {stream}: {error}")]
pub struct LeftoverError {
    consumer: String,
    stream: String,
    error: String,
}

/// A leftover consumer to drain into the work stream.
pub struct Leftover<'a> {
    pub js: &'a jetstream::Context,
    pub work: &'a WorkStream,
    /// The source stream.
    pub stream: &'a str,
    /// The leftover consumer and its endpoint.
    pub consumer: &'a str,
    pub endpoint: &'a str,
    /// The endpoint's worker while it reads copies; `None` once it reads a consumer of
    /// its own again (made `ordered`, `fan_out` off) or is gone: the drain stops and
    /// deletes nothing.
    pub worker: &'a (dyn Fn() -> Option<Arc<Worker>> + Send + Sync),
    /// Shutdown: the drain stops after the batch it moves; what it fetched and did not
    /// move comes back.
    pub stop: &'a CancellationToken,
    /// The endpoint taking this consumer back ([`crate::worker::drains::Drains`]): the
    /// drain moves nothing more, and what it fetched stays unacked for the reset.
    pub taken_back: &'a CancellationToken,
    /// Deliveries of the former consumer that were no attempt (held when a process
    /// stopped): they do not count among the attempts a copy carries.
    pub unattempted: &'a Unattempted,
    /// When the endpoint's copies were last removed: see [`Leftover::removed_since`].
    pub forgotten: &'a Forgotten,
}

impl Leftover<'_> {
    fn failed(&self, error: impl std::fmt::Display) -> LeftoverError {
        LeftoverError {
            consumer: self.consumer.to_string(),
            stream: self.stream.to_string(),
            error: error.to_string(),
        }
    }

    /// Moves every message the consumer holds and deletes it; returns how many were
    /// moved, or `None` when it stopped first (no longer wanted, shutdown). An error
    /// leaves the rest for the next call: nothing is acked before its copy is stored.
    pub async fn drain(&self) -> Result<Option<u64>, LeftoverError> {
        // Checked before the window is widened too: a poll that listed the endpoint as
        // reading copies just before it was made `ordered` again must not widen the
        // consumer its bind has just narrowed.
        if self.stopped() {
            return Ok(None);
        }
        let stream = self
            .js
            .get_stream_no_info(self.stream)
            .await
            .map_err(|e| self.failed(e))?;
        let consumer = self.widened(&stream).await?;
        let mut moved = 0;
        loop {
            if self.stopped() {
                return Ok(None);
            }
            let mut batch = consumer
                .fetch()
                .max_messages(BATCH)
                .expires(FETCH_WAIT)
                .messages()
                .await
                .map_err(|e| self.failed(e))?;
            // Once taken back (the endpoint reads this consumer again and may reset it
            // once this returns), or after an error, nothing more is moved: what is
            // left of the batch stays unacked, and the batch runs out, so no pull
            // request of the drain outlives it.
            let (mut fetched, mut failed) = (0, None);
            while let Some(msg) = batch.next().await {
                let msg = match msg {
                    Ok(msg) => msg,
                    Err(e) => {
                        failed.get_or_insert(self.failed(e));
                        continue;
                    }
                };
                fetched += 1;
                if failed.is_some() || self.taken_back.is_cancelled() {
                    continue;
                }
                match self.move_one(&msg).await {
                    Ok(()) => moved += 1,
                    Err(e) => failed = Some(e),
                }
            }
            if let Some(e) = failed {
                return Err(e);
            }
            if self.stopped() {
                return Ok(None);
            }
            if fetched > 0 {
                continue;
            }
            let info = stream
                .consumer_info(self.consumer)
                .await
                .map_err(|e| self.failed(e))?;
            if info.num_pending == 0 && info.num_ack_pending == 0 {
                if self.stopped() {
                    return Ok(None);
                }
                stream
                    .delete_consumer(self.consumer)
                    .await
                    .map_err(|e| self.failed(e))?;
                return Ok(Some(moved));
            }
        }
    }

    /// Whether the drain must stop: shutdown, taken back, or the endpoint no longer
    /// wanting it (looked up once per batch, not per message: it lists every endpoint).
    fn stopped(&self) -> bool {
        self.stop.is_cancelled() || self.taken_back.is_cancelled() || (self.worker)().is_none()
    }

    /// The leftover consumer with a window of [`BATCH`] messages: an ordered
    /// endpoint's window of one would let a retry waiting out its delay hold the rest.
    /// An update, never a create: a consumer deleted since it was read (its drain
    /// finished on another replica, or its endpoint was deleted) stays deleted instead
    /// of coming back from its first message with a backlog nobody asked for.
    async fn widened(
        &self,
        stream: &jetstream::stream::Stream<()>,
    ) -> Result<PullConsumer, LeftoverError> {
        let consumer: PullConsumer = stream
            .get_consumer(self.consumer)
            .await
            .map_err(|e| self.failed(e))?;
        let current = consumer.cached_info().config.clone();
        if current.max_ack_pending >= BATCH as i64 {
            return Ok(consumer);
        }
        let mut config =
            pull::Config::try_from_consumer_config(current).map_err(|e| self.failed(e))?;
        config.max_ack_pending = BATCH as i64;
        stream
            .update_consumer(config)
            .await
            .map_err(|e| self.failed(e))
    }

    /// Publishes a copy of `msg` with `headers` to the endpoint's subject, once stored;
    /// `Ok(None)` when the copy is larger than the server's `max_payload` (it never
    /// fits: `reason` says why).
    async fn store(
        &self,
        headers: async_nats::HeaderMap,
        msg: &jetstream::Message,
        reason: &mut String,
    ) -> Result<Option<PublishAck>, LeftoverError> {
        let published = self
            .js
            .publish_with_headers(
                self.work.subject(self.endpoint),
                headers,
                msg.payload.clone(),
            )
            .await;
        match published {
            Ok(ack) => ack.await.map(Some).map_err(|e| self.failed(e)),
            Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                *reason = copy::too_large(&e);
                Ok(None)
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    /// Dead-letters `msg`, whose copy does not fit in `max_payload`, as the fan-out
    /// does for such a message, with the `attempts` it had: otherwise every drain would
    /// fail on it, and the former consumer would never go.
    async fn dead_letter_too_large(
        &self,
        msg: &jetstream::Message,
        attempts: u32,
        reason: &str,
    ) -> Result<(), LeftoverError> {
        let Some(worker) = (self.worker)() else {
            return Err(self.failed("the endpoint no longer reads copies"));
        };
        if !worker.dead_letter_uncopied(msg, attempts, reason).await {
            return Err(self.failed(format!(
                "the dead letter of a message whose copy does not fit was not written ({reason})"
            )));
        }
        Ok(())
    }

    /// Whether the copy stored at `sequence` of the endpoint's work stream, which a
    /// publish was taken as a duplicate of, is gone because the endpoint's copies were
    /// removed (`store::forgotten`), rather than delivered and released, or still
    /// there.
    async fn removed_since(&self, sequence: u64) -> Result<bool, LeftoverError> {
        let name = self.work.name_of(self.endpoint);
        let stream = self
            .js
            .get_stream_no_info(name)
            .await
            .map_err(|e| self.failed(e))?;
        match stream.get_raw_message(sequence).await {
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {}
            Err(e) => return Err(self.failed(e)),
        }
        self.forgotten
            .removed(self.endpoint, sequence)
            .await
            .map_err(|e| self.failed(e))
    }

    /// Stores `msg`'s copy for the endpoint, then acks it.
    async fn move_one(&self, msg: &jetstream::Message) -> Result<(), LeftoverError> {
        let info = msg.info().map_err(|e| self.failed(e))?;
        let facts = SourceFacts::of_source(msg, &info);
        // This delivery to the drain is no attempt, nor those noted as none.
        let before = u32::try_from(info.delivered.saturating_sub(1)).unwrap_or(u32::MAX);
        let delivered = Delivered::of(msg);
        let noted = match &delivered {
            Some(d) if before > 0 => self.unattempted.of(d).await.unwrap_or(0),
            _ => 0,
        };
        let attempts = before.saturating_sub(noted);
        let mut headers =
            leftover_copy_headers(msg.headers.as_ref(), &facts, self.endpoint, attempts);
        let id = headers
            .get(NATS_MSG_ID)
            .map(|v| v.as_str().to_string())
            .unwrap_or_default();
        let mut reason = String::new();
        let mut stored = self.store(headers.clone(), msg, &mut reason).await?;
        // A copy that fits only without the attempts it carries goes without them: the
        // fan-out's copy of the message carries none and fits, and whether a message is
        // dead-lettered as too large must not depend on which of the two comes upon it.
        if stored.is_none() && attempts > 0 {
            headers = leftover_copy_headers(msg.headers.as_ref(), &facts, self.endpoint, 0);
            stored = self.store(headers.clone(), msg, &mut reason).await?;
        }
        let Some(mut stored) = stored else {
            self.dead_letter_too_large(msg, attempts, &reason).await?;
            return self.settle(msg, delivered.filter(|_| noted > 0)).await;
        };
        // An id of a copy removed within the duplicate window (the endpoint was made
        // `ordered` and unordered again) would have this one dropped as its duplicate:
        // it is stored under an id naming the removed copy instead, the same on every
        // try, so a retried move still stores it once.
        let mut tries = 0;
        while stored.duplicate && self.removed_since(stored.sequence).await? {
            tries += 1;
            if tries > RESTORE_TRIES {
                return Err(self.failed(format!(
                    "copy of sequence {} not stored: its ids were all of removed copies",
                    facts.sequence
                )));
            }
            headers.insert(NATS_MSG_ID, format!("{id}.{}", stored.sequence).as_str());
            stored = match self.store(headers.clone(), msg, &mut reason).await? {
                Some(stored) => stored,
                // The longer id leaves no room: as for a copy that never fitted, or
                // every drain would fail here until the duplicate window passed.
                None => {
                    self.dead_letter_too_large(msg, attempts, &reason).await?;
                    return self.settle(msg, delivered.filter(|_| noted > 0)).await;
                }
            };
        }
        self.settle(msg, delivered.filter(|_| noted > 0)).await
    }

    /// Acks `msg`, moved or dead-lettered, and forgets its deliveries noted as no
    /// attempt (`noted`).
    async fn settle(
        &self,
        msg: &jetstream::Message,
        noted: Option<Delivered<'_>>,
    ) -> Result<(), LeftoverError> {
        msg.ack_with(AckKind::Ack)
            .await
            .map_err(|e| self.failed(e))?;
        if let Some(d) = noted {
            if let Err(e) = self.unattempted.forget(&d).await {
                tracing::debug!(endpoint = self.endpoint, error = %e, "a moved message's unattempted deliveries not forgotten");
            }
        }
        Ok(())
    }
}
