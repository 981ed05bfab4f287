//! Custom roles.

use super::*;

impl TenancyStore {
    /// Creates a custom role.
    pub async fn create_role(&self, org: OrganizationId, role: &Role, change: &Change) -> Result<Role> {
        if is_built_in(&role.name) {
            return Err(TenancyError::RoleExists);
        }
        self.transaction(|open| {
            Box::pin(async move {
                let tx = open.tx;
                self.lock_org(tx, org).await?.require_not_deleted()?;
                let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM roles WHERE org_id = $1")
                    .bind(org.to_string())
                    .fetch_one(&mut **tx)
                    .await
                    .and_then(|r| r.try_get("n"))?;
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
                .execute(&mut **tx)
                .await
                .map_err(self.unique_or(TenancyError::RoleExists))?;
                audit(
                    tx,
                    org,
                    change,
                    "role.created",
                    &format!("role:{}", role.name),
                    &[("permissions", perms.join(","))],
                )
                .await?;
                Ok(())
            })
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
            .await?;
        row.as_ref().map(role_from_row).transpose()
    }

    /// Built-in roles, then custom roles by name.
    pub async fn list_roles(&self, org: OrganizationId, page: &Page) -> Result<(Vec<Role>, String)> {
        let rows = sqlx::query(&format!("{ROLE_SELECT} WHERE org_id = $1 ORDER BY name"))
            .bind(org.to_string())
            .fetch_all(&self.db.pool)
            .await?;
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
        self.transaction(|open| {
            Box::pin(async move {
                let tx = open.tx;
                self.lock_org(tx, org).await?.require_not_deleted()?;
                let found = sqlx::query("SELECT name FROM roles WHERE org_id = $1 AND name = $2")
                    .bind(org.to_string())
                    .bind(name.as_str())
                    .fetch_optional(&mut **tx)
                    .await?;
                if found.is_none() {
                    return Err(TenancyError::RoleNotFound(name.to_string()));
                }
                if let Some(d) = description {
                    sqlx::query("UPDATE roles SET description = $3, updated_at = $4 WHERE org_id = $1 AND name = $2")
                        .bind(org.to_string())
                        .bind(name.as_str())
                        .bind(d)
                        .bind(change.at.0)
                        .execute(&mut **tx)
                        .await?;
                }
                if let Some(perms) = permissions {
                    let perms: Vec<&str> = perms.iter().map(|p| p.as_str()).collect();
                    sqlx::query("UPDATE roles SET permissions = $3, updated_at = $4 WHERE org_id = $1 AND name = $2")
                        .bind(org.to_string())
                        .bind(name.as_str())
                        .bind(to_json(&perms))
                        .bind(change.at.0)
                        .execute(&mut **tx)
                        .await?;
                    sqlx::query(
                        "UPDATE memberships SET version = version + 1, updated_at = $3
                     WHERE org_id = $1 AND status = 'active'
                       AND user_id IN (SELECT user_id FROM membership_roles WHERE org_id = $1 AND role = $2)",
                    )
                    .bind(org.to_string())
                    .bind(name.as_str())
                    .bind(change.at.0)
                    .execute(&mut **tx)
                    .await?;
                }
                audit(tx, org, change, "role.updated", &format!("role:{name}"), &[]).await?;
                Ok(())
            })
        })
        .await?;
        self.get_role(org, name).await?.ok_or_else(|| TenancyError::RoleNotFound(name.to_string()))
    }

    /// Deletes a custom role no active member holds.
    pub async fn delete_role(&self, org: OrganizationId, name: &RoleName, change: &Change) -> Result<()> {
        if is_built_in(name) {
            return Err(TenancyError::RoleBuiltIn);
        }
        self.transaction(|open| {
            Box::pin(async move {
                let tx = open.tx;
                self.lock_org(tx, org).await?.require_not_deleted()?;
                let holders: i64 = sqlx::query(
                    "SELECT COUNT(*) AS n FROM membership_roles r JOIN memberships m
                   ON m.org_id = r.org_id AND m.user_id = r.user_id
                 WHERE r.org_id = $1 AND r.role = $2 AND m.status = 'active'",
                )
                .bind(org.to_string())
                .bind(name.as_str())
                .fetch_one(&mut **tx)
                .await
                .and_then(|r| r.try_get("n"))?;
                if holders > 0 {
                    return Err(TenancyError::RoleInUse(holders as u64));
                }
                let done = sqlx::query("DELETE FROM roles WHERE org_id = $1 AND name = $2")
                    .bind(org.to_string())
                    .bind(name.as_str())
                    .execute(&mut **tx)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err(TenancyError::RoleNotFound(name.to_string()));
                }
                audit(tx, org, change, "role.deleted", &format!("role:{name}"), &[]).await?;
                Ok(())
            })
        })
        .await
    }
}
