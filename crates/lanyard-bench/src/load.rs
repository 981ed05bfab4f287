//! The load generator: `concurrency` tasks calling `Authorize` over a few shared HTTP/2 channels,
//! rotating over the access tokens. Closed loop (each task sends its next call when the last
//! returns) finds the peak rate; open loop (each task on a fixed schedule) measures latency at a
//! chosen rate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use lanyard_proto::authz::v1 as apb;
use lanyard_proto::authz::v1::authorization_service_client::AuthorizationServiceClient;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tonic::transport::{Channel, Endpoint};

use crate::machine::{self, CpuTimes};

type Client = AuthorizationServiceClient<Channel>;

/// The shape of the load.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    /// Client tasks.
    pub concurrency: usize,
    /// HTTP/2 connections the tasks share, round robin.
    pub channels: usize,
    /// Calls before this are sent and checked but not measured.
    pub warmup: Duration,
    /// How long calls are measured.
    pub duration: Duration,
}

/// Latency percentiles, in microseconds.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

/// What one run measured.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Outcome {
    /// Calls measured (after the warm-up).
    pub calls: u64,
    /// Measured calls per second: those sent (closed loop) or due (open loop) in the measured window.
    pub throughput_rps: f64,
    pub latency: Latency,
    /// Cores other processes kept busy while calls were measured (Linux only): the noise.
    pub others_cores: Option<f64>,
}

/// Opens `channels` HTTP/2 connections to `addr`.
pub async fn connect(addr: SocketAddr, channels: usize) -> Vec<Client> {
    let mut clients = Vec::with_capacity(channels);
    for _ in 0..channels.max(1) {
        let channel = Endpoint::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect");
        clients.push(AuthorizationServiceClient::new(channel));
    }
    clients
}

/// The requests the tasks send: one per access token, each asking for `permission`.
pub fn requests(access_tokens: &[String], permission: &str) -> Arc<[apb::AuthorizeRequest]> {
    access_tokens
        .iter()
        .map(|token| apb::AuthorizeRequest {
            access_token: token.clone(),
            permission: permission.into(),
            organization_id: None,
        })
        .collect()
}

/// Every task as fast as the server answers: the peak rate and the latency at it.
pub async fn closed_loop(
    target: &str,
    clients: &[Client],
    requests: &Arc<[apb::AuthorizeRequest]>,
    load: Load,
) -> Outcome {
    let start = Instant::now();
    let window = Window { measure_from: start + load.warmup, until: start + load.warmup + load.duration };
    let tasks: Vec<_> = (0..load.concurrency)
        .map(|task| {
            let client = clients[task % clients.len()].clone();
            tokio::spawn(closed_task(client, requests.clone(), task, load.concurrency, window))
        })
        .collect();
    gather(target, tasks, window, load.duration).await
}

/// Calls on a fixed schedule, `rate` per second in all: each of `concurrency` tasks carries an
/// equal share, the tasks' schedules interleaved. A call due while its task still waits for the
/// previous answer is sent as soon as that answer arrives and timed from when it was due, so a
/// server that falls behind shows as latency rather than as fewer calls. The runtime's timer ticks
/// every millisecond, so calls due within one millisecond leave together: the arrivals are that
/// bursty, for both targets alike. (Pacing from a thread of its own, finer-grained, costs a third
/// busy thread on a 2-core machine, and the scheduler's preemptions then dominate the tail.)
pub async fn open_loop(
    target: &str,
    clients: &[Client],
    requests: &Arc<[apb::AuthorizeRequest]>,
    load: Load,
    rate: f64,
) -> Outcome {
    assert!(rate > 0.0, "an open-loop rate must be positive");
    let start = Instant::now();
    let window = Window { measure_from: start + load.warmup, until: start + load.warmup + load.duration };
    let period = Duration::from_secs_f64(load.concurrency as f64 / rate);
    let tasks: Vec<_> = (0..load.concurrency)
        .map(|task| {
            let client = clients[task % clients.len()].clone();
            let first = start + period.mul_f64(task as f64 / load.concurrency as f64);
            tokio::spawn(open_task(client, requests.clone(), task, load.concurrency, window, first, period))
        })
        .collect();
    gather(target, tasks, window, load.duration).await
}

/// Waits for the load tasks, checks every answer was allowed, and says how busy other processes
/// kept the machine while calls were measured.
async fn gather(target: &str, tasks: Vec<JoinHandle<Tally>>, window: Window, measured: Duration) -> Outcome {
    let cpu_before = tokio::spawn(async move {
        tokio::time::sleep_until(window.measure_from).await;
        CpuTimes::now()
    });
    let mut tally = Tally::new();
    for task in tasks {
        tally.merge(task.await.expect("a load task panicked"));
    }
    let cpu_after = CpuTimes::now();
    tally.assert_all_allowed(target);
    Outcome {
        others_cores: others_cores(cpu_before.await.expect("a CPU sample"), cpu_after),
        ..tally.outcome(measured)
    }
}

fn others_cores(before: Option<CpuTimes>, after: Option<CpuTimes>) -> Option<f64> {
    before?.others_cores(&after?, machine::cores())
}

#[derive(Clone, Copy)]
struct Window {
    measure_from: Instant,
    until: Instant,
}

async fn closed_task(
    mut client: Client,
    requests: Arc<[apb::AuthorizeRequest]>,
    task: usize,
    step: usize,
    window: Window,
) -> Tally {
    let mut tally = Tally::new();
    let mut next = task;
    loop {
        let sent = Instant::now();
        if sent >= window.until {
            return tally;
        }
        let answer = client.authorize(requests[next % requests.len()].clone()).await;
        tally.check(answer);
        if sent >= window.measure_from {
            tally.record(sent.elapsed());
        }
        next += step;
    }
}

async fn open_task(
    mut client: Client,
    requests: Arc<[apb::AuthorizeRequest]>,
    task: usize,
    step: usize,
    window: Window,
    first: Instant,
    period: Duration,
) -> Tally {
    let mut tally = Tally::new();
    let mut schedule = tokio::time::interval_at(first, period);
    // A late call is sent at once, and the calls due meanwhile right after it: the schedule holds.
    schedule.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut next = task;
    let mut previous_done = first;
    loop {
        let due = schedule.tick().await;
        if due >= window.until {
            return tally;
        }
        // Timed from when it was due if it waited for this task's previous call (the server's
        // backlog is its latency); from when it was sent if it found the task idle, so the
        // timer's lateness is not counted against the server.
        let sent = if previous_done > due { due } else { Instant::now() };
        let answer = client.authorize(requests[next % requests.len()].clone()).await;
        previous_done = Instant::now();
        tally.check(answer);
        if due >= window.measure_from {
            tally.record(previous_done - sent);
        }
        next += step;
    }
}

/// One task's counts, merged at the end.
struct Tally {
    latency_ns: Histogram<u64>,
    denied: u64,
    failed: u64,
    first_problem: Option<String>,
}

impl Tally {
    fn new() -> Self {
        // 1 ns to 60 s at three significant digits.
        let latency_ns = Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds");
        Self { latency_ns, denied: 0, failed: 0, first_problem: None }
    }

    fn check(&mut self, answer: Result<tonic::Response<apb::AuthorizeResponse>, tonic::Status>) {
        match answer {
            Ok(response) if response.get_ref().allowed => {}
            Ok(response) => {
                self.denied += 1;
                let reason = response.get_ref().reason().as_str_name();
                self.first_problem.get_or_insert_with(|| format!("allowed=false, reason {reason}"));
            }
            Err(status) => {
                self.failed += 1;
                self.first_problem.get_or_insert_with(|| format!("{:?}: {}", status.code(), status.message()));
            }
        }
    }

    fn record(&mut self, latency: Duration) {
        self.latency_ns.saturating_record(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }

    fn merge(&mut self, other: Tally) {
        self.latency_ns.add(&other.latency_ns).expect("histograms of the same bounds");
        self.denied += other.denied;
        self.failed += other.failed;
        if self.first_problem.is_none() {
            self.first_problem = other.first_problem;
        }
    }

    /// A benchmark of refusals or errors would measure the wrong thing: every answer, warm-up
    /// included, must be `allowed=true`.
    fn assert_all_allowed(&self, target: &str) {
        assert!(
            self.denied == 0 && self.failed == 0,
            "{target}: {} answers were allowed=false and {} calls failed (first: {}); the figures would measure errors",
            self.denied,
            self.failed,
            self.first_problem.as_deref().unwrap_or("-"),
        );
    }

    fn outcome(&self, window: Duration) -> Outcome {
        let us = |quantile: f64| self.latency_ns.value_at_quantile(quantile) as f64 / 1_000.0;
        let calls = self.latency_ns.len();
        Outcome {
            calls,
            others_cores: None,
            throughput_rps: calls as f64 / window.as_secs_f64(),
            latency: Latency {
                p50_us: us(0.5),
                p99_us: us(0.99),
                p999_us: us(0.999),
                max_us: self.latency_ns.max() as f64 / 1_000.0,
            },
        }
    }
}
