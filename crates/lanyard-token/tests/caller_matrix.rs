//! Lanyard access tokens as callers of TenancyService, InvitationService and TokenService: every RPC
//! that takes a caller credential × (operator, admin of A, member of A, admin of B, no caller,
//! expired token, forged token). (PreviewInvitation, ExchangeToken, RefreshSession, GetJwks and
//! Authorize take none: their own tests cover them.) A member
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

    // Room for the fresh members, invitations and reservations the matrix makes below.
    app.tenancy
        .clone()
        .update_organization(with_key(
            tpb::UpdateOrganizationRequest {
                organization: Some(tpb::Organization {
                    organization_id: a.clone(),
                    seat_limit: 500,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths: vec!["seat_limit".into()] }),
                request_id: String::new(),
            },
            OPERATOR_KEY,
        ))
        .await
        .unwrap();

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
        ("UpdateOrganization (name)", &[Who::Operator]),
        ("DeleteOrganization", &[Who::Operator]),
        ("AddDomain", &[Who::Operator]),
        ("VerifyDomain", &[Who::Operator]),
        ("RecordAuditEvent", &[]),
        ("RemoveDomain", &[Who::Operator]),
        ("UpdateMemberRoles", &[Who::Operator, Who::AdminA]),
        ("RemoveMember", &[Who::Operator, Who::AdminA]),
        ("TransferOwnership", &[Who::Operator]),
        ("ListUserOrganizations (member's)", &[Who::Operator, Who::MemberA]),
        ("CreateRole", &[Who::Operator, Who::AdminA]),
        ("UpdateRole", &[Who::Operator, Who::AdminA]),
        ("DeleteRole", &[Who::Operator, Who::AdminA]),
        ("CreateSsoConnection", &[Who::Operator, Who::AdminA]),
        ("DeleteSsoConnection", &[Who::Operator, Who::AdminA]),
        ("ReserveSeat", &[]),
        ("ReleaseSeat", &[]),
        ("ClaimSeat", &[]),
        ("FindSsoConnections", &[]),
        ("GetInvitation", &[Who::Operator, Who::AdminA]),
        ("RevokeInvitation", &[Who::Operator, Who::AdminA]),
        ("ResendInvitation", &[Who::Operator, Who::AdminA]),
        ("AcceptInvitation", &[]),
        ("RevokeSession (member's)", &[Who::Operator, Who::AdminA, Who::MemberA]),
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
                            connection_id: uuid::Uuid::now_v7().to_string(),
                            organization_id: a.clone(),
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
                "UpdateOrganization (name)" => app
                    .tenancy
                    .clone()
                    .update_organization(request(
                        tpb::UpdateOrganizationRequest {
                            organization: Some(tpb::Organization {
                                organization_id: a.clone(),
                                display_name: format!("Acme {round} {who:?}"),
                                ..Default::default()
                            }),
                            update_mask: Some(prost_types::FieldMask { paths: vec!["display_name".into()] }),
                            request_id: String::new(),
                        },
                        cred,
                    ))
                    .await
                    .map(|_| ()),
                "DeleteOrganization" => {
                    let doomed = app.create_org(&format!("doomed-{round}-{who:?}").to_ascii_lowercase(), &[], "").await;
                    app.tenancy
                        .clone()
                        .delete_organization(request(
                            tpb::DeleteOrganizationRequest { organization_id: doomed, request_id: String::new() },
                            cred,
                        ))
                        .await
                        .map(|_| ())
                }
                "AddDomain" | "RemoveDomain" => {
                    let domain = format!("d-{round}-{who:?}.example.com").to_ascii_lowercase();
                    let add = tpb::AddDomainRequest {
                        organization_id: a.clone(),
                        domain: domain.clone(),
                        ..Default::default()
                    };
                    if *rpc == "AddDomain" {
                        app.tenancy.clone().add_domain(request(add, cred)).await.map(|_| ())
                    } else {
                        app.tenancy.clone().add_domain(with_key(add, OPERATOR_KEY)).await.unwrap();
                        app.tenancy
                            .clone()
                            .remove_domain(request(
                                tpb::RemoveDomainRequest {
                                    organization_id: a.clone(),
                                    domain,
                                    request_id: String::new(),
                                },
                                cred,
                            ))
                            .await
                            .map(|_| ())
                    }
                }
                "VerifyDomain" => {
                    let domain = format!("v-{round}-{who:?}.example.com").to_ascii_lowercase();
                    let add = tpb::AddDomainRequest {
                        organization_id: a.clone(),
                        domain: domain.clone(),
                        ..Default::default()
                    };
                    app.tenancy.clone().add_domain(with_key(add, OPERATOR_KEY)).await.unwrap();
                    let verify = tpb::VerifyDomainRequest {
                        organization_id: a.clone(),
                        domain,
                        method: tpb::DomainVerificationMethod::Operator as i32,
                        ..Default::default()
                    };
                    app.tenancy.clone().verify_domain(request(verify, cred)).await.map(|_| ())
                }
                "RecordAuditEvent" => app
                    .tenancy
                    .clone()
                    .record_audit_event(request(
                        tpb::RecordAuditEventRequest {
                            organization_id: a.clone(),
                            actor: "user:x".into(),
                            action: "session.switched".into(),
                            target: "session:x".into(),
                            ..Default::default()
                        },
                        cred,
                    ))
                    .await
                    .map(|_| ()),
                "UpdateMemberRoles" | "RemoveMember" | "TransferOwnership" => {
                    let target = app.add_member(&a, &email, &["member"]).await;
                    let mut t = app.tenancy.clone();
                    match *rpc {
                        "UpdateMemberRoles" => t
                            .update_member_roles(request(
                                tpb::UpdateMemberRolesRequest {
                                    organization_id: a.clone(),
                                    user_id: target,
                                    roles: vec!["admin".into()],
                                    request_id: String::new(),
                                },
                                cred,
                            ))
                            .await
                            .map(|_| ()),
                        "RemoveMember" => t
                            .remove_member(request(
                                tpb::RemoveMemberRequest {
                                    organization_id: a.clone(),
                                    user_id: target,
                                    request_id: String::new(),
                                },
                                cred,
                            ))
                            .await
                            .map(|_| ()),
                        _ => t
                            .transfer_ownership(request(
                                tpb::TransferOwnershipRequest {
                                    organization_id: a.clone(),
                                    new_owner_user_id: target,
                                    request_id: String::new(),
                                },
                                cred,
                            ))
                            .await
                            .map(|_| ()),
                    }
                }
                "ListUserOrganizations (member's)" => app
                    .tenancy
                    .clone()
                    .list_user_organizations(request(
                        tpb::ListUserOrganizationsRequest { user_id: member_user.clone(), ..Default::default() },
                        cred,
                    ))
                    .await
                    .map(|_| ()),
                "CreateRole" | "UpdateRole" | "DeleteRole" => {
                    let name = format!("r-{round}-{who:?}").to_ascii_lowercase();
                    let create = tpb::CreateRoleRequest {
                        organization_id: a.clone(),
                        name: name.clone(),
                        // One the admin holds: a member caller grants only what it holds.
                        permissions: vec!["seats:read".into()],
                        ..Default::default()
                    };
                    let mut t = app.tenancy.clone();
                    if *rpc == "CreateRole" {
                        t.create_role(request(create, cred)).await.map(|_| ())
                    } else {
                        t.create_role(with_key(create, OPERATOR_KEY)).await.unwrap();
                        if *rpc == "UpdateRole" {
                            t.update_role(request(
                                tpb::UpdateRoleRequest {
                                    role: Some(tpb::Role {
                                        organization_id: a.clone(),
                                        name,
                                        description: "changed".into(),
                                        ..Default::default()
                                    }),
                                    update_mask: Some(prost_types::FieldMask { paths: vec!["description".into()] }),
                                    request_id: String::new(),
                                },
                                cred,
                            ))
                            .await
                            .map(|_| ())
                        } else {
                            t.delete_role(request(
                                tpb::DeleteRoleRequest { organization_id: a.clone(), name, request_id: String::new() },
                                cred,
                            ))
                            .await
                            .map(|_| ())
                        }
                    }
                }
                "CreateSsoConnection" | "DeleteSsoConnection" => {
                    let create = tpb::CreateSsoConnectionRequest {
                        organization_id: a.clone(),
                        kind: tpb::SsoConnectionKind::Oidc as i32,
                        issuer: format!("https://idp-{round}-{who:?}.example.com").to_ascii_lowercase(),
                        client_id: "client".into(),
                        ..Default::default()
                    };
                    let mut t = app.tenancy.clone();
                    if *rpc == "CreateSsoConnection" {
                        t.create_sso_connection(request(create, cred)).await.map(|_| ())
                    } else {
                        let id = t
                            .create_sso_connection(with_key(create, OPERATOR_KEY))
                            .await
                            .unwrap()
                            .into_inner()
                            .connection
                            .unwrap()
                            .connection_id;
                        t.delete_sso_connection(request(
                            tpb::DeleteSsoConnectionRequest {
                                organization_id: a.clone(),
                                connection_id: id,
                                request_id: String::new(),
                            },
                            cred,
                        ))
                        .await
                        .map(|_| ())
                    }
                }
                "ReserveSeat" => app
                    .tenancy
                    .clone()
                    .reserve_seat(request(
                        tpb::ReserveSeatRequest { organization_id: a.clone(), ..Default::default() },
                        cred,
                    ))
                    .await
                    .map(|_| ()),
                "ReleaseSeat" => app
                    .tenancy
                    .clone()
                    .release_seat(request(
                        tpb::ReleaseSeatRequest {
                            organization_id: a.clone(),
                            reservation_id: uuid::Uuid::now_v7().to_string(),
                        },
                        cred,
                    ))
                    .await
                    .map(|_| ()),
                "ClaimSeat" => app
                    .tenancy
                    .clone()
                    .claim_seat(request(
                        tpb::ClaimSeatRequest {
                            organization_id: a.clone(),
                            reservation_id: uuid::Uuid::now_v7().to_string(),
                            user_id: member_user.clone(),
                            ..Default::default()
                        },
                        cred,
                    ))
                    .await
                    .map(|_| ()),
                "FindSsoConnections" => app
                    .tenancy
                    .clone()
                    .find_sso_connections(request(
                        tpb::FindSsoConnectionsRequest { issuer: google.issuer.clone(), ..Default::default() },
                        cred,
                    ))
                    .await
                    .map(|_| ()),
                "GetInvitation" | "RevokeInvitation" | "ResendInvitation" => {
                    let created = app
                        .invitations
                        .clone()
                        .create_invitation(with_key(
                            ipb::CreateInvitationRequest {
                                organization_id: a.clone(),
                                email: email.clone(),
                                send_email: true,
                                ..Default::default()
                            },
                            OPERATOR_KEY,
                        ))
                        .await
                        .unwrap()
                        .into_inner()
                        .invitation
                        .unwrap();
                    let mut i = app.invitations.clone();
                    let (org, id) = (a.clone(), created.invitation_id);
                    match *rpc {
                        "GetInvitation" => i
                            .get_invitation(request(
                                ipb::GetInvitationRequest { organization_id: org, invitation_id: id },
                                cred,
                            ))
                            .await
                            .map(|_| ()),
                        "RevokeInvitation" => i
                            .revoke_invitation(request(
                                ipb::RevokeInvitationRequest {
                                    organization_id: org,
                                    invitation_id: id,
                                    request_id: String::new(),
                                },
                                cred,
                            ))
                            .await
                            .map(|_| ()),
                        _ => i
                            .resend_invitation(request(
                                ipb::ResendInvitationRequest {
                                    organization_id: org,
                                    invitation_id: id,
                                    send_email: true,
                                    ..Default::default()
                                },
                                cred,
                            ))
                            .await
                            .map(|_| ()),
                    }
                }
                "AcceptInvitation" => app
                    .invitations
                    .clone()
                    .accept_invitation(request(
                        ipb::AcceptInvitationRequest { token: "A".repeat(43), ..Default::default() },
                        cred,
                    ))
                    .await
                    .map(|_| ()),
                "RevokeSession (member's)" => {
                    let session = app
                        .sign_in(&google.id_token("a-member", "member@acme.com"), &a)
                        .await
                        .unwrap()
                        .session
                        .unwrap()
                        .session_id;
                    app.tokens
                        .clone()
                        .revoke_session(request(
                            pb::RevokeSessionRequest { session_id: session, request_id: String::new() },
                            cred,
                        ))
                        .await
                        .map(|_| ())
                }
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

backend_tests!(access_tokens_as_callers => matrix);
