//! Delivering one message to an endpoint: [`Deliverer::deliver`] builds the body,
//! carries headers over, signs and makes one HTTP attempt, and classifies the result.
//! `client` builds the endpoint's HTTP client (TLS, SSRF guard), `headers` the
//! request's headers and their redacted copy for the delivery log.
//!
//! Endpoints of one connection shape share a pooled hyper client (keep-alive,
//! HTTP/1.1 and HTTP/2 by ALPN) whose pool keeps connections per receiver host, so one
//! endpoint's slow or dead receiver only ever holds connections to itself; each
//! endpoint's `concurrency` bounds its own requests. Redirects are never followed: a
//! 3xx is a failed attempt, since following it could send signed events somewhere the
//! operator did not configure.
//!
//! Name resolution goes through [`GuardedResolver`](crate::ssrf::GuardedResolver),
//! which applies the SSRF rules to every resolved address at connect time.

mod client;
mod headers;
mod proxy;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue, LOCATION, RETRY_AFTER};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::ResponseFuture;

pub(crate) use self::client::system_roots;
use self::client::ShapeClient;
pub use self::client::{ready_clients, renew_on_tls_file_changes, ClientError, ReadyClients};
use self::headers::{forwarded_headers, host_header, request_headers};
pub use self::headers::{
    redact, REDACTED, TRACE_HEADERS, X_WEBHOOK_ATTEMPT, X_WEBHOOK_EVENT, X_WEBHOOK_ID,
    X_WEBHOOK_TIMESTAMP,
};
use crate::config::Endpoint;
use crate::envelope::{self, EnvelopeError, MessageFacts};
use crate::file_read::Reading;
use crate::metrics::AttemptStatus;
use crate::otel::{AttemptEnd, AttemptFacts, AttemptTracer};
use crate::secret::{Secret, SecretRef};
use crate::signing::Signer;

/// Response bytes kept for logs and dead letters.
pub const RESPONSE_BODY_LIMIT: usize = 4096;
/// Response bytes read at most; reading a short body to its end keeps the connection
/// reusable, a longer one is cut and its connection dropped.
const RESPONSE_DRAIN_LIMIT: usize = 64 * 1024;
/// Longest delay a receiver may ask for with `Retry-After`.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// The shortest `Retry-After` taken: `0`, or a date in the past (a receiver's clock
/// behind), would otherwise spend every attempt of a backlog within milliseconds.
pub const RETRY_AFTER_MIN: Duration = Duration::from_secs(1);

/// Why a message cannot become a request at all: dead-lettered with this reason, never
/// retried (every attempt would fail the same way).
#[derive(Debug, thiserror::Error)]
pub enum Undeliverable {
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// The contract's `X-Webhook-Event` header cannot carry it: a `{n}` template took a
    /// control character from the subject.
    #[error(
        "event name {0:?} has control characters, which no HTTP header can carry (X-Webhook-Event)"
    )]
    EventName(String),
}

/// One attempt in progress, as [`Deliverer::deliver`] returns it: boxed where it is
/// made, so the caller moves a pointer instead of the attempt's whole state (over
/// 600 bytes) into its own future and from there into the heap.
pub type Attempt<'a> = Pin<Box<dyn Future<Output = AttemptResult> + Send + 'a>>;

/// The result of one HTTP attempt.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub status: AttemptStatus,
    /// The HTTP status when a response arrived.
    pub http_status: Option<u16>,
    /// `Retry-After` of a 429/503, capped.
    pub retry_after: Option<Duration>,
    /// Transport error or a short description of the failure.
    pub error: Option<String>,
    /// At most [`RESPONSE_BODY_LIMIT`] bytes of the response body.
    pub response_body: Bytes,
    pub duration: Duration,
    /// The request headers, redacted, when the request asked for them.
    pub request_headers: Vec<(String, String)>,
}

impl AttemptResult {
    pub fn is_success(&self) -> bool {
        matches!(self.http_status, Some(s) if (200..300).contains(&s))
    }

    /// 410 Gone: the receiver says this endpoint is gone for good.
    pub fn is_gone(&self) -> bool {
        self.http_status == Some(410)
    }

    /// The response body as text for records and the API: invalid UTF-8 replaced, and
    /// cut at a character boundary so the text stays within [`RESPONSE_BODY_LIMIT`]
    /// bytes (each replaced byte takes three).
    pub fn response_text(&self) -> String {
        let mut text = String::from_utf8_lossy(&self.response_body).into_owned();
        if text.len() > RESPONSE_BODY_LIMIT {
            let mut end = RESPONSE_BODY_LIMIT;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        text
    }

    /// A one-line description for logs and dead-letter records.
    pub fn describe(&self) -> String {
        match (self.http_status, &self.error) {
            (_, Some(e)) => e.clone(),
            (Some(s), None) => format!("HTTP {s}"),
            (None, None) => "unknown failure".to_string(),
        }
    }
}

/// A request as the client sends it.
type HttpRequest = http::Request<Full<Bytes>>;

/// What to send: body and the per-message headers.
pub struct Request<'a> {
    pub id: &'a str,
    pub event: &'a str,
    pub attempt: u32,
    pub body: Bytes,
    /// Headers carried over from the NATS message (trace context, `forward_headers`).
    pub forwarded: Vec<(HeaderName, HeaderValue)>,
    /// Return the sent headers (redacted) in the result, for the delivery log.
    pub capture_headers: bool,
}

/// Sends signed requests to one endpoint.
#[derive(Clone)]
pub struct Deliverer {
    client: Arc<ShapeClient>,
    endpoint: Arc<Endpoint>,
    /// Swapped when a `{ file }` secret changes (see [`Deliverer::watch_secrets`]).
    signer: Arc<ArcSwap<Signer>>,
    /// The `Host` header, built once: hyper-util would format it for every request.
    host: Option<HeaderValue>,
    /// With `[tracing]`: the tracer and the endpoint's name as a span attribute value,
    /// made once. `None` costs nothing per attempt.
    /// Boxed: the tracer is large, and every endpoint holds a deliverer.
    tracer: Option<Box<(AttemptTracer, opentelemetry::StringValue)>>,
}

impl Deliverer {
    /// `max_inflight` is the process-wide bound on deliveries in flight, which sizes
    /// the connection pool an endpoint shares with others of the same receiver host.
    pub fn new(endpoint: Arc<Endpoint>, max_inflight: usize) -> Result<Self, ClientError> {
        let client = client::shared(&endpoint, max_inflight)?;
        Ok(Self::with_client(endpoint, client))
    }

    /// Like [`Deliverer::new`], with the client `ready` made for the endpoint's shape.
    pub fn with_ready(endpoint: Arc<Endpoint>, ready: &ReadyClients) -> Result<Self, ClientError> {
        let client = ready.client(&endpoint)?;
        Ok(Self::with_client(endpoint, client))
    }

    fn with_client(endpoint: Arc<Endpoint>, client: Arc<client::ShapeClient>) -> Self {
        let signer = Arc::new(ArcSwap::new(Arc::clone(&endpoint.signer)));
        Self {
            client,
            host: host_header(&endpoint.url),
            endpoint,
            signer,
            tracer: None,
        }
    }

    /// Traces every attempt with `tracer` (see [`crate::otel`]); `None` leaves the
    /// trace context as the message carried it.
    pub fn with_tracer(mut self, tracer: Option<AttemptTracer>) -> Self {
        let name = opentelemetry::StringValue::from(self.endpoint.name.clone());
        self.tracer = tracer.map(|t| Box::new((t, name)));
        self
    }

    /// Swaps the signer for one with `secrets` when they differ from its keys, so a
    /// rotated Kubernetes Secret takes effect without a restart; whether it did.
    fn use_secrets(&self, secrets: Vec<Secret>) -> Result<bool, String> {
        let current = self.signer.load();
        let next = Signer::new(current.scheme(), current.header().clone(), secrets)
            .map_err(|e| e.to_string())?;
        if next.same_keys(&current) {
            return Ok(false);
        }
        self.signer.store(Arc::new(next));
        Ok(true)
    }

    /// Polls `{ file }` secrets until `stop`.
    pub async fn watch_secrets(self, every: Duration, stop: tokio_util::sync::CancellationToken) {
        let has_files = self.endpoint.secret_refs.iter().any(SecretRef::is_file);
        if !has_files {
            return;
        }
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            // A secret that cannot be read right now (e.g. mid-update) keeps the
            // current signer.
            let endpoint = Arc::clone(&self.endpoint);
            let read = crate::file_read::repeated_read(Reading::Secrets, move || {
                crate::secret::resolve_all(&endpoint.secret_refs).map_err(|e| e.to_string())
            });
            let read = tokio::select! {
                _ = stop.cancelled() => return,
                read = read => read.unwrap_or_else(|| Err("the secret read stopped".to_string())),
            };
            match read.and_then(|secrets| self.use_secrets(secrets)) {
                Ok(true) => {
                    failing = false;
                    tracing::info!(endpoint = %self.endpoint.name, "secret file changed; signing with the new secret");
                }
                Ok(false) => failing = false,
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(endpoint = %self.endpoint.name, error = %e, "cannot re-read secret; keeping the current one");
                }
                Err(_) => {}
            }
        }
    }

    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// One delivery of a message: its body (the endpoint's envelope around `facts`),
    /// the headers carried over from `message_headers`, then the signed attempt. The
    /// worker, the admin API's test ping and dead-letter replay all deliver this way,
    /// so a receiver cannot tell them apart. The body is built, the request signed
    /// (its timestamp taken) and handed to the client here: a message that cannot be
    /// put in an envelope is an error at once, and the future returned only sends. So
    /// it is awaited as soon as it is made, or the timestamp ages before it is sent.
    pub fn deliver<'a, 'h>(
        &'a self,
        facts: &MessageFacts<'a>,
        message_headers: impl IntoIterator<Item = (&'h str, &'h str)>,
        capture_headers: bool,
    ) -> Result<Attempt<'a>, Undeliverable> {
        if HeaderValue::from_bytes(facts.event.as_bytes()).is_err() {
            return Err(Undeliverable::EventName(facts.event.to_string()));
        }
        let body = envelope::build(
            self.endpoint.envelope,
            &self.endpoint.envelope_fields,
            self.endpoint.tenant_field.as_deref(),
            facts,
        )?;
        let forwarded = forwarded_headers(&self.endpoint, message_headers);
        Ok(Box::pin(self.send(Request {
            id: facts.id,
            event: facts.event,
            attempt: facts.attempt,
            body,
            forwarded,
            capture_headers,
        })))
    }

    /// One attempt, bounded by the endpoint's timeout (connect, send and response).
    ///
    /// The request is made and handed to the client here, before the returned future
    /// runs: what making it takes (the builder, the header map, the request itself)
    /// would otherwise stay in the future's state across the exchange, and that state
    /// is copied into the heap for every attempt. The span is boxed for the same
    /// reason: without `[tracing]` it is `None`, eight bytes instead of three hundred.
    fn send<'s>(&'s self, mut req: Request<'_>) -> impl Future<Output = AttemptResult> + Send + 's {
        let span = self.tracer.as_deref().map(|(tracer, endpoint)| {
            let facts = AttemptFacts {
                endpoint,
                event: req.event,
                id: req.id,
                attempt: req.attempt,
            };
            Box::new(tracer.start(&facts, &mut req.forwarded))
        });
        let (request, request_headers) = self.request(req);
        let response = request.map(|r| self.client.request(r));
        async move {
            let start = Instant::now();
            let outcome = match response {
                Ok(response) => self.exchange(response, start + self.endpoint.timeout).await,
                Err(e) => Err((
                    AttemptStatus::ConnectError,
                    format!("cannot build request: {e}"),
                )),
            };
            let duration = start.elapsed();
            let result = match outcome {
                Ok(answer) => AttemptResult {
                    status: AttemptStatus::Class(answer.status),
                    http_status: Some(answer.status),
                    retry_after: answer.retry_after,
                    error: answer.redirect.map(|to| {
                        printable(format!(
                            "HTTP {}, redirect to {to} not followed",
                            answer.status
                        ))
                    }),
                    response_body: answer.body,
                    duration,
                    request_headers,
                },
                Err((status, error)) => AttemptResult {
                    status,
                    http_status: None,
                    retry_after: None,
                    error: Some(printable(error)),
                    response_body: Bytes::new(),
                    duration,
                    request_headers,
                },
            };
            if let Some(span) = span {
                span.end(AttemptEnd {
                    status: match result.http_status {
                        Some(s) => s.to_string().into(),
                        None => result.status.label().into(),
                    },
                    http_status: result.http_status,
                    success: result.is_success(),
                    error: result.error.as_deref(),
                    duration,
                });
            }
            result
        }
    }

    /// The signed request of one attempt, and its headers redacted when `req` asks to
    /// capture them: made apart from the attempt's future, so that nothing used to make
    /// it stays in that future's state.
    fn request(
        &self,
        req: Request<'_>,
    ) -> (Result<HttpRequest, http::Error>, Vec<(String, String)>) {
        let headers = request_headers(
            &self.endpoint,
            self.host.as_ref(),
            &self.signer.load(),
            &req,
            SystemTime::now(),
        );
        let captured = match req.capture_headers {
            true => redact(&headers),
            false => Vec::new(),
        };
        let mut builder = http::Request::post(self.endpoint.url.clone());
        if let Some(h) = builder.headers_mut() {
            *h = headers;
        }
        (builder.body(Full::new(req.body)), captured)
    }

    /// The request and the response head by `deadline`, which the status decides; then
    /// as much of the body as arrives by the deadline. A receiver that answered `2xx`
    /// in time has the message, however slowly its body follows: the body is cut off,
    /// the status stands.
    async fn exchange(
        &self,
        response: ResponseFuture,
        deadline: Instant,
    ) -> Result<Answer, (AttemptStatus, String)> {
        // One timer for both parts, as one `timeout` around them was.
        let expired = tokio::time::sleep_until(deadline.into());
        tokio::pin!(expired);
        let response = tokio::select! {
            biased;
            r = response => r.map_err(|e| {
                // An unanswered HTTP/2 PING is the receiver's silence, as a timeout is.
                let status = match client::timed_out(&e) {
                    true => AttemptStatus::Timeout,
                    false => AttemptStatus::ConnectError,
                };
                (status, describe_client_error(&e))
            })?,
            () = &mut expired => {
                return Err((
                    AttemptStatus::Timeout,
                    format!(
                        "timed out after {}",
                        humantime::format_duration(self.endpoint.timeout)
                    ),
                ))
            }
        };
        let status = response.status().as_u16();
        let retry_after = if status == 429 || status == 503 {
            response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| parse_retry_after(v, SystemTime::now()))
        } else {
            None
        };
        let redirect = match (300..400).contains(&status) {
            true => (response.headers().get(LOCATION))
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            false => None,
        };
        let mut kept = BytesMut::new();
        // Past the deadline the body is dropped, and its connection with it.
        tokio::select! {
            biased;
            () = drain(response.into_body(), &mut kept) => {}
            () = &mut expired => {}
        }
        Ok(Answer {
            status,
            retry_after,
            redirect,
            body: kept.freeze(),
        })
    }
}

/// What a receiver answered to one attempt.
struct Answer {
    status: u16,
    /// `Retry-After` of a 429/503, capped.
    retry_after: Option<Duration>,
    /// A 3xx's `Location`, which is never followed but which the operator needs to
    /// see to fix the endpoint's URL.
    redirect: Option<String>,
    body: Bytes,
}

/// Reads up to [`RESPONSE_DRAIN_LIMIT`] of a response body (so a short one leaves its
/// connection reusable), keeping the first [`RESPONSE_BODY_LIMIT`] bytes in `kept`.
async fn drain(mut body: hyper::body::Incoming, kept: &mut BytesMut) {
    let mut read = 0usize;
    while read < RESPONSE_DRAIN_LIMIT {
        match body.frame().await {
            None | Some(Err(_)) => break,
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    read += data.len();
                    let room = RESPONSE_BODY_LIMIT.saturating_sub(kept.len());
                    kept.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
        }
    }
}

/// Most bytes of an attempt's error text that are kept.
const ERROR_TEXT_LIMIT: usize = 512;

/// An attempt's error as the log, the endpoint's state and the delivery log show it:
/// parts of it come from the receiver (a TLS certificate's names, for one), so control
/// characters are escaped, lest they forge log lines or terminal output, and it is
/// cut to [`ERROR_TEXT_LIMIT`] bytes, lest a certificate of hundreds of names make
/// every record tens of kilobytes.
fn printable(error: String) -> String {
    if error.len() <= ERROR_TEXT_LIMIT && !error.chars().any(needs_escape) {
        return error;
    }
    // Room for the `…` that marks a cut.
    let room = ERROR_TEXT_LIMIT - '…'.len_utf8();
    let mut out = String::with_capacity(ERROR_TEXT_LIMIT);
    for c in error.chars() {
        let escaped: String = match needs_escape(c) {
            true => c.escape_default().collect(),
            false => c.to_string(),
        };
        if out.len() + escaped.len() > room {
            out.push('…');
            break;
        }
        out.push_str(&escaped);
    }
    out
}

/// Control characters, the backslash (so that an escape cannot be forged), and the
/// characters that reorder or break what a terminal shows (bidirectional overrides
/// and isolates, line and paragraph separators).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || c == '\\'
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
}

fn describe_client_error(e: &hyper_util::client::legacy::Error) -> String {
    use std::error::Error;
    let mut msg = if e.is_connect() {
        "connect error".to_string()
    } else {
        "request error".to_string()
    };
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// `Retry-After` as delta-seconds or an HTTP date, within [`RETRY_AFTER_MIN`] and
/// [`RETRY_AFTER_CAP`]. Delta-seconds too large for a number are the cap.
pub fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    let delay = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse::<u64>()
            .map_or(RETRY_AFTER_CAP, Duration::from_secs)
    } else {
        let at = httpdate::parse_http_date(text).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.clamp(RETRY_AFTER_MIN, RETRY_AFTER_CAP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_from_the_receiver_is_escaped_and_cut() {
        let forged =
            "invalid peer certificate: evil\x1b[31m\nFAKE-LOG-LINE level=ERROR".to_string();
        let shown = printable(forged);
        assert!(!shown.chars().any(char::is_control), "{shown}");
        assert!(shown.contains("\\u{1b}[31m\\nFAKE-LOG-LINE"), "{shown}");
        // A backslash the receiver wrote is escaped too, so it cannot pass for one
        // of these escapes; a right-to-left override is shown, not obeyed.
        let shown = printable("name \\n\u{202e}moc.live".to_string());
        assert_eq!(shown, "name \\\\n\\u{202e}moc.live");

        let names: String = (0..300)
            .map(|i| format!("name-{i}.example.com, "))
            .collect();
        let shown = printable(format!("certificate is valid for {names}"));
        assert!(shown.len() <= ERROR_TEXT_LIMIT, "{}", shown.len());
        assert!(shown.ends_with('…'));

        let plain = "connect error: Connection refused (os error 111)".to_string();
        assert_eq!(printable(plain.clone()), plain);
    }

    #[test]
    fn an_event_name_no_header_can_carry_is_undeliverable() {
        let endpoint = std::sync::Arc::new(crate::config::test_endpoint("secret = \"s\""));
        let deliverer = Deliverer::new(endpoint, 8).unwrap();
        let payload = Bytes::from_static(b"{}");
        let facts = |event| MessageFacts {
            id: "E-1",
            event,
            subject: "orders.x",
            stream_sequence: 1,
            attempt: 1,
            published: SystemTime::UNIX_EPOCH,
            payload: &payload,
            tenant: None,
        };
        match deliverer.deliver(&facts("order.x\u{1}y"), [], false) {
            Err(e @ Undeliverable::EventName(_)) => {
                assert!(e.to_string().contains("X-Webhook-Event"), "{e}")
            }
            _ => panic!("an event name with a control character became a request"),
        }
        // Non-ASCII is sent as its UTF-8 bytes.
        assert!(deliverer.deliver(&facts("order.café"), [], false).is_ok());
    }

    #[test]
    fn retry_after_seconds_dates_and_cap() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("7"), now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("999999"), now),
            Some(RETRY_AFTER_CAP)
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(120));
        assert_eq!(
            parse_retry_after(&HeaderValue::from_str(&date).unwrap(), now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("soon"), now),
            None
        );
        // "Now" and the past wait the minimum; a number past u64 is the cap.
        for now_or_past in [
            "0".to_string(),
            httpdate::fmt_http_date(now - Duration::from_secs(60)),
        ] {
            assert_eq!(
                parse_retry_after(&HeaderValue::from_str(&now_or_past).unwrap(), now),
                Some(RETRY_AFTER_MIN),
                "{now_or_past}"
            );
        }
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("99999999999999999999"), now),
            Some(RETRY_AFTER_CAP)
        );
        for ignored in ["-5", "1.5", ""] {
            assert_eq!(
                parse_retry_after(&HeaderValue::from_static(ignored), now),
                None,
                "{ignored}"
            );
        }
    }

    fn with_body(body: Vec<u8>) -> AttemptResult {
        AttemptResult {
            status: AttemptStatus::Class(500),
            http_status: Some(500),
            retry_after: None,
            error: None,
            response_body: Bytes::from(body),
            duration: Duration::ZERO,
            request_headers: Vec::new(),
        }
    }

    #[test]
    fn response_text_stays_within_the_limit_after_replacing_invalid_bytes() {
        assert_eq!(
            with_body(b"nope \xff".to_vec()).response_text(),
            "nope \u{fffd}"
        );
        // Every invalid byte becomes a three-byte U+FFFD: cut on a character boundary.
        let text = with_body(vec![0xff; RESPONSE_BODY_LIMIT]).response_text();
        assert!(text.len() <= RESPONSE_BODY_LIMIT, "{}", text.len());
        assert_eq!(text.len(), RESPONSE_BODY_LIMIT / 3 * 3);
        assert!(text.chars().all(|c| c == '\u{fffd}'));
        let ascii = with_body(vec![b'a'; RESPONSE_BODY_LIMIT]).response_text();
        assert_eq!(ascii.len(), RESPONSE_BODY_LIMIT);
    }
}
