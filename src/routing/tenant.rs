//! Tenants: where an `[[events]]` rule finds a message's tenant, what a tenant id may
//! be, and which endpoints a tenant's message may reach.
//!
//! Tenant ids are kept to what can stand as one NATS subject token, so that an
//! endpoint's tenant can always pin the subject token a rule reads its tenant from.

use super::{Pattern, PatternError};

/// The longest tenant id, in bytes.
pub const TENANT_ID_MAX: usize = 128;

/// What a tenant id must be, for problems and docs.
pub const TENANT_ID_RULE: &str =
    "1 to 128 printable ASCII characters, none of them '.', '*' or '>'";

/// Why a text is not a tenant id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TenantIdProblem {
    #[error("is empty")]
    Empty,
    #[error("is longer than {TENANT_ID_MAX} bytes")]
    TooLong,
    #[error("has a space, a control character or a non-ASCII character")]
    NotPrintableAscii,
    #[error("has '.', '*' or '>', which cannot stand in one subject token")]
    SubjectSyntax,
}

/// `None` when `id` follows [`TENANT_ID_RULE`].
pub fn tenant_id_problem(id: &str) -> Option<TenantIdProblem> {
    if id.is_empty() {
        Some(TenantIdProblem::Empty)
    } else if id.len() > TENANT_ID_MAX {
        Some(TenantIdProblem::TooLong)
    } else if !id.bytes().all(|b| b.is_ascii_graphic()) {
        Some(TenantIdProblem::NotPrintableAscii)
    } else if id.bytes().any(|b| matches!(b, b'.' | b'*' | b'>')) {
        Some(TenantIdProblem::SubjectSyntax)
    } else {
        None
    }
}

/// Why an `[[events]]` rule's `tenant` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantError {
    #[error("must not be empty")]
    Empty,
    #[error(
        "must be one whole placeholder such as {{2}} (a subject token) or a literal tenant id"
    )]
    NotOnePlaceholder,
    #[error(transparent)]
    Placeholder(#[from] PatternError),
    #[error("is not a tenant id: it {0} ({TENANT_ID_RULE})")]
    NotAnId(TenantIdProblem),
}

/// Where an `[[events]]` rule finds the tenant of the messages it maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantSource {
    /// `tenant = "{n}"`: subject token n (1-based).
    SubjectToken(usize),
    /// `tenant = "org_1"`: every message of the rule has this tenant.
    Literal(String),
    /// `tenant_header = "Nats-Tenant"`: a NATS message header, its name matched
    /// case-insensitively as `forward_headers` are.
    Header(String),
}

impl TenantSource {
    /// Parses a rule's `tenant`: one whole placeholder, checked against the tokens
    /// `subject` always has, or a literal tenant id.
    pub fn parse(text: &str, subject: &Pattern) -> Result<Self, TenantError> {
        if text.is_empty() {
            return Err(TenantError::Empty);
        }
        if !text.contains(['{', '}']) {
            return match tenant_id_problem(text) {
                None => Ok(Self::Literal(text.to_string())),
                Some(problem) => Err(TenantError::NotAnId(problem)),
            };
        }
        let inner = text
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .filter(|t| !t.contains(['{', '}']))
            .ok_or(TenantError::NotOnePlaceholder)?;
        let index: usize = inner
            .parse()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| PatternError::BadPlaceholder(text.to_string()))?;
        let count = subject.token_count();
        if index > count {
            return Err(PatternError::PlaceholderOutOfRange(index, count).into());
        }
        Ok(Self::SubjectToken(index))
    }

    /// The tenant of a message on `subject` (which matches the rule) with `headers`;
    /// `None` when the value is missing or is not a tenant id, so a malformed tenant
    /// never reaches a tenant's endpoint.
    ///
    /// A header given more than once (in one spelling or several) names a tenant only
    /// when every value agrees: the message's headers come in no fixed order, so
    /// picking one of two values would let each endpoint pick its own, and one message
    /// reach two tenants.
    pub(super) fn tenant_of<'h>(
        &self,
        subject: &str,
        headers: impl IntoIterator<Item = (&'h str, &'h str)>,
    ) -> Option<String> {
        let value = match self {
            Self::SubjectToken(n) => subject.split('.').nth(n - 1)?,
            Self::Literal(tenant) => return Some(tenant.clone()),
            Self::Header(name) => {
                let mut values = (headers.into_iter())
                    .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v);
                let first = values.next()?;
                if values.any(|v| v != first) {
                    return None;
                }
                first
            }
        };
        tenant_id_problem(value)
            .is_none()
            .then(|| value.to_string())
    }

    /// What an endpoint's tenant `tenant` does to its consumer filter for this rule.
    pub(super) fn pin<'t>(&self, tenant: &'t str) -> Pin<'t> {
        match self {
            Self::SubjectToken(n) => Pin::Token(*n, tenant),
            Self::Literal(l) if l == tenant => Pin::Open,
            Self::Literal(_) => Pin::Excluded,
            Self::Header(_) => Pin::Open,
        }
    }
}

/// An endpoint tenant's effect on the subjects one rule adds to its consumer filter.
pub(super) enum Pin<'t> {
    /// The filter cannot narrow: the tenant comes from a header or is the rule's
    /// literal (delivery checks each message).
    Open,
    /// Subject token n (1-based) must equal the tenant.
    Token(usize, &'t str),
    /// No message of the rule has this tenant.
    Excluded,
}

/// Whether an endpoint with tenant `endpoint` takes a message with tenant `message`:
/// an endpoint without a tenant takes every message, one with a tenant only messages
/// of that same tenant (never a message without one). Delivery and dead-letter replay
/// both ask here.
pub fn tenant_admits(endpoint: Option<&str>, message: Option<&str>) -> bool {
    match endpoint {
        None => true,
        Some(want) => message == Some(want),
    }
}
