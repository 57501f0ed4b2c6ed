//! Runtime endpoints: created, read, changed and deleted through the admin API, kept
//! in the JetStream KV registry and served by every natshook process on the bucket.

mod common;

use std::time::{Duration, Instant};

use async_nats::jetstream;
use common::*;
use serde_json::{json, Value};

const TOKEN: &str = ADMIN_TOKEN;

/// Admin API and registry on, one file endpoint `file` (to `file_rx`, `file_extra` its
/// extra TOML lines); besides the usual mappings, `events.<tenant>.lead.created` gives
/// leads a tenant.
fn config(nats: &NatsServer, file_rx: &Receiver, file_extra: &str) -> String {
    let mut c = with_admin(
        TestConfig::new(nats.url())
            .mapping("events.*.lead.created", "lead.created", "tenant = \"{2}\"")
            .endpoint("file", &file_rx.url("/file"), &["lead.created"], file_extra),
    );
    c.top = format!("{}\n[registry]\nenabled = true\n", c.top);
    c.render()
}

/// What every test here starts with: a nats-server, natshook with the admin API and
/// the registry on, the file endpoint's receiver and one for runtime endpoints (each
/// endpoint on its own path).
struct Setup {
    /// Runs as long as the test holds the setup.
    _nats: NatsServer,
    file_rx: Receiver,
    rx: Receiver,
    n: Natshook,
    js: jetstream::Context,
    config: String,
}

impl Setup {
    async fn start() -> Self {
        Self::start_with("").await
    }

    /// With extra TOML lines for the file endpoint.
    async fn start_with(file_extra: &str) -> Self {
        let nats = NatsServer::start();
        let file_rx = Receiver::start().await;
        let rx = Receiver::start().await;
        let config = config(&nats, &file_rx, file_extra);
        let n = Natshook::start(&config).await;
        let js = jetstream::new(nats.client().await);
        Self {
            _nats: nats,
            file_rx,
            rx,
            n,
            js,
            config,
        }
    }

    /// Another natshook process on the same server, stream and bucket (its own port).
    async fn another(&self) -> Natshook {
        Natshook::start(&self.config).await
    }
}

fn body(name: &str, rx: &Receiver) -> String {
    json!({
        "name": name,
        "url": rx.url(&format!("/{name}")),
        "events": ["lead.created"],
        "signature": {"scheme": "standard"},
        "tenant": "org_1",
        "description": "Acme's CRM",
        "allow_http": true,
        "allow_private": true,
        "retry_schedule": ["100ms"],
    })
    .to_string()
}

/// `n` leads of `tenant`, ids `<prefix>-<i>`.
fn tenant_leads(
    tenant: &str,
    n: usize,
    prefix: &str,
) -> Vec<(String, bytes::Bytes, Option<String>)> {
    leads(n, prefix)
        .into_iter()
        .map(|(_, payload, id)| (format!("events.{tenant}.lead.created"), payload, id))
        .collect()
}

/// Publishes `n` leads of `org_1` and waits until `rx` holds `total` distinct ids.
async fn deliver_org_1(
    js: &jetstream::Context,
    rx: &Receiver,
    n: usize,
    prefix: &str,
    total: usize,
) {
    publish_all(js, tenant_leads("org_1", n, prefix)).await;
    rx.wait_for(
        Duration::from_secs(20),
        &format!("{total} delivered"),
        |r| r.delivered_ids().len() >= total,
    )
    .await;
}

async fn api(n: &Natshook, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    n.api(method, path, Some(TOKEN), body).await
}

/// The names `GET /api/endpoints` lists on `n`.
async fn listed(n: &Natshook, query: &str) -> Vec<String> {
    let (status, body) = api(n, "GET", &format!("/api/endpoints{query}"), None).await;
    assert_eq!(status, 200, "{body}");
    body["endpoints"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|e| e["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Waits until `name` runs on `n` with its consumer bound.
async fn wait_bound(n: &Natshook, name: &str) {
    wait_until(
        Duration::from_secs(20),
        &format!("{name} bound"),
        || async {
            api(n, "GET", &format!("/api/endpoints/{name}"), None)
                .await
                .1["bound"]
                == true
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_read_change_and_delete_runtime_endpoints_through_the_api() {
    let s = Setup::start().await;
    let (n, rx, js, file_rx) = (&s.n, &s.rx, &s.js, &s.file_rx);

    // Create: 201 with the secret, shown this once.
    let (status, created) = api(n, "POST", "/api/endpoints", Some(&body("acme", rx))).await;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().expect("a secret").to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(created["source"], "api");
    assert_eq!(created["enabled"], true);
    assert_eq!(created["tenant"], "org_1");
    let revision = created["revision"].as_u64().expect("a revision");
    wait_bound(n, "acme").await;

    // It delivers, signed with that secret.
    deliver_org_1(js, rx, 5, "a", 5).await;
    // Another tenant's leads never reach it.
    publish_all(js, tenant_leads("org_2", 3, "other")).await;
    let got = rx.received();
    let verified = verify_received(&secret, &got);
    assert_eq!(verified, (5, 0), "verified / failed");

    // Read: never the secret; the tenant filter; the catalog.
    let (_, one) = api(n, "GET", "/api/endpoints/acme", None).await;
    assert_eq!(one["revision"], revision);
    assert_eq!(one["description"], "Acme's CRM");
    let (_, all) = api(n, "GET", "/api/endpoints", None).await;
    assert!(!all.to_string().contains(&secret), "{all}");
    assert!(!one.to_string().contains(&secret), "{one}");
    assert_eq!(listed(n, "?tenant=org_1").await, ["acme"]);
    assert!(listed(n, "?tenant=org_2").await.is_empty());
    let mut names = listed(n, "").await;
    names.sort();
    assert_eq!(names, ["acme", "file"]);
    let (_, events) = api(n, "GET", "/api/events", None).await;
    assert_eq!(events["events"], json!(["lead.created", "ticket.*"]));

    // Taken names: another runtime endpoint's, a file endpoint's.
    let (status, err) = api(n, "POST", "/api/endpoints", Some(&body("acme", rx))).await;
    assert_eq!(status, 409, "{err}");
    let (status, err) = api(n, "POST", "/api/endpoints", Some(&body("file", rx))).await;
    assert_eq!(status, 409, "{err}");
    assert!(
        err["error"].as_str().unwrap().contains("config file"),
        "{err}"
    );
    let (status, _) = api(n, "PATCH", "/api/endpoints/file", Some("{}")).await;
    assert_eq!(status, 409);
    let (status, _) = api(n, "DELETE", "/api/endpoints/file", None).await;
    assert_eq!(status, 409);

    // Invalid: every problem by field, in `natshook check`'s words.
    let bad = json!({"name": "Bad!", "url": "http://10.1.2.3/x", "events": ["nothing.maps"],
        "timeout": "soon", "secret": {"env": "HOME"}, "bogus": true});
    let (status, err) = api(n, "POST", "/api/endpoints", Some(&bad.to_string())).await;
    assert_eq!(status, 422, "{err}");
    let problems: Vec<(String, String)> = err["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["field"].as_str().unwrap().into(),
                p["message"].as_str().unwrap().into(),
            )
        })
        .collect();
    for field in ["name", "url", "events", "timeout", "secret", "bogus"] {
        assert!(problems.iter().any(|(f, _)| f == field), "{field}: {err}");
    }
    assert!(
        problems.contains(&(
            "url".into(),
            "scheme must be https (set allow_http = true to permit http)".into()
        )),
        "{err}"
    );

    // Change with a stale revision: 412; with the current one: applied.
    let (status, _) = n
        .api_with(
            "PATCH",
            "/api/endpoints/acme",
            &[
                ("authorization", &format!("Bearer {TOKEN}")),
                ("if-match", &format!("\"{}\"", revision + 100)),
            ],
            Some("{\"description\": \"lost\"}"),
        )
        .await
        .0;
    assert_eq!(status, 412);
    let ((status, changed), _) = n
        .api_with(
            "PATCH",
            "/api/endpoints/acme",
            &[
                ("authorization", &format!("Bearer {TOKEN}")),
                ("if-match", &revision.to_string()),
            ],
            Some("{\"enabled\": false}"),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["enabled"], false);
    assert!(changed["revision"].as_u64().unwrap() > revision);
    // The first writer's revision is now stale too.
    let ((status, _), _) = n
        .api_with(
            "PATCH",
            "/api/endpoints/acme",
            &[
                ("authorization", &format!("Bearer {TOKEN}")),
                ("if-match", &revision.to_string()),
            ],
            Some("{\"enabled\": true}"),
        )
        .await;
    assert_eq!(status, 412);
    let (status, err) = api(
        n,
        "PATCH",
        "/api/endpoints/acme",
        Some("{\"url\": \"ftp://x\"}"),
    )
    .await;
    assert_eq!(status, 422, "{err}");

    // Disabled: messages wait; enabled again: they arrive.
    wait_until(Duration::from_secs(10), "acme stopped", || async {
        api(n, "GET", "/api/endpoints/acme", None)
            .await
            .1
            .get("bound")
            .is_none()
    })
    .await;
    publish_all(js, tenant_leads("org_1", 3, "held")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        rx.delivered_ids().len(),
        5,
        "a disabled endpoint received requests"
    );
    let (status, _) = api(
        n,
        "PATCH",
        "/api/endpoints/acme",
        Some("{\"enabled\": true}"),
    )
    .await;
    assert_eq!(status, 200);
    rx.wait_for(Duration::from_secs(20), "the held 3", |r| {
        r.delivered_ids().len() >= 8
    })
    .await;

    // Delete: 204, the worker stops and its consumer goes.
    let (status, _) = api(n, "DELETE", "/api/endpoints/acme", None).await;
    assert_eq!(status, 204);
    let stream = js.get_stream("EVENTS").await.unwrap();
    wait_until(Duration::from_secs(20), "acme's consumer removed", || {
        let stream = stream.clone();
        async move { stream.consumer_info("natshook-acme").await.is_err() }
    })
    .await;
    assert_eq!(api(n, "GET", "/api/endpoints/acme", None).await.0, 404);
    assert_eq!(listed(n, "").await, ["file"]);
    // The file endpoint delivered all along.
    file_rx
        .wait_for(Duration::from_secs(10), "file endpoint's 8", |r| {
            r.delivered_ids().len() >= 8
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_the_registry_and_a_restart_keeps_it() {
    let mut s = Setup::start().await;
    let b = s.another().await;
    let (a, rx, js) = (&mut s.n, &s.rx, &s.js);

    let (status, created) = api(a, "POST", "/api/endpoints", Some(&body("shared", rx))).await;
    assert_eq!(status, 201, "{created}");
    let start = Instant::now();
    wait_until(
        Duration::from_secs(10),
        "b lists the new endpoint",
        || async { listed(&b, "").await.contains(&"shared".to_string()) },
    )
    .await;
    let seen = start.elapsed();
    eprintln!("second process saw the create after {seen:?}");
    assert!(seen < Duration::from_secs(2), "{seen:?}");
    wait_bound(&b, "shared").await;

    // A change made through b reaches a.
    let (status, _) = api(
        &b,
        "PATCH",
        "/api/endpoints/shared",
        Some("{\"description\": \"via b\"}"),
    )
    .await;
    assert_eq!(status, 200);
    wait_until(Duration::from_secs(10), "a sees b's change", || async {
        a.api("GET", "/api/endpoints", Some(TOKEN), None)
            .await
            .1
            .to_string()
            .contains("via b")
    })
    .await;

    // A restart keeps the runtime endpoint, and it delivers.
    a.terminate().await;
    a.spawn().await;
    wait_bound(a, "shared").await;
    deliver_org_1(js, rx, 10, "r", 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_signs_beside_the_old_one_until_the_grace_ends() {
    let s = Setup::start().await;
    let (n, rx, js) = (&s.n, &s.rx, &s.js);
    let (status, created) = api(n, "POST", "/api/endpoints", Some(&body("acme", rx))).await;
    assert_eq!(status, 201, "{created}");
    let old = created["secret"].as_str().unwrap().to_string();
    wait_bound(n, "acme").await;

    let (status, err) = api(
        n,
        "POST",
        "/api/endpoints/acme/secret/rotate",
        Some("{\"grace\": \"soon\"}"),
    )
    .await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["problems"][0]["field"], "grace");
    let (status, rotated) = api(
        n,
        "POST",
        "/api/endpoints/acme/secret/rotate",
        Some("{\"grace\": \"6s\"}"),
    )
    .await;
    let rotated_at = Instant::now();
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_string();
    assert!(new.starts_with("whsec_") && new != old);
    let (_, one) = api(n, "GET", "/api/endpoints/acme", None).await;
    assert!(!one.to_string().contains(&new) && !one.to_string().contains(&old));

    // Within the grace both secrets sign every request.
    tokio::time::sleep(Duration::from_secs(2)).await;
    deliver_org_1(js, rx, 5, "during", 5).await;
    let during: Vec<Received> = rx
        .received()
        .into_iter()
        .filter(|r| r.id().starts_with("during"))
        .collect();
    assert!(
        rotated_at.elapsed() < Duration::from_secs(6),
        "too slow to test the grace"
    );
    assert_eq!(verify_received(&new, &during), (5, 0));
    assert_eq!(verify_received(&old, &during), (5, 0));

    // After it, only the new one.
    tokio::time::sleep(Duration::from_secs(8).saturating_sub(rotated_at.elapsed())).await;
    publish_all(js, tenant_leads("org_1", 5, "after")).await;
    rx.wait_for(Duration::from_secs(20), "5 after the grace", |r| {
        r.delivered_ids().len() >= 10
    })
    .await;
    let after: Vec<Received> = rx
        .received()
        .into_iter()
        .filter(|r| r.id().starts_with("after"))
        .collect();
    assert_eq!(verify_received(&new, &after), (5, 0));
    assert_eq!(verify_received(&old, &after).0, 0);
}
