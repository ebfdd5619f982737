//! Rules: conditions on telemetry that raise maintenance work orders.
//!
//! `config` parses `[[rules]]` into [`Rule`]s. Each rule type (`threshold`, `state`, `meter`,
//! `calendar`, `offline`) has its state machine in its module and its keys in
//! `<type>/config.rs`. The [`RuleEngine`] runs the rules on samples and clock ticks and produces
//! [`types::Trigger`]s, which the work-order store turns into work orders.

pub mod calendar;
pub mod condition;
pub mod config;
pub mod engine;
pub mod evidence;
pub mod flap;
pub mod matcher;
pub mod meter;
pub mod offline;
pub mod rule;
pub mod state;
pub mod template;
pub mod threshold;
pub mod types;

pub use config::{Rule, RuleKind, parse_rules};
pub use engine::{EngineStats, RuleEngine, RuleSummary};
