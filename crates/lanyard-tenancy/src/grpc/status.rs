//! The API form of TenancyError: each error's gRPC code, stable reason and details, and the one
//! conversion of the service's errors into statuses ([`lanyard_core::status::status_of`]).

use lanyard_core::db::DbErrorKind;
use lanyard_core::status::{Problem, ServiceError};
use tonic::Code;

use crate::error::TenancyError;

impl ServiceError for TenancyError {
    const SERVICE: &'static str = "tenancy";

    fn to_problem(&self) -> Problem {
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
            Database(e) => lanyard_core::db::problem(e),
            Corrupt(_) | Internal(_) | Failed { .. } => Problem::new(Code::Internal, "INTERNAL", "internal error"),
        }
    }

    fn db_kind(&self) -> Option<DbErrorKind> {
        TenancyError::db_kind(self)
    }
}

lanyard_core::service_error!(TenancyError);
