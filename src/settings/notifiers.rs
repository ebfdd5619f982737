//! Notifiers: webhooks and MQTT publishers, validated from the `[[notify]]` items into plain
//! specs. Webhooks are validated by the work-order module, MQTT notifiers by the MQTT module;
//! the gateway builds the running notifiers of the specs when it starts
//! (`crate::gateway::notifiers`).

use crate::config::ConfigIssue;
use crate::mqtt::notifier::MqttNotifierSpec;
use crate::workorder::notify::NotifierName;
use crate::workorder::notify::webhook::{WebhookSpec, parse_notifiers_with};

/// One validated `[[notify]]` item.
#[derive(Debug, Clone)]
pub enum NotifierSpec {
    Webhook(WebhookSpec),
    /// Publishes through the `[mqtt]` connection.
    Mqtt(MqttNotifierSpec),
}

impl NotifierSpec {
    /// The notifier's name: its `id`, or `<type>:<position>`.
    pub fn name(&self) -> &str {
        match self {
            NotifierSpec::Webhook(w) => &w.name,
            NotifierSpec::Mqtt(m) => &m.name,
        }
    }
}

impl NotifierName for NotifierSpec {
    fn name(&self) -> &str {
        NotifierSpec::name(self)
    }
}

/// The notifiers of the `notify` items (`(file, index in that file, item)`).
/// `mqtt_configured`: an `[mqtt]` section is configured (without one, an MQTT notifier is an
/// error).
pub(super) fn notifiers(
    items: &[(String, usize, config::Value)],
    mqtt_configured: bool,
) -> Result<Vec<NotifierSpec>, Vec<ConfigIssue>> {
    let validate_mqtt = |file: &str, base: &str, position: usize, value: config::Value| {
        crate::mqtt::notifier::validate(file, base, position, value, mqtt_configured)
            .map(NotifierSpec::Mqtt)
    };
    parse_notifiers_with(items, &NotifierSpec::Webhook, Some(&validate_mqtt))
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
        let n = notifiers(&items(toml), true).unwrap();
        assert_eq!(
            n.iter().map(|n| n.name()).collect::<Vec<_>>(),
            ["mqtt:0", "webhook:1", "second"]
        );
        // Webhooks only: MQTT items left out.
        assert_eq!(
            parse_notifiers(&items(toml))
                .unwrap()
                .iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>(),
            ["webhook:1", "second"]
        );
        // Without [mqtt], an MQTT notifier has no connection to publish through.
        let e = match notifiers(&items(toml), false) {
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
