//! natshook replicas on a three-node nats-server cluster: replicated streams, several
//! natshook processes with the same config sharing each endpoint's durable consumer,
//! and faults mid-run (a nats-server node and a natshook replica killed with SIGKILL).
//! The assertion is the usual one: every published id delivered at least once, and
//! duplicates carry the same id.

mod common;

use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use common::*;

/// What one run puts through the cluster.
struct Load {
    endpoints: usize,
    messages: usize,
    /// `[delivery] fan_out`: copies on the (R3) work streams, endpoint consumers that
    /// keep their state in memory.
    fan_out: bool,
}

fn cluster_config(urls: &str, rx: &Receiver, load: &Load) -> String {
    let mut config = TestConfig::new(urls.to_string());
    config.create_stream = false;
    config.events = vec![("cluster.*".into(), "item.{2}".into())];
    config = config.nats("replicas = 3");
    if load.fan_out {
        config.top = format!("{}\n[delivery]\nfan_out = true\n", config.top);
    }
    for i in 0..load.endpoints {
        config = config.endpoint(
            &format!("e{i}"),
            &rx.url(&format!("/e{i}")),
            &[&format!("item.e{i}")],
            // Load on a shared two-core machine makes some attempts time out; those
            // retry soon and never dead-letter or pause, so only the faults under
            // test could lose anything.
            "timeout = \"10s\"\nretry_schedule = [\"200ms\", \"1s\"]\nmax_attempts = 1000\n\
             disable_after_failures = 0\nconcurrency = 4",
        );
    }
    config.render()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_a_cluster_lose_nothing_when_a_node_and_a_replica_die() {
    lose_nothing_on_a_cluster(Load {
        endpoints: 200,
        messages: 20_000,
        fan_out: false,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_replicas_on_a_cluster_lose_nothing_when_a_node_and_a_replica_die() {
    lose_nothing_on_a_cluster(Load {
        endpoints: 60,
        messages: 6_000,
        fan_out: true,
    })
    .await;
}

/// Three natshook replicas on a three-node cluster with an R3 stream; once a third of
/// the messages arrived, one replica and one node die (SIGKILL). Every id must still
/// arrive at its own endpoint, and the faults must cause no dead letter.
async fn lose_nothing_on_a_cluster(load: Load) {
    let (endpoints, messages) = (load.endpoints, load.messages);
    let mut cluster = NatsCluster::start(3).await;
    let client = cluster.client().await;
    let js = jetstream::new(client);
    js.create_stream(jetstream::stream::Config {
        name: "EVENTS".into(),
        subjects: vec!["cluster.>".into()],
        num_replicas: 3,
        ..Default::default()
    })
    .await
    .expect("create the R3 stream");

    let ids: Vec<String> = (0..messages).map(|i| format!("c-{i}")).collect();
    let batch = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            (
                format!("cluster.e{}", i % endpoints),
                Bytes::from(format!("{{\"n\":{i}}}")),
                Some(id.clone()),
            )
        })
        .collect();
    publish_all(&js, batch).await;

    let rx = Receiver::start().await;
    let config = cluster_config(&cluster.urls(), &rx, &load);
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas
            .push(Natshook::start_ready_within(&config, &[], &[], Duration::from_secs(180)).await);
    }

    rx.wait_for(Duration::from_secs(120), "a third delivered", |r| {
        r.delivered_ids().len() >= messages / 3
    })
    .await;
    replicas[2].sigkill();
    cluster.nodes[0].kill();
    let killed_at = Instant::now();

    rx.wait_for(Duration::from_secs(240), "every id delivered", |r| {
        r.delivered_ids().len() >= messages
    })
    .await;
    let delivered = rx.delivered_ids();
    let missing: Vec<&String> = ids
        .iter()
        .filter(|id| !delivered.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "lost: {:?}",
        &missing[..missing.len().min(5)]
    );
    let duplicates: usize = delivered.values().map(|n| n - 1).sum();
    let wrong_path = rx
        .received()
        .iter()
        .filter(|r| {
            let n: usize = r.id()[2..].parse().expect("test id");
            r.path != format!("/e{}", n % endpoints)
        })
        .count();
    assert_eq!(wrong_path, 0, "a message reached another endpoint");
    eprintln!(
        "{messages} ids over {endpoints} endpoints delivered (fan_out = {}); {duplicates} \
         duplicate deliveries (same id); all delivered {:.1} s after the faults",
        load.fan_out,
        killed_at.elapsed().as_secs_f64()
    );

    // The faults caused no dead letters. Right after a node dies the stream may be
    // electing a new leader, and JetStream answers "unavailable" until it has one.
    let dlq = dead_letter_info(&js).await;
    assert_eq!(dlq.state.messages, 0, "dead letters caused by the faults");
    assert_eq!(
        dlq.config.num_replicas, 3,
        "nats.replicas applies to NATSHOOK_DLQ"
    );
}

/// `NATSHOOK_DLQ`'s info, asked again while the cluster elects leaders after a fault.
async fn dead_letter_info(js: &jetstream::Context) -> jetstream::stream::Info {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let info = match js.get_stream("NATSHOOK_DLQ").await {
            Ok(mut stream) => stream.info().await.cloned().map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match info {
            Ok(info) => return info,
            Err(e) if Instant::now() < deadline => {
                eprintln!("dead-letter stream info not yet available: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("the replicated dead-letter stream: {e}"),
        }
    }
}

const PAUSED_A: &str = "natshook_endpoint_paused{endpoint=\"a\"}";

/// One endpoint `a` with the admin API on, for two replicas on one server.
fn replica_config(nats: &NatsServer, rx: &Receiver, extra: &str) -> String {
    with_admin(TestConfig::new(nats.url()).endpoint("a", &rx.url("/a"), &["*"], extra)).render()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_pause_on_one_replica_holds_every_replica_until_a_resume_on_any() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let config = replica_config(&nats, &rx, "");
    let one = Natshook::start(&config).await;
    let two = Natshook::start(&config).await;
    let js = jetstream::new(nats.client().await);

    let (status, _) = one
        .api("POST", "/api/endpoints/a/pause", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 200);
    two.wait_metric(
        PAUSED_A,
        1.0,
        Duration::from_secs(2),
        "replica two did not follow the pause within 2 s",
    )
    .await;
    let (_, state) = two
        .api("GET", "/api/endpoints/a", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(state["pause_reason"], "paused by an operator", "{state}");

    publish_all(&js, leads(30, "rp")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        rx.count(),
        0,
        "a paused endpoint received requests on some replica"
    );

    let (status, _) = two
        .api("POST", "/api/endpoints/a/resume", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 200);
    one.wait_metric(
        PAUSED_A,
        0.0,
        Duration::from_secs(2),
        "replica one did not follow the resume within 2 s",
    )
    .await;
    rx.wait_for(
        Duration::from_secs(20),
        "30 delivered after the resume",
        |r| r.delivered_ids().len() >= 30,
    )
    .await;

    // The pause is kept in JetStream: a replica started while it holds starts paused.
    one.api("POST", "/api/endpoints/a/pause", Some(ADMIN_TOKEN), None)
        .await;
    two.wait_metric(PAUSED_A, 1.0, Duration::from_secs(2), "pause not followed")
        .await;
    let three = Natshook::start(&config).await;
    three
        .wait_metric(
            PAUSED_A,
            1.0,
            Duration::from_secs(2),
            "a new replica ignored the shared pause",
        )
        .await;
}

/// A pause record this version cannot read (a cause a newer version writes, read after
/// a rollback or by an older replica) pauses the endpoint when it arrives and at
/// start, and holds like an operator's: no probe goes out, and a resume ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_pause_this_version_cannot_read_holds_until_a_resume() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let config = replica_config(
        &nats,
        &rx,
        "probe_interval = \"500ms\"\nprobe_max_interval = \"500ms\"",
    );
    let mut n = Natshook::start(&config).await;
    let js = jetstream::new(nats.client().await);
    let state = js.get_key_value("NATSHOOK_STATE").await.expect("bucket");
    state
        .put(
            "paused.a",
            Bytes::from_static(
                br#"{"cause":"quarantined","until":"2027-01-01T00:00:00Z","at":"2026-12-06T01:00:00Z","by":"pod-b/7"}"#,
            ),
        )
        .await
        .unwrap();
    n.wait_metric(
        PAUSED_A,
        1.0,
        Duration::from_secs(2),
        "the pause was not followed",
    )
    .await;
    let (_, view) = n
        .api("GET", "/api/endpoints/a", Some(ADMIN_TOKEN), None)
        .await;
    assert!(
        view["pause_reason"]
            .as_str()
            .is_some_and(|r| r.contains("does not know (quarantined)")),
        "{view}"
    );
    publish_all(&js, leads(20, "uc")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rx.count(), 0, "a probe or a delivery went out");

    n.terminate().await;
    n.spawn().await;
    n.wait_metric(
        PAUSED_A,
        1.0,
        Duration::from_secs(2),
        "a restarted process ignored the pause",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rx.count(), 0, "a request went out after the restart");

    let (status, resumed) = n
        .api("POST", "/api/endpoints/a/resume", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 200, "{resumed}");
    rx.wait_for(
        Duration::from_secs(20),
        "20 delivered after the resume",
        |r| r.delivered_ids().len() >= 20,
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while state.get("paused.a").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the resume was not written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_receiver_pauses_every_replica_one_probes_at_a_time_and_a_success_resumes_all() {
    let nats = NatsServer::start();
    let rx = Receiver::with(|_| Reply::status(503)).await;
    let config = replica_config(
        &nats,
        &rx,
        "concurrency = 2\ndisable_after_failures = 3\nprobe_interval = \"1s\"\nprobe_max_interval = \"1s\"\n\
         max_attempts = 1000\nretry_schedule = [\"100ms\"]",
    );
    let one = Natshook::start(&config).await;
    let two = Natshook::start(&config).await;
    let js = jetstream::new(nats.client().await);
    let published: Vec<String> = (0..50).map(|i| format!("fp-{i}")).collect();
    publish_all(&js, leads(50, "fp")).await;
    for (name, replica) in [("one", &one), ("two", &two)] {
        replica
            .wait_metric(
                PAUSED_A,
                1.0,
                Duration::from_secs(20),
                &format!("replica {name} did not pause"),
            )
            .await;
    }

    // Paused everywhere: only probes reach the receiver, one per interval between both
    // replicas (each probing on its own would send two).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = rx.count();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let probes = rx.count() - before;
    assert!(
        (1..=8).contains(&probes),
        "{probes} probes in 6 s with a 1 s probe interval on two replicas"
    );

    rx.set(|_| Reply::ok());
    for (name, replica) in [("one", &one), ("two", &two)] {
        replica
            .wait_metric(
                PAUSED_A,
                0.0,
                Duration::from_secs(10),
                &format!("replica {name} did not resume"),
            )
            .await;
    }
    rx.wait_for(
        Duration::from_secs(30),
        "50 delivered after the receiver is back",
        |r| r.delivered_ids().len() >= 50,
    )
    .await;
    let delivered = rx.delivered_ids();
    assert!(published.iter().all(|id| delivered.contains_key(id)));
    assert!(
        one.dead_letters("a").is_empty(),
        "the pause caused dead letters"
    );
}
