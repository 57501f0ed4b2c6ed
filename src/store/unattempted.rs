//! Deliveries that were no attempt. JetStream counts every delivery of a message to a
//! consumer, and natshook reads that count as the attempt number. A message fetched
//! but never started when the process stops (held by a pause, or waiting for a
//! `rate_limit` token or a share of `max_inflight`) is NAKed for the next process, and
//! its next delivery counts one more: a pause that outlives a few restarts (a rolling
//! deploy each day) would bring its held messages to their last attempt untried.
//!
//! So before that NAK, natshook adds one to the message's key
//! `unattempted.<consumer>.<stream>.<sequence>` in the `NATSHOOK_STATE` bucket. A later
//! delivery that counts more than one attempt, on any replica, reads the key and
//! subtracts it; the key goes once the message is settled for good (acked, or
//! dead-lettered). A process killed outright writes nothing, and its held messages
//! count one attempt more, as an attempt in flight does.

use bytes::Bytes;

use super::pause_state::{PauseState, StateError};

const PREFIX: &str = "unattempted.";

fn access(e: impl std::fmt::Display) -> StateError {
    StateError::Access(e.to_string())
}

/// A message as its consumer sees it: the consumer, the stream it reads, the
/// message's sequence there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Delivered<'a> {
    pub consumer: &'a str,
    pub stream: &'a str,
    pub sequence: u64,
}

impl Delivered<'_> {
    fn key(&self) -> String {
        format!(
            "{PREFIX}{}.{}.{}",
            self.consumer, self.stream, self.sequence
        )
    }
}

/// The ledger of unattempted deliveries. Cheap to clone.
#[derive(Clone)]
pub struct Unattempted {
    state: PauseState,
}

impl Unattempted {
    /// In the bucket `state` keeps.
    pub fn new(state: PauseState) -> Self {
        Self { state }
    }

    /// Counts one more unattempted delivery of each message.
    pub async fn add(&self, messages: &[Delivered<'_>]) -> Result<(), StateError> {
        if messages.is_empty() {
            return Ok(());
        }
        let store = self.state.store().await?;
        for m in messages {
            let key = m.key();
            let before = store.get(key.as_str()).await.map_err(access)?;
            let count = before.as_deref().map_or(0, parse) + 1;
            store
                .put(key, Bytes::from(count.to_string()))
                .await
                .map_err(access)?;
        }
        Ok(())
    }

    /// How many deliveries of the message were no attempt.
    pub async fn of(&self, message: &Delivered<'_>) -> Result<u32, StateError> {
        let store = self.state.store().await?;
        let value = store.get(message.key()).await.map_err(access)?;
        Ok(value.as_deref().map_or(0, parse))
    }

    /// Forgets a message settled for good.
    pub async fn forget(&self, message: &Delivered<'_>) -> Result<(), StateError> {
        let store = self.state.store().await?;
        store.purge(message.key()).await.map_err(access)
    }
}

/// A count as stored; anything else counts nothing.
fn parse(value: &[u8]) -> u32 {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_the_consumer_stream_and_sequence() {
        let m = Delivered {
            consumer: "natshook-acme",
            stream: "EVENTS",
            sequence: 42,
        };
        assert_eq!(m.key(), "unattempted.natshook-acme.EVENTS.42");
    }

    #[test]
    fn a_value_that_is_no_count_counts_nothing() {
        assert_eq!(parse(b"3"), 3);
        assert_eq!(parse(b"x"), 0);
        assert_eq!(parse(b""), 0);
        assert_eq!(parse(&[0xff]), 0);
    }
}
