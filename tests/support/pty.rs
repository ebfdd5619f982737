//! A serial line for tests: two pseudo-terminals joined by `socat` (Debian package `socat`,
//! installed by ./scripts/test.sh). Bytes written to one end come out of the other, at once:
//! a pty does not pace bytes at the baud rate, so a bus model paces on its own (the RTU
//! simulators do, see `facilityd::sim::SimBusSpec::pace`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

const SOCAT_MISSING: &str =
    "socat not found: install it with `apt-get install socat` (or run ./scripts/test.sh)";

/// Two linked ptys, reachable as `a()` and `b()` (symlinks to /dev/pts/N in a temp dir).
/// Stopping socat makes both disappear, like an unplugged USB adapter; `restart` brings them
/// back under the same paths (new /dev/pts numbers behind them).
pub struct PtyPair {
    child: Option<Child>,
    dir: TempDir,
    socat: PathBuf,
}

impl PtyPair {
    /// Starts socat and waits until both ends exist. Panics when socat is missing or does not
    /// come up within 10 s.
    pub async fn start() -> Self {
        let socat = super::find_binary("socat", &["/usr/bin/socat"])
            .unwrap_or_else(|| panic!("{SOCAT_MISSING}"));
        let dir = tempfile::Builder::new()
            .prefix("facilityd-pty-")
            .tempdir()
            .expect("temp dir");
        let mut pair = PtyPair {
            child: None,
            dir,
            socat,
        };
        pair.spawn().await;
        pair
    }

    /// One end (give it to the simulator, or the independent server).
    pub fn a(&self) -> PathBuf {
        self.dir.path().join("a")
    }

    /// The other end (give it to the gateway).
    pub fn b(&self) -> PathBuf {
        self.dir.path().join("b")
    }

    /// `rtu://<b>?<query>`, the gateway's URL for the `b` end.
    pub fn url_b(&self, query: &str) -> String {
        format!("rtu://{}?{query}", self.b().display())
    }

    async fn spawn(&mut self) {
        for end in [self.a(), self.b()] {
            let _ = std::fs::remove_file(end);
        }
        let log = std::fs::File::create(self.dir.path().join("socat.log")).expect("socat log");
        let child = Command::new(&self.socat)
            .arg(format!("pty,raw,echo=0,link={}", self.a().display()))
            .arg(format!("pty,raw,echo=0,link={}", self.b().display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn socat: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(exists(&self.a()) && exists(&self.b())) {
            assert!(
                Instant::now() < deadline,
                "socat did not create its ptys within 10 s: {}",
                super::read_text(&self.dir.path().join("socat.log"))
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops socat (SIGTERM): both ends disappear.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                super::send_signal(&child, libc::SIGTERM);
            }
            if super::wait_child(&mut child, Duration::from_secs(5))
                .await
                .is_none()
            {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for end in [self.a(), self.b()] {
            let _ = std::fs::remove_file(end);
        }
    }

    /// Starts socat again on the same paths.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }
}

/// The symlink exists and points at a live pty.
fn exists(p: &Path) -> bool {
    std::fs::metadata(p).is_ok()
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
