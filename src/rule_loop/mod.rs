//! The rule loop: good samples go through the rule engine; its triggers become
//! work-order changes in the store (one transaction each, with the engine's state for them);
//! lifecycle events become `work_order` telemetry lines; closing a meter work order sets the
//! rule's new baseline. Notifiers run beside it, fed by the store's outbox.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::events::{Event as _, LogLimiter};
use crate::model::{Reading, Record};
use crate::rules::config::Rule;
use crate::rules::engine::RuleEngine;
use crate::rules::types::{
    AssetInfo, Priority, Trigger, TriggerChange, WorkOrderKind, WorkOrderTemplate,
};
use crate::telemetry::log::LogStats;
use crate::telemetry::pipeline::GatewayFaults;
use crate::workorder::handle::StoreHandle;
use crate::workorder::store::ListFilter;
use crate::workorder::types::{EventKind, Status, WorkOrderEvent};

mod events;
use events::{AnnotationDropped, StoreFailed, StoreWrite};

/// Counters of the maintenance loop, for /metrics.
#[derive(Debug, Default)]
pub struct RuleLoopStats {
    /// Readings dropped because the rule engine's queue was full.
    pub readings_dropped: AtomicU64,
    pub samples_evaluated: AtomicU64,
    pub triggers: AtomicU64,
    pub events: AtomicU64,
    /// Store failures (the trigger is retried on the next tick).
    pub store_errors: AtomicU64,
    /// Triggers the store refused for good, or that overflowed the pending queue.
    pub triggers_dropped: AtomicU64,
    /// `work_order` telemetry lines dropped because the telemetry queue was full.
    pub annotations_dropped: AtomicU64,
    /// Latency from a reading's timestamp to its work-order change committed, last value (µs).
    pub last_commit_latency_us: AtomicU64,
    /// The engine's own counters, copied every second (see `rules::engine::EngineStats`).
    pub unless_unknown: AtomicU64,
    pub unless_suppressed: AtomicU64,
    pub unless_held: AtomicU64,
    pub meter_wraps: AtomicU64,
    pub meter_resets: AtomicU64,
    pub meter_untrusted: AtomicU64,
}

/// Most triggers kept while the store refuses them, before the oldest are dropped.
const MAX_PENDING: usize = 10_000;
/// Consecutive failures of a batch before its triggers are tried one by one.
const ISOLATE_AFTER: u32 = 3;

/// A configuration reload's rules and assets, for the maintenance loop to swap in.
pub struct RulesReload {
    pub rules: Vec<Rule>,
    /// The assets in configuration order (the new engine's asset indexes).
    pub assets: Vec<Arc<AssetInfo>>,
    /// Per device slot (the `device` of readings): its index in `assets`, `None` for a device
    /// that is gone or was replaced (its readings still in flight are not evaluated).
    pub asset_of_slot: Vec<Option<usize>>,
    /// Answered once the new engine runs.
    pub done: oneshot::Sender<RulesReloaded>,
}

/// What a rules reload did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RulesReloaded {
    /// (asset, rule) instances whose state was carried over.
    pub carried: usize,
    /// Saved state rows deleted: rules or assets that are gone or changed.
    pub rows_deleted: usize,
}

/// The loop's state.
pub struct RuleLoop {
    engine: RuleEngine,
    /// Per device slot: the engine's asset index. `None`: slots are the asset indexes (no
    /// reload yet).
    asset_of_slot: Option<Vec<Option<usize>>>,
    reloads: Option<mpsc::Receiver<RulesReload>>,
    store: StoreHandle,
    /// Telemetry: where `work_order` lines go (None: no telemetry).
    annotate: Option<mpsc::Sender<Record>>,
    stats: Arc<RuleLoopStats>,
    /// Triggers not yet recorded (the store failed); retried on the next tick.
    pending: Vec<Trigger>,
    /// Engine state rows not yet saved, by (asset, rule).
    carry: BTreeMap<(String, String), serde_json::Value>,
    failures: u32,
    log: LogLimiter,
    /// The gateway's own faults, watched every tick.
    gateway: Option<GatewayWatch>,
}

/// The gateway's own faults: work orders on the asset named by `gateway.id`.
struct GatewayWatch {
    asset: Arc<AssetInfo>,
    faults: Arc<GatewayFaults>,
    log: Arc<LogStats>,
    /// Per fault: whether it was last seen on. Starts unknown, so that the first evidence
    /// either way acts: a fault present from start-up opens its work order, and the first
    /// evidence that all is well resolves one left open by an earlier run.
    active: [Option<bool>; 4],
}

/// Rule ids of the gateway's own work orders.
pub const RULE_DATABASE_REFUSED: &str = "gateway_database_refused";
pub const RULE_LOG_DISK: &str = "gateway_log_disk";
pub const RULE_DATABASE_UNEXPECTED: &str = "gateway_database_unexpected";
pub const RULE_DATABASE_REJECTING: &str = "gateway_database_rejecting";

/// The gateway as an asset of its own work orders.
pub fn gateway_asset(s: &crate::settings::Settings) -> Arc<AssetInfo> {
    Arc::new(AssetInfo {
        id: s.gateway.id.as_str().into(),
        name: Some(format!("facilityd gateway {}", s.gateway.id)),
        site: s.gateway.site.clone(),
        building: None,
        floor: None,
        device_type: crate::profile::DeviceType::Other,
        profile: "gateway".into(),
        tags: Default::default(),
        points: Default::default(),
    })
}

impl GatewayWatch {
    /// Fire or clear triggers for the faults whose state changed.
    fn check(&mut self, now: chrono::DateTime<chrono::Utc>, out: &mut Vec<Trigger>) {
        let refused = self.faults.database_refused();
        let db = match &refused {
            Some(_) => Some(true),
            None if self.faults.database_ok() => Some(false),
            None => None,
        };
        let unexpected = self.faults.database_unexpected();
        let odd = match &unexpected {
            Some(_) => Some(true),
            None if self.faults.database_ok() => Some(false),
            None => None,
        };
        let rejecting = self.faults.database_rejecting();
        let rejects = match &rejecting {
            Some(_) => Some(true),
            None if self.faults.database_written.load(Relaxed) => Some(false),
            None => None,
        };
        let disk_failing = self.log.disk_failing.load(Relaxed) == 1;
        let disk = if disk_failing {
            Some(true)
        } else if self.log.fsyncs.load(Relaxed) > 0 {
            Some(false)
        } else {
            None
        };
        let faults = [
            (
                RULE_DATABASE_REFUSED,
                db,
                "Database refuses telemetry writes".to_string(),
                format!(
                    "The time-series database refuses facilityd's writes ({}). Telemetry is kept in the local log until it is fixed; check the [influxdb] token, org and bucket.",
                    refused.as_deref().unwrap_or("HTTP 401/403/404")
                ),
            ),
            (
                RULE_DATABASE_UNEXPECTED,
                odd,
                "Database URL answers writes unexpectedly".to_string(),
                format!(
                    "Telemetry writes get an answer no database gives ({}): a proxy, a redirect or another service may sit at [influxdb] url. Telemetry is kept in the local log until writes succeed.",
                    unexpected.as_deref().unwrap_or("an unexpected HTTP status")
                ),
            ),
            (
                RULE_DATABASE_REJECTING,
                rejects,
                "Database refuses every telemetry line".to_string(),
                format!(
                    "The database refused every line of a batch ({}). The lines are kept in the dead-letter file under state_dir; fix the cause (a field type, a retention policy, a proxy) and run `facilityd dead-letters resend`.",
                    rejecting.as_deref().unwrap_or("HTTP 400/422")
                ),
            ),
            (
                RULE_LOG_DISK,
                disk,
                "Telemetry log disk refuses writes".to_string(),
                "The disk under state_dir refuses writes to the telemetry log (full or failing). Telemetry waits in memory and is dropped, counted, when that fills; polling goes on.".to_string(),
            ),
        ];
        for (i, (rule, state, title, description)) in faults.into_iter().enumerate() {
            let Some(on) = state else { continue };
            if Some(on) == self.active[i] {
                continue;
            }
            self.active[i] = Some(on);
            let evidence = crate::rules::types::Evidence::default();
            out.push(Trigger {
                asset: self.asset.clone(),
                rule: rule.into(),
                at: now,
                change: if on {
                    TriggerChange::Fire { evidence }
                } else {
                    TriggerChange::Clear { evidence }
                },
                template: WorkOrderTemplate {
                    kind: WorkOrderKind::Corrective,
                    priority: Priority::High,
                    title,
                    description: Some(description),
                    auto_resolve: true,
                    meter: false,
                    due_at: None,
                },
            });
        }
    }
}

impl RuleLoop {
    pub fn new(
        engine: RuleEngine,
        store: StoreHandle,
        annotate: Option<mpsc::Sender<Record>>,
        stats: Arc<RuleLoopStats>,
    ) -> Self {
        RuleLoop {
            engine,
            asset_of_slot: None,
            reloads: None,
            store,
            annotate,
            stats,
            pending: Vec::new(),
            carry: BTreeMap::new(),
            failures: 0,
            log: LogLimiter::new(Duration::from_secs(10)),
            gateway: None,
        }
    }

    /// Raise work orders for the gateway's own faults (database refusing us, log disk failing).
    pub fn with_gateway_faults(
        mut self,
        asset: Arc<AssetInfo>,
        faults: Arc<GatewayFaults>,
        log: Arc<LogStats>,
    ) -> Self {
        self.gateway = Some(GatewayWatch {
            asset,
            faults,
            log,
            active: [None; 4],
        });
        self
    }

    /// Takes configuration reloads from `reloads` while it runs.
    pub fn with_reloads(mut self, reloads: mpsc::Receiver<RulesReload>) -> Self {
        self.reloads = Some(reloads);
        self
    }

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
        self.load_handover_baselines().await;
        self.rearm_meters().await;
        self.sync_occurrences().await;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut triggers: Vec<Trigger> = Vec::new();
        let mut reloads = self.reloads.take();
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                // Timers first: a steady stream of readings must not starve them.
                _ = tick.tick() => {
                    self.engine.tick(chrono::Utc::now(), &mut triggers);
                    if let Some(g) = &mut self.gateway {
                        g.check(chrono::Utc::now(), &mut triggers);
                    }
                    self.publish_engine_stats();
                    self.pending.append(&mut triggers);
                    self.commit().await;
                    if self.pending.is_empty() {
                        self.save_states().await;
                    }
                }
                Some(events) = api_events.recv() => {
                    self.after_events(&events).await;
                }
                reload = next_reload(&mut reloads) => {
                    self.reload(reload).await;
                }
                r = readings.recv() => {
                    let Some(r) = r else { break };
                    let asset = match &self.asset_of_slot {
                        None => Some(r.device),
                        Some(map) => map.get(r.device).copied().flatten(),
                    };
                    let Some(asset) = asset else { continue };
                    for (point, value) in &r.values {
                        self.engine.offer(asset, *point, value, r.timestamp_ns, &mut triggers);
                    }
                    self.stats.samples_evaluated.fetch_add(r.values.len() as u64, Relaxed);
                    if !triggers.is_empty() {
                        let at = r.timestamp_ns;
                        self.pending.append(&mut triggers);
                        self.commit().await;
                        let latency = (crate::model::now_ns() - at).max(0) / 1000;
                        self.stats.last_commit_latency_us.store(latency as u64, Relaxed);
                    }
                }
            }
        }
        // Work-order changes made through the API until now.
        while let Ok(events) = api_events.try_recv() {
            self.after_events(&events).await;
        }
        self.commit().await;
        if self.pending.is_empty() {
            // Everything, including last-sample times and meter progress that the per-change
            // saves leave to be recovered from the next reading.
            let _ = self.engine.take_dirty();
            self.carry.clear();
            if let Err(e) = self.store.save_rule_states(self.engine.snapshot()).await {
                warn!(error = %e, "cannot save the rule state at shutdown");
            }
        } else {
            // The engine's state says these fired; saving it without them would lose them.
            error!(
                triggers = self.pending.len(),
                "shutting down with work-order changes the store did not take; the rules will raise them again after the restart"
            );
        }
    }

    /// A configuration reload: the new engine takes over the state of every unchanged rule on
    /// every unchanged asset ([`RuleEngine::rebuild`]); the saved state of the others is
    /// deleted, so that a later restart does not bring it back. Work orders are not touched:
    /// those of removed rules and assets stay open until someone closes them. Triggers the
    /// store has not taken yet stay queued.
    async fn reload(&mut self, r: RulesReload) {
        // State changes not saved yet: kept below for the carried instances.
        for (asset, rule, v) in self.engine.take_dirty() {
            self.carry.insert((asset, rule), v);
        }
        let engine = std::mem::replace(&mut self.engine, RuleEngine::new(Vec::new(), Vec::new()));
        let (engine, rebuilt) = engine.rebuild(r.rules, r.assets, chrono::Utc::now());
        self.engine = engine;
        self.load_handover_baselines().await;
        self.asset_of_slot = Some(r.asset_of_slot);
        let carried = rebuilt.carried;
        let live: HashSet<(String, String)> = self.engine.instance_keys().into_iter().collect();
        let fresh: HashSet<(String, String)> = rebuilt.fresh.into_iter().collect();
        // Unsaved changes of instances that are gone or start afresh are void.
        self.carry
            .retain(|key, _| live.contains(key) && !fresh.contains(key));
        // Instances that start afresh must not find their old state after a restart either;
        // rows of removed rules and assets go too.
        for key in &fresh {
            self.carry.insert(key.clone(), serde_json::Value::Null);
        }
        let mut deleted = 0;
        match self.store.load_rule_states().await {
            Ok(rows) => {
                for (asset, rule, _) in rows {
                    let key = (asset, rule);
                    if fresh.contains(&key) {
                        deleted += 1;
                    } else if !live.contains(&key) {
                        self.carry.insert(key, serde_json::Value::Null);
                        deleted += 1;
                    }
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot read the saved rule state: the state of removed rules stays saved (it is ignored)")
            }
        }
        if self.pending.is_empty() {
            // Otherwise the rows go with the pending triggers, in their transaction.
            self.save_states().await;
        }
        info!(
            instances = self.engine.instance_count(),
            carried,
            rows_deleted = deleted,
            "rule engine rebuilt for the new configuration"
        );
        self.publish_engine_stats();
        let _ = r.done.send(RulesReloaded {
            carried,
            rows_deleted: deleted,
        });
    }

    /// Engine state rows not yet saved: what an earlier failed write left, then what changed.
    fn gather_states(&mut self) -> Vec<(String, String, serde_json::Value)> {
        for (asset, rule, v) in self.engine.take_dirty() {
            self.carry.insert((asset, rule), v);
        }
        std::mem::take(&mut self.carry)
            .into_iter()
            .map(|((a, r), v)| (a, r, v))
            .collect()
    }

    fn keep_states(&mut self, states: Vec<(String, String, serde_json::Value)>) {
        for (asset, rule, v) in states {
            // Newer rows that arrived meanwhile win.
            self.carry.entry((asset, rule)).or_insert(v);
        }
    }

    async fn save_states(&mut self) {
        let states = self.gather_states();
        if states.is_empty() {
            return;
        }
        if let Err(e) = self.store.save_rule_states(states.clone()).await {
            self.keep_states(states);
            StoreFailed {
                stats: &self.stats,
                error: &e,
                write: StoreWrite::RuleState,
            }
            .emit(&mut self.log);
        }
    }

    /// Records the pending triggers and the engine state that goes with them in one
    /// transaction. On failure both are kept for the next tick; a batch that keeps failing is
    /// split so that one trigger the store cannot take does not hold back the others.
    async fn commit(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        if self.pending.len() > MAX_PENDING {
            let excess = self.pending.len() - MAX_PENDING;
            self.pending.drain(..excess);
            self.stats
                .triggers_dropped
                .fetch_add(excess as u64, Relaxed);
            error!(
                dropped = excess,
                "the work-order store has not taken changes for a long time; dropped the oldest"
            );
        }
        let states = self.gather_states();
        let batch = std::mem::take(&mut self.pending);
        match self.store.apply_batch(batch.clone(), states.clone()).await {
            Ok(events) => {
                self.failures = 0;
                self.stats.triggers.fetch_add(batch.len() as u64, Relaxed);
                self.after_events(&events).await;
            }
            Err(e) => {
                self.failures += 1;
                self.keep_states(states);
                StoreFailed {
                    stats: &self.stats,
                    error: &e,
                    write: StoreWrite::Triggers(batch.len()),
                }
                .emit(&mut self.log);
                if self.failures < ISOLATE_AFTER {
                    self.pending = batch;
                    return;
                }
                // One at a time, without engine state: a trigger that still fails is dropped and
                // counted; the state rows are saved once the rest went through.
                self.failures = 0;
                for t in batch {
                    match self.store.apply(t.clone(), Vec::new()).await {
                        Ok(events) => {
                            self.stats.triggers.fetch_add(1, Relaxed);
                            self.after_events(&events).await;
                        }
                        Err(e) => {
                            self.stats.triggers_dropped.fetch_add(1, Relaxed);
                            error!(error = %e, rule = %t.rule, asset = %t.asset.id, "the work-order store refuses this change; dropped");
                        }
                    }
                }
            }
        }
    }

    /// Hands the handover records' counters to the engine (meter rules with `baseline =
    /// "handover"`), at start and on reload; a record made in between counts from the next
    /// reload or restart, and never moves a baseline already taken.
    async fn load_handover_baselines(&mut self) {
        match self.store.call(|s| s.handover_counters()).await {
            Ok(c) => {
                if !c.unverified.is_empty() {
                    warn!(records = ?c.unverified, "handover records whose SHA-256 does not verify: their counters are not used as meter baselines");
                }
                self.engine.set_handover_baselines(c.values);
            }
            Err(e) => {
                warn!(error = %e, "cannot read the handover records: meter rules with baseline = \"handover\" count from their first reading")
            }
        }
    }

    /// A meter rule waiting for its work order to be closed whose work order is closed (or
    /// gone) already: a close the engine did not hear of, so set the baseline now.
    async fn rearm_meters(&mut self) {
        for (asset, rule) in self.engine.fired_meters() {
            let list = self
                .store
                .list(ListFilter {
                    asset: Some(asset.clone()),
                    ..Default::default()
                })
                .await;
            let Ok(list) = list else { continue };
            let waiting = list.iter().any(|w| {
                w.rule == rule
                    && matches!(
                        w.status,
                        Status::Open | Status::Acknowledged | Status::Resolved
                    )
            });
            if !waiting {
                info!(asset = %asset, rule = %rule, "meter work order closed while the rule engine was not told: new baseline");
                self.engine
                    .work_order_closed(&asset, &rule, chrono::Utc::now());
            }
        }
    }

    /// A calendar occurrence the engine holds open whose work order is resolved or closed
    /// already (or gone): a resolution the engine did not hear of.
    async fn sync_occurrences(&mut self) {
        for (asset, rule) in self.engine.open_occurrences() {
            let list = self
                .store
                .list(ListFilter {
                    asset: Some(asset.clone()),
                    status: Some(vec![Status::Open, Status::Acknowledged]),
                    ..Default::default()
                })
                .await;
            let Ok(list) = list else { continue };
            if !list.iter().any(|w| w.rule == rule) {
                self.engine.work_order_resolved(&asset, &rule);
            }
        }
    }

    fn publish_engine_stats(&self) {
        let e = self.engine.stats();
        self.stats.unless_unknown.store(e.unless_unknown, Relaxed);
        self.stats
            .unless_suppressed
            .store(e.unless_suppressed, Relaxed);
        self.stats.unless_held.store(e.unless_held, Relaxed);
        self.stats.meter_wraps.store(e.meter_wraps, Relaxed);
        self.stats.meter_resets.store(e.meter_resets, Relaxed);
        self.stats.meter_untrusted.store(e.meter_untrusted, Relaxed);
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
            if matches!(ev.event, EventKind::Closed | EventKind::Cancelled)
                && self.engine.is_meter_rule(&wo.rule)
            {
                self.engine
                    .work_order_closed(&wo.asset, &wo.rule, ev.occurred_at);
                // Saved with the next tick (or found again at start-up by `rearm_meters`).
            }
            if matches!(
                ev.event,
                EventKind::Resolved | EventKind::Closed | EventKind::Cancelled
            ) {
                // A calendar rule's `done_when`: the occurrence is no longer open.
                self.engine.work_order_resolved(&wo.asset, &wo.rule);
            }
            if let Some(tx) = &self.annotate
                && tx
                    .try_send(Record::WorkOrder(Box::new(ev.mark(offset_ms))))
                    .is_err()
            {
                AnnotationDropped {
                    stats: &self.stats,
                    work_order: wo.id,
                }
                .emit(&mut self.log);
            }
        }
    }
}

/// The next configuration reload; pending forever without a channel (or once it closed).
async fn next_reload(reloads: &mut Option<mpsc::Receiver<RulesReload>>) -> RulesReload {
    loop {
        match reloads {
            Some(rx) => match rx.recv().await {
                Some(r) => return r,
                None => *reloads = None,
            },
            None => std::future::pending::<()>().await,
        }
    }
}
