//! `lanyard-authz` in another service (the example under examples/projects, verifying tokens
//! against Lanyard's JWKS over HTTP and asking the token service when it cannot decide alone), and
//! Envoy's ext_authz `Check` served by Lanyard: real sign-ins, real gRPC over loopback.

use std::collections::HashMap;

use envoy_types::pb::envoy::service::auth::v3 as envoy;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use lanyard::ServiceName;
use lanyard_core::cache::Cache;
use lanyard_core::db::Backend;
use lanyard_core::status::reason_of;
use lanyard_example_projects::pb;
use lanyard_tests::projects::{with_token, ProjectsApp};
use lanyard_tests::{backend_tests, spawn_services, sso, TestApp};
use tonic::Code;

backend_tests!(the_example_service_authorizes_by_token_and_permission, envoy_ext_authz_checks_routes);

async fn lanyard(backend: Backend) -> TestApp {
    spawn_services(backend, &[ServiceName::Tenancy, ServiceName::Invitation, ServiceName::Token], |s| {
        s.allow_http_issuers = true;
    })
    .await
}

fn assert_refused(status: &tonic::Status, code: Code, reason: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(reason_of(status).as_deref(), Some(reason), "{status:?}");
}

async fn the_example_service_authorizes_by_token_and_permission(backend: Backend) {
    let mut app = lanyard(backend).await;
    let idp = sso::provider().await;
    let (org, other_org) = (sso::org(&app, &idp).await, sso::org(&app, &idp).await);
    for o in [&org, &other_org] {
        sso::role(&app, o, "engineer", &["projects:read", "projects:write"]).await;
        sso::role(&app, o, "viewer", &["projects:read"]).await;
    }
    let (eng_id, eng) = sso::member(&app, &idp, &org, "eng@acme.test", &["engineer"]).await;
    let (_, viewer) = sso::member(&app, &idp, &org, "viewer@acme.test", &["viewer"]).await;
    let (_, plain) = sso::member(&app, &idp, &org, "plain@acme.test", &["member"]).await;
    let (_, outsider) = sso::member(&app, &idp, &other_org, "eng@acme.test", &["engineer"]).await;
    // The in-process cache of another process never hears of changes: every decision it cannot
    // make from the token alone goes to the token service.
    let projects = ProjectsApp::start(&app, Cache::local("example"), &app.endpoint).await;
    let mut client = projects.client();

    let created = client
        .create_project(with_token(pb::CreateProjectRequest { name: "apollo".into() }, Some(&eng.access_token)))
        .await
        .expect("an engineer creates a project")
        .into_inner();
    assert_eq!(created.names, ["apollo"]);
    let listed = client
        .list_projects(with_token(pb::ListProjectsRequest {}, Some(&viewer.access_token)))
        .await
        .expect("a viewer lists")
        .into_inner();
    assert_eq!(
        (listed.names.as_slice(), listed.organization_id.as_str()),
        (["apollo".to_owned()].as_slice(), org.as_str())
    );
    // Another organization's engineer sees its own organization's projects only.
    let theirs = client
        .list_projects(with_token(pb::ListProjectsRequest {}, Some(&outsider.access_token)))
        .await
        .expect("an outsider lists its own")
        .into_inner();
    assert!(theirs.names.is_empty());
    assert_eq!(theirs.organization_id, other_org);

    // Refusals, each with a stable reason, and nothing created.
    let write = |token: Option<&str>| with_token(pb::CreateProjectRequest { name: "zeus".into() }, token);
    let status = client.create_project(write(Some(&viewer.access_token))).await.expect_err("viewer cannot write");
    assert_refused(&status, Code::PermissionDenied, "PERMISSION_MISSING");
    let status = client.list_projects(with_token(pb::ListProjectsRequest {}, Some(&plain.access_token))).await;
    assert_refused(&status.expect_err("plain member cannot read"), Code::PermissionDenied, "PERMISSION_MISSING");
    let status = client.create_project(write(None)).await.expect_err("no token");
    assert_refused(&status, Code::Unauthenticated, "CREDENTIALS_MISSING");
    let status = client.create_project(write(Some("not-a-token"))).await.expect_err("garbage");
    assert_refused(&status, Code::Unauthenticated, "TOKEN_INVALID");
    let forged = format!("{}x", eng.access_token);
    let status = client.create_project(write(Some(&forged))).await.expect_err("bad signature");
    assert_refused(&status, Code::Unauthenticated, "TOKEN_INVALID");
    let mut wrong_org = write(Some(&eng.access_token));
    wrong_org.metadata_mut().insert("x-lanyard-organization", other_org.parse().expect("header"));
    let status = client.create_project(wrong_org).await.expect_err("another organization");
    assert_refused(&status, Code::PermissionDenied, "ORG_MISMATCH");
    let mut bad_org = write(Some(&eng.access_token));
    bad_org.metadata_mut().insert("x-lanyard-organization", "acme".parse().expect("header"));
    assert_eq!(client.create_project(bad_org).await.expect_err("malformed org").code(), Code::InvalidArgument);
    let oversize = with_token(pb::CreateProjectRequest { name: "x".repeat(101) }, Some(&eng.access_token));
    assert_eq!(client.create_project(oversize).await.expect_err("oversize").code(), Code::InvalidArgument);
    let listed = client.list_projects(with_token(pb::ListProjectsRequest {}, Some(&eng.access_token))).await;
    assert_eq!(listed.expect("list").into_inner().names, ["apollo"], "no refusal created anything");

    // Removed: the very next call is refused.
    sso::remove(&app, &org, &eng_id).await;
    let status = client.create_project(write(Some(&eng.access_token))).await.expect_err("removed");
    assert_refused(&status, Code::Unauthenticated, "NOT_A_MEMBER");

    // The token service gone: no decision, and never an allow.
    app.stop().await;
    let status = client.list_projects(with_token(pb::ListProjectsRequest {}, Some(&viewer.access_token))).await;
    assert_refused(&status.expect_err("no decision"), Code::Unavailable, "AUTHORIZATION_UNAVAILABLE");
}

fn check(token: Option<&str>, permission: Option<&str>, org: Option<&str>) -> envoy::CheckRequest {
    let mut headers = HashMap::from([(":path".to_owned(), "/projects".to_owned())]);
    if let Some(token) = token {
        headers.insert("authorization".into(), format!("Bearer {token}"));
    }
    if let Some(org) = org {
        headers.insert("x-lanyard-organization".into(), org.into());
    }
    headers.insert("x-lanyard-user-id".into(), "spoofed".into());
    let context_extensions =
        permission.map(|p| HashMap::from([("lanyard_permission".to_owned(), p.to_owned())])).unwrap_or_default();
    envoy::CheckRequest {
        attributes: Some(envoy::AttributeContext {
            request: Some(envoy::attribute_context::Request {
                http: Some(envoy::attribute_context::HttpRequest { headers, ..Default::default() }),
                ..Default::default()
            }),
            context_extensions,
            ..Default::default()
        }),
    }
}

/// The HTTP status of a denial, its reason header, and the headers an allow adds upstream.
fn outcome(response: &envoy::CheckResponse) -> (i32, Option<i32>, HashMap<String, String>) {
    let code = response.status.as_ref().map(|s| s.code).unwrap_or_default();
    let headers = |list: &[envoy_types::pb::envoy::config::core::v3::HeaderValueOption]| {
        list.iter().filter_map(|h| h.header.as_ref()).map(|h| (h.key.clone(), h.value.clone())).collect()
    };
    match &response.http_response {
        Some(envoy::check_response::HttpResponse::OkResponse(ok)) => (code, None, headers(&ok.headers)),
        Some(envoy::check_response::HttpResponse::DeniedResponse(denied)) => {
            (code, denied.status.as_ref().map(|s| s.code), headers(&denied.headers))
        }
        _ => (code, None, HashMap::new()),
    }
}

async fn envoy_ext_authz_checks_routes(backend: Backend) {
    let app = lanyard(backend).await;
    let idp = sso::provider().await;
    let (org, other_org) = (sso::org(&app, &idp).await, sso::org(&app, &idp).await);
    sso::role(&app, &org, "viewer", &["projects:read"]).await;
    let (viewer_id, viewer) = sso::member(&app, &idp, &org, "viewer@acme.test", &["viewer"]).await;
    let envoy = AuthorizationClient::new(app.channel());
    let ask = |request: envoy::CheckRequest| {
        let mut envoy = envoy.clone();
        async move { outcome(&envoy.check(request).await.expect("Check answers").into_inner()) }
    };

    let (code, denied, headers) = ask(check(Some(&viewer.access_token), Some("projects:read"), None)).await;
    assert_eq!((code, denied), (0, None), "allowed");
    assert_eq!(headers.get("x-lanyard-user-id"), Some(&viewer_id), "the principal replaces a spoofed header");
    assert_eq!(headers.get("x-lanyard-organization-id"), Some(&org));
    assert_eq!(headers.get("x-lanyard-roles").map(String::as_str), Some("viewer"));
    let (code, denied, _) = ask(check(Some(&viewer.access_token), None, Some(&org))).await;
    assert_eq!((code, denied), (0, None), "no permission named: any valid token of the org");

    let cases = [
        (check(Some(&viewer.access_token), Some("projects:write"), None), 403, "PERMISSION_MISSING"),
        (check(Some(&viewer.access_token), Some("projects:read,projects:write"), None), 403, "PERMISSION_MISSING"),
        (check(Some(&viewer.access_token), Some("projects:read"), Some(&other_org)), 403, "ORG_MISMATCH"),
        (check(None, Some("projects:read"), None), 401, "CREDENTIALS_MISSING"),
        (check(Some("garbage"), Some("projects:read"), None), 401, "TOKEN_INVALID"),
        (check(Some(&viewer.access_token), Some("Projects Read"), None), 400, "PERMISSION_MALFORMED"),
        (check(Some(&viewer.access_token), Some("projects:read"), Some("acme")), 400, "ORGANIZATION_MALFORMED"),
    ];
    for (request, status, reason) in cases {
        let (code, denied, headers) = ask(request).await;
        assert_ne!(code, 0, "{reason}: denied");
        assert_eq!(denied, Some(status), "{reason}");
        assert_eq!(headers.get("x-lanyard-reason").map(String::as_str), Some(reason));
    }

    sso::remove(&app, &org, &viewer_id).await;
    let (code, denied, headers) = ask(check(Some(&viewer.access_token), Some("projects:read"), None)).await;
    assert_ne!(code, 0);
    assert_eq!(denied, Some(401));
    assert_eq!(headers.get("x-lanyard-reason").map(String::as_str), Some("NOT_A_MEMBER"));
}
