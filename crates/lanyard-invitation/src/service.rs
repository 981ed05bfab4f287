//! The invitation domain service: who may do what, the invitation lifecycle, and its
//! choreography with TenancyService (the only authority on seats).
//!
//! Ordering rules that make the cross-service steps safe:
//! - Create: the seat is reserved (with an id derived from the request id, so a retry reserves
//!   nothing twice) before the invitation and its email are written in one transaction; if that
//!   write fails, the reservation is released.
//! - Every way out of `pending` other than acceptance (revoke, expiry, resend's old link) first
//!   releases the reservation in tenancy, then records the change. Acceptance first claims the
//!   reservation, then records it. Tenancy serializes claim and release of one reservation, so
//!   exactly one of them wins, and this service follows what tenancy decided: a release that
//!   finds the seat claimed reports the invitation accepted; a claim that finds it released or
//!   expired marks the invitation revoked or expired.
//! - Crashes between the two steps heal on retry: claims are idempotent for the same user,
//!   releases are idempotent, and the invitation row is only ever moved by conditional updates.

use std::sync::Arc;
use std::time::Duration;

use lanyard_clients::{Claimant, Organization, OrganizationStatus, ReservationState, SeatReservation, TenancyClient};
use lanyard_core::crypto::SecretBox;
use lanyard_core::page::Page;
use lanyard_core::{Caller, Email, OrganizationId, Permission, ReservationId, RoleName, Timestamp};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::domain::*;
use crate::error::InvitationError;
use crate::mailer::render;
use crate::store::{Change, Ending, InvitationStore, NewEmail};

type Result<T, E = InvitationError> = std::result::Result<T, E>;

/// The most roles one invitation may grant.
pub const MAX_ROLES: usize = 20;
/// Tenancy holds a reservation for at least this long, so no invitation is shorter.
pub const MIN_TTL_FLOOR: Duration = Duration::from_secs(60);
/// Tenancy holds a reservation for at most this long, so no invitation is longer.
pub const MAX_TTL_CEILING: Duration = Duration::from_secs(30 * 24 * 3600);

/// The rules a deployment chooses.
#[derive(Clone, Debug)]
pub struct Policy {
    /// The link, with `{token}` where the raw token goes.
    pub link_template: String,
    /// The TTL when a request names none.
    pub default_ttl: Duration,
    /// The shortest TTL a request may ask for.
    pub min_ttl: Duration,
    /// The longest TTL a request may ask for.
    pub max_ttl: Duration,
    /// Who the email and the preview say invited the person when an operator or a service did.
    pub operator_inviter_name: String,
}

impl Policy {
    /// Checks the policy's own consistency.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.link_template.matches("{token}").count() != 1 {
            anyhow::bail!("the invitation link template must contain {{token}} exactly once");
        }
        if !(self.link_template.starts_with("https://") || self.link_template.starts_with("http://")) {
            anyhow::bail!("the invitation link template must be an http(s) URL");
        }
        if self.min_ttl < MIN_TTL_FLOOR || self.max_ttl > MAX_TTL_CEILING || self.min_ttl > self.max_ttl {
            anyhow::bail!("invitation TTL bounds must satisfy 1 minute <= min <= max <= 30 days");
        }
        if self.default_ttl < self.min_ttl || self.default_ttl > self.max_ttl {
            anyhow::bail!("the default invitation TTL must lie within the TTL bounds");
        }
        Ok(())
    }

    fn link(&self, token: &InvitationToken) -> String {
        self.link_template.replace("{token}", token.expose())
    }
}

/// What creating an invitation needs, parsed.
#[derive(Clone, Debug)]
pub struct NewInvitation {
    pub organization_id: OrganizationId,
    pub email: Email,
    pub roles: Vec<RoleName>,
    pub ttl: Option<Duration>,
    pub send_email: bool,
    pub waive_domain_check: bool,
    /// The request id of an idempotent retry, if any.
    pub request_id: Option<String>,
}

/// The invitation service.
#[derive(Clone)]
pub struct Invitations {
    store: InvitationStore,
    tenancy: TenancyClient,
    secrets: SecretBox,
    policy: Arc<Policy>,
    clock: Arc<dyn Clock>,
    mail_wake: Arc<Notify>,
}

impl std::fmt::Debug for Invitations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invitations").field("policy", &self.policy).finish_non_exhaustive()
    }
}

fn change(caller: &Caller, at: Timestamp) -> Change {
    Change { actor: caller.actor(), at }
}

impl Invitations {
    /// Builds the service.
    pub fn new(
        store: InvitationStore,
        tenancy: TenancyClient,
        secrets: SecretBox,
        policy: Policy,
        clock: Arc<dyn Clock>,
        mail_wake: Arc<Notify>,
    ) -> Self {
        Self { store, tenancy, secrets, policy: Arc::new(policy), clock, mail_wake }
    }

    /// The store (idempotency records, health).
    pub fn store(&self) -> &InvitationStore {
        &self.store
    }

    /// The current time, by the service's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn resolve_ttl(&self, ttl: Option<Duration>) -> Result<Duration> {
        let ttl = ttl.unwrap_or(self.policy.default_ttl);
        if ttl < self.policy.min_ttl || ttl > self.policy.max_ttl {
            return Err(InvitationError::InvalidField {
                field: "ttl",
                message: format!(
                    "ttl must be between {}s and {}s",
                    self.policy.min_ttl.as_secs(),
                    self.policy.max_ttl.as_secs()
                ),
            });
        }
        Ok(ttl)
    }

    fn require_write(caller: &Caller, org: OrganizationId) -> Result<()> {
        caller
            .require(org, "invitations:write")
            .or_else(|_| caller.require(org, "members:invite"))
            .map_err(InvitationError::from)
    }

    fn seal(&self, outbox_id: &str, invitation: &Invitation, link: &str) -> Result<NewEmail> {
        let content = render(invitation, link);
        let json = serde_json::to_string(&content).map_err(InvitationError::failed("an email does not serialize"))?;
        Ok(NewEmail {
            id: outbox_id.to_owned(),
            recipient: invitation.email.clone(),
            sealed_message: self.secrets.seal(&json, outbox_id),
        })
    }

    async fn live_org(&self, org: OrganizationId) -> Result<Organization> {
        let o = self.tenancy.organization(org).await?;
        if !o.is_active() {
            return Err(InvitationError::OrganizationInactive);
        }
        Ok(o)
    }

    async fn inviter_name(&self, caller: &Caller, org: OrganizationId) -> Result<String> {
        match caller {
            Caller::Member(p) => {
                let member = self.tenancy.member(org, p.user_id).await?;
                Ok(member
                    .map(|m| if m.display_name.trim().is_empty() { m.email } else { m.display_name })
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| self.policy.operator_inviter_name.clone()))
            }
            _ => Ok(self.policy.operator_inviter_name.clone()),
        }
    }

    async fn check_roles(&self, caller: &Caller, org: OrganizationId, roles: Vec<RoleName>) -> Result<Vec<RoleName>> {
        let mut roles = if roles.is_empty() { vec![RoleName::member()] } else { roles };
        roles.sort();
        roles.dedup();
        if roles.len() > MAX_ROLES {
            return Err(InvitationError::InvalidField {
                field: "roles",
                message: format!("at most {MAX_ROLES} roles"),
            });
        }
        if roles.contains(&RoleName::owner()) && !caller.is_operator() {
            return Err(InvitationError::OwnerRoleOperatorOnly);
        }
        let built_in = |r: &RoleName| matches!(r.as_str(), "owner" | "admin" | "member");
        let member = matches!(caller, Caller::Member(_));
        if member || !roles.iter().all(built_in) {
            let known = self.tenancy.roles(org).await?;
            for role in &roles {
                let Some(found) = known.iter().find(|k| k.name == role.as_str()) else {
                    return Err(InvitationError::InvalidField {
                        field: "roles",
                        message: format!("role {role:?} does not exist in the organization"),
                    });
                };
                // A member invites only into roles whose permissions it holds itself (the same
                // rule tenancy applies to AddMember and UpdateMemberRoles).
                if let Caller::Member(p) = caller {
                    let held = |w: &str| Permission::parse(w).is_ok_and(|w| p.permissions.iter().any(|g| g.grants(&w)));
                    if let Some(missing) = found.permissions.iter().find(|w| !held(w)) {
                        return Err(InvitationError::PermissionNotHeld(missing.clone()));
                    }
                }
            }
        }
        Ok(roles)
    }

    /// A reservation id that a retry of the same request reproduces, so the retry finds the
    /// seat it already holds instead of taking a second one.
    fn reservation_id(caller: &Caller, method: &str, request_id: Option<&str>) -> ReservationId {
        match request_id {
            Some(rid) => {
                let digest = Sha256::digest(format!("lanyard-invitation|{}|{method}|{rid}", caller.actor()).as_bytes());
                let mut bytes = [0u8; 16];
                bytes.copy_from_slice(&digest[..16]);
                let uuid = uuid::Builder::from_random_bytes(bytes).into_uuid();
                ReservationId::parse(&uuid.hyphenated().to_string()).unwrap_or_default()
            }
            None => ReservationId::new(),
        }
    }

    /// Reserves a seat under `preferred` (derived from the request id, so a retry finds the seat
    /// its first attempt took). When that id was already used up by an attempt that failed (its
    /// reservation released or expired), a fresh id takes a new seat.
    async fn reserve(
        &self,
        org: OrganizationId,
        preferred: ReservationId,
        ttl: Duration,
    ) -> Result<(ReservationId, SeatReservation)> {
        let r = self.tenancy.reserve_seat(org, preferred, ttl).await?;
        if r.state == ReservationState::Held {
            return Ok((preferred, r));
        }
        let fresh = ReservationId::new();
        Ok((fresh, self.tenancy.reserve_seat(org, fresh, ttl).await?))
    }

    /// Creates an invitation: checks, reserves a seat, records the invitation with its email.
    /// Returns the link when no email is sent.
    pub async fn create(&self, caller: &Caller, new: NewInvitation) -> Result<(Invitation, Option<String>)> {
        let org_id = new.organization_id;
        Self::require_write(caller, org_id)?;
        if !new.send_email || new.waive_domain_check {
            caller.require_operator()?;
        }
        let ttl = self.resolve_ttl(new.ttl)?;
        let org = self.live_org(org_id).await?;
        let roles = self.check_roles(caller, org_id, new.roles).await?;
        if roles.contains(&RoleName::owner()) && org.owner_user_id.is_some() {
            return Err(InvitationError::OwnerExists);
        }
        if !new.waive_domain_check && !org.allowed_domains.iter().any(|d| d == new.email.domain().as_str()) {
            return Err(InvitationError::EmailDomainNotAllowed);
        }
        let now = self.now();
        if let Some(existing) = self.store.pending_for(org_id, &new.email, now).await? {
            return Err(InvitationError::InvitationPending { existing: existing.to_string() });
        }
        if self.tenancy.member_by_email(org_id, &new.email).await?.is_some_and(|m| m.active) {
            return Err(InvitationError::MemberExists);
        }
        let inviter_display_name = self.inviter_name(caller, org_id).await?;
        let preferred = Self::reservation_id(caller, "CreateInvitation", new.request_id.as_deref());
        let (reservation_id, reservation) = self.reserve(org_id, preferred, ttl).await?;
        // The invitation expires exactly when tenancy frees its seat.
        let expires_at = reservation.expires_at.unwrap_or_else(|| now.plus(ttl));
        let token = InvitationToken::generate();
        let link = self.policy.link(&token);
        let invitation = Invitation {
            id: InvitationId::new(),
            organization_id: org_id,
            email: new.email,
            roles,
            status: InvitationStatus::Pending,
            inviter: caller.actor(),
            inviter_display_name,
            organization_slug: org.slug,
            organization_display_name: org.display_name,
            reservation_id,
            created_at: now,
            expires_at,
            accepted_at: None,
            accepted_user_id: None,
            revoked_at: None,
            delivery: if new.send_email { Delivery::Queued } else { Delivery::NotSent },
            delivery_error: None,
        };
        let email =
            if new.send_email { Some(self.seal(&uuid::Uuid::now_v7().to_string(), &invitation, &link)?) } else { None };
        if let Err(e) = self.store.create(&invitation, &token.hash(), email.as_ref(), &change(caller, now)).await {
            if let Err(release) = self.tenancy.release_seat(org_id, reservation_id).await {
                tracing::warn!(error = %release, %reservation_id, "could not release the seat of a failed invitation; it frees itself at expiry");
            }
            return Err(e);
        }
        if email.is_some() {
            self.mail_wake.notify_one();
        }
        Ok((invitation, (!new.send_email).then_some(link)))
    }

    /// One invitation, as of now.
    pub async fn get(&self, caller: &Caller, org: OrganizationId, id: InvitationId) -> Result<Invitation> {
        caller.require(org, "invitations:read")?;
        let mut inv = self.store.get(org, id).await?.ok_or(InvitationError::NotFound)?;
        inv.status = inv.status_at(self.now());
        Ok(inv)
    }

    /// A page of invitations, newest first.
    pub async fn list(
        &self,
        caller: &Caller,
        org: OrganizationId,
        status: Option<InvitationStatus>,
        page: &Page,
    ) -> Result<(Vec<Invitation>, String)> {
        caller.require(org, "invitations:read")?;
        let now = self.now();
        let (mut rows, next) = self.store.list(org, status, page, now).await?;
        for inv in &mut rows {
            inv.status = inv.status_at(now);
        }
        Ok((rows, next))
    }

    /// The invitation's audit events.
    pub async fn events(
        &self,
        caller: &Caller,
        org: OrganizationId,
        invitation: Option<InvitationId>,
        page: &Page,
    ) -> Result<(Vec<InvitationEvent>, String)> {
        caller.require(org, "audit:read").or_else(|_| caller.require(org, "invitations:read"))?;
        self.store.list_events(org, invitation, page).await
    }

    /// The status error of an invitation that is not pending at `now`.
    fn not_pending(inv: &Invitation, now: Timestamp) -> Option<InvitationError> {
        match inv.status_at(now) {
            InvitationStatus::Pending => None,
            InvitationStatus::Accepted => Some(InvitationError::AlreadyAccepted),
            InvitationStatus::Revoked => Some(InvitationError::Revoked),
            InvitationStatus::Expired => Some(InvitationError::Expired),
        }
    }

    /// Releases an invitation's seat. `Ok(false)` when tenancy says it was claimed: an
    /// acceptance won the race.
    async fn release(&self, inv: &Invitation) -> Result<bool> {
        match self.tenancy.release_seat(inv.organization_id, inv.reservation_id).await {
            Ok(()) => Ok(true),
            Err(e) if e.is("RESERVATION_CLAIMED") => Ok(false),
            // A deleted organization's reservations are already released.
            Err(e) if e.is("RESERVATION_NOT_FOUND") => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// Revokes a pending invitation and frees its seat. Revoking twice returns the invitation.
    pub async fn revoke(&self, caller: &Caller, org: OrganizationId, id: InvitationId) -> Result<Invitation> {
        Self::require_write(caller, org)?;
        let inv = self.store.get(org, id).await?.ok_or(InvitationError::NotFound)?;
        let now = self.now();
        match inv.status_at(now) {
            InvitationStatus::Revoked => return Ok(inv),
            InvitationStatus::Pending => {}
            _ => return Err(Self::not_pending(&inv, now).unwrap_or(InvitationError::NotFound)),
        }
        if !self.release(&inv).await? {
            return Err(InvitationError::AlreadyAccepted);
        }
        self.store.end(org, id, Ending::Revoked, &change(caller, now), &[]).await?;
        let inv = self.store.get(org, id).await?.ok_or(InvitationError::NotFound)?;
        match inv.status {
            InvitationStatus::Revoked => Ok(inv),
            _ => Err(Self::not_pending(&inv, now).unwrap_or(InvitationError::NotFound)),
        }
    }

    /// Issues a new token and expiry for a pending invitation (the old link dies) and emails it or
    /// returns it.
    pub async fn resend(
        &self,
        caller: &Caller,
        org: OrganizationId,
        id: InvitationId,
        send_email: bool,
        ttl: Option<Duration>,
        request_id: Option<&str>,
    ) -> Result<(Invitation, Option<String>)> {
        Self::require_write(caller, org)?;
        if !send_email {
            caller.require_operator()?;
        }
        let ttl = self.resolve_ttl(ttl)?;
        let inv = self.store.get(org, id).await?.ok_or(InvitationError::NotFound)?;
        let now = self.now();
        if let Some(e) = Self::not_pending(&inv, now) {
            return Err(e);
        }
        // Tenancy cannot extend a reservation, so the new expiry needs a new one: take it first
        // when a seat is free; in a full organization, give the old one back first.
        let preferred = Self::reservation_id(caller, &format!("ResendInvitation|{id}"), request_id);
        let (new_id, reservation) = match self.reserve(org, preferred, ttl).await {
            Ok((new_id, r)) => {
                if !self.release(&inv).await? {
                    let _ = self.tenancy.release_seat(org, new_id).await;
                    return Err(InvitationError::AlreadyAccepted);
                }
                (new_id, r)
            }
            Err(e) if e.upstream_reason().as_deref() == Some("SEATS_EXHAUSTED") => {
                if !self.release(&inv).await? {
                    return Err(InvitationError::AlreadyAccepted);
                }
                match self.reserve(org, preferred, ttl).await {
                    Ok(r) => r,
                    Err(e) => {
                        // Someone took the seat in between: the invitation cannot stay pending
                        // without one.
                        let details = [("reason", "seat_lost_on_resend".to_owned())];
                        self.store.end(org, id, Ending::Revoked, &change(caller, now), &details).await?;
                        return Err(e);
                    }
                }
            }
            Err(e) => return Err(e),
        };
        let expires_at = reservation.expires_at.unwrap_or_else(|| now.plus(ttl));
        let token = InvitationToken::generate();
        let link = self.policy.link(&token);
        let mut updated = inv.clone();
        updated.reservation_id = new_id;
        updated.expires_at = expires_at;
        updated.delivery = if send_email { Delivery::Queued } else { Delivery::NotSent };
        updated.delivery_error = None;
        let email =
            if send_email { Some(self.seal(&uuid::Uuid::now_v7().to_string(), &updated, &link)?) } else { None };
        let replaced = self
            .store
            .replace_token(&inv, None, &token.hash(), new_id, expires_at, email.as_ref(), &change(caller, now))
            .await?;
        if !replaced {
            let _ = self.tenancy.release_seat(org, new_id).await;
            let current = self.store.get(org, id).await?.ok_or(InvitationError::NotFound)?;
            return Err(Self::not_pending(&current, now).unwrap_or(InvitationError::Superseded));
        }
        if email.is_some() {
            self.mail_wake.notify_one();
        }
        Ok((updated, (!send_email).then_some(link)))
    }

    /// What a landing page shows for a valid link. Unknown, expired, revoked, used and replaced
    /// tokens all answer [`InvitationError::NotFound`], so this is no oracle.
    pub async fn preview(&self, token: &InvitationToken) -> Result<Preview> {
        let inv = self.store.by_token_hash(&token.hash()).await?.ok_or(InvitationError::NotFound)?;
        if inv.status_at(self.now()) != InvitationStatus::Pending {
            return Err(InvitationError::NotFound);
        }
        Ok(Preview {
            organization_display_name: inv.organization_display_name,
            organization_slug: inv.organization_slug,
            email: inv.email,
            inviter_display_name: inv.inviter_display_name,
            expires_at: inv.expires_at,
        })
    }

    /// Accepts an invitation for a verified identity (service keys only): the seat becomes the
    /// identity's membership with the invited roles, and the invitation is accepted, once.
    pub async fn accept(
        &self,
        caller: &Caller,
        token: &InvitationToken,
        identity: &VerifiedIdentity,
    ) -> Result<(Invitation, MembershipSummary)> {
        caller.require_service()?;
        let hash = token.hash();
        let Some(inv) = self.store.by_token_hash(&hash).await? else {
            return Err(if self.store.is_superseded(&hash).await? {
                InvitationError::Superseded
            } else {
                InvitationError::NotFound
            });
        };
        let now = self.now();
        let actor = change(caller, now);
        match inv.status_at(now) {
            InvitationStatus::Pending => {}
            InvitationStatus::Expired if inv.status == InvitationStatus::Pending => {
                // Record what the clock already decided; the seat is free (or freed now).
                if self.release(&inv).await? {
                    self.store.end(inv.organization_id, inv.id, Ending::Expired, &actor, &[]).await?;
                }
                return Err(InvitationError::Expired);
            }
            _ => return Err(Self::not_pending(&inv, now).unwrap_or(InvitationError::NotFound)),
        }
        if !identity.email_verified {
            return Err(InvitationError::EmailNotVerified);
        }
        if identity.email != inv.email {
            return Err(InvitationError::EmailMismatch);
        }
        let org = inv.organization_id;
        // Without a user id, tenancy finds, links or creates the user in the same transaction as
        // the claim (by the invited email, checked above).
        let claiming = identity.for_claim();
        let claimant = match identity.user_id {
            Some(user) => Claimant::User(user),
            None => Claimant::Identity(&claiming),
        };
        let member = match self.tenancy.claim_seat(org, inv.reservation_id, claimant, &inv.roles, &inv.inviter).await {
            Ok(m) => m,
            Err(e) => {
                let e = InvitationError::from(e);
                return Err(match e.upstream_reason().as_deref() {
                    Some("RESERVATION_CLAIMED") => InvitationError::AlreadyAccepted,
                    Some("RESERVATION_RELEASED") => {
                        self.store
                            .end(org, inv.id, Ending::Revoked, &actor, &[("reason", "seat_released".into())])
                            .await?;
                        InvitationError::Revoked
                    }
                    Some("RESERVATION_EXPIRED") => {
                        self.store.end(org, inv.id, Ending::Expired, &actor, &[]).await?;
                        InvitationError::Expired
                    }
                    Some("MEMBER_EXISTS") => {
                        // The person became a member some other way: the invitation is moot, and
                        // its seat goes back.
                        if self.release(&inv).await? {
                            let details = [("reason", "already_member".to_owned())];
                            self.store.end(org, inv.id, Ending::Revoked, &actor, &details).await?;
                        }
                        InvitationError::MemberExists
                    }
                    _ => e,
                });
            }
        };
        let user_id = member.user_id;
        let details = [
            ("user_id", user_id.to_string()),
            ("issuer", identity.issuer.clone()),
            ("subject", identity.subject.clone()),
        ];
        if !self.store.mark_accepted(org, inv.id, user_id, &actor, &details).await? {
            // Another request for the same acceptance finished first.
            return Err(InvitationError::AlreadyAccepted);
        }
        let accepted = self.store.get(org, inv.id).await?.ok_or(InvitationError::NotFound)?;
        let summary = MembershipSummary {
            organization_id: org,
            organization_slug: accepted.organization_slug.clone(),
            user_id,
            roles: member.roles,
            version: member.version,
        };
        Ok((accepted, summary))
    }

    // ----- background ----------------------------------------------------------------------

    /// Records the expiry of up to `limit` pending invitations past their expiry time (their
    /// seats are already free in tenancy's count; releasing makes it explicit). Returns how many
    /// were marked and how many were looked at.
    pub async fn expire_due(&self, limit: i64) -> Result<(usize, usize)> {
        let now = self.now();
        let actor = Change { actor: SWEEPER.into(), at: now };
        let mut marked = 0;
        let due = self.store.pending_past_expiry(now, limit).await?;
        let seen = due.len();
        for inv in due {
            // A seat found claimed means an acceptance is completing: leave it to finish.
            if self.release(&inv).await?
                && self.store.end(inv.organization_id, inv.id, Ending::Expired, &actor, &[]).await?
            {
                marked += 1;
            }
        }
        Ok((marked, seen))
    }

    /// Revokes the pending invitations of deleted organizations, checking up to `limit`
    /// organizations after the cursor `after`. Returns how many were revoked and the next cursor
    /// (empty when the scan wrapped around).
    pub async fn revoke_for_deleted_orgs(&self, after: &str, limit: i64) -> Result<(usize, String)> {
        let orgs = self.store.orgs_with_pending(after, limit).await?;
        let next = if (orgs.len() as i64) < limit {
            String::new()
        } else {
            orgs.last().map(|o| o.to_string()).unwrap_or_default()
        };
        let mut revoked = 0;
        for org in orgs {
            let deleted = match self.tenancy.organization(org).await {
                Ok(o) => o.status == OrganizationStatus::Deleted,
                Err(e) if e.is("ORGANIZATION_NOT_FOUND") => true,
                Err(e) => return Err(e.into()),
            };
            if !deleted {
                continue;
            }
            let actor = Change { actor: SWEEPER.into(), at: self.now() };
            for inv in self.store.pending_of(org).await? {
                let details = [("reason", "organization_deleted".to_owned())];
                if self.release(&inv).await? && self.store.end(org, inv.id, Ending::Revoked, &actor, &details).await? {
                    revoked += 1;
                }
            }
        }
        Ok((revoked, next))
    }
}

/// The actor of the sweeper's changes.
pub const SWEEPER: &str = "system:sweeper";

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            link_template: "https://app.example.com/invite?token={token}".into(),
            default_ttl: Duration::from_secs(24 * 3600),
            min_ttl: Duration::from_secs(300),
            max_ttl: Duration::from_secs(7 * 24 * 3600),
            operator_inviter_name: "Ops".into(),
        }
    }

    #[test]
    fn policies_are_checked() {
        assert!(policy().validate().is_ok());
        let token = InvitationToken::generate();
        assert_eq!(policy().link(&token), format!("https://app.example.com/invite?token={}", token.expose()));
        let bad = [
            Policy { link_template: "https://app.example.com/invite".into(), ..policy() },
            Policy { link_template: "https://x/{token}/{token}".into(), ..policy() },
            Policy { link_template: "javascript:{token}".into(), ..policy() },
            Policy { min_ttl: Duration::from_secs(10), ..policy() },
            Policy { max_ttl: Duration::from_secs(31 * 24 * 3600), ..policy() },
            Policy { default_ttl: Duration::from_secs(8 * 24 * 3600), ..policy() },
            Policy { min_ttl: Duration::from_secs(3600), max_ttl: Duration::from_secs(600), ..policy() },
        ];
        for p in bad {
            assert!(p.validate().is_err(), "{p:?} should be refused");
        }
    }

    #[test]
    fn retries_derive_the_same_reservation() {
        let op = Caller::Operator { key_id: "k".into() };
        let other = Caller::Operator { key_id: "j".into() };
        let a = Invitations::reservation_id(&op, "CreateInvitation", Some("r1"));
        assert_eq!(a, Invitations::reservation_id(&op, "CreateInvitation", Some("r1")));
        assert_ne!(a, Invitations::reservation_id(&op, "CreateInvitation", Some("r2")));
        assert_ne!(a, Invitations::reservation_id(&other, "CreateInvitation", Some("r1")));
        assert_ne!(
            Invitations::reservation_id(&op, "CreateInvitation", None),
            Invitations::reservation_id(&op, "CreateInvitation", None)
        );
    }
}
