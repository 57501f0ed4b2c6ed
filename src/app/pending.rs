//! `natshook_consumer_pending` and `natshook_fanout_pending`, refreshed every
//! [`PENDING_POLL`]; and, on the way, the consumers fan-out endpoints left on the
//! source stream, whose messages move to the work stream.
//!
//! One consumer listing per stream (a page per 256 consumers) rather than one request
//! per endpoint: with thousands of endpoints, per-consumer polling is most of what an
//! idle nats-server does. A poll also costs what the listings hold, not how many
//! endpoints the process serves: the workers are indexed by consumer name once per
//! change of the set in force, and a poll touches only those whose consumer it lists,
//! or listed the time before. An idle fan-out endpoint has no consumer; with 10,000
//! of them, a poll that visited every worker (a cold cache line or more each) took
//! about 70 ms of CPU on a 2-core VM, about half of the idle process's CPU.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use async_nats::jetstream;
use async_nats::jetstream::consumer::Info;
use tokio_util::sync::CancellationToken;

use super::Supervisor;
use crate::worker::{Worker, WorkerSet};

/// How often `natshook_consumer_pending` is refreshed.
pub(super) const PENDING_POLL: Duration = Duration::from_secs(5);

/// The consumers whose lag `natshook_fanout_pending` shows: the fan-out's (source
/// messages not copied yet) and the lane's (copies not delivered yet).
pub(super) struct FanOutConsumer {
    pub stream: String,
    pub name: String,
    pub lane_stream: String,
    pub lane: String,
}

/// The workers of one [`WorkerSet`] by consumer name, and the streams they read.
#[derive(Default)]
struct Index {
    set: Arc<WorkerSet>,
    /// A name is unique to its endpoint: a fan-out endpoint's consumer on the work
    /// stream and the one it may have left on the source stream share it.
    by_consumer: HashMap<String, Arc<Worker>>,
    streams: Vec<String>,
}

impl Index {
    fn new(set: Arc<WorkerSet>) -> Self {
        let mut by_consumer = HashMap::with_capacity(set.len());
        let mut streams = HashSet::new();
        for w in set.iter() {
            by_consumer.insert(w.consumer_name().to_string(), Arc::clone(w));
            if !streams.contains(w.consumer_stream()) {
                streams.insert(w.consumer_stream().to_string());
            }
        }
        Self {
            set,
            by_consumer,
            streams: streams.into_iter().collect(),
        }
    }
}

/// What one poll leaves for the next, by endpoint name (a worker replaced by a reload
/// shares its endpoint's series with its successor).
#[derive(Default)]
struct Shown {
    /// Per stream, the endpoints whose consumer its last listing held.
    listed: HashMap<String, HashSet<String>>,
    /// Endpoints listed before and not since: once their worker is parked it shows
    /// nothing pending.
    unlisted: HashSet<String>,
    /// Consumers whose filter the listings have found changed by someone else: since
    /// when, and when that was last logged.
    foreign_filter: HashMap<String, (Instant, Option<Instant>)>,
    /// The consumers judged in the poll under way: an entry of `foreign_filter` not
    /// judged in a poll (its endpoint removed, its consumer gone) is forgotten, so
    /// that its time does not count for a later one of the name.
    judged: HashSet<String>,
}

/// How long a consumer's filter must stay changed before it is logged: the replicas
/// of one deployment reload a changed config file at different times (a Kubernetes
/// ConfigMap reaches pods up to a minute or more apart), and the first to bind writes
/// the new filter under the others.
const FOREIGN_FILTER_AFTER: Duration = Duration::from_secs(120);

/// How often one consumer's changed filter is logged while it stays changed.
const FOREIGN_FILTER_LOG_EVERY: Duration = Duration::from_secs(600);

impl Shown {
    /// Forgets the streams no worker of `index` reads (but `source`), whose listings
    /// stop.
    fn keep_streams(&mut self, index: &Index, source: Option<&str>) {
        let Shown {
            listed, unlisted, ..
        } = self;
        listed.retain(|stream, names| {
            let read = index.streams.contains(stream) || source == Some(stream.as_str());
            if !read {
                unlisted.extend(names.drain());
            }
            read
        });
    }

    /// Shows each consumer of `stream` that `infos` lists on its worker, and notes
    /// the endpoints listed last time and not now.
    fn list(&mut self, index: &Index, stream: &str, infos: &HashMap<String, Info>) {
        let mut now = HashSet::new();
        for (name, info) in infos {
            let Some(w) = index.by_consumer.get(name) else {
                continue;
            };
            if w.consumer_stream() == stream {
                w.show_pending(info);
                w.follow_retries(info);
                self.judge_filter(w, info);
                now.insert(w.endpoint().name.clone());
            }
        }
        let before = self.listed.insert(stream.to_string(), now);
        let now = &self.listed[stream];
        (self.unlisted).extend(before.into_iter().flatten().filter(|n| !now.contains(n)));
    }

    /// Says when a consumer's filter is not the one this worker bound it with, once
    /// it has stayed so for [`FOREIGN_FILTER_AFTER`] (longer than the replicas of one
    /// deployment take to reload a changed config): another deployment on the same
    /// stream and `consumer_prefix` with an endpoint of this name shares its
    /// consumer, so each gets part of the other's messages, filtered as whichever
    /// bound last says. Not written back: replicas of an old and a new config during
    /// a rolling update would take turns, and each narrowing skips messages only the
    /// other's filter takes.
    fn judge_filter(&mut self, w: &Arc<Worker>, info: &Info) {
        let name = w.consumer_name();
        self.judged.insert(name.to_string());
        if !w.filter_differs(info) {
            self.foreign_filter.remove(name);
            return;
        }
        let now = Instant::now();
        let (since, logged) = (self.foreign_filter)
            .entry(name.to_string())
            .or_insert((now, None));
        let due = logged.is_none_or(|at| now - at >= FOREIGN_FILTER_LOG_EVERY);
        if now - *since < FOREIGN_FILTER_AFTER || !due {
            return;
        }
        *logged = Some(now);
        tracing::warn!(
            endpoint = %w.endpoint().name,
            consumer = %name,
            found = ?crate::worker::listed_filters(info),
            "the endpoint's consumer filters other subjects than this config gives it: another natshook with another config reads this stream with the same consumer_prefix and an endpoint of this name, and shares its consumer (each gets part of the other's messages); give each deployment its own nats.consumer_prefix (replicas of an old and a new config during a rolling update see this until the old ones stop)"
        );
    }

    /// After every listing of a poll: the workers in force of the endpoints no longer
    /// listed show nothing pending, when parked; one whose series do not exist yet is
    /// tried again at the next poll.
    fn clear_unlisted(&mut self, index: &Index) {
        let judged = std::mem::take(&mut self.judged);
        self.foreign_filter.retain(|name, _| judged.contains(name));
        let Shown {
            listed, unlisted, ..
        } = self;
        unlisted.retain(|name| match index.set.get(name) {
            Some(_) if listed.values().any(|now| now.contains(name)) => false,
            Some(w) => !w.show_no_consumer(),
            None => false,
        });
    }
}

/// Refreshes the pending counts of the workers with a consumer, and the fan-out
/// consumer's, until `stop`.
pub(super) async fn poll(
    js: jetstream::Context,
    sup: Arc<Supervisor>,
    fan_out: Option<FanOutConsumer>,
    stop: CancellationToken,
) {
    let mut index = Index::default();
    let mut shown = Shown::default();
    loop {
        if let Some(f) = &fan_out {
            let pending = (
                consumer_pending(&js, &f.stream, &f.name).await,
                consumer_pending(&js, &f.lane_stream, &f.lane).await,
            );
            match pending {
                (Ok(copying), Ok(on_lane)) => sup
                    .metrics()
                    .fanout_pending()
                    .set(copying.saturating_add(on_lane)),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::debug!(consumer = %f.name, error = %e, "cannot read the fan-out or lane consumer")
                }
            }
        }
        // The source stream is listed with fan-out even when no endpoint reads it:
        // an endpoint that reads copies may have left a consumer there.
        let source = fan_out.as_ref().map(|f| f.stream.as_str());
        let set = sup.workers();
        if !Arc::ptr_eq(&set, &index.set) {
            index = Index::new(set);
            shown.keep_streams(&index, source);
        }
        let extra = source.filter(|s| !index.streams.iter().any(|x| x == s));
        for stream in index.streams.iter().map(String::as_str).chain(extra) {
            let listing = (source == Some(stream)).then(|| sup.source_listings().begin());
            let infos = match crate::store::consumer_infos(&js, stream).await {
                Ok(infos) => infos,
                Err(e) => {
                    tracing::debug!(stream, error = %e, "cannot list consumers");
                    continue;
                }
            };
            shown.list(&index, stream, &infos);
            if let (Some(f), Some(listing)) = (&fan_out, listing) {
                (sup.source_listings()).record(listing, infos.keys().cloned().collect());
                drain_leftovers(&js, &sup, f, &index, &infos, &stop);
            }
        }
        shown.clear_unlisted(&index);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PENDING_POLL) => {}
        }
    }
}

/// Marks the fan-out endpoints whose former consumer on the source stream `infos`
/// lists, and starts moving each one's messages to the work stream
/// (`fanout::leftover`), one task per consumer at a time, claimed in the supervisor's
/// [`Drains`](crate::worker::drains::Drains). A worker not marked again is cleared
/// by the listing ([`Worker::has_former_consumer`]).
fn drain_leftovers(
    js: &jetstream::Context,
    sup: &Arc<Supervisor>,
    f: &FanOutConsumer,
    index: &Index,
    infos: &HashMap<String, Info>,
    stop: &CancellationToken,
) {
    let former: Vec<&Arc<Worker>> = infos
        .keys()
        .filter_map(|name| index.by_consumer.get(name))
        .filter(|w| w.fans_out())
        .collect();
    for w in &former {
        w.note_former_consumer(true);
    }
    let Some(work) = sup.work_stream() else {
        return;
    };
    for w in former {
        let consumer = w.consumer_name();
        let Some(turn) = sup.drains().begin(consumer) else {
            continue;
        };
        let work = work.clone();
        let (js, stream, stop) = (js.clone(), f.stream.clone(), stop.clone());
        let (consumer, endpoint) = (consumer.to_string(), w.endpoint().name.clone());
        // Still a fan-out endpoint of this process: checked before every batch moved.
        let worker = {
            let (sup, endpoint) = (Arc::clone(sup), endpoint.clone());
            move || sup.worker(&endpoint).filter(|w| w.fans_out())
        };
        let unattempted = sup.unattempted().clone();
        let forgotten = sup.forgotten().clone();
        tokio::spawn(async move {
            let leftover = crate::fanout::leftover::Leftover {
                unattempted: &unattempted,
                forgotten: &forgotten,
                js: &js,
                work: &work,
                stream: &stream,
                consumer: &consumer,
                endpoint: &endpoint,
                worker: &worker,
                stop: &stop,
                taken_back: &turn.taken_back,
            };
            match leftover.drain().await {
                Ok(Some(moved)) => tracing::info!(
                    %endpoint, %consumer, moved,
                    "the endpoint reads copies now: its former consumer's messages moved to the work stream, and the consumer deleted"
                ),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%endpoint, error = %e, "former consumer not drained yet; trying again")
                }
            }
        });
    }
}

/// What `consumer` of `stream` has not settled (see [`crate::worker::unsettled`]).
async fn consumer_pending(
    js: &jetstream::Context,
    stream: &str,
    consumer: &str,
) -> Result<i64, String> {
    let stream = js
        .get_stream_no_info(stream)
        .await
        .map_err(|e| e.to_string())?;
    let info = stream
        .consumer_info(consumer)
        .await
        .map_err(|e| e.to_string())?;
    Ok(crate::worker::unsettled(&info))
}
