//! Modbus: request planning, decoding and the link pollers.

pub mod codec;
