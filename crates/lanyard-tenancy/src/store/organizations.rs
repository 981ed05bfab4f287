//! Organizations: create, read, update, suspend, delete; their domains.

use super::*;

impl TenancyStore {
    /// Creates an organization (and its owner's membership, when an owner email is given).
    pub async fn create_organization(&self, new: &NewOrganization, change: &Change) -> Result<Organization> {
        let id = OrganizationId::new();
        self.transaction(|open| Box::pin(async move {
 let tx = open.tx;
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
            .execute(&mut **tx)
            .await
            .map_err(self.unique_or(TenancyError::SlugTaken))?;
            for domain in &new.allowed_domains {
                self.insert_domain(tx, id, domain, change).await?;
            }
            let domains: Vec<&str> = new.allowed_domains.iter().map(|d| d.as_str()).collect();
            audit(tx, id, change, "organization.created", &format!("organization:{id}"), &[
                ("slug", new.slug.to_string()),
                ("seat_limit", new.seat_limit.to_string()),
                ("allowed_domains", domains.join(",")),
            ])
            .await?;
            if let Some(email) = &new.owner_email {
                let lock = self.lock_org(tx, id).await?;
                let (user_id, _) = self.upsert_user_by_email(tx, email, "", change).await?;
                self.activate_membership(tx, &lock, user_id, &[RoleName::owner()], &change.actor, change)
                    .await?;
            }
            Ok(())
        }))
        .await?;
        self.get_organization(id).await?.ok_or(TenancyError::OrganizationNotFound)
    }

    /// One organization by id.
    pub async fn get_organization(&self, id: OrganizationId) -> Result<Option<Organization>> {
        let row = sqlx::query(&format!("{ORG_SELECT} WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.db.pool)
            .await?;
        self.org_with_domains(row).await
    }

    /// One organization by slug.
    pub async fn get_organization_by_slug(&self, slug: &OrgSlug) -> Result<Option<Organization>> {
        let row = sqlx::query(&format!("{ORG_SELECT} WHERE slug = $1"))
            .bind(slug.as_str())
            .fetch_optional(&self.db.pool)
            .await?;
        self.org_with_domains(row).await
    }

    pub(super) async fn org_with_domains(&self, row: Option<AnyRow>) -> Result<Option<Organization>> {
        let Some(row) = row else { return Ok(None) };
        let mut org = org_from_row(&row)?;
        self.fill_domains(&mut org).await?;
        Ok(Some(org))
    }

    pub(super) async fn fill_domains(&self, org: &mut Organization) -> Result<()> {
        org.domains = self.domains_of(org.id).await?;
        org.allowed_domains = org.domains.iter().map(|d| d.name.clone()).collect();
        Ok(())
    }

    pub(super) async fn domains_of(&self, id: OrganizationId) -> Result<Vec<OrgDomain>> {
        let rows = sqlx::query(&format!("{DOMAIN_SELECT} WHERE org_id = $1 ORDER BY domain"))
            .bind(id.to_string())
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter().map(domain_from_row).collect()
    }

    /// One domain of an organization, with its state and challenge.
    pub async fn domain(&self, id: OrganizationId, domain: &Domain) -> Result<Option<OrgDomain>> {
        let row = sqlx::query(&format!("{DOMAIN_SELECT} WHERE org_id = $1 AND domain = $2"))
            .bind(id.to_string())
            .bind(domain.as_str())
            .fetch_optional(&self.db.pool)
            .await?;
        row.as_ref().map(domain_from_row).transpose()
    }

    /// The organization a domain is verified for, if any.
    pub(super) async fn verified_owner(
        &self,
        conn: &mut sqlx::AnyConnection,
        domain: &Domain,
    ) -> Result<Option<OrganizationId>> {
        let row = sqlx::query("SELECT org_id FROM organization_domains WHERE domain = $1 AND state = 'verified'")
            .bind(domain.as_str())
            .fetch_optional(&mut *conn)
            .await?;
        row.map(|r| parse_id(&stored(r.try_get::<String, _>("org_id"))?)).transpose()
    }

    pub(super) async fn insert_domain(
        &self,
        tx: &mut Tx,
        id: OrganizationId,
        domain: &Domain,
        change: &Change,
    ) -> Result<()> {
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
        .await?;
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
        self.transaction(|open| {
            Box::pin(async move {
                let tx = open.tx;
                let lock = self.lock_org(tx, id).await?;
                lock.require_not_deleted()?;
                let mut details = Vec::new();
                if let Some(limit) = patch.seat_limit {
                    let usage = self.count_seats(tx, &lock, change.at).await?;
                    if limit < usage.used() {
                        return Err(TenancyError::SeatLimitBelowUsage { requested: limit, used: usage.used() });
                    }
                    sqlx::query("UPDATE organizations SET seat_limit = $2 WHERE id = $1")
                        .bind(id.to_string())
                        .bind(i64::from(limit))
                        .execute(&mut **tx)
                        .await?;
                    details.push(("seat_limit", limit.to_string()));
                }
                if let Some(name) = &patch.display_name {
                    sqlx::query("UPDATE organizations SET display_name = $2 WHERE id = $1")
                        .bind(id.to_string())
                        .bind(name.as_str())
                        .execute(&mut **tx)
                        .await?;
                    details.push(("display_name", name.to_string()));
                }
                if let Some(metadata) = &patch.metadata {
                    sqlx::query("UPDATE organizations SET metadata = $2 WHERE id = $1")
                        .bind(id.to_string())
                        .bind(to_json(metadata))
                        .execute(&mut **tx)
                        .await?;
                    details.push(("metadata", "replaced".to_owned()));
                }
                if let Some(status) = patch.status {
                    sqlx::query("UPDATE organizations SET status = $2 WHERE id = $1")
                        .bind(id.to_string())
                        .bind(status.as_str())
                        .execute(&mut **tx)
                        .await?;
                    details.push(("status", status.as_str().to_owned()));
                }
                sqlx::query("UPDATE organizations SET updated_at = $2 WHERE id = $1")
                    .bind(id.to_string())
                    .bind(change.at.0)
                    .execute(&mut **tx)
                    .await?;
                audit(tx, id, change, "organization.updated", &format!("organization:{id}"), &details).await?;
                Ok(())
            })
        })
        .await?;
        self.get_organization(id).await?.ok_or(TenancyError::OrganizationNotFound)
    }

    /// Soft-deletes an organization and frees its held seats. Deleting twice is not an error.
    pub async fn delete_organization(&self, id: OrganizationId, change: &Change) -> Result<Organization> {
        self.transaction(|open| Box::pin(async move {
 let tx = open.tx;
            let lock = self.lock_org(tx, id).await?;
            if lock.status != OrgStatus::Deleted {
                sqlx::query(
                    "UPDATE organizations SET status = 'deleted', deleted_at = $2, updated_at = $2 WHERE id = $1",
                )
                .bind(id.to_string())
                .bind(change.at.0)
                .execute(&mut **tx)
                .await?;
                sqlx::query(
                    "UPDATE seat_reservations SET state = 'released', updated_at = $2 WHERE org_id = $1 AND state = 'held'",
                )
                .bind(id.to_string())
                .bind(change.at.0)
                .execute(&mut **tx)
                .await?;
                audit(tx, id, change, "organization.deleted", &format!("organization:{id}"), &[])
                    .await?;
            }
            Ok(())
        }))
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
        self.transaction(|open| {
            Box::pin(async move {
                let tx = open.tx;
                self.lock_org(tx, id).await?.require_not_deleted()?;
                let existing =
                    sqlx::query("SELECT 1 AS one FROM organization_domains WHERE org_id = $1 AND domain = $2")
                        .bind(id.to_string())
                        .bind(domain.as_str())
                        .fetch_optional(&mut **tx)
                        .await?;
                if existing.is_some() {
                    return Ok(());
                }
                let owner = self.verified_owner(tx, domain).await?;
                if owner.is_some_and(|o| o != id) && !allow_verified_elsewhere {
                    return Err(TenancyError::DomainVerifiedElsewhere);
                }
                let count = sqlx::query("SELECT COUNT(*) AS n FROM organization_domains WHERE org_id = $1")
                    .bind(id.to_string())
                    .fetch_one(&mut **tx)
                    .await?;
                if stored(count.try_get::<i64, _>("n"))? >= MAX_DOMAINS as i64 {
                    return Err(TenancyError::InvalidField {
                        field: "domain",
                        message: format!("at most {MAX_DOMAINS} domains per organization"),
                    });
                }
                self.insert_domain(tx, id, domain, change).await?;
                audit(
                    tx,
                    id,
                    change,
                    "domain.added",
                    &format!("domain:{domain}"),
                    &[("state", DomainState::Pending.as_str().to_owned())],
                )
                .await?;
                Ok(())
            })
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
        self.transaction(|open| {
            Box::pin(async move {
                let tx = open.tx;
                self.lock_org(tx, id).await?.require_not_deleted()?;
                let row = sqlx::query("SELECT state FROM organization_domains WHERE org_id = $1 AND domain = $2")
                    .bind(id.to_string())
                    .bind(domain.as_str())
                    .fetch_optional(&mut **tx)
                    .await?
                    .ok_or(TenancyError::DomainNotFound)?;
                if stored(row.try_get::<String, _>("state"))? == DomainState::Verified.as_str() {
                    return Ok(());
                }
                sqlx::query(
                    "UPDATE organization_domains SET state = 'verified', verified_at = $3, verification_method = $4
                 WHERE org_id = $1 AND domain = $2",
                )
                .bind(id.to_string())
                .bind(domain.as_str())
                .bind(change.at.0)
                .bind(method.as_str())
                .execute(&mut **tx)
                .await
                .map_err(self.unique_or(TenancyError::DomainVerifiedElsewhere))?;
                audit(
                    tx,
                    id,
                    change,
                    "domain.verified",
                    &format!("domain:{domain}"),
                    &[("method", method.as_str().to_owned())],
                )
                .await?;
                Ok(())
            })
        })
        .await?;
        let org = self.get_organization(id).await?.ok_or(TenancyError::OrganizationNotFound)?;
        let verified = self.domain(id, domain).await?.ok_or(TenancyError::DomainNotFound)?;
        Ok((org, verified))
    }

    /// Removes an allowed domain.
    pub async fn remove_domain(&self, id: OrganizationId, domain: &Domain, change: &Change) -> Result<Organization> {
        self.transaction(|open| {
            Box::pin(async move {
                let tx = open.tx;
                self.lock_org(tx, id).await?.require_not_deleted()?;
                let done =
                    sqlx::query("DELETE FROM organization_domains WHERE org_id = $1 AND domain = $2 RETURNING state")
                        .bind(id.to_string())
                        .bind(domain.as_str())
                        .fetch_optional(&mut **tx)
                        .await?
                        .ok_or(TenancyError::DomainNotFound)?;
                let state: String = stored(done.try_get("state"))?;
                audit(tx, id, change, "domain.removed", &format!("domain:{domain}"), &[("state", state)]).await?;
                Ok(())
            })
        })
        .await?;
        self.get_organization(id).await?.ok_or(TenancyError::OrganizationNotFound)
    }
}
