//! The drains of former consumers this process runs (`fanout::leftover`), by consumer
//! name. An endpoint made `ordered` again reads its consumer on the source stream
//! again: it stops the drain there and waits for its end before it resets that
//! consumer, so nothing the drain fetched is moved out after the reset.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The drains under way in this process.
#[derive(Clone, Default)]
pub struct Drains(Arc<Mutex<HashMap<String, Running>>>);

struct Running {
    stop: CancellationToken,
    done: CancellationToken,
}

/// One drain's claim on its consumer, held for as long as it runs; dropping it ends
/// the claim and wakes whoever waits in [`Drains::stop`].
pub struct DrainTurn {
    drains: Drains,
    consumer: String,
    /// Cancelled when the drain must stop: by [`Drains::stop`], or by the process's
    /// shutdown.
    pub stop: CancellationToken,
    done: CancellationToken,
}

impl Drop for DrainTurn {
    fn drop(&mut self) {
        let mut running = self.drains.lock();
        if running
            .get(&self.consumer)
            .is_some_and(|r| r.done == self.done)
        {
            running.remove(&self.consumer);
        }
        self.done.cancel();
    }
}

impl Drains {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Claims `consumer` for a drain unless one runs; its stop follows `shutdown`.
    pub fn begin(&self, consumer: &str, shutdown: &CancellationToken) -> Option<DrainTurn> {
        let mut running = self.lock();
        if running.contains_key(consumer) {
            return None;
        }
        let (stop, done) = (shutdown.child_token(), CancellationToken::new());
        running.insert(
            consumer.to_string(),
            Running {
                stop: stop.clone(),
                done: done.clone(),
            },
        );
        Some(DrainTurn {
            drains: self.clone(),
            consumer: consumer.to_string(),
            stop,
            done,
        })
    }

    /// Stops the drain of `consumer`, if one runs, and waits up to `within` for its end;
    /// whether none runs any more.
    pub async fn stop(&self, consumer: &str, within: Duration) -> bool {
        let done = match self.lock().get(consumer) {
            Some(r) => {
                r.stop.cancel();
                r.done.clone()
            }
            None => return true,
        };
        tokio::time::timeout(within, done.cancelled()).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stopped_drain_is_waited_for_and_its_consumer_can_be_claimed_again() {
        let drains = Drains::default();
        let shutdown = CancellationToken::new();
        let turn = drains.begin("c", &shutdown).expect("first claim");
        assert!(
            drains.begin("c", &shutdown).is_none(),
            "one drain per consumer"
        );
        let stopper = tokio::spawn({
            let drains = drains.clone();
            async move { drains.stop("c", Duration::from_secs(5)).await }
        });
        turn.stop.cancelled().await;
        drop(turn);
        assert!(stopper.await.expect("stopper"));
        assert!(drains.begin("c", &shutdown).is_some());
        assert!(drains.stop("other", Duration::from_millis(1)).await);
    }

    #[tokio::test]
    async fn a_drain_that_does_not_end_is_reported() {
        let drains = Drains::default();
        let _turn = drains.begin("c", &CancellationToken::new()).expect("claim");
        assert!(!drains.stop("c", Duration::from_millis(20)).await);
    }
}
