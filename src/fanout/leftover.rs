//! A fan-out endpoint's leftover consumer on the source stream: the one it read while
//! it was `ordered` (ordered endpoints keep a source consumer, see `fanout`), or before
//! `fan_out` was switched on.
//!
//! While an endpoint reads a consumer of its own on the source stream, the fan-out
//! makes no copies for it. Once it reads copies instead, the messages its old consumer
//! still holds (waiting, or waiting out a retry) would be read by nobody, so every
//! replica that sees such a consumer moves its messages to the endpoint's subject of
//! the work stream, as the fan-out copies a message, with the attempts they had, and
//! deletes the consumer once it holds nothing. A message the fan-out copies anyway (it
//! came after the switch) is acked without a copy; one copied twice within the work
//! stream's duplicate window is stored once.

use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, consumer::PullConsumer, message::AckKind};
use futures_util::StreamExt;

use crate::store::work_stream::{SourceFacts, WorkStream};

/// How long one fetch waits for the leftover's messages; a retry waiting out its delay
/// is looked for again after this.
const FETCH_WAIT: Duration = Duration::from_secs(2);

/// Messages moved per fetch.
const BATCH: usize = 256;

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
    /// The source stream and the fan-out's consumer on it.
    pub stream: &'a str,
    pub fan_out: &'a str,
    /// The leftover consumer and its endpoint.
    pub consumer: &'a str,
    pub endpoint: &'a str,
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
    /// moved. An error leaves the rest for the next call: nothing is acked before its
    /// copy is stored.
    pub async fn drain(&self) -> Result<u64, LeftoverError> {
        let stream = self
            .js
            .get_stream_no_info(self.stream)
            .await
            .map_err(|e| self.failed(e))?;
        // Messages after what the fan-out has been handed are copied by the fan-out now
        // that the endpoint reads copies (the switch came before this was called).
        let cut = stream
            .consumer_info(self.fan_out)
            .await
            .map_err(|e| self.failed(e))?
            .delivered
            .stream_sequence;
        let consumer: PullConsumer = stream
            .get_consumer(self.consumer)
            .await
            .map_err(|e| self.failed(e))?;
        let mut moved = 0;
        loop {
            let mut batch = consumer
                .fetch()
                .max_messages(BATCH)
                .expires(FETCH_WAIT)
                .messages()
                .await
                .map_err(|e| self.failed(e))?;
            let mut fetched = 0;
            while let Some(msg) = batch.next().await {
                let msg = msg.map_err(|e| self.failed(e))?;
                fetched += 1;
                if self.move_one(&msg, cut).await? {
                    moved += 1;
                }
            }
            if fetched > 0 {
                continue;
            }
            let info = stream
                .consumer_info(self.consumer)
                .await
                .map_err(|e| self.failed(e))?;
            if info.num_pending == 0 && info.num_ack_pending == 0 {
                stream
                    .delete_consumer(self.consumer)
                    .await
                    .map_err(|e| self.failed(e))?;
                return Ok(moved);
            }
        }
    }

    /// Stores `msg`'s copy for the endpoint (unless the fan-out copies it), then acks it;
    /// `true` when a copy was stored.
    async fn move_one(&self, msg: &jetstream::Message, cut: u64) -> Result<bool, LeftoverError> {
        let info = msg.info().map_err(|e| self.failed(e))?;
        let copy = info.stream_sequence <= cut;
        if copy {
            let facts = SourceFacts {
                subject: msg.subject.to_string(),
                stream: info.stream.to_string(),
                sequence: info.stream_sequence,
                published: SystemTime::from(info.published),
            };
            // This delivery to the drain is no attempt.
            let attempts = u32::try_from(info.delivered.saturating_sub(1)).unwrap_or(u32::MAX);
            let headers = self.work.leftover_copy_headers(
                msg.headers.as_ref(),
                &facts,
                self.endpoint,
                attempts,
            );
            self.js
                .publish_with_headers(
                    self.work.subject(self.endpoint),
                    headers,
                    msg.payload.clone(),
                )
                .await
                .map_err(|e| self.failed(e))?
                .await
                .map_err(|e| self.failed(e))?;
        }
        msg.ack_with(AckKind::Ack)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(copy)
    }
}
