//! The audit log.

use super::*;

impl TenancyStore {
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
        .await?;
        let events = rows
            .iter()
            .map(|r| {
                Ok(AuditEvent {
                    id: parse_id(&r.try_get::<String, _>("id")?)?,
                    organization_id: org,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    details: json_map(&r.try_get::<String, _>("details")?),
                    created_at: Timestamp(r.try_get("created_at")?),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(page.finish(events, |e| e.id.to_string()))
    }
}

pub(super) async fn audit(
    tx: &mut Tx,
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
    .await?;
    Ok(())
}
