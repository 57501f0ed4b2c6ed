//! natshook's own routes: `/metrics`, `/healthz`, `/readyz`, then `/api/` and the
//! routes the app adds.
//!
//! `/healthz` answers as long as the process serves requests (liveness must not fail
//! because NATS is down, or Kubernetes would restart a healthy sidecar in a loop);
//! `/readyz` is ready only when the app says so (for `natshook run`: NATS connected,
//! the registry read, the consumers bound; see `Supervisor::readiness`).

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use super::{text, Admin, AppView};

/// Scrapes encode one at a time: at 10,000 endpoints each takes up to half a second
/// and 29 MB, and scrapers that overlap (two Prometheus servers, a retried scrape)
/// would take that many times the CPU and memory at once.
static RENDERING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

pub(super) async fn route(
    req: http::Request<Incoming>,
    app: &dyn AppView,
    admin: Option<&Admin>,
) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            // Thousands of endpoints' series take milliseconds to encode: on the
            // blocking pool that holds up no delivery (on one thread, it would hold
            // up every one).
            let metrics = app.metrics().clone();
            let Ok(one_at_a_time) = RENDERING.acquire().await else {
                return text(StatusCode::INTERNAL_SERVER_ERROR, "metrics unavailable\n");
            };
            // The encoding holds the permit, not this request: a scraper that hangs up
            // leaves it running, and the next scrape waits for it.
            let render = move || {
                let _held = one_at_a_time;
                metrics.render()
            };
            let Ok(body) = tokio::task::spawn_blocking(render).await else {
                return text(StatusCode::INTERNAL_SERVER_ERROR, "metrics unavailable\n");
            };
            let mut r = text(StatusCode::OK, body);
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => match app.readiness() {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(reasons) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready:\n{}\n", reasons.join("\n")),
            ),
        },
        (_, "/metrics" | "/healthz" | "/readyz") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n")
        }
        (_, path) if path.starts_with("/api/") => match admin {
            Some(admin) => admin.handle(req).await,
            None => super::admin::off().await,
        },
        (_, path) if app.serves(path) => app.handle(req).await,
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}
