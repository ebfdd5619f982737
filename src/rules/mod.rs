//! Rules: conditions on telemetry that raise maintenance work orders (DESIGN §4).

pub mod matcher;
pub mod types;
