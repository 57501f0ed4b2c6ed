//! A route's URL path (`/in/*/github`): literal segments and `*` for any one segment,
//! matched against request paths and against the other routes' paths.

use std::fmt;

/// Paths natshook's own server answers on the `[http]` listener.
const RESERVED_PATHS: &[&str] = &["/metrics", "/healthz", "/readyz"];
const RESERVED_PREFIX: &str = "/api/";

/// A route's path: literal segments, `*` for any one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePath {
    text: String,
    segments: Vec<Option<String>>,
}

impl RoutePath {
    pub fn parse(text: &str) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err(format!("'{text}' must start with '/'"));
        }
        if text.contains(['?', '#']) || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "'{text}' must be a plain path (no query, fragment or whitespace)"
            ));
        }
        let segments: Vec<Option<String>> = text
            .split('/')
            .skip(1)
            .map(|s| (s != "*").then(|| s.to_string()))
            .collect();
        if segments.iter().any(|s| s.as_deref() == Some("")) {
            return Err(format!(
                "'{text}' has an empty segment ('//' or a trailing '/')"
            ));
        }
        if text.parse::<http::uri::PathAndQuery>().is_err() {
            return Err(format!("'{text}' is not a valid URL path"));
        }
        Ok(Self {
            text: text.to_string(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    pub fn is_exact(&self) -> bool {
        self.segments.iter().all(Option::is_some)
    }

    pub fn matches(&self, path: &str) -> bool {
        let mut parts = path.split('/').skip(1);
        for seg in &self.segments {
            match (parts.next(), seg) {
                (Some(p), Some(lit)) if p == lit => {}
                (Some(p), None) if !p.is_empty() => {}
                _ => return false,
            }
        }
        parts.next().is_none()
    }

    pub fn overlaps(&self, other: &RoutePath) -> bool {
        self.segments.len() == other.segments.len()
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|(a, b)| a.is_none() || b.is_none() || a == b)
    }
}

impl fmt::Display for RoutePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl RoutePath {
    /// Whether the path could take a request meant for natshook's own `/metrics`,
    /// `/healthz`, `/readyz` or `/api/` (a route may share their listener).
    pub fn collides_with_own(&self) -> bool {
        RESERVED_PATHS.iter().any(|r| self.matches(r))
            || self.text.starts_with(RESERVED_PREFIX)
            || self.segments.first() == Some(&Some("api".to_string()))
            || (self.segments.first() == Some(&None) && self.segments.len() > 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_paths_match_whole_segments_and_star_takes_one() {
        let exact = RoutePath::parse("/in/sendgrid").unwrap();
        assert!(exact.matches("/in/sendgrid"));
        assert!(!exact.matches("/in/sendgrid/"));
        assert!(!exact.matches("/in/sendgrid/x"));
        assert!(!exact.matches("/in"));
        let star = RoutePath::parse("/in/*/twilio").unwrap();
        assert!(star.matches("/in/acme/twilio"));
        assert!(!star.matches("/in//twilio"));
        assert!(!star.matches("/in/a/b/twilio"));
        assert!(star.overlaps(&RoutePath::parse("/in/x/twilio").unwrap()));
        assert!(!star.overlaps(&exact));
        for bad in ["in", "/a//b", "/a/", "/a?b=1", "/a b"] {
            assert!(RoutePath::parse(bad).is_err(), "{bad}");
        }
    }
}
