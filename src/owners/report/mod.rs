//! The owners' engineering report: availability, work orders, maintenance on time, energy.
//!
//! [`build`] is a pure computation over plain inputs (`ReportInputs`); [`load`] gathers those
//! inputs from the work-order store and the settings; `json`, [`csv`] and [`html`] render the
//! result. Every figure is "as of" `min(to, now)`: a report for a period that has ended shows
//! the same figures whenever it is printed (what happened later is not counted).

pub mod avail;
pub mod csv;
pub mod html;
mod html_parts;
pub mod load;
pub mod model;
pub mod orders;
pub mod period;
#[cfg(test)]
mod tests;

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;

pub use model::EngineeringReport;

use crate::workorder::availability::{CounterDay, Span};
use crate::workorder::store::ResponseTimes;
use crate::workorder::types::WorkOrder;

/// The device type of lifts, whose preventive work orders are the headline.
pub const LIFT_DEVICE_TYPE: &str = "elevator";
/// The device type of energy meters, and their energy counter.
pub const POWER_METER_DEVICE_TYPE: &str = "power_meter";
pub const ENERGY_POINT: &str = "energy_import_kwh";

/// An asset as the report groups it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportAsset {
    pub id: String,
    pub name: Option<String>,
    pub building: Option<String>,
    pub floor: Option<String>,
    pub device_type: String,
}

/// Everything the report is computed from.
#[derive(Debug, Clone)]
pub struct ReportInputs {
    pub gateway_id: String,
    pub site: Option<String>,
    pub timezone: Tz,
    /// The period `[from, to)`.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The generation time.
    pub now: DateTime<Utc>,
    /// Limit to one building (assets and work orders of that building).
    pub building: Option<String>,
    /// The configured assets.
    pub assets: Vec<ReportAsset>,
    /// Work orders that may matter to the period (a superset is fine: `build` selects).
    pub work_orders: Vec<WorkOrder>,
    /// Availability spans overlapping the period (unclipped).
    pub spans: Vec<Span>,
    /// Counter days of the local days the period touches.
    pub counter_days: Vec<CounterDay>,
    pub response_times: ResponseTimes,
}

impl ReportInputs {
    /// The time the figures are taken at: the end of the period, or now if sooner.
    pub fn as_of(&self) -> DateTime<Utc> {
        self.to.min(self.now).max(self.from)
    }

    fn local(&self, t: DateTime<Utc>) -> String {
        t.with_timezone(&self.timezone)
            .to_rfc3339_opts(SecondsFormat::Secs, false)
    }
}

/// Rounds to one decimal (what the report prints).
pub(crate) fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// `part / whole` in percent, one decimal; `None` when `whole` is 0.
pub(crate) fn pct(part: i64, whole: i64) -> Option<f64> {
    (whole > 0).then(|| round1(part as f64 * 100.0 / whole as f64))
}

/// Computes the report.
pub fn build(mut inputs: ReportInputs) -> EngineeringReport {
    if let Some(b) = &inputs.building {
        inputs.assets.retain(|a| a.building.as_deref() == Some(b));
        inputs
            .work_orders
            .retain(|w| w.building.as_deref() == Some(b));
        let ids: std::collections::HashSet<String> =
            inputs.assets.iter().map(|a| a.id.clone()).collect();
        inputs.spans.retain(|s| ids.contains(&s.asset));
    }
    let as_of = inputs.as_of();
    let orders = orders::OrderFigures::compute(&inputs, as_of);
    let availability = avail::tables(&inputs, as_of, &orders);
    EngineeringReport {
        gateway: model::GatewayId {
            id: inputs.gateway_id.clone(),
            site: inputs.site.clone(),
        },
        building: inputs.building.clone(),
        period: model::PeriodInfo {
            from: inputs.local(inputs.from),
            to: inputs.local(inputs.to),
            as_of: inputs.local(as_of),
            generated_at: inputs.local(inputs.now),
            timezone: inputs.timezone.name().to_string(),
            seconds: (as_of - inputs.from).num_seconds(),
            closed: inputs.now >= inputs.to,
        },
        lift_maintenance: orders.lift_pm.clone(),
        preventive: orders.pm.clone(),
        availability,
        corrective: orders.corrective.clone(),
        top_faults: orders.top_faults.clone(),
        oldest_unresolved: orders.oldest_unresolved.clone(),
        energy: avail::energy(&inputs, as_of),
    }
}

/// The forms a report is rendered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Html,
    Csv,
    Json,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Html => "text/html; charset=utf-8",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Json => "application/json",
        }
    }
}

/// The report in the given form.
pub fn render(report: &EngineeringReport, format: Format) -> String {
    match format {
        Format::Html => html::render(report),
        Format::Csv => csv::render(report),
        // Plain data (strings, numbers, options): it always serializes.
        Format::Json => serde_json::to_string_pretty(report).unwrap_or_default() + "\n",
    }
}
