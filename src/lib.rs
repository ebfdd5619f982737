//! facilityd: a facility-monitoring gateway.
//!
//! Polls lifts, pumps, fire panels and access doors over Modbus, decodes their registers into
//! named points, and writes telemetry through the InfluxDB v2 write API. See DESIGN.md for the
//! contract and README.md for the user documentation.

pub mod api;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod dashboards;
pub mod demo;
pub mod device;
pub mod events;
pub mod gateway;
pub mod modbus;
pub mod model;
pub mod mqtt;
pub mod profile;
pub mod rule_loop;
pub mod rules;
pub mod settings;
pub mod sim;
pub mod sink;
pub mod telemetry;
pub mod workorder;
