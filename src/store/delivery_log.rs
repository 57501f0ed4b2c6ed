//! The delivery log ("webhook logs"): the last attempts per endpoint, kept in a
//! JetStream stream with per-subject limits so it survives restarts, is shared by
//! replicas, and needs no other database.
//!
//! Records are published with core NATS (no ack wait): the log is for people
//! debugging receivers, so it must never slow or block a delivery. A record lost
//! while NATS is unreachable is acceptable; a delivery delayed by logging is not.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, stream};
use serde::{Deserialize, Serialize};

use super::{read_to_end, ReadError};
use crate::config::Config;
use crate::delivery::AttemptResult;
use crate::rate_limit::RateLimit;
use crate::routing::tenant_admits;
use crate::settings::LogSettings;

pub const LOG_STREAM: &str = "NATSHOOK_LOG";
pub const LOG_SUBJECT_PREFIX: &str = "natshook.log";

/// How long reading waits for the next record before it takes the log as read: the
/// admin API answers a person waiting for it.
const READ_IDLE: Duration = Duration::from_millis(500);

fn subject(endpoint: &str) -> String {
    format!("{LOG_SUBJECT_PREFIX}.{endpoint}")
}

/// Which message an attempt was of.
pub struct Attempted<'a> {
    pub endpoint: &'a str,
    pub event: &'a str,
    pub id: &'a str,
    pub tenant: Option<&'a str>,
    pub attempt: u32,
}

/// One attempt, as stored and served by the admin API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    pub endpoint: String,
    pub event: String,
    pub id: String,
    /// The message's tenant: an endpoint moved to another tenant shows only the
    /// records of its tenant now ([`DeliveryLog::recent`]), even those a delivery
    /// still under way for the former one writes after the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub attempt: u32,
    /// When the attempt started (RFC 3339).
    pub time: String,
    /// `2xx`, `4xx`, `timeout`, `connect_error`, …
    pub status: String,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: f64,
    /// At most 4,096 bytes (lossy UTF-8).
    pub response_body: String,
    /// Request headers; signatures and configured header values redacted.
    pub request_headers: Vec<(String, String)>,
}

/// Which successful attempts the log keeps: at most `max_successes_per_second` a
/// second for each endpoint and `max_successes_per_second_total` over all of them.
/// Failed attempts are always kept and bypass both. Without the total, a thousand
/// endpoints at a few deliveries a second each would log every success, and storing
/// them costs nats-server about what the deliveries do.
struct Successes {
    per_endpoint: u32,
    total: RateLimit,
}

impl Successes {
    fn new(per_endpoint: u32, total: u32) -> Self {
        Self {
            per_endpoint,
            total: RateLimit::new(total),
        }
    }

    fn endpoint_cap(&self) -> RateLimit {
        RateLimit::new(self.per_endpoint)
    }

    fn has_room(&self, own: &RateLimit) -> bool {
        own.has_room() && self.total.has_room()
    }

    /// The endpoint's own cap is asked first, so an endpoint at its cap leaves the
    /// total to the others.
    fn take(&self, own: &RateLimit) -> bool {
        own.take() && self.total.take()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot set up stream {LOG_STREAM}: {0}")]
    Stream(String),
    #[error("cannot read the delivery log: {0}")]
    Read(String),
    #[error("cannot purge the delivery log of {endpoint}: {error}")]
    Purge { endpoint: String, error: String },
}

/// Writes and reads the delivery log, and decides which successes it keeps.
#[derive(Clone)]
pub struct DeliveryLog {
    js: jetstream::Context,
    client: async_nats::Client,
    /// Replicas of the stream when natshook creates it.
    replicas: usize,
    settings: LogSettings,
    successes: Arc<Successes>,
}

impl DeliveryLog {
    /// The delivery log of the deployment `config` describes, if it keeps one
    /// (`[delivery_log]`).
    pub fn for_config(client: &async_nats::Client, config: &Config) -> Option<Self> {
        let settings = config.delivery_log.as_ref()?;
        Some(Self {
            js: jetstream::new(client.clone()),
            client: client.clone(),
            replicas: config.nats.replicas,
            settings: settings.clone(),
            successes: Arc::new(Successes::new(
                settings.max_successes_per_second,
                settings.max_successes_per_second_total,
            )),
        })
    }

    /// The cap one endpoint keeps on its logged successes, next to the shared total.
    pub fn endpoint_cap(&self) -> RateLimit {
        self.successes.endpoint_cap()
    }

    /// True when a success of the endpoint behind `own` would be kept now: only then
    /// is it worth capturing the request's headers for the record.
    pub fn has_room_for_success(&self, own: &RateLimit) -> bool {
        self.successes.has_room(own)
    }

    /// Counts a success of the endpoint behind `own`; true when it is to be kept.
    pub fn keeps_success(&self, own: &RateLimit) -> bool {
        self.successes.take(own)
    }

    /// Creates the stream if missing; limits keep it at the last N attempts per endpoint.
    pub async fn ensure_stream(&self) -> Result<(), LogError> {
        let settings = &self.settings;
        self.js
            .get_or_create_stream(stream::Config {
                name: LOG_STREAM.to_string(),
                subjects: vec![format!("{LOG_SUBJECT_PREFIX}.>")],
                max_messages_per_subject: settings.max_per_endpoint,
                max_age: settings.max_age,
                discard: stream::DiscardPolicy::Old,
                storage: stream::StorageType::File,
                num_replicas: self.replicas,
                description: Some("natshook delivery log".into()),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|e| LogError::Stream(e.to_string()))
    }

    /// Records one attempt; never waits for the server.
    pub async fn record(
        &self,
        attempt: Attempted<'_>,
        result: &AttemptResult,
        request_headers: Vec<(String, String)>,
    ) {
        let now = SystemTime::now();
        let started = now.checked_sub(result.duration).unwrap_or(now);
        let endpoint = attempt.endpoint;
        let record = LogRecord {
            endpoint: endpoint.to_string(),
            event: attempt.event.to_string(),
            id: attempt.id.to_string(),
            tenant: attempt.tenant.map(str::to_string),
            attempt: attempt.attempt,
            time: crate::time::rfc3339_millis(started),
            status: result.status.label().to_string(),
            http_status: result.http_status,
            error: result.error.clone(),
            duration_ms: result.duration.as_secs_f64() * 1000.0,
            response_body: result.response_text(),
            request_headers,
        };
        if let Ok(body) = serde_json::to_vec(&record) {
            if let Err(e) = self.client.publish(subject(endpoint), body.into()).await {
                tracing::debug!(error = %e, "delivery log record not written");
            }
        }
    }

    /// Removes a deleted endpoint's records: an endpoint created later under the same
    /// name (by another tenant, say) must not show them.
    pub async fn forget(&self, endpoint: &str) -> Result<(), LogError> {
        let failed = |error: String| LogError::Purge {
            endpoint: endpoint.to_string(),
            error,
        };
        let stream = self
            .js
            .get_stream(LOG_STREAM)
            .await
            .map_err(|e| failed(e.to_string()))?;
        stream
            .purge()
            .filter(subject(endpoint))
            .await
            .map(drop)
            .map_err(|e| failed(e.to_string()))
    }

    /// The log stream's last sequence: records up to it are older than now. 0 when
    /// there is no log stream yet (nothing was logged; `natshook endpoints` may run
    /// before any natshook made it).
    pub async fn last_sequence(&self) -> Result<u64, LogError> {
        match self.js.get_stream(LOG_STREAM).await {
            Ok(stream) => Ok(stream.cached_info().state.last_sequence),
            Err(e) if super::stream_not_found(&e) => Ok(0),
            Err(e) => Err(LogError::Read(e.to_string())),
        }
    }

    /// Removes `endpoint`'s records up to sequence `through` of the log stream, and
    /// none written after it.
    pub async fn forget_through(&self, endpoint: &str, through: u64) -> Result<(), LogError> {
        // A purge "below 1" would take every record of the subject.
        if through == 0 {
            return Ok(());
        }
        let failed = |error: String| LogError::Purge {
            endpoint: endpoint.to_string(),
            error,
        };
        let stream = (self.js.get_stream(LOG_STREAM).await).map_err(|e| failed(e.to_string()))?;
        stream
            .purge()
            .filter(subject(endpoint))
            .sequence(through.saturating_add(1))
            .await
            .map(drop)
            .map_err(|e| failed(e.to_string()))
    }

    /// The newest `limit` records of `endpoint` that its tenant `tenant` (`None`:
    /// every tenant) may read, newest first.
    pub async fn recent(
        &self,
        endpoint: &str,
        tenant: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LogRecord>, LogError> {
        let read = |e: ReadError| LogError::Read(e.to_string());
        let mut messages = read_to_end(&self.js, LOG_STREAM, subject(endpoint), 0, READ_IDLE)
            .await
            .map_err(read)?;
        let mut out = std::collections::VecDeque::new();
        while let Some(stored) = messages.next().await.map_err(read)? {
            let record = serde_json::from_slice::<LogRecord>(&stored.payload).ok();
            if let Some(r) = record.filter(|r| tenant_admits(tenant, r.tenant.as_deref())) {
                out.push_back(r);
                if out.len() > limit {
                    out.pop_front();
                }
            }
        }
        Ok(out.into_iter().rev().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::Successes;

    #[test]
    fn successes_are_capped_per_endpoint_and_over_all() {
        let successes = Successes::new(2, 3);
        let (a, b) = (successes.endpoint_cap(), successes.endpoint_cap());
        // Within one second (a boundary in between only adds room): `a` stops at its
        // own cap without using up the total, so `b` still gets the rest of it.
        let kept_a = (0..10).filter(|_| successes.take(&a)).count();
        let kept_b = (0..10).filter(|_| successes.take(&b)).count();
        assert!((2..=4).contains(&kept_a), "{kept_a}");
        assert!(kept_a + kept_b <= 6, "{kept_a} + {kept_b}");
        assert!(kept_b >= 1, "{kept_b}");
        let none = Successes::new(100, 0);
        let c = none.endpoint_cap();
        assert!(!none.has_room(&c));
        assert!(!none.take(&c));
    }
}
