//! What the other services call on a person's behalf (identities, seats, memberships, audit) and
//! the helpers the public operations share.

use super::*;

impl Tenancy {
    /// Reserves a seat (service keys only).
    pub async fn reserve_seat(
        &self,
        caller: &Caller,
        org: OrganizationId,
        ttl: Option<Duration>,
        id: Option<ReservationId>,
    ) -> Result<Reservation> {
        caller.require_service()?;
        let ttl = ttl.unwrap_or(DEFAULT_RESERVATION_TTL);
        if ttl < RESERVATION_TTL_BOUNDS.0 || ttl > RESERVATION_TTL_BOUNDS.1 {
            return Err(TenancyError::InvalidField {
                field: "ttl",
                message: "ttl must be between 1 minute and 30 days".into(),
            });
        }
        let change = Change::by(caller.actor());
        let expires = change.at.plus(ttl);
        let result = self.store.reserve_seat(org, id.unwrap_or_default(), expires, &change).await?;
        self.seats_changed(org).await;
        Ok(result)
    }

    /// Releases a seat (service keys only).
    pub async fn release_seat(&self, caller: &Caller, org: OrganizationId, id: ReservationId) -> Result<Reservation> {
        caller.require_service()?;
        let result = self.store.release_seat(org, id, &Change::by(caller.actor())).await?;
        self.seats_changed(org).await;
        Ok(result)
    }

    /// Claims a seat (service keys only).
    pub async fn claim_seat(
        &self,
        caller: &Caller,
        org: OrganizationId,
        id: ReservationId,
        claimant: Claimant,
        roles: Vec<RoleName>,
        invited_by: &str,
    ) -> Result<(Member, bool, bool)> {
        caller.require_service()?;
        let roles = normalize_roles(roles)?;
        if invited_by.len() > 255 {
            return Err(lanyard_core::ValueError::TooLong("invited_by", 255).into());
        }
        if let Claimant::Identity(i) = &claimant {
            check_identity_fields(&i.issuer, &i.subject, &i.display_name)?;
        }
        let result = self.store.claim_seat(org, id, &claimant, &roles, invited_by, &Change::by(caller.actor())).await?;
        self.seats_changed(org).await;
        Ok(result)
    }

    /// One connection by id, whatever its organization's state (service keys only): how the token
    /// service learns that a session's connection is gone.
    pub async fn find_sso_connection(&self, caller: &Caller, id: ConnectionId) -> Result<Option<SsoConnection>> {
        caller.require_service()?;
        self.store.sso_connection_by_id(id).await
    }

    /// The opened client secret of `org`'s connection `id` (service keys only): how the token
    /// service signs in at the organization's provider. It leaves tenancy only this way.
    pub async fn sso_client_secret(
        &self,
        caller: &Caller,
        org: OrganizationId,
        id: ConnectionId,
    ) -> Result<Option<String>> {
        caller.require_service()?;
        self.store.sso_client_secret(org, id, &self.secrets).await
    }

    /// The enabled connections of active organizations with `issuer` (service keys only): how the
    /// token service finds the organizations a first sign-in may be for.
    pub async fn find_sso_connections(&self, caller: &Caller, issuer: &str) -> Result<Vec<SsoConnection>> {
        caller.require_service()?;
        if issuer.is_empty() {
            return Err(lanyard_core::ValueError::Missing("issuer").into());
        }
        if issuer.len() > 2048 {
            return Err(lanyard_core::ValueError::TooLong("issuer", 2048).into());
        }
        self.store.find_sso_connections(issuer).await
    }

    /// The enabled connections of the active organization holding `domain` verified (service
    /// keys only): home-realm discovery for email-first sign-in. A pending domain finds nothing,
    /// so an organization that merely claims a domain never receives its people.
    pub async fn find_sso_connections_for_domain(
        &self,
        caller: &Caller,
        domain: &lanyard_core::Domain,
    ) -> Result<Vec<SsoConnection>> {
        caller.require_service()?;
        self.store.find_sso_connections_for_domain(domain.as_str()).await
    }

    /// The user an identity signs in to `org` as, under the identity rules of
    /// [`TenancyStore::resolve_identity`] (service keys only). Writes nothing on a dry run or a
    /// refusal.
    pub async fn resolve_identity(
        &self,
        caller: &Caller,
        identity: ExternalIdentity,
        org: OrganizationId,
        dry_run: bool,
    ) -> Result<ResolvedIdentity> {
        caller.require_service()?;
        check_identity_fields(&identity.issuer, &identity.subject, &identity.display_name)?;
        self.store.resolve_identity(&identity, org, dry_run, &Change::by(caller.actor())).await
    }

    /// Appends another service's audit event (service keys only). The actor is the one the event
    /// names (the service acted for it); actions are lowercase dotted words.
    pub async fn record_audit_event(
        &self,
        caller: &Caller,
        org: OrganizationId,
        actor: &str,
        action: &str,
        target: &str,
        details: &BTreeMap<String, String>,
    ) -> Result<()> {
        caller.require_service()?;
        let printable = |field: &'static str, v: &str, max: usize| -> Result<()> {
            if v.is_empty() {
                return Err(lanyard_core::ValueError::Missing(field).into());
            }
            if v.len() > max || v.chars().any(char::is_control) {
                return Err(TenancyError::InvalidField {
                    field,
                    message: format!("1 to {max} bytes of printable characters"),
                });
            }
            Ok(())
        };
        printable("actor", actor, 255)?;
        printable("target", target, 255)?;
        let action_ok = !action.is_empty()
            && action.len() <= 63
            && action.bytes().all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_');
        if !action_ok {
            return Err(TenancyError::InvalidField {
                field: "action",
                message: "1 to 63 characters of [a-z._]".into(),
            });
        }
        if details.len() > 16 {
            return Err(too_many("details", 16));
        }
        for (k, v) in details {
            printable("details", k, 63)?;
            if v.len() > 1024 {
                return Err(lanyard_core::ValueError::TooLong("details", 1024).into());
            }
        }
        self.org(org).await?;
        let details: Vec<(&str, String)> = details.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let change = Change::by(actor);
        self.store.record_audit_event(org, action, target, &details, &change).await
    }
}
