//! facilityd: a facility-monitoring gateway.
//!
//! Polls lifts, pumps, fire panels and access doors over Modbus, decodes their registers into
//! named points, and writes telemetry through the InfluxDB v2 write API. README.md is the user
//! documentation.

pub mod api;
pub mod availability;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod dashboards;
#[cfg(feature = "demo")]
pub mod demo;
pub mod device;
pub mod events;
pub mod gateway;
pub mod metrics_text;
pub mod modbus;
pub mod model;
pub mod mqtt;
pub mod owners;
pub mod profile;
pub mod rule_loop;
pub mod rules;
pub mod settings;
pub mod sim;
pub mod sink;
pub mod telemetry;
pub mod workorder;
