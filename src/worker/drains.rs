//! The drains of former consumers this process runs (`fanout::leftover`), by consumer
//! name, and the consumers its `ordered` endpoints read, which no drain may touch. An
//! endpoint made `ordered` again reads its consumer on the source stream again: it
//! holds that consumer here as its worker is made, which stops a drain under way and
//! refuses a new one, and its bind waits for the drain's end before it resets the
//! consumer, so nothing the drain fetched is moved out after the reset.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The drains under way in this process, and the consumers they may not touch.
#[derive(Clone, Default)]
pub struct Drains(Arc<Mutex<State>>);

#[derive(Default)]
struct State {
    running: HashMap<String, Running>,
    held: HashSet<String>,
}

struct Running {
    taken_back: CancellationToken,
    done: CancellationToken,
}

/// One drain's claim on its consumer, held for as long as it runs; dropping it ends
/// the claim and wakes whoever waits in [`Drains::stop`].
pub struct DrainTurn {
    drains: Drains,
    consumer: String,
    /// Cancelled when the endpoint takes its consumer back ([`Drains::hold`]): the
    /// drain moves nothing more.
    pub taken_back: CancellationToken,
    done: CancellationToken,
}

impl Drop for DrainTurn {
    fn drop(&mut self) {
        let mut state = self.drains.lock();
        if state
            .running
            .get(&self.consumer)
            .is_some_and(|r| r.done == self.done)
        {
            state.running.remove(&self.consumer);
        }
        self.done.cancel();
    }
}

impl Drains {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Claims `consumer` for a drain, unless one runs or an `ordered` endpoint holds it.
    pub fn begin(&self, consumer: &str) -> Option<DrainTurn> {
        let mut state = self.lock();
        if state.running.contains_key(consumer) || state.held.contains(consumer) {
            return None;
        }
        let (taken_back, done) = (CancellationToken::new(), CancellationToken::new());
        state.running.insert(
            consumer.to_string(),
            Running {
                taken_back: taken_back.clone(),
                done: done.clone(),
            },
        );
        Some(DrainTurn {
            drains: self.clone(),
            consumer: consumer.to_string(),
            taken_back,
            done,
        })
    }

    /// Marks `consumer` as read by an `ordered` endpoint (`true`) or not (`false`).
    /// Held, no drain begins on it, and one under way is told to stop
    /// ([`Drains::stop`] waits for its end).
    pub fn hold(&self, consumer: &str, held: bool) {
        let mut state = self.lock();
        if !held {
            state.held.remove(consumer);
            return;
        }
        state.held.insert(consumer.to_string());
        if let Some(r) = state.running.get(consumer) {
            r.taken_back.cancel();
        }
    }

    /// Stops the drain of `consumer`, if one runs, and waits up to `within` for its end;
    /// whether none runs any more.
    pub async fn stop(&self, consumer: &str, within: Duration) -> bool {
        let done = match self.lock().running.get(consumer) {
            Some(r) => {
                r.taken_back.cancel();
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
        let turn = drains.begin("c").expect("first claim");
        assert!(drains.begin("c").is_none(), "one drain per consumer");
        let stopper = tokio::spawn({
            let drains = drains.clone();
            async move { drains.stop("c", Duration::from_secs(5)).await }
        });
        turn.taken_back.cancelled().await;
        drop(turn);
        assert!(stopper.await.expect("stopper"));
        assert!(drains.begin("c").is_some());
        assert!(drains.stop("other", Duration::from_millis(1)).await);
    }

    #[tokio::test]
    async fn a_drain_that_does_not_end_is_reported() {
        let drains = Drains::default();
        let _turn = drains.begin("c").expect("claim");
        assert!(!drains.stop("c", Duration::from_millis(20)).await);
    }

    #[test]
    fn a_held_consumer_stops_its_drain_and_refuses_new_ones_until_released() {
        let drains = Drains::default();
        let turn = drains.begin("c").expect("claim");
        drains.hold("c", true);
        assert!(turn.taken_back.is_cancelled());
        drop(turn);
        assert!(drains.begin("c").is_none());
        drains.hold("c", false);
        assert!(drains.begin("c").is_some());
    }
}
