//! The report as one self-contained printable HTML page: inline CSS and SVG, no scripts, no
//! fonts or images from elsewhere. Every figure is marked `data-figure="<JSON pointer>"` and
//! printed exactly as the JSON holds it, so the page and the JSON cannot disagree.

use std::fmt::Write as _;

use super::EngineeringReport;
use super::html_parts::{STYLE, availability_chart, esc, fig, priority_chart};
use super::model::{GroupFigures, PmFigures, PriorityFigures};

/// The definitions printed under the report, by footnote number.
pub const FOOTNOTES: [&str; 10] = [
    "Period: from the first time to the second, excluding the second, in the gateway's time \
     zone. The figures are taken as of the end of the period (or the generation time, for a \
     period not yet ended): what happened after it is not counted, so a report of an ended \
     period shows the same figures whenever it is printed.",
    "Availability = time available / (time available + time unavailable): the share of the \
     time the equipment's state was known in which it was in service. Unavailable: answering, \
     but in a state its device type declares unusable (a lift out of automatic service or in \
     a fault, a pump tripped, a fire panel in trouble or with a zone disabled, a door that \
     cannot secure). \"no data\": the state was never known in the period (never 100 %).",
    "Monitored = (available + unavailable + offline) / the period. Offline: the gateway ran \
     but the equipment did not answer. Not monitored: the rest of the period, when the \
     gateway itself was not running; it is never counted as available. Rows for a building, a \
     device type or all assets add up the seconds of their assets and compute the shares \
     from those sums.",
    "Corrective work orders (faults) opened in the period, by priority; acknowledged, \
     resolved and cancelled as of the end of the period. A work order belongs to the period \
     it was opened in, even if it stayed open across the start of the next one. \"Resolved \
     in the period\" counts those resolved in the period, whenever they were opened.",
    "Response time = acknowledged - opened (a work order resolved by a person without an \
     acknowledgement: resolved - opened; one the gateway resolved itself because its \
     condition cleared has no response). On time: answered within the promised response \
     time of its priority ([work_orders] response_times). Late: answered after it, or not \
     answered and the time passed. Pending: not answered, time not yet passed (not in the \
     share). Unanswered work orders that cleared or were cancelled in time are not in the \
     share.",
    "Repair time = resolved - opened; on time: resolved by the work order's due time. Median \
     and 90th percentile by nearest rank: the smallest time that at least half (90 %) of the \
     times do not exceed. Times in minutes.",
    "Preventive maintenance due in the period. On time: resolved by its due time; late: \
     resolved after it; not done: not resolved and its due time passed; cancelled: closed \
     without being done (not in the share); pending: due later. Compliance = on time / (on \
     time + late + not done). Lift maintenance is the preventive work of lifts (at most 15 \
     days apart by law): the strict due date is used.",
    "Corrective work orders opened in the period, per asset (the 10 with the most); \
     occurrences: how many times their conditions triggered.",
    "Work orders of any kind neither resolved nor closed at the end of the period, oldest \
     first (10 at most); age = end of the period - opened, in hours.",
    "Energy: the sum of the daily rise of the power meters' import counter \
     (energy_import_kwh), in kWh. It counts whole local days: every day the period touches \
     counts fully.",
];

fn sup(n: usize) -> String {
    format!("<sup><a href=\"#fn{n}\">{n}</a></sup>")
}

/// A text that may be missing (a name, a floor): marked when present, a dash when not.
fn text_or_dash(pointer: &str, v: &Option<String>) -> String {
    match v {
        Some(_) => fig(pointer, v),
        None => "&ndash;".into(),
    }
}

/// Renders the page.
pub fn render(r: &EngineeringReport) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let scope = r.building.as_deref().unwrap_or("all buildings");
    let site = r.gateway.site.as_deref().unwrap_or(&r.gateway.id);
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Engineering report: {} ({}), {} to {}</title><style>{STYLE}</style></head><body>",
        esc(site),
        esc(scope),
        esc(&r.period.from),
        esc(&r.period.to)
    );
    header(&mut h, r, scope);
    headline(&mut h, r);
    availability(&mut h, r);
    corrective(&mut h, r);
    preventive(&mut h, r);
    lists(&mut h, r);
    energy(&mut h, r);
    h.push_str("<footer><h2>Definitions</h2><ol>");
    for (i, t) in FOOTNOTES.iter().enumerate() {
        let _ = write!(h, "<li id=\"fn{}\">{}</li>", i + 1, esc(t));
    }
    h.push_str("</ol></footer></body></html>\n");
    h
}

fn header(h: &mut String, r: &EngineeringReport, scope: &str) {
    let p = &r.period;
    let _ = write!(
        h,
        "<header><h1>Engineering report</h1>\
         <p class=\"meta\">{}gateway {} &middot; {}</p><dl class=\"period\">\
         <dt>Period{}</dt><dd>{} to {} ({}, {} s)</dd>\
         <dt>Figures as of</dt><dd>{}{}</dd><dt>Generated</dt><dd>{}</dd></dl></header>",
        match &r.gateway.site {
            Some(_) => format!("Site {} &middot; ", fig("/gateway/site", &r.gateway.site)),
            None => String::new(),
        },
        fig("/gateway/id", &r.gateway.id),
        esc(scope),
        sup(1),
        fig("/period/from", &p.from),
        fig("/period/to", &p.to),
        fig("/period/timezone", &p.timezone),
        fig("/period/seconds", &p.seconds),
        fig("/period/as_of", &p.as_of),
        if p.closed {
            " (the period has ended: these figures are final)"
        } else {
            " (the period has not ended yet)"
        },
        fig("/period/generated_at", &p.generated_at),
    );
}

fn pm_line(base: &str, p: &PmFigures) -> String {
    format!(
        "{} due: {} done on time, {} done late, {} not done, {} cancelled, {} not yet due",
        fig(&format!("{base}/due"), &p.due),
        fig(&format!("{base}/on_time"), &p.on_time),
        fig(&format!("{base}/late"), &p.late),
        fig(&format!("{base}/not_done"), &p.not_done),
        fig(&format!("{base}/cancelled"), &p.cancelled),
        fig(&format!("{base}/pending"), &p.pending),
    )
}

fn pct_text(pointer: &str, v: &Option<f64>) -> String {
    format!("{}{}", fig(pointer, v), if v.is_some() { " %" } else { "" })
}

fn headline(h: &mut String, r: &EngineeringReport) {
    let l = &r.lift_maintenance;
    let _ = write!(
        h,
        "<section class=\"headline\"><h2>Lift maintenance done on time (every 15 days){}</h2>\
         <div class=\"big\">{}</div><p>{}</p></section>",
        sup(7),
        pct_text("/lift_maintenance/compliance_pct", &l.compliance_pct),
        pm_line("/lift_maintenance", l)
    );
    let t = &r.availability.total;
    let c = &r.corrective.total;
    let cards = [
        (
            "Availability, all equipment",
            pct_text("/availability/total/availability_pct", &t.availability_pct),
            2,
        ),
        (
            "Time monitored",
            pct_text("/availability/total/monitored_pct", &t.monitored_pct),
            3,
        ),
        (
            "Faults (corrective work orders) opened",
            fig("/corrective/total/opened", &c.opened),
            4,
        ),
        (
            "Faults answered on time",
            pct_text(
                "/corrective/total/response/on_time_pct",
                &c.response.on_time_pct,
            ),
            5,
        ),
        (
            "Faults repaired on time",
            pct_text(
                "/corrective/total/repair/on_time_pct",
                &c.repair.on_time_pct,
            ),
            6,
        ),
        (
            "Planned maintenance done on time",
            pct_text("/preventive/compliance_pct", &r.preventive.compliance_pct),
            7,
        ),
    ];
    h.push_str("<div class=\"cards\">");
    for (label, value, n) in cards {
        let _ = write!(
            h,
            "<div class=\"card\"><div class=\"big\">{value}</div><div class=\"label\">{label}{}</div></div>",
            sup(n)
        );
    }
    h.push_str("</div>");
}

fn group_table(h: &mut String, title: &str, base: &str, rows: &[&GroupFigures], per_asset: bool) {
    let _ = write!(h, "<h3>{}</h3><table><thead><tr>", esc(title));
    let mut cols = vec!["", "Assets"];
    if per_asset {
        cols = vec!["Asset", "Name", "Building", "Floor", "Type"];
    }
    cols.extend([
        "Availability",
        "Monitored",
        "Offline (h)",
        "Not monitored (h)",
        "Faults opened",
        "Faults resolved in the period",
        "Maintenance on time",
    ]);
    for c in cols {
        let _ = write!(h, "<th class=\"text\">{c}</th>");
    }
    h.push_str("</tr></thead><tbody>");
    for (i, g) in rows.iter().enumerate() {
        let p = if base.ends_with("total") {
            base.to_string()
        } else {
            format!("{base}/{i}")
        };
        h.push_str("<tr>");
        let _ = write!(
            h,
            "<td class=\"text\">{}</td>",
            fig(&format!("{p}/key"), &g.key)
        );
        if per_asset {
            for (f, v) in [
                ("name", &g.name),
                ("building", &g.building),
                ("floor", &g.floor),
                ("device_type", &g.device_type),
            ] {
                let _ = write!(
                    h,
                    "<td class=\"text\">{}</td>",
                    text_or_dash(&format!("{p}/{f}"), v)
                );
            }
        } else {
            let _ = write!(h, "<td>{}</td>", fig(&format!("{p}/assets"), &g.assets));
        }
        let cells = [
            pct_text(&format!("{p}/availability_pct"), &g.availability_pct),
            pct_text(&format!("{p}/monitored_pct"), &g.monitored_pct),
            fig(&format!("{p}/offline_h"), &g.offline_h),
            fig(&format!("{p}/not_monitored_h"), &g.not_monitored_h),
            fig(&format!("{p}/corrective_opened"), &g.corrective_opened),
            fig(&format!("{p}/corrective_closed"), &g.corrective_closed),
            pct_text(&format!("{p}/pm_compliance_pct"), &g.pm_compliance_pct),
        ];
        for c in cells {
            let _ = write!(h, "<td>{c}</td>");
        }
        h.push_str("</tr>");
    }
    h.push_str("</tbody></table>");
}

fn availability(h: &mut String, r: &EngineeringReport) {
    let a = &r.availability;
    let _ = write!(
        h,
        "<section><h2>Equipment availability{}<sup>,</sup>{}</h2>",
        sup(2),
        sup(3)
    );
    if a.assets.is_empty() {
        h.push_str("<p>No equipment is configured in this scope.</p>");
    } else {
        h.push_str(&availability_chart(&a.assets));
    }
    group_table(
        h,
        "All equipment",
        "/availability/total",
        &[&a.total],
        false,
    );
    let b: Vec<&GroupFigures> = a.buildings.iter().collect();
    group_table(h, "By building", "/availability/buildings", &b, false);
    let t: Vec<&GroupFigures> = a.device_types.iter().collect();
    group_table(
        h,
        "By type of equipment",
        "/availability/device_types",
        &t,
        false,
    );
    let s: Vec<&GroupFigures> = a.assets.iter().collect();
    group_table(h, "By asset", "/availability/assets", &s, true);
    h.push_str("</section>");
}

/// One priority's counts (`times: false`) or its response and repair times (`times: true`).
fn priority_row(h: &mut String, base: &str, p: &PriorityFigures, times: bool) {
    let mut cells = vec![fig(&format!("{base}/priority"), &p.priority)];
    if !times {
        cells.push(match p.target_min {
            Some(_) => fig(&format!("{base}/target_min"), &p.target_min),
            None => "&ndash;".into(),
        });
        for (f, v) in [
            ("opened", p.opened),
            ("acknowledged", p.acknowledged),
            ("resolved", p.resolved),
            ("cancelled", p.cancelled),
            ("unresolved", p.unresolved),
            ("closed_in_period", p.closed_in_period),
        ] {
            cells.push(fig(&format!("{base}/{f}"), &v));
        }
    } else {
        for (k, t) in [("response", &p.response), ("repair", &p.repair)] {
            cells.push(fig(&format!("{base}/{k}/median_min"), &t.median_min));
            cells.push(fig(&format!("{base}/{k}/p90_min"), &t.p90_min));
            cells.push(format!(
                "{} / {} / {}",
                fig(&format!("{base}/{k}/on_time"), &t.on_time),
                fig(&format!("{base}/{k}/late"), &t.late),
                fig(&format!("{base}/{k}/pending"), &t.pending)
            ));
            cells.push(pct_text(&format!("{base}/{k}/on_time_pct"), &t.on_time_pct));
        }
    }
    h.push_str("<tr>");
    for (i, c) in cells.iter().enumerate() {
        let class = if i == 0 { " class=\"text\"" } else { "" };
        let _ = write!(h, "<td{class}>{c}</td>");
    }
    h.push_str("</tr>");
}

fn corrective(h: &mut String, r: &EngineeringReport) {
    let c = &r.corrective;
    let _ = write!(
        h,
        "<section><h2>Faults: corrective work orders{}</h2>{}\
         <table><thead><tr><th class=\"text\">Priority</th><th>Promised response (min)</th>\
         <th>Opened</th><th>Acknowledged</th><th>Resolved</th><th>Cancelled</th>\
         <th>Still open</th><th>Resolved in the period (any opening date)</th></tr></thead><tbody>",
        sup(4),
        priority_chart(&c.by_priority),
    );
    for (i, p) in c.by_priority.iter().enumerate() {
        priority_row(h, &format!("/corrective/by_priority/{i}"), p, false);
    }
    priority_row(h, "/corrective/total", &c.total, false);
    let _ = write!(
        h,
        "</tbody></table><h3>Response and repair times (minutes)</h3>\
         <table><thead><tr><th class=\"text\">Priority</th>\
         <th>Response median{}</th><th>Response 90th percentile</th>\
         <th>Answered on time / late / pending</th><th>Answered on time</th>\
         <th>Repair median{}</th><th>Repair 90th percentile</th>\
         <th>Repaired on time / late / pending</th><th>Repaired on time</th></tr></thead><tbody>",
        sup(5),
        sup(6)
    );
    for (i, p) in c.by_priority.iter().enumerate() {
        priority_row(h, &format!("/corrective/by_priority/{i}"), p, true);
    }
    priority_row(h, "/corrective/total", &c.total, true);
    h.push_str("</tbody></table></section>");
}

fn preventive(h: &mut String, r: &EngineeringReport) {
    let _ = write!(
        h,
        "<section><h2>Planned maintenance{}</h2><table><thead><tr><th class=\"text\">Work</th>\
         <th>Due</th><th>On time</th><th>Late</th><th>Not done</th><th>Cancelled</th>\
         <th>Not yet due</th><th>Done on time</th></tr></thead><tbody>",
        sup(7)
    );
    for (label, base, p) in [
        (
            "Lift maintenance (15 days)",
            "/lift_maintenance",
            &r.lift_maintenance,
        ),
        ("All planned maintenance", "/preventive", &r.preventive),
    ] {
        let _ = write!(
            h,
            "<tr><td class=\"text\">{label}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            fig(&format!("{base}/due"), &p.due),
            fig(&format!("{base}/on_time"), &p.on_time),
            fig(&format!("{base}/late"), &p.late),
            fig(&format!("{base}/not_done"), &p.not_done),
            fig(&format!("{base}/cancelled"), &p.cancelled),
            fig(&format!("{base}/pending"), &p.pending),
            pct_text(&format!("{base}/compliance_pct"), &p.compliance_pct),
        );
    }
    h.push_str("</tbody></table></section>");
}

fn lists(h: &mut String, r: &EngineeringReport) {
    let _ = write!(
        h,
        "<section><h2>Equipment with the most faults{}</h2>",
        sup(8)
    );
    if r.top_faults.is_empty() {
        h.push_str("<p>No faults were opened in the period.</p>");
    } else {
        h.push_str(
            "<table><thead><tr><th class=\"text\">Asset</th><th class=\"text\">Name</th>\
             <th class=\"text\">Building</th><th class=\"text\">Type</th><th>Faults</th>\
             <th>Occurrences</th></tr></thead><tbody>",
        );
        for (i, f) in r.top_faults.iter().enumerate() {
            let b = format!("/top_faults/{i}");
            let _ = write!(
                h,
                "<tr><td class=\"text\">{}</td><td class=\"text\">{}</td><td class=\"text\">{}</td>\
                 <td class=\"text\">{}</td><td>{}</td><td>{}</td></tr>",
                fig(&format!("{b}/asset"), &f.asset),
                text_or_dash(&format!("{b}/name"), &f.name),
                text_or_dash(&format!("{b}/building"), &f.building),
                fig(&format!("{b}/device_type"), &f.device_type),
                fig(&format!("{b}/work_orders"), &f.work_orders),
                fig(&format!("{b}/occurrences"), &f.occurrences),
            );
        }
        h.push_str("</tbody></table>");
    }
    let _ = write!(
        h,
        "</section><section><h2>Oldest unresolved work orders{}</h2>",
        sup(9)
    );
    if r.oldest_unresolved.is_empty() {
        h.push_str("<p>Every work order was resolved or closed.</p>");
    } else {
        h.push_str(
            "<table><thead><tr><th>No.</th><th class=\"text\">Asset</th><th class=\"text\">Work</th>\
             <th class=\"text\">Kind</th><th class=\"text\">Priority</th><th class=\"text\">Status</th>\
             <th class=\"text\">Opened</th><th>Age (h)</th></tr></thead><tbody>",
        );
        for (i, u) in r.oldest_unresolved.iter().enumerate() {
            let b = format!("/oldest_unresolved/{i}");
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"text\">{}</td><td class=\"text\">{}</td>\
                 <td class=\"text\">{}</td><td class=\"text\">{}</td><td class=\"text\">{}</td>\
                 <td class=\"text\">{}</td><td>{}</td></tr>",
                fig(&format!("{b}/id"), &u.id),
                fig(&format!("{b}/asset"), &u.asset),
                fig(&format!("{b}/title"), &u.title),
                fig(&format!("{b}/kind"), &u.kind),
                fig(&format!("{b}/priority"), &u.priority),
                fig(&format!("{b}/status"), &u.status),
                fig(&format!("{b}/opened_at"), &u.opened_at),
                fig(&format!("{b}/age_h"), &u.age_h),
            );
        }
        h.push_str("</tbody></table>");
    }
    h.push_str("</section>");
}

fn energy(h: &mut String, r: &EngineeringReport) {
    let Some(e) = &r.energy else { return };
    let _ = write!(
        h,
        "<section><h2>Energy{}</h2><p class=\"note\">Local days {} to {}.</p>\
         <table><thead><tr><th class=\"text\">Building</th><th>Meters</th><th>Energy (kWh)</th>\
         </tr></thead><tbody>",
        sup(10),
        fig("/energy/from_day", &e.from_day),
        fig("/energy/to_day", &e.to_day)
    );
    for (i, b) in e.buildings.iter().enumerate() {
        let p = format!("/energy/buildings/{i}");
        let _ = write!(
            h,
            "<tr><td class=\"text\">{}</td><td>{}</td><td>{}</td></tr>",
            fig(&format!("{p}/building"), &b.building),
            fig(&format!("{p}/meters"), &b.meters),
            fig(&format!("{p}/kwh"), &b.kwh)
        );
    }
    let _ = write!(
        h,
        "<tr><th class=\"text\">All</th><th></th><th>{}</th></tr></tbody></table></section>",
        fig("/energy/total_kwh", &e.total_kwh)
    );
}
