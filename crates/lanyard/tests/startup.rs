//! Start-up and readiness against Postgres and Redis that are not there yet, or go away: the
//! process waits for them with backoff instead of exiting, gives up with a clear error after its
//! budget, and readiness follows Postgres only (Redis's state is a metric).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lanyard::app::{Application, ServiceName};
use lanyard::settings::{MailTransportKind, Settings};
use secrecy::SecretString;
use sqlx::{Connection, Executor};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const POSTGRES: &str = "127.0.0.1:5432";
const REDIS: &str = "127.0.0.1:6379";

/// A TCP forwarder standing between Lanyard and a server: it drops the first `refuse_first`
/// connections (the server "is not up yet"), forwards the others, and can be closed (the server
/// "went away": open connections are cut and new ones dropped).
struct Gate {
    addr: SocketAddr,
    refused: Arc<AtomicUsize>,
    closed: watch::Sender<bool>,
}

impl Gate {
    async fn start(upstream: &'static str, refuse_first: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let refused = Arc::new(AtomicUsize::new(0));
        let (closed, closed_rx) = watch::channel(false);
        let counter = refused.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                if *closed_rx.borrow() || counter.load(Ordering::SeqCst) < refuse_first {
                    counter.fetch_add(1, Ordering::SeqCst);
                    drop(inbound);
                    continue;
                }
                let mut closed = closed_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = closed.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        Self { addr, refused, closed }
    }

    fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    fn close(&self) {
        let _ = self.closed.send(true);
    }
}

async fn reachable(addr: &str) -> bool {
    TcpStream::connect(addr).await.is_ok()
}

/// Whether the servers these tests need answer; under `CI=true` they must.
async fn servers_available(test: &str) -> bool {
    if reachable(POSTGRES).await && reachable(REDIS).await {
        return true;
    }
    assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "CI=true and Postgres or Redis is unreachable");
    eprintln!("SKIPPED {test}: no Postgres at {POSTGRES} or no Redis at {REDIS}");
    false
}

struct FreshDb(String);

impl FreshDb {
    async fn create() -> Self {
        let name = format!("lanyard_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&format!("postgres://postgres@{POSTGRES}/postgres")).await.unwrap();
        conn.execute(format!("CREATE DATABASE {name}").as_str()).await.unwrap();
        let _ = conn.close().await;
        Self(name)
    }
}

impl Drop for FreshDb {
    fn drop(&mut self) {
        let name = self.0.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                if let Ok(mut conn) =
                    sqlx::PgConnection::connect(&format!("postgres://postgres@{POSTGRES}/postgres")).await
                {
                    let _ = conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await;
                }
            });
        })
        .join();
    }
}

fn production_settings(postgres: SocketAddr, database: &str, redis: SocketAddr, data: &std::path::Path) -> Settings {
    Settings {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: Some("127.0.0.1:0".parse().unwrap()),
        metrics_addr: Some("127.0.0.1:0".parse().unwrap()),
        database_url: Some(SecretString::from(format!("postgres://postgres@{postgres}/{database}"))),
        redis_url: Some(SecretString::from(format!("redis://{redis}/0"))),
        redis_key_prefix: format!("lanyard-test-{}", uuid::Uuid::new_v4().simple()),
        operator_keys: vec![SecretString::from("startup-test-operator-key")],
        service_keys: vec![SecretString::from("startup-test-service-key-")],
        encryption_key: Some(SecretString::from("XD7vZYel0VBwKRqUzj2bcw35Zsddy9z1KPsmZiCHnlU=")),
        mail_transport: Some(MailTransportKind::Files),
        data_dir: data.to_path_buf(),
        startup_retry_seconds: 120,
        ..Settings::default()
    }
}

async fn status(addr: SocketAddr, service: &str) -> ServingStatus {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut client = HealthClient::new(channel);
    let reply = client.check(HealthCheckRequest { service: service.to_owned() }).await.unwrap().into_inner();
    ServingStatus::try_from(reply.status).unwrap()
}

async fn metrics(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").await.unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn start_up_waits_for_postgres_and_redis_that_answer_late() {
    if !servers_available("start_up_waits_for_postgres_and_redis_that_answer_late").await {
        return;
    }
    let db = FreshDb::create().await;
    // Each dependency turns the first attempts away, as a server still starting would.
    let postgres = Gate::start(POSTGRES, 3).await;
    let redis = Gate::start(REDIS, 3).await;
    let data = tempfile::tempdir().unwrap();
    let settings = production_settings(postgres.addr, &db.0, redis.addr, data.path());
    let app = Application::build(settings, &ServiceName::ALL).await.expect("start-up waits instead of failing");
    assert!(postgres.refused() >= 3 && redis.refused() >= 3, "both were retried");
    let addr = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    for service in ServiceName::ALL {
        assert_eq!(status(addr, service.grpc_name()).await, ServingStatus::Serving);
    }
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn start_up_gives_up_after_its_budget_with_a_clear_error() {
    // Nothing is ever accepted: the error names the dependency and the setting that bounds the wait.
    let postgres = Gate::start(POSTGRES, usize::MAX).await;
    let data = tempfile::tempdir().unwrap();
    let mut settings = production_settings(postgres.addr, "never", postgres.addr, data.path());
    settings.startup_retry_seconds = 1;
    let error = Application::build(settings.clone(), &[ServiceName::Tenancy]).await.err().expect("gives up");
    let text = format!("{error:#}");
    assert!(text.contains("Postgres (LANYARD_DATABASE_URL) did not answer within 1s"), "{text}");
    assert!(text.contains("LANYARD_STARTUP_RETRY_SECONDS"), "{text}");
    assert!(postgres.refused() >= 2, "it retried before giving up");
    assert!(!text.contains("postgres://"), "the URL (and any password in it) stays out: {text}");
    let migrate = lanyard::app::migrate(&settings, &[]).await.expect_err("migrate waits and gives up the same way");
    assert!(format!("{migrate:#}").contains("did not answer within 1s"));
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_follows_postgres_not_redis() {
    if !servers_available("readiness_follows_postgres_not_redis").await {
        return;
    }
    let db = FreshDb::create().await;
    let redis = Gate::start(REDIS, 0).await;
    let postgres: SocketAddr = POSTGRES.parse().unwrap();
    let data = tempfile::tempdir().unwrap();
    let settings = production_settings(postgres, &db.0, redis.addr, data.path());
    let app = Application::build(settings, &ServiceName::ALL).await.unwrap();
    let (addr, metrics_addr) = (app.local_addr(), app.metrics_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    redis.close();
    // The cache probe notices Redis is gone and says so as a metric...
    loop {
        if metrics(metrics_addr).await.lines().any(|l| l == "lanyard_redis_up 0") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // ... and every service stays in its Service's endpoints: calls still succeed without Redis.
    for service in ServiceName::ALL {
        assert_eq!(status(addr, service.grpc_name()).await, ServingStatus::Serving, "{service:?}");
    }
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// The two roles of deploy/README.md ("Database roles"), dropped when the guard is (declare it
/// before the database, so that the database goes first).
struct Roles {
    migrate: String,
    runtime: String,
}

impl Roles {
    async fn create(database: &str) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let (migrate, runtime) = (format!("lanyard_migrate_{id}"), format!("lanyard_app_{id}"));
        let admin = |db: &str| format!("postgres://postgres@{POSTGRES}/{db}");
        let mut conn = sqlx::PgConnection::connect(&admin("postgres")).await.unwrap();
        for sql in [
            format!("CREATE ROLE {migrate} LOGIN"),
            format!("CREATE ROLE {runtime} LOGIN"),
            format!("GRANT CONNECT, CREATE ON DATABASE {database} TO {migrate}"),
            format!("GRANT CONNECT ON DATABASE {database} TO {runtime}"),
        ] {
            conn.execute(sql.as_str()).await.unwrap();
        }
        let _ = conn.close().await;
        let mut conn = sqlx::PgConnection::connect(&admin(database)).await.unwrap();
        for sql in [
            "REVOKE ALL ON SCHEMA public FROM PUBLIC".to_owned(),
            format!("ALTER DEFAULT PRIVILEGES FOR ROLE {migrate} GRANT USAGE ON SCHEMAS TO {runtime}"),
            format!("ALTER DEFAULT PRIVILEGES FOR ROLE {migrate} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {runtime}"),
            format!("ALTER DEFAULT PRIVILEGES FOR ROLE {migrate} GRANT USAGE, SELECT ON SEQUENCES TO {runtime}"),
        ] {
            conn.execute(sql.as_str()).await.unwrap();
        }
        let _ = conn.close().await;
        Self { migrate, runtime }
    }
}

impl Drop for Roles {
    fn drop(&mut self) {
        let roles = [self.runtime.clone(), self.migrate.clone()];
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                if let Ok(mut conn) =
                    sqlx::PgConnection::connect(&format!("postgres://postgres@{POSTGRES}/postgres")).await
                {
                    for role in roles {
                        let _ = conn.execute(format!("DROP ROLE IF EXISTS {role}").as_str()).await;
                    }
                }
            });
        })
        .join();
    }
}

/// The services run with a role that may only read and write rows: after the migration role has
/// migrated, they start without any DDL; before, the runtime role cannot migrate and start-up fails.
#[tokio::test(flavor = "multi_thread")]
async fn services_start_with_a_runtime_role_once_the_migration_role_migrated() {
    if !servers_available("services_start_with_a_runtime_role_once_the_migration_role_migrated").await {
        return;
    }
    let (unmigrated_roles, migrated_roles);
    let (unmigrated, migrated) = (FreshDb::create().await, FreshDb::create().await);
    unmigrated_roles = Roles::create(&unmigrated.0).await;
    migrated_roles = Roles::create(&migrated.0).await;
    let postgres: SocketAddr = POSTGRES.parse().unwrap();
    let redis: SocketAddr = REDIS.parse().unwrap();
    let data = tempfile::tempdir().unwrap();
    let as_role = |db: &str, role: &str| {
        let mut s = production_settings(postgres, db, redis, data.path());
        s.database_url = Some(SecretString::from(format!("postgres://{role}@{postgres}/{db}")));
        s.startup_retry_seconds = 1;
        s
    };

    let refused = Application::build(as_role(&unmigrated.0, &unmigrated_roles.runtime), &[ServiceName::Tenancy]).await;
    let text = format!("{:#}", refused.err().expect("the runtime role cannot create the schema"));
    assert!(text.contains("permission denied"), "{text}");

    lanyard::app::migrate(&as_role(&migrated.0, &migrated_roles.migrate), &[])
        .await
        .expect("the migration role migrates");
    let app = Application::build(as_role(&migrated.0, &migrated_roles.runtime), &ServiceName::ALL)
        .await
        .expect("the runtime role starts every service on the migrated database");
    let addr = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    for service in ServiceName::ALL {
        assert_eq!(status(addr, service.grpc_name()).await, ServingStatus::Serving, "{service:?}");
    }
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
