//! The request body a receiver gets, and the message id receivers deduplicate on.
//!
//! The standard envelope is written straight into one buffer: the payload is checked
//! to be JSON and copied once, never parsed into a tree and re-serialised, so large
//! payloads cost a validation pass and a memcpy.

use std::io::Write;
use std::time::SystemTime;

use bytes::Bytes;

use crate::time::rfc3339_millis;

/// How a receiver gets the message (`envelope` of an endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Envelope {
    /// The JSON envelope of the contract.
    Standard,
    /// The payload bytes unchanged.
    Raw,
}

/// The facts about one message that go into its envelope.
#[derive(Debug, Clone)]
pub struct MessageFacts<'a> {
    pub id: &'a str,
    pub event: &'a str,
    pub subject: &'a str,
    pub stream_sequence: u64,
    pub attempt: u32,
    /// When JetStream stored the message (stable across attempts).
    pub published: SystemTime,
    pub payload: &'a Bytes,
    /// The message's tenant, when its mapping gives it one.
    pub tenant: Option<&'a str>,
}

/// Why a message cannot be put into an envelope; it goes to the dead letters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("payload is neither JSON nor UTF-8 text; use envelope = \"raw\" for binary payloads")]
    NotUtf8,
}

/// Envelope version written in `metadata.version`.
pub const ENVELOPE_VERSION: &str = "1";

/// What a `Nats-Msg-Id` must be to become the id. The id goes into headers
/// (`X-Webhook-Id`, `webhook-id`), into the signed content of the `standard` scheme and
/// into receivers' de-duplication keys, so it is kept to what all of them take as is.
pub const MSG_ID_RULE: &str = "1 to 256 printable ASCII characters without spaces";

/// Why a `Nats-Msg-Id` is not used as the id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MsgIdProblem {
    #[error("is empty")]
    Empty,
    #[error("is longer than 256 bytes")]
    TooLong,
    #[error("has a space, a control character or a non-ASCII character")]
    NotPrintableAscii,
}

/// `None` when `id` follows [`MSG_ID_RULE`].
pub fn msg_id_problem(id: &str) -> Option<MsgIdProblem> {
    if id.is_empty() {
        Some(MsgIdProblem::Empty)
    } else if id.len() > 256 {
        Some(MsgIdProblem::TooLong)
    } else if !id.bytes().all(|b| b.is_ascii_graphic()) {
        Some(MsgIdProblem::NotPrintableAscii)
    } else {
        None
    }
}

/// The id for a message: its `Nats-Msg-Id` when it follows [`MSG_ID_RULE`] (publishers
/// set it for JetStream de-duplication, so it is the id they know), else
/// `<stream>-<sequence>`, which is the same on every redelivery.
pub fn message_id(nats_msg_id: Option<&str>, stream: &str, sequence: u64) -> String {
    match nats_msg_id {
        Some(id) if msg_id_problem(id).is_none() => id.to_string(),
        _ => {
            // Built by hand: this runs once per message, where core::fmt costs more
            // than the copy.
            let mut digits = itoa::Buffer::new();
            let digits = digits.format(sequence);
            let mut id = String::with_capacity(stream.len() + 1 + digits.len());
            id.push_str(stream);
            id.push('-');
            id.push_str(digits);
            id
        }
    }
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Builds the request body. The standard envelope carries the message's tenant in
/// `tenant_field` (left out when either is `None`); a static field of `fields` with
/// that name gives way to it, so the body never repeats a key.
pub fn build(
    kind: Envelope,
    fields: &serde_json::Map<String, serde_json::Value>,
    tenant_field: Option<&str>,
    m: &MessageFacts<'_>,
) -> Result<Bytes, EnvelopeError> {
    if kind == Envelope::Raw {
        return Ok(m.payload.clone());
    }
    let mut out = Vec::with_capacity(m.payload.len() + 256 + m.subject.len());
    out.extend_from_slice(b"{\"id\":");
    json_str(&mut out, m.id);
    out.extend_from_slice(b",\"event\":");
    json_str(&mut out, m.event);
    out.extend_from_slice(b",\"timestamp\":\"");
    out.extend_from_slice(rfc3339_millis(m.published).as_bytes());
    out.extend_from_slice(b"\",\"data\":");
    // JSON is UTF-8, but skipping a string's contents (`IgnoredAny`) does not check
    // them: a payload with invalid UTF-8 inside a string is binary, not JSON.
    let text = std::str::from_utf8(m.payload).map_err(|_| EnvelopeError::NotUtf8)?;
    if !text.is_empty() && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() {
        out.extend_from_slice(m.payload.trim_ascii());
    } else {
        json_str(&mut out, text);
    }
    out.extend_from_slice(b",\"metadata\":{\"subject\":");
    json_str(&mut out, m.subject);
    let _ = write!(
        out,
        ",\"stream_sequence\":{},\"attempt\":{},\"version\":\"{ENVELOPE_VERSION}\"}}",
        m.stream_sequence, m.attempt
    );
    let tenant_field = tenant_field.filter(|_| m.tenant.is_some());
    if let (Some(field), Some(tenant)) = (tenant_field, m.tenant) {
        out.push(b',');
        json_str(&mut out, field);
        out.push(b':');
        json_str(&mut out, tenant);
    }
    for (k, v) in fields {
        if tenant_field == Some(k.as_str()) {
            continue;
        }
        out.push(b',');
        json_str(&mut out, k);
        out.push(b':');
        let _ = serde_json::to_writer(&mut out, v);
    }
    out.push(b'}');
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn facts(payload: &Bytes) -> MessageFacts<'_> {
        MessageFacts {
            id: "EVENTS-42",
            event: "lead.created",
            subject: "crm.lead.created",
            stream_sequence: 42,
            attempt: 1,
            published: UNIX_EPOCH + Duration::from_millis(1_775_045_100_000),
            payload,
            tenant: None,
        }
    }

    #[test]
    fn standard_envelope_matches_the_contract() {
        let payload = Bytes::from_static(br#" {"lead": 7} "#);
        let mut fields = serde_json::Map::new();
        fields.insert("organization_id".into(), "org_1".into());
        let body = build(Envelope::Standard, &fields, None, &facts(&payload)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "id": "EVENTS-42", "event": "lead.created",
                "timestamp": "2026-04-01T12:05:00.000Z",
                "data": {"lead": 7},
                "metadata": {"subject": "crm.lead.created", "stream_sequence": 42, "attempt": 1, "version": "1"},
                "organization_id": "org_1"
            })
        );
    }

    #[test]
    fn the_tenant_is_a_top_level_field_when_the_message_has_one() {
        let payload = Bytes::from_static(br#"{"t": 1}"#);
        let mut fields = serde_json::Map::new();
        fields.insert("organization_id".into(), "static".into());
        fields.insert("region".into(), "eu".into());
        let mut m = facts(&payload);
        m.tenant = Some("org_\"7");
        let field = Some("organization_id");
        let body = build(Envelope::Standard, &fields, field, &m).unwrap();
        let text = std::str::from_utf8(&body).unwrap();
        assert_eq!(text.matches("organization_id").count(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["organization_id"], "org_\"7");
        assert_eq!(v["region"], "eu");
        // No tenant on the message: no tenant field, the static field stays.
        let body = build(Envelope::Standard, &fields, field, &facts(&payload)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["organization_id"], "static");
        // tenant_field = "": never written.
        let body = build(Envelope::Standard, &Default::default(), None, &m).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 5, "{v}");
        // The raw envelope is the payload, tenant or not.
        assert_eq!(build(Envelope::Raw, &fields, field, &m).unwrap(), payload);
    }

    #[test]
    fn non_json_payload_becomes_a_string_and_binary_is_refused() {
        let text = Bytes::from_static(b"hello \"world\"\n");
        let body = build(Envelope::Standard, &Default::default(), None, &facts(&text)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["data"], "hello \"world\"\n");
        let empty = Bytes::new();
        let body = build(
            Envelope::Standard,
            &Default::default(),
            None,
            &facts(&empty),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["data"], "");
        let bin = Bytes::from_static(&[0xff, 0xfe, 0x00]);
        assert_eq!(
            build(Envelope::Standard, &Default::default(), None, &facts(&bin)),
            Err(EnvelopeError::NotUtf8)
        );
        // JSON in shape, but a string holds bytes that are not UTF-8.
        let in_string = Bytes::from_static(b"{\"a\":\"\xff\xfe\"}");
        assert_eq!(
            build(
                Envelope::Standard,
                &Default::default(),
                None,
                &facts(&in_string)
            ),
            Err(EnvelopeError::NotUtf8)
        );
        assert_eq!(
            build(Envelope::Raw, &Default::default(), None, &facts(&bin)).unwrap(),
            bin
        );
    }

    #[test]
    fn ids_come_from_nats_msg_id_or_stream_and_sequence() {
        assert_eq!(message_id(Some("order-1"), "EVENTS", 3), "order-1");
        assert_eq!(message_id(None, "EVENTS", 3), "EVENTS-3");
        assert_eq!(message_id(Some("bad id\r\n"), "EVENTS", 3), "EVENTS-3");
    }

    #[test]
    fn nats_msg_id_rule() {
        let longest = "a".repeat(256);
        for good in ["x", "order-1", "a/b:c=d~!{}", longest.as_str()] {
            assert_eq!(msg_id_problem(good), None, "{good}");
            assert_eq!(message_id(Some(good), "EVENTS", 9), good);
        }
        let too_long = "a".repeat(257);
        for (bad, problem) in [
            ("", MsgIdProblem::Empty),
            (too_long.as_str(), MsgIdProblem::TooLong),
            ("has space", MsgIdProblem::NotPrintableAscii),
            ("tab\there", MsgIdProblem::NotPrintableAscii),
            ("caf\u{e9}", MsgIdProblem::NotPrintableAscii),
            ("\u{1F600}", MsgIdProblem::NotPrintableAscii),
        ] {
            assert_eq!(msg_id_problem(bad), Some(problem), "{bad:?}");
            assert_eq!(message_id(Some(bad), "EVENTS", 9), "EVENTS-9");
        }
    }
}
