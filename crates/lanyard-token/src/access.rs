//! Lanyard access tokens (RFC 9068 `at+jwt`): minting with the active key, and the strict
//! verifier the other services use as their `AccessTokenVerifier` (keys in memory, no I/O).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::Validation;
use lanyard_core::caller::{AccessTokenVerifier, AuthError, MemberPrincipal};
use lanyard_core::{OrganizationId, Permission, RoleName, Timestamp, UserId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::jose;
use crate::keys::KeyRing;

/// The `typ` of an access token header.
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Clock skew tolerated on `exp`, `nbf` and `iat` of our own tokens.
pub const ACCESS_TOKEN_LEEWAY: Duration = Duration::from_secs(30);

/// The claims of an access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub exp: u64,
    pub iat: u64,
    pub nbf: u64,
    pub jti: String,
    pub sid: String,
    pub org_id: String,
    pub org_slug: String,
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
    pub mv: i64,
}

/// A verified access token's principal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessPrincipal {
    pub user_id: UserId,
    pub organization_id: OrganizationId,
    pub organization_slug: String,
    pub roles: Vec<RoleName>,
    pub permissions: Vec<Permission>,
    pub session_id: Uuid,
    pub membership_version: i64,
    pub expires_at: Timestamp,
}

/// Why an access token was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error("the token is malformed, forged, or not an access token: {0}")]
    Invalid(String),
    #[error("the token has expired")]
    Expired,
    #[error("the token's session was revoked")]
    SessionRevoked,
}

/// What a new access token says.
#[derive(Clone, Debug)]
pub struct Grant<'a> {
    pub user_id: UserId,
    pub session_id: Uuid,
    pub organization_id: OrganizationId,
    pub organization_slug: &'a str,
    pub roles: &'a [String],
    pub permissions: &'a [String],
    pub membership_version: i64,
}

/// Mints and verifies access tokens. Clones share the keys and the revoked sessions.
#[derive(Clone, Debug)]
pub struct AccessTokens {
    ring: KeyRing,
    issuer: String,
    audience: String,
    ttl: Duration,
    /// Sessions revoked in this process, until their last access token has expired.
    revoked: Arc<RwLock<HashMap<Uuid, Timestamp>>>,
}

impl AccessTokens {
    /// Tokens of `issuer` for `audience`, living `ttl`.
    pub fn new(ring: KeyRing, issuer: String, audience: String, ttl: Duration) -> Self {
        Self { ring, issuer, audience, ttl, revoked: Arc::default() }
    }

    /// Refuses the access tokens of `session` from now on, in every clone of this verifier. This
    /// makes a revocation immediate within one process; across processes the authorization
    /// service's shared revocation state does it.
    pub fn revoke_session(&self, session: Uuid, now: Timestamp) {
        let until = now.plus(self.ttl + ACCESS_TOKEN_LEEWAY);
        let mut revoked = self.revoked.write().unwrap_or_else(|p| p.into_inner());
        revoked.retain(|_, t| *t > now);
        revoked.insert(session, until);
    }

    fn is_revoked(&self, session: &Uuid) -> bool {
        self.revoked.read().unwrap_or_else(|p| p.into_inner()).contains_key(session)
    }

    /// The keys it signs and verifies with.
    pub fn ring(&self) -> KeyRing {
        self.ring.clone()
    }

    /// Their lifetime.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Signs a token with the active key; returns it and its expiry.
    pub fn mint(&self, grant: &Grant<'_>, now: Timestamp) -> Result<(String, Timestamp), String> {
        let key = self.ring.active().ok_or("no active signing key")?;
        let iat = u64::try_from(now.0 / 1_000_000).unwrap_or_default();
        let exp = iat + self.ttl.as_secs();
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: grant.user_id.to_string(),
            exp,
            iat,
            nbf: iat,
            jti: Uuid::now_v7().to_string(),
            sid: grant.session_id.to_string(),
            org_id: grant.organization_id.to_string(),
            org_slug: grant.organization_slug.to_owned(),
            roles: grant.roles.to_vec(),
            permissions: grant.permissions.to_vec(),
            mv: grant.membership_version,
        };
        let mut header = jsonwebtoken::Header::new(key.algorithm.jwt());
        header.typ = Some(ACCESS_TOKEN_TYP.into());
        header.kid = Some(key.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, key.encoding()).map_err(|e| e.to_string())?;
        Ok((token, Timestamp(i64::try_from(exp).unwrap_or(i64::MAX).saturating_mul(1_000_000))))
    }

    /// Verifies a token: header rules, a published key under its kid whose algorithm is the
    /// header's, the signature, `typ`, `iss`, `aud`, `exp`/`nbf`/`iat` with [`ACCESS_TOKEN_LEEWAY`],
    /// and claims that parse.
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<AccessPrincipal, AccessError> {
        let invalid = |why: &str| AccessError::Invalid(why.to_owned());
        let header = jose::parse_header(token, &[]).map_err(|e| AccessError::Invalid(e.to_string()))?;
        let typ = header.typ.as_deref().unwrap_or_default();
        if !(typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) || typ.eq_ignore_ascii_case("application/at+jwt")) {
            return Err(invalid("typ is not at+jwt"));
        }
        let key = self.ring.published(&header.kid, now).ok_or_else(|| invalid("unknown kid"))?;
        if header.alg != key.algorithm.as_str() {
            return Err(invalid("alg does not match the key"));
        }
        let mut validation = Validation::new(key.algorithm.jwt());
        validation.leeway = ACCESS_TOKEN_LEEWAY.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        let data =
            jsonwebtoken::decode::<AccessClaims>(token, key.decoding(), &validation).map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AccessError::Expired,
                _ => AccessError::Invalid(e.to_string()),
            })?;
        let c = data.claims;
        let now_s = u64::try_from(now.0 / 1_000_000).unwrap_or_default();
        if c.iat > now_s + ACCESS_TOKEN_LEEWAY.as_secs() {
            return Err(invalid("issued in the future"));
        }
        let bad = |_| invalid("claims do not parse");
        let session_id = Uuid::parse_str(&c.sid).map_err(|_| invalid("sid does not parse"))?;
        if self.is_revoked(&session_id) {
            return Err(AccessError::SessionRevoked);
        }
        Ok(AccessPrincipal {
            user_id: UserId::parse(&c.sub).map_err(bad)?,
            organization_id: OrganizationId::parse(&c.org_id).map_err(bad)?,
            organization_slug: c.org_slug,
            roles: c.roles.iter().map(|r| RoleName::parse(r)).collect::<Result<_, _>>().map_err(bad)?,
            permissions: c.permissions.iter().map(|p| Permission::parse(p)).collect::<Result<_, _>>().map_err(bad)?,
            session_id,
            membership_version: c.mv,
            expires_at: Timestamp(i64::try_from(c.exp).unwrap_or(i64::MAX).saturating_mul(1_000_000)),
        })
    }
}

/// The verifier the services' `Authenticator` uses for member callers.
impl AccessTokenVerifier for AccessTokens {
    fn verify(&self, token: &str) -> Result<MemberPrincipal, AuthError> {
        let p = AccessTokens::verify(self, token, Timestamp::now()).map_err(|_| AuthError::Invalid)?;
        Ok(MemberPrincipal {
            user_id: p.user_id,
            organization_id: p.organization_id,
            roles: p.roles,
            permissions: p.permissions,
        })
    }
}
