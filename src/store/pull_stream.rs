//! Pull streams on natshook's consumers, with one rule for how soon a stalled pull
//! request is noticed.
//!
//! A pull request can stall: the server stops serving it while messages are pending
//! and sends nothing, neither messages nor heartbeats. The client notices only when
//! two heartbeats are missed, then pulls again; until then the consumer delivers
//! nothing. The heartbeat interval therefore bounds how long a stall lasts, and costs
//! one small message per interval on a consumer with nothing to send.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, Consumer};

/// How long a pull request waits on the server before the client renews it.
const EXPIRES: Duration = Duration::from_secs(30);

/// The heartbeat of a consumer whose stall must end within two seconds.
const QUICKEST: Duration = Duration::from_secs(1);

/// The longest heartbeat, whatever the number of consumers: a stall lasts at most
/// twice this.
const SLOWEST: Duration = Duration::from_secs(5);

/// How a consumer is used, which sets its heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Carries traffic whenever it exists: the fan-out's consumer on the source
    /// stream, the lane, and a fan-out endpoint's consumer (deleted when idle). A
    /// stall holds up deliveries, so it ends within two seconds; the heartbeats cost
    /// nothing while messages flow, and there are few such consumers at rest.
    Busy,
    /// One of `consumers` long-lived consumers (each endpoint's own consumer without
    /// fan-out) that may all be idle at once: together their heartbeats are what they
    /// cost the server at rest. Up to 100 of them have one a second, like a busy
    /// consumer; more are spaced so that all together send 100 a second, and none
    /// waits longer than 5 s.
    OneOf(usize),
}

impl Liveness {
    /// The idle heartbeat the server sends on a pull request; the client pulls again
    /// after two are missed.
    pub fn heartbeat(self) -> Duration {
        match self {
            Liveness::Busy => QUICKEST,
            Liveness::OneOf(consumers) => {
                let spaced = Duration::from_millis(10)
                    .saturating_mul(u32::try_from(consumers).unwrap_or(u32::MAX));
                spaced.clamp(QUICKEST, SLOWEST)
            }
        }
    }
}

/// A pull stream on `consumer` that asks for `batch` messages at a time.
pub async fn messages(
    consumer: &Consumer<pull::Config>,
    batch: usize,
    liveness: Liveness,
) -> Result<pull::Stream, String> {
    consumer
        .stream()
        .max_messages_per_batch(batch)
        .heartbeat(liveness.heartbeat())
        .expires(EXPIRES)
        .messages()
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_consumer_notices_a_stall_within_two_seconds() {
        assert_eq!(Liveness::Busy.heartbeat() * 2, Duration::from_secs(2));
        assert_eq!(Liveness::OneOf(1).heartbeat(), Liveness::Busy.heartbeat());
        assert_eq!(Liveness::OneOf(100).heartbeat(), Duration::from_secs(1));
    }

    #[test]
    fn up_to_five_hundred_consumers_send_at_most_a_hundred_heartbeats_a_second() {
        for n in [101, 250, 500] {
            let every = Liveness::OneOf(n).heartbeat();
            assert!(
                n as f64 / every.as_secs_f64() <= 100.0 + 1e-9,
                "{n}: {every:?}"
            );
        }
        assert_eq!(
            Liveness::OneOf(250).heartbeat(),
            Duration::from_millis(2500)
        );
        // Beyond, each waits no longer than SLOWEST, so a stall stays bounded.
        assert_eq!(Liveness::OneOf(999).heartbeat(), SLOWEST);
        assert_eq!(Liveness::OneOf(10_000).heartbeat(), SLOWEST);
        // The server takes a heartbeat of at most half the expiry.
        assert!(SLOWEST * 2 <= EXPIRES);
    }
}
