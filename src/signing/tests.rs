//! Known vectors (RFC 4231, the Standard Webhooks specification, RFC 8032), rotation
//! and refusals.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ed25519_dalek::{Signature, VerifyingKey};
use http::header::{HeaderMap, HeaderName, HeaderValue};

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
    signer(Scheme::Sha256, &["Jefe"]).sign_into("id", 0, b"what do ya want for nothing?", &mut h);
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
        VerifyingKey::from_bytes(&BASE64.decode(&whpk[5..]).unwrap().try_into().unwrap()).unwrap();
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

#[test]
fn a_whsec_secret_without_key_bytes_is_refused() {
    let r = Signer::new(
        Scheme::Standard,
        HeaderName::from_static("x"),
        vec![Secret::new("whsec_")],
    );
    assert!(matches!(r, Err(SignError::EmptyWhsec)));
}

#[test]
fn a_rotation_list_longer_than_the_cap_is_refused() {
    let many: Vec<Secret> = (0..=MAX_SECRETS)
        .map(|i| Secret::new(format!("s{i}")))
        .collect();
    let r = Signer::new(Scheme::Standard, HeaderName::from_static("x"), many);
    assert!(matches!(r, Err(SignError::TooManySecrets(n)) if n == MAX_SECRETS + 1));
}

/// A `webhook-signature` of more entries than any sender needs is refused before any
/// of them is checked; up to the cap, the right one among wrong ones verifies.
#[test]
fn a_signature_header_with_too_many_entries_is_refused_unchecked() {
    let s = signer(Scheme::Standard, &["k1", "k2"]);
    let mut h = HeaderMap::new();
    s.sign_into("id", 1, b"body", &mut h);
    let good = h["webhook-signature"].to_str().unwrap().to_string();
    let wrong = format!("v1,{}", BASE64.encode([7u8; 32]));
    let mut entries = vec![wrong.as_str(); MAX_SIGNATURES - 2];
    entries.push("v1,");
    entries.push(good.split(' ').next().unwrap());
    h.insert(
        "webhook-signature",
        HeaderValue::from_str(&entries.join(" ")).unwrap(),
    );
    assert_eq!(s.verify(b"body", &h), Ok(()));

    let mut flood = vec!["v1,"; MAX_SIGNATURES];
    flood.push(good.split(' ').next().unwrap());
    h.insert(
        "webhook-signature",
        HeaderValue::from_str(&flood.join(" ")).unwrap(),
    );
    assert!(matches!(
        s.verify(b"body", &h),
        Err(VerifyError::Malformed(_, m)) if m.contains("more than")
    ));
}

/// Each `v1a` entry is checked against each Ed25519 key, and each check hashes the
/// body anew: past 16 such checks a request is refused before any of them.
#[test]
fn v1a_entries_times_ed25519_keys_past_the_cap_are_refused_unchecked() {
    let keys: Vec<(String, String)> = (0..4).map(|_| generate_ed25519().unwrap()).collect();
    let publics: Vec<&str> = keys.iter().map(|(_, p)| p.as_str()).collect();
    let v = verifier(&publics);
    let mut h = HeaderMap::new();
    signer(Scheme::Standard, &[&keys[3].0]).sign_into("id", 1, b"body", &mut h);
    let good = h["webhook-signature"].to_str().unwrap().to_string();
    let wrong = format!("v1a,{}", BASE64.encode([7u8; 64]));
    // 4 entries × 4 keys: 16 checks, the right one last.
    let mut entries = vec![wrong.as_str(); 3];
    entries.push(good.as_str());
    h.insert(
        "webhook-signature",
        HeaderValue::from_str(&entries.join(" ")).unwrap(),
    );
    assert_eq!(v.verify(b"body", &h), Ok(()));
    // 5 × 4: refused, though the right one is there.
    entries.insert(0, wrong.as_str());
    h.insert(
        "webhook-signature",
        HeaderValue::from_str(&entries.join(" ")).unwrap(),
    );
    assert!(matches!(
        v.verify(b"body", &h),
        Err(VerifyError::Malformed(_, m)) if m.contains("5 v1a signatures against 4 keys")
    ));
    // HMAC entries do not count: each HMAC key hashes the body once.
    let mut mixed = vec!["v1,"; MAX_SIGNATURES - 4];
    mixed.extend(entries[1..].iter().copied());
    h.insert(
        "webhook-signature",
        HeaderValue::from_str(&mixed.join(" ")).unwrap(),
    );
    assert_eq!(v.verify(b"body", &h), Ok(()));
}

#[test]
fn during_a_rotation_grace_one_signature_schemes_sign_with_the_old_secret() {
    let body = b"{}";
    for scheme in [Scheme::Hex, Scheme::Sha256] {
        let mut h = HeaderMap::new();
        signer(scheme, &["new", "old"])
            .during_rotation_grace()
            .sign_into("id", 0, body, &mut h);
        assert!(signer(scheme, &["old"]).verify(body, &h).is_ok());
        assert!(signer(scheme, &["new"]).verify(body, &h).is_err());
    }
    // `standard` carries both signatures, newest first, grace or not.
    let s = signer(Scheme::Standard, &["whsec_bmV3", "whsec_b2xk"]);
    let (mut plain, mut grace) = (HeaderMap::new(), HeaderMap::new());
    s.sign_into("id", 7, body, &mut plain);
    s.clone()
        .during_rotation_grace()
        .sign_into("id", 7, body, &mut grace);
    assert_eq!(plain["webhook-signature"], grace["webhook-signature"]);
}
