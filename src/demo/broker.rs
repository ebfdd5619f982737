//! The demo's embedded MQTT broker (rumqttd), used when no `--mqtt-url` is given. rumqttd has no
//! shutdown, so the broker runs on its own thread for the life of the process.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;

/// Starts rumqttd on a free loopback port, on a thread of its own for the life of the
/// process (it cannot be stopped), and waits until it accepts connections.
pub(super) fn start_embedded_broker() -> anyhow::Result<SocketAddr> {
    use std::collections::HashMap;
    let addr = std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .and_then(|l| l.local_addr())
        .context("no free port for the embedded MQTT broker")?;
    let server = rumqttd::ServerSettings {
        name: "demo-v4".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections: rumqttd::ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: 1 << 20,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 64,
            max_outgoing_packet_count: 200,
            max_segment_size: 16 << 20,
            max_segment_count: 10,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Default::default()
    };
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "the embedded MQTT broker stopped");
            }
        })
        .context("cannot start the embedded MQTT broker's thread")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if std::time::Instant::now() > deadline {
            anyhow::bail!("the embedded MQTT broker did not listen on {addr} within 5 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(addr)
}
