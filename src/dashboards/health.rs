//! The gateway's own health, from its Prometheus metrics (`/metrics`): polling, the telemetry
//! log and its forwarding, work orders and their outbox.

use serde_json::{Value, json};

use super::grafana::{self, Board, prom_target};

/// `{instance=~"$instance"}` plus the asset filter where the metric is per device.
const I: &str = "instance=~\"$instance\"";
const IA: &str = "instance=~\"$instance\", asset=~\"$asset\"";

struct Chart {
    title: &'static str,
    description: &'static str,
    unit: &'static str,
    /// (PromQL, legend)
    queries: Vec<(String, &'static str)>,
    stat: bool,
    width: u32,
}

fn chart(
    title: &'static str,
    description: &'static str,
    unit: &'static str,
    queries: Vec<(String, &'static str)>,
) -> Chart {
    Chart {
        title,
        description,
        unit,
        queries,
        stat: false,
        width: 12,
    }
}

fn stat(
    title: &'static str,
    description: &'static str,
    unit: &'static str,
    query: String,
    legend: &'static str,
) -> Chart {
    Chart {
        title,
        description,
        unit,
        queries: vec![(query, legend)],
        stat: true,
        width: 4,
    }
}

fn rows() -> Vec<(&'static str, Vec<Chart>)> {
    vec![
        (
            "Devices",
            vec![
                stat(
                    "Devices online",
                    "Devices answering their polls.",
                    "none",
                    format!("sum(facilityd_device_online{{{IA}}})"),
                    "online",
                ),
                stat(
                    "Devices",
                    "Devices configured.",
                    "none",
                    format!("count(facilityd_device_online{{{IA}}})"),
                    "devices",
                ),
                stat(
                    "Database refused",
                    "1 while the database refuses the gateway's writes (401, 403, 404).",
                    "none",
                    format!("max(facilityd_gateway_database_refused{{{I}}})"),
                    "refused",
                ),
                stat(
                    "Log disk failing",
                    "1 while the disk refuses writes to the telemetry log.",
                    "none",
                    format!("max(facilityd_log_disk_failing{{{I}}})"),
                    "failing",
                ),
                stat(
                    "Config reload OK",
                    "0 when the last configuration reload was rejected.",
                    "none",
                    format!("min(facilityd_config_last_reload_successful{{{I}}})"),
                    "ok",
                ),
                stat(
                    "MQTT connected",
                    "1 while the MQTT client is connected (only with [mqtt]).",
                    "none",
                    format!("max(facilityd_mqtt_connected{{{I}}})"),
                    "connected",
                ),
                chart(
                    "Polls",
                    "Poll cycles per second, per device.",
                    "ops",
                    vec![(
                        format!(
                            "sum by (asset) (rate(facilityd_modbus_polls_total{{{IA}}}[$__rate_interval]))"
                        ),
                        "{{asset}}",
                    )],
                ),
                chart(
                    "Poll errors",
                    "Failed Modbus requests per second, per device and kind.",
                    "ops",
                    vec![(
                        format!(
                            "sum by (asset, kind) (rate(facilityd_modbus_errors_total{{{IA}}}[$__rate_interval]))"
                        ),
                        "{{asset}} {{kind}}",
                    )],
                ),
                chart(
                    "Poll duration",
                    "Quantiles of the poll-cycle duration, over the chosen devices.",
                    "s",
                    vec![
                        (
                            format!(
                                "histogram_quantile(0.5, sum by (le) (rate(facilityd_poll_duration_seconds_bucket{{{IA}}}[$__rate_interval])))"
                            ),
                            "p50",
                        ),
                        (
                            format!(
                                "histogram_quantile(0.95, sum by (le) (rate(facilityd_poll_duration_seconds_bucket{{{IA}}}[$__rate_interval])))"
                            ),
                            "p95",
                        ),
                        (
                            format!(
                                "histogram_quantile(0.99, sum by (le) (rate(facilityd_poll_duration_seconds_bucket{{{IA}}}[$__rate_interval])))"
                            ),
                            "p99",
                        ),
                    ],
                ),
                chart(
                    "Poll cycle",
                    "Achieved poll cycle per device (above its interval when the link cannot keep up).",
                    "s",
                    vec![(
                        format!("facilityd_modbus_cycle_seconds{{{IA}}}"),
                        "{{asset}}",
                    )],
                ),
            ],
        ),
        (
            "Telemetry",
            vec![
                chart(
                    "Backlog",
                    "Telemetry in the on-disk log not yet written to the database.",
                    "bytes",
                    vec![(format!("sum(facilityd_log_backlog_bytes{{{I}}})"), "bytes")],
                ),
                chart(
                    "Backlog lines",
                    "Lines in the log not yet written to the database.",
                    "none",
                    vec![(format!("sum(facilityd_log_backlog_lines{{{I}}})"), "lines")],
                ),
                chart(
                    "Oldest unwritten line",
                    "Age of the oldest line not yet written to the database.",
                    "s",
                    vec![(
                        format!("max(facilityd_log_backlog_oldest_seconds{{{I}}})"),
                        "age",
                    )],
                ),
                chart(
                    "Lines",
                    "Telemetry lines per second: accepted into the log, written to the database, dead-lettered (rejected by it), dropped.",
                    "ops",
                    vec![(
                        format!(
                            "sum by (state) (rate(facilityd_telemetry_lines_total{{{I}}}[$__rate_interval]))"
                        ),
                        "{{state}}",
                    )],
                ),
                chart(
                    "Dead-lettered lines",
                    "Lines the database rejected, kept in the dead-letter file (increase over the interval).",
                    "none",
                    vec![(
                        format!(
                            "sum by (file) (increase(facilityd_telemetry_dead_letter_lines_total{{{I}}}[$__rate_interval]))"
                        ),
                        "{{file}}",
                    )],
                ),
                chart(
                    "Log drops",
                    "Unforwarded lines lost, by reason (bulk, priority, disk, corrupt), and records dropped before the log.",
                    "none",
                    vec![
                        (
                            format!(
                                "sum by (reason) (increase(facilityd_log_dropped_lines_total{{{I}}}[$__rate_interval]))"
                            ),
                            "{{reason}}",
                        ),
                        (
                            format!(
                                "sum(increase(facilityd_telemetry_records_dropped_total{{{I}}}[$__rate_interval]))"
                            ),
                            "records (channel full)",
                        ),
                    ],
                ),
                chart(
                    "Database write errors",
                    "Failed database writes (retried), by HTTP status (0: no answer), and refused log writes, per second.",
                    "ops",
                    vec![
                        (
                            format!(
                                "sum(rate(facilityd_telemetry_write_errors_total{{{I}}}[$__rate_interval]))"
                            ),
                            "database",
                        ),
                        (
                            format!(
                                "sum(rate(facilityd_log_write_errors_total{{{I}}}[$__rate_interval]))"
                            ),
                            "log disk",
                        ),
                    ],
                ),
                chart(
                    "Forward rate",
                    "Lines per second written from the log to the database.",
                    "ops",
                    vec![(format!("sum(facilityd_log_forward_rate{{{I}}})"), "lines/s")],
                ),
            ],
        ),
        (
            "Work orders",
            vec![
                chart(
                    "Open work orders",
                    "Work orders not yet resolved, by priority.",
                    "none",
                    vec![(
                        format!("sum by (priority) (facilityd_work_orders_open{{{I}}})"),
                        "{{priority}}",
                    )],
                ),
                chart(
                    "Outbox",
                    "Work-order events waiting for delivery or held as dead letters, per notifier (only with notifiers).",
                    "none",
                    vec![(
                        format!("sum by (notifier, state) (facilityd_outbox_deliveries{{{I}}})"),
                        "{{notifier}} {{state}}",
                    )],
                ),
                chart(
                    "Rule engine",
                    "Samples evaluated and rule triggers per second; readings dropped because the engine's queue was full.",
                    "ops",
                    vec![
                        (
                            format!(
                                "sum(rate(facilityd_rule_samples_total{{{I}}}[$__rate_interval]))"
                            ),
                            "samples",
                        ),
                        (
                            format!(
                                "sum(rate(facilityd_rule_triggers_total{{{I}}}[$__rate_interval]))"
                            ),
                            "triggers",
                        ),
                        (
                            format!(
                                "sum(rate(facilityd_rule_readings_dropped_total{{{I}}}[$__rate_interval]))"
                            ),
                            "dropped",
                        ),
                    ],
                ),
                chart(
                    "Work-order events",
                    "Work-order lifecycle events per second.",
                    "ops",
                    vec![(
                        format!(
                            "sum(rate(facilityd_work_order_events_total{{{I}}}[$__rate_interval]))"
                        ),
                        "events",
                    )],
                ),
            ],
        ),
    ]
}

/// The gateway-health dashboard.
pub fn health(uid: &str) -> Value {
    let mut b = Board::new(
        uid,
        "facilityd gateway health",
        "The gateway's own metrics (/metrics, scraped by Prometheus): polling, the telemetry log and its forwarding, work orders.",
        "now-6h",
    );
    b.variable(grafana::variable(
        "instance",
        "Gateway",
        grafana::prometheus(),
        "label_values(facilityd_log_bytes, instance)",
        true,
        Some(".*"),
    ));
    b.variable(grafana::variable(
        "asset",
        "Asset",
        grafana::prometheus(),
        "label_values(facilityd_device_online{instance=~\"$instance\"}, asset)",
        true,
        Some(".*"),
    ));
    for (row, charts) in rows() {
        b.row(row);
        for c in charts {
            let targets = c
                .queries
                .iter()
                .enumerate()
                .map(|(i, (q, legend))| prom_target(i, q, legend))
                .collect();
            let mut p = if c.stat {
                grafana::stat(c.title, c.description, grafana::prometheus(), targets)
            } else {
                grafana::timeseries(
                    c.title,
                    c.description,
                    grafana::prometheus(),
                    targets,
                    false,
                )
            };
            p["fieldConfig"]["defaults"]["unit"] = json!(c.unit);
            if c.stat {
                p["options"]["textMode"] = json!("value");
            }
            b.add(c.width, if c.stat { 4 } else { 8 }, p);
        }
    }
    b.finish()
}
