//! Pause state shared by every natshook process on the same NATS system, in the
//! JetStream KV bucket `NATSHOOK_STATE`. Replicas with the same config share each
//! endpoint's durable consumer, so a pause must be shared too: one replica pausing an
//! endpoint pauses it on all, a success or an operator's resume on any replica resumes
//! all, and a probe lock lets one replica at a time send a probe. Because the state
//! lives in JetStream, a pause also outlives a restart.
//!
//! Keys: `paused.<endpoint>` holds a [`PauseRecord`] while the endpoint is paused and is
//! deleted on resume; `probe.<endpoint>` is the probe lock. Writes go through one
//! background task in the order they were made, so a pause quickly followed by a
//! resume never lands as resume-then-pause.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, kv, stream::LastRawMessageErrorKind};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, OnceCell};

use super::bucket::{self, Followed};
use crate::backoff::Backoff;
use crate::time;

pub const STATE_BUCKET: &str = "NATSHOOK_STATE";
const PAUSED_PREFIX: &str = "paused.";
const PROBE_PREFIX: &str = "probe.";
/// The header that makes a KV entry a delete marker.
const KV_OPERATION: &str = "KV-Operation";
/// A change written this long after it was decided (it waited behind another's
/// retries) first checks that no later change overtook it, as a retry does.
const QUEUED_LATE: Duration = Duration::from_secs(1);
/// On a resume's delete marker: when it was decided (unix milliseconds).
const DECIDED: &str = "Natshook-Decided";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot set up bucket {STATE_BUCKET}: {0}")]
    Bucket(String),
    #[error("pause state in {STATE_BUCKET}: {0}")]
    Access(String),
}

fn access(e: impl std::fmt::Display) -> StateError {
    StateError::Access(e.to_string())
}

/// Why an endpoint is paused, as every replica reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cause", rename_all = "snake_case")]
pub enum PauseCause {
    /// `disable_after_failures` consecutive failed attempts.
    Failures { failures: u32 },
    /// The receiver answered 410 Gone.
    Gone,
    /// An operator paused it (admin API); only a resume ends it, no probes.
    Manual,
    /// A record this version cannot read: a cause a newer version writes (read after
    /// a rollback, or by an older replica), or a value written by hand. It is followed
    /// as a pause that only a resume ends, with no probes, since pausing loses nothing
    /// and ignoring it would send to an endpoint another replica stopped. Only
    /// [`PauseRecord::read`] makes one, so its name is always sanitised, and it is
    /// never written back over the record it stands for.
    #[serde(skip_deserializing)]
    Unrecognized {
        /// The record's `cause` as found, at most 64 characters, each one outside
        /// letters, digits and `_-:.+/` shown as `?`; `unreadable` when there is none.
        named: String,
    },
}

/// The value of `paused.<endpoint>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseRecord {
    #[serde(flatten)]
    pub cause: PauseCause,
    /// RFC 3339, when the pause began.
    pub at: String,
    /// The replica that paused it (host name and process id).
    pub by: String,
}

impl PauseRecord {
    /// The record `paused.<endpoint>` holds; one this version cannot read is an
    /// [`PauseCause::Unrecognized`] pause, never no pause ([`Unreadable`] warns of it).
    fn read(value: &[u8]) -> PauseRecord {
        if let Ok(record) = serde_json::from_slice(value) {
            return record;
        }
        let fields: Option<serde_json::Map<String, serde_json::Value>> =
            serde_json::from_slice(value).ok();
        let field = |name: &str| {
            let text = fields.as_ref()?.get(name)?.as_str()?;
            Some(
                (text.chars().take(64))
                    .map(|c| match c {
                        'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '-' | ':' | '.' | '+' | '/' => c,
                        _ => '?',
                    })
                    .collect::<String>(),
            )
        };
        let named = field("cause").unwrap_or_else(|| "unreadable".to_string());
        PauseRecord {
            cause: PauseCause::Unrecognized { named },
            at: field("at").unwrap_or_default(),
            by: field("by").unwrap_or_default(),
        }
    }
}

/// The unreadable pause records this process has warned of, by endpoint: each record
/// is read again on every replay of the watch and by every worker that starts, and
/// one warning per record says what there is to say.
#[derive(Clone, Default)]
struct Unreadable(Arc<Mutex<HashMap<String, PauseRecord>>>);

impl Unreadable {
    /// Reads `value` as [`PauseRecord::read`] does, warning once of each unreadable
    /// record of `endpoint`; `true` when it warned.
    fn read(&self, endpoint: &str, value: &[u8]) -> (PauseRecord, bool) {
        let record = PauseRecord::read(value);
        let warns = self.note(endpoint, Some(&record));
        if warns {
            if let PauseCause::Unrecognized { named } = &record.cause {
                tracing::warn!(endpoint, cause = %named,
                    "a pause this version cannot read is followed as a pause only a resume ends");
            }
        }
        (record, warns)
    }

    /// Notes `record` as the endpoint's (`None`: resumed); `true` when it is an
    /// unreadable one not warned of yet.
    fn note(&self, endpoint: &str, record: Option<&PauseRecord>) -> bool {
        let Ok(mut warned) = self.0.lock() else {
            return true;
        };
        match record {
            Some(r) if matches!(r.cause, PauseCause::Unrecognized { .. }) => {
                if warned.get(endpoint) == Some(r) {
                    return false;
                }
                warned.insert(endpoint.to_string(), r.clone());
                true
            }
            _ => {
                warned.remove(endpoint);
                false
            }
        }
    }
}

/// A pause or resume seen in the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseChange {
    pub endpoint: String,
    /// `None`: resumed.
    pub record: Option<PauseRecord>,
}

/// The probe lock's value: who holds it and until when (unix milliseconds). A lock
/// past its time is taken over, so a replica that died mid-probe blocks no one.
#[derive(Debug, Serialize, Deserialize)]
struct ProbeLock {
    by: String,
    until_ms: u64,
}

/// A held probe lock; [`PauseState::release_probe`] gives it back.
#[derive(Debug)]
pub struct ProbeGuard {
    endpoint: String,
    revision: u64,
}

/// Access to the shared pause state. Cheap to clone.
#[derive(Clone)]
pub struct PauseState {
    bucket: Followed,
    store: std::sync::Arc<OnceCell<kv::Store>>,
    /// Each change with when it was decided.
    writes: mpsc::UnboundedSender<(PauseChange, SystemTime)>,
    replica: std::sync::Arc<str>,
    /// The pauses in the bucket as this process last saw them: a worker starts from
    /// them, so one created at start or by the registry holds its first copy already
    /// (a fan-out endpoint is handed copies before it reads anything from NATS).
    known: Arc<Mutex<HashMap<String, PauseRecord>>>,
    /// Whether [`PauseState::load_known`] read every pause: until then a worker reads
    /// its own when it starts fetching.
    loaded: Arc<std::sync::atomic::AtomicBool>,
    unreadable: Unreadable,
}

/// Names this process among the replicas, for records and locks.
pub fn replica_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    format!("{host}/{}", std::process::id())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl PauseState {
    /// Starts the writer task; must be called within a tokio runtime.
    pub fn new(js: jetstream::Context, replicas: usize) -> Self {
        let (writes, rx) = mpsc::unbounded_channel();
        let config = kv::Config {
            bucket: STATE_BUCKET.to_string(),
            description: "natshook: endpoint pause state shared by replicas".to_string(),
            history: 1,
            num_replicas: replicas,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        };
        let state = Self {
            bucket: Followed::new(js, config),
            store: std::sync::Arc::default(),
            writes,
            replica: replica_name().into(),
            known: Arc::default(),
            loaded: Arc::default(),
            unreadable: Unreadable::default(),
        };
        tokio::spawn(state.clone().write_in_order(rx));
        state
    }

    /// Creates the bucket if missing (history 1: only the current state matters).
    pub async fn ensure_bucket(&self) -> Result<(), StateError> {
        self.store().await.map(drop)
    }

    /// The bucket, opened (or created) once; other shared state of the replicas
    /// (`store::replicas`) lives in it too.
    pub async fn store(&self) -> Result<&kv::Store, StateError> {
        self.store
            .get_or_try_init(|| async {
                (self.bucket.open().await).map_err(|e| StateError::Bucket(e.to_string()))
            })
            .await
    }

    /// Makes the bucket again when its stream is gone (deleted by hand, or a server
    /// that lost its store), and writes the pauses this process knows into a bucket
    /// made again by anyone (here, or a replica starting): otherwise every pause would
    /// be lost at the next restart, or at once on the replicas that start. A pause
    /// or resume written there since stays as it is. Called every few seconds by the
    /// watch, and by the writers on a failure. `true`: the bucket was replaced, and a
    /// watch on it must be opened again (as [`PauseState::bucket_generation`] also
    /// tells a watch whose own call did not notice).
    pub async fn keep_bucket(&self) -> bool {
        let replacement = match self.bucket.replaced().await {
            Ok(Some(r)) => r,
            Ok(None) => return false,
            Err(e) => {
                tracing::debug!(error = %e, "cannot check the pause-state bucket");
                return false;
            }
        };
        let Ok(store) = self.store().await else {
            return false;
        };
        let known: Vec<(String, PauseRecord)> = match self.known.lock() {
            Ok(known) => known.iter().map(|(e, r)| (e.clone(), r.clone())).collect(),
            Err(_) => Vec::new(),
        };
        let mut written = 0;
        for (endpoint, record) in &known {
            // A record this version could not read would be replaced by one no
            // version reads.
            if matches!(record.cause, PauseCause::Unrecognized { .. }) {
                continue;
            }
            let Ok(value) = serde_json::to_vec(record) else {
                continue;
            };
            let key = format!("{PAUSED_PREFIX}{endpoint}");
            match bucket::write_if_absent(store, &key, Bytes::from(value)).await {
                Ok(true) => written += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the pause-state bucket was gone or made again; writing back the pauses this process knows failed, retrying");
                    return false;
                }
            }
        }
        self.bucket.follow(replacement);
        tracing::warn!(
            pauses = known.len(),
            written,
            "the pause-state bucket was gone or made again: it holds the pauses this process knows"
        );
        true
    }

    /// Changes each time the bucket is replaced by another ([`PauseState::keep_bucket`],
    /// from whichever task noticed): a watch opened before is on a bucket that is gone.
    pub fn bucket_generation(&self) -> u64 {
        self.bucket.generation()
    }

    /// A record for a pause this replica decides now.
    pub fn record(&self, cause: PauseCause) -> PauseRecord {
        PauseRecord {
            cause,
            at: time::rfc3339_millis(SystemTime::now()),
            by: self.replica.to_string(),
        }
    }

    /// Queues a pause (`Some`) or resume (`None`) for every replica; never blocks.
    /// [`PauseState::known`] follows at once, before the watch brings it back: the
    /// pauses a made-again bucket is given ([`PauseState::keep_bucket`]) must not
    /// undo a change still queued.
    pub fn announce(&self, endpoint: &str, record: Option<PauseRecord>) {
        let change = PauseChange {
            endpoint: endpoint.to_string(),
            record,
        };
        self.note(&change);
        let _ = self.writes.send((change, SystemTime::now()));
    }

    /// Writes announced changes one after the other, retrying each until it lands, or
    /// until a change another replica decided later is in the bucket: a change that
    /// lands late (the bucket could not be reached meanwhile) must not undo it, as a
    /// pause taken here while NATS was failing would undo an operator's resume on
    /// another replica after it, for good. A first attempt made at once writes as it
    /// is: what the bucket holds then was decided before it.
    async fn write_in_order(self, mut rx: mpsc::UnboundedReceiver<(PauseChange, SystemTime)>) {
        while let Some((change, decided)) = rx.recv().await {
            // It stands for a record this version could not read: written back, it
            // would replace that record with one no version reads.
            if let Some(PauseRecord {
                cause: PauseCause::Unrecognized { .. },
                ..
            }) = &change.record
            {
                tracing::warn!(endpoint = %change.endpoint, "a pause of a cause this version does not know is not written back");
                continue;
            }
            let mut wait = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
            // Queued behind a change that was retried, it is as late as a retry.
            let mut late = (decided.elapsed()).map_or(true, |waited| waited > QUEUED_LATE);
            loop {
                let written = async {
                    if late && self.overtaken(&change.endpoint, decided).await? {
                        tracing::info!(endpoint = %change.endpoint, paused = change.record.is_some(), "a pause or resume not shared in time is dropped: another replica changed the endpoint's pause since");
                        return Ok(());
                    }
                    self.write(&change, decided).await
                };
                match written.await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(endpoint = %change.endpoint, error = %e, "cannot share pause state yet; retrying");
                        self.keep_bucket().await;
                        tokio::time::sleep(wait.next_delay()).await;
                        late = true;
                    }
                }
            }
        }
    }

    /// Whether the endpoint's entry in the bucket is a change decided after `decided`:
    /// a pause by the time in its record, a resume by the time its delete marker
    /// carries ([`DECIDED`]; one without it, written by another tool, by when it was
    /// stored).
    async fn overtaken(&self, endpoint: &str, decided: SystemTime) -> Result<bool, StateError> {
        let store = self.store().await?;
        let subject = format!("{}{PAUSED_PREFIX}{endpoint}", store.prefix);
        let last = match store.stream.get_last_raw_message_by_subject(&subject).await {
            Ok(last) => last,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(false),
            Err(e) => return Err(access(e)),
        };
        let header = |name: &str| last.headers.get(name).map(|v| v.as_str());
        let theirs = match header(KV_OPERATION) {
            Some("DEL" | "PURGE") => header(DECIDED)
                .and_then(|ms| ms.parse().ok())
                .map(time::from_unix_millis),
            _ => serde_json::from_slice::<PauseRecord>(&last.payload)
                .ok()
                .and_then(|r| humantime::parse_rfc3339_weak(&r.at).ok()),
        };
        Ok(theirs.unwrap_or_else(|| SystemTime::from(last.time)) > decided)
    }

    /// A pause as its record, a resume as a delete marker that says when it was
    /// decided ([`PauseState::overtaken`]).
    async fn write(&self, change: &PauseChange, decided: SystemTime) -> Result<(), StateError> {
        let store = self.store().await?;
        let key = format!("{PAUSED_PREFIX}{}", change.endpoint);
        match &change.record {
            Some(record) => {
                let value = serde_json::to_vec(record).map_err(access)?;
                store.put(key, Bytes::from(value)).await.map_err(access)?;
            }
            None => {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(KV_OPERATION, "DEL");
                headers.insert(DECIDED, time::unix_millis(decided).to_string().as_str());
                let prefix = store.put_prefix.as_deref().unwrap_or(&store.prefix);
                let subject = format!("{prefix}{key}");
                (self
                    .bucket
                    .js()
                    .publish_with_headers(subject, headers, Bytes::new()))
                .await
                .map_err(access)?
                .await
                .map_err(access)?;
            }
        }
        Ok(())
    }

    /// Resumes the endpoint on every replica now, waiting for the write: for a caller
    /// that ends a pause it did not make (the registrar re-enabling an endpoint, from a
    /// process that may exit right after). A pause the breaker queued meanwhile lands
    /// after it, which is the order the two happened in.
    pub async fn resume_now(&self, endpoint: &str) -> Result<(), StateError> {
        let resume = PauseChange {
            endpoint: endpoint.to_string(),
            record: None,
        };
        self.write(&resume, SystemTime::now()).await
    }

    /// Reads every pause in the bucket into [`PauseState::known`]; returns how many.
    /// Runs once at start, before any worker exists; the watch keeps them current
    /// from then on ([`PauseState::note`]).
    pub async fn load_known(&self) -> Result<usize, StateError> {
        let store = self.store().await?;
        let prefix = format!("$KV.{STATE_BUCKET}.");
        let mut subjects = store
            .stream
            .info_with_subjects(format!("{prefix}{PAUSED_PREFIX}>"))
            .await
            .map_err(access)?;
        let mut keys = Vec::new();
        while let Some(next) = subjects.next().await {
            let (subject, count) = next.map_err(access)?;
            if let Some(key) = subject.strip_prefix(&prefix).filter(|_| count > 0) {
                keys.push(key.to_string());
            }
        }
        let reads = futures_util::stream::iter(keys)
            .map(|key| async move { (store.get(&key).await, key) })
            .buffer_unordered(32);
        let mut reads = std::pin::pin!(reads);
        let mut loaded = 0;
        while let Some((value, key)) = reads.next().await {
            let value = value.map_err(access)?;
            if let (Some(endpoint), Some(value)) = (key.strip_prefix(PAUSED_PREFIX), value) {
                self.note(&PauseChange {
                    endpoint: endpoint.to_string(),
                    record: Some(self.unreadable.read(endpoint, &value).0),
                });
                loaded += 1;
            }
        }
        self.loaded
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(loaded)
    }

    /// Whether every pause was read at start ([`PauseState::load_known`]).
    pub fn known_loaded(&self) -> bool {
        self.loaded.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Keeps [`PauseState::known`] up to date with a change the watch saw.
    pub fn note(&self, change: &PauseChange) {
        let Ok(mut known) = self.known.lock() else {
            return;
        };
        match &change.record {
            Some(record) => known.insert(change.endpoint.clone(), record.clone()),
            None => known.remove(&change.endpoint),
        };
    }

    /// The endpoint's pause as this process last saw it, read when its worker is made.
    pub fn known(&self, endpoint: &str) -> Option<PauseRecord> {
        self.known.lock().ok()?.get(endpoint).cloned()
    }

    /// The endpoint's shared pause, if any, read from the bucket now (when its worker
    /// starts fetching, if the pauses could not all be read at start).
    pub async fn current(&self, endpoint: &str) -> Result<Option<PauseRecord>, StateError> {
        let store = self.store().await?;
        let value = store
            .get(format!("{PAUSED_PREFIX}{endpoint}"))
            .await
            .map_err(access)?;
        Ok(match value {
            Some(v) => Some(self.unreadable.read(endpoint, &v).0),
            None => {
                self.unreadable.note(endpoint, None);
                None
            }
        })
    }

    /// Every pause and resume from now on (current pauses first).
    pub async fn watch(
        &self,
    ) -> Result<impl Stream<Item = PauseChange> + Send + 'static, StateError> {
        let store = self.store().await?;
        let watch = store
            .watch_with_history(format!("{PAUSED_PREFIX}>"))
            .await
            .map_err(access)?;
        let unreadable = self.unreadable.clone();
        Ok(watch.filter_map(move |entry| {
            let unreadable = unreadable.clone();
            async move {
                let entry = entry.ok()?;
                let endpoint = entry.key.strip_prefix(PAUSED_PREFIX)?.to_string();
                let record = match entry.operation {
                    kv::Operation::Put => Some(unreadable.read(&endpoint, &entry.value).0),
                    kv::Operation::Delete | kv::Operation::Purge => {
                        unreadable.note(&endpoint, None);
                        None
                    }
                };
                Some(PauseChange { endpoint, record })
            }
        }))
    }

    /// Takes the endpoint's probe turn for `hold`: `Ok(None)` while another replica
    /// holds it. The turn is held across probes (kept for the probe interval and the
    /// attempt's timeout), so the replicas together probe once per interval, not once
    /// each; it is given back when the endpoint resumes. An error means the bucket cannot be reached; the caller probes anyway,
    /// since a second probe costs one attempt and never probing would stall the
    /// endpoint.
    pub async fn try_probe(
        &self,
        endpoint: &str,
        hold: Duration,
    ) -> Result<Option<ProbeGuard>, StateError> {
        let store = self.store().await?;
        let key = format!("{PROBE_PREFIX}{endpoint}");
        let value = Bytes::from(
            serde_json::to_vec(&ProbeLock {
                by: self.replica.to_string(),
                until_ms: now_ms().saturating_add(hold.as_millis() as u64),
            })
            .map_err(access)?,
        );
        let guard = |revision| ProbeGuard {
            endpoint: endpoint.to_string(),
            revision,
        };
        if let Ok(revision) = store.create(&key, value.clone()).await {
            return Ok(Some(guard(revision)));
        }
        // Ours from the last probe, held by another replica, or left behind by one that
        // died: another's is taken over once its time is up. `update` on the revision
        // read makes the takeover atomic.
        let Some(entry) = store.entry(&key).await.map_err(access)? else {
            return Ok(None);
        };
        let free = match entry.operation {
            kv::Operation::Put => serde_json::from_slice::<ProbeLock>(&entry.value)
                .map(|l| l.until_ms < now_ms() || *l.by == *self.replica)
                .unwrap_or(true),
            kv::Operation::Delete | kv::Operation::Purge => true,
        };
        if !free {
            return Ok(None);
        }
        Ok(store
            .update(&key, value, entry.revision)
            .await
            .ok()
            .map(guard))
    }

    /// Gives the probe turn back (unless another replica took it over meanwhile).
    pub async fn release_probe(&self, guard: ProbeGuard) {
        if let Ok(store) = self.store().await {
            let key = format!("{PROBE_PREFIX}{}", guard.endpoint);
            let _ = store
                .delete_expect_revision(key, Some(guard.revision))
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_as_every_replica_writes_them() {
        let record = PauseRecord {
            cause: PauseCause::Failures { failures: 10 },
            at: "2026-12-02T07:00:00.000Z".into(),
            by: "pod-a/1".into(),
        };
        let text = serde_json::to_string(&record).unwrap();
        assert_eq!(
            text,
            r#"{"cause":"failures","failures":10,"at":"2026-12-02T07:00:00.000Z","by":"pod-a/1"}"#
        );
        assert_eq!(serde_json::from_str::<PauseRecord>(&text).unwrap(), record);
        let manual: PauseRecord =
            serde_json::from_str(r#"{"cause":"manual","at":"x","by":"y"}"#).unwrap();
        assert_eq!(manual.cause, PauseCause::Manual);
    }

    /// A record this version cannot read is still a pause: a cause a newer version
    /// writes keeps its name, anything else is `unreadable`.
    #[test]
    fn a_record_this_version_cannot_read_is_an_unrecognized_pause() {
        let newer = PauseRecord::read(br#"{"cause":"quarantined","until":"later","at":"2026-12-06T01:00:00Z","by":"pod-b/7"}"#,
        );
        assert_eq!(
            newer,
            PauseRecord {
                cause: PauseCause::Unrecognized {
                    named: "quarantined".into()
                },
                at: "2026-12-06T01:00:00Z".into(),
                by: "pod-b/7".into(),
            }
        );
        let missing_field = PauseRecord::read(br#"{"cause":"failures","at":"t","by":"b"}"#);
        assert_eq!(
            missing_field.cause,
            PauseCause::Unrecognized {
                named: "failures".into()
            }
        );
        // Its own name cannot carry a name past the sanitiser.
        let forged =
            PauseRecord::read(br#"{"cause":"unrecognized","named":"a\nb","at":"t","by":"b"}"#);
        assert_eq!(
            forged.cause,
            PauseCause::Unrecognized {
                named: "unrecognized".into()
            }
        );
        for junk in [&b"not json"[..], b"", b"[1,2]", br#"{"cause":7}"#] {
            assert_eq!(
                PauseRecord::read(junk).cause,
                PauseCause::Unrecognized {
                    named: "unreadable".into()
                }
            );
        }
        let hostile =
            PauseRecord::read(format!(r#"{{"cause":"a\nb\u202e{}"}}"#, "c".repeat(100)).as_bytes());
        let PauseCause::Unrecognized { named } = hostile.cause else {
            panic!("{hostile:?}")
        };
        assert_eq!(named.len(), 64);
        assert!(named.starts_with("a?b?c"), "{named}");
    }

    /// Each unreadable record is warned of once per endpoint, however often it is read
    /// again; a different one, or the same after a resume, is warned of again.
    #[test]
    fn an_unreadable_record_is_warned_of_once() {
        let u = Unreadable::default();
        let (newer, bad) = (br#"{"cause":"quarantined"}"#, b"not json");
        assert!(u.read("a", newer).1);
        assert!(!u.read("a", newer).1);
        assert!(u.read("b", newer).1);
        assert!(u.read("a", bad).1);
        assert!(!u.read("a", bad).1);
        let readable = br#"{"cause":"manual","at":"t","by":"b"}"#;
        assert!(!u.read("a", readable).1);
        assert!(u.read("a", bad).1);
        u.note("a", None);
        assert!(u.read("a", bad).1);
    }
}
