//! Availability per asset from the spans, summed per device type, per building and over all
//! assets (percentages recomputed from the sums), and energy per building from the counter
//! days.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use super::model::{AvailabilityTables, BuildingEnergy, Energy, GroupFigures};
use super::orders::{OrderFigures, RowCounts};
use super::{ENERGY_POINT, POWER_METER_DEVICE_TYPE, ReportAsset, ReportInputs, pct, round1};
use crate::workorder::availability::{AvailState, Span};

/// Milliseconds in each state within the period, up to the as-of time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateTime {
    pub available_ms: i64,
    pub unavailable_ms: i64,
    pub offline_ms: i64,
}

impl StateTime {
    fn add(&mut self, o: &StateTime) {
        self.available_ms += o.available_ms;
        self.unavailable_ms += o.unavailable_ms;
        self.offline_ms += o.offline_ms;
    }

    fn monitored_ms(&self) -> i64 {
        self.available_ms + self.unavailable_ms + self.offline_ms
    }
}

/// One asset's spans (sorted by start) cut to `[from, as_of)`; a span overlapping an earlier
/// one counts only from where the earlier one ended, so no time is counted twice.
pub fn clip(spans: &[&Span], from: i64, as_of: i64) -> StateTime {
    let mut t = StateTime::default();
    let mut cursor = from;
    for s in spans {
        let start = s.start_ms.max(cursor);
        let end = s.end_ms.min(as_of);
        if end <= start {
            continue;
        }
        cursor = end;
        let d = end - start;
        match s.state {
            AvailState::Available => t.available_ms += d,
            AvailState::Unavailable => t.unavailable_ms += d,
            AvailState::Offline => t.offline_ms += d,
        }
    }
    t
}

fn secs(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

fn hours(ms: i64) -> f64 {
    round1(ms as f64 / 3_600_000.0)
}

fn row(
    level: &'static str,
    key: String,
    asset: Option<&ReportAsset>,
    assets: u64,
    t: StateTime,
    period_ms: i64,
    counts: RowCounts,
) -> GroupFigures {
    let not_monitored = (period_ms - t.monitored_ms()).max(0);
    GroupFigures {
        level,
        key,
        name: asset.and_then(|a| a.name.clone()),
        building: asset.and_then(|a| a.building.clone()),
        floor: asset.and_then(|a| a.floor.clone()),
        device_type: asset.map(|a| a.device_type.clone()),
        assets,
        available_s: secs(t.available_ms),
        unavailable_s: secs(t.unavailable_ms),
        offline_s: secs(t.offline_ms),
        not_monitored_s: secs(not_monitored),
        availability_pct: pct(t.available_ms, t.available_ms + t.unavailable_ms),
        monitored_pct: pct(t.monitored_ms(), period_ms),
        offline_h: hours(t.offline_ms),
        not_monitored_h: hours(not_monitored),
        corrective_opened: counts.corrective_opened,
        corrective_closed: counts.corrective_closed,
        preventive_due: counts.pm.due,
        preventive_on_time: counts.pm.on_time,
        pm_compliance_pct: pct(counts.pm.on_time as i64, counts.pm.counted() as i64),
    }
}

/// The availability tables (with each row's work-order counts).
pub fn tables(
    inputs: &ReportInputs,
    as_of: DateTime<Utc>,
    orders: &OrderFigures,
) -> AvailabilityTables {
    let (from, to) = (inputs.from.timestamp_millis(), as_of.timestamp_millis());
    let period = (to - from).max(0);
    let mut by_asset: BTreeMap<&str, Vec<&Span>> = BTreeMap::new();
    for s in &inputs.spans {
        by_asset.entry(s.asset.as_str()).or_default().push(s);
    }
    let counts = |level: &'static str, key: &str| {
        orders
            .rows
            .get(&(level, key.to_string()))
            .copied()
            .unwrap_or_default()
    };
    let mut assets = Vec::new();
    let mut buildings: BTreeMap<String, (u64, StateTime)> = BTreeMap::new();
    let mut types: BTreeMap<String, (u64, StateTime)> = BTreeMap::new();
    let mut total = StateTime::default();
    let mut sorted: Vec<&ReportAsset> = inputs.assets.iter().collect();
    sorted.sort_by(|a, b| {
        (&a.building, &a.device_type, &a.id).cmp(&(&b.building, &b.device_type, &b.id))
    });
    for a in sorted {
        let mut spans = by_asset.remove(a.id.as_str()).unwrap_or_default();
        spans.sort_by_key(|s| (s.start_ms, s.id));
        let t = clip(&spans, from, to);
        total.add(&t);
        if let Some(b) = &a.building {
            let e = buildings.entry(b.clone()).or_default();
            e.0 += 1;
            e.1.add(&t);
        }
        let e = types.entry(a.device_type.clone()).or_default();
        e.0 += 1;
        e.1.add(&t);
        assets.push(row(
            "asset",
            a.id.clone(),
            Some(a),
            1,
            t,
            period,
            counts("asset", &a.id),
        ));
    }
    let group = |level: &'static str, m: BTreeMap<String, (u64, StateTime)>| {
        m.into_iter()
            .map(|(k, (n, t))| {
                let c = counts(level, &k);
                row(level, k, None, n, t, period * n as i64, c)
            })
            .collect()
    };
    let n = inputs.assets.len() as u64;
    AvailabilityTables {
        total: row(
            "total",
            "all".into(),
            None,
            n,
            total,
            period * n as i64,
            counts("total", "all"),
        ),
        buildings: group("building", buildings),
        device_types: group("device_type", types),
        assets,
    }
}

/// Energy per building: the power meters' kWh counter increases over the local days the
/// period touches (whole days). `None` when no power meter is configured.
pub fn energy(inputs: &ReportInputs, as_of: DateTime<Utc>) -> Option<Energy> {
    let meters: BTreeMap<&str, &ReportAsset> = inputs
        .assets
        .iter()
        .filter(|a| a.device_type == POWER_METER_DEVICE_TYPE)
        .map(|a| (a.id.as_str(), a))
        .collect();
    if meters.is_empty() {
        return None;
    }
    let (from_day, to_day) = super::period::local_days(inputs.timezone, inputs.from, as_of);
    let mut per: BTreeMap<String, (BTreeSet<&str>, f64)> = BTreeMap::new();
    for a in meters.values() {
        per.entry(building_name(a)).or_default().0.insert(&a.id);
    }
    for d in &inputs.counter_days {
        if d.point != ENERGY_POINT || d.day < from_day || d.day > to_day {
            continue;
        }
        if let Some(a) = meters.get(d.asset.as_str()) {
            per.entry(building_name(a)).or_default().1 += d.increase;
        }
    }
    let total: f64 = per.values().map(|(_, k)| k).sum();
    Some(Energy {
        from_day,
        to_day,
        buildings: per
            .into_iter()
            .map(|(building, (m, kwh))| BuildingEnergy {
                building,
                meters: m.len() as u64,
                kwh: round1(kwh),
            })
            .collect(),
        total_kwh: round1(total),
    })
}

/// The name a building is shown under; assets without one are grouped as "(no building)".
fn building_name(a: &ReportAsset) -> String {
    a.building.clone().unwrap_or_else(|| "(no building)".into())
}
