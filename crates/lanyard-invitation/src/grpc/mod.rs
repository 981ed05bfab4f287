//! The gRPC adapter: converts protobuf requests into domain values (parsing every field at the
//! edge), calls [`Invitations`], converts back. The only module of this crate that serves tonic.

mod status;

use lanyard_core::caller::{caller_of, Authenticated};
use lanyard_core::crypto::SecretBox;
use lanyard_core::idempotency::{CallReplays, Replays, RequestId};
use lanyard_core::page::Page;
use lanyard_core::{Authenticator, Caller, ConnectionId, Email, OrganizationId, RoleName, UserId, ValueError};
use lanyard_proto::invitation::v1 as pb;
use lanyard_proto::invitation::v1::invitation_service_server::{InvitationService, InvitationServiceServer};
use prost::Message;
use tonic::{Request, Response, Status};

use crate::domain::*;
use crate::error::InvitationError;
use crate::service::{Invitations, NewInvitation};
use lanyard_core::limit::{PeerLimiter, PeerRule};

/// The longest identity issuer or subject accepted.
pub const MAX_IDENTITY_FIELD_LEN: usize = 1024;

type Result<T, E = InvitationError> = std::result::Result<T, E>;

/// InvitationService over gRPC.
#[derive(Clone)]
pub struct InvitationGrpc {
    invitations: Invitations,
    auth: Authenticator,
    preview_limiter: PeerLimiter,
    peer_rule: PeerRule,
    replays: CallReplays<InvitationError>,
}

impl std::fmt::Debug for InvitationGrpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvitationGrpc").field("invitations", &self.invitations).finish_non_exhaustive()
    }
}

impl InvitationGrpc {
    /// Serves `invitations` and limits previews; the server authenticates callers with `auth`
    /// (see [`Authenticated`]).
    /// Idempotency records live in the invitation database, sealed with `secrets`.
    pub fn new(
        invitations: Invitations,
        auth: Authenticator,
        preview_limiter: PeerLimiter,
        peer_rule: PeerRule,
        secrets: SecretBox,
    ) -> Self {
        let replays = CallReplays::new(Replays::new(invitations.store().database().clone()).sealed(secrets));
        Self { invitations, auth, preview_limiter, peer_rule, replays }
    }

    /// The tonic server for this adapter, behind the authentication layer.
    pub fn into_server(self) -> Authenticated<InvitationServiceServer<Self>> {
        Authenticated::new(self.auth.clone(), InvitationServiceServer::new(self))
    }

    async fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        Ok(caller_of(req).await.map_err(InvitationError::from)?)
    }
}

fn org_id(s: &str) -> Result<OrganizationId> {
    let id = OrganizationId::parse(s)?;
    tracing::Span::current().record("org", s);
    Ok(id)
}

fn roles(v: &[String]) -> Result<Vec<RoleName>> {
    if v.len() > crate::service::MAX_ROLES {
        return Err(InvitationError::InvalidField {
            field: "roles",
            message: format!("at most {} roles", crate::service::MAX_ROLES),
        });
    }
    v.iter().map(|r| RoleName::parse(r).map_err(InvitationError::from)).collect()
}

fn ttl(d: Option<prost_types::Duration>) -> Result<Option<std::time::Duration>> {
    d.map(|d| {
        std::time::Duration::try_from(d).map_err(|_| InvitationError::InvalidField {
            field: "ttl",
            message: "ttl must be a positive duration".into(),
        })
    })
    .transpose()
}

fn page(size: i32, token: &str) -> Result<Page> {
    Ok(Page::parse(size, token)?)
}

fn status_to_pb(s: InvitationStatus) -> pb::InvitationStatus {
    match s {
        InvitationStatus::Pending => pb::InvitationStatus::Pending,
        InvitationStatus::Accepted => pb::InvitationStatus::Accepted,
        InvitationStatus::Revoked => pb::InvitationStatus::Revoked,
        InvitationStatus::Expired => pb::InvitationStatus::Expired,
    }
}

fn invitation_to_pb(i: Invitation) -> pb::Invitation {
    pb::Invitation {
        invitation_id: i.id.to_string(),
        organization_id: i.organization_id.to_string(),
        email: i.email.to_string(),
        roles: i.roles.iter().map(|r| r.to_string()).collect(),
        status: status_to_pb(i.status) as i32,
        inviter: i.inviter,
        create_time: Some(i.created_at.to_proto()),
        expire_time: Some(i.expires_at.to_proto()),
        accept_time: i.accepted_at.map(|t| t.to_proto()),
        revoke_time: i.revoked_at.map(|t| t.to_proto()),
        seat_reservation_id: i.reservation_id.to_string(),
        accepted_user_id: i.accepted_user_id.map(|u| u.to_string()),
        email_delivery: match i.delivery {
            Delivery::Queued => pb::EmailDeliveryStatus::Queued,
            Delivery::Sent => pb::EmailDeliveryStatus::Sent,
            Delivery::Failed => pb::EmailDeliveryStatus::Failed,
            Delivery::NotSent => pb::EmailDeliveryStatus::NotSent,
        } as i32,
        email_delivery_error: i.delivery_error,
    }
}

fn identity(v: Option<pb::VerifiedIdentity>) -> Result<VerifiedIdentity> {
    let v = v.ok_or(ValueError::Missing("identity"))?;
    let field = |f: &'static str, message: String| InvitationError::InvalidField { field: f, message };
    let user_id = match v.user_id.as_str() {
        "" => None,
        id => Some(UserId::parse(id).map_err(|e| field("identity.user_id", e.to_string()))?),
    };
    let connection_id = match v.connection_id.as_str() {
        "" if user_id.is_none() => {
            return Err(field("identity.connection_id", "a connection is required without a user id".into()))
        }
        "" => None,
        id => Some(ConnectionId::parse(id).map_err(|e| field("identity.connection_id", e.to_string()))?),
    };
    let display_name = v.display_name.chars().filter(|c| !c.is_control()).take(200).collect::<String>();
    let email = Email::parse(&v.email).map_err(|e| field("identity.email", e.to_string()))?;
    for (name, value) in [("identity.issuer", &v.issuer), ("identity.subject", &v.subject)] {
        if value.trim().is_empty() {
            return Err(field(name, format!("{name} is required")));
        }
        if value.len() > MAX_IDENTITY_FIELD_LEN || value.chars().any(char::is_control) {
            return Err(field(name, format!("{name} must be at most {MAX_IDENTITY_FIELD_LEN} printable characters")));
        }
    }
    Ok(VerifiedIdentity {
        user_id,
        email,
        email_verified: v.email_verified,
        issuer: v.issuer,
        subject: v.subject,
        connection_id,
        display_name: display_name.trim().to_owned(),
    })
}

#[tonic::async_trait]
impl InvitationService for InvitationGrpc {
    async fn create_invitation(
        &self,
        request: Request<pb::CreateInvitationRequest>,
    ) -> Result<Response<pb::CreateInvitationResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        self.replays
            .respond_once(
                &caller,
                "CreateInvitation",
                &req.request_id.clone(),
                &req.encode_to_vec(),
                |request_id| async {
                    let new = NewInvitation {
                        organization_id: org_id(&req.organization_id)?,
                        email: Email::parse(&req.email)?,
                        roles: roles(&req.roles)?,
                        ttl: ttl(req.ttl)?,
                        send_email: req.send_email,
                        waive_domain_check: req.waive_domain_check,
                        request_id: request_id.map(|id| id.as_str().to_owned()),
                    };
                    let (invitation, link) = self.invitations.create(&caller, new).await?;
                    Ok(pb::CreateInvitationResponse {
                        invitation: Some(invitation_to_pb(invitation)),
                        invitation_link: link,
                    })
                },
            )
            .await
    }

    async fn get_invitation(
        &self,
        request: Request<pb::GetInvitationRequest>,
    ) -> Result<Response<pb::GetInvitationResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let org = org_id(&req.organization_id)?;
        let id = InvitationId::parse(&req.invitation_id).map_err(InvitationError::from)?;
        let invitation = self.invitations.get(&caller, org, id).await?;
        Ok(Response::new(pb::GetInvitationResponse { invitation: Some(invitation_to_pb(invitation)) }))
    }

    async fn list_invitations(
        &self,
        request: Request<pb::ListInvitationsRequest>,
    ) -> Result<Response<pb::ListInvitationsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let org = org_id(&req.organization_id)?;
        let status = match pb::InvitationStatus::try_from(req.status) {
            Ok(pb::InvitationStatus::Unspecified) => None,
            Ok(pb::InvitationStatus::Pending) => Some(InvitationStatus::Pending),
            Ok(pb::InvitationStatus::Accepted) => Some(InvitationStatus::Accepted),
            Ok(pb::InvitationStatus::Revoked) => Some(InvitationStatus::Revoked),
            Ok(pb::InvitationStatus::Expired) => Some(InvitationStatus::Expired),
            Err(_) => return Err(InvitationError::from(ValueError::Malformed("status")).into()),
        };
        let (rows, next) = self.invitations.list(&caller, org, status, &page(req.page_size, &req.page_token)?).await?;
        Ok(Response::new(pb::ListInvitationsResponse {
            invitations: rows.into_iter().map(invitation_to_pb).collect(),
            next_page_token: next,
        }))
    }

    async fn revoke_invitation(
        &self,
        request: Request<pb::RevokeInvitationRequest>,
    ) -> Result<Response<pb::RevokeInvitationResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        self.replays
            .respond_once(&caller, "RevokeInvitation", &req.request_id.clone(), &req.encode_to_vec(), |_| async {
                let org = org_id(&req.organization_id)?;
                let id = InvitationId::parse(&req.invitation_id)?;
                let invitation = self.invitations.revoke(&caller, org, id).await?;
                Ok(pb::RevokeInvitationResponse { invitation: Some(invitation_to_pb(invitation)) })
            })
            .await
    }

    async fn resend_invitation(
        &self,
        request: Request<pb::ResendInvitationRequest>,
    ) -> Result<Response<pb::ResendInvitationResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let who = &caller;
        self.replays
            .respond_once(
                &caller,
                "ResendInvitation",
                &req.request_id.clone(),
                &req.encode_to_vec(),
                |request_id| async move {
                    let org = org_id(&req.organization_id)?;
                    let id = InvitationId::parse(&req.invitation_id)?;
                    let (invitation, link) = self
                        .invitations
                        .resend(who, org, id, req.send_email, ttl(req.ttl)?, request_id.as_ref().map(RequestId::as_str))
                        .await?;
                    Ok(pb::ResendInvitationResponse {
                        invitation: Some(invitation_to_pb(invitation)),
                        invitation_link: link,
                    })
                },
            )
            .await
    }

    async fn preview_invitation(
        &self,
        request: Request<pb::PreviewInvitationRequest>,
    ) -> Result<Response<pb::PreviewInvitationResponse>, Status> {
        // No credential needed: the limiter is the gate, before any lookup. The token service
        // (a service key) previews for every sign-in it handles, so it is not limited per peer.
        let is_service = matches!(caller_of(&request).await, Ok(Caller::Service { .. }));
        if !is_service {
            let peer = self.peer_rule.of(&request);
            if let Err(limited) = self.preview_limiter.check(peer) {
                return Err(InvitationError::RateLimited(limited).into());
            }
        }
        let token = InvitationToken::parse(&request.into_inner().token).map_err(InvitationError::from)?;
        let p = self.invitations.preview(&token).await?;
        Ok(Response::new(pb::PreviewInvitationResponse {
            organization_display_name: p.organization_display_name,
            organization_slug: p.organization_slug,
            email: p.email.to_string(),
            inviter_display_name: p.inviter_display_name,
            expire_time: Some(p.expires_at.to_proto()),
            status: pb::InvitationStatus::Pending as i32,
        }))
    }

    async fn accept_invitation(
        &self,
        request: Request<pb::AcceptInvitationRequest>,
    ) -> Result<Response<pb::AcceptInvitationResponse>, Status> {
        let caller = self.caller(&request).await?;
        caller.require_service().map_err(InvitationError::from)?;
        let req = request.into_inner();
        self.replays
            .respond_once(&caller, "AcceptInvitation", &req.request_id.clone(), &req.encode_to_vec(), |_| async {
                let token = InvitationToken::parse(&req.token)?;
                let identity = identity(req.identity)?;
                let (invitation, m) = self.invitations.accept(&caller, &token, &identity).await?;
                Ok(pb::AcceptInvitationResponse {
                    invitation: Some(invitation_to_pb(invitation)),
                    membership: Some(pb::MembershipSummary {
                        organization_id: m.organization_id.to_string(),
                        organization_slug: m.organization_slug,
                        user_id: m.user_id.to_string(),
                        roles: m.roles,
                        membership_version: m.version,
                    }),
                })
            })
            .await
    }

    async fn list_invitation_events(
        &self,
        request: Request<pb::ListInvitationEventsRequest>,
    ) -> Result<Response<pb::ListInvitationEventsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let org = org_id(&req.organization_id)?;
        let invitation = if req.invitation_id.is_empty() {
            None
        } else {
            Some(InvitationId::parse(&req.invitation_id).map_err(InvitationError::from)?)
        };
        let (events, next) =
            self.invitations.events(&caller, org, invitation, &page(req.page_size, &req.page_token)?).await?;
        Ok(Response::new(pb::ListInvitationEventsResponse {
            events: events
                .into_iter()
                .map(|e| pb::InvitationEvent {
                    event_id: e.id.to_string(),
                    organization_id: e.organization_id.to_string(),
                    invitation_id: e.invitation_id.to_string(),
                    actor: e.actor,
                    action: e.action,
                    create_time: Some(e.created_at.to_proto()),
                    details: e.details.into_iter().collect(),
                })
                .collect(),
            next_page_token: next,
        }))
    }
}
