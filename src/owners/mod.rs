//! For owners: the engineering report over a period and the handover baseline of a building,
//! both from the work-order store and the running gateway's state, never from the
//! time-series database.

pub mod handover;
pub mod report;
