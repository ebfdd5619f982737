//! Starting the gateway's components in order, running until shutdown, and stopping them in
//! the reverse order with telemetry flushed.
//!
//! Start: the stores (work orders, telemetry log), the HTTP API, the MQTT connection, the
//! notifiers, the rule loop, the inputs (Modbus pollers, MQTT subscriber) with the router
//! beside the log, then the forwarder and the batcher. Stop: the API, the inputs, the rule loop,
//! the batcher and the log writer (every accepted batch synced), the forwarder (within the flush
//! timeout), the notifiers, and last the MQTT connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::reload::{ReloadRequest, Reloader};
use super::router::Router;
use super::{Gateway, RECORD_CHANNEL, REPUBLISH_CHANNEL, RULE_CHANNEL, RunOptions, work_order_db};
use crate::api::workorders::WorkOrderApi;
use crate::api::{ApiState, check_listen, router};
use crate::availability::{Availability, AvailabilityHandle, FLUSH_INTERVAL, run_flusher};
use crate::device::{Device, DeviceSlots};
use crate::modbus::fleet::{Fleet, Member};
use crate::model::{Reading, Record};
use crate::mqtt::MqttClient;
use crate::mqtt::republish::Republisher;
use crate::mqtt::subscriber::{MqttDevice, MqttDevices, Subscriber, run_status};
use crate::rule_loop::{RuleLoop, RulesReload};
use crate::rules::engine::RuleEngine;
use crate::settings::Settings;
use crate::sink::RecordSink;
use crate::telemetry::dead_letter::DeadLetter;
use crate::telemetry::influx::{InfluxWriter, LineWriter};
use crate::telemetry::line::LineEncoder;
use crate::telemetry::log::{LogAppender, LogConfig, TelemetryLog};
use crate::telemetry::pipeline::{Batcher, Forwarder};
use crate::workorder::handle::StoreHandle;
use crate::workorder::notify::run_notifier;

/// The stores, open.
struct Stores {
    store: StoreHandle,
    log: Arc<TelemetryLog>,
    appender: LogAppender,
    writer: Option<Arc<dyn LineWriter>>,
}

/// The HTTP API, serving.
struct Api {
    stop: CancellationToken,
    task: JoinHandle<()>,
    /// Work orders changed through the API, for the rule loop.
    events: mpsc::UnboundedReceiver<Vec<crate::workorder::types::WorkOrderEvent>>,
}

/// The MQTT connection, with the incoming messages not yet taken by the subscriber.
struct Mqtt {
    client: MqttClient,
    conn: JoinHandle<()>,
    incoming: Option<crate::mqtt::client::IncomingMessages>,
}

impl Gateway {
    /// Runs until `shutdown` fires, then stops polling, flushes telemetry (for at most
    /// `flush_timeout`, default 4 s) and returns.
    pub async fn run(&self, shutdown: CancellationToken, opts: RunOptions) -> anyhow::Result<()> {
        let s = &self.settings;
        // Stores first: a gateway that cannot keep its work orders must not pretend to run.
        let Stores {
            store,
            log,
            appender,
            writer,
        } = self.open_stores(opts.writer).await?;
        let (availability, avail_handle, avail_stop, avail_task) =
            self.start_availability(&store).await?;
        // A start that fails below stops the flusher too.
        let _avail_guard = avail_stop.clone().drop_guard();
        let Api {
            stop: api_stop,
            task: mut api_task,
            events: api_events,
        } = self.start_api(&store, avail_handle).await?;

        // The MQTT connection serves the subscriber, the MQTT notifiers and the telemetry
        // republisher, so it starts before them and stops after them.
        let mqtt_stop = CancellationToken::new();
        let mut mqtt = match &s.mqtt {
            Some(m) => {
                let (client, conn, incoming) = crate::mqtt::client::connect(m, self.mqtt.clone())
                    .map_err(anyhow::Error::msg)?;
                info!(broker = %m.url, client_id = %m.client_id, "MQTT client started");
                Some(Mqtt {
                    client,
                    conn: tokio::spawn(conn.run(mqtt_stop.clone())),
                    incoming: Some(incoming),
                })
            }
            None => None,
        };

        // The running notifiers, from the settings' specs; MQTT ones on the client above.
        let notify_stop = CancellationToken::new();
        let mut notifiers = JoinSet::new();
        for n in super::notifiers::build(
            &s.notifiers,
            &s.gateway.id,
            &self.notifier_assets,
            mqtt.as_ref().map(|m| &m.client),
        )? {
            notifiers.spawn(run_notifier(
                store.clone(),
                n,
                store.outbox_waker(),
                notify_stop.clone(),
            ));
        }

        // The queue to the telemetry log: the inputs and the rule loop write to it.
        let (tx, rx) = mpsc::channel::<Record>(RECORD_CHANNEL);
        let (readings_tx, readings_rx) = mpsc::channel::<Reading>(RULE_CHANNEL);
        let (rules_tx, rules_rx) = mpsc::channel::<RulesReload>(1);
        let rule_loop = RuleLoop::new(
            RuleEngine::new(s.rules.clone(), s.assets.clone()),
            store.clone(),
            Some(tx.clone()),
            self.maintenance.clone(),
        )
        .with_gateway_faults(
            crate::rule_loop::gateway_asset(s),
            self.faults.clone(),
            self.log_stats.clone(),
        )
        .with_reloads(rules_rx);
        let rule_stop = CancellationToken::new();
        let mut rule_task = tokio::spawn(rule_loop.run(readings_rx, api_events, rule_stop.clone()));

        // Devices by slot: the configuration's devices are slots 0..n (a reload adds more).
        let slots = DeviceSlots::new(&s.devices);
        let encoder = LineEncoder::new(&s.gateway.id, &s.devices);

        // Telemetry republished over MQTT (`publish_telemetry`), fed by the router.
        let mut republisher = None;
        let republish_tx = match (
            s.mqtt.as_ref().and_then(|m| m.publish_telemetry.clone()),
            &mqtt,
        ) {
            (Some(topic), Some(m)) => {
                let (rtx, rrx) = mpsc::channel::<Reading>(REPUBLISH_CHANNEL);
                let r = Republisher {
                    client: m.client.clone(),
                    topic,
                    devices: slots.clone(),
                    gateway: s.gateway.id.clone(),
                };
                republisher = Some(tokio::spawn(r.run(rrx, mqtt_stop.clone())));
                Some(rtx)
            }
            _ => None,
        };
        // Every record is seen by the router (latest values, rules, republisher) as the input
        // hands it over, beside the log's queue: a slow disk never holds up a work order.
        let sink = RecordSink::new(tx, self.telemetry.records_dropped.clone()).observed_by(
            Arc::new(Router {
                latest: self.latest.clone(),
                availability: availability.clone(),
                rules: readings_tx,
                rule_stats: self.maintenance.clone(),
                republish: republish_tx,
                mqtt_stats: self.mqtt.clone(),
            }),
        );

        let (fleet, mut subscribers, mqtt_devices) =
            self.start_inputs(s, sink, mqtt.as_mut(), &shutdown);

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
        let mut batcher = tokio::spawn(batcher.run(rx));
        self.ready.store(true, Relaxed);
        info!(
            devices = s.devices.len(),
            rules = s.rules.len(),
            notifiers = s.notifiers.len(),
            "facilityd running"
        );

        let mut reloader = Reloader {
            gw: self.clone(),
            slots,
            encoder,
            fleet,
            rules: rules_tx,
            mqtt: mqtt_devices,
            availability,
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
        // The API first: a work order closed through it must reach the rule loop (meter
        // baselines) before that stops.
        api_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut api_task).await;
        let flush_timeout = opts.flush_timeout.unwrap_or(Duration::from_secs(4));
        let deadline = tokio::time::Instant::now() + flush_timeout;
        reloader.fleet.join().await;
        // The subscriber stops with the pollers: messages it has not handed to telemetry stay
        // unacknowledged with the broker (persistent session) and come again after a restart.
        while subscribers.join_next().await.is_some() {}
        // The inputs stopped: the availability history's last flush ends every span now (the
        // time until the next start reads as "not monitored").
        avail_stop.cancel();
        if tokio::time::timeout(Duration::from_secs(3), avail_task)
            .await
            .is_err()
        {
            error!("the availability history's last flush did not finish in time");
        }
        rule_stop.cancel();
        if tokio::time::timeout_at(deadline, &mut rule_task)
            .await
            .is_err()
        {
            // It holds a telemetry sender: the batcher would wait for it to the deadline.
            rule_task.abort();
            let _ = rule_task.await;
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
        if let Some(m) = mqtt {
            let _ = tokio::time::timeout(Duration::from_secs(3), m.conn).await;
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

    /// Opens the work-order store and the telemetry log (recovering what it holds) and starts
    /// the log's writer.
    async fn open_stores(&self, writer: Option<Arc<dyn LineWriter>>) -> anyhow::Result<Stores> {
        let s = &self.settings;
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
        let writer: Option<Arc<dyn LineWriter>> = match writer {
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
        let names: Vec<String> = s.notifiers.iter().map(|n| n.name().to_string()).collect();
        store
            .register_notifiers(names)
            .await
            .context("cannot register the notifiers")?;
        Ok(Stores {
            store,
            log,
            appender,
            writer,
        })
    }

    /// Starts the availability tracker, taking up the counters where the store left them, and
    /// its flusher (stopped by the token returned).
    async fn start_availability(
        &self,
        store: &StoreHandle,
    ) -> anyhow::Result<(
        Arc<Availability>,
        AvailabilityHandle,
        CancellationToken,
        JoinHandle<()>,
    )> {
        let s = &self.settings;
        let tz: chrono_tz::Tz = s.gateway.timezone.parse().map_err(|_| {
            anyhow::anyhow!(
                "gateway.timezone {:?} is not an IANA time zone",
                s.gateway.timezone
            )
        })?;
        let seeds = match store.call(|st| st.latest_counter_days()).await {
            Ok(days) => days,
            Err(e) => {
                error!(error = %e, "cannot read where the counters per day left off: they start afresh");
                Vec::new()
            }
        };
        let current = self.current.get();
        let tracked: Vec<(usize, Arc<Device>)> = current
            .slots
            .iter()
            .copied()
            .zip(current.settings.devices.iter().cloned())
            .collect();
        let availability = Arc::new(Availability::new(tz, &tracked, seeds));
        let (handle, requests) = crate::availability::handle(&availability);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_flusher(
            availability.clone(),
            store.clone(),
            FLUSH_INTERVAL,
            requests,
            stop.clone(),
        ));
        Ok((availability, handle, stop, task))
    }

    /// Reads the API token, checks the address against it, binds and serves.
    async fn start_api(
        &self,
        store: &StoreHandle,
        availability: AvailabilityHandle,
    ) -> anyhow::Result<Api> {
        let s = &self.settings;
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
        let (events_tx, events) = mpsc::unbounded_channel();
        let mut gw = self.view();
        gw.availability = Some(availability);
        let state = ApiState {
            gw,
            token,
            ready: self.ready.clone(),
            work_orders: Some(WorkOrderApi {
                store: store.clone(),
                events: events_tx,
            }),
        };
        let stop = CancellationToken::new();
        let task = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let served = axum::serve(listener, router(state))
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
                if let Err(e) = served {
                    error!(error = %e, "HTTP API stopped");
                }
            })
        };
        info!(listen = %bound, "HTTP API listening");
        Ok(Api { stop, task, events })
    }

    /// Starts the Modbus pollers and, with `[mqtt]`, the subscriber of MQTT devices (a QoS 1
    /// message is acknowledged once telemetry has accepted its readings). Both stop with
    /// `shutdown`. Returns the fleet, the subscriber's tasks and what a reload needs to change
    /// the MQTT devices.
    #[allow(clippy::type_complexity)]
    fn start_inputs(
        &self,
        s: &Settings,
        sink: RecordSink,
        mqtt: Option<&mut Mqtt>,
        shutdown: &CancellationToken,
    ) -> (
        Fleet,
        JoinSet<()>,
        Option<(MqttClient, watch::Sender<Arc<MqttDevices>>)>,
    ) {
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
        let sub_stop = shutdown.child_token();
        let mut subscribers = JoinSet::new();
        let mut mqtt_devices = None;
        if let (Some(m), Some(conn)) = (&s.mqtt, mqtt)
            && let Some(incoming) = conn.incoming.take()
        {
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
                client: conn.client.clone(),
                devices: view.clone(),
                stats: self.mqtt.clone(),
                max_payload_bytes: m.max_payload_bytes,
                time_window: m.time_window,
                sink: sink.clone(),
            };
            subscribers.spawn(sub.run(incoming, sub_stop.clone()));
            subscribers.spawn(run_status(
                view,
                self.mqtt.clone(),
                sink.clone(),
                sub_stop.clone(),
            ));
            mqtt_devices = Some((conn.client.clone(), view_tx));
        }
        let fleet = Fleet::start(members, sink, shutdown.child_token());
        (fleet, subscribers, mqtt_devices)
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
