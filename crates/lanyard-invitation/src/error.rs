//! InvitationService's errors and their one mapping to the API's codes and stable reasons.

use lanyard_clients::ClientError;
use lanyard_core::caller::{AuthError, Denied};
use lanyard_core::db::{DbErrorKind, Retryable};
use lanyard_core::idempotency::ReplayError;
use lanyard_core::status::{Problem, ServiceError};
use lanyard_core::ValueError;
use tonic::Code;

/// Everything an invitation operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum InvitationError {
    #[error(transparent)]
    Invalid(#[from] ValueError),
    #[error("{field}: {message}")]
    InvalidField { field: &'static str, message: String },
    #[error(transparent)]
    Unauthenticated(#[from] AuthError),
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error("only an operator may invite with the owner role")]
    OwnerRoleOperatorOnly,
    #[error("you may invite only into roles whose permissions you hold; you do not hold {0}")]
    PermissionNotHeld(String),
    #[error("the organization already has an owner; invite with another role and transfer ownership")]
    OwnerExists,
    #[error("invitation not found")]
    NotFound,
    #[error("the invitation has expired")]
    Expired,
    #[error("the invitation was revoked")]
    Revoked,
    #[error("the invitation was already accepted")]
    AlreadyAccepted,
    #[error("this link was replaced by a newer one; use the latest invitation email")]
    Superseded,
    #[error("the identity's verified email is not the invited email")]
    EmailMismatch,
    #[error("the identity's email is not verified")]
    EmailNotVerified,
    #[error("the email domain is not one of the organization's allowed domains")]
    EmailDomainNotAllowed,
    #[error("a pending invitation for this email already exists")]
    InvitationPending { existing: String },
    #[error("the email already belongs to an active member")]
    MemberExists,
    #[error("the organization is not active")]
    OrganizationInactive,
    #[error("too many requests; slow down")]
    RateLimited(lanyard_core::limit::Limited),
    /// A business error of the tenancy service (seats exhausted, organization not found, ...),
    /// passed through to the caller with its code, reason and details.
    #[error("tenancy: {}", .0.message())]
    Upstream(tonic::Status),
    /// The tenancy service failed unexpectedly (unreachable, misconfigured key, internal).
    #[error("the tenancy service failed: {0}")]
    TenancyUnavailable(tonic::Status),
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error(transparent)]
    Corrupt(#[from] lanyard_core::stored::UnknownStored),
    #[error("internal error: {0}")]
    Internal(String),
}

impl InvitationError {
    /// The database error's meaning, if this is one.
    pub fn db_kind(&self) -> Option<DbErrorKind> {
        match self {
            Self::Database(source) => Some(lanyard_core::db::classify(source)),
            _ => None,
        }
    }

    /// The stable reason of a tenancy status, if this is one.
    pub fn upstream_reason(&self) -> Option<String> {
        match self {
            Self::Upstream(s) => lanyard_core::status::reason_of(s),
            _ => None,
        }
    }

    /// The API form of everything but a passed-through tenancy status.
    pub fn to_problem(&self) -> Problem {
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
            Upstream(s) => Problem::new(s.code(), "UPSTREAM", s.message().to_owned()),
            TenancyUnavailable(_) => {
                Problem::new(Code::Unavailable, "TENANCY_UNAVAILABLE", "the tenancy service is unavailable; retry")
            }
            Replay(e) => e.to_problem(),
            Database(_) if self.is_retryable() => {
                Problem::new(Code::Unavailable, "DATABASE_BUSY", "the database is busy; retry")
            }
            Database(_) | Corrupt(_) | Internal(_) => Problem::new(Code::Internal, "INTERNAL", "internal error"),
        }
    }
}

impl Retryable for InvitationError {
    fn is_retryable(&self) -> bool {
        self.db_kind() == Some(DbErrorKind::Retryable) || matches!(self, Self::Replay(e) if e.is_retryable())
    }
}

impl ServiceError for InvitationError {
    const SERVICE: &'static str = "invitation";

    fn to_problem(&self) -> Problem {
        InvitationError::to_problem(self)
    }

    fn db_kind(&self) -> Option<DbErrorKind> {
        InvitationError::db_kind(self)
    }

    fn passed_on(self) -> Result<tonic::Status, Self> {
        match self {
            Self::Upstream(status) => Ok(status),
            other => Err(other),
        }
    }
}

lanyard_core::service_error!(InvitationError);

/// A failed call to tenancy: its business errors pass through to the caller with their code,
/// reason and details; the rest is unavailability.
impl From<ClientError> for InvitationError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Rejected(status) => Self::Upstream(status),
            ClientError::Failed(status) => Self::TenancyUnavailable(status),
            ClientError::Malformed(what) => Self::Internal(format!("tenancy: {what}")),
        }
    }
}
