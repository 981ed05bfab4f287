//! What the tests and the benchmark share, so that there is one copy of each: `app` starts the
//! real tenancy, invitation and token services on loopback over fresh databases and hands out typed
//! clients; `idp` is a fake OpenID provider on loopback that signs real ID tokens; `dns` is a fake
//! DNS server on loopback whose records the test sets.
//!
//! Not for production code: its keys are fixed and public.

pub mod app;
pub mod dns;
pub mod idp;
