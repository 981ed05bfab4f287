//! Members, ownership and a user's organizations over gRPC, on SQLite and Postgres.

use lanyard_core::db::Backend;
use lanyard_proto::tenancy::v1 as pb;
use lanyard_tests::{assert_error, backend_tests, spawn_app};
use tonic::Code;
use tonic_types::StatusExt;

backend_tests!(
    add_get_list_and_remove_members,
    a_full_organization_refuses_with_quota_failure,
    roles_change_bumps_the_version,
    the_owner_is_protected_until_ownership_moves,
    users_are_global_and_memberships_per_org,
    retried_add_member_returns_the_first_result,
    members_page_through,
    members_are_found_by_email,
);

async fn add_get_list_and_remove_members(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_org(5, &["acme.com"]).await;
    let id = &org.organization_id;
    let mut op = app.operator();
    let added = op
        .add_member(pb::AddMemberRequest {
            organization_id: id.clone(),
            email: "Alice@ACME.com".into(),
            roles: vec!["admin".into()],
            display_name: "Alice".into(),
            request_id: String::new(),
            waive_domain_check: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(added.user_created);
    let alice = added.member.unwrap();
    assert_eq!((alice.email.as_str(), alice.display_name.as_str(), alice.version), ("alice@acme.com", "Alice", 1));
    assert_eq!(alice.roles, vec!["admin"]);
    assert!(alice.invited_by.starts_with("operator:"));

    assert_error(
        op.add_member(pb::AddMemberRequest {
            organization_id: id.clone(),
            email: "alice@acme.com".into(),
            ..Default::default()
        })
        .await,
        Code::AlreadyExists,
        "MEMBER_EXISTS",
    );

    let bob = app.add_member(id, "bob@acme.com", &[]).await;
    assert_eq!(bob.roles, vec!["member"]);
    let got = op
        .get_member(pb::GetMemberRequest {
            organization_id: id.clone(),
            user_id: bob.user_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    assert_eq!(got, bob);
    assert_eq!(app.usage(id).await.active, 2);

    let removed = op
        .remove_member(pb::RemoveMemberRequest {
            organization_id: id.clone(),
            user_id: bob.user_id.clone(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    assert_eq!(removed.status, pb::MembershipStatus::Removed as i32);
    assert_eq!(removed.version, 2);
    let usage = app.usage(id).await;
    assert_eq!((usage.active, usage.available), (1, 4));
    assert_error(
        op.remove_member(pb::RemoveMemberRequest {
            organization_id: id.clone(),
            user_id: bob.user_id.clone(),
            request_id: String::new(),
        })
        .await,
        Code::NotFound,
        "NOT_A_MEMBER",
    );

    let active = op
        .list_members(pb::ListMembersRequest { organization_id: id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(active.members.iter().map(|m| m.email.as_str()).collect::<Vec<_>>(), vec!["alice@acme.com"]);
    let all = op
        .list_members(pb::ListMembersRequest { organization_id: id.clone(), show_removed: true, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.members.len(), 2);

    // Re-adding continues the version, so tokens minted before the removal stay stale.
    let again = app.add_member(id, "bob@acme.com", &[]).await;
    assert_eq!((again.user_id.as_str(), again.version), (bob.user_id.as_str(), 3));

    let events = op
        .list_audit_events(pb::ListAuditEventsRequest { organization_id: id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .events;
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions[..3], ["member.added", "member.removed", "member.added"]);
    assert_eq!(events[1].target, format!("user:{}", bob.user_id));
}

async fn a_full_organization_refuses_with_quota_failure(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_org(2, &["acme.com"]).await;
    app.add_member(&org.organization_id, "a@acme.com", &[]).await;
    app.add_member(&org.organization_id, "b@acme.com", &[]).await;
    let before = app.snapshot().await;
    let status = assert_error(
        app.operator()
            .add_member(pb::AddMemberRequest {
                organization_id: org.organization_id.clone(),
                email: "c@acme.com".into(),
                ..Default::default()
            })
            .await,
        Code::ResourceExhausted,
        "SEATS_EXHAUSTED",
    );
    let quota = status.get_details_quota_failure().expect("QuotaFailure details");
    assert_eq!(quota.violations[0].description, "2 of 2 seats are in use");
    // Nothing changed: in particular no user was created for c@acme.com.
    assert_eq!(app.snapshot().await, before);
}

async fn roles_change_bumps_the_version(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_org(3, &["acme.com"]).await;
    let id = &org.organization_id;
    let m = app.add_member(id, "a@acme.com", &[]).await;
    let mut op = app.operator();
    let updated = op
        .update_member_roles(pb::UpdateMemberRolesRequest {
            organization_id: id.clone(),
            user_id: m.user_id.clone(),
            roles: vec!["admin".into(), "member".into(), "admin".into()],
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    assert_eq!(updated.roles, vec!["admin", "member"]);
    assert_eq!(updated.version, 2);
    assert_error(
        op.update_member_roles(pb::UpdateMemberRolesRequest {
            organization_id: id.clone(),
            user_id: m.user_id.clone(),
            roles: vec!["no-such-role".into()],
            request_id: String::new(),
        })
        .await,
        Code::NotFound,
        "ROLE_NOT_FOUND",
    );
    assert_error(
        op.update_member_roles(pb::UpdateMemberRolesRequest {
            organization_id: id.clone(),
            user_id: m.user_id.clone(),
            roles: vec![],
            request_id: String::new(),
        })
        .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
}

async fn the_owner_is_protected_until_ownership_moves(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_org(3, &["acme.com"]).await;
    let id = &org.organization_id;
    let owner = app.add_member(id, "owner@acme.com", &["owner"]).await;
    let admin = app.add_member(id, "admin@acme.com", &["admin"]).await;
    let mut op = app.operator();
    let before = app.snapshot().await;
    assert_error(
        op.remove_member(pb::RemoveMemberRequest {
            organization_id: id.clone(),
            user_id: owner.user_id.clone(),
            request_id: String::new(),
        })
        .await,
        Code::FailedPrecondition,
        "OWNER_PROTECTED",
    );
    assert_error(
        op.update_member_roles(pb::UpdateMemberRolesRequest {
            organization_id: id.clone(),
            user_id: owner.user_id.clone(),
            roles: vec!["admin".into()],
            request_id: String::new(),
        })
        .await,
        Code::FailedPrecondition,
        "OWNER_PROTECTED",
    );
    assert_error(
        op.update_member_roles(pb::UpdateMemberRolesRequest {
            organization_id: id.clone(),
            user_id: admin.user_id.clone(),
            roles: vec!["owner".into()],
            request_id: String::new(),
        })
        .await,
        Code::FailedPrecondition,
        "OWNER_EXISTS",
    );
    assert_error(
        op.add_member(pb::AddMemberRequest {
            organization_id: id.clone(),
            email: "second@acme.com".into(),
            roles: vec!["owner".into()],
            ..Default::default()
        })
        .await,
        Code::FailedPrecondition,
        "OWNER_EXISTS",
    );
    assert_eq!(app.snapshot().await, before);

    let moved = op
        .transfer_ownership(pb::TransferOwnershipRequest {
            organization_id: id.clone(),
            new_owner_user_id: admin.user_id.clone(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.organization.unwrap().owner_user_id, admin.user_id);
    assert_eq!(moved.new_owner.unwrap().roles, vec!["owner"]);
    let previous = moved.previous_owner.unwrap();
    assert_eq!(
        (previous.user_id.as_str(), previous.roles.clone()),
        (owner.user_id.as_str(), vec!["admin".to_string()])
    );
    assert_eq!(previous.version, owner.version + 1);
    // The former owner is now an ordinary admin and can be removed.
    op.remove_member(pb::RemoveMemberRequest {
        organization_id: id.clone(),
        user_id: owner.user_id.clone(),
        request_id: String::new(),
    })
    .await
    .unwrap();
    // Ownership only moves to an active member.
    assert_error(
        op.transfer_ownership(pb::TransferOwnershipRequest {
            organization_id: id.clone(),
            new_owner_user_id: owner.user_id.clone(),
            request_id: String::new(),
        })
        .await,
        Code::NotFound,
        "NOT_A_MEMBER",
    );
}

async fn users_are_global_and_memberships_per_org(backend: Backend) {
    let app = spawn_app(backend).await;
    let a = app.create_org(3, &["acme.com"]).await;
    let b = app.create_org(3, &["acme.com"]).await;
    let in_a = app.add_member(&a.organization_id, "pat@acme.com", &["admin"]).await;
    let added_b = app
        .operator()
        .add_member(pb::AddMemberRequest {
            organization_id: b.organization_id.clone(),
            email: "pat@acme.com".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!added_b.user_created);
    assert_eq!(added_b.member.as_ref().unwrap().user_id, in_a.user_id);
    let orgs = app
        .operator()
        .list_user_organizations(pb::ListUserOrganizationsRequest {
            user_id: in_a.user_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .organizations;
    let mut seen: Vec<(String, Vec<String>)> = orgs
        .iter()
        .map(|o| (o.organization.clone().unwrap().organization_id, o.member.clone().unwrap().roles))
        .collect();
    seen.sort();
    let mut expected = vec![
        (a.organization_id.clone(), vec!["admin".to_string()]),
        (b.organization_id.clone(), vec!["member".to_string()]),
    ];
    expected.sort();
    assert_eq!(seen, expected);
    assert_error(
        app.operator()
            .list_user_organizations(pb::ListUserOrganizationsRequest {
                user_id: uuid::Uuid::now_v7().to_string(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "USER_NOT_FOUND",
    );
    // Membership of org A says nothing about org B's other members.
    assert_error(
        app.operator()
            .get_member(pb::GetMemberRequest {
                organization_id: a.organization_id.clone(),
                user_id: uuid::Uuid::now_v7().to_string(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "NOT_A_MEMBER",
    );
}

async fn retried_add_member_returns_the_first_result(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_org(3, &["acme.com"]).await;
    let request = pb::AddMemberRequest {
        organization_id: org.organization_id.clone(),
        email: "a@acme.com".into(),
        request_id: "add-a-1".into(),
        ..Default::default()
    };
    let first = app.operator().add_member(request.clone()).await.unwrap().into_inner();
    let second = app.operator().add_member(request).await.unwrap().into_inner();
    assert_eq!(first, second);
    assert_eq!(app.usage(&org.organization_id).await.active, 1);
}

async fn members_page_through(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_org(20, &["acme.com"]).await;
    let mut expected = Vec::new();
    for i in 0..7 {
        expected.push(app.add_member(&org.organization_id, &format!("u{i}@acme.com"), &[]).await.user_id);
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .operator()
            .list_members(pb::ListMembersRequest {
                organization_id: org.organization_id.clone(),
                page_size: 3,
                page_token: token,
                show_removed: false,
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.members.into_iter().map(|m| m.user_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, expected);
}

async fn members_are_found_by_email(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_org(3, &["acme.com"]).await;
    let m = app.add_member(&org.organization_id, "kim@acme.com", &["admin"]).await;
    let by_email = |email: &str| pb::GetMemberRequest {
        organization_id: org.organization_id.clone(),
        email: email.into(),
        ..Default::default()
    };
    let found = app.operator().get_member(by_email(" KIM@acme.com ")).await.unwrap().into_inner().member.unwrap();
    assert_eq!(found, m);
    assert_error(app.operator().get_member(by_email("nobody@acme.com")).await, Code::NotFound, "NOT_A_MEMBER");
    assert_error(app.operator().get_member(by_email("not-an-email")).await, Code::InvalidArgument, "INVALID_ARGUMENT");
    let both = pb::GetMemberRequest { user_id: m.user_id.clone(), ..by_email("kim@acme.com") };
    assert_error(app.operator().get_member(both).await, Code::InvalidArgument, "INVALID_ARGUMENT");
    let neither = pb::GetMemberRequest { organization_id: org.organization_id.clone(), ..Default::default() };
    assert_error(app.operator().get_member(neither).await, Code::InvalidArgument, "INVALID_ARGUMENT");
    // A user who is a member elsewhere is not a member here.
    let other = app.create_org(1, &["acme.com"]).await;
    let elsewhere = pb::GetMemberRequest { organization_id: other.organization_id, ..by_email("kim@acme.com") };
    assert_error(app.operator().get_member(elsewhere).await, Code::NotFound, "NOT_A_MEMBER");
}
