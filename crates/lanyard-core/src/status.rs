//! Builds `tonic::Status` values with `google.rpc` details and a stable `ErrorInfo` reason.
//! Every service's error enum becomes a [`Problem`] in one place, then a status here.

use std::collections::HashMap;

use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of every Lanyard error.
pub const ERROR_DOMAIN: &str = "lanyard.dev";

/// An error as the API reports it.
#[derive(Debug, Clone)]
pub struct Problem {
    code: Code,
    reason: &'static str,
    message: String,
    metadata: HashMap<String, String>,
    field_violation: Option<(String, String)>,
    quota_violation: Option<(String, String)>,
    precondition: Option<(String, String, String)>,
    retry_after: Option<std::time::Duration>,
}

impl Problem {
    /// A problem with a gRPC code, a stable reason and a human message.
    pub fn new(code: Code, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            metadata: HashMap::new(),
            field_violation: None,
            quota_violation: None,
            precondition: None,
            retry_after: None,
        }
    }

    /// `INVALID_ARGUMENT` with a `BadRequest` field violation.
    pub fn invalid_field(field: &str, description: impl Into<String>) -> Self {
        let description = description.into();
        let mut p = Self::new(Code::InvalidArgument, "INVALID_ARGUMENT", description.clone());
        p.field_violation = Some((field.to_owned(), description));
        p.metadata.insert("field".into(), field.to_owned());
        p
    }

    /// Replaces the stable reason (an invalid field with a reason of its own).
    pub fn with_reason(mut self, reason: &'static str) -> Self {
        self.reason = reason;
        self
    }

    /// Adds an `ErrorInfo` metadata entry.
    pub fn with_metadata(mut self, key: &str, value: impl ToString) -> Self {
        self.metadata.insert(key.to_owned(), value.to_string());
        self
    }

    /// Adds a `QuotaFailure` violation.
    pub fn with_quota_violation(mut self, subject: impl Into<String>, description: impl Into<String>) -> Self {
        self.quota_violation = Some((subject.into(), description.into()));
        self
    }

    /// Adds a `PreconditionFailure` violation.
    pub fn with_precondition(
        mut self,
        kind: impl Into<String>,
        subject: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        self.precondition = Some((kind.into(), subject.into(), description.into()));
        self
    }

    /// Adds a `RetryInfo` (and `retry_after_seconds` to the `ErrorInfo` metadata): when the
    /// caller may try again.
    pub fn with_retry_after(mut self, after: std::time::Duration) -> Self {
        self.retry_after = Some(after);
        self.with_metadata("retry_after_seconds", after.as_secs_f64().ceil() as u64)
    }

    /// The `RESOURCE_EXHAUSTED` answer of a per-peer rate limit (reason `RATE_LIMITED`).
    pub fn rate_limited(what: &str, limited: crate::limit::Limited) -> Self {
        Self::new(Code::ResourceExhausted, "RATE_LIMITED", format!("too many {what} from this address; retry later"))
            .with_quota_violation("peer", format!("too many {what} from this address"))
            .with_retry_after(limited.retry_after)
    }

    /// The stable reason.
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// The gRPC code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The status with its details.
    pub fn into_status(self) -> tonic::Status {
        let mut details = ErrorDetails::with_error_info(self.reason, ERROR_DOMAIN, self.metadata);
        if let Some((field, description)) = self.field_violation {
            details.add_bad_request_violation(field, description);
        }
        if let Some((subject, description)) = self.quota_violation {
            details.add_quota_failure_violation(subject, description);
        }
        if let Some((kind, subject, description)) = self.precondition {
            details.add_precondition_failure_violation(kind, subject, description);
        }
        if let Some(after) = self.retry_after {
            details.set_retry_info(Some(after));
        }
        tonic::Status::with_error_details(self.code, self.message, details)
    }
}

impl From<crate::values::ValueError> for Problem {
    fn from(e: crate::values::ValueError) -> Self {
        Self::invalid_field(e.field(), e.to_string())
    }
}

impl From<crate::caller::AuthError> for Problem {
    fn from(e: crate::caller::AuthError) -> Self {
        use crate::caller::AuthError;
        let reason = match e {
            AuthError::Missing => "CREDENTIALS_MISSING",
            AuthError::Malformed => "CREDENTIALS_MALFORMED",
            AuthError::Invalid => "CREDENTIALS_INVALID",
            AuthError::Unavailable => {
                return Self::new(Code::Unavailable, "AUTHORIZATION_UNAVAILABLE", e.to_string());
            }
        };
        Self::new(Code::Unauthenticated, reason, e.to_string())
    }
}

impl From<crate::caller::Denied> for Problem {
    fn from(e: crate::caller::Denied) -> Self {
        use crate::caller::Denied;
        let reason = match e {
            Denied::WrongOrganization => "WRONG_ORGANIZATION",
            Denied::MissingPermission => "PERMISSION_MISSING",
            Denied::OperatorOnly => "OPERATOR_ONLY",
            Denied::ServiceOnly => "SERVICE_ONLY",
        };
        Self::new(Code::PermissionDenied, reason, e.to_string())
    }
}

/// What every service's error enum provides, so that one function turns any of them into the
/// status its caller gets ([`status_of`]; [`service_error!`](crate::service_error) writes the
/// `From` impl that calls it).
pub trait ServiceError: std::error::Error + Sized {
    /// The service's name in logs and in `lanyard_database_errors_total{service}`.
    const SERVICE: &'static str;

    /// The API form: a code, a stable reason and details.
    fn to_problem(&self) -> Problem;

    /// What a database error means, when this is one (counted in metrics).
    #[cfg(feature = "db")]
    fn db_kind(&self) -> Option<crate::db::DbErrorKind> {
        None
    }

    /// Logs what this error says about the world below error level (a refused token, a flaky
    /// identity provider); called for every error before it is answered.
    fn log(&self) {}

    /// A status another service answered, to pass on whole (code, reason and details), when
    /// this error is one.
    fn passed_on(self) -> Result<tonic::Status, Self> {
        Err(self)
    }
}

/// The status a caller gets for `error`. An `INTERNAL` or `UNAVAILABLE` answer is logged here,
/// once, with the error's whole cause chain; the caller gets only the code, the stable reason
/// and a neutral message, never the causes.
pub fn status_of<E: ServiceError>(error: E) -> tonic::Status {
    let error = match error.passed_on() {
        Ok(status) => return status,
        Err(error) => error,
    };
    error.log();
    #[cfg(feature = "db")]
    if let Some(kind) = error.db_kind() {
        kind.count(E::SERVICE);
    }
    let problem = error.to_problem();
    if matches!(problem.code(), Code::Internal | Code::Unavailable) {
        tracing::error!(service = E::SERVICE, reason = problem.reason(), error = %CauseChain(&error), "request failed");
    }
    problem.into_status()
}

/// Writes `impl From<$error> for tonic::Status` through [`status_of`].
#[macro_export]
macro_rules! service_error {
    ($error:ty) => {
        impl From<$error> for tonic::Status {
            fn from(error: $error) -> Self {
                $crate::status::status_of(error)
            }
        }
    };
}

/// Declares a service's error enum: the variants written inside, then the ones every service's
/// errors share (bad values and fields, authentication, permission, the database, idempotent
/// replays, corrupt stored values, internal failures), with their helpers (`failed`, `db_kind`,
/// [`crate::db::Retryable`]). Each service maps them to its API form in its `grpc::status`.
///
/// ```ignore
/// lanyard_core::service_errors! {
///     /// Everything a token operation can fail with.
///     pub enum TokenError {
///         #[error("organization not found")]
///         OrganizationNotFound,
///     }
/// }
/// ```
#[macro_export]
macro_rules! service_errors {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($variants:tt)* }) => {
        $(#[$meta])*
        #[derive(Debug, thiserror::Error)]
        $vis enum $name {
            #[error(transparent)]
            Invalid(#[from] $crate::ValueError),
            #[error("{field}: {message}")]
            InvalidField { field: &'static str, message: String },
            #[error(transparent)]
            Unauthenticated(#[from] $crate::caller::AuthError),
            #[error(transparent)]
            Denied(#[from] $crate::caller::Denied),
            $($variants)*
            #[error("database error")]
            Database(#[from] sqlx::Error),
            #[error(transparent)]
            Replay(#[from] $crate::idempotency::ReplayError),
            #[error(transparent)]
            Corrupt(#[from] $crate::stored::UnknownStored),
            #[error("internal error: {0}")]
            Internal(String),
            /// Something below the domain failed (a key that does not open, a blocking task that
            /// panicked...): answered `INTERNAL`, its cause chain logged.
            #[error("{what}")]
            Failed { what: &'static str, source: Box<dyn std::error::Error + Send + Sync> },
        }

        impl $name {
            /// A failure below the domain, its cause kept for the log.
            pub fn failed<E>(what: &'static str) -> impl FnOnce(E) -> Self
            where
                E: std::error::Error + Send + Sync + 'static,
            {
                move |source| Self::Failed { what, source: Box::new(source) }
            }

            /// The database error's meaning, if this is one.
            pub fn db_kind(&self) -> Option<$crate::db::DbErrorKind> {
                match self {
                    Self::Database(source) => Some($crate::db::classify(source)),
                    _ => None,
                }
            }
        }

        impl $crate::db::Retryable for $name {
            fn is_retryable(&self) -> bool {
                self.db_kind() == Some($crate::db::DbErrorKind::Retryable)
                    || matches!(self, Self::Replay(e) if e.is_retryable())
            }
        }
    };
}

/// Displays an error and each of its sources, `outer: inner: innermost`.
pub struct CauseChain<'a>(pub &'a (dyn std::error::Error + 'a));

impl std::fmt::Display for CauseChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// Reads the stable reason back from a status (for clients and tests).
pub fn reason_of(status: &tonic::Status) -> Option<String> {
    status.get_details_error_info().map(|info| info.reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_survive_the_round_trip() {
        let status = Problem::new(Code::ResourceExhausted, "SEATS_EXHAUSTED", "no seats left")
            .with_quota_violation("organization:x", "10 of 10 seats used")
            .with_metadata("seat_limit", 10)
            .into_status();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(reason_of(&status).as_deref(), Some("SEATS_EXHAUSTED"));
        let quota = status.get_details_quota_failure().unwrap();
        assert_eq!(quota.violations[0].subject, "organization:x");
        let bad = Problem::invalid_field("email", "email is malformed").into_status();
        assert_eq!(bad.get_details_bad_request().unwrap().field_violations[0].field, "email");
    }

    #[derive(Debug, thiserror::Error)]
    enum Failure {
        #[error("the store failed")]
        Store(#[source] std::io::Error),
        #[error("refused upstream")]
        Upstream(tonic::Status),
    }

    impl ServiceError for Failure {
        const SERVICE: &'static str = "test";

        fn to_problem(&self) -> Problem {
            Problem::new(Code::Internal, "INTERNAL", "internal error")
        }

        fn passed_on(self) -> Result<tonic::Status, Self> {
            match self {
                Self::Upstream(status) => Ok(status),
                other => Err(other),
            }
        }
    }

    #[test]
    fn the_cause_chain_is_logged_whole_and_never_answered() {
        let io = std::io::Error::other("disk full");
        let error = Failure::Store(io);
        assert_eq!(CauseChain(&error).to_string(), "the store failed: disk full");
        let status = status_of(error);
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
        assert_eq!(reason_of(&status).as_deref(), Some("INTERNAL"));
    }

    #[test]
    fn another_services_status_passes_on_whole() {
        let upstream = Problem::new(Code::ResourceExhausted, "SEATS_EXHAUSTED", "no seats left").into_status();
        let status = status_of(Failure::Upstream(upstream));
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(reason_of(&status).as_deref(), Some("SEATS_EXHAUSTED"));
    }
}
