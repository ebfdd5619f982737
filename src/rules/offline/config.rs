//! `type = "offline"` as written, and its validation into an [`OfflineSpec`].

use serde::Deserialize;

use super::OfflineSpec;
use crate::config::Issues;
use crate::config::units::Duration;
use crate::rules::config::{Parsed, RuleCx, RuleKind, TypeConfig, nanos};

/// The keys of a `type = "offline"` rule, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::rules) struct OfflineConfig {
    /// No good sample of the asset for this long.
    after: Duration,
}

impl TypeConfig for OfflineConfig {
    fn validate<'a>(self, cx: &RuleCx<'a>, issues: &mut Issues) -> Parsed<'a> {
        let after_ns = nanos(Some(self.after));
        if after_ns <= 0 {
            cx.err(
                issues,
                "after",
                "expected a duration longer than zero, such as \"5m\"",
            );
            return None;
        }
        Some((
            RuleKind::Offline(OfflineSpec { after_ns }),
            cx.matched.to_vec(),
        ))
    }
}
