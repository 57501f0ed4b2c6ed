//! Operator events: what changes an endpoint's state, and dead letters, published on
//! `natshook.events.…` for alerting and dashboards that listen on NATS instead of
//! scraping metrics.
//!
//! Events are facts about endpoints and messages, never their content: no payload, no
//! headers, no response body, no error text (an error can quote a URL with a token in
//! its query), no secret. They go out with core NATS publishes through a bounded
//! queue that a background task drains, so raising one never waits: a delivery or an
//! admin request is never slowed or failed by an event. When the queue is full (NATS
//! down for long) events are dropped, and the drops are logged at most once a second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::rate_limit::RateLimit;
use crate::time::rfc3339_millis;

/// The contract fixes the prefix: listeners subscribe to `natshook.events.>`.
pub const SUBJECT_PREFIX: &str = "natshook.events";

/// Events waiting for the publishing task; beyond this they are dropped.
const QUEUE: usize = 1024;

/// A change of an endpoint's state and the subject it is published on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointChange {
    /// natshook stopped deliveries on its own (failure threshold, `410 Gone`).
    Paused,
    /// natshook started deliveries again on its own (a delivery succeeded).
    Resumed,
    /// An operator stopped deliveries (admin API pause, a runtime endpoint disabled).
    Disabled,
    /// An operator started deliveries again (admin API resume, a runtime endpoint
    /// enabled).
    Enabled,
}

impl EndpointChange {
    pub fn subject(self) -> &'static str {
        match self {
            EndpointChange::Paused => "natshook.events.endpoint.paused",
            EndpointChange::Resumed => "natshook.events.endpoint.resumed",
            EndpointChange::Disabled => "natshook.events.endpoint.disabled",
            EndpointChange::Enabled => "natshook.events.endpoint.enabled",
        }
    }
}

/// The subject of [`DeadLetterEvent`]s.
pub const DEAD_LETTER_SUBJECT: &str = "natshook.events.dead_letter";

/// What every event opens with: the endpoint (and its tenant), why, and when.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventFacts {
    pub endpoint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// A stable code, listed with each event.
    pub reason: &'static str,
    /// The same in words, for people reading a log of events.
    pub detail: String,
    /// When it happened (RFC 3339, UTC, milliseconds).
    pub at: String,
}

impl EventFacts {
    /// Facts of an event happening now.
    pub fn now(
        endpoint: &str,
        tenant: Option<&str>,
        reason: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            endpoint: endpoint.to_string(),
            tenant: tenant.map(str::to_string),
            reason,
            detail: detail.into(),
            at: rfc3339_millis(SystemTime::now()),
        }
    }
}

/// The body of a `natshook.events.endpoint.*` event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointEvent {
    /// `reason`: `consecutive_failures`, `gone`, `delivery_succeeded`, `admin_api`,
    /// `cli`.
    #[serde(flatten)]
    pub facts: EventFacts,
    pub consecutive_failures: u32,
    /// The HTTP status that caused a pause (`410`), when one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    /// When the pause that this event ends began (`resumed`, `enabled`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_at: Option<String>,
}

impl EndpointEvent {
    /// An event with `facts`; the optional ones start empty.
    pub fn new(facts: EventFacts) -> Self {
        Self {
            facts,
            consecutive_failures: 0,
            last_status: None,
            paused_at: None,
        }
    }
}

/// The body of a `natshook.events.dead_letter` event: where the record is and why,
/// enough to find it with `natshook dlq list`, nothing of the message's content.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetterEvent {
    /// `reason`: `max_attempts`, `max_body`, `undeliverable`; `detail`: the
    /// dead-letter record's `reason`.
    #[serde(flatten)]
    pub facts: EventFacts,
    /// The message id (`X-Webhook-Id`), which the record is listed under.
    pub id: String,
    pub event: String,
    pub subject: String,
    pub stream_sequence: u64,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    /// The last attempt's result class (`5xx`, `timeout`, `connect_error`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_result: Option<&'static str>,
}

/// What the publishing task is handed.
enum Item {
    Event(&'static str, Bytes),
    /// Answered once everything queued before it reached the server.
    Flush(oneshot::Sender<()>),
}

/// Publishes operator events; cheap to clone, shared by every worker.
#[derive(Clone)]
pub struct OperatorEvents {
    queue: Option<mpsc::Sender<Item>>,
    dropped: Arc<Dropped>,
}

struct Dropped {
    count: AtomicU64,
    log: RateLimit,
}

impl OperatorEvents {
    /// Starts the publishing task on the current tokio runtime; it ends when the last
    /// clone is dropped, after publishing what is queued.
    pub fn new(client: async_nats::Client) -> Self {
        let (tx, mut rx) = mpsc::channel::<Item>(QUEUE);
        let dropped = Arc::new(Dropped {
            count: AtomicU64::new(0),
            log: RateLimit::new(1),
        });
        let failed = Arc::clone(&dropped);
        tokio::spawn(async move {
            while let Some(item) = rx.recv().await {
                match item {
                    Item::Event(subject, body) => {
                        if let Err(e) = client.publish(subject, body).await {
                            failed.note(&e);
                        }
                    }
                    Item::Flush(done) => {
                        let _ = client.flush().await;
                        let _ = done.send(());
                    }
                }
            }
        });
        Self {
            queue: Some(tx),
            dropped,
        }
    }

    /// Publishes nothing: for parts used without NATS (unit tests, the CLI).
    pub fn off() -> Self {
        Self {
            queue: None,
            dropped: Arc::new(Dropped {
                count: AtomicU64::new(0),
                log: RateLimit::new(1),
            }),
        }
    }

    /// Raises an endpoint event. Every state change goes through here, whatever made
    /// it (the breaker, the admin API's pause and resume, the registrar's enable and
    /// disable).
    pub fn endpoint(&self, change: EndpointChange, event: &EndpointEvent) {
        let facts = &event.facts;
        tracing::debug!(endpoint = %facts.endpoint, subject = change.subject(), reason = facts.reason, "operator event");
        self.send(change.subject(), event);
    }

    /// Waits until the events raised so far reached the server: a short-lived process
    /// (`natshook endpoints`) calls it before it exits. The only wait in this type.
    pub async fn flush(&self) {
        let Some(queue) = &self.queue else {
            return;
        };
        let (done, flushed) = oneshot::channel();
        if queue.send(Item::Flush(done)).await.is_ok() {
            let _ = flushed.await;
        }
    }

    pub fn dead_letter(&self, event: &DeadLetterEvent) {
        self.send(DEAD_LETTER_SUBJECT, event);
    }

    fn send(&self, subject: &'static str, event: &impl Serialize) {
        let Some(queue) = &self.queue else {
            return;
        };
        let Ok(body) = serde_json::to_vec(event) else {
            return;
        };
        if let Err(e) = queue.try_send(Item::Event(subject, Bytes::from(body))) {
            self.dropped.note(&e);
        }
    }
}

impl Dropped {
    fn note(&self, error: &dyn std::fmt::Display) {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        if self.log.take() {
            tracing::warn!(error = %error, dropped_so_far = n, "operator event not published");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_and_empty_facts_are_left_out() {
        let mut e = EndpointEvent::new(EventFacts::now(
            "crm",
            None,
            "gone",
            "receiver answered 410 Gone",
        ));
        e.last_status = Some(410);
        let v = serde_json::to_value(&e).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "at",
                "consecutive_failures",
                "detail",
                "endpoint",
                "last_status",
                "reason"
            ]
        );
        assert!(v["at"].as_str().unwrap().ends_with('Z'));
        let e = EndpointEvent::new(EventFacts::now("crm", Some("acme"), "admin_api", "x"));
        assert_eq!(serde_json::to_value(&e).unwrap()["tenant"], "acme");
    }

    #[test]
    fn subjects_follow_the_contract() {
        for (c, s) in [
            (EndpointChange::Paused, "paused"),
            (EndpointChange::Resumed, "resumed"),
            (EndpointChange::Disabled, "disabled"),
            (EndpointChange::Enabled, "enabled"),
        ] {
            assert_eq!(c.subject(), format!("{SUBJECT_PREFIX}.endpoint.{s}"));
        }
        assert_eq!(DEAD_LETTER_SUBJECT, format!("{SUBJECT_PREFIX}.dead_letter"));
    }
}
