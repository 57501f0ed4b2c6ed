//! What nats-server and a raw client spend per message under three layouts of pull
//! consumers on the same work streams, without natshook: the floor under the fan-out
//! design's cost with many busy endpoints, and what shared consumers would change.
//!
//!   cargo bench --bench layouts
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it runs in smoke mode: tiny
//! sizes, and it checks only that every message is acked under every layout.
//!
//! The streams are the fan-out's: 16 file streams (BENCH_LAYOUT_SHARDS) under limits
//! retention, subject `work.<shard>.<endpoint>`, the endpoint's shard by its number. Messages are 1 KiB,
//! published round-robin over the endpoints with 512 publish acks outstanding while
//! the consumers pull, so each busy endpoint's messages arrive one at a time, as the
//! fan-out's copies do. Every consumer is durable, keeps its state in memory (as the
//! fan-out's endpoint consumers do), pulls 64 at a time with a 5 s heartbeat and acks
//! each message on its own.
//!   one       one endpoint gets every message; one consumer on its subject
//!   endpoint  E endpoints, a consumer per endpoint on its subject (the fan-out today)
//!   shard     E endpoints, one consumer per shard stream over all of its endpoints
//!
//! Every layout runs on a fresh nats-server; the layouts alternate over the rounds and
//! the report gives medians. CPU is nats-server's and this process's (the publisher
//! and the consumers), in microseconds per message.
//! BENCH_LAYOUT_ENDPOINTS (default 1000), BENCH_LAYOUT_MESSAGES (default 100000),
//! BENCH_LAYOUT_ROUNDS (default 3), BENCH_LAYOUT_SHARDS (work streams, default 16).

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull};
use futures_util::StreamExt;

use common::NatsServer;
use support::{cpu_seconds, create_stream_for, publish};

/// How many work streams (BENCH_LAYOUT_SHARDS, default as many as the fan-out keeps).
fn shards() -> usize {
    static SHARDS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *SHARDS.get_or_init(|| env_or("BENCH_LAYOUT_SHARDS", 16).max(1))
}

#[derive(Clone, Copy, PartialEq)]
enum Layout {
    One,
    Endpoint,
    Shard,
}

impl Layout {
    const ALL: [Layout; 3] = [Layout::One, Layout::Endpoint, Layout::Shard];

    fn name(self) -> &'static str {
        match self {
            Layout::One => "one",
            Layout::Endpoint => "endpoint",
            Layout::Shard => "shard",
        }
    }

    /// The consumers' filter subjects.
    fn filters(self, endpoints: usize) -> Vec<(usize, String)> {
        match self {
            Layout::One => vec![(0, subject(0))],
            Layout::Endpoint => (0..endpoints).map(|e| (e % shards(), subject(e))).collect(),
            Layout::Shard => (0..shards()).map(|s| (s, format!("work.{s}.>"))).collect(),
        }
    }
}

fn subject(endpoint: usize) -> String {
    format!("work.{}.e{endpoint}", endpoint % shards())
}

struct Run {
    rate: f64,
    nats_us: f64,
    client_us: f64,
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

async fn run(layout: Layout, endpoints: usize, messages: usize) -> Run {
    let nats = NatsServer::start();
    let js = jetstream::new(nats.client().await);
    for s in 0..shards() {
        let name = format!("WORK_{s}");
        create_stream_for(&js, &name, &format!("work.{s}.>"), Some(endpoints + 1)).await;
    }
    let acked = Arc::new(AtomicU64::new(0));
    let mut consumers = Vec::new();
    for (i, (shard, filter)) in layout.filters(endpoints).into_iter().enumerate() {
        let stream = js
            .get_stream(format!("WORK_{shard}"))
            .await
            .expect("work stream");
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(format!("c{i}")),
                filter_subject: filter,
                memory_storage: true,
                ..Default::default()
            })
            .await
            .expect("create consumer");
        let acked = Arc::clone(&acked);
        consumers.push(tokio::spawn(async move {
            let mut messages = consumer
                .stream()
                .max_messages_per_batch(64)
                .heartbeat(Duration::from_secs(5))
                .expires(Duration::from_secs(30))
                .messages()
                .await
                .expect("pull stream");
            while let Some(Ok(msg)) = messages.next().await {
                msg.ack().await.expect("ack");
                acked.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let subjects: Vec<String> = match layout {
        Layout::One => vec![subject(0)],
        _ => (0..endpoints).map(subject).collect(),
    };
    let pid = nats.pid().expect("nats-server runs");
    let (nats_before, client_before) = (cpu_seconds(pid), cpu_seconds(std::process::id()));
    let started = Instant::now();
    publish(&js, &subjects, messages).await;
    let deadline = started + Duration::from_secs(60) + Duration::from_millis(messages as u64);
    while acked.load(Ordering::Relaxed) < messages as u64 {
        assert!(
            Instant::now() < deadline,
            "[{}] {} of {messages} acked",
            layout.name(),
            acked.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let wall = started.elapsed().as_secs_f64();
    let per_message = |seconds: f64| seconds * 1e6 / messages as f64;
    let result = Run {
        rate: messages as f64 / wall,
        nats_us: per_message(cpu_seconds(pid) - nats_before),
        client_us: per_message(cpu_seconds(std::process::id()) - client_before),
    };
    for c in consumers {
        c.abort();
    }
    result
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (endpoints, messages, rounds) = if full {
        (
            env_or("BENCH_LAYOUT_ENDPOINTS", 1000).max(1),
            env_or("BENCH_LAYOUT_MESSAGES", 100_000).max(1),
            env_or("BENCH_LAYOUT_ROUNDS", 3).max(1),
        )
    } else {
        (20, 2_000, 1)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut runs: Vec<Vec<Run>> = Layout::ALL.iter().map(|_| Vec::new()).collect();
    for round in 1..=rounds {
        for (i, layout) in Layout::ALL.into_iter().enumerate() {
            let r = rt.block_on(run(layout, endpoints, messages));
            println!(
                "round {round} {:<8} {:>8.0} msg/s  nats-server {:>6.1} µs/msg  client {:>5.1} µs/msg",
                layout.name(),
                r.rate,
                r.nats_us,
                r.client_us
            );
            runs[i].push(r);
        }
    }
    let medians: Vec<(f64, f64, f64)> = runs
        .iter()
        .map(|rs| {
            (
                median(rs.iter().map(|r| r.rate).collect()),
                median(rs.iter().map(|r| r.nats_us).collect()),
                median(rs.iter().map(|r| r.client_us).collect()),
            )
        })
        .collect();
    let (_, one_nats, one_client) = medians[0];
    println!(
        "\n{endpoints} endpoints, {messages} messages, {} streams, medians of {rounds} round(s)",
        shards()
    );
    println!("layout     msg/s   nats-server µs  (× one)   client µs  (× one)");
    for (layout, (rate, nats, client)) in Layout::ALL.iter().zip(&medians) {
        println!(
            "{:<8} {:>8.0}   {:>12.1}  ({:>4.2})   {:>9.1}  ({:>4.2})",
            layout.name(),
            rate,
            nats,
            nats / one_nats,
            client,
            client / one_client
        );
    }
    if !full {
        println!("layouts smoke: every message acked under every layout (speed is not judged in smoke mode)");
    }
}
