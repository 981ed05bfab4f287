//! Database access shared by the services: one connection pool per service on Postgres (its own
//! schema) or SQLite (its own file), through sqlx's `Any` driver so each store is written once;
//! the backend-specific parts (connection setup, migrations, error codes) live here.

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::AnyConnection;
use sqlx::{AnyPool, ConnectOptions, Connection, Executor};

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
            // Two services starting at once may race to create it; the loser sees it exist.
            if let Err(e) = conn.execute(format!("CREATE SCHEMA IF NOT EXISTS {schema}").as_str()).await {
                if classify(backend, &e) != DbErrorKind::UniqueViolation {
                    return Err(e);
                }
            }
            conn.close().await?;
        }
        if backend == Backend::Sqlite {
            private_sqlite_files(&config.url)?;
        }
        let pool = AnyPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(Duration::from_secs(30))
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

    /// Runs the service's migrations (inside its own schema on Postgres).
    pub async fn migrate(&self, migrations: &Migrator) -> Result<(), sqlx::migrate::MigrateError> {
        migrations.run(&self.pool).await
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
    crate::fs::open_private(db, std::fs::OpenOptions::new().write(true).create(true))?;
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
            Self::Other => "other",
        }
    }

    /// Counts one error of this kind in `lanyard_database_errors_total{service, kind}`.
    pub fn count(self, service: &'static str) {
        metrics::counter!("lanyard_database_errors_total", "service" => service, "kind" => self.label()).increment(1);
    }
}

/// Classifies an error by the backend's own error codes.
pub fn classify(backend: Backend, error: &sqlx::Error) -> DbErrorKind {
    let Some(db) = error.as_database_error() else {
        return match error {
            sqlx::Error::PoolTimedOut => DbErrorKind::Retryable,
            _ => DbErrorKind::Other,
        };
    };
    let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
    match backend {
        Backend::Postgres => classify_postgres(&code),
        Backend::Sqlite => classify_sqlite(&code),
    }
}

fn classify_postgres(sqlstate: &str) -> DbErrorKind {
    match sqlstate {
        "23505" => DbErrorKind::UniqueViolation,
        "23503" => DbErrorKind::ForeignKeyViolation,
        "40001" | "40P01" | "55P03" => DbErrorKind::Retryable,
        _ => DbErrorKind::Other,
    }
}

fn classify_sqlite(extended_code: &str) -> DbErrorKind {
    match extended_code {
        // SQLITE_CONSTRAINT_UNIQUE, SQLITE_CONSTRAINT_PRIMARYKEY
        "2067" | "1555" => DbErrorKind::UniqueViolation,
        // SQLITE_CONSTRAINT_FOREIGNKEY
        "787" => DbErrorKind::ForeignKeyViolation,
        // SQLITE_BUSY, SQLITE_LOCKED and their extended forms (BUSY_SNAPSHOT = 517, ...)
        "5" | "6" | "261" | "262" | "517" | "773" => DbErrorKind::Retryable,
        _ => DbErrorKind::Other,
    }
}

/// An error that may be worth retrying as a whole transaction.
pub trait Retryable {
    /// Whether a fresh attempt may succeed.
    fn is_retryable(&self) -> bool;
}

/// How many times a transaction is attempted before its error is returned.
pub const MAX_ATTEMPTS: u32 = 8;

/// Runs `attempt` until it succeeds, fails for good, or [`MAX_ATTEMPTS`] are spent, backing off
/// with jitter between attempts. The one place where lost races are retried.
pub async fn retry<T, E, F, Fut>(mut attempt: F) -> Result<T, E>
where
    E: Retryable,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Err(e) if e.is_retryable() && tries < MAX_ATTEMPTS => {
                let base = 5u64 << tries.min(6);
                let jitter = rand::random::<u64>() % base;
                tracing::debug!(tries, "retrying a transaction that lost a race");
                tokio::time::sleep(Duration::from_millis(base + jitter)).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_codes() {
        assert_eq!(classify_postgres("23505"), DbErrorKind::UniqueViolation);
        assert_eq!(classify_postgres("40001"), DbErrorKind::Retryable);
        assert_eq!(classify_sqlite("2067"), DbErrorKind::UniqueViolation);
        assert_eq!(classify_sqlite("517"), DbErrorKind::Retryable);
        assert_eq!(classify_sqlite("1"), DbErrorKind::Other);
        assert_eq!(Backend::from_url("postgres://x/y"), Some(Backend::Postgres));
        assert_eq!(Backend::from_url("sqlite://x.db"), Some(Backend::Sqlite));
        assert_eq!(Backend::from_url("mysql://x"), None);
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
        assert_eq!(classify(db.backend, &err), DbErrorKind::UniqueViolation);
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
