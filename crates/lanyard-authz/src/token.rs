//! Lanyard access tokens (RFC 9068 `at+jwt`): their claims, the principal they carry, and the
//! strict verification every consumer applies: the header rules of [`crate::jose`], a published
//! key under the header's `kid` whose algorithm is the header's, the signature (ES256 in its
//! low-S form only, so a token has one text), `typ`, `iss`,
//! `aud`, `exp`/`nbf`/`iat` with [`ACCESS_TOKEN_LEEWAY`], and claims that parse.
//!
//! Signatures are verified with ring, the process's one crypto provider (rustls uses it too):
//! the first sight of a token is its signature check, and ring's P-256 is several times faster
//! than RustCrypto's (`BENCHMARKS.md`). jsonwebtoken still parses the JWKS and holds the key
//! material ([`DecodingKey`]); it no longer verifies.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind};
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

impl VerifyingKey {
    /// Whether `signature` is this key's signature of `message` under its algorithm (ES256 as the
    /// fixed-size `r || s`, EdDSA as Ed25519, RS256 as PKCS#1 v1.5 with a 2048- to 8192-bit
    /// modulus). A key whose material is not of its algorithm's family verifies nothing, so
    /// neither a mislabelled key nor a token's `alg` can make one kind of key act as another.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        use ring::signature::{self as sig, UnparsedPublicKey};
        // The key material was decoded once, when the key set was loaded: an SEC1 point, an
        // Ed25519 public key, RSA components or a PKCS#1 public key. ring parses it per call,
        // which is cheap beside the signature check itself.
        let verified = match (self.algorithm, self.key.family(), self.key.kind()) {
            (Algorithm::ES256, AlgorithmFamily::Ec, DecodingKeyKind::SecretOrDer(point)) => {
                UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, point).verify(message, signature)
            }
            (Algorithm::EdDSA, AlgorithmFamily::Ed, DecodingKeyKind::SecretOrDer(public)) => {
                UnparsedPublicKey::new(&sig::ED25519, public).verify(message, signature)
            }
            (Algorithm::RS256, AlgorithmFamily::Rsa, DecodingKeyKind::RsaModulusExponent { n, e }) => {
                sig::RsaPublicKeyComponents { n, e }.verify(&sig::RSA_PKCS1_2048_8192_SHA256, message, signature)
            }
            (Algorithm::RS256, AlgorithmFamily::Rsa, DecodingKeyKind::SecretOrDer(der)) => {
                UnparsedPublicKey::new(&sig::RSA_PKCS1_2048_8192_SHA256, der).verify(message, signature)
            }
            _ => return false,
        };
        verified.is_ok()
    }
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
    // parse_header found exactly three parts.
    let (signed, signature) = token.rsplit_once('.').ok_or_else(|| invalid("not a compact JWS"))?;
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| invalid("the signature is not base64url"))?;
    if key.algorithm == Algorithm::ES256 && !jose::es256_signature_is_low_s(&signature) {
        return Err(invalid("the ES256 signature is not in the low-S form"));
    }
    if !key.verifies(signed.as_bytes(), &signature) {
        return Err(invalid("the signature does not verify"));
    }
    let (_, payload) = signed.split_once('.').ok_or_else(|| invalid("not a compact JWS"))?;
    let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| invalid("the payload is not base64url"))?;
    // Every claim is required (only `idp` may be absent) and no other is allowed, so `exp`, `nbf`,
    // `iss`, `aud` and `sub` are present with their types once this parses.
    let c: AccessClaims = serde_json::from_slice(&payload).map_err(|e| AccessError::Invalid(e.to_string()))?;
    if c.iss != expected.issuer {
        return Err(invalid("wrong issuer"));
    }
    if c.aud != expected.audience {
        return Err(invalid("wrong audience"));
    }
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
