//! When each endpoint's copies were last removed from the work streams
//! (`WorkStream::forget`, as the endpoint is made `ordered`), in the pause state's
//! bucket under `forgotten.<endpoint>`.
//!
//! A work stream drops a copy published within its duplicate window under the id of
//! one it stored before, even one removed since. An endpoint made `ordered` and then
//! unordered again within that window has its former consumer drained into copies
//! again, under the ids of the copies just removed: the drain reads this to tell such
//! a copy, which it stores again under an id of its own, from one still stored or
//! already delivered and released.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::pause_state::{PauseState, StateError};
use super::unattempted::key_token;
use super::work_stream::DUPLICATE_WINDOW;

const PREFIX: &str = "forgotten.";

/// How long a note counts: the duplicate window, and a margin for clocks.
const COUNTS_FOR: Duration = Duration::from_secs(DUPLICATE_WINDOW.as_secs() + 30);

/// The notes, in the bucket the pause state keeps.
#[derive(Clone)]
pub struct Forgotten {
    state: PauseState,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A note: when, and which copies of the endpoint's own work stream went (sequences
/// after `acked`, which its consumer had acked up to, through `through`).
#[derive(serde::Serialize, serde::Deserialize)]
struct Note {
    at: u64,
    acked: u64,
    through: u64,
}

impl Note {
    /// Whether the work streams may still drop a copy as a duplicate of one it names.
    fn counts(&self) -> bool {
        now_ms().saturating_sub(self.at) < COUNTS_FOR.as_millis() as u64
    }
}

impl Forgotten {
    pub fn new(state: PauseState) -> Self {
        Self { state }
    }

    /// Notes that `endpoint`'s copies on its own work stream up to sequence `through`
    /// are about to be removed, those up to `acked` having been delivered; written
    /// before they go.
    /// A note still counting widens to cover the copies it names too.
    pub async fn note(&self, endpoint: &str, acked: u64, through: u64) -> Result<(), StateError> {
        let store = self.state.store().await?;
        let key = format!("{PREFIX}{}", key_token(endpoint));
        let before = (store.get(key.as_str()).await)
            .map_err(|e| StateError::Access(e.to_string()))?
            .and_then(|v| serde_json::from_slice::<Note>(&v).ok())
            .filter(Note::counts);
        let note = Note {
            at: now_ms(),
            acked: before.as_ref().map_or(acked, |b| b.acked.min(acked)),
            through: before.as_ref().map_or(through, |b| b.through.max(through)),
        };
        let value = serde_json::to_vec(&note).map_err(|e| StateError::Access(e.to_string()))?;
        store
            .put(key, value.into())
            .await
            .map(drop)
            .map_err(|e| StateError::Access(e.to_string()))
    }

    /// Whether the copy of `endpoint` stored at `sequence` of its own work stream was
    /// removed undelivered within the work streams' duplicate window.
    pub async fn removed(&self, endpoint: &str, sequence: u64) -> Result<bool, StateError> {
        let store = self.state.store().await?;
        let entry = store
            .get(format!("{PREFIX}{}", key_token(endpoint)))
            .await
            .map_err(|e| StateError::Access(e.to_string()))?;
        let note: Option<Note> = entry.and_then(|v| serde_json::from_slice(&v).ok());
        Ok(note.is_some_and(|n| n.counts() && n.acked < sequence && sequence <= n.through))
    }
}
