//! Runtime endpoints from the operator's side: `natshook endpoints …` against the
//! registry bucket, skipping a disabled endpoint's backlog on re-enabling, the
//! operator events of enabling and disabling, and re-enabling a paused endpoint.

mod common;

use std::time::Duration;

use async_nats::jetstream;
use common::admin_api as api;
use common::*;
use serde_json::{json, Value};

/// Admin API and registry on, one file endpoint `file` (to `file_rx`); leads on
/// `events.<tenant>.lead.created` carry a tenant.
fn config(nats: &NatsServer, file_rx: &Receiver) -> String {
    let mut c = with_admin(
        TestConfig::new(nats.url())
            .mapping("events.*.lead.created", "lead.created", "tenant = \"{2}\"")
            .endpoint("file", &file_rx.url("/file"), &["lead.created"], ""),
    );
    c.top = format!(
        "{}\n[registry]\nenabled = true\nmin_retry_delay = \"10ms\"\n",
        c.top
    );
    c.render()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `natshook endpoints <args> --config …`: (exit code, stdout, stderr).
fn endpoints(n: &Natshook, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["endpoints"];
    all.extend_from_slice(args);
    let out = n.cli(&all);
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

/// Waits until `name` no longer runs on `n` (disabled or deleted).
async fn wait_stopped(n: &Natshook, name: &str) {
    wait_until(
        Duration::from_secs(20),
        &format!("{name} stopped"),
        || async {
            api(n, "GET", &format!("/api/endpoints/{name}"), None)
                .await
                .1
                .get("bound")
                .is_none()
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_adds_lists_disables_enables_rotates_and_removes_runtime_endpoints() {
    let nats = NatsServer::start();
    let file_rx = Receiver::start().await;
    let rx = Receiver::start().await;
    let n = Natshook::start(&config(&nats, &file_rx)).await;
    let js = jetstream::new(nats.client().await);

    // add with flags: the secret alone on stdout, this once.
    let url = rx.url("/acme");
    let (code, out, err) = endpoints(
        &n,
        &[
            "add",
            "--name",
            "acme",
            "--url",
            &url,
            "--event",
            "lead.created",
            "--tenant",
            "org_1",
            "--scheme",
            "standard",
            "--allow-http",
            "--allow-private",
            "--description",
            "Acme's CRM",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let secret = out.trim().to_string();
    assert!(
        secret.starts_with("whsec_") && !secret.contains('\n'),
        "{out}"
    );
    assert!(err.contains("created endpoint 'acme'"), "{err}");
    wait_bound(&n, "acme").await;
    publish_all(&js, tenant_leads("org_1", 3, "a")).await;
    rx.wait_for(Duration::from_secs(20), "3 delivered", |r| {
        r.delivered_ids().len() >= 3
    })
    .await;
    assert_eq!(verify_received(&secret, &rx.received()), (3, 0));

    // add with a JSON body on stdin, its own secret, flags over the body.
    let body = json!({
        "name": "beta", "url": rx.url("/beta"), "events": ["lead.created"],
        "secret": "beta-secret-0123456789", "allow_http": true, "allow_private": true,
        "tenant": "org_9",
    });
    let out = n.cli_with_stdin(
        &[
            "endpoints",
            "add",
            "--json",
            "-",
            "--tenant",
            "org_2",
            "--disabled",
        ],
        body.to_string().as_bytes(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "beta-secret-0123456789");

    // list: a table and JSON, file and runtime endpoints, never a secret.
    let (code, table, err) = endpoints(&n, &["list"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("TENANT"),
        "{table}"
    );
    let row = |name: &str| -> Vec<String> {
        lines
            .iter()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name} in\n{table}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        row("acme")[..5],
        ["acme", "api", "yes", "org_1", "lead.created"]
    );
    assert_eq!(row("beta")[..4], ["beta", "api", "no", "org_2"]);
    assert_eq!(row("file")[..3], ["file", "file", "yes"]);
    let (code, listed, _) = endpoints(&n, &["list", "--json", "--tenant", "org_1"]);
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(&listed).expect("list --json is JSON");
    let all = listed["endpoints"].as_array().expect("a list");
    assert_eq!(all.len(), 1, "{listed}");
    assert_eq!(all[0]["name"], "acme");
    assert_eq!(all[0]["source"], "api");
    assert!(all[0]["revision"].as_u64().is_some());
    let (_, everything, _) = endpoints(&n, &["list", "--json"]);
    for s in [&secret, "beta-secret-0123456789"] {
        assert!(
            !table.contains(s) && !everything.contains(s),
            "a secret was listed"
        );
    }

    // disable: the endpoint stops and its messages wait; enable: they arrive.
    let (code, _, err) = endpoints(&n, &["disable", "acme"]);
    assert_eq!(code, 0, "{err}");
    wait_stopped(&n, "acme").await;
    assert_eq!(
        api(&n, "GET", "/api/endpoints/acme", None).await.1["enabled"],
        false
    );
    publish_all(&js, tenant_leads("org_1", 4, "held")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.delivered_ids().len(), 3, "a disabled endpoint delivered");
    let (code, _, err) = endpoints(&n, &["enable", "acme"]);
    assert_eq!(code, 0, "{err}");
    rx.wait_for(Duration::from_secs(20), "the held 4 delivered", |r| {
        r.delivered_ids().len() >= 7
    })
    .await;

    // rotate-secret: a new secret, printed once; the old one signs too meanwhile.
    let (code, out, err) = endpoints(&n, &["rotate-secret", "acme", "--grace", "1h"]);
    assert_eq!(code, 0, "{err}");
    let new_secret = out.trim().to_string();
    assert!(
        new_secret.starts_with("whsec_") && new_secret != secret,
        "{out}"
    );
    assert!(err.contains("the old one signs too until"), "{err}");
    let (_, one) = api(&n, "GET", "/api/endpoints/acme", None).await;
    assert!(one["previous_secrets_until"].is_string(), "{one}");

    // rm: gone from the registry.
    let (code, _, err) = endpoints(&n, &["rm", "beta"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(api(&n, "GET", "/api/endpoints/beta", None).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_refuses_what_the_api_refuses_in_the_same_words() {
    let nats = NatsServer::start();
    let file_rx = Receiver::start().await;
    let n = Natshook::start(&config(&nats, &file_rx)).await;

    // An invalid endpoint: every problem, in `natshook check`'s words; exit 2.
    let (code, out, err) = endpoints(
        &n,
        &[
            "add",
            "--name",
            "Bad Name",
            "--url",
            "http://10.0.0.1/",
            "--event",
            "nothing.maps.this",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty(), "{out}");
    for expected in [
        "the endpoint is invalid (",
        "  name: 'Bad Name' must match [a-z0-9_-]+",
        "  url: scheme must be https (set allow_http = true to permit http)",
        "  events: no [[events]] mapping produces any of these event names",
    ] {
        assert!(err.contains(expected), "{expected}\nin:\n{err}");
    }
    // The API says the same about the same body.
    let body =
        json!({"name": "Bad Name", "url": "http://10.0.0.1/", "events": ["nothing.maps.this"]});
    let (status, answer) = api(&n, "POST", "/api/endpoints", Some(&body.to_string())).await;
    assert_eq!(status, 422);
    for p in answer["problems"].as_array().expect("problems") {
        let line = format!(
            "  {}: {}",
            p["field"].as_str().unwrap(),
            p["message"].as_str().unwrap()
        );
        assert!(err.contains(&line), "{line}\nnot in:\n{err}");
    }

    // A file endpoint: the API's 409 sentence; exit 2.
    let (_, refused) = api(
        &n,
        "PATCH",
        "/api/endpoints/file",
        Some("{\"enabled\": false}"),
    )
    .await;
    let sentence = refused["error"].as_str().expect("an error").to_string();
    assert!(
        sentence.contains("managed by the config file"),
        "{sentence}"
    );
    for args in [
        &["disable", "file"][..],
        &["enable", "file"],
        &["rm", "file"],
        &["rotate-secret", "file"],
    ] {
        let (code, _, err) = endpoints(&n, args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(&sentence), "{args:?}: {err}");
    }
    let (code, _, err) = endpoints(
        &n,
        &[
            "add",
            "--name",
            "file",
            "--url",
            "https://example.com/",
            "--event",
            "lead.created",
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains(&sentence), "{err}");

    // Unknown names, a bad --json, a config without [registry]: exit 2.
    let (code, _, err) = endpoints(&n, &["rm", "nobody"]);
    assert_eq!(code, 2);
    assert!(err.contains("no endpoint named 'nobody'"), "{err}");
    let (code, _, err) = endpoints(&n, &["add", "--json", "[1]"]);
    assert_eq!(code, 2);
    assert!(err.contains("--json: not a JSON object"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.toml");
    std::fs::write(
        &plain,
        TestConfig::new(nats.url())
            .endpoint("file", &file_rx.url("/file"), &["lead.created"], "")
            .render()
            .replace("{http_port}", &free_port().to_string()),
    )
    .unwrap();
    let out = natshook_command()
        .args(["endpoints", "list", "--config"])
        .arg(&plain)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no [registry] enabled = true"),
        "{}",
        text(&out.stderr)
    );
}

/// A runtime endpoint `name` of tenant `org_1`, retried quickly, created through `n`.
async fn create(n: &Natshook, name: &str, rx: &Receiver, extra: Value) {
    let mut body = json!({
        "name": name, "url": rx.url(&format!("/{name}")), "events": ["lead.created"],
        "tenant": "org_1", "allow_http": true, "allow_private": true,
        "retry_schedule": ["100ms"],
    });
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    let (status, created) = api(n, "POST", "/api/endpoints", Some(&body.to_string())).await;
    assert_eq!(status, 201, "{created}");
}

/// How often each id with `prefix` reached `rx`.
fn ids_with(rx: &Receiver, prefix: &str) -> Vec<usize> {
    rx.delivered_ids()
        .into_iter()
        .filter(|(id, _)| id.starts_with(prefix))
        .map(|(_, n)| n)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_enabling_with_skip_backlog_starts_from_now_on_every_replica() {
    let nats = NatsServer::start();
    let file_rx = Receiver::start().await;
    let rx = Receiver::start().await;
    let text = config(&nats, &file_rx);
    let a = Natshook::start(&text).await;
    let mut b = Natshook::start(&text).await;
    let js = jetstream::new(nats.client().await);
    create(&a, "acme", &rx, json!({})).await;
    wait_bound(&a, "acme").await;
    wait_bound(&b, "acme").await;
    publish_all(&js, tenant_leads("org_1", 3, "before")).await;
    rx.wait_for(Duration::from_secs(20), "3 delivered", |r| {
        r.delivered_ids().len() >= 3
    })
    .await;

    // skip_backlog goes with enabled: true, and is true or false.
    for body in [
        "{\"skip_backlog\": true}",
        "{\"enabled\": false, \"skip_backlog\": true}",
        "{\"enabled\": true, \"skip_backlog\": \"yes\"}",
    ] {
        let (status, err) = api(&a, "PATCH", "/api/endpoints/acme", Some(body)).await;
        assert_eq!(status, 422, "{body}: {err}");
        assert_eq!(err["problems"][0]["field"], "skip_backlog", "{err}");
    }

    // Disabled on one replica: both stop, and what is published now is held.
    let (status, _) = api(
        &a,
        "PATCH",
        "/api/endpoints/acme",
        Some("{\"enabled\": false}"),
    )
    .await;
    assert_eq!(status, 200);
    wait_stopped(&a, "acme").await;
    wait_stopped(&b, "acme").await;
    publish_all(&js, tenant_leads("org_1", 20, "held")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        ids_with(&rx, "held").is_empty(),
        "a disabled endpoint delivered"
    );

    // Re-enabled on the other with skip_backlog: none of the 20 comes, later ones do.
    let (status, changed) = api(
        &b,
        "PATCH",
        "/api/endpoints/acme",
        Some("{\"enabled\": true, \"skip_backlog\": true}"),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    assert!(changed["skip_before"].is_string(), "{changed}");
    assert!(changed.get("skip_backlog").is_none(), "{changed}");
    wait_bound(&a, "acme").await;
    wait_bound(&b, "acme").await;
    publish_all(&js, tenant_leads("org_1", 5, "after")).await;
    rx.wait_for(Duration::from_secs(20), "the 5 after delivered", |r| {
        ids_with(r, "after").len() >= 5
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        ids_with(&rx, "held").is_empty(),
        "the skipped backlog was delivered"
    );
    let consumer = api(&a, "GET", "/api/endpoints/acme", None).await.1["consumer"]
        .as_str()
        .expect("a consumer")
        .to_string();
    let info = consumer_info(&js, "EVENTS", &consumer).await;
    assert_eq!(info.num_pending, 0, "the skipped messages are not pending");

    // A plain disable and re-enable (here with the CLI) delivers what was held.
    let (code, _, err) = endpoints(&a, &["disable", "acme"]);
    assert_eq!(code, 0, "{err}");
    wait_stopped(&a, "acme").await;
    wait_stopped(&b, "acme").await;
    publish_all(&js, tenant_leads("org_1", 6, "again")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        ids_with(&rx, "again").is_empty(),
        "a disabled endpoint delivered"
    );
    let (code, _, err) = endpoints(&a, &["enable", "acme"]);
    assert_eq!(code, 0, "{err}");
    rx.wait_for(Duration::from_secs(20), "the 6 held delivered", |r| {
        ids_with(r, "again").len() >= 6
    })
    .await;

    // A restart binds the same consumer: nothing since skip_before comes again.
    b.terminate().await;
    b.spawn().await;
    wait_bound(&b, "acme").await;
    publish_all(&js, tenant_leads("org_1", 2, "last")).await;
    rx.wait_for(Duration::from_secs(20), "the last 2 delivered", |r| {
        ids_with(r, "last").len() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for prefix in ["after", "again", "last"] {
        assert!(
            ids_with(&rx, prefix).iter().all(|n| *n == 1),
            "{prefix}: delivered again: {:?}",
            rx.delivered_ids()
        );
    }
    assert!(ids_with(&rx, "held").is_empty());
}

/// The `paused` field of `name`'s state on `n`.
async fn paused(n: &Natshook, name: &str) -> Value {
    api(n, "GET", &format!("/api/endpoints/{name}"), None)
        .await
        .1["paused"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_and_enabling_raise_one_operator_event_whichever_process_wrote_it() {
    let nats = NatsServer::start();
    let events = EventWatch::start(&nats).await;
    let file_rx = Receiver::start().await;
    let rx = Receiver::start().await;
    let text = config(&nats, &file_rx);
    let a = Natshook::start(&text).await;
    let b = Natshook::start(&text).await;
    create(&a, "acme", &rx, json!({})).await;
    wait_bound(&b, "acme").await;
    const DISABLED: &str = "natshook.events.endpoint.disabled";
    const ENABLED: &str = "natshook.events.endpoint.enabled";

    // Through the API on one process: one event, not one per replica.
    let (status, _) = api(
        &a,
        "PATCH",
        "/api/endpoints/acme",
        Some("{\"enabled\": false}"),
    )
    .await;
    assert_eq!(status, 200);
    let e = events.wait(Duration::from_secs(10), DISABLED, "acme").await;
    assert_eq!(e["reason"], "admin_api", "{e}");
    assert_eq!(e["tenant"], "org_1", "{e}");
    assert!(
        e["detail"]
            .as_str()
            .unwrap()
            .contains("disabled through the admin API"),
        "{e}"
    );
    wait_stopped(&b, "acme").await;
    // Disabling a disabled endpoint, or changing another key, changes nothing.
    api(
        &b,
        "PATCH",
        "/api/endpoints/acme",
        Some("{\"enabled\": false}"),
    )
    .await;
    api(
        &b,
        "PATCH",
        "/api/endpoints/acme",
        Some("{\"description\": \"x\"}"),
    )
    .await;

    // With the CLI: reason `cli`.
    let (code, _, err) = endpoints(&b, &["enable", "acme"]);
    assert_eq!(code, 0, "{err}");
    let e = events.wait(Duration::from_secs(10), ENABLED, "acme").await;
    assert_eq!(e["reason"], "cli", "{e}");
    assert!(e.get("paused_at").is_none(), "{e}");
    wait_bound(&a, "acme").await;
    // Enabling an enabled endpoint that is not paused says nothing.
    api(
        &a,
        "PATCH",
        "/api/endpoints/acme",
        Some("{\"enabled\": true}"),
    )
    .await;
    let (code, _, err) = endpoints(&a, &["disable", "acme"]);
    assert_eq!(code, 0, "{err}");
    wait_until(
        Duration::from_secs(10),
        "the CLI's disabled event",
        || async { events.of(DISABLED, "acme").len() >= 2 },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let disabled = events.of(DISABLED, "acme");
    assert_eq!(disabled.len(), 2, "{disabled:?}");
    assert_eq!(disabled[1]["reason"], "cli");
    assert_eq!(events.of(ENABLED, "acme").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enabling_a_paused_endpoint_resumes_it_on_every_replica() {
    let nats = NatsServer::start();
    let events = EventWatch::start(&nats).await;
    let file_rx = Receiver::start().await;
    let rx = Receiver::with(|_| Reply::status(503)).await;
    let text = config(&nats, &file_rx);
    let a = Natshook::start(&text).await;
    let b = Natshook::start(&text).await;
    let js = jetstream::new(nats.client().await);
    // Paused after two failures, and no probe within the test: only enabling resumes it.
    create(
        &a,
        "acme",
        &rx,
        json!({"disable_after_failures": 2, "probe_interval": "1h", "probe_max_interval": "1h",
               "max_attempts": 1000}),
    )
    .await;
    wait_bound(&a, "acme").await;
    wait_bound(&b, "acme").await;
    publish_all(&js, tenant_leads("org_1", 4, "p")).await;
    events
        .wait(
            Duration::from_secs(20),
            "natshook.events.endpoint.paused",
            "acme",
        )
        .await;
    for n in [&a, &b] {
        wait_until(Duration::from_secs(10), "paused everywhere", || async {
            paused(n, "acme").await == true
        })
        .await;
    }

    // The receiver is back; enabling (it never was disabled) ends the pause.
    rx.set(|_| Reply::ok());
    let (status, _) = api(
        &b,
        "PATCH",
        "/api/endpoints/acme",
        Some("{\"enabled\": true}"),
    )
    .await;
    assert_eq!(status, 200);
    let e = events
        .wait(
            Duration::from_secs(10),
            "natshook.events.endpoint.enabled",
            "acme",
        )
        .await;
    assert_eq!(e["reason"], "admin_api");
    assert!(e["paused_at"].is_string(), "{e}");
    assert!(
        e["detail"]
            .as_str()
            .unwrap()
            .contains("consecutive failures) ended"),
        "{e}"
    );
    for n in [&a, &b] {
        wait_until(Duration::from_secs(10), "resumed everywhere", || async {
            paused(n, "acme").await == false
        })
        .await;
    }
    rx.wait_for(Duration::from_secs(20), "the 4 delivered", |r| {
        r.delivered_ids().len() >= 4
    })
    .await;

    // An operator's pause ends the same way, here with the CLI.
    let (status, _) = api(&a, "POST", "/api/endpoints/acme/pause", None).await;
    assert_eq!(status, 200);
    wait_until(Duration::from_secs(10), "paused on b", || async {
        paused(&b, "acme").await == true
    })
    .await;
    let (code, _, err) = endpoints(&a, &["enable", "acme"]);
    assert_eq!(code, 0, "{err}");
    for n in [&a, &b] {
        wait_until(Duration::from_secs(10), "resumed everywhere", || async {
            paused(n, "acme").await == false
        })
        .await;
    }
    wait_until(
        Duration::from_secs(10),
        "the CLI's enabled event",
        || async { events.of("natshook.events.endpoint.enabled", "acme").len() >= 2 },
    )
    .await;
    let enabled = events.of("natshook.events.endpoint.enabled", "acme");
    assert_eq!(enabled.len(), 2, "{enabled:?}");
    let last = enabled.last().unwrap();
    assert_eq!(last["reason"], "cli", "{enabled:?}");
    assert!(
        last["detail"]
            .as_str()
            .unwrap()
            .contains("(by an operator) ended"),
        "{last}"
    );
}

/// Points the pause-state bucket's stream at other subjects (`away`), or back: while
/// away, every pause or resume a replica writes fails and is retried.
async fn move_pause_state(js: &jetstream::Context, away: bool) {
    let mut stream = js
        .get_stream("KV_NATSHOOK_STATE")
        .await
        .expect("the bucket");
    let mut config = stream.info().await.expect("its info").config.clone();
    config.subjects = vec![if away {
        "$KV.NATSHOOK_STATE_AWAY.>".to_string()
    } else {
        "$KV.NATSHOOK_STATE.>".to_string()
    }];
    js.update_stream(config)
        .await
        .expect("the subjects changed");
}

/// An operator's resume on one replica ends a pause taken on another just before,
/// however late that pause reaches the bucket: here both writes fail (the bucket
/// cannot be written) and land once it can, the pause first, then (its retries
/// further apart by then) the resume first. Before, the second replica, not paused
/// yet, shared no resume, and the pause stood on both for good; and a pause that
/// landed after the resume undid it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_on_one_replica_ends_a_pause_on_another_that_lands_after_it() {
    let nats = NatsServer::start();
    let file_rx = Receiver::start().await;
    let text = config(&nats, &file_rx);
    let a = Natshook::start(&text).await;
    let b = Natshook::start(&text).await;
    let js = jetstream::new(nats.client().await);
    wait_bound(&a, "file").await;
    wait_bound(&b, "file").await;

    // The writers retry after 0.1, 0.2, 0.4 … 5 s: the pause's retries fall 0.1, 0.3,
    // 0.7, 1.5, 3.1 and 6.3 s after it, the resume's 2.1, 2.3, 2.7, 3.5 and 5.1 s
    // after the pause in the second round, so the resume lands first there.
    for (round, resume_after, restore_after) in [(1, 300, 2_000), (2, 2_000, 2_100)] {
        move_pause_state(&js, true).await;
        let (status, body) = api(&a, "POST", "/api/endpoints/file/pause", None).await;
        assert_eq!(status, 200, "{body}");
        tokio::time::sleep(Duration::from_millis(resume_after)).await;
        assert_eq!(paused(&b, "file").await, false, "the pause reached b");
        let (status, body) = api(&b, "POST", "/api/endpoints/file/resume", None).await;
        assert_eq!(status, 200, "{body}");
        tokio::time::sleep(Duration::from_millis(restore_after)).await;
        move_pause_state(&js, false).await;

        tokio::time::sleep(Duration::from_secs(10)).await;
        let state = js.get_key_value("NATSHOOK_STATE").await.expect("bucket");
        let stored = state.get("paused.file").await.expect("read");
        assert!(
            stored.is_none(),
            "round {round}: the pause stands: {stored:?}"
        );
        for n in [&a, &b] {
            assert_eq!(paused(n, "file").await, false, "round {round}");
        }
        let prefix = format!("after{round}");
        publish_all(&js, tenant_leads("org_1", 3, &prefix)).await;
        file_rx
            .wait_for(Duration::from_secs(20), "delivered after the resume", |r| {
                r.delivered_ids()
                    .keys()
                    .filter(|id| id.starts_with(&prefix))
                    .count()
                    == 3
            })
            .await;
    }
}
