//! A validated rule: what every rule has, and the part of its type.

use std::sync::Arc;

use super::calendar::CalendarSpec;
use super::flap::FlapSpec;
use super::meter::MeterSpec;
use super::offline::OfflineSpec;
use super::state::{StateSet, StateSpec};
use super::template::Template;
use super::threshold::ThresholdSpec;
use super::types::{Priority, WorkOrderKind};
use crate::model::AssetId;

/// A validated rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub id: Arc<str>,
    /// Where it was defined, for messages.
    pub file: String,
    pub index: usize,
    pub kind: RuleKind,
    pub priority: Priority,
    pub work_order: WorkOrderKind,
    pub title: Template,
    pub description: Option<Template>,
    /// A cleared condition resolves the work order.
    pub auto_resolve: bool,
    pub unless: Option<Unless>,
    /// The flap guard (threshold and `for`-style state rules only).
    pub flap: Option<FlapSpec>,
    /// `[gateway] id`, for `{gateway}`.
    pub gateway: Arc<str>,
    /// The assets the rule runs on: matched by `match`, less those skipped with a warning.
    pub assets: Vec<AssetId>,
}

/// The type-specific part of a rule.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    Threshold(ThresholdSpec),
    State(StateSpec),
    Meter(MeterSpec),
    Calendar(CalendarSpec),
    Offline(OfflineSpec),
}

/// `unless = { point = "local_mode", equals = true }`: suppressed while the point of the same
/// asset holds one of the values.
#[derive(Debug, Clone, PartialEq)]
pub struct Unless {
    pub point: Arc<str>,
    pub equals: StateSet,
}

impl Rule {
    /// The same rule as far as its state goes: equal in everything but where it is configured
    /// and which assets it matched (a reload keeps the state of an unchanged rule on each
    /// unchanged asset it still runs on).
    pub fn same_definition(&self, other: &Rule) -> bool {
        let Rule {
            id,
            file: _,
            index: _,
            kind,
            priority,
            work_order,
            title,
            description,
            auto_resolve,
            unless,
            flap,
            gateway,
            assets: _,
        } = self;
        *id == other.id
            && *kind == other.kind
            && *priority == other.priority
            && *work_order == other.work_order
            && *title == other.title
            && *description == other.description
            && *auto_resolve == other.auto_resolve
            && *unless == other.unless
            && *flap == other.flap
            && *gateway == other.gateway
    }

    /// `threshold`, `state`, `meter`, `calendar` or `offline`.
    pub fn type_name(&self) -> &'static str {
        self.kind.type_name()
    }

    /// The point the rule watches (none for calendar and offline rules).
    pub fn point(&self) -> Option<&Arc<str>> {
        self.kind.point()
    }

    /// One line for `check`: the condition, then what it raises.
    pub fn describe(&self) -> String {
        let mut s = match &self.kind {
            RuleKind::Threshold(t) => t.describe(),
            RuleKind::State(t) => t.describe(),
            RuleKind::Meter(t) => t.describe(),
            RuleKind::Calendar(t) => t.describe(),
            RuleKind::Offline(t) => t.describe(),
        };
        if let Some(u) = &self.unless {
            s.push_str(&format!(", unless {} = {}", u.point, u.equals.text()));
        }
        s.push_str(&format!(
            " -> {} {}{}",
            self.priority.as_str(),
            self.work_order.as_str(),
            if self.auto_resolve {
                ", auto-resolve"
            } else {
                ""
            }
        ));
        s
    }
}

impl RuleKind {
    /// `threshold`, `state`, `meter`, `calendar` or `offline`.
    pub fn type_name(&self) -> &'static str {
        match self {
            RuleKind::Threshold(_) => "threshold",
            RuleKind::State(_) => "state",
            RuleKind::Meter(_) => "meter",
            RuleKind::Calendar(_) => "calendar",
            RuleKind::Offline(_) => "offline",
        }
    }

    /// The point the rule watches (none for calendar and offline rules).
    pub fn point(&self) -> Option<&Arc<str>> {
        match self {
            RuleKind::Threshold(s) => Some(&s.point),
            RuleKind::State(s) => Some(&s.point),
            RuleKind::Meter(s) => Some(&s.point),
            RuleKind::Calendar(_) | RuleKind::Offline(_) => None,
        }
    }
}
