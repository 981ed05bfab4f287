//! Lanyard access tokens (RFC 9068 `at+jwt`): their claims, the principal they carry, and the
//! strict verification every consumer applies: the header rules of [`crate::jose`], a published
//! key under the header's `kid` whose algorithm is the header's, the signature (ES256 in its
//! low-S form only, so a token has one text), `typ`, `iss`,
//! `aud`, `exp`/`nbf`/`iat` with [`ACCESS_TOKEN_LEEWAY`], and claims that parse.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use lanyard_core::{ConnectionId, OrganizationId, Permission, RoleName, SessionId, Timestamp, UserId};
use serde::{Deserialize, Serialize};

use crate::jose;

/// The `typ` of an access token header.
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Clock skew tolerated on `exp`, `nbf` and `iat`.
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
    /// The SSO connection the session signed in through: the token stops working when it is
    /// deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp: Option<String>,
}

/// Who a verified access token acts as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub user_id: UserId,
    pub organization_id: OrganizationId,
    pub organization_slug: String,
    pub roles: Vec<RoleName>,
    pub permissions: Vec<Permission>,
    pub session_id: SessionId,
    /// The membership version the token was minted at (`mv`).
    pub membership_version: i64,
    pub expires_at: Timestamp,
    /// The SSO connection the session signed in through (`idp`).
    pub connection_id: Option<ConnectionId>,
}

impl Principal {
    /// The member caller this token speaks for.
    pub fn as_member(&self) -> lanyard_core::caller::MemberPrincipal {
        lanyard_core::caller::MemberPrincipal {
            user_id: self.user_id,
            organization_id: self.organization_id,
            roles: self.roles.clone(),
            permissions: self.permissions.clone(),
        }
    }

    /// Whether the token's roles grant `wanted`.
    pub fn grants(&self, wanted: &Permission) -> bool {
        self.permissions.iter().any(|g| g.grants(wanted))
    }
}

/// Why an access token was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error("the token is malformed, forged, or not an access token: {0}")]
    Invalid(String),
    /// No published key has the header's `kid` (a consumer may refetch the JWKS once).
    #[error("no published key has the token's kid")]
    UnknownKid(String),
    #[error("the token has expired")]
    Expired,
    #[error("the token's session was revoked")]
    SessionRevoked,
}

/// A public key that verifies access tokens.
#[derive(Clone)]
pub struct VerifyingKey {
    pub algorithm: Algorithm,
    pub key: Arc<DecodingKey>,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey").field("algorithm", &self.algorithm).finish_non_exhaustive()
    }
}

/// Who issues the tokens a verifier accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audience {
    /// `iss` (`https://auth.example.com`).
    pub issuer: String,
    /// `aud` (`lanyard`).
    pub audience: String,
}

/// Verifies `token` with the key `key_for` finds under its `kid`.
pub fn verify(
    token: &str,
    expected: &Audience,
    now: Timestamp,
    key_for: impl FnOnce(&str) -> Option<VerifyingKey>,
) -> Result<Principal, AccessError> {
    let invalid = |why: &str| AccessError::Invalid(why.to_owned());
    let header = jose::parse_header(token, &[]).map_err(|e| AccessError::Invalid(e.to_string()))?;
    let typ = header.typ.as_deref().unwrap_or_default();
    if !(typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) || typ.eq_ignore_ascii_case("application/at+jwt")) {
        return Err(invalid("typ is not at+jwt"));
    }
    let key = key_for(&header.kid).ok_or_else(|| AccessError::UnknownKid(header.kid.clone()))?;
    if header.alg != algorithm_name(key.algorithm) {
        return Err(invalid("alg does not match the key"));
    }
    if key.algorithm == Algorithm::ES256 && !jose::es256_is_low_s(token) {
        return Err(invalid("the ES256 signature is not in the low-S form"));
    }
    let mut validation = Validation::new(key.algorithm);
    // exp and nbf are checked below against `now`, not the library's clock.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.set_issuer(&[&expected.issuer]);
    validation.set_audience(&[&expected.audience]);
    validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<AccessClaims>(token, &key.key, &validation)
        .map_err(|e| AccessError::Invalid(e.to_string()))?;
    let c = data.claims;
    let now_s = u64::try_from(now.0 / 1_000_000).unwrap_or_default();
    let leeway = ACCESS_TOKEN_LEEWAY.as_secs();
    if c.iat > now_s + leeway {
        return Err(invalid("issued in the future"));
    }
    if c.nbf > now_s + leeway {
        return Err(invalid("not valid yet"));
    }
    if c.exp.saturating_add(leeway) < now_s {
        return Err(AccessError::Expired);
    }
    let bad = |_| invalid("claims do not parse");
    Ok(Principal {
        user_id: UserId::parse(&c.sub).map_err(bad)?,
        organization_id: OrganizationId::parse(&c.org_id).map_err(bad)?,
        organization_slug: c.org_slug,
        roles: c.roles.iter().map(|r| RoleName::parse(r)).collect::<Result<_, _>>().map_err(bad)?,
        permissions: c.permissions.iter().map(|p| Permission::parse(p)).collect::<Result<_, _>>().map_err(bad)?,
        session_id: SessionId::parse(&c.sid).map_err(|_| invalid("sid does not parse"))?,
        membership_version: c.mv,
        expires_at: Timestamp(i64::try_from(c.exp).unwrap_or(i64::MAX).saturating_mul(1_000_000)),
        connection_id: c.idp.as_deref().map(ConnectionId::parse).transpose().map_err(bad)?,
    })
}

/// The JOSE name of an algorithm (`ES256`).
pub fn algorithm_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
    }
}
