//! Handover routes: record a building's baseline (token), list, show (JSON, HTML, CSV) and
//! diff against the state now. No route changes or deletes a record.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::workorders::api as store;
use super::{ApiError, ApiState, authorize, ns_to_time};
use crate::owners::handover::render::{self, Sealed};
use crate::owners::handover::{
    self, AssetInput, HandoverRecord, RANGE_WINDOW_HOURS, Range, RecordMeta,
};
use crate::profile::PointKind;
use crate::workorder::handover::{NewHandover, StoredHandover};

pub fn routes(r: axum::Router<ApiState>) -> axum::Router<ApiState> {
    r.route("/api/v1/handovers", get(list).post(record))
        .route("/api/v1/handovers/{id}", get(show))
        .route("/api/v1/handovers/{id}/diff", get(diff))
}

fn parse_id(raw: &str) -> Result<i64, ApiError> {
    super::workorders::parse_record_id(raw, "handover")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordBody {
    building: String,
    by: String,
    note: Option<String>,
}

/// Samples read per gauge for its range (the oldest of the window first).
const RANGE_SAMPLES: usize = 100_000;

/// The state of every asset of `building` now, as the record's builder takes it. With
/// `ranges`, each gauge's min and max over the window before `at` from the telemetry log.
async fn gather(
    s: &ApiState,
    building: &str,
    at: DateTime<Utc>,
    ranges: bool,
) -> Result<HandoverRecord, ApiError> {
    let set = s.gw.current.get();
    let w = store(s)?;
    let log = s.gw.log.get().cloned();
    let from_ns = (at - chrono::Duration::hours(RANGE_WINDOW_HOURS))
        .timestamp_nanos_opt()
        .unwrap_or(0);
    let to_ns = at.timestamp_nanos_opt().unwrap_or(i64::MAX);
    let mut inputs = Vec::new();
    for (i, d) in set.settings.devices.iter().enumerate() {
        if d.building.as_deref() != Some(building) {
            continue;
        }
        let latest = set
            .slots
            .get(i)
            .and_then(|&slot| s.gw.latest.device(slot))
            .unwrap_or_default();
        let last_good = set
            .stats
            .get(i)
            .and_then(|st| ns_to_time(st.last_good_ns.load(Relaxed)));
        let asset = d.id.to_string();
        let open = w
            .store
            .call(move |st| st.unresolved_for_asset(&asset))
            .await?;
        let mut r: BTreeMap<String, Range> = BTreeMap::new();
        if ranges && let Some(log) = &log {
            let gauges: Vec<String> = d
                .profile
                .points
                .iter()
                .filter(|p| p.kind == PointKind::Gauge)
                .map(|p| p.name.to_string())
                .collect();
            let (log, asset) = (log.clone(), d.id.to_string());
            r = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
                let mut out = BTreeMap::new();
                for g in gauges {
                    let (samples, _) =
                        log.history(&asset, Some(&g), from_ns, to_ns, RANGE_SAMPLES)?;
                    let vals: Vec<f64> = samples.iter().filter_map(|h| h.value.as_f64()).collect();
                    if let (Some(lo), Some(hi)) = (
                        vals.iter().copied().reduce(f64::min),
                        vals.iter().copied().reduce(f64::max),
                    ) {
                        out.insert(g, (lo, hi, vals.len() as u64));
                    }
                }
                Ok(out)
            })
            .await
            .map_err(|e| ApiError::internal(format!("ranges: {e}")))?
            .map_err(|e| ApiError::internal(format!("cannot read the telemetry log: {e}")))?;
        }
        inputs.push((d.clone(), latest, last_good, r, open));
    }
    if inputs.is_empty() {
        let mut known: Vec<&str> = set
            .settings
            .devices
            .iter()
            .filter_map(|d| d.building.as_deref())
            .collect();
        known.sort();
        known.dedup();
        return Err(ApiError::not_found(format!(
            "no asset is configured in building {building:?} (buildings with assets: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )));
    }
    let inputs: Vec<AssetInput<'_>> = inputs
        .iter()
        .map(|(d, latest, last_good, ranges, open)| AssetInput {
            device: d,
            latest: latest.clone(),
            last_good: *last_good,
            ranges: ranges.clone(),
            open: open.clone(),
        })
        .collect();
    let g = &set.settings.gateway;
    let meta = RecordMeta {
        building: building.to_string(),
        at,
        timezone: g.timezone.clone(),
        gateway_id: g.id.clone(),
        site: g.site.clone(),
        recorded_by: String::new(),
        note: None,
    };
    Ok(handover::build(&meta, &inputs))
}

fn summary(h: &StoredHandover) -> Value {
    json!({
        "id": h.id,
        "building": h.building,
        "recorded_at": h.recorded_at,
        "by": h.recorded_by,
        "note": h.note,
        "sha256": h.sha256,
        "verified": handover::verify(&h.record, &h.sha256),
    })
}

async fn record(
    State(s): State<ApiState>,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorize(&s, &headers)?;
    let b: RecordBody = serde_json::from_slice(&raw).map_err(|e| {
        ApiError::bad_request(format!(
            "expected a JSON body like {{\"building\": \"A\", \"by\": \"name\", \"note\": \"text\"}}: {e}"
        ))
    })?;
    let building = b.building.trim();
    let by = b.by.trim();
    if building.is_empty() || by.is_empty() {
        return Err(ApiError::bad_request(
            "`building` and `by` must not be empty",
        ));
    }
    for (k, v) in [
        ("building", building),
        ("by", by),
        ("note", b.note.as_deref().unwrap_or("")),
    ] {
        if v.len() > 4096 {
            return Err(ApiError::bad_request(format!(
                "`{k}` is longer than 4096 bytes"
            )));
        }
    }
    let mut rec = gather(&s, building, Utc::now(), true).await?;
    rec.recorded_by = by.to_string();
    rec.note = b.note.clone().filter(|n| !n.trim().is_empty());
    let (text, sha) =
        handover::seal(&rec).map_err(|e| ApiError::internal(format!("encoding: {e}")))?;
    let (building, at, by, note) = (
        rec.building.clone(),
        rec.recorded_at.clone(),
        rec.recorded_by.clone(),
        rec.note.clone(),
    );
    let (t2, s2) = (text.clone(), sha.clone());
    let id = store(&s)?
        .store
        .call(move |st| {
            st.insert_handover(&NewHandover {
                building: &building,
                recorded_at: &at,
                recorded_by: &by,
                note: note.as_deref(),
                record: &t2,
                sha256: &s2,
            })
        })
        .await?;
    let sealed = Sealed {
        id,
        record: &rec,
        sha256: &sha,
        verified: handover::verify(&text, &sha),
    };
    Ok((StatusCode::CREATED, Json(render::json(&sealed))).into_response())
}

async fn list(State(s): State<ApiState>) -> Result<Json<Vec<Value>>, ApiError> {
    let all = store(&s)?.store.call(|st| st.handovers()).await?;
    Ok(Json(all.iter().map(summary).collect()))
}

async fn load(s: &ApiState, id: &str) -> Result<(StoredHandover, HandoverRecord, bool), ApiError> {
    let id = parse_id(id)?;
    let h = store(s)?
        .store
        .call(move |st| st.handover(id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("handover record {id} not found")))?;
    let verified = handover::verify(&h.record, &h.sha256);
    let rec: HandoverRecord = serde_json::from_str(&h.record).map_err(|e| {
        ApiError::internal(format!(
            "handover record {id} cannot be read (hash {}): {e}",
            if verified { "verified" } else { "MISMATCH" }
        ))
    })?;
    Ok((h, rec, verified))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShowQuery {
    format: Option<String>,
}

async fn show(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    q: Result<Query<ShowQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (h, rec, verified) = load(&s, &id).await?;
    let sealed = Sealed {
        id: h.id,
        record: &rec,
        sha256: &h.sha256,
        verified,
    };
    Ok(match q.format.as_deref().unwrap_or("json") {
        "json" => Json(render::json(&sealed)).into_response(),
        "html" => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            render::html(&sealed),
        )
            .into_response(),
        "csv" => (
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            render::csv(&sealed),
        )
            .into_response(),
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown format {other:?}: expected json, html or csv"
            )));
        }
    })
}

async fn diff(State(s): State<ApiState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let (h, then, verified) = load(&s, &id).await?;
    let now = gather(&s, &then.building, Utc::now(), false).await;
    let now = match now {
        Ok(n) => n,
        // Every asset of the building gone: the diff says so.
        Err(e) if e.status == StatusCode::NOT_FOUND => HandoverRecord {
            assets: Vec::new(),
            recorded_at: handover::rfc3339(Utc::now()),
            ..then.clone()
        },
        Err(e) => return Err(e),
    };
    let d = handover::diff::diff(&then, &now);
    let mut v = serde_json::to_value(&d).map_err(|e| ApiError::internal(e.to_string()))?;
    if let Value::Object(m) = &mut v {
        m.insert("handover_id".into(), json!(h.id));
        m.insert("building".into(), json!(then.building));
        m.insert("sha256".into(), json!(h.sha256));
        m.insert("verified".into(), json!(verified));
    }
    Ok(Json(v))
}
