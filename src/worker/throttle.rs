//! `rate_limit`: the endpoint's token bucket, taken before a delivery starts.
//!
//! A GCRA limiter (governor) shaped so that any window as long as the rate's period
//! (`[t, t + per)`) holds at most `count` tokens, whenever it starts, even when a
//! backlog drains after an outage. GCRA with emission interval `T` and burst `b`
//! lets at most `b - 1 + per / T` cells into such a window, so the period is
//! `per / (count - b + 1)`.
//!
//! For slow rates the burst is one: tokens evenly spaced [`Rate::interval`] apart.
//! A sleep ends up to a timer tick (1 ms) late, though, and a burst of one can never
//! make that up, so at 200/s (5 ms apart) the real pace would drop by a tenth or
//! more. Rates faster than one per [`SPACED_FROM`] get a burst just large enough to
//! absorb [`LATENESS`], paid for with a sustained pace a little under the rate (at
//! 200/s: 199/s sustained, two tokens at most back to back, never 201 in a second).
//! Time is tokio's, so the wait is a tokio sleep.

use std::num::NonZeroU32;
use std::ops::Add;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

use crate::config::Rate;

/// A reading of tokio's clock, as governor measures time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tick(Instant);

impl Add<Nanos> for Tick {
    type Output = Self;

    fn add(self, other: Nanos) -> Self {
        Tick(self.0 + Duration::from(other))
    }
}

impl Reference for Tick {
    fn duration_since(&self, earlier: Self) -> Nanos {
        Nanos::from(self.0.saturating_duration_since(earlier.0))
    }

    fn saturating_sub(&self, duration: Nanos) -> Self {
        Tick(self.0.checked_sub(duration.into()).unwrap_or(self.0))
    }
}

/// tokio's clock: paused in unit tests, the runtime's timer otherwise.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    type Instant = Tick;

    fn now(&self) -> Tick {
        Tick(Instant::now())
    }
}

/// How late a timer may fire, which the bucket absorbs: tokio's timer has
/// millisecond ticks, and a busy runtime adds a little.
const LATENESS: Duration = Duration::from_millis(2);

/// Rates whose tokens are at least this far apart are spaced evenly (burst one):
/// a tick of lateness costs them at most a fifth of what a larger burst would.
const SPACED_FROM: Duration = Duration::from_millis(20);

/// The GCRA period and burst for this replica's share of `rate` when `replicas`
/// processes split it: at most `count / replicas` tokens in any window of `per` (so
/// `count` over all of them, give or take the rounding of each share to whole
/// tokens), the burst absorbing [`LATENESS`] where the tokens come faster than
/// [`SPACED_FROM`]. With a burst `b`, a window holds `b - 1 + per / T` tokens, so the
/// burst's extra tokens come out of the sustained pace.
fn shape(rate: Rate, replicas: u32) -> (Duration, u32) {
    let n = replicas.max(1);
    let count = rate.count.max(1);
    let per = rate.per.saturating_mul(n);
    let interval = Rate { count, per }.interval();
    let extra = if interval >= SPACED_FROM {
        0
    } else {
        let e = LATENESS.as_nanos().div_ceil(interval.as_nanos().max(1));
        u32::try_from(e).unwrap_or(u32::MAX).min((count - 1) / n)
    };
    let sustained = Rate {
        count: count - n * extra,
        per,
    };
    (sustained.interval(), extra + 1)
}

/// One endpoint's limiter, shared by its fetch loop, its probes and the admin API's
/// test event.
pub struct Throttle {
    rate: Rate,
    replicas: u32,
    /// The gap between tokens at the sustained pace.
    period: Duration,
    limiter: RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Tick>>,
    /// No token before this: a throttle that replaces another starts where that one
    /// left off, not with a full bucket.
    not_before: Option<Instant>,
    /// When the last token was taken.
    last: Mutex<Option<Instant>>,
}

impl Throttle {
    /// This replica's share of `rate`, split between `replicas` processes.
    pub fn new(rate: Rate, replicas: u32) -> Self {
        let (period, burst) = shape(rate, replicas);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        // `with_period` is `None` only for a zero period, which `interval` never is.
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(burst);
        Self {
            rate,
            replicas: replicas.max(1),
            period,
            limiter: RateLimiter::direct_with_clock(quota, TokioClock),
            not_before: None,
            last: Mutex::new(None),
        }
    }

    /// Like [`Throttle::new`], for a throttle that replaces `previous` (a new rate or a
    /// new replica count): its first token comes one period after `previous`'s last,
    /// so a change never adds a burst.
    pub fn following(rate: Rate, replicas: u32, previous: &Throttle) -> Self {
        let mut next = Self::new(rate, replicas);
        next.not_before = previous.last_taken().map(|at| at + next.period);
        next
    }

    fn last_taken(&self) -> Option<Instant> {
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The endpoint's rate, over all replicas.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// How many replicas the rate is split between.
    pub fn replicas(&self) -> u32 {
        self.replicas
    }

    /// Takes a token if one is free now; otherwise says when the next one is.
    pub fn try_take(&self) -> Result<(), Instant> {
        let now = Instant::now();
        if let Some(at) = self.not_before.filter(|at| *at > now) {
            return Err(at);
        }
        match self.limiter.check() {
            Ok(()) => {
                *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
                Ok(())
            }
            Err(not_until) => Err(not_until.earliest_possible().0),
        }
    }

    /// Waits for a token unless the next one is more than `max_wait` away; then
    /// returns how long to wait instead (what a caller that cannot wait tells its own
    /// caller to do).
    pub async fn take_within(&self, max_wait: Duration) -> Result<(), Duration> {
        let deadline = Instant::now() + max_wait;
        loop {
            match self.try_take() {
                Ok(()) => return Ok(()),
                Err(at) if at > deadline => return Err(at - Instant::now()),
                Err(at) => tokio::time::sleep_until(at).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(count: u32, secs: u64) -> Rate {
        Rate {
            count,
            per: Duration::from_secs(secs),
        }
    }

    /// Takes `n` tokens as fast as the throttle allows; the instants they came at.
    async fn take(t: &Throttle, n: usize) -> Vec<Instant> {
        let mut at = Vec::new();
        while at.len() < n {
            match t.try_take() {
                Ok(()) => at.push(Instant::now()),
                Err(next) => tokio::time::sleep_until(next).await,
            }
        }
        at
    }

    #[test]
    fn fast_rates_absorb_timer_lateness_with_a_small_burst() {
        let ms = Duration::from_millis;
        assert_eq!(shape(rate(10, 1), 1), (ms(100), 1));
        assert_eq!(shape(rate(50, 1), 1), (ms(20), 1));
        assert_eq!(shape(rate(1, 3600), 1), (Duration::from_secs(3600), 1));
        // 5 ms apart: one extra token, so 199 per second sustained.
        assert_eq!(shape(rate(200, 1), 1), (Duration::from_nanos(5_025_126), 2));
        assert_eq!(
            shape(rate(1000, 1), 1),
            (Duration::from_nanos(1_002_005), 3)
        );
        assert_eq!(shape(rate(1, 1), 1), (Duration::from_secs(1), 1));
    }

    #[test]
    fn replicas_split_the_rate() {
        let ms = Duration::from_millis;
        // 10/s over 2: each 5/s, evenly spaced.
        assert_eq!(shape(rate(10, 1), 2), (ms(200), 1));
        // 200/s over 3: each 15 ms apart, one extra token each, out of the pace:
        // 197 per 3 s each, so at most 1 + 65.67 in a second each, 200 in all.
        assert_eq!(
            shape(rate(200, 1), 3),
            (Duration::from_nanos(15_228_427), 2)
        );
        // Fewer tokens than replicas: each waits its turn of the whole rate.
        assert_eq!(shape(rate(2, 1), 3), (ms(1500), 1));
        assert_eq!(shape(rate(200, 1), 0), shape(rate(200, 1), 1));
    }

    /// Every token instant `at` starts a window of `per`: none holds more than `count`.
    fn most_in_a_window(at: &[Instant], per: Duration) -> usize {
        (0..at.len())
            .map(|i| at[i..].iter().take_while(|a| **a - at[i] < per).count())
            .max()
            .unwrap_or(0)
    }

    #[tokio::test(start_paused = true)]
    async fn no_window_of_the_period_holds_more_than_count() {
        for (count, secs) in [(200, 1), (1000, 1), (3, 1), (7, 1), (50, 60), (1, 1)] {
            let t = Throttle::new(rate(count, secs), 1);
            let at = take(&t, 3 * count as usize + 1).await;
            let per = Duration::from_secs(secs);
            let most = most_in_a_window(&at, per);
            assert!(
                most <= count as usize,
                "{count}/{secs}s: {most} in one window"
            );
            // And it keeps up with the rate within 2 %: the timer's tick per token
            // when evenly spaced, or the token given up for the burst.
            let span = at[3 * count as usize] - at[0];
            let pace = f64::from(3 * count) / span.as_secs_f64() * per.as_secs_f64();
            assert!(pace > f64::from(count) * 0.98, "{count}/{secs}s: {pace}");
        }
    }

    /// Lateness of every sleep (a busy runtime) neither breaks the window nor, at a fast
    /// rate, slows the pace by more than the token the burst costs.
    #[tokio::test(start_paused = true)]
    async fn late_wake_ups_are_made_up_within_the_limit() {
        let t = Throttle::new(rate(200, 1), 1);
        let mut at = Vec::new();
        while at.len() < 1000 {
            match t.try_take() {
                Ok(()) => at.push(Instant::now()),
                Err(next) => tokio::time::sleep_until(next + Duration::from_micros(1500)).await,
            }
        }
        assert!(most_in_a_window(&at, Duration::from_secs(1)) <= 200);
        let per_second = 999.0 / (at[999] - at[0]).as_secs_f64();
        assert!(per_second > 190.0, "{per_second}/s");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_throttle_gives_one_token_at_once_not_a_burst() {
        let t = Throttle::new(rate(10, 1), 1);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(t.try_take().is_ok());
        let next = t.try_take().unwrap_err();
        assert_eq!(next - Instant::now(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_replacement_starts_where_the_last_left_off() {
        let old = Throttle::new(rate(10, 1), 1);
        assert!(old.try_take().is_ok());
        // Now split over two replicas: the next token is 200 ms after the last, not
        // at once from a full bucket.
        let next = Throttle::following(rate(10, 1), 2, &old);
        let at = next.try_take().unwrap_err();
        assert_eq!(at - Instant::now(), Duration::from_millis(200));
        tokio::time::sleep_until(at).await;
        assert!(next.try_take().is_ok());
        // One that never gave a token hands nothing on.
        let fresh = Throttle::following(rate(10, 1), 3, &Throttle::new(rate(10, 1), 1));
        assert!(fresh.try_take().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn take_within_waits_or_says_how_long() {
        let t = Throttle::new(rate(1, 60), 1);
        assert_eq!(t.take_within(Duration::ZERO).await, Ok(()));
        let wait = t.take_within(Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(wait, Duration::from_secs(60));
        let before = Instant::now();
        assert_eq!(t.take_within(Duration::from_secs(61)).await, Ok(()));
        assert_eq!(Instant::now() - before, Duration::from_secs(60));
    }
}
