//! Invitation domain types: what an invitation, its token, its status and its events are,
//! independent of protobuf and of storage; and the clock the expiry rules read.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

pub use lanyard_core::InvitationId;
use lanyard_core::{
    ConnectionId, Email, EventId, OrganizationId, ReservationId, RoleName, Timestamp, UserId, ValueError,
};

/// Random bytes in a token: 256 bits from the OS CSPRNG.
pub const TOKEN_BYTES: usize = 32;
/// A token's length as unpadded URL-safe base64.
pub const TOKEN_LEN: usize = 43;

/// The raw secret of a registration link. It exists only in the link (and, sealed, in the
/// outbox until the email is sent); storage keeps its SHA-256 alone.
#[derive(Clone, PartialEq, Eq)]
pub struct InvitationToken(String);

impl fmt::Debug for InvitationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InvitationToken(..)")
    }
}

impl InvitationToken {
    /// A fresh random token.
    pub fn generate() -> Self {
        Self(lanyard_core::crypto::random_token(TOKEN_BYTES))
    }

    /// Checks the shape of a presented token (any string of the right length and alphabet).
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(ValueError::Missing("token"));
        }
        if raw.len() != TOKEN_LEN || !raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(ValueError::Malformed("token"));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The raw token, for the link only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What storage keeps: hex SHA-256.
    pub fn hash(&self) -> String {
        lanyard_core::crypto::sha256_hex(self.0.as_bytes())
    }
}

/// An invitation's lifecycle state as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvitationStatus {
    Pending,
    Accepted,
    Revoked,
    Expired,
}

impl InvitationStatus {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Accepted => "accepted",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }

    /// From the stored form; an unknown one is a corrupt row.
    pub fn from_db(s: &str) -> Result<Self, lanyard_core::stored::UnknownStored> {
        lanyard_core::stored::decode(
            "invitation status",
            s,
            &[Self::Pending, Self::Accepted, Self::Revoked, Self::Expired],
            Self::as_str,
        )
    }
}

/// Where the latest invitation email stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    Queued,
    Sent,
    Failed,
    NotSent,
}

impl Delivery {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::NotSent => "not_sent",
        }
    }

    /// From the stored form; an unknown one is a corrupt row.
    pub fn from_db(s: &str) -> Result<Self, lanyard_core::stored::UnknownStored> {
        lanyard_core::stored::decode(
            "email delivery",
            s,
            &[Self::Queued, Self::Sent, Self::Failed, Self::NotSent],
            Self::as_str,
        )
    }
}

/// An invitation of one email address into one organization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invitation {
    pub id: InvitationId,
    pub organization_id: OrganizationId,
    pub email: Email,
    pub roles: Vec<RoleName>,
    /// As stored; see [`Invitation::status_at`] for the state a reader sees.
    pub status: InvitationStatus,
    /// `user:<id>`, `operator:<key>` or `service:<key>`.
    pub inviter: String,
    pub inviter_display_name: String,
    /// The organization as it was when the invitation was made (for the email and the preview).
    pub organization_slug: String,
    pub organization_display_name: String,
    pub reservation_id: ReservationId,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub accepted_at: Option<Timestamp>,
    pub accepted_user_id: Option<UserId>,
    pub revoked_at: Option<Timestamp>,
    pub delivery: Delivery,
    pub delivery_error: Option<String>,
}

impl Invitation {
    /// The state at `now`: a pending invitation past its expiry is expired, whether or not the
    /// sweeper has recorded it yet.
    pub fn status_at(&self, now: Timestamp) -> InvitationStatus {
        match self.status {
            InvitationStatus::Pending if self.expires_at <= now => InvitationStatus::Expired,
            s => s,
        }
    }
}

/// An append-only record of an invitation state change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvitationEvent {
    pub id: EventId,
    pub organization_id: OrganizationId,
    pub invitation_id: InvitationId,
    pub actor: String,
    pub action: String,
    pub details: BTreeMap<String, String>,
    pub created_at: Timestamp,
}

/// An identity that the token service has verified, accepting an invitation.
#[derive(Clone, Debug)]
pub struct VerifiedIdentity {
    /// The user it resolved to; `None` when tenancy resolves (and links) the user from the
    /// identity in the same transaction as the seat claim.
    pub user_id: Option<UserId>,
    pub email: Email,
    pub email_verified: bool,
    pub issuer: String,
    pub subject: String,
    /// The invitation organization's connection that verified it (needed without `user_id`).
    pub connection_id: Option<ConnectionId>,
    pub display_name: String,
}

impl VerifiedIdentity {
    /// The identity as tenancy links it to a user when it claims a seat.
    pub fn for_claim(&self) -> lanyard_clients::Identity {
        lanyard_clients::Identity {
            issuer: self.issuer.clone(),
            subject: self.subject.clone(),
            email: Some(self.email.clone()),
            email_verified: self.email_verified,
            display_name: self.display_name.clone(),
            connection_id: self.connection_id,
        }
    }
}

/// The membership an acceptance produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipSummary {
    pub organization_id: OrganizationId,
    pub organization_slug: String,
    pub user_id: UserId,
    pub roles: Vec<String>,
    pub version: i64,
}

/// What a landing page may show about a valid link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preview {
    pub organization_display_name: String,
    pub organization_slug: String,
    pub email: Email,
    pub inviter_display_name: String,
    pub expires_at: Timestamp,
}

/// Where time comes from. Expiry decisions read it, so tests can move it instead of sleeping.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// The system clock shifted by an adjustable offset: time still flows, but a test can jump it
/// to any instant.
#[derive(Debug, Default)]
pub struct OffsetClock {
    offset_micros: AtomicI64,
}

impl OffsetClock {
    /// A clock that reads the system time until moved.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the clock read `at` now (and flow on from there).
    pub fn set(&self, at: Timestamp) {
        self.offset_micros.store(at.0 - Timestamp::now().0, Ordering::SeqCst);
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let micros = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        self.offset_micros.fetch_add(micros, Ordering::SeqCst);
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> Timestamp {
        Timestamp(Timestamp::now().0.saturating_add(self.offset_micros.load(Ordering::SeqCst)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tokens_are_long_random_and_hashed() {
        let a = InvitationToken::generate();
        let b = InvitationToken::generate();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), TOKEN_LEN);
        assert_eq!(InvitationToken::parse(a.expose()).unwrap(), a);
        assert_eq!(a.hash().len(), 64);
        assert!(!a.hash().contains(a.expose()));
        assert!(!format!("{a:?}").contains(a.expose()));
        for bad in ["", "short", &"a".repeat(44), &format!("{}=", "a".repeat(42)), &format!("{}+", "a".repeat(42))] {
            assert!(InvitationToken::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn pending_past_expiry_reads_as_expired() {
        let now = Timestamp(1_000_000);
        let inv = Invitation {
            id: InvitationId::new(),
            organization_id: OrganizationId::new(),
            email: Email::parse("a@acme.com").unwrap(),
            roles: vec![],
            status: InvitationStatus::Pending,
            inviter: String::new(),
            inviter_display_name: String::new(),
            organization_slug: String::new(),
            organization_display_name: String::new(),
            reservation_id: ReservationId::new(),
            created_at: Timestamp(0),
            expires_at: now,
            accepted_at: None,
            accepted_user_id: None,
            revoked_at: None,
            delivery: Delivery::NotSent,
            delivery_error: None,
        };
        assert_eq!(inv.status_at(Timestamp(now.0 - 1)), InvitationStatus::Pending);
        assert_eq!(inv.status_at(now), InvitationStatus::Expired);
    }

    #[test]
    fn offset_clock_jumps() {
        let c = OffsetClock::new();
        let target = Timestamp(Timestamp::now().0 + 86_400_000_000);
        c.set(target);
        assert!(c.now() >= target);
        c.advance(Duration::from_secs(1));
        assert!(c.now().0 >= target.0 + 1_000_000);
    }

    proptest! {
        #[test]
        fn token_parser_never_panics(raw in "\\PC{0,100}") {
            let _ = InvitationToken::parse(&raw);
        }

        #[test]
        fn invitation_ids_round_trip(_x in 0u8..10) {
            let id = InvitationId::new();
            prop_assert_eq!(InvitationId::parse(&id.to_string()).unwrap(), id);
        }
    }
}
