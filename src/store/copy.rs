//! What a copy on the work stream (`[delivery] fan_out`, [`super::work_stream`])
//! carries besides the source message's payload: its headers.
//!
//! A copy carries what delivery needs from the source message in `Natshook-Source-*`
//! headers (subject, stream, sequence, publish time, `Nats-Msg-Id`), so its id, event,
//! tenant and envelope are the ones the source message gives: a copy delivered twice
//! carries the same id as the source message would. Its own `Nats-Msg-Id` names the
//! source message and the endpoint, so copying the same message again (a redelivered
//! source message) stores nothing new within the duplicate window.
//!
//! A copy that had attempts before it was stored where it is read (moved off the lane,
//! or out of an endpoint's former consumer) carries them too, and one moved off the
//! lane to wait out a retry delay carries that delay, so its attempt numbers go on.
//! A publisher's own `Natshook-Source-*` headers are dropped: they must not pass for
//! natshook's, and none of them reaches a receiver or a record.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream;
use async_nats::HeaderMap;

const SOURCE_SUBJECT: &str = "Natshook-Source-Subject";
const SOURCE_STREAM: &str = "Natshook-Source-Stream";
const SOURCE_SEQUENCE: &str = "Natshook-Source-Sequence";
/// Unix nanoseconds.
const SOURCE_PUBLISHED: &str = "Natshook-Source-Published";
const SOURCE_MSG_ID: &str = "Natshook-Source-Msg-Id";
/// Attempts made on a copy before it moved from the lane to its endpoint's subject.
const SOURCE_ATTEMPTS: &str = "Natshook-Source-Attempts";
/// Milliseconds a moved copy waits before its next attempt (its retry delay).
const SOURCE_WAIT: &str = "Natshook-Source-Wait";
/// Why a copy holds no payload: the source message's did not fit in it (see
/// [`uncopied_headers`]).
const SOURCE_UNCOPIED: &str = "Natshook-Source-Uncopied";
/// A stand-in's source subject, under a name of its own: a natshook that does not
/// know stand-ins finds no `Natshook-Source-Subject` on one, so it never takes one for
/// a copy and delivers its empty payload (it reads it as a message of the work
/// stream's own subject, which no mapping maps, and acks it).
const UNCOPIED_SUBJECT: &str = "Natshook-Source-Uncopied-Subject";
const INTERNAL_PREFIX: &str = "Natshook-Source-";
pub const NATS_MSG_ID: &str = "Nats-Msg-Id";

/// What delivery reads from a message: the source message's facts, from the message
/// itself or, for a copy, from its `Natshook-Source-*` headers.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceFacts {
    pub subject: String,
    pub stream: String,
    pub sequence: u64,
    pub published: SystemTime,
}

impl SourceFacts {
    /// The facts of `msg`, a message of the source stream itself, as `info` gives them.
    pub fn of_source(msg: &jetstream::Message, info: &jetstream::message::Info<'_>) -> Self {
        Self {
            subject: msg.subject.to_string(),
            stream: info.stream.to_string(),
            sequence: info.stream_sequence,
            published: SystemTime::from(info.published),
        }
    }

    /// The facts a copy's headers `h` carry; `None` when one is missing or unreadable.
    pub(super) fn of_copy(h: &HeaderMap) -> Option<Self> {
        let get = |name: &str| h.get(name).map(|v| v.as_str());
        let nanos: u64 = get(SOURCE_PUBLISHED)?.parse().ok()?;
        Some(Self {
            subject: get(SOURCE_SUBJECT)
                .or_else(|| get(UNCOPIED_SUBJECT))?
                .to_string(),
            stream: get(SOURCE_STREAM)?.to_string(),
            sequence: get(SOURCE_SEQUENCE)?.parse().ok()?,
            published: UNIX_EPOCH + Duration::from_nanos(nanos),
        })
    }
}

/// Where a delivery of a copy stands in its attempts
/// ([`WorkStream::attempt_of`](super::work_stream::WorkStream::attempt_of)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyAttempt {
    /// The attempt this delivery is, from 1.
    pub number: u32,
    /// The retry delay this delivery only waits out, with a NAK, when it is the first
    /// of a copy moved off the lane to wait.
    pub wait_first: Option<Duration>,
}

/// The headers of `endpoint`'s copy of a source message: its own headers (less any
/// `Natshook-Source-*` a publisher set, which must not pass for ours), the facts
/// delivery needs, and an id that makes a second copy a duplicate.
pub fn copy_headers(source: Option<&HeaderMap>, facts: &SourceFacts, endpoint: &str) -> HeaderMap {
    headers_naming_subject(source, facts, endpoint, SOURCE_SUBJECT)
}

/// [`copy_headers`], with the source subject under `subject_header`.
fn headers_naming_subject(
    source: Option<&HeaderMap>,
    facts: &SourceFacts,
    endpoint: &str,
    subject_header: &str,
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
    headers.insert(subject_header, facts.subject.as_str());
    headers.insert(SOURCE_STREAM, facts.stream.as_str());
    headers.insert(SOURCE_SEQUENCE, facts.sequence.to_string().as_str());
    headers.insert(SOURCE_PUBLISHED, nanos.to_string().as_str());
    headers.insert(
        NATS_MSG_ID,
        format!("{}.{}.{endpoint}", facts.stream, facts.sequence).as_str(),
    );
    headers
}

/// The headers of `endpoint`'s copy of a message its former consumer on the source
/// stream still held (`fanout::leftover`): a copy as the fan-out makes it, whose
/// attempts count on from the `attempts` it had there.
pub fn leftover_copy_headers(
    source: Option<&HeaderMap>,
    facts: &SourceFacts,
    endpoint: &str,
    attempts: u32,
) -> HeaderMap {
    let mut headers = copy_headers(source, facts, endpoint);
    if attempts > 0 {
        headers.insert(SOURCE_ATTEMPTS, attempts.to_string().as_str());
    }
    headers
}

/// The headers of a stand-in for `endpoint`'s copy, which would exceed the server's
/// `max_payload` (`reason`), for an endpoint that is disabled: stored without the
/// payload, it waits where the copy would, and once the endpoint is enabled its
/// worker dead-letters it with the source message's payload, read from the source
/// stream ([`uncopied`]). Without it the source message would come back until the
/// endpoint is enabled, and the other endpoints get their copies again each time the
/// duplicate window passes.
pub fn uncopied_headers(
    source: Option<&HeaderMap>,
    facts: &SourceFacts,
    endpoint: &str,
    reason: &str,
) -> HeaderMap {
    let mut headers = headers_naming_subject(source, facts, endpoint, UNCOPIED_SUBJECT);
    headers.insert(SOURCE_UNCOPIED, reason);
    headers
}

/// The dead letter's reason for a copy that `e` (the client's `max_payload` check)
/// refused.
pub fn too_large(e: &impl std::fmt::Display) -> String {
    format!("the copy for this endpoint, with natshook's headers, is larger than the server's max_payload: {e}")
}

/// Why a copy is a stand-in without its payload ([`uncopied_headers`]), if it is one.
pub fn uncopied(msg: &jetstream::Message) -> Option<&str> {
    if !msg.payload.is_empty() {
        return None;
    }
    msg.headers
        .as_ref()?
        .get(SOURCE_UNCOPIED)
        .map(|v| v.as_str())
}

/// The headers of a copy from the lane (whose headers are `lane_copy`) moved to its
/// endpoint's own subject after `attempts` attempts, to wait `wait` before the next:
/// the lane copy's, so it keeps its source and its `Nats-Msg-Id` (moving it twice
/// stores it once), and the attempts and the wait it moves with.
pub(super) fn moved_off_lane_headers(
    lane_copy: Option<&HeaderMap>,
    attempts: u32,
    wait: Option<Duration>,
) -> HeaderMap {
    let mut headers = lane_copy.cloned().unwrap_or_default();
    headers.insert(SOURCE_ATTEMPTS, attempts.to_string().as_str());
    if let Some(wait) = wait {
        headers.insert(SOURCE_WAIT, wait.as_millis().to_string().as_str());
    }
    headers
}

/// The most bytes [`moved_off_lane_headers`] adds to a copy's header block: each of
/// its two headers as `name: value\r\n`, with as many digits as a `u32` count and a
/// `u128` of milliseconds can have.
const MOVE_OFF_LANE_GROWTH: usize =
    SOURCE_ATTEMPTS.len() + ": \r\n".len() + 10 + SOURCE_WAIT.len() + ": \r\n".len() + 39;

/// Whether a copy with `headers` and a payload of `payload_len` bytes still fits in
/// `max_payload` once moved off the lane. One that would not must not go on the lane:
/// it could not leave it while its endpoint is paused, at its `concurrency` or
/// waiting out a long retry delay, and would come back to the lane every second,
/// holding the lane's ack floor (every endpoint's later copies stay stored).
pub fn fits_off_lane(headers: &HeaderMap, payload_len: usize, max_payload: usize) -> bool {
    wire_len(headers) + payload_len + MOVE_OFF_LANE_GROWTH <= max_payload
}

/// The bytes `headers` take on the wire, as the NATS client counts them against
/// `max_payload`: `NATS/1.0\r\n`, a `name: value\r\n` per value, and `\r\n`.
pub fn wire_len(headers: &HeaderMap) -> usize {
    let mut len = "NATS/1.0\r\n\r\n".len();
    for (name, values) in headers.iter() {
        let name: &str = name.as_ref();
        for v in values {
            len += name.len() + ": \r\n".len() + v.as_str().len();
        }
    }
    len
}

/// Which attempt a delivery of a copy with `headers` is, the `delivered`-th on the
/// stream it is read from (`on_lane`: the lane). A copy moved off the lane counts on
/// from the attempts it had there, and its first delivery on its own subject only
/// waits out the retry delay it was moved with: that delivery is no attempt.
pub(super) fn attempt_of(
    headers: Option<&HeaderMap>,
    on_lane: bool,
    delivered: i64,
) -> CopyAttempt {
    let delivered = u32::try_from(delivered).unwrap_or(u32::MAX).max(1);
    let (before, wait): (u32, _) = match headers {
        Some(h) if !on_lane => (
            h.get(SOURCE_ATTEMPTS)
                .and_then(|v| v.as_str().parse().ok())
                .unwrap_or(0),
            h.get(SOURCE_WAIT)
                .and_then(|v| v.as_str().parse().ok())
                .map(Duration::from_millis),
        ),
        _ => (0, None),
    };
    CopyAttempt {
        number: before
            .saturating_add(delivered)
            .saturating_sub(u32::from(wait.is_some()))
            .max(1),
        wait_first: wait.filter(|_| delivered == 1),
    }
}

/// The source message's stream sequence a copy's headers `h` name.
pub(super) fn source_sequence(h: &HeaderMap) -> Option<u64> {
    h.get(SOURCE_SEQUENCE)
        .and_then(|v| v.as_str().parse::<u64>().ok())
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

    /// Message 42 of `EVENTS`, stored to the nanosecond.
    fn order_42() -> SourceFacts {
        SourceFacts {
            subject: "orders.created".into(),
            stream: "EVENTS".into(),
            sequence: 42,
            published: UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789),
        }
    }

    #[test]
    fn a_copy_keeps_the_source_headers_and_hides_forged_ones() {
        let mut source = HeaderMap::new();
        source.insert("Nats-Msg-Id", "order-1");
        source.insert("X-Custom", "v");
        source.insert("natshook-source-subject", "forged");
        let h = copy_headers(Some(&source), &order_42(), "crm");
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

    /// A copy that fits the check fits once moved with the most attempts and the
    /// longest wait, and one byte more of payload does not fit the check.
    #[test]
    fn a_copy_let_on_the_lane_still_fits_once_moved_off() {
        let mut source = HeaderMap::new();
        source.insert("Nats-Msg-Id", "order-1");
        source.append("X-Many", "a");
        source.append("X-Many", "bc");
        let h = copy_headers(Some(&source), &order_42(), "crm");
        let moved = moved_off_lane_headers(Some(&h), u32::MAX, Some(Duration::MAX));
        let max_payload = 4096;
        let payload = max_payload - wire_len(&h) - MOVE_OFF_LANE_GROWTH;
        assert!(fits_off_lane(&h, payload, max_payload));
        assert!(wire_len(&moved) + payload <= max_payload);
        assert!(!fits_off_lane(&h, payload + 1, max_payload));
        // Counted as the client counts: "NATS/1.0\r\n", "name: value\r\n" each, "\r\n".
        let mut two = HeaderMap::new();
        two.append("A", "1");
        two.append("A", "22");
        assert_eq!(wire_len(&two), 10 + 6 + 7 + 2);
    }

    /// A stand-in reads as a copy of its source message here, names it under a
    /// subject header of its own (a natshook that does not know stand-ins takes it for
    /// no copy), and a publisher cannot make a copy a stand-in.
    #[test]
    fn a_stand_in_names_its_source_where_only_this_version_looks() {
        let mut source = HeaderMap::new();
        source.insert("Nats-Msg-Id", "order-1");
        source.insert("Natshook-Source-Uncopied", "forged");
        let facts = order_42();
        let stand_in = uncopied_headers(Some(&source), &facts, "crm", "too large");
        assert_eq!(SourceFacts::of_copy(&stand_in), Some(facts.clone()));
        assert!(stand_in.get(SOURCE_SUBJECT).is_none());
        assert_eq!(
            stand_in.get(SOURCE_UNCOPIED).map(|v| v.as_str()),
            Some("too large")
        );
        assert_eq!(
            stand_in.get(NATS_MSG_ID).map(|v| v.as_str()),
            Some("EVENTS.42.crm"),
            "the id of the copy it stands for: storing both stores one"
        );
        let copy = copy_headers(Some(&source), &facts, "crm");
        assert!(copy.get(SOURCE_UNCOPIED).is_none());
    }
}
