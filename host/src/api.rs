//! The admin HTTP API. Every `/api/v1` route needs `Authorization: Bearer
//! <token>`; `/healthz` does not. Errors are JSON `{"error": "..."}` with a
//! status code that says whose fault it was; database text never leaks.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::registry::{self, Registry};
use crate::runtime::{self, types};

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The plugin registry.
    pub registry: Arc<Registry>,
    /// The admin bearer token.
    pub token: Arc<SecretString>,
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    let admin = Router::new()
        .route("/plugins", get(list_plugins))
        .route("/plugins/reload", post(reload))
        .route("/plugins/{name}", get(plugin))
        .route("/plugins/{name}/enable", post(enable))
        .route("/plugins/{name}/disable", post(disable))
        .route("/plugins/{name}/breaker/reset", post(reset_breaker))
        .route("/plugins/{name}/dry-run", post(dry_run))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .nest("/api/v1", admin)
        .with_state(state)
}

async fn require_token(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(t)
            if constant_time_eq::constant_time_eq(
                t.as_bytes(),
                state.token.expose_secret().as_bytes(),
            ) =>
        {
            next.run(request).await
        }
        _ => ApiError::Unauthorized.into_response(),
    }
}

/// How a request failed.
#[derive(Debug)]
pub enum ApiError {
    /// Missing or wrong bearer token.
    Unauthorized,
    /// No such plugin.
    NotFound(String),
    /// The request conflicts with the plugin's state (e.g. disabled).
    Conflict(String),
    /// The request itself is wrong.
    BadRequest(String),
    /// The plugin failed the invocation.
    PluginFailed(runtime::Error),
    /// A dependency (store, breaker) is not available right now.
    Unavailable(String),
    /// Our fault; details are in the log, not the response.
    Internal,
}

impl From<registry::Error> for ApiError {
    fn from(e: registry::Error) -> Self {
        match e {
            registry::Error::Plugin(e) => match e {
                runtime::Error::NotFound(_) => ApiError::NotFound(e.to_string()),
                runtime::Error::Disabled(_) => ApiError::Conflict(e.to_string()),
                runtime::Error::WrongKind { .. } => ApiError::BadRequest(e.to_string()),
                runtime::Error::CircuitOpen(_) => ApiError::Unavailable(e.to_string()),
                other => ApiError::PluginFailed(other),
            },
            registry::Error::Store(e) => {
                tracing::error!(error = %e, "store error");
                ApiError::Unavailable("store unavailable".into())
            }
            registry::Error::Dir { .. } => {
                tracing::error!(error = %e, "registry error");
                ApiError::Internal
            }
        }
    }
}

impl From<runtime::Error> for ApiError {
    fn from(e: runtime::Error) -> Self {
        registry::Error::Plugin(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                json!({"error": "missing or invalid bearer token"}),
            ),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, json!({"error": m})),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, json!({"error": m})),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, json!({"error": m})),
            ApiError::PluginFailed(e) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"error": e.to_string(), "kind": e.kind(), "retryable": e.is_retryable()}),
            ),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, json!({"error": m})),
            ApiError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "internal error"}),
            ),
        };
        (status, Json(body)).into_response()
    }
}

async fn list_plugins(State(s): State<ApiState>) -> Json<serde_json::Value> {
    Json(json!({ "plugins": s.registry.list() }))
}

async fn plugin(
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

async fn reload(State(s): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    s.registry.reload().await?;
    Ok(Json(json!({ "plugins": s.registry.list() })))
}

async fn enable(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    set_enabled(s, name, true).await
}

async fn disable(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    set_enabled(s, name, false).await
}

async fn set_enabled(
    s: ApiState,
    name: String,
    enabled: bool,
) -> Result<Json<serde_json::Value>, ApiError> {
    s.registry.set_enabled(&name, enabled).await?;
    Ok(Json(json!({ "plugin": s.registry.status(&name) })))
}

async fn reset_breaker(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    s.registry.reset_breaker(&name)?;
    Ok(Json(json!({ "plugin": s.registry.status(&name) })))
}

/// Run a rule on an event without keeping its state changes: how an
/// operator tries a rule before enabling it.
async fn dry_run(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let event: types::Event = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid event: {e}")))?;
    // Dry runs are for trying rules out, including disabled ones.
    let decision = s.registry.dry_run(&name, &event).await?;
    Ok(Json(json!({ "decision": decision })))
}
