//! Property tests over hostile input (bounded: a few hundred cases each, seconds in
//! CI): subject patterns and templates, consumer filters, envelopes built from
//! arbitrary bytes, and config parsing. No panics, no hangs, and the filter a
//! consumer gets never hides a message its endpoint wants.

use bytes::Bytes;
use natshook::config::Config;
use natshook::envelope::{build, Envelope, MessageFacts};
use natshook::routing::{
    EventFilter, EventRule, EventTemplate, Pattern, Router, TenantSource, Verdict,
};
use proptest::prelude::*;

fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("c".to_string()),
        Just("lead".to_string()),
    ]
}

fn subject() -> impl Strategy<Value = String> {
    prop::collection::vec(token(), 1..5).prop_map(|t| t.join("."))
}

fn pattern_text() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop_oneof![3 => token(), 1 => Just("*".to_string())], 1..4),
        prop::bool::ANY,
    )
        .prop_map(|(mut toks, gt)| {
            if gt {
                toks.push(">".to_string());
            }
            toks.join(".")
        })
}

/// Reference matcher, written independently of the one under test.
fn reference_match(pattern: &str, subject: &str) -> bool {
    fn go(p: &[&str], s: &[&str]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(&">"), Some(_)) => true,
            (Some(&"*"), Some(_)) => go(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &s[1..]),
            _ => false,
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let s: Vec<&str> = subject.split('.').collect();
    go(&p, &s)
}

fn rule(subject: &str, event: &str) -> Option<EventRule> {
    let subject = Pattern::parse(subject).ok()?;
    let event = EventTemplate::parse(event, &subject).ok()?;
    Some(EventRule {
        subject,
        event,
        tenant: None,
    })
}

/// A rule whose messages take their tenant from `tenant` (`{n}`, a literal, or
/// `header:<name>`).
fn tenant_rule(subject: &str, event: &str, tenant: &str) -> Option<EventRule> {
    let mut r = rule(subject, event)?;
    r.tenant = Some(match tenant.strip_prefix("header:") {
        Some(name) => TenantSource::Header(name.to_string()),
        None => TenantSource::parse(tenant, &r.subject).ok()?,
    });
    Some(r)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics_the_pattern_parser(text in ".{0,40}", subject in ".{0,40}") {
        if let Ok(p) = Pattern::parse(&text) {
            let _ = p.matches(&subject);
            let _ = EventTemplate::parse(&subject, &p);
        }
        let _ = EventFilter::parse(&[text.as_str()]);
    }

    #[test]
    fn matching_agrees_with_a_reference(p in pattern_text(), s in subject()) {
        let pattern = Pattern::parse(&p).unwrap();
        prop_assert_eq!(pattern.matches(&s), reference_match(&p, &s), "{} vs {}", p, s);
    }

    #[test]
    fn templates_render_only_subject_tokens(p in pattern_text(), s in subject(), n in 1usize..6) {
        let template = format!("x.{{{n}}}.y");
        if let Some(r) = rule(&p, &template) {
            let router = Router::new(vec![r]);
            if let Some(ev) = router.route(&s, []).map(|m| m.event) {
                let token = s.split('.').nth(n - 1).unwrap_or("");
                prop_assert_eq!(ev, format!("x.{token}.y"));
            }
        }
    }

    #[test]
    fn consumer_filters_never_hide_a_wanted_message(
        rules in prop::collection::vec((pattern_text(), prop_oneof![
            Just("lead.created".to_string()), Just("ev.{1}".to_string()), Just("ev.{2}.x".to_string()),
            Just("ev.{1}.{2}".to_string()), Just("ev.x{1}".to_string()), Just("ev.{3}".to_string())
        ]), 1..5),
        wants in prop::collection::vec(prop_oneof![
            Just("*".to_string()), Just("ev.*".to_string()), Just("lead.created".to_string()),
            Just("ev.a".to_string()), Just("ev.>".to_string()), Just("ev.*.x".to_string()),
            Just("ev.a.b".to_string()), Just("ev.xa".to_string()), Just("ev.lead.c".to_string())
        ], 1..3),
        subjects in prop::collection::vec(subject(), 1..20),
    ) {
        let rules: Vec<EventRule> = rules.iter().filter_map(|(s, e)| rule(s, e)).collect();
        let router = Router::new(rules);
        let filter = EventFilter::parse(&wants).unwrap();
        let filters = router.filter_subjects(&filter, None);
        if let Some(fs) = &filters {
            let parsed: Vec<Pattern> = fs.iter().map(|f| Pattern::parse(f).unwrap()).collect();
            for (i, a) in parsed.iter().enumerate() {
                for b in &parsed[i + 1..] {
                    prop_assert!(!a.overlaps(b), "JetStream refuses overlapping filters {} {}", a, b);
                }
            }
        }
        for s in &subjects {
            if let Some(ev) = router.route(s, []).map(|m| m.event) {
                if filter.wants(&ev) {
                    let covered = match &filters {
                        None => true,
                        Some(fs) => fs.iter().any(|f| Pattern::parse(f).unwrap().matches(s)),
                    };
                    prop_assert!(covered, "{} ({}) wanted but filtered out by {:?}", s, ev, filters);
                }
            }
        }
    }

    /// A tenant's consumer filter never hides a message `decide` would deliver to it,
    /// and never overlaps itself.
    #[test]
    fn tenant_filters_never_hide_a_tenant_message(
        rules in prop::collection::vec((pattern_text(), prop_oneof![
            Just("lead.created".to_string()), Just("ev.{1}".to_string()), Just("ev.{2}.x".to_string()),
            Just("ev.{3}".to_string())
        ], prop_oneof![
            Just(None), Just(Some("{1}")), Just(Some("{2}")), Just(Some("{3}")),
            Just(Some("a")), Just(Some("header:T"))
        ]), 1..5),
        wants in prop::collection::vec(prop_oneof![
            Just("*".to_string()), Just("ev.*".to_string()), Just("lead.created".to_string()),
            Just("ev.a".to_string()), Just("ev.>".to_string())
        ], 1..3),
        tenant in prop_oneof![Just("a"), Just("b"), Just("x")],
        subjects in prop::collection::vec((subject(), prop_oneof![Just(None), Just(Some("a")), Just(Some("b"))]), 1..20),
    ) {
        let rules: Vec<EventRule> = rules
            .iter()
            .filter_map(|(s, e, t)| match t {
                None => rule(s, e),
                Some(t) => tenant_rule(s, e, t),
            })
            .collect();
        let router = Router::new(rules);
        let filter = EventFilter::parse(&wants).unwrap();
        let filters = router.filter_subjects(&filter, Some(tenant));
        if let Some(fs) = &filters {
            let parsed: Vec<Pattern> = fs.iter().map(|f| Pattern::parse(f).unwrap()).collect();
            for (i, a) in parsed.iter().enumerate() {
                for b in &parsed[i + 1..] {
                    prop_assert!(!a.overlaps(b), "JetStream refuses overlapping filters {} {}", a, b);
                }
            }
        }
        for (s, header) in &subjects {
            let headers: Vec<(&str, &str)> = header.iter().map(|h| ("T", *h)).collect();
            if let Verdict::Deliver(m) = router.decide(s, headers, &filter, Some(tenant)) {
                prop_assert_eq!(m.tenant.as_deref(), Some(tenant));
                let covered = match &filters {
                    None => true,
                    Some(fs) => fs.iter().any(|f| Pattern::parse(f).unwrap().matches(s)),
                };
                prop_assert!(covered, "{} ({:?}) wanted but filtered out by {:?}", s, m, filters);
            }
        }
    }

    #[test]
    fn envelopes_from_arbitrary_bytes_are_json_or_a_clear_refusal(payload in prop::collection::vec(any::<u8>(), 0..200), text in ".{0,60}") {
        for bytes in [Bytes::from(payload.clone()), Bytes::from(text.clone())] {
            let facts = MessageFacts {
                id: "id\"\\\n",
                event: "e",
                subject: "s",
                stream_sequence: 1,
                attempt: 1,
                published: std::time::SystemTime::UNIX_EPOCH,
                payload: &bytes,
                tenant: None,
            };
            match build(Envelope::Standard, &Default::default(), None, &facts) {
                Ok(body) => {
                    let v: serde_json::Value = serde_json::from_slice(&body).expect("always valid JSON");
                    prop_assert_eq!(v["id"].as_str(), Some("id\"\\\n"));
                    match serde_json::from_slice::<serde_json::Value>(&bytes) {
                        Ok(data) if !bytes.is_empty() => prop_assert_eq!(&v["data"], &data),
                        _ => prop_assert_eq!(v["data"].as_str().map(str::as_bytes), Some(bytes.as_ref())),
                    }
                }
                Err(_) => prop_assert!(std::str::from_utf8(&bytes).is_err()),
            }
        }
    }

    #[test]
    fn arbitrary_config_text_never_panics(text in "(\\[[a-z_\\.]{0,12}\\]\n|[a-z_]{1,10} = (\"[^\"\n]{0,12}\"|[0-9]{1,3}|true|\\[\\]|\\{ \\})\n){0,12}") {
        let _ = Config::from_str(&text, "toml");
        let _ = Config::from_str(&text, "yaml");
    }

    /// YAML's punctuation, anchors and aliases, block and flow, through the event walk
    /// that checks depth and repeated keys before figment parses the same text.
    #[test]
    fn arbitrary_yaml_text_never_panics(text in "([-?:,\\[\\]{}|>'\"# \n]|[a-z]{1,3}|&a |\\*a|  |\n  - |: ){0,80}") {
        let _ = Config::from_str(&text, "yaml");
    }

    #[test]
    fn mutated_good_configs_never_panic(key in "[a-z_]{1,16}", value in "(\"[^\"\n]{0,20}\"|-?[0-9]{1,12}|true|\\[\"[a-z0-9.*>{}]{0,10}\"\\])", section in 0usize..4) {
        let sections = ["[nats]", "[defaults]", "[[events]]", "[[endpoints]]"];
        let base = "[nats]\nstream = \"E\"\n[defaults]\ntimeout = \"1s\"\n[[events]]\nsubject = \"a.*\"\nevent = \"a.{2}\"\n[[endpoints]]\nname = \"x\"\nurl = \"https://example.com/\"\nevents = [\"*\"]\nsecret = \"s\"\n";
        let text = base.replacen(sections[section], &format!("{}\n{key} = {value}", sections[section]), 1);
        let _ = Config::from_str(&text, "toml");
    }
}
