//! The contract between the rule engine and the work-order store.
//!
//! The engine (pure, no I/O) turns samples and clock ticks into [`Trigger`]s; the store turns
//! triggers into work-order lifecycle changes, one SQLite transaction each, with an outbox entry.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::AssetId;
use crate::profile::{DeviceType, PointKind};

/// What the engine and the store know of an asset (a configured device).
#[derive(Debug, Clone, PartialEq)]
pub struct AssetInfo {
    pub id: AssetId,
    pub name: Option<String>,
    pub site: Option<String>,
    pub building: Option<String>,
    pub floor: Option<String>,
    pub device_type: DeviceType,
    /// Profile name.
    pub profile: String,
    pub tags: BTreeMap<String, String>,
    /// The profile's points, by index (samples name their point); shared by the assets of
    /// one profile.
    pub points: Arc<[PointInfo]>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PointInfo {
    pub name: Arc<str>,
    pub kind: PointKind,
    pub unit: Option<String>,
    /// Its values are numbers (a float or integer field), which thresholds compare.
    pub numeric: bool,
}

impl AssetInfo {
    /// The deduplication key of a rule on this asset: `site/asset/rule`. A rule that fires again
    /// adds an occurrence to the work order not yet resolved under its key instead of opening
    /// another. The site part is empty when the asset has none.
    pub fn key(&self, rule: &str) -> String {
        format!(
            "{}/{}/{}",
            self.site.as_deref().unwrap_or(""),
            self.id,
            rule
        )
    }
}

/// Work-order priority, most urgent first: urgent, high, normal and low are P1 to P4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Urgent,
    High,
    Normal,
    Low,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Urgent => "urgent",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

/// Work-order kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkOrderKind {
    Corrective,
    Preventive,
    Inspection,
    Incident,
}

impl WorkOrderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkOrderKind::Corrective => "corrective",
            WorkOrderKind::Preventive => "preventive",
            WorkOrderKind::Inspection => "inspection",
            WorkOrderKind::Incident => "incident",
        }
    }
}

/// A value in evidence: numbers, booleans and states as they were read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EvidenceValue {
    Bool(bool),
    Number(f64),
    Text(String),
}

/// One reading kept as evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidenceReading {
    pub at: DateTime<Utc>,
    pub value: EvidenceValue,
}

/// The scalar keys of `Evidence` as JSON, in the order a one-screen summary shows them (the
/// work-orders command, the handover record).
pub const EVIDENCE_SUMMARY_KEYS: &[&str] = &[
    "point",
    "value",
    "unit",
    "threshold",
    "first_value",
    "last_value",
    "min",
    "max",
];

/// Why a rule fired, kept with its work order as `evidence`. Readings are bounded by the engine
/// (the last 20).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Evidence {
    pub point: Option<String>,
    pub value: Option<EvidenceValue>,
    pub unit: Option<String>,
    /// The threshold, state list, meter due reading or calendar due date, as text.
    pub threshold: Option<String>,
    pub first_value: Option<EvidenceValue>,
    pub last_value: Option<EvidenceValue>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub readings: Vec<EvidenceReading>,
    /// Calendar rules with `done_when`: the run that did the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<DoneEvidence>,
    /// A rule named by other rules' `unless = { rule = ... }`: the (asset, rule) pairs it held
    /// during the incident, each listed once, in the order they were held.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub affected: Vec<AffectedAsset>,
    /// Meter rules: where the interval's baseline (`first_value`) came from, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
}

/// A qualifying `done_when` run: the condition held continuously for its `for`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoneEvidence {
    /// The condition, as configured (`engine_state = running for 30m and load_pct > 30`).
    pub condition: String,
    /// When the condition started to hold.
    pub started_at: DateTime<Utc>,
    /// When it had held for `for` (the first sample or clock tick that saw it).
    pub completed_at: DateTime<Utc>,
    /// `completed_at - started_at`, in seconds.
    pub duration_s: f64,
    /// The `and` point, and its min / mean / max over the run's readings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub and_point: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub and_min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub and_avg: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub and_max: Option<f64>,
}

/// One (asset, rule) held by a rule-form `unless` during an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AffectedAsset {
    pub asset: String,
    pub rule: String,
    /// When the held rule's condition was first seen active (or would have fired) while held.
    pub since: DateTime<Utc>,
}

/// What a rule says about the work order it raises.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkOrderTemplate {
    pub kind: WorkOrderKind,
    pub priority: Priority,
    /// Rendered: placeholders replaced.
    pub title: String,
    pub description: Option<String>,
    /// A cleared condition resolves the work order (default for `offline` rules only).
    pub auto_resolve: bool,
    /// Meter rule: closing its work order sets the new baseline (see `RuleEngine::work_order_closed`).
    pub meter: bool,
    /// When the work order is due; `None`: `[work_orders] response_times` after opening.
    /// Calendar rules give their due date.
    pub due_at: Option<DateTime<Utc>>,
}

/// A change of a rule's condition on one asset.
#[derive(Debug, Clone, PartialEq)]
pub enum TriggerChange {
    /// The condition holds (after its `for` delay, outside `unless`): open a work order, or add
    /// an occurrence to the one not yet resolved for this key.
    Fire { evidence: Evidence },
    /// Another raw rising edge while the rule is already firing (it is held firing while it
    /// flaps): `occurrences + 1`, evidence appended.
    Occurrence { evidence: Evidence },
    /// The flap guard started (`true`) or stopped (`false`) holding the rule.
    Flapping { flapping: bool },
    /// The condition no longer holds (after `clear_for`): `condition = cleared`, and resolve
    /// where the template says `auto_resolve`.
    Clear { evidence: Evidence },
    /// A calendar rule's `done_when` run did the job: the work order not yet resolved under
    /// this key is resolved by the gateway, with the run as evidence.
    Done { evidence: Evidence },
    /// Assets held by this rule (through other rules' `unless = { rule = ... }`): appended to
    /// the evidence of the work order not yet resolved under this key (`updated`), each
    /// (asset, rule) once.
    Affected { evidence: Evidence },
}

/// One output of the rule engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    pub asset: Arc<AssetInfo>,
    /// Rule id.
    pub rule: Arc<str>,
    pub at: DateTime<Utc>,
    pub change: TriggerChange,
    pub template: WorkOrderTemplate,
}

impl Trigger {
    pub fn key(&self) -> String {
        self.asset.key(&self.rule)
    }
}
