//! Values each valid alone that cannot work together or at all: a probe interval past
//! its maximum, header names that differ only in case, durations too long for the
//! timers and JetStream, names past JetStream's length, mappings no message reaches.

use super::*;

/// `GOOD` with `defaults` as its `[defaults]` table and `own` added to its endpoint.
fn with(defaults: &str, own: &str) -> String {
    GOOD.replacen(
        "[[events]]",
        &format!("[defaults]\n{defaults}\n[[events]]"),
        1,
    )
    .replace(
        "secret = { value = \"s3cret\" }",
        &format!("secret = {{ value = \"s3cret\" }}\n{own}"),
    )
}

/// A first probe interval past the maximum is taken: a runtime endpoint is checked
/// against the file's `[defaults]`, whose change must not invalidate it.
#[test]
fn a_probe_interval_past_its_maximum_is_taken() {
    assert!(problems(&with(
        "",
        "probe_interval = \"5m\"\nprobe_max_interval = \"1m\""
    ))
    .is_empty());
    assert!(problems(&with(
        "probe_max_interval = \"1m\"",
        "probe_interval = \"5m\""
    ))
    .is_empty());
}

#[test]
fn header_names_that_differ_only_in_case_are_one_header_set_twice() {
    assert_eq!(
        problems(&with("", "headers = { \"X-A\" = \"1\", \"x-a\" = \"2\" }")),
        ["endpoints[0].headers.x-a: the same header as 'X-A' (header names ignore case); set it once"]
    );
    assert_eq!(
        problems(&with("headers = { \"X-Api-Key\" = \"1\", \"X-API-KEY\" = \"2\" }", "")),
        ["defaults.headers.X-Api-Key: the same header as 'X-API-KEY' (header names ignore case); set it once"]
    );
    assert!(problems(&with("", "headers = { \"X-A\" = \"1\", \"X-B\" = \"2\" }")).is_empty());
}

/// Every duration key goes through one check: ten years at most, so that none overflows
/// a timer or JetStream's nanoseconds later.
#[test]
fn a_duration_past_ten_years_is_refused_by_every_duration_key() {
    let text = with(
        "timeout = \"100000000000y\"\nretry_schedule = [\"1s\", \"11y\"]",
        "probe_interval = \"4000d\"\nprobe_max_interval = \"9999999999s\"",
    ) + "[dead_letter]\nmax_age = \"1000y\"\n";
    let text = format!("shutdown_grace = \"3660d\"\n{text}");
    let got = problems(&text);
    for e in [
        "shutdown_grace: must be at most 10y (got '3660d')",
        "defaults.timeout: must be at most 10y (got '100000000000y')",
        "defaults.retry_schedule[1]: must be at most 10y (got '11y')",
        "endpoints[0].probe_interval: must be at most 10y (got '4000d')",
        "endpoints[0].probe_max_interval: must be at most 10y (got '9999999999s')",
        "dead_letter.max_age: must be at most 10y (got '1000y')",
    ] {
        assert!(got.iter().any(|g| g == e), "{e:?} in {got:#?}");
    }
    assert_eq!(got.len(), 6, "{got:#?}");
    // Ten years, however they are written, are still taken.
    for year in ["10y", "3652d 12h", "87660h"] {
        let text = format!("[delivery_log]\nmax_age = \"{year}\"\n{GOOD}");
        let c = Config::from_str(&text, "toml").unwrap();
        assert!(c.delivery_log.unwrap().max_age <= problems::MAX_DURATION);
    }
}

/// nats-server refuses stream and consumer names past 255 bytes; natshook builds
/// consumer names from the prefix and an endpoint's name (up to 128 characters), and
/// with fan-out stream names from the source stream and the prefix.
#[test]
fn a_consumer_prefix_too_long_for_the_names_natshook_builds_is_refused() {
    let nats = |stream: &str, prefix: &str| {
        GOOD.replace(
            "stream = \"EVENTS\"",
            &format!("stream = \"{stream}\"\nconsumer_prefix = \"{prefix}\""),
        )
    };
    assert!(problems(&nats("EVENTS", &"p".repeat(126))).is_empty());
    assert_eq!(
        problems(&nats("EVENTS", &"p".repeat(300))),
        ["nats.consumer_prefix: 300 bytes, at most 126 allowed: a consumer is named <prefix>-<endpoint name>, endpoint names have up to 128 characters and JetStream names at most 255 bytes"]
    );
    assert_eq!(
        problems(&nats(&"S".repeat(256), "natshook")),
        ["nats.stream: 256 bytes, at most 255 allowed (JetStream's limit on names)"]
    );
    // With fan-out, <stream>_<prefix>_WORK_15 must fit too: 120 + 126 + 9 = 255.
    let fan_out = |stream: usize, prefix: usize| {
        format!(
            "[delivery]\nfan_out = true\n{}",
            nats(&"S".repeat(stream), &"p".repeat(prefix))
        )
    };
    assert!(problems(&fan_out(120, 126)).is_empty());
    assert_eq!(
        problems(&fan_out(121, 126)),
        [format!(
            "nats.consumer_prefix: with delivery.fan_out natshook creates the stream {}_{}_WORK_15, 256 bytes, and JetStream names have at most 255: nats.stream and nats.consumer_prefix together may have at most 246",
            "S".repeat(121),
            "p".repeat(126)
        )]
    );
    assert!(problems(&nats(&"S".repeat(121), &"p".repeat(126))).is_empty());
}

/// A `[defaults]` certificate without its key is one problem on the defaults, however
/// many endpoints take it; an endpoint's own half is the endpoint's.
#[test]
fn a_default_certificate_without_its_key_is_named_once_on_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::generate_simple_self_signed(vec!["natshook".to_string()]).unwrap();
    let cert_file = dir.path().join("client.pem");
    let key_file = dir.path().join("client.key");
    std::fs::write(&cert_file, key.cert.pem()).unwrap();
    std::fs::write(&key_file, key.signing_key.serialize_pem()).unwrap();
    let (cert_file, key_file) = (cert_file.display(), key_file.display());
    let second = "[[endpoints]]\nname = \"two\"\nurl = \"https://two.example.com/\"\nevents = [\"*\"]\nsecret = \"s\"\n";
    let cert = format!("cert_file = \"{cert_file}\"");
    let key = format!("key_file = \"{key_file}\"");
    assert_eq!(
        problems(&format!("{}{second}", with(&cert, ""))),
        ["defaults.cert_file: cert_file and key_file must be set together"]
    );
    assert_eq!(
        problems(&format!("{}{second}", with(&key, ""))),
        ["defaults.cert_file: cert_file and key_file must be set together"]
    );
    assert_eq!(
        problems(&format!("{}{second}", with("", &cert))),
        ["endpoints[0].cert_file: cert_file and key_file must be set together"]
    );
    // Each half from another table is a pair.
    assert!(problems(&format!(
        "{}{second}key_file = \"{key_file}\"\n",
        with(&cert, &key)
    ))
    .is_empty());
}

/// The first mapping that matches a subject wins, so one whose every subject an
/// earlier mapping matches never maps a message.
#[test]
fn a_mapping_an_earlier_one_shadows_entirely_is_refused() {
    let mappings = |subjects: &[&str]| {
        let events: String = subjects
            .iter()
            .map(|s| format!("[[events]]\nsubject = \"{s}\"\nevent = \"e\"\n"))
            .collect();
        format!("[nats]\nstream = \"E\"\n{events}[[endpoints]]\nname = \"x\"\nurl = \"https://example.com/\"\nevents = [\"*\"]\nsecret = \"s\"\n")
    };
    let never = |i: usize, s: &str, j: usize, wider: &str| {
        format!("events[{i}].subject: '{s}' is never matched: events[{j}] ('{wider}') comes first and matches every subject it does (the first match wins; put the narrower mapping first)")
    };
    assert_eq!(
        problems(&mappings(&["crm.>", "crm.lead.created"])),
        [never(1, "crm.lead.created", 0, "crm.>")]
    );
    assert_eq!(
        problems(&mappings(&["a.*", "b", "a.*"])),
        [never(2, "a.*", 0, "a.*")]
    );
    assert_eq!(
        problems(&mappings(&["a.*.c", "a.b.c", "a.>", "a.x.>"])),
        [never(1, "a.b.c", 0, "a.*.c"), never(3, "a.x.>", 2, "a.>")]
    );
    // Narrower first, and patterns that only overlap, each map some subject.
    for ok in [
        &["crm.lead.created", "crm.>"][..],
        &["a.*.c", "a.b.*"],
        &["a.*", "a.>"],
        &["a.>", "a"],
        &["*.b", "a.*"],
    ] {
        assert!(problems(&mappings(ok)).is_empty(), "{ok:?}");
    }
}
