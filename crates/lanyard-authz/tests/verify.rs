//! Access-token verification, through `Authorizer::check` and `token::verify`: a token as the
//! token service mints it is allowed; a token that only expired is TOKEN_EXPIRED; every forgery,
//! misuse or malformed token is TOKEN_INVALID and never allowed. Each refused token differs from
//! an allowed control in exactly the part under test.

mod support;

use std::sync::atomic::Ordering;

use jsonwebtoken::{EncodingKey, Header};
use lanyard_authz::jose::MAX_TOKEN_LEN;
use lanyard_authz::token::{self, ACCESS_TOKEN_LEEWAY};
use lanyard_authz::{AccessClaims, AccessError, Decision};
use lanyard_core::Timestamp;
use serde_json::json;
use support::{audience, b64, now_secs, perms, Harness, Signer};

/// Checks `token` asking one permission the member has, and returns the token's decision after
/// asserting that nothing of a refusal leaks (no principal, every permission refused alike).
async fn decision(h: &Harness, token: &str) -> Decision {
    let outcome = h.authorizer.check(token, None, &perms(&["projects:read"])).await.expect("a decision");
    if outcome.token == Decision::Allowed {
        assert!(outcome.principal.is_some());
        assert_eq!(outcome.permissions, [Decision::Allowed]);
    } else {
        assert_eq!(outcome.principal, None, "a refused token carries no principal");
        assert_eq!(outcome.permissions, [outcome.token], "every permission is refused for the token's reason");
        assert!(!outcome.all_allowed());
    }
    outcome.token
}

#[tokio::test]
async fn a_token_as_minted_is_allowed_with_its_principal() {
    let h = Harness::new();
    let (m, _) = h.member(&["projects:read"]);
    let claims = m.claims();
    let token = h.signer.sign(&claims);
    let outcome = h.authorizer.check(&token, None, &perms(&["projects:read"])).await.expect("a decision");
    assert!(outcome.all_allowed(), "{outcome:?}");
    let p = outcome.principal.expect("principal");
    assert_eq!((p.user_id, p.organization_id, p.session_id), (m.user_id, m.org_id, m.session_id));
    assert_eq!((p.organization_slug.as_str(), p.membership_version), ("acme", m.mv));
    assert_eq!(p.roles.iter().map(ToString::to_string).collect::<Vec<_>>(), ["engineer"]);
    assert_eq!(p.permissions, perms(&["projects:read"]));
    assert_eq!(p.expires_at, Timestamp(i64::try_from(claims.exp).expect("exp") * 1_000_000));

    // RFC 9068's media type form of `typ` is accepted too.
    let typ = h.signer.sign_with(&json!({ "alg": "ES256", "typ": "application/at+jwt", "kid": "k1" }), &claims);
    assert_eq!(decision(&h, &typ).await, Decision::Allowed);
}

#[tokio::test]
async fn an_expired_token_is_token_expired_and_the_leeway_is_honoured() {
    let h = Harness::new();
    let (m, _) = h.member(&["projects:read"]);
    let now = now_secs();
    let leeway = ACCESS_TOKEN_LEEWAY.as_secs();
    let expired = AccessClaims { iat: now - 600, nbf: now - 600, exp: now - leeway - 60, ..m.claims() };
    assert_eq!(decision(&h, &h.signer.sign(&expired)).await, Decision::TokenExpired);
    let within_leeway = AccessClaims { iat: now - 600, nbf: now - 600, exp: now - leeway / 3, ..m.claims() };
    assert_eq!(decision(&h, &h.signer.sign(&within_leeway)).await, Decision::Allowed);
    // Expired and forged is a forgery, not an expiry.
    assert_eq!(decision(&h, &Signer::new("k1").sign(&expired)).await, Decision::TokenInvalid);
}

#[tokio::test]
async fn forged_misused_and_malformed_tokens_are_token_invalid() {
    let h = Harness::new();
    let (m, control) = h.member(&["projects:read"]);
    assert_eq!(decision(&h, &control).await, Decision::Allowed, "the control");
    let claims = m.claims();
    let kid = h.signer.kid.as_str();
    let with_header = |header: serde_json::Value| h.signer.sign_with(&header, &claims);
    let with_claims = |c: AccessClaims| h.signer.sign(&c);
    let now = now_secs();
    let hs256 = {
        let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
        header.typ = Some("at+jwt".into());
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&h.signer.public_bytes())).expect("hs256")
    };
    let unsigned = {
        let header = b64(&serde_json::to_vec(&json!({ "alg": "none", "typ": "at+jwt", "kid": kid })).unwrap());
        format!("{header}.{}.", b64(&serde_json::to_vec(&claims).unwrap()))
    };
    let tampered = {
        let escalated = AccessClaims { permissions: vec!["*".into()], ..claims.clone() };
        let mut parts: Vec<String> = control.split('.').map(str::to_owned).collect();
        parts[1] = b64(&serde_json::to_vec(&escalated).unwrap());
        parts.join(".")
    };
    let stripped = format!("{}.", control.rsplit_once('.').expect("three parts").0);
    let oversize = with_claims(AccessClaims { org_slug: "a".repeat(MAX_TOKEN_LEN), ..claims.clone() });
    assert!(oversize.len() > MAX_TOKEN_LEN);
    let large = with_claims(AccessClaims { org_slug: "a".repeat(MAX_TOKEN_LEN / 2), ..claims.clone() });
    assert_eq!(decision(&h, &large).await, Decision::Allowed, "a large token below the limit is the control");

    let cases = [
        ("signed by another key under the same kid", Signer::new(kid).sign(&claims)),
        ("signed by a key nobody published", Signer::new("k-unknown").sign(&claims)),
        ("alg none", unsigned),
        ("HS256 keyed with the public key", hs256),
        ("alg other than the key's", with_header(json!({ "alg": "ES384", "typ": "at+jwt", "kid": kid }))),
        ("typ JWT", with_header(json!({ "alg": "ES256", "typ": "JWT", "kid": kid }))),
        ("no typ", with_header(json!({ "alg": "ES256", "kid": kid }))),
        ("jku", with_header(json!({ "alg": "ES256", "typ": "at+jwt", "kid": kid, "jku": "https://evil.test/jwks" }))),
        ("x5u", with_header(json!({ "alg": "ES256", "typ": "at+jwt", "kid": kid, "x5u": "https://evil.test/cert" }))),
        (
            "jwk naming the signing key itself",
            with_header(json!({ "alg": "ES256", "typ": "at+jwt", "kid": kid, "jwk": h.signer.jwk() })),
        ),
        ("x5c", with_header(json!({ "alg": "ES256", "typ": "at+jwt", "kid": kid, "x5c": ["AAAA"] }))),
        ("crit", with_header(json!({ "alg": "ES256", "typ": "at+jwt", "kid": kid, "crit": ["exp"] }))),
        ("wrong issuer", with_claims(AccessClaims { iss: "https://evil.test".into(), ..claims.clone() })),
        ("wrong audience", with_claims(AccessClaims { aud: "someone-else".into(), ..claims.clone() })),
        ("not valid yet", with_claims(AccessClaims { nbf: now + 600, ..claims.clone() })),
        ("issued in the future", with_claims(AccessClaims { iat: now + 600, ..claims.clone() })),
        ("sub not a user id", with_claims(AccessClaims { sub: "admin".into(), ..claims.clone() })),
        ("payload changed after signing", tampered),
        ("signature stripped", stripped),
        ("longer than MAX_TOKEN_LEN", oversize),
        ("garbage", "not-a-token".into()),
        ("empty", String::new()),
        ("four segments", format!("{control}.AAAA")),
    ];
    for (what, token) in cases {
        assert_eq!(decision(&h, &token).await, Decision::TokenInvalid, "{what}");
    }
    assert_eq!(decision(&h, &control).await, Decision::Allowed, "refusals leave the control alone");
}

#[tokio::test]
async fn an_unknown_kid_asks_the_key_source_to_refresh_once_and_a_key_published_then_verifies() {
    let h = Harness::new();
    let (m, _) = h.member(&["projects:read"]);
    let rotated = Signer::new("k2");
    let token = rotated.sign(&m.claims());
    assert_eq!(decision(&h, &token).await, Decision::TokenInvalid);
    assert_eq!(h.keys.refreshes.load(Ordering::SeqCst), 1, "one refresh per unknown kid");

    h.keys.publish_at_refresh(&rotated);
    assert_eq!(decision(&h, &token).await, Decision::Allowed, "verified again after the refresh");
    assert_eq!(h.keys.refreshes.load(Ordering::SeqCst), 2);
    // Remembered: no key lookup or refresh for the same token again.
    let lookups = h.keys.lookups.load(Ordering::SeqCst);
    assert_eq!(decision(&h, &token).await, Decision::Allowed);
    assert_eq!(h.keys.lookups.load(Ordering::SeqCst), lookups);
    assert_eq!(h.keys.refreshes.load(Ordering::SeqCst), 2);
}

#[test]
fn verify_says_why_it_refused() {
    let signer = Signer::new("k1");
    let m = support::Member::new(&["projects:read"]);
    let now = Timestamp::now();
    let key = |kid: &str| (kid == "k1").then(|| signer.verifying());
    let good = signer.sign(&m.claims());
    let p = token::verify(&good, &audience(), now, key).expect("valid");
    assert_eq!((p.user_id, p.organization_id), (m.user_id, m.org_id));

    let secs = now_secs();
    let expired = AccessClaims { iat: secs - 600, nbf: secs - 600, exp: secs - 120, ..m.claims() };
    assert_eq!(token::verify(&signer.sign(&expired), &audience(), now, key), Err(AccessError::Expired));
    let unknown = Signer::new("k9").sign(&m.claims());
    assert_eq!(token::verify(&unknown, &audience(), now, key), Err(AccessError::UnknownKid("k9".into())));
    let forged = Signer::new("k1").sign(&m.claims());
    assert!(matches!(token::verify(&forged, &audience(), now, key), Err(AccessError::Invalid(_))));
}

/// `verify` checks `exp`, `nbf` and `iat` at the time it is given, not the system clock's: a
/// token is expired an hour later, and not valid yet an hour earlier.
#[test]
fn verify_checks_expiry_at_the_time_it_is_given() {
    let signer = Signer::new("k1");
    let m = support::Member::new(&["projects:read"]);
    let key = |_: &str| Some(signer.verifying());
    let token = signer.sign(&m.claims());
    let in_an_hour = Timestamp::now().plus(std::time::Duration::from_secs(3600));
    assert_eq!(token::verify(&token, &audience(), in_an_hour, key), Err(AccessError::Expired));
    let an_hour_ago = Timestamp(Timestamp::now().0 - 3_600_000_000);
    assert!(matches!(token::verify(&token, &audience(), an_hour_ago, key), Err(AccessError::Invalid(_))));
    assert!(token::verify(&token, &audience(), Timestamp::now(), key).is_ok());
}

#[tokio::test]
async fn the_high_s_twin_of_a_token_is_refused_and_never_cached() {
    let h = Harness::new();
    let (m, _) = h.member(&["projects:read"]);
    for i in 0..8 {
        let token = h.signer.sign(&AccessClaims { jti: format!("jti-{i}"), ..m.claims() });
        assert_eq!(decision(&h, &token).await, Decision::Allowed);
        let twin = h.signer.high_s_twin(&token);
        // Both signatures are valid ECDSA; only the low-S one is a Lanyard token.
        assert_eq!(decision(&h, &twin).await, Decision::TokenInvalid);
        assert!(matches!(
            token::verify(&twin, &audience(), Timestamp::now(), |_| Some(h.signer.verifying())),
            Err(AccessError::Invalid(_))
        ));
    }
    assert_eq!(h.authorizer.cached_tokens(), 8, "one cached entry per token, none for a twin");
}
