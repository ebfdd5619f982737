//! The tracker's pure core: per asset, its state over time as spans, and its counters per
//! local day. No clock and no I/O: every call is given the time (the wall clock where it runs,
//! never a record's own timestamp, which an MQTT payload may get wrong), and the writes come out
//! as batches for the work-order store.
//!
//! An asset is "not monitored" (no span) until its first status. Then its state is offline
//! when its last status said so (or, for an MQTT device, when nothing came from it for
//! [`MQTT_SILENCE_MS`]), unavailable when online and one of its profile's `unavailable_when`
//! conditions holds, else available. A state change ends the open span and starts another;
//! a span never crosses local midnight (it is cut there and goes on in the next day's span).
//!
//! Records are observed on the hot path: the work per reading is a table look-up per value,
//! with the conditions and counters of the points it carries; nothing is allocated unless the
//! state changes or a counter starts a new day.

use std::collections::HashMap;
use std::sync::Arc;

use chrono_tz::Tz;

use super::counters::{CounterTrack, Seeds};
use super::day::Day;
use crate::device::{Device, DeviceSource};
use crate::model::Record;
use crate::profile::{PointKind, Profile, Unavailability};
use crate::workorder::availability::{AvailState, CounterDay, SpanWrite};

/// An MQTT device that sent nothing for this long counts as offline (its status only says
/// whether the broker is connected). The shipped offline rules wait as long.
pub const MQTT_SILENCE_MS: i64 = 5 * 60 * 1000;

/// No condition or counter on a point.
const NONE: u32 = u32::MAX;

/// What the tracker reads of a profile: per point, the conditions on it and its counter.
#[derive(Debug)]
struct Plan {
    /// Per profile point: its conditions are `conds[first..first + len]`; `counter` indexes
    /// the asset's counters (`NONE`: not a counter).
    watch: Vec<Watch>,
    /// The profile's conditions, ordered by point.
    conds: Vec<Unavailability>,
    /// The counter points' indexes.
    counters: Vec<usize>,
    /// No condition and no counter: a reading changes nothing.
    idle: bool,
}

#[derive(Debug, Clone, Copy)]
struct Watch {
    first: u32,
    len: u32,
    counter: u32,
}

impl Plan {
    fn new(profile: &Profile) -> Plan {
        let mut conds = profile.unavailable_when.clone();
        conds.sort_by_key(|c| c.point);
        let counters: Vec<usize> = profile
            .points
            .iter()
            .enumerate()
            .filter(|(_, p)| p.kind == PointKind::Counter)
            .map(|(i, _)| i)
            .collect();
        let watch = (0..profile.points.len())
            .map(|i| {
                let first = conds.partition_point(|c| c.point < i);
                let len = conds[first..].partition_point(|c| c.point == i);
                Watch {
                    first: first as u32,
                    len: len as u32,
                    counter: counters
                        .iter()
                        .position(|&c| c == i)
                        .map_or(NONE, |c| c as u32),
                }
            })
            .collect();
        Plan {
            watch,
            idle: conds.is_empty() && counters.is_empty(),
            conds,
            counters,
        }
    }
}

/// The span an asset is in now.
#[derive(Debug, Clone)]
struct OpenSpan {
    /// Names this span across batches (the row id comes back later).
    key: u64,
    /// Its row, once written.
    id: Option<i64>,
    state: AvailState,
    start_ms: i64,
}

impl OpenSpan {
    /// This span of `asset` on `day`, from `start_ms` to `end_ms`, for the store.
    fn write(&self, asset: &str, day: &str, start_ms: i64, end_ms: i64) -> SpanWrite {
        SpanWrite {
            id: self.id,
            asset: asset.to_string(),
            day: day.to_string(),
            state: self.state,
            start_ms,
            end_ms,
        }
    }
}

/// One asset (a configured device) as tracked.
#[derive(Debug)]
struct Asset {
    id: Arc<str>,
    profile: Arc<Profile>,
    plan: Plan,
    mqtt: bool,
    /// Per condition: whether its point's latest value makes it hold (`None`: not read yet).
    holds: Vec<Option<bool>>,
    /// How many of `holds` are `Some(true)`.
    holding: u32,
    /// The last status (`None`: none yet, not monitored).
    status: Option<bool>,
    /// MQTT devices: when the last message came, and when tracking began.
    heard_ms: Option<i64>,
    since_ms: i64,
    span: Option<OpenSpan>,
    counters: Vec<CounterTrack>,
}

impl Asset {
    fn new(device: &Device, now_ms: i64, seeds: &mut Seeds, day: &Day) -> Asset {
        let plan = Plan::new(&device.profile);
        let counters = plan
            .counters
            .iter()
            .map(|&p| {
                let name = &device.profile.points[p].name;
                CounterTrack::new(p, seeds.take(&device.id, name), day)
            })
            .collect();
        Asset {
            id: device.id.clone(),
            profile: device.profile.clone(),
            holds: vec![None; plan.conds.len()],
            holding: 0,
            plan,
            mqtt: matches!(device.source, DeviceSource::Mqtt { .. }),
            status: None,
            heard_ms: None,
            since_ms: now_ms,
            span: None,
            counters,
        }
    }

    /// The state the asset is in at `now_ms`; `None`: not known (no status yet, or an MQTT
    /// device not heard from yet, within [`MQTT_SILENCE_MS`] of the start).
    fn state(&self, now_ms: i64) -> Option<AvailState> {
        let status = self.status?;
        let online = if !self.mqtt {
            status
        } else {
            match self.heard_ms {
                // Not heard from yet: the gateway's own connection may still be coming up.
                None if now_ms - self.since_ms < MQTT_SILENCE_MS => return None,
                None => false,
                Some(h) => status && now_ms - h <= MQTT_SILENCE_MS,
            }
        };
        Some(match (online, self.holding > 0) {
            (false, _) => AvailState::Offline,
            (true, true) => AvailState::Unavailable,
            (true, false) => AvailState::Available,
        })
    }
}

/// A batch of writes for the store, and what the tracker needs to know of it afterwards.
#[derive(Debug, Default)]
pub struct Batch {
    pub spans: Vec<SpanWrite>,
    pub counters: Vec<CounterDay>,
    refs: Vec<SpanRef>,
    /// `counters[..held]` are rows no live counter holds any more.
    held: usize,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty() && self.counters.is_empty()
    }
}

#[derive(Debug, Clone, Copy)]
enum SpanRef {
    /// The open span of the asset in `slot`, written so far.
    Open { slot: usize, key: u64 },
    /// A span that ended.
    Closed,
}

/// The tracker (see the module documentation).
#[derive(Debug)]
pub struct Tracker {
    tz: Tz,
    day: Day,
    /// By device slot (`None`: a slot a reload retired, or never used).
    assets: Vec<Option<Asset>>,
    /// Spans that ended, not written yet: (key, span).
    ended: Vec<(u64, SpanWrite)>,
    /// Counter days no live counter holds (of assets a reload removed, of days that ended,
    /// of a batch that failed), not written yet.
    held_counters: Vec<CounterDay>,
    seeds: Seeds,
    next_key: u64,
}

impl Tracker {
    /// A tracker of `devices` (with their slots), in time zone `tz`, taking up the counters
    /// where the store left them (`CounterDay`s from `latest_counter_days`).
    pub fn new(
        tz: Tz,
        devices: &[(usize, Arc<Device>)],
        seeds: Vec<CounterDay>,
        now_ms: i64,
    ) -> Self {
        let mut t = Tracker {
            tz,
            day: Day::at(tz, now_ms),
            assets: Vec::new(),
            ended: Vec::new(),
            held_counters: Vec::new(),
            seeds: Seeds::new(seeds),
            next_key: 1,
        };
        t.reconfigure(tz, devices, now_ms);
        t
    }

    /// The local day now.
    pub fn day(&self) -> &Day {
        &self.day
    }

    /// Sees one record at `now_ms` (the wall clock).
    #[inline]
    pub fn observe(&mut self, record: &Record, now_ms: i64) {
        if !self.day.holds(now_ms) {
            self.roll(now_ms);
        }
        match record {
            Record::Reading(r) => {
                let Some(Some(a)) = self.assets.get_mut(r.device) else {
                    return;
                };
                if a.plan.idle && !a.mqtt {
                    return;
                }
                let mut changed = false;
                for (i, v) in &r.values {
                    let Some(w) = a.plan.watch.get(*i) else {
                        continue;
                    };
                    for c in w.first as usize..(w.first + w.len) as usize {
                        let now = Some(a.plan.conds[c].holds(v));
                        let was = std::mem::replace(&mut a.holds[c], now);
                        if was != now {
                            changed = true;
                            match (was == Some(true), now == Some(true)) {
                                (false, true) => a.holding += 1,
                                (true, false) => a.holding -= 1,
                                _ => {}
                            }
                        }
                    }
                    if w.counter != NONE
                        && let Some(x) = v.as_f64()
                    {
                        a.counters[w.counter as usize].observe(x, now_ms, &self.day);
                    }
                }
                if a.mqtt {
                    changed |= a.heard_ms.is_none();
                    a.heard_ms = Some(now_ms);
                    changed |= a
                        .span
                        .as_ref()
                        .is_some_and(|s| s.state == AvailState::Offline);
                }
                if changed {
                    self.settle(r.device, now_ms);
                }
            }
            Record::Status(s) => {
                let Some(Some(a)) = self.assets.get_mut(s.device) else {
                    return;
                };
                a.status = Some(s.online);
                self.settle(s.device, now_ms);
            }
            Record::WorkOrder(_) | Record::Ack(_) => {}
        }
    }

    /// Brings the span of the asset in `slot` to its current state.
    fn settle(&mut self, slot: usize, now_ms: i64) {
        let Some(Some(a)) = self.assets.get_mut(slot) else {
            return;
        };
        let Some(state) = a.state(now_ms) else {
            return;
        };
        if a.span.as_ref().is_some_and(|s| s.state == state) {
            return;
        }
        // A span that ended as it began, never written, is left out.
        if let Some(open) = a
            .span
            .take()
            .filter(|o| o.id.is_some() || o.start_ms < now_ms)
        {
            self.ended.push((
                open.key,
                open.write(&a.id, &self.day.label, open.start_ms, now_ms),
            ));
        }
        a.span = Some(OpenSpan {
            key: self.next_key,
            id: None,
            state,
            start_ms: now_ms,
        });
        self.next_key += 1;
    }

    /// Moves to the day holding `now_ms`: every open span is cut at each midnight passed.
    fn roll(&mut self, now_ms: i64) {
        while now_ms >= self.day.end_ms {
            let end = self.day.end_ms;
            self.cut_all(end);
            self.day = Day::at(self.tz, end);
        }
        if now_ms < self.day.start_ms {
            // The wall clock went back across midnight: spans go on in that day.
            self.cut_all(now_ms);
            self.day = Day::at(self.tz, now_ms);
        }
    }

    /// Ends every open span at `at` and opens its continuation there.
    fn cut_all(&mut self, at: i64) {
        for a in self.assets.iter_mut().flatten() {
            let Some(open) = a.span.as_mut() else {
                continue;
            };
            let start = open.start_ms.min(at);
            if open.id.is_none() && start == at {
                // Nothing to write before the cut: the span just moves to the new day.
                open.start_ms = at;
                continue;
            }
            self.ended
                .push((open.key, open.write(&a.id, &self.day.label, start, at)));
            *open = OpenSpan {
                key: self.next_key,
                id: None,
                state: open.state,
                start_ms: at,
            };
            self.next_key += 1;
        }
    }

    /// Applies a new device set (a configuration reload): an asset that stays (by id) keeps its
    /// span and counters, in its new slot (a changed profile starts its conditions afresh); an
    /// asset that goes has its span ended at `now_ms`; a new one is not monitored until its
    /// first status. A new time zone cuts every span at `now_ms`.
    pub fn reconfigure(&mut self, tz: Tz, devices: &[(usize, Arc<Device>)], now_ms: i64) {
        if !self.day.holds(now_ms) {
            self.roll(now_ms);
        }
        if tz != self.tz {
            self.cut_all(now_ms);
            self.tz = tz;
            self.day = Day::at(tz, now_ms);
        }
        let mut old: HashMap<Arc<str>, Asset> = self
            .assets
            .iter_mut()
            .filter_map(Option::take)
            .map(|a| (a.id.clone(), a))
            .collect();
        let slots = devices.iter().map(|(s, _)| s + 1).max().unwrap_or(0);
        if self.assets.len() < slots {
            self.assets.resize_with(slots, || None);
        }
        for (slot, d) in devices {
            let asset = match old.remove(&d.id) {
                Some(mut a) => {
                    if !Arc::ptr_eq(&a.profile, &d.profile) && *a.profile != *d.profile {
                        a = carry_over(
                            a,
                            d,
                            now_ms,
                            &mut self.seeds,
                            &self.day,
                            &mut self.held_counters,
                        );
                    }
                    a.mqtt = matches!(d.source, DeviceSource::Mqtt { .. });
                    a
                }
                None => Asset::new(d, now_ms, &mut self.seeds, &self.day),
            };
            self.assets[*slot] = Some(asset);
        }
        // Assets that went: their spans end now, their counters are written and kept as
        // seeds (an asset added back later takes up its counters).
        for (_, mut a) in old {
            if let Some(open) = a.span.take() {
                self.ended.push((
                    open.key,
                    open.write(
                        &a.id,
                        &self.day.label,
                        open.start_ms,
                        now_ms.max(open.start_ms),
                    ),
                ));
            }
            for c in &mut a.counters {
                let point = &a.profile.points[c.point].name;
                c.take_ended(&a.id, point, &mut self.held_counters);
                if let Some(d) = c.row(&a.id, point) {
                    if c.dirty {
                        self.held_counters.push(d.clone());
                    }
                    self.seeds.put(d, false);
                }
            }
        }
    }

    /// The writes due at `now_ms`: spans that ended, every open span extended to now, and the
    /// counter days that changed. Give the outcome back with [`Tracker::done`] before the
    /// next batch.
    pub fn take_batch(&mut self, now_ms: i64) -> Batch {
        if !self.day.holds(now_ms) {
            self.roll(now_ms);
        }
        let mut b = Batch::default();
        for (_, s) in self.ended.drain(..) {
            b.spans.push(s);
            b.refs.push(SpanRef::Closed);
        }
        b.counters.append(&mut self.held_counters);
        for a in self.assets.iter_mut().flatten() {
            for c in &mut a.counters {
                let point = &a.profile.points[c.point].name;
                c.take_ended(&a.id, point, &mut b.counters);
            }
        }
        b.held = b.counters.len();
        for (slot, a) in self.assets.iter_mut().enumerate() {
            let Some(a) = a else { continue };
            if let Some(open) = &a.span {
                b.spans.push(open.write(
                    &a.id,
                    &self.day.label,
                    open.start_ms,
                    now_ms.max(open.start_ms),
                ));
                b.refs.push(SpanRef::Open {
                    slot,
                    key: open.key,
                });
            }
            for c in a.counters.iter_mut().filter(|c| c.dirty) {
                let point = &a.profile.points[c.point].name;
                if let Some(d) = c.row(&a.id, point) {
                    b.counters.push(d);
                }
                c.dirty = false;
            }
        }
        b
    }

    /// What became of a batch: `spans` the row ids of its spans, in order (`None`: not
    /// written), `counters_written` whether its counter days were. An open span keeps its row
    /// id, to be extended by the next batch; what was not written goes with the next batch.
    pub fn done(&mut self, batch: Batch, spans: Option<&[i64]>, counters_written: bool) {
        match spans {
            Some(ids) => self.spans_written(&batch.refs, ids),
            None => {
                let ended: Vec<(u64, SpanWrite)> = batch
                    .refs
                    .iter()
                    .zip(batch.spans)
                    .filter(|(r, _)| matches!(r, SpanRef::Closed))
                    .map(|(_, s)| (0, s))
                    .collect();
                self.ended.splice(0..0, ended);
            }
        }
        if !counters_written {
            let mut counters = batch.counters;
            counters.truncate(batch.held);
            self.held_counters.splice(0..0, counters);
            for a in self.assets.iter_mut().flatten() {
                for c in &mut a.counters {
                    c.dirty |= c.has_row();
                }
            }
        }
    }

    fn spans_written(&mut self, refs: &[SpanRef], ids: &[i64]) {
        for (r, id) in refs.iter().zip(ids) {
            let SpanRef::Open { slot, key } = *r else {
                continue;
            };
            if let Some(Some(a)) = self.assets.get_mut(slot)
                && let Some(open) = a.span.as_mut().filter(|s| s.key == key)
            {
                open.id = Some(*id);
                continue;
            }
            // It ended (or a reload moved it) since the batch was taken.
            if let Some((_, s)) = self.ended.iter_mut().find(|(k, _)| *k == key) {
                s.id = Some(*id);
                continue;
            }
            if let Some(open) = self
                .assets
                .iter_mut()
                .flatten()
                .filter_map(|a| a.span.as_mut())
                .find(|s| s.key == key)
            {
                open.id = Some(*id);
            }
        }
    }

    /// Each tracked asset's state now (`None`: not monitored yet).
    pub fn states(&self) -> Vec<(Arc<str>, Option<AvailState>)> {
        self.assets
            .iter()
            .flatten()
            .map(|a| (a.id.clone(), a.span.as_ref().map(|s| s.state)))
            .collect()
    }
}

/// An asset whose profile changed: its span goes on, its conditions start afresh (nothing read
/// under the new profile yet), its counters carry over by point name.
fn carry_over(
    mut old: Asset,
    d: &Device,
    now_ms: i64,
    seeds: &mut Seeds,
    day: &Day,
    held: &mut Vec<CounterDay>,
) -> Asset {
    for c in &mut old.counters {
        let point = &old.profile.points[c.point].name;
        c.take_ended(&old.id, point, held);
        if let Some(row) = c.row(&old.id, point) {
            seeds.put(row, c.dirty);
        }
    }
    let mut a = Asset::new(d, now_ms, seeds, day);
    a.status = old.status;
    a.heard_ms = old.heard_ms;
    a.since_ms = old.since_ms;
    a.span = old.span;
    a
}
