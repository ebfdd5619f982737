//! Configuration reload (SIGHUP, `systemctl reload facilityd`).
//!
//! The SIGHUP handler ([`spawn_sighup_handler`]) loads the configuration again with
//! [`crate::settings::load`], the same code `run` and `check` use. An invalid configuration changes
//! nothing: every issue is logged with its file and key path, the running configuration stays
//! in force, and the failure is counted (`facilityd_config_reloads_total{result="error"}`). A
//! valid one goes to the running gateway as a [`ReloadRequest`], which [`Reloader::apply`]
//! carries out between two steps of the gateway's main loop:
//!
//! - Settings read once at start-up ([`Settings::restart_keys`]: the state directory, the API's
//!   address and token file, `[influxdb]`, the `[mqtt]` connection, `[storage]`, response
//!   times, notifiers, `gateway.id`) keep their running values; a changed one is named in a
//!   warning as needing a restart.
//! - Devices are compared by id and full settings ([`Device::same_settings`]). An unchanged
//!   device is not touched: its link poller keeps polling it on its schedule, over the same
//!   connection. A changed device is stopped and started again with its new settings; an added
//!   one starts; a removed one stops, and its status and latest values leave the API.
//! - Rules: the rule engine is rebuilt ([`RuleEngine::rebuild`]): the state of an unchanged
//!   rule on an unchanged asset carries over; new and changed rules start afresh; the saved
//!   state of removed and changed ones is deleted. Work orders are never deleted by a reload.
//! - MQTT devices: the subscriber routes by the new device set; new topics are subscribed to
//!   and topics no device needs any more unsubscribed.
//!
//! Device identity: records (`Reading`, `DeviceStatus`) name their device by *slot*. The
//! configuration's devices start as slots `0..n`; a reload gives every added or changed device
//! a new slot and never reuses one, so a record still in flight from a changed or removed
//! device is encoded with the tags its device had when it was read, and is never taken for
//! another device. An unchanged device keeps its slot. The consumers keyed by slot (the line
//! encoder, the latest values, the availability tracker, the rule engine's asset map, the MQTT
//! republisher) learn of a new slot before any record of it can exist.
//!
//! [`RuleEngine::rebuild`]: crate::rules::engine::RuleEngine::rebuild

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::availability::Availability;
use crate::device::{Device, DeviceSlots};
use crate::gateway::Gateway;
use crate::modbus::fleet::{Fleet, FleetChange, Member};
use crate::modbus::stats::DeviceStats;
use crate::mqtt::client::MqttClient;
use crate::mqtt::subscriber::{MqttDevice, MqttDevices};
use crate::rule_loop::{RulesReload, RulesReloaded};
use crate::settings::Settings;
use crate::settings::current::DeviceSet;
use crate::telemetry::line::LineEncoder;

/// How long a reload waits for the maintenance loop to swap its rule engine (it may be
/// waiting for the work-order store).
const RULES_TIMEOUT: Duration = Duration::from_secs(30);

/// A valid configuration for the running gateway to apply.
pub struct ReloadRequest {
    pub settings: Settings,
    pub done: oneshot::Sender<ReloadSummary>,
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    pub devices_added: Vec<String>,
    pub devices_removed: Vec<String>,
    pub devices_changed: Vec<String>,
    pub devices_unchanged: usize,
    pub rules_added: Vec<String>,
    pub rules_removed: Vec<String>,
    pub rules_changed: Vec<String>,
    pub rules_unchanged: usize,
    /// Rule states (asset x rule) carried into the new rule engine; `None` when the rule
    /// engine did not answer in time.
    pub rule_states_carried: Option<usize>,
    /// Changed keys that need a restart (they keep their running values).
    pub restart_required: Vec<String>,
    pub links: FleetChange,
}

/// How one device of the new configuration relates to the running one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChange {
    /// Same id and settings: index in the running configuration.
    Unchanged(usize),
    /// Same id, other settings: index in the running configuration.
    Changed(usize),
    Added,
}

/// Compares two device lists by id and settings: per new device its [`DeviceChange`], and the
/// indexes of the old devices that are gone.
pub fn diff_devices(old: &[Arc<Device>], new: &[Arc<Device>]) -> (Vec<DeviceChange>, Vec<usize>) {
    let by_id: HashMap<&str, usize> = old.iter().enumerate().map(|(i, d)| (&*d.id, i)).collect();
    let changes = new
        .iter()
        .map(|d| match by_id.get(&*d.id) {
            Some(&i) if old[i].same_settings(d) => DeviceChange::Unchanged(i),
            Some(&i) => DeviceChange::Changed(i),
            None => DeviceChange::Added,
        })
        .collect();
    let new_ids: std::collections::HashSet<&str> = new.iter().map(|d| &*d.id).collect();
    let removed = old
        .iter()
        .enumerate()
        .filter(|(_, d)| !new_ids.contains(&*d.id))
        .map(|(i, _)| i)
        .collect();
    (changes, removed)
}

/// The keys whose values differ between two [`Settings::restart_keys`].
pub fn changed_restart_keys(
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut keys: Vec<String> = old
        .iter()
        .filter(|(k, v)| new.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect();
    keys.extend(new.keys().filter(|k| !old.contains_key(*k)).cloned());
    keys.sort();
    keys.dedup();
    keys
}

/// Gives `new` the running values of everything that needs a restart.
fn keep_running(new: &mut Settings, old: &Settings) {
    new.gateway.id = old.gateway.id.clone();
    new.gateway.state_dir = old.gateway.state_dir.clone();
    new.http_listen = old.http_listen.clone();
    new.api_token_file = old.api_token_file.clone();
    new.influxdb = old.influxdb.clone();
    let routing = new.mqtt.as_ref().map(|m| m.routing.clone());
    new.mqtt = old.mqtt.clone().map(|mut m| {
        m.routing = routing.unwrap_or_default();
        m
    });
    // The running notifiers stay; they see the new assets (see `Reloader::apply`).
    new.notifiers = old.notifiers.clone();
    new.response_times = old.response_times;
    new.restart_keys = old.restart_keys.clone();
    // `{gateway}` in titles follows the running gateway id too.
    let gateway: Arc<str> = old.gateway.id.as_str().into();
    for r in &mut new.rules {
        r.gateway = gateway.clone();
    }
}

/// The running gateway's handles that a reload changes. Built by `Gateway::run`.
pub struct Reloader {
    pub gw: Gateway,
    pub slots: DeviceSlots,
    pub encoder: LineEncoder,
    pub fleet: Fleet,
    pub rules: mpsc::Sender<RulesReload>,
    /// The MQTT client and the subscriber's device set, with `[mqtt]`.
    pub mqtt: Option<(MqttClient, watch::Sender<Arc<MqttDevices>>)>,
    /// The availability tracker: assets that stay keep their spans, removed ones end theirs.
    pub availability: Arc<Availability>,
}

impl Reloader {
    /// Opens a slot for an added or changed device in every consumer keyed by slot.
    fn open_slot(&self, d: &Arc<Device>) -> usize {
        let slot = self.slots.push(d.clone());
        self.encoder.open_slot(slot, d);
        self.gw.latest.open_slot(slot, d.profile.points.len());
        slot
    }

    /// Applies a valid configuration (see the module documentation).
    pub async fn apply(&mut self, mut new: Settings) -> ReloadSummary {
        let cur = self.gw.current.get();
        let old = &cur.settings;
        let mut summary = ReloadSummary {
            restart_required: changed_restart_keys(&old.restart_keys, &new.restart_keys),
            ..Default::default()
        };
        keep_running(&mut new, old);
        // The notifiers' `match` and `{name}` follow the devices in force.
        self.gw
            .notifier_assets
            .replace(super::notifiers::asset_directory(&new.assets));

        // Devices: slots and counters.
        let (changes, removed) = diff_devices(&old.devices, &new.devices);
        let mut slots = Vec::with_capacity(new.devices.len());
        let mut stats = Vec::with_capacity(new.devices.len());
        let mut retired: Vec<usize> = removed.iter().map(|&i| cur.slots[i]).collect();
        let mut started: Vec<Member> = Vec::new();
        for (d, change) in new.devices.iter().zip(&changes) {
            let (slot, st) = match *change {
                DeviceChange::Unchanged(i) => {
                    summary.devices_unchanged += 1;
                    (cur.slots[i], cur.stats[i].clone())
                }
                DeviceChange::Changed(i) => {
                    summary.devices_changed.push(d.id.to_string());
                    retired.push(cur.slots[i]);
                    // The asset's counters go on (Prometheus counters of one asset).
                    (self.open_slot(d), cur.stats[i].clone())
                }
                DeviceChange::Added => {
                    summary.devices_added.push(d.id.to_string());
                    (self.open_slot(d), Arc::new(DeviceStats::default()))
                }
            };
            if !matches!(change, DeviceChange::Unchanged(_)) {
                started.push(Member {
                    slot,
                    device: d.clone(),
                    stats: st.clone(),
                });
            }
            slots.push(slot);
            stats.push(st);
        }
        summary.devices_removed = removed
            .iter()
            .map(|&i| old.devices[i].id.to_string())
            .collect();

        // Rules.
        for r in &new.rules {
            match old.rules.iter().find(|o| o.id == r.id) {
                None => summary.rules_added.push(r.id.to_string()),
                Some(o) if o.same_definition(r) => summary.rules_unchanged += 1,
                Some(_) => summary.rules_changed.push(r.id.to_string()),
            }
        }
        summary.rules_removed = old
            .rules
            .iter()
            .filter(|o| !new.rules.iter().any(|r| r.id == o.id))
            .map(|o| o.id.to_string())
            .collect();
        let mut asset_of_slot = vec![None; self.slots.len()];
        for (i, &slot) in slots.iter().enumerate() {
            if let Some(a) = asset_of_slot.get_mut(slot) {
                *a = Some(i);
            }
        }
        let (done, answer) = oneshot::channel();
        let sent = self
            .rules
            .send(RulesReload {
                rules: new.rules.clone(),
                assets: new.assets.clone(),
                asset_of_slot,
                done,
            })
            .await;
        if sent.is_ok() {
            match tokio::time::timeout(RULES_TIMEOUT, answer).await {
                Ok(Ok(RulesReloaded { carried, .. })) => {
                    summary.rule_states_carried = Some(carried)
                }
                Ok(Err(_)) => error!("the rule engine stopped during the reload"),
                Err(_) => warn!(
                    "the rule engine has not taken the new rules within 30 s (the work-order store is slow); it will"
                ),
            }
        } else {
            error!("the rule engine is not running: rules not reloaded");
        }

        // The availability tracker learns the new slots before any record of them exists.
        let tz = new.gateway.timezone.parse().unwrap_or(chrono_tz::UTC);
        let tracked: Vec<(usize, Arc<Device>)> = slots
            .iter()
            .copied()
            .zip(new.devices.iter().cloned())
            .collect();
        self.availability.reconfigure(tz, &tracked);

        // MQTT devices: the subscriber's routing and the subscriptions.
        if let Some((client, view)) = &self.mqtt {
            let errors: HashMap<usize, Arc<AtomicU64>> = view
                .borrow()
                .devices
                .iter()
                .map(|d| (d.slot, d.errors.clone()))
                .collect();
            let routing = new
                .mqtt
                .as_ref()
                .map(|m| m.routing.clone())
                .unwrap_or_default();
            let devices = new
                .devices
                .iter()
                .zip(slots.iter().zip(&stats))
                .map(|(d, (&slot, st))| MqttDevice {
                    device: d.clone(),
                    slot,
                    stats: st.clone(),
                    errors: errors.get(&slot).cloned().unwrap_or_default(),
                })
                .collect();
            let filters = routing.router.filters();
            view.send_replace(Arc::new(MqttDevices { routing, devices }));
            let (added, removed) = client.set_subscriptions(filters);
            if !added.is_empty() || !removed.is_empty() {
                info!(
                    subscribed = %added.join(", "),
                    unsubscribed = %removed.join(", "),
                    "MQTT subscriptions changed by the reload"
                );
            }
        } else if new.devices.iter().any(|d| {
            matches!(d.source, crate::device::DeviceSource::Mqtt { .. })
                && !old.devices.iter().any(|o| o.id == d.id)
        }) {
            warn!(
                "the new configuration has MQTT devices but the gateway runs without an MQTT connection: they are served after a restart"
            );
        }

        // Pollers: stop the removed and changed devices, start the changed and added ones.
        summary.links = self.fleet.update(&retired, started).await;

        self.gw.current.set(DeviceSet {
            settings: Arc::new(new),
            slots,
            stats,
            generation: cur.generation + 1,
        });
        for slot in retired {
            self.gw.latest.retire(slot);
        }
        log_summary(&summary);
        summary
    }
}

fn list(ids: &[String]) -> String {
    if ids.is_empty() {
        "-".into()
    } else {
        ids.join(", ")
    }
}

fn log_summary(s: &ReloadSummary) {
    if !s.restart_required.is_empty() {
        warn!(
            keys = %s.restart_required.join(", "),
            "configuration reload: these settings changed but take effect only after a restart (systemctl restart facilityd); they keep their running values"
        );
    }
    info!(
        devices_added = s.devices_added.len(),
        devices_removed = s.devices_removed.len(),
        devices_changed = s.devices_changed.len(),
        devices_unchanged = s.devices_unchanged,
        rules_added = s.rules_added.len(),
        rules_removed = s.rules_removed.len(),
        rules_changed = s.rules_changed.len(),
        rules_unchanged = s.rules_unchanged,
        rule_states_carried = s.rule_states_carried.unwrap_or(0),
        added = %list(&s.devices_added),
        removed = %list(&s.devices_removed),
        changed = %list(&s.devices_changed),
        rules = %list(
            &s.rules_added
                .iter()
                .map(|r| format!("+{r}"))
                .chain(s.rules_removed.iter().map(|r| format!("-{r}")))
                .chain(s.rules_changed.iter().map(|r| format!("~{r}")))
                .collect::<Vec<_>>()
        ),
        "configuration reloaded"
    );
}

/// Reloads the configuration on every SIGHUP (see the module documentation).
pub fn spawn_sighup_handler(path: PathBuf, gw: Gateway, requests: mpsc::Sender<ReloadRequest>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(h) => h,
            Err(e) => {
                error!(error = %e, "cannot handle SIGHUP: configuration reload is off");
                return;
            }
        };
        while hup.recv().await.is_some() {
            info!(config = %path.display(), "SIGHUP: reloading the configuration");
            crate::gateway::service::reloading();
            let outcome = reload(&path, &gw, &requests).await;
            let status = match &outcome {
                Ok(_) => format!(
                    "running: {} devices (configuration reloaded)",
                    gw.current.get().settings.devices.len()
                ),
                Err(()) => format!(
                    "running: {} devices (the last configuration reload failed: see the log)",
                    gw.current.get().settings.devices.len()
                ),
            };
            crate::gateway::service::reloaded(&status);
        }
    });
    #[cfg(not(unix))]
    let _ = (path, gw, requests);
}

/// Loads the configuration at `path` and has the running gateway apply it; an invalid one is
/// logged, counted and changes nothing.
pub async fn reload(
    path: &Path,
    gw: &Gateway,
    requests: &mpsc::Sender<ReloadRequest>,
) -> Result<ReloadSummary, ()> {
    let p = path.to_path_buf();
    let settings = match tokio::task::spawn_blocking(move || crate::settings::load(&p)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            for issue in &e.0 {
                error!("{issue}");
            }
            error!(
                errors = e.0.len(),
                config = %path.display(),
                "configuration reload rejected: the old configuration keeps running"
            );
            gw.reloads.failed();
            return Err(());
        }
        Err(e) => {
            error!(error = %e, "configuration reload failed: the old configuration keeps running");
            gw.reloads.failed();
            return Err(());
        }
    };
    for w in &settings.warnings {
        warn!("{w}");
    }
    let (done, answer) = oneshot::channel();
    if requests
        .send(ReloadRequest { settings, done })
        .await
        .is_err()
    {
        error!("the gateway is not running: configuration not reloaded");
        gw.reloads.failed();
        return Err(());
    }
    match answer.await {
        Ok(summary) => {
            gw.reloads.succeeded(!summary.restart_required.is_empty());
            Ok(summary)
        }
        Err(_) => {
            error!("the gateway stopped during the reload");
            gw.reloads.failed();
            Err(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(dir: &Path, main: &str, conf_d: &[(&str, &str)]) -> Settings {
        let path = dir.join("facilityd.toml");
        std::fs::write(&path, main).unwrap();
        let d = dir.join("conf.d");
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir(&d).unwrap();
        for (name, text) in conf_d {
            std::fs::write(d.join(name), text).unwrap();
        }
        crate::settings::load_with_env(&path, Default::default()).unwrap_or_else(|e| panic!("{e}"))
    }

    const MAIN: &str = r#"
[gateway]
id = "gw"
state_dir = "/tmp/facilityd-reload-unit"

[[notify]]
type = "webhook"
url = "http://127.0.0.1:9/hook"
headers = { "X-A" = "1", "X-B" = "2", "X-C" = "3" }
"#;

    fn pump(id: &str, unit: u8, interval: &str) -> String {
        format!(
            "[[devices]]\nid = \"{id}\"\nprofile = \"pump\"\ninterval = \"{interval}\"\n\
             modbus = {{ url = \"tcp://127.0.0.1:1502\", unit = {unit} }}\n"
        )
    }

    #[test]
    fn devices_diff_by_id_and_settings_not_by_file_or_order() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            pump("P-1", 1, "1s"),
            pump("P-2", 2, "1s"),
            pump("P-3", 3, "1s"),
        );
        let old = load(dir.path(), MAIN, &[("10.toml", &format!("{a}{b}{c}"))]);
        // P-1 moves to another file and after P-3, P-2 polls faster, P-3 goes, P-4 comes.
        let new = load(
            dir.path(),
            MAIN,
            &[
                (
                    "10.toml",
                    &format!("{}{}", pump("P-4", 4, "1s"), pump("P-2", 2, "2s")),
                ),
                ("20.toml", &a),
            ],
        );
        let (changes, removed) = diff_devices(&old.devices, &new.devices);
        let ids: Vec<&str> = new.devices.iter().map(|d| &*d.id).collect();
        assert_eq!(ids, ["P-4", "P-2", "P-1"]);
        assert_eq!(
            changes,
            [
                DeviceChange::Added,
                DeviceChange::Changed(1),
                DeviceChange::Unchanged(0)
            ]
        );
        assert_eq!(removed, [2]);
        // A profile change is a device change.
        let custom = |scale: &str| {
            format!(
                "[[profiles]]\nname = \"tank\"\ndevice_type = \"other\"\n\
                 points = [ {{ name = \"level\", kind = \"gauge\", register = \"holding\", address = 0, scale = {scale} }} ]\n\
                 [[devices]]\nid = \"T-1\"\nprofile = \"tank\"\nmodbus = {{ url = \"tcp://127.0.0.1:1502\", unit = 9 }}\n"
            )
        };
        let old = load(dir.path(), MAIN, &[("10.toml", &custom("0.1"))]);
        let same = load(dir.path(), MAIN, &[("10.toml", &custom("0.1"))]);
        let new = load(dir.path(), MAIN, &[("10.toml", &custom("0.01"))]);
        assert_eq!(
            diff_devices(&old.devices, &same.devices).0,
            [DeviceChange::Unchanged(0)]
        );
        assert_eq!(
            diff_devices(&old.devices, &new.devices).0,
            [DeviceChange::Changed(0)]
        );
    }

    #[test]
    fn restart_keys_name_what_changed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "secret-1\n").unwrap();
        let influx = format!(
            "\n[influxdb]\nurl = \"http://127.0.0.1:8086\"\norg = \"o\"\nbucket = \"b\"\ntoken_file = {:?}\n",
            token.display().to_string()
        );
        let main = format!("{MAIN}{influx}");
        let a = load(dir.path(), &main, &[("10.toml", &pump("P-1", 1, "1s"))]);
        // Devices, rules and the site change; the notifier's table is the same in another order
        // of keys (the config crate's tables have none): nothing needs a restart.
        let reordered = MAIN.replace(
            r#"{ "X-A" = "1", "X-B" = "2", "X-C" = "3" }"#,
            r#"{ "X-C" = "3", "X-A" = "1", "X-B" = "2" }"#,
        );
        let b = load(
            dir.path(),
            &format!(
                "{}{influx}",
                reordered.replace("id = \"gw\"", "id = \"gw\"\nsite = \"s\"")
            ),
            &[("10.toml", &pump("P-2", 1, "5s"))],
        );
        assert_eq!(
            changed_restart_keys(&a.restart_keys, &b.restart_keys),
            Vec::<String>::new()
        );
        // The token's content, the listen address and a notifier's URL do; the token itself is
        // never kept in clear.
        std::fs::write(&token, "secret-2\n").unwrap();
        let c = load(
            dir.path(),
            &format!(
                "{}{influx}\n[http]\nlisten = \"127.0.0.1:9999\"\n",
                MAIN.replace("9/hook", "10/hook")
            ),
            &[("10.toml", &pump("P-1", 1, "1s"))],
        );
        assert_eq!(
            changed_restart_keys(&a.restart_keys, &c.restart_keys),
            ["http.listen", "influxdb.token", "notify"]
        );
        assert!(!c.restart_keys.values().any(|v| v.contains("secret-2")));
    }

    #[test]
    fn settings_that_need_a_restart_keep_their_running_values() {
        let dir = tempfile::tempdir().unwrap();
        let old = load(dir.path(), MAIN, &[("10.toml", &pump("P-1", 1, "1s"))]);
        let rule = "[[rules]]\nid = \"r\"\ntype = \"offline\"\nafter = \"1m\"\npriority = \"low\"\ntitle = \"{gateway} {asset}\"\n";
        let mut new = load(
            dir.path(),
            &format!(
                "{}\n[http]\nlisten = \"127.0.0.1:9999\"\n",
                MAIN.replace("id = \"gw\"", "id = \"gw2\"")
            ),
            &[("10.toml", &format!("{}{rule}", pump("P-1", 1, "1s")))],
        );
        assert_eq!(
            changed_restart_keys(&old.restart_keys, &new.restart_keys),
            ["gateway.id", "http.listen"]
        );
        keep_running(&mut new, &old);
        assert_eq!(new.gateway.id, "gw");
        assert_eq!(new.http_listen, old.http_listen);
        assert_eq!(&*new.rules[0].gateway, "gw");
        assert_eq!(new.restart_keys, old.restart_keys);
        assert_eq!(new.rules.len(), 1);
    }
}
