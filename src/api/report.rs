//! `GET /api/v1/reports/engineering?from=&to=&building=&format=` (or `month=`): the owners'
//! engineering report, computed on the work-order store's own thread, never on the runtime.

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::{ApiError, ApiState};
use crate::owners::report::load::{ReportRequest, report};
use crate::owners::report::{Format, render};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportQuery {
    month: Option<String>,
    from: Option<String>,
    to: Option<String>,
    building: Option<String>,
    format: Option<Format>,
}

pub fn routes(r: axum::Router<ApiState>) -> axum::Router<ApiState> {
    r.route("/api/v1/reports/engineering", get(engineering))
}

async fn engineering(
    State(s): State<ApiState>,
    q: Result<Query<ReportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let store = super::workorders::api(&s)?.store.clone();
    let settings = s.gw.current.get().settings.clone();
    let req = ReportRequest {
        month: q.month,
        from: q.from,
        to: q.to,
        building: q.building,
    };
    let format = q.format.unwrap_or(Format::Json);
    // The tracker writes every 10 s; a report that ends now includes the last seconds.
    if let Some(avail) = &s.gw.availability
        && let Err(e) = avail.flush().await
    {
        tracing::warn!("report: the availability history was not flushed first: {e}");
    }
    let now = chrono::Utc::now();
    let result = store
        .call(move |st| Ok(report(st, &settings, &req, now)))
        .await?;
    let r = result.map_err(|e| {
        if e.is_bad_request() {
            ApiError::bad_request(e.to_string())
        } else {
            ApiError::internal(e.to_string())
        }
    })?;
    // Rendering a large HTML page is CPU work: off the runtime's one worker.
    let body = tokio::task::spawn_blocking(move || render(&r, format))
        .await
        .map_err(|e| ApiError::internal(format!("rendering the report failed: {e}")))?;
    Ok(([(header::CONTENT_TYPE, format.content_type())], body).into_response())
}
