//! The admin HTTP API. Every `/api/v1` route but ingest needs
//! `Authorization: Bearer <token>` of the right scope ([`auth`]); ingest
//! takes `ingest.token` when one is set; `/metrics` takes an API token or
//! the metrics token; `/healthz` (liveness) and `/readyz` (readiness) need
//! none; `/approvals/{id}` is a signed approval link, its signature the
//! credential. Errors are JSON `{"error": "..."}` with a status code that
//! says whose fault it was; database text never leaks.
//!
//! The handlers live by what they serve: [`plugins`], [`lists`] (the
//! paged lists, acknowledgement), [`records`] (an incident, dead letters,
//! audit, silences), [`approvals`], [`ingest`].

mod approvals;
pub mod auth;
mod ingest;
pub mod lists;
mod openapi;
mod plugins;
pub(crate) mod records;
mod replay;
mod scrape;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use secrecy::SecretString;
use serde_json::json;

use crate::config::IngestConfig;
use crate::ingest::group_commit::{CommitError, GroupCommit};
use crate::pipeline::approvals::Approvals;
use crate::pipeline::transport::Transport;
use crate::registry::{self, Registry};
use crate::runtime;
use crate::store::{self, Store};

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The plugin registry.
    pub registry: Arc<Registry>,
    /// The store.
    pub store: Store,
    /// The API's bearer tokens.
    pub tokens: Arc<auth::Tokens>,
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
    /// Where replays find rules, and the one-at-a-time permit.
    pub replay: Arc<crate::replay::Settings>,
    /// Console logins.
    pub sessions: Arc<crate::console::Sessions>,
}

/// How a route is guarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// An API token whose scope covers the method ([`auth::needed_scope`]).
    Scoped,
    /// `ingest.token`, when one is set.
    Ingest,
    /// An API token or `telemetry.metrics_token`.
    Metrics,
    /// A signed approval link: the signature is the credential.
    SignedLink,
    /// A console session (cookie); a POST also needs the session's CSRF
    /// token and the `admin` scope.
    Session,
    /// None: liveness and readiness.
    Open,
}

/// A route: its method, its path (as the router has it) and its guard.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// `GET`, `POST`, `DELETE`.
    pub method: &'static str,
    /// The path, `{name}` for a parameter.
    pub path: &'static str,
    /// Who may call it.
    pub guard: Guard,
}

/// Each group's routes and the router that serves them, from one list, so
/// [`routes`] is the router's own route list (the auth test walks it, and
/// a route cannot be added without appearing there).
macro_rules! route_group {
    ($list:ident, $router:ident, $guard:expr, [$($method:ident $path:literal => $handler:expr),* $(,)?]) => {
        const $list: &[Route] = &[$(Route {
            method: const_upper(stringify!($method)),
            path: $path,
            guard: $guard,
        }),*];
        fn $router() -> Router<ApiState> {
            Router::new()$(.route($path, axum::routing::$method($handler)))*
        }
    };
}

const fn const_upper(method: &'static str) -> &'static str {
    match method.as_bytes() {
        b"get" => "GET",
        b"post" => "POST",
        b"delete" => "DELETE",
        _ => panic!("a method the route list does not know"),
    }
}

route_group!(SCOPED, scoped, Guard::Scoped, [
    get "/api/v1/plugins" => plugins::list_plugins,
    post "/api/v1/plugins/reload" => plugins::reload,
    get "/api/v1/plugins/{name}" => plugins::plugin,
    post "/api/v1/plugins/{name}/enable" => plugins::enable,
    post "/api/v1/plugins/{name}/disable" => plugins::disable,
    post "/api/v1/plugins/{name}/breaker/reset" => plugins::reset_breaker,
    post "/api/v1/plugins/{name}/dry-run" => plugins::dry_run,
    get "/api/v1/incidents" => lists::incidents,
    get "/api/v1/incidents/{id}" => records::incident,
    post "/api/v1/incidents/{id}/acknowledge" => lists::acknowledge,
    delete "/api/v1/incidents/{id}/acknowledge" => lists::unacknowledge,
    get "/api/v1/alerts" => lists::alerts,
    get "/api/v1/actions" => lists::actions,
    get "/api/v1/notifications" => lists::notifications,
    get "/api/v1/decisions" => lists::decisions,
    get "/api/v1/dead-letters" => records::dead_letters,
    post "/api/v1/dead-letters/{id}/replay" => records::replay_dead_letter,
    get "/api/v1/audit" => records::audit_log,
    get "/api/v1/breakers" => records::breakers,
    get "/api/v1/silences" => records::silences,
    post "/api/v1/silences" => records::create_silence,
    delete "/api/v1/silences/{id}" => records::expire_silence,
    get "/api/v1/approvals" => approvals::approvals,
    post "/api/v1/actions/{id}/approve" => approvals::approve,
        get "/api/v1/openapi.json" => openapi::document,
    post "/api/v1/replay" => replay::replay,
    post "/api/v1/actions/{id}/reject" => approvals::reject,
]);

route_group!(INGEST, ingest_routes, Guard::Ingest, [
    post "/api/v1/alerts/alertmanager" => ingest::ingest_alertmanager,
    post "/api/v1/events" => ingest::ingest_event,
    post "/api/v1/events/kubernetes" => ingest::ingest_kubernetes,
]);

route_group!(METRICS, metrics_routes, Guard::Metrics, [
    get "/metrics" => metrics,
]);

route_group!(LINKS, link_routes, Guard::SignedLink, [
    get "/approvals/{id}" => approvals::approval_page,
    post "/approvals/{id}" => approvals::approval_link,
]);

route_group!(OPEN, open_routes, Guard::Open, [
    get "/healthz" => || async { "ok" },
    get "/readyz" => readyz,
    get "/" => || async { axum::response::Redirect::to("/ui") },
    get "/ui/login" => crate::console::login_page,
    post "/ui/login" => crate::console::login,
    get "/ui/style.css" => crate::console::style,
]);

route_group!(CONSOLE, console_routes, Guard::Session, [
    get "/ui" => crate::console::pages::incidents,
    get "/ui/incidents/{id}" => crate::console::pages::incident,
    post "/ui/incidents/{id}/acknowledge" => crate::console::pages::acknowledge,
    get "/ui/plugins" => crate::console::pages::plugins,
    post "/ui/plugins/{name}/{change}" => crate::console::pages::change_plugin,
    get "/ui/dead-letters" => crate::console::pages::dead_letters,
    post "/ui/dead-letters/{id}/replay" => crate::console::pages::replay_dead_letter,
    get "/ui/audit" => crate::console::pages::audit,
    get "/ui/replay" => crate::console::pages::replay_form,
    post "/ui/replay" => crate::console::pages::replay,
    post "/ui/logout" => crate::console::logout,
]);

/// Every route the router serves.
pub fn routes() -> impl Iterator<Item = &'static Route> {
    [SCOPED, INGEST, METRICS, LINKS, OPEN, CONSOLE]
        .into_iter()
        .flatten()
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    let scoped = scoped().route_layer(middleware::from_fn_with_state(
        state.clone(),
        auth::require_scope,
    ));
    let ingest = ingest_routes().layer(DefaultBodyLimit::max(state.ingest.max_body_bytes));
    let metrics = metrics_routes().route_layer(middleware::from_fn_with_state(
        state.clone(),
        auth::require_metrics_token,
    ));
    let links = link_routes().layer(DefaultBodyLimit::max(16 * 1024));
    let console = console_routes()
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::console::require_session,
        ))
        .layer(DefaultBodyLimit::max(64 * 1024));
    // A candidate component rides in a replay's body (a Python one is
    // ~18 MiB; base64 adds a third).
    let scoped = scoped.layer(DefaultBodyLimit::max(32 << 20));
    Router::new()
        .merge(scoped)
        .merge(ingest)
        .merge(metrics)
        .merge(links)
        .merge(open_routes())
        .merge(console)
        .layer(middleware::from_fn(json_errors))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .layer(middleware::from_fn_with_state(state.clone(), count_request))
        .with_state(state)
}

/// A handler that panicked: 500 in the error shape (the connection is
/// not dropped), the panic in the log.
fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic");
    tracing::error!(panic = %what, "an API handler panicked");
    ApiError::Internal.into_response()
}

/// Every error answer in the one JSON shape ([`ErrorBody`]), including
/// those axum makes itself: a query or path parameter that does not parse
/// (plain text), an unknown route (404) or method (405), a body over the
/// limit. Pages (signed links) keep their HTML.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let typed = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json") || t.starts_with("text/html"));
    if typed {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let error = if text.is_empty() {
        match status {
            StatusCode::NOT_FOUND => "no such route".to_owned(),
            StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this route".to_owned(),
            s => s.canonical_reason().unwrap_or("error").to_owned(),
        }
    } else {
        text
    };
    let mut fixed = (
        status,
        Json(ErrorBody {
            error,
            kind: None,
            retryable: None,
        }),
    )
        .into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            fixed.headers_mut().insert(name.clone(), value.clone());
        }
    }
    fixed
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

/// The Prometheus exposition, with the sampled gauges read now.
async fn metrics(State(s): State<ApiState>) -> Response {
    let metrics = s.registry.metrics();
    scrape::sample(metrics, &s.store, &s.registry, s.transport.as_deref()).await;
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

/// Every error's body.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
    /// A plugin failure's kind (`trap`, `timeout`, `fuel`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Whether the same call may succeed later.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
}

/// How a request failed.
#[derive(Debug)]
pub enum ApiError {
    /// Missing or wrong bearer token.
    Unauthorized,
    /// A known token whose scope does not cover the request.
    Forbidden(String),
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
            // Queued, but the store's writer stayed taken past the busy
            // timeout: as saturated as a full queue, and nothing was written.
            CommitError::Store(store::Error::Busy(waited)) => {
                tracing::warn!(?waited, "ingest waited too long for the store's writer");
                ApiError::Saturated
            }
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

impl ApiError {
    /// Its status and body.
    pub fn answer(self) -> (StatusCode, ErrorBody) {
        let plain = |status, error: String| {
            (
                status,
                ErrorBody {
                    error,
                    kind: None,
                    retryable: None,
                },
            )
        };
        match self {
            ApiError::Unauthorized => plain(
                StatusCode::UNAUTHORIZED,
                "missing or invalid bearer token".into(),
            ),
            ApiError::Forbidden(m) => plain(StatusCode::FORBIDDEN, m),
            ApiError::NotFound(m) => plain(StatusCode::NOT_FOUND, m),
            ApiError::Conflict(m) => plain(StatusCode::CONFLICT, m),
            ApiError::BadRequest(m) => plain(StatusCode::BAD_REQUEST, m),
            ApiError::Unprocessable(m) => plain(StatusCode::UNPROCESSABLE_ENTITY, m),
            ApiError::TooLarge(max) => plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body larger than {max} bytes"),
            ),
            ApiError::PluginFailed(e) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorBody {
                    error: e.to_string(),
                    kind: Some(e.kind().to_owned()),
                    retryable: Some(e.is_retryable()),
                },
            ),
            ApiError::Unavailable(m) => plain(StatusCode::SERVICE_UNAVAILABLE, m),
            ApiError::Saturated => plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "ingest is saturated; retry shortly".into(),
            ),
            ApiError::Internal => plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let saturated = matches!(self, ApiError::Saturated);
        let (status, body) = self.answer();
        let mut response = (status, Json(body)).into_response();
        if saturated {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

/// `?limit=N`: 1 to 1000, default 50; anything else is a 400.
#[derive(serde::Deserialize)]
struct Limit {
    limit: Option<String>,
}

impl Limit {
    fn get(&self) -> Result<u32, ApiError> {
        lists::page_limit(self.limit.as_deref())
    }
}

/// Who did something over the API, for the record: the token's name, and
/// the person the caller named if it did (a shared token says little).
fn recorded_by(caller: &auth::Principal, named: Option<&str>) -> String {
    match named.map(str::trim) {
        Some(person) if !person.is_empty() && person != caller.name => {
            format!("{person} (token {})", caller.name)
        }
        _ => caller.name.clone(),
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
