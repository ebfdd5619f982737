//! systemd integration for `facilityd run` under `Type=notify` (see systemd/facilityd.service).
//!
//! - `READY=1` once the gateway is ready ([`Gateway::ready`]: config loaded, stores open, the API
//!   listening), so `systemctl start` returns, and units ordered after facilityd start, only then.
//! - `STOPPING=1` as soon as shutdown begins (SIGTERM), and at the latest when `run` returns.
//! - `WATCHDOG=1` every half `WATCHDOG_USEC` (`WatchdogSec=` in the unit), but only while the
//!   daemon is alive; see [`Liveness`] for what that means.
//!
//! All of it is off when `NOTIFY_SOCKET` is unset (not started by systemd with `Type=notify`):
//! no task is spawned and nothing is sent. The watchdog is off without `WATCHDOG_USEC`, or when
//! `WATCHDOG_PID` names another process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::device::DeviceSource;
use crate::gateway::Gateway;
use crate::settings::current::DeviceSet;

/// How often readiness is checked before `READY=1`.
const READY_POLL: Duration = Duration::from_millis(50);
/// The shortest stall a poller is allowed before the watchdog stops being fed.
const MIN_STALL: Duration = Duration::from_secs(60);
/// A poller is stalled after this many of its longest schedule periods without a poll.
const STALL_PERIODS: u32 = 4;

/// The notifications of one `facilityd run`. Dropping it does not send anything; call
/// [`SystemdNotifier::stopped`] when the gateway has returned.
pub struct SystemdNotifier {
    task: JoinHandle<()>,
    stopping_sent: Arc<AtomicBool>,
}

/// Starts the notifications for `gw` when run by systemd (`NOTIFY_SOCKET` set), else `None`.
/// `stop` is the shutdown token `gw.run` is given: when it fires, `STOPPING=1` is sent and the
/// watchdog is no longer fed (shutdown takes seconds, `WatchdogSec=` is 30 s).
pub fn start(gw: &Gateway, stop: CancellationToken) -> Option<SystemdNotifier> {
    std::env::var_os("NOTIFY_SOCKET")?;
    let watchdog = sd_notify::watchdog_enabled().filter(|d| !d.is_zero());
    let stopping_sent = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(notify_loop(
        gw.clone(),
        stop,
        watchdog,
        stopping_sent.clone(),
    ));
    Some(SystemdNotifier {
        task,
        stopping_sent,
    })
}

impl SystemdNotifier {
    /// The gateway has returned: stop the watchdog and make sure `STOPPING=1` was sent.
    pub fn stopped(self) {
        self.task.abort();
        send_stopping(&self.stopping_sent);
    }
}

/// A configuration reload starts: `RELOADING=1` with `MONOTONIC_USEC` (under systemd only).
pub fn reloading() {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[
            NotifyState::Reloading,
            now,
            NotifyState::Status("reloading the configuration"),
        ]),
        Err(_) => send(&[
            NotifyState::Reloading,
            NotifyState::Status("reloading the configuration"),
        ]),
    }
}

/// The reload is over, applied or rejected: `READY=1` and a status line (under systemd only).
pub fn reloaded(status: &str) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

fn send(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

fn send_stopping(sent: &AtomicBool) {
    if !sent.swap(true, Relaxed) {
        send(&[
            NotifyState::Stopping,
            NotifyState::Status("shutting down: flushing telemetry"),
        ]);
    }
}

async fn notify_loop(
    gw: Gateway,
    stop: CancellationToken,
    watchdog: Option<Duration>,
    stopping_sent: Arc<AtomicBool>,
) {
    // READY=1 once the gateway says so (or never, when it stops or fails first).
    let ready = async {
        while !gw.ready.load(Relaxed) {
            tokio::time::sleep(READY_POLL).await;
        }
    };
    tokio::select! {
        _ = stop.cancelled() => {
            send_stopping(&stopping_sent);
            return;
        }
        _ = ready => {}
    }
    let status = format!(
        "running: {} devices, API on {}",
        gw.settings.devices.len(),
        gw.api_addr
            .get()
            .map_or_else(|| gw.settings.http_listen.clone(), |a| a.to_string())
    );
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
    tracing::info!("notified systemd: ready");

    let Some(watchdog) = watchdog else {
        stop.cancelled().await;
        send_stopping(&stopping_sent);
        return;
    };
    tracing::info!(
        interval = %humantime::format_duration(watchdog),
        "systemd watchdog enabled"
    );
    let mut live = Liveness::new(&gw.current.get());
    let mut tick = tokio::time::interval(watchdog / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stalled_logged = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                send_stopping(&stopping_sent);
                return;
            }
            _ = tick.tick() => {}
        }
        let set = gw.current.get();
        if set.generation != live.generation {
            // A reload changed the devices: watch the new set (unchanged devices keep their
            // history, so a stall is not forgiven by a reload).
            live = live.follow(&set, Instant::now());
        }
        let checked = live.check(Instant::now()).and_then(|()| {
            // The telemetry log's writer thread ends only at shutdown; before that, its end
            // is a bug that a restart mends (accepted data is on disk).
            if gw.ready.load(std::sync::atomic::Ordering::Relaxed)
                && gw
                    .log_stats
                    .writer_running
                    .load(std::sync::atomic::Ordering::Relaxed)
                    == 0
            {
                Err(Stalled::LogWriter)
            } else {
                Ok(())
            }
        });
        match checked {
            Ok(()) => {
                stalled_logged = false;
                send(&[NotifyState::Watchdog]);
            }
            Err(stalled) => {
                if !stalled_logged {
                    tracing::error!(
                        stalled = %stalled,
                        "stopped working: no longer feeding the systemd watchdog (systemd will restart facilityd)"
                    );
                    stalled_logged = true;
                }
            }
        }
    }
}

/// What "alive" means for the watchdog.
///
/// 1. The tokio runtime answers: this check runs as a task on it, so a runtime whose workers
///    are all blocked (or whose timer driver is stuck) never gets here and the watchdog starves.
/// 2. Every Modbus poller keeps polling: each device's `polls` counter ([`DeviceStats`]) must
///    advance within `max(60 s, 4 x max(interval, probe_interval))`. The counter advances on
///    every due cycle, answered or not, including while the link is down (reconnects are
///    backed off without blocking the loop) and on the slow probe schedule of a silent device,
///    so a dead device or an unplugged adapter does not stop it; a link task that hangs or died
///    does. An overloaded bus runs late but still advances.
///
/// MQTT devices have no poll counter (they report when they like) and are not watched; the
/// rule engine, telemetry forwarder and API run on the same runtime as this check.
///
/// [`DeviceStats`]: crate::modbus::stats::DeviceStats
struct Liveness {
    /// Per Modbus device: its id, counter, allowed stall, last value and when it changed.
    devices: Vec<Watched>,
    /// The [`DeviceSet::generation`] watched.
    generation: u64,
}

struct Watched {
    id: String,
    stats: Arc<crate::modbus::stats::DeviceStats>,
    stall: Duration,
    last: u64,
    since: Instant,
}

impl Liveness {
    fn new(set: &DeviceSet) -> Self {
        Liveness {
            devices: Vec::new(),
            generation: u64::MAX,
        }
        .follow(set, Instant::now())
    }

    /// The devices of `set`, keeping what is known of those already watched.
    fn follow(mut self, set: &DeviceSet, now: Instant) -> Self {
        let devices = set
            .settings
            .devices
            .iter()
            .zip(&set.stats)
            .filter_map(|(d, stats)| match &d.source {
                DeviceSource::Modbus(m) => {
                    let stall = (d.interval.max(m.probe_interval) * STALL_PERIODS).max(MIN_STALL);
                    let known = self
                        .devices
                        .iter()
                        .position(|w| w.id == *d.id && Arc::ptr_eq(&w.stats, stats));
                    Some(match known {
                        Some(i) => {
                            let mut w = self.devices.swap_remove(i);
                            // A changed device may poll less often now: never less slack.
                            w.stall = w.stall.max(stall);
                            w
                        }
                        None => Watched {
                            id: d.id.to_string(),
                            stats: stats.clone(),
                            stall,
                            last: stats.polls.load(Relaxed),
                            since: now,
                        },
                    })
                }
                _ => None,
            })
            .collect();
        Liveness {
            devices,
            generation: set.generation,
        }
    }

    /// Ok when alive, else the device whose poller stalled.
    fn check(&mut self, now: Instant) -> Result<(), Stalled> {
        let mut stalled = None;
        for w in &mut self.devices {
            let polls = w.stats.polls.load(Relaxed);
            if polls != w.last {
                w.last = polls;
                w.since = now;
            } else if now.duration_since(w.since) > w.stall && stalled.is_none() {
                stalled = Some(w.id.clone());
            }
        }
        stalled.map_or(Ok(()), |id| Err(Stalled::Device(id)))
    }
}

/// What stopped working, when the watchdog is no longer fed (logged as `stalled`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum Stalled {
    /// A device's poller stopped polling: its id.
    #[error("{0}")]
    Device(String),
    /// The telemetry log's writer thread ended before shutdown.
    #[error("the telemetry log writer")]
    LogWriter,
}

/// A write past `RLIMIT_FSIZE` (`LimitFSIZE=`) raises SIGXFSZ, which kills a process by default.
/// The telemetry log treats a refused write like a full disk (reported, retried, polling goes
/// on), so the daemon ignores the signal and takes the `EFBIG` error instead.
pub fn ignore_file_size_signal() {
    // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions; it is done once,
    // at start-up, before any thread that could race on it.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// One malloc arena for the whole process (glibc). By default glibc gives each thread that
/// allocates its own arena; the gateway allocates almost only on its runtime worker, and the
/// arenas of its other threads (the telemetry log, the work-order store, blocking tasks) cost
/// about 2 MB of resident memory for a 1,000-device fleet while saving no contention worth
/// having. Done at start-up, before any other thread exists.
pub fn single_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::stats::DeviceStats;

    #[test]
    fn a_poller_that_stops_polling_is_reported_after_its_stall_window() {
        let stats = Arc::new(DeviceStats::default());
        let t0 = Instant::now();
        let mut live = Liveness {
            devices: vec![Watched {
                id: "PU-1".into(),
                stats: stats.clone(),
                stall: Duration::from_secs(60),
                last: 0,
                since: t0,
            }],
            generation: 0,
        };
        assert_eq!(live.check(t0 + Duration::from_secs(59)), Ok(()));
        stats.polls.fetch_add(1, Relaxed);
        assert_eq!(live.check(t0 + Duration::from_secs(100)), Ok(()));
        assert_eq!(live.check(t0 + Duration::from_secs(160)), Ok(()));
        assert_eq!(
            live.check(t0 + Duration::from_secs(161)),
            Err(Stalled::Device("PU-1".into()))
        );
        stats.polls.fetch_add(1, Relaxed);
        assert_eq!(live.check(t0 + Duration::from_secs(162)), Ok(()));
    }
}
