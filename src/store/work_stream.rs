//! The work stream of `[delivery] fan_out`: one copy of a source message per endpoint
//! that delivers it, on the subject `<prefix>.work.<stream>.<endpoint>`. An endpoint's
//! retries, holds and pauses then live on its own subject, read by a consumer that
//! exists only while the endpoint has work, so an idle endpoint costs JetStream
//! nothing and the source stream needs one consumer, not one per endpoint.
//!
//! A copy carries what delivery needs from the source message in `Natshook-Source-*`
//! headers (subject, stream, sequence, publish time, `Nats-Msg-Id`), so its id, event,
//! tenant and envelope are the ones the source message gives: a copy delivered twice
//! carries the same id as the source message would. Its own `Nats-Msg-Id` names the
//! source message and the endpoint, so copying the same message again (a redelivered
//! source message) stores nothing new within the duplicate window.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;

use crate::config::NatsConfig;

const SOURCE_SUBJECT: &str = "Natshook-Source-Subject";
const SOURCE_STREAM: &str = "Natshook-Source-Stream";
const SOURCE_SEQUENCE: &str = "Natshook-Source-Sequence";
/// Unix nanoseconds.
const SOURCE_PUBLISHED: &str = "Natshook-Source-Published";
const SOURCE_MSG_ID: &str = "Natshook-Source-Msg-Id";
const INTERNAL_PREFIX: &str = "Natshook-Source-";
pub const NATS_MSG_ID: &str = "Nats-Msg-Id";

/// How long a copy's id is remembered: a source message redelivered within it (the
/// fan-out died between storing its copies and acking it) is not copied twice.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
#[error("work stream {stream}: {message}")]
pub struct WorkStreamError {
    stream: String,
    message: String,
}

/// Where the copies live: the stream and its subjects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkStream {
    name: String,
    /// `<prefix>.work.<stream>.`
    subject_prefix: String,
    replicas: usize,
}

/// What delivery reads from a message: the source message's facts, from the message
/// itself or, for a copy, from its `Natshook-Source-*` headers.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceFacts {
    pub subject: String,
    pub stream: String,
    pub sequence: u64,
    pub published: SystemTime,
}

impl WorkStream {
    pub fn new(nats: &NatsConfig) -> Self {
        Self {
            name: format!("{}_{}_WORK", nats.stream, nats.consumer_prefix),
            subject_prefix: format!("{}.work.{}.", nats.consumer_prefix, nats.stream),
            replicas: nats.replicas,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The subject of `endpoint`'s copies.
    pub fn subject(&self, endpoint: &str) -> String {
        format!("{}{endpoint}", self.subject_prefix)
    }

    /// Every endpoint's subject, for listing which endpoints have work.
    pub fn all_subjects(&self) -> String {
        format!("{}>", self.subject_prefix)
    }

    /// The endpoint a copy's subject names.
    pub fn endpoint_of<'a>(&self, subject: &'a str) -> Option<&'a str> {
        subject
            .strip_prefix(self.subject_prefix.as_str())
            .filter(|e| !e.is_empty() && !e.contains('.'))
    }

    /// Creates the stream when it is missing. Work-queue retention: a copy is removed
    /// once its endpoint acked it, so the stream holds exactly the work not done yet.
    pub async fn ensure(&self, js: &jetstream::Context) -> Result<(), WorkStreamError> {
        js.get_or_create_stream(stream::Config {
            name: self.name.clone(),
            description: Some(
                "natshook: each message copied once per endpoint that delivers it".into(),
            ),
            subjects: vec![self.all_subjects()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            duplicate_window: DUPLICATE_WINDOW,
            // One consumer per endpoint with work; the server's default (1,000) would
            // cap the endpoints that can be busy at once.
            max_consumers: i32::MAX,
            ..Default::default()
        })
        .await
        .map(drop)
        .map_err(|e| WorkStreamError {
            stream: self.name.clone(),
            message: e.to_string(),
        })
    }

    /// The headers of `endpoint`'s copy of a source message: its own headers (less any
    /// `Natshook-Source-*` a publisher set, which must not pass for ours), the facts
    /// delivery needs, and an id that makes a second copy a duplicate.
    pub fn copy_headers(
        &self,
        source: Option<&HeaderMap>,
        facts: &SourceFacts,
        endpoint: &str,
    ) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(h) = source {
            for (name, values) in h.iter() {
                let name: &str = name.as_ref();
                if is_internal(name) {
                    continue;
                }
                let target = if name.eq_ignore_ascii_case(NATS_MSG_ID) {
                    SOURCE_MSG_ID
                } else {
                    name
                };
                for v in values {
                    headers.append(target, v.as_str());
                }
            }
        }
        let nanos = facts
            .published
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        headers.insert(SOURCE_SUBJECT, facts.subject.as_str());
        headers.insert(SOURCE_STREAM, facts.stream.as_str());
        headers.insert(SOURCE_SEQUENCE, facts.sequence.to_string().as_str());
        headers.insert(SOURCE_PUBLISHED, nanos.to_string().as_str());
        headers.insert(
            NATS_MSG_ID,
            format!("{}.{}.{endpoint}", facts.stream, facts.sequence).as_str(),
        );
        headers
    }

    /// A copy's source facts, or `None` when `msg` is not from this work stream (a
    /// message on the source stream is read as it is, whatever headers it has).
    pub fn source_of(&self, msg: &jetstream::Message, stream: &str) -> Option<SourceFacts> {
        if stream != self.name {
            return None;
        }
        let h = msg.headers.as_ref()?;
        let get = |name: &str| h.get(name).map(|v| v.as_str());
        let nanos: u64 = get(SOURCE_PUBLISHED)?.parse().ok()?;
        Some(SourceFacts {
            subject: get(SOURCE_SUBJECT)?.to_string(),
            stream: get(SOURCE_STREAM)?.to_string(),
            sequence: get(SOURCE_SEQUENCE)?.parse().ok()?,
            published: UNIX_EPOCH + Duration::from_nanos(nanos),
        })
    }
}

/// A header natshook puts on a copy: never passed on to a receiver or a record.
pub fn is_internal(name: &str) -> bool {
    name.len() >= INTERNAL_PREFIX.len()
        && name[..INTERNAL_PREFIX.len()].eq_ignore_ascii_case(INTERNAL_PREFIX)
}

/// A message's NATS headers as (name, value) pairs, each value of a repeated name; a
/// copy's (`copy`) as its source message had them.
pub fn header_pairs(msg: &jetstream::Message, copy: bool) -> impl Iterator<Item = (&str, &str)> {
    msg.headers.iter().flat_map(move |h| {
        h.iter()
            .filter_map(move |(name, values)| {
                let name = as_source_header(name.as_ref(), copy)?;
                Some(values.iter().map(move |v| (name, v.as_str())))
            })
            .flatten()
    })
}

/// A copy's header as the source message had it: `Natshook-Source-Msg-Id` is the
/// source's `Nats-Msg-Id`, the copy's own `Nats-Msg-Id` and the other source facts
/// are not message headers. `None`: leave the header out.
pub fn as_source_header(name: &str, copy: bool) -> Option<&str> {
    if !copy {
        return Some(name);
    }
    if name.eq_ignore_ascii_case(SOURCE_MSG_ID) {
        return Some(NATS_MSG_ID);
    }
    if is_internal(name) || name.eq_ignore_ascii_case(NATS_MSG_ID) {
        return None;
    }
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work() -> WorkStream {
        WorkStream {
            name: "EVENTS_natshook_WORK".into(),
            subject_prefix: "natshook.work.EVENTS.".into(),
            replicas: 1,
        }
    }

    #[test]
    fn subjects_name_their_endpoint() {
        let w = work();
        assert_eq!(w.subject("crm"), "natshook.work.EVENTS.crm");
        assert_eq!(w.endpoint_of("natshook.work.EVENTS.crm"), Some("crm"));
        assert_eq!(w.endpoint_of("natshook.work.EVENTS."), None);
        assert_eq!(w.endpoint_of("natshook.work.OTHER.crm"), None);
        assert_eq!(w.endpoint_of("natshook.work.EVENTS.a.b"), None);
    }

    #[test]
    fn a_copy_keeps_the_source_headers_and_hides_forged_ones() {
        let mut source = HeaderMap::new();
        source.insert("Nats-Msg-Id", "order-1");
        source.insert("X-Custom", "v");
        source.insert("natshook-source-subject", "forged");
        let facts = SourceFacts {
            subject: "orders.created".into(),
            stream: "EVENTS".into(),
            sequence: 42,
            published: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        };
        let h = work().copy_headers(Some(&source), &facts, "crm");
        assert_eq!(
            h.get("Nats-Msg-Id").map(|v| v.as_str()),
            Some("EVENTS.42.crm")
        );
        assert_eq!(h.get(SOURCE_MSG_ID).map(|v| v.as_str()), Some("order-1"));
        assert_eq!(h.get("X-Custom").map(|v| v.as_str()), Some("v"));
        assert_eq!(
            h.get(SOURCE_SUBJECT).map(|v| v.as_str()),
            Some("orders.created")
        );
        assert_eq!(as_source_header(SOURCE_MSG_ID, true), Some("Nats-Msg-Id"));
        assert_eq!(as_source_header("Nats-Msg-Id", true), None);
        assert_eq!(as_source_header(SOURCE_SUBJECT, true), None);
        assert_eq!(as_source_header("X-Custom", true), Some("X-Custom"));
        assert_eq!(as_source_header("Nats-Msg-Id", false), Some("Nats-Msg-Id"));
    }
}
