//! Replay: dead letters delivered again, with the same id and the next attempt
//! number, each record removed only after its receiver accepted it.

use std::time::SystemTime;

use async_nats::jetstream::stream::{RawMessageErrorKind, Stream};
use bytes::Bytes;
use serde::Serialize;

use super::{DeadLetter, DeadLetterError, DeadLetters, StoredDeadLetter, DLQ_STREAM};
use crate::delivery::Deliverer;
use crate::envelope::MessageFacts;
use crate::routing::tenant_admits;

/// Which records a replay takes.
#[derive(Debug, Clone, Default)]
pub struct ReplayFilter {
    /// Only the record with this id.
    pub id: Option<String>,
    /// Only records dead-lettered at or after this time.
    pub since: Option<SystemTime>,
}

/// What a replay did; `failures` holds (id, reason) of records that were kept.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplaySummary {
    pub replayed: Vec<String>,
    pub failures: Vec<(String, String)>,
}

impl DeadLetters {
    /// Delivers `endpoint`'s matching records again, with the same id and the next
    /// attempt number; each record is removed only after a 2xx. `sender` gives the
    /// endpoint as served now, asked before each record: a replay of thousands of
    /// records may outlast a change of its URL, secret or tenant, and must stop when
    /// it is disabled, deleted or paused until resumed (`None`: the rest are kept).
    pub async fn replay(
        &self,
        endpoint: &str,
        sender: &(dyn Fn() -> Option<Deliverer> + Send + Sync),
        filter: &ReplayFilter,
    ) -> Result<ReplaySummary, DeadLetterError> {
        let mut summary = ReplaySummary::default();
        // A page at a time: records carry payloads of up to ~780 KB each, and a DLQ
        // of thousands must not be held in memory at once. Only the records there
        // when the replay starts: the worker may dead-letter more meanwhile.
        let stream = (self.js.get_stream(DLQ_STREAM).await)
            .map_err(|e| DeadLetterError::Read(e.to_string()))?;
        let end = stream.cached_info().state.last_sequence;
        let mut from = 0;
        let mut unremoved = 0;
        loop {
            let mut page = self.list_from(Some(endpoint), from, REPLAY_PAGE).await?;
            let Some(last) = page.last() else {
                break;
            };
            from = last.sequence + 1;
            let full = page.len() == REPLAY_PAGE && last.sequence < end;
            page.retain(|stored| stored.sequence <= end);
            let records = page;
            let page = Page {
                stream: &stream,
                sender,
                filter,
            };
            let served = (self.replay_page(page, records, &mut summary, &mut unremoved)).await?;
            if !full || !served {
                break;
            }
        }
        Ok(summary)
    }

    /// Replays one page; `false` once the replay ends early: the endpoint is no longer
    /// served, or [`UNREMOVED_IN_A_ROW`] records in a row were delivered but not
    /// removed (`unremoved` counts them across pages).
    async fn replay_page(
        &self,
        page: Page<'_>,
        records: Vec<StoredDeadLetter>,
        summary: &mut ReplaySummary,
        unremoved: &mut u32,
    ) -> Result<bool, DeadLetterError> {
        let Page {
            stream,
            sender,
            filter,
        } = page;
        for stored in records {
            let r = &stored.record;
            if filter.id.as_deref().is_some_and(|want| want != r.id) {
                continue;
            }
            if let Some(since) = filter.since {
                let at =
                    humantime::parse_rfc3339(&r.dead_lettered_at).unwrap_or(SystemTime::UNIX_EPOCH);
                if at < since {
                    continue;
                }
            }
            // Read a page ago: gone since, it was replayed by someone else, or its
            // endpoint deleted (with its dead letters), and one made again under the
            // name, another customer's perhaps, must not get it.
            if !still_stored(stream, stored.sequence).await? {
                continue;
            }
            let Some(deliverer) = sender() else {
                summary.failures.push((
                    r.id.clone(),
                    "the endpoint is no longer served (disabled, deleted, or paused until \
                     resumed); this record and the rest kept"
                        .into(),
                ));
                return Ok(false);
            };
            let payload = match self.payload(r).await {
                Ok(payload) => payload,
                // Another replay may have removed the record, and its stored payload
                // with it, since the check above: then it is no failure.
                Err(_) if !still_stored(stream, stored.sequence).await? => continue,
                Err(e) => {
                    summary.failures.push((r.id.clone(), e.to_string()));
                    continue;
                }
            };
            if let Err(reason) = replay_one(&deliverer, r, &payload).await {
                summary.failures.push((r.id.clone(), reason));
                continue;
            }
            // A record delivered but not removed is a failure of its own, and the
            // replay goes on; several in a row say removing does not work here (the
            // credentials may not allow it), and every record sent on would stay to
            // be sent again.
            match self.remove(&stored).await {
                Ok(()) => {
                    *unremoved = 0;
                    summary.replayed.push(r.id.clone());
                }
                Err(e) => {
                    *unremoved += 1;
                    let stop = *unremoved >= UNREMOVED_IN_A_ROW;
                    let then = match stop {
                        true => "; the replay stops here, and the rest are kept",
                        false => "",
                    };
                    summary.failures.push((
                        r.id.clone(),
                        format!("delivered, but the record was not removed ({e}): a later replay sends it again{then}"),
                    ));
                    if stop {
                        return Ok(false);
                    }
                }
            }
        }
        Ok(true)
    }
}

/// What a replay reads each page with.
struct Page<'a> {
    stream: &'a Stream,
    sender: &'a (dyn Fn() -> Option<Deliverer> + Send + Sync),
    filter: &'a ReplayFilter,
}

/// Records delivered but not removed in a row that end a replay.
const UNREMOVED_IN_A_ROW: u32 = 3;

/// Whether the record at `sequence` is still in the dead-letter stream.
async fn still_stored(stream: &Stream, sequence: u64) -> Result<bool, DeadLetterError> {
    match stream.get_raw_message(sequence).await {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(false),
        Err(e) => Err(DeadLetterError::Read(e.to_string())),
    }
}

/// Records a replay reads and delivers at a time.
const REPLAY_PAGE: usize = 100;

async fn replay_one(deliverer: &Deliverer, r: &DeadLetter, payload: &Bytes) -> Result<(), String> {
    // The endpoint's tenant may have changed since the record was written: a record
    // never goes to another tenant's receiver.
    let tenant = deliverer.endpoint().tenant.as_deref();
    if !tenant_admits(tenant, r.tenant.as_deref()) {
        // Not named: the endpoint's owner now may be another customer.
        return Err("the record is of another tenant than the endpoint's; kept".into());
    }
    let event = r.event.clone().unwrap_or_default();
    let attempt = r.attempts + 1;
    let facts = MessageFacts {
        id: &r.id,
        event: &event,
        subject: &r.subject,
        stream_sequence: r.stream_sequence,
        attempt,
        published: r.published_time(),
        payload,
        tenant: r.tenant.as_deref(),
    };
    let headers = r
        .headers
        .iter()
        .flat_map(|(k, vs)| vs.iter().map(move |v| (k.as_str(), v.as_str())));
    let result = deliverer
        .deliver(&facts, headers, false)
        .map_err(|e| e.to_string())?
        .await;
    if result.is_success() {
        Ok(())
    } else {
        Err(result.describe())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::Config;

    /// A deliverer for an endpoint of tenant `tenant` (`None`: every tenant). Its URL is
    /// a loopback port nothing listens on: a record that were sent would fail to connect.
    fn deliverer(tenant: Option<&str>) -> Deliverer {
        let tenant = tenant
            .map(|t| format!("tenant = \"{t}\"\n"))
            .unwrap_or_default();
        let text = format!(
            "[nats]\nstream = \"E\"\n[[events]]\nsubject = \"e.*\"\nevent = \"e\"\ntenant = \"{{2}}\"\n\
             [[endpoints]]\nname = \"x\"\nurl = \"http://127.0.0.1:9/\"\nallow_http = true\n\
             allow_private = true\nevents = [\"*\"]\nsecret = \"s\"\ntimeout = \"1s\"\n{tenant}"
        );
        let config = Config::from_str(&text, "toml").unwrap();
        Deliverer::new(config.endpoints[0].clone(), config.max_inflight).unwrap()
    }

    fn record(tenant: Option<&str>) -> DeadLetter {
        DeadLetter {
            endpoint: "x".into(),
            event: Some("e".into()),
            tenant: tenant.map(str::to_string),
            id: "m-1".into(),
            subject: "e.a".into(),
            stream: "E".into(),
            stream_sequence: 1,
            published: "2026-04-01T12:05:00.000Z".into(),
            attempts: 3,
            last_status: Some(500),
            last_error: None,
            response_body: String::new(),
            reason: "failed after 3 attempts".into(),
            payload: DeadLetter::encode_payload(b"{}"),
            payload_object: None,
            headers: BTreeMap::new(),
            headers_truncated: false,
            dead_lettered_at: "2026-04-01T12:06:00.000Z".into(),
            once_per_message: false,
        }
    }

    #[tokio::test]
    async fn a_record_never_goes_to_another_tenants_endpoint() {
        let payload = Bytes::from_static(b"{}");
        for (endpoint, rec) in [(Some("b"), Some("a")), (Some("b"), None)] {
            let err = replay_one(&deliverer(endpoint), &record(rec), &payload)
                .await
                .unwrap_err();
            assert!(err.contains("another tenant than the endpoint's"), "{err}");
        }
        // Its own tenant's record, or any record for an endpoint without a tenant, is
        // sent (and fails here only because nothing listens).
        for (endpoint, rec) in [(Some("a"), Some("a")), (None, Some("a")), (None, None)] {
            let err = replay_one(&deliverer(endpoint), &record(rec), &payload)
                .await
                .unwrap_err();
            assert!(!err.contains("tenant"), "{err}");
        }
        let json = serde_json::to_value(record(Some("a"))).unwrap();
        assert_eq!(json["tenant"], "a");
    }
}
