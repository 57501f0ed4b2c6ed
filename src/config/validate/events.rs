//! `[[events]]`: subject patterns mapped to event names (and to tenants), the
//! router's rules.

use super::super::raw::RawEvent;
use super::super::Problems;
use crate::routing::{EventRule, EventTemplate, Pattern, Router, TenantSource};

pub(super) fn router(events: &[RawEvent], p: &mut Problems) -> Router {
    let mut rules = Vec::new();
    // Every subject pattern that parsed, by its entry's index.
    let mut earlier: Vec<(usize, Pattern)> = Vec::new();
    if events.is_empty() {
        p.add(
            "events",
            "at least one [[events]] mapping (subject → event) is required",
        );
    }
    for (i, ev) in events.iter().enumerate() {
        let path = format!("events[{i}]");
        let subject = match ev.subject.as_deref() {
            None => {
                p.add(format!("{path}.subject"), "required");
                None
            }
            Some(s) => Pattern::parse(s)
                .map_err(|e| p.add(format!("{path}.subject"), format_args!("'{s}' {e}")))
                .ok(),
        };
        let Some(subject) = subject else { continue };
        shadowed(&subject, &earlier, &path, p);
        earlier.push((i, subject.clone()));
        let event = match ev.event.as_deref() {
            None => {
                p.add(format!("{path}.event"), "required");
                None
            }
            Some(t) => EventTemplate::parse(t, &subject)
                .map_err(|e| p.add(format!("{path}.event"), format_args!("'{t}' {e}")))
                .ok(),
        };
        let tenant = tenant(ev, &subject, &path, p);
        if let (Some(event), Some(tenant)) = (event, tenant) {
            rules.push(EventRule {
                subject,
                event,
                tenant,
            });
        }
    }
    Router::new(rules)
}

/// A mapping whose every subject an earlier mapping matches too never maps a message
/// (the first match wins), so the endpoints that want its events would silently get
/// none. Only one earlier pattern covering it is found: `a.b.c` after `a.*.c` and
/// `a.b.*`, never matched either, is not.
fn shadowed(subject: &Pattern, earlier: &[(usize, Pattern)], path: &str, p: &mut Problems) {
    if let Some((j, wider)) = earlier.iter().find(|(_, e)| subject.is_subset_of(e)) {
        p.add(
            format!("{path}.subject"),
            format_args!(
                "'{subject}' is never matched: events[{j}] ('{wider}') comes first and \
                 matches every subject it does (the first match wins; put the narrower \
                 mapping first)"
            ),
        );
    }
}

/// Where the rule's messages get their tenant: `tenant` (a subject token or a
/// literal) or `tenant_header`, at most one. `None` when it is invalid; `Some(None)`
/// when the rule has no tenant.
fn tenant(
    ev: &RawEvent,
    subject: &Pattern,
    path: &str,
    p: &mut Problems,
) -> Option<Option<TenantSource>> {
    match (ev.tenant.as_deref(), ev.tenant_header.as_deref()) {
        (None, None) => Some(None),
        (Some(_), Some(_)) => {
            p.add(
                format!("{path}.tenant_header"),
                "set either tenant (a subject token or a literal) or tenant_header, not both",
            );
            None
        }
        (Some(t), None) => match TenantSource::parse(t, subject) {
            Ok(source) => Some(Some(source)),
            Err(e) => {
                p.add(format!("{path}.tenant"), format_args!("'{t}' {e}"));
                None
            }
        },
        (None, Some(h)) => {
            let _ = p.header_name(format!("{path}.tenant_header"), h)?;
            Some(Some(TenantSource::Header(h.to_string())))
        }
    }
}
