//! How many natshook processes of one deployment are running, for what they split
//! between them: an endpoint's `rate_limit` holds for the endpoint, not for each
//! replica, so each replica takes its share of the rate.
//!
//! Each process writes its own key `replicas.<stream>.<consumer_prefix>.<id>` in the
//! `NATSHOOK_STATE` bucket every [`HEARTBEAT`] and watches the keys of the others. A
//! replica whose key was not written for [`STALE_AFTER`] is counted out, so one killed
//! with SIGKILL stops counting within seconds; one that stops cleanly deletes its key
//! as it stops fetching. The stream and consumer prefix name the deployment: processes
//! that read other consumers split nothing with this one.
//!
//! A key's age is measured on the server's clock (the time JetStream stored the
//! write), corrected by the offset this process sees between its own writes and its
//! own clock, so clocks that disagree between hosts do not count live replicas out.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::pause_state::{replica_name, PauseState};
use crate::backoff::Backoff;

/// How often a replica writes its key.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// How long a key stays counted after its last write: three heartbeats, so one late
/// write does not count a replica out.
pub const STALE_AFTER: Duration = Duration::from_secs(6);

/// Keys older than this, left by processes that died, are deleted by whichever
/// replica finds them, so the bucket does not collect them.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// Nanoseconds since the Unix epoch, signed so that offsets between clocks can be
/// negative.
fn unix_nanos(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// The keys of a deployment's replicas and when the server stored their last writes.
#[derive(Debug, Default)]
struct Census {
    /// Key → the server's time of its last write (Unix nanoseconds).
    written: HashMap<String, i128>,
    /// This process's clock minus the server's, from its own writes.
    offset: i128,
}

impl Census {
    /// Records a write of `key` stored at `stored` (server time), or its deletion.
    fn note(&mut self, key: String, stored: Option<i128>) {
        match stored {
            Some(at) => {
                self.written.insert(key, at);
            }
            None => {
                self.written.remove(&key);
            }
        }
    }

    /// Learns the clock offset from this process's own write, stored at `stored`
    /// (server time) and seen at `now` (this clock).
    fn own_write(&mut self, stored: i128, now: i128) {
        self.offset = now - stored;
    }

    fn age(&self, stored: i128, now: i128) -> i128 {
        now - self.offset - stored
    }

    /// Replicas written within `STALE_AFTER` of `now` (this clock), `own` counted in
    /// any case.
    fn live(&self, own: &str, now: i128) -> usize {
        let stale = STALE_AFTER.as_nanos() as i128;
        1 + self
            .written
            .iter()
            .filter(|(k, at)| k.as_str() != own && self.age(**at, now) < stale)
            .count()
    }

    /// Keys no process has written for `FORGET_AFTER`.
    fn forgotten(&self, now: i128) -> Vec<String> {
        let forget = FORGET_AFTER.as_nanos() as i128;
        self.written
            .iter()
            .filter(|(_, at)| self.age(**at, now) > forget)
            .map(|(k, _)| k.clone())
            .collect()
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

/// This process among the replicas: host, process id and a random part, since two
/// containers can share a host name and a process id.
fn own_id() -> String {
    let mut nonce = [0u8; 4];
    let _ = getrandom::getrandom(&mut nonce);
    format!("{}_{}", key_part(&replica_name()), hex::encode(nonce))
}

/// The task that keeps the count of live replicas until `stop` and then deletes this
/// replica's key.
pub struct Replicas {
    task: JoinHandle<()>,
}

impl Replicas {
    /// Starts counting the replicas of the deployment reading `stream` with
    /// `consumer_prefix` into `tx`, which stays at 1 (this process alone) until the
    /// bucket answers. The count never drops below 1; while the bucket cannot be
    /// reached the last count stays.
    pub fn count(
        state: PauseState,
        stream: &str,
        consumer_prefix: &str,
        tx: watch::Sender<usize>,
        stop: CancellationToken,
    ) -> Self {
        let prefix = format!(
            "replicas.{}.{}.",
            key_part(stream),
            key_part(consumer_prefix)
        );
        let own = format!("{prefix}{}", own_id());
        let task = tokio::spawn(async move {
            let mut retry = Backoff::new(Duration::from_millis(250), Duration::from_secs(2));
            let mut census = Census::default();
            while !stop.is_cancelled() {
                let counting = Counting {
                    state: &state,
                    prefix: &prefix,
                    own: &own,
                    tx: &tx,
                };
                if let Err(e) = counting.follow(&mut census, &mut retry, &stop).await {
                    tracing::warn!(error = %e, "cannot count the replicas; each endpoint's rate_limit share stays as it was");
                    state.keep_bucket().await;
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(retry.next_delay()) => {}
                }
            }
            // Gone: the others take this replica's share at once.
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                if let Ok(store) = state.store().await {
                    let _ = store.delete(&own).await;
                }
            })
            .await;
        });
        Self { task }
    }

    /// Waits for the key to be deleted after `stop` (bounded).
    pub async fn left(self) {
        let _ = tokio::time::timeout(Duration::from_secs(3), self.task).await;
    }
}

struct Counting<'a> {
    state: &'a PauseState,
    prefix: &'a str,
    own: &'a str,
    tx: &'a watch::Sender<usize>,
}

impl Counting<'_> {
    /// Writes this replica's key every heartbeat and follows the others' until `stop`
    /// or an error.
    async fn follow(
        &self,
        census: &mut Census,
        retry: &mut Backoff,
        stop: &CancellationToken,
    ) -> Result<(), String> {
        let store = self.state.store().await.map_err(|e| e.to_string())?;
        let beat = || store.put(self.own, Bytes::from_static(b"{}"));
        beat().await.map_err(|e| e.to_string())?;
        let mut changes = store
            .watch_with_history(format!("{}>", self.prefix))
            .await
            .map_err(|e| e.to_string())?;
        retry.reset();
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
                    let stored = match entry.operation {
                        kv::Operation::Put => Some(unix_nanos(SystemTime::from(entry.created))),
                        kv::Operation::Delete | kv::Operation::Purge => None,
                    };
                    if let (Some(at), true) = (stored, entry.key == self.own) {
                        census.own_write(at, unix_nanos(SystemTime::now()));
                    }
                    census.note(entry.key, stored);
                }
            }
            let now = unix_nanos(SystemTime::now());
            for key in census.forgotten(now) {
                let _ = store.delete(&key).await;
                census.note(key, None);
            }
            let live = census.live(self.own, now);
            self.tx
                .send_if_modified(|n| std::mem::replace(n, live) != live);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i128 = 1_000_000_000;

    #[test]
    fn a_replica_counts_until_its_key_is_stale_or_deleted() {
        let mut c = Census::default();
        assert_eq!(c.live("me", 100 * S), 1);
        c.note("me".into(), Some(100 * S));
        c.note("b".into(), Some(100 * S));
        c.note("c".into(), Some(95 * S));
        assert_eq!(c.live("me", 100 * S), 3);
        // c's write was 5 s old when seen: out a second later; b stays until 6 s.
        assert_eq!(c.live("me", 101 * S), 2);
        assert_eq!(c.live("me", 106 * S), 1);
        c.note("b".into(), Some(107 * S));
        assert_eq!(c.live("me", 107 * S), 2);
        c.note("b".into(), None);
        assert_eq!(c.live("me", 108 * S), 1);
        // A key left long ago by a process that died counts for nothing, and goes.
        c.note("old".into(), Some(-3600 * S));
        assert_eq!(c.live("me", 108 * S), 1);
        assert_eq!(c.forgotten(108 * S), vec!["old".to_string()]);
    }

    #[test]
    fn a_clock_ahead_of_the_servers_does_not_count_live_replicas_out() {
        let mut c = Census::default();
        // This host runs 30 s ahead of the server.
        c.note("b".into(), Some(100 * S));
        c.own_write(100 * S, 130 * S);
        assert_eq!(c.live("me", 130 * S), 2);
        assert_eq!(c.live("me", 136 * S), 1);
        // And 30 s behind.
        c.own_write(100 * S, 70 * S);
        assert_eq!(c.live("me", 71 * S), 2);
        assert!(c.forgotten(71 * S).is_empty());
    }

    #[test]
    fn keys_hold_only_what_kv_allows() {
        assert_eq!(key_part("pod-a.svc/1234"), "pod-a_svc_1234");
        assert_eq!(key_part("natshook"), "natshook");
        let id = own_id();
        assert!(
            id.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "{id}"
        );
        assert_ne!(own_id(), id);
    }
}
