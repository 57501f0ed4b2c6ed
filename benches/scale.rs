//! natshook at scale: many endpoints in one process, and replicas sharing one stream,
//! for each delivery design under test, in one run on this machine.
//!
//!   ./scripts/bench-scale.sh          (= cargo bench --bench scale, shipped natshook)
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it runs in smoke mode: tiny
//! sizes, and it checks only that every message is delivered.
//!
//! Every phase has its own nats-server (so one phase's consumers do not weigh on the
//! next), natshook runs as its own process, and one minimal hyper receiver in this
//! process answers `200` on a path per endpoint; messages are 1 KiB of JSON, each
//! endpoint has its own event, so a message goes to exactly one endpoint.
//!   S0  one endpoint drains the backlog: the baseline of rate and CPU per delivery.
//!       A full run with S1 runs S0 again after S1 and compares S1 with the mean of
//!       the two, so that the machine's drift over S1's minutes cancels out
//!   M   S0 on tokio's multi-threaded scheduler (TOKIO_WORKER_THREADS = the CPUs;
//!       set for the whole benchmark, the variable puts every phase there),
//!       before and after S1 as S0 is: one endpoint from the file runs on one thread,
//!       many endpoints on the multi-threaded scheduler, so S1 against M is the cost
//!       of spreading the work alone, and against S0 that plus the scheduler's
//!   S1  E endpoints (BENCH_SCALE_ENDPOINTS, default 10000; a list such as
//!       `1000,2000,5000` runs each size), A of them active (BENCH_SCALE_ACTIVE, 1000):
//!       time to `/readyz`, idle RSS after 10 s, idle CPU over 20 s; then the backlog
//!       is published over the A endpoints: rate, CPU per delivery, peak RSS; then
//!       natshook stops, the backlog is published again and a new natshook with the
//!       same config starts on it: ready time, time to drain, CPU (start-up included)
//!   R   10 endpoints, the same backlog drained by 1, 2 and 3 natshook processes with
//!       the same config (the same durable consumers)
//!   C   R on a 3-node nats-server cluster (routes on loopback, every node on the same
//!       two cores): the stream and natshook's own streams with 3 replicas
//!
//! BENCH_SCALE_MESSAGES (default 100000) is the backlog of every phase, published once
//! natshook is ready (see `deliver`).
//! BENCH_SCALE_PHASES picks phases (`0`, `M`, `1`, `R`, `C`; all by default).
//! BENCH_SCALE_READY_TIMEOUT (seconds, default 300) bounds the wait for `/readyz`.
//! BENCH_SCALE_DESIGNS (default `direct,fanout,registry`) names the delivery designs to
//! measure, each a text appended to natshook's config: `direct` none, `fanout`
//! BENCH_FANOUT_CONFIG (default `[delivery]\nfan_out = true\n`), `registry` the fan-out
//! with `[registry]` on and every phase's endpoints written into the registry bucket
//! before natshook starts instead of the file (a platform's customer endpoints), any
//! other name BENCH_SCALE_CONFIG_<NAME>.
//! A design whose config `natshook check` refuses is skipped with its reason.
//! BENCH_NATSHOOK_BIN=path measures another natshook build; BENCH_NATSHOOK_LOG sets its
//! `RUST_LOG` (default `warn`), whose lines go to stderr.
//! BENCH_NATS_PROFILE=port serves nats-server's Go profiler during S1
//! (`go tool pprof http://127.0.0.1:port/debug/pprof/profile`), to see where its CPU goes.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;

use common::{NatsCluster, NatsServer};
use support::{
    attempts, create_stream_for, drain_timeout, failed_attempts, loadavg, many_endpoints,
    natshook_bin, natshook_config, publish, quiet_machine, register_endpoints, spawn_natshook,
    start_receiver, status_kib, wait_distinct, wait_ready, CpuPerDelivery, CpuSample, FdWatch,
    NatsAt, NotReady, Process, Seen,
};

struct Opts {
    smoke: bool,
    /// S1's endpoint counts, one run each.
    endpoints: Vec<usize>,
    active: usize,
    messages: usize,
    /// R's endpoints and replica counts; C's replica counts.
    replica_endpoints: usize,
    replicas: Vec<usize>,
    cluster_replicas: Vec<usize>,
    settle: Duration,
    idle_window: Duration,
    ready_within: Duration,
    phases: String,
    designs: Vec<Design>,
}

#[derive(Clone)]
struct Design {
    name: String,
    /// Appended to natshook's config.
    config: String,
    /// Set for natshook besides the benchmark's own environment.
    env: Vec<(String, String)>,
    /// The endpoints are records in the registry bucket, not `[[endpoints]]` entries.
    registry: bool,
}

impl Design {
    /// This design on tokio's multi-threaded scheduler with a thread per CPU, whatever
    /// its endpoints (phase M).
    fn multi_threaded(&self) -> Design {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut env = self.env.clone();
        env.push(("TOKIO_WORKER_THREADS".into(), threads.to_string()));
        Design {
            env,
            ..self.clone()
        }
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// A config text from the environment; a text without line breaks may spell them `\n`.
fn config_text(value: String) -> String {
    if value.contains('\n') {
        value
    } else {
        value.replace("\\n", "\n")
    }
}

fn designs() -> Vec<Design> {
    let names =
        std::env::var("BENCH_SCALE_DESIGNS").unwrap_or_else(|_| "direct,fanout,registry".into());
    let fan_out = || {
        config_text(
            std::env::var("BENCH_FANOUT_CONFIG")
                .unwrap_or_else(|_| "[delivery]\nfan_out = true\n".into()),
        )
    };
    names
        .split([',', ' '])
        .filter(|n| !n.is_empty())
        .map(|name| {
            let config = match name {
                "direct" => String::new(),
                "fanout" => fan_out(),
                "registry" => format!("{}\n[registry]\nenabled = true\n", fan_out()),
                other => {
                    let var = format!(
                        "BENCH_SCALE_CONFIG_{}",
                        other.to_ascii_uppercase().replace('-', "_")
                    );
                    config_text(std::env::var(&var).unwrap_or_else(|_| {
                        panic!("design {other}: set {var} to the config text it appends")
                    }))
                }
            };
            Design {
                name: name.to_string(),
                config,
                env: Vec::new(),
                registry: name == "registry",
            }
        })
        .collect()
}

impl Opts {
    fn from_env(full: bool) -> Self {
        let phases = std::env::var("BENCH_SCALE_PHASES").unwrap_or_else(|_| "0M1RC".into());
        if full {
            let endpoints = std::env::var("BENCH_SCALE_ENDPOINTS")
                .ok()
                .map(|v| {
                    v.split([',', ' '])
                        .filter_map(|e| e.trim().parse().ok())
                        .collect::<Vec<usize>>()
                })
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| vec![10_000]);
            Opts {
                smoke: false,
                endpoints,
                active: env_or("BENCH_SCALE_ACTIVE", 1_000),
                messages: env_or("BENCH_SCALE_MESSAGES", 100_000),
                replica_endpoints: 10,
                replicas: vec![1, 2, 3],
                cluster_replicas: vec![1, 2, 3],
                settle: Duration::from_secs(10),
                idle_window: Duration::from_secs(20),
                ready_within: Duration::from_secs(env_or("BENCH_SCALE_READY_TIMEOUT", 300)),
                phases,
                designs: designs(),
            }
        } else {
            Opts {
                smoke: true,
                endpoints: vec![50],
                active: 10,
                messages: 300,
                replica_endpoints: 10,
                replicas: vec![1, 2, 3],
                cluster_replicas: vec![2],
                settle: Duration::from_millis(200),
                idle_window: Duration::from_secs(1),
                ready_within: Duration::from_secs(120),
                phases,
                designs: designs(),
            }
        }
    }

    fn runs(&self, phase: char) -> bool {
        self.phases.contains(phase)
    }
}

/// One backlog published to ready natshook processes and delivered.
#[derive(Default, Clone, serde::Serialize)]
struct Drain {
    /// From spawning natshook (all replicas at once) to every `/readyz` answering 200;
    /// 0 in S1, which has its own.
    ready_s: f64,
    /// How long publishing the backlog took (natshook delivers meanwhile).
    publish_s: f64,
    /// Set when not every message arrived in time; the figures then cover what did.
    error: Option<String>,
    /// Distinct messages delivered.
    delivered: u64,
    /// The most file descriptors the (first) natshook process held: connections.
    max_fds: u64,
    /// Deliveries per second between the first and the last arrival.
    rate_per_s: f64,
    /// CPU from the first publish to the last arrival, per delivery. nats-server's
    /// includes storing the messages.
    cpu_us: CpuPerDelivery,
    /// VmHWM of each natshook process (its start-up included).
    peak_rss_mib: Vec<f64>,
    /// 2xx attempts each natshook process counted.
    deliveries_per_process: Vec<u64>,
    /// Deliveries beyond one per message.
    duplicates: u64,
    /// Attempts without a 2xx (retries); none are expected against this receiver.
    failed_attempts: u64,
    load_before: String,
    load_after: String,
}

#[derive(Default, Clone, serde::Serialize)]
struct Scale {
    endpoints: usize,
    active: usize,
    /// Start to `/readyz` 200 with every consumer bound, on an empty stream.
    ready_s: Option<f64>,
    /// When not ready within the timeout: consumers bound by then, and why not ready.
    bound_at_timeout: Option<usize>,
    not_ready: Option<String>,
    idle_rss_natshook_mib: f64,
    idle_rss_natshook_anon_mib: f64,
    idle_rss_nats_server_mib: f64,
    /// Percent of one core over the idle window.
    idle_cpu_natshook_pct: f64,
    idle_cpu_nats_server_pct: f64,
    /// VmHWM after start-up and the idle window (no delivery yet).
    startup_peak_rss_mib: f64,
    /// The backlog published to the same natshook, every consumer bound.
    drain: Option<Drain>,
    /// The backlog published while natshook is stopped, then a new natshook with the
    /// same config started on it: start-up (binding) and delivery overlap.
    restart: Option<Restart>,
    load_idle: String,
}

/// S1's backlog drained by a natshook started on it.
#[derive(Default, Clone, serde::Serialize)]
struct Restart {
    /// Set when not every message arrived in time; the figures then cover what did.
    error: Option<String>,
    delivered: u64,
    /// The most file descriptors natshook held: connections, mostly.
    max_fds: u64,
    /// Spawn to `/readyz` 200 (to giving up, when not `ready`).
    ready_s: f64,
    ready: bool,
    delivered_before_ready: u64,
    /// Spawn to the last message delivered.
    drained_s: f64,
    /// CPU from spawn to the last message, start-up included, per delivery.
    cpu_us: CpuPerDelivery,
    peak_rss_mib: f64,
    duplicates: u64,
    failed_attempts: u64,
    load_before: String,
    load_after: String,
}

#[derive(Default, Clone, serde::Serialize)]
struct Replicas {
    replicas: usize,
    endpoints: usize,
    /// nats-server nodes: 1, or a cluster (C) whose streams have as many replicas.
    nodes: usize,
    drain: Drain,
}

impl Replicas {
    /// `R2`, or `C2` on a cluster.
    fn label(&self) -> String {
        let phase = if self.nodes == 1 { 'R' } else { 'C' };
        format!("{phase}{}", self.replicas)
    }
}

/// The nats-server nodes of phase C.
const CLUSTER_NODES: usize = 3;

#[derive(Default, Clone, serde::Serialize)]
struct DesignResults {
    design: String,
    config: String,
    /// Why the design was not measured.
    skipped: Option<String>,
    s0: Option<Drain>,
    /// S0 again after S1 (full runs with both): the machine's speed drifts over the
    /// minutes S1 takes, so S1 is compared with the mean of S0 before and after.
    s0_after: Option<Drain>,
    /// Phase M, before and after S1.
    m: Option<Drain>,
    m_after: Option<Drain>,
    s1: Vec<Scale>,
    r: Vec<Replicas>,
}

#[derive(Default, serde::Serialize)]
struct Results {
    mode: &'static str,
    natshook: String,
    messages: usize,
    idle_settle_s: f64,
    idle_window_s: f64,
    load_start: String,
    load_end: String,
    designs: Vec<DesignResults>,
}

/// `natshook check` on a small config with the design's text: a key this build does
/// not know makes natshook refuse to start, and the design is skipped with the reason.
fn check_design(design: &Design) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let endpoints = many_endpoints(1, 9, "check", |_| "*".into(), "");
    let events = "[[events]]\nsubject = \"bench.check.>\"\nevent = \"check\"\n";
    let config = natshook_config(
        &NatsAt::server("nats://127.0.0.1:4222".into()),
        9,
        "CHECK",
        events,
        &endpoints,
        &design.config,
    );
    let path = dir.path().join("natshook.toml");
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
    let out = Command::new(natshook_bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .map_err(|e| format!("cannot run natshook check: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "natshook check refuses its config ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The events of a phase: `bench.<phase>.<token>` maps to the event `<phase>.<token>`,
/// so an endpoint subscribed to one event gets a consumer filtered to its subject.
fn events(phase: &str) -> String {
    format!("[[events]]\nsubject = \"bench.{phase}.*\"\nevent = \"{phase}.{{3}}\"\n")
}

/// Endpoint `i` of a phase: name `<phase>e<i>`, event `<phase>.e<i>`, subject
/// `bench.<phase>.e<i>`, path `/<phase>e<i>`. Returns the config text of a design that
/// has them in the file; writes them into the registry bucket (with `replicas`) for
/// one that has them there, and returns no text.
async fn endpoints(
    design: &Design,
    js: &jetstream::Context,
    replicas: usize,
    (phase, k, port): (&str, usize, u16),
) -> String {
    let (prefix, event) = (format!("{phase}e"), |i| format!("{phase}.e{i}"));
    if design.registry {
        register_endpoints(js, replicas, k, port, &prefix, event).await;
        String::new()
    } else {
        many_endpoints(k, port, &prefix, event, "")
    }
}

fn subject(phase: &str, i: usize) -> String {
    format!("bench.{phase}.e{i}")
}

/// Spawns `k` natshook processes with the same config and waits until all are ready:
/// the processes and the seconds from spawning to the last `/readyz` 200.
async fn start(
    nats: &NatsAt,
    stream: &str,
    events: &str,
    endpoints: &str,
    design: &Design,
    k: usize,
    ready_within: Duration,
) -> Result<(Vec<Process>, f64), NotReady> {
    let spawned = Instant::now();
    let mut procs: Vec<Process> = (0..k)
        .map(|_| spawn_natshook(nats, stream, events, endpoints, &design.config, &design.env))
        .collect();
    for p in procs.iter_mut() {
        wait_ready(p, ready_within.saturating_sub(spawned.elapsed())).await?;
    }
    Ok((procs, spawned.elapsed().as_secs_f64()))
}

/// Publishes the backlog (`n` messages round-robin over `subjects`) to natshook
/// processes that are ready, every consumer bound, and waits until every message
/// arrived. Publishing to running processes rather than starting them on a full
/// stream keeps the binding of consumers out of the drain: with thousands of
/// endpoints, start-up and delivery would overlap for most of the backlog.
async fn deliver(
    seen: &Seen,
    nats: &[&NatsServer],
    js: &jetstream::Context,
    procs: &[Process],
    subjects: &[String],
    n: usize,
    what: &str,
) -> Drain {
    seen.reset();
    seen.track_ids(n);
    let load_before = loadavg();
    let refs: Vec<&Process> = procs.iter().collect();
    let cpu = CpuSample::start(&refs, nats);
    let fds = FdWatch::start(procs[0].pid());
    let published = Instant::now();
    publish(js, subjects, n).await;
    let publish_s = published.elapsed().as_secs_f64();
    let done = wait_distinct(seen, n as u64, drain_timeout(n), what).await;
    let count = seen.count.load(Ordering::SeqCst);
    let progress: Vec<String> = seen
        .progress_s()
        .iter()
        .map(|t| format!("{t:.2}"))
        .collect();
    eprintln!(
        "{what}: each twentieth of the messages in by (s after the first): {}",
        progress.join(" ")
    );
    let mut d = Drain {
        error: done.err(),
        delivered: seen.distinct.load(Ordering::SeqCst),
        max_fds: fds.max(),
        publish_s,
        rate_per_s: seen.rate(),
        cpu_us: cpu.per_delivery(count as usize),
        duplicates: count.saturating_sub(n as u64),
        load_before,
        load_after: loadavg(),
        ..Default::default()
    };
    for p in procs {
        d.peak_rss_mib.push(p.rss_mib("VmHWM:"));
        d.deliveries_per_process
            .push(attempts(p, |l| l.contains("\"2xx\"")).await);
        d.failed_attempts += failed_attempts(p).await;
    }
    if d.failed_attempts > 0 {
        eprintln!(
            "{what}: {} attempt(s) without a 2xx (see natshook's log above)",
            d.failed_attempts
        );
    }
    seen.reset();
    d
}

/// S0: one endpoint drains the backlog. `label` tells a repeat from the first.
async fn one_endpoint(
    opts: &Opts,
    design: &Design,
    seen: &Seen,
    port: u16,
    label: &str,
) -> Result<Drain, String> {
    let n = opts.messages;
    quiet_before(opts, design, label).await;
    eprintln!("[{}] {label}: 1 endpoint drains {n} messages", design.name);
    let nats = NatsServer::start();
    let js = jetstream::new(nats.client().await);
    create_stream_for(&js, "SCALE_S0", "bench.s0.*", None).await;
    let (procs, ready_s) = start(
        &NatsAt::server(nats.url()),
        "SCALE_S0",
        &events("s0"),
        &endpoints(design, &js, 1, ("s0", 1, port)).await,
        design,
        1,
        opts.ready_within,
    )
    .await
    .map_err(|e| format!("{label}: not ready: {}", e.reasons))?;
    let mut d = deliver(seen, &[&nats], &js, &procs, &[subject("s0", 0)], n, label).await;
    d.ready_s = ready_s;
    Ok(d)
}

/// S1: `e` endpoints, `opts.active` of them with traffic.
async fn many(opts: &Opts, design: &Design, seen: &Seen, port: u16, e: usize) -> Scale {
    let n = opts.messages;
    let a = opts.active.clamp(1, e);
    let mut s = Scale {
        endpoints: e,
        active: a,
        ..Default::default()
    };
    quiet_before(opts, design, "S1").await;
    eprintln!("[{}] S1: {e} endpoints, start and idle", design.name);
    let nats = match std::env::var("BENCH_NATS_PROFILE") {
        Ok(port) => NatsServer::start_with(&["--profile", &port]),
        Err(_) => NatsServer::start(),
    };
    let js = jetstream::new(nats.client().await);
    // Room for a consumer per endpoint and natshook's own (unmapped subjects) above
    // nats-server 2.15's default of 1,000 per stream.
    create_stream_for(&js, "SCALE_S1", "bench.s1.*", Some(e + 16)).await;
    let events = events("s1");
    let endpoints = endpoints(design, &js, 1, ("s1", e, port)).await;
    seen.reset();
    let procs = match start(
        &NatsAt::server(nats.url()),
        "SCALE_S1",
        &events,
        &endpoints,
        design,
        1,
        opts.ready_within,
    )
    .await
    {
        Ok((procs, ready_s)) => {
            s.ready_s = Some(ready_s);
            procs
        }
        Err(not) => {
            if !not.exited {
                s.bound_at_timeout = Some(e.saturating_sub(not.unbound));
            }
            s.not_ready = Some(not.reasons);
            eprintln!(
                "[{}] S1: {e} endpoints not ready within {} s ({} bound); skipping the rest of S1",
                design.name,
                opts.ready_within.as_secs(),
                s.bound_at_timeout.unwrap_or(0)
            );
            return s;
        }
    };
    let natshook = &procs[0];
    tokio::time::sleep(opts.settle).await;
    s.idle_rss_natshook_mib = natshook.rss_mib("VmRSS:");
    s.idle_rss_natshook_anon_mib = natshook.rss_mib("RssAnon:");
    s.idle_rss_nats_server_mib = status_kib(nats.pid().unwrap_or(0), "VmRSS:") as f64 / 1024.0;
    let cpu = CpuSample::start(&[natshook], &[&nats]);
    tokio::time::sleep(opts.idle_window).await;
    (s.idle_cpu_natshook_pct, s.idle_cpu_nats_server_pct) = cpu.percent_of_core();
    s.startup_peak_rss_mib = natshook.rss_mib("VmHWM:");
    s.load_idle = loadavg();
    let early = seen.count.load(Ordering::SeqCst);
    assert_eq!(early, 0, "S1: {early} deliveries with nothing published");

    eprintln!(
        "[{}] S1: {n} messages over {a} of {e} endpoints",
        design.name
    );
    let active: Vec<String> = (0..a).map(|j| subject("s1", j * e / a)).collect();
    s.drain = Some(deliver(seen, &[&nats], &js, &procs, &active, n, "S1").await);
    drop(procs);

    eprintln!(
        "[{}] S1: {n} messages published while stopped, drained by a new natshook",
        design.name
    );
    seen.reset();
    publish(&js, &active, n).await;
    seen.track_ids(n);
    let load_before = loadavg();
    let spawned = Instant::now();
    let at = NatsAt::server(nats.url());
    let mut p = spawn_natshook(
        &at,
        "SCALE_S1",
        &events,
        &endpoints,
        &design.config,
        &design.env,
    );
    let cpu = CpuSample::start(&[&p], &[&nats]);
    let fds = FdWatch::start(p.pid());
    let ready = wait_ready(&mut p, opts.ready_within).await;
    let ready_s = spawned.elapsed().as_secs_f64();
    let delivered_before_ready = seen.count.load(Ordering::SeqCst);
    let became_ready = ready.is_ok();
    let done = match ready {
        Ok(_) => wait_distinct(seen, n as u64, drain_timeout(n), "S1 restart").await,
        Err(not) => Err(format!(
            "restart on the backlog: not ready within {} s ({} consumers not bound): {}",
            opts.ready_within.as_secs(),
            not.unbound,
            not.reasons
        )),
    };
    let count = seen.count.load(Ordering::SeqCst);
    if let Err(e) = &done {
        eprintln!("[{}] {e}", design.name);
    }
    s.restart = Some(Restart {
        ready: became_ready,
        error: done.err(),
        delivered: seen.distinct.load(Ordering::SeqCst),
        max_fds: fds.max(),
        ready_s,
        delivered_before_ready,
        drained_s: spawned.elapsed().as_secs_f64(),
        cpu_us: cpu.per_delivery(count as usize),
        peak_rss_mib: p.rss_mib("VmHWM:"),
        duplicates: count.saturating_sub(n as u64),
        failed_attempts: failed_attempts(&p).await,
        load_before,
        load_after: loadavg(),
    });
    seen.reset();
    s
}

/// The nats-server of R (one server) or C (a cluster).
enum Servers {
    One(NatsServer),
    Cluster(NatsCluster),
}

impl Servers {
    async fn start(nodes: usize) -> Self {
        match nodes {
            1 => Servers::One(NatsServer::start()),
            n => Servers::Cluster(NatsCluster::start(n).await),
        }
    }

    fn nodes(&self) -> Vec<&NatsServer> {
        match self {
            Servers::One(s) => vec![s],
            Servers::Cluster(c) => c.nodes.iter().collect(),
        }
    }

    async fn client(&self) -> async_nats::Client {
        match self {
            Servers::One(s) => s.client().await,
            Servers::Cluster(c) => c.client().await,
        }
    }

    /// natshook's view: every node, and its own streams with a replica on each.
    fn at(&self) -> NatsAt {
        match self {
            Servers::One(s) => NatsAt::server(s.url()),
            Servers::Cluster(c) => NatsAt {
                urls: c.urls(),
                replicas: c.nodes.len(),
            },
        }
    }
}

/// R (`nodes` 1) and C (a cluster of `nodes`, the stream replicated on each): the same
/// backlog over `opts.replica_endpoints` endpoints, drained by `k` natshook processes
/// sharing the consumers.
async fn replicas(
    opts: &Opts,
    design: &Design,
    seen: &Seen,
    port: u16,
    (k, nodes): (usize, usize),
) -> Result<Replicas, String> {
    let (n, e) = (opts.messages, opts.replica_endpoints);
    let phase = if nodes == 1 { "R" } else { "C" };
    quiet_before(opts, design, phase).await;
    eprintln!(
        "[{}] {phase}: {n} messages over {e} endpoints, {k} natshook process(es), {nodes} nats-server node(s)",
        design.name
    );
    let nats = Servers::start(nodes).await;
    let js = jetstream::new(nats.client().await);
    js.create_stream(jetstream::stream::Config {
        name: "SCALE_R".into(),
        subjects: vec!["bench.r.*".into()],
        num_replicas: nodes,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("{phase}: cannot create the stream: {e}"))?;
    let (procs, ready_s) = start(
        &nats.at(),
        "SCALE_R",
        &events("r"),
        &endpoints(design, &js, nodes, ("r", e, port)).await,
        design,
        k,
        opts.ready_within,
    )
    .await
    .map_err(|e| format!("{phase}: not ready: {}", e.reasons))?;
    let subjects: Vec<String> = (0..e).map(|i| subject("r", i)).collect();
    let mut d = deliver(seen, &nats.nodes(), &js, &procs, &subjects, n, phase).await;
    d.ready_s = ready_s;
    Ok(Replicas {
        replicas: k,
        endpoints: e,
        nodes,
        drain: d,
    })
}

async fn run(opts: &Opts, receiver: tokio::runtime::Handle) -> Results {
    let seen = Arc::new(Seen::default());
    let port = start_receiver(&receiver, seen.clone());
    let mut r = Results {
        mode: if opts.smoke { "smoke" } else { "full" },
        natshook: natshook_bin(),
        messages: opts.messages,
        idle_settle_s: opts.settle.as_secs_f64(),
        idle_window_s: opts.idle_window.as_secs_f64(),
        load_start: loadavg(),
        ..Default::default()
    };
    for design in &opts.designs {
        let mut d = DesignResults {
            design: design.name.clone(),
            config: design.config.clone(),
            ..Default::default()
        };
        if let Err(why) = check_design(design) {
            eprintln!("[{}] design skipped: {why}", design.name);
            d.skipped = Some(why);
            r.designs.push(d);
            continue;
        }
        if opts.runs('0') {
            match one_endpoint(opts, design, &seen, port, "S0").await {
                Ok(s0) => d.s0 = Some(s0),
                Err(why) => eprintln!("[{}] {why}", design.name),
            }
        }
        let threaded = design.multi_threaded();
        if opts.runs('M') {
            match one_endpoint(opts, &threaded, &seen, port, "M").await {
                Ok(m) => d.m = Some(m),
                Err(why) => eprintln!("[{}] {why}", design.name),
            }
        }
        if opts.runs('1') {
            for &e in &opts.endpoints {
                d.s1.push(many(opts, design, &seen, port, e).await);
            }
            if d.s0.is_some() && !opts.smoke {
                match one_endpoint(opts, design, &seen, port, "S0 after S1").await {
                    Ok(s0) => d.s0_after = Some(s0),
                    Err(why) => eprintln!("[{}] {why}", design.name),
                }
            }
            if d.m.is_some() && !opts.smoke {
                match one_endpoint(opts, &threaded, &seen, port, "M after S1").await {
                    Ok(m) => d.m_after = Some(m),
                    Err(why) => eprintln!("[{}] {why}", design.name),
                }
            }
        }
        let single = opts.replicas.iter().filter(|_| opts.runs('R'));
        let cluster = opts.cluster_replicas.iter().filter(|_| opts.runs('C'));
        let rounds = single
            .map(|&k| (k, 1))
            .chain(cluster.map(|&k| (k, CLUSTER_NODES)));
        for round in rounds {
            match replicas(opts, design, &seen, port, round).await {
                Ok(rep) => d.r.push(rep),
                Err(why) => eprintln!("[{}] {why}", design.name),
            }
        }
        r.designs.push(d);
    }
    r.load_end = loadavg();
    r
}

/// Lets the machine quiet down before a phase is measured (not in smoke mode, where
/// speed is not judged), and says so when it did not within a minute.
async fn quiet_before(opts: &Opts, design: &Design, phase: &str) {
    if opts.smoke {
        return;
    }
    let busy = quiet_machine(Duration::from_secs(60)).await;
    if busy >= 0.10 {
        eprintln!(
            "[{}] {phase}: the machine was still {:.0} % busy after a minute; measuring anyway",
            design.name,
            busy * 100.0
        );
    }
}

fn fmt(v: Option<f64>, precision: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.precision$}"),
        _ => "n/a".into(),
    }
}

/// What S1 is compared with: S0's figures, averaged with S0 after S1 when it ran.
fn baseline(d: &DesignResults, figure: impl Fn(&Drain) -> f64) -> Option<f64> {
    mean_of(&d.s0, &d.s0_after, figure)
}

/// A figure of a phase run before S1, averaged with its run after S1 when there is one.
fn mean_of(
    before: &Option<Drain>,
    after: &Option<Drain>,
    figure: impl Fn(&Drain) -> f64,
) -> Option<f64> {
    let before = before.as_ref().map(&figure)?;
    Some(
        after
            .as_ref()
            .map_or(before, |after| (before + figure(after)) / 2.0),
    )
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if a > 0.0 && b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// One row of the report: a figure, its value per design, the issue's target.
struct Row {
    label: String,
    values: Vec<String>,
    target: &'static str,
}

fn rows(r: &Results) -> Vec<Row> {
    let mut rows = Vec::new();
    let designs = &r.designs;
    let mut add = |label: String, target: &'static str, f: &dyn Fn(&DesignResults) -> String| {
        rows.push(Row {
            label,
            values: designs.iter().map(f).collect(),
            target,
        });
    };
    let s0 = |d: &DesignResults| d.s0.clone();
    add("S0  1 endpoint: ready (s)".into(), "", &|d| {
        fmt(s0(d).map(|x| x.ready_s), 2)
    });
    add("S0  rate (deliveries/s)".into(), "", &|d| {
        fmt(s0(d).map(|x| x.rate_per_s), 0)
    });
    add("S0  CPU/delivery natshook (us)".into(), "", &|d| {
        fmt(s0(d).map(|x| x.cpu_us.natshook), 1)
    });
    add("S0  CPU/delivery nats-server (us)".into(), "", &|d| {
        fmt(s0(d).map(|x| x.cpu_us.nats_server), 1)
    });
    add("S0  peak RSS natshook (MiB)".into(), "", &|d| {
        fmt(s0(d).and_then(|x| x.peak_rss_mib.first().copied()), 1)
    });
    if designs.iter().any(|d| d.s0_after.is_some()) {
        let again = |d: &DesignResults| d.s0_after.clone();
        add("S0 again after S1: rate (deliveries/s)".into(), "", &|d| {
            fmt(again(d).map(|x| x.rate_per_s), 0)
        });
        add(
            "S0 again after S1: CPU/delivery natshook (us)".into(),
            "",
            &|d| fmt(again(d).map(|x| x.cpu_us.natshook), 1),
        );
        add(
            "S0 again after S1: CPU/delivery nats-server (us)".into(),
            "",
            &|d| fmt(again(d).map(|x| x.cpu_us.nats_server), 1),
        );
    }
    if designs.iter().any(|d| d.m.is_some()) {
        add(
            "M   1 endpoint, multi-threaded: CPU/delivery natshook (us)".into(),
            "",
            &|d| fmt(d.m.as_ref().map(|x| x.cpu_us.natshook), 1),
        );
        add(
            "M again after S1: CPU/delivery natshook (us)".into(),
            "",
            &|d| fmt(d.m_after.as_ref().map(|x| x.cpu_us.natshook), 1),
        );
    }
    let sizes: Vec<(usize, usize)> = designs
        .iter()
        .flat_map(|d| d.s1.iter().map(|s| (s.endpoints, s.active)))
        .fold(Vec::new(), |mut v, s| {
            if !v.contains(&s) {
                v.push(s);
            }
            v
        });
    for (e, a) in sizes {
        let s1 = move |d: &DesignResults| d.s1.iter().find(|s| s.endpoints == e).cloned();
        let dr = move |d: &DesignResults| s1(d).and_then(|s| s.drain);
        let p = format!("S1  {e} endpoints");
        add(format!("{p}: ready (s)"), "< 30", &|d| match s1(d) {
            Some(s) if s.ready_s.is_none() => match s.bound_at_timeout {
                Some(b) => format!("not ready ({b} bound)"),
                None => "not ready".into(),
            },
            s => fmt(s.and_then(|s| s.ready_s), 1),
        });
        add(format!("{p}: idle RSS natshook (MiB)"), "< 64", &|d| {
            fmt(
                s1(d)
                    .filter(|s| s.ready_s.is_some())
                    .map(|s| s.idle_rss_natshook_mib),
                1,
            )
        });
        add(format!("{p}: idle RSS nats-server (MiB)"), "", &|d| {
            fmt(
                s1(d)
                    .filter(|s| s.ready_s.is_some())
                    .map(|s| s.idle_rss_nats_server_mib),
                1,
            )
        });
        add(format!("{p}: idle CPU natshook (% core)"), "< 2", &|d| {
            fmt(
                s1(d)
                    .filter(|s| s.ready_s.is_some())
                    .map(|s| s.idle_cpu_natshook_pct),
                2,
            )
        });
        add(format!("{p}: idle CPU nats-server (% core)"), "< 5", &|d| {
            fmt(
                s1(d)
                    .filter(|s| s.ready_s.is_some())
                    .map(|s| s.idle_cpu_nats_server_pct),
                2,
            )
        });
        add(format!("{p}: start-up peak RSS (MiB)"), "", &|d| {
            fmt(
                s1(d)
                    .filter(|s| s.ready_s.is_some())
                    .map(|s| s.startup_peak_rss_mib),
                1,
            )
        });
        add(format!("{p}: rate over {a} (deliveries/s)"), "", &|d| {
            fmt(dr(d).map(|x| x.rate_per_s), 0)
        });
        add(format!("{p}: rate / S0 rate"), ">= 0.7", &|d| {
            fmt(
                ratio(dr(d).map(|x| x.rate_per_s), baseline(d, |x| x.rate_per_s)),
                2,
            )
        });
        add(format!("{p}: CPU/delivery natshook (us)"), "", &|d| {
            fmt(dr(d).map(|x| x.cpu_us.natshook), 1)
        });
        add(format!("{p}: CPU/delivery natshook / S0"), "<= 1.5", &|d| {
            fmt(
                ratio(
                    dr(d).map(|x| x.cpu_us.natshook),
                    baseline(d, |x| x.cpu_us.natshook),
                ),
                2,
            )
        });
        add(format!("{p}: CPU/delivery natshook / M"), "", &|d| {
            fmt(
                ratio(
                    dr(d).map(|x| x.cpu_us.natshook),
                    mean_of(&d.m, &d.m_after, |x| x.cpu_us.natshook),
                ),
                2,
            )
        });
        add(format!("{p}: CPU/delivery nats-server (us)"), "", &|d| {
            fmt(dr(d).map(|x| x.cpu_us.nats_server), 1)
        });
        add(format!("{p}: CPU/delivery both / S0"), "", &|d| {
            let both = |x: &Drain| x.cpu_us.natshook + x.cpu_us.nats_server;
            fmt(ratio(dr(d).as_ref().map(both), baseline(d, both)), 2)
        });
        add(format!("{p}: peak RSS natshook (MiB)"), "< 160", &|d| {
            fmt(dr(d).and_then(|x| x.peak_rss_mib.first().copied()), 1)
        });
        add(format!("{p}: most open fds natshook"), "", &|d| {
            dr(d).map_or("n/a".into(), |x| x.max_fds.to_string())
        });
        add(format!("{p}: publish of the backlog (s)"), "", &|d| {
            fmt(dr(d).map(|x| x.publish_s), 1)
        });
        let re = move |d: &DesignResults| s1(d).and_then(|s| s.restart);
        let q = format!("S1  {e}, restart on the backlog");
        add(format!("{q}: ready (s)"), "", &|d| match re(d) {
            Some(x) if !x.ready => format!("not ready ({:.0} s)", x.ready_s),
            x => fmt(x.map(|x| x.ready_s), 1),
        });
        add(format!("{q}: delivered (of the backlog)"), "", &|d| {
            re(d).map_or("n/a".into(), |x| x.delivered.to_string())
        });
        add(format!("{q}: most open fds natshook"), "", &|d| {
            re(d).map_or("n/a".into(), |x| x.max_fds.to_string())
        });
        add(format!("{q}: delivered before ready"), "", &|d| {
            re(d).map_or("n/a".into(), |x| x.delivered_before_ready.to_string())
        });
        // Only a drain that finished: one stalled at the descriptor limit leaves the
        // bench itself unable to read /proc.
        let done = move |d: &DesignResults| re(d).filter(|x| x.error.is_none());
        add(format!("{q}: all delivered after (s)"), "", &|d| {
            fmt(done(d).map(|x| x.drained_s), 1)
        });
        add(format!("{q}: CPU/delivery natshook (us)"), "", &|d| {
            fmt(done(d).map(|x| x.cpu_us.natshook), 1)
        });
        add(format!("{q}: CPU/delivery nats-server (us)"), "", &|d| {
            fmt(done(d).map(|x| x.cpu_us.nats_server), 1)
        });
        add(format!("{q}: peak RSS natshook (MiB)"), "< 160", &|d| {
            fmt(done(d).map(|x| x.peak_rss_mib), 1)
        });
    }
    let counts: Vec<(usize, usize, usize)> = designs
        .iter()
        .flat_map(|d| d.r.iter().map(|x| (x.replicas, x.endpoints, x.nodes)))
        .fold(Vec::new(), |mut v, s| {
            if !v.contains(&s) {
                v.push(s);
            }
            v
        });
    for (k, e, nodes) in counts {
        let rep = move |d: &DesignResults| {
            d.r.iter()
                .find(|x| x.replicas == k && x.nodes == nodes)
                .map(|x| x.drain.clone())
        };
        let p = match nodes {
            1 => format!("R   {k} replica(s), {e} endpoints"),
            n => format!("C   {k} replica(s), {e} endpoints, {n} nodes R{n}"),
        };
        add(format!("{p}: rate (deliveries/s)"), "", &|d| {
            fmt(rep(d).map(|x| x.rate_per_s), 0)
        });
        add(format!("{p}: CPU/delivery natshook, sum (us)"), "", &|d| {
            fmt(rep(d).map(|x| x.cpu_us.natshook), 1)
        });
        let servers = if nodes == 1 { "" } else { ", sum" };
        add(
            format!("{p}: CPU/delivery nats-server{servers} (us)"),
            "",
            &|d| fmt(rep(d).map(|x| x.cpu_us.nats_server), 1),
        );
        add(format!("{p}: deliveries per process"), "", &|d| {
            rep(d).map_or("n/a".into(), |x| {
                x.deliveries_per_process
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(" / ")
            })
        });
        add(format!("{p}: duplicates"), "", &|d| {
            rep(d).map_or("n/a".into(), |x| x.duplicates.to_string())
        });
    }
    add("attempts without 2xx (all phases)".into(), "0", &|d| {
        let s0 = (d.s0.iter().chain(&d.s0_after))
            .chain(d.m.iter().chain(&d.m_after))
            .map(|x| x.failed_attempts);
        let s1 = d.s1.iter().flat_map(|s| {
            let live = s.drain.as_ref().map(|x| x.failed_attempts);
            live.into_iter()
                .chain(s.restart.as_ref().map(|x| x.failed_attempts))
        });
        let r = d.r.iter().map(|x| x.drain.failed_attempts);
        s0.chain(s1).chain(r).sum::<u64>().to_string()
    });
    rows
}

/// What did not finish in a design: phases not ready, drains that timed out.
fn errors(d: &DesignResults) -> Vec<String> {
    let mut out = Vec::new();
    for e in (d.s0.iter().chain(&d.s0_after))
        .chain(d.m.iter().chain(&d.m_after))
        .filter_map(|x| x.error.clone())
    {
        out.push(e);
    }
    for s in &d.s1 {
        let p = format!("S1 {} endpoints", s.endpoints);
        if let Some(why) = &s.not_ready {
            out.push(format!("{p}: {why}"));
        }
        if let Some(e) = s.drain.as_ref().and_then(|x| x.error.clone()) {
            out.push(format!("{p}: {e}"));
        }
        if let Some(e) = s.restart.as_ref().and_then(|x| x.error.clone()) {
            out.push(format!("{p}: {e}"));
        }
    }
    for r in &d.r {
        if let Some(e) = &r.drain.error {
            out.push(format!("{}: {e}", r.label()));
        }
    }
    out
}

fn report(r: &Results) {
    println!(
        "natshook scale benchmark ({} mode, {} messages of 1 KiB per drain)",
        r.mode, r.messages
    );
    println!("  natshook binary: {}", r.natshook);
    println!(
        "  load average at start {}, at end {} (2 cores: S1 idle settles {:.0} s, then idle CPU over {:.0} s)",
        r.load_start, r.load_end, r.idle_settle_s, r.idle_window_s
    );
    for d in &r.designs {
        if let Some(why) = &d.skipped {
            println!("  design {}: skipped: {why}", d.design);
        }
    }
    let measured: Vec<&DesignResults> = r.designs.iter().filter(|d| d.skipped.is_none()).collect();
    if measured.is_empty() {
        return;
    }
    let view = Results {
        designs: measured.into_iter().cloned().collect(),
        ..Default::default()
    };
    let rows = rows(&view);
    let width = rows.iter().map(|r| r.label.len()).max().unwrap_or(10);
    let col = 18;
    print!("  {:<width$}", "figure");
    for d in &view.designs {
        print!(" {:>col$}", d.design);
    }
    println!(" {:>8}", "target");
    for row in &rows {
        print!("  {:<width$}", row.label);
        for v in &row.values {
            print!(" {v:>col$}");
        }
        println!(" {:>8}", row.target);
    }
    for d in &view.designs {
        for why in errors(d) {
            println!("  [{}] {why}", d.design);
        }
        let loads: Vec<String> =
            d.s0.iter()
                .map(|x| format!("S0 {} -> {}", x.load_before, x.load_after))
                .chain(
                    d.s0_after
                        .iter()
                        .map(|x| format!("S0 after S1 {} -> {}", x.load_before, x.load_after)),
                )
                .chain(d.s1.iter().map(|s| format!("S1 idle {}", s.load_idle)))
                .chain(
                    d.s1.iter()
                        .filter_map(|s| s.drain.as_ref())
                        .map(|x| format!("S1 drain {} -> {}", x.load_before, x.load_after)),
                )
                .chain(
                    d.s1.iter()
                        .filter_map(|s| s.restart.as_ref())
                        .map(|x| format!("S1 restart {} -> {}", x.load_before, x.load_after)),
                )
                .chain(d.r.iter().map(|x| {
                    format!(
                        "{} {} -> {}",
                        x.label(),
                        x.drain.load_before,
                        x.drain.load_after
                    )
                }))
                .collect();
        println!("  [{}] load averages: {}", d.design, loads.join("; "));
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let opts = Opts::from_env(full);
    let (rt, receiver) = support::runtimes();
    let r = rt.block_on(run(&opts, receiver.handle().clone()));
    report(&r);
    let out = concat!(env!("CARGO_MANIFEST_DIR"), "/target/scale-results.json");
    let _ = std::fs::write(out, serde_json::to_vec_pretty(&r).unwrap_or_default());
    if r.mode == "smoke" {
        for d in &r.designs {
            if d.skipped.is_some() {
                continue;
            }
            let failed = errors(d);
            assert!(failed.is_empty(), "[{}] {}", d.design, failed.join("; "));
            let s1_drained =
                d.s1.iter()
                    .all(|s| s.drain.is_some() && s.restart.is_some());
            assert!(
                d.s0.is_some() || !opts.runs('0'),
                "[{}] S0 did not drain",
                d.design
            );
            assert!(
                d.m.is_some() || !opts.runs('M'),
                "[{}] M did not drain",
                d.design
            );
            assert!(
                s1_drained || !opts.runs('1'),
                "[{}] S1 did not drain",
                d.design
            );
            let rounds = |phase: char, counts: &[usize]| {
                if opts.runs(phase) {
                    counts.len()
                } else {
                    0
                }
            };
            assert_eq!(
                d.r.len(),
                rounds('R', &opts.replicas) + rounds('C', &opts.cluster_replicas),
                "[{}] a replica round did not drain",
                d.design
            );
        }
        println!("scale smoke: every message delivered in every phase (speed is not judged in smoke mode)");
    }
}
