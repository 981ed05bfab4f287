//! The `lanyard` binary's library: settings, the server application, its listeners and TLS, telemetry and the CLI.
//! `main.rs` only wires these together.

pub mod app;
pub mod cli;
pub mod config;
pub mod listener;
pub mod metrics;
pub mod rekey;
pub mod settings;
pub mod telemetry;
pub mod tls;
pub mod tuning;

pub use app::{Application, ServiceName};
pub use settings::Settings;
pub use tuning::Tuning;
