//! InvitationService's errors: what can go wrong, in the domain's words (their API form is `grpc::status`).

use lanyard_clients::ClientError;

// The variants every service's errors share (values, authentication, permission, the database,
// replays, internal failures) and their helpers come from the macro.
lanyard_core::service_errors! {
    /// Everything an invitation operation can fail with.
    pub enum InvitationError {
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
        #[error("tenancy: {0}")]
        Upstream(ClientError),
        /// The tenancy service failed unexpectedly (unreachable, misconfigured key, internal).
        #[error("the tenancy service failed: {0}")]
        TenancyUnavailable(ClientError),
    }
}

impl InvitationError {
    /// The stable reason of a tenancy status, if this is one.
    pub fn upstream_reason(&self) -> Option<String> {
        match self {
            Self::Upstream(e) => e.reason(),
            _ => None,
        }
    }
}

/// A failed call to tenancy: its business errors pass through to the caller with their code,
/// reason and details; the rest is unavailability.
impl From<ClientError> for InvitationError {
    fn from(e: ClientError) -> Self {
        match e {
            e @ ClientError::Rejected(_) => Self::Upstream(e),
            e @ ClientError::Failed(_) => Self::TenancyUnavailable(e),
            ClientError::Malformed(what) => Self::Internal(format!("tenancy: {what}")),
        }
    }
}
