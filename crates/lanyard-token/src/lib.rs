//! TokenService (`lanyard.token.v1`) and AuthorizationService (`lanyard.authz.v1`): Lanyard's
//! signing keys and JWKS, sign-in through the organization's SSO connection (Google Workspace,
//! Entra ID, Okta, generic OIDC), sessions with rotating refresh tokens, org switching,
//! revocation, and the access-token verifier the other services authenticate members with.
//!
//! `keys` and `signing` hold the key lifecycle, `access` our access tokens, `upstream` the
//! identity providers' ID tokens, `jose` the header rules both share, `service` the rules,
//! `store` the tables, `grpc` and `http` the adapters. Tenancy and invitation are called through
//! `lanyard_clients`.
//!
//! # Wiring it into a process
//!
//! ```ignore
//! let mut config = TokenConfig::new(database, secrets, "https://auth.example.com", facts.clone());
//! let access = config.access_tokens();
//! let keys_only = Authenticator::new(api_keys);
//! // ... build tenancy and invitation with `keys_only` (the token service calls them with its
//! // service key) ...
//! let tenancy = lanyard_clients::TenancyClient::in_process(tenancy_server, &service_key)?;
//! // or: TenancyClient::connect_lazy("http://tenancy:50051", timeout, &service_key)?
//! let invitations = Some(InvitationClient::in_process(invitation_server, &service_key)?);
//! let parts = lanyard_token::build(config, access, tenancy, invitations, keys_only.clone()).await?; // connects, migrates, loads keys
//! // Member callers of tenancy and invitation get the token service's full check:
//! let auth = keys_only.with_access_tokens(parts.verifier.clone());
//! router.add_service(tenancy_server.authenticate_with(auth.clone()))
//!     .add_service(invitation_server.authenticate_with(auth))
//!     .add_service(parts.server).add_service(parts.authz_server);
//! // /.well-known/*, and the OpenID Provider's /oauth2/*, which count requests per peer address:
//! axum::serve(http_listener, parts.http.clone().into_make_service_with_connect_info::<SocketAddr>());
//! let workers = parts.spawn_workers();                    // key reload and scheduled rotation
//! // ... on shutdown:
//! workers.shutdown().await;
//! ```
//!
//! The service key must be one of tenancy's (and invitation's) service keys: sign-in calls
//! `ResolveIdentity`, `GetMember`, `ListRoles`, `ListSsoConnections`, `GetOrganization`,
//! `PreviewInvitation` and `AcceptInvitation` with it.
//!
//! # Behaviour worth knowing
//!
//! - `ExchangeToken` and `GetJwks` need no credential; `RefreshSession` is authenticated by its
//!   refresh token. `ExchangeToken` and `RefreshSession` are limited per peer ([`RateLimits`],
//!   `RESOURCE_EXHAUSTED` / `RATE_LIMITED` with a `RetryInfo`), invitation grants more tightly;
//!   behind a proxy that sets `x-forwarded-for`, set [`PeerRule::trust_forwarded_for`].
//! - An invitation grant that fails on the invitation (unknown, expired, revoked, accepted) or on
//!   the ID token (not vouched for by the invitation's organization) answers `UNAUTHENTICATED` /
//!   `INVITATION_GRANT_INVALID` either way, so guesses learn nothing.
//! - An ID token is exchanged once: a second exchange (or a copy with a re-encoded signature) is
//!   `UNAUTHENTICATED` / `ID_TOKEN_REPLAYED` and writes nothing. The token service's database
//!   remembers the hash of each exchanged token's signed part until the token could no longer be
//!   accepted (`exp`, or `iat` plus [`UpstreamConfig::max_token_age`], plus the leeway); the
//!   session's transaction inserts it, so of concurrent exchanges exactly one succeeds. ID tokens
//!   issued more than `max_token_age` (10 minutes) ago are refused. A `nonce` is required when
//!   the token carries one and must match when the request sends one.
//! - `RevokeSession` and `ListSessions` need the session's user, an operator, or a
//!   member with `members:write` / `members:read` in the session's active organization;
//!   `RotateSigningKey` an operator.
//! - An ID-token sign-in without `organization_id` goes to the organization of the identity's
//!   last session; a first sign-in must name one (`INVALID_ARGUMENT` on `organization_id`).
//! - A refresh token is used once. Using it again (or losing a race for it) revokes its session,
//!   the whole family, and writes a `refresh_token.reused` event; the answer is `UNAUTHENTICATED`
//!   with reason `TOKEN_REVOKED`. A client that lost a reply retries with the same `request_id`
//!   (and the same refresh token): within a day it gets the first reply back, sealed at rest,
//!   instead of being taken for a thief. The same holds for `ExchangeToken`.
//! - Switching to an organization the user is not an active member of is `PERMISSION_DENIED`,
//!   reason `NOT_A_MEMBER`; the session and the refresh token stay as they were.
//! - Publish before sign: a rotation promotes the `next` key only once it has been published for
//!   `max(jwks_max_age, key_reload_interval)` (5 minutes by default), so every JWKS consumer and
//!   every replica knows it before it signs; `RotateSigningKey` refuses earlier with
//!   `FAILED_PRECONDITION` / `SIGNING_KEY_NOT_PUBLISHED` unless `force` is set (a compromised key).
//! - Access tokens are verified in memory with the published keys. A session revoked in this
//!   process (`RevokeSession`, refresh-token reuse) is refused at once by every clone of the
//!   verifier, so in the all-in-one process tenancy and invitation stop accepting its tokens
//!   before `RevokeSession` returns; `Authorize` also reads the session from the database. Across
//!   processes, and for removed members, the authorization issue's shared state (Redis) does it.

pub mod access;
pub mod error;
pub mod facts;
pub mod grpc;
pub mod http;
pub mod keys;
pub mod provider;
pub mod service;
pub mod signing;
pub mod store;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
pub use lanyard_authz::Facts;
use lanyard_clients::{InvitationClient, TenancyClient};
use lanyard_core::caller::AccessTokenVerifier;
use lanyard_core::crypto::SecretBox;
use lanyard_core::db::{Database, DatabaseConfig};
use lanyard_core::limit::PeerLimiter;
pub use lanyard_core::limit::{PeerRule, RateLimit};
pub use lanyard_core::workers::Workers;
use lanyard_core::Authenticator;
use lanyard_proto::authz::v1::authorization_service_server::AuthorizationServiceServer;
use lanyard_proto::token::v1::token_service_server::TokenServiceServer;
use tokio::sync::watch;

pub use access::{AccessPrincipal, AccessTokens};
pub use error::TokenError;
pub use grpc::{Limiters, TokenGrpc};
pub use keys::{KeyRing, SigningAlgorithm};
pub use lanyard_authz::jose;
pub use service::{Lifetimes, Tokens};
pub use signing::KeyManager;
pub use store::TokenStore;
pub use upstream::{UpstreamConfig, UpstreamVerifier};

/// Everything the token service needs from settings.
#[derive(Clone)]
pub struct TokenConfig {
    /// Its own database: Postgres schema `token`, or its own SQLite file (`token.db`).
    pub database: DatabaseConfig,
    /// Seals private signing keys at rest (the key-encryption key).
    pub secrets: SecretBox,
    /// `iss` of access tokens and the base URL of the HTTP documents (`https://auth.example.com`).
    pub issuer: String,
    /// `aud` of access tokens (`lanyard`).
    pub audience: String,
    /// Algorithm of new signing keys (ES256).
    pub signing_algorithm: SigningAlgorithm,
    /// Access token, refresh token and session lifetimes (5 min, 14 days, 30 days).
    pub lifetimes: Lifetimes,
    /// How long a key signs before the scheduled rotation replaces it (30 days).
    pub rotation_interval: Duration,
    /// How often keys are reloaded from the database and rotation is checked (60 s).
    pub key_reload_interval: Duration,
    /// `Cache-Control: max-age` of the HTTP documents (5 minutes).
    pub jwks_max_age: Duration,
    /// How identity providers are reached and their tokens checked.
    pub upstream: UpstreamConfig,
    /// The revocation facts, shared with tenancy in the same process (the in-process cache by
    /// default; Redis in production, with [`Facts::subscribe`] running).
    pub facts: Facts,
    /// Per-peer limits of the unauthenticated RPCs.
    pub rate_limits: RateLimits,
    /// How the peer of a call is found (the TCP peer by default).
    pub peer_rule: PeerRule,
    /// The product application's login route (OpenID Connect `initiate_login_uri`), where the
    /// hosted pages send a browser that came without an application; `None`: those pages say to
    /// open the application.
    pub application_login_url: Option<String>,
}

/// Per-peer limits of the unauthenticated RPCs, each answered `RESOURCE_EXHAUSTED` with reason
/// `RATE_LIMITED` and a `RetryInfo` when exceeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimits {
    /// `ExchangeToken` (every grant) and `RefreshSession` together (60 at once, then 60 a minute).
    pub exchange: RateLimit,
    /// `ExchangeToken` with an invitation grant, on top of `exchange` (20 at once, then 20 a
    /// minute): the grant that takes a guessable-looking secret.
    pub invitation_grant: RateLimit,
    /// The OpenID Provider's endpoints together (`/oauth2/*`: 300 at once, then 300 a minute;
    /// one sign-in takes three, and a company's people may share one address).
    pub sign_in: RateLimit,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            exchange: RateLimit::new(60, 60),
            invitation_grant: RateLimit::new(20, 20),
            sign_in: RateLimit::new(300, 300),
        }
    }
}

impl RateLimits {
    /// No limits (tests that sign many people in from one address).
    pub fn off() -> Self {
        Self { exchange: RateLimit::off(), invitation_grant: RateLimit::off(), sign_in: RateLimit::off() }
    }
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("database", &self.database)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("signing_algorithm", &self.signing_algorithm)
            .field("lifetimes", &self.lifetimes)
            .field("rotation_interval", &self.rotation_interval)
            .field("key_reload_interval", &self.key_reload_interval)
            .field("jwks_max_age", &self.jwks_max_age)
            .field("upstream", &self.upstream)
            .field("rate_limits", &self.rate_limits)
            .field("peer_rule", &self.peer_rule)
            .field("application_login_url", &self.application_login_url)
            .finish_non_exhaustive()
    }
}

impl TokenConfig {
    /// The defaults around what has none. `facts` are the revocation facts this process shares
    /// (Redis across processes): required, so that no process silently keeps its own.
    pub fn new(database: DatabaseConfig, secrets: SecretBox, issuer: impl Into<String>, facts: Facts) -> Self {
        Self {
            database,
            secrets,
            issuer: issuer.into(),
            audience: ACCESS_TOKEN_AUDIENCE.into(),
            signing_algorithm: SigningAlgorithm::Es256,
            lifetimes: Lifetimes::default(),
            rotation_interval: Duration::from_secs(30 * 24 * 3600),
            key_reload_interval: Duration::from_secs(60),
            jwks_max_age: Duration::from_secs(300),
            upstream: UpstreamConfig::default(),
            facts,
            rate_limits: RateLimits::default(),
            peer_rule: PeerRule::default(),
            application_login_url: None,
        }
    }

    /// A fresh access-token verifier for this configuration; give the same one to [`build`],
    /// which loads its keys. Clones share the keys.
    pub fn access_tokens(&self) -> AccessTokens {
        AccessTokens::new(KeyRing::default(), self.issuer.clone(), self.audience.clone(), self.lifetimes.access)
    }
}

/// `aud` of Lanyard's access tokens.
pub const ACCESS_TOKEN_AUDIENCE: &str = "lanyard";

/// The built service.
pub struct TokenParts {
    /// Mount on the tonic router: `lanyard.token.v1.TokenService`.
    pub server: lanyard_core::caller::Authenticated<TokenServiceServer<TokenGrpc>>,
    /// Mount on the tonic router: `lanyard.authz.v1.AuthorizationService`.
    pub authz_server: AuthorizationServiceServer<TokenGrpc>,
    /// Mount on the tonic router: Envoy's `envoy.service.auth.v3.Authorization` (ext_authz).
    pub ext_authz: lanyard_authz::envoy::ExtAuthz,
    /// Serve over HTTP: `/.well-known/jwks.json`, `/.well-known/openid-configuration` and the
    /// OpenID Provider's `/oauth2/*` endpoints.
    pub http: axum::Router,
    /// The OpenID Provider (its store and registered clients, for tests and operators).
    pub provider: provider::Provider,
    /// For the other services' `Authenticator::with_access_tokens`: member callers checked as
    /// `Authorize` checks them (revocations, removals, suspensions).
    pub verifier: Arc<dyn AccessTokenVerifier>,
    /// Mints and verifies access tokens.
    pub access_tokens: AccessTokens,
    /// The domain service.
    pub tokens: Tokens,
    /// The store (for readiness checks: `parts.store.database().ping()`).
    pub store: TokenStore,
    /// The key lifecycle.
    pub keys: KeyManager,
    /// The per-peer limits (their state is pruned by the workers).
    pub limiters: Limiters,
    reload_interval: Duration,
    rotation_interval: Duration,
}

impl std::fmt::Debug for TokenParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenParts").finish_non_exhaustive()
    }
}

/// Connects to the token database, migrates it, makes sure signing keys exist, and builds the
/// servers. `access` comes from [`TokenConfig::access_tokens`]; `auth` authenticates this
/// service's callers (access tokens are accepted through `access` in any case).
pub async fn build(
    config: TokenConfig,
    access: AccessTokens,
    tenancy: TenancyClient,
    invitations: Option<InvitationClient>,
    auth: Authenticator,
) -> anyhow::Result<TokenParts> {
    anyhow::ensure!(
        config.issuer.starts_with("https://") || config.issuer.starts_with("http://"),
        "the token issuer must be an http(s) URL"
    );
    anyhow::ensure!(
        config.application_login_url.as_deref().is_none_or(|u| url::Url::parse(u).is_ok_and(|u| matches!(
            u.scheme(),
            "https" | "http"
        ) && u
            .fragment()
            .is_none())),
        "the application login URL must be an http(s) URL without a fragment"
    );
    anyhow::ensure!(config.lifetimes.access >= Duration::from_secs(30), "access tokens must live at least 30 s");
    anyhow::ensure!(config.lifetimes.refresh <= config.lifetimes.session, "refresh tokens cannot outlive sessions");
    anyhow::ensure!(config.jwks_max_age < config.rotation_interval, "JWKS max-age must be below the rotation interval");
    let db = Database::connect(&config.database).await.context("connecting to the token database")?;
    let store = TokenStore::new(db);
    store.migrate().await.context("migrating the token database")?;
    let ring = access.ring();
    let keys = KeyManager::new(
        store.clone(),
        config.secrets.clone(),
        ring.clone(),
        config.signing_algorithm,
        config.lifetimes.access,
        config.jwks_max_age.max(config.key_reload_interval),
    );
    keys.bootstrap().await.context("loading signing keys")?;
    let upstream = UpstreamVerifier::new(config.upstream.clone())?;
    let tokens = Tokens::new(
        store.clone(),
        keys.clone(),
        access.clone(),
        upstream,
        (tenancy, invitations),
        config.lifetimes,
        config.facts.clone(),
    );
    // Member callers of this service (and, through `TokenParts::verifier`, of the others in this
    // process) get the full check, never a signature alone.
    let verifier: Arc<dyn AccessTokenVerifier> =
        Arc::new(access::MemberTokens::new(tokens.authorizer().clone(), access.clone()));
    let auth = auth.with_access_tokens(verifier.clone());
    let limiters = Limiters {
        exchange: PeerLimiter::new("exchange", config.rate_limits.exchange),
        invitation_grant: PeerLimiter::new("invitation_grant", config.rate_limits.invitation_grant),
        sign_in: PeerLimiter::new("sign_in", config.rate_limits.sign_in),
        peer_rule: config.peer_rule,
    };
    let clients = provider::Clients::new(store.database().clone());
    let provider_store = provider::ProviderStore::new(store.database().clone(), config.secrets.clone());
    let provider = provider::Provider::new(
        tokens.clone(),
        clients.clone(),
        provider_store,
        (&config.issuer, config.application_login_url.clone()),
        (limiters.sign_in.clone(), config.peer_rule),
    );
    let grpc = TokenGrpc::new(tokens.clone(), clients, auth, config.secrets.clone(), limiters.clone());
    Ok(TokenParts {
        server: grpc.clone().into_server(),
        authz_server: grpc.into_authz_server(),
        ext_authz: lanyard_authz::envoy::ExtAuthz::new(tokens.authorizer().clone()),
        http: http::router(ring, config.issuer.clone(), config.jwks_max_age).merge(provider.router()),
        provider,
        verifier,
        access_tokens: access,
        tokens,
        store,
        keys,
        limiters,
        reload_interval: config.key_reload_interval,
        rotation_interval: config.rotation_interval,
    })
}

impl TokenParts {
    /// Starts the key worker (reloads keys, as other replicas rotate too, rotates when due, and
    /// prunes what has expired) and the rate limiters' housekeeping.
    pub fn spawn_workers(&self) -> Workers {
        let (stop, mut stopped) = watch::channel(false);
        let mut handles = vec![
            tokio::spawn(self.limiters.exchange.clone().run_housekeeping(stopped.clone())),
            tokio::spawn(self.limiters.invitation_grant.clone().run_housekeeping(stopped.clone())),
            tokio::spawn(self.limiters.sign_in.clone().run_housekeeping(stopped.clone())),
        ];
        let keys = self.keys.clone();
        let (every, rotation) = (self.reload_interval, self.rotation_interval);
        let handle = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stopped.changed() => return,
                }
                if let Err(e) = keys.rotate_if_due(rotation).await {
                    tracing::warn!(error = %e, "signing key maintenance failed; retrying later");
                }
            }
        });
        handles.push(handle);
        Workers::new("token", stop, handles)
    }
}
