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
}
