//! Availability tracking: each asset's state over time (available, unavailable, offline) and
//! its counters per local day, written to the work-order store for the owners' report.
