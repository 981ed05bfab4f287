//! Lanyard as an OpenID Provider, end to end over real HTTP: an application sends a person to
//! `/oauth2/authorize`, Lanyard sends them to their organization's provider (code flow with PKCE,
//! state and nonce, the connection's client secret), signs them in as `ExchangeToken` does, and
//! the application redeems its code for an ID token, the access token `Authorize` accepts and a
//! rotating refresh token; then refresh, userinfo, revocation and logout.

mod oidc;
mod support;

use jsonwebtoken::{DecodingKey, Validation};
use lanyard_core::Timestamp;
use oidc::*;
use reqwest::StatusCode;
use serde_json::Value;
use support::idp::{FakeIdp, Kind};
use support::*;

fn verify_id_token(app: &TestApp, token: &str, audience: &str) -> Value {
    let header = jsonwebtoken::decode_header(token).expect("header");
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    let key = app.parts.keys.ring().published(&header.kid.expect("kid"), Timestamp::now()).expect("a published key");
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[audience]);
    let decoding: &DecodingKey = key.decoding();
    jsonwebtoken::decode::<Value>(token, decoding, &validation).expect("the ID token verifies").claims
}

async fn full_flow(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let idp = FakeIdp::start(Kind::Google, "acme.com").await;
    let org = app.create_org("acme", &["acme.com"], "").await;
    app.connect(&org, &idp).await;
    let alice = app.add_member(&org, "alice@acme.com", &["admin"]).await;
    let rp = Rp::register(&app, true).await;

    // Discovery names the endpoints and what they accept.
    let doc = rp.get(&format!("{}/.well-known/openid-configuration", rp.base), &[]).await.json();
    assert_eq!(doc["issuer"], ISSUER);
    assert_eq!(doc["authorization_endpoint"], format!("{ISSUER}/oauth2/authorize"));
    assert_eq!(doc["token_endpoint"], format!("{ISSUER}/oauth2/token"));
    assert_eq!(doc["code_challenge_methods_supported"], serde_json::json!(["S256"]));
    assert_eq!(doc["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(doc["authorization_response_iss_parameter_supported"], true);
    assert_eq!(doc["grant_types_supported"], serde_json::json!(["authorization_code", "refresh_token"]));
    assert_eq!(
        doc["token_endpoint_auth_methods_supported"],
        serde_json::json!(["client_secret_basic", "client_secret_post", "none"])
    );
    assert_eq!(doc["id_token_signing_alg_values_supported"], serde_json::json!(["ES256"]));
    for key in ["jwks_uri", "revocation_endpoint", "end_session_endpoint", "userinfo_endpoint"] {
        assert!(doc[key].as_str().is_some_and(|u| u.starts_with(ISSUER)), "{key}");
    }

    // The browser: authorize (by slug) → the provider → the callback → the application.
    let attempt = Attempt::new();
    let started = rp.get(&rp.authorize_url(&attempt, "acme", &[]), &[]).await;
    assert_eq!(started.status, StatusCode::SEE_OTHER);
    for (name, value) in [
        ("content-security-policy", "default-src 'self'; frame-ancestors 'none'; form-action 'self'"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
    ] {
        assert_eq!(started.headers.get(name).and_then(|v| v.to_str().ok()), Some(value), "{name}");
    }
    let set_cookie = started.headers.get("set-cookie").unwrap().to_str().unwrap().to_owned();
    assert!(set_cookie.starts_with("__Host-lanyard-flow-"), "{set_cookie}");
    for attribute in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    // What the provider is asked: its own PKCE, state and nonce, and the callback.
    let upstream = url::Url::parse(started.location.as_deref().unwrap()).unwrap();
    let q: std::collections::HashMap<_, _> = upstream.query_pairs().into_owned().collect();
    assert_eq!(q["client_id"], idp.client_id);
    assert_eq!(q["redirect_uri"], format!("{ISSUER}/oauth2/callback"));
    assert_eq!(q["code_challenge_method"], "S256");
    assert_ne!(q["state"], attempt.state, "the application's state never reaches the provider");
    assert_ne!(q["nonce"], attempt.nonce);
    idp.sign_in_next("alice-sub", "alice@acme.com");
    let at_idp = rp.get(started.location.as_deref().unwrap(), &[]).await;
    let done = rp.get(at_idp.location.as_deref().unwrap(), &started.cookies).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{done:?}");
    assert!(done.location.as_deref().unwrap().starts_with(&format!("{REDIRECT_URI}?")));
    assert_eq!(done.param("state").as_deref(), Some(attempt.state.as_str()));
    assert_eq!(done.param("iss").as_deref(), Some(ISSUER));
    let code = done.param("code").unwrap();

    // The application redeems the code.
    let tokens = rp.redeem(&code, &attempt.verifier).await;
    assert_eq!(tokens.status, StatusCode::OK, "{tokens:?}");
    assert_eq!(tokens.headers.get("cache-control").unwrap(), "no-store");
    let body = tokens.json();
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].as_u64().unwrap() > 0);
    let id = verify_id_token(&app, body["id_token"].as_str().unwrap(), &rp.client_id);
    assert_eq!(id["sub"], alice);
    assert_eq!(id["nonce"], attempt.nonce);
    assert_eq!(id["org_id"], org);
    assert_eq!(id["org_slug"], "acme");
    assert_eq!(id["roles"], serde_json::json!(["admin"]));
    assert_eq!(id["email"], "alice@acme.com");
    let access = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(claims(&access)["sid"], id["sid"]);
    assert!(authorized(&app, &access).await, "the access token is Lanyard's, and Authorize allows it");

    // Refresh: a new access token and refresh token; the ID token has no nonce now.
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    let refreshed = rp.token_request(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{refreshed:?}");
    let refreshed = refreshed.json();
    let access = refreshed["access_token"].as_str().unwrap().to_owned();
    let refresh = refreshed["refresh_token"].as_str().unwrap().to_owned();
    let id = verify_id_token(&app, refreshed["id_token"].as_str().unwrap(), &rp.client_id);
    assert!(id.get("nonce").is_none());
    assert!(authorized(&app, &access).await);

    // Userinfo answers for the access token.
    let info = rp.http.get(format!("{}/oauth2/userinfo", rp.base)).bearer_auth(&access).send().await.unwrap();
    assert_eq!(info.status(), StatusCode::OK);
    let info: Value = info.json().await.unwrap();
    assert_eq!((info["sub"].as_str(), info["email"].as_str()), (Some(alice.as_str()), Some("alice@acme.com")));
    assert_eq!(info["org_slug"], "acme");

    // Revocation (RFC 7009) of the refresh token ends the session: the access token stops too.
    let revoked = rp.authenticated("/oauth2/revoke", &[("token", &refresh)]).await;
    assert_eq!(revoked.status, StatusCode::OK);
    assert!(!authorized(&app, &access).await);
    let again = rp.token_request(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await;
    assert_eq!((again.status, again.json()["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    let info = rp.http.get(format!("{}/oauth2/userinfo", rp.base)).bearer_auth(&access).send().await.unwrap();
    assert_eq!(info.status(), StatusCode::UNAUTHORIZED);

    // Sign in again, then RP-initiated logout ends that session and returns where registered.
    let attempt = Attempt::new();
    let code = rp.code(&idp, &attempt, &org, "alice-sub", "alice@acme.com").await;
    let body = rp.redeem(&code, &attempt.verifier).await.json();
    let access = body["access_token"].as_str().unwrap().to_owned();
    assert!(authorized(&app, &access).await);
    let mut logout = url::Url::parse(&format!("{}/oauth2/logout", rp.base)).unwrap();
    logout.query_pairs_mut().extend_pairs([
        ("id_token_hint", body["id_token"].as_str().unwrap()),
        ("post_logout_redirect_uri", "https://app.example/bye"),
        ("state", "s1"),
    ]);
    let out = rp.get(logout.as_str(), &[]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.location.as_deref(), Some("https://app.example/bye?state=s1"));
    assert!(!authorized(&app, &access).await, "logout ended the session");
}

/// A public client (a browser or mobile application) authenticates with PKCE alone.
async fn public_client(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let idp = FakeIdp::start(Kind::Okta, "beta.io").await;
    let org = app.create_org("beta", &["beta.io"], "").await;
    app.connect(&org, &idp).await;
    app.add_member(&org, "bob@beta.io", &["member"]).await;
    let rp = Rp::register(&app, false).await;
    assert!(rp.secret.is_none());
    let attempt = Attempt::new();
    let code = rp.code(&idp, &attempt, &org, "bob", "bob@beta.io").await;
    let tokens = rp.redeem(&code, &attempt.verifier).await;
    assert_eq!(tokens.status, StatusCode::OK, "{tokens:?}");
    let access = tokens.json()["access_token"].as_str().unwrap().to_owned();
    let info = rp.http.get(format!("{}/oauth2/userinfo", rp.base)).bearer_auth(&access).send().await.unwrap();
    assert_eq!(info.status(), StatusCode::OK, "the access token is live");
    let id = claims(tokens.json()["id_token"].as_str().unwrap());
    assert_eq!(id["roles"], serde_json::json!(["member"]));
}

backend_tests!(full_flow, public_client);
