//! Gathers the report's inputs from the work-order store and the settings.

use chrono::{DateTime, Utc};

use super::period::{self, PeriodError};
use super::{EngineeringReport, ReportAsset, ReportInputs, build};
use crate::settings::Settings;
use crate::workorder::store::{StoreError, WorkOrderStore};

/// What a report asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportRequest {
    /// `YYYY-MM`, or `from` and `to` (RFC 3339 or `YYYY-MM-DD`).
    pub month: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub building: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Period(#[from] PeriodError),
    #[error("unknown building {given:?}: the configured buildings are {known}")]
    UnknownBuilding { given: String, known: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ReportError {
    /// A mistake in the request (a 400), not a failure of the gateway.
    pub fn is_bad_request(&self) -> bool {
        !matches!(self, ReportError::Store(_))
    }
}

/// The configured assets, as the report groups them.
pub fn assets(settings: &Settings) -> Vec<ReportAsset> {
    settings
        .assets
        .iter()
        .map(|a| ReportAsset {
            id: a.id.to_string(),
            name: a.name.clone(),
            building: a.building.clone(),
            floor: a.floor.clone(),
            device_type: a.device_type.as_str().to_string(),
        })
        .collect()
}

/// Checks the request against the settings: the period in the gateway's time zone, and the
/// building among the configured ones.
pub fn validate(
    settings: &Settings,
    req: &ReportRequest,
) -> Result<(chrono_tz::Tz, DateTime<Utc>, DateTime<Utc>), ReportError> {
    let tz = period::time_zone(&settings.gateway.timezone)?;
    let (from, to) = period::resolve(
        tz,
        req.month.as_deref(),
        req.from.as_deref(),
        req.to.as_deref(),
    )?;
    if let Some(b) = &req.building {
        let mut known: Vec<&str> = settings
            .assets
            .iter()
            .filter_map(|a| a.building.as_deref())
            .collect();
        known.sort_unstable();
        known.dedup();
        if !known.contains(&b.as_str()) {
            return Err(ReportError::UnknownBuilding {
                given: b.clone(),
                known: if known.is_empty() {
                    "none (no device has a building)".into()
                } else {
                    known.join(", ")
                },
            });
        }
    }
    Ok((tz, from, to))
}

/// Reads what the report needs from the store and computes it.
pub fn report(
    store: &WorkOrderStore,
    settings: &Settings,
    req: &ReportRequest,
    now: DateTime<Utc>,
) -> Result<EngineeringReport, ReportError> {
    let (tz, from, to) = validate(settings, req)?;
    let mut inputs = ReportInputs {
        gateway_id: settings.gateway.id.clone(),
        site: settings.gateway.site.clone(),
        timezone: tz,
        from,
        to,
        now,
        building: req.building.clone(),
        assets: assets(settings),
        work_orders: Vec::new(),
        spans: Vec::new(),
        counter_days: Vec::new(),
        response_times: settings.response_times,
    };
    let as_of = inputs.as_of();
    inputs.work_orders = store.work_orders_for_period(from, as_of)?;
    inputs.spans = store.spans(from.timestamp_millis(), as_of.timestamp_millis(), None)?;
    let (first, last) = period::local_days(tz, from, as_of);
    inputs.counter_days = store.counter_days(&first, &last)?;
    Ok(build(inputs))
}
