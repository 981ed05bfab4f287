//! Tenancy's domain types: what an organization, a membership, a role, a seat reservation and an
//! SSO connection are, independent of protobuf and of storage.

use std::collections::BTreeMap;

use lanyard_core::{
    ConnectionId, DisplayName, Domain, Email, EventId, OrgSlug, OrganizationId, Permission, ReservationId, RoleName,
    Timestamp, UserId,
};

pub use lanyard_core::roles::SsoKind;

/// An organization's lifecycle state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrgStatus {
    /// Signs members in and authorizes them.
    Active,
    /// Authorizes nothing until reactivated.
    Suspended,
    /// Soft-deleted.
    Deleted,
}

impl OrgStatus {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Deleted => "deleted",
        }
    }

    /// From the stored form; an unknown one is a corrupt row.
    pub fn from_db(s: &str) -> Result<Self, lanyard_core::stored::UnknownStored> {
        lanyard_core::stored::decode(
            "organization status",
            s,
            &[Self::Active, Self::Suspended, Self::Deleted],
            Self::as_str,
        )
    }
}

/// A customer organization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Organization {
    pub id: OrganizationId,
    pub slug: OrgSlug,
    pub display_name: DisplayName,
    pub seat_limit: u32,
    pub allowed_domains: Vec<Domain>,
    /// The same domains with their verification state.
    pub domains: Vec<OrgDomain>,
    pub metadata: BTreeMap<String, String>,
    pub status: OrgStatus,
    pub owner_user_id: Option<UserId>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub deleted_at: Option<Timestamp>,
}

/// Whether an organization has proved it owns a domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainState {
    /// Added, not proved: counts for invitations, never for identity.
    Pending,
    /// Proved: the organization's connections may vouch for emails in it.
    Verified,
}

impl DomainState {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Verified => "verified",
        }
    }
}

/// How a domain was proved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerificationMethod {
    /// The TXT record of its challenge was found in DNS.
    DnsTxt,
    /// An operator vouched for it.
    Operator,
}

impl VerificationMethod {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DnsTxt => "dns_txt",
            Self::Operator => "operator",
        }
    }
}

/// An email domain of an organization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrgDomain {
    pub name: Domain,
    pub state: DomainState,
    pub verified_at: Option<Timestamp>,
    /// `dns_txt` or `operator` once verified.
    pub method: Option<String>,
    /// The token of its DNS challenge (published in DNS, so not a secret).
    pub challenge: String,
}

/// What creating an organization needs.
#[derive(Clone, Debug)]
pub struct NewOrganization {
    pub slug: OrgSlug,
    pub display_name: DisplayName,
    pub seat_limit: u32,
    pub allowed_domains: Vec<Domain>,
    pub metadata: BTreeMap<String, String>,
    pub owner_email: Option<Email>,
}

/// The fields an update changes (`None` leaves a field as it is).
#[derive(Clone, Debug, Default)]
pub struct OrganizationPatch {
    pub display_name: Option<DisplayName>,
    pub seat_limit: Option<u32>,
    pub metadata: Option<BTreeMap<String, String>>,
    pub status: Option<OrgStatus>,
}

/// A membership's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberStatus {
    /// Holds a seat.
    Active,
    /// Removed.
    Removed,
}

/// A user's membership of an organization, with the user's public fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub organization_id: OrganizationId,
    pub user_id: UserId,
    pub email: Option<String>,
    pub display_name: String,
    pub roles: Vec<RoleName>,
    pub status: MemberStatus,
    pub version: i64,
    pub invited_by: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A global user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub primary_email: Option<String>,
    pub email_verified: bool,
    pub display_name: String,
    pub created_at: Timestamp,
}

/// Seats of an organization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeatUsage {
    pub organization_id: OrganizationId,
    pub seat_limit: u32,
    pub active: u32,
    pub reserved: u32,
}

impl SeatUsage {
    /// Seats left, never negative.
    pub fn available(&self) -> u32 {
        self.seat_limit.saturating_sub(self.active + self.reserved)
    }

    /// Seats in use.
    pub fn used(&self) -> u32 {
        self.active + self.reserved
    }
}

/// A role, built-in or custom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role {
    pub organization_id: Option<OrganizationId>,
    pub name: RoleName,
    pub description: String,
    pub permissions: Vec<Permission>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Role {
    /// Whether it is one of the built-in roles.
    pub fn built_in(&self) -> bool {
        self.organization_id.is_none()
    }
}

/// The built-in roles (the table in [`lanyard_core::roles::BUILT_IN`]) as roles.
pub fn built_in_roles() -> Vec<Role> {
    lanyard_core::roles::BUILT_IN
        .iter()
        .map(|r| Role {
            organization_id: None,
            name: RoleName::parse(r.name).expect("built-in role name"),
            description: r.description.to_owned(),
            permissions: r.permissions(),
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
        })
        .collect()
}

/// Whether `name` is a built-in role.
pub fn is_built_in(name: &RoleName) -> bool {
    lanyard_core::roles::built_in(name.as_str()).is_some()
}

/// A seat reservation's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReservationState {
    /// Holds a seat until it expires.
    Held,
    /// Became a membership.
    Claimed,
    /// Freed before expiry.
    Released,
    /// Past its expiry while held: holds nothing.
    Expired,
}

/// A seat held for a pending invitation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    pub id: ReservationId,
    pub organization_id: OrganizationId,
    pub expires_at: Timestamp,
    pub state: ReservationState,
    pub claimed_user_id: Option<UserId>,
}

/// An SSO connection; the client secret stays sealed in storage and never leaves it here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SsoConnection {
    pub id: ConnectionId,
    pub organization_id: OrganizationId,
    pub kind: SsoKind,
    pub issuer: String,
    pub client_id: String,
    pub hosted_domains: Vec<Domain>,
    pub tenant_id: String,
    pub enabled: bool,
    pub has_client_secret: bool,
    pub created_at: Timestamp,
}

/// What creating an SSO connection needs; the secret is sealed before it reaches storage.
#[derive(Clone, Debug)]
pub struct NewSsoConnection {
    pub kind: SsoKind,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub hosted_domains: Vec<Domain>,
    pub tenant_id: String,
}

/// An append-only record of a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    pub id: EventId,
    pub organization_id: OrganizationId,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub details: BTreeMap<String, String>,
    pub created_at: Timestamp,
}

/// An external identity signing in through a connection.
#[derive(Clone, Debug)]
pub struct ExternalIdentity {
    pub issuer: String,
    pub subject: String,
    pub email: Option<Email>,
    pub email_verified: bool,
    pub display_name: String,
    pub connection_id: ConnectionId,
}

/// An identity accepting an invitation: its user is resolved by the invited email.
#[derive(Clone, Debug)]
pub struct ClaimIdentity {
    pub issuer: String,
    pub subject: String,
    pub connection_id: ConnectionId,
    /// The invited email, verified by the provider for this identity (checked by the caller).
    pub email: Email,
    pub display_name: String,
}

/// Who takes a claimed seat.
#[derive(Clone, Debug)]
pub enum Claimant {
    /// An existing user.
    User(UserId),
    /// The user of an identity, found or created and linked in the claim's transaction.
    Identity(ClaimIdentity),
}

/// The outcome of resolving an identity.
#[derive(Clone, Debug)]
pub struct ResolvedIdentity {
    pub user: User,
    pub user_created: bool,
    pub identity_linked: bool,
}
