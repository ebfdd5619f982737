//! The report as one CSV table: a row for all assets, then per building, per device type and
//! per asset (the `level` column), with the same figures as the JSON's availability tables.
//! An empty cell is "no data".

use std::fmt::Write as _;

use super::EngineeringReport;
use super::model::GroupFigures;

pub const HEADER: &str = "level,key,name,building,floor,device_type,assets,period_from,period_to,\
as_of,available_s,unavailable_s,offline_s,not_monitored_s,availability_pct,monitored_pct,\
offline_h,not_monitored_h,corrective_opened,corrective_closed,preventive_due,\
preventive_on_time,pm_compliance_pct";

/// One CSV field: quoted when it holds a comma, quote or line break; a text that a
/// spreadsheet would take for a formula gets a leading apostrophe.
fn field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) && s.parse::<f64>().is_err() {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref()
        .map(|v| field(&v.to_string()))
        .unwrap_or_default()
}

pub fn render(r: &EngineeringReport) -> String {
    let mut out = String::from(HEADER);
    out.push('\n');
    let t = &r.availability;
    let rows = std::iter::once(&t.total)
        .chain(&t.buildings)
        .chain(&t.device_types)
        .chain(&t.assets);
    for g in rows {
        line(&mut out, r, g);
    }
    out
}

fn line(out: &mut String, r: &EngineeringReport, g: &GroupFigures) {
    let _ = writeln!(
        out,
        "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
        g.level,
        field(&g.key),
        opt(&g.name),
        opt(&g.building),
        opt(&g.floor),
        opt(&g.device_type),
        g.assets,
        r.period.from,
        r.period.to,
        r.period.as_of,
        g.available_s,
        g.unavailable_s,
        g.offline_s,
        g.not_monitored_s,
        opt(&g.availability_pct),
        opt(&g.monitored_pct),
        g.offline_h,
        g.not_monitored_h,
        g.corrective_opened,
        g.corrective_closed,
        g.preventive_due,
        g.preventive_on_time,
        opt(&g.pm_compliance_pct),
    );
}
