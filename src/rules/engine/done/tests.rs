//! Calendar rules with `done_when`: runs that resolve the open work order, runs too short or
//! broken, a missed occurrence, early completion, and a run across a restart.

use chrono::DateTime;

use crate::model::Value;
use crate::rules::engine::tests::*;
use crate::rules::types::{Trigger, TriggerChange};

const M: i64 = 60 * S;
const H: i64 = 60 * M;
const D: i64 = 24 * H;

/// Due on the 5th of each month at 09:00 UTC, raised 3 days early: the first due date after
/// T0 (2026-01-01) is 2026-01-05T09:00Z, raised 2026-01-02T09:00Z.
const MONTHLY_RUN: &str = r#"
[[rules]]
id = "monthly-run"
type = "calendar"
match = { ids = "P-1" }
every = "1mo"
start = "2025-12-05T09:00:00Z"
lead = "3d"
done_when = { point = "mode", equals = "run", for = "30m", and = { point = "discharge_pressure_bar", above = 3.0 } }
"#;

fn ns(s: &str) -> i64 {
    DateTime::parse_from_rfc3339(s)
        .unwrap()
        .timestamp_nanos_opt()
        .unwrap()
}

/// A run from `from`: pressure and mode every 5 minutes for `minutes`, then ticks each second
/// around the end; returns every trigger.
fn run(r: &mut Run, from: i64, minutes: i64, pressure: f64) -> Vec<Trigger> {
    let mut out = Vec::new();
    let mut t = from;
    while t <= from + minutes * M {
        out.extend(r.offer(0, "discharge_pressure_bar", Value::Float(pressure), t));
        out.extend(r.offer(0, "mode", Value::Str("run".into()), t));
        out.extend(r.tick(t));
        t += 5 * M;
    }
    out
}

fn stop(r: &mut Run, t: i64) -> Vec<Trigger> {
    r.offer(0, "mode", Value::Str("stop".into()), t)
}

fn raised(r: &mut Run) -> Trigger {
    let fired = r.tick(ns("2026-01-02T09:00:00Z"));
    assert_eq!(kinds(&fired), ["P-1/monthly-run:fire"]);
    fired.into_iter().next().unwrap()
}

#[test]
fn the_work_order_is_due_on_the_calendar_date() {
    let mut r = Run::new(MONTHLY_RUN);
    assert!(r.tick(ns("2026-01-02T08:59:59Z")).is_empty());
    let w = raised(&mut r);
    assert_eq!(w.template.due_at, Some(at(ns("2026-01-05T09:00:00Z"))));
    assert_eq!(
        evidence(&w).threshold.as_deref(),
        Some("2026-01-05T09:00:00+00:00")
    );
}

#[test]
fn a_run_long_enough_resolves_the_open_work_order_with_evidence() {
    let mut r = Run::new(MONTHLY_RUN);
    raised(&mut r);
    let from = ns("2026-01-03T10:00:00Z");
    r.offer(0, "discharge_pressure_bar", Value::Float(3.5), from);
    r.offer(0, "mode", Value::Str("run".into()), from);
    r.offer(
        0,
        "discharge_pressure_bar",
        Value::Float(4.5),
        from + 10 * M,
    );
    assert!(r.tick(from + 30 * M - S).is_empty());
    let done = r.tick(from + 30 * M);
    assert_eq!(kinds(&done), ["P-1/monthly-run:done"]);
    let ev = evidence(&done[0]);
    assert_eq!(ev.threshold.as_deref(), Some("2026-01-05T09:00:00+00:00"));
    let d = ev.done.as_ref().expect("the run");
    assert_eq!(d.started_at, at(from));
    assert_eq!(d.completed_at, at(from + 30 * M));
    assert_eq!(d.duration_s, 1800.0);
    assert_eq!(d.and_point.as_deref(), Some("discharge_pressure_bar"));
    assert_eq!(
        (d.and_min, d.and_avg, d.and_max),
        (Some(3.5), Some(4.0), Some(4.5))
    );
    assert_eq!(
        d.condition,
        "mode = run for 30m and discharge_pressure_bar > 3"
    );
    // Holding on counts once.
    assert!(run(&mut r, from + 31 * M, 60, 4.0).is_empty());
}

#[test]
fn a_run_too_short_or_broken_does_not_count_and_restarts() {
    let mut r = Run::new(MONTHLY_RUN);
    raised(&mut r);
    let from = ns("2026-01-03T10:00:00Z");
    // 25 minutes, then stopped: nothing.
    assert!(run(&mut r, from, 25, 4.0).is_empty());
    assert!(stop(&mut r, from + 26 * M).is_empty());
    assert!(r.tick(from + 2 * H).is_empty());
    // 20 minutes, the pressure drops (a reading that breaks it), then 30 more minutes.
    let again = from + 3 * H;
    assert!(run(&mut r, again, 20, 4.0).is_empty());
    assert!(
        r.offer(
            0,
            "discharge_pressure_bar",
            Value::Float(2.0),
            again + 22 * M
        )
        .is_empty()
    );
    assert!(r.tick(again + 31 * M).is_empty(), "the count restarted");
    let restart = again + 23 * M;
    let t = run(&mut r, restart, 30, 4.0);
    assert_eq!(kinds(&t), ["P-1/monthly-run:done"]);
    assert_eq!(
        evidence(&t[0]).done.as_ref().unwrap().started_at,
        at(restart)
    );
}

#[test]
fn a_gap_offline_restarts_the_count() {
    let toml = format!(
        "{MONTHLY_RUN}\n[[rules]]\nid = \"comm-lost\"\ntype = \"offline\"\nmatch = {{ ids = \"P-1\" }}\nafter = \"10m\"\n"
    );
    let mut r = Run::new(&toml);
    // Silent since the start: offline when the work order is raised; back at the run.
    let t = r.tick(ns("2026-01-02T09:00:00Z"));
    assert_eq!(kinds(&t), ["P-1/comm-lost:fire", "P-1/monthly-run:fire"]);
    let from = ns("2026-01-03T10:00:00Z");
    assert_eq!(kinds(&run(&mut r, from, 15, 4.0)), ["P-1/comm-lost:clear"]);
    // Silent from 15 to 26 minutes: offline at 25.
    assert_eq!(kinds(&r.tick(from + 25 * M)), ["P-1/comm-lost:fire"]);
    let back = from + 26 * M;
    let t = run(&mut r, back, 20, 4.0);
    assert_eq!(
        kinds(&t),
        ["P-1/comm-lost:clear"],
        "not done: the run restarted at 26 min"
    );
    let t = run(&mut r, back + 25 * M, 5, 4.0);
    assert_eq!(kinds(&t), ["P-1/monthly-run:done"]);
    assert_eq!(evidence(&t[0]).done.as_ref().unwrap().started_at, at(back));
}

#[test]
fn a_missed_month_leaves_the_work_order_open() {
    let mut r = Run::new(MONTHLY_RUN);
    raised(&mut r);
    // No run at all: nothing resolves it; February's due date adds an occurrence to it.
    let mut all = Vec::new();
    let mut t = ns("2026-01-02T09:00:01Z");
    while t < ns("2026-02-03T00:00:00Z") {
        all.extend(r.tick(t));
        t += H;
    }
    assert_eq!(kinds(&all), ["P-1/monthly-run:fire"]);
    assert_eq!(all[0].template.due_at, Some(at(ns("2026-02-05T09:00:00Z"))));
    // A run now resolves the open work order (the store keeps the January one open until then).
    let t = run(&mut r, ns("2026-02-03T10:00:00Z"), 30, 4.0);
    assert_eq!(kinds(&t), ["P-1/monthly-run:done"]);
}

#[test]
fn an_early_run_completes_the_next_occurrence_only() {
    let mut r = Run::new(MONTHLY_RUN);
    raised(&mut r);
    let t = run(&mut r, ns("2026-01-03T10:00:00Z"), 30, 4.0);
    assert_eq!(kinds(&t), ["P-1/monthly-run:done"]);
    assert!(stop(&mut r, ns("2026-01-03T11:00:00Z")).is_empty());
    r.e.work_order_resolved("P-1", "monthly-run");
    // January 20: done early for February 5 (no work order open, before the lead window).
    let early = ns("2026-01-20T10:00:00Z");
    assert!(run(&mut r, early, 30, 4.0).is_empty());
    assert!(stop(&mut r, early + 31 * M).is_empty());
    // A second early run counts for nothing (not for March).
    assert!(run(&mut r, early + D, 30, 4.0).is_empty());
    assert!(stop(&mut r, early + D + 31 * M).is_empty());
    // February's lead time: the work order opens and is resolved at once, with the run.
    let t = r.tick(ns("2026-02-02T09:00:00Z"));
    assert_eq!(kinds(&t), ["P-1/monthly-run:fire", "P-1/monthly-run:done"]);
    assert_eq!(t[0].template.due_at, Some(at(ns("2026-02-05T09:00:00Z"))));
    let d = evidence(&t[1]).done.as_ref().unwrap();
    assert_eq!(d.started_at, at(early));
    // March is unaffected: raised and left open.
    let t = r.tick(ns("2026-03-02T09:00:00Z"));
    assert_eq!(kinds(&t), ["P-1/monthly-run:fire"]);
    assert!(matches!(t[0].change, TriggerChange::Fire { .. }));
}

#[test]
fn a_manually_resolved_work_order_lets_the_next_run_count_early() {
    let mut r = Run::new(MONTHLY_RUN);
    raised(&mut r);
    assert_eq!(
        r.e.open_occurrences(),
        [("P-1".to_string(), "monthly-run".to_string())]
    );
    // Resolved through the API without a run seen.
    r.e.work_order_resolved("P-1", "monthly-run");
    assert!(r.e.open_occurrences().is_empty());
    assert!(run(&mut r, ns("2026-01-10T10:00:00Z"), 30, 4.0).is_empty());
    let t = r.tick(ns("2026-02-02T09:00:00Z"));
    assert_eq!(kinds(&t), ["P-1/monthly-run:fire", "P-1/monthly-run:done"]);
}

#[test]
fn a_restart_mid_run_keeps_the_progress() {
    let mut r = Run::new(MONTHLY_RUN);
    raised(&mut r);
    let from = ns("2026-01-03T10:00:00Z");
    assert!(run(&mut r, from, 20, 4.0).is_empty());
    let saved = r.e.snapshot();
    let mut r2 = Run::new(MONTHLY_RUN);
    r2.e.restore(saved);
    // Back at 22 minutes: the run goes on; a tick alone does not complete a restored run.
    assert!(r2.tick(from + 31 * M).is_empty());
    let t = run(&mut r2, from + 32 * M, 0, 4.0);
    assert_eq!(kinds(&t), ["P-1/monthly-run:done"]);
    let d = evidence(&t[0]).done.as_ref().unwrap();
    assert_eq!(d.started_at, at(from));
    assert_eq!(d.and_min, Some(4.0));
    // Early completion survives a restart too.
    r2.e.work_order_resolved("P-1", "monthly-run");
    stop(&mut r2, from + 40 * M);
    assert!(run(&mut r2, ns("2026-01-20T10:00:00Z"), 30, 4.0).is_empty());
    let mut r3 = Run::new(MONTHLY_RUN);
    r3.e.restore(r2.e.snapshot());
    let t = r3.tick(ns("2026-02-02T09:00:00Z"));
    assert_eq!(kinds(&t), ["P-1/monthly-run:fire", "P-1/monthly-run:done"]);
}

#[test]
fn without_done_when_readings_are_not_routed() {
    let plain = MONTHLY_RUN
        .lines()
        .filter(|l| !l.starts_with("done_when"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut r = Run::new(&plain);
    raised(&mut r);
    r.e.take_dirty();
    assert!(run(&mut r, ns("2026-01-03T10:00:00Z"), 60, 4.0).is_empty());
    assert!(r.e.take_dirty().is_empty());
}
