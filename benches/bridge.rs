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
//! BENCH_MANY_CONCURRENCY=C sets `concurrency` on the 50 endpoints of M and F, and
//! BENCH_MANY_ENDPOINTS=K runs M and F with K endpoints instead of 50.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::future::IntoFuture;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioExecutor;

use common::{tool, NatsServer};
use support::{
    cpu_seconds, create_stream, drain_timeout, failed_attempts, natshook_bin, payload, publish,
    start_natshook, start_receiver, unix_micros, wait_count, CpuPerDelivery, CpuSample, Process,
    Seen,
};

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
    let cpu = CpuSample::start(&[], &[nats]);
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
    let cpu = CpuSample::start(&[], &[nats]);
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

/// `k` endpoints of [`support::many_endpoints`]. BENCH_MANY_CONCURRENCY=N sets
/// `concurrency` on every one of them (the tuning knob for many endpoints); the
/// contract default (64) otherwise.
fn many_endpoints(k: usize, port: u16, prefix: &str, event: impl Fn(usize) -> String) -> String {
    let concurrency = std::env::var("BENCH_MANY_CONCURRENCY")
        .map(|c| format!("concurrency = {c}\n"))
        .unwrap_or_default();
    support::many_endpoints(k, port, prefix, event, &concurrency)
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
    let cpu = CpuSample::start(&[natshook], &[nats]);
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
    /// Endpoints in M and F (the "50 endpoints" of the labels unless changed).
    endpoints_many: usize,
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
        endpoints_many: opts.endpoints_many,
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
    if r.endpoints_many != 50 {
        println!(
            "  M and F run {} endpoints (BENCH_MANY_ENDPOINTS), not the 50 of the labels",
            r.endpoints_many
        );
    }
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
            endpoints_many: std::env::var("BENCH_MANY_ENDPOINTS")
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|&k| k > 0)
                .unwrap_or(50),
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
    let (rt, receiver) = support::runtimes();
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
