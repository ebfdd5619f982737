//! Work orders: the store, the lifecycle and the notifiers.

pub mod apply;
pub mod availability;
pub mod handle;
pub mod handover;
pub mod lifecycle;
pub mod notify;
pub mod outbox;
pub mod period;
pub mod schema;
pub mod store;
pub mod types;
