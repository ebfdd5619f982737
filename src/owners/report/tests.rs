//! The arithmetic's corner cases on plain inputs (the scripted month through a real store is
//! in tests/report.rs).

use chrono::{DateTime, Duration, TimeZone, Utc};

use super::avail::clip;
use super::orders::nearest_rank;
use super::*;
use crate::rules::types::{Priority, WorkOrderKind};
use crate::workorder::availability::AvailState;
use crate::workorder::types::{ConditionState, Status};

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn span(asset: &str, state: AvailState, start: DateTime<Utc>, end: DateTime<Utc>) -> Span {
    Span {
        id: start.timestamp_millis(),
        asset: asset.into(),
        day: String::new(),
        state,
        start_ms: start.timestamp_millis(),
        end_ms: end.timestamp_millis(),
    }
}

fn inputs() -> ReportInputs {
    ReportInputs {
        gateway_id: "gw".into(),
        site: None,
        timezone: chrono_tz::UTC,
        from: t("2026-11-01T00:00:00Z"),
        to: t("2026-11-02T00:00:00Z"),
        now: t("2026-12-01T00:00:00Z"),
        building: None,
        assets: ["EL-1", "EL-2"]
            .iter()
            .map(|id| ReportAsset {
                id: id.to_string(),
                name: None,
                building: Some(if *id == "EL-1" { "A" } else { "B" }.into()),
                floor: None,
                device_type: "elevator".into(),
            })
            .collect(),
        work_orders: Vec::new(),
        spans: Vec::new(),
        counter_days: Vec::new(),
        response_times: ResponseTimes::default(),
    }
}

#[test]
fn nearest_rank_percentiles() {
    let v = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    assert_eq!(nearest_rank(&v, 50.0), Some(5));
    assert_eq!(nearest_rank(&v, 90.0), Some(9));
    assert_eq!(nearest_rank(&[7], 90.0), Some(7));
    assert_eq!(nearest_rank(&[1, 2, 3, 4], 50.0), Some(2));
    assert_eq!(nearest_rank(&[], 50.0), None);
}

#[test]
fn overlapping_spans_count_once_and_are_cut_to_the_period() {
    let a = span(
        "X",
        AvailState::Available,
        Utc.timestamp_millis_opt(0).unwrap(),
        Utc.timestamp_millis_opt(100).unwrap(),
    );
    let b = span(
        "X",
        AvailState::Offline,
        Utc.timestamp_millis_opt(50).unwrap(),
        Utc.timestamp_millis_opt(300).unwrap(),
    );
    let got = clip(&[&a, &b], 10, 200);
    assert_eq!((got.available_ms, got.offline_ms), (90, 100));
}

#[test]
fn an_asset_never_seen_has_no_data_not_full_availability() {
    let mut i = inputs();
    i.spans = vec![span(
        "EL-1",
        AvailState::Available,
        i.from,
        i.from + Duration::hours(12),
    )];
    let r = build(i);
    let el2 = &r.availability.assets[1];
    assert_eq!(el2.key, "EL-2");
    assert_eq!(el2.availability_pct, None);
    assert_eq!(el2.monitored_pct, Some(0.0));
    assert_eq!(el2.not_monitored_s, 86_400);
    let el1 = &r.availability.assets[0];
    assert_eq!(el1.availability_pct, Some(100.0));
    assert_eq!(el1.monitored_pct, Some(50.0));
    // The total: 12 h available out of 48 asset-hours.
    assert_eq!(r.availability.total.availability_pct, Some(100.0));
    assert_eq!(r.availability.total.monitored_pct, Some(25.0));
    assert_eq!(r.availability.total.not_monitored_h, 36.0);
    // A building limits the assets.
    let mut i = inputs();
    i.building = Some("B".into());
    let r = build(i);
    assert_eq!(r.availability.assets.len(), 1);
    assert_eq!(r.availability.buildings[0].key, "B");
}

#[test]
fn a_period_not_yet_ended_is_taken_as_of_now() {
    let mut i = inputs();
    i.now = i.from + Duration::hours(6);
    let r = build(i);
    assert!(!r.period.closed);
    assert_eq!(r.period.seconds, 6 * 3600);
    assert_eq!(r.period.as_of, "2026-11-01T06:00:00+00:00");
    assert_eq!(r.availability.assets[0].not_monitored_h, 6.0);
    assert!(r.energy.is_none(), "no power meter, no energy section");
}

fn corrective(priority: Priority, opened: DateTime<Utc>) -> WorkOrder {
    let due = opened + Duration::from_std(ResponseTimes::default().for_priority(priority)).unwrap();
    WorkOrder {
        id: 1,
        key: "k".into(),
        asset: "EL-1".into(),
        site: None,
        building: Some("A".into()),
        floor: None,
        device_type: "elevator".into(),
        rule: "r".into(),
        kind: WorkOrderKind::Corrective,
        priority,
        title: "t".into(),
        description: None,
        status: Status::Open,
        condition: ConditionState::Active,
        opened_at: opened,
        acknowledged_at: None,
        condition_cleared_at: None,
        resolved_at: None,
        closed_at: None,
        due_at: due,
        occurrences: 1,
        last_triggered_at: opened,
        flapping: false,
        evidence: Default::default(),
        acknowledged_by: None,
        resolved_by: None,
        closed_by: None,
        note: None,
    }
}

#[test]
fn unanswered_work_orders_count_by_when_they_went() {
    let mut i = inputs();
    let opened = i.from + Duration::hours(1);
    let minutes = |m| opened + Duration::minutes(m);
    // Urgent (30 min): cleared by itself after 10 min (no answer needed), cleared by itself
    // after 40 min (nobody answered in time: late), cancelled after 5 min without an answer
    // (not counted), acknowledged after the as-of time (unanswered then: late).
    let mut self_cleared = corrective(Priority::Urgent, opened);
    self_cleared.condition_cleared_at = Some(minutes(10));
    self_cleared.resolved_at = Some(minutes(10));
    let mut cleared_late = corrective(Priority::Urgent, opened);
    cleared_late.condition_cleared_at = Some(minutes(40));
    cleared_late.resolved_at = Some(minutes(40));
    let mut cancelled = corrective(Priority::Urgent, opened);
    cancelled.closed_at = Some(minutes(5));
    let mut answered_later = corrective(Priority::Urgent, opened);
    answered_later.acknowledged_at = Some(i.to + Duration::hours(1));
    // The gateway's own resolution (a calendar job seen done) is not a response either.
    let mut done_by_gateway = corrective(Priority::Urgent, opened);
    done_by_gateway.resolved_at = Some(minutes(20));
    done_by_gateway.resolved_by = Some("facilityd".into());
    i.work_orders = vec![
        self_cleared,
        cleared_late,
        cancelled,
        answered_later,
        done_by_gateway,
    ];
    let r = build(i);
    let u = &r.corrective.by_priority[0];
    assert_eq!(
        (u.opened, u.resolved, u.cancelled, u.unresolved),
        (5, 3, 1, 1)
    );
    assert_eq!(
        (
            u.response.measured,
            u.response.on_time,
            u.response.late,
            u.response.pending
        ),
        (0, 0, 2, 0)
    );
    assert_eq!(u.response.on_time_pct, Some(0.0));
    // Repairs: 10 and 20 min on time, 40 min late, the unanswered one late, the cancelled one
    // not counted.
    assert_eq!(
        (
            u.repair.measured,
            u.repair.on_time,
            u.repair.late,
            u.repair.median_min
        ),
        (3, 2, 2, Some(20.0))
    );
    assert_eq!(r.oldest_unresolved.len(), 1);
    assert_eq!(r.oldest_unresolved[0].age_h, 23.0);
}
