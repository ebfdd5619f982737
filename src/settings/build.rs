//! Validation: turns what was read into the running [`Settings`], collecting every error with
//! its file and key path. The plain sections are resolved by `crate::config`; devices,
//! profiles, MQTT, rules and notifiers by the modules that own them, in this order, so that
//! the errors a user sees come in the order of the file's sections.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::Settings;
use super::devices::{build_device, check_serial_buses};
use super::mqtt::{check_profile_mqtt, routing};
use super::restart::restart_keys;
use crate::config::schema::FileConfig;
use crate::config::sections::{gateway, resolve_influxdb, storage};
use crate::config::{ConfigError, GatewaySettings, Issues, Loaded, Sourced};
use crate::device::Device;
use crate::mqtt::settings::MqttSettings;
use crate::profile::{Profile, builtin};
use crate::rules::config::parse_rules;
use crate::rules::types::{AssetInfo, PointInfo};
use crate::workorder::store::ResponseTimes;

pub(crate) fn build(loaded: Loaded) -> Result<Settings, ConfigError> {
    let mut issues = Issues::default();
    let main_file = loaded
        .files
        .first()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let cfg = &loaded.main;

    let (gateway, http_listen) = gateway(cfg, &main_file, &mut issues);
    let influxdb = cfg
        .influxdb
        .as_ref()
        .and_then(|ix| resolve_influxdb(ix, &main_file, &mut issues));
    let mut mqtt = mqtt(cfg, &gateway, &main_file, &mut issues);
    let mqtt_configured = cfg.mqtt.is_some();
    let (profiles, invalid_profiles) = profiles(&loaded, &mut issues);
    let devices = devices(
        &loaded,
        &gateway,
        &profiles,
        &invalid_profiles,
        mqtt_configured,
        &mut issues,
    );

    let assets = asset_infos(&devices);
    // Rules name assets and points: checked only once those are known to be right.
    let rules = if issues.errors.is_empty() {
        match parse_rules(
            &items(&loaded.rules),
            &assets,
            &gateway.id,
            &gateway.timezone,
        ) {
            Ok((rules, warnings)) => {
                issues.warnings.extend(warnings);
                rules
            }
            Err(errs) => {
                issues.errors.extend(errs);
                Vec::new()
            }
        }
    } else {
        Vec::new()
    };
    if let Some(m) = &mut mqtt {
        m.routing = Arc::new(routing(&devices, &gateway.id));
    }
    // An [mqtt] section with errors of its own (reported above) still counts as configured,
    // so MQTT notifiers are checked on their own merits.
    let notifiers = match super::notifiers::notifiers(&items(&loaded.notify), mqtt_configured) {
        Ok(n) => n,
        Err(errs) => {
            issues.errors.extend(errs);
            Vec::new()
        }
    };
    let response_times = response_times(cfg, &main_file, &mut issues);
    let storage = storage(cfg, &main_file, &mut issues);

    if !issues.errors.is_empty() {
        return Err(ConfigError(issues.errors));
    }
    let restart_keys = restart_keys(
        cfg,
        &gateway,
        &http_listen,
        influxdb.as_ref(),
        &loaded.notify,
    );
    Ok(Settings {
        files: loaded.files,
        gateway,
        http_listen,
        api_token_file: cfg.http.api_token_file.clone().map(PathBuf::from),
        influxdb,
        mqtt,
        devices,
        profiles,
        assets,
        rules,
        notifiers,
        response_times,
        storage,
        warnings: issues.warnings,
        restart_keys,
    })
}

/// Array items as `(file, index in that file, item)`.
fn items(sourced: &[Sourced<config::Value>]) -> Vec<(String, usize, config::Value)> {
    sourced
        .iter()
        .map(|s| (s.file.clone(), s.index, s.item.clone()))
        .collect()
}

/// `[mqtt]`, resolved (`None` without the section, or with errors, which are reported).
fn mqtt(
    cfg: &FileConfig,
    gateway: &GatewaySettings,
    main_file: &str,
    issues: &mut Issues,
) -> Option<MqttSettings> {
    cfg.mqtt
        .as_ref()
        .and_then(|m| match crate::mqtt::settings::resolve(m, &gateway.id) {
            Ok(s) => Some(s),
            Err(errs) => {
                for (path, message) in errs {
                    issues.err(main_file, path, message);
                }
                None
            }
        })
}

/// Profiles: the built-ins, then the configured ones (which may not reuse a name), with one
/// type per field of a measurement whoever writes it (the built-ins agree; a configured
/// profile that disagrees is refused). Returns the profiles by name and the names of the
/// configured profiles that are invalid.
fn profiles(loaded: &Loaded, issues: &mut Issues) -> (BTreeMap<String, Arc<Profile>>, Vec<String>) {
    let mut schema = crate::profile::Schema::new();
    let mut profiles: BTreeMap<String, Arc<Profile>> = BTreeMap::new();
    for name in builtin::names() {
        // The load error as its text: this issue's message shows it as it always has.
        match builtin::load(name).map(|r| r.map_err(|e| e.to_string()).map(|c| c.build())) {
            Some(Ok(Ok((p, _)))) => {
                for c in schema.add(&p) {
                    issues.err("built-in profiles", name, c.to_string());
                }
                profiles.insert(name.to_string(), Arc::new(p));
            }
            other => issues.err(
                "built-in profiles",
                name,
                format!("failed to load: {other:?}"),
            ),
        }
    }
    let mut profile_origin: HashMap<String, (String, usize)> = HashMap::new();
    let mut invalid_profiles: Vec<String> = Vec::new();
    for Sourced { file, index, item } in &loaded.profiles {
        let at = format!("profiles[{index}]");
        if builtin::names().any(|n| n == item.name) {
            issues.err(
                file,
                format!("{at}.name"),
                format!(
                    "{:?} is a built-in profile; give yours another name",
                    item.name
                ),
            );
            continue;
        }
        if let Some((f, i)) = profile_origin.get(&item.name) {
            issues.err(
                file,
                format!("{at}.name"),
                format!(
                    "duplicate profile name {:?}: also defined at {f}: profiles[{i}]",
                    item.name
                ),
            );
            continue;
        }
        profile_origin.insert(item.name.clone(), (file.clone(), *index));
        check_profile_mqtt(file, &at, item, issues);
        match item.build() {
            Ok((p, warns)) => {
                for w in warns {
                    issues.warn(file, format!("{at}.{}", w.path), w.message);
                }
                for c in schema.add(&p) {
                    issues.err(
                        file,
                        format!("{at}.points[{}].output", c.point),
                        c.to_string(),
                    );
                }
                profiles.insert(item.name.clone(), Arc::new(p));
            }
            Err(errs) => {
                invalid_profiles.push(item.name.clone());
                for e in errs {
                    if e.warning {
                        issues.warn(file, format!("{at}.{}", e.path), e.message);
                    } else {
                        issues.err(file, format!("{at}.{}", e.path), e.message);
                    }
                }
            }
        }
    }

    (profiles, invalid_profiles)
}

/// The configured devices (ids unique across files; a device of an invalid profile is left
/// out, its profile's errors being reported already), and the serial buses they share.
fn devices(
    loaded: &Loaded,
    gateway: &GatewaySettings,
    profiles: &BTreeMap<String, Arc<Profile>>,
    invalid_profiles: &[String],
    mqtt_configured: bool,
    issues: &mut Issues,
) -> Vec<Arc<Device>> {
    let mut devices = Vec::with_capacity(loaded.devices.len());
    let mut seen: HashMap<&str, (&str, usize)> = HashMap::new();
    for Sourced { file, index, item } in &loaded.devices {
        let at = format!("devices[{index}]");
        if let Some((f, i)) = seen.get(item.id.as_str()) {
            issues.err(
                file,
                format!("{at}.id"),
                format!(
                    "duplicate device id {:?}: also defined at {f}: devices[{i}]",
                    item.id
                ),
            );
            continue;
        }
        seen.insert(&item.id, (file, *index));
        if invalid_profiles.contains(&item.profile) {
            // Its profile's own errors are reported already.
            continue;
        }
        if let Some(d) = build_device(
            file,
            &at,
            *index,
            item,
            gateway,
            profiles,
            mqtt_configured,
            issues,
        ) {
            devices.push(Arc::new(d));
        }
    }
    check_serial_buses(&devices, issues);

    devices
}

/// `[work_orders] response_times`: the promised response per priority.
fn response_times(cfg: &FileConfig, main_file: &str, issues: &mut Issues) -> ResponseTimes {
    let mut response_times = ResponseTimes::default();
    if let Some(rt) = &cfg.work_orders.response_times {
        for (k, v) in rt {
            if v.0.is_zero() || v.0 > Duration::from_secs(10 * 366 * 86_400) {
                issues.err(
                    main_file,
                    format!("work_orders.response_times.{k}"),
                    format!("expected a response time above zero and at most 10 years, found {v}"),
                );
                continue;
            }
            match k.as_str() {
                "urgent" => response_times.urgent = v.0,
                "high" => response_times.high = v.0,
                "normal" => response_times.normal = v.0,
                "low" => response_times.low = v.0,
                other => issues.err(
                    main_file,
                    format!("work_orders.response_times.{other}"),
                    "unknown priority: expected urgent, high, normal or low",
                ),
            }
        }
    }

    response_times
}

/// What the rule engine and the work-order store know of each device; the devices of one
/// profile share its point list.
pub fn asset_infos(devices: &[Arc<Device>]) -> Vec<Arc<AssetInfo>> {
    let mut by_profile: Vec<(*const Profile, Arc<[PointInfo]>)> = Vec::new();
    devices
        .iter()
        .map(|d| {
            let key = Arc::as_ptr(&d.profile);
            let points = match by_profile.iter().find(|(k, _)| *k == key) {
                Some((_, p)) => p.clone(),
                None => {
                    let p = point_infos(&d.profile);
                    by_profile.push((key, p.clone()));
                    p
                }
            };
            Arc::new(asset_info(d, points))
        })
        .collect()
}

/// What the rule engine and the work-order store know of a device whose profile's points are
/// `points` (see [`point_infos`]).
pub fn asset_info(d: &Device, points: Arc<[PointInfo]>) -> AssetInfo {
    AssetInfo {
        id: d.id.clone(),
        name: d.name.clone(),
        site: d.site.clone(),
        building: d.building.clone(),
        floor: d.floor.clone(),
        device_type: d.profile.device_type,
        profile: d.profile.name.clone(),
        tags: d.tags.clone(),
        points,
    }
}

/// The rule engine's view of a profile's points.
pub fn point_infos(profile: &Profile) -> Arc<[PointInfo]> {
    profile
        .points
        .iter()
        .map(|p| PointInfo {
            name: p.name.clone(),
            kind: p.kind,
            unit: p.unit.clone(),
            numeric: matches!(
                p.field_type(),
                crate::profile::FieldType::Float | crate::profile::FieldType::Integer
            ),
        })
        .collect()
}
