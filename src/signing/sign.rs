//! Signing: the scheme's signature headers for one request body.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ed25519_dalek::Signer as _;
use http::header::{HeaderMap, HeaderValue};

use super::key::{mac, signed_content, Key};
use super::{Scheme, Signer, WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP};

impl Signer {
    /// Adds the scheme's signature headers for `body` to `headers`.
    pub fn sign_into(&self, id: &str, timestamp: u64, body: &[u8], headers: &mut HeaderMap) {
        match self.scheme {
            Scheme::Hex | Scheme::Sha256 => {
                // Construction admits only HMAC keys under these schemes.
                let Some(Key::Hmac(key)) = self.keys.first() else {
                    return;
                };
                // Written into one stack buffer: hex::encode collects a String char
                // by char, a measurable part of every request's cost.
                let prefix: &[u8] = if self.scheme == Scheme::Sha256 {
                    b"sha256="
                } else {
                    b""
                };
                let mut value = [0u8; 7 + 64];
                let end = prefix.len() + 64;
                value[..prefix.len()].copy_from_slice(prefix);
                let digest = mac(key, &[body]);
                if hex::encode_to_slice(digest, &mut value[prefix.len()..end]).is_err() {
                    return;
                }
                if let Ok(v) = HeaderValue::from_bytes(&value[..end]) {
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
                            let mac = mac(key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
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
}
