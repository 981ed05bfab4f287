//! Protobuf ⇄ domain: every request field parsed into a domain value (or refused with the
//! field named), every domain value turned back into its message.

use super::*;

pub(super) fn org_id(s: &str) -> Result<OrganizationId, TenancyError> {
    let id = OrganizationId::parse(s)?;
    tracing::Span::current().record("org", s);
    Ok(id)
}

pub(super) fn roles(v: &[String]) -> Result<Vec<RoleName>, TenancyError> {
    v.iter().map(|r| RoleName::parse(r).map_err(TenancyError::from)).collect()
}

pub(super) fn permissions(v: &[String]) -> Result<Vec<Permission>, TenancyError> {
    v.iter().map(|p| Permission::parse(p).map_err(TenancyError::from)).collect()
}

pub(super) fn domains(v: &[String], field: &'static str) -> Result<Vec<Domain>, TenancyError> {
    v.iter()
        .map(|d| Domain::parse(d).map_err(|e| TenancyError::InvalidField { field, message: format!("{d:?}: {e}") }))
        .collect()
}

pub(super) fn page(size: i32, token: &str) -> Result<Page, TenancyError> {
    Ok(Page::parse(size, token)?)
}

pub(super) fn mask_paths(mask: Option<prost_types::FieldMask>) -> Result<Vec<String>, TenancyError> {
    let paths = mask.map(|m| m.paths).unwrap_or_default();
    if paths.is_empty() {
        return Err(ValueError::Missing("update_mask").into());
    }
    Ok(paths)
}

pub(super) fn org_to_pb(o: Organization) -> pb::Organization {
    pb::Organization {
        organization_id: o.id.to_string(),
        slug: o.slug.to_string(),
        display_name: o.display_name.to_string(),
        seat_limit: i32::try_from(o.seat_limit).unwrap_or(i32::MAX),
        allowed_domains: o.allowed_domains.iter().map(|d| d.to_string()).collect(),
        metadata: o.metadata.into_iter().collect(),
        status: match o.status {
            OrgStatus::Active => pb::OrganizationStatus::Active,
            OrgStatus::Suspended => pb::OrganizationStatus::Suspended,
            OrgStatus::Deleted => pb::OrganizationStatus::Deleted,
        } as i32,
        owner_user_id: o.owner_user_id.map(|u| u.to_string()).unwrap_or_default(),
        create_time: Some(o.created_at.to_proto()),
        update_time: Some(o.updated_at.to_proto()),
        delete_time: o.deleted_at.map(|t| t.to_proto()),
        domains: o.domains.into_iter().map(domain_to_pb).collect(),
    }
}

pub(super) fn domain_to_pb(d: OrgDomain) -> pb::OrganizationDomain {
    pb::OrganizationDomain {
        name: d.name.to_string(),
        state: match d.state {
            DomainState::Pending => pb::DomainState::Pending,
            DomainState::Verified => pb::DomainState::Verified,
        } as i32,
        verify_time: d.verified_at.map(|t| t.to_proto()),
        verification_method: d.method.unwrap_or_default(),
    }
}

pub(super) fn challenge_to_pb(d: &OrgDomain) -> Option<pb::DomainChallenge> {
    (d.state == DomainState::Pending).then(|| pb::DomainChallenge {
        record_name: crate::dns::challenge_name(d.name.as_str()).trim_end_matches('.').to_owned(),
        record_type: "TXT".into(),
        record_value: crate::dns::challenge_value(&d.challenge),
    })
}

pub(super) fn connection_id(raw: &str, field: &'static str) -> Result<ConnectionId, TenancyError> {
    if raw.is_empty() {
        return Err(ValueError::Missing(field).into());
    }
    ConnectionId::parse(raw).map_err(|e| TenancyError::InvalidField { field, message: e.to_string() })
}

pub(super) fn member_to_pb(m: Member) -> pb::Member {
    pb::Member {
        organization_id: m.organization_id.to_string(),
        user_id: m.user_id.to_string(),
        email: m.email.unwrap_or_default(),
        display_name: m.display_name,
        roles: m.roles.iter().map(|r| r.to_string()).collect(),
        status: match m.status {
            MemberStatus::Active => pb::MembershipStatus::Active,
            MemberStatus::Removed => pb::MembershipStatus::Removed,
        } as i32,
        version: m.version,
        invited_by: m.invited_by,
        create_time: Some(m.created_at.to_proto()),
        update_time: Some(m.updated_at.to_proto()),
    }
}

pub(super) fn role_to_pb(r: Role) -> pb::Role {
    let built_in = r.built_in();
    pb::Role {
        organization_id: r.organization_id.map(|o| o.to_string()).unwrap_or_default(),
        name: r.name.to_string(),
        description: r.description,
        permissions: r.permissions.iter().map(|p| p.to_string()).collect(),
        built_in,
        create_time: (!built_in).then(|| r.created_at.to_proto()),
        update_time: (!built_in).then(|| r.updated_at.to_proto()),
    }
}

pub(super) fn connection_to_pb(c: SsoConnection) -> pb::SsoConnection {
    pb::SsoConnection {
        connection_id: c.id.to_string(),
        organization_id: c.organization_id.to_string(),
        kind: match c.kind {
            SsoKind::GoogleWorkspace => pb::SsoConnectionKind::GoogleWorkspace,
            SsoKind::Okta => pb::SsoConnectionKind::Okta,
            SsoKind::AzureAd => pb::SsoConnectionKind::AzureAd,
            SsoKind::Oidc => pb::SsoConnectionKind::Oidc,
        } as i32,
        issuer: c.issuer,
        client_id: c.client_id,
        hosted_domains: c.hosted_domains.iter().map(|d| d.to_string()).collect(),
        tenant_id: c.tenant_id,
        enabled: c.enabled,
        has_client_secret: c.has_client_secret,
        create_time: Some(c.created_at.to_proto()),
    }
}

pub(super) fn reservation_to_pb(r: Reservation) -> pb::SeatReservation {
    pb::SeatReservation {
        reservation_id: r.id.to_string(),
        organization_id: r.organization_id.to_string(),
        expire_time: Some(r.expires_at.to_proto()),
        state: match r.state {
            ReservationState::Held => pb::SeatReservationState::Held,
            ReservationState::Claimed => pb::SeatReservationState::Claimed,
            ReservationState::Released => pb::SeatReservationState::Released,
            ReservationState::Expired => pb::SeatReservationState::Expired,
        } as i32,
        claimed_user_id: r.claimed_user_id.map(|u| u.to_string()).unwrap_or_default(),
    }
}

pub(super) fn user_to_pb(u: User) -> pb::User {
    pb::User {
        user_id: u.id.to_string(),
        primary_email: u.primary_email.unwrap_or_default(),
        email_verified: u.email_verified,
        display_name: u.display_name,
        create_time: Some(u.created_at.to_proto()),
    }
}

pub(super) fn usage_to_pb(u: SeatUsage) -> pb::SeatUsage {
    let n = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    pb::SeatUsage {
        organization_id: u.organization_id.to_string(),
        seat_limit: n(u.seat_limit),
        active: n(u.active),
        reserved: n(u.reserved),
        available: n(u.available()),
    }
}

pub(super) fn seat_limit(v: i32) -> Result<u32, TenancyError> {
    u32::try_from(v).map_err(|_| TenancyError::InvalidField {
        field: "seat_limit",
        message: "seat_limit must be between 1 and 1000000".into(),
    })
}

pub(super) fn metadata(m: std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    m.into_iter().collect()
}

pub(super) fn duration(d: Option<prost_types::Duration>) -> Result<Option<std::time::Duration>, TenancyError> {
    d.map(|d| {
        std::time::Duration::try_from(d)
            .map_err(|_| TenancyError::InvalidField { field: "ttl", message: "ttl must be a positive duration".into() })
    })
    .transpose()
}
