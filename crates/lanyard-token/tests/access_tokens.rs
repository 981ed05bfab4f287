//! Lanyard's own access tokens: the verifier the services use refuses `alg: none`, HS256 keyed with
//! our public key, a correct `kid` with another key, `jku`/`x5u`/`jwk` and `crit` headers, a wrong
//! `typ` (an ID token or a refresh token is not an access token), expired, not yet valid or
//! far-future tokens, and a wrong `iss` or `aud`; keys rotate with the old key published until its
//! tokens expire; JWKS is served over gRPC and HTTP with cache headers.

mod support;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use lanyard_core::{OrganizationId, Timestamp};
use lanyard_proto::tenancy::v1 as tpb;
use lanyard_proto::token::v1 as pb;
use lanyard_token::keys::{generate, KeyState, LoadedKey, SigningAlgorithm};
use serde_json::{json, Value};
use support::idp::{sign_raw, unsigned, FakeIdp, Kind};
use support::*;
use tonic::Code;

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

async fn access_token_attacks(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let google = FakeIdp::start(Kind::Google, "acme.com").await;
    let acme = app.create_org("acme", &["acme.com"], "it@acme.com").await;
    app.connect(&acme, &google).await;
    let id_token = google.id_token("g-it", "it@acme.com");
    let signed_in = app.sign_in(&id_token, &acme).await.expect("sign in");
    let access = signed_in.access_token.clone();

    // The genuine token works as a caller of tenancy.
    let get_org = |token: String| {
        let mut tenancy = app.tenancy.clone();
        let acme = acme.clone();
        async move {
            tenancy
                .get_organization(with_key(
                    tpb::GetOrganizationRequest { key: Some(tpb::get_organization_request::Key::OrganizationId(acme)) },
                    &token,
                ))
                .await
        }
    };
    get_org(access.clone()).await.expect("the access token is a caller");

    let active = app.parts.keys.ring().active().expect("an active key");
    let kid = active.kid.clone();
    let real = active.encoding().clone();
    let good = claims_of(&access);
    let header = json!({"alg": "ES256", "kid": kid, "typ": "at+jwt"});
    let jwks = app.tokens.clone().get_jwks(pb::GetJwksRequest {}).await.unwrap().into_inner();
    let our_jwk = jwks.keys.iter().find(|k| k.kid == kid).expect("the active key is published");
    let other = LoadedKey::load(
        kid.clone(),
        SigningAlgorithm::Es256,
        KeyState::Active,
        Timestamp(0),
        None,
        &generate(SigningAlgorithm::Es256).unwrap(),
    )
    .unwrap();
    let now = Timestamp::now().0 / 1_000_000;
    let forged: Vec<(&str, String)> = vec![
        ("alg none", unsigned(&json!({"alg": "none", "kid": kid, "typ": "at+jwt"}), &good)),
        (
            "HS256 keyed with our JWKS",
            sign_raw(
                &json!({"alg": "HS256", "kid": kid, "typ": "at+jwt"}),
                &good,
                &EncodingKey::from_secret(jwks.jwks_json.as_bytes()),
                Algorithm::HS256,
            ),
        ),
        (
            "HS256 keyed with our public x coordinate",
            sign_raw(
                &json!({"alg": "HS256", "kid": kid, "typ": "at+jwt"}),
                &good,
                &EncodingKey::from_secret(our_jwk.x.as_bytes()),
                Algorithm::HS256,
            ),
        ),
        ("correct kid, another key", sign_raw(&header, &good, other.encoding(), Algorithm::ES256)),
        (
            "unknown kid",
            sign_raw(&json!({"alg": "ES256", "kid": "nope", "typ": "at+jwt"}), &good, &real, Algorithm::ES256),
        ),
        (
            "jku header",
            sign_raw(
                &json!({"alg": "ES256", "kid": kid, "typ": "at+jwt", "jku": "http://127.0.0.1:1/keys"}),
                &good,
                &real,
                Algorithm::ES256,
            ),
        ),
        (
            "x5u header",
            sign_raw(
                &json!({"alg": "ES256", "kid": kid, "typ": "at+jwt", "x5u": "http://127.0.0.1:1/c"}),
                &good,
                &real,
                Algorithm::ES256,
            ),
        ),
        (
            "jwk header",
            sign_raw(
                &json!({"alg": "ES256", "kid": kid, "typ": "at+jwt", "jwk": other.jwk}),
                &good,
                other.encoding(),
                Algorithm::ES256,
            ),
        ),
        (
            "crit header",
            sign_raw(
                &json!({"alg": "ES256", "kid": kid, "typ": "at+jwt", "crit": ["mv"]}),
                &good,
                &real,
                Algorithm::ES256,
            ),
        ),
        ("typ JWT", sign_raw(&json!({"alg": "ES256", "kid": kid, "typ": "JWT"}), &good, &real, Algorithm::ES256)),
        ("no typ", sign_raw(&json!({"alg": "ES256", "kid": kid}), &good, &real, Algorithm::ES256)),
        ("an ID token", id_token.clone()),
        ("a refresh token", signed_in.refresh_token.clone()),
        (
            "expired",
            sign_raw(
                &header,
                &with(with(good.clone(), "exp", json!(now - 600)), "iat", json!(now - 900)),
                &real,
                Algorithm::ES256,
            ),
        ),
        ("not yet valid", sign_raw(&header, &with(good.clone(), "nbf", json!(now + 600)), &real, Algorithm::ES256)),
        ("far-future iat", sign_raw(&header, &with(good.clone(), "iat", json!(now + 600)), &real, Algorithm::ES256)),
        (
            "iss with a trailing slash",
            sign_raw(&header, &with(good.clone(), "iss", json!(format!("{ISSUER}/"))), &real, Algorithm::ES256),
        ),
        ("another aud", sign_raw(&header, &with(good.clone(), "aud", json!("someone-else")), &real, Algorithm::ES256)),
        ("an extra claim", sign_raw(&header, &with(good.clone(), "admin", json!(true)), &real, Algorithm::ES256)),
        (
            "a bad org_id",
            sign_raw(&header, &with(good.clone(), "org_id", json!("not-a-uuid")), &real, Algorithm::ES256),
        ),
    ];
    for (what, token) in forged {
        assert!(app.parts.access_tokens.verify(&token, Timestamp::now()).is_err(), "{what}: verified");
        let status = get_org(token).await.expect_err(what);
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    }

    // Rotation: the old key's tokens stay valid while it is published; new tokens use the next key.
    // Publish before sign: the next key was published moments ago, less than consumers cache it.
    let err = app.tokens.clone().rotate_signing_key(op(pb::RotateSigningKeyRequest::default())).await.unwrap_err();
    assert_status(&err, Code::FailedPrecondition, "SIGNING_KEY_NOT_PUBLISHED");
    assert_eq!(app.parts.keys.ring().active().unwrap().kid, kid, "nothing changed");
    let rotated = app
        .tokens
        .clone()
        .rotate_signing_key(op(pb::RotateSigningKeyRequest { force: true, ..Default::default() }))
        .await
        .expect("rotate")
        .into_inner()
        .key
        .unwrap();
    assert_eq!(rotated.state, pb::SigningKeyState::Next as i32);
    get_org(access.clone()).await.expect("the old key's token is still valid");
    let refreshed = app.refresh(&signed_in.refresh_token, None).await.expect("refresh after rotation");
    let new_kid = jsonwebtoken::decode_header(&refreshed.access_token).unwrap().kid.unwrap();
    assert_ne!(new_kid, kid, "the promoted key signs");
    let published: Vec<String> = app
        .tokens
        .clone()
        .get_jwks(pb::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert!(published.contains(&kid) && published.contains(&new_kid) && published.contains(&rotated.kid));
    // Once every token it signed has expired, the old key leaves the key set and verifies nothing.
    let later = Timestamp::now().plus(Duration::from_secs(5 * 60 + 31));
    assert!(app.parts.keys.ring().published(&kid, later).is_none());
    assert!(!app.parts.keys.ring().jwks(later).iter().any(|k| k.kid == kid));
    assert!(app.parts.keys.ring().published(&new_kid, later).is_some());

    // Only an operator rotates.
    let err = app
        .tokens
        .clone()
        .rotate_signing_key(with_key(pb::RotateSigningKeyRequest::default(), &refreshed.access_token))
        .await
        .unwrap_err();
    assert_status(&err, Code::PermissionDenied, "OPERATOR_ONLY");
    let err = app.tokens.clone().rotate_signing_key(pb::RotateSigningKeyRequest::default()).await.unwrap_err();
    assert_status(&err, Code::Unauthenticated, "CREDENTIALS_MISSING");
    app.stop().await;
}

backend_tests!(forged_access_tokens_are_refused => access_token_attacks);

async fn jwks_everywhere(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let grpc = app.tokens.clone().get_jwks(pb::GetJwksRequest {}).await.expect("GetJwks").into_inner();
    assert_eq!(grpc.keys.len(), 2, "the active key and the next one");
    assert!(grpc.keys.iter().all(|k| k.kty == "EC" && k.alg == "ES256" && k.crv == "P-256" && k.r#use == "sig"));

    let http = reqwest::Client::new();
    let resp = http.get(format!("http://{}/.well-known/jwks.json", app.http_addr)).send().await.expect("GET jwks");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "public, max-age=300");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body, serde_json::from_str::<Value>(&grpc.jwks_json).unwrap());
    let kids: Vec<&str> = body["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert_eq!(kids.len(), 2);
    assert!(body["keys"][0].get("d").is_none(), "no private parts");

    let resp = http
        .get(format!("http://{}/.well-known/openid-configuration", app.http_addr))
        .send()
        .await
        .expect("GET openid-configuration");
    assert!(resp.headers().contains_key("cache-control"));
    let doc: Value = resp.json().await.unwrap();
    assert_eq!(doc["issuer"], ISSUER);
    assert_eq!(doc["jwks_uri"], format!("{ISSUER}/.well-known/jwks.json"));
    assert_eq!(doc["id_token_signing_alg_values_supported"], json!(["ES256"]));

    // A selectable algorithm: the next key may be EdDSA or RS256.
    for (alg, kty) in [(pb::SigningAlgorithm::Eddsa, "OKP"), (pb::SigningAlgorithm::Rs256, "RSA")] {
        let key = app
            .tokens
            .clone()
            .rotate_signing_key(op(pb::RotateSigningKeyRequest {
                algorithm: alg as i32,
                force: true,
                ..Default::default()
            }))
            .await
            .expect("rotate")
            .into_inner()
            .key
            .unwrap();
        assert_eq!(key.algorithm, alg as i32);
        let jwks = app.tokens.clone().get_jwks(pb::GetJwksRequest {}).await.unwrap().into_inner();
        assert_eq!(jwks.keys.iter().find(|k| k.kid == key.kid).unwrap().kty, kty);
    }
    app.stop().await;
}

backend_tests!(jwks_over_grpc_and_http => jwks_everywhere);

/// Private keys are sealed at rest: the stored form holds no key material in the clear, and a
/// restarted service (same key-encryption key) signs with the same keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_keys_survive_a_restart_sealed() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::spawn(&db).await;
    let before = app.tokens.clone().get_jwks(pb::GetJwksRequest {}).await.unwrap().into_inner().jwks_json;
    let pool = app.parts.store.database().pool.clone();
    let rows: Vec<(String,)> = sqlx::query_as("SELECT private_key FROM signing_keys").fetch_all(&pool).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|(k,)| k.starts_with("v1:") && !k.contains("PRIVATE")));
    app.stop().await;
    let app = TestApp::spawn(&db).await;
    let after = app.tokens.clone().get_jwks(pb::GetJwksRequest {}).await.unwrap().into_inner().jwks_json;
    assert_eq!(before, after);
    let workers = app.parts.spawn_workers();
    workers.shutdown().await;
    app.stop().await;
}

/// The scheduled rotation promotes the key that was already published as `next`, so the key that
/// signs after a rotation is one every JWKS consumer has seen; the worker starts and stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_rotation_promotes_the_published_next_key() {
    let db = TestDb::new(Backend::Sqlite).await;
    // Consumers that never cache: the next key may sign as soon as it is published.
    let app = TestApp::spawn_with(&db, |c| {
        c.jwks_max_age = Duration::ZERO;
        c.key_reload_interval = Duration::ZERO;
    })
    .await;
    let ring = app.parts.keys.ring();
    let active = ring.active().expect("active").kid;
    let next = ring.snapshot().iter().find(|k| k.state == KeyState::Next).expect("a next key").kid.clone();
    assert!(!app.parts.keys.rotate_if_due(Duration::from_secs(3600)).await.unwrap(), "not due yet");
    assert_eq!(ring.active().unwrap().kid, active);
    assert!(app.parts.keys.rotate_if_due(Duration::ZERO).await.unwrap(), "due");
    assert_eq!(ring.active().unwrap().kid, next, "the published next key signs now");
    let now = Timestamp::now();
    let retired = ring.published(&active, now).expect("the retired key stays published");
    assert_eq!(retired.state, KeyState::Retired);
    assert_eq!(ring.jwks(now).len(), 3, "retired, active and a new next key");
    app.stop().await;
}

async fn authorize_decisions(backend: Backend) {
    use lanyard_proto::authz::v1 as apb;
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let google = FakeIdp::start(Kind::Google, "acme.com").await;
    let acme = app.create_org("acme", &["acme.com"], "").await;
    app.connect(&acme, &google).await;
    app.add_member(&acme, "bob@acme.com", &["member"]).await;
    let bob = app.sign_in(&google.id_token("g-bob", "bob@acme.com"), &acme).await.expect("sign in");
    let ask = |token: &str, permission: &str, org: Option<String>| {
        let mut authz = app.authz.clone();
        let req =
            apb::AuthorizeRequest { access_token: token.into(), permission: permission.into(), organization_id: org };
        async move { authz.authorize(req).await.map(|r| r.into_inner()) }
    };
    let allowed = ask(&bob.access_token, "organization:read", Some(acme.clone())).await.unwrap();
    assert!(allowed.allowed);
    let principal = allowed.principal.expect("principal");
    assert_eq!((principal.user_id.as_str(), principal.organization_id.as_str()), (bob.user_id.as_str(), acme.as_str()));
    assert_eq!(principal.roles, vec!["member".to_owned()]);
    let missing = ask(&bob.access_token, "members:write", None).await.unwrap();
    assert_eq!((missing.allowed, missing.reason), (false, apb::Decision::PermissionMissing as i32));
    let other_org = ask(&bob.access_token, "organization:read", Some(OrganizationId::new().to_string())).await.unwrap();
    assert_eq!((other_org.allowed, other_org.reason), (false, apb::Decision::OrgMismatch as i32));
    assert!(other_org.principal.is_none(), "nothing about the token for another organization");
    let garbage = ask("not.a.token", "organization:read", None).await.unwrap();
    assert_eq!((garbage.allowed, garbage.reason), (false, apb::Decision::TokenInvalid as i32));
    let id_token = ask(&google.id_token("g-bob", "bob@acme.com"), "organization:read", None).await.unwrap();
    assert_eq!(id_token.reason, apb::Decision::TokenInvalid as i32);
    let err = ask(&bob.access_token, "not a permission", None).await.unwrap_err();
    assert_status(&err, Code::InvalidArgument, "INVALID_ARGUMENT");

    let batch = app
        .authz
        .clone()
        .batch_authorize(apb::BatchAuthorizeRequest {
            access_token: bob.access_token.clone(),
            permissions: vec!["organization:read".into(), "members:write".into()],
            organization_id: None,
        })
        .await
        .unwrap()
        .into_inner();
    let results: Vec<(bool, i32)> = batch.results.iter().map(|r| (r.allowed, r.reason)).collect();
    assert_eq!(results, vec![(true, apb::Decision::Allowed as i32), (false, apb::Decision::PermissionMissing as i32)]);
    assert!(batch.principal.is_some());
    app.stop().await;
}

backend_tests!(authorize_answers_with_a_reason => authorize_decisions);
