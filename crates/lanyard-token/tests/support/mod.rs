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

/// Runs a test body on SQLite and on Postgres: `backend_tests!(name, body)` defines
/// `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! backend_tests {
    ($name:ident, $body:path) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $body(support::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if support::postgres_available(concat!(stringify!($name), "::postgres")).await {
                    $body(support::Backend::Postgres).await;
                }
            }
        }
    };
}
