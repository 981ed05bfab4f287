//! Lanyard's values: parsed, validated domain values and ids, time, callers and their
//! permissions, the built-in roles, page tokens, and the strict decoding of stored names. Pure
//! data: no transport, database or cache here, so anything that needs an `Email` or an
//! `OrganizationId` (including `lanyard-authz`, which product services embed) depends on this
//! crate alone.

pub mod caller;
pub mod clock;
pub mod ids;
pub mod page;
pub mod roles;
pub mod stored;
pub mod values;

pub use caller::{Caller, Denied, MemberPrincipal};
pub use clock::Timestamp;
pub use ids::{ConnectionId, EventId, InvitationId, OrganizationId, ReservationId, SessionId, UserId};
pub use values::{DisplayName, Domain, Email, OrgSlug, Permission, RoleName, ValueError};
