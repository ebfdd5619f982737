//! Work-order and outbox routes.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{ApiError, ApiState, authorize};
use crate::metrics_text::{Kind, MetricsText};
use crate::rules::types::Priority;
use crate::workorder::handle::StoreHandle;
use crate::workorder::outbox::{DeliveryState, OutboxRow};
use crate::workorder::store::{ListFilter, StoreError};
use crate::workorder::types::{Status, WorkOrder, WorkOrderEvent};

/// What the work-order routes need: the store, and where lifecycle events made through the API
/// go (telemetry annotations, meter baselines).
#[derive(Clone)]
pub struct WorkOrderApi {
    pub store: StoreHandle,
    pub events: mpsc::UnboundedSender<Vec<WorkOrderEvent>>,
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match e {
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            StoreError::Lifecycle { .. } => StatusCode::CONFLICT,
            StoreError::NoteRequired => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

impl WorkOrderApi {
    /// Work-order and outbox metrics for /metrics.
    pub async fn metrics(&self, out: &mut MetricsText) {
        out.family(
            "facilityd_work_orders_open",
            Kind::Gauge,
            "Work orders not yet resolved, by priority.",
        );
        let counts = self
            .store
            .unresolved_by_priority()
            .await
            .unwrap_or_default();
        for p in [
            Priority::Urgent,
            Priority::High,
            Priority::Normal,
            Priority::Low,
        ] {
            let n = counts.iter().find(|(q, _)| *q == p).map_or(0, |(_, n)| *n);
            out.sample("facilityd_work_orders_open", &[("priority", p.as_str())], n);
        }
        out.family(
            "facilityd_outbox_deliveries",
            Kind::Gauge,
            "Work-order events waiting for delivery (pending) or held as dead letters, per notifier.",
        );
        for (notifier, state, n) in self.store.outbox_backlog().await.unwrap_or_default() {
            // A quote in a notifier's id has always been shown as an apostrophe.
            out.sample(
                "facilityd_outbox_deliveries",
                &[
                    ("notifier", &notifier.replace('"', "'")),
                    ("state", state.as_str()),
                ],
                n,
            );
        }
    }

    pub async fn unresolved_counts_by_asset(&self) -> Result<HashMap<String, u64>, ApiError> {
        Ok(self
            .store
            .call(|s| s.unresolved_counts_by_asset())
            .await?
            .into_iter()
            .collect())
    }
}

pub fn routes(r: axum::Router<ApiState>) -> axum::Router<ApiState> {
    r.route("/api/v1/work-orders", get(list))
        .route("/api/v1/work-orders/{id}", get(one))
        .route("/api/v1/work-orders/{id}/events", get(events))
        .route("/api/v1/work-orders/{id}/ack", post(ack))
        .route("/api/v1/work-orders/{id}/resolve", post(resolve))
        .route("/api/v1/work-orders/{id}/close", post(close))
        .route("/api/v1/outbox", get(outbox))
        .route("/api/v1/outbox/{id}/retry", post(retry))
}

/// The work-order store's handles, or 503 before it is open (every route over the store).
pub(super) fn api(s: &ApiState) -> Result<&WorkOrderApi, ApiError> {
    s.work_orders.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the work-order store is not open",
        )
    })
}

fn parse_id(raw: &str) -> Result<i64, ApiError> {
    parse_record_id(raw, "work-order")
}

/// A record id from a path: a positive integer, or 400 naming `what` it should have been.
pub(super) fn parse_record_id(raw: &str, what: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().ok().filter(|i| *i > 0).ok_or_else(|| {
        ApiError::bad_request(format!(
            "expected a {what} id (a positive integer), found {raw:?}"
        ))
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    asset: Option<String>,
    priority: Option<String>,
    limit: Option<usize>,
}

fn parse_status(s: &str) -> Result<Vec<Status>, ApiError> {
    s.split(',')
        .map(|x| match x.trim() {
            "open" => Ok(vec![Status::Open]),
            "acknowledged" => Ok(vec![Status::Acknowledged]),
            "resolved" => Ok(vec![Status::Resolved]),
            "closed" => Ok(vec![Status::Closed]),
            "unresolved" => Ok(vec![Status::Open, Status::Acknowledged]),
            other => Err(ApiError::bad_request(format!("unknown status {other:?}: expected open, acknowledged, resolved, closed or unresolved"))),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(|v| v.concat())
}

fn parse_priority(s: &str) -> Result<Priority, ApiError> {
    match s {
        "urgent" => Ok(Priority::Urgent),
        "high" => Ok(Priority::High),
        "normal" => Ok(Priority::Normal),
        "low" => Ok(Priority::Low),
        other => Err(ApiError::bad_request(format!(
            "unknown priority {other:?}: expected urgent, high, normal or low"
        ))),
    }
}

async fn list(
    State(s): State<ApiState>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<WorkOrder>>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let filter = ListFilter {
        status: q.status.as_deref().map(parse_status).transpose()?,
        asset: q.asset,
        priority: q.priority.as_deref().map(parse_priority).transpose()?,
        limit: Some(q.limit.unwrap_or(1000).min(10_000)),
    };
    Ok(Json(api(&s)?.store.list(filter).await?))
}

async fn one(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<WorkOrder>, ApiError> {
    let id = parse_id(&id)?;
    api(&s)?
        .store
        .get(id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("work order {id} not found")))
}

async fn events(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<WorkOrderEvent>>, ApiError> {
    let id = parse_id(&id)?;
    let w = api(&s)?;
    if w.store.get(id).await?.is_none() {
        return Err(ApiError::not_found(format!("work order {id} not found")));
    }
    // A flapping work order gathers many `updated` events: the newest 1000.
    let mut events = w.store.events(id).await?;
    let excess = events.len().saturating_sub(1000);
    events.drain(..excess);
    Ok(Json(events))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ChangeBody {
    by: Option<String>,
    note: Option<String>,
}

fn body(raw: &axum::body::Bytes) -> Result<ChangeBody, ApiError> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(ChangeBody::default());
    }
    let b: ChangeBody = serde_json::from_slice(raw).map_err(|e| {
        ApiError::bad_request(format!(
            "expected a JSON body like {{\"by\": \"name\", \"note\": \"text\"}}: {e}"
        ))
    })?;
    for (k, v) in [("by", &b.by), ("note", &b.note)] {
        if v.as_ref().is_some_and(|v| v.len() > 4096) {
            return Err(ApiError::bad_request(format!(
                "`{k}` is longer than 4096 bytes"
            )));
        }
    }
    Ok(b)
}

enum Verb {
    Ack,
    Resolve,
    Close,
}

async fn change(
    s: ApiState,
    headers: HeaderMap,
    id: String,
    raw: axum::body::Bytes,
    verb: Verb,
) -> Result<Json<WorkOrder>, ApiError> {
    authorize(&s, &headers)?;
    let id = parse_id(&id)?;
    let b = body(&raw)?;
    let w = api(&s)?;
    let now = chrono::Utc::now();
    let (wo, events) = match verb {
        Verb::Ack => w.store.acknowledge(id, b.by, b.note, now).await?,
        Verb::Resolve => w.store.resolve(id, b.by, b.note, now).await?,
        Verb::Close => w.store.close(id, b.by, b.note, now).await?,
    };
    let _ = w.events.send(events);
    Ok(Json(wo))
}

async fn ack(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    raw: axum::body::Bytes,
) -> Result<Json<WorkOrder>, ApiError> {
    change(s, headers, id, raw, Verb::Ack).await
}

async fn resolve(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    raw: axum::body::Bytes,
) -> Result<Json<WorkOrder>, ApiError> {
    change(s, headers, id, raw, Verb::Resolve).await
}

async fn close(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    raw: axum::body::Bytes,
) -> Result<Json<WorkOrder>, ApiError> {
    change(s, headers, id, raw, Verb::Close).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutboxQuery {
    state: Option<String>,
    limit: Option<usize>,
}

async fn outbox(
    State(s): State<ApiState>,
    q: Result<Query<OutboxQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<OutboxRow>>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let state = match q.state.as_deref() {
        None => None,
        Some(x) => Some(x.parse::<DeliveryState>().map_err(|_| {
            ApiError::bad_request(format!(
                "unknown state {x:?}: expected pending, delivered or dead"
            ))
        })?),
    };
    Ok(Json(
        api(&s)?
            .store
            .outbox(state, q.limit.unwrap_or(1000).min(10_000))
            .await?,
    ))
}

async fn retry(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&s, &headers)?;
    let id = parse_id(&id)?;
    if api(&s)?.store.retry_dead(id).await? {
        Ok(Json(
            serde_json::json!({ "outbox_id": id, "state": "pending" }),
        ))
    } else {
        Err(ApiError::not_found(format!(
            "outbox entry {id} has no dead delivery"
        )))
    }
}
