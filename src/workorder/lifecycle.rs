//! The work-order lifecycle as pure functions: which status changes are allowed and
//! which event each one emits, and how a repeat trigger's evidence is merged into the record.
//! No I/O: the store applies what these decide, in one transaction.

use crate::rules::types::{AffectedAsset, Evidence, EvidenceReading};

use super::types::{EventKind, Status};

/// A change of status someone (or an `auto_resolve` rule) asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// `POST .../ack`.
    Acknowledge,
    /// `POST .../resolve`, or a cleared condition under `auto_resolve`.
    Resolve,
    /// `POST .../close`: closes a resolved work order, cancels an unresolved one.
    Close,
}

impl Action {
    /// The status this action aims at (for error messages).
    pub fn target(self) -> Status {
        match self {
            Action::Acknowledge => Status::Acknowledged,
            Action::Resolve => Status::Resolved,
            Action::Close => Status::Closed,
        }
    }
}

/// An allowed change: the new status and the event it emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub to: Status,
    pub event: EventKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    #[error("a work order that is {} cannot become {}", .from.as_str(), .to.as_str())]
    NotAllowed { from: Status, to: Status },
    /// Closing a work order that is not resolved cancels it, which needs a note.
    #[error("closing a work order that is not resolved cancels it and needs a note")]
    NoteRequired,
}

/// The transition table:
///
/// | from | acknowledge | resolve | close |
/// | --- | --- | --- | --- |
/// | open | acknowledged | resolved | closed (`cancelled`, needs a note) |
/// | acknowledged | - | resolved | closed (`cancelled`, needs a note) |
/// | resolved | - | - | closed |
/// | closed | - | - | - |
pub fn transition(
    from: Status,
    action: Action,
    has_note: bool,
) -> Result<Transition, LifecycleError> {
    use Action::*;
    use Status::*;
    let t = |to, event| Ok(Transition { to, event });
    match (from, action) {
        (Open, Acknowledge) => t(Acknowledged, EventKind::Acknowledged),
        (Open | Acknowledged, Resolve) => t(Resolved, EventKind::Resolved),
        (Resolved, Close) => t(Closed, EventKind::Closed),
        (Open | Acknowledged, Close) if has_note => t(Closed, EventKind::Cancelled),
        (Open | Acknowledged, Close) => Err(LifecycleError::NoteRequired),
        (from, action) => Err(LifecycleError::NotAllowed {
            from,
            to: action.target(),
        }),
    }
}

/// Not yet resolved: a trigger for its key updates it rather than opening another.
pub fn is_unresolved(s: Status) -> bool {
    matches!(s, Status::Open | Status::Acknowledged)
}

/// How many readings a work order keeps as evidence (the most recent ones).
pub const MAX_READINGS: usize = 50;

/// Merges the evidence of a repeat trigger into a work order's evidence: readings newer than
/// the last kept one are appended (the engine sends its recent window each time, so older ones
/// are already there), bounded to [`MAX_READINGS`]; min and max widen; the first value stays;
/// the current value, last value and descriptive fields take the newer ones where given.
pub fn merge_evidence(old: &mut Evidence, new: &Evidence) {
    if new.point.is_some() {
        old.point.clone_from(&new.point);
    }
    if new.unit.is_some() {
        old.unit.clone_from(&new.unit);
    }
    if new.threshold.is_some() {
        old.threshold.clone_from(&new.threshold);
    }
    if new.value.is_some() {
        old.value.clone_from(&new.value);
    }
    if old.first_value.is_none() {
        old.first_value.clone_from(&new.first_value);
    }
    if new.last_value.is_some() {
        old.last_value.clone_from(&new.last_value);
    }
    if new.done.is_some() {
        old.done.clone_from(&new.done);
    }
    merge_affected(&mut old.affected, &new.affected);
    old.min = widen(old.min, new.min, f64::min);
    old.max = widen(old.max, new.max, f64::max);
    let last = old.readings.last().map(|r| r.at);
    old.readings.extend(
        new.readings
            .iter()
            .filter(|r| last.is_none_or(|t| r.at > t))
            .cloned(),
    );
    bound_readings(&mut old.readings);
}

/// Most (asset, rule) pairs a work order lists as affected.
pub const MAX_AFFECTED: usize = 1000;

/// Appends the (asset, rule) pairs not listed yet (the first `since` stays), up to
/// [`MAX_AFFECTED`]. Returns whether the list grew.
pub fn merge_affected(old: &mut Vec<AffectedAsset>, new: &[AffectedAsset]) -> bool {
    let before = old.len();
    for a in new {
        if old.len() < MAX_AFFECTED && !old.iter().any(|o| o.asset == a.asset && o.rule == a.rule) {
            old.push(a.clone());
        }
    }
    old.len() > before
}

/// Keeps the most recent [`MAX_READINGS`] readings.
pub fn bound_readings(readings: &mut Vec<EvidenceReading>) {
    if readings.len() > MAX_READINGS {
        readings.drain(..readings.len() - MAX_READINGS);
    }
}

fn widen(a: Option<f64>, b: Option<f64>, f: fn(f64, f64) -> f64) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::types::EvidenceValue;
    use chrono::{TimeZone, Utc};

    const STATUSES: [Status; 4] = [
        Status::Open,
        Status::Acknowledged,
        Status::Resolved,
        Status::Closed,
    ];
    const ACTIONS: [Action; 3] = [Action::Acknowledge, Action::Resolve, Action::Close];

    #[test]
    fn the_whole_table() {
        use Action::*;
        use EventKind as E;
        use Status::*;
        let ok = |to, event| Ok(Transition { to, event });
        let no = |from, to| Err(LifecycleError::NotAllowed { from, to });
        let expect = |from, action, note| -> Result<Transition, LifecycleError> {
            match (from, action, note) {
                (Open, Acknowledge, _) => ok(Acknowledged, E::Acknowledged),
                (Acknowledged, Acknowledge, _) => no(Acknowledged, Acknowledged),
                (Resolved, Acknowledge, _) => no(Resolved, Acknowledged),
                (Closed, Acknowledge, _) => no(Closed, Acknowledged),
                (Open, Resolve, _) => ok(Resolved, E::Resolved),
                (Acknowledged, Resolve, _) => ok(Resolved, E::Resolved),
                (Resolved, Resolve, _) => no(Resolved, Resolved),
                (Closed, Resolve, _) => no(Closed, Resolved),
                (Open, Close, true) => ok(Closed, E::Cancelled),
                (Open, Close, false) => Err(LifecycleError::NoteRequired),
                (Acknowledged, Close, true) => ok(Closed, E::Cancelled),
                (Acknowledged, Close, false) => Err(LifecycleError::NoteRequired),
                (Resolved, Close, _) => ok(Closed, E::Closed),
                (Closed, Close, _) => no(Closed, Closed),
            }
        };
        for from in STATUSES {
            for action in ACTIONS {
                for note in [false, true] {
                    assert_eq!(
                        transition(from, action, note),
                        expect(from, action, note),
                        "{from:?} {action:?} note={note}"
                    );
                }
            }
        }
    }

    #[test]
    fn closed_is_final_and_unresolved_is_open_or_acknowledged() {
        for action in ACTIONS {
            assert!(transition(Status::Closed, action, true).is_err());
        }
        assert!(is_unresolved(Status::Open));
        assert!(is_unresolved(Status::Acknowledged));
        assert!(!is_unresolved(Status::Resolved));
        assert!(!is_unresolved(Status::Closed));
    }

    #[test]
    fn every_allowed_transition_moves_forward() {
        let rank = |s| STATUSES.iter().position(|x| *x == s).unwrap();
        for from in STATUSES {
            for action in ACTIONS {
                if let Ok(t) = transition(from, action, true) {
                    assert!(rank(t.to) > rank(from), "{from:?} -> {:?}", t.to);
                }
            }
        }
    }

    fn reading(s: i64, v: f64) -> EvidenceReading {
        EvidenceReading {
            at: Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap(),
            value: EvidenceValue::Number(v),
        }
    }

    fn ev(readings: Vec<EvidenceReading>) -> Evidence {
        let nums: Vec<f64> = readings
            .iter()
            .map(|r| match r.value {
                EvidenceValue::Number(v) => v,
                _ => unreachable!(),
            })
            .collect();
        Evidence {
            point: Some("p".into()),
            value: nums.last().copied().map(EvidenceValue::Number),
            unit: Some("bar".into()),
            threshold: Some("< 2".into()),
            first_value: nums.first().copied().map(EvidenceValue::Number),
            last_value: nums.last().copied().map(EvidenceValue::Number),
            min: nums.iter().copied().reduce(f64::min),
            max: nums.iter().copied().reduce(f64::max),
            readings,
            ..Evidence::default()
        }
    }

    #[test]
    fn merge_keeps_first_widens_and_appends_only_newer_readings() {
        let mut old = ev(vec![reading(0, 1.5), reading(1, 1.2)]);
        let new = ev(vec![reading(1, 1.2), reading(5, 0.9), reading(6, 1.8)]);
        merge_evidence(&mut old, &new);
        assert_eq!(old.first_value, Some(EvidenceValue::Number(1.5)));
        assert_eq!(old.last_value, Some(EvidenceValue::Number(1.8)));
        assert_eq!(old.value, Some(EvidenceValue::Number(1.8)));
        assert_eq!(old.min, Some(0.9));
        assert_eq!(old.max, Some(1.8));
        assert_eq!(
            old.readings,
            vec![
                reading(0, 1.5),
                reading(1, 1.2),
                reading(5, 0.9),
                reading(6, 1.8)
            ]
        );
    }

    #[test]
    fn merge_bounds_readings_to_the_most_recent() {
        let mut old = ev((0..40).map(|i| reading(i, i as f64)).collect());
        let new = ev((40..70).map(|i| reading(i, i as f64)).collect());
        merge_evidence(&mut old, &new);
        assert_eq!(old.readings.len(), MAX_READINGS);
        assert_eq!(old.readings.first(), Some(&reading(20, 20.0)));
        assert_eq!(old.readings.last(), Some(&reading(69, 69.0)));
        assert_eq!(old.min, Some(0.0));
        assert_eq!(old.max, Some(69.0));
    }

    #[test]
    fn merge_into_empty_evidence_takes_everything() {
        let mut old = Evidence::default();
        let new = ev(vec![reading(0, 3.0)]);
        merge_evidence(&mut old, &new);
        assert_eq!(old, new);
    }
}
