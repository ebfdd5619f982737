//! The running gateway: pollers, the MQTT client, telemetry pipeline, rules and notifiers, and
//! their orderly shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::api::workorders::WorkOrderApi;
use crate::api::{ApiState, check_listen, router};
use crate::maintenance::{Maintenance, MaintenanceStats};
use crate::model::Reading;
use crate::rules::engine::RuleEngine;
use crate::workorder::handle::StoreHandle;
use crate::workorder::notify::run_notifier;

use crate::device::DeviceSlots;
use crate::modbus::fleet::{Fleet, Member};
use crate::modbus::poller::RecordSink;
use crate::modbus::stats::DeviceStats;
use crate::model::{Record, Value};
use crate::mqtt::MqttStats;
use crate::mqtt::republish::Republisher;
use crate::mqtt::subscriber::{MqttDevice, MqttDevices, Subscriber, run_status};
use crate::reload::{CurrentDevices, DeviceSet, ReloadRequest, ReloadStats, Reloader};
use crate::settings::Settings;
use crate::telemetry::dead_letter::DeadLetter;
use crate::telemetry::influx::{InfluxWriter, LineWriter};
use crate::telemetry::line::LineEncoder;
use crate::telemetry::log::{LogConfig, LogStats, TelemetryLog};
use crate::telemetry::pipeline::{Batcher, Forwarder, GatewayFaults, TelemetryStats};

/// Capacity of the poller-to-telemetry channel, in records.
const RECORD_CHANNEL: usize = 65_536;
/// Capacity of the channel to the rule engine, in readings.
const RULE_CHANNEL: usize = 65_536;
/// Capacity of the channel to the MQTT telemetry republisher, in readings.
const REPUBLISH_CHANNEL: usize = 4096;

/// The latest good value of every point, and each device's status, by device slot (see
/// `crate::reload`; `None`: a slot a reload retired).
#[derive(Debug, Default)]
pub struct LatestValues {
    inner: Mutex<Vec<Option<DeviceLatest>>>,
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
                    .map(|n| {
                        Some(DeviceLatest {
                            points: vec![None; n],
                            ..Default::default()
                        })
                    })
                    .collect(),
            ),
        }
    }

    fn update(&self, rec: &Record) {
        let mut all = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match rec {
            Record::Reading(r) => {
                if let Some(Some(d)) = all.get_mut(r.device) {
                    for (i, v) in &r.values {
                        if let Some(slot) = d.points.get_mut(*i) {
                            *slot = Some((v.clone(), r.timestamp_ns));
                        }
                    }
                }
            }
            Record::Status(s) => {
                if let Some(Some(d)) = all.get_mut(s.device) {
                    d.online = Some(s.online);
                    if s.poll_ms > 0.0 {
                        d.last_poll_ms = s.poll_ms;
                    }
                }
            }
            Record::Line(_) | Record::Ack(_) => {}
        }
    }

    /// A copy of the latest values of the device in slot `i`.
    pub fn device(&self, i: usize) -> Option<DeviceLatest> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(i)
            .cloned()
            .flatten()
    }

    /// A new slot (a reload's added or changed device) with `points` points, none read yet.
    pub(crate) fn open_slot(&self, slot: usize, points: usize) {
        let mut all = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if all.len() <= slot {
            all.resize(slot + 1, None);
        }
        all[slot] = Some(DeviceLatest {
            points: vec![None; points],
            ..Default::default()
        });
    }

    /// Forgets a slot whose device a reload removed or replaced (records still in flight for
    /// it are ignored).
    pub(crate) fn retire(&self, slot: usize) {
        let mut all = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = all.get_mut(slot) {
            *d = None;
        }
    }
}

/// Handles to the running gateway's shared state.
#[derive(Clone)]
pub struct Gateway {
    /// The configuration the gateway started with. After a reload, [`Gateway::current`] holds
    /// the one in force.
    pub settings: Arc<Settings>,
    /// Per device of `settings`, in configuration order (a reload keeps those of the devices
    /// it keeps; [`Gateway::current`] has the counters of the devices in force).
    pub device_stats: Vec<Arc<DeviceStats>>,
    /// The devices in force, their slots and counters (changed by a reload).
    pub current: CurrentDevices,
    /// Configuration reloads, for /metrics.
    pub reloads: Arc<ReloadStats>,
    pub telemetry: Arc<TelemetryStats>,
    pub maintenance: Arc<MaintenanceStats>,
    /// The MQTT client's counters (zero without `[mqtt]`).
    pub mqtt: Arc<MqttStats>,
    pub latest: Arc<LatestValues>,
    /// The HTTP API's bound address, once it listens (`http.listen` may use port 0).
    pub api_addr: Arc<OnceLock<SocketAddr>>,
    /// Config loaded and stores open.
    pub ready: Arc<AtomicBool>,
    /// The on-disk telemetry log's counters, and the log once it is open.
    pub log_stats: Arc<LogStats>,
    pub log: Arc<OnceLock<Arc<TelemetryLog>>>,
    /// The gateway's own faults, raised as work orders on its own asset.
    pub faults: Arc<GatewayFaults>,
}

/// Where lines the database rejects go, under `state_dir`.
pub const DEAD_LETTER_FILE: &str = "dead-letter.lp";

/// Options the caller can set on top of the configuration.
#[derive(Default)]
pub struct RunOptions {
    /// Replaces the InfluxDB writer (used by `demo` to show what would be written).
    pub writer: Option<Arc<dyn LineWriter>>,
    /// How long shutdown may take to flush telemetry.
    pub flush_timeout: Option<Duration>,
    /// Configuration reloads to apply while running (`facilityd run`: SIGHUP).
    pub reload: Option<mpsc::Receiver<ReloadRequest>>,
}

/// The work-order database file under `state_dir`.
pub fn work_order_db(settings: &Settings) -> std::path::PathBuf {
    settings.gateway.state_dir.join("workorders.sqlite")
}

impl Gateway {
    pub fn new(settings: Settings) -> Self {
        let settings = Arc::new(settings);
        let device_stats: Vec<Arc<DeviceStats>> = settings
            .devices
            .iter()
            .map(|_| Arc::new(DeviceStats::default()))
            .collect();
        let latest = Arc::new(LatestValues::new(
            settings.devices.iter().map(|d| d.profile.points.len()),
        ));
        Gateway {
            current: CurrentDevices::new(DeviceSet::initial(
                settings.clone(),
                device_stats.clone(),
            )),
            reloads: Arc::default(),
            settings,
            device_stats,
            telemetry: Arc::new(TelemetryStats::default()),
            maintenance: Arc::new(MaintenanceStats::default()),
            mqtt: Arc::new(MqttStats::default()),
            latest,
            api_addr: Arc::new(OnceLock::new()),
            ready: Arc::new(AtomicBool::new(false)),
            log_stats: Arc::new(LogStats::default()),
            log: Arc::new(OnceLock::new()),
            faults: Arc::new(GatewayFaults::default()),
        }
    }

    /// Runs until `shutdown` fires, then stops polling, flushes telemetry (for at most
    /// `flush_timeout`, default 4 s) and returns.
    pub async fn run(&self, shutdown: CancellationToken, opts: RunOptions) -> anyhow::Result<()> {
        let s = &self.settings;

        // Stores first: a gateway that cannot keep its work orders must not pretend to run.
        std::fs::create_dir_all(&s.gateway.state_dir).with_context(|| {
            format!(
                "cannot create the state directory {}",
                s.gateway.state_dir.display()
            )
        })?;
        let db = work_order_db(s);
        let response_times = s.response_times;
        let store = tokio::task::spawn_blocking(move || StoreHandle::open(&db, response_times))
            .await
            .map_err(|e| anyhow::anyhow!("store thread: {e}"))?
            .with_context(|| {
                format!(
                    "cannot open the work-order database {}",
                    work_order_db(s).display()
                )
            })?;
        let writer: Option<Arc<dyn LineWriter>> = match opts.writer {
            Some(w) => Some(w),
            None => match &s.influxdb {
                Some(ix) => Some(Arc::new(InfluxWriter::new(ix).map_err(anyhow::Error::msg)?)),
                None => None,
            },
        };
        let log_cfg = LogConfig {
            dir: s.gateway.state_dir.join("telemetry"),
            max_bytes: s.storage.log_max_bytes,
            fsync_interval: s.storage.fsync_interval,
            retention: s.storage.history_retention,
            forwarding: writer.is_some(),
        };
        let log_dir = log_cfg.dir.clone();
        let log_stats = self.log_stats.clone();
        let (log, recovery) =
            tokio::task::spawn_blocking(move || TelemetryLog::open(log_cfg, log_stats))
                .await
                .map_err(|e| anyhow::anyhow!("log thread: {e}"))?
                .with_context(|| format!("cannot open the telemetry log {}", log_dir.display()))?;
        info!(
            dir = %log_dir.display(),
            segments = recovery.segments,
            backlog_lines = recovery.backlog_lines,
            cut_tails = recovery.cuts.len(),
            "telemetry log open"
        );
        let appender = log
            .start_writer()
            .with_context(|| format!("cannot write the telemetry log {}", log_dir.display()))?;
        let _ = self.log.set(log.clone());
        let names: Vec<String> = s.notifiers.0.iter().map(|n| n.name().to_string()).collect();
        store
            .register_notifiers(names)
            .await
            .context("cannot register the notifiers")?;

        // The HTTP API.
        let token = match &s.api_token_file {
            Some(f) => {
                let t = std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read http.api_token_file {}", f.display()))?;
                if t.trim().is_empty() {
                    // An empty token would let a request without Authorization through.
                    anyhow::bail!(
                        "http.api_token_file {} is empty: write a token into it (for example `openssl rand -hex 32`)",
                        f.display()
                    );
                }
                Some(Arc::<str>::from(t.trim()))
            }
            None => None,
        };
        let listen: SocketAddr = s
            .http_listen
            .parse()
            .with_context(|| format!("http.listen {:?}", s.http_listen))?;
        check_listen(&listen, token.as_deref()).map_err(anyhow::Error::msg)?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen} (http.listen)"))?;
        let bound = listener.local_addr()?;
        let _ = self.api_addr.set(bound);
        let (api_events_tx, api_events_rx) = mpsc::unbounded_channel();
        let api_state = ApiState {
            gw: self.clone(),
            token,
            ready: self.ready.clone(),
            work_orders: Some(WorkOrderApi {
                store: store.clone(),
                events: api_events_tx,
            }),
        };
        let api_stop = CancellationToken::new();
        let mut api_task = {
            let stop = api_stop.clone();
            tokio::spawn(async move {
                let served = axum::serve(listener, router(api_state))
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
                if let Err(e) = served {
                    error!(error = %e, "HTTP API stopped");
                }
            })
        };
        info!(listen = %bound, "HTTP API listening");

        // The MQTT connection: it serves the subscriber, the MQTT notifiers and the telemetry
        // republisher, so it starts before them and stops after them.
        let mqtt_stop = CancellationToken::new();
        let mut mqtt_conn = None;
        let mut mqtt_incoming = None;
        let mut mqtt_client = None;
        if let Some(m) = &s.mqtt {
            let (client, conn, incoming) =
                crate::mqtt::client::connect(m, self.mqtt.clone()).map_err(anyhow::Error::msg)?;
            m.port_handle.set(Some(client.clone()));
            mqtt_conn = Some(tokio::spawn(conn.run(mqtt_stop.clone())));
            mqtt_incoming = Some(incoming);
            mqtt_client = Some(client);
            info!(broker = %m.url, client_id = %m.client_id, "MQTT client started");
        }

        // Notifiers.
        let notify_stop = CancellationToken::new();
        let mut notifiers = JoinSet::new();
        for n in &s.notifiers.0 {
            notifiers.spawn(run_notifier(
                store.clone(),
                n.clone(),
                store.outbox_waker(),
                notify_stop.clone(),
            ));
        }

        // Telemetry channel: pollers and the maintenance loop write to it.
        let (tx, rx) = mpsc::channel::<Record>(RECORD_CHANNEL);
        let sink = RecordSink {
            tx: tx.clone(),
            dropped: self.telemetry.records_dropped.clone(),
        };

        // The maintenance loop.
        let (readings_tx, readings_rx) = mpsc::channel::<Reading>(RULE_CHANNEL);
        let (rules_tx, rules_rx) = mpsc::channel(1);
        let maintenance = Maintenance::new(
            RuleEngine::new(s.rules.clone(), s.assets.clone()),
            store.clone(),
            Some(tx.clone()),
            self.maintenance.clone(),
        )
        .with_gateway_faults(
            crate::maintenance::gateway_asset(s),
            self.faults.clone(),
            self.log_stats.clone(),
        )
        .with_reloads(rules_rx);
        drop(tx);
        let maintenance_stop = CancellationToken::new();
        let mut maintenance_task =
            tokio::spawn(maintenance.run(readings_rx, api_events_rx, maintenance_stop.clone()));

        // Devices by slot (see crate::reload): the configuration's devices are slots 0..n.
        let current = self.current.get();
        let members: Vec<Member> = s
            .devices
            .iter()
            .zip(current.slots.iter().zip(&current.stats))
            .map(|(d, (&slot, stats))| Member {
                slot,
                device: d.clone(),
                stats: stats.clone(),
            })
            .collect();
        let slots = DeviceSlots::new(&s.devices);
        let encoder = LineEncoder::new(&s.gateway.id, &s.devices);
        // MQTT devices: the subscriber turns their messages into readings; a QoS 1 message is
        // acknowledged once telemetry has accepted them (the channel below).
        let sub_stop = shutdown.child_token();
        let mut subscribers = JoinSet::new();
        let mut mqtt_devices = None;
        if let (Some(m), Some(client), Some(incoming)) = (&s.mqtt, &mqtt_client, mqtt_incoming) {
            let (view_tx, view) = watch::channel(Arc::new(MqttDevices {
                routing: m.routing.clone(),
                devices: members
                    .iter()
                    .map(|mb| MqttDevice {
                        device: mb.device.clone(),
                        slot: mb.slot,
                        stats: mb.stats.clone(),
                        errors: Arc::default(),
                    })
                    .collect(),
            }));
            let sub = Subscriber {
                client: client.clone(),
                devices: view.clone(),
                stats: self.mqtt.clone(),
                max_payload_bytes: m.max_payload_bytes,
                time_window: m.time_window,
                tx: sink.tx.clone(),
            };
            subscribers.spawn(sub.run(incoming, sub_stop.clone()));
            subscribers.spawn(run_status(
                view,
                self.mqtt.clone(),
                sink.tx.clone(),
                sub_stop.clone(),
            ));
            mqtt_devices = Some((client.clone(), view_tx));
        }
        let poll_stop = shutdown.child_token();
        let fleet = Fleet::start(members, sink.clone(), poll_stop.clone());
        drop(sink);

        // Telemetry republished over MQTT (`publish_telemetry`), fed beside the rule engine.
        let mut republisher = None;
        let republish_tx = match (
            s.mqtt.as_ref().and_then(|m| m.publish_telemetry.clone()),
            &mqtt_client,
        ) {
            (Some(topic), Some(client)) => {
                let (rtx, rrx) = mpsc::channel::<Reading>(REPUBLISH_CHANNEL);
                let r = Republisher {
                    client: client.clone(),
                    topic,
                    devices: slots.clone(),
                    gateway: s.gateway.id.clone(),
                };
                republisher = Some(tokio::spawn(r.run(rrx, mqtt_stop.clone())));
                Some(rtx)
            }
            _ => None,
        };
        let latest = self.latest.clone();
        let dropped = self.maintenance.clone();
        let mqtt_stats = self.mqtt.clone();
        let observe = move |r: &Record| {
            latest.update(r);
            if let Record::Reading(reading) = r {
                if readings_tx.try_send(reading.clone()).is_err() {
                    dropped.readings_dropped.fetch_add(1, Relaxed);
                }
                if let Some(tx) = &republish_tx
                    && tx.try_send(reading.clone()).is_err()
                {
                    mqtt_stats.telemetry_dropped.fetch_add(1, Relaxed);
                }
            }
        };
        let forward_stop = CancellationToken::new();
        let forward_drain = CancellationToken::new();
        let ix = s.influxdb.as_ref();
        let batch_size = ix.map_or(5000, |i| i.batch_size);
        let dead_letter = Arc::new(DeadLetter::new(
            &s.gateway.state_dir,
            s.storage.dead_letter_max_bytes,
            self.telemetry.dead_letter.clone(),
        ));
        // Its size for /metrics before the gateway is ready, then every 30 s.
        dead_letter.clone().refresh_in_background().await;
        tokio::spawn(dead_letter.clone().watch(shutdown.clone()));
        let forwarder = match writer {
            Some(writer) => {
                let fw = Forwarder {
                    writer,
                    log: log.clone(),
                    stats: self.telemetry.clone(),
                    batch_size,
                    dead_letter,
                    faults: self.faults.clone(),
                };
                Some(tokio::spawn(
                    fw.run(forward_stop.clone(), forward_drain.clone()),
                ))
            }
            None => {
                info!("no [influxdb] configured: telemetry stays in the local log (history API)");
                None
            }
        };
        let batcher = Batcher {
            encoder: encoder.clone(),
            batch_size,
            flush_interval: ix.map_or(Duration::from_secs(1), |i| i.flush_interval),
            log: appender.clone(),
            stats: self.telemetry.clone(),
        };
        let mut batcher = tokio::spawn(batcher.run(rx, observe));
        self.ready.store(true, Relaxed);
        info!(
            devices = s.devices.len(),
            rules = s.rules.len(),
            notifiers = s.notifiers.0.len(),
            "facilityd running"
        );

        let mut reloader = Reloader {
            gw: self.clone(),
            slots,
            encoder,
            fleet,
            rules: rules_tx,
            mqtt: mqtt_devices,
        };
        let mut reloads = opts.reload;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(req) = next_reload(&mut reloads) => {
                    let summary = reloader.apply(req.settings).await;
                    let _ = req.done.send(summary);
                }
            }
        }
        info!("shutting down: stopping pollers, flushing telemetry");
        self.ready.store(false, Relaxed);
        // The API first: a work order closed through it must reach the maintenance loop (meter
        // baselines) before that stops.
        api_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut api_task).await;
        let flush_timeout = opts.flush_timeout.unwrap_or(Duration::from_secs(4));
        let deadline = tokio::time::Instant::now() + flush_timeout;
        reloader.fleet.join().await;
        // The subscriber stops with the pollers: messages it has not handed to telemetry stay
        // unacknowledged with the broker (persistent session) and come again after a restart.
        while subscribers.join_next().await.is_some() {}
        maintenance_stop.cancel();
        if tokio::time::timeout_at(deadline, &mut maintenance_task)
            .await
            .is_err()
        {
            // It holds a telemetry sender: the batcher would wait for it to the deadline.
            maintenance_task.abort();
            let _ = maintenance_task.await;
        }
        if tokio::time::timeout_at(deadline, &mut batcher)
            .await
            .is_err()
        {
            batcher.abort();
            let _ = batcher.await;
        }
        // Every accepted batch is synced before the writer stops.
        let closing = tokio::task::spawn_blocking(move || appender.close_and_join());
        if tokio::time::timeout(Duration::from_secs(3), closing)
            .await
            .is_err()
        {
            error!("the telemetry log writer did not stop in time (a stuck disk?)");
        }
        forward_drain.cancel();
        if let Some(mut fw) = forwarder
            && tokio::time::timeout_at(deadline, &mut fw).await.is_err()
        {
            forward_stop.cancel();
            let _ = fw.await;
            let left = self.log_stats.backlog_lines.load(Relaxed);
            info!(
                backlog_lines = left,
                "shutdown: telemetry not yet written stays in the log for the next start"
            );
        }
        notify_stop.cancel();
        while notifiers.join_next().await.is_some() {}
        // Last, the MQTT connection: `offline` on the status topic, then DISCONNECT.
        if let Some(r) = republisher {
            let _ = tokio::time::timeout(Duration::from_millis(500), r).await;
        }
        mqtt_stop.cancel();
        if let Some(conn) = mqtt_conn {
            let _ = tokio::time::timeout(Duration::from_secs(3), conn).await;
        }
        if let Some(m) = &s.mqtt {
            m.port_handle.set(None);
        }
        info!(
            written = self.telemetry.lines_written.load(Relaxed),
            dropped = self.telemetry.lines_dropped.load(Relaxed)
                + self.telemetry.records_dropped.load(Relaxed),
            backlog_lines = self.log_stats.backlog_lines.load(Relaxed),
            "stopped"
        );
        Ok(())
    }
}

/// The next reload request; pending forever without a channel (or once it closed).
async fn next_reload(reloads: &mut Option<mpsc::Receiver<ReloadRequest>>) -> Option<ReloadRequest> {
    match reloads {
        Some(rx) => match rx.recv().await {
            Some(r) => Some(r),
            None => {
                *reloads = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}
