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

const ENDPOINTS: usize = 200;
const MESSAGES: usize = 20_000;

fn cluster_config(urls: &str, rx: &Receiver) -> String {
    let mut config = TestConfig::new(urls.to_string());
    config.create_stream = false;
    config.events = vec![("cluster.*".into(), "item.{2}".into())];
    config = config.nats("replicas = 3");
    for i in 0..ENDPOINTS {
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

    let ids: Vec<String> = (0..MESSAGES).map(|i| format!("c-{i}")).collect();
    let messages = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            (
                format!("cluster.e{}", i % ENDPOINTS),
                Bytes::from(format!("{{\"n\":{i}}}")),
                Some(id.clone()),
            )
        })
        .collect();
    publish_all(&js, messages).await;

    let rx = Receiver::start().await;
    let config = cluster_config(&cluster.urls(), &rx);
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas
            .push(Natshook::start_ready_within(&config, &[], &[], Duration::from_secs(180)).await);
    }

    rx.wait_for(Duration::from_secs(120), "a third delivered", |r| {
        r.delivered_ids().len() >= MESSAGES / 3
    })
    .await;
    replicas[2].sigkill();
    cluster.nodes[0].kill();
    let killed_at = Instant::now();

    rx.wait_for(Duration::from_secs(240), "every id delivered", |r| {
        r.delivered_ids().len() >= MESSAGES
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
            r.path != format!("/e{}", n % ENDPOINTS)
        })
        .count();
    assert_eq!(wrong_path, 0, "a message reached another endpoint");
    eprintln!(
        "{MESSAGES} ids over {ENDPOINTS} endpoints delivered; {duplicates} duplicate deliveries \
         (same id); all delivered {:.1} s after the faults",
        killed_at.elapsed().as_secs_f64()
    );

    // The faults caused no dead letters.
    let dlq = js
        .get_stream("NATSHOOK_DLQ")
        .await
        .expect("the replicated dead-letter stream")
        .info()
        .await
        .expect("dead-letter stream info")
        .clone();
    assert_eq!(dlq.state.messages, 0, "dead letters caused by the faults");
    assert_eq!(
        dlq.config.num_replicas, 3,
        "nats.replicas applies to NATSHOOK_DLQ"
    );
}
