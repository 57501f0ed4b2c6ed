//! Dead letters whose write failed, kept until their message comes back. Its
//! attempts are used up, so it then goes to the dead-letter stream at once, with the
//! record of its last attempt, and not to the receiver again: without this each
//! redelivery while the stream is unavailable would be one more request past
//! `max_attempts`, a second apart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::dead_letters::DeadLetter;

/// Records kept at most; past that, a message that comes back is dead-lettered
/// without its last attempt's result. Each is at most a few KiB (the response body
/// is cut at 4,096 bytes; the payload is not in it).
const MOST: usize = 1_000;

/// A record not written, and what its operator event says.
#[derive(Clone)]
pub(super) struct Unwritten {
    pub record: DeadLetter,
    pub code: &'static str,
    pub last_result: Option<&'static str>,
}

/// Endpoint, stream, stream sequence: one message's dead letter for one endpoint.
type Key = (String, String, u64);

/// A record older than this is dropped to make room: its message came back long ago
/// (to another replica, or settled by a reload's successor) or never will.
const STALE: Duration = Duration::from_secs(3600);

#[derive(Default, Clone)]
pub(super) struct UnwrittenRecords(Arc<Mutex<HashMap<Key, (Instant, Unwritten)>>>);

impl UnwrittenRecords {
    pub fn keep(&self, endpoint: &str, stream: &str, sequence: u64, unwritten: Unwritten) {
        let Ok(mut kept) = self.0.lock() else { return };
        if kept.len() >= MOST {
            kept.retain(|_, (at, _)| at.elapsed() < STALE);
        }
        if kept.len() < MOST {
            let key = (endpoint.to_string(), stream.to_string(), sequence);
            kept.insert(key, (Instant::now(), unwritten));
        }
    }

    pub fn take(&self, endpoint: &str, stream: &str, sequence: u64) -> Option<Unwritten> {
        let key = (endpoint.to_string(), stream.to_string(), sequence);
        self.0.lock().ok()?.remove(&key).map(|(_, u)| u)
    }
}
