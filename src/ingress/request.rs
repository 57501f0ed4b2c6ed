//! What a request must show before it is stored, and what it is stored as, read from
//! the request alone: its head is checked before its body is read (so refusing it
//! holds no memory), its signature before anything is derived from it, and only then
//! are its subject and NATS headers made.

use std::time::SystemTime;

use bytes::Bytes;
use http::Method;
use hyper::body::Incoming;

use super::answer::Refusal;
use super::body::declared_length;
use crate::config::{Route, Verify};
use crate::signing::{
    Scheme, TIMESTAMP_TOLERANCE, WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP,
};
use crate::subject_template::Values;

/// Method, declared size and signature headers: all refused before the body is read.
pub(super) fn check_head(route: &Route, req: &http::Request<Incoming>) -> Result<(), Refusal> {
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

/// Signature and timestamp, for routes that are not `scheme = "none"`.
pub(super) fn verify(
    route: &Route,
    headers: &http::HeaderMap,
    body: &Bytes,
) -> Result<(), Refusal> {
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
pub(super) fn subject(
    route: &Route,
    parts: &http::request::Parts,
    body: &Bytes,
) -> Result<String, Refusal> {
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
pub(super) fn nats_headers(route: &Route, request: &http::HeaderMap) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    for h in &route.copy_headers {
        let values = request.get_all(&h.name).into_iter();
        for v in values.take(if h.first_only { 1 } else { usize::MAX }) {
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
