//! Attacks on the unauthenticated token RPCs, each reproduced: guessing invitation tokens through
//! invitation grants (rate limited per peer, and unknown and real invitations answered alike),
//! malleated ES256 access tokens (the high-S twin is refused and never cached), and ID-token
//! replay (a second exchange, a year-old token, a missing nonce, many exchanges at once).

mod support;

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use lanyard_proto::authz::v1 as apb;
use lanyard_proto::invitation::v1 as ipb;
use lanyard_proto::token::v1 as pb;
use lanyard_proto::token::v1::token_service_client::TokenServiceClient;
use serde_json::json;
use support::idp::{FakeIdp, Kind};
use support::*;
use tokio::sync::Barrier;
use tonic::Code;
use tonic_types::StatusExt;

fn invitation_grant(invitation: &str, id_token: &str) -> pb::exchange_token_request::Grant {
    pb::exchange_token_request::Grant::InvitationGrant(pb::InvitationGrant {
        invitation_token: invitation.into(),
        id_token: id_token.into(),
        nonce: None,
    })
}

/// A well-formed invitation token that names no invitation.
fn guess() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// A client of the app's server whose connections come from `source` (another loopback address:
/// another peer).
fn client_from(app: &TestApp, source: [u8; 4]) -> TokenServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
        .expect("uri")
        .local_address(Some(std::net::IpAddr::from(source)))
        .connect_lazy();
    TokenServiceClient::new(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitation_guesses_are_rate_limited_per_peer() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::spawn_with(&db, |c| c.rate_limits = lanyard_token::RateLimits::default()).await;
    let google = FakeIdp::start(Kind::Google, "acme.com").await;
    let acme = app.create_org("acme", &["acme.com"], "it@acme.com").await;
    app.connect(&acme, &google).await;
    let id_token = google.id_token("g-mallory", "mallory@acme.com");

    let mut limited = 0;
    let mut answered = 0;
    let started = std::time::Instant::now();
    for _ in 0..500 {
        match app.exchange(invitation_grant(&guess(), &id_token)).await {
            Ok(_) => panic!("a guessed invitation signed someone in"),
            Err(e) if reason(&e) == "RATE_LIMITED" => {
                assert_eq!(e.code(), Code::ResourceExhausted);
                let retry = e.get_details_retry_info().and_then(|r| r.retry_delay).expect("a retry-after hint");
                assert!(retry >= Duration::from_secs(1) && retry <= Duration::from_secs(60), "{retry:?}");
                limited += 1;
            }
            Err(e) => {
                assert_status(&e, Code::Unauthenticated, "INVITATION_GRANT_INVALID");
                answered += 1;
            }
        }
    }
    // The default allows 20 invitation grants at once, then one every 3 s (20 a minute): however
    // slow the machine, the guesses looked up are bounded by the time they took.
    let regained = started.elapsed().as_secs() / 3 + 1;
    assert!(answered <= 20 + regained, "{answered} guesses were looked up in {:?}", started.elapsed());
    assert_eq!(limited + answered, 500);
    // The same peer's refreshes share its exchange budget, which the guesses spent.
    let err = app.refresh(&guess(), None).await.unwrap_err();
    assert_status(&err, Code::ResourceExhausted, "RATE_LIMITED");

    // Another peer is still served.
    let mut other = client_from(&app, [127, 0, 0, 2]);
    let req = pb::ExchangeTokenRequest { grant: Some(invitation_grant(&guess(), &id_token)), ..Default::default() };
    let err = other.exchange_token(req).await.unwrap_err();
    assert_status(&err, Code::Unauthenticated, "INVITATION_GRANT_INVALID");
    let signed_in = other
        .exchange_token(pb::ExchangeTokenRequest {
            grant: Some(pb::exchange_token_request::Grant::IdTokenGrant(pb::IdTokenGrant {
                id_token: google.id_token("g-it", "it@acme.com"),
                organization_id: acme.clone(),
                nonce: None,
            })),
            ..Default::default()
        })
        .await;
    assert!(signed_in.is_ok(), "the other peer signs in: {signed_in:?}");
    assert_eq!(app.parts.limiters.invitation_grant.peers(), 2);
    app.stop().await;
}

async fn unknown_and_real_invitations_answer_alike(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let google = FakeIdp::start(Kind::Google, "acme.com").await;
    let elsewhere = FakeIdp::start(Kind::Okta, "evil.example").await;
    let acme = app.create_org("acme", &["acme.com"], "it@acme.com").await;
    app.connect(&acme, &google).await;
    let real = app.invitation_token(OPERATOR_KEY, &acme, "bob@acme.com", &[]).await;
    let revoked = app.invitation_token(OPERATOR_KEY, &acme, "carol@acme.com", &[]).await;
    let listed = app
        .invitations
        .clone()
        .list_invitations(op(ipb::ListInvitationsRequest { organization_id: acme.clone(), ..Default::default() }))
        .await
        .unwrap()
        .into_inner()
        .invitations;
    let carol = listed.iter().find(|i| i.email == "carol@acme.com").expect("carol's invitation");
    app.invitations
        .clone()
        .revoke_invitation(op(ipb::RevokeInvitationRequest {
            organization_id: acme.clone(),
            invitation_id: carol.invitation_id.clone(),
            ..Default::default()
        }))
        .await
        .expect("revoke");

    // What a guesser holds: its own provider's token, a token of the organization's provider that
    // does not fit (another hosted domain), or garbage.
    let foreign = elsewhere.id_token("okta-mallory", "mallory@evil.example");
    let wrong_hd = google.sign(&{
        let mut c = google.claims("g-mallory", "mallory@acme.com");
        c["hd"] = json!("evil.example");
        c
    });
    for id_token in [foreign.as_str(), wrong_hd.as_str(), "garbage"] {
        let unknown = app.exchange(invitation_grant(&guess(), id_token)).await.unwrap_err();
        assert_status(&unknown, Code::Unauthenticated, "INVITATION_GRANT_INVALID");
        for known in [&real, &revoked] {
            let answer = app.exchange(invitation_grant(known, id_token)).await.unwrap_err();
            assert_eq!(
                (answer.code(), reason(&answer), answer.message()),
                (unknown.code(), reason(&unknown), unknown.message()),
                "a real invitation answers differently from none"
            );
        }
    }
    // Nothing was spent: the invited person still accepts.
    let bob = app.exchange(invitation_grant(&real, &google.id_token("g-bob", "bob@acme.com"))).await;
    assert!(bob.is_ok(), "{bob:?}");
    app.stop().await;
}

backend_tests!(valid_and_unknown_invitation_tokens_answer_alike => unknown_and_real_invitations_answer_alike);

/// The same ES256 token with `s` replaced by `n - s`: it still verifies mathematically.
fn high_s_twin(token: &str) -> String {
    let (signed, sig) = token.rsplit_once('.').unwrap();
    let bytes = URL_SAFE_NO_PAD.decode(sig).unwrap();
    let sig = p256::ecdsa::Signature::from_slice(&bytes).unwrap();
    let (r, s) = sig.split_scalars();
    let twin = p256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
    assert!(twin.normalize_s().is_some(), "the twin is the high-S one");
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(twin.to_bytes()))
}

async fn authorize(app: &TestApp, token: &str) -> apb::AuthorizeResponse {
    app.authz
        .clone()
        .authorize(apb::AuthorizeRequest {
            access_token: token.into(),
            permission: "members:read".into(),
            organization_id: None,
        })
        .await
        .expect("authorize")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_s_access_token_is_refused_and_not_cached() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::spawn(&db).await;
    let google = FakeIdp::start(Kind::Google, "acme.com").await;
    let acme = app.create_org("acme", &["acme.com"], "it@acme.com").await;
    app.connect(&acme, &google).await;
    let signed_in = app.sign_in(&google.id_token("g-it", "it@acme.com"), &acme).await.expect("sign in");
    let token = signed_in.access_token;
    assert!(lanyard_token::jose::es256_is_low_s(&token), "Lanyard signs in the low-S form");
    assert!(authorize(&app, &token).await.allowed);
    let authorizer = app.parts.tokens.authorizer();
    assert_eq!(authorizer.cached_tokens(), 1);

    let twin = high_s_twin(&token);
    let answer = authorize(&app, &twin).await;
    assert!(!answer.allowed);
    assert_eq!(answer.reason, apb::Decision::TokenInvalid as i32);
    assert_eq!(authorizer.cached_tokens(), 1, "the twin is not remembered as a second token");
    assert!(app.parts.access_tokens.verify(&twin, lanyard_core::Timestamp::now()).is_err());
    // Nor does it act as a caller.
    let err = app
        .tokens
        .clone()
        .list_sessions(with_key(
            pb::ListSessionsRequest { user_id: signed_in.user_id.clone(), ..Default::default() },
            &twin,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // Every token Lanyard mints is in the low-S form (half would not be without normalizing).
    for _ in 0..40 {
        let refreshed = app
            .refresh(&app.sign_in(&google.id_token("g-it", "it@acme.com"), &acme).await.unwrap().refresh_token, None)
            .await
            .unwrap();
        assert!(lanyard_token::jose::es256_is_low_s(&refreshed.access_token));
    }
    app.stop().await;
}

async fn sessions_of(app: &TestApp, user: &str) -> usize {
    app.tokens
        .clone()
        .list_sessions(op(pb::ListSessionsRequest {
            user_id: user.into(),
            include_revoked: true,
            page_size: 1000,
            ..Default::default()
        }))
        .await
        .expect("list sessions")
        .into_inner()
        .sessions
        .len()
}

async fn replay(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let google = FakeIdp::start(Kind::Google, "acme.com").await;
    let acme = app.create_org("acme", &["acme.com"], "it@acme.com").await;
    app.connect(&acme, &google).await;

    let id_token = google.id_token("g-it", "it@acme.com");
    let first = app.sign_in(&id_token, &acme).await.expect("first exchange");
    let again = app.sign_in(&id_token, &acme).await.unwrap_err();
    assert_status(&again, Code::Unauthenticated, "ID_TOKEN_REPLAYED");
    // Also without naming the organization, and through an invitation grant.
    let err = app.sign_in(&id_token, "").await.unwrap_err();
    assert_status(&err, Code::Unauthenticated, "ID_TOKEN_REPLAYED");
    let link = app.invitation_token(OPERATOR_KEY, &acme, "bob@acme.com", &[]).await;
    let err = app.exchange(invitation_grant(&link, &id_token)).await.unwrap_err();
    assert_status(&err, Code::Unauthenticated, "ID_TOKEN_REPLAYED");
    assert_eq!(sessions_of(&app, &first.user_id).await, 1, "no second session");

    // A client that lost the reply retries with its request_id and gets the same reply back.
    let second_token = google.id_token("g-it", "it@acme.com");
    let request = pb::ExchangeTokenRequest {
        grant: Some(pb::exchange_token_request::Grant::IdTokenGrant(pb::IdTokenGrant {
            id_token: second_token.clone(),
            organization_id: acme.clone(),
            nonce: None,
        })),
        request_id: "retry-1".into(),
        ..Default::default()
    };
    let a = app.tokens.clone().exchange_token(request.clone()).await.expect("exchange").into_inner();
    let b = app.tokens.clone().exchange_token(request).await.expect("the retry").into_inner();
    assert_eq!(a.session, b.session);
    let err = app.sign_in(&second_token, &acme).await.unwrap_err();
    assert_status(&err, Code::Unauthenticated, "ID_TOKEN_REPLAYED");
    assert_eq!(sessions_of(&app, &first.user_id).await, 2);
    app.stop().await;
}

backend_tests!(an_id_token_is_exchanged_once => replay);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_id_tokens_and_missing_nonces_are_refused() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::spawn(&db).await;
    let google = FakeIdp::start(Kind::Google, "acme.com").await;
    let acme = app.create_org("acme", &["acme.com"], "it@acme.com").await;
    app.connect(&acme, &google).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let with = |iat: i64, exp: i64| {
        let mut c = google.claims("g-it", "it@acme.com");
        c["iat"] = json!(iat);
        c["exp"] = json!(exp);
        google.sign(&c)
    };
    let year = 365 * 24 * 3600;
    let err = app.sign_in(&with(now - year, now + 10 * year), &acme).await.unwrap_err();
    assert_status(&err, Code::Unauthenticated, "ID_TOKEN_INVALID");
    let err = app.sign_in(&with(now - 12 * 60, now + 3600), &acme).await.unwrap_err();
    assert_status(&err, Code::Unauthenticated, "ID_TOKEN_INVALID");
    let err = app.sign_in(&with(now + 5 * 60, now + 3600), &acme).await.unwrap_err();
    assert_status(&err, Code::Unauthenticated, "ID_TOKEN_INVALID");
    app.sign_in(&with(now - 5 * 60, now + 3600), &acme).await.expect("five minutes old is fine");

    // The flow that produced this token set a nonce: a request without it is refused.
    let mut c = google.claims("g-it", "it@acme.com");
    c["nonce"] = json!("n-0S6_WzA2Mj");
    let with_nonce = google.sign(&c);
    let exchange = |nonce: Option<&str>| {
        app.exchange(pb::exchange_token_request::Grant::IdTokenGrant(pb::IdTokenGrant {
            id_token: with_nonce.clone(),
            organization_id: acme.clone(),
            nonce: nonce.map(str::to_owned),
        }))
    };
    assert_status(&exchange(None).await.unwrap_err(), Code::Unauthenticated, "ID_TOKEN_INVALID");
    assert_status(&exchange(Some("other")).await.unwrap_err(), Code::Unauthenticated, "ID_TOKEN_INVALID");
    exchange(Some("n-0S6_WzA2Mj")).await.expect("the matching nonce");
    app.stop().await;
}

async fn concurrent_replays(backend: Backend) {
    const TASKS: usize = 12;
    const ROUNDS: usize = 6;
    let db = TestDb::new(backend).await;
    let app = Arc::new(TestApp::spawn(&db).await);
    let google = FakeIdp::start(Kind::Google, "acme.com").await;
    let acme = app.create_org("acme", &["acme.com"], "it@acme.com").await;
    app.connect(&acme, &google).await;
    let mut user = String::new();
    for round in 0..ROUNDS {
        let id_token = Arc::new(google.id_token("g-it", "it@acme.com"));
        let barrier = Arc::new(Barrier::new(TASKS));
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let (app, id_token, barrier, acme) = (app.clone(), id_token.clone(), barrier.clone(), acme.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    app.sign_in(&id_token, &acme).await
                })
            })
            .collect();
        let mut won = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                Ok(r) => won.push(r),
                Err(e) => assert_status(&e, Code::Unauthenticated, "ID_TOKEN_REPLAYED"),
            }
        }
        assert_eq!(won.len(), 1, "round {round}: exactly one exchange of one ID token succeeds");
        user = won[0].user_id.clone();
    }
    assert_eq!(sessions_of(&app, &user).await, ROUNDS, "one session per ID token");
}

backend_tests!(concurrent_exchanges_of_one_id_token_make_one_session => concurrent_replays);
