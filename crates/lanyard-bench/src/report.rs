//! The report: a table for people, or the same figures as JSON with `--json`.

use std::fmt::Write as _;

use serde::Serialize;

use crate::extras::Measurement;
use crate::load::Outcome;

/// Everything one run measured, and under which conditions.
#[derive(Debug, Serialize)]
pub struct Report {
    pub command: String,
    /// What `std::thread::available_parallelism` reports.
    pub cores: usize,
    pub setup: Setup,
    pub load: LoadShape,
    pub floor: Target,
    pub lanyard: Target,
    pub ratio: Ratio,
    /// The same load from h2load, and whether this benchmark's own generator keeps up with it.
    pub outside: Result<Outside, String>,
    /// Every round's figures, in the order run (`floor` and `lanyard` hold the median rounds).
    pub rounds: Vec<Round>,
    pub extras: Vec<Measurement>,
}

/// How the system under test was prepared.
#[derive(Debug, Serialize)]
pub struct Setup {
    pub members: usize,
    pub distinct_access_tokens: usize,
    pub permission: String,
    /// Where the revocation facts lived.
    pub facts: String,
    pub add_members_s: f64,
    pub sign_ins_s: f64,
}

/// The load both targets received.
#[derive(Debug, Serialize)]
pub struct LoadShape {
    pub concurrency: usize,
    pub channels: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub open_loop_warmup_s: f64,
    pub open_loop_duration_s: f64,
}

/// One target's figures.
#[derive(Debug, Serialize)]
pub struct Target {
    pub name: &'static str,
    /// Closed loop: the peak.
    pub peak: Outcome,
    /// The open-loop rate asked for: half of `peak.throughput_rps`.
    pub half_peak_rate_rps: f64,
    /// Open loop at that rate.
    pub half_peak: Outcome,
}

/// One round of both targets.
#[derive(Debug, Serialize)]
pub struct Round {
    /// Lanyard's peak throughput over the floor's in this round.
    pub throughput_ratio: f64,
    pub floor_half_peak_p99_us: f64,
    pub lanyard_half_peak_p99_us: f64,
}

/// Lanyard over the floor.
#[derive(Debug, Serialize)]
pub struct Ratio {
    /// Lanyard's peak throughput as a fraction of the floor's.
    pub throughput: f64,
    /// Lanyard's p99 at peak as a multiple of the floor's.
    pub p99: f64,
}

impl Ratio {
    pub fn of(lanyard: &Target, floor: &Target) -> Self {
        Self {
            throughput: lanyard.peak.throughput_rps / floor.peak.throughput_rps,
            p99: lanyard.peak.latency.p99_us / floor.peak.latency.p99_us,
        }
    }
}

/// The closed loop from h2load, outside this process.
#[derive(Debug, Serialize)]
pub struct Outside {
    /// Each round's floor throughput (req/s), in order.
    pub floor_rps: Vec<f64>,
    /// Each round's Lanyard throughput (req/s), in order.
    pub lanyard_rps: Vec<f64>,
    /// The median round of each.
    pub floor_median_rps: f64,
    pub lanyard_median_rps: f64,
    /// Lanyard's median over the floor's.
    pub throughput_ratio: f64,
    /// The floor this benchmark's own generator reached, over h2load's: under
    /// [`crate::outside::TRUSTED_SHARE`], the own generator is the bottleneck and its ratios are
    /// withheld.
    pub own_generator_share: f64,
}

impl Outside {
    pub fn new(floor_rps: Vec<f64>, lanyard_rps: Vec<f64>, own_floor_rps: f64) -> Self {
        let median = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (floor_median_rps, lanyard_median_rps) = (median(&floor_rps), median(&lanyard_rps));
        Self {
            throughput_ratio: lanyard_median_rps / floor_median_rps,
            own_generator_share: own_floor_rps / floor_median_rps,
            floor_rps,
            lanyard_rps,
            floor_median_rps,
            lanyard_median_rps,
        }
    }

    /// Whether the own generator reached enough of h2load's floor for its ratios to mean anything.
    pub fn own_generator_trusted(&self) -> bool {
        self.own_generator_share >= crate::outside::TRUSTED_SHARE
    }
}

impl Report {
    /// The report as a table.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let s = &self.setup;
        let l = &self.load;
        let _ = writeln!(out, "Lanyard authorization benchmark");
        let _ = writeln!(out, "  command   {}", self.command);
        let _ = writeln!(out, "  machine   {} cores", self.cores);
        let _ = writeln!(
            out,
            "  setup     {} members added in {:.1} s, signed in through ExchangeToken in {:.1} s: {} distinct access tokens",
            s.members, s.add_members_s, s.sign_ins_s, s.distinct_access_tokens
        );
        let _ = writeln!(out, "  facts     {}", s.facts);
        let _ = writeln!(
            out,
            "  load      Authorize(token_i, \"{}\") over {} HTTP/2 channels; {} tasks; closed loop {} s after {} s \
             warm-up; open loop {} s after {} s",
            s.permission,
            l.channels,
            l.concurrency,
            l.duration_s,
            l.warmup_s,
            l.open_loop_duration_s,
            l.open_loop_warmup_s
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<34}{:>12}{:>12}{:>12}{:>12}{:>12}{:>10}",
            "closed loop (peak)", "req/s", "p50 µs", "p99 µs", "p99.9 µs", "max µs", "others"
        );
        for t in [&self.floor, &self.lanyard] {
            let (o, lat) = (&t.peak, &t.peak.latency);
            let _ = writeln!(
                out,
                "  {:<32}{:>12.0}{:>12.1}{:>12.1}{:>12.1}{:>12.1}{:>10}",
                t.name,
                o.throughput_rps,
                lat.p50_us,
                lat.p99_us,
                lat.p999_us,
                lat.max_us,
                others(o)
            );
        }
        let trusted = self.outside.as_ref().map_or(true, Outside::own_generator_trusted);
        if trusted {
            let _ = writeln!(
                out,
                "  {:<32}{:>11.2}x{:>12}{:>11.2}x",
                "Lanyard / floor", self.ratio.throughput, "", self.ratio.p99
            );
        } else {
            let _ = writeln!(out, "  Lanyard / floor: withheld: this generator is the bottleneck (see h2load below)");
        }
        let _ = writeln!(out);
        match &self.outside {
            Ok(o) => {
                let _ = writeln!(
                    out,
                    "closed loop from h2load (-c {} -m {} -t 1, same durations), req/s per round",
                    crate::outside::CONNECTIONS,
                    crate::outside::STREAMS
                );
                let rounds = |v: &[f64]| v.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ");
                let _ = writeln!(
                    out,
                    "  {:<32}{:>12.0}   rounds: {}",
                    "floor (no-op Authorize)",
                    o.floor_median_rps,
                    rounds(&o.floor_rps)
                );
                let _ = writeln!(
                    out,
                    "  {:<32}{:>12.0}   rounds: {}",
                    "Lanyard Authorize",
                    o.lanyard_median_rps,
                    rounds(&o.lanyard_rps)
                );
                let _ = writeln!(out, "  {:<32}{:>11.2}x", "Lanyard / floor", o.throughput_ratio);
                let _ = writeln!(
                    out,
                    "  this benchmark's own generator reached {:.2}x h2load's floor ({})",
                    o.own_generator_share,
                    if o.own_generator_trusted() { "trusted" } else { "the bottleneck: its ratios are withheld" }
                );
            }
            Err(why) => {
                let _ = writeln!(out, "closed loop from h2load: not measured: {why}");
                let _ = writeln!(
                    out,
                    "  (this benchmark's own generator is unchecked: its ratios may be the generator's limit)"
                );
            }
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<34}{:>12}{:>12}{:>12}{:>12}{:>12}{:>10}",
            "open loop at half peak", "asked/s", "sent/s", "p50 µs", "p99 µs", "p99.9 µs", "others"
        );
        for t in [&self.floor, &self.lanyard] {
            let (o, lat) = (&t.half_peak, &t.half_peak.latency);
            let _ = writeln!(
                out,
                "  {:<32}{:>12.0}{:>12.0}{:>12.1}{:>12.1}{:>12.1}{:>10}",
                t.name,
                t.half_peak_rate_rps,
                o.throughput_rps,
                lat.p50_us,
                lat.p99_us,
                lat.p999_us,
                others(o)
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "every round (the tables show each target's median round)");
        for (i, r) in self.rounds.iter().enumerate() {
            let _ = writeln!(
                out,
                "  round {}: peak Lanyard / floor {:.2}x; p99 at half peak: floor {:.1} µs, Lanyard {:.1} µs",
                i + 1,
                r.throughput_ratio,
                r.floor_half_peak_p99_us,
                r.lanyard_half_peak_p99_us
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "other measurements");
        out.push_str(&extras_text(&self.extras));
        let _ = writeln!(out);
        let _ = writeln!(out, "others: cores that other processes kept busy while the calls were measured.");
        let _ = writeln!(out, "Every answer of every run, warm-ups included, was allowed=true.");
        out
    }
}

/// The measurements beyond the load, one figure a line.
pub fn extras_text(extras: &[Measurement]) -> String {
    let mut out = String::new();
    for m in extras {
        match &m.not_measured {
            Some(why) => {
                let _ = writeln!(out, "  {}: not measured: {why}", m.name);
            }
            None => {
                let _ = writeln!(out, "  {}", m.name);
                for f in &m.figures {
                    let _ = writeln!(out, "    {:<62}{:>12} {}", f.name, f.value, f.unit);
                }
            }
        }
    }
    out
}

fn others(outcome: &Outcome) -> String {
    outcome.others_cores.map_or_else(|| "unknown".into(), |cores| format!("{cores:.2}"))
}
