//! Roles, SSO connections and the audit log over gRPC, on SQLite and Postgres.

use lanyard_core::db::Backend;
use lanyard_proto::tenancy::v1 as pb;
use lanyard_tests::{assert_error, backend_tests, spawn_app, spawn_app_with, TestApp};
use sqlx::Row;
use tonic::Code;

backend_tests!(
    custom_roles_lifecycle,
    sso_connections_keep_their_secret,
    sso_connections_are_checked_per_kind,
    issuers_at_non_public_addresses_are_refused,
    issuers_off_the_allowlist_are_refused,
    sso_connections_are_capped_per_organization,
    the_connection_cap_holds_under_concurrency
);

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask { paths: paths.iter().map(|p| p.to_string()).collect() })
}

async fn custom_roles_lifecycle(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_org(5, &["acme.com"]).await;
    let id = org.organization_id.clone();
    let mut op = app.operator();

    let built_in = op
        .list_roles(pb::ListRolesRequest { organization_id: id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = built_in.roles.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["owner", "admin", "member"]);
    assert!(built_in.roles.iter().all(|r| r.built_in));
    assert_eq!(built_in.roles[0].permissions, vec!["*"]);

    let create = |name: &str, perms: &[&str]| pb::CreateRoleRequest {
        organization_id: id.clone(),
        name: name.into(),
        description: "Reads and pays invoices".into(),
        permissions: perms.iter().map(|p| p.to_string()).collect(),
        request_id: String::new(),
    };
    let billing =
        op.create_role(create("billing", &["invoices:read", "invoices:pay"])).await.unwrap().into_inner().role.unwrap();
    assert_eq!(billing.permissions, vec!["invoices:pay", "invoices:read"]);
    assert!(!billing.built_in);
    assert_error(op.create_role(create("billing", &[])).await, Code::AlreadyExists, "ROLE_EXISTS");
    assert_error(op.create_role(create("admin", &[])).await, Code::AlreadyExists, "ROLE_EXISTS");
    assert_error(op.create_role(create("Billing", &[])).await, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_error(op.create_role(create("ops", &["invoices"])).await, Code::InvalidArgument, "INVALID_ARGUMENT");

    let paged = op
        .list_roles(pb::ListRolesRequest { organization_id: id.clone(), page_size: 2, page_token: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paged.roles.len(), 2);
    let rest = op
        .list_roles(pb::ListRolesRequest {
            organization_id: id.clone(),
            page_size: 2,
            page_token: paged.next_page_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.roles.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), vec!["member", "billing"]);
    assert!(rest.next_page_token.is_empty());

    let member = app.add_member(&id, "pay@acme.com", &["billing"]).await;
    assert_eq!(member.roles, vec!["billing"]);
    let updated = op
        .update_role(pb::UpdateRoleRequest {
            role: Some(pb::Role {
                organization_id: id.clone(),
                name: "billing".into(),
                permissions: vec!["invoices:*".into()],
                ..Default::default()
            }),
            update_mask: mask(&["permissions"]),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .role
        .unwrap();
    assert_eq!(updated.permissions, vec!["invoices:*"]);
    assert_eq!(updated.description, "Reads and pays invoices");
    // Its holders' permissions changed, so their membership version moved on.
    let after = op
        .get_member(pb::GetMemberRequest {
            organization_id: id.clone(),
            user_id: member.user_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    assert_eq!(after.version, member.version + 1);

    assert_error(
        op.update_role(pb::UpdateRoleRequest {
            role: Some(pb::Role { organization_id: id.clone(), name: "admin".into(), ..Default::default() }),
            update_mask: mask(&["description"]),
            request_id: String::new(),
        })
        .await,
        Code::FailedPrecondition,
        "ROLE_BUILT_IN",
    );
    assert_error(
        op.update_role(pb::UpdateRoleRequest {
            role: Some(pb::Role { organization_id: id.clone(), name: "billing".into(), ..Default::default() }),
            update_mask: mask(&["name"]),
            request_id: String::new(),
        })
        .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );

    let before = app.snapshot().await;
    assert_error(
        op.delete_role(pb::DeleteRoleRequest {
            organization_id: id.clone(),
            name: "billing".into(),
            request_id: String::new(),
        })
        .await,
        Code::FailedPrecondition,
        "ROLE_IN_USE",
    );
    assert_error(
        op.delete_role(pb::DeleteRoleRequest {
            organization_id: id.clone(),
            name: "member".into(),
            request_id: String::new(),
        })
        .await,
        Code::FailedPrecondition,
        "ROLE_BUILT_IN",
    );
    assert_eq!(app.snapshot().await, before);
    op.remove_member(pb::RemoveMemberRequest {
        organization_id: id.clone(),
        user_id: member.user_id.clone(),
        request_id: String::new(),
    })
    .await
    .unwrap();
    op.delete_role(pb::DeleteRoleRequest {
        organization_id: id.clone(),
        name: "billing".into(),
        request_id: String::new(),
    })
    .await
    .unwrap();
    assert_error(
        op.delete_role(pb::DeleteRoleRequest {
            organization_id: id.clone(),
            name: "billing".into(),
            request_id: String::new(),
        })
        .await,
        Code::NotFound,
        "ROLE_NOT_FOUND",
    );
    let actions: Vec<String> = op
        .list_audit_events(pb::ListAuditEventsRequest { organization_id: id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .events
        .into_iter()
        .map(|e| e.action)
        .filter(|a| a.starts_with("role."))
        .collect();
    assert_eq!(actions, vec!["role.deleted", "role.updated", "role.created"]);
}

async fn sso_connections_keep_their_secret(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_org(5, &["acme.com"]).await;
    let id = org.organization_id.clone();
    let mut op = app.operator();
    let secret = "very-secret-client-secret-value";
    let google = op
        .create_sso_connection(pb::CreateSsoConnectionRequest {
            organization_id: id.clone(),
            kind: pb::SsoConnectionKind::GoogleWorkspace as i32,
            issuer: "https://accounts.google.com".into(),
            client_id: "123.apps.googleusercontent.com".into(),
            client_secret: secret.into(),
            hosted_domains: vec!["Acme.com".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .connection
        .unwrap();
    assert!(google.has_client_secret && google.enabled);
    assert_eq!(google.hosted_domains, vec!["acme.com"]);
    let entra = op
        .create_sso_connection(pb::CreateSsoConnectionRequest {
            organization_id: id.clone(),
            kind: pb::SsoConnectionKind::AzureAd as i32,
            issuer: "https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0".into(),
            client_id: "entra-client".into(),
            tenant_id: "9188040D-6C67-4C5B-B112-36A304B66DAD".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .connection
        .unwrap();
    assert_eq!(entra.tenant_id, "9188040d-6c67-4c5b-b112-36a304b66dad");
    assert!(!entra.has_client_secret);

    let listed = op
        .list_sso_connections(pb::ListSsoConnectionsRequest { organization_id: id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .connections;
    assert_eq!(listed, vec![google.clone(), entra.clone()]);
    assert!(!format!("{listed:?}").contains(secret));

    // At rest, the secret is sealed.
    let stored: Option<String> = sqlx::query("SELECT client_secret_sealed FROM sso_connections WHERE id = $1")
        .bind(&google.connection_id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    let stored = stored.unwrap();
    assert!(stored.starts_with("v1:") && !stored.contains(secret));

    // The token service finds connections by issuer, across organizations (service keys only).
    let find = |issuer: &str| pb::FindSsoConnectionsRequest { issuer: issuer.into(), ..Default::default() };
    let found = app.service().find_sso_connections(find("https://accounts.google.com")).await.unwrap().into_inner();
    assert_eq!(found.connections, vec![google.clone()]);
    let none = app.service().find_sso_connections(find("https://accounts.google.com/")).await.unwrap().into_inner();
    assert!(none.connections.is_empty(), "issuers match exactly");
    assert_error(app.service().find_sso_connections(find("")).await, Code::InvalidArgument, "INVALID_ARGUMENT");
    // Home-realm discovery by an email domain counts verified domains only (service keys only).
    let by_domain = |domain: &str| pb::FindSsoConnectionsRequest { domain: domain.into(), ..Default::default() };
    let pending = app.service().find_sso_connections(by_domain("acme.com")).await.unwrap().into_inner();
    assert!(pending.connections.is_empty(), "a pending domain finds nothing");
    op.verify_domain(pb::VerifyDomainRequest {
        organization_id: id.clone(),
        domain: "acme.com".into(),
        method: pb::DomainVerificationMethod::Operator as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    let verified = app.service().find_sso_connections(by_domain("ACME.com")).await.unwrap().into_inner();
    assert_eq!(verified.connections, vec![google.clone(), entra.clone()]);
    assert!(app
        .service()
        .find_sso_connections(by_domain("other.com"))
        .await
        .unwrap()
        .into_inner()
        .connections
        .is_empty());
    assert_error(op.find_sso_connections(by_domain("acme.com")).await, Code::PermissionDenied, "SERVICE_ONLY");
    assert_error(
        app.service().find_sso_connections(by_domain("not a domain")).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );

    op.delete_sso_connection(pb::DeleteSsoConnectionRequest {
        organization_id: id.clone(),
        connection_id: google.connection_id.clone(),
        request_id: String::new(),
    })
    .await
    .unwrap();
    let gone = app.service().find_sso_connections(find("https://accounts.google.com")).await.unwrap().into_inner();
    assert!(gone.connections.is_empty());
    assert_error(
        op.delete_sso_connection(pb::DeleteSsoConnectionRequest {
            organization_id: id.clone(),
            connection_id: google.connection_id.clone(),
            request_id: String::new(),
        })
        .await,
        Code::NotFound,
        "CONNECTION_NOT_FOUND",
    );
    // Another organization cannot delete this one's connection.
    let other = app.create_org(1, &[]).await;
    assert_error(
        op.delete_sso_connection(pb::DeleteSsoConnectionRequest {
            organization_id: other.organization_id.clone(),
            connection_id: entra.connection_id.clone(),
            request_id: String::new(),
        })
        .await,
        Code::NotFound,
        "CONNECTION_NOT_FOUND",
    );
}

async fn sso_connections_are_checked_per_kind(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_org(5, &["acme.com"]).await;
    let base = pb::CreateSsoConnectionRequest {
        organization_id: org.organization_id.clone(),
        kind: pb::SsoConnectionKind::Okta as i32,
        issuer: "https://acme.okta.com".into(),
        client_id: "okta-client".into(),
        ..Default::default()
    };
    let before = app.snapshot().await;
    let cases = [
        pb::CreateSsoConnectionRequest { kind: pb::SsoConnectionKind::GoogleWorkspace as i32, ..base.clone() },
        pb::CreateSsoConnectionRequest { kind: pb::SsoConnectionKind::AzureAd as i32, ..base.clone() },
        pb::CreateSsoConnectionRequest { kind: 0, ..base.clone() },
        pb::CreateSsoConnectionRequest { kind: 99, ..base.clone() },
        pb::CreateSsoConnectionRequest { issuer: "http://acme.okta.com".into(), ..base.clone() },
        pb::CreateSsoConnectionRequest { issuer: "http://127.0.0.1:9000".into(), ..base.clone() },
        pb::CreateSsoConnectionRequest { issuer: "acme.okta.com".into(), ..base.clone() },
        pb::CreateSsoConnectionRequest { issuer: "https://acme.okta.com/?x=1".into(), ..base.clone() },
        pb::CreateSsoConnectionRequest { issuer: format!("https://{}.com", "a".repeat(2050)), ..base.clone() },
        pb::CreateSsoConnectionRequest { client_id: String::new(), ..base.clone() },
        pb::CreateSsoConnectionRequest { client_id: "x".repeat(256), ..base.clone() },
        pb::CreateSsoConnectionRequest { client_secret: "s".repeat(4097), ..base.clone() },
        pb::CreateSsoConnectionRequest { hosted_domains: vec!["not a domain".into()], ..base.clone() },
    ];
    for case in cases {
        let result = app.operator().create_sso_connection(case.clone()).await;
        assert_error(result, Code::InvalidArgument, "INVALID_ARGUMENT");
    }
    assert_eq!(app.snapshot().await, before);
    app.operator().create_sso_connection(base).await.unwrap();
}

fn okta(org: &str, issuer: &str) -> pb::CreateSsoConnectionRequest {
    pb::CreateSsoConnectionRequest {
        organization_id: org.into(),
        kind: pb::SsoConnectionKind::Okta as i32,
        issuer: issuer.into(),
        client_id: "okta-client".into(),
        ..Default::default()
    }
}

/// Issue 14, item 4: an organization admin cannot aim Lanyard's fetches at metadata, private or
/// loopback addresses through an issuer, in any spelling a URL parser accepts. Refused with a
/// stable reason; nothing is written. The loopback development setting allows loopback only.
async fn issuers_at_non_public_addresses_are_refused(backend: Backend) {
    let forbidden = [
        "https://169.254.169.254/latest",
        "https://10.255.255.1",
        "https://172.16.0.1/oauth2",
        "https://192.168.1.1",
        "https://100.64.0.1",
        "https://100.100.100.200",
        "https://0.0.0.0",
        "https://[fd00:ec2::254]",
        "https://[fe80::1]",
        "https://[::ffff:169.254.169.254]",
        "https://[::ffff:a00:1]",
        "https://2852039166",
        "https://0xa9.0xfe.0xa9.0xfe",
        "https://224.0.0.1",
        "https://metadata.google.internal/computeMetadata",
        "https://redis",
    ];
    let loopback = ["https://127.0.0.1:5432", "https://[::1]:6379", "https://localhost:6379", "https://127.1"];

    let app = spawn_app(backend).await;
    let org = app.create_org(5, &["acme.com"]).await;
    let before = app.snapshot().await;
    for issuer in forbidden.iter().chain(&loopback) {
        let result = app.operator().create_sso_connection(okta(&org.organization_id, issuer)).await;
        let status = assert_error(result, Code::InvalidArgument, "ISSUER_ADDRESS_FORBIDDEN");
        assert!(status.message().contains("address") || status.message().contains("name"), "{issuer}: {status:?}");
    }
    assert_eq!(app.snapshot().await, before, "a refused connection wrote something");

    // Loopback for local development; everything else stays refused.
    let dev = spawn_app_with(backend, |s| s.allow_http_issuers = true).await;
    let org = dev.create_org(10, &["acme.com"]).await;
    let before = dev.snapshot().await;
    for issuer in forbidden {
        let result = dev.operator().create_sso_connection(okta(&org.organization_id, issuer)).await;
        assert_error(result, Code::InvalidArgument, "ISSUER_ADDRESS_FORBIDDEN");
    }
    assert_eq!(dev.snapshot().await, before);
    for issuer in loopback {
        dev.operator().create_sso_connection(okta(&org.organization_id, issuer)).await.expect(issuer);
    }
}

/// The operator's allowlist: exact issuers and host suffixes, nothing that merely looks alike.
async fn issuers_off_the_allowlist_are_refused(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.sso_issuer_allowlist = vec!["okta.com".into(), "https://accounts.google.com".into()];
    })
    .await;
    let org = app.create_org(5, &["acme.com"]).await;
    let before = app.snapshot().await;
    for issuer in [
        "https://okta.com.evil.example",
        "https://evilokta.com",
        "https://accounts.google.com/evil",
        "https://login.microsoftonline.com/tid/v2.0",
    ] {
        let result = app.operator().create_sso_connection(okta(&org.organization_id, issuer)).await;
        assert_error(result, Code::InvalidArgument, "ISSUER_NOT_ALLOWED");
    }
    assert_eq!(app.snapshot().await, before, "a refused connection wrote something");
    app.operator().create_sso_connection(okta(&org.organization_id, "https://acme.okta.com")).await.unwrap();
    app.operator().create_sso_connection(okta(&org.organization_id, "https://okta.com/oauth2/default")).await.unwrap();
    let google = pb::CreateSsoConnectionRequest {
        kind: pb::SsoConnectionKind::GoogleWorkspace as i32,
        hosted_domains: vec!["acme.com".into()],
        ..okta(&org.organization_id, "https://accounts.google.com")
    };
    app.operator().create_sso_connection(google).await.unwrap();
}

async fn connections_of(app: &TestApp, org: &str) -> i64 {
    app.count("SELECT COUNT(*) FROM sso_connections WHERE org_id = $1", org).await
}

/// Each connection is a provider Lanyard fetches from: an organization has at most
/// `max_sso_connections_per_org`. A refused creation writes nothing; deleting one makes room.
async fn sso_connections_are_capped_per_organization(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.max_sso_connections_per_org = 3).await;
    let org = app.create_org(5, &["acme.com"]).await.organization_id;
    let other = app.create_org(5, &["acme.com"]).await.organization_id;
    let mut ids = Vec::new();
    for i in 0..3 {
        let created = app.operator().create_sso_connection(okta(&org, &format!("https://acme{i}.okta.com"))).await;
        ids.push(created.unwrap().into_inner().connection.unwrap().connection_id);
    }
    let before = app.snapshot().await;
    let result = app.operator().create_sso_connection(okta(&org, "https://acme9.okta.com")).await;
    let status = assert_error(result, Code::ResourceExhausted, "SSO_CONNECTIONS_EXHAUSTED");
    assert!(status.message().contains('3'), "{status:?}");
    assert_eq!(app.snapshot().await, before, "a refused connection wrote something");
    // Another organization has its own allowance.
    app.operator().create_sso_connection(okta(&other, "https://other.okta.com")).await.unwrap();
    app.operator()
        .delete_sso_connection(pb::DeleteSsoConnectionRequest {
            organization_id: org.clone(),
            connection_id: ids[0].clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    app.operator().create_sso_connection(okta(&org, "https://acme9.okta.com")).await.unwrap();
    assert_eq!(connections_of(&app, &org).await, 3);
}

/// Many creations at once, over many rounds: the cap is never passed.
async fn the_connection_cap_holds_under_concurrency(backend: Backend) {
    const CAP: u32 = 3;
    const CALLERS: usize = 12;
    const ROUNDS: usize = 10;
    let app = spawn_app_with(backend, |s| s.max_sso_connections_per_org = CAP).await;
    for round in 0..ROUNDS {
        let org = app.create_org(5, &["acme.com"]).await.organization_id;
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(CALLERS));
        let tasks: Vec<_> = (0..CALLERS)
            .map(|i| {
                let (mut client, barrier, request) =
                    (app.operator(), barrier.clone(), okta(&org, &format!("https://racer{i}.okta.com")));
                tokio::spawn(async move {
                    barrier.wait().await;
                    client.create_sso_connection(request).await.map(|_| ())
                })
            })
            .collect();
        let mut created = 0;
        for task in futures::future::join_all(tasks).await {
            match task.expect("task") {
                Ok(()) => created += 1,
                Err(status)
                    if lanyard_core::status::reason_of(&status).as_deref() == Some("SSO_CONNECTIONS_EXHAUSTED") => {}
                Err(status) => panic!("round {round}: {status:?}"),
            }
        }
        assert_eq!(created, CAP as usize, "round {round}");
        assert_eq!(connections_of(&app, &org).await, i64::from(CAP), "round {round}");
    }
}
