//! One fetched message: route it, deliver it, settle it with JetStream (ack, NAK with
//! the delay for that attempt, pause, or dead letter). Never panics, never leaves a
//! message without an ack, NAK or dead letter (except when NATS itself is unreachable,
//! where JetStream redelivers after ack_wait).

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, message::AckKind};
use tokio_util::sync::CancellationToken;

use super::breaker::PauseReason;
use super::outcome::{decide, Decision};
use super::{progress_every, Worker};
use crate::backoff::jitter;
use crate::delivery::{Attempt, AttemptResult};
use crate::envelope::{self, MessageFacts};
use crate::metrics::Outcome;
use crate::routing::Verdict;
use crate::store::copy::{self, header_pairs, NATS_MSG_ID};
use crate::store::delivery_log::Attempted;
use crate::store::unattempted::Delivered;
use crate::store::work_stream::WorkStream;
use crate::time;

mod dead_letter;

/// The longest retry delay a copy waits out on the lane.
const LANE_WAIT_MAX: Duration = Duration::from_secs(5);

/// The JetStream metadata of a fetched message, read once: for a copy on the work
/// stream (`[delivery] fan_out`), the source message's.
struct MessageMeta {
    subject: String,
    /// The delivery count, which is the attempt number; for a copy moved off the lane,
    /// plus the attempts it had there.
    attempt: u32,
    stream: String,
    sequence: u64,
    published: SystemTime,
    /// A copy on the work stream: its headers are read through `store::copy::header_pairs`.
    copy: bool,
    /// A copy on the lane: a long retry delay moves it off (see `settle`).
    on_lane: bool,
    /// A copy moved off the lane to wait out its retry delay: its first delivery only
    /// waits (a NAK with that delay), and is no attempt.
    wait_first: Option<Duration>,
    /// Deliveries that were no attempt (`store::unattempted`), taken off `attempt`;
    /// their note goes once the message is settled for good.
    unattempted: u32,
}

impl MessageMeta {
    fn of(msg: &jetstream::Message, work: Option<&WorkStream>) -> Option<Self> {
        let info = msg.info().ok()?;
        if let Some((work, source)) = work.and_then(|w| Some((w, w.source_of(msg, info.stream)?))) {
            let attempt = work.attempt_of(msg, info.stream, info.delivered);
            return Some(Self {
                subject: source.subject,
                attempt: attempt.number,
                stream: source.stream,
                sequence: source.sequence,
                published: source.published,
                copy: true,
                on_lane: work.is_lane(info.stream),
                wait_first: attempt.wait_first,
                unattempted: 0,
            });
        }
        Some(Self {
            subject: msg.subject.as_str().to_owned(),
            attempt: u32::try_from(info.delivered).unwrap_or(u32::MAX).max(1),
            stream: info.stream.to_string(),
            sequence: info.stream_sequence,
            published: SystemTime::from(info.published),
            copy: false,
            on_lane: false,
            wait_first: None,
            unattempted: 0,
        })
    }
}

/// A message this endpoint delivers: its metadata, its event, tenant and id. It
/// borrows the message, which `handle`'s future holds once for the whole delivery.
struct Routed<'m> {
    msg: &'m jetstream::Message,
    meta: MessageMeta,
    event: String,
    /// See [`crate::routing::Mapped::event_from_subject`].
    event_from_subject: bool,
    tenant: Option<String>,
    id: String,
}

impl Worker {
    /// Delivers one message and settles it with JetStream.
    ///
    /// An `async` block rather than an `async fn`: an `async fn` keeps its arguments
    /// twice in its state, and this state is built for every message. The message is
    /// borrowed from the delivery task that owns it, so that it is not a second time
    /// in this state (hundreds of bytes with its JetStream context).
    #[allow(clippy::manual_async_fn)]
    pub(super) fn handle<'a>(
        &'a self,
        msg: &'a jetstream::Message,
        abort: &'a CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'a {
        async move {
            let mut m = match self.route(msg) {
                Ok(m) => m,
                Err(settle) => {
                    self.ack(msg, settle).await;
                    // Acked without a request (skipped, unmapped, unwanted, filtered):
                    // an earlier delivery may have been noted as no attempt.
                    let redelivered = msg.info().is_ok_and(|i| i.delivered > 1);
                    if matches!(settle, AckKind::Ack) && redelivered {
                        Box::pin(self.forget_unattempted(msg)).await;
                    }
                    return;
                }
            };
            if m.meta.attempt > 1 {
                Box::pin(self.take_off_unattempted(&mut m)).await;
            }
            if m.meta.attempt > self.endpoint.max_attempts {
                // Back after its dead letter could not be written here: no more
                // requests. (A delivery count can also rise without a request, so
                // past `max_attempts` alone is no proof its attempts were made.)
                let kept = (self.shared.unwritten).take(
                    &self.endpoint.name,
                    &m.meta.stream,
                    m.meta.sequence,
                );
                if let Some(kept) = kept {
                    // Written as it was made, its time included: when the first write
                    // was stored and only its ack lost, the stream takes this one as
                    // its duplicate (`DeadLetter::msg_id`).
                    Box::pin(self.write_dead_letter(&m, kept)).await;
                    return;
                }
            }
            if let Some(reason) = m.meta.copy.then(|| copy::uncopied(m.msg)).flatten() {
                Box::pin(self.dead_letter_stand_in(&m, reason)).await;
                return;
            }
            if m.msg.payload.len() > self.endpoint.max_body {
                let reason = format!(
                    "payload of {} bytes exceeds max_body ({} bytes)",
                    m.msg.payload.len(),
                    self.endpoint.max_body
                );
                Box::pin(self.dead_letter(&m, 0, None, ("max_body", &reason))).await;
                return;
            }
            self.deliver(&m, abort).await;
        }
    }

    /// Takes the deliveries of `m` that were no attempt (held when a process stopped)
    /// off its attempt number. Without the ledger, the count stands.
    async fn take_off_unattempted(&self, m: &mut Routed<'_>) {
        let Some(delivered) = Delivered::of(m.msg) else {
            return;
        };
        match self.shared.unattempted.of(&delivered).await {
            Ok(0) => {}
            Ok(n) => {
                m.meta.attempt = m.meta.attempt.saturating_sub(n).max(1);
                m.meta.unattempted = n;
            }
            Err(e) => {
                tracing::debug!(endpoint = %self.endpoint.name, error = %e, "unattempted deliveries not read; the delivery count stands");
            }
        }
    }

    /// Forgets the unattempted deliveries noted for `msg`, settled for good (here, or
    /// as a copy moved off the lane, which counts on from the attempts it carries).
    async fn forget_unattempted(&self, msg: &jetstream::Message) {
        let Some(delivered) = Delivered::of(msg) else {
            return;
        };
        if let Err(e) = self.shared.unattempted.forget(&delivered).await {
            tracing::debug!(endpoint = %self.endpoint.name, error = %e, "a settled message's unattempted deliveries not forgotten");
        }
    }

    /// The message with its event, tenant and id when this endpoint delivers it
    /// (`routing` decides, whatever the consumer filter let through); otherwise how to
    /// settle it without a request: NAK without JetStream metadata, ack when unmapped,
    /// another event or another tenant's.
    fn route<'m>(&self, msg: &'m jetstream::Message) -> Result<Routed<'m>, AckKind> {
        let Some(meta) = MessageMeta::of(msg, self.shared.work.as_ref()) else {
            tracing::warn!(endpoint = %self.endpoint.name, subject = %msg.subject, "message without JetStream metadata; NAK");
            return Err(AckKind::Nak(None));
        };
        if self.skips(meta.published, meta.sequence) {
            tracing::debug!(endpoint = %self.endpoint.name, sequence = meta.sequence, "stored before the endpoint was re-enabled with skip_backlog; acked");
            return Err(AckKind::Ack);
        }
        if let Some(wait) = meta.wait_first {
            return Err(AckKind::Nak(Some(wait)));
        }
        let verdict = self.router.decide(
            &meta.subject,
            header_pairs(msg, meta.copy),
            &self.endpoint.events,
            self.endpoint.tenant.as_deref(),
        );
        let mapped = match verdict {
            Verdict::Deliver(mapped) => mapped,
            Verdict::Unmapped => {
                // Counted once per message by `watch_unmapped`, not once per endpoint.
                tracing::debug!(endpoint = %self.endpoint.name, subject = %meta.subject, "unmapped subject; acked");
                return Err(AckKind::Ack);
            }
            Verdict::Unwanted => return Err(AckKind::Ack),
        };
        // A stand-in has no payload to filter: the fan-out stored it only for a
        // payload the filter let through.
        let stand_in = meta.copy && copy::uncopied(msg).is_some();
        if !stand_in && !self.endpoint.filter.matches(&msg.payload) {
            self.metrics.filtered.inc();
            tracing::debug!(endpoint = %self.endpoint.name, subject = %meta.subject, event = %mapped.event, "payload filter did not match; acked");
            return Err(AckKind::Ack);
        }
        let msg_id = header_pairs(msg, meta.copy)
            .find(|(name, _)| *name == NATS_MSG_ID)
            .map(|(_, v)| v);
        let id = envelope::message_id(msg_id, &meta.stream, meta.sequence);
        if let Some(header) = msg_id.filter(|h| *h != id) {
            self.warn_replaced_msg_id(header, &id);
        }
        Ok(Routed {
            msg,
            meta,
            event: mapped.event,
            event_from_subject: mapped.event_from_subject,
            tenant: mapped.tenant,
            id,
        })
    }

    /// Whether `msg` becomes a request, the verdict `route` and `handle` reach, without
    /// settling anything: only such a message takes a `rate_limit` token. Another
    /// tenant's message (every one, with a header tenant), an unwanted event or an
    /// oversized payload is settled without a request, and must not slow the
    /// endpoint's own messages.
    pub(super) fn becomes_request(&self, msg: &jetstream::Message) -> bool {
        let Some(meta) = MessageMeta::of(msg, self.shared.work.as_ref()) else {
            return false;
        };
        let verdict = self.router.decide(
            &meta.subject,
            header_pairs(msg, meta.copy),
            &self.endpoint.events,
            self.endpoint.tenant.as_deref(),
        );
        matches!(verdict, Verdict::Deliver(_))
            && msg.payload.len() <= self.endpoint.max_body
            && !self.skips(meta.published, meta.sequence)
            && !(meta.copy && copy::uncopied(msg).is_some())
    }

    /// Whether a message stored at `published` as `sequence` is part of the backlog
    /// the endpoint skips (created, or re-enabled with `skip_backlog`): acked without a
    /// request.
    ///
    /// Skipping happens here, message by message, rather than by creating the
    /// consumer again from that time: the acks cost little, and every replica and
    /// restart reaches the same verdict with nothing to coordinate, whereas deleting
    /// and creating a consumer under the same name while another replica does the same
    /// can leave nats-server with a consumer it cannot update.
    fn skips(&self, published: SystemTime, sequence: u64) -> bool {
        (self.endpoint.skip).is_some_and(|b| b.covers(published, sequence))
    }

    /// One attempt, logged, then settled.
    async fn deliver(&self, m: &Routed<'_>, abort: &CancellationToken) {
        if abort.is_cancelled() {
            // Not begun: making the attempt would sign it and start its trace span for
            // a request that is never sent.
            self.nak_at_shutdown(m).await;
            return;
        }
        let capture_headers = (self.shared.delivery_log.as_ref())
            .is_some_and(|log| log.has_room_for_success(&self.success_log));
        // Made in a block of its own, so that the facts are not kept in this future's
        // state while the attempt runs.
        let send = {
            let facts = MessageFacts {
                id: &m.id,
                event: &m.event,
                subject: &m.meta.subject,
                stream_sequence: m.meta.sequence,
                attempt: m.meta.attempt,
                published: m.meta.published,
                payload: &m.msg.payload,
                tenant: m.tenant.as_deref(),
            };
            let message_headers = header_pairs(m.msg, m.meta.copy);
            self.deliverer
                .deliver(&facts, message_headers, capture_headers)
        };
        let send = match send {
            Ok(send) => send,
            Err(e) => {
                let reason = e.to_string();
                Box::pin(self.dead_letter(m, 0, None, ("undeliverable", &reason))).await;
                return;
            }
        };
        self.metrics.inflight.inc();
        let result = self.attempt(m.msg, send, abort).await;
        self.metrics.inflight.dec();
        let Some(mut result) = result else {
            self.nak_at_shutdown(m).await;
            return;
        };
        let log = self.shared.delivery_log.as_ref().filter(|log| {
            // Every failed attempt is kept; successes are sampled under heavy load. Not
            // once the endpoint is deleted (a delivery the lane started outlives the
            // drain): its log is being removed, and one created again under the name
            // must not show these records.
            (!result.is_success() || log.keeps_success(&self.success_log))
                && self.records_deliveries()
        });
        if let Some(log) = log {
            let headers = std::mem::take(&mut result.request_headers);
            let attempted = Attempted {
                endpoint: &self.endpoint.name,
                event: &m.event,
                id: &m.id,
                tenant: m.tenant.as_deref(),
                attempt: m.meta.attempt,
            };
            Box::pin(log.record(attempted, &result, headers)).await;
        }
        self.settle(m, result).await;
    }

    /// Gives `m` back for another process (or this one, once restarted) to deliver at
    /// once: the shutdown grace is over.
    async fn nak_at_shutdown(&self, m: &Routed<'_>) {
        tracing::info!(endpoint = %self.endpoint.name, id = %m.id, "shutdown grace over; NAK for immediate redelivery");
        self.ack(m.msg, AckKind::Nak(None)).await;
    }

    /// Runs `send`, extending the message's ack timer while it runs; `None` when the
    /// shutdown grace ran out first.
    async fn attempt(
        &self,
        msg: &jetstream::Message,
        mut send: Attempt<'_>,
        abort: &CancellationToken,
    ) -> Option<AttemptResult> {
        // The request future (boxed by `deliver`), the dead-letter and log paths and the
        // progress ack are boxed: inline they would make every spawned delivery task
        // several times larger, and the task is copied (moved) per message.
        let Some(every) = progress_every(&self.endpoint) else {
            return tokio::select! {
                r = &mut send => Some(r),
                _ = abort.cancelled() => None,
            };
        };
        let progress = tokio::time::sleep(every);
        tokio::pin!(progress);
        loop {
            tokio::select! {
                r = &mut send => return Some(r),
                () = &mut progress => {
                    Box::pin(self.ack(msg, AckKind::Progress)).await;
                    progress.as_mut().reset(tokio::time::Instant::now() + every);
                }
                _ = abort.cancelled() => return None,
            }
        }
    }

    /// Logs, once per endpoint, that a `Nats-Msg-Id` was not used as the id, and why.
    #[cold]
    fn warn_replaced_msg_id(&self, header: &str, id: &str) {
        if self.msg_id_warned.swap(true, Ordering::Relaxed) {
            return;
        }
        let problem = envelope::msg_id_problem(header)
            .map(|p| p.to_string())
            .unwrap_or_default();
        // A header value can be as long as a message: the log gets its start.
        let mut shown: String = header.chars().take(80).collect();
        if shown.len() < header.len() {
            shown.push('…');
        }
        let rule = envelope::MSG_ID_RULE;
        tracing::warn!(
            endpoint = %self.endpoint.name,
            nats_msg_id = ?shown,
            id,
            "Nats-Msg-Id {problem}: a usable one is {rule}, so this message's id is {id} \
             (<stream>-<sequence>) instead; further messages with such an id are not logged"
        );
    }

    /// Counts `m`'s delivery in `natshook_deliveries_total`.
    fn count_delivery(&self, m: &Routed<'_>, outcome: Outcome) {
        self.metrics
            .delivery(&m.event, m.event_from_subject, outcome);
    }

    /// Acks a delivered message, or retries, pauses or dead-letters a failed one. The
    /// failure paths are boxed: this future sits in every delivery's state, which is
    /// copied into the heap per message, and a success needs none of theirs.
    async fn settle(&self, m: &Routed<'_>, result: AttemptResult) {
        let (msg, id, event, attempt) = (m.msg, m.id.as_str(), m.event.as_str(), m.meta.attempt);
        self.metrics.attempt(result.status);
        self.metrics.duration.observe(result.duration.as_secs_f64());
        let settled = SystemTime::now();
        let now = time::unix_millis(settled);
        let decision = decide(&result, attempt, &self.endpoint, jitter);
        if decision == Decision::Ack {
            self.ack(msg, AckKind::Ack).await;
            if m.meta.unattempted > 0 {
                Box::pin(self.forget_unattempted(m.msg)).await;
            }
            self.last_success_ms.store(now, Ordering::Relaxed);
            self.breaker.record_success();
            self.count_delivery(m, Outcome::Success);
            if let Ok(age) = settled.duration_since(m.meta.published) {
                self.metrics.end_to_end.observe(age.as_secs_f64());
            }
            tracing::debug!(endpoint = %self.endpoint.name, id, attempt, "delivered");
            return;
        }
        tracing::warn!(
            endpoint = %self.endpoint.name, id, event, attempt,
            status = result.http_status, error = %result.describe(),
            "delivery attempt failed"
        );
        self.last_failure_ms.store(now, Ordering::Relaxed);
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(result.describe());
        }
        self.breaker.record_failure();
        match decision {
            Decision::Ack => {}
            Decision::Pause(delay) => {
                self.breaker.pause(PauseReason::Gone);
                self.count_delivery(m, Outcome::Retry);
                Box::pin(self.retry_later(m, delay)).await;
            }
            Decision::DeadLetter => {
                let reason = format!("failed after {attempt} attempts");
                let reason = ("max_attempts", reason.as_str());
                Box::pin(self.dead_letter(m, attempt, Some(&result), reason)).await;
            }
            Decision::PauseAndDeadLetter => {
                self.breaker.pause(PauseReason::Gone);
                let reason = format!("failed after {attempt} attempts, the last answered 410 Gone");
                let reason = ("max_attempts", reason.as_str());
                Box::pin(self.dead_letter(m, attempt, Some(&result), reason)).await;
            }
            Decision::Retry(delay) => {
                self.count_delivery(m, Outcome::Retry);
                Box::pin(self.retry_later(m, delay)).await;
            }
        }
    }

    /// NAKs a failed attempt with its retry delay; a copy on the lane whose delay is
    /// longer than [`LANE_WAIT_MAX`] moves to the endpoint's own subject to wait there
    /// instead. A copy waiting on the lane holds the lane's ack floor, and below it every
    /// endpoint's later copies stay stored: for hours, with the default schedule.
    async fn retry_later(&self, m: &Routed<'_>, delay: Duration) {
        if let Some(work) = self.shared.work.as_ref().filter(|_| m.meta.on_lane) {
            if delay > LANE_WAIT_MAX {
                let moved = work
                    .move_off_lane(
                        &self.shared.js,
                        m.msg,
                        &self.endpoint.name,
                        m.meta.attempt,
                        Some(delay),
                    )
                    .await;
                match moved {
                    Ok(()) => {
                        self.ack(m.msg, AckKind::Ack).await;
                        if m.meta.unattempted > 0 {
                            Box::pin(self.forget_unattempted(m.msg)).await;
                        }
                        self.wake();
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(endpoint = %self.endpoint.name, error = %e, "the retry waits on the lane");
                    }
                }
            }
        }
        self.ack(m.msg, AckKind::Nak(Some(delay))).await;
    }
}
