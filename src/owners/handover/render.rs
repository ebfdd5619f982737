//! A stored handover record as JSON, CSV (one row per asset point) and a printable HTML page
//! (inline CSS, nothing from elsewhere, no scripts) with signature lines for both parties.
//!
//! The HTML marks each figure with `data-figure="NAME"` (`point:ASSET:POINT`,
//! `min:ASSET:POINT`, `max:ASSET:POINT`, `counter:ASSET:POINT`, `open_work_orders:ASSET`,
//! `sha256`, ...) whose text is the JSON value as serde_json writes it, so that the page can be
//! checked against the JSON.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::{HandoverRecord, OpenWorkOrder};

/// A record as read back from the store.
#[derive(Debug, Clone)]
pub struct Sealed<'a> {
    pub id: i64,
    pub record: &'a HandoverRecord,
    pub sha256: &'a str,
    /// The stored text still has the stored hash.
    pub verified: bool,
}

/// The API's JSON answer: the id, the hash, whether it verified, and the record.
pub fn json(s: &Sealed<'_>) -> Value {
    json!({
        "id": s.id,
        "sha256": s.sha256,
        "verified": s.verified,
        "record": s.record,
    })
}

/// A value as the JSON writes it (a string without its quotes; `null` as empty).
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn num(v: Option<f64>) -> String {
    v.map(|x| text(&json!(x))).unwrap_or_default()
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// One row per asset point.
pub fn csv(s: &Sealed<'_>) -> String {
    let mut out = String::from(
        "handover_id,building,recorded_at,asset,name,device_type,floor,online,point,kind,value,unit,at,min,max,sha256,verified\r\n",
    );
    let r = s.record;
    for a in &r.assets {
        for p in &a.points {
            let row = [
                s.id.to_string(),
                r.building.clone(),
                r.recorded_at.clone(),
                a.id.clone(),
                a.name.clone().unwrap_or_default(),
                a.device_type.clone(),
                a.floor.clone().unwrap_or_default(),
                a.online.map(|o| o.to_string()).unwrap_or_default(),
                p.name.clone(),
                p.kind.clone(),
                text(&p.value),
                p.unit.clone().unwrap_or_default(),
                p.at.clone().unwrap_or_default(),
                num(p.min),
                num(p.max),
                s.sha256.to_string(),
                s.verified.to_string(),
            ];
            let row: Vec<String> = row.iter().map(|f| csv_field(f)).collect();
            out.push_str(&row.join(","));
            out.push_str("\r\n");
        }
    }
    out
}

/// HTML-escapes text.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// `<td data-figure="name">text</td>`, or a plain dash when there is no value.
fn fig(name: &str, value: &str) -> String {
    if value.is_empty() {
        "<td class=\"none\">—</td>".into()
    } else {
        format!("<td data-figure=\"{}\">{}</td>", esc(name), esc(value))
    }
}

const CSS: &str = "body{font-family:'Noto Sans','Noto Sans CJK SC',Arial,sans-serif;color:#111;margin:24px;font-size:12px}\
h1{font-size:20px;margin:0 0 4px}h2{font-size:15px;margin:22px 0 6px;border-bottom:2px solid #333}\
h3{font-size:13px;margin:12px 0 4px}table{border-collapse:collapse;width:100%;margin:4px 0 10px}\
th,td{border:1px solid #999;padding:2px 6px;text-align:left;vertical-align:top}th{background:#e8e8e8}\
td.num{text-align:right}.none{color:#888}.hash{font-family:monospace;word-break:break-all}\
.bad{background:#c00;color:#fff;padding:6px;font-weight:bold}.ok{color:#060;font-weight:bold}\
.sig td{height:34px}.asset{page-break-inside:avoid}@media print{body{margin:10mm}}";

fn wo_rows(out: &mut String, list: &[OpenWorkOrder]) {
    out.push_str("<table><tr><th>Work order</th><th>Priority</th><th>Status</th><th>Rule</th><th>Title</th><th>Opened (UTC)</th><th>Due (UTC)</th><th>Evidence</th></tr>");
    for w in list {
        let _ = write!(
            out,
            "<tr>{}<td>{}</td><td>{}</td><td>{}</td>{}<td>{}</td><td>{}</td><td>{}</td></tr>",
            fig(&format!("work_order:{}", w.id), &w.id.to_string()),
            esc(&w.priority),
            esc(&w.status),
            esc(&w.rule),
            fig(&format!("work_order_title:{}", w.id), &w.title),
            esc(&w.opened_at),
            esc(&w.due_at),
            esc(&evidence_text(&w.evidence)),
        );
    }
    out.push_str("</table>");
}

/// The evidence in a line: point, value, threshold and the last readings.
fn evidence_text(e: &Value) -> String {
    let mut parts = Vec::new();
    for k in crate::rules::types::EVIDENCE_SUMMARY_KEYS {
        if let Some(v) = e.get(k).filter(|v| !v.is_null()) {
            parts.push(format!("{k} {}", text(v)));
        }
    }
    if let Some(rs) = e.get("readings").and_then(Value::as_array) {
        let last: Vec<String> = rs
            .iter()
            .rev()
            .take(3)
            .rev()
            .map(|r| format!("{} at {}", text(&r["value"]), text(&r["at"])))
            .collect();
        if !last.is_empty() {
            parts.push(format!("readings: {}", last.join("; ")));
        }
    }
    parts.join(", ")
}

/// The printable record.
pub fn html(s: &Sealed<'_>) -> String {
    let r = s.record;
    let mut o = String::with_capacity(64 * 1024);
    let _ = write!(
        o,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Handover record {} — building {}</title><style>{CSS}</style></head><body>",
        s.id,
        esc(&r.building)
    );
    let _ = write!(
        o,
        "<h1>Handover inspection record (承接查验记录) No. <span data-figure=\"id\">{}</span></h1>",
        s.id
    );
    if !s.verified {
        o.push_str("<p class=\"bad\">HASH MISMATCH: this record's text no longer has the SHA-256 stored with it. It has been altered after it was recorded and must not be relied on.</p>");
    }
    o.push_str("<table>");
    let total_open: usize = r.assets.iter().map(|a| a.open_work_orders.len()).sum();
    for (label, name, value) in [
        ("Building", "building", r.building.clone()),
        ("Site", "site", r.site.clone().unwrap_or_default()),
        ("Gateway", "gateway_id", r.gateway_id.clone()),
        ("Recorded at (UTC)", "recorded_at", r.recorded_at.clone()),
        (
            &*format!("Recorded at ({})", r.timezone),
            "recorded_at_local",
            r.recorded_at_local.clone(),
        ),
        ("Recorded by", "recorded_by", r.recorded_by.clone()),
        ("Note", "note", r.note.clone().unwrap_or_default()),
        ("Assets", "assets", r.assets.len().to_string()),
        (
            "Open work orders",
            "open_work_orders",
            total_open.to_string(),
        ),
        (
            "Ranges observed from (UTC)",
            "range_from",
            r.range_from.clone(),
        ),
    ] {
        let _ = write!(o, "<tr><th>{}</th>{}</tr>", esc(label), fig(name, &value));
    }
    let _ = write!(
        o,
        "<tr><th>SHA-256 of the canonical JSON</th><td class=\"hash\" data-figure=\"sha256\">{}</td></tr>",
        esc(s.sha256)
    );
    let _ = write!(
        o,
        "<tr><th>Hash check</th><td class=\"{}\" data-figure=\"verified\">{}</td></tr></table>",
        if s.verified { "ok" } else { "bad" },
        s.verified
    );
    o.push_str("<p>Every value below was read from the equipment by the gateway; a gauge's range is the lowest and highest value the gateway logged in the window before the record (the current value alone when it logged none).</p>");
    for a in &r.assets {
        let _ = write!(
            o,
            "<section class=\"asset\"><h2>{} {}</h2><table><tr><th>Asset</th><th>Profile</th><th>Device type</th><th>Floor</th><th>Link</th><th>Unit / topic</th><th>Online</th><th>Last good poll (UTC)</th></tr><tr>{}<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>{}<td>{}</td></tr></table>",
            esc(&a.id),
            esc(a.name.as_deref().unwrap_or("")),
            fig(&format!("asset:{}", a.id), &a.id),
            esc(&a.profile),
            esc(&a.device_type),
            esc(a.floor.as_deref().unwrap_or("—")),
            esc(&a.link),
            esc(&a
                .modbus_unit
                .map(|u| u.to_string())
                .or_else(|| a.mqtt_topic.clone())
                .unwrap_or_default()),
            fig(
                &format!("online:{}", a.id),
                &a.online.map(|x| x.to_string()).unwrap_or_default()
            ),
            esc(a.last_good_at.as_deref().unwrap_or("—")),
        );
        if !a.counters.is_empty() {
            o.push_str("<h3>Counters</h3><table><tr><th>Counter</th><th>Value</th><th>Unit</th><th>At (UTC)</th></tr>");
            for c in &a.counters {
                let _ = write!(
                    o,
                    "<tr><td>{}</td>{}<td>{}</td><td>{}</td></tr>",
                    esc(&c.name),
                    fig(&format!("counter:{}:{}", a.id, c.name), &text(&c.value)),
                    esc(c.unit.as_deref().unwrap_or("")),
                    esc(c.at.as_deref().unwrap_or("—")),
                );
            }
            o.push_str("</table>");
        }
        o.push_str("<h3>Points</h3><table><tr><th>Point</th><th>Kind</th><th>Value</th><th>Unit</th><th>Range min</th><th>Range max</th><th>At (UTC)</th></tr>");
        for p in &a.points {
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td>{}<td>{}</td>{}{}<td>{}</td></tr>",
                esc(&p.name),
                esc(&p.kind),
                fig(&format!("point:{}:{}", a.id, p.name), &text(&p.value)),
                esc(p.unit.as_deref().unwrap_or("")),
                fig(&format!("min:{}:{}", a.id, p.name), &num(p.min)),
                fig(&format!("max:{}:{}", a.id, p.name), &num(p.max)),
                esc(p.at.as_deref().unwrap_or("—")),
            );
        }
        o.push_str("</table>");
        let _ = write!(
            o,
            "<h3>Open work orders: <span data-figure=\"open_work_orders:{}\">{}</span></h3>",
            esc(&a.id),
            a.open_work_orders.len()
        );
        if !a.open_work_orders.is_empty() {
            wo_rows(&mut o, &a.open_work_orders);
        }
        o.push_str("</section>");
    }
    o.push_str("<h2>Signatures</h2><p>The parties confirm that the record above is the state of the equipment at the time stated, and that this printout carries the SHA-256 given above.</p>");
    o.push_str("<table class=\"sig\"><tr><th></th><th>Name</th><th>Organisation</th><th>Signature</th><th>Date</th></tr>");
    for party in [
        "Handing over (移交方)",
        "Taking over (接管方)",
        "Witness (见证人)",
        "Witness (见证人)",
    ] {
        let _ = write!(
            o,
            "<tr><th>{}</th><td></td><td></td><td></td><td></td></tr>",
            esc(party)
        );
    }
    o.push_str("</table></body></html>\n");
    o
}
