//! The measurements beyond the load, each against a baseline measured in the same run:
//!
//! - the in-process `lanyard-authz` check, as an internal service runs it: with the token and its
//!   facts cached (against a bare hash-map lookup of the token text) and on first sight of a token
//!   (against the bare signature and claims verification);
//! - revocation propagation: a member removed through Lanyard, to the first denial of their token
//!   by another process's authorizer (its own Redis connections, near cache and subscription),
//!   against a bare Redis round trip;
//! - the memory a million cached memberships take in the token service's process, against the
//!   bytes of the facts themselves.
//!
//! A measurement that cannot run here says why instead of printing figures.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use hdrhistogram::Histogram;
use lanyard_authz::{Authorizer, Decision, FactKey, Facts, Fallback, JwksKeys, KeySource};
use lanyard_core::cache::Versioned;
use lanyard_core::{OrganizationId, Permission, Timestamp, UserId};
use lanyard_proto::tenancy::v1 as tpb;
use lanyard_testkit::app::op;
use serde::Serialize;

use crate::fixture::{FactStore, Fixture, Subscribed};
use crate::machine;

/// One figure of a measurement: `name` is `value` `unit`.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
}

/// A measurement by name, with its figures, or why it was not measured.
#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    pub name: &'static str,
    pub figures: Vec<Figure>,
    pub not_measured: Option<String>,
}

/// How much of each measurement to run.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// Timed in-process checks with everything cached.
    pub check_calls: usize,
    /// Timed first-sight checks (each a token the authorizer has not seen).
    pub cold_calls: usize,
    /// Members removed, one at a time, for the propagation figures.
    pub propagation_rounds: usize,
    /// Memberships put into the token service's cache for the memory figure.
    pub memberships: usize,
}

/// The measurements beyond the load, each of which `--only` can run alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Extra {
    /// The in-process check, cached and on first sight.
    Check,
    /// Revocation propagation between two processes.
    Propagation,
    /// The memory of a million cached memberships.
    Memory,
}

/// Every measurement, in report order. Propagation removes members, so it runs after the check.
pub async fn measure_all(fixture: &Fixture, permission: &str, sizes: Sizes) -> Vec<Measurement> {
    measure(fixture, permission, sizes, &[Extra::Check, Extra::Propagation, Extra::Memory]).await
}

/// The measurements in `which`, in report order.
pub async fn measure(fixture: &Fixture, permission: &str, sizes: Sizes, which: &[Extra]) -> Vec<Measurement> {
    let permission = [Permission::parse(permission).expect("the benchmark's permission is valid")];
    let service = Service::start(fixture).await;
    let mut measurements = Vec::new();
    if which.contains(&Extra::Check) {
        eprintln!("in-process check: {} cached, {} cold...", sizes.check_calls, sizes.cold_calls);
        let check = in_process_check(fixture, &service, &permission, sizes).await;
        measurements.push(measured("in-process lanyard-authz check per call", Ok(check)));
    }
    if which.contains(&Extra::Propagation) {
        eprintln!("revocation propagation: {} removals...", sizes.propagation_rounds);
        let propagation = revocation_propagation(fixture, &service, &permission, sizes.propagation_rounds).await;
        measurements.push(measured("revocation propagation between two processes", propagation));
    }
    if which.contains(&Extra::Memory) {
        eprintln!("memory: {} cached memberships...", sizes.memberships);
        let memory = cached_memberships_memory(&fixture.facts.facts, sizes.memberships).await;
        measurements.push(measured("memory of the token service's process with cached memberships", memory));
    }
    measurements
}

fn measured(name: &'static str, figures: Result<Vec<Figure>, String>) -> Measurement {
    match figures {
        Ok(figures) => Measurement { name, figures, not_measured: None },
        Err(why) => Measurement { name, figures: Vec::new(), not_measured: Some(why) },
    }
}

fn figure(name: impl Into<String>, value: f64, unit: &'static str) -> Figure {
    Figure { name: name.into(), value: (value * 1000.0).round() / 1000.0, unit }
}

/// An internal service's authorizer, set up as `lanyard-authz` is used outside Lanyard: keys from
/// the published JWKS over HTTP, facts of its own (with Redis: its own connections, near cache and
/// subscription), and the token service's `BatchAuthorize` when the facts cannot answer.
struct Service {
    authorizer: Authorizer,
    keys: Arc<JwksKeys>,
    facts: Facts,
    _subscribed: Option<Subscribed>,
}

impl Service {
    async fn start(fixture: &Fixture) -> Self {
        let url = format!("http://{}/.well-known/jwks.json", fixture.app.http_addr);
        let keys = Arc::new(JwksKeys::fetch(&url).await.expect("the token service publishes its JWKS"));
        // The embedded default has one cache per process: a service in Lanyard's process shares it.
        let subscribed = match fixture.store.connect().await {
            Some(cache) => Some(Subscribed::start(Facts::new(cache)).await),
            None => None,
        };
        let facts = subscribed.as_ref().map_or_else(|| fixture.facts.facts.clone(), |s| s.facts.clone());
        let authorizer = Self::authorizer(fixture, keys.clone(), facts.clone());
        Self { authorizer, keys, facts, _subscribed: subscribed }
    }

    /// A fresh authorizer (nothing verified yet) on the same keys and facts.
    fn authorizer(fixture: &Fixture, keys: Arc<JwksKeys>, facts: Facts) -> Authorizer {
        let audience = fixture.app.parts.access_tokens.audience();
        Authorizer::new(keys, audience, facts, Fallback::Remote(fixture.app.authz.clone()))
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// p50, p99 and mean of `h` (nanoseconds) as figures in `unit` (`µs` or `ms`).
fn percentiles(what: &str, h: &Histogram<u64>, unit: &'static str) -> Vec<Figure> {
    let scale = if unit == "ms" { 1e6 } else { 1e3 };
    vec![
        figure(format!("{what} p50"), h.value_at_quantile(0.5) as f64 / scale, unit),
        figure(format!("{what} p99"), h.value_at_quantile(0.99) as f64 / scale, unit),
        figure(format!("{what} mean"), h.mean() / scale, unit),
    ]
}

async fn in_process_check(fixture: &Fixture, service: &Service, wanted: &[Permission], sizes: Sizes) -> Vec<Figure> {
    let tokens = &fixture.access_tokens;
    for token in tokens {
        let outcome = service.authorizer.check(token, None, wanted).await.expect("the check answers");
        assert!(outcome.all_allowed(), "a member's token is allowed: {outcome:?}");
    }

    // Cached: the verified token and its facts are in memory.
    let mut hit = histogram();
    for i in 0..sizes.check_calls {
        let token = &tokens[i % tokens.len()];
        let started = Instant::now();
        let outcome = service.authorizer.check(black_box(token), None, wanted).await;
        hit.saturating_record(nanos(started.elapsed()));
        assert!(outcome.is_ok_and(|o| o.all_allowed()), "a cached check is allowed");
    }
    // Its floor: finding the token's text in a hash map, timed the same way.
    let map: HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
    let mut lookup = histogram();
    for i in 0..sizes.check_calls {
        let token = tokens[i % tokens.len()].as_str();
        let started = Instant::now();
        let found = map.get(black_box(token));
        lookup.saturating_record(nanos(started.elapsed()));
        assert_eq!(found, Some(&(i % tokens.len())));
    }

    // Cold: a fresh authorizer per pass over the tokens, so each check verifies its token first.
    let mut cold = histogram();
    let mut verify = histogram();
    let audience = fixture.app.parts.access_tokens.audience();
    for pass in 0..sizes.cold_calls.div_ceil(tokens.len()) {
        let authorizer = Service::authorizer(fixture, service.keys.clone(), service.facts.clone());
        for token in tokens.iter().take(sizes.cold_calls - pass * tokens.len()) {
            let started = Instant::now();
            let outcome = authorizer.check(black_box(token), None, wanted).await;
            cold.saturating_record(nanos(started.elapsed()));
            assert!(outcome.is_ok_and(|o| o.all_allowed()), "a first-sight check is allowed");

            // Its floor: the signature and claims verification alone.
            let started = Instant::now();
            let now = Timestamp::now();
            let verified =
                lanyard_authz::token::verify(black_box(token), &audience, now, |kid| service.keys.key(kid, now));
            verify.saturating_record(nanos(started.elapsed()));
            assert!(verified.is_ok(), "the token verifies");
        }
    }

    let mut figures = percentiles("cached check", &hit, "µs");
    figures.extend(percentiles("floor: hash-map lookup of the token", &lookup, "µs"));
    figures.push(figure("cached check / floor (p50)", ratio(&hit, &lookup), "x"));
    figures.extend(percentiles("first-sight check", &cold, "µs"));
    figures.extend(percentiles("floor: verify signature and claims only", &verify, "µs"));
    figures.push(figure("first-sight check / floor (p50)", ratio(&cold, &verify), "x"));
    figures
}

fn ratio(a: &Histogram<u64>, b: &Histogram<u64>) -> f64 {
    a.value_at_quantile(0.5) as f64 / b.value_at_quantile(0.5).max(1) as f64
}

/// Removes members one at a time through Lanyard while the service's authorizer checks each
/// one's token in a loop; the figure is from sending `RemoveMember` to the loop's first denial.
async fn revocation_propagation(
    fixture: &Fixture,
    service: &Service,
    wanted: &[Permission],
    rounds: usize,
) -> Result<Vec<Figure>, String> {
    if let FactStore::Embedded = fixture.store {
        return Err("needs Redis: processes share revocations through it (none answered)".into());
    }
    let rounds = rounds.min(fixture.access_tokens.len());
    let mut propagation = histogram();
    let mut remove_latency = histogram();
    let mut allowed_after_return = 0u64;
    let first = fixture.access_tokens.len() - rounds;
    for (token, user_id) in fixture.access_tokens[first..].iter().zip(&fixture.user_ids[first..]) {
        let watching = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (authorizer, token, wanted, watching) =
                (service.authorizer.clone(), token.clone(), wanted.to_vec(), watching.clone());
            tokio::spawn(async move {
                loop {
                    let outcome = authorizer.check(&token, None, &wanted).await;
                    let at = Instant::now();
                    match outcome {
                        Ok(o) if o.all_allowed() => watching.store(true, Ordering::SeqCst),
                        Ok(o) => return (at, Ok(o.token)),
                        Err(e) => return (at, Err(e.to_string())),
                    }
                    tokio::task::yield_now().await;
                }
            })
        };
        while !watching.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }

        let sent = Instant::now();
        let request = tpb::RemoveMemberRequest {
            organization_id: fixture.organization_id.clone(),
            user_id: user_id.clone(),
            ..Default::default()
        };
        fixture.app.tenancy.clone().remove_member(op(request)).await.map_err(|s| format!("RemoveMember: {s:?}"))?;
        let returned = Instant::now();
        let after = service.authorizer.check(token, None, wanted).await.map_err(|e| e.to_string())?;
        if after.all_allowed() {
            allowed_after_return += 1;
        }
        let (denied_at, decision) = watcher.await.expect("the watching task");
        match decision {
            Ok(Decision::NotAMember | Decision::MembershipChanged) => {}
            other => return Err(format!("a removed member's token was refused with {other:?}")),
        }
        propagation.saturating_record(nanos(denied_at.saturating_duration_since(sent)));
        remove_latency.saturating_record(nanos(returned - sent));
    }

    // The floor: a bare Redis round trip on the service's connection.
    let mut ping = histogram();
    for _ in 0..rounds.max(100) * 10 {
        let started = Instant::now();
        service.facts.cache().ping().await.map_err(|e| format!("PING: {e}"))?;
        ping.saturating_record(nanos(started.elapsed()));
    }

    let mut figures = percentiles("RemoveMember sent -> first denial on the other process", &propagation, "ms");
    figures.push(figure("  max", propagation.max() as f64 / 1e6, "ms"));
    figures.extend(percentiles("RemoveMember round trip", &remove_latency, "ms"));
    figures.extend(percentiles("floor: bare Redis round trip (PING)", &ping, "ms"));
    figures.push(figure("propagation / Redis round trip (p50)", ratio(&propagation, &ping), "x"));
    figures.push(figure("members removed", rounds as f64, "members"));
    figures.push(figure("  checks allowed after their RemoveMember returned", allowed_after_return as f64, "checks"));
    Ok(figures)
}

/// How many fills and reads are in flight at once while caching the memberships.
const FILL_CONCURRENCY: usize = 64;

/// Puts `count` memberships (1,000 per organization) into `facts` the way the token service
/// caches them (filled from the owner after a miss, then read: into the near cache with Redis,
/// into the in-process cache otherwise) and reports the growth of the process's resident memory.
async fn cached_memberships_memory(facts: &Facts, count: usize) -> Result<Vec<Figure>, String> {
    let organizations: Vec<OrganizationId> = (0..count.div_ceil(1000)).map(|_| OrganizationId::new()).collect();
    let keys: Vec<FactKey> = (0..count).map(|i| FactKey::Membership(organizations[i / 1000], UserId::new())).collect();
    let fact = Versioned { version: 1, value: lanyard_authz::facts::value::MEMBER_ACTIVE.into() };
    let before_near = facts.near_len();
    let before = machine::resident_bytes().ok_or("resident memory is only known on Linux")?;

    let started = Instant::now();
    let filled = stream::iter(&keys)
        .map(|key| facts.fill(key, &fact))
        .buffer_unordered(FILL_CONCURRENCY)
        .filter(|r| std::future::ready(r.is_err()))
        .count()
        .await;
    let fill_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let missing = stream::iter(&keys)
        .map(|key| facts.read(key))
        .buffer_unordered(FILL_CONCURRENCY)
        .filter(|r| std::future::ready(!matches!(r, Ok(Some(v)) if v.version == 1)))
        .count()
        .await;
    let read_s = started.elapsed().as_secs_f64();
    if filled + missing > 0 {
        return Err(format!("{filled} fills failed and {missing} reads missed"));
    }

    let after = machine::resident_bytes().ok_or("resident memory is only known on Linux")?;
    let held = facts.near_len().saturating_sub(before_near);
    let grown = after.saturating_sub(before) as f64;
    // What the facts are: the key (two 16-byte ids), the version and the value's text.
    let payload = (2 * 16 + 8 + fact.value.len()) as f64;
    let mut figures = vec![figure("memberships cached", count as f64, "memberships")];
    if facts.cache().redis_client().is_some() {
        figures.push(figure("  of which in the near cache", held as f64, "memberships"));
    }
    figures.extend([
        figure("resident memory before", before as f64 / 1_048_576.0, "MiB"),
        figure("resident memory after", after as f64 / 1_048_576.0, "MiB"),
        figure("growth", grown / 1_048_576.0, "MiB"),
        figure("growth per membership", grown / count as f64, "bytes"),
        figure("floor: the fact itself (ids, version, value)", payload, "bytes"),
        figure("growth per membership / floor", grown / count as f64 / payload, "x"),
        figure("time to fill the shared cache", fill_s, "s"),
        figure("time to read them all into this process", read_s, "s"),
    ]);
    drop(black_box(keys));
    Ok(figures)
}
