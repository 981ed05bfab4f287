//! Per-peer rate limits of the unauthenticated RPCs that touch a secret (invitation tokens, ID
//! tokens, refresh tokens): governor's keyed GCRA limiter, keyed by the peer's address (an IPv6
//! peer by its /64, which one host usually holds whole), with the keyed state pruned by
//! [`PeerLimiter::housekeeping`] so an attacker rotating addresses cannot grow it without bound.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// A limit per peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Calls allowed at once.
    pub burst: u32,
    /// Calls regained per minute; 0 turns the limit off.
    pub per_minute: u32,
}

impl RateLimit {
    /// A limit of `per_minute` calls a minute, `burst` of them at once.
    pub const fn new(burst: u32, per_minute: u32) -> Self {
        Self { burst, per_minute }
    }

    /// No limit.
    pub const fn off() -> Self {
        Self { burst: 0, per_minute: 0 }
    }

    fn quota(self) -> Option<Quota> {
        let per_minute = NonZeroU32::new(self.per_minute)?;
        let burst = NonZeroU32::new(self.burst).unwrap_or(per_minute);
        Some(Quota::per_minute(per_minute).allow_burst(burst))
    }
}

/// Who a call counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    /// An address (an IPv6 address cut to its /64).
    Ip(IpAddr),
    /// A caller in the same process (no socket): all of them share one key.
    Local,
}

/// How the peer of a call is found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerRule {
    /// Take the last address of `x-forwarded-for` (the client as the nearest proxy saw it) instead
    /// of the TCP peer. Only behind a proxy that sets the header: otherwise a caller picks its own
    /// key with every call.
    pub trust_forwarded_for: bool,
}

impl PeerRule {
    /// The peer of a call from `remote`, with the request's `x-forwarded-for` header.
    pub fn peer(self, remote: Option<SocketAddr>, forwarded_for: Option<&str>) -> Peer {
        let forwarded = || forwarded_for?.rsplit(',').next()?.trim().parse::<IpAddr>().ok();
        let ip = match self.trust_forwarded_for.then(forwarded).flatten() {
            Some(ip) => Some(ip),
            None => remote.map(|a| a.ip()),
        };
        match ip {
            Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => Peer::Ip(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    Peer::Ip(IpAddr::V6(Ipv6Addr::from(prefix)))
                }
            },
            Some(ip) => Peer::Ip(ip),
            None => Peer::Local,
        }
    }

    /// The peer of a tonic request.
    pub fn of<T>(self, request: &tonic::Request<T>) -> Peer {
        let forwarded = request.metadata().get("x-forwarded-for").and_then(|v| v.to_str().ok());
        self.peer(request.remote_addr(), forwarded)
    }
}

/// A call was refused; the peer may try again after `retry_after`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: Duration,
}

/// One limit, per peer. Clones share the state.
#[derive(Clone)]
pub struct PeerLimiter {
    name: &'static str,
    limit: RateLimit,
    state: Option<Arc<DefaultKeyedRateLimiter<Peer>>>,
}

impl std::fmt::Debug for PeerLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerLimiter").field("name", &self.name).field("limit", &self.limit).finish_non_exhaustive()
    }
}

impl PeerLimiter {
    /// How often [`PeerLimiter::housekeeping`] should run.
    pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(60);

    /// A limiter of `limit` per peer; its refusals count in
    /// `lanyard_rate_limited_total{limit="<name>"}`.
    pub fn new(name: &'static str, limit: RateLimit) -> Self {
        Self { name, limit, state: limit.quota().map(|q| Arc::new(DefaultKeyedRateLimiter::keyed(q))) }
    }

    /// Takes one call for `peer`, or says how long it must wait.
    pub fn check(&self, peer: Peer) -> Result<(), Limited> {
        let Some(state) = &self.state else { return Ok(()) };
        state.check_key(&peer).map_err(|not_until| {
            metrics::counter!("lanyard_rate_limited_total", "limit" => self.name).increment(1);
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            Limited { retry_after: wait.max(Duration::from_secs(1)) }
        })
    }

    /// Forgets peers whose state is as good as new (they would be allowed a full burst) and gives
    /// the memory back. Run every [`PeerLimiter::HOUSEKEEPING_INTERVAL`].
    pub fn housekeeping(&self) {
        if let Some(state) = &self.state {
            state.retain_recent();
            state.shrink_to_fit();
        }
    }

    /// Runs [`PeerLimiter::housekeeping`] every [`PeerLimiter::HOUSEKEEPING_INTERVAL`] until
    /// `stop` turns true (a service's worker).
    pub async fn run_housekeeping(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        if self.state.is_none() {
            return;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Self::HOUSEKEEPING_INTERVAL) => self.housekeeping(),
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// Peers remembered now.
    pub fn peers(&self) -> usize {
        self.state.as_ref().map_or(0, |s| s.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_per_peer_then_refusals_with_a_retry_hint() {
        let l = PeerLimiter::new("test", RateLimit::new(3, 1));
        let a = Peer::Ip(IpAddr::from([10, 0, 0, 1]));
        let b = Peer::Ip(IpAddr::from([10, 0, 0, 2]));
        assert!((0..3).all(|_| l.check(a).is_ok()));
        let refused = l.check(a).unwrap_err();
        assert!(refused.retry_after >= Duration::from_secs(1) && refused.retry_after <= Duration::from_secs(60));
        assert!(l.check(b).is_ok());
        assert_eq!(l.peers(), 2);
    }

    #[test]
    fn off_allows_everything() {
        let l = PeerLimiter::new("test", RateLimit::off());
        assert!((0..10_000).all(|_| l.check(Peer::Local).is_ok()));
    }

    #[test]
    fn housekeeping_forgets_peers_back_to_a_full_burst() {
        let l = PeerLimiter::new("test", RateLimit::new(5, 60_000));
        for i in 0..1000u32 {
            l.check(Peer::Ip(IpAddr::from(i.to_be_bytes()))).unwrap();
        }
        assert_eq!(l.peers(), 1000);
        std::thread::sleep(Duration::from_millis(20));
        l.housekeeping();
        assert_eq!(l.peers(), 0);
    }

    #[test]
    fn forwarded_for_only_when_trusted_and_ipv6_by_prefix() {
        let remote = Some(SocketAddr::from(([10, 0, 0, 9], 4000)));
        let header = Some("203.0.113.7, 198.51.100.2");
        let plain = PeerRule::default();
        assert_eq!(plain.peer(remote, header), Peer::Ip(IpAddr::from([10, 0, 0, 9])));
        let trusting = PeerRule { trust_forwarded_for: true };
        assert_eq!(trusting.peer(remote, header), Peer::Ip(IpAddr::from([198, 51, 100, 2])));
        assert_eq!(trusting.peer(remote, Some("garbage")), Peer::Ip(IpAddr::from([10, 0, 0, 9])));
        assert_eq!(trusting.peer(None, None), Peer::Local);
        let v6 = |s: &str| Some(SocketAddr::new(s.parse().unwrap(), 1));
        assert_eq!(plain.peer(v6("2001:db8:1:2:aaaa::1"), None), plain.peer(v6("2001:db8:1:2:bbbb::2"), None));
        assert_ne!(plain.peer(v6("2001:db8:1:2::1"), None), plain.peer(v6("2001:db8:1:3::1"), None));
        assert_eq!(plain.peer(v6("::ffff:10.0.0.9"), None), Peer::Ip(IpAddr::from([10, 0, 0, 9])));
    }
}
