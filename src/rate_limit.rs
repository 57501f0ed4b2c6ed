//! A per-second cap on events, e.g. the successful attempts the delivery log keeps.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// At most `limit` events per wall-clock second, lock-free: the second and the count
/// share one atomic word (count in the low 20 bits).
pub struct RateLimit {
    limit: u64,
    state: AtomicU64,
}

impl RateLimit {
    const COUNT_BITS: u32 = 20;

    pub fn new(limit: u32) -> Self {
        Self {
            limit: u64::from(limit).min((1 << Self::COUNT_BITS) - 1),
            state: AtomicU64::new(0),
        }
    }

    fn now_second() -> u64 {
        crate::time::unix_millis(SystemTime::now()) / 1000
    }

    /// True when `take` would succeed now (without taking).
    pub fn has_room(&self) -> bool {
        if self.limit == 0 {
            return false;
        }
        let s = self.state.load(Ordering::Relaxed);
        s >> Self::COUNT_BITS != Self::now_second()
            || (s & ((1 << Self::COUNT_BITS) - 1)) < self.limit
    }

    pub fn take(&self) -> bool {
        if self.limit == 0 {
            return false;
        }
        let now = Self::now_second();
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            let (second, count) = (s >> Self::COUNT_BITS, s & ((1 << Self::COUNT_BITS) - 1));
            let next = if second != now {
                (now << Self::COUNT_BITS) | 1
            } else if count < self.limit {
                s + 1
            } else {
                return false;
            };
            match self
                .state
                .compare_exchange_weak(s, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(actual) => s = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RateLimit;

    #[test]
    fn rate_limit_allows_the_limit_per_second() {
        let r = RateLimit::new(3);
        assert!(r.has_room());
        let taken = (0..10).filter(|_| r.take()).count();
        // All ten calls normally fall in one second; a second boundary may add some.
        assert!((3..=6).contains(&taken), "{taken}");
        let none = RateLimit::new(0);
        assert!(!none.take());
    }
}
