//! Members: add, update roles, remove, ownership; users.

use super::*;

impl TenancyStore {
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
        let (user, created) = self
            .transaction(|open| {
                Box::pin(async move {
                    let tx = open.tx;
                    let lock = self.lock_org(tx, org).await?;
                    lock.require_active()?;
                    if enforce_domains {
                        let allowed =
                            sqlx::query("SELECT 1 AS one FROM organization_domains WHERE org_id = $1 AND domain = $2")
                                .bind(org.to_string())
                                .bind(email.domain().as_str())
                                .fetch_optional(&mut **tx)
                                .await?;
                        if allowed.is_none() {
                            return Err(TenancyError::EmailDomainNotAllowed);
                        }
                    }
                    let (user, created) = self.upsert_user_by_email(tx, email, display_name, change).await?;
                    self.activate_membership(tx, &lock, user, roles, &change.actor, change).await?;
                    Ok((user, created))
                })
            })
            .await?;
        let member = self.get_member(org, user).await?.ok_or(TenancyError::MemberNotFound)?;
        Ok((member, created))
    }

    pub(super) async fn upsert_user_by_email(
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
        .await?;
        let row = sqlx::query("SELECT id FROM users WHERE primary_email = $1")
            .bind(email.as_str())
            .fetch_one(&mut **tx)
            .await?;
        let id: String = row.try_get("id")?;
        Ok((parse_id(&id)?, inserted.rows_affected() == 1))
    }

    pub(super) async fn require_user(&self, tx: &mut Tx, user: UserId) -> Result<()> {
        sqlx::query("SELECT id FROM users WHERE id = $1")
            .bind(user.to_string())
            .fetch_optional(&mut **tx)
            .await?
            .map(|_| ())
            .ok_or(TenancyError::UserNotFound)
    }

    pub(super) async fn validate_roles(&self, tx: &mut Tx, org: OrganizationId, roles: &[RoleName]) -> Result<()> {
        for role in roles {
            if is_built_in(role) {
                continue;
            }
            let found = sqlx::query("SELECT name FROM roles WHERE org_id = $1 AND name = $2")
                .bind(org.to_string())
                .bind(role.as_str())
                .fetch_optional(&mut **tx)
                .await?;
            if found.is_none() {
                return Err(TenancyError::RoleNotFound(role.to_string()));
            }
        }
        Ok(())
    }

    /// Makes `user` an active member with `roles`, seat-checked. The caller holds the org lock and
    /// has already accounted for a reservation being turned into this membership, if any.
    pub(super) async fn activate_membership(
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
            .await?;
        let version = match &existing {
            Some(row) if row.try_get::<String, _>("status")? == "active" => {
                return Err(TenancyError::MemberExists);
            }
            Some(row) => row.try_get::<i64, _>("version")? + 1,
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
        .await?;
        self.replace_roles(tx, org, user, roles).await?;
        if wants_owner {
            sqlx::query("UPDATE organizations SET owner_user_id = $2 WHERE id = $1")
                .bind(org.to_string())
                .bind(user.to_string())
                .execute(&mut **tx)
                .await?;
        }
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        audit(tx, org, change, "member.added", &format!("user:{user}"), &[("roles", names.join(","))]).await
    }

    pub(super) async fn replace_roles(
        &self,
        tx: &mut Tx,
        org: OrganizationId,
        user: UserId,
        roles: &[RoleName],
    ) -> Result<()> {
        sqlx::query("DELETE FROM membership_roles WHERE org_id = $1 AND user_id = $2")
            .bind(org.to_string())
            .bind(user.to_string())
            .execute(&mut **tx)
            .await?;
        for role in roles {
            sqlx::query("INSERT INTO membership_roles (org_id, user_id, role) VALUES ($1, $2, $3)")
                .bind(org.to_string())
                .bind(user.to_string())
                .bind(role.as_str())
                .execute(&mut **tx)
                .await?;
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
        .await?;
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
            .await?;
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
            .await?;
        match row {
            Some(row) => self.get_member(org, parse_id(&row.try_get::<String, _>("id")?)?).await,
            None => Ok(None),
        }
    }

    pub(super) async fn roles_of(&self, org: OrganizationId, user: UserId) -> Result<Vec<RoleName>> {
        let rows = sqlx::query("SELECT role FROM membership_roles WHERE org_id = $1 AND user_id = $2 ORDER BY role")
            .bind(org.to_string())
            .bind(user.to_string())
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter().map(|r| role_from(r.try_get("role")?)).collect()
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
        .await?;
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
        self.transaction(|open| {
            Box::pin(async move {
                let tx = open.tx;
                let lock = self.lock_org(tx, org).await?;
                lock.require_not_deleted()?;
                self.require_active_member(tx, org, user).await?;
                let is_owner = lock.owner == Some(user);
                let wants_owner = roles.contains(&RoleName::owner());
                if is_owner && !wants_owner {
                    return Err(TenancyError::OwnerProtected);
                }
                if wants_owner && !is_owner {
                    return Err(TenancyError::OwnerExists);
                }
                self.validate_roles(tx, org, roles).await?;
                self.bump_version(tx, org, user, change).await?;
                self.replace_roles(tx, org, user, roles).await?;
                let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
                audit(tx, org, change, "member.roles_updated", &format!("user:{user}"), &[("roles", names.join(","))])
                    .await?;
                Ok(())
            })
        })
        .await?;
        self.get_member(org, user).await?.ok_or(TenancyError::MemberNotFound)
    }

    pub(super) async fn require_active_member(&self, tx: &mut Tx, org: OrganizationId, user: UserId) -> Result<()> {
        let row = sqlx::query("SELECT status FROM memberships WHERE org_id = $1 AND user_id = $2")
            .bind(org.to_string())
            .bind(user.to_string())
            .fetch_optional(&mut **tx)
            .await?;
        match row {
            Some(r) if r.try_get::<String, _>("status")? == "active" => Ok(()),
            _ => Err(TenancyError::MemberNotFound),
        }
    }

    pub(super) async fn bump_version(
        &self,
        tx: &mut Tx,
        org: OrganizationId,
        user: UserId,
        change: &Change,
    ) -> Result<()> {
        sqlx::query("UPDATE memberships SET version = version + 1, updated_at = $3 WHERE org_id = $1 AND user_id = $2")
            .bind(org.to_string())
            .bind(user.to_string())
            .bind(change.at.0)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Removes a member: frees the seat, bumps the version. The owner cannot be removed.
    pub async fn remove_member(&self, org: OrganizationId, user: UserId, change: &Change) -> Result<Member> {
        let before = self
            .transaction(|open| {
                Box::pin(async move {
                    let tx = open.tx;
                    let lock = self.lock_org(tx, org).await?;
                    self.require_active_member(tx, org, user).await?;
                    if lock.owner == Some(user) {
                        return Err(TenancyError::OwnerProtected);
                    }
                    let roles = {
                        let rows = sqlx::query(
                            "SELECT role FROM membership_roles WHERE org_id = $1 AND user_id = $2 ORDER BY role",
                        )
                        .bind(org.to_string())
                        .bind(user.to_string())
                        .fetch_all(&mut **tx)
                        .await?;
                        rows.iter().map(|r| role_from(r.try_get("role")?)).collect::<Result<Vec<_>>>()?
                    };
                    sqlx::query(
                        "UPDATE memberships SET status = 'removed', version = version + 1, updated_at = $3
                 WHERE org_id = $1 AND user_id = $2",
                    )
                    .bind(org.to_string())
                    .bind(user.to_string())
                    .bind(change.at.0)
                    .execute(&mut **tx)
                    .await?;
                    self.replace_roles(tx, org, user, &[]).await?;
                    audit(tx, org, change, "member.removed", &format!("user:{user}"), &[]).await?;
                    Ok(roles)
                })
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
        let previous = self
            .transaction(|open| {
                Box::pin(async move {
                    let tx = open.tx;
                    let lock = self.lock_org(tx, org).await?;
                    lock.require_active()?;
                    self.require_active_member(tx, org, new_owner).await?;
                    if lock.owner == Some(new_owner) {
                        return Ok(None);
                    }
                    if let Some(prev) = lock.owner {
                        self.bump_version(tx, org, prev, change).await?;
                        self.replace_roles(tx, org, prev, &[RoleName::admin()]).await?;
                    }
                    self.bump_version(tx, org, new_owner, change).await?;
                    self.replace_roles(tx, org, new_owner, &[RoleName::owner()]).await?;
                    sqlx::query("UPDATE organizations SET owner_user_id = $2, updated_at = $3 WHERE id = $1")
                        .bind(org.to_string())
                        .bind(new_owner.to_string())
                        .bind(change.at.0)
                        .execute(&mut **tx)
                        .await?;
                    let prev_text = lock.owner.map(|p| p.to_string()).unwrap_or_default();
                    audit(
                        tx,
                        org,
                        change,
                        "ownership.transferred",
                        &format!("user:{new_owner}"),
                        &[("previous_owner", prev_text)],
                    )
                    .await?;
                    Ok(lock.owner)
                })
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
        .await?;
        let mut out = Vec::new();
        for row in &rows {
            let org: OrganizationId = parse_id(&row.try_get::<String, _>("org_id")?)?;
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
                .await?;
        row.as_ref().map(user_from_row).transpose()
    }
}
