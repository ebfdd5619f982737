//! The handover baseline (承接查验): a building's equipment frozen at one moment, hashed.
