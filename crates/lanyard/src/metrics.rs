//! What `/metrics` says about every metric (its HELP text), the build, the process (`process_*`,
//! read from `/proc` at each scrape) and the database pools. The RPC metrics themselves are
//! recorded by `telemetry::RpcTrace`.

use std::fmt::Write as _;

use metrics::Unit;

/// The kind of a metric, for its `describe_*` call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only ever increases.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution in buckets.
    Histogram,
}

/// Every metric Lanyard records, with its HELP text: a metric recorded anywhere in the workspace
/// and missing here fails `every_recorded_metric_has_help`.
pub const METRICS: &[(&str, Kind, &str)] = &[
    ("lanyard_build_info", Kind::Gauge, "Always 1; the labels name the running build (version, git_sha)."),
    (
        "lanyard_rpc_requests_total",
        Kind::Counter,
        "RPCs handled, by service, method and gRPC code (canonical name, or TRANSPORT).",
    ),
    (
        "lanyard_rpc_duration_seconds",
        Kind::Histogram,
        "RPC latency from request to response headers, by service, method and gRPC code.",
    ),
    ("lanyard_database_errors_total", Kind::Counter, "Database errors, by service and kind."),
    (
        "lanyard_db_pool_connections",
        Kind::Gauge,
        "Open database connections of a service's pool, by state (idle, in_use).",
    ),
    ("lanyard_db_pool_max_connections", Kind::Gauge, "The most connections a service's database pool opens."),
    ("lanyard_org_seats", Kind::Gauge, "Seats of an organization by state (limit, active, reserved)."),
    (
        "lanyard_org_seats_unexported_total",
        Kind::Counter,
        "Seat updates not exported because the per-process bound on organizations was reached.",
    ),
    ("lanyard_cache_requests_total", Kind::Counter, "Cache reads by cache and result (hit, miss)."),
    (
        "lanyard_cache_errors_total",
        Kind::Counter,
        "Shared cache (Redis) failures, by service; readers fall back to the services of record.",
    ),
    (
        "lanyard_redis_up",
        Kind::Gauge,
        "Whether the shared cache (Redis) answered its last check: 1 or 0. Readiness does not follow it.",
    ),
    ("lanyard_authorize_decisions_total", Kind::Counter, "Authorize and BatchAuthorize decisions, by reason."),
    (
        "lanyard_authz_fallbacks_total",
        Kind::Counter,
        "Authorization decisions that needed the service of record, by result (answered, unavailable).",
    ),
    (
        "lanyard_authz_subscription_up",
        Kind::Gauge,
        "1 while the revocation invalidation subscription is up and the near cache is trusted, else 0.",
    ),
    (
        "lanyard_authz_invalidations_unacknowledged_total",
        Kind::Counter,
        "Revocations that did not hear every subscribed process acknowledge within the lease.",
    ),
    ("lanyard_authz_jwks_errors_total", Kind::Counter, "Failed fetches of the token service's JWKS by the authorizer."),
    ("lanyard_token_sign_ins_total", Kind::Counter, "Sign-ins (sessions started), by kind of upstream identity."),
    (
        "lanyard_token_refreshes_total",
        Kind::Counter,
        "Refresh-token redemptions, by whether the active organization switched.",
    ),
    (
        "lanyard_token_refresh_reuse_total",
        Kind::Counter,
        "Reuses of a spent refresh token (a theft signal; the session family is revoked).",
    ),
    ("lanyard_token_key_rotations_total", Kind::Counter, "Signing key rotations."),
    ("lanyard_rate_limited_total", Kind::Counter, "Calls refused RATE_LIMITED per peer, by limit."),
    (
        "lanyard_invitation_emails_total",
        Kind::Counter,
        "Invitation email delivery attempts, by transport and result (sent, retry, failed).",
    ),
    ("lanyard_invitation_outbox_backlog", Kind::Gauge, "Invitation emails waiting in the outbox."),
    ("lanyard_invitation_events_total", Kind::Counter, "Invitation changes, by action."),
    (
        "lanyard_connections_refused_total",
        Kind::Counter,
        "Connections closed on accept because the listener was at its connection limit, by listener.",
    ),
    ("lanyard_accept_errors_total", Kind::Counter, "Failed accepts (EMFILE, ENFILE, ...), by listener."),
    (
        "lanyard_tls_reloads_total",
        Kind::Counter,
        "Checks that found new TLS certificate and key files, by result: ok (now served) or error (kept the previous).",
    ),
    (
        "lanyard_tls_handshake_failures_total",
        Kind::Counter,
        "TLS handshakes that failed or missed the handshake deadline, by listener.",
    ),
];

/// Describes every metric (their `# HELP` lines) and sets `lanyard_build_info`. Called once, when
/// the recorder is installed.
pub fn describe() {
    for &(name, kind, help) in METRICS {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, Unit::Seconds, help),
        }
    }
    metrics::gauge!("lanyard_build_info", "version" => env!("CARGO_PKG_VERSION"), "git_sha" => GIT_SHA).set(1.0);
}

/// The commit the binary was built from: `LANYARD_GIT_SHA` at build time (the Dockerfile passes
/// its `REVISION`), else `unknown`.
pub const GIT_SHA: &str = match option_env!("LANYARD_GIT_SHA") {
    Some(sha) => sha,
    None => "unknown",
};

/// Records a service's database pool: open connections (idle, in use) and its maximum.
pub fn record_pool(service: &'static str, db: &lanyard_core::db::Database) {
    let open = db.pool.size() as usize;
    let idle = db.pool.num_idle().min(open);
    metrics::gauge!("lanyard_db_pool_connections", "service" => service, "state" => "idle").set(idle as f64);
    metrics::gauge!("lanyard_db_pool_connections", "service" => service, "state" => "in_use").set((open - idle) as f64);
    metrics::gauge!("lanyard_db_pool_max_connections", "service" => service)
        .set(f64::from(db.pool.options().get_max_connections()));
}

/// Appends the standard `process_*` metrics of the Prometheus client libraries, read from
/// `/proc` now (a scrape costs a few small file reads). Elsewhere than Linux it appends nothing.
pub fn render_process(out: &mut String) {
    let Some(p) = ProcessStats::read() else { return };
    let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n");
    };
    metric("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", p.cpu_seconds);
    metric("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", p.resident_bytes);
    metric("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", p.virtual_bytes);
    metric("process_open_fds", "gauge", "Number of open file descriptors.", p.open_fds);
    if let Some(max) = p.max_fds {
        metric("process_max_fds", "gauge", "Maximum number of open file descriptors.", max);
    }
    if let Some(start) = p.start_time_seconds {
        metric("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.", start);
    }
    metric("process_threads", "gauge", "Number of OS threads in the process.", p.threads);
}

/// Linux's USER_HZ, the unit of times in `/proc/<pid>/stat`: 100 on every architecture Lanyard
/// is built for.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

struct ProcessStats {
    cpu_seconds: f64,
    resident_bytes: f64,
    virtual_bytes: f64,
    open_fds: f64,
    max_fds: Option<f64>,
    start_time_seconds: Option<f64>,
    threads: f64,
}

impl ProcessStats {
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name (field 2) is in parentheses and may hold spaces: count after it.
        let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        };
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse::<f64>().ok()));
        let max_fds = std::fs::read_to_string("/proc/self/limits").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Max open files"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        });
        Some(Self {
            cpu_seconds: (field(14)? + field(15)?) / CLOCK_TICKS_PER_SECOND,
            resident_bytes: kib("VmRSS:")? * 1024.0,
            virtual_bytes: field(23)?,
            open_fds: std::fs::read_dir("/proc/self/fd").ok()?.count() as f64,
            max_fds,
            start_time_seconds: boot_time.zip(field(22)).map(|(boot, ticks)| boot + ticks / CLOCK_TICKS_PER_SECOND),
            threads: field(20)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every metric recorded anywhere in the workspace's crates is described here.
    #[test]
    fn every_recorded_metric_has_help() {
        let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let mut recorded = std::collections::BTreeSet::new();
        let mut stack = vec![crates.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() && !path.ends_with("target") {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for macro_ in ["counter!(\"", "gauge!(\"", "histogram!(\""] {
                        for (at, _) in text.match_indices(macro_) {
                            let rest = &text[at + macro_.len()..];
                            recorded.insert(rest[..rest.find('"').unwrap()].to_owned());
                        }
                    }
                }
            }
        }
        assert!(recorded.contains("lanyard_rpc_requests_total"), "the scan found the metrics: {recorded:?}");
        let described: Vec<&str> = METRICS.iter().map(|m| m.0).collect();
        let missing: Vec<_> = recorded.iter().filter(|m| !described.contains(&m.as_str())).collect();
        assert!(missing.is_empty(), "recorded without HELP text in lanyard::metrics::METRICS: {missing:?}");
    }

    #[test]
    fn process_metrics_come_from_proc() {
        let mut text = String::new();
        render_process(&mut text);
        if !cfg!(target_os = "linux") {
            return;
        }
        for name in
            ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "process_max_fds"]
        {
            assert!(text.contains(&format!("# HELP {name} ")), "{name} has no HELP:\n{text}");
            let value: f64 = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("no {name}:\n{text}"))
                .parse()
                .unwrap();
            assert!(value >= 0.0);
        }
        let resident: f64 =
            text.lines().find_map(|l| l.strip_prefix("process_resident_memory_bytes ")).unwrap().parse().unwrap();
        assert!(resident > 1024.0 * 1024.0, "a running test process holds more than 1 MiB: {resident}");
    }
}
