//! The work-order record and its lifecycle events.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::rules::types::{Evidence, Priority, WorkOrderKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Open,
    Acknowledged,
    Resolved,
    Closed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Acknowledged => "acknowledged",
            Status::Resolved => "resolved",
            Status::Closed => "closed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConditionState {
    Active,
    Cleared,
}

/// Lifecycle events, as delivered to notifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Opened,
    Updated,
    Acknowledged,
    ConditionCleared,
    Flapping,
    Resolved,
    Closed,
    Cancelled,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Opened => "opened",
            EventKind::Updated => "updated",
            EventKind::Acknowledged => "acknowledged",
            EventKind::ConditionCleared => "condition_cleared",
            EventKind::Flapping => "flapping",
            EventKind::Resolved => "resolved",
            EventKind::Closed => "closed",
            EventKind::Cancelled => "cancelled",
        }
    }

    pub const ALL: [EventKind; 8] = [
        EventKind::Opened,
        EventKind::Updated,
        EventKind::Acknowledged,
        EventKind::ConditionCleared,
        EventKind::Flapping,
        EventKind::Resolved,
        EventKind::Closed,
        EventKind::Cancelled,
    ];
}

/// A work order, the record (serialized as the webhook's `work_order`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkOrder {
    pub id: i64,
    /// `site/asset/rule`.
    pub key: String,
    pub asset: String,
    pub site: Option<String>,
    pub building: Option<String>,
    pub floor: Option<String>,
    pub device_type: String,
    pub rule: String,
    pub kind: WorkOrderKind,
    pub priority: Priority,
    pub title: String,
    pub description: Option<String>,
    pub status: Status,
    pub condition: ConditionState,
    pub opened_at: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub condition_cleared_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    pub due_at: DateTime<Utc>,
    pub occurrences: u64,
    pub last_triggered_at: DateTime<Utc>,
    pub flapping: bool,
    pub evidence: Evidence,
    /// Who acknowledged, resolved or closed it, and the last note (API `by` / `note`).
    pub acknowledged_by: Option<String>,
    pub resolved_by: Option<String>,
    pub closed_by: Option<String>,
    pub note: Option<String>,
}

/// One lifecycle event of one work order, as written to the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkOrderEvent {
    /// Outbox entry id (global order).
    pub id: i64,
    pub work_order_id: i64,
    /// 1, 2, ... per work order: the `seq` of the webhook body, and `ID:seq` the idempotency key.
    pub seq: u64,
    pub event: EventKind,
    pub occurred_at: DateTime<Utc>,
    /// The record as it was after this event.
    pub work_order: WorkOrder,
}

impl WorkOrderEvent {
    /// What telemetry writes of this event. Events of one change share a time (a cleared
    /// condition that also resolves): the series and time would be equal and the database
    /// would keep only the last, so `offset_ms` moves the later ones by a millisecond each
    /// (milliseconds, since some databases cut to them).
    pub fn mark(&self, offset_ms: i64) -> crate::model::WorkOrderMark {
        let wo = &self.work_order;
        crate::model::WorkOrderMark {
            id: wo.id,
            asset: wo.asset.clone(),
            rule: wo.rule.clone(),
            kind: wo.kind.as_str(),
            priority: wo.priority.as_str(),
            status: wo.status.as_str(),
            event: self.event.as_str(),
            title: wo.title.clone(),
            timestamp_ns: self
                .occurred_at
                .timestamp_nanos_opt()
                .unwrap_or(0)
                .saturating_add(offset_ms.saturating_mul(1_000_000)),
        }
    }

    pub fn idempotency_key(&self) -> String {
        format!("{}:{}", self.work_order_id, self.seq)
    }
}
