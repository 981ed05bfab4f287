//! `lanyard keys ...`: the token service's signing key (`rotate-signing`, over gRPC with the
//! operator key) and the key-encryption key (`reencrypt`, on the services' databases).

use clap::Subcommand;
use lanyard_proto::token::v1 as tpb;
use lanyard_proto::token::v1::token_service_client::TokenServiceClient;

use super::*;
use crate::rekey::{Outcome, ReencryptArgs};

/// `lanyard keys ...`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a signing key (published at once as `next`, signing after JWKS caches have seen it)
    /// and advance the others: `next` becomes `active`, `active` becomes `retired` (operator key).
    RotateSigning {
        /// Algorithm of the new key (default: the server's `LANYARD_SIGNING_ALGORITHM`).
        #[arg(long, value_enum)]
        algorithm: Option<Algorithm>,
        /// Promote the next key even if JWKS caches may not have seen it yet (a leaked key).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Re-seal every stored secret (SSO client secrets, signing keys, queued emails, sealed
    /// replies) under LANYARD_ENCRYPTION_KEY, opening them with it or with
    /// LANYARD_PREVIOUS_ENCRYPTION_KEYS. Reads the database settings as `serve` does; the
    /// services may keep running (given the same keys). Checks every value first: with a wrong
    /// key nothing is changed. Interrupted, it is run again; run again when done, it changes nothing.
    Reencrypt(ReencryptArgs),
}

/// A signing algorithm.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Algorithm {
    /// ECDSA P-256.
    Es256,
    /// Ed25519.
    Eddsa,
    /// RSA PKCS#1 v1.5.
    Rs256,
}

/// Runs `lanyard keys rotate-signing`.
pub(super) async fn rotate_signing(
    algorithm: Option<Algorithm>,
    force: bool,
    remote: &Remote,
    data_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let (channel, bearer) = channel(remote, data_dir).await?;
    let mut tokens = TokenServiceClient::with_interceptor(channel, bearer);
    let algorithm = match algorithm {
        None => tpb::SigningAlgorithm::Unspecified,
        Some(Algorithm::Es256) => tpb::SigningAlgorithm::Es256,
        Some(Algorithm::Eddsa) => tpb::SigningAlgorithm::Eddsa,
        Some(Algorithm::Rs256) => tpb::SigningAlgorithm::Rs256,
    };
    let key = tokens
        .rotate_signing_key(tpb::RotateSigningKeyRequest {
            algorithm: algorithm as i32,
            force,
            request_id: String::new(),
        })
        .await
        .map_err(status_error)?
        .into_inner()
        .key
        .unwrap_or_default();
    let algorithm = match tpb::SigningAlgorithm::try_from(key.algorithm) {
        Ok(tpb::SigningAlgorithm::Es256) => "ES256",
        Ok(tpb::SigningAlgorithm::Eddsa) => "EdDSA",
        Ok(tpb::SigningAlgorithm::Rs256) => "RS256",
        _ => "unknown",
    };
    let state = match tpb::SigningKeyState::try_from(key.state) {
        Ok(tpb::SigningKeyState::Next) => "next",
        Ok(tpb::SigningKeyState::Active) => "active",
        Ok(tpb::SigningKeyState::Retired) => "retired",
        _ => "unknown",
    };
    let created = time(key.create_time.as_ref());
    let value = json!({"kid": key.kid, "algorithm": algorithm, "state": state, "created": created});
    let row = vec![key.kid, algorithm.to_owned(), state.to_owned(), created];
    print(remote, value, &["kid", "algorithm", "state", "created"], vec![row]);
    Ok(())
}

/// Prints what `lanyard keys reencrypt` did, and fails when values are left under another key
/// though no batch budget stopped it.
pub fn report_reencrypt(outcome: &Outcome, as_json: bool) -> anyhow::Result<()> {
    let remaining = outcome.remaining();
    let finished = remaining == 0;
    if as_json {
        let columns: Vec<_> = outcome
            .columns
            .iter()
            .map(|c| {
                json!({
                    "service": c.service.as_str(), "column": c.column, "resealed": c.done.moved,
                    "already_current": c.done.current, "changed_meanwhile": c.done.changed_meanwhile,
                    "remaining": c.remaining,
                })
            })
            .collect();
        let value = json!({
            "key_id": outcome.key_id, "previous_key_ids": outcome.previous_key_ids, "finished": finished,
            "columns": columns,
        });
        println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
    } else {
        let headers = ["service", "column", "resealed", "already_current", "remaining"];
        let rows = outcome
            .columns
            .iter()
            .map(|c| {
                vec![
                    c.service.as_str().to_owned(),
                    c.column.clone(),
                    c.done.moved.to_string(),
                    c.done.current.to_string(),
                    c.remaining.to_string(),
                ]
            })
            .collect();
        table(&headers, rows);
        println!("\nkey id {} (previous: {})", outcome.key_id, outcome.previous_key_ids.join(", "));
    }
    if outcome.stopped {
        eprintln!("stopped at --max-batches with {remaining} value(s) left: run again to continue");
    } else if !finished {
        anyhow::bail!(
            "{remaining} value(s) are still under another key: a process sealed them under its own primary key \
             while this ran. Give every process the key {} as LANYARD_ENCRYPTION_KEY, then run this again",
            outcome.key_id
        );
    }
    Ok(())
}
