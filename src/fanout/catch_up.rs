//! A runtime endpoint joins the fan-out's targets a moment after its creation (or an
//! enable that skips the backlog): the registry change reaches each replica within
//! about a tenth of a second. The messages stored in between, after the record's
//! `skip_through`, were handled without it. When a replica's targets gain such an
//! endpoint, it copies those messages for it once, from the source stream, up to
//! where the fan-out consumer had delivered when it bound again with the new targets;
//! from there on the fan-out copies for it. A message copied both ways (another
//! replica copied it after its own bind, or it comes back to the fan-out after its ack
//! timer) is one message of the stream the fan-out chose for the endpoint (the copy's
//! `Nats-Msg-Id`), unless the endpoint moved between the lane and its own subject in
//! between, or the work stream's duplicate window has passed: then it comes twice,
//! with the same id. None is missed. A process's first bind catches up every endpoint
//! that started just before it: the process before it may have copied without it.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{
    self,
    consumer::{pull, AckPolicy, DeliverPolicy},
    context::PublishErrorKind,
    stream::Stream,
};
use bytes::Bytes;
use futures_util::StreamExt;

use super::targets::{Target, Targets};
use crate::config::{Backlog, Endpoint};
use crate::store::copy::{self, copy_headers, header_pairs, SourceFacts};
use crate::store::work_stream::{fetch_page, WorkStream};

/// At a process's first bind, how long before the process started: an endpoint
/// created just before may have been handled without by the process before it,
/// stopped before it heard of it. One older was served by that process, and copying its messages again
/// would deliver them twice wherever its copies went to another stream (the lane or
/// not) or were already released.
const RECENT_AT_START: Duration = Duration::from_secs(10);

/// Pages of the source stream read at once.
const PAGE: usize = 500;

/// The last source sequence `endpoint` skips, when it started at or after `since`:
/// the fan-out may have handled the messages after it without the endpoint. (An
/// endpoint skipping by time alone, when the stream could not be read at its
/// creation, has none.)
pub(super) fn recent_start(endpoint: &Endpoint, since: SystemTime) -> Option<u64> {
    endpoint.skip?.through_since(since)
}

/// The earliest start [`joined`] and an `ordered` endpoint's first consumer look for:
/// [`RECENT_AT_START`] before the process `started` until its first bind is done,
/// else [`Backlog::RECENT`] before now.
pub(super) fn since(first_bind: bool, started: SystemTime) -> SystemTime {
    let (from, back) = match first_bind {
        true => (started, RECENT_AT_START),
        false => (SystemTime::now(), Backlog::RECENT),
    };
    from.checked_sub(back).unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The endpoints of `current` that `before` did not know (neither copied for nor
/// reading the source stream themselves: an `ordered` endpoint's consumer there got
/// every message) and started at or after `since`: each with the last sequence it
/// skips.
pub(super) fn joined(before: &Targets, current: &Targets, since: SystemTime) -> Vec<(Target, u64)> {
    current
        .all()
        .iter()
        .filter(|w| !before.knows(&w.endpoint().name))
        .filter_map(|w| Some((w.clone(), recent_start(w.endpoint(), since)?)))
        .collect()
}

/// Copies for each of `joined` the messages of `stream` after the sequence it skips,
/// up to `through`, that it delivers under `targets`; wakes those that got copies.
/// A copy that does not fit is dealt with as the fan-out deals with one.
pub(super) async fn catch_up(
    js: &jetstream::Context,
    work: &WorkStream,
    stream: &Stream<()>,
    targets: &Targets,
    joined: &[(Target, u64)],
    through: u64,
) -> Result<(), String> {
    let Some(from) = joined.iter().map(|(_, after)| after + 1).min() else {
        return Ok(());
    };
    if from > through {
        return Ok(());
    }
    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ack_policy: AckPolicy::None,
            memory_storage: true,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("catch-up consumer: {e}"))?;
    let name = consumer.cached_info().name.clone();
    let mut copied = HashSet::new();
    let result = async {
        let mut next = from;
        while next <= through {
            let mut page = fetch_page(&consumer, PAGE).await?;
            let mut got = 0;
            while let Some(msg) = page.next().await {
                let msg = msg.map_err(|e| e.to_string())?;
                got += 1;
                let info = msg.info().map_err(|e| e.to_string())?;
                next = info.stream_sequence + 1;
                if info.stream_sequence > through {
                    break;
                }
                let facts = SourceFacts::of_source(&msg, &info);
                let Some(mapped) = targets
                    .router()
                    .route(&facts.subject, header_pairs(&msg, false))
                else {
                    continue;
                };
                for worker in targets.of(&mapped) {
                    let wanted = joined
                        .iter()
                        .any(|(w, after)| w.same(worker) && facts.sequence > *after);
                    if !wanted {
                        continue;
                    }
                    let endpoint = &worker.endpoint().name;
                    let headers = copy_headers(msg.headers.as_ref(), &facts, endpoint);
                    // Where the fan-out puts its copies for it, so that a message
                    // copied both ways is one message of one stream.
                    let (subject, _) =
                        super::copy_subject(js, work, worker, &headers, msg.payload.len());
                    let published = js
                        .publish_with_headers(subject, headers, msg.payload.clone())
                        .await;
                    let stored = match published {
                        // As the fan-out does for one that does not fit: otherwise
                        // every catch-up after this one would fail here.
                        Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                            let reason = copy::too_large(&e);
                            match worker.worker() {
                                Some(w) => {
                                    if !w.dead_letter_uncopied(&msg, 0, &reason).await {
                                        return Err(format!("{endpoint}: the dead letter of a message whose copy does not fit was not written"));
                                    }
                                    continue;
                                }
                                None if !super::keeps_acked(js, &facts.stream).await => Err(e),
                                None => {
                                    let h = copy::uncopied_headers(
                                        msg.headers.as_ref(),
                                        &facts,
                                        endpoint,
                                        &reason,
                                    );
                                    (js.publish_with_headers(work.subject(endpoint), h, Bytes::new()))
                                        .await
                                }
                            }
                        }
                        published => published,
                    };
                    stored
                        .map_err(|e| e.to_string())?
                        .await
                        .map_err(|e| e.to_string())?;
                    copied.insert(endpoint.clone());
                }
            }
            if got == 0 {
                break;
            }
        }
        Ok(())
    }
    .await;
    let _ = stream.delete_consumer(&name).await;
    for (worker, _) in joined {
        if copied.contains(&worker.endpoint().name) {
            tracing::info!(endpoint = %worker.endpoint().name, "copied what arrived between its creation and the fan-out serving it");
            worker.wake();
        }
    }
    result
}
