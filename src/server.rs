//! natshook's own HTTP server: `/metrics`, `/healthz`, `/readyz`.
//!
//! `/healthz` answers as long as the process serves requests (liveness must not fail
//! because NATS is down, or Kubernetes would restart a healthy sidecar in a loop);
//! `/readyz` is ready only when NATS is connected and every consumer is bound.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// What the server needs to know about the rest of the process.
pub trait Status: Send + Sync + 'static {
    /// `Ok` when ready, else the reasons it is not.
    fn readiness(&self) -> Result<(), Vec<String>>;
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn route(
    req: &http::Request<Incoming>,
    metrics: &Metrics,
    status: &dyn Status,
) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            let mut r = text(StatusCode::OK, metrics.render());
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => match status.readiness() {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(reasons) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready:\n{}\n", reasons.join("\n")),
            ),
        },
        (_, "/metrics" | "/healthz" | "/readyz") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Binds now (so a taken port fails start-up) and serves until `stop`.
pub async fn serve(
    listen: SocketAddr,
    metrics: Metrics,
    status: Arc<dyn Status>,
    stop: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ServerError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| ServerError::Bind(listen, e))?;
    let local = listener
        .local_addr()
        .map_err(|e| ServerError::Bind(listen, e))?;
    let handle = tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                _ = stop.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let metrics = metrics.clone();
            let status = status.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let r = route(&req, &metrics, status.as_ref());
                    async move { Ok::<_, Infallible>(r) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Ok((local, handle))
}
