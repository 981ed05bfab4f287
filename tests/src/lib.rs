//! Test support: start the real `lanyard` server on 127.0.0.1:0 against a fresh database (a new
//! SQLite file, or a new Postgres database), and hand out typed gRPC clients.
//!
//! Postgres tests need a server at `LANYARD_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). They never skip themselves: `make test` leaves
//! them out, and says so, when no server answers and `CI` is not set.

use std::sync::Once;

pub mod projects;
pub mod sso;

use lanyard::{Application, ServiceName, Settings};
use lanyard_core::db::{Backend, Database, DatabaseConfig};
use lanyard_proto::invitation::v1::invitation_service_client::InvitationServiceClient;
use lanyard_proto::tenancy::v1 as pb;
use lanyard_proto::tenancy::v1::tenancy_service_client::TenancyServiceClient;
use lanyard_proto::token::v1::token_service_client::TokenServiceClient;
use sqlx::Row;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The keys every test server accepts, and the key-encryption key it seals secrets with.
pub use lanyard_testkit::app::{KEK, OPERATOR_KEY, SERVICE_KEY};

/// A tenancy client that sends a fixed `authorization` header (or none).
pub type Client = TenancyServiceClient<InterceptedService<Channel, Auth>>;

/// Adds a fixed `authorization` header.
#[derive(Clone)]
pub struct Auth(Option<MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            lanyard::telemetry::init(lanyard::settings::LogFormat::Text);
        }
    });
}

pub use lanyard_testkit::app::{drop_postgres_database, fresh_postgres_database, postgres_admin_url, TestDb};

/// A fresh Postgres database that several servers of one test share, dropped with it.
pub struct SharedDatabase {
    /// Its URL.
    pub url: String,
    name: String,
}

impl SharedDatabase {
    /// Creates one.
    pub async fn create() -> Self {
        let (url, name) = fresh_postgres_database().await;
        Self { url, name }
    }
}

impl Drop for SharedDatabase {
    fn drop(&mut self) {
        drop_postgres_database(std::mem::take(&mut self.name));
    }
}

/// A running server and what a test needs to talk to it and inspect its database.
pub struct TestApp {
    /// `http://127.0.0.1:<port>` (`https://localhost:<port>` with TLS).
    pub endpoint: String,
    /// The backend under test.
    pub backend: Backend,
    /// Direct access to the tenancy tables, for checking invariants.
    pub db: Database,
    /// The data directory (SQLite files, generated keys, `.eml` files of the embedded mailer).
    pub data_dir: std::path::PathBuf,
    /// Where the token service serves its HTTP documents, when it runs.
    pub http_addr: Option<std::net::SocketAddr>,
    /// Where `/metrics` is served, when the settings asked for it.
    pub metrics_addr: Option<std::net::SocketAddr>,
    channel: Channel,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// The DNS server tenancy checks domain challenges against.
    pub dns: lanyard_testkit::dns::FakeDns,
    /// Its databases and data directory, removed with it.
    _databases: TestDb,
}

/// Starts the tenancy service on `backend` with a fresh database.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// As [`spawn_app`], with the settings adjusted by `tweak` first.
pub async fn spawn_app_with(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_services(backend, &[ServiceName::Tenancy], tweak).await
}

/// Starts `services` in one process on `backend`; [`TestApp::db`] is the first service's database.
///
/// The settings are the testkit's ([`lanyard_testkit::app::settings`]) brought back to what a
/// deployment has by default where these tests rely on it: plain-http identity providers refused,
/// the default issuer and invitation link, per-peer limits off (tests sign many people in from
/// one address; the rate-limit tests turn them on).
pub async fn spawn_services(backend: Backend, services: &[ServiceName], tweak: impl FnOnce(&mut Settings)) -> TestApp {
    init_logs();
    let databases = TestDb::new(backend).await;
    let dns = lanyard_testkit::dns::FakeDns::start().await;
    let defaults = Settings::default();
    let mut settings = Settings {
        allow_http_issuers: defaults.allow_http_issuers,
        token_issuer: defaults.token_issuer.clone(),
        invitation_link_template: defaults.invitation_link_template.clone(),
        database_max_connections: 10,
        shutdown_grace_seconds: 5,
        rate_limit_exchange_per_minute: 0,
        rate_limit_invitation_per_minute: 0,
        ..lanyard_testkit::app::settings(&databases, dns.addr())
    };
    tweak(&mut settings);
    let first = services.first().copied().unwrap_or(ServiceName::Tenancy);
    let db_url = settings.database_url_for(first.as_str());
    // A server with TLS is reached as `https://localhost`, trusting `tls_ca_file` and presenting
    // the server's own pair (for a server that requires client certificates).
    let client_tls = settings.tls_cert_file.is_some().then(|| settings.client_tls().expect("the TLS files"));
    let app = Application::build(settings, services).await.expect("the server builds");
    let endpoint = match &client_tls {
        Some(_) => format!("https://localhost:{}", app.local_addr().port()),
        None => format!("http://{}", app.local_addr()),
    };
    let metrics_addr = app.metrics_addr();
    let http_addr = app.http_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let channel = lanyard_core::tls::endpoint(&endpoint, &client_tls.unwrap_or_default())
        .expect("endpoint")
        .connect()
        .await
        .expect("connects");
    let db = Database::connect(&DatabaseConfig { url: db_url, schema: first.as_str().into(), max_connections: 2 })
        .await
        .expect("test database handle");
    TestApp {
        endpoint,
        dns,
        backend,
        db,
        data_dir: databases.dir().clone(),
        http_addr,
        metrics_addr,
        channel,
        stop: Some(stop),
        server: Some(server),
        _databases: databases,
    }
}

impl TestApp {
    /// A client sending `authorization: <header>` (or nothing).
    pub fn client_with(&self, header: Option<&str>) -> Client {
        let value = header.map(|h| MetadataValue::try_from(h).expect("header text"));
        TenancyServiceClient::with_interceptor(self.channel.clone(), Auth(value))
    }

    /// A client with the operator key.
    pub fn operator(&self) -> Client {
        self.client_with(Some(&format!("Bearer {OPERATOR_KEY}")))
    }

    /// A client with the service key.
    pub fn service(&self) -> Client {
        self.client_with(Some(&format!("Bearer {SERVICE_KEY}")))
    }

    /// An invitation client sending `authorization: <header>` (or nothing).
    pub fn invitations_with(&self, header: Option<&str>) -> InvitationClient {
        let value = header.map(|h| MetadataValue::try_from(h).expect("header text"));
        InvitationServiceClient::with_interceptor(self.channel.clone(), Auth(value))
    }

    /// The registration tokens in the `.eml` files the embedded mailer wrote, oldest first.
    pub fn mailed_tokens(&self) -> Vec<String> {
        let dir = self.data_dir.join("mail");
        let mut files: Vec<_> =
            std::fs::read_dir(&dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        files.iter().filter_map(|p| std::fs::read_to_string(p).ok()).filter_map(|text| token_in_email(&text)).collect()
    }

    /// A raw channel to the server (for health and reflection clients).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Creates an organization as the operator.
    pub async fn create_org(&self, seats: i32, domains: &[&str]) -> pb::Organization {
        self.operator()
            .create_organization(pb::CreateOrganizationRequest {
                slug: unique_slug(),
                display_name: "Acme Corp".into(),
                seat_limit: seats,
                allowed_domains: domains.iter().map(|d| d.to_string()).collect(),
                ..Default::default()
            })
            .await
            .expect("CreateOrganization")
            .into_inner()
            .organization
            .expect("organization")
    }

    /// Adds a member as the operator.
    pub async fn add_member(&self, org: &str, email: &str, roles: &[&str]) -> pb::Member {
        self.operator()
            .add_member(pb::AddMemberRequest {
                organization_id: org.to_owned(),
                email: email.to_owned(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
                ..Default::default()
            })
            .await
            .expect("AddMember")
            .into_inner()
            .member
            .expect("member")
    }

    /// Seat usage as the operator.
    pub async fn usage(&self, org: &str) -> pb::SeatUsage {
        self.operator()
            .get_seat_usage(pb::GetSeatUsageRequest { organization_id: org.to_owned() })
            .await
            .expect("GetSeatUsage")
            .into_inner()
            .usage
            .expect("usage")
    }

    /// Counts rows straight from the database.
    pub async fn count(&self, sql: &str, org: &str) -> i64 {
        sqlx::query(sql).bind(org).fetch_one(&self.db.pool).await.expect(sql).try_get::<i64, _>(0).expect("a count")
    }

    /// A text picture of every tenancy table, to assert that a refused request changed nothing.
    pub async fn snapshot(&self) -> String {
        let queries = [
            "SELECT id || '|' || slug || '|' || display_name || '|' || CAST(seat_limit AS TEXT) || '|' || metadata || '|' || status || '|' || COALESCE(owner_user_id, '') || '|' || CAST(updated_at AS TEXT) FROM organizations ORDER BY id",
            "SELECT org_id || '|' || domain || '|' || state || '|' || challenge || '|' || COALESCE(CAST(verified_at AS TEXT), '') FROM organization_domains ORDER BY org_id, domain",
            "SELECT id || '|' || COALESCE(primary_email, '') || '|' || CAST(email_verified AS TEXT) FROM users ORDER BY id",
            "SELECT issuer || '|' || subject || '|' || user_id FROM external_identities ORDER BY issuer, subject",
            "SELECT org_id || '|' || user_id || '|' || status || '|' || CAST(version AS TEXT) FROM memberships ORDER BY org_id, user_id",
            "SELECT org_id || '|' || user_id || '|' || role FROM membership_roles ORDER BY org_id, user_id, role",
            "SELECT org_id || '|' || name || '|' || description || '|' || permissions FROM roles ORDER BY org_id, name",
            "SELECT id || '|' || state || '|' || COALESCE(claimed_user_id, '') FROM seat_reservations ORDER BY id",
            "SELECT id || '|' || issuer FROM sso_connections ORDER BY id",
            "SELECT id || '|' || action FROM audit_events ORDER BY id",
            "SELECT scope || '|' || request_id FROM idempotency_keys ORDER BY scope, request_id",
        ];
        let mut out = String::new();
        for q in queries {
            for row in sqlx::query(q).fetch_all(&self.db.pool).await.expect(q) {
                out.push_str(&row.try_get::<String, _>(0).expect("text"));
                out.push('\n');
            }
            out.push_str("--\n");
        }
        out
    }

    /// `GET /metrics` over plain HTTP/1.1.
    pub async fn scrape_metrics(&self) -> String {
        http_get(self.metrics_addr.expect("metrics_addr was set"), "/metrics").await
    }

    /// A token service client with a fixed `authorization` header (or none).
    pub fn tokens_with(&self, header: Option<&str>) -> TokenClient {
        let value = header.map(|h| MetadataValue::try_from(h).expect("header text"));
        TokenServiceClient::with_interceptor(self.channel.clone(), Auth(value))
    }

    /// Stops the server the way SIGTERM does and waits for it.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server stops cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// `GET path` over plain HTTP/1.1; asserts a 200 and returns the whole response (head and body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("HTTP port");
    let request = format!("GET {path} HTTP/1.1\r\nHost: lanyard\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// A token service client with a fixed `authorization` header.
pub type TokenClient = TokenServiceClient<InterceptedService<Channel, Auth>>;

/// An invitation client with a fixed `authorization` header.
pub type InvitationClient = InvitationServiceClient<InterceptedService<Channel, Auth>>;

/// Finds the registration token in an email: the last segment of the default link
/// (`<issuer>/invite/<token>`) or a configured link's `token=` parameter, undoing the
/// quoted-printable soft line breaks and `=3D` a mail transfer encoding may add.
pub fn token_in_email(text: &str) -> Option<String> {
    let joined = text.replace("=\r\n", "").replace("=\n", "").replace("=3D", "=");
    let start = match joined.find("/invite/") {
        Some(at) => at + "/invite/".len(),
        None => joined.find("token=")? + "token=".len(),
    };
    let token: String =
        joined[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect();
    (token.len() >= 43).then_some(token)
}

/// A slug no other test uses.
pub fn unique_slug() -> String {
    format!("org-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Asserts a gRPC error with this code and `ErrorInfo` reason.
#[track_caller]
pub fn assert_error<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: tonic::Code,
    reason: &str,
) -> tonic::Status {
    let status = result.expect_err("the call should fail");
    assert_eq!(status.code(), code, "unexpected code for {status:?}");
    assert_eq!(lanyard_core::status::reason_of(&status).as_deref(), Some(reason), "unexpected reason for {status:?}");
    status
}

pub use lanyard_testkit::backend_tests;

/// A migrated tenancy store on a fresh database, without a server (for the storage conformance
/// suite). Keep the databases alive for as long as the store is used.
pub async fn fresh_store(backend: Backend) -> (lanyard_tenancy::TenancyStore, TestDb) {
    init_logs();
    let databases = TestDb::new(backend).await;
    let db = Database::connect(&DatabaseConfig { max_connections: 10, ..databases.config("tenancy") })
        .await
        .expect("connects");
    let store = lanyard_tenancy::TenancyStore::new(db);
    store.migrate().await.expect("migrates");
    (store, databases)
}

/// The Redis server tests use (`LANYARD_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`).
pub fn redis_url() -> String {
    std::env::var("LANYARD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A TCP proxy on loopback in front of another address, which a test can cut (refuse new
/// connections and drop open ones) and restore, to simulate the server behind it going away.
pub struct TcpProxy {
    /// Where clients connect.
    pub addr: std::net::SocketAddr,
    refusing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: std::sync::Arc<std::sync::Mutex<tokio::task::JoinSet<()>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Forwards every connection to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("proxy port");
        let addr = listener.local_addr().expect("proxy address");
        let tasks = std::sync::Arc::new(std::sync::Mutex::new(tokio::task::JoinSet::new()));
        let refusing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (spawn_into, refuse) = (tasks.clone(), refusing.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if refuse.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let upstream = upstream.clone();
                spawn_into.lock().expect("proxy tasks").spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self { addr, refusing, tasks, accept }
    }

    /// Drops every open connection and closes new ones at once, until [`TcpProxy::restore`].
    pub fn cut(&self) {
        self.refusing.store(true, std::sync::atomic::Ordering::SeqCst);
        self.tasks.lock().expect("proxy tasks").abort_all();
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.refusing.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
