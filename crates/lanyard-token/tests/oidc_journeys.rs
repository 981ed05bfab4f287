//! Sign-in journeys through the OpenID Provider endpoints beyond the plain one: an invitation
//! accepted through `/oauth2/authorize`, switching organizations with a refresh, codes and flows
//! past their time, a provider answer naming another issuer (mix-up), and one code redeemed by
//! many requests at once.

mod oidc;
mod support;

use std::sync::Arc;

use oidc::*;
use reqwest::StatusCode;
use support::idp::{FakeIdp, Kind};
use support::*;

/// The seed's journey: the operator invites the customer's admin; the application sends them
/// to Lanyard with the invitation; they sign in at their company's provider and arrive as admin.
async fn invitation_through_authorize(backend: Backend) {
    let f = Fixture::new(backend).await;
    let invitation = f.app.invitation_token(OPERATOR_KEY, &f.org, "it@acme.com", &["admin"]).await;
    // The wrong person at the provider: refused, nothing written, the invitation still open.
    let url = f.rp.authorize_url(&Attempt::new(), "", &[("organization", None), ("invitation", Some(&invitation))]);
    let answer = f.rp.through_provider(&f.idp, &url, "mallory", "mallory@acme.com").await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{answer:?}");
    assert_page(&answer, "sign_in_refused");
    let (sessions, _, _, codes, _) = rows(&f.app).await;
    assert_eq!((sessions, codes), (0, 0));
    // The invited person.
    let attempt = Attempt::new();
    let url = f.rp.authorize_url(&attempt, "", &[("organization", None), ("invitation", Some(&invitation))]);
    let done = f.rp.through_provider(&f.idp, &url, "it-sub", "it@acme.com").await;
    let code = done.param("code").unwrap_or_else(|| panic!("{done:?}"));
    let body = f.rp.redeem(&code, &attempt.verifier).await.json();
    let id = claims(body["id_token"].as_str().unwrap());
    assert_eq!((id["org_id"].as_str(), id["roles"].clone()), (Some(f.org.as_str()), serde_json::json!(["admin"])));
    assert!(authorized(&f.app, body["access_token"].as_str().unwrap()).await);
    // Used: a second sign-in with it goes back to the application as access_denied.
    let again = f.rp.get(&url, &[]).await;
    assert_eq!(again.param("error").as_deref(), Some("access_denied"), "{again:?}");
    // An invitation and an organization that disagree.
    let other = f.app.invitation_token(OPERATOR_KEY, &f.org, "dan@acme.com", &["member"]).await;
    let beta = f.app.create_org("beta", &["beta.io"], "").await;
    let mixed = f.rp.authorize_url(&Attempt::new(), &beta, &[("invitation", Some(&other))]);
    assert_eq!(f.rp.get(&mixed, &[]).await.param("error").as_deref(), Some("access_denied"));
}

/// A refresh at the token endpoint may switch the organization when the person is a member
/// there and it accepts the session's provider; the new ID token says so.
async fn switch_organization_on_refresh(backend: Backend) {
    let f = Fixture::new(backend).await;
    let beta = f.app.create_org("beta", &["beta.io"], "").await;
    f.app.connect(&beta, &f.idp).await;
    f.app.add_member(&beta, "alice@acme.com", &["member"]).await;
    let (code, attempt) = f.code().await;
    let body = f.rp.redeem(&code, &attempt.verifier).await.json();
    let switch = [
        ("grant_type", "refresh_token"),
        ("refresh_token", body["refresh_token"].as_str().unwrap()),
        ("organization", "beta"),
    ];
    let switched = f.rp.token_request(&switch).await;
    assert_eq!(switched.status, StatusCode::OK, "{switched:?}");
    let id = claims(switched.json()["id_token"].as_str().unwrap());
    assert_eq!((id["org_id"].as_str(), id["org_slug"].as_str()), (Some(beta.as_str()), Some("beta")));
    assert_eq!(claims(switched.json()["access_token"].as_str().unwrap())["org_id"], beta);
    // Not a member: refused, the refresh token stays usable.
    let gamma = f.app.create_org("gamma", &["gamma.io"], "").await;
    f.app.connect(&gamma, &f.idp).await;
    let refresh = switched.json()["refresh_token"].as_str().unwrap().to_owned();
    let refused = [("grant_type", "refresh_token"), ("refresh_token", refresh.as_str()), ("organization", &gamma)];
    assert_oauth_error(&f.rp.token_request(&refused).await, StatusCode::BAD_REQUEST, "invalid_grant");
    let same = [("grant_type", "refresh_token"), ("refresh_token", refresh.as_str())];
    assert_eq!(f.rp.token_request(&same).await.status, StatusCode::OK);
}

/// A code past its 60 s, and a flow past its 10 minutes, are refused and issue nothing.
async fn expired_code_and_flow(backend: Backend) {
    let f = Fixture::new(backend).await;
    let pool = &f.app.parts.store.database().pool;
    let (code, attempt) = f.code().await;
    sqlx::query("UPDATE oauth_codes SET expires_at = 0").execute(pool).await.unwrap();
    let before = rows(&f.app).await;
    assert_oauth_error(&f.rp.redeem(&code, &attempt.verifier).await, StatusCode::BAD_REQUEST, "invalid_grant");
    assert_eq!(rows(&f.app).await, before);

    let started = f.rp.get(&f.rp.authorize_url(&Attempt::new(), &f.org, &[]), &[]).await;
    f.idp.sign_in_next("alice-sub", "alice@acme.com");
    let back = f.rp.get(started.location.as_deref().unwrap(), &[]).await.location.unwrap();
    sqlx::query("UPDATE oauth_flows SET expires_at = 0").execute(pool).await.unwrap();
    let before = rows(&f.app).await;
    assert_page(&f.rp.get(&back, &started.cookies).await, "sign_in_expired");
    assert_eq!(rows(&f.app).await, before);
}

/// RFC 9207: an answer naming another issuer than the connection's is a mix-up; refused.
async fn provider_mix_up(backend: Backend) {
    let f = Fixture::new(backend).await;
    let started = f.rp.get(&f.rp.authorize_url(&Attempt::new(), &f.org, &[]), &[]).await;
    f.idp.sign_in_next("alice-sub", "alice@acme.com");
    let back = f.rp.get(started.location.as_deref().unwrap(), &[]).await.location.unwrap();
    let mixed = format!("{back}&iss=https%3A%2F%2Fevil.example");
    let answer = f.rp.get(&mixed, &started.cookies).await;
    assert_page(&answer, "provider_refused");
    let (sessions, _, _, codes, _) = rows(&f.app).await;
    assert_eq!((sessions, codes), (0, 0));
}

/// One code redeemed by many requests at once: at most one gets tokens, and because the others
/// are second uses, the session ends; never two sets of live tokens from one code.
async fn concurrent_redemptions(backend: Backend) {
    let f = Arc::new(Fixture::new(backend).await);
    for round in 0..5 {
        let (code, attempt) = f.code().await;
        let barrier = Arc::new(tokio::sync::Barrier::new(6));
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let (f, barrier, code, verifier) = (f.clone(), barrier.clone(), code.clone(), attempt.verifier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    f.rp.redeem(&code, &verifier).await
                })
            })
            .collect();
        let mut issued = Vec::new();
        for task in tasks {
            let answer = task.await.unwrap();
            if answer.status == StatusCode::OK {
                issued.push(answer.json()["access_token"].as_str().unwrap().to_owned());
            } else {
                assert_eq!(answer.json()["error"], "invalid_grant", "round {round}: {answer:?}");
            }
        }
        assert!(issued.len() <= 1, "round {round}: {} sets of tokens from one code", issued.len());
        for access in &issued {
            assert!(!authorized(&f.app, access).await, "round {round}: the reused code's session ended");
        }
    }
}

/// A provider that answers the code with no ID token, or with one for another audience.
async fn provider_answers_nonsense(backend: Backend) {
    let f = Fixture::new(backend).await;
    f.idp.patch_id_tokens(serde_json::json!({ "aud": "another-client" }));
    let url = f.rp.authorize_url(&Attempt::new(), &f.org, &[]);
    assert_page(&f.rp.through_provider(&f.idp, &url, "alice-sub", "alice@acme.com").await, "provider_refused");
    let okta = FakeIdp::start(Kind::Okta, "acme.com").await;
    okta.patch_id_tokens(serde_json::json!({ "iss": "https://someone-else.example" }));
    let beta = f.app.create_org("beta", &["beta.io"], "").await;
    f.app.connect(&beta, &okta).await;
    f.app.add_member(&beta, "bob@beta.io", &["member"]).await;
    let url = f.rp.authorize_url(&Attempt::new(), &beta, &[]);
    let answer = f.rp.through_provider(&okta, &url, "bob", "bob@beta.io").await;
    assert!(answer.page().is_some() && answer.location.is_none(), "{answer:?}");
    let (sessions, _, _, codes, _) = rows(&f.app).await;
    assert_eq!((sessions, codes), (0, 0));
}

/// The endpoints count requests per peer before anything else runs: past the limit a browser
/// gets a page and an application JSON, both `429` with `Retry-After`; another address is not
/// affected.
async fn rate_limited_per_peer(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn_with(&db, |c| c.rate_limits.sign_in = lanyard_token::RateLimit::new(3, 1)).await;
    let rp = Rp::register(&app, true).await;
    let url = rp.authorize_url(&Attempt::new(), "acme", &[]);
    for _ in 0..3 {
        assert_ne!(rp.get(&url, &[]).await.status, StatusCode::TOO_MANY_REQUESTS);
    }
    let limited = rp.get(&url, &[]).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_page(&limited, "rate_limited");
    assert!(limited.headers.get("retry-after").is_some());
    let token = rp.token_request(&[("grant_type", "authorization_code"), ("code", "x")]).await;
    assert_oauth_error(&token, StatusCode::TOO_MANY_REQUESTS, "temporarily_unavailable");
    // Another loopback address is another peer.
    let other = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let answer = other.get(&url).send().await.unwrap();
    assert_ne!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
}

/// In a split deployment the token process reaches tenancy over the network, the connection's
/// client secret included (service key), and the whole sign-in works the same.
async fn split_deployment(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn_over_channel(&db).await;
    let idp = FakeIdp::start(Kind::Azure, "acme.com").await;
    let org = app.create_org("acme", &["acme.com"], "").await;
    app.connect(&org, &idp).await;
    app.add_member(&org, "alice@acme.com", &["admin"]).await;
    let rp = Rp::register(&app, true).await;
    let attempt = Attempt::new();
    let code = rp.code(&idp, &attempt, "acme", "alice-oid", "alice@acme.com").await;
    let tokens = rp.redeem(&code, &attempt.verifier).await;
    assert_eq!(tokens.status, StatusCode::OK, "{tokens:?}");
    assert!(authorized(&app, tokens.json()["access_token"].as_str().unwrap()).await);
}

backend_tests!(
    split_deployment,
    rate_limited_per_peer,
    invitation_through_authorize,
    switch_organization_on_refresh,
    expired_code_and_flow,
    provider_mix_up,
    concurrent_redemptions,
    provider_answers_nonsense
);
