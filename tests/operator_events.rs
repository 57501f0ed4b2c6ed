//! Operator events on `natshook.events.>`: automatic pauses (failure threshold and
//! `410 Gone`), the resume after a successful probe, an operator's pause and resume,
//! and dead letters; every event without the message's content.

mod common;

use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use common::*;

/// In every payload; no event may carry it.
const MARKER: &str = "payload-marker-7f3a";

fn marked(n: usize, prefix: &str) -> Vec<(String, Bytes, Option<String>)> {
    (0..n)
        .map(|i| {
            (
                "crm.lead.created".to_string(),
                Bytes::from(format!("{{\"lead\":{i},\"note\":\"{MARKER}\"}}")),
                Some(format!("{prefix}-{i}")),
            )
        })
        .collect()
}

fn rfc3339_utc(v: &serde_json::Value) -> bool {
    v.as_str()
        .and_then(|s| humantime::parse_rfc3339(s).ok().map(|_| s.ends_with('Z')))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pauses_resumes_operator_changes_and_dead_letters_are_published() {
    let nats = NatsServer::start();
    let events = EventWatch::start(&nats).await;
    // a: fails until it recovers; b: always fails, dead-letters; c: gone.
    let rx_a = Receiver::with(|_| Reply::status(500)).await;
    let rx_b = Receiver::with(|_| Reply::status(500)).await;
    let rx_c = Receiver::with(|_| Reply::status(410)).await;
    let config = with_admin(
        TestConfig::new(nats.url())
            .endpoint(
                "a",
                &rx_a.url("/"),
                &["*"],
                "retry_schedule = [\"100ms\"]\nmax_attempts = 1000\ndisable_after_failures = 2\nprobe_interval = \"300ms\"\nprobe_max_interval = \"300ms\"",
            )
            .endpoint(
                "b",
                &rx_b.url("/"),
                &["*"],
                "retry_schedule = [\"50ms\"]\nmax_attempts = 2\ndisable_after_failures = 0",
            )
            .endpoint(
                "c",
                &rx_c.url("/"),
                &["*"],
                "retry_schedule = [\"100ms\"]\nmax_attempts = 1000\nprobe_interval = \"60s\"",
            ),
    );
    let natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    publish_all(&js, marked(3, "ev")).await;
    let within = Duration::from_secs(30);

    let paused = events
        .wait(within, "natshook.events.endpoint.paused", "a")
        .await;
    assert_eq!(paused["reason"], "consecutive_failures", "{paused}");
    assert!(
        paused["consecutive_failures"].as_u64() >= Some(2),
        "{paused}"
    );
    assert!(rfc3339_utc(&paused["at"]), "{paused}");
    assert!(paused.get("tenant").is_none(), "{paused}");

    let gone = events
        .wait(within, "natshook.events.endpoint.paused", "c")
        .await;
    assert_eq!(gone["reason"], "gone", "{gone}");
    assert_eq!(gone["last_status"], 410, "{gone}");

    let dead = events
        .wait(within, "natshook.events.dead_letter", "b")
        .await;
    assert_eq!(dead["reason"], "max_attempts", "{dead}");
    assert_eq!(dead["attempts"], 2, "{dead}");
    assert_eq!(dead["last_status"], 500, "{dead}");
    assert_eq!(dead["last_result"], "5xx", "{dead}");
    assert_eq!(dead["event"], "lead.created", "{dead}");
    assert_eq!(dead["subject"], "crm.lead.created", "{dead}");
    assert!(
        dead["id"].as_str().is_some_and(|id| id.starts_with("ev-")),
        "{dead}"
    );
    assert!(rfc3339_utc(&dead["at"]), "{dead}");

    // a's receiver recovers: the next probe succeeds and resumes it.
    rx_a.set(|_| Reply::ok());
    let resumed = events
        .wait(within, "natshook.events.endpoint.resumed", "a")
        .await;
    assert_eq!(resumed["reason"], "delivery_succeeded", "{resumed}");
    assert_eq!(resumed["consecutive_failures"], 0, "{resumed}");
    assert!(rfc3339_utc(&resumed["paused_at"]), "{resumed}");
    rx_a.wait_for(within, "a delivered all", |r| r.delivered_ids().len() >= 3)
        .await;

    // An operator's pause and resume are `disabled` and `enabled`.
    let (status, _) = natshook
        .api("POST", "/api/endpoints/a/pause", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 200);
    let disabled = events
        .wait(within, "natshook.events.endpoint.disabled", "a")
        .await;
    assert_eq!(disabled["reason"], "admin_api", "{disabled}");
    let (status, _) = natshook
        .api("POST", "/api/endpoints/a/resume", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 200);
    let enabled = events
        .wait(within, "natshook.events.endpoint.enabled", "a")
        .await;
    assert_eq!(enabled["reason"], "admin_api", "{enabled}");
    assert!(rfc3339_utc(&enabled["paused_at"]), "{enabled}");

    // Every dead letter is an event; c never resumed (its probe is a minute away).
    wait_until(
        Duration::from_secs(10),
        "a dead-letter event per message",
        || {
            let n = events.of("natshook.events.dead_letter", "b").len();
            async move { n >= 3 }
        },
    )
    .await;
    assert!(events
        .of("natshook.events.endpoint.resumed", "c")
        .is_empty());
    for (subject, body) in events.all() {
        let text = String::from_utf8_lossy(&body);
        assert!(
            !text.contains(MARKER),
            "{subject} carries the payload: {text}"
        );
        assert!(
            !text.contains("secret-"),
            "{subject} carries a secret: {text}"
        );
    }
}
