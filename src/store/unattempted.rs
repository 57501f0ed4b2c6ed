//! Deliveries that were no attempt. JetStream counts every delivery of a message to a
//! consumer, and natshook reads that count as the attempt number. A message fetched
//! but never started when the process stops (held by a pause, or waiting for a
//! `rate_limit` token or a share of `max_inflight`) is NAKed for the next process, and
//! its next delivery counts one more: a pause that outlives a few restarts (a rolling
//! deploy each day) would bring its held messages to their last attempt untried.
//!
//! So before that NAK, natshook adds one to the message's note, the key
//! `unattempted.<consumer>.<stream>.<sequence>` in the `NATSHOOK_STATE` bucket. A later
//! delivery that counts more than one attempt, on any replica, reads the note and
//! subtracts it; the note goes once the message is settled for good. A note holds the
//! delivery it was last written at and the message's stored time: one whose message
//! is another (a stream created again reuses sequences) or whose consumer counts from
//! the start again (it was created again) counts nothing, and goes. A process killed
//! outright writes nothing, and its held messages count one attempt more, as an
//! attempt in flight does.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures_util::future::join_all;

use super::pause_state::{PauseState, StateError};

const PREFIX: &str = "unattempted.";

/// How long a message noted here waits before it comes back (its NAK's delay): a KV
/// replica that serves reads may lag the write by a moment.
pub const NAK_DELAY: Duration = Duration::from_secs(1);

/// The longest wait for the notes when a process stops: they count against its
/// shutdown, and a KV that does not answer must not hold it up.
const ADD_WAIT: Duration = Duration::from_secs(2);

/// The longest wait for a note before a retry: without an answer the delivery count
/// stands, rather than hold the retry up.
const READ_WAIT: Duration = Duration::from_millis(500);

/// A CAS write that lost to another writer is tried again this often.
const WRITE_TRIES: usize = 3;

fn access(e: impl std::fmt::Display) -> StateError {
    StateError::Access(e.to_string())
}

/// A delivery of a message, as the consumer that delivered it counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered<'a> {
    pub consumer: &'a str,
    pub stream: &'a str,
    pub sequence: u64,
    /// JetStream's count of deliveries, this one included.
    pub delivered: u64,
    /// When the stream stored the message, unix nanoseconds.
    pub stored: i128,
}

impl<'a> Delivered<'a> {
    /// This delivery of `msg`; `None` without JetStream metadata.
    pub fn of(msg: &'a jetstream::Message) -> Option<Self> {
        let info = msg.info().ok()?;
        Some(Self {
            consumer: info.consumer,
            stream: info.stream,
            sequence: info.stream_sequence,
            delivered: u64::try_from(info.delivered).unwrap_or(0),
            stored: info.published.unix_timestamp_nanos(),
        })
    }

    fn key(&self) -> String {
        format!(
            "{PREFIX}{}.{}.{}",
            key_token(self.consumer),
            key_token(self.stream),
            self.sequence
        )
    }
}

/// `name` as one token of a KV key, which allows `[-/_=.A-Za-z0-9]`: any other byte,
/// and `=` itself, is written `=XX` (hex), so two names never share a key.
pub(super) fn key_token(name: &str) -> String {
    let mut token = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            token.push(char::from(b));
        } else {
            token.push_str(&format!("={b:02X}"));
        }
    }
    token
}

/// A note's value: how many deliveries were no attempt, the last of them, and the
/// message's stored time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Note {
    count: u32,
    delivered: u64,
    stored: i128,
}

impl Note {
    fn parse(value: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(value).ok()?;
        let mut parts = text.split(' ');
        let note = Self {
            count: parts.next()?.parse().ok()?,
            delivered: parts.next()?.parse().ok()?,
            stored: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(note)
    }

    fn render(&self) -> Bytes {
        Bytes::from(format!("{} {} {}", self.count, self.delivered, self.stored))
    }

    /// Whether the note is of `d`'s message, from an earlier delivery by the same
    /// count.
    fn counts_for(&self, d: &Delivered<'_>) -> bool {
        self.stored == d.stored && self.delivered < d.delivered
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

    /// Notes each of `messages` as a delivery that was no attempt, all at once and
    /// within [`ADD_WAIT`].
    pub async fn add(&self, messages: &[Delivered<'_>]) -> Result<(), StateError> {
        if messages.is_empty() {
            return Ok(());
        }
        let all = async {
            let store = self.state.store().await?;
            let added = join_all(messages.iter().map(|m| add_one(store, m))).await;
            added.into_iter().collect::<Result<Vec<()>, _>>().map(drop)
        };
        tokio::time::timeout(ADD_WAIT, all)
            .await
            .map_err(|_| StateError::Access(format!("no answer within {ADD_WAIT:?}")))?
    }

    /// How many earlier deliveries of `d`'s message were no attempt. A note that is
    /// not of this message goes.
    pub async fn of(&self, d: &Delivered<'_>) -> Result<u32, StateError> {
        let read = async {
            let store = self.state.store().await?;
            let entry = store.entry(d.key()).await.map_err(access)?;
            let note = entry
                .filter(|e| e.operation == kv::Operation::Put)
                .map(|e| Note::parse(&e.value));
            match note {
                None => Ok(0),
                Some(Some(note)) if note.counts_for(d) => Ok(note.count),
                Some(_) => {
                    forget_key(store, &d.key()).await?;
                    Ok(0)
                }
            }
        };
        tokio::time::timeout(READ_WAIT, read)
            .await
            .map_err(|_| StateError::Access(format!("no answer within {READ_WAIT:?}")))?
    }

    /// Forgets `d`'s message, settled for good.
    pub async fn forget(&self, d: &Delivered<'_>) -> Result<(), StateError> {
        let store = self.state.store().await?;
        forget_key(store, &d.key()).await
    }

    /// Forgets the notes of every message of `consumer`, deleted with its endpoint: no
    /// delivery of them will come to settle them, and the bucket keeps what it holds
    /// for good.
    pub async fn forget_consumer(&self, consumer: &str) -> Result<(), StateError> {
        let store = self.state.store().await?;
        forget_key(store, &format!("{PREFIX}{}.>", key_token(consumer))).await
    }
}

/// One more unattempted delivery of `m`'s message, written only over the value read
/// (another process may note the same message after an ack timeout).
async fn add_one(store: &kv::Store, m: &Delivered<'_>) -> Result<(), StateError> {
    let key = m.key();
    let mut last = None;
    for _ in 0..WRITE_TRIES {
        let entry = store.entry(key.as_str()).await.map_err(access)?;
        let before = (entry.as_ref())
            .filter(|e| e.operation == kv::Operation::Put)
            .and_then(|e| Note::parse(&e.value))
            .filter(|n| n.counts_for(m));
        let note = Note {
            count: before.map_or(0, |n| n.count).saturating_add(1),
            delivered: m.delivered,
            stored: m.stored,
        };
        let written = match entry {
            Some(e) => store
                .update(key.as_str(), note.render(), e.revision)
                .await
                .map(drop)
                .map_err(access),
            None => store
                .create(key.as_str(), note.render())
                .await
                .map(drop)
                .map_err(access),
        };
        match written {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| StateError::Access("not written".into())))
}

/// Removes a note with no trace: a KV delete or purge would leave a marker per note
/// in the bucket for good.
async fn forget_key(store: &kv::Store, key: &str) -> Result<(), StateError> {
    store
        .stream
        .purge()
        .filter(format!("{}{key}", store.prefix))
        .await
        .map(drop)
        .map_err(access)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivered(delivered: u64, stored: i128) -> Delivered<'static> {
        Delivered {
            consumer: "natshook-acme",
            stream: "EVENTS",
            sequence: 42,
            delivered,
            stored,
        }
    }

    #[test]
    fn keys_name_the_consumer_stream_and_sequence_in_key_characters() {
        assert_eq!(delivered(1, 0).key(), "unattempted.natshook-acme.EVENTS.42");
        let odd = Delivered {
            consumer: "a=b",
            stream: "ORDERS@eu",
            ..delivered(1, 0)
        };
        assert_eq!(odd.key(), "unattempted.a=3Db.ORDERS=40eu.42");
    }

    #[test]
    fn a_note_counts_only_for_later_deliveries_of_its_message() {
        let note = Note {
            count: 2,
            delivered: 3,
            stored: 7,
        };
        assert_eq!(Note::parse(&note.render()), Some(note));
        assert!(note.counts_for(&delivered(4, 7)));
        // The consumer counts from the start again, or the sequence is another message's.
        assert!(!note.counts_for(&delivered(3, 7)));
        assert!(!note.counts_for(&delivered(2, 7)));
        assert!(!note.counts_for(&delivered(9, 8)));
    }

    #[test]
    fn a_value_that_is_no_note_counts_nothing() {
        assert_eq!(Note::parse(b"3"), None);
        assert_eq!(Note::parse(b"1 2 3 4"), None);
        assert_eq!(Note::parse(b"x 2 3"), None);
        assert_eq!(Note::parse(&[0xff]), None);
    }
}
