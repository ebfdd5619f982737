//! The running notifiers, built from the settings' plain notifier specs when the gateway
//! starts: webhooks with their own HTTP client, MQTT notifiers on the gateway's MQTT client
//! (so they start after it). A reload keeps them (changed `notify` items need a restart); it
//! only replaces the assets they match against.

use std::collections::HashMap;
use std::sync::Arc;

use crate::mqtt::MqttClient;
use crate::mqtt::notifier::MqttNotifier;
use crate::rules::types::AssetInfo;
use crate::settings::NotifierSpec;
use crate::workorder::notify::webhook::WebhookNotifier;
use crate::workorder::notify::{AssetDirectory, Notifier};

/// The assets by id, as the notifiers' `match` and `{name}` see them.
pub(super) fn asset_directory(assets: &[Arc<AssetInfo>]) -> HashMap<String, Arc<AssetInfo>> {
    assets
        .iter()
        .map(|a| (a.id.to_string(), a.clone()))
        .collect()
}

/// The running notifiers of `specs`, for the gateway `gateway`. `mqtt`: the MQTT client, with
/// `[mqtt]` (validation refuses an MQTT notifier without it).
pub(super) fn build(
    specs: &[NotifierSpec],
    gateway: &str,
    assets: &AssetDirectory,
    mqtt: Option<&MqttClient>,
) -> anyhow::Result<Vec<Arc<dyn Notifier>>> {
    specs
        .iter()
        .map(|spec| -> anyhow::Result<Arc<dyn Notifier>> {
            Ok(match spec {
                NotifierSpec::Webhook(w) => Arc::new(WebhookNotifier::new(w, gateway, assets)?),
                NotifierSpec::Mqtt(m) => {
                    let client = mqtt.ok_or_else(|| {
                        anyhow::anyhow!(
                            "notifier {}: an MQTT notifier needs the [mqtt] connection",
                            m.name
                        )
                    })?;
                    Arc::new(MqttNotifier::new(m, gateway, assets, client.clone()))
                }
            })
        })
        .collect()
}
