//! One server of a test (VictoriaMetrics, InfluxDB, Mosquitto, Prometheus) as a child process:
//! spawned, waited for until it answers, stopped with SIGTERM and waited for. Servers lose
//! acknowledged data on SIGKILL, so that is only the last resort of `Drop`, for one that
//! ignored SIGTERM for its grace period (the test is over by then).

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::{send_signal, sigterm_and_wait, wait_child_blocking};

pub struct ServerProcess {
    name: &'static str,
    child: Option<Child>,
    /// How long `Drop` waits after SIGTERM before it kills.
    drop_grace: Duration,
}

impl ServerProcess {
    pub fn new(name: &'static str, drop_grace: Duration) -> Self {
        ServerProcess {
            name,
            child: None,
            drop_grace,
        }
    }

    /// Spawns the server; `Err` says why it could not be.
    pub fn spawn(&mut self, cmd: &mut Command) -> Result<(), String> {
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawn {:?}: {e}", cmd.get_program()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Polls `ready` until it says yes. `Err` when the process exits first (it is then
    /// forgotten) or `within` passes: `what` names what did not happen.
    pub async fn wait_ready(
        &mut self,
        within: Duration,
        what: &str,
        mut ready: impl AsyncFnMut() -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!("exited with {status}"));
            }
            if self.child.is_none() {
                return Err("not started".into());
            }
            if ready().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("{what} within {} s", within.as_secs()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    /// SIGTERM, then wait for the exit. Panics with `log_tail()` if it has not exited
    /// `within`. No-op when not running.
    pub async fn stop(&mut self, within: Duration, log_tail: impl FnOnce() -> String) {
        if let Err(still) = sigterm_and_wait(&mut self.child, within).await {
            panic!(
                "{} did not exit within {} s of SIGTERM\n--- log tail ---\n{}",
                self.name,
                still.as_secs(),
                log_tail()
            );
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take()
            && let Ok(None) = child.try_wait()
        {
            send_signal(&child, libc::SIGTERM);
            if wait_child_blocking(&mut child, self.drop_grace).is_none() {
                eprintln!(
                    "{} ignored SIGTERM for {} s; killing it",
                    self.name,
                    self.drop_grace.as_secs()
                );
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
