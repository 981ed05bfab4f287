//! Invitation storage: the invitations, the email outbox, the invitation audit events and the
//! idempotency records, on Postgres or SQLite through sqlx's `Any` driver (each query written
//! once). Every state change is one transaction that also writes its audit event, and an email
//! is queued in the same transaction as the invitation change it announces (the outbox).
//! Transitions out of `pending` are conditional updates, so two racing writers cannot both win.

use std::collections::BTreeMap;

use lanyard_core::db::{Database, DbErrorKind};
use lanyard_core::page::Page;
use lanyard_core::{Email, EventId, OrganizationId, ReservationId, RoleName, Timestamp, UserId};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::domain::*;
use crate::error::InvitationError;

type Result<T, E = InvitationError> = std::result::Result<T, E>;
use lanyard_core::db::{Open, Tx, Work};

/// The migrations, for both backends.
pub static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Every column the invitation service seals with the key-encryption key, for `lanyard keys
/// reencrypt`: queued emails (bound to their outbox id) and the replies of idempotent calls.
pub const SEALED_COLUMNS: &[lanyard_core::rekey::SealedColumn] = &[
    lanyard_core::rekey::SealedColumn {
        table: "email_outbox",
        column: "sealed_message",
        keys: &["id"],
        context: outbox_context,
    },
    lanyard_core::idempotency::SEALED_REPLIES,
];

fn outbox_context(keys: &[String]) -> String {
    keys[0].clone()
}

/// Who made a change and when, for the audit events.
#[derive(Clone, Debug)]
pub struct Change {
    /// `operator:<key>`, `service:<key>`, `user:<id>` or `system:<worker>`.
    pub actor: String,
    /// When it happens.
    pub at: Timestamp,
}

/// A message to queue in the outbox, already rendered and sealed.
#[derive(Clone, Debug)]
pub struct NewEmail {
    pub id: String,
    pub recipient: Email,
    pub sealed_message: String,
}

/// A message the mailer has claimed.
#[derive(Clone, Debug)]
pub struct OutboxMessage {
    pub id: String,
    pub invitation_id: String,
    pub recipient: String,
    pub sealed_message: Option<String>,
    /// Attempts including the one just claimed.
    pub attempts: u32,
}

/// How a pending invitation ends, other than by acceptance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    Revoked,
    Expired,
}

/// The invitation tables.
#[derive(Clone, Debug)]
pub struct InvitationStore {
    db: Database,
}

const INVITATION_COLUMNS: &str = "id, org_id, email, roles, status, reservation_id, inviter, inviter_display_name, \
     org_slug, org_display_name, created_at, expires_at, accepted_at, accepted_user_id, revoked_at, email_delivery, \
     email_error";

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("maps and lists of strings serialize")
}

/// Counts a committed invitation change, for `/metrics`.
fn committed(action: &'static str) {
    metrics::counter!("lanyard_invitation_events_total", "action" => action).increment(1);
}

fn corrupt(what: &str, value: &str) -> InvitationError {
    InvitationError::Internal(format!("stored {what} {value:?} is invalid"))
}

impl InvitationStore {
    /// Wraps a connected database (migrated separately).
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Runs the invitation migrations for this backend.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        self.db.migrate(&MIGRATIONS).await
    }

    /// The database, for health checks.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// One transaction (see [`Database::transaction`]): `?` turns database errors into InvitationErrors.
    async fn transaction<'env, T>(
        &self,
        work: impl for<'t> FnMut(Open<'t, 'env>) -> Work<'t, T, InvitationError>,
    ) -> Result<T> {
        self.db.transaction(work).await
    }

    fn invitation_from_row(&self, row: &AnyRow) -> Result<Invitation> {
        let get_s = |c: &str| -> Result<String> { Ok(row.try_get::<String, _>(c)?) };
        let get_os = |c: &str| -> Result<Option<String>> { Ok(row.try_get::<Option<String>, _>(c)?) };
        let get_ot = |c: &str| -> Result<Option<Timestamp>> { Ok(row.try_get::<Option<i64>, _>(c)?.map(Timestamp)) };
        let id = get_s("id")?;
        let org = get_s("org_id")?;
        let email = get_s("email")?;
        let roles: Vec<String> =
            serde_json::from_str(&get_s("roles")?).map_err(|e| corrupt("roles", &e.to_string()))?;
        let reservation = get_s("reservation_id")?;
        let accepted_user = get_os("accepted_user_id")?;
        Ok(Invitation {
            id: InvitationId::parse(&id).map_err(|_| corrupt("invitation id", &id))?,
            organization_id: OrganizationId::parse(&org).map_err(|_| corrupt("organization id", &org))?,
            email: Email::parse(&email).map_err(|_| corrupt("email", &email))?,
            roles: roles.iter().map(|r| RoleName::parse(r).map_err(|_| corrupt("role", r))).collect::<Result<_>>()?,
            status: InvitationStatus::from_db(&get_s("status")?)?,
            inviter: get_s("inviter")?,
            inviter_display_name: get_s("inviter_display_name")?,
            organization_slug: get_s("org_slug")?,
            organization_display_name: get_s("org_display_name")?,
            reservation_id: ReservationId::parse(&reservation).map_err(|_| corrupt("reservation id", &reservation))?,
            created_at: Timestamp(row.try_get("created_at")?),
            expires_at: Timestamp(row.try_get("expires_at")?),
            accepted_at: get_ot("accepted_at")?,
            accepted_user_id: accepted_user
                .as_deref()
                .map(|u| UserId::parse(u).map_err(|_| corrupt("user id", u)))
                .transpose()?,
            revoked_at: get_ot("revoked_at")?,
            delivery: Delivery::from_db(&get_s("email_delivery")?)?,
            delivery_error: get_os("email_error")?,
        })
    }

    // ----- invitations ---------------------------------------------------------------------

    /// Records a new pending invitation (and queues its email) in one transaction. Pending
    /// invitations for the same email that are past their expiry are marked expired first; a
    /// live one makes this fail with [`InvitationError::InvitationPending`].
    pub async fn create(
        &self,
        invitation: &Invitation,
        token_hash: &str,
        email: Option<&NewEmail>,
        change: &Change,
    ) -> Result<()> {
        let created = self.transaction(|open| Box::pin(async move {
 let tx = open.tx;
            let stale = sqlx::query(
                "SELECT id FROM invitations WHERE org_id = $1 AND email = $2 AND status = 'pending' AND expires_at <= $3",
            )
            .bind(invitation.organization_id.to_string())
            .bind(invitation.email.as_str())
            .bind(change.at.0)
            .fetch_all(&mut **tx)
            .await?;
            for row in stale {
                let id: String = row.try_get("id")?;
                let id = InvitationId::parse(&id).map_err(|_| corrupt("invitation id", &id))?;
                self.end_in(tx, invitation.organization_id, id, Ending::Expired, change, &[]).await?;
            }
            let inserted = sqlx::query(&format!(
                "INSERT INTO invitations ({INVITATION_COLUMNS}, token_hash, updated_at)
                 VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $8, $9, $10, $11, NULL, NULL, NULL, $12, NULL, $13, $10)"
            ))
            .bind(invitation.id.to_string())
            .bind(invitation.organization_id.to_string())
            .bind(invitation.email.as_str())
            .bind(to_json(&invitation.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>()))
            .bind(invitation.reservation_id.to_string())
            .bind(&invitation.inviter)
            .bind(&invitation.inviter_display_name)
            .bind(&invitation.organization_slug)
            .bind(&invitation.organization_display_name)
            .bind(invitation.created_at.0)
            .bind(invitation.expires_at.0)
            .bind(invitation.delivery.as_str())
            .bind(token_hash)
            .execute(&mut **tx)
            .await;
            if let Err(e) = inserted {
                if lanyard_core::db::classify(&e) == DbErrorKind::UniqueViolation {
                    // Named once the transaction has rolled back, below.
                    return Err(InvitationError::InvitationPending { existing: String::new() });
                }
                return Err(e.into());
            }
            if let Some(email) = email {
                self.queue_email(tx, invitation, email, change.at).await?;
            }
            let roles: Vec<&str> = invitation.roles.iter().map(|r| r.as_str()).collect();
            self.event(tx, invitation.organization_id, invitation.id, change, "invitation.created", &[
                ("email", invitation.email.to_string()),
                ("roles", roles.join(",")),
                ("expires_at", invitation.expires_at.to_rfc3339()),
                ("reservation_id", invitation.reservation_id.to_string()),
                ("delivery", invitation.delivery.as_str().to_owned()),
            ])
            .await?;
            Ok(())
        }))
        .await;
        if let Err(InvitationError::InvitationPending { .. }) = created {
            let existing = self.pending_for(invitation.organization_id, &invitation.email, change.at).await?;
            return Err(InvitationError::InvitationPending {
                existing: existing.map(|i| i.to_string()).unwrap_or_default(),
            });
        }
        created?;
        committed("invitation.created");
        Ok(())
    }

    /// The live pending invitation for an email, if any.
    pub async fn pending_for(
        &self,
        org: OrganizationId,
        email: &Email,
        now: Timestamp,
    ) -> Result<Option<InvitationId>> {
        let row = sqlx::query(
            "SELECT id FROM invitations WHERE org_id = $1 AND email = $2 AND status = 'pending' AND expires_at > $3",
        )
        .bind(org.to_string())
        .bind(email.as_str())
        .bind(now.0)
        .fetch_optional(&self.db.pool)
        .await?;
        row.map(|r| {
            let id: String = r.try_get("id")?;
            InvitationId::parse(&id).map_err(|_| corrupt("invitation id", &id))
        })
        .transpose()
    }

    /// One invitation of an organization (another organization's is not there at all).
    pub async fn get(&self, org: OrganizationId, id: InvitationId) -> Result<Option<Invitation>> {
        let row = sqlx::query(&format!("SELECT {INVITATION_COLUMNS} FROM invitations WHERE id = $1 AND org_id = $2"))
            .bind(id.to_string())
            .bind(org.to_string())
            .fetch_optional(&self.db.pool)
            .await?;
        row.map(|r| self.invitation_from_row(&r)).transpose()
    }

    /// The invitation whose current token hashes to `hash`.
    pub async fn by_token_hash(&self, hash: &str) -> Result<Option<Invitation>> {
        let row = sqlx::query(&format!("SELECT {INVITATION_COLUMNS} FROM invitations WHERE token_hash = $1"))
            .bind(hash)
            .fetch_optional(&self.db.pool)
            .await?;
        row.map(|r| self.invitation_from_row(&r)).transpose()
    }

    /// Whether `hash` is the token of a link that a resend replaced.
    pub async fn is_superseded(&self, hash: &str) -> Result<bool> {
        let row = sqlx::query("SELECT invitation_id FROM superseded_tokens WHERE token_hash = $1")
            .bind(hash)
            .fetch_optional(&self.db.pool)
            .await?;
        Ok(row.is_some())
    }

    /// A page of an organization's invitations, newest first, optionally in one state (as read
    /// at `now`: a pending invitation past its expiry counts as expired).
    pub async fn list(
        &self,
        org: OrganizationId,
        status: Option<InvitationStatus>,
        page: &Page,
        now: Timestamp,
    ) -> Result<(Vec<Invitation>, String)> {
        let filter = match status {
            None => "1 = 1",
            Some(InvitationStatus::Pending) => "status = 'pending' AND expires_at > $4",
            Some(InvitationStatus::Expired) => "(status = 'expired' OR (status = 'pending' AND expires_at <= $4))",
            Some(InvitationStatus::Accepted) => "status = 'accepted' AND $4 = $4",
            Some(InvitationStatus::Revoked) => "status = 'revoked' AND $4 = $4",
        };
        let rows = sqlx::query(&format!(
            "SELECT {INVITATION_COLUMNS} FROM invitations
             WHERE org_id = $1 AND ($2 = '' OR id < $2) AND {filter} ORDER BY id DESC LIMIT $3"
        ))
        .bind(org.to_string())
        .bind(page.after.clone().unwrap_or_default())
        .bind(page.fetch_limit())
        .bind(now.0)
        .fetch_all(&self.db.pool)
        .await?;
        let rows = rows.iter().map(|r| self.invitation_from_row(r)).collect::<Result<Vec<_>>>()?;
        Ok(page.finish(rows, |i| i.id.to_string()))
    }

    /// Marks a pending invitation accepted by `user`. False when it is no longer pending (another
    /// request finished first).
    pub async fn mark_accepted(
        &self,
        org: OrganizationId,
        id: InvitationId,
        user: UserId,
        change: &Change,
        details: &[(&str, String)],
    ) -> Result<bool> {
        self.transaction(|open| {
            Box::pin(async move {
                let tx = open.tx;
                let done = sqlx::query(
                "UPDATE invitations SET status = 'accepted', accepted_at = $3, accepted_user_id = $4, updated_at = $3
                 WHERE id = $1 AND org_id = $2 AND status = 'pending'",
            )
            .bind(id.to_string())
            .bind(org.to_string())
            .bind(change.at.0)
            .bind(user.to_string())
            .execute(&mut **tx)
            .await?;
                if done.rows_affected() == 0 {
                    return Ok(false);
                }
                self.cancel_queued(tx, id, change.at).await?;
                self.event(tx, org, id, change, "invitation.accepted", details).await?;
                Ok(true)
            })
        })
        .await
        .inspect(|&accepted| {
            if accepted {
                committed("invitation.accepted")
            }
        })
    }

    /// Ends a pending invitation as revoked or expired. False when it was no longer pending.
    pub async fn end(
        &self,
        org: OrganizationId,
        id: InvitationId,
        ending: Ending,
        change: &Change,
        details: &[(&str, String)],
    ) -> Result<bool> {
        self.transaction(|open| {
            Box::pin(async move {
                let tx = open.tx;
                let ended = self.end_in(tx, org, id, ending, change, details).await?;
                Ok(ended)
            })
        })
        .await
        .inspect(|&ended| {
            if ended {
                committed(match ending {
                    Ending::Revoked => "invitation.revoked",
                    Ending::Expired => "invitation.expired",
                })
            }
        })
    }

    async fn end_in(
        &self,
        tx: &mut Tx,
        org: OrganizationId,
        id: InvitationId,
        ending: Ending,
        change: &Change,
        details: &[(&str, String)],
    ) -> Result<bool> {
        let (status, revoked_at, action) = match ending {
            Ending::Revoked => ("revoked", Some(change.at.0), "invitation.revoked"),
            Ending::Expired => ("expired", None, "invitation.expired"),
        };
        let done = sqlx::query(
            "UPDATE invitations SET status = $3, revoked_at = $4, updated_at = $5
             WHERE id = $1 AND org_id = $2 AND status = 'pending'",
        )
        .bind(id.to_string())
        .bind(org.to_string())
        .bind(status)
        .bind(revoked_at)
        .bind(change.at.0)
        .execute(&mut **tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        self.cancel_queued(tx, id, change.at).await?;
        self.event(tx, org, id, change, action, details).await?;
        Ok(true)
    }

    /// Gives a pending invitation a new token, reservation and expiry (a resend), queues its new
    /// email, cancels the old one and remembers the old token as superseded. False when the
    /// invitation is no longer pending on `old_reservation`.
    #[allow(clippy::too_many_arguments)]
    pub async fn replace_token(
        &self,
        invitation: &Invitation,
        old_token_hash: Option<&str>,
        new_token_hash: &str,
        new_reservation: ReservationId,
        new_expires_at: Timestamp,
        email: Option<&NewEmail>,
        change: &Change,
    ) -> Result<bool> {
        let delivery = if email.is_some() { Delivery::Queued } else { Delivery::NotSent };
        self.transaction(|open| {
            Box::pin(async move {
                let tx = open.tx;
                let old_hash: Option<String> = match old_token_hash {
                    Some(h) => Some(h.to_owned()),
                    None => sqlx::query("SELECT token_hash FROM invitations WHERE id = $1")
                        .bind(invitation.id.to_string())
                        .fetch_optional(&mut **tx)
                        .await?
                        .map(|r| r.try_get::<String, _>("token_hash"))
                        .transpose()?,
                };
                let done = sqlx::query(
                    "UPDATE invitations SET token_hash = $3, reservation_id = $4, expires_at = $5, email_delivery = $6,
                        email_error = NULL, updated_at = $7
                 WHERE id = $1 AND status = 'pending' AND reservation_id = $2",
                )
                .bind(invitation.id.to_string())
                .bind(invitation.reservation_id.to_string())
                .bind(new_token_hash)
                .bind(new_reservation.to_string())
                .bind(new_expires_at.0)
                .bind(delivery.as_str())
                .bind(change.at.0)
                .execute(&mut **tx)
                .await?;
                if done.rows_affected() == 0 {
                    return Ok(false);
                }
                if let Some(old) = old_hash {
                    sqlx::query(
                        "INSERT INTO superseded_tokens (token_hash, invitation_id, superseded_at) VALUES ($1, $2, $3)
                     ON CONFLICT (token_hash) DO NOTHING",
                    )
                    .bind(old)
                    .bind(invitation.id.to_string())
                    .bind(change.at.0)
                    .execute(&mut **tx)
                    .await?;
                }
                self.cancel_queued(tx, invitation.id, change.at).await?;
                if let Some(email) = email {
                    self.queue_email(tx, invitation, email, change.at).await?;
                }
                self.event(
                    tx,
                    invitation.organization_id,
                    invitation.id,
                    change,
                    "invitation.resent",
                    &[
                        ("expires_at", new_expires_at.to_rfc3339()),
                        ("reservation_id", new_reservation.to_string()),
                        ("delivery", delivery.as_str().to_owned()),
                    ],
                )
                .await?;
                Ok(true)
            })
        })
        .await
        .inspect(|&replaced| {
            if replaced {
                committed("invitation.resent")
            }
        })
    }

    /// Pending invitations past their expiry, oldest first.
    pub async fn pending_past_expiry(&self, now: Timestamp, limit: i64) -> Result<Vec<Invitation>> {
        let rows = sqlx::query(&format!(
            "SELECT {INVITATION_COLUMNS} FROM invitations WHERE status = 'pending' AND expires_at <= $1
             ORDER BY expires_at LIMIT $2"
        ))
        .bind(now.0)
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(|r| self.invitation_from_row(r)).collect()
    }

    /// Organizations with pending invitations, in id order after `after`.
    pub async fn orgs_with_pending(&self, after: &str, limit: i64) -> Result<Vec<OrganizationId>> {
        let rows = sqlx::query(
            "SELECT DISTINCT org_id FROM invitations WHERE status = 'pending' AND org_id > $1 ORDER BY org_id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("org_id")?;
                OrganizationId::parse(&id).map_err(|_| corrupt("organization id", &id))
            })
            .collect()
    }

    /// Every pending invitation of an organization.
    pub async fn pending_of(&self, org: OrganizationId) -> Result<Vec<Invitation>> {
        let rows = sqlx::query(&format!(
            "SELECT {INVITATION_COLUMNS} FROM invitations WHERE org_id = $1 AND status = 'pending' ORDER BY id"
        ))
        .bind(org.to_string())
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(|r| self.invitation_from_row(r)).collect()
    }

    // ----- audit events --------------------------------------------------------------------

    async fn event(
        &self,
        tx: &mut Tx,
        org: OrganizationId,
        invitation: InvitationId,
        change: &Change,
        action: &str,
        details: &[(&str, String)],
    ) -> Result<()> {
        let details: BTreeMap<&str, &str> = details.iter().map(|(k, v)| (*k, v.as_str())).collect();
        sqlx::query(
            "INSERT INTO invitation_events (id, org_id, invitation_id, actor, action, details, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(EventId::new().to_string())
        .bind(org.to_string())
        .bind(invitation.to_string())
        .bind(&change.actor)
        .bind(action)
        .bind(to_json(&details))
        .bind(change.at.0)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// A page of an organization's invitation events, newest first.
    pub async fn list_events(
        &self,
        org: OrganizationId,
        invitation: Option<InvitationId>,
        page: &Page,
    ) -> Result<(Vec<InvitationEvent>, String)> {
        let rows = sqlx::query(
            "SELECT id, org_id, invitation_id, actor, action, details, created_at FROM invitation_events
             WHERE org_id = $1 AND ($2 = '' OR invitation_id = $2) AND ($3 = '' OR id < $3)
             ORDER BY id DESC LIMIT $4",
        )
        .bind(org.to_string())
        .bind(invitation.map(|i| i.to_string()).unwrap_or_default())
        .bind(page.after.clone().unwrap_or_default())
        .bind(page.fetch_limit())
        .fetch_all(&self.db.pool)
        .await?;
        let (rows, next) = page.finish(rows, |r| r.try_get::<String, _>("id").unwrap_or_default());
        let events = rows
            .iter()
            .map(|r| {
                let s = |c: &str| r.try_get::<String, _>(c);
                let (id, inv) = (s("id")?, s("invitation_id")?);
                Ok(InvitationEvent {
                    id: id.parse().map_err(|_| corrupt("event id", &id))?,
                    organization_id: org,
                    invitation_id: InvitationId::parse(&inv).map_err(|_| corrupt("invitation id", &inv))?,
                    actor: s("actor")?,
                    action: s("action")?,
                    details: serde_json::from_str(&s("details")?).unwrap_or_default(),
                    created_at: Timestamp(r.try_get("created_at")?),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((events, next))
    }

    // ----- outbox --------------------------------------------------------------------------

    async fn queue_email(&self, tx: &mut Tx, invitation: &Invitation, email: &NewEmail, now: Timestamp) -> Result<()> {
        sqlx::query(
            "INSERT INTO email_outbox (id, invitation_id, org_id, recipient, sealed_message, status, attempts,
                                       next_attempt_at, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, 'queued', 0, $6, $6, $6)",
        )
        .bind(&email.id)
        .bind(invitation.id.to_string())
        .bind(invitation.organization_id.to_string())
        .bind(email.recipient.as_str())
        .bind(&email.sealed_message)
        .bind(now.0)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Cancels an invitation's queued emails: a revoked, expired, accepted or resent invitation's
    /// old link must not go out.
    async fn cancel_queued(&self, tx: &mut Tx, invitation: InvitationId, now: Timestamp) -> Result<()> {
        sqlx::query(
            "UPDATE email_outbox SET status = 'cancelled', sealed_message = NULL, locked_until = NULL, updated_at = $2
             WHERE invitation_id = $1 AND status = 'queued'",
        )
        .bind(invitation.to_string())
        .bind(now.0)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// How many messages wait for delivery (queued, due or not).
    pub async fn outbox_backlog(&self) -> Result<i64> {
        sqlx::query("SELECT COUNT(*) AS n FROM email_outbox WHERE status = 'queued'")
            .fetch_one(&self.db.pool)
            .await
            .and_then(|r| sqlx::Row::try_get::<i64, _>(&r, "n"))
            .map_err(InvitationError::from)
    }

    /// Claims the next due message for `lease`: no other worker takes it until the lease ends,
    /// so a worker that dies mid-delivery leaves it to be retried, not lost.
    pub async fn claim_next(&self, now: Timestamp, lease_until: Timestamp) -> Result<Option<OutboxMessage>> {
        // The conditions are repeated outside the subquery so that, on Postgres, a row another
        // worker claimed meanwhile is re-checked and skipped rather than claimed twice.
        let row = sqlx::query(
            "UPDATE email_outbox SET locked_until = $2, attempts = attempts + 1, updated_at = $1
             WHERE id = (SELECT id FROM email_outbox
                         WHERE status = 'queued' AND next_attempt_at <= $1
                           AND (locked_until IS NULL OR locked_until <= $1)
                         ORDER BY next_attempt_at LIMIT 1)
               AND status = 'queued' AND (locked_until IS NULL OR locked_until <= $1)
             RETURNING id, invitation_id, recipient, sealed_message, attempts",
        )
        .bind(now.0)
        .bind(lease_until.0)
        .fetch_optional(&self.db.pool)
        .await?;
        row.map(|r| {
            Ok(OutboxMessage {
                id: r.try_get("id")?,
                invitation_id: r.try_get("invitation_id")?,
                recipient: r.try_get("recipient")?,
                sealed_message: r.try_get("sealed_message")?,
                attempts: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
            })
        })
        .transpose()
    }

    /// Records a delivered message (and the invitation's delivery state, if it is still current).
    pub async fn mark_sent(&self, message: &OutboxMessage, now: Timestamp) -> Result<()> {
        self.settle(message, "sent", None, None, now).await
    }

    /// Schedules another attempt.
    pub async fn mark_retry(
        &self,
        message: &OutboxMessage,
        error: &str,
        next: Timestamp,
        now: Timestamp,
    ) -> Result<()> {
        self.settle(message, "queued", Some(error), Some(next), now).await
    }

    /// Gives up on a message.
    pub async fn mark_failed(&self, message: &OutboxMessage, error: &str, now: Timestamp) -> Result<()> {
        self.settle(message, "failed", Some(error), None, now).await
    }

    async fn settle(
        &self,
        message: &OutboxMessage,
        status: &str,
        error: Option<&str>,
        next: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<()> {
        self.transaction(|open| {
            Box::pin(async move {
                let tx = open.tx;
                let done = sqlx::query(
                    "UPDATE email_outbox SET status = $2, last_error = $3, locked_until = NULL, updated_at = $4,
                        next_attempt_at = COALESCE($5, next_attempt_at),
                        sent_at = CASE WHEN $2 = 'sent' THEN $4 ELSE sent_at END,
                        sealed_message = CASE WHEN $2 = 'queued' THEN sealed_message ELSE NULL END
                 WHERE id = $1 AND status = 'queued'",
                )
                .bind(&message.id)
                .bind(status)
                .bind(error)
                .bind(now.0)
                .bind(next.map(|t| t.0))
                .execute(&mut **tx)
                .await?;
                if done.rows_affected() == 1 {
                    // The invitation shows its latest email's state: queued while retrying (with the
                    // last error), then sent or failed.
                    sqlx::query(
                        "UPDATE invitations SET email_delivery = $2, email_error = $3, updated_at = $4
                     WHERE id = $1 AND email_delivery = 'queued'",
                    )
                    .bind(&message.invitation_id)
                    .bind(status)
                    .bind(error)
                    .bind(now.0)
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(())
            })
        })
        .await
    }

    // ----- housekeeping --------------------------------------------------------------------

    /// Deletes outbox rows that were sent or cancelled before `before` (failed ones stay, as the
    /// record of the failure). Idempotency records are pruned by `lanyard_core::idempotency`.
    pub async fn prune_outbox(&self, before: Timestamp) -> Result<u64> {
        let outbox = sqlx::query("DELETE FROM email_outbox WHERE status IN ('sent', 'cancelled') AND updated_at < $1")
            .bind(before.0)
            .execute(&self.db.pool)
            .await?;
        Ok(outbox.rows_affected())
    }
}
