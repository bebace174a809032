//! The admin HTTP API. Every `/api/v1` route needs `Authorization: Bearer
//! <token>`; `/metrics` takes the admin or the metrics token; `/healthz`
//! (liveness) and `/readyz` (readiness) need none; `/approvals/{id}` is a
//! signed approval link, its signature the credential. Errors are JSON `{"error": "..."}` with a
//! status code that says whose fault it was; database text never leaks.

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::config::IngestConfig;
use crate::ingest::group_commit::{CommitError, GroupCommit};
use crate::ingest::{alertmanager, cloudevents, kubernetes};
use crate::model;
use crate::pipeline::approvals::{self, Approvals, Ruling, RulingError, Verdict, Waiting};
use crate::pipeline::transport::Transport;
use crate::registry::{self, Registry};
use crate::runtime;
use crate::store::{IngestWrite, Ingested, Store};
use crate::telemetry::{self, trace};
use tracing::Instrument as _;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The plugin registry.
    pub registry: Arc<Registry>,
    /// The store.
    pub store: Store,
    /// The admin bearer token.
    pub token: Arc<SecretString>,
    /// Ingest settings.
    pub ingest: Arc<IngestConfig>,
    /// Where ingest writes are committed.
    pub commits: GroupCommit,
    /// The stages' transport, when the pipeline runs here (lag, readiness).
    pub transport: Option<Arc<dyn Transport>>,
    /// The token that may read `/metrics` (besides the admin token).
    pub metrics_token: Option<Arc<SecretString>>,
    /// Signs and checks approval links.
    pub approvals: Arc<Approvals>,
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
        .route("/incidents", get(incidents))
        .route("/incidents/{id}", get(incident))
        .route("/dead-letters", get(dead_letters))
        .route("/audit", get(audit_log))
        .route("/breakers", get(breakers))
        .route("/dead-letters/{id}/replay", post(replay_dead_letter))
        .route("/silences", get(silences).post(create_silence))
        .route("/silences/{id}", axum::routing::delete(expire_silence))
        .route("/approvals", get(approvals))
        .route("/actions/{id}/approve", post(approve))
        .route("/actions/{id}/reject", post(reject))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let ingest = Router::new()
        .route("/alerts/alertmanager", post(ingest_alertmanager))
        .route("/events", post(ingest_event))
        .route("/events/kubernetes", post(ingest_kubernetes))
        .layer(DefaultBodyLimit::max(state.ingest.max_body_bytes));
    let metrics =
        Router::new()
            .route("/metrics", get(metrics))
            .route_layer(middleware::from_fn_with_state(
                state.clone(),
                require_metrics_token,
            ));
    // Signed one-time links: the signature is the credential.
    let links = Router::new()
        .route("/approvals/{id}", get(approval_page).post(approval_link))
        .layer(DefaultBodyLimit::max(16 * 1024));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(links)
        .route("/readyz", get(readyz))
        .merge(metrics)
        .nest("/api/v1", admin.merge(ingest))
        .layer(middleware::from_fn_with_state(state.clone(), count_request))
        .with_state(state)
}

/// Count every answered request by its route pattern (never the raw
/// path, so ids do not become label values).
async fn count_request(State(s): State<ApiState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = request.method().clone();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    s.registry.metrics().http_request(
        &route,
        method.as_str(),
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

fn bearer(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

fn matches(presented: &str, token: &SecretString) -> bool {
    constant_time_eq::constant_time_eq(presented.as_bytes(), token.expose_secret().as_bytes())
}

async fn require_token(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    match bearer(&request) {
        Some(t) if matches(t, &state.token) => next.run(request).await,
        _ => ApiError::Unauthorized.into_response(),
    }
}

async fn require_metrics_token(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Response {
    let allowed = bearer(&request).is_some_and(|t| {
        matches(t, &state.token) || state.metrics_token.as_ref().is_some_and(|m| matches(t, m))
    });
    if allowed {
        next.run(request).await
    } else {
        ApiError::Unauthorized.into_response()
    }
}

/// The Prometheus exposition, with the sampled gauges read now.
async fn metrics(State(s): State<ApiState>) -> Response {
    let metrics = s.registry.metrics();
    telemetry::sample(metrics, &s.store, &s.registry, s.transport.as_deref()).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
        .into_response()
}

/// 200 when the store takes writes, the transport is connected and the
/// plugin directory has been loaded; otherwise 503 naming what is not.
async fn readyz(State(s): State<ApiState>) -> Response {
    const WAIT: std::time::Duration = std::time::Duration::from_secs(2);
    let store = match tokio::time::timeout(WAIT, s.store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("store: {e}")),
        Err(_) => Err(format!("store: no answer within {}s", WAIT.as_secs())),
    };
    let transport = match &s.transport {
        None => Ok(()),
        Some(t) => match tokio::time::timeout(WAIT * 2, t.ready()).await {
            Ok(r) => r.map_err(|e| format!("transport: {e}")),
            Err(_) => Err("transport: no answer".to_owned()),
        },
    };
    let plugins = if s.registry.has_loaded() {
        Ok(())
    } else {
        Err("plugins: the plugin directory has not been loaded".to_owned())
    };
    let failing: Vec<String> = [store, transport, plugins]
        .into_iter()
        .filter_map(Result::err)
        .collect();
    if failing.is_empty() {
        (StatusCode::OK, Json(json!({"ready": true}))).into_response()
    } else {
        let body = json!({"ready": false, "failing": failing});
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
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
    /// The body is larger than allowed.
    TooLarge(usize),
    /// Well-formed, but the store cannot take a value in it.
    Unprocessable(String),
    /// The plugin failed the invocation.
    PluginFailed(runtime::Error),
    /// A dependency (store, breaker) is not available right now.
    Unavailable(String),
    /// Ingest has more waiting than the store can take: 503 with
    /// `Retry-After`.
    Saturated,
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
            registry::Error::Store(e) => e.into(),
            registry::Error::Dir { .. } => {
                tracing::error!(error = %e, "registry error");
                ApiError::Internal
            }
        }
    }
}

impl From<CommitError> for ApiError {
    fn from(e: CommitError) -> Self {
        match e {
            CommitError::Busy(_) => ApiError::Saturated,
            // The data itself cannot be stored (PostgreSQL refuses a NUL in
            // text, say): retrying will not help, so not a 503.
            CommitError::Store(e) if !e.is_transient() => {
                tracing::warn!(error = %e, "the store refused a value of an ingest request");
                ApiError::Unprocessable(
                    "the store refused a value in this request (a NUL character in a label?)"
                        .into(),
                )
            }
            CommitError::Store(e) => e.into(),
            CommitError::Stopped => ApiError::Unavailable(e.to_string()),
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
            ApiError::Unprocessable(m) => (StatusCode::UNPROCESSABLE_ENTITY, json!({"error": m})),
            ApiError::TooLarge(max) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": format!("body larger than {max} bytes")}),
            ),
            ApiError::PluginFailed(e) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"error": e.to_string(), "kind": e.kind(), "retryable": e.is_retryable()}),
            ),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, json!({"error": m})),
            ApiError::Saturated => {
                let body = json!({"error": "ingest is saturated; retry shortly"});
                let retry = [(axum::http::header::RETRY_AFTER, "1")];
                return (StatusCode::SERVICE_UNAVAILABLE, retry, Json(body)).into_response();
            }
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
    let event: model::Event = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid event: {e}")))?;
    // Dry runs are for trying rules out, including disabled ones.
    let decision = s.registry.dry_run(&name, &event).await?;
    Ok(Json(json!({ "decision": decision })))
}

/// `?limit=N` (default 50, at most 1000).
#[derive(serde::Deserialize)]
struct Limit {
    limit: Option<u32>,
}

impl Limit {
    fn get(&self) -> u32 {
        self.limit.unwrap_or(50).clamp(1, 1000)
    }
}

/// The database could not do it now: 503 (senders retry), details only in
/// the log.
impl From<crate::store::Error> for ApiError {
    fn from(e: crate::store::Error) -> Self {
        tracing::error!(error = %e, "store error");
        ApiError::Unavailable("store unavailable; retry later".into())
    }
}

async fn incidents(
    State(s): State<ApiState>,
    Query(limit): Query<Limit>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let incidents = s.store.incidents(limit.get()).await?;
    Ok(Json(json!({ "incidents": incidents })))
}

async fn incident(
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

async fn dead_letters(
    State(s): State<ApiState>,
    Query(limit): Query<Limit>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let letters = s.store.dead_letters(limit.get()).await?;
    Ok(Json(json!({ "dead_letters": letters })))
}

#[derive(serde::Deserialize)]
struct AuditQuery {
    plugin: Option<String>,
    limit: Option<u32>,
}

/// Circuit breakers of action plugins per target.
async fn breakers(State(s): State<ApiState>) -> Json<serde_json::Value> {
    Json(json!({ "breakers": s.registry.target_breakers() }))
}

/// Capability audit records, newest first (`?plugin=` to narrow).
async fn audit_log(
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
async fn replay_dead_letter(
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
struct SilencesQuery {
    /// Include ended ones.
    #[serde(default)]
    all: bool,
}

/// Silences not yet over (`?all=true`: every one).
async fn silences(
    State(s): State<ApiState>,
    Query(q): Query<SilencesQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let list = s.store.silences(crate::store::now_ms(), q.all).await?;
    Ok(Json(json!({ "silences": list })))
}

/// Make a silence: 201 with it, 400 naming what is wrong.
async fn create_silence(
    State(s): State<ApiState>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let asked: crate::pipeline::silences::NewSilence = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid silence: {e}")))?;
    let silence = asked
        .build(crate::store::now_ms())
        .map_err(ApiError::BadRequest)?;
    s.store.create_silence(&silence).await?;
    tracing::info!(silence = %silence.id, by = %silence.created_by, matchers = ?silence.matchers, "silence created");
    Ok((StatusCode::CREATED, Json(json!({ "silence": silence }))))
}

/// End a silence now: 404 if there is none, 409 if it had ended.
async fn expire_silence(
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

impl From<RulingError> for ApiError {
    fn from(e: RulingError) -> Self {
        match e {
            RulingError::NotFound(_) => ApiError::NotFound(e.to_string()),
            RulingError::NotWaiting { .. }
            | RulingError::Expired(_)
            | RulingError::WrongHash(_) => ApiError::Conflict(e.to_string()),
            RulingError::NoHash | RulingError::Anonymous => ApiError::BadRequest(e.to_string()),
            RulingError::Store(e) => e.into(),
        }
    }
}

/// Actions waiting for approval, the soonest to expire first.
async fn approvals(State(s): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    let waiting: Vec<Waiting> = s
        .store
        .awaiting_approval()
        .await?
        .iter()
        .filter_map(Waiting::of)
        .collect();
    Ok(Json(json!({ "approvals": waiting })))
}

/// A ruling's body.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RulingBody {
    /// Who rules.
    by: String,
    /// The params hash shown with the request (`GET /approvals`).
    #[serde(default)]
    params_hash: Option<String>,
    /// Why.
    #[serde(default)]
    reason: String,
}

async fn rule_on(
    s: &ApiState,
    id: &str,
    verdict: Verdict,
    body: &[u8],
) -> Result<Json<serde_json::Value>, ApiError> {
    let b: RulingBody = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid ruling: {e}")))?;
    let ruling = Ruling {
        verdict,
        params_hash: b.params_hash,
        by: b.by,
        reason: b.reason,
        via: "api",
    };
    let job = approvals::rule(&s.store, s.registry.metrics(), id, &ruling).await?;
    Ok(Json(json!({ "action": job })))
}

/// Approve a waiting action: `{"by", "params_hash", "reason"?}`; 409 if it
/// is not waiting, has expired or the hash is not its request's.
async fn approve(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    rule_on(&s, &id, Verdict::Approve, &body).await
}

/// Reject a waiting action: `{"by", "reason"?, "params_hash"?}`.
async fn reject(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    rule_on(&s, &id, Verdict::Reject, &body).await
}

/// What an approval link carries.
#[derive(serde::Deserialize)]
struct LinkQuery {
    verdict: Verdict,
    hash: String,
    expires: i64,
    sig: String,
}

/// The link's form.
#[derive(serde::Deserialize)]
struct LinkForm {
    #[serde(default)]
    by: String,
    #[serde(default)]
    reason: String,
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body><h1>{t}</h1>{body}</body></html>",
        t = escape(title)
    );
    let headers = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    (status, headers, html).into_response()
}

/// HTML-escape `text`.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The waiting action a link is about, if its signature is this host's
/// and it has not expired.
async fn linked(s: &ApiState, id: &str, q: &LinkQuery) -> Result<Waiting, Response> {
    let invalid = || {
        page(
            StatusCode::FORBIDDEN,
            "Invalid link",
            "<p>This approval link is not valid.</p>",
        )
    };
    if !s
        .approvals
        .signed(id, &q.hash, q.verdict, q.expires, &q.sig)
    {
        return Err(invalid());
    }
    if crate::store::now_ms() >= q.expires {
        return Err(page(
            StatusCode::GONE,
            "Link expired",
            "<p>This approval has expired.</p>",
        ));
    }
    let job = match s.store.job(crate::store::Queue::Actions, id).await {
        Ok(Some(job)) => job,
        Ok(None) => return Err(invalid()),
        Err(e) => return Err(ApiError::from(e).into_response()),
    };
    match (job.status, Waiting::of(&job)) {
        (model::JobStatus::AwaitingApproval, Some(w)) => Ok(w),
        (status, _) => Err(page(
            StatusCode::CONFLICT,
            "Already decided",
            &format!(
                "<p>This action is no longer waiting for approval: it is {}.</p>",
                escape(status.as_str())
            ),
        )),
    }
}

/// A signed link, opened: the request and a form whose POST rules. A GET
/// never rules, so a link preview cannot approve anything.
async fn approval_page(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<LinkQuery>,
) -> Response {
    let w = match linked(&s, &id, &q).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let verb = match q.verdict {
        Verdict::Approve => "Approve",
        Verdict::Reject => "Reject",
    };
    let body = format!(
        "<p>Rule <b>{rule}</b> asks to run <b>{plugin}</b> on <b>{target}</b>.</p>\
         <p>Reason: {reason}</p><pre>{params}</pre><p>Params hash: <code>{hash}</code></p>\
         <form method=\"post\"><label>Your name <input name=\"by\" required></label>\
         <label>Reason <input name=\"reason\"></label>\
         <button type=\"submit\">{verb}</button></form>",
        rule = escape(&w.rule),
        plugin = escape(&w.plugin),
        target = escape(&w.target),
        reason = escape(&w.reason),
        params = escape(&serde_json::to_string_pretty(&w.params).unwrap_or_default()),
        hash = escape(&w.params_hash),
    );
    page(
        StatusCode::OK,
        &format!("{verb} {} on {}?", w.plugin, w.target),
        &body,
    )
}

/// A signed link's form, posted: the ruling it names.
async fn approval_link(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<LinkQuery>,
    axum::Form(form): axum::Form<LinkForm>,
) -> Response {
    if let Err(r) = linked(&s, &id, &q).await {
        return r;
    }
    let ruling = Ruling {
        verdict: q.verdict,
        params_hash: Some(q.hash.clone()),
        by: form.by,
        reason: form.reason,
        via: "link",
    };
    match approvals::rule(&s.store, s.registry.metrics(), &id, &ruling).await {
        Ok(job) => page(
            StatusCode::OK,
            match q.verdict {
                Verdict::Approve => "Approved",
                Verdict::Reject => "Rejected",
            },
            &format!(
                "<p>Action {} is now {}.</p>",
                escape(&job.id),
                escape(job.status.as_str())
            ),
        ),
        Err(RulingError::Store(e)) => ApiError::from(e).into_response(),
        Err(e) => {
            let status = match e {
                RulingError::Anonymous | RulingError::NoHash => StatusCode::BAD_REQUEST,
                _ => StatusCode::CONFLICT,
            };
            page(
                status,
                "Not done",
                &format!("<p>{}</p>", escape(&e.to_string())),
            )
        }
    }
}

/// The ingest token, when one is configured.
fn check_ingest_token(s: &ApiState, headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &s.ingest.token else {
        return Ok(());
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(t)
            if constant_time_eq::constant_time_eq(
                t.as_bytes(),
                token.expose_secret().as_bytes(),
            ) =>
        {
            Ok(())
        }
        _ => Err(ApiError::Unauthorized),
    }
}

fn body_or_error(
    s: &ApiState,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<axum::body::Bytes, ApiError> {
    body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(s.ingest.max_body_bytes),
        _ => ApiError::BadRequest(e.body_text()),
    })
}

/// A generic event (CloudEvents 1.0, structured JSON). 202 once it is
/// durable (`duplicate: true` if it already was); 400 naming the attribute
/// at fault; 503 when the store cannot take it now.
async fn ingest_event(
    State(s): State<ApiState>,
    headers: axum::http::HeaderMap,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let (span, caller) = trace::ingest_span("cloudevents", &headers);
    let accepted = accept_event(&s, headers, caller, body)
        .instrument(span)
        .await;
    rejected(&s, "cloudevents", accepted)
}

async fn accept_event(
    s: &ApiState,
    headers: axum::http::HeaderMap,
    caller: Option<String>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    check_ingest_token(s, &headers)?;
    let body = body_or_error(s, body)?;
    let mut event = cloudevents::parse(&body, crate::store::now_ms() as u64)
        .map_err(|e| ApiError::BadRequest(e.0))?;
    trace::stamp(&mut event, caller.as_deref());
    let id = event.id.clone();
    let new = match s.commits.commit(IngestWrite::Event(event)).await? {
        Ingested::Event { new } => new,
        Ingested::Alerts(_) => unreachable!("an event write has an event outcome"),
    };
    let outcome = if new { "accepted" } else { "deduplicated" };
    s.registry.metrics().ingested("cloudevents", outcome, 1);
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "id": id, "duplicate": !new })),
    ))
}

/// Kubernetes Warning events (`?cluster=` names the cluster). 202 once
/// they are durable and counted; 400 naming the field at fault.
async fn ingest_kubernetes(
    State(s): State<ApiState>,
    headers: axum::http::HeaderMap,
    Query(q): Query<ClusterQuery>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let (span, caller) = trace::ingest_span("kubernetes", &headers);
    let accepted = accept_kubernetes(&s, headers, caller, q, body)
        .instrument(span)
        .await;
    rejected(&s, "kubernetes", accepted)
}

async fn accept_kubernetes(
    s: &ApiState,
    headers: axum::http::HeaderMap,
    caller: Option<String>,
    q: ClusterQuery,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    check_ingest_token(s, &headers)?;
    let body = body_or_error(s, body)?;
    let now = crate::store::now_ms();
    let batch = kubernetes::parse(&body, q.cluster.as_deref().unwrap_or(""), now)
        .map_err(|e| ApiError::BadRequest(e.0))?;
    let (new, duplicates) = s
        .store
        .ingest_kube_events(&batch.warnings, |w, occurrences| {
            let mut e = w.event(occurrences, now as u64);
            trace::stamp(&mut e, caller.as_deref());
            e
        })
        .await?;
    let metrics = s.registry.metrics();
    metrics.ingested("kubernetes", "accepted", new);
    metrics.ingested("kubernetes", "deduplicated", duplicates);
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "accepted": new,
            "duplicates": duplicates,
            "ignored": batch.ignored,
            "dedup_keys": batch.warnings.iter().map(|w| w.dedup_key.as_str()).collect::<Vec<_>>(),
        })),
    ))
}

#[derive(serde::Deserialize)]
struct ClusterQuery {
    cluster: Option<String>,
}

/// The Alertmanager webhook. 200 only once the alerts and their events are
/// durable; 4xx (never retried by Alertmanager) for a body that will never
/// be accepted; 503 (retried) when the store cannot take it now.
async fn ingest_alertmanager(
    State(s): State<ApiState>,
    headers: axum::http::HeaderMap,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (span, caller) = trace::ingest_span("alertmanager", &headers);
    let accepted = accept_alertmanager(&s, headers, caller, body)
        .instrument(span)
        .await;
    rejected(&s, "alertmanager", accepted)
}

/// Count a refused ingest request.
fn rejected<T>(s: &ApiState, source: &'static str, r: Result<T, ApiError>) -> Result<T, ApiError> {
    if r.is_err() {
        s.registry.metrics().ingested(source, "rejected", 1);
    }
    r
}

async fn accept_alertmanager(
    s: &ApiState,
    headers: axum::http::HeaderMap,
    caller: Option<String>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_ingest_token(s, &headers)?;
    let body = body_or_error(s, body)?;
    let notification =
        alertmanager::parse(&body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let now = crate::store::now_ms() as u64;
    let events = notification
        .alerts
        .iter()
        .map(|a| {
            let mut e = alertmanager::alert_raised(&notification, a, now);
            trace::stamp(&mut e, caller.as_deref());
            e
        })
        .collect();
    let write = IngestWrite::Alerts {
        group_key: notification.group_key,
        alerts: notification.alerts,
        events,
    };
    let outcome = match s.commits.commit(write).await? {
        Ingested::Alerts(outcome) => outcome,
        Ingested::Event { .. } => unreachable!("an alerts write has an alerts outcome"),
    };
    let metrics = s.registry.metrics();
    metrics.ingested("alertmanager", "accepted", outcome.events);
    metrics.ingested(
        "alertmanager",
        "deduplicated",
        outcome.alerts.saturating_sub(outcome.events),
    );
    Ok(Json(
        json!({ "accepted": outcome.alerts, "new_events": outcome.events }),
    ))
}
