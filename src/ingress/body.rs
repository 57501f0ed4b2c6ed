//! Request bodies are the memory a sender controls, so each one is read within its
//! route's `max_body` and a time limit, and the bytes of all the bodies held at once
//! stay within one budget: neither a large body nor many slow ones can exhaust memory.
//! A body takes its room in the budget as its bytes arrive, so a sender that declares
//! a large body and sends none of it holds nothing.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::answer::Refusal;
use crate::config::Route;

/// Longest wait for a request body: a sender trickling bytes holds a connection and
/// up to `max_body` of memory, so it gets `408` instead of unbounded patience.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes of request bodies held at once, over every route: a request takes room for
/// its body as the bytes arrive (its buffer's growth, so at most twice what it sent),
/// and one that finds no room gets `503` at once. The connection cap alone would let
/// one client hold 128 connections × 32 HTTP/2 streams × `max_body` (4 GiB at the
/// default 1 MiB). Taking room only for bytes received means filling the budget takes
/// sending it: a head with a large `Content-Length` and no body takes none.
const BODY_BUDGET: u32 = 64 * 1024 * 1024;

/// [`BODY_BUDGET`], one permit per byte.
pub(super) struct Bodies(Arc<Semaphore>);

impl Bodies {
    pub(super) fn new() -> Self {
        Self(Arc::new(Semaphore::new(BODY_BUDGET as usize)))
    }

    /// `bytes` more of [`BODY_BUDGET`], if that much is free.
    fn take(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let bytes = u32::try_from(bytes).ok()?;
        Arc::clone(&self.0).try_acquire_many_owned(bytes).ok()
    }
}

/// A body's share of [`BODY_BUDGET`], held until the request is answered: the body
/// stays in memory until JetStream has it.
#[derive(Default)]
pub(super) struct Room(Option<OwnedSemaphorePermit>);

impl Room {
    fn add(&mut self, more: OwnedSemaphorePermit) {
        match &mut self.0 {
            Some(held) => held.merge(more),
            None => self.0 = Some(more),
        }
    }
}

/// The request's `Content-Length`, when it has a usable one.
pub(super) fn declared_length(req: &http::Request<Incoming>) -> Option<u64> {
    req.headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// A body being read: its bytes, and the room they take in the budget.
struct Kept<'a> {
    bodies: &'a Bodies,
    bytes: Vec<u8>,
    room: Room,
    /// Bytes of the budget `room` holds: the buffer's capacity.
    held: usize,
    /// The largest buffer this body needs: its declared length, else `max_body`.
    limit: usize,
}

impl Kept<'_> {
    /// Appends `data`, first taking room for the buffer's growth. The buffer doubles
    /// (up to `limit`), so a body arriving in small pieces is copied a few times, not
    /// once per piece, and holds at most twice what it sent.
    fn push(&mut self, data: &[u8]) -> Result<(), Refusal> {
        let need = self.bytes.len() + data.len();
        if need > self.held {
            let grown = need
                .max(self.held.saturating_mul(2))
                .min(self.limit.max(need));
            let more = self.bodies.take(grown - self.held).ok_or(Refusal::NoRoom)?;
            self.room.add(more);
            self.held = grown;
            self.bytes.reserve_exact(grown - self.bytes.len());
        }
        self.bytes.extend_from_slice(data);
        Ok(())
    }
}

/// The body within `max_body` and [`BODY_TIMEOUT`], and the room it holds in the
/// budget.
///
/// Each piece is copied out as it arrives: hyper hands a piece out as a slice of its
/// read buffer, so keeping the pieces of a body sent a byte per packet would keep a
/// whole buffer (8 KiB) per byte, far beyond the room the request took.
pub(super) async fn read_body(
    route: &Route,
    body: Incoming,
    bodies: &Bodies,
) -> Result<(Bytes, Room), Refusal> {
    let declared = hyper::body::Body::size_hint(&body).exact();
    let limit = declared
        .and_then(|n| usize::try_from(n).ok())
        .map_or(route.max_body, |n| n.min(route.max_body));
    let mut kept = Kept {
        bodies,
        bytes: Vec::new(),
        room: Room::default(),
        held: 0,
        limit,
    };
    let read = async {
        let mut body = Limited::new(body, route.max_body);
        while let Some(frame) = body.frame().await {
            let frame = match frame {
                Ok(frame) => frame,
                Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
                    return Err(Refusal::TooLarge(route.max_body))
                }
                Err(_) => return Err(Refusal::BodyUnreadable),
            };
            if let Ok(data) = frame.into_data() {
                kept.push(&data)?;
            }
        }
        Ok(())
    };
    match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Err(_) => Err(Refusal::BodyTimeout),
        Ok(Err(refused)) => Err(refused),
        Ok(Ok(())) => Ok((Bytes::from(kept.bytes), kept.room)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(bodies: &Bodies, limit: usize) -> Kept<'_> {
        Kept {
            bodies,
            bytes: Vec::new(),
            room: Room::default(),
            held: 0,
            limit,
        }
    }

    fn free(bodies: &Bodies) -> usize {
        bodies.0.available_permits()
    }

    #[test]
    fn a_body_holds_room_for_what_arrived_not_what_it_declared() {
        let bodies = Bodies::new();
        let budget = BODY_BUDGET as usize;
        let mut k = kept(&bodies, 1024 * 1024);
        assert_eq!(
            free(&bodies),
            budget,
            "nothing is taken before a byte arrives"
        );
        k.push(&[1; 100]).unwrap_or_else(|_| panic!("room"));
        assert_eq!(free(&bodies), budget - 100);
        // Growth doubles, within the declared length.
        k.push(&[2; 10]).unwrap_or_else(|_| panic!("room"));
        assert_eq!(free(&bodies), budget - 200);
        let mut small = kept(&bodies, 150);
        small.push(&[3; 100]).unwrap_or_else(|_| panic!("room"));
        small.push(&[3; 10]).unwrap_or_else(|_| panic!("room"));
        assert_eq!(small.held, 150, "never past the declared length");
        assert_eq!(k.bytes, [[1u8; 100].as_slice(), &[2; 10]].concat());
        drop((k, small));
        assert_eq!(free(&bodies), budget, "all of it back once answered");
    }

    #[test]
    fn a_body_that_finds_no_room_is_refused_and_holds_nothing() {
        let bodies = Bodies::new();
        let budget = BODY_BUDGET as usize;
        let mut big = kept(&bodies, budget);
        big.push(&vec![0; budget - 10])
            .unwrap_or_else(|_| panic!("room"));
        let mut late = kept(&bodies, 1024);
        assert!(matches!(late.push(&[0; 11]), Err(Refusal::NoRoom)));
        late.push(&[0; 10]).unwrap_or_else(|_| panic!("room"));
        drop((big, late));
        assert_eq!(free(&bodies), budget);
    }
}
