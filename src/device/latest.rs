//! The latest good value of every point of every device, for the API's status and values.

use std::sync::Mutex;

use crate::model::{Record, Value};

/// The latest good value of every point, and each device's status, by device slot (`None`: a slot a reload
/// retired).
#[derive(Debug, Default)]
pub struct LatestValues {
    inner: Mutex<Vec<Option<DeviceLatest>>>,
}

#[derive(Debug, Default, Clone)]
pub struct DeviceLatest {
    /// (value, timestamp ns) per profile point.
    pub points: Vec<Option<(Value, i64)>>,
    pub online: Option<bool>,
    pub last_poll_ms: f64,
}

impl LatestValues {
    pub fn new(sizes: impl Iterator<Item = usize>) -> Self {
        LatestValues {
            inner: Mutex::new(
                sizes
                    .map(|n| {
                        Some(DeviceLatest {
                            points: vec![None; n],
                            ..Default::default()
                        })
                    })
                    .collect(),
            ),
        }
    }

    pub fn update(&self, rec: &Record) {
        let mut all = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match rec {
            Record::Reading(r) => {
                if let Some(Some(d)) = all.get_mut(r.device) {
                    for (i, v) in &r.values {
                        if let Some(slot) = d.points.get_mut(*i) {
                            *slot = Some((v.clone(), r.timestamp_ns));
                        }
                    }
                }
            }
            Record::Status(s) => {
                if let Some(Some(d)) = all.get_mut(s.device) {
                    d.online = Some(s.online);
                    if s.poll_ms > 0.0 {
                        d.last_poll_ms = s.poll_ms;
                    }
                }
            }
            Record::WorkOrder(_) | Record::Ack(_) => {}
        }
    }

    /// A copy of the latest values of the device in slot `i`.
    pub fn device(&self, i: usize) -> Option<DeviceLatest> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(i)
            .cloned()
            .flatten()
    }

    /// A new slot (a reload's added or changed device) with `points` points, none read yet.
    pub fn open_slot(&self, slot: usize, points: usize) {
        let mut all = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if all.len() <= slot {
            all.resize(slot + 1, None);
        }
        all[slot] = Some(DeviceLatest {
            points: vec![None; points],
            ..Default::default()
        });
    }

    /// Forgets a slot whose device a reload removed or replaced (records still in flight for
    /// it are ignored).
    pub fn retire(&self, slot: usize) {
        let mut all = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = all.get_mut(slot) {
            *d = None;
        }
    }
}
