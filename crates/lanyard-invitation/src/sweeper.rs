//! The background sweeper: records the expiry of pending invitations past their expiry time and
//! revokes the pending invitations of deleted organizations, each with an audit event.
//!
//! Correctness never waits for it: an invitation past its expiry reads as expired and its seat is
//! free in tenancy's count at that instant (the reservation expires with it). The sweeper makes
//! the records say so, and writes the `invitation.expired` events.
//!
//! Audit: invitation events go to this service's own append-only `invitation_events` table, in
//! the same transaction as the change they describe (served by `ListInvitationEvents`); the seat
//! side of each change (`seat.reserved`, `seat.released`, `seat.claimed`, `member.added`) is in
//! TenancyService's audit log, written by tenancy itself. TenancyService has no RPC to append
//! foreign events yet, and a local transactional log can neither be lost nor written twice.

use std::time::Duration;

use tokio::sync::watch;

use crate::service::Invitations;

/// Invitations handled per batch.
const BATCH: i64 = 200;
/// How long sent and cancelled outbox rows (without their bodies) are kept.
pub const OUTBOX_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// The sweeper worker.
#[derive(Clone, Debug)]
pub struct Sweeper {
    invitations: Invitations,
    interval: Duration,
}

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Invitations marked expired.
    pub expired: usize,
    /// Invitations revoked because their organization was deleted.
    pub revoked: usize,
    /// Old outbox rows deleted (idempotency records are pruned by `lanyard_core::idempotency`).
    pub pruned: u64,
}

impl Sweeper {
    /// A sweeper that runs every `interval`.
    pub fn new(invitations: Invitations, interval: Duration) -> Self {
        Self { invitations, interval }
    }

    /// One full pass.
    pub async fn run_once(&self) -> Result<SweepReport, crate::InvitationError> {
        let mut report = SweepReport::default();
        loop {
            let (marked, seen) = self.invitations.expire_due(BATCH).await?;
            report.expired += marked;
            if (seen as i64) < BATCH || marked == 0 {
                break;
            }
        }
        let mut cursor = String::new();
        loop {
            let (n, next) = self.invitations.revoke_for_deleted_orgs(&cursor, BATCH).await?;
            report.revoked += n;
            if next.is_empty() {
                break;
            }
            cursor = next;
        }
        let now = lanyard_core::Timestamp::now();
        let before = lanyard_core::Timestamp(now.0 - i64::try_from(OUTBOX_RETENTION.as_micros()).unwrap_or(i64::MAX));
        report.pruned = self.invitations.store().prune_outbox(before).await?;
        Ok(report)
    }

    /// Sweeps every interval until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            match self.run_once().await {
                Ok(r) if r != SweepReport::default() => {
                    tracing::info!(expired = r.expired, revoked = r.revoked, "swept invitations")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "invitation sweep failed; will retry"),
            }
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = tokio::time::sleep(self.interval) => {}
            }
            if *shutdown.borrow() {
                break;
            }
        }
    }
}
