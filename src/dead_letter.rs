//! Dead letters: messages that used up their attempts (or can never be delivered),
//! kept complete in the JetStream stream `NATSHOOK_DLQ` under `natshook.dlq.<endpoint>`.
//!
//! A record carries everything needed to deliver the message again with the same id
//! (`natshook dlq replay`), so JetStream is the only store natshook needs.
//!
//! A record is one NATS message, so it must fit the server's `max_payload`, while the
//! payload travels in it as base64 (4/3 of its size): with the defaults (1 MiB each) the
//! record of a payload above about 780 KB does not fit. A record
//! that would not fit keeps its payload in the JetStream object store instead (bucket
//! `NATSHOOK_DLQ_PAYLOADS`, which chunks it, so any size fits) and names the object in
//! `payload_object`; every other field is bounded. Writing a dead letter therefore never
//! fails for its size, only for NATS being unavailable, which a later attempt outlives.
//! The object store, rather than a reference to the source stream's sequence, because
//! the source stream's retention may delete the message once it is acked.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::object_store::{self, ObjectMetadata, ObjectStore};
use async_nats::jetstream::{self, consumer, stream};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use crate::config::Endpoint;

pub const DLQ_STREAM: &str = "NATSHOOK_DLQ";
pub const DLQ_SUBJECT_PREFIX: &str = "natshook.dlq";

/// Object-store bucket for the payloads of records that would not fit one NATS message.
pub const PAYLOAD_BUCKET: &str = "NATSHOOK_DLQ_PAYLOADS";

/// Part of `max_payload` a record leaves unused, so that what the server counts besides
/// the body never tips a record of the computed size over the limit.
const HEADROOM: usize = 1024;

/// `last_error` and `reason` are cut to this many bytes. Both are error text, normally a
/// line; the cut keeps a pathological one from crowding out the record.
const TEXT_LIMIT: usize = 1024;

/// Largest chunk of a stored payload: the client's default, less when `max_payload` is.
const CHUNK_SIZE: usize = 128 * 1024;

/// What a record takes besides its payload, for the estimate logged at start only.
const TYPICAL_RECORD: usize = 4096;

pub fn dlq_subject(endpoint: &str) -> String {
    format!("{DLQ_SUBJECT_PREFIX}.{endpoint}")
}

/// One dead-lettered delivery, as stored (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub endpoint: String,
    pub event: Option<String>,
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
}

impl DeadLetter {
    pub fn encode_payload(payload: &[u8]) -> String {
        BASE64.encode(payload)
    }

    /// The payload of a record that carries it inline; see [`DeadLetters::payload`].
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
    fn bound_text(&mut self) {
        truncate_at_char(&mut self.reason, TEXT_LIMIT);
        if let Some(e) = self.last_error.as_mut() {
            truncate_at_char(e, TEXT_LIMIT);
        }
    }

    /// The object a payload too large for the record is stored under: readable in
    /// `nats object ls`, and unique per record, so replaying (and deleting) one record
    /// never takes the payload of another record of the same message.
    fn object_name(&self) -> String {
        format!(
            "{}/{}/{}-{}/{}",
            self.endpoint, self.id, self.stream, self.stream_sequence, self.dead_lettered_at
        )
    }
}

fn truncate_at_char(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

fn to_json(record: &DeadLetter) -> Result<Bytes, DeadLetterError> {
    serde_json::to_vec(record)
        .map(Bytes::from)
        .map_err(|e| DeadLetterError::Publish(e.to_string()))
}

/// Length of the base64 text of `n` bytes (padded); base64 needs no JSON escapes.
fn base64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// The JSON of a record whose payload is already elsewhere, within `limit` bytes:
/// headers are left out, largest first, then the response body is cut. Only a
/// `max_payload` far below anything NATS runs with leaves it still too large.
fn fit(record: &mut DeadLetter, limit: usize) -> Result<Bytes, DeadLetterError> {
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

/// The payload size above which a dead letter's payload goes to the object store, for
/// a record of typical size; the decision itself is made on the record's real size.
pub fn inline_payload_limit(max_payload: usize) -> usize {
    max_payload.saturating_sub(HEADROOM + TYPICAL_RECORD) / 4 * 3
}

/// Says at start what the NATS server's `max_payload` means for the endpoints'
/// `max_body` and their dead letters: a `max_body` that can never apply is worth a
/// warning per endpoint; a record without its payload inline is normal operation.
pub fn log_size_limits(client: &async_nats::Client, endpoints: &[Endpoint]) {
    let max_payload = client.max_payload();
    for ep in endpoints.iter().filter(|ep| ep.max_body > max_payload) {
        tracing::warn!(
            endpoint = %ep.name,
            max_body = ep.max_body,
            max_payload,
            "max_body is above the NATS server's max_payload: a larger message cannot be \
             published to the stream, so max_body never applies"
        );
    }
    // The threshold depends on the server alone, so one line says it for every endpoint;
    // it is information, not a fault (the defaults cross it).
    let inline = inline_payload_limit(max_payload);
    if endpoints
        .iter()
        .any(|ep| ep.max_body.min(max_payload) > inline)
    {
        tracing::info!(
            max_payload,
            "a dead letter's record must fit one NATS message and carries the payload as \
             base64: the payload of a dead letter above about {inline} bytes is stored in the \
             object store {PAYLOAD_BUCKET} and the record names it in payload_object"
        );
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("cannot set up stream {DLQ_STREAM}: {0}")]
    Stream(String),
    #[error("cannot publish dead letter: {0}")]
    Publish(String),
    #[error("cannot read dead letters: {0}")]
    Read(String),
    #[error("dead-letter record is corrupt: {0}")]
    Corrupt(String),
    #[error("dead-letter payload in the object store: {0}")]
    PayloadStore(String),
    #[error("dead-letter record of {size} bytes does not fit max_payload even without payload, headers and response body (limit {limit} bytes)")]
    TooLarge { size: usize, limit: usize },
}

/// A stored record and its sequence in the DLQ stream (for deletion after replay).
#[derive(Debug, Clone)]
pub struct StoredDeadLetter {
    pub sequence: u64,
    pub record: DeadLetter,
}

/// Access to the dead-letter stream.
#[derive(Clone)]
pub struct DeadLetters {
    js: jetstream::Context,
    max_age: Duration,
}

impl DeadLetters {
    pub fn new(js: jetstream::Context, max_age: Duration) -> Self {
        Self { js, max_age }
    }

    /// Creates the stream if missing; an existing stream is left as the operator set it.
    pub async fn ensure_stream(&self) -> Result<(), DeadLetterError> {
        let max_age = self.max_age;
        self.js
            .get_or_create_stream(stream::Config {
                name: DLQ_STREAM.to_string(),
                subjects: vec![format!("{DLQ_SUBJECT_PREFIX}.>")],
                max_age,
                storage: stream::StorageType::File,
                description: Some("natshook dead letters".into()),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|e| DeadLetterError::Stream(e.to_string()))
    }

    /// Largest record body: the server's `max_payload` (as the client last learned it)
    /// less the headroom.
    fn record_limit(&self) -> usize {
        self.js.client().max_payload().saturating_sub(HEADROOM)
    }

    /// Writes the record for `payload` and waits for JetStream's ack: only then may the
    /// original be acked. `payload` goes into the record as base64 when the record then
    /// fits one NATS message; otherwise it is stored in the object store first and the
    /// record names it (`payload_object`). If the stream has gone (deleted by hand), it
    /// is created again once.
    pub async fn publish(
        &self,
        mut record: DeadLetter,
        payload: &[u8],
    ) -> Result<(), DeadLetterError> {
        let limit = self.record_limit();
        record.bound_text();
        record.payload = String::new();
        record.payload_object = None;
        let bare = to_json(&record)?.len();
        let body = if bare + base64_len(payload.len()) <= limit {
            record.payload = DeadLetter::encode_payload(payload);
            to_json(&record)?
        } else {
            let name = record.object_name();
            self.put_payload(&name, payload, limit).await?;
            record.payload_object = Some(format!("{PAYLOAD_BUCKET}/{name}"));
            match fit(&mut record, limit) {
                Ok(body) => body,
                Err(e) => {
                    self.delete_object(PAYLOAD_BUCKET, &name).await;
                    return Err(e);
                }
            }
        };
        // A failed publish leaves the object in place: a publish whose ack was lost may
        // still have stored the record, which must not name a deleted payload. The
        // message comes back and is dead-lettered under a new name; an object no record
        // names expires with the bucket's max_age.
        self.publish_record(&record.endpoint, body).await
    }

    async fn publish_record(&self, endpoint: &str, body: Bytes) -> Result<(), DeadLetterError> {
        match self.publish_once(endpoint, body.clone()).await {
            Ok(()) => Ok(()),
            Err(first) => {
                if self.js.get_stream(DLQ_STREAM).await.is_ok() {
                    return Err(first);
                }
                tracing::warn!("dead-letter stream {DLQ_STREAM} is missing; creating it again");
                self.ensure_stream().await?;
                self.publish_once(endpoint, body).await
            }
        }
    }

    /// The payload bucket; created when missing (also after it was deleted by hand),
    /// with the dead-letter stream's max_age so that payloads live as long as records.
    async fn payload_store(&self) -> Result<ObjectStore, DeadLetterError> {
        if let Ok(store) = self.js.get_object_store(PAYLOAD_BUCKET).await {
            return Ok(store);
        }
        let max_age = match self.js.get_stream(DLQ_STREAM).await {
            Ok(s) => s.cached_info().config.max_age,
            Err(_) => self.max_age,
        };
        self.js
            .create_object_store(object_store::Config {
                bucket: PAYLOAD_BUCKET.to_string(),
                description: Some(
                    "natshook: payloads of dead letters too large for one NATS message".into(),
                ),
                max_age,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| {
                DeadLetterError::PayloadStore(format!("cannot create {PAYLOAD_BUCKET}: {e}"))
            })
    }

    async fn put_payload(
        &self,
        name: &str,
        payload: &[u8],
        limit: usize,
    ) -> Result<(), DeadLetterError> {
        let store = self.payload_store().await?;
        let meta = ObjectMetadata {
            name: name.to_string(),
            chunk_size: Some(CHUNK_SIZE.min(limit).max(1)),
            ..Default::default()
        };
        let mut reader = payload;
        store.put(meta, &mut reader).await.map(|_| ()).map_err(|e| {
            DeadLetterError::PayloadStore(format!("cannot store {PAYLOAD_BUCKET}/{name}: {e}"))
        })
    }

    /// Best effort: an object left behind expires with the bucket's max_age.
    async fn delete_object(&self, bucket: &str, name: &str) {
        let deleted = match self.js.get_object_store(bucket).await {
            Ok(store) => store.delete(name).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = deleted {
            tracing::warn!(bucket, object = name, error = %e, "cannot delete a dead letter's stored payload; it expires with the bucket's max_age");
        }
    }

    /// The original payload of a record: inline, or read from the object store.
    pub async fn payload(&self, record: &DeadLetter) -> Result<Bytes, DeadLetterError> {
        let Some(location) = record.payload_object.as_deref() else {
            return record.payload_bytes();
        };
        let (bucket, name) = location.split_once('/').ok_or_else(|| {
            DeadLetterError::Corrupt(format!(
                "payload_object '{location}' is not <bucket>/<object>"
            ))
        })?;
        let failed = |e: &dyn std::fmt::Display| {
            DeadLetterError::PayloadStore(format!("cannot read {location}: {e}"))
        };
        let store = self
            .js
            .get_object_store(bucket)
            .await
            .map_err(|e| failed(&e))?;
        let mut object = store.get(name).await.map_err(|e| failed(&e))?;
        let mut out = Vec::new();
        object.read_to_end(&mut out).await.map_err(|e| failed(&e))?;
        Ok(Bytes::from(out))
    }

    async fn publish_once(&self, endpoint: &str, body: Bytes) -> Result<(), DeadLetterError> {
        self.js
            .publish(dlq_subject(endpoint), body)
            .await
            .map_err(|e| DeadLetterError::Publish(e.to_string()))?
            .await
            .map_err(|e| DeadLetterError::Publish(e.to_string()))?;
        Ok(())
    }

    /// Reads records (oldest first), optionally for one endpoint, at most `limit`.
    pub async fn list(
        &self,
        endpoint: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredDeadLetter>, DeadLetterError> {
        let read = |e: &dyn std::fmt::Display| DeadLetterError::Read(e.to_string());
        let stream = self.js.get_stream(DLQ_STREAM).await.map_err(|e| read(&e))?;
        let filter = match endpoint {
            Some(e) => dlq_subject(e),
            None => format!("{DLQ_SUBJECT_PREFIX}.>"),
        };
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: filter,
                ..Default::default()
            })
            .await
            .map_err(|e| read(&e))?;
        let mut out = Vec::new();
        let mut messages = consumer.messages().await.map_err(|e| read(&e))?;
        loop {
            if out.len() >= limit {
                break;
            }
            let next = tokio::time::timeout(Duration::from_secs(2), messages.next()).await;
            let msg = match next {
                Err(_) | Ok(None) => break,
                Ok(Some(Err(e))) => return Err(read(&e)),
                Ok(Some(Ok(m))) => m,
            };
            let info = msg.info().map_err(|e| read(&e))?;
            let (sequence, pending) = (info.stream_sequence, info.pending);
            match serde_json::from_slice::<DeadLetter>(&msg.payload) {
                Ok(record) => out.push(StoredDeadLetter { sequence, record }),
                Err(e) => {
                    tracing::warn!(sequence, error = %e, "skipping unreadable dead-letter record")
                }
            }
            if pending == 0 {
                break;
            }
        }
        Ok(out)
    }

    /// Removes a record after it was replayed successfully, then its stored payload (in
    /// that order: a record never names a payload that is gone).
    pub async fn remove(&self, stored: &StoredDeadLetter) -> Result<(), DeadLetterError> {
        let stream = self
            .js
            .get_stream(DLQ_STREAM)
            .await
            .map_err(|e| DeadLetterError::Read(e.to_string()))?;
        stream
            .delete_message(stored.sequence)
            .await
            .map_err(|e| DeadLetterError::Read(e.to_string()))?;
        if let Some((bucket, name)) = stored
            .record
            .payload_object
            .as_deref()
            .and_then(|l| l.split_once('/'))
        {
            self.delete_object(bucket, name).await;
        }
        Ok(())
    }
}

/// Which records a replay takes.
#[derive(Debug, Clone, Default)]
pub struct ReplayFilter {
    /// Only the record with this id.
    pub id: Option<String>,
    /// Only records dead-lettered at or after this time.
    pub since: Option<SystemTime>,
}

/// What a replay did; `failures` holds (id, reason) of records that were kept.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplaySummary {
    pub replayed: Vec<String>,
    pub failures: Vec<(String, String)>,
}

impl DeadLetters {
    /// Delivers the endpoint's matching records again, with the same id and the next
    /// attempt number; each record is removed only after a 2xx.
    pub async fn replay(
        &self,
        deliverer: &crate::delivery::Deliverer,
        filter: &ReplayFilter,
    ) -> Result<ReplaySummary, DeadLetterError> {
        let endpoint = deliverer.endpoint().clone();
        let records = self.list(Some(&endpoint.name), usize::MAX).await?;
        let mut summary = ReplaySummary::default();
        for stored in records {
            let r = &stored.record;
            if filter.id.as_deref().is_some_and(|want| want != r.id) {
                continue;
            }
            if let Some(since) = filter.since {
                let at =
                    humantime::parse_rfc3339(&r.dead_lettered_at).unwrap_or(SystemTime::UNIX_EPOCH);
                if at < since {
                    continue;
                }
            }
            let delivered = match self.payload(r).await {
                Ok(payload) => replay_one(deliverer, r, &payload).await,
                Err(e) => Err(e.to_string()),
            };
            match delivered {
                Ok(()) => {
                    self.remove(&stored).await?;
                    summary.replayed.push(r.id.clone());
                }
                Err(reason) => summary.failures.push((r.id.clone(), reason)),
            }
        }
        Ok(summary)
    }
}

async fn replay_one(
    deliverer: &crate::delivery::Deliverer,
    r: &DeadLetter,
    payload: &Bytes,
) -> Result<(), String> {
    let event = r.event.clone().unwrap_or_default();
    let attempt = r.attempts + 1;
    let facts = crate::envelope::MessageFacts {
        id: &r.id,
        event: &event,
        subject: &r.subject,
        stream_sequence: r.stream_sequence,
        attempt,
        published: r.published_time(),
        payload,
    };
    let headers = r
        .headers
        .iter()
        .flat_map(|(k, vs)| vs.iter().map(move |v| (k.as_str(), v.as_str())));
    let result = deliverer
        .deliver(&facts, headers, false)
        .map_err(|e| e.to_string())?
        .await;
    if result.is_success() {
        Ok(())
    } else {
        Err(result.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> DeadLetter {
        DeadLetter {
            endpoint: "crm".into(),
            event: Some("lead.created".into()),
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
    }
}
