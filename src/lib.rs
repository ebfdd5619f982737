//! facilityd: a facility-monitoring gateway.
//!
//! Polls lifts, pumps, fire panels and access doors over Modbus, decodes their registers into
//! named points, and writes telemetry through the InfluxDB v2 write API. README.md is the user
//! documentation.

pub mod api;
pub mod cli;
pub mod config;
pub mod dashboards;
#[cfg(feature = "demo")]
pub mod demo;
pub mod maintenance;
pub mod modbus;
pub mod model;
pub mod mqtt;
pub mod profile;
pub mod reload;
pub mod rules;
pub mod runtime;
pub mod service;
pub mod sim;
pub mod telemetry;
pub mod wo_client;
pub mod workorder;
