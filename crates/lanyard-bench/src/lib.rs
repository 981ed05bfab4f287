//! The authorization benchmark: what one `Authorize` costs over loopback gRPC, against the floor of
//! a no-op `AuthorizationService` on the same machine. See BENCHMARKS.md.
//!
//! [`run`] starts Lanyard (tenancy, invitation and token in this process over fresh SQLite files,
//! revocation facts in Redis when one answers) and a fake OpenID provider, signs the members in
//! (`fixture`), starts the floor (`floor`), and drives both with the same load (`load`): closed
//! loop for the peak, then open loop at half of each one's peak. `extras` measures the in-process
//! check, revocation propagation and memory; `machine` says how busy other processes kept the
//! machine meanwhile, and `report` prints.

pub mod extras;
pub mod fixture;
pub mod floor;
pub mod load;
pub mod machine;
pub mod outside;
pub mod report;

use crate::extras::Sizes;
use crate::fixture::Fixture;
use crate::floor::Floor;
use crate::load::Load;
use crate::load::Outcome;
use crate::report::{LoadShape, Outside, Ratio, Report, Round, Setup, Target};

/// The permission every call checks; each member's role grants it.
pub const PERMISSION: &str = "members:read";

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where revocation facts live when it answers (else the in-process cache).
    pub redis_url: String,
    /// How much of the measurements beyond the load to run.
    pub sizes: Sizes,
    /// Members to sign in, each holding its own access token.
    pub members: usize,
    /// How many times each load runs on each target, taking turns.
    pub rounds: usize,
    /// The closed-loop load.
    pub closed: Load,
    /// The open-loop load (its rate is half of each target's closed-loop peak).
    pub open: Load,
}

/// Runs every measurement; `command` and `cores` go into the report as they are. Panics when any
/// answer is not `allowed=true`. Progress goes to stderr.
pub async fn run(options: Options, command: String, cores: usize) -> Report {
    let Options { redis_url, sizes, members, rounds, closed, open } = options;
    eprintln!("starting Lanyard and signing in {members} members...");
    let fixture = Fixture::start(members, PERMISSION, &redis_url).await;
    let requests = load::requests(&fixture.access_tokens, PERMISSION);

    // The floor answers what Lanyard answers, byte for byte the same size.
    let sample =
        fixture.app.authz.clone().authorize(requests[0].clone()).await.expect("Authorize answers").into_inner();
    assert!(sample.allowed, "a member's token is allowed {PERMISSION}: {sample:?}");
    let floor = Floor::start(sample).await;

    let floor_clients = load::connect(floor.addr, closed.channels).await;
    let lanyard_clients = load::connect(fixture.app.addr, closed.channels).await;

    // The machine is shared: the two targets take turns, round after round, and each one's median
    // round is reported, with every round's ratio beside it.
    let (mut floor_peaks, mut lanyard_peaks) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        eprintln!("closed loop, round {round} of {rounds}: floor, then Lanyard...");
        floor_peaks.push(load::closed_loop("floor", &floor_clients, &requests, closed).await);
        lanyard_peaks.push(load::closed_loop("Lanyard", &lanyard_clients, &requests, closed).await);
    }
    let floor_peak = median(&floor_peaks, |o| o.throughput_rps);
    let lanyard_peak = median(&lanyard_peaks, |o| o.throughput_rps);
    let outside = outside_load(&requests[0], floor.addr, fixture.app.addr, rounds, closed).await;

    let floor_rate = floor_peak.throughput_rps / 2.0;
    let lanyard_rate = lanyard_peak.throughput_rps / 2.0;
    let (mut floor_halves, mut lanyard_halves) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        eprintln!(
            "open loop at half peak, round {round} of {rounds}: floor ({floor_rate:.0}/s), then Lanyard ({lanyard_rate:.0}/s)..."
        );
        floor_halves.push(load::open_loop("floor", &floor_clients, &requests, open, floor_rate).await);
        lanyard_halves.push(load::open_loop("Lanyard", &lanyard_clients, &requests, open, lanyard_rate).await);
    }
    let floor_half = median(&floor_halves, |o| o.latency.p99_us);
    let lanyard_half = median(&lanyard_halves, |o| o.latency.p99_us);
    let rounds = (0..rounds)
        .map(|i| Round {
            throughput_ratio: lanyard_peaks[i].throughput_rps / floor_peaks[i].throughput_rps,
            floor_half_peak_p99_us: floor_halves[i].latency.p99_us,
            lanyard_half_peak_p99_us: lanyard_halves[i].latency.p99_us,
        })
        .collect();

    let extras = extras::measure_all(&fixture, PERMISSION, sizes).await;
    fixture.clean_up().await;

    let floor = Target {
        name: "floor (no-op Authorize)",
        peak: floor_peak,
        half_peak_rate_rps: floor_rate,
        half_peak: floor_half,
    };
    let lanyard = Target {
        name: "Lanyard Authorize",
        peak: lanyard_peak,
        half_peak_rate_rps: lanyard_rate,
        half_peak: lanyard_half,
    };
    Report {
        command,
        cores,
        setup: Setup {
            members,
            distinct_access_tokens: fixture.access_tokens.len(),
            permission: PERMISSION.into(),
            facts: fixture.store.describe(),
            add_members_s: fixture.add_members.as_secs_f64(),
            sign_ins_s: fixture.sign_ins.as_secs_f64(),
        },
        load: LoadShape {
            concurrency: closed.concurrency,
            channels: closed.channels,
            warmup_s: closed.warmup.as_secs_f64(),
            duration_s: closed.duration.as_secs_f64(),
            open_loop_warmup_s: open.warmup.as_secs_f64(),
            open_loop_duration_s: open.duration.as_secs_f64(),
        },
        ratio: Ratio::of(&lanyard, &floor),
        outside: outside
            .map(|(floor_rps, lanyard_rps)| Outside::new(floor_rps, lanyard_rps, floor_peak.throughput_rps)),
        rounds,
        floor,
        lanyard,
        extras,
    }
}

/// The same closed loop from h2load, both targets taking turns round after round: each one's median
/// round (requests per second), or why it could not run.
async fn outside_load(
    request: &lanyard_proto::authz::v1::AuthorizeRequest,
    floor: std::net::SocketAddr,
    lanyard: std::net::SocketAddr,
    rounds: usize,
    closed: Load,
) -> Result<(Vec<f64>, Vec<f64>), String> {
    let h2load = outside::H2load::new(&prost::Message::encode_to_vec(request), closed.warmup, closed.duration)?;
    let (mut floor_rps, mut lanyard_rps) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        eprintln!("h2load closed loop, round {round} of {rounds}: floor, then Lanyard...");
        for (addr, into) in [(floor, &mut floor_rps), (lanyard, &mut lanyard_rps)] {
            let run = h2load.run(addr).await?;
            if run.failed > 0 || run.succeeded == 0 {
                return Err(format!("h2load saw {} failed and {} succeeded requests", run.failed, run.succeeded));
            }
            into.push(run.throughput_rps);
        }
    }
    Ok((floor_rps, lanyard_rps))
}

/// Only the measurements beyond the load in `which` (`--only`), after the same setup: no load, no
/// floor, no h2load.
pub async fn run_only(options: Options, which: &[extras::Extra]) -> Vec<extras::Measurement> {
    eprintln!("starting Lanyard and signing in {} members...", options.members);
    let fixture = Fixture::start(options.members, PERMISSION, &options.redis_url).await;
    let measurements = extras::measure(&fixture, PERMISSION, options.sizes, which).await;
    fixture.clean_up().await;
    measurements
}

/// The outcome whose `key` is the median of `outcomes` (the upper one of an even count).
fn median(outcomes: &[Outcome], key: impl Fn(&Outcome) -> f64) -> Outcome {
    let mut sorted = outcomes.to_vec();
    sorted.sort_by(|a, b| key(a).total_cmp(&key(b)));
    sorted[sorted.len() / 2]
}
