//! Subject → event-name mapping, tenants, and endpoint event filters: what one
//! message is (its event and tenant) and which endpoints take it are decided here, for
//! the worker, the consumer filters and `natshook check` alike.
//!
//! Subjects use NATS wildcard rules (`*` one token, `>` one or more trailing tokens).
//! Event names are dot-separated too, and endpoint filters reuse the same token rules,
//! with `*` alone meaning "every event" so that multi-token names are included.
//!
//! The mapping is evaluated once per message, so patterns are pre-split at start-up and
//! matching allocates only the resulting event name (and tenant).

mod tenant;

use std::fmt;

use self::tenant::Pin;
pub use self::tenant::{
    tenant_admits, tenant_id_problem, TenantError, TenantIdProblem, TenantSource, TENANT_ID_MAX,
    TENANT_ID_RULE,
};

/// Why a pattern or template from the config was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("must not be empty")]
    Empty,
    #[error("has an empty token (check for '..' or a leading/trailing '.')")]
    EmptyToken,
    #[error("'>' may only be the last token")]
    GtNotLast,
    #[error("wildcards must be a whole token ('{0}')")]
    PartialWildcard(String),
    #[error("must not contain whitespace")]
    Whitespace,
    #[error("placeholder {{{0}}} is out of range: the subject pattern has {1} token(s)")]
    PlaceholderOutOfRange(usize, usize),
    #[error("bad placeholder '{0}': use {{1}}..{{n}}")]
    BadPlaceholder(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(String),
    /// `*`: exactly one token.
    One,
    /// `>`: one or more trailing tokens.
    Rest,
}

/// A NATS-style pattern over dot-separated names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    tokens: Vec<Token>,
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        if text.chars().any(char::is_whitespace) {
            return Err(PatternError::Whitespace);
        }
        let parts: Vec<&str> = text.split('.').collect();
        let mut tokens = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let token = match *part {
                "" => return Err(PatternError::EmptyToken),
                "*" => Token::One,
                ">" if i + 1 == parts.len() => Token::Rest,
                ">" => return Err(PatternError::GtNotLast),
                p if p.contains('*') || p.contains('>') => {
                    return Err(PatternError::PartialWildcard(p.to_string()))
                }
                p => Token::Literal(p.to_string()),
            };
            tokens.push(token);
        }
        Ok(Self {
            text: text.to_string(),
            tokens,
        })
    }

    fn from_tokens(tokens: Vec<Token>) -> Self {
        let text = tokens
            .iter()
            .map(|t| match t {
                Token::Literal(l) => l.as_str(),
                Token::One => "*",
                Token::Rest => ">",
            })
            .collect::<Vec<_>>()
            .join(".");
        Self { text, tokens }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }

    pub fn matches(&self, name: &str) -> bool {
        let mut parts = name.split('.');
        for token in &self.tokens {
            match token {
                Token::Rest => return parts.next().is_some_and(|p| !p.is_empty()),
                Token::One => match parts.next() {
                    Some(p) if !p.is_empty() => {}
                    _ => return false,
                },
                Token::Literal(lit) => match parts.next() {
                    Some(p) if p == lit => {}
                    _ => return false,
                },
            }
        }
        parts.next().is_none()
    }

    /// True when every name this pattern matches is also matched by `other`.
    pub fn is_subset_of(&self, other: &Pattern) -> bool {
        let mut a = self.tokens.iter();
        for b_tok in &other.tokens {
            let Some(a_tok) = a.next() else {
                return false;
            };
            match (a_tok, b_tok) {
                (_, Token::Rest) => return true,
                (Token::Rest, _) => return false,
                (_, Token::One) => {}
                (Token::One, Token::Literal(_)) => return false,
                (Token::Literal(x), Token::Literal(y)) if x == y => {}
                _ => return false,
            }
        }
        a.next().is_none()
    }

    /// True when some name is matched by both patterns.
    pub fn overlaps(&self, other: &Pattern) -> bool {
        let (mut a, mut b) = (self.tokens.iter(), other.tokens.iter());
        loop {
            match (a.next(), b.next()) {
                (None, None) => return true,
                (None, Some(_)) | (Some(_), None) => return false,
                (Some(Token::Rest), Some(_)) | (Some(_), Some(Token::Rest)) => return true,
                (Some(Token::One), Some(_)) | (Some(_), Some(Token::One)) => {}
                (Some(Token::Literal(x)), Some(Token::Literal(y))) if x == y => {}
                _ => return false,
            }
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Splits a template at its `{…}` placeholders, in order: `literal` makes the piece of
/// each run of text, `placeholder` the piece of what stands between `{` and `}`. An
/// error names the text from a `{` that has no `}` (`unclosed`), or the text after the
/// last placeholder when it holds a `}` (`stray`). Event templates and ingress subject
/// templates share it, so both read braces alike.
pub fn split_template<P, E>(
    text: &str,
    mut literal: impl FnMut(&str) -> P,
    mut placeholder: impl FnMut(&str) -> Result<P, E>,
    unclosed: impl FnOnce(&str) -> E,
    stray: impl FnOnce(&str) -> E,
) -> Result<Vec<P>, E> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            pieces.push(literal(&rest[..open]));
        }
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(unclosed(&rest[open..]));
        };
        pieces.push(placeholder(&after[..close])?);
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(stray(rest));
    }
    if !rest.is_empty() {
        pieces.push(literal(rest));
    }
    Ok(pieces)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    /// 1-based subject token index.
    SubjectToken(usize),
}

/// An event-name template such as `ticket.{3}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTemplate {
    text: String,
    pieces: Vec<Piece>,
}

impl EventTemplate {
    /// Parses `text`; placeholders must refer to tokens the subject pattern always has.
    pub fn parse(text: &str, subject: &Pattern) -> Result<Self, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        if text.chars().any(char::is_whitespace) {
            return Err(PatternError::Whitespace);
        }
        let count = subject.token_count();
        let pieces = split_template(
            text,
            |t| Piece::Text(t.to_string()),
            |inner| {
                let index: usize = inner
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| PatternError::BadPlaceholder(format!("{{{inner}}}")))?;
                if index > count {
                    return Err(PatternError::PlaceholderOutOfRange(index, count));
                }
                Ok(Piece::SubjectToken(index))
            },
            |from_open| PatternError::BadPlaceholder(from_open.to_string()),
            |tail| PatternError::BadPlaceholder(tail.to_string()),
        )?;
        if text.split('.').any(str::is_empty) {
            return Err(PatternError::EmptyToken);
        }
        Ok(Self {
            text: text.to_string(),
            pieces,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The same event name for every subject.
    fn is_literal(&self) -> bool {
        matches!(self.pieces.as_slice(), [Piece::Text(_)])
    }

    /// Renders the event name for `subject`, which must match the rule's pattern.
    fn render(&self, subject: &str) -> String {
        if let [Piece::Text(only)] = self.pieces.as_slice() {
            return only.clone();
        }
        let tokens: Vec<&str> = subject.split('.').collect();
        let mut out = String::with_capacity(self.text.len() + subject.len());
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::SubjectToken(i) => out.push_str(tokens.get(i - 1).copied().unwrap_or("")),
            }
        }
        out
    }

    /// The subject patterns (narrowed from `subject`) whose messages this template can
    /// turn into an event `filter` wants. Conservative: a subject left in may still
    /// produce an unwanted event (delivery re-checks), but a wanted one is never left
    /// out. Placeholders expand to one subject token (no dots), so the template's dot
    /// structure is fixed; a whole-token placeholder `{n}` facing a literal in the
    /// filter pins subject token n, which keeps `ticket.{3}` + `ticket.created` down
    /// to `helpdesk.ticket.created` instead of every ticket subject.
    ///
    /// `tenant_pin` (an endpoint tenant facing a rule's `tenant = "{n}"`) pins subject
    /// token n the same way.
    fn subjects_for(
        &self,
        subject: &Pattern,
        filter: &EventFilter,
        tenant_pin: Option<(usize, &str)>,
    ) -> Vec<Pattern> {
        enum Shape<'a> {
            Text(&'a str),
            Token(usize),
            Unknown,
        }
        let shape: Vec<Shape<'_>> = self
            .text
            .split('.')
            .map(|t| {
                if !t.contains('{') {
                    Shape::Text(t)
                } else if let Some(n) = t
                    .strip_prefix('{')
                    .and_then(|r| r.strip_suffix('}'))
                    .and_then(|n| n.parse::<usize>().ok())
                {
                    Shape::Token(n)
                } else {
                    Shape::Unknown
                }
            })
            .collect();
        let mut out: Vec<Pattern> = Vec::new();
        for fp in &filter.patterns {
            let mut pins: Vec<(usize, &str)> = tenant_pin.into_iter().collect();
            let mut parts = shape.iter();
            let mut matched = true;
            // `*` alone wants every event: only the tenant pins.
            let mut rest = fp.is_none();
            for token in fp.iter().flat_map(|fp| &fp.tokens) {
                match (token, parts.next()) {
                    (_, None) => {
                        matched = false;
                        break;
                    }
                    (Token::Rest, Some(_)) => {
                        rest = true;
                        break;
                    }
                    (Token::One, Some(_)) | (Token::Literal(_), Some(Shape::Unknown)) => {}
                    (Token::Literal(lit), Some(Shape::Text(t))) if lit == t => {}
                    (Token::Literal(lit), Some(Shape::Token(n))) => pins.push((*n, lit)),
                    _ => {
                        matched = false;
                        break;
                    }
                }
            }
            if !matched || (!rest && parts.next().is_some()) {
                continue;
            }
            let mut tokens = subject.tokens.clone();
            for (n, lit) in pins {
                match tokens.get(n - 1) {
                    Some(Token::One) => tokens[n - 1] = Token::Literal(lit.to_string()),
                    Some(Token::Literal(x)) if x != lit => {
                        matched = false;
                        break;
                    }
                    _ => {}
                }
            }
            if matched {
                let p = Pattern::from_tokens(tokens);
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
        out
    }
}

/// One `[[events]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRule {
    pub subject: Pattern,
    pub event: EventTemplate,
    /// `None`: the rule's messages have no tenant.
    pub tenant: Option<TenantSource>,
}

impl EventRule {
    /// The subjects of this rule whose messages an endpoint with `filter` and
    /// `tenant` may take (see [`EventTemplate::subjects_for`]). A rule without a
    /// tenant source gives a tenant's endpoint nothing.
    fn subjects_for(&self, filter: &EventFilter, tenant: Option<&str>) -> Vec<Pattern> {
        let pin = match (tenant, &self.tenant) {
            (None, _) => None,
            (Some(_), None) => return Vec::new(),
            (Some(t), Some(source)) => match source.pin(t) {
                Pin::Open => None,
                Pin::Token(n, t) => Some((n, t)),
                Pin::Excluded => return Vec::new(),
            },
        };
        self.event.subjects_for(&self.subject, filter, pin)
    }
}

/// What the mapping makes of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    pub event: String,
    /// The event name holds subject tokens (a `{n}` template): its values are as many
    /// as publishers make, so its metric label is bounded.
    pub event_from_subject: bool,
    /// `None` when the rule has no tenant source, or the message lacks a usable one.
    pub tenant: Option<String>,
}

/// What one endpoint does with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No rule maps the subject.
    Unmapped,
    /// Mapped, but the endpoint does not want its event or it is another tenant's
    /// (possible when the consumer filter is wider than the endpoint).
    Unwanted,
    Deliver(Mapped),
}

/// The ordered `[[events]]` table: first match wins.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Router {
    rules: Vec<EventRule>,
}

impl Router {
    pub fn new(rules: Vec<EventRule>) -> Self {
        Self { rules }
    }

    pub fn rules(&self) -> &[EventRule] {
        &self.rules
    }

    /// The event and tenant of a message on `subject` with `headers` (name, value),
    /// or `None` when no rule maps the subject.
    pub fn route<'h>(
        &self,
        subject: &str,
        headers: impl IntoIterator<Item = (&'h str, &'h str)>,
    ) -> Option<Mapped> {
        let rule = self.rules.iter().find(|r| r.subject.matches(subject))?;
        Some(Mapped {
            event: rule.event.render(subject),
            event_from_subject: !rule.event.is_literal(),
            tenant: rule
                .tenant
                .as_ref()
                .and_then(|source| source.tenant_of(subject, headers)),
        })
    }

    /// True when some rule maps `subject`.
    pub fn maps(&self, subject: &str) -> bool {
        self.rules.iter().any(|r| r.subject.matches(subject))
    }

    /// True when some rule gives its messages a tenant.
    pub fn has_tenants(&self) -> bool {
        self.rules.iter().any(|r| r.tenant.is_some())
    }

    /// Whether an endpoint that wants `events` for `tenant` (`None`: every tenant)
    /// delivers this message. Every message is decided here, whatever the consumer
    /// filter let through.
    pub fn decide<'h>(
        &self,
        subject: &str,
        headers: impl IntoIterator<Item = (&'h str, &'h str)>,
        events: &EventFilter,
        tenant: Option<&str>,
    ) -> Verdict {
        match self.route(subject, headers) {
            None => Verdict::Unmapped,
            Some(m) if events.wants(&m.event) && tenant_admits(tenant, m.tenant.as_deref()) => {
                Verdict::Deliver(m)
            }
            Some(_) => Verdict::Unwanted,
        }
    }

    /// Consumer filter subjects for an endpoint: the subjects of every rule that can
    /// produce an event the endpoint wants, for its tenant when it has one (a rule's
    /// `tenant = "{n}"` pins subject token n to it, so each tenant's endpoint reads
    /// only its tenant's subjects). Returns `None` when the consumer must read the
    /// whole stream (the subjects overlap in a way JetStream refuses as filters);
    /// delivery re-checks every message, so a wider filter only costs reads.
    pub fn filter_subjects(
        &self,
        filter: &EventFilter,
        tenant: Option<&str>,
    ) -> Option<Vec<String>> {
        let wanted: Vec<Pattern> = self
            .rules
            .iter()
            .flat_map(|r| r.subjects_for(filter, tenant))
            .collect();
        let mut kept: Vec<&Pattern> = Vec::new();
        for (i, p) in wanted.iter().enumerate() {
            let covered = wanted
                .iter()
                .enumerate()
                .any(|(j, q)| i != j && p.is_subset_of(q) && (!q.is_subset_of(p) || j < i));
            if !covered {
                kept.push(p);
            }
        }
        for (i, a) in kept.iter().enumerate() {
            if kept[i + 1..].iter().any(|b| a.overlaps(b)) {
                return None;
            }
        }
        Some(kept.iter().map(|p| p.as_str().to_string()).collect())
    }
}

/// An endpoint's `events` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFilter {
    /// `None` stands for `*` alone: every event.
    patterns: Vec<Option<Pattern>>,
}

impl EventFilter {
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, (usize, PatternError)> {
        let mut patterns = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let item = item.as_ref();
            if item == "*" {
                patterns.push(None);
            } else {
                patterns.push(Some(Pattern::parse(item).map_err(|e| (i, e))?));
            }
        }
        Ok(Self { patterns })
    }

    /// The patterns as written (`*` for every event).
    pub fn items(&self) -> Vec<&str> {
        self.patterns
            .iter()
            .map(|p| p.as_ref().map_or("*", Pattern::as_str))
            .collect()
    }

    /// The events wanted, when each is a plain name (no `*` or `>`): such an endpoint
    /// can be found by its event names instead of being asked about every event.
    pub fn literals(&self) -> Option<Vec<&str>> {
        self.patterns
            .iter()
            .map(|p| match p {
                Some(pattern)
                    if pattern
                        .tokens
                        .iter()
                        .all(|t| matches!(t, Token::Literal(_))) =>
                {
                    Some(pattern.as_str())
                }
                _ => None,
            })
            .collect()
    }

    pub fn wants(&self, event: &str) -> bool {
        self.patterns.iter().any(|p| match p {
            None => true,
            Some(pattern) => pattern.matches(event),
        })
    }
}

#[cfg(test)]
mod tests;
