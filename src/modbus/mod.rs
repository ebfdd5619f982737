//! Modbus: request planning, decoding, RTU framing and serial bus timing, and the link pollers.

pub mod bus;
pub mod codec;
pub mod fleet;
pub use crate::device::link;
pub mod plan;
pub mod poller;
pub mod probe;
pub mod rtu;
pub mod schedule;
pub mod serial;
pub mod stats;
