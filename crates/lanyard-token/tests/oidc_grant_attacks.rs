//! Attacks on the application's side of sign-in (`/oauth2/token`, `/oauth2/revoke`), on the
//! organizations (a hint naming someone else's, another organization's provider), and on the
//! RPCs behind it (client registration, the connection's secret).

mod oidc;
mod support;

use lanyard_core::status::reason_of;
use lanyard_proto::tenancy::v1 as tpb;
use lanyard_proto::token::v1 as pb;
use oidc::*;
use reqwest::StatusCode;
use support::idp::{FakeIdp, Kind};
use support::*;
use tonic::Code;

/// A code works once; a second use fails and ends the session the first one started.
async fn code_reuse(backend: Backend) {
    let f = Fixture::new(backend).await;
    let (code, attempt) = f.code().await;
    let first = f.rp.redeem(&code, &attempt.verifier).await;
    assert_eq!(first.status, StatusCode::OK);
    let access = first.json()["access_token"].as_str().unwrap().to_owned();
    let refresh = first.json()["refresh_token"].as_str().unwrap().to_owned();
    assert!(authorized(&f.app, &access).await);
    let second = f.rp.redeem(&code, &attempt.verifier).await;
    assert_oauth_error(&second, StatusCode::BAD_REQUEST, "invalid_grant");
    assert!(second.json().get("access_token").is_none());
    assert!(!authorized(&f.app, &access).await, "the first use's session ended");
    let refreshed = f.rp.token_request(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await;
    assert_oauth_error(&refreshed, StatusCode::BAD_REQUEST, "invalid_grant");
}

/// A confidential client must prove its secret; wrong or missing secrets are refused (401)
/// and spend nothing.
async fn wrong_client_secret(backend: Backend) {
    let f = Fixture::new(backend).await;
    let (code, attempt) = f.code().await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT_URI),
        ("code_verifier", attempt.verifier.as_str()),
    ];
    let before = rows(&f.app).await;
    let id = f.rp.client_id.as_str();
    let secret = f.rp.secret.clone().unwrap();
    let wrong = format!("{secret}x");
    let basic = f.rp.post("/oauth2/token", &form, Some((id, &wrong))).await;
    assert_oauth_error(&basic, StatusCode::UNAUTHORIZED, "invalid_client");
    assert!(basic.headers.get("www-authenticate").is_some());
    let mut post = form.to_vec();
    post.extend([("client_id", id), ("client_secret", wrong.as_str())]);
    assert_oauth_error(&f.rp.post("/oauth2/token", &post, None).await, StatusCode::UNAUTHORIZED, "invalid_client");
    // As if it were public: no secret at all.
    let mut none = form.to_vec();
    none.push(("client_id", id));
    assert_oauth_error(&f.rp.post("/oauth2/token", &none, None).await, StatusCode::UNAUTHORIZED, "invalid_client");
    // Two methods at once.
    let mut both = form.to_vec();
    both.push(("client_secret", secret.as_str()));
    let answer = f.rp.post("/oauth2/token", &both, Some((id, &secret))).await;
    assert_oauth_error(&answer, StatusCode::BAD_REQUEST, "invalid_request");
    // Another registered client presenting the code.
    let other = Rp::register(&f.app, true).await;
    assert_oauth_error(&other.redeem(&code, &attempt.verifier).await, StatusCode::BAD_REQUEST, "invalid_grant");
    assert_eq!(rows(&f.app).await, before, "refusals wrote nothing");
    // client_secret_post with the right secret works, and the code was not spent before.
    let mut good = form.to_vec();
    good.extend([("client_id", id), ("client_secret", secret.as_str())]);
    assert_eq!(f.rp.post("/oauth2/token", &good, None).await.status, StatusCode::OK);
}

/// A refresh token is redeemed and revoked only by the client it was issued to.
async fn refresh_token_of_another_client(backend: Backend) {
    let f = Fixture::new(backend).await;
    let (code, attempt) = f.code().await;
    let body = f.rp.redeem(&code, &attempt.verifier).await.json();
    let (access, refresh) = (body["access_token"].as_str().unwrap(), body["refresh_token"].as_str().unwrap());
    let other = Rp::register(&f.app, false).await;
    let before = rows(&f.app).await;
    let stolen = other.token_request(&[("grant_type", "refresh_token"), ("refresh_token", refresh)]).await;
    assert_oauth_error(&stolen, StatusCode::BAD_REQUEST, "invalid_grant");
    let revoked = other.authenticated("/oauth2/revoke", &[("token", refresh)]).await;
    assert_eq!(revoked.status, StatusCode::BAD_REQUEST);
    assert_eq!(rows(&f.app).await, before, "nothing used or revoked");
    assert!(authorized(&f.app, access).await);
    let own = f.rp.token_request(&[("grant_type", "refresh_token"), ("refresh_token", refresh)]).await;
    assert_eq!(own.status, StatusCode::OK);
}

/// A refresh token an application holds cannot be redeemed over gRPC (`RefreshSession`, or the
/// refresh grant of `ExchangeToken`), where no client authenticates: the session is bound to
/// its client. Refused like an unknown token, it is not used and keeps working for its client.
async fn refresh_token_over_grpc(backend: Backend) {
    let f = Fixture::new(backend).await;
    let (code, attempt) = f.code().await;
    let body = f.rp.redeem(&code, &attempt.verifier).await.json();
    let (access, refresh) = (body["access_token"].as_str().unwrap(), body["refresh_token"].as_str().unwrap());
    let before = rows(&f.app).await;
    let mut tokens = f.app.tokens.clone();
    let direct = tokens
        .refresh_session(pb::RefreshSessionRequest { refresh_token: refresh.to_owned(), ..Default::default() })
        .await;
    let err = direct.expect_err("RefreshSession refused");
    assert_eq!((err.code(), reason_of(&err).as_deref()), (Code::Unauthenticated, Some("REFRESH_TOKEN_INVALID")));
    let grant = pb::exchange_token_request::Grant::RefreshTokenGrant(pb::RefreshTokenGrant {
        refresh_token: refresh.to_owned(),
        organization_id: None,
    });
    let exchanged = tokens.exchange_token(pb::ExchangeTokenRequest { grant: Some(grant), ..Default::default() }).await;
    let err = exchanged.expect_err("the refresh grant refused");
    assert_eq!((err.code(), reason_of(&err).as_deref()), (Code::Unauthenticated, Some("REFRESH_TOKEN_INVALID")));
    assert_eq!(rows(&f.app).await, before, "nothing used or revoked");
    assert!(authorized(&f.app, access).await);
    let own = f.rp.token_request(&[("grant_type", "refresh_token"), ("refresh_token", refresh)]).await;
    assert_eq!(own.status, StatusCode::OK, "the application still refreshes");
}

/// An `organization` hint naming an organization the person is not a member of ends on a
/// page; nothing is written and no code reaches the application.
async fn organization_hint_not_a_member(backend: Backend) {
    let f = Fixture::new(backend).await;
    let okta = FakeIdp::start(Kind::Okta, "beta.io").await;
    let beta = f.app.create_org("beta", &["beta.io"], "").await;
    f.app.connect(&beta, &okta).await;
    // Alice has an account at beta's provider but is no member of beta.
    let url = f.rp.authorize_url(&Attempt::new(), "beta", &[]);
    let answer = f.rp.through_provider(&okta, &url, "alice-at-beta", "alice@acme.com").await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert!(answer.page() == Some("not_a_member") || answer.page() == Some("sign_in_refused"), "{answer:?}");
    let (sessions, refresh, _, codes, bindings) = rows(&f.app).await;
    assert_eq!((sessions, refresh, codes, bindings), (0, 0, 0, 0));
    // An organization that does not exist is an error for the application, not a sign-in.
    let answer = f.rp.get(&f.rp.authorize_url(&Attempt::new(), "nobody-here", &[]), &[]).await;
    assert_eq!(answer.param("error").as_deref(), Some("access_denied"));
}

/// The owner of organization B runs B's provider and makes it vouch for alice@acme.com. Lanyard
/// never sends a sign-in into acme through B's provider, B's provider does not make alice a
/// member of B, and a session that B's provider started cannot be switched into acme.
async fn other_organizations_provider(backend: Backend) {
    let f = Fixture::new(backend).await;
    let evil = FakeIdp::start(Kind::Okta, "beta.io").await;
    let beta = f.app.create_org("beta", &["beta.io"], "").await;
    let evil_connection = f.app.connect(&beta, &evil).await;
    // Asking acme's sign-in to go through beta's connection.
    let url = f.rp.authorize_url(&Attempt::new(), &f.org, &[("connection", Some(evil_connection.as_str()))]);
    let answer = f.rp.get(&url, &[]).await;
    assert_eq!(answer.param("error").as_deref(), Some("access_denied"), "{answer:?}");
    assert_eq!(rows(&f.app).await, (0, 0, 0, 0, 0));
    // Signing in to beta as alice@acme.com: not a member of beta, and acme's domain is not
    // beta's to vouch for.
    let url = f.rp.authorize_url(&Attempt::new(), "beta", &[]);
    let answer = f.rp.through_provider(&evil, &url, "fake-alice", "alice@acme.com").await;
    assert!(answer.page().is_some() && answer.location.is_none(), "{answer:?}");
    let (sessions, _, _, codes, _) = rows(&f.app).await;
    assert_eq!((sessions, codes), (0, 0));
    // Even a real beta member signed in through beta's provider cannot switch into acme.
    f.app.add_member(&f.org, "carol@beta.io", &["member"]).await;
    f.app.add_member(&beta, "carol@beta.io", &["member"]).await;
    let attempt = Attempt::new();
    let code = f.rp.code(&evil, &attempt, &beta, "carol", "carol@beta.io").await;
    let body = f.rp.redeem(&code, &attempt.verifier).await.json();
    let refresh = body["refresh_token"].as_str().unwrap();
    let before = rows(&f.app).await;
    let switch = [("grant_type", "refresh_token"), ("refresh_token", refresh), ("organization", "acme")];
    assert_oauth_error(&f.rp.token_request(&switch).await, StatusCode::BAD_REQUEST, "invalid_grant");
    assert_eq!(rows(&f.app).await, before, "the refresh token was not used");
}

/// Registering, listing and deleting clients is the operator's; the connection's secret goes
/// to service keys only.
async fn operator_and_service_rpcs(backend: Backend) {
    let f = Fixture::new(backend).await;
    let register = |uris: Vec<&str>| pb::RegisterClientRequest {
        display_name: "App".into(),
        client_type: pb::ClientType::Public as i32,
        redirect_uris: uris.into_iter().map(str::to_owned).collect(),
        ..Default::default()
    };
    let mut tokens = f.app.tokens.clone();
    let err = tokens.register_client(register(vec!["https://a.example/cb"])).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let (code, attempt) = f.code().await;
    let access = f.rp.redeem(&code, &attempt.verifier).await.json()["access_token"].as_str().unwrap().to_owned();
    let err = tokens.register_client(with_key(register(vec!["https://a.example/cb"]), &access)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "an organization's admin is not the operator");
    let err = tokens.register_client(with_key(register(vec!["https://a.example/cb"]), SERVICE_KEY)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "a product service's key administers nothing");
    let err = tokens.list_clients(with_key(pb::ListClientsRequest::default(), SERVICE_KEY)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    for bad in ["http://a.example/cb", "https://a.example/cb#f", "https://A.example/cb", "/cb"] {
        let err = tokens.register_client(op(register(vec![bad]))).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}");
    }
    let connections = f
        .app
        .tenancy
        .clone()
        .list_sso_connections(op(tpb::ListSsoConnectionsRequest {
            organization_id: f.org.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .connections;
    let ask = || tpb::GetSsoClientSecretRequest {
        organization_id: f.org.clone(),
        connection_id: connections[0].connection_id.clone(),
    };
    let mut tenancy = f.app.tenancy.clone();
    assert_eq!(tenancy.get_sso_client_secret(op(ask())).await.unwrap_err().code(), Code::PermissionDenied);
    let member = tenancy.get_sso_client_secret(with_key(ask(), &access)).await.unwrap_err();
    assert_eq!(member.code(), Code::PermissionDenied, "an organization's admin never reads the secret");
    assert_eq!(tenancy.get_sso_client_secret(ask()).await.unwrap_err().code(), Code::Unauthenticated);
    let secret = tenancy.get_sso_client_secret(with_key(ask(), SERVICE_KEY)).await.unwrap().into_inner();
    assert_eq!(secret.client_secret, f.idp.client_secret);
    // Bad ids, and a connection paired with another organization, answer a status, never a secret.
    let globex = f.app.create_org("globex", &["globex.com"], "").await;
    let connection = connections[0].connection_id.as_str();
    for (org, id, code) in [
        ("not-an-id", connection, Code::InvalidArgument),
        (f.org.as_str(), "not-an-id", Code::InvalidArgument),
        (globex.as_str(), connection, Code::NotFound),
    ] {
        let req = tpb::GetSsoClientSecretRequest { organization_id: org.into(), connection_id: id.into() };
        let err = tenancy.get_sso_client_secret(with_key(req, SERVICE_KEY)).await.unwrap_err();
        assert_eq!(err.code(), code, "{org} {id}: {err:?}");
        assert!(!reason(&err).is_empty(), "a stable reason: {err:?}");
    }

    // Deleting the application ends the sessions it signed in.
    assert!(authorized(&f.app, &access).await);
    let listed = tokens.list_clients(op(pb::ListClientsRequest::default())).await.unwrap().into_inner();
    assert_eq!(listed.clients.len(), 1);
    assert_eq!(listed.clients[0].client_id, f.rp.client_id);
    tokens
        .delete_client(op(pb::DeleteClientRequest { client_id: f.rp.client_id.clone(), request_id: String::new() }))
        .await
        .unwrap();
    assert!(!authorized(&f.app, &access).await, "the deleted client's session ended");
    let attempt = Attempt::new();
    assert_page(&f.rp.get(&f.rp.authorize_url(&attempt, &f.org, &[]), &[]).await, "unknown_client");
    let err = tokens
        .delete_client(op(pb::DeleteClientRequest { client_id: f.rp.client_id.clone(), request_id: String::new() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

backend_tests!(
    code_reuse,
    wrong_client_secret,
    refresh_token_of_another_client,
    refresh_token_over_grpc,
    organization_hint_not_a_member,
    other_organizations_provider,
    operator_and_service_rpcs
);
