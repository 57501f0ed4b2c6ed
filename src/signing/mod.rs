//! Request signatures: `hex`, `sha256` and Standard Webhooks (`standard`).
//!
//! The HMAC key schedule is computed once per secret when the endpoint is built; each
//! request clones that state, so signing costs only the hash of the body.
//!
//! Under `standard`, a `whsk_` secret signs with Ed25519 (`v1a`) instead of HMAC
//! (`v1`), so receivers verify with the `whpk_` public key and never hold a key that
//! could forge requests.

mod key;
mod sign;
#[cfg(test)]
mod tests;
mod verify;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use http::header::HeaderName;

use crate::secret::Secret;
use key::{parse_key, Key};

pub use key::{ed25519_public_key, generate_ed25519};
pub use verify::VerifyError;

pub const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
pub const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
pub const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

/// How far a Standard Webhooks timestamp may be from the receiver's clock, either way,
/// before the request counts as a replay (the specification's recommended window).
pub const TIMESTAMP_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// Most secrets one rotation list holds. A rotation needs the new secret and the few
/// still in their grace; each secret costs a signature per delivery (and a hash of the
/// body per verified request), so a list of thousands would turn one endpoint or
/// route into a CPU sink.
pub const MAX_SECRETS: usize = 16;

/// Most entries a `webhook-signature` header may carry for a request to be verified:
/// a sender signs once per secret it holds, and each entry costs a check, so an
/// unbounded list would let anyone without a secret burn CPU.
pub const MAX_SIGNATURES: usize = MAX_SECRETS;

/// The signature scheme of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `<header>: <hex HMAC-SHA256(secret, body)>`
    Hex,
    /// `<header>: sha256=<hex HMAC-SHA256(secret, body)>` (GitHub style)
    Sha256,
    /// Standard Webhooks: `webhook-signature: v1,<base64>` over `{id}.{ts}.{body}`.
    Standard,
}

impl FromStr for Scheme {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "hex" => Ok(Scheme::Hex),
            "sha256" => Ok(Scheme::Sha256),
            "standard" => Ok(Scheme::Standard),
            _ => Err(()),
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scheme::Hex => "hex",
            Scheme::Sha256 => "sha256",
            Scheme::Standard => "standard",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("a whsec_ secret must be base64 after the prefix")]
    BadWhsec,
    #[error("at least one secret is required")]
    NoSecret,
    #[error("a whsec_ secret must hold at least one key byte after the prefix")]
    EmptyWhsec,
    #[error("at most {MAX_SECRETS} secrets (got {0})")]
    TooManySecrets(usize),
    #[error("whpk_ is a public key; sign with the whsk_ secret key")]
    PublicKey,
    #[error("a whsk_ secret key must be base64 of the 64-byte Ed25519 key pair (seed and public key) or of the 32-byte seed")]
    BadWhsk,
    #[error("the public half of the whsk_ secret key does not match its seed")]
    WhskMismatch,
    #[error("a whpk_ public key must be base64 of a 32-byte Ed25519 public key")]
    BadWhpk,
    #[error(
        "{prefix} keys are Ed25519 keys for the standard scheme (v1a signatures), not {scheme}"
    )]
    NotStandard {
        prefix: &'static str,
        scheme: Scheme,
    },
}

/// Signs request bodies for one endpoint.
#[derive(Clone)]
pub struct Signer {
    scheme: Scheme,
    header: HeaderName,
    /// Newest first (but see [`Signer::during_rotation_grace`]). `hex`/`sha256` sign
    /// with the first only.
    keys: Vec<Key>,
    /// Under `standard`, a secret without a `whsec_`/`whsk_`/`whpk_` prefix: its bytes
    /// are the key, as the contract says, while Standard Webhooks libraries read any
    /// secret as base64 ([`Signer::reads_plain_standard_secret`]).
    plain_standard: bool,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("scheme", &self.scheme)
            .field("header", &self.header)
            .field("keys", &format_args!("<{} redacted>", self.keys.len()))
            .finish()
    }
}

/// Checks one secret the way [`Signer::new`] does, so a config error can name the
/// entry of a rotation list.
pub fn check_signing_secret(scheme: Scheme, secret: &Secret) -> Result<(), SignError> {
    parse_key(scheme, secret, false).map(drop)
}

impl Signer {
    pub fn new(
        scheme: Scheme,
        header: HeaderName,
        secrets: Vec<Secret>,
    ) -> Result<Self, SignError> {
        Self::build(scheme, header, &secrets, false)
    }

    /// A signer that only verifies: besides everything [`Signer::new`] takes it accepts
    /// `whpk_` public keys, which is all a receiver of `v1a` signatures holds.
    pub fn verifier(
        scheme: Scheme,
        header: HeaderName,
        secrets: Vec<Secret>,
    ) -> Result<Self, SignError> {
        Self::build(scheme, header, &secrets, true)
    }

    fn build(
        scheme: Scheme,
        header: HeaderName,
        secrets: &[Secret],
        verify_only: bool,
    ) -> Result<Self, SignError> {
        if secrets.is_empty() {
            return Err(SignError::NoSecret);
        }
        if secrets.len() > MAX_SECRETS {
            return Err(SignError::TooManySecrets(secrets.len()));
        }
        let mut keys: Vec<Key> = secrets
            .iter()
            .map(|s| parse_key(scheme, s, verify_only))
            .collect::<Result<_, _>>()?;
        // Collecting through a Result leaves room for four keys where most endpoints
        // have one, and the signer lives as long as the endpoint.
        keys.shrink_to_fit();
        let prefixed = |s: &Secret| {
            let raw = s.expose();
            [&b"whsec_"[..], b"whsk_", b"whpk_"]
                .iter()
                .any(|p| raw.starts_with(p))
        };
        Ok(Self {
            scheme,
            header,
            keys,
            plain_standard: scheme == Scheme::Standard && !secrets.iter().all(prefixed),
        })
    }

    /// The signer for a rotation's grace: `hex` and `sha256` send one signature, so
    /// they go on signing with the oldest secret (the one receivers hold) until the
    /// grace ends, and receivers switch to the new one meanwhile; `standard` signs with
    /// every secret anyway.
    pub fn during_rotation_grace(mut self) -> Self {
        if matches!(self.scheme, Scheme::Hex | Scheme::Sha256) {
            self.keys.rotate_right(1);
        }
        self
    }

    /// True when both sign with the same keys (HMAC keys compared by a test MAC, so key
    /// bytes are never kept around for comparison; Ed25519 keys by their public key).
    pub fn same_keys(&self, other: &Signer) -> bool {
        self.keys.len() == other.keys.len()
            && self
                .keys
                .iter()
                .zip(&other.keys)
                .all(|(a, b)| match (a, b) {
                    (Key::Hmac(a), Key::Hmac(b)) => {
                        key::mac(a, &[b"natshook-key-check"])
                            == key::mac(b, &[b"natshook-key-check"])
                    }
                    // The public key follows from the secret key.
                    (Key::Ed25519(a), Key::Ed25519(b)) => a.verifying_key() == b.verifying_key(),
                    (Key::Ed25519Public(a), Key::Ed25519Public(b)) => a == b,
                    _ => false,
                })
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Whether a `standard` secret is not in Standard Webhooks' form (`whsec_…`): a
    /// receiver or sender on an official library would then use another key, and no
    /// signature would verify. Said by `natshook check` and at start.
    pub fn reads_plain_standard_secret(&self) -> bool {
        self.plain_standard
    }

    pub fn header(&self) -> &HeaderName {
        &self.header
    }
}
