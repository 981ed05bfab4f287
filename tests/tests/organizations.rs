//! Organizations and domains over gRPC, on SQLite and Postgres.

use lanyard_core::db::Backend;
use lanyard_proto::tenancy::v1 as pb;
use lanyard_tests::{assert_error, backend_tests, spawn_app, spawn_app_with, unique_slug};
use tonic::Code;
use tonic_types::StatusExt;

backend_tests!(
    organization_lifecycle,
    organizations_page_through_in_creation_order,
    duplicate_slug_is_refused,
    seat_limit_cannot_drop_below_usage,
    domains_are_normalized_and_public_webmail_refused,
    retried_create_returns_the_first_result,
    owner_email_makes_an_owner_member,
);

async fn organization_lifecycle(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut op = app.operator();
    let slug = unique_slug();
    let created = op
        .create_organization(pb::CreateOrganizationRequest {
            slug: slug.clone(),
            display_name: "  Acme Corp ".into(),
            seat_limit: 25,
            allowed_domains: vec!["ACME.com".into(), "acme.io".into()],
            metadata: [("crm_id".to_string(), "42".to_string())].into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .organization
        .unwrap();
    assert_eq!(created.slug, slug);
    assert_eq!(created.display_name, "Acme Corp");
    assert_eq!(created.allowed_domains, vec!["acme.com", "acme.io"]);
    assert_eq!(created.status, pb::OrganizationStatus::Active as i32);
    assert_eq!(created.metadata.get("crm_id").map(String::as_str), Some("42"));
    assert!(uuid::Uuid::parse_str(&created.organization_id).unwrap().get_version_num() == 7);

    let by_slug = op
        .get_organization(pb::GetOrganizationRequest {
            key: Some(pb::get_organization_request::Key::Slug(slug.clone())),
        })
        .await
        .unwrap()
        .into_inner()
        .organization
        .unwrap();
    assert_eq!(by_slug, created);

    let updated = op
        .update_organization(pb::UpdateOrganizationRequest {
            organization: Some(pb::Organization {
                organization_id: created.organization_id.clone(),
                display_name: "Acme Inc".into(),
                seat_limit: 50,
                // Not in the mask: must not change.
                slug: "ignored".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["display_name".into(), "seat_limit".into()] }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .organization
        .unwrap();
    assert_eq!(
        (updated.display_name.as_str(), updated.seat_limit, updated.slug.as_str()),
        ("Acme Inc", 50, slug.as_str())
    );

    let suspended = op
        .update_organization(pb::UpdateOrganizationRequest {
            organization: Some(pb::Organization {
                organization_id: created.organization_id.clone(),
                status: pb::OrganizationStatus::Suspended as i32,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["status".into()] }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .organization
        .unwrap();
    assert_eq!(suspended.status, pb::OrganizationStatus::Suspended as i32);
    assert_error(
        op.add_member(pb::AddMemberRequest {
            organization_id: created.organization_id.clone(),
            email: "a@acme.com".into(),
            ..Default::default()
        })
        .await,
        Code::FailedPrecondition,
        "ORGANIZATION_SUSPENDED",
    );

    let deleted = op
        .delete_organization(pb::DeleteOrganizationRequest {
            organization_id: created.organization_id.clone(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .organization
        .unwrap();
    assert_eq!(deleted.status, pb::OrganizationStatus::Deleted as i32);
    assert!(deleted.delete_time.is_some());
    let listed = op.list_organizations(pb::ListOrganizationsRequest::default()).await.unwrap().into_inner();
    assert!(listed.organizations.iter().all(|o| o.organization_id != created.organization_id));
    let all = op
        .list_organizations(pb::ListOrganizationsRequest { show_deleted: true, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(all.organizations.iter().any(|o| o.organization_id == created.organization_id));
    assert_error(
        op.add_domain(pb::AddDomainRequest {
            organization_id: created.organization_id.clone(),
            domain: "acme.net".into(),
            ..Default::default()
        })
        .await,
        Code::FailedPrecondition,
        "ORGANIZATION_DELETED",
    );

    let events = op
        .list_audit_events(pb::ListAuditEventsRequest {
            organization_id: created.organization_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        vec!["organization.deleted", "organization.updated", "organization.updated", "organization.created"]
    );
    assert!(events.iter().all(|e| e.actor.starts_with("operator:")));
    let only_created = op
        .list_audit_events(pb::ListAuditEventsRequest {
            organization_id: created.organization_id.clone(),
            action: "organization.created".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(only_created.len(), 1);
    assert_eq!(only_created[0].details.get("seat_limit").map(String::as_str), Some("25"));
}

async fn organizations_page_through_in_creation_order(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut created = Vec::new();
    for _ in 0..5 {
        created.push(app.create_org(3, &[]).await.organization_id);
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = app
            .operator()
            .list_organizations(pb::ListOrganizationsRequest { page_size: 2, page_token: token, show_deleted: false })
            .await
            .unwrap()
            .into_inner();
        assert!(page.organizations.len() <= 2);
        seen.extend(page.organizations.into_iter().map(|o| o.organization_id));
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, created);
    assert_eq!(pages, 3);
}

async fn duplicate_slug_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_org(3, &[]).await;
    let before = app.snapshot().await;
    let result = app
        .operator()
        .create_organization(pb::CreateOrganizationRequest {
            slug: org.slug.clone(),
            display_name: "Other".into(),
            seat_limit: 3,
            ..Default::default()
        })
        .await;
    assert_error(result, Code::AlreadyExists, "SLUG_TAKEN");
    assert_eq!(app.snapshot().await, before);
}

async fn seat_limit_cannot_drop_below_usage(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_org(5, &["acme.com"]).await;
    for i in 0..3 {
        app.add_member(&org.organization_id, &format!("u{i}@acme.com"), &[]).await;
    }
    let before = app.snapshot().await;
    let status = assert_error(
        app.operator()
            .update_organization(pb::UpdateOrganizationRequest {
                organization: Some(pb::Organization {
                    organization_id: org.organization_id.clone(),
                    seat_limit: 2,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths: vec!["seat_limit".into()] }),
                request_id: String::new(),
            })
            .await,
        Code::FailedPrecondition,
        "SEAT_LIMIT_BELOW_USAGE",
    );
    let info = status.get_details_error_info().unwrap();
    assert_eq!(info.metadata.get("seats_used").map(String::as_str), Some("3"));
    assert_eq!(status.get_details_precondition_failure().unwrap().violations[0].r#type, "SEAT_USAGE");
    assert_eq!(app.snapshot().await, before);
    // Exactly the usage is fine.
    app.operator()
        .update_organization(pb::UpdateOrganizationRequest {
            organization: Some(pb::Organization {
                organization_id: org.organization_id.clone(),
                seat_limit: 3,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["seat_limit".into()] }),
            request_id: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(app.usage(&org.organization_id).await.available, 0);
}

async fn domains_are_normalized_and_public_webmail_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_org(3, &[]).await;
    let id = org.organization_id.clone();
    let mut op = app.operator();
    let add = |domain: &str, allow: bool| pb::AddDomainRequest {
        organization_id: id.clone(),
        domain: domain.into(),
        allow_public_domain: allow,
        request_id: String::new(),
    };
    let first = op.add_domain(add(" ACME.COM ", false)).await.unwrap().into_inner();
    assert_eq!(first.organization.unwrap().allowed_domains, vec!["acme.com"]);
    // Adding it again changes nothing and hands back the same challenge (a lost one is found again).
    let again = op.add_domain(add("acme.com", false)).await.unwrap().into_inner();
    assert_eq!(again.organization.unwrap().allowed_domains, vec!["acme.com"]);
    assert_eq!(again.challenge, first.challenge);
    assert!(first.challenge.is_some());
    assert_error(op.add_domain(add("gmail.com", false)).await, Code::InvalidArgument, "PUBLIC_DOMAIN_NOT_ALLOWED");
    let org = op.add_domain(add("gmail.com", true)).await.unwrap().into_inner().organization.unwrap();
    assert_eq!(org.allowed_domains, vec!["acme.com", "gmail.com"]);
    let org = op
        .remove_domain(pb::RemoveDomainRequest {
            organization_id: id.clone(),
            domain: "gmail.com".into(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .organization
        .unwrap();
    assert_eq!(org.allowed_domains, vec!["acme.com"]);
    assert_error(
        op.remove_domain(pb::RemoveDomainRequest {
            organization_id: id.clone(),
            domain: "gmail.com".into(),
            request_id: String::new(),
        })
        .await,
        Code::NotFound,
        "DOMAIN_NOT_FOUND",
    );
    // Creating with a public domain needs the explicit allowance too.
    assert_error(
        op.create_organization(pb::CreateOrganizationRequest {
            slug: unique_slug(),
            display_name: "X".into(),
            seat_limit: 1,
            allowed_domains: vec!["outlook.com".into()],
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "PUBLIC_DOMAIN_NOT_ALLOWED",
    );
}

async fn retried_create_returns_the_first_result(backend: Backend) {
    const SECOND_OPERATOR_KEY: &str = "test-second-operator-key-0123456789";
    let app = spawn_app_with(backend, |s| s.operator_keys.push(SECOND_OPERATOR_KEY.to_owned().into())).await;
    let request = pb::CreateOrganizationRequest {
        slug: unique_slug(),
        display_name: "Acme".into(),
        seat_limit: 3,
        request_id: "create-acme-1".into(),
        ..Default::default()
    };
    let first = app.operator().create_organization(request.clone()).await.unwrap().into_inner();
    let second = app.operator().create_organization(request.clone()).await.unwrap().into_inner();
    assert_eq!(first, second);
    let orgs = app.operator().list_organizations(pb::ListOrganizationsRequest::default()).await.unwrap().into_inner();
    assert_eq!(orgs.organizations.len(), 1);
    // The same id with another caller (another operator key) is another request.
    let other = app.client_with(Some(&format!("Bearer {SECOND_OPERATOR_KEY}")));
    assert_error(other.clone().create_organization(request).await, Code::AlreadyExists, "SLUG_TAKEN");
}

async fn owner_email_makes_an_owner_member(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app
        .operator()
        .create_organization(pb::CreateOrganizationRequest {
            slug: unique_slug(),
            display_name: "Acme".into(),
            seat_limit: 2,
            allowed_domains: vec!["acme.com".into()],
            owner_email: "IT@acme.com".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .organization
        .unwrap();
    assert!(!org.owner_user_id.is_empty());
    let owner = app
        .operator()
        .get_member(pb::GetMemberRequest {
            organization_id: org.organization_id.clone(),
            user_id: org.owner_user_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    assert_eq!(owner.email, "it@acme.com");
    assert_eq!(owner.roles, vec!["owner"]);
    assert_eq!(app.usage(&org.organization_id).await.active, 1);
}
