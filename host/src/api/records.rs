//! What the pipeline recorded: incidents, dead letters, the audit log,
//! breakers, silences.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde_json::json;

use super::auth::Principal;
use super::{ApiError, ApiState, Limit};

pub(super) async fn incident(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let detail = s
        .store
        .incident_detail(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no incident `{id}`")))?;
    Ok(Json(json!({ "incident": detail })))
}

pub(super) async fn dead_letters(
    State(s): State<ApiState>,
    Query(limit): Query<Limit>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let letters = s.store.dead_letters(limit.get()).await?;
    Ok(Json(json!({ "dead_letters": letters })))
}

#[derive(serde::Deserialize)]
pub(super) struct AuditQuery {
    plugin: Option<String>,
    limit: Option<u32>,
}

/// Circuit breakers of action plugins per target.
pub(super) async fn breakers(State(s): State<ApiState>) -> Json<serde_json::Value> {
    Json(json!({ "breakers": s.registry.target_breakers() }))
}

/// Capability audit records, newest first (`?plugin=` to narrow).
pub(super) async fn audit_log(
    State(s): State<ApiState>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let limit = Limit { limit: q.limit }.get();
    let records = s.store.audit_log(q.plugin.as_deref(), limit).await?;
    Ok(Json(json!({ "audit": records })))
}

/// Run a dead-lettered action or notification again, with a fresh attempt
/// budget. Rule-stage letters are for inspection: replaying one would run
/// every rule on the event again, including those that succeeded.
pub(super) async fn replay_dead_letter(
    State(s): State<ApiState>,
    Path(id): Path<i64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (letter, payload) = s
        .store
        .dead_letter(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no dead letter {id}")))?;
    let (queue, job) = crate::pipeline::queue::dead_letter_job(&letter.consumer, &payload)
        .ok_or_else(|| {
            ApiError::Conflict(format!(
                "dead letter {id} is from the `{}` stage; only action and notification letters can be replayed",
                letter.consumer
            ))
        })?;
    s.store
        .replay_dead_letter(id, queue, &job)
        .await?
        .ok_or_else(|| {
            ApiError::Conflict(format!(
                "dead letter {id} was already replayed or its job is no longer failed"
            ))
        })?;
    Ok(Json(json!({ "replayed": id, "queue": queue, "job": job })))
}

#[derive(serde::Deserialize)]
pub(super) struct SilencesQuery {
    /// Include ended ones.
    #[serde(default)]
    all: bool,
}

/// Silences not yet over (`?all=true`: every one).
pub(super) async fn silences(
    State(s): State<ApiState>,
    Query(q): Query<SilencesQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let list = s.store.silences(crate::store::now_ms(), q.all).await?;
    Ok(Json(json!({ "silences": list })))
}

/// Make a silence: 201 with it, 400 naming what is wrong.
pub(super) async fn create_silence(
    State(s): State<ApiState>,
    Extension(caller): Extension<Principal>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let mut asked: crate::pipeline::silences::NewSilence = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid silence: {e}")))?;
    asked.created_by = super::recorded_by(&caller, Some(&asked.created_by));
    let silence = asked
        .build(crate::store::now_ms())
        .map_err(ApiError::BadRequest)?;
    s.store.create_silence(&silence).await?;
    tracing::info!(silence = %silence.id, by = %silence.created_by, matchers = ?silence.matchers, "silence created");
    Ok((StatusCode::CREATED, Json(json!({ "silence": silence }))))
}

/// End a silence now: 404 if there is none, 409 if it had ended.
pub(super) async fn expire_silence(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let now = crate::store::now_ms();
    if let Some(silence) = s.store.expire_silence(&id, now).await? {
        tracing::info!(silence = %id, "silence expired");
        return Ok(Json(json!({ "silence": silence })));
    }
    match s.store.silence(&id).await? {
        None => Err(ApiError::NotFound(format!("no silence `{id}`"))),
        Some(_) => Err(ApiError::Conflict(format!(
            "silence `{id}` has already ended"
        ))),
    }
}
