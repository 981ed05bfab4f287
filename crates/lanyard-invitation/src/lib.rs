//! InvitationService: seat-reserving, single-use, expiring registration links, delivered by email
//! through a transactional outbox. `domain` and `service` hold the rules, `store` the tables,
//! `grpc` the adapter, `mailer` and `sweeper` the background workers. TenancyService is called
//! through [`lanyard_clients::TenancyClient`].
//!
//! # Wiring it into a process
//!
//! ```ignore
//! let tenancy = TenancyClient::in_process(tenancy_grpc.clone().into_server(), &service_key)?; // all-in-one
//! // or: TenancyClient::connect_lazy("http://tenancy:50051", Duration::from_secs(10), &service_key)?;
//! let mut config = InvitationConfig::new(database, link_template, secrets, MailerConfig::new(transport, from));
//! config.default_ttl = Duration::from_secs(24 * 3600);
//! let parts = lanyard_invitation::build(config, tenancy, authenticator).await?; // connects and migrates
//! let workers = parts.spawn_workers();                 // mailer + sweeper
//! router.add_service(parts.server);                    // InvitationServiceServer<InvitationGrpc>
//! // ... on shutdown, after the server stopped:
//! workers.shutdown().await;
//! ```
//!
//! The service key given to the [`TenancyClient`] must be one of TenancyService's service keys: the
//! invitation service reserves, releases and claims seats through its internal RPCs. The same
//! [`Authenticator`] as the other services authenticates this service's callers;
//! `AcceptInvitation` needs a service key, `PreviewInvitation` no credential (it is rate limited
//! per peer address), everything else an operator key or a member with `invitations:write`
//! (or `members:invite`) / `invitations:read` in the organization.
//!
//! # Behaviour worth knowing
//!
//! - A second invitation for an email with a live pending invitation in the same organization is
//!   refused: `ALREADY_EXISTS`, reason `INVITATION_PENDING`, with the existing id in the
//!   `ErrorInfo` metadata (`invitation_id`). Resend that one instead. An expired pending one does
//!   not block.
//! - TTL: [`InvitationConfig::default_ttl`] (24 h) when the request names none, and within
//!   [`InvitationConfig::min_ttl`] (5 min) ..= [`InvitationConfig::max_ttl`] (7 days); the
//!   bounds themselves must lie within tenancy's reservation limits (1 minute to 30 days).
//! - The seat reservation expires at the invitation's expiry instant (the invitation takes the
//!   reservation's expiry), so the seat is free then, with or without the sweeper.
//! - The raw token (256 bits, URL-safe base64) exists in the link only; the database keeps its
//!   SHA-256, and the queued email (which holds the link) is sealed with the key-encryption key
//!   and erased once sent.
//! - Audit: every invitation change appends an event to this service's own `invitation_events`
//!   table in the same transaction (read with `ListInvitationEvents`); the seat side of each
//!   change is in TenancyService's audit log (see [`sweeper`]).
//! - A deleted organization's pending invitations are revoked by the sweeper (tenancy released
//!   their seats at deletion; an acceptance in between is refused `INVITATION_REVOKED`).
//! - Email: at-least-once through the outbox, retried with backoff, marked failed after
//!   [`mailer::DEFAULT_MAX_ATTEMPTS`] attempts or a permanent SMTP rejection (see [`mailer`]).
//! - `PreviewInvitation` is limited per peer address ([`RateLimit`], governor's keyed limiter,
//!   `RESOURCE_EXHAUSTED` / `RATE_LIMITED` with a `RetryInfo`); behind a proxy that sets
//!   `x-forwarded-for`, set [`PeerRule::trust_forwarded_for`]. Service callers (the token service
//!   previewing for a sign-in, which it limits itself) are not limited.

pub mod domain;
pub mod error;
pub mod grpc;
pub mod mailer;
pub mod service;
pub mod store;
pub mod sweeper;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use lanyard_clients::TenancyClient;
use lanyard_core::crypto::SecretBox;
use lanyard_core::db::{Database, DatabaseConfig};
use lanyard_core::limit::PeerLimiter;
pub use lanyard_core::workers::Workers;
use lanyard_core::Authenticator;
use lanyard_proto::invitation::v1::invitation_service_server::InvitationServiceServer;
use tokio::sync::{watch, Notify};

pub use domain::{Clock, OffsetClock, SystemClock};
pub use error::InvitationError;
pub use grpc::InvitationGrpc;
pub use lanyard_core::limit::{PeerRule, RateLimit};
pub use mailer::{MailTransport, Mailer, MailerConfig};
pub use service::{Invitations, Policy};
pub use store::InvitationStore;
pub use sweeper::Sweeper;

/// Previews per peer: enough for a person opening a few links, far too few to guess one.
pub const DEFAULT_PREVIEW_RATE_LIMIT: RateLimit = RateLimit::new(20, 20);

/// Everything the invitation service needs from settings.
#[derive(Clone)]
pub struct InvitationConfig {
    /// Its own database: Postgres schema `invitation`, or its own SQLite file.
    pub database: DatabaseConfig,
    /// The registration link, with `{token}` where the token goes
    /// (`https://app.example.com/invite?token={token}`).
    pub link_template: String,
    /// The TTL when a request names none (24 hours).
    pub default_ttl: Duration,
    /// The shortest TTL a request may ask for (5 minutes).
    pub min_ttl: Duration,
    /// The longest TTL a request may ask for (7 days).
    pub max_ttl: Duration,
    /// Who the email says invited the person when an operator did (`"Lanyard"`).
    pub operator_inviter_name: String,
    /// Seals queued emails (they hold the link) at rest.
    pub secrets: SecretBox,
    /// Mail transport, sender, retries.
    pub mailer: MailerConfig,
    /// How often the sweeper runs (1 minute).
    pub sweep_interval: Duration,
    /// Previews allowed per peer address (20 at once, then 20 a minute).
    pub preview_rate_limit: RateLimit,
    /// How the peer of a call is found (the TCP peer by default).
    pub peer_rule: PeerRule,
    /// Where expiry decisions read the time (the system clock; tests move an [`OffsetClock`]).
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for InvitationConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvitationConfig")
            .field("database", &self.database)
            .field("link_template", &self.link_template)
            .field("default_ttl", &self.default_ttl)
            .field("min_ttl", &self.min_ttl)
            .field("max_ttl", &self.max_ttl)
            .field("mailer", &self.mailer)
            .field("sweep_interval", &self.sweep_interval)
            .field("preview_rate_limit", &self.preview_rate_limit)
            .field("peer_rule", &self.peer_rule)
            .finish_non_exhaustive()
    }
}

impl InvitationConfig {
    /// The defaults around what has none.
    pub fn new(
        database: DatabaseConfig,
        link_template: impl Into<String>,
        secrets: SecretBox,
        mailer: MailerConfig,
    ) -> Self {
        Self {
            database,
            link_template: link_template.into(),
            default_ttl: Duration::from_secs(24 * 3600),
            min_ttl: Duration::from_secs(5 * 60),
            max_ttl: Duration::from_secs(7 * 24 * 3600),
            operator_inviter_name: "Lanyard".into(),
            secrets,
            mailer,
            sweep_interval: Duration::from_secs(60),
            preview_rate_limit: DEFAULT_PREVIEW_RATE_LIMIT,
            peer_rule: PeerRule::default(),
            clock: Arc::new(SystemClock),
        }
    }

    fn policy(&self) -> Policy {
        Policy {
            link_template: self.link_template.clone(),
            default_ttl: self.default_ttl,
            min_ttl: self.min_ttl,
            max_ttl: self.max_ttl,
            operator_inviter_name: self.operator_inviter_name.clone(),
        }
    }
}

/// The built service: the tonic server to mount, and the workers to start.
pub struct InvitationParts {
    /// Mount this on the tonic router.
    pub server: lanyard_core::caller::Authenticated<InvitationServiceServer<InvitationGrpc>>,
    /// The domain service (for in-process callers such as the CLI's embedded mode).
    pub invitations: Invitations,
    /// The store (for readiness checks: `parts.store.database().ping()`).
    pub store: InvitationStore,
    /// The outbox worker.
    pub mailer: Mailer,
    /// The expiry sweeper.
    pub sweeper: Sweeper,
    /// The per-peer limit of previews (its state is pruned by the workers).
    pub preview_limiter: PeerLimiter,
}

impl std::fmt::Debug for InvitationParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvitationParts").finish_non_exhaustive()
    }
}

/// Connects to the invitation database, migrates it and builds the service and its workers.
pub async fn build(
    config: InvitationConfig,
    tenancy: TenancyClient,
    auth: Authenticator,
) -> anyhow::Result<InvitationParts> {
    let policy = config.policy();
    policy.validate()?;
    let db = Database::connect(&config.database).await.context("connecting to the invitation database")?;
    let store = InvitationStore::new(db);
    store.migrate().await.context("migrating the invitation database")?;
    let wake = Arc::new(Notify::new());
    let invitations =
        Invitations::new(store.clone(), tenancy, config.secrets.clone(), policy, config.clock.clone(), wake.clone());
    let mailer = Mailer::new(store.clone(), config.secrets.clone(), config.mailer.clone(), wake, config.clock.clone())?;
    let sweeper = Sweeper::new(invitations.clone(), config.sweep_interval);
    let limiter = PeerLimiter::new("preview_invitation", config.preview_rate_limit);
    let server =
        InvitationGrpc::new(invitations.clone(), auth, limiter.clone(), config.peer_rule, config.secrets.clone())
            .into_server();
    Ok(InvitationParts { server, invitations, store, mailer, sweeper, preview_limiter: limiter })
}

impl InvitationParts {
    /// Starts the mailer and the sweeper.
    pub fn spawn_workers(&self) -> Workers {
        let (stop, stopped) = watch::channel(false);
        let handles = vec![
            tokio::spawn(self.mailer.clone().run(stopped.clone())),
            tokio::spawn(self.sweeper.clone().run(stopped.clone())),
            tokio::spawn(self.preview_limiter.clone().run_housekeeping(stopped)),
        ];
        Workers::new("invitation", stop, handles)
    }

    /// Starts the mailer only (e.g. a process that leaves sweeping to another replica).
    pub fn spawn_mailer(&self) -> Workers {
        let (stop, stopped) = watch::channel(false);
        Workers::new("invitation", stop, vec![tokio::spawn(self.mailer.clone().run(stopped))])
    }
}
