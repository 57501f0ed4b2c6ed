//! Runtime endpoints: created, read, changed and deleted through the admin API, kept
//! in the JetStream KV registry and served by every natshook process on the bucket.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use common::admin_api as api;
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
    c.top = format!(
        "{}\n[registry]\nenabled = true\nmin_retry_delay = \"10ms\"\n",
        c.top
    );
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

/// Deletes runtime endpoint `name` through `n` (`204`) and waits until its consumer is
/// gone, which happens once its worker has drained.
async fn delete_until_gone(n: &Natshook, js: &jetstream::Context, name: &str) {
    let (status, body) = api(n, "DELETE", &format!("/api/endpoints/{name}"), None).await;
    assert_eq!(status, 204, "{body}");
    let stream = js.get_stream("EVENTS").await.unwrap();
    let consumer = format!("natshook-{name}");
    wait_until(
        Duration::from_secs(20),
        &format!("{consumer} removed"),
        || {
            let (stream, consumer) = (stream.clone(), consumer.clone());
            async move { stream.consumer_info(&consumer).await.is_err() }
        },
    )
    .await;
}

/// Rewrites `name`'s stored record with `edit`, as another tool writing the bucket
/// would, and as natshook itself writes the keys a request may not set.
async fn edit_record(js: &jetstream::Context, name: &str, edit: impl FnOnce(&mut Value)) {
    let kv = js
        .get_key_value("NATSHOOK_ENDPOINTS")
        .await
        .expect("bucket");
    let stored = kv.get(name).await.expect("get").expect("the record");
    let mut value: Value = serde_json::from_slice(&stored).expect("json");
    edit(&mut value);
    kv.put(name, serde_json::to_vec(&value).unwrap().into())
        .await
        .expect("put");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_read_change_and_delete_runtime_endpoints_through_the_api() {
    // The file endpoint has a tenant too, so the tenant filter lists file endpoints.
    let s = Setup::start_with("tenant = \"org_1\"").await;
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
    let mut of_org_1 = listed(n, "?tenant=org_1").await;
    of_org_1.sort();
    assert_eq!(of_org_1, ["acme", "file"]);
    assert!(listed(n, "?tenant=org_2").await.is_empty());
    let (_, file) = api(n, "GET", "/api/endpoints/file", None).await;
    assert_eq!(file["tenant"], "org_1", "{file}");

    // Extra headers show by name only: their values are the receiver's credentials.
    let (status, changed) = api(
        n,
        "PATCH",
        "/api/endpoints/acme",
        Some("{\"headers\": {\"X-Api-Key\": \"customer-receiver-token\"}}"),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    let (_, one) = api(n, "GET", "/api/endpoints/acme", None).await;
    assert_eq!(one["headers"], json!(["X-Api-Key"]), "{one}");
    let (_, all) = api(n, "GET", "/api/endpoints", None).await;
    for shown in [&changed, &one, &all] {
        assert!(
            !shown.to_string().contains("customer-receiver-token"),
            "{shown}"
        );
    }
    let revision = one["revision"].as_u64().expect("a revision");
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
        "timeout": "soon", "secret": {"env": "HOME"}, "bogus": true,
        "proxy": {"url": "http://127.0.0.1:3128", "password": {"file": "/proc/self/environ"}}});
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
    for field in [
        "name", "url", "events", "timeout", "secret", "bogus", "proxy",
    ] {
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
    // Switched off, it keeps its delivery log; what needs a worker says it is off.
    let (status, log) = api(n, "GET", "/api/endpoints/acme/deliveries", None).await;
    assert_eq!(status, 200, "{log}");
    assert!(log.as_array().is_some_and(|l| !l.is_empty()), "{log}");
    let (status, err) = api(n, "POST", "/api/endpoints/acme/test", None).await;
    assert_eq!(status, 409, "{err}");
    assert!(
        err["error"]
            .as_str()
            .unwrap_or_default()
            .contains("disabled"),
        "{err}"
    );
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
    delete_until_gone(n, js, "acme").await;
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

/// The stored record of runtime endpoint `name`, as the bucket holds it; `None` when
/// the bucket or the key is missing.
async fn stored_record(js: &jetstream::Context, name: &str) -> Option<Value> {
    let kv = js.get_key_value("NATSHOOK_ENDPOINTS").await.ok()?;
    let stored = kv.get(name).await.ok()??;
    serde_json::from_slice(&stored).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_registry_bucket_is_made_again_with_the_endpoints_served() {
    let mut s = Setup::start().await;
    let (status, created) = api(&s.n, "POST", "/api/endpoints", Some(&body("kept", &s.rx))).await;
    assert_eq!(status, 201, "{created}");
    wait_bound(&s.n, "kept").await;
    let before = stored_record(&s.js, "kept").await.expect("stored");

    // Made again empty at once, as `natshook endpoints` or a replica starting would,
    // then gone and left to natshook.
    let config =
        s.js.get_stream("KV_NATSHOOK_ENDPOINTS")
            .await
            .expect("bucket")
            .cached_info()
            .config
            .clone();
    for make_again in [true, false] {
        s.js.delete_stream("KV_NATSHOOK_ENDPOINTS")
            .await
            .expect("delete the bucket");
        if make_again {
            s.js.create_stream(config.clone())
                .await
                .expect("made again");
        }
        wait_until(
            Duration::from_secs(20),
            "the record written back",
            || async { stored_record(&s.js, "kept").await.is_some() },
        )
        .await;
        assert_eq!(
            stored_record(&s.js, "kept").await.as_ref(),
            Some(&before),
            "written back as it was, secret included"
        );
    }
    let (status, created) = api(&s.n, "POST", "/api/endpoints", Some(&body("new", &s.rx))).await;
    assert_eq!(status, 201, "{created}");

    // Both outlive a restart, and deliver.
    s.n.terminate().await;
    s.n.spawn().await;
    wait_bound(&s.n, "kept").await;
    wait_bound(&s.n, "new").await;
    publish_all(&s.js, tenant_leads("org_1", 5, "after")).await;
    s.rx.wait_for(Duration::from_secs(20), "both deliver", |r| {
        let got = r.received();
        ["/kept", "/new"]
            .iter()
            .all(|p| got.iter().filter(|q| q.path == *p).count() >= 5)
    })
    .await;
}

/// A replay under way sends each record as the endpoint is served then: after a
/// change of its URL to the new one, and once it is disabled not at all, the rest
/// kept; a record removed meanwhile (its endpoint deleted) is not sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_under_way_follows_the_endpoint_s_changes() {
    let s = Setup::start().await;
    let (n, rx, js) = (&s.n, &s.rx, &s.js);
    let mut moving: Value = serde_json::from_str(&body("moving", rx)).unwrap();
    moving["disable_after_failures"] = 0.into();
    let moving = moving.to_string();
    let (status, created) = api(n, "POST", "/api/endpoints", Some(&moving)).await;
    assert_eq!(status, 201, "{created}");
    wait_bound(n, "moving").await;
    rx.set(|_| Reply::status(500));
    publish_org_1(js, 20, "dl").await;
    n.wait_dead_letters("moving", 20, Duration::from_secs(30))
        .await;
    rx.set(|r| match r.path.as_str() {
        "/moving" => Reply::ok().delay(Duration::from_millis(200)),
        _ => Reply::ok(),
    });
    let replay = api(n, "POST", "/api/endpoints/moving/dlq/replay", Some("{}"));
    let change = async {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let url = json!({"url": rx.url("/moved")}).to_string();
        patch_ok(n, "moving", &url).await;
    };
    let ((status, summary), ()) = tokio::join!(replay, change);
    assert_eq!(status, 200, "{summary}");
    assert_eq!(
        summary["replayed"].as_array().map(Vec::len),
        Some(20),
        "{summary}"
    );
    let moved = delivered_on(rx, "/moved", "dl");
    assert!(!moved.is_empty(), "every record went to the former URL");
    assert_eq!(moved.len() + delivered_on(rx, "/moving", "dl").len(), 20);

    // Disabled under way: the rest stay dead letters.
    rx.set(|_| Reply::status(500));
    publish_org_1(js, 20, "again").await;
    n.wait_dead_letters("moving", 20, Duration::from_secs(30))
        .await;
    rx.set(|_| Reply::ok().delay(Duration::from_millis(200)));
    let replay = api(n, "POST", "/api/endpoints/moving/dlq/replay", Some("{}"));
    let disable = async {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        patch_ok(n, "moving", "{\"enabled\": false}").await;
    };
    let ((status, summary), ()) = tokio::join!(replay, disable);
    assert_eq!(status, 200, "{summary}");
    let replayed = summary["replayed"].as_array().map_or(0, Vec::len);
    assert!(replayed < 20, "{summary}");
    assert_eq!(n.dead_letters("moving").len(), 20 - replayed);

    // Removed under way, as a delete of the endpoint removes them: not sent.
    patch_ok(n, "moving", "{\"enabled\": true}").await;
    wait_bound(n, "moving").await;
    rx.set(|_| Reply::status(500));
    publish_org_1(js, 10, "third").await;
    let left = 30 - replayed;
    n.wait_dead_letters("moving", left, Duration::from_secs(30))
        .await;
    rx.set(|_| Reply::ok().delay(Duration::from_millis(300)));
    let before = rx.count();
    let replay = api(n, "POST", "/api/endpoints/moving/dlq/replay", Some("{}"));
    let purge = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let dlq = js.get_stream("NATSHOOK_DLQ").await.expect("dlq");
        dlq.purge()
            .filter("natshook.dlq.moving")
            .await
            .expect("purged");
    };
    let ((status, summary), ()) = tokio::join!(replay, purge);
    assert_eq!(status, 200, "{summary}");
    let sent = rx.count() - before;
    assert!(sent < left, "{sent} of {left} sent after their removal");
    assert_eq!(summary["replayed"].as_array().map(Vec::len), Some(sent));
}

/// The ids `name`'s delivery log shows through the API.
async fn logged_ids(n: &Natshook, name: &str) -> BTreeSet<String> {
    let (status, log) = api(n, "GET", &format!("/api/endpoints/{name}/deliveries"), None).await;
    assert_eq!(status, 200, "{log}");
    (log.as_array().expect("a list").iter())
        .map(|r| r["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// An endpoint moved to another tenant shows its new tenant none of the former
/// one's deliveries in its log; one deleted shows none at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_moved_to_another_tenant_shows_only_its_tenant_s_log() {
    let s = Setup::start().await;
    let (n, rx, js) = (&s.n, &s.rx, &s.js);
    let (status, created) = api(n, "POST", "/api/endpoints", Some(&body("moved", rx))).await;
    assert_eq!(status, 201, "{created}");
    wait_bound(n, "moved").await;
    publish_all(js, tenant_leads("org_1", 3, "one")).await;
    wait_until(
        Duration::from_secs(20),
        "org_1's deliveries logged",
        || async { logged_ids(n, "moved").await.len() == 3 },
    )
    .await;

    patch_ok(n, "moved", "{\"tenant\": \"org_2\"}").await;
    assert_eq!(logged_ids(n, "moved").await, BTreeSet::new());
    wait_until(Duration::from_secs(10), "the change applied", || async {
        api(n, "GET", "/api/endpoints/moved", None).await.1["tenant"] == "org_2"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    publish_all(js, tenant_leads("org_2", 2, "two")).await;
    let two: BTreeSet<String> = ["two-0", "two-1"].map(String::from).into();
    wait_until(
        Duration::from_secs(20),
        "org_2's deliveries logged",
        || async { logged_ids(n, "moved").await == two },
    )
    .await;

    let (status, _) = api(n, "DELETE", "/api/endpoints/moved", None).await;
    assert_eq!(status, 204);
    let (status, log) = api(n, "GET", "/api/endpoints/moved/deliveries", None).await;
    assert_eq!(status, 404, "{log}");
}

/// What a settings page relies on: the secret answered as a string whatever form it
/// was given in (and kept through a rotation's grace), a change that changes nothing
/// keeping the revision, `If-Match: *` taking the endpoint as it is, and a test event
/// sent right after a change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_answer_as_strings_and_empty_changes_keep_the_revision() {
    let s = Setup::start().await;
    let (n, rx, js) = (&s.n, &s.rx, &s.js);
    let mut given: Value = serde_json::from_str(&body("shaped", rx)).unwrap();
    given["secret"] = json!({"value": "abcdefgh12345678"});
    let (status, created) = api(n, "POST", "/api/endpoints", Some(&given.to_string())).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["secret"], "abcdefgh12345678");
    let revision = created["revision"].clone();

    let (status, same) = api(n, "PATCH", "/api/endpoints/shaped", Some("{}")).await;
    assert_eq!(status, 200, "{same}");
    assert_eq!(same["revision"], revision);
    let (status, same) = api(
        n,
        "PATCH",
        "/api/endpoints/shaped",
        Some("{\"description\": \"Acme's CRM\"}"),
    )
    .await;
    assert_eq!(status, 200, "{same}");
    assert_eq!(same["revision"], revision);

    let auth = format!("Bearer {TOKEN}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
        ("if-match", "*"),
    ];
    let ((status, changed), _) = n
        .api_with(
            "PATCH",
            "/api/endpoints/shaped",
            &headers,
            Some("{\"description\": \"changed\"}"),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_ne!(changed["revision"], revision);
    // A test event right after the change waits for it to apply rather than answer 503.
    let (status, tested) = api(n, "POST", "/api/endpoints/shaped/test", None).await;
    assert_eq!(status, 200, "{tested}");

    rotated_keeps(n, js, "abcdefgh12345678").await;

    // One stored as `{"value": …}` (by another tool) is kept through a grace too.
    edit_record(js, "shaped", |v| {
        v["secret"] = json!({"value": "stored-as-an-object"});
        v.as_object_mut().unwrap().remove("previous_secrets_until");
    })
    .await;
    wait_until(Duration::from_secs(10), "the edit seen", || async {
        let (status, _) = api(n, "POST", "/api/endpoints/shaped/test", None).await;
        status == 200
    })
    .await;
    rotated_keeps(n, js, "stored-as-an-object").await;
}

/// Rotates `shaped`'s secret with a grace of an hour and checks that the bucket then
/// holds the new secret and `replaced`, which signs through the grace.
async fn rotated_keeps(n: &Natshook, js: &jetstream::Context, replaced: &str) {
    let rotate = "/api/endpoints/shaped/secret/rotate";
    let (status, rotated) = api(n, "POST", rotate, Some("{\"grace\": \"1h\"}")).await;
    assert_eq!(status, 200, "{rotated}");
    let stored = stored_record(js, "shaped").await.expect("stored");
    assert_eq!(stored["secret"], json!([rotated["secret"], replaced]));
}

/// A file endpoint whose name a registry record also has (the record is not served)
/// keeps its delivery log readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_endpoint_shadowing_a_record_shows_its_log() {
    let s = Setup::start().await;
    let (n, js) = (&s.n, &s.js);
    let kv = js
        .get_key_value("NATSHOOK_ENDPOINTS")
        .await
        .expect("bucket");
    let record: Value = serde_json::from_str(&body("file", &s.rx)).unwrap();
    kv.put("file", serde_json::to_vec(&record).unwrap().into())
        .await
        .expect("put");
    deliver_org_1(js, &s.file_rx, 2, "f", 2).await;
    wait_until(
        Duration::from_secs(10),
        "the file endpoint's log",
        || async { logged_ids(n, "file").await.len() == 2 },
    )
    .await;
}

/// Creates runtime endpoint `acme` signing with `scheme`, then rotates its secret
/// with a grace of 6 s (after a grace that is no duration is refused): the old secret,
/// the new one, and when the rotation was answered.
async fn create_and_rotate(n: &Natshook, rx: &Receiver, scheme: &str) -> (String, String, Instant) {
    let mut endpoint = serde_json::from_str::<Value>(&body("acme", rx)).unwrap();
    endpoint["signature"] = json!({ "scheme": scheme });
    let (status, created) = api(n, "POST", "/api/endpoints", Some(&endpoint.to_string())).await;
    assert_eq!(status, 201, "{created}");
    let old = created["secret"].as_str().unwrap().to_string();
    wait_bound(n, "acme").await;
    let rotate = |grace: &'static str| {
        let body = json!({ "grace": grace }).to_string();
        async move { api(n, "POST", "/api/endpoints/acme/secret/rotate", Some(&body)).await }
    };
    let (status, err) = rotate("soon").await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["problems"][0]["field"], "grace");
    let (status, rotated) = rotate("6s").await;
    let rotated_at = Instant::now();
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_string();
    (old, new, rotated_at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_signs_beside_the_old_one_until_the_grace_ends() {
    let s = Setup::start().await;
    let (n, rx, js) = (&s.n, &s.rx, &s.js);
    let (old, new, rotated_at) = create_and_rotate(n, rx, "standard").await;
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

/// Publishes five `before` messages, then creates the runtime endpoint `name`; its
/// record as created.
async fn create_after_a_backlog(s: &Setup, name: &str) -> Value {
    publish_all(&s.js, tenant_leads("org_1", 5, "before")).await;
    // The cut compares JetStream's stored time with natshook's clock, in milliseconds.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, created) = api(&s.n, "POST", "/api/endpoints", Some(&body(name, &s.rx))).await;
    assert_eq!(status, 201, "{created}");
    created
}

/// A new runtime endpoint starts from its creation, as a registered webhook does
/// elsewhere: what the stream held before is acked without a request, unless the body
/// asks for it with `"skip_backlog": false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_runtime_endpoint_starts_from_its_creation_unless_it_asks_for_the_backlog() {
    let s = Setup::start().await;
    let (n, rx, js) = (&s.n, &s.rx, &s.js);
    let created = create_after_a_backlog(&s, "acme").await;
    assert!(created["skip_before"].is_string(), "{created}");
    let mut history = serde_json::from_str::<Value>(&body("history", rx)).unwrap();
    history["skip_backlog"] = false.into();
    let (status, created) = api(n, "POST", "/api/endpoints", Some(&history.to_string())).await;
    assert_eq!(status, 201, "{created}");
    assert!(created.get("skip_before").is_none(), "{created}");
    assert!(created.get("skip_backlog").is_none(), "{created}");
    let mut bad = serde_json::from_str::<Value>(&body("bad", rx)).unwrap();
    bad["skip_backlog"] = "yes".into();
    bad["events"] = json!([]);
    let (status, err) = api(n, "POST", "/api/endpoints", Some(&bad.to_string())).await;
    assert_eq!(status, 422, "{err}");
    // Every problem of the body, the endpoint's keys' too.
    assert_eq!(err["problems"][0]["field"], "skip_backlog", "{err}");
    assert_eq!(err["problems"][1]["field"], "events", "{err}");
    // The keys natshook writes itself: a far-future start would skip every message,
    // a far-future grace keep a replaced secret signing.
    let mut own = serde_json::from_str::<Value>(&body("own", rx)).unwrap();
    own["skip_before"] = "2999-01-01T00:00:00Z".into();
    own["skip_through"] = 1.into();
    own["previous_secrets_until"] = "2999-01-01T00:00:00Z".into();
    let (status, err) = api(n, "POST", "/api/endpoints", Some(&own.to_string())).await;
    assert_eq!(status, 422, "{err}");
    let fields: Vec<&str> = (err["problems"].as_array().unwrap().iter())
        .filter_map(|p| p["field"].as_str())
        .collect();
    assert_eq!(
        fields,
        ["skip_before", "skip_through", "previous_secrets_until"],
        "{err}"
    );
    // A key written twice: parsers keep one or the other, so neither is taken.
    let twice = body("twice", rx).replacen('{', r#"{"tenant": "org_9", "#, 1);
    let (status, err) = api(n, "POST", "/api/endpoints", Some(&twice)).await;
    assert_eq!(status, 400, "{err}");
    assert!(
        err["error"]
            .as_str()
            .is_some_and(|e| e.contains("'tenant' is written twice")),
        "{err}"
    );
    for key in ["skip_before", "skip_through", "previous_secrets_until"] {
        let patch = json!({ key: null }).to_string();
        let (status, err) = api(n, "PATCH", "/api/endpoints/acme", Some(&patch)).await;
        assert_eq!(status, 422, "{key}: {err}");
        assert_eq!(err["problems"][0]["field"], key, "{err}");
    }
    wait_bound(n, "acme").await;
    wait_bound(n, "history").await;

    publish_all(js, tenant_leads("org_1", 3, "after")).await;
    let ids_at = |path: &str| -> BTreeSet<String> {
        rx.received()
            .into_iter()
            .filter(|r| r.path == path)
            .map(|r| r.id().to_string())
            .collect()
    };
    wait_until(
        Duration::from_secs(20),
        "both endpoints' deliveries",
        || async { ids_at("/history").len() >= 8 && ids_at("/acme").len() >= 3 },
    )
    .await;
    // The backlog was there to deliver: the endpoint that asked for it got it.
    let acme = ids_at("/acme");
    assert!(acme.iter().all(|id| id.starts_with("after")), "{acme:?}");
    assert_eq!(
        ids_at("/history")
            .iter()
            .filter(|id| id.starts_with("before"))
            .count(),
        5
    );
}

/// The skipped backlog is what the stream held at the creation (its last sequence),
/// not what a clock says: natshook's clock and nats-server's differ, and a replica whose
/// clock runs ahead would otherwise skip the first messages after the creation. The
/// record's time is moved an hour ahead here, as such a clock would have written it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_backlog_ends_at_the_stream_s_last_message_whatever_the_clock() {
    let s = Setup::start().await;
    let (n, rx, js) = (&s.n, &s.rx, &s.js);
    let created = create_after_a_backlog(&s, "acme").await;
    let last = js
        .get_stream("EVENTS")
        .await
        .unwrap()
        .cached_info()
        .state
        .last_sequence;
    assert_eq!(created["skip_through"], last, "{created}");
    // A request may not set it (natshook writes it): a clock an hour ahead, as the
    // writing replica's might be.
    let ahead = std::time::SystemTime::now() + Duration::from_secs(3600);
    let patch = json!({ "skip_before": humantime::format_rfc3339_millis(ahead).to_string() });
    let (status, refused) = api(n, "PATCH", "/api/endpoints/acme", Some(&patch.to_string())).await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["problems"][0]["field"], "skip_before", "{refused}");
    edit_record(js, "acme", |v| {
        v["skip_before"] = patch["skip_before"].clone()
    })
    .await;
    wait_bound(n, "acme").await;
    publish_all(js, tenant_leads("org_1", 3, "after")).await;
    wait_until(
        Duration::from_secs(20),
        "the deliveries after the creation",
        || async { rx.received().len() >= 3 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids: BTreeSet<String> = rx.received().iter().map(|r| r.id().to_string()).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(ids.iter().all(|id| id.starts_with("after")), "{ids:?}");
}

/// A runtime endpoint that cannot bind (its stream at its consumer limit) is one
/// customer's webhook: it shows as not bound, and the process stays ready, so its
/// admin API and ingress stay in service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_endpoint_that_cannot_bind_leaves_the_process_ready() {
    let nats = NatsServer::start();
    let js = jetstream::new(nats.client().await);
    // Room for the unmapped counter and the file endpoint's consumer, no more.
    js.create_stream(jetstream::stream::Config {
        name: "EVENTS".into(),
        subjects: vec![
            "crm.lead.created".into(),
            "helpdesk.ticket.*".into(),
            "events.*.lead.created".into(),
        ],
        max_consumers: 2,
        ..Default::default()
    })
    .await
    .unwrap();
    let (file_rx, rx) = (Receiver::start().await, Receiver::start().await);
    let n = Natshook::start(&config(&nats, &file_rx, "")).await;
    let (status, created) = api(&n, "POST", "/api/endpoints", Some(&body("acme", &rx))).await;
    assert_eq!(status, 201, "{created}");
    wait_until(Duration::from_secs(20), "the refused bind logged", || {
        let logs = n.logs();
        async move { logs.contains("cannot bind consumer") }
    })
    .await;
    let (_, acme) = api(&n, "GET", "/api/endpoints/acme", None).await;
    assert_eq!(acme["bound"], false, "{acme}");
    assert_eq!(n.get("/readyz").await.map(|(s, _)| s), Ok(200));
}

/// Until natshook has started its endpoints and read the registry (here NATS is
/// unreachable at start), the routes on endpoints answer `503` with `Retry-After`,
/// not `404`: the endpoint asked for may well exist, and a list would lack it. A
/// change to a file endpoint is `409` all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_503_until_the_registry_is_open() {
    let (file_rx, rx) = (Receiver::start().await, Receiver::start().await);
    let nowhere = format!("nats://127.0.0.1:{}", free_port());
    let mut c = with_admin(TestConfig::new(nowhere.clone()).endpoint(
        "file",
        &file_rx.url("/file"),
        &["lead.created"],
        "",
    ));
    c.top = format!(
        "{}\n[registry]\nenabled = true\nmin_retry_delay = \"10ms\"\n",
        c.top
    );
    let n = Natshook::start_listening(&c.render()).await;
    let auth = format!("Bearer {TOKEN}");
    let json = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let acme = body("acme", &rx);
    for (method, path, body) in [
        ("GET", "/api/endpoints", None),
        ("GET", "/api/endpoints/acme", None),
        ("GET", "/api/endpoints/file", None),
        ("POST", "/api/endpoints/acme/pause", None),
        ("POST", "/api/endpoints/file/pause", None),
        ("POST", "/api/endpoints", Some(acme.as_str())),
        ("PATCH", "/api/endpoints/acme", Some("{\"enabled\": false}")),
        ("DELETE", "/api/endpoints/acme", None),
    ] {
        let ((status, err), headers) = n.api_with(method, path, &json, body).await;
        assert_eq!(status, 503, "{method} {path}: {err}");
        assert_eq!(headers.get("retry-after").unwrap(), "1");
        let error = err["error"].as_str().unwrap_or_default();
        assert!(error.contains("natshook is starting"), "{err}");
    }
    let ((status, err), _) = n
        .api_with("DELETE", "/api/endpoints/file", &json, None)
        .await;
    assert_eq!(status, 409, "{err}");
    // The log names the server it cannot reach.
    let server = nowhere.trim_start_matches("nats://").to_string();
    wait_until(Duration::from_secs(20), "the server named", || {
        let logs = n.logs();
        let server = server.clone();
        async move { logs.contains("NATS event") && logs.contains(&server) }
    })
    .await;
}

/// A bucket of more records than one batch applies (1,000) counts as read once every
/// record is applied, not after the first batch: until then the list answers `503`
/// ("starting") rather than a list that lacks the later batches' records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_of_several_batches_is_read_in_full_before_it_counts_as_read() {
    let nats = NatsServer::start();
    let (file_rx, rx) = (Receiver::start().await, Receiver::start().await);
    let config = config(&nats, &file_rx, "");
    // The first process makes the bucket.
    let maker = Natshook::start(&config).await;
    drop(maker);
    let js = jetstream::new(nats.client().await);
    let kv = js
        .get_key_value("NATSHOOK_ENDPOINTS")
        .await
        .expect("bucket");
    let names: Vec<String> = (0..10_000)
        .map(|i| format!("r{i:05}"))
        .chain(["zz-last".to_string()])
        .collect();
    for name in &names {
        kv.put(name, body(name, &rx).into_bytes().into())
            .await
            .expect("put");
    }

    let n = Natshook::start_listening(&config).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, got) = api(&n, "GET", "/api/endpoints?after=r09998", None).await;
        if status == 200 {
            let listed: Vec<&str> = got["endpoints"]
                .as_array()
                .map(|a| a.iter().filter_map(|e| e["name"].as_str()).collect())
                .unwrap_or_default();
            assert_eq!(listed, ["r09999", "zz-last"], "listed as read: {got}");
            break;
        }
        assert_eq!(status, 503, "{got}");
        assert!(Instant::now() < deadline, "the registry never read");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// With NATS gone, a create answers `503` with `Retry-After`, and its error claims no
/// earlier endpoint of the name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_while_nats_is_down_is_503_and_blames_no_former_endpoint() {
    let mut s = Setup::start().await;
    s._nats.kill();
    let auth = format!("Bearer {TOKEN}");
    let json = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let ((status, err), headers) =
        s.n.api_with("POST", "/api/endpoints", &json, Some(&body("acme", &s.rx)))
            .await;
    assert_eq!(status, 503, "{err}");
    assert_eq!(headers.get("retry-after").unwrap(), "1");
    let error = err["error"].as_str().unwrap_or_default();
    assert!(error.contains("may have left"), "{err}");
    assert!(!error.contains("former endpoint's"), "{err}");
}

/// A deleted endpoint's delivery log and dead letters go with it: an endpoint created
/// later under the same name, by another tenant say, starts with an empty log and has
/// nothing to replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_endpoint_s_delivery_log_and_dead_letters_go_with_it() {
    let s = Setup::start().await;
    let (n, rx, js) = (&s.n, &s.rx, &s.js);
    let log = || async {
        let (status, body) = api(n, "GET", "/api/endpoints/reuse/deliveries", None).await;
        assert_eq!(status, 200, "{body}");
        body.as_array().map_or(0, Vec::len)
    };
    let (status, created) = api(n, "POST", "/api/endpoints", Some(&body("reuse", rx))).await;
    assert_eq!(status, 201, "{created}");
    wait_bound(n, "reuse").await;
    deliver_org_1(js, rx, 2, "first", 2).await;
    wait_until(Duration::from_secs(10), "the log's records", || async {
        log().await >= 2
    })
    .await;
    rx.set(|r| match r.id().starts_with("dead") {
        true => Reply::status(500),
        false => Reply::ok(),
    });
    publish_all(js, tenant_leads("org_1", 1, "dead")).await;
    wait_until(Duration::from_secs(20), "a dead letter", || async {
        n.dead_letters("reuse").len() == 1
    })
    .await;

    delete_until_gone(n, js, "reuse").await;
    let mut again = serde_json::from_str::<Value>(&body("reuse", rx)).unwrap();
    again["tenant"] = "org_2".into();
    create_once_removed(n, &again.to_string()).await;
    wait_bound(n, "reuse").await;
    wait_until(Duration::from_secs(10), "an empty log", || async {
        log().await == 0
    })
    .await;
    wait_until(Duration::from_secs(10), "no dead letters", || async {
        n.dead_letters("reuse").is_empty()
    })
    .await;
    let tried = |rx: &Receiver| rx.received().iter().filter(|r| r.id() == "dead-0").count();
    let before = tried(rx);
    let (status, replay) = api(n, "POST", "/api/endpoints/reuse/dlq/replay", Some("{}")).await;
    assert_eq!(status, 200, "{replay}");
    assert_eq!(replay["replayed"], serde_json::json!([]), "{replay}");
    assert_eq!(tried(rx), before);
}

/// Creates runtime endpoint `name` on `n`, delivers two messages to it and has a
/// third dead-lettered (the receiver answers 500 to `dead-*`): a log and a dead letter
/// for a deleted endpoint to leave behind.
async fn with_log_and_dead_letter(
    n: &Natshook,
    js: &jetstream::Context,
    rx: &Receiver,
    name: &str,
) {
    let (status, created) = api(n, "POST", "/api/endpoints", Some(&body(name, rx))).await;
    assert_eq!(status, 201, "{created}");
    wait_bound(n, name).await;
    deliver_org_1(js, rx, 2, "first", 2).await;
    rx.set(|r| match r.id().starts_with("dead") {
        true => Reply::status(500),
        false => Reply::ok(),
    });
    publish_all(js, tenant_leads("org_1", 1, "dead")).await;
    wait_until(Duration::from_secs(20), "a dead letter", || async {
        n.dead_letters(name).len() == 1
    })
    .await;
}

/// Creates the endpoint of `body` once a deleted one of its name is removed (`409`
/// until then); returns how many times it was told to wait.
async fn create_once_removed(n: &Natshook, body: &str) -> usize {
    let started = Instant::now();
    let mut refused = 0;
    loop {
        let (status, created) = api(n, "POST", "/api/endpoints", Some(body)).await;
        let removing =
            (created["error"].as_str()).is_some_and(|e| e.contains("still being removed"));
        match status {
            201 => return refused,
            409 if removing => refused += 1,
            _ => panic!("{status} {created}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never created again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A name created again at once, while the deleted endpoint's last delivery is still
/// in flight, starts with nothing of it (another customer's, say): the create answers
/// `409` until the deleted one is removed, then removes its log, dead letters and
/// pause before storing the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_created_again_at_once_starts_with_nothing_of_the_deleted_endpoint() {
    let s = Setup::start().await;
    let (n, rx, js) = (&s.n, &s.rx, &s.js);
    with_log_and_dead_letter(n, js, rx, "reuse").await;
    rx.set(|r| match r.id() {
        id if id.starts_with("slow") => Reply::status(500).delay(Duration::from_secs(3)),
        _ => Reply::ok(),
    });
    let (status, paused) = api(n, "POST", "/api/endpoints/reuse/pause", None).await;
    assert_eq!(status, 200, "{paused}");
    let (status, resumed) = api(n, "POST", "/api/endpoints/reuse/resume", None).await;
    assert_eq!(status, 200, "{resumed}");
    publish_all(js, tenant_leads("org_1", 1, "slow")).await;
    wait_until(Duration::from_secs(10), "the slow attempt sent", || async {
        rx.received().iter().any(|r| r.id() == "slow-0")
    })
    .await;
    let (status, paused) = api(n, "POST", "/api/endpoints/reuse/pause", None).await;
    assert_eq!(status, 200, "{paused}");

    // Deleted while its last attempt is in flight (it fails: a dead letter and a log
    // record written after the delete), and created again for another tenant at once.
    let (status, deleted) = api(n, "DELETE", "/api/endpoints/reuse", None).await;
    assert_eq!(status, 204, "{deleted}");
    let mut again = serde_json::from_str::<Value>(&body("reuse", rx)).unwrap();
    again["tenant"] = "org_2".into();
    let refused = create_once_removed(n, &again.to_string()).await;
    assert!(
        refused > 0,
        "created again before the deleted one was removed"
    );
    wait_bound(n, "reuse").await;
    let (_, one) = api(n, "GET", "/api/endpoints/reuse", None).await;
    assert_eq!(one["paused"], false, "{one}");
    let (status, log) = api(n, "GET", "/api/endpoints/reuse/deliveries", None).await;
    assert_eq!(status, 200, "{log}");
    assert_eq!(log, json!([]), "the deleted endpoint's log");
    assert!(
        n.dead_letters("reuse").is_empty(),
        "the deleted endpoint's dead letters"
    );
    let (status, replay) = api(n, "POST", "/api/endpoints/reuse/dlq/replay", Some("{}")).await;
    assert_eq!(status, 200, "{replay}");
    assert_eq!(replay["replayed"], json!([]), "{replay}");
}

/// What a deleted endpoint left where no process removed it (deleted by another tool
/// while none ran) is removed when the name is created again through the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_created_again_after_a_delete_nobody_served_starts_with_nothing() {
    created_again_after_a_delete_nobody_served(CreatedBy::Api).await;
}

/// The same through `natshook endpoints rm` and `add` while no natshook runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_created_again_from_the_cli_starts_with_nothing() {
    created_again_after_a_delete_nobody_served(CreatedBy::Cli).await;
}

enum CreatedBy {
    Api,
    Cli,
}

async fn created_again_after_a_delete_nobody_served(by: CreatedBy) {
    let mut s = Setup::start().await;
    let (rx, js) = (&s.rx, &s.js);
    with_log_and_dead_letter(&s.n, js, rx, "left").await;
    let (status, paused) = api(&s.n, "POST", "/api/endpoints/left/pause", None).await;
    assert_eq!(status, 200, "{paused}");
    s.n.sigkill();
    let mut again = serde_json::from_str::<Value>(&body("left", rx)).unwrap();
    again["tenant"] = "org_2".into();

    let n = match by {
        CreatedBy::Api => {
            let kv = js
                .get_key_value("NATSHOOK_ENDPOINTS")
                .await
                .expect("bucket");
            kv.delete("left").await.expect("delete");
            let n = s.another().await;
            let (status, log) = api(&n, "GET", "/api/endpoints/left/deliveries", None).await;
            assert_eq!(status, 404, "{log}");
            assert_eq!(n.dead_letters("left").len(), 1, "left behind");
            let (status, created) =
                api(&n, "POST", "/api/endpoints", Some(&again.to_string())).await;
            assert_eq!(status, 201, "{created}");
            n
        }
        CreatedBy::Cli => {
            let out = s.n.cli(&["endpoints", "rm", "left"]);
            assert!(out.status.success(), "{out:?}");
            let json = again.to_string();
            let out =
                s.n.cli_with_stdin(&["endpoints", "add", "--json", "-"], json.as_bytes());
            assert!(out.status.success(), "{out:?}");
            s.another().await
        }
    };
    wait_bound(&n, "left").await;
    let (_, one) = api(&n, "GET", "/api/endpoints/left", None).await;
    assert_eq!(one["paused"], false, "{one}");
    let (status, log) = api(&n, "GET", "/api/endpoints/left/deliveries", None).await;
    assert_eq!(status, 200, "{log}");
    assert_eq!(log, json!([]), "the deleted endpoint's log");
    assert!(
        n.dead_letters("left").is_empty(),
        "the deleted endpoint's dead letters"
    );
}

/// `natshook dlq replay` finds a runtime endpoint in the registry and delivers its
/// dead letters as the record stands; a disabled one is refused and keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_replays_a_runtime_endpoints_dead_letters() {
    let s = Setup::start().await;
    let (n, rx) = (&s.n, &s.rx);
    with_log_and_dead_letter(n, &s.js, rx, "kept").await;
    let dead = n.dead_letters("kept");
    let id = dead[0]["id"].as_str().expect("id").to_string();
    rx.set(|_| Reply::ok());

    let off = Some(r#"{"enabled": false}"#);
    let (status, patched) = api(n, "PATCH", "/api/endpoints/kept", off).await;
    assert_eq!(status, 200, "{patched}");
    let out = n.cli(&["dlq", "replay", "--endpoint", "kept", "--all"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("endpoint 'kept' is disabled"),
        "{out:?}"
    );
    assert_eq!(n.dead_letters("kept").len(), 1, "kept while disabled");

    let on = Some(r#"{"enabled": true}"#);
    let (status, patched) = api(n, "PATCH", "/api/endpoints/kept", on).await;
    assert_eq!(status, 200, "{patched}");
    let before = rx.delivered_ids().get(&id).copied().unwrap_or(0);
    let out = n.cli(&["dlq", "replay", "--endpoint", "kept", "--all"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(rx.delivered_ids().get(&id).copied(), Some(before + 1));
    assert!(n.dead_letters("kept").is_empty(), "removed after the 2xx");

    let out = n.cli(&["dlq", "replay", "--endpoint", "nobody", "--all"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in the config or the registry"),
        "{out:?}"
    );
    // Listing takes any name (records outlive endpoints), and says when it is none.
    let out = n.cli(&["dlq", "list", "--endpoint", "nobody"]);
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no endpoint in the config is named 'nobody'"),
        "{err}"
    );
}

/// A file endpoint taken out of the file keeps its log and dead letters (they are the
/// operator's to replay or export); a runtime endpoint created under its name,
/// another customer's, starts with none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_endpoint_named_as_a_removed_file_endpoint_starts_with_nothing() {
    let s = Setup::start_with("max_attempts = 1").await;
    let (n, js) = (&s.n, &s.js);
    s.file_rx.set(|_| Reply::status(500));
    publish_all(js, tenant_leads("org_1", 1, "dead")).await;
    wait_until(Duration::from_secs(20), "a dead letter", || async {
        n.dead_letters("file").len() == 1
    })
    .await;
    // While the file has it, the name is refused and what it has stays.
    let taken = body("file", &s.rx);
    let out = n.cli_with_stdin(&["endpoints", "add", "--json", "-"], taken.as_bytes());
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(n.dead_letters("file").len(), 1, "the file endpoint's own");
    let mut without = with_admin(TestConfig::new(s._nats.url()).mapping(
        "events.*.lead.created",
        "lead.created",
        "tenant = \"{2}\"",
    ));
    without.top = format!(
        "{}\n[registry]\nenabled = true\nmin_retry_delay = \"10ms\"\n",
        without.top
    );
    reload(
        n,
        &without.render(),
        "removed=[\"file\"]",
        "the file endpoint removed",
    )
    .await;
    assert_eq!(n.dead_letters("file").len(), 1, "kept for the operator");

    let mut again = serde_json::from_str::<Value>(&body("file", &s.rx)).unwrap();
    again["tenant"] = "org_2".into();
    create_once_removed(n, &again.to_string()).await;
    wait_bound(n, "file").await;
    assert!(
        n.dead_letters("file").is_empty(),
        "the file endpoint's dead letters"
    );
    // Said where the operator looks, with the count.
    assert!(
        n.logs().lines().any(|l| l
            .contains("dead letters of a former endpoint under this name removed")
            && l.contains("endpoint=file")
            && l.contains("records=1")),
        "{}",
        n.logs()
    );
    let (status, log) = api(n, "GET", "/api/endpoints/file/deliveries", None).await;
    assert_eq!(status, 200, "{log}");
    assert_eq!(log, json!([]), "the file endpoint's log");
}

/// A deleted endpoint's series and pause go with it once it has drained: a deleted
/// endpoint that was paused no longer reads `natshook_endpoint_paused 1` (an alert
/// firing for good), and one created again under the name, another customer's say,
/// starts from nothing, unpaused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_endpoint_s_series_and_pause_go_with_it() {
    let s = Setup::start().await;
    let (n, rx, js) = (&s.n, &s.rx, &s.js);
    let (status, created) = api(n, "POST", "/api/endpoints", Some(&body("gone", rx))).await;
    assert_eq!(status, 201, "{created}");
    wait_bound(n, "gone").await;
    deliver_org_1(js, rx, 2, "first", 2).await;
    let (status, paused) = api(n, "POST", "/api/endpoints/gone/pause", None).await;
    assert_eq!(status, 200, "{paused}");
    // The receiver counts a request when it arrives, natshook once the answer is read.
    wait_until(Duration::from_secs(10), "the series of gone", || async {
        let metrics = n.metrics().await;
        [
            "natshook_endpoint_paused{endpoint=\"gone\"} 1",
            "natshook_deliveries_total{endpoint=\"gone\",event=\"lead.created\",outcome=\"success\"} 2",
        ]
        .iter()
        .all(|series| metrics.contains(series))
    })
    .await;

    delete_until_gone(n, js, "gone").await;
    wait_until(Duration::from_secs(10), "no series of gone", || async {
        !n.metrics().await.contains("endpoint=\"gone\"")
    })
    .await;
    assert!(n.metrics().await.contains("endpoint=\"file\""));

    create_once_removed(n, &body("gone", rx)).await;
    wait_bound(n, "gone").await;
    let metrics = n.metrics().await;
    assert!(
        metrics.contains("natshook_endpoint_paused{endpoint=\"gone\"} 0"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("natshook_deliveries_total{endpoint=\"gone\""),
        "{metrics}"
    );
    deliver_org_1(js, rx, 1, "second", 3).await;
}

/// An endpoint deleted while disabled has no worker to drain; its consumer, log and
/// pause go all the same, so one created again under the name starts unpaused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_deleted_while_disabled_leaves_nothing_behind() {
    let s = Setup::start().await;
    let (n, rx, js) = (&s.n, &s.rx, &s.js);
    let (status, created) = api(n, "POST", "/api/endpoints", Some(&body("off", rx))).await;
    assert_eq!(status, 201, "{created}");
    wait_bound(n, "off").await;
    deliver_org_1(js, rx, 1, "first", 1).await;
    let (status, paused) = api(n, "POST", "/api/endpoints/off/pause", None).await;
    assert_eq!(status, 200, "{paused}");
    let off = r#"{"enabled": false}"#;
    let (status, changed) = api(n, "PATCH", "/api/endpoints/off", Some(off)).await;
    assert_eq!(status, 200, "{changed}");
    wait_until(Duration::from_secs(10), "the worker stopped", || async {
        !n.metrics().await.contains("endpoint=\"off\"")
    })
    .await;
    let stream = js.get_stream("EVENTS").await.unwrap();
    assert!(
        stream.consumer_info("natshook-off").await.is_ok(),
        "a disabled endpoint keeps its consumer"
    );

    delete_until_gone(n, js, "off").await;
    // The delete takes the earlier revisions (URL, headers, secret) with it: the
    // bucket keeps one marker without a value.
    let registry = js.get_stream("KV_NATSHOOK_ENDPOINTS").await.unwrap();
    let subject = "$KV.NATSHOOK_ENDPOINTS.off";
    assert_eq!(messages_under(registry.clone(), subject).await, 1);
    let marker = registry
        .get_last_raw_message_by_subject(subject)
        .await
        .unwrap();
    assert!(marker.payload.is_empty(), "{marker:?}");
    create_once_removed(n, &body("off", rx)).await;
    wait_bound(n, "off").await;
    let (_, state) = api(n, "GET", "/api/endpoints/off", None).await;
    assert_eq!(state["paused"], false, "{state}");
    deliver_org_1(js, rx, 1, "second", 2).await;
}

/// The endpoint's last success, failure and error are the endpoint's: a change that
/// restarts its worker (a new URL, a rotated secret) keeps them in what `GET` shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_s_last_success_outlives_a_restart_of_its_worker() {
    let s = Setup::start().await;
    let (n, rx, js) = (&s.n, &s.rx, &s.js);
    let (status, created) = api(n, "POST", "/api/endpoints", Some(&body("kept", rx))).await;
    assert_eq!(status, 201, "{created}");
    wait_bound(n, "kept").await;
    publish_org_1(js, 1, "kept").await;
    wait_until(Duration::from_secs(20), "last_success recorded", || async {
        let (_, state) = api(n, "GET", "/api/endpoints/kept", None).await;
        state["last_success"].is_string()
    })
    .await;
    let (_, state) = api(n, "GET", "/api/endpoints/kept", None).await;
    let last = state["last_success"].clone();
    let starts = || {
        n.logs()
            .lines()
            .filter(|l| l.contains("starting endpoint") && l.contains("endpoint=kept"))
            .count()
    };
    let before = starts();
    patch_ok(n, "kept", &json!({"url": rx.url("/kept-v2")}).to_string()).await;
    wait_until(Duration::from_secs(10), "the worker restarted", || async {
        starts() > before
    })
    .await;
    let (_, state) = api(n, "GET", "/api/endpoints/kept", None).await;
    assert_eq!(state["last_success"], last, "{state}");
}

/// Like [`Setup`], with `[delivery] fan_out` on.
struct FanOutSetup {
    _nats: NatsServer,
    file_rx: Receiver,
    rx: Receiver,
    n: Natshook,
    js: jetstream::Context,
    config: String,
}

impl FanOutSetup {
    async fn start() -> Self {
        let nats = NatsServer::start();
        let file_rx = Receiver::start().await;
        let config = format!(
            "{}\n[delivery]\nfan_out = true\n",
            config(&nats, &file_rx, "")
        );
        let n = Natshook::start(&config).await;
        let js = jetstream::new(nats.client().await);
        Self {
            _nats: nats,
            file_rx,
            rx: Receiver::start().await,
            n,
            js,
            config,
        }
    }
}

/// With `fan_out`, what is stored while no process runs reaches the runtime endpoints
/// once one starts again. The fan-out acks a message once it is copied for the
/// endpoints it knows, so it must not start before the registry's records are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fan_out_what_arrives_while_no_process_runs_reaches_runtime_endpoints() {
    let FanOutSetup {
        _nats,
        file_rx,
        rx,
        n,
        js,
        config,
    } = FanOutSetup::start().await;
    let (status, created) = api(&n, "POST", "/api/endpoints", Some(&body("kept", &rx))).await;
    assert_eq!(status, 201, "{created}");
    deliver_org_1(&js, &rx, 1, "served", 1).await;
    drop(n);
    created_an_hour_ago(&js, "kept").await;
    publish_all(&js, tenant_leads("org_1", 20, "stopped")).await;
    let _n = Natshook::start(&config).await;
    for (rx, path) in [(&rx, "/kept"), (&file_rx, "/file")] {
        rx.wait_for(
            Duration::from_secs(20),
            "every lead after the restart",
            |r| r.delivered_ids().len() == 21,
        )
        .await;
        assert!(rx.received().iter().all(|r| r.path == path));
    }
}

/// Moves the creation of runtime endpoint `name` an hour back in its record, as most of
/// a platform's endpoints were created: no catch-up of a new endpoint
/// ([`Backlog::RECENT`]) then stands in for what the fan-out must do itself.
async fn created_an_hour_ago(js: &jetstream::Context, name: &str) {
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    edit_record(js, name, |record| {
        record["skip_before"] = humantime::format_rfc3339(hour_ago).to_string().into();
    })
    .await;
}

/// With `fan_out`, a replica that starts beside a running one under steady traffic
/// takes its share of the fan-out's messages only once it serves the registry's
/// endpoints: a runtime endpoint gets every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fan_out_a_replica_starting_under_traffic_takes_nothing_from_runtime_endpoints() {
    let s = FanOutSetup::start().await;
    let (n, rx, js) = (&s.n, &s.rx, &s.js);
    let (status, created) = api(n, "POST", "/api/endpoints", Some(&body("kept", rx))).await;
    assert_eq!(status, 201, "{created}");
    deliver_org_1(js, rx, 1, "served", 1).await;
    // The change restarts the endpoint's worker: done before the traffic starts.
    created_an_hour_ago(js, "kept").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    deliver_org_1(js, rx, 1, "restarted", 2).await;
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = publish_steadily(js, &stop);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let replica = Natshook::start(&s.config).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    let sent = publisher.await.unwrap();
    let want: BTreeSet<String> = sent.into_iter().map(|(id, _)| id).collect();
    rx.wait_for(Duration::from_secs(40), "every message at /kept", |r| {
        want.is_subset(&delivered_on(r, "/kept", "steady"))
    })
    .await;
    // The new replica took part, or the test showed nothing.
    let m = replica.metrics().await;
    let delivered: f64 = (m.lines())
        .filter(|l| l.starts_with("natshook_deliveries_total{") && l.contains("success"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(delivered > 0.0, "the new replica delivered nothing: {m}");
}

/// PATCHes runtime endpoint `name` through `n` with `body`, expecting `200`.
async fn patch_ok(n: &Natshook, name: &str, body: &str) {
    let (status, changed) = api(n, "PATCH", &format!("/api/endpoints/{name}"), Some(body)).await;
    assert_eq!(status, 200, "{changed}");
}

/// With `fan_out`, deliveries the lane started outlive the deleted endpoint's drain:
/// their failures must not land in the log that goes with it, where an endpoint
/// created again under the name (another customer's, say) would read them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fan_out_no_backlog_is_promised_and_a_deleted_endpoint_s_late_failures_stay_out_of_the_next_one_s_log(
) {
    let nats = NatsServer::start();
    let file_rx = Receiver::start().await;
    let slow = Receiver::with(|_| Reply::status(500).delay(Duration::from_millis(400))).await;
    let config = format!(
        "{}\n[delivery]\nfan_out = true\n",
        config(&nats, &file_rx, "")
    );
    let n = &Natshook::start(&config).await;
    let js = jetstream::new(nats.client().await);
    // The fan-out copies what arrives once an endpoint is served, never the backlog.
    let mut backlog: Value = serde_json::from_str(&body("late", &slow)).unwrap();
    backlog["skip_backlog"] = false.into();
    let (status, err) = api(n, "POST", "/api/endpoints", Some(&backlog.to_string())).await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(
        problem_fields(&err),
        BTreeSet::from(["skip_backlog".to_string()])
    );
    let (status, created) = api(n, "POST", "/api/endpoints", Some(&body("late", &slow))).await;
    assert_eq!(status, 201, "{created}");
    // Until the endpoint is served, a lead stored now would not be copied to it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    publish_all(&js, tenant_leads("org_1", 5, "late")).await;
    slow.wait_for(Duration::from_secs(20), "requests in flight", |r| {
        r.count() >= 3
    })
    .await;
    let (status, gone) = api(n, "DELETE", "/api/endpoints/late", None).await;
    assert_eq!(status, 204, "{gone}");
    // The requests in flight answer 400 ms later; the cleanup runs meanwhile.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, created) = api(n, "POST", "/api/endpoints", Some(&body("late", &file_rx))).await;
    assert_eq!(status, 201, "{created}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, log) = api(n, "GET", "/api/endpoints/late/deliveries", None).await;
    assert_eq!(status, 200, "{log}");
    assert_eq!(log.as_array().map_or(0, Vec::len), 0, "{log}");
}

/// Publishes `org_1` leads (ids `steady-<i>`) every 2 ms until `stop`; the task ends
/// with each id and its stream sequence.
fn publish_steadily(
    js: &jetstream::Context,
    stop: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(String, u64)>> {
    let (js, stop) = (js.clone(), Arc::clone(stop));
    tokio::spawn(async move {
        let mut sent = Vec::new();
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let id = format!("steady-{i}");
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
            let ack = js
                .publish_with_headers(
                    "events.org_1.lead.created",
                    headers,
                    bytes::Bytes::from(format!("{{\"lead\":{i}}}")),
                )
                .await
                .expect("publish")
                .await
                .expect("stored");
            sent.push((id, ack.sequence));
            i += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        sent
    })
}

/// With `fan_out`, registry changes go on under steady traffic without holding any
/// message of the other endpoints back: the fan-out's pull goes on under the new
/// targets, so nothing it had brought waits out its ack timer (30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fan_out_registry_changes_hold_no_message_back() {
    let s = FanOutSetup::start().await;
    let change = |i| json!({ "description": format!("change {i}") });
    let checked = ["steady"];
    changes_under_traffic_hold_no_message_back(&s.n, &s.rx, &s.js, change, &checked, None).await;
}

/// With `fan_out`, an endpoint that changes under steady traffic (a new `timeout`
/// starts a new worker for it) holds none of its own messages back either: the new
/// worker reads on from the old one's pull, so nothing the server still sends to it
/// waits out its ack timer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fan_out_an_endpoint_restarted_under_traffic_holds_none_of_its_messages_back() {
    let s = FanOutSetup::start().await;
    let change = |i| json!({ "timeout": format!("{}s", 5 + i) });
    let both = ["steady", "toggled"];
    changes_under_traffic_hold_no_message_back(&s.n, &s.rx, &s.js, change, &both, None).await;
}

/// The same without `fan_out`, where every endpoint reads a consumer of its own; here
/// each change also sets another `concurrency`, so the new worker pulls other batches
/// and reads the old pull beside its own until that falls silent. The old pulls ask
/// for nothing more meanwhile: under steady traffic they would never fall silent, and
/// each change would add one for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_restarted_under_traffic_holds_none_of_its_messages_back() {
    let s = Setup::start().await;
    let change = |i| json!({ "timeout": format!("{}s", 5 + i), "concurrency": 16 + 4 * i });
    let both = ["steady", "toggled"];
    let pulls = Some("natshook-toggled");
    changes_under_traffic_hold_no_message_back(&s.n, &s.rx, &s.js, change, &both, pulls).await;
}

/// Creates runtime endpoints `steady` and `toggled` on `rx`, PATCHes `toggled` with
/// `change(0)` to `change(11)` under steady traffic, and expects every message on
/// each of `checked` within ten seconds. With `pulls`, a consumer on the source
/// stream, expects it to hold at most two waiting pull requests (the current
/// stream's) within 20 s of the changes, while the traffic goes on.
async fn changes_under_traffic_hold_no_message_back(
    n: &Natshook,
    rx: &Receiver,
    js: &jetstream::Context,
    change: impl Fn(usize) -> Value,
    checked: &[&str],
    pulls: Option<&str>,
) {
    for name in ["steady", "toggled"] {
        let (status, created) = api(n, "POST", "/api/endpoints", Some(&body(name, rx))).await;
        assert_eq!(status, 201, "{created}");
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = publish_steadily(js, &stop);
    for i in 0..12 {
        patch_ok(n, "toggled", &change(i).to_string()).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if let Some(consumer) = pulls {
        // The old pulls' requests end as the traffic fills them, well before they
        // expire (30 s); pulls that kept asking would never get there.
        let stream = js.get_stream("EVENTS").await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let info = stream.consumer_info(consumer).await.unwrap();
            if info.num_waiting <= 2 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} pull requests waiting",
                info.num_waiting
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let sent = publisher.await.unwrap();
    let want: BTreeSet<String> = sent.into_iter().map(|(id, _)| id).collect();
    for name in checked {
        rx.wait_for(
            Duration::from_secs(10),
            &format!("every message on {name} within seconds"),
            |r| want.is_subset(&delivered_on(r, &format!("/{name}"), "steady")),
        )
        .await;
    }
}

/// With `fan_out`, a new endpoint joins the fan-out's targets a moment after the
/// `201`: what was stored in between is copied for it once it does, so under steady
/// traffic it gets every message after its `skip_through`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fan_out_a_new_endpoint_gets_every_message_from_its_creation_on() {
    every_message_from_the_creation_on(false).await;
}

/// The same for a new `ordered` endpoint: its consumer on the source stream starts
/// right after its `skip_through`, not where the fan-out stood when it heard of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fan_out_a_new_ordered_endpoint_gets_every_message_from_its_creation_on() {
    every_message_from_the_creation_on(true).await;
}

async fn every_message_from_the_creation_on(ordered: bool) {
    let s = FanOutSetup::start().await;
    let (n, rx, js) = (&s.n, &s.rx, &s.js);
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = publish_steadily(js, &stop);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut steady: Value = serde_json::from_str(&body("steady", rx)).unwrap();
    steady["ordered"] = ordered.into();
    let (status, created) = api(n, "POST", "/api/endpoints", Some(&steady.to_string())).await;
    assert_eq!(status, 201, "{created}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let sent = publisher.await.unwrap();
    let through = created["skip_through"].as_u64().expect("skip_through");
    let want: BTreeSet<String> = sent
        .iter()
        .filter(|(_, seq)| *seq > through)
        .map(|(id, _)| id.clone())
        .collect();
    assert!(
        want.len() > 50,
        "{} messages after the creation",
        want.len()
    );
    rx.wait_for(
        Duration::from_secs(20),
        "every message after the creation",
        |r| {
            let got: BTreeSet<String> = r.delivered_ids().into_keys().collect();
            want.is_subset(&got)
        },
    )
    .await;
    let early = sent
        .iter()
        .filter(|(_, seq)| *seq <= through)
        .any(|(id, _)| rx.delivered_ids().contains_key(id));
    assert!(!early, "a message stored before the creation was delivered");
    // The catch-up's copies and the fan-out's go to the same stream: one each.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let twice: Vec<String> = rx
        .received()
        .iter()
        .filter(|r| r.nth_for_id > 1)
        .map(|r| r.id().to_string())
        .collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
}

/// With `fan_out`, a disabled endpoint's copies wait on the work stream as its
/// messages wait in the source stream without it: enabling it delivers what arrived
/// while it was off (one created disabled too), and enabling with `skip_backlog`
/// skips them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fan_out_a_disabled_endpoint_gets_what_arrived_while_it_was_off() {
    let s = FanOutSetup::start().await;
    let (n, rx, js) = (&s.n, &s.rx, &s.js);
    let patch = |name: &'static str, body: String| async move { patch_ok(n, name, &body).await };
    let stopped = |name: &'static str| async move {
        wait_until(Duration::from_secs(10), "the worker stopped", || async {
            !n.metrics().await.contains(&format!("endpoint=\"{name}\""))
        })
        .await;
        // The fan-out takes the change in a moment after the worker stops.
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let (status, created) = api(n, "POST", "/api/endpoints", Some(&body("toggled", rx))).await;
    assert_eq!(status, 201, "{created}");
    let mut born_off: Value = serde_json::from_str(&body("born-off", rx)).unwrap();
    born_off["enabled"] = false.into();
    let (status, created) = api(n, "POST", "/api/endpoints", Some(&born_off.to_string())).await;
    assert_eq!(status, 201, "{created}");
    // Created long ago, as far as the fan-out can tell: a recent creation would have
    // whatever it missed copied from the source stream when enabled.
    let long_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    let old = humantime::format_rfc3339_millis(long_ago).to_string();
    for name in ["toggled", "born-off"] {
        edit_record(js, name, |v| v["skip_before"] = json!(old)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    publish_all(js, tenant_leads("org_1", 3, "on")).await;
    let on = ids("on", 3);
    rx.wait_for(Duration::from_secs(20), "the first leads", |r| {
        delivered_on(r, "/toggled", "on") == on
    })
    .await;

    patch("toggled", r#"{"enabled": false}"#.into()).await;
    stopped("toggled").await;
    publish_all(js, tenant_leads("org_1", 20, "off")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        delivered_on(rx, "/toggled", "off").is_empty(),
        "delivered while disabled"
    );
    patch("toggled", r#"{"enabled": true}"#.into()).await;
    patch("born-off", r#"{"enabled": true}"#.into()).await;
    let off = ids("off", 20);
    rx.wait_for(Duration::from_secs(20), "what arrived while off", |r| {
        delivered_on(r, "/toggled", "off") == off
            && delivered_on(r, "/born-off", "on") == on
            && delivered_on(r, "/born-off", "off") == off
    })
    .await;

    patch("toggled", r#"{"enabled": false}"#.into()).await;
    stopped("toggled").await;
    publish_all(js, tenant_leads("org_1", 5, "skipped")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    patch(
        "toggled",
        r#"{"enabled": true, "skip_backlog": true}"#.into(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    publish_all(js, tenant_leads("org_1", 3, "after")).await;
    let after = ids("after", 3);
    rx.wait_for(Duration::from_secs(20), "the leads after the enable", |r| {
        delivered_on(r, "/toggled", "after") == after
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        delivered_on(rx, "/toggled", "skipped").is_empty(),
        "a skipped backlog was delivered"
    );
    assert_eq!(delivered_on(rx, "/born-off", "skipped"), ids("skipped", 5));

    // Deleted while disabled, it leaves no copies behind.
    patch("born-off", r#"{"enabled": false}"#.into()).await;
    stopped("born-off").await;
    publish_all(js, tenant_leads("org_1", 4, "orphan")).await;
    let held = || copies_of(js, "born-off");
    wait_until(Duration::from_secs(10), "copies held", || async {
        held().await >= 4
    })
    .await;
    let (status, gone) = api(n, "DELETE", "/api/endpoints/born-off", None).await;
    assert_eq!(status, 204, "{gone}");
    wait_until(Duration::from_secs(10), "the copies removed", || async {
        held().await == 0
    })
    .await;
}

/// Publishes `big`, whose payload is 300 bytes under the server's `max_payload`
/// (a copy for an endpoint with a 121-character name does not fit, the file
/// endpoint's does), then `small`, and waits for both at the file endpoint. Returns
/// the length of `big`'s payload.
async fn publish_big_and_small(s: &FanOutSetup) -> usize {
    let room = s._nats.client().await.server_info().max_payload - 300;
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(room - 10));
    publish_all(
        &s.js,
        vec![
            (
                "events.org_1.lead.created".into(),
                bytes::Bytes::from(big),
                Some("big".into()),
            ),
            (
                "events.org_1.lead.created".into(),
                bytes::Bytes::from_static(b"{}"),
                Some("small".into()),
            ),
        ],
    )
    .await;
    s.file_rx
        .wait_for(Duration::from_secs(20), "both at the file endpoint", |r| {
            delivered_on(r, "/file", "") == ["big", "small"].map(String::from).into()
        })
        .await;
    room
}

/// With `fan_out`, a message whose copy for a disabled endpoint would exceed the
/// server's `max_payload` is settled at once: a stand-in without the payload waits
/// for the endpoint, which dead-letters it, payload and all, once it is enabled.
/// Before, the message came back every second until then, and the other endpoints
/// got it again each time the work streams' duplicate window passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fan_out_a_disabled_endpoint_s_copy_over_max_payload_waits_as_a_stand_in() {
    let s = FanOutSetup::start().await;
    let (n, rx, js) = (&s.n, &s.rx, &s.js);
    // Its name in the copy's Nats-Msg-Id takes the copy past max_payload; the file
    // endpoint's copy fits.
    let long = "l".repeat(121);
    let mut off: Value = serde_json::from_str(&body(&long, rx)).unwrap();
    off["enabled"] = false.into();
    let (status, created) = api(n, "POST", "/api/endpoints", Some(&off.to_string())).await;
    assert_eq!(status, 201, "{created}");
    let long_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    let old = humantime::format_rfc3339_millis(long_ago).to_string();
    edit_record(js, &long, |v| v["skip_before"] = json!(old)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let room = publish_big_and_small(&s).await;
    wait_until(
        Duration::from_secs(10),
        "the big message settled",
        || async { n.metric("natshook_fanout_pending").await == Some(0.0) },
    )
    .await;
    wait_until(
        Duration::from_secs(10),
        "the stand-in and the copy held",
        || async { copies_of(js, &long).await == 2 },
    )
    .await;
    assert!(
        n.dead_letters(&long).is_empty(),
        "dead-lettered while disabled"
    );

    patch_ok(n, &long, r#"{"enabled": true}"#).await;
    let dead = n.wait_dead_letters(&long, 1, Duration::from_secs(20)).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["id"], "big");
    let reason = dead[0]["reason"].as_str().unwrap();
    assert!(reason.contains("max_payload"), "{reason}");
    assert!(!reason.contains("no longer"), "{reason}");
    assert_eq!(
        dead[0]["headers"]["Nats-Msg-Id"],
        json!(["big"]),
        "{}",
        dead[0]
    );
    let path = format!("/{long}");
    rx.wait_for(Duration::from_secs(20), "the copy that fits", |r| {
        delivered_on(r, &path, "small").len() == 1
    })
    .await;

    // The record holds the source message's payload: a replay sends it.
    let route = format!("/api/endpoints/{long}/dlq/replay");
    let (status, summary) = api(n, "POST", &route, Some("{}")).await;
    assert_eq!(status, 200, "{summary}");
    rx.wait_for(Duration::from_secs(20), "the replay", |r| {
        delivered_on(r, &path, "big").len() == 1
    })
    .await;
    let replayed = on_path(rx, &path)
        .into_iter()
        .find(|r| r.id() == "big")
        .unwrap();
    assert_eq!(
        replayed.json()["data"]["pad"].as_str().map(str::len),
        Some(room - 10)
    );
    assert_eq!(delivered_on(&s.file_rx, "/file", "big").len(), 1);
}

/// With `fan_out`, a message the fan-out handled before a new endpoint joined is
/// copied for it by the catch-up; one whose copy does not fit is dead-lettered for it
/// there as the fan-out would, and the catch-up goes on to the messages after it.
/// Before, the catch-up failed on it at every bind, and the endpoint never got them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fan_out_the_catch_up_dead_letters_a_copy_over_max_payload_and_goes_on() {
    let s = FanOutSetup::start().await;
    let (n, rx, js) = (&s.n, &s.rx, &s.js);
    let (status, created) = api(n, "POST", "/api/endpoints", Some(&body("template", rx))).await;
    assert_eq!(status, 201, "{created}");
    publish_big_and_small(&s).await;
    let stream = js.get_stream("EVENTS").await.expect("stream");
    let last = stream.cached_info().state.last_sequence;

    // A new endpoint whose record says it starts before both (as one created just
    // before them, which the fan-out had not heard of yet, would).
    let long = "l".repeat(121);
    let kv = js
        .get_key_value("NATSHOOK_ENDPOINTS")
        .await
        .expect("bucket");
    let stored = kv.get("template").await.expect("get").expect("the record");
    let mut record: Value = serde_json::from_slice(&stored).expect("json");
    record["name"] = json!(long);
    record["url"] = json!(rx.url(&format!("/{long}")));
    record["skip_through"] = json!(last - 2);
    record["skip_before"] =
        json!(humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string());
    kv.put(&long, serde_json::to_vec(&record).unwrap().into())
        .await
        .expect("put");

    n.wait_uncopied_dead_letter(&long, "big").await;
    let path = format!("/{long}");
    rx.wait_for(Duration::from_secs(20), "the copy after it", |r| {
        delivered_on(r, &path, "small").len() == 1
    })
    .await;
    assert!(delivered_on(rx, &path, "big").is_empty());
}

/// With `fan_out`, `ordered` endpoints go through disabling too: one created
/// disabled (it has no consumer on the source stream yet) gets what arrived before it
/// was enabled, and one made unordered while disabled gets every message once,
/// though its former consumer and the fan-out both hold what arrived while it was off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fan_out_ordered_endpoints_get_what_arrived_while_disabled_once() {
    let s = FanOutSetup::start().await;
    let (n, rx, js) = (&s.n, &s.rx, &s.js);
    let patch = |name: &'static str, body: &'static str| async move {
        patch_ok(n, name, body).await;
        // Each replica's fan-out takes the change in a moment.
        tokio::time::sleep(Duration::from_millis(700)).await;
    };
    let create = |name: &'static str, enabled: bool| {
        let mut b: Value = serde_json::from_str(&body(name, rx)).unwrap();
        b["ordered"] = true.into();
        b["enabled"] = enabled.into();
        async move {
            let (status, created) = api(n, "POST", "/api/endpoints", Some(&b.to_string())).await;
            assert_eq!(status, 201, "{created}");
        }
    };
    create("born-off", false).await;
    create("switched", true).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    publish_all(js, tenant_leads("org_1", 3, "first")).await;
    rx.wait_for(Duration::from_secs(20), "the first leads", |r| {
        delivered_on(r, "/switched", "first") == ids("first", 3)
    })
    .await;
    patch("switched", r#"{"enabled": false}"#).await;
    patch("switched", r#"{"ordered": false}"#).await;
    publish_all(js, tenant_leads("org_1", 5, "off")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    patch("born-off", r#"{"enabled": true}"#).await;
    patch("switched", r#"{"enabled": true}"#).await;
    publish_all(js, tenant_leads("org_1", 5, "after")).await;
    rx.wait_for(Duration::from_secs(30), "every lead on both", |r| {
        ["/born-off", "/switched"].iter().all(|path| {
            ["first", "off", "after"]
                .iter()
                .all(|p| delivered_on(r, path, p).len() == if *p == "first" { 3 } else { 5 })
        })
    })
    .await;
    // The former consumer is drained and deleted within seconds; nothing comes twice.
    wait_until(Duration::from_secs(20), "the former consumer gone", || {
        let js = js.clone();
        async move {
            let stream = js.get_stream("EVENTS").await.unwrap();
            stream.consumer_info("natshook-switched").await.is_err()
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut times: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in rx.received() {
        *times
            .entry((r.path.clone(), r.id().to_string()))
            .or_default() += 1;
    }
    let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
}

/// With `fan_out`, a disabled endpoint's copies wait only as long as the source
/// stream keeps their messages (here `max_age`), as its messages would without
/// fan-out: enabling it delivers the newer ones, not those the stream dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fan_out_a_disabled_endpoint_s_copies_expire_with_their_messages() {
    let s = FanOutSetup::start().await;
    let (n, rx, js) = (&s.n, &s.rx, &s.js);
    let mut events = js.get_stream("EVENTS").await.unwrap();
    let mut limited = events.info().await.unwrap().config.clone();
    limited.max_age = Duration::from_secs(15);
    limited.duplicate_window = Duration::from_secs(15);
    js.update_stream(&limited).await.expect("max_age set");
    let mut off: Value = serde_json::from_str(&body("off", rx)).unwrap();
    off["enabled"] = false.into();
    let (status, created) = api(n, "POST", "/api/endpoints", Some(&off.to_string())).await;
    assert_eq!(status, 201, "{created}");
    tokio::time::sleep(Duration::from_millis(500)).await;

    publish_all(js, tenant_leads("org_1", 5, "old")).await;
    wait_until(Duration::from_secs(10), "the old copies held", || async {
        copies_of(js, "off").await == 5
    })
    .await;
    // Newer by more than the cut's margin (10 s) for clocks that differ.
    tokio::time::sleep(Duration::from_secs(11)).await;
    publish_all(js, tenant_leads("org_1", 2, "new")).await;
    wait_until(Duration::from_secs(10), "the old leads aged out", || {
        let events = events.clone();
        async move { events.clone().info().await.unwrap().state.messages == 2 }
    })
    .await;
    wait_until(
        Duration::from_secs(10),
        "the old copies expired",
        || async { copies_of(js, "off").await == 2 },
    )
    .await;
    let (status, on) = api(
        n,
        "PATCH",
        "/api/endpoints/off",
        Some(r#"{"enabled": true}"#),
    )
    .await;
    assert_eq!(status, 200, "{on}");
    rx.wait_for(Duration::from_secs(20), "the new leads", |r| {
        delivered_on(r, "/off", "new") == ids("new", 2)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(delivered_on(rx, "/off", "old").is_empty());
    assert!(n
        .logs()
        .contains("copies of messages the source stream no longer keeps"));
}

/// With `fan_out`, a pause shared in `NATSHOOK_STATE` holds from a restarted
/// process's first copy on: for a file endpoint and for a runtime one, what arrives
/// while natshook is down and then up again waits, not one request reaches the
/// paused receivers, and a resume delivers all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fan_out_a_restarted_process_keeps_shared_pauses_from_its_first_copy() {
    let mut s = FanOutSetup::start().await;
    let (status, created) = api(&s.n, "POST", "/api/endpoints", Some(&body("r", &s.rx))).await;
    assert_eq!(status, 201, "{created}");
    wait_bound(&s.n, "r").await;
    deliver_org_1(&s.js, &s.rx, 2, "before", 2).await;
    for name in ["file", "r"] {
        let (status, paused) =
            api(&s.n, "POST", &format!("/api/endpoints/{name}/pause"), None).await;
        assert_eq!(status, 200, "{paused}");
    }
    let (file_before, rx_before) = (s.file_rx.count(), s.rx.count());
    for round in 0..3 {
        s.n.terminate().await;
        publish_all(&s.js, tenant_leads("org_1", 10, &format!("down{round}"))).await;
        s.n.spawn().await;
        publish_all(&s.js, tenant_leads("org_1", 10, &format!("up{round}"))).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert_eq!(
        (s.file_rx.count() - file_before, s.rx.count() - rx_before),
        (0, 0),
        "requests to paused endpoints after restarts"
    );
    for name in ["file", "r"] {
        let (status, resumed) =
            api(&s.n, "POST", &format!("/api/endpoints/{name}/resume"), None).await;
        assert_eq!(status, 200, "{resumed}");
    }
    let want: BTreeSet<String> = (0..3)
        .flat_map(|round| {
            [
                ids(&format!("down{round}"), 10),
                ids(&format!("up{round}"), 10),
            ]
        })
        .flatten()
        .collect();
    let arrived = |rx: &Receiver, path: &str| {
        let all: BTreeSet<String> = ["down", "up"]
            .iter()
            .flat_map(|p| delivered_on(rx, path, p))
            .collect();
        all == want
    };
    s.rx.wait_for(
        Duration::from_secs(30),
        "the runtime endpoint's messages",
        |r| arrived(r, "/r"),
    )
    .await;
    s.file_rx
        .wait_for(
            Duration::from_secs(30),
            "the file endpoint's messages",
            |r| arrived(r, "/file"),
        )
        .await;
}

/// With `fan_out`, an `ordered` endpoint made unordered, disabled while its former
/// consumer is drained into copies (the drain waits for a retry there), then enabled
/// `ordered` again: it neither reads that consumer as its own nor drops the copies
/// the drain made; once the drain has ended it reads the source stream from the
/// oldest of them, and every lead arrives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fan_out_an_endpoint_disabled_mid_drain_and_enabled_ordered_loses_nothing() {
    let s = FanOutSetup::start().await;
    let (n, rx, js) = (&s.n, &s.rx, &s.js);
    rx.set(|_| Reply::status(503));
    let mut ordered: Value = serde_json::from_str(&body("o", rx)).unwrap();
    ordered["ordered"] = true.into();
    ordered["retry_schedule"] = json!(["8s"]);
    ordered["max_attempts"] = 50.into();
    ordered["disable_after_failures"] = 0.into();
    let (status, created) = api(n, "POST", "/api/endpoints", Some(&ordered.to_string())).await;
    assert_eq!(status, 201, "{created}");
    wait_bound(n, "o").await;
    publish_all(js, tenant_leads("org_1", 20, "held")).await;
    // The first lead fails and waits out its 8 s on the ordered consumer.
    rx.wait_for(Duration::from_secs(10), "the first attempt", |r| {
        r.count() >= 1
    })
    .await;
    patch_ok(n, "o", r#"{"ordered": false}"#).await;
    // The poller (every 5 s) starts the drain, which moves the 19 others; their
    // copies fail once.
    wait_until(Duration::from_secs(15), "the others moved", || async {
        rx.count() >= 2
    })
    .await;
    patch_ok(n, "o", r#"{"enabled": false}"#).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    rx.set(|_| Reply::ok());
    patch_ok(n, "o", r#"{"enabled": true, "ordered": true}"#).await;
    let want: Vec<String> = (0..20).map(|i| format!("held-{i}")).collect();
    rx.wait_for(Duration::from_secs(40), "every lead", |r| {
        let got = r.delivered_ids();
        want.iter().all(|id| got.contains_key(id))
    })
    .await;
    let first_success = first_successes(&on_path(rx, "/o"));
    assert_eq!(first_success, want);
}

/// The copies on the work streams for endpoint `name`, acked or not.
async fn copies_of(js: &jetstream::Context, name: &str) -> u64 {
    let mut all = 0;
    for i in 0..16 {
        let stream = js
            .get_stream(format!("EVENTS_natshook_WORK_{i}"))
            .await
            .expect("work stream");
        all += messages_under(stream, &format!("natshook.work.EVENTS.*.{name}")).await;
    }
    all
}

/// How many messages `stream` holds under the subjects `filter` matches.
async fn messages_under(stream: jetstream::stream::Stream, filter: &str) -> u64 {
    use futures_util::StreamExt;
    let mut subjects = stream
        .info_with_subjects(filter)
        .await
        .expect("stream info with subjects");
    let mut all = 0;
    while let Some(next) = subjects.next().await {
        all += next.expect("subject count").1 as u64;
    }
    all
}

/// `hex` sends one signature: the old secret goes on signing alone until the grace
/// ends, so a receiver that holds it verifies every request while it switches over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_hex_secret_lets_the_old_one_sign_alone_until_the_grace_ends() {
    let s = Setup::start().await;
    let (n, rx, js) = (&s.n, &s.rx, &s.js);
    let (old, new, rotated_at) = create_and_rotate(n, rx, "hex").await;
    let (old_signer, new_signer) = (hex_signer(&old), hex_signer(&new));
    let signed_by = |prefix: &str| {
        let got: Vec<Received> = rx
            .received()
            .into_iter()
            .filter(|r| r.id().starts_with(prefix))
            .collect();
        let count = |s: &natshook::signing::Signer| {
            got.iter()
                .filter(|r| s.verify(&r.body, &r.headers).is_ok())
                .count()
        };
        (got.len(), count(&old_signer), count(&new_signer))
    };

    tokio::time::sleep(Duration::from_secs(2)).await;
    deliver_org_1(js, rx, 5, "during", 5).await;
    assert!(
        rotated_at.elapsed() < Duration::from_secs(6),
        "too slow to test the grace"
    );
    assert_eq!(signed_by("during"), (5, 5, 0), "(requests, old, new)");

    tokio::time::sleep(Duration::from_secs(8).saturating_sub(rotated_at.elapsed())).await;
    deliver_org_1(js, rx, 5, "after", 10).await;
    assert_eq!(signed_by("after"), (5, 0, 5), "(requests, old, new)");
}

/// A second rotation within the first one's grace keeps the first secret signing for
/// `hex`, as the first rotation promised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_rotation_within_the_grace_keeps_the_first_secret_signing() {
    let s = Setup::start().await;
    let (n, rx, js) = (&s.n, &s.rx, &s.js);
    let (first, _, _) = create_and_rotate(n, rx, "hex").await;
    let body = json!({ "grace": "1h" }).to_string();
    let (status, rotated) = api(n, "POST", "/api/endpoints/acme/secret/rotate", Some(&body)).await;
    assert_eq!(status, 200, "{rotated}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    deliver_org_1(js, rx, 3, "twice", 3).await;
    let signer = hex_signer(&first);
    let got = rx.received();
    assert!(!got.is_empty());
    for r in got {
        assert!(signer.verify(&r.body, &r.headers).is_ok(), "{}", r.id());
    }
}

/// A runtime endpoint without a tenant that takes every lead (the stream's backlog
/// too), standard signatures, on its own path of `rx`.
fn plain_body(name: &str, rx: &Receiver) -> String {
    json!({
        "name": name,
        "url": rx.url(&format!("/{name}")),
        "events": ["lead.created"],
        "signature": {"scheme": "standard"},
        "allow_http": true,
        "allow_private": true,
        "retry_schedule": ["100ms"],
        // What the stream already holds is delivered too: these tests count every id.
        "skip_backlog": false,
    })
    .to_string()
}

/// How `n` lists `name` now (its own view of the registry, with the worker's state
/// while the worker runs there), or `None` when `n` does not list it.
async fn entry(n: &Natshook, name: &str) -> Option<Value> {
    let (status, body) = api(n, "GET", "/api/endpoints", None).await;
    assert_eq!(status, 200, "{body}");
    body["endpoints"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .cloned()
}

/// Whether the worker runs (the state fields are there only while it does).
fn runs(e: Option<&Value>) -> bool {
    e.is_some_and(|e| e.get("consumer").is_some())
}

/// Polls every process (each in its own loop, so a slow answer from one does not delay
/// seeing the other) until `applied` holds for it, and returns how long each took from
/// `since` (when the API answered the change: it is in the bucket then).
async fn lags(
    procs: &[&Natshook],
    since: Instant,
    what: &str,
    applied: impl Fn(&Natshook, Option<&Value>) -> bool,
    name: &str,
) -> Vec<Duration> {
    let applied = &applied;
    let lags = futures_util::future::join_all(procs.iter().map(|n| async move {
        while !applied(n, entry(n, name).await.as_ref()) {
            assert!(
                since.elapsed() < Duration::from_secs(30),
                "{what}: not seen by {} within 30 s",
                n.http_port
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        since.elapsed()
    }))
    .await;
    eprintln!("{what}: seen after {lags:?}");
    lags
}

/// The requests `rx` got on `path`.
fn on_path(rx: &Receiver, path: &str) -> Vec<Received> {
    rx.received()
        .into_iter()
        .filter(|r| r.path == path)
        .collect()
}

/// The distinct ids of `requests` answered 2xx, after checking that every request of
/// an id (a duplicate) carries that id and the same event as the first.
fn ids_checked(requests: &[Received]) -> BTreeSet<String> {
    let mut first: BTreeMap<String, Value> = BTreeMap::new();
    for r in requests {
        let body = r.json();
        assert_eq!(body["id"], r.id(), "{}: body id vs header", r.path);
        let seen = first.entry(r.id().to_string()).or_insert(body.clone());
        assert_eq!(
            seen["data"],
            body["data"],
            "{}: a duplicate of {}",
            r.path,
            r.id()
        );
        assert_eq!(
            seen["metadata"]["stream_sequence"],
            body["metadata"]["stream_sequence"]
        );
    }
    requests
        .iter()
        .filter(|r| (200..300).contains(&r.replied))
        .map(|r| r.id().to_string())
        .collect()
}

const CHURN: usize = 1000;

/// The churn test's message `i`: a lead of `org_1`, id `c-<i>`.
fn churn_message(i: usize) -> (String, bytes::Bytes, Option<String>) {
    (
        "events.org_1.lead.created".to_string(),
        bytes::Bytes::from(format!("{{\"lead\":{i}}}")),
        Some(format!("c-{i}")),
    )
}

/// Two natshook processes on one bucket and stream. While 1,000 messages flow (25
/// every 200 ms), runtime endpoints are created, changed (url and headers), disabled,
/// enabled again and deleted through process A's API. Every change is seen by both
/// processes within 1 s (each one's own list: its records and its workers' state);
/// the staying endpoints get every id; the deleted one's consumer goes; the disabled
/// one gets nothing while disabled and its held messages after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_during_traffic_reach_both_processes_within_a_second_and_lose_nothing() {
    let s = Setup::start().await;
    let b = s.another().await;
    let (a, rx, js) = (&s.n, &s.rx, &s.js);
    let both = [a, &b];
    let mut max_lag = Duration::ZERO;
    let mut note = |l: Vec<Duration>| {
        for l in l {
            max_lag = max_lag.max(l);
        }
    };

    // Before the traffic: keep (unchanged), edit (url and headers change), toggle
    // (disabled, enabled), gone (deleted).
    let mut secrets = BTreeMap::new();
    for name in ["keep", "edit", "toggle", "gone"] {
        let (status, created) = api(a, "POST", "/api/endpoints", Some(&plain_body(name, rx))).await;
        let at = Instant::now();
        assert_eq!(status, 201, "{created}");
        secrets.insert(name, created["secret"].as_str().unwrap().to_string());
        note(lags(&both, at, &format!("create {name}"), |_, e| runs(e), name).await);
    }
    for n in both {
        for name in ["keep", "edit", "toggle", "gone"] {
            wait_bound(n, name).await;
        }
    }

    let published = Arc::new(AtomicUsize::new(0));
    // The last batch waits for the last change: on a loaded machine the changes may
    // take longer than the steady publishing, and they must happen while it flows.
    let changes_done = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (js, published, done) = (js.clone(), published.clone(), changes_done.clone());
        tokio::spawn(async move {
            for batch in 0..CHURN / 25 {
                if batch + 1 == CHURN / 25 {
                    while !done.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                publish_all(
                    &js,
                    (batch * 25..(batch + 1) * 25).map(churn_message).collect(),
                )
                .await;
                published.store((batch + 1) * 25, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let progress = |what: &str| {
        let p = published.load(Ordering::SeqCst);
        eprintln!("{what} with {p} of {CHURN} published");
        p
    };
    wait_until(Duration::from_secs(10), "traffic started", || async {
        published.load(Ordering::SeqCst) >= 100
    })
    .await;
    let first_change = progress("first change");

    // Create during traffic, with the backlog: it starts from the stream's first message.
    let (status, created) = api(a, "POST", "/api/endpoints", Some(&plain_body("late", rx))).await;
    let at = Instant::now();
    assert_eq!(status, 201, "{created}");
    note(lags(&both, at, "create late", |_, e| runs(e), "late").await);

    // Update: a new url and a header; each process restarts the worker with them.
    let new_url = rx.url("/edit-v2");
    let change = json!({"url": new_url, "headers": {"X-Version": "2"}}).to_string();
    // The log shows where an endpoint sends without its path: a new start of the
    // worker, after the change, is what tells it serves the new URL.
    let starts = |n: &Natshook| {
        n.logs()
            .lines()
            .filter(|l| l.contains("starting endpoint") && l.contains("endpoint=edit"))
            .count()
    };
    let started_before: BTreeMap<u16, usize> =
        both.iter().map(|n| (n.http_port, starts(n))).collect();
    let (status, changed) = api(a, "PATCH", "/api/endpoints/edit", Some(&change)).await;
    let at = Instant::now();
    assert_eq!(status, 200, "{changed}");
    let revision = changed["revision"].clone();
    note(
        lags(
            &both,
            at,
            "update edit",
            |n, e| {
                e.is_some_and(|e| e["revision"] == revision)
                    && runs(e)
                    && starts(n) > started_before[&n.http_port]
            },
            "edit",
        )
        .await,
    );
    let edit_applied = Instant::now();

    // Disable: both workers stop; what was in flight finishes.
    let (status, _) = api(
        a,
        "PATCH",
        "/api/endpoints/toggle",
        Some("{\"enabled\": false}"),
    )
    .await;
    let at = Instant::now();
    assert_eq!(status, 200);
    note(
        lags(
            &both,
            at,
            "disable toggle",
            |_, e| e.is_some_and(|e| e["enabled"] == false) && !runs(e),
            "toggle",
        )
        .await,
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let off = Instant::now();
    let off_published = progress("toggle off");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let on_published = progress("toggle on again");
    // Requests may start before the answer arrives: the window ends when it is sent.
    let on_sent = Instant::now();
    let (status, _) = api(
        a,
        "PATCH",
        "/api/endpoints/toggle",
        Some("{\"enabled\": true}"),
    )
    .await;
    let on = Instant::now();
    assert_eq!(status, 200);
    note(
        lags(
            &both,
            on,
            "enable toggle",
            |_, e| e.is_some_and(|e| e["enabled"] == true) && runs(e),
            "toggle",
        )
        .await,
    );

    // Delete: both workers stop, the consumer goes.
    let (status, _) = api(a, "DELETE", "/api/endpoints/gone", None).await;
    let at = Instant::now();
    assert_eq!(status, 204);
    note(
        lags(
            &both,
            at,
            "delete gone",
            |n, e| {
                e.is_none()
                    && n.logs().lines().any(|l| {
                        l.contains("registry change applied") && l.contains("removed=[\"gone\"]")
                    })
            },
            "gone",
        )
        .await,
    );
    let gone_applied = Instant::now();
    let last_change = progress("last change");
    changes_done.store(true, Ordering::SeqCst);

    publisher.await.unwrap();
    assert!(
        first_change < CHURN && last_change < CHURN,
        "the changes were not made while messages flowed ({first_change}, {last_change})"
    );
    eprintln!("max lag seen: {max_lag:?}");
    assert!(max_lag < Duration::from_secs(1), "max lag {max_lag:?}");

    // Nothing lost for the endpoints that stay.
    let all: BTreeSet<String> = (0..CHURN).map(|i| format!("c-{i}")).collect();
    let wait_all = |paths: &'static [&'static str]| {
        let all = all.clone();
        async move {
            rx.wait_for(
                Duration::from_secs(60),
                &format!("every id on {paths:?}"),
                |r| {
                    let got: BTreeSet<String> = r
                        .received()
                        .into_iter()
                        .filter(|q| {
                            paths.contains(&q.path.as_str()) && (200..300).contains(&q.replied)
                        })
                        .map(|q| q.id().to_string())
                        .collect();
                    got.is_superset(&all)
                },
            )
            .await;
        }
    };
    wait_all(&["/keep"]).await;
    wait_all(&["/late"]).await;
    wait_all(&["/toggle"]).await;
    wait_all(&["/edit", "/edit-v2"]).await;
    s.file_rx
        .wait_for(Duration::from_secs(60), "the file endpoint's 1,000", |r| {
            r.delivered_ids().len() >= CHURN
        })
        .await;
    // Anything late would show now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for path in ["/keep", "/late", "/toggle"] {
        let got = ids_checked(&on_path(rx, path));
        assert_eq!(got, all, "{path}");
    }
    let old = on_path(rx, "/edit");
    let new = on_path(rx, "/edit-v2");
    let mut edit_ids = ids_checked(&old);
    edit_ids.extend(ids_checked(&new));
    assert_eq!(edit_ids, all, "edit: old and new url together");
    let late_old: Vec<&Received> = old
        .iter()
        .filter(|r| r.at > edit_applied + Duration::from_secs(1))
        .collect();
    assert!(
        late_old.is_empty(),
        "{} requests to the old url after the change",
        late_old.len()
    );
    assert!(!new.is_empty());
    assert!(new.iter().all(|r| r.header("x-version") == "2"));
    assert!(old.iter().all(|r| r.header("x-version").is_empty()));
    eprintln!(
        "edit: {} requests to the old url, {} to the new",
        old.len(),
        new.len()
    );

    // Disabled: nothing arrived; what was published meanwhile came after.
    let toggle = on_path(rx, "/toggle");
    let while_off = toggle
        .iter()
        .filter(|r| r.at > off && r.at < on_sent)
        .count();
    assert_eq!(while_off, 0, "the disabled endpoint got requests");
    let held: BTreeSet<String> = (off_published..on_published)
        .map(|i| format!("c-{i}"))
        .collect();
    assert!(
        !held.is_empty(),
        "nothing was published while toggle was off"
    );
    let after_on: BTreeSet<String> = toggle
        .iter()
        .filter(|r| r.at > on_sent)
        .map(|r| r.id().to_string())
        .collect();
    assert!(
        after_on.is_superset(&held),
        "held messages after re-enabling"
    );

    // Deleted: its consumer is gone (and stays gone), nothing more arrives.
    let gone = on_path(rx, "/gone");
    assert!(gone
        .iter()
        .all(|r| r.at < gone_applied + Duration::from_secs(1)));
    eprintln!("gone: {} requests in all", gone.len());
    let stream = js.get_stream("EVENTS").await.unwrap();
    wait_until(Duration::from_secs(20), "gone's consumer removed", || {
        let stream = stream.clone();
        async move { stream.consumer_info("natshook-gone").await.is_err() }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        stream.consumer_info("natshook-gone").await.is_err(),
        "gone's consumer came back"
    );
    for name in ["keep", "late", "toggle", "edit"] {
        assert!(
            stream
                .consumer_info(&format!("natshook-{name}"))
                .await
                .is_ok(),
            "{name}"
        );
    }

    // Signed with the secret the create returned: an independent verifier agrees.
    let keep = on_path(rx, "/keep");
    assert_eq!(verify_received(&secrets["keep"], &keep), (keep.len(), 0));
    let sample: Vec<Received> = new.into_iter().take(50).collect();
    assert_eq!(
        verify_received(&secrets["edit"], &sample),
        (sample.len(), 0)
    );
}

const MANY: usize = 500;

fn many_tenant(i: usize) -> String {
    format!("t{i:03}")
}

/// `round`'s message for every one of the many tenants: id `<tenant>-<round>`.
fn many_messages(round: usize) -> Vec<(String, bytes::Bytes, Option<String>)> {
    (0..MANY)
        .map(|i| {
            let t = many_tenant(i);
            (
                format!("events.{t}.lead.created"),
                bytes::Bytes::from(format!("{{\"tenant\":\"{t}\",\"round\":{round}}}")),
                Some(format!("{t}-{round}")),
            )
        })
        .collect()
}

/// The runtime endpoints `n` lists and how many of them have a bound consumer.
async fn api_endpoints(n: &Natshook) -> (Vec<Value>, usize) {
    let (status, body) = api(n, "GET", "/api/endpoints", None).await;
    assert_eq!(status, 200, "{body}");
    let all: Vec<Value> = body["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["source"] == "api")
        .cloned()
        .collect();
    let bound = all.iter().filter(|e| e["bound"] == true).count();
    (all, bound)
}

/// Waits until `n` serves `want` runtime endpoints, all bound.
async fn wait_all_bound(n: &Natshook, want: usize, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (all, bound) = api_endpoints(n).await;
        if all.len() == want && bound == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} listed, {bound} bound, {want} wanted",
            all.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Checks that each tenant's path got exactly the ids of `rounds` (each at least once,
/// no other id), and no other path got anything.
fn each_got_its_own(rx: &Receiver, rounds: &[usize], skip: &[usize]) {
    let mut by_path: BTreeMap<String, Vec<Received>> = BTreeMap::new();
    for r in rx.received() {
        by_path.entry(r.path.clone()).or_default().push(r);
    }
    let want_paths: BTreeSet<String> = (0..MANY)
        .filter(|i| !skip.contains(i))
        .map(|i| format!("/{}", many_tenant(i)))
        .collect();
    let got_paths: BTreeSet<String> = by_path.keys().cloned().collect();
    assert!(got_paths.is_superset(&want_paths), "paths without requests");
    for (path, requests) in &by_path {
        let t = path.trim_start_matches('/');
        let ids = ids_checked(requests);
        let want: BTreeSet<String> = rounds.iter().map(|r| format!("{t}-{r}")).collect();
        if skip.iter().any(|i| many_tenant(*i) == t) {
            assert!(ids.is_subset(&want), "{path}: {ids:?}");
            continue;
        }
        assert_eq!(ids, want, "{path}: its own messages only");
        for r in requests {
            assert_eq!(r.json()["organization_id"], t, "{path}");
        }
    }
}

/// 500 endpoints created through the API, each its own tenant and path: each delivers
/// exactly its tenant's message. A restart keeps every one of them (and keeps a
/// disabled one disabled, holding its message until it is enabled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_runtime_endpoints_each_deliver_their_own_message_and_survive_a_restart() {
    use futures_util::StreamExt;
    let mut s = Setup::start().await;
    let (rx, js) = (&s.rx, &s.js);

    let started = Instant::now();
    let n = &s.n;
    let statuses: Vec<u16> = futures_util::stream::iter(0..MANY)
        .map(|i| async move {
            let t = many_tenant(i);
            let body = json!({
                "name": format!("ep-{t}"),
                "url": rx.url(&format!("/{t}")),
                "events": ["lead.created"],
                "tenant": t,
                "allow_http": true,
                "allow_private": true,
            })
            .to_string();
            let (status, created) = api(n, "POST", "/api/endpoints", Some(&body)).await;
            assert_eq!(status, 201, "{created}");
            status
        })
        .buffer_unordered(8)
        .collect()
        .await;
    assert_eq!(statuses.len(), MANY);
    let created = started.elapsed();
    wait_all_bound(n, MANY, Duration::from_secs(180)).await;
    let ready = started.elapsed();
    eprintln!("{MANY} endpoints: created in {created:?}, all bound after {ready:?}");

    // The list in pages, by name: every endpoint once, in order, as the whole list.
    let whole = listed(n, "").await;
    let mut paged: Vec<String> = Vec::new();
    let mut after = String::new();
    loop {
        let (status, page) = api(
            n,
            "GET",
            &format!("/api/endpoints?limit=64&after={after}"),
            None,
        )
        .await;
        assert_eq!(status, 200, "{page}");
        let names = page["endpoints"].as_array().expect("a page");
        assert!(names.len() <= 64);
        paged.extend(
            names
                .iter()
                .map(|e| e["name"].as_str().unwrap_or_default().to_string()),
        );
        match page["next"].as_str() {
            Some(next) => after = next.to_string(),
            None => break,
        }
    }
    let mut sorted = whole.clone();
    sorted.sort();
    assert_eq!(whole, sorted, "the whole list is by name");
    assert_eq!(paged, whole);
    assert!(paged.len() > MANY, "{} listed", paged.len());
    for bad in ["0", "1001", "x"] {
        let (status, body) = api(n, "GET", &format!("/api/endpoints?limit={bad}"), None).await;
        assert_eq!(status, 400, "limit={bad}: {body}");
        assert!(body["error"].is_string(), "{body}");
        if bad != "x" {
            assert_eq!(body["problems"][0]["field"], "limit", "{body}");
        }
    }

    let sent = Instant::now();
    publish_all(js, many_messages(1)).await;
    rx.wait_for(Duration::from_secs(120), "one delivery each", |r| {
        r.delivered_ids().len() >= MANY
    })
    .await;
    eprintln!("{MANY} messages delivered in {:?}", sent.elapsed());
    // The file endpoint takes every tenant's leads.
    s.file_rx
        .wait_for(Duration::from_secs(60), "the file endpoint's 500", |r| {
            r.delivered_ids().len() >= MANY
        })
        .await;
    // A cross-delivery would arrive on top; give it a moment to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    each_got_its_own(rx, &[1], &[]);

    // A restart keeps every runtime endpoint; a disabled one stays disabled.
    let (status, _) = api(
        n,
        "PATCH",
        "/api/endpoints/ep-t000",
        Some("{\"enabled\": false}"),
    )
    .await;
    assert_eq!(status, 200);
    wait_until(Duration::from_secs(10), "ep-t000 stopped", || async {
        !runs(entry(&s.n, "ep-t000").await.as_ref())
    })
    .await;
    s.n.terminate().await;
    let restart = Instant::now();
    s.n.spawn_ready_within(Duration::from_secs(180)).await;
    eprintln!(
        "restart with {MANY} runtime endpoints: ready after {:?}",
        restart.elapsed()
    );
    let n = &s.n;
    let (all, bound) = api_endpoints(n).await;
    assert_eq!((all.len(), bound), (MANY, MANY - 1), "after the restart");
    let t000 = entry(n, "ep-t000").await.expect("ep-t000 kept");
    assert_eq!(t000["enabled"], false);
    assert!(!runs(Some(&t000)));

    publish_all(js, many_messages(2)).await;
    rx.wait_for(Duration::from_secs(120), "the second round", |r| {
        r.delivered_ids().len() >= 2 * MANY - 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    each_got_its_own(rx, &[1, 2], &[0]);
    assert!(on_path(rx, "/t000").iter().all(|r| r.id() == "t000-1"));

    let (status, _) = api(
        n,
        "PATCH",
        "/api/endpoints/ep-t000",
        Some("{\"enabled\": true}"),
    )
    .await;
    assert_eq!(status, 200);
    rx.wait_for(Duration::from_secs(30), "ep-t000's held message", |r| {
        r.delivered_ids().contains_key("t000-2")
    })
    .await;
    each_got_its_own(rx, &[1, 2], &[]);
}

/// The state fields of a running endpoint (`GET /api/endpoints/{name}` and its entry in
/// the list).
const STATE: &[&str] = &[
    "name",
    "url",
    "consumer",
    "bound",
    "paused",
    "pause_reason",
    "consecutive_failures",
    "inflight",
    "pending",
    "last_success",
    "last_failure",
    "last_error",
];

/// `n` leads of `org_1` with ids `<prefix>-<i>`: both test endpoints take them.
async fn publish_org_1(js: &jetstream::Context, n: usize, prefix: &str) {
    publish_all(js, tenant_leads("org_1", n, prefix)).await;
}

/// The ids starting with `prefix` that `rx` delivered (2xx) on `path`.
fn delivered_on(rx: &Receiver, path: &str, prefix: &str) -> BTreeSet<String> {
    on_path(rx, path)
        .into_iter()
        .filter(|r| r.id().starts_with(prefix) && (200..300).contains(&r.replied))
        .map(|r| r.id().to_string())
        .collect()
}

fn ids(prefix: &str, n: usize) -> BTreeSet<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Runs the per-endpoint routes on `name` (served on `rx` at `/<name>`): state, the
/// delivery log, the test event, pause/resume and dead-letter replay. Returns the
/// test event's request.
async fn per_endpoint_routes(s: &Setup, name: &str, rx: &Receiver) -> Received {
    let (n, js) = (&s.n, &s.js);
    let path = format!("/{name}");

    // State: one endpoint, and its entry in the list.
    let (status, state) = api(n, "GET", &format!("/api/endpoints/{name}"), None).await;
    assert_eq!(status, 200, "{state}");
    let listed = entry(n, name).await.expect("listed");
    for field in STATE {
        assert!(state.get(*field).is_some(), "{name}: no {field} in {state}");
        assert!(
            listed.get(*field).is_some(),
            "{name}: no {field} in {listed}"
        );
    }
    assert_eq!(state["consumer"], format!("natshook-{name}"));
    assert_eq!(state["bound"], true);
    assert_eq!(state["paused"], false);

    // Deliveries, and the log of them.
    let ok = format!("{name}-ok");
    publish_org_1(js, 3, &ok).await;
    rx.wait_for(Duration::from_secs(20), "3 delivered", |r| {
        delivered_on(r, &path, &ok) == ids(&ok, 3)
    })
    .await;
    // The receiver counts a request when it arrives; natshook records the success once
    // the answer is read, a moment later.
    wait_until(Duration::from_secs(5), "last_success recorded", || async {
        let (_, state) = api(n, "GET", &format!("/api/endpoints/{name}"), None).await;
        state["last_success"].is_string()
    })
    .await;
    let (_, state) = api(n, "GET", &format!("/api/endpoints/{name}"), None).await;
    assert!(
        state["last_success"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{state}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, log) = api(n, "GET", &format!("/api/endpoints/{name}/deliveries"), None).await;
        assert_eq!(status, 200, "{log}");
        let logged: BTreeSet<String> = log
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["http_status"] == 200 && r["attempt"] == 1)
            .filter_map(|r| r["id"].as_str().map(str::to_string))
            .filter(|id| id.starts_with(&ok))
            .collect();
        if logged == ids(&ok, 3) {
            break;
        }
        assert!(Instant::now() < deadline, "{name}: delivery log {log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The test event.
    let (status, ping) = api(n, "POST", &format!("/api/endpoints/{name}/test"), None).await;
    assert_eq!(status, 200, "{ping}");
    assert_eq!(ping["success"], true, "{ping}");
    assert_eq!(ping["http_status"], 200);
    let test = on_path(rx, &path)
        .into_iter()
        .find(|r| r.id() == ping["id"].as_str().unwrap())
        .expect("the test event");
    assert_eq!(test.header("x-webhook-event"), "webhook.test");
    assert_eq!(test.json()["data"]["endpoint"], name);

    // Pause: nothing is fetched until resume.
    let (status, paused) = api(n, "POST", &format!("/api/endpoints/{name}/pause"), None).await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["paused"], true);
    assert_eq!(paused["pause_reason"], "paused by an operator");
    let (_, state) = api(n, "GET", &format!("/api/endpoints/{name}"), None).await;
    assert_eq!(state["paused"], true);
    // The answer is the endpoint as `GET` shows it.
    for key in ["source", "enabled", "tenant", "revision", "events", "url"] {
        assert_eq!(paused[key], state[key], "{key}: {paused}");
    }
    let held = format!("{name}-held");
    publish_org_1(js, 3, &held).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        delivered_on(rx, &path, &held).is_empty(),
        "{name} delivered while paused"
    );
    let (status, resumed) = api(n, "POST", &format!("/api/endpoints/{name}/resume"), None).await;
    assert_eq!(status, 200, "{resumed}");
    assert_eq!(resumed["paused"], false);
    rx.wait_for(Duration::from_secs(20), "the held 3 after resume", |r| {
        delivered_on(r, &path, &held) == ids(&held, 3)
    })
    .await;

    // Dead letters: two messages fail their 2 attempts; replay one, then the rest.
    let dl = format!("{name}-dl");
    let failing = dl.clone();
    rx.set(move |r| {
        if r.id().starts_with(&failing) {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    });
    publish_org_1(js, 2, &dl).await;
    let dead = n.wait_dead_letters(name, 2, Duration::from_secs(30)).await;
    assert_eq!(dead.len(), 2, "{dead:?}");
    rx.set(|_| Reply::ok());
    let first = format!("{dl}-0");
    let (status, summary) = api(
        n,
        "POST",
        &format!("/api/endpoints/{name}/dlq/replay"),
        Some(&json!({"id": first}).to_string()),
    )
    .await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["replayed"], json!([first]));
    let (status, summary) = api(
        n,
        "POST",
        &format!("/api/endpoints/{name}/dlq/replay"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["replayed"], json!([format!("{dl}-1")]));
    assert!(n.dead_letters(name).is_empty());
    rx.wait_for(Duration::from_secs(10), "the replayed 2", |r| {
        delivered_on(r, &path, &dl) == ids(&dl, 2)
    })
    .await;
    test
}

/// The per-endpoint routes (state, delivery log, test, pause/resume, dead-letter
/// replay) work for an endpoint created through the API as for a file endpoint; the
/// runtime endpoint's test event is signed with the secret its create returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_endpoint_routes_work_for_runtime_endpoints_as_for_file_ones() {
    let settings = "retry_schedule = [\"50ms\"]\nmax_attempts = 2\ndisable_after_failures = 0";
    let s = Setup::start_with(settings).await;
    let mut body: Value = serde_json::from_str(&body("acme", &s.rx)).unwrap();
    body["retry_schedule"] = json!(["50ms"]);
    body["max_attempts"] = json!(2);
    body["disable_after_failures"] = json!(0);
    let (status, created) = api(&s.n, "POST", "/api/endpoints", Some(&body.to_string())).await;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_string();
    wait_bound(&s.n, "acme").await;

    per_endpoint_routes(&s, "file", &s.file_rx).await;
    let test = per_endpoint_routes(&s, "acme", &s.rx).await;
    assert_eq!(
        verify_received(&secret, std::slice::from_ref(&test)),
        (1, 0)
    );
    // A tenant's receiver sees its tenant in the test event too.
    assert_eq!(test.json()["organization_id"], "org_1");

    // The same state fields, where the runtime one adds its record's keys.
    let (_, file) = api(&s.n, "GET", "/api/endpoints/file", None).await;
    let (_, acme) = api(&s.n, "GET", "/api/endpoints/acme", None).await;
    assert_eq!(file["source"], "file");
    assert_eq!(acme["source"], "api");
    let keys = |v: &Value| -> BTreeSet<String> { v.as_object().unwrap().keys().cloned().collect() };
    assert!(keys(&acme).is_superset(&keys(&file)), "{file}\n{acme}");
}

/// The fields a 422 names.
fn problem_fields(err: &Value) -> BTreeSet<String> {
    err["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("no problems in {err}"))
        .iter()
        .map(|p| p["field"].as_str().unwrap().to_string())
        .collect()
}

/// Changes sent at once without `If-Match` all land, each read again and written
/// when another landed between its read and its write: only a caller that names the
/// revision it read gets `412`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_without_if_match_all_land() {
    let s = Setup::start().await;
    let n = &s.n;
    let (status, created) = api(n, "POST", "/api/endpoints", Some(&body("acme", &s.rx))).await;
    assert_eq!(status, 201, "{created}");
    let first = created["revision"].as_u64().expect("a revision");
    let patches = (0..8).map(|i| async move {
        let patch = json!({ "description": format!("change {i}") }).to_string();
        api(n, "PATCH", "/api/endpoints/acme", Some(&patch)).await
    });
    for (status, answer) in futures_util::future::join_all(patches).await {
        assert_eq!(status, 200, "{answer}");
    }
    let (_, now) = api(n, "GET", "/api/endpoints/acme", None).await;
    assert_eq!(now["revision"].as_u64(), Some(first + 8), "{now}");
    let (status, _) = with_if_match(
        n,
        "PATCH",
        "/api/endpoints/acme",
        first,
        Some(r#"{"description": "stale"}"#),
    )
    .await;
    assert_eq!(status, 412);
}

/// The routes on one endpoint right after a change answer by the stored record, not
/// by this process's view of it (which follows within a second): a test request is
/// not sent to an endpoint disabled or deleted a moment ago, and one created a moment
/// ago is `503` (try again), never `404`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_right_after_a_change_answer_by_the_stored_record() {
    let s = Setup::start().await;
    let (n, rx) = (&s.n, &s.rx);
    let (status, created) = api(n, "POST", "/api/endpoints", Some(&body("acme", rx))).await;
    assert_eq!(status, 201, "{created}");
    let (status, answer) = api(n, "POST", "/api/endpoints/acme/pause", None).await;
    assert!(matches!(status, 200 | 503), "{status} {answer}");
    wait_bound(n, "acme").await;
    let sent = || rx.received().iter().filter(|r| r.path == "/acme").count();

    // A new URL: a test right after it goes there, or waits (503), never to the old.
    let moved = json!({ "url": rx.url("/acme-moved") }).to_string();
    let (status, changed) = api(n, "PATCH", "/api/endpoints/acme", Some(&moved)).await;
    assert_eq!(status, 200, "{changed}");
    let (status, answer) = api(n, "POST", "/api/endpoints/acme/test", None).await;
    assert!(matches!(status, 200 | 503), "{status} {answer}");
    let back = json!({ "url": rx.url("/acme") }).to_string();
    let (status, changed) = api(n, "PATCH", "/api/endpoints/acme", Some(&back)).await;
    assert_eq!(status, 200, "{changed}");
    wait_until(
        Duration::from_secs(10),
        "the old URL served again",
        || async {
            let (_, one) = api(n, "GET", "/api/endpoints/acme", None).await;
            one["url"] == rx.url("/acme") && one["bound"] == true
        },
    )
    .await;
    assert_eq!(sent(), 0, "a test request went to the URL being replaced");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let off = r#"{"enabled": false}"#;
    let (status, changed) = api(n, "PATCH", "/api/endpoints/acme", Some(off)).await;
    assert_eq!(status, 200, "{changed}");
    let (status, answer) = api(n, "POST", "/api/endpoints/acme/test", None).await;
    assert_eq!(status, 409, "{answer}");
    let on = r#"{"enabled": true}"#;
    let (status, changed) = api(n, "PATCH", "/api/endpoints/acme", Some(on)).await;
    assert_eq!(status, 200, "{changed}");
    wait_bound(n, "acme").await;
    let (status, answer) = api(n, "DELETE", "/api/endpoints/acme", None).await;
    assert_eq!(status, 204, "{answer}");
    let (status, answer) = api(n, "POST", "/api/endpoints/acme/test", None).await;
    assert_eq!(status, 404, "{answer}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sent(), 0, "no test request went out");
}

/// `method path` with `If-Match: <revision>`.
async fn with_if_match(
    n: &Natshook,
    method: &str,
    path: &str,
    revision: u64,
    body: Option<&str>,
) -> (u16, Value) {
    n.api_with(
        method,
        path,
        &[
            ("authorization", &format!("Bearer {TOKEN}")),
            ("if-match", &revision.to_string()),
        ],
        body,
    )
    .await
    .0
}

/// A delete and a rotation with a stale `If-Match` get 412 and change nothing (the
/// first test covers PATCH); with the current revision they go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_and_rotate_refuse_a_stale_revision() {
    let s = Setup::start().await;
    let n = &s.n;
    let (status, created) = api(n, "POST", "/api/endpoints", Some(&body("acme", &s.rx))).await;
    assert_eq!(status, 201, "{created}");
    let first = created["revision"].as_u64().unwrap();
    let (status, changed) = api(
        n,
        "PATCH",
        "/api/endpoints/acme",
        Some("{\"description\": \"second\"}"),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    let current = changed["revision"].as_u64().unwrap();

    let rotate = "/api/endpoints/acme/secret/rotate";
    let (status, err) = with_if_match(n, "POST", rotate, first, None).await;
    assert_eq!(status, 412, "{err}");
    assert!(err.get("secret").is_none(), "{err}");
    let (status, err) = with_if_match(n, "DELETE", "/api/endpoints/acme", first, None).await;
    assert_eq!(status, 412, "{err}");
    let (status, still) = api(n, "GET", "/api/endpoints/acme", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        still["revision"], current,
        "a refused write changed the record"
    );

    let (status, rotated) = with_if_match(n, "POST", rotate, current, None).await;
    assert_eq!(status, 200, "{rotated}");
    let rotated = rotated["revision"].as_u64().unwrap();
    let (status, err) = with_if_match(n, "DELETE", "/api/endpoints/acme", current, None).await;
    assert_eq!(status, 412, "{err}");
    let (status, _) = with_if_match(n, "DELETE", "/api/endpoints/acme", rotated, None).await;
    assert_eq!(status, 204);
    assert_eq!(api(n, "GET", "/api/endpoints/acme", None).await.0, 404);
}

/// A bad change gets 422 naming every problem at once, the ones only a change can
/// have (a new name) beside the ones the config checks find.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_change_gets_422_listing_every_problem() {
    let s = Setup::start().await;
    let n = &s.n;
    let (status, created) = api(n, "POST", "/api/endpoints", Some(&body("acme", &s.rx))).await;
    assert_eq!(status, 201, "{created}");

    let bad = json!({"url": "ftp://x", "timeout": "soon", "bogus": 1, "events": ["nothing.maps"]});
    let (status, err) = api(n, "PATCH", "/api/endpoints/acme", Some(&bad.to_string())).await;
    assert_eq!(status, 422, "{err}");
    let want: BTreeSet<String> = ["url", "timeout", "bogus", "events"]
        .map(String::from)
        .into();
    assert!(problem_fields(&err).is_superset(&want), "{err}");
    // Nothing was written.
    let (_, one) = api(n, "GET", "/api/endpoints/acme", None).await;
    assert_eq!(one["revision"], created["revision"]);
}

/// A change of name (or `skip_backlog`) is listed beside the config checks' problems,
/// not instead of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_of_name_is_listed_beside_every_other_problem() {
    let s = Setup::start().await;
    let n = &s.n;
    let (status, created) = api(n, "POST", "/api/endpoints", Some(&body("acme", &s.rx))).await;
    assert_eq!(status, 201, "{created}");
    let bad = json!({"name": "other", "skip_backlog": true, "url": "ftp://x",
        "timeout": "soon", "bogus": 1, "events": ["nothing.maps"]});
    let (status, err) = api(n, "PATCH", "/api/endpoints/acme", Some(&bad.to_string())).await;
    assert_eq!(status, 422, "{err}");
    let want: BTreeSet<String> = ["name", "skip_backlog", "url", "timeout", "bogus", "events"]
        .map(String::from)
        .into();
    assert!(problem_fields(&err).is_superset(&want), "{err}");
    // Nothing was written.
    let (_, one) = api(n, "GET", "/api/endpoints/acme", None).await;
    assert_eq!(one["revision"], created["revision"]);
}

/// A runtime endpoint's secrets (the generated one and the one a rotation returns)
/// appear in the answers that return them and nowhere else: not in the endpoint views,
/// the delivery log, the metrics or natshook's logs, after deliveries signed with both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_appear_only_in_the_answers_that_return_them() {
    let s = Setup::start().await;
    let n = &s.n;
    let (status, created) = api(n, "POST", "/api/endpoints", Some(&body("acme", &s.rx))).await;
    assert_eq!(status, 201, "{created}");
    let first = created["secret"].as_str().unwrap().to_string();
    // A grace past any clock is refused, and the secret stays.
    let (status, refused) = api(
        n,
        "POST",
        "/api/endpoints/acme/secret/rotate",
        Some(r#"{"grace": "500000000000y"}"#),
    )
    .await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused.to_string().contains("must be at most 10y"),
        "{refused}"
    );
    let (status, rotated) = api(
        n,
        "POST",
        "/api/endpoints/acme/secret/rotate",
        Some(r#"{"grace": "1h"}"#),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let second = rotated["secret"].as_str().unwrap().to_string();
    // The first deliveries may race the rotation: either secret may sign them.
    deliver_org_1(&s.js, &s.rx, 20, "s", 20).await;

    let (_, one) = api(n, "GET", "/api/endpoints/acme", None).await;
    let (_, all) = api(n, "GET", "/api/endpoints", None).await;
    let (_, log) = api(n, "GET", "/api/endpoints/acme/deliveries", None).await;
    let seen = [
        ("the endpoint view", one.to_string()),
        ("the list", all.to_string()),
        ("the delivery log", log.to_string()),
        ("the metrics", n.metrics().await),
        ("the logs", n.logs()),
    ];
    for secret in [&first, &second] {
        let key = secret.trim_start_matches("whsec_");
        for (place, text) in &seen {
            assert!(!text.contains(key), "a secret appears in {place}");
        }
    }
    let attempts = log.as_array().map_or(0, Vec::len);
    assert!(attempts > 0, "the delivery log holds the attempts: {log}");
}

/// A stored endpoint this process cannot serve (written by hand, or stored before a
/// check it now fails) is not silently left out: the API shows it with `problems` in
/// the shape of a 422's, until a change makes it valid again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_endpoint_that_cannot_be_served_says_why() {
    let s = Setup::start().await;
    let n = &s.n;
    let (status, created) = api(n, "POST", "/api/endpoints", Some(&body("acme", &s.rx))).await;
    assert_eq!(status, 201, "{created}");
    edit_record(&s.js, "acme", |v| v["url"] = json!("ftp://127.0.0.1/in")).await;
    wait_until(Duration::from_secs(5), "the problem shown", || async {
        let (_, one) = api(n, "GET", "/api/endpoints/acme", None).await;
        one["problems"][0]["field"] == "url"
    })
    .await;
    let (_, all) = api(n, "GET", "/api/endpoints", None).await;
    let listed = all["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "acme")
        .cloned()
        .expect("still listed");
    assert!(
        listed["problems"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("http"),
        "{listed}"
    );
    assert!(n.logs().contains("invalid registry endpoint; not served"));
    let gauge = "natshook_registry_unserved_endpoints";
    assert_eq!(n.metric(gauge).await, Some(1.0));

    let fixed = json!({ "url": s.rx.url("/acme") }).to_string();
    let (status, changed) = api(n, "PATCH", "/api/endpoints/acme", Some(&fixed)).await;
    assert_eq!(status, 200, "{changed}");
    wait_until(Duration::from_secs(15), "served again", || async {
        let (_, one) = api(n, "GET", "/api/endpoints/acme", None).await;
        one.get("problems").is_none() && one["bound"] == true
    })
    .await;
    assert_eq!(n.metric(gauge).await, Some(0.0));
}

/// With `[registry] allow_network_keys = false` what a runtime endpoint reaches is the
/// operator's `[defaults]` alone: a body that widens it is a `422` naming each key, a
/// body without those keys delivers under the defaults, and a stored record that
/// widens it (written by another tool) is not served, with the key in its problems.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_network_keys_leave_what_runtime_endpoints_reach_to_the_defaults() {
    let nats = NatsServer::start();
    let (file_rx, rx) = (Receiver::start().await, Receiver::start().await);
    let mut c = with_admin(
        TestConfig::new(nats.url())
            .mapping("events.*.lead.created", "lead.created", "tenant = \"{2}\"")
            .endpoint("file", &file_rx.url("/file"), &["lead.created"], ""),
    );
    c.top = format!(
        "{}\n[registry]\nenabled = true\nmin_retry_delay = \"10ms\"\nallow_network_keys = false\n[defaults]\nallow_http = true\nallow_private = true\n",
        c.top
    );
    let n = Natshook::start(&c.render()).await;
    let js = jetstream::new(nats.client().await);

    let plain = json!({
        "name": "acme", "url": rx.url("/acme"), "events": ["lead.created"],
        "tenant": "org_1", "retry_schedule": ["100ms"],
    });
    let mut wide = plain.clone();
    wide["allow_private"] = json!(true);
    wide["allow_http"] = json!(true);
    let (status, err) = api(&n, "POST", "/api/endpoints", Some(&wide.to_string())).await;
    assert_eq!(status, 422, "{err}");
    let fields: Vec<&str> = err["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter_map(|p| p["field"].as_str())
        .collect();
    assert_eq!(fields, ["allow_private", "allow_http"], "{err}");
    assert!(
        err["problems"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("[registry] allow_network_keys = false"),
        "{err}"
    );

    let (status, created) = api(&n, "POST", "/api/endpoints", Some(&plain.to_string())).await;
    assert_eq!(status, 201, "{created}");
    deliver_org_1(&js, &rx, 3, "plain", 3).await;

    edit_record(&js, "acme", |v| v["allow_cidrs"] = json!(["127.0.0.0/8"])).await;
    let refused = || async {
        let (_, one) = api(&n, "GET", "/api/endpoints/acme", None).await;
        one["problems"][0]["field"] == "allow_cidrs"
    };
    let served = || async {
        let (_, one) = api(&n, "GET", "/api/endpoints/acme", None).await;
        one.get("problems").is_none() && one["bound"] == true
    };
    wait_until(Duration::from_secs(5), "the stored record refused", refused).await;
    let gauge = "natshook_registry_unserved_endpoints";
    assert_eq!(n.metric(gauge).await, Some(1.0));
    let widen = json!({ "allow_private": true }).to_string();
    let (status, err) = api(&n, "PATCH", "/api/endpoints/acme", Some(&widen)).await;
    assert_eq!(status, 422, "{err}");
    assert!(err["problems"]
        .as_array()
        .is_some_and(|ps| ps.iter().any(|p| p["field"] == "allow_private")));

    // A reload applies the switch either way.
    let config = |allow: bool| {
        c.render().replace(
            "allow_network_keys = false",
            &format!("allow_network_keys = {allow}"),
        )
    };
    reload(&n, &config(true), "config reloaded", "the first reload").await;
    wait_until(Duration::from_secs(15), "served once allowed", served).await;
    assert_eq!(n.metric(gauge).await, Some(0.0));
    n.rewrite_config(&config(false));
    n.signal("HUP");
    wait_until(Duration::from_secs(10), "the second reload", || {
        let logs = n.logs();
        async move { logs.matches("config reloaded").count() >= 2 }
    })
    .await;
    wait_until(Duration::from_secs(5), "refused again", refused).await;

    // A reload that drops [registry] needs a restart to stop it, and keeps its rules
    // until then.
    let without = config(false).replace(
        "[registry]\nenabled = true\nmin_retry_delay = \"10ms\"\nallow_network_keys = false\n",
        "",
    );
    assert!(!without.contains("[registry]"));
    n.rewrite_config(&without);
    n.signal("HUP");
    wait_until(Duration::from_secs(10), "the third reload", || {
        let logs = n.logs();
        async move { logs.matches("config reloaded").count() >= 3 }
    })
    .await;
    let logs = n.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("config change needs a restart") && l.contains("registry")),
        "{logs}"
    );
    assert!(
        refused().await,
        "the switch held after [registry] was dropped"
    );

    // Taking the range out serves it under the defaults.
    let narrow = json!({ "allow_cidrs": null }).to_string();
    let (status, changed) = api(&n, "PATCH", "/api/endpoints/acme", Some(&narrow)).await;
    assert_eq!(status, 200, "{changed}");
    wait_until(Duration::from_secs(15), "served after the PATCH", served).await;
    deliver_org_1(&js, &rx, 3, "narrowed", 6).await;
}

/// What a customer's write may set is bounded by `[registry]`'s limits (a receiver
/// that hangs for years on a hundred thousand connections, or retries every
/// millisecond, is refused with each key named); a change merges into the objects
/// stored, as a JSON merge patch does, so adding one header keeps the others; and a
/// list query with a key it does not know is refused rather than listing every
/// tenant's endpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_bounded_changes_merge_and_unknown_list_keys_are_refused() {
    let s = Setup::start().await;
    let mut over: Value = serde_json::from_str(&body("hog", &s.rx)).unwrap();
    over["timeout"] = json!("10y");
    over["concurrency"] = json!(100000);
    over["retry_schedule"] = json!(["1ms"]);
    over["secret"] = json!({"value": "guessable"});
    let (status, answer) = api(&s.n, "POST", "/api/endpoints", Some(&over.to_string())).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(
        problem_fields(&answer),
        BTreeSet::from(["timeout", "concurrency", "retry_schedule[0]", "secret"].map(String::from)),
        "{answer}"
    );
    assert!(
        answer.to_string().contains("[registry] max_timeout"),
        "{answer}"
    );

    let mut acme: Value = serde_json::from_str(&body("acme", &s.rx)).unwrap();
    acme["headers"] = json!({"X-Cust-Key": "k1", "X-Team": "t"});
    let (status, created) = api(&s.n, "POST", "/api/endpoints", Some(&acme.to_string())).await;
    assert_eq!(status, 201, "{created}");
    wait_bound(&s.n, "acme").await;
    let (status, answer) = api(
        &s.n,
        "PATCH",
        "/api/endpoints/acme",
        Some(r#"{"timeout": "2m"}"#),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(
        problem_fields(&answer),
        BTreeSet::from(["timeout".to_string()]),
        "{answer}"
    );

    // A value stored past the limit (by another tool, or under a higher one), sent
    // back as it is with another change, is not refused.
    edit_record(&s.js, "acme", |v| v["timeout"] = json!("2m")).await;
    let change = r#"{"timeout": "2m", "description": "sent back"}"#;
    let (status, answer) = api(&s.n, "PATCH", "/api/endpoints/acme", Some(change)).await;
    assert_eq!(status, 200, "{answer}");
    let change = r#"{"timeout": null}"#;
    let (status, answer) = api(&s.n, "PATCH", "/api/endpoints/acme", Some(change)).await;
    assert_eq!(status, 200, "{answer}");
    // One header added, one removed (its name in another case): the third stays.
    let change = r#"{"headers": {"X-New": "v", "x-team": null}}"#;
    let (status, answer) = api(&s.n, "PATCH", "/api/endpoints/acme", Some(change)).await;
    assert_eq!(status, 200, "{answer}");
    // A header for a scheme that has none is refused, not taken for another scheme.
    let change = r#"{"signature": {"header": "X-Sig"}}"#;
    let (status, answer) = api(&s.n, "PATCH", "/api/endpoints/acme", Some(change)).await;
    assert_eq!(status, 422, "{answer}");
    assert!(answer.to_string().contains("standard uses"), "{answer}");
    let (_, shown) = api(&s.n, "GET", "/api/endpoints/acme", None).await;
    assert_eq!(shown["signature"]["scheme"], "standard", "{shown}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    deliver_org_1(&s.js, &s.rx, 1, "merged", 1).await;
    let got = s.rx.received();
    let last = got.last().unwrap();
    assert_eq!(last.header("x-cust-key"), "k1");
    assert_eq!(last.header("x-new"), "v");
    assert_eq!(last.header("x-team"), "");
    assert!(!last.header("webhook-signature").is_empty());

    for query in ["?tenants=org_1", "?tenant%5B0%5D=org_1", "?TENANT=org_1"] {
        let (status, answer) = api(&s.n, "GET", &format!("/api/endpoints{query}"), None).await;
        assert_eq!(status, 400, "{query}: {answer}");
    }
    assert_eq!(listed(&s.n, "?tenant=org_1").await, ["acme"]);
}

/// The messages the `NATSHOOK_STATE` bucket holds under `keys` (a key or a pattern),
/// delete markers included.
async fn state_messages(js: &jetstream::Context, keys: &str) -> u64 {
    let Ok(stream) = js.get_stream("KV_NATSHOOK_STATE").await else {
        return 0;
    };
    messages_under(stream, &format!("$KV.NATSHOOK_STATE.{keys}")).await
}

/// A paused endpoint holds the messages it fetched, and as its worker retires on a
/// delete it notes them as no attempt: those notes go with the endpoint, since no
/// delivery will come to settle them, rather than stay in the bucket for good. And an
/// endpoint that was never paused leaves no resume marker behind: customers delete
/// endpoints by the thousand, and the bucket keeps what it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_endpoint_leaves_no_notes_of_held_messages_and_no_pause_it_never_had() {
    let s = Setup::start().await;
    let (status, created) = api(&s.n, "POST", "/api/endpoints", Some(&body("held", &s.rx))).await;
    assert_eq!(status, 201, "{created}");
    wait_bound(&s.n, "held").await;
    let (status, paused) = api(&s.n, "POST", "/api/endpoints/held/pause", None).await;
    assert_eq!(status, 200, "{paused}");
    publish_all(&s.js, tenant_leads("org_1", 5, "held")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(s.rx.count(), 0, "delivered while paused");
    delete_until_gone(&s.n, &s.js, "held").await;
    wait_until(
        Duration::from_secs(15),
        "the held messages' notes removed",
        || async { state_messages(&s.js, "unattempted.natshook-held.>").await == 0 },
    )
    .await;
    assert!(s.n.logs().contains("deleted endpoint's consumer removed"));
    // Its pause ends with a resume the bucket keeps; an endpoint never paused leaves
    // nothing there.
    assert!(state_messages(&s.js, "paused.held").await > 0);
    let (status, created) = api(&s.n, "POST", "/api/endpoints", Some(&body("calm", &s.rx))).await;
    assert_eq!(status, 201, "{created}");
    wait_bound(&s.n, "calm").await;
    delete_until_gone(&s.n, &s.js, "calm").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(state_messages(&s.js, "paused.calm").await, 0);
}

/// `GET` of endpoint `off` shows what waits for it, once it is `n`.
async fn wait_pending(n: &Natshook, pending: i64) {
    wait_until(
        Duration::from_secs(10),
        &format!("{pending} pending shown"),
        || async {
            let (_, view) = api(n, "GET", "/api/endpoints/off", None).await;
            view["pending"] == pending
        },
    )
    .await;
}

/// Switches `off` off, publishes 5 of its leads, checks that `GET` shows them as
/// `pending`, and switches it on: they arrive.
async fn pending_while_disabled(n: &Natshook, rx: &Receiver, js: &jetstream::Context) {
    let change = r#"{"enabled": false}"#;
    let (status, answer) = api(n, "PATCH", "/api/endpoints/off", Some(change)).await;
    assert_eq!(status, 200, "{answer}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    publish_all(js, tenant_leads("org_1", 5, "waiting")).await;
    wait_pending(n, 5).await;
    let (_, listed) = api(n, "GET", "/api/endpoints", None).await;
    assert!(listed["endpoints"][1].get("pending").is_none(), "{listed}");
    let change = r#"{"enabled": true}"#;
    let (status, answer) = api(n, "PATCH", "/api/endpoints/off", Some(change)).await;
    assert_eq!(status, 200, "{answer}");
    rx.wait_for(Duration::from_secs(20), "what waited", |r| {
        r.delivered_ids().len() >= 5
    })
    .await;
}

/// A disabled endpoint has no worker whose state `GET` could show: its `pending` is
/// read from its consumer, which stays while it is off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_endpoint_shows_what_waits_for_it() {
    let s = Setup::start().await;
    let (status, created) = api(&s.n, "POST", "/api/endpoints", Some(&body("off", &s.rx))).await;
    assert_eq!(status, 201, "{created}");
    wait_bound(&s.n, "off").await;
    pending_while_disabled(&s.n, &s.rx, &s.js).await;
}

/// With `fan_out`, from the copies waiting on its own subject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fan_out_a_disabled_endpoint_shows_the_copies_waiting_for_it() {
    let s = FanOutSetup::start().await;
    let (status, created) = api(&s.n, "POST", "/api/endpoints", Some(&body("off", &s.rx))).await;
    assert_eq!(status, 201, "{created}");
    wait_bound(&s.n, "off").await;
    pending_while_disabled(&s.n, &s.rx, &s.js).await;
}
