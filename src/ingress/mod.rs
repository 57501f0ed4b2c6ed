//! Incoming webhooks: verified HTTP in → JetStream, the reverse of the bridge.
//!
//! Each `[[ingress.routes]]` entry is a URL path with its own signature check and a
//! subject template. A request is answered `2xx` only after JetStream acked the
//! publish, so a `2xx` means stored; everything else is an error status a provider
//! retries (`503`) or gives up on (`4xx`), so nothing is lost between the two.
//!
//! Order of checks, cheapest first and verification before anything is derived from
//! the request: path (`404`), method (`405`), declared size (`413`), signature
//! headers present (`401`), body read within `max_body` (`413`) and the budget of
//! bodies held at once (`503`), signature and timestamp (`401`), subject (`400`), NATS connected (`503`), publish ack (`503`).
//! The route table is swapped whole on reload, so a request sees one table.

mod answer;
mod body;
mod request;
mod streams;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_nats::connection::State;
use async_nats::jetstream::{self, context::PublishErrorKind};
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;

pub use self::streams::{ensure_streams, ensure_streams_at_start, IngressError};
pub use crate::config::{IngressConfig, Route, Verify};

use self::answer::{answer, unavailable, unconfirmed, Answer, Refusal};
use self::body::{read_body, Bodies, Room};
use self::request::{check_head, nats_headers, subject, verify};
use crate::config::NatsConfig;
use crate::file_read::Reading;
use crate::metrics::{IngressOutcome, IngressRouteMetrics, Metrics};
use crate::signing::{Scheme, WEBHOOK_ID};

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
    /// Made at the first unknown path: a process without a dedicated listener, or one
    /// nobody probes, shows no `unmatched` series.
    unmatched: std::sync::OnceLock<IngressRouteMetrics>,
    /// The dedicated listener natshook started with (`None`: the `[http]` one). A
    /// change needs a restart.
    listen: Option<SocketAddr>,
    nats: NatsConfig,
    /// The memory budget request bodies are read within.
    bodies: Bodies,
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
        log_warnings(&config.routes);
        Self {
            table: ArcSwap::from_pointee(Table::new(config, &metrics)),
            js,
            client,
            unmatched: std::sync::OnceLock::new(),
            metrics,
            listen: config.listen,
            nats: nats.clone(),
            bodies: Bodies::new(),
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
        log_warnings(&config.routes);
        let new: Vec<String> = config.routes.iter().map(|r| r.path.to_string()).collect();
        let added: Vec<&String> = new.iter().filter(|p| !old.contains(p)).collect();
        let removed: Vec<&String> = old.iter().filter(|p| !new.contains(p)).collect();
        if !added.is_empty() || !removed.is_empty() {
            tracing::info!(?added, ?removed, "ingress routes reloaded");
        }
        let me = self.clone();
        let routes = config.routes.clone();
        tokio::spawn(async move {
            log_size_limits(me.client.max_payload(), &routes);
            if let Err(e) = ensure_streams(&me.js, &me.nats, &routes).await {
                tracing::error!(error = %e, "ingress requests on these subjects are answered 503 until a stream captures them");
            }
        });
    }

    /// Re-reads `{ file }` secrets every `every` (as endpoints do, so a rotated
    /// Kubernetes Secret takes effect without a reload) and swaps in the routes whose
    /// keys changed. A file that no longer exists stops verifying (a revoked key must
    /// not keep opening the route) unless every file of the route is gone; a file
    /// that cannot be read otherwise keeps the current keys.
    pub async fn watch_secrets(self: Arc<Self>, every: Duration, stop: CancellationToken) {
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let current = self.table.load_full();
            // The routes verified with `{ file }` secrets, read off the runtime's
            // threads ([`crate::file_read`]).
            let refs: Vec<(usize, Vec<crate::secret::SecretRef>)> = (current.routes.iter())
                .enumerate()
                .filter(|(_, live)| {
                    matches!(live.route.verify, Verify::Signed(_))
                        && (live.route.secret_refs.iter()).any(crate::secret::SecretRef::is_file)
                })
                .map(|(i, live)| (i, live.route.secret_refs.clone()))
                .collect();
            if refs.is_empty() {
                continue;
            }
            let read = crate::file_read::repeated_read(Reading::Secrets, move || {
                refs.into_iter()
                    .map(|(i, refs)| {
                        (
                            i,
                            crate::secret::resolve_present(&refs).map_err(|e| e.to_string()),
                        )
                    })
                    .collect::<HashMap<_, _>>()
            });
            let mut read = tokio::select! {
                _ = stop.cancelled() => return,
                read = read => read.unwrap_or_default(),
            };
            let mut changed = Vec::new();
            let mut routes: Vec<Route> = Vec::with_capacity(current.routes.len());
            let mut error = None;
            for (i, live) in current.routes.iter().enumerate() {
                let mut route = live.route.clone();
                if let (Verify::Signed(signer), Some(secrets)) = (&route.verify, read.remove(&i)) {
                    let fresh = secrets.and_then(|secrets| {
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
                .get_or_init(|| self.metrics.ingress_unmatched())
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
        match accept(route, req, &self.bodies).await {
            Ok(message) => self.publish(route, publish_timeout, message).await,
            Err(refused) => refused.answer(),
        }
    }

    /// Stores a verified message; `2xx` only once JetStream acked it.
    async fn publish(&self, route: &Route, publish_timeout: Duration, message: Message) -> Answer {
        // Published while disconnected, the message would wait in the client's buffer
        // past our answer; a quick 503 lets the sender retry instead.
        if self.client.connection_state() != State::Connected {
            return unavailable("NATS is not connected");
        }
        // `_room` is held until the answer: the body stays in memory until JetStream
        // has it.
        let Message {
            subject,
            headers,
            body,
            room: _room,
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
                // The stored headers (signature, `Nats-Msg-Id`, forwarded ones) count
                // toward `max_payload` too, so a body within `max_body` can pass it.
                let max_payload = self.client.max_payload();
                tracing::warn!(route = %route.path, error = %e, "incoming webhook's body and headers larger than the NATS server's max_payload");
                (
                    IngressOutcome::TooLarge,
                    answer(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("body and headers larger than the NATS server accepts (max_payload {max_payload} bytes)\n"),
                    ),
                )
            }
            // Sent, but not answered: it may be stored.
            Ok(Err(e)) if e.kind() == PublishErrorKind::TimedOut => {
                tracing::warn!(route = %route.path, error = %e, "incoming webhook: no publish ack in time; answered 503");
                unconfirmed("JetStream did not answer in time")
            }
            Ok(Err(e)) => {
                tracing::warn!(route = %route.path, error = %e, "incoming webhook not stored; answered 503");
                unavailable("JetStream did not store it")
            }
            Err(_) => {
                tracing::warn!(route = %route.path, "incoming webhook: no publish ack in time; answered 503");
                unconfirmed("JetStream did not answer in time")
            }
        }
    }
}

/// A verified request, ready to publish.
struct Message {
    subject: String,
    headers: async_nats::HeaderMap,
    body: Bytes,
    /// The body's room in the budget of bodies held at once.
    room: Room,
}

/// Runs the checks that need no NATS after [`check_head`], cheapest first, and
/// verifies before anything is derived from the request.
async fn accept(
    route: &Route,
    req: http::Request<Incoming>,
    bodies: &Bodies,
) -> Result<Message, Refusal> {
    let (parts, body) = req.into_parts();
    let (body, room) = read_body(route, body, bodies).await?;
    verify(route, &parts.headers, &body)?;
    let subject = subject(route, &parts, &body)?;
    Ok(Message {
        subject,
        headers: nats_headers(route, &parts.headers),
        body,
        room,
    })
}

/// What a valid route still deserves a warning for, one sentence each: settings that
/// work but do not do what they seem to. `natshook check` prints them, and start-up
/// and reload log them.
pub fn warnings(route: &Route) -> Vec<String> {
    let mut out = Vec::new();
    // Standard Webhooks signs `webhook-id`, not any other header: an id from one is
    // the sender's word alone, so a captured request is stored again under a new one
    // (within the timestamp tolerance).
    if matches!(&route.verify, Verify::Signed(s) if s.scheme() == Scheme::Standard)
        && route.id_header != WEBHOOK_ID
    {
        out.push(format!(
            "{}: id_header {} is not signed (scheme standard signs webhook-id only), so a captured request can be stored again under a new {} within the 5-minute timestamp tolerance; leave id_header out to dedupe on the signed webhook-id",
            route.path, route.id_header, route.id_header
        ));
    }
    out
}

/// Logs [`warnings`] (at start-up and on reload).
fn log_warnings(routes: &[Route]) {
    for route in routes {
        for warning in warnings(route) {
            tracing::warn!(route = %route.path, "{warning}");
        }
    }
}

/// Logs each route whose `max_body` is above the NATS server's `max_payload` (known
/// once connected; `0`, and nothing said, before): a body and its stored headers must
/// fit `max_payload`, so the larger bodies `max_body` lets in get `413` all the same.
pub(super) fn log_size_limits(max_payload: usize, routes: &[Route]) {
    if max_payload == 0 {
        return;
    }
    for route in routes.iter().filter(|r| r.max_body > max_payload) {
        tracing::warn!(
            route = %route.path,
            max_body = route.max_body,
            max_payload,
            "ingress max_body is above the NATS server's max_payload: a body and its \
             stored headers must fit max_payload, so larger ones get 413"
        );
    }
}
