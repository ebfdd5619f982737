//! Modbus: request planning, decoding and the link pollers.

pub mod codec;
pub mod link;
pub mod plan;
pub mod poller;
pub mod probe;
pub mod stats;
