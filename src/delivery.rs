//! One HTTP attempt to an endpoint, and how its result is classified.
//!
//! Each endpoint gets its own pooled hyper client (keep-alive, HTTP/1.1 and HTTP/2 by
//! ALPN), so one endpoint's slow or dead receiver never holds connections another
//! needs. Redirects are never followed: a 3xx is a failed attempt, since following it
//! could send signed events somewhere the operator did not configure.
//!
//! Name resolution goes through [`GuardedResolver`](crate::guard::GuardedResolver),
//! which applies the SSRF rules to every resolved address at connect time.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, HOST, RETRY_AFTER, USER_AGENT,
};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::{Endpoint, TlsFiles};
use crate::guard::GuardedResolver;
use crate::metrics::AttemptStatus;
use crate::pem::{load_certificates, load_private_key, load_roots, PemError};
use crate::secret::SecretRef;
use crate::signing::Signer;

/// Response bytes kept for logs and dead letters.
pub const RESPONSE_BODY_LIMIT: usize = 4096;
/// Response bytes read at most; reading a short body to its end keeps the connection
/// reusable, a longer one is cut and its connection dropped.
const RESPONSE_DRAIN_LIMIT: usize = 64 * 1024;
/// Largest response head (status line and headers) accepted; a larger one fails the
/// attempt with "message head is too large".
const RESPONSE_HEAD_LIMIT: usize = 64 * 1024;
/// Longest delay a receiver may ask for with `Retry-After`.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

pub const X_WEBHOOK_EVENT: HeaderName = HeaderName::from_static("x-webhook-event");
pub const X_WEBHOOK_ID: HeaderName = HeaderName::from_static("x-webhook-id");
pub const X_WEBHOOK_ATTEMPT: HeaderName = HeaderName::from_static("x-webhook-attempt");
pub const X_WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("x-webhook-timestamp");

type Connector = HttpsConnector<HttpConnector<GuardedResolver>>;

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

    /// A one-line description for logs and dead-letter records.
    pub fn describe(&self) -> String {
        match (self.http_status, &self.error) {
            (_, Some(e)) => e.clone(),
            (Some(s), None) => format!("HTTP {s}"),
            (None, None) => "unknown failure".to_string(),
        }
    }
}

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

/// W3C trace context: always carried from the NATS message to the request.
pub const TRACE_HEADERS: [HeaderName; 2] = [
    HeaderName::from_static("traceparent"),
    HeaderName::from_static("tracestate"),
];

/// The headers to carry over from a message's headers: trace context plus the
/// endpoint's `forward_headers`. Names match case-insensitively; values that are not
/// valid in HTTP (CR, LF, control characters) are dropped, never sent.
pub fn forwarded_headers<'a>(
    endpoint: &Endpoint,
    message_headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<(HeaderName, HeaderValue)> {
    let trace = TRACE_HEADERS;
    let mut out = Vec::new();
    for (name, value) in message_headers {
        let wanted = trace
            .iter()
            .chain(endpoint.forward_headers.iter())
            .find(|h| h.as_str().eq_ignore_ascii_case(name));
        if let (Some(h), Ok(v)) = (wanted, HeaderValue::from_str(value)) {
            out.push((h.clone(), v));
        }
    }
    out
}

/// Sends signed requests to one endpoint.
#[derive(Clone)]
pub struct Deliverer {
    client: Client<Connector, Full<Bytes>>,
    endpoint: Arc<Endpoint>,
    /// Swapped when a `{ file }` secret changes (see [`Deliverer::reload_secrets`]).
    signer: Arc<ArcSwap<Signer>>,
    /// The `Host` header, built once: hyper-util would format it for every request.
    host: Option<HeaderValue>,
}

/// `Host` as hyper-util's client would send it: the host, plus the port when it is not
/// the scheme's default.
fn host_header(uri: &http::Uri) -> Option<HeaderValue> {
    let host = uri.host()?;
    let default_port = if uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
        443
    } else {
        80
    };
    match uri.port_u16() {
        Some(port) if port != default_port => HeaderValue::from_str(&format!("{host}:{port}")).ok(),
        _ => HeaderValue::from_str(host).ok(),
    }
}

static USER_AGENT_VALUE: &str = concat!("natshook/", env!("CARGO_PKG_VERSION"));

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error(transparent)]
    File(#[from] PemError),
}

/// System roots, or only the endpoint's `ca_file` when set (a private CA should not
/// also trust the public ones); a client certificate when configured.
/// `https` is false for a plain `http://` endpoint, whose TLS settings are never used:
/// it gets no roots, so an HTTP-only sidecar never reads and keeps the system's
/// certificate bundle, which costs start-up time and memory.
fn tls_config(tls: &TlsFiles, https: bool) -> Result<rustls::ClientConfig, ClientError> {
    let roots = match &tls.ca_file {
        None if !https => Arc::new(rustls::RootCertStore::empty()),
        None => system_roots(),
        Some(ca) => Arc::new(load_roots(ca)?),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(load_certificates(cert)?, load_private_key(key)?)
            .map_err(|e| {
                ClientError::Tls(format!(
                    "client certificate {} with key {}: {e}",
                    cert.display(),
                    key.display()
                ))
            })?,
        _ => builder.with_no_client_auth(),
    };
    Ok(config)
}

/// The system roots, loaded once: parsing them per endpoint would cost memory and
/// start-up time per endpoint for identical data.
fn system_roots() -> Arc<rustls::RootCertStore> {
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

impl Deliverer {
    pub fn new(endpoint: Arc<Endpoint>) -> Result<Self, ClientError> {
        let mut http =
            HttpConnector::new_with_resolver(GuardedResolver::new(endpoint.target.clone()));
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(endpoint.timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(
                &endpoint.tls,
                endpoint.url.scheme() == Some(&http::uri::Scheme::HTTPS),
            )?)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        // Queued writes send the body from its own buffer (writev) instead of
        // copying it behind the headers. The read buffer starts at 8 KiB and may grow
        // to RESPONSE_HEAD_LIMIT: a fixed buffer would also cap the response head, and
        // a receiver behind a proxy can answer 200 with more than 8 KiB of headers.
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(endpoint.concurrency.max(1))
            .http1_writev(true)
            .http1_max_buf_size(RESPONSE_HEAD_LIMIT)
            .build(connector);
        let signer = Arc::new(ArcSwap::from_pointee(endpoint.signer.clone()));
        Ok(Self {
            client,
            host: host_header(&endpoint.url),
            endpoint,
            signer,
        })
    }

    /// Re-reads the endpoint's secrets and swaps the signer when they changed, so a
    /// rotated Kubernetes Secret takes effect without a restart. A secret that cannot
    /// be read right now (e.g. mid-update) keeps the current signer.
    pub fn reload_secrets(&self) -> Result<bool, String> {
        let mut secrets = Vec::with_capacity(self.endpoint.secret_refs.len());
        for r in &self.endpoint.secret_refs {
            secrets.push(r.resolve().map_err(|e| e.to_string())?);
        }
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
            match self.reload_secrets() {
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

    /// The full header set for one attempt, signature included.
    pub fn headers(&self, req: &Request<'_>, now: SystemTime) -> HeaderMap {
        let ts = crate::time::unix_secs(now);
        let mut h = HeaderMap::with_capacity(12 + self.endpoint.headers.len());
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        for (name, value) in &req.forwarded {
            h.append(name.clone(), value.clone());
        }
        for (name, value) in &self.endpoint.headers {
            h.insert(name.clone(), value.clone());
        }
        // A configured or forwarded Host wins, as it would in hyper-util.
        if let Some(host) = &self.host {
            h.entry(HOST).or_insert_with(|| host.clone());
        }
        // from_bytes, not from_str: an event name built from non-ASCII subject tokens
        // is sent as its UTF-8 bytes instead of silently losing the header.
        if let Ok(v) = HeaderValue::from_bytes(req.event.as_bytes()) {
            h.insert(X_WEBHOOK_EVENT, v);
        }
        if let Ok(v) = HeaderValue::from_bytes(req.id.as_bytes()) {
            h.insert(X_WEBHOOK_ID, v);
        }
        h.insert(X_WEBHOOK_ATTEMPT, HeaderValue::from(req.attempt));
        h.insert(X_WEBHOOK_TIMESTAMP, HeaderValue::from(ts));
        self.signer.load().sign_into(req.id, ts, &req.body, &mut h);
        h
    }

    /// One attempt, bounded by the endpoint's timeout (connect, send and response).
    pub async fn send(&self, req: Request<'_>) -> AttemptResult {
        let headers = self.headers(&req, SystemTime::now());
        let request_headers = if req.capture_headers {
            crate::delivery_log::redact(&headers)
        } else {
            Vec::new()
        };
        let mut builder = http::Request::post(self.endpoint.url.clone());
        if let Some(h) = builder.headers_mut() {
            *h = headers;
        }
        let start = Instant::now();
        let outcome = match builder.body(Full::new(req.body)) {
            Ok(request) => tokio::time::timeout(self.endpoint.timeout, self.exchange(request))
                .await
                .unwrap_or_else(|_| {
                    Err((
                        AttemptStatus::Timeout,
                        format!(
                            "timed out after {}",
                            humantime::format_duration(self.endpoint.timeout)
                        ),
                    ))
                }),
            Err(e) => Err((
                AttemptStatus::ConnectError,
                format!("cannot build request: {e}"),
            )),
        };
        let duration = start.elapsed();
        match outcome {
            Ok((status, retry_after, body)) => AttemptResult {
                status: AttemptStatus::Class(status),
                http_status: Some(status),
                retry_after,
                error: None,
                response_body: body,
                duration,
                request_headers,
            },
            Err((status, error)) => AttemptResult {
                status,
                http_status: None,
                retry_after: None,
                error: Some(error),
                response_body: Bytes::new(),
                duration,
                request_headers,
            },
        }
    }

    async fn exchange(
        &self,
        request: http::Request<Full<Bytes>>,
    ) -> Result<(u16, Option<Duration>, Bytes), (AttemptStatus, String)> {
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| (AttemptStatus::ConnectError, describe_client_error(&e)))?;
        let status = response.status().as_u16();
        let retry_after = if status == 429 || status == 503 {
            response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| parse_retry_after(v, SystemTime::now()))
        } else {
            None
        };
        let mut body = response.into_body();
        let mut kept = BytesMut::new();
        let mut read = 0usize;
        while read < RESPONSE_DRAIN_LIMIT {
            match body.frame().await {
                None => break,
                Some(Err(_)) => break,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        read += data.len();
                        let room = RESPONSE_BODY_LIMIT.saturating_sub(kept.len());
                        kept.extend_from_slice(&data[..data.len().min(room)]);
                    }
                }
            }
        }
        Ok((status, retry_after, kept.freeze()))
    }
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

/// `Retry-After` as delta-seconds or an HTTP date, capped at [`RETRY_AFTER_CAP`].
pub fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    let delay = if let Ok(secs) = text.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = httpdate::parse_http_date(text).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(RETRY_AFTER_CAP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_header_carries_only_non_default_ports() {
        for (url, host) in [
            ("http://127.0.0.1:8080/x", "127.0.0.1:8080"),
            ("http://example.com/x", "example.com"),
            ("http://example.com:80/x", "example.com"),
            ("https://example.com:443/x", "example.com"),
            ("https://example.com:80/x", "example.com:80"),
            ("https://[::1]:8443/", "[::1]:8443"),
        ] {
            let uri: http::Uri = url.parse().unwrap();
            assert_eq!(host_header(&uri).unwrap(), host, "{url}");
        }
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
    }
}
