//! Roles, SSO connections and the audit log over gRPC, on SQLite and Postgres.

use lanyard_core::db::Backend;
use lanyard_proto::tenancy::v1 as pb;
use lanyard_tests::{assert_error, backend_tests, spawn_app};
use sqlx::Row;
use tonic::Code;

backend_tests!(custom_roles_lifecycle, sso_connections_keep_their_secret, sso_connections_are_checked_per_kind);

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
