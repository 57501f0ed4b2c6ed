use super::*;

fn rule(subject: &str, event: &str) -> EventRule {
    let subject = Pattern::parse(subject).unwrap();
    let event = EventTemplate::parse(event, &subject).unwrap();
    EventRule { subject, event }
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
    assert_eq!(r.route("crm.lead.created").as_deref(), Some("lead.created"));
    assert_eq!(
        r.route("helpdesk.ticket.status_changed").as_deref(),
        Some("ticket.status_changed")
    );
    assert_eq!(
        r.route("billing.invoice.paid").as_deref(),
        Some("billing.invoice.xbilling")
    );
    assert_eq!(r.route("crm.lead.deleted"), None);
}

#[test]
fn first_matching_rule_wins() {
    let r = Router::new(vec![
        rule("helpdesk.ticket.created", "ticket.opened"),
        rule("helpdesk.ticket.*", "ticket.{3}"),
    ]);
    assert_eq!(
        r.route("helpdesk.ticket.created").as_deref(),
        Some("ticket.opened")
    );
    assert_eq!(
        r.route("helpdesk.ticket.closed").as_deref(),
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
        r.filter_subjects(&filter(&["lead.created"])),
        Some(vec!["crm.lead.created".to_string()])
    );
    assert_eq!(
        r.filter_subjects(&filter(&["ticket.status_changed"])),
        Some(vec!["helpdesk.ticket.status_changed".to_string()]),
        "a placeholder facing a literal pins the subject token"
    );
    assert_eq!(
        r.filter_subjects(&filter(&["ticket.*"])),
        Some(vec!["helpdesk.ticket.*".to_string()])
    );
    assert_eq!(
        r.filter_subjects(&filter(&["ticket.created", "invoice.paid", "lead.created"])),
        Some(vec![
            "crm.lead.created".to_string(),
            "helpdesk.ticket.created".to_string(),
            "billing.invoice.paid".to_string()
        ])
    );
    assert_eq!(
        r.filter_subjects(&filter(&["*"])),
        Some(vec![
            "crm.lead.created".to_string(),
            "helpdesk.ticket.*".to_string(),
            "billing.invoice.*".to_string()
        ])
    );
    assert_eq!(r.filter_subjects(&filter(&["nothing.here"])), Some(vec![]));
}

#[test]
fn filter_subjects_drop_covered_patterns_and_give_up_on_partial_overlap() {
    let r = Router::new(vec![
        rule("helpdesk.ticket.created", "ticket.opened"),
        rule("helpdesk.ticket.*", "ticket.{3}"),
    ]);
    assert_eq!(
        r.filter_subjects(&filter(&["*"])),
        Some(vec!["helpdesk.ticket.*".to_string()])
    );
    let r = Router::new(vec![rule("a.*.c", "x"), rule("a.b.*", "y")]);
    assert_eq!(r.filter_subjects(&filter(&["*"])), None);
    let dup = Router::new(vec![rule("a.b", "x"), rule("a.b", "y")]);
    assert_eq!(
        dup.filter_subjects(&filter(&["*"])),
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
        r.filter_subjects(&filter(&["order.shipped"])),
        Some(vec!["orders.*.shipped".to_string()])
    );
    // A literal subject token that disagrees excludes the rule.
    let lit = Router::new(vec![rule("a.b", "e.{2}")]);
    assert_eq!(lit.filter_subjects(&filter(&["e.c"])), Some(vec![]));
    assert_eq!(
        lit.filter_subjects(&filter(&["e.b"])),
        Some(vec!["a.b".to_string()])
    );
    // Partial placeholders ("v{2}") cannot pin anything.
    assert_eq!(
        r.filter_subjects(&filter(&["ev.v1"])),
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
