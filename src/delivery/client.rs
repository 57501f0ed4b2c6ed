//! The HTTP client of endpoints of one shape: a pooled hyper-util client whose connector
//! resolves names through the SSRF guard, or tunnels through the endpoint's proxy
//! (`delivery::proxy`), and speaks TLS with the endpoint's settings.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex, OnceLock, Weak};

use arc_swap::ArcSwap;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use super::proxy::Route;
use crate::config::{Endpoint, Proxy, TlsFiles};
use crate::file_read::{repeated_read, Reading};
use crate::pem::{PemError, PemFile};
use crate::ssrf::GuardedResolver;

/// Largest response head (status line and headers) accepted; a larger one fails the
/// attempt with "message head is too large".
const RESPONSE_HEAD_LIMIT: usize = 64 * 1024;

type Connector = HttpsConnector<Route>;

type HttpClient = Client<Shared, Full<Bytes>>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The connector behind one `Arc`. hyper-util's client clones its connector for
/// every request, to connect in case no pooled connection is free, and drops the
/// clone when one is: the TLS connector around the SSRF guard or proxy route is
/// several reference counts to take and give back each time, which this makes one.
/// It is cloned in full only to make a connection.
#[derive(Clone)]
pub(super) struct Shared(Arc<Connector>);

impl Service<Uri> for Shared {
    type Response = <Connector as Service<Uri>>::Response;
    type Error = BoxError;
    type Future = <Connector as Service<Uri>>::Future;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness belongs to the clone that connects (see `call`).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let mut connector = (*self.0).clone();
        // The connectors under it (hyper-util's HTTP connector with natshook's
        // `GuardedResolver`, or its tunnel) are always ready; one that was not would
        // fail this connection, not hang it.
        match connector.poll_ready(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Ok(())) => connector.call(dst),
            Poll::Ready(Err(e)) => Box::pin(std::future::ready(Err(e))),
            Poll::Pending => Box::pin(std::future::ready(Err("connector not ready".into()))),
        }
    }
}

/// Why a client could not be built.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error(transparent)]
    File(#[from] PemError),
}

/// What makes two endpoints' clients interchangeable: the same scheme, connect
/// timeout, SSRF policy, proxy and TLS files. It holds everything a client is built
/// from, so a client can be built again from its shape alone.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Shape {
    https: bool,
    timeout: Duration,
    max_idle: usize,
    target: crate::ssrf::TargetPolicy,
    proxy: Option<Proxy>,
    tls: TlsFiles,
}

impl Shape {
    fn of(endpoint: &Endpoint, max_idle: usize) -> Shape {
        Shape {
            https: endpoint.url.scheme() == Some(&http::uri::Scheme::HTTPS),
            timeout: endpoint.timeout,
            max_idle: max_idle.max(1),
            target: endpoint.target.clone(),
            proxy: endpoint.proxy.clone(),
            tls: endpoint.tls.clone(),
        }
    }

    fn has_files(&self) -> bool {
        self.tls != TlsFiles::default()
    }

    /// The TLS files as they are now.
    fn read(&self, reads: &mut Reads) -> Result<TlsContents, PemError> {
        let mut read = |f: &Option<PathBuf>| f.as_deref().map(|p| reads.file(p)).transpose();
        let tls = &self.tls;
        Ok(TlsContents {
            ca: read(&tls.ca_file)?,
            cert: read(&tls.cert_file)?,
            key: read(&tls.key_file)?,
        })
    }
}

/// The TLS files read in one go, by path: shapes that share a file (a `[defaults]
/// ca_file` under several `timeout`s) read it once.
#[derive(Default)]
struct Reads(HashMap<PathBuf, Result<Arc<PemFile>, PemError>>);

impl Reads {
    fn file(&mut self, path: &std::path::Path) -> Result<Arc<PemFile>, PemError> {
        self.0
            .entry(path.to_path_buf())
            .or_insert_with(|| PemFile::read(path).map(Arc::new))
            .clone()
    }
}

/// A shape's TLS files as read, each `None` when not set.
#[derive(Default)]
struct TlsContents {
    ca: Option<Arc<PemFile>>,
    cert: Option<Arc<PemFile>>,
    key: Option<Arc<PemFile>>,
}

/// The digests of a shape's TLS files. A client is built again only when they differ
/// from those of the files it loaded: a file written again with the same bytes (a
/// `touch`, a Secret synced unchanged) keeps the pool's connections, and what a file
/// holds is compared, not when it was written, which a clock too coarse for two quick
/// writes could hide.
type FileDigests = [Option<[u8; 32]>; 3];

impl TlsContents {
    fn none(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }

    fn digests(&self) -> FileDigests {
        [&self.ca, &self.cert, &self.key].map(|f| f.as_ref().map(|f| f.digest()))
    }
}

/// The client of one shape, built again when one of its TLS files holds something
/// else: a certificate renewed in place (cert-manager, a rotated Kubernetes Secret)
/// reaches every endpoint of the shape without a restart. Requests already sent
/// finish on the client they started on; its pooled connections close when the last
/// one ends, and new connections present and verify the new files.
pub(super) struct ShapeClient {
    shape: Shape,
    current: ArcSwap<Built>,
    /// The last failed build, which was logged: a broken file (or a key written
    /// before its certificate) is tried again at every check, since a read can fail
    /// for a moment, and reported once for each content and error.
    failed: Mutex<Option<Failure>>,
}

/// The digests of the files a build failed on (`None` when one could not be read),
/// and its error.
type Failure = (Option<FileDigests>, String);

/// What a check of a client's files did.
enum Renewal {
    Unchanged,
    Renewed,
    Failed {
        error: ClientError,
        /// Whether this failure was logged already.
        reported: bool,
    },
}

/// A client and the digests of the files it loaded.
struct Built {
    client: HttpClient,
    files: FileDigests,
}

impl Built {
    fn load(shape: &Shape, files: &TlsContents) -> Result<Built, ClientError> {
        let client = build_with(shape, files, Liveness::of(shape))?;
        Ok(Built {
            client,
            files: files.digests(),
        })
    }
}

impl ShapeClient {
    /// Sends `request` through the current client.
    pub(super) fn request(&self, request: http::Request<Full<Bytes>>) -> ResponseFuture {
        self.current.load().client.request(request)
    }

    /// Builds the client again when its files hold something else than the current
    /// one loaded. A failed read or build leaves the current client in place.
    fn renew(&self, reads: &mut Reads) -> Renewal {
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        let (read, built) = match self.shape.read(reads) {
            Ok(files) => {
                let digests = files.digests();
                if digests == self.current.load().files {
                    *failed = None;
                    return Renewal::Unchanged;
                }
                (Some(digests), Built::load(&self.shape, &files))
            }
            Err(e) => (None, Err(e.into())),
        };
        match built {
            Ok(built) => {
                self.current.store(Arc::new(built));
                *failed = None;
                Renewal::Renewed
            }
            Err(error) => {
                let failure = (read, error.to_string());
                let reported = failed.as_ref() == Some(&failure);
                *failed = Some(failure);
                Renewal::Failed { error, reported }
            }
        }
    }
}

/// The client for `endpoint`, shared with every endpoint of the same [`Shape`] (its
/// pool keeps connections per receiver host, so sharing changes no connection): with
/// thousands of endpoints, a client each would cost more than the rest of an idle
/// endpoint. That holds for endpoints that all go through the environment's proxy or
/// trust one `[defaults] ca_file` as much as for those with neither. An endpoint that
/// joins a shape takes its client as it is: TLS files changed since are loaded by
/// [`renew_on_tls_file_changes`] for all of them, off the runtime's threads.
///
/// A shared pool keeps up to `max_inflight` idle connections per host, the most that
/// endpoints sharing it can use at once: many endpoints of one receiver host (a
/// platform's customers behind one gateway) together run far more requests than one
/// endpoint's `concurrency`, and a pool capped at that would close most connections
/// after their request and open new ones (a sixth of all requests, measured with a
/// thousand endpoints of one host). It never holds more than were in use at once.
pub(super) fn shared(
    endpoint: &Endpoint,
    max_inflight: usize,
) -> Result<Arc<ShapeClient>, ClientError> {
    client_of(Shape::of(endpoint, max_inflight))
}

/// The client of `shape`, built when there is none. The files are read and parsed
/// outside the table's lock, which the renewal task and other endpoints' starts take.
fn client_of(shape: Shape) -> Result<Arc<ShapeClient>, ClientError> {
    if let Some(client) = clients().alive(&shape) {
        return Ok(client);
    }
    let built = Built::load(&shape, &shape.read(&mut Reads::default())?)?;
    let mut clients = clients();
    // Another start may have built one meanwhile: every endpoint of a shape shares one.
    if let Some(client) = clients.alive(&shape) {
        return Ok(client);
    }
    clients.sweep();
    let client = Arc::new(ShapeClient {
        current: ArcSwap::from_pointee(built),
        failed: Mutex::new(None),
        shape: shape.clone(),
    });
    clients.by_shape.insert(shape, Arc::downgrade(&client));
    Ok(client)
}

/// How long building the client of a new shape may take before its endpoints fail to
/// start: a TLS file on a mount that hangs would otherwise hold a registry change or
/// a reload (past its own reading of the config), and the shutdown waiting on it.
const READY_WAIT: Duration = Duration::from_secs(10);

/// The clients of a set of endpoints, or why one could not be built, made ahead of
/// their deliverers; alive while this is held.
pub struct ReadyClients {
    max_inflight: usize,
    by_shape: HashMap<Shape, Result<Arc<ShapeClient>, ClientError>>,
}

impl ReadyClients {
    /// `endpoint`'s client as made ready (an endpoint not among those given is set
    /// up as [`shared`] does).
    pub(super) fn client(&self, endpoint: &Endpoint) -> Result<Arc<ShapeClient>, ClientError> {
        match self.by_shape.get(&Shape::of(endpoint, self.max_inflight)) {
            Some(made) => made.clone(),
            None => shared(endpoint, self.max_inflight),
        }
    }
}

/// The clients of `endpoints`: those of shapes alive, held, and those of new shapes
/// built on the blocking pool, so that
/// [`Deliverer::with_ready`](super::Deliverer::with_ready) reads no TLS file on a
/// runtime thread. Reads of TLS files take the secrets' permits; a shape whose build
/// has not ended after [`READY_WAIT`] fails alone.
pub async fn ready_clients<'a>(
    endpoints: impl IntoIterator<Item = &'a Endpoint>,
    max_inflight: usize,
) -> ReadyClients {
    ready_within(endpoints, max_inflight, READY_WAIT).await
}

async fn ready_within<'a>(
    endpoints: impl IntoIterator<Item = &'a Endpoint>,
    max_inflight: usize,
    wait: Duration,
) -> ReadyClients {
    let shapes: HashSet<Shape> = endpoints
        .into_iter()
        .map(|e| Shape::of(e, max_inflight))
        .collect();
    let mut by_shape = HashMap::new();
    let mut missing = Vec::new();
    {
        let clients = clients();
        for shape in shapes {
            match clients.alive(&shape) {
                Some(client) => {
                    by_shape.insert(shape, Ok(client));
                }
                None => missing.push(shape),
            }
        }
    }
    let deadline = tokio::time::Instant::now() + wait;
    let builds = missing.into_iter().map(|shape| async move {
        let key = shape.clone();
        let build = move || client_of(shape);
        let built = if key.has_files() {
            tokio::time::timeout_at(deadline, repeated_read(Reading::Secrets, build)).await
        } else {
            let spawned = tokio::task::spawn_blocking(build);
            tokio::time::timeout_at(deadline, async { spawned.await.ok() }).await
        };
        let made = match built {
            Ok(Some(made)) => made,
            Ok(None) => Err(ClientError::Tls("building the client failed".into())),
            Err(_) => Err(ClientError::Tls(format!(
                "reading the TLS files took over {wait:?}"
            ))),
        };
        (key, made)
    });
    by_shape.extend(futures_util::future::join_all(builds).await);
    ReadyClients {
        max_inflight,
        by_shape,
    }
}

fn clients() -> std::sync::MutexGuard<'static, Clients> {
    static CLIENTS: LazyLock<Mutex<Clients>> = LazyLock::new(Mutex::default);
    CLIENTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads the TLS files of every client alive every `every` until `stop`, and builds
/// again the clients whose files hold something else: `{ file }` secrets are re-read
/// the same way. The files are read on the blocking pool, with the secrets' permits, so a hung
/// mount holds no runtime thread.
pub async fn renew_on_tls_file_changes(every: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        // Weak: a shape whose endpoints all go while a read hangs is not kept alive.
        let with_files: Vec<Weak<ShapeClient>> = clients()
            .by_shape
            .iter()
            .filter(|(shape, _)| shape.has_files())
            .map(|(_, client)| Weak::clone(client))
            .collect();
        if with_files.is_empty() {
            continue;
        }
        let renewed = repeated_read(Reading::Secrets, move || {
            let mut reads = Reads::default();
            for client in with_files.iter().filter_map(Weak::upgrade) {
                log_renewal(&client.shape.tls, client.renew(&mut reads));
            }
        });
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = renewed => {}
        }
    }
}

fn log_renewal(tls: &TlsFiles, renewal: Renewal) {
    let file = |f: &Option<std::path::PathBuf>| {
        f.as_deref()
            .map_or_else(String::new, |p| p.display().to_string())
    };
    let (ca_file, cert_file, key_file) = (
        file(&tls.ca_file),
        file(&tls.cert_file),
        file(&tls.key_file),
    );
    match renewal {
        Renewal::Unchanged | Renewal::Failed { reported: true, .. } => {}
        Renewal::Renewed => tracing::info!(
            ca_file,
            cert_file,
            key_file,
            "TLS file changed; new connections use it"
        ),
        Renewal::Failed { error, .. } => tracing::warn!(
            ca_file,
            cert_file,
            key_file,
            error = %error,
            "cannot load a changed TLS file; keeping the client that loaded the earlier one"
        ),
    }
}

/// The clients alive, by shape.
#[derive(Default)]
struct Clients {
    by_shape: HashMap<Shape, Weak<ShapeClient>>,
    /// How many shapes the next sweep waits for.
    sweep_at: usize,
}

impl Clients {
    fn alive(&self, shape: &Shape) -> Option<Arc<ShapeClient>> {
        self.by_shape.get(shape).and_then(Weak::upgrade)
    }

    /// Drops the shapes of clients gone once there are twice as many shapes as after
    /// the last sweep: the table stays within twice the clients alive (and 16), at a
    /// constant cost per client made.
    fn sweep(&mut self) {
        if self.by_shape.len() < self.sweep_at {
            return;
        }
        self.by_shape.retain(|_, c| c.strong_count() > 0);
        self.sweep_at = (2 * self.by_shape.len()).max(16);
    }
}

/// Whether a request failed because the receiver went silent: an HTTP/2 PING left
/// unanswered ([`Liveness::ping_timeout`]).
pub(super) fn timed_out(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout)
        {
            return true;
        }
        source = s.source();
    }
    false
}

/// How the pool tells a connection worth keeping from one to drop.
#[derive(Clone, Copy)]
struct Liveness {
    /// How long a pooled connection may sit idle before it is closed. The pool's timer
    /// closes it: without one, hyper-util drops an idle connection only when a later
    /// request goes to the same host, so every host ever delivered to (a customer's
    /// URL changed again and again, many tenants' hosts) would keep its connections,
    /// and their descriptors, for good.
    idle: Duration,
    /// An HTTP/2 connection that has received nothing for this long is sent a PING,
    /// idle or not. Every request to a host shares its one HTTP/2 connection, so one
    /// that died without a word (a receiver's node gone, a NAT's state dropped) would
    /// time out every attempt to the host until TCP gives up, many minutes later,
    /// spending the messages' attempts; an HTTP/1 connection is dropped with the
    /// first request that times out on it.
    ping_after: Duration,
    /// How long the PING's answer may take before the connection is closed, failing
    /// the requests on it, and the next request opens a new one: the endpoint's
    /// `timeout`, and at least 10 s, so that a receiver whose HTTP/2 layer stalls
    /// (a blocked event loop) fails no request sooner than its timeout would.
    ping_timeout: Duration,
}

impl Liveness {
    const DEFAULT: Liveness = Liveness {
        idle: Duration::from_secs(90),
        ping_after: Duration::from_secs(20),
        ping_timeout: Duration::from_secs(10),
    };

    fn of(shape: &Shape) -> Liveness {
        Liveness {
            ping_timeout: shape.timeout.max(Liveness::DEFAULT.ping_timeout),
            ..Liveness::DEFAULT
        }
    }
}

/// A pooled client of `shape`: its connect timeout, up to `max_idle` idle connections
/// per host, names resolved through the SSRF guard (or the proxy's tunnel), its TLS
/// files loaded.
fn build_with(
    shape: &Shape,
    files: &TlsContents,
    liveness: Liveness,
) -> Result<HttpClient, ClientError> {
    let route = match &shape.proxy {
        None => {
            let resolver = GuardedResolver::new(shape.target.clone());
            Route::direct(tcp(
                HttpConnector::new_with_resolver(resolver),
                shape.timeout,
            ))
        }
        Some(proxy) => Route::tunnel(proxy, to_proxy(proxy, shape.timeout)?, shape.target.clone()),
    };
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(files, shape.https)?)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(route);
    // Queued writes send the body from its own buffer (writev) instead of
    // copying it behind the headers. The read buffer starts at 8 KiB and may grow
    // to RESPONSE_HEAD_LIMIT: a fixed buffer would also cap the response head, and
    // a receiver behind a proxy can answer 200 with more than 8 KiB of headers.
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(liveness.idle)
        .timer(TokioTimer::new())
        .http2_keep_alive_interval(liveness.ping_after)
        .http2_keep_alive_timeout(liveness.ping_timeout)
        .http2_keep_alive_while_idle(true)
        .pool_max_idle_per_host(shape.max_idle)
        .http1_writev(true)
        .http1_max_buf_size(RESPONSE_HEAD_LIMIT)
        .build(Shared(Arc::new(connector))))
}

fn tcp<R>(mut http: HttpConnector<R>, timeout: Duration) -> HttpConnector<R> {
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(timeout));
    http
}

/// The connection to a proxy: TLS with the system roots when its URL is `https`
/// (HTTP/1.1 only, as CONNECT needs), plain otherwise.
fn to_proxy(
    proxy: &Proxy,
    timeout: Duration,
) -> Result<HttpsConnector<HttpConnector>, ClientError> {
    let https = proxy.uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(&TlsContents::default(), https)?)
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp(HttpConnector::new(), timeout)))
}

/// System roots, or only the endpoint's `ca_file` when set (a private CA should not
/// also trust the public ones); a client certificate when configured.
/// `https` is false for a plain `http://` endpoint, whose TLS settings are never used:
/// it gets no roots, so an HTTP-only sidecar never reads and keeps the system's
/// certificate bundle, which costs start-up time and memory.
fn tls_config(files: &TlsContents, https: bool) -> Result<rustls::ClientConfig, ClientError> {
    if files.none() {
        return shared_tls_config(https);
    }
    new_tls_config(files, https)
}

/// The configuration of every endpoint without TLS files of its own, built once and
/// cloned (a clone shares the provider, the roots and the session cache): with
/// thousands of endpoints, one each would cost more than the rest of an idle endpoint.
fn shared_tls_config(https: bool) -> Result<rustls::ClientConfig, ClientError> {
    static SHARED: [OnceLock<rustls::ClientConfig>; 2] = [OnceLock::new(), OnceLock::new()];
    let slot = &SHARED[usize::from(https)];
    if let Some(c) = slot.get() {
        return Ok(c.clone());
    }
    let built = new_tls_config(&TlsContents::default(), https)?;
    Ok(slot.get_or_init(|| built).clone())
}

fn new_tls_config(files: &TlsContents, https: bool) -> Result<rustls::ClientConfig, ClientError> {
    let roots = match &files.ca {
        None if !https => Arc::new(rustls::RootCertStore::empty()),
        None => system_roots(),
        Some(ca) => Arc::new(ca.roots()?),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let config = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(cert.certificates()?, key.private_key()?)
            .map_err(|e| {
                ClientError::Tls(format!(
                    "client certificate {} with key {}: {e}",
                    cert.path().display(),
                    key.path().display()
                ))
            })?,
        _ => builder.with_no_client_auth(),
    };
    Ok(config)
}

/// The system roots, loaded once: parsing them per endpoint would cost memory and
/// start-up time per endpoint for identical data.
pub(crate) fn system_roots() -> Arc<rustls::RootCertStore> {
    static ROOTS: OnceLock<Arc<rustls::RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            // A single unparsable system certificate should not disable TLS entirely.
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if roots.is_empty() {
                tracing::warn!(
                    "no system CA certificates found; https endpoints will fail to verify"
                );
            }
            Arc::new(roots)
        })
        .clone()
}

#[cfg(test)]
mod tests;
