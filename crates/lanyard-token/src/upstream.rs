//! Verifying the customer's identity provider: ID tokens checked against one SSO connection of the
//! organization (issuer, audience, tenant or hosted-domain rule), with keys found through OpenID
//! discovery *from the connection's issuer* — never from a URL in the token — cached, and
//! refetched on an unknown `kid` at most once per `min_refetch_interval` per issuer.
//!
//! Leeway: `exp`, `nbf` and `iat` tolerate [`UpstreamConfig::leeway`] (60 s by default) of clock
//! skew between Lanyard and the identity provider. A token issued more than
//! [`UpstreamConfig::max_token_age`] ago (10 minutes by default) is refused whatever its `exp`: an
//! ID token is exchanged right after the sign-in that produced it.
//!
//! Nonce: when the flow sent one (the request's `nonce`), the token must carry it; when the token
//! carries one, the flow set one, and the request must send it too. A token without a nonce is
//! accepted only from a request without one.
//!
//! Replay: [`Identity::token_hash`] names the token by its signed part (header and payload), so a
//! re-encoded signature (ECDSA's `s` and `n - s` both verify) is still the same token; the token
//! service remembers it until [`Identity::replay_until`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use lanyard_core::outbound::{self, AddressPolicy, IssuerAllowlist, OutboundClient, OutboundConfig, OutboundError};
use lanyard_core::roles::SsoKind;
use lanyard_core::{ConnectionId, Email, Timestamp};
use serde::Deserialize;
use serde_json::Value;

use crate::jose;

/// How upstream tokens are checked and keys fetched.
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    /// Accept `http://` issuers and key URLs on loopback addresses (local development and tests).
    pub allow_http_loopback: bool,
    /// Clock skew tolerated on `exp`, `nbf` and `iat` (60 s).
    pub leeway: Duration,
    /// The oldest `iat` accepted, before the leeway (10 minutes).
    pub max_token_age: Duration,
    /// How long fetched keys are used before they are fetched again (1 hour).
    pub jwks_ttl: Duration,
    /// The least time between two fetches for one issuer, however many unknown `kid`s arrive (60 s).
    pub min_refetch_interval: Duration,
    /// Algorithms accepted from identity providers (RS256, RS384, RS512, PS256, ES256, ES384, EdDSA).
    pub algorithms: Vec<Algorithm>,
    /// Timeout of one discovery or JWKS request, body included (5 s).
    pub http_timeout: Duration,
    /// The largest discovery or JWKS document read; reading stops past it (512 KiB).
    pub max_document_bytes: usize,
    /// Recursive resolvers for identity-provider hosts; empty means the system configuration.
    pub dns_servers: Vec<SocketAddr>,
    /// How long one DNS lookup may take (5 s).
    pub dns_timeout: Duration,
    /// The issuers signed in through; empty accepts any (an operator's setting, also enforced
    /// when connections are created).
    pub issuer_allowlist: IssuerAllowlist,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            allow_http_loopback: false,
            leeway: Duration::from_secs(60),
            max_token_age: Duration::from_secs(600),
            jwks_ttl: Duration::from_secs(3600),
            min_refetch_interval: Duration::from_secs(60),
            algorithms: vec![
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::ES256,
                Algorithm::ES384,
                Algorithm::EdDSA,
            ],
            http_timeout: Duration::from_secs(5),
            max_document_bytes: 512 * 1024,
            dns_servers: Vec::new(),
            dns_timeout: Duration::from_secs(5),
            issuer_allowlist: IssuerAllowlist::default(),
        }
    }
}

/// One SSO connection, as the verifier needs it.
#[derive(Clone, Debug)]
pub struct Connection {
    pub id: ConnectionId,
    pub kind: SsoKind,
    pub issuer: String,
    pub client_id: String,
    pub hosted_domains: Vec<String>,
    pub tenant_id: String,
}

impl Connection {
    /// The connection as the verifier uses it; `None` when it is disabled.
    pub fn enabled(c: lanyard_clients::SsoConnection) -> Option<Self> {
        c.enabled.then_some(Self {
            id: c.id,
            kind: c.kind,
            issuer: c.issuer,
            client_id: c.client_id,
            hosted_domains: c.hosted_domains,
            tenant_id: c.tenant_id,
        })
    }
}

/// A provider's endpoints, from its discovery document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub authorization: String,
    pub token: String,
    /// Whether the client secret goes in the form (`client_secret_post`: the provider does not
    /// take `client_secret_basic`).
    pub secret_in_body: bool,
}

/// What redeeming a code at a provider takes.
#[derive(Clone, Copy, Debug)]
pub struct Redemption<'a> {
    pub endpoints: &'a Endpoints,
    pub client_id: &'a str,
    pub client_secret: Option<&'a str>,
    pub code: &'a str,
    pub redirect_uri: &'a str,
    pub code_verifier: &'a str,
}

/// An identity the connection vouches for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub issuer: String,
    /// The subject Lanyard keys the user by: `sub`, or `<tid>:<oid>` for Entra ID.
    pub subject: String,
    pub email: Option<Email>,
    pub email_verified: bool,
    pub display_name: String,
    pub connection_id: ConnectionId,
    /// The kind of the connection that vouched for it.
    pub kind: SsoKind,
    /// SHA-256 (hex) of the token's signed part: the same for every encoding of its signature.
    pub token_hash: String,
    /// Until when the token could still be accepted (its `exp`, or `iat` plus the maximum age,
    /// whichever comes first, plus the leeway): how long it must be remembered as used.
    pub replay_until: Timestamp,
}

impl From<&Identity> for lanyard_clients::Identity {
    fn from(i: &Identity) -> Self {
        Self {
            issuer: i.issuer.clone(),
            subject: i.subject.clone(),
            email: i.email.clone(),
            email_verified: i.email_verified,
            display_name: i.display_name.clone(),
            connection_id: Some(i.connection_id),
        }
    }
}

/// Why an ID token was refused, or could not be checked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unavailable(String),
}

fn invalid(why: impl Into<String>) -> UpstreamError {
    UpstreamError::Invalid(why.into())
}

/// Google's issuer, which Google also writes without its scheme.
pub const GOOGLE_ISSUER: &str = "https://accounts.google.com";

impl Connection {
    /// Whether a token's `iss` names this connection's issuer: exactly, or, for Google only, as the
    /// schemeless `accounts.google.com` that Google documents as equivalent.
    pub fn accepts_issuer(&self, iss: &str) -> bool {
        iss == self.issuer
            || (self.kind == SsoKind::GoogleWorkspace && self.issuer == GOOGLE_ISSUER && iss == "accounts.google.com")
    }
}

/// Reads the `iss` claim without verifying anything, only to pick the connection that will verify.
pub fn peek_issuer(token: &str) -> Option<String> {
    if token.len() > jose::MAX_TOKEN_LEN {
        return None;
    }
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    value.get("iss")?.as_str().map(str::to_owned)
}

#[derive(Deserialize)]
struct IdClaims {
    sub: Option<String>,
    aud: Value,
    azp: Option<String>,
    exp: i64,
    iat: Option<i64>,
    nonce: Option<String>,
    email: Option<String>,
    email_verified: Option<Value>,
    name: Option<String>,
    hd: Option<String>,
    tid: Option<String>,
    oid: Option<String>,
    xms_edov: Option<Value>,
}

fn truthy(v: &Option<Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    }
}

#[derive(Default)]
struct IssuerKeys {
    keys: Vec<Jwk>,
    fetched: Option<Instant>,
    last_attempt: Option<Instant>,
}

/// Verifies ID tokens, caching each issuer's keys.
#[derive(Clone)]
pub struct UpstreamVerifier {
    config: UpstreamConfig,
    http: OutboundClient,
    cache: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<IssuerKeys>>>>>,
}

impl std::fmt::Debug for UpstreamVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamVerifier").field("config", &self.config).finish_non_exhaustive()
    }
}

impl UpstreamVerifier {
    /// A verifier with its own outbound client (see `lanyard_core::outbound`: https only,
    /// non-public addresses refused unless `allow_http_loopback` allows loopback, no redirects,
    /// documents read under `max_document_bytes`).
    pub fn new(config: UpstreamConfig) -> anyhow::Result<Self> {
        let http = OutboundClient::new(&OutboundConfig {
            policy: AddressPolicy { allow_loopback: config.allow_http_loopback },
            max_body_bytes: config.max_document_bytes,
            timeout: config.http_timeout,
            dns_servers: config.dns_servers.clone(),
            dns_timeout: config.dns_timeout,
            user_agent: "lanyard-token".into(),
        })?;
        Ok(Self { config, http, cache: Arc::default() })
    }

    /// Whether a connection's issuer may be fetched from: a URL the outbound rules accept, and
    /// on the operator's allowlist.
    fn check_issuer(&self, issuer: &str) -> Result<(), UpstreamError> {
        outbound::check_url(issuer, self.http.policy())
            .map_err(|e| invalid(format!("the connection's issuer: {e}")))?;
        if !self.config.issuer_allowlist.allows(issuer) {
            return Err(invalid("the connection's issuer is not on the issuer allowlist"));
        }
        Ok(())
    }

    async fn get_json(&self, url: &str) -> Result<Value, UpstreamError> {
        let body = self.http.get(url).await.map_err(|e| {
            let why = match &e {
                OutboundError::Forbidden { .. } | OutboundError::BadUrl(_) => format!("refusing to fetch {url}: {e}"),
                _ => format!("{url}: {e}"),
            };
            UpstreamError::Unavailable(why)
        })?;
        serde_json::from_slice(&body).map_err(|e| UpstreamError::Unavailable(format!("{url}: {e}")))
    }

    /// Discovery from the issuer, then its JWKS.
    async fn fetch_keys(&self, issuer: &str) -> Result<Vec<Jwk>, UpstreamError> {
        let discovery_url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
        let doc = self.get_json(&discovery_url).await?;
        if doc.get("issuer").and_then(Value::as_str) != Some(issuer) {
            return Err(UpstreamError::Unavailable(format!("{discovery_url}: the document names another issuer")));
        }
        let jwks_uri = doc
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| UpstreamError::Unavailable(format!("{discovery_url}: no jwks_uri")))?;
        let jwks = self.get_json(jwks_uri).await?;
        let keys = jwks
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| UpstreamError::Unavailable(format!("{jwks_uri}: no keys")))?;
        // Keys of kinds we cannot use are skipped, not fatal; symmetric keys are never used.
        Ok(keys
            .iter()
            .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
            .filter(|k| !matches!(k.algorithm, AlgorithmParameters::OctetKey(_)) && k.common.key_id.is_some())
            .collect())
    }

    /// The key `kid` of `issuer`: from the cache, or fetched when the cache is stale or does not
    /// know the kid and no fetch for this issuer happened within `min_refetch_interval`. One fetch
    /// per issuer at a time: concurrent callers wait for it and then read what it found.
    async fn key(&self, issuer: &str, kid: &str) -> Result<Jwk, UpstreamError> {
        let entry = {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.entry(issuer.to_owned()).or_default().clone()
        };
        let mut entry = entry.lock().await;
        let now = Instant::now();
        let cached = entry.keys.iter().find(|k| k.common.key_id.as_deref() == Some(kid)).cloned();
        let may_fetch = entry.last_attempt.is_none_or(|t| now.duration_since(t) >= self.config.min_refetch_interval);
        let stale = entry.fetched.is_none_or(|t| now.duration_since(t) >= self.config.jwks_ttl);
        if let Some(key) = cached.as_ref().filter(|_| !stale || !may_fetch) {
            return Ok(key.clone());
        }
        if !may_fetch {
            return Err(invalid("unknown kid (keys were fetched moments ago)"));
        }
        entry.last_attempt = Some(now);
        match self.fetch_keys(issuer).await {
            Ok(keys) => {
                entry.keys = keys;
                entry.fetched = Some(Instant::now());
                entry
                    .keys
                    .iter()
                    .find(|k| k.common.key_id.as_deref() == Some(kid))
                    .cloned()
                    .ok_or_else(|| invalid("unknown kid"))
            }
            // A stale cached key still verifies while the provider cannot be reached.
            Err(e) => cached.ok_or(e),
        }
    }

    /// Where the connection's provider signs people in: its authorization and token endpoints,
    /// from discovery at the connection's issuer (never from anything a browser sent). Both must
    /// be URLs the outbound rules accept: the browser is sent to one, Lanyard posts to the other.
    pub async fn endpoints(&self, connection: &Connection) -> Result<Endpoints, UpstreamError> {
        self.check_issuer(&connection.issuer)?;
        let issuer = &connection.issuer;
        let discovery_url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
        let doc = self.get_json(&discovery_url).await?;
        if doc.get("issuer").and_then(Value::as_str) != Some(issuer.as_str()) {
            return Err(UpstreamError::Unavailable(format!("{discovery_url}: the document names another issuer")));
        }
        let endpoint = |name: &str| -> Result<String, UpstreamError> {
            let url = doc
                .get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| UpstreamError::Unavailable(format!("{discovery_url}: no {name}")))?;
            outbound::check_url(url, self.http.policy())
                .map_err(|e| UpstreamError::Unavailable(format!("{discovery_url}: {name}: {e}")))?;
            Ok(url.to_owned())
        };
        let methods: Vec<&str> = doc
            .get("token_endpoint_auth_methods_supported")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        // client_secret_basic is the default when the provider names none.
        let secret_in_body = !methods.is_empty() && !methods.contains(&"client_secret_basic");
        Ok(Endpoints {
            authorization: endpoint("authorization_endpoint")?,
            token: endpoint("token_endpoint")?,
            secret_in_body: secret_in_body && methods.contains(&"client_secret_post"),
        })
    }

    /// Redeems an authorization code at the provider's token endpoint (with Lanyard's PKCE
    /// verifier and, when the connection has one, its client secret) and returns the ID token,
    /// unverified: the caller verifies it with [`UpstreamVerifier::verify`] and the flow's nonce.
    pub async fn redeem_code(&self, redemption: &Redemption<'_>) -> Result<String, UpstreamError> {
        let r = redemption;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", r.code),
            ("redirect_uri", r.redirect_uri),
            ("code_verifier", r.code_verifier),
            ("client_id", r.client_id),
        ];
        let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let basic_pair;
        let basic = match r.client_secret {
            Some(secret) if r.endpoints.secret_in_body => {
                form.push(("client_secret", secret));
                None
            }
            Some(secret) => {
                basic_pair = (encode(r.client_id), encode(secret));
                Some((basic_pair.0.as_str(), basic_pair.1.as_str()))
            }
            None => None,
        };
        let url = &r.endpoints.token;
        let (status, body) = self
            .http
            .post_form(url, &form, basic)
            .await
            .map_err(|e| UpstreamError::Unavailable(format!("{url}: {e}")))?;
        let doc: Value = serde_json::from_slice(&body).unwrap_or_default();
        if !(200..300).contains(&status) {
            let error = doc.get("error").and_then(Value::as_str).unwrap_or("none");
            return Err(invalid(format!("the token endpoint refused the code: HTTP {status}, error {error:?}")));
        }
        doc.get("id_token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| invalid("the token endpoint returned no id_token"))
    }

    /// Verifies `token` against `connection`; `nonce`, when the flow set one, must match.
    pub async fn verify(
        &self,
        token: &str,
        connection: &Connection,
        nonce: Option<&str>,
        now: Timestamp,
    ) -> Result<Identity, UpstreamError> {
        let header = jose::parse_header(token, &["x5t"]).map_err(|e| invalid(e.to_string()))?;
        if let Some(typ) = &header.typ {
            if !typ.eq_ignore_ascii_case("JWT") {
                return Err(invalid("typ is not JWT: not an ID token"));
            }
        }
        let alg: Algorithm = header.alg.parse().map_err(|_| invalid("unknown alg"))?;
        if !self.config.algorithms.contains(&alg) {
            return Err(invalid("alg is not allowed"));
        }
        self.check_issuer(&connection.issuer)?;
        let jwk = self.key(&connection.issuer, &header.kid).await?;
        if let Some(key_alg) = jwk.common.key_algorithm {
            if key_alg.to_string() != header.alg {
                return Err(invalid("alg does not match the key"));
            }
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| invalid(format!("key: {e}")))?;
        let mut validation = Validation::new(alg);
        validation.leeway = self.config.leeway.as_secs();
        validation.validate_nbf = true;
        if connection.kind == SsoKind::GoogleWorkspace && connection.issuer == GOOGLE_ISSUER {
            validation.set_issuer(&[GOOGLE_ISSUER, "accounts.google.com"]);
        } else {
            validation.set_issuer(&[&connection.issuer]);
        }
        validation.set_audience(&[&connection.client_id]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<IdClaims>(token, &key, &validation)
            .map_err(|e| invalid(format!("ID token: {e}")))?
            .claims;
        let signed_part = token.rsplit_once('.').map_or(token, |(signed, _)| signed);
        let token_hash = lanyard_core::crypto::sha256_hex(signed_part.as_bytes());
        self.check_claims(claims, connection, nonce, now, token_hash)
    }

    fn check_claims(
        &self,
        c: IdClaims,
        conn: &Connection,
        nonce: Option<&str>,
        now: Timestamp,
        token_hash: String,
    ) -> Result<Identity, UpstreamError> {
        let audiences: Vec<&str> = match &c.aud {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => return Err(invalid("aud is malformed")),
        };
        if audiences.len() > 1 && c.azp.is_none() {
            return Err(invalid("several audiences and no azp"));
        }
        if c.azp.as_deref().is_some_and(|azp| azp != conn.client_id) {
            return Err(invalid("azp is not the client id"));
        }
        let iat = c.iat.ok_or_else(|| invalid("iat is missing"))?;
        let now_s = now.0 / 1_000_000;
        let leeway = i64::try_from(self.config.leeway.as_secs()).unwrap_or(0);
        let max_age = i64::try_from(self.config.max_token_age.as_secs()).unwrap_or(i64::MAX);
        if iat > now_s.saturating_add(leeway) {
            return Err(invalid("iat is in the future"));
        }
        if iat < now_s.saturating_sub(max_age).saturating_sub(leeway) {
            return Err(invalid("iat is older than the maximum token age"));
        }
        match (nonce, c.nonce.as_deref()) {
            (Some(expected), Some(got)) if expected == got => {}
            (None, None) => {}
            (Some(_), _) => return Err(invalid("nonce does not match")),
            // The flow that produced the token set a nonce: a request without it could be anyone's.
            (None, Some(_)) => return Err(invalid("the token carries a nonce and the request sent none")),
        }
        let replay_until = c.exp.min(iat.saturating_add(max_age)).saturating_add(leeway);
        let sub = c.sub.clone().filter(|s| !s.is_empty()).ok_or_else(|| invalid("sub is missing"))?;
        let mut email_verified = truthy(&c.email_verified);
        let subject = match conn.kind {
            SsoKind::GoogleWorkspace => {
                let hd = c.hd.as_deref().ok_or_else(|| invalid("hd is missing: not a Workspace account"))?;
                if !conn.hosted_domains.iter().any(|d| d.eq_ignore_ascii_case(hd)) {
                    return Err(invalid("hd is not a hosted domain of the connection"));
                }
                if !email_verified {
                    return Err(invalid("email_verified is not true"));
                }
                sub
            }
            SsoKind::AzureAd => {
                let tid = c.tid.as_deref().ok_or_else(|| invalid("tid is missing"))?;
                if !tid.eq_ignore_ascii_case(&conn.tenant_id) {
                    return Err(invalid("tid is not the connection's tenant"));
                }
                let tenant_segment = format!("/{}/", conn.tenant_id.to_ascii_lowercase());
                if !format!("{}/", conn.issuer.to_ascii_lowercase()).contains(&tenant_segment) {
                    return Err(invalid("the issuer is not the tenant's"));
                }
                let oid = c.oid.as_deref().filter(|o| !o.is_empty()).ok_or_else(|| invalid("oid is missing"))?;
                // Entra ID has no email_verified; xms_edov says the domain owner verified it.
                email_verified = email_verified || truthy(&c.xms_edov);
                format!("{}:{}", tid.to_ascii_lowercase(), oid.to_ascii_lowercase())
            }
            SsoKind::Okta | SsoKind::Oidc => sub,
        };
        let email = c.email.as_deref().and_then(|e| Email::parse(e).ok());
        // The name is the user's own choice at the provider: it is made displayable here (hidden
        // and layout characters such as U+202E and U+2028 removed), not refused, so a sign-in
        // never fails over it.
        let display_name = lanyard_core::values::sanitize_display_name(c.name.as_deref().unwrap_or_default());
        Ok(Identity {
            issuer: conn.issuer.clone(),
            subject,
            email_verified: email_verified && email.is_some(),
            email,
            display_name,
            connection_id: conn.id,
            kind: conn.kind,
            token_hash,
            replay_until: Timestamp(replay_until.saturating_mul(1_000_000)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_allowed_loopback_http() {
        let strict = UpstreamVerifier::new(UpstreamConfig::default()).unwrap();
        assert!(strict.check_issuer("https://accounts.google.com").is_ok());
        assert!(strict.check_issuer("http://127.0.0.1:8080").is_err());
        assert!(strict.check_issuer("https://127.0.0.1:8080").is_err());
        let dev = UpstreamVerifier::new(UpstreamConfig { allow_http_loopback: true, ..Default::default() }).unwrap();
        assert!(dev.check_issuer("http://127.0.0.1:8080/x").is_ok());
        assert!(dev.check_issuer("http://localhost:8080").is_ok());
        assert!(dev.check_issuer("http://10.0.0.1").is_err());
        assert!(dev.check_issuer("https://10.0.0.1").is_err());
        assert!(dev.check_issuer("http://evil.example").is_err());
        assert!(dev.check_issuer("file:///etc/passwd").is_err());
        let listed = UpstreamVerifier::new(UpstreamConfig {
            issuer_allowlist: IssuerAllowlist::parse(&["okta.com"]).unwrap(),
            ..Default::default()
        })
        .unwrap();
        assert!(listed.check_issuer("https://acme.okta.com").is_ok());
        assert!(listed.check_issuer("https://accounts.google.com").is_err());
    }

    #[test]
    fn google_is_also_schemeless_and_nobody_else_is() {
        let conn = |kind, issuer: &str| Connection {
            id: ConnectionId::new(),
            kind,
            issuer: issuer.into(),
            client_id: "c".into(),
            hosted_domains: vec![],
            tenant_id: String::new(),
        };
        let google = conn(SsoKind::GoogleWorkspace, GOOGLE_ISSUER);
        assert!(google.accepts_issuer(GOOGLE_ISSUER));
        assert!(google.accepts_issuer("accounts.google.com"));
        assert!(!google.accepts_issuer("https://accounts.google.com/"));
        let okta = conn(SsoKind::Okta, "https://acme.okta.com");
        assert!(okta.accepts_issuer("https://acme.okta.com"));
        assert!(!okta.accepts_issuer("acme.okta.com"));
        assert!(!okta.accepts_issuer("https://acme.okta.com/"));
    }

    #[test]
    fn peeks_the_issuer() {
        let payload = URL_SAFE_NO_PAD.encode(r#"{"iss":"https://idp.example"}"#);
        assert_eq!(peek_issuer(&format!("e30.{payload}.sig")).as_deref(), Some("https://idp.example"));
        assert_eq!(peek_issuer("garbage"), None);
    }
}
