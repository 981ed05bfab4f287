//! Envoy's external authorization (`envoy.service.auth.v3.Authorization/Check`), so a mesh
//! gateway asks Lanyard without custom code.
//!
//! - The token: the `authorization: Bearer <token>` request header.
//! - The organization: the [`ORGANIZATION_HEADER`] request header when present, else the token's.
//! - The permissions: the route's context extension [`PERMISSION_EXTENSION`] (`projects:read`,
//!   several separated by commas, all required); none means "any valid token for the org".
//! - Allowed: OK, and the upstream request gets the principal as headers ([`UPSTREAM_HEADERS`]),
//!   overwriting any the client sent.
//! - Denied: 401 (no or bad token, revoked session, changed or removed membership, suspended
//!   organization) or 403 (another organization, a missing permission), with the reason in the
//!   `x-lanyard-reason` response header; a bad organization header or permission is a 400.
//! - No decision possible: the gRPC status `UNAVAILABLE`, which Envoy treats as a denial unless
//!   the filter is configured `failure_mode_allow` (it must not be).

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HeaderAppendAction, HttpStatusCode,
};
use envoy_types::ext_authz::v3::{CheckRequestExt, CheckResponseExt, DeniedHttpResponseBuilder, OkHttpResponseBuilder};
use lanyard_core::{OrganizationId, Permission};
use lanyard_proto::authz::v1::Decision;
use tonic::{Request, Response, Status};

use crate::authorizer::Authorizer;
use crate::layer::{bearer, reason, ORGANIZATION_HEADER};

/// The route context extension naming the permissions a route needs.
pub const PERMISSION_EXTENSION: &str = "lanyard_permission";

/// The headers an allowed request carries upstream.
pub const UPSTREAM_HEADERS: [&str; 5] = [
    "x-lanyard-user-id",
    "x-lanyard-organization-id",
    "x-lanyard-organization-slug",
    "x-lanyard-roles",
    "x-lanyard-session-id",
];

/// The `Check` server over an [`Authorizer`].
#[derive(Clone, Debug)]
pub struct ExtAuthz {
    authorizer: Authorizer,
}

impl ExtAuthz {
    /// A server checking with `authorizer`.
    pub fn new(authorizer: Authorizer) -> Self {
        Self { authorizer }
    }

    /// The tonic service to mount.
    pub fn into_server(self) -> AuthorizationServer<Self> {
        AuthorizationServer::new(self)
    }
}

fn denied(status: HttpStatusCode, why: &str) -> CheckResponse {
    let mut http = DeniedHttpResponseBuilder::new();
    http.set_http_status(status).add_header("x-lanyard-reason", why, None, false).set_body(why);
    let code =
        if status == HttpStatusCode::Forbidden { tonic::Code::PermissionDenied } else { tonic::Code::Unauthenticated };
    let mut response = CheckResponse::with_status(Status::new(code, why));
    response.set_http_response(http);
    response
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(&self, request: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        let request = request.into_inner();
        let empty = Default::default();
        let headers = request.get_client_headers().unwrap_or(&empty);
        let Some(token) = bearer(headers.get("authorization").map(String::as_str)) else {
            return Ok(Response::new(denied(HttpStatusCode::Unauthorized, "CREDENTIALS_MISSING")));
        };
        let organization = match headers.get(ORGANIZATION_HEADER).map(|v| OrganizationId::parse(v)) {
            None => None,
            Some(Ok(org)) => Some(org),
            Some(Err(_)) => return Ok(Response::new(denied(HttpStatusCode::BadRequest, "ORGANIZATION_MALFORMED"))),
        };
        let extensions = request.attributes.as_ref().map(|a| &a.context_extensions);
        let wanted = match extensions.and_then(|e| e.get(PERMISSION_EXTENSION)) {
            None => Vec::new(),
            Some(list) => match list.split(',').map(|p| Permission::parse(p.trim())).collect::<Result<Vec<_>, _>>() {
                Ok(wanted) => wanted,
                Err(_) => return Ok(Response::new(denied(HttpStatusCode::BadRequest, "PERMISSION_MALFORMED"))),
            },
        };
        let outcome = self.authorizer.check(token, organization, &wanted).await?;
        let refused =
            std::iter::once(outcome.token).chain(outcome.permissions.iter().copied()).find(|d| *d != Decision::Allowed);
        let response = match (refused, &outcome.principal) {
            (None, Some(p)) => {
                let mut http = OkHttpResponseBuilder::new();
                let roles = p.roles.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
                let values = [
                    p.user_id.to_string(),
                    p.organization_id.to_string(),
                    p.organization_slug.clone(),
                    roles,
                    p.session_id.to_string(),
                ];
                for (name, value) in UPSTREAM_HEADERS.iter().zip(values) {
                    http.add_header(*name, value, Some(HeaderAppendAction::OverwriteIfExistsOrAdd), true);
                }
                let mut response = CheckResponse::with_status(Status::ok("allowed"));
                response.set_http_response(http);
                response
            }
            (Some(d @ (Decision::OrgMismatch | Decision::PermissionMissing)), _) => {
                denied(HttpStatusCode::Forbidden, reason(d))
            }
            (Some(d), _) => denied(HttpStatusCode::Unauthorized, reason(d)),
            (None, None) => denied(HttpStatusCode::Unauthorized, "TOKEN_INVALID"),
        };
        Ok(Response::new(response))
    }
}
