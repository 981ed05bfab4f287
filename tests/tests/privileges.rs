//! Privilege rules, black-box on both backends: an organization's admin (a real access token from
//! a sign-in) cannot climb to owner by any path — a custom role granting `*`, `ownership:*` or
//! `domains:*` (those belong to the built-in owner role alone, whoever defines the role), a role or
//! an assignment granting permissions the admin does not hold (to itself, to a new member, in an
//! invitation, or by editing a role it holds), a transfer of ownership, or removing the owner.
//! Every refusal has its stable reason and writes nothing.

use lanyard::ServiceName;
use lanyard_core::db::Backend;
use lanyard_proto::invitation::v1 as ipb;
use lanyard_proto::tenancy::v1 as pb;
use lanyard_tests::{assert_error, backend_tests, spawn_services, sso, TestApp};
use tonic::Code;

backend_tests!(an_admin_cannot_become_owner, a_service_key_cannot_administer);

async fn all(backend: Backend) -> TestApp {
    spawn_services(backend, &[ServiceName::Tenancy, ServiceName::Invitation, ServiceName::Token], |s| {
        s.allow_http_issuers = true
    })
    .await
}

fn role(org: &str, name: &str, permissions: &[&str]) -> pb::CreateRoleRequest {
    pb::CreateRoleRequest {
        organization_id: org.into(),
        name: name.into(),
        permissions: permissions.iter().map(|p| p.to_string()).collect(),
        ..Default::default()
    }
}

async fn an_admin_cannot_become_owner(backend: Backend) {
    let app = all(backend).await;
    let idp = sso::provider().await;
    let org = sso::org(&app, &idp).await;
    let owner = sso::sign_in(&app, &idp, &org, &format!("owner@{}", sso::DOMAIN)).await;
    let owner_id = owner.user_id.clone();
    let (admin_id, admin) = sso::member(&app, &idp, &org, &format!("admin@{}", sso::DOMAIN), &["admin"]).await;
    let (_, member) = sso::member(&app, &idp, &org, &format!("member@{}", sso::DOMAIN), &["member"]).await;
    let as_admin = format!("Bearer {}", admin.access_token);
    let as_member = format!("Bearer {}", member.access_token);
    // Roles an operator defined, which the admin does not fully hold.
    app.operator().create_role(role(&org, "finance", &["billing:*"])).await.expect("finance");
    app.operator().create_role(role(&org, "helper", &["members:read"])).await.expect("helper");
    let before = app.snapshot().await;

    // 1. Owner-only permissions in a custom role: refused for everyone, operators included.
    for permission in ["*", "ownership:transfer", "ownership:*", "domains:write", "domains:*"] {
        for auth in [&as_admin, &format!("Bearer {}", lanyard_tests::OPERATOR_KEY)] {
            let status = app.client_with(Some(auth)).create_role(role(&org, "climber", &[permission])).await;
            assert_error(status, Code::PermissionDenied, "OWNER_ONLY_PERMISSION");
        }
        let update = pb::UpdateRoleRequest {
            role: Some(pb::Role {
                organization_id: org.clone(),
                name: "helper".into(),
                permissions: vec![permission.into()],
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["permissions".into()] }),
            ..Default::default()
        };
        assert_error(app.operator().update_role(update).await, Code::PermissionDenied, "OWNER_ONLY_PERMISSION");
    }

    // 2. Permissions the admin does not hold, in a role it defines or edits.
    let mut admin_client = app.client_with(Some(&as_admin));
    assert_error(
        admin_client.create_role(role(&org, "climber", &["billing:refund"])).await,
        Code::PermissionDenied,
        "PERMISSION_NOT_HELD",
    );
    assert_error(
        admin_client.create_role(role(&org, "climber", &["organization:write"])).await,
        Code::PermissionDenied,
        "PERMISSION_NOT_HELD",
    );
    let edit = |name: &str, permissions: &[&str]| pb::UpdateRoleRequest {
        role: Some(pb::Role {
            organization_id: org.clone(),
            name: name.into(),
            permissions: permissions.iter().map(|p| p.to_string()).collect(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["permissions".into()] }),
        ..Default::default()
    };
    assert_error(
        admin_client.update_role(edit("helper", &["members:read", "billing:refund"])).await,
        Code::PermissionDenied,
        "PERMISSION_NOT_HELD",
    );
    assert_error(
        admin_client.update_role(edit("finance", &["members:read"])).await,
        Code::PermissionDenied,
        "PERMISSION_NOT_HELD",
    );

    // 3. Assigning what the admin does not hold: to itself, to a new member, in an invitation.
    let assign = |user: &str, roles: &[&str]| pb::UpdateMemberRolesRequest {
        organization_id: org.clone(),
        user_id: user.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        ..Default::default()
    };
    assert_error(
        admin_client.update_member_roles(assign(&admin_id, &["admin", "finance"])).await,
        Code::PermissionDenied,
        "PERMISSION_NOT_HELD",
    );
    assert!(admin_client.update_member_roles(assign(&admin_id, &["owner"])).await.is_err(), "owner only by transfer");
    assert_error(
        admin_client
            .add_member(pb::AddMemberRequest {
                organization_id: org.clone(),
                email: format!("new@{}", sso::DOMAIN),
                roles: vec!["finance".into()],
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "PERMISSION_NOT_HELD",
    );
    let invited = app
        .invitations_with(Some(&as_admin))
        .create_invitation(ipb::CreateInvitationRequest {
            organization_id: org.clone(),
            email: format!("new@{}", sso::DOMAIN),
            roles: vec!["finance".into()],
            send_email: true,
            ..Default::default()
        })
        .await;
    assert_error(invited, Code::PermissionDenied, "PERMISSION_NOT_HELD");

    // 4. Taking ownership, or removing the owner.
    let transfer = pb::TransferOwnershipRequest {
        organization_id: org.clone(),
        new_owner_user_id: admin_id.clone(),
        ..Default::default()
    };
    assert_eq!(admin_client.transfer_ownership(transfer).await.expect_err("admin").code(), Code::PermissionDenied);
    let remove =
        pb::RemoveMemberRequest { organization_id: org.clone(), user_id: owner_id.clone(), ..Default::default() };
    assert_error(admin_client.remove_member(remove).await, Code::FailedPrecondition, "OWNER_PROTECTED");

    // 5. A plain member may do none of it.
    let status = app.client_with(Some(&as_member)).create_role(role(&org, "climber", &["organization:read"])).await;
    assert_eq!(status.expect_err("member").code(), Code::PermissionDenied);

    assert_eq!(app.snapshot().await, before, "no refused attempt wrote anything");

    // What the admin holds, it may grant: a role within its permissions, assigned to itself.
    admin_client.create_role(role(&org, "auditor", &["audit:read", "members:read"])).await.expect("within its own");
    admin_client.update_member_roles(assign(&admin_id, &["admin", "auditor", "helper"])).await.expect("held");
    // The owner keeps everything.
    let organization = app
        .operator()
        .get_organization(pb::GetOrganizationRequest {
            key: Some(pb::get_organization_request::Key::OrganizationId(org.clone())),
        })
        .await
        .unwrap()
        .into_inner()
        .organization
        .unwrap();
    assert_eq!(organization.owner_user_id, owner_id);
}

/// The service key, which every product service holds to authorize requests, acts across
/// organizations for the internal RPCs but cannot change who the customers are or how identity is
/// trusted: creating, suspending, resizing or deleting an organization, verifying a domain on the
/// operator's word and rotating the signing keys need the operator's key. Each refusal writes
/// nothing.
async fn a_service_key_cannot_administer(backend: Backend) {
    let app = all(backend).await;
    let org = app.create_org(5, &["acme.com"]).await;
    let id = org.organization_id.clone();
    app.operator()
        .add_domain(pb::AddDomainRequest {
            organization_id: id.clone(),
            domain: "acme.com".into(),
            ..Default::default()
        })
        .await
        .expect("AddDomain");
    let before = app.snapshot().await;
    let service = app.service();
    let status = service
        .clone()
        .create_organization(pb::CreateOrganizationRequest {
            slug: lanyard_tests::unique_slug(),
            display_name: "Mallory".into(),
            seat_limit: 5,
            ..Default::default()
        })
        .await;
    assert_error(status, Code::PermissionDenied, "OPERATOR_ONLY");
    for (path, organization) in [
        ("status", pb::Organization { status: pb::OrganizationStatus::Suspended as i32, ..org.clone() }),
        ("seat_limit", pb::Organization { seat_limit: 500, ..org.clone() }),
    ] {
        let status = service
            .clone()
            .update_organization(pb::UpdateOrganizationRequest {
                organization: Some(organization),
                update_mask: Some(prost_types::FieldMask { paths: vec![path.into()] }),
                ..Default::default()
            })
            .await;
        assert_error(status, Code::PermissionDenied, "OPERATOR_ONLY");
    }
    let status = service
        .clone()
        .delete_organization(pb::DeleteOrganizationRequest { organization_id: id.clone(), ..Default::default() })
        .await;
    assert_error(status, Code::PermissionDenied, "OPERATOR_ONLY");
    let status = service
        .clone()
        .verify_domain(pb::VerifyDomainRequest {
            organization_id: id.clone(),
            domain: "acme.com".into(),
            method: pb::DomainVerificationMethod::Operator as i32,
            ..Default::default()
        })
        .await;
    assert_error(status, Code::PermissionDenied, "OPERATOR_ONLY");
    assert_eq!(app.snapshot().await, before, "no refused call wrote anything");

    let service_key = format!("Bearer {}", lanyard_tests::SERVICE_KEY);
    let keys = |header: &str| {
        let mut tokens = app.tokens_with(Some(header));
        async move { tokens.get_jwks(lanyard_proto::token::v1::GetJwksRequest {}).await.expect("JWKS").into_inner() }
    };
    let published = keys(&service_key).await;
    let status = app
        .tokens_with(Some(&service_key))
        .rotate_signing_key(lanyard_proto::token::v1::RotateSigningKeyRequest { force: true, ..Default::default() })
        .await;
    assert_error(status, Code::PermissionDenied, "OPERATOR_ONLY");
    assert_eq!(keys(&service_key).await, published, "the refused rotation published no key");
    // The operator's key still may, which shows the refusals above were about the key.
    let operator_key = format!("Bearer {}", lanyard_tests::OPERATOR_KEY);
    app.tokens_with(Some(&operator_key))
        .rotate_signing_key(lanyard_proto::token::v1::RotateSigningKeyRequest { force: true, ..Default::default() })
        .await
        .expect("the operator rotates");
    assert_ne!(keys(&operator_key).await, published);
}
