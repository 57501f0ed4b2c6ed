//! Dead letters: messages that used up their attempts (or can never be delivered),
//! kept complete in the JetStream stream `NATSHOOK_DLQ` under `natshook.dlq.<endpoint>`.
//!
//! A record carries everything needed to deliver the message again with the same id
//! (`natshook dlq replay`), so JetStream is the only store natshook needs.
//!
//! A record is one NATS message, so it must fit the server's `max_payload`, while the
//! payload travels in it as base64 (4/3 of its size): with the defaults (1 MiB each) the
//! record of a payload above about 780 KB does not fit. Such a record keeps its payload
//! in the JetStream object store instead (bucket `NATSHOOK_DLQ_PAYLOADS`, which chunks
//! it, so any size fits) and names the object in `payload_object`; every other field
//! is bounded. Writing a dead letter therefore never
//! fails for its size, only for NATS being unavailable, which a later attempt outlives.
//! The object store, rather than a reference to the source stream's sequence, because
//! the source stream's retention may delete the message once it is acked.

mod record;
mod replay;

use std::time::{Duration, SystemTime};

use async_nats::jetstream::object_store::{self, ObjectMetadata, ObjectStore};
use async_nats::jetstream::stream::{DeleteMessageErrorKind, LastRawMessageErrorKind};
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use tokio::io::AsyncReadExt;

use super::{read_to_end, ReadError, Stored};
use crate::config::{Config, DeadLetterConfig, Endpoint};

pub use self::record::DeadLetter;
use self::record::{base64_len, fit, to_json};
pub use self::replay::{ReplayFilter, ReplaySummary};

pub const DLQ_STREAM: &str = "NATSHOOK_DLQ";
pub const DLQ_SUBJECT_PREFIX: &str = "natshook.dlq";

/// Object-store bucket for the payloads of records that would not fit one NATS message.
pub const PAYLOAD_BUCKET: &str = "NATSHOOK_DLQ_PAYLOADS";

/// Part of `max_payload` a record leaves unused, so that what the server counts besides
/// the body never tips a record of the computed size over the limit.
const HEADROOM: usize = 1024;

/// Largest chunk of a stored payload: the client's default, less when `max_payload` is.
const CHUNK_SIZE: usize = 128 * 1024;

/// How long listing waits for the next record before it takes the stream as read.
const LIST_IDLE: Duration = Duration::from_secs(2);

/// What a record takes besides its payload, for the estimate logged at start only.
const TYPICAL_RECORD: usize = 4096;

pub fn dlq_subject(endpoint: &str) -> String {
    format!("{DLQ_SUBJECT_PREFIX}.{endpoint}")
}

/// The payload size above which a dead letter's payload goes to the object store, for
/// a record of typical size; the decision itself is made on the record's real size.
pub fn inline_payload_limit(max_payload: usize) -> usize {
    max_payload.saturating_sub(HEADROOM + TYPICAL_RECORD) / 4 * 3
}

/// Says at start what the NATS server's `max_payload` means for the endpoints'
/// `max_body` and their dead letters: a `max_body` that can never apply is worth a
/// warning per endpoint; a record without its payload inline is normal operation.
pub fn log_size_limits(client: &async_nats::Client, endpoints: &[std::sync::Arc<Endpoint>]) {
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
    #[error("cannot remove dead letters: {0}")]
    Purge(String),
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
    /// Replicas of the stream and the payload bucket when natshook creates them.
    replicas: usize,
}

impl DeadLetters {
    /// The dead letters of the deployment `config` describes: its `[dead_letter]`
    /// retention, and its streams' replicas for what natshook creates.
    pub fn for_config(js: jetstream::Context, config: &Config) -> Self {
        Self::new(js, &config.dead_letter, config.nats.replicas)
    }

    /// With the settings alone (`replicas`: `nats.replicas`), for a command that reads
    /// the dead letters without a whole config.
    pub fn new(js: jetstream::Context, settings: &DeadLetterConfig, replicas: usize) -> Self {
        Self {
            js,
            max_age: settings.max_age,
            replicas,
        }
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
                num_replicas: self.replicas,
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
    /// is created again once. `Ok(false)`: the stream already held this record (its
    /// first write's ack was lost, or it is [`DeadLetter::once_per_message`]).
    pub async fn publish(
        &self,
        mut record: DeadLetter,
        payload: &[u8],
    ) -> Result<bool, DeadLetterError> {
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
        self.publish_record(&record, body).await
    }

    async fn publish_record(
        &self,
        record: &DeadLetter,
        body: Bytes,
    ) -> Result<bool, DeadLetterError> {
        match self.publish_once(record, body.clone()).await {
            Ok(stored) => Ok(stored),
            Err(first) => {
                if self.js.get_stream(DLQ_STREAM).await.is_ok() {
                    return Err(first);
                }
                tracing::warn!("dead-letter stream {DLQ_STREAM} is missing; creating it again");
                self.ensure_stream().await?;
                self.publish_once(record, body).await
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
                num_replicas: self.replicas,
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

    /// `Ok(false)`: the stream already held a record of this id (see
    /// [`DeadLetter::msg_id`]).
    async fn publish_once(
        &self,
        record: &DeadLetter,
        body: Bytes,
    ) -> Result<bool, DeadLetterError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            record.msg_id().as_str(),
        );
        let ack = self
            .js
            .publish_with_headers(dlq_subject(&record.endpoint), headers, body)
            .await
            .map_err(|e| DeadLetterError::Publish(e.to_string()))?
            .await
            .map_err(|e| DeadLetterError::Publish(e.to_string()))?;
        Ok(!ack.duplicate)
    }

    /// Reads records (oldest first), optionally for one endpoint, at most `limit`.
    pub async fn list(
        &self,
        endpoint: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredDeadLetter>, DeadLetterError> {
        self.list_from(endpoint, 0, limit).await
    }

    /// [`DeadLetters::list`] from stream sequence `from` on.
    pub async fn list_from(
        &self,
        endpoint: Option<&str>,
        from: u64,
        limit: usize,
    ) -> Result<Vec<StoredDeadLetter>, DeadLetterError> {
        let read = |e: ReadError| DeadLetterError::Read(e.to_string());
        let filter = match endpoint {
            Some(e) => dlq_subject(e),
            None => format!("{DLQ_SUBJECT_PREFIX}.>"),
        };
        let mut messages = read_to_end(&self.js, DLQ_STREAM, filter, from, LIST_IDLE)
            .await
            .map_err(read)?;
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(Stored { sequence, payload }) = messages.next().await.map_err(read)? else {
                break;
            };
            match serde_json::from_slice::<DeadLetter>(&payload) {
                Ok(record) => out.push(StoredDeadLetter { sequence, record }),
                Err(e) => {
                    tracing::warn!(sequence, error = %e, "skipping unreadable dead-letter record")
                }
            }
        }
        Ok(out)
    }

    /// Removes the records of `endpoint` dead-lettered before `before` (when it was
    /// deleted), then their stored payloads: a runtime endpoint deleted takes its dead
    /// letters along, so one created later under the name (another customer's, say)
    /// cannot replay them to its own URL, and keeps its own. Only records read are
    /// removed, so no stored payload loses the record that names it unseen. Returns how
    /// many went.
    pub async fn forget(&self, endpoint: &str, before: SystemTime) -> Result<u64, DeadLetterError> {
        let stream = match self.js.get_stream(DLQ_STREAM).await {
            Ok(s) => s,
            // Nothing was ever dead-lettered here.
            Err(e) if crate::store::stream_not_found(&e) => return Ok(0),
            Err(e) => return Err(DeadLetterError::Read(e.to_string())),
        };
        let subject = dlq_subject(endpoint);
        // One lookup answers the common case (no dead letters) without a read.
        let last = match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => m.sequence,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(0),
            Err(e) => return Err(DeadLetterError::Read(e.to_string())),
        };
        // Only the names of stored payloads are kept while reading, not the records.
        let read = |e: ReadError| DeadLetterError::Read(e.to_string());
        let mut objects = Vec::new();
        let mut through = 0;
        let mut messages = read_to_end(&self.js, DLQ_STREAM, subject.clone(), 0, LIST_IDLE)
            .await
            .map_err(read)?;
        while let Some(Stored { sequence, payload }) = messages.next().await.map_err(read)? {
            if sequence > last {
                break;
            }
            // A record that does not parse names no payload and can never be replayed.
            if let Ok(record) = serde_json::from_slice::<DeadLetter>(&payload) {
                let at = humantime::parse_rfc3339_weak(&record.dead_lettered_at);
                if at.is_ok_and(|at| at >= before) {
                    break;
                }
                objects.extend(record.payload_object);
            }
            through = sequence;
        }
        if through == 0 {
            return Ok(0);
        }
        let purged = stream
            .purge()
            .filter(subject)
            .sequence(through + 1)
            .await
            .map_err(|e| DeadLetterError::Purge(e.to_string()))?;
        for location in &objects {
            if let Some((bucket, name)) = location.split_once('/') {
                self.delete_object(bucket, name).await;
            }
        }
        Ok(purged.purged)
    }

    /// Removes a record after it was replayed successfully, then its stored payload (in
    /// that order: a record never names a payload that is gone).
    pub async fn remove(&self, stored: &StoredDeadLetter) -> Result<(), DeadLetterError> {
        let stream = self
            .js
            .get_stream(DLQ_STREAM)
            .await
            .map_err(|e| DeadLetterError::Read(e.to_string()))?;
        match stream.delete_message(stored.sequence).await {
            Ok(_) => {}
            // Another replay (or `max_age`, a purge, the endpoint's deletion) removed
            // it first: removed all the same. The server answers a delete of a message
            // gone with "no message found" under either code, or (2.15, a sequence
            // deleted a moment ago) with "sequence N not found".
            Err(e)
                if matches!(
                    e.kind(),
                    DeleteMessageErrorKind::JetStream(ref j)
                        if j.error_code() == ErrorCode::NO_MESSAGE_FOUND
                            || j.error_code() == ErrorCode::SEQUENCE_NOT_FOUND
                            || (j.error_code() == ErrorCode::STREAM_MESSAGE_DELETE_FAILED
                                && j.to_string().contains("no message found"))
                ) => {}
            Err(e) => return Err(DeadLetterError::Read(e.to_string())),
        }
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
