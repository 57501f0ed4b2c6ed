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

impl Forgotten {
    pub fn new(state: PauseState) -> Self {
        Self { state }
    }

    /// Notes that `endpoint`'s copies are about to be removed; written before they go.
    pub async fn note(&self, endpoint: &str) -> Result<(), StateError> {
        let store = self.state.store().await?;
        store
            .put(
                format!("{PREFIX}{}", key_token(endpoint)),
                now_ms().to_string().into(),
            )
            .await
            .map(drop)
            .map_err(|e| StateError::Access(e.to_string()))
    }

    /// Whether `endpoint`'s copies were removed within the work streams' duplicate
    /// window.
    pub async fn recently(&self, endpoint: &str) -> Result<bool, StateError> {
        let store = self.state.store().await?;
        let entry = store
            .get(format!("{PREFIX}{}", key_token(endpoint)))
            .await
            .map_err(|e| StateError::Access(e.to_string()))?;
        let at: Option<u64> = entry.and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok());
        Ok(at.is_some_and(|at| now_ms().saturating_sub(at) < COUNTS_FOR.as_millis() as u64))
    }
}
