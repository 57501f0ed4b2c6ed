//! Ingress benchmark: verified incoming webhooks against the machine's own ceiling.
//!
//!   cargo bench --bench ingress        (release build; BENCH_NATSHOOK_BIN=path for another build)
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it runs in smoke mode: tiny
//! counts, checks that every request was answered 200 and stored once, no speed claims.
//!
//! Phases, one nats-server, 1 KiB JSON bodies, the same number in flight throughout:
//!   R  raw JetStream publish-with-ack with async-nats (what ingress does per request,
//!      minus HTTP and verification): the ceiling
//!   V  natshook's ingress: Standard Webhooks-signed POSTs (hyper client, keep-alive),
//!      each answered after the publish ack
//!   L  natshook's ingress at a fixed request rate (open loop: latency counts from each
//!      request's scheduled time, so a stall is not hidden): p50, p99, max
//!
//! BENCH_INGRESS_REQUESTS=N per throughput phase (default 20000), BENCH_INGRESS_INFLIGHT=C
//! (default 64), BENCH_INGRESS_RATE=R requests/s of phase L (default 1000) for
//! BENCH_INGRESS_SECONDS=S (default 10), BENCH_NATSHOOK_LOG for natshook's `RUST_LOG`
//! (default `warn`).

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, stream};
use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioExecutor;

use common::{free_port, NatsServer};

const SECRET_B64: &str = "YmVuY2gtc2VjcmV0LWZvci1pbmdyZXNz";

#[derive(Clone, Copy)]
struct Opts {
    smoke: bool,
    n: usize,
    inflight: usize,
    rate: u64,
    seconds: u64,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A 1 KiB JSON body.
fn body(i: usize) -> Bytes {
    let mut s = format!("{{\"type\":\"delivered\",\"i\":{i},\"pad\":\"");
    while s.len() < 1022 {
        s.push('x');
    }
    s.push_str("\"}");
    Bytes::from(s)
}

/// A signed request: (webhook-id, webhook-timestamp, webhook-signature, body), signed
/// as a Standard Webhooks sender does.
fn signed(i: usize, prefix: &str) -> (String, String, String, Bytes) {
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET_B64)
        .expect("secret is base64");
    let id = format!("{prefix}-{i}");
    let ts = unix_now().to_string();
    let b = body(i);
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(&b);
    let sig = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    (id, ts, sig, b)
}

struct Natshook {
    child: Child,
    http_port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Natshook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

async fn start_natshook(nats_url: &str) -> Natshook {
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    // The bridge needs one mapping and one endpoint; this one never gets a message.
    let config = format!(
        r#"[nats]
url = "{nats_url}"
stream = "EVENTS"
[http]
listen = "127.0.0.1:{http_port}"
[delivery_log]
enabled = false
[[events]]
subject = "bench.unused"
event = "unused"
[[endpoints]]
name = "unused"
url = "http://127.0.0.1:9/unused"
events = ["unused"]
secret = "unused"
allow_http = true
allow_private = true
[[ingress.routes]]
path = "/in/bench"
subject = "inbound.bench.{{json:type}}"
verify = {{ scheme = "standard", secret = {{ value = "whsec_{SECRET_B64}" }} }}
"#
    );
    let path = dir.path().join("natshook.toml");
    std::fs::write(&path, config).unwrap();
    let child = Command::new(support::natshook_bin())
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", support::natshook_log())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start natshook");
    let n = Natshook {
        child,
        http_port,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(
        common::http_get(&format!("http://127.0.0.1:{http_port}/readyz")).await,
        Ok((200, _))
    ) {
        assert!(Instant::now() < deadline, "natshook not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    n
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

async fn stream_messages(js: &jetstream::Context, name: &str) -> u64 {
    js.get_stream(name)
        .await
        .expect("stream")
        .info()
        .await
        .expect("stream info")
        .state
        .messages
}

/// Phase R: `n` publishes with `Nats-Msg-Id`, `inflight` at a time, each awaited for
/// its ack (as ingress does); publishes per second.
async fn raw_publish(js: &jetstream::Context, n: usize, inflight: usize) -> f64 {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..inflight {
        let js = js.clone();
        tasks.spawn(async move {
            for i in (w..n).step_by(inflight) {
                let mut h = async_nats::HeaderMap::new();
                h.insert(
                    async_nats::header::NATS_MESSAGE_ID,
                    format!("raw-{i}").as_str(),
                );
                let ack = js
                    .publish_with_headers("raw.bench", h, body(i))
                    .await
                    .expect("publish");
                ack.await.expect("publish ack");
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("publisher");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

async fn post(client: &Client, url: &str, req: &(String, String, String, Bytes)) -> u16 {
    let (id, ts, sig, b) = req;
    let r = http::Request::post(url)
        .header("content-type", "application/json")
        .header("webhook-id", id.as_str())
        .header("webhook-timestamp", ts.as_str())
        .header("webhook-signature", sig.as_str())
        .body(Full::new(b.clone()))
        .expect("request");
    match client.request(r).await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let _ = resp.into_body().collect().await;
            status
        }
        Err(_) => 0,
    }
}

/// Phase V: `n` signed requests (ids `<prefix>-<i>`), `inflight` at a time; (requests
/// per second, non-200s).
async fn verified(
    client: &Client,
    url: &str,
    n: usize,
    inflight: usize,
    prefix: &str,
) -> (f64, usize) {
    let reqs: std::sync::Arc<Vec<_>> =
        std::sync::Arc::new((0..n).map(|i| signed(i, prefix)).collect());
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..inflight {
        let (client, url, reqs) = (client.clone(), url.to_string(), reqs.clone());
        tasks.spawn(async move {
            let mut bad = 0;
            for i in (w..n).step_by(inflight) {
                if post(&client, &url, &reqs[i]).await != 200 {
                    bad += 1;
                }
            }
            bad
        });
    }
    let mut bad = 0;
    while let Some(r) = tasks.join_next().await {
        bad += r.expect("sender");
    }
    (n as f64 / started.elapsed().as_secs_f64(), bad)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Phase L: `rate` requests per second for `seconds`, open loop; latencies in ms
/// from each request's scheduled time, and the non-200 count.
async fn fixed_rate(client: &Client, url: &str, rate: u64, seconds: u64) -> (Vec<f64>, usize) {
    let total = (rate * seconds) as usize;
    let every = Duration::from_secs_f64(1.0 / rate as f64);
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let due = start + every * i as u32;
        tokio::time::sleep_until(due).await;
        // Signed when due: the timestamp must be fresh, as a sender's is.
        let req = signed(i, "l");
        let (client, url) = (client.clone(), url.to_string());
        tasks.spawn(async move {
            let status = post(&client, &url, &req).await;
            (due.elapsed().as_secs_f64() * 1000.0, status)
        });
    }
    let mut lat = Vec::with_capacity(total);
    let mut bad = 0;
    while let Some(r) = tasks.join_next().await {
        let (ms, status) = r.expect("sender");
        lat.push(ms);
        if status != 200 {
            bad += 1;
        }
    }
    lat.sort_by(f64::total_cmp);
    (lat, bad)
}

async fn run(o: Opts) {
    let nats = NatsServer::start();
    let js = jetstream::new(nats.client().await);
    create_stream(&js, "RAW", "raw.>").await;
    create_stream(&js, "INBOUND", "inbound.>").await;
    create_stream(&js, "EVENTS", "bench.>").await;

    let raw = raw_publish(&js, o.n, o.inflight).await;
    assert_eq!(
        stream_messages(&js, "RAW").await,
        o.n as u64,
        "raw: every publish stored"
    );

    let natshook = start_natshook(&nats.url()).await;
    let pid = natshook.child.id();
    let idle = rss_kib(pid);
    let url = format!("http://127.0.0.1:{}/in/bench", natshook.http_port);
    let client: Client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(o.inflight)
        .build_http();
    // Warm-up: connections open, allocator and metric children settle.
    let _ = verified(&client, &url, o.inflight * 4, o.inflight, "warm").await;
    let warm = stream_messages(&js, "INBOUND").await;
    let (rate, bad) = verified(&client, &url, o.n, o.inflight, "v").await;
    assert_eq!(bad, 0, "every verified request answered 200");
    assert_eq!(
        stream_messages(&js, "INBOUND").await - warm,
        o.n as u64,
        "every 200 stored once"
    );
    let (lat, bad_l) = fixed_rate(&client, &url, o.rate, o.seconds).await;
    // Above natshook's capacity, requests queue, connections pile up past the
    // listener's cap and are refused: reported, not a failure of the benchmark.
    assert!(
        !o.smoke || bad_l == 0,
        "every fixed-rate request answered 200"
    );
    let peak = rss_kib(pid);

    println!(
        "natshook ingress benchmark ({} mode)",
        if o.smoke { "smoke" } else { "full" }
    );
    println!(
        "  {} requests per phase, {} in flight, 1 KiB JSON bodies, Standard Webhooks signatures",
        o.n, o.inflight
    );
    println!("  R raw JetStream publish-with-ack       {raw:>9.0} /s");
    println!(
        "  V verified ingress (HTTP in, ack, 200)  {rate:>9.0} /s   ({:.0} % of R)",
        rate / raw * 100.0
    );
    println!(
        "  L at {} req/s for {} s                 p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        o.rate,
        o.seconds,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(0.0)
    );
    if bad_l > 0 {
        println!(
            "    {bad_l} of {} not answered 200 (over capacity: refused connections or 503)",
            o.rate * o.seconds
        );
    }
    println!(
        "  natshook RSS                            idle {idle} KiB, after the phases {peak} KiB"
    );
    if o.smoke {
        println!("bench smoke: every request answered 200 and stored once (speed is not judged in smoke mode)");
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let o = if full {
        Opts {
            smoke: false,
            n: env_or("BENCH_INGRESS_REQUESTS", 20_000),
            inflight: env_or("BENCH_INGRESS_INFLIGHT", 64),
            rate: env_or("BENCH_INGRESS_RATE", 1000),
            seconds: env_or("BENCH_INGRESS_SECONDS", 10),
        }
    } else {
        Opts {
            smoke: true,
            n: 300,
            inflight: 16,
            rate: 200,
            seconds: 1,
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(o));
}
