//! The signature check of `token::verify`, which goes through ring, against outside references:
//! RustCrypto's p256 (what jsonwebtoken verified with before) agrees with it on every signature,
//! a token either signer wrote verifies with the other, and each way an attacker could bend a
//! signature, an algorithm or a key is refused with the same error as before.

mod support;

use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use lanyard_authz::token::{self, ACCESS_TOKEN_LEEWAY};
use lanyard_authz::{AccessClaims, AccessError, VerifyingKey};
use lanyard_core::Timestamp;
use p256::ecdsa::signature::{Signer as EcdsaSigner, Verifier as _};
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::EncodePrivateKey;
use serde_json::json;
use support::{audience, b64, now_secs, Member, Signer};

fn is_invalid(verdict: Result<lanyard_authz::Principal, AccessError>) -> bool {
    matches!(verdict, Err(AccessError::Invalid(_)))
}

/// `token` with its signature part replaced by `signature` (raw bytes, base64url).
fn resigned(token: &str, signature: &[u8]) -> String {
    format!("{}.{}", token.rsplit_once('.').expect("a JWS").0, b64(signature))
}

fn signature_of(token: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(token.rsplit_once('.').expect("a JWS").1).expect("base64url")
}

/// The jsonwebtoken validation `token::verify` used before it verified through ring.
fn old_validation() -> Validation {
    let mut validation = Validation::new(Algorithm::ES256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.set_issuer(&[support::ISSUER]);
    validation.set_audience(&[support::AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    validation
}

/// ring and RustCrypto agree on what an ES256 signature is: both forms of a valid signature (ring,
/// like p256, accepts a high S; the low-S rule is ours), and no altered one.
#[test]
fn ring_and_p256_agree_on_every_signature() {
    let key = SigningKey::random(&mut rand::rngs::OsRng);
    let point = key.verifying_key().to_encoded_point(false);
    let (x, y) = (b64(point.x().expect("x")), b64(point.y().expect("y")));
    let ours =
        VerifyingKey { algorithm: Algorithm::ES256, key: Arc::new(DecodingKey::from_ec_components(&x, &y).unwrap()) };
    let stranger = SigningKey::random(&mut rand::rngs::OsRng);
    for i in 0..64u32 {
        let message = format!("message {i}");
        let signature: Signature = key.sign(message.as_bytes());
        let (r, s) = signature.split_scalars();
        let twin = Signature::from_scalars(r, -*s).expect("n - s");
        let mut flipped = signature.to_bytes();
        flipped[usize::try_from(i).unwrap() % 64] ^= 1;
        let foreign: Signature = stranger.sign(message.as_bytes());
        for (what, bytes) in [
            ("signature", signature.to_bytes().to_vec()),
            ("its twin", twin.to_bytes().to_vec()),
            ("a flipped bit", flipped.to_vec()),
            ("another key's", foreign.to_bytes().to_vec()),
            ("another message's", EcdsaSigner::<Signature>::sign(&key, b"other").to_bytes().to_vec()),
        ] {
            let p256 =
                Signature::from_slice(&bytes).is_ok_and(|s| key.verifying_key().verify(message.as_bytes(), &s).is_ok());
            assert_eq!(ours.verifies(message.as_bytes(), &bytes), p256, "{what} of message {i}");
        }
    }
}

/// A token signed the old way (jsonwebtoken with RustCrypto, made low-S) verifies through ring, and
/// one verified through ring also passes the old verification, with the same principal.
#[test]
fn tokens_cross_verify_between_the_old_and_new_paths() {
    let key = SigningKey::random(&mut rand::rngs::OsRng);
    let point = key.verifying_key().to_encoded_point(false);
    let decoding = DecodingKey::from_ec_components(&b64(point.x().unwrap()), &b64(point.y().unwrap())).unwrap();
    let verifying = VerifyingKey { algorithm: Algorithm::ES256, key: Arc::new(decoding.clone()) };
    let encoding = EncodingKey::from_ec_der(key.to_pkcs8_der().unwrap().as_bytes());
    let mut header = Header::new(Algorithm::ES256);
    header.typ = Some("at+jwt".into());
    header.kid = Some("k1".into());
    let m = Member::new(&["projects:read"]);
    for i in 0..16 {
        let claims = AccessClaims { jti: format!("jti-{i}"), ..m.claims() };
        let old = jsonwebtoken::encode(&header, &claims, &encoding).unwrap();
        let old = lanyard_authz::jose::es256_low_s(&old).unwrap();
        let p =
            token::verify(&old, &audience(), Timestamp::now(), |_| Some(verifying.clone())).expect("new verifies old");
        assert_eq!((p.user_id, p.session_id), (m.user_id, m.session_id));
        let decoded =
            jsonwebtoken::decode::<AccessClaims>(&old, &decoding, &old_validation()).expect("old verifies old");
        assert_eq!(decoded.claims, claims);
    }

    // What ring signs (as the token service now does), both verifiers accept.
    let signer = Signer::new("k1");
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        pkcs8.as_ref(),
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    use ring::signature::KeyPair as _;
    let public = pair.public_key().as_ref();
    let decoding = DecodingKey::from_ec_components(&b64(&public[1..33]), &b64(&public[33..])).unwrap();
    let verifying = VerifyingKey { algorithm: Algorithm::ES256, key: Arc::new(decoding.clone()) };
    for i in 0..16 {
        let claims = AccessClaims { jti: format!("jti-{i}"), ..m.claims() };
        let signed = format!(
            "{}.{}",
            b64(&serde_json::to_vec(&signer.header()).unwrap()),
            b64(&serde_json::to_vec(&claims).unwrap())
        );
        let raw = pair.sign(&ring::rand::SystemRandom::new(), signed.as_bytes()).unwrap();
        let token = lanyard_authz::jose::es256_low_s(&format!("{signed}.{}", b64(raw.as_ref()))).unwrap();
        assert!(token::verify(&token, &audience(), Timestamp::now(), |_| Some(verifying.clone())).is_ok());
        let decoded =
            jsonwebtoken::decode::<AccessClaims>(&token, &decoding, &old_validation()).expect("old verifies new");
        assert_eq!(decoded.claims, claims);
    }
}

/// Every altered signature is `Invalid`: the high-S twin (valid ECDSA, not a Lanyard token: one
/// token, one text, so the verified-token cache and replay lists see it once), a flipped bit,
/// truncated or extended bytes, zero or out-of-range scalars, and other base64 spellings.
#[test]
fn altered_signatures_are_refused() {
    let signer = Signer::new("k1");
    let key = |_: &str| Some(signer.verifying());
    let control = signer.sign(&Member::new(&["projects:read"]).claims());
    assert!(token::verify(&control, &audience(), Timestamp::now(), key).is_ok(), "the control");
    let good = signature_of(&control);
    let flip = |i: usize| {
        let mut s = good.clone();
        s[i] ^= 0x80;
        s
    };
    // The group order n: a scalar of n or above is out of range.
    let n = hex_bytes("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
    let (input, _) = control.rsplit_once('.').unwrap();
    let cases: Vec<(&str, String)> = vec![
        ("high-S twin", signer.high_s_twin(&control)),
        ("a bit of r flipped", resigned(&control, &flip(3))),
        ("a bit of s flipped", resigned(&control, &flip(40))),
        ("63 bytes", resigned(&control, &good[..63])),
        ("65 bytes", resigned(&control, &[good.as_slice(), &[0]].concat())),
        ("128 bytes", resigned(&control, &[good.as_slice(), good.as_slice()].concat())),
        ("empty", resigned(&control, &[])),
        ("all zero", resigned(&control, &[0; 64])),
        ("r = 0", resigned(&control, &[&[0; 32], &good[32..]].concat())),
        ("s = 0", resigned(&control, &[&good[..32], &[0; 32][..]].concat())),
        ("r = n", resigned(&control, &[n.as_slice(), &good[32..]].concat())),
        ("s = n", resigned(&control, &[&good[..32], n.as_slice()].concat())),
        ("DER-encoded", resigned(&control, &der_signature(&good))),
        ("padded base64url", format!("{input}.{}", URL_SAFE.encode(&good))),
        ("standard base64", format!("{input}.{}", STANDARD.encode(&good))),
    ];
    for (what, token) in cases {
        assert_ne!(token, control, "{what}");
        assert!(is_invalid(token::verify(&token, &audience(), Timestamp::now(), key)), "{what}");
    }
}

/// No token can choose how it is checked: `alg` must be the published key's, and a key verifies
/// only under its own algorithm, whatever it was labelled.
#[test]
fn algorithm_and_key_confusion_are_refused() {
    let signer = Signer::new("k1");
    let claims = Member::new(&["projects:read"]).claims();
    let with_header = |alg: &str| signer.sign_with(&json!({ "alg": alg, "typ": "at+jwt", "kid": "k1" }), &claims);
    let ec = |_: &str| Some(signer.verifying());
    let now = Timestamp::now();

    let hs256 = {
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some("at+jwt".into());
        header.kid = Some("k1".into());
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&signer.public_bytes())).unwrap()
    };
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"at+jwt","kid":"k1"}"#),
        b64(&serde_json::to_vec(&claims).unwrap())
    );
    for (what, token) in [
        ("alg none", none),
        ("HS256 keyed with the public key", hs256.clone()),
        ("RS256 header on the EC key", with_header("RS256")),
        ("EdDSA header on the EC key", with_header("EdDSA")),
        ("ES384 header on the EC key", with_header("ES384")),
        ("PS256 header on the EC key", with_header("PS256")),
    ] {
        assert!(is_invalid(token::verify(&token, &audience(), now, ec)), "{what}");
    }

    // Keys whose label and material disagree verify nothing, even a token signed with the material.
    let es256 = signer.sign(&claims);
    let point =
        DecodingKey::from_ec_components(signer.jwk()["x"].as_str().unwrap(), signer.jwk()["y"].as_str().unwrap())
            .unwrap();
    let mislabelled = [
        (
            "an HMAC secret labelled ES256",
            Algorithm::ES256,
            DecodingKey::from_secret(&signer.public_bytes()),
            es256.clone(),
        ),
        ("an EC point labelled RS256", Algorithm::RS256, point.clone(), with_header("RS256")),
        ("an EC point labelled EdDSA", Algorithm::EdDSA, point.clone(), with_header("EdDSA")),
        ("an EC point labelled HS256", Algorithm::HS256, point, hs256),
    ];
    for (what, algorithm, key, token) in mislabelled {
        let key = VerifyingKey { algorithm, key: Arc::new(key) };
        assert!(!key.verifies(b"anything", &signature_of(&es256)), "{what}");
        assert!(is_invalid(token::verify(&token, &audience(), now, |_| Some(key.clone()))), "{what}");
    }
}

/// The header's `kid` chooses the key and nothing else does: a token signed by one published key
/// but naming another kid is a forgery, and one naming no published kid is `UnknownKid`.
#[test]
fn a_kid_verifies_only_its_own_key() {
    let (k1, k2) = (Signer::new("k1"), Signer::new("k2"));
    let claims = Member::new(&["projects:read"]).claims();
    let published = |kid: &str| match kid {
        "k1" => Some(k1.verifying()),
        "k2" => Some(k2.verifying()),
        _ => None,
    };
    let now = Timestamp::now();
    assert!(token::verify(&k1.sign(&claims), &audience(), now, published).is_ok());
    assert!(token::verify(&k2.sign(&claims), &audience(), now, published).is_ok());
    let k1_as_k2 = k1.sign_with(&json!({ "alg": "ES256", "typ": "at+jwt", "kid": "k2" }), &claims);
    assert!(is_invalid(token::verify(&k1_as_k2, &audience(), now, published)));
    let k1_as_k3 = k1.sign_with(&json!({ "alg": "ES256", "typ": "at+jwt", "kid": "k3" }), &claims);
    assert_eq!(token::verify(&k1_as_k3, &audience(), now, published), Err(AccessError::UnknownKid("k3".into())));
}

/// The claims rules, as jsonwebtoken's validation and ours applied them: the same variant for each,
/// checked after the signature (an expired forgery is a forgery) and in the same order (an expired
/// token for someone else is invalid, not expired).
#[test]
fn claims_are_refused_with_the_same_variants() {
    let signer = Signer::new("k1");
    let key = |_: &str| Some(signer.verifying());
    let m = Member::new(&["projects:read"]);
    let now = now_secs();
    let leeway = ACCESS_TOKEN_LEEWAY.as_secs();
    let at = Timestamp::now();
    let verify = |claims: AccessClaims| token::verify(&signer.sign(&claims), &audience(), at, key);
    let expired = AccessClaims { iat: now - 900, nbf: now - 900, exp: now - leeway - 10, ..m.claims() };
    assert_eq!(verify(expired.clone()), Err(AccessError::Expired));
    assert!(verify(AccessClaims { exp: now - leeway + 10, ..expired.clone() }).is_ok(), "within the leeway");
    assert!(verify(AccessClaims { nbf: now + leeway - 10, ..m.claims() }).is_ok(), "within the leeway");
    for (what, claims) in [
        ("not valid yet", AccessClaims { nbf: now + leeway + 10, ..m.claims() }),
        ("issued in the future", AccessClaims { iat: now + leeway + 10, ..m.claims() }),
        ("wrong issuer", AccessClaims { iss: format!("{}/", support::ISSUER), ..m.claims() }),
        ("wrong audience", AccessClaims { aud: "someone-else".into(), ..m.claims() }),
        ("expired and for another issuer", AccessClaims { iss: "https://evil.test".into(), ..expired.clone() }),
        ("expired and for another audience", AccessClaims { aud: "x".into(), ..expired.clone() }),
    ] {
        assert!(is_invalid(verify(claims)), "{what}");
    }
    let forged_expired = Signer::new("k1").sign(&expired);
    assert!(is_invalid(token::verify(&forged_expired, &audience(), at, key)), "an expired forgery");
    for (what, payload) in [
        ("aud as an array", json!({ "aud": [support::AUDIENCE] })),
        ("exp as a string", json!({ "exp": "4000000000" })),
        ("no sub", json!({ "sub": null })),
        ("an unknown claim", json!({ "admin": true })),
    ] {
        let mut claims = serde_json::to_value(m.claims()).unwrap();
        for (k, v) in payload.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        let token = signer.sign_with(&signer.header(), &claims);
        assert!(is_invalid(token::verify(&token, &audience(), at, key)), "{what}");
    }
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
}

/// The ASN.1 DER form of `r || s` (what some libraries emit for JWS by mistake).
fn der_signature(fixed: &[u8]) -> Vec<u8> {
    Signature::from_slice(fixed).unwrap().to_der().as_bytes().to_vec()
}
