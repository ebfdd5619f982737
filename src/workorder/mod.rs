//! Work orders: the store, the lifecycle and the notifiers (DESIGN §4).

pub mod types;
