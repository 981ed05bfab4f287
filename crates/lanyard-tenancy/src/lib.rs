//! TenancyService: the authority on organizations, users, memberships, roles, SSO connections,
//! seats and the audit log. `domain` and `service` hold the rules, `store` the tables, `grpc`
//! the adapter; `dns` checks the TXT records that prove an organization owns a domain.

pub mod dns;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod service;
pub mod store;

pub use error::TenancyError;
pub use grpc::TenancyGrpc;
pub use service::Tenancy;
pub use store::TenancyStore;
