//! Plugins: list, reload, enable and disable, breaker reset, dry runs.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::json;

use super::{ApiError, ApiState};
use crate::model;

pub(super) async fn list_plugins(State(s): State<ApiState>) -> Json<serde_json::Value> {
    Json(json!({ "plugins": s.registry.list() }))
}

pub(super) async fn plugin(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let status = s
        .registry
        .status(&name)
        .ok_or_else(|| ApiError::NotFound(format!("no plugin named `{name}`")))?;
    let failures = s.registry.failures(&name, 20).await?;
    Ok(Json(
        json!({ "plugin": status, "recent_failures": failures }),
    ))
}

pub(super) async fn reload(State(s): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    s.registry.reload().await?;
    Ok(Json(json!({ "plugins": s.registry.list() })))
}

pub(super) async fn enable(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    set_enabled(s, name, true).await
}

pub(super) async fn disable(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    set_enabled(s, name, false).await
}

pub(super) async fn set_enabled(
    s: ApiState,
    name: String,
    enabled: bool,
) -> Result<Json<serde_json::Value>, ApiError> {
    s.registry.set_enabled(&name, enabled).await?;
    Ok(Json(json!({ "plugin": s.registry.status(&name) })))
}

pub(super) async fn reset_breaker(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    s.registry.reset_breaker(&name)?;
    Ok(Json(json!({ "plugin": s.registry.status(&name) })))
}

/// Run a rule on an event without keeping its state changes: how an
/// operator tries a rule before enabling it.
pub(super) async fn dry_run(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let event: model::Event = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid event: {e}")))?;
    // Dry runs are for trying rules out, including disabled ones.
    let decision = s.registry.dry_run(&name, &event).await?;
    Ok(Json(json!({ "decision": decision })))
}
