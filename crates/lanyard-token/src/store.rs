//! The token service's tables on both backends: signing keys (private keys sealed), sessions,
//! refresh tokens (hashes only), the ID tokens already exchanged (hashes only) and the event log. It never sees protobuf or gRPC.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use lanyard_core::crypto::SecretBox;
use lanyard_core::db::Database;
use lanyard_core::page::Page;
use lanyard_core::stored;
use lanyard_core::{ConnectionId, OrganizationId, SessionId, Timestamp, UserId};
use sqlx::any::AnyRow;
use sqlx::Row;
use uuid::Uuid;

use crate::error::TokenError;
use crate::keys::{KeyState, LoadedKey, PrivateDer, SigningAlgorithm};

type Result<T, E = TokenError> = std::result::Result<T, E>;

/// The service's migrations.
pub static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A sign-in session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub id: SessionId,
    pub user_id: UserId,
    pub active_org_id: OrganizationId,
    pub issuer: String,
    pub subject: String,
    /// The SSO connection it signed in through (none for sessions older than this record).
    pub connection_id: Option<ConnectionId>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    pub last_refresh_at: Option<Timestamp>,
    pub user_agent: Option<String>,
    pub ip_address: Option<String>,
}

/// A new session and its first refresh token.
#[derive(Clone, Debug)]
pub struct NewSession {
    pub user_id: UserId,
    pub org: OrganizationId,
    pub issuer: String,
    pub subject: String,
    pub connection_id: ConnectionId,
    pub expires_at: Timestamp,
    pub user_agent: Option<String>,
    pub ip_address: Option<String>,
    /// The ID token it was exchanged for, remembered as used in the same transaction.
    pub id_token: UsedIdToken,
}

/// An ID token exchanged for a session.
#[derive(Clone, Debug)]
pub struct UsedIdToken {
    /// SHA-256 (hex) of its signed part.
    pub hash: String,
    /// Until when it must be remembered.
    pub until: Timestamp,
}

/// What a stored refresh token says.
#[derive(Clone, Debug)]
pub struct RefreshRecord {
    pub session_id: SessionId,
    pub expires_at: Timestamp,
    pub used_at: Option<Timestamp>,
}

/// An event of the log.
#[derive(Clone, Debug)]
pub struct Event<'a> {
    pub org: Option<OrganizationId>,
    pub actor: &'a str,
    pub action: &'a str,
    pub target: String,
    pub details: BTreeMap<&'a str, String>,
}

/// The store.
#[derive(Clone, Debug)]
pub struct TokenStore {
    db: Database,
}

use lanyard_core::db::{Open, Tx, Work};

fn key_context(kid: &str) -> String {
    format!("signing_key:{kid}")
}

fn key_context_of_row(keys: &[String]) -> String {
    key_context(&keys[0])
}

/// Every column the token service seals with the key-encryption key, for `lanyard keys
/// reencrypt`: signing keys' private keys, the replies of idempotent exchanges, and the OpenID
/// Provider's flows and codes in flight.
pub const SEALED_COLUMNS: &[lanyard_core::rekey::SealedColumn] = &[
    lanyard_core::rekey::SealedColumn {
        table: "signing_keys",
        column: "private_key",
        keys: &["kid"],
        context: key_context_of_row,
    },
    lanyard_core::idempotency::SEALED_REPLIES,
    crate::provider::store::SEALED_FLOWS,
    crate::provider::store::SEALED_CODES,
];

impl TokenStore {
    /// Over a connected database.
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// The database (for readiness probes).
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Runs the migrations.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        self.db.migrate(&MIGRATIONS).await
    }

    /// One transaction (see [`Database::transaction`]): `?` turns database errors into TokenErrors.
    async fn transaction<'env, T>(
        &self,
        work: impl for<'t> FnMut(Open<'t, 'env>) -> Work<'t, T, TokenError>,
    ) -> Result<T> {
        self.db.transaction(work).await
    }

    // ----- signing keys --------------------------------------------------------------------

    /// Every key, opened with `secrets`.
    pub async fn load_keys(&self, secrets: &SecretBox) -> Result<Vec<LoadedKey>> {
        let rows = sqlx::query(
            "SELECT kid, algorithm, private_key, state, created_at, publish_until FROM signing_keys ORDER BY created_at",
        )
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let get = |c: &str| row.try_get::<String, _>(c);
                let kid = get("kid")?;
                let alg = SigningAlgorithm::parse(&get("algorithm")?)
                    .ok_or_else(|| TokenError::Internal(format!("key {kid}: unknown algorithm")))?;
                let sealed = get("private_key")?;
                let opened = secrets
                    .open(&sealed, &key_context(&kid))
                    .map_err(TokenError::failed("a signing key does not open"))?;
                let der = STANDARD.decode(opened).map_err(TokenError::failed("a signing key is not base64"))?;
                let created_at = Timestamp(row.try_get::<i64, _>("created_at")?);
                let publish_until = row.try_get::<Option<i64>, _>("publish_until")?.map(Timestamp);
                LoadedKey::load(
                    kid,
                    alg,
                    KeyState::from_db(&get("state")?)?,
                    created_at,
                    publish_until,
                    &PrivateDer(der),
                )
                .map_err(TokenError::failed("a signing key does not load"))
            })
            .collect()
    }

    /// Stores a new key in `state`, its private key sealed and bound to its kid.
    pub async fn insert_key(
        &self,
        kid: &str,
        alg: SigningAlgorithm,
        der: &PrivateDer,
        state: KeyState,
        secrets: &SecretBox,
        now: Timestamp,
    ) -> Result<()> {
        let sealed = secrets.seal(&STANDARD.encode(&der.0), &key_context(kid));
        sqlx::query(
            "INSERT INTO signing_keys (kid, algorithm, private_key, state, created_at, activated_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(kid)
        .bind(alg.as_str())
        .bind(sealed)
        .bind(state.as_str())
        .bind(now.0)
        .bind((state == KeyState::Active).then_some(now.0))
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// The kid and activation time of the active key.
    pub async fn active_key(&self) -> Result<Option<(String, Timestamp)>> {
        let row = sqlx::query("SELECT kid, activated_at FROM signing_keys WHERE state = 'active'")
            .fetch_optional(&self.db.pool)
            .await?;
        row.map(|r| {
            Ok((r.try_get::<String, _>("kid")?, Timestamp(r.try_get::<Option<i64>, _>("activated_at")?.unwrap_or(0))))
        })
        .transpose()
    }

    /// Advances the key states in one transaction: the active key `expected_active` (if any)
    /// retires and stays published until `publish_until`, the oldest next key becomes active.
    /// Returns false when another process rotated first (the active key was not the expected one).
    pub async fn promote_next(
        &self,
        expected_active: Option<&str>,
        publish_until: Timestamp,
        now: Timestamp,
    ) -> Result<bool> {
        self.transaction(|open| {
            Box::pin(async move {
                let tx = open.tx;
                let current: Option<String> = sqlx::query("SELECT kid FROM signing_keys WHERE state = 'active'")
                    .fetch_optional(&mut **tx)
                    .await?
                    .map(|r| r.try_get::<String, _>("kid"))
                    .transpose()?;
                if current.as_deref() != expected_active {
                    return Ok(false);
                }
                let next: Option<String> =
                    sqlx::query("SELECT kid FROM signing_keys WHERE state = 'next' ORDER BY created_at LIMIT 1")
                        .fetch_optional(&mut **tx)
                        .await?
                        .map(|r| r.try_get::<String, _>("kid"))
                        .transpose()?;
                let Some(next) = next else {
                    return Ok(false);
                };
                if let Some(active) = &current {
                    sqlx::query(
                        "UPDATE signing_keys SET state = 'retired', retired_at = $2, publish_until = $3
                     WHERE kid = $1 AND state = 'active'",
                    )
                    .bind(active)
                    .bind(now.0)
                    .bind(publish_until.0)
                    .execute(&mut **tx)
                    .await?;
                }
                sqlx::query("UPDATE signing_keys SET state = 'active', activated_at = $2 WHERE kid = $1")
                    .bind(&next)
                    .bind(now.0)
                    .execute(&mut **tx)
                    .await?;
                Ok(true)
            })
        })
        .await
    }

    /// When the oldest key in the `next` state was created.
    pub async fn oldest_next(&self) -> Result<Option<Timestamp>> {
        let row = sqlx::query("SELECT created_at FROM signing_keys WHERE state = 'next' ORDER BY created_at LIMIT 1")
            .fetch_optional(&self.db.pool)
            .await?;
        Ok(row.map(|r| r.try_get::<i64, _>("created_at").map(Timestamp)).transpose()?)
    }

    /// Number of keys in the `next` state.
    pub async fn count_next(&self) -> Result<i64> {
        sqlx::query("SELECT COUNT(*) AS n FROM signing_keys WHERE state = 'next'")
            .fetch_one(&self.db.pool)
            .await
            .and_then(|r| r.try_get::<i64, _>("n"))
            .map_err(TokenError::from)
    }

    /// Deletes retired keys that left the JWKS before `before`.
    pub async fn prune_keys(&self, before: Timestamp) -> Result<u64> {
        sqlx::query("DELETE FROM signing_keys WHERE state = 'retired' AND publish_until < $1")
            .bind(before.0)
            .execute(&self.db.pool)
            .await
            .map(|r| r.rows_affected())
            .map_err(TokenError::from)
    }

    // ----- sessions ------------------------------------------------------------------------

    fn session_of(&self, row: &AnyRow) -> Result<Session> {
        let get = |c: &str| row.try_get::<String, _>(c);
        let opt = |c: &str| row.try_get::<Option<i64>, _>(c).map(|v| v.map(Timestamp));

        Ok(Session {
            id: stored::parse("session id", &get("id")?, SessionId::parse)?,
            user_id: stored::parse("session user id", &get("user_id")?, UserId::parse)?,
            active_org_id: stored::parse("session organization id", &get("active_org_id")?, OrganizationId::parse)?,
            issuer: get("issuer")?,
            subject: get("subject")?,
            connection_id: row
                .try_get::<Option<String>, _>("connection_id")?
                .map(|c| stored::parse("session connection id", &c, ConnectionId::parse))
                .transpose()?,
            created_at: Timestamp(row.try_get::<i64, _>("created_at")?),
            expires_at: Timestamp(row.try_get::<i64, _>("expires_at")?),
            revoked_at: opt("revoked_at")?,
            last_refresh_at: opt("last_refresh_at")?,
            user_agent: row.try_get::<Option<String>, _>("user_agent")?,
            ip_address: row.try_get::<Option<String>, _>("ip_address")?,
        })
    }

    const SESSION_COLUMNS: &'static str = "id, user_id, active_org_id, issuer, subject, connection_id, created_at, \
                                           expires_at, revoked_at, last_refresh_at, user_agent, ip_address";

    /// Creates a session with its first refresh token (by hash).
    pub async fn create_session(
        &self,
        new: &NewSession,
        refresh_hash: &str,
        refresh_expires: Timestamp,
        now: Timestamp,
    ) -> Result<Session> {
        let id = SessionId::new();
        self.transaction(|open| Box::pin(async move {
 let tx = open.tx;
            // First, so that a replayed ID token writes nothing: the primary key decides between two
            // exchanges of one token, whichever backend and however close together.
            let used = sqlx::query("INSERT INTO used_id_tokens (token_hash, issuer, expires_at) VALUES ($1, $2, $3)")
                .bind(&new.id_token.hash)
                .bind(&new.issuer)
                .bind(new.id_token.until.0)
                .execute(&mut **tx)
                .await;
            match used {
                Err(e) if lanyard_core::db::classify(&e) == lanyard_core::db::DbErrorKind::UniqueViolation => {
                    return Err(TokenError::IdTokenReplayed);
                }
                other => other?,
            };
            sqlx::query(
                "INSERT INTO sessions
                   (id, user_id, active_org_id, issuer, subject, created_at, expires_at, user_agent, ip_address, connection_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(id.to_string())
            .bind(new.user_id.to_string())
            .bind(new.org.to_string())
            .bind(&new.issuer)
            .bind(&new.subject)
            .bind(now.0)
            .bind(new.expires_at.0)
            .bind(new.user_agent.clone())
            .bind(new.ip_address.clone())
            .bind(new.connection_id.to_string())
            .execute(&mut **tx)
            .await?;
            insert_refresh(tx, refresh_hash, id, refresh_expires, now).await?;
            insert_event(
                tx,
                &Event {
                    org: Some(new.org),
                    actor: &format!("user:{}", new.user_id),
                    action: "session.created",
                    target: format!("session:{id}"),
                    details: BTreeMap::from([
                        ("issuer", new.issuer.clone()),
                        ("connection_id", new.connection_id.to_string()),
                    ]),
                },
                now,
            )
            .await?;
            Ok(())
        }))
        .await?;
        self.session(id).await?.ok_or(TokenError::SessionNotFound)
    }

    /// One session.
    pub async fn session(&self, id: SessionId) -> Result<Option<Session>> {
        let sql = format!("SELECT {} FROM sessions WHERE id = $1", Self::SESSION_COLUMNS);
        let row = sqlx::query(&sql).bind(id.to_string()).fetch_optional(&self.db.pool).await?;
        row.as_ref().map(|r| self.session_of(r)).transpose()
    }

    /// The organization of the newest session of an upstream identity.
    pub async fn last_org_of_identity(&self, issuer: &str, subject: &str) -> Result<Option<OrganizationId>> {
        let row = sqlx::query(
            "SELECT active_org_id FROM sessions WHERE issuer = $1 AND subject = $2 ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .bind(issuer)
        .bind(subject)
        .fetch_optional(&self.db.pool)
        .await?;
        row.map(|r| {
            let s = r.try_get::<String, _>("active_org_id")?;
            Ok(stored::parse("session organization id", &s, OrganizationId::parse)?)
        })
        .transpose()
    }

    /// A page of a user's sessions, oldest first, optionally of one active organization.
    pub async fn list_sessions(
        &self,
        user: UserId,
        org: Option<OrganizationId>,
        include_revoked: bool,
        page: &Page,
    ) -> Result<(Vec<Session>, String)> {
        let sql = format!(
            "SELECT {} FROM sessions WHERE user_id = $1 AND ($2 = '' OR active_org_id = $2) AND ($3 = 1 OR revoked_at IS NULL)
             AND id > $4 ORDER BY id LIMIT $5",
            Self::SESSION_COLUMNS
        );
        let rows = sqlx::query(&sql)
            .bind(user.to_string())
            .bind(org.map(|o| o.to_string()).unwrap_or_default())
            .bind(i64::from(include_revoked))
            .bind(page.after.clone().unwrap_or_default())
            .bind(page.fetch_limit())
            .fetch_all(&self.db.pool)
            .await?;
        let sessions = rows.iter().map(|r| self.session_of(r)).collect::<Result<Vec<_>>>()?;
        Ok(page.finish(sessions, |s| s.id.to_string()))
    }

    /// Revokes a session (and with it its refresh family); a revoked one stays as it was.
    pub async fn revoke_session(
        &self,
        id: SessionId,
        reason: &str,
        actor: &str,
        now: Timestamp,
    ) -> Result<Option<Session>> {
        let Some(session) = self.session(id).await? else {
            return Ok(None);
        };
        if session.revoked_at.is_some() {
            return Ok(Some(session));
        }
        let session = &session;
        self.transaction(|open| {
            Box::pin(async move {
                let tx = open.tx;
                let done = sqlx::query(
                    "UPDATE sessions SET revoked_at = $2, revoke_reason = $3 WHERE id = $1 AND revoked_at IS NULL",
                )
                .bind(id.to_string())
                .bind(now.0)
                .bind(reason)
                .execute(&mut **tx)
                .await?
                .rows_affected();
                if done == 1 {
                    let action =
                        if reason == "refresh_token_reused" { "refresh_token.reused" } else { "session.revoked" };
                    insert_event(
                        tx,
                        &Event {
                            org: Some(session.active_org_id),
                            actor,
                            action,
                            target: format!("session:{id}"),
                            details: BTreeMap::from([
                                ("reason", reason.to_owned()),
                                ("user_id", session.user_id.to_string()),
                            ]),
                        },
                        now,
                    )
                    .await?;
                }
                Ok(())
            })
        })
        .await?;
        self.session(id).await
    }

    /// The OAuth client a session signed in for through the OpenID Provider, if it did.
    pub async fn session_oauth_client(&self, session: SessionId) -> Result<Option<String>> {
        let row = sqlx::query("SELECT client_id FROM oauth_sessions WHERE session_id = $1")
            .bind(session.to_string())
            .fetch_optional(&self.db.pool)
            .await?;
        Ok(row.map(|r| r.try_get("client_id")).transpose()?)
    }

    // ----- refresh tokens ------------------------------------------------------------------

    /// The refresh token with this hash.
    pub async fn refresh_token(&self, hash: &str) -> Result<Option<RefreshRecord>> {
        let row = sqlx::query("SELECT session_id, expires_at, used_at FROM refresh_tokens WHERE hash = $1")
            .bind(hash)
            .fetch_optional(&self.db.pool)
            .await?;
        row.map(|r| {
            let sid = r.try_get::<String, _>("session_id")?;
            Ok(RefreshRecord {
                session_id: stored::parse("refresh token session id", &sid, SessionId::parse)?,
                expires_at: Timestamp(r.try_get::<i64, _>("expires_at")?),
                used_at: r.try_get::<Option<i64>, _>("used_at")?.map(Timestamp),
            })
        })
        .transpose()
    }

    /// Uses the refresh token `old` once: marks it used, stores its successor and moves the
    /// session to `org`, all in one transaction. Returns false when it was already used (another
    /// request won the race, or it is being replayed) — nothing changed then.
    pub async fn rotate_refresh(
        &self,
        old: &str,
        new: &str,
        session: SessionId,
        org: OrganizationId,
        new_expires: Timestamp,
        now: Timestamp,
    ) -> Result<bool> {
        self.transaction(|open| {
            Box::pin(async move {
                let tx = open.tx;
                let used = sqlx::query(
                    "UPDATE refresh_tokens SET used_at = $2 WHERE hash = $1 AND session_id = $3 AND used_at IS NULL",
                )
                .bind(old)
                .bind(now.0)
                .bind(session.to_string())
                .execute(&mut **tx)
                .await?
                .rows_affected();
                if used != 1 {
                    return Ok(false);
                }
                let live = sqlx::query(
                    "UPDATE sessions SET active_org_id = $2, last_refresh_at = $3 WHERE id = $1 AND revoked_at IS NULL",
                )
                .bind(session.to_string())
                .bind(org.to_string())
                .bind(now.0)
                .execute(&mut **tx)
                .await?
                .rows_affected();
                if live != 1 {
                    // Revoked meanwhile: keep the token unused and the session as it is.
                    return Err(TokenError::SessionRevoked);
                }
                insert_refresh(tx, new, session, new_expires, now).await?;
                Ok(true)
            })
        })
        .await
    }

    /// Whether the ID token `hash` was already exchanged (a read before anything is written; the
    /// session's transaction decides races).
    pub async fn id_token_used(&self, hash: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM used_id_tokens WHERE token_hash = $1")
            .bind(hash)
            .fetch_optional(&self.db.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Forgets used ID tokens that could no longer be accepted anyway.
    pub async fn prune_used_id_tokens(&self, now: Timestamp) -> Result<u64> {
        sqlx::query("DELETE FROM used_id_tokens WHERE expires_at < $1")
            .bind(now.0)
            .execute(&self.db.pool)
            .await
            .map(|r| r.rows_affected())
            .map_err(TokenError::from)
    }

    // ----- events --------------------------------------------------------------------------

    /// Appends an event outside any other change.
    pub async fn record(&self, event: &Event<'_>, now: Timestamp) -> Result<()> {
        self.transaction(|open| Box::pin(async move { Ok(insert_event(open.tx, event, now).await?) })).await
    }

    /// The newest events of an organization (for tests and operators), newest first.
    pub async fn events(&self, org: OrganizationId, limit: i64) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT action, target FROM token_events WHERE organization_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
        )
        .bind(org.to_string())
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get::<String, _>("action")?, r.try_get::<String, _>("target")?))).collect()
    }
}

async fn insert_refresh(
    tx: &mut Tx,
    hash: &str,
    session: SessionId,
    expires: Timestamp,
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO refresh_tokens (hash, session_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
        .bind(hash)
        .bind(session.to_string())
        .bind(now.0)
        .bind(expires.0)
        .execute(&mut **tx)
        .await
        .map(|_| ())
}

async fn insert_event(tx: &mut Tx, event: &Event<'_>, now: Timestamp) -> Result<(), sqlx::Error> {
    let details = serde_json::to_string(&event.details).unwrap_or_else(|_| "{}".into());
    sqlx::query(
        "INSERT INTO token_events (id, organization_id, actor, action, target, details, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(Uuid::now_v7().to_string())
    .bind(event.org.map(|o| o.to_string()))
    .bind(event.actor)
    .bind(event.action)
    .bind(&event.target)
    .bind(details)
    .bind(now.0)
    .execute(&mut **tx)
    .await
    .map(|_| ())
}
