//! `facilityd report`: the owners' engineering report, read from the work-order database in
//! the state directory. It opens the database read-only (never migrating or writing it), so it
//! works whether the daemon runs or not.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::owners::report::load::{ReportRequest, report};
use crate::owners::report::{Format, render};
use crate::workorder::store::WorkOrderStore;

/// Arguments of `facilityd report`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// Configuration file (the state directory, time zone, devices and response times).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A calendar month in the gateway's time zone, e.g. 2026-11.
    #[arg(long, value_name = "YYYY-MM", conflicts_with_all = ["from", "to"], required_unless_present_all = ["from", "to"])]
    pub month: Option<String>,
    /// Start of the period: RFC 3339, or YYYY-MM-DD (local midnight).
    #[arg(long, value_name = "T", requires = "to")]
    pub from: Option<String>,
    /// End of the period (excluded): RFC 3339, or YYYY-MM-DD (local midnight).
    #[arg(long, value_name = "T", requires = "from")]
    pub to: Option<String>,
    /// Only the assets and work orders of this building.
    #[arg(long, value_name = "B")]
    pub building: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Html)]
    pub format: Format,
    /// Write the report to this file instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

pub fn run(a: ReportArgs) -> anyhow::Result<()> {
    let path = crate::cli::config_path(a.config.clone());
    let settings = crate::settings::load(&path)
        .map_err(|e| anyhow::anyhow!("{e}\nconfiguration invalid: {}", path.display()))?;
    let req = ReportRequest {
        month: a.month,
        from: a.from,
        to: a.to,
        building: a.building,
    };
    // The request is checked before the database is opened: a typo is named as such.
    crate::owners::report::load::validate(&settings, &req)?;
    let db = crate::gateway::work_order_db(&settings);
    let store = WorkOrderStore::open_read_only(&db, settings.response_times)?;
    let r = report(&store, &settings, &req, chrono::Utc::now())?;
    let text = render(&r, a.format);
    match a.out {
        Some(out) => std::fs::write(&out, text)
            .with_context(|| format!("cannot write the report to {}", out.display()))?,
        None => print!("{text}"),
    }
    Ok(())
}
