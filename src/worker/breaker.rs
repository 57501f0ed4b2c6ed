//! Per-endpoint circuit breaker: pauses an endpoint after too many consecutive failed
//! attempts (or at once on 410 Gone) and resumes it after a successful probe.
//!
//! Pausing only stops sending: messages stay in the stream (the few already fetched are
//! held by the consumer), so a receiver that is down for hours loses nothing and nothing
//! is dead-lettered because of the pause.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use tokio::sync::watch;

use crate::metrics::EndpointMetrics;

/// Why an endpoint is paused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PauseReason {
    ConsecutiveFailures(u32),
    Gone,
    Manual,
}

impl std::fmt::Display for PauseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PauseReason::ConsecutiveFailures(n) => write!(f, "{n} consecutive failed attempts"),
            PauseReason::Gone => f.write_str("receiver answered 410 Gone"),
            PauseReason::Manual => f.write_str("paused by an operator"),
        }
    }
}

pub struct Breaker {
    endpoint: String,
    /// 0 disables pausing on failures.
    threshold: u32,
    consecutive: AtomicU32,
    reason: Mutex<Option<PauseReason>>,
    paused_tx: watch::Sender<bool>,
    metrics: EndpointMetrics,
}

impl Breaker {
    pub fn new(endpoint: &str, threshold: u32, metrics: EndpointMetrics) -> Self {
        let (paused_tx, _) = watch::channel(false);
        Self {
            endpoint: endpoint.to_string(),
            threshold,
            consecutive: AtomicU32::new(0),
            reason: Mutex::new(None),
            paused_tx,
            metrics,
        }
    }

    pub fn is_paused(&self) -> bool {
        *self.paused_tx.borrow()
    }

    /// A receiver that changes when the endpoint is paused or resumed.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.paused_tx.subscribe()
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive.load(Ordering::Relaxed)
    }

    pub fn pause_reason(&self) -> Option<PauseReason> {
        self.reason.lock().ok().and_then(|r| r.clone())
    }

    pub fn record_success(&self) {
        self.consecutive.store(0, Ordering::Relaxed);
        self.metrics.consecutive_failures.set(0);
        if self.is_paused() {
            self.resume();
        }
    }

    pub fn record_failure(&self) {
        let n = self
            .consecutive
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        self.metrics.consecutive_failures.set(i64::from(n));
        if self.threshold > 0 && n >= self.threshold {
            self.pause(PauseReason::ConsecutiveFailures(n));
        }
    }

    pub fn pause(&self, reason: PauseReason) {
        if self.is_paused() {
            return;
        }
        tracing::warn!(endpoint = %self.endpoint, reason = %reason,
            "endpoint paused: deliveries stopped, messages wait in the stream");
        if let Ok(mut r) = self.reason.lock() {
            *r = Some(reason);
        }
        self.metrics.paused.set(1);
        self.paused_tx.send_replace(true);
    }

    pub fn resume(&self) {
        if !self.is_paused() {
            return;
        }
        tracing::info!(endpoint = %self.endpoint, "endpoint resumed");
        if let Ok(mut r) = self.reason.lock() {
            *r = None;
        }
        self.metrics.paused.set(0);
        self.paused_tx.send_replace(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn pauses_at_threshold_and_success_resumes() {
        let m = Metrics::new();
        let b = Breaker::new("e", 3, m.endpoint("e"));
        b.record_failure();
        b.record_failure();
        assert!(!b.is_paused());
        b.record_failure();
        assert!(b.is_paused());
        assert_eq!(b.pause_reason(), Some(PauseReason::ConsecutiveFailures(3)));
        b.record_success();
        assert!(!b.is_paused());
        assert_eq!(b.consecutive_failures(), 0);
    }

    #[test]
    fn zero_threshold_never_pauses_on_failures() {
        let m = Metrics::new();
        let b = Breaker::new("e", 0, m.endpoint("e"));
        for _ in 0..100 {
            b.record_failure();
        }
        assert!(!b.is_paused());
        b.pause(PauseReason::Gone);
        assert!(b.is_paused());
    }
}
