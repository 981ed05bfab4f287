//! The provider's tables: sign-ins in flight at the organization's provider (`oauth_flows`),
//! authorization codes (`oauth_codes`) and the application each session signed in for
//! (`oauth_sessions`). Secrets are kept as hashes, or sealed when they must be read back.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use lanyard_core::crypto::SecretBox;
use lanyard_core::db::Database;
use lanyard_core::stored;
use lanyard_core::{ConnectionId, OrganizationId, SessionId, Timestamp};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::error::TokenError;

type Result<T, E = TokenError> = std::result::Result<T, E>;

/// What the application asked for at `/oauth2/authorize`, kept until its code is issued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub nonce: Option<String>,
    /// The application's PKCE S256 challenge.
    pub code_challenge: String,
    pub scope: String,
    /// `prompt=select_account`: a person in several organizations picks one before the code
    /// goes back (absent in flows stored before it existed).
    #[serde(default)]
    pub select_account: bool,
}

/// What only Lanyard and the organization's provider may know of a flow (sealed at rest).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamSecrets {
    /// The nonce sent to the provider; its ID token must carry it.
    pub nonce: String,
    /// Lanyard's PKCE verifier at the provider.
    pub code_verifier: String,
    /// The invitation the sign-in accepts, if any.
    pub invitation: Option<String>,
}

/// A sign-in in flight at the organization's provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    /// SHA-256 (hex) of the state sent to the provider.
    pub id: String,
    /// SHA-256 (hex) of the browser's flow cookie.
    pub browser_hash: String,
    pub app: AppRequest,
    pub org: OrganizationId,
    pub connection: ConnectionId,
    pub upstream: UpstreamSecrets,
    pub expires_at: Timestamp,
}

/// An authorization code as stored.
#[derive(Clone, Debug)]
pub struct Code {
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub nonce: Option<String>,
    pub session_id: SessionId,
    /// The session's first refresh token, opened.
    pub refresh_token: String,
    pub expires_at: Timestamp,
    pub used_at: Option<Timestamp>,
}

/// The provider's store, over the token service's database.
#[derive(Clone, Debug)]
pub struct ProviderStore {
    db: Database,
    secrets: SecretBox,
    /// When expired rows were last pruned (microseconds since the epoch).
    pruned: Arc<AtomicI64>,
}

/// How often expired flows, codes and client bindings are pruned, from the requests that add them.
const PRUNE_EVERY_MICROS: i64 = 60_000_000;

fn flow_context(id: &str) -> String {
    format!("oauth_flow:{id}")
}

fn code_context(hash: &str) -> String {
    format!("oauth_code:{hash}")
}

/// The sealed secrets of flows in flight (for `lanyard keys reencrypt`).
pub const SEALED_FLOWS: lanyard_core::rekey::SealedColumn = lanyard_core::rekey::SealedColumn {
    table: "oauth_flows",
    column: "upstream",
    keys: &["id"],
    context: |keys| flow_context(&keys[0]),
};

/// The refresh tokens waiting beside their codes (for `lanyard keys reencrypt`).
pub const SEALED_CODES: lanyard_core::rekey::SealedColumn = lanyard_core::rekey::SealedColumn {
    table: "oauth_codes",
    column: "sealed_refresh",
    keys: &["code_hash"],
    context: |keys| code_context(&keys[0]),
};

impl ProviderStore {
    /// Over the token service's database; `secrets` seals what must be read back.
    pub fn new(db: Database, secrets: SecretBox) -> Self {
        Self { db, secrets, pruned: Arc::default() }
    }

    /// Records a flow, and forgets the flows and codes that expired.
    pub async fn insert_flow(&self, flow: &Flow, now: Timestamp) -> Result<()> {
        self.prune(now).await?;
        let app = serde_json::to_string(&flow.app).map_err(TokenError::failed("encoding a flow"))?;
        let upstream = serde_json::to_string(&flow.upstream).map_err(TokenError::failed("encoding a flow"))?;
        sqlx::query(
            "INSERT INTO oauth_flows (id, browser_hash, app_request, org_id, connection_id, upstream, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&flow.id)
        .bind(&flow.browser_hash)
        .bind(app)
        .bind(flow.org.to_string())
        .bind(flow.connection.to_string())
        .bind(self.secrets.seal(&upstream, &flow_context(&flow.id)))
        .bind(flow.expires_at.0)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    async fn prune(&self, now: Timestamp) -> Result<()> {
        let last = self.pruned.load(Ordering::Relaxed);
        let due = now.0.saturating_sub(last) >= PRUNE_EVERY_MICROS;
        // One request prunes; the others carry on.
        if !due || self.pruned.compare_exchange(last, now.0, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            return Ok(());
        }
        sqlx::query("DELETE FROM oauth_flows WHERE expires_at < $1").bind(now.0).execute(&self.db.pool).await?;
        // Used codes stay a while past their expiry: a late second use still revokes.
        let grace = now.0.saturating_sub(3_600_000_000);
        sqlx::query("DELETE FROM oauth_codes WHERE expires_at < $1").bind(grace).execute(&self.db.pool).await?;
        // A session past its end can never be refreshed again: its binding to a client is moot.
        sqlx::query("DELETE FROM oauth_sessions WHERE session_id IN (SELECT id FROM sessions WHERE expires_at < $1)")
            .bind(now.0)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// The flow whose state hashes to `id`, expired or not.
    pub async fn flow(&self, id: &str) -> Result<Option<Flow>> {
        let row = sqlx::query(
            "SELECT id, browser_hash, app_request, org_id, connection_id, upstream, expires_at
             FROM oauth_flows WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.db.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let get = |c: &str| row.try_get::<String, _>(c);
        let app = serde_json::from_str(&get("app_request")?).map_err(TokenError::failed("a stored flow"))?;
        let opened = self
            .secrets
            .open(&get("upstream")?, &flow_context(id))
            .map_err(TokenError::failed("a flow's secrets do not open"))?;
        let upstream = serde_json::from_str(&opened).map_err(TokenError::failed("a stored flow"))?;
        Ok(Some(Flow {
            id: get("id")?,
            browser_hash: get("browser_hash")?,
            app,
            org: stored::parse("flow organization id", &get("org_id")?, OrganizationId::parse)?,
            connection: stored::parse("flow connection id", &get("connection_id")?, ConnectionId::parse)?,
            upstream,
            expires_at: Timestamp(row.try_get("expires_at")?),
        }))
    }

    /// Takes the flow `id` for its callback: true for the one caller that deleted it.
    pub async fn take_flow(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM oauth_flows WHERE id = $1").bind(id).execute(&self.db.pool).await?;
        Ok(done.rows_affected() == 1)
    }

    /// Stores a new code (by `hash`) and records the application its session signed in for, in
    /// one transaction.
    pub async fn insert_code(&self, hash: &str, code: &Code, now: Timestamp) -> Result<()> {
        let sealed = self.secrets.seal(&code.refresh_token, &code_context(hash));
        let sealed = &sealed;
        self.db
            .transaction(|open| {
                Box::pin(async move {
                    let tx = open.tx;
                    sqlx::query(
                        "INSERT INTO oauth_codes (code_hash, client_id, redirect_uri, code_challenge, nonce, session_id,
                           sealed_refresh, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(hash)
                    .bind(&code.client_id)
                    .bind(&code.redirect_uri)
                    .bind(&code.code_challenge)
                    .bind(code.nonce.clone())
                    .bind(code.session_id.to_string())
                    .bind(sealed)
                    .bind(code.expires_at.0)
                    .execute(&mut **tx)
                    .await?;
                    sqlx::query("INSERT INTO oauth_sessions (session_id, client_id, auth_time) VALUES ($1, $2, $3)")
                        .bind(code.session_id.to_string())
                        .bind(&code.client_id)
                        .bind(now.0)
                        .execute(&mut **tx)
                        .await?;
                    Ok::<_, TokenError>(())
                })
            })
            .await
    }

    /// After the organization picker: puts `refresh_token` (the session's, after a switch) beside
    /// the unused code `hash` and gives the code until `expires_at`; true when the code was still
    /// unused.
    pub async fn picked(&self, hash: &str, refresh_token: &str, expires_at: Timestamp) -> Result<bool> {
        let sealed = self.secrets.seal(refresh_token, &code_context(hash));
        let done = sqlx::query(
            "UPDATE oauth_codes SET sealed_refresh = $2, expires_at = $3 WHERE code_hash = $1 AND used_at IS NULL",
        )
        .bind(hash)
        .bind(sealed)
        .bind(expires_at.0)
        .execute(&self.db.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The code whose hash is `hash`.
    pub async fn code(&self, hash: &str) -> Result<Option<Code>> {
        let row = sqlx::query(
            "SELECT client_id, redirect_uri, code_challenge, nonce, session_id, sealed_refresh, expires_at, used_at
             FROM oauth_codes WHERE code_hash = $1",
        )
        .bind(hash)
        .fetch_optional(&self.db.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let get = |c: &str| row.try_get::<String, _>(c);
        let refresh_token = self
            .secrets
            .open(&get("sealed_refresh")?, &code_context(hash))
            .map_err(TokenError::failed("a code's refresh token does not open"))?;
        Ok(Some(Code {
            client_id: get("client_id")?,
            redirect_uri: get("redirect_uri")?,
            code_challenge: get("code_challenge")?,
            nonce: row.try_get("nonce")?,
            session_id: stored::parse("code session id", &get("session_id")?, SessionId::parse)?,
            refresh_token,
            expires_at: Timestamp(row.try_get("expires_at")?),
            used_at: row.try_get::<Option<i64>, _>("used_at")?.map(Timestamp),
        }))
    }

    /// Marks the code used: true for the one caller that did.
    pub async fn use_code(&self, hash: &str, now: Timestamp) -> Result<bool> {
        let done = sqlx::query("UPDATE oauth_codes SET used_at = $2 WHERE code_hash = $1 AND used_at IS NULL")
            .bind(hash)
            .bind(now.0)
            .execute(&self.db.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The application a session signed in for, and when.
    pub async fn session_client(&self, session: SessionId) -> Result<Option<(String, Timestamp)>> {
        let row = sqlx::query("SELECT client_id, auth_time FROM oauth_sessions WHERE session_id = $1")
            .bind(session.to_string())
            .fetch_optional(&self.db.pool)
            .await?;
        row.map(|r| Ok((r.try_get("client_id")?, Timestamp(r.try_get("auth_time")?)))).transpose()
    }

    /// How many rows the provider holds, by table (flows, codes, sessions): for tests that
    /// check a refused request wrote nothing.
    pub async fn counts(&self) -> Result<(i64, i64, i64)> {
        let count = |table: &'static str| async move {
            let sql = format!("SELECT COUNT(*) AS n FROM {table}");
            sqlx::query(&sql).fetch_one(&self.db.pool).await.and_then(|r| r.try_get::<i64, _>("n"))
        };
        Ok((count("oauth_flows").await?, count("oauth_codes").await?, count("oauth_sessions").await?))
    }
}
