//! What the pipeline recorded: incidents, dead letters, the audit log,
//! breakers, silences.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};

use super::auth::Principal;
use super::{ApiError, ApiState, ErrorBody, Limit};
use crate::model::{AuditRecord, Silence};
use crate::registry::TargetBreaker;
use crate::store::{DeadLetter, IncidentDetail};
use serde::Serialize;
use utoipa::ToSchema;

/// One incident with everything linked to it.
#[derive(Serialize, ToSchema)]
pub(super) struct IncidentAnswer {
    incident: IncidentDetail,
}

/// Dead letters, newest first.
#[derive(Serialize, ToSchema)]
pub(super) struct DeadLetterList {
    dead_letters: Vec<DeadLetter>,
    /// Pass as `cursor` for the next page; `null` on the last.
    next_cursor: Option<String>,
}

/// Breakers of action plugins per target.
#[derive(Serialize, ToSchema)]
pub(super) struct BreakerList {
    breakers: Vec<TargetBreaker>,
}

/// Capability audit records, newest first.
#[derive(Serialize, ToSchema)]
pub(super) struct AuditList {
    audit: Vec<AuditRecord>,
    /// Pass as `cursor` for the next page; `null` on the last.
    next_cursor: Option<String>,
}

/// A dead letter put back on its queue.
#[derive(Serialize, ToSchema)]
pub(super) struct Replayed {
    /// The letter.
    replayed: i64,
    /// `actions` or `notifications`.
    queue: String,
    /// The job's id, pending again.
    job: String,
}

/// Silences.
#[derive(Serialize, ToSchema)]
pub(super) struct SilenceList {
    silences: Vec<Silence>,
}

/// One silence.
#[derive(Serialize, ToSchema)]
pub(super) struct SilenceAnswer {
    silence: Silence,
}

/// One incident with its timeline, alerts, actions and notifications.
#[utoipa::path(get, path = "/api/v1/incidents/{id}", tag = "incidents",
    params(("id" = String, Path, description = "the incident")),
    responses((status = 200, body = IncidentAnswer), (status = 404, body = ErrorBody)))]
pub(super) async fn incident(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<IncidentAnswer>, ApiError> {
    let detail = s
        .store
        .incident_detail(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no incident `{id}`")))?;
    Ok(Json(IncidentAnswer { incident: detail }))
}

/// What a stage gave up on, and why, newest first.
#[utoipa::path(get, path = "/api/v1/dead-letters", tag = "operations",
    params(("cursor" = Option<String>, Query, description = "next_cursor of the page before"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "1 to 1000, default 50")),
    responses((status = 200, body = DeadLetterList), (status = 400, body = ErrorBody)))]
pub(super) async fn dead_letters(
    State(s): State<ApiState>,
    Query(q): Query<PageQuery>,
) -> Result<Json<DeadLetterList>, ApiError> {
    let limit = Limit { limit: q.limit }.get()?;
    let (dead_letters, next_cursor) = s
        .store
        .dead_letter_page(cursor(q.cursor.as_deref())?, limit)
        .await?;
    Ok(Json(DeadLetterList {
        dead_letters,
        next_cursor,
    }))
}

/// `?cursor=&limit=`.
#[derive(serde::Deserialize)]
pub(super) struct PageQuery {
    cursor: Option<String>,
    limit: Option<String>,
}

/// A numeric cursor (a row's place in its log), or a 400.
fn cursor(text: Option<&str>) -> Result<Option<i64>, ApiError> {
    text.filter(|c| !c.is_empty())
        .map(|c| {
            c.parse().map_err(|_| {
                ApiError::BadRequest(format!(
                    "invalid cursor `{c}`: pass a next_cursor this list returned"
                ))
            })
        })
        .transpose()
}

#[derive(serde::Deserialize)]
pub(super) struct AuditQuery {
    plugin: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
}

/// Circuit breakers of action plugins per target.
#[utoipa::path(get, path = "/api/v1/breakers", tag = "operations",
    responses((status = 200, body = BreakerList)))]
pub(super) async fn breakers(State(s): State<ApiState>) -> Json<BreakerList> {
    Json(BreakerList {
        breakers: s.registry.target_breakers(),
    })
}

/// Capability audit records, newest first (`?plugin=` to narrow).
#[utoipa::path(get, path = "/api/v1/audit", tag = "operations",
        params(("plugin" = Option<String>, Query, description = "only this plugin's"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the page before"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "1 to 1000, default 50")),
    responses((status = 200, body = AuditList), (status = 400, body = ErrorBody)))]
pub(super) async fn audit_log(
    State(s): State<ApiState>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<AuditList>, ApiError> {
    let limit = Limit { limit: q.limit }.get()?;
    let plugin = q.plugin.filter(|p| !p.is_empty());
    let (audit, next_cursor) = s
        .store
        .audit_page(plugin.as_deref(), cursor(q.cursor.as_deref())?, limit)
        .await?;
    Ok(Json(AuditList { audit, next_cursor }))
}

/// Run a dead-lettered action or notification again, with a fresh attempt
/// budget. Rule-stage letters are for inspection: replaying one would run
/// every rule on the event again, including those that succeeded.
#[utoipa::path(post, path = "/api/v1/dead-letters/{id}/replay", tag = "operations",
    params(("id" = i64, Path, description = "the dead letter")),
    responses((status = 200, body = Replayed), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn replay_dead_letter(
    State(s): State<ApiState>,
    Path(id): Path<i64>,
) -> Result<Json<Replayed>, ApiError> {
    let (queue, job) = replay_letter(&s, id).await?;
    Ok(Json(Replayed {
        replayed: id,
        queue: queue.table().to_owned(),
        job,
    }))
}

/// Put dead letter `id`'s action or notification back on its queue with
/// a fresh attempt budget: its queue and job id (the API and the console).
pub(crate) async fn replay_letter(
    s: &ApiState,
    id: i64,
) -> Result<(crate::store::Queue, String), ApiError> {
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
    tracing::info!(dead_letter = id, queue = queue.table(), job = %job, "dead letter replayed");
    Ok((queue, job))
}

#[derive(serde::Deserialize)]
pub(super) struct SilencesQuery {
    /// Include ended ones.
    #[serde(default)]
    all: bool,
}

/// Silences not yet over (`?all=true`: every one).
#[utoipa::path(get, path = "/api/v1/silences", tag = "operations",
    params(("all" = Option<bool>, Query, description = "include ended ones")),
    responses((status = 200, body = SilenceList), (status = 400, body = ErrorBody)))]
pub(super) async fn silences(
    State(s): State<ApiState>,
    Query(q): Query<SilencesQuery>,
) -> Result<Json<SilenceList>, ApiError> {
    let list = s.store.silences(crate::store::now_ms(), q.all).await?;
    Ok(Json(SilenceList { silences: list }))
}

/// Make a silence: 201 with it, 400 naming what is wrong.
#[utoipa::path(post, path = "/api/v1/silences", tag = "operations",
    request_body(content = crate::pipeline::silences::NewSilence),
    responses((status = 201, body = SilenceAnswer), (status = 400, body = ErrorBody)))]
pub(super) async fn create_silence(
    State(s): State<ApiState>,
    Extension(caller): Extension<Principal>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<SilenceAnswer>), ApiError> {
    let mut asked: crate::pipeline::silences::NewSilence = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid silence: {e}")))?;
    asked.created_by = super::recorded_by(&caller, Some(&asked.created_by));
    let silence = asked
        .build(crate::store::now_ms())
        .map_err(ApiError::BadRequest)?;
    s.store.create_silence(&silence).await?;
    tracing::info!(silence = %silence.id, by = %silence.created_by, matchers = ?silence.matchers, "silence created");
    Ok((StatusCode::CREATED, Json(SilenceAnswer { silence })))
}

/// End a silence now: 404 if there is none, 409 if it had ended.
#[utoipa::path(delete, path = "/api/v1/silences/{id}", tag = "operations",
    params(("id" = String, Path, description = "the silence")),
    responses((status = 200, body = SilenceAnswer), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(super) async fn expire_silence(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<SilenceAnswer>, ApiError> {
    let now = crate::store::now_ms();
    if let Some(silence) = s.store.expire_silence(&id, now).await? {
        tracing::info!(silence = %id, "silence expired");
        return Ok(Json(SilenceAnswer { silence }));
    }
    match s.store.silence(&id).await? {
        None => Err(ApiError::NotFound(format!("no silence `{id}`"))),
        Some(_) => Err(ApiError::Conflict(format!(
            "silence `{id}` has already ended"
        ))),
    }
}
