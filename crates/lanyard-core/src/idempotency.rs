//! Idempotent retries by `request_id`, one implementation for every service.
//!
//! A mutating call that carries a `request_id` runs at most once per (scope, `request_id`): the
//! scope names the end caller and the method, so two callers who pick the same id never meet. The
//! first call takes a *pending* record before it runs; a concurrent duplicate finds it and waits
//! for the reply instead of running again; a later retry gets the stored reply. A retry whose
//! request differs from the first (same id, other fields) is refused with `REQUEST_ID_REUSED`
//! rather than answered with the first reply. A call that fails drops its record, so a retry runs
//! afresh. Replies that hold secrets (refresh tokens, invitation links) are sealed at rest. Records
//! live for a window (a day by default) and are pruned after it.
//!
//! Every service keeps the same table, `idempotency_keys` (scope, request_id, response, created_at,
//! fingerprint, done), in its own database.

use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use prost::Message;
use tonic::Code;

use crate::clock::Timestamp;
use crate::crypto::{sha256_hex, SecretBox};
use crate::db::{classify, Database, DbErrorKind};
use crate::status::Problem;
use crate::values::ValueError;

/// The longest `request_id` accepted, in bytes.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// How long a reply can be replayed, unless a service says otherwise.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// How long a pending record holds off duplicates before a retry may take it over (its call is
/// then presumed dead: the process stopped between taking the record and finishing).
pub const PENDING_LEASE: Duration = Duration::from_secs(30);

/// How long a duplicate waits for the first call's reply before answering `REQUEST_IN_PROGRESS`.
const WAIT_FOR_FIRST: Duration = Duration::from_secs(10);

/// A client's idempotency key: 1 to [`MAX_REQUEST_ID_LEN`] bytes, no control characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    /// Parses a `request_id` field: empty means the call is not idempotent (`None`).
    pub fn parse(raw: &str) -> Result<Option<Self>, ValueError> {
        if raw.is_empty() {
            return Ok(None);
        }
        if raw.len() > MAX_REQUEST_ID_LEN {
            return Err(ValueError::TooLong("request_id", MAX_REQUEST_ID_LEN));
        }
        if raw.chars().any(char::is_control) {
            return Err(ValueError::Malformed("request_id"));
        }
        Ok(Some(Self(raw.to_owned())))
    }

    /// The id as the client sent it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// An id for a call this call makes on the caller's behalf to another service (which scopes
    /// ids by *its* caller, this service): unique to `scope`, so two end callers who chose the same
    /// id do not collide downstream, and stable, so a retry forwards the same one.
    pub fn derive(&self, scope: &str) -> String {
        sha256_hex(format!("{scope}\u{0}{}", self.0).as_bytes())
    }
}

/// Why a call could not go through its idempotency record.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The `request_id` itself is bad.
    #[error(transparent)]
    RequestId(#[from] ValueError),
    /// The id was used before for a request with other fields.
    #[error("request_id was already used for a different request")]
    Reused,
    /// The first call with this id is still running.
    #[error("a call with this request_id is still running; retry")]
    InProgress,
    /// The record could not be read or written.
    #[error("idempotency record: {0}")]
    Store(#[from] sqlx::Error),
    /// A stored reply could not be opened or decoded.
    #[error("stored reply unreadable: {0}")]
    Corrupt(String),
}

impl ReplayError {
    /// Whether the record's database lost a race or was busy.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Store(source) if classify(source) == DbErrorKind::Retryable)
    }

    /// The API form.
    pub fn to_problem(&self) -> Problem {
        match self {
            Self::RequestId(e) => Problem::from(e.clone()),
            Self::Reused => Problem::new(Code::FailedPrecondition, "REQUEST_ID_REUSED", self.to_string())
                .with_precondition("REQUEST_ID", "request_id", "a retry must repeat the first request exactly"),
            Self::InProgress => Problem::new(Code::Aborted, "REQUEST_IN_PROGRESS", self.to_string()),
            Self::Store(e) => crate::db::problem(e),
            Self::Corrupt(_) => Problem::new(Code::Internal, "INTERNAL", "internal error"),
        }
    }
}

/// What a stored record says about a new call.
enum Found {
    /// No record: this call took a pending one and runs.
    Run,
    /// The first call's reply.
    Reply(Vec<u8>),
    /// The first call is running: wait.
    Pending,
}

/// A service's idempotency records.
#[derive(Clone, Debug)]
pub struct Replays {
    db: Database,
    seal: Option<SecretBox>,
    window: Duration,
    /// When records were last pruned (microseconds since the epoch).
    pruned: Arc<AtomicI64>,
}

/// How often a service prunes its records, from the calls that use them.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

impl Replays {
    /// Records in `db`, replies stored in the clear, replayable for [`DEFAULT_WINDOW`].
    pub fn new(db: Database) -> Self {
        Self { db, seal: None, window: DEFAULT_WINDOW, pruned: Arc::new(AtomicI64::new(0)) }
    }

    /// Seals stored replies with `secrets` (bound to their scope and id): for replies that hold
    /// tokens or links.
    pub fn sealed(mut self, secrets: SecretBox) -> Self {
        self.seal = Some(secrets);
        self
    }

    /// Runs `run` once for (`scope`, `request_id`), `request` being the call's encoded message
    /// (its fingerprint tells a true retry from a reused id). Without an id, `run` simply runs. `run`
    /// gets the parsed id, to pass on (see [`RequestId::derive`]). `replayed` sees a stored reply
    /// before it is returned, and may refuse it (a refresh whose successor was used since).
    pub async fn once<R, E, F, Fut, C, CFut>(
        &self,
        scope: &str,
        request_id: &str,
        request: &[u8],
        run: F,
        replayed: C,
    ) -> Result<R, E>
    where
        R: Message + Default,
        E: From<ReplayError>,
        F: FnOnce(Option<RequestId>) -> Fut,
        Fut: Future<Output = Result<R, E>>,
        C: FnOnce(R) -> CFut,
        CFut: Future<Output = Result<R, E>>,
    {
        let Some(id) = RequestId::parse(request_id).map_err(ReplayError::from)? else {
            return run(None).await;
        };
        let fingerprint = sha256_hex(request);
        self.prune_now_and_then();
        let waited = std::time::Instant::now();
        loop {
            match self.take(scope, &id, &fingerprint).await? {
                Found::Run => break,
                Found::Reply(bytes) => {
                    let reply = R::decode(bytes.as_slice()).map_err(|e| ReplayError::Corrupt(e.to_string()))?;
                    return replayed(reply).await;
                }
                Found::Pending if waited.elapsed() >= WAIT_FOR_FIRST => return Err(ReplayError::InProgress.into()),
                Found::Pending => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        match run(Some(id.clone())).await {
            Ok(reply) => {
                self.finish(scope, &id, &reply.encode_to_vec()).await?;
                Ok(reply)
            }
            Err(e) => {
                // Nothing was done (or what was done is not to be replayed): a retry runs anew.
                if let Err(drop_error) = self.abandon(scope, &id).await {
                    tracing::warn!(error = %drop_error, "an idempotency record could not be dropped");
                }
                Err(e)
            }
        }
    }

    /// Takes a pending record, or reads the one there.
    async fn take(&self, scope: &str, id: &RequestId, fingerprint: &str) -> Result<Found, ReplayError> {
        let now = Timestamp::now();
        let taken = sqlx::query(
            "INSERT INTO idempotency_keys (scope, request_id, response, created_at, fingerprint, done)
             VALUES ($1, $2, '', $3, $4, 0) ON CONFLICT (scope, request_id) DO NOTHING",
        )
        .bind(scope)
        .bind(id.as_str())
        .bind(now.0)
        .bind(fingerprint)
        .execute(&self.db.pool)
        .await?;
        if taken.rows_affected() == 1 {
            return Ok(Found::Run);
        }
        let row = sqlx::query(
            "SELECT response, created_at, fingerprint, done FROM idempotency_keys WHERE scope = $1 AND request_id = $2",
        )
        .bind(scope)
        .bind(id.as_str())
        .fetch_optional(&self.db.pool)
        .await?;
        // Dropped in between by a call that failed: try to take it again.
        let Some(row) = row else { return Ok(Found::Pending) };
        use sqlx::Row;
        let (response, created_at, stored, done): (String, i64, String, i64) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?);
        let age = Duration::from_micros(u64::try_from(now.0 - created_at).unwrap_or(0));
        let stale = if done == 1 { age >= self.window } else { age >= PENDING_LEASE };
        if stale {
            // Past its window, or a pending record whose call died: take it over, once.
            let took = sqlx::query(
                "UPDATE idempotency_keys SET response = '', created_at = $1, fingerprint = $2, done = 0
                 WHERE scope = $3 AND request_id = $4 AND created_at = $5",
            )
            .bind(now.0)
            .bind(fingerprint)
            .bind(scope)
            .bind(id.as_str())
            .bind(created_at)
            .execute(&self.db.pool)
            .await?;
            return Ok(if took.rows_affected() == 1 { Found::Run } else { Found::Pending });
        }
        // Records written before fingerprints were kept hold none, and match any request.
        if !stored.is_empty() && stored != fingerprint {
            return Err(ReplayError::Reused);
        }
        if done == 0 {
            return Ok(Found::Pending);
        }
        let encoded = match &self.seal {
            Some(secrets) => {
                secrets.open(&response, &context(scope, id)).map_err(|e| ReplayError::Corrupt(e.to_string()))?
            }
            None => response,
        };
        STANDARD.decode(encoded).map(Found::Reply).map_err(|e| ReplayError::Corrupt(e.to_string()))
    }

    async fn finish(&self, scope: &str, id: &RequestId, reply: &[u8]) -> Result<(), ReplayError> {
        let encoded = STANDARD.encode(reply);
        let stored = match &self.seal {
            Some(secrets) => secrets.seal(&encoded, &context(scope, id)),
            None => encoded,
        };
        sqlx::query("UPDATE idempotency_keys SET response = $1, done = 1 WHERE scope = $2 AND request_id = $3")
            .bind(stored)
            .bind(scope)
            .bind(id.as_str())
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    async fn abandon(&self, scope: &str, id: &RequestId) -> Result<(), ReplayError> {
        sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND request_id = $2 AND done = 0")
            .bind(scope)
            .bind(id.as_str())
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// Prunes in the background when [`PRUNE_EVERY`] has passed since the last time: the
    /// records stay bounded without a worker of their own.
    fn prune_now_and_then(&self) {
        let now = Timestamp::now();
        let last = self.pruned.load(Ordering::Relaxed);
        let due = now.0.saturating_sub(last) >= i64::try_from(PRUNE_EVERY.as_micros()).unwrap_or(i64::MAX);
        if due && self.pruned.compare_exchange(last, now.0, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            let replays = self.clone();
            tokio::spawn(async move {
                match replays.prune(now).await {
                    Ok(n) if n > 0 => tracing::debug!(records = n, "idempotency records pruned"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "idempotency records could not be pruned"),
                }
            });
        }
    }

    /// Deletes records older than the window (and pending ones long dead); returns how many.
    pub async fn prune(&self, now: Timestamp) -> Result<u64, ReplayError> {
        let window = i64::try_from(self.window.as_micros()).unwrap_or(i64::MAX);
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(now.0.saturating_sub(window))
            .execute(&self.db.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

/// What a sealed reply is bound to: it cannot be moved to another record.
fn context(scope: &str, id: &RequestId) -> String {
    reply_context(scope, id.as_str())
}

fn reply_context(scope: &str, id: &str) -> String {
    format!("idempotency:{scope}:{id}")
}

/// Where [`Replays::sealed`] keeps its sealed replies, for `lanyard keys reencrypt` (pending
/// records hold an empty reply, and are passed over).
pub const SEALED_REPLIES: crate::rekey::SealedColumn = crate::rekey::SealedColumn {
    table: "idempotency_keys",
    column: "response",
    keys: &["scope", "request_id"],
    context: sealed_reply_context,
};

fn sealed_reply_context(keys: &[String]) -> String {
    reply_context(&keys[0], &keys[1])
}

/// The replays of one service's gRPC calls, whose work fails with the service's error `E`.
pub struct CallReplays<E> {
    replays: Replays,
    error: std::marker::PhantomData<fn() -> E>,
}

impl<E> Clone for CallReplays<E> {
    fn clone(&self) -> Self {
        Self { replays: self.replays.clone(), error: std::marker::PhantomData }
    }
}

impl<E> CallReplays<E>
where
    E: From<ReplayError> + Into<tonic::Status>,
{
    /// Answers the calls of a service through `replays`.
    pub fn new(replays: Replays) -> Self {
        Self { replays, error: std::marker::PhantomData }
    }

    /// [`Replays::once`] for one gRPC call: the record is scoped to the caller and the method (two
    /// callers who chose the same id never share a record), a stored reply is returned as it was,
    /// and the answer is the call's response or its error's status. `run` gets the parsed id.
    pub async fn respond_once<R, F, Fut>(
        &self,
        caller: &crate::Caller,
        method: &str,
        request_id: &str,
        request: &[u8],
        run: F,
    ) -> Result<tonic::Response<R>, tonic::Status>
    where
        R: Message + Default,
        F: FnOnce(Option<RequestId>) -> Fut,
        Fut: Future<Output = Result<R, E>>,
    {
        let scope = format!("{}|{method}", caller.actor());
        match self.replays.once(&scope, request_id, request, run, as_is).await {
            Ok(reply) => Ok(tonic::Response::new(reply)),
            Err(e) => Err(e.into()),
        }
    }
}

/// Passes a replayed reply through unchanged (for [`Replays::once`]).
pub async fn as_is<R, E>(reply: R) -> Result<R, E> {
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_have_one_rule() {
        assert_eq!(RequestId::parse("").unwrap(), None);
        assert_eq!(RequestId::parse("r-1").unwrap().unwrap().as_str(), "r-1");
        assert_eq!(RequestId::parse(&"r".repeat(128)).unwrap().unwrap().as_str().len(), 128);
        assert_eq!(RequestId::parse(&"r".repeat(129)), Err(ValueError::TooLong("request_id", 128)));
        assert_eq!(RequestId::parse("a\nb"), Err(ValueError::Malformed("request_id")));
        assert_eq!(RequestId::parse("a\u{7f}"), Err(ValueError::Malformed("request_id")));
        let id = RequestId::parse("1").unwrap().unwrap();
        assert_ne!(id.derive("alice"), id.derive("bob"));
        assert_eq!(id.derive("alice"), id.derive("alice"));
    }
}
