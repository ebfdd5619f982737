//! `[[notify]] type = "mqtt"`: each work-order event published as the webhook's JSON
//! ([`event_body`]) to a topic template, QoS 1, through the gateway's one MQTT connection.
//!
//! `deliver` returns Ok only after the broker's PUBACK for that very message (see
//! [`super::tracker`]), so the outbox marks an event delivered only once the broker has it:
//! at least once, in order per work order, across broker outages (a delivery not confirmed
//! within `timeout` is retried with the outbox's backoff, with the same idempotency key).
//!
//! ```toml
//! [[notify]]
//! type = "mqtt"
//! id = "cmms-bus"                                # default mqtt:<N>
//! topic = "facilityd/{site}/work-orders/{asset}"
//! events = ["opened", "resolved", "closed"]      # default: all
//! retain = false
//! timeout = "10s"                                # wait for the PUBACK
//! match = { building = "A" }
//! ```

use crate::workorder::notify::{
    AssetDirectory, EventFilter, ItemScope, NotifierName, parse_events,
};
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use serde::Deserialize;

use super::client::{MqttClient, PublishError};
use super::topic::PubTemplate;
use crate::config::ConfigIssue;
use crate::config::units::Duration as ConfigDuration;
use crate::rules::matcher::AssetMatch;
use crate::workorder::notify::{DeliveryError, Notifier, event_body};
use crate::workorder::types::{EventKind, WorkOrderEvent};

/// Placeholders of a notifier topic.
pub const PLACEHOLDERS: [&str; 11] = [
    "asset",
    "name",
    "site",
    "building",
    "floor",
    "device_type",
    "gateway",
    "rule",
    "priority",
    "kind",
    "event",
];

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// `[[notify]]` with `type = "mqtt"`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttNotifyConfig {
    /// `mqtt`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Names the notifier's delivery queue (default `mqtt:<N>`, N its position in `notify`).
    pub id: Option<String>,
    /// Topic template, e.g. `facilityd/{site}/work-orders/{asset}`.
    pub topic: String,
    /// Which events to publish (default: all).
    pub events: Option<Vec<String>>,
    /// Retain the last event of each topic (default false).
    pub retain: Option<bool>,
    /// How long to wait for the broker's PUBACK before retrying (default 10s).
    pub timeout: Option<ConfigDuration>,
    #[serde(rename = "match")]
    pub asset_match: Option<AssetMatch>,
}

/// A validated `type = "mqtt"` item: plain data. [`MqttNotifier::new`] makes the running
/// notifier of it, on the gateway's MQTT client.
#[derive(Debug, Clone)]
pub struct MqttNotifierSpec {
    pub name: String,
    pub topic: PubTemplate,
    /// `None`: every event.
    pub events: Option<HashSet<EventKind>>,
    pub asset_match: Option<AssetMatch>,
    pub retain: bool,
    /// How long to wait for the PUBACK.
    pub timeout: Duration,
}

impl NotifierName for MqttNotifierSpec {
    fn name(&self) -> &str {
        &self.name
    }
}

/// A running MQTT notifier.
pub struct MqttNotifier {
    name: String,
    topic: PubTemplate,
    filter: EventFilter,
    gateway: String,
    retain: bool,
    timeout: Duration,
    client: MqttClient,
}

/// Validates one MQTT notifier (`base` is its key path, `notify[2]`). Without an `[mqtt]`
/// section (`mqtt_configured` false) an MQTT notifier has nothing to publish through: an error.
pub fn validate(
    file: &str,
    base: &str,
    position: usize,
    value: config::Value,
    mqtt_configured: bool,
) -> Result<MqttNotifierSpec, Vec<ConfigIssue>> {
    let scope = ItemScope {
        file,
        base,
        position,
    };
    let issue = |path: &str, message: String| scope.issue(path, message);
    let cfg: MqttNotifyConfig = scope.deserialize(value)?;
    let mut errors = Vec::new();
    if !mqtt_configured {
        return Err(vec![issue(
            "",
            "an MQTT notifier publishes through the [mqtt] connection: configure [mqtt] url".into(),
        )]);
    }
    let name = scope.name(cfg.id.as_deref(), "mqtt", &mut errors);
    let topic = match PubTemplate::parse(&cfg.topic, &PLACEHOLDERS) {
        Ok(t) => Some(t),
        Err(e) => {
            errors.push(issue("topic", e.to_string()));
            None
        }
    };
    let events = match parse_events(cfg.events.as_deref()) {
        Ok(e) => e,
        Err((path, message)) => {
            errors.push(issue(&path, message));
            None
        }
    };
    let timeout = cfg.timeout.map_or(DEFAULT_TIMEOUT, |d| d.0);
    if timeout.is_zero() {
        errors.push(issue("timeout", "must be more than zero".into()));
    }
    if let Some(m) = &cfg.asset_match
        && let Err(e) = m.validate()
    {
        errors.push(issue("match", e.to_string()));
    }
    match topic {
        Some(topic) if errors.is_empty() => Ok(MqttNotifierSpec {
            name,
            topic,
            events,
            asset_match: cfg.asset_match,
            retain: cfg.retain.unwrap_or(false),
            timeout,
        }),
        _ => Err(errors),
    }
}

impl MqttNotifier {
    /// The running notifier of `spec`, publishing through `client`: events of the gateway
    /// `gateway`, `match` and `{name}` against `assets`.
    pub fn new(
        spec: &MqttNotifierSpec,
        gateway: &str,
        assets: &AssetDirectory,
        client: MqttClient,
    ) -> MqttNotifier {
        MqttNotifier {
            name: spec.name.clone(),
            topic: spec.topic.clone(),
            filter: EventFilter {
                events: spec.events.clone(),
                asset_match: spec.asset_match.clone(),
                assets: assets.clone(),
            },
            gateway: gateway.to_string(),
            retain: spec.retain,
            timeout: spec.timeout,
            client,
        }
    }

    /// The topic of one event.
    pub fn topic(&self, event: &WorkOrderEvent) -> String {
        let wo = &event.work_order;
        let asset = self.filter.assets.get(&wo.asset);
        self.topic.render(|name| match name {
            "asset" => Some(wo.asset.clone()),
            "name" => asset.as_ref().and_then(|a| a.name.clone()),
            "site" => wo.site.clone(),
            "building" => wo.building.clone(),
            "floor" => wo.floor.clone(),
            "device_type" => Some(wo.device_type.clone()),
            "gateway" => Some(self.gateway.clone()),
            "rule" => Some(wo.rule.clone()),
            "priority" => Some(wo.priority.as_str().to_string()),
            "kind" => Some(wo.kind.as_str().to_string()),
            "event" => Some(event.event.as_str().to_string()),
            _ => None,
        })
    }

    async fn publish(&self, event: &WorkOrderEvent) -> Result<(), DeliveryError> {
        let client = &self.client;
        let topic = self.topic(event);
        let body = event_body(event, &self.gateway);
        let stats = client.stats().clone();
        match client
            .publish_confirmed(&topic, self.retain, body, self.timeout)
            .await
        {
            Ok(()) => {
                stats.published_work_orders.fetch_add(1, Relaxed);
                Ok(())
            }
            Err(e) => {
                stats.work_order_failures.fetch_add(1, Relaxed);
                Err(match e {
                    // Neither gets better by retrying.
                    PublishError::TooLarge(_) | PublishError::InvalidTopic(_) => {
                        DeliveryError::Permanent(format!("topic {topic:?}: {e}"))
                    }
                    e => DeliveryError::Retryable(format!("topic {topic:?}: {e}")),
                })
            }
        }
    }
}

impl Notifier for MqttNotifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn wants(&self, event: &WorkOrderEvent) -> bool {
        self.filter.wants(event)
    }

    fn deliver<'a>(
        &'a self,
        event: &'a WorkOrderEvent,
    ) -> Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>> {
        Box::pin(self.publish(event))
    }
}
