//! What sees every record beside the telemetry log: the latest values (for the API), the
//! availability tracker, the rule engine and the MQTT telemetry republisher. It runs in the producer's task (see
//! `crate::sink`) and never waits: a consumer whose queue is full loses that reading, counted.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tokio::sync::mpsc;

use crate::availability::Availability;
use crate::device::latest::LatestValues;
use crate::model::{Reading, Record};
use crate::mqtt::MqttStats;
use crate::rule_loop::RuleLoopStats;
use crate::sink::Observer;

pub struct Router {
    pub latest: Arc<LatestValues>,
    /// Each asset's state over time and its counters per day.
    pub availability: Arc<Availability>,
    /// The rule loop's queue.
    pub rules: mpsc::Sender<Reading>,
    pub rule_stats: Arc<RuleLoopStats>,
    /// The republisher's queue (`[mqtt] publish_telemetry`).
    pub republish: Option<mpsc::Sender<Reading>>,
    pub mqtt_stats: Arc<MqttStats>,
}

impl Observer for Router {
    fn observe(&self, record: &Record) {
        self.latest.update(record);
        self.availability.observe(record);
        if let Record::Reading(reading) = record {
            if self.rules.try_send(reading.clone()).is_err() {
                self.rule_stats.readings_dropped.fetch_add(1, Relaxed);
            }
            if let Some(tx) = &self.republish
                && tx.try_send(reading.clone()).is_err()
            {
                self.mqtt_stats.telemetry_dropped.fetch_add(1, Relaxed);
            }
        }
    }
}
