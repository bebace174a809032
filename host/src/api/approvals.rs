//! Approvals: the waiting list, rulings over the API, and the signed
//! one-time links a notification carries.

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::auth::Principal;
use super::{ApiError, ApiState, ErrorBody};
use serde::Serialize;
use utoipa::ToSchema;

/// Actions waiting for approval.
#[derive(Serialize, ToSchema)]
pub(super) struct WaitingList {
    approvals: Vec<Waiting>,
}

/// An action after a ruling.
#[derive(Serialize, ToSchema)]
pub(super) struct Ruled {
    action: model::Job,
}
use crate::model;
use crate::pipeline::approvals::{self, Ruling, RulingError, Verdict, Waiting};

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
#[utoipa::path(get, path = "/api/v1/approvals", tag = "approvals",
    responses((status = 200, body = WaitingList)))]
pub(super) async fn approvals(State(s): State<ApiState>) -> Result<Json<WaitingList>, ApiError> {
    let waiting: Vec<Waiting> = s
        .store
        .awaiting_approval()
        .await?
        .iter()
        .filter_map(Waiting::of)
        .collect();
    Ok(Json(WaitingList { approvals: waiting }))
}

/// A ruling's body.
#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RulingBody {
    /// Who rules, when the token is shared; recorded beside the token's
    /// name. Default: the token's name alone.
    #[serde(default)]
    by: Option<String>,
    /// The params hash shown with the request (`GET /approvals`).
    #[serde(default)]
    params_hash: Option<String>,
    /// Why.
    #[serde(default)]
    reason: String,
}

pub(super) async fn rule_on(
    s: &ApiState,
    caller: &Principal,
    id: &str,
    verdict: Verdict,
    body: &[u8],
) -> Result<Json<Ruled>, ApiError> {
    let b: RulingBody = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid ruling: {e}")))?;
    let ruling = Ruling {
        verdict,
        params_hash: b.params_hash,
        by: super::recorded_by(caller, b.by.as_deref()),
        reason: b.reason,
        via: "api",
    };
    let job = approvals::rule(&s.store, s.registry.metrics(), id, &ruling).await?;
    Ok(Json(Ruled { action: job }))
}

/// Approve a waiting action: `{"params_hash", "by"?, "reason"?}`; 409 if it
/// is not waiting, has expired or the hash is not its request's.
#[utoipa::path(post, path = "/api/v1/actions/{id}/approve", tag = "approvals",
    params(("id" = String, Path, description = "the action")),
    request_body(content = RulingBody),
    responses((status = 200, body = Ruled), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn approve(
    State(s): State<ApiState>,
    Extension(caller): Extension<Principal>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Ruled>, ApiError> {
    rule_on(&s, &caller, &id, Verdict::Approve, &body).await
}

/// Reject a waiting action: `{"by"?, "reason"?, "params_hash"?}`.
#[utoipa::path(post, path = "/api/v1/actions/{id}/reject", tag = "approvals",
    params(("id" = String, Path, description = "the action")),
    request_body(content = RulingBody),
    responses((status = 200, body = Ruled), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn reject(
    State(s): State<ApiState>,
    Extension(caller): Extension<Principal>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Ruled>, ApiError> {
    rule_on(&s, &caller, &id, Verdict::Reject, &body).await
}

/// What an approval link carries.
#[derive(serde::Deserialize)]
pub(super) struct LinkQuery {
    verdict: Verdict,
    hash: String,
    expires: i64,
    sig: String,
}

/// The link's form.
#[derive(serde::Deserialize)]
pub(super) struct LinkForm {
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
pub(super) async fn linked(s: &ApiState, id: &str, q: &LinkQuery) -> Result<Waiting, Response> {
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
pub(super) async fn approval_page(
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
pub(super) async fn approval_link(
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
