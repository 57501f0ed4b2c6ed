//! Per-endpoint circuit breaker: pauses an endpoint after too many consecutive failed
//! attempts (or at once on 410 Gone) and resumes it after a successful probe.
//!
//! Pausing only stops sending: messages stay in the stream (the few already fetched are
//! held by the consumer), so a receiver that is down for hours loses nothing and nothing
//! is dead-lettered because of the pause.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use tokio::sync::Notify;

use crate::events::{EndpointChange, EndpointEvent, EventFacts, OperatorEvents};
use crate::metrics::EndpointMetrics;
use crate::store::pause_state::PauseCause;

/// Why an endpoint is paused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PauseReason {
    ConsecutiveFailures(u32),
    Gone,
    Manual,
    /// A shared pause whose cause this version does not know
    /// ([`PauseCause::Unrecognized`]).
    Unrecognized(String),
}

impl PauseReason {
    /// Whether a successful attempt (a probe, or one in flight at the pause) ends it:
    /// only a resume ends an operator's pause, or one whose cause is not known here.
    pub fn ends_on_success(&self) -> bool {
        matches!(
            self,
            PauseReason::ConsecutiveFailures(_) | PauseReason::Gone
        )
    }

    /// The operator event's `reason` code.
    fn code(&self) -> &'static str {
        match self {
            PauseReason::ConsecutiveFailures(_) => "consecutive_failures",
            PauseReason::Gone => "gone",
            PauseReason::Manual => "admin_api",
            PauseReason::Unrecognized(_) => "unrecognized",
        }
    }
}

/// Why a paused endpoint resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeCause {
    /// A delivery succeeded: a probe, or one that was in flight when the pause began.
    Succeeded,
    /// An operator resumed it (admin API).
    Manual,
}

impl ResumeCause {
    fn code(self) -> &'static str {
        match self {
            ResumeCause::Succeeded => "delivery_succeeded",
            ResumeCause::Manual => "admin_api",
        }
    }

    fn detail(self) -> &'static str {
        match self {
            ResumeCause::Succeeded => "a delivery succeeded",
            ResumeCause::Manual => "resumed by an operator",
        }
    }
}

impl std::fmt::Display for PauseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PauseReason::ConsecutiveFailures(n) => write!(f, "{n} consecutive failed attempts"),
            PauseReason::Gone => f.write_str("receiver answered 410 Gone"),
            PauseReason::Manual => f.write_str("paused by an operator"),
            PauseReason::Unrecognized(named) => write!(
                f,
                "paused for a cause this version does not know ({named}); only a resume ends it"
            ),
        }
    }
}

impl From<&PauseReason> for PauseCause {
    fn from(reason: &PauseReason) -> Self {
        match reason {
            PauseReason::ConsecutiveFailures(failures) => PauseCause::Failures {
                failures: *failures,
            },
            PauseReason::Gone => PauseCause::Gone,
            PauseReason::Manual => PauseCause::Manual,
            PauseReason::Unrecognized(named) => PauseCause::Unrecognized {
                named: named.clone(),
            },
        }
    }
}

impl From<&PauseCause> for PauseReason {
    fn from(cause: &PauseCause) -> Self {
        match cause {
            PauseCause::Failures { failures } => PauseReason::ConsecutiveFailures(*failures),
            PauseCause::Gone => PauseReason::Gone,
            PauseCause::Manual => PauseReason::Manual,
            PauseCause::Unrecognized { named } => PauseReason::Unrecognized(named.clone()),
        }
    }
}

/// Told of every pause (`Some`) and resume (`None`) this breaker decides itself, so
/// that the other replicas follow; changes applied from them are not told again.
pub type Announce = Box<dyn Fn(Option<&PauseReason>) + Send + Sync>;

pub struct Breaker {
    endpoint: String,
    /// 0 disables pausing on failures.
    threshold: u32,
    consecutive: AtomicU32,
    reason: Mutex<Option<PauseReason>>,
    paused: AtomicBool,
    /// Woken on every pause and resume. An atomic and a `Notify`, not a watch
    /// channel: with thousands of endpoints, each watch is ~350 bytes more memory.
    changed: Notify,
    metrics: EndpointMetrics,
    announce: Option<Announce>,
    /// When this replica's view of the pause began.
    since: Mutex<Option<SystemTime>>,
    /// Operator events for this replica's own decisions, and the endpoint's tenant.
    events: OperatorEvents,
    tenant: Option<String>,
}

impl Breaker {
    pub fn new(endpoint: &str, threshold: u32, metrics: EndpointMetrics) -> Self {
        Self {
            endpoint: endpoint.to_string(),
            threshold,
            consecutive: AtomicU32::new(0),
            reason: Mutex::new(None),
            paused: AtomicBool::new(false),
            changed: Notify::new(),
            metrics,
            announce: None,
            since: Mutex::new(None),
            events: OperatorEvents::off(),
            tenant: None,
        }
    }

    /// Raises an operator event for each pause and resume this breaker decides
    /// itself; those followed from other replicas were raised where they were decided.
    pub fn raising(mut self, events: OperatorEvents, tenant: Option<String>) -> Self {
        self.events = events;
        self.tenant = tenant;
        self
    }

    /// Shares this breaker's own pauses and resumes through `announce`.
    pub fn announcing(mut self, announce: Announce) -> Self {
        self.announce = Some(announce);
        self
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// Returns once the endpoint is paused (`true`) or not (`false`): at once if it
    /// already is.
    pub async fn until_paused(&self, paused: bool) {
        loop {
            // Registered before the check, so a change between the two still wakes it.
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            if self.is_paused() == paused {
                return;
            }
            changed.await;
        }
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive.load(Ordering::Relaxed)
    }

    pub fn pause_reason(&self) -> Option<PauseReason> {
        self.reason.lock().ok().and_then(|r| r.clone())
    }

    /// A success resumes an automatic pause, never an operator's: a delivery that was
    /// in flight when the operator paused must not undo the pause.
    pub fn record_success(&self) {
        self.consecutive.store(0, Ordering::Relaxed);
        self.metrics.consecutive_failures.set(0);
        if self.is_paused() && self.pause_reason().is_some_and(|r| r.ends_on_success()) {
            self.resume(ResumeCause::Succeeded);
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

    /// Pauses on this replica's own decision (failures, 410, an operator here). An
    /// operator's pause also takes over any other, so that nothing but a resume ends
    /// what the operator stopped: an automatic one (a probe would end it), and one of
    /// a cause this version does not know (a newer replica might end it), whose
    /// record the operator's replaces.
    pub fn pause(&self, reason: PauseReason) {
        match self.pause_reason() {
            None => {}
            Some(current) if current != PauseReason::Manual && reason == PauseReason::Manual => {}
            Some(_) => return,
        }
        tracing::warn!(endpoint = %self.endpoint, reason = %reason,
            "endpoint paused: deliveries stopped, messages wait in the stream");
        if let Some(announce) = &self.announce {
            announce(Some(&reason));
        }
        self.set_paused(Some(reason.clone()));
        let mut event = EndpointEvent::new(EventFacts::now(
            &self.endpoint,
            self.tenant.as_deref(),
            reason.code(),
            reason.to_string(),
        ));
        event.consecutive_failures = self.consecutive_failures();
        let change = match reason {
            PauseReason::Manual => EndpointChange::Disabled,
            PauseReason::Gone => {
                event.last_status = Some(410);
                EndpointChange::Paused
            }
            PauseReason::ConsecutiveFailures(_) | PauseReason::Unrecognized(_) => {
                EndpointChange::Paused
            }
        };
        self.events.endpoint(change, &event);
    }

    /// Resumes on this replica's own decision (a successful attempt, an operator here).
    pub fn resume(&self, cause: ResumeCause) {
        if !self.is_paused() {
            // Another replica's pause may not have reached this one yet: an operator's
            // resume is shared all the same, or that pause would stand once it did.
            if cause == ResumeCause::Manual {
                if let Some(announce) = &self.announce {
                    tracing::info!(endpoint = %self.endpoint, "endpoint resumed by an operator; not paused here, the resume is shared");
                    announce(None);
                }
            }
            return;
        }
        tracing::info!(endpoint = %self.endpoint, cause = cause.detail(), "endpoint resumed");
        if let Some(announce) = &self.announce {
            announce(None);
        }
        let since = self.since.lock().ok().and_then(|s| *s);
        self.set_paused(None);
        let mut event = EndpointEvent::new(EventFacts::now(
            &self.endpoint,
            self.tenant.as_deref(),
            cause.code(),
            cause.detail(),
        ));
        event.consecutive_failures = self.consecutive_failures();
        event.paused_at = since.map(crate::time::rfc3339_millis);
        let change = match cause {
            ResumeCause::Manual => EndpointChange::Enabled,
            ResumeCause::Succeeded => EndpointChange::Resumed,
        };
        self.events.endpoint(change, &event);
    }

    /// Starts paused for `reason`, the endpoint's pause in the shared state: a pause
    /// that outlived a restart or a reload, nothing new to warn about.
    pub fn restore(&self, reason: PauseReason) {
        tracing::debug!(endpoint = %self.endpoint, reason = %reason, "endpoint starts paused, as the shared pause state has it");
        self.set_paused(Some(reason));
    }

    /// Follows a pause or resume another replica decided. A shared resume also clears
    /// this replica's failure count: the receiver answered, so the next failure
    /// starts counting afresh.
    pub fn follow(&self, reason: Option<PauseReason>) {
        match reason {
            Some(reason) => {
                let before = self.pause_reason();
                if before.as_ref() == Some(&reason) {
                    return;
                }
                // Paused already: another cause (an operator's pause over the
                // breaker's), or this replica's own pause coming back through the
                // watch with an earlier failure count. Nothing stops anew.
                if before.is_some() {
                    tracing::debug!(endpoint = %self.endpoint, reason = %reason, "shared pause reason followed");
                } else {
                    tracing::warn!(endpoint = %self.endpoint, reason = %reason,
                        "endpoint paused by another replica: deliveries stopped, messages wait in the stream");
                }
                self.set_paused(Some(reason));
            }
            None => {
                self.consecutive.store(0, Ordering::Relaxed);
                self.metrics.consecutive_failures.set(0);
                if self.is_paused() {
                    tracing::info!(endpoint = %self.endpoint, "endpoint resumed by another replica");
                    self.set_paused(None);
                }
            }
        }
    }

    fn set_paused(&self, reason: Option<PauseReason>) {
        let paused = reason.is_some();
        if let Ok(mut since) = self.since.lock() {
            match (paused, since.is_some()) {
                (true, false) => *since = Some(SystemTime::now()),
                (false, _) => *since = None,
                (true, true) => {}
            }
        }
        if let Ok(mut r) = self.reason.lock() {
            *r = reason;
        }
        self.metrics.paused.set(i64::from(paused));
        if self.paused.swap(paused, Ordering::AcqRel) != paused {
            self.changed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

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
    fn announces_its_own_decisions_and_follows_others_silently() {
        let m = Metrics::new();
        let told = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&told);
        let b = Breaker::new("e", 2, m.endpoint("e")).announcing(Box::new(move |r| {
            log.lock().unwrap().push(r.cloned());
        }));
        b.record_failure();
        b.record_failure();
        b.record_success();
        b.follow(Some(PauseReason::Manual));
        assert!(b.is_paused());
        b.record_failure();
        b.follow(None);
        assert!(!b.is_paused());
        assert_eq!(b.consecutive_failures(), 0);
        assert_eq!(
            *told.lock().unwrap(),
            vec![Some(PauseReason::ConsecutiveFailures(2)), None]
        );
    }

    #[test]
    fn a_success_in_flight_does_not_undo_an_operators_pause() {
        let m = Metrics::new();
        let b = Breaker::new("e", 3, m.endpoint("e"));
        b.pause(PauseReason::Manual);
        b.record_success();
        assert!(b.is_paused());
        b.resume(ResumeCause::Manual);
        b.pause(PauseReason::Gone);
        b.record_success();
        assert!(!b.is_paused());
    }

    /// A pause followed from a record this version cannot read holds like an
    /// operator's: no success ends it, another replica's resume or an operator does.
    #[test]
    fn a_pause_of_an_unrecognized_cause_ends_only_on_a_resume() {
        let m = Metrics::new();
        let b = Breaker::new("e", 3, m.endpoint("e"));
        b.follow(Some(PauseReason::Unrecognized("quarantined".into())));
        b.record_success();
        assert!(b.is_paused(), "a success ended a pause of an unknown cause");
        b.follow(None);
        assert!(!b.is_paused());
        b.restore(PauseReason::Unrecognized("quarantined".into()));
        b.record_success();
        b.pause(PauseReason::Gone);
        assert_eq!(
            b.pause_reason(),
            Some(PauseReason::Unrecognized("quarantined".into()))
        );
        b.resume(ResumeCause::Manual);
        assert!(!b.is_paused());
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

    #[test]
    fn an_operator_pause_takes_over_and_only_an_operator_resumes_it() {
        let m = Metrics::new();
        let b = Breaker::new("e", 1, m.endpoint("e"));
        b.record_failure();
        assert_eq!(b.pause_reason(), Some(PauseReason::ConsecutiveFailures(1)));
        b.pause(PauseReason::Manual);
        assert_eq!(b.pause_reason(), Some(PauseReason::Manual));
        b.pause(PauseReason::Gone);
        assert_eq!(b.pause_reason(), Some(PauseReason::Manual));
        b.record_success();
        assert!(b.is_paused(), "an in-flight success resumed a manual pause");
        b.resume(ResumeCause::Manual);
        assert!(!b.is_paused());
        assert_eq!(b.pause_reason(), None);
    }
}
