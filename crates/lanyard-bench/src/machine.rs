//! How much of the machine other processes took during a run (on a shared machine a figure means
//! little without it), and this process's memory, from Linux's `/proc`. Elsewhere both are
//! unknown (`None`).

/// CPU time so far, in clock ticks: all CPUs busy, all CPUs in total, and this process.
#[derive(Clone, Copy, Debug)]
pub struct CpuTimes {
    machine_busy: u64,
    machine_total: u64,
    own: u64,
}

impl CpuTimes {
    /// Reads the counters now.
    pub fn now() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        // cpu user nice system idle iowait irq softirq steal ...
        let ticks: Vec<u64> =
            stat.lines().next()?.split_whitespace().skip(1).take(8).map(|t| t.parse().ok()).collect::<Option<_>>()?;
        let [user, nice, system, idle, iowait, irq, softirq, steal] = ticks.try_into().ok()?;
        let machine_busy = user + nice + system + irq + softirq + steal;
        let own_stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The fields after the command name, which is in parentheses, start at the state (field 3);
        // utime and stime are fields 14 and 15.
        let fields: Vec<&str> = own_stat.rsplit_once(')')?.1.split_whitespace().collect();
        let own = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some(Self { machine_busy, machine_total: machine_busy + idle + iowait, own })
    }

    /// The cores other processes kept busy on average between `self` and `later`, of `cores`.
    pub fn others_cores(&self, later: &Self, cores: usize) -> Option<f64> {
        let total = later.machine_total.checked_sub(self.machine_total).filter(|t| *t > 0)?;
        let busy = later.machine_busy.saturating_sub(self.machine_busy);
        let own = later.own.saturating_sub(self.own);
        Some(busy.saturating_sub(own) as f64 / total as f64 * cores as f64)
    }
}

/// The cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map(usize::from).unwrap_or(1)
}

/// This process's resident memory, in bytes (Linux only).
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = status.lines().find_map(|line| line.strip_prefix("VmRSS:"))?.trim().strip_suffix("kB")?.trim();
    kib.parse::<u64>().ok().map(|k| k * 1024)
}
