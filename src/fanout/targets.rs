//! Which endpoints deliver a message, found without asking every endpoint: endpoints
//! whose `events` are plain names are looked up by the message's event, the others
//! (patterns such as `lead.*` or `*`) are asked one by one. With thousands of
//! endpoints that each want a few named events, a message costs a hash lookup.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::config::Endpoint;
use crate::routing::{tenant_admits, Mapped, Router};
use crate::worker::Worker;

/// An endpoint the fan-out copies for.
#[derive(Clone)]
pub enum Target {
    /// Running: its worker delivers the copies.
    Serving(Arc<Worker>),
    /// Disabled: its copies wait on its own subject, as a disabled endpoint's messages
    /// wait for its consumer on the source stream without fan-out, and enabling it
    /// delivers them (or skips them, with `skip_backlog`).
    Held(Arc<Endpoint>),
}

impl Target {
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        match self {
            Target::Serving(w) => w.endpoint(),
            Target::Held(e) => e,
        }
    }

    /// The worker delivering its copies, if it runs.
    pub fn worker(&self) -> Option<&Arc<Worker>> {
        match self {
            Target::Serving(w) => Some(w),
            Target::Held(_) => None,
        }
    }

    /// Whether its next copy goes on the lane: only a running endpoint's can.
    pub fn takes_lane(&self) -> bool {
        self.worker().is_some_and(|w| w.takes_lane())
    }

    /// Tells a running endpoint it has copies waiting.
    pub fn wake(&self) {
        if let Some(w) = self.worker() {
            w.wake();
        }
    }

    /// Whether both are the same endpoint in the same state (one set of settings,
    /// running or held).
    pub fn same(&self, other: &Target) -> bool {
        match (self, other) {
            (Target::Serving(a), Target::Serving(b)) => Arc::ptr_eq(a, b),
            (Target::Held(a), Target::Held(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// The endpoints that read copies from the work stream, indexed for routing.
#[derive(Default)]
pub struct Targets {
    router: Router,
    targets: Vec<Target>,
    /// Endpoints that read the source stream themselves (`ordered`).
    own_readers: Vec<Arc<Worker>>,
    /// Their names, looked up once per endpoint of every registry change.
    own_reader_names: HashSet<String>,
    by_event: HashMap<String, Vec<usize>>,
    /// Endpoints with a pattern among their events.
    by_pattern: Vec<usize>,
    by_name: HashMap<String, usize>,
}

impl Targets {
    /// `workers` that do not fan out (ordered endpoints) are not routed to: they read
    /// the source stream themselves. `held` (disabled) ones are, `ordered` or not: one
    /// may have no consumer on the source stream yet (created disabled, or made
    /// `ordered` while disabled), and the consumer it gets when enabled starts at the
    /// oldest of its copies (those of one that had a consumer there are dropped).
    pub fn new(router: Router, workers: Vec<Arc<Worker>>, held: Vec<Arc<Endpoint>>) -> Self {
        let (workers, own_readers): (Vec<Arc<Worker>>, Vec<Arc<Worker>>) =
            workers.into_iter().partition(|w| w.fans_out());
        let targets = workers
            .into_iter()
            .map(Target::Serving)
            .chain(held.into_iter().map(Target::Held))
            .collect();
        Self::indexed(router, targets, own_readers)
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
        let targets = (self.targets.iter().cloned())
            .chain(extra.into_iter().map(Target::Serving))
            .collect();
        Self::indexed(self.router.clone(), targets, own_readers)
    }

    fn indexed(router: Router, targets: Vec<Target>, own_readers: Vec<Arc<Worker>>) -> Self {
        let mut by_event: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_pattern = Vec::new();
        let mut by_name = HashMap::with_capacity(targets.len());
        for (i, w) in targets.iter().enumerate() {
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
        let own_reader_names = own_readers
            .iter()
            .map(|w| w.endpoint().name.clone())
            .collect();
        Self {
            router,
            targets,
            own_readers,
            own_reader_names,
            by_event,
            by_pattern,
            by_name,
        }
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The endpoints that deliver a message mapped to `mapped`, each once.
    pub fn of<'a>(&'a self, mapped: &'a Mapped) -> impl Iterator<Item = &'a Target> + 'a {
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
                    .filter(move |&i| self.targets[i].endpoint().events.wants(&mapped.event)),
            )
            .map(|i| &self.targets[i])
            .filter(move |w| {
                tenant_admits(w.endpoint().tenant.as_deref(), mapped.tenant.as_deref())
            })
    }

    /// The endpoints copied for.
    pub fn all(&self) -> &[Target] {
        &self.targets
    }

    /// The endpoints that read the source stream themselves.
    pub fn own_readers(&self) -> &[Arc<Worker>] {
        &self.own_readers
    }

    /// Whether `name` is copied for or reads the source stream itself.
    pub fn knows(&self, name: &str) -> bool {
        self.by_name.contains_key(name) || self.reads_source(name)
    }

    /// Whether `name` reads the source stream itself.
    pub fn reads_source(&self, name: &str) -> bool {
        self.own_reader_names.contains(name)
    }

    pub fn get(&self, name: &str) -> Option<&Target> {
        self.by_name.get(name).map(|&i| &self.targets[i])
    }

    /// The running worker of `name`, if the fan-out copies for it.
    pub fn worker(&self, name: &str) -> Option<&Arc<Worker>> {
        self.get(name).and_then(Target::worker)
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}
