//! Request bodies are the memory a sender controls, so each one is read within its
//! route's `max_body` and a time limit, and the bytes of all the bodies held at once
//! stay within one budget: neither a large body nor many slow ones can exhaust memory.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::answer::Refusal;
use crate::config::Route;

/// Longest wait for a request body: a sender trickling bytes holds a connection and
/// up to `max_body` of memory, so it gets `408` instead of unbounded patience.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes of request bodies held at once, over every route: what each request may
/// hold (its declared `Content-Length`, else its route's `max_body`) is set aside
/// before its body is read, and a request that finds no room gets `503` at once. The
/// connection cap alone would let one client hold 128 connections × 32 HTTP/2
/// streams × `max_body` (4 GiB at the default 1 MiB).
const BODY_BUDGET: u32 = 64 * 1024 * 1024;

/// [`BODY_BUDGET`], one permit per byte.
pub(super) struct Bodies(Arc<Semaphore>);

impl Bodies {
    pub(super) fn new() -> Self {
        Self(Arc::new(Semaphore::new(BODY_BUDGET as usize)))
    }

    /// Sets aside what `req` may hold of [`BODY_BUDGET`]: its declared length (at most
    /// `max_body`, as `check_head` saw to), else `max_body`.
    pub(super) fn room_for(
        &self,
        route: &Route,
        req: &http::Request<Incoming>,
    ) -> Option<OwnedSemaphorePermit> {
        let max = route.max_body as u64;
        let bytes = declared_length(req).map_or(max, |n| n.min(max));
        let bytes = u32::try_from(bytes)
            .unwrap_or(u32::MAX)
            .clamp(1, BODY_BUDGET);
        Arc::clone(&self.0).try_acquire_many_owned(bytes).ok()
    }
}

/// The request's `Content-Length`, when it has a usable one.
pub(super) fn declared_length(req: &http::Request<Incoming>) -> Option<u64> {
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
pub(super) async fn read_body(route: &Route, body: Incoming) -> Result<Bytes, Refusal> {
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
