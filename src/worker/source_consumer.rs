//! An `ordered` endpoint's own consumer on the source stream while fan-out is on:
//! made after the endpoint's copies still waiting, taken back (and reset) from a drain
//! that moved its messages out as copies, and the copies removed once the consumer
//! reads from before all of them, unless one is the only record left of its message.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::consumer::{self, DeliverPolicy};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::stream::Stream;

use super::Worker;
use crate::store::work_stream::WorkStream;
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
pub(super) enum TakenBack {
    /// It is the endpoint's to read.
    Kept,
    /// It was deleted meanwhile (its drain finished on a replica that still reads
    /// copies for the endpoint): it is made again after the copies still waiting.
    Gone,
}

/// Whether a drain (`fanout::leftover`) has widened this `ordered` endpoint's consumer,
/// whose own window is one message: it may have moved messages out as copies.
pub(super) fn drained(info: &consumer::Info) -> bool {
    info.config.max_ack_pending > 1
}

/// A consumer's start right after stream sequence `handled`.
fn start_after(handled: u64) -> DeliverPolicy {
    DeliverPolicy::ByStartSequence {
        start_sequence: handled + 1,
    }
}

impl Worker {
    /// Stops this process's drain of the endpoint's consumer on the source stream, if
    /// one runs (`worker::drains`), and waits for its end.
    pub(super) async fn stop_drain(&self) -> Result<(), String> {
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
    pub(super) async fn take_back(&self, stream: &Stream<()>) -> Result<TakenBack, String> {
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
    pub(super) async fn forget_copies_ahead(&self, info: &consumer::Info) -> Result<(), String> {
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
    pub(super) async fn make_source_consumer(
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
