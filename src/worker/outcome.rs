//! What becomes of a message after an attempt, decided from the attempt's result and
//! the endpoint's retry settings alone, so that every rule is testable without NATS.

use std::time::Duration;

use crate::config::Endpoint;
use crate::delivery::AttemptResult;

/// How a message is settled with JetStream after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Delivered: ack.
    Ack,
    /// NAK with this delay; JetStream redelivers it as the next attempt.
    Retry(Duration),
    /// The receiver answered `410 Gone` with attempts left: pause the endpoint and NAK
    /// with this delay (the probe interval).
    Pause(Duration),
    /// `max_attempts` used up: dead-letter, then ack.
    DeadLetter,
    /// `410 Gone` on the last attempt: pause the endpoint and dead-letter the message,
    /// so that its probes never take it past `max_attempts`.
    PauseAndDeadLetter,
}

/// The decision for attempt `attempt` (1-based) of a message to `endpoint`. A
/// receiver's `Retry-After` wins over the retry schedule; a scheduled delay goes
/// through `spread` (jitter in the worker), so that messages failing together do not
/// come back together.
pub fn decide(
    result: &AttemptResult,
    attempt: u32,
    endpoint: &Endpoint,
    spread: impl FnOnce(Duration) -> Duration,
) -> Decision {
    if result.is_success() {
        Decision::Ack
    } else if result.is_gone() {
        if attempt >= endpoint.max_attempts {
            Decision::PauseAndDeadLetter
        } else {
            Decision::Pause(endpoint.probe_interval)
        }
    } else if attempt >= endpoint.max_attempts {
        Decision::DeadLetter
    } else {
        Decision::Retry(
            result
                .retry_after
                .unwrap_or_else(|| spread(endpoint.retry_delay(attempt))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_endpoint;
    use crate::metrics::AttemptStatus;

    fn endpoint() -> Endpoint {
        test_endpoint(
            "secret = \"s\"\nmax_attempts = 3\nretry_schedule = [\"1s\", \"5s\"]\nprobe_interval = \"30s\"",
        )
    }

    fn answered(status: Option<u16>, retry_after: Option<Duration>) -> AttemptResult {
        AttemptResult {
            status: match status {
                Some(s) => AttemptStatus::Class(s),
                None => AttemptStatus::Timeout,
            },
            http_status: status,
            retry_after,
            error: None,
            response_body: Default::default(),
            duration: Duration::ZERO,
            request_headers: Vec::new(),
        }
    }

    fn decide_exact(result: &AttemptResult, attempt: u32) -> Decision {
        decide(result, attempt, &endpoint(), |d| d)
    }

    #[test]
    fn a_2xx_is_acked_on_any_attempt() {
        for attempt in [1, 3, 99] {
            assert_eq!(
                decide_exact(&answered(Some(204), None), attempt),
                Decision::Ack
            );
        }
    }

    #[test]
    fn failures_follow_the_schedule_and_retry_after_wins() {
        let s = Duration::from_secs;
        assert_eq!(
            decide_exact(&answered(Some(500), None), 1),
            Decision::Retry(s(1))
        );
        assert_eq!(
            decide_exact(&answered(None, None), 2),
            Decision::Retry(s(5))
        );
        let asked = answered(Some(429), Some(s(42)));
        assert_eq!(decide_exact(&asked, 1), Decision::Retry(s(42)));
        // The scheduled delay is spread; Retry-After is taken as the receiver said.
        let doubled = |d: Duration| d * 2;
        assert_eq!(
            decide(&answered(Some(503), None), 1, &endpoint(), doubled),
            Decision::Retry(s(2))
        );
        assert_eq!(
            decide(&asked, 1, &endpoint(), doubled),
            Decision::Retry(s(42))
        );
    }

    #[test]
    fn the_last_attempt_dead_letters_and_gone_pauses_too() {
        assert_eq!(
            decide_exact(&answered(Some(500), None), 3),
            Decision::DeadLetter
        );
        assert_eq!(decide_exact(&answered(None, None), 4), Decision::DeadLetter);
        let gone = answered(Some(410), None);
        for attempt in [1, 2] {
            assert_eq!(
                decide_exact(&gone, attempt),
                Decision::Pause(Duration::from_secs(30))
            );
        }
        for attempt in [3, 9] {
            assert_eq!(decide_exact(&gone, attempt), Decision::PauseAndDeadLetter);
        }
    }
}
