//! Ingress subject templates: `inbound.sendgrid.{header:X-Event-Type}`, with
//! `{header:Name}`, `{path:N}` (1-based segment of the request path) and `{json:field}`
//! (a top-level field of a JSON body).
//!
//! The values come from the sender, so every rendered value must be a valid NATS
//! subject token by itself: a value with a `.` would add tokens (and so reach subjects
//! the template never allowed), `*` or `>` would be a wildcard, whitespace would end
//! the subject. Such a request is refused (`400`) rather than rewritten, because a
//! rewritten value could collide with another sender's subject.

use std::fmt;

use http::header::{HeaderMap, HeaderName};

use crate::routing::{split_template, Pattern};

/// Longest value one placeholder may render to: subjects stay short enough to index
/// and to read in `nats stream view`.
const MAX_VALUE_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Header(HeaderName),
    /// 1-based segment of the request path.
    Path(usize),
    Json(String),
}

/// A parsed `subject` of an ingress route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectTemplate {
    text: String,
    pieces: Vec<Piece>,
    /// The template with each token that holds a placeholder as `*`: every subject it
    /// can render to matches this pattern, so a stream capturing it stores them all.
    pattern: Pattern,
}

/// Why a request's values cannot make a subject (answered `400`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("header {0} is missing")]
    MissingHeader(String),
    #[error("the body is not a JSON object, so {{json:{0}}} cannot be read")]
    NotJson(String),
    #[error("JSON field {0} is missing")]
    MissingField(String),
    #[error("JSON field {0} is not a string, number or boolean")]
    FieldType(String),
    #[error("the request path has no segment {0}")]
    MissingSegment(usize),
    #[error("{0} is not usable in a NATS subject (empty, over {MAX_VALUE_LEN} bytes, or has '.', '*', '>', whitespace or control characters)")]
    BadToken(String),
}

/// What a request offers to a template.
pub struct Values<'a> {
    pub headers: &'a HeaderMap,
    pub path: &'a str,
    pub body: &'a [u8],
}

fn valid_token(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= MAX_VALUE_LEN
        && !v
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>'))
}

impl Piece {
    /// The placeholder between `{` and `}`; `path_segments` bounds `{path:N}`.
    fn placeholder(inner: &str, path_segments: usize) -> Result<Self, String> {
        let not_one = || {
            format!("'{{{inner}}}' is not a placeholder: use {{header:Name}}, {{path:N}} or {{json:field}}")
        };
        let (kind, arg) = inner.split_once(':').ok_or_else(not_one)?;
        match kind {
            "header" => HeaderName::from_bytes(arg.as_bytes())
                .map(Piece::Header)
                .map_err(|_| format!("'{arg}' in {{header:{arg}}} is not a header name")),
            "path" => match arg.parse::<usize>() {
                Ok(n) if n >= 1 && n <= path_segments => Ok(Piece::Path(n)),
                _ => Err(format!(
                    "{{path:{arg}}} is out of range: the route's path has {path_segments} segment(s), counted from 1"
                )),
            },
            "json" if !arg.is_empty() => Ok(Piece::Json(arg.to_string())),
            _ => Err(not_one()),
        }
    }
}

impl SubjectTemplate {
    /// Parses `text`; `path_segments` is the number of segments of the route's path,
    /// the upper bound of `{path:N}`.
    pub fn parse(text: &str, path_segments: usize) -> Result<Self, String> {
        let pieces = split_template(
            text,
            |t| Piece::Text(t.to_string()),
            |inner| Piece::placeholder(inner, path_segments),
            |_| format!("'{text}' has a '{{' without '}}'"),
            |_| format!("'{text}' has a '}}' without '{{'"),
        )?;
        // The subject with placeholders as `*` tokens must be a plain subject pattern:
        // no wildcards of its own, no empty tokens.
        let mut shape = String::new();
        for p in &pieces {
            match p {
                Piece::Text(t) => shape.push_str(t),
                _ => shape.push('\u{0}'),
            }
        }
        let tokens: Vec<String> = shape
            .split('.')
            .map(|t| {
                if t.contains('\u{0}') {
                    "*".to_string()
                } else {
                    t.to_string()
                }
            })
            .collect();
        for p in &pieces {
            if matches!(p, Piece::Text(t) if t.contains(['*', '>'])) {
                return Err(format!(
                    "'{text}' has a wildcard; an ingress subject is a concrete subject (placeholders vary it)"
                ));
            }
        }
        let pattern = Pattern::parse(&tokens.join(".")).map_err(|e| format!("'{text}' {e}"))?;
        let first = tokens.first().map(String::as_str).unwrap_or("");
        if first.starts_with('$') || first == "_INBOX" || first == "natshook" {
            return Err(format!(
                "'{text}' is in a reserved subject space ($…, _INBOX, natshook.…): senders could forge JetStream API calls or natshook's own records"
            ));
        }
        Ok(Self {
            text: text.to_string(),
            pieces,
            pattern,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Every subject this template can render to matches this pattern.
    pub fn pattern(&self) -> &Pattern {
        &self.pattern
    }

    pub fn needs_json(&self) -> bool {
        self.pieces.iter().any(|p| matches!(p, Piece::Json(_)))
    }

    /// The subject for one request. The body is parsed (once) only when the template
    /// reads a JSON field.
    pub fn render(&self, v: &Values<'_>) -> Result<String, RenderError> {
        let json = if self.needs_json() {
            serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(v.body).ok()
        } else {
            None
        };
        let mut out = String::with_capacity(self.text.len() + 32);
        for piece in &self.pieces {
            let value: std::borrow::Cow<'_, str> = match piece {
                Piece::Text(t) => {
                    out.push_str(t);
                    continue;
                }
                Piece::Header(name) => v
                    .headers
                    .get(name)
                    .and_then(|h| h.to_str().ok())
                    .map(|s| s.trim().into())
                    .ok_or_else(|| RenderError::MissingHeader(name.to_string()))?,
                Piece::Path(n) => v
                    .path
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .nth(n - 1)
                    .map(Into::into)
                    .ok_or(RenderError::MissingSegment(*n))?,
                Piece::Json(field) => {
                    let map = json
                        .as_ref()
                        .ok_or_else(|| RenderError::NotJson(field.clone()))?;
                    match map.get(field) {
                        None | Some(serde_json::Value::Null) => {
                            return Err(RenderError::MissingField(field.clone()))
                        }
                        Some(serde_json::Value::String(s)) => s.as_str().into(),
                        Some(serde_json::Value::Bool(b)) => b.to_string().into(),
                        Some(serde_json::Value::Number(n)) => n.to_string().into(),
                        Some(_) => return Err(RenderError::FieldType(field.clone())),
                    }
                }
            };
            if !valid_token(&value) {
                return Err(RenderError::BadToken(describe(piece)));
            }
            out.push_str(&value);
        }
        Ok(out)
    }
}

/// Names a placeholder in an error, without echoing the sender's value.
fn describe(piece: &Piece) -> String {
    match piece {
        Piece::Header(h) => format!("header {h}"),
        Piece::Path(n) => format!("path segment {n}"),
        Piece::Json(f) => format!("JSON field {f}"),
        Piece::Text(_) => "text".into(),
    }
}

impl fmt::Display for SubjectTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn values<'a>(headers: &'a HeaderMap, path: &'a str, body: &'a [u8]) -> Values<'a> {
        Values {
            headers,
            path,
            body,
        }
    }

    #[test]
    fn renders_header_path_and_json_values() {
        let t = SubjectTemplate::parse(
            "inbound.{path:2}.{header:X-Event-Type}.{json:kind}_v{json:version}",
            3,
        )
        .unwrap();
        assert_eq!(t.pattern().as_str(), "inbound.*.*.*");
        let mut h = HeaderMap::new();
        h.insert("x-event-type", HeaderValue::from_static("delivered"));
        let body = br#"{"kind":"email","version":2,"other":[1,2]}"#;
        assert_eq!(
            t.render(&values(&h, "/in/acme/sendgrid", body)).unwrap(),
            "inbound.acme.delivered.email_v2"
        );
    }

    #[test]
    fn values_that_would_change_the_subject_shape_are_refused() {
        let t = SubjectTemplate::parse("in.{header:X-T}", 1).unwrap();
        for bad in ["a.b", "*", ">", "a b", ""] {
            let mut h = HeaderMap::new();
            h.insert("x-t", HeaderValue::from_str(bad).unwrap());
            assert!(
                matches!(
                    t.render(&values(&h, "/x", b"")),
                    Err(RenderError::BadToken(_))
                ),
                "{bad:?}"
            );
        }
        let long = "a".repeat(MAX_VALUE_LEN + 1);
        let mut h = HeaderMap::new();
        h.insert("x-t", HeaderValue::from_str(&long).unwrap());
        assert!(t.render(&values(&h, "/x", b"")).is_err());
        assert_eq!(
            t.render(&values(&HeaderMap::new(), "/x", b"")),
            Err(RenderError::MissingHeader("x-t".into()))
        );
        let j = SubjectTemplate::parse("in.{json:e}", 1).unwrap();
        let h = HeaderMap::new();
        assert!(matches!(
            j.render(&values(&h, "/x", b"not json")),
            Err(RenderError::NotJson(_))
        ));
        assert!(matches!(
            j.render(&values(&h, "/x", br#"{"e":{"a":1}}"#)),
            Err(RenderError::FieldType(_))
        ));
        assert!(matches!(
            j.render(&values(&h, "/x", br#"{"e":1.5}"#)),
            Err(RenderError::BadToken(_))
        ));
        assert!(matches!(
            j.render(&values(&h, "/x", br#"{"f":1}"#)),
            Err(RenderError::MissingField(_))
        ));
    }

    #[test]
    fn bad_templates_say_why() {
        for (text, segments, needle) in [
            ("in.{path:3}", 2, "out of range"),
            ("in.{path:0}", 2, "out of range"),
            ("in.{header:bad name}", 1, "not a header name"),
            ("in.{query:x}", 1, "not a placeholder"),
            ("in.{header:X", 1, "without"),
            ("in.*", 1, "wildcard"),
            ("in..x", 1, "empty token"),
            ("$JS.API.{header:X}", 1, "reserved"),
            ("natshook.dlq.{header:X}", 1, "reserved"),
        ] {
            let e = SubjectTemplate::parse(text, segments).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
