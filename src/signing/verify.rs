//! Verifying: the signature headers a receiver got, against every configured key.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ed25519_dalek::Signature;
use hmac::digest::CtOutput;
use hmac::Mac;
use http::header::{HeaderMap, HeaderName};

use super::key::{hashed, signed_content, HmacSha256, Key};
use super::{Scheme, Signer, MAX_SIGNATURES, WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP};

/// Why `verify` refused a request.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing header {0}")]
    MissingHeader(String),
    #[error("header {0} is malformed: {1}")]
    Malformed(String, String),
    #[error("no signature matches any configured secret")]
    Mismatch,
    #[error("webhook-timestamp is {0} s away from this clock (tolerance {1} s)")]
    Stale(u64, u64),
}

impl Signer {
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
                let entries: Vec<&str> = (sigs.split(' ').filter(|s| !s.is_empty()))
                    .take(MAX_SIGNATURES + 1)
                    .collect();
                if entries.len() > MAX_SIGNATURES {
                    return Err(VerifyError::Malformed(
                        WEBHOOK_SIGNATURE.to_string(),
                        format!("more than {MAX_SIGNATURES} signatures"),
                    ));
                }
                // Ed25519 hashes the whole signed content once per (entry, key) pair, so
                // that product is what costs, not the entry count alone.
                let ed_entries = entries.iter().filter(|e| e.starts_with("v1a,")).count();
                let ed_checks = ed_entries * self.ed25519_keys();
                if ed_checks > MAX_SIGNATURES {
                    return Err(VerifyError::Malformed(
                        WEBHOOK_SIGNATURE.to_string(),
                        format!(
                            "{ed_entries} v1a signatures against {} keys make more than {MAX_SIGNATURES} checks",
                            self.ed25519_keys()
                        ),
                    ));
                }
                let parts: [&[u8]; 5] = [id.as_bytes(), b".", ts.as_bytes(), b".", body];
                // Each key hashes the body once, however many entries there are.
                let mut macs = None;
                let mut content = None;
                for entry in entries {
                    if let Some(b64) = entry.strip_prefix("v1a,") {
                        let msg = content.get_or_insert_with(|| signed_content(id, ts, body));
                        if self.any_ed25519_key_verifies(msg, b64) {
                            return Ok(());
                        }
                        continue;
                    }
                    let Some(sig) = entry.strip_prefix("v1,").and_then(hmac_signature) else {
                        continue;
                    };
                    let macs = macs.get_or_insert_with(|| self.hmac_outputs(&parts));
                    if macs.contains(&sig) {
                        return Ok(());
                    }
                }
                Err(VerifyError::Mismatch)
            }
        }
    }

    /// How many `v1a` entries a request may carry before [`Signer::verify`] refuses it
    /// unchecked; `None` without Ed25519 keys, when `v1a` entries cost no check.
    pub fn v1a_entries_allowed(&self) -> Option<usize> {
        let keys = self.ed25519_keys();
        (keys > 0).then(|| MAX_SIGNATURES / keys)
    }

    pub fn ed25519_keys(&self) -> usize {
        (self.keys.iter())
            .filter(|key| matches!(key, Key::Ed25519(_) | Key::Ed25519Public(_)))
            .count()
    }

    /// Every HMAC key's output over `parts`, compared in constant time (`CtOutput`).
    fn hmac_outputs(&self, parts: &[&[u8]]) -> Vec<CtOutput<HmacSha256>> {
        (self.keys.iter())
            .filter_map(|key| match key {
                Key::Hmac(key) => Some(hashed(key, parts).finalize()),
                _ => None,
            })
            .collect()
    }

    /// `verify`, and for `standard` also the replay check: `webhook-timestamp` must lie
    /// within `tolerance` of `now` (unix seconds). The timestamp is checked first, as it
    /// is cheaper; it is covered by the signature, so a sender cannot move it.
    pub fn verify_fresh(
        &self,
        body: &[u8],
        headers: &HeaderMap,
        now: u64,
        tolerance: Duration,
    ) -> Result<(), VerifyError> {
        if self.scheme == Scheme::Standard {
            let name = WEBHOOK_TIMESTAMP.to_string();
            let ts = headers
                .get(&WEBHOOK_TIMESTAMP)
                .ok_or_else(|| VerifyError::MissingHeader(name.clone()))?
                .to_str()
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .ok_or_else(|| VerifyError::Malformed(name, "not unix seconds".into()))?;
            let off = ts.abs_diff(now);
            if off > tolerance.as_secs() {
                return Err(VerifyError::Stale(off, tolerance.as_secs()));
            }
        }
        self.verify(body, headers)
    }

    /// `verify_slice` compares in constant time, so the time to refuse a signature
    /// does not tell a forger how many of its bytes were right.
    fn any_key_verifies(&self, parts: &[&[u8]], sig: &[u8]) -> Result<(), VerifyError> {
        for key in &self.keys {
            let Key::Hmac(key) = key else {
                continue;
            };
            if hashed(key, parts).verify_slice(sig).is_ok() {
                return Ok(());
            }
        }
        Err(VerifyError::Mismatch)
    }

    /// Strict verification: rejects non-canonical signatures and small-order keys, which
    /// a signer following RFC 8032 never produces.
    fn any_ed25519_key_verifies(&self, msg: &[u8], b64: &str) -> bool {
        let Ok(bytes) = BASE64.decode(b64) else {
            return false;
        };
        let Ok(sig) = Signature::from_slice(&bytes) else {
            return false;
        };
        self.keys.iter().any(|key| match key {
            Key::Ed25519(k) => k.verifying_key().verify_strict(msg, &sig).is_ok(),
            Key::Ed25519Public(k) => k.verify_strict(msg, &sig).is_ok(),
            Key::Hmac(_) => false,
        })
    }
}

/// A `v1` entry's signature, when it is base64 of an HMAC-SHA256's 32 bytes (the
/// length is no secret; anything else matches no key).
fn hmac_signature(b64: &str) -> Option<CtOutput<HmacSha256>> {
    let bytes: [u8; 32] = BASE64.decode(b64).ok()?.try_into().ok()?;
    Some(CtOutput::new(bytes.into()))
}
