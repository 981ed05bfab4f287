//! What the tests and the benchmark share, so that there is one copy of each: `app` starts the
//! real tenancy, invitation and token services on loopback over fresh databases and hands out typed
//! clients; `idp` is a fake OpenID provider on loopback that signs real ID tokens; `dns` is a fake
//! DNS server on loopback whose records the test sets.
//!
//! Not for production code: its keys are fixed and public.

pub mod app;
pub mod dns;
pub mod idp;

/// A loopback TCP port free a moment ago, for a server a test starts itself (a child process, a
/// second listener). Another process may take it in between; tests that can bind port 0 should.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    listener.local_addr().expect("a bound listener has an address").port()
}

/// Runs an async test body on SQLite and on Postgres: the one way every test crate does it.
///
/// `backend_tests!(a, b)` calls the functions `a(Backend)` and `b(Backend)` in `a::sqlite`,
/// `a::postgres`, ...; `backend_tests!(name, body)` calls `body(Backend)` in `name::sqlite` and
/// `name::postgres`. The Postgres variant runs when a server answers; when none does it fails
/// under `CI=true` and says it was skipped otherwise ([`app::postgres_available`]).
#[macro_export]
macro_rules! backend_tests {
    ($name:ident => $body:path) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                $body($crate::app::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                if $crate::app::postgres_available(concat!(module_path!(), "::postgres")).await {
                    $body($crate::app::Backend::Postgres).await;
                }
            }
        }
    };
    ($($name:ident),+ $(,)?) => {
        $(
            $crate::backend_tests!($name => super::$name);
        )+
    };
}
