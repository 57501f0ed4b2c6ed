//! The CLI around the bridge: `sign`, `verify`, and `check` on the shipped examples.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, check_config, natshook_command, one_endpoint, run_natshook as run};

/// Runs `natshook check` on `text` written to a file named `name` (its extension picks
/// the format): (exit code, stderr, how long it took).
fn check_file(name: &str, text: &str, env: &[(&str, &str)]) -> (i32, String, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    let started = Instant::now();
    let (code, _, err) = run(&["check", "--config", path.to_str().unwrap()], b"", env);
    (code, err, started.elapsed())
}

const GOOD_YAML: &str = "nats:\n  stream: EVENTS\nevents:\n  - subject: a\n    event: a\nendpoints:\n  - name: x\n    url: https://example.com/\n    events: [\"*\"]\n    secret: s\n";

#[test]
fn sign_then_verify_round_trips_and_detects_tampering() {
    for scheme in ["hex", "sha256", "standard"] {
        let secret = if scheme == "standard" {
            "whsec_ZGVtbw=="
        } else {
            "s3cret"
        };
        let (code, headers, err) = run(
            &[
                "sign", "--scheme", scheme, "--secret", secret, "--id", "msg_1",
            ],
            b"{\"a\":1}",
            &[],
        );
        assert_eq!(code, 0, "{err}");
        let mut args = vec!["verify", "--scheme", scheme, "--secret", secret];
        let lines: Vec<&str> = headers.lines().collect();
        for l in &lines {
            args.push("-H");
            args.push(l);
        }
        let (code, out, _) = run(&args, b"{\"a\":1}", &[]);
        assert_eq!((code, out.trim()), (0, "valid"), "{scheme}");
        let (code, out, _) = run(&args, b"{\"a\":2}", &[]);
        assert_eq!(code, 1, "{scheme}");
        assert!(out.starts_with("invalid: "), "{out}");
    }
    // Standard Webhooks' published example vector.
    let (_, headers, _) = run(
        &[
            "sign",
            "--scheme",
            "standard",
            "--secret",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "--id",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "--timestamp",
            "1614265330",
        ],
        br#"{"test": 2432232314}"#,
        &[],
    );
    assert!(
        headers.contains("webhook-signature: v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
        "{headers}"
    );
    let (code, _, err) = run(&["sign"], b"", &[]);
    assert_eq!(code, 2, "usage error without a secret: {err}");
}

#[test]
fn shipped_example_configs_pass_check() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let cur = dir.path().join("current");
    let prev = dir.path().join("previous");
    std::fs::write(&cur, "whsec_Y3VycmVudA==\n").unwrap();
    std::fs::write(&prev, "whsec_cHJldmlvdXM=\n").unwrap();
    for name in ["natshook.example.toml", "natshook.example.yaml"] {
        let text = std::fs::read_to_string(format!("{root}/config/{name}"))
            .unwrap()
            .replace("/var/run/secrets/audit/current", cur.to_str().unwrap())
            .replace("/var/run/secrets/audit/previous", prev.to_str().unwrap());
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let (code, out, err) = run(
            &["check", "--config", path.to_str().unwrap()],
            b"",
            &[("CRM_WEBHOOK_SECRET", "x"), ("CRM_API_KEY", "y")],
        );
        assert_eq!(code, 0, "{name}: {err}");
        assert!(
            out.contains("config OK: stream EVENTS, 2 mapping(s), 2 endpoint(s)"),
            "{out}"
        );
    }
    let (code, _, err) = run(
        &["check", "--config", &format!("{root}/config/demo.toml")],
        b"",
        &[],
    );
    assert_eq!(code, 0, "{err}");
}

/// `NATSHOOK__ENDPOINTS__<name or index>__KEY` and `NATSHOOK__EVENTS__<index>__KEY`
/// reach single entries; a variable that names no entry stops start-up, named.
#[test]
fn env_overrides_address_endpoint_and_event_entries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("natshook.toml");
    std::fs::write(
        &path,
        r#"
[nats]
stream = "EVENTS"
[[events]]
subject = "crm.lead.created"
event = "lead.created"
[[events]]
subject = "crm.deal.won"
event = "deal.won"
[[endpoints]]
name = "crm-prod"
url = "https://crm.example.com/hooks"
events = ["lead.created"]
secret = "s"
[[endpoints]]
name = "billing"
url = "https://billing.example.com/hooks"
events = ["*"]
secret = "s"
"#,
    )
    .unwrap();
    let config = path.to_str().unwrap();
    let (code, out, err) = run(
        &["check", "--config", config],
        b"",
        &[
            (
                "NATSHOOK__ENDPOINTS__CRM_PROD__URL",
                "https://crm-eu.example.com/hooks",
            ),
            ("NATSHOOK__ENDPOINTS__1__EVENTS", "[deal.won]"),
            ("NATSHOOK__EVENTS__0__SUBJECT", "crm.leads.new"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(
            "crm-prod -> https://crm-eu.example.com/hooks [hex signature; subjects: crm.leads.new]"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "billing -> https://billing.example.com/hooks [hex signature; subjects: crm.deal.won]"
        ),
        "{out}"
    );

    let (code, _, err) = run(
        &["check", "--config", config],
        b"",
        &[
            ("NATSHOOK__ENDPOINTS__CRM__URL", "https://x.example/"),
            ("NATSHOOK__ENDPOINTS__2__URL", "https://x.example/"),
            ("NATSHOOK__EVENTS__LEADS__SUBJECT", "x"),
            ("NATSHOOK__ENDPOINTS__BILLING__CONCURRENCY", "lots"),
        ],
    );
    assert_eq!(code, 2);
    for needle in [
        "NATSHOOK__ENDPOINTS__CRM: no endpoint named 'crm' (endpoints: crm-prod, billing;",
        "NATSHOOK__ENDPOINTS__2: no entry 2: the config has 2 endpoints",
        "NATSHOOK__EVENTS__LEADS: events entries are addressed by index",
        "endpoints[1].concurrency: invalid type: found string \"lots\"",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in\n{err}");
    }
}

/// `NATSHOOK__INGRESS__ROUTES__<index>__KEY` reaches one ingress route; the section's
/// own keys stay plain overrides.
#[test]
fn env_overrides_address_ingress_routes_by_index() {
    let text = "[nats]\nstream = \"E\"\n[[events]]\nsubject = \"a\"\nevent = \"a\"\n[[endpoints]]\nname = \"one\"\nurl = \"https://example.com/\"\nevents = [\"a\"]\nsecret = \"s\"\n[ingress]\n[[ingress.routes]]\npath = \"/in/a\"\nsubject = \"inbound.a\"\nverify = { scheme = \"none\" }\n";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("natshook.toml");
    std::fs::write(&path, text).unwrap();
    let check =
        |env: &[(&str, &str)]| run(&["check", "--config", path.to_str().unwrap()], b"", env);
    let (code, out, err) = check(&[
        ("NATSHOOK__INGRESS__ROUTES__0__PATH", "/in/b"),
        ("NATSHOOK__INGRESS__LISTEN", "127.0.0.1:9999"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("POST /in/b -> inbound.a"), "{out}");
    assert!(out.contains("ingress on 127.0.0.1:9999"), "{out}");
    let (code, _, err) = check(&[("NATSHOOK__INGRESS__ROUTES__3__PATH", "/in/b")]);
    assert_eq!(code, 2);
    assert!(
        err.contains("NATSHOOK__INGRESS__ROUTES__3: no entry 3: the config has 1 ingress.routes"),
        "{err}"
    );
}

/// `check` warns about an ingress route with more than 8 Ed25519 keys: it takes one
/// `v1a` signature per request, so a sender signing with its old and new key while
/// rotating would get `401`.
#[test]
fn check_warns_when_ed25519_keys_leave_room_for_one_v1a_signature() {
    let keygen = || {
        let (code, out, err) = run(&["keygen"], b"", &[]);
        assert_eq!(code, 0, "{err}");
        out.lines().nth(1).unwrap().to_string()
    };
    let keys: Vec<String> = (0..9).map(|_| keygen()).collect();
    let config = |keys: &[String]| {
        let list: Vec<String> = keys
            .iter()
            .map(|k| format!("{{ value = \"{k}\" }}"))
            .collect();
        format!(
            "[nats]\nstream = \"E\"\n[[events]]\nsubject = \"a\"\nevent = \"a\"\n[[endpoints]]\nname = \"one\"\nurl = \"https://example.com/\"\nevents = [\"a\"]\nsecret = \"s\"\n[ingress]\n[[ingress.routes]]\npath = \"/in/a\"\nsubject = \"inbound.a\"\nverify = {{ scheme = \"standard\", secret = [{}] }}\n",
            list.join(", ")
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("natshook.toml");
    std::fs::write(&path, config(&keys)).unwrap();
    let (code, out, err) = run(&["check", "--config", path.to_str().unwrap()], b"", &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(
            "warning: /in/a has 9 Ed25519 keys, so a request may carry 1 v1a signature(s)"
        ),
        "{out}"
    );
    std::fs::write(&path, config(&keys[..8])).unwrap();
    let (code, out, err) = run(&["check", "--config", path.to_str().unwrap()], b"", &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("POST /in/a -> inbound.a"), "{out}");
    assert!(!out.contains("warning"), "{out}");

    // Under standard, an id_header other than webhook-id is not signed.
    let unsigned_id = config(&keys[..1]).replace("verify = {", "id_header = \"X-Id\"\nverify = {");
    std::fs::write(&path, unsigned_id).unwrap();
    let (code, out, err) = run(&["check", "--config", path.to_str().unwrap()], b"", &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("warning: /in/a: id_header x-id is not signed"),
        "{out}"
    );
}

/// A `standard` secret not in Standard Webhooks' form is valid (its bytes are the key)
/// but no official library would use the same key: `check` says so.
#[test]
fn check_warns_about_standard_secrets_without_the_whsec_prefix() {
    let config = |secret: &str| {
        format!(
            "[nats]\nstream = \"E\"\n[[events]]\nsubject = \"a\"\nevent = \"a\"\n[[endpoints]]\nname = \"one\"\nurl = \"https://example.com/\"\nevents = [\"a\"]\nsecret = \"{secret}\"\nsignature = {{ scheme = \"standard\" }}\n[ingress]\n[[ingress.routes]]\npath = \"/in/a\"\nsubject = \"inbound.a\"\nverify = {{ scheme = \"standard\", secret = \"{secret}\" }}\n"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("natshook.toml");
    std::fs::write(&path, config("plain-secret")).unwrap();
    let (code, out, err) = run(&["check", "--config", path.to_str().unwrap()], b"", &[]);
    assert_eq!(code, 0, "{err}");
    for line in [
        "warning: endpoint one: under the standard scheme a secret without the whsec_ prefix",
        "warning: /in/a: under the standard scheme a secret without the whsec_ prefix",
    ] {
        assert!(out.contains(line), "{line}\nin:\n{out}");
    }
    std::fs::write(&path, config("whsec_ZGVtbw==")).unwrap();
    let (code, out, err) = run(&["check", "--config", path.to_str().unwrap()], b"", &[]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("warning"), "{out}");
}

/// An `events` pattern no mapping can match is most likely a typo: `check` names it,
/// though the endpoint's other patterns make the config valid.
#[test]
fn check_warns_about_an_events_pattern_no_mapping_matches() {
    let config = |events: &str| {
        format!(
            "[nats]\nstream = \"E\"\n[[events]]\nsubject = \"crm.lead.*\"\nevent = \"lead.{{3}}\"\n[[events]]\nsubject = \"desk.ticket.*\"\nevent = \"ticket.{{3}}\"\n[[endpoints]]\nname = \"one\"\nurl = \"https://example.com/\"\nevents = {events}\nsecret = \"s\"\n"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("natshook.toml");
    std::fs::write(&path, config(r#"["lead.created", "tickt.*"]"#)).unwrap();
    let (code, out, err) = run(&["check", "--config", path.to_str().unwrap()], b"", &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("warning: endpoint one: events pattern 'tickt.*' matches no event"),
        "{out}"
    );
    assert!(!out.contains("'lead.created' matches no"), "{out}");
    std::fs::write(&path, config(r#"["lead.created", "ticket.*"]"#)).unwrap();
    let (code, out, err) = run(&["check", "--config", path.to_str().unwrap()], b"", &[]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("warning"), "{out}");
}

/// A `[registry]` limit tighter than what a runtime endpoint gets for a key it leaves
/// out holds only for customers who set the key: `check` says so, as the process does
/// at start, naming the `[defaults]` key to set.
#[test]
fn check_warns_about_a_registry_limit_the_defaults_exceed() {
    let config = |retries: &str| {
        format!(
            "[nats]\nstream = \"E\"\n[[events]]\nsubject = \"a\"\nevent = \"a\"\n[defaults]\nretry_schedule = {retries}\n[registry]\nenabled = true\n"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("natshook.toml");
    std::fs::write(&path, config(r#"["500ms"]"#)).unwrap();
    let (code, out, err) = run(&["check", "--config", path.to_str().unwrap()], b"", &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("warning: registry.min_retry_delay: is tighter than the retry_schedule"),
        "{out}"
    );
    assert!(out.contains("set [defaults] retry_schedule"), "{out}");
    std::fs::write(&path, config(r#"["5s"]"#)).unwrap();
    let (code, out, err) = run(&["check", "--config", path.to_str().unwrap()], b"", &[]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("warning"), "{out}");
}

/// `sign` and `verify` with `--endpoint` need that endpoint's secret only: the admin
/// token, the other endpoints' secrets, its extra headers' secrets and TLS files may
/// be missing where a receiver's developer runs them. A problem of the endpoint
/// itself names it by its place in the file.
#[test]
fn sign_and_verify_need_only_the_named_endpoint_s_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("natshook.toml");
    std::fs::write(
        &path,
        "[nats]\nstream = \"E\"\ntoken = { env = \"NATSHOOK_TEST_UNSET_NATS_TOKEN\" }\n[admin]\nenabled = true\ntoken = { env = \"NATSHOOK_TEST_UNSET_ADMIN\" }\n[[events]]\nsubject = \"a\"\nevent = \"a\"\n[defaults]\nca_file = \"/nonexistent/ca.pem\"\n[[endpoints]]\nname = \"mine\"\nurl = \"https://example.com/\"\nevents = [\"*\"]\nsecret = \"my-secret-for-signing\"\nheaders = { Authorization = { env = \"NATSHOOK_TEST_UNSET_HEADER\" } }\n[[endpoints]]\nname = \"other\"\nurl = \"https://example.com/\"\nevents = [\"*\"]\nsecret = { env = \"NATSHOOK_TEST_UNSET_OTHER\" }\n",
    )
    .unwrap();
    let config = path.to_str().unwrap();
    let (code, headers, err) = run(
        &["sign", "--config", config, "--endpoint", "mine"],
        b"{}",
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let mut args = vec!["verify", "--config", config, "--endpoint", "mine"];
    for h in headers.lines() {
        args.extend(["-H", h]);
    }
    let (code, out, err) = run(&args, b"{}", &[]);
    assert_eq!((code, out.trim()), (0, "valid"), "{err}");
    let (code, _, err) = run(
        &["sign", "--config", config, "--endpoint", "other"],
        b"{}",
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("endpoints[1].secret"), "{err}");
    assert!(!err.contains("admin.token"), "{err}");
    let (code, _, err) = run(
        &["sign", "--config", config, "--endpoint", "nosuch"],
        b"{}",
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no endpoint named 'nosuch'"), "{err}");
}

/// A listen address another process holds stops start-up with the key that gave it,
/// before natshook connects anywhere.
#[test]
fn a_taken_listen_address_is_named_by_its_key() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("natshook.toml");
    std::fs::write(
        &path,
        format!(
            "[nats]\nurl = \"nats://127.0.0.1:1\"\nstream = \"E\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n[[events]]\nsubject = \"a\"\nevent = \"a\"\n[[endpoints]]\nname = \"x\"\nurl = \"https://example.com/\"\nevents = [\"*\"]\nsecret = \"s\"\n"
        ),
    )
    .unwrap();
    let (code, _, err) = run(&["run", "--config", path.to_str().unwrap()], b"", &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "natshook: http.listen: cannot listen on 127.0.0.1:{port}"
        )),
        "{err}"
    );
}

/// An override spelt with single underscores changes nothing: `check` names it with
/// the spelling that works. A variable the config reads through `{ env }` is not one.
#[test]
fn check_names_an_override_spelt_with_single_underscores() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("natshook.toml");
    std::fs::write(
        &path,
        "[nats]\nstream = \"E\"\n[admin]\nenabled = true\ntoken = { env = \"NATSHOOK_ADMIN_TOKEN\" }\n[[events]]\nsubject = \"a\"\nevent = \"a\"\n[[endpoints]]\nname = \"x\"\nurl = \"https://example.com/\"\nevents = [\"*\"]\nsecret = \"s\"\n",
    )
    .unwrap();
    let env = [
        ("NATSHOOK_NATS_URL", "nats://127.0.0.1:1"),
        ("NATSHOOK_ADMIN_TOKEN", "a-token-of-twenty-chars"),
    ];
    let (code, out, err) = run(&["check", "--config", path.to_str().unwrap()], b"", &env);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("warning: environment variable NATSHOOK_NATS_URL is not read by natshook; if it is meant to override a key, its name is NATSHOOK__NATS__URL (two underscores after NATSHOOK and between section and key)"),
        "{out}"
    );
    assert!(!out.contains("NATSHOOK_ADMIN_TOKEN"), "{out}");
}

/// A config nested 100,000 deep is refused at once, named, without a crash: libyaml
/// took half a minute over it, and toml_edit's limits multiply to a depth that
/// overflowed the stack; figment's parse of an env value overflowed it too.
#[test]
fn check_refuses_deep_nesting_at_once() {
    let n = 100_000;
    let toml_inline = format!(
        "a = {}1{}\n",
        format!("{{ {} = ", ["k"; 79].join(".")).repeat(79),
        "}".repeat(79)
    );
    let toml_good =
        one_endpoint("url = \"https://example.com/\"\nevents = [\"*\"]\nsecret = \"s\"\n");
    // An environment variable holds at most 128 KiB.
    let env_value = "[".repeat(10_000) + &"]".repeat(10_000);
    for (name, text, env, words) in [
        (
            "flow.yaml",
            format!("a: {}{}\n", "[".repeat(n), "]".repeat(n)),
            None,
            "config: nests deeper than 64 levels at line 1, column 67",
        ),
        (
            "map.yaml",
            format!("a: {}1{}\n", "{a: ".repeat(n), "}".repeat(n)),
            None,
            "config: nests deeper than 64 levels at line 1",
        ),
        (
            "flow.toml",
            format!("a = {}{}\n", "[".repeat(n), "]".repeat(n)),
            None,
            "config: nests deeper than 64 levels at line 1",
        ),
        (
            "inline.toml",
            toml_inline,
            None,
            "config: nests deeper than 64 levels (under a.k.k.k",
        ),
        (
            "env.toml",
            toml_good,
            Some(("NATSHOOK__SHUTDOWN_GRACE", env_value.as_str())),
            "NATSHOOK__SHUTDOWN_GRACE: nests deeper than 64 levels",
        ),
    ] {
        let env: Vec<(&str, &str)> = env.into_iter().collect();
        let (code, err, took) = check_file(name, &text, &env);
        assert_eq!(code, 2, "{name}: {err}");
        assert!(err.contains(words), "{name}: missing {words:?} in\n{err}");
        assert!(err.len() < 1000, "{name}: {} bytes of errors", err.len());
        assert!(took < Duration::from_secs(5), "{name}: took {took:?}");
    }
}

/// YAML keeps the last of two equal keys; a second `allow_private` would turn the
/// SSRF guard off unnoticed.
#[test]
fn check_refuses_a_repeated_yaml_key() {
    let text = GOOD_YAML.replace("https://example.com/", "https://10.0.0.1/")
        + "    allow_private: false\n    allow_private: true\n";
    let (code, err, _) = check_file("natshook.yaml", &text, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("endpoints[0].allow_private: repeated key (lines 11 and 12): a key may appear only once in a mapping"),
        "{err}"
    );
    let (code, err, _) = check_file(
        "natshook.yaml",
        &format!("{GOOD_YAML}nats:\n  stream: OTHER\n"),
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nats: repeated key (lines 1 and 11)"), "{err}");
}

/// async-nats accepts these and only fails at run time, looking the garbage up again
/// on every reconnect.
#[test]
fn check_validates_every_nats_url() {
    let endpoint = "url = \"https://example.com/\"\nevents = [\"*\"]\nsecret = \"s\"\n";
    for (url, words) in [
        ("", "nats.url: must name at least one server"),
        (" ", "nats.url: must name at least one server"),
        ("x", "nats.url: 'x' is neither a URL nor host:port"),
        ("nats://", "nats.url: 'nats://' has no host"),
        (
            "nats://a\\u0007b:4222",
            "nats.url: 'nats://a\\u{7}b:4222' contains a control character",
        ),
        (
            "nats://ok:4222, nats://:4222",
            "nats.url: 'nats://:4222' is not a NATS URL",
        ),
        ("nats://h:0", "nats.url: 'nats://h:0': port 0"),
    ] {
        let config = one_endpoint(endpoint).replace(
            "stream = \"E\"",
            &format!("stream = \"E\"\nurl = \"{url}\""),
        );
        let (code, err) = check_config(&config);
        assert_eq!(code, 2, "{url:?}: {err}");
        assert!(err.contains(words), "{url:?}: missing {words:?} in\n{err}");
    }
    let config = one_endpoint(endpoint).replace(
        "stream = \"E\"",
        "stream = \"E\"\nurl = \"nats://a:4222,b.example:4222,tls://[::1]:4223\"",
    );
    let (code, err) = check_config(&config);
    assert_eq!(code, 0, "{err}");
}

/// The resolver reads these as private addresses; check says so, with the words the
/// connect-time guard uses.
#[test]
fn check_refuses_other_spellings_of_private_addresses() {
    for (host, words) in [
        ("2130706433", "2130706433 is 127.0.0.1, a private, loopback or link-local address (set allow_private = true or allow_cidrs to permit it)"),
        ("0x7f000001", "0x7f000001 is 127.0.0.1, a private"),
        ("017700000001", "017700000001 is 127.0.0.1, a private"),
        ("127.1", "127.1 is 127.0.0.1, a private"),
        ("0177.0.0.1", "0177.0.0.1 is 127.0.0.1, a private"),
        ("0xa9fea9fe", "0xa9fea9fe is 169.254.169.254, a private"),
        ("[fe80::1%25lo]", "fe80::1%25lo is an IPv6 address with a zone id, which a webhook URL cannot use"),
    ] {
        let (code, err) = check_config(&one_endpoint(&format!(
            "url = \"http://{host}/\"\nallow_http = true\nevents = [\"*\"]\nsecret = \"s\"\n"
        )));
        assert_eq!(code, 2, "{host}: {err}");
        assert!(
            err.contains(&format!("endpoints[0].url: {words}")),
            "{host}: missing {words:?} in\n{err}"
        );
    }
}

/// A reader that went away before the output (`natshook keygen | head -c0`) is not a
/// panic (exit 101): the key pair is simply not shown. The pipe's read end is closed
/// before natshook starts, so the write fails every time, not by a race.
#[test]
fn output_to_a_closed_pipe_is_not_a_panic() {
    let script = "import os, subprocess, sys\n\
                  r, w = os.pipe()\n\
                  os.close(r)\n\
                  sys.exit(subprocess.run(sys.argv[1:], stdout=w).returncode)\n";
    for args in [&["keygen"][..], &["sign", "--secret", "s"][..]] {
        let status = Command::new(common::python())
            .arg("-c")
            .arg(script)
            .arg(bin())
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("python runs");
        assert_ne!(status.code(), Some(101), "natshook {args:?} panicked");
    }
}

#[test]
fn check_names_a_bad_rate_limit_by_its_key_from_the_file_and_the_environment() {
    let (code, err) = check_config(&one_endpoint(
        "url = \"https://example.com/\"\nevents = [\"*\"]\nsecret = \"s\"\nrate_limit = \"50/x\"\n",
    ));
    assert_eq!(code, 2);
    assert!(
        err.contains("endpoints[0].rate_limit: '50/x': 'x' is not one of s, m, h"),
        "{err}"
    );
    let good = "nats = { stream = \"E\" }\n[[events]]\nsubject = \"a\"\nevent = \"a\"\n[[endpoints]]\nname = \"x\"\nurl = \"https://example.com/\"\nevents = [\"*\"]\nsecret = \"s\"\n";
    let (code, err, _) = check_file(
        "natshook.toml",
        good,
        &[("NATSHOOK__DEFAULTS__RATE_LIMIT", "fast")],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("defaults.rate_limit: 'fast' is not a rate; use e.g. \"50/s\""),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("natshook.toml");
    std::fs::write(&path, good).unwrap();
    let (code, out, err) = run(
        &["check", "--config", path.to_str().unwrap()],
        b"",
        &[("NATSHOOK__DEFAULTS__RATE_LIMIT", "50/s")],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("[hex signature; rate_limit 50/s; subjects: a]"),
        "{out}"
    );
}

/// A command without `--config` says the file can also come from `NATSHOOK_CONFIG`.
#[test]
fn a_missing_config_names_the_variable_too() {
    for args in [&["run"][..], &["dlq", "list"]] {
        let out = natshook_command()
            .args(args)
            .env_remove("NATSHOOK_CONFIG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("--config <CONFIG>"), "{stderr}");
        assert!(stderr.contains("NATSHOOK_CONFIG=FILE"), "{stderr}");
    }
}
