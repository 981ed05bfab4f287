//! The near cache's storage: facts in fixed-size entries (48 bytes and a control byte each), bounded,
//! expiring, with second-chance eviction. What may be put in and when it is trusted is
//! [`crate::facts`]'s business; this only promises that after [`Near::remove`] returns, no
//! [`Near::get`] answers the removed entry.
//!
//! A fact is keyed by its ids as two `u128` (memberships in one table, the single-id facts in
//! another, tagged by kind, so no two facts share a key) and stored as its version, its value as
//! an index into [`VALUES`] (a value not listed there is never cached), and its expiry in whole
//! seconds since the cache was made.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use lanyard_core::cache::Versioned;

use crate::facts::{value, FactKey};

/// Every value a fact takes, by its index in the near cache.
const VALUES: [&str; 5] =
    [value::MEMBER_ACTIVE, value::MEMBER_REMOVED, value::ORG_SUSPENDED, value::ORG_DELETED, value::SESSION_REVOKED];

/// How many shards a full-size cache has: each is locked on its own.
const MAX_SHARDS: usize = 64;
/// Shards are made only as many as keep at least this many entries each.
const MIN_PER_SHARD: usize = 1024;

type Key = (u128, u128);

/// One cached fact, beside its 32-byte key.
struct Slot {
    version: i64,
    /// When it expires, in whole seconds since [`Near::epoch`] (rounded down when stored, so a fact
    /// lives at most its TTL).
    expires: u32,
    value: u8,
    /// Read since the last sweep: spared by the next one.
    seen: AtomicBool,
}

/// A bounded map of `u128` pairs to facts, in shards.
struct Table {
    shards: Box<[RwLock<HashMap<Key, Slot, foldhash::quality::RandomState>>]>,
    /// Which shard a key is in (its own seed, so shards and the maps inside spread independently).
    spread: foldhash::quality::RandomState,
    per_shard: usize,
}

impl Table {
    fn new(capacity: usize) -> Self {
        let count = (capacity / MIN_PER_SHARD).clamp(1, MAX_SHARDS).next_power_of_two().min(MAX_SHARDS);
        let count = if capacity / count == 0 { 1 } else { count };
        let shards = (0..count).map(|_| RwLock::new(HashMap::default())).collect();
        Self { shards, spread: foldhash::quality::RandomState::default(), per_shard: capacity / count }
    }

    fn shard(&self, key: &Key) -> &RwLock<HashMap<Key, Slot, foldhash::quality::RandomState>> {
        // The high bits: the maps inside use the low ones of their own hash.
        &self.shards[(self.spread.hash_one(key) >> 32) as usize % self.shards.len()]
    }

    fn get(&self, key: &Key, now: u32) -> Option<(i64, u8)> {
        let shard = self.shard(key).read().unwrap_or_else(|p| p.into_inner());
        let slot = shard.get(key).filter(|s| s.expires > now)?;
        if !slot.seen.load(Ordering::Relaxed) {
            slot.seen.store(true, Ordering::Relaxed);
        }
        Some((slot.version, slot.value))
    }

    fn insert(&self, key: Key, version: i64, value: u8, expires: u32, now: u32) {
        if self.per_shard == 0 {
            return;
        }
        let mut shard = self.shard(&key).write().unwrap_or_else(|p| p.into_inner());
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            make_room(&mut shard, self.per_shard, now);
        }
        shard.insert(key, Slot { version, expires, value, seen: AtomicBool::new(false) });
    }

    fn remove(&self, key: &Key) {
        self.shard(key).write().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    fn clear(&self) {
        for shard in &self.shards {
            shard.write().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().unwrap_or_else(|p| p.into_inner()).len()).sum()
    }
}

/// Frees an eighth of a full shard: expired entries and those not read since the sweep last passed
/// them go first (the marks of the entries passed over are cleared, so each must be read again to
/// be spared again); when too few such are found, entries picked at random, so nobody who fills the
/// cache can choose which of its entries stay.
fn make_room(shard: &mut HashMap<Key, Slot, foldhash::quality::RandomState>, capacity: usize, now: u32) {
    let target = capacity - (capacity / 8).max(1);
    let mut excess = shard.len().saturating_sub(target);
    shard.retain(|_, slot| {
        if excess == 0 {
            return true;
        }
        let keep = slot.expires > now && slot.seen.swap(false, Ordering::Relaxed);
        excess -= usize::from(!keep);
        keep
    });
    if shard.len() <= target {
        return;
    }
    // Keep each entry with probability target/len, by a hash of its key under a fresh seed.
    let coin = foldhash::quality::RandomState::default();
    let keep = (target as u128 * u64::MAX as u128 / shard.len() as u128) as u64;
    shard.retain(|key, _| coin.hash_one(key) < keep);
    while shard.len() > target {
        let Some(key) = shard.keys().next().copied() else { break };
        shard.remove(&key);
    }
}

/// The near cache: at most its capacity of facts, each for at most its TTL.
pub(crate) struct Near {
    memberships: Table,
    /// Organizations, sessions and connections: `(id, kind)`.
    others: Table,
    ttl: u32,
    epoch: Instant,
}

impl Near {
    /// A near cache of at most `capacity` memberships and `capacity` other facts (a check reads a
    /// session and a membership for each token), each kept at most `ttl`.
    pub(crate) fn new(capacity: u64, ttl: Duration) -> Self {
        let capacity = usize::try_from(capacity).unwrap_or(usize::MAX);
        Self {
            memberships: Table::new(capacity),
            others: Table::new(capacity),
            ttl: u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX),
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> u32 {
        u32::try_from(self.epoch.elapsed().as_secs()).unwrap_or(u32::MAX)
    }

    fn table(&self, key: &FactKey) -> (&Table, Key) {
        match *key {
            FactKey::Membership(org, user) => (&self.memberships, (org.as_uuid().as_u128(), user.as_uuid().as_u128())),
            FactKey::Organization(id) => (&self.others, (id.as_uuid().as_u128(), 0)),
            FactKey::Session(id) => (&self.others, (id.as_uuid().as_u128(), 1)),
            FactKey::Connection(id) => (&self.others, (id.as_uuid().as_u128(), 2)),
        }
    }

    pub(crate) fn get(&self, key: &FactKey) -> Option<Versioned> {
        self.get_at(key, self.now())
    }

    fn get_at(&self, key: &FactKey, now: u32) -> Option<Versioned> {
        let (table, key) = self.table(key);
        let (version, value) = table.get(&key, now)?;
        Some(Versioned { version, value: VALUES[usize::from(value)].to_owned() })
    }

    /// Caches `fact` (a value the near cache does not know is not cached).
    pub(crate) fn insert(&self, key: &FactKey, fact: &Versioned) {
        self.insert_at(key, fact, self.now());
    }

    fn insert_at(&self, key: &FactKey, fact: &Versioned, now: u32) {
        let Some(value) = VALUES.iter().position(|v| *v == fact.value) else { return };
        let (table, key) = self.table(key);
        table.insert(key, fact.version, value as u8, now.saturating_add(self.ttl), now);
    }

    pub(crate) fn remove(&self, key: &FactKey) {
        let (table, key) = self.table(key);
        table.remove(&key);
    }

    pub(crate) fn clear(&self) {
        self.memberships.clear();
        self.others.clear();
    }

    /// How many facts it holds, expired ones not yet dropped included.
    pub(crate) fn len(&self) -> usize {
        self.memberships.len() + self.others.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::{Arc, Barrier};

    use lanyard_core::{ConnectionId, OrganizationId, SessionId, UserId};

    use super::*;

    fn fact(version: i64, value: &str) -> Versioned {
        Versioned { version, value: value.into() }
    }

    fn member() -> FactKey {
        FactKey::Membership(OrganizationId::new(), UserId::new())
    }

    #[test]
    fn an_entry_takes_48_bytes_beside_its_control_byte() {
        assert_eq!(std::mem::size_of::<(Key, Slot)>(), 48);
    }

    #[test]
    fn every_value_round_trips_and_unknown_ones_are_not_cached() {
        let near = Near::new(100, Duration::from_secs(300));
        for v in [
            value::MEMBER_ACTIVE,
            value::MEMBER_REMOVED,
            value::ORG_ACTIVE,
            value::ORG_SUSPENDED,
            value::ORG_DELETED,
            value::SESSION_ACTIVE,
            value::SESSION_REVOKED,
            value::CONNECTION_ACTIVE,
            value::CONNECTION_DELETED,
        ] {
            let key = member();
            near.insert(&key, &fact(-7, v));
            assert_eq!(near.get(&key), Some(fact(-7, v)));
        }
        let key = member();
        near.insert(&key, &fact(1, "something newer"));
        assert_eq!(near.get(&key), None);
    }

    #[test]
    fn facts_of_different_kinds_on_the_same_id_stay_apart() {
        let near = Near::new(100, Duration::from_secs(300));
        let id = uuid::Uuid::new_v4().to_string();
        let org = OrganizationId::parse(&id).unwrap();
        let keys = [
            FactKey::Organization(org),
            FactKey::Session(SessionId::parse(&id).unwrap()),
            FactKey::Connection(ConnectionId::parse(&id).unwrap()),
            FactKey::Membership(org, UserId::parse(&id).unwrap()),
        ];
        for (i, key) in keys.iter().enumerate() {
            near.insert(key, &fact(i as i64, value::MEMBER_ACTIVE));
        }
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(near.get(key).map(|f| f.version), Some(i as i64));
        }
        near.remove(&keys[1]);
        assert_eq!(near.get(&keys[1]), None);
        assert_eq!(near.len(), 3);
    }

    #[test]
    fn the_capacity_bound_holds_and_read_entries_survive_eviction() {
        for capacity in [1, 2, 10, 1000, 5000, 20_000] {
            let near = Near::new(capacity, Duration::from_secs(300));
            // Read once after a quarter of the fill: spared by the sweeps that follow.
            let hot: Vec<FactKey> = (0..(capacity / 8).max(1)).map(|_| member()).collect();
            for key in &hot {
                near.insert(key, &fact(1, value::MEMBER_ACTIVE));
            }
            for i in 0..capacity * 3 {
                let key = if i % 2 == 0 { member() } else { FactKey::Session(SessionId::new()) };
                near.insert(&key, &fact(1, value::SESSION_ACTIVE));
                assert!(near.len() as u64 <= 2 * capacity, "{} facts in a near cache of {capacity} a kind", near.len());
                assert!(near.memberships.len() as u64 <= capacity);
                if i % 64 == 0 {
                    for key in &hot {
                        let _ = near.get(key);
                    }
                }
            }
            if capacity >= 1000 {
                let kept = hot.iter().filter(|k| near.get(k).is_some()).count();
                let cold = near.memberships.len() as f64 / (capacity * 3 / 2) as f64;
                assert!(kept as f64 / hot.len() as f64 > cold, "read entries are kept ahead of others");
            }
        }
    }

    #[test]
    fn facts_expire_after_their_ttl() {
        let near = Near::new(100, Duration::from_secs(300));
        let key = member();
        near.insert_at(&key, &fact(3, value::MEMBER_ACTIVE), 10);
        assert_eq!(near.get_at(&key, 10), Some(fact(3, value::MEMBER_ACTIVE)));
        assert_eq!(near.get_at(&key, 309), Some(fact(3, value::MEMBER_ACTIVE)));
        assert_eq!(near.get_at(&key, 310), None);
        let never = Near::new(100, Duration::ZERO);
        never.insert(&key, &fact(3, value::MEMBER_ACTIVE));
        assert_eq!(never.get(&key), None);
    }

    #[test]
    fn expired_facts_are_evicted_first() {
        let near = Near::new(4, Duration::from_secs(300));
        let fresh = member();
        near.insert_at(&fresh, &fact(1, value::MEMBER_ACTIVE), 1000);
        let _ = near.get_at(&fresh, 1000);
        // Fill the rest at time 0, so they are expired at 1000; the fresh fact must stay.
        for _ in 0..3 {
            near.insert_at(&member(), &fact(1, value::MEMBER_ACTIVE), 0);
        }
        for _ in 0..4 {
            near.insert_at(&member(), &fact(1, value::MEMBER_ACTIVE), 1000);
            let _ = near.get_at(&fresh, 1000);
        }
        assert_eq!(near.get_at(&fresh, 1000), Some(fact(1, value::MEMBER_ACTIVE)));
        assert!(near.len() <= 4);
    }

    #[test]
    fn invalidation_removes_and_clear_empties() {
        let near = Near::new(1000, Duration::from_secs(300));
        let keys: Vec<FactKey> = (0..100).map(|_| member()).collect();
        for key in &keys {
            near.insert(key, &fact(1, value::MEMBER_ACTIVE));
        }
        near.remove(&keys[0]);
        assert_eq!(near.get(&keys[0]), None);
        assert_eq!(near.get(&keys[1]), Some(fact(1, value::MEMBER_ACTIVE)));
        near.clear();
        assert_eq!(near.len(), 0);
        assert!(keys.iter().all(|k| near.get(k).is_none()));
    }

    /// Many rounds of: readers hammering a fact while others flood its shard (forcing sweeps) and
    /// one thread removes it. Once `remove` has returned, no reader may see the fact again.
    #[test]
    fn a_removed_fact_is_never_read_after_remove_returns() {
        const READERS: usize = 3;
        let near = Arc::new(Near::new(32, Duration::from_secs(300)));
        let seen_after = Arc::new(AtomicUsize::new(0));
        for round in 0..300 {
            let key = member();
            near.insert(&key, &fact(round, value::MEMBER_ACTIVE));
            let removed = Arc::new(AtomicBool::new(false));
            let barrier = Arc::new(Barrier::new(READERS + 2));
            let mut threads = Vec::new();
            for _ in 0..READERS {
                let (near, removed, barrier, seen_after) =
                    (near.clone(), removed.clone(), barrier.clone(), seen_after.clone());
                threads.push(std::thread::spawn(move || {
                    barrier.wait();
                    for _ in 0..2000 {
                        let after = removed.load(Ordering::SeqCst);
                        if near.get(&key).is_some() && after {
                            seen_after.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }));
            }
            let (flood, b) = (near.clone(), barrier.clone());
            threads.push(std::thread::spawn(move || {
                b.wait();
                for _ in 0..200 {
                    flood.insert(&member(), &fact(0, value::MEMBER_REMOVED));
                }
            }));
            barrier.wait();
            std::thread::yield_now();
            near.remove(&key);
            removed.store(true, Ordering::SeqCst);
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(near.get(&key), None, "round {round}");
        }
        assert_eq!(seen_after.load(Ordering::SeqCst), 0, "a removed fact was read after remove returned");
    }
}
