//! `facilityd work-orders list|show|ack|resolve|close`: a client of the running daemon's API,
//! with a table for people and `--json` for scripts.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::{Value, json};

use super::client::{self, call};

/// Arguments of `facilityd work-orders`.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkOrdersArgs {
    /// Configuration file: `http.listen` and `http.api_token_file` are read from it.
    #[arg(short, long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// The daemon's API, e.g. http://127.0.0.1:9470 (overrides the config).
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// File holding the API token (overrides the config).
    #[arg(long, value_name = "FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: WorkOrdersCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum WorkOrdersCommand {
    /// Work orders, newest first.
    List {
        /// open, acknowledged, resolved, closed (comma-separated for several)
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        asset: Option<String>,
        /// urgent, high, normal, low
        #[arg(long)]
        priority: Option<String>,
    },
    /// One work order with its evidence.
    Show { id: i64 },
    /// Acknowledge: someone is on it.
    Ack {
        id: i64,
        #[arg(long)]
        by: Option<String>,
        #[arg(long)]
        note: Option<String>,
    },
    /// Resolve: the repair is done.
    Resolve {
        id: i64,
        #[arg(long)]
        by: Option<String>,
        #[arg(long)]
        note: Option<String>,
    },
    /// Close a resolved work order, or cancel an open one (which needs --note).
    Close {
        id: i64,
        #[arg(long)]
        by: Option<String>,
        #[arg(long)]
        note: Option<String>,
    },
}

fn s(v: &Value, k: &str) -> String {
    match v.get(k) {
        Some(Value::String(x)) => x.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(x) => x.to_string(),
    }
}

fn short_time(v: &Value, k: &str) -> String {
    let t = s(v, k);
    t.get(..16).map(|x| x.replace('T', " ")).unwrap_or(t)
}

/// The table of `list`.
pub fn table(list: &[Value]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>5}  {:<7} {:<12} {:<8} {:<14} {:<28} {:>4}  {:<16}  {:<16}  TITLE",
        "ID", "PRIO", "STATUS", "COND", "ASSET", "RULE", "OCC", "OPENED (UTC)", "DUE (UTC)"
    );
    for w in list {
        let flap = if w.get("flapping").and_then(Value::as_bool) == Some(true) {
            " (flapping)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{:>5}  {:<7} {:<12} {:<8} {:<14} {:<28} {:>4}  {:<16}  {:<16}  {}{flap}",
            s(w, "id"),
            s(w, "priority"),
            s(w, "status"),
            s(w, "condition"),
            s(w, "asset"),
            s(w, "rule"),
            s(w, "occurrences"),
            short_time(w, "opened_at"),
            short_time(w, "due_at"),
            s(w, "title")
        );
    }
    if list.is_empty() {
        out.push_str("(no work orders)\n");
    }
    out
}

/// The detail view of `show`.
pub fn detail(w: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "work order {}: {}", s(w, "id"), s(w, "title"));
    for k in [
        "key",
        "asset",
        "site",
        "building",
        "floor",
        "device_type",
        "rule",
        "kind",
        "priority",
        "status",
        "condition",
        "occurrences",
        "flapping",
        "opened_at",
        "acknowledged_at",
        "condition_cleared_at",
        "resolved_at",
        "closed_at",
        "due_at",
        "last_triggered_at",
        "acknowledged_by",
        "resolved_by",
        "closed_by",
        "note",
        "description",
    ] {
        let v = s(w, k);
        if v != "-" {
            let _ = writeln!(out, "  {k:<21} {v}");
        }
    }
    if let Some(e) = w.get("evidence") {
        let _ = writeln!(out, "  evidence:");
        for k in crate::rules::types::EVIDENCE_SUMMARY_KEYS {
            let v = s(e, k);
            if v != "-" {
                let _ = writeln!(out, "    {k:<19} {v}");
            }
        }
        if let Some(rs) = e.get("readings").and_then(Value::as_array) {
            for r in rs.iter().rev().take(10).rev() {
                let _ = writeln!(out, "    {}  {}", s(r, "at"), s(r, "value"));
            }
        }
    }
    out
}

pub async fn run(a: WorkOrdersArgs) -> anyhow::Result<()> {
    let t = client::target(a.config.clone(), a.url.as_deref(), a.token_file.clone())?;
    use reqwest011::Method;
    let (value, render): (Value, fn(&Value) -> String) = match &a.command {
        WorkOrdersCommand::List {
            status,
            asset,
            priority,
        } => {
            let mut q = Vec::new();
            for (k, v) in [("status", status), ("asset", asset), ("priority", priority)] {
                if let Some(v) = v {
                    q.push(format!(
                        "{k}={}",
                        url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
                    ));
                }
            }
            let path = if q.is_empty() {
                "/api/v1/work-orders".to_string()
            } else {
                format!("/api/v1/work-orders?{}", q.join("&"))
            };
            (call(&t, Method::GET, &path, None).await?, |v| {
                table(v.as_array().map(Vec::as_slice).unwrap_or(&[]))
            })
        }
        WorkOrdersCommand::Show { id } => (
            call(&t, Method::GET, &format!("/api/v1/work-orders/{id}"), None).await?,
            detail,
        ),
        WorkOrdersCommand::Ack { id, by, note }
        | WorkOrdersCommand::Resolve { id, by, note }
        | WorkOrdersCommand::Close { id, by, note } => {
            let verb = match &a.command {
                WorkOrdersCommand::Ack { .. } => "ack",
                WorkOrdersCommand::Resolve { .. } => "resolve",
                _ => "close",
            };
            (
                call(
                    &t,
                    Method::POST,
                    &format!("/api/v1/work-orders/{id}/{verb}"),
                    Some(json!({ "by": by, "note": note })),
                )
                .await?,
                detail,
            )
        }
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", render(&value));
    }
    Ok(())
}
