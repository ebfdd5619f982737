//! Notifiers: webhooks and MQTT publishers, built from the `[[notify]]` items. Webhooks are
//! built by the work-order module, MQTT notifiers by the MQTT module, which publish through
//! the one `[mqtt]` connection.

use std::sync::Arc;

use crate::config::ConfigIssue;
use crate::mqtt::MqttPort;
use crate::workorder::notify::webhook::parse_notifiers_with;
use crate::workorder::notify::{AssetDirectory, Notifier};

/// The notifiers of the `notify` items (`(file, index in that file, item)`). `port`: the
/// `[mqtt]` connection's port, `None` without an `[mqtt]` section (an MQTT notifier is then an
/// error).
pub(super) fn notifiers(
    items: &[(String, usize, config::Value)],
    gateway: &str,
    assets: &AssetDirectory,
    port: Option<&MqttPort>,
) -> Result<Vec<Arc<dyn Notifier>>, Vec<ConfigIssue>> {
    let build_mqtt = |file: &str,
                      base: &str,
                      position: usize,
                      value: config::Value,
                      gateway: &str,
                      assets: &AssetDirectory| {
        crate::mqtt::notifier::build(file, base, position, value, gateway, assets, port)
            .map(|n| Arc::new(n) as Arc<dyn Notifier>)
    };
    parse_notifiers_with(items, gateway, assets, Some(&build_mqtt))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workorder::notify::webhook::parse_notifiers;
    use crate::workorder::notify::webhook::tests::items;
    #[test]
    fn parses_webhooks_and_hands_mqtt_over() {
        let toml = r#"
            [[notify]]
            type = "mqtt"
            topic = "x"
            [[notify]]
            type = "webhook"
            url = "https://cmms.example/api/tickets"
            events = ["opened", "resolved"]
            headers = { "X-Tenant" = "acme" }
            timeout = "3s"
            match = { device_type = "pump" }
            [[notify]]
            type = "webhook"
            id = "second"
            url = "http://127.0.0.1:9/hook"
            "#;
        let port = MqttPort::default();
        let n = notifiers(&items(toml), "gw", &AssetDirectory::default(), Some(&port)).unwrap();
        assert_eq!(
            n.iter().map(|n| n.name()).collect::<Vec<_>>(),
            ["mqtt:0", "webhook:1", "second"]
        );
        // Webhooks only: MQTT items left out.
        assert_eq!(
            parse_notifiers(&items(toml), "gw", &Default::default())
                .unwrap()
                .iter()
                .map(|n| n.name())
                .collect::<Vec<_>>(),
            ["webhook:1", "second"]
        );
        // Without [mqtt], an MQTT notifier has no connection to publish through.
        let e = match notifiers(&items(toml), "gw", &AssetDirectory::default(), None) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
        };
        assert_eq!(
            e,
            [
                "f.toml: notify[0]: an MQTT notifier publishes through the [mqtt] connection: configure [mqtt] url"
            ]
        );
    }
}
