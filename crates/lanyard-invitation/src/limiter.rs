//! A small per-peer token bucket for the unauthenticated PreviewInvitation: each peer address may
//! make `burst` calls at once and then one every `1/per_second` seconds. Buckets live in memory
//! (per process); idle full buckets are dropped so the table stays small.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The rate limit of previews per peer.
#[derive(Clone, Copy, Debug)]
pub struct RateLimit {
    /// Calls allowed at once.
    pub burst: u32,
    /// Calls regained per second.
    pub per_second: f64,
    /// Key buckets by the last address of `x-forwarded-for` (the client as the nearest proxy saw
    /// it) instead of the TCP peer. Only behind a proxy that sets the header: otherwise a caller
    /// could pick its own bucket.
    pub trust_forwarded_for: bool,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self { burst: 20, per_second: 1.0 / 3.0, trust_forwarded_for: false }
    }
}

/// When the table grows past this, full buckets are dropped.
const PRUNE_AT: usize = 10_000;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The limiter.
pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<Option<IpAddr>, Bucket>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter").field("limit", &self.limit).finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter with `limit` per peer.
    pub fn new(limit: RateLimit) -> Self {
        Self { limit, buckets: Mutex::new(HashMap::new()) }
    }

    /// The bucket key of a request: the TCP peer, or the forwarded client when trusted.
    pub fn peer(&self, remote: Option<std::net::SocketAddr>, forwarded_for: Option<&str>) -> Option<IpAddr> {
        let forwarded = || forwarded_for?.rsplit(',').next()?.trim().parse::<IpAddr>().ok();
        match self.limit.trust_forwarded_for.then(forwarded).flatten() {
            Some(ip) => Some(ip),
            None => remote.map(|a| a.ip()),
        }
    }

    /// Takes one token for `peer` (`None` for in-process callers, which share one bucket).
    pub fn check(&self, peer: Option<IpAddr>) -> bool {
        let now = Instant::now();
        let burst = f64::from(self.limit.burst);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= PRUNE_AT {
            let refill = self.limit.per_second;
            buckets.retain(|_, b| b.tokens + refill * now.duration_since(b.at).as_secs_f64() < burst);
        }
        let bucket = buckets.entry(peer).or_insert(Bucket { tokens: burst, at: now });
        let elapsed = now.duration_since(bucket.at).min(Duration::from_secs(86_400));
        bucket.tokens = (bucket.tokens + elapsed.as_secs_f64() * self.limit.per_second).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_per_peer_then_refuses() {
        let l = RateLimiter::new(RateLimit { burst: 3, per_second: 0.0, trust_forwarded_for: false });
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        let b = Some(IpAddr::from([10, 0, 0, 2]));
        assert!((0..3).all(|_| l.check(a)));
        assert!(!l.check(a));
        assert!(l.check(b));
    }

    #[test]
    fn forwarded_for_only_when_trusted() {
        let remote = Some(std::net::SocketAddr::from(([10, 0, 0, 9], 4000)));
        let header = Some("203.0.113.7, 198.51.100.2");
        let plain = RateLimiter::new(RateLimit::default());
        assert_eq!(plain.peer(remote, header), Some(IpAddr::from([10, 0, 0, 9])));
        let trusting = RateLimiter::new(RateLimit { trust_forwarded_for: true, ..RateLimit::default() });
        assert_eq!(trusting.peer(remote, header), Some(IpAddr::from([198, 51, 100, 2])));
        assert_eq!(trusting.peer(remote, Some("garbage")), Some(IpAddr::from([10, 0, 0, 9])));
        assert_eq!(trusting.peer(None, None), None);
    }
}
