//! The built-in profiles, shipped as TOML inside the binary so users can read them in the
//! source tree and copy them as a starting point for their own `[[profiles]]`.

use super::ProfileConfig;

/// (name, TOML source) of every built-in profile.
pub const SOURCES: &[(&str, &str)] = &[
    ("elevator", include_str!("builtin/elevator.toml")),
    ("pump", include_str!("builtin/pump.toml")),
    ("fire_panel", include_str!("builtin/fire_panel.toml")),
    ("access_door", include_str!("builtin/access_door.toml")),
    // Power supply (see the vendor map each follows at the top of its file).
    ("power_meter", include_str!("builtin/power_meter.toml")),
    ("generator", include_str!("builtin/generator.toml")),
    ("ats", include_str!("builtin/ats.toml")),
    // MQTT devices (JSON payloads; see the comments at the top of each file).
    (
        "access_door_mqtt",
        include_str!("builtin/access_door_mqtt.toml"),
    ),
    (
        "lift_monitor_mqtt",
        include_str!("builtin/lift_monitor_mqtt.toml"),
    ),
];

/// A built-in profile's source does not parse (a build defect).
#[derive(Debug, thiserror::Error)]
#[error("built-in profile {name}: {error}")]
pub struct BuiltinError {
    pub name: String,
    pub error: config::ConfigError,
}

/// Parses a built-in profile. The sources are part of the binary and covered by tests, so a
/// failure here is a build defect, reported as an error rather than a panic all the same.
pub fn load(name: &str) -> Option<Result<ProfileConfig, BuiltinError>> {
    let (_, src) = SOURCES.iter().find(|(n, _)| *n == name)?;
    Some(
        config::Config::builder()
            .add_source(config::File::from_str(src, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize::<ProfileConfig>())
            .map_err(|error| BuiltinError {
                name: name.to_string(),
                error,
            }),
    )
}

pub fn names() -> impl Iterator<Item = &'static str> {
    SOURCES.iter().map(|(n, _)| *n)
}

#[cfg(test)]
mod tests {
    /// The MQTT profiles carry every point the shipped rules of their device type read, so
    /// the default rules apply to them as to the Modbus profiles.
    #[test]
    fn mqtt_profiles_have_the_points_of_their_modbus_siblings_rules() {
        for (mqtt, modbus, rules) in [
            (
                "access_door_mqtt",
                "access_door",
                include_str!("../../config/rules/access_door.toml"),
            ),
            (
                "lift_monitor_mqtt",
                "elevator",
                include_str!("../../config/rules/elevator.toml"),
            ),
        ] {
            let m = super::load(mqtt).unwrap().unwrap().build().unwrap().0;
            let b = super::load(modbus).unwrap().unwrap().build().unwrap().0;
            for line in rules.lines() {
                let Some(rest) = line.trim().strip_prefix("point = \"") else {
                    continue;
                };
                let point = rest.trim_end_matches('"');
                assert!(b.point(point).is_some(), "{modbus} lacks {point}");
                let (_, p) = m
                    .point(point)
                    .unwrap_or_else(|| panic!("{mqtt} lacks {point}"));
                assert_eq!(p.kind, b.point(point).unwrap().1.kind, "{mqtt}.{point}");
            }
        }
    }
}
