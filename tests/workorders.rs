//! The work-order store, its outbox and the webhook notifier, against real SQLite files and a
//! real HTTP server (axum on a free port). No mocks.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::{DateTime, TimeZone, Utc};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use facilityd::profile::DeviceType;
use facilityd::rules::types::{
    AffectedAsset, AssetInfo, DoneEvidence, Evidence, EvidenceReading, EvidenceValue, Priority,
    Trigger, TriggerChange, WorkOrderKind, WorkOrderTemplate,
};
use facilityd::workorder::handle::StoreHandle;
use facilityd::workorder::notify::webhook::{WebhookNotifier, parse_notifiers};
use facilityd::workorder::notify::{AssetDirectory, Notifier, run_notifier};
use facilityd::workorder::outbox::DeliveryState;
use facilityd::workorder::schema;
use facilityd::workorder::store::{ListFilter, ResponseTimes, StoreError, WorkOrderStore};
use facilityd::workorder::types::{ConditionState, EventKind, Status, WorkOrderEvent};

// ---------------------------------------------------------------------------------------------
// Building blocks

fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_714_550_400 + s, 123_456_789).unwrap()
}

fn asset(id: &str) -> Arc<AssetInfo> {
    asset_in(id, Some("B"), DeviceType::Pump)
}

fn asset_in(id: &str, building: Option<&str>, device_type: DeviceType) -> Arc<AssetInfo> {
    Arc::new(AssetInfo {
        id: Arc::from(id),
        name: Some(format!("{id} name")),
        site: Some("tower-a".into()),
        building: building.map(Into::into),
        floor: Some("B1".into()),
        device_type,
        profile: device_type.as_str().into(),
        tags: BTreeMap::new(),
        points: Default::default(),
    })
}

fn template(priority: Priority, auto_resolve: bool) -> WorkOrderTemplate {
    WorkOrderTemplate {
        kind: WorkOrderKind::Corrective,
        priority,
        title: "Low discharge pressure".into(),
        description: Some("below 2 bar".into()),
        auto_resolve,
        meter: false,
        due_at: None,
    }
}

fn evidence(at: DateTime<Utc>, v: f64) -> Evidence {
    Evidence {
        point: Some("discharge_pressure_bar".into()),
        value: Some(EvidenceValue::Number(v)),
        unit: Some("bar".into()),
        threshold: Some("< 2".into()),
        first_value: Some(EvidenceValue::Number(v)),
        last_value: Some(EvidenceValue::Number(v)),
        min: Some(v),
        max: Some(v),
        readings: vec![EvidenceReading {
            at,
            value: EvidenceValue::Number(v),
        }],
        ..Evidence::default()
    }
}

fn trigger(a: &Arc<AssetInfo>, rule: &str, at: DateTime<Utc>, change: TriggerChange) -> Trigger {
    trigger_with(a, rule, at, change, template(Priority::High, false))
}

fn trigger_with(
    a: &Arc<AssetInfo>,
    rule: &str,
    at: DateTime<Utc>,
    change: TriggerChange,
    template: WorkOrderTemplate,
) -> Trigger {
    Trigger {
        asset: a.clone(),
        rule: Arc::from(rule),
        at,
        change,
        template,
    }
}

fn fire(a: &Arc<AssetInfo>, rule: &str, at: DateTime<Utc>, v: f64) -> Trigger {
    trigger(
        a,
        rule,
        at,
        TriggerChange::Fire {
            evidence: evidence(at, v),
        },
    )
}

fn clear(a: &Arc<AssetInfo>, rule: &str, at: DateTime<Utc>, auto_resolve: bool) -> Trigger {
    trigger_with(
        a,
        rule,
        at,
        TriggerChange::Clear {
            evidence: evidence(at, 2.5),
        },
        template(Priority::High, auto_resolve),
    )
}

fn open(path: &Path) -> WorkOrderStore {
    WorkOrderStore::open(path, ResponseTimes::default()).unwrap()
}

fn kinds(events: &[WorkOrderEvent]) -> Vec<EventKind> {
    events.iter().map(|e| e.event).collect()
}

// ---------------------------------------------------------------------------------------------
// Store

#[test]
fn a_repeat_fire_adds_occurrences_to_the_one_work_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&dir.path().join("wo.db"));
    let p = asset("P-1");
    let e1 = s.apply(&fire(&p, "low-pressure", t(0), 1.8), &[]).unwrap();
    let e2 = s.apply(&fire(&p, "low-pressure", t(10), 1.5), &[]).unwrap();
    let e3 = s
        .apply(
            &trigger(
                &p,
                "low-pressure",
                t(20),
                TriggerChange::Occurrence {
                    evidence: evidence(t(20), 1.9),
                },
            ),
            &[],
        )
        .unwrap();
    assert_eq!(kinds(&e1), [EventKind::Opened]);
    assert_eq!(kinds(&e2), [EventKind::Updated]);
    assert_eq!(kinds(&e3), [EventKind::Updated]);

    let all = s.list(&ListFilter::default()).unwrap();
    assert_eq!(all.len(), 1);
    let wo = &all[0];
    assert_eq!(wo.key, "tower-a/P-1/low-pressure");
    assert_eq!(wo.occurrences, 3);
    assert_eq!(wo.opened_at, t(0));
    assert_eq!(wo.last_triggered_at, t(20));
    assert_eq!(wo.status, Status::Open);
    assert_eq!(wo.evidence.first_value, Some(EvidenceValue::Number(1.8)));
    assert_eq!(wo.evidence.last_value, Some(EvidenceValue::Number(1.9)));
    assert_eq!(wo.evidence.min, Some(1.5));
    assert_eq!(wo.evidence.max, Some(1.9));
    assert_eq!(wo.evidence.readings.len(), 3);
    assert_eq!(
        (
            wo.asset.as_str(),
            wo.site.as_deref(),
            wo.building.as_deref()
        ),
        ("P-1", Some("tower-a"), Some("B"))
    );
    assert_eq!(
        (wo.device_type.as_str(), wo.rule.as_str(), wo.title.as_str()),
        ("pump", "low-pressure", "Low discharge pressure")
    );

    // seq 1, 2, 3 per work order; the idempotency key is ID:seq; each event carries the
    // record as it was after it.
    let events = s.events(wo.id).unwrap();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(
        events
            .iter()
            .map(WorkOrderEvent::idempotency_key)
            .collect::<Vec<_>>(),
        [
            format!("{}:1", wo.id),
            format!("{}:2", wo.id),
            format!("{}:3", wo.id)
        ]
    );
    assert_eq!(events[0].work_order.occurrences, 1);
    assert_eq!(events[2].work_order, *wo);
    assert_eq!(events, [e1, e2, e3].concat());
}

#[test]
fn due_at_comes_from_the_response_time_of_the_priority() {
    let dir = tempfile::tempdir().unwrap();
    let rt = ResponseTimes {
        urgent: Duration::from_secs(60),
        high: Duration::from_secs(600),
        normal: Duration::from_secs(6000),
        low: Duration::from_secs(60000),
    };
    let mut s = WorkOrderStore::open(&dir.path().join("wo.db"), rt).unwrap();
    for (i, (p, secs)) in [
        (Priority::Urgent, 60),
        (Priority::High, 600),
        (Priority::Normal, 6000),
        (Priority::Low, 60000),
    ]
    .into_iter()
    .enumerate()
    {
        let a = asset(&format!("P-{i}"));
        let ev = s
            .apply(
                &trigger_with(
                    &a,
                    "r",
                    t(5),
                    TriggerChange::Fire {
                        evidence: Evidence::default(),
                    },
                    template(p, false),
                ),
                &[],
            )
            .unwrap();
        let wo = &ev[0].work_order;
        assert_eq!(wo.priority, p);
        assert_eq!(wo.due_at, t(5) + chrono::Duration::seconds(secs));
    }
    let d = ResponseTimes::default();
    assert_eq!(
        [d.urgent, d.high, d.normal, d.low].map(|d| d.as_secs()),
        [1800, 4 * 3600, 2 * 86400, 14 * 86400]
    );
}

/// A calendar rule's fire: due on its due date, not after a response time.
fn calendar_fire(a: &Arc<AssetInfo>, at: DateTime<Utc>, due: DateTime<Utc>) -> Trigger {
    let mut tpl = template(Priority::Normal, false);
    tpl.kind = WorkOrderKind::Inspection;
    tpl.due_at = Some(due);
    trigger_with(
        a,
        "weekly-run",
        at,
        TriggerChange::Fire {
            evidence: Evidence {
                threshold: Some(due.to_rfc3339()),
                ..Evidence::default()
            },
        },
        tpl,
    )
}

fn done(a: &Arc<AssetInfo>, at: DateTime<Utc>) -> Trigger {
    let evidence = Evidence {
        point: Some("running".into()),
        done: Some(DoneEvidence {
            condition: "running = true for 30m".into(),
            started_at: at - chrono::Duration::minutes(30),
            completed_at: at,
            duration_s: 1800.0,
            and_point: Some("discharge_pressure_bar".into()),
            and_min: Some(6.1),
            and_avg: Some(6.4),
            and_max: Some(f64::NAN),
        }),
        ..Evidence::default()
    };
    trigger_with(
        a,
        "weekly-run",
        at,
        TriggerChange::Done { evidence },
        template(Priority::Normal, false),
    )
}

#[test]
fn a_calendar_work_order_is_due_on_its_date_and_a_run_resolves_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&dir.path().join("wo.db"));
    let p = asset("FP-1");
    // Nothing open: a run alone changes nothing.
    assert!(s.apply(&done(&p, t(0)), &[]).unwrap().is_empty());
    let e = s
        .apply(&calendar_fire(&p, t(10), t(3 * 86_400)), &[])
        .unwrap();
    assert_eq!(kinds(&e), [EventKind::Opened]);
    assert_eq!(e[0].work_order.due_at, t(3 * 86_400));
    // Missed: still open past its due date (overdue in the API: due_at < now).
    let e = s.apply(&done(&p, t(4 * 86_400)), &[]).unwrap();
    assert_eq!(kinds(&e), [EventKind::Resolved]);
    let wo = &e[0].work_order;
    assert_eq!(wo.status, Status::Resolved);
    assert_eq!(wo.condition, ConditionState::Cleared);
    assert_eq!(wo.resolved_at, Some(t(4 * 86_400)));
    assert_eq!(wo.resolved_by.as_deref(), Some("facilityd"));
    let d = wo.evidence.done.as_ref().expect("the run as evidence");
    assert_eq!(d.duration_s, 1800.0);
    assert_eq!((d.and_min, d.and_max), (Some(6.1), None), "NaN dropped");
    assert_eq!(s.get(wo.id).unwrap().as_ref(), Some(wo));
    // Done early: opened and resolved in one batch, both events kept.
    let e = s
        .apply_batch(
            &[
                calendar_fire(&p, t(8 * 86_400), t(10 * 86_400)),
                done(&p, t(8 * 86_400)),
            ],
            &[],
        )
        .unwrap();
    assert_eq!(kinds(&e), [EventKind::Opened, EventKind::Resolved]);
    assert_eq!(e[1].work_order.due_at, t(10 * 86_400));
    assert!(e[1].work_order.evidence.done.is_some());
}

#[test]
fn the_inhibitors_work_order_lists_each_affected_asset_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&dir.path().join("wo.db"));
    let ats = asset("ATS-A");
    let affected = |asset: &str, at| {
        trigger(
            &ats,
            "power-mains-lost",
            at,
            TriggerChange::Affected {
                evidence: Evidence {
                    affected: vec![AffectedAsset {
                        asset: asset.into(),
                        rule: "comm-lost".into(),
                        since: at,
                    }],
                    ..Evidence::default()
                },
            },
        )
    };
    // No work order yet: nothing to list under.
    assert!(s.apply(&affected("P-0", t(0)), &[]).unwrap().is_empty());
    s.apply(&fire(&ats, "power-mains-lost", t(1), 0.0), &[])
        .unwrap();
    let e1 = s.apply(&affected("P-1", t(300)), &[]).unwrap();
    let e2 = s.apply(&affected("P-2", t(301)), &[]).unwrap();
    let e3 = s.apply(&affected("P-1", t(900)), &[]).unwrap();
    assert_eq!(kinds(&e1), [EventKind::Updated]);
    assert_eq!(kinds(&e2), [EventKind::Updated]);
    assert!(e3.is_empty(), "listed once");
    let wo = &e2[0].work_order;
    assert_eq!(wo.occurrences, 1, "an affected asset is not an occurrence");
    assert_eq!(
        wo.evidence
            .affected
            .iter()
            .map(|a| (a.asset.as_str(), a.since))
            .collect::<Vec<_>>(),
        [("P-1", t(300)), ("P-2", t(301))]
    );
    let json = serde_json::to_value(wo).unwrap();
    assert_eq!(json["evidence"]["affected"][1]["rule"], "comm-lost");
}

#[test]
fn a_clear_without_auto_resolve_leaves_it_to_a_technician() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&dir.path().join("wo.db"));
    let p = asset("P-1");
    let opened = s.apply(&fire(&p, "r", t(0), 1.0), &[]).unwrap();
    let id = opened[0].work_order_id;

    let ev = s.apply(&clear(&p, "r", t(30), false), &[]).unwrap();
    assert_eq!(kinds(&ev), [EventKind::ConditionCleared]);
    let wo = s.get(id).unwrap().unwrap();
    assert_eq!(wo.condition, ConditionState::Cleared);
    assert_eq!(wo.condition_cleared_at, Some(t(30)));
    assert_eq!(wo.status, Status::Open);
    assert_eq!(wo.evidence.last_value, Some(EvidenceValue::Number(2.5)));

    // Cleared again: nothing changes.
    assert!(
        s.apply(&clear(&p, "r", t(40), false), &[])
            .unwrap()
            .is_empty()
    );

    // The condition returns: the same work order, active again.
    let ev = s.apply(&fire(&p, "r", t(50), 1.2), &[]).unwrap();
    assert_eq!(kinds(&ev), [EventKind::Updated]);
    let wo = s.get(id).unwrap().unwrap();
    assert_eq!((wo.condition, wo.occurrences), (ConditionState::Active, 2));
    assert_eq!(wo.condition_cleared_at, None);
    assert_eq!(s.events(id).unwrap().len(), 3);
}

#[test]
fn a_clear_with_auto_resolve_resolves_and_the_next_episode_opens_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&dir.path().join("wo.db"));
    let gw = asset_in("tower-a-gw1", None, DeviceType::Other);
    let first = s.apply(&fire(&gw, "offline", t(0), 0.0), &[]).unwrap()[0].work_order_id;
    let ev = s.apply(&clear(&gw, "offline", t(60), true), &[]).unwrap();
    assert_eq!(
        kinds(&ev),
        [EventKind::ConditionCleared, EventKind::Resolved]
    );
    assert_eq!(ev[0].seq, 2);
    assert_eq!(ev[0].work_order.status, Status::Open);
    assert_eq!(ev[0].work_order.condition, ConditionState::Cleared);
    assert_eq!(ev[1].seq, 3);
    assert_eq!(ev[1].work_order.status, Status::Resolved);
    assert_eq!(ev[1].work_order.resolved_at, Some(t(60)));

    let second = s.apply(&fire(&gw, "offline", t(120), 0.0), &[]).unwrap();
    assert_eq!(kinds(&second), [EventKind::Opened]);
    assert_ne!(second[0].work_order_id, first);
    assert_eq!(second[0].seq, 1);
    assert_eq!(second[0].work_order.occurrences, 1);
    assert_eq!(s.get(first).unwrap().unwrap().status, Status::Resolved);
    assert_eq!(s.list(&ListFilter::default()).unwrap().len(), 2);
}

#[test]
fn manual_transitions_follow_the_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&dir.path().join("wo.db"));
    let p = asset("P-1");
    let id = s.apply(&fire(&p, "r", t(0), 1.0), &[]).unwrap()[0].work_order_id;

    let (wo, ev) = s.acknowledge(id, Some("ana"), None, t(10)).unwrap();
    assert_eq!(
        (wo.status, wo.acknowledged_at),
        (Status::Acknowledged, Some(t(10)))
    );
    assert_eq!(wo.acknowledged_by.as_deref(), Some("ana"));
    assert_eq!((ev[0].event, ev[0].seq), (EventKind::Acknowledged, 2));
    assert!(matches!(
        s.acknowledge(id, None, None, t(11)),
        Err(StoreError::Lifecycle {
            from: Status::Acknowledged,
            to: Status::Acknowledged
        })
    ));
    // A repeat while acknowledged still lands on it.
    assert_eq!(
        kinds(&s.apply(&fire(&p, "r", t(12), 1.0), &[]).unwrap()),
        [EventKind::Updated]
    );

    let (wo, ev) = s
        .resolve(id, Some("bo"), Some("replaced the seal"), t(20))
        .unwrap();
    assert_eq!((wo.status, wo.resolved_at), (Status::Resolved, Some(t(20))));
    assert_eq!(wo.note.as_deref(), Some("replaced the seal"));
    assert_eq!(ev[0].event, EventKind::Resolved);
    assert!(matches!(
        s.acknowledge(id, None, None, t(21)),
        Err(StoreError::Lifecycle {
            from: Status::Resolved,
            ..
        })
    ));
    let (wo, ev) = s.close(id, Some("cy"), None, t(30)).unwrap();
    assert_eq!((wo.status, wo.closed_at), (Status::Closed, Some(t(30))));
    assert_eq!((ev[0].event, ev[0].seq), (EventKind::Closed, 5));
    assert_eq!(wo.note.as_deref(), Some("replaced the seal"));
    // closed is final
    for r in [
        s.acknowledge(id, None, None, t(31)),
        s.resolve(id, None, None, t(31)),
        s.close(id, None, Some("again"), t(31)),
    ] {
        assert!(matches!(
            r,
            Err(StoreError::Lifecycle {
                from: Status::Closed,
                ..
            })
        ));
    }
    assert!(matches!(
        s.acknowledge(9999, None, None, t(0)),
        Err(StoreError::NotFound(9999))
    ));

    // Cancellation: closing an unresolved one needs a note (a blank one is none).
    let id2 = s.apply(&fire(&p, "r", t(40), 1.0), &[]).unwrap()[0].work_order_id;
    assert_ne!(id2, id);
    assert!(matches!(
        s.close(id2, None, None, t(41)),
        Err(StoreError::NoteRequired)
    ));
    assert!(matches!(
        s.close(id2, None, Some("   "), t(41)),
        Err(StoreError::NoteRequired)
    ));
    assert_eq!(s.get(id2).unwrap().unwrap().status, Status::Open);
    let (wo, ev) = s
        .close(id2, Some("ana"), Some("sensor test"), t(42))
        .unwrap();
    assert_eq!(wo.status, Status::Closed);
    assert_eq!(wo.resolved_at, None);
    assert_eq!((ev[0].event, ev[0].seq), (EventKind::Cancelled, 2));
    // The transitions that failed wrote nothing.
    assert_eq!(s.events(id).unwrap().len(), 5);
    assert_eq!(s.events(id2).unwrap().len(), 2);
}

#[test]
fn flapping_marks_and_unmarks_the_unresolved_work_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&dir.path().join("wo.db"));
    let p = asset("P-1");
    let flap = |on, at| trigger(&p, "r", at, TriggerChange::Flapping { flapping: on });
    assert!(s.apply(&flap(true, t(0)), &[]).unwrap().is_empty());
    let id = s.apply(&fire(&p, "r", t(1), 1.0), &[]).unwrap()[0].work_order_id;
    let ev = s.apply(&flap(true, t(2)), &[]).unwrap();
    assert_eq!(kinds(&ev), [EventKind::Flapping]);
    assert!(ev[0].work_order.flapping);
    assert!(s.apply(&flap(true, t(3)), &[]).unwrap().is_empty());
    let ev = s.apply(&flap(false, t(4)), &[]).unwrap();
    assert_eq!(kinds(&ev), [EventKind::Updated]);
    assert!(!s.get(id).unwrap().unwrap().flapping);
}

#[test]
fn one_unresolved_work_order_per_key_even_against_a_direct_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wo.db");
    let mut s = open(&path);
    let p = asset("P-1");
    let first = s.apply(&fire(&p, "r", t(0), 1.0), &[]).unwrap()[0].work_order_id;
    s.resolve(first, None, None, t(1)).unwrap();
    let second = s.apply(&fire(&p, "r", t(2), 1.0), &[]).unwrap()[0].work_order_id;
    // Other keys are independent.
    s.apply(&fire(&p, "other-rule", t(2), 1.0), &[]).unwrap();
    s.apply(&fire(&asset("P-2"), "r", t(2), 1.0), &[]).unwrap();
    assert_eq!(s.unresolved_for_asset("P-1").unwrap().len(), 2);

    // The partial unique index refuses a second unresolved one, whoever writes it.
    let raw = rusqlite::Connection::open(&path).unwrap();
    let err = raw
        .execute(
            "UPDATE work_orders SET status = 'open' WHERE id = ?1",
            [first],
        )
        .unwrap_err();
    assert!(err.to_string().contains("UNIQUE"), "{err}");
    drop(raw);
    assert_eq!(s.get(second).unwrap().unwrap().status, Status::Open);
}

#[test]
fn queries_for_the_api_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&dir.path().join("wo.db"));
    let (p1, p2) = (asset("P-1"), asset("P-2"));
    let urgent = |a: &Arc<AssetInfo>, at| {
        trigger_with(
            a,
            "fire",
            at,
            TriggerChange::Fire {
                evidence: Evidence::default(),
            },
            template(Priority::Urgent, false),
        )
    };
    let a = s.apply(&fire(&p1, "r", t(0), 1.0), &[]).unwrap()[0].work_order_id;
    let b = s.apply(&urgent(&p1, t(1)), &[]).unwrap()[0].work_order_id;
    let c = s.apply(&fire(&p2, "r", t(2), 1.0), &[]).unwrap()[0].work_order_id;
    let d = s.apply(&urgent(&p2, t(3)), &[]).unwrap()[0].work_order_id;
    s.acknowledge(b, None, None, t(4)).unwrap();
    s.resolve(c, None, None, t(5)).unwrap();

    let ids = |f: ListFilter| s.list(&f).unwrap().iter().map(|w| w.id).collect::<Vec<_>>();
    assert_eq!(ids(ListFilter::default()), [d, c, b, a]);
    assert_eq!(
        ids(ListFilter {
            limit: Some(2),
            ..Default::default()
        }),
        [d, c]
    );
    assert_eq!(
        ids(ListFilter {
            asset: Some("P-1".into()),
            ..Default::default()
        }),
        [b, a]
    );
    assert_eq!(
        ids(ListFilter {
            status: Some(vec![Status::Open, Status::Resolved]),
            ..Default::default()
        }),
        [d, c, a]
    );
    assert_eq!(
        ids(ListFilter {
            status: Some(vec![]),
            ..Default::default()
        }),
        Vec::<i64>::new()
    );
    assert_eq!(
        ids(ListFilter {
            priority: Some(Priority::Urgent),
            asset: Some("P-2".into()),
            ..Default::default()
        }),
        [d]
    );
    assert_eq!(
        s.unresolved_by_priority().unwrap(),
        [
            (Priority::Urgent, 2),
            (Priority::High, 1),
            (Priority::Normal, 0),
            (Priority::Low, 0)
        ]
    );
    assert_eq!(
        s.unresolved_for_asset("P-2")
            .unwrap()
            .iter()
            .map(|w| w.id)
            .collect::<Vec<_>>(),
        [d]
    );
    assert!(s.get(12345).unwrap().is_none());
}

#[test]
fn rule_states_are_written_with_the_trigger_and_can_be_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wo.db");
    let mut s = open(&path);
    let p = asset("P-1");
    let st = |r: &str, a: &str, v: Value| (r.to_string(), a.to_string(), v);
    s.apply(
        &fire(&p, "r", t(0), 1.0),
        &[st("r", "P-1", json!({"firing": true, "since": 1}))],
    )
    .unwrap();
    s.save_rule_states(&[
        st("meter", "EL-1", json!({"baseline": 1200000})),
        st("old", "P-9", json!([1, 2])),
    ])
    .unwrap();
    // A trigger that changes no work order still saves the engine's state.
    s.apply(
        &clear(&asset("P-7"), "r", t(1), false),
        &[st("r", "P-7", json!({"firing": false}))],
    )
    .unwrap();
    s.save_rule_states(&[
        st("old", "P-9", Value::Null),
        st("r", "P-1", json!({"firing": false})),
    ])
    .unwrap();
    let expected = vec![
        st("meter", "EL-1", json!({"baseline": 1200000})),
        st("r", "P-1", json!({"firing": false})),
        st("r", "P-7", json!({"firing": false})),
    ];
    assert_eq!(s.load_rule_states().unwrap(), expected);
    drop(s);
    assert_eq!(open(&path).load_rule_states().unwrap(), expected);
}

#[test]
fn migrations_run_on_a_fresh_file_are_a_no_op_after_and_refuse_a_newer_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wo.db");
    let versions = || {
        let raw = rusqlite::Connection::open(&path).unwrap();
        let mut stmt = raw
            .prepare("SELECT version, applied_at FROM schema_version ORDER BY version")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?)))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    };
    let s = open(&path);
    assert_eq!(s.schema_version().unwrap(), schema::CURRENT_VERSION);
    drop(s);
    let first = versions();
    assert_eq!(
        first.iter().map(|v| v.0).collect::<Vec<_>>(),
        (1..=schema::CURRENT_VERSION).collect::<Vec<_>>()
    );
    let mut s = open(&path);
    s.apply(&fire(&asset("P-1"), "r", t(0), 1.0), &[]).unwrap();
    drop(s);
    assert_eq!(versions(), first);
    assert_eq!(open(&path).list(&ListFilter::default()).unwrap().len(), 1);

    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute(
        "INSERT INTO schema_version (version) VALUES (?1)",
        [schema::CURRENT_VERSION + 1],
    )
    .unwrap();
    drop(raw);
    match WorkOrderStore::open(&path, ResponseTimes::default()) {
        Err(StoreError::NewerSchema { found, known }) => {
            assert_eq!(
                (found, known),
                (schema::CURRENT_VERSION + 1, schema::CURRENT_VERSION)
            )
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
}

#[test]
fn the_outbox_hands_out_one_event_per_work_order_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&dir.path().join("wo.db"));
    let (p1, p2) = (asset("P-1"), asset("P-2"));
    // Written before any notifier is registered: delivered to none.
    s.apply(&fire(&asset("P-0"), "r", t(0), 1.0), &[]).unwrap();
    s.register_notifiers(&["a".into(), "b".into()]).unwrap();
    let w1 = s.apply(&fire(&p1, "r", t(1), 1.0), &[]).unwrap()[0].work_order_id;
    let w2 = s.apply(&fire(&p2, "r", t(2), 1.0), &[]).unwrap()[0].work_order_id;
    s.apply(&fire(&p1, "r", t(3), 1.0), &[]).unwrap();
    s.acknowledge(w1, None, None, t(4)).unwrap();

    let keys = |s: &WorkOrderStore, n: &str| {
        s.next_deliveries(n, t(1000), 100)
            .unwrap()
            .iter()
            .map(|d| d.event.idempotency_key())
            .collect::<Vec<_>>()
    };
    let k = |w: i64, seq: u64| format!("{w}:{seq}");
    assert_eq!(keys(&s, "a"), [k(w1, 1), k(w2, 1)]);
    let head = s.next_deliveries("a", t(1000), 1).unwrap();
    assert_eq!(head.len(), 1);
    assert_eq!(head[0].attempts, 0);
    let id11 = head[0].event.id;

    // A retry waits for its time, and holds back the later events of its work order.
    s.mark_retry(id11, "a", "HTTP 503", t(5000)).unwrap();
    assert_eq!(keys(&s, "a"), [k(w2, 1)]);
    assert_eq!(s.next_retry_at("a").unwrap(), Some(t(5000)));
    let due = s.next_deliveries("a", t(5000), 10).unwrap();
    assert_eq!((due[0].event.id, due[0].attempts), (id11, 1));
    s.mark_delivered(id11, "a").unwrap();
    s.mark_delivered(id11, "a").unwrap(); // twice is harmless
    assert_eq!(keys(&s, "a"), [k(w2, 1), k(w1, 2)]);
    // Notifiers are independent.
    assert_eq!(keys(&s, "b"), [k(w1, 1), k(w2, 1)]);

    // A dead letter holds its work order back until retried; others carry on.
    let id12 = s
        .next_deliveries("a", t(1000), 10)
        .unwrap()
        .into_iter()
        .find(|d| d.event.idempotency_key() == k(w1, 2))
        .unwrap()
        .event
        .id;
    s.mark_dead(id12, "a", "HTTP 400: bad").unwrap();
    assert_eq!(keys(&s, "a"), [k(w2, 1)]);
    assert_eq!(s.next_retry_at("a").unwrap(), None);
    let dead = s.outbox(Some(DeliveryState::Dead), 10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (
            dead[0].outbox_id,
            dead[0].notifier.as_str(),
            dead[0].attempts
        ),
        (id12, "a", 1)
    );
    assert_eq!(dead[0].idempotency_key, k(w1, 2));
    assert_eq!(dead[0].last_error.as_deref(), Some("HTTP 400: bad"));
    assert_eq!(
        s.outbox_backlog().unwrap(),
        [
            ("a".to_string(), DeliveryState::Pending, 2),
            ("a".to_string(), DeliveryState::Dead, 1),
            ("b".to_string(), DeliveryState::Pending, 4),
            ("b".to_string(), DeliveryState::Dead, 0),
        ]
    );
    let before = s.outbox_writes();
    assert!(s.retry_dead(id12).unwrap());
    assert!(s.outbox_writes() > before);
    assert!(!s.retry_dead(id12).unwrap());
    assert_eq!(keys(&s, "a"), [k(w2, 1), k(w1, 2)]);

    // Unwanted events are skipped without counting an attempt.
    s.mark_skipped(id12, "a").unwrap();
    assert_eq!(keys(&s, "a"), [k(w2, 1), k(w1, 3)]);
    assert!(matches!(
        s.mark_delivered(id12, "nobody"),
        Err(StoreError::NoDelivery { .. })
    ));

    // A notifier no longer registered gets no new rows and leaves the API and metrics.
    s.register_notifiers(&["a".into()]).unwrap();
    assert_eq!(s.notifiers().unwrap(), ["a"]);
    s.apply(&fire(&p2, "r", t(5), 1.0), &[]).unwrap();
    assert_eq!(keys(&s, "b"), [k(w1, 1), k(w2, 1)]);
    assert!(
        s.outbox(None, 100)
            .unwrap()
            .iter()
            .all(|r| r.notifier == "a")
    );
    assert_eq!(s.outbox_backlog().unwrap().len(), 2);
}

#[test]
fn a_reopened_store_keeps_work_orders_events_rule_states_and_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wo.db");
    let mut s = open(&path);
    s.register_notifiers(&["hook".into()]).unwrap();
    let p = asset("P-1");
    let id = s
        .apply(
            &fire(&p, "r", t(0), 1.0),
            &[("r".into(), "P-1".into(), json!({"n": 1}))],
        )
        .unwrap()[0]
        .work_order_id;
    s.acknowledge(id, Some("ana"), Some("on it"), t(1)).unwrap();
    s.apply(&clear(&p, "r", t(2), false), &[]).unwrap();
    let id2 = s.apply(&fire(&asset("P-2"), "r", t(3), 9.0), &[]).unwrap()[0].work_order_id;
    let d = s.next_deliveries("hook", t(10), 10).unwrap();
    s.mark_delivered(d[0].event.id, "hook").unwrap();
    s.mark_dead(d[1].event.id, "hook", "HTTP 422").unwrap();
    let next = s.next_deliveries("hook", t(10), 10).unwrap();
    s.mark_retry(next[0].event.id, "hook", "timeout", t(500))
        .unwrap();

    let snapshot = |s: &WorkOrderStore| {
        (
            s.list(&ListFilter::default()).unwrap(),
            s.events(id).unwrap(),
            s.events(id2).unwrap(),
            s.load_rule_states().unwrap(),
            s.outbox(None, 100).unwrap(),
            s.outbox_backlog().unwrap(),
            s.next_retry_at("hook").unwrap(),
            s.next_deliveries("hook", t(1000), 10).unwrap(),
        )
    };
    let before = snapshot(&s);
    drop(s);
    let mut s = open(&path);
    assert_eq!(snapshot(&s), before);
    // And it carries on from there: seq continues, the key still dedups.
    let ev = s.apply(&fire(&p, "r", t(4), 1.0), &[]).unwrap();
    assert_eq!((ev[0].work_order_id, ev[0].seq), (id, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_handle_serves_async_and_blocking_callers_and_wakes_notifiers() {
    let dir = tempfile::tempdir().unwrap();
    let store = StoreHandle::open(&dir.path().join("wo.db"), ResponseTimes::default()).unwrap();
    let waker = store.outbox_waker();
    let other = store.clone();
    let id = tokio::task::spawn_blocking(move || {
        other.call_blocking(|s| {
            Ok(s.apply(&fire(&asset("P-1"), "r", t(0), 1.0), &[])?[0].work_order_id)
        })
    })
    .await
    .unwrap()
    .unwrap();
    // The write left a wake-up for the notifier loop.
    tokio::time::timeout(Duration::from_secs(5), waker.notified())
        .await
        .expect("woken by the new outbox entry");
    // A read leaves none.
    assert_eq!(store.get(id).await.unwrap().unwrap().occurrences, 1);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), waker.notified())
            .await
            .is_err()
    );
    assert!(matches!(
        store.acknowledge(id + 1, None, None, t(1)).await,
        Err(StoreError::NotFound(_))
    ));
}

// ---------------------------------------------------------------------------------------------
// Webhook against a real HTTP server

#[derive(Debug, Clone)]
struct Received {
    key: String,
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
    json: Value,
}

type Responder = Box<dyn FnMut(&str) -> u16 + Send>;

struct Hook {
    received: Mutex<Vec<Received>>,
    respond: Mutex<Responder>,
    delay: Duration,
}

impl Hook {
    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
    fn set(&self, r: impl FnMut(&str) -> u16 + Send + 'static) {
        *self.respond.lock().unwrap() = Box::new(r);
    }
    /// Idempotency keys answered 2xx, in arrival order.
    fn delivered(&self) -> Vec<String> {
        self.received()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .map(|r| r.key)
            .collect()
    }
}

async fn hook_handler(State(h): State<Arc<Hook>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !h.delay.is_zero() {
        tokio::time::sleep(h.delay).await;
    }
    let status = (h.respond.lock().unwrap())(&key);
    h.received.lock().unwrap().push(Received {
        key,
        status,
        headers,
        json: serde_json::from_slice(&body).unwrap_or(Value::Null),
        body: body.to_vec(),
    });
    StatusCode::from_u16(status).unwrap()
}

/// A webhook receiver on a free loopback port; returns it and its URL.
async fn serve_hook(delay: Duration) -> (Arc<Hook>, String) {
    let hook = Arc::new(Hook {
        received: Mutex::new(Vec::new()),
        respond: Mutex::new(Box::new(|_| 200)),
        delay,
    });
    let app = Router::new()
        .route("/hook", post(hook_handler))
        .with_state(hook.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (hook, url)
}

/// Builds notifiers from TOML `[[notify]]` items, as the daemon does.
fn notifiers(toml: &str, assets: &[Arc<AssetInfo>]) -> Vec<Arc<dyn Notifier>> {
    #[derive(serde::Deserialize)]
    struct F {
        notify: Vec<config::Value>,
    }
    let f: F = config::Config::builder()
        .add_source(config::File::from_str(toml, config::FileFormat::Toml))
        .build()
        .unwrap()
        .try_deserialize()
        .unwrap();
    let items: Vec<_> = f
        .notify
        .into_iter()
        .enumerate()
        .map(|(i, v)| ("facilityd.toml".to_string(), i, v))
        .collect();
    let assets: HashMap<String, Arc<AssetInfo>> = assets
        .iter()
        .map(|a| (a.id.to_string(), a.clone()))
        .collect();
    // Validated into specs, then built into running notifiers, as the gateway does at start.
    let assets = AssetDirectory::new(assets);
    parse_notifiers(&items)
        .unwrap()
        .iter()
        .map(|spec| {
            Arc::new(WebhookNotifier::new(spec, "gw-test", &assets).unwrap()) as Arc<dyn Notifier>
        })
        .collect()
}

/// Opens the store on its thread with the notifiers registered, and starts their loops.
async fn start(
    path: &Path,
    notifiers: &[Arc<dyn Notifier>],
) -> (
    StoreHandle,
    CancellationToken,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let store = StoreHandle::open(path, ResponseTimes::default()).unwrap();
    store
        .register_notifiers(notifiers.iter().map(|n| n.name().to_string()).collect())
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let tasks = notifiers
        .iter()
        .map(|n| {
            tokio::spawn(run_notifier(
                store.clone(),
                n.clone(),
                store.outbox_waker(),
                stop.clone(),
            ))
        })
        .collect();
    (store, stop, tasks)
}

async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until no delivery is pending or dead.
async fn wait_drained(store: &StoreHandle) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !store
        .outbox_backlog()
        .await
        .unwrap()
        .iter()
        .all(|(_, _, n)| *n == 0)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for the outbox to drain"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether each work order's keys arrived in seq order.
fn in_order_per_work_order(keys: &[String]) -> bool {
    let mut last: HashMap<&str, u64> = HashMap::new();
    keys.iter().all(|k| {
        let (wo, seq) = k.split_once(':').unwrap();
        let seq: u64 = seq.parse().unwrap();
        let prev = last.insert(wo, seq).unwrap_or(0);
        seq > prev
    })
}

fn count(keys: &[String], key: &str) -> usize {
    keys.iter().filter(|k| *k == key).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_delivers_each_event_once_with_body_headers_and_signature() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("webhook-secret");
    std::fs::write(&secret_file, "s3cret-key\n").unwrap();
    let (hook, url) = serve_hook(Duration::ZERO).await;
    let (p1, p2) = (
        asset("P-1"),
        asset_in("EL-1", Some("A"), DeviceType::Elevator),
    );
    let ns = notifiers(
        &format!(
            r#"
            [[notify]]
            type = "webhook"
            id = "cmms"
            url = "{url}"
            secret_file = "{}"
            headers = {{ "X-Tenant" = "acme" }}
            timeout = "5s"
            "#,
            secret_file.display()
        ),
        &[p1.clone(), p2.clone()],
    );
    let (store, stop, tasks) = start(&dir.path().join("wo.db"), &ns).await;

    let w1 = store
        .apply(fire(&p1, "r", t(0), 1.0), vec![])
        .await
        .unwrap()[0]
        .work_order_id;
    store
        .apply(fire(&p1, "r", t(1), 1.1), vec![])
        .await
        .unwrap();
    store
        .acknowledge(w1, Some("ana".into()), None, t(2))
        .await
        .unwrap();
    let w2 = store
        .apply(fire(&p2, "door", t(3), 0.0), vec![])
        .await
        .unwrap()[0]
        .work_order_id;
    store
        .apply(clear(&p1, "r", t(4), false), vec![])
        .await
        .unwrap();
    store
        .resolve(w1, None, Some("fixed".into()), t(5))
        .await
        .unwrap();
    store.close(w1, None, None, t(6)).await.unwrap();
    store
        .close(w2, None, Some("false alarm".into()), t(7))
        .await
        .unwrap();

    wait_until("8 deliveries", Duration::from_secs(20), || {
        hook.delivered().len() >= 8
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received = hook.received();
    assert_eq!(received.len(), 8, "exactly one request per event");

    let mut all_events = store.events(w1).await.unwrap();
    all_events.extend(store.events(w2).await.unwrap());
    assert_eq!(
        kinds(&all_events),
        [
            EventKind::Opened,
            EventKind::Updated,
            EventKind::Acknowledged,
            EventKind::ConditionCleared,
            EventKind::Resolved,
            EventKind::Closed,
            EventKind::Opened,
            EventKind::Cancelled
        ]
    );
    for ev in &all_events {
        let key = ev.idempotency_key();
        let r = received.iter().find(|r| r.key == key).expect(&key);
        let expected = json!({
            "event": ev.event.as_str(),
            "seq": ev.seq,
            "idempotency_key": key,
            "occurred_at": ev.occurred_at,
            "gateway": "gw-test",
            "work_order": ev.work_order,
        });
        assert_eq!(r.json, expected);
        let body = String::from_utf8(r.body.clone()).unwrap();
        let prefix = format!(
            r#"{{"event":"{}","seq":{},"idempotency_key":"{key}","occurred_at":"#,
            ev.event.as_str(),
            ev.seq
        );
        assert!(body.starts_with(&prefix), "{body}");
        assert!(
            body.contains(r#","gateway":"gw-test","work_order":{"id":"#),
            "{body}"
        );
        let h = |name: &str| r.headers.get(name).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(h("content-type").as_deref(), Some("application/json"));
        assert_eq!(h("idempotency-key"), Some(key.clone()));
        assert_eq!(h("x-tenant").as_deref(), Some("acme"));
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret-key").unwrap();
        mac.update(&r.body);
        let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(h("x-facilityd-signature"), Some(want));
    }
    assert!(in_order_per_work_order(&hook.delivered()));
    assert_eq!(
        store.outbox_backlog().await.unwrap(),
        [
            ("cmms".to_string(), DeliveryState::Pending, 0),
            ("cmms".to_string(), DeliveryState::Dead, 0)
        ]
    );
    let rows = store.outbox(None, 100).await.unwrap();
    assert_eq!(rows.len(), 8);
    assert!(
        rows.iter()
            .all(|r| r.state == DeliveryState::Delivered && r.attempts == 1)
    );

    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_match_filters_skip_unwanted_events() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, url) = serve_hook(Duration::ZERO).await;
    let (pump, lift) = (
        asset("P-1"),
        asset_in("EL-1", Some("A"), DeviceType::Elevator),
    );
    let ns = notifiers(
        &format!(
            r#"
            [[notify]]
            type = "mqtt"
            topic = "facilityd/{{site}}/work-orders/{{asset}}"
            [[notify]]
            type = "webhook"
            url = "{url}"
            events = ["opened", "cancelled"]
            match = {{ device_type = "elevator" }}
            "#
        ),
        &[pump.clone(), lift.clone()],
    );
    assert_eq!(ns.len(), 1);
    assert_eq!(ns[0].name(), "webhook:1");
    let (store, stop, _tasks) = start(&dir.path().join("wo.db"), &ns).await;
    let wp = store
        .apply(fire(&pump, "r", t(0), 1.0), vec![])
        .await
        .unwrap()[0]
        .work_order_id;
    let wl = store
        .apply(fire(&lift, "r", t(1), 1.0), vec![])
        .await
        .unwrap()[0]
        .work_order_id;
    store.acknowledge(wl, None, None, t(2)).await.unwrap();
    store
        .close(wl, None, Some("test".into()), t(3))
        .await
        .unwrap();
    store
        .close(wp, None, Some("test".into()), t(3))
        .await
        .unwrap();

    wait_drained(&store).await;
    assert_eq!(hook.delivered(), [format!("{wl}:1"), format!("{wl}:3")]);
    // Skipped ones count as delivered, without an attempt.
    let rows = store
        .outbox(Some(DeliveryState::Delivered), 100)
        .await
        .unwrap();
    assert_eq!(rows.len(), 5);
    assert_eq!(rows.iter().filter(|r| r.attempts == 0).count(), 3);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_outage_is_retried_until_everything_is_delivered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, url) = serve_hook(Duration::ZERO).await;
    hook.set(|_| 503);
    let (p1, p2) = (asset("P-1"), asset("P-2"));
    let ns = notifiers(
        &format!("[[notify]]\ntype = \"webhook\"\nurl = \"{url}\"\n"),
        &[],
    );
    let (store, stop, _tasks) = start(&dir.path().join("wo.db"), &ns).await;
    let w1 = store
        .apply(fire(&p1, "r", t(0), 1.0), vec![])
        .await
        .unwrap()[0]
        .work_order_id;
    let w2 = store
        .apply(fire(&p2, "r", t(0), 1.0), vec![])
        .await
        .unwrap()[0]
        .work_order_id;
    store
        .apply(fire(&p1, "r", t(1), 1.0), vec![])
        .await
        .unwrap();
    store.acknowledge(w2, None, None, t(2)).await.unwrap();
    store.acknowledge(w1, None, None, t(2)).await.unwrap();

    wait_until("two refused attempts", Duration::from_secs(20), || {
        hook.received().len() >= 2
    })
    .await;
    assert!(hook.delivered().is_empty());
    let rows = store
        .outbox(Some(DeliveryState::Pending), 100)
        .await
        .unwrap();
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().any(|r| {
        r.attempts > 0
            && r.last_error
                .as_deref()
                .is_some_and(|e| e.starts_with("HTTP 503"))
            && r.next_attempt_at.is_some()
    }));

    hook.set(|_| 200);
    wait_until("all 5 delivered", Duration::from_secs(30), || {
        hook.delivered().len() >= 5
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let delivered = hook.delivered();
    assert_eq!(delivered.len(), 5, "{delivered:?}");
    for k in [
        format!("{w1}:1"),
        format!("{w1}:2"),
        format!("{w1}:3"),
        format!("{w2}:1"),
        format!("{w2}:2"),
    ] {
        assert_eq!(count(&delivered, &k), 1, "{k} in {delivered:?}");
    }
    assert!(in_order_per_work_order(&delivered), "{delivered:?}");
    // Attempts, including the refused ones, never went out of order either.
    let attempted: Vec<String> = hook.received().into_iter().map(|r| r.key).collect();
    let mut firsts = Vec::new();
    for k in &attempted {
        if !firsts.contains(k) {
            firsts.push(k.clone());
        }
    }
    assert!(in_order_per_work_order(&firsts), "{attempted:?}");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_event_is_a_dead_letter_that_holds_back_its_work_order_until_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, url) = serve_hook(Duration::ZERO).await;
    let (p1, p2) = (asset("P-1"), asset("P-2"));
    let ns = notifiers(
        &format!("[[notify]]\ntype = \"webhook\"\nid = \"cmms\"\nurl = \"{url}\"\n"),
        &[],
    );
    let (store, stop, _tasks) = start(&dir.path().join("wo.db"), &ns).await;
    // Refuse the second event of the first work order.
    let w1 = store
        .apply(fire(&p1, "r", t(0), 1.0), vec![])
        .await
        .unwrap()[0]
        .work_order_id;
    let refused = format!("{w1}:2");
    let r = refused.clone();
    hook.set(move |k| if k == r { 400 } else { 200 });
    let w2 = store
        .apply(fire(&p2, "r", t(1), 1.0), vec![])
        .await
        .unwrap()[0]
        .work_order_id;
    store.acknowledge(w1, None, None, t(2)).await.unwrap();
    store
        .apply(fire(&p1, "r", t(3), 1.0), vec![])
        .await
        .unwrap();
    store.acknowledge(w2, None, None, t(4)).await.unwrap();
    store
        .apply(fire(&p2, "r", t(5), 1.0), vec![])
        .await
        .unwrap();

    wait_until(
        "the other work order delivered",
        Duration::from_secs(20),
        || {
            let d = hook.delivered();
            d.contains(&format!("{w2}:3")) && hook.received().iter().any(|r| r.key == refused)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let delivered = hook.delivered();
    assert_eq!(
        delivered
            .iter()
            .filter(|k| k.starts_with(&format!("{w1}:")))
            .collect::<Vec<_>>(),
        [&format!("{w1}:1")],
        "the later events of the refused one are held back"
    );
    assert_eq!(count(&delivered, &format!("{w2}:1")), 1);
    assert_eq!(count(&delivered, &format!("{w2}:2")), 1);
    assert_eq!(
        hook.received().iter().filter(|r| r.key == refused).count(),
        1,
        "a permanent refusal is not retried by itself"
    );
    let dead = store.outbox(Some(DeliveryState::Dead), 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].idempotency_key, refused);
    assert!(
        dead[0]
            .last_error
            .as_deref()
            .unwrap()
            .starts_with("HTTP 400")
    );
    assert_eq!(
        store.outbox_backlog().await.unwrap(),
        [
            ("cmms".to_string(), DeliveryState::Pending, 1),
            ("cmms".to_string(), DeliveryState::Dead, 1)
        ]
    );

    // Fixed on the other side; retried through the API: it and the held-back one follow.
    hook.set(|_| 200);
    assert!(store.retry_dead(dead[0].outbox_id).await.unwrap());
    wait_until("the held-back events", Duration::from_secs(20), || {
        hook.delivered().contains(&format!("{w1}:3"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let delivered = hook.delivered();
    assert_eq!(delivered.len(), 6, "{delivered:?}");
    assert!(in_order_per_work_order(&delivered), "{delivered:?}");
    assert!(
        store
            .outbox(Some(DeliveryState::Dead), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!store.retry_dead(dead[0].outbox_id).await.unwrap());
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_backlog_loses_nothing_and_repeats_at_most_the_delivery_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wo.db");
    // A slow receiver, so that the backlog is still being delivered when we pull the plug.
    let (hook, url) = serve_hook(Duration::from_millis(40)).await;
    let toml = format!("[[notify]]\ntype = \"webhook\"\nid = \"cmms\"\nurl = \"{url}\"\n");
    let (store, stop, tasks) = start(&path, &notifiers(&toml, &[])).await;
    let mut expected = Vec::new();
    for i in 0..10 {
        let a = asset(&format!("P-{i}"));
        let id = store.apply(fire(&a, "r", t(i), 1.0), vec![]).await.unwrap()[0].work_order_id;
        store
            .apply(fire(&a, "r", t(i + 1), 1.0), vec![])
            .await
            .unwrap();
        store.acknowledge(id, None, None, t(i + 2)).await.unwrap();
        expected.extend((1..=3).map(|seq| format!("{id}:{seq}")));
    }
    wait_until("part of the backlog", Duration::from_secs(20), || {
        hook.received().len() >= 8
    })
    .await;
    // The "crash": the loop is dropped wherever it is, and the store with it.
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let _ = task.await;
    }
    drop(stop);
    drop(store);
    let before = hook.delivered().len();
    assert!(
        before < expected.len(),
        "the crash came too late to test anything"
    );

    let (store, stop, _tasks) = start(&path, &notifiers(&toml, &[])).await;
    wait_until("the whole backlog", Duration::from_secs(30), || {
        let d = hook.delivered();
        expected.iter().all(|k| d.contains(k))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let delivered = hook.delivered();
    let repeated: Vec<&String> = expected
        .iter()
        .filter(|k| count(&delivered, k) > 1)
        .collect();
    assert!(
        repeated.len() <= 1,
        "repeated beyond the one in flight: {repeated:?}"
    );
    assert_eq!(delivered.len(), expected.len() + repeated.len());
    let mut firsts: Vec<String> = Vec::new();
    for k in &delivered {
        if !firsts.contains(k) {
            firsts.push(k.clone());
        }
    }
    assert!(in_order_per_work_order(&firsts), "{delivered:?}");
    assert!(
        store
            .outbox(Some(DeliveryState::Pending), 100)
            .await
            .unwrap()
            .is_empty()
    );
    stop.cancel();
}
