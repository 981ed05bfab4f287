//! A tower layer that authenticates every request by its bearer access token.
//!
//! ```ignore
//! let authz = Authorizer::new(Arc::new(keys), audience, facts, Fallback::Remote(client));
//! Server::builder()
//!     .layer(AuthzLayer::new(authz))
//!     .add_service(MyServiceServer::new(MyService))
//!     .serve(addr)
//!     .await?;
//!
//! // in a handler:
//! let principal = require_permission(&request, "projects:write")?;
//! ```
//!
//! The token comes from the `authorization: Bearer <token>` header; the organization the request
//! is for from [`ORGANIZATION_HEADER`] when present (else the token's). A request without a valid
//! token for that organization is refused with `UNAUTHENTICATED` and the decision as the
//! `ErrorInfo` reason (`TOKEN_INVALID`, `TOKEN_EXPIRED`, `SESSION_REVOKED`, `MEMBERSHIP_CHANGED`,
//! `NOT_A_MEMBER`, `ORG_SUSPENDED`; `ORG_MISMATCH` is `PERMISSION_DENIED`), or `UNAVAILABLE` when
//! no decision can be made. The handler finds the [`Principal`] in the request extensions.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use lanyard_core::status::Problem;
use lanyard_core::{OrganizationId, Permission};
use lanyard_proto::authz::v1::Decision;
use tonic::Code;

use crate::authorizer::Authorizer;
use crate::token::Principal;

/// The header naming the organization a request is for (a UUID).
pub const ORGANIZATION_HEADER: &str = "x-lanyard-organization";

/// Authenticates requests with an [`Authorizer`].
#[derive(Clone, Debug)]
pub struct AuthzLayer {
    authorizer: Authorizer,
}

impl AuthzLayer {
    /// A layer checking with `authorizer`.
    pub fn new(authorizer: Authorizer) -> Self {
        Self { authorizer }
    }
}

impl<S> tower::Layer<S> for AuthzLayer {
    type Service = AuthzService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthzService { inner, authorizer: self.authorizer.clone() }
    }
}

/// The service [`AuthzLayer`] wraps around another.
#[derive(Clone, Debug)]
pub struct AuthzService<S> {
    inner: S,
    authorizer: Authorizer,
}

/// The status a denied decision answers with.
pub fn denial(decision: Decision) -> tonic::Status {
    let (code, message) = match decision {
        Decision::OrgMismatch => (Code::PermissionDenied, "the token is for another organization"),
        Decision::PermissionMissing => (Code::PermissionDenied, "the token's roles do not grant this"),
        Decision::TokenExpired => (Code::Unauthenticated, "the access token has expired"),
        Decision::SessionRevoked => (Code::Unauthenticated, "the session was revoked"),
        Decision::MembershipChanged => (Code::Unauthenticated, "the membership changed; refresh the token"),
        Decision::NotAMember => (Code::Unauthenticated, "no longer a member of the organization"),
        Decision::OrgSuspended => (Code::Unauthenticated, "the organization is suspended"),
        _ => (Code::Unauthenticated, "a valid access token is required"),
    };
    Problem::new(code, reason(decision), message).into_status()
}

/// The stable reason of a decision (`SESSION_REVOKED`); a non-decision reads `TOKEN_INVALID`.
pub fn reason(decision: Decision) -> &'static str {
    match decision {
        Decision::Allowed => "ALLOWED",
        Decision::TokenExpired => "TOKEN_EXPIRED",
        Decision::SessionRevoked => "SESSION_REVOKED",
        Decision::MembershipChanged => "MEMBERSHIP_CHANGED",
        Decision::NotAMember => "NOT_A_MEMBER",
        Decision::OrgMismatch => "ORG_MISMATCH",
        Decision::PermissionMissing => "PERMISSION_MISSING",
        Decision::OrgSuspended => "ORG_SUSPENDED",
        Decision::TokenInvalid | Decision::Unspecified => "TOKEN_INVALID",
    }
}

/// The bearer token of an `authorization` header value.
pub fn bearer(value: Option<&str>) -> Option<&str> {
    let value = value?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

async fn authenticate(authorizer: &Authorizer, headers: &http::HeaderMap) -> Result<Arc<Principal>, tonic::Status> {
    let token = bearer(headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok())).ok_or_else(|| {
        Problem::new(Code::Unauthenticated, "CREDENTIALS_MISSING", "a bearer access token is required").into_status()
    })?;
    let organization = match headers.get(ORGANIZATION_HEADER) {
        None => None,
        Some(v) => Some(v.to_str().ok().and_then(|v| OrganizationId::parse(v).ok()).ok_or_else(|| {
            Problem::invalid_field(ORGANIZATION_HEADER, "the organization header is not an organization id")
                .into_status()
        })?),
    };
    let outcome = authorizer.check(token, organization, &[]).await?;
    match outcome.principal {
        Some(p) if outcome.token == Decision::Allowed => Ok(p),
        _ => Err(denial(outcome.token)),
    }
}

impl<S, B, R> tower::Service<Request<B>> for AuthzService<S>
where
    S: tower::Service<Request<B>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The clone is the one that is ready; keep it for this call (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let authorizer = self.authorizer.clone();
        Box::pin(async move {
            match authenticate(&authorizer, request.headers()).await {
                Ok(principal) => {
                    request.extensions_mut().insert(principal);
                    inner.call(request).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

/// The request's principal if its roles grant `permission`; `PERMISSION_DENIED` with reason
/// `PERMISSION_MISSING` otherwise, `UNAUTHENTICATED` when the layer did not run.
pub fn require_permission<T>(request: &tonic::Request<T>, permission: &str) -> Result<Arc<Principal>, tonic::Status> {
    let principal = principal(request)?;
    let wanted = Permission::parse(permission).map_err(|e| Problem::from(e).into_status())?;
    if principal.grants(&wanted) {
        Ok(principal)
    } else {
        Err(denial(Decision::PermissionMissing))
    }
}

/// The request's principal, put there by [`AuthzLayer`].
pub fn principal<T>(request: &tonic::Request<T>) -> Result<Arc<Principal>, tonic::Status> {
    request.extensions().get::<Arc<Principal>>().cloned().ok_or_else(|| {
        Problem::new(Code::Unauthenticated, "CREDENTIALS_MISSING", "the request was not authenticated").into_status()
    })
}
