//! Incoming webhooks: verified HTTP in → JetStream, the reverse of the bridge.
//!
//! Each `[[ingress.routes]]` entry is a URL path with its own signature check and a
//! subject template. A request is answered `2xx` only after JetStream acked the
//! publish, so a `2xx` means stored; everything else is an error status a provider
//! retries (`503`) or gives up on (`4xx`), so nothing is lost between the two.
//!
//! Order of checks, cheapest first and verification before anything is derived from
//! the request: path (`404`), method (`405`), declared size (`413`), signature
//! headers present (`401`), body read within `max_body` (`413`), signature and
//! timestamp (`401`), subject (`400`), NATS connected (`503`), publish ack (`503`).
//! The route table is swapped whole on reload, so a request sees one table.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use async_nats::connection::State;
use async_nats::jetstream::{self, context::PublishErrorKind};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::{HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

pub use crate::config::{IngressConfig, Route, Verify};

use crate::backoff::Backoff;
use crate::config::NatsConfig;
use crate::http::text;
use crate::metrics::{IngressOutcome, IngressRouteMetrics, Metrics, INGRESS_UNMATCHED_ROUTE};
use crate::routing::Pattern;
use crate::signing::{
    Scheme, TIMESTAMP_TOLERANCE, WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP,
};
use crate::subject_template::Values;

/// What a `503` asks the sender to wait before retrying (most providers retry on
/// their own schedule anyway).
const RETRY_AFTER_SECS: &str = "5";

/// Longest wait for a request body: a sender trickling bytes holds a connection and
/// up to `max_body` of memory, so it gets `408` instead of unbounded patience.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes of request bodies held at once, over every route: what each request may
/// hold (its declared `Content-Length`, else its route's `max_body`) is set aside
/// before its body is read, and a request that finds no room gets `503` at once. The
/// connection cap alone would let one client hold 128 connections × 32 HTTP/2
/// streams × `max_body` (4 GiB at the default 1 MiB).
const BODY_BUDGET: u32 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("no JetStream stream captures {0} (create one over these subjects, or set nats.create_stream = true to add them to nats.stream)")]
    NoStream(String),
    #[error("cannot add ingress subjects {subjects} to stream {stream}: {error}")]
    ExtendStream {
        stream: String,
        subjects: String,
        error: String,
    },
    #[error("stream(s) {streams} capture only part of ingress subject {subject}; widen one stream's subjects to {subject}")]
    Partial { subject: String, streams: String },
    #[error("cannot list the JetStream streams to check the ingress subjects: {0}")]
    Lookup(String),
}

/// A route and its metric children.
struct Live {
    route: Route,
    metrics: IngressRouteMetrics,
}

/// The routes in force: exact paths by hash, `*` paths in config order.
struct Table {
    routes: Vec<Live>,
    exact: HashMap<String, usize>,
    wildcard: Vec<usize>,
    publish_timeout: Duration,
}

impl Table {
    fn new(config: &IngressConfig, metrics: &Metrics) -> Self {
        let mut t = Table {
            routes: Vec::with_capacity(config.routes.len()),
            exact: HashMap::new(),
            wildcard: Vec::new(),
            publish_timeout: config.publish_timeout,
        };
        for (i, route) in config.routes.iter().enumerate() {
            if route.path.is_exact() {
                t.exact.insert(route.path.as_str().to_string(), i);
            } else {
                t.wildcard.push(i);
            }
            t.routes.push(Live {
                metrics: metrics.ingress_route(route.path.as_str()),
                route: route.clone(),
            });
        }
        t
    }

    fn find(&self, path: &str) -> Option<&Live> {
        match self.exact.get(path) {
            Some(&i) => self.routes.get(i),
            None => self
                .wildcard
                .iter()
                .map(|&i| &self.routes[i])
                .find(|l| l.route.path.matches(path)),
        }
    }
}

/// The ingress handler, shared by the listener(s) and the supervisor (for reload).
pub struct Ingress {
    table: ArcSwap<Table>,
    js: jetstream::Context,
    client: async_nats::Client,
    metrics: Metrics,
    unmatched: IngressRouteMetrics,
    /// The dedicated listener natshook started with (`None`: the `[http]` one). A
    /// change needs a restart.
    listen: Option<SocketAddr>,
    nats: NatsConfig,
    /// [`BODY_BUDGET`], one permit per byte.
    bodies: Arc<Semaphore>,
}

/// An outcome for the metrics and the response that says it.
type Answer = (IngressOutcome, Response<Full<Bytes>>);

fn answer(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    text(status, body)
}

fn unavailable(why: &str) -> Answer {
    let mut r = answer(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("not stored ({why}); retry later\n"),
    );
    r.headers_mut().insert(
        http::header::RETRY_AFTER,
        HeaderValue::from_static(RETRY_AFTER_SECS),
    );
    (IngressOutcome::Unavailable, r)
}

/// Why a request is refused before it is published: the rows of the answer table
/// that need no NATS.
enum Refusal {
    NotPost,
    TooLarge(usize),
    Unverified(String),
    BodyTimeout,
    BodyUnreadable,
    NoSubject(String),
}

impl Refusal {
    fn answer(self) -> Answer {
        match self {
            Refusal::NotPost => {
                let mut r = answer(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
                r.headers_mut()
                    .insert(http::header::ALLOW, HeaderValue::from_static("POST"));
                (IngressOutcome::MethodNotAllowed, r)
            }
            Refusal::TooLarge(max) => (
                IngressOutcome::TooLarge,
                answer(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("body larger than this route's max_body ({max} bytes)\n"),
                ),
            ),
            Refusal::Unverified(why) => (
                IngressOutcome::Unauthorized,
                answer(StatusCode::UNAUTHORIZED, format!("not verified: {why}\n")),
            ),
            Refusal::BodyTimeout => (
                IngressOutcome::BadRequest,
                answer(StatusCode::REQUEST_TIMEOUT, "body not received in time\n"),
            ),
            Refusal::BodyUnreadable => (
                IngressOutcome::BadRequest,
                answer(StatusCode::BAD_REQUEST, "body could not be read\n"),
            ),
            Refusal::NoSubject(why) => (
                IngressOutcome::BadRequest,
                answer(
                    StatusCode::BAD_REQUEST,
                    format!("cannot make the subject: {why}\n"),
                ),
            ),
        }
    }
}

impl Ingress {
    /// `client` is natshook's NATS connection; ingress publishes on its own JetStream
    /// context so its ack timeout (`publish_timeout`) does not change the consumers'.
    pub fn new(
        client: async_nats::Client,
        metrics: Metrics,
        config: &IngressConfig,
        nats: &NatsConfig,
    ) -> Self {
        let mut js = jetstream::new(client.clone());
        js.set_timeout(config.publish_timeout);
        Self {
            table: ArcSwap::from_pointee(Table::new(config, &metrics)),
            js,
            client,
            unmatched: metrics.ingress_route(INGRESS_UNMATCHED_ROUTE),
            metrics,
            listen: config.listen,
            nats: nats.clone(),
            bodies: Arc::new(Semaphore::new(BODY_BUDGET as usize)),
        }
    }

    /// The dedicated ingress listener, if natshook started with one.
    pub fn listen(&self) -> Option<SocketAddr> {
        self.listen
    }

    /// Whether the `[http]` listener hands `path` to ingress: only without a dedicated
    /// listener (which keeps the public port free of everything else, and the internal
    /// one free of public routes).
    pub fn serves_on_http(&self, path: &str) -> bool {
        self.listen.is_none() && self.table.load().find(path).is_some()
    }

    /// Swaps in the routes of a reloaded config and checks (in the background) that
    /// streams capture their subjects. A changed `listen` or `publish_timeout` needs a
    /// restart (the supervisor's reload reports it).
    pub fn apply(self: &Arc<Self>, config: &IngressConfig) {
        let old: Vec<String> = self
            .table
            .load()
            .routes
            .iter()
            .map(|l| l.route.path.to_string())
            .collect();
        self.table
            .store(Arc::new(Table::new(config, &self.metrics)));
        let new: Vec<String> = config.routes.iter().map(|r| r.path.to_string()).collect();
        let added: Vec<&String> = new.iter().filter(|p| !old.contains(p)).collect();
        let removed: Vec<&String> = old.iter().filter(|p| !new.contains(p)).collect();
        if !added.is_empty() || !removed.is_empty() {
            tracing::info!(?added, ?removed, "ingress routes reloaded");
        }
        let me = self.clone();
        let routes = config.routes.clone();
        tokio::spawn(async move {
            if let Err(e) = ensure_streams(&me.js, &me.nats, &routes).await {
                tracing::error!(error = %e, "ingress requests on these subjects are answered 503 until a stream captures them");
            }
        });
    }

    /// Re-reads `{ file }` secrets every `every` (as endpoints do, so a rotated
    /// Kubernetes Secret takes effect without a reload) and swaps in the routes whose
    /// keys changed. A file that cannot be read keeps the current keys.
    pub async fn watch_secrets(self: Arc<Self>, every: Duration, stop: CancellationToken) {
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let current = self.table.load_full();
            let mut changed = Vec::new();
            let mut routes: Vec<Route> = Vec::with_capacity(current.routes.len());
            let mut error = None;
            for live in &current.routes {
                let mut route = live.route.clone();
                if let (Verify::Signed(signer), true) = (
                    &route.verify,
                    route
                        .secret_refs
                        .iter()
                        .any(crate::secret::SecretRef::is_file),
                ) {
                    let fresh = route
                        .secret_refs
                        .iter()
                        .map(|r| r.resolve().map_err(|e| e.to_string()))
                        .collect::<Result<Vec<_>, _>>()
                        .and_then(|secrets| {
                            crate::signing::Signer::verifier(
                                signer.scheme(),
                                signer.header().clone(),
                                secrets,
                            )
                            .map_err(|e| e.to_string())
                        });
                    match fresh {
                        Ok(fresh) if !fresh.same_keys(signer) => {
                            changed.push(route.path.to_string());
                            route.verify = Verify::Signed(fresh);
                        }
                        Ok(_) => {}
                        Err(e) => error = Some((route.path.to_string(), e)),
                    }
                }
                routes.push(route);
            }
            match error {
                Some((route, e)) if !failing => {
                    tracing::warn!(%route, error = %e, "cannot re-read an ingress secret; keeping the current one");
                    failing = true;
                }
                Some(_) => {}
                None => failing = false,
            }
            if changed.is_empty() {
                continue;
            }
            let config = IngressConfig {
                listen: self.listen,
                publish_timeout: current.publish_timeout,
                routes,
            };
            let fresh = Arc::new(Table::new(&config, &self.metrics));
            // A reload that swapped the table meanwhile wins; the next poll sees it.
            let previous = self.table.compare_and_swap(&current, fresh);
            if Arc::ptr_eq(&previous, &current) {
                tracing::info!(routes = ?changed, "ingress secret file changed; verifying with the new secret");
            }
        }
    }

    /// Answers one request (any path: unknown ones get `404`).
    pub async fn handle(&self, req: http::Request<Incoming>) -> Response<Full<Bytes>> {
        let started = Instant::now();
        let table = self.table.load_full();
        let Some(live) = table.find(req.uri().path()) else {
            self.unmatched
                .request(IngressOutcome::NotFound, started.elapsed());
            return answer(StatusCode::NOT_FOUND, "not found\n");
        };
        let (outcome, response) = self.serve(&live.route, table.publish_timeout, req).await;
        live.metrics.request(outcome, started.elapsed());
        response
    }

    /// The answer table in order: what [`accept`] refuses (`405`, `413`,
    /// `401`, `408`, `400`), then what [`publish`](Self::publish) answers.
    async fn serve(
        &self,
        route: &Route,
        publish_timeout: Duration,
        req: http::Request<Incoming>,
    ) -> Answer {
        if let Err(refused) = check_head(route, &req) {
            return refused.answer();
        }
        // Held until the answer: the body stays in memory until JetStream has it.
        let Some(_room) = self.room_for(route, &req) else {
            return unavailable("too many request bodies at once");
        };
        match accept(route, req).await {
            Ok(message) => self.publish(route, publish_timeout, message).await,
            Err(refused) => refused.answer(),
        }
    }

    /// Sets aside what `req` may hold of [`BODY_BUDGET`]: its declared length (at most
    /// `max_body`, as `check_head` saw to), else `max_body`.
    fn room_for(
        &self,
        route: &Route,
        req: &http::Request<Incoming>,
    ) -> Option<OwnedSemaphorePermit> {
        let max = route.max_body as u64;
        let bytes = declared_length(req).map_or(max, |n| n.min(max));
        let bytes = u32::try_from(bytes)
            .unwrap_or(u32::MAX)
            .clamp(1, BODY_BUDGET);
        Arc::clone(&self.bodies).try_acquire_many_owned(bytes).ok()
    }

    /// Stores a verified message; `2xx` only once JetStream acked it.
    async fn publish(&self, route: &Route, publish_timeout: Duration, message: Message) -> Answer {
        // Published while disconnected, the message would wait in the client's buffer
        // past our answer; a quick 503 lets the sender retry instead.
        if self.client.connection_state() != State::Connected {
            return unavailable("NATS is not connected");
        }
        let Message {
            subject,
            headers,
            body,
        } = message;
        let publish = async {
            let ack = self.js.publish_with_headers(subject, headers, body).await?;
            ack.await
        };
        // The context's ack timeout is `publish_timeout`; this bound also covers a
        // publish that waits for room in the client's buffer.
        match tokio::time::timeout(publish_timeout + Duration::from_millis(250), publish).await {
            Ok(Ok(ack)) if ack.duplicate => (
                IngressOutcome::Duplicate,
                answer(StatusCode::OK, "duplicate: already stored\n"),
            ),
            Ok(Ok(_)) => (IngressOutcome::Stored, answer(StatusCode::OK, "stored\n")),
            Ok(Err(e)) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                tracing::warn!(route = %route.path, error = %e, "incoming webhook larger than the NATS server's max_payload");
                (
                    IngressOutcome::TooLarge,
                    answer(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body larger than the NATS server accepts\n",
                    ),
                )
            }
            Ok(Err(e)) => {
                tracing::warn!(route = %route.path, error = %e, "incoming webhook not stored; answered 503");
                unavailable("JetStream did not store it")
            }
            Err(_) => {
                tracing::warn!(route = %route.path, "incoming webhook: no publish ack in time; answered 503");
                unavailable("JetStream did not ack in time")
            }
        }
    }
}

/// A verified request, ready to publish.
struct Message {
    subject: String,
    headers: async_nats::HeaderMap,
    body: Bytes,
}

/// Runs the checks that need no NATS after [`check_head`], cheapest first, and
/// verifies before anything is derived from the request.
async fn accept(route: &Route, req: http::Request<Incoming>) -> Result<Message, Refusal> {
    let (parts, body) = req.into_parts();
    let body = read_body(route, body).await?;
    verify(route, &parts.headers, &body)?;
    let subject = subject(route, &parts, &body)?;
    Ok(Message {
        subject,
        headers: nats_headers(route, &parts.headers),
        body,
    })
}

/// Method, declared size and signature headers: all refused before the body is read.
fn check_head(route: &Route, req: &http::Request<Incoming>) -> Result<(), Refusal> {
    if req.method() != Method::POST {
        return Err(Refusal::NotPost);
    }
    if declared_length(req).is_some_and(|n| n > route.max_body as u64) {
        return Err(Refusal::TooLarge(route.max_body));
    }
    // Without its signature headers a request cannot verify: refuse it before
    // reading (and holding) its body.
    if let Verify::Signed(signer) = &route.verify {
        let needed: &[&http::HeaderName] = match signer.scheme() {
            Scheme::Standard => &[&WEBHOOK_ID, &WEBHOOK_TIMESTAMP, &WEBHOOK_SIGNATURE],
            Scheme::Hex | Scheme::Sha256 => &[signer.header()],
        };
        if let Some(h) = needed.iter().find(|h| !req.headers().contains_key(**h)) {
            return Err(Refusal::Unverified(format!("missing header {h}")));
        }
    }
    Ok(())
}

/// The request's `Content-Length`, when it has a usable one.
fn declared_length(req: &http::Request<Incoming>) -> Option<u64> {
    req.headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// The body, within `max_body` and [`BODY_TIMEOUT`].
///
/// Each piece is copied out as it arrives: hyper hands a piece out as a slice of its
/// read buffer, so keeping the pieces of a body sent a byte per packet would keep a
/// whole buffer (8 KiB) per byte, far beyond what the request set aside.
async fn read_body(route: &Route, body: Incoming) -> Result<Bytes, Refusal> {
    // The declared length, which the request set aside, in one allocation.
    let declared = hyper::body::Body::size_hint(&body).exact().unwrap_or(0);
    let read = async {
        let mut body = Limited::new(body, route.max_body);
        let capacity = usize::try_from(declared).unwrap_or(0).min(route.max_body);
        let mut kept = BytesMut::with_capacity(capacity);
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                kept.extend_from_slice(&data);
            }
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(kept.freeze())
    };
    match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Err(_) => Err(Refusal::BodyTimeout),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(Refusal::TooLarge(route.max_body))
        }
        Ok(Err(_)) => Err(Refusal::BodyUnreadable),
        Ok(Ok(body)) => Ok(body),
    }
}

/// Signature and timestamp, for routes that are not `scheme = "none"`.
fn verify(route: &Route, headers: &http::HeaderMap, body: &Bytes) -> Result<(), Refusal> {
    if let Verify::Signed(signer) = &route.verify {
        if let Err(e) = signer.verify_fresh(
            body,
            headers,
            crate::time::unix_secs(SystemTime::now()),
            TIMESTAMP_TOLERANCE,
        ) {
            tracing::debug!(route = %route.path, error = %e, "incoming webhook refused");
            return Err(Refusal::Unverified(e.to_string()));
        }
    }
    Ok(())
}

/// The route's subject template filled in from the verified request.
fn subject(route: &Route, parts: &http::request::Parts, body: &Bytes) -> Result<String, Refusal> {
    route
        .subject
        .render(&Values {
            headers: &parts.headers,
            path: parts.uri.path(),
            body,
        })
        .map_err(|e| {
            tracing::debug!(route = %route.path, error = %e, "incoming webhook has no usable subject");
            Refusal::NoSubject(e.to_string())
        })
}

/// The forwarded request headers, and the sender's id as `Nats-Msg-Id` so JetStream
/// drops a second copy.
fn nats_headers(route: &Route, request: &http::HeaderMap) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    for h in &route.copy_headers {
        for v in request.get_all(&h.name) {
            if let Ok(v) = v.to_str() {
                headers.append(h.written.as_str(), v);
            }
        }
    }
    let id = request
        .get(&route.id_header)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    if let Some(id) = id {
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
    }
    headers
}

/// Checks that a stream captures all of every route's subjects (the template's
/// pattern must lie within one stream subject: JetStream's own lookup by subject also
/// names streams that hold only part of it). Subjects no stream holds are added to
/// `nats.stream` when `create_stream = true` (the development convenience); otherwise
/// that is an error, since every request on them would be answered 503.
pub async fn ensure_streams(
    js: &jetstream::Context,
    nats: &NatsConfig,
    routes: &[Route],
) -> Result<(), IngressError> {
    if routes.is_empty() {
        return Ok(());
    }
    let streams = stream_subjects(js).await?;
    let missing = uncaptured(&streams, nats, routes)?;
    if missing.is_empty() {
        return Ok(());
    }
    if !nats.create_stream {
        return Err(IngressError::NoStream(joined(&missing)));
    }
    extend_stream(js, nats, &missing).await
}

/// Every stream's name and subjects.
async fn stream_subjects(
    js: &jetstream::Context,
) -> Result<Vec<(String, Vec<Pattern>)>, IngressError> {
    let mut streams = Vec::new();
    let mut list = js.streams();
    while let Some(info) = list.next().await {
        let info = info.map_err(|e| IngressError::Lookup(e.to_string()))?;
        let subjects = info
            .config
            .subjects
            .iter()
            .filter_map(|s| Pattern::parse(s).ok())
            .collect();
        streams.push((info.config.name, subjects));
    }
    Ok(streams)
}

/// The route subjects no stream holds; one that streams hold only part of is an error
/// (unless that part is `nats.stream` itself under `create_stream`, which is widened).
fn uncaptured(
    streams: &[(String, Vec<Pattern>)],
    nats: &NatsConfig,
    routes: &[Route],
) -> Result<Vec<Pattern>, IngressError> {
    let mut missing: Vec<Pattern> = Vec::new();
    for r in routes {
        let p = r.subject.pattern();
        if missing.contains(p)
            || streams
                .iter()
                .any(|(_, s)| s.iter().any(|s| p.is_subset_of(s)))
        {
            continue;
        }
        let partial: Vec<&str> = streams
            .iter()
            .filter(|(_, s)| s.iter().any(|s| s.overlaps(p)))
            .map(|(name, _)| name.as_str())
            .collect();
        match partial.as_slice() {
            [] if nats.create_stream => missing.push(p.clone()),
            [own] if nats.create_stream && *own == nats.stream => missing.push(p.clone()),
            [] => missing.push(p.clone()),
            _ => {
                return Err(IngressError::Partial {
                    subject: p.to_string(),
                    streams: partial.join(", "),
                })
            }
        }
    }
    Ok(missing)
}

fn joined(subjects: &[Pattern]) -> String {
    subjects
        .iter()
        .map(Pattern::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Adds `missing` to `nats.stream` (`create_stream = true`).
async fn extend_stream(
    js: &jetstream::Context,
    nats: &NatsConfig,
    missing: &[Pattern],
) -> Result<(), IngressError> {
    let extend_error = |error: String| IngressError::ExtendStream {
        stream: nats.stream.clone(),
        subjects: joined(missing),
        error,
    };
    let mut stream = js
        .get_stream(&nats.stream)
        .await
        .map_err(|e| extend_error(e.to_string()))?;
    let mut cfg = stream
        .info()
        .await
        .map_err(|e| extend_error(e.to_string()))?
        .config
        .clone();
    for p in missing {
        // A subject the new one covers would overlap it, which JetStream refuses.
        cfg.subjects
            .retain(|s| !Pattern::parse(s).is_ok_and(|s| s.is_subset_of(p)));
        if !missing.iter().any(|q| q != p && p.is_subset_of(q)) {
            cfg.subjects.push(p.to_string());
        }
    }
    tracing::info!(stream = %nats.stream, subjects = %joined(missing), "adding ingress subjects to the stream (create_stream = true)");
    js.update_stream(cfg)
        .await
        .map(|_| ())
        .map_err(|e| extend_error(e.to_string()))
}

/// [`ensure_streams`] at start-up: a stream that cannot be looked up yet is waited
/// for (as the bridge's own stream is); a missing one stops start-up.
pub async fn ensure_streams_at_start(
    js: &jetstream::Context,
    nats: &NatsConfig,
    routes: &[Route],
    stop: &CancellationToken,
) -> Result<(), IngressError> {
    let mut wait = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    loop {
        match ensure_streams(js, nats, routes).await {
            Err(IngressError::Lookup(error)) => {
                tracing::warn!(%error, "cannot check the ingress streams yet; retrying");
            }
            other => return other,
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(wait.next_delay()) => {}
        }
    }
}
