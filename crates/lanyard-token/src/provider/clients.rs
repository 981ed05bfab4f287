//! The applications registered to sign people in through Lanyard: their rules (exact redirect
//! URIs, public or confidential, a secret shown once and kept as a hash) and their table.

use lanyard_core::crypto::{random_token, sha256_hex};
use lanyard_core::db::Database;
use lanyard_core::page::Page;
use lanyard_core::{Caller, Timestamp, ValueError};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::error::TokenError;

type Result<T, E = TokenError> = std::result::Result<T, E>;

/// Random bytes of a client secret (256 bits).
pub const CLIENT_SECRET_BYTES: usize = 32;
/// The most redirect URIs (and post-logout URIs) one client may register.
pub const MAX_URIS: usize = 10;
/// The longest URI accepted.
pub const MAX_URI_LEN: usize = 2000;

/// How an application authenticates at the token endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientType {
    /// Cannot keep a secret: PKCE only.
    Public,
    /// Keeps a secret: `client_secret_basic` or `client_secret_post`, and PKCE.
    Confidential,
}

impl ClientType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Confidential => "confidential",
        }
    }

    fn from_db(s: &str) -> Result<Self> {
        let all = [Self::Public, Self::Confidential];
        Ok(lanyard_core::stored::decode("client type", s, &all, Self::as_str)?)
    }
}

/// A registered application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthClient {
    pub client_id: String,
    pub display_name: String,
    pub client_type: ClientType,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub created_at: Timestamp,
    /// SHA-256 (hex) of a confidential client's secret.
    secret_hash: Option<String>,
}

impl OAuthClient {
    /// Whether `uri` is one of its redirect URIs, byte for byte: no prefix, case, percent-encoding
    /// or trailing-slash leniency.
    pub fn redirects_to(&self, uri: &str) -> bool {
        self.redirect_uris.iter().any(|r| r == uri)
    }

    /// Whether RP-initiated logout may return to `uri` (exactly).
    pub fn logs_out_to(&self, uri: &str) -> bool {
        self.post_logout_redirect_uris.iter().any(|r| r == uri)
    }

    /// Whether `secret` is its secret (compared in constant time, over the hashes). A public
    /// client has none, and no secret is its secret.
    pub fn secret_matches(&self, secret: &str) -> bool {
        match &self.secret_hash {
            Some(stored) => super::same(&sha256_hex(secret.as_bytes()), stored),
            None => false,
        }
    }
}

/// What registering an application takes.
#[derive(Clone, Debug)]
pub struct NewClient {
    pub display_name: String,
    pub client_type: ClientType,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
}

/// A registered application and, for a confidential one, its secret (shown this once).
#[derive(Clone, Debug)]
pub struct Registered {
    pub client: OAuthClient,
    pub secret: Option<String>,
}

/// Checks one URI an application registers: absolute, `https` (or `http` to a loopback host,
/// for development), no fragment, no credentials, and written in its normalized form, so that
/// the exact comparison at sign-in compares what a browser will send.
pub fn check_uri(raw: &str, field: &'static str) -> Result<()> {
    let bad = |why: &str| TokenError::InvalidField { field, message: format!("{raw:?}: {why}") };
    if raw.is_empty() {
        return Err(ValueError::Missing(field).into());
    }
    if raw.len() > MAX_URI_LEN {
        return Err(ValueError::TooLong(field, MAX_URI_LEN).into());
    }
    let url = url::Url::parse(raw).map_err(|e| bad(&format!("not an absolute URI ({e})")))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => return Err(bad("must be https (http only to 127.0.0.1, [::1] or localhost)")),
    }
    if url.fragment().is_some() {
        return Err(bad("must not have a fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not carry credentials"));
    }
    if url.as_str() != raw {
        return Err(bad(&format!("must be written in normalized form: {:?}", url.as_str())));
    }
    Ok(())
}

fn check_uris(uris: &[String], field: &'static str, required: bool) -> Result<()> {
    if required && uris.is_empty() {
        return Err(ValueError::Missing(field).into());
    }
    if uris.len() > MAX_URIS {
        return Err(TokenError::InvalidField { field, message: format!("at most {MAX_URIS}") });
    }
    uris.iter().try_for_each(|u| check_uri(u, field))
}

/// The registered applications, in the token service's database.
#[derive(Clone, Debug)]
pub struct Clients {
    db: Database,
}

const COLUMNS: &str =
    "client_id, display_name, client_type, secret_hash, redirect_uris, post_logout_redirect_uris, created_at";

fn client_of(row: &AnyRow) -> Result<OAuthClient> {
    let list = |c: &str| -> Result<Vec<String>> {
        let text: String = row.try_get(c)?;
        serde_json::from_str(&text).map_err(TokenError::failed("a stored URI list is not JSON"))
    };
    Ok(OAuthClient {
        client_id: row.try_get("client_id")?,
        display_name: row.try_get("display_name")?,
        client_type: ClientType::from_db(&row.try_get::<String, _>("client_type")?)?,
        secret_hash: row.try_get("secret_hash")?,
        redirect_uris: list("redirect_uris")?,
        post_logout_redirect_uris: list("post_logout_redirect_uris")?,
        created_at: Timestamp(row.try_get("created_at")?),
    })
}

impl Clients {
    /// Over the token service's database.
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Registers an application (the operator's key only: a product service's key may not choose
    /// where sign-ins go).
    pub async fn register(&self, caller: &Caller, new: NewClient) -> Result<Registered> {
        caller.require_operator_key()?;
        let name = lanyard_core::values::DisplayName::parse(&new.display_name, "display_name")?;
        check_uris(&new.redirect_uris, "redirect_uris", true)?;
        check_uris(&new.post_logout_redirect_uris, "post_logout_redirect_uris", false)?;
        let secret = (new.client_type == ClientType::Confidential).then(|| random_token(CLIENT_SECRET_BYTES));
        let client = OAuthClient {
            client_id: format!("lc_{}", random_token(16)),
            display_name: name.to_string(),
            client_type: new.client_type,
            redirect_uris: new.redirect_uris,
            post_logout_redirect_uris: new.post_logout_redirect_uris,
            created_at: Timestamp::now(),
            secret_hash: secret.as_deref().map(|s| sha256_hex(s.as_bytes())),
        };
        let json = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
        sqlx::query(&format!("INSERT INTO oauth_clients ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"))
            .bind(&client.client_id)
            .bind(&client.display_name)
            .bind(client.client_type.as_str())
            .bind(client.secret_hash.clone())
            .bind(json(&client.redirect_uris))
            .bind(json(&client.post_logout_redirect_uris))
            .bind(client.created_at.0)
            .execute(&self.db.pool)
            .await?;
        tracing::info!(client_id = %client.client_id, actor = %caller.actor(), "OAuth client registered");
        Ok(Registered { client, secret })
    }

    /// A page of the registered applications (the operator's key only).
    pub async fn list(&self, caller: &Caller, page: &Page) -> Result<(Vec<OAuthClient>, String)> {
        caller.require_operator_key()?;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM oauth_clients WHERE client_id > $1 ORDER BY client_id LIMIT $2"
        ))
        .bind(page.after.clone().unwrap_or_default())
        .bind(page.fetch_limit())
        .fetch_all(&self.db.pool)
        .await?;
        let clients = rows.iter().map(client_of).collect::<Result<Vec<_>>>()?;
        Ok(page.finish(clients, |c| c.client_id.clone()))
    }

    /// Deletes an application (the operator's key only): its codes stop working, and every session it
    /// signed in ends (`tokens` revokes them everywhere before this returns), so neither its
    /// refresh tokens nor its access tokens outlive it.
    pub async fn delete(&self, caller: &Caller, client_id: &str, tokens: &crate::service::Tokens) -> Result<usize> {
        caller.require_operator_key()?;
        if client_id.is_empty() {
            return Err(ValueError::Missing("client_id").into());
        }
        let done = sqlx::query("DELETE FROM oauth_clients WHERE client_id = $1")
            .bind(client_id)
            .execute(&self.db.pool)
            .await?
            .rows_affected();
        if done == 0 {
            return Err(TokenError::ClientNotFound);
        }
        sqlx::query("DELETE FROM oauth_codes WHERE client_id = $1").bind(client_id).execute(&self.db.pool).await?;
        let rows = sqlx::query(
            "SELECT b.session_id FROM oauth_sessions b JOIN sessions s ON s.id = b.session_id
             WHERE b.client_id = $1 AND s.revoked_at IS NULL",
        )
        .bind(client_id)
        .fetch_all(&self.db.pool)
        .await?;
        let actor = caller.actor();
        for row in &rows {
            let id: String = row.try_get("session_id")?;
            let id = lanyard_core::stored::parse("client session id", &id, lanyard_core::SessionId::parse)?;
            tokens.end_session_by_id(id, "client_deleted", &actor).await?;
        }
        tracing::info!(client_id, actor = %actor, sessions = rows.len(), "OAuth client deleted");
        Ok(rows.len())
    }

    /// The application `client_id`, if registered.
    pub async fn get(&self, client_id: &str) -> Result<Option<OAuthClient>> {
        if client_id.is_empty() || client_id.len() > 128 {
            return Ok(None);
        }
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM oauth_clients WHERE client_id = $1"))
            .bind(client_id)
            .fetch_optional(&self.db.pool)
            .await?;
        row.as_ref().map(client_of).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_are_https_normalized_and_without_fragments() {
        for ok in [
            "https://app.example/callback",
            "https://app.example/cb?tenant=a",
            "http://127.0.0.1:8080/cb",
            "http://[::1]:9/cb",
            "http://localhost:3000/cb",
        ] {
            assert!(check_uri(ok, "redirect_uris").is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/callback",
            "http://app.example/cb",
            "https://app.example/cb#x",
            "https://user:pw@app.example/cb",
            "https://APP.example/cb",
            "https://app.example",
            "https://app.example/a/../cb",
            "javascript:alert(1)",
            "custom:/cb",
            "http://10.0.0.1/cb",
        ] {
            assert!(check_uri(bad, "redirect_uris").is_err(), "{bad}");
        }
    }

    #[test]
    fn matching_is_exact() {
        let client = OAuthClient {
            client_id: "c".into(),
            display_name: "C".into(),
            client_type: ClientType::Confidential,
            redirect_uris: vec!["https://app.example/cb".into()],
            post_logout_redirect_uris: vec![],
            created_at: Timestamp(0),
            secret_hash: Some(sha256_hex(b"s3cret")),
        };
        assert!(client.redirects_to("https://app.example/cb"));
        for other in [
            "https://app.example/cb/",
            "https://app.example/CB",
            "https://app.example/cb?x=1",
            "https://app.example/c%62",
            "https://app.example/cbx",
            "https://app.example/c",
        ] {
            assert!(!client.redirects_to(other), "{other}");
        }
        assert!(client.secret_matches("s3cret"));
        assert!(!client.secret_matches("s3cret "));
        assert!(!client.secret_matches(""));
    }
}
