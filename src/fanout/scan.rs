//! The scan every replica runs with `fan_out`: every few seconds, and at start, it
//! removes the copies each endpoint's consumer has acked ([`WorkStream::release`]),
//! so a busy endpoint's subject holds a few seconds of done work at most; wakes the
//! endpoints with copies waiting (stored by another replica, or left by a process
//! that stopped); and removes disabled endpoints' copies of messages the source
//! stream no longer keeps.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::AckPolicy};
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::lane;
use super::targets::{Target, Targets};
use crate::store;
use crate::store::work_stream::WorkStream;

/// How often every replica looks for endpoints with work it was not told about.
const SCAN_EVERY: Duration = Duration::from_secs(3);

/// Removes the copies every endpoint's consumer has acked and wakes every endpoint
/// that has copies waiting, every `SCAN_EVERY` until `stop`: the copies another
/// replica stored, or a stopped process left behind. Disabled endpoints' copies of
/// messages the `source` stream no longer keeps are removed ([`expire_held`]).
pub async fn scan(
    js: jetstream::Context,
    work: WorkStream,
    source: String,
    consumer_prefix: String,
    targets: watch::Receiver<Arc<Targets>>,
    stop: CancellationToken,
) {
    let mut released: Released = Vec::new();
    let lane = lane::consumer_name(&consumer_prefix);
    let mut expire_due = tokio::time::Instant::now();
    loop {
        if let Err(e) = lane::Lane::release(&js, &work, &lane).await {
            tracing::debug!(consumer = %lane, error = %e, "lane purge failed");
        }
        let current = targets.borrow().clone();
        let mut held = Vec::new();
        for (i, name) in work.names().iter().enumerate() {
            // One shard's failure (a stream being created again) leaves the others'
            // endpoints to be woken.
            if let Err(e) = release_acked(&js, &work, i, &mut released).await {
                tracing::debug!(stream = %name, error = %e, "work stream purge failed");
            }
            match scan_shard(&js, &work, i, &current).await {
                Ok(names) if !names.is_empty() => held.push((i, names)),
                Ok(_) => {}
                Err(e) => tracing::debug!(stream = %name, error = %e, "work stream scan failed"),
            }
        }
        if !held.is_empty() && tokio::time::Instant::now() >= expire_due {
            let every = match expire_held(&js, &work, &source, &held, &targets).await {
                Ok(every) => every,
                Err(e) => {
                    tracing::debug!(error = %e, "disabled endpoints' copies not expired");
                    EXPIRE_EVERY_MAX
                }
            };
            expire_due = tokio::time::Instant::now() + every;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(SCAN_EVERY) => {}
        }
    }
}

/// The ack floor each endpoint's copies were last released to, by shard and consumer
/// name: a consumer whose floor has not moved costs no purge request.
type Released = Vec<HashMap<String, u64>>;

/// Releases the acked copies of every consumer on shard `i`'s stream (any replica's:
/// the consumers are shared). Only the consumers listed now are remembered.
async fn release_acked(
    js: &jetstream::Context,
    work: &WorkStream,
    i: usize,
    released: &mut Released,
) -> Result<(), String> {
    let name = &work.names()[i];
    let infos = store::consumer_infos(js, name)
        .await
        .map_err(|e| e.to_string())?;
    let stream = js
        .get_stream_no_info(name)
        .await
        .map_err(|e| e.to_string())?;
    if released.len() <= i {
        released.resize_with(i + 1, HashMap::new);
    }
    let before = std::mem::take(&mut released[i]);
    for (name, info) in infos {
        // Only an endpoint's own consumer acks what it delivered: a consumer that
        // merely reads the copies (the ephemeral one that finds an ordered endpoint's
        // oldest waiting copy acks nothing) says nothing about which are done.
        if info.config.durable_name.is_none() || info.config.ack_policy != AckPolicy::Explicit {
            continue;
        }
        let Some(endpoint) = work.endpoint_of(&info.config.filter_subject) else {
            continue;
        };
        let floor = info.ack_floor.stream_sequence;
        let done = before.get(&name).copied().unwrap_or(0);
        if floor > done {
            if let Err(e) = work.release(&stream, endpoint, floor).await {
                released[i].insert(name, done);
                return Err(e.to_string());
            }
        }
        released[i].insert(name, floor.max(done));
    }
    Ok(())
}

/// Wakes the endpoints with copies on shard `i`'s stream; returns the disabled ones
/// with copies there.
async fn scan_shard(
    js: &jetstream::Context,
    work: &WorkStream,
    i: usize,
    targets: &Targets,
) -> Result<Vec<String>, String> {
    let stream = js
        .get_stream_no_info(&work.names()[i])
        .await
        .map_err(|e| e.to_string())?;
    let mut subjects = stream
        .info_with_subjects(work.subjects_of(i))
        .await
        .map_err(|e| e.to_string())?;
    let mut held = Vec::new();
    while let Some(next) = subjects.next().await {
        let (subject, count) = next.map_err(|e| e.to_string())?;
        if count == 0 {
            continue;
        }
        match work.endpoint_of(&subject).and_then(|e| targets.get(e)) {
            Some(Target::Serving(w)) => w.wake(),
            Some(Target::Held(e)) => held.push(e.name.clone()),
            None => {}
        }
    }
    Ok(held)
}

/// Longest time between two expiries of disabled endpoints' copies.
const EXPIRE_EVERY_MAX: Duration = Duration::from_secs(60);

/// How much older than the source stream's oldest message a copy must be stored to
/// go: the source and a work stream may be kept by different servers of a cluster,
/// whose clocks differ a little.
const EXPIRE_MARGIN: Duration = Duration::from_secs(10);

/// Removes the copies of disabled endpoints (`held`, by shard) whose source messages
/// the `source` stream no longer keeps: a disabled endpoint's consumer on the source
/// stream, without fan-out, would not find them either, and a platform's long-disabled
/// webhooks would otherwise store a copy of their share of the traffic for good. The
/// cut is the time the source's oldest message was stored, less [`EXPIRE_MARGIN`];
/// with the source empty, every copy stored before it was read. Only under limits
/// retention: interest and work-queue streams drop what the fan-out acked, which the
/// endpoint has yet to get. An endpoint no longer held (enabled meanwhile) is left
/// alone. Returns when to look again: a tenth of the source's `max_age` (between
/// [`SCAN_EVERY`] and [`EXPIRE_EVERY_MAX`]), so a copy outlives its message by little.
async fn expire_held(
    js: &jetstream::Context,
    work: &WorkStream,
    source: &str,
    held: &[(usize, Vec<String>)],
    targets: &watch::Receiver<Arc<Targets>>,
) -> Result<Duration, String> {
    // Each shard's end is read before the source: a copy at or below it was stored
    // before the source was read, so its message was stored before that too.
    let mut shards = Vec::with_capacity(held.len());
    for (i, names) in held {
        let mut shard = (js.get_stream(&work.names()[*i]).await).map_err(|e| e.to_string())?;
        let last = (shard.info().await)
            .map_err(|e| e.to_string())?
            .state
            .last_sequence;
        shards.push((*i, shard, last, names));
    }
    let mut stream = js
        .get_stream(source)
        .await
        .map_err(|e| format!("stream {source}: {e}"))?;
    let info = stream
        .info()
        .await
        .map_err(|e| format!("stream {source}: {e}"))?;
    let every = match info.config.max_age {
        age if age.is_zero() => EXPIRE_EVERY_MAX,
        age => (age / 10).clamp(SCAN_EVERY, EXPIRE_EVERY_MAX),
    };
    if info.config.retention != jetstream::stream::RetentionPolicy::Limits {
        return Ok(every);
    }
    let margin = time::Duration::seconds(EXPIRE_MARGIN.as_secs() as i64);
    let cut = match info.state.messages {
        0 => None,
        _ => Some(
            info.state
                .first_timestamp
                .checked_sub(margin)
                .ok_or("no cut")?,
        ),
    };
    for (i, shard, last, names) in shards {
        let first = match cut {
            Some(cut) => (work.first_stored_since(js, i, cut).await).map_err(|e| e.to_string())?,
            None => last + 1,
        };
        for name in names {
            let still_held = matches!(targets.borrow().get(name), Some(Target::Held(_)));
            if !still_held {
                continue;
            }
            let removed = (work.expire(&shard, name, first).await).map_err(|e| e.to_string())?;
            if removed > 0 {
                tracing::info!(endpoint = %name, removed, "removed a disabled endpoint's copies of messages the source stream no longer keeps");
            }
        }
    }
    Ok(every)
}
