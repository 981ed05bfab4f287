//! Shared building blocks of the Lanyard services: parsed domain values, callers and API keys,
//! gRPC error details, storage and crypto helpers. Nothing here knows about any one service.

pub mod cache;
pub mod caller;
pub mod clock;
pub mod crypto;
pub mod db;
pub mod fs;
pub mod idempotency;
pub mod ids;
pub mod limit;
pub mod outbound;
pub mod page;
pub mod roles;
pub mod status;
pub mod stored;
pub mod trace;
pub mod transport;
pub mod values;
pub mod workers;

pub use caller::{ApiKeys, Authenticator, Caller};
pub use clock::Timestamp;
pub use ids::{ConnectionId, EventId, OrganizationId, ReservationId, UserId};
pub use values::{DisplayName, Domain, Email, OrgSlug, Permission, RoleName, ValueError};
