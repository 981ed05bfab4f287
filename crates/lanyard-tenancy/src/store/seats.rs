//! Seats: reservations and their claims, usage, the seat epoch.

use super::*;

impl TenancyStore {
    /// Locks the organization row for the rest of the transaction (see the module docs).
    pub(super) async fn lock_org(&self, tx: &mut Tx, id: OrganizationId) -> Result<OrgLock> {
        let row = sqlx::query(
            "UPDATE organizations SET seat_epoch = seat_epoch + 1 WHERE id = $1
             RETURNING seat_limit, status, owner_user_id",
        )
        .bind(id.to_string())
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(TenancyError::OrganizationNotFound)?;
        let owner: Option<String> = row.try_get("owner_user_id")?;
        Ok(OrgLock {
            id,
            seat_limit: count(row.try_get("seat_limit")?),
            status: OrgStatus::from_db(&row.try_get::<String, _>("status")?)?,
            owner: owner.as_deref().map(parse_id).transpose()?,
        })
    }

    pub(super) async fn count_seats(&self, tx: &mut Tx, lock: &OrgLock, now: Timestamp) -> Result<SeatUsage> {
        self.count_seats_on(tx, lock.id, lock.seat_limit, now).await
    }

    /// Counts the seats in use: active memberships plus held, unexpired reservations.
    pub(super) async fn count_seats_on(
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
        .await?;
        Ok(SeatUsage {
            organization_id: org,
            seat_limit,
            active: count(row.try_get("active")?),
            reserved: count(row.try_get("reserved")?),
        })
    }

    pub(super) async fn require_free_seat(&self, tx: &mut Tx, lock: &OrgLock, now: Timestamp) -> Result<()> {
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
        .await?
        .ok_or(TenancyError::OrganizationNotFound)?;
        let next: Option<i64> = row.try_get("next_expiry")?;
        Ok(SeatSnapshot {
            usage: SeatUsage {
                organization_id: id,
                seat_limit: count(row.try_get("seat_limit")?),
                active: count(row.try_get("active")?),
                reserved: count(row.try_get("reserved")?),
            },
            epoch: row.try_get("seat_epoch")?,
            read_at: now,
            next_expiry: next.map(Timestamp),
        })
    }

    /// Seat usage now (a read; expired reservations count as free).
    pub async fn seat_usage(&self, id: OrganizationId) -> Result<SeatUsage> {
        let org = self.get_organization(id).await?.ok_or(TenancyError::OrganizationNotFound)?;
        let mut conn = self.db.pool.acquire().await?;
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
        self.transaction(|open| {
            Box::pin(async move {
                let tx = open.tx;
                let lock = self.lock_org(tx, org).await?;
                if let Some(existing) = self.reservation_in(tx, org, id, change.at).await? {
                    return Ok(existing);
                }
                lock.require_active()?;
                self.require_free_seat(tx, &lock, change.at).await?;
                sqlx::query(
                    "INSERT INTO seat_reservations (id, org_id, expires_at, state, created_at, updated_at)
                 VALUES ($1, $2, $3, 'held', $4, $4)",
                )
                .bind(id.to_string())
                .bind(org.to_string())
                .bind(expires_at.0)
                .bind(change.at.0)
                .execute(&mut **tx)
                .await?;
                audit(
                    tx,
                    org,
                    change,
                    "seat.reserved",
                    &format!("reservation:{id}"),
                    &[("expires_at", expires_at.to_rfc3339())],
                )
                .await?;
                Ok(Reservation {
                    id,
                    organization_id: org,
                    expires_at,
                    state: ReservationState::Held,
                    claimed_user_id: None,
                })
            })
        })
        .await
    }

    pub(super) async fn reservation_in(
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
                .await?;
        let Some(row) = row else { return Ok(None) };
        let owner: String = row.try_get("org_id")?;
        if owner != org.to_string() {
            // Another organization's reservation is, to this one, not there at all.
            return Err(TenancyError::ReservationNotFound);
        }
        let expires_at = Timestamp(row.try_get("expires_at")?);
        let claimed: Option<String> = row.try_get("claimed_user_id")?;
        let state = match row.try_get::<String, _>("state")?.as_str() {
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
        self.transaction(|open| {
            Box::pin(async move {
                let tx = open.tx;
                self.lock_org(tx, org).await?;
                let mut res =
                    self.reservation_in(tx, org, id, change.at).await?.ok_or(TenancyError::ReservationNotFound)?;
                match res.state {
                    ReservationState::Claimed => return Err(TenancyError::ReservationClaimed),
                    ReservationState::Released => return Ok(res),
                    ReservationState::Held | ReservationState::Expired => {}
                }
                sqlx::query("UPDATE seat_reservations SET state = 'released', updated_at = $2 WHERE id = $1")
                    .bind(id.to_string())
                    .bind(change.at.0)
                    .execute(&mut **tx)
                    .await?;
                audit(tx, org, change, "seat.released", &format!("reservation:{id}"), &[]).await?;
                res.state = ReservationState::Released;
                Ok(res)
            })
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
        let (user, already, linked) = self
            .transaction(|open| {
                Box::pin(async move {
                    let tx = open.tx;
                    let lock = self.lock_org(tx, org).await?;
                    let res =
                        self.reservation_in(tx, org, id, change.at).await?.ok_or(TenancyError::ReservationNotFound)?;
                    let known = match claimant {
                        Claimant::User(user) => Some(*user),
                        Claimant::Identity(i) => self.linked_user(tx, &i.issuer, &i.subject).await?,
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
                            self.require_user(tx, *user).await?;
                            (*user, false)
                        }
                        (Claimant::Identity(i), Some(user)) => {
                            self.require_connection(tx, org, i.connection_id, &i.issuer).await?;
                            (user, false)
                        }
                        (Claimant::Identity(i), None) => {
                            self.require_connection(tx, org, i.connection_id, &i.issuer).await?;
                            let (user, _) = self.upsert_user_by_email(tx, &i.email, &i.display_name, change).await?;
                            self.mark_email_verified(tx, user, change).await?;
                            let link =
                                Link { issuer: &i.issuer, subject: &i.subject, connection: i.connection_id, user };
                            self.link_identity(tx, org, &link, "invitation", change).await?;
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
            .execute(&mut **tx)
            .await?;
                    self.activate_membership(tx, &lock, user, roles, invited_by, change).await?;
                    audit(
                        tx,
                        org,
                        change,
                        "seat.claimed",
                        &format!("reservation:{id}"),
                        &[("user_id", user.to_string())],
                    )
                    .await?;
                    Ok((user, false, linked))
                })
            })
            .await?;
        let member = self.get_member(org, user).await?.ok_or(TenancyError::MemberNotFound)?;
        Ok((member, already, linked))
    }
}
