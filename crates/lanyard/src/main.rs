//! `lanyard`: sets up telemetry, loads settings, then serves, migrates or runs an operator command.

use std::process::ExitCode;

use clap::Parser;
use lanyard::cli::keys::KeysCommand;
use lanyard::cli::{Cli, Command};
use lanyard::{telemetry, Application, Settings};

#[tokio::main]
async fn main() -> ExitCode {
    // One rustls crypto provider for the whole process, before anything opens a TLS connection.
    lanyard_core::tls::install_crypto_provider();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::load(cli.config.as_deref())?;
    let telemetry = telemetry::init(settings.log_format);
    let result = match cli.command {
        Command::Serve { services } => Application::build(settings, &services).await?.run_until_stopped().await,
        Command::Migrate { services } => lanyard::app::migrate(&settings, &services).await,
        Command::Keys(KeysCommand::Reencrypt(args)) => match lanyard::rekey::reencrypt(&settings, &args).await {
            Ok(outcome) => lanyard::cli::keys::report_reencrypt(&outcome, args.json),
            Err(e) => Err(e),
        },
        other => lanyard::cli::run_operator(other, &settings.data_dir).await,
    };
    // Spans buffered for export leave before the process does.
    telemetry.shutdown();
    result
}
