//! The admin API (`/api/…` on natshook's `[http]` listener): endpoint state, the delivery
//! log, test pings, pause/resume and dead-letter replay. Off unless
//! `[admin] enabled = true`; every route needs `Authorization: Bearer <token>`.
//! The routes are described in `docs/openapi.yaml`.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Serialize;

use super::AppView;

use crate::envelope::MessageFacts;
use crate::secret::Secret;
use crate::store::dead_letters::ReplayFilter;
use crate::worker::Worker;

/// The longest a test event waits for a `rate_limit` token before answering 429.
const TEST_TOKEN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Largest request body the admin API reads.
const MAX_BODY: usize = 64 * 1024;

pub struct Admin {
    app: Arc<dyn AppView>,
    token: Secret,
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": message.into() }))
}

/// Compares without an early exit, so response timing does not leak the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    id: Option<String>,
    since: Option<String>,
}

impl Admin {
    pub fn new(app: Arc<dyn AppView>, token: Secret) -> Self {
        Self { app, token }
    }

    fn worker(&self, name: &str) -> Option<Arc<Worker>> {
        self.app
            .workers()
            .into_iter()
            .find(|w| w.endpoint().name == name)
    }

    fn authorized(&self, req: &http::Request<Incoming>) -> bool {
        req.headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| constant_time_eq(t.trim().as_bytes(), self.token.expose()))
    }

    pub async fn handle(&self, req: http::Request<Incoming>) -> Response<Full<Bytes>> {
        if !self.authorized(&req) {
            let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
        let path = req.uri().path().trim_end_matches('/').to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let parts: Vec<&str> = path.split('/').skip(2).collect(); // after "/api"
        let method = req.method().clone();
        match (method, parts.as_slice()) {
            (Method::GET, ["endpoints"]) => {
                let states: Vec<_> = self.app.workers().iter().map(|w| w.state()).collect();
                json(StatusCode::OK, &states)
            }
            (Method::GET, ["endpoints", name]) => match self.worker(name) {
                Some(w) => json(StatusCode::OK, &w.state()),
                None => not_found(name),
            },
            (Method::GET, ["endpoints", name, "deliveries"]) => self.deliveries(name, &query).await,
            (Method::POST, ["endpoints", name, "test"]) => self.test(name).await,
            (Method::POST, ["endpoints", name, "pause"]) => match self.worker(name) {
                Some(w) => {
                    w.pause();
                    json(StatusCode::OK, &w.state())
                }
                None => not_found(name),
            },
            (Method::POST, ["endpoints", name, "resume"]) => match self.worker(name) {
                Some(w) => {
                    w.resume();
                    json(StatusCode::OK, &w.state())
                }
                None => not_found(name),
            },
            (Method::POST, ["endpoints", name, "dlq", "replay"]) => {
                let name = name.to_string();
                self.replay(&name, req).await
            }
            (_, ["endpoints", ..]) => error(
                StatusCode::NOT_FOUND,
                "no such route (see docs/openapi.yaml)",
            ),
            _ => error(
                StatusCode::NOT_FOUND,
                "no such route (see docs/openapi.yaml)",
            ),
        }
    }

    async fn deliveries(&self, name: &str, query: &str) -> Response<Full<Bytes>> {
        if self.worker(name).is_none() {
            return not_found(name);
        }
        let Some(log) = self.app.delivery_log() else {
            return error(
                StatusCode::NOT_FOUND,
                "the delivery log is off ([delivery_log] enabled = false)",
            );
        };
        let limit = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("limit="))
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(100)
            .clamp(1, 10_000);
        match log.recent(name, limit).await {
            Ok(records) => json(StatusCode::OK, &records),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }

    /// Sends a `webhook.test` event (as Svix and the seeds' platforms do) and reports
    /// what the receiver answered. Not retried, not dead-lettered, not in metrics.
    /// It takes a `rate_limit` token like a delivery (the receiver's limit counts every
    /// request), waiting for it when it is due within [`TEST_TOKEN_WAIT`]; otherwise it
    /// answers 429 at once, with `Retry-After`.
    async fn test(&self, name: &str) -> Response<Full<Bytes>> {
        let Some(w) = self.worker(name) else {
            return not_found(name);
        };
        if let Err(wait) = w.take_token_within(TEST_TOKEN_WAIT).await {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let rate = w.rate_limit().map(|r| r.to_string()).unwrap_or_default();
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                format!("endpoint '{name}' is at its rate_limit ({rate}); the next request may go in {secs} s"),
            );
            r.headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
            return r;
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
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        };
        json(
            StatusCode::OK,
            &serde_json::json!({
                "id": id,
                "success": result.is_success(),
                "status": result.status.label(),
                "http_status": result.http_status,
                "error": result.error,
                "duration_ms": result.duration.as_secs_f64() * 1000.0,
                "response_body": String::from_utf8_lossy(&result.response_body),
            }),
        )
    }

    async fn replay(&self, name: &str, req: http::Request<Incoming>) -> Response<Full<Bytes>> {
        let Some(w) = self.worker(name) else {
            return not_found(name);
        };
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("cannot read body: {e}")),
        };
        let request: ReplayRequest = if body.iter().all(u8::is_ascii_whitespace) {
            ReplayRequest::default()
        } else {
            match serde_json::from_slice(&body) {
                Ok(r) => r,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("body must be {{\"id\": …, \"since\": …}} or empty: {e}"),
                    )
                }
            }
        };
        let since = match request.since.as_deref().map(humantime::parse_rfc3339_weak) {
            None => None,
            Some(Ok(t)) => Some(t),
            Some(Err(e)) => return error(StatusCode::BAD_REQUEST, format!("since: {e}")),
        };
        let filter = ReplayFilter {
            id: request.id,
            since,
        };
        match self.app.dead_letters().replay(w.deliverer(), &filter).await {
            Ok(summary) => json(StatusCode::OK, &summary),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }
}

fn not_found(name: &str) -> Response<Full<Bytes>> {
    error(StatusCode::NOT_FOUND, format!("no endpoint named '{name}'"))
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
