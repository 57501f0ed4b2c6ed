//! Operations: every admin API route, the delivery log, hot reload (file change and
//! SIGHUP) while traffic flows, and a log sink that goes away.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use common::*;

/// Publishes one `{}` message on `subject` with the message id `id`.
async fn publish_one(js: &jetstream::Context, subject: &str, id: &str) {
    publish_all(
        js,
        vec![(subject.into(), Bytes::from_static(b"{}"), Some(id.into()))],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_is_off_by_default_and_needs_the_token() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let off = Natshook::start(
        &TestConfig::new(nats.url())
            .endpoint("a", &rx.url("/"), &["*"], "")
            .render(),
    )
    .await;
    assert_eq!(
        off.api("GET", "/api/endpoints", Some(ADMIN_TOKEN), None)
            .await
            .0,
        404
    );

    let nats2 = NatsServer::start();
    let on = Natshook::start(
        &with_admin(TestConfig::new(nats2.url()).endpoint("a", &rx.url("/"), &["*"], "")).render(),
    )
    .await;
    assert_eq!(on.api("GET", "/api/endpoints", None, None).await.0, 401);
    assert_eq!(
        on.api(
            "GET",
            "/api/endpoints",
            Some("wrong-token-wrong-token"),
            None
        )
        .await
        .0,
        401
    );
    let (status, body) = on
        .api("GET", "/api/endpoints", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 200);
    let list = body["endpoints"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["name"], "a");
    assert_eq!(list[0]["paused"], false);
    assert_eq!(list[0]["bound"], true);
    assert_eq!(list[0]["source"], "file");
    assert_eq!(list[0]["enabled"], true);
    assert_eq!(
        on.api("GET", "/api/endpoints/nope", Some(ADMIN_TOKEN), None)
            .await
            .0,
        404
    );
    assert_eq!(
        on.api("POST", "/api/endpoints/nope/pause", Some(ADMIN_TOKEN), None)
            .await
            .0,
        404
    );
    assert_eq!(
        on.api("GET", "/api/nothing", Some(ADMIN_TOKEN), None)
            .await
            .0,
        404
    );
    // Token problems are config errors.
    let (code, err) = check_config(&format!(
        "[admin]\nenabled = true\n{}",
        one_endpoint("url = \"https://example.com/\"\nevents = [\"*\"]\nsecret = \"s\"\n")
    ));
    assert_eq!(code, 2);
    assert!(
        err.contains("admin.token: required when admin.enabled = true"),
        "{err}"
    );
}

/// Every admin API error, routing's and the extractors' included, is one JSON shape:
/// `{"error": "...", "problems": [...]}`, the problems empty unless the body was
/// invalid. Without `[registry]`, a change to a file endpoint is a conflict (409), as
/// with it; a new endpoint is not found (404), since runtime endpoints are off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_errors_share_one_json_shape() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let natshook = Natshook::start(
        &with_admin(TestConfig::new(nats.url()).endpoint("a", &rx.url("/"), &["*"], "")).render(),
    )
    .await;
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let big = format!("{{\"id\": \"{}\"}}", "x".repeat(70 * 1024));
    let json = vec![
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let create = |name: &str| {
        format!(
            "{{\"name\": \"{name}\", \"url\": \"{}\", \"events\": [\"lead.created\"]}}",
            rx.url("/")
        )
    };
    let (create_a, create_b) = (create("a"), create("b"));
    type Case<'a> = (
        &'a str,
        &'a str,
        Vec<(&'a str, &'a str)>,
        Option<&'a str>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        ("GET", "/api/endpoints", vec![], None, 401, "bearer token"),
        (
            "GET",
            "/api/nothing",
            vec![("authorization", &auth)],
            None,
            404,
            "no such route",
        ),
        (
            "PUT",
            "/api/endpoints/a/pause",
            vec![("authorization", &auth)],
            None,
            405,
            "method not allowed",
        ),
        (
            "GET",
            "/api/endpoints/nope",
            vec![("authorization", &auth)],
            None,
            404,
            "no endpoint named 'nope'",
        ),
        (
            "POST",
            "/api/endpoints/a/dlq/replay",
            vec![("authorization", &auth), ("content-type", "text/plain")],
            Some("{}"),
            415,
            "must be JSON",
        ),
        (
            "POST",
            "/api/endpoints/a/dlq/replay",
            vec![
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            Some(&big),
            413,
            "request body over",
        ),
        (
            "POST",
            "/api/endpoints/a/dlq/replay",
            vec![
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            Some("{not json"),
            400,
            "",
        ),
        (
            "GET",
            "/api/endpoints/a/deliveries?limit=many",
            vec![("authorization", &auth)],
            None,
            400,
            "limit",
        ),
        (
            "PATCH",
            "/api/endpoints/a",
            json.clone(),
            Some("{\"enabled\": false}"),
            409,
            "managed by the config file",
        ),
        (
            "DELETE",
            "/api/endpoints/a",
            vec![("authorization", &auth)],
            None,
            409,
            "managed by the config file",
        ),
        (
            "POST",
            "/api/endpoints/a/secret/rotate",
            json.clone(),
            Some("{}"),
            409,
            "managed by the config file",
        ),
        (
            "POST",
            "/api/endpoints",
            json.clone(),
            Some(&create_a),
            409,
            "managed by the config file",
        ),
        (
            "POST",
            "/api/endpoints",
            json.clone(),
            Some(&create_b),
            404,
            "runtime endpoints are off",
        ),
    ];
    for (method, path, headers, body, status, says) in cases {
        let ((got, body), response_headers) = natshook.api_with(method, path, &headers, body).await;
        assert_eq!(got, status, "{method} {path}: {body}");
        let error = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: {body}"));
        assert!(error.contains(says), "{method} {path}: {body}");
        assert_eq!(body["problems"], serde_json::json!([]), "{body}");
        assert_eq!(body.as_object().map(|o| o.len()), Some(2), "{body}");
        assert_eq!(
            response_headers
                .get("content-type")
                .map(|v| v.to_str().unwrap()),
            Some("application/json"),
            "{method} {path}"
        );
        if status == 401 {
            assert_eq!(response_headers.get("www-authenticate").unwrap(), "Bearer");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_state_deliveries_and_test_ping() {
    let nats = NatsServer::start();
    let rx = Receiver::with(|r| {
        if r.id() == "st-3" && r.nth_for_id == 1 {
            Reply::status(503).body("busy")
        } else {
            Reply::ok().body("thanks")
        }
    })
    .await;
    let config = with_admin(TestConfig::new(nats.url()).endpoint(
        "a",
        &rx.url("/"),
        &["*"],
        "retry_schedule = [\"100ms\"]\nheaders = { \"X-Api-Key\" = \"k-secret\" }",
    ));
    let mut natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    deliver_leads(&js, &rx, 5, "st").await;

    let (_, state) = natshook
        .api("GET", "/api/endpoints/a", Some(ADMIN_TOKEN), None)
        .await;
    assert!(
        state["last_success"].as_str().unwrap().ends_with('Z'),
        "{state}"
    );
    assert_eq!(state["last_error"], "HTTP 503");
    assert_eq!(state["consecutive_failures"], 0);

    let deadline = Instant::now() + Duration::from_secs(10);
    let records = loop {
        let (s, body) = natshook
            .api(
                "GET",
                "/api/endpoints/a/deliveries",
                Some(ADMIN_TOKEN),
                None,
            )
            .await;
        if s == 200 && body.as_array().is_some_and(|a| a.len() >= 6) {
            break body;
        }
        assert!(Instant::now() < deadline, "6 log records: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let records = records.as_array().unwrap();
    let failed = records
        .iter()
        .find(|r| r["id"] == "st-3" && r["attempt"] == 1)
        .expect("failed attempt logged");
    assert_eq!(failed["http_status"], 503);
    assert_eq!(failed["status"], "5xx");
    assert_eq!(failed["response_body"], "busy");
    let headers = failed["request_headers"].as_array().unwrap();
    let header = |n: &str| {
        headers
            .iter()
            .find(|h| h[0] == n)
            .map(|h| h[1].as_str().unwrap().to_string())
    };
    assert_eq!(header("x-webhook-id").as_deref(), Some("st-3"));
    assert_eq!(header("x-webhook-signature").as_deref(), Some("[redacted]"));
    assert_eq!(header("x-api-key").as_deref(), Some("[redacted]"));
    assert!(!serde_json::to_string(records).unwrap().contains("k-secret"));
    // Newest first, limit honoured.
    let (_, two) = natshook
        .api(
            "GET",
            "/api/endpoints/a/deliveries?limit=2",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(two.as_array().unwrap().len(), 2);
    assert!(two[0]["time"].as_str() >= two[1]["time"].as_str());

    let (status, ping) = natshook
        .api("POST", "/api/endpoints/a/test", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(ping["success"], true);
    assert_eq!(ping["http_status"], 200);
    assert_eq!(ping["response_body"], "thanks");
    let got = rx.received();
    let test = got
        .iter()
        .find(|r| r.header("x-webhook-event") == "webhook.test")
        .expect("test event");
    assert_eq!(test.json()["data"]["endpoint"], "a");
    assert_eq!(test.id(), ping["id"].as_str().unwrap());

    // The log lives in JetStream: it survives a restart.
    natshook.terminate().await;
    natshook.spawn().await;
    let (_, after) = natshook
        .api(
            "GET",
            "/api/endpoints/a/deliveries",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert!(after.as_array().unwrap().len() >= 6, "{after}");
}

/// `max_successes_per_second_total` bounds the successes kept over all endpoints (at 0,
/// none), while every failed attempt is still kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivery_log_keeps_every_failure_and_successes_within_the_total() {
    let nats = NatsServer::start();
    let rx = Receiver::with(|r| {
        if r.path == "/a" && r.id() == "cap-2" {
            Reply::status(503).body("busy")
        } else {
            Reply::ok()
        }
    })
    .await;
    let mut config = with_admin(
        TestConfig::new(nats.url())
            .endpoint(
                "a",
                &rx.url("/a"),
                &["*"],
                "retry_schedule = [\"100ms\"]\nmax_attempts = 2",
            )
            .endpoint("b", &rx.url("/b"), &["*"], ""),
    );
    config.top += "\n[delivery_log]\nmax_successes_per_second_total = 0\n";
    let natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    publish_all(&js, leads(4, "cap")).await;
    // 4 messages to each endpoint; one fails twice at `a`, then is dead-lettered.
    rx.wait_for(Duration::from_secs(20), "9 requests", |r| r.count() >= 9)
        .await;
    let log = |endpoint: &'static str| {
        let natshook = &natshook;
        async move {
            let path = format!("/api/endpoints/{endpoint}/deliveries");
            let (status, body) = natshook.api("GET", &path, Some(ADMIN_TOKEN), None).await;
            assert_eq!(status, 200, "{body}");
            body.as_array().cloned().unwrap_or_default()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if log("a").await.len() >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the failed attempt is logged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Records are written before the message is acked; give the last ones time to land
    // before asserting that they are not there.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let a = log("a").await;
    assert_eq!(a.len(), 2, "only the failures: {a:?}");
    for record in &a {
        assert_eq!(record["id"], "cap-2");
        assert_eq!(record["http_status"], 503);
    }
    assert_eq!(log("b").await.len(), 0, "no success is logged");
}

/// A natshook (admin API on) whose one endpoint `name`, on every event, gets `500`
/// from its receiver until the test says otherwise.
struct Failing {
    _nats: NatsServer,
    rx: Receiver,
    natshook: Natshook,
    js: jetstream::Context,
    name: String,
}

impl Failing {
    async fn start(name: &str, settings: &str) -> Self {
        let nats = NatsServer::start();
        let rx = Receiver::with(|_| Reply::status(500)).await;
        let config =
            with_admin(TestConfig::new(nats.url()).endpoint(name, &rx.url("/"), &["*"], settings));
        let natshook = Natshook::start(&config.render()).await;
        let js = jetstream::new(nats.client().await);
        Self {
            _nats: nats,
            rx,
            natshook,
            js,
            name: name.to_string(),
        }
    }

    /// Publishes `n` leads with ids `<prefix>-<i>` and waits until the endpoint holds
    /// `total` dead letters.
    async fn dead_letter(&self, n: usize, prefix: &str, total: usize) {
        publish_all(&self.js, leads(n, prefix)).await;
        self.natshook
            .wait_dead_letters(&self.name, total, Duration::from_secs(40))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_pause_resume_and_dead_letter_replay() {
    let Failing {
        rx, natshook, js, ..
    } = &Failing::start(
        "a",
        "retry_schedule = [\"50ms\"]\nmax_attempts = 2\ndisable_after_failures = 0\nprobe_interval = \"200ms\"",
    )
    .await;
    let replay = |body| {
        natshook.api(
            "POST",
            "/api/endpoints/a/dlq/replay",
            Some(ADMIN_TOKEN),
            body,
        )
    };
    // More than a replay's page (100): the replay goes through three.
    publish_all(js, leads(250, "dl")).await;
    wait_until(Duration::from_secs(40), "250 dead letters", || async {
        natshook.dead_letters("a").len() >= 250
    })
    .await;
    rx.set(|r| match r.id() == "dl-150" {
        true => Reply::status(500),
        false => Reply::ok(),
    });
    let (status, summary) = replay(Some("{\"id\": \"dl-4\"}")).await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["replayed"], serde_json::json!(["dl-4"]));
    let (status, summary) = replay(None).await;
    assert_eq!(status, 200);
    assert_eq!(summary["replayed"].as_array().unwrap().len(), 248);
    assert_eq!(
        summary["failures"].as_array().unwrap().len(),
        1,
        "{summary}"
    );
    let left = natshook.dead_letters("a");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["id"], "dl-150");
    assert_eq!(rx.delivered_ids().len(), 249);
    let (status, _) = replay(Some("{\"bogus\": 1}")).await;
    assert_eq!(status, 400);
    // A script's `{"id": $ID}` with ID unset is not "replay them all".
    let (status, refused) = replay(Some("{\"id\": null}")).await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(natshook.dead_letters("a").len(), 1);

    // Manual pause: nothing is fetched (no probes either) until resume.
    let (status, state) = natshook
        .api("POST", "/api/endpoints/a/pause", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(state["paused"], true);
    assert_eq!(state["pause_reason"], "paused by an operator");
    assert_eq!(
        natshook
            .metric("natshook_endpoint_paused{endpoint=\"a\"}")
            .await,
        Some(1.0)
    );
    let before = rx.count();
    publish_all(js, leads(20, "pz")).await;
    // Nor does a replay send to it, through the API or the CLI.
    let (status, refused) = replay(None).await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("resume it"),
        "{refused}"
    );
    let out = natshook.cli(&["dlq", "replay", "--endpoint", "a", "--all"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("is paused (paused by an operator)"),
        "{stderr}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        rx.count(),
        before,
        "a manually paused endpoint received requests"
    );
    assert_eq!(natshook.dead_letters("a").len(), 1);
    let (_, state) = natshook
        .api("POST", "/api/endpoints/a/resume", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(state["paused"], false);
    rx.wait_for(Duration::from_secs(20), "20 after resume", |r| {
        r.delivered_ids().len() >= 30
    })
    .await;
    assert_eq!(
        natshook
            .metric("natshook_endpoint_paused{endpoint=\"a\"}")
            .await,
        Some(0.0)
    );
}

/// An endpoint renamed in the config leaves its dead letters under the old name:
/// `--to` replays them to the endpoint under its new name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_of_a_renamed_endpoint_replay_to_its_new_name() {
    let failing = &Failing::start("old", "max_attempts = 1\ndisable_after_failures = 0").await;
    failing.dead_letter(2, "renamed", 2).await;
    let Failing { rx, natshook, .. } = failing;
    rx.set(|_| Reply::ok());
    let dir = tempfile::tempdir().expect("tempdir");
    let renamed = dir.path().join("renamed.toml");
    let text = (std::fs::read_to_string(natshook.config_path()).expect("the config"))
        .replace("name = \"old\"", "name = \"new\"")
        .replace("secret-old", "secret-new");
    std::fs::write(&renamed, text).expect("write the config");
    let replay = |args: &[&str]| {
        natshook_command()
            .args(["dlq", "replay", "--endpoint", "old", "--all"])
            .args(args)
            .arg("--config")
            .arg(&renamed)
            .env_remove("RUST_LOG")
            .output()
            .expect("run natshook")
    };
    let out = replay(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no endpoint named 'old'"), "{stderr}");
    let out = replay(&["--to", "new"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("2 replayed, 0 failed"), "{stderr}");
    assert!(natshook.dead_letters("old").is_empty());
    let delivered = rx.delivered_ids();
    assert!(
        delivered.contains_key("renamed-0") && delivered.contains_key("renamed-1"),
        "{delivered:?}"
    );
}

/// A replay whose deliveries succeed but whose records cannot be removed (credentials
/// that may not delete from the dead-letter stream; here the stream denies deletes)
/// stops after three in a row, rather than send every record to be sent again by the
/// next replay; every record stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_that_cannot_remove_its_records_stops_after_three() {
    let failing = &Failing::start("a", "max_attempts = 1\ndisable_after_failures = 0").await;
    failing.dead_letter(5, "stuck", 5).await;
    let Failing {
        rx, natshook, js, ..
    } = failing;
    rx.set(|_| Reply::ok());
    let mut dlq = js.get_stream("NATSHOOK_DLQ").await.unwrap();
    let mut denying = dlq.info().await.unwrap().config.clone();
    denying.deny_delete = true;
    js.update_stream(denying).await.unwrap();
    let (status, summary) = natshook
        .api(
            "POST",
            "/api/endpoints/a/dlq/replay",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["replayed"], serde_json::json!([]), "{summary}");
    let failures = summary["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 3, "{summary}");
    let last = failures[2][1].as_str().unwrap();
    assert!(
        last.contains("delivered, but the record was not removed"),
        "{last}"
    );
    assert!(
        last.ends_with("the replay stops here, and the rest are kept"),
        "{last}"
    );
    assert_eq!(rx.delivered_ids().len(), 3);
    assert_eq!(natshook.dead_letters("a").len(), 5);
}

/// Two replays of one endpoint at once (two replicas, two terminals) each end with
/// their summary: a record the other one removed first counts as removed, not as a
/// failure of the whole replay. Together they deliver every record, and only the one
/// whose receiver still fails stays. It stays first in the stream, so the others are
/// deleted from its middle, where the server answers a second delete differently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_at_once_each_finish_and_together_deliver_every_record() {
    let failing = &Failing::start("a", "max_attempts = 1\ndisable_after_failures = 0").await;
    failing.dead_letter(1, "first", 1).await;
    failing.dead_letter(200, "twice", 201).await;
    let Failing { rx, natshook, .. } = failing;
    rx.set(|r| match r.id().starts_with("first") {
        true => Reply::status(500),
        false => Reply::ok(),
    });
    let replay = || {
        natshook.api(
            "POST",
            "/api/endpoints/a/dlq/replay",
            Some(ADMIN_TOKEN),
            None,
        )
    };
    let ((first, one), (second, other)) = tokio::join!(replay(), replay());
    assert_eq!((first, second), (200, 200), "{one}\n{other}");
    for summary in [&one, &other] {
        let failures = summary["failures"].as_array().unwrap();
        assert_eq!(failures.len(), 1, "{summary}");
        assert_eq!(failures[0][0], "first-0", "{summary}");
    }
    let replayed: BTreeSet<&str> = (one["replayed"].as_array().unwrap().iter())
        .chain(other["replayed"].as_array().unwrap())
        .filter_map(|id| id.as_str())
        .collect();
    assert_eq!(replayed.len(), 200);
    let left = natshook.dead_letters("a");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["id"], "first-0");
    assert_eq!(rx.delivered_ids().len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_removes_endpoints_during_traffic_and_loses_nothing() {
    let nats = NatsServer::start();
    let keep = Receiver::with(|_| Reply::ok().delay(Duration::from_millis(2))).await;
    let gone = Receiver::with(|_| Reply::ok().delay(Duration::from_millis(2))).await;
    let new = Receiver::start().await;
    let before = TestConfig::new(nats.url())
        .endpoint("keep", &keep.url("/"), &["*"], "concurrency = 8")
        .endpoint("gone", &gone.url("/"), &["*"], "concurrency = 8");
    let after = TestConfig::new(nats.url())
        .endpoint("keep", &keep.url("/"), &["*"], "concurrency = 8")
        .endpoint("new", &new.url("/"), &["lead.created"], "");
    let natshook = Natshook::start(&before.render()).await;
    let js = jetstream::new(nats.client().await);

    let publisher = {
        let js = js.clone();
        tokio::spawn(async move {
            for chunk in 0..20 {
                publish_all(&js, leads(100, &format!("r{chunk}"))).await;
                // Slow enough that the reload (file polled every 2 s) lands mid-stream.
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    keep.wait_for(Duration::from_secs(20), "traffic under way", |r| {
        r.count() >= 300
    })
    .await;
    natshook.rewrite_config(&after.render());
    let natshook_logs = || natshook.logs();
    wait_until(Duration::from_secs(15), "reload", || {
        let logs = natshook_logs();
        async move { logs.contains("config reloaded") }
    })
    .await;
    publisher.await.unwrap();
    let all: Vec<String> = (0..20)
        .flat_map(|c| (0..100).map(move |i| format!("r{c}-{i}")))
        .collect();

    keep.wait_for(Duration::from_secs(60), "keep: all 2000", |r| {
        r.delivered_ids().len() >= 2000
    })
    .await;
    new.wait_for(Duration::from_secs(60), "new: all 2000", |r| {
        r.delivered_ids().len() >= 2000
    })
    .await;
    let keep_ids: BTreeSet<String> = keep.delivered_ids().into_keys().collect();
    let new_ids: BTreeSet<String> = new.delivered_ids().into_keys().collect();
    for id in &all {
        assert!(keep_ids.contains(id), "keep lost {id}");
        assert!(new_ids.contains(id), "new missed {id}");
    }
    // The unchanged endpoint was not restarted by the reload.
    let logs = natshook.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("config reloaded"))
        .unwrap();
    assert!(line.contains("restarted=[]"), "{line}");
    assert!(
        line.contains("added=[\"new\"]") && line.contains("removed=[\"gone\"]"),
        "{line}"
    );
    // The removed endpoint finished what it had in flight: every request it got was
    // answered and acked, so a later re-add resumes after them, without a gap.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        gone.received().iter().all(|r| r.replied == 200),
        "a removed endpoint's in-flight delivery was cut off"
    );
    let gone_count = gone.delivered_ids().len();
    assert!(gone_count > 0 && gone_count < 2000, "gone got {gone_count}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        gone.delivered_ids().len(),
        gone_count,
        "a removed endpoint kept receiving"
    );
    // Its series left with it; the others' stay.
    wait_until(Duration::from_secs(10), "no series of gone", || async {
        !natshook.metrics().await.contains("endpoint=\"gone\"")
    })
    .await;
    let metrics = natshook.metrics().await;
    for name in ["keep", "new"] {
        assert!(
            metrics.contains(&format!("natshook_deliveries_total{{endpoint=\"{name}\"")),
            "{name}: {metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_changed_endpoint_and_an_invalid_config_is_rejected() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let rx2 = Receiver::start().await;
    let config = TestConfig::new(nats.url()).endpoint("a", &rx.url("/one"), &["*"], "");
    let natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    deliver_leads(&js, &rx, 10, "h1").await;

    // An invalid config is rejected and the running one keeps delivering.
    reload(
        &natshook,
        &config.render().replace("events = [\"*\"]", "events = []"),
        "config reload rejected",
        "rejection logged",
    )
    .await;
    assert!(natshook
        .logs()
        .contains("endpoints[0].events: must list at least one"));
    publish_all(&js, leads(10, "h2")).await;
    rx.wait_for(Duration::from_secs(20), "20", |r| {
        r.delivered_ids().len() >= 20
    })
    .await;

    // A changed URL restarts that endpoint; the next messages go to the new URL.
    let moved = TestConfig::new(nats.url()).endpoint("a", &rx2.url("/two"), &["*"], "");
    reload(
        &natshook,
        &moved.render(),
        "restarted=[\"a\"]",
        "restart logged",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish_one(&js, "crm.lead.created", "moved").await;
    rx2.wait_for(Duration::from_secs(20), "moved", |r| {
        r.delivered_ids().contains_key("moved")
    })
    .await;
    assert!(!rx.delivered_ids().contains_key("moved"));
    assert_eq!(rx2.received()[0].path, "/two");
}

/// One endpoint runs on one thread, whose file reads go to the blocking pool: a
/// changed config file is still seen without a SIGHUP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_changed_on_disk_reloads_without_a_signal() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let rx2 = Receiver::start().await;
    let config = TestConfig::new(nats.url()).endpoint("a", &rx.url("/one"), &["*"], "");
    let natshook = Natshook::start(&config.render()).await;
    assert!(natshook.logs().contains("running on one thread"));
    let js = jetstream::new(nats.client().await);
    deliver_leads(&js, &rx, 3, "before").await;

    let moved = TestConfig::new(nats.url()).endpoint("a", &rx2.url("/two"), &["*"], "");
    natshook.rewrite_config(&moved.render());
    wait_until(Duration::from_secs(10), "the reload", || {
        let logs = natshook.logs();
        async move { logs.contains("trigger=\"file changed\"") && logs.contains("restarted=[\"a\"]") }
    })
    .await;
    publish_one(&js, "crm.lead.created", "moved").await;
    rx2.wait_for(Duration::from_secs(20), "moved", |r| {
        r.delivered_ids().contains_key("moved")
    })
    .await;
    assert!(!rx.delivered_ids().contains_key("moved"));
}

/// While natshook starts (here: NATS unreachable) a SIGHUP does not end it, and an
/// edit of the file is not taken for what it runs: it applies once it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_or_an_edit_while_starting_is_a_reload_asked_for() {
    let mut nats = NatsServer::start();
    let (rx, moved_rx, hup_rx) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    let edited = TestConfig::new(nats.url()).endpoint("a", &rx.url("/one"), &["*"], "");
    let signalled = TestConfig::new(nats.url()).endpoint("b", &hup_rx.url("/"), &["*"], "");
    nats.kill();
    let mut edited_run = Natshook::start_listening(&edited.render()).await;
    let mut signalled_run = Natshook::start_listening(&signalled.render()).await;
    signalled_run.signal("HUP");
    let moved = TestConfig::new(nats.url()).endpoint("a", &moved_rx.url("/two"), &["*"], "");
    edited_run.rewrite_config(&moved.render());
    tokio::time::sleep(Duration::from_millis(500)).await;

    nats.restart();
    edited_run.wait_ready(Duration::from_secs(30)).await;
    signalled_run.wait_ready(Duration::from_secs(30)).await;
    wait_until(Duration::from_secs(10), "the edit applied", || {
        let logs = edited_run.logs();
        async move { logs.contains("restarted=[\"a\"]") }
    })
    .await;
    let js = jetstream::new(nats.client().await);
    publish_one(&js, "crm.lead.created", "after").await;
    moved_rx
        .wait_for(Duration::from_secs(20), "after, at the edited URL", |r| {
            r.delivered_ids().contains_key("after")
        })
        .await;
    hup_rx
        .wait_for(
            Duration::from_secs(20),
            "after, by the signalled one",
            |r| r.delivered_ids().contains_key("after"),
        )
        .await;
    assert_eq!(rx.count(), 0, "the URL loaded before the edit was used");
}

/// A config refused for something outside the file (a secret file not there yet) is
/// tried again until it applies, and the refusal is logged once, not on every try.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reload_is_tried_again_until_what_it_needs_is_there() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let config = TestConfig::new(nats.url()).endpoint("a", &rx.url("/"), &["*"], "");
    let natshook = Natshook::start(&config.render()).await;
    let gauge = "natshook_config_last_reload_successful";
    assert_eq!(natshook.metric(gauge).await, Some(1.0));
    let secret_file = natshook.config_path().with_file_name("later.secret");
    let needs_file = config.render().replace(
        "secret = { value = \"secret-a\" }",
        &format!("secret = {{ file = \"{}\" }}", secret_file.display()),
    );
    natshook.rewrite_config(&needs_file);
    natshook
        .wait_metric(gauge, 0.0, Duration::from_secs(10), "the refusal")
        .await;
    wait_until(Duration::from_secs(20), "a second try", || {
        let logs = natshook.logs();
        async move { logs.contains("trying the refused config again") }
    })
    .await;
    let logs = natshook.logs();
    assert_eq!(
        logs.matches("config reload rejected").count(),
        1,
        "the same refusal logged again: {logs}"
    );
    assert!(logs.contains("later.secret"), "{logs}");

    std::fs::write(&secret_file, "the-new-secret").expect("write the secret");
    natshook
        .wait_metric(gauge, 1.0, Duration::from_secs(20), "the config applied")
        .await;
    assert!(natshook
        .logs()
        .contains("the config refused before is now applied"));
    let js = jetstream::new(nats.client().await);
    publish_one(&js, "crm.lead.created", "signed-anew").await;
    rx.wait_for(Duration::from_secs(20), "signed-anew", |r| {
        r.delivered_ids().contains_key("signed-anew")
    })
    .await;
    let got = rx.received().into_iter().find(|r| r.id() == "signed-anew");
    let got = got.expect("received");
    assert!(hex_signer("the-new-secret")
        .verify(&got.body, &got.headers)
        .is_ok());
}

/// A reload that restarts an endpoint lets its deliveries under way end in the
/// background; they still count against its `concurrency`, so its receiver never
/// has more requests at once than that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_endpoint_stays_within_its_concurrency_while_old_deliveries_end() {
    let nats = NatsServer::start();
    let hold = Duration::from_millis(1500);
    let rx = Receiver::with(move |_| Reply::ok().delay(hold)).await;
    let settings = "concurrency = 2\ntimeout = \"10s\"";
    let config = TestConfig::new(nats.url()).endpoint("a", &rx.url("/one"), &["*"], settings);
    let natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    publish_all(&js, leads(8, "c")).await;
    rx.wait_for(Duration::from_secs(10), "2 in flight", |r| r.count() >= 2)
        .await;
    let moved = TestConfig::new(nats.url()).endpoint("a", &rx.url("/two"), &["*"], settings);
    reload(
        &natshook,
        &moved.render(),
        "restarted=[\"a\"]",
        "the restart",
    )
    .await;
    rx.wait_for(Duration::from_secs(30), "all 8", |r| {
        r.delivered_ids().len() >= 8
    })
    .await;
    // Each request is answered `hold` after it arrives: count those under way as each
    // one arrives (a little slack for the answer's way back).
    let arrivals: Vec<Instant> = rx.received().iter().map(|r| r.at).collect();
    let busiest = (arrivals.iter())
        .map(|a| {
            (arrivals.iter())
                .filter(|b| *b <= a && **b + hold > *a + Duration::from_millis(200))
                .count()
        })
        .max();
    assert_eq!(busiest, Some(2), "more than concurrency 2 at once");
    assert!(rx.received().iter().any(|r| r.path == "/two"));
}

/// Whether the pause-state bucket exists and holds a pause of `endpoint`.
async fn stored_pause(js: &jetstream::Context, endpoint: &str) -> bool {
    let Ok(kv) = js.get_key_value("NATSHOOK_STATE").await else {
        return false;
    };
    let key = format!("paused.{endpoint}");
    kv.get(key).await.ok().flatten().is_some()
}

/// The pause-state bucket deleted under a running natshook (by hand, or a server
/// that lost its store) is made again: a pause taken afterwards is shared and
/// outlives a restart, and one taken before is written back, also into a bucket
/// someone else made again first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_pause_state_bucket_is_made_again_and_pauses_outlive_a_restart() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let config = with_admin(
        TestConfig::new(nats.url())
            .endpoint("a", &rx.url("/a"), &["*"], "")
            .endpoint("b", &rx.url("/b"), &["*"], ""),
    );
    let mut natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    let (status, _) = natshook
        .api("POST", "/api/endpoints/a/pause", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    js.delete_stream("KV_NATSHOOK_STATE")
        .await
        .expect("delete the bucket");
    let (status, _) = natshook
        .api("POST", "/api/endpoints/b/pause", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 200);
    wait_until(Duration::from_secs(20), "both pauses stored again", || {
        let js = js.clone();
        async move { stored_pause(&js, "a").await && stored_pause(&js, "b").await }
    })
    .await;

    natshook.terminate().await;
    natshook.spawn().await;
    for name in ["a", "b"] {
        let series = format!("natshook_endpoint_paused{{endpoint=\"{name}\"}}");
        assert_eq!(natshook.metric(&series).await, Some(1.0), "{name}");
    }
    publish_one(&js, "crm.lead.created", "held").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rx.count(), 0, "a paused endpoint delivered");

    // Gone again, and the first change after is a resume: the pauses written back
    // with the bucket do not undo it.
    js.delete_stream("KV_NATSHOOK_STATE")
        .await
        .expect("delete the bucket");
    let (status, _) = natshook
        .api("POST", "/api/endpoints/a/resume", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 200);
    wait_until(Duration::from_secs(20), "b's pause stored again", || {
        let js = js.clone();
        async move { stored_pause(&js, "b").await }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(stored_pause(&js, "b").await, "the bucket is there");
    assert!(!stored_pause(&js, "a").await, "the resume undone");
    rx.wait_for(Duration::from_secs(10), "a delivers again", |r| {
        r.received().iter().any(|q| q.path == "/a")
    })
    .await;

    // Gone, and made again empty by someone else (a replica starting) before this
    // process writes anything: it is another bucket all the same.
    js.delete_stream("KV_NATSHOOK_STATE")
        .await
        .expect("delete the bucket");
    js.create_key_value(jetstream::kv::Config {
        bucket: "NATSHOOK_STATE".into(),
        history: 1,
        ..Default::default()
    })
    .await
    .expect("make the bucket again");
    wait_until(Duration::from_secs(20), "b's pause written back", || {
        let js = js.clone();
        async move { stored_pause(&js, "b").await }
    })
    .await;
    assert!(!stored_pause(&js, "a").await, "the resume undone");
    // The watch follows the new bucket, whichever task noticed it first (the replica
    // census writes every 2 s): another replica's pause there is followed here.
    let kv = js.get_key_value("NATSHOOK_STATE").await.expect("bucket");
    let record = r#"{"cause":"manual","at":"2026-12-06T00:00:00.000Z","by":"other/1"}"#;
    kv.put("paused.a", record.into()).await.expect("pause a");
    natshook
        .wait_metric(
            "natshook_endpoint_paused{endpoint=\"a\"}",
            1.0,
            Duration::from_secs(15),
            "another replica's pause followed",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_a_new_mapping() {
    let nats = NatsServer::start();
    nats.create_stream("EVENTS", &["crm.>", "helpdesk.>"]).await;
    let rx = Receiver::start().await;
    let mut config = TestConfig::new(nats.url()).endpoint("a", &rx.url("/"), &["*"], "");
    config.create_stream = false;
    let natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    publish_one(&js, "crm.lead.deleted", "before").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(rx.received().is_empty(), "unmapped subject delivered");

    config.events.push(("crm.lead.*".into(), "lead.{3}".into()));
    reload(&natshook, &config.render(), "restarted=[\"a\"]", "reload").await;
    publish_one(&js, "crm.lead.deleted", "after").await;
    rx.wait_for(Duration::from_secs(20), "the newly mapped event", |r| {
        r.delivered_ids().contains_key("after")
    })
    .await;
    let got = rx.received();
    let after = got.iter().find(|r| r.id() == "after").unwrap();
    assert_eq!(after.header("x-webhook-event"), "lead.deleted");
    // "before" was on no mapped subject when it was stored; whether it is delivered now
    // depends on whether the endpoint's consumer had already passed it (here it had
    // not: nothing had matched its old filter), as with any JetStream filter change.
}

/// A mapping on subjects the stream does not hold can never match a message: natshook
/// says so at start (naming the subjects), and under `create_stream` adds them to the
/// stream, so that their messages are stored and delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapping_the_stream_does_not_hold_is_named_or_added() {
    let nats = NatsServer::start();
    nats.create_stream("EVENTS", &["crm.>", "helpdesk.>", "shop.order.created"])
        .await;
    let rx = Receiver::start().await;
    let mut config = TestConfig::new(nats.url()).endpoint("a", &rx.url("/"), &["*"], "");
    config.create_stream = false;
    config
        .events
        .push(("billing.invoice.*".into(), "invoice.{3}".into()));
    // Held in part (crm.lead.deleted): gets messages, and is neither named nor added.
    config
        .events
        .push(("*.lead.deleted".into(), "lead.deleted".into()));
    // Covers what the stream holds of it: widened under create_stream.
    config
        .events
        .push(("shop.order.*".into(), "order.{3}".into()));
    let natshook = Natshook::start(&config.render()).await;
    let warned = |n: &Natshook| {
        n.logs()
            .lines()
            .find(|l| l.contains("mappings on subjects the stream does not hold"))
            .map(str::to_string)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        if let Some(line) = warned(&natshook) {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "no warning:\n{}",
            natshook.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(line.contains("billing.invoice.*"), "{line}");
    assert!(!line.contains("crm.lead"), "{line}");
    assert!(!line.contains("*.lead.deleted"), "{line}");
    assert!(!line.contains("shop.order.*"), "{line}");
    drop(natshook);

    config.create_stream = true;
    let natshook = Natshook::start(&config.render()).await;
    assert!(warned(&natshook).is_none(), "{}", natshook.logs());
    assert!(
        !natshook.logs().contains("cannot add mapped subjects"),
        "{}",
        natshook.logs()
    );
    let js = jetstream::new(nats.client().await);
    let mut stream = js.get_stream("EVENTS").await.unwrap();
    let subjects = stream.info().await.unwrap().config.subjects.clone();
    assert!(
        subjects.contains(&"billing.invoice.*".to_string()),
        "{subjects:?}"
    );
    assert!(
        !subjects.contains(&"*.lead.deleted".to_string()),
        "{subjects:?}"
    );
    assert!(
        subjects.contains(&"shop.order.*".to_string()),
        "{subjects:?}"
    );
    assert!(
        !subjects.contains(&"shop.order.created".to_string()),
        "{subjects:?}"
    );
    publish_one(&js, "billing.invoice.paid", "paid").await;
    rx.wait_for(
        Duration::from_secs(20),
        "the message on the added subject",
        |r| r.delivered_ids().contains_key("paid"),
    )
    .await;
}

/// A consumer filter changed by someone else (another deployment with an endpoint of
/// the same name, on the same stream and consumer prefix) is named in the log, with
/// what to do, once it has stayed changed for two minutes (one deployment's replicas
/// reload a changed config at different times); natshook does not write it back (see
/// `app::pending`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_filter_changed_by_another_deployment_is_named() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let config = TestConfig::new(nats.url()).endpoint("a", &rx.url("/"), &["*"], "");
    let natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    let stream = js.get_stream("EVENTS").await.unwrap();
    let mut theirs = stream
        .consumer_info("natshook-a")
        .await
        .unwrap()
        .config
        .clone();
    theirs.filter_subject = "crm.lead.deleted".into();
    theirs.filter_subjects = Vec::new();
    stream.update_consumer(theirs).await.unwrap();
    let changed = Instant::now();
    let warning = || {
        (natshook.logs().lines())
            .find(|l| l.contains("consumer filters other subjects than this config gives it"))
            .map(str::to_string)
    };
    tokio::time::sleep(Duration::from_secs(100)).await;
    assert_eq!(warning(), None, "before two minutes");
    let line = loop {
        if let Some(line) = warning() {
            break line;
        }
        assert!(
            changed.elapsed() < Duration::from_secs(200),
            "no warning:\n{}",
            natshook.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(line.contains("consumer=natshook-a"), "{line}");
    assert!(line.contains("crm.lead.deleted"), "{line}");
    assert!(line.contains("nats.consumer_prefix"), "{line}");
}

/// Kills the child when the test ends, passed or not.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stderr_does_not_stop_deliveries() {
    use std::process::Stdio;
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let config = TestConfig::new(nats.url()).endpoint("a", &rx.url("/"), &["*"], "");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = dir.path().join("natshook.toml");
    std::fs::write(
        &path,
        config.render().replace("{http_port}", &port.to_string()),
    )
    .unwrap();
    // stderr is a pipe whose reader is gone, as after `natshook run … 2>&1 | head -1`;
    // every log line (successes at debug) is a failed write.
    let mut child = natshook_command()
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "natshook=debug,info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn natshook");
    drop(child.stderr.take());
    let mut natshook = Running(child);
    let readyz = format!("http://127.0.0.1:{port}/readyz");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(http_get(&readyz).await, Ok((200, _))) {
        if let Ok(Some(status)) = natshook.0.try_wait() {
            panic!("natshook exited with {status} once stderr was closed");
        }
        assert!(Instant::now() < deadline, "natshook never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let js = jetstream::new(nats.client().await);
    deliver_leads(&js, &rx, 100, "epipe").await;
    assert!(
        natshook.0.try_wait().unwrap().is_none(),
        "natshook exited while delivering"
    );
    common::signal(natshook.0.id(), "TERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(s) = natshook.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "natshook did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(exit.code(), Some(0), "shutdown with a closed stderr");
}

/// The names of the endpoints the admin API lists.
async fn listed_endpoints(natshook: &Natshook) -> Vec<String> {
    let (status, body) = natshook
        .api("GET", "/api/endpoints", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body["endpoints"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|e| e["name"].as_str().expect("a name").to_string())
        .collect()
}

/// The last log line that contains `what`.
fn last_line(natshook: &Natshook, what: &str) -> String {
    natshook
        .logs()
        .lines()
        .rev()
        .find(|l| l.contains(what))
        .unwrap_or_else(|| panic!("no log line with {what:?}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_fails_half_way_leaves_the_running_set_as_it_was() {
    let nats = NatsServer::start();
    let pki = pki();
    let a = Receiver::start().await;
    let b = Receiver::start().await;
    let b_moved = Receiver::start().await;
    let c = Receiver::start().await;
    let endpoint =
        |name: &str, rx: &Receiver, extra: &str| (name.to_string(), rx.url("/"), extra.to_string());
    let config = |endpoints: &[(String, String, String)]| {
        let mut config = TestConfig::new(nats.url());
        for (name, url, extra) in endpoints {
            config = config.endpoint(name, url, &["*"], extra);
        }
        with_admin(config).render()
    };
    let before = config(&[
        endpoint("a", &a, ""),
        endpoint("b", &b, ""),
        endpoint("c", &c, ""),
    ]);
    let natshook = Natshook::start(&before).await;
    let js = jetstream::new(nats.client().await);
    publish_all(&js, leads(5, "pre")).await;
    for (rx, name) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        rx.wait_for(
            Duration::from_secs(20),
            &format!("{name}: 5 before the reload"),
            |r| r.delivered_ids().len() >= 5,
        )
        .await;
    }

    // The new config removes a, moves b and gives c a client certificate with a key
    // that is not its own: valid as config, refused by the TLS set-up. Endpoints are
    // applied in name order, so a and b come before c's failure.
    let wrong_key = format!(
        "cert_file = \"{}\"\nkey_file = \"{}\"",
        pki.path("client.pem"),
        pki.path("server-key.pem")
    );
    let failing = config(&[endpoint("b", &b_moved, ""), endpoint("c", &c, &wrong_key)]);
    reload(
        &natshook,
        &failing,
        "config reload failed",
        "the failed reload",
    )
    .await;
    let failed = last_line(&natshook, "config reload failed");
    assert!(failed.contains("endpoints[1] (c)"), "{failed}");

    // Every endpoint of the old set still runs, once, with its old settings.
    assert_eq!(listed_endpoints(&natshook).await, ["a", "b", "c"]);
    assert_eq!(natshook.get("/readyz").await.map(|r| r.0), Ok(200));
    publish_all(&js, leads(20, "post")).await;
    for (rx, name) in [(&a, "a"), (&c, "c"), (&b, "b")] {
        rx.wait_for(Duration::from_secs(20), &format!("{name}: all 25"), |r| {
            r.delivered_ids().len() >= 25
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        b_moved.count(),
        0,
        "b also ran with the settings of the failed reload"
    );

    // The running set is the old config: reloading that changes nothing.
    reload(
        &natshook,
        &before,
        "config reloaded",
        "reload of the old config",
    )
    .await;
    let line = last_line(&natshook, "config reloaded");
    assert!(
        line.contains("added=[]") && line.contains("removed=[]") && line.contains("restarted=[]"),
        "{line}"
    );

    // Removing a stops its one worker: a gets nothing more, the others get everything.
    let without_a = config(&[endpoint("b", &b, ""), endpoint("c", &c, "")]);
    reload(&natshook, &without_a, "removed=[\"a\"]", "removal of a").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a_count = a.count();
    publish_all(&js, leads(20, "later")).await;
    for (rx, name) in [(&b, "b"), (&c, "c")] {
        rx.wait_for(Duration::from_secs(20), &format!("{name}: all 45"), |r| {
            r.delivered_ids().len() >= 45
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.count(), a_count, "a removed endpoint kept receiving");
    for rx in [&a, &b, &c] {
        assert!(
            rx.received().iter().all(|r| r.nth_for_id == 1),
            "a message was delivered twice"
        );
    }
    assert_eq!(listed_endpoints(&natshook).await, ["b", "c"]);
}

#[test]
fn check_refuses_tls_files_without_what_their_key_names() {
    let pki = pki();
    let key = pki.path("client-key.pem");
    let cert = pki.path("client.pem");
    let (code, err) = check_config(&one_endpoint(&format!(
        "url = \"https://example.com/\"\nevents = [\"*\"]\nsecret = \"s\"\nca_file = \"{key}\"\ncert_file = \"{key}\"\nkey_file = \"{cert}\"\n"
    )));
    assert_eq!(code, 2, "{err}");
    for problem in [
        format!("endpoints[0].ca_file: no certificate in {key}"),
        format!("endpoints[0].cert_file: no certificate in {key}"),
        format!("endpoints[0].key_file: no private key in {cert}"),
    ] {
        assert!(err.contains(&problem), "{problem} not in:\n{err}");
    }
    let (code, err) = check_config(&format!(
        "[defaults]\nca_file = \"{}\"\n{}",
        pki.path("missing.pem"),
        one_endpoint("url = \"https://example.com/\"\nevents = [\"*\"]\nsecret = \"s\"\n")
    ));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("defaults.ca_file: cannot load"), "{err}");
    // The real files pass.
    let (code, err) = check_config(&one_endpoint(&format!(
        "url = \"https://example.com/\"\nevents = [\"*\"]\nsecret = \"s\"\nca_file = \"{}\"\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n",
        pki.path("ca.pem")
    )));
    assert_eq!(code, 0, "{err}");
}

/// A config nested thousands of levels deep (toml_edit's limits of 80 nested tables and
/// 80-part keys multiply) overflowed the stack of the worker that reloaded it and took
/// natshook down. Now it is refused at once, off the async workers: /healthz keeps
/// answering and delivery goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deeply_nested_config_is_refused_on_reload_without_stalling() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let mut config = TestConfig::new(nats.url()).endpoint("a", &rx.url("/"), &["*"], "");
    let natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    deliver_leads(&js, &rx, 5, "d1").await;

    config.top = format!(
        "deep = {}1{}\n",
        format!("{{ {} = ", ["k"; 79].join(".")).repeat(79),
        "}".repeat(79)
    );
    natshook.rewrite_config(&config.render());
    natshook.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !natshook.logs().contains("config reload rejected") {
        let asked = Instant::now();
        let health = natshook.get("/healthz").await;
        assert_eq!(
            health.map(|(status, _)| status),
            Ok(200),
            "{}",
            natshook.logs()
        );
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "/healthz took {:?}",
            asked.elapsed()
        );
        assert!(
            Instant::now() < deadline,
            "no rejection logged:\n{}",
            natshook.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        natshook
            .logs()
            .contains("config: nests deeper than 64 levels"),
        "{}",
        natshook.logs()
    );
    publish_all(&js, leads(5, "d2")).await;
    rx.wait_for(Duration::from_secs(20), "all 10", |r| {
        r.delivered_ids().len() >= 10
    })
    .await;
    let ids = rx.delivered_ids();
    for id in (1..=2).flat_map(|run| (0..5).map(move |i| format!("d{run}-{i}"))) {
        assert!(ids.contains_key(&id), "{id} lost: {ids:?}");
    }
}

/// Pauses endpoint `a`, publishes a backlog and reads `natshook_consumer_pending` as the
/// poller reports it (every 5 s): it counts the backlog while paused and returns to 0
/// once the resumed endpoint delivered it.
async fn pending_follows_a_paused_backlog(top: &str) {
    const BACKLOG: usize = 25;
    let nats = NatsServer::start();
    let rx = Receiver::with(|_| Reply::ok()).await;
    let mut config =
        with_admin(TestConfig::new(nats.url()).endpoint("a", &rx.url("/"), &["*"], ""));
    config.top = format!("{}\n{top}", config.top);
    let natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    publish_all(&js, leads(1, "first")).await;
    rx.wait_for(Duration::from_secs(20), "the first message", |r| {
        r.delivered_ids().len() == 1
    })
    .await;
    let (status, _) = natshook
        .api("POST", "/api/endpoints/a/pause", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 200);
    publish_all(&js, leads(BACKLOG, "held")).await;
    let series = "natshook_consumer_pending{endpoint=\"a\"}";
    wait_until(Duration::from_secs(20), "pending = the backlog", || async {
        natshook.metric(series).await == Some(BACKLOG as f64)
    })
    .await;
    assert_eq!(
        rx.delivered_ids().len(),
        1,
        "a paused endpoint received requests"
    );
    let (status, _) = natshook
        .api("POST", "/api/endpoints/a/resume", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 200);
    rx.wait_for(Duration::from_secs(20), "the backlog after resume", |r| {
        r.delivered_ids().len() == BACKLOG + 1
    })
    .await;
    wait_until(Duration::from_secs(20), "pending back to 0", || async {
        natshook.metric(series).await == Some(0.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_pending_counts_a_paused_endpoints_backlog() {
    pending_follows_a_paused_backlog("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_pending_counts_a_paused_fan_out_endpoints_backlog() {
    pending_follows_a_paused_backlog("[delivery]\nfan_out = true\n").await;
}

/// Event names a `{n}` template makes of subject tokens are as many as publishers
/// make: past 100 per endpoint they share `event="(other)"`, so a publisher cannot
/// grow the scrape (and natshook's memory) without end. Every message is still
/// delivered under its own event name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_names_made_from_subjects_have_bounded_series() {
    const KINDS: usize = 130;
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let config = TestConfig::new(nats.url()).endpoint("a", &rx.url("/"), &["*"], "");
    let natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    let tickets = (0..KINDS)
        .map(|i| {
            (
                format!("helpdesk.ticket.kind{i}"),
                Bytes::from_static(b"{}"),
                Some(format!("t-{i}")),
            )
        })
        .collect();
    publish_all(&js, tickets).await;
    rx.wait_for(Duration::from_secs(20), "every ticket", |r| {
        r.delivered_ids().len() == KINDS
    })
    .await;
    let events: BTreeSet<String> = rx
        .received()
        .iter()
        .map(|r| r.header("x-webhook-event").to_string())
        .collect();
    assert_eq!(events.len(), KINDS, "each request names its own event");
    let other = "natshook_deliveries_total{endpoint=\"a\",event=\"(other)\",outcome=\"success\"}";
    wait_until(Duration::from_secs(10), "all counted", || async {
        natshook.metric(other).await == Some((KINDS - 100) as f64)
    })
    .await;
    let metrics = natshook.metrics().await;
    let series = metrics
        .lines()
        .filter(|l| l.starts_with("natshook_deliveries_total{endpoint=\"a\""))
        .count();
    assert_eq!(series, 101, "{metrics}");
    assert!(natshook
        .logs()
        .contains("too many event names made from subject tokens"));
}

/// `dlq list` reads records only: an endpoint secret it cannot read (a file that is
/// not mounted in the operator's shell, an env variable not set there) does not stop
/// it. `dlq replay`, which signs, still needs the secret and names its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_list_needs_no_endpoint_secret_and_replay_names_the_one_it_needs() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let secrets = tempfile::tempdir().expect("tempdir");
    let secret = secrets.path().join("a.secret");
    std::fs::write(&secret, "secret-a").expect("write the secret");
    let config = TestConfig::new(nats.url())
        .endpoint("a", &rx.url("/a"), &["*"], "max_body = 8")
        .render()
        .replace(
            "secret = { value = \"secret-a\" }",
            &format!("secret = {{ file = \"{}\" }}", secret.display()),
        );
    let natshook = Natshook::start(&config).await;
    let js = jetstream::new(nats.client().await);
    let big = Bytes::from(format!("{{\"pad\":\"{}\"}}", "x".repeat(64)));
    publish_all(
        &js,
        vec![("crm.lead.created".into(), big, Some("too-big".into()))],
    )
    .await;
    let dead = natshook
        .wait_dead_letters("a", 1, Duration::from_secs(20))
        .await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    // An id that is not there is the request's fault (exit 2), as is a name that
    // would ask for every endpoint's records.
    let out = natshook.cli(&["dlq", "replay", "--endpoint", "a", "--id", "nosuch"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("has that id"), "{stderr}");
    let out = natshook.cli(&["dlq", "list", "--endpoint", ">"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is not an endpoint name"), "{stderr}");
    assert!(out.stdout.is_empty());

    std::fs::remove_file(&secret).expect("remove the secret");
    let out = natshook.cli(&["dlq", "list", "--endpoint", "a"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // A command's own lines only: no connection log among them (RUST_LOG unset).
    assert_eq!(stderr.trim(), "1 record(s)", "{stderr}");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("\"id\":\"too-big\""), "{listed}");

    let out = natshook.cli(&["dlq", "replay", "--endpoint", "a", "--all"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("endpoints[0].secret"), "{stderr}");
}
