//! A service's background workers (mailer, sweeper, key rotation): started with a stop signal,
//! stopped together after the last RPC.

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Running background workers and the signal that stops them.
#[derive(Debug)]
pub struct Workers {
    name: &'static str,
    stop: watch::Sender<bool>,
    handles: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Workers of the service `name`, watching `stop` (they return once it turns true).
    pub fn new(name: &'static str, stop: watch::Sender<bool>, handles: Vec<JoinHandle<()>>) -> Self {
        Self { name, stop, handles }
    }

    /// Asks the workers to stop and waits for them; work in progress finishes first.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for h in self.handles {
            if let Err(e) = h.await {
                tracing::error!(error = %e, service = self.name, "a background worker panicked");
            }
        }
    }
}
