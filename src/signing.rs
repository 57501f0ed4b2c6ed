//! Request signatures: `hex`, `sha256` and Standard Webhooks (`standard`).
//!
//! The HMAC key schedule is computed once per secret when the endpoint is built; each
//! request clones that state, so signing costs only the hash of the body.
//!
//! Under `standard`, a `whsk_` secret signs with Ed25519 (`v1a`) instead of HMAC
//! (`v1`), so receivers verify with the `whpk_` public key and never hold a key that
//! could forge requests.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use hmac::{Hmac, Mac};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use sha2::Sha256;

use crate::secret::Secret;

type HmacSha256 = Hmac<Sha256>;

pub const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
pub const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
pub const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

/// How far a Standard Webhooks timestamp may be from the receiver's clock, either way,
/// before the request counts as a replay (the specification's recommended window).
pub const TIMESTAMP_TOLERANCE: Duration = Duration::from_secs(5 * 60);

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

/// Signs request bodies for one endpoint.
#[derive(Clone)]
pub struct Signer {
    scheme: Scheme,
    header: HeaderName,
    /// Newest first. `hex`/`sha256` sign with the first only.
    keys: Vec<Key>,
}

/// One key of an endpoint's rotation list.
#[derive(Clone)]
enum Key {
    /// HMAC-SHA256: every `hex`/`sha256` secret, and `whsec_`/plain under `standard` (`v1`).
    Hmac(HmacSha256),
    /// A `whsk_` secret key: signs `v1a`, verifies with its own public key.
    Ed25519(SigningKey),
    /// A `whpk_` public key (only from [`Signer::verifier`]): verifies `v1a`, never signs.
    Ed25519Public(VerifyingKey),
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

/// The key a secret stands for under `scheme`. A `whpk_` public key is accepted only
/// when `verify_only`, since a signer holding one could not sign.
fn parse_key(scheme: Scheme, secret: &Secret, verify_only: bool) -> Result<Key, SignError> {
    let raw = secret.expose();
    if let Some(b64) = raw.strip_prefix(b"whpk_") {
        if !verify_only {
            return Err(SignError::PublicKey);
        }
        if scheme != Scheme::Standard {
            return Err(SignError::NotStandard {
                prefix: "whpk_",
                scheme,
            });
        }
        let bytes = BASE64.decode(b64).map_err(|_| SignError::BadWhpk)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| SignError::BadWhpk)?;
        return VerifyingKey::from_bytes(&bytes)
            .map(Key::Ed25519Public)
            .map_err(|_| SignError::BadWhpk);
    }
    if let Some(b64) = raw.strip_prefix(b"whsk_") {
        if scheme != Scheme::Standard {
            return Err(SignError::NotStandard {
                prefix: "whsk_",
                scheme,
            });
        }
        return ed25519_secret_key(b64).map(Key::Ed25519);
    }
    let key = key_bytes(scheme, secret)?;
    // HMAC accepts keys of any length; this cannot fail.
    HmacSha256::new_from_slice(&key)
        .map(Key::Hmac)
        .map_err(|_| SignError::NoSecret)
}

/// Decodes the base64 after `whsk_`: the 64-byte seed-and-public-key form Svix emits, or
/// the bare 32-byte seed. The public half of the long form must match its seed, so a
/// truncated or spliced key is refused instead of producing unverifiable signatures.
fn ed25519_secret_key(b64: &[u8]) -> Result<SigningKey, SignError> {
    let bytes = BASE64.decode(b64).map_err(|_| SignError::BadWhsk)?;
    match bytes.len() {
        32 => {
            let mut seed = [0u8; 32];
            seed.copy_from_slice(&bytes);
            Ok(SigningKey::from_bytes(&seed))
        }
        64 => {
            let mut pair = [0u8; 64];
            pair.copy_from_slice(&bytes);
            SigningKey::from_keypair_bytes(&pair).map_err(|_| SignError::WhskMismatch)
        }
        _ => Err(SignError::BadWhsk),
    }
}

/// A new random Ed25519 key pair as (`whsk_…`, `whpk_…`), from the operating system's
/// random source. The secret key uses the 64-byte seed-and-public-key form.
pub fn generate_ed25519() -> Result<(String, String), getrandom::Error> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed)?;
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    Ok((
        format!("whsk_{}", BASE64.encode(key.to_keypair_bytes())),
        format!("whpk_{}", BASE64.encode(key.verifying_key().as_bytes())),
    ))
}

/// The `whpk_` public key of a `whsk_` secret key, for handing to receivers.
pub fn ed25519_public_key(secret: &Secret) -> Result<String, SignError> {
    let b64 = secret
        .expose()
        .strip_prefix(b"whsk_")
        .ok_or(SignError::BadWhsk)?;
    let key = ed25519_secret_key(b64)?;
    Ok(format!(
        "whpk_{}",
        BASE64.encode(key.verifying_key().as_bytes())
    ))
}

/// Checks one secret the way [`Signer::new`] does, so a config error can name the
/// entry of a rotation list.
pub fn check_signing_secret(scheme: Scheme, secret: &Secret) -> Result<(), SignError> {
    parse_key(scheme, secret, false).map(drop)
}

/// `{id}.{timestamp}.{body}`, the content Standard Webhooks signs. Ed25519 needs it in
/// one piece (the HMAC keys hash the parts instead).
fn signed_content(id: &str, ts: &str, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(id.len() + ts.len() + body.len() + 2);
    v.extend_from_slice(id.as_bytes());
    v.push(b'.');
    v.extend_from_slice(ts.as_bytes());
    v.push(b'.');
    v.extend_from_slice(body);
    v
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
        let keys = secrets
            .iter()
            .map(|s| parse_key(scheme, s, verify_only))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            scheme,
            header,
            keys,
        })
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
                        Self::mac(a, &[b"natshook-key-check"])
                            == Self::mac(b, &[b"natshook-key-check"])
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
                // Construction admits only HMAC keys under these schemes.
                let Some(Key::Hmac(key)) = self.keys.first() else {
                    return;
                };
                let digest = hex::encode(Self::mac(key, &[body]));
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
                let mut value = String::with_capacity(self.keys.len() * 94);
                let mut content = None;
                let separate = |value: &mut String| {
                    if !value.is_empty() {
                        value.push(' ');
                    }
                };
                for key in &self.keys {
                    match key {
                        Key::Hmac(key) => {
                            separate(&mut value);
                            value.push_str("v1,");
                            let mac =
                                Self::mac(key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
                            BASE64.encode_string(mac, &mut value);
                        }
                        Key::Ed25519(key) => {
                            separate(&mut value);
                            value.push_str("v1a,");
                            let msg = content.get_or_insert_with(|| signed_content(id, &ts, body));
                            BASE64.encode_string(key.sign(msg).to_bytes(), &mut value);
                        }
                        // A verifier's public key cannot sign.
                        Key::Ed25519Public(_) => {}
                    }
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
                let mut content = None;
                for entry in sigs.split(' ').filter(|s| !s.is_empty()) {
                    if let Some(b64) = entry.strip_prefix("v1a,") {
                        let msg = content.get_or_insert_with(|| signed_content(id, ts, body));
                        if self.any_ed25519_key_verifies(msg, b64) {
                            return Ok(());
                        }
                        continue;
                    }
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

    /// RFC 8032 section 7.1, test 1: the seed and the public key it derives.
    const RFC8032_SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const RFC8032_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    fn whsk_from_seed() -> String {
        format!("whsk_{}", BASE64.encode(hex::decode(RFC8032_SEED).unwrap()))
    }

    fn whpk_of_seed() -> String {
        format!(
            "whpk_{}",
            BASE64.encode(hex::decode(RFC8032_PUBLIC).unwrap())
        )
    }

    fn verifier(secrets: &[&str]) -> Signer {
        Signer::verifier(
            Scheme::Standard,
            HeaderName::from_static("x"),
            secrets.iter().map(|s| Secret::new(s.as_bytes())).collect(),
        )
        .unwrap()
    }

    #[test]
    fn ed25519_signs_v1a_and_verifies_with_the_public_key_only() {
        let (whsk, whpk) = generate_ed25519().unwrap();
        assert_eq!(BASE64.decode(&whsk[5..]).unwrap().len(), 64);
        assert_eq!(BASE64.decode(&whpk[5..]).unwrap().len(), 32);
        assert_eq!(
            ed25519_public_key(&Secret::new(whsk.as_bytes())).unwrap(),
            whpk
        );
        let s = signer(Scheme::Standard, &[&whsk]);
        let body = br#"{"test": 2432232314}"#;
        let mut h = HeaderMap::new();
        s.sign_into("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, &mut h);
        let sig = h[WEBHOOK_SIGNATURE].to_str().unwrap();
        let b64 = sig.strip_prefix("v1a,").expect("v1a signature");
        assert_eq!(BASE64.decode(b64).unwrap().len(), 64);
        // What is signed is exactly "{id}.{timestamp}.{body}" (RFC 8032 Ed25519).
        let public =
            VerifyingKey::from_bytes(&BASE64.decode(&whpk[5..]).unwrap().try_into().unwrap())
                .unwrap();
        let raw = Signature::from_slice(&BASE64.decode(b64).unwrap()).unwrap();
        let content = [b"msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.".as_slice(), body].concat();
        assert!(public.verify_strict(&content, &raw).is_ok());
        // The receiver's side: the public key, or the secret key, verifies.
        assert_eq!(verifier(&[&whpk]).verify(body, &h), Ok(()));
        assert_eq!(s.verify(body, &h), Ok(()));
        // Tampered body, id or timestamp fail; so does another key.
        assert_eq!(
            verifier(&[&whpk]).verify(b"{}", &h),
            Err(VerifyError::Mismatch)
        );
        let mut other_ts = h.clone();
        other_ts.insert(WEBHOOK_TIMESTAMP, HeaderValue::from_static("1614265331"));
        assert_eq!(
            verifier(&[&whpk]).verify(body, &other_ts),
            Err(VerifyError::Mismatch)
        );
        let (_, other) = generate_ed25519().unwrap();
        assert_eq!(
            verifier(&[&other]).verify(body, &h),
            Err(VerifyError::Mismatch)
        );
        // A v1a signature never matches an HMAC secret and vice versa.
        assert_eq!(
            signer(Scheme::Standard, &["whsec_bmV3"]).verify(body, &h),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn whsk_takes_the_seed_or_the_key_pair_and_derives_the_rfc8032_public_key() {
        let short = whsk_from_seed();
        let pair = {
            let mut bytes = hex::decode(RFC8032_SEED).unwrap();
            bytes.extend(hex::decode(RFC8032_PUBLIC).unwrap());
            format!("whsk_{}", BASE64.encode(bytes))
        };
        for key in [&short, &pair] {
            assert_eq!(
                ed25519_public_key(&Secret::new(key.as_bytes())).unwrap(),
                whpk_of_seed()
            );
        }
        // Ed25519 is deterministic: both forms give the same signature.
        let sign = |key: &str| {
            let mut h = HeaderMap::new();
            signer(Scheme::Standard, &[key]).sign_into("id", 1, b"x", &mut h);
            h[WEBHOOK_SIGNATURE].clone()
        };
        assert_eq!(sign(&short), sign(&pair));
        assert!(signer(Scheme::Standard, &[&short]).same_keys(&signer(Scheme::Standard, &[&pair])));
    }

    #[test]
    fn rotation_mixing_hmac_and_ed25519_sends_both_signatures() {
        let (whsk, whpk) = generate_ed25519().unwrap();
        let s = signer(Scheme::Standard, &[&whsk, "whsec_b2xk"]);
        let mut h = HeaderMap::new();
        s.sign_into("id1", 10, b"{}", &mut h);
        let sigs: Vec<&str> = h[WEBHOOK_SIGNATURE].to_str().unwrap().split(' ').collect();
        assert_eq!(sigs.len(), 2);
        assert!(sigs[0].starts_with("v1a,"), "newest first: {sigs:?}");
        assert!(sigs[1].starts_with("v1,"), "{sigs:?}");
        assert_eq!(verifier(&[&whpk]).verify(b"{}", &h), Ok(()));
        assert_eq!(
            signer(Scheme::Standard, &["whsec_b2xk"]).verify(b"{}", &h),
            Ok(())
        );
        assert_eq!(
            verifier(&[&whpk]).verify(b"{ }", &h),
            Err(VerifyError::Mismatch)
        );
        // The same order in both lists: same keys; another order or key: different.
        assert!(s.same_keys(&signer(Scheme::Standard, &[&whsk, "whsec_b2xk"])));
        assert!(!s.same_keys(&signer(Scheme::Standard, &["whsec_b2xk", &whsk])));
        let (other, _) = generate_ed25519().unwrap();
        assert!(!s.same_keys(&signer(Scheme::Standard, &[&other, "whsec_b2xk"])));
    }

    #[test]
    fn ed25519_keys_in_the_wrong_place_are_refused_with_the_reason() {
        let new = |scheme, secret: &str| {
            Signer::new(
                scheme,
                HeaderName::from_static("x"),
                vec![Secret::new(secret)],
            )
            .map(drop)
            .map_err(|e| e.to_string())
        };
        assert_eq!(
            new(Scheme::Standard, &whpk_of_seed()),
            Err("whpk_ is a public key; sign with the whsk_ secret key".into())
        );
        assert_eq!(
            new(Scheme::Hex, &whpk_of_seed()),
            Err("whpk_ is a public key; sign with the whsk_ secret key".into())
        );
        assert_eq!(
            new(Scheme::Sha256, &whsk_from_seed()),
            Err(
                "whsk_ keys are Ed25519 keys for the standard scheme (v1a signatures), not sha256"
                    .into()
            )
        );
        assert!(matches!(
            Signer::verifier(
                Scheme::Hex,
                HeaderName::from_static("x"),
                vec![Secret::new(whpk_of_seed())]
            ),
            Err(SignError::NotStandard {
                prefix: "whpk_",
                ..
            })
        ));
        let bad = |secret: &str| {
            Signer::verifier(
                Scheme::Standard,
                HeaderName::from_static("x"),
                vec![Secret::new(secret)],
            )
            .map(drop)
        };
        assert!(matches!(bad("whsk_!!!"), Err(SignError::BadWhsk)));
        assert!(matches!(bad("whsk_AAAA"), Err(SignError::BadWhsk)));
        let spliced = format!("whsk_{}", BASE64.encode([7u8; 64]));
        assert!(matches!(bad(&spliced), Err(SignError::WhskMismatch)));
        assert!(matches!(bad("whpk_AAAA"), Err(SignError::BadWhpk)));
        assert!(matches!(bad("whpk_!!"), Err(SignError::BadWhpk)));
        assert!(check_signing_secret(Scheme::Standard, &Secret::new(whsk_from_seed())).is_ok());
        assert!(check_signing_secret(Scheme::Hex, &Secret::new("plain")).is_ok());
    }

    #[test]
    fn verify_fresh_refuses_timestamps_outside_the_tolerance_either_way() {
        let s = signer(Scheme::Standard, &["whsec_bmV3"]);
        let tol = TIMESTAMP_TOLERANCE;
        let mut h = HeaderMap::new();
        s.sign_into("id1", 1_000_000, b"{}", &mut h);
        assert_eq!(s.verify_fresh(b"{}", &h, 1_000_000 + 300, tol), Ok(()));
        assert_eq!(s.verify_fresh(b"{}", &h, 1_000_000 - 300, tol), Ok(()));
        assert_eq!(
            s.verify_fresh(b"{}", &h, 1_000_000 + 301, tol),
            Err(VerifyError::Stale(301, 300))
        );
        assert_eq!(
            s.verify_fresh(b"{}", &h, 1_000_000 - 301, tol),
            Err(VerifyError::Stale(301, 300))
        );
        // A fresh timestamp does not excuse a bad signature.
        assert_eq!(
            s.verify_fresh(b"{ }", &h, 1_000_000, tol),
            Err(VerifyError::Mismatch)
        );
        h.insert(WEBHOOK_TIMESTAMP, HeaderValue::from_static("soon"));
        assert!(matches!(
            s.verify_fresh(b"{}", &h, 1_000_000, tol),
            Err(VerifyError::Malformed(..))
        ));
        // hex and sha256 carry no timestamp: only the signature counts.
        let hex = signer(Scheme::Hex, &["k"]);
        let mut h = HeaderMap::new();
        hex.sign_into("id", 0, b"b", &mut h);
        assert_eq!(hex.verify_fresh(b"b", &h, u64::MAX, tol), Ok(()));
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
