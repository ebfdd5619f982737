//! Topic templates: the subscriptions that bring device messages in (`acs/{building}/doors/{asset}/state`)
//! and the topics facilityd publishes to (`facilityd/{site}/work-orders/{asset}`).
//!
//! Pure: parsing, matching and rendering, no I/O.
//!
//! A subscription template is a topic filter whose levels are literals, `+`, a final `#`, or a
//! whole-level placeholder. In the filter sent to the broker a placeholder becomes `+`; in an
//! incoming topic it captures that level. `{asset}` picks the device; `{site}`, `{building}`,
//! `{floor}` and `{gateway}` must equal the device's own values; `{point}` picks the point
//! the payload carries (one topic per point, as Homie or Tasmota publish).

use std::collections::HashMap;

/// What a placeholder in a subscription captures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capture {
    Asset,
    Site,
    Building,
    Floor,
    Gateway,
    Point,
}

impl Capture {
    pub const NAMES: &'static str = "{asset}, {site}, {building}, {floor}, {gateway}, {point}";

    fn parse(name: &str) -> Option<Capture> {
        Some(match name {
            "asset" => Capture::Asset,
            "site" => Capture::Site,
            "building" => Capture::Building,
            "floor" => Capture::Floor,
            "gateway" => Capture::Gateway,
            "point" => Capture::Point,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Capture::Asset => "asset",
            Capture::Site => "site",
            Capture::Building => "building",
            Capture::Floor => "floor",
            Capture::Gateway => "gateway",
            Capture::Point => "point",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(String),
    /// `+`: any one level, not captured.
    Any,
    /// `#`: the rest (last level only).
    Rest,
    Capture(Capture),
}

/// Why a topic template is refused, in words a user can act on. `topic` is the template as
/// written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("expected a topic, found an empty string")]
    Empty,
    #[error("{topic:?}: topics starting with '$' are the broker's own")]
    BrokersOwn { topic: String },
    #[error("a topic cannot contain NUL")]
    Nul,
    #[error("{topic:?}: '#' may only be the last level")]
    RestNotLast { topic: String },
    /// `expected`: the placeholders allowed, as a list (`{asset}, {site}`).
    #[error("{topic:?}: unknown placeholder {{{name}}}: expected one of {expected}")]
    UnknownPlaceholder {
        topic: String,
        name: String,
        expected: String,
    },
    #[error("{topic:?}: {{{name}}} appears twice")]
    Twice { topic: String, name: String },
    #[error(
        "{topic:?}: a placeholder must be a whole topic level (between slashes), found {level:?}"
    )]
    PartLevelPlaceholder { topic: String, level: String },
    #[error("{topic:?}: '+' and '#' must be whole topic levels, found {level:?}")]
    PartLevelWildcard { topic: String, level: String },
    /// A value bound to a placeholder that would not be one topic level.
    #[error("{{{}}} is {value:?}, which cannot be one topic level", capture.name())]
    NotOneLevel { capture: Capture, value: String },
    #[error("{topic:?}: a topic to publish to cannot contain '+', '#' or NUL")]
    PublishWildcard { topic: String },
    #[error("{topic:?}: unmatched '{{'")]
    UnmatchedOpen { topic: String },
    #[error("{topic:?}: unmatched '}}'")]
    UnmatchedClose { topic: String },
}

/// A parsed subscription template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubTemplate {
    levels: Vec<Level>,
}

/// The captured levels of one incoming topic.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Captures<'a> {
    pub values: Vec<(Capture, &'a str)>,
}

impl<'a> Captures<'a> {
    pub fn get(&self, c: Capture) -> Option<&'a str> {
        self.values.iter().find(|(k, _)| *k == c).map(|(_, v)| *v)
    }
}

impl SubTemplate {
    /// Parses a template. Errors say what is wrong in words a user can act on.
    pub fn parse(s: &str) -> Result<SubTemplate, TopicError> {
        let topic = || s.to_string();
        if s.is_empty() {
            return Err(TopicError::Empty);
        }
        if s.starts_with('$') {
            return Err(TopicError::BrokersOwn { topic: topic() });
        }
        if s.contains('\0') {
            return Err(TopicError::Nul);
        }
        let parts: Vec<&str> = s.split('/').collect();
        let mut levels = Vec::with_capacity(parts.len());
        let mut seen = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let level = match *part {
                "+" => Level::Any,
                "#" if i + 1 == parts.len() => Level::Rest,
                "#" => return Err(TopicError::RestNotLast { topic: topic() }),
                p if p.starts_with('{') && p.ends_with('}') && p.len() > 2 => {
                    let name = &p[1..p.len() - 1];
                    let c = Capture::parse(name).ok_or_else(|| TopicError::UnknownPlaceholder {
                        topic: topic(),
                        name: name.to_string(),
                        expected: Capture::NAMES.to_string(),
                    })?;
                    if seen.contains(&c) {
                        return Err(TopicError::Twice {
                            topic: topic(),
                            name: name.to_string(),
                        });
                    }
                    seen.push(c);
                    Level::Capture(c)
                }
                p if p.contains(['{', '}']) => {
                    return Err(TopicError::PartLevelPlaceholder {
                        topic: topic(),
                        level: p.to_string(),
                    });
                }
                p if p.contains(['+', '#']) => {
                    return Err(TopicError::PartLevelWildcard {
                        topic: topic(),
                        level: p.to_string(),
                    });
                }
                p => Level::Literal(p.to_string()),
            };
            levels.push(level);
        }
        Ok(SubTemplate { levels })
    }

    /// Whether the template has this placeholder.
    pub fn has(&self, c: Capture) -> bool {
        self.levels.contains(&Level::Capture(c))
    }

    /// The placeholders, in order.
    pub fn captures(&self) -> impl Iterator<Item = Capture> + '_ {
        self.levels.iter().filter_map(|l| match l {
            Level::Capture(c) => Some(*c),
            _ => None,
        })
    }

    /// Replaces placeholders with fixed values (a device's own topic); `value` returns `None` to
    /// keep one as a placeholder. A value that is empty or holds `/`, `+` or `#` is an error.
    pub fn bind(
        &self,
        value: impl Fn(Capture) -> Option<String>,
    ) -> Result<SubTemplate, TopicError> {
        let mut levels = Vec::with_capacity(self.levels.len());
        for l in &self.levels {
            levels.push(match l {
                Level::Capture(c) => match value(*c) {
                    Some(v) if v.is_empty() || v.contains(['/', '+', '#', '\0']) => {
                        return Err(TopicError::NotOneLevel {
                            capture: *c,
                            value: v,
                        });
                    }
                    Some(v) => Level::Literal(v),
                    None => l.clone(),
                },
                other => other.clone(),
            });
        }
        Ok(SubTemplate { levels })
    }

    /// The filter to subscribe to: placeholders become `+`.
    pub fn filter(&self) -> String {
        self.levels
            .iter()
            .map(|l| match l {
                Level::Literal(s) => s.as_str(),
                Level::Any | Level::Capture(_) => "+",
                Level::Rest => "#",
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// A literal topic (no wildcard, no placeholder): matched by a hash lookup.
    pub fn literal(&self) -> Option<String> {
        self.levels
            .iter()
            .all(|l| matches!(l, Level::Literal(_)))
            .then(|| self.filter())
    }

    /// Matches an incoming topic, returning its captures.
    pub fn matches<'a>(&self, topic: &'a str) -> Option<Captures<'a>> {
        let mut caps = Captures::default();
        let mut parts = topic.split('/');
        for level in &self.levels {
            match level {
                Level::Rest => return Some(caps),
                _ => {
                    let part = parts.next()?;
                    match level {
                        Level::Literal(l) if l != part => return None,
                        Level::Capture(c) => caps.values.push((*c, part)),
                        _ => {}
                    }
                }
            }
        }
        parts.next().is_none().then_some(caps)
    }
}

/// A device as routing sees it: what the placeholders must match.
#[derive(Debug, Clone, Default)]
pub struct RouteDevice {
    pub asset: String,
    pub site: Option<String>,
    pub building: Option<String>,
    pub floor: Option<String>,
}

#[derive(Debug, Clone)]
enum Target {
    /// A device's own topic.
    Device(usize),
    /// A profile's template: `{asset}` picks one of these devices.
    Assets(HashMap<String, usize>),
}

#[derive(Debug, Clone)]
struct Route {
    template: SubTemplate,
    target: Target,
}

/// Where an incoming message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery<'a> {
    /// Index of the device in the running configuration.
    pub device: usize,
    /// The `{point}` capture, when the topic names the point.
    pub point: Option<&'a str>,
}

/// Why a message went nowhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unrouted {
    /// No subscription template matches the topic (a broker sending more than asked).
    NoTemplate,
    /// `{asset}` captured an id that no device of the template has.
    UnknownAsset(String),
    /// Another capture differs from the device's own value.
    Mismatch { asset: String, capture: Capture },
}

/// All subscriptions and how their messages reach devices.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<Route>,
    /// Literal topics: route indexes.
    exact: HashMap<String, Vec<usize>>,
    devices: Vec<RouteDevice>,
    gateway: String,
}

impl Router {
    pub fn new(gateway: &str, devices: Vec<RouteDevice>) -> Router {
        Router {
            gateway: gateway.to_string(),
            devices,
            ..Default::default()
        }
    }

    /// A device read from its own topic (placeholders other than `{point}` already bound).
    pub fn add_device_topic(&mut self, template: SubTemplate, device: usize) {
        self.push(Route {
            template,
            target: Target::Device(device),
        });
    }

    /// A profile template serving `devices` (indexes), picked by `{asset}`.
    pub fn add_template(&mut self, template: SubTemplate, devices: &[usize]) {
        let by_asset = devices
            .iter()
            .filter_map(|&i| self.devices.get(i).map(|d| (d.asset.clone(), i)))
            .collect();
        self.push(Route {
            template,
            target: Target::Assets(by_asset),
        });
    }

    fn push(&mut self, route: Route) {
        let i = self.routes.len();
        if let Some(lit) = route.template.literal() {
            self.exact.entry(lit).or_default().push(i);
        }
        self.routes.push(route);
    }

    /// The distinct filters to subscribe to, in configuration order.
    pub fn filters(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in &self.routes {
            let f = r.template.filter();
            if !out.contains(&f) {
                out.push(f);
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The devices an incoming topic is for. Several subscriptions may match one topic (two
    /// devices on one topic, overlapping wildcards); each device gets the message once.
    pub fn route<'a>(&self, topic: &'a str) -> Result<Vec<Delivery<'a>>, Unrouted> {
        let mut out: Vec<Delivery<'a>> = Vec::new();
        let mut why = Unrouted::NoTemplate;
        let candidates: Box<dyn Iterator<Item = usize>> = match self.exact.get(topic) {
            // Literal routes need no matching; wildcard ones might still match too.
            Some(idx) => Box::new(idx.iter().copied().chain(
                (0..self.routes.len()).filter(|i| self.routes[*i].template.literal().is_none()),
            )),
            None => Box::new(
                (0..self.routes.len()).filter(|i| self.routes[*i].template.literal().is_none()),
            ),
        };
        for i in candidates {
            let route = &self.routes[i];
            let Some(caps) = route.template.matches(topic) else {
                continue;
            };
            let device = match &route.target {
                Target::Device(d) => *d,
                Target::Assets(by_asset) => {
                    let asset = caps.get(Capture::Asset).unwrap_or_default();
                    match by_asset.get(asset) {
                        Some(d) => *d,
                        None => {
                            why = Unrouted::UnknownAsset(asset.to_string());
                            continue;
                        }
                    }
                }
            };
            if let Some(c) = self.mismatch(device, &caps) {
                why = Unrouted::Mismatch {
                    asset: self
                        .devices
                        .get(device)
                        .map(|d| d.asset.clone())
                        .unwrap_or_default(),
                    capture: c,
                };
                continue;
            }
            if !out.iter().any(|d| d.device == device) {
                out.push(Delivery {
                    device,
                    point: caps.get(Capture::Point),
                });
            }
        }
        if out.is_empty() { Err(why) } else { Ok(out) }
    }

    /// The first capture (other than asset and point) that differs from the device's value.
    fn mismatch(&self, device: usize, caps: &Captures<'_>) -> Option<Capture> {
        let d = self.devices.get(device)?;
        for (c, v) in &caps.values {
            let want = match c {
                Capture::Asset => Some(d.asset.as_str()),
                Capture::Site => d.site.as_deref(),
                Capture::Building => d.building.as_deref(),
                Capture::Floor => d.floor.as_deref(),
                Capture::Gateway => Some(self.gateway.as_str()),
                Capture::Point => continue,
            };
            if want != Some(*v) {
                return Some(*c);
            }
        }
        None
    }
}

/// A topic facilityd publishes to, with `{name}` placeholders filled per message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(String),
}

impl PubTemplate {
    /// Parses a publish topic; `allowed` lists the placeholder names it may use.
    pub fn parse(s: &str, allowed: &[&str]) -> Result<PubTemplate, TopicError> {
        let topic = || s.to_string();
        if s.is_empty() {
            return Err(TopicError::Empty);
        }
        if s.contains(['+', '#', '\0']) {
            return Err(TopicError::PublishWildcard { topic: topic() });
        }
        if s.starts_with('$') {
            return Err(TopicError::BrokersOwn { topic: topic() });
        }
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            if rest[..open].contains('}') {
                return Err(TopicError::UnmatchedClose { topic: topic() });
            }
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err(TopicError::UnmatchedOpen { topic: topic() });
            };
            let name = &rest[open + 1..open + close];
            if !allowed.contains(&name) {
                return Err(TopicError::UnknownPlaceholder {
                    topic: topic(),
                    name: name.to_string(),
                    expected: allowed
                        .iter()
                        .map(|a| format!("{{{a}}}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            parts.push(Part::Var(name.to_string()));
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(TopicError::UnmatchedClose { topic: topic() });
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(PubTemplate { parts })
    }

    /// The topic for one message. A placeholder without a value becomes `-`; characters that
    /// would change the topic's shape (`/`, `+`, `#`) become `_`.
    pub fn render(&self, value: impl Fn(&str) -> Option<String>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Var(name) => match value(name) {
                    Some(v) if !v.is_empty() => out.extend(v.chars().map(|c| match c {
                        '/' | '+' | '#' | '\0' => '_',
                        c => c,
                    })),
                    _ => out.push('-'),
                },
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every built-in profile validates without warnings, and an MQTT one's topic is a valid
    /// subscription that picks the device by `{asset}`. (Here rather than in `profile`, which
    /// does not depend on `mqtt`.)
    #[test]
    fn every_builtin_profile_is_valid() {
        use crate::profile::builtin;
        for name in builtin::names() {
            let cfg = builtin::load(name).expect("listed").expect("parses");
            let (profile, warnings) = cfg.build().unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert!(warnings.is_empty(), "{name}: {warnings:?}");
            assert_eq!(profile.name, name);
            assert!(profile.points.len() >= 10, "{name} has too few points");
            if let Some(t) = &profile.mqtt_topic {
                let t = SubTemplate::parse(t).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(t.has(Capture::Asset), "{name}");
                assert!(profile.points.iter().all(|p| p.json.is_some()), "{name}");
            }
        }
    }

    fn dev(asset: &str, building: Option<&str>) -> RouteDevice {
        RouteDevice {
            asset: asset.into(),
            site: Some("tower-a".into()),
            building: building.map(Into::into),
            floor: None,
        }
    }

    #[test]
    fn parses_and_builds_filters() {
        let t = SubTemplate::parse("acs/{building}/doors/{asset}/state").unwrap();
        assert_eq!(t.filter(), "acs/+/doors/+/state");
        assert!(t.has(Capture::Asset) && t.has(Capture::Building));
        assert_eq!(t.literal(), None);
        let t = SubTemplate::parse("a/b/c").unwrap();
        assert_eq!(t.literal().as_deref(), Some("a/b/c"));
        assert_eq!(
            SubTemplate::parse("x/+/{asset}/#").unwrap().filter(),
            "x/+/+/#"
        );
    }

    #[test]
    fn rejects_bad_templates() {
        for (t, want) in [
            ("", "empty"),
            ("a/#/b", "last level"),
            ("a/{asset}x/b", "whole topic level"),
            ("a/{door}/b", "unknown placeholder {door}"),
            ("a/{asset}/{asset}", "twice"),
            ("a/b+/c", "whole topic levels"),
            ("$SYS/x", "broker's own"),
        ] {
            let e = SubTemplate::parse(t).unwrap_err().to_string();
            assert!(e.contains(want), "{t}: {e}");
        }
    }

    #[test]
    fn matches_and_captures() {
        let t = SubTemplate::parse("acs/{building}/doors/{asset}/state").unwrap();
        let c = t.matches("acs/A/doors/D-3/state").unwrap();
        assert_eq!(c.get(Capture::Asset), Some("D-3"));
        assert_eq!(c.get(Capture::Building), Some("A"));
        assert!(t.matches("acs/A/doors/D-3/event").is_none());
        assert!(t.matches("acs/A/doors/D-3/state/x").is_none());
        assert!(t.matches("acs/A/doors/D-3").is_none());
        let r = SubTemplate::parse("x/{asset}/#").unwrap();
        assert!(r.matches("x/a").is_some());
        assert!(r.matches("x/a/b/c").is_some());
        assert!(r.matches("y/a/b").is_none());
    }

    #[test]
    fn binds_device_values() {
        let t = SubTemplate::parse("acs/{building}/doors/{asset}/{point}").unwrap();
        let b = t
            .bind(|c| match c {
                Capture::Asset => Some("D1".into()),
                Capture::Building => Some("A".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(b.filter(), "acs/A/doors/D1/+");
        assert!(b.has(Capture::Point));
        assert!(t.bind(|_| Some("a/b".into())).is_err());
    }

    #[test]
    fn routes_by_asset_and_checks_other_captures() {
        let mut r = Router::new(
            "gw",
            vec![dev("D1", Some("A")), dev("D2", Some("B")), dev("P1", None)],
        );
        r.add_template(
            SubTemplate::parse("acs/{building}/doors/{asset}/state").unwrap(),
            &[0, 1],
        );
        r.add_device_topic(SubTemplate::parse("plant/pump1").unwrap(), 2);
        assert_eq!(r.filters(), ["acs/+/doors/+/state", "plant/pump1"]);
        assert_eq!(
            r.route("acs/A/doors/D1/state").unwrap(),
            [Delivery {
                device: 0,
                point: None
            }]
        );
        assert_eq!(r.route("acs/B/doors/D2/state").unwrap()[0].device, 1);
        assert_eq!(
            r.route("acs/B/doors/D1/state"),
            Err(Unrouted::Mismatch {
                asset: "D1".into(),
                capture: Capture::Building
            })
        );
        assert_eq!(
            r.route("acs/A/doors/D9/state"),
            Err(Unrouted::UnknownAsset("D9".into()))
        );
        assert_eq!(r.route("plant/pump1").unwrap()[0].device, 2);
        assert_eq!(r.route("plant/pump2"), Err(Unrouted::NoTemplate));
    }

    #[test]
    fn point_capture_and_shared_topics() {
        let mut r = Router::new("gw", vec![dev("T1", None), dev("T2", None)]);
        r.add_device_topic(SubTemplate::parse("tasmota/t1/{point}").unwrap(), 0);
        r.add_device_topic(SubTemplate::parse("shared/x").unwrap(), 0);
        r.add_device_topic(SubTemplate::parse("shared/x").unwrap(), 1);
        r.add_device_topic(SubTemplate::parse("shared/+").unwrap(), 1);
        assert_eq!(
            r.route("tasmota/t1/POWER").unwrap(),
            [Delivery {
                device: 0,
                point: Some("POWER")
            }]
        );
        let both: Vec<usize> = r
            .route("shared/x")
            .unwrap()
            .iter()
            .map(|d| d.device)
            .collect();
        assert_eq!(both, [0, 1]);
        assert_eq!(r.filters(), ["tasmota/t1/+", "shared/x", "shared/+"]);
    }

    #[test]
    fn gateway_capture_must_be_ours() {
        let mut r = Router::new("gw1", vec![dev("D1", None)]);
        r.add_template(SubTemplate::parse("{gateway}/{asset}").unwrap(), &[0]);
        assert!(r.route("gw1/D1").is_ok());
        assert!(matches!(
            r.route("gw2/D1"),
            Err(Unrouted::Mismatch {
                capture: Capture::Gateway,
                ..
            })
        ));
    }

    #[test]
    fn publish_templates() {
        let allowed = ["site", "asset", "gateway"];
        let t = PubTemplate::parse("facilityd/{site}/work-orders/{asset}", &allowed).unwrap();
        let topic = t.render(|n| match n {
            "site" => Some("tower/a".into()),
            "asset" => Some("D1".into()),
            _ => None,
        });
        assert_eq!(topic, "facilityd/tower_a/work-orders/D1");
        assert_eq!(t.render(|_| None), "facilityd/-/work-orders/-");
        for (s, want) in [
            ("a/{nope}", "unknown placeholder {nope}"),
            ("a/+/b", "cannot contain"),
            ("a/{site", "unmatched '{'"),
            ("a/site}", "unmatched '}'"),
            ("", "empty"),
        ] {
            let e = PubTemplate::parse(s, &allowed).unwrap_err().to_string();
            assert!(e.contains(want), "{s}: {e}");
        }
    }
}
