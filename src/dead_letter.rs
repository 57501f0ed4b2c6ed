//! Dead letters: messages that used up their attempts (or can never be delivered),
//! kept complete in the JetStream stream `NATSHOOK_DLQ` under `natshook.dlq.<endpoint>`.
//!
//! A record carries everything needed to deliver the message again with the same id
//! (`natshook dlq replay`), so JetStream is the only store natshook needs.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, consumer, stream};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

pub const DLQ_STREAM: &str = "NATSHOOK_DLQ";
pub const DLQ_SUBJECT_PREFIX: &str = "natshook.dlq";

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
    /// The original payload, base64 (payloads may be binary).
    pub payload: String,
    /// NATS headers of the original message.
    #[serde(default)]
    pub headers: BTreeMap<String, Vec<String>>,
    pub dead_lettered_at: String,
}

impl DeadLetter {
    pub fn encode_payload(payload: &[u8]) -> String {
        BASE64.encode(payload)
    }

    pub fn payload_bytes(&self) -> Result<Bytes, DeadLetterError> {
        BASE64
            .decode(&self.payload)
            .map(Bytes::from)
            .map_err(|e| DeadLetterError::Corrupt(format!("payload is not base64: {e}")))
    }

    pub fn published_time(&self) -> SystemTime {
        humantime::parse_rfc3339(&self.published).unwrap_or(SystemTime::UNIX_EPOCH)
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

    /// Publishes and waits for JetStream's ack: only then may the original be acked.
    /// If the stream has gone (deleted by hand), it is created again once.
    pub async fn publish(&self, record: &DeadLetter) -> Result<(), DeadLetterError> {
        let body: Bytes = serde_json::to_vec(record)
            .map_err(|e| DeadLetterError::Publish(e.to_string()))?
            .into();
        match self.publish_once(&record.endpoint, body.clone()).await {
            Ok(()) => Ok(()),
            Err(first) => {
                if self.js.get_stream(DLQ_STREAM).await.is_ok() {
                    return Err(first);
                }
                tracing::warn!("dead-letter stream {DLQ_STREAM} is missing; creating it again");
                self.ensure_stream().await?;
                self.publish_once(&record.endpoint, body).await
            }
        }
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

    /// Removes a record after it was replayed successfully.
    pub async fn remove(&self, sequence: u64) -> Result<(), DeadLetterError> {
        let stream = self
            .js
            .get_stream(DLQ_STREAM)
            .await
            .map_err(|e| DeadLetterError::Read(e.to_string()))?;
        stream
            .delete_message(sequence)
            .await
            .map(|_| ())
            .map_err(|e| DeadLetterError::Read(e.to_string()))
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
            match replay_one(deliverer, r).await {
                Ok(()) => {
                    self.remove(stored.sequence).await?;
                    summary.replayed.push(r.id.clone());
                }
                Err(reason) => summary.failures.push((r.id.clone(), reason)),
            }
        }
        Ok(summary)
    }
}

async fn replay_one(deliverer: &crate::delivery::Deliverer, r: &DeadLetter) -> Result<(), String> {
    let ep = deliverer.endpoint();
    let payload = r.payload_bytes().map_err(|e| e.to_string())?;
    let event = r.event.clone().unwrap_or_default();
    let attempt = r.attempts + 1;
    let facts = crate::envelope::MessageFacts {
        id: &r.id,
        event: &event,
        subject: &r.subject,
        stream_sequence: r.stream_sequence,
        attempt,
        published: r.published_time(),
        payload: &payload,
    };
    let body = crate::envelope::build(ep.envelope, &ep.envelope_fields, &facts)
        .map_err(|e| e.to_string())?;
    let forwarded = crate::delivery::forwarded_headers(
        ep,
        r.headers
            .iter()
            .flat_map(|(k, vs)| vs.iter().map(move |v| (k.as_str(), v.as_str()))),
    );
    let result = deliverer
        .send(crate::delivery::Request {
            id: &r.id,
            event: &event,
            attempt,
            body,
            forwarded,
            capture_headers: false,
        })
        .await;
    if result.is_success() {
        Ok(())
    } else {
        Err(result.describe())
    }
}
