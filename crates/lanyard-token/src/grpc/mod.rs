//! The gRPC adapters of TokenService and AuthorizationService: parse every field into domain
//! values at the edge, call [`Tokens`], convert back. The only module of this crate that knows
//! tonic's server side.

mod clients;
mod status;

use std::future::Future;

use lanyard_core::caller::{caller_of, Authenticated};
use lanyard_core::crypto::{sha256_hex, SecretBox};
use lanyard_core::idempotency::{Replays, RequestId};
use lanyard_core::limit::{Peer, PeerLimiter, PeerRule};
use lanyard_core::page::Page;
use lanyard_core::{Authenticator, Caller, OrganizationId, Permission, SessionId, Timestamp, UserId, ValueError};
use lanyard_proto::authz::v1 as apb;
use lanyard_proto::authz::v1::authorization_service_server::{AuthorizationService, AuthorizationServiceServer};
use lanyard_proto::token::v1 as pb;
use lanyard_proto::token::v1::token_service_server::{TokenService, TokenServiceServer};
use prost::Message;
use tonic::{Request, Response, Status};

use crate::error::TokenError;
use crate::keys::{KeyState, LoadedKey, PublicJwk, SigningAlgorithm};
use crate::provider::Clients;
use crate::service::{ClientInfo, Issued, Tokens};
use crate::store::Session;
use lanyard_authz::authorizer::principal_to_pb;

/// The per-peer limits of the unauthenticated RPCs (clones share their state).
#[derive(Clone, Debug)]
pub struct Limiters {
    /// `ExchangeToken` and `RefreshSession`.
    pub exchange: PeerLimiter,
    /// `ExchangeToken` with an invitation grant, on top of `exchange`.
    pub invitation_grant: PeerLimiter,
    /// The OpenID Provider's `/oauth2/*` endpoints (used by `provider`, kept here with the
    /// others so one worker prunes them all).
    pub sign_in: PeerLimiter,
    /// How the peer of a call is found.
    pub peer_rule: PeerRule,
}

impl Limiters {
    /// Takes one call of `peer` from `limiter`, before anything else happens.
    fn take(limiter: &PeerLimiter, peer: Peer, what: &'static str) -> Result<(), TokenError> {
        limiter.check(peer).map_err(|limited| TokenError::RateLimited { what, limited })
    }
}

/// TokenService and AuthorizationService over gRPC.
#[derive(Clone)]
pub struct TokenGrpc {
    tokens: Tokens,
    clients: Clients,
    auth: Authenticator,
    replays: Replays,
    limiters: Limiters,
}

impl TokenGrpc {
    /// Serves `tokens` and the registered OAuth `clients`, authenticating callers with `auth`; `secrets` seals replayable replies;
    /// `limiters` limit the unauthenticated RPCs per peer.
    pub fn new(tokens: Tokens, clients: Clients, auth: Authenticator, secrets: SecretBox, limiters: Limiters) -> Self {
        let replays = Replays::new(tokens.store().database().clone()).sealed(secrets);
        Self { tokens, clients, auth, replays, limiters }
    }

    /// The TokenService tonic server, behind the authentication layer.
    pub fn into_server(self) -> Authenticated<TokenServiceServer<Self>> {
        Authenticated::new(self.auth.clone(), TokenServiceServer::new(self))
    }

    /// The AuthorizationService tonic server. It authenticates no caller (a request carries the
    /// token it asks about, and the hot path pays for nothing else), so it has no layer.
    pub fn into_authz_server(self) -> AuthorizationServiceServer<Self> {
        AuthorizationServiceServer::new(self)
    }

    async fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        Ok(caller_of(req).await.map_err(TokenError::from)?)
    }
}

impl TokenGrpc {
    /// Runs a call once per (`method`, `credential`, `request_id`) (see
    /// [`lanyard_core::idempotency`]): a retry with the same id and the same credential gets the
    /// first reply back, sealed at rest (it holds a refresh token), instead of running again. Only
    /// the holder of the credential can replay, and a refresh retried after a lost reply is not
    /// taken for theft; but once the replied refresh token has been used, a replay is a reuse.
    /// `run` gets the id to forward to other services, derived from the scope so that two callers
    /// who chose the same id do not collide there.
    async fn once<R, F, Fut>(
        &self,
        method: &str,
        credential: &str,
        request_id: &str,
        request: &[u8],
        refresh_token_of: fn(&R) -> &str,
        run: F,
    ) -> Result<R, Status>
    where
        R: Message + Default,
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<R, TokenError>>,
    {
        let scope = format!("{method}:{}", sha256_hex(credential.as_bytes()));
        let forward = |id: Option<RequestId>| run(id.map(|id| id.derive(&scope)).unwrap_or_default());
        let replayed = |reply: R| async move {
            self.tokens.check_replayed(refresh_token_of(&reply)).await?;
            Ok(reply)
        };
        Ok(self.replays.once(&scope, request_id, request, forward, replayed).await?)
    }
}

fn check_request_id(id: &str) -> Result<(), TokenError> {
    RequestId::parse(id).map(|_| ()).map_err(TokenError::from)
}

fn org_id(raw: Option<&str>) -> Result<Option<OrganizationId>, TokenError> {
    match raw {
        None | Some("") => Ok(None),
        Some(s) => Ok(Some(OrganizationId::parse(s)?)),
    }
}

fn session_id(raw: &str) -> Result<SessionId, TokenError> {
    Ok(SessionId::parse(raw)?)
}

fn session_to_pb(s: &Session) -> pb::Session {
    pb::Session {
        session_id: s.id.to_string(),
        user_id: s.user_id.to_string(),
        active_organization_id: s.active_org_id.to_string(),
        create_time: Some(s.created_at.to_proto()),
        expire_time: Some(s.expires_at.to_proto()),
        revoke_time: s.revoked_at.map(Timestamp::to_proto),
        last_refresh_time: s.last_refresh_at.map(Timestamp::to_proto),
        user_agent: s.user_agent.clone(),
        ip_address: s.ip_address.clone(),
    }
}

fn jwk_to_pb(k: PublicJwk) -> pb::Jwk {
    pb::Jwk { kid: k.kid, kty: k.kty, alg: k.alg, r#use: k.use_, crv: k.crv, x: k.x, y: k.y, n: k.n, e: k.e }
}

fn algorithm_to_pb(a: SigningAlgorithm) -> pb::SigningAlgorithm {
    match a {
        SigningAlgorithm::Es256 => pb::SigningAlgorithm::Es256,
        SigningAlgorithm::EdDsa => pb::SigningAlgorithm::Eddsa,
        SigningAlgorithm::Rs256 => pb::SigningAlgorithm::Rs256,
    }
}

fn key_to_pb(k: &LoadedKey) -> pb::SigningKey {
    pb::SigningKey {
        kid: k.kid.clone(),
        algorithm: algorithm_to_pb(k.algorithm) as i32,
        state: match k.state {
            KeyState::Next => pb::SigningKeyState::Next,
            KeyState::Active => pb::SigningKeyState::Active,
            KeyState::Retired => pb::SigningKeyState::Retired,
        } as i32,
        create_time: Some(k.created_at.to_proto()),
    }
}

struct Out {
    access_token: String,
    expires_in: prost_types::Duration,
    expire_time: prost_types::Timestamp,
    refresh_token: String,
    refresh_expire_time: prost_types::Timestamp,
    session: pb::Session,
    active_organization: pb::ActiveOrganization,
    user_id: String,
}

fn out(issued: Issued, ttl: std::time::Duration) -> Out {
    Out {
        access_token: issued.access_token,
        expires_in: prost_types::Duration::try_from(ttl).unwrap_or_default(),
        expire_time: issued.access_expires_at.to_proto(),
        refresh_token: issued.refresh_token,
        refresh_expire_time: issued.refresh_expires_at.to_proto(),
        session: session_to_pb(&issued.session),
        active_organization: pb::ActiveOrganization {
            organization_id: issued.membership.organization_id.to_string(),
            organization_slug: issued.membership.organization_slug,
            roles: issued.membership.roles,
        },
        user_id: issued.session.user_id.to_string(),
    }
}

#[tonic::async_trait]
impl TokenService for TokenGrpc {
    async fn exchange_token(
        &self,
        request: Request<pb::ExchangeTokenRequest>,
    ) -> Result<Response<pb::ExchangeTokenResponse>, Status> {
        use pb::exchange_token_request::Grant;
        let peer = self.limiters.peer_rule.of(&request);
        Limiters::take(&self.limiters.exchange, peer, "token exchanges")?;
        if matches!(request.get_ref().grant, Some(Grant::InvitationGrant(_))) {
            Limiters::take(&self.limiters.invitation_grant, peer, "invitation grants")?;
        }
        let req = request.into_inner();
        let credential = match &req.grant {
            None => String::new(),
            Some(Grant::IdTokenGrant(g)) => format!("id_token|{}|{}", g.organization_id, g.id_token),
            Some(Grant::InvitationGrant(g)) => format!("invitation|{}|{}", g.invitation_token, g.id_token),
            Some(Grant::RefreshTokenGrant(g)) => {
                format!("refresh|{}|{}", g.organization_id.as_deref().unwrap_or_default(), g.refresh_token)
            }
        };
        let (request_id, request) = (req.request_id.clone(), req.encode_to_vec());
        let refresh_token_of: fn(&pb::ExchangeTokenResponse) -> &str = |r| &r.refresh_token;
        let reply = self
            .once("ExchangeToken", &credential, &request_id, &request, refresh_token_of, |forward| async move {
                let client = ClientInfo { user_agent: req.user_agent, ip_address: req.ip_address };
                let issued = match req.grant {
                    None => return Err(TokenError::from(ValueError::Missing("grant"))),
                    Some(Grant::IdTokenGrant(g)) => {
                        let org = org_id(Some(&g.organization_id))?;
                        self.tokens.sign_in(&g.id_token, org, g.nonce.as_deref(), client).await?
                    }
                    Some(Grant::InvitationGrant(g)) => {
                        self.tokens
                            .sign_in_with_invitation(
                                &g.invitation_token,
                                &g.id_token,
                                g.nonce.as_deref(),
                                client,
                                &forward,
                            )
                            .await?
                    }
                    Some(Grant::RefreshTokenGrant(g)) => {
                        let org = org_id(g.organization_id.as_deref())?;
                        self.tokens.refresh(&g.refresh_token, org, None).await?
                    }
                };
                let o = out(issued, self.tokens.access_tokens().ttl());
                Ok(pb::ExchangeTokenResponse {
                    access_token: o.access_token,
                    token_type: "Bearer".into(),
                    expires_in: Some(o.expires_in),
                    expire_time: Some(o.expire_time),
                    refresh_token: o.refresh_token,
                    refresh_expire_time: Some(o.refresh_expire_time),
                    session: Some(o.session),
                    active_organization: Some(o.active_organization),
                    user_id: o.user_id,
                })
            })
            .await?;
        Ok(Response::new(reply))
    }

    async fn refresh_session(
        &self,
        request: Request<pb::RefreshSessionRequest>,
    ) -> Result<Response<pb::RefreshSessionResponse>, Status> {
        let peer = self.limiters.peer_rule.of(&request);
        Limiters::take(&self.limiters.exchange, peer, "token exchanges")?;
        let req = request.into_inner();
        let credential = format!("{}|{}", req.organization_id.as_deref().unwrap_or_default(), req.refresh_token);
        let request = req.encode_to_vec();
        let refresh_token_of: fn(&pb::RefreshSessionResponse) -> &str = |r| &r.refresh_token;
        let reply = self
            .once("RefreshSession", &credential, &req.request_id, &request, refresh_token_of, |_| async {
                let org = org_id(req.organization_id.as_deref())?;
                let issued = self.tokens.refresh(&req.refresh_token, org, None).await?;
                let o = out(issued, self.tokens.access_tokens().ttl());
                Ok(pb::RefreshSessionResponse {
                    access_token: o.access_token,
                    token_type: "Bearer".into(),
                    expires_in: Some(o.expires_in),
                    expire_time: Some(o.expire_time),
                    refresh_token: o.refresh_token,
                    refresh_expire_time: Some(o.refresh_expire_time),
                    session: Some(o.session),
                    active_organization: Some(o.active_organization),
                    user_id: o.user_id,
                })
            })
            .await?;
        Ok(Response::new(reply))
    }

    async fn revoke_session(
        &self,
        request: Request<pb::RevokeSessionRequest>,
    ) -> Result<Response<pb::RevokeSessionResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        check_request_id(&req.request_id)?;
        let id = session_id(&req.session_id)?;
        let session = self.tokens.revoke_session(&caller, id).await?;
        Ok(Response::new(pb::RevokeSessionResponse { session: Some(session_to_pb(&session)) }))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let user = UserId::parse(&req.user_id).map_err(TokenError::from)?;
        let org = org_id(req.organization_id.as_deref())?;
        let page = Page::parse(req.page_size, &req.page_token).map_err(TokenError::from)?;
        let (sessions, next) = self.tokens.list_sessions(&caller, user, org, req.include_revoked, &page).await?;
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: sessions.iter().map(session_to_pb).collect(),
            next_page_token: next,
        }))
    }

    async fn get_jwks(&self, _request: Request<pb::GetJwksRequest>) -> Result<Response<pb::GetJwksResponse>, Status> {
        let (keys, json) = self.tokens.jwks();
        Ok(Response::new(pb::GetJwksResponse { keys: keys.into_iter().map(jwk_to_pb).collect(), jwks_json: json }))
    }

    async fn rotate_signing_key(
        &self,
        request: Request<pb::RotateSigningKeyRequest>,
    ) -> Result<Response<pb::RotateSigningKeyResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        check_request_id(&req.request_id)?;
        let algorithm = match pb::SigningAlgorithm::try_from(req.algorithm) {
            Ok(pb::SigningAlgorithm::Unspecified) => None,
            Ok(pb::SigningAlgorithm::Es256) => Some(SigningAlgorithm::Es256),
            Ok(pb::SigningAlgorithm::Eddsa) => Some(SigningAlgorithm::EdDsa),
            Ok(pb::SigningAlgorithm::Rs256) => Some(SigningAlgorithm::Rs256),
            Err(_) => return Err(TokenError::from(ValueError::Malformed("algorithm")).into()),
        };
        let key = self.tokens.rotate(&caller, algorithm, req.force).await?;
        Ok(Response::new(pb::RotateSigningKeyResponse { key: Some(key_to_pb(&key)) }))
    }

    async fn register_client(
        &self,
        request: Request<pb::RegisterClientRequest>,
    ) -> Result<Response<pb::RegisterClientResponse>, Status> {
        self.register_client_rpc(request).await
    }

    async fn list_clients(
        &self,
        request: Request<pb::ListClientsRequest>,
    ) -> Result<Response<pb::ListClientsResponse>, Status> {
        self.list_clients_rpc(request).await
    }

    async fn delete_client(
        &self,
        request: Request<pb::DeleteClientRequest>,
    ) -> Result<Response<pb::DeleteClientResponse>, Status> {
        self.delete_client_rpc(request).await
    }
}

// ----- Authorize ---------------------------------------------------------------------------
//
// The decision is lanyard-authz's `Authorizer` (verified-token cache, near cache, Redis, then the
// facts' owners); this adapter parses, counts and maps it.

/// Counts one decision in `lanyard_authorize_decisions_total{reason}` (a closed set of labels).
fn count_decision(reason: apb::Decision) {
    metrics::counter!("lanyard_authorize_decisions_total", "reason" => reason.as_str_name()).increment(1);
}

impl TokenGrpc {
    async fn decide(
        &self,
        token: &str,
        org: Option<&str>,
        permissions: &[String],
    ) -> Result<(lanyard_authz::Outcome, Vec<Permission>), Status> {
        if permissions.len() > 100 {
            return Err(TokenError::InvalidField { field: "permissions", message: "at most 100".into() }.into());
        }
        let wanted = permissions
            .iter()
            .map(|p| Permission::parse(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(TokenError::from)?;
        let org = org_id(org)?;
        let outcome = self.tokens.authorizer().check(token, org, &wanted).await?;
        Ok((outcome, wanted))
    }
}

#[tonic::async_trait]
impl AuthorizationService for TokenGrpc {
    async fn authorize(
        &self,
        request: Request<apb::AuthorizeRequest>,
    ) -> Result<Response<apb::AuthorizeResponse>, Status> {
        let req = request.into_inner();
        let (outcome, _) = self
            .decide(&req.access_token, req.organization_id.as_deref(), std::slice::from_ref(&req.permission))
            .await?;
        let reason = outcome.permissions.first().copied().unwrap_or(outcome.token);
        count_decision(reason);
        Ok(Response::new(apb::AuthorizeResponse {
            allowed: reason == apb::Decision::Allowed,
            reason: reason as i32,
            principal: outcome.principal.as_deref().map(principal_to_pb),
        }))
    }

    async fn batch_authorize(
        &self,
        request: Request<apb::BatchAuthorizeRequest>,
    ) -> Result<Response<apb::BatchAuthorizeResponse>, Status> {
        let req = request.into_inner();
        let (outcome, wanted) =
            self.decide(&req.access_token, req.organization_id.as_deref(), &req.permissions).await?;
        let results = wanted
            .iter()
            .zip(&outcome.permissions)
            .map(|(w, d)| {
                count_decision(*d);
                apb::PermissionResult {
                    permission: w.to_string(),
                    allowed: *d == apb::Decision::Allowed,
                    reason: *d as i32,
                }
            })
            .collect();
        Ok(Response::new(apb::BatchAuthorizeResponse {
            results,
            principal: outcome.principal.as_deref().map(principal_to_pb),
            decision: outcome.token as i32,
        }))
    }
}
