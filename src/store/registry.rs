//! The registry of endpoints created at runtime: the JetStream KV bucket
//! `NATSHOOK_ENDPOINTS`, key = endpoint name, value = the endpoint as JSON (the keys of
//! a file `[[endpoints]]` entry, its secret included, plus `enabled`, `description` and
//! `tenant`). Every natshook process on the bucket watches it, so the bucket is the
//! one place a runtime endpoint lives; a write names the revision it replaces, so two
//! writers cannot overwrite each other silently.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde_json::{Map, Value};

use super::bucket::{self, Followed, Replacement};
use crate::config::{api, RegistryConfig};

/// Largest endpoint record: far more than any endpoint needs, far less than a NATS
/// message may be.
const MAX_VALUE: i32 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("an endpoint named '{0}' exists")]
    Exists(String),
    #[error("the endpoint changed since revision {0}")]
    Stale(u64),
    #[error("the registry cannot be reached: {0}")]
    Nats(String),
}

fn nats(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Nats(e.to_string())
}

/// One endpoint as the bucket holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub name: String,
    pub revision: u64,
    pub value: Map<String, Value>,
}

impl Record {
    /// The tenant whose messages the endpoint gets; `None`: every tenant's.
    pub fn tenant(&self) -> Option<&str> {
        self.value.get("tenant").and_then(Value::as_str)
    }

    pub fn enabled(&self) -> bool {
        self.value
            .get("enabled")
            .and_then(Value::as_bool)
            .unwrap_or(true)
    }
}

/// A record as a serving process keeps it between changes: its JSON as text, and what
/// every change reads of it. A parsed record holds a map node and a string for each
/// key and value; with 10,000 records that was 8.5 MiB of idle memory more than the
/// text. The admin API's views, and the new check of every record on a reload or at a
/// rotated secret's grace end, parse it again ([`KeptRecord::record`]), a few
/// microseconds each.
#[derive(Debug)]
pub struct KeptRecord {
    pub name: String,
    pub revision: u64,
    /// As the bucket holds it ([`encode`]): written back as it is.
    json: Bytes,
    enabled: bool,
    tenant: Option<Box<str>>,
    /// When the older secrets stop signing, read once ([`api::grace_until`]).
    grace_until: Option<SystemTime>,
}

impl KeptRecord {
    pub fn keep(record: &Record) -> Self {
        Self {
            name: record.name.clone(),
            revision: record.revision,
            json: encode(&record.value),
            enabled: record.enabled(),
            tenant: record.tenant().map(Box::from),
            grace_until: api::grace_until(&record.value, SystemTime::UNIX_EPOCH),
        }
    }

    /// The record, parsed again from its text.
    pub fn record(&self) -> Record {
        Record {
            name: self.name.clone(),
            revision: self.revision,
            // The text is a map's serialisation ([`KeptRecord::keep`]): it parses.
            value: serde_json::from_slice(&self.json).unwrap_or_default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The tenant whose messages the endpoint gets; `None`: every tenant's.
    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// When the older secrets stop signing, if they still do at `now`.
    pub fn grace_until(&self, now: SystemTime) -> Option<SystemTime> {
        self.grace_until.filter(|until| *until > now)
    }
}

/// A change as the watch reads it.
pub struct Watched {
    pub change: Change,
    /// The watch's replay of what the bucket held ended with this change or before.
    pub caught_up: bool,
}

/// What the watch saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Put(Record),
    /// Also an entry that is not a JSON object: what cannot be read is not served.
    Delete(String),
}

#[derive(Clone)]
pub struct Registry {
    kv: kv::Store,
    bucket: Followed,
}

impl Registry {
    /// Opens the bucket, creating it when it is missing.
    pub async fn open(
        js: &jetstream::Context,
        config: &RegistryConfig,
    ) -> Result<Self, RegistryError> {
        let bucket = Followed::new(
            js.clone(),
            kv::Config {
                bucket: config.bucket.clone(),
                description: "natshook endpoints created at runtime (holds secrets)".into(),
                history: config.history,
                num_replicas: config.replicas,
                max_value_size: MAX_VALUE,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            },
        );
        let kv = bucket.open().await.map_err(nats)?;
        Ok(Self { kv, bucket })
    }

    /// Whether the bucket is another one than this process follows (gone and made
    /// again here, or made again by a `natshook endpoints` command or a replica
    /// starting): `Some` is the bucket to give [`Registry::write_back`].
    pub async fn replaced(&self) -> Result<Option<Replacement>, RegistryError> {
        self.bucket.replaced().await.map_err(nats)
    }

    /// Writes `served` back into a bucket that replaced the one this process followed,
    /// and follows it from then on: the endpoints a running process serves are
    /// customers' webhooks, and would be lost at its next restart. A record another
    /// process wrote back or changed since, or an endpoint deleted since, stays as it
    /// is ([`bucket::write_if_absent`]). One that fails part way is done again whole.
    /// Returns how many records this call wrote.
    pub async fn write_back(
        &self,
        served: &[Arc<KeptRecord>],
        bucket: Replacement,
    ) -> Result<usize, RegistryError> {
        let mut written = 0;
        for record in served {
            if bucket::write_if_absent(&self.kv, &record.name, record.json.clone())
                .await
                .map_err(nats)?
            {
                written += 1;
            }
        }
        self.bucket.follow(bucket);
        Ok(written)
    }

    /// Whether the bucket holds no entry at all (not even a delete marker).
    pub async fn is_empty(&self) -> Result<bool, RegistryError> {
        Ok(self.kv.status().await.map_err(nats)?.values() == 0)
    }

    pub async fn get(&self, name: &str) -> Result<Option<Record>, RegistryError> {
        let entry = self.kv.entry(name).await.map_err(nats)?;
        Ok(entry.and_then(|e| match change(e) {
            Change::Put(r) => Some(r),
            Change::Delete(_) => None,
        }))
    }

    /// Whether the bucket holds a value under `name` (an endpoint, or an entry that is
    /// not one): `false` after a delete, or when there never was one.
    pub async fn holds(&self, name: &str) -> Result<bool, RegistryError> {
        let entry = self.kv.entry(name).await.map_err(nats)?;
        Ok(entry.is_some_and(|e| e.operation == kv::Operation::Put))
    }

    /// Every endpoint in the bucket, by name (for `natshook endpoints list`; a running
    /// process follows [`Registry::watch`] instead).
    pub async fn all(&self) -> Result<Vec<Record>, RegistryError> {
        let mut names: Vec<String> = match self.kv.keys().await {
            Ok(keys) => {
                keys.filter_map(|k| std::future::ready(k.ok()))
                    .collect()
                    .await
            }
            Err(e) => return Err(nats(e)),
        };
        names.sort();
        let mut records = Vec::with_capacity(names.len());
        for name in names {
            records.extend(self.get(&name).await?);
        }
        Ok(records)
    }

    /// Creates `name`; [`RegistryError::Exists`] when it is taken. Returns the revision.
    pub async fn create(
        &self,
        name: &str,
        value: &Map<String, Value>,
    ) -> Result<u64, RegistryError> {
        match self.kv.create(name, encode(value)).await {
            Ok(rev) => Ok(rev),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                Err(RegistryError::Exists(name.to_string()))
            }
            Err(e) => Err(nats(e)),
        }
    }

    /// Replaces `name` if it is still at `revision`. Returns the new revision.
    pub async fn update(
        &self,
        name: &str,
        value: &Map<String, Value>,
        revision: u64,
    ) -> Result<u64, RegistryError> {
        match self.kv.update(name, encode(value), revision).await {
            Ok(rev) => Ok(rev),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                Err(RegistryError::Stale(revision))
            }
            Err(e) => Err(nats(e)),
        }
    }

    /// Deletes `name` if it is still at `revision`, with every earlier revision the
    /// bucket's `history` kept: a customer who deletes a webhook expects its URL,
    /// headers and secret gone, not kept in the bucket under a delete marker.
    pub async fn delete(&self, name: &str, revision: u64) -> Result<(), RegistryError> {
        match self.kv.purge_expect_revision(name, Some(revision)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                Err(RegistryError::Stale(revision))
            }
            Err(e) => Err(nats(e)),
        }
    }

    /// Every endpoint now in the bucket, then every change as it happens.
    pub async fn watch(&self) -> Result<impl Stream<Item = Watched> + Unpin, RegistryError> {
        let watch = self.kv.watch_with_history(">").await.map_err(nats)?;
        // The replay is over at the first entry with nothing stored after it, or once
        // as many entries came as were stored when the first one was read: under a
        // steady stream of writes (other replicas, scripts) the first may never come.
        let mut stored_at_start: Option<u64> = None;
        let mut received = 0u64;
        Ok(watch
            .take_while(|r| std::future::ready(r.is_ok()))
            .filter_map(move |r| {
                std::future::ready(r.ok().map(|e| {
                    received += 1;
                    let stored = *stored_at_start.get_or_insert(e.delta + 1);
                    Watched {
                        caught_up: e.seen_current || received >= stored,
                        change: change(e),
                    }
                }))
            }))
    }
}

/// The record as the bucket holds it. Sized to its text: a [`KeptRecord`] keeps it
/// for as long as the endpoint is served.
fn encode(value: &Map<String, Value>) -> Bytes {
    let mut json = serde_json::to_vec(value).unwrap_or_default();
    json.shrink_to_fit();
    Bytes::from(json)
}

fn change(e: kv::Entry) -> Change {
    match e.operation {
        kv::Operation::Put => match serde_json::from_slice::<Map<String, Value>>(&e.value) {
            Ok(value) => Change::Put(Record {
                name: e.key,
                revision: e.revision,
                value,
            }),
            Err(err) => {
                tracing::warn!(endpoint = %e.key, error = %err, "registry entry is not a JSON object; skipped");
                Change::Delete(e.key)
            }
        },
        kv::Operation::Delete | kv::Operation::Purge => Change::Delete(e.key),
    }
}

/// How long a burst of changes is gathered before it is applied at once (a start-up
/// replay of many endpoints, a script creating several): one reload instead of many.
pub const GATHER: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;

    fn record(value: Value) -> Record {
        let Value::Object(value) = value else {
            panic!("not an object: {value}");
        };
        Record {
            name: "crm".into(),
            revision: 7,
            value,
        }
    }

    #[test]
    fn a_kept_record_parses_back_to_the_record_with_what_changes_read_of_it() {
        let until = SystemTime::now() + Duration::from_secs(3600);
        let stored = record(serde_json::json!({
            "name": "crm",
            "url": "https://example.com/hook",
            "events": ["lead.created"],
            "tenant": "org_1",
            "enabled": false,
            api::GRACE_KEY: humantime::format_rfc3339(until).to_string(),
        }));
        let kept = KeptRecord::keep(&stored);
        assert_eq!(kept.record(), stored);
        assert_eq!((kept.name.as_str(), kept.revision), ("crm", 7));
        assert!(!kept.enabled());
        assert_eq!(kept.tenant(), Some("org_1"));
        let now = SystemTime::now();
        assert_eq!(kept.grace_until(now), api::grace_until(&stored.value, now));
        assert!(kept.grace_until(now).is_some());
        assert_eq!(kept.grace_until(until + Duration::from_secs(1)), None);
    }

    #[test]
    fn a_kept_record_without_the_optional_keys_is_enabled_for_every_tenant() {
        let kept = KeptRecord::keep(&record(serde_json::json!({ "name": "crm" })));
        assert!(kept.enabled());
        assert_eq!(kept.tenant(), None);
        assert_eq!(kept.grace_until(SystemTime::UNIX_EPOCH), None);
    }
}
