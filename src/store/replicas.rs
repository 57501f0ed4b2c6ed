//! How many natshook processes of one deployment are running, for what they split
//! between them: an endpoint's `rate_limit` holds for the endpoint, not for each
//! replica, so each replica takes its share of the rate.
//!
//! Each process writes its own key `replicas.<consumer_prefix>.<id>` in the
//! `NATSHOOK_STATE` bucket every [`HEARTBEAT`] and watches the keys of the others. A
//! replica whose key was not written for [`STALE_AFTER`] is counted out, so one killed
//! with SIGKILL stops counting within seconds; one that stops cleanly deletes its key
//! ([`leave`]) as it stops fetching.
//! The consumer prefix names the deployment: processes with another prefix read other
//! consumers and split nothing with this one.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::pause_state::{replica_name, PauseState};
use crate::backoff::Backoff;

/// How often a replica writes its key.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// How long a key stays counted after its last write: three heartbeats, so one late
/// write does not count a replica out.
pub const STALE_AFTER: Duration = Duration::from_secs(6);

/// The live replicas of one deployment, this process included, as the others see them.
#[derive(Debug, Default)]
struct Census {
    /// Key → when its last write was made (on this process's clock).
    seen: HashMap<String, Instant>,
}

impl Census {
    /// Records a write of `key` made `age` ago, or its deletion.
    fn note(&mut self, key: String, age: Option<Duration>, now: Instant) {
        match age {
            Some(age) => {
                let at = now.checked_sub(age.min(STALE_AFTER)).unwrap_or(now);
                self.seen.insert(key, at);
            }
            None => {
                self.seen.remove(&key);
            }
        }
    }

    /// Replicas written within `STALE_AFTER` of `now`, `own` counted in any case.
    fn live(&mut self, own: &str, now: Instant) -> usize {
        self.seen
            .retain(|_, at| now.saturating_duration_since(*at) < STALE_AFTER);
        1 + self.seen.keys().filter(|k| k.as_str() != own).count()
    }
}

/// A key segment from any text: KV keys allow `-`, `_`, `=`, `/` and alphanumerics.
fn key_part(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Counts the replicas of the deployment named by `consumer_prefix` until `stop`,
/// starting at 1 (this process alone) until the bucket answers. The count never
/// drops below 1; the bucket's being unreachable keeps the last count.
pub fn count(
    state: PauseState,
    consumer_prefix: &str,
    stop: CancellationToken,
) -> watch::Receiver<usize> {
    let (tx, rx) = watch::channel(1);
    let prefix = deployment_keys(consumer_prefix);
    let own = own_key(consumer_prefix);
    tokio::spawn(async move {
        let mut retry = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
        let mut census = Census::default();
        while !stop.is_cancelled() {
            if let Err(e) = follow(&state, &prefix, &own, &mut census, &tx, &stop).await {
                tracing::debug!(error = %e, "cannot count the replicas yet; retrying");
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(retry.next_delay()) => {}
            }
        }
    });
    rx
}

/// The start of every key of the deployment's replicas.
fn deployment_keys(consumer_prefix: &str) -> String {
    format!("replicas.{}.", key_part(consumer_prefix))
}

fn own_key(consumer_prefix: &str) -> String {
    format!(
        "{}{}",
        deployment_keys(consumer_prefix),
        key_part(&replica_name())
    )
}

/// Deletes this replica's key, as it stops fetching: the others take its share at
/// once instead of after `STALE_AFTER`. Bounded, since shutdown must not wait on an
/// unreachable bucket.
pub async fn leave(state: &PauseState, consumer_prefix: &str) {
    let own = own_key(consumer_prefix);
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        if let Ok(store) = state.store().await {
            let _ = store.delete(&own).await;
        }
    })
    .await;
}

/// Writes this replica's key every heartbeat and follows the others' until `stop` or
/// an error.
async fn follow(
    state: &PauseState,
    prefix: &str,
    own: &str,
    census: &mut Census,
    tx: &watch::Sender<usize>,
    stop: &CancellationToken,
) -> Result<(), String> {
    let store = state.store().await.map_err(|e| e.to_string())?;
    let beat = || store.put(own, Bytes::from_static(b"{}"));
    beat().await.map_err(|e| e.to_string())?;
    let mut changes = store
        .watch_with_history(format!("{prefix}>"))
        .await
        .map_err(|e| e.to_string())?;
    let mut ticks = tokio::time::interval_at(Instant::now() + HEARTBEAT, HEARTBEAT);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(()),
            _ = ticks.tick() => {
                beat().await.map_err(|e| e.to_string())?;
            }
            entry = changes.next() => {
                let entry = entry
                    .ok_or("the watch ended")?
                    .map_err(|e| e.to_string())?;
                let age = match entry.operation {
                    kv::Operation::Put => Some(
                        SystemTime::now()
                            .duration_since(SystemTime::from(entry.created))
                            .unwrap_or(Duration::ZERO),
                    ),
                    kv::Operation::Delete | kv::Operation::Purge => None,
                };
                census.note(entry.key, age, Instant::now());
            }
        }
        let live = census.live(own, Instant::now());
        tx.send_if_modified(|n| std::mem::replace(n, live) != live);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_counts_until_its_key_is_stale_or_deleted() {
        let t0 = Instant::now();
        let mut c = Census::default();
        assert_eq!(c.live("me", t0), 1);
        c.note("me".into(), Some(Duration::ZERO), t0);
        c.note("b".into(), Some(Duration::ZERO), t0);
        c.note("c".into(), Some(Duration::from_secs(5)), t0);
        assert_eq!(c.live("me", t0), 3);
        // c's write was 5 s old when seen: out a second later; b stays until 6 s.
        assert_eq!(c.live("me", t0 + Duration::from_secs(1)), 2);
        assert_eq!(c.live("me", t0 + Duration::from_secs(6)), 1);
        c.note(
            "b".into(),
            Some(Duration::ZERO),
            t0 + Duration::from_secs(7),
        );
        assert_eq!(c.live("me", t0 + Duration::from_secs(7)), 2);
        c.note("b".into(), None, t0 + Duration::from_secs(8));
        assert_eq!(c.live("me", t0 + Duration::from_secs(8)), 1);
        // A key left long ago by a process that died counts for nothing.
        c.note(
            "old".into(),
            Some(Duration::from_secs(3600)),
            t0 + Duration::from_secs(8),
        );
        assert_eq!(c.live("me", t0 + Duration::from_secs(8)), 1);
    }

    #[test]
    fn keys_hold_only_what_kv_allows() {
        assert_eq!(key_part("pod-a.svc/1234"), "pod-a_svc_1234");
        assert_eq!(key_part("natshook"), "natshook");
    }
}
