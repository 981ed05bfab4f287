//! The token service's way to TenancyService and InvitationService: the generated tonic clients
//! over a type-erased transport (a tonic channel across processes, the local server object in the
//! all-in-one process — one code path, two transports), with the service API key on every call.

use std::collections::BTreeSet;
use std::time::Duration;

use lanyard_authz::facts::value;
use lanyard_core::cache::Versioned;
use lanyard_core::{OrganizationId, UserId};
use lanyard_proto::invitation::v1 as ipb;
use lanyard_proto::invitation::v1::invitation_service_client::InvitationServiceClient;
use lanyard_proto::tenancy::v1 as tpb;
use lanyard_proto::tenancy::v1::tenancy_service_client::TenancyServiceClient;
use secrecy::{ExposeSecret, SecretString};
use tonic::metadata::{Ascii, MetadataValue};

pub use lanyard_core::transport::{in_process, GrpcTransport, TransportError};

use crate::error::{upstream, TokenError};
use crate::upstream::{Connection, Identity};

type Result<T, E = TokenError> = std::result::Result<T, E>;

/// A transport to a service in another process, connected lazily to `url`, with a per-call timeout.
pub fn connect_lazy(url: &str, timeout: Duration) -> anyhow::Result<GrpcTransport> {
    Ok(lanyard_core::transport::connect_lazy(url, timeout)?)
}

fn bearer(service_key: &SecretString) -> anyhow::Result<MetadataValue<Ascii>> {
    Ok(lanyard_core::transport::bearer(service_key.expose_secret())?)
}

/// TenancyService, as the token service calls it.
#[derive(Clone)]
pub struct TenancyClient {
    inner: TenancyServiceClient<GrpcTransport>,
    authorization: MetadataValue<Ascii>,
}

impl std::fmt::Debug for TenancyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TenancyClient(..)")
    }
}

/// What the token service needs to know of a membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    pub organization_id: OrganizationId,
    pub organization_slug: String,
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
    pub version: i64,
}

impl TenancyClient {
    /// Calls tenancy over `transport` with `service_key` (one of tenancy's service keys).
    pub fn new(transport: GrpcTransport, service_key: &SecretString) -> anyhow::Result<Self> {
        Ok(Self { inner: TenancyServiceClient::new(transport), authorization: bearer(service_key)? })
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("authorization", self.authorization.clone());
        request
    }

    async fn organization(&self, key: tpb::get_organization_request::Key) -> Result<tpb::Organization> {
        let resp =
            self.inner.clone().get_organization(self.request(tpb::GetOrganizationRequest { key: Some(key) })).await;
        match upstream(resp) {
            Ok(r) => r.organization.ok_or_else(|| TokenError::Internal("GetOrganization returned nothing".into())),
            Err(e) if e.upstream_reason().as_deref() == Some("ORGANIZATION_NOT_FOUND") => {
                Err(TokenError::OrganizationNotFound)
            }
            Err(e) => Err(e),
        }
    }

    /// An active organization by id; a suspended or deleted one is [`TokenError::OrganizationInactive`].
    pub async fn active_organization(&self, org: OrganizationId) -> Result<tpb::Organization> {
        let o = self.organization(tpb::get_organization_request::Key::OrganizationId(org.to_string())).await?;
        if o.status != tpb::OrganizationStatus::Active as i32 {
            return Err(TokenError::OrganizationInactive);
        }
        Ok(o)
    }

    /// An active organization by slug.
    pub async fn active_organization_by_slug(&self, slug: &str) -> Result<tpb::Organization> {
        let o = self.organization(tpb::get_organization_request::Key::Slug(slug.to_owned())).await?;
        if o.status != tpb::OrganizationStatus::Active as i32 {
            return Err(TokenError::OrganizationInactive);
        }
        Ok(o)
    }

    /// The user's active membership of the active organization `org`, with the permissions its
    /// roles grant; [`TokenError::NotAMember`] when there is none.
    pub async fn membership(&self, org: OrganizationId, user: UserId) -> Result<Membership> {
        let o = self.active_organization(org).await?;
        let req =
            tpb::GetMemberRequest { organization_id: org.to_string(), user_id: user.to_string(), ..Default::default() };
        let member = match upstream(self.inner.clone().get_member(self.request(req)).await) {
            Ok(r) => r.member,
            Err(e) if e.upstream_reason().as_deref() == Some("NOT_A_MEMBER") => None,
            Err(e) => return Err(e),
        };
        let member =
            member.filter(|m| m.status == tpb::MembershipStatus::Active as i32).ok_or(TokenError::NotAMember)?;
        let permissions = self.permissions(org, &member.roles).await?;
        Ok(Membership {
            organization_id: org,
            organization_slug: o.slug,
            roles: member.roles,
            permissions,
            version: member.version,
        })
    }

    /// The membership's revocation fact: its version and whether it is active (a membership that
    /// never existed reads as removed at version 0).
    pub async fn membership_fact(&self, org: OrganizationId, user: UserId) -> Result<Versioned> {
        let req =
            tpb::GetMemberRequest { organization_id: org.to_string(), user_id: user.to_string(), ..Default::default() };
        let member = match upstream(self.inner.clone().get_member(self.request(req)).await) {
            Ok(r) => r.member,
            Err(e) if matches!(e.upstream_reason().as_deref(), Some("NOT_A_MEMBER" | "ORGANIZATION_NOT_FOUND")) => None,
            Err(e) => return Err(e),
        };
        Ok(match member {
            Some(m) if m.status == tpb::MembershipStatus::Active as i32 => {
                Versioned { version: m.version, value: value::MEMBER_ACTIVE.into() }
            }
            Some(m) => Versioned { version: m.version, value: value::MEMBER_REMOVED.into() },
            None => Versioned { version: 0, value: value::MEMBER_REMOVED.into() },
        })
    }

    /// The organization's revocation fact: its status, versioned by its update time (an
    /// organization that never existed reads as deleted at version 0).
    pub async fn organization_fact(&self, org: OrganizationId) -> Result<Versioned> {
        let o = match self.organization(tpb::get_organization_request::Key::OrganizationId(org.to_string())).await {
            Ok(o) => o,
            Err(TokenError::OrganizationNotFound) => {
                return Ok(Versioned { version: 0, value: value::ORG_DELETED.into() });
            }
            Err(e) => return Err(e),
        };
        let version = o.update_time.map(|t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1_000).unwrap_or_default();
        let status = match tpb::OrganizationStatus::try_from(o.status) {
            Ok(tpb::OrganizationStatus::Active) => value::ORG_ACTIVE,
            Ok(tpb::OrganizationStatus::Suspended) => value::ORG_SUSPENDED,
            _ => value::ORG_DELETED,
        };
        Ok(Versioned { version, value: status.into() })
    }

    /// Whether `user` has (or had: removed members count) a membership of `org`.
    pub async fn has_membership(&self, org: OrganizationId, user: UserId) -> Result<bool> {
        let req =
            tpb::GetMemberRequest { organization_id: org.to_string(), user_id: user.to_string(), ..Default::default() };
        match upstream(self.inner.clone().get_member(self.request(req)).await) {
            Ok(r) => Ok(r.member.is_some()),
            Err(e) if e.upstream_reason().as_deref() == Some("NOT_A_MEMBER") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The permissions `roles` grant in `org`: built-in ones from the shared table, custom ones
    /// from ListRoles (called only when a custom role is held).
    async fn permissions(&self, org: OrganizationId, roles: &[String]) -> Result<Vec<String>> {
        let mut granted = BTreeSet::new();
        let mut custom = Vec::new();
        for role in roles {
            match lanyard_core::roles::built_in(role) {
                Some(r) => granted.extend(r.grants.iter().map(|p| p.to_string())),
                None => custom.push(role.as_str()),
            }
        }
        if !custom.is_empty() {
            let mut page_token = String::new();
            loop {
                let req = tpb::ListRolesRequest {
                    organization_id: org.to_string(),
                    page_size: 500,
                    page_token: page_token.clone(),
                };
                let resp = upstream(self.inner.clone().list_roles(self.request(req)).await)?;
                for r in resp.roles.iter().filter(|r| custom.contains(&r.name.as_str())) {
                    granted.extend(r.permissions.iter().cloned());
                }
                if resp.next_page_token.is_empty() {
                    break;
                }
                page_token = resp.next_page_token;
            }
        }
        Ok(granted.into_iter().collect())
    }

    /// The organization's enabled SSO connections.
    pub async fn connections(&self, org: OrganizationId) -> Result<Vec<Connection>> {
        let mut out = Vec::new();
        let mut page_token = String::new();
        loop {
            let req = tpb::ListSsoConnectionsRequest {
                organization_id: org.to_string(),
                page_size: 500,
                page_token: page_token.clone(),
            };
            let resp = upstream(self.inner.clone().list_sso_connections(self.request(req)).await)?;
            out.extend(resp.connections.into_iter().filter_map(to_connection));
            if resp.next_page_token.is_empty() {
                return Ok(out);
            }
            page_token = resp.next_page_token;
        }
    }

    /// The enabled connections of active organizations with this exact issuer, with their
    /// organizations: the candidates for a first sign-in that names no organization.
    pub async fn connections_by_issuer(&self, issuer: &str) -> Result<Vec<(OrganizationId, Connection)>> {
        let req = tpb::FindSsoConnectionsRequest { issuer: issuer.to_owned(), ..Default::default() };
        let resp = upstream(self.inner.clone().find_sso_connections(self.request(req)).await)?;
        Ok(resp
            .connections
            .into_iter()
            .filter_map(|c| {
                let org = OrganizationId::parse(&c.organization_id).ok()?;
                Some((org, to_connection(c)?))
            })
            .collect())
    }

    /// The user a verified identity signs in to `org` as, under tenancy's identity rules; the
    /// user is an active member of `org`. Tenancy links a new identity only when the sign-in is
    /// allowed, and never on a `dry_run`. Refusals keep tenancy's reasons
    /// (`EMAIL_DOMAIN_NOT_VERIFIED`, `EMAIL_NOT_VERIFIED`), except that no membership is
    /// [`TokenError::NotAMember`].
    pub async fn resolve_identity(&self, identity: &Identity, org: OrganizationId, dry_run: bool) -> Result<UserId> {
        let req = tpb::ResolveIdentityRequest {
            issuer: identity.issuer.clone(),
            subject: identity.subject.clone(),
            email: identity.email.as_ref().map(|e| e.to_string()).unwrap_or_default(),
            email_verified: identity.email_verified,
            display_name: identity.display_name.clone(),
            connection_id: identity.connection_id.to_string(),
            organization_id: org.to_string(),
            dry_run,
        };
        let resp = match upstream(self.inner.clone().resolve_identity(self.request(req)).await) {
            Ok(r) => r,
            Err(e) if e.upstream_reason().as_deref() == Some("NOT_A_MEMBER") => return Err(TokenError::NotAMember),
            Err(e) => return Err(e),
        };
        let user = resp.user.ok_or_else(|| TokenError::Internal("ResolveIdentity returned no user".into()))?;
        UserId::parse(&user.user_id).map_err(|e| TokenError::Internal(e.to_string()))
    }

    /// Whether the SSO connection still exists and is enabled.
    pub async fn connection_live(&self, id: lanyard_core::ConnectionId) -> Result<bool> {
        let req = tpb::FindSsoConnectionsRequest { connection_id: id.to_string(), ..Default::default() };
        let resp = upstream(self.inner.clone().find_sso_connections(self.request(req)).await)?;
        Ok(resp.connections.iter().any(|c| c.enabled && c.connection_id == id.to_string()))
    }

    /// Appends an event to `org`'s audit log (tenancy's, where the organization's admins read it).
    pub async fn audit(
        &self,
        org: OrganizationId,
        actor: &str,
        action: &str,
        target: &str,
        details: &[(&str, String)],
    ) -> Result<()> {
        let req = tpb::RecordAuditEventRequest {
            organization_id: org.to_string(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            details: details.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
        };
        upstream(self.inner.clone().record_audit_event(self.request(req)).await).map(|_| ())
    }
}

/// InvitationService, as the token service calls it.
#[derive(Clone)]
pub struct InvitationClient {
    inner: InvitationServiceClient<GrpcTransport>,
    authorization: MetadataValue<Ascii>,
}

impl std::fmt::Debug for InvitationClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InvitationClient(..)")
    }
}

impl InvitationClient {
    /// Calls the invitation service over `transport` with `service_key`.
    pub fn new(transport: GrpcTransport, service_key: &SecretString) -> anyhow::Result<Self> {
        Ok(Self { inner: InvitationServiceClient::new(transport), authorization: bearer(service_key)? })
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("authorization", self.authorization.clone());
        request
    }

    /// What an invitation is for (the organization's slug and the invited email).
    pub async fn preview(&self, token: &str) -> Result<ipb::PreviewInvitationResponse> {
        let req = ipb::PreviewInvitationRequest { token: token.to_owned() };
        upstream(self.inner.clone().preview_invitation(self.request(req)).await)
    }

    /// Accepts an invitation for a verified identity; returns the membership it made, whose user
    /// is the identity's (found, linked or created by tenancy with the seat claim).
    pub async fn accept(&self, token: &str, identity: &Identity, request_id: &str) -> Result<ipb::MembershipSummary> {
        let req = ipb::AcceptInvitationRequest {
            token: token.to_owned(),
            identity: Some(ipb::VerifiedIdentity {
                // Tenancy resolves (and links) the user in the same transaction as the seat claim.
                user_id: String::new(),
                email: identity.email.as_ref().map(|e| e.to_string()).unwrap_or_default(),
                email_verified: identity.email_verified,
                issuer: identity.issuer.clone(),
                subject: identity.subject.clone(),
                connection_id: identity.connection_id.to_string(),
                display_name: identity.display_name.clone(),
            }),
            request_id: request_id.to_owned(),
        };
        let resp = upstream(self.inner.clone().accept_invitation(self.request(req)).await)?;
        resp.membership.ok_or_else(|| TokenError::Internal("AcceptInvitation returned no membership".into()))
    }
}

/// An enabled connection as the verifier needs it; `None` for a disabled or unknown kind.
fn to_connection(c: tpb::SsoConnection) -> Option<Connection> {
    use lanyard_core::roles::SsoKind;
    if !c.enabled {
        return None;
    }
    let kind = match tpb::SsoConnectionKind::try_from(c.kind) {
        Ok(tpb::SsoConnectionKind::GoogleWorkspace) => SsoKind::GoogleWorkspace,
        Ok(tpb::SsoConnectionKind::AzureAd) => SsoKind::AzureAd,
        Ok(tpb::SsoConnectionKind::Okta) => SsoKind::Okta,
        Ok(tpb::SsoConnectionKind::Oidc) => SsoKind::Oidc,
        _ => return None,
    };
    Some(Connection {
        id: lanyard_core::ConnectionId::parse(&c.connection_id).ok()?,
        kind,
        issuer: c.issuer,
        client_id: c.client_id,
        hosted_domains: c.hosted_domains,
        tenant_id: c.tenant_id,
    })
}
