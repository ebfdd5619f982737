//! Rules: conditions on telemetry that raise maintenance work orders (DESIGN §4).

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
