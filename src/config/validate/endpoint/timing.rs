//! When an endpoint's requests are made and given up on: `timeout`, `retry_schedule`,
//! `max_attempts`, `disable_after_failures`, the probes of a paused endpoint and
//! `rate_limit`.

use std::time::Duration;

use super::super::super::defaults;
use super::super::super::model::Rate;
use super::super::super::Problems;
use super::super::rate::parse_rate;
use super::Settings;

/// `rate_limit`: `"N/s"`, `"N/m"` or `"N/h"`, or `"none"` (so an endpoint can lift a
/// `[defaults]` limit). `Some(None)` is no limit.
pub(super) fn rate_limit(s: &Settings, p: &mut Problems) -> Option<Option<Rate>> {
    let (text, path) = pick!(s, rate_limit);
    let Some(text) = text else {
        return Some(defaults::RATE_LIMIT);
    };
    match parse_rate(&text) {
        Ok(rate) => Some(rate),
        Err(e) => {
            p.add(path, e);
            None
        }
    }
}

/// `probe_interval` and `probe_max_interval`: a paused endpoint's probes start at the
/// one and double up to the other. A first interval longer than the maximum is taken
/// (the first probe waits it, the later ones the maximum) rather than refused: a
/// runtime endpoint is checked against the file's `[defaults]`, and a change there
/// must not make a customer's endpoint invalid.
pub(super) fn probe_intervals(
    s: &Settings,
    p: &mut Problems,
) -> (Option<Duration>, Option<Duration>) {
    let (start_text, start_path) = pick!(s, probe_interval);
    let (max_text, max_path) = pick!(s, probe_max_interval);
    let start = match &start_text {
        Some(t) => p.duration(&start_path, t),
        None => Some(defaults::PROBE_INTERVAL),
    };
    let max = match &max_text {
        Some(t) => p.duration(&max_path, t),
        None => Some(defaults::PROBE_MAX_INTERVAL),
    };
    (start, max)
}

/// When attempts are made and given up on.
pub(super) struct Attempts {
    pub timeout: Duration,
    pub retry_schedule: Vec<Duration>,
    pub max_attempts: u32,
    pub disable_after_failures: u32,
}

pub(super) fn attempts(s: &Settings, p: &mut Problems) -> Option<Attempts> {
    let (timeout, tpath) = pick!(s, timeout);
    let timeout = match timeout {
        Some(t) => p.duration(&tpath, &t),
        None => Some(defaults::TIMEOUT),
    };
    let (schedule, spath) = pick!(s, retry_schedule);
    let schedule_text = schedule.unwrap_or_else(|| {
        defaults::RETRY_SCHEDULE
            .iter()
            .map(|t| t.to_string())
            .collect()
    });
    let mut retry_schedule = Vec::new();
    for (j, t) in schedule_text.iter().enumerate() {
        if let Some(d) = p.duration(&format!("{spath}[{j}]"), t) {
            retry_schedule.push(d);
        }
    }
    let (max_attempts, mpath) = pick!(s, max_attempts);
    let max_attempts = match max_attempts {
        Some(n) => p.positive(&mpath, n, 1),
        None => Some(schedule_text.len() as u32 + 1),
    };
    if max_attempts.is_some_and(|n| n > 1) && schedule_text.is_empty() {
        p.add(&spath, "must not be empty when max_attempts > 1");
    }
    let (daf, dpath) = pick!(s, disable_after_failures);
    let disable_after_failures = match daf {
        Some(n) => p.positive(&dpath, n, 0),
        None => Some(defaults::DISABLE_AFTER_FAILURES),
    };
    Some(Attempts {
        timeout: timeout?,
        retry_schedule,
        max_attempts: max_attempts?,
        disable_after_failures: disable_after_failures?,
    })
}
