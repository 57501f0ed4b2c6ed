//! natshook's own HTTP server: `/metrics`, `/healthz`, `/readyz`, the admin API under
//! `/api/` when enabled, and whatever routes the app adds (incoming webhooks).
//!
//! `listener` is the accept loop with its connection limits, shared by every
//! listener natshook opens; `routes` answers natshook's own paths; `admin` is the
//! admin API. This layer reads the running application only through [`AppView`], so
//! it imports nothing of `app`.

mod admin;
mod listener;
mod routes;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;

pub use admin::Admin;
pub use listener::serve_with;

use crate::metrics::Metrics;
use crate::registrar::Registrar;
use crate::routing::Router;
use crate::store::dead_letters::DeadLetters;
use crate::store::delivery_log::DeliveryLog;
use crate::store::registry::KeptRecord;
use crate::worker::WorkerSet;

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// What natshook's own routes and the admin API read from the running application.
pub trait AppView: Send + Sync + 'static {
    fn metrics(&self) -> &Metrics;
    /// `Ok` when NATS is connected and every consumer is bound; otherwise the reasons.
    fn readiness(&self) -> Result<(), Vec<String>>;
    /// The endpoints' workers in force.
    fn workers(&self) -> Arc<WorkerSet>;
    fn dead_letters(&self) -> &DeadLetters;
    fn delivery_log(&self) -> Option<&DeliveryLog>;
    /// Whether `path` belongs to a route the app adds to this listener.
    fn serves(&self, path: &str) -> bool;
    /// Answers a request on such a route.
    fn handle(&self, req: http::Request<Incoming>) -> BoxFuture<'_, Response<Full<Bytes>>>;
    /// The operations on runtime endpoints, when `[registry] enabled = true` and the
    /// registry's bucket is open; checked against the config file in force.
    fn registrar(&self) -> Option<Registrar>;
    /// Whether runtime endpoints are off, being opened (their bucket not open or not
    /// read yet), or served.
    fn registry_state(&self) -> RegistryState;
    /// Whether the streams are set up and the config file's endpoints started: until
    /// then (NATS not reached) no endpoint has a worker.
    fn started(&self) -> bool;
    /// The registry's records as this process last saw them, in name order.
    fn records(&self) -> Vec<Arc<KeptRecord>>;
    /// The record `name` as this process last saw it, found without going through
    /// thousands.
    fn record(&self, name: &str) -> Option<Arc<KeptRecord>>;
    /// Why the record `name` is not served (invalid, say); `None` when it is, or is
    /// no record.
    fn unserved(&self, name: &str) -> Option<Vec<crate::config::Problem>>;
    /// Whether the config file has an endpoint named `name`.
    fn is_file_endpoint(&self, name: &str) -> bool;
    /// The revision of the registry's record `name` this process's workers run as: it
    /// follows the record's, once a change is applied.
    fn applied_revision(&self, name: &str) -> Option<u64>;
    /// Whether an endpoint named `name` was deleted and this process still finishes
    /// its deliveries or removes what it left (log, dead letters, pause).
    fn removing(&self, name: &str) -> bool;
    /// What waits for `name` while it runs nowhere (disabled): the unsettled
    /// messages of its consumer on the source stream, or with `fan_out` its copies.
    /// `None` when JetStream does not answer.
    fn waiting<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Option<i64>>;
    /// The mappings in force.
    fn router(&self) -> Arc<Router>;
}

/// Where the registry of runtime endpoints stands in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryState {
    /// No `[registry] enabled = true`.
    Off,
    /// On, but its bucket is not open yet (NATS not reached) or its records not read:
    /// what the API would say of runtime endpoints could be wrong.
    Opening,
    Open,
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

/// Binds now (so a taken port fails start-up) and serves until `stop`.
pub async fn serve(
    listen: SocketAddr,
    app: Arc<dyn AppView>,
    admin: Option<Admin>,
    stop: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ListenError> {
    let admin = admin.map(Arc::new);
    serve_with(listen, stop, move |req| {
        let app = app.clone();
        let admin = admin.clone();
        async move { routes::route(req, app.as_ref(), admin.as_deref()).await }
    })
    .await
}
