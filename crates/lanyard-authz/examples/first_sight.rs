//! What the first sight of an access token costs, beside its baselines measured in the same run:
//! the bare ES256 verification by RustCrypto's p256 and by ring (a key parsed once, one message),
//! jsonwebtoken's `decode` with RustCrypto as `token::verify` called it before it moved to ring,
//! and `lanyard_authz::token::verify` itself. Each is timed call by call, interleaved, for
//! several rounds; medians per round.
//!
//! `cargo run --release -p lanyard-authz --example first_sight [-- ROUNDS CALLS]`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use lanyard_authz::token::{self, AccessClaims, Audience, VerifyingKey};
use lanyard_core::{ConnectionId, OrganizationId, SessionId, Timestamp, UserId};
use p256::ecdsa::signature::{Signer as _, Verifier as _};

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().expect("ROUNDS CALLS are numbers"));
    let rounds = args.next().unwrap_or(3);
    let calls = args.next().unwrap_or(5_000);

    let signing = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
    let point = signing.verifying_key().to_encoded_point(false);
    let (x, y) = (URL_SAFE_NO_PAD.encode(point.x().expect("x")), URL_SAFE_NO_PAD.encode(point.y().expect("y")));
    let decoding = Arc::new(DecodingKey::from_ec_components(&x, &y).expect("the key"));
    let key = VerifyingKey { algorithm: Algorithm::ES256, key: decoding.clone() };
    let audience = Audience { issuer: "https://auth.lanyard.test".into(), audience: "lanyard".into() };
    let now = Timestamp::now();
    let iat = u64::try_from(now.0 / 1_000_000).expect("after 1970");
    // A token as the token service mints it (the benchmark's members hold one permission set).
    let claims = AccessClaims {
        iss: audience.issuer.clone(),
        aud: audience.audience.clone(),
        sub: UserId::new().to_string(),
        exp: iat + 900,
        iat,
        nbf: iat,
        jti: uuid::Uuid::now_v7().to_string(),
        sid: SessionId::new().to_string(),
        org_id: OrganizationId::new().to_string(),
        org_slug: "bench-org".into(),
        roles: vec!["member".into()],
        permissions: vec!["members:read".into(), "organization:read".into()],
        mv: 1,
        idp: Some(ConnectionId::new().to_string()),
    };
    let header = serde_json::json!({ "alg": "ES256", "typ": "at+jwt", "kid": "k1" });
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).expect("header")),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims"))
    );
    let signature: p256::ecdsa::Signature = signing.sign(signed.as_bytes());
    let signature = signature.normalize_s().unwrap_or(signature);
    let token = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()));
    let raw_signature = signature.to_bytes();

    let p256_key = p256::ecdsa::VerifyingKey::from_sec1_bytes(point.as_bytes()).expect("the key");
    let ring_point = point.as_bytes().to_vec();
    let mut validation = Validation::new(Algorithm::ES256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.set_issuer(&[&audience.issuer]);
    validation.set_audience(&[&audience.audience]);
    validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);

    type Case<'a> = (&'static str, Box<dyn Fn() -> bool + 'a>);
    let cases: Vec<Case> = vec![
        (
            "bare p256 (RustCrypto) ES256 verify",
            Box::new(|| p256_key.verify(black_box(signed.as_bytes()), black_box(&signature)).is_ok()),
        ),
        (
            "bare ring ES256 verify",
            Box::new(|| {
                ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &ring_point)
                    .verify(black_box(signed.as_bytes()), black_box(&raw_signature))
                    .is_ok()
            }),
        ),
        (
            "before: jsonwebtoken decode (rust_crypto)",
            Box::new(|| jsonwebtoken::decode::<AccessClaims>(black_box(&token), &decoding, &validation).is_ok()),
        ),
        (
            "lanyard_authz::token::verify",
            Box::new(|| token::verify(black_box(&token), &audience, now, |_| Some(key.clone())).is_ok()),
        ),
    ];
    for (name, case) in &cases {
        assert!(case(), "{name} accepts the token");
    }

    println!("first sight of an ES256 access token, {calls} calls per case per round, interleaved");
    let mut medians = vec![Vec::new(); cases.len()];
    for round in 1..=rounds {
        let mut samples = vec![Vec::with_capacity(calls); cases.len()];
        for _ in 0..calls {
            for ((_, case), times) in cases.iter().zip(&mut samples) {
                let started = Instant::now();
                let ok = case();
                times.push(started.elapsed().as_nanos());
                assert!(ok);
            }
        }
        for ((name, _), (times, medians)) in cases.iter().zip(samples.iter_mut().zip(&mut medians)) {
            times.sort_unstable();
            let median = times[times.len() / 2] as f64 / 1000.0;
            let p99 = times[times.len() * 99 / 100] as f64 / 1000.0;
            println!("  round {round}  {name:<44} p50 {median:>8.1} µs  p99 {p99:>8.1} µs");
            medians.push(median);
        }
        let m: Vec<f64> = medians.iter().map(|v| *v.last().expect("a median")).collect();
        println!(
            "  round {round}  token::verify / bare ring {:.2}x, / bare p256 {:.2}x, / before {:.2}x",
            m[3] / m[1],
            m[3] / m[0],
            m[3] / m[2]
        );
    }
}
