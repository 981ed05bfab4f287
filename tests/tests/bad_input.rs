//! Bad input to every TenancyService RPC: each answers the right code and a stable reason, and
//! changes nothing. Run on SQLite and Postgres.

use lanyard_core::db::Backend;
use lanyard_proto::tenancy::v1 as pb;
use lanyard_tests::{assert_error, backend_tests, spawn_app, Client, OPERATOR_KEY};
use tonic::Code;

backend_tests!(malformed_fields_are_refused, callers_without_valid_keys_are_refused, unknown_resources_are_not_found);

const BAD_IDS: [&str; 5] = [
    "",
    "nope",
    "01a2013f15c872c0b9416c1d3ed46f92",
    "{01a2013f-15c8-72c0-b941-6c1d3ed46f92}",
    "01a2013f-15c8-72c0-b941-6c1d3ed46f9z",
];

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask { paths: paths.iter().map(|p| p.to_string()).collect() })
}

/// One bad call: what it is, and the result it got.
type Case = (String, Result<(), tonic::Status>);

async fn run<T>(
    what: impl Into<String>,
    fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Case {
    (what.into(), fut.await.map(|_| ()))
}

async fn malformed_fields_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_org(3, &["acme.com"]).await;
    let id = org.organization_id.clone();
    let member = app.add_member(&id, "a@acme.com", &[]).await;
    let mut op: Client = app.operator();
    let mut svc: Client = app.service();
    let before = app.snapshot().await;
    let create = || pb::CreateOrganizationRequest {
        slug: "valid-slug".into(),
        display_name: "Valid".into(),
        seat_limit: 5,
        ..Default::default()
    };
    let mut cases: Vec<Case> = Vec::new();
    for bad in BAD_IDS {
        cases.push(
            run(
                format!("GetOrganization id {bad:?}"),
                op.get_organization(pb::GetOrganizationRequest {
                    key: Some(pb::get_organization_request::Key::OrganizationId(bad.into())),
                }),
            )
            .await,
        );
        cases.push(
            run(
                format!("AddMember org {bad:?}"),
                op.add_member(pb::AddMemberRequest {
                    organization_id: bad.into(),
                    email: "b@acme.com".into(),
                    ..Default::default()
                }),
            )
            .await,
        );
        cases.push(
            run(
                format!("RemoveMember user {bad:?}"),
                op.remove_member(pb::RemoveMemberRequest {
                    organization_id: id.clone(),
                    user_id: bad.into(),
                    request_id: String::new(),
                }),
            )
            .await,
        );
        cases.push(
            run(
                format!("GetMember user {bad:?}"),
                op.get_member(pb::GetMemberRequest {
                    organization_id: id.clone(),
                    user_id: bad.into(),
                    ..Default::default()
                }),
            )
            .await,
        );
        cases.push(
            run(
                format!("GetSeatUsage {bad:?}"),
                op.get_seat_usage(pb::GetSeatUsageRequest { organization_id: bad.into() }),
            )
            .await,
        );
        cases.push(
            run(
                format!("ListMembers {bad:?}"),
                op.list_members(pb::ListMembersRequest { organization_id: bad.into(), ..Default::default() }),
            )
            .await,
        );
        cases.push(
            run(
                format!("ListAuditEvents {bad:?}"),
                op.list_audit_events(pb::ListAuditEventsRequest { organization_id: bad.into(), ..Default::default() }),
            )
            .await,
        );
        cases.push(
            run(
                format!("ListUserOrganizations {bad:?}"),
                op.list_user_organizations(pb::ListUserOrganizationsRequest {
                    user_id: bad.into(),
                    ..Default::default()
                }),
            )
            .await,
        );
        cases.push(
            run(
                format!("ClaimSeat reservation {bad:?}"),
                svc.claim_seat(pb::ClaimSeatRequest {
                    organization_id: id.clone(),
                    reservation_id: bad.into(),
                    user_id: member.user_id.clone(),
                    ..Default::default()
                }),
            )
            .await,
        );
        cases.push(
            run(
                format!("ReleaseSeat reservation {bad:?}"),
                svc.release_seat(pb::ReleaseSeatRequest { organization_id: id.clone(), reservation_id: bad.into() }),
            )
            .await,
        );
        cases.push(
            run(
                format!("TransferOwnership {bad:?}"),
                op.transfer_ownership(pb::TransferOwnershipRequest {
                    organization_id: id.clone(),
                    new_owner_user_id: bad.into(),
                    request_id: String::new(),
                }),
            )
            .await,
        );
        cases.push(
            run(
                format!("DeleteSsoConnection {bad:?}"),
                op.delete_sso_connection(pb::DeleteSsoConnectionRequest {
                    organization_id: id.clone(),
                    connection_id: bad.into(),
                    request_id: String::new(),
                }),
            )
            .await,
        );
    }
    for slug in ["", "a", "Acme", "-acme", "acme-", "ac_me", "acmé", &"a".repeat(64)] {
        cases.push(
            run(
                format!("CreateOrganization slug {slug:?}"),
                op.create_organization(pb::CreateOrganizationRequest { slug: slug.into(), ..create() }),
            )
            .await,
        );
        cases.push(
            run(
                format!("GetOrganization slug {slug:?}"),
                op.get_organization(pb::GetOrganizationRequest {
                    key: Some(pb::get_organization_request::Key::Slug(slug.into())),
                }),
            )
            .await,
        );
    }
    for (what, req) in [
        ("empty display name", pb::CreateOrganizationRequest { display_name: "   ".into(), ..create() }),
        ("oversize display name", pb::CreateOrganizationRequest { display_name: "x".repeat(201), ..create() }),
        ("control characters", pb::CreateOrganizationRequest { display_name: "a\u{7}b".into(), ..create() }),
        ("zero seats", pb::CreateOrganizationRequest { seat_limit: 0, ..create() }),
        ("negative seats", pb::CreateOrganizationRequest { seat_limit: -5, ..create() }),
        ("too many seats", pb::CreateOrganizationRequest { seat_limit: 1_000_001, ..create() }),
        ("bad domain", pb::CreateOrganizationRequest { allowed_domains: vec!["acme".into()], ..create() }),
        ("ip domain", pb::CreateOrganizationRequest { allowed_domains: vec!["10.0.0.1".into()], ..create() }),
        (
            "too many domains",
            pb::CreateOrganizationRequest {
                allowed_domains: (0..51).map(|i| format!("d{i}.com")).collect(),
                ..create()
            },
        ),
        (
            "bad metadata key",
            pb::CreateOrganizationRequest { metadata: [("bad key".to_string(), "v".to_string())].into(), ..create() },
        ),
        (
            "oversize metadata value",
            pb::CreateOrganizationRequest { metadata: [("k".to_string(), "v".repeat(1025))].into(), ..create() },
        ),
        (
            "too much metadata",
            pb::CreateOrganizationRequest {
                metadata: (0..65).map(|i| (format!("k{i}"), String::new())).collect(),
                ..create()
            },
        ),
        ("bad owner email", pb::CreateOrganizationRequest { owner_email: "owner-at-acme.com".into(), ..create() }),
        ("oversize request id", pb::CreateOrganizationRequest { request_id: "r".repeat(129), ..create() }),
    ] {
        cases.push(run(format!("CreateOrganization {what}"), op.create_organization(req)).await);
    }
    for email in [
        "",
        "no-at-sign",
        "a@",
        "@acme.com",
        "a b@acme.com",
        "a@acme",
        "a..b@acme.com",
        &format!("{}@acme.com", "a".repeat(250)),
    ] {
        cases.push(
            run(
                format!("AddMember email {email:?}"),
                op.add_member(pb::AddMemberRequest {
                    organization_id: id.clone(),
                    email: email.into(),
                    ..Default::default()
                }),
            )
            .await,
        );
    }
    for role in ["Admin", "has space", &"r".repeat(64)] {
        cases.push(
            run(
                format!("AddMember role {role:?}"),
                op.add_member(pb::AddMemberRequest {
                    organization_id: id.clone(),
                    email: "b@acme.com".into(),
                    roles: vec![role.into()],
                    ..Default::default()
                }),
            )
            .await,
        );
    }
    cases.push(
        run(
            "AddMember too many roles",
            op.add_member(pb::AddMemberRequest {
                organization_id: id.clone(),
                email: "b@acme.com".into(),
                roles: (0..21).map(|i| format!("r{i}")).collect(),
                ..Default::default()
            }),
        )
        .await,
    );
    cases.push(
        run(
            "AddMember oversize display name",
            op.add_member(pb::AddMemberRequest {
                organization_id: id.clone(),
                email: "b@acme.com".into(),
                display_name: "n".repeat(201),
                ..Default::default()
            }),
        )
        .await,
    );
    for domain in ["", "acme", "-acme.com", "acme..com", &format!("{}.com", "a".repeat(64))] {
        cases.push(
            run(
                format!("AddDomain {domain:?}"),
                op.add_domain(pb::AddDomainRequest {
                    organization_id: id.clone(),
                    domain: domain.into(),
                    ..Default::default()
                }),
            )
            .await,
        );
    }
    for domain in ["", "acme", "-acme.com", "acme..com", "acme.com.", "acm\u{0435}.com"] {
        cases.push(
            run(
                format!("VerifyDomain {domain:?}"),
                op.verify_domain(pb::VerifyDomainRequest {
                    organization_id: id.clone(),
                    domain: domain.into(),
                    ..Default::default()
                }),
            )
            .await,
        );
    }
    for bad in BAD_IDS {
        cases.push(
            run(
                format!("VerifyDomain org {bad:?}"),
                op.verify_domain(pb::VerifyDomainRequest {
                    organization_id: bad.into(),
                    domain: "acme.com".into(),
                    ..Default::default()
                }),
            )
            .await,
        );
        cases.push(
            run(
                format!("RecordAuditEvent org {bad:?}"),
                svc.record_audit_event(pb::RecordAuditEventRequest {
                    organization_id: bad.into(),
                    actor: "user:x".into(),
                    action: "session.switched".into(),
                    target: "session:x".into(),
                    ..Default::default()
                }),
            )
            .await,
        );
        cases.push(
            run(
                format!("FindSsoConnections connection {bad:?}"),
                svc.find_sso_connections(pb::FindSsoConnectionsRequest {
                    connection_id: if bad.is_empty() { "x".into() } else { bad.into() },
                    ..Default::default()
                }),
            )
            .await,
        );
    }
    cases.push(
        run(
            "VerifyDomain method 9",
            op.verify_domain(pb::VerifyDomainRequest {
                organization_id: id.clone(),
                domain: "acme.com".into(),
                method: 9,
                ..Default::default()
            }),
        )
        .await,
    );
    cases.push(
        run(
            "FindSsoConnections issuer and connection",
            svc.find_sso_connections(pb::FindSsoConnectionsRequest {
                issuer: "https://x.example".into(),
                connection_id: uuid::Uuid::now_v7().to_string(),
                ..Default::default()
            }),
        )
        .await,
    );
    cases.push(
        run("FindSsoConnections neither", svc.find_sso_connections(pb::FindSsoConnectionsRequest::default())).await,
    );
    let event = || pb::RecordAuditEventRequest {
        organization_id: id.clone(),
        actor: "user:x".into(),
        action: "session.switched".into(),
        target: "session:x".into(),
        ..Default::default()
    };
    for (what, bad) in [
        ("no actor", pb::RecordAuditEventRequest { actor: String::new(), ..event() }),
        ("long actor", pb::RecordAuditEventRequest { actor: "a".repeat(256), ..event() }),
        ("control in target", pb::RecordAuditEventRequest { target: "session:\n".into(), ..event() }),
        ("uppercase action", pb::RecordAuditEventRequest { action: "Session.Switched".into(), ..event() }),
        ("empty action", pb::RecordAuditEventRequest { action: String::new(), ..event() }),
        (
            "17 details",
            pb::RecordAuditEventRequest {
                details: (0..17).map(|i| (format!("k{i}"), "v".to_owned())).collect(),
                ..event()
            },
        ),
        (
            "oversize detail",
            pb::RecordAuditEventRequest { details: [("k".to_owned(), "v".repeat(1025))].into(), ..event() },
        ),
    ] {
        cases.push(run(format!("RecordAuditEvent {what}"), svc.record_audit_event(bad)).await);
    }
    let claim = || pb::ClaimSeatRequest {
        organization_id: id.clone(),
        reservation_id: uuid::Uuid::now_v7().to_string(),
        ..Default::default()
    };
    let identity = || pb::ClaimIdentity {
        issuer: "https://idp.example".into(),
        subject: "s".into(),
        connection_id: uuid::Uuid::now_v7().to_string(),
        email: "a@acme.com".into(),
        display_name: String::new(),
    };
    for (what, bad) in [
        ("neither user nor identity", claim()),
        (
            "both user and identity",
            pb::ClaimSeatRequest { user_id: member.user_id.clone(), identity: Some(identity()), ..claim() },
        ),
        (
            "identity without email",
            pb::ClaimSeatRequest {
                identity: Some(pb::ClaimIdentity { email: String::new(), ..identity() }),
                ..claim()
            },
        ),
        (
            "identity with a bad connection",
            pb::ClaimSeatRequest {
                identity: Some(pb::ClaimIdentity { connection_id: "nope".into(), ..identity() }),
                ..claim()
            },
        ),
        (
            "identity without subject",
            pb::ClaimSeatRequest {
                identity: Some(pb::ClaimIdentity { subject: String::new(), ..identity() }),
                ..claim()
            },
        ),
    ] {
        cases.push(run(format!("ClaimSeat {what}"), svc.claim_seat(bad)).await);
    }
    for (size, token) in [(-1, ""), (10, "%%%"), (10, "bm90LWEtdG9rZW4")] {
        cases.push(
            run(
                format!("ListOrganizations page {size} {token:?}"),
                op.list_organizations(pb::ListOrganizationsRequest {
                    page_size: size,
                    page_token: token.into(),
                    show_deleted: false,
                }),
            )
            .await,
        );
        cases.push(
            run(
                format!("ListMembers page {size} {token:?}"),
                op.list_members(pb::ListMembersRequest {
                    organization_id: id.clone(),
                    page_size: size,
                    page_token: token.into(),
                    show_removed: false,
                }),
            )
            .await,
        );
    }
    for (what, m) in [("no mask", None), ("empty mask", mask(&[])), ("unknown path", mask(&["slug"]))] {
        cases.push(
            run(
                format!("UpdateOrganization {what}"),
                op.update_organization(pb::UpdateOrganizationRequest {
                    organization: Some(pb::Organization {
                        organization_id: id.clone(),
                        display_name: "New".into(),
                        ..Default::default()
                    }),
                    update_mask: m,
                    request_id: String::new(),
                }),
            )
            .await,
        );
    }
    cases.push(
        run(
            "UpdateOrganization status DELETED",
            op.update_organization(pb::UpdateOrganizationRequest {
                organization: Some(pb::Organization {
                    organization_id: id.clone(),
                    status: pb::OrganizationStatus::Deleted as i32,
                    ..Default::default()
                }),
                update_mask: mask(&["status"]),
                request_id: String::new(),
            }),
        )
        .await,
    );
    cases.push(
        run(
            "UpdateOrganization without organization",
            op.update_organization(pb::UpdateOrganizationRequest {
                organization: None,
                update_mask: mask(&["display_name"]),
                request_id: String::new(),
            }),
        )
        .await,
    );
    cases.push(
        run(
            "CreateRole oversize description",
            op.create_role(pb::CreateRoleRequest {
                organization_id: id.clone(),
                name: "r".into(),
                description: "d".repeat(501),
                ..Default::default()
            }),
        )
        .await,
    );
    cases.push(
        run(
            "CreateRole too many permissions",
            op.create_role(pb::CreateRoleRequest {
                organization_id: id.clone(),
                name: "r".into(),
                permissions: (0..101).map(|i| format!("p{i}:read")).collect(),
                ..Default::default()
            }),
        )
        .await,
    );
    cases.push(
        run(
            "ListAuditEvents oversize action",
            op.list_audit_events(pb::ListAuditEventsRequest {
                organization_id: id.clone(),
                action: "a".repeat(65),
                ..Default::default()
            }),
        )
        .await,
    );
    for ttl in [
        prost_types::Duration { seconds: 59, nanos: 0 },
        prost_types::Duration { seconds: 31 * 86400, nanos: 0 },
        prost_types::Duration { seconds: -5, nanos: 0 },
    ] {
        cases.push(
            run(
                format!("ReserveSeat ttl {ttl:?}"),
                svc.reserve_seat(pb::ReserveSeatRequest {
                    organization_id: id.clone(),
                    ttl: Some(ttl),
                    reservation_id: String::new(),
                }),
            )
            .await,
        );
    }

    for (what, result) in cases {
        let status = result.expect_err(&what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert_eq!(lanyard_core::status::reason_of(&status).as_deref(), Some("INVALID_ARGUMENT"), "{what}");
        assert!(status.get_details_bad_request().is_some(), "{what}: no BadRequest details");
    }
    assert_eq!(app.snapshot().await, before);
}

use tonic_types::StatusExt;

async fn callers_without_valid_keys_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_org(3, &[]).await;
    let before = app.snapshot().await;
    let wrong_key = format!("Bearer {}x", OPERATOR_KEY);
    let basic = format!("Basic {OPERATOR_KEY}");
    let callers: [(Option<&str>, &str); 5] = [
        (None, "CREDENTIALS_MISSING"),
        (Some(wrong_key.as_str()), "CREDENTIALS_INVALID"),
        (Some("Bearer "), "CREDENTIALS_MALFORMED"),
        (Some(basic.as_str()), "CREDENTIALS_MALFORMED"),
        (Some(OPERATOR_KEY), "CREDENTIALS_MALFORMED"),
    ];
    for (header, reason) in callers {
        let mut c = app.client_with(header);
        let id = org.organization_id.clone();
        assert_error(
            c.create_organization(pb::CreateOrganizationRequest {
                slug: "x-y".into(),
                display_name: "X".into(),
                seat_limit: 1,
                ..Default::default()
            })
            .await,
            Code::Unauthenticated,
            reason,
        );
        assert_error(
            c.get_organization(pb::GetOrganizationRequest {
                key: Some(pb::get_organization_request::Key::OrganizationId(id.clone())),
            })
            .await,
            Code::Unauthenticated,
            reason,
        );
        assert_error(
            c.list_organizations(pb::ListOrganizationsRequest::default()).await,
            Code::Unauthenticated,
            reason,
        );
        assert_error(
            c.add_member(pb::AddMemberRequest {
                organization_id: id.clone(),
                email: "a@acme.com".into(),
                ..Default::default()
            })
            .await,
            Code::Unauthenticated,
            reason,
        );
        assert_error(
            c.get_seat_usage(pb::GetSeatUsageRequest { organization_id: id.clone() }).await,
            Code::Unauthenticated,
            reason,
        );
        assert_error(
            c.reserve_seat(pb::ReserveSeatRequest { organization_id: id.clone(), ..Default::default() }).await,
            Code::Unauthenticated,
            reason,
        );
        assert_error(
            c.delete_organization(pb::DeleteOrganizationRequest {
                organization_id: id.clone(),
                request_id: String::new(),
            })
            .await,
            Code::Unauthenticated,
            reason,
        );
        assert_error(
            c.list_audit_events(pb::ListAuditEventsRequest { organization_id: id.clone(), ..Default::default() }).await,
            Code::Unauthenticated,
            reason,
        );
        assert_error(
            c.verify_domain(pb::VerifyDomainRequest {
                organization_id: id.clone(),
                domain: "acme.com".into(),
                method: pb::DomainVerificationMethod::Operator as i32,
                ..Default::default()
            })
            .await,
            Code::Unauthenticated,
            reason,
        );
        assert_error(
            c.record_audit_event(pb::RecordAuditEventRequest {
                organization_id: id.clone(),
                actor: "user:x".into(),
                action: "session.switched".into(),
                target: "session:x".into(),
                ..Default::default()
            })
            .await,
            Code::Unauthenticated,
            reason,
        );
    }
    assert_eq!(app.snapshot().await, before);
}

async fn unknown_resources_are_not_found(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_org(3, &["acme.com"]).await;
    let ghost = uuid::Uuid::now_v7().to_string();
    let mut op = app.operator();
    let mut svc = app.service();
    let before = app.snapshot().await;
    let nf = |r: Result<(), tonic::Status>, reason: &str| assert_error(r, Code::NotFound, reason);
    nf(
        op.get_organization(pb::GetOrganizationRequest {
            key: Some(pb::get_organization_request::Key::OrganizationId(ghost.clone())),
        })
        .await
        .map(|_| ()),
        "ORGANIZATION_NOT_FOUND",
    );
    nf(
        op.get_organization(pb::GetOrganizationRequest {
            key: Some(pb::get_organization_request::Key::Slug("no-such-org".into())),
        })
        .await
        .map(|_| ()),
        "ORGANIZATION_NOT_FOUND",
    );
    nf(
        op.add_member(pb::AddMemberRequest {
            organization_id: ghost.clone(),
            email: "a@acme.com".into(),
            ..Default::default()
        })
        .await
        .map(|_| ()),
        "ORGANIZATION_NOT_FOUND",
    );
    nf(
        op.delete_organization(pb::DeleteOrganizationRequest {
            organization_id: ghost.clone(),
            request_id: String::new(),
        })
        .await
        .map(|_| ()),
        "ORGANIZATION_NOT_FOUND",
    );
    nf(
        op.get_seat_usage(pb::GetSeatUsageRequest { organization_id: ghost.clone() }).await.map(|_| ()),
        "ORGANIZATION_NOT_FOUND",
    );
    nf(
        op.list_members(pb::ListMembersRequest { organization_id: ghost.clone(), ..Default::default() })
            .await
            .map(|_| ()),
        "ORGANIZATION_NOT_FOUND",
    );
    nf(
        op.list_roles(pb::ListRolesRequest { organization_id: ghost.clone(), ..Default::default() }).await.map(|_| ()),
        "ORGANIZATION_NOT_FOUND",
    );
    nf(
        op.add_domain(pb::AddDomainRequest {
            organization_id: ghost.clone(),
            domain: "x.com".into(),
            ..Default::default()
        })
        .await
        .map(|_| ()),
        "ORGANIZATION_NOT_FOUND",
    );
    nf(
        op.verify_domain(pb::VerifyDomainRequest {
            organization_id: ghost.clone(),
            domain: "x.com".into(),
            method: pb::DomainVerificationMethod::Operator as i32,
            ..Default::default()
        })
        .await
        .map(|_| ()),
        "ORGANIZATION_NOT_FOUND",
    );
    nf(
        op.verify_domain(pb::VerifyDomainRequest {
            organization_id: org.organization_id.clone(),
            domain: "never-added.com".into(),
            method: pb::DomainVerificationMethod::Operator as i32,
            ..Default::default()
        })
        .await
        .map(|_| ()),
        "DOMAIN_NOT_FOUND",
    );
    nf(
        op.update_member_roles(pb::UpdateMemberRolesRequest {
            organization_id: org.organization_id.clone(),
            user_id: ghost.clone(),
            roles: vec!["admin".into()],
            request_id: String::new(),
        })
        .await
        .map(|_| ()),
        "NOT_A_MEMBER",
    );
    nf(
        op.remove_member(pb::RemoveMemberRequest {
            organization_id: org.organization_id.clone(),
            user_id: ghost.clone(),
            request_id: String::new(),
        })
        .await
        .map(|_| ()),
        "NOT_A_MEMBER",
    );
    nf(
        op.delete_role(pb::DeleteRoleRequest {
            organization_id: org.organization_id.clone(),
            name: "ghost".into(),
            request_id: String::new(),
        })
        .await
        .map(|_| ()),
        "ROLE_NOT_FOUND",
    );
    nf(
        svc.reserve_seat(pb::ReserveSeatRequest { organization_id: ghost.clone(), ..Default::default() })
            .await
            .map(|_| ()),
        "ORGANIZATION_NOT_FOUND",
    );
    nf(
        svc.release_seat(pb::ReleaseSeatRequest {
            organization_id: org.organization_id.clone(),
            reservation_id: ghost.clone(),
        })
        .await
        .map(|_| ()),
        "RESERVATION_NOT_FOUND",
    );
    nf(
        svc.claim_seat(pb::ClaimSeatRequest {
            organization_id: org.organization_id.clone(),
            reservation_id: ghost.clone(),
            user_id: ghost.clone(),
            ..Default::default()
        })
        .await
        .map(|_| ()),
        "RESERVATION_NOT_FOUND",
    );
    let held = svc
        .reserve_seat(pb::ReserveSeatRequest { organization_id: org.organization_id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    let mid = app.snapshot().await;
    nf(
        svc.claim_seat(pb::ClaimSeatRequest {
            organization_id: org.organization_id.clone(),
            reservation_id: held.reservation_id,
            user_id: ghost.clone(),
            ..Default::default()
        })
        .await
        .map(|_| ()),
        "USER_NOT_FOUND",
    );
    assert_eq!(app.snapshot().await, mid);
    assert_ne!(before, mid);
}
