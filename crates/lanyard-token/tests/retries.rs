//! Idempotent retries by `request_id`, the same in every service (`lanyard_core::idempotency`):
//! concurrent duplicates run once and all get the first reply, an id reused for another request is
//! refused and changes nothing, ids are scoped to the end caller (also when one service calls
//! another on that caller's behalf), a replay never hands out a refresh token that was used since,
//! and replies that hold secrets are sealed at rest. Over real gRPC on both databases.

mod support;

use std::sync::Arc;

use lanyard_proto::invitation::v1 as ipb;
use lanyard_proto::tenancy::v1 as tpb;
use lanyard_proto::token::v1 as pb;
use support::idp::{FakeIdp, Kind};
use support::*;
use tokio::sync::Barrier;
use tonic::Code;

const ROUNDS: usize = 8;
const TASKS: usize = 6;

struct World {
    app: TestApp,
    google: FakeIdp,
    acme: String,
    db: TestDb,
}

async fn world(backend: Backend) -> World {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let google = FakeIdp::start(Kind::Google, "acme.com").await;
    let acme = app.create_org_with_seats("acme", &["acme.com"], "it@acme.com", 100).await;
    app.connect(&acme, &google).await;
    World { app, google, acme, db }
}

fn refresh_request(token: &str, request_id: &str) -> pb::RefreshSessionRequest {
    pb::RefreshSessionRequest { refresh_token: token.into(), organization_id: None, request_id: request_id.into() }
}

/// Many retries of one refresh released at once: one rotation, every caller gets its reply, and
/// the session lives on (before, the duplicates ran too and were taken for theft).
async fn concurrent_refresh_retries(backend: Backend) {
    let w = world(backend).await;
    for round in 0..ROUNDS {
        let signed_in = w.app.sign_in(&w.google.id_token("g-it", "it@acme.com"), &w.acme).await.expect("sign in");
        let barrier = Arc::new(Barrier::new(TASKS));
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let (mut tokens, barrier) = (w.app.tokens.clone(), barrier.clone());
                let req = refresh_request(&signed_in.refresh_token, &format!("refresh-{round}"));
                tokio::spawn(async move {
                    barrier.wait().await;
                    tokens.refresh_session(req).await.map(tonic::Response::into_inner)
                })
            })
            .collect();
        let mut replies = Vec::new();
        for t in tasks {
            replies.push(t.await.unwrap().unwrap_or_else(|e| panic!("round {round}: a retry failed: {e:?}")));
        }
        assert!(replies.windows(2).all(|p| p[0] == p[1]), "round {round}: retries got different replies");
        let next = w.app.refresh(&replies[0].refresh_token, None).await;
        assert!(next.is_ok(), "round {round}: the session died: {next:?}");
    }
    w.app.stop().await;
}

backend_tests!(concurrent_refresh_retries_rotate_once => concurrent_refresh_retries);

/// A lost reply may be fetched again, but not once its refresh token was used: that replay is a
/// reuse, and the family dies.
async fn replay_after_use(backend: Backend) {
    let w = world(backend).await;
    let signed_in = w.app.sign_in(&w.google.id_token("g-it", "it@acme.com"), &w.acme).await.expect("sign in");
    let mut tokens = w.app.tokens.clone();
    let first = tokens.refresh_session(refresh_request(&signed_in.refresh_token, "r-1")).await.unwrap().into_inner();
    let again = tokens.refresh_session(refresh_request(&signed_in.refresh_token, "r-1")).await.unwrap().into_inner();
    assert_eq!(first, again, "a retry before use replays");
    let second = w.app.refresh(&first.refresh_token, None).await.expect("the replied token is good");
    let err = tokens.refresh_session(refresh_request(&signed_in.refresh_token, "r-1")).await.unwrap_err();
    assert_status(&err, Code::Unauthenticated, "TOKEN_REVOKED");
    let err = w.app.refresh(&second.refresh_token, None).await.unwrap_err();
    assert_status(&err, Code::Unauthenticated, "TOKEN_REVOKED");
    w.app.stop().await;
}

backend_tests!(a_replay_after_the_token_was_used_is_reuse => replay_after_use);

async fn sessions(db: &TestDb) -> i64 {
    let pool = lanyard_core::db::Database::connect(&db.config("token")).await.expect("token database");
    let n = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM sessions").fetch_one(&pool.pool).await.unwrap();
    pool.pool.close().await;
    n
}

/// The same id with other fields is a client bug, not a retry: refused, nothing written.
async fn reused_ids(backend: Backend) {
    let w = world(backend).await;
    let exchange = |user_agent: &str| pb::ExchangeTokenRequest {
        grant: Some(pb::exchange_token_request::Grant::IdTokenGrant(pb::IdTokenGrant {
            id_token: w.google.id_token("g-it", "it@acme.com"),
            organization_id: w.acme.clone(),
            nonce: None,
        })),
        request_id: "sign-in-1".into(),
        user_agent: Some(user_agent.into()),
        ..Default::default()
    };
    let first = exchange("browser/1");
    w.app.tokens.clone().exchange_token(first.clone()).await.expect("sign in");
    let before = sessions(&w.db).await;
    let mut other = first.clone();
    other.user_agent = Some("browser/2".into());
    let err = w.app.tokens.clone().exchange_token(other).await.unwrap_err();
    assert_status(&err, Code::FailedPrecondition, "REQUEST_ID_REUSED");
    assert_eq!(sessions(&w.db).await, before, "a refused retry wrote a session");

    // Tenancy and invitations answer the same.
    let add = |email: &str| {
        op(tpb::AddMemberRequest {
            organization_id: w.acme.clone(),
            email: email.into(),
            roles: vec!["member".into()],
            waive_domain_check: true,
            request_id: "add-1".into(),
            ..Default::default()
        })
    };
    w.app.tenancy.clone().add_member(add("a@acme.com")).await.expect("add a");
    let err = w.app.tenancy.clone().add_member(add("b@acme.com")).await.unwrap_err();
    assert_status(&err, Code::FailedPrecondition, "REQUEST_ID_REUSED");
    let members = w
        .app
        .tenancy
        .clone()
        .list_members(op(tpb::ListMembersRequest { organization_id: w.acme.clone(), ..Default::default() }))
        .await
        .unwrap()
        .into_inner()
        .members;
    assert!(members.iter().all(|m| m.email != "b@acme.com"), "the refused AddMember added b");

    let invite = |email: &str| {
        op(ipb::CreateInvitationRequest {
            organization_id: w.acme.clone(),
            email: email.into(),
            roles: vec!["member".into()],
            request_id: "invite-1".into(),
            ..Default::default()
        })
    };
    w.app.invitations.clone().create_invitation(invite("c@acme.com")).await.expect("invite c");
    let err = w.app.invitations.clone().create_invitation(invite("d@acme.com")).await.unwrap_err();
    assert_status(&err, Code::FailedPrecondition, "REQUEST_ID_REUSED");

    // One rule for a malformed id, everywhere.
    let mut bad = exchange("browser/1");
    bad.request_id = "a\u{0}b".into();
    let err = w.app.tokens.clone().exchange_token(bad).await.unwrap_err();
    assert_status(&err, Code::InvalidArgument, "INVALID_ARGUMENT");
    let mut bad = add("e@acme.com");
    bad.get_mut().request_id = "a\nb".into();
    let err = w.app.tenancy.clone().add_member(bad).await.unwrap_err();
    assert_status(&err, Code::InvalidArgument, "INVALID_ARGUMENT");
    let mut bad = invite("e@acme.com");
    bad.get_mut().request_id = "a\u{7f}".into();
    let err = w.app.invitations.clone().create_invitation(bad).await.unwrap_err();
    assert_status(&err, Code::InvalidArgument, "INVALID_ARGUMENT");
    w.app.stop().await;
}

backend_tests!(an_id_reused_for_another_request_is_refused => reused_ids);

/// Concurrent retries of one AddMember: one member, one seat, the same reply for all.
async fn concurrent_add_member(backend: Backend) {
    let w = world(backend).await;
    for round in 0..ROUNDS {
        let barrier = Arc::new(Barrier::new(TASKS));
        let email = format!("p{round}@acme.com");
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let (mut tenancy, barrier) = (w.app.tenancy.clone(), barrier.clone());
                let req = tpb::AddMemberRequest {
                    organization_id: w.acme.clone(),
                    email: email.clone(),
                    roles: vec!["member".into()],
                    waive_domain_check: true,
                    request_id: format!("add-{round}"),
                    ..Default::default()
                };
                tokio::spawn(async move {
                    barrier.wait().await;
                    tenancy.add_member(op(req)).await.map(tonic::Response::into_inner)
                })
            })
            .collect();
        let mut replies = Vec::new();
        for t in tasks {
            replies.push(t.await.unwrap().unwrap_or_else(|e| panic!("round {round}: a retry failed: {e:?}")));
        }
        assert!(replies.windows(2).all(|p| p[0] == p[1]), "round {round}: retries got different replies");
    }
    let usage = w
        .app
        .tenancy
        .clone()
        .get_seat_usage(op(tpb::GetSeatUsageRequest { organization_id: w.acme.clone() }))
        .await
        .unwrap()
        .into_inner()
        .usage
        .unwrap();
    // The owner and one seat per round.
    assert_eq!(usage.active, 1 + ROUNDS as i32);
    w.app.stop().await;
}

backend_tests!(concurrent_add_member_retries_add_once => concurrent_add_member);

/// Two people who both pick `request_id = "1"` accept their own invitations: the token service
/// forwards an id derived from each caller's credential, not the caller's own id under its service
/// key (before, the second got the first one's reply or an error and stayed invited).
async fn same_id_two_people(backend: Backend) {
    let w = world(backend).await;
    let mut links = Vec::new();
    for email in ["ann@acme.com", "ben@acme.com"] {
        let invited = w
            .app
            .invitations
            .clone()
            .create_invitation(op(ipb::CreateInvitationRequest {
                organization_id: w.acme.clone(),
                email: email.into(),
                roles: vec!["member".into()],
                ..Default::default()
            }))
            .await
            .expect("invite")
            .into_inner();
        let link = invited.invitation_link.expect("a link");
        links.push((email, link.rsplit_once("token=").expect("a token").1.to_owned()));
    }
    for (email, token) in &links {
        let subject = format!("g-{email}");
        let req = pb::ExchangeTokenRequest {
            grant: Some(pb::exchange_token_request::Grant::InvitationGrant(pb::InvitationGrant {
                invitation_token: token.clone(),
                id_token: w.google.id_token(&subject, email),
                nonce: None,
            })),
            request_id: "1".into(),
            ..Default::default()
        };
        let done = w.app.tokens.clone().exchange_token(req).await;
        assert!(done.is_ok(), "{email}: {done:?}");
    }
    let pending = w
        .app
        .invitations
        .clone()
        .list_invitations(op(ipb::ListInvitationsRequest {
            organization_id: w.acme.clone(),
            status: ipb::InvitationStatus::Pending as i32,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .invitations;
    assert!(pending.is_empty(), "still pending: {pending:?}");
    w.app.stop().await;
}

backend_tests!(two_people_with_the_same_request_id_both_accept => same_id_two_people);

/// A stored reply of CreateInvitation holds the invitation link: it is sealed at rest.
async fn sealed_replies(backend: Backend) {
    let w = world(backend).await;
    let invited = w
        .app
        .invitations
        .clone()
        .create_invitation(op(ipb::CreateInvitationRequest {
            organization_id: w.acme.clone(),
            email: "sam@acme.com".into(),
            roles: vec!["member".into()],
            request_id: "invite-sam".into(),
            ..Default::default()
        }))
        .await
        .expect("invite")
        .into_inner();
    let link = invited.invitation_link.expect("a link");
    let token = link.rsplit_once("token=").unwrap().1.to_owned();
    let pool = lanyard_core::db::Database::connect(&w.db.config("invitation")).await.expect("invitation database");
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT response FROM idempotency_keys").fetch_all(&pool.pool).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert!(stored[0].starts_with("v1:"), "not sealed: {}", stored[0]);
    assert!(!stored[0].contains(&token), "the link is readable at rest");
    pool.pool.close().await;
    w.app.stop().await;
}

backend_tests!(replies_holding_links_are_sealed => sealed_replies);
