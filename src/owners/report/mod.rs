//! The owners' engineering report: availability, work orders, maintenance on time, energy.
