//! `[[events]]`: subject patterns mapped to event names, the router's rules.

use super::super::raw::RawEvent;
use super::super::Problems;
use crate::routing::{EventRule, EventTemplate, Pattern, Router};

pub(super) fn router(events: &[RawEvent], p: &mut Problems) -> Router {
    let mut rules = Vec::new();
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
        match ev.event.as_deref() {
            None => p.add(format!("{path}.event"), "required"),
            Some(t) => match EventTemplate::parse(t, &subject) {
                Ok(event) => rules.push(EventRule { subject, event }),
                Err(e) => p.add(format!("{path}.event"), format_args!("'{t}' {e}")),
            },
        }
    }
    Router::new(rules)
}
