//! Signatures and security, end to end: the official Standard Webhooks verifier,
//! Ed25519 (`v1a`) signatures checked by Python's `cryptography`, secret rotation
//! (config lists and rotated files), the SSRF guard, TLS with a private CA and mutual
//! TLS, header forwarding, secrets kept out of logs, and natshook's own listener under
//! a flood of stalled connections.

mod common;

use std::net::ToSocketAddrs;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use common::*;

/// Runs a `standard`-scheme endpoint `name` signing with the rotation list `secrets`
/// and delivers 101 messages to it (100 JSON leads, and a text payload with non-ASCII
/// characters and quotes): the requests the independent verifiers then check.
async fn deliver_101_signed_with(
    name: &str,
    secrets: &[&str],
) -> (NatsServer, Natshook, Vec<Received>) {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let list: Vec<String> = secrets
        .iter()
        .map(|s| format!("{{ value = \"{s}\" }}"))
        .collect();
    let mut config = TestConfig::new(nats.url());
    config.endpoints.push(format!(
        "[[endpoints]]\nname = \"{name}\"\nurl = \"{}\"\nevents = [\"*\"]\nsecret = [{}]\nsignature = {{ scheme = \"standard\" }}\nallow_http = true\nallow_private = true\n",
        rx.url("/"),
        list.join(", ")
    ));
    let natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    let mut msgs = leads(100, name);
    msgs.push((
        "helpdesk.ticket.created".into(),
        Bytes::from_static("unicode \u{2713} and \"quotes\"".as_bytes()),
        Some(format!("{name}-text")),
    ));
    publish_all(&js, msgs).await;
    rx.wait_for(Duration::from_secs(20), "101 delivered", |r| {
        r.delivered_ids().len() >= 101
    })
    .await;
    (nats, natshook, rx.received())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_standardwebhooks_library_verifies_requests_with_every_rotated_secret() {
    let new = "whsec_bmV3LXNlY3JldC1mb3ItbmF0c2hvb2s=";
    let old = "whsec_b2xkLXNlY3JldC1mb3ItbmF0c2hvb2s=";
    let (_nats, _natshook, got) = deliver_101_signed_with("std", &[new, old]).await;
    for r in &got {
        assert_eq!(r.header("webhook-id"), r.id());
        assert_eq!(
            r.header("webhook-timestamp"),
            r.header("x-webhook-timestamp")
        );
        assert_eq!(
            r.header("webhook-signature").split(' ').count(),
            2,
            "one signature per secret"
        );
    }
    assert_eq!(verify_received(new, &got), (101, 0));
    assert_eq!(verify_received(old, &got), (101, 0));
    let (ok, bad) = verify_received("whsec_b3RoZXItc2VjcmV0", &got);
    assert_eq!((ok, bad), (0, 101), "a wrong secret must not verify");
}

/// Checks the `v1a` entries of each request with Python's `cryptography` (OpenSSL's
/// Ed25519), independent of the crate natshook signs with: (verified, not verified).
/// Also checks that the `whsk_` secret key's seed derives the `whpk_` public key there.
fn python_ed25519_verify(whsk: &str, whpk: &str, requests: &[Received]) -> (usize, usize) {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let items: Vec<serde_json::Value> = requests
        .iter()
        .map(|r| {
            serde_json::json!({
                "body": b64.encode(&r.body),
                "id": r.header("webhook-id"),
                "ts": r.header("webhook-timestamp"),
                "sig": r.header("webhook-signature"),
            })
        })
        .collect();
    let script = r#"
import base64, json, sys
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
raw = lambda k: k.public_bytes(Encoding.Raw, PublicFormat.Raw)
pair = base64.b64decode(sys.argv[2].removeprefix("whsk_"))
public = base64.b64decode(sys.argv[3].removeprefix("whpk_"))
assert len(pair) == 64 and raw(Ed25519PrivateKey.from_private_bytes(pair[:32]).public_key()) == pair[32:]
key = Ed25519PublicKey.from_public_bytes(public)
ok = bad = 0
for item in json.load(open(sys.argv[1])):
    content = f"{item['id']}.{item['ts']}.".encode() + base64.b64decode(item["body"])
    good = False
    for entry in item["sig"].split(" "):
        version, _, sig = entry.partition(",")
        if version != "v1a":
            continue
        try:
            key.verify(base64.b64decode(sig), content)
            good = True
        except InvalidSignature:
            pass
    ok, bad = ok + good, bad + (not good)
print(ok, bad)
"#;
    two_counts(&python_over_json(script, &items, &[whsk, whpk]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ed25519_signatures_verify_with_the_public_key_in_python_cryptography() {
    // The key pair comes from `natshook keygen`, as an operator gets it.
    let keys = |stdin: &[u8], args: &[&str]| {
        let (code, out, err) = run_natshook(args, stdin, &[]);
        assert_eq!(code, 0, "{err}");
        out.lines().map(str::to_string).collect::<Vec<_>>()
    };
    let pair = keys(b"", &["keygen"]);
    let (whsk, whpk) = (pair[0].as_str(), pair[1].as_str());
    assert!(
        whsk.starts_with("whsk_") && whpk.starts_with("whpk_"),
        "{pair:?}"
    );
    assert_eq!(keys(whsk.as_bytes(), &["keygen", "--public"]), [whpk]);
    let other_whpk = keys(b"", &["keygen"])[1].clone();

    let hmac = "whsec_b2xkLXNlY3JldC1mb3ItbmF0c2hvb2s=";
    let (_nats, natshook, got) = deliver_101_signed_with("ed", &[whsk, hmac]).await;
    for r in &got {
        let sigs: Vec<&str> = r.header("webhook-signature").split(' ').collect();
        assert_eq!(sigs.len(), 2, "one signature per secret: {sigs:?}");
        assert!(sigs[0].starts_with("v1a,") && sigs[1].starts_with("v1,"));
    }
    // Every request verifies with the public key alone, and not with another one.
    assert_eq!(python_ed25519_verify(whsk, whpk, &got), (101, 0));
    assert_eq!(python_ed25519_verify(whsk, &other_whpk, &got), (0, 101));
    // The HMAC secret of the same rotation list still verifies with the official
    // library, which skips the v1a entry it does not know.
    assert_eq!(verify_received(hmac, &got), (101, 0));

    // `natshook verify` on a received request: with the public key, with the endpoint
    // of the config (secret key), and a tampered body.
    let r = &got[0];
    let headers: Vec<String> = ["webhook-id", "webhook-timestamp", "webhook-signature"]
        .iter()
        .map(|h| format!("{h}: {}", r.header(h)))
        .collect();
    let mut args = vec!["verify", "--scheme", "standard", "--secret", whpk];
    for h in &headers {
        args.extend(["-H", h.as_str()]);
    }
    assert_eq!(run_natshook(&args, &r.body, &[]).1.trim(), "valid");
    let mut tampered = r.body.to_vec();
    tampered.push(b' ');
    let (code, out, _) = run_natshook(&args, &tampered, &[]);
    assert_eq!(
        (code, out.trim()),
        (1, "invalid: no signature matches any configured secret")
    );
    let config_path = natshook.config_path().to_str().unwrap().to_string();
    let mut args = vec![
        "verify",
        "--config",
        config_path.as_str(),
        "--endpoint",
        "ed",
    ];
    for h in &headers {
        args.extend(["-H", h.as_str()]);
    }
    assert_eq!(run_natshook(&args, &r.body, &[]).1.trim(), "valid");
    assert!(
        !natshook.logs().contains(&whsk[5..]),
        "the secret key leaked"
    );
}

#[test]
fn ed25519_keys_in_the_wrong_place_are_config_errors_naming_the_entry() {
    let whpk = "whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
    let whsk = "whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=";
    let endpoint = |secret: &str, scheme: &str| {
        one_endpoint(&format!(
            "url = \"https://example.com/\"\nevents = [\"*\"]\nsecret = {secret}\nsignature = {{ scheme = \"{scheme}\" }}\n"
        ))
    };
    for (secret, scheme, want) in [
        (
            format!("\"{whpk}\""),
            "standard",
            "endpoints[0].secret: whpk_ is a public key; sign with the whsk_ secret key",
        ),
        (
            format!("[\"{whsk}\", {{ value = \"{whpk}\" }}]"),
            "standard",
            "endpoints[0].secret[1]: whpk_ is a public key; sign with the whsk_ secret key",
        ),
        (
            format!("\"{whsk}\""),
            "hex",
            "endpoints[0].secret: whsk_ keys are Ed25519 keys for the standard scheme (v1a signatures), not hex",
        ),
        (
            "[\"whsec_b2xk\", \"whsk_AAAA\"]".to_string(),
            "standard",
            "endpoints[0].secret[1]: a whsk_ secret key must be base64 of the 64-byte Ed25519 key pair",
        ),
    ] {
        let (code, err) = check_config(&endpoint(&secret, scheme));
        assert_eq!(code, 2, "{secret}: {err}");
        assert!(err.contains(want), "{secret}: {err}");
        assert!(!err.contains(&whsk[5..]), "{err}");
    }
    let (code, err) = check_config(&endpoint(&format!("\"{whsk}\""), "standard"));
    assert_eq!(code, 0, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_file_rotated_mid_traffic_signs_with_the_new_secret() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, "old-secret\n").unwrap();
    let mut config = TestConfig::new(nats.url());
    config.endpoints.push(format!(
        "[[endpoints]]\nname = \"f\"\nurl = \"{}\"\nevents = [\"*\"]\nsecret = {{ file = \"{}\" }}\nallow_http = true\nallow_private = true\n",
        rx.url("/"),
        secret_file.display()
    ));
    let natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    deliver_leads(&js, &rx, 50, "before").await;

    // Rotate the way Kubernetes does: a new file swapped in atomically.
    let tmp = dir.path().join("secret.new");
    std::fs::write(&tmp, "new-secret\n").unwrap();
    std::fs::rename(&tmp, &secret_file).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !natshook.logs().contains("secret file changed") {
        assert!(Instant::now() < deadline, "rotation not picked up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    publish_all(&js, leads(50, "after")).await;
    rx.wait_for(Duration::from_secs(20), "100", |r| {
        r.delivered_ids().len() >= 100
    })
    .await;

    let (old, new) = (hex_signer("old-secret"), hex_signer("new-secret"));
    for r in rx.received() {
        let (want, other) = if r.id().starts_with("before") {
            (&old, &new)
        } else {
            (&new, &old)
        };
        assert!(
            want.verify(&r.body, &r.headers).is_ok(),
            "{} not signed with the expected secret",
            r.id()
        );
        assert!(other.verify(&r.body, &r.headers).is_err());
    }
    assert!(!natshook.logs().contains("old-secret") && !natshook.logs().contains("new-secret"));
}

#[test]
fn urls_to_private_or_internal_targets_are_refused_by_check() {
    for (url, needle) in [
        (
            "https://[::ffff:127.0.0.1]/x",
            "::ffff:127.0.0.1 is a private",
        ),
        (
            "https://169.254.169.254/latest/meta-data",
            "169.254.169.254 is a private",
        ),
        ("https://[::1]:8443/", "::1 is a private"),
        ("https://10.0.0.7/", "10.0.0.7 is a private"),
        ("https://localhost/", "localhost is an internal host name"),
        (
            "https://api.default.svc.cluster.local/",
            "is an internal host name",
        ),
        ("http://example.com/", "scheme must be https"),
    ] {
        let (code, err) = check_config(&one_endpoint(&format!(
            "url = \"{url}\"\nevents = [\"*\"]\nsecret = \"s\"\n"
        )));
        assert_eq!(code, 2, "{url}");
        assert!(
            err.contains("endpoints[0].url: ") && err.contains(needle),
            "{url}: {err}"
        );
    }
    // allow_cidrs opens exactly its range.
    let (code, err) = check_config(&one_endpoint(
        "url = \"https://10.1.2.3/\"\nevents = [\"*\"]\nsecret = \"s\"\nallow_cidrs = [\"10.1.0.0/16\"]\n",
    ));
    assert_eq!(code, 0, "{err}");
}

/// A host name (not an IP literal, not an internal suffix) that resolves only to
/// loopback here: the machine's own name usually does.
fn loopback_name() -> Option<String> {
    let name = std::fs::read_to_string("/etc/hostname")
        .ok()?
        .trim()
        .to_string();
    if name.is_empty() || name.contains('.') && natshook::ssrf::is_internal_host(&name) {
        return None;
    }
    let addrs: Vec<_> = (name.as_str(), 80).to_socket_addrs().ok()?.collect();
    (!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())).then_some(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_resolving_to_loopback_is_refused_at_connect_time() {
    let Some(name) = loopback_name() else {
        eprintln!("no host name resolving to loopback here; the resolver's unit test covers this");
        return;
    };
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let mut config = TestConfig::new(nats.url());
    let guarded = format!("http://{name}:{}/", rx.port);
    config.endpoints.push(format!(
        "[[endpoints]]\nname = \"guarded\"\nurl = \"{guarded}\"\nevents = [\"*\"]\nsecret = \"s\"\nallow_http = true\nretry_schedule = [\"100ms\"]\nmax_attempts = 2\ndisable_after_failures = 0\n"
    ));
    config.endpoints.push(format!(
        "[[endpoints]]\nname = \"allowed\"\nurl = \"{guarded}\"\nevents = [\"*\"]\nsecret = \"s\"\nallow_http = true\nallow_cidrs = [\"127.0.0.0/8\", \"::1/128\"]\n"
    ));
    let natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    publish_all(&js, leads(5, "ssrf")).await;
    rx.wait_for(Duration::from_secs(20), "5 via allow_cidrs", |r| {
        r.count() >= 5
    })
    .await;
    let dead = natshook
        .wait_dead_letters("guarded", 5, Duration::from_secs(20))
        .await;
    assert_eq!(
        dead.len(),
        5,
        "refusals are failed attempts that end in dead letters"
    );
    for d in &dead {
        let err = d["last_error"].as_str().unwrap();
        assert!(err.contains("resolves to private address"), "{err}");
    }
    assert_eq!(
        rx.count(),
        5,
        "only the allow_cidrs endpoint reached the receiver"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_receiver_with_a_private_ca_and_mutual_tls_over_http2() {
    let pki = pki();
    assert!(pki.ca_pem.contains("BEGIN CERTIFICATE"));
    let rx = Receiver::start_tls(pki.server.clone()).await;
    let nats = NatsServer::start();
    let d = pki.dir.path().display();
    let url = rx.https_url("/secure");
    let mut config = TestConfig::new(nats.url());
    config.endpoints.push(format!(
        "[[endpoints]]\nname = \"mtls\"\nurl = \"{url}\"\nevents = [\"*\"]\nsecret = \"s\"\nallow_private = true\nca_file = \"{d}/ca.pem\"\ncert_file = \"{d}/client.pem\"\nkey_file = \"{d}/client-key.pem\"\n"
    ));
    // Same receiver without a client certificate, and without the private CA.
    config.endpoints.push(format!(
        "[[endpoints]]\nname = \"nocert\"\nurl = \"{url}\"\nevents = [\"*\"]\nsecret = \"s\"\nallow_private = true\nca_file = \"{d}/ca.pem\"\nretry_schedule = [\"100ms\"]\nmax_attempts = 2\ndisable_after_failures = 0\n"
    ));
    config.endpoints.push(format!(
        "[[endpoints]]\nname = \"systemroots\"\nurl = \"{url}\"\nevents = [\"*\"]\nsecret = \"s\"\nallow_private = true\ncert_file = \"{d}/client.pem\"\nkey_file = \"{d}/client-key.pem\"\nretry_schedule = [\"100ms\"]\nmax_attempts = 2\ndisable_after_failures = 0\n"
    ));
    let natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    deliver_leads(&js, &rx, 20, "tls").await;
    assert!(
        rx.received()
            .iter()
            .all(|r| r.version == http::Version::HTTP_2),
        "ALPN negotiated HTTP/2"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let a = natshook.dead_letters("nocert").len();
        let b = natshook.dead_letters("systemroots").len();
        if a >= 20 && b >= 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nocert {a}, systemroots {b} dead letters"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(rx.count(), 20, "only the mTLS endpoint got through");
    let err = natshook.dead_letters("systemroots")[0]["last_error"].to_string();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

/// A CA and a client certificate renewed in place (cert-manager writing a mounted
/// Secret) reach a running endpoint without a restart: the receiver moves to another
/// CA's certificates, the endpoint's files are rewritten, and every message, those
/// sent in between included, arrives without a dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_files_renewed_in_place_reach_a_running_endpoint() {
    let (old, new) = (pki(), pki());
    let files = tempfile::tempdir().unwrap();
    let install = |pki: &Pki| {
        for file in ["ca.pem", "client.pem", "client-key.pem"] {
            let text = std::fs::read(pki.dir.path().join(file)).unwrap();
            std::fs::write(files.path().join(file), text).unwrap();
        }
    };
    install(&old);
    let mut rx = Receiver::start_tls(old.server.clone()).await;
    let nats = NatsServer::start();
    let d = files.path().display();
    let mut config = TestConfig::new(nats.url());
    config.endpoints.push(format!(
        "[[endpoints]]\nname = \"mtls\"\nurl = \"{}\"\nevents = [\"*\"]\nsecret = \"s\"\nallow_private = true\nca_file = \"{d}/ca.pem\"\ncert_file = \"{d}/client.pem\"\nkey_file = \"{d}/client-key.pem\"\nretry_schedule = [\"200ms\"]\nmax_attempts = 200\ndisable_after_failures = 0\n",
        rx.https_url("/secure")
    ));
    let natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    deliver_leads(&js, &rx, 5, "before").await;

    // The receiver comes back with the new CA's certificate, asking for a client
    // certificate of the new CA, before natshook's files change: what is sent now
    // fails until they do.
    rx.stop().await;
    rx.set_tls(new.server.clone());
    rx.resume().await;
    publish_all(&js, leads(5, "between")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    install(&new);
    publish_all(&js, leads(5, "after")).await;
    rx.wait_for(Duration::from_secs(30), "15 delivered", |r| {
        r.delivered_ids().len() >= 15
    })
    .await;
    assert!(natshook.dead_letters("mtls").is_empty());
    assert!(
        natshook.logs().contains("TLS file changed"),
        "the renewal is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_and_listed_nats_headers_are_forwarded_and_nothing_else() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let config = TestConfig::new(nats.url()).endpoint(
        "fw",
        &rx.url("/"),
        &["*"],
        "forward_headers = [\"X-Tenant\"]",
    );
    let _natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    );
    headers.insert("tracestate", "vendor=abc");
    headers.insert("X-Tenant", "acme");
    headers.insert("X-Internal-Token", "must-not-leak");
    headers.insert("Nats-Msg-Id", "fw-1");
    js.publish_with_headers("crm.lead.created", headers, Bytes::from_static(b"{}"))
        .await
        .unwrap()
        .await
        .unwrap();
    rx.wait_for(Duration::from_secs(20), "1", |r| r.count() >= 1)
        .await;
    let r = &rx.received()[0];
    assert_eq!(
        r.header("traceparent"),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    assert_eq!(r.header("tracestate"), "vendor=abc");
    assert_eq!(r.header("x-tenant"), "acme");
    assert_eq!(r.header("x-internal-token"), "");
    assert_eq!(r.header("nats-msg-id"), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs_metrics_or_errors() {
    let nats = NatsServer::start();
    let rx = Receiver::with(|_| Reply::status(500).body("nope")).await;
    let mut config = TestConfig::new(nats.url());
    config.endpoints.push(format!(
        "[[endpoints]]\nname = \"s\"\nurl = \"{}\"\nevents = [\"*\"]\nsecret = \"SUPERSECRET-signing-key\"\nheaders = {{ \"X-Api-Key\" = \"SUPERSECRET-api-key\" }}\nallow_http = true\nallow_private = true\nretry_schedule = [\"50ms\"]\nmax_attempts = 2\ndisable_after_failures = 0\n",
        rx.url("/")
    ));
    let natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    publish_all(&js, leads(5, "sec")).await;
    rx.wait_for(Duration::from_secs(20), "10 attempts", |r| r.count() >= 10)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dead = natshook.dead_letters("s");
    let everything = format!(
        "{}\n{}\n{}",
        natshook.logs(),
        natshook.metrics().await,
        serde_json::to_string(&dead).unwrap()
    );
    assert!(!everything.contains("SUPERSECRET"), "a secret leaked");
    assert!(natshook.logs().contains("delivery attempt failed"));
    // A bad secret reference names the key, never a value.
    let (code, err) = check_config(&one_endpoint(
        "url = \"https://example.com/\"\nevents = [\"*\"]\nsecret = { value = \"SUPERSECRET\", env = \"ALSO\" }\nheaders = { \"X-Bad\" = \"SUPERSECRET\\r\\nInjected: 1\" }\n",
    ));
    assert_eq!(code, 2);
    assert!(
        err.contains("endpoints[0].secret: set exactly one of env, file or value"),
        "{err}"
    );
    assert!(
        err.contains("endpoints[0].headers.X-Bad: value contains characters not allowed"),
        "{err}"
    );
    assert!(!err.contains("SUPERSECRET"), "{err}");
}

/// The listener's idle timeout (`IDLE_TIMEOUT` in src/http/listener.rs).
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Sets the open-file limit of a running process, as a small container would.
fn limit_open_files(pid: u32, limit: usize) {
    let status = Command::new("prlimit")
        .arg("--pid")
        .arg(pid.to_string())
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .expect("prlimit (util-linux)");
    assert!(status.success(), "prlimit failed");
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/<pid>/fd")
        .count()
}

/// Opens `n` connections that each send half a request head and stall, and waits
/// until all have sent it. Each handle resolves with how long the server took to
/// close its connection, or an error if it was still open after `within`.
async fn stall(
    port: u16,
    n: usize,
    within: Duration,
) -> Vec<tokio::task::JoinHandle<Result<Duration, String>>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sent = Arc::new(AtomicUsize::new(0));
    let handles = (0..n)
        .map(|_| {
            let sent = sent.clone();
            tokio::spawn(async move {
                let start = Instant::now();
                let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .map_err(|e| format!("connect: {e}"))?;
                let written = tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
                sent.fetch_add(1, Ordering::SeqCst);
                if written.is_err() {
                    return Ok(start.elapsed());
                }
                let mut buf = [0u8; 1024];
                loop {
                    match tokio::time::timeout_at((start + within).into(), tcp.read(&mut buf)).await
                    {
                        Err(_) => return Err(format!("still open after {within:?}")),
                        Ok(Ok(0)) | Ok(Err(_)) => return Ok(start.elapsed()),
                        Ok(Ok(_)) => {}
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while sent.load(Ordering::SeqCst) < n {
        assert!(
            Instant::now() < deadline,
            "the stalled connections never got out"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    handles
}

/// `/healthz` answers 200, and quickly (the kubelet's default probe timeout is 1 s).
async fn assert_healthz_answers(natshook: &Natshook, what: &str) {
    for _ in 0..5 {
        let start = Instant::now();
        let got = natshook.get("/healthz").await;
        assert_eq!(
            got.as_ref().map(|(status, _)| *status),
            Ok(200),
            "/healthz {what}: {got:?}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "/healthz {what} took {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_request_heads_are_closed_and_healthz_keeps_answering() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let config = TestConfig::new(nats.url()).endpoint("a", &rx.url("/"), &["*"], "");
    let natshook = Natshook::start(&config.render()).await;
    limit_open_files(natshook.pid(), 256);
    let stalled = stall(
        natshook.http_port,
        300,
        IDLE_TIMEOUT + Duration::from_secs(5),
    )
    .await;

    assert_healthz_answers(&natshook, "with 300 stalled connections").await;
    // Deliveries still get the file descriptors they need.
    let js = jetstream::new(nats.client().await);
    deliver_leads(&js, &rx, 20, "flood").await;

    for (i, h) in stalled.into_iter().enumerate() {
        let closed = h.await.expect("stalled connection task");
        assert!(closed.is_ok(), "stalled connection {i}: {closed:?}");
    }
    assert_healthz_answers(&natshook, "after the flood").await;
    let logs = natshook.logs();
    assert!(!logs.contains("Too many open files"), "{logs}");
}

/// Opens `n` connections that each send a request head and 2 of 100 declared body
/// bytes to `path`, then hold still; they stay open as long as the returned streams.
async fn trickle_bodies(port: u16, path: &str, n: usize) -> Vec<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut held = Vec::new();
    for _ in 0..n {
        let Ok(mut tcp) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
            continue;
        };
        let head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab");
        if tcp.write_all(head.as_bytes()).await.is_ok() {
            held.push(tcp);
        }
    }
    held
}

/// Requests trickling their bodies on every connection slot hold the listener only
/// until a newcomer needs a slot: once one has run past 5 s it is closed, so
/// `/healthz`, on the same listener as the ingress, answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_request_bodies_give_way_and_healthz_keeps_answering() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let mut config = TestConfig::new(nats.url()).endpoint("a", &rx.url("/"), &["*"], "");
    config.top = "[ingress]\n[[ingress.routes]]\npath = \"/in/open\"\nsubject = \"inbound.open\"\nverify = { scheme = \"none\" }\n".into();
    let natshook = Natshook::start(&config.render()).await;
    let held = trickle_bodies(natshook.http_port, "/in/open", 140).await;
    assert!(held.len() >= 128, "{} connections held", held.len());
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_healthz_answers(&natshook, "with every slot trickling a body").await;
    let logs = natshook.logs();
    assert!(logs.contains("HTTP connection limit reached"), "{logs}");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_listener_backs_off_and_healthz_still_answers() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let config = TestConfig::new(nats.url()).endpoint("a", &rx.url("/"), &["*"], "");
    let natshook = Natshook::start(&config.render()).await;
    // Fewer descriptors left than the listener's connection cap: accept fails.
    let pid = natshook.pid();
    limit_open_files(pid, open_files(pid) + 12);
    let _stalled = stall(natshook.http_port, 60, Duration::from_secs(60)).await;

    assert_healthz_answers(&natshook, "out of file descriptors").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let logs = natshook.logs();
    let warnings = logs.matches("accept failed").count();
    assert!(
        (1..=2).contains(&warnings),
        "expected one accept warning, got {warnings}:\n{logs}"
    );
}
