//! The accept loop every natshook listener runs, with its limits.
//!
//! Whoever reaches the port (all interfaces by default) must not be able to hold the
//! listener: connections are capped, one without a request in progress is closed
//! after `IDLE_TIMEOUT`, and when every slot is taken a new connection replaces the
//! longest idle one, or else the one whose request has run longest, once that is past
//! `BUSY_EVICT` (a client trickling a request body), so `/healthz` keeps answering under
//! a flood of stalled clients.
//!
//! The `[http]` listener and a dedicated `[ingress] listen` one both run it, each
//! with its own handler.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::ListenError;
use crate::backoff::Backoff;

/// Most connections held open at once. Prometheus, the kubelet's probes and the admin
/// API need a handful; the cap keeps a flood of connections from taking the file
/// descriptors that deliveries and NATS need (it stays well under the common limit
/// of 1,024, and under 256 with room to spare).
const MAX_CONNECTIONS: usize = 128;

/// A connection without a request in progress (nothing sent yet, a partial request
/// head, keep-alive between requests, a response the client does not read) is closed
/// after this long. Probes and scrapes send their request at once; a stalled or
/// trickling client cannot hold a slot.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// With every slot taken and no connection idle, a request in progress for this long
/// is closed to make room. natshook answers its own routes in well under this (an
/// ingress request waits at most `publish_timeout` for JetStream); a client that holds
/// a request open longer is trickling its body, and under a full listener the newcomer
/// (a probe, a provider's next webhook) is worth more. A provider whose request was cut
/// off retries it, since natshook answers `2xx` only once the message is stored.
const BUSY_EVICT: Duration = Duration::from_secs(5);

/// Concurrent HTTP/2 streams per connection.
const MAX_STREAMS: u32 = 32;

/// Pause after a failed `accept`, doubling up to the maximum while it keeps failing.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(1);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Longest wait for a connection closed to make room to drop its socket.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Listener warnings that repeat under load are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

type Builder = Arc<auto::Builder<TokioExecutor>>;

/// Binds now (so a taken port fails start-up) and serves until `stop`, with
/// `handler` answering every request.
pub async fn serve_with<H, F>(
    listen: SocketAddr,
    stop: CancellationToken,
    handler: H,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ListenError>
where
    H: Fn(http::Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| ListenError::Bind(listen, e))?;
    let local = listener
        .local_addr()
        .map_err(|e| ListenError::Bind(listen, e))?;
    let handle = tokio::spawn(accept_loop(listener, builder(), handler, stop));
    Ok((local, handle))
}

fn builder() -> Builder {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(IDLE_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS);
    Arc::new(builder)
}

/// The warnings the loop repeats, each throttled on its own.
#[derive(Default)]
struct Warnings {
    accept_failed: Throttle,
    made_room: Throttle,
    refused: Throttle,
}

async fn accept_loop<H, F>(
    listener: TcpListener,
    builder: Builder,
    handler: H,
    stop: CancellationToken,
) where
    H: Fn(http::Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let slots = Arc::new(Slots::default());
    let mut backoff = Backoff::new(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
    let mut warnings = Warnings::default();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => r,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => {
                backoff.reset();
                tcp
            }
            // The client gave up before it was accepted: nothing to wait for.
            Err(e) if per_connection(&e) => continue,
            Err(e) => {
                let pause = accept_failed(&e, &slots, &mut backoff, &mut warnings);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(pause) => continue,
                }
            }
        };
        let Some((id, conn, closed)) = admit(&slots, &mut warnings) else {
            continue;
        };
        // The slot is free once the closed connection's socket is: wait for its task to
        // drop it (it wakes at once), or accepting faster than closed connections go
        // would hold more descriptors than the cap allows. The bound only guards
        // against a task that never ran to its end.
        if let Some(closed) = closed {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::timeout(CLOSE_WAIT, closed.gone.cancelled()) => {}
            }
        }
        tokio::spawn(serve_connection(
            tcp,
            id,
            conn,
            slots.clone(),
            builder.clone(),
            handler.clone(),
        ));
    }
}

/// Out of file descriptors (or memory). The error repeats until something is
/// closed, so the loop pauses instead of spinning; an idle connection makes room for
/// the one waiting, so a probe still gets in when the descriptors went elsewhere.
/// Returns the pause.
fn accept_failed(
    e: &std::io::Error,
    slots: &Slots,
    backoff: &mut Backoff,
    warnings: &mut Warnings,
) -> Duration {
    let freed = slots.close_idlest();
    if let Some(skipped) = warnings.accept_failed.due() {
        tracing::warn!(
            error = %e,
            suppressed = skipped,
            "accept failed; pausing the listener briefly"
        );
    }
    let delay = backoff.next_delay();
    if freed {
        ACCEPT_BACKOFF_MIN
    } else {
        delay
    }
}

/// A slot for the accepted connection, with the warnings for a full listener.
fn admit(slots: &Slots, warnings: &mut Warnings) -> Option<(u64, Arc<Conn>, Option<Arc<Conn>>)> {
    let Some((id, conn, closed)) = slots.admit() else {
        if let Some(skipped) = warnings.refused.due() {
            tracing::warn!(
                limit = MAX_CONNECTIONS,
                suppressed = skipped,
                "HTTP connection refused: every connection has a request in progress, none for long"
            );
        }
        return None;
    };
    if closed.is_some() {
        if let Some(skipped) = warnings.made_room.due() {
            tracing::warn!(
                limit = MAX_CONNECTIONS,
                suppressed = skipped,
                "HTTP connection limit reached; closed the longest idle connection, or one whose request ran past {}s",
                BUSY_EVICT.as_secs()
            );
        }
    }
    Some((id, conn, closed))
}

/// Serves one connection until it ends, is closed to make room, or idles too long.
async fn serve_connection<H, F>(
    tcp: TcpStream,
    id: u64,
    conn: Arc<Conn>,
    slots: Arc<Slots>,
    builder: Builder,
    handler: H,
) where
    H: Fn(http::Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    // Says the socket is gone once this task ends, however it ends.
    let _gone = conn.gone.clone().drop_guard();
    let svc = {
        let conn = conn.clone();
        service_fn(move |req| {
            let busy = conn.begin();
            let response = handler(req);
            async move {
                let response = response.await;
                drop(busy);
                Ok::<_, Infallible>(response)
            }
        })
    };
    let serving = builder.serve_connection(TokioIo::new(tcp), svc);
    // Dropping the connection future closes the socket: between requests, or to make
    // room for a newcomer when a request has run past `BUSY_EVICT`.
    tokio::select! {
        _ = serving => {}
        _ = conn.close.cancelled() => {}
        _ = conn.idle_too_long() => {}
    }
    slots.remove(id);
}

/// Errors of one pending connection (it was reset or aborted before `accept`), as
/// opposed to errors of the listener or the process, which repeat until something
/// changes.
fn per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    )
}

/// Locks a mutex whose data stays consistent even if a holder panicked (every
/// critical section here is a few assignments).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The open connections, so that a new one can take the place of the longest idle
/// one when all slots are used: an attacker's stalled connections are then the ones
/// that go, and a probe, which sends its request at once, gets in.
#[derive(Default)]
struct Slots {
    inner: Mutex<SlotsInner>,
}

#[derive(Default)]
struct SlotsInner {
    next_id: u64,
    open: HashMap<u64, Arc<Conn>>,
}

impl SlotsInner {
    fn close_idlest(&mut self) -> Option<Arc<Conn>> {
        let (_, id) = self.earliest(Conn::idle_since)?;
        self.close(id)
    }

    /// The connection whose request has been in progress longest, if that is past
    /// [`BUSY_EVICT`].
    fn close_stuck(&mut self) -> Option<Arc<Conn>> {
        let (since, id) = self.earliest(Conn::busy_since)?;
        (since.elapsed() >= BUSY_EVICT).then(|| self.close(id))?
    }

    /// The connection with the earliest `since` (idle since, busy since), and that time.
    fn earliest(&self, since: fn(&Conn) -> Option<Instant>) -> Option<(Instant, u64)> {
        self.open
            .iter()
            .filter_map(|(id, c)| since(c).map(|t| (t, *id)))
            .min()
    }

    fn close(&mut self, id: u64) -> Option<Arc<Conn>> {
        let conn = self.open.remove(&id)?;
        conn.close.cancel();
        Some(conn)
    }
}

impl Slots {
    /// A slot for a new connection, closing the longest idle connection when all are
    /// taken, or else the one stuck longest in a request (returned, so the caller can
    /// wait for its socket to go); `None` when every connection has a request in
    /// progress, none of them for long.
    fn admit(&self) -> Option<(u64, Arc<Conn>, Option<Arc<Conn>>)> {
        let mut s = lock(&self.inner);
        let mut closed = None;
        if s.open.len() >= MAX_CONNECTIONS {
            closed = Some(s.close_idlest().or_else(|| s.close_stuck())?);
        }
        s.next_id += 1;
        let id = s.next_id;
        let conn = Arc::new(Conn {
            activity: Mutex::new(Activity {
                in_progress: Vec::new(),
                next: 0,
                since: Instant::now(),
            }),
            close: CancellationToken::new(),
            gone: CancellationToken::new(),
        });
        s.open.insert(id, conn.clone());
        Some((id, conn, closed))
    }

    fn close_idlest(&self) -> bool {
        lock(&self.inner).close_idlest().is_some()
    }

    fn remove(&self, id: u64) {
        lock(&self.inner).open.remove(&id);
    }
}

struct Conn {
    activity: Mutex<Activity>,
    close: CancellationToken,
    /// Cancelled when the connection's task has dropped the socket.
    gone: CancellationToken,
}

struct Activity {
    /// Requests whose response is not ready yet, each with when it started (HTTP/2
    /// runs up to `MAX_STREAMS` at once), by a number of the connection's own.
    in_progress: Vec<(u64, Instant)>,
    next: u64,
    /// When the connection was opened or its last request was answered.
    since: Instant,
}

/// Marks a request in progress until dropped (also when the connection is dropped
/// mid-request).
struct Busy(Arc<Conn>, u64);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut a = lock(&self.0.activity);
        a.in_progress.retain(|(n, _)| *n != self.1);
        if a.in_progress.is_empty() {
            a.since = Instant::now();
        }
    }
}

impl Conn {
    fn begin(self: &Arc<Self>) -> Busy {
        let mut a = lock(&self.activity);
        let n = a.next;
        a.next += 1;
        a.in_progress.push((n, Instant::now()));
        Busy(self.clone(), n)
    }

    /// `None` while a request is in progress.
    fn idle_since(&self) -> Option<Instant> {
        let a = lock(&self.activity);
        a.in_progress.is_empty().then_some(a.since)
    }

    /// When the oldest request in progress started; `None` while none is. An HTTP/2
    /// client whose streams overlap without end is never "busy" longer than its
    /// slowest request.
    fn busy_since(&self) -> Option<Instant> {
        let a = lock(&self.activity);
        a.in_progress.iter().map(|(_, t)| *t).min()
    }

    /// Resolves once the connection has been without a request for `IDLE_TIMEOUT`.
    /// hyper's `header_read_timeout` bounds an HTTP/1 request head; this also covers
    /// what hyper has no timer for: a client that sends nothing at all (hyper-util is
    /// still waiting to tell HTTP/1 from HTTP/2) and an HTTP/2 connection between
    /// streams.
    async fn idle_too_long(&self) {
        loop {
            let wake = match self.idle_since() {
                Some(since) if since.elapsed() >= IDLE_TIMEOUT => return,
                Some(since) => since + IDLE_TIMEOUT,
                None => Instant::now() + IDLE_TIMEOUT,
            };
            tokio::time::sleep_until(wake.into()).await;
        }
    }
}

/// A warning that can repeat many times a second (a flood of connections) is logged
/// at most once per `WARN_EVERY`, with the number left out since.
#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
    skipped: u64,
}

impl Throttle {
    fn due(&mut self) -> Option<u64> {
        match self.last {
            Some(t) if t.elapsed() < WARN_EVERY => {
                self.skipped += 1;
                None
            }
            _ => {
                self.last = Some(Instant::now());
                Some(std::mem::take(&mut self.skipped))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_listener_closes_the_longest_idle_connection_never_a_busy_one() {
        let slots = Slots::default();
        let mut conns = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            let (id, conn, closed) = slots.admit().expect("a free slot");
            assert!(closed.is_none());
            conns.push((id, conn));
        }
        // The oldest is busy, so the second oldest is the longest idle.
        let busy = conns[0].1.begin();
        let (_, _, closed) = slots.admit().expect("room made");
        assert!(closed.is_some());
        assert!(!conns[0].1.close.is_cancelled());
        assert!(conns[1].1.close.is_cancelled());
        // With every connection busy, a new one is refused.
        let _all_busy: Vec<_> = conns[2..].iter().map(|(_, c)| c.begin()).collect();
        let newest = lock(&slots.inner)
            .open
            .values()
            .find(|c| c.idle_since().is_some())
            .cloned();
        let _newest_busy = newest.map(|c| c.begin());
        assert!(slots.admit().is_none());
        drop(busy);
        assert!(conns[0].1.idle_since().is_some());
        assert!(slots.admit().is_some());
        assert!(conns[0].1.close.is_cancelled());
    }

    #[test]
    fn a_full_busy_listener_closes_the_request_stuck_past_the_limit() {
        let slots = Slots::default();
        let conns: Vec<_> = (0..MAX_CONNECTIONS)
            .map(|_| slots.admit().expect("a free slot").1)
            .collect();
        let _busy: Vec<_> = conns.iter().map(Conn::begin).collect();
        assert!(slots.admit().is_none(), "no request has run long");
        // One request has been trickling its body for longer than the limit.
        let stuck = &conns[7];
        lock(&stuck.activity).in_progress[0].1 =
            Instant::now() - BUSY_EVICT - Duration::from_secs(1);
        let (_, _, closed) = slots.admit().expect("room made");
        assert!(closed.is_some_and(|c| Arc::ptr_eq(&c, stuck)));
        assert!(stuck.close.is_cancelled());
        assert_eq!(
            conns.iter().filter(|c| c.close.is_cancelled()).count(),
            1,
            "only the stuck one closed"
        );
    }

    #[test]
    fn overlapping_requests_are_busy_since_the_oldest_still_running() {
        let slots = Slots::default();
        let (_, conn, _) = slots.admit().expect("a slot");
        let first = conn.begin();
        lock(&conn.activity).in_progress[0].1 = Instant::now() - Duration::from_secs(60);
        let second = conn.begin();
        assert!(conn
            .busy_since()
            .is_some_and(|t| t.elapsed() >= Duration::from_secs(60)));
        // The old stream ends while a new one runs: busy only since the new one.
        drop(first);
        let third = conn.begin();
        assert!(conn
            .busy_since()
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1)));
        assert!(conn.idle_since().is_none());
        drop((second, third));
        assert!(conn.busy_since().is_none());
        assert!(conn.idle_since().is_some());
    }

    #[test]
    fn a_repeated_warning_is_logged_once_per_interval_with_the_count_left_out() {
        let mut t = Throttle::default();
        assert_eq!(t.due(), Some(0));
        for _ in 0..10 {
            assert_eq!(t.due(), None);
        }
        t.last = Instant::now().checked_sub(WARN_EVERY);
        assert_eq!(t.due(), Some(10));
    }
}
