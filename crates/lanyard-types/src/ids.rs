//! Typed UUID identifiers. Every id the API accepts is parsed into one of these at the edge.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use crate::values::ValueError;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            /// A new time-ordered (v7) id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Parses the canonical hyphenated UUID form.
            pub fn parse(s: &str) -> Result<Self, ValueError> {
                if s.is_empty() {
                    return Err(ValueError::Missing($what));
                }
                // Only the canonical 36-character form: no braces, URNs or simple form.
                if s.len() != 36 {
                    return Err(ValueError::Malformed($what));
                }
                Uuid::parse_str(s).map(Self).map_err(|_| ValueError::Malformed($what))
            }

            /// The underlying UUID.
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = ValueError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    };
}

uuid_id!(
    /// An organization's id.
    OrganizationId,
    "organization_id"
);
uuid_id!(
    /// A global user's id.
    UserId,
    "user_id"
);
uuid_id!(
    /// A seat reservation's id.
    ReservationId,
    "reservation_id"
);
uuid_id!(
    /// An SSO connection's id.
    ConnectionId,
    "connection_id"
);
uuid_id!(
    /// An invitation's id.
    InvitationId,
    "invitation_id"
);
uuid_id!(
    /// A signed-in session's id (an access token's `sid`).
    SessionId,
    "session_id"
);
uuid_id!(
    /// An audit event's id.
    EventId,
    "event_id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_other_forms() {
        let id = OrganizationId::new();
        assert_eq!(OrganizationId::parse(&id.to_string()).unwrap(), id);
        assert!(OrganizationId::parse("").is_err());
        assert!(OrganizationId::parse("not-a-uuid").is_err());
        let simple = id.as_uuid().simple().to_string();
        assert!(OrganizationId::parse(&simple).is_err());
        assert!(OrganizationId::parse(&format!("{{{id}}}")).is_err());
    }

    #[test]
    fn v7_ids_sort_by_creation() {
        let a = UserId::new();
        let b = UserId::new();
        assert!(a.to_string() < b.to_string());
    }
}
