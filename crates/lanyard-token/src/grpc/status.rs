//! The API form of TokenError: each error's gRPC code, stable reason and details, and the one
//! conversion of the service's errors into statuses ([`lanyard_core::status::status_of`]).

use lanyard_core::db::DbErrorKind;
use lanyard_core::status::{Problem, ServiceError};
use tonic::Code;

use lanyard_clients::ClientError;

use crate::error::TokenError;

impl ServiceError for TokenError {
    const SERVICE: &'static str = "token";

    fn to_problem(&self) -> Problem {
        use TokenError::*;
        let msg = self.to_string();
        match self {
            Invalid(e) => Problem::from(e.clone()),
            InvalidField { field, message } => Problem::invalid_field(field, message.clone()),
            Unauthenticated(e) => Problem::from(*e),
            Denied(e) => Problem::from(*e),
            IdTokenInvalid(_) => Problem::new(Code::Unauthenticated, "ID_TOKEN_INVALID", msg),
            IdTokenReplayed => Problem::new(Code::Unauthenticated, "ID_TOKEN_REPLAYED", msg),
            InvitationGrantInvalid(_) => Problem::new(Code::Unauthenticated, "INVITATION_GRANT_INVALID", msg),
            RateLimited { what, limited } => Problem::rate_limited(what, *limited),
            IdpUnavailable(_) => Problem::new(
                Code::Unavailable,
                "IDP_UNAVAILABLE",
                "the identity provider's keys could not be fetched; retry",
            ),
            NoConnection => Problem::new(Code::FailedPrecondition, "SSO_CONNECTION_NOT_FOUND", msg).with_precondition(
                "SSO_CONNECTION",
                "organization",
                "an enabled SSO connection with the ID token's issuer",
            ),
            OrganizationRequired => Problem::invalid_field("organization_id", msg),
            RefreshTokenInvalid => Problem::new(Code::Unauthenticated, "REFRESH_TOKEN_INVALID", msg),
            RefreshTokenExpired => Problem::new(Code::Unauthenticated, "REFRESH_TOKEN_EXPIRED", msg),
            SessionRevoked => Problem::new(Code::Unauthenticated, "TOKEN_REVOKED", msg),
            RefreshTokenReused => {
                Problem::new(Code::Unauthenticated, "TOKEN_REVOKED", msg).with_metadata("cause", "refresh_token_reused")
            }
            NotAMember => Problem::new(Code::PermissionDenied, "NOT_A_MEMBER", msg),
            OrganizationInactive => Problem::new(Code::PermissionDenied, "ORGANIZATION_INACTIVE", msg),
            ReauthenticationRequired => Problem::new(Code::PermissionDenied, "REAUTHENTICATION_REQUIRED", msg),
            SessionNotFound => Problem::new(Code::NotFound, "SESSION_NOT_FOUND", msg),
            ClientNotFound => Problem::new(Code::NotFound, "CLIENT_NOT_FOUND", msg),
            NextKeyTooNew { retry_after_secs } => {
                Problem::new(Code::FailedPrecondition, "SIGNING_KEY_NOT_PUBLISHED", msg.clone())
                    .with_metadata("retry_after_seconds", retry_after_secs)
                    .with_precondition(
                        "SIGNING_KEY_PUBLISHED",
                        "signing_key",
                        "the next key must be published longer than JWKS consumers cache the key set",
                    )
            }
            OrganizationNotFound => Problem::new(Code::NotFound, "ORGANIZATION_NOT_FOUND", msg),
            InvitationsUnavailable => Problem::new(Code::Unavailable, "INVITATIONS_UNAVAILABLE", msg),
            Upstream(e) => Problem::new(e.code(), "UPSTREAM", e.to_string()),
            DependencyUnavailable(_) => {
                Problem::new(Code::Unavailable, "DEPENDENCY_UNAVAILABLE", "a dependency is unavailable; retry")
            }
            Replay(e) => e.to_problem(),
            Database(e) => lanyard_core::db::problem(e),
            Corrupt(_) | Internal(_) | Failed { .. } => Problem::new(Code::Internal, "INTERNAL", "internal error"),
        }
    }

    fn db_kind(&self) -> Option<DbErrorKind> {
        TokenError::db_kind(self)
    }

    fn log(&self) {
        match self {
            Self::IdTokenInvalid(detail) => tracing::info!(detail, "ID token refused"),
            Self::InvitationGrantInvalid(detail) => tracing::info!(detail, "invitation grant refused"),
            Self::IdTokenReplayed => tracing::warn!("an ID token was exchanged a second time"),
            Self::IdpUnavailable(detail) => tracing::warn!(detail, "identity provider unavailable"),
            _ => {}
        }
    }

    fn passed_on(self) -> Result<tonic::Status, Self> {
        match self {
            Self::Upstream(ClientError::Rejected(status)) => Ok(status),
            other => Err(other),
        }
    }
}

lanyard_core::service_error!(TokenError);
