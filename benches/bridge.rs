//! natshook benchmark: everything measured side by side in one run on this machine.
//!
//!   ./scripts/bench.sh                 (= cargo bench --bench bridge, release build)
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it runs in smoke mode:
//! tiny counts, checks that every phase delivers everything, reports no speed claims.
//!
//! Phases, each on its own stream of the same nats-server, 1 KiB JSON messages, one
//! minimal hyper receiver answering 200:
//!   A  raw JetStream consume + ack with async-nats (no HTTP)
//!   B  raw HTTP POSTs with hyper-util's pooled client, 64 in flight (no NATS)
//!   N  natshook draining a stream published in full beforehand (1 endpoint)
//!   L  natshook at a fixed publish rate: publish-to-receiver latency
//!   M  natshook with 50 endpoints sharing the same total load, each its own event
//!   F  natshook with 50 endpoints that all receive every message (fan-out), same total
//!   P  a hand-written Python bridge (bench/python_bridge.py) draining the same load
//!
//! BENCH_MESSAGES=N changes the per-phase count, BENCH_PHASES=NF runs only some
//! phases (for profiling), BENCH_NATSHOOK_BIN=path measures another natshook build,
//! BENCH_ROUNDS=K repeats the throughput phases K times (default 3) and reports the
//! median of each headline figure next to every round's value,
//! BENCH_MANY_CONCURRENCY=C sets `concurrency` on the 50 endpoints of M and F.

#[path = "../tests/common/mod.rs"]
mod common;

use std::convert::Infallible;
use std::future::IntoFuture;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, consumer::pull, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

use common::{free_port, tool, NatsServer};

#[derive(Clone)]
struct Opts {
    smoke: bool,
    /// Messages per throughput phase.
    n: usize,
    /// Seconds of the fixed-rate latency phase.
    latency_secs: u64,
    /// Messages per second in the latency phase.
    rate: u64,
    endpoints_many: usize,
    /// Phase letters to run (`BENCH_PHASES=N`, e.g. while profiling); all by default.
    phases: String,
}

impl Opts {
    fn runs(&self, phase: char) -> bool {
        self.phases.contains(phase)
    }
}

/// What the receiver saw.
#[derive(Default)]
struct Seen {
    count: AtomicU64,
    window: Mutex<Option<(Instant, Instant)>>,
    latencies_us: Mutex<Vec<u64>>,
}

impl Seen {
    fn reset(&self) {
        self.count.store(0, Ordering::SeqCst);
        *self.window.lock().unwrap() = None;
        self.latencies_us.lock().unwrap().clear();
    }

    /// Deliveries per second between the first and the last arrival.
    fn rate(&self) -> f64 {
        let n = self.count.load(Ordering::SeqCst) as f64;
        match *self.window.lock().unwrap() {
            Some((a, b)) if b > a => (n - 1.0) / (b - a).as_secs_f64(),
            _ => 0.0,
        }
    }
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Finds `"t":<digits>` in a body without parsing it, so the receiver stays cheap.
fn publish_micros(body: &[u8]) -> Option<u64> {
    let pos = body.windows(4).position(|w| w == b"\"t\":")?;
    let digits: Vec<u8> = body[pos + 4..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// Name prefix of the receiver's threads: their CPU is read per thread, so the
/// receiver's share of this process can be told apart from the raw client's in B.
const RECEIVER_THREADS: &str = "bench-receiver";

/// The receiver, on its own runtime (`receiver`), whose threads are named
/// [`RECEIVER_THREADS`].
fn start_receiver(receiver: &tokio::runtime::Handle, seen: Arc<Seen>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    receiver.spawn(async move {
        // Registered here, so accepted connections belong to the receiver's runtime.
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
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
                        if let Some(t) = publish_micros(&body) {
                            let lat = unix_micros().saturating_sub(t);
                            seen.latencies_us.lock().unwrap().push(lat);
                        }
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

/// A 1 KiB JSON payload; `t` carries the publish time in the latency phase.
fn payload(i: usize, t: Option<u64>) -> Bytes {
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

async fn create_stream(js: &jetstream::Context, name: &str, subject: &str) {
    js.create_stream(stream::Config {
        name: name.to_string(),
        subjects: vec![subject.to_string()],
        ..Default::default()
    })
    .await
    .expect("create stream");
}

async fn publish(js: &jetstream::Context, subjects: &[String], n: usize) {
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

async fn wait_count(seen: &Seen, n: u64, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    while seen.count.load(Ordering::SeqCst) < n {
        assert!(
            Instant::now() < deadline,
            "{what}: only {} of {n} delivered",
            seen.count.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Phase A: consume + ack with async-nats, nothing else.
async fn ceiling_nats(
    js: &jetstream::Context,
    nats: &NatsServer,
    n: usize,
) -> (f64, CpuPerDelivery) {
    create_stream(js, "BENCH_A", "bench.a").await;
    publish(js, &["bench.a".to_string()], n).await;
    let stream = js.get_stream("BENCH_A").await.unwrap();
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("ceiling".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let cpu = CpuSample::start(None, nats);
    let start = Instant::now();
    let mut got = 0;
    while got < n {
        let m = match messages.next().await.expect("stream ended") {
            Ok(m) => m,
            // A missed heartbeat under load is not a lost message: keep pulling.
            Err(e) if e.kind() == pull::MessagesErrorKind::MissingHeartbeat => continue,
            Err(e) => panic!("consume: {e}"),
        };
        m.ack().await.expect("ack");
        got += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    (rate, cpu.per_delivery(n))
}

/// Phase B: POSTs with the pooled client natshook uses, 64 in flight.
async fn ceiling_http(port: u16, nats: &NatsServer, n: usize) -> (f64, CpuPerDelivery) {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build_http::<Full<Bytes>>();
    let uri: http::Uri = format!("http://127.0.0.1:{port}/b").parse().unwrap();
    let next = Arc::new(AtomicU64::new(0));
    let cpu = CpuSample::start(None, nats);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let client = client.clone();
        let uri = uri.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                if i >= n {
                    return;
                }
                let req = http::Request::post(uri.clone())
                    .header("content-type", "application/json")
                    .body(Full::new(payload(i, None)))
                    .unwrap();
                let resp = client.request(req).await.expect("post");
                let _ = resp.into_body().collect().await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    (rate, cpu.per_delivery(n))
}

struct Process {
    child: Child,
    http_port: u16,
    _dir: tempfile::TempDir,
}

impl Process {
    fn rss_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

/// CPU seconds (user + system) from a `/proc/.../stat` file: a process's or a thread's.
fn stat_cpu_seconds(path: &std::path::Path) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are 14th and 15th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
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
#[derive(Default, serde::Serialize)]
struct CpuPerDelivery {
    natshook: f64,
    nats_server: f64,
    /// The receiver's threads in this process.
    receiver: f64,
    /// The rest of this process: the raw consumer in A, the raw client in B, nearly
    /// nothing while natshook drains.
    bench: f64,
}

/// CPU seconds of natshook, nats-server, this process and the receiver's threads at
/// the start of a phase.
struct CpuSample {
    pids: [u32; 3],
    before: [f64; 3],
    receiver_before: f64,
}

impl CpuSample {
    /// `natshook` is None for the ceilings, where this process is the client.
    fn start(natshook: Option<&Process>, nats: &NatsServer) -> Self {
        let pids = [
            natshook.map(|p| p.child.id()).unwrap_or(0),
            nats.pid().unwrap_or(0),
            std::process::id(),
        ];
        Self {
            pids,
            before: pids.map(cpu_seconds),
            receiver_before: receiver_cpu_seconds(),
        }
    }

    fn per_delivery(&self, n: usize) -> CpuPerDelivery {
        let per = |i: usize| match self.pids[i] {
            0 => 0.0,
            pid => (cpu_seconds(pid) - self.before[i]) * 1e6 / n as f64,
        };
        let receiver = (receiver_cpu_seconds() - self.receiver_before) * 1e6 / n as f64;
        CpuPerDelivery {
            natshook: per(0),
            nats_server: per(1),
            receiver,
            bench: per(2) - receiver,
        }
    }
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

/// BENCH_NATSHOOK_BIN runs another build (scripts/bench.sh sets the shipped, static
/// one) against the same ceilings; cargo's own build otherwise.
fn natshook_bin() -> String {
    std::env::var("BENCH_NATSHOOK_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_natshook").to_string())
}

async fn start_natshook(nats_url: &str, stream: &str, events: &str, endpoints: &str) -> Process {
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let config = format!(
        "[nats]\nurl = \"{nats_url}\"\nstream = \"{stream}\"\nconsumer_prefix = \"bench\"\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n[defaults]\nallow_http = true\nallow_private = true\n{events}\n{endpoints}"
    );
    let path = dir.path().join("natshook.toml");
    std::fs::write(&path, config).unwrap();
    let bin = natshook_bin();
    let child = Command::new(bin)
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start natshook");
    let p = Process {
        child,
        http_port,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, _)) =
            common::http_get(&format!("http://127.0.0.1:{}/readyz", p.http_port)).await
        {
            break;
        }
        assert!(Instant::now() < deadline, "natshook not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p
}

/// `k` endpoints named `<prefix><i>`, each posting to its own path with its own secret.
/// BENCH_MANY_CONCURRENCY=N sets `concurrency` on every one of those endpoints (the
/// tuning knob for many endpoints); the contract default (64) otherwise.
fn many_endpoints(k: usize, port: u16, prefix: &str, event: impl Fn(usize) -> String) -> String {
    let concurrency = std::env::var("BENCH_MANY_CONCURRENCY")
        .map(|c| format!("concurrency = {c}\n"))
        .unwrap_or_default();
    (0..k)
        .map(|i| {
            format!(
                "[[endpoints]]\nname = \"{prefix}{i}\"\nurl = \"http://127.0.0.1:{port}/{prefix}{i}\"\nevents = [\"{}\"]\nsecret = \"bench-secret-{i}\"\n{concurrency}",
                event(i)
            )
        })
        .collect()
}

/// What one natshook phase measured.
struct Drain {
    rate: f64,
    cpu: CpuPerDelivery,
    /// Attempts that did not get a 2xx (each one a retry): none are expected against
    /// the bench receiver, so a non-zero count explains an outlier rate.
    failed_attempts: u64,
}

/// Waits for `deliveries` at the receiver: the rate and natshook's, nats-server's and
/// the receiver's CPU per delivery meanwhile.
async fn measure_drain(
    seen: &Seen,
    nats: &NatsServer,
    natshook: &Process,
    deliveries: usize,
    what: &str,
) -> Drain {
    let cpu = CpuSample::start(Some(natshook), nats);
    wait_count(seen, deliveries as u64, drain_timeout(deliveries), what).await;
    let rate = seen.rate();
    let cpu = cpu.per_delivery(deliveries);
    let failed_attempts = failed_attempts(natshook).await;
    if failed_attempts > 0 {
        eprintln!("{what}: {failed_attempts} attempt(s) without a 2xx (see natshook's log above)");
    }
    seen.reset();
    Drain {
        rate,
        cpu,
        failed_attempts,
    }
}

/// Sum of `natshook_delivery_attempts_total` over every status but 2xx.
async fn failed_attempts(natshook: &Process) -> u64 {
    let url = format!("http://127.0.0.1:{}/metrics", natshook.http_port);
    let Ok((200, text)) = common::http_get(&url).await else {
        return 0;
    };
    text.lines()
        .filter(|l| l.starts_with("natshook_delivery_attempts_total{") && !l.contains("\"2xx\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Generous: a phase that stalls fails instead of hanging CI.
fn drain_timeout(deliveries: usize) -> Duration {
    Duration::from_secs(60 + deliveries as u64 / 500)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx] as f64 / 1000.0
}

#[derive(Default, serde::Serialize)]
struct Results {
    mode: &'static str,
    messages: usize,
    /// The natshook binary measured.
    natshook: String,
    ceiling_nats_per_s: f64,
    ceiling_http_per_s: f64,
    natshook_per_s: f64,
    natshook_50_endpoints_per_s: f64,
    natshook_fan_out_per_s: f64,
    python_per_s: f64,
    /// The Python bridge's CPU per delivery, from its first delivery on (start-up and
    /// imports left out, as natshook's start-up is before its drain).
    cpu_us_per_delivery_python: f64,
    latency_rate_per_s: u64,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    latency_max_ms: f64,
    rss_idle_mib: f64,
    /// The private part of idle RSS; the rest is the binary's and libc's mapped pages.
    rss_idle_anon_mib: f64,
    rss_peak_mib: f64,
    rss_peak_50_endpoints_mib: f64,
    rss_peak_fan_out_mib: f64,
    /// Phase A: `bench` is the raw consumer.
    cpu_us_ceiling_nats: CpuPerDelivery,
    /// Phase B: `bench` is the raw client.
    cpu_us_ceiling_http: CpuPerDelivery,
    cpu_us_per_delivery: CpuPerDelivery,
    cpu_us_per_delivery_50_endpoints: CpuPerDelivery,
    cpu_us_per_delivery_fan_out: CpuPerDelivery,
    /// Attempts without a 2xx in N, M and F.
    failed_attempts: [u64; 3],
}

impl Results {
    /// The slower ceiling: what the "natshook ÷ min(A, B)" divides by.
    fn min_ceiling(&self) -> f64 {
        self.ceiling_nats_per_s.min(self.ceiling_http_per_s)
    }

    /// Doing A's and B's work one after the other on the same cores: the best a
    /// bridge that must both consume and POST each message could do here.
    fn serial_ceiling(&self) -> f64 {
        1.0 / (1.0 / self.ceiling_nats_per_s + 1.0 / self.ceiling_http_per_s)
    }

    /// CPU per message of the raw parts a bridge is made of: A's consumer plus B's
    /// client. natshook's CPU per delivery divided by this is the bridge's overhead,
    /// free of how the two cores are shared with nats-server and the receiver.
    fn raw_parts_cpu(&self) -> f64 {
        self.cpu_us_ceiling_nats.bench + self.cpu_us_ceiling_http.bench
    }
}

async fn run(opts: Opts, receiver: tokio::runtime::Handle) -> Results {
    let nats = NatsServer::start();
    let js = jetstream::new(nats.client().await);
    let seen = Arc::new(Seen::default());
    let port = start_receiver(&receiver, seen.clone());
    let mut r = Results {
        mode: if opts.smoke { "smoke" } else { "full" },
        messages: opts.n,
        natshook: natshook_bin(),
        ..Default::default()
    };
    let n = opts.n;

    if opts.runs('A') {
        eprintln!("A: raw JetStream consume + ack, {n} messages");
        (r.ceiling_nats_per_s, r.cpu_us_ceiling_nats) = ceiling_nats(&js, &nats, n).await;
    }

    if opts.runs('B') {
        eprintln!("B: raw HTTP POST, {n} requests");
        (r.ceiling_http_per_s, r.cpu_us_ceiling_http) = ceiling_http(port, &nats, n).await;
        seen.reset();
    }

    if opts.runs('I') {
        eprintln!("I: natshook idle (empty stream, 1 endpoint)");
        create_stream(&js, "BENCH_I", "bench.i.>").await;
        let idle = start_natshook(
            &nats.url(),
            "BENCH_I",
            "[[events]]\nsubject = \"bench.i.>\"\nevent = \"idle\"\n",
            &format!("[[endpoints]]\nname = \"idle\"\nurl = \"http://127.0.0.1:{port}/i\"\nevents = [\"*\"]\nsecret = \"s\"\n"),
        )
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        r.rss_idle_mib = idle.rss_kib("VmRSS:") as f64 / 1024.0;
        r.rss_idle_anon_mib = idle.rss_kib("RssAnon:") as f64 / 1024.0;
        drop(idle);
    }

    if opts.runs('N') || opts.runs('L') {
        create_stream(&js, "BENCH_N", "bench.n.>").await;
        if opts.runs('N') {
            publish(&js, &["bench.n.x".to_string()], n).await;
        }
        let events = "[[events]]\nsubject = \"bench.n.>\"\nevent = \"bench.{3}\"\n";
        let endpoint = format!(
        "[[endpoints]]\nname = \"one\"\nurl = \"http://127.0.0.1:{port}/n\"\nevents = [\"*\"]\nsecret = \"bench-secret\"\n"
    );
        let one = start_natshook(&nats.url(), "BENCH_N", events, &endpoint).await;
        if opts.runs('N') {
            eprintln!("N: natshook drains {n} messages (1 endpoint)");
            let d = measure_drain(&seen, &nats, &one, n, "natshook drain").await;
            (r.natshook_per_s, r.cpu_us_per_delivery) = (d.rate, d.cpu);
            r.failed_attempts[0] = d.failed_attempts;
        }
        if opts.runs('L') {
            eprintln!(
                "L: natshook at {} msg/s for {} s",
                opts.rate, opts.latency_secs
            );
            let total = (opts.rate * opts.latency_secs) as usize;
            let interval = Duration::from_secs_f64(1.0 / opts.rate as f64);
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut acks = Vec::new();
            for i in 0..total {
                tick.tick().await;
                let ack = js
                    .publish("bench.n.lat", payload(i, Some(unix_micros())))
                    .await
                    .expect("publish");
                // Awaited concurrently: holding them all would exhaust the client's
                // in-flight publish permits and stall the publisher.
                acks.push(tokio::spawn(ack.into_future()));
            }
            for a in acks {
                a.await.expect("join").expect("publish ack");
            }
            wait_count(
                &seen,
                total as u64,
                drain_timeout(total),
                "natshook latency",
            )
            .await;
            r.latency_rate_per_s = opts.rate;
            let mut lat = seen.latencies_us.lock().unwrap().clone();
            lat.sort_unstable();
            r.latency_p50_ms = percentile(&lat, 0.50);
            r.latency_p99_ms = percentile(&lat, 0.99);
            r.latency_max_ms = percentile(&lat, 1.0);
        }
        r.rss_peak_mib = one.rss_kib("VmHWM:") as f64 / 1024.0;
        drop(one);
        seen.reset();
    }

    if opts.runs('M') {
        let k = opts.endpoints_many;
        eprintln!("M: natshook with {k} endpoints, {n} messages in total");
        create_stream(&js, "BENCH_M", "bench.m.*").await;
        let subjects: Vec<String> = (0..k).map(|i| format!("bench.m.e{i}")).collect();
        publish(&js, &subjects, n).await;
        let events = "[[events]]\nsubject = \"bench.m.*\"\nevent = \"m.{3}\"\n";
        let endpoints = many_endpoints(k, port, "m", |i| format!("m.e{i}"));
        let many = start_natshook(&nats.url(), "BENCH_M", events, &endpoints).await;
        let d = measure_drain(&seen, &nats, &many, n, "natshook 50 endpoints").await;
        (
            r.natshook_50_endpoints_per_s,
            r.cpu_us_per_delivery_50_endpoints,
        ) = (d.rate, d.cpu);
        r.failed_attempts[1] = d.failed_attempts;
        r.rss_peak_50_endpoints_mib = many.rss_kib("VmHWM:") as f64 / 1024.0;
    }

    if opts.runs('F') {
        let k = opts.endpoints_many;
        let per_endpoint = n / k;
        eprintln!("F: natshook with {k} endpoints each receiving all of {per_endpoint} messages");
        create_stream(&js, "BENCH_F", "bench.f").await;
        publish(&js, &["bench.f".to_string()], per_endpoint).await;
        let events = "[[events]]\nsubject = \"bench.f\"\nevent = \"fan\"\n";
        let endpoints = many_endpoints(k, port, "f", |_| "*".to_string());
        let fan = start_natshook(&nats.url(), "BENCH_F", events, &endpoints).await;
        let d = measure_drain(&seen, &nats, &fan, per_endpoint * k, "natshook fan-out").await;
        (r.natshook_fan_out_per_s, r.cpu_us_per_delivery_fan_out) = (d.rate, d.cpu);
        r.failed_attempts[2] = d.failed_attempts;
        r.rss_peak_fan_out_mib = fan.rss_kib("VmHWM:") as f64 / 1024.0;
    }

    if opts.runs('P') {
        eprintln!("P: hand-written Python bridge drains {n} messages");
        create_stream(&js, "BENCH_P", "bench.p").await;
        publish(&js, &["bench.p".to_string()], n).await;
        let mut py = Command::new(tool("python3"))
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/bench/python_bridge.py"
            ))
            .args([
                nats.url(),
                "BENCH_P".into(),
                "bench.p".into(),
                format!("http://127.0.0.1:{port}/p"),
                "bench-secret".into(),
                n.to_string(),
            ])
            .spawn()
            .expect("python bridge (run scripts/setup-tools.sh)");
        wait_count(&seen, 1, drain_timeout(n) * 4, "python bridge").await;
        let (first, cpu_before) = (seen.count.load(Ordering::SeqCst), cpu_seconds(py.id()));
        wait_count(&seen, n as u64, drain_timeout(n) * 4, "python bridge").await;
        r.cpu_us_per_delivery_python =
            (cpu_seconds(py.id()) - cpu_before) * 1e6 / (n as u64 - first).max(1) as f64;
        r.python_per_s = seen.rate();
        let _ = py.wait();
    }
    r
}

/// `a / b` with two decimals, or "n/a" when a phase it needs did not run.
fn ratio(a: f64, b: f64) -> String {
    if a > 0.0 && b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "n/a".to_string()
    }
}

fn report(r: &Results) {
    println!(
        "natshook benchmark ({} mode, {} messages of 1 KiB per phase)",
        r.mode, r.messages
    );
    println!("  natshook binary: {}", r.natshook);
    println!(
        "  A  raw JetStream consume+ack     {:>10.0} msg/s",
        r.ceiling_nats_per_s
    );
    println!(
        "  B  raw HTTP POST (64 in flight)  {:>10.0} req/s",
        r.ceiling_http_per_s
    );
    println!(
        "  N  natshook, 1 endpoint          {:>10.0} deliveries/s",
        r.natshook_per_s
    );
    println!(
        "  M  natshook, 50 endpoints        {:>10.0} deliveries/s (each endpoint its own event)",
        r.natshook_50_endpoints_per_s
    );
    println!(
        "  F  natshook, 50 endpoints        {:>10.0} deliveries/s (fan-out: every endpoint every message)",
        r.natshook_fan_out_per_s
    );
    println!(
        "  P  Python bridge                 {:>10.0} deliveries/s",
        r.python_per_s
    );
    let serial = r.serial_ceiling();
    println!(
        "  natshook / min(A, B)             {:>10}",
        ratio(r.natshook_per_s, r.min_ceiling())
    );
    println!(
        "  natshook / serial(A, B)          {:>10}   (1/(1/A + 1/B) = {:.0}/s)",
        ratio(r.natshook_per_s, serial),
        serial
    );
    let python = ratio(r.natshook_per_s, r.python_per_s);
    let times = if python == "n/a" { "" } else { "x" };
    println!("  natshook / Python                {python:>10}{times}");
    println!(
        "  Python CPU / natshook CPU        {:>10}   (per delivery: Python {:.1} us, natshook {:.1} us in N)",
        ratio(r.cpu_us_per_delivery_python, r.cpu_us_per_delivery.natshook),
        r.cpu_us_per_delivery_python,
        r.cpu_us_per_delivery.natshook
    );
    println!(
        "  50 endpoints / 1 endpoint        {:>10} (M), {} (F)",
        ratio(r.natshook_50_endpoints_per_s, r.natshook_per_s),
        ratio(r.natshook_fan_out_per_s, r.natshook_per_s)
    );
    println!(
        "  latency at {} msg/s              p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        r.latency_rate_per_s, r.latency_p50_ms, r.latency_p99_ms, r.latency_max_ms
    );
    println!(
        "  CPU per message (A, raw)        consumer {:.1} us, nats-server {:.1} us",
        r.cpu_us_ceiling_nats.bench, r.cpu_us_ceiling_nats.nats_server
    );
    println!(
        "  CPU per request (B, raw)        client {:.1} us, receiver {:.1} us",
        r.cpu_us_ceiling_http.bench, r.cpu_us_ceiling_http.receiver
    );
    println!(
        "  natshook CPU / raw parts (N)    {:>10}   (natshook {:.1} us per delivery; A's consumer + B's client {:.1} us)",
        ratio(r.cpu_us_per_delivery.natshook, r.raw_parts_cpu()),
        r.cpu_us_per_delivery.natshook,
        r.raw_parts_cpu()
    );
    for (phase, c) in [
        ("N, 1 endpoint", &r.cpu_us_per_delivery),
        ("M, 50 endpoints", &r.cpu_us_per_delivery_50_endpoints),
        ("F, fan-out", &r.cpu_us_per_delivery_fan_out),
    ] {
        println!(
            "  CPU per delivery ({phase:<15}) natshook {:.1} us, nats-server {:.1} us, receiver {:.1} us",
            c.natshook, c.nats_server, c.receiver
        );
    }
    println!(
        "  natshook attempts without 2xx    N {}, M {}, F {} (each is a retry; 0 expected)",
        r.failed_attempts[0], r.failed_attempts[1], r.failed_attempts[2]
    );
    println!(
        "  natshook RSS                     idle {:.1} MiB ({:.1} MiB anonymous), peak {:.1} MiB (1 endpoint), {:.1} MiB (M), {:.1} MiB (F)",
        r.rss_idle_mib, r.rss_idle_anon_mib, r.rss_peak_mib, r.rss_peak_50_endpoints_mib, r.rss_peak_fan_out_mib
    );
}

/// The headline figures of every round and their median. On a shared VM one round
/// can hit a slow spell (every process slower at once), so a single round's ratio can
/// be off by a third either way; the median of rounds run back to back is the figure
/// to quote.
fn report_rounds(all: &[Results]) {
    type Figure = fn(&Results) -> f64;
    let figures: [(&str, Figure, usize); 10] = [
        ("N natshook, 1 endpoint (/s)", |r| r.natshook_per_s, 0),
        (
            "natshook / min(A, B)",
            |r| r.natshook_per_s / r.min_ceiling(),
            2,
        ),
        (
            "natshook / serial(A, B)",
            |r| r.natshook_per_s / r.serial_ceiling(),
            2,
        ),
        (
            "natshook / Python",
            |r| r.natshook_per_s / r.python_per_s,
            1,
        ),
        (
            "M / N (50 endpoints)",
            |r| r.natshook_50_endpoints_per_s / r.natshook_per_s,
            2,
        ),
        (
            "F / N (fan-out)",
            |r| r.natshook_fan_out_per_s / r.natshook_per_s,
            2,
        ),
        (
            "natshook CPU per delivery, N (us)",
            |r| r.cpu_us_per_delivery.natshook,
            1,
        ),
        (
            "natshook CPU per delivery, F (us)",
            |r| r.cpu_us_per_delivery_fan_out.natshook,
            1,
        ),
        (
            "natshook CPU / raw parts (N)",
            |r| r.cpu_us_per_delivery.natshook / r.raw_parts_cpu(),
            2,
        ),
        (
            "Python CPU / natshook CPU",
            |r| r.cpu_us_per_delivery_python / r.cpu_us_per_delivery.natshook,
            1,
        ),
    ];
    println!("{} rounds back to back: median (each round)", all.len());
    for (label, figure, precision) in figures {
        let values: Vec<f64> = all
            .iter()
            .map(figure)
            .filter(|v| v.is_finite() && *v > 0.0)
            .collect();
        if values.is_empty() {
            continue;
        }
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let median = if sorted.len() % 2 == 1 {
            sorted[sorted.len() / 2]
        } else {
            (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2.0
        };
        let each: Vec<String> = values.iter().map(|v| format!("{v:.precision$}")).collect();
        println!(
            "  {label:<36} {median:>9.precision$}   ({})",
            each.join(" / ")
        );
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let opts = if full {
        Opts {
            smoke: false,
            n: std::env::var("BENCH_MESSAGES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(50_000),
            latency_secs: 10,
            rate: 1000,
            endpoints_many: 50,
            phases: std::env::var("BENCH_PHASES").unwrap_or_else(|_| "ABINLMFP".into()),
        }
    } else {
        Opts {
            smoke: true,
            n: 300,
            latency_secs: 1,
            rate: 200,
            endpoints_many: 50,
            phases: "ABINLMFP".into(),
        }
    };
    let rounds = if full {
        std::env::var("BENCH_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3usize)
            .max(1)
    } else {
        1
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let receiver = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(RECEIVER_THREADS)
        .enable_all()
        .build()
        .unwrap();
    let mut all = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let mut o = opts.clone();
        if round > 0 {
            // Idle RSS and latency once; the throughput phases every round.
            o.phases.retain(|p| !"IL".contains(p));
        }
        if rounds > 1 {
            eprintln!("== round {} of {rounds}", round + 1);
        }
        all.push(rt.block_on(run(o, receiver.handle().clone())));
    }
    let r = &all[0];
    report(r);
    if rounds > 1 {
        report_rounds(&all);
    }
    let out = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-results.json");
    let _ = std::fs::write(out, serde_json::to_vec_pretty(&all).unwrap_or_default());
    if r.mode == "smoke" {
        println!(
            "bench smoke: every phase delivered every message (speed is not judged in smoke mode)"
        );
    }
}
