//! `type = "offline"`: no good sample of the asset for `after`. While it fires, the
//! asset's other rules neither fire nor clear (one comm-fault work order, not a storm of
//! secondary ones); the next good sample clears it.
//!
//! Silence is counted from the last good sample, or from the engine's start when there was
//! none. Across a restart the silence before the shutdown counts, the downtime does not: a
//! gateway that was down for an hour does not declare every device offline when it comes back.

use serde::{Deserialize, Serialize};

use super::threshold::fmt_duration_ns;

pub(in crate::rules) mod config;

/// A validated offline rule.
#[derive(Debug, Clone, PartialEq)]
pub struct OfflineSpec {
    pub after_ns: i64,
}

impl OfflineSpec {
    pub fn describe(&self) -> String {
        format!("no good sample for {}", fmt_duration_ns(self.after_ns))
    }

    pub fn threshold_text(&self) -> String {
        fmt_duration_ns(self.after_ns)
    }
}

/// The state of an offline rule on one asset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OfflineState {
    pub firing: bool,
    /// Silent past `after` while held by a rule-form `unless`: the asset counts as offline
    /// (its other rules are suspended) but no work order was opened.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub silent: bool,
    /// The last release of a hold (ns): silence counts from then at the earliest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<i64>,
    /// The asset's last good sample (ns), in saved state.
    #[serde(default)]
    pub last_seen: Option<i64>,
    /// The engine's clock when the state was saved (ns): the silence between `last_seen` and
    /// `saved_at` carries over a restart.
    #[serde(default)]
    pub saved_at: Option<i64>,
}

impl OfflineState {
    /// The asset counts as offline (fired, or silent while held).
    pub fn offline(&self) -> bool {
        self.firing || self.silent
    }
}

/// The instant silence is counted from, given the last good sample and when counting started.
#[inline]
pub fn silent_since(last_seen: i64, counting_from: i64) -> i64 {
    last_seen.max(counting_from)
}
