//! TenancyService, as the other services call it: organizations, members and roles, seat
//! reservations, SSO connections, identity resolution and the audit log.

use std::time::Duration;

use lanyard_core::transport::GrpcTransport;
use lanyard_core::{ConnectionId, Email, OrganizationId, ReservationId, RoleName, UserId};
use lanyard_proto::tenancy::v1 as pb;
use lanyard_proto::tenancy::v1::tenancy_service_client::TenancyServiceClient;
use secrecy::SecretString;

use crate::convert::{self, required};
use crate::values::*;
use crate::{answer, paginate, ClientError, Link, LocalServer, SetupError, PAGE_SIZE};

type Result<T, E = ClientError> = std::result::Result<T, E>;

/// TenancyService's client. The service key must be one of tenancy's service keys.
#[derive(Clone)]
pub struct TenancyClient {
    inner: TenancyServiceClient<GrpcTransport>,
    link: Link,
}

impl std::fmt::Debug for TenancyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TenancyClient(..)")
    }
}

impl TenancyClient {
    /// Calls the tenancy service of this process directly: requests go through the same tonic
    /// server code (decoding, authentication, error details) without a socket.
    pub fn in_process(server: impl LocalServer, service_key: &SecretString) -> Result<Self, SetupError> {
        Link::in_process(server, service_key).map(Self::over)
    }

    /// Connects lazily to a tenancy service at `url` (e.g. `http://tenancy:50051`), with a
    /// per-call timeout.
    pub fn connect_lazy(url: &str, timeout: Duration, service_key: &SecretString) -> Result<Self, SetupError> {
        Link::connect_lazy(url, timeout, service_key).map(Self::over)
    }

    /// Calls tenancy over any transport.
    pub fn from_transport(transport: GrpcTransport, service_key: &SecretString) -> Result<Self, SetupError> {
        Link::new(transport, service_key).map(Self::over)
    }

    fn over(link: Link) -> Self {
        Self { inner: TenancyServiceClient::new(link.transport.clone()), link }
    }

    async fn get_organization(&self, key: pb::get_organization_request::Key) -> Result<Organization> {
        let req = self.link.request(pb::GetOrganizationRequest { key: Some(key) });
        let resp = answer(self.inner.clone().get_organization(req).await)?;
        convert::organization(required(resp.organization, "GetOrganization's organization")?)
    }

    /// The organization, by id, whatever its status.
    pub async fn organization(&self, org: OrganizationId) -> Result<Organization> {
        self.get_organization(pb::get_organization_request::Key::OrganizationId(org.to_string())).await
    }

    /// The organization, by slug, whatever its status.
    pub async fn organization_by_slug(&self, slug: &str) -> Result<Organization> {
        self.get_organization(pb::get_organization_request::Key::Slug(slug.to_owned())).await
    }

    async fn get_member(&self, req: pb::GetMemberRequest) -> Result<Option<Member>> {
        match answer(self.inner.clone().get_member(self.link.request(req)).await) {
            Ok(resp) => resp.member.map(convert::member).transpose(),
            Err(e) if e.is("NOT_A_MEMBER") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The membership (active or removed) of `user` in `org`; `None` when there never was one.
    pub async fn member(&self, org: OrganizationId, user: UserId) -> Result<Option<Member>> {
        self.get_member(pb::GetMemberRequest {
            organization_id: org.to_string(),
            user_id: user.to_string(),
            ..Default::default()
        })
        .await
    }

    /// The membership (active or removed) of the user with `email` in `org`, if any.
    pub async fn member_by_email(&self, org: OrganizationId, email: &Email) -> Result<Option<Member>> {
        self.get_member(pb::GetMemberRequest {
            organization_id: org.to_string(),
            email: email.to_string(),
            ..Default::default()
        })
        .await
    }

    /// Every organization `user` has a membership in (active or removed), with the membership.
    pub async fn user_organizations(&self, user: UserId) -> Result<Vec<(Organization, Member)>> {
        paginate(|page_token| {
            let req = self.link.request(pb::ListUserOrganizationsRequest {
                user_id: user.to_string(),
                page_size: PAGE_SIZE,
                page_token,
            });
            let mut inner = self.inner.clone();
            async move {
                let resp = answer(inner.list_user_organizations(req).await)?;
                let mut found = Vec::new();
                for o in resp.organizations {
                    let org = convert::organization(required(o.organization, "ListUserOrganizations' organization")?)?;
                    found.push((org, convert::member(required(o.member, "ListUserOrganizations' member")?)?));
                }
                Ok((found, resp.next_page_token))
            }
        })
        .await
    }

    /// The organization's roles, built-in and custom, with their permissions.
    pub async fn roles(&self, org: OrganizationId) -> Result<Vec<Role>> {
        paginate(|page_token| {
            let req = self.link.request(pb::ListRolesRequest {
                organization_id: org.to_string(),
                page_size: PAGE_SIZE,
                page_token,
            });
            let mut inner = self.inner.clone();
            async move {
                let resp = answer(inner.list_roles(req).await)?;
                Ok((resp.roles.into_iter().map(convert::role).collect(), resp.next_page_token))
            }
        })
        .await
    }

    /// Holds a seat for `ttl`; a retry with the same `id` returns the same reservation (which may
    /// no longer be held).
    pub async fn reserve_seat(&self, org: OrganizationId, id: ReservationId, ttl: Duration) -> Result<SeatReservation> {
        let ttl = prost_types::Duration::try_from(ttl).map_err(|e| ClientError::Malformed(e.to_string()))?;
        let req = self.link.request(pb::ReserveSeatRequest {
            organization_id: org.to_string(),
            ttl: Some(ttl),
            reservation_id: id.to_string(),
        });
        let resp = answer(self.inner.clone().reserve_seat(req).await)?;
        convert::reservation(required(resp.reservation, "ReserveSeat's reservation")?)
    }

    /// Frees a held seat (releasing twice, or after expiry, is not an error).
    pub async fn release_seat(&self, org: OrganizationId, id: ReservationId) -> Result<()> {
        let req = self
            .link
            .request(pb::ReleaseSeatRequest { organization_id: org.to_string(), reservation_id: id.to_string() });
        answer(self.inner.clone().release_seat(req).await).map(|_| ())
    }

    /// Turns the reservation into the claimant's membership with `roles`; idempotent for the
    /// same user.
    pub async fn claim_seat(
        &self,
        org: OrganizationId,
        id: ReservationId,
        claimant: Claimant<'_>,
        roles: &[RoleName],
        invited_by: &str,
    ) -> Result<Member> {
        let (user_id, identity) = match claimant {
            Claimant::User(user) => (user.to_string(), None),
            Claimant::Identity(identity) => (String::new(), Some(convert::claim_identity(identity))),
        };
        let req = self.link.request(pb::ClaimSeatRequest {
            organization_id: org.to_string(),
            reservation_id: id.to_string(),
            user_id,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            invited_by: invited_by.to_owned(),
            identity,
        });
        let resp = answer(self.inner.clone().claim_seat(req).await)?;
        convert::member(required(resp.member, "ClaimSeat's member")?)
    }

    /// The organization's SSO connections, enabled or not (those of kinds this client does not
    /// know are left out).
    pub async fn sso_connections(&self, org: OrganizationId) -> Result<Vec<SsoConnection>> {
        paginate(|page_token| {
            let req = self.link.request(pb::ListSsoConnectionsRequest {
                organization_id: org.to_string(),
                page_size: PAGE_SIZE,
                page_token,
            });
            let mut inner = self.inner.clone();
            async move {
                let resp = answer(inner.list_sso_connections(req).await)?;
                Ok((resp.connections.into_iter().filter_map(convert::connection).collect(), resp.next_page_token))
            }
        })
        .await
    }

    /// The enabled connections of active organizations with this exact issuer: the candidates
    /// for a first sign-in that names no organization.
    pub async fn sso_connections_by_issuer(&self, issuer: &str) -> Result<Vec<SsoConnection>> {
        let req = self.link.request(pb::FindSsoConnectionsRequest { issuer: issuer.to_owned(), ..Default::default() });
        let resp = answer(self.inner.clone().find_sso_connections(req).await)?;
        Ok(resp.connections.into_iter().filter_map(convert::connection).collect())
    }

    /// The enabled connections of the active organization that verified `domain` (none when
    /// no organization did): home-realm discovery by a verified domain.
    pub async fn sso_connections_for_domain(&self, domain: &str) -> Result<Vec<SsoConnection>> {
        let req = self.link.request(pb::FindSsoConnectionsRequest { domain: domain.to_owned(), ..Default::default() });
        let resp = answer(self.inner.clone().find_sso_connections(req).await)?;
        Ok(resp.connections.into_iter().filter_map(convert::connection).collect())
    }

    /// Whether the SSO connection exists and is enabled.
    pub async fn sso_connection_enabled(&self, id: ConnectionId) -> Result<bool> {
        let req =
            self.link.request(pb::FindSsoConnectionsRequest { connection_id: id.to_string(), ..Default::default() });
        let resp = answer(self.inner.clone().find_sso_connections(req).await)?;
        Ok(resp.connections.iter().any(|c| c.enabled && c.connection_id == id.to_string()))
    }

    /// The client secret of `org`'s SSO connection `id` (`None` when none is stored): what the
    /// token service presents at the organization's provider.
    pub async fn sso_client_secret(&self, org: OrganizationId, id: ConnectionId) -> Result<Option<SecretString>> {
        let req = self
            .link
            .request(pb::GetSsoClientSecretRequest { organization_id: org.to_string(), connection_id: id.to_string() });
        let resp = answer(self.inner.clone().get_sso_client_secret(req).await)?;
        Ok((!resp.client_secret.is_empty()).then(|| SecretString::from(resp.client_secret)))
    }

    /// The user a verified identity signs in to `org` as, under tenancy's identity rules; the
    /// user is an active member of `org`. Tenancy links a new identity only when the sign-in is
    /// allowed, and never on a `dry_run`.
    pub async fn resolve_identity(&self, identity: &Identity, org: OrganizationId, dry_run: bool) -> Result<UserId> {
        let req = self.link.request(convert::resolve_request(identity, org, dry_run));
        let resp = answer(self.inner.clone().resolve_identity(req).await)?;
        let user = required(resp.user, "ResolveIdentity's user")?;
        UserId::parse(&user.user_id).map_err(|e| ClientError::Malformed(format!("ResolveIdentity's user id: {e}")))
    }

    /// Appends an event to `org`'s audit log (where the organization's admins read it).
    pub async fn record_audit_event(
        &self,
        org: OrganizationId,
        actor: &str,
        action: &str,
        target: &str,
        details: &[(&str, String)],
    ) -> Result<()> {
        let req = self.link.request(pb::RecordAuditEventRequest {
            organization_id: org.to_string(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            details: details.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
        });
        answer(self.inner.clone().record_audit_event(req).await).map(|_| ())
    }
}
