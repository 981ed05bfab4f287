//! External identities and their links to users.

use super::*;

impl TenancyStore {
    /// The user an (issuer, subject) is linked to, if any.
    pub(super) async fn linked_user(&self, tx: &mut Tx, issuer: &str, subject: &str) -> Result<Option<UserId>> {
        let row = sqlx::query("SELECT user_id FROM external_identities WHERE issuer = $1 AND subject = $2")
            .bind(issuer)
            .bind(subject)
            .fetch_optional(&mut **tx)
            .await?;
        row.map(|r| parse_id(&stored(r.try_get::<String, _>("user_id"))?)).transpose()
    }

    /// Requires `connection` to be an enabled connection of `org` with exactly `issuer`: a service
    /// vouches for an identity only through the connection that verified it.
    pub(super) async fn require_connection(
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
            .await?
            .ok_or(TenancyError::ConnectionNotFound)?;
        let stored_issuer: String = stored(row.try_get("issuer"))?;
        let enabled = stored(row.try_get::<i64, _>("enabled"))? != 0;
        if !enabled || stored_issuer != issuer {
            return Err(TenancyError::ConnectionNotFound);
        }
        Ok(())
    }

    pub(super) async fn mark_email_verified(&self, tx: &mut Tx, user: UserId, change: &Change) -> Result<()> {
        sqlx::query("UPDATE users SET email_verified = 1, updated_at = $2 WHERE id = $1 AND email_verified = 0")
            .bind(user.to_string())
            .bind(change.at.0)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Links an identity to a user, with an audit event in `org` saying why (`verified_domain` or
    /// `invitation`).
    pub(super) async fn link_identity(
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
        .await?;
        audit(
            tx,
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

    pub(super) async fn try_resolve_identity(
        &self,
        identity: &ExternalIdentity,
        org: OrganizationId,
        dry_run: bool,
        change: &Change,
    ) -> Result<ResolvedIdentity> {
        let (user, link) = self.transaction(|open| Box::pin(async move {
 let tx = open.tx;
            let status = sqlx::query("SELECT status FROM organizations WHERE id = $1")
                .bind(org.to_string())
                .fetch_optional(&mut **tx)
                .await?
                .ok_or(TenancyError::OrganizationNotFound)?;
            match OrgStatus::from_db(&stored(status.try_get::<String, _>("status"))?)? {
                OrgStatus::Active => {}
                OrgStatus::Suspended => return Err(TenancyError::OrganizationSuspended),
                OrgStatus::Deleted => return Err(TenancyError::OrganizationDeleted),
            }
            self.require_connection(tx, org, identity.connection_id, &identity.issuer).await?;
            let (user, link) = match self.linked_user(tx, &identity.issuer, &identity.subject).await? {
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
                    .fetch_optional(&mut **tx)
                    .await?;
                    if verified.is_none() {
                        return Err(TenancyError::EmailDomainNotVerified);
                    }
                    let row = sqlx::query("SELECT id FROM users WHERE primary_email = $1")
                        .bind(email.as_str())
                        .fetch_optional(&mut **tx)
                        .await?
                        // Nobody with this email exists, so nobody with it is a member.
                        .ok_or(TenancyError::MemberNotFound)?;
                    (parse_id(&stored(row.try_get::<String, _>("id"))?)?, true)
                }
            };
            let member = sqlx::query("SELECT 1 AS one FROM memberships WHERE org_id = $1 AND user_id = $2 AND status = 'active'")
                .bind(org.to_string())
                .bind(user.to_string())
                .fetch_optional(&mut **tx)
                .await?;
            if member.is_none() {
                return Err(TenancyError::MemberNotFound);
            }
            if link && !dry_run {
                let l = Link {
                    issuer: &identity.issuer,
                    subject: &identity.subject,
                    connection: identity.connection_id,
                    user,
                };
                self.link_identity(tx, org, &l, "verified_domain", change).await?;
                self.mark_email_verified(tx, user, change).await?;
            }
            Ok((user, link))
        }))
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
            .await?;
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
        self.transaction(|open| {
            Box::pin(async move {
                let tx = open.tx;
                audit(tx, org, change, action, target, details).await?;
                Ok(())
            })
        })
        .await
    }
}
