//! Tenant webhooks from the config file: a mapping gives each message a tenant (a
//! subject token or a NATS header), a tenant's endpoint gets that tenant's messages
//! and no other's, an endpoint without a tenant gets every message. Real nats-server,
//! real receivers, the natshook binary.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use common::*;

const TENANTS: usize = 100;
const PER_TENANT: usize = 10;

fn tenant(i: usize) -> String {
    format!("t{i:03}")
}

/// The requests each receiver path got, as (id, body).
fn by_path(rx: &Receiver) -> BTreeMap<String, Vec<(String, serde_json::Value)>> {
    let mut out: BTreeMap<String, Vec<(String, serde_json::Value)>> = BTreeMap::new();
    for r in rx.received() {
        out.entry(r.path.clone())
            .or_default()
            .push((r.id().to_string(), r.json()));
    }
    out
}

/// 100 tenants, each with its own endpoint (one receiver, a path per tenant), and one
/// endpoint without a tenant. 1,000 messages published interleaved across tenants:
/// each tenant's path gets exactly its 10, each carrying its tenant; the endpoint
/// without a tenant gets all 1,000; each tenant's consumer was handed only its
/// tenant's messages (the filter pins the subject's tenant token).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_tenants_get_only_their_own_messages() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let mut config = TestConfig::new(nats.url());
    config.events = vec![];
    config = config.mapping(
        "events.*.ticket.created",
        "ticket.created",
        "tenant = \"{2}\"",
    );
    for i in 0..TENANTS {
        let t = tenant(i);
        config = config.endpoint(
            &format!("tenant-{i:03}"),
            &rx.url(&format!("/t/{t}")),
            &["ticket.created"],
            &format!("tenant = \"{t}\"\nconcurrency = 4"),
        );
    }
    config = config.endpoint("all", &rx.url("/all"), &["*"], "");
    let _natshook = Natshook::start(&config.render()).await;

    let js = jetstream::new(nats.client().await);
    let messages = (0..PER_TENANT).flat_map(|n| {
        (0..TENANTS).map(move |i| {
            let t = tenant(i);
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                format!("{t}-{n}").as_str(),
            );
            (
                format!("events.{t}.ticket.created"),
                Bytes::from(format!("{{\"tenant\":\"{t}\",\"n\":{n}}}")),
                headers,
            )
        })
    });
    publish_with_headers(&js, messages).await;

    let total = TENANTS * PER_TENANT;
    rx.wait_for(Duration::from_secs(120), "every delivery", |r| {
        r.count() >= 2 * total
    })
    .await;
    // Anything misrouted would arrive on top; give it a moment to show.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let paths = by_path(&rx);
    assert_eq!(paths.len(), TENANTS + 1, "{:?}", paths.keys());
    for i in 0..TENANTS {
        let t = tenant(i);
        let got = &paths[&format!("/t/{t}")];
        let ids: BTreeSet<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
        let want: BTreeSet<String> = (0..PER_TENANT).map(|n| format!("{t}-{n}")).collect();
        let want: BTreeSet<&str> = want.iter().map(String::as_str).collect();
        assert_eq!(ids, want, "tenant {t}");
        assert_eq!(got.len(), PER_TENANT, "tenant {t}: no request twice");
        for (id, body) in got {
            assert_eq!(body["organization_id"], t.as_str(), "{id}");
            assert_eq!(body["data"]["tenant"], t.as_str(), "{id}");
            assert_eq!(
                body["metadata"]["subject"],
                format!("events.{t}.ticket.created"),
                "{id}"
            );
        }
    }
    let all = &paths["/all"];
    let ids: BTreeSet<&str> = all.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), total);
    for (id, body) in all {
        assert_eq!(body["organization_id"], body["data"]["tenant"], "{id}");
    }

    // The filter did the narrowing: each tenant's consumer reads its tenant's subject
    // and was handed its 10 messages, not the stream's 1,000.
    for i in [0, 42, TENANTS - 1] {
        let info = consumer_info(&js, "EVENTS", &format!("natshook-tenant-{i:03}")).await;
        assert_eq!(
            info.config.filter_subject,
            format!("events.{}.ticket.created", tenant(i))
        );
        assert_eq!(info.delivered.consumer_sequence, PER_TENANT as u64);
        assert_eq!(info.num_pending, 0);
    }
    let info = consumer_info(&js, "EVENTS", "natshook-all").await;
    assert_eq!(info.config.filter_subject, "events.*.ticket.created");
    assert_eq!(info.delivered.consumer_sequence, total as u64);
}

/// A tenant in a NATS header: the filter cannot narrow, so each tenant's endpoint is
/// handed every message and delivery checks each one; another tenant's message, or
/// one without a usable header (missing, empty, not a tenant id), is acked without a
/// request. The endpoint without a tenant gets all of them, the tenant field only on
/// those with a tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_tenant_is_checked_on_every_message() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let mut config = TestConfig::new(nats.url());
    config.events = vec![];
    config = config.mapping("orders.*", "order.{2}", "tenant_header = \"Nats-Tenant\"");
    for t in ["a", "b", "c"] {
        config = config.endpoint(
            &format!("tenant-{t}"),
            &rx.url(&format!("/h/{t}")),
            &["order.*"],
            &format!("tenant = \"{t}\"\ntenant_field = \"tenant\""),
        );
    }
    config = config.endpoint("all", &rx.url("/all"), &["*"], "tenant_field = \"tenant\"");
    let _natshook = Natshook::start(&config.render()).await;

    // The tenant headers (name, value) of each kind of message. The last kind names
    // two tenants in two spellings, which come out of a message's headers in no
    // fixed order: it has no tenant, so no tenant's endpoint gets it.
    let kinds: [&[(&str, &str)]; 8] = [
        &[("Nats-Tenant", "a")],
        &[("Nats-Tenant", "b")],
        &[("nats-tenant", "c")],
        &[],
        &[("Nats-Tenant", "")],
        &[("Nats-Tenant", "a b")],
        &[("Nats-Tenant", "d")],
        &[("nats-tenant", "b"), ("Nats-Tenant", "a")],
    ];
    let n = 40;
    let messages = (0..n).map(|i| {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("m-{i}").as_str(),
        );
        for &(name, value) in kinds[i % kinds.len()] {
            headers.append(name, value);
        }
        (
            "orders.paid".to_string(),
            Bytes::from(format!("{{\"i\":{i}}}")),
            headers,
        )
    });
    let js = jetstream::new(nats.client().await);
    publish_with_headers(&js, messages).await;

    let per_kind = n / kinds.len();
    rx.wait_for(Duration::from_secs(60), "every delivery", |r| {
        r.count() >= n + 3 * per_kind
    })
    .await;
    // Each tenant endpoint's consumer has settled every message: the others were
    // acked without a request.
    for t in ["a", "b", "c"] {
        let name = format!("natshook-tenant-{t}");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let info = consumer_info(&js, "EVENTS", &name).await;
            if info.ack_floor.stream_sequence == n as u64 && info.num_ack_pending == 0 {
                assert_eq!(info.config.filter_subject, "orders.*");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name} never settled every message: {info:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let paths = by_path(&rx);
    assert_eq!(paths.len(), 4, "{:?}", paths.keys());
    for (k, t) in ["a", "b", "c"].into_iter().enumerate() {
        let got = &paths[&format!("/h/{t}")];
        let ids: BTreeSet<String> = got.iter().map(|(id, _)| id.clone()).collect();
        let want: BTreeSet<String> = (0..n)
            .filter(|i| i % kinds.len() == k)
            .map(|i| format!("m-{i}"))
            .collect();
        assert_eq!(ids, want, "tenant {t}");
        assert_eq!(got.len(), per_kind);
        for (id, body) in got {
            assert_eq!(body["tenant"], t, "{id}");
        }
    }
    let all = &paths["/all"];
    assert_eq!(all.len(), n);
    for (id, body) in all {
        let i: usize = id.trim_start_matches("m-").parse().unwrap();
        let want = match kinds[i % kinds.len()] {
            [(_, v)] if ["a", "b", "c", "d"].contains(v) => serde_json::json!(v),
            _ => serde_json::Value::Null,
        };
        assert_eq!(body["tenant"], want, "{id}: {body}");
        if want.is_null() {
            assert!(body.get("tenant").is_none(), "{id}: field left out");
        }
    }
}
