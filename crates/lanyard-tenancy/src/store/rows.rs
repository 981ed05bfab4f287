//! Row decoding and the column lists it expects.

use super::*;

pub(super) const DOMAIN_SELECT: &str =
    "SELECT domain, state, challenge, verified_at, verification_method FROM organization_domains";

/// An identity link to write.
pub(super) struct Link<'a> {
    pub(super) issuer: &'a str,
    pub(super) subject: &'a str,
    pub(super) connection: ConnectionId,
    pub(super) user: UserId,
}

pub(super) fn domain_from_row(r: &AnyRow) -> Result<OrgDomain> {
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

pub(super) const ORG_SELECT: &str =
    "SELECT id, slug, display_name, seat_limit, metadata, status, owner_user_id, created_at, \
     updated_at, deleted_at FROM organizations";

pub(super) const MEMBER_SELECT: &str =
    "SELECT m.org_id, m.user_id, u.primary_email, u.display_name, m.status, m.version, \
     m.invited_by, m.created_at, m.updated_at FROM memberships m JOIN users u ON u.id = m.user_id";

pub(super) const ROLE_SELECT: &str = "SELECT org_id, name, description, permissions, created_at, updated_at FROM roles";

pub(super) const CONN_SELECT: &str =
    "SELECT id, org_id, kind, issuer, client_id, client_secret_sealed, hosted_domains, tenant_id, \
     enabled, created_at FROM sso_connections";

pub(super) fn stored<T>(r: std::result::Result<T, sqlx::Error>) -> Result<T> {
    r.map_err(|e| TenancyError::Internal(format!("decoding a stored row: {e}")))
}

pub(super) fn corrupt(what: &str) -> TenancyError {
    TenancyError::Internal(format!("stored {what} is invalid"))
}

pub(super) fn org_from_row(r: &AnyRow) -> Result<Organization> {
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

pub(super) fn member_from_row(r: &AnyRow) -> Result<Member> {
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

pub(super) fn user_from_row(r: &AnyRow) -> Result<User> {
    Ok(User {
        id: parse_id(&stored(r.try_get::<String, _>("id"))?)?,
        primary_email: stored(r.try_get("primary_email"))?,
        email_verified: stored(r.try_get::<i64, _>("email_verified"))? != 0,
        display_name: stored(r.try_get("display_name"))?,
        created_at: Timestamp(stored(r.try_get("created_at"))?),
    })
}

pub(super) fn role_from(name: String) -> Result<RoleName> {
    RoleName::parse(&name).map_err(|_| corrupt("role name"))
}

pub(super) fn role_from_row(r: &AnyRow) -> Result<Role> {
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

pub(super) fn connection_from_row(r: &AnyRow) -> Result<SsoConnection> {
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
