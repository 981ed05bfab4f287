//! SSO connections.

use super::*;

/// What a connection's client secret is bound to when sealed: the connection.
fn secret_context(id: &str) -> String {
    format!("sso:{id}")
}

fn secret_context_of_row(keys: &[String]) -> String {
    secret_context(&keys[0])
}

/// The sealed client secrets, for `lanyard keys reencrypt`.
pub(super) const SEALED_SECRETS: lanyard_core::rekey::SealedColumn = lanyard_core::rekey::SealedColumn {
    table: "sso_connections",
    column: "client_secret_sealed",
    keys: &["id"],
    context: secret_context_of_row,
};

impl TenancyStore {
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
        let sealed = new.client_secret.as_deref().map(|s| secrets.seal(s, &secret_context(&id.to_string())));
        let sealed = &sealed;
        self.transaction(|open| Box::pin(async move {
 let tx = open.tx;
            self.lock_org(tx, org).await?.require_not_deleted()?;
            // Counted under the organization's lock, so concurrent creations cannot pass the cap.
            let existing = sqlx::query("SELECT COUNT(*) AS n FROM sso_connections WHERE org_id = $1")
                .bind(org.to_string())
                .fetch_one(&mut **tx)
                .await?;
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
            .execute(&mut **tx)
            .await?;
            audit(tx, org, change, "connection.created", &format!("connection:{id}"), &[
                ("kind", new.kind.as_str().to_owned()),
                ("issuer", new.issuer.clone()),
            ])
            .await?;
            Ok(())
        }))
        .await?;
        self.get_sso_connection(org, id).await?.ok_or(TenancyError::ConnectionNotFound)
    }

    /// One SSO connection of an organization.
    pub async fn get_sso_connection(&self, org: OrganizationId, id: ConnectionId) -> Result<Option<SsoConnection>> {
        let row = sqlx::query(&format!("{CONN_SELECT} WHERE org_id = $1 AND id = $2"))
            .bind(org.to_string())
            .bind(id.to_string())
            .fetch_optional(&self.db.pool)
            .await?;
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
            .await?
            .ok_or(TenancyError::ConnectionNotFound)?;
        let sealed: Option<String> = row.try_get("client_secret_sealed")?;
        sealed
            .map(|s| {
                secrets
                    .open(&s, &secret_context(&id.to_string()))
                    .map_err(TenancyError::failed("a client secret does not open"))
            })
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
        .await?;
        rows.iter().map(connection_from_row).collect()
    }

    /// The enabled connections of the active organization that holds `domain` verified (at most
    /// one organization does: `organization_domains_verified_once`).
    pub async fn find_sso_connections_for_domain(&self, domain: &str) -> Result<Vec<SsoConnection>> {
        let rows = sqlx::query(
            "SELECT c.id, c.org_id, c.kind, c.issuer, c.client_id, c.client_secret_sealed, c.hosted_domains,
                    c.tenant_id, c.enabled, c.created_at
             FROM sso_connections c JOIN organizations o ON o.id = c.org_id
               JOIN organization_domains d ON d.org_id = c.org_id
             WHERE d.domain = $1 AND d.state = 'verified' AND c.enabled = 1 AND o.status = 'active'
             ORDER BY c.id LIMIT 100",
        )
        .bind(domain)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(connection_from_row).collect()
    }

    /// A page of an organization's SSO connections.
    pub async fn list_sso_connections(&self, org: OrganizationId, page: &Page) -> Result<(Vec<SsoConnection>, String)> {
        let rows = sqlx::query(&format!("{CONN_SELECT} WHERE org_id = $1 AND id > $2 ORDER BY id LIMIT $3"))
            .bind(org.to_string())
            .bind(page.after.clone().unwrap_or_default())
            .bind(page.fetch_limit())
            .fetch_all(&self.db.pool)
            .await?;
        let conns = rows.iter().map(connection_from_row).collect::<Result<Vec<_>>>()?;
        Ok(page.finish(conns, |c| c.id.to_string()))
    }

    /// Deletes an SSO connection.
    pub async fn delete_sso_connection(&self, org: OrganizationId, id: ConnectionId, change: &Change) -> Result<()> {
        self.transaction(|open| {
            Box::pin(async move {
                let tx = open.tx;
                self.lock_org(tx, org).await?;
                let done = sqlx::query("DELETE FROM sso_connections WHERE org_id = $1 AND id = $2")
                    .bind(org.to_string())
                    .bind(id.to_string())
                    .execute(&mut **tx)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err(TenancyError::ConnectionNotFound);
                }
                audit(tx, org, change, "connection.deleted", &format!("connection:{id}"), &[]).await?;
                Ok(())
            })
        })
        .await
    }
}
