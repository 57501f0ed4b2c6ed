//! Tenant mappings: their defaults, every problem named by its key, and what a
//! change of them restarts.

use super::*;

/// A tenant mapping and one endpoint; `mapping` and `endpoint` are added to the
/// mapping's and the endpoint's tables.
fn tenant_config(mapping: &str, endpoint: &str) -> String {
    format!(
        r#"
        [nats]
        stream = "EVENTS"
        [[events]]
        subject = "events.*.ticket.created"
        event = "ticket.created"
        {mapping}
        [[events]]
        subject = "crm.lead.created"
        event = "lead.created"
        [[endpoints]]
        name = "acme"
        url = "https://acme.example.com/hooks"
        events = ["ticket.created"]
        secret = {{ value = "s3cret" }}
        {endpoint}
    "#
    )
}

#[test]
fn tenants_parse_with_their_defaults() {
    let c = Config::from_str(&tenant_config("tenant = \"{2}\"", ""), "toml").unwrap();
    let e = &c.endpoints[0];
    assert_eq!(e.tenant, None, "no tenant: every message");
    assert_eq!(e.tenant_field.as_deref(), Some("organization_id"));
    assert_eq!(
        c.router.rules()[0].tenant,
        Some(crate::routing::TenantSource::SubjectToken(2))
    );
    assert_eq!(c.router.rules()[1].tenant, None);

    let text = tenant_config(
        "tenant_header = \"Nats-Tenant\"",
        "tenant = \"org_123\"\ntenant_field = \"tenant\"",
    );
    let c = Config::from_str(&text, "toml").unwrap();
    let e = &c.endpoints[0];
    assert_eq!(e.tenant.as_deref(), Some("org_123"));
    assert_eq!(e.tenant_field.as_deref(), Some("tenant"));
    assert_eq!(
        c.router.rules()[0].tenant,
        Some(crate::routing::TenantSource::Header("Nats-Tenant".into()))
    );

    // [defaults] tenant_field, and "" for no field at all.
    let text = tenant_config("tenant = \"acme\"", "tenant = \"acme\"").replacen(
        "[[events]]",
        "[defaults]\ntenant_field = \"\"\n[[events]]",
        1,
    );
    let c = Config::from_str(&text, "toml").unwrap();
    assert_eq!(c.endpoints[0].tenant_field, None);
    assert_eq!(
        c.router.rules()[0].tenant,
        Some(crate::routing::TenantSource::Literal("acme".into()))
    );
}

#[test]
fn every_tenant_problem_is_named_by_its_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "tenant = \"{2}\"\ntenant_header = \"Nats-Tenant\"",
            "",
            "events[0].tenant_header: set either tenant (a subject token or a literal) or tenant_header, not both",
        ),
        (
            "tenant = \"{5}\"",
            "",
            "events[0].tenant: '{5}' placeholder {5} is out of range: the subject pattern has 4 token(s)",
        ),
        (
            "tenant = \"{0}\"",
            "",
            "events[0].tenant: '{0}' bad placeholder '{0}': use {1}..{n}",
        ),
        (
            "tenant = \"org_{2}\"",
            "",
            "events[0].tenant: 'org_{2}' must be one whole placeholder such as {2} (a subject token) or a literal tenant id",
        ),
        (
            "tenant = \"\"",
            "",
            "events[0].tenant: '' must not be empty",
        ),
        (
            "tenant = \"acme corp\"",
            "",
            "events[0].tenant: 'acme corp' is not a tenant id: it has a space, a control character or a non-ASCII character (1 to 128 printable ASCII characters, none of them '.', '*' or '>')",
        ),
        (
            "tenant_header = \"Nats Tenant\"",
            "",
            "events[0].tenant_header: 'Nats Tenant' is not a valid header name",
        ),
        (
            "tenant = \"{2}\"",
            "tenant = \"org 1\"",
            "endpoints[0].tenant: 'org 1' is not a tenant id: it has a space",
        ),
        (
            "tenant = \"{2}\"",
            "tenant = \"org.1\"",
            "endpoints[0].tenant: 'org.1' is not a tenant id: it has '.', '*' or '>'",
        ),
        (
            "tenant = \"{2}\"",
            "tenant = \"\"",
            "endpoints[0].tenant: '' is not a tenant id: it is empty",
        ),
        (
            "tenant = \"{2}\"",
            "tenant = 7",
            "endpoints[0].tenant: invalid type",
        ),
        (
            "",
            "tenant = \"org_1\"",
            "endpoints[0].tenant: no [[events]] mapping that produces these events gives a message the tenant 'org_1' (set tenant or tenant_header on the mapping)",
        ),
        (
            "tenant = \"acme\"",
            "tenant = \"other\"",
            "endpoints[0].tenant: no [[events]] mapping that produces these events gives a message the tenant 'other'",
        ),
        (
            "tenant = \"{2}\"",
            "tenant_field = \"data\"",
            "endpoints[0].tenant_field: 'data' is a field natshook writes itself",
        ),
        (
            "tenant = \"{2}\"",
            "envelope_fields = { organization_id = \"org_1\", region = \"eu\" }",
            "endpoints[0].envelope_fields.organization_id: is also tenant_field, the field that carries the message's tenant; remove it, or set tenant_field to another name (\"\" for none)",
        ),
    ];
    for (mapping, endpoint, want) in cases {
        let p = problems(&tenant_config(mapping, endpoint));
        assert!(
            p.iter().any(|x| x.starts_with(want)),
            "{mapping} / {endpoint}: {want} in {p:?}"
        );
    }
    // tenant is the endpoint's own key, not a setting [defaults] can hold.
    let text = tenant_config("tenant = \"{2}\"", "").replacen(
        "[[events]]",
        "[defaults]\ntenant = \"org_1\"\n[[events]]",
        1,
    );
    let p = problems(&text);
    assert!(p.iter().any(|x| x.starts_with("defaults.tenant:")), "{p:?}");
    let text = tenant_config("tenant = \"{2}\"", "").replacen(
        "[[events]]",
        "[defaults]\ntenant_field = \"id\"\n[[events]]",
        1,
    );
    assert!(
        problems(&text)
            .iter()
            .any(|x| x == "defaults.tenant_field: 'id' is a field natshook writes itself"),
        "{:?}",
        problems(&text)
    );
}

#[test]
fn tenant_settings_that_cannot_conflict_are_fine() {
    // No mapping gives a tenant: a static organization_id stays valid (the contract's
    // own envelope_fields example).
    let text = tenant_config("", "envelope_fields = { organization_id = \"org_1\" }");
    assert_eq!(problems(&text), Vec::<String>::new());
    // Another tenant_field, or none, or the raw envelope: no clash either.
    for endpoint in [
        "envelope_fields = { organization_id = \"org_1\" }\ntenant_field = \"tenant\"",
        "envelope_fields = { organization_id = \"org_1\" }\ntenant_field = \"\"",
        "envelope_fields = { organization_id = \"org_1\" }\nenvelope = \"raw\"",
    ] {
        let text = tenant_config("tenant = \"{2}\"", endpoint);
        assert_eq!(problems(&text), Vec::<String>::new(), "{endpoint}");
    }
    // A tenant endpoint next to a header mapping: the filter cannot tell, so any
    // tenant id is accepted.
    let text = tenant_config("tenant_header = \"Nats-Tenant\"", "tenant = \"anyone\"");
    assert_eq!(problems(&text), Vec::<String>::new());
}

#[test]
fn a_changed_tenant_restarts_the_endpoint() {
    let a = Config::from_str(&tenant_config("tenant = \"{2}\"", "tenant = \"a\""), "toml").unwrap();
    let b = Config::from_str(&tenant_config("tenant = \"{2}\"", "tenant = \"b\""), "toml").unwrap();
    let c = Config::from_str(
        &tenant_config("tenant = \"{2}\"", "tenant = \"a\"\ntenant_field = \"t\""),
        "toml",
    )
    .unwrap();
    assert_ne!(a.endpoints[0], b.endpoints[0]);
    assert_ne!(a.endpoints[0], c.endpoints[0]);
    assert_eq!(a.endpoints[0], a.endpoints[0].clone());
}
