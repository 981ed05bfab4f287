//! `lanyard keys reencrypt`: moves every secret the services seal (SSO client secrets, signing
//! keys, queued emails, sealed idempotent replies) to the primary key-encryption key, on each
//! service's own database, while the services keep running with the new key as primary and the
//! old one among `LANYARD_PREVIOUS_ENCRYPTION_KEYS`. Every value is checked to open before
//! anything is written, so a wrong key changes nothing; the work is done in batches, one
//! transaction each, so an interrupted run is simply run again.

use anyhow::Context;
use lanyard_core::db::Database;
use lanyard_core::rekey::{self, SealedColumn, Tally};

use crate::app::{database_config, secret_box, wait_for_database, ServiceName};
use crate::settings::Settings;

/// The options of `lanyard keys reencrypt`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReencryptArgs {
    /// Only these services' databases (repeatable; default all three).
    #[arg(long = "service", value_enum)]
    pub services: Vec<ServiceName>,
    /// Rows re-sealed per transaction.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub batch_size: u64,
    /// Stop after this many batches (run again to continue), to spread the work out.
    #[arg(long)]
    pub max_batches: Option<u64>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The sealed columns of one service.
fn sealed_columns(service: ServiceName) -> &'static [SealedColumn] {
    match service {
        ServiceName::Tenancy => lanyard_tenancy::store::SEALED_COLUMNS,
        ServiceName::Invitation => lanyard_invitation::store::SEALED_COLUMNS,
        ServiceName::Token => lanyard_token::store::SEALED_COLUMNS,
    }
}

/// What a run did to one column.
#[derive(Debug, Clone)]
pub struct ColumnReport {
    /// The service whose database holds it.
    pub service: ServiceName,
    /// `table.column`.
    pub column: String,
    /// What this run did.
    pub done: Tally,
    /// Values still under another key after this run.
    pub remaining: u64,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The id of the key every value is moved to.
    pub key_id: String,
    /// The ids of the keys values are moved from.
    pub previous_key_ids: Vec<String>,
    /// Per column.
    pub columns: Vec<ColumnReport>,
    /// Whether the run stopped at `--max-batches` with work left.
    pub stopped: bool,
}

impl Outcome {
    /// Values still under another key.
    pub fn remaining(&self) -> u64 {
        self.columns.iter().map(|c| c.remaining).sum()
    }
}

/// Runs `lanyard keys reencrypt`: checks every value, then re-seals in batches.
pub async fn reencrypt(settings: &Settings, args: &ReencryptArgs) -> anyhow::Result<Outcome> {
    let services: Vec<ServiceName> =
        if args.services.is_empty() { ServiceName::ALL.to_vec() } else { args.services.clone() };
    let secrets = secret_box(settings)?;
    let batch = usize::try_from(args.batch_size).unwrap_or(usize::MAX);
    wait_for_database(settings).await?;
    let mut databases = Vec::new();
    for service in services {
        let db = Database::connect(&database_config(settings, service))
            .await
            .with_context(|| format!("connecting to the {} database", service.as_str()))?;
        databases.push((service, db));
    }

    // Every value opens under the given keys, or nothing is written.
    for (service, db) in &databases {
        for column in sealed_columns(*service) {
            rekey::check(db, &secrets, column, batch).await.with_context(|| {
                format!(
                    "{}: nothing was changed. Is LANYARD_ENCRYPTION_KEY the new key and \
                     LANYARD_PREVIOUS_ENCRYPTION_KEYS every key in use before it?",
                    service.as_str()
                )
            })?;
        }
    }

    let mut budget = args.max_batches;
    let mut columns = Vec::new();
    for (service, db) in &databases {
        for column in sealed_columns(*service) {
            let done = rekey::reseal(db, &secrets, column, batch, &mut budget)
                .await
                .with_context(|| format!("re-sealing {} of {}", column.name(), service.as_str()))?;
            // Left by the batch budget, or written under another key by a process while this ran.
            let remaining = rekey::check(db, &secrets, column, batch).await?.moved;
            columns.push(ColumnReport { service: *service, column: column.name(), done, remaining });
        }
    }
    let stopped = columns.iter().any(|c| c.done.stopped) && columns.iter().any(|c| c.remaining > 0);
    Ok(Outcome {
        key_id: secrets.key_id().to_owned(),
        previous_key_ids: secrets.previous_key_ids().into_iter().map(str::to_owned).collect(),
        columns,
        stopped,
    })
}
