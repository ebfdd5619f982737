//! Titles and descriptions with placeholders (`{asset}`, `{value}`, ...), parsed once at
//! configuration time and rendered when a trigger is produced.

use std::fmt::Write as _;

use super::types::AssetInfo;

/// A placeholder a title or description may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    Asset,
    Name,
    Site,
    Building,
    Floor,
    DeviceType,
    Gateway,
    Rule,
    Point,
    Value,
    Unit,
    Threshold,
}

impl Placeholder {
    pub const ALL: [(&'static str, Placeholder); 12] = [
        ("asset", Placeholder::Asset),
        ("name", Placeholder::Name),
        ("site", Placeholder::Site),
        ("building", Placeholder::Building),
        ("floor", Placeholder::Floor),
        ("device_type", Placeholder::DeviceType),
        ("gateway", Placeholder::Gateway),
        ("rule", Placeholder::Rule),
        ("point", Placeholder::Point),
        ("value", Placeholder::Value),
        ("unit", Placeholder::Unit),
        ("threshold", Placeholder::Threshold),
    ];

    fn parse(name: &str) -> Option<Placeholder> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
    }

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, p)| *p == self)
            .map(|(n, _)| *n)
            .unwrap_or("")
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Text(String),
    Field(Placeholder),
}

/// Why a title or description does not parse; each says what is valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error(
        "unclosed `{{` in {0:?}: placeholders are written {{asset}}; write {{{{ for a literal brace"
    )]
    Unclosed(String),
    #[error("unknown placeholder {{{0}}}: expected one of {valid}", valid = Template::valid_list())]
    UnknownPlaceholder(String),
    #[error("stray `}}` in {0:?}: write }}}} for a literal brace")]
    StrayBrace(String),
}

/// A parsed title or description. `{{` and `}}` write literal braces.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    source: String,
    segments: Vec<Segment>,
}

/// What a trigger knows when its title is rendered.
#[derive(Debug, Clone, Copy, Default)]
pub struct RenderContext<'a> {
    pub rule: &'a str,
    pub gateway: &'a str,
    pub point: Option<&'a str>,
    pub value: Option<&'a str>,
    pub unit: Option<&'a str>,
    pub threshold: Option<&'a str>,
}

impl Template {
    /// Parses `s`; an unknown placeholder or a stray brace is an error that says what is valid.
    pub fn parse(s: &str) -> Result<Template, TemplateError> {
        let mut segments = Vec::new();
        let mut text = String::new();
        let mut chars = s.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|(_, c)| *c) == Some('{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek().map(|(_, c)| *c) == Some('}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let rest = &s[i + 1..];
                    let Some(end) = rest.find('}') else {
                        return Err(TemplateError::Unclosed(s.to_string()));
                    };
                    let name = &rest[..end];
                    let Some(p) = Placeholder::parse(name.trim()) else {
                        return Err(TemplateError::UnknownPlaceholder(name.to_string()));
                    };
                    if !text.is_empty() {
                        segments.push(Segment::Text(std::mem::take(&mut text)));
                    }
                    segments.push(Segment::Field(p));
                    // Skip the name and the closing brace.
                    for _ in 0..name.chars().count() + 1 {
                        chars.next();
                    }
                }
                '}' => {
                    return Err(TemplateError::StrayBrace(s.to_string()));
                }
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            segments.push(Segment::Text(text));
        }
        Ok(Template {
            source: s.to_string(),
            segments,
        })
    }

    fn valid_list() -> String {
        Placeholder::ALL
            .iter()
            .map(|(n, _)| format!("{{{n}}}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The placeholders used, in order.
    pub fn placeholders(&self) -> impl Iterator<Item = Placeholder> + '_ {
        self.segments.iter().filter_map(|s| match s {
            Segment::Field(p) => Some(*p),
            Segment::Text(_) => None,
        })
    }

    /// Renders with the asset's fields; a field the trigger does not have renders empty.
    pub fn render(&self, asset: &AssetInfo, cx: &RenderContext<'_>) -> String {
        let mut out = String::with_capacity(self.source.len() + 16);
        for seg in &self.segments {
            match seg {
                Segment::Text(t) => out.push_str(t),
                Segment::Field(p) => {
                    let v: &str = match p {
                        Placeholder::Asset => &asset.id,
                        Placeholder::Name => asset.name.as_deref().unwrap_or(&asset.id),
                        Placeholder::Site => asset.site.as_deref().unwrap_or(""),
                        Placeholder::Building => asset.building.as_deref().unwrap_or(""),
                        Placeholder::Floor => asset.floor.as_deref().unwrap_or(""),
                        Placeholder::DeviceType => asset.device_type.as_str(),
                        Placeholder::Gateway => cx.gateway,
                        Placeholder::Rule => cx.rule,
                        Placeholder::Point => cx.point.unwrap_or(""),
                        Placeholder::Value => cx.value.unwrap_or(""),
                        Placeholder::Unit => cx.unit.unwrap_or(""),
                        Placeholder::Threshold => cx.threshold.unwrap_or(""),
                    };
                    out.push_str(v);
                }
            }
        }
        out
    }
}

/// A number as people read it: `2`, `1.85`, `-0.003`; no float noise (`1.8500000000000001`).
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{}", v as i64);
    }
    let mut s = String::new();
    let _ = write!(s, "{v:.6}");
    while s.ends_with('0') {
        s.pop();
    }
    if s.ends_with('.') {
        s.pop();
    }
    if s == "0" || s == "-0" {
        return format!("{v:e}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::DeviceType;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn asset() -> AssetInfo {
        AssetInfo {
            id: Arc::from("P-1"),
            name: Some("Booster pump 1".into()),
            site: Some("tower-a".into()),
            building: Some("A".into()),
            floor: None,
            device_type: DeviceType::Pump,
            profile: "pump".into(),
            tags: BTreeMap::new(),
            points: Default::default(),
        }
    }

    #[test]
    fn renders_placeholders_and_braces() {
        let t = Template::parse(
            "{name} ({asset}, {device_type}) {point}={value}{unit} > {threshold} {{x}} [{floor}]",
        )
        .unwrap();
        let s = t.render(
            &asset(),
            &RenderContext {
                rule: "r",
                gateway: "gw",
                point: Some("p"),
                value: Some("3.5"),
                unit: Some("bar"),
                threshold: Some("3"),
            },
        );
        assert_eq!(s, "Booster pump 1 (P-1, pump) p=3.5bar > 3 {x} []");
    }

    #[test]
    fn unknown_placeholder_names_the_valid_ones() {
        let e = Template::parse("Low at {assett}").unwrap_err().to_string();
        assert!(e.contains("unknown placeholder {assett}"), "{e}");
        assert!(e.contains("{asset}") && e.contains("{threshold}"), "{e}");
        assert!(Template::parse("open {asset").is_err());
        assert!(Template::parse("a } b").is_err());
    }

    #[test]
    fn error_messages() {
        let e = |s: &str| Template::parse(s).unwrap_err().to_string();
        assert_eq!(
            e("Low at {assett}"),
            "unknown placeholder {assett}: expected one of {asset} {name} {site} {building} {floor} {device_type} {gateway} {rule} {point} {value} {unit} {threshold}"
        );
        assert_eq!(
            e("open {asset"),
            "unclosed `{` in \"open {asset\": placeholders are written {asset}; write {{ for a literal brace"
        );
        assert_eq!(
            e("a } b"),
            "stray `}` in \"a } b\": write }} for a literal brace"
        );
    }

    #[test]
    fn numbers_without_float_noise() {
        assert_eq!(fmt_num(2.0), "2");
        assert_eq!(fmt_num(185.0 * 0.01), "1.85");
        assert_eq!(fmt_num(-0.25), "-0.25");
        assert_eq!(fmt_num(1.2e6), "1200000");
        assert_eq!(fmt_num(1e-9), "1e-9");
    }
}
