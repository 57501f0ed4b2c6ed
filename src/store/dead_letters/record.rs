//! The dead-letter record: its fields as stored (JSON), and how a record is cut to
//! fit one NATS message.

use std::collections::BTreeMap;
use std::time::SystemTime;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::DeadLetterError;

/// `last_error` and `reason` are cut to this many bytes. Both are error text, normally a
/// line; the cut keeps a pathological one from crowding out the record.
const TEXT_LIMIT: usize = 1024;

/// One dead-lettered delivery, as stored (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub endpoint: String,
    pub event: Option<String>,
    /// The message's tenant, when its mapping gave it one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub id: String,
    pub subject: String,
    pub stream: String,
    pub stream_sequence: u64,
    /// When the original message was published (RFC 3339).
    pub published: String,
    /// HTTP attempts made (0 when the message could never be sent).
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    /// At most 4,096 bytes of the last response body (lossy UTF-8).
    pub response_body: String,
    /// Why the message was dead-lettered.
    pub reason: String,
    /// The original payload, base64 (payloads may be binary); empty when it is in the
    /// object store (`payload_object`).
    pub payload: String,
    /// `<bucket>/<object>` in the JetStream object store that holds the payload (its raw
    /// bytes), when the record with the payload in it would not fit one NATS message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_object: Option<String>,
    /// NATS headers of the original message.
    #[serde(default)]
    pub headers: BTreeMap<String, Vec<String>>,
    /// True when headers were left out (largest first) so that the record fits.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub headers_truncated: bool,
    pub dead_lettered_at: String,
    /// One record per message and endpoint, whoever writes it within the dead-letter
    /// stream's duplicate window (2 minutes): a message whose copy does not fit
    /// `max_payload` is dead-lettered by the fan-out, by the drain of the endpoint's
    /// former consumer, or from a stand-in, and two of them may come upon the same
    /// message. Not stored: it decides [`DeadLetter::msg_id`] and the name of the
    /// payload's object, so a second write stores nothing new.
    #[serde(skip)]
    pub once_per_message: bool,
}

impl DeadLetter {
    /// The record's `Nats-Msg-Id`: a record written twice (its first publish stored,
    /// its ack lost, and the kept record written again when the message came back) is
    /// stored once within the dead-letter stream's duplicate window (2 minutes). A
    /// record made anew is another record, even of the same message and attempt (an
    /// endpoint deleted and made again under the name): it was made at another time.
    /// A digest, so that an id of any length gives a header of one. A record
    /// [`once_per_message`](Self::once_per_message) leaves its attempts and time out.
    pub fn msg_id(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut digest = Sha256::new();
        let attempts = self.attempts.to_be_bytes();
        let (attempts, at): (&[u8], &[u8]) = match self.once_per_message {
            true => (b"uncopied", b""),
            false => (&attempts, self.dead_lettered_at.as_bytes()),
        };
        for part in [
            self.endpoint.as_bytes(),
            self.stream.as_bytes(),
            &self.stream_sequence.to_be_bytes(),
            attempts,
            self.id.as_bytes(),
            at,
        ] {
            digest.update((part.len() as u64).to_be_bytes());
            digest.update(part);
        }
        format!("natshook-dlq-{}", hex::encode(digest.finalize()))
    }

    pub fn encode_payload(payload: &[u8]) -> String {
        BASE64.encode(payload)
    }

    /// The payload of a record that carries it inline; see [`super::DeadLetters::payload`].
    pub fn payload_bytes(&self) -> Result<Bytes, DeadLetterError> {
        BASE64
            .decode(&self.payload)
            .map(Bytes::from)
            .map_err(|e| DeadLetterError::Corrupt(format!("payload is not base64: {e}")))
    }

    pub fn published_time(&self) -> SystemTime {
        humantime::parse_rfc3339(&self.published).unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// Cuts the free-text fields to their bounds (the response body is bounded where it
    /// is read).
    pub(super) fn bound_text(&mut self) {
        truncate_at_char(&mut self.reason, TEXT_LIMIT);
        if let Some(e) = self.last_error.as_mut() {
            truncate_at_char(e, TEXT_LIMIT);
        }
    }

    /// The object a payload too large for the record is stored under: readable in
    /// `nats object ls`, and unique per record, so replaying (and deleting) one record
    /// never takes the payload of another record of the same message.
    pub(super) fn object_name(&self) -> String {
        let made = match self.once_per_message {
            true => "uncopied",
            false => self.dead_lettered_at.as_str(),
        };
        format!(
            "{}/{}/{}-{}/{made}",
            self.endpoint, self.id, self.stream, self.stream_sequence
        )
    }
}

pub(super) fn truncate_at_char(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

pub(super) fn to_json(record: &DeadLetter) -> Result<Bytes, DeadLetterError> {
    serde_json::to_vec(record)
        .map(Bytes::from)
        .map_err(|e| DeadLetterError::Publish(e.to_string()))
}

/// Length of the base64 text of `n` bytes (padded); base64 needs no JSON escapes.
pub(super) fn base64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// The JSON of a record whose payload is already elsewhere, within `limit` bytes:
/// headers are left out, largest first, then the response body is cut. Only a
/// `max_payload` far below anything NATS runs with leaves it still too large.
pub(super) fn fit(record: &mut DeadLetter, limit: usize) -> Result<Bytes, DeadLetterError> {
    loop {
        let body = to_json(record)?;
        if body.len() <= limit {
            return Ok(body);
        }
        let excess = body.len() - limit;
        if !record.headers.is_empty() {
            drop_largest_headers(&mut record.headers, excess);
            record.headers_truncated = true;
        } else if !record.response_body.is_empty() {
            let keep = record.response_body.len().saturating_sub(excess);
            truncate_at_char(&mut record.response_body, keep);
        } else {
            return Err(DeadLetterError::TooLarge {
                size: body.len(),
                limit,
            });
        }
    }
}

/// Removes whole headers, largest first, until about `excess` bytes of JSON are gone
/// (at least one header). Small ones such as `traceparent` stay as long as possible.
fn drop_largest_headers(headers: &mut BTreeMap<String, Vec<String>>, excess: usize) {
    // Sizes as JSON, escapes included: a header of quotes takes twice its length.
    let mut sizes: Vec<(usize, String)> = headers
        .iter()
        .map(|(k, vs)| {
            let size = serde_json::to_vec(&(k, vs)).map_or(0, |j| j.len());
            (size, k.clone())
        })
        .collect();
    sizes.sort_unstable_by_key(|s| std::cmp::Reverse(s.0));
    let mut freed = 0;
    for (size, name) in sizes {
        headers.remove(&name);
        freed += size;
        if freed >= excess {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::dead_letters::{inline_payload_limit, PAYLOAD_BUCKET};

    fn record() -> DeadLetter {
        DeadLetter {
            endpoint: "crm".into(),
            event: Some("lead.created".into()),
            tenant: None,
            id: "lead-1".into(),
            subject: "crm.lead.created".into(),
            stream: "EVENTS".into(),
            stream_sequence: 42,
            published: "2026-04-01T12:05:00.000Z".into(),
            attempts: 3,
            last_status: Some(500),
            last_error: Some("HTTP 500".into()),
            response_body: "oops".into(),
            reason: "failed after 3 attempts".into(),
            payload: DeadLetter::encode_payload(b"{\"lead\":1}"),
            payload_object: None,
            headers: BTreeMap::new(),
            headers_truncated: false,
            dead_lettered_at: "2026-04-01T12:06:00.000Z".into(),
            once_per_message: false,
        }
    }

    #[test]
    fn a_record_with_its_payload_inline_keeps_the_contract_shape() {
        let json = serde_json::to_value(record()).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert!(!keys.contains(&"payload_object"), "{keys:?}");
        assert!(!keys.contains(&"tenant"), "{keys:?}");
        assert!(!keys.contains(&"headers_truncated"), "{keys:?}");
        // Records written before either field existed still read.
        let back: DeadLetter = serde_json::from_value(json).unwrap();
        assert_eq!(back, record());
    }

    #[test]
    fn base64_length_is_exact() {
        for n in [0, 1, 2, 3, 4, 5, 1000, 900_001] {
            assert_eq!(base64_len(n), DeadLetter::encode_payload(&vec![7; n]).len());
        }
        // With the defaults, payloads up to about 780 KB stay inline.
        assert_eq!(inline_payload_limit(1024 * 1024), 782_592);
    }

    #[test]
    fn free_text_is_cut_on_a_character_boundary() {
        let mut r = record();
        r.last_error = Some("é".repeat(TEXT_LIMIT));
        r.reason = "x".repeat(5 * TEXT_LIMIT);
        r.bound_text();
        let e = r.last_error.unwrap();
        assert!(e.len() <= TEXT_LIMIT && e.len() >= TEXT_LIMIT - 1);
        assert!(e.chars().all(|c| c == 'é'));
        assert_eq!(r.reason.len(), TEXT_LIMIT);
    }

    #[test]
    fn a_record_is_fitted_by_leaving_out_the_largest_headers_first() {
        let mut r = record();
        r.payload = String::new();
        r.payload_object = Some(format!("{PAYLOAD_BUCKET}/{}", r.object_name()));
        let trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        r.headers.insert("traceparent".into(), vec![trace.into()]);
        r.headers.insert("x-big".into(), vec!["b".repeat(50_000)]);
        r.headers
            .insert("x-bigger".into(), vec!["\"".repeat(40_000); 2]);
        let limit = 20_000;
        let body = fit(&mut r, limit).unwrap();
        assert!(body.len() <= limit, "{}", body.len());
        assert!(r.headers_truncated);
        assert_eq!(r.headers.keys().collect::<Vec<_>>(), ["traceparent"]);
        let back: DeadLetter = serde_json::from_slice(&body).unwrap();
        assert_eq!(back, r);

        // Below even that, the response body is cut; below the fixed fields, an error.
        let mut r2 = r.clone();
        r2.response_body = "\u{1}".repeat(4096);
        let body = fit(&mut r2, 1000).unwrap();
        assert!(body.len() <= 1000);
        assert!(r2.headers.is_empty());
        assert!(matches!(
            fit(&mut r2.clone(), 100),
            Err(DeadLetterError::TooLarge { .. })
        ));
    }

    #[test]
    fn object_names_differ_per_record_of_the_same_message() {
        let a = record();
        let mut b = record();
        b.dead_lettered_at = "2026-04-01T12:07:00.000Z".into();
        assert_eq!(
            a.object_name(),
            "crm/lead-1/EVENTS-42/2026-04-01T12:06:00.000Z"
        );
        assert_ne!(a.object_name(), b.object_name());
        // One record per message: its payload's object is the same for every writer.
        let (mut a, mut b) = (a, b);
        a.once_per_message = true;
        b.once_per_message = true;
        assert_eq!(a.object_name(), b.object_name());
    }

    /// A record made anew has an id of its own; one of a message that cannot be
    /// copied has one id per message and endpoint, whenever and by whom it is made.
    #[test]
    fn only_a_record_once_per_message_keeps_its_id_when_made_again() {
        let a = record();
        let mut later = record();
        later.dead_lettered_at = "2026-04-01T12:07:00.000Z".into();
        later.attempts += 1;
        assert_ne!(a.msg_id(), later.msg_id());
        let (mut a, mut later) = (a, later);
        a.once_per_message = true;
        later.once_per_message = true;
        assert_eq!(a.msg_id(), later.msg_id());
        later.stream_sequence += 1;
        assert_ne!(a.msg_id(), later.msg_id());
    }
}
