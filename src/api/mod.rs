//! The HTTP API: health, readiness, Prometheus metrics, assets and latest values,
//! work orders and the delivery outbox.
//!
//! Listens on loopback by default and refuses another address without a token. POST routes
//! need `Authorization: Bearer <token>` (401 without a valid one, 403 when no token is
//! configured). Bad requests get 4xx JSON errors `{"error": "...", "status": N}`.

pub mod metrics;
pub mod report;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

use crate::device::latest::LatestValues;
use crate::metrics_text::MetricsText;
use crate::model::Value;
use crate::mqtt::MqttStats;
use crate::rule_loop::RuleLoopStats;
use crate::settings::current::{CurrentDevices, ReloadStats};
use crate::telemetry::log::{LogStats, TelemetryLog};
use crate::telemetry::pipeline::{GatewayFaults, TelemetryStats};

/// A JSON error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, what)
    }
    pub fn bad_request(what: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, what)
    }
    pub fn internal(what: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, what)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "error": self.message, "status": self.status.as_u16() })),
        )
            .into_response()
    }
}

/// What the API reads of the running gateway: handles to the state it shows, nothing that
/// could change how the gateway runs.
#[derive(Clone)]
pub struct GatewayView {
    /// The devices in force, their slots and counters (a reload changes them).
    pub current: CurrentDevices,
    pub latest: Arc<LatestValues>,
    pub telemetry: Arc<TelemetryStats>,
    pub log_stats: Arc<LogStats>,
    /// The telemetry log once it is open (the history route reads it).
    pub log: Arc<OnceLock<Arc<TelemetryLog>>>,
    pub faults: Arc<GatewayFaults>,
    pub maintenance: Arc<RuleLoopStats>,
    pub reloads: Arc<ReloadStats>,
    /// The MQTT client's counters, with `[mqtt]` configured.
    pub mqtt: Option<Arc<MqttStats>>,
    /// Where the dead-letter files are.
    pub state_dir: PathBuf,
    /// The availability history's flusher (a report asks it to write the last seconds first);
    /// set once the gateway runs.
    pub availability: Option<crate::availability::AvailabilityHandle>,
}

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct ApiState {
    pub gw: GatewayView,
    /// The bearer token for POST routes, if configured.
    pub token: Option<Arc<str>>,
    /// Config loaded and stores open.
    pub ready: Arc<AtomicBool>,
    pub work_orders: Option<workorders::WorkOrderApi>,
}

pub mod handovers;
pub mod workorders;

/// The API would listen beyond loopback without a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "http.listen = {addr} is not a loopback address: set http.api_token_file first (the API would be open to the network)"
)]
pub struct OpenToNetwork {
    pub addr: SocketAddr,
}

/// Checks the address and token rule: loopback, or a token.
pub fn check_listen(addr: &SocketAddr, token: Option<&str>) -> Result<(), OpenToNetwork> {
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(OpenToNetwork { addr: *addr });
    }
    Ok(())
}

/// Compares a presented bearer token with the configured one in constant time.
pub fn authorize(state: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &state.token else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "no API token is configured (http.api_token_file): write routes are disabled",
        ));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let (a, b) = (presented.as_bytes(), token.as_bytes());
    let mut diff = a.len() ^ b.len();
    for (i, x) in b.iter().enumerate() {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ x);
    }
    if diff == 0 {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token",
        ))
    }
}

pub fn router(state: ApiState) -> axum::Router {
    let mut r = axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_route))
        .route("/api/v1/assets", get(assets))
        .route("/api/v1/assets/{id}/points", get(points))
        .route("/api/v1/assets/{id}/history", get(history));
    r = workorders::routes(r);
    r = report::routes(r);
    r = handovers::routes(r);
    r.fallback(|| async { ApiError::not_found("no such route") })
        .with_state(state)
}

async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(s): State<ApiState>) -> Response {
    let t = &s.gw.telemetry;
    let l = &s.gw.log_stats;
    let oldest =
        s.gw.log
            .get()
            .and_then(|log| log.oldest_backlog_age())
            .map_or(0.0, |d| d.as_secs_f64());
    let detail = json!({
        "config": true,
        "stores": s.ready.load(Relaxed),
        "telemetry_log": {
            "bytes": l.bytes.load(Relaxed),
            "backlog_bytes": l.backlog_bytes.load(Relaxed),
            "backlog_lines": l.backlog_lines.load(Relaxed),
            "backlog_oldest_seconds": oldest,
            "forward_rate_lines_per_second": l.forward_rate(),
            "disk_failing": l.disk_failing.load(Relaxed) == 1,
            "writer_running": l.writer_running.load(Relaxed) == 1,
        },
        "database_refused": s.gw.faults.database_refused(),
        "database_unexpected": s.gw.faults.database_unexpected(),
        "telemetry_write_errors": t.write_errors.load(Relaxed),
    });
    // Ready: config loaded, stores open, and the telemetry log taking batches.
    if s.ready.load(Relaxed) && l.writer_running.load(Relaxed) == 1 {
        (
            StatusCode::OK,
            Json(json!({ "status": "ready", "detail": detail })),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "starting", "detail": detail })),
        )
            .into_response()
    }
}

async fn metrics_route(State(s): State<ApiState>) -> Response {
    let mut extra = MetricsText::new();
    if let Some(w) = &s.work_orders {
        w.metrics(&mut extra).await;
    }
    if let Some(m) = &s.gw.mqtt {
        m.render(&mut extra);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::render(&s.gw, extra.as_str()),
    )
        .into_response()
}

fn ns_to_time(ns: i64) -> Option<DateTime<Utc>> {
    (ns > 0).then(|| DateTime::from_timestamp_nanos(ns))
}

fn json_value(v: &Value) -> serde_json::Value {
    match v {
        Value::Float(f) => json!(f),
        Value::Int(i) => json!(i),
        Value::Bool(b) => json!(b),
        Value::Str(s) => json!(s),
    }
}

#[derive(Serialize)]
struct AssetView {
    id: String,
    name: Option<String>,
    profile: String,
    device_type: &'static str,
    site: Option<String>,
    building: Option<String>,
    floor: Option<String>,
    online: Option<bool>,
    last_good_sample_at: Option<DateTime<Utc>>,
    open_work_orders: Option<u64>,
}

async fn assets(State(s): State<ApiState>) -> Result<Json<Vec<AssetView>>, ApiError> {
    let open = match &s.work_orders {
        Some(w) => Some(w.unresolved_counts_by_asset().await?),
        None => None,
    };
    // The devices in force (a reload changes them).
    let set = s.gw.current.get();
    let mut out = Vec::with_capacity(set.settings.devices.len());
    for (i, d) in set.settings.devices.iter().enumerate() {
        let latest = set.slots.get(i).and_then(|&slot| s.gw.latest.device(slot));
        let Some(stats) = set.stats.get(i) else {
            continue;
        };
        out.push(AssetView {
            id: d.id.to_string(),
            name: d.name.clone(),
            profile: d.profile.name.clone(),
            device_type: d.profile.device_type.as_str(),
            site: d.site.clone(),
            building: d.building.clone(),
            floor: d.floor.clone(),
            online: latest.and_then(|l| l.online),
            last_good_sample_at: ns_to_time(stats.last_good_ns.load(Relaxed)),
            open_work_orders: open.as_ref().map(|m| m.get(&*d.id).copied().unwrap_or(0)),
        });
    }
    Ok(Json(out))
}

async fn points(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let set = s.gw.current.get();
    let Some((i, d)) = set.find(&id) else {
        return Err(ApiError::not_found(format!("no asset {id:?}")));
    };
    let latest = set
        .slots
        .get(i)
        .and_then(|&slot| s.gw.latest.device(slot))
        .unwrap_or_default();
    let points: Vec<serde_json::Value> = d
        .profile
        .points
        .iter()
        .enumerate()
        .map(|(pi, p)| {
            let (value, at) = match latest.points.get(pi).cloned().flatten() {
                Some((v, ts)) => (json_value(&v), ns_to_time(ts).map(|t| json!(t)).unwrap_or(serde_json::Value::Null)),
                None => (serde_json::Value::Null, serde_json::Value::Null),
            };
            json!({ "name": &*p.name, "kind": format!("{:?}", p.kind).to_lowercase(), "unit": p.unit, "value": value, "at": at })
        })
        .collect();
    Ok(Json(
        json!({ "asset": &*d.id, "online": latest.online, "points": points }),
    ))
}

#[derive(serde::Deserialize)]
struct HistoryQuery {
    point: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
}

/// Default and largest number of samples one history answer carries.
const HISTORY_LIMIT: usize = 10_000;
const HISTORY_MAX: usize = 100_000;

/// `from`/`to`: RFC 3339, or a duration back from now (`15m`, `2h`, `7d`).
fn parse_time(v: &str, key: &str) -> Result<i64, ApiError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return t
            .timestamp_nanos_opt()
            .ok_or_else(|| ApiError::bad_request(format!("{key}: out of range")));
    }
    if let Ok(d) = humantime::parse_duration(v) {
        let ago = chrono::Duration::from_std(d)
            .map_err(|_| ApiError::bad_request(format!("{key}: out of range")))?;
        return Utc::now()
            .checked_sub_signed(ago)
            .and_then(|t| t.timestamp_nanos_opt())
            .ok_or_else(|| ApiError::bad_request(format!("{key}: out of range")));
    }
    Err(ApiError::bad_request(format!(
        "{key}: expected an RFC 3339 time (2026-11-27T08:00:00Z) or a duration back from now (15m, 2h, 7d), found {v:?}"
    )))
}

async fn history(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<HistoryQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let set = s.gw.current.get();
    let Some((_, device)) = set.find(&id) else {
        return Err(ApiError::not_found(format!("no asset {id:?}")));
    };
    if let Some(p) = &q.point
        && !device.profile.points.iter().any(|pt| *pt.name == **p)
        && !["online", "poll_ms", "errors"].contains(&p.as_str())
    {
        return Err(ApiError::not_found(format!(
            "asset {id:?} has no point {p:?}"
        )));
    }
    let to = match &q.to {
        Some(v) => parse_time(v, "to")?,
        None => crate::model::now_ns(),
    };
    let from = match &q.from {
        Some(v) => parse_time(v, "from")?,
        None => to.saturating_sub(3_600_000_000_000),
    };
    if from > to {
        return Err(ApiError::bad_request("from is after to"));
    }
    let limit = q.limit.unwrap_or(HISTORY_LIMIT).clamp(1, HISTORY_MAX);
    let Some(log) = s.gw.log.get().cloned() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the telemetry log is not open yet",
        ));
    };
    let asset = id.clone();
    let point = q.point.clone();
    let (samples, truncated) =
        tokio::task::spawn_blocking(move || log.history(&asset, point.as_deref(), from, to, limit))
            .await
            .map_err(|e| ApiError::internal(format!("history: {e}")))?
            .map_err(|e| ApiError::internal(format!("cannot read the telemetry log: {e}")))?;
    let samples: Vec<serde_json::Value> = samples
        .into_iter()
        .map(|h| {
            json!({
                "time": DateTime::from_timestamp_nanos(h.time_ns).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                "point": h.point,
                "value": h.value,
            })
        })
        .collect();
    Ok(Json(json!({
        "asset": id,
        "point": q.point,
        "from": DateTime::from_timestamp_nanos(from).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        "to": DateTime::from_timestamp_nanos(to).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        "samples": samples,
        "truncated": truncated,
    })))
}
