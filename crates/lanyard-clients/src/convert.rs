//! Protobuf → domain values: the only place the clients read protobuf messages. A value that
//! does not parse is a malformed answer, never a default.

use lanyard_core::roles::SsoKind;
use lanyard_core::{ConnectionId, OrganizationId, ReservationId, Timestamp, UserId, ValueError};
use lanyard_proto::invitation::v1 as ipb;
use lanyard_proto::tenancy::v1 as tpb;

use crate::values::*;
use crate::ClientError;

type Result<T, E = ClientError> = std::result::Result<T, E>;

fn bad(what: &str) -> impl Fn(ValueError) -> ClientError + '_ {
    move |e| ClientError::Malformed(format!("{what}: {e}"))
}

/// The message a reply must carry.
pub(crate) fn required<T>(m: Option<T>, what: &str) -> Result<T> {
    m.ok_or_else(|| ClientError::Malformed(format!("{what} is missing")))
}

pub(crate) fn timestamp(t: Option<prost_types::Timestamp>) -> Option<Timestamp> {
    t.map(|t| Timestamp(t.seconds * 1_000_000 + i64::from(t.nanos) / 1_000))
}

pub(crate) fn organization(o: tpb::Organization) -> Result<Organization> {
    let status = match tpb::OrganizationStatus::try_from(o.status) {
        Ok(tpb::OrganizationStatus::Active) => OrganizationStatus::Active,
        Ok(tpb::OrganizationStatus::Suspended) => OrganizationStatus::Suspended,
        Ok(tpb::OrganizationStatus::Deleted) => OrganizationStatus::Deleted,
        _ => return Err(ClientError::Malformed(format!("organization status {}", o.status))),
    };
    let owner_user_id = match o.owner_user_id.as_str() {
        "" => None,
        id => Some(UserId::parse(id).map_err(bad("organization owner"))?),
    };
    Ok(Organization {
        id: OrganizationId::parse(&o.organization_id).map_err(bad("organization id"))?,
        slug: o.slug,
        display_name: o.display_name,
        status,
        allowed_domains: o.allowed_domains,
        owner_user_id,
        updated_at: timestamp(o.update_time),
    })
}

pub(crate) fn member(m: tpb::Member) -> Result<Member> {
    Ok(Member {
        organization_id: OrganizationId::parse(&m.organization_id).map_err(bad("member organization id"))?,
        user_id: UserId::parse(&m.user_id).map_err(bad("member user id"))?,
        email: m.email,
        display_name: m.display_name,
        roles: m.roles,
        active: m.status == tpb::MembershipStatus::Active as i32,
        version: m.version,
    })
}

pub(crate) fn role(r: tpb::Role) -> Role {
    Role { name: r.name, permissions: r.permissions }
}

pub(crate) fn reservation(r: tpb::SeatReservation) -> Result<SeatReservation> {
    let state = match tpb::SeatReservationState::try_from(r.state) {
        Ok(tpb::SeatReservationState::Held) => ReservationState::Held,
        Ok(tpb::SeatReservationState::Claimed) => ReservationState::Claimed,
        Ok(tpb::SeatReservationState::Released) => ReservationState::Released,
        Ok(tpb::SeatReservationState::Expired) => ReservationState::Expired,
        _ => return Err(ClientError::Malformed(format!("seat reservation state {}", r.state))),
    };
    Ok(SeatReservation {
        id: ReservationId::parse(&r.reservation_id).map_err(bad("reservation id"))?,
        state,
        expires_at: timestamp(r.expire_time),
    })
}

/// A connection whose kind and ids this client can read; `None` for one it cannot (a kind of a
/// newer tenancy), which no caller can verify tokens for.
pub(crate) fn connection(c: tpb::SsoConnection) -> Option<SsoConnection> {
    let kind = match tpb::SsoConnectionKind::try_from(c.kind) {
        Ok(tpb::SsoConnectionKind::GoogleWorkspace) => SsoKind::GoogleWorkspace,
        Ok(tpb::SsoConnectionKind::AzureAd) => SsoKind::AzureAd,
        Ok(tpb::SsoConnectionKind::Okta) => SsoKind::Okta,
        Ok(tpb::SsoConnectionKind::Oidc) => SsoKind::Oidc,
        _ => return None,
    };
    Some(SsoConnection {
        id: ConnectionId::parse(&c.connection_id).ok()?,
        organization_id: OrganizationId::parse(&c.organization_id).ok()?,
        kind,
        issuer: c.issuer,
        client_id: c.client_id,
        hosted_domains: c.hosted_domains,
        tenant_id: c.tenant_id,
        enabled: c.enabled,
    })
}

fn text<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

pub(crate) fn claim_identity(i: &Identity) -> tpb::ClaimIdentity {
    tpb::ClaimIdentity {
        issuer: i.issuer.clone(),
        subject: i.subject.clone(),
        connection_id: text(i.connection_id),
        email: text(i.email.as_ref()),
        display_name: i.display_name.clone(),
    }
}

pub(crate) fn resolve_request(i: &Identity, org: OrganizationId, dry_run: bool) -> tpb::ResolveIdentityRequest {
    tpb::ResolveIdentityRequest {
        issuer: i.issuer.clone(),
        subject: i.subject.clone(),
        email: text(i.email.as_ref()),
        email_verified: i.email_verified,
        display_name: i.display_name.clone(),
        connection_id: text(i.connection_id),
        organization_id: org.to_string(),
        dry_run,
    }
}

pub(crate) fn verified_identity(i: &Identity) -> ipb::VerifiedIdentity {
    ipb::VerifiedIdentity {
        // Tenancy resolves (and links) the user in the same transaction as the seat claim.
        user_id: String::new(),
        email: text(i.email.as_ref()),
        email_verified: i.email_verified,
        issuer: i.issuer.clone(),
        subject: i.subject.clone(),
        connection_id: text(i.connection_id),
        display_name: i.display_name.clone(),
    }
}

pub(crate) fn preview(p: ipb::PreviewInvitationResponse) -> InvitationPreview {
    InvitationPreview {
        organization_display_name: p.organization_display_name,
        organization_slug: p.organization_slug,
        email: p.email,
        inviter_display_name: p.inviter_display_name,
        expires_at: timestamp(p.expire_time),
    }
}

pub(crate) fn accepted(m: ipb::MembershipSummary) -> Result<AcceptedMembership> {
    Ok(AcceptedMembership {
        organization_id: OrganizationId::parse(&m.organization_id).map_err(bad("accepted organization id"))?,
        organization_slug: m.organization_slug,
        user_id: UserId::parse(&m.user_id).map_err(bad("accepted user id"))?,
        roles: m.roles,
        version: m.membership_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_microseconds() {
        let t = prost_types::Timestamp { seconds: 2, nanos: 3_000 };
        assert_eq!(timestamp(Some(t)), Some(Timestamp(2_000_003)));
        assert_eq!(timestamp(None), None);
    }

    #[test]
    fn an_unknown_status_is_malformed_not_a_default() {
        let o =
            tpb::Organization { organization_id: OrganizationId::new().to_string(), status: 99, ..Default::default() };
        assert!(matches!(organization(o), Err(ClientError::Malformed(_))));
    }

    #[test]
    fn connections_of_unknown_kinds_are_left_out() {
        let c = tpb::SsoConnection {
            connection_id: ConnectionId::new().to_string(),
            organization_id: OrganizationId::new().to_string(),
            kind: tpb::SsoConnectionKind::Unspecified as i32,
            ..Default::default()
        };
        assert!(connection(c.clone()).is_none());
        let known = connection(tpb::SsoConnection { kind: tpb::SsoConnectionKind::Okta as i32, ..c }).unwrap();
        assert_eq!(known.kind, SsoKind::Okta);
    }
}
