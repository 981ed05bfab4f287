//! A split deployment, as the production manifests run it: tenancy in one process, the token
//! service in another. A signed-in admin's access token works at the tenancy process as it does
//! against the all-in-one process (with `LANYARD_TOKEN_URL` and `LANYARD_TOKEN_JWKS_URL`), a forged
//! one does not, and the token stops working there the moment its member is removed. Revocations
//! cross processes through Redis, as in production: the test needs it (its name says `redis`).

use lanyard::ServiceName;
use lanyard_core::db::Backend;
use lanyard_proto::tenancy::v1 as pb;
use lanyard_tests::{assert_error, backend_tests, redis_url, spawn_services, sso, TestApp};
use tonic::Code;

backend_tests!(member_callers_in_a_split_deployment_with_redis);

use lanyard_testkit::free_port;

async fn list_members(app: &TestApp, token: &str, org: &str) -> Result<Vec<pb::Member>, tonic::Status> {
    let request = pb::ListMembersRequest { organization_id: org.into(), ..Default::default() };
    let header = format!("Bearer {token}");
    Ok(app.client_with(Some(&header)).list_members(request).await?.into_inner().members)
}

async fn member_callers_in_a_split_deployment_with_redis(backend: Backend) {
    // The token service's addresses are fixed first: the tenancy process names them, and the
    // token service names the tenancy process.
    let (grpc, http) = (free_port(), free_port());
    let issuer = format!("http://127.0.0.1:{http}");
    // Both processes share the revocation facts under a prefix of this run's own.
    let prefix = format!("split-{}", uuid::Uuid::new_v4().simple());
    let tenancy = spawn_services(backend, &[ServiceName::Tenancy], |s| {
        s.allow_http_issuers = true;
        s.redis_url = Some(redis_url().into());
        s.redis_key_prefix = prefix.clone();
        s.token_issuer = issuer.clone();
        s.token_url = Some(format!("http://127.0.0.1:{grpc}"));
        s.token_jwks_url = Some(format!("{issuer}/.well-known/jwks.json"));
    })
    .await;
    let tenancy_url = tenancy.endpoint.clone();
    let token = spawn_services(backend, &[ServiceName::Token], |s| {
        s.allow_http_issuers = true;
        s.redis_url = Some(redis_url().into());
        s.redis_key_prefix = prefix.clone();
        s.token_issuer = issuer.clone();
        s.listen_addr = format!("127.0.0.1:{grpc}").parse().unwrap();
        s.http_addr = Some(format!("127.0.0.1:{http}").parse().unwrap());
        s.tenancy_url = Some(tenancy_url);
    })
    .await;
    // A tenancy process without the token service's addresses: API keys only.
    let keys_only = spawn_services(backend, &[ServiceName::Tenancy], |_| {}).await;
    // The addresses without Redis: refused at start, since no removal would reach this process.
    let dir = tempfile::tempdir().unwrap();
    let mut settings = lanyard::Settings {
        data_dir: dir.path().to_path_buf(),
        token_url: Some(format!("http://127.0.0.1:{grpc}")),
        token_jwks_url: Some(format!("{issuer}/.well-known/jwks.json")),
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: None,
        ..lanyard::Settings::default()
    };
    let refused = lanyard::Application::build(settings.clone(), &[ServiceName::Tenancy]).await.err().expect("refused");
    assert!(refused.to_string().contains("LANYARD_REDIS_URL"), "{refused:#}");
    settings.token_jwks_url = None;
    let refused = lanyard::Application::build(settings, &[ServiceName::Tenancy]).await.err().expect("refused");
    assert!(refused.to_string().contains("LANYARD_TOKEN_JWKS_URL"), "{refused:#}");

    let idp = sso::provider().await;
    let org = sso::org(&tenancy, &idp).await;
    let email = format!("admin@{}", sso::DOMAIN);
    let admin = tenancy.add_member(&org, &email, &["admin"]).await;
    let session = sso::sign_in(&token, &idp, &org, &email).await;

    let members = list_members(&tenancy, &session.access_token, &org).await.expect("the admin's token works");
    assert!(members.iter().any(|m| m.user_id == admin.user_id), "{members:?}");
    // The admin's permissions hold there too: adding a colleague works, a role above it does not.
    let colleague = pb::AddMemberRequest {
        organization_id: org.clone(),
        email: format!("colleague@{}", sso::DOMAIN),
        roles: vec!["member".into()],
        ..Default::default()
    };
    let as_admin = format!("Bearer {}", session.access_token);
    tenancy.client_with(Some(&as_admin)).add_member(colleague).await.expect("the admin adds a colleague");

    // Held to its own organization: another organization's members and writes are refused there,
    // and nothing is written.
    let other = sso::org(&tenancy, &idp).await;
    let before = tenancy.snapshot().await;
    assert_error(
        list_members(&tenancy, &session.access_token, &other).await,
        Code::PermissionDenied,
        "WRONG_ORGANIZATION",
    );
    let intruder = pb::AddMemberRequest {
        organization_id: other.clone(),
        email: format!("intruder@{}", sso::DOMAIN),
        ..Default::default()
    };
    assert_error(
        tenancy.client_with(Some(&as_admin)).add_member(intruder).await,
        Code::PermissionDenied,
        "WRONG_ORGANIZATION",
    );
    assert_eq!(tenancy.snapshot().await, before, "a refused call wrote something");

    // A token with its signature changed, and a token of another issuer's keys, are refused.
    let mut forged = session.access_token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    assert_error(list_members(&tenancy, &forged, &org).await, Code::Unauthenticated, "CREDENTIALS_INVALID");
    assert_error(
        list_members(&keys_only, &session.access_token, &org).await,
        Code::Unauthenticated,
        "CREDENTIALS_INVALID",
    );

    // Removed: refused at once, with nothing written by the refused calls.
    sso::remove(&tenancy, &org, &admin.user_id).await;
    let before = tenancy.snapshot().await;
    assert_error(
        list_members(&tenancy, &session.access_token, &org).await,
        Code::Unauthenticated,
        "CREDENTIALS_INVALID",
    );
    let again = pb::AddMemberRequest {
        organization_id: org.clone(),
        email: format!("late@{}", sso::DOMAIN),
        ..Default::default()
    };
    assert_error(
        tenancy.client_with(Some(&as_admin)).add_member(again).await,
        Code::Unauthenticated,
        "CREDENTIALS_INVALID",
    );
    assert_eq!(tenancy.snapshot().await, before, "a refused call wrote something");
}
