//! The workers in force, as one value shared by reference. Its readers (the pending
//! poll, readiness, the admin API) take the set, not a copy of the list: with
//! thousands of endpoints, a copy costs a cold cache line per worker, twice (counted
//! up, then down), every time anything looks.

use std::sync::Arc;

use super::Worker;

/// The workers of one moment, in endpoint name order.
#[derive(Default)]
pub struct WorkerSet {
    all: Vec<Arc<Worker>>,
    own_readers: Vec<Arc<Worker>>,
}

impl WorkerSet {
    pub fn new(mut all: Vec<Arc<Worker>>) -> Self {
        all.sort_by(|a, b| a.endpoint().name.cmp(&b.endpoint().name));
        let own_readers = all.iter().filter(|w| !w.fans_out()).cloned().collect();
        Self { all, own_readers }
    }

    /// The worker of endpoint `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Worker>> {
        self.all
            .binary_search_by(|w| w.endpoint().name.as_str().cmp(name))
            .ok()
            .map(|i| &self.all[i])
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Arc<Worker>> {
        self.all.iter()
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Those reading a stream of their own rather than copies from the work stream
    /// (`ordered` endpoints, or every endpoint without fan-out): kept apart because
    /// readiness waits for their consumers, and with fan-out they are few.
    pub fn own_readers(&self) -> &[Arc<Worker>] {
        &self.own_readers
    }
}

impl<'a> IntoIterator for &'a WorkerSet {
    type Item = &'a Arc<Worker>;
    type IntoIter = std::slice::Iter<'a, Arc<Worker>>;

    fn into_iter(self) -> Self::IntoIter {
        self.all.iter()
    }
}
