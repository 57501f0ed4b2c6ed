//! The request's headers: natshook's own, the endpoint's, those carried over from the
//! message, the signature; and the redacted copy the delivery log keeps.

use std::time::SystemTime;

use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, HOST, USER_AGENT};

use super::Request;
use crate::config::Endpoint;
use crate::signing::Signer;

pub const X_WEBHOOK_EVENT: HeaderName = HeaderName::from_static("x-webhook-event");
pub const X_WEBHOOK_ID: HeaderName = HeaderName::from_static("x-webhook-id");
pub const X_WEBHOOK_ATTEMPT: HeaderName = HeaderName::from_static("x-webhook-attempt");
pub const X_WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("x-webhook-timestamp");

static USER_AGENT_VALUE: &str = concat!("natshook/", env!("CARGO_PKG_VERSION"));

/// W3C trace context: always carried from the NATS message to the request.
pub const TRACE_HEADERS: [HeaderName; 2] = [
    HeaderName::from_static("traceparent"),
    HeaderName::from_static("tracestate"),
];

/// The headers to carry over from a message's headers: trace context plus the
/// endpoint's `forward_headers`. Names match case-insensitively; values that are not
/// valid in HTTP (CR, LF, control characters) are dropped, never sent.
pub(super) fn forwarded_headers<'a>(
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
        let Some(h) = wanted else { continue };
        match HeaderValue::from_str(value) {
            Ok(v) => out.push((h.clone(), v)),
            // Control characters: no HTTP header can carry the value.
            Err(_) => {
                tracing::debug!(endpoint = %endpoint.name, header = %h, "message header value has control characters; not forwarded")
            }
        }
    }
    out
}

/// `Host` as hyper-util's client would send it: the host, plus the port when it is not
/// the scheme's default.
pub(super) fn host_header(uri: &http::Uri) -> Option<HeaderValue> {
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

/// The full header set for one attempt, signature included. `host` is the endpoint's
/// `Host`, built once (see [`host_header`]).
pub(super) fn request_headers(
    endpoint: &Endpoint,
    host: Option<&HeaderValue>,
    signer: &Signer,
    req: &Request<'_>,
    now: SystemTime,
) -> HeaderMap {
    let ts = crate::time::unix_secs(now);
    let mut h = HeaderMap::with_capacity(12 + endpoint.headers.len());
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    for (name, value) in &req.forwarded {
        h.append(name.clone(), value.clone());
    }
    for (name, value) in &endpoint.headers {
        h.insert(name.clone(), value.clone());
    }
    // A configured or forwarded Host wins, as it would in hyper-util.
    if let Some(host) = host {
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
    signer.sign_into(req.id, ts, &req.body, &mut h);
    h
}

/// Value shown instead of a secret-bearing header.
pub const REDACTED: &str = "[redacted]";

/// Headers natshook itself sends whose values are safe to show.
fn shown_as_is(name: &str) -> bool {
    matches!(
        name,
        "content-type"
            | "user-agent"
            | "x-webhook-event"
            | "x-webhook-id"
            | "x-webhook-attempt"
            | "x-webhook-timestamp"
            | "webhook-id"
            | "webhook-timestamp"
            | "traceparent"
            | "tracestate"
    )
}

/// The request headers with every value redacted except natshook's own
/// non-secret ones: signatures and configured extra headers may be credentials.
pub fn redact(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            let shown = if shown_as_is(name.as_str()) && !value.is_sensitive() {
                value.to_str().unwrap_or(REDACTED).to_string()
            } else {
                REDACTED.to_string()
            };
            (name.as_str().to_string(), shown)
        })
        .collect()
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
    fn signatures_and_configured_headers_are_redacted() {
        let mut h = HeaderMap::new();
        h.insert("x-webhook-id", HeaderValue::from_static("id-1"));
        h.insert("x-webhook-signature", HeaderValue::from_static("abcdef"));
        h.insert("webhook-signature", HeaderValue::from_static("v1,xyz"));
        let mut key = HeaderValue::from_static("api-key-123");
        key.set_sensitive(true);
        h.insert("x-api-key", key);
        let shown = redact(&h);
        let get = |n: &str| shown.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("x-webhook-id"), Some("id-1"));
        assert_eq!(get("x-webhook-signature"), Some(REDACTED));
        assert_eq!(get("webhook-signature"), Some(REDACTED));
        assert_eq!(get("x-api-key"), Some(REDACTED));
    }
}
