//! Request signatures: `hex`, `sha256` and Standard Webhooks (`standard`).
//!
//! The HMAC key schedule is computed once per secret when the endpoint is built; each
//! request clones that state, so signing costs only the hash of the body.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use sha2::Sha256;

use crate::secret::Secret;

type HmacSha256 = Hmac<Sha256>;

pub const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
pub const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
pub const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

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
}

/// Why `verify` refused a request.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing header {0}")]
    MissingHeader(String),
    #[error("header {0} is malformed: {1}")]
    Malformed(String, String),
    #[error("no signature matches any configured secret")]
    Mismatch,
}

/// Signs request bodies for one endpoint.
#[derive(Clone)]
pub struct Signer {
    scheme: Scheme,
    header: HeaderName,
    /// Newest first. `hex`/`sha256` sign with the first only.
    keys: Vec<HmacSha256>,
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

/// The HMAC key for a secret under `scheme`: Standard Webhooks `whsec_` secrets are
/// base64 of the key bytes; everything else is used as written.
fn key_bytes(scheme: Scheme, secret: &Secret) -> Result<Vec<u8>, SignError> {
    let raw = secret.expose();
    match (scheme, raw.strip_prefix(b"whsec_")) {
        (Scheme::Standard, Some(b64)) => BASE64.decode(b64).map_err(|_| SignError::BadWhsec),
        _ => Ok(raw.to_vec()),
    }
}

impl Signer {
    pub fn new(
        scheme: Scheme,
        header: HeaderName,
        secrets: Vec<Secret>,
    ) -> Result<Self, SignError> {
        if secrets.is_empty() {
            return Err(SignError::NoSecret);
        }
        let keys = secrets
            .iter()
            .map(|s| {
                let key = key_bytes(scheme, s)?;
                // HMAC accepts keys of any length; this cannot fail.
                HmacSha256::new_from_slice(&key).map_err(|_| SignError::NoSecret)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            scheme,
            header,
            keys,
        })
    }

    /// True when both sign with the same keys (compared by a test MAC, so key bytes
    /// are never kept around for comparison).
    pub fn same_keys(&self, other: &Signer) -> bool {
        self.keys.len() == other.keys.len()
            && self.keys.iter().zip(&other.keys).all(|(a, b)| {
                Self::mac(a, &[b"natshook-key-check"]) == Self::mac(b, &[b"natshook-key-check"])
            })
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    fn mac(key: &HmacSha256, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = key.clone();
        for p in parts {
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }

    /// Adds the scheme's signature headers for `body` to `headers`.
    pub fn sign_into(&self, id: &str, timestamp: u64, body: &[u8], headers: &mut HeaderMap) {
        match self.scheme {
            Scheme::Hex | Scheme::Sha256 => {
                let digest = hex::encode(Self::mac(&self.keys[0], &[body]));
                let value = if self.scheme == Scheme::Sha256 {
                    format!("sha256={digest}")
                } else {
                    digest
                };
                if let Ok(v) = HeaderValue::from_str(&value) {
                    headers.insert(self.header.clone(), v);
                }
            }
            Scheme::Standard => {
                let ts = timestamp.to_string();
                let mut value = String::with_capacity(self.keys.len() * 48);
                for key in &self.keys {
                    if !value.is_empty() {
                        value.push(' ');
                    }
                    value.push_str("v1,");
                    let mac = Self::mac(key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
                    BASE64.encode_string(mac, &mut value);
                }
                if let (Ok(i), Ok(t), Ok(s)) = (
                    HeaderValue::from_str(id),
                    HeaderValue::from_str(&ts),
                    HeaderValue::from_str(&value),
                ) {
                    headers.insert(WEBHOOK_ID, i);
                    headers.insert(WEBHOOK_TIMESTAMP, t);
                    headers.insert(WEBHOOK_SIGNATURE, s);
                }
            }
        }
    }

    /// Checks the signature headers a receiver got against every configured secret.
    /// Timestamp freshness is the receiver's policy and is not checked here.
    pub fn verify(&self, body: &[u8], headers: &HeaderMap) -> Result<(), VerifyError> {
        let get = |name: &HeaderName| -> Result<&str, VerifyError> {
            let v = headers
                .get(name)
                .ok_or_else(|| VerifyError::MissingHeader(name.to_string()))?;
            v.to_str()
                .map_err(|_| VerifyError::Malformed(name.to_string(), "not ASCII".into()))
        };
        match self.scheme {
            Scheme::Hex | Scheme::Sha256 => {
                let value = get(&self.header)?;
                let hex_part = if self.scheme == Scheme::Sha256 {
                    value.strip_prefix("sha256=").ok_or_else(|| {
                        VerifyError::Malformed(
                            self.header.to_string(),
                            "expected sha256=<hex>".into(),
                        )
                    })?
                } else {
                    value
                };
                let sig = hex::decode(hex_part.trim()).map_err(|_| {
                    VerifyError::Malformed(self.header.to_string(), "not hex".into())
                })?;
                self.any_key_verifies(&[body], &sig)
            }
            Scheme::Standard => {
                let id = get(&WEBHOOK_ID)?;
                let ts = get(&WEBHOOK_TIMESTAMP)?;
                let sigs = get(&WEBHOOK_SIGNATURE)?;
                let parts: [&[u8]; 5] = [id.as_bytes(), b".", ts.as_bytes(), b".", body];
                for entry in sigs.split(' ').filter(|s| !s.is_empty()) {
                    let Some(b64) = entry.strip_prefix("v1,") else {
                        continue;
                    };
                    let Ok(sig) = BASE64.decode(b64) else {
                        continue;
                    };
                    if self.any_key_verifies(&parts, &sig).is_ok() {
                        return Ok(());
                    }
                }
                Err(VerifyError::Mismatch)
            }
        }
    }

    fn any_key_verifies(&self, parts: &[&[u8]], sig: &[u8]) -> Result<(), VerifyError> {
        for key in &self.keys {
            let mut mac = key.clone();
            for p in parts {
                mac.update(p);
            }
            if mac.verify_slice(sig).is_ok() {
                return Ok(());
            }
        }
        Err(VerifyError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(scheme: Scheme, secrets: &[&str]) -> Signer {
        Signer::new(
            scheme,
            HeaderName::from_static("x-webhook-signature"),
            secrets.iter().map(|s| Secret::new(s.as_bytes())).collect(),
        )
        .unwrap()
    }

    #[test]
    fn hex_matches_a_known_hmac() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let mut h = HeaderMap::new();
        signer(Scheme::Hex, &["Jefe"]).sign_into("id", 0, b"what do ya want for nothing?", &mut h);
        assert_eq!(
            h["x-webhook-signature"],
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let mut h = HeaderMap::new();
        signer(Scheme::Sha256, &["Jefe"]).sign_into(
            "id",
            0,
            b"what do ya want for nothing?",
            &mut h,
        );
        assert_eq!(
            h["x-webhook-signature"],
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn standard_matches_the_spec_test_vector() {
        // The Standard Webhooks specification's example.
        let s = signer(
            Scheme::Standard,
            &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
        );
        let mut h = HeaderMap::new();
        let body = br#"{"test": 2432232314}"#;
        s.sign_into("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, &mut h);
        assert_eq!(
            h[WEBHOOK_SIGNATURE],
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert_eq!(h[WEBHOOK_ID], "msg_p5jXN8AQM9LWM0D4loKWxJek");
        assert_eq!(h[WEBHOOK_TIMESTAMP], "1614265330");
        assert_eq!(s.verify(body, &h), Ok(()));
    }

    #[test]
    fn rotation_sends_one_signature_per_secret_and_verifies_with_any() {
        let new_and_old = signer(Scheme::Standard, &["whsec_bmV3", "whsec_b2xk"]);
        let mut h = HeaderMap::new();
        new_and_old.sign_into("id1", 10, b"{}", &mut h);
        let sigs = h[WEBHOOK_SIGNATURE].to_str().unwrap();
        assert_eq!(sigs.split(' ').count(), 2);
        assert_eq!(
            signer(Scheme::Standard, &["whsec_b2xk"]).verify(b"{}", &h),
            Ok(())
        );
        assert_eq!(
            signer(Scheme::Standard, &["whsec_b3RoZXI="]).verify(b"{}", &h),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn verify_reports_tampering_and_missing_headers() {
        let s = signer(Scheme::Hex, &["k"]);
        let mut h = HeaderMap::new();
        s.sign_into("id", 1, b"body", &mut h);
        assert_eq!(s.verify(b"body", &h), Ok(()));
        assert_eq!(s.verify(b"bodY", &h), Err(VerifyError::Mismatch));
        assert!(matches!(
            s.verify(b"body", &HeaderMap::new()),
            Err(VerifyError::MissingHeader(_))
        ));
    }

    #[test]
    fn bad_whsec_is_refused() {
        let r = Signer::new(
            Scheme::Standard,
            HeaderName::from_static("x"),
            vec![Secret::new("whsec_!!!")],
        );
        assert!(matches!(r, Err(SignError::BadWhsec)));
    }
}
