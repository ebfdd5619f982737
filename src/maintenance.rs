//! The maintenance loop: good samples go through the rule engine; its triggers become
//! work-order changes in the store (one transaction each, with the engine's state for them);
//! lifecycle events become `work_order` telemetry lines; closing a meter work order sets the
//! rule's new baseline. Notifiers run beside it, fed by the store's outbox.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::modbus::stats::LogLimiter;
use crate::model::{Reading, Record};
use crate::rules::engine::RuleEngine;
use crate::rules::types::Trigger;
use crate::telemetry::line::encode_work_order_event;
use crate::workorder::handle::StoreHandle;
use crate::workorder::types::{EventKind, WorkOrderEvent};

/// Counters of the maintenance loop, for /metrics.
#[derive(Debug, Default)]
pub struct MaintenanceStats {
    /// Readings dropped because the rule engine's queue was full.
    pub readings_dropped: AtomicU64,
    pub samples_evaluated: AtomicU64,
    pub triggers: AtomicU64,
    pub events: AtomicU64,
    /// Store failures (the trigger is retried on the next tick).
    pub store_errors: AtomicU64,
    /// Latency from a reading's timestamp to its work-order change committed, last value (µs).
    pub last_commit_latency_us: AtomicU64,
    /// The engine's own counters, copied every second (see `rules::engine::EngineStats`).
    pub unless_unknown: AtomicU64,
    pub unless_suppressed: AtomicU64,
    pub meter_wraps: AtomicU64,
    pub meter_resets: AtomicU64,
    pub meter_untrusted: AtomicU64,
}

/// The loop's inputs and outputs.
pub struct Maintenance {
    pub engine: RuleEngine,
    pub store: StoreHandle,
    /// Telemetry: where `work_order` lines go (None: no telemetry).
    pub annotate: Option<mpsc::Sender<Record>>,
    pub stats: Arc<MaintenanceStats>,
    pub gateway: String,
}

impl Maintenance {
    /// Runs until `stop`; saves the engine's state before returning.
    pub async fn run(
        mut self,
        mut readings: mpsc::Receiver<Reading>,
        mut api_events: mpsc::UnboundedReceiver<Vec<WorkOrderEvent>>,
        stop: CancellationToken,
    ) {
        match self.store.load_rule_states().await {
            Ok(states) => {
                let n = states.len();
                self.engine.restore(states);
                if n > 0 {
                    info!(states = n, "rule state restored");
                }
            }
            Err(e) => error!(error = %e, "cannot load the rule state; rules start afresh"),
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut triggers: Vec<Trigger> = Vec::new();
        let mut pending: Vec<Trigger> = Vec::new();
        let mut log = LogLimiter::new(Duration::from_secs(10));
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                Some(events) = api_events.recv() => {
                    self.after_events(&events).await;
                }
                r = readings.recv() => {
                    let Some(r) = r else { break };
                    for (point, value) in &r.values {
                        self.engine.offer(r.device, *point, value, r.timestamp_ns, &mut triggers);
                    }
                    self.stats.samples_evaluated.fetch_add(r.values.len() as u64, Relaxed);
                    if !triggers.is_empty() {
                        let at = r.timestamp_ns;
                        pending.append(&mut triggers);
                        self.commit(&mut pending, &mut log).await;
                        let latency = (crate::model::now_ns() - at).max(0) / 1000;
                        self.stats.last_commit_latency_us.store(latency as u64, Relaxed);
                    }
                }
                _ = tick.tick() => {
                    self.engine.tick(chrono::Utc::now(), &mut triggers);
                    self.publish_engine_stats();
                    pending.append(&mut triggers);
                    if !pending.is_empty() {
                        self.commit(&mut pending, &mut log).await;
                    }
                    let dirty = self.engine.take_dirty();
                    if !dirty.is_empty() && let Err(e) = self.store.save_rule_states(dirty).await {
                        self.stats.store_errors.fetch_add(1, Relaxed);
                        warn!(error = %e, "cannot save the rule state");
                    }
                }
            }
        }
        if !pending.is_empty() {
            self.commit(&mut pending, &mut log).await;
        }
        // Everything at shutdown, including last-sample times and meter progress that the
        // per-change saves leave to be recovered from the next reading.
        let _ = self.engine.take_dirty();
        if let Err(e) = self.store.save_rule_states(self.engine.snapshot()).await {
            warn!(error = %e, "cannot save the rule state at shutdown");
        }
    }

    fn publish_engine_stats(&self) {
        let e = self.engine.stats();
        self.stats.unless_unknown.store(e.unless_unknown, Relaxed);
        self.stats
            .unless_suppressed
            .store(e.unless_suppressed, Relaxed);
        self.stats.meter_wraps.store(e.meter_wraps, Relaxed);
        self.stats.meter_resets.store(e.meter_resets, Relaxed);
        self.stats.meter_untrusted.store(e.meter_untrusted, Relaxed);
    }

    /// Applies triggers in order; a trigger the store cannot take stays pending for the next tick.
    async fn commit(&mut self, pending: &mut Vec<Trigger>, log: &mut LogLimiter) {
        let mut done = 0;
        for t in pending.iter() {
            let states = self.engine.take_dirty();
            match self.store.apply(t.clone(), states.clone()).await {
                Ok(events) => {
                    done += 1;
                    self.stats.triggers.fetch_add(1, Relaxed);
                    self.after_events(&events).await;
                }
                Err(e) => {
                    self.stats.store_errors.fetch_add(1, Relaxed);
                    // Keep the state rows for the next attempt.
                    let _ = self.store.save_rule_states(states).await;
                    if let Some(held) = log.allow() {
                        error!(error = %e, rule = %t.rule, asset = %t.asset.id, suppressed = held, "cannot record a work-order change; retrying");
                    }
                    break;
                }
            }
        }
        pending.drain(..done);
    }

    async fn after_events(&mut self, events: &[WorkOrderEvent]) {
        let mut offset_ms = 0;
        for (i, ev) in events.iter().enumerate() {
            offset_ms = match i.checked_sub(1).map(|p| &events[p]) {
                Some(prev)
                    if prev.work_order_id == ev.work_order_id
                        && prev.occurred_at == ev.occurred_at =>
                {
                    offset_ms + 1
                }
                _ => 0,
            };
            self.stats.events.fetch_add(1, Relaxed);
            let wo = &ev.work_order;
            info!(id = wo.id, event = ev.event.as_str(), asset = %wo.asset, rule = %wo.rule, priority = wo.priority.as_str(), title = %wo.title, "work order");
            if matches!(ev.event, EventKind::Closed) && self.engine.is_meter_rule(&wo.rule) {
                self.engine
                    .work_order_closed(&wo.asset, &wo.rule, ev.occurred_at);
                let dirty = self.engine.take_dirty();
                if let Err(e) = self.store.save_rule_states(dirty).await {
                    warn!(error = %e, "cannot save the new meter baseline");
                }
            }
            if let Some(tx) = &self.annotate {
                let mut line = String::new();
                encode_work_order_event(ev, offset_ms, &mut line);
                if tx.try_send(Record::Line(line)).is_err() {
                    warn!(
                        id = wo.id,
                        "telemetry queue full: work_order annotation dropped"
                    );
                }
            }
        }
    }
}
