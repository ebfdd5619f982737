//! Telemetry: line protocol, batching, and the InfluxDB writer.

pub mod dead_letter;
pub mod influx;
pub mod line;
pub mod log;
pub mod pipeline;
