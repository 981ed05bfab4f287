//! The real tenancy, invitation and token services on one tonic server on 127.0.0.1:0 over fresh
//! databases (a new SQLite directory, or a new Postgres database), the token service's HTTP
//! documents on another loopback port, typed clients, and the operator calls that set an
//! organization up.
//!
//! Postgres uses `LANYARD_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), a superuser that may create databases. Logs stay
//! quiet unless `TEST_LOG` is set.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Once};
use std::time::Duration;

use lanyard::{Application, ServiceName, Settings, Tuning};
use lanyard_core::db::DatabaseConfig;
use lanyard_proto::authz::v1::authorization_service_client::AuthorizationServiceClient;
use lanyard_proto::invitation::v1::invitation_service_client::InvitationServiceClient;
use lanyard_proto::tenancy::v1 as tpb;
use lanyard_proto::tenancy::v1::tenancy_service_client::TenancyServiceClient;
use lanyard_proto::token::v1 as pb;
use lanyard_proto::token::v1::token_service_client::TokenServiceClient;
use lanyard_token::TokenConfig;
use secrecy::SecretString;
use sqlx::{Connection, Executor};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::idp;

/// The operator key of every test server.
pub const OPERATOR_KEY: &str = "test-operator-key-0123456789";
/// The service key of every test server.
pub const SERVICE_KEY: &str = "test-service-key-0123456789";
/// The key-encryption key of every test server.
pub const KEK: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// The issuer of Lanyard's access tokens in tests.
pub const ISSUER: &str = "https://lanyard.test";

/// Logs to the test output when `TEST_LOG` is set.
pub fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt().with_env_filter("info,sqlx=warn").with_test_writer().try_init();
        }
    });
}

/// Which database backs a test: the backends the services run on.
pub use lanyard_core::db::Backend;

/// The Postgres server tests use.
pub fn postgres_admin_url() -> String {
    std::env::var("LANYARD_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Creates a fresh, uniquely named Postgres database; returns its URL and its name.
pub async fn fresh_postgres_database() -> (String, String) {
    let admin = postgres_admin_url();
    let name = format!("lanyard_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("Postgres tests need a server at {admin} (set LANYARD_TEST_POSTGRES_URL): {e}"));
    conn.execute(format!("CREATE DATABASE {name}").as_str()).await.expect("CREATE DATABASE");
    let _ = conn.close().await;
    let (base, _) = admin.rsplit_once('/').expect("the admin URL names a database");
    (format!("{base}/{name}"), name)
}

/// Drops the database `name`; for `Drop` implementations, which run outside any runtime that
/// could block on it, so it gets its own.
pub fn drop_postgres_database(name: String) {
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_admin_url()).await {
                let _ = conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await;
            }
        });
    })
    .join();
}

/// Whether the Postgres variant of `test` runs: yes when a server answers; when none does, the
/// test fails under `CI=true` and is reported skipped otherwise.
pub async fn postgres_available(test: &str) -> bool {
    match sqlx::PgConnection::connect(&postgres_admin_url()).await {
        Ok(conn) => {
            let _ = conn.close().await;
            true
        }
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true and Postgres at {} is unreachable: {e}", postgres_admin_url())
        }
        Err(e) => {
            // Straight to the process's stderr: the test harness captures `eprintln!`, and a skip
            // must be seen.
            use std::io::Write;
            let _ =
                writeln!(std::io::stderr(), "SKIPPED {test} on Postgres: no server at {} ({e})", postgres_admin_url());
            false
        }
    }
}

/// The databases of one test.
pub struct TestDb {
    pub backend: Backend,
    dir: PathBuf,
    pg_name: Option<String>,
    url: Option<String>,
}

impl TestDb {
    /// Fresh databases.
    pub async fn new(backend: Backend) -> Self {
        let dir = std::env::temp_dir().join(format!("lanyard-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        match backend {
            Backend::Sqlite => Self { backend, dir, pg_name: None, url: None },
            Backend::Postgres => {
                let (url, name) = fresh_postgres_database().await;
                Self { backend, url: Some(url), dir, pg_name: Some(name) }
            }
        }
    }

    /// The configuration of service `schema` (its own schema, or its own SQLite file).
    pub fn config(&self, schema: &str) -> DatabaseConfig {
        let url = match &self.url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}?mode=rwc", self.dir.join(format!("{schema}.db")).display()),
        };
        DatabaseConfig { url, schema: schema.into(), max_connections: 8 }
    }

    /// A directory for files.
    pub fn dir(&self) -> &PathBuf {
        &self.dir
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(name) = self.pg_name.take() {
            drop_postgres_database(name);
        }
    }
}

/// The settings of a test server on `db`: loopback listeners on free ports, the test keys and
/// issuer, the DNS server at `dns` as the resolver, plain-http identity providers allowed (they
/// run on loopback), mail written as files in the test directory.
pub fn settings(db: &TestDb, dns: SocketAddr) -> Settings {
    let secret = |s: &str| SecretString::from(s.to_owned());
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("address");
    Settings {
        listen_addr: loopback,
        http_addr: Some(loopback),
        data_dir: db.dir().clone(),
        database_url: db.url.as_deref().map(secret),
        operator_keys: vec![secret(OPERATOR_KEY)],
        service_keys: vec![secret(SERVICE_KEY)],
        encryption_key: Some(secret(KEK)),
        token_issuer: ISSUER.into(),
        allow_http_issuers: true,
        dns_servers: vec![dns],
        dns_timeout_ms: 2000,
        database_max_connections: 8,
        invitation_link_template: Some("https://app.test/invite?token={token}".into()),
        mail_transport: Some(lanyard::settings::MailTransportKind::Files),
        mail_dir: Some(db.dir().join("mail")),
        mail_from: "Lanyard <no-reply@lanyard.example>".into(),
        shutdown_grace_seconds: 1,
        ..Settings::default()
    }
}

/// Runs `app` until `stop` turns true.
pub fn run(app: Application, stop: &tokio::sync::watch::Sender<bool>) -> JoinHandle<()> {
    let mut stopped = stop.subscribe();
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        app.run_until(shutdown).await.expect("server");
    })
}

/// A running app: tenancy, invitation and token services on one loopback gRPC server, and the
/// token service's HTTP documents on another port.
pub struct TestApp {
    pub addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub tenancy: TenancyServiceClient<Channel>,
    pub invitations: InvitationServiceClient<Channel>,
    pub tokens: TokenServiceClient<Channel>,
    pub authz: AuthorizationServiceClient<Channel>,
    pub parts: Arc<lanyard_token::TokenParts>,
    /// The DNS server tenancy checks domain challenges against, and the token service resolves
    /// identity-provider hosts with.
    pub dns: crate::dns::FakeDns,
    stop: tokio::sync::watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
}

/// Adds `authorization: Bearer <key>`.
pub fn with_key<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert("authorization", format!("Bearer {key}").parse().expect("ascii"));
    r
}

/// As the operator.
pub fn op<T>(message: T) -> tonic::Request<T> {
    with_key(message, OPERATOR_KEY)
}

/// The stable reason of a status.
pub fn reason(status: &tonic::Status) -> String {
    lanyard_core::status::reason_of(status).unwrap_or_default()
}

/// Asserts a status's code and reason.
#[track_caller]
pub fn assert_status(status: &tonic::Status, code: tonic::Code, wanted: &str) {
    assert_eq!((status.code(), reason(status).as_str()), (code, wanted), "unexpected status: {status:?}");
}

impl TestApp {
    /// Starts an app on `db`; `tune` adjusts the token configuration.
    pub async fn spawn_with(db: &TestDb, tune: impl FnOnce(&mut TokenConfig) + Send + 'static) -> Self {
        Self::spawn_full(db, false, |_| {}, tune).await
    }

    /// Starts an app whose services seal with the key-encryption key `primary` (base64) and also
    /// open what `previous` keys sealed (a rotation of the key-encryption key).
    pub async fn spawn_with_keys(db: &TestDb, primary: &str, previous: &[&str]) -> Self {
        let secret = |k: &str| SecretString::from(k.to_owned());
        let (primary, previous) = (secret(primary), previous.iter().copied().map(secret).collect::<Vec<_>>());
        Self::spawn_full(
            db,
            false,
            |settings| {
                settings.encryption_key = Some(primary);
                settings.previous_encryption_keys = previous;
            },
            |_| {},
        )
        .await
    }

    /// Starts an app whose token service reaches tenancy and invitation over a TCP channel, as
    /// separate processes do, instead of calling the local servers directly.
    pub async fn spawn_over_channel(db: &TestDb) -> Self {
        Self::spawn_full(db, true, |_| {}, |_| {}).await
    }

    async fn spawn_full(
        db: &TestDb,
        over_channel: bool,
        adjust: impl FnOnce(&mut Settings),
        tune: impl FnOnce(&mut TokenConfig) + Send + 'static,
    ) -> Self {
        init_logs();
        // Tenancy checks domain challenges, and the token service resolves identity-provider
        // hosts, against this DNS server.
        let dns = crate::dns::FakeDns::start().await;
        let mut settings = settings(db, dns.addr());
        adjust(&mut settings);
        // What settings do not reach: upstream documents refetched at once, and no per-peer limits
        // (tests sign many people in from one address; the rate-limit tests turn them on).
        let token = Tuning::default().token(|config| {
            config.upstream.min_refetch_interval = Duration::from_millis(0);
            config.rate_limits = lanyard_token::RateLimits::off();
            tune(config);
        });
        let (first, second) = if over_channel {
            // Two processes, as a split deployment runs them: tenancy and invitation in one, the
            // token service in the other, reaching them over TCP.
            let first = Application::build(settings.clone(), &[ServiceName::Tenancy, ServiceName::Invitation])
                .await
                .expect("the tenancy and invitation process");
            let url = format!("http://{}", first.local_addr());
            let split = Settings { tenancy_url: Some(url.clone()), invitation_url: Some(url), ..settings };
            let second =
                Application::build_tuned(split, &[ServiceName::Token], token).await.expect("the token process");
            (Some(first), second)
        } else {
            (None, Application::build_tuned(settings, &ServiceName::ALL, token).await.expect("lanyard"))
        };
        let parts = second.token_parts().expect("the token service runs");
        let http_addr = second.http_addr().expect("the token service's HTTP listener");
        let token_addr = second.local_addr();
        let addr = first.as_ref().map_or(token_addr, Application::local_addr);
        let (stop, _) = tokio::sync::watch::channel(false);
        let servers = first.into_iter().chain([second]).map(|app| run(app, &stop)).collect();
        let channel = Channel::from_shared(format!("http://{addr}")).expect("uri").connect_lazy();
        let token_channel = Channel::from_shared(format!("http://{token_addr}")).expect("uri").connect_lazy();
        Self {
            addr,
            http_addr,
            tenancy: TenancyServiceClient::new(channel.clone()),
            invitations: InvitationServiceClient::new(channel),
            tokens: TokenServiceClient::new(token_channel.clone()),
            authz: AuthorizationServiceClient::new(token_channel),
            parts,
            dns,
            stop,
            servers,
        }
    }

    /// Starts an app with the test defaults.
    pub async fn spawn(db: &TestDb) -> Self {
        Self::spawn_with(db, |_| {}).await
    }

    /// Creates an organization of 10 seats (operator) and returns its id.
    pub async fn create_org(&self, slug: &str, domains: &[&str], owner_email: &str) -> String {
        self.create_org_with_seats(slug, domains, owner_email, 10).await
    }

    /// Creates an organization of `seat_limit` seats (operator) and returns its id.
    pub async fn create_org_with_seats(
        &self,
        slug: &str,
        domains: &[&str],
        owner_email: &str,
        seat_limit: i32,
    ) -> String {
        let resp = self
            .tenancy
            .clone()
            .create_organization(op(tpb::CreateOrganizationRequest {
                slug: slug.into(),
                display_name: slug.into(),
                seat_limit,
                allowed_domains: domains.iter().map(|d| d.to_string()).collect(),
                owner_email: owner_email.into(),
                ..Default::default()
            }))
            .await
            .expect("create organization")
            .into_inner();
        let org = resp.organization.expect("organization").organization_id;
        for domain in domains {
            self.verify_domain(&org, domain).await;
        }
        org
    }

    /// Verifies `domain` for `org` as an operator does in the seed flow, unless another
    /// organization of the test holds it verified (then it stays pending here: sign-ins into `org`
    /// rely on identities linked elsewhere, as they would in production).
    pub async fn verify_domain(&self, org: &str, domain: &str) {
        let req = tpb::VerifyDomainRequest {
            organization_id: org.into(),
            domain: domain.into(),
            method: tpb::DomainVerificationMethod::Operator as i32,
            ..Default::default()
        };
        match self.tenancy.clone().verify_domain(op(req)).await {
            Ok(_) => {}
            Err(status) if reason(&status) == "DOMAIN_VERIFIED_ELSEWHERE" => {}
            Err(status) => panic!("verify domain {domain}: {status:?}"),
        }
    }

    /// Creates an SSO connection for `idp` in `org` (operator).
    pub async fn connect(&self, org: &str, idp: &idp::FakeIdp) -> String {
        let kind = match idp.kind {
            idp::Kind::Google => tpb::SsoConnectionKind::GoogleWorkspace,
            idp::Kind::Azure => tpb::SsoConnectionKind::AzureAd,
            idp::Kind::Okta => tpb::SsoConnectionKind::Okta,
        };
        let resp = self
            .tenancy
            .clone()
            .create_sso_connection(op(tpb::CreateSsoConnectionRequest {
                organization_id: org.into(),
                kind: kind as i32,
                issuer: idp.issuer.clone(),
                client_id: idp.client_id.clone(),
                client_secret: idp.client_secret.clone(),
                hosted_domains: idp.hosted_domain.iter().cloned().collect(),
                tenant_id: idp.tenant_id.clone(),
                ..Default::default()
            }))
            .await
            .expect("create SSO connection")
            .into_inner();
        resp.connection.expect("connection").connection_id
    }

    /// Adds a member by email (operator; the domain check is waived, so fixtures may add people
    /// of any domain, as an operator may; the check itself is tested in `tests/`).
    pub async fn add_member(&self, org: &str, email: &str, roles: &[&str]) -> String {
        let resp = self
            .tenancy
            .clone()
            .add_member(op(tpb::AddMemberRequest {
                organization_id: org.into(),
                email: email.into(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
                waive_domain_check: true,
                ..Default::default()
            }))
            .await
            .expect("add member")
            .into_inner();
        resp.member.expect("member").user_id
    }

    /// Invites `email` into `org` with `roles` as the caller of `key`, sending no email, and
    /// returns the token of the invitation's link.
    pub async fn invitation_token(&self, key: &str, org: &str, email: &str, roles: &[&str]) -> String {
        let request = lanyard_proto::invitation::v1::CreateInvitationRequest {
            organization_id: org.into(),
            email: email.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            send_email: false,
            ..Default::default()
        };
        let resp = self
            .invitations
            .clone()
            .create_invitation(with_key(request, key))
            .await
            .expect("create invitation")
            .into_inner();
        let link = resp.invitation_link.expect("a link");
        link.rsplit_once("token=").expect("a link with a token").1.to_owned()
    }

    /// Signs in with an ID token.
    pub async fn sign_in(&self, id_token: &str, org: &str) -> Result<pb::ExchangeTokenResponse, tonic::Status> {
        let grant = pb::IdTokenGrant { id_token: id_token.into(), organization_id: org.into(), nonce: None };
        self.exchange(pb::exchange_token_request::Grant::IdTokenGrant(grant)).await
    }

    /// Calls ExchangeToken with `grant`.
    pub async fn exchange(
        &self,
        grant: pb::exchange_token_request::Grant,
    ) -> Result<pb::ExchangeTokenResponse, tonic::Status> {
        let req = pb::ExchangeTokenRequest { grant: Some(grant), ..Default::default() };
        self.tokens.clone().exchange_token(req).await.map(tonic::Response::into_inner)
    }

    /// Calls RefreshSession.
    pub async fn refresh(
        &self,
        refresh_token: &str,
        org: Option<&str>,
    ) -> Result<pb::RefreshSessionResponse, tonic::Status> {
        let req = pb::RefreshSessionRequest {
            refresh_token: refresh_token.into(),
            organization_id: org.map(str::to_owned),
            request_id: String::new(),
        };
        self.tokens.clone().refresh_session(req).await.map(tonic::Response::into_inner)
    }

    /// Stops the servers, as a process shutdown does, and waits for them.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for server in std::mem::take(&mut self.servers) {
            let _ = server.await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
