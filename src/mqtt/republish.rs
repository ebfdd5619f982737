//! `publish_telemetry`: every device's readings republished as JSON for other consumers (a
//! SCADA, a data lake), one message per reading on the device's topic. Best effort: a full
//! client queue drops the message and counts it; the database path is unaffected.
//!
//! Payload:
//! `{"gateway":"gw1","asset":"EL-A1","measurement":"elevator","time":"2026-01-05T10:00:00.25Z",
//!   "tags":{"building":"A","device_type":"elevator","site":"tower-a",...},"values":{"car_floor":3.0,...}}`

use std::sync::atomic::Ordering::Relaxed;

use serde_json::{Map, Value as Json, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::client::{MqttClient, PublishError};
use super::settings::TelemetryTopic;
use crate::device::DeviceSlots;
use crate::model::{Reading, Value};
use crate::telemetry::line::device_tags;

pub struct Republisher {
    pub client: MqttClient,
    pub topic: TelemetryTopic,
    /// The devices by slot (readings name their device by slot; see `crate::reload`).
    pub devices: DeviceSlots,
    pub gateway: String,
}

fn json_value(v: &Value) -> Json {
    match v {
        Value::Float(f) => json!(f),
        Value::Int(i) => json!(i),
        Value::Bool(b) => json!(b),
        Value::Str(s) => json!(s),
    }
}

impl Republisher {
    /// The topic and payload of one reading.
    pub fn message(&self, r: &Reading) -> Option<(String, Vec<u8>)> {
        let d = self.devices.get(r.device)?;
        let d = &*d;
        let topic = self.topic.topic.render(|name| match name {
            "gateway" => Some(self.gateway.clone()),
            "asset" => Some(d.id.to_string()),
            "name" => d.name.clone(),
            "site" => d.site.clone(),
            "building" => d.building.clone(),
            "floor" => d.floor.clone(),
            "device_type" => Some(d.profile.device_type.as_str().to_string()),
            "measurement" => Some(d.profile.measurement.clone()),
            _ => None,
        });
        let mut values = Map::new();
        for (i, v) in &r.values {
            if let Some(p) = d.profile.points.get(*i) {
                values.insert(p.name.to_string(), json_value(v));
            }
        }
        let tags: Map<String, Json> = device_tags(&self.gateway, d)
            .into_iter()
            .map(|(k, v)| (k, Json::String(v)))
            .collect();
        let time = chrono::DateTime::from_timestamp_nanos(r.timestamp_ns)
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        let body = json!({
            "gateway": self.gateway,
            "asset": &*d.id,
            "measurement": d.profile.measurement,
            "time": time,
            "tags": tags,
            "values": values,
        });
        Some((topic, serde_json::to_vec(&body).ok()?))
    }

    pub async fn run(self, mut rx: mpsc::Receiver<Reading>, stop: CancellationToken) {
        let stats = self.client.stats().clone();
        loop {
            let r = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                r = rx.recv() => match r { Some(r) => r, None => return },
            };
            let Some((topic, payload)) = self.message(&r) else {
                continue;
            };
            match self
                .client
                .try_publish(&topic, self.topic.qos1, self.topic.retain, payload)
            {
                Ok(()) => stats.published_telemetry.fetch_add(1, Relaxed),
                Err(
                    PublishError::Full | PublishError::TooLarge(_) | PublishError::InvalidTopic(_),
                )
                | Err(PublishError::NotConfirmed(_)) => {
                    stats.telemetry_dropped.fetch_add(1, Relaxed)
                }
            };
        }
    }
}
