//! The revocation facts every authorization decision reads, and how they stay fresh everywhere.
//!
//! A fact is one of: a membership (organization, user) with its version and whether it is active;
//! an organization's status; a session's state. Each is a versioned entry in the shared cache
//! (Redis in production, under the keys [`FactKey::cache_key`] documents; the in-process cache in
//! the embedded default), rebuilt from its owner on a miss, and never trusted over a newer version.
//!
//! With Redis, each process keeps a bounded near cache in memory that it trusts only while its
//! subscription to the invalidation channel is up. Writers store the new fact in Redis, publish
//! its key on `<prefix>:authz:invalidate`, and wait (up to [`Facts::ACK_TIMEOUT`]) until every
//! subscribed process has dropped it from its near cache and acknowledged on `<prefix>:authz:ack`.
//! So when a writer returns, no near cache anywhere holds the old fact: the next decision in any
//! process reads the new one.
//!
//! A process trusts its near cache only under a lease: while its subscription is up and Redis
//! answered a ping on that connection less than [`Facts::LEASE`] ago (pings go every
//! [`Facts::PING_EVERY`], on the subscription's own connection, so a pong also proves every
//! invalidation published before it has been applied). A writer that cannot publish, or that
//! does not hear every acknowledgement, waits out the lease before returning: by then every process
//! that might have missed the invalidation has stopped trusting its near cache and reads Redis, or
//! (Redis down) the fact's owner.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use lanyard_core::cache::{Cache, CacheError, Versioned};
use lanyard_core::{ConnectionId, OrganizationId, SessionId, UserId};
use metrics::{Counter, Gauge};
use tokio::sync::watch;
use uuid::Uuid;

use crate::near::Near;

/// The channel (under the cache prefix) invalidations are published on.
pub const INVALIDATION_CHANNEL: &str = "authz:invalidate";
/// The channel (under the cache prefix) processes acknowledge invalidations on.
pub const ACK_CHANNEL: &str = "authz:ack";

/// How long a fact lives in Redis before it is rebuilt from its owner.
pub const FACT_TTL: Duration = Duration::from_secs(3600);
/// How long a fact lives in a near cache (invalidations remove it sooner).
pub const NEAR_TTL: Duration = Duration::from_secs(300);
/// How many memberships a near cache holds, and how many other facts (organizations, sessions,
/// connections).
pub const NEAR_CAPACITY: u64 = 2_000_000;

/// The values a fact takes.
pub mod value {
    /// A membership that is active (its version is the membership version).
    pub const MEMBER_ACTIVE: &str = "active";
    /// A membership that was removed, or never existed (version 0).
    pub const MEMBER_REMOVED: &str = "removed";
    /// An active organization (the version is its update time in microseconds).
    pub const ORG_ACTIVE: &str = "active";
    /// A suspended organization.
    pub const ORG_SUSPENDED: &str = "suspended";
    /// A deleted organization, or one that never existed (version 0).
    pub const ORG_DELETED: &str = "deleted";
    /// A session that may be used (version 0).
    pub const SESSION_ACTIVE: &str = "active";
    /// A revoked session, or one that never existed (version 1).
    pub const SESSION_REVOKED: &str = "revoked";
    /// An SSO connection that exists (version 0).
    pub const CONNECTION_ACTIVE: &str = "active";
    /// A deleted SSO connection, or one that never existed (version 1): the sessions it signed in
    /// authorize nothing.
    pub const CONNECTION_DELETED: &str = "deleted";
}

/// Which fact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FactKey {
    /// `<prefix>:authz:mv:<organization id>:<user id>`: the membership's version and state.
    Membership(OrganizationId, UserId),
    /// `<prefix>:authz:org:<organization id>`: the organization's status.
    Organization(OrganizationId),
    /// `<prefix>:authz:session:<session id>`: the session's state.
    Session(SessionId),
    /// `<prefix>:authz:conn:<connection id>`: whether the SSO connection a session signed in
    /// through still exists.
    Connection(ConnectionId),
}

impl FactKey {
    /// The key under the cache prefix.
    pub fn cache_key(&self) -> String {
        match self {
            Self::Membership(org, user) => format!("authz:mv:{org}:{user}"),
            Self::Organization(org) => format!("authz:org:{org}"),
            Self::Session(id) => format!("authz:session:{id}"),
            Self::Connection(id) => format!("authz:conn:{id}"),
        }
    }

    /// The inverse of [`FactKey::cache_key`].
    pub fn parse(key: &str) -> Option<Self> {
        let mut parts = key.split(':');
        let (Some("authz"), Some(kind), Some(a)) = (parts.next(), parts.next(), parts.next()) else {
            return None;
        };
        let key = match (kind, parts.next()) {
            ("mv", Some(b)) => Self::Membership(OrganizationId::parse(a).ok()?, UserId::parse(b).ok()?),
            ("org", None) => Self::Organization(OrganizationId::parse(a).ok()?),
            ("session", None) => Self::Session(SessionId::parse(a).ok()?),
            ("conn", None) => Self::Connection(ConnectionId::parse(a).ok()?),
            _ => return None,
        };
        parts.next().is_none().then_some(key)
    }
}

struct Metrics {
    near_hit: Counter,
    near_miss: Counter,
    errors: Counter,
    unacked: Counter,
    subscribed: Gauge,
}

impl Metrics {
    fn new() -> Self {
        Self {
            near_hit: metrics::counter!("lanyard_cache_requests_total", "cache" => "authz_near", "result" => "hit"),
            near_miss: metrics::counter!("lanyard_cache_requests_total", "cache" => "authz_near", "result" => "miss"),
            errors: metrics::counter!("lanyard_cache_errors_total", "service" => "authz"),
            unacked: metrics::counter!("lanyard_authz_invalidations_unacknowledged_total"),
            subscribed: metrics::gauge!("lanyard_authz_subscription_up"),
        }
    }
}

struct Inner {
    cache: Cache,
    near: Near,
    /// Whether the subscription is up.
    subscribed: AtomicBool,
    /// When Redis last answered on the subscription (milliseconds since `epoch`).
    last_pong: AtomicU64,
    epoch: Instant,
    /// Bumped before every eviction, so a reader never puts back a fact read before it.
    generation: AtomicU64,
    /// Held shared while a read admits a fact into the near cache, and exclusively while an
    /// eviction bumps the generation: an admission is wholly before an eviction (which then
    /// removes it) or wholly after (and sees the new generation).
    admission: RwLock<()>,
    /// Changed facts the shared cache did not take (it was unreachable), newest version per key:
    /// written, and their invalidations published, as soon as the subscription is back.
    pending: Mutex<HashMap<FactKey, Versioned>>,
    /// Writers waiting for acknowledgements, by message id.
    waiters: Mutex<HashMap<String, watch::Sender<usize>>>,
    metrics: Metrics,
}

/// The facts, shared by every clone.
#[derive(Clone)]
pub struct Facts {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Facts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Facts")
            .field("cache", &self.inner.cache)
            .field("subscribed", &self.subscribed())
            .finish_non_exhaustive()
    }
}

impl Facts {
    /// How often the subscription is pinged, and how long an answer may take.
    pub const PING_EVERY: Duration = Duration::from_millis(250);
    /// How long after Redis last answered on the subscription the near cache is still trusted.
    pub const LEASE: Duration = Duration::from_millis(750);
    /// How long a writer waits for every subscribed process to acknowledge an invalidation (at
    /// least the lease, so a process that did not acknowledge has stopped trusting its near cache).
    pub const ACK_TIMEOUT: Duration = Duration::from_secs(1);

    /// Facts in `cache`. With Redis, call [`Facts::subscribe`] to use the near cache.
    pub fn new(cache: Cache) -> Self {
        Self::with_capacity(cache, NEAR_CAPACITY)
    }

    /// Facts with a near cache of at most `capacity` memberships and `capacity` other facts.
    pub fn with_capacity(cache: Cache, capacity: u64) -> Self {
        let near = Near::new(capacity, NEAR_TTL);
        Self {
            inner: Arc::new(Inner {
                cache,
                near,
                subscribed: AtomicBool::new(false),
                last_pong: AtomicU64::new(0),
                epoch: Instant::now(),
                generation: AtomicU64::new(0),
                admission: RwLock::new(()),
                pending: Mutex::default(),
                waiters: Mutex::default(),
                metrics: Metrics::new(),
            }),
        }
    }

    /// The shared cache.
    pub fn cache(&self) -> &Cache {
        &self.inner.cache
    }

    /// Whether the near cache is trusted now: the subscription is up and its lease is current.
    pub fn subscribed(&self) -> bool {
        let inner = &self.inner;
        inner.subscribed.load(Ordering::SeqCst)
            && self.millis().saturating_sub(inner.last_pong.load(Ordering::SeqCst)) < Self::LEASE.as_millis() as u64
    }

    fn millis(&self) -> u64 {
        self.inner.epoch.elapsed().as_millis() as u64
    }

    fn renew_lease(&self) {
        self.inner.last_pong.store(self.millis(), Ordering::SeqCst);
    }

    /// How many facts the near cache holds (expired ones not yet dropped included).
    pub fn near_len(&self) -> u64 {
        self.inner.near.len() as u64
    }

    /// Reads a fact: from the near cache while the subscription is up, else from the shared cache.
    /// `Ok(None)` is a miss: the caller asks the fact's owner and [`Facts::fill`]s it.
    pub async fn read(&self, key: &FactKey) -> Result<Option<Versioned>, CacheError> {
        let inner = &self.inner;
        if inner.cache.redis_client().is_none() {
            return inner.cache.get(&key.cache_key()).await;
        }
        if self.subscribed() {
            if let Some(v) = inner.near.get(key) {
                inner.metrics.near_hit.increment(1);
                return Ok(Some(v));
            }
        }
        inner.metrics.near_miss.increment(1);
        let generation = inner.generation.load(Ordering::SeqCst);
        let read = inner.cache.get(&key.cache_key()).await.inspect_err(|_| inner.metrics.errors.increment(1))?;
        if let Some(v) = &read {
            let _admitting = inner.admission.read().unwrap_or_else(|p| p.into_inner());
            // An eviction since the read began bumped the generation: what was read may be older.
            if self.subscribed() && inner.generation.load(Ordering::SeqCst) == generation {
                inner.near.insert(key, v);
            }
        }
        Ok(read)
    }

    /// Stores a fact read from its owner after a miss (no invalidation: nothing newer is cached).
    pub async fn fill(&self, key: &FactKey, fact: &Versioned) -> Result<(), CacheError> {
        self.inner
            .cache
            .set_if_newer(&key.cache_key(), fact, FACT_TTL)
            .await
            .inspect_err(|_| self.inner.metrics.errors.increment(1))
            .map(|_| ())
    }

    /// Stores a changed fact and makes every process drop its old copy before returning (see the
    /// module docs). An error means the shared cache did not take it; it returns after the lease,
    /// when no process trusts a near cache that could hold the old fact.
    pub async fn write(&self, key: &FactKey, fact: &Versioned) -> Result<(), CacheError> {
        self.evict(key);
        if self.inner.cache.redis_client().is_none() {
            return self.fill(key, fact).await;
        }
        if let Err(e) = self.fill(key, fact).await {
            self.keep_pending(key, fact);
            tokio::time::sleep(Self::LEASE).await;
            return Err(e);
        }
        self.evict(key);
        let id = Uuid::new_v4().simple().to_string();
        let (tx, mut acks) = watch::channel(0usize);
        self.waiters().insert(id.clone(), tx);
        let published = self.inner.cache.publish(INVALIDATION_CHANNEL, &format!("{id} {}", key.cache_key())).await;
        let result = match published {
            Ok(receivers) => {
                let wanted = usize::try_from(receivers).unwrap_or_default();
                let acked = tokio::time::timeout(Self::ACK_TIMEOUT, acks.wait_for(|n| *n >= wanted))
                    .await
                    .is_ok_and(|r| r.is_ok());
                if !acked {
                    self.inner.metrics.unacked.increment(1);
                    tracing::warn!(key = %key.cache_key(), wanted, got = *acks.borrow(), "not every process acknowledged an invalidation in time");
                }
                Ok(())
            }
            Err(e) => {
                self.inner.metrics.errors.increment(1);
                self.keep_pending(key, fact);
                tokio::time::sleep(Self::LEASE).await;
                Err(e)
            }
        };
        self.waiters().remove(&id);
        result
    }

    fn keep_pending(&self, key: &FactKey, fact: &Versioned) {
        let mut pending = self.inner.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.get(key).is_none_or(|p| p.version <= fact.version) {
            pending.insert(*key, fact.clone());
        }
    }

    /// Writes the pending facts to the shared cache; they stay pending until published.
    async fn replay_pending(&self) -> Result<Vec<FactKey>, CacheError> {
        let pending: Vec<_> =
            self.inner.pending.lock().unwrap_or_else(|p| p.into_inner()).clone().into_iter().collect();
        for (key, fact) in &pending {
            self.fill(key, fact).await?;
        }
        if !pending.is_empty() {
            tracing::info!(facts = pending.len(), "authorization facts written after the shared cache came back");
        }
        Ok(pending.into_iter().map(|(key, _)| key).collect())
    }

    /// Publishes the invalidations of replayed facts (a process that resubscribed before the
    /// replay may have cached the old value) and forgets them.
    fn publish_replayed(&self, keys: Vec<FactKey>) {
        if keys.is_empty() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            for key in keys {
                let message = format!("replay {}", key.cache_key());
                if this.inner.cache.publish(INVALIDATION_CHANNEL, &message).await.is_ok() {
                    this.inner.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
                }
            }
        });
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<usize>>> {
        self.inner.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn evict(&self, key: &FactKey) {
        let _evicting = self.inner.admission.write().unwrap_or_else(|p| p.into_inner());
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
        self.inner.near.remove(key);
    }

    fn set_subscribed(&self, up: bool) {
        // Whatever the near cache holds may have missed invalidations: start empty either way.
        self.inner.subscribed.store(false, Ordering::SeqCst);
        let _evicting = self.inner.admission.write().unwrap_or_else(|p| p.into_inner());
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
        self.inner.near.clear();
        self.inner.subscribed.store(up, Ordering::SeqCst);
        self.inner.metrics.subscribed.set(if up { 1.0 } else { 0.0 });
    }

    /// Keeps the subscription to the invalidation channel up until `stop` turns true. Nothing to do
    /// for the in-process cache.
    pub fn subscribe(&self, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let Some(client) = this.inner.cache.redis_client().cloned() else { return };
            let mut backoff = Duration::from_millis(100);
            loop {
                if *stop.borrow() {
                    return;
                }
                match this.listen(&client, &mut stop).await {
                    Ok(()) => return,
                    Err(e) => {
                        if this.inner.subscribed.load(Ordering::SeqCst) {
                            backoff = Duration::from_millis(100);
                            tracing::warn!(error = %e, "authorization invalidations: subscription lost; reading Redis until it is back");
                        }
                        this.set_subscribed(false);
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        })
    }

    /// One subscription: returns `Ok` when stopped, `Err` when the connection failed.
    async fn listen(&self, client: &redis::Client, stop: &mut watch::Receiver<bool>) -> Result<(), String> {
        let cache = &self.inner.cache;
        let (invalidations, acks) = (cache.key(INVALIDATION_CHANNEL), cache.key(ACK_CHANNEL));
        let connect = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&invalidations).await?;
            pubsub.subscribe(&acks).await?;
            Ok::<_, redis::RedisError>(pubsub.split())
        };
        // Facts changed while the cache was unreachable go in before anyone can be told it is back.
        let replayed = self.replay_pending().await.map_err(|e| e.to_string())?;
        let (mut sink, mut messages) = tokio::time::timeout(Duration::from_secs(2), connect)
            .await
            .map_err(|_| "connecting timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        self.renew_lease();
        self.set_subscribed(true);
        self.publish_replayed(replayed);
        tracing::info!("authorization invalidations: subscribed");
        let mut ping = tokio::time::interval(Self::PING_EVERY);
        loop {
            tokio::select! {
                message = messages.next() => {
                    let Some(message) = message else { return Err("the subscription closed".into()) };
                    self.on_message(&message, &invalidations);
                }
                _ = ping.tick() => {
                    match tokio::time::timeout(Self::PING_EVERY, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Err(e.to_string()),
                        Err(_) => return Err("ping unanswered".into()),
                    }
                    // Everything Redis sent before the pong is already queued: apply it, then renew.
                    while let Some(next) = messages.next().now_or_never() {
                        let Some(message) = next else { return Err("the subscription closed".into()) };
                        self.on_message(&message, &invalidations);
                    }
                    self.renew_lease();
                }
                _ = stop.changed() => {
                    self.set_subscribed(false);
                    return Ok(());
                }
            }
        }
    }

    fn on_message(&self, message: &redis::Msg, invalidations: &str) {
        let payload: String = message.get_payload().unwrap_or_default();
        if message.get_channel_name() == invalidations {
            self.on_invalidation(&payload);
        } else if let Some(tx) = self.waiters().get(&payload) {
            tx.send_modify(|n| *n += 1);
        }
    }

    fn on_invalidation(&self, payload: &str) {
        let Some((id, key)) = payload.split_once(' ') else { return };
        match FactKey::parse(key) {
            Some(key) => self.evict(&key),
            // A key this version does not know: drop everything rather than keep something stale.
            None => self.set_subscribed(true),
        }
        if id == "replay" {
            return;
        }
        let (cache, id) = (self.inner.cache.clone(), id.to_owned());
        tokio::spawn(async move {
            let _ = cache.publish(ACK_CHANNEL, &id).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_reject_garbage() {
        let org = OrganizationId::new();
        let user = UserId::new();
        let session = SessionId::new();
        for key in [FactKey::Membership(org, user), FactKey::Organization(org), FactKey::Session(session)] {
            assert_eq!(FactKey::parse(&key.cache_key()), Some(key));
        }
        assert_eq!(FactKey::Organization(org).cache_key(), format!("authz:org:{org}"));
        for bad in ["", "authz", "authz:org", "authz:org:x", "authz:mv:{org}", "seats:org:1", "authz:org:{org}:extra"] {
            let bad = bad.replace("{org}", &org.to_string());
            assert_eq!(FactKey::parse(&bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn in_process_facts_keep_the_newest_version() {
        let facts = Facts::new(Cache::local("t"));
        let key = FactKey::Session(SessionId::new());
        assert_eq!(facts.read(&key).await.unwrap(), None);
        let revoked = Versioned { version: 1, value: value::SESSION_REVOKED.into() };
        facts.write(&key, &revoked).await.unwrap();
        facts.fill(&key, &Versioned { version: 0, value: value::SESSION_ACTIVE.into() }).await.unwrap();
        assert_eq!(facts.read(&key).await.unwrap(), Some(revoked));
    }
}
