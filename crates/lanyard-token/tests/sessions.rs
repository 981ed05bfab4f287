//! Sessions and refresh tokens: rotation, reuse revokes the whole family (and says so in the
//! log), concurrent refreshes of one token (one wins), org switching that fails leaves the session
//! as it was, session listing and revocation by whom, and every malformed input.

mod support;

use std::sync::Arc;

use lanyard_core::OrganizationId;
use lanyard_proto::token::v1 as pb;
use support::idp::{FakeIdp, Kind};
use support::*;
use tokio::sync::Barrier;
use tonic::Code;

struct World {
    app: TestApp,
    google: FakeIdp,
    acme: String,
    _db: TestDb,
}

async fn world(backend: Backend) -> World {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let google = FakeIdp::start(Kind::Google, "acme.com").await;
    let acme = app.create_org("acme", &["acme.com"], "it@acme.com").await;
    app.connect(&acme, &google).await;
    World { app, google, acme, _db: db }
}

async fn refresh_rotation(backend: Backend) {
    let w = world(backend).await;
    let first = w.app.sign_in(&w.google.id_token("g-it", "it@acme.com"), &w.acme).await.expect("sign in");
    let second = w.app.refresh(&first.refresh_token, None).await.expect("refresh");
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_eq!(second.session.clone().unwrap().session_id, first.session.clone().unwrap().session_id);
    assert!(second.session.clone().unwrap().last_refresh_time.is_some());
    let third = w.app.refresh(&second.refresh_token, None).await.expect("refresh the new one");

    // The first token again: theft. The whole family dies, the newest token too.
    let err = w.app.refresh(&first.refresh_token, None).await.unwrap_err();
    assert_status(&err, Code::Unauthenticated, "TOKEN_REVOKED");
    let err = w.app.refresh(&third.refresh_token, None).await.unwrap_err();
    assert_status(&err, Code::Unauthenticated, "TOKEN_REVOKED");
    // Also through ExchangeToken's refresh grant.
    let grant = pb::RefreshTokenGrant { refresh_token: third.refresh_token.clone(), organization_id: None };
    let err = w.app.exchange(pb::exchange_token_request::Grant::RefreshTokenGrant(grant)).await.unwrap_err();
    assert_status(&err, Code::Unauthenticated, "TOKEN_REVOKED");
    let org = OrganizationId::parse(&w.acme).unwrap();
    let events = w.app.parts.store.events(org, 10).await.unwrap();
    assert!(events.iter().any(|(action, _)| action == "refresh_token.reused"), "{events:?}");
    let session = first.session.unwrap().session_id;
    let listed = w
        .app
        .tokens
        .clone()
        .list_sessions(op(pb::ListSessionsRequest {
            user_id: first.user_id.clone(),
            include_revoked: true,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert!(listed.iter().any(|s| s.session_id == session && s.revoke_time.is_some()));

    // A new sign-in is a new family.
    let fresh = w.app.sign_in(&w.google.id_token("g-it", "it@acme.com"), &w.acme).await.expect("sign in again");
    w.app.refresh(&fresh.refresh_token, None).await.expect("a new family refreshes");
    w.app.stop().await;
}

backend_tests!(reusing_a_refresh_token_revokes_its_family => refresh_rotation);

async fn refresh_race(backend: Backend) {
    let w = world(backend).await;
    for round in 0..5 {
        let signed_in = w.app.sign_in(&w.google.id_token("g-it", "it@acme.com"), &w.acme).await.expect("sign in");
        let barrier = Arc::new(Barrier::new(8));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (barrier, tokens, token) = (barrier.clone(), w.app.tokens.clone(), signed_in.refresh_token.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let mut tokens = tokens;
                tokens.refresh_session(pb::RefreshSessionRequest { refresh_token: token, ..Default::default() }).await
            }));
        }
        let mut won = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => won += 1,
                Err(e) => assert_status(&e, Code::Unauthenticated, "TOKEN_REVOKED"),
            }
        }
        assert_eq!(won, 1, "round {round}: exactly one refresh wins");
    }
    w.app.stop().await;
}

backend_tests!(concurrent_refreshes_of_one_token_one_wins => refresh_race);

async fn switching(backend: Backend) {
    let w = world(backend).await;
    let other = w.app.create_org("other", &["other.io"], "").await;
    let signed_in = w.app.sign_in(&w.google.id_token("g-it", "it@acme.com"), &w.acme).await.expect("sign in");
    // Not a member of `other`: refused, and nothing changed.
    let err = w.app.refresh(&signed_in.refresh_token, Some(&other)).await.unwrap_err();
    assert_status(&err, Code::PermissionDenied, "NOT_A_MEMBER");
    let missing = OrganizationId::new().to_string();
    let err = w.app.refresh(&signed_in.refresh_token, Some(&missing)).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let still = w.app.refresh(&signed_in.refresh_token, None).await.expect("the token is still good");
    assert_eq!(still.active_organization.unwrap().organization_id, w.acme);
    // A member now, but `other` does not accept the session's provider: sign in there instead.
    w.app.add_member(&other, "it@acme.com", &[]).await;
    let err = w.app.refresh(&still.refresh_token, Some(&other)).await.unwrap_err();
    assert_status(&err, Code::PermissionDenied, "REAUTHENTICATION_REQUIRED");
    // Once it trusts the same provider, the switch works (the refused one left the token usable).
    w.app.connect(&other, &w.google).await;
    let switched = w.app.refresh(&still.refresh_token, Some(&other)).await.expect("switch");
    let org = switched.active_organization.unwrap();
    assert_eq!((org.organization_id.as_str(), org.roles), (other.as_str(), vec!["member".to_owned()]));
    let principal =
        w.app.parts.access_tokens.verify(&switched.access_token, lanyard_core::Timestamp::now()).expect("valid");
    assert_eq!(principal.organization_id.to_string(), other);
    assert_eq!(principal.permissions.iter().map(|p| p.to_string()).collect::<Vec<_>>(), vec!["organization:read"]);
    w.app.stop().await;
}

backend_tests!(switching_organizations => switching);

async fn listing_and_revoking(backend: Backend) {
    let w = world(backend).await;
    let admin = w.app.sign_in(&w.google.id_token("g-it", "it@acme.com"), &w.acme).await.expect("admin");
    w.app.add_member(&w.acme, "bob@acme.com", &["member"]).await;
    let bob = w.app.sign_in(&w.google.id_token("g-bob", "bob@acme.com"), &w.acme).await.expect("bob");
    let list = |caller: String, user: String, org: Option<String>| {
        let mut tokens = w.app.tokens.clone();
        async move {
            tokens
                .list_sessions(with_key(
                    pb::ListSessionsRequest { user_id: user, organization_id: org, ..Default::default() },
                    &caller,
                ))
                .await
                .map(|r| r.into_inner().sessions)
        }
    };
    // The owner (an admin of acme) sees bob's sessions in acme; bob cannot see the owner's.
    assert_eq!(list(admin.access_token.clone(), bob.user_id.clone(), None).await.expect("admin lists").len(), 1);
    let err = list(bob.access_token.clone(), admin.user_id.clone(), None).await.unwrap_err();
    assert_status(&err, Code::PermissionDenied, "PERMISSION_MISSING");
    let err = list(admin.access_token.clone(), bob.user_id.clone(), Some(OrganizationId::new().to_string()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // Paging.
    for _ in 0..2 {
        w.app.sign_in(&w.google.id_token("g-bob", "bob@acme.com"), &w.acme).await.expect("bob again");
    }
    let page = w
        .app
        .tokens
        .clone()
        .list_sessions(op(pb::ListSessionsRequest { user_id: bob.user_id.clone(), page_size: 2, ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.sessions.len(), 2);
    let rest = w
        .app
        .tokens
        .clone()
        .list_sessions(op(pb::ListSessionsRequest {
            user_id: bob.user_id.clone(),
            page_size: 2,
            page_token: page.next_page_token,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((rest.sessions.len(), rest.next_page_token.as_str()), (1, ""));

    // The admin revokes bob's session; bob's refresh token is dead at once.
    let revoke = |caller: String, session: String| {
        let mut tokens = w.app.tokens.clone();
        async move {
            tokens
                .revoke_session(with_key(
                    pb::RevokeSessionRequest { session_id: session, ..Default::default() },
                    &caller,
                ))
                .await
        }
    };
    let bob_session = bob.session.clone().unwrap().session_id;
    let err = revoke(bob.access_token.clone(), admin.session.clone().unwrap().session_id).await.unwrap_err();
    assert_status(&err, Code::PermissionDenied, "PERMISSION_MISSING");
    let as_caller = |token: String| {
        let mut tenancy = w.app.tenancy.clone();
        let org = w.acme.clone();
        async move {
            tenancy
                .get_member(with_key(
                    lanyard_proto::tenancy::v1::GetMemberRequest {
                        organization_id: org,
                        user_id: String::new(),
                        ..Default::default()
                    },
                    &token,
                ))
                .await
        }
    };
    // Bob's access token authenticates (the request itself is malformed: no user id).
    assert_eq!(as_caller(bob.access_token.clone()).await.unwrap_err().code(), Code::InvalidArgument);
    revoke(admin.access_token.clone(), bob_session.clone()).await.expect("admin revokes");
    // Revoked: the very next call with the old access token is unauthenticated.
    assert_status(
        &as_caller(bob.access_token.clone()).await.unwrap_err(),
        Code::Unauthenticated,
        "CREDENTIALS_INVALID",
    );
    revoke(admin.access_token.clone(), bob_session.clone()).await.expect("revoking twice is no error");
    let err = w.app.refresh(&bob.refresh_token, None).await.unwrap_err();
    assert_status(&err, Code::Unauthenticated, "TOKEN_REVOKED");
    let missing = uuid::Uuid::now_v7().to_string();
    let err = revoke(OPERATOR_KEY.into(), missing.clone()).await.unwrap_err();
    assert_status(&err, Code::NotFound, "SESSION_NOT_FOUND");
    let bob_again = w.app.sign_in(&w.google.id_token("g-bob", "bob@acme.com"), &w.acme).await.expect("bob");
    let err = revoke(bob_again.access_token.clone(), missing).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "a member learns nothing about other sessions");
    w.app.stop().await;
}

backend_tests!(listing_and_revoking_sessions => listing_and_revoking);

async fn bad_inputs(backend: Backend) {
    let w = world(backend).await;
    let app = &w.app;
    let id_token = w.google.id_token("g-it", "it@acme.com");

    // ExchangeToken.
    let err = app.tokens.clone().exchange_token(pb::ExchangeTokenRequest::default()).await.unwrap_err();
    assert_status(&err, Code::InvalidArgument, "INVALID_ARGUMENT");
    for org in ["not-a-uuid", "0190f0f0-0000-7000-8000-00000000000", "{0190f0f0-0000-7000-8000-000000000000}"] {
        let err = app.sign_in(&id_token, org).await.unwrap_err();
        assert_status(&err, Code::InvalidArgument, "INVALID_ARGUMENT");
    }
    let err = app.sign_in("", &w.acme).await.unwrap_err();
    assert_status(&err, Code::InvalidArgument, "INVALID_ARGUMENT");
    for garbage in ["garbage", "a.b.c", &"x.".repeat(20_000)] {
        let err = app.sign_in(garbage, &w.acme).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    }
    let err = app.sign_in(&id_token, &OrganizationId::new().to_string()).await.unwrap_err();
    assert_status(&err, Code::NotFound, "ORGANIZATION_NOT_FOUND");
    // A first sign-in of someone who is nobody's member must name its organization.
    let stranger = w.google.id_token("g-stranger", "stranger@acme.com");
    let err = app.sign_in(&stranger, "").await.unwrap_err();
    assert_status(&err, Code::InvalidArgument, "INVALID_ARGUMENT");
    let invitation = pb::InvitationGrant { invitation_token: "nope".into(), id_token: id_token.clone(), nonce: None };
    let err = app.exchange(pb::exchange_token_request::Grant::InvitationGrant(invitation)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let long_id = pb::ExchangeTokenRequest {
        grant: Some(pb::exchange_token_request::Grant::IdTokenGrant(pb::IdTokenGrant {
            id_token: id_token.clone(),
            organization_id: w.acme.clone(),
            nonce: None,
        })),
        request_id: "r".repeat(500),
        ..Default::default()
    };
    let err = app.tokens.clone().exchange_token(long_id).await.unwrap_err();
    assert_status(&err, Code::InvalidArgument, "INVALID_ARGUMENT");

    // RefreshSession.
    let err = app.refresh("", None).await.unwrap_err();
    assert_status(&err, Code::InvalidArgument, "INVALID_ARGUMENT");
    for bad in ["unknown-token", &"r".repeat(10_000)] {
        let err = app.refresh(bad, None).await.unwrap_err();
        assert_status(&err, Code::Unauthenticated, "REFRESH_TOKEN_INVALID");
    }
    let signed_in = app.sign_in(&id_token, &w.acme).await.expect("sign in");
    let err = app.refresh(&signed_in.refresh_token, Some("not-a-uuid")).await.unwrap_err();
    assert_status(&err, Code::InvalidArgument, "INVALID_ARGUMENT");
    // An access token is not a refresh token.
    let err = app.refresh(&signed_in.access_token, None).await.unwrap_err();
    assert_status(&err, Code::Unauthenticated, "REFRESH_TOKEN_INVALID");
    app.refresh(&signed_in.refresh_token, None).await.expect("nothing above used the token");

    // RevokeSession and ListSessions.
    for bad in ["", "nope", "0190f0f0000070008000000000000000"] {
        let err = app
            .tokens
            .clone()
            .revoke_session(op(pb::RevokeSessionRequest { session_id: bad.into(), ..Default::default() }))
            .await
            .unwrap_err();
        assert_status(&err, Code::InvalidArgument, "INVALID_ARGUMENT");
    }
    let err = app
        .tokens
        .clone()
        .revoke_session(pb::RevokeSessionRequest { session_id: uuid::Uuid::now_v7().to_string(), ..Default::default() })
        .await
        .unwrap_err();
    assert_status(&err, Code::Unauthenticated, "CREDENTIALS_MISSING");
    for (user, size) in [("", 0), ("nope", 0), (signed_in.user_id.as_str(), -1)] {
        let err = app
            .tokens
            .clone()
            .list_sessions(op(pb::ListSessionsRequest { user_id: user.into(), page_size: size, ..Default::default() }))
            .await
            .unwrap_err();
        assert_status(&err, Code::InvalidArgument, "INVALID_ARGUMENT");
    }
    let err = app
        .tokens
        .clone()
        .list_sessions(with_key(
            pb::ListSessionsRequest { user_id: signed_in.user_id.clone(), ..Default::default() },
            "not-a-key-and-not-a-token",
        ))
        .await
        .unwrap_err();
    assert_status(&err, Code::Unauthenticated, "CREDENTIALS_INVALID");
    let err = app
        .tokens
        .clone()
        .rotate_signing_key(op(pb::RotateSigningKeyRequest { algorithm: 42, ..Default::default() }))
        .await
        .unwrap_err();
    assert_status(&err, Code::InvalidArgument, "INVALID_ARGUMENT");
    w.app.stop().await;
}

backend_tests!(malformed_inputs_are_refused => bad_inputs);

async fn replay(backend: Backend) {
    let w = world(backend).await;
    let signed_in = w.app.sign_in(&w.google.id_token("g-it", "it@acme.com"), &w.acme).await.expect("sign in");
    let refresh = |token: String, request_id: &str| {
        let mut tokens = w.app.tokens.clone();
        let request_id = request_id.to_owned();
        async move {
            tokens
                .refresh_session(pb::RefreshSessionRequest { refresh_token: token, organization_id: None, request_id })
                .await
                .map(|r| r.into_inner())
        }
    };
    // The reply is lost; the client retries with the same request_id and gets it again.
    let first = refresh(signed_in.refresh_token.clone(), "req-1").await.expect("refresh");
    let retried = refresh(signed_in.refresh_token.clone(), "req-1").await.expect("retry");
    assert_eq!(retried, first);
    let next = refresh(first.refresh_token.clone(), "req-2").await.expect("the replayed token is good");
    // Another request_id with the used token is a reuse: the family dies.
    let err = refresh(signed_in.refresh_token.clone(), "req-3").await.unwrap_err();
    assert_status(&err, Code::Unauthenticated, "TOKEN_REVOKED");
    let err = refresh(next.refresh_token.clone(), "req-4").await.unwrap_err();
    assert_status(&err, Code::Unauthenticated, "TOKEN_REVOKED");
    // Replaying needs the credential: the same request_id with another token runs anew.
    let other = w.app.sign_in(&w.google.id_token("g-it", "it@acme.com"), &w.acme).await.expect("sign in again");
    let own = refresh(other.refresh_token.clone(), "req-1").await.expect("another token, same request_id");
    assert_ne!(own.refresh_token, first.refresh_token);

    // ExchangeToken replays too.
    let req = pb::ExchangeTokenRequest {
        grant: Some(pb::exchange_token_request::Grant::IdTokenGrant(pb::IdTokenGrant {
            id_token: w.google.id_token("g-it", "it@acme.com"),
            organization_id: w.acme.clone(),
            nonce: None,
        })),
        request_id: "sign-in-1".into(),
        ..Default::default()
    };
    let a = w.app.tokens.clone().exchange_token(req.clone()).await.unwrap().into_inner();
    let b = w.app.tokens.clone().exchange_token(req).await.unwrap().into_inner();
    assert_eq!(a, b);
    w.app.stop().await;
}

backend_tests!(a_retry_with_the_same_request_id_replays => replay);

async fn deleted_org(backend: Backend) {
    let w = world(backend).await;
    let signed_in = w.app.sign_in(&w.google.id_token("g-it", "it@acme.com"), &w.acme).await.expect("sign in");
    w.app
        .tenancy
        .clone()
        .delete_organization(op(lanyard_proto::tenancy::v1::DeleteOrganizationRequest {
            organization_id: w.acme.clone(),
            ..Default::default()
        }))
        .await
        .expect("delete");
    let err = w.app.sign_in(&w.google.id_token("g-it", "it@acme.com"), &w.acme).await.unwrap_err();
    assert_status(&err, Code::PermissionDenied, "ORGANIZATION_INACTIVE");
    let err = w.app.refresh(&signed_in.refresh_token, None).await.unwrap_err();
    assert_status(&err, Code::PermissionDenied, "ORGANIZATION_INACTIVE");
    w.app.stop().await;
}

backend_tests!(a_deleted_organization_signs_nobody_in => deleted_org);

/// Without `organization_id`, a first sign-in goes to the person's only organization among those
/// whose connections accept the token and whose identity rules take it (beta has not verified
/// acme.com, acme has); with none, the caller must choose.
async fn first_sign_in_without_an_organization(backend: Backend) {
    let w = world(backend).await;
    let app = &w.app;
    let beta = app.create_org("beta", &["acme.com"], "").await;
    app.connect(&beta, &w.google).await;
    app.add_member(&w.acme, "one@acme.com", &["member"]).await;
    app.add_member(&w.acme, "two@acme.com", &["member"]).await;
    app.add_member(&beta, "two@acme.com", &["member"]).await;

    let one = app.sign_in(&w.google.id_token("g-one", "one@acme.com"), "").await.expect("the only organization");
    assert_eq!(one.active_organization.unwrap().organization_id, w.acme);
    let err = app.sign_in(&w.google.id_token("g-none", "none@acme.com"), "").await.unwrap_err();
    assert_status(&err, Code::InvalidArgument, "INVALID_ARGUMENT");
    // beta may not link a new identity by acme.com (acme verified it): two@ goes to acme.
    let err = app.sign_in(&w.google.id_token("g-two", "two@acme.com"), &beta).await.unwrap_err();
    assert_status(&err, Code::PermissionDenied, "EMAIL_DOMAIN_NOT_VERIFIED");
    let two = app.sign_in(&w.google.id_token("g-two", "two@acme.com"), "").await.expect("acme takes it");
    assert_eq!(two.active_organization.unwrap().organization_id, w.acme);
    // Once linked, the identity signs in to beta too; named once, later sign-ins remember it.
    app.sign_in(&w.google.id_token("g-two", "two@acme.com"), &beta).await.expect("named");
    let again = app.sign_in(&w.google.id_token("g-two", "two@acme.com"), "").await.expect("the last organization");
    assert_eq!(again.active_organization.unwrap().organization_id, beta);
}

backend_tests!(first_sign_in_defaults => first_sign_in_without_an_organization);
