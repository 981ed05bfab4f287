//! What the clients hand back and take: the facts one service needs of another, as domain
//! values. Text the other service stores (slugs, names, emails, role and permission names) is
//! passed on as that service wrote it; ids and times are parsed.

use lanyard_core::roles::SsoKind;
use lanyard_core::{ConnectionId, Email, OrganizationId, ReservationId, Timestamp, UserId};

/// An organization's lifecycle state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrganizationStatus {
    Active,
    Suspended,
    Deleted,
}

/// An organization, as another service needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Organization {
    pub id: OrganizationId,
    pub slug: String,
    pub display_name: String,
    pub status: OrganizationStatus,
    /// The email domains invitations may go to.
    pub allowed_domains: Vec<String>,
    pub owner_user_id: Option<UserId>,
    /// When it last changed (the version of its revocation fact).
    pub updated_at: Option<Timestamp>,
}

impl Organization {
    /// Whether it is active (neither suspended nor deleted).
    pub fn is_active(&self) -> bool {
        self.status == OrganizationStatus::Active
    }
}

/// A membership of a user in an organization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub organization_id: OrganizationId,
    pub user_id: UserId,
    pub email: String,
    pub display_name: String,
    pub roles: Vec<String>,
    /// Whether the membership is active (not removed).
    pub active: bool,
    /// Increases on every role change or removal.
    pub version: i64,
}

/// A role of an organization, built-in or custom, with the permissions it grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    pub permissions: Vec<String>,
}

/// Where a seat reservation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReservationState {
    Held,
    Claimed,
    Released,
    Expired,
}

/// A seat held for a while (an invitation's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeatReservation {
    pub id: ReservationId,
    pub state: ReservationState,
    /// When tenancy frees the seat unless it is claimed.
    pub expires_at: Option<Timestamp>,
}

/// An SSO connection, without its secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SsoConnection {
    pub id: ConnectionId,
    pub organization_id: OrganizationId,
    pub kind: SsoKind,
    pub issuer: String,
    pub client_id: String,
    pub hosted_domains: Vec<String>,
    pub tenant_id: String,
    pub enabled: bool,
}

/// An identity an identity provider vouched for, as tenancy resolves or links it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub issuer: String,
    /// The subject Lanyard keys the user by.
    pub subject: String,
    pub email: Option<Email>,
    pub email_verified: bool,
    pub display_name: String,
    /// The connection that verified it.
    pub connection_id: Option<ConnectionId>,
}

/// Who claims a reserved seat.
#[derive(Clone, Copy, Debug)]
pub enum Claimant<'a> {
    /// A known user.
    User(UserId),
    /// A verified identity: tenancy finds, links or creates its user in the same transaction as
    /// the claim.
    Identity(&'a Identity),
}

/// What an invitation link is for, as its landing page shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvitationPreview {
    pub organization_display_name: String,
    pub organization_slug: String,
    pub email: String,
    pub inviter_display_name: String,
    pub expires_at: Option<Timestamp>,
}

/// The membership an accepted invitation made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptedMembership {
    pub organization_id: OrganizationId,
    pub organization_slug: String,
    pub user_id: UserId,
    pub roles: Vec<String>,
    pub version: i64,
}
