//! Grafana provisioning files: the data sources the dashboards name by uid, and the provider
//! that loads the dashboard files.

use super::grafana::{INFLUX_UID, PROMETHEUS_UID};

/// Where the dashboards provider reads the JSON files on the Grafana host.
pub const DASHBOARDS_PATH: &str = "/var/lib/grafana/dashboards/facilityd";

/// `provisioning/datasources/facilityd.yaml`. `min_interval` is Grafana's smallest
/// `$__interval` (the longest poll interval, so every interval holds a value of every device);
/// `database` the InfluxDB 1.x database (the 2.x DBRP or 3.x database name).
pub fn datasources(database: &str, min_interval: &str) -> String {
    // InfluxDB 1.8's v2 endpoint takes `bucket = "database/retention_policy"`: InfluxQL names
    // the database alone. Quoted, so that any name is one YAML string.
    let database = database.split('/').next().unwrap_or(database);
    let quoted = serde_json::to_string(database).unwrap_or_else(|_| "\"facilityd\"".into());
    format!(
        r#"# Grafana data sources of the facilityd dashboards (written by `facilityd dashboards`).
# The dashboards name them by uid: {INFLUX_UID} (InfluxQL, every InfluxDB generation answers
# it) and {PROMETHEUS_UID} (the gateway's own /metrics, for the gateway-health dashboard).
# Keep exactly one {INFLUX_UID} entry: InfluxDB 1.x is active below; for InfluxDB 2.x or 3.x
# replace it with the commented entry for your server. ${{VARIABLES}} come from Grafana's
# environment.
apiVersion: 1

datasources:
  # InfluxDB 1.x: InfluxQL on the database facilityd writes, user and password.
  - name: facilityd InfluxDB
    type: influxdb
    uid: {INFLUX_UID}
    access: proxy
    url: ${{INFLUXDB_URL}}
    user: ${{INFLUXDB_USER}}
    jsonData:
      dbName: {quoted}
      httpMode: POST
      timeInterval: {min_interval}
    secureJsonData:
      password: ${{INFLUXDB_PASSWORD}}
    editable: false

  # InfluxDB 2.x: InfluxQL through the 1.x compatibility API. The bucket needs a DBRP mapping
  # to the database name (automatic for buckets written through /write; otherwise
  # `influx v1 dbrp create --db {database} --rp autogen --bucket-id <bucket id> --default`);
  # the API token goes in an Authorization header.
  # - name: facilityd InfluxDB
  #   type: influxdb
  #   uid: {INFLUX_UID}
  #   access: proxy
  #   url: ${{INFLUXDB_URL}}
  #   jsonData:
  #     dbName: {quoted}
  #     httpMode: POST
  #     timeInterval: {min_interval}
  #     httpHeaderName1: Authorization
  #   secureJsonData:
  #     httpHeaderValue1: Token ${{INFLUXDB_TOKEN}}
  #   editable: false

  # InfluxDB 3 Core / Enterprise: InfluxQL on the database; the token is the password (the
  # user name is not checked).
  # - name: facilityd InfluxDB
  #   type: influxdb
  #   uid: {INFLUX_UID}
  #   access: proxy
  #   url: ${{INFLUXDB_URL}}
  #   user: facilityd
  #   jsonData:
  #     version: InfluxQL
  #     dbName: {quoted}
  #     httpMode: POST
  #     timeInterval: {min_interval}
  #   secureJsonData:
  #     password: ${{INFLUXDB_TOKEN}}
  #   editable: false

  # Prometheus scraping facilityd's /metrics (the [http] listen address).
  - name: facilityd Prometheus
    type: prometheus
    uid: {PROMETHEUS_UID}
    access: proxy
    url: ${{PROMETHEUS_URL}}
    jsonData:
      httpMethod: POST
    editable: false
"#
    )
}

/// `provisioning/dashboards/facilityd.yaml`.
pub fn dashboards() -> String {
    format!(
        r#"# Grafana dashboard provider for the facilityd dashboards (written by `facilityd dashboards`).
# Copy the dashboards/*.json files to {DASHBOARDS_PATH} on the Grafana host.
apiVersion: 1

providers:
  - name: facilityd
    type: file
    folder: facilityd
    disableDeletion: false
    allowUiUpdates: false
    updateIntervalSeconds: 30
    options:
      path: {DASHBOARDS_PATH}
      foldersFromFilesStructure: false
"#
    )
}
