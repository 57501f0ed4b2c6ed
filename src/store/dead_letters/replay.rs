//! Replay: dead letters delivered again, with the same id and the next attempt
//! number, each record removed only after its receiver accepted it.

use std::time::SystemTime;

use bytes::Bytes;
use serde::Serialize;

use super::{DeadLetter, DeadLetterError, DeadLetters};
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
    /// Delivers the endpoint's matching records again, with the same id and the next
    /// attempt number; each record is removed only after a 2xx.
    pub async fn replay(
        &self,
        deliverer: &Deliverer,
        filter: &ReplayFilter,
    ) -> Result<ReplaySummary, DeadLetterError> {
        let endpoint = deliverer.endpoint().clone();
        let records = self.list(Some(&endpoint.name), usize::MAX).await?;
        let mut summary = ReplaySummary::default();
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
            let delivered = match self.payload(r).await {
                Ok(payload) => replay_one(deliverer, r, &payload).await,
                Err(e) => Err(e.to_string()),
            };
            match delivered {
                Ok(()) => {
                    self.remove(&stored).await?;
                    summary.replayed.push(r.id.clone());
                }
                Err(reason) => summary.failures.push((r.id.clone(), reason)),
            }
        }
        Ok(summary)
    }
}

async fn replay_one(deliverer: &Deliverer, r: &DeadLetter, payload: &Bytes) -> Result<(), String> {
    // The endpoint's tenant may have changed since the record was written: a record
    // never goes to another tenant's receiver.
    let tenant = deliverer.endpoint().tenant.as_deref();
    if !tenant_admits(tenant, r.tenant.as_deref()) {
        return Err(format!(
            "the record's tenant ({}) is not the endpoint's tenant ({}); kept",
            r.tenant.as_deref().unwrap_or("none"),
            tenant.unwrap_or("none")
        ));
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
