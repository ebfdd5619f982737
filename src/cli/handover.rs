//! `facilityd handover record|list|show|diff`: the handover baseline (承接查验) of a building,
//! through the running daemon's API (the same options as `facilityd work-orders`).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use reqwest011::Method;
use serde_json::{Value, json};

use super::client::{self, call, call_text};

/// Arguments of `facilityd handover`.
#[derive(Debug, Clone, clap::Args)]
pub struct HandoverArgs {
    /// Configuration file: `http.listen` and `http.api_token_file` are read from it.
    #[arg(short, long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// The daemon's API, e.g. http://127.0.0.1:9470 (overrides the config).
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// File holding the API token (overrides the config).
    #[arg(long, value_name = "FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// Print the API's JSON instead of text (record, list, diff).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: HandoverCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum HandoverCommand {
    /// Record the state of every asset of a building now, hashed and stored for good.
    Record {
        #[arg(long)]
        building: String,
        /// Who records it (a name, or the parties).
        #[arg(long)]
        by: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// The records, oldest first, with whether each still verifies.
    List,
    /// One record.
    Show {
        id: i64,
        #[arg(long, value_parser = ["json", "html", "csv"], default_value = "json")]
        format: String,
        /// Write it to this file instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// What changed since the record: counters, faults, points out of their recorded range,
    /// assets added or gone.
    Diff { id: i64 },
}

fn s(v: &Value, k: &str) -> String {
    match v.get(k) {
        Some(Value::String(x)) => x.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(x) => x.to_string(),
    }
}

/// The table of `list`.
pub fn table(list: &[Value]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>4}  {:<12} {:<24}  {:<20} {:<8}  SHA-256",
        "ID", "BUILDING", "RECORDED AT (UTC)", "BY", "VERIFIED"
    );
    for h in list {
        let _ = writeln!(
            out,
            "{:>4}  {:<12} {:<24}  {:<20} {:<8}  {}",
            s(h, "id"),
            s(h, "building"),
            s(h, "recorded_at"),
            s(h, "by"),
            if h["verified"] == true { "yes" } else { "NO" },
            s(h, "sha256")
        );
    }
    if list.is_empty() {
        out.push_str("(no handover records)\n");
    }
    out
}

/// The text of `diff`.
pub fn diff_text(d: &Value) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "handover {} (building {}, recorded {}) against now ({})",
        s(d, "handover_id"),
        s(d, "building"),
        s(d, "recorded_at"),
        s(d, "now")
    );
    if d["verified"] != true {
        o.push_str("WARNING: the record does not verify against its SHA-256\n");
    }
    let list = |k: &str| {
        d.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let mut any = false;
    for c in list("counters") {
        any = true;
        let _ = writeln!(
            o,
            "counter   {} {}: {} -> {} ({:+}) {}",
            s(&c, "asset"),
            s(&c, "point"),
            s(&c, "from"),
            s(&c, "now"),
            c["delta"].as_f64().unwrap_or(0.0),
            c["unit"].as_str().unwrap_or("")
        );
    }
    for (k, label) in [
        ("work_orders_opened", "opened "),
        ("work_orders_cleared", "cleared"),
    ] {
        for w in list(k) {
            any = true;
            let _ = writeln!(
                o,
                "{label}   {} work order {} ({}, {}): {}",
                s(&w, "asset"),
                s(&w, "id"),
                s(&w, "rule"),
                s(&w, "priority"),
                s(&w, "title")
            );
        }
    }
    for a in list("alarms_changed") {
        any = true;
        let _ = writeln!(
            o,
            "alarm     {} {}: {} -> {}",
            s(&a, "asset"),
            s(&a, "point"),
            s(&a, "from"),
            s(&a, "now")
        );
    }
    for p in list("out_of_range") {
        any = true;
        let _ = writeln!(
            o,
            "range     {} {}: {} outside {} .. {} {}",
            s(&p, "asset"),
            s(&p, "point"),
            s(&p, "now"),
            s(&p, "min"),
            s(&p, "max"),
            p["unit"].as_str().unwrap_or("")
        );
    }
    for (k, label) in [("assets_added", "added  "), ("assets_gone", "gone   ")] {
        for a in list(k) {
            any = true;
            let _ = writeln!(o, "{label}   asset {}", a.as_str().unwrap_or(""));
        }
    }
    if !any {
        o.push_str("no changes\n");
    }
    o
}

fn print(a: &HandoverArgs, v: &Value, text: impl FnOnce(&Value) -> String) -> anyhow::Result<()> {
    if a.json {
        println!("{}", serde_json::to_string_pretty(v)?);
    } else {
        print!("{}", text(v));
    }
    Ok(())
}

pub async fn run(a: HandoverArgs) -> anyhow::Result<()> {
    let t = client::target(a.config.clone(), a.url.as_deref(), a.token_file.clone())?;
    match &a.command {
        HandoverCommand::Record { building, by, note } => {
            let v = call(
                &t,
                Method::POST,
                "/api/v1/handovers",
                Some(json!({ "building": building, "by": by, "note": note })),
            )
            .await?;
            print(&a, &v, |v| {
                format!(
                    "handover record {} of building {}: {} assets, recorded {}\nsha256 {}\n",
                    s(v, "id"),
                    s(&v["record"], "building"),
                    v["record"]["assets"].as_array().map_or(0, Vec::len),
                    s(&v["record"], "recorded_at"),
                    s(v, "sha256")
                )
            })
        }
        HandoverCommand::List => {
            let v = call(&t, Method::GET, "/api/v1/handovers", None).await?;
            print(&a, &v, |v| {
                table(v.as_array().map(Vec::as_slice).unwrap_or(&[]))
            })
        }
        HandoverCommand::Show { id, format, out } => {
            let path = format!("/api/v1/handovers/{id}?format={format}");
            let body = call_text(&t, Method::GET, &path, None, Duration::from_secs(30)).await?;
            let body = if format == "json" {
                let v: Value = serde_json::from_str(&body)
                    .with_context(|| format!("the daemon's answer is not JSON: {body}"))?;
                serde_json::to_string_pretty(&v)? + "\n"
            } else {
                body
            };
            match out {
                Some(f) => std::fs::write(f, &body)
                    .with_context(|| format!("cannot write {}", f.display()))?,
                None => print!("{body}"),
            }
            // Whatever the format, a record that no longer verifies is an error.
            let v = call(&t, Method::GET, &format!("/api/v1/handovers/{id}"), None).await?;
            if v["verified"] != true {
                bail!(
                    "handover record {id} does not verify: its text no longer has the SHA-256 {} stored with it",
                    s(&v, "sha256")
                );
            }
            Ok(())
        }
        HandoverCommand::Diff { id } => {
            let v = call(
                &t,
                Method::GET,
                &format!("/api/v1/handovers/{id}/diff"),
                None,
            )
            .await?;
            print(&a, &v, diff_text)
        }
    }
}
