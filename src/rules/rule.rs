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
    /// Held while any of these holds (empty: never).
    pub unless: Vec<Unless>,
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

/// One condition of `unless` (a rule may list several: it is held while any of them holds).
#[derive(Debug, Clone, PartialEq)]
pub enum Unless {
    /// `{ point = "local_mode", equals = true }`: a point of the same asset.
    Point(PointUnless),
    /// `{ rule = "power-mains-lost", scope = "building" }`: the named rule's condition is
    /// active (fired and not cleared) on an asset in scope.
    Rule(RuleUnless),
}

/// `unless = { point = "local_mode", equals = true }`: suppressed while the point of the same
/// asset holds one of the values.
#[derive(Debug, Clone, PartialEq)]
pub struct PointUnless {
    pub point: Arc<str>,
    pub equals: StateSet,
}

/// `unless = { rule, scope }`: held while the named rule fires on an asset in scope.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleUnless {
    pub rule: Arc<str>,
    pub scope: Scope,
}

/// Where a rule-form `unless` looks for the named rule's condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Assets of the same site and building as the held rule's asset (assets without a
    /// building: the assets of the site without one).
    Building,
    /// Every asset of the gateway.
    Site,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Building => "building",
            Scope::Site => "site",
        }
    }
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
        for (k, u) in self.unless.iter().enumerate() {
            s.push_str(if k == 0 { ", unless " } else { " or " });
            match u {
                Unless::Point(u) => s.push_str(&format!("{} = {}", u.point, u.equals.text())),
                Unless::Rule(u) => s.push_str(&format!(
                    "rule {} is active in the {}",
                    u.rule,
                    u.scope.as_str()
                )),
            }
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

impl Rule {
    /// The point-form conditions of `unless`, in order.
    pub fn point_unless(&self) -> impl Iterator<Item = &PointUnless> {
        self.unless.iter().filter_map(|u| match u {
            Unless::Point(p) => Some(p),
            Unless::Rule(_) => None,
        })
    }

    /// The rule-form conditions of `unless`, in order.
    pub fn rule_unless(&self) -> impl Iterator<Item = &RuleUnless> {
        self.unless.iter().filter_map(|u| match u {
            Unless::Rule(r) => Some(r),
            Unless::Point(_) => None,
        })
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
