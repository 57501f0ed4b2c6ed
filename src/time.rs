//! Wall-clock time as natshook writes it: Unix epoch numbers for headers and
//! counters, RFC 3339 for records and bodies.

use std::time::{Duration, SystemTime};

/// Seconds since the Unix epoch; 0 for a clock set before it.
pub fn unix_secs(t: SystemTime) -> u64 {
    since_epoch(t).as_secs()
}

/// Milliseconds since the Unix epoch; 0 for a clock set before it.
pub fn unix_millis(t: SystemTime) -> u64 {
    since_epoch(t).as_millis() as u64
}

/// Nanoseconds since the Unix epoch; 0 for a clock set before it.
pub fn unix_nanos(t: SystemTime) -> u128 {
    since_epoch(t).as_nanos()
}

/// The time `ms` milliseconds after the Unix epoch.
pub fn from_unix_millis(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

/// RFC 3339 UTC with milliseconds, as in the contract: `2026-04-01T12:05:00.000Z`.
pub fn rfc3339_millis(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn since_epoch(t: SystemTime) -> Duration {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_numbers_round_trip_and_clamp_at_zero() {
        let t = from_unix_millis(1_775_045_100_123);
        assert_eq!(unix_millis(t), 1_775_045_100_123);
        assert_eq!(unix_secs(t), 1_775_045_100);
        assert_eq!(unix_nanos(t), 1_775_045_100_123_000_000);
        assert_eq!(rfc3339_millis(t), "2026-04-01T12:05:00.123Z");
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!((unix_secs(before), unix_millis(before)), (0, 0));
    }
}
