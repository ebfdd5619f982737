//! The report as it is serialized (the JSON): every figure the HTML and CSV show is a field
//! here, already rounded to what is printed, so that what a reader sees equals the JSON.

use serde::Serialize;

/// The owners' engineering report over one period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngineeringReport {
    pub gateway: GatewayId,
    /// The building the report is limited to (`--building`), or every building.
    pub building: Option<String>,
    pub period: PeriodInfo,
    /// The headline: preventive work orders of lifts (the 15-day maintenance) due in the period.
    pub lift_maintenance: PmFigures,
    /// Every preventive work order due in the period, lifts included.
    pub preventive: PmFigures,
    pub availability: AvailabilityTables,
    pub corrective: CorrectiveFigures,
    /// Assets with the most corrective work orders opened in the period (at most 10).
    pub top_faults: Vec<FaultCount>,
    /// Work orders not resolved at the as-of time, oldest first (at most 10).
    pub oldest_unresolved: Vec<Unresolved>,
    /// Energy per building from the power meters' kWh counters (absent without power meters).
    pub energy: Option<Energy>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GatewayId {
    pub id: String,
    pub site: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeriodInfo {
    /// RFC 3339 in the gateway's time zone: the period is `[from, to)`.
    pub from: String,
    pub to: String,
    /// The figures are as of this time: the end of the period, or the generation time for a
    /// period that has not ended.
    pub as_of: String,
    pub generated_at: String,
    pub timezone: String,
    /// Seconds from `from` to `as_of`.
    pub seconds: i64,
    /// The period has ended: printed again, the report shows the same figures.
    pub closed: bool,
}

/// Availability per building, per device type and per asset, and over everything.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AvailabilityTables {
    pub total: GroupFigures,
    pub buildings: Vec<GroupFigures>,
    pub device_types: Vec<GroupFigures>,
    pub assets: Vec<GroupFigures>,
}

/// The figures of one row: an asset, or the sums over a building, a device type, everything.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupFigures {
    /// `total`, `building`, `device_type` or `asset`.
    pub level: &'static str,
    /// The building name, the device type, the asset id (`all` for the total).
    pub key: String,
    /// For an asset: its name, building, floor and device type.
    pub name: Option<String>,
    pub building: Option<String>,
    pub floor: Option<String>,
    pub device_type: Option<String>,
    pub assets: u64,
    pub available_s: i64,
    pub unavailable_s: i64,
    pub offline_s: i64,
    pub not_monitored_s: i64,
    /// available / (available + unavailable), percent with one decimal; `None`: no data.
    pub availability_pct: Option<f64>,
    /// (available + unavailable + offline) / period, percent with one decimal.
    pub monitored_pct: Option<f64>,
    pub offline_h: f64,
    pub not_monitored_h: f64,
    /// Corrective work orders opened in the period, and resolved in the period.
    pub corrective_opened: u64,
    pub corrective_closed: u64,
    pub preventive_due: u64,
    pub preventive_on_time: u64,
    pub pm_compliance_pct: Option<f64>,
}

/// Corrective work orders: per priority (most urgent first) and over all of them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CorrectiveFigures {
    pub by_priority: Vec<PriorityFigures>,
    pub total: PriorityFigures,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PriorityFigures {
    /// `urgent`, `high`, `normal`, `low` or `all`.
    pub priority: String,
    /// The response time promised (`[work_orders] response_times`), minutes; `None` for `all`.
    pub target_min: Option<f64>,
    /// Opened in the period.
    pub opened: u64,
    /// Of those opened: acknowledged, resolved, cancelled by the as-of time, and still open.
    pub acknowledged: u64,
    pub resolved: u64,
    pub cancelled: u64,
    pub unresolved: u64,
    /// Resolved in the period, whenever they were opened.
    pub closed_in_period: u64,
    pub response: TimeFigures,
    pub repair: TimeFigures,
}

/// Response or repair times of the work orders opened in the period, and the share on time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimeFigures {
    /// How many have a time (answered, or repaired) by the as-of time.
    pub measured: u64,
    /// Minutes, one decimal, nearest-rank percentiles; `None` when nothing was measured.
    pub median_min: Option<f64>,
    pub p90_min: Option<f64>,
    pub on_time: u64,
    pub late: u64,
    /// Not answered (repaired) yet, the deadline still ahead: not in the share.
    pub pending: u64,
    /// on_time / (on_time + late), percent with one decimal.
    pub on_time_pct: Option<f64>,
}

/// Preventive work orders due in the period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PmFigures {
    pub due: u64,
    pub on_time: u64,
    pub late: u64,
    pub not_done: u64,
    pub cancelled: u64,
    /// Due after the as-of time and not done yet: not in the share.
    pub pending: u64,
    /// on_time / (on_time + late + not_done), percent with one decimal.
    pub compliance_pct: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultCount {
    pub asset: String,
    pub name: Option<String>,
    pub building: Option<String>,
    pub device_type: String,
    pub work_orders: u64,
    /// Times their conditions triggered (a work order counts each repeat).
    pub occurrences: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unresolved {
    pub id: i64,
    pub asset: String,
    pub building: Option<String>,
    pub kind: String,
    pub priority: String,
    pub status: String,
    pub title: String,
    pub opened_at: String,
    /// Hours from opening to the as-of time, one decimal.
    pub age_h: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Energy {
    /// The local days counted, inclusive (`YYYY-MM-DD`): every day the period touches.
    pub from_day: String,
    pub to_day: String,
    pub buildings: Vec<BuildingEnergy>,
    pub total_kwh: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildingEnergy {
    pub building: String,
    pub meters: u64,
    /// One decimal.
    pub kwh: f64,
}
