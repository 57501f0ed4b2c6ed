//! Which endpoints deliver a message, found without asking every endpoint: endpoints
//! whose `events` are plain names are looked up by the message's event, the others
//! (patterns such as `lead.*` or `*`) are asked one by one. With thousands of
//! endpoints that each want a few named events, a message costs a hash lookup.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::routing::{tenant_admits, Mapped, Router};
use crate::worker::Worker;

/// The endpoints that read copies from the work stream, indexed for routing.
#[derive(Default)]
pub struct Targets {
    router: Router,
    workers: Vec<Arc<Worker>>,
    /// Endpoints that read the source stream themselves (`ordered`).
    own_readers: Vec<Arc<Worker>>,
    by_event: HashMap<String, Vec<usize>>,
    /// Endpoints with a pattern among their events.
    by_pattern: Vec<usize>,
    by_name: HashMap<String, usize>,
}

impl Targets {
    /// `workers` that do not fan out (ordered endpoints) are not routed to: they read
    /// the source stream themselves.
    pub fn new(router: Router, workers: Vec<Arc<Worker>>) -> Self {
        let (workers, own_readers): (Vec<Arc<Worker>>, Vec<Arc<Worker>>) =
            workers.into_iter().partition(|w| w.fans_out());
        Self::indexed(router, workers, own_readers)
    }

    /// These targets, but copying for the endpoints of `names` among those that read
    /// the source stream themselves: while such an endpoint's consumer there cannot be
    /// made, its messages wait on the work stream, where the consumer, once made,
    /// starts from the oldest of them.
    pub fn copying_also(&self, names: &HashSet<String>) -> Self {
        let (extra, own_readers): (Vec<Arc<Worker>>, Vec<Arc<Worker>>) = self
            .own_readers
            .iter()
            .cloned()
            .partition(|w| names.contains(&w.endpoint().name));
        let workers = self.workers.iter().cloned().chain(extra).collect();
        Self::indexed(self.router.clone(), workers, own_readers)
    }

    fn indexed(router: Router, workers: Vec<Arc<Worker>>, own_readers: Vec<Arc<Worker>>) -> Self {
        let mut by_event: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_pattern = Vec::new();
        let mut by_name = HashMap::with_capacity(workers.len());
        for (i, w) in workers.iter().enumerate() {
            by_name.insert(w.endpoint().name.clone(), i);
            match w.endpoint().events.literals() {
                Some(events) => {
                    for e in events {
                        let list = by_event.entry(e.to_string()).or_default();
                        if list.last() != Some(&i) {
                            list.push(i);
                        }
                    }
                }
                None => by_pattern.push(i),
            }
        }
        Self {
            router,
            workers,
            own_readers,
            by_event,
            by_pattern,
            by_name,
        }
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The endpoints that deliver a message mapped to `mapped`, each once.
    pub fn of<'a>(&'a self, mapped: &'a Mapped) -> impl Iterator<Item = &'a Arc<Worker>> + 'a {
        let named = self
            .by_event
            .get(&mapped.event)
            .map(|v| v.as_slice())
            .unwrap_or_default();
        named
            .iter()
            .copied()
            .chain(
                self.by_pattern
                    .iter()
                    .copied()
                    .filter(move |&i| self.workers[i].endpoint().events.wants(&mapped.event)),
            )
            .map(|i| &self.workers[i])
            .filter(move |w| {
                tenant_admits(w.endpoint().tenant.as_deref(), mapped.tenant.as_deref())
            })
    }

    /// The endpoints copied for.
    pub fn workers(&self) -> &[Arc<Worker>] {
        &self.workers
    }

    /// The endpoints that read the source stream themselves.
    pub fn own_readers(&self) -> &[Arc<Worker>] {
        &self.own_readers
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Worker>> {
        self.by_name.get(name).map(|&i| &self.workers[i])
    }

    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }
}
