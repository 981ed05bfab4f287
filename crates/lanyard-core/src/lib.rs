//! The service kit: what every Lanyard service is built from. Authentication of callers, gRPC
//! error details, the shared cache, the database and idempotency records (feature `db`),
//! SSRF-safe outbound fetches (feature `outbound`), rate limits, tracing, transport and its TLS, workers,
//! crypto and file helpers. The values themselves live in `lanyard-types` and are re-exported
//! here under the same paths. Nothing here knows about any one service.

pub mod cache;
pub mod caller;
pub mod crypto;
#[cfg(feature = "db")]
pub mod db;
pub mod fs;
#[cfg(feature = "db")]
pub mod idempotency;
pub mod limit;
#[cfg(feature = "outbound")]
pub mod outbound;
#[cfg(feature = "db")]
pub mod rekey;
pub mod status;
pub mod tls;
pub mod trace;
pub mod transport;
pub mod workers;

pub use lanyard_types::{clock, ids, page, roles, stored, values};

pub use caller::{ApiKeys, Authenticator, Caller};
pub use lanyard_types::{
    ConnectionId, DisplayName, Domain, Email, EventId, InvitationId, OrgSlug, OrganizationId, Permission,
    ReservationId, RoleName, SessionId, Timestamp, UserId, ValueError,
};
