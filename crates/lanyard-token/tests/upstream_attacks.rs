//! Every way to forge or misuse an identity provider's ID token is refused: `alg: none`, HS256
//! keyed with the provider's public key, a correct `kid` with another key, `kid` tricks,
//! `jku`/`x5u`/`jwk` headers (and no request ever goes to a URL from a token), `crit`, expired,
//! not yet valid, far-future `iat`, wrong `aud`/`iss` (also a trailing slash), several audiences
//! without `azp`, a nonce mismatch, Google without or with another `hd` or an unverified email,
//! Entra ID with another tenant, or a victim's email under another `oid`.

mod support;

use jsonwebtoken::{Algorithm, EncodingKey};
use lanyard_proto::token::v1 as pb;
use serde_json::{json, Value};
use support::idp::{sign_raw, unsigned, FakeIdp, Kind};
use support::*;
use tonic::Code;

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

#[track_caller]
fn refused(result: Result<pb::ExchangeTokenResponse, tonic::Status>, what: &str) -> tonic::Status {
    match result {
        Ok(_) => panic!("{what}: signed in with a bad ID token"),
        Err(status) => {
            assert!(
                matches!(status.code(), Code::Unauthenticated | Code::FailedPrecondition | Code::PermissionDenied),
                "{what}: unexpected status {status:?}"
            );
            status
        }
    }
}

async fn google_attacks(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let google = FakeIdp::start(Kind::Google, "acme.com").await;
    // A server the attacker controls, publishing the attacker's key.
    let evil = FakeIdp::start(Kind::Google, "acme.com").await;
    evil.publish_second_key();
    let acme = app.create_org("acme", &["acme.com"], "it@acme.com").await;
    app.connect(&acme, &google).await;

    let good = google.claims("g-it", "it@acme.com");
    let ok = app.sign_in(&google.sign(&good), &acme).await.expect("a genuine token signs in");
    let victim = ok.user_id;

    let rs = |kid: &str| json!({ "alg": "RS256", "kid": kid, "typ": "JWT" });
    let real = &google.key.encoding;
    let attacker = &google.other_key.encoding;
    let t = now();
    let cases: Vec<(&str, String, &str)> = vec![
        ("alg none", unsigned(&json!({"alg": "none", "kid": "key-1", "typ": "JWT"}), &good), "ID_TOKEN_INVALID"),
        (
            "HS256 keyed with the provider's public key",
            sign_raw(
                &json!({"alg": "HS256", "kid": "key-1", "typ": "JWT"}),
                &good,
                &EncodingKey::from_secret(&google.key.public_der),
                Algorithm::HS256,
            ),
            "ID_TOKEN_INVALID",
        ),
        (
            "HS256 keyed with the provider's JWK",
            sign_raw(
                &json!({"alg": "HS256", "kid": "key-1"}),
                &good,
                &EncodingKey::from_secret(google.key.jwk.to_string().as_bytes()),
                Algorithm::HS256,
            ),
            "ID_TOKEN_INVALID",
        ),
        ("correct kid, another key", sign_raw(&rs("key-1"), &good, attacker, Algorithm::RS256), "ID_TOKEN_INVALID"),
        ("kid path trick", sign_raw(&rs("../../../../etc/passwd"), &good, real, Algorithm::RS256), "ID_TOKEN_INVALID"),
        ("kid SQL trick", sign_raw(&rs("key-1' OR '1'='1"), &good, real, Algorithm::RS256), "ID_TOKEN_INVALID"),
        (
            "jku header",
            sign_raw(
                &json!({"alg": "RS256", "kid": "key-2", "jku": format!("{}/keys", evil.issuer)}),
                &good,
                attacker,
                Algorithm::RS256,
            ),
            "ID_TOKEN_INVALID",
        ),
        (
            "x5u header",
            sign_raw(
                &json!({"alg": "RS256", "kid": "key-2", "x5u": format!("{}/cert.pem", evil.issuer)}),
                &good,
                attacker,
                Algorithm::RS256,
            ),
            "ID_TOKEN_INVALID",
        ),
        (
            "jwk header",
            sign_raw(
                &json!({"alg": "RS256", "kid": "key-2", "jwk": google.other_key.jwk}),
                &good,
                attacker,
                Algorithm::RS256,
            ),
            "ID_TOKEN_INVALID",
        ),
        (
            "crit header",
            sign_raw(&json!({"alg": "RS256", "kid": "key-1", "crit": ["exp"]}), &good, real, Algorithm::RS256),
            "ID_TOKEN_INVALID",
        ),
        (
            "an access token's typ",
            sign_raw(&json!({"alg": "RS256", "kid": "key-1", "typ": "at+jwt"}), &good, real, Algorithm::RS256),
            "ID_TOKEN_INVALID",
        ),
        (
            "expired",
            google.sign(&with(with(good.clone(), "exp", json!(t - 3600)), "iat", json!(t - 7200))),
            "ID_TOKEN_INVALID",
        ),
        ("not yet valid", google.sign(&with(good.clone(), "nbf", json!(t + 3600))), "ID_TOKEN_INVALID"),
        ("far-future iat", google.sign(&with(good.clone(), "iat", json!(t + 3600))), "ID_TOKEN_INVALID"),
        ("no iat", google.sign(&without(good.clone(), "iat")), "ID_TOKEN_INVALID"),
        ("no exp", google.sign(&without(good.clone(), "exp")), "ID_TOKEN_INVALID"),
        ("wrong aud", google.sign(&with(good.clone(), "aud", json!("someone-else"))), "ID_TOKEN_INVALID"),
        (
            "several audiences, no azp",
            google.sign(&without(with(good.clone(), "aud", json!([google.client_id, "other"])), "azp")),
            "ID_TOKEN_INVALID",
        ),
        ("azp of another client", google.sign(&with(good.clone(), "azp", json!("other"))), "ID_TOKEN_INVALID"),
        (
            "iss with a trailing slash",
            google.sign(&with(good.clone(), "iss", json!(format!("{}/", google.issuer)))),
            "SSO_CONNECTION_NOT_FOUND",
        ),
        ("another issuer", evil.sign(&with(good.clone(), "iss", json!(evil.issuer))), "SSO_CONNECTION_NOT_FOUND"),
        ("no hd: not a Workspace account", google.sign(&without(good.clone(), "hd")), "ID_TOKEN_INVALID"),
        ("another hd", google.sign(&with(good.clone(), "hd", json!("evil.com"))), "ID_TOKEN_INVALID"),
        ("email not verified", google.sign(&with(good.clone(), "email_verified", json!(false))), "ID_TOKEN_INVALID"),
        ("not a JWT", "not.a.jwt".to_owned(), "ID_TOKEN_INVALID"),
    ];
    for (what, token, wanted) in cases {
        let status = refused(app.sign_in(&token, &acme).await, what);
        assert_eq!(reason(&status), wanted, "{what}: {status:?}");
    }
    assert_eq!(evil.hits(), 0, "a URL from a token was fetched");

    // A nonce the flow set must be in the token.
    let nonce_grant = |token: String, nonce: &str| {
        pb::exchange_token_request::Grant::IdTokenGrant(pb::IdTokenGrant {
            id_token: token,
            organization_id: acme.clone(),
            nonce: Some(nonce.into()),
        })
    };
    let with_nonce = google.sign(&with(good.clone(), "nonce", json!("n-1")));
    app.exchange(nonce_grant(with_nonce.clone(), "n-1")).await.expect("matching nonce");
    refused(app.exchange(nonce_grant(with_nonce, "n-2")).await, "nonce mismatch");
    refused(app.exchange(nonce_grant(google.sign(&good), "n-1")).await, "nonce missing");

    // The provider rotates its keys: an unknown kid makes Lanyard fetch the JWKS again.
    let before = google.jwks_hits();
    google.publish_second_key();
    let rotated =
        sign_raw(&rs("key-2"), &google.claims("g-it", "it@acme.com"), &google.other_key.encoding, Algorithm::RS256);
    let again = app.sign_in(&rotated, &acme).await.expect("the provider's new key is found");
    assert_eq!(again.user_id, victim);
    assert_eq!(google.jwks_hits(), before + 1);
    app.stop().await;
}

backend_tests!(google_workspace_tokens_are_checked, google_attacks);

async fn azure_and_okta(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let azure = FakeIdp::start(Kind::Azure, "contoso.com").await;
    let other_tenant = FakeIdp::start(Kind::Azure, "contoso.com").await;
    let okta = FakeIdp::start(Kind::Okta, "initech.com").await;
    let contoso = app.create_org("contoso", &["contoso.com"], "it@contoso.com").await;
    app.connect(&contoso, &azure).await;
    let initech = app.create_org("initech", &["initech.com"], "it@initech.com").await;
    app.connect(&initech, &okta).await;

    // Entra ID: the admin signs in; the identity is keyed by (tid, oid), not by the pairwise sub.
    let admin = app.sign_in(&azure.id_token("oid-admin", "it@contoso.com"), &contoso).await.expect("Entra sign-in");
    let principal = app.parts.access_tokens.verify(&admin.access_token, lanyard_core::Timestamp::now()).unwrap();
    assert_eq!(principal.user_id.to_string(), admin.user_id);
    let subject = format!("{}:oid-admin", azure.tenant_id);
    let last = app.parts.store.last_org_of_identity(&azure.issuer, &subject).await.unwrap();
    assert_eq!(last.map(|o| o.to_string()), Some(contoso.clone()));

    // Another tenant's claim, in a token signed by our tenant's keys.
    let good = azure.claims("oid-admin", "it@contoso.com");
    let err = refused(
        app.sign_in(&azure.sign(&with(good.clone(), "tid", json!(other_tenant.tenant_id))), &contoso).await,
        "another tid",
    );
    assert_eq!(reason(&err), "ID_TOKEN_INVALID");
    refused(app.sign_in(&azure.sign(&without(good.clone(), "oid")), &contoso).await, "no oid");
    // Another tenant's token altogether: its issuer is no connection of this organization.
    let err = refused(app.sign_in(&other_tenant.id_token("oid-admin", "it@contoso.com"), &contoso).await, "tenant");
    assert_eq!(reason(&err), "SSO_CONNECTION_NOT_FOUND");
    // A victim's email under another oid, not verified by the tenant: a different person.
    let spoof = without(azure.claims("oid-mallory", "it@contoso.com"), "xms_edov");
    let err = refused(app.sign_in(&azure.sign(&spoof), &contoso).await, "victim's email, other oid");
    assert_status(&err, Code::PermissionDenied, "EMAIL_NOT_VERIFIED");
    // Signed in again as the admin: still the admin's user.
    let again = app.sign_in(&azure.id_token("oid-admin", "it@contoso.com"), &contoso).await.expect("admin again");
    assert_eq!(again.user_id, admin.user_id);

    // Okta: the exact issuer.
    app.sign_in(&okta.id_token("okta-it", "it@initech.com"), &initech).await.expect("Okta sign-in");
    let slash = with(okta.claims("okta-it", "it@initech.com"), "iss", json!(format!("{}/", okta.issuer)));
    refused(app.sign_in(&okta.sign(&slash), &initech).await, "Okta issuer with a trailing slash");
    let unverified = with(okta.claims("okta-x", "it@initech.com"), "email_verified", json!(false));
    let err = refused(app.sign_in(&okta.sign(&unverified), &initech).await, "unverified email is not the member");
    assert_status(&err, Code::PermissionDenied, "EMAIL_NOT_VERIFIED");
    app.stop().await;
}

backend_tests!(entra_id_and_okta_tokens_are_checked, azure_and_okta);

/// Unknown kids do not make Lanyard hammer the provider: one fetch per `min_refetch_interval`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kids_refetch_at_a_bounded_rate() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app =
        TestApp::spawn_with(&db, |c| c.upstream.min_refetch_interval = std::time::Duration::from_secs(3600)).await;
    let google = FakeIdp::start(Kind::Google, "acme.com").await;
    let acme = app.create_org("acme", &["acme.com"], "it@acme.com").await;
    app.connect(&acme, &google).await;
    app.sign_in(&google.id_token("g-it", "it@acme.com"), &acme).await.expect("sign in");
    let fetched = google.jwks_hits();
    assert_eq!(fetched, 1);
    for i in 0..20 {
        let header = json!({"alg": "RS256", "kid": format!("unknown-{i}"), "typ": "JWT"});
        let token = sign_raw(&header, &google.claims("g-it", "it@acme.com"), &google.key.encoding, Algorithm::RS256);
        refused(app.sign_in(&token, &acme).await, "unknown kid");
    }
    assert_eq!(google.jwks_hits(), fetched, "unknown kids refetched the JWKS");
    // Known keys keep working from the cache.
    app.sign_in(&google.id_token("g-it", "it@acme.com"), &acme).await.expect("cached key");
    app.stop().await;
}

/// Without the setting, an `http` issuer is refused before anything is fetched from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_issuers_need_the_setting() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::spawn_with(&db, |c| c.upstream.allow_http_loopback = false).await;
    let google = FakeIdp::start(Kind::Google, "acme.com").await;
    let acme = app.create_org("acme", &["acme.com"], "it@acme.com").await;
    app.connect(&acme, &google).await;
    let err = refused(app.sign_in(&google.id_token("g-it", "it@acme.com"), &acme).await, "http issuer");
    assert_eq!(reason(&err), "ID_TOKEN_INVALID");
    assert_eq!(google.hits(), 0);
    app.stop().await;
}

/// Many first sign-ins at once against a cold cache: one fetch, every one of them signed in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_sign_ins_share_one_fetch() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app =
        TestApp::spawn_with(&db, |c| c.upstream.min_refetch_interval = std::time::Duration::from_secs(3600)).await;
    let google = FakeIdp::start(Kind::Google, "acme.com").await;
    let acme = app.create_org("acme", &["acme.com"], "it@acme.com").await;
    app.connect(&acme, &google).await;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(8));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (barrier, mut tokens, token) =
            (barrier.clone(), app.tokens.clone(), google.id_token("g-it", "it@acme.com"));
        let acme = acme.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let grant = pb::IdTokenGrant { id_token: token, organization_id: acme, nonce: None };
            let req = pb::ExchangeTokenRequest {
                grant: Some(pb::exchange_token_request::Grant::IdTokenGrant(grant)),
                ..Default::default()
            };
            tokens.exchange_token(req).await
        }));
    }
    for t in tasks {
        t.await.unwrap().expect("every concurrent first sign-in succeeds");
    }
    assert_eq!(google.jwks_hits(), 1);
    app.stop().await;
}
