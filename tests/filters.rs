//! Payload filters end to end: the receiver gets exactly the messages whose payload
//! matches, every other one is acked without a request and counted, and a reload
//! applies a changed filter.

mod common;

use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use common::*;

fn lead(id: &str, payload: &str) -> (String, Bytes, Option<String>) {
    (
        "crm.lead.created".to_string(),
        Bytes::from(payload.to_string()),
        Some(id.to_string()),
    )
}

/// Unacked and undelivered messages of the endpoint's durable consumer.
async fn consumer_backlog(js: &jetstream::Context, endpoint: &str) -> u64 {
    let stream = js.get_stream("EVENTS").await.expect("stream");
    let info = stream
        .consumer_info(format!("natshook-{endpoint}"))
        .await
        .expect("consumer info");
    info.num_pending + info.num_ack_pending as u64
}

/// Waits (up to 20 s) until `endpoint`'s consumer has nothing pending or unacked:
/// every message, matching or not, was settled.
async fn wait_drained(js: &jetstream::Context, endpoint: &str) {
    wait_until(
        Duration::from_secs(20),
        "the consumer to be drained",
        || async { consumer_backlog(js, endpoint).await == 0 },
    )
    .await;
}

const FILTER: &str =
    r#"filter = { "data.priority" = ["high", "urgent"], "data.lead.region" = ["eu", 7] }"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_matching_payloads_are_delivered_and_the_rest_acked() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let config = TestConfig::new(nats.url()).endpoint("f", &rx.url("/"), &["*"], FILTER);
    let mut natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    let matching = [
        r#"{"priority":"high","lead":{"region":"eu"}}"#,
        r#"{"lead":{"x":[1,{"y":2}],"region":"eu"},"priority":"urgent","extra":null}"#,
        r#"{"priority":"h\u0069gh","lead":{"region":7.0}}"#,
        " {\"priority\":\"urgent\",\"lead\":{\"region\":7}}\n",
    ];
    let not_matching = [
        r#"{"priority":"low","lead":{"region":"eu"}}"#,
        r#"{"priority":"high","lead":{"region":"us"}}"#,
        r#"{"priority":"high"}"#,
        r#"{"priority":["high"],"lead":{"region":"eu"}}"#,
        r#"{"priority":"high","lead":{"region":"7"}}"#,
        r#"{"priority":"high","lead":"eu"}"#,
        r#"{"priority":"high","lead":{"region":"eu"}"#,
        "priority=high region=eu",
        "",
    ];
    let mut messages = Vec::new();
    for (i, p) in matching.iter().enumerate() {
        messages.push(lead(&format!("yes-{i}"), p));
    }
    for (i, p) in not_matching.iter().enumerate() {
        messages.push(lead(&format!("no-{i}"), p));
    }
    publish_all(&js, messages).await;

    rx.wait_for(Duration::from_secs(20), "every matching message", |r| {
        r.delivered_ids().len() >= matching.len()
    })
    .await;
    wait_drained(&js, "f").await;
    natshook
        .wait_metric(
            "natshook_filtered_messages_total{endpoint=\"f\"}",
            not_matching.len() as f64,
            Duration::from_secs(10),
            "every other message counted as filtered",
        )
        .await;
    let ids: Vec<String> = rx.delivered_ids().into_keys().collect();
    assert_eq!(ids, ["yes-0", "yes-1", "yes-2", "yes-3"]);
    assert_eq!(rx.count(), matching.len(), "a filtered message was sent");
    assert!(natshook.dead_letters("f").is_empty());

    // A reload with another filter applies to the messages after it.
    let config = TestConfig::new(nats.url()).endpoint(
        "f",
        &rx.url("/"),
        &["*"],
        r#"filter = { "data.priority" = ["low"] }"#,
    );
    reload(&natshook, &config.render(), "restarted=[\"f\"]", "reload").await;
    publish_all(
        &js,
        vec![
            lead(
                "after-high",
                r#"{"priority":"high","lead":{"region":"eu"}}"#,
            ),
            lead("after-low", r#"{"priority":"low"}"#),
        ],
    )
    .await;
    rx.wait_for(Duration::from_secs(20), "the low-priority message", |r| {
        r.delivered_ids().contains_key("after-low")
    })
    .await;
    wait_drained(&js, "f").await;
    assert!(!rx.delivered_ids().contains_key("after-high"));
    assert_eq!(rx.count(), matching.len() + 1);
    natshook.terminate().await;
}
