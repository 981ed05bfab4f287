//! `lanyard-bench`: parses the flags, runs the benchmark, prints the report (or `--json`).

use std::time::Duration;

use clap::Parser;
use lanyard_bench::extras::{Extra, Sizes};
use lanyard_bench::load::Load;
use lanyard_bench::Options;

/// Measures Lanyard's Authorize against a no-op gRPC floor over loopback.
#[derive(Debug, Parser)]
#[command(name = "lanyard-bench", version)]
struct Args {
    /// Members to sign in, each holding its own access token.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    members: u32,
    /// How many times each load runs on each target, the two taking turns; the median round is
    /// reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
    /// Client tasks sending concurrently (closed loop).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    concurrency: u32,
    /// HTTP/2 connections the tasks share.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    channels: u32,
    /// Seconds of closed-loop load before measuring.
    #[arg(long, default_value_t = 2.0, value_parser = seconds)]
    warmup: f64,
    /// Seconds of measured closed-loop load.
    #[arg(long, default_value_t = 8.0, value_parser = positive_seconds)]
    duration: f64,
    /// Seconds of open-loop load before measuring.
    #[arg(long, default_value_t = 1.0, value_parser = seconds)]
    open_loop_warmup: f64,
    /// Seconds of measured open-loop load.
    #[arg(long, default_value_t = 5.0, value_parser = positive_seconds)]
    open_loop_duration: f64,
    /// Where revocation facts live, as in production; when nothing answers there, the in-process
    /// cache of the embedded default (and propagation is not measured). Keys go under a prefix of
    /// their own and are deleted at the end.
    #[arg(long, env = "LANYARD_BENCH_REDIS_URL", default_value = "redis://127.0.0.1:6379/9")]
    redis_url: String,
    /// Timed in-process checks with the token and its facts cached.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u32).range(1..=100_000_000))]
    check_calls: u32,
    /// Timed in-process checks of tokens seen for the first time.
    #[arg(long, default_value_t = 3_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    cold_calls: u32,
    /// Members removed one at a time for the propagation figures (at most --members).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    propagation_rounds: u32,
    /// Memberships cached in the token service's process for the memory figure.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    memberships: u32,
    /// Run only these measurements beyond the load (after the same setup, without the load,
    /// the floor or h2load); repeat or separate with commas.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Extra>,
    /// Install `lanyard serve`'s log subscriber first (JSON to stderr, `RUST_LOG` or else `info`),
    /// so that Lanyard's figures include what its logging costs at that level; without it, the
    /// process has no subscriber and spans and log lines cost nothing.
    #[arg(long)]
    serve_logging: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn seconds(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(s) if (0.0..=3600.0).contains(&s) => Ok(s),
        _ => Err(format!("{raw:?} is not a number of seconds from 0 to 3600")),
    }
}

fn positive_seconds(raw: &str) -> Result<f64, String> {
    match seconds(raw)? {
        s if s >= 0.001 => Ok(s),
        _ => Err(format!("{raw:?} is too short to measure: at least 0.001 seconds")),
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let _telemetry = args.serve_logging.then(|| lanyard::telemetry::init(lanyard::settings::LogFormat::Json));
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let cores = lanyard_bench::machine::cores();
    let closed = Load {
        concurrency: args.concurrency as usize,
        channels: args.channels as usize,
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
    };
    let open = Load {
        warmup: Duration::from_secs_f64(args.open_loop_warmup),
        duration: Duration::from_secs_f64(args.open_loop_duration),
        ..closed
    };
    let sizes = Sizes {
        check_calls: args.check_calls as usize,
        cold_calls: args.cold_calls as usize,
        propagation_rounds: args.propagation_rounds as usize,
        memberships: args.memberships as usize,
    };
    let options = Options {
        redis_url: args.redis_url,
        sizes,
        members: args.members as usize,
        rounds: args.rounds as usize,
        closed,
        open,
    };
    if !args.only.is_empty() {
        let measurements = lanyard_bench::run_only(options, &args.only).await;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&measurements).expect("the report serializes"));
        } else {
            println!(
                "Lanyard authorization benchmark, only {:?}\n  command   {command}\n  machine   {cores} cores",
                args.only
            );
            print!("{}", lanyard_bench::report::extras_text(&measurements));
        }
        return;
    }
    let report = lanyard_bench::run(options, command, cores).await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("the report serializes"));
    } else {
        print!("{}", report.to_text());
    }
}
