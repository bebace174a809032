//! Plugins: list, reload, enable and disable, breaker reset, dry runs.

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, ApiState, ErrorBody};
use crate::model;
use crate::registry::PluginStatus;
use crate::store::FailureRecord;

/// Every plugin.
#[derive(Serialize, ToSchema)]
pub(super) struct PluginList {
    plugins: Vec<PluginStatus>,
}

/// One plugin and its recent sandbox failures.
#[derive(Serialize, ToSchema)]
pub(super) struct PluginDetail {
    plugin: PluginStatus,
    recent_failures: Vec<FailureRecord>,
}

/// A plugin after a change.
#[derive(Serialize, ToSchema)]
pub(super) struct PluginChanged {
    plugin: Option<PluginStatus>,
}

/// What a rule decided in a dry run.
#[derive(Serialize, ToSchema)]
pub(super) struct DryRun {
    /// The decision (the contract's `decision` record, as JSON).
    #[schema(value_type = Object)]
    decision: serde_json::Value,
}

/// Every plugin in the directory: kind, version, enabled, loaded or why
/// not, breaker, grants, limits.
#[utoipa::path(get, path = "/api/v1/plugins", tag = "plugins",
    responses((status = 200, body = PluginList)))]
pub(super) async fn list_plugins(State(s): State<ApiState>) -> Json<PluginList> {
    Json(PluginList {
        plugins: s.registry.list(),
    })
}

/// One plugin with its recent sandbox failures.
#[utoipa::path(get, path = "/api/v1/plugins/{name}", tag = "plugins",
    params(("name" = String, Path, description = "the plugin's name (file stem)")),
    responses((status = 200, body = PluginDetail), (status = 404, body = ErrorBody)))]
pub(super) async fn plugin(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<PluginDetail>, ApiError> {
    let plugin = s
        .registry
        .status(&name)
        .ok_or_else(|| ApiError::NotFound(format!("no plugin named `{name}`")))?;
    let recent_failures = s.registry.failures(&name, 20).await?;
    Ok(Json(PluginDetail {
        plugin,
        recent_failures,
    }))
}

/// Rescan the plugin directory now.
#[utoipa::path(post, path = "/api/v1/plugins/reload", tag = "plugins",
    responses((status = 200, body = PluginList)))]
pub(super) async fn reload(State(s): State<ApiState>) -> Result<Json<PluginList>, ApiError> {
    s.registry.reload().await?;
    Ok(Json(PluginList {
        plugins: s.registry.list(),
    }))
}

/// Let a plugin be invoked again (persisted in the store).
#[utoipa::path(post, path = "/api/v1/plugins/{name}/enable", tag = "plugins",
    params(("name" = String, Path, description = "the plugin's name")),
    responses((status = 200, body = PluginChanged), (status = 404, body = ErrorBody)))]
pub(super) async fn enable(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<PluginChanged>, ApiError> {
    set_enabled(s, name, true).await
}

/// Stop invoking a plugin (persisted in the store).
#[utoipa::path(post, path = "/api/v1/plugins/{name}/disable", tag = "plugins",
    params(("name" = String, Path, description = "the plugin's name")),
    responses((status = 200, body = PluginChanged), (status = 404, body = ErrorBody)))]
pub(super) async fn disable(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<PluginChanged>, ApiError> {
    set_enabled(s, name, false).await
}

async fn set_enabled(
    s: ApiState,
    name: String,
    enabled: bool,
) -> Result<Json<PluginChanged>, ApiError> {
    s.registry.set_enabled(&name, enabled).await?;
    Ok(Json(PluginChanged {
        plugin: s.registry.status(&name),
    }))
}

/// Close a plugin's circuit breaker.
#[utoipa::path(post, path = "/api/v1/plugins/{name}/breaker/reset", tag = "plugins",
    params(("name" = String, Path, description = "the plugin's name")),
    responses((status = 200, body = PluginChanged), (status = 404, body = ErrorBody)))]
pub(super) async fn reset_breaker(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<PluginChanged>, ApiError> {
    s.registry.reset_breaker(&name)?;
    Ok(Json(PluginChanged {
        plugin: s.registry.status(&name),
    }))
}

/// Run a rule on an event without keeping its state changes: how an
/// operator tries a rule before enabling it (disabled rules too).
#[utoipa::path(post, path = "/api/v1/plugins/{name}/dry-run", tag = "plugins",
    params(("name" = String, Path, description = "the rule's name")),
    request_body(content = model::Event, description = "the event envelope"),
    responses((status = 200, body = DryRun), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn dry_run(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<DryRun>, ApiError> {
    let event: model::Event = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid event: {e}")))?;
    let decision = s.registry.dry_run(&name, &event).await?;
    Ok(Json(DryRun {
        decision: serde_json::to_value(decision).expect("a decision serialises"),
    }))
}
