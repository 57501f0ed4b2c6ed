//! One KV bucket as a process follows it across its loss: a bucket deleted by hand, or
//! on a server started again on an empty store, is made again empty by whoever notices
//! first (this process, a replica starting, a `natshook endpoints` command). What a
//! process knows of the bucket is then the only copy left, and is written back; the
//! bucket's creation time tells a bucket made again from the one followed, whatever
//! it holds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::datetime::DateTime;
use async_nats::jetstream::{self, kv};
use bytes::Bytes;

/// How often a process that follows a bucket checks that it is still the one it
/// follows: a watch on a bucket that is gone may neither end nor see the one made in
/// its place.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// Why the bucket could not be opened or checked; the text is the client's.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BucketError(String);

fn failed(e: impl std::fmt::Display) -> BucketError {
    BucketError(e.to_string())
}

/// A bucket that replaced the one a process followed, by when it was made: handed to
/// [`Followed::follow`] once what the process knows is written into it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Replacement(DateTime);

/// The bucket a process follows, by its config (to make it again the same way) and the
/// creation time of the one it last saw. Cheap to clone.
#[derive(Clone)]
pub struct Followed {
    js: jetstream::Context,
    config: kv::Config,
    created: Arc<Mutex<Option<DateTime>>>,
    /// How many buckets replaced the first one followed: whoever writes into one
    /// ([`Followed::follow`]), a watch on the bucket learns from it that its own is
    /// gone.
    generation: Arc<AtomicU64>,
}

impl Followed {
    pub fn new(js: jetstream::Context, config: kv::Config) -> Self {
        Self {
            js,
            config,
            created: Arc::default(),
            generation: Arc::default(),
        }
    }

    pub fn js(&self) -> &jetstream::Context {
        &self.js
    }

    /// Opens the bucket, making it when it is missing, and follows it from then on.
    pub async fn open(&self) -> Result<kv::Store, BucketError> {
        let store = match self.js.get_key_value(&self.config.bucket).await {
            Ok(store) => store,
            Err(_) => (self.js.create_key_value(self.config.clone()).await).map_err(failed)?,
        };
        let created = store.stream.cached_info().created;
        if let Ok(mut followed) = self.created.lock() {
            *followed = Some(created);
        }
        Ok(store)
    }

    /// Whether the bucket is another one than the one followed: its stream is gone,
    /// and is made again here, or was made again by someone else. `Some`: write what
    /// the process knows into it, then [`Followed::follow`] it.
    pub async fn replaced(&self) -> Result<Option<Replacement>, BucketError> {
        let stream = format!("KV_{}", self.config.bucket);
        let created = match self.js.get_stream(&stream).await {
            Ok(s) => s.cached_info().created,
            Err(e) if super::stream_not_found(&e) => {
                let store =
                    (self.js.create_key_value(self.config.clone()).await).map_err(failed)?;
                store.stream.cached_info().created
            }
            Err(e) => return Err(failed(e)),
        };
        let followed = self.created.lock().ok().and_then(|f| *f);
        Ok((followed != Some(created)).then_some(Replacement(created)))
    }

    pub fn follow(&self, bucket: Replacement) {
        if let Ok(mut followed) = self.created.lock() {
            *followed = Some(bucket.0);
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Changes each time the bucket followed is replaced ([`Followed::follow`]).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// Writes `value` under `key` only when the key holds nothing, not even a delete
/// marker: a value written back into a bucket made again must not undo what another
/// process wrote (or deleted) there since. `false`: the key held something.
pub async fn write_if_absent(
    store: &kv::Store,
    key: &str,
    value: Bytes,
) -> Result<bool, BucketError> {
    match store.update(key, value, 0).await {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
        Err(e) => Err(failed(e)),
    }
}
