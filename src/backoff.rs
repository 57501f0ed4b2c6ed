//! Exponential back-off for retry loops: a delay that starts small, doubles after
//! every failure up to a cap, and starts over after a success.

use std::time::Duration;

/// Delays of a retry loop: `start`, then twice the last delay, never above `cap`
/// (the first delay is `start` even when it is above `cap`).
#[derive(Debug, Clone)]
pub struct Backoff {
    start: Duration,
    cap: Duration,
    next: Duration,
    jitter: bool,
}

impl Backoff {
    pub fn new(start: Duration, cap: Duration) -> Self {
        Self {
            start,
            cap,
            next: start,
            jitter: false,
        }
    }

    /// Spreads each delay by ±10 % (see [`jitter`]), so that many loops failing
    /// together do not retry together.
    pub fn with_jitter(mut self) -> Self {
        self.jitter = true;
        self
    }

    /// The delay to wait now; the one after it is doubled.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (delay * 2).min(self.cap);
        if self.jitter {
            jitter(delay)
        } else {
            delay
        }
    }

    /// The delay [`next_delay`](Self::next_delay) gives next, without jitter and
    /// without advancing.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// The delay before attempt `n + 1` (`n` failures so far) of a loop that counts its
    /// attempts itself and keeps no `Backoff`, such as a client's reconnect callback:
    /// the same sequence [`next_delay`](Self::next_delay) gives.
    pub fn delay_after(&self, n: usize) -> Duration {
        let delay = match n {
            0 => self.start,
            n => 1u32
                .checked_shl(u32::try_from(n).unwrap_or(u32::MAX))
                .and_then(|factor| self.start.checked_mul(factor))
                .map_or(self.cap, |d| d.min(self.cap)),
        };
        if self.jitter {
            jitter(delay)
        } else {
            delay
        }
    }

    /// After a success: the next delay is `start` again.
    pub fn reset(&mut self) {
        self.next = self.start;
    }
}

/// ±10 %, so that many messages failing together do not come back together.
pub fn jitter(d: Duration) -> Duration {
    let factor = 0.9 + fastrand::f64() * 0.2;
    d.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_starts_over_after_reset() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(500), ms(3000));
        let delays: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        assert_eq!(delays, [ms(500), ms(1000), ms(2000), ms(3000), ms(3000)]);
        b.reset();
        assert_eq!(b.next_delay(), ms(500));
        // A start above the cap is kept once, as the loops it replaces did.
        let mut high = Backoff::new(ms(50), ms(10));
        assert_eq!((high.next_delay(), high.next_delay()), (ms(50), ms(10)));
    }

    #[test]
    fn the_nth_delay_is_the_one_next_delay_gives_after_n_failures() {
        let ms = Duration::from_millis;
        let fresh = Backoff::new(ms(100), ms(5000));
        let mut stepped = fresh.clone();
        for n in 0..100 {
            assert_eq!(fresh.delay_after(n), stepped.next_delay(), "n = {n}");
            // The reconnect formula it replaces.
            assert_eq!(
                fresh.delay_after(n),
                ms((100u64 << n.min(6)).min(5_000)),
                "n = {n}"
            );
        }
        assert_eq!(fresh.delay_after(usize::MAX), ms(5000));
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(10)).with_jitter();
        for _ in 0..100 {
            let d = b.next_delay();
            assert!(
                d >= Duration::from_secs(9) && d <= Duration::from_secs(11),
                "{d:?}"
            );
        }
    }
}
