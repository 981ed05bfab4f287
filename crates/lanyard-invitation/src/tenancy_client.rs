//! The one way this crate talks to TenancyService: the generated tonic client over a type-erased
//! transport, with the service API key on every call. Across processes the transport is a
//! `tonic::transport::Channel`; in the all-in-one process it is the local
//! `TenancyServiceServer` itself, called directly with no socket. Every call site is the same,
//! and both carry the caller's W3C trace context.

use std::time::Duration;

use lanyard_core::{Email, OrganizationId, ReservationId, RoleName, UserId};

use crate::domain::VerifiedIdentity;
use lanyard_proto::tenancy::v1 as pb;
use lanyard_proto::tenancy::v1::tenancy_service_client::TenancyServiceClient;
use secrecy::{ExposeSecret, SecretString};
use tonic::body::Body;
use tonic::metadata::MetadataValue;

use crate::error::{tenancy, InvitationError};

pub use lanyard_core::transport::{GrpcTransport, TransportError};

type Result<T, E = InvitationError> = std::result::Result<T, E>;

/// TenancyService, as this crate calls it.
#[derive(Clone)]
pub struct TenancyClient {
    inner: TenancyServiceClient<GrpcTransport>,
    authorization: MetadataValue<tonic::metadata::Ascii>,
}

impl std::fmt::Debug for TenancyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TenancyClient(..)")
    }
}

impl TenancyClient {
    /// Calls a tenancy service in another process over `channel`, with `service_key`.
    pub fn from_channel(channel: tonic::transport::Channel, service_key: &SecretString) -> anyhow::Result<Self> {
        Self::from_transport(lanyard_core::transport::over_channel(channel), service_key)
    }

    /// Connects lazily to `url` (e.g. `http://tenancy:50051`), with a per-call timeout.
    pub fn connect_lazy(url: &str, timeout: Duration, service_key: &SecretString) -> anyhow::Result<Self> {
        Self::from_transport(lanyard_core::transport::connect_lazy(url, timeout)?, service_key)
    }

    /// Calls the tenancy service of this process directly: requests go through the same tonic
    /// server code (decoding, authentication, error details) without a socket.
    pub fn in_process<S>(server: S, service_key: &SecretString) -> anyhow::Result<Self>
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = std::convert::Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        Self::from_transport(lanyard_core::transport::in_process(server), service_key)
    }

    /// Wraps any transport.
    pub fn from_transport(transport: GrpcTransport, service_key: &SecretString) -> anyhow::Result<Self> {
        let authorization = lanyard_core::transport::bearer(service_key.expose_secret())?;
        Ok(Self { inner: TenancyServiceClient::new(transport), authorization })
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("authorization", self.authorization.clone());
        request
    }

    /// The organization, by id.
    pub async fn get_organization(&self, org: OrganizationId) -> Result<pb::Organization> {
        let key = pb::get_organization_request::Key::OrganizationId(org.to_string());
        let resp = tenancy(
            self.inner.clone().get_organization(self.request(pb::GetOrganizationRequest { key: Some(key) })).await,
        )?;
        resp.organization.ok_or_else(|| InvitationError::Internal("GetOrganization returned no organization".into()))
    }

    /// The membership of `user` in `org`, if any.
    pub async fn get_member(&self, org: OrganizationId, user: UserId) -> Result<Option<pb::Member>> {
        let req =
            pb::GetMemberRequest { organization_id: org.to_string(), user_id: user.to_string(), ..Default::default() };
        match tenancy(self.inner.clone().get_member(self.request(req)).await) {
            Ok(resp) => Ok(resp.member),
            Err(e) if e.upstream_reason().as_deref() == Some("NOT_A_MEMBER") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether `email` belongs to an active member of `org`.
    pub async fn has_active_member(&self, org: OrganizationId, email: &Email) -> Result<bool> {
        let req =
            pb::GetMemberRequest { organization_id: org.to_string(), email: email.to_string(), ..Default::default() };
        match tenancy(self.inner.clone().get_member(self.request(req)).await) {
            Ok(resp) => Ok(resp.member.is_some_and(|m| m.status == pb::MembershipStatus::Active as i32)),
            Err(e) if e.upstream_reason().as_deref() == Some("NOT_A_MEMBER") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The organization's roles, built-in and custom, with their permissions.
    pub async fn roles(&self, org: OrganizationId) -> Result<Vec<pb::Role>> {
        let mut names = Vec::new();
        let mut page_token = String::new();
        loop {
            let req = pb::ListRolesRequest {
                organization_id: org.to_string(),
                page_size: 500,
                page_token: page_token.clone(),
            };
            let resp = tenancy(self.inner.clone().list_roles(self.request(req)).await)?;
            names.extend(resp.roles);
            if resp.next_page_token.is_empty() {
                return Ok(names);
            }
            page_token = resp.next_page_token;
        }
    }

    /// Holds a seat for `ttl`; a retry with the same `id` returns the same reservation.
    pub async fn reserve_seat(
        &self,
        org: OrganizationId,
        id: ReservationId,
        ttl: Duration,
    ) -> Result<pb::SeatReservation> {
        let ttl = prost_types::Duration::try_from(ttl).map_err(|e| InvitationError::Internal(e.to_string()))?;
        let req =
            pb::ReserveSeatRequest { organization_id: org.to_string(), ttl: Some(ttl), reservation_id: id.to_string() };
        let resp = tenancy(self.inner.clone().reserve_seat(self.request(req)).await)?;
        resp.reservation.ok_or_else(|| InvitationError::Internal("ReserveSeat returned no reservation".into()))
    }

    /// Frees a held seat (releasing twice, or after expiry, is not an error).
    pub async fn release_seat(&self, org: OrganizationId, id: ReservationId) -> Result<()> {
        let req = pb::ReleaseSeatRequest { organization_id: org.to_string(), reservation_id: id.to_string() };
        tenancy(self.inner.clone().release_seat(self.request(req)).await).map(|_| ())
    }

    /// Turns the reservation into the membership of `identity`'s user with `roles`; idempotent for
    /// the same user. Without a user id, tenancy finds, links or creates the user in the same
    /// transaction as the claim (by the invited email, which the caller checked).
    pub async fn claim_seat(
        &self,
        org: OrganizationId,
        id: ReservationId,
        identity: &VerifiedIdentity,
        roles: &[RoleName],
        invited_by: &str,
    ) -> Result<pb::Member> {
        let claimant = match identity.user_id {
            Some(_) => None,
            None => Some(pb::ClaimIdentity {
                issuer: identity.issuer.clone(),
                subject: identity.subject.clone(),
                connection_id: identity.connection_id.map(|c| c.to_string()).unwrap_or_default(),
                email: identity.email.to_string(),
                display_name: identity.display_name.clone(),
            }),
        };
        let req = pb::ClaimSeatRequest {
            organization_id: org.to_string(),
            reservation_id: id.to_string(),
            user_id: identity.user_id.map(|u| u.to_string()).unwrap_or_default(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            invited_by: invited_by.to_owned(),
            identity: claimant,
        };
        let resp = tenancy(self.inner.clone().claim_seat(self.request(req)).await)?;
        resp.member.ok_or_else(|| InvitationError::Internal("ClaimSeat returned no member".into()))
    }
}
