//! Tenancy storage: every operation is one transaction on Postgres or SQLite (through sqlx's
//! `Any` driver, so each query is written once). Seat accounting is atomic in the database:
//! each seat-changing transaction begins by bumping the organization's `seat_epoch`, which locks
//! the organization row on Postgres and takes the write lock on SQLite, so counting the seats in
//! use and taking one can never interleave with another transaction doing the same.

use std::collections::BTreeMap;

use lanyard_core::crypto::SecretBox;
use lanyard_core::db::{retry, Backend, Database, DbErrorKind};
use lanyard_core::page::Page;
use lanyard_core::{
    ConnectionId, DisplayName, Domain, Email, EventId, OrgSlug, OrganizationId, Permission, ReservationId, RoleName,
    Timestamp, UserId,
};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::domain::*;
use crate::error::TenancyError;
use crate::service::MAX_DOMAINS;

/// Random bytes of a domain's DNS challenge token.
const DOMAIN_CHALLENGE_BYTES: usize = 32;

type Result<T, E = TenancyError> = std::result::Result<T, E>;
type Tx = Transaction<'static, Any>;

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

/// Retries a transaction that lost a race (see [`lanyard_core::db::retry`]).
async fn retrying<T, F, Fut>(attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    retry(attempt).await
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

    fn backend(&self) -> Backend {
        self.db.backend
    }

    fn err(&self) -> impl Fn(sqlx::Error) -> TenancyError {
        TenancyError::db(self.backend())
    }

    async fn begin(&self) -> Result<Tx> {
        self.db.pool.begin().await.map_err(self.err())
    }

    async fn commit(&self, tx: Tx) -> Result<()> {
        tx.commit().await.map_err(self.err())
    }

    /// Maps a unique violation to `conflict`, anything else to a database error.
    fn unique_or(&self, conflict: TenancyError) -> impl FnOnce(sqlx::Error) -> TenancyError + '_ {
        move |e| {
            if lanyard_core::db::classify(self.backend(), &e) == DbErrorKind::UniqueViolation {
                conflict
            } else {
                TenancyError::db(self.backend())(e)
            }
        }
    }

    // ----- organizations -------------------------------------------------------------------

    /// Creates an organization (and its owner's membership, when an owner email is given).
    pub async fn create_organization(&self, new: &NewOrganization, change: &Change) -> Result<Organization> {
        let id = OrganizationId::new();
        retrying(|| async move {
            let mut tx = self.begin().await?;
            sqlx::query(
                "INSERT INTO organizations (id, slug, display_name, seat_limit, metadata, status, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, 'active', $6, $6)",
            )
            .bind(id.to_string())
            .bind(new.slug.as_str())
            .bind(new.display_name.as_str())
            .bind(i64::from(new.seat_limit))
            .bind(to_json(&new.metadata))
            .bind(change.at.0)
            .execute(&mut *tx)
            .await
            .map_err(self.unique_or(TenancyError::SlugTaken))?;
            for domain in &new.allowed_domains {
                self.insert_domain(&mut tx, id, domain, change).await?;
            }
            let domains: Vec<&str> = new.allowed_domains.iter().map(|d| d.as_str()).collect();
            audit(&mut tx, self.backend(), id, change, "organization.created", &format!("organization:{id}"), &[
                ("slug", new.slug.to_string()),
                ("seat_limit", new.seat_limit.to_string()),
                ("allowed_domains", domains.join(",")),
            ])
            .await?;
            if let Some(email) = &new.owner_email {
                let lock = self.lock_org(&mut tx, id).await?;
                let (user_id, _) = self.upsert_user_by_email(&mut tx, email, "", change).await?;
                self.activate_membership(&mut tx, &lock, user_id, &[RoleName::owner()], &change.actor, change)
                    .await?;
            }
            self.commit(tx).await?;
            Ok(())
        })
        .await?;
        self.get_organization(id).await?.ok_or(TenancyError::OrganizationNotFound)
    }

    /// One organization by id.
    pub async fn get_organization(&self, id: OrganizationId) -> Result<Option<Organization>> {
        let row = sqlx::query(&format!("{ORG_SELECT} WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.db.pool)
            .await
            .map_err(self.err())?;
        self.org_with_domains(row).await
    }

    /// One organization by slug.
    pub async fn get_organization_by_slug(&self, slug: &OrgSlug) -> Result<Option<Organization>> {
        let row = sqlx::query(&format!("{ORG_SELECT} WHERE slug = $1"))
            .bind(slug.as_str())
            .fetch_optional(&self.db.pool)
            .await
            .map_err(self.err())?;
        self.org_with_domains(row).await
    }

    async fn org_with_domains(&self, row: Option<AnyRow>) -> Result<Option<Organization>> {
        let Some(row) = row else { return Ok(None) };
        let mut org = org_from_row(&row)?;
        self.fill_domains(&mut org).await?;
        Ok(Some(org))
    }

    async fn fill_domains(&self, org: &mut Organization) -> Result<()> {
        org.domains = self.domains_of(org.id).await?;
        org.allowed_domains = org.domains.iter().map(|d| d.name.clone()).collect();
        Ok(())
    }

    async fn domains_of(&self, id: OrganizationId) -> Result<Vec<OrgDomain>> {
        let rows = sqlx::query(&format!("{DOMAIN_SELECT} WHERE org_id = $1 ORDER BY domain"))
            .bind(id.to_string())
            .fetch_all(&self.db.pool)
            .await
            .map_err(self.err())?;
        rows.iter().map(domain_from_row).collect()
    }

    /// One domain of an organization, with its state and challenge.
    pub async fn domain(&self, id: OrganizationId, domain: &Domain) -> Result<Option<OrgDomain>> {
        let row = sqlx::query(&format!("{DOMAIN_SELECT} WHERE org_id = $1 AND domain = $2"))
            .bind(id.to_string())
            .bind(domain.as_str())
            .fetch_optional(&self.db.pool)
            .await
            .map_err(self.err())?;
        row.as_ref().map(domain_from_row).transpose()
    }

    /// The organization a domain is verified for, if any.
    async fn verified_owner(&self, conn: &mut sqlx::AnyConnection, domain: &Domain) -> Result<Option<OrganizationId>> {
        let row = sqlx::query("SELECT org_id FROM organization_domains WHERE domain = $1 AND state = 'verified'")
            .bind(domain.as_str())
            .fetch_optional(&mut *conn)
            .await
            .map_err(self.err())?;
        row.map(|r| parse_id(&stored(r.try_get::<String, _>("org_id"))?)).transpose()
    }

    async fn insert_domain(&self, tx: &mut Tx, id: OrganizationId, domain: &Domain, change: &Change) -> Result<()> {
        sqlx::query(
            "INSERT INTO organization_domains (org_id, domain, created_at, state, challenge)
             VALUES ($1, $2, $3, 'pending', $4)",
        )
        .bind(id.to_string())
        .bind(domain.as_str())
        .bind(change.at.0)
        .bind(lanyard_core::crypto::random_token(DOMAIN_CHALLENGE_BYTES))
        .execute(&mut **tx)
        .await
        .map_err(self.unique_or(TenancyError::DomainExists))?;
        Ok(())
    }

    /// A page of organizations in creation order.
    pub async fn list_organizations(&self, page: &Page, show_deleted: bool) -> Result<(Vec<Organization>, String)> {
        let rows = sqlx::query(&format!(
            "{ORG_SELECT} WHERE id > $1 AND ($2 = 1 OR status <> 'deleted') ORDER BY id LIMIT $3"
        ))
        .bind(page.after.clone().unwrap_or_default())
        .bind(i64::from(show_deleted))
        .bind(page.fetch_limit())
        .fetch_all(&self.db.pool)
        .await
        .map_err(self.err())?;
        let (rows, next) = page.finish(rows, |r| r.try_get::<String, _>("id").unwrap_or_default());
        let mut orgs = Vec::with_capacity(rows.len());
        for row in rows {
            let mut org = org_from_row(&row)?;
            self.fill_domains(&mut org).await?;
            orgs.push(org);
        }
        Ok((orgs, next))
    }

    /// Applies a patch; refuses a seat limit below the seats in use.
    pub async fn update_organization(
        &self,
        id: OrganizationId,
        patch: &OrganizationPatch,
        change: &Change,
    ) -> Result<Organization> {
        retrying(|| async move {
            let mut tx = self.begin().await?;
            let lock = self.lock_org(&mut tx, id).await?;
            lock.require_not_deleted()?;
            let mut details = Vec::new();
            if let Some(limit) = patch.seat_limit {
                let usage = self.count_seats(&mut tx, &lock, change.at).await?;
                if limit < usage.used() {
                    return Err(TenancyError::SeatLimitBelowUsage { requested: limit, used: usage.used() });
                }
                sqlx::query("UPDATE organizations SET seat_limit = $2 WHERE id = $1")
                    .bind(id.to_string())
                    .bind(i64::from(limit))
                    .execute(&mut *tx)
                    .await
                    .map_err(self.err())?;
                details.push(("seat_limit", limit.to_string()));
            }
            if let Some(name) = &patch.display_name {
                sqlx::query("UPDATE organizations SET display_name = $2 WHERE id = $1")
                    .bind(id.to_string())
                    .bind(name.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(self.err())?;
                details.push(("display_name", name.to_string()));
            }
            if let Some(metadata) = &patch.metadata {
                sqlx::query("UPDATE organizations SET metadata = $2 WHERE id = $1")
                    .bind(id.to_string())
                    .bind(to_json(metadata))
                    .execute(&mut *tx)
                    .await
                    .map_err(self.err())?;
                details.push(("metadata", "replaced".to_owned()));
            }
            if let Some(status) = patch.status {
                sqlx::query("UPDATE organizations SET status = $2 WHERE id = $1")
                    .bind(id.to_string())
                    .bind(status.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(self.err())?;
                details.push(("status", status.as_str().to_owned()));
            }
            sqlx::query("UPDATE organizations SET updated_at = $2 WHERE id = $1")
                .bind(id.to_string())
                .bind(change.at.0)
                .execute(&mut *tx)
                .await
                .map_err(self.err())?;
            audit(&mut tx, self.backend(), id, change, "organization.updated", &format!("organization:{id}"), &details)
                .await?;
            self.commit(tx).await
        })
        .await?;
        self.get_organization(id).await?.ok_or(TenancyError::OrganizationNotFound)
    }

    /// Soft-deletes an organization and frees its held seats. Deleting twice is not an error.
    pub async fn delete_organization(&self, id: OrganizationId, change: &Change) -> Result<Organization> {
        retrying(|| async move {
            let mut tx = self.begin().await?;
            let lock = self.lock_org(&mut tx, id).await?;
            if lock.status != OrgStatus::Deleted {
                sqlx::query(
                    "UPDATE organizations SET status = 'deleted', deleted_at = $2, updated_at = $2 WHERE id = $1",
                )
                .bind(id.to_string())
                .bind(change.at.0)
                .execute(&mut *tx)
                .await
                .map_err(self.err())?;
                sqlx::query(
                    "UPDATE seat_reservations SET state = 'released', updated_at = $2 WHERE org_id = $1 AND state = 'held'",
                )
                .bind(id.to_string())
                .bind(change.at.0)
                .execute(&mut *tx)
                .await
                .map_err(self.err())?;
                audit(&mut tx, self.backend(), id, change, "organization.deleted", &format!("organization:{id}"), &[])
                    .await?;
            }
            self.commit(tx).await
        })
        .await?;
        self.get_organization(id).await?.ok_or(TenancyError::OrganizationNotFound)
    }

    /// Adds a domain, pending. Adding a domain the organization already has changes nothing and
    /// returns it as it is (with its challenge), so a lost challenge can be fetched again. A domain
    /// verified for another organization may be added pending (for invitations) only when
    /// `allow_verified_elsewhere`.
    pub async fn add_domain(
        &self,
        id: OrganizationId,
        domain: &Domain,
        allow_verified_elsewhere: bool,
        change: &Change,
    ) -> Result<(Organization, OrgDomain)> {
        retrying(|| async move {
            let mut tx = self.begin().await?;
            self.lock_org(&mut tx, id).await?.require_not_deleted()?;
            let existing = sqlx::query("SELECT 1 AS one FROM organization_domains WHERE org_id = $1 AND domain = $2")
                .bind(id.to_string())
                .bind(domain.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(self.err())?;
            if existing.is_some() {
                return tx.rollback().await.map_err(self.err());
            }
            let owner = self.verified_owner(&mut tx, domain).await?;
            if owner.is_some_and(|o| o != id) && !allow_verified_elsewhere {
                return Err(TenancyError::DomainVerifiedElsewhere);
            }
            let count = sqlx::query("SELECT COUNT(*) AS n FROM organization_domains WHERE org_id = $1")
                .bind(id.to_string())
                .fetch_one(&mut *tx)
                .await
                .map_err(self.err())?;
            if stored(count.try_get::<i64, _>("n"))? >= MAX_DOMAINS as i64 {
                return Err(TenancyError::InvalidField {
                    field: "domain",
                    message: format!("at most {MAX_DOMAINS} domains per organization"),
                });
            }
            self.insert_domain(&mut tx, id, domain, change).await?;
            audit(
                &mut tx,
                self.backend(),
                id,
                change,
                "domain.added",
                &format!("domain:{domain}"),
                &[("state", DomainState::Pending.as_str().to_owned())],
            )
            .await?;
            self.commit(tx).await
        })
        .await?;
        let org = self.get_organization(id).await?.ok_or(TenancyError::OrganizationNotFound)?;
        let added = self.domain(id, domain).await?.ok_or(TenancyError::DomainNotFound)?;
        Ok((org, added))
    }

    /// Marks a pending domain verified. Verifying a verified domain again changes nothing; a
    /// domain verified for another organization is refused (the unique index decides races).
    pub async fn verify_domain(
        &self,
        id: OrganizationId,
        domain: &Domain,
        method: VerificationMethod,
        change: &Change,
    ) -> Result<(Organization, OrgDomain)> {
        retrying(|| async move {
            let mut tx = self.begin().await?;
            self.lock_org(&mut tx, id).await?.require_not_deleted()?;
            let row = sqlx::query("SELECT state FROM organization_domains WHERE org_id = $1 AND domain = $2")
                .bind(id.to_string())
                .bind(domain.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(self.err())?
                .ok_or(TenancyError::DomainNotFound)?;
            if stored(row.try_get::<String, _>("state"))? == DomainState::Verified.as_str() {
                return tx.rollback().await.map_err(self.err());
            }
            sqlx::query(
                "UPDATE organization_domains SET state = 'verified', verified_at = $3, verification_method = $4
                 WHERE org_id = $1 AND domain = $2",
            )
            .bind(id.to_string())
            .bind(domain.as_str())
            .bind(change.at.0)
            .bind(method.as_str())
            .execute(&mut *tx)
            .await
            .map_err(self.unique_or(TenancyError::DomainVerifiedElsewhere))?;
            audit(
                &mut tx,
                self.backend(),
                id,
                change,
                "domain.verified",
                &format!("domain:{domain}"),
                &[("method", method.as_str().to_owned())],
            )
            .await?;
            self.commit(tx).await
        })
        .await?;
        let org = self.get_organization(id).await?.ok_or(TenancyError::OrganizationNotFound)?;
        let verified = self.domain(id, domain).await?.ok_or(TenancyError::DomainNotFound)?;
        Ok((org, verified))
    }

    /// Removes an allowed domain.
    pub async fn remove_domain(&self, id: OrganizationId, domain: &Domain, change: &Change) -> Result<Organization> {
        retrying(|| async move {
            let mut tx = self.begin().await?;
            self.lock_org(&mut tx, id).await?.require_not_deleted()?;
            let done =
                sqlx::query("DELETE FROM organization_domains WHERE org_id = $1 AND domain = $2 RETURNING state")
                    .bind(id.to_string())
                    .bind(domain.as_str())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(self.err())?
                    .ok_or(TenancyError::DomainNotFound)?;
            let state: String = stored(done.try_get("state"))?;
            audit(
                &mut tx,
                self.backend(),
                id,
                change,
                "domain.removed",
                &format!("domain:{domain}"),
                &[("state", state)],
            )
            .await?;
            self.commit(tx).await
        })
        .await?;
        self.get_organization(id).await?.ok_or(TenancyError::OrganizationNotFound)
    }

    // ----- seats ---------------------------------------------------------------------------

    /// Locks the organization row for the rest of the transaction (see the module docs).
    async fn lock_org(&self, tx: &mut Tx, id: OrganizationId) -> Result<OrgLock> {
        let row = sqlx::query(
            "UPDATE organizations SET seat_epoch = seat_epoch + 1 WHERE id = $1
             RETURNING seat_limit, status, owner_user_id",
        )
        .bind(id.to_string())
        .fetch_optional(&mut **tx)
        .await
        .map_err(self.err())?
        .ok_or(TenancyError::OrganizationNotFound)?;
        let owner: Option<String> = row.try_get("owner_user_id").map_err(self.err())?;
        Ok(OrgLock {
            id,
            seat_limit: count(row.try_get("seat_limit").map_err(self.err())?),
            status: OrgStatus::from_db(&row.try_get::<String, _>("status").map_err(self.err())?)?,
            owner: owner.as_deref().map(parse_id).transpose()?,
        })
    }

    async fn count_seats(&self, tx: &mut Tx, lock: &OrgLock, now: Timestamp) -> Result<SeatUsage> {
        self.count_seats_on(tx, lock.id, lock.seat_limit, now).await
    }

    /// Counts the seats in use: active memberships plus held, unexpired reservations.
    async fn count_seats_on(
        &self,
        conn: &mut sqlx::AnyConnection,
        org: OrganizationId,
        seat_limit: u32,
        now: Timestamp,
    ) -> Result<SeatUsage> {
        let row = sqlx::query(
            "SELECT
               (SELECT COUNT(*) FROM memberships WHERE org_id = $1 AND status = 'active') AS active,
               (SELECT COUNT(*) FROM seat_reservations WHERE org_id = $1 AND state = 'held' AND expires_at > $2) AS reserved",
        )
        .bind(org.to_string())
        .bind(now.0)
        .fetch_one(conn)
        .await
        .map_err(self.err())?;
        Ok(SeatUsage {
            organization_id: org,
            seat_limit,
            active: count(row.try_get("active").map_err(self.err())?),
            reserved: count(row.try_get("reserved").map_err(self.err())?),
        })
    }

    async fn require_free_seat(&self, tx: &mut Tx, lock: &OrgLock, now: Timestamp) -> Result<()> {
        let usage = self.count_seats(tx, lock, now).await?;
        if usage.used() >= usage.seat_limit {
            return Err(TenancyError::SeatsExhausted { limit: usage.seat_limit, used: usage.used() });
        }
        Ok(())
    }

    /// Seat usage now, with the organization's seat epoch (it grows with every change under the
    /// organization lock) and when the next held reservation expires: together they say how long
    /// a cached copy of this usage stays true.
    pub async fn seat_snapshot(&self, id: OrganizationId) -> Result<SeatSnapshot> {
        let now = Timestamp::now();
        let row = sqlx::query(
            "SELECT o.seat_limit, o.seat_epoch,
               (SELECT COUNT(*) FROM memberships WHERE org_id = o.id AND status = 'active') AS active,
               (SELECT COUNT(*) FROM seat_reservations WHERE org_id = o.id AND state = 'held' AND expires_at > $2) AS reserved,
               (SELECT MIN(expires_at) FROM seat_reservations WHERE org_id = o.id AND state = 'held' AND expires_at > $2) AS next_expiry
             FROM organizations o WHERE o.id = $1",
        )
        .bind(id.to_string())
        .bind(now.0)
        .fetch_optional(&self.db.pool)
        .await
        .map_err(self.err())?
        .ok_or(TenancyError::OrganizationNotFound)?;
        let e = self.err();
        let next: Option<i64> = row.try_get("next_expiry").map_err(&e)?;
        Ok(SeatSnapshot {
            usage: SeatUsage {
                organization_id: id,
                seat_limit: count(row.try_get("seat_limit").map_err(&e)?),
                active: count(row.try_get("active").map_err(&e)?),
                reserved: count(row.try_get("reserved").map_err(&e)?),
            },
            epoch: row.try_get("seat_epoch").map_err(&e)?,
            read_at: now,
            next_expiry: next.map(Timestamp),
        })
    }

    /// Seat usage now (a read; expired reservations count as free).
    pub async fn seat_usage(&self, id: OrganizationId) -> Result<SeatUsage> {
        let org = self.get_organization(id).await?.ok_or(TenancyError::OrganizationNotFound)?;
        let mut conn = self.db.pool.acquire().await.map_err(self.err())?;
        self.count_seats_on(&mut conn, id, org.seat_limit, Timestamp::now()).await
    }

    /// Holds a seat until `expires_at`. With a caller-chosen id, a retry returns the same reservation.
    pub async fn reserve_seat(
        &self,
        org: OrganizationId,
        id: ReservationId,
        expires_at: Timestamp,
        change: &Change,
    ) -> Result<Reservation> {
        retrying(|| async move {
            let mut tx = self.begin().await?;
            let lock = self.lock_org(&mut tx, org).await?;
            if let Some(existing) = self.reservation_in(&mut tx, org, id, change.at).await? {
                return Ok(existing);
            }
            lock.require_active()?;
            self.require_free_seat(&mut tx, &lock, change.at).await?;
            sqlx::query(
                "INSERT INTO seat_reservations (id, org_id, expires_at, state, created_at, updated_at)
                 VALUES ($1, $2, $3, 'held', $4, $4)",
            )
            .bind(id.to_string())
            .bind(org.to_string())
            .bind(expires_at.0)
            .bind(change.at.0)
            .execute(&mut *tx)
            .await
            .map_err(self.err())?;
            audit(
                &mut tx,
                self.backend(),
                org,
                change,
                "seat.reserved",
                &format!("reservation:{id}"),
                &[("expires_at", expires_at.to_rfc3339())],
            )
            .await?;
            self.commit(tx).await?;
            Ok(Reservation {
                id,
                organization_id: org,
                expires_at,
                state: ReservationState::Held,
                claimed_user_id: None,
            })
        })
        .await
    }

    async fn reservation_in(
        &self,
        tx: &mut Tx,
        org: OrganizationId,
        id: ReservationId,
        now: Timestamp,
    ) -> Result<Option<Reservation>> {
        let row =
            sqlx::query("SELECT id, org_id, expires_at, state, claimed_user_id FROM seat_reservations WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(&mut **tx)
                .await
                .map_err(self.err())?;
        let Some(row) = row else { return Ok(None) };
        let owner: String = row.try_get("org_id").map_err(self.err())?;
        if owner != org.to_string() {
            // Another organization's reservation is, to this one, not there at all.
            return Err(TenancyError::ReservationNotFound);
        }
        let expires_at = Timestamp(row.try_get("expires_at").map_err(self.err())?);
        let claimed: Option<String> = row.try_get("claimed_user_id").map_err(self.err())?;
        let state = match row.try_get::<String, _>("state").map_err(self.err())?.as_str() {
            "claimed" => ReservationState::Claimed,
            "released" => ReservationState::Released,
            _ if expires_at <= now => ReservationState::Expired,
            _ => ReservationState::Held,
        };
        Ok(Some(Reservation {
            id,
            organization_id: org,
            expires_at,
            state,
            claimed_user_id: claimed.as_deref().map(parse_id).transpose()?,
        }))
    }

    /// Frees a held seat. Releasing twice, or after expiry, is not an error.
    pub async fn release_seat(&self, org: OrganizationId, id: ReservationId, change: &Change) -> Result<Reservation> {
        retrying(|| async move {
            let mut tx = self.begin().await?;
            self.lock_org(&mut tx, org).await?;
            let mut res =
                self.reservation_in(&mut tx, org, id, change.at).await?.ok_or(TenancyError::ReservationNotFound)?;
            match res.state {
                ReservationState::Claimed => return Err(TenancyError::ReservationClaimed),
                ReservationState::Released => return Ok(res),
                ReservationState::Held | ReservationState::Expired => {}
            }
            sqlx::query("UPDATE seat_reservations SET state = 'released', updated_at = $2 WHERE id = $1")
                .bind(id.to_string())
                .bind(change.at.0)
                .execute(&mut *tx)
                .await
                .map_err(self.err())?;
            audit(&mut tx, self.backend(), org, change, "seat.released", &format!("reservation:{id}"), &[]).await?;
            self.commit(tx).await?;
            res.state = ReservationState::Released;
            Ok(res)
        })
        .await
    }

    /// Turns a held reservation into an active membership. A retry by the same user returns the
    /// membership it made (`already_claimed`), and never takes a second seat.
    ///
    /// An identity claimant's user is the one its (issuer, subject) is linked to, or else the user
    /// of the invited email (created if new), linked in this transaction: the emailed link proved
    /// the mailbox. A refused claim writes no user and no link. Returns the membership, whether it
    /// was a retry, and whether an identity was linked now.
    pub async fn claim_seat(
        &self,
        org: OrganizationId,
        id: ReservationId,
        claimant: &Claimant,
        roles: &[RoleName],
        invited_by: &str,
        change: &Change,
    ) -> Result<(Member, bool, bool)> {
        let (user, already, linked) = retrying(|| async move {
            let mut tx = self.begin().await?;
            let lock = self.lock_org(&mut tx, org).await?;
            let res =
                self.reservation_in(&mut tx, org, id, change.at).await?.ok_or(TenancyError::ReservationNotFound)?;
            let known = match claimant {
                Claimant::User(user) => Some(*user),
                Claimant::Identity(i) => self.linked_user(&mut tx, &i.issuer, &i.subject).await?,
            };
            match res.state {
                ReservationState::Claimed => {
                    return match known {
                        Some(user) if res.claimed_user_id == Some(user) => Ok((user, true, false)),
                        _ => Err(TenancyError::ReservationClaimed),
                    }
                }
                ReservationState::Released => return Err(TenancyError::ReservationReleased),
                ReservationState::Expired => return Err(TenancyError::ReservationExpired),
                ReservationState::Held => {}
            }
            lock.require_active()?;
            let (user, linked) = match (claimant, known) {
                (Claimant::User(user), _) => {
                    self.require_user(&mut tx, *user).await?;
                    (*user, false)
                }
                (Claimant::Identity(i), Some(user)) => {
                    self.require_connection(&mut tx, org, i.connection_id, &i.issuer).await?;
                    (user, false)
                }
                (Claimant::Identity(i), None) => {
                    self.require_connection(&mut tx, org, i.connection_id, &i.issuer).await?;
                    let (user, _) = self.upsert_user_by_email(&mut tx, &i.email, &i.display_name, change).await?;
                    self.mark_email_verified(&mut tx, user, change).await?;
                    let link = Link { issuer: &i.issuer, subject: &i.subject, connection: i.connection_id, user };
                    self.link_identity(&mut tx, org, &link, "invitation", change).await?;
                    (user, true)
                }
            };
            // The reservation's seat becomes the membership's: no second seat is counted.
            sqlx::query(
                "UPDATE seat_reservations SET state = 'claimed', claimed_user_id = $2, updated_at = $3 WHERE id = $1",
            )
            .bind(id.to_string())
            .bind(user.to_string())
            .bind(change.at.0)
            .execute(&mut *tx)
            .await
            .map_err(self.err())?;
            self.activate_membership(&mut tx, &lock, user, roles, invited_by, change).await?;
            audit(
                &mut tx,
                self.backend(),
                org,
                change,
                "seat.claimed",
                &format!("reservation:{id}"),
                &[("user_id", user.to_string())],
            )
            .await?;
            self.commit(tx).await?;
            Ok((user, false, linked))
        })
        .await?;
        let member = self.get_member(org, user).await?.ok_or(TenancyError::MemberNotFound)?;
        Ok((member, already, linked))
    }

    // ----- members -------------------------------------------------------------------------

    /// Adds a member by email, creating the user if new. Takes a seat.
    pub async fn add_member(
        &self,
        org: OrganizationId,
        email: &Email,
        display_name: &str,
        roles: &[RoleName],
        enforce_domains: bool,
        change: &Change,
    ) -> Result<(Member, bool)> {
        let (user, created) = retrying(|| async move {
            let mut tx = self.begin().await?;
            let lock = self.lock_org(&mut tx, org).await?;
            lock.require_active()?;
            if enforce_domains {
                let allowed =
                    sqlx::query("SELECT 1 AS one FROM organization_domains WHERE org_id = $1 AND domain = $2")
                        .bind(org.to_string())
                        .bind(email.domain().as_str())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(self.err())?;
                if allowed.is_none() {
                    return Err(TenancyError::EmailDomainNotAllowed);
                }
            }
            let (user, created) = self.upsert_user_by_email(&mut tx, email, display_name, change).await?;
            self.activate_membership(&mut tx, &lock, user, roles, &change.actor, change).await?;
            self.commit(tx).await?;
            Ok((user, created))
        })
        .await?;
        let member = self.get_member(org, user).await?.ok_or(TenancyError::MemberNotFound)?;
        Ok((member, created))
    }

    async fn upsert_user_by_email(
        &self,
        tx: &mut Tx,
        email: &Email,
        display_name: &str,
        change: &Change,
    ) -> Result<(UserId, bool)> {
        let inserted = sqlx::query(
            "INSERT INTO users (id, primary_email, email_verified, display_name, created_at, updated_at)
             VALUES ($1, $2, 0, $3, $4, $4) ON CONFLICT (primary_email) DO NOTHING",
        )
        .bind(UserId::new().to_string())
        .bind(email.as_str())
        .bind(display_name)
        .bind(change.at.0)
        .execute(&mut **tx)
        .await
        .map_err(self.err())?;
        let row = sqlx::query("SELECT id FROM users WHERE primary_email = $1")
            .bind(email.as_str())
            .fetch_one(&mut **tx)
            .await
            .map_err(self.err())?;
        let id: String = row.try_get("id").map_err(self.err())?;
        Ok((parse_id(&id)?, inserted.rows_affected() == 1))
    }

    async fn require_user(&self, tx: &mut Tx, user: UserId) -> Result<()> {
        sqlx::query("SELECT id FROM users WHERE id = $1")
            .bind(user.to_string())
            .fetch_optional(&mut **tx)
            .await
            .map_err(self.err())?
            .map(|_| ())
            .ok_or(TenancyError::UserNotFound)
    }

    async fn validate_roles(&self, tx: &mut Tx, org: OrganizationId, roles: &[RoleName]) -> Result<()> {
        for role in roles {
            if is_built_in(role) {
                continue;
            }
            let found = sqlx::query("SELECT name FROM roles WHERE org_id = $1 AND name = $2")
                .bind(org.to_string())
                .bind(role.as_str())
                .fetch_optional(&mut **tx)
                .await
                .map_err(self.err())?;
            if found.is_none() {
                return Err(TenancyError::RoleNotFound(role.to_string()));
            }
        }
        Ok(())
    }

    /// Makes `user` an active member with `roles`, seat-checked. The caller holds the org lock and
    /// has already accounted for a reservation being turned into this membership, if any.
    async fn activate_membership(
        &self,
        tx: &mut Tx,
        lock: &OrgLock,
        user: UserId,
        roles: &[RoleName],
        invited_by: &str,
        change: &Change,
    ) -> Result<()> {
        let org = lock.id;
        self.validate_roles(tx, org, roles).await?;
        let wants_owner = roles.contains(&RoleName::owner());
        if wants_owner && lock.owner.is_some() {
            return Err(TenancyError::OwnerExists);
        }
        let existing = sqlx::query("SELECT status, version FROM memberships WHERE org_id = $1 AND user_id = $2")
            .bind(org.to_string())
            .bind(user.to_string())
            .fetch_optional(&mut **tx)
            .await
            .map_err(self.err())?;
        let version = match &existing {
            Some(row) if row.try_get::<String, _>("status").map_err(self.err())? == "active" => {
                return Err(TenancyError::MemberExists);
            }
            Some(row) => row.try_get::<i64, _>("version").map_err(self.err())? + 1,
            None => 1,
        };
        // A claimed reservation already moved from "reserved" to this membership inside this
        // transaction, so this check counts it once, as the membership-to-be.
        self.require_free_seat(tx, lock, change.at).await?;
        if existing.is_some() {
            sqlx::query(
                "UPDATE memberships SET status = 'active', version = $3, invited_by = $4, created_at = $5, updated_at = $5
                 WHERE org_id = $1 AND user_id = $2",
            )
        } else {
            sqlx::query(
                "INSERT INTO memberships (org_id, user_id, status, version, invited_by, created_at, updated_at)
                 VALUES ($1, $2, 'active', $3, $4, $5, $5)",
            )
        }
        .bind(org.to_string())
        .bind(user.to_string())
        .bind(version)
        .bind(invited_by)
        .bind(change.at.0)
        .execute(&mut **tx)
        .await
        .map_err(self.err())?;
        self.replace_roles(tx, org, user, roles).await?;
        if wants_owner {
            sqlx::query("UPDATE organizations SET owner_user_id = $2 WHERE id = $1")
                .bind(org.to_string())
                .bind(user.to_string())
                .execute(&mut **tx)
                .await
                .map_err(self.err())?;
        }
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        audit(tx, self.backend(), org, change, "member.added", &format!("user:{user}"), &[("roles", names.join(","))])
            .await
    }

    async fn replace_roles(&self, tx: &mut Tx, org: OrganizationId, user: UserId, roles: &[RoleName]) -> Result<()> {
        sqlx::query("DELETE FROM membership_roles WHERE org_id = $1 AND user_id = $2")
            .bind(org.to_string())
            .bind(user.to_string())
            .execute(&mut **tx)
            .await
            .map_err(self.err())?;
        for role in roles {
            sqlx::query("INSERT INTO membership_roles (org_id, user_id, role) VALUES ($1, $2, $3)")
                .bind(org.to_string())
                .bind(user.to_string())
                .bind(role.as_str())
                .execute(&mut **tx)
                .await
                .map_err(self.err())?;
        }
        Ok(())
    }

    /// One membership (active or removed), with the user's public fields.
    /// The active members holding `role`, with their membership versions.
    pub async fn role_holders(&self, org: OrganizationId, role: &RoleName) -> Result<Vec<(UserId, i64)>> {
        let rows = sqlx::query(
            "SELECT m.user_id, m.version FROM memberships m
             JOIN membership_roles r ON r.org_id = m.org_id AND r.user_id = m.user_id
             WHERE m.org_id = $1 AND m.status = 'active' AND r.role = $2",
        )
        .bind(org.to_string())
        .bind(role.as_str())
        .fetch_all(&self.db.pool)
        .await
        .map_err(self.err())?;
        rows.iter()
            .map(|r| {
                let user: String = stored(r.try_get("user_id"))?;
                Ok((UserId::parse(&user).map_err(|_| corrupt("user id"))?, stored(r.try_get("version"))?))
            })
            .collect()
    }

    pub async fn get_member(&self, org: OrganizationId, user: UserId) -> Result<Option<Member>> {
        let row = sqlx::query(&format!("{MEMBER_SELECT} WHERE m.org_id = $1 AND m.user_id = $2"))
            .bind(org.to_string())
            .bind(user.to_string())
            .fetch_optional(&self.db.pool)
            .await
            .map_err(self.err())?;
        let Some(row) = row else { return Ok(None) };
        let mut member = member_from_row(&row)?;
        member.roles = self.roles_of(org, user).await?;
        Ok(Some(member))
    }

    /// The membership of the user whose primary email is `email`, if any.
    pub async fn get_member_by_email(&self, org: OrganizationId, email: &Email) -> Result<Option<Member>> {
        let row = sqlx::query("SELECT id FROM users WHERE primary_email = $1")
            .bind(email.as_str())
            .fetch_optional(&self.db.pool)
            .await
            .map_err(self.err())?;
        match row {
            Some(row) => self.get_member(org, parse_id(&row.try_get::<String, _>("id").map_err(self.err())?)?).await,
            None => Ok(None),
        }
    }

    async fn roles_of(&self, org: OrganizationId, user: UserId) -> Result<Vec<RoleName>> {
        let rows = sqlx::query("SELECT role FROM membership_roles WHERE org_id = $1 AND user_id = $2 ORDER BY role")
            .bind(org.to_string())
            .bind(user.to_string())
            .fetch_all(&self.db.pool)
            .await
            .map_err(self.err())?;
        rows.iter().map(|r| role_from(r.try_get("role").map_err(self.err())?)).collect()
    }

    /// A page of members in the order they joined.
    pub async fn list_members(
        &self,
        org: OrganizationId,
        page: &Page,
        show_removed: bool,
    ) -> Result<(Vec<Member>, String)> {
        let (after_at, after_user) = match page.after.as_deref().and_then(|a| a.split_once('|')) {
            Some((at, user)) => (
                at.parse::<i64>()
                    .map_err(|_| TenancyError::Invalid(lanyard_core::ValueError::Malformed("page_token")))?,
                user.to_owned(),
            ),
            None => (i64::MIN, String::new()),
        };
        let rows = sqlx::query(&format!(
            "{MEMBER_SELECT} WHERE m.org_id = $1 AND ($2 = 1 OR m.status = 'active')
               AND (m.created_at > $3 OR (m.created_at = $3 AND m.user_id > $4))
             ORDER BY m.created_at, m.user_id LIMIT $5"
        ))
        .bind(org.to_string())
        .bind(i64::from(show_removed))
        .bind(after_at)
        .bind(after_user)
        .bind(page.fetch_limit())
        .fetch_all(&self.db.pool)
        .await
        .map_err(self.err())?;
        let mut members = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut m = member_from_row(row)?;
            m.roles = self.roles_of(org, m.user_id).await?;
            members.push(m);
        }
        Ok(page.finish(members, |m| format!("{}|{}", m.created_at.0, m.user_id)))
    }

    /// Replaces an active member's roles and bumps the membership version. The owner role moves
    /// only through [`TenancyStore::transfer_ownership`].
    pub async fn update_member_roles(
        &self,
        org: OrganizationId,
        user: UserId,
        roles: &[RoleName],
        change: &Change,
    ) -> Result<Member> {
        retrying(|| async move {
            let mut tx = self.begin().await?;
            let lock = self.lock_org(&mut tx, org).await?;
            lock.require_not_deleted()?;
            self.require_active_member(&mut tx, org, user).await?;
            let is_owner = lock.owner == Some(user);
            let wants_owner = roles.contains(&RoleName::owner());
            if is_owner && !wants_owner {
                return Err(TenancyError::OwnerProtected);
            }
            if wants_owner && !is_owner {
                return Err(TenancyError::OwnerExists);
            }
            self.validate_roles(&mut tx, org, roles).await?;
            self.bump_version(&mut tx, org, user, change).await?;
            self.replace_roles(&mut tx, org, user, roles).await?;
            let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            audit(
                &mut tx,
                self.backend(),
                org,
                change,
                "member.roles_updated",
                &format!("user:{user}"),
                &[("roles", names.join(","))],
            )
            .await?;
            self.commit(tx).await
        })
        .await?;
        self.get_member(org, user).await?.ok_or(TenancyError::MemberNotFound)
    }

    async fn require_active_member(&self, tx: &mut Tx, org: OrganizationId, user: UserId) -> Result<()> {
        let row = sqlx::query("SELECT status FROM memberships WHERE org_id = $1 AND user_id = $2")
            .bind(org.to_string())
            .bind(user.to_string())
            .fetch_optional(&mut **tx)
            .await
            .map_err(self.err())?;
        match row {
            Some(r) if r.try_get::<String, _>("status").map_err(self.err())? == "active" => Ok(()),
            _ => Err(TenancyError::MemberNotFound),
        }
    }

    async fn bump_version(&self, tx: &mut Tx, org: OrganizationId, user: UserId, change: &Change) -> Result<()> {
        sqlx::query("UPDATE memberships SET version = version + 1, updated_at = $3 WHERE org_id = $1 AND user_id = $2")
            .bind(org.to_string())
            .bind(user.to_string())
            .bind(change.at.0)
            .execute(&mut **tx)
            .await
            .map_err(self.err())
            .map(|_| ())
    }

    /// Removes a member: frees the seat, bumps the version. The owner cannot be removed.
    pub async fn remove_member(&self, org: OrganizationId, user: UserId, change: &Change) -> Result<Member> {
        let before = retrying(|| async move {
            let mut tx = self.begin().await?;
            let lock = self.lock_org(&mut tx, org).await?;
            self.require_active_member(&mut tx, org, user).await?;
            if lock.owner == Some(user) {
                return Err(TenancyError::OwnerProtected);
            }
            let roles = {
                let rows =
                    sqlx::query("SELECT role FROM membership_roles WHERE org_id = $1 AND user_id = $2 ORDER BY role")
                        .bind(org.to_string())
                        .bind(user.to_string())
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(self.err())?;
                rows.iter().map(|r| role_from(r.try_get("role").map_err(self.err())?)).collect::<Result<Vec<_>>>()?
            };
            sqlx::query(
                "UPDATE memberships SET status = 'removed', version = version + 1, updated_at = $3
                 WHERE org_id = $1 AND user_id = $2",
            )
            .bind(org.to_string())
            .bind(user.to_string())
            .bind(change.at.0)
            .execute(&mut *tx)
            .await
            .map_err(self.err())?;
            self.replace_roles(&mut tx, org, user, &[]).await?;
            audit(&mut tx, self.backend(), org, change, "member.removed", &format!("user:{user}"), &[]).await?;
            self.commit(tx).await?;
            Ok(roles)
        })
        .await?;
        let mut member = self.get_member(org, user).await?.ok_or(TenancyError::MemberNotFound)?;
        // The roles it held until now, for the caller's records.
        member.roles = before;
        Ok(member)
    }

    /// Moves ownership to another active member; the previous owner becomes an admin.
    pub async fn transfer_ownership(
        &self,
        org: OrganizationId,
        new_owner: UserId,
        change: &Change,
    ) -> Result<(Organization, Member, Option<Member>)> {
        let previous = retrying(|| async move {
            let mut tx = self.begin().await?;
            let lock = self.lock_org(&mut tx, org).await?;
            lock.require_active()?;
            self.require_active_member(&mut tx, org, new_owner).await?;
            if lock.owner == Some(new_owner) {
                return Ok(None);
            }
            if let Some(prev) = lock.owner {
                self.bump_version(&mut tx, org, prev, change).await?;
                self.replace_roles(&mut tx, org, prev, &[RoleName::admin()]).await?;
            }
            self.bump_version(&mut tx, org, new_owner, change).await?;
            self.replace_roles(&mut tx, org, new_owner, &[RoleName::owner()]).await?;
            sqlx::query("UPDATE organizations SET owner_user_id = $2, updated_at = $3 WHERE id = $1")
                .bind(org.to_string())
                .bind(new_owner.to_string())
                .bind(change.at.0)
                .execute(&mut *tx)
                .await
                .map_err(self.err())?;
            let prev_text = lock.owner.map(|p| p.to_string()).unwrap_or_default();
            audit(
                &mut tx,
                self.backend(),
                org,
                change,
                "ownership.transferred",
                &format!("user:{new_owner}"),
                &[("previous_owner", prev_text)],
            )
            .await?;
            self.commit(tx).await?;
            Ok(lock.owner)
        })
        .await?;
        let orga = self.get_organization(org).await?.ok_or(TenancyError::OrganizationNotFound)?;
        let new_member = self.get_member(org, new_owner).await?.ok_or(TenancyError::MemberNotFound)?;
        let prev_member = match previous {
            Some(p) => self.get_member(org, p).await?,
            None => None,
        };
        Ok((orga, new_member, prev_member))
    }

    /// A page of a user's active memberships, with their organizations.
    pub async fn list_user_organizations(
        &self,
        user: UserId,
        page: &Page,
    ) -> Result<(Vec<(Organization, Member)>, String)> {
        let rows = sqlx::query(
            "SELECT org_id FROM memberships WHERE user_id = $1 AND status = 'active' AND org_id > $2
             ORDER BY org_id LIMIT $3",
        )
        .bind(user.to_string())
        .bind(page.after.clone().unwrap_or_default())
        .bind(page.fetch_limit())
        .fetch_all(&self.db.pool)
        .await
        .map_err(self.err())?;
        let mut out = Vec::new();
        for row in &rows {
            let org: OrganizationId = parse_id(&row.try_get::<String, _>("org_id").map_err(self.err())?)?;
            let (Some(o), Some(m)) = (self.get_organization(org).await?, self.get_member(org, user).await?) else {
                continue;
            };
            out.push((o, m));
        }
        Ok(page.finish(out, |(o, _)| o.id.to_string()))
    }

    /// The user, if it exists.
    pub async fn get_user(&self, id: UserId) -> Result<Option<User>> {
        let row =
            sqlx::query("SELECT id, primary_email, email_verified, display_name, created_at FROM users WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(&self.db.pool)
                .await
                .map_err(self.err())?;
        row.as_ref().map(user_from_row).transpose()
    }

    // ----- roles ---------------------------------------------------------------------------

    /// Creates a custom role.
    pub async fn create_role(&self, org: OrganizationId, role: &Role, change: &Change) -> Result<Role> {
        if is_built_in(&role.name) {
            return Err(TenancyError::RoleExists);
        }
        retrying(|| async move {
            let mut tx = self.begin().await?;
            self.lock_org(&mut tx, org).await?.require_not_deleted()?;
            let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM roles WHERE org_id = $1")
                .bind(org.to_string())
                .fetch_one(&mut *tx)
                .await
                .and_then(|r| r.try_get("n"))
                .map_err(self.err())?;
            if n as u64 >= MAX_CUSTOM_ROLES {
                return Err(TenancyError::InvalidField {
                    field: "name",
                    message: format!("an organization may define at most {MAX_CUSTOM_ROLES} roles"),
                });
            }
            let perms: Vec<&str> = role.permissions.iter().map(|p| p.as_str()).collect();
            sqlx::query(
                "INSERT INTO roles (org_id, name, description, permissions, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $5)",
            )
            .bind(org.to_string())
            .bind(role.name.as_str())
            .bind(&role.description)
            .bind(to_json(&perms))
            .bind(change.at.0)
            .execute(&mut *tx)
            .await
            .map_err(self.unique_or(TenancyError::RoleExists))?;
            audit(
                &mut tx,
                self.backend(),
                org,
                change,
                "role.created",
                &format!("role:{}", role.name),
                &[("permissions", perms.join(","))],
            )
            .await?;
            self.commit(tx).await
        })
        .await?;
        self.get_role(org, &role.name).await?.ok_or_else(|| TenancyError::RoleNotFound(role.name.to_string()))
    }

    /// One role: built-in or custom.
    pub async fn get_role(&self, org: OrganizationId, name: &RoleName) -> Result<Option<Role>> {
        if let Some(r) = built_in_roles().into_iter().find(|r| &r.name == name) {
            return Ok(Some(r));
        }
        let row = sqlx::query(&format!("{ROLE_SELECT} WHERE org_id = $1 AND name = $2"))
            .bind(org.to_string())
            .bind(name.as_str())
            .fetch_optional(&self.db.pool)
            .await
            .map_err(self.err())?;
        row.as_ref().map(role_from_row).transpose()
    }

    /// Built-in roles, then custom roles by name.
    pub async fn list_roles(&self, org: OrganizationId, page: &Page) -> Result<(Vec<Role>, String)> {
        let rows = sqlx::query(&format!("{ROLE_SELECT} WHERE org_id = $1 ORDER BY name"))
            .bind(org.to_string())
            .fetch_all(&self.db.pool)
            .await
            .map_err(self.err())?;
        let mut all = built_in_roles();
        for row in &rows {
            all.push(role_from_row(row)?);
        }
        // Custom roles number at most MAX_CUSTOM_ROLES, so paging over them in memory is cheap;
        // the token is the position, prefixed so a token for another list cannot be reused here.
        let start = match &page.after {
            Some(a) => a
                .strip_prefix("roles:")
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or(TenancyError::Invalid(lanyard_core::ValueError::Malformed("page_token")))?,
            None => 0,
        };
        let rest: Vec<(usize, Role)> =
            all.into_iter().enumerate().skip(start).take(page.fetch_limit() as usize).collect();
        let (rows, next) = page.finish(rest, |(i, _)| format!("roles:{}", i + 1));
        Ok((rows.into_iter().map(|(_, r)| r).collect(), next))
    }

    /// Updates a custom role; members holding it get a new membership version, since their
    /// permissions changed.
    pub async fn update_role(
        &self,
        org: OrganizationId,
        name: &RoleName,
        description: Option<&str>,
        permissions: Option<&[Permission]>,
        change: &Change,
    ) -> Result<Role> {
        if is_built_in(name) {
            return Err(TenancyError::RoleBuiltIn);
        }
        retrying(|| async move {
            let mut tx = self.begin().await?;
            self.lock_org(&mut tx, org).await?.require_not_deleted()?;
            let found = sqlx::query("SELECT name FROM roles WHERE org_id = $1 AND name = $2")
                .bind(org.to_string())
                .bind(name.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(self.err())?;
            if found.is_none() {
                return Err(TenancyError::RoleNotFound(name.to_string()));
            }
            if let Some(d) = description {
                sqlx::query("UPDATE roles SET description = $3, updated_at = $4 WHERE org_id = $1 AND name = $2")
                    .bind(org.to_string())
                    .bind(name.as_str())
                    .bind(d)
                    .bind(change.at.0)
                    .execute(&mut *tx)
                    .await
                    .map_err(self.err())?;
            }
            if let Some(perms) = permissions {
                let perms: Vec<&str> = perms.iter().map(|p| p.as_str()).collect();
                sqlx::query("UPDATE roles SET permissions = $3, updated_at = $4 WHERE org_id = $1 AND name = $2")
                    .bind(org.to_string())
                    .bind(name.as_str())
                    .bind(to_json(&perms))
                    .bind(change.at.0)
                    .execute(&mut *tx)
                    .await
                    .map_err(self.err())?;
                sqlx::query(
                    "UPDATE memberships SET version = version + 1, updated_at = $3
                     WHERE org_id = $1 AND status = 'active'
                       AND user_id IN (SELECT user_id FROM membership_roles WHERE org_id = $1 AND role = $2)",
                )
                .bind(org.to_string())
                .bind(name.as_str())
                .bind(change.at.0)
                .execute(&mut *tx)
                .await
                .map_err(self.err())?;
            }
            audit(&mut tx, self.backend(), org, change, "role.updated", &format!("role:{name}"), &[]).await?;
            self.commit(tx).await
        })
        .await?;
        self.get_role(org, name).await?.ok_or_else(|| TenancyError::RoleNotFound(name.to_string()))
    }

    /// Deletes a custom role no active member holds.
    pub async fn delete_role(&self, org: OrganizationId, name: &RoleName, change: &Change) -> Result<()> {
        if is_built_in(name) {
            return Err(TenancyError::RoleBuiltIn);
        }
        retrying(|| async move {
            let mut tx = self.begin().await?;
            self.lock_org(&mut tx, org).await?.require_not_deleted()?;
            let holders: i64 = sqlx::query(
                "SELECT COUNT(*) AS n FROM membership_roles r JOIN memberships m
                   ON m.org_id = r.org_id AND m.user_id = r.user_id
                 WHERE r.org_id = $1 AND r.role = $2 AND m.status = 'active'",
            )
            .bind(org.to_string())
            .bind(name.as_str())
            .fetch_one(&mut *tx)
            .await
            .and_then(|r| r.try_get("n"))
            .map_err(self.err())?;
            if holders > 0 {
                return Err(TenancyError::RoleInUse(holders as u64));
            }
            let done = sqlx::query("DELETE FROM roles WHERE org_id = $1 AND name = $2")
                .bind(org.to_string())
                .bind(name.as_str())
                .execute(&mut *tx)
                .await
                .map_err(self.err())?;
            if done.rows_affected() == 0 {
                return Err(TenancyError::RoleNotFound(name.to_string()));
            }
            audit(&mut tx, self.backend(), org, change, "role.deleted", &format!("role:{name}"), &[]).await?;
            self.commit(tx).await
        })
        .await
    }

    // ----- SSO connections -----------------------------------------------------------------

    /// Creates an SSO connection; the secret is sealed under `secrets`, bound to the connection id.
    pub async fn create_sso_connection(
        &self,
        org: OrganizationId,
        new: &NewSsoConnection,
        max_connections: u32,
        secrets: &SecretBox,
        change: &Change,
    ) -> Result<SsoConnection> {
        let id = ConnectionId::new();
        let sealed = new.client_secret.as_deref().map(|s| secrets.seal(s, &format!("sso:{id}")));
        let sealed = &sealed;
        retrying(|| async move {
            let mut tx = self.begin().await?;
            self.lock_org(&mut tx, org).await?.require_not_deleted()?;
            // Counted under the organization's lock, so concurrent creations cannot pass the cap.
            let existing = sqlx::query("SELECT COUNT(*) AS n FROM sso_connections WHERE org_id = $1")
                .bind(org.to_string())
                .fetch_one(&mut *tx)
                .await
                .map_err(self.err())?;
            if stored(existing.try_get::<i64, _>("n"))? >= i64::from(max_connections) {
                return Err(TenancyError::ConnectionsExhausted { limit: max_connections });
            }
            let domains: Vec<&str> = new.hosted_domains.iter().map(|d| d.as_str()).collect();
            sqlx::query(
                "INSERT INTO sso_connections
                   (id, org_id, kind, issuer, client_id, client_secret_sealed, hosted_domains, tenant_id, enabled, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9)",
            )
            .bind(id.to_string())
            .bind(org.to_string())
            .bind(new.kind.as_str())
            .bind(&new.issuer)
            .bind(&new.client_id)
            .bind(sealed.clone())
            .bind(to_json(&domains))
            .bind(&new.tenant_id)
            .bind(change.at.0)
            .execute(&mut *tx)
            .await
            .map_err(self.err())?;
            audit(&mut tx, self.backend(), org, change, "connection.created", &format!("connection:{id}"), &[
                ("kind", new.kind.as_str().to_owned()),
                ("issuer", new.issuer.clone()),
            ])
            .await?;
            self.commit(tx).await
        })
        .await?;
        self.get_sso_connection(org, id).await?.ok_or(TenancyError::ConnectionNotFound)
    }

    /// One SSO connection of an organization.
    pub async fn get_sso_connection(&self, org: OrganizationId, id: ConnectionId) -> Result<Option<SsoConnection>> {
        let row = sqlx::query(&format!("{CONN_SELECT} WHERE org_id = $1 AND id = $2"))
            .bind(org.to_string())
            .bind(id.to_string())
            .fetch_optional(&self.db.pool)
            .await
            .map_err(self.err())?;
        row.as_ref().map(connection_from_row).transpose()
    }

    /// The sealed client secret of a connection, opened (for the token service's use).
    pub async fn sso_client_secret(
        &self,
        org: OrganizationId,
        id: ConnectionId,
        secrets: &SecretBox,
    ) -> Result<Option<String>> {
        let row = sqlx::query("SELECT client_secret_sealed FROM sso_connections WHERE org_id = $1 AND id = $2")
            .bind(org.to_string())
            .bind(id.to_string())
            .fetch_optional(&self.db.pool)
            .await
            .map_err(self.err())?
            .ok_or(TenancyError::ConnectionNotFound)?;
        let sealed: Option<String> = row.try_get("client_secret_sealed").map_err(self.err())?;
        sealed
            .map(|s| secrets.open(&s, &format!("sso:{id}")).map_err(|e| TenancyError::Internal(e.to_string())))
            .transpose()
    }

    /// The enabled connections of active organizations with this exact issuer (at most 100).
    pub async fn find_sso_connections(&self, issuer: &str) -> Result<Vec<SsoConnection>> {
        let rows = sqlx::query(
            "SELECT c.id, c.org_id, c.kind, c.issuer, c.client_id, c.client_secret_sealed, c.hosted_domains,
                    c.tenant_id, c.enabled, c.created_at
             FROM sso_connections c JOIN organizations o ON o.id = c.org_id
             WHERE c.issuer = $1 AND c.enabled = 1 AND o.status = 'active' ORDER BY c.id LIMIT 100",
        )
        .bind(issuer)
        .fetch_all(&self.db.pool)
        .await
        .map_err(self.err())?;
        rows.iter().map(connection_from_row).collect()
    }

    /// A page of an organization's SSO connections.
    pub async fn list_sso_connections(&self, org: OrganizationId, page: &Page) -> Result<(Vec<SsoConnection>, String)> {
        let rows = sqlx::query(&format!("{CONN_SELECT} WHERE org_id = $1 AND id > $2 ORDER BY id LIMIT $3"))
            .bind(org.to_string())
            .bind(page.after.clone().unwrap_or_default())
            .bind(page.fetch_limit())
            .fetch_all(&self.db.pool)
            .await
            .map_err(self.err())?;
        let conns = rows.iter().map(connection_from_row).collect::<Result<Vec<_>>>()?;
        Ok(page.finish(conns, |c| c.id.to_string()))
    }

    /// Deletes an SSO connection.
    pub async fn delete_sso_connection(&self, org: OrganizationId, id: ConnectionId, change: &Change) -> Result<()> {
        retrying(|| async move {
            let mut tx = self.begin().await?;
            self.lock_org(&mut tx, org).await?;
            let done = sqlx::query("DELETE FROM sso_connections WHERE org_id = $1 AND id = $2")
                .bind(org.to_string())
                .bind(id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(self.err())?;
            if done.rows_affected() == 0 {
                return Err(TenancyError::ConnectionNotFound);
            }
            audit(&mut tx, self.backend(), org, change, "connection.deleted", &format!("connection:{id}"), &[]).await?;
            self.commit(tx).await
        })
        .await
    }

    // ----- identities ----------------------------------------------------------------------

    /// The user an (issuer, subject) is linked to, if any.
    async fn linked_user(&self, tx: &mut Tx, issuer: &str, subject: &str) -> Result<Option<UserId>> {
        let row = sqlx::query("SELECT user_id FROM external_identities WHERE issuer = $1 AND subject = $2")
            .bind(issuer)
            .bind(subject)
            .fetch_optional(&mut **tx)
            .await
            .map_err(self.err())?;
        row.map(|r| parse_id(&stored(r.try_get::<String, _>("user_id"))?)).transpose()
    }

    /// Requires `connection` to be an enabled connection of `org` with exactly `issuer`: a service
    /// vouches for an identity only through the connection that verified it.
    async fn require_connection(
        &self,
        tx: &mut Tx,
        org: OrganizationId,
        connection: ConnectionId,
        issuer: &str,
    ) -> Result<()> {
        let row = sqlx::query("SELECT issuer, enabled FROM sso_connections WHERE org_id = $1 AND id = $2")
            .bind(org.to_string())
            .bind(connection.to_string())
            .fetch_optional(&mut **tx)
            .await
            .map_err(self.err())?
            .ok_or(TenancyError::ConnectionNotFound)?;
        let stored_issuer: String = stored(row.try_get("issuer"))?;
        let enabled = stored(row.try_get::<i64, _>("enabled"))? != 0;
        if !enabled || stored_issuer != issuer {
            return Err(TenancyError::ConnectionNotFound);
        }
        Ok(())
    }

    async fn mark_email_verified(&self, tx: &mut Tx, user: UserId, change: &Change) -> Result<()> {
        sqlx::query("UPDATE users SET email_verified = 1, updated_at = $2 WHERE id = $1 AND email_verified = 0")
            .bind(user.to_string())
            .bind(change.at.0)
            .execute(&mut **tx)
            .await
            .map_err(self.err())?;
        Ok(())
    }

    /// Links an identity to a user, with an audit event in `org` saying why (`verified_domain` or
    /// `invitation`).
    async fn link_identity(
        &self,
        tx: &mut Tx,
        org: OrganizationId,
        link: &Link<'_>,
        why: &str,
        change: &Change,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO external_identities (issuer, subject, user_id, connection_id, created_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(link.issuer)
        .bind(link.subject)
        .bind(link.user.to_string())
        .bind(link.connection.to_string())
        .bind(change.at.0)
        .execute(&mut **tx)
        .await
        .map_err(self.err())?;
        audit(
            tx,
            self.backend(),
            org,
            change,
            "identity.linked",
            &format!("user:{}", link.user),
            &[
                ("issuer", link.issuer.to_owned()),
                ("subject", link.subject.to_owned()),
                ("connection_id", link.connection.to_string()),
                ("basis", why.to_owned()),
            ],
        )
        .await
    }

    /// Resolves the user an identity signs in to `org` as, under the identity rules (see
    /// ARCHITECTURE.md, "Identity and domains"):
    /// - a linked (issuer, subject) is its user;
    /// - otherwise the identity is linked to the user of its email only when the provider verified
    ///   the email and its domain is verified for `org` (the connection's organization);
    /// - the user must be an active member of `org`.
    ///
    /// Nothing is written unless all of it holds (and nothing at all on a dry run): a refused
    /// sign-in leaves no user, no link and no audit event behind.
    pub async fn resolve_identity(
        &self,
        identity: &ExternalIdentity,
        org: OrganizationId,
        dry_run: bool,
        change: &Change,
    ) -> Result<ResolvedIdentity> {
        // Two first sign-ins of one identity may race to link it; the loser retries and finds it.
        for _ in 0..3 {
            match self.try_resolve_identity(identity, org, dry_run, change).await {
                Err(e) if e.db_kind() == Some(DbErrorKind::UniqueViolation) => continue,
                other => return other,
            }
        }
        self.try_resolve_identity(identity, org, dry_run, change).await
    }

    async fn try_resolve_identity(
        &self,
        identity: &ExternalIdentity,
        org: OrganizationId,
        dry_run: bool,
        change: &Change,
    ) -> Result<ResolvedIdentity> {
        let (user, link) = retrying(|| async move {
            let mut tx = self.begin().await?;
            let status = sqlx::query("SELECT status FROM organizations WHERE id = $1")
                .bind(org.to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(self.err())?
                .ok_or(TenancyError::OrganizationNotFound)?;
            match OrgStatus::from_db(&stored(status.try_get::<String, _>("status"))?)? {
                OrgStatus::Active => {}
                OrgStatus::Suspended => return Err(TenancyError::OrganizationSuspended),
                OrgStatus::Deleted => return Err(TenancyError::OrganizationDeleted),
            }
            self.require_connection(&mut tx, org, identity.connection_id, &identity.issuer).await?;
            let (user, link) = match self.linked_user(&mut tx, &identity.issuer, &identity.subject).await? {
                Some(user) => (user, false),
                None => {
                    let email = identity
                        .email
                        .as_ref()
                        .filter(|_| identity.email_verified)
                        .ok_or(TenancyError::EmailNotVerified)?;
                    let verified = sqlx::query(
                        "SELECT 1 AS one FROM organization_domains WHERE org_id = $1 AND domain = $2 AND state = 'verified'",
                    )
                    .bind(org.to_string())
                    .bind(email.domain().as_str())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(self.err())?;
                    if verified.is_none() {
                        return Err(TenancyError::EmailDomainNotVerified);
                    }
                    let row = sqlx::query("SELECT id FROM users WHERE primary_email = $1")
                        .bind(email.as_str())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(self.err())?
                        // Nobody with this email exists, so nobody with it is a member.
                        .ok_or(TenancyError::MemberNotFound)?;
                    (parse_id(&stored(row.try_get::<String, _>("id"))?)?, true)
                }
            };
            let member = sqlx::query("SELECT 1 AS one FROM memberships WHERE org_id = $1 AND user_id = $2 AND status = 'active'")
                .bind(org.to_string())
                .bind(user.to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(self.err())?;
            if member.is_none() {
                return Err(TenancyError::MemberNotFound);
            }
            if link && !dry_run {
                let l = Link { issuer: &identity.issuer, subject: &identity.subject, connection: identity.connection_id, user };
                self.link_identity(&mut tx, org, &l, "verified_domain", change).await?;
                self.mark_email_verified(&mut tx, user, change).await?;
                self.commit(tx).await?;
            } else {
                tx.rollback().await.map_err(self.err())?;
            }
            Ok((user, link))
        })
        .await?;
        let user = self.get_user(user).await?.ok_or(TenancyError::UserNotFound)?;
        Ok(ResolvedIdentity { user, user_created: false, identity_linked: link })
    }

    /// One SSO connection by id, whatever its organization (for the token service's check that a
    /// session's connection still exists).
    pub async fn sso_connection_by_id(&self, id: ConnectionId) -> Result<Option<SsoConnection>> {
        let row = sqlx::query(&format!("{CONN_SELECT} WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.db.pool)
            .await
            .map_err(self.err())?;
        row.as_ref().map(connection_from_row).transpose()
    }

    /// Appends an audit event recorded by another service.
    pub async fn record_audit_event(
        &self,
        org: OrganizationId,
        action: &str,
        target: &str,
        details: &[(&str, String)],
        change: &Change,
    ) -> Result<()> {
        retrying(|| async move {
            let mut tx = self.begin().await?;
            audit(&mut tx, self.backend(), org, change, action, target, details).await?;
            self.commit(tx).await
        })
        .await
    }

    // ----- audit -----------------------------------------------------------

    /// A page of an organization's audit events, newest first, optionally of one action.
    pub async fn list_audit_events(
        &self,
        org: OrganizationId,
        page: &Page,
        action: Option<&str>,
    ) -> Result<(Vec<AuditEvent>, String)> {
        let rows = sqlx::query(
            "SELECT id, org_id, actor, action, target, details, created_at FROM audit_events
             WHERE org_id = $1 AND id < $2 AND ($3 = '' OR action = $3) ORDER BY id DESC LIMIT $4",
        )
        .bind(org.to_string())
        .bind(page.after.clone().unwrap_or_else(|| "~".to_owned()))
        .bind(action.unwrap_or_default())
        .bind(page.fetch_limit())
        .fetch_all(&self.db.pool)
        .await
        .map_err(self.err())?;
        let events = rows
            .iter()
            .map(|r| {
                let e = self.err();
                Ok(AuditEvent {
                    id: parse_id(&r.try_get::<String, _>("id").map_err(&e)?)?,
                    organization_id: org,
                    actor: r.try_get("actor").map_err(&e)?,
                    action: r.try_get("action").map_err(&e)?,
                    target: r.try_get("target").map_err(&e)?,
                    details: json_map(&r.try_get::<String, _>("details").map_err(&e)?),
                    created_at: Timestamp(r.try_get("created_at").map_err(&e)?),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(page.finish(events, |e| e.id.to_string()))
    }
}

async fn audit(
    tx: &mut Tx,
    backend: Backend,
    org: OrganizationId,
    change: &Change,
    action: &str,
    target: &str,
    details: &[(&str, String)],
) -> Result<()> {
    let details: BTreeMap<&str, &str> = details.iter().map(|(k, v)| (*k, v.as_str())).collect();
    sqlx::query(
        "INSERT INTO audit_events (id, org_id, actor, action, target, details, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(EventId::new().to_string())
    .bind(org.to_string())
    .bind(&change.actor)
    .bind(action)
    .bind(target)
    .bind(to_json(&details))
    .bind(change.at.0)
    .execute(&mut **tx)
    .await
    .map_err(TenancyError::db(backend))
    .map(|_| ())
}

const DOMAIN_SELECT: &str =
    "SELECT domain, state, challenge, verified_at, verification_method FROM organization_domains";

/// An identity link to write.
struct Link<'a> {
    issuer: &'a str,
    subject: &'a str,
    connection: ConnectionId,
    user: UserId,
}

fn domain_from_row(r: &AnyRow) -> Result<OrgDomain> {
    let name: String = stored(r.try_get("domain"))?;
    let verified_at: Option<i64> = stored(r.try_get("verified_at"))?;
    Ok(OrgDomain {
        name: Domain::parse(&name).map_err(|_| corrupt("domain"))?,
        state: if stored(r.try_get::<String, _>("state"))? == "verified" {
            DomainState::Verified
        } else {
            DomainState::Pending
        },
        verified_at: verified_at.map(Timestamp),
        method: stored(r.try_get("verification_method"))?,
        challenge: stored(r.try_get("challenge"))?,
    })
}

const ORG_SELECT: &str = "SELECT id, slug, display_name, seat_limit, metadata, status, owner_user_id, created_at, \
     updated_at, deleted_at FROM organizations";

const MEMBER_SELECT: &str = "SELECT m.org_id, m.user_id, u.primary_email, u.display_name, m.status, m.version, \
     m.invited_by, m.created_at, m.updated_at FROM memberships m JOIN users u ON u.id = m.user_id";

const ROLE_SELECT: &str = "SELECT org_id, name, description, permissions, created_at, updated_at FROM roles";

const CONN_SELECT: &str =
    "SELECT id, org_id, kind, issuer, client_id, client_secret_sealed, hosted_domains, tenant_id, \
     enabled, created_at FROM sso_connections";

fn stored<T>(r: std::result::Result<T, sqlx::Error>) -> Result<T> {
    r.map_err(|e| TenancyError::Internal(format!("decoding a stored row: {e}")))
}

fn corrupt(what: &str) -> TenancyError {
    TenancyError::Internal(format!("stored {what} is invalid"))
}

fn org_from_row(r: &AnyRow) -> Result<Organization> {
    let owner: Option<String> = stored(r.try_get("owner_user_id"))?;
    let deleted: Option<i64> = stored(r.try_get("deleted_at"))?;
    Ok(Organization {
        id: parse_id(&stored(r.try_get::<String, _>("id"))?)?,
        slug: OrgSlug::parse(&stored(r.try_get::<String, _>("slug"))?).map_err(|_| corrupt("slug"))?,
        display_name: DisplayName::parse(&stored(r.try_get::<String, _>("display_name"))?, "display_name")
            .map_err(|_| corrupt("display name"))?,
        seat_limit: count(stored(r.try_get("seat_limit"))?),
        allowed_domains: Vec::new(),
        domains: Vec::new(),
        metadata: json_map(&stored(r.try_get::<String, _>("metadata"))?),
        status: OrgStatus::from_db(&stored(r.try_get::<String, _>("status"))?)?,
        owner_user_id: owner.as_deref().map(parse_id).transpose()?,
        created_at: Timestamp(stored(r.try_get("created_at"))?),
        updated_at: Timestamp(stored(r.try_get("updated_at"))?),
        deleted_at: deleted.map(Timestamp),
    })
}

fn member_from_row(r: &AnyRow) -> Result<Member> {
    Ok(Member {
        organization_id: parse_id(&stored(r.try_get::<String, _>("org_id"))?)?,
        user_id: parse_id(&stored(r.try_get::<String, _>("user_id"))?)?,
        email: stored(r.try_get("primary_email"))?,
        display_name: stored(r.try_get("display_name"))?,
        roles: Vec::new(),
        status: if stored(r.try_get::<String, _>("status"))? == "active" {
            MemberStatus::Active
        } else {
            MemberStatus::Removed
        },
        version: stored(r.try_get("version"))?,
        invited_by: stored(r.try_get("invited_by"))?,
        created_at: Timestamp(stored(r.try_get("created_at"))?),
        updated_at: Timestamp(stored(r.try_get("updated_at"))?),
    })
}

fn user_from_row(r: &AnyRow) -> Result<User> {
    Ok(User {
        id: parse_id(&stored(r.try_get::<String, _>("id"))?)?,
        primary_email: stored(r.try_get("primary_email"))?,
        email_verified: stored(r.try_get::<i64, _>("email_verified"))? != 0,
        display_name: stored(r.try_get("display_name"))?,
        created_at: Timestamp(stored(r.try_get("created_at"))?),
    })
}

fn role_from(name: String) -> Result<RoleName> {
    RoleName::parse(&name).map_err(|_| corrupt("role name"))
}

fn role_from_row(r: &AnyRow) -> Result<Role> {
    let perms: Vec<String> = serde_json::from_str(&stored(r.try_get::<String, _>("permissions"))?).unwrap_or_default();
    Ok(Role {
        organization_id: Some(parse_id(&stored(r.try_get::<String, _>("org_id"))?)?),
        name: role_from(stored(r.try_get("name"))?)?,
        description: stored(r.try_get("description"))?,
        permissions: perms
            .iter()
            .map(|p| Permission::parse(p).map_err(|_| corrupt("permission")))
            .collect::<Result<_>>()?,
        created_at: Timestamp(stored(r.try_get("created_at"))?),
        updated_at: Timestamp(stored(r.try_get("updated_at"))?),
    })
}

fn connection_from_row(r: &AnyRow) -> Result<SsoConnection> {
    let domains: Vec<String> =
        serde_json::from_str(&stored(r.try_get::<String, _>("hosted_domains"))?).unwrap_or_default();
    let secret: Option<String> = stored(r.try_get("client_secret_sealed"))?;
    Ok(SsoConnection {
        id: parse_id(&stored(r.try_get::<String, _>("id"))?)?,
        organization_id: parse_id(&stored(r.try_get::<String, _>("org_id"))?)?,
        kind: SsoKind::from_db(&stored(r.try_get::<String, _>("kind"))?)?,
        issuer: stored(r.try_get("issuer"))?,
        client_id: stored(r.try_get("client_id"))?,
        hosted_domains: domains
            .iter()
            .map(|d| Domain::parse(d).map_err(|_| corrupt("domain")))
            .collect::<Result<_>>()?,
        tenant_id: stored(r.try_get("tenant_id"))?,
        enabled: stored(r.try_get::<i64, _>("enabled"))? != 0,
        has_client_secret: secret.is_some(),
        created_at: Timestamp(stored(r.try_get("created_at"))?),
    })
}
