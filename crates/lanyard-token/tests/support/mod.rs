//! Test support: the real tenancy, invitation and token services on one tonic server on
//! 127.0.0.1:0 over fresh databases (a new SQLite directory, or a new Postgres database), the
//! token service's HTTP documents on another loopback port, typed clients, and fake OpenID
//! providers on loopback that serve discovery and JWKS over HTTP and sign real ID tokens. They
//! live in `lanyard-testkit`, which the benchmark shares.
//!
//! Postgres tests use `LANYARD_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). When no server answers they fail if `CI=true`
//! and otherwise print that they were skipped.

pub use lanyard_testkit::app::*;
pub use lanyard_testkit::idp;

pub use lanyard_testkit::backend_tests;
