//! The gRPC adapter: converts protobuf requests into domain values (parsing every field at the
//! edge), calls [`Tenancy`], converts back. The only module of this crate that knows tonic.

mod status;

use std::collections::BTreeMap;

use lanyard_core::caller::{caller_of, Authenticated};
use lanyard_core::idempotency::{CallReplays, Replays};
use lanyard_core::page::Page;
use lanyard_core::{
    Authenticator, Caller, ConnectionId, Domain, Email, OrgSlug, OrganizationId, Permission, ReservationId, RoleName,
    UserId, ValueError,
};
use lanyard_proto::tenancy::v1 as pb;
use lanyard_proto::tenancy::v1::tenancy_service_server::TenancyService;
use prost::Message;
use tonic::{Request, Response, Status};

use crate::domain::*;
use crate::error::TenancyError;
use crate::service::Tenancy;

mod convert;

use convert::*;

/// TenancyService over gRPC.
#[derive(Clone)]
pub struct TenancyGrpc {
    tenancy: Tenancy,
    auth: Authenticator,
    replays: CallReplays<TenancyError>,
}

impl TenancyGrpc {
    /// Serves `tenancy`; the server authenticates callers with `auth` (see [`Authenticated`]).
    pub fn new(tenancy: Tenancy, auth: Authenticator) -> Self {
        let replays = CallReplays::new(Replays::new(tenancy.store().database().clone()));
        Self { tenancy, auth, replays }
    }

    /// The tonic server for this adapter, behind the authentication layer.
    pub fn into_server(self) -> Authenticated<pb::tenancy_service_server::TenancyServiceServer<Self>> {
        Authenticated::new(self.auth.clone(), pb::tenancy_service_server::TenancyServiceServer::new(self))
    }

    async fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        Ok(caller_of(req).await.map_err(TenancyError::from)?)
    }
}

#[tonic::async_trait]
impl TenancyService for TenancyGrpc {
    async fn create_organization(
        &self,
        request: Request<pb::CreateOrganizationRequest>,
    ) -> Result<Response<pb::CreateOrganizationResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        self.replays
            .respond_once(&caller, "CreateOrganization", &req.request_id.clone(), &req.encode_to_vec(), |_| async {
                let new = NewOrganization {
                    slug: OrgSlug::parse(&req.slug)?,
                    display_name: lanyard_core::DisplayName::parse(&req.display_name, "display_name")?,
                    seat_limit: seat_limit(req.seat_limit)?,
                    allowed_domains: domains(&req.allowed_domains, "allowed_domains")?,
                    metadata: metadata(req.metadata),
                    owner_email: if req.owner_email.is_empty() { None } else { Some(Email::parse(&req.owner_email)?) },
                };
                let org = self.tenancy.create_organization(&caller, new, req.allow_public_domains).await?;
                Ok(pb::CreateOrganizationResponse { organization: Some(org_to_pb(org)) })
            })
            .await
    }

    async fn get_organization(
        &self,
        request: Request<pb::GetOrganizationRequest>,
    ) -> Result<Response<pb::GetOrganizationResponse>, Status> {
        let caller = self.caller(&request).await?;
        let org = match request.into_inner().key {
            Some(pb::get_organization_request::Key::OrganizationId(id)) => {
                self.tenancy.get_organization(&caller, org_id(&id)?).await?
            }
            Some(pb::get_organization_request::Key::Slug(slug)) => {
                self.tenancy
                    .get_organization_by_slug(&caller, &OrgSlug::parse(&slug).map_err(TenancyError::from)?)
                    .await?
            }
            None => return Err(TenancyError::from(ValueError::Missing("organization_id")).into()),
        };
        Ok(Response::new(pb::GetOrganizationResponse { organization: Some(org_to_pb(org)) }))
    }

    async fn list_organizations(
        &self,
        request: Request<pb::ListOrganizationsRequest>,
    ) -> Result<Response<pb::ListOrganizationsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let (orgs, next) =
            self.tenancy.list_organizations(&caller, &page(req.page_size, &req.page_token)?, req.show_deleted).await?;
        Ok(Response::new(pb::ListOrganizationsResponse {
            organizations: orgs.into_iter().map(org_to_pb).collect(),
            next_page_token: next,
        }))
    }

    async fn update_organization(
        &self,
        request: Request<pb::UpdateOrganizationRequest>,
    ) -> Result<Response<pb::UpdateOrganizationResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        self.replays
            .respond_once(&caller, "UpdateOrganization", &req.request_id.clone(), &req.encode_to_vec(), |_| async {
                let o = req.organization.ok_or(ValueError::Missing("organization"))?;
                let id = org_id(&o.organization_id)?;
                let mut patch = OrganizationPatch::default();
                for path in mask_paths(req.update_mask)? {
                    match path.as_str() {
                        "display_name" => {
                            patch.display_name =
                                Some(lanyard_core::DisplayName::parse(&o.display_name, "display_name")?)
                        }
                        "seat_limit" => patch.seat_limit = Some(seat_limit(o.seat_limit)?),
                        "metadata" => patch.metadata = Some(metadata(o.metadata.clone())),
                        "status" => {
                            patch.status = Some(match pb::OrganizationStatus::try_from(o.status) {
                                Ok(pb::OrganizationStatus::Active) => OrgStatus::Active,
                                Ok(pb::OrganizationStatus::Suspended) => OrgStatus::Suspended,
                                _ => {
                                    return Err(TenancyError::InvalidField {
                                        field: "organization.status",
                                        message: "status must be ACTIVE or SUSPENDED".into(),
                                    })
                                }
                            })
                        }
                        other => {
                            return Err(TenancyError::InvalidField {
                                field: "update_mask",
                                message: format!(
                                    "{other:?} cannot be updated; use display_name, seat_limit, metadata or status"
                                ),
                            })
                        }
                    }
                }
                let org = self.tenancy.update_organization(&caller, id, patch).await?;
                Ok(pb::UpdateOrganizationResponse { organization: Some(org_to_pb(org)) })
            })
            .await
    }

    async fn delete_organization(
        &self,
        request: Request<pb::DeleteOrganizationRequest>,
    ) -> Result<Response<pb::DeleteOrganizationResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let org = self.tenancy.delete_organization(&caller, org_id(&req.organization_id)?).await?;
        Ok(Response::new(pb::DeleteOrganizationResponse { organization: Some(org_to_pb(org)) }))
    }

    async fn add_domain(
        &self,
        request: Request<pb::AddDomainRequest>,
    ) -> Result<Response<pb::AddDomainResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        self.replays
            .respond_once(&caller, "AddDomain", &req.request_id.clone(), &req.encode_to_vec(), |_| async {
                let (org, domain) = self
                    .tenancy
                    .add_domain(
                        &caller,
                        org_id(&req.organization_id)?,
                        Domain::parse(&req.domain)?,
                        req.allow_public_domain,
                    )
                    .await?;
                Ok(pb::AddDomainResponse { organization: Some(org_to_pb(org)), challenge: challenge_to_pb(&domain) })
            })
            .await
    }

    async fn verify_domain(
        &self,
        request: Request<pb::VerifyDomainRequest>,
    ) -> Result<Response<pb::VerifyDomainResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        self.replays
            .respond_once(&caller, "VerifyDomain", &req.request_id.clone(), &req.encode_to_vec(), |_| async {
                let method = match pb::DomainVerificationMethod::try_from(req.method) {
                    Ok(pb::DomainVerificationMethod::Unspecified | pb::DomainVerificationMethod::DnsTxt) => {
                        VerificationMethod::DnsTxt
                    }
                    Ok(pb::DomainVerificationMethod::Operator) => VerificationMethod::Operator,
                    Err(_) => {
                        return Err(TenancyError::InvalidField { field: "method", message: "unknown method".into() })
                    }
                };
                let (org, domain) = self
                    .tenancy
                    .verify_domain(&caller, org_id(&req.organization_id)?, Domain::parse(&req.domain)?, method)
                    .await?;
                Ok(pb::VerifyDomainResponse { organization: Some(org_to_pb(org)), domain: Some(domain_to_pb(domain)) })
            })
            .await
    }

    async fn remove_domain(
        &self,
        request: Request<pb::RemoveDomainRequest>,
    ) -> Result<Response<pb::RemoveDomainResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        self.replays
            .respond_once(&caller, "RemoveDomain", &req.request_id.clone(), &req.encode_to_vec(), |_| async {
                let org = self
                    .tenancy
                    .remove_domain(&caller, org_id(&req.organization_id)?, Domain::parse(&req.domain)?)
                    .await?;
                Ok(pb::RemoveDomainResponse { organization: Some(org_to_pb(org)) })
            })
            .await
    }

    async fn add_member(
        &self,
        request: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::AddMemberResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        self.replays
            .respond_once(&caller, "AddMember", &req.request_id.clone(), &req.encode_to_vec(), |_| async {
                let (member, created) = self
                    .tenancy
                    .add_member(
                        &caller,
                        org_id(&req.organization_id)?,
                        Email::parse(&req.email)?,
                        roles(&req.roles)?,
                        &req.display_name,
                        req.waive_domain_check,
                    )
                    .await?;
                Ok(pb::AddMemberResponse { member: Some(member_to_pb(member)), user_created: created })
            })
            .await
    }

    async fn get_member(
        &self,
        request: Request<pb::GetMemberRequest>,
    ) -> Result<Response<pb::GetMemberResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let org = org_id(&req.organization_id)?;
        let member = match (req.user_id.is_empty(), req.email.is_empty()) {
            (false, true) => {
                self.tenancy.get_member(&caller, org, UserId::parse(&req.user_id).map_err(TenancyError::from)?).await?
            }
            (true, false) => {
                self.tenancy
                    .get_member_by_email(&caller, org, &Email::parse(&req.email).map_err(TenancyError::from)?)
                    .await?
            }
            (true, true) => return Err(TenancyError::from(ValueError::Missing("user_id")).into()),
            (false, false) => {
                return Err(TenancyError::InvalidField {
                    field: "email",
                    message: "give user_id or email, not both".into(),
                }
                .into())
            }
        };
        Ok(Response::new(pb::GetMemberResponse { member: Some(member_to_pb(member)) }))
    }

    async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let (members, next) = self
            .tenancy
            .list_members(
                &caller,
                org_id(&req.organization_id)?,
                &page(req.page_size, &req.page_token)?,
                req.show_removed,
            )
            .await?;
        Ok(Response::new(pb::ListMembersResponse {
            members: members.into_iter().map(member_to_pb).collect(),
            next_page_token: next,
        }))
    }

    async fn update_member_roles(
        &self,
        request: Request<pb::UpdateMemberRolesRequest>,
    ) -> Result<Response<pb::UpdateMemberRolesResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        self.replays
            .respond_once(&caller, "UpdateMemberRoles", &req.request_id.clone(), &req.encode_to_vec(), |_| async {
                if req.roles.is_empty() {
                    return Err(ValueError::Missing("roles").into());
                }
                let member = self
                    .tenancy
                    .update_member_roles(
                        &caller,
                        org_id(&req.organization_id)?,
                        UserId::parse(&req.user_id)?,
                        roles(&req.roles)?,
                    )
                    .await?;
                Ok(pb::UpdateMemberRolesResponse { member: Some(member_to_pb(member)) })
            })
            .await
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        self.replays
            .respond_once(&caller, "RemoveMember", &req.request_id.clone(), &req.encode_to_vec(), |_| async {
                let member = self
                    .tenancy
                    .remove_member(&caller, org_id(&req.organization_id)?, UserId::parse(&req.user_id)?)
                    .await?;
                Ok(pb::RemoveMemberResponse { member: Some(member_to_pb(member)) })
            })
            .await
    }

    async fn transfer_ownership(
        &self,
        request: Request<pb::TransferOwnershipRequest>,
    ) -> Result<Response<pb::TransferOwnershipResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        self.replays
            .respond_once(&caller, "TransferOwnership", &req.request_id.clone(), &req.encode_to_vec(), |_| async {
                let new_owner = UserId::parse(&req.new_owner_user_id).map_err(|_| TenancyError::InvalidField {
                    field: "new_owner_user_id",
                    message: "new_owner_user_id must be a user id".into(),
                })?;
                let (org, new, prev) =
                    self.tenancy.transfer_ownership(&caller, org_id(&req.organization_id)?, new_owner).await?;
                Ok(pb::TransferOwnershipResponse {
                    organization: Some(org_to_pb(org)),
                    new_owner: Some(member_to_pb(new)),
                    previous_owner: prev.map(member_to_pb),
                })
            })
            .await
    }

    async fn list_user_organizations(
        &self,
        request: Request<pb::ListUserOrganizationsRequest>,
    ) -> Result<Response<pb::ListUserOrganizationsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let user = UserId::parse(&req.user_id).map_err(TenancyError::from)?;
        let (rows, next) =
            self.tenancy.list_user_organizations(&caller, user, &page(req.page_size, &req.page_token)?).await?;
        Ok(Response::new(pb::ListUserOrganizationsResponse {
            organizations: rows
                .into_iter()
                .map(|(o, m)| pb::UserOrganization { organization: Some(org_to_pb(o)), member: Some(member_to_pb(m)) })
                .collect(),
            next_page_token: next,
        }))
    }

    async fn get_seat_usage(
        &self,
        request: Request<pb::GetSeatUsageRequest>,
    ) -> Result<Response<pb::GetSeatUsageResponse>, Status> {
        let caller = self.caller(&request).await?;
        let usage = self.tenancy.seat_usage(&caller, org_id(&request.into_inner().organization_id)?).await?;
        Ok(Response::new(pb::GetSeatUsageResponse { usage: Some(usage_to_pb(usage)) }))
    }

    async fn create_role(
        &self,
        request: Request<pb::CreateRoleRequest>,
    ) -> Result<Response<pb::CreateRoleResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        self.replays
            .respond_once(&caller, "CreateRole", &req.request_id.clone(), &req.encode_to_vec(), |_| async {
                let role = self
                    .tenancy
                    .create_role(
                        &caller,
                        org_id(&req.organization_id)?,
                        RoleName::parse(&req.name)?,
                        &req.description,
                        permissions(&req.permissions)?,
                    )
                    .await?;
                Ok(pb::CreateRoleResponse { role: Some(role_to_pb(role)) })
            })
            .await
    }

    async fn list_roles(
        &self,
        request: Request<pb::ListRolesRequest>,
    ) -> Result<Response<pb::ListRolesResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let (roles, next) = self
            .tenancy
            .list_roles(&caller, org_id(&req.organization_id)?, &page(req.page_size, &req.page_token)?)
            .await?;
        Ok(Response::new(pb::ListRolesResponse {
            roles: roles.into_iter().map(role_to_pb).collect(),
            next_page_token: next,
        }))
    }

    async fn update_role(
        &self,
        request: Request<pb::UpdateRoleRequest>,
    ) -> Result<Response<pb::UpdateRoleResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        self.replays
            .respond_once(&caller, "UpdateRole", &req.request_id.clone(), &req.encode_to_vec(), |_| async {
                let role = req.role.ok_or(ValueError::Missing("role"))?;
                let (mut description, mut perms) = (None, None);
                for path in mask_paths(req.update_mask)? {
                    match path.as_str() {
                        "description" => description = Some(role.description.clone()),
                        "permissions" => perms = Some(permissions(&role.permissions)?),
                        other => {
                            return Err(TenancyError::InvalidField {
                                field: "update_mask",
                                message: format!("{other:?} cannot be updated; use description or permissions"),
                            })
                        }
                    }
                }
                let updated = self
                    .tenancy
                    .update_role(
                        &caller,
                        org_id(&role.organization_id)?,
                        RoleName::parse(&role.name)?,
                        description,
                        perms,
                    )
                    .await?;
                Ok(pb::UpdateRoleResponse { role: Some(role_to_pb(updated)) })
            })
            .await
    }

    async fn delete_role(
        &self,
        request: Request<pb::DeleteRoleRequest>,
    ) -> Result<Response<pb::DeleteRoleResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        self.replays
            .respond_once(&caller, "DeleteRole", &req.request_id.clone(), &req.encode_to_vec(), |_| async {
                self.tenancy.delete_role(&caller, org_id(&req.organization_id)?, RoleName::parse(&req.name)?).await?;
                Ok(pb::DeleteRoleResponse {})
            })
            .await
    }

    async fn create_sso_connection(
        &self,
        request: Request<pb::CreateSsoConnectionRequest>,
    ) -> Result<Response<pb::CreateSsoConnectionResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        self.replays
            .respond_once(&caller, "CreateSsoConnection", &req.request_id.clone(), &req.encode_to_vec(), |_| async {
                let kind = match pb::SsoConnectionKind::try_from(req.kind) {
                    Ok(pb::SsoConnectionKind::GoogleWorkspace) => SsoKind::GoogleWorkspace,
                    Ok(pb::SsoConnectionKind::Okta) => SsoKind::Okta,
                    Ok(pb::SsoConnectionKind::AzureAd) => SsoKind::AzureAd,
                    Ok(pb::SsoConnectionKind::Oidc) => SsoKind::Oidc,
                    _ => return Err(ValueError::Missing("kind").into()),
                };
                let new = NewSsoConnection {
                    kind,
                    issuer: req.issuer.clone(),
                    client_id: req.client_id.clone(),
                    client_secret: (!req.client_secret.is_empty()).then(|| req.client_secret.clone()),
                    hosted_domains: domains(&req.hosted_domains, "hosted_domains")?,
                    tenant_id: req.tenant_id.clone(),
                };
                let conn = self.tenancy.create_sso_connection(&caller, org_id(&req.organization_id)?, new).await?;
                Ok(pb::CreateSsoConnectionResponse { connection: Some(connection_to_pb(conn)) })
            })
            .await
    }

    async fn list_sso_connections(
        &self,
        request: Request<pb::ListSsoConnectionsRequest>,
    ) -> Result<Response<pb::ListSsoConnectionsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let (conns, next) = self
            .tenancy
            .list_sso_connections(&caller, org_id(&req.organization_id)?, &page(req.page_size, &req.page_token)?)
            .await?;
        Ok(Response::new(pb::ListSsoConnectionsResponse {
            connections: conns.into_iter().map(connection_to_pb).collect(),
            next_page_token: next,
        }))
    }

    async fn delete_sso_connection(
        &self,
        request: Request<pb::DeleteSsoConnectionRequest>,
    ) -> Result<Response<pb::DeleteSsoConnectionResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        self.replays
            .respond_once(&caller, "DeleteSsoConnection", &req.request_id.clone(), &req.encode_to_vec(), |_| async {
                let id = ConnectionId::parse(&req.connection_id)?;
                self.tenancy.delete_sso_connection(&caller, org_id(&req.organization_id)?, id).await?;
                Ok(pb::DeleteSsoConnectionResponse {})
            })
            .await
    }

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        if req.action.len() > 64 {
            return Err(TenancyError::from(ValueError::TooLong("action", 64)).into());
        }
        let action = (!req.action.is_empty()).then_some(req.action.as_str());
        let (events, next) = self
            .tenancy
            .list_audit_events(&caller, org_id(&req.organization_id)?, &page(req.page_size, &req.page_token)?, action)
            .await?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: events
                .into_iter()
                .map(|e| pb::AuditEvent {
                    event_id: e.id.to_string(),
                    organization_id: e.organization_id.to_string(),
                    actor: e.actor,
                    action: e.action,
                    target: e.target,
                    create_time: Some(e.created_at.to_proto()),
                    details: e.details.into_iter().collect(),
                })
                .collect(),
            next_page_token: next,
        }))
    }

    async fn reserve_seat(
        &self,
        request: Request<pb::ReserveSeatRequest>,
    ) -> Result<Response<pb::ReserveSeatResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let id = if req.reservation_id.is_empty() {
            None
        } else {
            Some(ReservationId::parse(&req.reservation_id).map_err(TenancyError::from)?)
        };
        let res = self.tenancy.reserve_seat(&caller, org_id(&req.organization_id)?, duration(req.ttl)?, id).await?;
        Ok(Response::new(pb::ReserveSeatResponse { reservation: Some(reservation_to_pb(res)) }))
    }

    async fn release_seat(
        &self,
        request: Request<pb::ReleaseSeatRequest>,
    ) -> Result<Response<pb::ReleaseSeatResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let id = ReservationId::parse(&req.reservation_id).map_err(TenancyError::from)?;
        let res = self.tenancy.release_seat(&caller, org_id(&req.organization_id)?, id).await?;
        Ok(Response::new(pb::ReleaseSeatResponse { reservation: Some(reservation_to_pb(res)) }))
    }

    async fn claim_seat(
        &self,
        request: Request<pb::ClaimSeatRequest>,
    ) -> Result<Response<pb::ClaimSeatResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let id = ReservationId::parse(&req.reservation_id).map_err(TenancyError::from)?;
        let claimant = match (req.user_id.is_empty(), req.identity) {
            (false, None) => Claimant::User(UserId::parse(&req.user_id).map_err(TenancyError::from)?),
            (true, Some(i)) => Claimant::Identity(ClaimIdentity {
                connection_id: connection_id(&i.connection_id, "identity.connection_id")?,
                email: Email::parse(&i.email).map_err(TenancyError::from)?,
                issuer: i.issuer,
                subject: i.subject,
                display_name: i.display_name,
            }),
            _ => {
                return Err(TenancyError::InvalidField {
                    field: "user_id",
                    message: "exactly one of user_id and identity is required".into(),
                }
                .into())
            }
        };
        let (member, already, linked) = self
            .tenancy
            .claim_seat(&caller, org_id(&req.organization_id)?, id, claimant, roles(&req.roles)?, &req.invited_by)
            .await?;
        Ok(Response::new(pb::ClaimSeatResponse {
            member: Some(member_to_pb(member)),
            already_claimed: already,
            identity_linked: linked,
        }))
    }

    async fn find_sso_connections(
        &self,
        request: Request<pb::FindSsoConnectionsRequest>,
    ) -> Result<Response<pb::FindSsoConnectionsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let connections = match (req.issuer.is_empty(), req.connection_id.is_empty(), req.domain.is_empty()) {
            (true, false, true) => {
                let id = connection_id(&req.connection_id, "connection_id")?;
                self.tenancy.find_sso_connection(&caller, id).await?.into_iter().collect()
            }
            (false, true, true) => self.tenancy.find_sso_connections(&caller, &req.issuer).await?,
            (true, true, false) => {
                let domain = lanyard_core::Domain::parse(&req.domain)
                    .map_err(|e| TenancyError::InvalidField { field: "domain", message: e.to_string() })?;
                self.tenancy.find_sso_connections_for_domain(&caller, &domain).await?
            }
            _ => {
                return Err(TenancyError::InvalidField {
                    field: "issuer",
                    message: "exactly one of issuer, connection_id and domain is required".into(),
                }
                .into())
            }
        };
        Ok(Response::new(pb::FindSsoConnectionsResponse {
            connections: connections.into_iter().map(connection_to_pb).collect(),
        }))
    }

    async fn get_sso_client_secret(
        &self,
        request: Request<pb::GetSsoClientSecretRequest>,
    ) -> Result<Response<pb::GetSsoClientSecretResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let org = org_id(&req.organization_id)?;
        let id = connection_id(&req.connection_id, "connection_id")?;
        let client_secret = self.tenancy.sso_client_secret(&caller, org, id).await?.unwrap_or_default();
        Ok(Response::new(pb::GetSsoClientSecretResponse { client_secret }))
    }

    async fn record_audit_event(
        &self,
        request: Request<pb::RecordAuditEventRequest>,
    ) -> Result<Response<pb::RecordAuditEventResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let details: BTreeMap<String, String> = req.details.into_iter().collect();
        self.tenancy
            .record_audit_event(&caller, org_id(&req.organization_id)?, &req.actor, &req.action, &req.target, &details)
            .await?;
        Ok(Response::new(pb::RecordAuditEventResponse {}))
    }

    async fn resolve_identity(
        &self,
        request: Request<pb::ResolveIdentityRequest>,
    ) -> Result<Response<pb::ResolveIdentityResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let identity = ExternalIdentity {
            email: if req.email.is_empty() {
                None
            } else {
                Some(Email::parse(&req.email).map_err(TenancyError::from)?)
            },
            issuer: req.issuer,
            subject: req.subject,
            email_verified: req.email_verified,
            display_name: req.display_name,
            connection_id: connection_id(&req.connection_id, "connection_id")?,
        };
        let org = org_id(&req.organization_id)?;
        let resolved = self.tenancy.resolve_identity(&caller, identity, org, req.dry_run).await?;
        Ok(Response::new(pb::ResolveIdentityResponse {
            user: Some(user_to_pb(resolved.user)),
            user_created: resolved.user_created,
            identity_linked: resolved.identity_linked,
        }))
    }
}
