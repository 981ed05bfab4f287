//! The same closed-loop load from a tool outside this process: h2load (Debian's nghttp2-client),
//! one thread, `CONNECTIONS` connections × `STREAMS` streams, posting one gRPC-framed
//! `AuthorizeRequest`. It checks this benchmark's own generator: when the floor the own generator
//! reaches is under [`TRUSTED_SHARE`] of what h2load reaches on the same floor, the generator is the
//! bottleneck and its ratios say nothing about the server, so the report withholds them.
//!
//! h2load counts HTTP statuses, not gRPC ones (a refusal is HTTP 200 with `grpc-status` in the
//! trailers), so the body it sends is checked beforehand to be allowed by Lanyard with a real gRPC
//! call, and both targets answer every request with the same message.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde::Serialize;

/// h2load's connections.
pub const CONNECTIONS: usize = 16;
/// Concurrent streams per h2load connection.
pub const STREAMS: usize = 8;
/// The share of h2load's floor the own generator must reach for its ratios to be reported.
pub const TRUSTED_SHARE: f64 = 0.8;

/// The gRPC path both targets serve.
const AUTHORIZE_PATH: &str = "/lanyard.authz.v1.AuthorizationService/Authorize";

/// One h2load run.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Run {
    /// Requests per second over the measured time.
    pub throughput_rps: f64,
    /// Requests answered with HTTP 2xx.
    pub succeeded: u64,
    /// Requests that failed, errored or timed out.
    pub failed: u64,
}

/// h2load, found on the PATH.
#[derive(Debug)]
pub struct H2load {
    body: PathBuf,
    duration: Duration,
    warmup: Duration,
}

impl H2load {
    /// Prepares h2load to post `message` (an encoded `AuthorizeRequest`), or says why it cannot
    /// run (`make bench` installs it from Debian's packages).
    pub fn new(message: &[u8], warmup: Duration, duration: Duration) -> Result<Self, String> {
        let version = Command::new("h2load").arg("--version").output();
        if !version.is_ok_and(|o| o.status.success()) {
            return Err("h2load is not installed (Debian: apt-get install nghttp2-client; make bench does)".into());
        }
        let mut framed = Vec::with_capacity(5 + message.len());
        framed.push(0); // not compressed
        framed.extend_from_slice(&u32::try_from(message.len()).map_err(|e| e.to_string())?.to_be_bytes());
        framed.extend_from_slice(message);
        let body = std::env::temp_dir().join(format!("lanyard-bench-{}.grpc", std::process::id()));
        std::fs::write(&body, framed).map_err(|e| format!("writing {}: {e}", body.display()))?;
        Ok(Self { body, duration, warmup })
    }

    /// One closed-loop run against `addr`, off the async runtime (the servers run on it).
    pub async fn run(&self, addr: SocketAddr) -> Result<Run, String> {
        let mut command = Command::new("h2load");
        command
            .args(["-c", &CONNECTIONS.to_string(), "-m", &STREAMS.to_string(), "-t", "1"])
            .args(["-D", &format!("{}ms", self.duration.as_millis().max(1))])
            .arg(format!("--warm-up-time={}ms", self.warmup.as_millis()))
            .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
            .arg("-d")
            .arg(&self.body)
            .arg(format!("http://{addr}{AUTHORIZE_PATH}"));
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("running h2load: {e}"))?;
        let text = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            return Err(format!("h2load failed: {text}{}", String::from_utf8_lossy(&output.stderr)));
        }
        parse(&text).ok_or_else(|| format!("h2load's output was not understood:\n{text}"))
    }
}

impl Drop for H2load {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.body);
    }
}

/// Reads `finished in 8.00s, 41234.50 req/s, ...` and
/// `requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout`.
fn parse(text: &str) -> Option<Run> {
    let finished = text.lines().find_map(|l| l.strip_prefix("finished in "))?;
    let throughput_rps = finished.split(", ").nth(1)?.strip_suffix(" req/s")?.parse().ok()?;
    let requests = text.lines().find_map(|l| l.strip_prefix("requests: "))?;
    let count = |what: &str| -> Option<u64> {
        requests.split(", ").find_map(|part| part.strip_suffix(what)?.trim().parse().ok())
    };
    let failed = count(" failed")? + count(" errored")? + count(" timeout")?;
    Some(Run { throughput_rps, succeeded: count(" succeeded")?, failed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_h2loads_summary() {
        let text = "starting benchmark...\n\
            finished in 8.00s, 41234.50 req/s, 3.52MB/s\n\
            requests: 329876 total, 329876 started, 329876 done, 329870 succeeded, 4 failed, 1 errored, 1 timeout\n\
            status codes: 329876 2xx, 0 3xx, 0 4xx, 0 5xx\n";
        let run = parse(text).unwrap();
        assert_eq!(run.throughput_rps, 41234.5);
        assert_eq!((run.succeeded, run.failed), (329870, 6));
        assert!(parse("finished in 8.00s\n").is_none());
    }
}
