//! One HTTP attempt to an endpoint, and how its result is classified.
//!
//! Each endpoint gets its own pooled hyper client (keep-alive, HTTP/1.1 and HTTP/2 by
//! ALPN), so one endpoint's slow or dead receiver never holds connections another
//! needs. Redirects are never followed: a 3xx is a failed attempt, since following it
//! could send signed events somewhere the operator did not configure.
//!
//! Name resolution goes through [`GuardedResolver`], which refuses private and
//! loopback addresses at connect time unless the endpoint allows them, so a DNS
//! answer that changes after start-up cannot redirect deliveries into the cluster.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::Endpoint;
use crate::metrics::AttemptStatus;

/// Response bytes kept for logs and dead letters.
pub const RESPONSE_BODY_LIMIT: usize = 4096;
/// Response bytes read at most; reading a short body to its end keeps the connection
/// reusable, a longer one is cut and its connection dropped.
const RESPONSE_DRAIN_LIMIT: usize = 64 * 1024;
/// Longest delay a receiver may ask for with `Retry-After`.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

pub const X_WEBHOOK_EVENT: HeaderName = HeaderName::from_static("x-webhook-event");
pub const X_WEBHOOK_ID: HeaderName = HeaderName::from_static("x-webhook-id");
pub const X_WEBHOOK_ATTEMPT: HeaderName = HeaderName::from_static("x-webhook-attempt");
pub const X_WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("x-webhook-timestamp");

/// True for addresses a webhook must not reach without `allow_private`: loopback,
/// RFC 1918, CGNAT, link-local (cloud metadata), ULA, unspecified, multicast,
/// broadcast/reserved, and IPv4 addresses embedded in IPv6 forms of these.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private_v4(v4);
            }
            let seg = v6.segments();
            // NAT64 (64:ff9b::/96) and deprecated IPv4-compatible (::a.b.c.d).
            if (seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0; 4])
                || (seg[0..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified())
            {
                let o = v6.octets();
                return is_private_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00 // ULA fc00::/7
                || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (seg[0] & 0xffc0) == 0xfec0 // site-local fec0::/10
                || v6 == Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0)
        }
    }
}

fn is_private_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || o[0] == 0 // "this network", incl. 0.0.0.0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // CGNAT 100.64/10
        || o[0] >= 240 // reserved
}

/// Host names that only make sense inside a cluster or LAN.
pub fn is_internal_host(host: &str) -> bool {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    h == "localhost"
        || [
            ".localhost",
            ".internal",
            ".local",
            ".svc",
            ".cluster.local",
            ".lan",
        ]
        .iter()
        .any(|s| h.ends_with(s))
}

/// DNS resolution that applies the SSRF rules to every resolved address.
#[derive(Clone)]
pub struct GuardedResolver {
    allow_private: bool,
}

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let refuse =
                |why: String| std::io::Error::new(std::io::ErrorKind::PermissionDenied, why);
            if !allow_private && is_internal_host(&host) {
                return Err(refuse(format!(
                    "refused: {host} is an internal host name (set allow_private = true to permit it)"
                )));
            }
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if allow_private {
                return Ok(addrs.into_iter());
            }
            let (ok, bad): (Vec<SocketAddr>, Vec<SocketAddr>) =
                addrs.into_iter().partition(|a| !is_private(a.ip()));
            if ok.is_empty() {
                let shown = bad.first().map(|a| a.ip().to_string()).unwrap_or_default();
                return Err(refuse(format!(
                    "refused: {host} resolves to private address {shown} (set allow_private = true to permit it)"
                )));
            }
            Ok(ok.into_iter())
        })
    }
}

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
}

/// Sends signed requests to one endpoint.
#[derive(Clone)]
pub struct Deliverer {
    client: Client<Connector, Full<Bytes>>,
    endpoint: Arc<Endpoint>,
}

static USER_AGENT_VALUE: &str = concat!("natshook/", env!("CARGO_PKG_VERSION"));

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("TLS setup: {0}")]
    Tls(String),
}

fn tls_config() -> Result<rustls::ClientConfig, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A single unparsable system certificate should not disable TLS entirely.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        tracing::warn!("no system CA certificates found; https endpoints will fail to verify");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

impl Deliverer {
    pub fn new(endpoint: Arc<Endpoint>) -> Result<Self, ClientError> {
        let mut http = HttpConnector::new_with_resolver(GuardedResolver {
            allow_private: endpoint.allow_private,
        });
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(endpoint.timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config()?)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(endpoint.concurrency.max(1))
            .build(connector);
        Ok(Self { client, endpoint })
    }

    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// The full header set for one attempt, signature included.
    pub fn headers(&self, req: &Request<'_>, now: SystemTime) -> HeaderMap {
        let ts = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut h = HeaderMap::with_capacity(12 + self.endpoint.headers.len());
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        for (name, value) in &self.endpoint.headers {
            h.insert(name.clone(), value.clone());
        }
        if let Ok(v) = HeaderValue::from_str(req.event) {
            h.insert(X_WEBHOOK_EVENT, v);
        }
        if let Ok(v) = HeaderValue::from_str(req.id) {
            h.insert(X_WEBHOOK_ID, v);
        }
        h.insert(X_WEBHOOK_ATTEMPT, HeaderValue::from(req.attempt));
        h.insert(X_WEBHOOK_TIMESTAMP, HeaderValue::from(ts));
        self.endpoint
            .signer
            .sign_into(req.id, ts, &req.body, &mut h);
        h
    }

    /// One attempt, bounded by the endpoint's timeout (connect, send and response).
    pub async fn send(&self, req: Request<'_>) -> AttemptResult {
        let headers = self.headers(&req, SystemTime::now());
        let mut builder = http::Request::post(self.endpoint.url.clone());
        if let Some(h) = builder.headers_mut() {
            *h = headers;
        }
        let start = Instant::now();
        let request = match builder.body(Full::new(req.body)) {
            Ok(r) => r,
            Err(e) => {
                return AttemptResult {
                    status: AttemptStatus::ConnectError,
                    http_status: None,
                    retry_after: None,
                    error: Some(format!("cannot build request: {e}")),
                    response_body: Bytes::new(),
                    duration: start.elapsed(),
                }
            }
        };
        let outcome = tokio::time::timeout(self.endpoint.timeout, self.exchange(request)).await;
        let duration = start.elapsed();
        match outcome {
            Err(_) => AttemptResult {
                status: AttemptStatus::Timeout,
                http_status: None,
                retry_after: None,
                error: Some(format!(
                    "timed out after {}",
                    humantime::format_duration(self.endpoint.timeout)
                )),
                response_body: Bytes::new(),
                duration,
            },
            Ok(Err(error)) => AttemptResult {
                status: AttemptStatus::ConnectError,
                http_status: None,
                retry_after: None,
                error: Some(error),
                response_body: Bytes::new(),
                duration,
            },
            Ok(Ok((status, retry_after, body))) => AttemptResult {
                status: AttemptStatus::Class(status),
                http_status: Some(status),
                retry_after,
                error: None,
                response_body: body,
                duration,
            },
        }
    }

    async fn exchange(
        &self,
        request: http::Request<Full<Bytes>>,
    ) -> Result<(u16, Option<Duration>, Bytes), String> {
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| describe_client_error(&e))?;
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
    fn private_ranges_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "ff02::1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip} should be private");
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "100.128.0.1",
        ] {
            assert!(!is_private(ip.parse().unwrap()), "{ip} should be public");
        }
    }

    #[test]
    fn internal_host_names() {
        assert!(is_internal_host("localhost"));
        assert!(is_internal_host("api.default.svc.cluster.local"));
        assert!(is_internal_host("metadata.google.internal"));
        assert!(is_internal_host("printer.local."));
        assert!(!is_internal_host("hooks.example.com"));
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
