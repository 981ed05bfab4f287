//! Access-token verification on arbitrary text against a real ES256 key whose private half is not
//! here: never a panic, and never a principal (the fuzzer cannot sign, so anything accepted would
//! be a forgery getting through).
#![no_main]

use std::sync::{Arc, OnceLock};

use jsonwebtoken::{Algorithm, DecodingKey};
use lanyard_authz::token::verify;
use lanyard_authz::{Audience, VerifyingKey};
use lanyard_core::Timestamp;
use libfuzzer_sys::fuzz_target;

const PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEzphgB7a7oJEg4lJBFJSTzqtg4Eo7
7hRYSxVg5pUIv59c8/F2+FWOZs2JR18NPxKbqF/u9z4Z8kHTvoC48i7aUQ==
-----END PUBLIC KEY-----";

fn key() -> VerifyingKey {
    static KEY: OnceLock<VerifyingKey> = OnceLock::new();
    KEY.get_or_init(|| VerifyingKey {
        algorithm: Algorithm::ES256,
        key: Arc::new(DecodingKey::from_ec_pem(PUBLIC_KEY.as_bytes()).expect("the public key")),
    })
    .clone()
}

fuzz_target!(|token: &str| {
    let expected = Audience { issuer: "https://lanyard.test".into(), audience: "lanyard".into() };
    let verdict = verify(token, &expected, Timestamp(1_800_000_000_000_000), |_| Some(key()));
    assert!(verdict.is_err(), "a token nobody signed was accepted: {token:?}");
});
