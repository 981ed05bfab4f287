//! The decision: may this access token do these things in this organization, now?
//!
//! 1. The token: verified once (signature, issuer, audience, times) and then remembered by its
//!    exact text until it expires, so a repeated token costs one map lookup.
//! 2. The organization asked for must be the token's.
//! 3. The revocation facts ([`crate::facts`]): the session must not be revoked, the organization
//!    must be active, and the membership must be active at the token's `mv` (a newer version means
//!    roles changed or the member was removed and re-added since the token was minted).
//! 4. Each permission must be granted by the token's roles.
//!
//! Facts come from the near cache, then the shared cache, then their owner (the fail-closed
//! ladder): a token service asks its own store and tenancy ([`Fallback::Source`]); a service using
//! this crate asks the token service's `BatchAuthorize` ([`Fallback::Remote`]). Both under
//! [`Authorizer::FALLBACK_DEADLINE`]; when the owner cannot answer either, the check is
//! [`Unavailable`], never allowed.

use std::sync::Arc;
use std::time::Duration;

use lanyard_core::cache::Versioned;
use lanyard_core::caller::{AccessTokenVerifier, AuthError, MemberPrincipal};

use lanyard_core::status::Problem;
use lanyard_core::{OrganizationId, Permission, Timestamp};
use lanyard_proto::authz::v1 as apb;
use lanyard_proto::authz::v1::authorization_service_client::AuthorizationServiceClient;
use lanyard_proto::authz::v1::Decision;
use metrics::Counter;
use tonic::transport::Channel;

use crate::facts::{value, FactKey, Facts};
use crate::keys::KeySource;
use crate::token::{self, AccessError, Audience, Principal};

/// Why a fact's owner could not answer.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

/// The system of record for facts: the token service's store for sessions, tenancy for
/// memberships and organizations.
#[async_trait::async_trait]
pub trait FactSource: Send + Sync + 'static {
    /// The fact as its owner knows it now. A membership, organization or session that does not
    /// exist answers as removed (version 0), deleted (version 0) or revoked (version 1).
    async fn fetch(&self, key: &FactKey) -> Result<Versioned, SourceError>;
}

/// Where decisions go when the shared cache cannot answer.
#[derive(Clone)]
pub enum Fallback {
    /// Fetch each fact from its owner (the token service does this).
    Source(Arc<dyn FactSource>),
    /// Ask the token service's `BatchAuthorize` for the whole decision.
    Remote(AuthorizationServiceClient<Channel>),
}

/// A check could not be answered: the shared cache and the facts' owner were both unreachable.
#[derive(Debug, thiserror::Error)]
#[error("authorization is unavailable: {0}")]
pub struct Unavailable(pub String);

impl From<Unavailable> for tonic::Status {
    fn from(e: Unavailable) -> Self {
        Problem::new(tonic::Code::Unavailable, "AUTHORIZATION_UNAVAILABLE", e.to_string()).into_status()
    }
}

/// The answer to a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// `Allowed` when the token is valid for the organization now, or why not.
    pub token: Decision,
    /// The principal, when the token is valid.
    pub principal: Option<Arc<Principal>>,
    /// One decision per permission asked, in order.
    pub permissions: Vec<Decision>,
}

impl Outcome {
    fn denied(decision: Decision, asked: usize) -> Self {
        Self { token: decision, principal: None, permissions: vec![decision; asked] }
    }

    fn allowed(principal: Arc<Principal>, wanted: &[Permission]) -> Self {
        let permissions = wanted
            .iter()
            .map(|w| if principal.grants(w) { Decision::Allowed } else { Decision::PermissionMissing })
            .collect();
        Self { token: Decision::Allowed, principal: Some(principal), permissions }
    }

    /// Whether everything asked is allowed (and the token is valid).
    pub fn all_allowed(&self) -> bool {
        self.token == Decision::Allowed && self.permissions.iter().all(|d| *d == Decision::Allowed)
    }
}

struct Metrics {
    token_hit: Counter,
    token_miss: Counter,
    fallback_ok: Counter,
    fallback_failed: Counter,
}

struct Inner {
    keys: Arc<dyn KeySource>,
    expected: Audience,
    verified: moka::sync::Cache<Arc<str>, Arc<Principal>, foldhash::quality::RandomState>,
    facts: Facts,
    fallback: Fallback,
    metrics: Metrics,
}

/// Checks access tokens; clones share their caches.
#[derive(Clone)]
pub struct Authorizer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer").field("expected", &self.inner.expected).finish_non_exhaustive()
    }
}

/// A fact could not be read: go to the remote decision, or give up.
enum Miss {
    Remote,
    Unavailable(String),
}

impl Authorizer {
    /// How long the owner of a fact (or the remote decision) may take.
    pub const FALLBACK_DEADLINE: Duration = Duration::from_millis(500);
    /// How many verified tokens are remembered.
    pub const TOKEN_CAPACITY: u64 = 200_000;

    /// An authorizer for tokens of `expected`, verified with `keys`, revoked through `facts`.
    pub fn new(keys: Arc<dyn KeySource>, expected: Audience, facts: Facts, fallback: Fallback) -> Self {
        let verified = moka::sync::Cache::builder()
            .max_capacity(Self::TOKEN_CAPACITY)
            .time_to_live(Duration::from_secs(3600))
            // A token's whole text is hashed on every check: foldhash is much cheaper than SipHash
            // for it. Only verified tokens are ever inserted, so nobody can choose colliding keys.
            .build_with_hasher(foldhash::quality::RandomState::default());
        let metrics = Metrics {
            token_hit: metrics::counter!("lanyard_cache_requests_total", "cache" => "authz_tokens", "result" => "hit"),
            token_miss: metrics::counter!("lanyard_cache_requests_total", "cache" => "authz_tokens", "result" => "miss"),
            fallback_ok: metrics::counter!("lanyard_authz_fallbacks_total", "result" => "answered"),
            fallback_failed: metrics::counter!("lanyard_authz_fallbacks_total", "result" => "unavailable"),
        };
        Self { inner: Arc::new(Inner { keys, expected, verified, facts, fallback, metrics }) }
    }

    /// How many verified tokens are remembered now.
    pub fn cached_tokens(&self) -> u64 {
        self.inner.verified.run_pending_tasks();
        self.inner.verified.entry_count()
    }

    /// The facts it reads.
    pub fn facts(&self) -> &Facts {
        &self.inner.facts
    }

    /// Checks `token` for `organization` (the token's own when `None`) and each of `wanted`.
    pub async fn check(
        &self,
        token: &str,
        organization: Option<OrganizationId>,
        wanted: &[Permission],
    ) -> Result<Outcome, Unavailable> {
        let now = Timestamp::now();
        let principal = match self.verified(token, now).await {
            Ok(p) => p,
            Err(decision) => return Ok(Outcome::denied(decision, wanted.len())),
        };
        if organization.is_some_and(|org| org != principal.organization_id) {
            return Ok(Outcome::denied(Decision::OrgMismatch, wanted.len()));
        }
        match self.revoked(&principal).await {
            Ok(None) => Ok(Outcome::allowed(principal, wanted)),
            Ok(Some(decision)) => Ok(Outcome::denied(decision, wanted.len())),
            Err(Miss::Remote) => self.remote(token, organization, wanted).await,
            Err(Miss::Unavailable(why)) => {
                self.inner.metrics.fallback_failed.increment(1);
                Err(Unavailable(why))
            }
        }
    }

    /// The principal of `token` when the token is allowed (signature, expiry, and every
    /// revocation fact: session, membership, organization, connection), as a service
    /// authenticating a member caller needs it: `Invalid` when any check denies it,
    /// `Unavailable` when the facts cannot be read (never allowed).
    pub async fn allowed_principal(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        let outcome = self.check(token, None, &[]).await.map_err(|_| AuthError::Unavailable)?;
        outcome.principal.filter(|_| outcome.token == Decision::Allowed).ok_or(AuthError::Invalid)
    }

    /// The token's principal, from the verified-token cache or by verifying it.
    async fn verified(&self, token: &str, now: Timestamp) -> Result<Arc<Principal>, Decision> {
        let inner = &self.inner;
        if let Some(p) = inner.verified.get(token) {
            inner.metrics.token_hit.increment(1);
            // Remembered tokens still expire (with the same leeway as a fresh verification).
            return if p.expires_at.plus(token::ACCESS_TOKEN_LEEWAY) > now {
                Ok(p)
            } else {
                Err(Decision::TokenExpired)
            };
        }
        inner.metrics.token_miss.increment(1);
        let verify = || token::verify(token, &inner.expected, now, |kid| inner.keys.key(kid, now));
        let result = match verify() {
            Err(AccessError::UnknownKid(_)) => {
                inner.keys.refresh().await;
                verify()
            }
            other => other,
        };
        match result {
            Ok(p) => {
                let p = Arc::new(p);
                if token.len() <= 4096 {
                    inner.verified.insert(Arc::from(token), p.clone());
                }
                Ok(p)
            }
            Err(AccessError::Expired) => Err(Decision::TokenExpired),
            Err(AccessError::SessionRevoked) => Err(Decision::SessionRevoked),
            Err(AccessError::Invalid(_) | AccessError::UnknownKid(_)) => Err(Decision::TokenInvalid),
        }
    }

    /// Why the token's session, organization or membership no longer lets it act, if so.
    async fn revoked(&self, p: &Principal) -> Result<Option<Decision>, Miss> {
        let session = self.fact(&FactKey::Session(p.session_id), None).await?;
        if session.value != value::SESSION_ACTIVE {
            return Ok(Some(Decision::SessionRevoked));
        }
        if let Some(connection) = p.connection_id {
            let fact = self.fact(&FactKey::Connection(connection), None).await?;
            if fact.value != value::CONNECTION_ACTIVE {
                return Ok(Some(Decision::SessionRevoked));
            }
        }
        let org = self.fact(&FactKey::Organization(p.organization_id), None).await?;
        if org.value != value::ORG_ACTIVE {
            return Ok(Some(Decision::OrgSuspended));
        }
        let key = FactKey::Membership(p.organization_id, p.user_id);
        let membership = self.fact(&key, Some(p.membership_version)).await?;
        if membership.value != value::MEMBER_ACTIVE {
            return Ok(Some(Decision::NotAMember));
        }
        if membership.version > p.membership_version {
            return Ok(Some(Decision::MembershipChanged));
        }
        Ok(None)
    }

    /// A fact from the caches, or from its owner when they miss, fail, or hold a version older
    /// than `at_least` (a cache that missed a write).
    async fn fact(&self, key: &FactKey, at_least: Option<i64>) -> Result<Versioned, Miss> {
        let cached = self.inner.facts.read(key).await;
        let cache_up = cached.is_ok();
        match cached {
            Ok(Some(v)) if at_least.is_none_or(|min| v.version >= min) => return Ok(v),
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "shared cache unavailable; asking the owner"),
        }
        let Fallback::Source(source) = &self.inner.fallback else { return Err(Miss::Remote) };
        let fetched = tokio::time::timeout(Self::FALLBACK_DEADLINE, source.fetch(key)).await;
        let fact = match fetched {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return Err(Miss::Unavailable(e.0)),
            Err(_) => return Err(Miss::Unavailable("the owner did not answer in time".into())),
        };
        self.inner.metrics.fallback_ok.increment(1);
        if cache_up {
            let _ = self.inner.facts.fill(key, &fact).await;
        }
        Ok(fact)
    }

    /// The whole decision from the token service.
    async fn remote(
        &self,
        token: &str,
        organization: Option<OrganizationId>,
        wanted: &[Permission],
    ) -> Result<Outcome, Unavailable> {
        let Fallback::Remote(client) = &self.inner.fallback else {
            return Err(Unavailable("no fallback".into()));
        };
        let mut request = tonic::Request::new(apb::BatchAuthorizeRequest {
            access_token: token.to_owned(),
            permissions: wanted.iter().map(ToString::to_string).collect(),
            organization_id: organization.map(|o| o.to_string()),
        });
        request.set_timeout(Self::FALLBACK_DEADLINE);
        let answer = tokio::time::timeout(Self::FALLBACK_DEADLINE, client.clone().batch_authorize(request)).await;
        let response = match answer {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(status)) => {
                self.inner.metrics.fallback_failed.increment(1);
                return Err(Unavailable(format!("the token service answered {}", status.code())));
            }
            Err(_) => {
                self.inner.metrics.fallback_failed.increment(1);
                return Err(Unavailable("the token service did not answer in time".into()));
            }
        };
        self.inner.metrics.fallback_ok.increment(1);
        let decision = Decision::try_from(response.decision).unwrap_or(Decision::Unspecified);
        if decision != Decision::Allowed {
            let decision = if decision == Decision::Unspecified { Decision::TokenInvalid } else { decision };
            return Ok(Outcome::denied(decision, wanted.len()));
        }
        // The remote service vouched for the token; the principal is the one verified here.
        let principal =
            self.verified(token, Timestamp::now()).await.map_err(|d| Unavailable(d.as_str_name().into()))?;
        Ok(Outcome::allowed(principal, wanted))
    }
}

/// The principal as the API returns it.
pub fn principal_to_pb(p: &Principal) -> apb::Principal {
    apb::Principal {
        user_id: p.user_id.to_string(),
        organization_id: p.organization_id.to_string(),
        organization_slug: p.organization_slug.clone(),
        roles: p.roles.iter().map(|r| r.to_string()).collect(),
        permissions: p.permissions.iter().map(|r| r.to_string()).collect(),
        session_id: p.session_id.to_string(),
        membership_version: p.membership_version,
        expire_time: Some(p.expires_at.to_proto()),
    }
}

/// Member callers authenticated by the full check: a service that embeds this crate, or a Lanyard
/// process that does not run the token service, accepts Lanyard access tokens this way, so a
/// token stops working for every RPC the moment its member is removed.
#[async_trait::async_trait]
impl AccessTokenVerifier for Authorizer {
    async fn verify(&self, token: &str) -> Result<MemberPrincipal, AuthError> {
        Ok(self.allowed_principal(token).await?.as_member())
    }
}
