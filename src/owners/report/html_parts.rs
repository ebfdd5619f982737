//! Pieces of the HTML report: escaping, marked figures, the inline SVG charts and the style
//! sheet. Nothing here loads anything from elsewhere: no scripts, fonts or images.

use std::fmt::Write as _;

use super::model::{GroupFigures, PriorityFigures};

/// Text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What "no data" looks like in the page (a `null` in the JSON).
pub const NO_DATA: &str = "no data";

/// A value as the page prints it: numbers as the JSON holds them (already rounded), `None` as
/// "no data".
pub trait FigureText {
    fn text(&self) -> String;
}

impl FigureText for u64 {
    fn text(&self) -> String {
        self.to_string()
    }
}
impl FigureText for i64 {
    fn text(&self) -> String {
        self.to_string()
    }
}
impl FigureText for f64 {
    fn text(&self) -> String {
        self.to_string()
    }
}
impl FigureText for str {
    fn text(&self) -> String {
        self.to_string()
    }
}
impl FigureText for String {
    fn text(&self) -> String {
        self.clone()
    }
}
impl<T: FigureText> FigureText for Option<T> {
    fn text(&self) -> String {
        self.as_ref()
            .map_or_else(|| NO_DATA.to_string(), |v| v.text())
    }
}

/// A figure marked with its JSON pointer (`data-figure`), so a test can compare the page
/// with the JSON.
pub fn fig<T: FigureText + ?Sized>(pointer: &str, v: &T) -> String {
    format!(
        "<span data-figure=\"{}\">{}</span>",
        esc(pointer),
        esc(&v.text())
    )
}

/// The same inside an SVG.
fn svg_fig<T: FigureText + ?Sized>(pointer: &str, v: &T) -> String {
    format!(
        "<tspan data-figure=\"{}\">{}</tspan>",
        esc(pointer),
        esc(&v.text())
    )
}

const GREEN: &str = "#2e7d32";
const ORANGE: &str = "#ef6c00";
const RED: &str = "#c62828";
const GREY: &str = "#bdbdbd";
const BLUE: &str = "#1565c0";
const LIGHT_BLUE: &str = "#90caf9";

/// Availability per asset: one stacked bar each (available, unavailable, offline, not
/// monitored, as shares of the period), labelled with the availability.
pub fn availability_chart(assets: &[GroupFigures]) -> String {
    let (label_w, bar_w, row_h) = (150.0, 420.0, 22.0);
    let height = 34.0 + row_h * assets.len() as f64;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"chart\" role=\"img\" aria-label=\"Availability per asset\" \
         xmlns=\"http://www.w3.org/2000/svg\" width=\"680\" height=\"{height}\" \
         viewBox=\"0 0 680 {height}\">"
    );
    for (i, (name, colour)) in [
        ("available", GREEN),
        ("unavailable", ORANGE),
        ("offline", RED),
        ("not monitored", GREY),
    ]
    .iter()
    .enumerate()
    {
        let x = label_w + i as f64 * 110.0;
        let _ = write!(
            s,
            "<rect x=\"{x}\" y=\"4\" width=\"10\" height=\"10\" fill=\"{colour}\"/>\
             <text x=\"{}\" y=\"13\" class=\"small\">{name}</text>",
            x + 14.0
        );
    }
    for (i, a) in assets.iter().enumerate() {
        let y = 26.0 + row_h * i as f64;
        let parts = [
            (a.available_s, GREEN),
            (a.unavailable_s, ORANGE),
            (a.offline_s, RED),
            (a.not_monitored_s, GREY),
        ];
        let total: i64 = parts.iter().map(|(v, _)| *v).sum::<i64>().max(1);
        let _ = write!(
            s,
            "<text x=\"0\" y=\"{}\" class=\"small\">{}</text>",
            y + 13.0,
            esc(&a.key)
        );
        let mut x = label_w;
        for (v, colour) in parts {
            let w = bar_w * v as f64 / total as f64;
            if w > 0.0 {
                let _ = write!(
                    s,
                    "<rect x=\"{x:.2}\" y=\"{y}\" width=\"{w:.2}\" height=\"16\" fill=\"{colour}\"/>"
                );
            }
            x += w;
        }
        let unit = if a.availability_pct.is_some() {
            " %"
        } else {
            ""
        };
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" class=\"small\">{}{unit}</text>",
            label_w + bar_w + 8.0,
            y + 13.0,
            svg_fig(
                &format!("/availability/assets/{i}/availability_pct"),
                &a.availability_pct
            )
        );
    }
    s.push_str("</svg>");
    s
}

/// Corrective work orders by priority: opened and resolved, side by side.
pub fn priority_chart(rows: &[PriorityFigures]) -> String {
    let max = rows
        .iter()
        .map(|r| r.opened.max(r.resolved))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let (plot_h, group_w) = (140.0, 120.0);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"chart\" role=\"img\" aria-label=\"Corrective work orders by priority\" \
         xmlns=\"http://www.w3.org/2000/svg\" width=\"520\" height=\"210\" viewBox=\"0 0 520 210\">\
         <rect x=\"10\" y=\"4\" width=\"10\" height=\"10\" fill=\"{BLUE}\"/>\
         <text x=\"24\" y=\"13\" class=\"small\">opened in the period</text>\
         <rect x=\"170\" y=\"4\" width=\"10\" height=\"10\" fill=\"{LIGHT_BLUE}\"/>\
         <text x=\"184\" y=\"13\" class=\"small\">of those, resolved</text>"
    );
    let base = 24.0 + plot_h + 16.0;
    for (i, r) in rows.iter().enumerate() {
        let x0 = 20.0 + group_w * i as f64;
        for (j, (v, colour, field)) in [
            (r.opened, BLUE, "opened"),
            (r.resolved, LIGHT_BLUE, "resolved"),
        ]
        .into_iter()
        .enumerate()
        {
            let h = plot_h * v as f64 / max;
            let x = x0 + 40.0 * j as f64;
            let _ = write!(
                s,
                "<rect x=\"{x}\" y=\"{:.2}\" width=\"34\" height=\"{h:.2}\" fill=\"{colour}\"/>\
                 <text x=\"{}\" y=\"{:.2}\" class=\"small\" text-anchor=\"middle\">{}</text>",
                base - h,
                x + 17.0,
                base - h - 3.0,
                svg_fig(&format!("/corrective/by_priority/{i}/{field}"), &v)
            );
        }
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" class=\"small\" text-anchor=\"middle\">{}</text>",
            x0 + 37.0,
            base + 14.0,
            esc(&r.priority)
        );
    }
    let _ = write!(
        s,
        "<line x1=\"10\" y1=\"{base}\" x2=\"510\" y2=\"{base}\" stroke=\"#555\"/></svg>"
    );
    s
}

pub const STYLE: &str = r#"
body { font-family: "DejaVu Sans", "Noto Sans", Arial, sans-serif; color: #1b1b1b; margin: 24px auto; max-width: 1000px; font-size: 14px; line-height: 1.4; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 24px 0 8px; border-bottom: 2px solid #1565c0; padding-bottom: 2px; }
h3 { font-size: 15px; margin: 16px 0 6px; }
.meta { color: #444; margin: 0; }
dl.period { display: grid; grid-template-columns: max-content auto; gap: 2px 12px; margin: 8px 0; }
dl.period dt { font-weight: bold; }
dl.period dd { margin: 0; }
.headline { border: 2px solid #1565c0; border-radius: 6px; padding: 12px 16px; background: #f3f8fe; }
.headline .big { font-size: 36px; font-weight: bold; }
.cards { display: grid; grid-template-columns: repeat(3, 1fr); gap: 10px; margin-top: 12px; }
.card { border: 1px solid #ccc; border-radius: 6px; padding: 8px 12px; }
.card .big { font-size: 24px; font-weight: bold; }
.card .label { color: #444; font-size: 12px; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 12px; font-size: 12px; }
th, td { border: 1px solid #ccc; padding: 3px 5px; text-align: right; vertical-align: top; }
th { overflow-wrap: anywhere; }
th { background: #eef2f7; }
td.text, th.text { text-align: left; }
svg.chart { max-width: 100%; height: auto; }
svg .small { font-size: 11px; fill: #1b1b1b; }
.note { color: #444; font-size: 12px; }
footer { margin-top: 28px; font-size: 12px; color: #333; }
footer li { margin-bottom: 4px; }
sup { font-size: 10px; }
@page { size: A4; margin: 14mm; }
@media print {
  body { margin: 0; max-width: none; font-size: 11px; }
  table { font-size: 10px; }
  h2 { break-after: avoid; }
  section, table, svg { break-inside: avoid; }
  .cards { grid-template-columns: repeat(3, 1fr); }
}
"#;
