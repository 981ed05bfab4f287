//! Lanyard access tokens as callers of TenancyService, InvitationService and TokenService: RPC ×
//! (operator, admin of A, member of A, admin of B, no caller, expired token, forged token). A member
//! acts only within its token's organization and only with its permissions; a token for B asking
//! about A is `PERMISSION_DENIED` or `NOT_FOUND`; an expired or forged token is `UNAUTHENTICATED`.

mod support;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use lanyard_core::Timestamp;
use lanyard_proto::invitation::v1 as ipb;
use lanyard_proto::tenancy::v1 as tpb;
use lanyard_proto::token::v1 as pb;
use lanyard_token::keys::{generate, KeyState, LoadedKey, SigningAlgorithm};
use serde_json::{json, Value};
use support::idp::{sign_raw, FakeIdp, Kind};
use support::*;
use tonic::Code;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Operator,
    AdminA,
    MemberA,
    AdminB,
    Nobody,
    Expired,
    Forged,
}

const EVERYONE: [Who; 7] =
    [Who::Operator, Who::AdminA, Who::MemberA, Who::AdminB, Who::Nobody, Who::Expired, Who::Forged];

fn request<T>(message: T, credential: Option<&str>) -> tonic::Request<T> {
    match credential {
        Some(c) => with_key(message, c),
        None => tonic::Request::new(message),
    }
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

async fn matrix(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let google = FakeIdp::start(Kind::Google, "acme.com").await;
    let okta = FakeIdp::start(Kind::Okta, "beta.io").await;
    let a = app.create_org("acme", &["acme.com"], "").await;
    let b = app.create_org("beta", &["beta.io"], "").await;
    app.connect(&a, &google).await;
    app.connect(&b, &okta).await;
    app.add_member(&a, "admin@acme.com", &["admin"]).await;
    let member_user = app.add_member(&a, "member@acme.com", &["member"]).await;
    app.add_member(&b, "admin@beta.io", &["admin"]).await;
    let admin_a = app.sign_in(&google.id_token("a-admin", "admin@acme.com"), &a).await.unwrap().access_token;
    let member_a = app.sign_in(&google.id_token("a-member", "member@acme.com"), &a).await.unwrap().access_token;
    let admin_b = app.sign_in(&okta.id_token("b-admin", "admin@beta.io"), &b).await.unwrap().access_token;

    let active = app.parts.keys.ring().active().unwrap();
    let header = json!({"alg": "ES256", "kid": active.kid, "typ": "at+jwt"});
    let now = Timestamp::now().0 / 1_000_000;
    let mut old = claims_of(&admin_a);
    old["iat"] = json!(now - 900);
    old["nbf"] = json!(now - 900);
    old["exp"] = json!(now - 600);
    let expired = sign_raw(&header, &old, active.encoding(), Algorithm::ES256);
    let other = LoadedKey::load(
        active.kid.clone(),
        SigningAlgorithm::Es256,
        KeyState::Active,
        Timestamp(0),
        None,
        &generate(SigningAlgorithm::Es256).unwrap(),
    )
    .unwrap();
    let forged = sign_raw(&header, &claims_of(&admin_a), other.encoding(), Algorithm::ES256);

    let credential = |who: Who| -> Option<String> {
        match who {
            Who::Operator => Some(OPERATOR_KEY.to_owned()),
            Who::AdminA => Some(admin_a.clone()),
            Who::MemberA => Some(member_a.clone()),
            Who::AdminB => Some(admin_b.clone()),
            Who::Nobody => None,
            Who::Expired => Some(expired.clone()),
            Who::Forged => Some(forged.clone()),
        }
    };

    let rpcs: &[(&str, &[Who])] = &[
        ("GetOrganization", &[Who::Operator, Who::AdminA, Who::MemberA]),
        ("ListOrganizations", &[Who::Operator]),
        ("CreateOrganization", &[Who::Operator]),
        ("ListMembers", &[Who::Operator, Who::AdminA]),
        ("GetMember (own)", &[Who::Operator, Who::AdminA, Who::MemberA]),
        ("AddMember", &[Who::Operator, Who::AdminA]),
        ("ListRoles", &[Who::Operator, Who::AdminA]),
        ("ListSsoConnections", &[Who::Operator, Who::AdminA]),
        ("GetSeatUsage", &[Who::Operator, Who::AdminA]),
        ("ListAuditEvents", &[Who::Operator, Who::AdminA]),
        ("ResolveIdentity", &[]),
        ("ListInvitations", &[Who::Operator, Who::AdminA]),
        ("CreateInvitation", &[Who::Operator, Who::AdminA]),
        ("ListSessions (member's)", &[Who::Operator, Who::AdminA, Who::MemberA]),
        ("RotateSigningKey", &[Who::Operator]),
    ];
    for (round, (rpc, allowed)) in rpcs.iter().enumerate() {
        for who in EVERYONE {
            let cred = credential(who);
            let cred = cred.as_deref();
            let email = format!("new-{round}-{who:?}@acme.com").to_ascii_lowercase();
            let result: Result<(), tonic::Status> = match *rpc {
                "GetOrganization" => {
                    let key = tpb::get_organization_request::Key::OrganizationId(a.clone());
                    app.tenancy
                        .clone()
                        .get_organization(request(tpb::GetOrganizationRequest { key: Some(key) }, cred))
                        .await
                        .map(|_| ())
                }
                "ListOrganizations" => app
                    .tenancy
                    .clone()
                    .list_organizations(request(tpb::ListOrganizationsRequest::default(), cred))
                    .await
                    .map(|_| ()),
                "CreateOrganization" => app
                    .tenancy
                    .clone()
                    .create_organization(request(
                        tpb::CreateOrganizationRequest {
                            slug: format!("org-{round}-{who:?}").to_ascii_lowercase(),
                            display_name: "X".into(),
                            seat_limit: 1,
                            ..Default::default()
                        },
                        cred,
                    ))
                    .await
                    .map(|_| ()),
                "ListMembers" => app
                    .tenancy
                    .clone()
                    .list_members(request(
                        tpb::ListMembersRequest { organization_id: a.clone(), ..Default::default() },
                        cred,
                    ))
                    .await
                    .map(|_| ()),
                "GetMember (own)" => app
                    .tenancy
                    .clone()
                    .get_member(request(
                        tpb::GetMemberRequest {
                            organization_id: a.clone(),
                            user_id: member_user.clone(),
                            ..Default::default()
                        },
                        cred,
                    ))
                    .await
                    .map(|_| ()),
                "AddMember" => app
                    .tenancy
                    .clone()
                    .add_member(request(
                        tpb::AddMemberRequest { organization_id: a.clone(), email, ..Default::default() },
                        cred,
                    ))
                    .await
                    .map(|_| ()),
                "ListRoles" => app
                    .tenancy
                    .clone()
                    .list_roles(request(
                        tpb::ListRolesRequest { organization_id: a.clone(), ..Default::default() },
                        cred,
                    ))
                    .await
                    .map(|_| ()),
                "ListSsoConnections" => app
                    .tenancy
                    .clone()
                    .list_sso_connections(request(
                        tpb::ListSsoConnectionsRequest { organization_id: a.clone(), ..Default::default() },
                        cred,
                    ))
                    .await
                    .map(|_| ()),
                "GetSeatUsage" => app
                    .tenancy
                    .clone()
                    .get_seat_usage(request(tpb::GetSeatUsageRequest { organization_id: a.clone() }, cred))
                    .await
                    .map(|_| ()),
                "ListAuditEvents" => app
                    .tenancy
                    .clone()
                    .list_audit_events(request(
                        tpb::ListAuditEventsRequest { organization_id: a.clone(), ..Default::default() },
                        cred,
                    ))
                    .await
                    .map(|_| ()),
                "ResolveIdentity" => app
                    .tenancy
                    .clone()
                    .resolve_identity(request(
                        tpb::ResolveIdentityRequest {
                            issuer: google.issuer.clone(),
                            subject: "someone".into(),
                            ..Default::default()
                        },
                        cred,
                    ))
                    .await
                    .map(|_| ()),
                "ListInvitations" => app
                    .invitations
                    .clone()
                    .list_invitations(request(
                        ipb::ListInvitationsRequest { organization_id: a.clone(), ..Default::default() },
                        cred,
                    ))
                    .await
                    .map(|_| ()),
                "CreateInvitation" => app
                    .invitations
                    .clone()
                    .create_invitation(request(
                        ipb::CreateInvitationRequest {
                            organization_id: a.clone(),
                            email,
                            send_email: true,
                            ..Default::default()
                        },
                        cred,
                    ))
                    .await
                    .map(|_| ()),
                "ListSessions (member's)" => app
                    .tokens
                    .clone()
                    .list_sessions(request(
                        pb::ListSessionsRequest { user_id: member_user.clone(), ..Default::default() },
                        cred,
                    ))
                    .await
                    .map(|_| ()),
                "RotateSigningKey" => app
                    .tokens
                    .clone()
                    .rotate_signing_key(request(
                        pb::RotateSigningKeyRequest { force: true, ..Default::default() },
                        cred,
                    ))
                    .await
                    .map(|_| ()),
                other => unreachable!("{other}"),
            };
            match (who, result) {
                (Who::Nobody | Who::Expired | Who::Forged, Ok(_)) => panic!("{rpc} × {who:?}: allowed"),
                (Who::Nobody | Who::Expired | Who::Forged, Err(e)) => {
                    assert_eq!(e.code(), Code::Unauthenticated, "{rpc} × {who:?}: {e:?}")
                }
                (_, Ok(_)) => assert!(allowed.contains(&who), "{rpc} × {who:?}: allowed"),
                (_, Err(e)) if allowed.contains(&who) => panic!("{rpc} × {who:?}: refused: {e:?}"),
                (_, Err(e)) => {
                    assert!(matches!(e.code(), Code::PermissionDenied | Code::NotFound), "{rpc} × {who:?}: {e:?}")
                }
            }
        }
    }
    app.stop().await;
}

backend_tests!(access_tokens_as_callers, matrix);
