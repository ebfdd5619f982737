//! `match = { ... }`: which assets a rule or a notifier applies to.
//!
//! Each key takes a string or a list; keys are AND-ed, list items OR-ed; a missing `match`
//! means every asset. `tags = { vendor = "acme" }` requires each named tag to have (one of)
//! the given values.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::types::AssetInfo;
use crate::profile::DeviceType;

/// A string or a list of strings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn contains(&self, s: &str) -> bool {
        match self {
            OneOrMany::One(v) => v == s,
            OneOrMany::Many(vs) => vs.iter().any(|v| v == s),
        }
    }

    pub fn values(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(v) => vec![v.as_str()],
            OneOrMany::Many(vs) => vs.iter().map(String::as_str).collect(),
        }
    }
}

/// A `match` that no asset can satisfy, whatever the assets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatchError {
    #[error("unknown device_type {found:?}: expected {expected}")]
    UnknownDeviceType {
        found: String,
        /// The device types of the profiles: `elevator, pump, ... or other`.
        expected: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetMatch {
    /// Asset ids.
    pub ids: Option<OneOrMany>,
    /// Profile names.
    pub profile: Option<OneOrMany>,
    /// elevator | pump | fire_panel | access_door | other.
    pub device_type: Option<OneOrMany>,
    pub building: Option<OneOrMany>,
    pub site: Option<OneOrMany>,
    pub floor: Option<OneOrMany>,
    pub tags: Option<BTreeMap<String, OneOrMany>>,
}

impl AssetMatch {
    pub fn matches(&self, a: &AssetInfo) -> bool {
        fn opt(m: &Option<OneOrMany>, v: Option<&str>) -> bool {
            match m {
                None => true,
                Some(m) => v.is_some_and(|v| m.contains(v)),
            }
        }
        opt(&self.ids, Some(&a.id))
            && opt(&self.profile, Some(&a.profile))
            && opt(&self.device_type, Some(a.device_type.as_str()))
            && opt(&self.building, a.building.as_deref())
            && opt(&self.site, a.site.as_deref())
            && opt(&self.floor, a.floor.as_deref())
            && self.tags.as_ref().is_none_or(|t| {
                t.iter()
                    .all(|(k, m)| a.tags.get(k).is_some_and(|v| m.contains(v)))
            })
    }

    /// Unknown device types are errors; other values can only be checked against assets.
    pub fn validate(&self) -> Result<(), MatchError> {
        if let Some(dt) = &self.device_type {
            for v in dt.values() {
                device_type(v)?;
            }
        }
        Ok(())
    }
}

/// `elevator, pump, ... or other`: the device types a `match` accepts, for messages.
pub fn device_type_names() -> String {
    match device_type("") {
        Err(MatchError::UnknownDeviceType { expected, .. }) => expected,
        Ok(_) => String::new(),
    }
}

/// A `device_type` name as the profiles spell it (`DeviceType`'s own names, so a device type
/// added to the profiles is matched without a second list here).
fn device_type(name: &str) -> Result<DeviceType, MatchError> {
    use serde::de::IntoDeserializer;
    let de: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
        name.into_deserializer();
    DeviceType::deserialize(de).map_err(|e| {
        // serde: "unknown variant `x`, expected one of `a`, `b`, `c`".
        let msg = e.to_string();
        let names: Vec<&str> = msg
            .split_once("expected one of ")
            .map(|(_, list)| list.split(", ").map(|n| n.trim_matches('`')).collect())
            .unwrap_or_default();
        let expected = match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            Some((last, _)) => (*last).to_string(),
            None => "a device type of the profiles".to_string(),
        };
        MatchError::UnknownDeviceType {
            found: name.to_string(),
            expected,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::DeviceType;
    use std::sync::Arc;

    #[test]
    fn device_types_are_the_profiles_own() {
        assert_eq!(device_type("fire_panel"), Ok(DeviceType::FirePanel));
        let names = device_type_names();
        assert!(names.starts_with("elevator, pump, "), "{names}");
        assert!(names.ends_with(" or other"), "{names}");
        assert!(device_type("Pump").is_err());
    }

    fn asset(id: &str, dt: DeviceType, building: Option<&str>, vendor: Option<&str>) -> AssetInfo {
        AssetInfo {
            id: Arc::from(id),
            name: None,
            site: Some("s".into()),
            building: building.map(Into::into),
            floor: None,
            device_type: dt,
            profile: dt.as_str().into(),
            tags: vendor
                .map(|v| BTreeMap::from([("vendor".to_string(), v.to_string())]))
                .unwrap_or_default(),
            points: Default::default(),
        }
    }

    #[test]
    fn keys_and_lists_or() {
        let m = AssetMatch {
            device_type: Some(OneOrMany::One("pump".into())),
            building: Some(OneOrMany::Many(vec!["A".into(), "B".into()])),
            ..Default::default()
        };
        assert!(m.matches(&asset("P1", DeviceType::Pump, Some("B"), None)));
        assert!(!m.matches(&asset("P2", DeviceType::Pump, Some("C"), None)));
        assert!(!m.matches(&asset("P3", DeviceType::Pump, None, None)));
        assert!(!m.matches(&asset("E1", DeviceType::Elevator, Some("A"), None)));
        let t = AssetMatch {
            tags: Some(BTreeMap::from([(
                "vendor".into(),
                OneOrMany::One("acme".into()),
            )])),
            ..Default::default()
        };
        assert!(t.matches(&asset("X", DeviceType::Other, None, Some("acme"))));
        assert!(!t.matches(&asset("Y", DeviceType::Other, None, Some("other"))));
        assert!(AssetMatch::default().matches(&asset("Z", DeviceType::Other, None, None)));
    }
}
