//! Names marked while some work on them runs: a deleted endpoint's removal, a create
//! through the admin API. A mark lasts as long as its guard, so a task that ends in
//! any way (done, failed, dropped) takes its mark with it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// The marked names, each with how many guards hold it.
#[derive(Clone, Default)]
pub struct NameMarks(Arc<Mutex<HashMap<String, usize>>>);

impl NameMarks {
    /// Marks `name` until the guard drops; a name marked twice stays marked until both
    /// guards drop.
    pub fn mark(&self, name: &str) -> NameMark {
        *self.lock().entry(name.to_string()).or_default() += 1;
        self.guard(name)
    }

    /// Marks `name` unless it is marked already.
    pub fn mark_alone(&self, name: &str) -> Option<NameMark> {
        let mut marks = self.lock();
        if marks.contains_key(name) {
            return None;
        }
        marks.insert(name.to_string(), 1);
        drop(marks);
        Some(self.guard(name))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }

    fn guard(&self, name: &str) -> NameMark {
        NameMark {
            marks: self.clone(),
            name: name.to_string(),
        }
    }

    /// The map, even after a panic elsewhere held the lock: a mark left behind would
    /// block its name for good.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One hold on a marked name (see [`NameMarks::mark`]).
pub struct NameMark {
    marks: NameMarks,
    name: String,
}

impl Drop for NameMark {
    fn drop(&mut self) {
        let mut marks = self.marks.lock();
        if let Some(n) = marks.get_mut(&self.name) {
            *n -= 1;
            if *n == 0 {
                marks.remove(&self.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_stays_marked_while_any_guard_holds_it() {
        let marks = NameMarks::default();
        let first = marks.mark("a");
        let second = marks.mark("a");
        assert!(marks.mark_alone("a").is_none());
        drop(first);
        assert!(marks.contains("a"), "the second guard still holds it");
        drop(second);
        assert!(!marks.contains("a"));
        let alone = marks.mark_alone("a");
        assert!(alone.is_some() && marks.contains("a"));
        drop(alone);
        assert!(!marks.contains("a"));
    }
}
