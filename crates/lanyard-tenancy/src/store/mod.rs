//! Tenancy storage: every operation is one transaction on Postgres or SQLite (through sqlx's
//! `Any` driver, so each query is written once). Seat accounting is atomic in the database:
//! each seat-changing transaction begins by bumping the organization's `seat_epoch`, which locks
//! the organization row on Postgres and takes the write lock on SQLite, so counting the seats in
//! use and taking one can never interleave with another transaction doing the same.

use std::collections::BTreeMap;

use lanyard_core::crypto::SecretBox;
use lanyard_core::db::{Database, DbErrorKind};
use lanyard_core::page::Page;
use lanyard_core::{
    ConnectionId, DisplayName, Domain, Email, EventId, OrgSlug, OrganizationId, Permission, ReservationId, RoleName,
    Timestamp, UserId,
};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::domain::*;
use crate::error::TenancyError;
use crate::service::MAX_DOMAINS;

mod audit_log;
mod connections;
mod identities;
mod members;
mod organizations;
mod roles;
mod rows;
mod seats;

use audit_log::audit;
use rows::*;

/// Random bytes of a domain's DNS challenge token.
const DOMAIN_CHALLENGE_BYTES: usize = 32;

type Result<T, E = TenancyError> = std::result::Result<T, E>;

/// Every column tenancy seals with the key-encryption key (its idempotency replies hold no secret
/// and are stored in the clear), for `lanyard keys reencrypt`.
pub const SEALED_COLUMNS: &[lanyard_core::rekey::SealedColumn] = &[connections::SEALED_SECRETS];
use lanyard_core::db::{Open, Tx, Work};

/// The most custom roles one organization may define.
pub const MAX_CUSTOM_ROLES: u64 = 100;

/// Seat usage as read from the database, with what a cache needs to keep it true.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeatSnapshot {
    /// The usage.
    pub usage: SeatUsage,
    /// The organization's seat epoch when it was read.
    pub epoch: i64,
    /// When it was read.
    pub read_at: Timestamp,
    /// When the next held reservation expires (and the usage changes with no write), if any.
    pub next_expiry: Option<Timestamp>,
}

/// Who made a change and when, for the audit log.
#[derive(Clone, Debug)]
pub struct Change {
    /// `operator:<key>`, `service:<key>` or `user:<id>`.
    pub actor: String,
    /// When it happens.
    pub at: Timestamp,
}

impl Change {
    /// A change by `actor`, now.
    pub fn by(actor: impl Into<String>) -> Self {
        Self { actor: actor.into(), at: Timestamp::now() }
    }
}

/// The tenancy tables.
#[derive(Clone, Debug)]
pub struct TenancyStore {
    db: Database,
}

/// The migrations. They are written in the SQL both backends run alike (TEXT, BIGINT, CHECK,
/// partial and composite indexes), so one set serves Postgres and SQLite; a change that needs
/// backend-specific SQL splits this into one set per backend.
pub static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The organization row as locked at the start of a seat-changing transaction.
struct OrgLock {
    id: OrganizationId,
    seat_limit: u32,
    status: OrgStatus,
    owner: Option<UserId>,
}

impl OrgLock {
    fn require_active(&self) -> Result<()> {
        match self.status {
            OrgStatus::Active => Ok(()),
            OrgStatus::Suspended => Err(TenancyError::OrganizationSuspended),
            OrgStatus::Deleted => Err(TenancyError::OrganizationDeleted),
        }
    }

    fn require_not_deleted(&self) -> Result<()> {
        if self.status == OrgStatus::Deleted {
            Err(TenancyError::OrganizationDeleted)
        } else {
            Ok(())
        }
    }
}

fn parse_id<T: std::str::FromStr>(s: &str) -> Result<T> {
    s.parse().map_err(|_| TenancyError::Internal(format!("stored id {s:?} is not a UUID")))
}

fn json_map(s: &str) -> BTreeMap<String, String> {
    serde_json::from_str(s).unwrap_or_default()
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("maps and lists of strings serialize")
}

fn count(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

impl TenancyStore {
    /// Wraps a connected database (migrated separately).
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Runs the tenancy migrations for this backend.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        self.db.migrate(&MIGRATIONS).await
    }

    /// The database, for health checks.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// One transaction (see [`Database::transaction`]): `?` turns database errors into TenancyErrors.
    async fn transaction<'env, T>(
        &self,
        work: impl for<'t> FnMut(Open<'t, 'env>) -> Work<'t, T, TenancyError>,
    ) -> Result<T> {
        self.db.transaction(work).await
    }

    /// Maps a unique violation to `conflict`, anything else to a database error.
    fn unique_or(&self, conflict: TenancyError) -> impl FnOnce(sqlx::Error) -> TenancyError + '_ {
        move |e| {
            if lanyard_core::db::classify(&e) == DbErrorKind::UniqueViolation {
                conflict
            } else {
                TenancyError::from(e)
            }
        }
    }
}
