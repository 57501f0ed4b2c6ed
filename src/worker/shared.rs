//! What every worker shares: the NATS side, the process-wide stores and bounds. One
//! allocation behind an `Arc`, so ten thousand workers hold a pointer each, not a copy
//! of its names.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_nats::jetstream;
use tokio::sync::{watch, Semaphore};

use super::drains::Drains;
use super::inflight::{InflightLimit, Share};
use super::source_listings::SourceListings;
use crate::config::NatsConfig;
use crate::events::OperatorEvents;
use crate::metrics::Metrics;
use crate::store::dead_letters::DeadLetters;
use crate::store::delivery_log::DeliveryLog;
use crate::store::forgotten::Forgotten;
use crate::store::pause_state::PauseState;
use crate::store::unattempted::Unattempted;
use crate::store::work_stream::WorkStream;

/// What every worker shares: the NATS side and the process-wide stores.
#[derive(Clone)]
pub struct Shared {
    pub(super) js: jetstream::Context,
    pub(super) stream_name: String,
    pub(super) consumer_prefix: String,
    pub(super) metrics: Metrics,
    pub(super) dead_letters: DeadLetters,
    pub(super) delivery_log: Option<DeliveryLog>,
    pub(super) pause_state: PauseState,
    /// Deliveries that were no attempt, in the pause state's bucket.
    pub(super) unattempted: Unattempted,
    /// When each endpoint's copies were last removed.
    pub(super) forgotten: Forgotten,
    pub(super) events: OperatorEvents,
    /// `[delivery] max_inflight`, shared fairly by the endpoints.
    pub(super) inflight: InflightLimit,
    /// With `[delivery] fan_out`: where endpoints read their copies.
    pub(super) work: Option<WorkStream>,
    /// Consumer creations under way, over all endpoints.
    pub(super) binds: Arc<Semaphore>,
    /// Live replicas of this deployment (`store::replicas`), which split each
    /// endpoint's `rate_limit`.
    pub(super) replicas: watch::Sender<usize>,
    /// Bumped whenever an endpoint's throttle changes (a reload, a new count of
    /// replicas): a message waiting for a token looks again. One channel for every
    /// endpoint rather than one each, which with thousands of endpoints is ~350 bytes
    /// of memory apiece; a waiter woken for another endpoint's change just waits on.
    pub(super) throttles: watch::Sender<()>,
    /// The endpoints running: their consumers' heartbeats are spaced by it.
    endpoints: Arc<AtomicUsize>,
    /// With fan-out: the source stream's consumers as last listed (at start, then by
    /// the pending poll). A fan-out endpoint's consumer among them is a former one
    /// (the endpoint was `ordered`, or `fan_out` was off, when the process started),
    /// and a worker made for it keeps its copies off the lane from its first copy on.
    source_listings: Arc<SourceListings>,
    /// The drains of former consumers under way in this process.
    pub(super) drains: Drains,
    /// Dead letters whose write failed, until their message comes back.
    pub(super) unwritten: super::unwritten::UnwrittenRecords,
}

/// Consumers created at once, over all endpoints.
const CONCURRENT_BINDS: usize = 16;

impl Shared {
    /// `max_inflight` bounds the deliveries in flight over all endpoints.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        js: jetstream::Context,
        nats: &NatsConfig,
        metrics: Metrics,
        dead_letters: DeadLetters,
        delivery_log: Option<DeliveryLog>,
        pause_state: PauseState,
        max_inflight: usize,
    ) -> Self {
        metrics.inflight_limit.set(max_inflight as i64);
        let inflight = InflightLimit::new(max_inflight, metrics.inflight_total.clone());
        Self {
            js,
            stream_name: nats.stream.clone(),
            consumer_prefix: nats.consumer_prefix.clone(),
            metrics,
            dead_letters,
            delivery_log,
            unattempted: Unattempted::new(pause_state.clone()),
            forgotten: Forgotten::new(pause_state.clone()),
            pause_state,
            events: OperatorEvents::off(),
            inflight,
            work: None,
            binds: Arc::new(Semaphore::new(CONCURRENT_BINDS)),
            replicas: watch::Sender::new(1),
            throttles: watch::Sender::new(()),
            endpoints: Arc::new(AtomicUsize::new(0)),
            source_listings: Arc::default(),
            drains: Drains::default(),
            unwritten: Default::default(),
        }
    }

    /// Endpoints read their copies from `work` (`[delivery] fan_out`), except ordered
    /// ones, which keep their own consumer on the source stream: copies made by
    /// several fan-out consumers in parallel would not keep the source's order.
    pub fn fanning_out(mut self, work: WorkStream) -> Self {
        self.work = Some(work);
        self
    }

    pub fn work_stream(&self) -> Option<&WorkStream> {
        self.work.as_ref()
    }

    /// Publishes the workers' operator events through `events` (off until then).
    pub fn raising(mut self, events: OperatorEvents) -> Self {
        self.events = events;
        self
    }

    pub fn pause_state(&self) -> &PauseState {
        &self.pause_state
    }

    pub fn unattempted(&self) -> &Unattempted {
        &self.unattempted
    }

    pub fn forgotten(&self) -> &Forgotten {
        &self.forgotten
    }

    /// The count of live replicas, which `store::replicas` keeps and workers read.
    pub fn replicas(&self) -> &watch::Sender<usize> {
        &self.replicas
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn dead_letters(&self) -> &DeadLetters {
        &self.dead_letters
    }

    pub fn delivery_log(&self) -> Option<&DeliveryLog> {
        self.delivery_log.as_ref()
    }

    pub fn js(&self) -> &jetstream::Context {
        &self.js
    }

    pub fn events(&self) -> &OperatorEvents {
        &self.events
    }

    /// A claim on `max_inflight` for a feeder of many endpoints (the lane), which the
    /// fair sharing counts as one endpoint.
    pub fn inflight_share(&self) -> Share {
        self.inflight.share()
    }

    pub fn consumer_prefix(&self) -> &str {
        &self.consumer_prefix
    }

    /// The source stream (`nats.stream`).
    pub fn stream_name(&self) -> &str {
        &self.stream_name
    }

    /// Sets how many endpoints run, before they start: a consumer bound after it sees
    /// the whole set.
    pub fn set_endpoints(&self, count: usize) {
        self.endpoints.store(count, Ordering::Relaxed);
    }

    /// See [`Drains`].
    pub fn drains(&self) -> &Drains {
        &self.drains
    }

    pub fn source_listings(&self) -> &SourceListings {
        &self.source_listings
    }

    pub(super) fn endpoints(&self) -> usize {
        self.endpoints.load(Ordering::Relaxed)
    }
}
