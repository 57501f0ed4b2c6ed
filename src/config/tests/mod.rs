//! The config as `natshook check` sees it: every problem named by its key path.

use std::time::Duration;

use super::*;
use crate::signing::Scheme;

mod bounds;
mod parsing;
mod tenants;

const GOOD: &str = r#"
        [nats]
        stream = "EVENTS"
        [[events]]
        subject = "crm.lead.created"
        event = "lead.created"
        [[events]]
        subject = "helpdesk.ticket.*"
        event = "ticket.{3}"
        [[endpoints]]
        name = "crm"
        url = "https://crm.example.com/hooks"
        events = ["lead.created", "ticket.*"]
        secret = { value = "s3cret" }
    "#;

fn problems(text: &str) -> Vec<String> {
    match Config::from_str(text, "toml") {
        Ok(_) => vec![],
        Err(e) => e.problems.iter().map(|p| p.to_string()).collect(),
    }
}

/// Asserts that `text` has a problem starting with `words`.
#[track_caller]
fn assert_problem(text: &str, words: &str) {
    let got = problems(text);
    assert!(
        got.iter().any(|g| g.starts_with(words)),
        "missing {words:?} in {got:#?} of\n{text}"
    );
}

const GOOD_YAML: &str = "nats:\n  stream: EVENTS\nevents:\n  - subject: a\n    event: a\nendpoints:\n  - name: x\n    url: https://example.com/\n    events: [\"*\"]\n    secret: s\n";

fn problems_in(text: &str, format: &str) -> Vec<String> {
    match Config::from_str(text, format) {
        Ok(_) => vec![],
        Err(e) => e.problems.iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn every_mistyped_key_is_named_and_the_rest_still_validated() {
    let text = format!(
            "shutdown_grace = 5\n{GOOD}concurrency = \"many\"\nordered = 1\n[[endpoints]]\nname = 5\nurl = \"ftp://x\"\nevents = [\"*\"]\nsecret = \"s\"\nmax_attempts = \"7\"\n"
        );
    let p = problems(&text);
    for needle in [
        "shutdown_grace: invalid type: found signed int `5`, expected a string",
        "endpoints[0].concurrency: invalid type: found string \"many\"",
        "endpoints[0].ordered: invalid type: found signed int `1`, expected a boolean",
        "endpoints[1].max_attempts: invalid type: found string \"7\"",
        "endpoints[1].name: invalid type: found signed int `5`, expected a string",
        "endpoints[1].url:",
    ] {
        assert!(p.iter().any(|x| x.starts_with(needle)), "{needle} in {p:?}");
    }
    // A number where text is wanted says to quote it; so does a YAML `{2}`.
    assert!(
        p.iter().any(|x| x
            == "shutdown_grace: invalid type: found signed int `5`, expected a string: write it in quotes (\"123\"; a duration also names its unit: \"5s\")"),
        "{p:?}"
    );
    let yaml = problems_in(&format!("{GOOD_YAML}    tenant: {{2}}\n"), "yaml");
    assert!(
        yaml.iter().any(
            |x| x.starts_with("endpoints[0].tenant: invalid type: found map")
                && x.ends_with(
                    "put a value that starts with { in quotes ('{2}'), or it is read as a map"
                )
        ),
        "{yaml:?}"
    );
    // Taken out for its type, the name is not reported missing as well.
    assert!(
        !p.iter().any(|x| x == "endpoints[1].name: required"),
        "{p:?}"
    );
}

#[test]
fn defaults_match_the_contract() {
    let c = Config::from_str(GOOD, "toml").unwrap();
    assert_eq!(c.nats.urls, vec!["nats://127.0.0.1:4222"]);
    assert_eq!(c.nats.consumer_prefix, "natshook");
    assert_eq!(c.listen, "0.0.0.0:9464".parse().unwrap());
    let e = &c.endpoints[0];
    assert_eq!(e.timeout, Duration::from_secs(10));
    assert_eq!(e.max_attempts, 7);
    assert_eq!(e.retry_schedule.len(), 6);
    assert_eq!(e.retry_delay(1), Duration::from_secs(1));
    assert_eq!(e.retry_delay(6), Duration::from_secs(7200));
    assert_eq!(e.retry_delay(60), Duration::from_secs(7200));
    assert_eq!(e.disable_after_failures, 10);
    assert_eq!(e.concurrency, 64);
    assert_eq!(e.signer.scheme(), Scheme::Hex);
    assert_eq!(e.signer.header().as_str(), "x-webhook-signature");
    assert_eq!(e.envelope, Envelope::Standard);
    assert_eq!(c.shutdown_grace, Duration::from_secs(25));
}

#[test]
fn the_inflight_bound_defaults_to_256_and_must_be_positive() {
    let c = Config::from_str(GOOD, "toml").unwrap();
    assert_eq!(c.max_inflight, 256);
    let set = format!("[delivery]\nmax_inflight = 32\n{GOOD}");
    assert_eq!(Config::from_str(&set, "toml").unwrap().max_inflight, 32);
    assert_eq!(
        problems(&format!(
            "[delivery]\nmax_inflight = 0\nmax_flight = 1\n{GOOD}"
        )),
        vec![
            "delivery.max_flight: unknown key (expected one of: max_inflight, fan_out)".to_string(),
            "delivery.max_inflight: must be at least 1 (got 0)".to_string(),
        ]
    );
}

#[test]
fn logged_successes_are_capped_per_endpoint_and_in_total() {
    let log = |text: &str| {
        Config::from_str(text, "toml")
            .unwrap()
            .delivery_log
            .unwrap()
    };
    let d = log(GOOD);
    assert_eq!(
        (d.max_successes_per_second, d.max_successes_per_second_total),
        (100, 200)
    );
    let set = format!("[delivery_log]\nmax_successes_per_second_total = 0\n{GOOD}");
    assert_eq!(log(&set).max_successes_per_second_total, 0);
    assert_eq!(
        problems(&format!(
            "[delivery_log]\nmax_successes_per_second_total = -1\n{GOOD}"
        )),
        vec!["delivery_log.max_successes_per_second_total: must be at least 0 (got -1)"]
    );
}

#[test]
fn fan_out_is_off_unless_switched_on() {
    assert!(!Config::from_str(GOOD, "toml").unwrap().fan_out);
    let on = format!("[delivery]\nfan_out = true\n{GOOD}");
    assert!(Config::from_str(&on, "toml").unwrap().fan_out);
}

#[test]
fn endpoint_overrides_defaults_key_by_key() {
    let text = GOOD.replacen(
            "[[events]]",
            "[defaults]\ntimeout = \"2s\"\nsignature = { scheme = \"sha256\", header = \"X-Sig\" }\n[[events]]",
            1,
        ) + "signature = { scheme = \"standard\" }\nretry_schedule = [\"1s\"]\n";
    let c = Config::from_str(&text, "toml").unwrap();
    let e = &c.endpoints[0];
    assert_eq!(e.timeout, Duration::from_secs(2));
    assert_eq!(e.signer.scheme(), Scheme::Standard);
    assert_eq!(e.max_attempts, 2);
}

#[test]
fn every_problem_is_listed_with_its_key_path() {
    let text = r#"
            shutdown_grace = "soon"
            [nats]
            stream = "EVENTS"
            [[events]]
            subject = "a..b"
            event = "x"
            [[endpoints]]
            name = "Bad Name"
            url = "http://example.com/x"
            events = ["x"]
            secret = { env = "NATSHOOK_TEST_UNSET_SECRET" }
            timout = "5s"
            [[endpoints]]
            name = "ok"
            url = "https://10.0.0.1/x"
            events = []
            secret = "v"
            timeout = "fast"
            headers = { "X-Webhook-Id" = "spoof" }
            signature = { scheme = "md5" }
        "#;
    let got = problems(text);
    let expect = [
        "shutdown_grace: 'soon' is not a duration",
        "events[0].subject: 'a..b' has an empty token",
        "endpoints[0].name: 'Bad Name' must match [a-z0-9_-]+",
        "endpoints[0].url: scheme must be https (set allow_http = true to permit http)",
        "endpoints[0].secret: environment variable NATSHOOK_TEST_UNSET_SECRET is not set",
        "endpoints[0].timout: unknown key",
        "endpoints[1].url: 10.0.0.1 is a private",
        "endpoints[1].events: must list at least one",
        "endpoints[1].timeout: 'fast' is not a duration",
        "endpoints[1].headers.X-Webhook-Id: natshook sets this header itself",
        "endpoints[1].signature.scheme: 'md5' is not one of hex, sha256, standard",
    ];
    for e in expect {
        assert!(
            got.iter().any(|g| g.starts_with(e)),
            "missing {e:?} in {got:#?}"
        );
    }
}

/// A `[defaults]` key that every endpoint takes is one problem, named where it is
/// written; an endpoint's own table of the same key is named as the endpoint's.
#[test]
fn a_bad_default_is_named_once_by_its_defaults_path() {
    let text = r#"
            [nats]
            stream = "EVENTS"
            [defaults]
            timeout = "soon"
            signature = { scheme = "md5", header = "bad header" }
            [[events]]
            subject = "a"
            event = "a"
            [[endpoints]]
            name = "one"
            url = "https://example.com/"
            events = ["a"]
            secret = "s"
            [[endpoints]]
            name = "two"
            url = "https://example.com/"
            events = ["a"]
            secret = "s"
            signature = { header = "also bad" }
        "#;
    let got = problems(text);
    let expect = [
        "defaults.timeout: 'soon' is not a duration",
        "defaults.signature.scheme: 'md5' is not one of hex, sha256, standard",
        "defaults.signature.header: 'bad header' is not a valid header name",
        "endpoints[1].signature.header: 'also bad' is not a valid header name",
    ];
    assert_eq!(got.len(), expect.len(), "{got:#?}");
    for e in expect {
        assert!(got.iter().any(|g| g.starts_with(e)), "{e:?} in {got:#?}");
    }
}

#[test]
fn endpoint_names_are_bounded_and_natshook_s_own_consumer_names_reserved() {
    let entry = |name: &str| {
        format!(
            "[nats]\nstream = \"E\"\n[[events]]\nsubject = \"a\"\nevent = \"a\"\n[[endpoints]]\nname = \"{name}\"\nurl = \"https://example.com/\"\nevents = [\"a\"]\nsecret = \"s\"\n"
        )
    };
    assert!(problems(&entry(&"a".repeat(128))).is_empty());
    assert_eq!(
        problems(&entry(&"a".repeat(129))),
        ["endpoints[0].name: 129 characters, at most 128 allowed"]
    );
    for reserved in ["fanout", "lane"] {
        assert_eq!(
            problems(&entry(reserved)),
            [format!(
                "endpoints[0].name: '{reserved}' is reserved: one of natshook's own consumers has this name"
            )]
        );
    }
    assert!(problems(&entry("fanout-crm")).is_empty());
}

#[test]
fn unknown_top_level_and_nested_keys_are_errors() {
    let got = problems(&format!(
        "{GOOD}\n[http]\nlisten = \"0.0.0.0:1\"\nlissten = 1\n"
    ));
    assert!(
        got.iter()
            .any(|g| g.starts_with("http.lissten: unknown key")),
        "{got:?}"
    );
    let got = problems(&GOOD.replace("secret = { value", "secret = { valeu"));
    assert!(
        got.iter()
            .any(|g| g.starts_with("endpoints[0].secret.valeu: unknown key")),
        "{got:?}"
    );
    // A top-level key written below a section's header lands in it: said so.
    let got = problems(&format!(
        "{GOOD}
[http]
shutdown_grace = \"3s\"\n"
    ));
    let problem = (got.iter())
        .find(|g| g.starts_with("http.shutdown_grace: unknown key"))
        .unwrap_or_else(|| panic!("{got:?}"));
    assert!(
        problem.ends_with("shutdown_grace is a top-level key: in TOML write it above the first [section], since every key after a [section] header belongs to that section"),
        "{problem}"
    );
}

#[test]
fn events_no_mapping_produces_is_an_error() {
    let got = problems(&GOOD.replace("[\"lead.created\", \"ticket.*\"]", "[\"lead.craeted\"]"));
    assert!(
        got.iter()
            .any(|g| g.starts_with("endpoints[0].events: no [[events]] mapping")),
        "{got:?}"
    );
}

#[test]
fn nats_urls_are_checked_one_by_one() {
    let with_url = |url: &str| {
        GOOD.replace(
            "stream = \"EVENTS\"",
            &format!("stream = \"EVENTS\"\nurl = \"{url}\""),
        )
    };
    for (url, words) in [
        ("", "nats.url: must name at least one server"),
        (" ", "nats.url: must name at least one server"),
        (
            "x",
            "nats.url: 'x' is neither a URL nor host:port (e.g. nats://x:4222)",
        ),
        (
            "nats//127.0.0.1:4222",
            "nats.url: 'nats//127.0.0.1:4222' is neither a URL nor host:port (e.g. nats://127.0.0.1:4222)",
        ),
        ("nats://", "nats.url: 'nats://' has no host"),
        ("nats://:4222", "nats.url: 'nats://:4222' is not a NATS URL"),
        (
            "nats://a\\u0001b:4222",
            "nats.url: 'nats://a\\u{1}b:4222' contains a control character",
        ),
        (
            "nats://a\\nb:4222",
            "nats.url: 'nats://a\\nb:4222' contains a control character",
        ),
        (
            "nats://%41:4222",
            "nats.url: 'nats://%41:4222': '%41' is not a host name or IP address",
        ),
        ("nats://h:0", "nats.url: 'nats://h:0': port 0"),
        (
            "nats://h:65536",
            "nats.url: 'nats://h:65536' is not a NATS URL",
        ),
        (
            "http://h:4222",
            "nats.url: 'http://h:4222' is not a NATS URL: invalid scheme",
        ),
        (
            "nats://a:4222,,nats://b:4222",
            "nats.url: an entry is empty",
        ),
    ] {
        assert_problem(&with_url(url), words);
    }
    for url in [
        "nats://x",
        "nats://nats:4222",
        "localhost:4222",
        "[::1]:4222",
        "tls://user:pw@nats.example.com:4222",
        "ws://127.0.0.1",
        "wss://nats.example.com:443",
        "nats://a:4222, nats://[::1]:4223",
    ] {
        let c = Config::from_str(&with_url(url), "toml").unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(c.nats.urls.join(","), url.replace(", ", ","));
    }
}

#[test]
fn other_spellings_of_a_private_address_are_refused_as_the_guard_refuses_them() {
    for &(host, words) in crate::ssrf::PRIVATE_SPELLINGS {
        let text = GOOD.replace(
            "https://crm.example.com/hooks",
            &format!("https://{host}/hooks"),
        );
        let got = problems(&text);
        let expected = format!("endpoints[0].url: {words}");
        assert!(
            got.iter().any(|g| g.starts_with(&expected)),
            "{host}: missing {expected:?} in {got:#?}"
        );
    }
    let text = GOOD.replace("https://crm.example.com/hooks", "https://134744072/hooks");
    assert!(Config::from_str(&text, "toml").is_ok());
}

#[test]
fn ordered_forces_concurrency_one() {
    let c = Config::from_str(&format!("{GOOD}ordered = true\n"), "toml").unwrap();
    assert_eq!(c.endpoints[0].concurrency, 1);
}

#[test]
fn nats_replicas_defaults_to_one_and_stays_within_what_jetstream_keeps() {
    assert_eq!(Config::from_str(GOOD, "toml").unwrap().nats.replicas, 1);
    let three = GOOD.replace("stream = \"EVENTS\"", "stream = \"EVENTS\"\nreplicas = 3");
    assert_eq!(Config::from_str(&three, "toml").unwrap().nats.replicas, 3);
    for bad in ["0", "6", "-1"] {
        let text = GOOD.replace(
            "stream = \"EVENTS\"",
            &format!("stream = \"EVENTS\"\nreplicas = {bad}"),
        );
        assert_eq!(
            problems(&text),
            vec![format!(
                "nats.replicas: {bad} is out of range: JetStream keeps 1 to 5 replicas"
            )]
        );
    }
}

#[test]
fn rate_limit_reads_per_second_minute_and_hour_and_defaults_to_none() {
    let c = Config::from_str(GOOD, "toml").unwrap();
    assert_eq!(c.endpoints[0].rate_limit, None);
    for (text, count, secs) in [
        ("50/s", 50, 1),
        (" 300/m ", 300, 60),
        ("1000/h", 1000, 3600),
    ] {
        let c = Config::from_str(&format!("{GOOD}rate_limit = \"{text}\"\n"), "toml").unwrap();
        let rate = c.endpoints[0].rate_limit.unwrap();
        assert_eq!((rate.count, rate.per), (count, Duration::from_secs(secs)));
        assert_eq!(rate.to_string(), text.trim());
    }
    // [defaults] applies, an endpoint overrides it, and "none" lifts it.
    let with_default = GOOD.replacen(
        "[[events]]",
        "[defaults]\nrate_limit = \"20/s\"\n[[events]]",
        1,
    );
    let two = format!("{with_default}[[endpoints]]\nname = \"b\"\nurl = \"https://b.example.com/\"\nevents = [\"*\"]\nsecret = \"s\"\nrate_limit = \"none\"\n");
    let c = Config::from_str(&two, "toml").unwrap();
    assert_eq!(c.endpoints[0].rate_limit.unwrap().count, 20);
    assert_eq!(c.endpoints[1].rate_limit, None);
    let c = Config::from_str(&format!("{with_default}rate_limit = \"2/m\"\n"), "toml").unwrap();
    assert_eq!(
        c.endpoints[0].rate_limit,
        Some(Rate {
            count: 2,
            per: Duration::from_secs(60)
        })
    );
}

#[test]
fn a_bad_rate_limit_is_named_by_its_key() {
    for (text, words) in [
        (
            "50",
            "'50' is not a rate; use e.g. \"50/s\", \"300/m\" or \"1000/h\"",
        ),
        ("50/x", "'50/x': 'x' is not one of s, m, h"),
        ("50/sec", "'50/sec': 'sec' is not one of s, m, h"),
        ("/s", "'/s': '' is not a whole number"),
        ("-5/s", "'-5/s': '-5' is not a whole number"),
        ("1.5/s", "'1.5/s': '1.5' is not a whole number"),
        ("0/s", "'0/s': must allow at least 1 delivery"),
        ("2000000/s", "'2000000/s': at most 1000000/s"),
        (
            "99999999999/h",
            "'99999999999/h': '99999999999' is too large",
        ),
        ("unlimited", "'unlimited' is not a rate"),
    ] {
        let got = problems(&format!("{GOOD}rate_limit = \"{text}\"\n"));
        let expected = format!("endpoints[0].rate_limit: {words}");
        assert!(
            got.iter().any(|g| g.starts_with(&expected)),
            "{text}: missing {expected:?} in {got:#?}"
        );
    }
    let got = problems(&format!("{GOOD}rate_limit = 50\n"));
    assert!(
        got.iter()
            .any(|g| g.starts_with("endpoints[0].rate_limit: invalid type")),
        "{got:#?}"
    );
    let got = problems(&GOOD.replacen(
        "[[events]]",
        "[defaults]\nrate_limit = \"fast\"\n[[events]]",
        1,
    ));
    assert!(
        got.iter()
            .any(|g| g.starts_with("defaults.rate_limit: 'fast' is not a rate")),
        "{got:#?}"
    );
}

#[test]
fn a_rate_spaces_its_deliveries_by_the_interval_rounded_up() {
    let rate = |count, secs| Rate {
        count,
        per: Duration::from_secs(secs),
    };
    assert_eq!(rate(200, 1).interval(), Duration::from_millis(5));
    assert_eq!(rate(3, 1).interval(), Duration::from_nanos(333_333_334));
    assert_eq!(rate(1, 3600).interval(), Duration::from_secs(3600));
    assert_eq!(rate(200, 1).within(Duration::from_secs(10)), 2000);
    assert_eq!(rate(2, 1).within(Duration::from_secs(10)), 20);
    assert_eq!(rate(1, 60).within(Duration::from_secs(10)), 1);
}
#[test]
fn payload_filters_in_toml_and_yaml() {
    let toml = format!(
        "{GOOD}filter = {{ \"data.priority\" = [\"high\", \"urgent\"], \"data.n\" = [1, 2.5, true] }}\n"
    );
    let c = Config::from_str(&toml, "toml").unwrap();
    let f = &c.endpoints[0].filter;
    assert!(f.matches(br#"{"priority":"urgent","n":1.0}"#));
    assert!(!f.matches(br#"{"priority":"low","n":1}"#));
    let yaml =
        format!("{GOOD_YAML}    filter:\n      data.priority: [high]\n      data.owner: [null]\n");
    let c = Config::from_str(&yaml, "yaml").unwrap();
    let f = &c.endpoints[0].filter;
    assert!(f.matches(br#"{"priority":"high","owner":null}"#));
    assert!(!f.matches(br#"{"priority":"high"}"#));
    // No filter: everything goes through, and a changed filter is a changed endpoint.
    let plain = Config::from_str(GOOD, "toml").unwrap();
    assert!(plain.endpoints[0].filter.is_empty());
    let other = Config::from_str(&toml.replace("urgent", "low"), "toml").unwrap();
    let same = Config::from_str(&toml, "toml").unwrap();
    assert_eq!(
        same.endpoints[0],
        Config::from_str(&toml, "toml").unwrap().endpoints[0]
    );
    assert_ne!(same.endpoints[0], other.endpoints[0]);
    assert_ne!(same.endpoints[0], plain.endpoints[0]);
}

#[test]
fn payload_filter_problems_name_the_key() {
    let toml = format!(
        "{GOOD}filter = {{ \"data.priority\" = \"high\", \"priority\" = [\"x\"], \"data..a\" = [1], \"data.b\" = [], \"data.c\" = [1, {{ x = 1 }}, [2]] }}\n"
    );
    let got = problems(&toml);
    for needle in [
        "endpoints[0].filter.\"data.priority\": must be a list of allowed values",
        "endpoints[0].filter.\"priority\": must be `data` or start with `data.`",
        "endpoints[0].filter.\"data..a\": has an empty path segment",
        "endpoints[0].filter.\"data.c\"[1]: must be a string, number, boolean or null",
        "endpoints[0].filter.\"data.c\"[2]: must be a string, number, boolean or null",
    ] {
        assert!(
            got.iter().any(|x| x.starts_with(needle)),
            "{needle} in {got:?}"
        );
    }
    let got = problems(&format!("{GOOD}filter = {{ \"data.b\" = [] }}\n"));
    assert_eq!(
        got,
        ["endpoints[0].filter.\"data.b\": needs at least one allowed value"]
    );
    let got = problems(&format!("{GOOD}filter = [\"data.x\"]\n"));
    assert!(
        got[0].starts_with("endpoints[0].filter: invalid type"),
        "{got:?}"
    );
    // What one endpoint wants is no default for the others.
    let got = problems(&GOOD.replace(
        "[nats]",
        "[defaults]\nfilter = { \"data.x\" = [1] }\n[nats]",
    ));
    assert!(
        got[0].starts_with("defaults.filter: unknown key"),
        "{got:?}"
    );
}

#[test]
fn the_admin_token_must_be_long_and_presentable() {
    let with_token = |token: &str| format!("[admin]\nenabled = true\ntoken = \"{token}\"\n{GOOD}");
    assert!(problems(&with_token("0123456789abcdef")).is_empty());
    assert_eq!(
        problems(&with_token("short")),
        ["admin.token: must be at least 16 characters"]
    );
    assert_eq!(
        problems(&with_token("                ")),
        ["admin.token: must not start or end with white space (no request could present it)"]
    );
}

#[test]
fn an_endpoint_url_that_would_not_reach_its_receiver_is_refused() {
    let with_url = |url: &str| GOOD.replace("https://crm.example.com/hooks", url);
    for (url, words) in [
        (
            "https://x.example.com:99999/h",
            "endpoints[0].url: 'https://x.example.com:99999/…': '99999' is not a port",
        ),
        (
            "https://x.example.com:0/h",
            "endpoints[0].url: 'https://x.example.com:0/…': port 0",
        ),
        (
            "https://:443/h",
            "endpoints[0].url: 'https://:443/…' has no host",
        ),
        ("https://./h", "endpoints[0].url: 'https://./…' has no host"),
        (
            "https://alice:pw@x.example.com/h",
            "endpoints[0].url: credentials do not belong in the URL",
        ),
    ] {
        assert_problem(&with_url(url), words);
    }
    for url in [
        "https://x.example.com:8443/h",
        "https://[2606:4700::1111]:8443/h",
    ] {
        let got = problems(&with_url(url));
        assert!(!got.iter().any(|g| g.contains(".url")), "{url}: {got:#?}");
    }
}

#[test]
fn a_signature_header_natshook_sets_itself_or_standard_ignores_is_refused() {
    let with_sig = |sig: &str| {
        GOOD.replace(
            "secret = { value = \"s3cret\" }",
            &format!("secret = {{ value = \"s3cret\" }}\nsignature = {sig}"),
        )
    };
    for (sig, words) in [
        (
            "{ scheme = \"hex\", header = \"Content-Type\" }",
            "endpoints[0].signature.header: natshook sets this header itself",
        ),
        (
            "{ scheme = \"sha256\", header = \"X-Webhook-Id\" }",
            "endpoints[0].signature.header: natshook sets this header itself",
        ),
        (
            "{ scheme = \"standard\", header = \"X-Sig\" }",
            "endpoints[0].signature.header: standard uses the webhook-id",
        ),
    ] {
        assert_problem(&with_sig(sig), words);
    }
    for sig in [
        "{ scheme = \"hex\", header = \"X-Signature\" }",
        "{ scheme = \"hex\", header = \"X-Webhook-Signature\" }",
        "{ scheme = \"standard\" }",
    ] {
        assert_eq!(problems(&with_sig(sig)), Vec::<String>::new(), "{sig}");
    }
}

#[test]
fn a_nats_creds_file_that_cannot_be_read_is_named() {
    let text = GOOD.replace(
        "stream = \"EVENTS\"",
        "stream = \"EVENTS\"\ncreds_file = \"/nonexistent/natshook.creds\"",
    );
    let got = problems(&text);
    assert!(
        got.iter()
            .any(|g| g.starts_with("nats.creds_file: cannot read /nonexistent/natshook.creds")),
        "{got:#?}"
    );
}

#[test]
fn a_count_past_u32_says_its_upper_bound() {
    let text = GOOD.replace(
        "secret = { value = \"s3cret\" }",
        "secret = { value = \"s3cret\" }\nconcurrency = 4294967296",
    );
    assert_problem(
        &text,
        "endpoints[0].concurrency: must be at most 4294967295 (got 4294967296)",
    );
}

#[test]
fn a_secret_or_signature_of_the_wrong_shape_says_what_it_takes() {
    let with = |extra: &str| GOOD.replace("secret = { value = \"s3cret\" }", extra);
    assert_problem(
        &with("secret = 12345"),
        "endpoints[0].secret: must be a string, { env = \"…\" }",
    );
    assert_problem(
        &with("secret = \"s\"\nsignature = [\"standard\"]"),
        "endpoints[0].signature: invalid length 1, expected a table { scheme",
    );
}

#[test]
fn a_rotation_list_past_the_cap_is_named_by_its_key() {
    let list: Vec<String> = (0..=crate::signing::MAX_SECRETS)
        .map(|i| format!("\"s3cret-{i}\""))
        .collect();
    let text = GOOD.replace(
        "secret = { value = \"s3cret\" }",
        &format!("secret = [{}]", list.join(", ")),
    );
    assert_problem(&text, "endpoints[0].secret: lists 17 secrets; at most 16");
}
