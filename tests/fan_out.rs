//! `[delivery] fan_out = true`: one consumer on the source stream copies each message
//! to a work stream, once per endpoint that delivers it; each endpoint reads its own
//! copies with a consumer that exists only while it has work. Real nats-server, real
//! receivers, the natshook binary: every message reaches every endpoint that wants it
//! with the source message's id, retries count attempts 1, 2, 3 on the copies, dead
//! letters name the source message, and neither a SIGKILL of natshook nor a restart
//! of nats-server loses anything.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use common::*;
use futures_util::StreamExt;

const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

const FAN_OUT: &str = "[delivery]\nfan_out = true\n";

fn fan_out(config: TestConfig) -> TestConfig {
    let mut config = config;
    config.top = format!("{}\n{FAN_OUT}", config.top);
    config
}

/// Waits until `natshook_fanout_pending` is back to 0: every source message copied
/// to its endpoints and every lane copy delivered.
async fn fan_out_settled(natshook: &Natshook, within: Duration, what: &str) {
    wait_until(within, what, || async {
        natshook.metric("natshook_fanout_pending").await == Some(0.0)
    })
    .await;
}

/// The consumers on `stream`, by name.
async fn consumers(js: &jetstream::Context, stream: &str) -> BTreeSet<String> {
    let Ok(mut stream) = js.get_stream(stream).await else {
        return BTreeSet::new();
    };
    let mut names = BTreeSet::new();
    let mut list = stream.consumer_names();
    while let Some(Ok(name)) = list.next().await {
        names.insert(name);
    }
    let _ = stream.info().await;
    names
}

/// The consumers on every work stream (`EVENTS_natshook_WORK_0` to `_15`), each of
/// which must exist.
async fn work_consumers(js: &jetstream::Context) -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    for i in 0..16 {
        let name = format!("EVENTS_natshook_WORK_{i}");
        assert!(js.get_stream(&name).await.is_ok(), "work stream {name}");
        all.extend(consumers(js, &name).await);
    }
    all
}

/// The copies on every work stream, acked or not.
async fn work_copies(js: &jetstream::Context) -> u64 {
    let mut all = 0;
    for i in 0..16 {
        let name = format!("EVENTS_natshook_WORK_{i}");
        let mut stream = js.get_stream(&name).await.expect("work stream");
        all += stream
            .info()
            .await
            .expect("work stream info")
            .state
            .messages;
    }
    all
}

/// The `X-Webhook-Attempt` of every request on `path` (every path: `None`), by id.
fn attempts_by_id(rx: &Receiver, path: Option<&str>) -> BTreeMap<String, Vec<u32>> {
    let mut attempts: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for r in rx
        .received()
        .iter()
        .filter(|r| path.is_none_or(|p| r.path == p))
    {
        attempts
            .entry(r.id().to_string())
            .or_default()
            .push(r.header("x-webhook-attempt").parse().unwrap());
    }
    attempts
}

/// Requests per path, as distinct ids and the number of requests.
fn per_path(rx: &Receiver) -> BTreeMap<String, (BTreeSet<String>, usize)> {
    let mut out: BTreeMap<String, (BTreeSet<String>, usize)> = BTreeMap::new();
    for r in rx.received() {
        let e = out.entry(r.path.clone()).or_default();
        e.0.insert(r.id().to_string());
        e.1 += 1;
    }
    out
}

/// 30 endpoints: 20 that name `lead.created`, 5 that take `*`, 5 that take
/// `ticket.*`. 200 leads and 100 tickets: each endpoint gets exactly what it wants,
/// with the source message's id and a valid signature; the source stream has one
/// delivery consumer (the fan-out), not one per endpoint; once the work is done, the
/// endpoints let their consumers on the work stream go, and their acked copies with
/// them, so new work after that delivers only the new messages. natshook runs on one
/// thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_endpoint_gets_its_messages_through_one_source_consumer() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let mut config = fan_out(TestConfig::new(nats.url()));
    for i in 0..20 {
        if i == 0 {
            // Signs with Standard Webhooks, checked by that project's own package.
            config.endpoints.push(format!(
                "[[endpoints]]\nname = \"lead-00\"\nurl = \"{}\"\nevents = [\"lead.created\"]\nsecret = \"{STANDARD_SECRET}\"\nsignature = {{ scheme = \"standard\" }}\nallow_http = true\nallow_private = true\n",
                rx.url("/lead/0")
            ));
            continue;
        }
        config = config.endpoint(
            &format!("lead-{i:02}"),
            &rx.url(&format!("/lead/{i}")),
            &["lead.created"],
            "concurrency = 8",
        );
    }
    for i in 0..5 {
        config = config.endpoint(
            &format!("all-{i}"),
            &rx.url(&format!("/all/{i}")),
            &["*"],
            "",
        );
        config = config.endpoint(
            &format!("ticket-{i}"),
            &rx.url(&format!("/ticket/{i}")),
            &["ticket.*"],
            "",
        );
    }
    let natshook = Natshook::start(&config.render()).await;
    // Every delivery passes through the fan-out and its lane: one thread, whatever
    // the number of endpoints.
    assert!(natshook
        .logs()
        .contains("running on one thread: fan_out delivers through one consumer"));
    let js = jetstream::new(nats.client().await);

    let mut messages = leads(200, "lead");
    messages.extend((0..100).map(|i| {
        (
            "helpdesk.ticket.opened".to_string(),
            Bytes::from(format!("{{\"ticket\":{i}}}")),
            Some(format!("ticket-{i}")),
        )
    }));
    publish_all(&js, messages).await;
    let want = 20 * 200 + 5 * 300 + 5 * 100;
    rx.wait_for(Duration::from_secs(120), "every copy delivered", |r| {
        per_path(r).values().map(|v| v.0.len()).sum::<usize>() >= want
    })
    .await;

    let lead_ids: BTreeSet<String> = (0..200).map(|i| format!("lead-{i}")).collect();
    let ticket_ids: BTreeSet<String> = (0..100).map(|i| format!("ticket-{i}")).collect();
    let all_ids: BTreeSet<String> = lead_ids.union(&ticket_ids).cloned().collect();
    let got = per_path(&rx);
    for i in 0..20 {
        assert_eq!(got[&format!("/lead/{i}")].0, lead_ids, "lead-{i:02}");
    }
    for i in 0..5 {
        assert_eq!(got[&format!("/all/{i}")].0, all_ids, "all-{i}");
        assert_eq!(got[&format!("/ticket/{i}")].0, ticket_ids, "ticket-{i}");
    }
    // The envelope names the source message, not its copy.
    for r in rx.received().iter().take(50) {
        let body = r.json();
        let subject = body["metadata"]["subject"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            subject == "crm.lead.created" || subject == "helpdesk.ticket.opened",
            "{body}"
        );
        assert!(
            body["metadata"]["stream_sequence"].as_u64().unwrap_or(0) >= 1,
            "{body}"
        );
        assert!(!r
            .headers
            .keys()
            .any(|k| k.as_str().starts_with("natshook-source")));
    }
    let lead0: Vec<Received> = rx
        .received()
        .into_iter()
        .filter(|r| r.path == "/lead/0")
        .collect();
    let (ok, bad) = verify_received(STANDARD_SECRET, &lead0);
    assert_eq!((ok, bad), (lead0.len(), 0), "signatures verify");

    let source = consumers(&js, "EVENTS").await;
    assert!(source.contains("natshook-fanout"), "{source:?}");
    assert!(
        !source.iter().any(|c| c.starts_with("natshook-lead")),
        "no per-endpoint consumer on the source stream: {source:?}"
    );
    wait_until(
        Duration::from_secs(40),
        "idle endpoints let their consumers go",
        || {
            let js = js.clone();
            async move { work_consumers(&js).await.is_empty() }
        },
    )
    .await;
    let ready = natshook.get("/readyz").await.unwrap();
    assert_eq!(ready.0, 200, "ready with every endpoint idle: {}", ready.1);
    assert_eq!(
        work_copies(&js).await,
        0,
        "acked copies left on the work streams"
    );

    // Work after idling wakes the endpoint again.
    let before = per_path(&rx)["/lead/7"].1;
    publish_all(&js, leads(10, "again")).await;
    rx.wait_for(Duration::from_secs(30), "new work after idling", |r| {
        per_path(r)["/lead/7"]
            .0
            .iter()
            .filter(|id| id.starts_with("again"))
            .count()
            == 10
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        per_path(&rx)["/lead/7"].1,
        before + 10,
        "the new consumer delivered only the new copies"
    );
}

/// An endpoint that keeps up reads its copies through the lane, without a consumer of
/// its own, and the copies the lane acked are removed every few seconds: a trickle
/// leaves the lane holding less than what was delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_endpoint_reads_through_the_lane_and_its_acked_copies_are_removed() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let config =
        fan_out(TestConfig::new(nats.url())).endpoint("busy", &rx.url("/"), &["lead.created"], "");
    let _natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    for i in 0..40 {
        publish_all(&js, leads(1, &format!("t{i}"))).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    rx.wait_for(Duration::from_secs(10), "every lead delivered", |r| {
        r.delivered_ids().len() >= 40
    })
    .await;
    assert!(
        work_consumers(&js).await.is_empty(),
        "an endpoint that keeps up needs no consumer of its own"
    );
    assert_eq!(work_copies(&js).await, 0, "no copy on its own subject");
    let mut lane = js.get_stream("EVENTS_natshook_LANE").await.expect("lane");
    let state = lane.info().await.expect("lane info").state.clone();
    assert_eq!(state.last_sequence, 40, "every copy went through the lane");
    assert!(
        state.messages < 40,
        "{} of 40 copies still stored",
        state.messages
    );
}

/// A copy its endpoint cannot start at once (here: at its `concurrency` of 1) moves to
/// the endpoint's own subject, and one that failed on the lane keeps its attempt count
/// there: every id is delivered, its attempts numbered 1, 2, 3 without a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_copy_that_must_wait_moves_off_the_lane_and_keeps_counting_attempts() {
    let nats = NatsServer::start();
    let tries = std::sync::Mutex::new(BTreeMap::<String, usize>::new());
    let rx = Receiver::with(move |r| {
        let mut tries = tries.lock().unwrap();
        let n = tries.entry(r.id().to_string()).or_default();
        *n += 1;
        match *n {
            1 | 2 => Reply::status(500),
            _ => Reply::ok().delay(Duration::from_millis(5)),
        }
    })
    .await;
    let settings =
        "concurrency = 1\nretry_schedule = [\"100ms\"]\nmax_attempts = 5\ndisable_after_failures = 0";
    let config = fan_out(TestConfig::new(nats.url())).endpoint(
        "narrow",
        &rx.url("/narrow"),
        &["lead.created"],
        settings,
    );
    let natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    publish_all(&js, leads(60, "w")).await;
    rx.wait_for(Duration::from_secs(60), "every lead delivered", |r| {
        r.delivered_ids().len() >= 60
    })
    .await;
    let attempts = attempts_by_id(&rx, None);
    assert_eq!(attempts.len(), 60);
    for (id, mut a) in attempts {
        a.sort_unstable();
        assert_eq!(a, [1, 2, 3], "{id}");
    }
    let mut moved = 0;
    for i in 0..16 {
        let name = format!("EVENTS_natshook_WORK_{i}");
        let mut stream = js.get_stream(&name).await.expect("work stream");
        moved += stream.info().await.expect("info").state.last_sequence;
    }
    assert!(moved > 0, "no copy moved off the lane");
    assert!(natshook.dead_letters("narrow").is_empty());
}

/// A retry delay longer than a few seconds is waited out on the endpoint's own subject,
/// not on the lane (where it would keep every later copy stored): the next attempt
/// comes after the delay, numbered 2, and the lane keeps nothing behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_retry_delay_is_waited_out_off_the_lane() {
    let nats = NatsServer::start();
    let tries = std::sync::Mutex::new(BTreeMap::<String, usize>::new());
    let rx = Receiver::with(move |r| {
        let mut tries = tries.lock().unwrap();
        let n = tries.entry(r.id().to_string()).or_default();
        *n += 1;
        if *n == 1 {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    })
    .await;
    let settings = "retry_schedule = [\"6s\"]\nmax_attempts = 3\ndisable_after_failures = 0";
    let config = fan_out(TestConfig::new(nats.url())).endpoint(
        "later",
        &rx.url("/later"),
        &["lead.created"],
        settings,
    );
    let _natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    let started = std::time::Instant::now();
    publish_all(&js, leads(5, "l")).await;
    rx.wait_for(Duration::from_secs(5), "every first attempt", |r| {
        r.count() >= 5
    })
    .await;
    let early = started.elapsed();
    rx.wait_for(Duration::from_secs(30), "every retry", |r| {
        r.delivered_ids().len() >= 5
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(5500),
        "retried after {:?}",
        started.elapsed()
    );
    let attempts = attempts_by_id(&rx, None);
    for (id, a) in attempts {
        assert_eq!(a, [1, 2], "{id} (first attempts done after {early:?})");
    }
    // Once the scan ran, the lane holds none of the copies that waited elsewhere.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut lane = js.get_stream("EVENTS_natshook_LANE").await.expect("lane");
    let state = lane.info().await.expect("lane info").state.clone();
    assert_eq!(state.messages, 0, "copies still on the lane");
}

/// A copy within a few dozen bytes of the server's `max_payload` could not leave the
/// lane (moving adds headers), so it never goes on it: its retry waits on the
/// endpoint's own subject like any other, instead of on the lane, where it would keep
/// every later copy of every endpoint stored until it is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_too_large_to_leave_the_lane_waits_on_its_own_subject() {
    let nats = NatsServer::start();
    let rx = Receiver::with(|r| match r.id().starts_with("big") {
        true => Reply::status(500),
        false => Reply::ok(),
    })
    .await;
    let settings = "retry_schedule = [\"1h\"]\nmax_attempts = 3\ndisable_after_failures = 0";
    let config =
        fan_out(TestConfig::new(nats.url())).endpoint("a", &rx.url("/a"), &["*"], settings);
    let natshook = Natshook::start(&config.render()).await;
    let client = nats.client().await;
    let max_payload = client.server_info().max_payload;
    let js = jetstream::new(client);
    // Each copy's room to spare under max_payload, in bytes: a move off the lane with a
    // retry delay adds 60 (its attempts and its wait), so before the copies went to
    // their own subject when that did not fit, the first four could not leave the lane.
    let spare = [0usize, 10, 30, 59, 80, 150];
    let big: Vec<_> = spare
        .iter()
        .enumerate()
        .map(|(i, room)| {
            let id = format!("big-{i}");
            let mut source = async_nats::HeaderMap::new();
            source.insert("Nats-Msg-Id", id.as_str());
            // Message i + 1 of the stream, published now (19 digits of nanoseconds).
            let facts = natshook::store::copy::SourceFacts {
                subject: "crm.lead.created".into(),
                stream: "EVENTS".into(),
                sequence: i as u64 + 1,
                published: std::time::SystemTime::now(),
            };
            let headers = natshook::store::copy::copy_headers(Some(&source), &facts, "a");
            let len = max_payload - natshook::store::copy::wire_len(&headers) - room;
            let body = format!("{{\"pad\":\"{}\"}}", "x".repeat(len - 10));
            assert_eq!(body.len(), len);
            ("crm.lead.created".to_string(), Bytes::from(body), Some(id))
        })
        .collect();
    publish_all(&js, big).await;
    rx.wait_for(Duration::from_secs(20), "each big copy tried once", |r| {
        r.count() >= spare.len()
    })
    .await;
    assert!(natshook.dead_letters("a").is_empty());
    publish_all(&js, leads(10, "after")).await;
    rx.wait_for(Duration::from_secs(20), "the leads after them", |r| {
        r.delivered_ids().len() >= 10
    })
    .await;
    // The lane releases what its consumer acked every 3 s: nothing holds its floor.
    wait_until(Duration::from_secs(15), "every lane copy released", || {
        let js = js.clone();
        async move {
            let mut lane = js.get_stream("EVENTS_natshook_LANE").await.expect("lane");
            lane.info().await.map(|i| i.state.messages).unwrap_or(1) == 0
        }
    })
    .await;
    // Each retry waits on the endpoint's own subject (with the copies acked after
    // them: the first waiting one holds that consumer's floor).
    let waiting = work_copies(&js).await as usize;
    assert!(
        waiting >= spare.len(),
        "{waiting} copies on its own subject"
    );
    assert_eq!(rx.count(), spare.len() + 10, "a copy tried again early");
    assert!(!natshook.logs().contains("the retry waits on the lane"));
}

/// Copies a receiver refuses wait out a long retry delay on the endpoint's own subject
/// without holding its consumer's window: twice its size of them hold up neither each
/// other's first attempts nor the copies published after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn copies_waiting_out_long_retries_hold_up_no_later_ones() {
    let nats = NatsServer::start();
    let rx = Receiver::with(|r| match r.id().starts_with("poison") {
        true => Reply::status(422),
        false => Reply::ok(),
    })
    .await;
    // A window of 4 unacked copies on the endpoint's own consumer.
    let settings =
        "concurrency = 2\nretry_schedule = [\"10m\"]\nmax_attempts = 3\ndisable_after_failures = 0";
    let config = fan_out(TestConfig::new(nats.url())).endpoint(
        "e",
        &rx.url("/e"),
        &["lead.created"],
        settings,
    );
    let natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    let id_of =
        |prefix: &str, n: usize| (0..n).map(|i| format!("{prefix}-{i}")).collect::<Vec<_>>();
    let poison = id_of("poison", 8);
    publish_all(&js, leads(8, "poison")).await;
    rx.wait_for(Duration::from_secs(40), "every refused copy tried", |r| {
        let tries = r.received();
        (poison.iter()).all(|id| tries.iter().any(|t| t.id() == id))
    })
    .await;
    let later = id_of("later", 10);
    publish_all(&js, leads(10, "later")).await;
    rx.wait_for(Duration::from_secs(30), "the later copies", |r| {
        let delivered = r.delivered_ids();
        later.iter().all(|id| delivered.contains_key(id))
    })
    .await;
    let attempts = attempts_by_id(&rx, None);
    for id in &poison {
        assert_eq!(attempts[id], [1], "{id} tried again before its 10 minutes");
    }
    assert!(natshook.dead_letters("e").is_empty());
}

/// A receiver that answers slowly (but answers) holds no more than its fair share of
/// `max_inflight` on the lane; its other copies move to its own subject, and
/// the endpoints that keep up get theirs within about one slow answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_endpoint_does_not_hold_the_lane_up() {
    let nats = NatsServer::start();
    let rx = Receiver::with(|r| {
        if r.path == "/slow" {
            Reply::ok().delay(Duration::from_secs(2))
        } else {
            Reply::ok()
        }
    })
    .await;
    let mut config = TestConfig::new(nats.url());
    config.top = format!(
        "{}\n[delivery]\nfan_out = true\nmax_inflight = 8\n",
        config.top
    );
    config = config.endpoint("slow", &rx.url("/slow"), &["lead.created"], "");
    for i in 0..4 {
        config = config.endpoint(
            &format!("quick-{i}"),
            &rx.url(&format!("/quick/{i}")),
            &["lead.created"],
            "",
        );
    }
    let _natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    publish_all(&js, leads(100, "s")).await;
    rx.wait_for(
        Duration::from_secs(15),
        "every quick endpoint's copies",
        |r| {
            let got = per_path(r);
            (0..4).all(|i| {
                got.get(&format!("/quick/{i}"))
                    .is_some_and(|v| v.0.len() >= 100)
            })
        },
    )
    .await;
    let slow = per_path(&rx).get("/slow").map_or(0, |v| v.0.len());
    assert!(slow < 100, "the slow endpoint was not slow: {slow}");
    rx.wait_for(Duration::from_secs(120), "every slow copy", |r| {
        per_path(r).get("/slow").is_some_and(|v| v.0.len() >= 100)
    })
    .await;
}

/// An endpoint paused by its breaker takes no copy from the lane: they move to its own
/// subject, where its probe finds one, and once it answers again every id arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_endpoint_s_lane_copies_wait_on_its_own_subject() {
    let nats = NatsServer::start();
    let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let is_up = up.clone();
    let rx = Receiver::with(move |_| {
        if is_up.load(std::sync::atomic::Ordering::Relaxed) {
            Reply::ok()
        } else {
            Reply::status(503)
        }
    })
    .await;
    let settings =
        "retry_schedule = [\"200ms\"]\nmax_attempts = 1000\ndisable_after_failures = 3\n\
                    probe_interval = \"300ms\"\nprobe_max_interval = \"300ms\"";
    let config = fan_out(TestConfig::new(nats.url())).endpoint(
        "down",
        &rx.url("/down"),
        &["lead.created"],
        settings,
    );
    let natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    publish_all(&js, leads(30, "p")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rx.count();
    publish_all(&js, leads(30, "q")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Paused: only probes reach the receiver, one at a time.
    let while_paused = rx.count() - before;
    assert!(while_paused < 10, "{while_paused} requests while paused");
    up.store(true, std::sync::atomic::Ordering::Relaxed);
    rx.wait_for(
        Duration::from_secs(60),
        "every lead after the resume",
        |r| r.delivered_ids().len() >= 60,
    )
    .await;
    assert!(natshook.dead_letters("down").is_empty());
}

/// Retries happen on the copies: attempts count 1, 2, 3 per endpoint, and a message
/// that never succeeds is dead-lettered with the source message's subject, stream and
/// sequence.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_count_attempts_and_dead_letters_name_the_source() {
    let nats = NatsServer::start();
    // `nth_for_id` counts over every path: count per path here.
    let tries = std::sync::Mutex::new(BTreeMap::<(String, String), usize>::new());
    let rx = Receiver::with(move |r| {
        let mut tries = tries.lock().unwrap();
        let n = tries
            .entry((r.path.clone(), r.id().to_string()))
            .or_default();
        *n += 1;
        match (r.path.as_str(), *n) {
            ("/flaky", 1) => Reply::status(500),
            ("/flaky", 2) => Reply::status(503),
            ("/dead", _) => Reply::status(500),
            _ => Reply::ok(),
        }
    })
    .await;
    let settings = "retry_schedule = [\"100ms\"]\nmax_attempts = 3\ndisable_after_failures = 0";
    let config = fan_out(TestConfig::new(nats.url()))
        .endpoint("flaky", &rx.url("/flaky"), &["lead.created"], settings)
        .endpoint("dead", &rx.url("/dead"), &["lead.created"], settings)
        .endpoint("fine", &rx.url("/fine"), &["lead.created"], "");
    let natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    publish_all(&js, leads(100, "r")).await;

    let dead = natshook
        .wait_dead_letters("dead", 100, Duration::from_secs(90))
        .await;
    rx.wait_for(Duration::from_secs(60), "flaky delivered", |r| {
        r.received().iter().filter(|x| x.path == "/flaky").count() >= 300
    })
    .await;
    let attempts = attempts_by_id(&rx, Some("/flaky"));
    assert_eq!(attempts.len(), 100);
    for (id, mut a) in attempts {
        a.sort_unstable();
        assert_eq!(a, [1, 2, 3], "{id}");
    }
    let fine = per_path(&rx)["/fine"].clone();
    assert_eq!(
        fine.0.len(),
        100,
        "a failing endpoint does not hold the others"
    );
    let mut sequences = BTreeSet::new();
    for d in &dead {
        assert_eq!(d["subject"], "crm.lead.created", "{d}");
        assert_eq!(d["stream"], "EVENTS", "{d}");
        assert_eq!(d["attempts"], 3, "{d}");
        sequences.insert(d["stream_sequence"].as_u64().unwrap());
        assert!(d["id"].as_str().unwrap().starts_with("r-"), "{d}");
    }
    assert_eq!(sequences, (1..=100).collect(), "source sequences");
}

/// natshook killed with SIGKILL while 3,000 messages fan out to 5 endpoints, then
/// started again: every endpoint gets every id, duplicates carry the same id.
/// Five endpoints that each want every `lead.created`, for the fault tests.
fn five_endpoints(nats: &NatsServer, rx: &Receiver) -> String {
    let mut config = fan_out(TestConfig::new(nats.url()));
    for i in 0..5 {
        config = config.endpoint(
            &format!("e{i}"),
            &rx.url(&format!("/e/{i}")),
            &["lead.created"],
            "concurrency = 16",
        );
    }
    config.render()
}

/// Publishes 3,000 leads with ids `<prefix>-<n>`, applies `fault` once 2,000 requests
/// arrived, and checks that every endpoint got every id; returns the requests before
/// the fault and the duplicates (same ids) after it.
async fn every_copy_through<F: std::future::Future<Output = ()>>(
    js: &jetstream::Context,
    rx: &Receiver,
    prefix: &str,
    fault: F,
) -> (usize, usize) {
    publish_all(js, leads(3000, prefix)).await;
    rx.wait_for(Duration::from_secs(60), "some delivered", |r| {
        r.count() >= 2000
    })
    .await;
    let before = rx.count();
    fault.await;
    rx.wait_for(
        Duration::from_secs(120),
        "every copy after the fault",
        |r| per_path(r).values().map(|v| v.0.len()).sum::<usize>() >= 5 * 3000,
    )
    .await;
    let want: BTreeSet<String> = (0..3000).map(|i| format!("{prefix}-{i}")).collect();
    let got = per_path(rx);
    let mut duplicates = 0;
    for i in 0..5 {
        let (ids, requests) = &got[&format!("/e/{i}")];
        assert_eq!(ids, &want, "e{i}");
        duplicates += requests - ids.len();
    }
    (before, duplicates)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sigkill_mid_fan_out_loses_nothing() {
    let nats = NatsServer::start();
    let rx = Receiver::with(|_| Reply::ok().delay(Duration::from_millis(2))).await;
    let mut natshook = Natshook::start(&five_endpoints(&nats, &rx)).await;
    let js = jetstream::new(nats.client().await);
    let (before, duplicates) = every_copy_through(&js, &rx, "k", async {
        natshook.sigkill();
        natshook.spawn_ready_within(Duration::from_secs(30)).await;
    })
    .await;
    println!("killed after {before} requests; {duplicates} duplicates (same ids)");
}

/// A message that fits the server's `max_payload` but whose copy for one endpoint,
/// with natshook's headers naming it, does not: that endpoint gets a dead letter
/// saying so, the others their copy, and the message is settled rather than copied
/// again forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_over_max_payload_is_dead_lettered_for_its_endpoint_alone() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let long = "l".repeat(121);
    let config = fan_out(TestConfig::new(nats.url()))
        .endpoint("a", &rx.url("/a"), &["*"], "")
        .endpoint(&long, &rx.url("/long"), &["*"], "");
    let natshook = Natshook::start(&config.render()).await;
    let client = nats.client().await;
    let room = client.server_info().max_payload - 320;
    let js = jetstream::new(client);
    let body = format!("{{\"pad\":\"{}\"}}", "x".repeat(room - 12));
    publish_all(
        &js,
        vec![
            (
                "crm.lead.created".into(),
                Bytes::from(body),
                Some("big".into()),
            ),
            (
                "crm.lead.created".into(),
                Bytes::from_static(b"{}"),
                Some("small".into()),
            ),
        ],
    )
    .await;
    natshook.wait_uncopied_dead_letter(&long, "big").await;
    rx.wait_for(Duration::from_secs(20), "the copies that fit", |r| {
        let got = per_path(r);
        let ids = |p: &str| got.get(p).map(|(ids, _)| ids.clone()).unwrap_or_default();
        ids("/a").len() == 2 && ids("/long").contains("small")
    })
    .await;
    fan_out_settled(
        &natshook,
        Duration::from_secs(20),
        "the big message settled",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = per_path(&rx);
    assert_eq!(got["/a"].1, 2, "a copied again");
    assert!(!got["/long"].0.contains("big"));
    assert_eq!(natshook.dead_letters(&long).len(), 1);
}

/// Work streams deleted under a running natshook (by hand, or a server that lost its
/// store) are made again by the first copy that finds none: what is published after
/// reaches every endpoint without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleted_work_streams_are_made_again() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let natshook = Natshook::start(&five_endpoints(&nats, &rx)).await;
    let js = jetstream::new(nats.client().await);
    publish_all(&js, leads(20, "before")).await;
    rx.wait_for(Duration::from_secs(30), "every copy before", |r| {
        per_path(r).values().map(|v| v.0.len()).sum::<usize>() >= 5 * 20
    })
    .await;
    fan_out_settled(&natshook, Duration::from_secs(20), "settled").await;
    let streams = (0..16)
        .map(|i| format!("EVENTS_natshook_WORK_{i}"))
        .chain(["EVENTS_natshook_LANE".to_string()]);
    for name in streams {
        js.delete_stream(&name).await.expect("delete a work stream");
    }

    publish_all(&js, leads(20, "after")).await;
    let want: BTreeSet<String> = (0..20).map(|i| format!("after-{i}")).collect();
    rx.wait_for(Duration::from_secs(60), "every copy after", |r| {
        let got = per_path(r);
        (0..5).all(|i| {
            got.get(&format!("/e/{i}"))
                .is_some_and(|(ids, _)| want.is_subset(ids))
        })
    })
    .await;
    assert!(natshook.logs().contains("the work streams are made again"));
    assert!(natshook.dead_letters("e0").is_empty());
}

/// The endpoints' consumers keep their state in nats-server's memory: a restarted
/// server forgets them, natshook creates them again, and every copy not acked yet is
/// delivered (again); the copies themselves are on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nats_server_restart_mid_fan_out_loses_nothing() {
    let mut nats = NatsServer::start();
    let rx = Receiver::with(|_| Reply::ok().delay(Duration::from_millis(2))).await;
    let natshook = Natshook::start(&five_endpoints(&nats, &rx)).await;
    let js = jetstream::new(nats.client().await);
    let (before, duplicates) = every_copy_through(&js, &rx, "r", async { nats.restart() }).await;
    assert!(
        natshook.dead_letters("e0").is_empty(),
        "the restart caused dead letters"
    );
    println!("server restarted after {before} requests; {duplicates} duplicates (same ids)");
}

/// A server that stops answering for a few seconds (a frozen node; a stalled pull
/// request looks the same to the client) is noticed from the missing heartbeats within
/// two seconds, not ten, and the pull requests are renewed. What the server still hands
/// the old requests once it answers again is delivered at once: nothing waits out its
/// ack timer (30 s), and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_nats_server_is_noticed_within_seconds_and_loses_nothing() {
    let nats = NatsServer::start();
    let rx = Receiver::with(|_| Reply::ok().delay(Duration::from_millis(2))).await;
    let natshook = Natshook::start(&five_endpoints(&nats, &rx)).await;
    let js = jetstream::new(nats.client().await);
    let resumed = std::sync::Mutex::new(None);
    let (before, duplicates) = every_copy_through(&js, &rx, "f", async {
        nats.signal("STOP");
        tokio::time::sleep(Duration::from_millis(5000)).await;
        nats.signal("CONT");
        *resumed.lock().expect("lock") = Some(std::time::Instant::now());
    })
    .await;
    let after = resumed
        .lock()
        .expect("lock")
        .map(|t| t.elapsed())
        .unwrap_or_default();
    let logs = natshook.logs();
    assert!(
        logs.contains("two heartbeats missed; pulled again"),
        "a 5 s freeze is past two 1 s heartbeats and must be noticed:\n{logs}"
    );
    assert!(
        after < Duration::from_secs(30),
        "the rest took {after:?} after the freeze: some waited out their ack timer"
    );
    assert!(
        natshook.dead_letters("e0").is_empty(),
        "the freeze caused dead letters"
    );
    println!(
        "server frozen after {before} requests; the rest {after:?} after it; {duplicates} duplicates (same ids)"
    );
}

/// Sets `max_msgs` (with discard-new) on every work stream: at 1, a stream that holds
/// one copy refuses the next.
async fn limit_work_streams(js: &jetstream::Context, max_msgs: i64) {
    for i in 0..16 {
        let name = format!("EVENTS_natshook_WORK_{i}");
        let mut stream = js.get_stream(&name).await.expect("work stream");
        let mut config = stream
            .info()
            .await
            .expect("work stream info")
            .config
            .clone();
        config.max_messages = max_msgs;
        config.discard = jetstream::stream::DiscardPolicy::New;
        js.update_stream(config).await.expect("update work stream");
    }
}

/// A work stream that refuses copies holds the fan-out back: the source messages wait
/// on the fan-out consumer and `natshook_fanout_pending` counts them, while the
/// endpoint's own `natshook_consumer_pending` counts only the copy it holds. Once the
/// stream takes copies again every message arrives, with no dead letter, and both
/// counts return to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_held_back_shows_in_fanout_pending_and_loses_nothing() {
    const HELD: usize = 10;
    let nats = NatsServer::start();
    let rx = Receiver::with(|_| Reply::ok()).await;
    let config = with_admin(fan_out(TestConfig::new(nats.url()).endpoint(
        "a",
        &rx.url("/"),
        &["*"],
        "",
    )));
    let natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    deliver_leads(&js, &rx, 1, "first").await;
    fan_out_settled(&natshook, Duration::from_secs(20), "fanout_pending at 0").await;
    let (status, _) = natshook
        .api("POST", "/api/endpoints/a/pause", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 200);
    limit_work_streams(&js, 1).await;
    publish_all(&js, leads(HELD, "held")).await;
    // One copy is stored; the other source messages cannot be copied.
    wait_until(
        Duration::from_secs(20),
        "fanout_pending = the rest",
        || async { natshook.metric("natshook_fanout_pending").await == Some((HELD - 1) as f64) },
    )
    .await;
    wait_until(Duration::from_secs(20), "consumer_pending = 1", || async {
        natshook
            .metric("natshook_consumer_pending{endpoint=\"a\"}")
            .await
            == Some(1.0)
    })
    .await;
    assert!(
        natshook.logs().contains("did not store a copy"),
        "refused copies not logged:\n{}",
        natshook.logs()
    );
    limit_work_streams(&js, -1).await;
    let (status, _) = natshook
        .api("POST", "/api/endpoints/a/resume", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 200);
    rx.wait_for(Duration::from_secs(30), "every held message", |r| {
        r.delivered_ids().len() == HELD + 1
    })
    .await;
    fan_out_settled(
        &natshook,
        Duration::from_secs(20),
        "fanout_pending back to 0",
    )
    .await;
    // With nothing left, the endpoint lets its consumer go, and the poll that no
    // longer lists it shows no backlog.
    wait_until(
        Duration::from_secs(30),
        "consumer_pending back to 0",
        || async {
            natshook
                .metric("natshook_consumer_pending{endpoint=\"a\"}")
                .await
                == Some(0.0)
        },
    )
    .await;
    assert!(natshook.dead_letters("a").is_empty());
}

/// A fan-out config with one endpoint, `a` on `/a` for `lead.created`, with
/// `settings`, `ordered` or not: the tests that switch an endpoint between the two.
fn endpoint_a(nats: &NatsServer, rx: &Receiver, settings: &str, ordered: bool) -> String {
    let ordered = if ordered { "\nordered = true" } else { "" };
    fan_out(TestConfig::new(nats.url()))
        .endpoint(
            "a",
            &rx.url("/a"),
            &["lead.created"],
            &format!("{settings}{ordered}"),
        )
        .render()
}

/// Asserts that `rx` received each of `ids` at most once.
fn assert_once(rx: &Receiver, ids: &[String]) {
    let by_id = attempts_by_id(rx, None);
    let twice: Vec<&String> = ids
        .iter()
        .filter(|id| by_id.get(*id).map_or(0, Vec::len) > 1)
        .collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
}

/// An endpoint switched from `ordered` (a consumer of its own on the source stream) to
/// reading copies: what its old consumer still held is moved to the work stream with
/// the attempts it had, and the old consumer goes, so nothing it held is stranded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_stops_being_ordered_keeps_what_its_old_consumer_held() {
    let nats = NatsServer::start();
    let rx = Receiver::with(|_| Reply::status(503)).await;
    let settings = "retry_schedule = [\"200ms\"]\nmax_attempts = 50\ndisable_after_failures = 0";
    let config = |ordered: bool| {
        let extra = if ordered {
            format!("{settings}\nordered = true")
        } else {
            settings.to_string()
        };
        fan_out(TestConfig::new(nats.url()))
            .endpoint("a", &rx.url("/a"), &["lead.created"], &extra)
            .render()
    };
    let natshook = Natshook::start(&config(true)).await;
    let js = jetstream::new(nats.client().await);
    let ids = |m: &[(String, Bytes, Option<String>)]| -> Vec<String> {
        m.iter().filter_map(|(_, _, id)| id.clone()).collect()
    };
    let before = leads(40, "held");
    let before_ids = ids(&before);
    publish_all(&js, before).await;
    rx.wait_for(Duration::from_secs(10), "the first retries", |r| {
        r.count() >= 3
    })
    .await;
    assert!(consumers(&js, "EVENTS").await.contains("natshook-a"));

    reload(
        &natshook,
        &config(false),
        "config reloaded",
        "the switch applied",
    )
    .await;
    rx.set(|_| Reply::ok());
    let after = leads(10, "after");
    let after_ids = ids(&after);
    publish_all(&js, after).await;
    rx.wait_for(Duration::from_secs(30), "every lead", |r| {
        let got = r.delivered_ids();
        before_ids
            .iter()
            .chain(&after_ids)
            .all(|id| got.contains_key(id))
    })
    .await;
    wait_until(
        Duration::from_secs(20),
        "the old consumer deleted",
        || async { !consumers(&js, "EVENTS").await.contains("natshook-a") },
    )
    .await;
    // The first lead's attempts count on from those on the old consumer.
    let first = &before_ids[0];
    let attempts: Vec<u32> = rx
        .received()
        .iter()
        .filter(|r| r.id() == first)
        .map(|r| r.header("x-webhook-attempt").parse().unwrap_or(0))
        .collect();
    assert!(
        attempts.windows(2).all(|w| w[1] > w[0]),
        "attempts {attempts:?}"
    );
    assert!(natshook.dead_letters("a").is_empty());
    assert!(natshook.logs().contains("former consumer's messages moved"));
    // What arrived while the old consumer was drained was copied both ways, into one
    // stream: stored, and delivered, once.
    assert_once(&rx, &after_ids);
}

/// A message its former consumer held whose copy would be larger than the server's
/// `max_payload` is dead-lettered, with the attempts it had there, as the fan-out does
/// for one: the rest is moved and the former consumer goes, rather than every drain
/// failing on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_former_consumer_s_message_whose_copy_does_not_fit_is_dead_lettered() {
    let nats = NatsServer::start();
    let rx = Receiver::with(|r| match r.id().starts_with("big") {
        true => Reply::status(500),
        false => Reply::ok(),
    })
    .await;
    let settings = "retry_schedule = [\"200ms\"]\nmax_attempts = 50\ndisable_after_failures = 0";
    let natshook = Natshook::start(&endpoint_a(&nats, &rx, settings, true)).await;
    let client = nats.client().await;
    let room = client.server_info().max_payload - 100;
    let js = jetstream::new(client);
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(room - 10));
    let mut messages = vec![(
        "crm.lead.created".to_string(),
        Bytes::from(big),
        Some("big".to_string()),
    )];
    let held = leads(5, "held");
    let held_ids: Vec<String> = held.iter().filter_map(|(_, _, id)| id.clone()).collect();
    messages.extend(held);
    publish_all(&js, messages).await;
    // Ordered: the leads wait behind the big message's retries.
    rx.wait_for(Duration::from_secs(10), "the big message's retries", |r| {
        r.count() >= 2
    })
    .await;
    assert!(rx.delivered_ids().is_empty());
    reload(
        &natshook,
        &endpoint_a(&nats, &rx, settings, false),
        "config reloaded",
        "the switch applied",
    )
    .await;
    // One more while the former consumer may still be there: the fan-out and the drain
    // may both come upon it, and it is dead-lettered once.
    let big2 = format!("{{\"pad\":\"{}\"}}", "y".repeat(room - 10));
    publish_all(
        &js,
        vec![(
            "crm.lead.created".to_string(),
            Bytes::from(big2),
            Some("big2".to_string()),
        )],
    )
    .await;
    let mut dead = natshook
        .wait_dead_letters("a", 2, Duration::from_secs(20))
        .await;
    dead.sort_by_key(|d| d["id"].as_str().unwrap_or("").to_string());
    assert_eq!(dead[0]["id"], "big");
    assert_eq!(dead[1]["id"], "big2");
    let reason = dead[0]["reason"].as_str().unwrap_or("");
    assert!(reason.contains("max_payload"), "{reason}");
    assert!(
        dead[0]["attempts"].as_u64().unwrap_or(0) >= 2,
        "{}",
        dead[0]
    );
    rx.wait_for(Duration::from_secs(20), "the leads it held", |r| {
        let got = r.delivered_ids();
        held_ids.iter().all(|id| got.contains_key(id))
    })
    .await;
    wait_until(
        Duration::from_secs(20),
        "the former consumer deleted",
        || async { !consumers(&js, "EVENTS").await.contains("natshook-a") },
    )
    .await;
    assert_once(&rx, &held_ids);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(natshook.dead_letters("a").len(), 2);
    let counted = natshook
        .metric("natshook_dead_letters_total{endpoint=\"a\"}")
        .await;
    assert_eq!(counted, Some(2.0));
    assert!(!natshook.logs().contains("former consumer not drained yet"));
}

/// A second change that restarts the endpoint while its former consumer is still
/// drained (here its `timeout`, after the poller has seen that consumer) keeps its
/// copies off the lane too: what arrives meanwhile is delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_restarted_again_while_its_former_consumer_drains_gets_each_message_once() {
    let nats = NatsServer::start();
    let rx = Receiver::with(|_| Reply::status(503)).await;
    let config = |ordered: bool, timeout: &str| {
        let ordered = if ordered { "\nordered = true" } else { "" };
        let extra = format!(
            "retry_schedule = [\"200ms\"]\nmax_attempts = 50\ndisable_after_failures = 0\ntimeout = \"{timeout}\"{ordered}"
        );
        fan_out(TestConfig::new(nats.url()))
            .endpoint("a", &rx.url("/a"), &["lead.created"], &extra)
            .render()
    };
    let natshook = Natshook::start(&config(true, "5s")).await;
    let js = jetstream::new(nats.client().await);
    publish_all(&js, leads(40, "held")).await;
    rx.wait_for(Duration::from_secs(10), "the first retries", |r| {
        r.count() >= 3
    })
    .await;
    reload(
        &natshook,
        &config(false, "5s"),
        "config reloaded",
        "the switch",
    )
    .await;
    // The poller (every 5 s) has seen the former consumer by now.
    tokio::time::sleep(Duration::from_millis(5500)).await;
    natshook.rewrite_config(&config(false, "6s"));
    natshook.signal("HUP");
    wait_until(Duration::from_secs(10), "the second reload", || {
        let logs = natshook.logs();
        async move { logs.matches("config reloaded").count() >= 2 }
    })
    .await;
    rx.set(|_| Reply::ok());
    let after = leads(10, "after");
    let after_ids: Vec<String> = after.iter().filter_map(|(_, _, id)| id.clone()).collect();
    publish_all(&js, after).await;
    wait_until(
        Duration::from_secs(30),
        "the old consumer deleted",
        || async { !consumers(&js, "EVENTS").await.contains("natshook-a") },
    )
    .await;
    rx.wait_for(Duration::from_secs(30), "every lead", |r| {
        r.delivered_ids().len() >= 50
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_once(&rx, &after_ids);
}

/// An endpoint made unordered while no natshook process ran still has its former
/// consumer when the process starts: the fan-out's first copies for it (of what was
/// published meanwhile) go where the drain's copies go, so each message comes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_made_unordered_while_natshook_was_down_gets_each_message_once() {
    let nats = NatsServer::start();
    let rx = Receiver::with(|_| Reply::status(503)).await;
    let config = |ordered: bool| {
        endpoint_a(
            &nats,
            &rx,
            "retry_schedule = [\"200ms\"]\nmax_attempts = 50\ndisable_after_failures = 0",
            ordered,
        )
    };
    let mut natshook = Natshook::start(&config(true)).await;
    let js = jetstream::new(nats.client().await);
    let ids = |m: &[(String, Bytes, Option<String>)]| -> Vec<String> {
        m.iter().filter_map(|(_, _, id)| id.clone()).collect()
    };
    let held = leads(20, "held");
    let mut all = ids(&held);
    publish_all(&js, held).await;
    rx.wait_for(Duration::from_secs(10), "the first retries", |r| {
        r.count() >= 3
    })
    .await;
    assert!(natshook.terminate().await.success());
    natshook.rewrite_config(&config(false));
    rx.set(|_| Reply::ok());
    let down = leads(30, "down");
    let down_ids = ids(&down);
    publish_all(&js, down).await;
    natshook.spawn().await;
    let after = leads(10, "after");
    let after_ids = ids(&after);
    publish_all(&js, after).await;
    all.extend(down_ids.iter().chain(&after_ids).cloned());
    rx.wait_for(Duration::from_secs(30), "every lead", |r| {
        let got = r.delivered_ids();
        all.iter().all(|id| got.contains_key(id))
    })
    .await;
    wait_until(
        Duration::from_secs(20),
        "the old consumer deleted",
        || async { !consumers(&js, "EVENTS").await.contains("natshook-a") },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(natshook.dead_letters("a").is_empty());
    let later: Vec<String> = down_ids.into_iter().chain(after_ids).collect();
    assert_once(&rx, &later);
}

/// Waits until every lead of `ids` but `gone` (deleted from the source stream while
/// its copy waited, the endpoint then made `ordered`) is delivered, and checks that
/// `gone` is not: the ordered consumer skips it, and its copy is not read.
async fn every_lead_but(rx: &Receiver, ids: &[String], gone: &str) {
    rx.wait_for(
        Duration::from_secs(40),
        "every lead the source holds",
        |r| {
            let got = r.delivered_ids();
            ids.iter()
                .filter(|id| *id != gone)
                .all(|id| got.contains_key(id))
        },
    )
    .await;
    assert!(!rx.delivered_ids().contains_key(gone));
}

/// Makes the endpoint read copies again (`unordered` config) and waits for `gone`,
/// whose only record is its copy.
async fn the_deleted_lead_comes_from_its_copy(
    natshook: &Natshook,
    unordered: &str,
    rx: &Receiver,
    gone: &str,
) {
    natshook.rewrite_config(unordered);
    natshook.signal("HUP");
    rx.wait_for(
        Duration::from_secs(30),
        "the deleted lead, from its copy",
        |r| r.delivered_ids().contains_key(gone),
    )
    .await;
    assert!(natshook.dead_letters("a").is_empty());
}

/// Endpoint `a` with a receiver answering 503 (the caller sets it to answer 2xx):
/// a failed attempt waits 8 s, and the endpoint is never disabled.
fn retrying_a(nats: &NatsServer, rx: &Receiver, ordered: bool) -> String {
    endpoint_a(
        nats,
        rx,
        "retry_schedule = [\"8s\"]\nmax_attempts = 50\ndisable_after_failures = 0",
        ordered,
    )
}

/// Endpoint `a`, `ordered`, with 20 leads published: the first fails and waits out
/// its 8 s on the ordered consumer, the others behind it; then it is made unordered,
/// and the drain of its former consumer has moved `moved` out as a copy (tried once
/// from there). Returns the leads' ids in order.
async fn draining(
    nats: &NatsServer,
    rx: &Receiver,
    moved: usize,
) -> (Natshook, jetstream::Context, Vec<String>) {
    let natshook = Natshook::start(&retrying_a(nats, rx, true)).await;
    let js = jetstream::new(nats.client().await);
    let held = leads(20, "held");
    let ids: Vec<String> = held.iter().filter_map(|(_, _, id)| id.clone()).collect();
    publish_all(&js, held).await;
    rx.wait_for(Duration::from_secs(10), "the first attempt", |r| {
        r.count() >= 1
    })
    .await;
    reload(
        &natshook,
        &retrying_a(nats, rx, false),
        "config reloaded",
        "unordered",
    )
    .await;
    // The poller (every 5 s) starts the drain, which moves the 19 others and waits
    // for the first one's retry; the copies fail once and wait 8 s too.
    let moved = &ids[moved];
    rx.wait_for(Duration::from_secs(15), "a lead tried from its copy", |r| {
        r.received().iter().any(|q| q.id() == moved)
    })
    .await;
    assert!(consumers(&js, "EVENTS").await.contains("natshook-a"));
    (natshook, js, ids)
}

/// An endpoint made `ordered` again while its former consumer is drained (here the
/// drain waits for a retry on that consumer) takes that consumer over: the drain
/// stops, and the consumer is reset to the oldest message it had moved out as a
/// copy, so every message arrives, in order, and the copies go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_made_ordered_again_while_its_former_consumer_drains_misses_nothing() {
    let nats = NatsServer::start();
    let rx = Receiver::with(|_| Reply::status(503)).await;
    let (natshook, js, held_ids) = draining(&nats, &rx, 1).await;
    reload(
        &natshook,
        &retrying_a(&nats, &rx, true),
        "reset to the oldest message",
        "ordered again",
    )
    .await;
    rx.set(|_| Reply::ok());
    rx.wait_for(Duration::from_secs(40), "every lead", |r| {
        let got = r.delivered_ids();
        held_ids.iter().all(|id| got.contains_key(id))
    })
    .await;
    // In order: each lead's first success comes after the one before it.
    let first_success = first_successes(&rx.received());
    assert_eq!(first_success, held_ids);
    assert!(natshook.dead_letters("a").is_empty());
    assert!(consumers(&js, "EVENTS").await.contains("natshook-a"));
    wait_until(Duration::from_secs(10), "the copies removed", || async {
        work_copies(&js).await == 0
    })
    .await;
}

/// As above, but a message the drain moved out as a copy is then deleted from the
/// source stream: the reset delivers the others again, in order, and the copies stay,
/// since one is the only record of the deleted message; it comes once the endpoint
/// reads copies again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_take_back_keeps_the_copies_when_one_is_of_a_message_deleted_from_the_source() {
    let nats = NatsServer::start();
    let rx = Receiver::with(|_| Reply::status(503)).await;
    let (natshook, js, held_ids) = draining(&nats, &rx, 10).await;
    // Lead 10 is the 10th message from the source stream's end.
    let gone = &held_ids[10];
    let mut source = js.get_stream("EVENTS").await.unwrap();
    let last = source.info().await.unwrap().state.last_sequence;
    assert!(source.delete_message(last - 9).await.unwrap());

    reload(
        &natshook,
        &retrying_a(&nats, &rx, true),
        "no longer holds every message",
        "the copies kept",
    )
    .await;
    assert!(natshook.logs().contains("reset to the oldest message"));
    rx.set(|_| Reply::ok());
    every_lead_but(&rx, &held_ids, gone).await;
    let others: Vec<&String> = held_ids.iter().filter(|id| *id != gone).collect();
    assert_eq!(
        first_successes(&rx.received()).iter().collect::<Vec<_>>(),
        others
    );
    assert!(work_copies(&js).await > 0);
    the_deleted_lead_comes_from_its_copy(&natshook, &retrying_a(&nats, &rx, false), &rx, gone)
        .await;
}

/// An endpoint made `ordered` while copies of it wait on its own subject (the copies
/// removed, its new consumer starting at the oldest), then unordered again within the
/// work stream's 2-minute duplicate window: the drain of that consumer stores its
/// messages as copies again, though copies with their ids were stored (and removed)
/// on that stream moments before, which JetStream would drop as duplicates; every lead
/// arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_made_ordered_and_unordered_again_within_the_duplicate_window_loses_nothing() {
    let nats = NatsServer::start();
    let rx = Receiver::with(|_| Reply::status(503)).await;
    // Unordered, a copy that fails waits out an hour off the lane, on the endpoint's
    // own subject; ordered, the first lead is tried again 2 s after its 503.
    let config = |ordered: bool| {
        let extra = match ordered {
            true => "retry_schedule = [\"2s\"]\ndisable_after_failures = 0\nordered = true",
            false => "retry_schedule = [\"1h\"]\ndisable_after_failures = 0",
        };
        fan_out(TestConfig::new(nats.url()))
            .endpoint("a", &rx.url("/a"), &["lead.created"], extra)
            .render()
    };
    let natshook = Natshook::start(&config(false)).await;
    let js = jetstream::new(nats.client().await);
    let leads = leads(10, "waiting");
    let ids: Vec<String> = leads.iter().filter_map(|(_, _, id)| id.clone()).collect();
    publish_all(&js, leads).await;
    rx.wait_for(Duration::from_secs(20), "a first attempt of each", |r| {
        ids.iter()
            .all(|id| r.received().iter().any(|q| q.id() == id))
    })
    .await;
    reload(&natshook, &config(true), "config reloaded", "ordered").await;
    wait_until(Duration::from_secs(10), "the copies removed", || async {
        work_copies(&js).await == 0
    })
    .await;
    // The ordered consumer tries the first lead (503, then 2 s to wait) and holds the
    // others; made unordered, its messages are drained into copies again.
    assert!(natshook
        .logs()
        .contains("reads the source stream from its oldest copy"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    rx.set(|_| Reply::ok());
    natshook.rewrite_config(&config(false));
    natshook.signal("HUP");
    rx.wait_for(Duration::from_secs(30), "every lead", |r| {
        let got = r.delivered_ids();
        ids.iter().all(|id| got.contains_key(id))
    })
    .await;
    assert!(natshook.dead_letters("a").is_empty());
}

/// An endpoint made `ordered` gets a consumer of its own on the source stream; it
/// starts where the fan-out stands, so what the endpoint already received from its
/// copies is not delivered a second time, and nothing published around the switch is
/// missed: neither while a reload applies it (publishing goes on throughout) nor when
/// the process is restarted with it. The messages after a switch come in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_made_ordered_misses_nothing_and_does_not_receive_the_stream_again() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let config = |endpoint: &str, ordered: bool| {
        let extra = if ordered { "ordered = true" } else { "" };
        fan_out(TestConfig::new(nats.url()))
            .endpoint(endpoint, &rx.url("/a"), &["lead.created"], extra)
            .render()
    };
    let mut natshook = Natshook::start(&config("a", false)).await;
    let js = jetstream::new(nats.client().await);
    deliver_leads(&js, &rx, 30, "copied").await;
    fan_out_settled(
        &natshook,
        Duration::from_secs(10),
        "the fan-out's copies acked",
    )
    .await;

    // A reload while messages keep coming.
    let publisher = {
        let js = js.clone();
        tokio::spawn(async move {
            for (i, lead) in leads(100, "around").into_iter().enumerate() {
                publish_all(&js, vec![lead]).await;
                if i % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
    };
    reload(
        &natshook,
        &config("a", true),
        "config reloaded",
        "the switch applied",
    )
    .await;
    publisher.await.expect("publisher");
    wait_until(
        Duration::from_secs(10),
        "the ordered consumer bound",
        || async { consumers(&js, "EVENTS").await.contains("natshook-a") },
    )
    .await;
    let after = leads(10, "ordered");
    publish_all(&js, after).await;
    let all = |r: &Receiver, prefixes: &[(&str, usize)]| {
        let got = r.delivered_ids();
        prefixes
            .iter()
            .all(|(p, n)| (0..*n).all(|i| got.contains_key(&format!("{p}-{i}"))))
    };
    rx.wait_for(
        Duration::from_secs(20),
        "every lead around and after the switch",
        |r| all(r, &[("around", 100), ("ordered", 10)]),
    )
    .await;
    // Time for anything delivered again to arrive.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = rx.delivered_ids();
    let again: Vec<_> = got
        .iter()
        .filter(|(id, n)| id.starts_with("copied-") && **n > 1)
        .collect();
    assert!(again.is_empty(), "delivered again: {again:?}");
    let order: Vec<String> = rx
        .received()
        .iter()
        .map(|r| r.id().to_string())
        .filter(|id| id.starts_with("ordered-"))
        .collect();
    let expected: Vec<String> = (0..10).map(|i| format!("ordered-{i}")).collect();
    assert_eq!(order, expected);

    // The same switch made while natshook is down, for 40 other endpoints at once
    // (their consumers are made a few at a time): what was published meanwhile reaches
    // every one of them.
    let many = |ordered: bool| {
        let extra = if ordered { "ordered = true" } else { "" };
        (0..40)
            .fold(fan_out(TestConfig::new(nats.url())), |c, i| {
                c.endpoint(
                    &format!("b{i}"),
                    &rx.url(&format!("/b{i}")),
                    &["lead.created"],
                    extra,
                )
            })
            .render()
    };
    reload(
        &natshook,
        &many(false),
        "b39\"",
        "40 endpoints reading copies",
    )
    .await;
    publish_all(&js, leads(10, "b-copied")).await;
    let every_b = |r: &Receiver, prefix: &str| {
        let paths = per_path(r);
        (0..40).all(|i| {
            paths
                .get(&format!("/b{i}"))
                .is_some_and(|(ids, _)| (0..10).all(|n| ids.contains(&format!("{prefix}-{n}"))))
        })
    };
    rx.wait_for(Duration::from_secs(30), "the copies to every b", |r| {
        every_b(r, "b-copied")
    })
    .await;
    fan_out_settled(
        &natshook,
        Duration::from_secs(10),
        "the fan-out's copies acked",
    )
    .await;
    assert!(natshook.terminate().await.success());
    publish_all(&js, leads(10, "while-down")).await;
    natshook.rewrite_config(&many(true));
    natshook.spawn().await;
    rx.wait_for(
        Duration::from_secs(30),
        "the leads published while down, to every b",
        |r| every_b(r, "while-down"),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let again: Vec<_> = per_path(&rx)
        .into_iter()
        .filter(|(path, (ids, n))| path.starts_with("/b") && *n > ids.len())
        .collect();
    assert!(
        again.is_empty(),
        "delivered again after the restart: {again:?}"
    );
    assert!(natshook.dead_letters("a").is_empty());
    assert!(natshook.dead_letters("b0").is_empty());
}

/// Endpoint `a`'s settings that keep copies of it waiting: 5 deliveries a second.
const SLOW: &str = "rate_limit = \"5/s\"\nconcurrency = 16";

/// natshook with the [`SLOW`] endpoint `a` (unordered), 40 leads `<prefix>-<i>`
/// published and the first 3 delivered: the rest wait as copies, some of them fetched
/// by its worker. Returns the leads' ids.
async fn copies_waiting(
    nats: &NatsServer,
    rx: &Receiver,
    prefix: &str,
) -> (Natshook, jetstream::Context, Vec<String>) {
    let natshook = Natshook::start(&endpoint_a(nats, rx, SLOW, false)).await;
    let js = jetstream::new(nats.client().await);
    let leads = leads(40, prefix);
    let ids: Vec<String> = leads.iter().filter_map(|(_, _, id)| id.clone()).collect();
    publish_all(&js, leads).await;
    rx.wait_for(Duration::from_secs(10), "the first deliveries", |r| {
        r.count() >= 3
    })
    .await;
    (natshook, js, ids)
}

/// An endpoint made `ordered` while its worker holds copies it fetched and has not
/// started (here waiting for its `rate_limit`'s tokens) reads the source stream from
/// before them: the held copies are not delivered on top, so each message comes once
/// (but one in flight at the switch, which may come again), in the source's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_made_ordered_while_it_holds_copies_gets_each_once_in_order() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let (natshook, js, ids) = copies_waiting(&nats, &rx, "held").await;
    // A message the endpoint does not take, deleted from the source stream after the
    // leads: no copy is of it, so the copies still go.
    let other = |id: &str| {
        (
            "helpdesk.ticket.opened".to_string(),
            Bytes::from_static(b"{}"),
            Some(id.to_string()),
        )
    };
    publish_all(&js, vec![other("other-1"), other("other-2")]).await;
    let mut source = js.get_stream("EVENTS").await.unwrap();
    let last = source.info().await.unwrap().state.last_sequence;
    assert!(source.delete_message(last - 1).await.unwrap());
    reload(
        &natshook,
        &endpoint_a(&nats, &rx, SLOW, true),
        "config reloaded",
        "the switch applied",
    )
    .await;
    let switched = std::time::Instant::now();
    rx.wait_for(Duration::from_secs(30), "every lead", |r| {
        let got = r.delivered_ids();
        ids.iter().all(|id| got.contains_key(id))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Only a delivery in flight at the switch may come again (from the source stream,
    // at least once): a held copy delivered on top would first come after it.
    let received = rx.received();
    let first = |id: &str| received.iter().find(|r| r.id() == id);
    let again_after: Vec<&String> = ids
        .iter()
        .filter(|id| received.iter().filter(|r| r.id() == id.as_str()).count() > 1)
        .filter(|id| first(id).is_some_and(|r| r.at > switched))
        .collect();
    assert!(
        again_after.is_empty(),
        "delivered twice, first after the switch: {again_after:?}"
    );
    assert!(
        !natshook.logs().contains("no longer holds every message"),
        "copies kept for a deleted message none is of"
    );
    assert_eq!(work_copies(&js).await, 0, "the copies removed");
    let order: Vec<usize> = first_successes(&received)
        .iter()
        .filter_map(|id| ids.iter().position(|i| i == id))
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "delivered out of order: {order:?}"
    );
    assert!(natshook.dead_letters("a").is_empty());
}

/// An `ordered` endpoint made unordered and, before any drain has touched its former
/// consumer, `ordered` again, while its worker holds copies: that consumer delivers
/// what the copies hold, in order (those already delivered from copies a second
/// time), and the copies are removed rather than left to come again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_switched_back_to_ordered_at_once_leaves_no_copies_behind() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let config = |ordered: bool| {
        endpoint_a(
            &nats,
            &rx,
            "rate_limit = \"5/s\"\nconcurrency = 16",
            ordered,
        )
    };
    let natshook = Natshook::start(&config(true)).await;
    let js = jetstream::new(nats.client().await);
    deliver_leads(&js, &rx, 3, "before").await;
    reload(&natshook, &config(false), "config reloaded", "unordered").await;
    let leads = leads(30, "held");
    let ids: Vec<String> = leads.iter().filter_map(|(_, _, id)| id.clone()).collect();
    publish_all(&js, leads).await;
    rx.wait_for(Duration::from_secs(10), "the first copies delivered", |r| {
        r.delivered_ids().contains_key(&ids[1])
    })
    .await;
    natshook.rewrite_config(&config(true));
    natshook.signal("HUP");
    wait_until(Duration::from_secs(10), "ordered again", || {
        let logs = natshook.logs();
        async move { logs.matches("config reloaded").count() >= 2 }
    })
    .await;
    rx.wait_for(Duration::from_secs(30), "every lead", |r| {
        let got = r.delivered_ids();
        ids.iter().all(|id| got.contains_key(id))
    })
    .await;
    wait_until(Duration::from_secs(10), "the copies removed", || async {
        work_copies(&js).await == 0
    })
    .await;
    // From the consumer's first delivery after the switch on, each comes once, in
    // order.
    let received = rx.received();
    let last = |id: &str| received.iter().rposition(|r| r.id() == id);
    let first_again = ids.iter().filter_map(|id| last(id)).min().unwrap_or(0);
    let order: Vec<usize> = received[first_again..]
        .iter()
        .filter_map(|r| ids.iter().position(|id| id == r.id()))
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "delivered out of order: {order:?}"
    );
}

/// An endpoint made `ordered` while copies of it still wait on the work stream (here
/// each waiting out an hour's retry delay after a 503) would never read them again:
/// its consumer on the source stream starts at the oldest of their source messages,
/// every one of them is delivered, and the copies are removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_made_ordered_delivers_the_copies_it_had_waiting() {
    let nats = NatsServer::start();
    let rx = Receiver::with(|_| Reply::status(503)).await;
    let config = |ordered: bool| {
        endpoint_a(
            &nats,
            &rx,
            "retry_schedule = [\"1h\"]\ndisable_after_failures = 0",
            ordered,
        )
    };
    let natshook = Natshook::start(&config(false)).await;
    let js = jetstream::new(nats.client().await);
    publish_all(&js, leads(20, "waiting")).await;
    let tried = |r: &Receiver| {
        r.received()
            .iter()
            .map(|q| q.id().to_string())
            .collect::<BTreeSet<_>>()
            .len()
    };
    rx.wait_for(Duration::from_secs(20), "a first attempt of each", |r| {
        tried(r) == 20
    })
    .await;
    fan_out_settled(
        &natshook,
        Duration::from_secs(10),
        "the fan-out's copies acked",
    )
    .await;
    assert!(
        work_copies(&js).await >= 20,
        "the copies wait on the work stream"
    );

    rx.set(|_| Reply::ok());
    reload(
        &natshook,
        &config(true),
        "config reloaded",
        "the switch applied",
    )
    .await;
    rx.wait_for(Duration::from_secs(20), "each delivered", |r| {
        (0..20).all(|i| r.delivered_ids().contains_key(&format!("waiting-{i}")))
    })
    .await;
    wait_until(Duration::from_secs(10), "the copies removed", || async {
        work_copies(&js).await == 0
    })
    .await;
    publish_all(&js, leads(5, "after")).await;
    rx.wait_for(Duration::from_secs(10), "the leads after", |r| {
        (0..5).all(|i| r.delivered_ids().contains_key(&format!("after-{i}")))
    })
    .await;
    assert!(natshook
        .logs()
        .contains("reads the source stream from its oldest copy"));
    assert!(natshook.dead_letters("a").is_empty());
}

/// An endpoint made `ordered` whose consumer on the source stream JetStream refuses
/// (the stream at its consumer limit) neither holds the other endpoints up nor misses
/// a message: the fan-out copies for it meanwhile, and the consumer, once it can be
/// made, starts at the oldest of those copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_endpoint_whose_consumer_is_refused_gets_its_messages_once_it_is_made() {
    let nats = NatsServer::start();
    let js = jetstream::new(nats.client().await);
    js.create_stream(jetstream::stream::Config {
        name: "EVENTS".into(),
        subjects: vec!["crm.>".into()],
        max_consumers: 3,
        ..Default::default()
    })
    .await
    .expect("stream");
    let rx = Receiver::start().await;
    let config = |ordered: bool| {
        let extra = if ordered { "ordered = true" } else { "" };
        fan_out(TestConfig::new(nats.url()))
            .endpoint("a", &rx.url("/a"), &["lead.created"], extra)
            .endpoint("b", &rx.url("/b"), &["lead.created"], "")
            .render()
    };
    let natshook = Natshook::start(&config(false)).await;
    deliver_leads(&js, &rx, 10, "before").await;
    // The fan-out's and the unmapped counter's consumers, and one more: the limit.
    let stream = js.get_stream("EVENTS").await.expect("stream");
    stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("blocker".into()),
            ..Default::default()
        })
        .await
        .expect("the blocking consumer");

    reload(
        &natshook,
        &config(true),
        "config reloaded",
        "the switch applied",
    )
    .await;
    wait_until(Duration::from_secs(10), "the refusal", || async {
        natshook
            .logs()
            .contains("its messages wait as copies meanwhile")
    })
    .await;
    publish_all(&js, leads(20, "refused")).await;
    let on = |r: &Receiver, path: &str, prefix: &str, n: usize| {
        per_path(r)
            .get(path)
            .is_some_and(|(ids, _)| (0..n).all(|i| ids.contains(&format!("{prefix}-{i}"))))
    };
    rx.wait_for(Duration::from_secs(10), "b unaffected", |r| {
        on(r, "/b", "refused", 20)
    })
    .await;
    assert!(!on(&rx, "/a", "refused", 1), "a has no consumer yet");

    stream.delete_consumer("blocker").await.expect("unblock");
    rx.wait_for(
        Duration::from_secs(30),
        "a's messages once its consumer exists",
        |r| on(r, "/a", "refused", 20),
    )
    .await;
    assert!(consumers(&js, "EVENTS").await.contains("natshook-a"));
    let order: Vec<String> = rx
        .received()
        .iter()
        .filter(|r| r.path == "/a" && r.id().starts_with("refused-"))
        .map(|r| r.id().to_string())
        .collect();
    let expected: Vec<String> = (0..20).map(|i| format!("refused-{i}")).collect();
    assert_eq!(order, expected, "in order");
    wait_until(Duration::from_secs(10), "a's copies removed", || async {
        work_copies(&js).await == 0
    })
    .await;
    assert!(natshook.dead_letters("a").is_empty());
}

/// The `max_ack_pending` of every consumer on the work streams.
async fn work_windows(js: &jetstream::Context) -> Vec<i64> {
    let mut windows = Vec::new();
    for i in 0..16 {
        let name = format!("EVENTS_natshook_WORK_{i}");
        let stream = js.get_stream(&name).await.expect("work stream");
        for consumer in consumers(js, &name).await {
            if let Ok(info) = stream.consumer_info(&consumer).await {
                windows.push(info.config.max_ack_pending);
            }
        }
    }
    windows
}

/// A `rate_limit` changed in place reaches the consumer a fan-out endpoint reads its
/// copies through: the window follows the new rate (what it delivers in a third of
/// `ack_wait`), and every copy is still delivered once, as a first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_change_in_place_resizes_the_window_of_a_fan_out_endpoints_consumer() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let config = |rate: &str| {
        endpoint_a(
            &nats,
            &rx,
            &format!("rate_limit = \"{rate}\"\nconcurrency = 32"),
            false,
        )
    };
    let natshook = Natshook::start(&config("2/s")).await;
    let js = jetstream::new(nats.client().await);
    let leads = leads(60, "resized");
    let ids: Vec<String> = leads.iter().filter_map(|(_, _, id)| id.clone()).collect();
    publish_all(&js, leads).await;
    // Behind at 2/s, the endpoint reads its copies through a consumer of its own.
    wait_until(Duration::from_secs(10), "a window of 20 at 2/s", || {
        let js = js.clone();
        async move { work_windows(&js).await == [20] }
    })
    .await;

    reload(&natshook, &config("4/s"), "rate limit changed", "4/s").await;
    assert_eq!(work_windows(&js).await, [40]);

    rx.wait_for(Duration::from_secs(40), "every lead", |r| {
        let got = r.delivered_ids();
        ids.iter().all(|id| got.contains_key(id))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_once(&rx, &ids);
    let later: Vec<_> = rx
        .received()
        .iter()
        .filter(|r| r.header("x-webhook-attempt") != "1")
        .map(|r| r.id().to_string())
        .collect();
    assert!(later.is_empty(), "attempts other than 1: {later:?}");
    assert!(natshook.dead_letters("a").is_empty());
}

/// An endpoint made `ordered` while copies of it wait, after the source stream lost
/// one of their messages from its interior (as per-subject limits and message TTLs
/// delete): the copies stay, one being the only record left of that message, and it
/// is delivered once the endpoint reads copies again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_of_a_message_deleted_from_the_source_stay_when_the_endpoint_is_made_ordered() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let (natshook, js, ids) = copies_waiting(&nats, &rx, "kept").await;
    fan_out_settled(&natshook, Duration::from_secs(10), "every lead copied").await;
    // The leads are the last 40 messages of the source stream: lead 36 is the 4th
    // from its end, 6 s of deliveries away at 5/s.
    let mut source = js.get_stream("EVENTS").await.unwrap();
    let last = source.info().await.unwrap().state.last_sequence;
    let gone = &ids[36];
    assert!(source.delete_message(last - 3).await.unwrap());

    reload(
        &natshook,
        &endpoint_a(&nats, &rx, SLOW, true),
        "no longer holds every message",
        "the copies kept",
    )
    .await;
    every_lead_but(&rx, &ids, gone).await;
    the_deleted_lead_comes_from_its_copy(
        &natshook,
        &endpoint_a(&nats, &rx, SLOW, false),
        &rx,
        gone,
    )
    .await;
}
