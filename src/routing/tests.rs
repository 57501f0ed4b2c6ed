use super::*;

fn rule(subject: &str, event: &str) -> EventRule {
    let subject = Pattern::parse(subject).unwrap();
    let event = EventTemplate::parse(event, &subject).unwrap();
    EventRule {
        subject,
        event,
        tenant: None,
    }
}

/// A rule whose messages take their tenant from `tenant` (`{n}` or a literal).
fn tenant_rule(subject: &str, event: &str, tenant: &str) -> EventRule {
    let mut r = rule(subject, event);
    r.tenant = Some(TenantSource::parse(tenant, &r.subject).unwrap());
    r
}

fn header_rule(subject: &str, event: &str, header: &str) -> EventRule {
    let mut r = rule(subject, event);
    r.tenant = Some(TenantSource::Header(header.to_string()));
    r
}

/// The event of `subject` (no headers).
fn event(r: &Router, subject: &str) -> Option<String> {
    r.route(subject, []).map(|m| m.event)
}

fn filter(items: &[&str]) -> EventFilter {
    EventFilter::parse(items).unwrap()
}

#[test]
fn subject_patterns_follow_nats_rules() {
    let p = Pattern::parse("helpdesk.ticket.*").unwrap();
    assert!(p.matches("helpdesk.ticket.created"));
    assert!(!p.matches("helpdesk.ticket"));
    assert!(!p.matches("helpdesk.ticket.a.b"));
    let gt = Pattern::parse("crm.>").unwrap();
    assert!(gt.matches("crm.lead.created"));
    assert!(gt.matches("crm.x"));
    assert!(!gt.matches("crm"));
    assert!(!gt.matches("crm."));
    assert!(!gt.matches("other.x"));
}

#[test]
fn bad_patterns_are_refused_with_a_reason() {
    assert_eq!(Pattern::parse(""), Err(PatternError::Empty));
    assert_eq!(Pattern::parse("a..b"), Err(PatternError::EmptyToken));
    assert_eq!(Pattern::parse("a.>.b"), Err(PatternError::GtNotLast));
    assert_eq!(
        Pattern::parse("a.b*"),
        Err(PatternError::PartialWildcard("b*".into()))
    );
    assert_eq!(Pattern::parse("a b"), Err(PatternError::Whitespace));
}

#[test]
fn templates_render_subject_tokens() {
    let r = Router::new(vec![
        rule("crm.lead.created", "lead.created"),
        rule("helpdesk.ticket.*", "ticket.{3}"),
        rule("billing.>", "billing.{2}.x{1}"),
    ]);
    assert_eq!(
        event(&r, "crm.lead.created").as_deref(),
        Some("lead.created")
    );
    assert_eq!(
        event(&r, "helpdesk.ticket.status_changed").as_deref(),
        Some("ticket.status_changed")
    );
    assert_eq!(
        event(&r, "billing.invoice.paid").as_deref(),
        Some("billing.invoice.xbilling")
    );
    assert_eq!(event(&r, "crm.lead.deleted"), None);
}

#[test]
fn first_matching_rule_wins() {
    let r = Router::new(vec![
        rule("helpdesk.ticket.created", "ticket.opened"),
        rule("helpdesk.ticket.*", "ticket.{3}"),
    ]);
    assert_eq!(
        event(&r, "helpdesk.ticket.created").as_deref(),
        Some("ticket.opened")
    );
    assert_eq!(
        event(&r, "helpdesk.ticket.closed").as_deref(),
        Some("ticket.closed")
    );
}

#[test]
fn template_placeholders_are_checked_against_the_pattern() {
    let p = Pattern::parse("a.*").unwrap();
    assert_eq!(
        EventTemplate::parse("x.{3}", &p),
        Err(PatternError::PlaceholderOutOfRange(3, 2))
    );
    assert!(matches!(
        EventTemplate::parse("x.{0}", &p),
        Err(PatternError::BadPlaceholder(_))
    ));
    assert!(matches!(
        EventTemplate::parse("x.{2", &p),
        Err(PatternError::BadPlaceholder(_))
    ));
    assert!(matches!(
        EventTemplate::parse("x.2}", &p),
        Err(PatternError::BadPlaceholder(_))
    ));
}

#[test]
fn endpoint_filters() {
    let f = filter(&["lead.created", "ticket.*"]);
    assert!(f.wants("lead.created"));
    assert!(f.wants("ticket.created"));
    assert!(!f.wants("ticket.sla.breached"));
    assert!(!f.wants("lead.updated"));
    assert!(filter(&["*"]).wants("a.b.c"));
    assert!(filter(&["ticket.>"]).wants("ticket.sla.breached"));
}

#[test]
fn filter_subjects_cover_exactly_the_wanted_rules() {
    let r = Router::new(vec![
        rule("crm.lead.created", "lead.created"),
        rule("helpdesk.ticket.*", "ticket.{3}"),
        rule("billing.invoice.*", "invoice.{3}"),
    ]);
    assert_eq!(
        r.filter_subjects(&filter(&["lead.created"]), None),
        Some(vec!["crm.lead.created".to_string()])
    );
    assert_eq!(
        r.filter_subjects(&filter(&["ticket.status_changed"]), None),
        Some(vec!["helpdesk.ticket.status_changed".to_string()]),
        "a placeholder facing a literal pins the subject token"
    );
    assert_eq!(
        r.filter_subjects(&filter(&["ticket.*"]), None),
        Some(vec!["helpdesk.ticket.*".to_string()])
    );
    assert_eq!(
        r.filter_subjects(
            &filter(&["ticket.created", "invoice.paid", "lead.created"]),
            None
        ),
        Some(vec![
            "crm.lead.created".to_string(),
            "helpdesk.ticket.created".to_string(),
            "billing.invoice.paid".to_string()
        ])
    );
    assert_eq!(
        r.filter_subjects(&filter(&["*"]), None),
        Some(vec![
            "crm.lead.created".to_string(),
            "helpdesk.ticket.*".to_string(),
            "billing.invoice.*".to_string()
        ])
    );
    assert_eq!(
        r.filter_subjects(&filter(&["nothing.here"]), None),
        Some(vec![])
    );
}

#[test]
fn filter_subjects_drop_covered_patterns_and_give_up_on_partial_overlap() {
    let r = Router::new(vec![
        rule("helpdesk.ticket.created", "ticket.opened"),
        rule("helpdesk.ticket.*", "ticket.{3}"),
    ]);
    assert_eq!(
        r.filter_subjects(&filter(&["*"]), None),
        Some(vec!["helpdesk.ticket.*".to_string()])
    );
    let r = Router::new(vec![rule("a.*.c", "x"), rule("a.b.*", "y")]);
    assert_eq!(r.filter_subjects(&filter(&["*"]), None), None);
    let dup = Router::new(vec![rule("a.b", "x"), rule("a.b", "y")]);
    assert_eq!(
        dup.filter_subjects(&filter(&["*"]), None),
        Some(vec!["a.b".to_string()])
    );
}

#[test]
fn narrowing_respects_literals_and_partial_placeholders() {
    let r = Router::new(vec![
        rule("orders.*.*", "order.{3}"),
        rule("crm.lead.created", "lead.created"),
        rule("x.*", "ev.v{2}"),
    ]);
    // {3} pinned to "shipped"; token 2 stays open.
    assert_eq!(
        r.filter_subjects(&filter(&["order.shipped"]), None),
        Some(vec!["orders.*.shipped".to_string()])
    );
    // A literal subject token that disagrees excludes the rule.
    let lit = Router::new(vec![rule("a.b", "e.{2}")]);
    assert_eq!(lit.filter_subjects(&filter(&["e.c"]), None), Some(vec![]));
    assert_eq!(
        lit.filter_subjects(&filter(&["e.b"]), None),
        Some(vec!["a.b".to_string()])
    );
    // Partial placeholders ("v{2}") cannot pin anything.
    assert_eq!(
        r.filter_subjects(&filter(&["ev.v1"]), None),
        Some(vec!["x.*".to_string()])
    );
}

#[test]
fn subset_and_overlap() {
    let p = |s| Pattern::parse(s).unwrap();
    assert!(p("a.b").is_subset_of(&p("a.*")));
    assert!(p("a.b.c").is_subset_of(&p("a.>")));
    assert!(!p("a.>").is_subset_of(&p("a.*")));
    assert!(!p("a.*").is_subset_of(&p("a.b")));
    assert!(p("a.*.c").overlaps(&p("a.b.*")));
    assert!(!p("a.x").overlaps(&p("a.y")));
    assert!(p("a.>").overlaps(&p("*.b.c")));
    assert!(!p("a").overlaps(&p("a.>")));
}

#[test]
fn tenant_sources_parse_one_placeholder_or_a_literal() {
    let p = Pattern::parse("events.*.ticket.created").unwrap();
    let parse = |t: &str| TenantSource::parse(t, &p);
    assert_eq!(parse("{2}"), Ok(TenantSource::SubjectToken(2)));
    assert_eq!(parse("{4}"), Ok(TenantSource::SubjectToken(4)));
    assert_eq!(parse("org_1"), Ok(TenantSource::Literal("org_1".into())));
    assert_eq!(parse(""), Err(TenantError::Empty));
    assert_eq!(
        parse("{5}"),
        Err(TenantError::Placeholder(
            PatternError::PlaceholderOutOfRange(5, 4)
        ))
    );
    for bad in ["{0}", "{x}", "{-1}", "{}"] {
        assert!(
            matches!(
                parse(bad),
                Err(TenantError::Placeholder(PatternError::BadPlaceholder(_)))
            ),
            "{bad}"
        );
    }
    for mixed in ["org_{2}", "{2}{3}", "{2", "2}", "{{2}}", "{2}.x"] {
        assert_eq!(parse(mixed), Err(TenantError::NotOnePlaceholder), "{mixed}");
    }
    assert_eq!(
        parse("acme corp"),
        Err(TenantError::NotAnId(TenantIdProblem::NotPrintableAscii))
    );
    assert_eq!(
        parse("acme.eu"),
        Err(TenantError::NotAnId(TenantIdProblem::SubjectSyntax))
    );
}

#[test]
fn tenant_ids_are_subject_tokens_of_bounded_length() {
    let longest = "t".repeat(TENANT_ID_MAX);
    for good in ["org_123", "a", "9f1c-4e2b", "A:b/c=d", longest.as_str()] {
        assert_eq!(tenant_id_problem(good), None, "{good}");
    }
    let too_long = "t".repeat(TENANT_ID_MAX + 1);
    for (bad, problem) in [
        ("", TenantIdProblem::Empty),
        (too_long.as_str(), TenantIdProblem::TooLong),
        ("a b", TenantIdProblem::NotPrintableAscii),
        ("a\tb", TenantIdProblem::NotPrintableAscii),
        ("a\nb", TenantIdProblem::NotPrintableAscii),
        ("caf\u{e9}", TenantIdProblem::NotPrintableAscii),
        ("a.b", TenantIdProblem::SubjectSyntax),
        ("*", TenantIdProblem::SubjectSyntax),
        ("a>", TenantIdProblem::SubjectSyntax),
    ] {
        assert_eq!(tenant_id_problem(bad), Some(problem), "{bad:?}");
    }
}

#[test]
fn messages_take_their_tenant_from_the_subject_a_literal_or_a_header() {
    let r = Router::new(vec![
        tenant_rule("events.*.ticket.created", "ticket.created", "{2}"),
        tenant_rule("acme.lead.*", "lead.{3}", "acme"),
        header_rule("orders.*", "order.{2}", "Nats-Tenant"),
        rule("crm.lead.created", "lead.created"),
    ]);
    let tenant = |subject: &str, headers: &[(&str, &str)]| {
        r.route(subject, headers.iter().copied())
            .and_then(|m| m.tenant)
    };
    assert_eq!(
        r.route("events.org_1.ticket.created", []),
        Some(Mapped {
            event: "ticket.created".into(),
            event_from_subject: false,
            tenant: Some("org_1".into())
        })
    );
    assert_eq!(
        r.route("acme.lead.won", [])
            .map(|m| (m.event, m.event_from_subject)),
        Some(("lead.won".into(), true))
    );
    assert_eq!(tenant("acme.lead.won", &[]).as_deref(), Some("acme"));
    assert_eq!(
        tenant("orders.paid", &[("Nats-Tenant", "org_2")]).as_deref(),
        Some("org_2")
    );
    assert_eq!(
        tenant("orders.paid", &[("nats-tenant", "org_3")]).as_deref(),
        Some("org_3"),
        "header names match case-insensitively"
    );
    assert_eq!(
        tenant("orders.paid", &[("Nats-Tenant", "a"), ("Nats-Tenant", "a")]).as_deref(),
        Some("a"),
        "a repeated header whose values agree"
    );
    // Values that disagree, in one spelling or two, in either order: no tenant, so
    // no endpoint can take the message for one tenant and another for the other.
    for headers in [
        [("Nats-Tenant", "a"), ("Nats-Tenant", "b")],
        [("nats-tenant", "org_2"), ("Nats-Tenant", "org_1")],
        [("Nats-Tenant", "org_1"), ("nats-tenant", "org_2")],
    ] {
        assert_eq!(tenant("orders.paid", &headers), None, "{headers:?}");
    }
    assert_eq!(
        tenant(
            "orders.paid",
            &[("nats-tenant", "org_1"), ("NATS-TENANT", "org_1")]
        )
        .as_deref(),
        Some("org_1")
    );
    // Missing, empty or malformed: no tenant.
    assert_eq!(tenant("orders.paid", &[]), None);
    assert_eq!(tenant("orders.paid", &[("Other", "org_2")]), None);
    assert_eq!(tenant("orders.paid", &[("Nats-Tenant", "")]), None);
    assert_eq!(tenant("orders.paid", &[("Nats-Tenant", "org 2")]), None);
    let long = "t".repeat(TENANT_ID_MAX + 1);
    let long_subject = format!("events.{long}.ticket.created");
    assert_eq!(tenant(&long_subject, &[]), None);
    // A rule without a tenant source: no tenant, whatever the headers.
    assert_eq!(
        tenant("crm.lead.created", &[("Nats-Tenant", "org_2")]),
        None
    );
    assert_eq!(r.route("nowhere", []), None);
    assert!(r.maps("orders.paid") && !r.maps("nowhere"));
    assert!(r.has_tenants());
    assert!(!Router::new(vec![rule("a", "a")]).has_tenants());
}

#[test]
fn an_endpoint_takes_its_events_of_its_tenant_only() {
    let r = Router::new(vec![
        tenant_rule("events.*.ticket.*", "ticket.{4}", "{2}"),
        header_rule("orders.*", "order.{2}", "Nats-Tenant"),
        rule("crm.lead.created", "lead.created"),
    ]);
    let all = filter(&["*"]);
    let tickets = filter(&["ticket.created"]);
    let decide = |subject: &str, headers: &[(&str, &str)], f: &EventFilter, t: Option<&str>| match r
        .decide(subject, headers.iter().copied(), f, t)
    {
        Verdict::Deliver(m) => format!("deliver {} {:?}", m.event, m.tenant),
        other => format!("{other:?}"),
    };
    let created = "events.org_1.ticket.created";
    assert_eq!(
        decide(created, &[], &all, None),
        "deliver ticket.created Some(\"org_1\")"
    );
    assert_eq!(
        decide(created, &[], &tickets, Some("org_1")),
        "deliver ticket.created Some(\"org_1\")"
    );
    assert_eq!(decide(created, &[], &tickets, Some("org_2")), "Unwanted");
    assert_eq!(
        decide("events.org_1.ticket.closed", &[], &tickets, Some("org_1")),
        "Unwanted"
    );
    // A message without a tenant never reaches a tenant's endpoint, but reaches one
    // without a tenant.
    assert_eq!(
        decide("crm.lead.created", &[], &all, Some("org_1")),
        "Unwanted"
    );
    assert_eq!(decide("orders.paid", &[], &all, Some("org_1")), "Unwanted");
    assert_eq!(
        decide("orders.paid", &[], &all, None),
        "deliver order.paid None"
    );
    assert_eq!(
        decide(
            "orders.paid",
            &[("Nats-Tenant", "org_1")],
            &all,
            Some("org_1")
        ),
        "deliver order.paid Some(\"org_1\")"
    );
    assert_eq!(
        decide(
            "orders.paid",
            &[("Nats-Tenant", "org_9")],
            &all,
            Some("org_1")
        ),
        "Unwanted"
    );
    assert_eq!(decide("nowhere", &[], &all, None), "Unmapped");
    assert!(tenant_admits(None, None) && tenant_admits(None, Some("a")));
    assert!(tenant_admits(Some("a"), Some("a")));
    assert!(!tenant_admits(Some("a"), Some("b")) && !tenant_admits(Some("a"), None));
}

#[test]
fn a_tenant_from_a_subject_token_pins_the_filter() {
    let r = Router::new(vec![tenant_rule(
        "events.*.ticket.created",
        "ticket.created",
        "{2}",
    )]);
    let subjects =
        |events: &[&str], tenant: Option<&str>| r.filter_subjects(&filter(events), tenant);
    assert_eq!(
        subjects(&["ticket.created"], Some("org_1")),
        Some(vec!["events.org_1.ticket.created".to_string()])
    );
    assert_eq!(
        subjects(&["*"], Some("org_1")),
        Some(vec!["events.org_1.ticket.created".to_string()])
    );
    assert_eq!(
        subjects(&["*"], None),
        Some(vec!["events.*.ticket.created".to_string()])
    );
    // 100 tenants: 100 filters, each its own tenant's subject and no other's.
    let filters: Vec<String> = (0..100)
        .map(|i| {
            let mut s = subjects(&["*"], Some(&format!("t{i}"))).unwrap();
            assert_eq!(s.len(), 1);
            s.remove(0)
        })
        .collect();
    for (i, f) in filters.iter().enumerate() {
        let p = Pattern::parse(f).unwrap();
        assert_eq!(f, &format!("events.t{i}.ticket.created"));
        assert!(filters[i + 1..]
            .iter()
            .all(|g| !p.overlaps(&Pattern::parse(g).unwrap())));
    }
}

#[test]
fn tenant_pins_meet_event_pins_literals_and_other_sources() {
    let r = Router::new(vec![
        tenant_rule("t.*.*", "ev.{3}", "{2}"),
        tenant_rule("same.*", "same.{2}", "{2}"),
        tenant_rule("acme.events", "acme.event", "{1}"),
        tenant_rule("lit.*", "lit.{2}", "acme"),
        header_rule("hdr.*", "hdr.{2}", "Nats-Tenant"),
        tenant_rule("rest.>", "rest.event", "{2}"),
        rule("none.*", "none.{2}"),
    ]);
    let subjects = |events: &[&str], tenant: &str| {
        r.filter_subjects(&filter(events), Some(tenant))
            .expect("no overlap")
    };
    // The event pins token 3, the tenant token 2.
    assert_eq!(subjects(&["ev.a"], "x"), vec!["t.x.a"]);
    // Event and tenant pin the same token: both must agree.
    assert_eq!(subjects(&["same.b"], "b"), vec!["same.b"]);
    assert!(subjects(&["same.b"], "c").is_empty());
    // A literal subject token either is the tenant or excludes the rule.
    assert_eq!(subjects(&["acme.event"], "acme"), vec!["acme.events"]);
    assert!(subjects(&["acme.event"], "other").is_empty());
    // A literal tenant: all or nothing, unpinned.
    assert_eq!(subjects(&["lit.*"], "acme"), vec!["lit.*"]);
    assert!(subjects(&["lit.*"], "other").is_empty());
    // A header cannot narrow the filter.
    assert_eq!(subjects(&["hdr.*"], "acme"), vec!["hdr.*"]);
    // '>' stays whole (conservative: delivery re-checks).
    assert_eq!(subjects(&["rest.event"], "acme"), vec!["rest.>"]);
    // A rule without a tenant gives a tenant's endpoint nothing.
    assert!(subjects(&["none.*"], "acme").is_empty());
    assert_eq!(
        r.filter_subjects(&filter(&["none.*"]), None),
        Some(vec!["none.*".to_string()])
    );
    // Everything a tenant can get.
    assert_eq!(
        subjects(&["*"], "acme"),
        vec![
            "t.acme.*",
            "same.acme",
            "acme.events",
            "lit.*",
            "hdr.*",
            "rest.>"
        ]
    );
}
