//! TenancyService's errors and their one mapping to the API's codes and stable reasons.

use lanyard_core::caller::{AuthError, Denied};
use lanyard_core::db::{DbErrorKind, Retryable};
use lanyard_core::idempotency::ReplayError;
use lanyard_core::status::{Problem, ServiceError};
use lanyard_core::ValueError;
use tonic::Code;

/// Everything a tenancy operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum TenancyError {
    #[error(transparent)]
    Invalid(#[from] ValueError),
    #[error("{field}: {message}")]
    InvalidField { field: &'static str, message: String },
    #[error(transparent)]
    Unauthenticated(#[from] AuthError),
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error("organization not found")]
    OrganizationNotFound,
    #[error("the organization is deleted")]
    OrganizationDeleted,
    #[error("the organization is suspended")]
    OrganizationSuspended,
    #[error("an organization with this slug already exists")]
    SlugTaken,
    #[error("member not found")]
    MemberNotFound,
    #[error("user not found")]
    UserNotFound,
    #[error("the user is already an active member")]
    MemberExists,
    #[error("all {limit} seats are in use")]
    SeatsExhausted { limit: u32, used: u32 },
    #[error("the seat limit {requested} is below the {used} seats in use")]
    SeatLimitBelowUsage { requested: u32, used: u32 },
    #[error("the email domain is not one of the organization's allowed domains")]
    EmailDomainNotAllowed,
    #[error("public webmail domains are refused unless an operator allows them")]
    PublicDomainNotAllowed,
    #[error("the domain is already allowed")]
    DomainExists,
    #[error("the domain is not an allowed domain of the organization")]
    DomainNotFound,
    #[error("the owner cannot be removed or demoted; transfer ownership first")]
    OwnerProtected,
    #[error("the organization already has an owner; use TransferOwnership")]
    OwnerExists,
    #[error("role not found: {0}")]
    RoleNotFound(String),
    #[error("a role with this name already exists")]
    RoleExists,
    #[error("built-in roles cannot be changed")]
    RoleBuiltIn,
    #[error("the role is held by {0} active member(s)")]
    RoleInUse(u64),
    #[error("SSO connection not found")]
    ConnectionNotFound,
    #[error("the issuer's host is not a public address: {0}")]
    IssuerAddressForbidden(String),
    #[error("the issuer is not on the operator's issuer allowlist")]
    IssuerNotAllowed,
    #[error("the organization already has {limit} SSO connections, the most it may have")]
    ConnectionsExhausted { limit: u32 },
    #[error("seat reservation not found")]
    ReservationNotFound,
    #[error("the seat reservation has expired")]
    ReservationExpired,
    #[error("the seat reservation was released")]
    ReservationReleased,
    #[error("the seat reservation was claimed by another user")]
    ReservationClaimed,
    #[error("the identity is not linked and carries no usable email")]
    IdentityConflict,
    #[error("the domain is verified for another organization")]
    DomainVerifiedElsewhere,
    #[error("{0} belongs to the built-in owner role alone")]
    OwnerOnlyPermission(String),
    #[error("you may grant only permissions you hold; you do not hold {0}")]
    PermissionNotHeld(String),
    #[error("no TXT record {record} was found; publish it and retry")]
    DomainChallengeMissing { record: String },
    #[error("the TXT records at {record} do not hold this domain's challenge")]
    DomainChallengeMismatch { record: String },
    #[error("DNS could not be queried: {0}")]
    DnsUnavailable(String),
    #[error("the identity provider did not verify the email, and the identity is not linked to a user")]
    EmailNotVerified,
    #[error("the email's domain is not verified for this organization, so its identity provider cannot vouch for it")]
    EmailDomainNotVerified,
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error(transparent)]
    Corrupt(#[from] lanyard_core::stored::UnknownStored),
    #[error("internal error: {0}")]
    Internal(String),
}

impl TenancyError {
    /// The database error's meaning, if this is one.
    pub fn db_kind(&self) -> Option<DbErrorKind> {
        match self {
            Self::Database(source) => Some(lanyard_core::db::classify(source)),
            _ => None,
        }
    }

    /// The API form: a code, a stable reason and details.
    pub fn to_problem(&self) -> Problem {
        use TenancyError::*;
        let msg = self.to_string();
        match self {
            Invalid(e) => Problem::from(e.clone()),
            InvalidField { field, message } => Problem::invalid_field(field, message.clone()),
            Unauthenticated(e) => Problem::from(*e),
            Denied(e) => Problem::from(*e),
            OrganizationNotFound => Problem::new(Code::NotFound, "ORGANIZATION_NOT_FOUND", msg),
            OrganizationDeleted => Problem::new(Code::FailedPrecondition, "ORGANIZATION_DELETED", msg)
                .with_precondition("ORGANIZATION_STATUS", "organization", "the organization must be active"),
            OrganizationSuspended => Problem::new(Code::FailedPrecondition, "ORGANIZATION_SUSPENDED", msg)
                .with_precondition("ORGANIZATION_STATUS", "organization", "the organization must be active"),
            SlugTaken => Problem::new(Code::AlreadyExists, "SLUG_TAKEN", msg),
            MemberNotFound => Problem::new(Code::NotFound, "NOT_A_MEMBER", msg),
            UserNotFound => Problem::new(Code::NotFound, "USER_NOT_FOUND", msg),
            MemberExists => Problem::new(Code::AlreadyExists, "MEMBER_EXISTS", msg),
            SeatsExhausted { limit, used } => Problem::new(Code::ResourceExhausted, "SEATS_EXHAUSTED", msg)
                .with_quota_violation("organization", format!("{used} of {limit} seats are in use"))
                .with_metadata("seat_limit", limit)
                .with_metadata("seats_used", used),
            SeatLimitBelowUsage { requested, used } => {
                Problem::new(Code::FailedPrecondition, "SEAT_LIMIT_BELOW_USAGE", msg)
                    .with_precondition("SEAT_USAGE", "seat_limit", format!("{used} seats are in use"))
                    .with_metadata("seat_limit_requested", requested)
                    .with_metadata("seats_used", used)
            }
            EmailDomainNotAllowed => Problem::new(Code::PermissionDenied, "EMAIL_DOMAIN_NOT_ALLOWED", msg),
            PublicDomainNotAllowed => Problem::new(Code::InvalidArgument, "PUBLIC_DOMAIN_NOT_ALLOWED", msg),
            DomainExists => Problem::new(Code::AlreadyExists, "DOMAIN_EXISTS", msg),
            DomainNotFound => Problem::new(Code::NotFound, "DOMAIN_NOT_FOUND", msg),
            OwnerProtected => Problem::new(Code::FailedPrecondition, "OWNER_PROTECTED", msg).with_precondition(
                "OWNERSHIP",
                "owner",
                "transfer ownership first",
            ),
            OwnerExists => Problem::new(Code::FailedPrecondition, "OWNER_EXISTS", msg).with_precondition(
                "OWNERSHIP",
                "owner",
                "use TransferOwnership",
            ),
            RoleNotFound(name) => Problem::new(Code::NotFound, "ROLE_NOT_FOUND", msg).with_metadata("role", name),
            RoleExists => Problem::new(Code::AlreadyExists, "ROLE_EXISTS", msg),
            RoleBuiltIn => Problem::new(Code::FailedPrecondition, "ROLE_BUILT_IN", msg),
            RoleInUse(n) => Problem::new(Code::FailedPrecondition, "ROLE_IN_USE", msg).with_precondition(
                "ROLE_USAGE",
                "role",
                format!("{n} active member(s) hold it"),
            ),
            ConnectionNotFound => Problem::new(Code::NotFound, "CONNECTION_NOT_FOUND", msg),
            IssuerAddressForbidden(_) => Problem::invalid_field("issuer", msg).with_reason("ISSUER_ADDRESS_FORBIDDEN"),
            IssuerNotAllowed => Problem::invalid_field("issuer", msg).with_reason("ISSUER_NOT_ALLOWED"),
            ConnectionsExhausted { limit } => Problem::new(Code::ResourceExhausted, "SSO_CONNECTIONS_EXHAUSTED", msg)
                .with_quota_violation("organization", format!("at most {limit} SSO connections"))
                .with_metadata("limit", limit),
            ReservationNotFound => Problem::new(Code::NotFound, "RESERVATION_NOT_FOUND", msg),
            ReservationExpired => Problem::new(Code::FailedPrecondition, "RESERVATION_EXPIRED", msg),
            ReservationReleased => Problem::new(Code::FailedPrecondition, "RESERVATION_RELEASED", msg),
            ReservationClaimed => Problem::new(Code::FailedPrecondition, "RESERVATION_CLAIMED", msg),
            IdentityConflict => Problem::new(Code::FailedPrecondition, "IDENTITY_CONFLICT", msg),
            DomainVerifiedElsewhere => Problem::new(Code::AlreadyExists, "DOMAIN_VERIFIED_ELSEWHERE", msg),
            OwnerOnlyPermission(p) => Problem::new(Code::PermissionDenied, "OWNER_ONLY_PERMISSION", msg.clone())
                .with_metadata("permission", p),
            PermissionNotHeld(p) => {
                Problem::new(Code::PermissionDenied, "PERMISSION_NOT_HELD", msg.clone()).with_metadata("permission", p)
            }
            DomainChallengeMissing { record } => {
                Problem::new(Code::FailedPrecondition, "DOMAIN_CHALLENGE_MISSING", msg.clone()).with_precondition(
                    "DNS_TXT",
                    record.clone(),
                    "the TXT record AddDomain returned must be published",
                )
            }
            DomainChallengeMismatch { record } => {
                Problem::new(Code::FailedPrecondition, "DOMAIN_CHALLENGE_MISMATCH", msg.clone()).with_precondition(
                    "DNS_TXT",
                    record.clone(),
                    "the TXT record must hold the exact value AddDomain returned",
                )
            }
            DnsUnavailable(_) => Problem::new(Code::Unavailable, "DNS_UNAVAILABLE", "DNS could not be queried; retry"),
            EmailNotVerified => Problem::new(Code::PermissionDenied, "EMAIL_NOT_VERIFIED", msg),
            EmailDomainNotVerified => Problem::new(Code::PermissionDenied, "EMAIL_DOMAIN_NOT_VERIFIED", msg),
            Replay(e) => e.to_problem(),
            Database(_) if self.is_retryable() => {
                Problem::new(Code::Unavailable, "DATABASE_BUSY", "the database is busy; retry")
            }
            Database(_) | Corrupt(_) | Internal(_) => Problem::new(Code::Internal, "INTERNAL", "internal error"),
        }
    }
}

impl Retryable for TenancyError {
    fn is_retryable(&self) -> bool {
        self.db_kind() == Some(DbErrorKind::Retryable) || matches!(self, Self::Replay(e) if e.is_retryable())
    }
}

impl ServiceError for TenancyError {
    const SERVICE: &'static str = "tenancy";

    fn to_problem(&self) -> Problem {
        TenancyError::to_problem(self)
    }

    fn db_kind(&self) -> Option<DbErrorKind> {
        TenancyError::db_kind(self)
    }
}

lanyard_core::service_error!(TenancyError);
