//! The tracker's pure core: state changes, spans cut at local midnight, counters per day.

use std::sync::Arc;

use chrono::DateTime;
use chrono_tz::Tz;

use super::Tracker;
use crate::device::{Device, DeviceSource};
use crate::model::{DeviceStatus, Reading, Record, Value};
use crate::profile::builtin;
use crate::workorder::availability::{AvailState, CounterDay, SpanWrite};

fn ms(rfc3339: &str) -> i64 {
    DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_millis()
}

fn device(id: &str, profile: &str, mqtt: bool) -> Arc<Device> {
    let (p, _) = builtin::load(profile).unwrap().unwrap().build().unwrap();
    Arc::new(Device {
        id: id.into(),
        name: None,
        site: None,
        building: Some("A".into()),
        floor: None,
        tags: Default::default(),
        profile: Arc::new(p),
        interval: std::time::Duration::from_secs(1),
        source: if mqtt {
            DeviceSource::Mqtt { topic: None }
        } else {
            modbus_source()
        },
        origin: ("test.toml".into(), 0),
    })
}

fn modbus_source() -> DeviceSource {
    DeviceSource::Modbus(crate::device::ModbusSource {
        link: crate::device::link::Link::parse("tcp://127.0.0.1:502").unwrap(),
        unit: 1,
        timeout: std::time::Duration::from_millis(300),
        max_gap: 10,
        max_registers: 125,
        even_count: false,
        probe_interval: std::time::Duration::from_secs(5),
    })
}

fn tz(name: &str) -> Tz {
    name.parse().unwrap()
}

fn status(slot: usize, online: bool) -> Record {
    Record::Status(DeviceStatus {
        device: slot,
        timestamp_ns: 0,
        online,
        poll_ms: 1.0,
        errors: 0,
    })
}

/// A reading of named points of the asset's profile.
fn reading(d: &Device, slot: usize, values: &[(&str, Value)]) -> Record {
    Record::Reading(Reading {
        device: slot,
        // Deliberately wrong: the tracker goes by the time it is given.
        timestamp_ns: 42,
        values: values
            .iter()
            .map(|(n, v)| (d.profile.point(n).unwrap().0, v.clone()))
            .collect(),
    })
}

/// The spans as (asset, day, state, start, end), written ones first.
fn spans(t: &mut Tracker, now: i64) -> Vec<SpanWrite> {
    let b = t.take_batch(now);
    let spans = b.spans.clone();
    let ids: Vec<i64> = (1..=spans.len() as i64).collect();
    t.done(b, Some(&ids), true);
    spans
}

fn states(v: &[SpanWrite]) -> Vec<(&str, AvailState, i64, i64)> {
    v.iter()
        .map(|s| (&*s.asset, s.state, s.start_ms, s.end_ms))
        .collect()
}

#[test]
fn states_change_with_status_and_the_profiles_conditions() {
    let lift = device("EL-1", "elevator", false);
    let t0 = ms("2026-11-10T02:00:00Z");
    let mut t = Tracker::new(tz("Asia/Shanghai"), &[(0, lift.clone())], vec![], t0);
    // Before the first status: not monitored, whatever the readings say.
    t.observe(
        &reading(
            &lift,
            0,
            &[("service_mode", Value::Str("inspection".into()))],
        ),
        t0,
    );
    assert_eq!(t.states()[0].1, None);
    assert!(t.take_batch(t0 + 1).is_empty());
    // The first status: unavailable at once (the reading before it counts).
    t.observe(&status(0, true), t0 + 1_000);
    t.observe(
        &reading(&lift, 0, &[("service_mode", Value::Str("auto".into()))]),
        t0 + 5_000,
    );
    t.observe(&status(0, true), t0 + 5_000);
    // A fault of level 2 does not make it unavailable; level 3 does.
    t.observe(
        &reading(&lift, 0, &[("fault_level", Value::Int(2))]),
        t0 + 6_000,
    );
    t.observe(
        &reading(&lift, 0, &[("fault_level", Value::Int(3))]),
        t0 + 7_000,
    );
    t.observe(&status(0, false), t0 + 9_000);
    t.observe(&status(0, false), t0 + 9_500);
    // Back online with the fault gone.
    t.observe(
        &reading(&lift, 0, &[("fault_level", Value::Int(0))]),
        t0 + 12_000,
    );
    t.observe(&status(0, true), t0 + 12_000);
    use AvailState::*;
    let got = spans(&mut t, t0 + 20_000);
    assert_eq!(
        states(&got),
        [
            ("EL-1", Unavailable, t0 + 1_000, t0 + 5_000),
            ("EL-1", Available, t0 + 5_000, t0 + 7_000),
            ("EL-1", Unavailable, t0 + 7_000, t0 + 9_000),
            ("EL-1", Offline, t0 + 9_000, t0 + 12_000),
            ("EL-1", Available, t0 + 12_000, t0 + 20_000),
        ]
    );
    assert!(got.iter().all(|s| s.day == "2026-11-10" && s.id.is_none()));
    // The next flush extends the open span's row; nothing else is written again.
    let again = spans(&mut t, t0 + 30_000);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, Some(5));
    assert_eq!(
        (again[0].start_ms, again[0].end_ms),
        (t0 + 12_000, t0 + 30_000)
    );
}

#[test]
fn a_span_is_cut_at_local_midnight_in_shanghai() {
    let pump = device("PU-1", "pump", false);
    // 23:59:50 in Shanghai is 15:59:50 UTC.
    let t0 = ms("2026-11-30T15:59:50Z");
    let mut t = Tracker::new(tz("Asia/Shanghai"), &[(0, pump.clone())], vec![], t0);
    t.observe(&status(0, true), t0);
    t.observe(&status(0, true), t0 + 20_000);
    let got = spans(&mut t, t0 + 30_000);
    let midnight = ms("2026-11-30T16:00:00Z");
    assert_eq!(
        got.iter()
            .map(|s| (&*s.day, s.start_ms, s.end_ms))
            .collect::<Vec<_>>(),
        [
            ("2026-11-30", t0, midnight),
            ("2026-12-01", midnight, t0 + 30_000)
        ]
    );
    // A flush after a quiet night (no records at all) still cuts at each midnight.
    let later = ms("2026-12-02T16:00:05Z");
    let got = spans(&mut t, later);
    assert_eq!(
        got.iter().map(|s| &*s.day).collect::<Vec<_>>(),
        ["2026-12-01", "2026-12-02", "2026-12-03"]
    );
    assert_eq!(
        got[0].id,
        Some(2),
        "the open span's row is extended to midnight"
    );
    assert_eq!(got[1].end_ms - got[1].start_ms, 24 * 3_600_000);
}

#[test]
fn a_span_is_cut_at_local_midnight_across_a_clock_change() {
    let door = device("DOOR-1", "access_door", false);
    // New York: the clocks go back at 02:00 on 1 November 2026; that day has 25 hours.
    let t0 = ms("2026-10-31T12:00:00Z");
    let mut t = Tracker::new(tz("America/New_York"), &[(0, door.clone())], vec![], t0);
    t.observe(&status(0, true), t0);
    t.observe(
        &reading(&door, 0, &[("lock_fault", Value::Bool(true))]),
        t0 + 1,
    );
    let got = spans(&mut t, ms("2026-11-02T12:00:00Z"));
    let days: Vec<(&str, AvailState, i64)> = got
        .iter()
        .map(|s| (&*s.day, s.state, s.end_ms - s.start_ms))
        .collect();
    assert_eq!(days[0], ("2026-10-31", AvailState::Available, 1));
    assert_eq!(days[1].0, "2026-10-31");
    // Midnight of 1 November is 04:00 UTC (EDT); of 2 November 05:00 UTC (EST).
    assert_eq!(got[1].end_ms, ms("2026-11-01T04:00:00Z"));
    assert_eq!(
        days[2],
        ("2026-11-01", AvailState::Unavailable, 25 * 3_600_000)
    );
    assert_eq!(got[3].start_ms, ms("2026-11-02T05:00:00Z"));
}

#[test]
fn counters_add_their_rises_per_day_and_a_reset_counts_from_zero() {
    let meter = device("PM-1", "power_meter", false);
    let tzs = tz("Asia/Shanghai");
    let t0 = ms("2026-11-30T15:00:00Z"); // 23:00 local
    let kwh = |v: f64| [("energy_import_kwh", Value::Float(v))];
    // Yesterday the store left it at 990 (the gateway was down since).
    let seed = CounterDay {
        asset: "PM-1".into(),
        point: "energy_import_kwh".into(),
        day: "2026-11-29".into(),
        first_value: 900.0,
        first_ms: 0,
        last_value: 990.0,
        last_ms: 1,
        increase: 90.0,
    };
    let mut t = Tracker::new(tzs, &[(0, meter.clone())], vec![seed], t0);
    t.observe(&reading(&meter, 0, &kwh(1000.0)), t0);
    t.observe(&reading(&meter, 0, &kwh(1004.0)), t0 + 60_000);
    // Reset to 0 and counting again: 3 more.
    t.observe(&reading(&meter, 0, &kwh(1.0)), t0 + 120_000);
    t.observe(&reading(&meter, 0, &kwh(3.0)), t0 + 180_000);
    // After midnight: the rise across it counts on the new day.
    let t1 = ms("2026-11-30T16:00:30Z");
    t.observe(&reading(&meter, 0, &kwh(5.0)), t1);
    t.observe(&reading(&meter, 0, &kwh(9.5)), t1 + 1_000);
    let days = |b: &super::tracker::Batch| -> Vec<(String, f64, f64, f64)> {
        b.counters
            .iter()
            .map(|d| (d.day.clone(), d.first_value, d.last_value, d.increase))
            .collect()
    };
    let b = t.take_batch(t1 + 2_000);
    // 10 from the seed's 990 while the gateway was down, 4, then 1 + 2 after the reset; the
    // new day: 2 across midnight, then 4.5.
    let want = [
        ("2026-11-30".to_string(), 1000.0, 3.0, 17.0),
        ("2026-12-01".to_string(), 5.0, 9.5, 6.5),
    ];
    assert_eq!(days(&b), want);
    // A failed write: both go with the next batch.
    t.done(b, None, false);
    let b = t.take_batch(t1 + 3_000);
    assert_eq!(days(&b), want);
    t.done(b, Some(&[]), true);
    assert!(t.take_batch(t1 + 4_000).counters.is_empty());

    // A restart the same day takes up today's row: its first value stays, the rise while
    // down counts.
    let today = CounterDay {
        asset: "PM-1".into(),
        point: "energy_import_kwh".into(),
        day: "2026-12-01".into(),
        first_value: 5.0,
        first_ms: t1,
        last_value: 9.5,
        last_ms: t1 + 1_000,
        increase: 6.5,
    };
    let t2 = t1 + 600_000;
    let mut t = Tracker::new(tzs, &[(0, meter.clone())], vec![today], t2);
    t.observe(&reading(&meter, 0, &kwh(12.0)), t2);
    let b = t.take_batch(t2 + 1_000);
    assert_eq!(days(&b), [("2026-12-01".to_string(), 5.0, 12.0, 9.0)]);
}

#[test]
fn a_reload_keeps_the_spans_of_assets_that_stay_and_ends_the_others() {
    let (a, b) = (
        device("EL-1", "elevator", false),
        device("PU-1", "pump", false),
    );
    let t0 = ms("2026-11-10T02:00:00Z");
    let sh = tz("Asia/Shanghai");
    let mut t = Tracker::new(sh, &[(0, a.clone()), (1, b.clone())], vec![], t0);
    t.observe(&status(0, true), t0);
    t.observe(&status(1, true), t0);
    assert_eq!(spans(&mut t, t0 + 1_000).len(), 2);
    // EL-1 changes (a new slot), PU-1 goes, DOOR-1 comes.
    let door = device("DOOR-1", "access_door", false);
    t.reconfigure(sh, &[(2, a.clone()), (3, door.clone())], t0 + 5_000);
    // A record still in flight for a retired slot is ignored.
    t.observe(&status(1, false), t0 + 5_500);
    t.observe(&status(0, false), t0 + 5_500);
    t.observe(&status(2, true), t0 + 6_000);
    use AvailState::*;
    let got = spans(&mut t, t0 + 10_000);
    assert_eq!(
        states(&got),
        [
            ("PU-1", Available, t0, t0 + 5_000),
            ("EL-1", Available, t0, t0 + 10_000),
        ]
    );
    // The lift's span is the row written before, extended.
    assert_eq!(got[1].id, Some(1));
    let st = t.states();
    assert_eq!(st.len(), 2);
    assert_eq!(st[1], ("DOOR-1".into(), None));
}

#[test]
fn an_mqtt_device_is_offline_once_it_goes_quiet() {
    let door = device("DOOR-M-1", "access_door_mqtt", true);
    let t0 = ms("2026-11-10T02:00:00Z");
    let mut t = Tracker::new(tz("UTC"), &[(0, door.clone())], vec![], t0);
    // The broker is not connected yet, then is, but nothing came from the door yet: not
    // monitored.
    t.observe(&status(0, false), t0);
    assert_eq!(t.states()[0].1, None);
    t.observe(&status(0, true), t0 + 500);
    assert_eq!(t.states()[0].1, None);
    t.observe(
        &reading(&door, 0, &[("lock_fault", Value::Bool(false))]),
        t0 + 2_000,
    );
    assert_eq!(t.states()[0].1, Some(AvailState::Available));
    let quiet = t0 + 2_000 + super::MQTT_SILENCE_MS + 1;
    t.observe(&status(0, true), quiet);
    assert_eq!(t.states()[0].1, Some(AvailState::Offline));
    // A message brings it back at once; a lost broker connection is offline.
    t.observe(
        &reading(&door, 0, &[("lock_fault", Value::Bool(true))]),
        quiet + 10,
    );
    assert_eq!(t.states()[0].1, Some(AvailState::Unavailable));
    t.observe(&status(0, false), quiet + 20);
    assert_eq!(t.states()[0].1, Some(AvailState::Offline));
    // A door never heard from since the start is offline once the grace has passed.
    let mut t = Tracker::new(tz("UTC"), &[(0, door.clone())], vec![], t0);
    t.observe(&status(0, true), t0 + super::MQTT_SILENCE_MS);
    assert_eq!(t.states()[0].1, Some(AvailState::Offline));
}

/// The flusher writes when asked (a report wants the last seconds) and once more at shutdown,
/// extending the same row; the handle says when the flusher is gone.
#[tokio::test]
async fn the_handle_flushes_now_and_shutdown_writes_the_last_seconds() {
    use crate::workorder::handle::StoreHandle;
    use crate::workorder::store::ResponseTimes;

    let dir = tempfile::tempdir().unwrap();
    let store = StoreHandle::open(&dir.path().join("wo.db"), ResponseTimes::default()).unwrap();
    let pump = device("PU-1", "pump", false);
    let avail = Arc::new(super::Availability::new(
        tz("Asia/Shanghai"),
        &[(0, pump.clone())],
        vec![],
    ));
    let (handle, requests) = super::handle(&avail);
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(super::run_flusher(
        avail.clone(),
        store.clone(),
        std::time::Duration::from_secs(3600),
        requests,
        stop.clone(),
    ));
    avail.observe(&status(0, true));
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    avail.observe(&reading(&pump, 0, &[("fault", Value::Bool(true))]));
    handle.flush().await.unwrap();
    let read = |store: StoreHandle| async move {
        store.call(|s| s.spans(0, i64::MAX, None)).await.unwrap()
    };
    let first = read(store.clone()).await;
    assert_eq!(first.len(), 2, "{first:?}");
    assert_eq!(first[1].state, AvailState::Unavailable);
    assert_eq!(
        handle.states(),
        [("PU-1".into(), Some(AvailState::Unavailable))]
    );
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    stop.cancel();
    task.await.unwrap();
    let last = read(store.clone()).await;
    assert_eq!(
        last.len(),
        2,
        "the open span's row is extended, not written again"
    );
    assert_eq!(last[1].id, first[1].id);
    assert!(last[1].end_ms >= first[1].end_ms + 30, "{last:?}");
    assert_eq!(handle.flush().await, Err(super::FlushError::NotRunning));
    assert_eq!(
        avail
            .stats
            .flushes
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

/// A batch the store did not take is written with the next one; spans written while the
/// counters failed are not written again (each span once, then extended).
#[test]
fn a_failed_write_is_retried_and_a_span_is_never_written_twice() {
    let lift = device("EL-1", "elevator", false);
    let t0 = ms("2026-11-10T02:00:00Z");
    let mut t = Tracker::new(tz("Asia/Shanghai"), &[(0, lift.clone())], vec![], t0);
    t.observe(&status(0, true), t0);
    t.observe(
        &reading(&lift, 0, &[("trapped_alarm", Value::Bool(true))]),
        t0 + 1_000,
    );
    t.observe(
        &reading(&lift, 0, &[("trips_total", Value::Float(10.0))]),
        t0 + 1_000,
    );
    // Nothing taken: the ended span and the open one come again, neither with a row yet.
    let b = t.take_batch(t0 + 2_000);
    assert_eq!(b.spans.len(), 2);
    t.done(b, None, false);
    let b = t.take_batch(t0 + 3_000);
    assert_eq!(
        states(&b.spans),
        [
            ("EL-1", AvailState::Available, t0, t0 + 1_000),
            ("EL-1", AvailState::Unavailable, t0 + 1_000, t0 + 3_000)
        ]
    );
    assert!(b.spans.iter().all(|s| s.id.is_none()));
    assert_eq!(b.counters.len(), 1);
    // The spans went in, the counters did not: the open span is extended by its row next
    // time, and the counter day comes again.
    t.done(b, Some(&[7, 8]), false);
    let b = t.take_batch(t0 + 4_000);
    assert_eq!(b.spans.len(), 1);
    assert_eq!(b.spans[0].id, Some(8));
    assert_eq!(b.counters.len(), 1);
    // The span ends while the batch is on its way: the ended span keeps the row it gets.
    t.observe(
        &reading(&lift, 0, &[("trapped_alarm", Value::Bool(false))]),
        t0 + 4_500,
    );
    t.done(b, Some(&[8]), true);
    let b = t.take_batch(t0 + 5_000);
    assert_eq!(
        b.spans
            .iter()
            .map(|s| (s.id, s.state, s.end_ms))
            .collect::<Vec<_>>(),
        [
            (Some(8), AvailState::Unavailable, t0 + 4_500),
            (None, AvailState::Available, t0 + 5_000)
        ]
    );
    // A span not written yet ends while its first write is on its way: it takes the row
    // that write made, and is not inserted again.
    t.observe(
        &reading(&lift, 0, &[("trapped_alarm", Value::Bool(true))]),
        t0 + 5_500,
    );
    t.done(b, Some(&[8, 9]), true);
    let b = t.take_batch(t0 + 6_000);
    assert_eq!(
        b.spans
            .iter()
            .map(|s| (s.id, s.state, s.start_ms, s.end_ms))
            .collect::<Vec<_>>(),
        [
            (Some(9), AvailState::Available, t0 + 4_500, t0 + 5_500),
            (None, AvailState::Unavailable, t0 + 5_500, t0 + 6_000)
        ]
    );
}
