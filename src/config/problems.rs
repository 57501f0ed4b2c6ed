//! What validation reports: each [`Problem`] named by its key path, all of them
//! together in one [`ConfigError`], and the [`Problems`] collector the section checks
//! write to, with the checks several sections share (durations, counts, header names,
//! secret lists) so that each is worded the same everywhere.

use std::fmt;
use std::time::Duration;

use http::header::HeaderName;

use crate::secret::{Secret, SecretList};

/// The longest duration any key takes: ten years (`"10y"`, as humantime reads a year,
/// 365.25 days each). Every duration is a timeout, a delay or a retention, for which
/// more is a typo, not a plan (a retention may well be several years); and each ends up in a timer or in JetStream, which counts
/// nanoseconds in an i64 (292 years), or is doubled or added to (a probe interval, an
/// ack wait), so an unbounded one would overflow far from the key that caused it.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 31_557_600);

/// What a duration past [`MAX_DURATION`] is told, in the config and the admin API.
pub fn past_max_duration(text: &str) -> String {
    format!("must be at most 10y (got '{text}')")
}

/// One problem found in the config, named by its key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found; never empty.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid config ({} problem(s)):", self.problems.len())?;
        for p in &self.problems {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    pub(crate) fn single(path: &str, message: impl Into<String>) -> Self {
        Self {
            problems: vec![Problem {
                path: path.to_string(),
                message: message.into(),
            }],
        }
    }
}

/// Collects problems while validating.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// Adds a problem once: a `[defaults]` key is checked for every endpoint that
    /// takes it, but is one problem to fix.
    pub fn add(&mut self, path: impl Into<String>, message: impl fmt::Display) {
        let problem = Problem {
            path: path.into(),
            message: message.to_string(),
        };
        if !self.0.contains(&problem) {
            self.0.push(problem);
        }
    }

    /// How many problems so far: a section compares before and after its checks.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A duration greater than zero (`"500ms"`, `"5s"`, `"2m"`) and at most
    /// [`MAX_DURATION`].
    pub fn duration(&mut self, path: &str, text: &str) -> Option<Duration> {
        match humantime::parse_duration(text.trim()) {
            Ok(d) if d.is_zero() => {
                self.add(path, "must be greater than zero");
                None
            }
            Ok(d) if d > MAX_DURATION => {
                let text = text.trim();
                self.add(path, past_max_duration(text));
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.add(
                    path,
                    format_args!("'{text}' is not a duration ({e}); use e.g. \"500ms\", \"5s\", \"2m\", \"2h\""),
                );
                None
            }
        }
    }

    /// A count of at least `min` that fits a `u32`.
    pub fn positive(&mut self, path: &str, value: i64, min: i64) -> Option<u32> {
        if value < min {
            self.add(path, format_args!("must be at least {min} (got {value})"));
            None
        } else if value > i64::from(u32::MAX) {
            let max = u32::MAX;
            self.add(path, format_args!("must be at most {max} (got {value})"));
            None
        } else {
            Some(value as u32)
        }
    }

    /// An HTTP header name as written in the config.
    pub fn header_name(&mut self, path: impl Into<String>, text: &str) -> Option<HeaderName> {
        match HeaderName::from_bytes(text.as_bytes()) {
            Ok(h) => Some(h),
            Err(_) => {
                self.add(path, format_args!("'{text}' is not a valid header name"));
                None
            }
        }
    }

    /// The secrets of a list (one reference or several, newest first), each with the
    /// key path its problems are named by; an entry that cannot be read is reported and
    /// left out, so a caller compares the count with the list's.
    pub fn secrets(&mut self, list: &SecretList, path: &str) -> Vec<(String, Secret)> {
        let refs = list.refs();
        if refs.is_empty() {
            self.add(path, "must list at least one secret");
        }
        if refs.len() > crate::signing::MAX_SECRETS {
            let max = crate::signing::MAX_SECRETS;
            self.add(
                path,
                format_args!("lists {} secrets; at most {max}", refs.len()),
            );
            return Vec::new();
        }
        let mut out = Vec::new();
        for (j, r) in refs.iter().enumerate() {
            let at = match list {
                SecretList::One(_) => path.to_string(),
                SecretList::Many(_) => format!("{path}[{j}]"),
            };
            match r.resolve() {
                Ok(s) => out.push((at, s)),
                Err(e) => self.add(at, e),
            }
        }
        out
    }
}
