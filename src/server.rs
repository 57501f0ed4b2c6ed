//! natshook's own HTTP server: `/metrics`, `/healthz`, `/readyz`, and the admin API
//! under `/api/` when enabled.
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

use crate::admin::Admin;
use crate::bridge::Supervisor;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn route(
    req: http::Request<Incoming>,
    sup: &Supervisor,
    admin: Option<&Admin>,
) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            let mut r = text(StatusCode::OK, sup.metrics().render());
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => match sup.readiness() {
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
            None => text(
                StatusCode::NOT_FOUND,
                "the admin API is off ([admin] enabled = true)\n",
            ),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Binds now (so a taken port fails start-up) and serves until `stop`.
pub async fn serve(
    listen: SocketAddr,
    sup: Arc<Supervisor>,
    admin: Option<Admin>,
    stop: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ServerError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| ServerError::Bind(listen, e))?;
    let local = listener
        .local_addr()
        .map_err(|e| ServerError::Bind(listen, e))?;
    let admin = admin.map(Arc::new);
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
            let sup = sup.clone();
            let admin = admin.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let sup = sup.clone();
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(route(req, &sup, admin.as_deref()).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Ok((local, handle))
}
