//! Lanyard access tokens (RFC 9068 `at+jwt`): minting with the active key, and the strict
//! verifier the other services use as their `AccessTokenVerifier` (keys in memory, no I/O).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use lanyard_authz::{Audience, Authorizer};
use lanyard_core::caller::{AccessTokenVerifier, AuthError, MemberPrincipal};
use lanyard_core::{ConnectionId, OrganizationId, SessionId, Timestamp, UserId};
use uuid::Uuid;

use crate::keys::KeyRing;

pub use lanyard_authz::token::{AccessClaims, AccessError, ACCESS_TOKEN_LEEWAY, ACCESS_TOKEN_TYP};
pub use lanyard_authz::Principal as AccessPrincipal;

/// What a new access token says.
#[derive(Clone, Debug)]
pub struct Grant<'a> {
    pub user_id: UserId,
    pub session_id: SessionId,
    pub organization_id: OrganizationId,
    pub organization_slug: &'a str,
    pub roles: &'a [String],
    pub permissions: &'a [String],
    pub membership_version: i64,
    /// The SSO connection the session signed in through.
    pub connection_id: Option<ConnectionId>,
}

/// Mints and verifies access tokens. Clones share the keys and the revoked sessions.
#[derive(Clone, Debug)]
pub struct AccessTokens {
    ring: KeyRing,
    issuer: String,
    audience: String,
    ttl: Duration,
    /// Sessions revoked in this process, until their last access token has expired.
    revoked: Arc<RwLock<HashMap<SessionId, Timestamp>>>,
}

impl AccessTokens {
    /// Tokens of `issuer` for `audience`, living `ttl`.
    pub fn new(ring: KeyRing, issuer: String, audience: String, ttl: Duration) -> Self {
        Self { ring, issuer, audience, ttl, revoked: Arc::default() }
    }

    /// Refuses the access tokens of `session` from now on, in every clone of this verifier. This
    /// makes a revocation immediate within one process; across processes the authorization
    /// service's shared revocation state does it.
    pub fn revoke_session(&self, session: SessionId, now: Timestamp) {
        let until = now.plus(self.ttl + ACCESS_TOKEN_LEEWAY);
        let mut revoked = self.revoked.write().unwrap_or_else(|p| p.into_inner());
        revoked.retain(|_, t| *t > now);
        revoked.insert(session, until);
    }

    fn is_revoked(&self, session: &SessionId) -> bool {
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
            idp: grant.connection_id.map(|c| c.to_string()),
        };
        let token = key.sign(ACCESS_TOKEN_TYP, &claims).map_err(|e| e.to_string())?;
        Ok((token, Timestamp(i64::try_from(exp).unwrap_or(i64::MAX).saturating_mul(1_000_000))))
    }

    /// Who its tokens come from.
    pub fn audience(&self) -> Audience {
        Audience { issuer: self.issuer.clone(), audience: self.audience.clone() }
    }

    /// Verifies a token (see [`lanyard_authz::token::verify`]) with the published keys in memory,
    /// and refuses the sessions revoked in this process.
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<AccessPrincipal, AccessError> {
        let p = lanyard_authz::token::verify(token, &self.audience(), now, |kid| self.ring.verifying(kid, now))?;
        if self.is_revoked(&p.session_id) {
            return Err(AccessError::SessionRevoked);
        }
        Ok(p)
    }
}

/// The verifier the services' `Authenticator` uses for member callers: the full authorization
/// check (revoked sessions, removed members, changed roles, suspended organizations), so a token
/// stops working for every RPC the moment its member is removed. Made by the token service once
/// its authorizer exists ([`crate::TokenParts::verifier`]); there is no state in which a member
/// call is checked by its signature alone.
#[derive(Clone, Debug)]
pub struct MemberTokens {
    authorizer: Authorizer,
    access: AccessTokens,
}

impl MemberTokens {
    /// Member callers checked with `authorizer`, and refused at once for the sessions `access`
    /// saw revoked in this process.
    pub fn new(authorizer: Authorizer, access: AccessTokens) -> Self {
        Self { authorizer, access }
    }
}

#[async_trait::async_trait]
impl AccessTokenVerifier for MemberTokens {
    async fn verify(&self, token: &str) -> Result<MemberPrincipal, AuthError> {
        let p = self.authorizer.allowed_principal(token).await?;
        // Sessions revoked in this process are refused before their fact reaches every cache.
        if self.access.is_revoked(&p.session_id) {
            return Err(AuthError::Invalid);
        }
        Ok(p.as_member())
    }
}
