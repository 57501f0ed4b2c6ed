//! End-to-end tests of the core bridge: real nats-server, real receiver, the natshook
//! binary. Each test starts its own server and stops it afterwards.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use common::*;

/// Verifies HMAC signatures with Python's own `hmac`, independently of natshook.
fn python_verify_hex(records: &[(String, Vec<u8>, String)], prefix: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sigs.json");
    let items: Vec<serde_json::Value> = records
        .iter()
        .map(|(secret, body, sig)| {
            serde_json::json!({"secret": secret, "body": String::from_utf8_lossy(body), "sig": sig})
        })
        .collect();
    std::fs::write(&path, serde_json::to_vec(&items).unwrap()).unwrap();
    let script = format!(
        r#"
import hmac, hashlib, json, sys
items = json.load(open(sys.argv[1]))
bad = [i for i in items if "{prefix}" + hmac.new(i["secret"].encode(), i["body"].encode(), hashlib.sha256).hexdigest() != i["sig"]]
print(len(items), "checked", len(bad), "bad")
sys.exit(1 if bad or not items else 0)
"#
    );
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(&path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python hmac verification failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_mapped_messages_arrive_signed_with_correct_events_and_no_unmapped() {
    let nats = NatsServer::start();
    let hex_rx = Receiver::start().await;
    let sha_rx = Receiver::start().await;
    let config = TestConfig::new(nats.url())
        .endpoint(
            "crm",
            &hex_rx.url("/hooks"),
            &["lead.created", "ticket.*"],
            "",
        )
        .endpoint(
            "helpdesk",
            &sha_rx.url("/gh"),
            &["ticket.*"],
            "signature = { scheme = \"sha256\", header = \"X-Hub-Signature-256\" }",
        );
    let mut config = config;
    config.stream = "EVENTS".into();
    config.create_stream = false;
    nats.create_stream("EVENTS", &["crm.>", "helpdesk.>"]).await;
    let natshook = Natshook::start(&config.render()).await;

    let js = jetstream::new(nats.client().await);
    let mut messages = leads(600, "lead");
    for i in 0..400 {
        let kind = if i % 2 == 0 {
            "created"
        } else {
            "status_changed"
        };
        messages.push((
            format!("helpdesk.ticket.{kind}"),
            Bytes::from(format!("{{\"ticket\":{i}}}")),
            None,
        ));
    }
    // Unmapped: on the stream, but no [[events]] rule matches.
    for i in 0..50 {
        messages.push((
            "crm.lead.deleted".to_string(),
            Bytes::from(format!("{{\"deleted\":{i}}}")),
            Some(format!("unmapped-{i}")),
        ));
    }
    publish_all(&js, messages).await;

    hex_rx
        .wait_for(Duration::from_secs(60), "1000 deliveries to crm", |r| {
            r.delivered_ids().len() >= 1000
        })
        .await;
    sha_rx
        .wait_for(Duration::from_secs(60), "400 deliveries to helpdesk", |r| {
            r.delivered_ids().len() >= 400
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let got = hex_rx.received();
    let ids: BTreeSet<&str> = got.iter().map(|r| r.id()).collect();
    assert_eq!(ids.len(), 1000, "each mapped message exactly once");
    assert!(
        ids.iter().all(|id| !id.starts_with("unmapped")),
        "unmapped subject delivered"
    );
    let mut events = std::collections::BTreeMap::new();
    for r in &got {
        assert_eq!(r.path, "/hooks");
        let body = r.json();
        assert_eq!(body["event"], r.header("x-webhook-event"));
        assert_eq!(body["id"], r.id());
        *events
            .entry(body["event"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
        if r.id().starts_with("lead-") {
            let n: u64 = r.id()[5..].parse().unwrap();
            assert_eq!(body["data"]["lead"], n);
            assert_eq!(body["metadata"]["subject"], "crm.lead.created");
        }
    }
    assert_eq!(events["lead.created"], 600);
    assert_eq!(events["ticket.created"], 200);
    assert_eq!(events["ticket.status_changed"], 200);

    // Both schemes, checked by an independent implementation.
    let hex: Vec<_> = got
        .iter()
        .map(|r| {
            (
                "secret-crm".to_string(),
                r.body.to_vec(),
                r.header("x-webhook-signature").to_string(),
            )
        })
        .collect();
    python_verify_hex(&hex, "");
    let sha: Vec<_> = sha_rx
        .received()
        .iter()
        .map(|r| {
            (
                "secret-helpdesk".to_string(),
                r.body.to_vec(),
                r.header("x-hub-signature-256").to_string(),
            )
        })
        .collect();
    assert_eq!(sha.len(), 400);
    python_verify_hex(&sha, "sha256=");

    // The unmapped messages were never delivered, anywhere.
    assert!(sha_rx
        .received()
        .iter()
        .all(|r| r.json()["event"] != "lead.created"));
    let m = natshook.metrics().await;
    assert!(m.contains("natshook_deliveries_total{endpoint=\"crm\",event=\"lead.created\",outcome=\"success\"} 600"), "{m}");
    assert!(m.contains("natshook_nats_connected 1"));
    let unmapped = natshook.metric("natshook_unmapped_messages_total").await;
    assert_eq!(unmapped, Some(50.0), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_and_headers_follow_the_contract() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let raw_rx = Receiver::start().await;
    let config = TestConfig::new(nats.url())
        .endpoint(
            "std",
            &rx.url("/"),
            &["*"],
            "envelope_fields = { organization_id = \"org_1\" }\nheaders = { \"X-Api-Key\" = \"k-123\" }",
        )
        .endpoint("raw", &raw_rx.url("/raw"), &["ticket.*"], "envelope = \"raw\"");
    let _natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    let before = std::time::SystemTime::now();
    publish_all(
        &js,
        vec![
            (
                "crm.lead.created".into(),
                Bytes::from_static(br#"{"lead":1}"#),
                Some("lead-1".into()),
            ),
            (
                "helpdesk.ticket.created".into(),
                Bytes::from_static(b"plain text, not JSON"),
                None,
            ),
        ],
    )
    .await;
    rx.wait_for(Duration::from_secs(20), "2 deliveries", |r| r.count() >= 2)
        .await;
    raw_rx
        .wait_for(Duration::from_secs(20), "1 raw delivery", |r| {
            r.count() >= 1
        })
        .await;

    let got = rx.received();
    let lead = got.iter().find(|r| r.id() == "lead-1").expect("lead-1");
    let body = lead.json();
    let text = String::from_utf8_lossy(&lead.body);
    let order: Vec<usize> = [
        "\"id\":",
        "\"event\":",
        "\"timestamp\":",
        "\"data\":",
        "\"metadata\":",
        "\"organization_id\":",
    ]
    .iter()
    .map(|k| {
        text.find(k)
            .unwrap_or_else(|| panic!("{k} missing in {text}"))
    })
    .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "field order as in the contract: {text}"
    );
    assert_eq!(body.as_object().unwrap().len(), 6);
    assert_eq!(body["event"], "lead.created");
    assert_eq!(body["data"], serde_json::json!({"lead": 1}));
    assert_eq!(body["metadata"]["subject"], "crm.lead.created");
    assert_eq!(body["metadata"]["stream_sequence"], 1);
    assert_eq!(body["metadata"]["attempt"], 1);
    assert_eq!(body["metadata"]["version"], "1");
    assert_eq!(body["organization_id"], "org_1");
    let ts = body["timestamp"].as_str().unwrap();
    assert_eq!(ts.len(), 24, "RFC 3339 with milliseconds: {ts}");
    assert!(ts.ends_with('Z'));
    let published = humantime::parse_rfc3339(ts).unwrap();
    assert!(published.duration_since(before).unwrap_or_default() < Duration::from_secs(30));

    assert_eq!(lead.header("content-type"), "application/json");
    assert_eq!(
        lead.header("host"),
        rx.url("").trim_start_matches("http://"),
        "host:port of the endpoint URL"
    );
    assert_eq!(
        lead.header("user-agent"),
        concat!("natshook/", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(lead.header("x-webhook-event"), "lead.created");
    assert_eq!(lead.header("x-webhook-attempt"), "1");
    assert_eq!(lead.header("x-api-key"), "k-123");
    let unix: u64 = lead.header("x-webhook-timestamp").parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(unix) < 60);
    assert_eq!(lead.header("x-webhook-signature").len(), 64);

    // A non-JSON payload becomes a JSON string; the derived id is stream-sequence.
    let text = got
        .iter()
        .find(|r| r.id() == "EVENTS-2")
        .expect("derived id EVENTS-2");
    assert_eq!(text.json()["data"], "plain text, not JSON");
    assert_eq!(text.json()["event"], "ticket.created");

    // The raw envelope sends the payload bytes unchanged, with the same headers.
    let raw = &raw_rx.received()[0];
    assert_eq!(raw.body.as_ref(), b"plain text, not JSON");
    assert_eq!(raw.id(), "EVENTS-2");
    assert_eq!(raw.header("x-webhook-event"), "ticket.created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_or_failing_endpoint_does_not_delay_another() {
    let nats = NatsServer::start();
    let hanging = Receiver::with(|_| Reply::ok().delay(Duration::from_secs(30))).await;
    let failing = Receiver::with(|_| Reply::status(500)).await;
    let fast = Receiver::start().await;
    let config = TestConfig::new(nats.url())
        .endpoint(
            "hanging",
            &hanging.url("/"),
            &["*"],
            "timeout = \"20s\"\nconcurrency = 4",
        )
        .endpoint(
            "failing",
            &failing.url("/"),
            &["*"],
            "retry_schedule = [\"100ms\"]\nmax_attempts = 100\ndisable_after_failures = 0",
        )
        .endpoint("fast", &fast.url("/"), &["*"], "");
    let _natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    publish_all(&js, leads(300, "l")).await;
    let start = std::time::Instant::now();
    fast.wait_for(Duration::from_secs(15), "300 fast deliveries", |r| {
        r.delivered_ids().len() >= 300
    })
    .await;
    assert!(start.elapsed() < Duration::from_secs(15));
    assert_eq!(
        hanging.delivered_ids().len(),
        0,
        "the hanging receiver never answered"
    );
    assert!(
        hanging.count() <= 4,
        "concurrency bounds in-flight requests: {}",
        hanging.count()
    );
    assert!(failing.count() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_without_resending_acked_messages() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let config = TestConfig::new(nats.url()).endpoint("crm", &rx.url("/"), &["*"], "");
    let mut natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    deliver_leads(&js, &rx, 200, "a").await;
    let status = natshook.terminate().await;
    assert!(status.success(), "SIGTERM exits 0, got {status}");

    // Published while natshook is down: must not be skipped.
    publish_all(&js, leads(200, "b")).await;
    natshook.spawn().await;
    rx.wait_for(Duration::from_secs(20), "all 400", |r| {
        r.delivered_ids().len() >= 400
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ids = rx.delivered_ids();
    assert_eq!(ids.len(), 400);
    let resent: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        resent.is_empty(),
        "acked messages were sent again: {resent:?}"
    );
    assert_eq!(rx.count(), 400);
}

/// Names, not addresses, for both NATS and the endpoint: resolution goes through the
/// system resolver (statically linked glibc in the shipped binary).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_names_resolve_for_nats_and_endpoints() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let nats_url = nats.url().replace("127.0.0.1", "localhost");
    let url = rx.url("/named").replace("127.0.0.1", "localhost");
    let config = TestConfig::new(nats_url).endpoint("crm", &url, &["*"], "");
    let _natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    deliver_leads(&js, &rx, 50, "n").await;
    assert!(rx.received().iter().all(|r| r.path == "/named"));
}

/// A deployment points an endpoint elsewhere from the environment, by its name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_env_override_moves_one_endpoint_by_name() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let config = TestConfig::new(nats.url())
        .endpoint("crm-prod", "http://127.0.0.1:1/refused", &["*"], "")
        .endpoint("other", &rx.url("/other"), &["*"], "");
    let url = rx.url("/moved");
    let _natshook = Natshook::start_with(
        &config.render(),
        &[("NATSHOOK__ENDPOINTS__CRM_PROD__URL", url.as_str())],
        &[],
    )
    .await;
    let js = jetstream::new(nats.client().await);
    publish_all(&js, leads(20, "env")).await;
    rx.wait_for(
        Duration::from_secs(20),
        "20 messages at each endpoint",
        |r| r.received().len() >= 40,
    )
    .await;
    let at = |path: &str| rx.received().iter().filter(|r| r.path == path).count();
    assert_eq!((at("/moved"), at("/other")), (20, 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_metrics_endpoints() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let config = TestConfig::new(nats.url()).endpoint("crm", &rx.url("/"), &["*"], "");
    let natshook = Natshook::start(&config.render()).await;
    assert_eq!(natshook.get("/healthz").await.unwrap().0, 200);
    assert_eq!(natshook.get("/readyz").await.unwrap().0, 200);
    assert_eq!(natshook.get("/nope").await.unwrap().0, 404);
    let js = jetstream::new(nats.client().await);
    deliver_leads(&js, &rx, 5, "m").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = natshook.metrics().await;
    for needle in [
        "natshook_deliveries_total{endpoint=\"crm\",event=\"lead.created\",outcome=\"success\"} 5",
        "natshook_delivery_attempts_total{endpoint=\"crm\",status=\"2xx\"} 5",
        "natshook_delivery_duration_seconds_count{endpoint=\"crm\"} 5",
        "natshook_end_to_end_seconds_count{endpoint=\"crm\"} 5",
        "natshook_nats_connected 1",
        "natshook_build_info{version=\"",
    ] {
        assert!(m.contains(needle), "missing {needle} in\n{m}");
    }
    // Series of sections this config does not have are not shown, after a reload too
    // (which publishes the registry's verdicts).
    let strangers = ["natshook_ingress_", "natshook_registry_unserved_endpoints"];
    for stranger in strangers {
        assert!(
            !m.contains(stranger),
            "{stranger} without its section:\n{m}"
        );
    }
    let config = config.endpoint("crm2", &rx.url("/2"), &["*"], "");
    reload(&natshook, &config.render(), "added=[\"crm2\"]", "reload").await;
    let m = natshook.metrics().await;
    for stranger in strangers {
        assert!(!m.contains(stranger), "{stranger} after a reload:\n{m}");
    }
}

#[test]
fn bad_config_exits_2_naming_each_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[nats]
stream = "EVENTS"
[[events]]
subject = "crm.lead.created"
event = "lead.created"
[[endpoints]]
name = "crm"
url = "http://crm.example.com/hooks"
events = ["lead.created"]
secret = { env = "NATSHOOK_TEST_MISSING_SECRET" }
timout = "5s"
[[endpoints]]
name = "crm"
url = "https://crm.example.com/hooks"
events = ["lead.created"]
secret = "x"
retry_schedule = ["1s", "soon"]
concurrency = "many"
"#,
    )
    .unwrap();
    for cmd in ["check", "run"] {
        let out = natshook_command()
            .args([cmd, "--config"])
            .arg(&path)
            .env_remove("NATSHOOK_TEST_MISSING_SECRET")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{cmd} exits 2");
        let err = String::from_utf8_lossy(&out.stderr);
        for needle in [
            "endpoints[0].url: scheme must be https (set allow_http = true to permit http)",
            "endpoints[0].secret: environment variable NATSHOOK_TEST_MISSING_SECRET is not set",
            "endpoints[0].timout: unknown key",
            "endpoints[1].name: 'crm' is used by an earlier endpoint",
            "endpoints[1].retry_schedule[1]: 'soon' is not a duration",
            "endpoints[1].concurrency: invalid type: found string \"many\"",
        ] {
            assert!(err.contains(needle), "{cmd}: missing {needle:?} in\n{err}");
        }
    }
    // A good config passes check and env overrides apply (and are validated too).
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        "nats: {stream: EVENTS}\nevents: [{subject: a.b, event: a.b}]\nendpoints: [{name: a, url: 'https://example.com/', events: ['*'], secret: s}]\n",
    )
    .unwrap();
    let out = natshook_command()
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = natshook_command()
        .args(["check", "--config"])
        .arg(&good)
        .env("NATSHOOK__DEFAULTS__TIMEOUT", "later")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("defaults.timeout: 'later' is not a duration"));
    let missing = natshook_command()
        .args(["check", "--config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_stream_is_a_clear_startup_error() {
    let nats = NatsServer::start();
    let err = start_failure(&nats);
    assert!(err.contains("stream EVENTS does not exist"), "{err}");
}

/// `natshook run` on a config reading the stream `EVENTS` of `nats`, which must exit
/// 1 at start-up: what it printed on stderr.
fn start_failure(nats: &NatsServer) -> String {
    let mut config = TestConfig::new(nats.url()).endpoint("crm", "http://127.0.0.1:1/", &["*"], "");
    config.create_stream = false;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let text = config
        .render()
        .replace("{http_port}", &free_port().to_string());
    std::fs::write(&path, text).unwrap();
    let out = natshook_command()
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A work-queue stream hands each message to one consumer; natshook's consumers
/// each read every message, so start-up refuses it rather than wait forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_work_queue_stream_is_a_clear_startup_error() {
    let nats = NatsServer::start();
    jetstream::new(nats.client().await)
        .create_stream(jetstream::stream::Config {
            name: "EVENTS".into(),
            subjects: vec!["crm.>".into(), "helpdesk.>".into()],
            retention: jetstream::stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await
        .expect("stream");
    let err = start_failure(&nats);
    assert!(
        err.contains("stream EVENTS has work-queue retention"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_authentication_from_an_env_secret() {
    let nats = NatsServer::start_with(&["--auth", "s3cr3t-token"]);
    let rx = Receiver::start().await;
    let text = TestConfig::new(nats.url())
        .nats("token = { env = \"NATSHOOK_TEST_NATS_TOKEN\" }")
        .endpoint("crm", &rx.url("/"), &["*"], "")
        .render();
    let natshook =
        Natshook::start_with(&text, &[("NATSHOOK_TEST_NATS_TOKEN", "s3cr3t-token")], &[]).await;
    let out = natshook_command()
        .args(["check", "--config"])
        .arg(natshook.config_path())
        .env_remove("NATSHOOK_TEST_NATS_TOKEN")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "a missing token variable is a config error"
    );
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("nats.token: environment variable NATSHOOK_TEST_NATS_TOKEN is not set"));
    let client = async_nats::ConnectOptions::with_token("s3cr3t-token".into())
        .connect(nats.url())
        .await
        .unwrap();
    deliver_leads(&jetstream::new(client), &rx, 3, "tok").await;
}

/// A NATS JWT (`ed25519-nkey`), signed by `issuer`, as nsc would write it.
fn nats_jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = serde_json::json!({
        "jti": format!("{name}-{subject}"),
        "iat": 1_700_000_000u64,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let body = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    let signature = issuer.sign(body.as_bytes()).expect("sign");
    format!("{body}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// Decentralized auth (operator, account and user JWTs, a memory resolver): natshook
/// connects with `creds_file`, as against Synadia Cloud or an nsc-managed server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creds_file_authentication() {
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let operator_jwt = nats_jwt(
        &operator,
        &operator.public_key(),
        "op",
        serde_json::json!({"type": "operator", "version": 2}),
    );
    let unlimited = serde_json::json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
        "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1
    });
    let account_jwt = nats_jwt(
        &operator,
        &account.public_key(),
        "app",
        serde_json::json!({"limits": unlimited, "type": "account", "version": 2}),
    );
    let user_jwt = nats_jwt(
        &account,
        &user.public_key(),
        "natshook",
        serde_json::json!({"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
                           "type": "user", "version": 2}),
    );
    // JetStream needs the system account.
    let system = nkeys::KeyPair::new_account();
    let system_jwt = nats_jwt(
        &operator,
        &system.public_key(),
        "SYS",
        serde_json::json!({"type": "account", "version": 2}),
    );
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("server.conf");
    std::fs::write(
        &conf,
        format!(
            "operator: \"{operator_jwt}\"\nsystem_account: {sys}\nresolver: MEMORY\n\
             resolver_preload: {{\n  {sys}: \"{system_jwt}\"\n  {app}: \"{account_jwt}\"\n}}\n",
            sys = system.public_key(),
            app = account.public_key()
        ),
    )
    .unwrap();
    let creds = dir.path().join("natshook.creds");
    std::fs::write(
        &creds,
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().unwrap()
        ),
    )
    .unwrap();

    let nats = NatsServer::start_with(&["-c", conf.to_str().unwrap()]);
    let rx = Receiver::start().await;
    let text = TestConfig::new(nats.url())
        .nats(&format!("creds_file = {:?}", creds.to_str().unwrap()))
        .endpoint("crm", &rx.url("/"), &["*"], "")
        .render();
    let _natshook = Natshook::start(&text).await;

    let client = async_nats::ConnectOptions::with_credentials_file(&creds)
        .await
        .unwrap()
        .connect(nats.url())
        .await
        .unwrap();
    deliver_leads(&jetstream::new(client), &rx, 3, "creds").await;

    // Without credentials the same server refuses the connection.
    let anonymous = tokio::time::timeout(Duration::from_secs(10), async_nats::connect(nats.url()));
    assert!(
        !matches!(anonymous.await, Ok(Ok(_))),
        "the server must require credentials"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_over_mutual_tls_with_user_and_password() {
    let pki = pki();
    let nats = NatsServer::start_with(&[
        "--tls",
        "--tlscert",
        &pki.path("server.pem"),
        "--tlskey",
        &pki.path("server-key.pem"),
        "--tlsverify",
        "--tlscacert",
        &pki.path("ca.pem"),
        "--user",
        "hook",
        "--pass",
        "s3cret-pass",
    ]);
    let rx = Receiver::start().await;
    let text = TestConfig::new(format!("tls://127.0.0.1:{}", nats.port))
        .nats(&format!(
            "user = \"hook\"\npassword = {{ env = \"NATSHOOK_TEST_NATS_PASS\" }}\n[nats.tls]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"",
            pki.path("ca.pem"),
            pki.path("client.pem"),
            pki.path("client-key.pem")
        ))
        .endpoint("crm", &rx.url("/"), &["*"], "")
        .render();
    let _natshook =
        Natshook::start_with(&text, &[("NATSHOOK_TEST_NATS_PASS", "s3cret-pass")], &[]).await;
    let client =
        async_nats::ConnectOptions::with_user_and_password("hook".into(), "s3cret-pass".into())
            .add_root_certificates(pki.path("ca.pem").into())
            .add_client_certificate(
                pki.path("client.pem").into(),
                pki.path("client-key.pem").into(),
            )
            .require_tls(true)
            .connect(format!("tls://127.0.0.1:{}", nats.port))
            .await
            .unwrap();
    let js = jetstream::new(client);
    deliver_leads(&js, &rx, 3, "tls").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_failed_attempt_fields() {
    let nats = NatsServer::start();
    let rx = Receiver::with(|_| Reply::status(503)).await;
    let config = TestConfig::new(nats.url()).endpoint(
        "j",
        &rx.url("/"),
        &["*"],
        "retry_schedule = [\"1h\"]",
    );
    let natshook = Natshook::start_with(&config.render(), &[], &["--log-format", "json"]).await;
    let js = jetstream::new(nats.client().await);
    publish_all(&js, leads(1, "jl")).await;
    rx.wait_for(Duration::from_secs(20), "1 attempt", |r| r.count() >= 1)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = natshook.logs();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let failed = lines
        .iter()
        .find(|l| l["fields"]["message"] == "delivery attempt failed")
        .expect("a failed-attempt line");
    assert_eq!(failed["level"], "WARN");
    assert_eq!(failed["fields"]["endpoint"], "j");
    assert_eq!(failed["fields"]["id"], "jl-0");
    assert_eq!(failed["fields"]["attempt"], 1);
    assert_eq!(failed["fields"]["error"], "HTTP 503");
    assert_eq!(
        failed["fields"]["status"], 503,
        "the status is a number: {failed}"
    );
}
