//! The API form of InvitationError: each error's gRPC code, stable reason and details, and the one
//! conversion of the service's errors into statuses ([`lanyard_core::status::status_of`]).

use lanyard_core::db::DbErrorKind;
use lanyard_core::status::{Problem, ServiceError};
use tonic::Code;

use lanyard_clients::ClientError;

use crate::error::InvitationError;

impl ServiceError for InvitationError {
    const SERVICE: &'static str = "invitation";

    fn to_problem(&self) -> Problem {
        use InvitationError::*;
        let msg = self.to_string();
        let failed = |reason: &'static str| {
            Problem::new(Code::FailedPrecondition, reason, msg.clone()).with_precondition(
                "INVITATION_STATUS",
                "invitation",
                "the invitation must be pending",
            )
        };
        match self {
            Invalid(e) => Problem::from(e.clone()),
            InvalidField { field, message } => Problem::invalid_field(field, message.clone()),
            Unauthenticated(e) => Problem::from(*e),
            Denied(e) => Problem::from(*e),
            OwnerRoleOperatorOnly => Problem::new(Code::PermissionDenied, "OWNER_ROLE_OPERATOR_ONLY", msg),
            PermissionNotHeld(p) => {
                Problem::new(Code::PermissionDenied, "PERMISSION_NOT_HELD", msg.clone()).with_metadata("permission", p)
            }
            OwnerExists => Problem::new(Code::FailedPrecondition, "OWNER_EXISTS", msg).with_precondition(
                "OWNERSHIP",
                "owner",
                "use TransferOwnership",
            ),
            NotFound => Problem::new(Code::NotFound, "INVITATION_NOT_FOUND", msg),
            Expired => failed("INVITATION_EXPIRED"),
            Revoked => failed("INVITATION_REVOKED"),
            AlreadyAccepted => failed("INVITATION_ALREADY_ACCEPTED"),
            Superseded => failed("INVITATION_SUPERSEDED"),
            EmailMismatch => Problem::new(Code::PermissionDenied, "EMAIL_MISMATCH", msg),
            EmailNotVerified => Problem::new(Code::PermissionDenied, "EMAIL_NOT_VERIFIED", msg),
            EmailDomainNotAllowed => Problem::new(Code::PermissionDenied, "EMAIL_DOMAIN_NOT_ALLOWED", msg),
            InvitationPending { existing } => {
                Problem::new(Code::AlreadyExists, "INVITATION_PENDING", msg).with_metadata("invitation_id", existing)
            }
            MemberExists => Problem::new(Code::AlreadyExists, "MEMBER_EXISTS", msg),
            OrganizationInactive => Problem::new(Code::FailedPrecondition, "ORGANIZATION_INACTIVE", msg)
                .with_precondition("ORGANIZATION_STATUS", "organization", "the organization must be active"),
            RateLimited(limited) => Problem::rate_limited("previews", *limited),
            Upstream(e) => Problem::new(e.code(), "UPSTREAM", e.to_string()),
            TenancyUnavailable(_) => {
                Problem::new(Code::Unavailable, "TENANCY_UNAVAILABLE", "the tenancy service is unavailable; retry")
            }
            Replay(e) => e.to_problem(),
            Database(e) => lanyard_core::db::problem(e),
            Corrupt(_) | Internal(_) | Failed { .. } => Problem::new(Code::Internal, "INTERNAL", "internal error"),
        }
    }

    fn db_kind(&self) -> Option<DbErrorKind> {
        InvitationError::db_kind(self)
    }

    fn passed_on(self) -> Result<tonic::Status, Self> {
        match self {
            Self::Upstream(ClientError::Rejected(status)) => Ok(status),
            other => Err(other),
        }
    }
}

lanyard_core::service_error!(InvitationError);
