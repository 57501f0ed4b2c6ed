//! Incoming webhooks, end to end: real senders (curl, and the official
//! `standardwebhooks` Python library signing with urllib posting), the real natshook
//! binary, a real nats-server. What is stored is read back from the stream.

mod common;

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use common::*;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioExecutor;

const STD_SECRET: &str = "whsec_c2VuZGVyLXNlY3JldC1mb3ItaW5ncmVzcy10ZXN0cw==";
const HEX_NEW: &str = "hex-secret-new";
const HEX_OLD: &str = "hex-secret-old";

/// Three routes: Standard Webhooks (subject from a JSON field), hex with a rotation
/// list (subject from a header, its own id header, a small max_body), and an unsigned
/// one (subject from a path segment).
fn routes(publish_timeout: &str) -> String {
    format!(
        r#"
[ingress]
publish_timeout = "{publish_timeout}"
[[ingress.routes]]
path = "/in/std"
subject = "inbound.std.{{json:type}}"
verify = {{ scheme = "standard", secret = {{ value = "{STD_SECRET}" }} }}
forward_headers = ["X-Provider-Note"]
[[ingress.routes]]
path = "/in/hex"
subject = "inbound.hex.{{header:X-Event-Type}}"
verify = {{ scheme = "hex", header = "X-Signature", secret = [{{ value = "{HEX_NEW}" }}, {{ value = "{HEX_OLD}" }}] }}
id_header = "X-Delivery-Id"
max_body = 256
[[ingress.routes]]
path = "/in/*/open"
subject = "inbound.open.{{path:2}}"
verify = {{ scheme = "none" }}
"#
    )
}

/// A config with the ingress routes and one (idle) endpoint, as the config requires.
fn config(nats: &NatsServer, rx: &Receiver, top: &str) -> TestConfig {
    let mut c = TestConfig::new(nats.url()).endpoint("crm", &rx.url("/"), &["lead.created"], "");
    c.top = top.to_string();
    c
}

fn hex_sig(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// What curl got: status, response headers (lower-cased names), body.
struct CurlReply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl CurlReply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Posts `body` with curl (method `-X`, headers `-H`).
fn curl(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> CurlReply {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(body).unwrap();
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-i", "--max-time", "30", "-X", method]);
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    if method == "POST" {
        cmd.arg("--data-binary")
            .arg(format!("@{}", file.path().display()));
    }
    let out = cmd.arg(url).output().expect("curl (apt-get install curl)");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    CurlReply {
        status,
        headers,
        body: body.to_string(),
    }
}

/// One request for the Python sender: signed with `secret` (Standard Webhooks) unless
/// it is `None`; `signed_body` differs from `body` to tamper; `ts_offset` moves the
/// timestamp.
#[derive(serde::Serialize, Default, Clone)]
struct Send {
    url: String,
    body: String,
    id: String,
    secret: Option<String>,
    signed_body: Option<String>,
    ts_offset: i64,
    headers: std::collections::BTreeMap<String, String>,
}

impl Send {
    fn signed(url: String, id: &str, body: &str) -> Self {
        Self {
            url,
            body: body.into(),
            id: id.into(),
            secret: Some(STD_SECRET.into()),
            ..Default::default()
        }
    }
}

/// Signs with the official `standardwebhooks` package and posts with urllib, like a
/// provider does; returns (status, body) per request.
fn python_send(requests: &[Send]) -> Vec<(u16, String)> {
    let script = r#"
import datetime, json, sys, time, urllib.error, urllib.request
from standardwebhooks import Webhook
out = []
for r in json.load(open(sys.argv[1])):
    headers = dict(r["headers"])
    if r["secret"]:
        ts = datetime.datetime.fromtimestamp(int(time.time()) + r["ts_offset"], tz=datetime.timezone.utc)
        signed = r["signed_body"] if r["signed_body"] is not None else r["body"]
        headers["webhook-id"] = r["id"]
        headers["webhook-timestamp"] = str(int(ts.timestamp()))
        headers["webhook-signature"] = Webhook(r["secret"]).sign(r["id"], ts, signed)
    headers["Content-Type"] = "application/json"
    req = urllib.request.Request(r["url"], data=r["body"].encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            out.append([resp.status, resp.read().decode()])
    except urllib.error.HTTPError as e:
        out.append([e.code, e.read().decode()])
print(json.dumps(out))
"#;
    serde_json::from_str(&python_over_json(script, &requests, &[])).expect("sender output")
}

/// Verifies each (body, headers) with the official `standardwebhooks` package, as a
/// consumer re-verifying what is stored would; returns how many verified.
fn python_verify(secret: &str, items: &[(Bytes, Vec<(String, String)>)]) -> usize {
    let items: Vec<(&[u8], std::collections::BTreeMap<String, String>)> = items
        .iter()
        .map(|(body, headers)| (&body[..], headers.iter().cloned().collect()))
        .collect();
    standardwebhooks_verify(secret, &items).0
}

/// A message as stored: subject, headers, payload.
struct Stored {
    subject: String,
    headers: async_nats::HeaderMap,
    payload: Bytes,
}

impl Stored {
    fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.as_str().to_string())
    }

    fn std_headers(&self) -> Vec<(String, String)> {
        ["webhook-id", "webhook-timestamp", "webhook-signature"]
            .iter()
            .map(|h| (h.to_string(), self.header(h).unwrap_or_default()))
            .collect()
    }
}

/// Every message of `stream` whose subject starts with `inbound.`.
async fn stored(nats: &NatsServer, stream: &str) -> Vec<Stored> {
    let js = jetstream::new(nats.client().await);
    let mut s = js.get_stream(stream).await.expect("stream");
    let state = s.info().await.expect("stream info").state.clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return out;
    }
    for seq in state.first_sequence..=state.last_sequence {
        if let Ok(m) = s.get_raw_message(seq).await {
            if m.subject.starts_with("inbound.") {
                out.push(Stored {
                    subject: m.subject.to_string(),
                    headers: m.headers,
                    payload: m.payload,
                });
            }
        }
    }
    out
}

fn url(n: &Natshook, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", n.http_port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standardwebhooks_sender_retries_are_stored_once_body_and_signature_unchanged() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let n = Natshook::start(&config(&nats, &rx, &routes("5s")).render()).await;
    let first = r#"{"type":"delivered","email":"a@example.com","note":"caf\u00e9 ✓"}"#;
    let mut retry = Send::signed(url(&n, "/in/std"), "msg_1", first);
    retry
        .headers
        .insert("X-Provider-Note".into(), "retry 1".into());
    let mut first_send = Send::signed(url(&n, "/in/std"), "msg_1", first);
    first_send
        .headers
        .insert("X-Provider-Note".into(), "first".into());
    let answers = python_send(&[
        first_send,
        // A provider's retry: same id, signed again (a later timestamp).
        retry,
        Send::signed(url(&n, "/in/std"), "msg_2", r#"{"type":"bounce"}"#),
    ]);
    assert_eq!(
        answers,
        [
            (200, "stored\n".to_string()),
            (200, "duplicate: already stored\n".to_string()),
            (200, "stored\n".to_string())
        ]
    );
    let got = stored(&nats, "EVENTS").await;
    assert_eq!(got.len(), 2, "the retry is stored once");
    assert_eq!(got[0].subject, "inbound.std.delivered");
    assert_eq!(got[1].subject, "inbound.std.bounce");
    assert_eq!(got[0].payload, Bytes::from(first), "raw body unchanged");
    assert_eq!(got[0].header("Nats-Msg-Id").as_deref(), Some("msg_1"));
    assert_eq!(got[0].header("webhook-id").as_deref(), Some("msg_1"));
    assert_eq!(got[0].header("X-Provider-Note").as_deref(), Some("first"));
    // A consumer verifies what is stored with the sender's secret, as the sender signed it.
    let items: Vec<_> = got
        .iter()
        .map(|m| (m.payload.clone(), m.std_headers()))
        .collect();
    assert_eq!(python_verify(STD_SECRET, &items), 2);
    assert_eq!(
        n.metric("natshook_ingress_requests_total{outcome=\"stored\",route=\"/in/std\"}")
            .await,
        Some(2.0)
    );
    assert_eq!(
        n.metric("natshook_ingress_requests_total{outcome=\"duplicate\",route=\"/in/std\"}")
            .await,
        Some(1.0)
    );
    assert_eq!(
        n.metric("natshook_ingress_duration_seconds_count{route=\"/in/std\"}")
            .await,
        Some(3.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_stale_and_unsigned_requests_are_401_and_nothing_is_stored() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let n = Natshook::start(&config(&nats, &rx, &routes("5s")).render()).await;
    let u = url(&n, "/in/std");
    let body = r#"{"type":"delivered","amount":10}"#;
    let tampered = Send {
        signed_body: Some(body.into()),
        ..Send::signed(u.clone(), "t1", r#"{"type":"delivered","amount":1000}"#)
    };
    let stale = Send {
        ts_offset: -6 * 60,
        ..Send::signed(u.clone(), "t2", body)
    };
    let future = Send {
        ts_offset: 6 * 60,
        ..Send::signed(u.clone(), "t3", body)
    };
    let wrong_secret = Send {
        secret: Some("whsec_b3RoZXItc2VjcmV0".into()),
        ..Send::signed(u.clone(), "t4", body)
    };
    let unsigned = Send {
        secret: None,
        ..Send::signed(u.clone(), "t5", body)
    };
    let answers = python_send(&[tampered, stale, future, wrong_secret, unsigned]);
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    assert_eq!(statuses, [401; 5], "{answers:?}");
    assert!(
        answers[1].1.contains("webhook-timestamp is 360 s away"),
        "{answers:?}"
    );
    assert!(
        answers[4].1.contains("missing header webhook-id"),
        "{answers:?}"
    );
    // A signature header of more entries than any sender makes is refused before
    // any is checked (each would cost a hash of the body).
    let now = unix_now().to_string();
    let flood = vec!["v1,"; 17].join(" ");
    let many = curl(
        "POST",
        &u,
        &[
            ("webhook-id", "t7"),
            ("webhook-timestamp", &now),
            ("webhook-signature", &flood),
        ],
        body.as_bytes(),
    );
    assert_eq!(many.status, 401, "{}", many.body);
    assert!(
        many.body.contains("more than 16 signatures"),
        "{}",
        many.body
    );
    // A fresh, correctly signed request right after is stored: the 401s were the
    // signatures', not the route's.
    assert_eq!(python_send(&[Send::signed(u, "t6", body)])[0].0, 200);
    let got = stored(&nats, "EVENTS").await;
    assert_eq!(got.len(), 1, "nothing unverified is stored");
    assert_eq!(got[0].header("Nats-Msg-Id").as_deref(), Some("t6"));
    assert_eq!(
        n.metric("natshook_ingress_requests_total{outcome=\"unauthorized\",route=\"/in/std\"}")
            .await,
        Some(6.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_gets_every_answer_of_the_contract() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let n = Natshook::start(&config(&nats, &rx, &routes("5s")).render()).await;
    let hex = url(&n, "/in/hex");
    let body = br#"{"event":"opened"}"#;
    let sig_new = hex_sig(HEX_NEW, body);
    let sig_old = hex_sig(HEX_OLD, body);

    let r = curl(
        "POST",
        &hex,
        &[
            ("X-Signature", &sig_new),
            ("X-Event-Type", "opened"),
            ("X-Delivery-Id", "d-1"),
        ],
        body,
    );
    assert_eq!((r.status, r.body.as_str()), (200, "stored\n"));
    // The same delivery id again (signed with the old secret of the rotation list).
    let r = curl(
        "POST",
        &hex,
        &[
            ("X-Signature", &sig_old),
            ("X-Event-Type", "opened"),
            ("X-Delivery-Id", "d-1"),
        ],
        body,
    );
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "duplicate: already stored\n")
    );
    let r = curl(
        "POST",
        &hex,
        &[
            ("X-Signature", &sig_old),
            ("X-Event-Type", "clicked"),
            ("X-Delivery-Id", "d-2"),
        ],
        body,
    );
    assert_eq!(r.status, 200, "{}", r.body);

    let r = curl("GET", &hex, &[], b"");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    let r = curl("POST", &url(&n, "/in/unknown"), &[], body);
    assert_eq!(r.status, 404);
    let big = vec![b'x'; 257];
    let r = curl(
        "POST",
        &hex,
        &[
            ("X-Signature", &hex_sig(HEX_NEW, &big)),
            ("X-Event-Type", "opened"),
        ],
        &big,
    );
    assert_eq!(r.status, 413, "{}", r.body);
    let r = curl(
        "POST",
        &hex,
        &[
            ("X-Signature", &hex_sig("guess", body)),
            ("X-Event-Type", "opened"),
        ],
        body,
    );
    assert_eq!(r.status, 401, "{}", r.body);
    let r = curl("POST", &hex, &[("X-Event-Type", "opened")], body);
    assert_eq!(r.status, 401, "{}", r.body);
    // Verified, but the header value would add subject tokens: refused, not rewritten.
    for bad in ["a.b", "*", ">"] {
        let r = curl(
            "POST",
            &hex,
            &[("X-Signature", &sig_new), ("X-Event-Type", bad)],
            body,
        );
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
    let r = curl("POST", &hex, &[("X-Signature", &sig_new)], body);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains("header x-event-type is missing"),
        "{}",
        r.body
    );
    // The unsigned route (scheme = "none", written out), subject from the path.
    let r = curl("POST", &url(&n, "/in/acme/open"), &[], b"hello");
    assert_eq!(r.status, 200, "{}", r.body);
    // natshook's own routes still answer on the shared listener.
    assert_eq!(curl("GET", &url(&n, "/healthz"), &[], b"").status, 200);

    let got = stored(&nats, "EVENTS").await;
    let subjects: Vec<&str> = got.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(
        subjects,
        [
            "inbound.hex.opened",
            "inbound.hex.clicked",
            "inbound.open.acme"
        ]
    );
    assert_eq!(got[0].header("X-Signature"), Some(sig_new));
    assert_eq!(got[0].header("Nats-Msg-Id").as_deref(), Some("d-1"));
    assert_eq!(got[2].payload, Bytes::from_static(b"hello"));
    for (outcome, count) in [
        ("stored", 2.0),
        ("duplicate", 1.0),
        ("method_not_allowed", 1.0),
        ("too_large", 1.0),
        ("unauthorized", 2.0),
        ("bad_request", 4.0),
    ] {
        let series =
            format!("natshook_ingress_requests_total{{outcome=\"{outcome}\",route=\"/in/hex\"}}");
        assert_eq!(n.metric(&series).await, Some(count), "{series}");
    }
    assert_eq!(
        n.metric("natshook_ingress_requests_total{outcome=\"stored\",route=\"/in/*/open\"}")
            .await,
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_unavailable_is_503_with_retry_after_and_the_senders_retry_is_stored() {
    let mut nats = NatsServer::start();
    nats.create_stream("EVENTS", &["crm.>", "helpdesk.>"]).await;
    nats.create_stream("INBOUND", &["inbound.>"]).await;
    let rx = Receiver::start().await;
    let mut c = config(&nats, &rx, &routes("1s"));
    c.create_stream = false;
    let n = Natshook::start(&c.render()).await;
    let hex = url(&n, "/in/hex");
    let body = br#"{"n":1}"#;
    let send = |id: &str| {
        curl(
            "POST",
            &hex,
            &[
                ("X-Signature", &hex_sig(HEX_NEW, body)),
                ("X-Event-Type", "opened"),
                ("X-Delivery-Id", id),
            ],
            body,
        )
    };

    // NATS down: 503 with Retry-After, at once (nothing waits in a client buffer).
    nats.kill();
    let started = Instant::now();
    let r = send("down-1");
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.header("retry-after"), Some("5"));
    assert!(started.elapsed() < Duration::from_secs(3));
    nats.spawn();
    // The sender retries until it gets a 2xx.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = send("down-1");
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(
            Instant::now() < deadline,
            "never stored after NATS came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Connected, but no stream captures the subject (it was deleted): 503 as well,
    // until an operator restores it; then the retry is stored.
    let js = jetstream::new(nats.client().await);
    assert_eq!(stored(&nats, "INBOUND").await.len(), 1);
    js.delete_stream("INBOUND").await.unwrap();
    let r = send("gone-1");
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.header("retry-after"), Some("5"));
    nats.create_stream("INBOUND", &["inbound.>"]).await;
    assert_eq!(send("gone-1").status, 200);
    let got = stored(&nats, "INBOUND").await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("Nats-Msg-Id").as_deref(), Some("gone-1"));
    assert!(n
        .metric("natshook_ingress_requests_total{outcome=\"unavailable\",route=\"/in/hex\"}")
        .await
        .is_some_and(|v| v >= 2.0));

    // Connected, but the server hangs: the publish is sent and not answered within
    // publish_timeout. It may be stored all the same, and the answer says so; the
    // retry with the same id is stored once.
    nats.signal("STOP");
    let r = send("hung-1");
    nats.signal("CONT");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.starts_with("not confirmed as stored"), "{}", r.body);
    let deadline = Instant::now() + Duration::from_secs(30);
    while send("hung-1").status != 200 {
        assert!(Instant::now() < deadline, "never stored after the hang");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let hung = stored(&nats, "INBOUND").await;
    let ids: Vec<_> = hung.iter().map(|m| m.header("Nats-Msg-Id")).collect();
    assert_eq!(
        ids.iter()
            .filter(|id| id.as_deref() == Some("hung-1"))
            .count(),
        1,
        "{ids:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_ingress_to_jetstream_to_an_endpoint_with_both_signatures_valid() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let endpoint_secret = "whsec_ZW5kcG9pbnQtc2VjcmV0LWZvci1yb3VuZC10cmlw";
    let mut c = TestConfig::new(nats.url());
    c.events = vec![("inbound.std.*".into(), "inbound.{3}".into())];
    c.endpoints.push(format!(
        "[[endpoints]]\nname = \"crm\"\nurl = \"{}\"\nevents = [\"inbound.*\"]\nsecret = {{ value = \"{endpoint_secret}\" }}\nsignature = {{ scheme = \"standard\" }}\nenvelope = \"raw\"\nallow_http = true\nallow_private = true\n",
        rx.url("/hooks")
    ));
    c.top = routes("5s");
    let n = Natshook::start(&c.render()).await;
    let body = r#"{"type":"delivered","to":"a@example.com"}"#;
    let answers = python_send(&[
        Send::signed(url(&n, "/in/std"), "rt-1", body),
        Send::signed(url(&n, "/in/std"), "rt-1", body),
    ]);
    assert_eq!(answers[0].0, 200);
    assert_eq!(answers[1], (200, "duplicate: already stored\n".into()));
    rx.wait_for(Duration::from_secs(20), "the round trip", |r| {
        r.delivered_ids().len() == 1
    })
    .await;
    let got = rx.received();
    let req = &got[0];
    assert_eq!(
        req.body,
        Bytes::from(body),
        "raw envelope: the sender's bytes"
    );
    assert_eq!(req.id(), "rt-1", "the sender's id is the delivery id");
    assert_eq!(req.header("x-webhook-event"), "inbound.delivered");
    // The receiver verifies natshook's signature with the endpoint secret …
    let outgoing: Vec<(String, String)> = ["webhook-id", "webhook-timestamp", "webhook-signature"]
        .iter()
        .map(|h| (h.to_string(), req.header(h).to_string()))
        .collect();
    assert_eq!(
        python_verify(endpoint_secret, &[(req.body.clone(), outgoing.clone())]),
        1
    );
    assert_eq!(
        python_verify(STD_SECRET, &[(req.body.clone(), outgoing)]),
        0
    );
    // … and the stored message still carries the sender's, valid with the sender's.
    let kept = stored(&nats, "EVENTS").await;
    assert_eq!(kept.len(), 1);
    assert_eq!(
        python_verify(
            STD_SECRET,
            &[(kept[0].payload.clone(), kept[0].std_headers())]
        ),
        1
    );
    // Once, even though the sender posted twice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.count(), 1);
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// `count` requests with bad signatures over `connections` keep-alive connections;
/// returns how many were answered 401.
async fn flood(url: &str, count: usize, connections: usize) -> usize {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(connections)
        .build_http::<Full<Bytes>>();
    let body = Bytes::from(format!(
        "{{\"type\":\"delivered\",\"pad\":\"{}\"}}",
        "x".repeat(1000)
    ));
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..connections {
        let client = client.clone();
        let body = body.clone();
        let url = url.to_string();
        tasks.spawn(async move {
            let mut unauthorized = 0;
            for i in (c..count).step_by(connections) {
                let req = http::Request::post(&url)
                    .header("webhook-id", format!("flood-{i}"))
                    .header("webhook-timestamp", unix_now().to_string())
                    .header(
                        "webhook-signature",
                        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
                    )
                    .body(Full::new(body.clone()))
                    .unwrap();
                let resp = client.request(req).await.expect("request");
                if resp.status() == 401 {
                    unauthorized += 1;
                }
                let _ = resp.into_body().collect().await;
            }
            unauthorized
        });
    }
    let mut total = 0;
    while let Some(n) = tasks.join_next().await {
        total += n.unwrap();
    }
    total
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_signatures_stores_nothing_and_memory_stays_flat() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let n = Natshook::start(&config(&nats, &rx, &routes("5s")).render()).await;
    let u = url(&n, "/in/std");
    // Warm up: allocator arenas, connection buffers, metric children.
    assert_eq!(flood(&u, 1_000, 4).await, 1_000);
    let before = rss_kib(n.pid());
    let started = Instant::now();
    assert_eq!(flood(&u, 10_000, 4).await, 10_000);
    let took = started.elapsed();
    let after = rss_kib(n.pid());
    eprintln!("10000 bad signatures in {took:?}; natshook RSS {before} KiB -> {after} KiB");
    assert!(
        after < before + 3 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    assert_eq!(stored(&nats, "EVENTS").await.len(), 0);
    assert_eq!(
        n.metric("natshook_ingress_requests_total{outcome=\"unauthorized\",route=\"/in/std\"}")
            .await,
        Some(11_000.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dedicated_listener_serves_only_ingress_and_reload_adds_and_removes_routes() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let port = free_port();
    let first = format!(
        "[ingress]\nlisten = \"127.0.0.1:{port}\"\n[[ingress.routes]]\npath = \"/in/a\"\nsubject = \"inbound.a\"\nverify = {{ scheme = \"none\" }}\n"
    );
    let c = config(&nats, &rx, &first);
    let n = Natshook::start(&c.render()).await;
    let public = |path: &str| format!("http://127.0.0.1:{port}{path}");
    assert_eq!(curl("POST", &public("/in/a"), &[], b"1").status, 200);
    // The public port exposes nothing else; the internal one no ingress route.
    for path in ["/metrics", "/healthz", "/readyz", "/api/endpoints"] {
        assert_eq!(curl("GET", &public(path), &[], b"").status, 404, "{path}");
    }
    assert_eq!(curl("POST", &url(&n, "/in/a"), &[], b"1").status, 404);
    assert_eq!(
        n.metric("natshook_ingress_requests_total{outcome=\"not_found\",route=\"unmatched\"}")
            .await,
        Some(4.0)
    );

    // Reload: /in/a goes, /in/b comes (its subject outside the stream so far: added,
    // since create_stream = true).
    let second = format!(
        "[ingress]\nlisten = \"127.0.0.1:{port}\"\n[[ingress.routes]]\npath = \"/in/b\"\nsubject = \"inbound.b.{{header:X-Kind}}\"\nverify = {{ scheme = \"none\" }}\n"
    );
    n.rewrite_config(&config(&nats, &rx, &second).render());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = curl("POST", &public("/in/b"), &[("X-Kind", "k1")], b"2");
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reload did not add /in/b: {} {}",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(curl("POST", &public("/in/a"), &[], b"1").status, 404);
    let subjects: Vec<String> = stored(&nats, "EVENTS")
        .await
        .into_iter()
        .map(|m| m.subject)
        .collect();
    assert_eq!(subjects, ["inbound.a", "inbound.b.k1"]);
}

/// Runs natshook until it exits (within 30 s); returns (exit code, stderr).
fn run_until_exit(config: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("natshook.toml");
    std::fs::write(
        &path,
        config.replace("{http_port}", &free_port().to_string()),
    )
    .unwrap();
    let mut child = natshook_command()
        .args(["run", "--config"])
        .arg(&path)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_stops_when_no_stream_captures_all_of_an_ingress_subject() {
    let nats = NatsServer::start();
    nats.create_stream("EVENTS", &["crm.>", "helpdesk.>"]).await;
    let rx = Receiver::start().await;
    let mut c = config(&nats, &rx, &routes("5s"));
    c.create_stream = false;
    let (code, err) = run_until_exit(&c.render());
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("no JetStream stream captures inbound.std.*, inbound.hex.*, inbound.open.*"),
        "{err}"
    );
    // A stream holding only some of a route's subjects is not enough: requests on
    // the others would be answered 503 for ever.
    nats.create_stream(
        "PART",
        &["inbound.std.delivered", "inbound.hex.*", "inbound.open.*"],
    )
    .await;
    let (code, err) = run_until_exit(&c.render());
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("stream(s) PART capture only part of ingress subject inbound.std.*"),
        "{err}"
    );
}

#[test]
fn natshook_check_lists_ingress_problems_with_their_key_paths() {
    let base = "[nats]\nstream = \"E\"\n[[events]]\nsubject = \"a\"\nevent = \"a\"\n[[endpoints]]\nname = \"x\"\nurl = \"https://example.com/x\"\nevents = [\"*\"]\nsecret = \"s\"\n";
    let (code, err) = check_config(&format!(
        "[[ingress.routes]]\npath = \"/api/in\"\nsubject = \"in.{{json:}}\"\nverify = {{ scheme = \"standard\", secret = {{ env = \"NATSHOOK_TEST_UNSET_IN\" }}, header = \"X\" }}\nid_hedaer = \"x\"\n{base}"
    ));
    assert_eq!(code, 2, "{err}");
    for needle in [
        "ingress.routes[0].id_hedaer: unknown key",
        "ingress.routes[0].path: '/api/in' collides",
        "ingress.routes[0].subject: '{json:}' is not a placeholder",
        "ingress.routes[0].verify.header: standard uses the webhook-id",
    ] {
        assert!(err.contains(needle), "{needle} in {err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("natshook.toml");
    std::fs::write(
        &path,
        format!("[[ingress.routes]]\npath = \"/in/x\"\nsubject = \"in.x.{{header:X-T}}\"\nverify = {{ scheme = \"sha256\", header = \"X-Hub-Signature-256\", secret = \"s\" }}\n{base}"),
    )
    .unwrap();
    let out = natshook_command()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("POST /in/x -> in.x.{header:X-T} [sha256 verification; dedupe on webhook-id; stream must capture in.x.*]"),
        "{text}"
    );
}

/// A `{ file }` secret re-read while running: a changed file verifies with its new
/// content, a removed one (a revoked key) stops verifying, and removing the last one
/// keeps the current keys rather than refusing every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_file_is_picked_up_without_a_reload() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("ingress-secret");
    let previous = dir.path().join("ingress-previous");
    std::fs::write(&secret, "first-secret\n").unwrap();
    std::fs::write(&previous, "old-secret\n").unwrap();
    let top = format!(
        "[[ingress.routes]]\npath = \"/in/f\"\nsubject = \"inbound.f\"\nverify = {{ scheme = \"sha256\", header = \"X-Hub-Signature-256\", secret = [{{ file = \"{}\" }}, {{ file = \"{}\" }}] }}\nid_header = \"X-Id\"\n",
        secret.display(),
        previous.display()
    );
    let n = Natshook::start(&config(&nats, &rx, &top).render()).await;
    let post = |key: &str, id: &str| {
        curl(
            "POST",
            &url(&n, "/in/f"),
            &[
                (
                    "X-Hub-Signature-256",
                    &format!("sha256={}", hex_sig(key, b"{}")),
                ),
                ("X-Id", id),
            ],
            b"{}",
        )
        .status
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    assert_eq!(post("first-secret", "1"), 200);
    assert_eq!(post("old-secret", "2"), 200);
    std::fs::write(&secret, "second-secret\n").unwrap();
    while post("second-secret", "3") != 200 {
        assert!(Instant::now() < deadline, "the new secret never verified");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(post("first-secret", "4"), 401);
    assert!(n.logs().contains("ingress secret file changed"));

    std::fs::remove_file(&previous).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while post("old-secret", "5") != 401 {
        assert!(
            Instant::now() < deadline,
            "the removed secret still verified"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(post("second-secret", "6"), 200);
    // The last one removed: the current key stays.
    std::fs::remove_file(&secret).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(post("second-secret", "7"), 200);
    // 1, 2, 3, 6 and 7, and 5 if it came before the removed file was noticed.
    let kept = stored(&nats, "EVENTS").await.len();
    assert!((5..=6).contains(&kept), "{kept} stored");
    assert!(n.logs().contains("cannot re-read an ingress secret"));
}

/// The commented `[ingress]` examples in config/, uncommented, pass `natshook check`.
#[test]
fn the_commented_ingress_examples_pass_check() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    for (name, next) in [
        ("natshook.example.toml", "[defaults]"),
        ("natshook.example.yaml", "defaults:"),
    ] {
        let text = std::fs::read_to_string(format!("{root}/config/{name}")).unwrap();
        let start = text.find("# Incoming webhooks").expect("ingress example");
        let end = start + text[start..].find(next).unwrap();
        let example: String = text[start..end]
            .lines()
            .skip(1)
            .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
            .collect();
        let text = format!("{}{example}{}", &text[..start], &text[end..])
            .replace("/var/run/secrets/audit/current", "/etc/hostname")
            .replace("/var/run/secrets/audit/previous", "/etc/hostname");
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = natshook_command()
            .args(["check", "--config"])
            .arg(&path)
            .envs([
                ("CRM_WEBHOOK_SECRET", "x"),
                ("CRM_API_KEY", "y"),
                ("SENDGRID_SECRET", "whsec_c2VjcmV0"),
                ("GH_NEW", "a"),
                ("GH_OLD", "b"),
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("POST /in/github -> inbound.github.{json:action}"),
            "{stdout}"
        );
    }
}

/// A Standard Webhooks sender signing with Ed25519 (`v1a`) gives out only its `whpk_`
/// public key; a route verifies with that, and refuses a signature by another key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ed25519_signed_requests_verify_with_the_senders_public_key() {
    let keys = natshook_command().arg("keygen").output().unwrap();
    let keys = String::from_utf8(keys.stdout).unwrap();
    let mut lines = keys.lines();
    let (whsk, whpk) = (lines.next().unwrap(), lines.next().unwrap());
    let other = natshook_command().arg("keygen").output().unwrap();
    let other_whsk = String::from_utf8(other.stdout).unwrap();
    let other_whsk = other_whsk.lines().next().unwrap().to_string();
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let top = format!(
        "[[ingress.routes]]\npath = \"/in/ed\"\nsubject = \"inbound.ed\"\nverify = {{ scheme = \"standard\", secret = {{ value = \"{whpk}\" }} }}\n"
    );
    let n = Natshook::start(&config(&nats, &rx, &top).render()).await;
    let body = br#"{"type":"x"}"#;
    let post = |secret: &str, id: &str| {
        let mut sign = natshook_command()
            .args([
                "sign", "--scheme", "standard", "--id", id, "--secret", secret,
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        sign.stdin.take().unwrap().write_all(body).unwrap();
        let headers = String::from_utf8(sign.wait_with_output().unwrap().stdout).unwrap();
        let headers: Vec<(String, String)> = headers
            .lines()
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert!(
            headers.iter().any(|(_, v)| v.starts_with("v1a,")),
            "{headers:?}"
        );
        let refs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        curl("POST", &url(&n, "/in/ed"), &refs, body).status
    };
    assert_eq!(post(whsk, "ed-1"), 200);
    assert_eq!(post(&other_whsk, "ed-2"), 401);
    assert_eq!(stored(&nats, "EVENTS").await.len(), 1);
}

/// Request bodies held at once are bounded over every route (64 MiB): requests that
/// send all but the last bytes of a megabyte each take the room, a newcomer gets
/// `503` with `Retry-After` at once instead of memory growing, and once they are gone
/// it is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_held_at_once_are_bounded_and_the_rest_answered_503() {
    use tokio::io::AsyncWriteExt;
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let n = Natshook::start(&config(&nats, &rx, &routes("2s")).render()).await;
    let mut held = Vec::new();
    for _ in 0..64 {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", n.http_port))
            .await
            .unwrap();
        tcp.write_all(b"POST /in/x/open HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n")
            .await
            .unwrap();
        // All but 2 bytes: each holds its whole declared megabyte (its buffer's room,
        // capped at the declared length), so 64 of them leave none of the budget.
        tcp.write_all(&vec![b'x'; 1048576 - 2]).await.unwrap();
        held.push(tcp);
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let newcomer = format!("{{\"pad\":\"{}\"}}", "x".repeat(1024));
    let busy = curl("POST", &url(&n, "/in/x/open"), &[], newcomer.as_bytes());
    assert_eq!(busy.status, 503, "{}", busy.body);
    assert_eq!(busy.header("retry-after"), Some("5"));
    assert!(
        busy.body.contains("too many request bodies"),
        "{}",
        busy.body
    );
    drop(held);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stored = curl("POST", &url(&n, "/in/x/open"), &[], newcomer.as_bytes());
    assert_eq!(stored.status, 200, "{}", stored.body);
}

/// A head that declares a large body and sends none of it takes no room in the budget
/// of bodies held at once (room is taken as bytes arrive): 64 HTTP/1 requests and 64
/// HTTP/2 streams (two connections of 32) declaring a megabyte each, with signature
/// headers but no secret behind them, stall; a signed request to another route is
/// still stored at once, not answered `503` for the 30 s the stalled ones may wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_heads_declaring_large_bodies_hold_no_room_and_a_signed_request_is_stored() {
    use tokio::io::AsyncWriteExt;
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let n = Natshook::start(&config(&nats, &rx, &routes("5s")).render()).await;
    let ts = unix_now();
    let mut held = Vec::new();
    for i in 0..64 {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", n.http_port))
            .await
            .unwrap();
        let head = format!("POST /in/std HTTP/1.1\r\nHost: x\r\nwebhook-id: stall-{i}\r\nwebhook-timestamp: {ts}\r\nwebhook-signature: v1,AAAA\r\nContent-Length: 1048576\r\n\r\n");
        tcp.write_all(head.as_bytes()).await.unwrap();
        held.push(tcp);
    }
    let mut streams = Vec::new();
    let mut connections = Vec::new();
    for c in 0..2 {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", n.http_port))
            .await
            .unwrap();
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .expect("HTTP/2 handshake");
        tokio::spawn(conn);
        for i in 0..32 {
            send.ready().await.expect("stream room");
            let never = http_body_util::StreamBody::new(futures_util::stream::pending::<
                Result<hyper::body::Frame<Bytes>, std::convert::Infallible>,
            >());
            let req = http::Request::post(url(&n, "/in/std"))
                .header("webhook-id", format!("stall-h2-{c}-{i}"))
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", "v1,AAAA")
                .header("content-length", "1048576")
                .body(never)
                .unwrap();
            streams.push(tokio::spawn(send.send_request(req)));
        }
        connections.push(send);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let body = br#"{"event":"opened"}"#;
    let started = Instant::now();
    let r = curl(
        "POST",
        &url(&n, "/in/hex"),
        &[
            ("X-Signature", &hex_sig(HEX_NEW, body)),
            ("X-Event-Type", "opened"),
            ("X-Delivery-Id", "after-the-stall"),
        ],
        body,
    );
    assert_eq!((r.status, r.body.as_str()), (200, "stored\n"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The stalled requests are still waiting for their bodies, not answered.
    assert!(streams.iter().all(|s| !s.is_finished()));
    let mut buf = [0u8; 64];
    for tcp in &held {
        assert!(
            matches!(tcp.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "a stalled HTTP/1 request was answered"
        );
    }
    let kept = stored(&nats, "EVENTS").await;
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].subject, "inbound.hex.opened");
    drop((held, connections, streams));
}

/// Start-up warns about what works but does not do what it seems to: a `standard`
/// route deduplicating on an id header the scheme does not sign, and a `max_body`
/// above the NATS server's `max_payload`. A body within `max_payload` whose stored
/// headers take the message past it gets `413` saying so, with the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_warns_about_unsigned_ids_and_bodies_past_max_payload() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nats.conf");
    std::fs::write(&conf, "max_payload: 65536\n").unwrap();
    let nats = NatsServer::start_with(&["-c", conf.to_str().unwrap()]);
    let rx = Receiver::start().await;
    let top = format!(
        r#"{}
[[ingress.routes]]
path = "/in/own-id"
subject = "inbound.own"
verify = {{ scheme = "standard", secret = {{ value = "{STD_SECRET}" }} }}
id_header = "X-Delivery-Id"
[[ingress.routes]]
path = "/in/big"
subject = "inbound.big"
verify = {{ scheme = "none" }}
max_body = 131072
"#,
        routes("5s")
    );
    let n = Natshook::start(&config(&nats, &rx, &top).render()).await;
    let logs = n.logs();
    assert!(
        logs.contains("/in/own-id: id_header x-delivery-id is not signed (scheme standard signs webhook-id only)"),
        "{logs}"
    );
    assert!(
        logs.contains("ingress max_body is above the NATS server's max_payload"),
        "{logs}"
    );
    assert!(!logs.contains("/in/std: id_header"), "{logs}");
    // /in/std shares nats.stream, with its 2-minute window, with the hex and the
    // unsigned routes.
    for warned in [
        "a standard ingress route's stream keeps ids for less than 10 minutes",
        "a standard ingress route shares its stream with a route whose ids are not signed",
    ] {
        assert!(logs.contains(warned), "{warned}:\n{logs}");
    }
    // Within max_payload by itself; its Nats-Msg-Id header takes it past.
    let body = vec![b'x'; 65536 - 8];
    let r = curl(
        "POST",
        &url(&n, "/in/big"),
        &[("webhook-id", "an-id-long-enough-to-pass-the-limit")],
        &body,
    );
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            413,
            "body and headers larger than the NATS server accepts (max_payload 65536 bytes)\n"
        )
    );
    let r = curl("POST", &url(&n, "/in/big"), &[], &body[..60_000]);
    assert_eq!(r.status, 200, "{}", r.body);
}

/// A `standard` route in a stream of its own, keeping ids for 10 minutes, is warned
/// about neither way; the other routes' streams are theirs to size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standard_route_in_a_stream_of_its_own_is_not_warned_about() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let js = jetstream::new(nats.client().await);
    js.create_stream(jetstream::stream::Config {
        name: "INBOUND_STD".into(),
        subjects: vec!["inbound.std.>".into()],
        duplicate_window: Duration::from_secs(600),
        ..Default::default()
    })
    .await
    .expect("the standard route's stream");
    nats.create_stream("INBOUND", &["inbound.hex.>", "inbound.open.>"])
        .await;
    let n = Natshook::start(&config(&nats, &rx, &routes("5s")).render()).await;
    let logs = n.logs();
    assert!(!logs.contains("a standard ingress route"), "{logs}");
}

/// A signature header sent twice is stored once, with the value that was verified
/// (the first): a consumer that verifies the stored body again reads that one. The
/// id header's first value is the message's `Nats-Msg-Id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_signature_header_is_stored_with_the_verified_value_only() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let n = Natshook::start(&config(&nats, &rx, &routes("5s")).render()).await;
    let body = br#"{"n":1}"#;
    let good = hex_sig(HEX_NEW, body);
    let r = curl(
        "POST",
        &url(&n, "/in/hex"),
        &[
            ("X-Signature", &good),
            ("X-Signature", "deadbeef"),
            ("X-Event-Type", "opened"),
            ("X-Delivery-Id", "first-id"),
            ("X-Delivery-Id", "second-id"),
        ],
        body,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let got = stored(&nats, "EVENTS").await;
    assert_eq!(got.len(), 1);
    let values = |name: &str| -> Vec<String> {
        got[0]
            .headers
            .iter()
            .filter(|(k, _)| AsRef::<str>::as_ref(k).eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.iter().map(|v| v.as_str().to_string()))
            .collect()
    };
    assert_eq!(values("X-Signature"), [good]);
    assert_eq!(values("Nats-Msg-Id"), ["first-id"]);
}
