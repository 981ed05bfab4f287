//! Builds and runs the gRPC server: the selected services, gRPC health and reflection, a
//! tracing span per RPC, the limits that keep hostile clients from starving the others, and
//! graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use lanyard_authz::{Authorizer, Facts};
use lanyard_clients::{InvitationClient, TenancyClient};
use lanyard_core::cache::Cache;
use lanyard_core::caller::AccessTokenVerifier;
use lanyard_core::crypto::SecretBox;
use lanyard_core::db::{Database, DatabaseConfig};
use lanyard_core::{ApiKeys, Authenticator};
use lanyard_tenancy::{Tenancy, TenancyGrpc, TenancyStore};
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;
use tonic_health::server::HealthReporter;
use tower::layer::util::{Identity, Stack};
use tower::limit::GlobalConcurrencyLimitLayer;

use crate::config::issuer_allowlist;
pub use crate::config::{invitation_config, token_config};
use crate::listener::{ActivityLayer, ConnectionLimits};
use crate::settings::Settings;
use crate::telemetry::RpcTraceLayer;
use crate::tuning::Tuning;

/// A service the binary can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ServiceName {
    /// Organizations, members, roles, seats.
    Tenancy,
    /// Invitations and their emails.
    Invitation,
    /// Sessions and tokens.
    Token,
}

impl ServiceName {
    /// Every service, for the all-in-one process.
    pub const ALL: [ServiceName; 3] = [ServiceName::Tenancy, ServiceName::Invitation, ServiceName::Token];

    /// The service's name in file names, schemas and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tenancy => "tenancy",
            Self::Invitation => "invitation",
            Self::Token => "token",
        }
    }

    /// The fully-qualified gRPC service name, as gRPC health reports it.
    pub fn grpc_name(self) -> &'static str {
        match self {
            Self::Tenancy => "lanyard.tenancy.v1.TenancyService",
            Self::Invitation => "lanyard.invitation.v1.InvitationService",
            Self::Token => "lanyard.token.v1.TokenService",
        }
    }

    /// Every gRPC service this one mounts (the token service also answers authorization), as
    /// reflection lists them.
    pub fn grpc_names(self) -> &'static [&'static str] {
        match self {
            Self::Tenancy => &["lanyard.tenancy.v1.TenancyService"],
            Self::Invitation => &["lanyard.invitation.v1.InvitationService"],
            Self::Token => &["lanyard.token.v1.TokenService", "lanyard.authz.v1.AuthorizationService"],
        }
    }
}

/// File names in the data directory of the embedded default.
pub const OPERATOR_KEY_FILE: &str = "operator.key";
/// The generated service key.
pub const SERVICE_KEY_FILE: &str = "service.key";
/// The generated key-encryption key.
pub const ENCRYPTION_KEY_FILE: &str = "encryption.key";

/// The layers around every gRPC service: the process-wide limit on requests in flight (tonic's
/// load shedding, outside it, answers `RESOURCE_EXHAUSTED` when it is reached), the connection's
/// activity, and the per-RPC span.
type GrpcLayers = Stack<RpcTraceLayer, Stack<ActivityLayer, Stack<GlobalConcurrencyLimitLayer, Identity>>>;

/// A built server, bound and migrated, ready to run.
pub struct Application {
    listener: TcpListener,
    router: tonic::transport::server::Router<GrpcLayers>,
    health: HealthReporter,
    services: Vec<ServiceName>,
    grace: Duration,
    metrics: Option<TcpListener>,
    probes: Vec<(ServiceName, Database)>,
    cache: Cache,
    workers: Vec<lanyard_core::workers::Workers>,
    http: Option<(TcpListener, axum::Router)>,
    limits: Limits,
    tls: Option<crate::tls::ServerTls>,
    token: Option<Arc<lanyard_token::TokenParts>>,
    invitation: Option<Arc<lanyard_invitation::InvitationParts>>,
}

/// The limits of both listeners, from settings.
#[derive(Clone, Debug)]
struct Limits {
    grpc: ConnectionLimits,
    http: ConnectionLimits,
    http_header_read_timeout: Duration,
}

impl Limits {
    fn new(settings: &Settings) -> Self {
        Self {
            grpc: ConnectionLimits {
                max_connections: settings.grpc_max_connections,
                handshake_bytes: crate::listener::HTTP2_PREFACE_BYTES,
                handshake_timeout: Duration::from_millis(settings.grpc_handshake_timeout_ms),
                idle_timeout: Some(Duration::from_secs(settings.grpc_idle_timeout_seconds)),
            },
            http: ConnectionLimits {
                max_connections: settings.http_max_connections,
                // hyper's header read timeout covers the first bytes too; with TLS, the TLS
                // handshake gets as long.
                handshake_bytes: 0,
                handshake_timeout: Duration::from_millis(settings.http_header_read_timeout_ms),
                idle_timeout: None,
            },
            http_header_read_timeout: Duration::from_millis(settings.http_header_read_timeout_ms),
        }
    }
}

/// In a process without the token service: the verifier for Lanyard access tokens, from the
/// token service's published keys, the revocation facts this process shares (Redis), and the token
/// service's `BatchAuthorize` when they cannot be read. None without `LANYARD_TOKEN_URL`.
fn remote_member_verifier(
    settings: &Settings,
    facts: &Facts,
    tls: &lanyard_core::tls::ClientTls,
) -> anyhow::Result<Option<Authorizer>> {
    let (url, jwks) = match (&settings.token_url, &settings.token_jwks_url) {
        (None, None) => return Ok(None),
        (Some(url), Some(jwks)) => (url, jwks),
        _ => anyhow::bail!(
            "LANYARD_TOKEN_URL and LANYARD_TOKEN_JWKS_URL go together: set both for a process that accepts access \
             tokens without running the token service, or neither"
        ),
    };
    if settings.redis_url.is_none() {
        anyhow::bail!(
            "LANYARD_TOKEN_URL needs LANYARD_REDIS_URL: removals and revoked sessions reach this process only \
             through Redis, and without them an access token would outlive its member here"
        );
    }
    let keys = lanyard_authz::JwksKeys::lazy_trusting(jwks, tls.ca_pem.as_deref())
        .map_err(|e| anyhow::anyhow!("LANYARD_TOKEN_JWKS_URL: {e}"))?;
    let channel = lanyard_core::tls::endpoint(url, tls).context("LANYARD_TOKEN_URL")?.connect_lazy();
    let audience =
        lanyard_authz::Audience { issuer: settings.token_issuer.clone(), audience: settings.token_audience.clone() };
    let fallback = lanyard_authz::Fallback::Remote(
        lanyard_proto::authz::v1::authorization_service_client::AuthorizationServiceClient::new(channel),
    );
    Ok(Some(Authorizer::new(Arc::new(keys), audience, facts.clone(), fallback)))
}

/// How often a service's database is probed for readiness.
pub const READINESS_PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// Creates the embedded default's data directory private, or tightens the one an older version
/// left open: it holds the databases and keys. Each file in it is made private by whoever writes it.
fn private_data_dir(settings: &Settings) -> anyhow::Result<()> {
    if settings.is_embedded() {
        lanyard_core::fs::create_private_dir(&settings.data_dir)
            .with_context(|| format!("the data directory {}", settings.data_dir.display()))?;
    }
    Ok(())
}

/// Opens (and migrates) the tenancy database.
pub async fn tenancy_store(settings: &Settings) -> anyhow::Result<TenancyStore> {
    let db = Database::connect(&database_config(settings, ServiceName::Tenancy))
        .await
        .context("connecting to the tenancy database")?;
    let store = TenancyStore::new(db);
    store.migrate().await.context("migrating the tenancy database")?;
    Ok(store)
}

/// The configured API keys, and the service key this process uses to call the other services
/// (the first one). The embedded default generates an operator and a service key in the data
/// directory when none are configured, so a fresh `lanyard serve` can be used at once.
pub fn api_keys(settings: &Settings) -> anyhow::Result<(ApiKeys, Option<SecretString>)> {
    let mut operators: Vec<String> = settings.operator_keys.iter().map(|k| k.expose_secret().to_owned()).collect();
    let mut services: Vec<String> = settings.service_keys.iter().map(|k| k.expose_secret().to_owned()).collect();
    if settings.is_embedded() {
        if operators.is_empty() {
            operators.push(read_or_create_key(&settings.data_dir.join(OPERATOR_KEY_FILE))?);
        }
        if services.is_empty() {
            services.push(read_or_create_key(&settings.data_dir.join(SERVICE_KEY_FILE))?);
        }
    } else if operators.is_empty() && services.is_empty() {
        anyhow::bail!("no API keys configured: set LANYARD_OPERATOR_KEYS and LANYARD_SERVICE_KEYS");
    }
    let keys = ApiKeys::new(operators.iter().map(String::as_str), services.iter().map(String::as_str))
        .map_err(anyhow::Error::msg)?;
    Ok((keys, services.first().cloned().map(SecretString::from)))
}

fn read_or_create_key(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(k) => {
            // An older version, or a hand-made file, may have left it readable by others.
            lanyard_core::fs::make_private(path).with_context(|| format!("tightening {}", path.display()))?;
            Ok(k.trim().to_owned())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = format!("lny_{}", lanyard_core::crypto::random_token(32));
            lanyard_core::crypto::write_private(path, &key)?;
            tracing::info!(path = %path.display(), "generated an API key for the embedded default");
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The key-encryption key: configured, or (embedded default) a generated file; with the previous
/// keys it still opens what they sealed (`LANYARD_PREVIOUS_ENCRYPTION_KEYS`).
pub fn secret_box(settings: &Settings) -> anyhow::Result<SecretBox> {
    let primary = match &settings.encryption_key {
        Some(k) => SecretBox::from_base64(k.expose_secret()).context("LANYARD_ENCRYPTION_KEY")?,
        None if settings.is_embedded() => SecretBox::load_or_create(&settings.data_dir.join(ENCRYPTION_KEY_FILE))
            .context("the encryption key file")?,
        None => anyhow::bail!("LANYARD_ENCRYPTION_KEY is required with LANYARD_DATABASE_URL"),
    };
    primary
        .with_previous(settings.previous_encryption_keys.iter().map(|k| k.expose_secret()))
        .context("LANYARD_PREVIOUS_ENCRYPTION_KEYS")
}

impl Application {
    /// Binds the listener, connects and migrates the databases, and assembles the server.
    pub async fn build(settings: Settings, services: &[ServiceName]) -> anyhow::Result<Self> {
        Self::build_tuned(settings, services, Tuning::default()).await
    }

    /// [`Application::build`] with the adjustments of `tuning` (see [`Tuning`]).
    pub async fn build_tuned(settings: Settings, services: &[ServiceName], tuning: Tuning) -> anyhow::Result<Self> {
        let Tuning { token: tune_token, invitation: tune_invitation, member_tokens, background_work } = tuning;
        let services: Vec<ServiceName> =
            if services.is_empty() { ServiceName::ALL.to_vec() } else { services.to_vec() };
        lanyard_core::tls::install_crypto_provider();
        // TLS files are checked before anything else: a process asked to serve TLS never serves without.
        let tls = settings.server_tls().map_err(anyhow::Error::msg)?.map(crate::tls::ServerTls::load).transpose()?;
        let client_tls = settings.client_tls()?;
        let listener = TcpListener::bind(settings.listen_addr)
            .await
            .with_context(|| format!("binding {}", settings.listen_addr))?;
        let (health, health_service) = tonic_health::server::health_reporter();
        // Reflection lists what this process serves, not every service the descriptors hold: a
        // client of a split deployment sees where each call goes.
        let reflection = services
            .iter()
            .flat_map(|s| s.grpc_names())
            .fold(
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(lanyard_proto::FILE_DESCRIPTOR_SET)
                    .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                    .with_service_name("grpc.health.v1.Health"),
                |builder, name| builder.with_service_name(*name),
            )
            .build_v1()
            .context("building gRPC reflection")?;
        let metrics = match settings.metrics_addr {
            Some(addr) => {
                crate::telemetry::metrics_handle();
                Some(TcpListener::bind(addr).await.with_context(|| format!("binding the metrics address {addr}"))?)
            }
            None => None,
        };
        // Readiness: each service reports NOT_SERVING until its database is migrated and answers.
        for service in &services {
            health.set_service_status(service.grpc_name(), tonic_health::ServingStatus::NotServing).await;
        }
        let mut probes = Vec::new();
        wait_for_database(&settings).await?;
        let cache = shared_cache(&settings).await?;
        // Revocation facts, shared by tenancy (writer) and the token service (reader) in this
        // process, and through Redis with every other process; the subscription keeps the near
        // cache honest.
        let facts = lanyard_authz::Facts::new(cache.clone());
        private_data_dir(&settings)?;
        let (keys, service_key) = api_keys(&settings)?;
        // The services are built with API keys only (their in-process clients present the service
        // key); member callers are accepted once the process has its member-token verifier, below.
        let keys_only = Authenticator::new(keys);
        let token_config = match services.contains(&ServiceName::Token) {
            true => {
                let mut config = token_config(&settings, &facts)?;
                if let Some(adjust) = tune_token {
                    adjust(&mut config);
                }
                Some(config)
            }
            false => None,
        };
        // The token configuration's facts are the process's facts: a tuning that gives the token
        // service another fact store gives it to tenancy too, so removals reach the reader.
        let facts = token_config.as_ref().map_or(facts, |c| c.facts.clone());
        // Member callers are checked as `Authorize` checks them: by the token service's own
        // verifier when it runs here (known once it is built), by the remote token service's keys
        // and the shared facts in a split deployment, or as a tuning says.
        let mut member_verifier: Option<Arc<dyn AccessTokenVerifier>> = match &token_config {
            Some(_) => None,
            None => match remote_member_verifier(&settings, &facts, &client_tls)? {
                Some(remote) => Some(Arc::new(remote)),
                None => member_tokens,
            },
        };
        let (mut tenancy_server, mut invitation_server) = (None, None);
        let mut local_invitation = None;
        let mut http = None;
        let mut local_tenancy: Option<TenancyGrpc> = None;
        let (mut token_parts, mut invitation_parts) = (None, None);
        let mut tune_invitation = tune_invitation;
        let mut workers = Vec::new();
        let (facts_stop, facts_stopped) = tokio::sync::watch::channel(false);
        workers.push(lanyard_core::workers::Workers::new("authz", facts_stop, vec![facts.subscribe(facts_stopped)]));
        if let Some(tls) = &tls {
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let reloader = tls.spawn_reloader(Duration::from_millis(settings.tls_reload_interval_ms), stopped);
            workers.push(lanyard_core::workers::Workers::new("tls", stop, vec![reloader]));
        }
        let small = settings.grpc_max_request_bytes;
        let mut server = tonic::transport::Server::builder();
        if settings.grpc_max_connection_age_seconds > 0 {
            server = server
                .max_connection_age(Duration::from_secs(settings.grpc_max_connection_age_seconds))
                .max_connection_age_grace(Duration::from_secs(settings.grpc_max_connection_age_grace_seconds));
        }
        let mut router = server
            .max_concurrent_streams(settings.grpc_max_concurrent_streams)
            .http2_keepalive_interval(Some(Duration::from_secs(settings.grpc_keepalive_interval_seconds)))
            .http2_keepalive_timeout(Some(Duration::from_secs(settings.grpc_keepalive_timeout_seconds)))
            .load_shed(true)
            .layer(GlobalConcurrencyLimitLayer::new(settings.grpc_max_concurrent_requests))
            .layer(ActivityLayer)
            .layer(RpcTraceLayer)
            .add_service(health_service.max_decoding_message_size(small))
            .add_service(reflection.max_decoding_message_size(small));
        for service in &services {
            match service {
                ServiceName::Tenancy => {
                    let store = tenancy_store(&settings).await?;
                    store.database().ping().await.context("the tenancy database does not answer")?;
                    probes.push((ServiceName::Tenancy, store.database().clone()));
                    health.set_service_status(service.grpc_name(), tonic_health::ServingStatus::Serving).await;
                    let dns = lanyard_tenancy::dns::DomainVerifier::new(&lanyard_tenancy::dns::DnsConfig {
                        servers: settings.dns_servers.clone(),
                        timeout: std::time::Duration::from_millis(settings.dns_timeout_ms),
                    })
                    .context("setting up the DNS resolver")?;
                    let tenancy = Tenancy::new(store, secret_box(&settings)?, dns, facts.clone())
                        .allow_http_issuers(settings.allow_http_issuers)
                        .issuer_allowlist(issuer_allowlist(&settings)?)
                        .max_sso_connections(settings.max_sso_connections_per_org);
                    let grpc = TenancyGrpc::new(tenancy, keys_only.clone());
                    local_tenancy = Some(grpc.clone());
                    tenancy_server = Some(
                        grpc.into_server()
                            .map(|s| s.max_decoding_message_size(settings.grpc_max_tenancy_request_bytes)),
                    );
                }
                ServiceName::Invitation => {
                    let key = service_key.clone().context("the invitation service needs a service key")?;
                    // One code path, two transports: the local tenancy server, or a channel.
                    let tenancy = match (&local_tenancy, &settings.tenancy_url) {
                        (Some(local), _) => TenancyClient::in_process(local.clone().into_server(), &key)?,
                        (None, Some(url)) => TenancyClient::from_transport(
                            lanyard_core::transport::connect_lazy_tls(url, Duration::from_secs(10), &client_tls)?,
                            &key,
                        )?,
                        (None, None) => anyhow::bail!(
                            "the invitation service needs the tenancy service: run both, or set LANYARD_TENANCY_URL"
                        ),
                    };
                    let mut config = invitation_config(&settings)?;
                    if let Some(adjust) = tune_invitation.take() {
                        adjust(&mut config);
                    }
                    let parts = lanyard_invitation::build(config, tenancy, keys_only.clone()).await?;
                    parts.store.database().ping().await.context("the invitation database does not answer")?;
                    probes.push((ServiceName::Invitation, parts.store.database().clone()));
                    if background_work {
                        workers.push(parts.spawn_workers());
                    }
                    local_invitation = Some(parts.server.clone());
                    invitation_server = Some(parts.server.clone().map(|s| s.max_decoding_message_size(small)));
                    invitation_parts = Some(Arc::new(parts));
                    health.set_service_status(service.grpc_name(), tonic_health::ServingStatus::Serving).await;
                }
                ServiceName::Token => {
                    let key = service_key.clone().context("the token service needs a service key")?;
                    let tenancy = match (&local_tenancy, &settings.tenancy_url) {
                        (Some(local), _) => TenancyClient::in_process(local.clone().into_server(), &key)?,
                        (None, Some(url)) => TenancyClient::from_transport(
                            lanyard_core::transport::connect_lazy_tls(url, Duration::from_secs(10), &client_tls)?,
                            &key,
                        )?,
                        (None, None) => anyhow::bail!(
                            "the token service needs the tenancy service: run both, or set LANYARD_TENANCY_URL"
                        ),
                    };
                    let invitations = match (&local_invitation, &settings.invitation_url) {
                        (Some(local), _) => Some(InvitationClient::in_process(local.clone(), &key)?),
                        (None, Some(url)) => Some(InvitationClient::from_transport(
                            lanyard_core::transport::connect_lazy_tls(url, Duration::from_secs(10), &client_tls)?,
                            &key,
                        )?),
                        (None, None) => None,
                    };
                    let config = token_config.clone().context("token settings")?;
                    let access = config.access_tokens();
                    let parts = lanyard_token::build(config, access, tenancy, invitations, keys_only.clone()).await?;
                    member_verifier = Some(parts.verifier.clone());
                    parts.store.database().ping().await.context("the token database does not answer")?;
                    probes.push((ServiceName::Token, parts.store.database().clone()));
                    if background_work {
                        workers.push(parts.spawn_workers());
                    }
                    if let Some(addr) = settings.http_addr {
                        let listener = TcpListener::bind(addr)
                            .await
                            .with_context(|| format!("binding the token service's HTTP address {addr}"))?;
                        http = Some((listener, parts.http.clone()));
                    }
                    router = router
                        .add_service(parts.server.clone().map(|s| s.max_decoding_message_size(small)))
                        .add_service(parts.authz_server.clone().max_decoding_message_size(small))
                        .add_service(
                            parts
                                .ext_authz
                                .clone()
                                .into_server()
                                .max_decoding_message_size(settings.grpc_max_ext_authz_request_bytes),
                        );
                    token_parts = Some(Arc::new(parts));
                    health.set_service_status(service.grpc_name(), tonic_health::ServingStatus::Serving).await;
                }
            }
        }
        let auth = match member_verifier {
            Some(verifier) => keys_only.with_access_tokens(verifier),
            None => keys_only,
        };
        if let Some(server) = tenancy_server {
            router = router.add_service(server.authenticate_with(auth.clone()));
        }
        if let Some(server) = invitation_server {
            router = router.add_service(server.authenticate_with(auth));
        }
        Ok(Self {
            listener,
            router,
            health,
            services,
            grace: Duration::from_secs(settings.shutdown_grace_seconds),
            metrics,
            probes,
            cache,
            workers,
            http,
            limits: Limits::new(&settings),
            tls,
            token: token_parts,
            invitation: invitation_parts,
        })
    }

    /// The token service's parts, when this process runs it (for an embedding program's own checks).
    pub fn token_parts(&self) -> Option<Arc<lanyard_token::TokenParts>> {
        self.token.clone()
    }

    /// The invitation service's parts, when this process runs it.
    pub fn invitation_parts(&self) -> Option<Arc<lanyard_invitation::InvitationParts>> {
        self.invitation.clone()
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound TCP listener has an address")
    }

    /// The bound address of the token service's HTTP documents (JWKS, OpenID configuration).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// The bound metrics address, when metrics are served.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until SIGTERM or Ctrl-C.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `shutdown` completes; then reports NOT_SERVING, stops accepting and lets
    /// in-flight RPCs finish within the grace period.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Self {
            listener, router, health, services, grace, metrics, probes, cache, workers, http, limits, tls, ..
        } = self;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, services = ?services.iter().map(|s| s.as_str()).collect::<Vec<_>>(), "lanyard is serving");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
        if let Some(listener) = metrics {
            let acceptor = crate::listener::Acceptor::new(listener, "metrics", limits.http.clone())
                .with_tls(tls.as_ref().map(|t| t.http.clone()));
            let app = crate::telemetry::metrics_router();
            tokio::spawn(crate::listener::serve_http(acceptor, app, limits.http_header_read_timeout, stopping.clone()));
        }
        if let Some((listener, app)) = http {
            let acceptor = crate::listener::Acceptor::new(listener, "http", limits.http.clone())
                .with_tls(tls.as_ref().map(|t| t.http.clone()));
            tokio::spawn(crate::listener::serve_http(acceptor, app, limits.http_header_read_timeout, stopping.clone()));
        }
        for (service, db) in probes {
            tokio::spawn(probe_readiness(service, db, health.clone(), stopping.clone()));
        }
        // The in-process cache of the embedded default cannot be down.
        if cache.redis_client().is_some() {
            tokio::spawn(probe_cache(cache, stopping.clone()));
        }
        let signal = async move {
            shutdown.await;
            let _ = stopping_tx.send(true);
            tracing::info!("shutting down: no new connections; finishing in-flight RPCs");
            for service in services {
                health.set_service_status(service.grpc_name(), tonic_health::ServingStatus::NotServing).await;
            }
            health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
            let _ = stop_tx.send(());
        };
        let incoming = crate::listener::Acceptor::new(listener, "grpc", limits.grpc)
            .with_tls(tls.as_ref().map(|t| t.grpc.clone()))
            .into_stream();
        let serve = router.serve_with_incoming_shutdown(incoming, signal);
        tokio::pin!(serve);
        tokio::select! {
            res = &mut serve => res.context("serving gRPC")?,
            _ = async { let _ = stop_rx.await; tokio::time::sleep(grace).await } => {
                tracing::warn!(grace_seconds = grace.as_secs(), "in-flight RPCs did not finish within the grace period");
            }
        }
        // Background work (a delivery in progress) finishes after the last RPC.
        for w in workers {
            w.shutdown().await;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Keeps a service's readiness true to its database: NOT_SERVING while it does not answer,
/// SERVING again once it does, until shutdown starts. Redis is not part of it: while Redis is down
/// the authorizer falls back to the services of record and calls still succeed, so taking every
/// pod out of its Service would turn a cache outage into a full one (see [`probe_cache`]).
async fn probe_readiness(
    service: ServiceName,
    db: Database,
    health: HealthReporter,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    // `build` reported SERVING after migrating and pinging the database.
    let mut serving = true;
    loop {
        crate::metrics::record_pool(service.as_str(), &db);
        tokio::select! {
            _ = stopping.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(READINESS_PROBE_INTERVAL) => {}
        }
        let ok = database_answers(&db).await;
        if ok != serving && !*stopping.borrow() {
            serving = ok;
            let status =
                if ok { tonic_health::ServingStatus::Serving } else { tonic_health::ServingStatus::NotServing };
            tracing::warn!(service = service.as_str(), ready = ok, "readiness changed");
            health.set_service_status(service.grpc_name(), status).await;
        }
    }
}

/// Whether a service's database answers, within the probe's own deadline.
async fn database_answers(db: &Database) -> bool {
    tokio::time::timeout(Duration::from_secs(2), db.ping()).await.map(|r| r.is_ok()).unwrap_or(false)
}

/// Whether the shared cache answers, within the probe's own deadline (the in-process cache always does).
async fn cache_answers(cache: &Cache) -> bool {
    tokio::time::timeout(Duration::from_secs(2), cache.ping()).await.map(|r| r.is_ok()).unwrap_or(false)
}

/// Exports whether Redis answers as the gauge `lanyard_redis_up` (1 or 0), checked as often as
/// readiness, and logs each change: an alert, not a reason to stop serving.
async fn probe_cache(cache: Cache, mut stopping: tokio::sync::watch::Receiver<bool>) {
    let mut up = true;
    metrics::gauge!("lanyard_redis_up").set(1.0);
    loop {
        tokio::select! {
            _ = stopping.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(READINESS_PROBE_INTERVAL) => {}
        }
        let ok = cache_answers(&cache).await;
        metrics::gauge!("lanyard_redis_up").set(if ok { 1.0 } else { 0.0 });
        if ok != up {
            up = ok;
            tracing::warn!(redis_up = ok, "the shared cache changed state; readiness does not follow it");
        }
    }
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Redis when configured (waited for at start, see [`retry_at_start`]), else the in-process cache.
pub async fn shared_cache(settings: &Settings) -> anyhow::Result<Cache> {
    match &settings.redis_url {
        Some(url) => {
            let ca = settings
                .tls_ca_file
                .as_deref()
                .map(|p| lanyard_core::tls::read_pem("LANYARD_TLS_CA_FILE", p, "CERTIFICATE"))
                .transpose()?;
            retry_at_start("Redis (LANYARD_REDIS_URL)", startup_budget(settings), || {
                Cache::redis_tls(url.expose_secret(), &settings.redis_key_prefix, ca.as_deref())
            })
            .await
        }
        None => Ok(Cache::local(&settings.redis_key_prefix)),
    }
}

/// Waits until the Postgres server answers (see [`retry_at_start`]); SQLite needs no waiting.
pub async fn wait_for_database(settings: &Settings) -> anyhow::Result<()> {
    if let Some(url) = &settings.database_url {
        retry_at_start("Postgres (LANYARD_DATABASE_URL)", startup_budget(settings), || {
            Database::check_reachable(url.expose_secret())
        })
        .await?;
    }
    Ok(())
}

fn startup_budget(settings: &Settings) -> Duration {
    Duration::from_secs(settings.startup_retry_seconds)
}

/// The first wait between attempts at start; it doubles up to [`STARTUP_RETRY_MAX_DELAY`].
const STARTUP_RETRY_FIRST_DELAY: Duration = Duration::from_millis(250);
/// The longest wait between attempts at start.
const STARTUP_RETRY_MAX_DELAY: Duration = Duration::from_secs(5);

/// Tries `attempt` until it succeeds or `budget` has passed, waiting with exponential backoff and
/// logging each failure. Postgres and Redis are often not answering yet when the pods start (they
/// are scheduled together, a failover is in progress): waiting here keeps the pod out of
/// CrashLoopBackOff's growing delays, and the log says what is waited for.
pub async fn retry_at_start<T, E, F, Fut>(what: &str, budget: Duration, mut attempt: F) -> anyhow::Result<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = tokio::time::Instant::now();
    let mut delay = STARTUP_RETRY_FIRST_DELAY;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let error = match attempt().await {
            Ok(value) => {
                if attempts > 1 {
                    tracing::info!(dependency = what, attempts, "reachable; starting");
                }
                return Ok(value);
            }
            Err(e) => e.to_string(),
        };
        let waited = started.elapsed();
        if waited + delay > budget {
            anyhow::bail!(
                "{what} did not answer within {}s ({attempts} attempts; LANYARD_STARTUP_RETRY_SECONDS): {error}",
                budget.as_secs()
            );
        }
        tracing::warn!(
            dependency = what,
            error = %error,
            attempt = attempts,
            retry_in_ms = delay.as_millis() as u64,
            "not reachable at start; retrying"
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(STARTUP_RETRY_MAX_DELAY);
    }
}

/// Where a service keeps its tables, from settings.
pub(crate) fn database_config(settings: &Settings, service: ServiceName) -> DatabaseConfig {
    DatabaseConfig {
        url: settings.database_url_for(service.as_str()),
        schema: service.as_str().into(),
        max_connections: settings.database_max_connections,
    }
}

/// Runs the migrations of the selected services and returns. It needs the database only: no API
/// key, no key-encryption key, no Redis (the migration Job is given nothing else).
pub async fn migrate(settings: &Settings, services: &[ServiceName]) -> anyhow::Result<()> {
    let services: Vec<ServiceName> = if services.is_empty() { ServiceName::ALL.to_vec() } else { services.to_vec() };
    private_data_dir(settings)?;
    wait_for_database(settings).await?;
    for service in services {
        let connect = || async {
            Database::connect(&database_config(settings, service))
                .await
                .with_context(|| format!("connecting to the {} database", service.as_str()))
        };
        match service {
            ServiceName::Tenancy => {
                tenancy_store(settings).await?;
            }
            ServiceName::Invitation => {
                lanyard_invitation::InvitationStore::new(connect().await?)
                    .migrate()
                    .await
                    .context("migrating the invitation database")?;
            }
            ServiceName::Token => {
                lanyard_token::TokenStore::new(connect().await?)
                    .migrate()
                    .await
                    .context("migrating the token database")?;
            }
        }
        tracing::info!(service = service.as_str(), "migrated");
    }
    Ok(())
}
