//! `AuthzLayer` in front of a real tonic service over loopback, and `require_permission` in its
//! handler: a valid token reaches the handler with its principal; every refusal carries its gRPC
//! code and stable reason and never reaches the handler; a missing permission is refused by the
//! handler with PERMISSION_MISSING; no decision possible is UNAVAILABLE.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use lanyard_authz::authorizer::principal_to_pb;
use lanyard_authz::{principal, require_permission, AccessClaims, AuthzLayer, Decision, ORGANIZATION_HEADER};
use lanyard_core::status::reason_of;
use lanyard_core::OrganizationId;
use lanyard_proto::authz::v1 as apb;
use lanyard_proto::authz::v1::authorization_service_client::AuthorizationServiceClient;
use lanyard_proto::authz::v1::authorization_service_server::{AuthorizationService, AuthorizationServiceServer};
use support::{incoming, listen, now_secs, Harness, REVOCATIONS};
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

/// An internal service: `Authorize` answers with the principal the layer put in the request,
/// after `require_permission` for the permission asked (none: any authenticated caller).
struct Protected {
    calls: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl AuthorizationService for Protected {
    async fn authorize(
        &self,
        request: Request<apb::AuthorizeRequest>,
    ) -> Result<Response<apb::AuthorizeResponse>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let permission = request.get_ref().permission.clone();
        let p = if permission.is_empty() { principal(&request)? } else { require_permission(&request, &permission)? };
        Ok(Response::new(apb::AuthorizeResponse {
            allowed: true,
            reason: Decision::Allowed as i32,
            principal: Some(principal_to_pb(&p)),
        }))
    }

    async fn batch_authorize(
        &self,
        _: Request<apb::BatchAuthorizeRequest>,
    ) -> Result<Response<apb::BatchAuthorizeResponse>, Status> {
        Err(Status::unimplemented("not here"))
    }
}

struct App {
    h: Harness,
    client: AuthorizationServiceClient<Channel>,
    calls: Arc<AtomicUsize>,
}

impl App {
    async fn start() -> Self {
        let h = Harness::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let router = tonic::transport::Server::builder()
            .layer(AuthzLayer::new(h.authorizer.clone()))
            .add_service(AuthorizationServiceServer::new(Protected { calls: calls.clone() }));
        let (listener, addr) = listen().await;
        tokio::spawn(router.serve_with_incoming(incoming(listener)));
        let client = AuthorizationServiceClient::connect(format!("http://{addr}")).await.expect("connect");
        Self { h, client, calls }
    }

    /// Calls the service with `authorization` and the organization header, asking `permission`.
    async fn call(
        &self,
        authorization: Option<&str>,
        organization: Option<&str>,
        permission: &str,
    ) -> Result<apb::Principal, Status> {
        let mut request = Request::new(apb::AuthorizeRequest { permission: permission.into(), ..Default::default() });
        if let Some(value) = authorization {
            request.metadata_mut().insert("authorization", value.parse().expect("header"));
        }
        if let Some(org) = organization {
            request.metadata_mut().insert(ORGANIZATION_HEADER, org.parse().expect("header"));
        }
        let response = self.client.clone().authorize(request).await?;
        Ok(response.into_inner().principal.expect("principal"))
    }

    async fn bearer(&self, token: &str) -> Result<apb::Principal, Status> {
        self.call(Some(&format!("Bearer {token}")), None, "").await
    }

    fn handled(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[track_caller]
fn assert_refused(result: Result<apb::Principal, Status>, code: Code, reason: &str) {
    let status = result.expect_err(reason);
    assert_eq!((status.code(), reason_of(&status).as_deref()), (code, Some(reason)), "{status:?}");
}

#[tokio::test]
async fn a_valid_token_reaches_the_handler_with_its_principal() {
    let app = App::start().await;
    let (m, token) = app.h.member(&["projects:read"]);
    let p = app.bearer(&token).await.expect("allowed");
    assert_eq!(p.user_id, m.user_id.to_string());
    assert_eq!(p.organization_id, m.org_id.to_string());
    assert_eq!(p.session_id, m.session_id.to_string());
    assert_eq!(
        (p.roles, p.permissions, p.membership_version),
        (vec!["engineer".into()], vec!["projects:read".into()], 3)
    );
    // The scheme is case-insensitive; the organization header may name the token's own.
    let own_org = m.org_id.to_string();
    app.call(Some(&format!("bearer {token}")), Some(&own_org), "projects:read").await.expect("allowed");
    assert_eq!(app.handled(), 2);
}

#[tokio::test]
async fn a_missing_permission_is_refused_by_require_permission() {
    let app = App::start().await;
    let (_, token) = app.h.member(&["projects:read"]);
    let bearer = format!("Bearer {token}");
    assert_refused(app.call(Some(&bearer), None, "projects:write").await, Code::PermissionDenied, "PERMISSION_MISSING");
    let malformed = app.call(Some(&bearer), None, "Projects Write").await.expect_err("malformed permission");
    assert_eq!(malformed.code(), Code::InvalidArgument);
    app.call(Some(&bearer), None, "projects:read").await.expect("the permission it has");
}

#[tokio::test]
async fn refusals_carry_their_code_and_reason_and_never_reach_the_handler() {
    let app = App::start().await;
    let h = &app.h;
    let (m, token) = h.member(&["projects:read"]);
    let expired = {
        let now = now_secs();
        h.signer.sign(&AccessClaims { iat: now - 900, nbf: now - 900, exp: now - 300, ..m.claims() })
    };
    let other_org = OrganizationId::new().to_string();
    let bearer = format!("Bearer {token}");
    let cases = [
        (None, None, Code::Unauthenticated, "CREDENTIALS_MISSING"),
        (Some(format!("Basic {token}")), None, Code::Unauthenticated, "CREDENTIALS_MISSING"),
        (Some("Bearer ".to_owned()), None, Code::Unauthenticated, "CREDENTIALS_MISSING"),
        (Some("Bearer not-a-token".to_owned()), None, Code::Unauthenticated, "TOKEN_INVALID"),
        (Some(format!("Bearer {token}x")), None, Code::Unauthenticated, "TOKEN_INVALID"),
        (Some(format!("Bearer {expired}")), None, Code::Unauthenticated, "TOKEN_EXPIRED"),
        (Some(bearer.clone()), Some(other_org.as_str()), Code::PermissionDenied, "ORG_MISMATCH"),
    ];
    for (authorization, organization, code, reason) in cases {
        assert_refused(app.call(authorization.as_deref(), organization, "").await, code, reason);
    }
    let malformed_org = app.call(Some(&bearer), Some("acme"), "").await.expect_err("malformed organization");
    assert_eq!(malformed_org.code(), Code::InvalidArgument);
    assert_eq!(app.handled(), 0, "no refusal reached the handler");
}

#[tokio::test]
async fn revocations_are_refused_as_unauthenticated_with_their_reason() {
    let app = App::start().await;
    let facts = app.h.authorizer.facts();
    for revocation in REVOCATIONS {
        let (m, token) = app.h.member(&["projects:read"]);
        app.bearer(&token).await.expect("allowed before");
        let (key, state) = (revocation.fact)(&m);
        facts.write(&key, &state).await.expect("write");
        assert_refused(app.bearer(&token).await, Code::Unauthenticated, revocation.reason);
    }
    assert_eq!(app.handled(), 4, "only the calls before each revocation");
}

#[tokio::test]
async fn no_decision_is_unavailable_and_never_reaches_the_handler() {
    let app = App::start().await;
    let (_, token) = app.h.member(&["projects:read"]);
    app.h.source.fail(true);
    assert_refused(app.bearer(&token).await, Code::Unavailable, "AUTHORIZATION_UNAVAILABLE");
    assert_eq!(app.handled(), 0);
}

#[test]
fn a_request_the_layer_did_not_see_has_no_principal() {
    let request = Request::new(());
    for status in [
        principal(&request).expect_err("no layer"),
        require_permission(&request, "projects:read").expect_err("no layer"),
    ] {
        assert_eq!(
            (status.code(), reason_of(&status).as_deref()),
            (Code::Unauthenticated, Some("CREDENTIALS_MISSING"))
        );
    }
}
