//! The tenancy domain service: who may do what, the rules that need no database, and the calls
//! into the store. It speaks domain types only; the gRPC adapter converts at the edge.

use std::collections::BTreeMap;
use std::time::Duration;

use lanyard_authz::facts::value;
use lanyard_authz::{FactKey, Facts};
use lanyard_core::cache::{Cache, Versioned};
use lanyard_core::crypto::SecretBox;
use lanyard_core::outbound::{self, AddressPolicy, IssuerAllowlist, OutboundError};
use lanyard_core::page::Page;
use lanyard_core::{
    Caller, ConnectionId, DisplayName, Domain, Email, OrgSlug, OrganizationId, Permission, ReservationId, RoleName,
    Timestamp, UserId,
};

use crate::dns::{Check, DnsError, DomainVerifier};
use crate::domain::*;
use crate::error::TenancyError;
use crate::store::{Change, SeatSnapshot, TenancyStore};

mod internal;
mod rules;

use rules::*;
pub use rules::{owner_only, DEFAULT_MAX_SSO_CONNECTIONS};

/// The cache key of an organization's seat usage.
pub fn seat_key(org: OrganizationId) -> String {
    format!("tenancy:seats:{org}")
}

type Result<T, E = TenancyError> = std::result::Result<T, E>;

/// The most allowed domains one organization may have.
pub const MAX_DOMAINS: usize = 50;
/// The most metadata entries one organization may have.
pub const MAX_METADATA_ENTRIES: usize = 64;
/// The longest metadata key.
pub const MAX_METADATA_KEY_LEN: usize = 63;
/// The longest metadata value.
pub const MAX_METADATA_VALUE_LEN: usize = 1024;
/// The largest seat limit.
pub const MAX_SEAT_LIMIT: u32 = 1_000_000;
/// The most roles one membership may hold, and permissions one role may grant.
pub const MAX_ROLES_PER_MEMBER: usize = 20;
/// The most permissions one custom role may grant.
pub const MAX_PERMISSIONS_PER_ROLE: usize = 100;
/// The longest role description.
pub const MAX_ROLE_DESCRIPTION_LEN: usize = 500;
/// The shortest and longest seat reservation.
pub const RESERVATION_TTL_BOUNDS: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(30 * 24 * 3600));
/// A reservation's lifetime when the request names none.
pub const DEFAULT_RESERVATION_TTL: Duration = Duration::from_secs(24 * 3600);

/// The most organizations whose seats are exported as metrics by one process; beyond it, new
/// organizations are left out (and counted), so the metric's cardinality stays bounded.
pub const MAX_SEAT_METRIC_ORGS: usize = 1000;

/// Exports an organization's seats as `lanyard_org_seats{organization_id, state}` gauges.
fn export_seats(usage: &SeatUsage) {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static EXPORTED: OnceLock<Mutex<HashSet<OrganizationId>>> = OnceLock::new();
    let mut exported = EXPORTED.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    if !exported.contains(&usage.organization_id) {
        if exported.len() >= MAX_SEAT_METRIC_ORGS {
            metrics::counter!("lanyard_org_seats_unexported_total").increment(1);
            return;
        }
        exported.insert(usage.organization_id);
    }
    let org = usage.organization_id.to_string();
    for (state, value) in [("limit", usage.seat_limit), ("active", usage.active), ("reserved", usage.reserved)] {
        metrics::gauge!("lanyard_org_seats", "organization_id" => org.clone(), "state" => state).set(f64::from(value));
    }
}

/// The longest a cached seat usage is trusted, even with no reservation expiring sooner.
pub const SEAT_CACHE_TTL: Duration = Duration::from_secs(60);

/// TenancyService's domain logic.
#[derive(Clone, Debug)]
pub struct Tenancy {
    store: TenancyStore,
    secrets: SecretBox,
    dns: DomainVerifier,
    allow_http_issuers: bool,
    issuer_allowlist: IssuerAllowlist,
    max_sso_connections: u32,
    /// Revocation facts; their shared cache also holds the seat-usage cache.
    facts: Facts,
}

impl Tenancy {
    /// Builds the service over its store; `secrets` seals SSO client secrets, `dns` checks
    /// domain challenges, and membership and organization changes are published to `facts`
    /// (shared with the token service's authorizer in the same process, and through Redis with
    /// every other process). Seat usage is cached in the facts' shared cache. Nothing is defaulted:
    /// a caller that wants the in-process cache says so by building `facts` over it.
    pub fn new(store: TenancyStore, secrets: SecretBox, dns: DomainVerifier, facts: Facts) -> Self {
        Self {
            store,
            secrets,
            dns,
            allow_http_issuers: false,
            issuer_allowlist: IssuerAllowlist::default(),
            max_sso_connections: DEFAULT_MAX_SSO_CONNECTIONS,
            facts,
        }
    }

    /// Records changed revocation facts before the change returns, so no authorization anywhere
    /// allows the old state afterwards (see lanyard_authz::facts). The database is the authority:
    /// when the shared cache cannot take a fact, processes that cannot reach it ask tenancy.
    async fn publish(&self, facts: impl IntoIterator<Item = (FactKey, Versioned)>) {
        for (key, fact) in facts {
            if let Err(e) = self.facts.write(&key, &fact).await {
                tracing::warn!(error = %e, key = %key.cache_key(), "publishing a revocation fact to the shared cache");
            }
        }
    }

    async fn membership_changed(&self, member: &Member) {
        let state = if member.status == MemberStatus::Active { value::MEMBER_ACTIVE } else { value::MEMBER_REMOVED };
        let fact = Versioned { version: member.version, value: state.into() };
        self.publish([(FactKey::Membership(member.organization_id, member.user_id), fact)]).await;
    }

    async fn organization_changed(&self, org: &Organization) {
        let state = match org.status {
            OrgStatus::Active => value::ORG_ACTIVE,
            OrgStatus::Suspended => value::ORG_SUSPENDED,
            OrgStatus::Deleted => value::ORG_DELETED,
        };
        let fact = Versioned { version: org.updated_at.0, value: state.into() };
        self.publish([(FactKey::Organization(org.id), fact)]).await;
    }

    /// The cache (for readiness checks).
    pub fn cache(&self) -> &Cache {
        self.facts.cache()
    }

    /// Accepts `http://` issuers on loopback (local development and tests only).
    pub fn allow_http_issuers(mut self, allow: bool) -> Self {
        self.allow_http_issuers = allow;
        self
    }

    /// Accepts only these issuers for new SSO connections (empty: any issuer).
    pub fn issuer_allowlist(mut self, allowlist: IssuerAllowlist) -> Self {
        self.issuer_allowlist = allowlist;
        self
    }

    /// The most SSO connections one organization may have.
    pub fn max_sso_connections(mut self, max: u32) -> Self {
        self.max_sso_connections = max;
        self
    }

    /// The store (for health checks and idempotency records).
    pub fn store(&self) -> &TenancyStore {
        &self.store
    }

    /// Writes the seat usage of `org` through to the cache and the metrics after a change. Best
    /// effort: the database stays the authority, and a reader that misses the cache reads it.
    async fn seats_changed(&self, org: OrganizationId) {
        match self.store.seat_snapshot(org).await {
            Ok(snapshot) => {
                export_seats(&snapshot.usage);
                self.cache_seats(&snapshot).await;
            }
            Err(e) => tracing::warn!(error = %e, "reading seat usage after a change"),
        }
    }

    async fn cache_seats(&self, snapshot: &SeatSnapshot) {
        // A cached usage must not outlive the next reservation expiry: that changes it silently.
        let mut ttl = SEAT_CACHE_TTL;
        if let Some(next) = snapshot.next_expiry {
            let until = u64::try_from(next.0 - snapshot.read_at.0).unwrap_or(0);
            ttl = ttl.min(Duration::from_micros(until));
        }
        let u = snapshot.usage;
        let value =
            Versioned { version: snapshot.epoch, value: format!("{}:{}:{}", u.seat_limit, u.active, u.reserved) };
        if let Err(e) = self.facts.cache().set_if_newer(&seat_key(u.organization_id), &value, ttl).await {
            metrics::counter!("lanyard_cache_errors_total", "service" => "tenancy").increment(1);
            tracing::warn!(error = %e, "writing seat usage to the cache");
        }
    }

    /// Seat usage from the cache, or from the database (refilling the cache) when it misses or
    /// fails.
    async fn cached_seat_usage(&self, org: OrganizationId) -> Result<SeatUsage> {
        match self.facts.cache().get(&seat_key(org)).await {
            Ok(Some(v)) => {
                let parts: Vec<u32> = v.value.split(':').filter_map(|p| p.parse().ok()).collect();
                if let [seat_limit, active, reserved] = parts[..] {
                    metrics::counter!("lanyard_cache_requests_total", "cache" => "seats", "result" => "hit")
                        .increment(1);
                    return Ok(SeatUsage { organization_id: org, seat_limit, active, reserved });
                }
            }
            Ok(None) => {}
            Err(e) => {
                metrics::counter!("lanyard_cache_errors_total", "service" => "tenancy").increment(1);
                tracing::warn!(error = %e, "reading seat usage from the cache; using the database");
            }
        }
        metrics::counter!("lanyard_cache_requests_total", "cache" => "seats", "result" => "miss").increment(1);
        let snapshot = self.store.seat_snapshot(org).await?;
        self.cache_seats(&snapshot).await;
        Ok(snapshot.usage)
    }

    async fn org(&self, id: OrganizationId) -> Result<Organization> {
        self.store.get_organization(id).await?.ok_or(TenancyError::OrganizationNotFound)
    }

    /// Requires `permission` in `org`. A member of another organization learns nothing about
    /// whether `org` exists: it gets the same answer either way.
    fn require(&self, caller: &Caller, org: OrganizationId, permission: &str) -> Result<()> {
        caller.require(org, permission).map_err(TenancyError::from)
    }

    // ----- organizations -------------------------------------------------------------------

    /// Creates an organization (operator only).
    pub async fn create_organization(
        &self,
        caller: &Caller,
        mut new: NewOrganization,
        allow_public_domains: bool,
    ) -> Result<Organization> {
        caller.require_operator_key()?;
        check_seat_limit(new.seat_limit)?;
        check_metadata(&new.metadata)?;
        new.allowed_domains.sort();
        new.allowed_domains.dedup();
        if new.allowed_domains.len() > MAX_DOMAINS {
            return Err(too_many("allowed_domains", MAX_DOMAINS));
        }
        if !allow_public_domains && new.allowed_domains.iter().any(Domain::is_public_webmail) {
            return Err(TenancyError::PublicDomainNotAllowed);
        }
        self.store.create_organization(&new, &Change::by(caller.actor())).await
    }

    /// One organization, by id.
    pub async fn get_organization(&self, caller: &Caller, id: OrganizationId) -> Result<Organization> {
        self.require(caller, id, "organization:read")?;
        self.org(id).await
    }

    /// One organization, by slug.
    pub async fn get_organization_by_slug(&self, caller: &Caller, slug: &OrgSlug) -> Result<Organization> {
        let org = self.store.get_organization_by_slug(slug).await?;
        match org {
            Some(o) => {
                self.require(caller, o.id, "organization:read")?;
                Ok(o)
            }
            // Same answer as for an organization the caller may not see.
            None if caller.is_operator() => Err(TenancyError::OrganizationNotFound),
            None => Err(TenancyError::Denied(lanyard_core::caller::Denied::WrongOrganization)),
        }
    }

    /// A page of organizations (operator only).
    pub async fn list_organizations(
        &self,
        caller: &Caller,
        page: &Page,
        show_deleted: bool,
    ) -> Result<(Vec<Organization>, String)> {
        caller.require_operator()?;
        self.store.list_organizations(page, show_deleted).await
    }

    /// Updates an organization. The seat limit and the status are the operator's (they are the
    /// contract); the name and metadata need `organization:write`.
    pub async fn update_organization(
        &self,
        caller: &Caller,
        id: OrganizationId,
        patch: OrganizationPatch,
    ) -> Result<Organization> {
        if patch.seat_limit.is_some() || patch.status.is_some() {
            caller.require_operator_key()?;
        } else {
            self.require(caller, id, "organization:write")?;
        }
        if let Some(limit) = patch.seat_limit {
            check_seat_limit(limit)?;
        }
        if let Some(m) = &patch.metadata {
            check_metadata(m)?;
        }
        if patch.status == Some(OrgStatus::Deleted) {
            return Err(TenancyError::InvalidField {
                field: "organization.status",
                message: "use DeleteOrganization to delete".into(),
            });
        }
        let result = self.store.update_organization(id, &patch, &Change::by(caller.actor())).await?;
        if patch.status.is_some() {
            self.organization_changed(&result).await;
        }
        self.seats_changed(id).await;
        Ok(result)
    }

    /// Soft-deletes an organization (operator only).
    pub async fn delete_organization(&self, caller: &Caller, id: OrganizationId) -> Result<Organization> {
        caller.require_operator_key()?;
        let result = self.store.delete_organization(id, &Change::by(caller.actor())).await?;
        self.organization_changed(&result).await;
        self.seats_changed(id).await;
        Ok(result)
    }

    /// Adds a domain, pending until verified; public webmail domains only when an operator allows
    /// them. A domain verified for another organization is refused, except to an operator (who
    /// may let two organizations invite in one domain; identity stays with the verified one).
    pub async fn add_domain(
        &self,
        caller: &Caller,
        id: OrganizationId,
        domain: Domain,
        allow_public: bool,
    ) -> Result<(Organization, OrgDomain)> {
        self.require(caller, id, "domains:write")?;
        if domain.is_public_webmail() && !(allow_public && caller.is_operator()) {
            return Err(TenancyError::PublicDomainNotAllowed);
        }
        self.store.add_domain(id, &domain, caller.is_operator(), &Change::by(caller.actor())).await
    }

    /// Verifies a domain: by the TXT record of its challenge (anyone with `domains:write`), or by
    /// an operator's word. Verification moves the right to vouch for the domain's emails to this
    /// organization; the unique index on verified domains makes the first one win a race.
    pub async fn verify_domain(
        &self,
        caller: &Caller,
        id: OrganizationId,
        domain: Domain,
        method: VerificationMethod,
    ) -> Result<(Organization, OrgDomain)> {
        self.require(caller, id, "domains:write")?;
        if method == VerificationMethod::Operator {
            caller.require_operator_key()?;
        }
        self.org(id).await?;
        let current = self.store.domain(id, &domain).await?.ok_or(TenancyError::DomainNotFound)?;
        if current.state == DomainState::Verified {
            return Ok((self.org(id).await?, current));
        }
        if method == VerificationMethod::DnsTxt {
            let record = crate::dns::challenge_name(domain.as_str());
            match self.dns.check(domain.as_str(), &current.challenge).await {
                Ok(Check::Found) => {}
                Ok(Check::Missing) => return Err(TenancyError::DomainChallengeMissing { record }),
                Ok(Check::Wrong) => return Err(TenancyError::DomainChallengeMismatch { record }),
                Err(DnsError::Unavailable(why)) => return Err(TenancyError::DnsUnavailable(why)),
                Err(DnsError::InvalidDomain(why)) => {
                    return Err(TenancyError::InvalidField { field: "domain", message: why })
                }
            }
        }
        self.store.verify_domain(id, &domain, method, &Change::by(caller.actor())).await
    }

    /// Removes an allowed domain.
    pub async fn remove_domain(&self, caller: &Caller, id: OrganizationId, domain: Domain) -> Result<Organization> {
        self.require(caller, id, "domains:write")?;
        self.store.remove_domain(id, &domain, &Change::by(caller.actor())).await
    }

    // ----- members -------------------------------------------------------------------------

    /// Adds a member by email, in the organization's domains (exactly: no subdomain or
    /// look-alike counts) unless an operator waives the check.
    pub async fn add_member(
        &self,
        caller: &Caller,
        org: OrganizationId,
        email: Email,
        roles: Vec<RoleName>,
        display_name: &str,
        waive_domain_check: bool,
    ) -> Result<(Member, bool)> {
        self.require(caller, org, "members:write")?;
        if waive_domain_check {
            caller.require_operator()?;
        }
        let roles = normalize_roles(roles)?;
        self.require_assignable(caller, org, &roles).await?;
        let name = if display_name.trim().is_empty() {
            String::new()
        } else {
            DisplayName::parse(display_name, "display_name")?.to_string()
        };
        let enforce_domains = !waive_domain_check;
        let result =
            self.store.add_member(org, &email, &name, &roles, enforce_domains, &Change::by(caller.actor())).await?;
        self.membership_changed(&result.0).await;
        self.seats_changed(org).await;
        Ok(result)
    }

    /// One membership; a member may always read its own.
    pub async fn get_member(&self, caller: &Caller, org: OrganizationId, user: UserId) -> Result<Member> {
        let own = matches!(caller, Caller::Member(p) if p.user_id == user && p.organization_id == org);
        if !own {
            self.require(caller, org, "members:read")?;
        }
        self.org(org).await?;
        self.store.get_member(org, user).await?.ok_or(TenancyError::MemberNotFound)
    }

    /// One membership by the member's email (`members:read`).
    pub async fn get_member_by_email(&self, caller: &Caller, org: OrganizationId, email: &Email) -> Result<Member> {
        self.require(caller, org, "members:read")?;
        self.org(org).await?;
        self.store.get_member_by_email(org, email).await?.ok_or(TenancyError::MemberNotFound)
    }

    /// A page of members.
    pub async fn list_members(
        &self,
        caller: &Caller,
        org: OrganizationId,
        page: &Page,
        show_removed: bool,
    ) -> Result<(Vec<Member>, String)> {
        self.require(caller, org, "members:read")?;
        self.org(org).await?;
        self.store.list_members(org, page, show_removed).await
    }

    /// Replaces a member's roles.
    pub async fn update_member_roles(
        &self,
        caller: &Caller,
        org: OrganizationId,
        user: UserId,
        roles: Vec<RoleName>,
    ) -> Result<Member> {
        self.require(caller, org, "members:write")?;
        let roles = normalize_roles(roles)?;
        self.require_assignable(caller, org, &roles).await?;
        let member = self.store.update_member_roles(org, user, &roles, &Change::by(caller.actor())).await?;
        self.membership_changed(&member).await;
        Ok(member)
    }

    /// Removes a member.
    pub async fn remove_member(&self, caller: &Caller, org: OrganizationId, user: UserId) -> Result<Member> {
        self.require(caller, org, "members:write")?;
        let result = self.store.remove_member(org, user, &Change::by(caller.actor())).await?;
        self.membership_changed(&result).await;
        self.seats_changed(org).await;
        Ok(result)
    }

    /// Transfers ownership: the owner (who alone holds `ownership:transfer`) or an operator.
    pub async fn transfer_ownership(
        &self,
        caller: &Caller,
        org: OrganizationId,
        new_owner: UserId,
    ) -> Result<(Organization, Member, Option<Member>)> {
        self.require(caller, org, "ownership:transfer")?;
        let result = self.store.transfer_ownership(org, new_owner, &Change::by(caller.actor())).await?;
        self.membership_changed(&result.1).await;
        if let Some(previous) = &result.2 {
            self.membership_changed(previous).await;
        }
        Ok(result)
    }

    /// A user's organizations: the user itself, or an operator.
    pub async fn list_user_organizations(
        &self,
        caller: &Caller,
        user: UserId,
        page: &Page,
    ) -> Result<(Vec<(Organization, Member)>, String)> {
        let own = matches!(caller, Caller::Member(p) if p.user_id == user);
        if !own {
            caller.require_operator()?;
        }
        if self.store.get_user(user).await?.is_none() {
            return Err(TenancyError::UserNotFound);
        }
        self.store.list_user_organizations(user, page).await
    }

    /// Seat usage.
    pub async fn seat_usage(&self, caller: &Caller, org: OrganizationId) -> Result<SeatUsage> {
        self.require(caller, org, "seats:read")?;
        let usage = self.cached_seat_usage(org).await?;
        export_seats(&usage);
        Ok(usage)
    }

    // ----- roles ---------------------------------------------------------------------------

    /// Creates a custom role.
    pub async fn create_role(
        &self,
        caller: &Caller,
        org: OrganizationId,
        name: RoleName,
        description: &str,
        permissions: Vec<Permission>,
    ) -> Result<Role> {
        self.require(caller, org, "roles:write")?;
        check_role_fields(description, &permissions)?;
        require_grantable(caller, &permissions)?;
        let role = Role {
            organization_id: Some(org),
            name,
            description: description.trim().to_owned(),
            permissions: dedup(permissions),
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
        };
        self.store.create_role(org, &role, &Change::by(caller.actor())).await
    }

    /// Built-in and custom roles.
    pub async fn list_roles(&self, caller: &Caller, org: OrganizationId, page: &Page) -> Result<(Vec<Role>, String)> {
        self.require(caller, org, "roles:read")?;
        self.org(org).await?;
        self.store.list_roles(org, page).await
    }

    /// Updates a custom role's description and/or permissions.
    pub async fn update_role(
        &self,
        caller: &Caller,
        org: OrganizationId,
        name: RoleName,
        description: Option<String>,
        permissions: Option<Vec<Permission>>,
    ) -> Result<Role> {
        self.require(caller, org, "roles:write")?;
        check_role_fields(description.as_deref().unwrap_or_default(), permissions.as_deref().unwrap_or_default())?;
        require_grantable(caller, permissions.as_deref().unwrap_or_default())?;
        if permissions.is_some() && matches!(caller, Caller::Member(_)) {
            // Changing a role's grants changes what its holders may do: a member may change only
            // a role whose current grants it holds too.
            if let Some(current) = self.store.get_role(org, &name).await? {
                require_grantable(caller, &current.permissions)?;
            }
        }
        let permissions = permissions.map(dedup);
        let description = description.map(|d| d.trim().to_owned());
        let changes_grants = permissions.is_some();
        let role = self
            .store
            .update_role(org, &name, description.as_deref(), permissions.as_deref(), &Change::by(caller.actor()))
            .await?;
        if changes_grants {
            // Every holder got a new membership version in the same transaction.
            match self.store.role_holders(org, &name).await {
                Ok(holders) => {
                    let active = || value::MEMBER_ACTIVE.to_owned();
                    let facts = holders.into_iter().map(|(user, version)| {
                        (FactKey::Membership(org, user), Versioned { version, value: active() })
                    });
                    self.publish(facts).await;
                }
                Err(e) => tracing::warn!(error = %e, "reading a role's holders after a permission change"),
            }
        }
        Ok(role)
    }

    /// Deletes a custom role that no member holds.
    pub async fn delete_role(&self, caller: &Caller, org: OrganizationId, name: RoleName) -> Result<()> {
        self.require(caller, org, "roles:write")?;
        self.store.delete_role(org, &name, &Change::by(caller.actor())).await
    }

    /// A member caller may assign only roles whose permissions it holds itself (operators and
    /// services may assign any). Unknown roles are left to the store, which refuses them.
    async fn require_assignable(&self, caller: &Caller, org: OrganizationId, roles: &[RoleName]) -> Result<()> {
        if !matches!(caller, Caller::Member(_)) {
            return Ok(());
        }
        let built_in = built_in_roles();
        for role in roles {
            let permissions = match built_in.iter().find(|r| &r.name == role) {
                Some(r) => r.permissions.clone(),
                None => match self.store.get_role(org, role).await? {
                    Some(r) => r.permissions,
                    None => continue,
                },
            };
            require_grantable(caller, &permissions)?;
        }
        Ok(())
    }

    // ----- SSO connections -----------------------------------------------------------------

    /// Creates an SSO connection, checking the fields its kind needs.
    pub async fn create_sso_connection(
        &self,
        caller: &Caller,
        org: OrganizationId,
        mut new: NewSsoConnection,
    ) -> Result<SsoConnection> {
        self.require(caller, org, "connections:write")?;
        check_issuer(&new.issuer, self.allow_http_issuers)?;
        if !self.issuer_allowlist.allows(&new.issuer) {
            return Err(TenancyError::IssuerNotAllowed);
        }
        let client_id = new.client_id.trim();
        if client_id.is_empty() {
            return Err(lanyard_core::ValueError::Missing("client_id").into());
        }
        if client_id.len() > 255 || client_id.chars().any(char::is_control) {
            return Err(lanyard_core::ValueError::TooLong("client_id", 255).into());
        }
        new.client_id = client_id.to_owned();
        if new.client_secret.as_deref().is_some_and(|s| s.len() > 4096) {
            return Err(lanyard_core::ValueError::TooLong("client_secret", 4096).into());
        }
        new.hosted_domains.sort();
        new.hosted_domains.dedup();
        if new.hosted_domains.len() > MAX_DOMAINS {
            return Err(too_many("hosted_domains", MAX_DOMAINS));
        }
        match new.kind {
            SsoKind::GoogleWorkspace if new.hosted_domains.is_empty() => {
                return Err(TenancyError::InvalidField {
                    field: "hosted_domains",
                    message: "a Google Workspace connection needs at least one hosted domain".into(),
                })
            }
            SsoKind::AzureAd => {
                let t = new.tenant_id.trim().to_ascii_lowercase();
                let ok = !t.is_empty() && t.len() <= 64 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
                if !ok {
                    return Err(TenancyError::InvalidField {
                        field: "tenant_id",
                        message: "an Entra ID connection needs its tenant id".into(),
                    });
                }
                new.tenant_id = t;
            }
            _ => {}
        }
        let change = Change::by(caller.actor());
        self.store.create_sso_connection(org, &new, self.max_sso_connections, &self.secrets, &change).await
    }

    /// A page of SSO connections.
    pub async fn list_sso_connections(
        &self,
        caller: &Caller,
        org: OrganizationId,
        page: &Page,
    ) -> Result<(Vec<SsoConnection>, String)> {
        self.require(caller, org, "connections:read")?;
        self.org(org).await?;
        self.store.list_sso_connections(org, page).await
    }

    /// Deletes an SSO connection. Every session it signed in stops authorizing before this
    /// returns: its fact is published to every process (access tokens name their connection).
    pub async fn delete_sso_connection(&self, caller: &Caller, org: OrganizationId, id: ConnectionId) -> Result<()> {
        self.require(caller, org, "connections:write")?;
        self.store.delete_sso_connection(org, id, &Change::by(caller.actor())).await?;
        let deleted = Versioned { version: 1, value: value::CONNECTION_DELETED.into() };
        self.publish([(FactKey::Connection(id), deleted)]).await;
        Ok(())
    }

    /// A page of audit events.
    pub async fn list_audit_events(
        &self,
        caller: &Caller,
        org: OrganizationId,
        page: &Page,
        action: Option<&str>,
    ) -> Result<(Vec<crate::domain::AuditEvent>, String)> {
        self.require(caller, org, "audit:read")?;
        self.org(org).await?;
        self.store.list_audit_events(org, page, action).await
    }
}
