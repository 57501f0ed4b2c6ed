//! What the benchmarks share: the receiver, the 1 KiB payload, publishing, natshook as
//! a child process, and CPU and RSS read from `/proc`. Each bench includes this module
//! (and tests/common as `common`) on its own, so some of it is unused in either.

#![allow(dead_code)]

use std::convert::Infallible;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::common::{self, free_port, NatsServer};

/// What the receiver saw.
#[derive(Default)]
pub struct Seen {
    pub count: AtomicU64,
    pub window: Mutex<Option<(Instant, Instant)>>,
    pub latencies_us: Mutex<Vec<u64>>,
    /// Messages (the payload's `i`) seen at least once, when [`Seen::track_ids`] asked
    /// for it: a bit per message.
    ids: Mutex<Option<Vec<u64>>>,
    /// Set while `ids` is kept, so the bridge bench's receiver takes no extra lock.
    tracking: AtomicBool,
    pub distinct: AtomicU64,
    /// When each twentieth of the tracked messages had arrived: shows whether a drain
    /// ran evenly or left a tail.
    progress: Mutex<Vec<Instant>>,
    tracked: AtomicU64,
}

impl Seen {
    pub fn reset(&self) {
        self.count.store(0, Ordering::SeqCst);
        self.distinct.store(0, Ordering::SeqCst);
        *self.window.lock().unwrap() = None;
        self.latencies_us.lock().unwrap().clear();
        self.tracking.store(false, Ordering::SeqCst);
        *self.ids.lock().unwrap() = None;
        self.progress.lock().unwrap().clear();
        self.tracked.store(0, Ordering::SeqCst);
    }

    /// Counts distinct messages `0..n` from here on (after a reset), so duplicates
    /// (redeliveries, replicas) show as `count - distinct`.
    pub fn track_ids(&self, n: usize) {
        *self.ids.lock().unwrap() = Some(vec![0; n.div_ceil(64)]);
        self.tracked.store(n as u64, Ordering::SeqCst);
        self.tracking.store(true, Ordering::SeqCst);
    }

    /// Deliveries per second between the first and the last arrival.
    pub fn rate(&self) -> f64 {
        let n = self.count.load(Ordering::SeqCst) as f64;
        match *self.window.lock().unwrap() {
            Some((a, b)) if b > a => (n - 1.0) / (b - a).as_secs_f64(),
            _ => 0.0,
        }
    }

    /// Seconds from the first arrival to each twentieth of the tracked messages.
    pub fn progress_s(&self) -> Vec<f64> {
        let Some((first, _)) = *self.window.lock().unwrap() else {
            return Vec::new();
        };
        let p = self.progress.lock().unwrap();
        p.iter().map(|t| (*t - first).as_secs_f64()).collect()
    }

    fn record_id(&self, body: &[u8]) {
        if !self.tracking.load(Ordering::Relaxed) {
            return;
        }
        let mut ids = self.ids.lock().unwrap();
        let Some(bits) = ids.as_mut() else {
            return;
        };
        let Some(i) = number_after(body, b"\"i\":") else {
            return;
        };
        let (word, bit) = (i as usize / 64, 1u64 << (i % 64));
        if let Some(w) = bits.get_mut(word) {
            if *w & bit == 0 {
                *w |= bit;
                let k = self.distinct.fetch_add(1, Ordering::SeqCst) + 1;
                let n = self.tracked.load(Ordering::Relaxed);
                if n >= 20 && k % (n / 20) == 0 {
                    self.progress.lock().unwrap().push(Instant::now());
                }
            }
        }
    }
}

pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Finds `<key><digits>` in a body without parsing it, so the receiver stays cheap.
fn number_after(body: &[u8], key: &[u8]) -> Option<u64> {
    let pos = body.windows(key.len()).position(|w| w == key)?;
    let digits: Vec<u8> = body[pos + key.len()..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// Name prefix of the receiver's threads: their CPU is read per thread, so the
/// receiver's share of the bench process can be told apart from the raw client's.
pub const RECEIVER_THREADS: &str = "bench-receiver";

/// The bench's runtime (the raw consumer and client, the publisher) and the
/// receiver's, two worker threads each, the receiver's named [`RECEIVER_THREADS`] so
/// that their CPU is read apart.
pub fn runtimes() -> (tokio::runtime::Runtime, tokio::runtime::Runtime) {
    let bench = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("bench runtime");
    let receiver = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(RECEIVER_THREADS)
        .enable_all()
        .build()
        .expect("receiver runtime");
    (bench, receiver)
}

/// A minimal hyper receiver answering `200` with an empty body on every path, on its
/// own runtime (`receiver`), whose threads are named [`RECEIVER_THREADS`].
pub fn start_receiver(receiver: &tokio::runtime::Handle, seen: Arc<Seen>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    receiver.spawn(async move {
        // Registered here, so accepted connections belong to the receiver's runtime.
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                // Out of file descriptors, say: wait for connections to close rather
                // than spin on the error.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let now = Instant::now();
                        if let Some(t) = number_after(&body, b"\"t\":") {
                            let lat = unix_micros().saturating_sub(t);
                            seen.latencies_us.lock().unwrap().push(lat);
                        }
                        seen.record_id(&body);
                        {
                            let mut w = seen.window.lock().unwrap();
                            *w = Some(match *w {
                                None => (now, now),
                                Some((a, _)) => (a, now),
                            });
                        }
                        seen.count.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    port
}

/// A 1 KiB JSON payload; `i` numbers the message, `t` carries the publish time in the
/// latency phase.
pub fn payload(i: usize, t: Option<u64>) -> Bytes {
    let head = match t {
        Some(t) => format!("{{\"t\":{t},\"i\":{i},\"pad\":\""),
        None => format!("{{\"i\":{i},\"pad\":\""),
    };
    let mut s = head;
    while s.len() < 1022 {
        s.push('x');
    }
    s.push_str("\"}");
    Bytes::from(s)
}

pub async fn create_stream(js: &jetstream::Context, name: &str, subject: &str) {
    create_stream_for(js, name, subject, None).await;
}

/// A stream that allows `max_consumers` consumers: nats-server 2.15 caps a stream at
/// 1,000 when the stream sets no limit (a value ≤ 0 no longer means unlimited), and a
/// stream's own explicit value above that is accepted.
pub async fn create_stream_for(
    js: &jetstream::Context,
    name: &str,
    subject: &str,
    max_consumers: Option<usize>,
) {
    let mut config = stream::Config {
        name: name.to_string(),
        subjects: vec![subject.to_string()],
        ..Default::default()
    };
    if let Some(max) = max_consumers {
        config.max_consumers = i32::try_from(max).unwrap_or(i32::MAX);
    }
    js.create_stream(config).await.expect("create stream");
}

/// Publishes messages `0..n` round-robin over `subjects`, 512 acks outstanding.
pub async fn publish(js: &jetstream::Context, subjects: &[String], n: usize) {
    let mut acks = Vec::with_capacity(512);
    for i in 0..n {
        let subject = subjects[i % subjects.len()].clone();
        acks.push(
            js.publish(subject, payload(i, None))
                .await
                .expect("publish"),
        );
        if acks.len() == 512 {
            for a in acks.drain(..) {
                a.await.expect("publish ack");
            }
        }
    }
    for a in acks {
        a.await.expect("publish ack");
    }
}

pub async fn wait_count(seen: &Seen, n: u64, within: Duration, what: &str) {
    if let Err(e) = wait_for(&seen.count, n, within, what).await {
        panic!("{e}");
    }
}

/// Waits until `n` distinct messages arrived (see [`Seen::track_ids`]).
pub async fn wait_distinct(
    seen: &Seen,
    n: u64,
    within: Duration,
    what: &str,
) -> Result<(), String> {
    wait_for(&seen.distinct, n, within, what).await
}

async fn wait_for(counter: &AtomicU64, n: u64, within: Duration, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + within;
    while counter.load(Ordering::SeqCst) < n {
        if Instant::now() > deadline {
            return Err(format!(
                "{what}: only {} of {n} delivered within {} s",
                counter.load(Ordering::SeqCst),
                within.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// The most file descriptors (connections, mostly) a process held, sampled every
/// 250 ms until dropped.
pub struct FdWatch {
    max: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl FdWatch {
    pub fn start(pid: u32) -> Self {
        let max = Arc::new(AtomicU64::new(open_fds(pid)));
        let task = tokio::spawn({
            let max = max.clone();
            async move {
                loop {
                    max.fetch_max(open_fds(pid), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        });
        Self { max, task }
    }

    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }
}

impl Drop for FdWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Open file descriptors of a process, 0 when unreadable.
pub fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

/// Generous: a phase that stalls fails instead of hanging CI.
pub fn drain_timeout(deliveries: usize) -> Duration {
    Duration::from_secs(60 + deliveries as u64 / 500)
}

/// natshook as a child process.
pub struct Process {
    pub child: Child,
    pub http_port: u16,
    _dir: tempfile::TempDir,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn rss_kib(&self, field: &str) -> u64 {
        status_kib(self.child.id(), field)
    }

    pub fn rss_mib(&self, field: &str) -> f64 {
        self.rss_kib(field) as f64 / 1024.0
    }
}

/// A `/proc/<pid>/status` field in KiB (VmRSS, VmHWM, RssAnon), 0 when unreadable.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl Drop for Process {
    /// SIGTERM first, so a natshook run under a profiler (BENCH_NATSHOOK_BIN pointing
    /// at a valgrind wrapper) writes its output; SIGKILL if it does not exit.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds (user + system) from a `/proc/.../stat` file: a process's or a thread's.
/// `BENCH_CPU=user` or `BENCH_CPU=system` counts only that part, to tell the work in
/// a process from the work in the kernel for it (system calls, loopback TCP).
fn stat_cpu_seconds(path: &std::path::Path) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are 14th and 15th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let (user, system) = (ticks(11), ticks(12));
    let counted = match std::env::var("BENCH_CPU").as_deref() {
        Ok("user") => user,
        Ok("system") => system,
        _ => user + system,
    };
    counted / 100.0
}

/// CPU seconds a process has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    stat_cpu_seconds(std::path::Path::new(&format!("/proc/{pid}/stat")))
}

/// CPU seconds the receiver's threads have used so far.
fn receiver_cpu_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|name| name.starts_with(RECEIVER_THREADS))
        })
        .map(|t| stat_cpu_seconds(&t.path().join("stat")))
        .sum()
}

/// CPU microseconds per delivery of each process taking part.
#[derive(Default, Clone, serde::Serialize)]
pub struct CpuPerDelivery {
    /// Every natshook process together (one, or the replicas).
    pub natshook: f64,
    pub nats_server: f64,
    /// The receiver's threads in this process.
    pub receiver: f64,
    /// The rest of this process: the raw consumer in A, the raw client in B, nearly
    /// nothing while natshook drains.
    pub bench: f64,
}

/// CPU seconds of the natshook processes, nats-server, this process and the
/// receiver's threads at the start of a measurement.
pub struct CpuSample {
    natshook: Vec<(u32, f64)>,
    nats: Vec<(u32, f64)>,
    bench: (u32, f64),
    receiver_before: f64,
    at: Instant,
}

impl CpuSample {
    /// `natshook` is empty for the ceilings, where this process is the client; `nats`
    /// holds every node of a cluster, whose CPU is summed.
    pub fn start(natshook: &[&Process], nats: &[&NatsServer]) -> Self {
        let with_cpu = |pid: u32| (pid, cpu_seconds(pid));
        Self {
            natshook: natshook.iter().map(|p| with_cpu(p.pid())).collect(),
            nats: nats
                .iter()
                .map(|n| with_cpu(n.pid().unwrap_or(0)))
                .collect(),
            bench: with_cpu(std::process::id()),
            receiver_before: receiver_cpu_seconds(),
            at: Instant::now(),
        }
    }

    fn used((pid, before): (u32, f64)) -> f64 {
        match pid {
            0 => 0.0,
            pid => cpu_seconds(pid) - before,
        }
    }

    /// CPU seconds natshook (all processes) and nats-server (all nodes) used since the
    /// start.
    pub fn seconds(&self) -> (f64, f64) {
        let natshook = self.natshook.iter().copied().map(Self::used).sum();
        let nats = self.nats.iter().copied().map(Self::used).sum();
        (natshook, nats)
    }

    /// Percent of one core natshook (all processes) and nats-server used since the
    /// start.
    pub fn percent_of_core(&self) -> (f64, f64) {
        let wall = self.at.elapsed().as_secs_f64().max(1e-9);
        let (natshook, nats) = self.seconds();
        (natshook * 100.0 / wall, nats * 100.0 / wall)
    }

    pub fn per_delivery(&self, n: usize) -> CpuPerDelivery {
        let n = n.max(1) as f64;
        let (natshook, nats) = self.seconds();
        let receiver = receiver_cpu_seconds() - self.receiver_before;
        CpuPerDelivery {
            natshook: natshook * 1e6 / n,
            nats_server: nats * 1e6 / n,
            receiver: receiver * 1e6 / n,
            bench: (Self::used(self.bench) - receiver) * 1e6 / n,
        }
    }
}

/// BENCH_NATSHOOK_BIN runs another build (the bench scripts set the shipped, static
/// one); cargo's own build otherwise.
pub fn natshook_bin() -> String {
    std::env::var("BENCH_NATSHOOK_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_natshook").to_string())
}

/// Where natshook finds NATS: every node's URL (comma-separated) and the replicas of
/// natshook's own streams and buckets (`nats.replicas`, one node's worth on one server).
#[derive(Clone)]
pub struct NatsAt {
    pub urls: String,
    pub replicas: usize,
}

impl NatsAt {
    pub fn server(url: String) -> Self {
        Self {
            urls: url,
            replicas: 1,
        }
    }
}

/// natshook's config for the bench: receivers on loopback over plain http, `extra`
/// appended last (e.g. a `[delivery]` table of the design under test).
pub fn natshook_config(
    nats: &NatsAt,
    http_port: u16,
    stream: &str,
    events: &str,
    endpoints: &str,
    extra: &str,
) -> String {
    let (urls, replicas) = (&nats.urls, nats.replicas);
    format!(
        "[nats]\nurl = \"{urls}\"\nstream = \"{stream}\"\nconsumer_prefix = \"bench\"\nreplicas = {replicas}\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n[defaults]\nallow_http = true\nallow_private = true\n{events}\n{endpoints}\n{extra}"
    )
}

/// Starts natshook on a config from [`natshook_config`] without waiting for it.
/// `env`: variables set for natshook besides the benchmark's own environment.
pub fn spawn_natshook(
    nats: &NatsAt,
    stream: &str,
    events: &str,
    endpoints: &str,
    extra: &str,
    env: &[(String, String)],
) -> Process {
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let config = natshook_config(nats, http_port, stream, events, endpoints, extra);
    let path = dir.path().join("natshook.toml");
    std::fs::write(&path, config).unwrap();
    let child = Command::new(natshook_bin())
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", natshook_log())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start natshook");
    Process {
        child,
        http_port,
        _dir: dir,
    }
}

/// natshook's `RUST_LOG` in the benches: `warn`, or BENCH_NATSHOOK_LOG to see more of
/// what a run did (its lines go to the bench's stderr).
pub fn natshook_log() -> String {
    std::env::var("BENCH_NATSHOOK_LOG").unwrap_or_else(|_| "warn".into())
}

/// What `/readyz` said when natshook was not ready in time, or how it exited.
#[derive(Debug)]
pub struct NotReady {
    /// Consumers `/readyz` still listed as not bound.
    pub unbound: usize,
    pub reasons: String,
    /// natshook exited before it was ready.
    pub exited: bool,
}

/// Polls `/readyz` until it answers 200: how long that took.
pub async fn wait_ready(p: &mut Process, within: Duration) -> Result<Duration, NotReady> {
    let start = Instant::now();
    let url = format!("http://127.0.0.1:{}/readyz", p.http_port);
    let mut last = String::new();
    loop {
        match common::http_get(&url).await {
            Ok((200, _)) => return Ok(start.elapsed()),
            Ok((_, body)) => last = body,
            Err(_) => {}
        }
        if let Ok(Some(status)) = p.child.try_wait() {
            return Err(NotReady {
                unbound: 0,
                reasons: format!(
                    "natshook exited before it was ready ({status}; its log is above)"
                ),
                exited: true,
            });
        }
        if start.elapsed() > within {
            return Err(NotReady {
                unbound: last.matches("is not bound").count(),
                reasons: last.lines().take(4).collect::<Vec<_>>().join("; "),
                exited: false,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts natshook and waits (up to 60 s) until it is ready.
pub async fn start_natshook(
    nats_url: &str,
    stream: &str,
    events: &str,
    endpoints: &str,
) -> Process {
    let nats = NatsAt::server(nats_url.to_string());
    let mut p = spawn_natshook(&nats, stream, events, endpoints, "", &[]);
    if let Err(e) = wait_ready(&mut p, Duration::from_secs(60)).await {
        panic!("natshook not ready: {}", e.reasons);
    }
    p
}

/// `k` endpoints named `<prefix><i>`, each posting to its own path with its own secret,
/// with `extra` keys in each.
pub fn many_endpoints(
    k: usize,
    port: u16,
    prefix: &str,
    event: impl Fn(usize) -> String,
    extra: &str,
) -> String {
    (0..k)
        .map(|i| {
            format!(
                "[[endpoints]]\nname = \"{prefix}{i}\"\nurl = \"http://127.0.0.1:{port}/{prefix}{i}\"\nevents = [\"{}\"]\nsecret = \"bench-secret-{i}\"\n{extra}",
                event(i)
            )
        })
        .collect()
}

/// Writes `k` endpoints into the registry bucket (made here with `replicas` when
/// missing), as [`many_endpoints`] would put them in the file: the same names, URLs,
/// events and secrets, so a phase is served alike from either place.
pub async fn register_endpoints(
    js: &jetstream::Context,
    replicas: usize,
    k: usize,
    port: u16,
    prefix: &str,
    event: impl Fn(usize) -> String,
) {
    use futures_util::StreamExt;
    let kv = js
        .create_key_value(jetstream::kv::Config {
            bucket: "NATSHOOK_ENDPOINTS".into(),
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .expect("registry bucket");
    let puts = (0..k).map(|i| {
        let name = format!("{prefix}{i}");
        let record = serde_json::json!({
            "name": name,
            "url": format!("http://127.0.0.1:{port}/{name}"),
            "events": [event(i)],
            "secret": format!("bench-secret-{i}"),
        });
        let kv = kv.clone();
        async move { kv.put(&name, record.to_string().into()).await }
    });
    let written: Vec<_> = futures_util::stream::iter(puts)
        .buffer_unordered(64)
        .collect()
        .await;
    for w in written {
        w.expect("registry put");
    }
}

/// Sum of `natshook_delivery_attempts_total` over the statuses `keep` accepts.
pub async fn attempts(natshook: &Process, keep: impl Fn(&str) -> bool) -> u64 {
    let url = format!("http://127.0.0.1:{}/metrics", natshook.http_port);
    let Ok((200, text)) = common::http_get(&url).await else {
        return 0;
    };
    text.lines()
        .filter(|l| l.starts_with("natshook_delivery_attempts_total{") && keep(l))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Attempts that did not get a 2xx (each one a retry).
pub async fn failed_attempts(natshook: &Process) -> u64 {
    attempts(natshook, |l| !l.contains("\"2xx\"")).await
}

/// Waits (up to `within`) until the whole machine is nearly idle: under 10 % of its
/// CPU busy over one second. What an earlier phase leaves behind (a nats-server
/// cluster shutting down, store directories being deleted, dirty pages being
/// written) would otherwise slow the next phase's processes and inflate its CPU per
/// delivery. Returns the share of the machine that was busy in the last second.
pub async fn quiet_machine(within: Duration) -> f64 {
    fn busy_and_total() -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu = stat.lines().next()?;
        let fields: Vec<u64> = cpu
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal
        let idle = fields.get(3)? + fields.get(4)?;
        let total: u64 = fields.iter().take(8).sum();
        Some((total - idle, total))
    }
    let deadline = Instant::now() + within;
    loop {
        let Some((b0, t0)) = busy_and_total() else {
            return 0.0;
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some((b1, t1)) = busy_and_total() else {
            return 0.0;
        };
        let busy = (b1 - b0) as f64 / (t1 - t0).max(1) as f64;
        if busy < 0.10 || Instant::now() >= deadline {
            return busy;
        }
    }
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` gives them.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
