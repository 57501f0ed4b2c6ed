//! The keys a secret stands for: an HMAC key (`hex`, `sha256`, `whsec_` and plain secrets
//! under `standard`), an Ed25519 secret key (`whsk_`) or, for a verifier, an Ed25519
//! public key (`whpk_`).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ed25519_dalek::{SigningKey, VerifyingKey};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{Scheme, SignError};
use crate::secret::Secret;

pub(super) type HmacSha256 = Hmac<Sha256>;

/// One key of an endpoint's rotation list.
#[derive(Clone)]
pub(super) enum Key {
    /// HMAC-SHA256: every `hex`/`sha256` secret, and `whsec_`/plain under `standard` (`v1`).
    Hmac(HmacSha256),
    /// A `whsk_` secret key: signs `v1a`, verifies with its own public key.
    Ed25519(SigningKey),
    /// A `whpk_` public key (only from [`crate::signing::Signer::verifier`]): verifies `v1a`, never signs.
    Ed25519Public(VerifyingKey),
}

/// The HMAC key for a secret under `scheme`: Standard Webhooks `whsec_` secrets are
/// base64 of the key bytes; everything else is used as written.
fn key_bytes(scheme: Scheme, secret: &Secret) -> Result<Vec<u8>, SignError> {
    let raw = secret.expose();
    match (scheme, raw.strip_prefix(b"whsec_")) {
        (Scheme::Standard, Some(b64)) => match BASE64.decode(b64) {
            // An empty key is one anyone can sign with.
            Ok(key) if key.is_empty() => Err(SignError::EmptyWhsec),
            Ok(key) => Ok(key),
            Err(_) => Err(SignError::BadWhsec),
        },
        _ => Ok(raw.to_vec()),
    }
}

/// The key a secret stands for under `scheme`. A `whpk_` public key is accepted only
/// when `verify_only`, since a signer holding one could not sign.
pub(super) fn parse_key(
    scheme: Scheme,
    secret: &Secret,
    verify_only: bool,
) -> Result<Key, SignError> {
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

/// `{id}.{timestamp}.{body}`, the content Standard Webhooks signs. Ed25519 needs it in
/// one piece (the HMAC keys hash the parts instead).
pub(super) fn signed_content(id: &str, ts: &str, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(id.len() + ts.len() + body.len() + 2);
    v.extend_from_slice(id.as_bytes());
    v.push(b'.');
    v.extend_from_slice(ts.as_bytes());
    v.push(b'.');
    v.extend_from_slice(body);
    v
}

/// The key's MAC state after hashing the parts; the key schedule was computed when the
/// key was built, so this costs only the hash.
pub(super) fn hashed(key: &HmacSha256, parts: &[&[u8]]) -> HmacSha256 {
    let mut mac = key.clone();
    for p in parts {
        mac.update(p);
    }
    mac
}

/// HMAC-SHA256 of the parts.
pub(super) fn mac(key: &HmacSha256, parts: &[&[u8]]) -> [u8; 32] {
    hashed(key, parts).finalize().into_bytes().into()
}
