//! Database access shared by the services: one connection pool per service on Postgres (its own
//! schema) or SQLite (its own file), through sqlx's `Any` driver so each store is written once;
//! the backend-specific parts (connection setup, migrations, error codes) live here.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::AnyConnection;
use sqlx::{AnyPool, ConnectOptions, Connection, Executor};

/// A transaction on a service's database.
pub type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// The transaction one attempt of [`Database::transaction`] works in. Its second lifetime is the
/// caller's: that the transaction's borrow cannot outlive it is what lets the work borrow the
/// caller's values (the bound `std::thread::scope` relies on too).
pub struct Open<'t, 'env> {
    /// The transaction.
    pub tx: &'t mut Tx,
    env: PhantomData<&'t &'env ()>,
}

/// The future of one attempt of [`Database::transaction`].
pub type Work<'t, T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 't>>;

/// Which database a pool talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL: production.
    Postgres,
    /// SQLite: the embedded default.
    Sqlite,
}

impl Backend {
    /// Detects the backend from a URL.
    pub fn from_url(url: &str) -> Option<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else {
            None
        }
    }
}

/// A service's connection pool and its backend.
#[derive(Clone, Debug)]
pub struct Database {
    /// The pool.
    pub pool: AnyPool,
    /// The backend behind it.
    pub backend: Backend,
}

/// Where a service keeps its tables.
#[derive(Clone, Debug)]
pub struct DatabaseConfig {
    /// `postgres://...` or `sqlite://path?mode=rwc`.
    pub url: String,
    /// The Postgres schema the service owns (ignored on SQLite, where the file is the service's).
    pub schema: String,
    /// Pool size.
    pub max_connections: u32,
}

/// How long a call waits for a connection (a new one included) before it fails `UNAVAILABLE`:
/// during a database outage callers hear so within this, and the transaction is not run again
/// (the pool already waited), so a call never hangs for the client's whole deadline.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a SQLite writer waits for the write lock before giving up.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 30_000;

impl Database {
    /// Connects; on Postgres, creates the service's schema first and confines every connection to it.
    pub async fn connect(config: &DatabaseConfig) -> Result<Self, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(&config.url)
            .ok_or_else(|| sqlx::Error::Configuration("database URL must start with postgres:// or sqlite:".into()))?;
        let schema = config.schema.clone();
        if !schema.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') || schema.is_empty() {
            return Err(sqlx::Error::Configuration(format!("invalid schema name {schema:?}").into()));
        }
        if backend == Backend::Postgres {
            let mut conn = AnyConnection::connect(&config.url).await?;
            // Only when it is missing: a service's runtime role may not create schemas (the
            // migration Job's role does), and `CREATE SCHEMA IF NOT EXISTS` checks that privilege
            // even when the schema exists.
            let exists = sqlx::query("SELECT 1 FROM pg_namespace WHERE nspname = $1")
                .bind(schema.as_str())
                .fetch_optional(&mut conn)
                .await?
                .is_some();
            if !exists {
                // Two services starting at once may race to create it; the loser sees it exist.
                if let Err(e) = conn.execute(format!("CREATE SCHEMA IF NOT EXISTS {schema}").as_str()).await {
                    if classify(&e) != DbErrorKind::UniqueViolation {
                        return Err(e);
                    }
                }
            }
            conn.close().await?;
        }
        if backend == Backend::Sqlite {
            private_sqlite_files(&config.url)?;
        }
        let pool = AnyPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(move |conn, _meta| {
                let schema = schema.clone();
                Box::pin(async move {
                    match backend {
                        Backend::Postgres => {
                            conn.execute(format!("SET search_path TO {schema}").as_str()).await?;
                        }
                        Backend::Sqlite => {
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            conn.execute(format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}").as_str()).await?;
                            conn.execute("PRAGMA foreign_keys = ON").await?;
                            conn.execute("PRAGMA synchronous = NORMAL").await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect(&config.url)
            .await?;
        Ok(Self { pool, backend })
    }

    /// Runs the service's migrations (inside its own schema on Postgres). When every one is
    /// already applied, as the migration Job left them, it only reads: a service whose runtime
    /// role may not change the schema starts, and one that needs a migration fails to.
    pub async fn migrate(&self, migrations: &Migrator) -> Result<(), sqlx::migrate::MigrateError> {
        if self.is_migrated(migrations).await {
            return Ok(());
        }
        migrations.run(&self.pool).await
    }

    /// Whether every migration is applied with the checksum it has here (no table yet: no).
    async fn is_migrated(&self, migrations: &Migrator) -> bool {
        let Ok(applied) =
            sqlx::query_as::<_, (i64, Vec<u8>)>("SELECT version, checksum FROM _sqlx_migrations WHERE success = TRUE")
                .fetch_all(&self.pool)
                .await
        else {
            return false;
        };
        migrations
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
            .all(|m| applied.iter().any(|(v, sum)| *v == m.version && sum.as_slice() == &*m.checksum))
    }

    /// Whether the Postgres server of `url` accepts a connection and answers a query, without a
    /// pool or a schema: what start-up waits for. SQLite files are always there.
    pub async fn check_reachable(url: &str) -> Result<(), sqlx::Error> {
        if Backend::from_url(url) != Some(Backend::Postgres) {
            return Ok(());
        }
        sqlx::any::install_default_drivers();
        let mut conn = AnyConnection::connect(url).await?;
        conn.execute("SELECT 1").await?;
        conn.close().await
    }

    /// Runs `work` in one transaction: committed when it returns `Ok`, rolled back when it
    /// returns an error, and run again from the start (up to [`MAX_ATTEMPTS`] times, backing off
    /// with jitter) when the database says it lost a race. Errors convert with `?`: database
    /// errors become the service's error through its `From<sqlx::Error>`.
    ///
    /// `work` may run more than once, so it must not consume what it captures.
    pub async fn transaction<'env, T, E, F>(&self, mut work: F) -> Result<T, E>
    where
        E: From<sqlx::Error> + Retryable,
        F: for<'t> FnMut(Open<'t, 'env>) -> Work<'t, T, E>,
    {
        let mut tries = 0;
        loop {
            tries += 1;
            let attempt = async {
                let mut tx = self.pool.begin().await?;
                let value = work(Open { tx: &mut tx, env: PhantomData }).await?;
                tx.commit().await?;
                Ok::<T, E>(value)
            };
            match attempt.await {
                Err(e) if e.is_retryable() && tries < MAX_ATTEMPTS => back_off(tries).await,
                other => return other,
            }
        }
    }

    /// Answers a trivial query (for health checks).
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ())
    }
}

/// Makes the files of a SQLite database Lanyard creates (`mode=rwc`) private. SQLite gives its
/// `-wal`, `-shm` and journal files the database file's mode, so creating the database file
/// private before SQLite does is what keeps them all private whatever the umask; those an older
/// version left looser are tightened. Read-only, read-write and in-memory URLs open databases
/// Lanyard does not own, and are left alone.
fn private_sqlite_files(url: &str) -> Result<(), sqlx::Error> {
    let options = SqliteConnectOptions::from_str(url)?;
    let creates = options.to_url_lossy().query_pairs().any(|(k, v)| k == "mode" && v == "rwc");
    if !creates {
        return Ok(());
    }
    let db = options.get_filename();
    // A new file is created private. An existing one is tightened by its path, never opened:
    // closing any descriptor of a database file drops every POSIX lock this process holds on it,
    // so opening it beside a live pool (a second connect in one process) would let another
    // process write under this one's readers (lost writes, short reads).
    match crate::fs::open_private(db, std::fs::OpenOptions::new().write(true).create_new(true)) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => crate::fs::make_private(db)?,
        Err(e) => return Err(e.into()),
    }
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut sibling = db.as_os_str().to_owned();
        sibling.push(suffix);
        crate::fs::make_private(std::path::Path::new(&sibling))?;
    }
    Ok(())
}

/// What a database error means to the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbErrorKind {
    /// A unique constraint was violated.
    UniqueViolation,
    /// A foreign key was violated.
    ForeignKeyViolation,
    /// The transaction lost a race (serialization failure, deadlock, busy): retry it.
    Retryable,
    /// The database cannot be reached (no connection within [`ACQUIRE_TIMEOUT`], a broken
    /// connection): answered `UNAVAILABLE` at once, not retried.
    Unavailable,
    /// Anything else.
    Other,
}

impl DbErrorKind {
    /// The metric label of this kind.
    pub fn label(self) -> &'static str {
        match self {
            Self::UniqueViolation => "unique_violation",
            Self::ForeignKeyViolation => "foreign_key_violation",
            Self::Retryable => "retryable",
            Self::Unavailable => "unavailable",
            Self::Other => "other",
        }
    }

    /// Counts one error of this kind in `lanyard_database_errors_total{service, kind}`.
    pub fn count(self, service: &'static str) {
        metrics::counter!("lanyard_database_errors_total", "service" => service, "kind" => self.label()).increment(1);
    }
}

/// Classifies an error by the database's own error code. Postgres answers with a five-character
/// SQLSTATE and SQLite with its numeric extended result code (at most four digits), so one table
/// serves both without knowing which backend produced the error.
pub fn classify(error: &sqlx::Error) -> DbErrorKind {
    let Some(db) = error.as_database_error() else {
        return match error {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                DbErrorKind::Unavailable
            }
            _ => DbErrorKind::Other,
        };
    };
    classify_code(&db.code().unwrap_or_default())
}

fn classify_code(code: &str) -> DbErrorKind {
    match code {
        // Postgres: unique_violation, foreign_key_violation, serialization_failure,
        // deadlock_detected, lock_not_available.
        "23505" => DbErrorKind::UniqueViolation,
        "23503" => DbErrorKind::ForeignKeyViolation,
        "40001" | "40P01" | "55P03" => DbErrorKind::Retryable,
        // SQLite: SQLITE_CONSTRAINT_UNIQUE and _PRIMARYKEY, SQLITE_CONSTRAINT_FOREIGNKEY, and
        // SQLITE_BUSY, SQLITE_LOCKED with their extended forms (BUSY_SNAPSHOT = 517, ...).
        "2067" | "1555" => DbErrorKind::UniqueViolation,
        "787" => DbErrorKind::ForeignKeyViolation,
        "5" | "6" | "261" | "262" | "517" | "773" => DbErrorKind::Retryable,
        _ => DbErrorKind::Other,
    }
}

/// The API form of a database error, the same for every service: unreachable is
/// `DATABASE_UNAVAILABLE`, a race that survived the retries `DATABASE_BUSY` (both `UNAVAILABLE`,
/// worth a retry by the caller), anything else `INTERNAL` with no detail.
pub fn problem(error: &sqlx::Error) -> crate::status::Problem {
    use crate::status::Problem;
    use tonic::Code;
    match classify(error) {
        DbErrorKind::Unavailable => {
            Problem::new(Code::Unavailable, "DATABASE_UNAVAILABLE", "the database cannot be reached; retry")
        }
        DbErrorKind::Retryable => Problem::new(Code::Unavailable, "DATABASE_BUSY", "the database is busy; retry"),
        DbErrorKind::UniqueViolation | DbErrorKind::ForeignKeyViolation | DbErrorKind::Other => {
            Problem::new(Code::Internal, "INTERNAL", "internal error")
        }
    }
}

/// An error that may be worth retrying as a whole transaction.
pub trait Retryable {
    /// Whether a fresh attempt may succeed.
    fn is_retryable(&self) -> bool;
}

/// How many times a transaction is attempted before its error is returned.
pub const MAX_ATTEMPTS: u32 = 8;

/// Waits before attempt `tries + 1`: exponential with jitter, so racing writers spread out.
async fn back_off(tries: u32) {
    let base = 5u64 << tries.min(6);
    let jitter = rand::random::<u64>() % base;
    tracing::debug!(tries, "retrying a transaction that lost a race");
    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_codes() {
        assert_eq!(classify_code("23505"), DbErrorKind::UniqueViolation);
        assert_eq!(classify_code("40001"), DbErrorKind::Retryable);
        assert_eq!(classify_code("2067"), DbErrorKind::UniqueViolation);
        assert_eq!(classify_code("517"), DbErrorKind::Retryable);
        assert_eq!(classify_code("1"), DbErrorKind::Other);
        assert_eq!(Backend::from_url("postgres://x/y"), Some(Backend::Postgres));
        assert_eq!(Backend::from_url("sqlite://x.db"), Some(Backend::Sqlite));
        assert_eq!(Backend::from_url("mysql://x"), None);
    }

    /// A database that accepts connections and never answers: a transaction fails once, as
    /// unavailable, after one wait for a connection — it is not run again for every attempt.
    #[tokio::test]
    async fn an_unreachable_database_fails_once_as_unavailable() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(socket);
            }
        });
        sqlx::any::install_default_drivers();
        let url = format!("postgres://nobody@{addr}/nothing");
        let pool =
            AnyPoolOptions::new().max_connections(1).acquire_timeout(ACQUIRE_TIMEOUT).connect_lazy(&url).unwrap();
        let db = Database { pool, backend: Backend::Postgres };
        let ran = std::sync::atomic::AtomicUsize::new(0);
        let result: Result<(), Failure> = db
            .transaction(|_open| {
                ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Box::pin(async { Ok(()) })
            })
            .await;
        let error = result.unwrap_err();
        assert_eq!(classify(&error.0), DbErrorKind::Unavailable, "{:?}", error.0);
        assert_eq!(problem(&error.0).reason(), "DATABASE_UNAVAILABLE");
        assert_eq!(problem(&error.0).code(), tonic::Code::Unavailable);
        assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 0, "no work without a transaction");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1, "one connection attempt, no retries");
        silent.abort();
    }

    #[derive(Debug)]
    struct Failure(sqlx::Error);

    impl From<sqlx::Error> for Failure {
        fn from(e: sqlx::Error) -> Self {
            Self(e)
        }
    }

    impl Retryable for Failure {
        fn is_retryable(&self) -> bool {
            classify(&self.0) == DbErrorKind::Retryable
        }
    }

    #[tokio::test]
    async fn sqlite_connects_and_reports_unique_violations() {
        let dir = std::env::temp_dir().join(format!("lanyard-db-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("t.db").display());
        let db = Database::connect(&DatabaseConfig { url, schema: "t".into(), max_connections: 2 }).await.unwrap();
        db.ping().await.unwrap();
        sqlx::query("CREATE TABLE t (k TEXT PRIMARY KEY)").execute(&db.pool).await.unwrap();
        sqlx::query("INSERT INTO t VALUES ($1)").bind("a").execute(&db.pool).await.unwrap();
        let err = sqlx::query("INSERT INTO t VALUES ($1)").bind("a").execute(&db.pool).await.unwrap_err();
        assert_eq!(classify(&err), DbErrorKind::UniqueViolation);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn sqlite_files_are_private_and_loose_ones_are_tightened() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = std::env::temp_dir().join(format!("lanyard-db-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let (new, old) = (dir.join("new.db"), dir.join("old.db"));
        // An empty file is an empty SQLite database, as an older version might have left it.
        std::fs::write(&old, "").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o666)).unwrap();
        for path in [&new, &old] {
            let url = format!("sqlite://{}?mode=rwc", path.display());
            let db = Database::connect(&DatabaseConfig { url, schema: "t".into(), max_connections: 1 }).await.unwrap();
            // A write, so the WAL and its index exist while the pool is open.
            sqlx::query("CREATE TABLE t (k TEXT)").execute(&db.pool).await.unwrap();
            for suffix in ["", "-wal", "-shm"] {
                let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
                assert_eq!(mode(&file), 0o600, "{}", file.display());
            }
            db.pool.close().await;
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
