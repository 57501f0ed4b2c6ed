//! One endpoint's series: resolved once, removed with the endpoint, and out of reach
//! of its late work once it is retired; and the bound on the `event` label of
//! `natshook_deliveries_total`.

use super::{AttemptStatus, Families, Metrics, Outcome};
use crate::retirement::Retirement;
use prometheus::{Counter, Histogram, IntCounter, IntGauge};

/// The `event` label of deliveries whose event name, made from subject tokens by a
/// `{n}` template, is past the bound on such names: they are as many as publishers
/// make, and each would be a series of its own for good.
pub const OTHER_EVENT: &str = "(other)";

/// Event names made from subject tokens with a series of their own, per endpoint and
/// over all endpoints.
const SUBJECT_EVENTS_PER_ENDPOINT: usize = 100;
const SUBJECT_EVENTS_TOTAL: usize = 10_000;

/// The `event` labels each endpoint has `natshook_deliveries_total` series under, so
/// that they can be removed by name, and the bound on those made from subject tokens.
#[derive(Default)]
pub(super) struct EventLabels {
    by_endpoint: std::collections::HashMap<String, EndpointEvents>,
    /// Names made from subject tokens with series of their own, over all endpoints.
    from_subject: usize,
}

#[derive(Default)]
struct EndpointEvents {
    labels: std::collections::HashSet<String>,
    /// How many of `labels` are names made from subject tokens.
    from_subject: usize,
    /// The bound was reported for this endpoint.
    warned: bool,
}

impl Families {
    /// The `event` label for `event` of `endpoint`, noted so that the series can be
    /// removed with the endpoint. A name the mapping states outright (not
    /// `from_subject`) is its own label; one made from subject tokens is while the
    /// bounds leave room (a name once admitted stays), otherwise [`OTHER_EVENT`].
    fn event_label<'e>(&self, endpoint: &str, event: &'e str, from_subject: bool) -> &'e str {
        let Ok(mut seen) = self.event_labels.lock() else {
            return OTHER_EVENT;
        };
        let seen = &mut *seen;
        if !seen.by_endpoint.contains_key(endpoint) {
            seen.by_endpoint
                .insert(endpoint.to_string(), EndpointEvents::default());
        }
        let Some(mine) = seen.by_endpoint.get_mut(endpoint) else {
            return OTHER_EVENT;
        };
        if mine.labels.contains(event) {
            return event;
        }
        if !from_subject {
            mine.labels.insert(event.to_string());
            return event;
        }
        if mine.from_subject < SUBJECT_EVENTS_PER_ENDPOINT
            && seen.from_subject < SUBJECT_EVENTS_TOTAL
        {
            mine.labels.insert(event.to_string());
            mine.from_subject += 1;
            seen.from_subject += 1;
            return event;
        }
        if !std::mem::replace(&mut mine.warned, true) {
            mine.labels.insert(OTHER_EVENT.to_string());
            tracing::warn!(
                endpoint,
                per_endpoint = SUBJECT_EVENTS_PER_ENDPOINT,
                total = SUBJECT_EVENTS_TOTAL,
                "too many event names made from subject tokens: further ones are counted \
                 under event=\"{OTHER_EVENT}\" in natshook_deliveries_total"
            );
        }
        OTHER_EVENT
    }

    /// The `event` labels `endpoint` had series under, forgotten with them (and the
    /// room its names made from subject tokens took given back).
    pub(super) fn take_event_labels(&self, endpoint: &str) -> Vec<String> {
        let Ok(mut seen) = self.event_labels.lock() else {
            return Vec::new();
        };
        let Some(mine) = seen.by_endpoint.remove(endpoint) else {
            return Vec::new();
        };
        seen.from_subject -= mine.from_subject;
        mine.labels.into_iter().collect()
    }
}

/// One endpoint's children, resolved at first use: an endpoint that never works (with
/// `fan_out`, thousands may sit idle) adds no series to the registry or the scrape.
/// Fields read through `Deref`, which creates them.
#[derive(Clone)]
pub struct EndpointMetrics {
    name: String,
    families: Metrics,
    children: std::sync::Arc<std::sync::OnceLock<EndpointChildren>>,
    retirement: Retirement,
}

/// The series of one endpoint.
pub struct EndpointChildren {
    /// Indexed by [`AttemptStatus::index`]; created lazily so only seen statuses appear.
    attempt_children: [std::sync::OnceLock<IntCounter>; 6],
    pub duration: Histogram,
    pub end_to_end: Histogram,
    pub paused: IntGauge,
    pub consecutive_failures: IntGauge,
    pub inflight: IntGauge,
    pub pending: IntGauge,
    pub dead_letters: IntCounter,
    /// Seconds messages waited for a `rate_limit` token.
    pub rate_limit_wait: Counter,
    /// Messages the endpoint's payload filter did not let through.
    pub filtered: IntCounter,
    /// The `success` children of `natshook_deliveries_total` by event: a delivery
    /// finds its counter by the event alone instead of by three label values (the
    /// events are the mapping's, a bounded set).
    successes: std::sync::RwLock<std::collections::HashMap<String, IntCounter>>,
}

impl std::ops::Deref for EndpointMetrics {
    type Target = EndpointChildren;

    fn deref(&self) -> &EndpointChildren {
        self.children.get_or_init(|| {
            self.retirement
                .unless_retired(|| children_in(&self.families, &self.name))
                // Retired: counted apart from the registry natshook serves.
                .unwrap_or_else(|| children_in(retired_families(), "retired"))
        })
    }
}

/// Where a retired endpoint's late work counts: a registry nobody scrapes, one set of
/// series for all of them.
fn retired_families() -> &'static Families {
    static RETIRED: std::sync::OnceLock<Metrics> = std::sync::OnceLock::new();
    RETIRED.get_or_init(Metrics::new)
}

fn children_in(m: &Families, name: &str) -> EndpointChildren {
    let e = [name];
    EndpointChildren {
        attempt_children: Default::default(),
        duration: m.duration.with_label_values(&e),
        end_to_end: m.end_to_end.with_label_values(&e),
        paused: m.paused.with_label_values(&e),
        consecutive_failures: m.consecutive_failures.with_label_values(&e),
        inflight: m.inflight.with_label_values(&e),
        pending: m.pending.with_label_values(&e),
        dead_letters: m.dead_letters.with_label_values(&e),
        rate_limit_wait: m.rate_limit_wait.with_label_values(&e),
        filtered: m.filtered.with_label_values(&e),
        successes: Default::default(),
    }
}

impl EndpointMetrics {
    pub(super) fn new(name: &str, families: Metrics) -> Self {
        Self {
            name: name.to_string(),
            families,
            children: Default::default(),
            retirement: Retirement::default(),
        }
    }

    /// Creates the endpoint's series now (at 0), so alerts see them before its first
    /// delivery.
    pub fn create(&self) {
        let _ = &**self;
    }

    /// Whether the series exist (an idle fan-out endpoint's do not).
    pub fn created(&self) -> bool {
        self.children.get().is_some()
    }

    /// Counts a delivery of `event`; `from_subject`: the name holds subject tokens
    /// (see [`Families::event_label`]).
    pub fn delivery(&self, event: &str, from_subject: bool, outcome: Outcome) {
        let success = outcome == Outcome::Success;
        if success {
            if let Ok(successes) = self.successes.read() {
                if let Some(counter) = successes.get(event) {
                    counter.inc();
                    return;
                }
            }
        }
        self.retirement.unless_retired(|| {
            let label = self.families.event_label(&self.name, event, from_subject);
            let counter = self.families.deliveries.with_label_values(&[
                self.name.as_str(),
                label,
                outcome.as_str(),
            ]);
            counter.inc();
            // Only names with a series of their own: the cache stays as bounded as they.
            if success && label == event {
                if let Ok(mut successes) = self.successes.write() {
                    successes.insert(event.to_string(), counter);
                }
            }
        });
    }

    /// Removes the endpoint's series (it is gone and drained); what this handle would
    /// count from now on counts nowhere, so nothing brings them back. An endpoint
    /// created again under the name has handles of its own.
    pub fn retire(&self) {
        self.retirement
            .retire(|| self.families.forget_endpoint(&self.name));
    }

    /// Shared with the other parts of the endpoint's worker.
    pub fn retirement(&self) -> &Retirement {
        &self.retirement
    }

    pub fn attempt(&self, status: AttemptStatus) {
        let child = &self.attempt_children[status.index()];
        if let Some(counter) = child.get() {
            counter.inc();
            return;
        }
        self.retirement.unless_retired(|| {
            child
                .get_or_init(|| {
                    self.families
                        .attempts
                        .with_label_values(&[self.name.as_str(), status.label()])
                })
                .inc()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_count_per_event_when_events_alternate() {
        let m = Metrics::new();
        let e = m.endpoint("crm");
        for event in ["a", "a", "b", "a", "b", "b", "b"] {
            e.delivery(event, false, Outcome::Success);
        }
        e.delivery("a", false, Outcome::Retry);
        let text = String::from_utf8(m.render()).unwrap();
        for needle in [
            "natshook_deliveries_total{endpoint=\"crm\",event=\"a\",outcome=\"success\"} 3",
            "natshook_deliveries_total{endpoint=\"crm\",event=\"b\",outcome=\"success\"} 4",
            "natshook_deliveries_total{endpoint=\"crm\",event=\"a\",outcome=\"retry\"} 1",
        ] {
            assert!(text.contains(needle), "{needle} missing in:\n{text}");
        }
    }

    #[test]
    fn a_forgotten_endpoint_leaves_no_series_and_the_others_keep_theirs() {
        let m = Metrics::new();
        for name in ["gone", "kept"] {
            let e = m.endpoint(name);
            e.create();
            e.delivery("a", false, Outcome::Success);
            e.delivery("b", true, Outcome::DeadLetter);
            e.attempt(AttemptStatus::Class(500));
            e.paused.set(1);
        }
        let kept = |text: &str| text.matches("endpoint=\"kept\"").count();
        let before = String::from_utf8(m.render()).unwrap();
        m.forget_endpoint("gone");
        let text = String::from_utf8(m.render()).unwrap();
        assert!(!text.contains("endpoint=\"gone\""), "{text}");
        assert_eq!(kept(&text), kept(&before), "{text}");
        // Created again, it starts from nothing.
        let again = m.endpoint("gone");
        again.create();
        let text = String::from_utf8(m.render()).unwrap();
        assert!(
            text.contains("natshook_endpoint_paused{endpoint=\"gone\"} 0"),
            "{text}"
        );
        assert!(
            !text.contains("natshook_deliveries_total{endpoint=\"gone\""),
            "{text}"
        );
    }

    #[test]
    fn a_retired_endpoint_s_late_work_brings_no_series_back() {
        let m = Metrics::new();
        let old = m.endpoint("x");
        old.delivery("a", false, Outcome::Success);
        old.retire();
        let late = m.endpoint("x");
        let late_in_old = old.clone();
        late_in_old.delivery("b", true, Outcome::Retry);
        late_in_old.attempt(AttemptStatus::Timeout);
        late_in_old.paused.set(1);
        // Retired before its series were made (an idle fan-out endpoint).
        let idle = m.endpoint("y");
        idle.retire();
        idle.paused.set(1);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(!text.contains("endpoint=\"x\""), "{text}");
        assert!(!text.contains("endpoint=\"y\""), "{text}");
        // A handle made after the retirement (a worker created again) is not retired.
        late.delivery("a", false, Outcome::Success);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(
            text.contains(
                "natshook_deliveries_total{endpoint=\"x\",event=\"a\",outcome=\"success\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("natshook_endpoint_paused{endpoint=\"x\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn event_names_made_from_subjects_are_bounded_and_the_mapping_s_own_are_not() {
        let m = Metrics::new();
        let e = m.endpoint("crm");
        for i in 0..SUBJECT_EVENTS_PER_ENDPOINT + 50 {
            e.delivery(&format!("ticket.t{i}"), true, Outcome::Success);
        }
        // Admitted before the bound was reached, a name keeps its series.
        e.delivery("ticket.t0", true, Outcome::Retry);
        e.delivery("lead.created", false, Outcome::Success);
        let text = String::from_utf8(m.render()).unwrap();
        let series = text
            .lines()
            .filter(|l| l.starts_with("natshook_deliveries_total{"))
            .count();
        assert_eq!(series, SUBJECT_EVENTS_PER_ENDPOINT + 3, "{text}");
        for needle in [
            "natshook_deliveries_total{endpoint=\"crm\",event=\"(other)\",outcome=\"success\"} 50",
            "natshook_deliveries_total{endpoint=\"crm\",event=\"ticket.t0\",outcome=\"retry\"} 1",
            "natshook_deliveries_total{endpoint=\"crm\",event=\"lead.created\",outcome=\"success\"} 1",
        ] {
            assert!(text.contains(needle), "missing {needle}\n{text}");
        }
        // Another endpoint has room of its own; a forgotten one gives its room back.
        m.endpoint("other")
            .delivery("ticket.x", true, Outcome::Success);
        assert!(String::from_utf8(m.render())
            .unwrap()
            .contains("endpoint=\"other\",event=\"ticket.x\""));
        m.forget_endpoint("crm");
        let again = m.endpoint("crm");
        again.delivery("ticket.new", true, Outcome::Success);
        assert!(String::from_utf8(m.render())
            .unwrap()
            .contains("endpoint=\"crm\",event=\"ticket.new\""));
    }
}
