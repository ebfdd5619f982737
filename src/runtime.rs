//! The running gateway: pollers, telemetry pipeline and their orderly shutdown.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{DeviceSource, Settings};
use crate::modbus::poller::{LinkPoller, PolledDevice, RecordSink, group_by_link};
use crate::modbus::stats::DeviceStats;
use crate::model::{Record, Value};
use crate::telemetry::influx::{InfluxWriter, LineWriter};
use crate::telemetry::line::LineEncoder;
use crate::telemetry::pipeline::{BatchQueue, Batcher, Forwarder, TelemetryStats};

/// Capacity of the poller-to-telemetry channel, in records.
const RECORD_CHANNEL: usize = 65_536;

/// The latest good value of every point, and each device's status.
#[derive(Debug, Default)]
pub struct LatestValues {
    inner: Mutex<Vec<DeviceLatest>>,
}

#[derive(Debug, Default, Clone)]
pub struct DeviceLatest {
    /// (value, timestamp ns) per profile point.
    pub points: Vec<Option<(Value, i64)>>,
    pub online: Option<bool>,
    pub last_poll_ms: f64,
}

impl LatestValues {
    fn new(sizes: impl Iterator<Item = usize>) -> Self {
        LatestValues {
            inner: Mutex::new(
                sizes
                    .map(|n| DeviceLatest {
                        points: vec![None; n],
                        ..Default::default()
                    })
                    .collect(),
            ),
        }
    }

    fn update(&self, rec: &Record) {
        let mut all = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match rec {
            Record::Reading(r) => {
                if let Some(d) = all.get_mut(r.device) {
                    for (i, v) in &r.values {
                        if let Some(slot) = d.points.get_mut(*i) {
                            *slot = Some((v.clone(), r.timestamp_ns));
                        }
                    }
                }
            }
            Record::Status(s) => {
                if let Some(d) = all.get_mut(s.device) {
                    d.online = Some(s.online);
                    if s.poll_ms > 0.0 {
                        d.last_poll_ms = s.poll_ms;
                    }
                }
            }
        }
    }

    /// A copy of one device's latest values.
    pub fn device(&self, i: usize) -> Option<DeviceLatest> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(i)
            .cloned()
    }
}

/// Handles to the running gateway's shared state.
#[derive(Clone)]
pub struct Gateway {
    pub settings: Arc<Settings>,
    /// Per device, in configuration order.
    pub device_stats: Vec<Arc<DeviceStats>>,
    pub telemetry: Arc<TelemetryStats>,
    pub latest: Arc<LatestValues>,
}

/// Options the caller can set on top of the configuration.
#[derive(Default)]
pub struct RunOptions {
    /// Replaces the InfluxDB writer (used by `demo` to show what would be written).
    pub writer: Option<Arc<dyn LineWriter>>,
    /// How long shutdown may take to flush telemetry.
    pub flush_timeout: Option<Duration>,
}

impl Gateway {
    pub fn new(settings: Settings) -> Self {
        let settings = Arc::new(settings);
        let device_stats = settings
            .devices
            .iter()
            .map(|_| Arc::new(DeviceStats::default()))
            .collect();
        let latest = Arc::new(LatestValues::new(
            settings.devices.iter().map(|d| d.profile.points.len()),
        ));
        Gateway {
            settings,
            device_stats,
            telemetry: Arc::new(TelemetryStats::default()),
            latest,
        }
    }

    /// Runs until `shutdown` fires, then stops polling, flushes telemetry (for at most
    /// `flush_timeout`, default 4 s) and returns.
    pub async fn run(&self, shutdown: CancellationToken, opts: RunOptions) -> anyhow::Result<()> {
        let s = &self.settings;
        let (tx, rx) = mpsc::channel::<Record>(RECORD_CHANNEL);
        let sink = RecordSink {
            tx,
            dropped: self.telemetry.records_dropped.clone(),
        };

        let mut polled = Vec::new();
        for (i, d) in s.devices.iter().enumerate() {
            match &d.source {
                DeviceSource::Modbus(_) => {
                    if let Some(p) = PolledDevice::new(i, d.clone(), self.device_stats[i].clone()) {
                        polled.push(p);
                    }
                }
                DeviceSource::Mqtt { .. } => {
                    warn!(device = %d.id, "MQTT devices are not read by this version; not polled")
                }
            }
        }
        let poll_stop = shutdown.child_token();
        let mut pollers = JoinSet::new();
        for (link, devices) in group_by_link(polled) {
            let poller = LinkPoller::new(link, devices, sink.clone());
            pollers.spawn(poller.run(poll_stop.clone()));
        }
        drop(sink);

        let writer: Option<Arc<dyn LineWriter>> = match (opts.writer, &s.influxdb) {
            (Some(w), _) => Some(w),
            (None, Some(ix)) => Some(Arc::new(InfluxWriter::new(ix).map_err(anyhow::Error::msg)?)),
            (None, None) => None,
        };
        let latest = self.latest.clone();
        let forward_stop = CancellationToken::new();
        let mut forwarder = None;
        let batcher = match writer {
            Some(writer) => {
                let ix = s.influxdb.as_ref();
                let queue = BatchQueue::new(
                    ix.map_or(64 << 20, |i| i.queue_max_bytes),
                    self.telemetry.clone(),
                );
                let batcher = Batcher {
                    encoder: LineEncoder::new(&s.gateway.id, &s.devices),
                    batch_size: ix.map_or(5000, |i| i.batch_size),
                    flush_interval: ix.map_or(Duration::from_secs(1), |i| i.flush_interval),
                    queue: queue.clone(),
                };
                let _ = std::fs::create_dir_all(&s.gateway.state_dir);
                let fw = Forwarder {
                    writer,
                    queue,
                    stats: self.telemetry.clone(),
                    dead_letter: s.gateway.state_dir.join("dead-letter.lp"),
                };
                forwarder = Some(tokio::spawn(fw.run(forward_stop.clone())));
                tokio::spawn(batcher.run(rx, move |r| latest.update(r)))
            }
            None => {
                info!("no [influxdb] configured: telemetry is not written to a database");
                tokio::spawn(async move {
                    let mut rx = rx;
                    while let Some(r) = rx.recv().await {
                        latest.update(&r);
                    }
                })
            }
        };

        shutdown.cancelled().await;
        info!("shutting down: stopping pollers, flushing telemetry");
        let flush_timeout = opts.flush_timeout.unwrap_or(Duration::from_secs(4));
        let deadline = tokio::time::Instant::now() + flush_timeout;
        while pollers.join_next().await.is_some() {}
        let _ = tokio::time::timeout_at(deadline, batcher).await;
        if let Some(fw) = forwarder
            && tokio::time::timeout_at(deadline, fw).await.is_err()
        {
            forward_stop.cancel();
            let left = self.telemetry.queue_bytes.load(Relaxed);
            warn!(
                unwritten_bytes = left,
                "shutdown timeout: telemetry left unwritten"
            );
        }
        info!(
            written = self.telemetry.lines_written.load(Relaxed),
            dropped = self.telemetry.lines_dropped.load(Relaxed)
                + self.telemetry.records_dropped.load(Relaxed),
            "stopped"
        );
        Ok(())
    }
}
