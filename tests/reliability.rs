//! Fault tests: receivers that fail, hang, refuse, throttle or are gone; nats-server
//! and natshook killed mid-stream; SIGTERM with deliveries in flight. Every test ends
//! with the same assertion: each published id reached the receiver at least once or
//! sits, complete, in the dead letters, and nothing else arrived.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use base64::Engine;
use bytes::Bytes;
use common::*;
use futures_util::StreamExt;

/// Each published id was delivered (2xx) or dead-lettered, and no other id arrived.
/// Every request carrying an id carried the same event and subject.
fn assert_nothing_lost(rx: &Receiver, published: &[String], dead: &[serde_json::Value]) {
    let delivered = rx.delivered_ids();
    let dead_ids: BTreeSet<String> = dead
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    let missing: Vec<&String> = published
        .iter()
        .filter(|id| !delivered.contains_key(*id) && !dead_ids.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} id(s) lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let known: BTreeSet<&String> = published.iter().collect();
    let unknown: Vec<String> = rx
        .received()
        .iter()
        .map(|r| r.id().to_string())
        .filter(|id| !known.contains(id))
        .collect();
    assert!(unknown.is_empty(), "unexpected ids: {unknown:?}");
    let mut seen: BTreeMap<String, (String, String)> = BTreeMap::new();
    for r in rx.received() {
        let b = r.json();
        let key = (b["event"].to_string(), b["metadata"]["subject"].to_string());
        let prev = seen
            .entry(r.id().to_string())
            .or_insert_with(|| key.clone());
        assert_eq!(*prev, key, "a duplicate of {} differs", r.id());
        assert_eq!(b["id"], r.id());
    }
}

/// Every id's X-Webhook-Attempt values, sorted, are 1, 2, 3, …: each counts a real
/// attempt, none was spent on a message the receiver never got.
fn assert_attempts_count_up(rx: &Receiver) {
    let mut by_id: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for r in rx.received() {
        let attempt = r.header("x-webhook-attempt").parse().unwrap();
        by_id.entry(r.id().to_string()).or_default().push(attempt);
    }
    for (id, mut attempts) in by_id {
        attempts.sort_unstable();
        let expected: Vec<u32> = (1..=attempts.len() as u32).collect();
        assert_eq!(attempts, expected, "{id}: attempts seen by the receiver");
    }
}

fn ids(messages: &[(String, Bytes, Option<String>)]) -> Vec<String> {
    messages.iter().map(|m| m.2.clone().unwrap()).collect()
}

/// Publishes `n` lead.created messages and returns their ids.
async fn publish_leads(js: &jetstream::Context, n: usize, prefix: &str) -> Vec<String> {
    let msgs = leads(n, prefix);
    let published = ids(&msgs);
    publish_all(js, msgs).await;
    published
}

async fn setup(rx: &Receiver, extra: &str) -> (NatsServer, Natshook, jetstream::Context) {
    let nats = NatsServer::start();
    let config = TestConfig::new(nats.url()).endpoint("e", &rx.url("/hook"), &["*"], extra);
    let natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    (nats, natshook, js)
}

/// A consumer deleted by hand (without fan-out) is made again after what it had
/// acked, not at the stream's first message: what the stream retains is not all sent
/// again. On a stream made again, which numbers from 1, it starts at the first one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_deleted_by_hand_starts_again_after_what_it_acked() {
    let rx = Receiver::start().await;
    let (_nats, _natshook, js) = setup(&rx, "").await;
    let before = publish_leads(&js, 20, "before").await;
    rx.wait_for(Duration::from_secs(20), "the first 20", |r| {
        r.delivered_ids().len() >= 20
    })
    .await;
    // Every ack landed, then past the next pending poll (every 5 s), which reads the
    // ack floor.
    wait_until(Duration::from_secs(20), "every delivery acked", || {
        let js = js.clone();
        async move {
            consumer_info(&js, "EVENTS", "natshook-e")
                .await
                .ack_floor
                .stream_sequence
                >= 20
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let stream = js.get_stream("EVENTS").await.expect("stream");
    stream
        .delete_consumer("natshook-e")
        .await
        .expect("delete the consumer");
    publish_leads(&js, 5, "after").await;
    rx.wait_for(Duration::from_secs(30), "the 5 after", |r| {
        r.delivered_ids().len() >= 25
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let counts = rx.delivered_ids();
    for id in &before {
        assert_eq!(counts[id], 1, "{id} sent again");
    }

    let config = stream.cached_info().config.clone();
    js.delete_stream("EVENTS").await.expect("delete the stream");
    js.create_stream(config).await.expect("the stream again");
    let again = publish_leads(&js, 5, "again").await;
    rx.wait_for(Duration::from_secs(60), "the 5 on the new stream", |r| {
        let got = r.delivered_ids();
        again.iter().all(|id| got.contains_key(id))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_failing_the_first_attempts_gets_every_message_with_counting_attempts() {
    let rx = Receiver::with(|r| match r.nth_for_id {
        1 => Reply::status(500),
        2 => Reply::status(503),
        _ => Reply::ok(),
    })
    .await;
    let (_nats, natshook, js) = setup(
        &rx,
        "retry_schedule = [\"100ms\", \"100ms\", \"100ms\"]\ndisable_after_failures = 0",
    )
    .await;
    let published = publish_leads(&js, 1000, "k").await;
    rx.wait_for(Duration::from_secs(90), "1000 delivered", |r| {
        r.delivered_ids().len() >= 1000
    })
    .await;
    assert_nothing_lost(&rx, &published, &[]);
    let mut by_id: BTreeMap<String, Vec<(usize, String, u64)>> = BTreeMap::new();
    for r in rx.received() {
        by_id.entry(r.id().to_string()).or_default().push((
            r.nth_for_id,
            r.header("x-webhook-attempt").to_string(),
            r.json()["metadata"]["attempt"].as_u64().unwrap(),
        ));
    }
    for (id, mut tries) in by_id {
        tries.sort();
        let attempts: Vec<String> = tries.iter().map(|t| t.1.clone()).collect();
        assert_eq!(
            attempts,
            ["1", "2", "3"],
            "{id}: X-Webhook-Attempt counts up"
        );
        assert!(
            tries.iter().all(|t| t.1 == t.2.to_string()),
            "{id}: body attempt matches header"
        );
    }
    let m = natshook.metrics().await;
    assert!(m.contains("natshook_deliveries_total{endpoint=\"e\",event=\"lead.created\",outcome=\"retry\"} 2000"), "{m}");
    assert!(m.contains("natshook_deliveries_total{endpoint=\"e\",event=\"lead.created\",outcome=\"success\"} 1000"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_500_dead_letters_complete_records_and_replay_delivers_them() {
    let long_body = "x".repeat(10_000);
    let body = long_body.clone();
    let rx = Receiver::with(move |_| Reply::status(500).body(body.clone())).await;
    let (_nats, natshook, js) = setup(
        &rx,
        "retry_schedule = [\"50ms\"]\nmax_attempts = 3\ndisable_after_failures = 0",
    )
    .await;
    let msgs = leads(200, "d");
    let published = ids(&msgs);
    let payloads: BTreeMap<String, Bytes> = msgs
        .iter()
        .map(|m| (m.2.clone().unwrap(), m.1.clone()))
        .collect();
    publish_all(&js, msgs).await;
    rx.wait_for(Duration::from_secs(60), "3 attempts each", |r| {
        r.count() >= 600
    })
    .await;

    let dead = natshook
        .wait_dead_letters("e", 200, Duration::from_secs(30))
        .await;
    assert_eq!(dead.len(), 200);
    assert_eq!(rx.count(), 600, "exactly max_attempts tries each");
    for d in &dead {
        let id = d["id"].as_str().unwrap();
        assert_eq!(d["endpoint"], "e");
        assert_eq!(d["event"], "lead.created");
        assert_eq!(d["subject"], "crm.lead.created");
        assert_eq!(d["attempts"], 3);
        assert_eq!(d["last_status"], 500);
        assert_eq!(d["last_error"], "HTTP 500");
        assert_eq!(d["response_body"].as_str().unwrap(), &long_body[..4096]);
        let payload = base64::engine::general_purpose::STANDARD
            .decode(d["payload"].as_str().unwrap())
            .unwrap();
        assert_eq!(payload, payloads[id].as_ref(), "original payload kept");
        assert!(d["reason"].as_str().unwrap().contains("after 3 attempts"));
    }
    assert_nothing_lost(&rx, &published, &dead);
    assert_eq!(
        natshook
            .metric("natshook_dead_letters_total{endpoint=\"e\"}")
            .await,
        Some(200.0)
    );

    // The receiver is fixed; --since in the future selects nothing, then replay one
    // by id, then the rest.
    rx.set(|_| Reply::ok());
    let out = natshook.cli(&[
        "dlq",
        "replay",
        "--endpoint",
        "e",
        "--all",
        "--since",
        "2999-01-01T00:00:00Z",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        natshook.dead_letters("e").len(),
        200,
        "--since kept every older record"
    );
    let out = natshook.cli(&["dlq", "replay", "--endpoint", "e", "--id", "d-7"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(natshook.dead_letters("e").len(), 199);
    let out = natshook.cli(&["dlq", "replay", "--endpoint", "e", "--all"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        rx.delivered_ids().len(),
        200,
        "every dead letter delivered by replay"
    );
    assert!(
        natshook.dead_letters("e").is_empty(),
        "replayed records are removed"
    );
    let replayed = rx
        .received()
        .into_iter()
        .find(|r| r.id() == "d-7" && r.replied == 200)
        .unwrap();
    assert_eq!(replayed.json()["data"]["lead"], 7);
    assert_eq!(replayed.header("x-webhook-attempt"), "4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_hanging_past_the_timeout_is_retried() {
    let rx = Receiver::with(|r| {
        if r.nth_for_id == 1 {
            Reply::ok().delay(Duration::from_secs(5))
        } else {
            Reply::ok()
        }
    })
    .await;
    let (_nats, natshook, js) = setup(
        &rx,
        "timeout = \"300ms\"\nretry_schedule = [\"100ms\"]\nmax_attempts = 5\ndisable_after_failures = 0",
    )
    .await;
    let published = publish_leads(&js, 300, "h").await;
    rx.wait_for(Duration::from_secs(60), "300 delivered", |r| {
        r.received()
            .iter()
            .filter(|x| x.nth_for_id == 2 && x.replied == 200)
            .count()
            >= 300
    })
    .await;
    assert_nothing_lost(&rx, &published, &[]);
    let timeouts = natshook
        .metric("natshook_delivery_attempts_total{endpoint=\"e\",status=\"timeout\"}")
        .await
        .unwrap_or(0.0);
    assert!(timeouts >= 300.0, "timeouts counted: {timeouts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_retried_until_the_receiver_is_back() {
    let mut rx = Receiver::start().await;
    let (_nats, natshook, js) = setup(
        &rx,
        "retry_schedule = [\"200ms\"]\nmax_attempts = 1000\ndisable_after_failures = 0",
    )
    .await;
    rx.stop().await;
    let published = publish_leads(&js, 1000, "c").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while natshook
        .metric("natshook_delivery_attempts_total{endpoint=\"e\",status=\"connect_error\"}")
        .await
        .unwrap_or(0.0)
        < 1000.0
    {
        assert!(Instant::now() < deadline, "connect errors not counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rx.resume().await;
    rx.wait_for(Duration::from_secs(60), "1000 delivered", |r| {
        r.delivered_ids().len() >= 1000
    })
    .await;
    assert_nothing_lost(&rx, &published, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_on_429_sets_the_delay() {
    let rx = Receiver::with(|r| {
        if r.nth_for_id == 1 {
            Reply::status(429).header("Retry-After", "2")
        } else {
            Reply::ok()
        }
    })
    .await;
    // Without Retry-After the retry would wait 60 s.
    let (_nats, _natshook, js) = setup(
        &rx,
        "retry_schedule = [\"60s\"]\ndisable_after_failures = 0",
    )
    .await;
    let published = publish_leads(&js, 20, "r").await;
    rx.wait_for(Duration::from_secs(30), "20 delivered", |r| {
        r.delivered_ids().len() >= 20
    })
    .await;
    assert_nothing_lost(&rx, &published, &[]);
    let got = rx.received();
    for id in &published {
        let first = got
            .iter()
            .find(|r| r.id() == id && r.nth_for_id == 1)
            .unwrap();
        let second = got
            .iter()
            .find(|r| r.id() == id && r.nth_for_id == 2)
            .unwrap();
        let gap = second.at - first.at;
        assert!(
            gap >= Duration::from_millis(1900) && gap < Duration::from_secs(10),
            "{id}: retried after {gap:?}"
        );
    }
}

/// Messages a receiver keeps refusing wait out their retry delays without holding the
/// endpoint's window: twice its size of them, each waiting 10 minutes after its second
/// attempt, hold up neither each other nor the messages published after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_waiting_out_long_retries_hold_up_no_later_ones() {
    let rx = Receiver::with(|r| match r.id().starts_with("poison") {
        true => Reply::status(422),
        false => Reply::ok(),
    })
    .await;
    // A window of 4 unacked messages.
    let (_nats, natshook, js) = setup(
        &rx,
        "concurrency = 2\nretry_schedule = [\"100ms\", \"10m\"]\nmax_attempts = 5\ndisable_after_failures = 0",
    )
    .await;
    let poison = publish_leads(&js, 8, "poison").await;
    rx.wait_for(
        Duration::from_secs(40),
        "every refused message tried twice",
        |r| {
            let tries = r.received();
            (poison.iter()).all(|id| tries.iter().filter(|t| t.id() == id).count() >= 2)
        },
    )
    .await;
    let later = publish_leads(&js, 10, "later").await;
    rx.wait_for(Duration::from_secs(30), "the later messages", |r| {
        let delivered = r.delivered_ids();
        later.iter().all(|id| delivered.contains_key(id))
    })
    .await;
    assert!(
        rx.received()
            .iter()
            .filter(|t| t.id().starts_with("poison"))
            .all(|t| t.nth_for_id <= 2),
        "a refused message tried a third time before its 10 minutes"
    );
    assert!(natshook.dead_letters("e").is_empty());
}

/// The paused-endpoint gauge of the one endpoint `setup` configures.
const PAUSED: &str = "natshook_endpoint_paused{endpoint=\"e\"}";

/// A receiver answering `status`, natshook with `extra` endpoint settings, `n` messages
/// published, and the endpoint paused by the failures.
async fn paused_with_backlog(
    status: u16,
    extra: &str,
    n: usize,
    prefix: &str,
) -> (Receiver, NatsServer, Natshook, Vec<String>) {
    let rx = Receiver::with(move |_| Reply::status(status)).await;
    let (nats, natshook, js) = setup(&rx, extra).await;
    let published = publish_leads(&js, n, prefix).await;
    natshook
        .wait_metric(
            PAUSED,
            1.0,
            Duration::from_secs(10),
            "endpoint did not pause",
        )
        .await;
    (rx, nats, natshook, published)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_410_pauses_at_once_and_loses_nothing() {
    let (rx, _nats, natshook, published) = paused_with_backlog(
        410,
        "concurrency = 4\nprobe_interval = \"1s\"\nprobe_max_interval = \"1s\"\ndisable_after_failures = 1000\nmax_attempts = 50\nretry_schedule = [\"100ms\"]",
        100,
        "g",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // At most the in-flight requests of the moment plus one probe per second.
    assert!(
        rx.count() <= 4 + 4,
        "deliveries stopped while paused: {} requests",
        rx.count()
    );
    assert!(
        natshook.dead_letters("e").is_empty(),
        "a pause never dead-letters"
    );
    rx.set(|_| Reply::ok());
    rx.wait_for(
        Duration::from_secs(30),
        "100 delivered after the receiver is back",
        |r| r.delivered_ids().len() >= 100,
    )
    .await;
    assert_eq!(natshook.metric(PAUSED).await, Some(0.0));
    assert_nothing_lost(&rx, &published, &[]);
    assert_attempts_count_up(&rx);
    assert!(natshook.dead_letters("e").is_empty());
}

/// A probe is an attempt of its message: a `410` on the message's last attempt
/// dead-letters it, as any failure on the last attempt does, and the endpoint stays
/// paused; the held messages go out once the receiver is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_410_on_the_last_attempt_dead_letters_and_pauses() {
    let (rx, _nats, natshook, published) = paused_with_backlog(
        410,
        "concurrency = 4\nprobe_interval = \"500ms\"\nprobe_max_interval = \"500ms\"\ndisable_after_failures = 1000\nmax_attempts = 2\nretry_schedule = [\"100ms\"]",
        40,
        "l",
    )
    .await;
    wait_until(Duration::from_secs(15), "a probe dead-lettered", || async {
        !natshook.dead_letters("e").is_empty()
    })
    .await;
    assert_eq!(natshook.metric(PAUSED).await, Some(1.0), "still paused");
    rx.set(|_| Reply::ok());
    rx.wait_for(Duration::from_secs(30), "the rest delivered", |r| {
        r.delivered_ids().len() + natshook.dead_letters("e").len() >= published.len()
    })
    .await;
    let dead = natshook.dead_letters("e");
    for d in &dead {
        assert_eq!(d["attempts"], 2, "{d}");
        assert_eq!(d["last_status"], 410, "{d}");
        assert!(
            d["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("410 Gone"),
            "{d}"
        );
    }
    assert_nothing_lost(&rx, &published, &dead);
    let over: Vec<String> = rx
        .received()
        .iter()
        .filter(|r| r.header("x-webhook-attempt").parse::<u32>().unwrap_or(0) > 2)
        .map(|r| r.id().to_string())
        .collect();
    assert!(over.is_empty(), "attempts past max_attempts: {over:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_down_long_enough_to_pause_then_back_gets_everything_without_dead_letters() {
    let (rx, _nats, natshook, published) = paused_with_backlog(
        503,
        "disable_after_failures = 5\nprobe_interval = \"300ms\"\nprobe_max_interval = \"1s\"\nmax_attempts = 20\nretry_schedule = [\"100ms\"]",
        2000,
        "p",
    )
    .await;
    let at_pause = rx.count();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = rx.count() - at_pause;
    assert!(
        during <= 64 + 10,
        "paused endpoint kept receiving: {during} requests in 3 s"
    );
    assert!(natshook.logs().matches("endpoint paused").count() >= 1);
    rx.set(|_| Reply::ok());
    rx.wait_for(Duration::from_secs(60), "2000 delivered", |r| {
        r.delivered_ids().len() >= 2000
    })
    .await;
    assert_nothing_lost(&rx, &published, &[]);
    assert_attempts_count_up(&rx);
    assert!(
        natshook.dead_letters("e").is_empty(),
        "the pause caused dead letters"
    );
    assert_eq!(natshook.metric(PAUSED).await, Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_spends_no_attempts_and_held_messages_go_out_at_once_on_resume() {
    let (rx, _nats, natshook, published) = paused_with_backlog(
        503,
        "concurrency = 4\ndisable_after_failures = 4\nprobe_interval = \"400ms\"\nprobe_max_interval = \"400ms\"\nmax_attempts = 50\nretry_schedule = [\"100ms\"]",
        200,
        "h",
    )
    .await;
    // A few probes fail: those are real attempts and must count.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    rx.set(|_| Reply::ok());
    // Well inside ack_wait (30 s): nothing the paused endpoint had fetched was left
    // to time out.
    rx.wait_for(Duration::from_secs(12), "200 delivered", |r| {
        r.delivered_ids().len() >= 200
    })
    .await;
    assert_nothing_lost(&rx, &published, &[]);
    assert_attempts_count_up(&rx);
    assert!(natshook.dead_letters("e").is_empty());
}

/// Held messages outlive a nats-server restart during the pause: the pull stream is
/// replaced, what was held is kept, and everything arrives once the receiver is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_endpoint_rides_out_a_nats_server_restart() {
    let (rx, mut nats, mut natshook, published) = paused_with_backlog(
        503,
        "concurrency = 4\ndisable_after_failures = 4\nprobe_interval = \"1s\"\nprobe_max_interval = \"1s\"\nmax_attempts = 1000\nretry_schedule = [\"100ms\"]",
        200,
        "r",
    )
    .await;
    nats.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    nats.spawn();
    natshook.wait_ready(Duration::from_secs(20)).await;
    rx.set(|_| Reply::ok());
    // Held messages were kept through the restart: they go out at once. Only a NAK
    // that was sent while NATS was down is lost, and its message (at most the
    // in-flight ones and a probe) comes back after ack_wait (30 s).
    rx.wait_for(Duration::from_secs(10), "most delivered at once", |r| {
        r.delivered_ids().len() >= 200 - 2 * 4
    })
    .await;
    rx.wait_for(Duration::from_secs(60), "200 delivered", |r| {
        r.delivered_ids().len() >= 200
    })
    .await;
    assert_nothing_lost(&rx, &published, &[]);
    assert!(natshook.dead_letters("e").is_empty());
    assert_eq!(natshook.metric(PAUSED).await, Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_fetched_but_unstarted_messages_back_at_once() {
    let rx = Receiver::with(|_| Reply::ok().delay(Duration::from_millis(1000))).await;
    let (_nats, mut natshook, js) = setup(&rx, "concurrency = 4").await;
    let published = publish_leads(&js, 40, "u").await;
    rx.wait_for(Duration::from_secs(10), "4 in flight", |r| r.count() >= 4)
        .await;
    let status = natshook.terminate().await;
    assert!(status.success(), "exit {status}");
    rx.set(|_| Reply::ok());
    let restarted = Instant::now();
    natshook.spawn().await;
    rx.wait_for(Duration::from_secs(40), "40 delivered", |r| {
        r.delivered_ids().len() >= 40
    })
    .await;
    // The window (2 × concurrency) held 4 fetched messages nobody had started: NAKed
    // at shutdown, they come back within a second instead of after ack_wait (30 s).
    assert!(
        restarted.elapsed() < Duration::from_secs(10),
        "took {:?}",
        restarted.elapsed()
    );
    assert_nothing_lost(&rx, &published, &[]);
}

/// A process stopped while it still waits for NATS at start (a pod deleted while
/// NATS is unreachable) exits at once, with success: it has fetched nothing, so there
/// is nothing to drain, and waiting out each request's timeout would end in a kill.
/// Meanwhile each failed attempt says why it failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_nats_is_unreachable_at_start_exits_at_once() {
    let rx = Receiver::start().await;
    let nowhere = format!("nats://127.0.0.1:{}", free_port());
    let config = TestConfig::new(nowhere.clone()).endpoint("a", &rx.url("/"), &["*"], "");
    let mut natshook = Natshook::start_listening(&config.render()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    natshook.signal("TERM");
    let status = natshook.wait_exit(Duration::from_secs(3)).await;
    assert!(status.success(), "{status}");
    let logs = natshook.logs();
    assert!(logs.contains("shut down before start-up finished"));
    // The attempt's cause and the server tried, not the error's kind alone ("IO
    // error"): a wrong port reads as one.
    assert!(
        logs.contains("Connection refused") && logs.contains(&nowhere),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_restarted_mid_stream_loses_nothing() {
    let rx = Receiver::with(|_| Reply::ok().delay(Duration::from_millis(2))).await;
    let mut nats = NatsServer::start();
    nats.create_stream("EVENTS", &["crm.>", "helpdesk.>"]).await;
    let js = jetstream::new(nats.client().await);
    let published = publish_leads(&js, 5000, "n").await;
    let mut config =
        TestConfig::new(nats.url()).endpoint("e", &rx.url("/"), &["*"], "concurrency = 16");
    config.create_stream = false;
    let mut natshook = Natshook::start(&config.render()).await;
    rx.wait_for(Duration::from_secs(60), "1000 delivered", |r| {
        r.delivered_ids().len() >= 1000
    })
    .await;
    nats.kill();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (code, body) = natshook.get("/readyz").await.unwrap();
        if code == 503 {
            assert!(body.contains("NATS is not connected"), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stayed ready while NATS was down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(natshook.metric("natshook_nats_connected").await, Some(0.0));
    tokio::time::sleep(Duration::from_secs(1)).await;
    nats.spawn();
    assert!(
        rx.delivered_ids().len() < 5000,
        "restart happened mid-stream"
    );
    rx.wait_for(Duration::from_secs(120), "5000 delivered", |r| {
        r.delivered_ids().len() >= 5000
    })
    .await;
    assert_nothing_lost(&rx, &published, &[]);
    natshook.wait_ready(Duration::from_secs(20)).await;
    assert_eq!(natshook.metric("natshook_nats_connected").await, Some(1.0));
    assert!(natshook.logs().contains("disconnected from NATS"));
}

/// A nats-server that hangs with its connections open (SIGSTOP) sends no close:
/// natshook notices by its pings, says so (not ready, not connected) within about
/// 15 s, and goes on once the server answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_nats_server_is_noticed_by_pings() {
    let rx = Receiver::start().await;
    let nats = NatsServer::start();
    nats.create_stream("EVENTS", &["crm.>", "helpdesk.>"]).await;
    let js = jetstream::new(nats.client().await);
    let mut config = TestConfig::new(nats.url()).endpoint("e", &rx.url("/"), &["*"], "");
    config.create_stream = false;
    let natshook = Natshook::start(&config.render()).await;
    let published = publish_leads(&js, 20, "before").await;
    rx.wait_for(Duration::from_secs(20), "20 delivered", |r| {
        r.delivered_ids().len() >= 20
    })
    .await;

    nats.signal("STOP");
    let stopped = Instant::now();
    let noticed = async {
        loop {
            if natshook.metric("natshook_nats_connected").await == Some(0.0) {
                return stopped.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let noticed = tokio::time::timeout(Duration::from_secs(30), noticed).await;
    let readyz = natshook.get("/readyz").await;
    nats.signal("CONT");
    let noticed = noticed.expect("natshook_nats_connected stayed 1 for 30 s of a hung server");
    assert!(
        noticed < Duration::from_secs(25),
        "noticed after {noticed:?}"
    );
    let (code, body) = readyz.expect("/readyz answers");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("NATS is not connected"), "{body}");

    natshook
        .wait_metric(
            "natshook_nats_connected",
            1.0,
            Duration::from_secs(30),
            "the reconnect",
        )
        .await;
    let js = jetstream::new(nats.client().await);
    let after = publish_leads(&js, 20, "after").await;
    rx.wait_for(Duration::from_secs(30), "40 delivered", |r| {
        r.delivered_ids().len() >= 40
    })
    .await;
    let all: Vec<String> = published.into_iter().chain(after).collect();
    assert_nothing_lost(&rx, &all, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn natshook_sigkilled_mid_stream_and_restarted_loses_nothing() {
    let rx = Receiver::with(|_| Reply::ok().delay(Duration::from_millis(2))).await;
    let (_nats, mut natshook, js) = setup(&rx, "concurrency = 32").await;
    let published = publish_leads(&js, 5000, "s").await;
    rx.wait_for(Duration::from_secs(60), "1500 delivered", |r| {
        r.delivered_ids().len() >= 1500
    })
    .await;
    natshook.sigkill();
    let at_kill = rx.delivered_ids().len();
    assert!(at_kill < 5000, "kill happened mid-stream");
    natshook.spawn().await;
    rx.wait_for(Duration::from_secs(120), "5000 delivered", |r| {
        r.delivered_ids().len() >= 5000
    })
    .await;
    assert_nothing_lost(&rx, &published, &[]);
    // Only messages in flight at the kill may come twice.
    let dups = rx.delivered_ids().values().filter(|n| **n > 1).count();
    assert!(dups <= 32 * 2, "{dups} duplicates after SIGKILL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_deliveries_finish_then_exits_0() {
    let rx = Receiver::with(|_| Reply::ok().delay(Duration::from_millis(1500))).await;
    let (_nats, mut natshook, js) = setup(&rx, "concurrency = 10").await;
    let published = publish_leads(&js, 50, "t").await;
    rx.wait_for(Duration::from_secs(10), "10 in flight", |r| r.count() >= 10)
        .await;
    let start = Instant::now();
    let status = natshook.terminate().await;
    assert!(status.success(), "exit {status}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "drained in {:?}",
        start.elapsed()
    );
    let finished = rx.delivered_ids();
    assert!(
        finished.len() >= 10,
        "in-flight deliveries completed: {}",
        finished.len()
    );

    rx.set(|_| Reply::ok());
    natshook.spawn().await;
    rx.wait_for(Duration::from_secs(30), "50 delivered", |r| {
        r.delivered_ids().len() >= 50
    })
    .await;
    assert_nothing_lost(&rx, &published, &[]);
    let again: Vec<_> = finished
        .keys()
        .filter(|id| rx.delivered_ids()[*id] > 1)
        .collect();
    assert!(
        again.is_empty(),
        "completed before SIGTERM yet sent again: {again:?}"
    );
}

/// `n` deliveries hanging at a receiver (for `hang`) under `timeout` and
/// `shutdown_grace`, all in flight: a shutdown then has a drain to wait for.
async fn hanging_drain(
    n: usize,
    hang: Duration,
    timeout: &str,
    grace: &str,
) -> (Receiver, NatsServer, Natshook, Vec<String>) {
    let rx = Receiver::with(move |_| Reply::ok().delay(hang)).await;
    let nats = NatsServer::start();
    let mut config = TestConfig::new(nats.url()).endpoint(
        "e",
        &rx.url("/"),
        &["*"],
        &format!("concurrency = {n}\ntimeout = \"{timeout}\""),
    );
    config.top = format!("shutdown_grace = \"{grace}\"\n");
    let natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    let published = publish_leads(&js, n, "x").await;
    rx.wait_for(Duration::from_secs(10), "all in flight", |r| r.count() >= n)
        .await;
    (rx, nats, natshook, published)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_past_the_grace_period_naks_for_immediate_redelivery() {
    let (rx, _nats, mut natshook, published) =
        hanging_drain(5, Duration::from_secs(20), "30s", "1s").await;
    let start = Instant::now();
    let status = natshook.terminate().await;
    assert!(status.success(), "exit {status}");
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "exited in {:?}",
        start.elapsed()
    );
    assert!(natshook.logs().contains("grace period over"));
    rx.set(|_| Reply::ok());
    let restarted = Instant::now();
    natshook.spawn().await;
    rx.wait_for(Duration::from_secs(15), "5 delivered", |r| {
        r.delivered_ids().len() >= 5
    })
    .await;
    // NAKed without delay: back at once, not after ack_wait.
    assert!(restarted.elapsed() < Duration::from_secs(10));
    assert_nothing_lost(&rx, &published, &[]);
}

/// A second SIGTERM or SIGINT ends the drain at once (exit 1); nothing is lost, what
/// was under way comes back after `ack_wait`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_without_waiting_for_the_drain() {
    let (rx, _nats, mut natshook, published) =
        hanging_drain(3, Duration::from_secs(30), "10s", "60s").await;
    natshook.signal("TERM");
    wait_until(Duration::from_secs(10), "the drain", || {
        let logs = natshook.logs();
        async move { logs.contains("shutting down") }
    })
    .await;
    let start = Instant::now();
    natshook.signal("INT");
    let status = natshook.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(1), "exit {status}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(natshook.logs().contains("second signal"));

    rx.set(|_| Reply::ok());
    let restarted = Instant::now();
    natshook.spawn().await;
    // Back after ack_wait (30 s), as after a crash.
    rx.wait_for(Duration::from_secs(50), "3 delivered again", |r| {
        let again: BTreeSet<String> = (r.received().iter())
            .filter(|q| q.at >= restarted && q.replied == 200)
            .map(|q| q.id().to_string())
            .collect();
        published.iter().all(|id| again.contains(id))
    })
    .await;
}

/// A paused endpoint's probe of a hanging receiver lasts the endpoint's `timeout`; a
/// SIGTERM meanwhile still ends every delivery, the other endpoints' too, within the
/// grace, not after the probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_under_way_does_not_stretch_the_shutdown_grace() {
    let probed = Receiver::with(|_| Reply::status(503)).await;
    let busy = Receiver::start().await;
    let nats = NatsServer::start();
    let mut config = TestConfig::new(nats.url())
        .endpoint(
            "probed",
            &probed.url("/"),
            &["*"],
            "timeout = \"30s\"\ndisable_after_failures = 1\nmax_attempts = 1000\n\
             retry_schedule = [\"50ms\"]\nprobe_interval = \"300ms\"\nprobe_max_interval = \"300ms\"",
        )
        .endpoint("busy", &busy.url("/"), &["*"], "timeout = \"30s\"");
    config.top = "shutdown_grace = \"1s\"\n".into();
    let mut natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    let first = publish_leads(&js, 1, "first").await;
    natshook
        .wait_metric(
            "natshook_endpoint_paused{endpoint=\"probed\"}",
            1.0,
            Duration::from_secs(10),
            "the pause",
        )
        .await;
    // From now on both receivers hang: a probe and two deliveries are under way.
    probed.set(|_| Reply::ok().delay(Duration::from_secs(25)));
    busy.set(|_| Reply::ok().delay(Duration::from_secs(25)));
    let before = probed.count();
    probed
        .wait_for(Duration::from_secs(10), "a probe", |r| r.count() > before)
        .await;
    let later = publish_leads(&js, 2, "later").await;
    busy.wait_for(Duration::from_secs(10), "2 more in flight", |r| {
        r.count() >= 3
    })
    .await;

    let start = Instant::now();
    let status = natshook.terminate().await;
    assert!(status.success(), "exit {status}");
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "exited in {:?}, past the grace of 1 s",
        start.elapsed()
    );

    probed.set(|_| Reply::ok());
    busy.set(|_| Reply::ok());
    let restarted = std::time::SystemTime::now();
    natshook.spawn().await;
    // What was under way comes back; the paused endpoint resumes on its first probe.
    let everything: Vec<String> = first.iter().chain(&later).cloned().collect();
    for (rx, ids) in [(&busy, &later), (&probed, &everything)] {
        rx.wait_for(
            Duration::from_secs(20),
            "all delivered after the restart",
            |r| {
                let answered: BTreeSet<String> = (r.received().iter())
                    .filter(|q| q.wall >= restarted)
                    .map(|q| q.id().to_string())
                    .collect();
                ids.iter().all(|id| answered.contains(id))
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeliverable_messages_go_straight_to_dead_letters_with_the_reason() {
    let rx = Receiver::start().await;
    let (_nats, natshook, js) = setup(&rx, "max_body = 100").await;
    publish_all(
        &js,
        vec![
            (
                "crm.lead.created".into(),
                Bytes::from(vec![b'x'; 200]),
                Some("big".into()),
            ),
            (
                "crm.lead.created".into(),
                Bytes::from_static(&[0xff, 0xfe, 0x00]),
                Some("binary".into()),
            ),
            (
                "crm.lead.created".into(),
                Bytes::from_static(b"{\"ok\":1}"),
                Some("fine".into()),
            ),
        ],
    )
    .await;
    rx.wait_for(Duration::from_secs(10), "1 delivered", |r| {
        !r.delivered_ids().is_empty()
    })
    .await;
    let dead = natshook
        .wait_dead_letters("e", 2, Duration::from_secs(10))
        .await;
    assert_eq!(dead.len(), 2, "{dead:?}");
    let big = dead.iter().find(|d| d["id"] == "big").unwrap();
    assert!(big["reason"].as_str().unwrap().contains("exceeds max_body"));
    assert_eq!(big["attempts"], 0);
    let bin = dead.iter().find(|d| d["id"] == "binary").unwrap();
    assert!(bin["reason"]
        .as_str()
        .unwrap()
        .contains("neither JSON nor UTF-8"));
    assert_eq!(bin["payload"], "//4A");
    assert_nothing_lost(&rx, &["big".into(), "binary".into(), "fine".into()], &dead);
}

/// A message out of attempts whose dead letter cannot be written comes back; it is
/// then dead-lettered, not sent again, and the record is that of its last attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_written_late_costs_no_request_past_max_attempts() {
    let rx = Receiver::with(|_| Reply::status(500).body("down")).await;
    let nats = NatsServer::start();
    let js = jetstream::new(nats.client().await);
    // A dead-letter stream that refuses every record, as one whose limits are hit.
    let mut dlq = jetstream::stream::Config {
        name: "NATSHOOK_DLQ".into(),
        subjects: vec!["natshook.dlq.>".into()],
        max_message_size: 100,
        ..Default::default()
    };
    js.create_stream(dlq.clone()).await.expect("dlq stream");
    let config = TestConfig::new(nats.url()).endpoint(
        "e",
        &rx.url("/hook"),
        &["*"],
        "retry_schedule = [\"100ms\"]\nmax_attempts = 2\ndisable_after_failures = 0",
    );
    let natshook = Natshook::start(&config.render()).await;
    let published = publish_leads(&js, 1, "late").await;
    wait_until(
        Duration::from_secs(10),
        "a failed dead-letter write",
        || {
            let logs = natshook.logs();
            async move { logs.contains("dead-letter publish failed") }
        },
    )
    .await;
    // Several comebacks at the first retry delay (100 ms).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rx.count(), 2, "requests past max_attempts");

    dlq.max_message_size = -1;
    js.update_stream(&dlq)
        .await
        .expect("dlq stream takes records again");
    let dead = natshook
        .wait_dead_letters("e", 1, Duration::from_secs(10))
        .await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["attempts"], 2);
    assert_eq!(dead[0]["last_status"], 500);
    assert_eq!(dead[0]["response_body"], "down");
    assert_eq!(rx.count(), 2, "requests past max_attempts");
    assert_nothing_lost(&rx, &published, &dead);
}

/// A dead-letter record written twice (its first publish stored and its ack lost, then
/// the kept record written again) is stored once; a record made anew is stored too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_record_written_twice_is_stored_once() {
    use natshook::store::dead_letters::{DeadLetter, DeadLetters};
    let nats = NatsServer::start();
    let js = jetstream::new(nats.client().await);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("natshook.toml");
    let rendered = TestConfig::new(nats.url())
        .endpoint("e", "http://127.0.0.1:9/hook", &["*"], "")
        .render()
        .replace("{http_port}", &free_port().to_string());
    std::fs::write(&path, rendered).unwrap();
    let config = natshook::config::Config::load(&path).expect("config");
    let dead_letters = DeadLetters::for_config(js.clone(), &config);
    let record = |at: &str| DeadLetter {
        endpoint: "e".into(),
        event: Some("lead.created".into()),
        tenant: None,
        id: "twice".into(),
        subject: "crm.lead.created".into(),
        stream: "EVENTS".into(),
        stream_sequence: 7,
        published: "2026-12-06T10:00:00.000Z".into(),
        attempts: 3,
        last_status: Some(500),
        last_error: Some("HTTP 500".into()),
        response_body: String::new(),
        reason: "max_attempts reached".into(),
        payload: String::new(),
        payload_object: None,
        headers: Default::default(),
        headers_truncated: false,
        dead_lettered_at: at.into(),
        once_per_message: false,
    };
    let first = record("2026-12-06T10:00:01.000Z");
    for r in [&first, &first, &record("2026-12-06T10:00:02.000Z")] {
        dead_letters
            .publish(r.clone(), b"{}")
            .await
            .expect("written");
    }
    let stored = dead_letters.list(Some("e"), 100).await.expect("listed");
    let at: Vec<&str> = stored
        .iter()
        .map(|s| s.record.dead_lettered_at.as_str())
        .collect();
    assert_eq!(at, ["2026-12-06T10:00:01.000Z", "2026-12-06T10:00:02.000Z"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_failed_attempts_and_never_followed() {
    let target = Receiver::start().await;
    let location = target.url("/elsewhere");
    let answered = location.clone();
    let rx = Receiver::with(move |_| Reply::status(302).header("Location", &answered)).await;
    let (_nats, natshook, js) = setup(
        &rx,
        "retry_schedule = [\"50ms\"]\nmax_attempts = 2\ndisable_after_failures = 0",
    )
    .await;
    let published = publish_leads(&js, 10, "redir").await;
    rx.wait_for(Duration::from_secs(20), "2 attempts each", |r| {
        r.count() >= 20
    })
    .await;
    let dead = natshook
        .wait_dead_letters("e", 10, Duration::from_secs(10))
        .await;
    assert_eq!(dead.len(), 10);
    assert!(dead.iter().all(|d| d["last_status"] == 302));
    // Where the receiver points is what the operator needs to fix the URL.
    let said = format!("HTTP 302, redirect to {location} not followed");
    assert!(
        dead.iter().all(|d| d["last_error"] == said.as_str()),
        "{dead:?}"
    );
    assert_eq!(target.count(), 0, "the redirect was followed");
    assert_eq!(
        natshook
            .metric("natshook_delivery_attempts_total{endpoint=\"e\",status=\"3xx\"}")
            .await,
        Some(20.0)
    );
    assert_nothing_lost(&rx, &published, &dead);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_endpoint_delivers_in_stream_order_despite_a_failure() {
    let rx = Receiver::with(|r| {
        if r.id() == "o-5" && r.nth_for_id <= 2 {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    })
    .await;
    let (_nats, _natshook, js) = setup(
        &rx,
        "ordered = true\nretry_schedule = [\"200ms\"]\nmax_attempts = 5\ndisable_after_failures = 0",
    )
    .await;
    let published = publish_leads(&js, 30, "o").await;
    rx.wait_for(Duration::from_secs(30), "30 delivered", |r| {
        r.delivered_ids().len() >= 30
    })
    .await;
    assert_nothing_lost(&rx, &published, &[]);
    let order: Vec<u64> = rx
        .received()
        .iter()
        .map(|r| r.json()["metadata"]["stream_sequence"].as_u64().unwrap())
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(
        order, sorted,
        "head-of-line: nothing overtakes the failing message"
    );
    assert_eq!(
        order.len(),
        32,
        "one message at a time: 30 deliveries + 2 retries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_dead_letter_stream_is_created_again() {
    let rx = Receiver::with(|_| Reply::status(500)).await;
    let (_nats, natshook, js) = setup(
        &rx,
        "retry_schedule = [\"50ms\"]\nmax_attempts = 2\ndisable_after_failures = 0",
    )
    .await;
    let mut tries = 0;
    while let Err(e) = js.delete_stream("NATSHOOK_DLQ").await {
        tries += 1;
        assert!(tries < 10, "cannot delete the dead-letter stream: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let published = publish_leads(&js, 5, "dd").await;
    let dead = natshook
        .wait_dead_letters("e", 5, Duration::from_secs(15))
        .await;
    assert_eq!(dead.len(), 5, "dead letters after the stream was deleted");
    assert_nothing_lost(&rx, &published, &dead);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_response_headers_and_body_are_still_a_success() {
    // Receivers behind proxies and frameworks can answer with big cookies, CSP headers
    // or a full HTML page: 2xx is 2xx, whatever the size of the rest.
    let cookie = "c".repeat(2000);
    let page = "<p>ok</p>".repeat(20_000);
    let rx = Receiver::with(move |_| {
        let mut reply = Reply::ok().body(page.clone());
        for i in 0..12 {
            reply = reply.header(&format!("x-large-{i}"), &cookie);
        }
        reply
    })
    .await;
    let (_nats, natshook, js) = setup(&rx, "disable_after_failures = 0").await;
    let published = publish_leads(&js, 20, "large").await;
    natshook
        .wait_metric(
            "natshook_deliveries_total{endpoint=\"e\",event=\"lead.created\",outcome=\"success\"}",
            20.0,
            Duration::from_secs(30),
            "20 successes",
        )
        .await;
    assert_nothing_lost(&rx, &published, &[]);
    assert_eq!(rx.count(), 20, "each message once: no attempt failed");
}

/// A JSON payload of about `len` bytes whose text does not repeat (a stored copy that
/// were shifted or cut would not compare equal).
fn json_blob(len: usize, seed: u64) -> Bytes {
    let mut state = seed;
    let text: String = (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[(state >> 33) as usize % 36])
        })
        .collect();
    Bytes::from(format!("{{\"blob\":\"{text}\"}}"))
}

/// Where `payload` sits in a standard envelope: it is copied in unchanged after `"data":`.
fn envelope_data(body: &[u8], len: usize) -> &[u8] {
    let at = body
        .windows(7)
        .position(|w| w == b"\"data\":")
        .expect("envelope has data")
        + 7;
    &body[at..(at + len).min(body.len())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_too_large_for_one_nats_message_keep_their_payload_in_the_object_store() {
    // The record carries the payload as base64 (4/3 of it): with nats-server's default
    // max_payload (1 MiB) a 900 KB payload's record cannot be one NATS message. Before,
    // such a message was retried forever and never dead-lettered.
    let rx = Receiver::with(|_| Reply::status(500)).await;
    let nats = NatsServer::start();
    let mut config = TestConfig::new(nats.url()).endpoint(
        "e",
        &rx.url("/hook"),
        &["*"],
        "retry_schedule = [\"50ms\"]\nmax_attempts = 2\ndisable_after_failures = 0\nmax_body = 950000",
    );
    let token = "test-admin-token-0123456789";
    config.top = format!("[admin]\nenabled = true\ntoken = {{ value = \"{token}\" }}\n");
    let natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    let large = json_blob(900_000, 1);
    // Above max_body: dead-lettered without an attempt, through the same path.
    let over = json_blob(1_000_000, 2);
    let small = Bytes::from_static(b"{\"small\":1}");
    let messages = vec![
        (
            "crm.lead.created".to_string(),
            large.clone(),
            Some("large".to_string()),
        ),
        (
            "crm.lead.created".to_string(),
            small.clone(),
            Some("small".to_string()),
        ),
        (
            "crm.lead.created".to_string(),
            over.clone(),
            Some("over".to_string()),
        ),
    ];
    let published = ids(&messages);
    publish_all(&js, messages).await;

    let dead = natshook
        .wait_dead_letters("e", 3, Duration::from_secs(30))
        .await;
    assert_eq!(dead.len(), 3, "every message dead-lettered: {}", rx.count());
    assert_eq!(
        natshook
            .metric("natshook_dead_letters_total{endpoint=\"e\"}")
            .await,
        Some(3.0)
    );
    let record = |id: &str| dead.iter().find(|d| d["id"] == id).unwrap().clone();
    let (large_dl, small_dl, over_dl) = (record("large"), record("small"), record("over"));
    for (d, attempts) in [(&large_dl, 2), (&over_dl, 0)] {
        assert_eq!(d["payload"], "", "{}: payload not inline", d["id"]);
        assert!(
            d["payload_object"]
                .as_str()
                .unwrap()
                .starts_with("NATSHOOK_DLQ_PAYLOADS/e/"),
            "{d}"
        );
        assert_eq!(d["attempts"], attempts);
    }
    assert_eq!(large_dl["last_status"], 500);
    assert!(over_dl["reason"]
        .as_str()
        .unwrap()
        .contains("exceeds max_body"));
    assert!(small_dl.get("payload_object").is_none(), "{small_dl}");
    let inline = base64::engine::general_purpose::STANDARD
        .decode(small_dl["payload"].as_str().unwrap())
        .unwrap();
    assert_eq!(inline, small.as_ref());

    // Attempts stop at max_attempts: no more requests come.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        rx.count(),
        4,
        "2 attempts each for large and small, none for over"
    );
    assert_attempts_count_up(&rx);

    // The receiver is fixed: the admin API replays one, the CLI the rest.
    rx.set(|_| Reply::ok());
    let (status, summary) = natshook
        .api(
            "POST",
            "/api/endpoints/e/dlq/replay",
            Some(token),
            Some("{\"id\": \"large\"}"),
        )
        .await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(
        summary["replayed"],
        serde_json::json!(["large"]),
        "{summary}"
    );
    let out = natshook.cli(&["dlq", "replay", "--endpoint", "e", "--all"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_nothing_lost(&rx, &published, &[]);
    for (id, payload, attempt) in [("large", &large, "3"), ("over", &over, "1")] {
        let got = rx
            .received()
            .into_iter()
            .find(|r| r.id() == id && r.replied == 200)
            .unwrap();
        assert!(
            envelope_data(&got.body, payload.len()) == payload.as_ref(),
            "{id}: replayed payload is byte-identical"
        );
        assert_eq!(got.header("x-webhook-attempt"), attempt);
    }
    assert!(natshook.dead_letters("e").is_empty());
    let store = js.get_object_store("NATSHOOK_DLQ_PAYLOADS").await.unwrap();
    for d in [&large_dl, &over_dl] {
        let name = d["payload_object"]
            .as_str()
            .unwrap()
            .strip_prefix("NATSHOOK_DLQ_PAYLOADS/")
            .unwrap();
        assert!(
            store.get(name).await.is_err(),
            "{name}: removed with its record"
        );
    }
    assert!(
        natshook
            .logs()
            .contains("is stored in the object store NATSHOOK_DLQ_PAYLOADS"),
        "start-up says what happens to large dead letters"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_nats_msg_id_is_replaced_and_said_once() {
    let rx = Receiver::start().await;
    let (_nats, natshook, js) = setup(&rx, "").await;
    let messages: Vec<(String, Bytes, Option<String>)> = ["has space", "ünïcode", &"l".repeat(300)]
        .iter()
        .enumerate()
        .map(|(i, id)| {
            (
                "crm.lead.created".to_string(),
                Bytes::from(format!("{{\"n\":{i}}}")),
                Some(id.to_string()),
            )
        })
        .collect();
    publish_all(&js, messages).await;
    rx.wait_for(Duration::from_secs(20), "3 delivered", |r| {
        r.delivered_ids().len() >= 3
    })
    .await;
    assert_nothing_lost(
        &rx,
        &["EVENTS-1".into(), "EVENTS-2".into(), "EVENTS-3".into()],
        &[],
    );
    let logs = natshook.logs();
    let warnings: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("Nats-Msg-Id"))
        .collect();
    assert_eq!(warnings.len(), 1, "{logs}");
    assert!(
        warnings[0].contains("1 to 256 printable ASCII characters without spaces"),
        "names the rule: {}",
        warnings[0]
    );
    assert!(warnings[0].contains("endpoint=e"), "{}", warnings[0]);
    assert!(
        ["EVENTS-1", "EVENTS-2", "EVENTS-3"]
            .iter()
            .any(|id| warnings[0].contains(&format!("id is {id} "))),
        "names the id used instead: {}",
        warnings[0]
    );
}

/// A receiver that answered `2xx` within the timeout has the message, however slowly
/// the rest of its response follows: the attempt succeeds, nothing is sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2xx_in_time_with_a_body_that_never_ends_is_a_success() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Answers each request with a 200 head and 2 of 10 body bytes, then holds still.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                // The head, then the body it declares.
                loop {
                    let Ok(n) = tcp.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got);
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if got.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok")
                    .await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    let nats = NatsServer::start();
    let config = TestConfig::new(nats.url()).endpoint(
        "e",
        &format!("http://127.0.0.1:{port}/hook"),
        &["*"],
        "timeout = \"1s\"\nmax_attempts = 2\nretry_schedule = [\"100ms\"]\ndisable_after_failures = 0",
    );
    let natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    publish_leads(&js, 3, "slow-body").await;
    natshook
        .wait_metric(
            "natshook_deliveries_total{endpoint=\"e\",event=\"lead.created\",outcome=\"success\"}",
            3.0,
            Duration::from_secs(20),
            "3 successes",
        )
        .await;
    // Past another timeout and retry delay: nothing was retried.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(requests.load(Ordering::SeqCst), 3);
    assert!(natshook.dead_letters("e").is_empty());
    server.abort();
}

/// Lets `rx` answer 200 and waits until it has every one of `published`, none
/// dead-lettered.
async fn all_delivered_after_the_pause(rx: &Receiver, natshook: &Natshook, published: &[String]) {
    rx.set(|_| Reply::ok());
    rx.wait_for(Duration::from_secs(60), "every message delivered", |r| {
        r.delivered_ids().len() >= published.len()
    })
    .await;
    assert_nothing_lost(rx, published, &[]);
    assert!(natshook.dead_letters("e").is_empty(), "dead letters");
}

/// A reload that restarts a paused endpoint's worker hands the messages it holds to
/// the new worker as they are: none is NAKed, so none loses an attempt. Each id's first
/// request is its attempt 1, and nothing is dead-lettered, however many reloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_during_a_pause_cost_the_held_messages_no_attempt() {
    let settings = "concurrency = 4\ndisable_after_failures = 3\nprobe_interval = \"2s\"\nprobe_max_interval = \"2s\"\nmax_attempts = 4\nretry_schedule = [\"100ms\"]";
    let (rx, nats, natshook, published) = paused_with_backlog(503, settings, 30, "rl").await;
    for i in 0..3 {
        let config = TestConfig::new(nats.url()).endpoint(
            "e",
            &rx.url("/hook"),
            &["*"],
            &format!("{settings}\nheaders = {{ \"X-Reload\" = \"{i}\" }}"),
        );
        natshook.rewrite_config(&config.render());
        natshook.signal("HUP");
        wait_until(Duration::from_secs(10), "the reload", || {
            let logs = natshook.logs();
            async move { logs.matches("config reloaded").count() > i }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        natshook
            .logs()
            .contains("messages held by the replaced worker handed over"),
        "{}",
        natshook.logs()
    );
    all_delivered_after_the_pause(&rx, &natshook, &published).await;
    let late_first: Vec<String> = rx
        .received()
        .iter()
        .filter(|r| r.nth_for_id == 1 && r.header("x-webhook-attempt") != "1")
        .map(|r| format!("{} (attempt {})", r.id(), r.header("x-webhook-attempt")))
        .collect();
    assert!(
        late_first.is_empty(),
        "first requests after NAKs: {late_first:?}"
    );
}

/// Restarts during a pause cost the held messages no attempt either: each is NAKed
/// for the next process, and noted in `NATSHOOK_STATE` as a delivery that was no
/// attempt. Every id's attempts count 1, 2, 3 without a gap, and the notes go once
/// the messages are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_during_a_pause_cost_the_held_messages_no_attempt() {
    let settings = "concurrency = 4\ndisable_after_failures = 3\nprobe_interval = \"2s\"\nprobe_max_interval = \"2s\"\nmax_attempts = 50\nretry_schedule = [\"100ms\"]";
    let (rx, nats, mut natshook, published) = paused_with_backlog(503, settings, 30, "rs").await;
    for _ in 0..3 {
        // A probe (an attempt) comes between restarts.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let status = natshook.terminate().await;
        assert!(status.success(), "exit {status}");
        natshook.spawn().await;
        natshook
            .wait_metric(PAUSED, 1.0, Duration::from_secs(10), "still paused")
            .await;
    }
    all_delivered_after_the_pause(&rx, &natshook, &published).await;
    let mut attempts: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for r in rx.received() {
        let attempt = r.header("x-webhook-attempt").parse().unwrap_or(0);
        attempts
            .entry(r.id().to_string())
            .or_default()
            .push(attempt);
    }
    let gaps: Vec<String> = attempts
        .iter()
        .filter(|(_, a)| a.iter().enumerate().any(|(i, n)| *n != i as u32 + 1))
        .map(|(id, a)| format!("{id}: {a:?}"))
        .collect();
    assert!(gaps.is_empty(), "attempts with gaps: {gaps:?}");
    let js = jetstream::new(nats.client().await);
    let state = js.get_key_value("NATSHOOK_STATE").await.expect("bucket");
    let keys: Vec<String> = state
        .keys()
        .await
        .expect("keys")
        .filter_map(|k| async move { k.ok() })
        .collect()
        .await;
    assert!(
        !keys.iter().any(|k| k.starts_with("unattempted.")),
        "{keys:?}"
    );
}

/// natshook exits (to be restarted) when its NATS client's connection task has ended,
/// as a panic inside async-nats ends it: every fetch and ack would fail for good while
/// no connection event says so. The check must not take a server outage for that:
/// commands wait for the reconnect. The connection task is ended here by draining
/// the client, the one way to end it on purpose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_nats_client_is_told_apart_from_a_disconnected_one() {
    let mut nats = NatsServer::start();
    let client = async_nats::ConnectOptions::new()
        .max_reconnects(None)
        .connect(nats.url())
        .await
        .expect("connect");
    let every = Duration::from_millis(200);
    let lost = |within| tokio::time::timeout(within, natshook::app::client_lost(&client, every));
    assert!(
        lost(Duration::from_secs(1)).await.is_err(),
        "connected client taken for lost"
    );

    nats.kill();
    assert!(
        lost(Duration::from_secs(2)).await.is_err(),
        "disconnected client taken for lost"
    );
    nats.spawn();
    client.flush().await.expect("reconnected");
    assert!(
        lost(Duration::from_secs(1)).await.is_err(),
        "reconnected client taken for lost"
    );

    client.drain().await.expect("drain");
    lost(Duration::from_secs(5))
        .await
        .expect("a client whose connection task ended is noticed");
}

/// Publishes `subject` with a header block as written, `NATS/1.0` line and all, over
/// the raw protocol: no client library writes a malformed one, but nats-server stores
/// and forwards what a publisher sent.
fn publish_raw_headers(port: u16, subject: &str, header_lines: &[&[u8]], payload: &[u8]) {
    use std::io::{BufRead, BufReader, Write};
    let mut block = b"NATS/1.0\r\n".to_vec();
    for line in header_lines {
        block.extend_from_slice(line);
        block.extend_from_slice(b"\r\n");
    }
    block.extend_from_slice(b"\r\n");
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("INFO"), "{line}");
    let mut w = stream;
    w.write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true}\r\n")
        .unwrap();
    let total = block.len() + payload.len();
    w.write_all(format!("HPUB {subject} {} {total}\r\n", block.len()).as_bytes())
        .unwrap();
    w.write_all(&block).unwrap();
    w.write_all(payload).unwrap();
    w.write_all(b"\r\nPING\r\n").unwrap();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert!(!line.starts_with("-ERR"), "{line}");
        if line.starts_with("PONG") {
            return;
        }
    }
}

/// A message whose header block natshook's NATS client cannot read in full (a lone CR
/// in a value, which panicked the connection's task; a line without a colon, an
/// invalid name or bytes that are not UTF-8, which failed the connection every time
/// the message came back) loses only the bad line: it is delivered, the messages
/// around it arrive at their first attempt, and the connection stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_message_header_costs_only_its_own_line() {
    let rx = Receiver::start().await;
    let (nats, natshook, js) = setup(&rx, "").await;
    let mut published = publish_leads(&js, 3, "before").await;
    let bad: [&[u8]; 5] = [
        b"X-Custom: a\rb",
        b"X-No-Colon",
        b"X Bad: v",
        b"X-Custom: caf\xe9",
        b"X-T\xc3\xa9st: v",
    ];
    for (i, line) in bad.iter().enumerate() {
        let id = format!("bad-{i}");
        let msg_id = format!("Nats-Msg-Id: {id}");
        let payload = format!("{{\"lead\":\"{id}\"}}");
        publish_raw_headers(
            nats.port,
            "crm.lead.created",
            &[msg_id.as_bytes(), line, b"X-Good: yes"],
            payload.as_bytes(),
        );
        published.push(id);
    }
    published.extend(publish_leads(&js, 3, "after").await);
    rx.wait_for(Duration::from_secs(30), "every message delivered", |r| {
        published
            .iter()
            .all(|id| r.delivered_ids().contains_key(id))
    })
    .await;
    assert_nothing_lost(&rx, &published, &[]);
    assert_attempts_count_up(&rx);
    for r in rx.received() {
        assert_eq!(r.header("x-webhook-attempt"), "1", "{}", r.id());
    }
    let metrics = natshook.metrics().await;
    assert!(metrics.contains("natshook_nats_connected 1"), "{metrics}");
}
