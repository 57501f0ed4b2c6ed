//! Routes on one running endpoint: its state, delivery log, test ping, pause/resume and
//! dead-letter replay.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::State;
use axum::Json;
use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;

use super::{AdminState, ApiError, ApiPath, ApiQuery, JsonBody};
use crate::envelope::MessageFacts;
use crate::registrar::RegistrarError;
use crate::store::dead_letters::{ReplayFilter, ReplaySummary};
use crate::store::delivery_log::LogRecord;
use crate::store::registry::Record;
use crate::worker::Worker;

type ApiResult<T> = Result<Json<T>, ApiError>;

impl AdminState {
    /// The endpoint's worker in this process. A runtime endpoint that is switched off
    /// has none: `409`, saying so, rather than a `404` for an endpoint that exists.
    /// One this process has not heard of yet (created or enabled a moment ago through
    /// another replica, or just now) is read from the registry: `503` with
    /// `Retry-After`, as it is served within a second.
    async fn worker(&self, name: &str) -> Result<Arc<Worker>, ApiError> {
        if let Some(w) = self.app.workers().get(name).cloned() {
            return Ok(w);
        }
        if self.starting(Some(name)) {
            return Err(self.not_yet());
        }
        if self.is_record(name) {
            return Err(disabled(name));
        }
        match self.stored_enabled(name).await? {
            Some(true) => Err(ApiError::unavailable(format!(
                "endpoint '{name}' was created or enabled a moment ago and is not served here yet"
            ))
            .retry_after(1)),
            Some(false) => Err(disabled(name)),
            None => Err(ApiError::not_found(name)),
        }
    }

    /// Whether the registry's record of `name` is enabled, read now; `None` for a file
    /// endpoint, without a registry, or with no record.
    async fn stored_enabled(&self, name: &str) -> Result<Option<bool>, ApiError> {
        Ok(self.stored(name).await?.map(|r| r.enabled()))
    }

    /// The registry's record of `name`, read now; `None` for a file endpoint, without
    /// a registry, or with no record.
    async fn stored(&self, name: &str) -> Result<Option<Record>, ApiError> {
        let Some(registrar) = self.app.registrar() else {
            return Ok(None);
        };
        if self.app.is_file_endpoint(name) {
            return Ok(None);
        }
        match registrar.get(name).await {
            Ok(record) => Ok(Some(record)),
            Err(RegistrarError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// For the routes that send with the worker (a test event, a replay): the worker
    /// follows a change within a moment, so one disabled, deleted or changed (a new
    /// URL, say) just now must not send as it was. A file endpoint's worker is the
    /// file's.
    async fn sends_as_stored(&self, name: &str) -> Result<(), ApiError> {
        if self.app.is_file_endpoint(name) || self.app.registrar().is_none() {
            return Ok(());
        }
        let stored = self.stored(name).await?;
        // A change applies here within a moment (a watch event, a restart of the
        // worker): waited for, so that a settings page's "send test" right after an
        // edit works rather than answer 503.
        let wanted = stored.as_ref().filter(|r| r.enabled()).map(|r| r.revision);
        let mut seen = self.app.applied_revision(name);
        let deadline = tokio::time::Instant::now() + APPLY_WAIT;
        while wanted.is_some() && seen != wanted && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            seen = self.app.applied_revision(name);
        }
        match stored {
            None => Err(ApiError::not_found(name)),
            Some(r) if !r.enabled() => Err(disabled(name)),
            Some(r) if seen != Some(r.revision) => Err(ApiError::unavailable(format!(
                "endpoint '{name}' changed a moment ago and this process does not send with the change yet"
            ))
            .retry_after(1)),
            Some(_) => Ok(()),
        }
    }

    /// Whether the registry holds an endpoint named `name`, served or not, as this
    /// process last saw it.
    pub(super) fn is_record(&self, name: &str) -> bool {
        self.app.record(name).is_some()
    }
}

/// How long a test event or a replay waits for a change just stored to apply here.
const APPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

fn disabled(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        format!("endpoint '{name}' is disabled (or not served: see the log); enable it with PATCH {{\"enabled\": true}}"),
    )
}

/// Answers the endpoint as `GET` does, so a page can show it from the answer.
pub(super) async fn pause(
    State(s): State<AdminState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let w = s.worker(&name).await?;
    w.pause();
    Ok(Json(super::registry::served_view(&s, w)))
}

/// Answers as [`pause`] does.
pub(super) async fn resume(
    State(s): State<AdminState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let w = s.worker(&name).await?;
    w.resume();
    Ok(Json(super::registry::served_view(&s, w)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeliveriesQuery {
    limit: Option<usize>,
}

pub(super) async fn deliveries(
    State(s): State<AdminState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<DeliveriesQuery>,
) -> ApiResult<Vec<LogRecord>> {
    // A disabled runtime endpoint's log is still worth reading. Only its tenant's
    // records, as stored now: one moved from another tenant does not show the
    // former tenant's messages.
    let tenant = match s.stored(&name).await? {
        Some(record) => record.tenant().map(str::to_string),
        // A file endpoint may share its name with a record it shadows.
        None if s.is_record(&name) && !s.app.is_file_endpoint(&name) => {
            return Err(ApiError::not_found(&name))
        }
        None => s.worker(&name).await?.endpoint().tenant.clone(),
    };
    let Some(log) = s.app.delivery_log() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "the delivery log is off ([delivery_log] enabled = false)",
        ));
    };
    let limit = query.limit.unwrap_or(100).clamp(1, 10_000);
    log.recent(&name, tenant.as_deref(), limit)
        .await
        .map(Json)
        .map_err(ApiError::unavailable)
}

/// The longest a test event waits for a `rate_limit` token before answering 429.
const TEST_TOKEN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Sends a `webhook.test` event (as Svix and the seeds' platforms do) and reports
/// what the receiver answered. Not retried, not dead-lettered, not in metrics.
/// It takes a `rate_limit` token like a delivery (the receiver's limit counts every
/// request), waiting for it when it is due within [`TEST_TOKEN_WAIT`]; otherwise it
/// answers 429 at once, with `Retry-After`.
pub(super) async fn test(
    State(s): State<AdminState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    // Checked first: the worker taken after it runs as the stored record says.
    s.sends_as_stored(&name).await?;
    let w = s.worker(&name).await?;
    if let Err(wait) = w.take_token_within(TEST_TOKEN_WAIT).await {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let rate = w.rate_limit().map(|r| r.to_string()).unwrap_or_default();
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("endpoint '{name}' is at its rate_limit ({rate}); the next request may go in {secs} s"),
        )
        .retry_after(secs));
    }
    let now = SystemTime::now();
    let id = format!("test_{}", crate::time::unix_nanos(now));
    let payload = Bytes::from(
        serde_json::json!({"message": "natshook test event", "endpoint": name}).to_string(),
    );
    let facts = MessageFacts {
        id: &id,
        event: "webhook.test",
        subject: "natshook.test",
        stream_sequence: 0,
        attempt: 1,
        published: now,
        payload: &payload,
        // A tenant's receiver sees its tenant in the test event as in real ones.
        tenant: w.deliverer().endpoint().tenant.as_deref(),
    };
    let result = match w.deliverer().deliver(&facts, [], false) {
        Ok(send) => send.await,
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                e.to_string(),
            ))
        }
    };
    Ok(Json(serde_json::json!({
        "id": id,
        "success": result.is_success(),
        "status": result.status.label(),
        "http_status": result.http_status,
        "error": result.error,
        "duration_ms": result.duration.as_secs_f64() * 1000.0,
        "response_body": result.response_text(),
    })))
}

/// A key left out means "every record"; `null` is refused rather than read as left
/// out: a script's `{"id": $ID}` with `ID` unset would otherwise replay them all.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReplayRequest {
    #[serde(default, deserialize_with = "not_null")]
    id: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    since: Option<String>,
}

fn not_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

pub(super) async fn replay(
    State(s): State<AdminState>,
    ApiPath(name): ApiPath<String>,
    JsonBody(request): JsonBody<ReplayRequest>,
) -> ApiResult<ReplaySummary> {
    // Checked first: the worker taken after it runs as the stored record says.
    s.sends_as_stored(&name).await?;
    if let Some(reason) = s.worker(&name).await?.held_until_resumed() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("endpoint '{name}' is paused ({reason}); resume it (POST /api/endpoints/{name}/resume) to replay its dead letters"),
        ));
    }
    let since = match request.since.as_deref().map(humantime::parse_rfc3339_weak) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("since: {e}: give a time in UTC, RFC 3339 (e.g. \"2026-01-31T09:00:00Z\"), from which on records are replayed"),
            ))
        }
    };
    let filter = ReplayFilter {
        id: request.id,
        since,
    };
    // The endpoint as served at each record: a reload or a change through the API
    // may replace its worker while the replay runs.
    let sender = || {
        (s.app.workers().get(&name))
            .filter(|w| w.held_until_resumed().is_none())
            .map(|w| w.deliverer().clone())
    };
    s.app
        .dead_letters()
        .replay(&name, &sender, &filter)
        .await
        .map(Json)
        .map_err(ApiError::unavailable)
}
