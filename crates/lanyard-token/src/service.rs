//! The token domain service: sign-in by ID token (alone or with an invitation), refresh and org
//! switch, revocation and listing of sessions, and the key operations. It speaks domain types only.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use lanyard_authz::{Authorizer, FactKey, Facts, Fallback};
use lanyard_clients::{InvitationClient, Organization, TenancyClient};

use lanyard_core::crypto::{random_token, sha256_hex};
use lanyard_core::page::Page;
use lanyard_core::{Caller, OrganizationId, SessionId, Timestamp, UserId};

use crate::access::{AccessTokens, Grant};
use crate::error::{organization_lookup, TokenError};
use crate::facts::{session_fact, TokenFacts};
use crate::keys::{LoadedKey, PublicJwk, SigningAlgorithm};
use crate::signing::KeyManager;
use crate::store::{NewSession, Session, TokenStore, UsedIdToken};
use crate::upstream::{peek_issuer, Connection, Identity, UpstreamError, UpstreamVerifier};

type Result<T, E = TokenError> = std::result::Result<T, E>;

/// Random bytes of a refresh token (256 bits).
pub const REFRESH_TOKEN_BYTES: usize = 32;

/// Lifetimes.
#[derive(Clone, Copy, Debug)]
pub struct Lifetimes {
    /// Of an access token (5 minutes).
    pub access: Duration,
    /// Of one refresh token; each refresh issues a new one (14 days), never past the session's end.
    pub refresh: Duration,
    /// Of a session, however often it is refreshed (30 days).
    pub session: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            access: Duration::from_secs(5 * 60),
            refresh: Duration::from_secs(14 * 24 * 3600),
            session: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// Who is signing in from where, recorded on a new session.
#[derive(Clone, Debug, Default)]
pub struct ClientInfo {
    pub user_agent: Option<String>,
    pub ip_address: Option<String>,
}

/// Tokens handed out by a sign-in or a refresh.
#[derive(Clone, Debug)]
pub struct Issued {
    pub access_token: String,
    pub access_expires_at: Timestamp,
    pub refresh_token: String,
    pub refresh_expires_at: Timestamp,
    pub session: Session,
    pub membership: Membership,
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

/// What an invitation link's landing page shows.
#[derive(Clone, Debug)]
pub struct Landing {
    pub organization_id: OrganizationId,
    pub organization_name: String,
    pub email: String,
    /// The organization's enabled connections, oldest first.
    pub connections: Vec<Connection>,
}

/// The token service.
#[derive(Clone, Debug)]
pub struct Tokens {
    store: TokenStore,
    keys: KeyManager,
    access: AccessTokens,
    upstream: UpstreamVerifier,
    tenancy: TenancyClient,
    invitations: Option<InvitationClient>,
    lifetimes: Lifetimes,
    authorizer: Authorizer,
}

fn upstream_error(e: UpstreamError) -> TokenError {
    match e {
        UpstreamError::Invalid(why) => TokenError::IdTokenInvalid(why),
        UpstreamError::Unavailable(why) => TokenError::IdpUnavailable(why),
    }
}

impl Tokens {
    /// Assembles the service.
    pub fn new(
        store: TokenStore,
        keys: KeyManager,
        access: AccessTokens,
        upstream: UpstreamVerifier,
        (tenancy, invitations): (TenancyClient, Option<InvitationClient>),
        lifetimes: Lifetimes,
        facts: Facts,
    ) -> Self {
        let source = TokenFacts { store: store.clone(), tenancy: tenancy.clone() };
        let authorizer =
            Authorizer::new(Arc::new(access.ring()), access.audience(), facts, Fallback::Source(Arc::new(source)));
        Self { store, keys, access, upstream, tenancy, invitations, lifetimes, authorizer }
    }

    /// Decides Authorize (shared by the gRPC adapter and Envoy's ext_authz).
    pub fn authorizer(&self) -> &Authorizer {
        &self.authorizer
    }

    /// Records a revoked session in the shared facts, so every process refuses its tokens before
    /// the revocation returns. The store is the authority: if the shared cache cannot take it, the
    /// processes that cannot reach the cache ask the store.
    async fn publish_revoked(&self, session: SessionId) {
        if let Err(e) = self.authorizer.facts().write(&FactKey::Session(session), &session_fact(true)).await {
            tracing::warn!(error = %e, session_id = %session, "publishing a revoked session to the shared cache");
        }
    }

    /// The store (for readiness checks).
    pub fn store(&self) -> &TokenStore {
        &self.store
    }

    /// The access-token minter and verifier.
    pub fn access_tokens(&self) -> &AccessTokens {
        &self.access
    }

    /// The key manager.
    pub fn keys(&self) -> &KeyManager {
        &self.keys
    }

    // ----- what tenancy knows --------------------------------------------------------------

    /// An active organization; an unknown one is [`TokenError::OrganizationNotFound`], a suspended
    /// or deleted one [`TokenError::OrganizationInactive`].
    async fn active_organization(&self, org: OrganizationId) -> Result<Organization> {
        let o = self.tenancy.organization(org).await.map_err(organization_lookup)?;
        o.is_active().then_some(o).ok_or(TokenError::OrganizationInactive)
    }

    /// An active organization by slug.
    async fn active_organization_by_slug(&self, slug: &str) -> Result<Organization> {
        let o = self.tenancy.organization_by_slug(slug).await.map_err(organization_lookup)?;
        o.is_active().then_some(o).ok_or(TokenError::OrganizationInactive)
    }

    /// The enabled SSO connections of `org`.
    async fn connections(&self, org: OrganizationId) -> Result<Vec<Connection>> {
        Ok(self.tenancy.sso_connections(org).await?.into_iter().filter_map(Connection::enabled).collect())
    }

    /// The user a verified identity signs in to `org` as, under tenancy's identity rules; the
    /// user is an active member of `org`. Refusals keep tenancy's reasons
    /// (`EMAIL_DOMAIN_NOT_VERIFIED`, `EMAIL_NOT_VERIFIED`), except that no membership is
    /// [`TokenError::NotAMember`].
    async fn resolve_identity(&self, identity: &Identity, org: OrganizationId, dry_run: bool) -> Result<UserId> {
        match self.tenancy.resolve_identity(&identity.into(), org, dry_run).await {
            Ok(user) => Ok(user),
            Err(e) if e.is("NOT_A_MEMBER") => Err(TokenError::NotAMember),
            Err(e) => Err(e.into()),
        }
    }

    /// The user's active membership of the active organization `org`, with the permissions its
    /// roles grant; [`TokenError::NotAMember`] when there is none.
    async fn membership(&self, org: OrganizationId, user: UserId) -> Result<Membership> {
        let o = self.active_organization(org).await?;
        let member = self.tenancy.member(org, user).await?.filter(|m| m.active).ok_or(TokenError::NotAMember)?;
        let permissions = self.permissions(org, &member.roles).await?;
        Ok(Membership {
            organization_id: org,
            organization_slug: o.slug,
            roles: member.roles,
            permissions,
            version: member.version,
        })
    }

    /// The permissions `roles` grant in `org`: built-in ones from the shared table, custom ones
    /// from the organization's roles (read only when a custom role is held).
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
            for r in self.tenancy.roles(org).await? {
                if custom.contains(&r.name.as_str()) {
                    granted.extend(r.permissions);
                }
            }
        }
        Ok(granted.into_iter().collect())
    }

    // ----- sign-in -------------------------------------------------------------------------

    /// The enabled connection of `org` whose issuer is the token's, verifying the token.
    async fn verify_for(&self, id_token: &str, org: OrganizationId, nonce: Option<&str>) -> Result<Identity> {
        if id_token.is_empty() {
            return Err(lanyard_core::ValueError::Missing("id_token").into());
        }
        let issuer = peek_issuer(id_token).ok_or_else(|| TokenError::IdTokenInvalid("no iss claim".into()))?;
        let connections = self.connections(org).await?;
        let connection: &Connection =
            connections.iter().find(|c| c.accepts_issuer(&issuer)).ok_or(TokenError::NoConnection)?;
        self.upstream.verify(id_token, connection, nonce, Timestamp::now()).await.map_err(upstream_error)
    }

    /// Signs in with an upstream ID token. Without `org`, the organization of the identity's last
    /// session is used (its connection must still accept the token); on a first sign-in, the
    /// user's only organization among those whose connections accept the token.
    pub async fn sign_in(
        &self,
        id_token: &str,
        org: Option<OrganizationId>,
        nonce: Option<&str>,
        client: ClientInfo,
    ) -> Result<Issued> {
        let org = match org {
            Some(org) => org,
            None => match self.last_org(id_token).await? {
                Some(org) => org,
                None => self.only_org(id_token, nonce).await?,
            },
        };
        self.active_organization(org).await?;
        let identity = self.verify_for(id_token, org, nonce).await?;
        self.refuse_replay(&identity).await?;
        // Tenancy applies the identity rules and the membership check in one transaction, and
        // links a new identity only when both hold: a refused sign-in writes nothing.
        let user = self.resolve_identity(&identity, org, false).await?;
        let membership = self.membership(org, user).await?;
        self.start_session(user, &identity, membership, client).await
    }

    /// Refuses an ID token that was already exchanged, before anything is written. (Two exchanges
    /// at once both pass here; the session's transaction lets one through.)
    async fn refuse_replay(&self, identity: &Identity) -> Result<()> {
        if self.store.id_token_used(&identity.token_hash).await? {
            return Err(TokenError::IdTokenReplayed);
        }
        Ok(())
    }

    /// For a first sign-in without an organization: verify the token against every enabled
    /// connection with its issuer, and take the one organization of those the user is an active
    /// member of. None, or several, and the caller must name the organization.
    async fn only_org(&self, id_token: &str, nonce: Option<&str>) -> Result<OrganizationId> {
        let issuer = peek_issuer(id_token).ok_or(TokenError::OrganizationRequired)?;
        let mut issuers = vec![issuer.clone()];
        if !issuer.contains("://") {
            // Google's documented schemeless issuer; connections store the https form.
            issuers.push(format!("https://{issuer}"));
        }
        let mut candidates = Vec::new();
        for issuer in &issuers {
            let found = self.tenancy.sso_connections_by_issuer(issuer).await?;
            candidates.extend(found.into_iter().filter_map(|c| Some((c.organization_id, Connection::enabled(c)?))));
        }
        let mut identity = None;
        let mut orgs = std::collections::BTreeSet::new();
        for (org, connection) in &candidates {
            if let Ok(verified) = self.upstream.verify(id_token, connection, nonce, Timestamp::now()).await {
                identity.get_or_insert(verified);
                orgs.insert(*org);
            }
        }
        let identity = identity.ok_or(TokenError::OrganizationRequired)?;
        let mut member_of = Vec::new();
        for org in orgs {
            // A dry run: which organizations would take this identity, writing nothing yet.
            let connection = candidates.iter().find(|(o, c)| *o == org && c.accepts_issuer(&identity.issuer));
            let Some((_, connection)) = connection else { continue };
            let through = Identity { connection_id: connection.id, ..identity.clone() };
            if self.resolve_identity(&through, org, true).await.is_ok() {
                member_of.push(org);
            }
        }
        match member_of[..] {
            [only] => Ok(only),
            _ => Err(TokenError::OrganizationRequired),
        }
    }

    /// The organization of the last session of the token's (unverified) identity: only a hint,
    /// the token is verified against that organization's connection afterwards.
    async fn last_org(&self, id_token: &str) -> Result<Option<OrganizationId>> {
        use base64::Engine;
        let Some(issuer) = peek_issuer(id_token) else { return Ok(None) };
        let claims: serde_json::Value = id_token
            .split('.')
            .nth(1)
            .and_then(|p| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let text = |k: &str| claims.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_ascii_lowercase();
        let mut subjects = vec![claims.get("sub").and_then(|v| v.as_str()).unwrap_or_default().to_owned()];
        subjects.push(format!("{}:{}", text("tid"), text("oid")));
        for subject in subjects.iter().filter(|s| !s.is_empty() && s.as_str() != ":") {
            if let Some(org) = self.store.last_org_of_identity(&issuer, subject).await? {
                return Ok(Some(org));
            }
        }
        Ok(None)
    }

    /// Accepts an invitation for the identity of `id_token`, then signs in to its organization.
    /// The token is verified against a connection of the invitation's organization.
    pub async fn sign_in_with_invitation(
        &self,
        invitation_token: &str,
        id_token: &str,
        nonce: Option<&str>,
        client: ClientInfo,
        request_id: &str,
    ) -> Result<Issued> {
        if invitation_token.is_empty() {
            return Err(lanyard_core::ValueError::Missing("invitation_token").into());
        }
        // Checked before the invitation is looked up, so the answer cannot depend on it.
        if id_token.is_empty() {
            return Err(lanyard_core::ValueError::Missing("id_token").into());
        }
        let invitations = self.invitations.as_ref().ok_or(TokenError::InvitationsUnavailable)?;
        let preview = invitations.preview(invitation_token).await.map_err(|e| TokenError::from(e).hide_invitation())?;
        let org_id =
            self.active_organization_by_slug(&preview.organization_slug).await.map_err(TokenError::hide_invitation)?.id;
        let identity = self.verify_for(id_token, org_id, nonce).await.map_err(TokenError::hide_invitation)?;
        self.refuse_replay(&identity).await?;
        // The invitation service checks the invited email against the identity's verified one,
        // and tenancy finds or creates the user and links the identity in the same transaction as
        // the seat claim, so a refused acceptance writes nothing.
        let accepted = invitations.accept(invitation_token, &(&identity).into(), request_id).await?;
        if accepted.organization_id != org_id {
            return Err(TokenError::Internal("the accepted invitation is for another organization".into()));
        }
        let user = accepted.user_id;
        let membership = self.membership(org_id, user).await?;
        self.start_session(user, &identity, membership, client).await
    }

    async fn start_session(
        &self,
        user: UserId,
        identity: &Identity,
        membership: Membership,
        client: ClientInfo,
    ) -> Result<Issued> {
        let now = Timestamp::now();
        let session_expires = now.plus(self.lifetimes.session);
        let refresh_expires = now.plus(self.lifetimes.refresh).min(session_expires);
        let refresh_token = random_token(REFRESH_TOKEN_BYTES);
        let bounded = |s: Option<String>| s.map(|s| s.chars().filter(|c| !c.is_control()).take(512).collect());
        let new = NewSession {
            user_id: user,
            org: membership.organization_id,
            issuer: identity.issuer.clone(),
            subject: identity.subject.clone(),
            connection_id: identity.connection_id,
            expires_at: session_expires,
            user_agent: bounded(client.user_agent),
            ip_address: bounded(client.ip_address),
            id_token: UsedIdToken { hash: identity.token_hash.clone(), until: identity.replay_until },
        };
        let session =
            self.store.create_session(&new, &sha256_hex(refresh_token.as_bytes()), refresh_expires, now).await?;
        metrics::counter!("lanyard_token_sign_ins_total", "kind" => identity.kind.as_str()).increment(1);
        self.issue(session, membership, refresh_token, refresh_expires, now)
    }

    fn issue(
        &self,
        session: Session,
        membership: Membership,
        refresh_token: String,
        refresh_expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<Issued> {
        let grant = Grant {
            user_id: session.user_id,
            session_id: session.id,
            organization_id: membership.organization_id,
            organization_slug: &membership.organization_slug,
            roles: &membership.roles,
            permissions: &membership.permissions,
            membership_version: membership.version,
            connection_id: session.connection_id,
        };
        let (access_token, access_expires_at) = self.access.mint(&grant, now).map_err(TokenError::Internal)?;
        Ok(Issued { access_token, access_expires_at, refresh_token, refresh_expires_at, session, membership })
    }

    // ----- refresh -------------------------------------------------------------------------

    /// Rotates a refresh token, optionally switching the session's active organization. Switching
    /// to an organization the user is not an active member of changes nothing (the token stays
    /// usable). Reusing a used token revokes its session, the whole family.
    ///
    /// `client` is the OAuth client redeeming it (`None`: a gateway's `RefreshSession` or
    /// `ExchangeToken`). A session signed in for an application through the OpenID Provider is
    /// refreshed by that client only, so its refresh token taken elsewhere cannot be redeemed over
    /// gRPC without the client's authentication; refused, the token is not used.
    pub async fn refresh(
        &self,
        refresh_token: &str,
        org: Option<OrganizationId>,
        client: Option<&str>,
    ) -> Result<Issued> {
        if refresh_token.is_empty() {
            return Err(lanyard_core::ValueError::Missing("refresh_token").into());
        }
        if refresh_token.len() > 256 {
            return Err(TokenError::RefreshTokenInvalid);
        }
        let now = Timestamp::now();
        let hash = sha256_hex(refresh_token.as_bytes());
        let record = self.store.refresh_token(&hash).await?.ok_or(TokenError::RefreshTokenInvalid)?;
        let session = self.store.session(record.session_id).await?.ok_or(TokenError::RefreshTokenInvalid)?;
        if self.store.session_oauth_client(session.id).await?.as_deref() != client {
            return Err(TokenError::RefreshTokenInvalid);
        }
        if session.revoked_at.is_some() {
            return Err(TokenError::SessionRevoked);
        }
        if record.used_at.is_some() {
            return Err(self.reused(&session, now).await);
        }
        if record.expires_at <= now || session.expires_at <= now {
            return Err(TokenError::RefreshTokenExpired);
        }
        if let Some(connection) = session.connection_id {
            if !self.tenancy.sso_connection_enabled(connection).await? {
                return Err(self.connection_gone(&session, now).await);
            }
        }
        let session_org = session.active_org_id;
        let target = org.unwrap_or(session_org);
        let membership = self.membership(target, session.user_id).await?;
        if target != session_org {
            // The target must accept the way this session signed in: membership alone would let
            // one organization's provider sign people in to another.
            let accepted = self.connections(target).await?.iter().any(|c| c.accepts_issuer(&session.issuer));
            if !accepted {
                return Err(TokenError::ReauthenticationRequired);
            }
        }
        let next = random_token(REFRESH_TOKEN_BYTES);
        let next_expires = now.plus(self.lifetimes.refresh).min(session.expires_at);
        let rotated = self
            .store
            .rotate_refresh(&hash, &sha256_hex(next.as_bytes()), session.id, target, next_expires, now)
            .await?;
        if !rotated {
            // Another request used it between our read and our write: the same as a replay.
            return Err(self.reused(&session, now).await);
        }
        let session = self.store.session(session.id).await?.ok_or(TokenError::SessionNotFound)?;
        if target != session_org {
            let details = [("from_organization_id", session_org.to_string()), ("issuer", session.issuer.clone())];
            let (actor, what) = (format!("user:{}", session.user_id), format!("session:{}", session.id));
            self.tenancy.record_audit_event(target, &actor, "session.switched", &what, &details).await?;
        }
        let switched = if target == session_org { "no" } else { "yes" };
        metrics::counter!("lanyard_token_refreshes_total", "switched_org" => switched).increment(1);
        self.issue(session, membership, next, next_expires, now)
    }

    /// Whether a reply about to be replayed may be: when the refresh token it carries has been
    /// used since (or its session ended), replaying it would hand out a dead family's token, and
    /// is treated as the reuse it is.
    pub async fn check_replayed(&self, refresh_token: &str) -> Result<()> {
        let hash = sha256_hex(refresh_token.as_bytes());
        let record = self.store.refresh_token(&hash).await?.ok_or(TokenError::RefreshTokenInvalid)?;
        let session = self.store.session(record.session_id).await?.ok_or(TokenError::RefreshTokenInvalid)?;
        if session.revoked_at.is_some() {
            return Err(TokenError::SessionRevoked);
        }
        if record.used_at.is_some() {
            return Err(self.reused(&session, Timestamp::now()).await);
        }
        Ok(())
    }

    async fn reused(&self, session: &Session, now: Timestamp) -> TokenError {
        tracing::warn!(session_id = %session.id, user_id = %session.user_id, "refresh token reused: revoking its session");
        metrics::counter!("lanyard_token_refresh_reuse_total").increment(1);
        match self.end_session(session, "refresh_token_reused", "system:reuse-detection", now).await {
            Ok(_) => TokenError::RefreshTokenReused,
            Err(e) => e,
        }
    }

    /// Ends a session whose SSO connection was deleted (its tokens already stopped working
    /// through the connection's fact; this makes the store say so too).
    async fn connection_gone(&self, session: &Session, now: Timestamp) -> TokenError {
        match self.end_session(session, "connection_deleted", "system:connection-deleted", now).await {
            Ok(_) => TokenError::SessionRevoked,
            Err(e) => e,
        }
    }

    /// Revokes a session everywhere: in this process, in the store, in the shared facts (before
    /// returning), and in the audit log of its active organization.
    async fn end_session(
        &self,
        session: &Session,
        reason: &str,
        actor: &str,
        now: Timestamp,
    ) -> Result<Option<Session>> {
        self.access.revoke_session(session.id, now);
        let revoked = self.store.revoke_session(session.id, reason, actor, now).await?;
        self.publish_revoked(session.id).await;
        let details = [("reason", reason.to_owned()), ("user_id", session.user_id.to_string())];
        let target = format!("session:{}", session.id);
        let audit = self.tenancy.record_audit_event(session.active_org_id, actor, "session.revoked", &target, &details);
        if let Err(e) = audit.await {
            // The revocation stands; the token service's own event log has it too.
            tracing::warn!(error = %e, session_id = %session.id, "recording a session revocation in the audit log");
        }
        Ok(revoked)
    }

    // ----- sessions ------------------------------------------------------------------------

    /// Revokes a session: its owner, an operator, or a member with `members:write` in the
    /// session's active organization.
    pub async fn revoke_session(&self, caller: &Caller, id: SessionId) -> Result<Session> {
        let session = self.store.session(id).await?;
        let session = match (session, caller) {
            (Some(s), Caller::Member(p)) if p.user_id == s.user_id => s,
            (Some(s), _) => {
                caller.require(s.active_org_id, "members:write")?;
                s
            }
            (None, _) if caller.is_operator() => return Err(TokenError::SessionNotFound),
            // A member learns nothing about sessions it may not see.
            (None, _) => return Err(lanyard_core::caller::Denied::WrongOrganization.into()),
        };
        let now = Timestamp::now();
        self.end_session(&session, "revoked", &caller.actor(), now).await?.ok_or(TokenError::SessionNotFound)
    }

    /// A user's sessions: the user itself, an operator, or (for sessions active in its own
    /// organization only, and for users who are or were members of it) a member with `members:read`.
    pub async fn list_sessions(
        &self,
        caller: &Caller,
        user: UserId,
        org: Option<OrganizationId>,
        include_revoked: bool,
        page: &Page,
    ) -> Result<(Vec<Session>, String)> {
        let org = match caller {
            Caller::Member(p) if p.user_id == user => org,
            Caller::Member(p) => {
                let own = p.organization_id;
                if org.is_some_and(|o| o != own) {
                    return Err(lanyard_core::caller::Denied::WrongOrganization.into());
                }
                caller.require(own, "members:read")?;
                if self.tenancy.member(own, user).await?.is_none() {
                    return Err(lanyard_core::caller::Denied::WrongOrganization.into());
                }
                Some(own)
            }
            _ => org,
        };
        self.store.list_sessions(user, org, include_revoked, page).await
    }

    // ----- for the OpenID Provider endpoints ------------------------------------------------

    /// The verifier of the organizations' providers (and the way to their endpoints).
    pub fn upstream(&self) -> &UpstreamVerifier {
        &self.upstream
    }

    /// An active organization named by id or by slug, for a sign-in.
    pub async fn organization_for_sign_in(&self, key: &str) -> Result<Organization> {
        match OrganizationId::parse(key) {
            Ok(id) => self.active_organization(id).await,
            Err(_) => self.active_organization_by_slug(key).await,
        }
    }

    /// The enabled connection a sign-in into `org` goes through: `wanted` when named, else the
    /// oldest enabled one. [`TokenError::NoConnection`] when there is none.
    pub async fn sign_in_connection(
        &self,
        org: OrganizationId,
        wanted: Option<lanyard_core::ConnectionId>,
    ) -> Result<Connection> {
        let connections = self.connections(org).await?;
        let found = match wanted {
            Some(id) => connections.into_iter().find(|c| c.id == id),
            None => connections.into_iter().next(),
        };
        found.ok_or(TokenError::NoConnection)
    }

    /// The client secret of `org`'s connection, which Lanyard presents at the provider.
    pub async fn connection_secret(
        &self,
        org: OrganizationId,
        connection: lanyard_core::ConnectionId,
    ) -> Result<Option<secrecy::SecretString>> {
        Ok(self.tenancy.sso_client_secret(org, connection).await?)
    }

    /// The organization an invitation is for; every failure is
    /// [`TokenError::InvitationGrantInvalid`] (see [`TokenError::hide_invitation`]).
    pub async fn invitation_organization(&self, invitation_token: &str) -> Result<OrganizationId> {
        let invitations = self.invitations.as_ref().ok_or(TokenError::InvitationsUnavailable)?;
        let preview = invitations.preview(invitation_token).await.map_err(|e| TokenError::from(e).hide_invitation())?;
        let org = self.active_organization_by_slug(&preview.organization_slug).await;
        Ok(org.map_err(TokenError::hide_invitation)?.id)
    }

    /// What an invitation's landing page shows: its organization, the invited email and the
    /// organization's enabled connections. Every failure of the invitation itself (unknown,
    /// expired, revoked, used, malformed, an inactive organization) is
    /// [`TokenError::InvitationGrantInvalid`], so the page cannot tell them apart.
    pub async fn invitation_landing(&self, invitation_token: &str) -> Result<Landing> {
        let invitations = self.invitations.as_ref().ok_or(TokenError::InvitationsUnavailable)?;
        let hide = |e: TokenError| match e.hide_invitation() {
            TokenError::Upstream(e) if e.is_invalid_argument() => TokenError::InvitationGrantInvalid(e.to_string()),
            other => other,
        };
        let preview = invitations.preview(invitation_token).await.map_err(|e| hide(TokenError::from(e)))?;
        let org = self.active_organization_by_slug(&preview.organization_slug).await.map_err(hide)?;
        let connections = self.connections(org.id).await?;
        Ok(Landing {
            organization_id: org.id,
            organization_name: preview.organization_display_name,
            email: preview.email,
            connections,
        })
    }

    /// Home-realm discovery: the active organization that holds `domain` verified and has an
    /// enabled connection. A pending domain, claimed by anyone, finds nothing.
    pub async fn home_organization(&self, domain: &lanyard_core::Domain) -> Result<Option<OrganizationId>> {
        let found = self.tenancy.sso_connections_for_domain(domain.as_str()).await?;
        Ok(found.into_iter().find(|c| c.enabled).map(|c| c.organization_id))
    }

    /// The organizations the person of `session` may pick without signing in again: active ones
    /// where they are an active member and whose enabled connections accept the session's
    /// issuer (the rule a switch obeys), as (id, display name), the session's own first.
    pub async fn pickable_organizations(&self, session: &Session) -> Result<Vec<(OrganizationId, String)>> {
        let mut pickable = Vec::new();
        for (org, member) in self.tenancy.user_organizations(session.user_id).await? {
            if !org.is_active() || !member.active {
                continue;
            }
            let accepts = self.connections(org.id).await?.iter().any(|c| c.accepts_issuer(&session.issuer));
            if accepts || org.id == session.active_org_id {
                pickable.push((org.id, org.display_name));
            }
        }
        pickable.sort_by_key(|(id, _)| *id != session.active_org_id);
        Ok(pickable)
    }

    /// The membership record of `user` in `org` (email and name for ID tokens and userinfo).
    pub async fn member_profile(&self, org: OrganizationId, user: UserId) -> Result<Option<lanyard_clients::Member>> {
        Ok(self.tenancy.member(org, user).await?)
    }

    /// Ends the session `id` for a reason of the system's (a code redeemed twice, a logout, a
    /// revocation at the provider endpoints); an unknown or ended session is left as it is.
    pub async fn end_session_by_id(&self, id: SessionId, reason: &str, actor: &str) -> Result<()> {
        if let Some(session) = self.store.session(id).await?.filter(|s| s.revoked_at.is_none()) {
            self.end_session(&session, reason, actor, Timestamp::now()).await?;
        }
        Ok(())
    }

    // ----- keys ----------------------------------------------------------------------------

    /// The published keys and the JWKS document.
    pub fn jwks(&self) -> (Vec<PublicJwk>, String) {
        let now = Timestamp::now();
        let ring = self.keys.ring();
        (ring.jwks(now), ring.jwks_json(now))
    }

    /// Rotates the signing keys (operators only).
    pub async fn rotate(&self, caller: &Caller, algorithm: Option<SigningAlgorithm>, force: bool) -> Result<LoadedKey> {
        caller.require_operator_key()?;
        self.keys.rotate(algorithm, &caller.actor(), force).await
    }
}
