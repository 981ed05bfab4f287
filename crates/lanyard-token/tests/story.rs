//! The customer's story end to end over gRPC, with a fake Google Workspace and a fake Okta on
//! loopback: the admin accepts the operator's invitation with an ID token, adds a colleague with
//! the access token as the caller, the colleague signs in, belongs to a second organization, switches to it and back
//! (once it accepts his provider), is removed
//! from the first and can no longer sign in or refresh into it, while the second still works.

mod support;

use lanyard_proto::authz::v1 as apb;
use lanyard_proto::tenancy::v1 as tpb;
use lanyard_proto::token::v1 as pb;
use support::idp::{FakeIdp, Kind};
use support::*;
use tonic::Code;

async fn accept(app: &TestApp, invitation: &str, id_token: &str) -> Result<pb::ExchangeTokenResponse, tonic::Status> {
    let grant = pb::InvitationGrant { invitation_token: invitation.into(), id_token: id_token.into(), nonce: None };
    app.exchange(pb::exchange_token_request::Grant::InvitationGrant(grant)).await
}

async fn authorize(app: &TestApp, access: &str, permission: &str) -> apb::AuthorizeResponse {
    app.authz
        .clone()
        .authorize(apb::AuthorizeRequest {
            access_token: access.into(),
            permission: permission.into(),
            organization_id: None,
        })
        .await
        .expect("authorize")
        .into_inner()
}

async fn story(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let google = FakeIdp::start(Kind::Google, "acme.com").await;
    let okta = FakeIdp::start(Kind::Okta, "beta.io").await;

    // The operator signs the contract: an organization, its SSO connection, and the admin's link.
    let acme = app.create_org("acme", &["acme.com"], "").await;
    app.connect(&acme, &google).await;
    let admin_link = app.invitation_token(OPERATOR_KEY, &acme, "it@acme.com", &["admin"]).await;

    // The admin opens the link and signs in with Google Workspace.
    let admin = accept(&app, &admin_link, &google.id_token("g-it", "it@acme.com")).await.expect("admin accepts");
    let org = admin.active_organization.clone().expect("active organization");
    assert_eq!(org.organization_id, acme);
    assert_eq!(org.organization_slug, "acme");
    assert_eq!(org.roles, vec!["admin".to_owned()]);
    assert_eq!(admin.token_type, "Bearer");
    assert_eq!(admin.expires_in.expect("expires_in").seconds, 300);
    assert!(admin.refresh_token.len() >= 43, "a refresh token carries at least 256 bits");
    let principal = app.parts.access_tokens.verify(&admin.access_token, lanyard_core::Timestamp::now()).unwrap();
    assert_eq!(principal.organization_id.to_string(), acme);
    assert!(principal.permissions.iter().any(|p| p.as_str() == "members:*"));

    // The link is spent: a second use signs nobody in.
    let again = accept(&app, &admin_link, &google.id_token("g-it", "it@acme.com")).await.unwrap_err();
    // The answer is the one for a token that never existed.
    assert_status(&again, Code::Unauthenticated, "INVITATION_GRANT_INVALID");

    // From then on the admin signs in with SSO alone, and the organization is remembered.
    let relogin = app.sign_in(&google.id_token("g-it", "it@acme.com"), "").await.expect("admin signs in again");
    assert_eq!(relogin.user_id, admin.user_id);
    assert_eq!(relogin.active_organization.expect("org").organization_id, acme);

    // The admin, with the access token as the caller, adds a colleague, who signs in.
    app.tenancy
        .clone()
        .add_member(with_key(
            tpb::AddMemberRequest {
                organization_id: acme.clone(),
                email: "bob@acme.com".into(),
                roles: vec!["member".into()],
                ..Default::default()
            },
            &admin.access_token,
        ))
        .await
        .expect("the admin adds bob");
    let bob = app.sign_in(&google.id_token("g-bob", "bob@acme.com"), &acme).await.expect("bob signs in");
    assert_eq!(bob.active_organization.clone().unwrap().roles, vec!["member".to_owned()]);
    assert_eq!(authorize(&app, &bob.access_token, "organization:read").await.reason, apb::Decision::Allowed as i32);
    let denied = authorize(&app, &bob.access_token, "members:write").await;
    assert_eq!(denied.reason, apb::Decision::PermissionMissing as i32);

    // Bob also belongs to a second organization, which signs in through Okta.
    let beta = app.create_org("beta", &["beta.io"], "").await;
    app.connect(&beta, &okta).await;
    let bob_in_beta = app.add_member(&beta, "bob@acme.com", &["admin"]).await;
    assert_eq!(bob_in_beta, bob.user_id, "one user per verified email");

    // Beta does not accept the way he signed in (Google, acme's provider): switching needs a
    // sign-in through beta's own provider...
    let err = app.refresh(&bob.refresh_token, Some(&beta)).await.unwrap_err();
    assert_eq!(lanyard_core::status::reason_of(&err).as_deref(), Some("REAUTHENTICATION_REQUIRED"));
    // ...until beta accepts Google sign-ins too. Then he switches to it and back without signing
    // in again (the refused switch changed nothing: his refresh token still works).
    app.connect(&beta, &google).await;
    let in_beta = app.refresh(&bob.refresh_token, Some(&beta)).await.expect("switch to beta");
    assert_eq!(in_beta.active_organization.clone().unwrap().organization_id, beta);
    assert_eq!(in_beta.active_organization.clone().unwrap().roles, vec!["admin".to_owned()]);
    assert_eq!(in_beta.session.clone().unwrap().session_id, bob.session.clone().unwrap().session_id);
    let back = app.refresh(&in_beta.refresh_token, Some(&acme)).await.expect("switch back");
    assert_eq!(back.active_organization.clone().unwrap().organization_id, acme);

    // The admin removes him from acme.
    app.tenancy
        .clone()
        .remove_member(with_key(
            tpb::RemoveMemberRequest {
                organization_id: acme.clone(),
                user_id: bob.user_id.clone(),
                ..Default::default()
            },
            &admin.access_token,
        ))
        .await
        .expect("admin removes bob");

    // He can no longer refresh into acme — and the session stays as it was —
    let err = app.refresh(&back.refresh_token, None).await.unwrap_err();
    assert_status(&err, Code::PermissionDenied, "NOT_A_MEMBER");
    let err = app.refresh(&back.refresh_token, Some(&acme)).await.unwrap_err();
    assert_status(&err, Code::PermissionDenied, "NOT_A_MEMBER");
    // nor sign in to it,
    let err = app.sign_in(&google.id_token("g-bob", "bob@acme.com"), &acme).await.unwrap_err();
    assert_status(&err, Code::PermissionDenied, "NOT_A_MEMBER");
    // while beta still works, with the same refresh token,
    let in_beta = app.refresh(&back.refresh_token, Some(&beta)).await.expect("beta still works");
    assert_eq!(in_beta.active_organization.unwrap().organization_id, beta);
    // and his Google identity, already his, signs him in to beta, which accepts Google now.
    let via_google = app.sign_in(&google.id_token("g-bob", "bob@acme.com"), &beta).await.expect("google sign-in");
    assert_eq!(via_google.user_id, bob.user_id);
    // Beta's own IdP cannot claim him: acme.com is verified for acme, not beta, so beta's
    // provider cannot vouch for an acme.com email, and nothing is linked.
    let err = app.sign_in(&okta.id_token("okta-bob", "bob@acme.com"), &beta).await.unwrap_err();
    assert_status(&err, Code::PermissionDenied, "EMAIL_DOMAIN_NOT_VERIFIED");

    // Bob lists and revokes his own sessions with his access token.
    let sessions = app
        .tokens
        .clone()
        .list_sessions(with_key(
            pb::ListSessionsRequest { user_id: bob.user_id.clone(), ..Default::default() },
            &via_google.access_token,
        ))
        .await
        .expect("list own sessions")
        .into_inner()
        .sessions;
    assert_eq!(sessions.len(), 2);
    let first = bob.session.clone().unwrap().session_id;
    let revoked = app
        .tokens
        .clone()
        .revoke_session(with_key(
            pb::RevokeSessionRequest { session_id: first.clone(), ..Default::default() },
            &via_google.access_token,
        ))
        .await
        .expect("revoke own session")
        .into_inner();
    assert!(revoked.session.unwrap().revoke_time.is_some());
    let err = app.refresh(&in_beta.refresh_token, None).await.unwrap_err();
    assert_status(&err, Code::Unauthenticated, "TOKEN_REVOKED");
    let decision = authorize(&app, &in_beta.access_token, "organization:read").await;
    assert_eq!(decision.reason, apb::Decision::SessionRevoked as i32);
    assert!(!decision.allowed);

    // A member of acme cannot see bob's sessions, nor revoke them.
    let err = app
        .tokens
        .clone()
        .revoke_session(with_key(
            pb::RevokeSessionRequest {
                session_id: via_google.session.clone().unwrap().session_id,
                ..Default::default()
            },
            &admin.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // A suspended organization signs nobody in, and refreshes nobody into it.
    app.tenancy
        .clone()
        .update_organization(op(tpb::UpdateOrganizationRequest {
            organization: Some(tpb::Organization {
                organization_id: acme.clone(),
                status: tpb::OrganizationStatus::Suspended as i32,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["status".into()] }),
            ..Default::default()
        }))
        .await
        .expect("suspend");
    let err = app.sign_in(&google.id_token("g-it", "it@acme.com"), &acme).await.unwrap_err();
    assert_status(&err, Code::PermissionDenied, "ORGANIZATION_INACTIVE");
    let err = app.refresh(&relogin.refresh_token, None).await.unwrap_err();
    assert_status(&err, Code::PermissionDenied, "ORGANIZATION_INACTIVE");
    app.stop().await;
}

backend_tests!(customer_story => story);

/// The same sign-in, with the token service reaching tenancy and invitation over TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_across_processes() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::spawn_over_channel(&db).await;
    let google = FakeIdp::start(Kind::Google, "acme.com").await;
    let acme = app.create_org("acme", &["acme.com"], "").await;
    app.connect(&acme, &google).await;
    let link = app.invitation_token(OPERATOR_KEY, &acme, "it@acme.com", &["admin"]).await;
    let admin = accept(&app, &link, &google.id_token("g-it", "it@acme.com")).await.expect("accept over a channel");
    assert_eq!(admin.active_organization.unwrap().organization_id, acme);
    let again = app.sign_in(&google.id_token("g-it", "it@acme.com"), &acme).await.expect("sign in over a channel");
    app.refresh(&again.refresh_token, None).await.expect("refresh over a channel");
    app.stop().await;
}
