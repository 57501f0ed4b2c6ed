//! The admin API (`/api/…` on natshook's `[http]` listener): endpoint state, the delivery
//! log, test pings, pause/resume and dead-letter replay. Off unless
//! `[admin] enabled = true`; every route needs `Authorization: Bearer <token>`.
//! The routes are described in `docs/openapi.yaml`.
//!
//! An axum `Router` serves it, called as a tower service from natshook's own listener
//! (so the connection limits of `http::listener` apply to it like to every route);
//! `error` has the one error shape every failure answers in, routing's own
//! `404`/`405` and the extractors' rejections included.

mod endpoints;
mod error;
mod registry;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response as AxumResponse};
use axum::routing::{get, post};
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tower_service::Service;

use super::AppView;
use crate::name_marks::NameMarks;
use crate::secret::Secret;

use error::{ApiError, ApiPath, ApiQuery, JsonBody};

/// Largest request body the admin API reads.
const MAX_BODY: usize = 64 * 1024;

/// What every handler reads.
#[derive(Clone)]
struct AdminState {
    app: Arc<dyn AppView>,
    /// Names a create is under way for in this process: a second create of one waits
    /// its turn (`409`) rather than clearing what the first one just made.
    creating: NameMarks,
}

pub struct Admin {
    router: axum::Router,
}

/// Compares without an early exit, so response timing does not leak the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token of an `Authorization: Bearer <token>` value; the scheme's name is
/// case-insensitive (RFC 9110, 11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Refuses a request without the token before it is routed, so an unknown path tells
/// a caller without the token nothing either.
async fn require_token(State(token): State<Arc<Secret>>, req: Request, next: Next) -> AxumResponse {
    let authorized = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .is_some_and(|t| constant_time_eq(t.as_bytes(), token.expose()));
    if !authorized {
        return ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")
            .into_response();
    }
    next.run(req).await
}

async fn no_route() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such route (see docs/openapi.yaml)",
    )
}

async fn wrong_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route (see docs/openapi.yaml)",
    )
}

impl Admin {
    pub fn new(app: Arc<dyn AppView>, token: Secret) -> Self {
        let state = AdminState {
            app,
            creating: NameMarks::default(),
        };
        let router = axum::Router::new()
            .route("/api/endpoints", get(registry::list).post(registry::create))
            .route(
                "/api/endpoints/{name}",
                get(registry::one)
                    .patch(registry::patch)
                    .delete(registry::delete),
            )
            .route("/api/events", get(registry::events))
            .route(
                "/api/endpoints/{name}/secret/rotate",
                post(registry::rotate),
            )
            .route(
                "/api/endpoints/{name}/deliveries",
                get(endpoints::deliveries),
            )
            .route("/api/endpoints/{name}/test", post(endpoints::test))
            .route("/api/endpoints/{name}/pause", post(endpoints::pause))
            .route("/api/endpoints/{name}/resume", post(endpoints::resume))
            .route("/api/endpoints/{name}/dlq/replay", post(endpoints::replay))
            .fallback(no_route)
            .method_not_allowed_fallback(wrong_method)
            .with_state(state)
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .layer(middleware::from_fn_with_state(
                Arc::new(token),
                require_token,
            ));
        Self { router }
    }

    /// Answers one `/api/…` request.
    pub async fn handle(&self, req: http::Request<Incoming>) -> Response<Full<Bytes>> {
        let mut router = self.router.clone();
        match router.call(trim_trailing_slash(req)).await {
            Ok(r) => full(r).await,
            Err(never) => match never {},
        }
    }
}

/// The answer to `/api/…` while the admin API is off, in the API's error shape.
pub async fn off() -> Response<Full<Bytes>> {
    full(
        ApiError::new(
            StatusCode::NOT_FOUND,
            "the admin API is off ([admin] enabled = true)",
        )
        .into_response(),
    )
    .await
}

/// The response with its body in one buffer, as natshook's listener serves them;
/// every admin answer is a small JSON document.
async fn full(response: AxumResponse) -> Response<Full<Bytes>> {
    let (parts, body) = response.into_parts();
    match body.collect().await {
        Ok(b) => Response::from_parts(parts, Full::new(b.to_bytes())),
        Err(e) => {
            tracing::warn!(error = %e, "admin API response body failed");
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        }
    }
}

/// `/api/endpoints/` is `/api/endpoints`, as it always was.
fn trim_trailing_slash<B>(mut req: http::Request<B>) -> http::Request<B> {
    let path = req.uri().path();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = path.trim_end_matches('/');
        let pq = match req.uri().query() {
            Some(q) => format!("{trimmed}?{q}"),
            None => trimmed.to_string(),
        };
        if let Ok(pq) = http::uri::PathAndQuery::try_from(pq) {
            let mut parts = req.uri().clone().into_parts();
            parts.path_and_query = Some(pq);
            if let Ok(uri) = http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    req
}

#[cfg(test)]
mod tests {
    use super::{bearer_token, constant_time_eq};

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_nothing_else_is_a_token() {
        for value in ["Bearer t0k", "bearer t0k", "BEARER  t0k ", " Bearer t0k"] {
            assert_eq!(bearer_token(value), Some("t0k"), "{value:?}");
        }
        for value in ["Basic t0k", "Bearer", "Bearert0k", "t0k"] {
            assert_eq!(bearer_token(value), None, "{value:?}");
        }
    }
}
