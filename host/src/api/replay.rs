//! `POST /api/v1/replay`: a rule over the stored events of a window,
//! diffed against what was decided then ([`crate::replay`]).

use axum::Json;
use axum::extract::State;
use base64::Engine as _;
use serde::Serialize;
use utoipa::ToSchema;

use super::lists::instant;
use super::{ApiError, ApiState, ErrorBody};
use crate::replay::{self, Candidate, Difference, StartState, Summary};
use crate::store::Window;

/// Differences listed in an answer at most; the summary counts them all.
pub const MAX_LISTED: usize = 1000;

/// What to replay.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReplayBody {
    /// An installed rule (enabled or not); with `component_base64`, the
    /// name to give the candidate.
    rule: String,
    /// Compare with this installed rule's logged decisions (default:
    /// `rule`).
    #[serde(default)]
    against: Option<String>,
    /// Window start: RFC 3339, ms, or a duration back (`24h`).
    since: String,
    /// Window end (default: now).
    #[serde(default)]
    until: Option<String>,
    /// `empty` (default) or `snapshot` (the installed rule's state now).
    #[serde(default)]
    state: StartState,
    /// Stop after this many events (default 100000).
    #[serde(default)]
    max_events: Option<u64>,
    /// A candidate component that is not installed, base64.
    #[serde(default)]
    component_base64: Option<String>,
    /// The candidate's manifest (TOML).
    #[serde(default)]
    manifest: Option<String>,
}

/// How the replay went, and the events decided otherwise.
#[derive(Serialize, ToSchema)]
pub(super) struct ReplayAnswer {
    summary: Summary,
    /// In log order, the first 1000.
    differences: Vec<Difference>,
    /// Differences past the first 1000 (counted, not listed).
    differences_omitted: u64,
}

/// Replay a rule over stored events and diff its decisions with the
/// decisions log. Nothing outside is touched: capability calls are
/// refused. One replay runs at a time (409 while another does).
#[utoipa::path(post, path = "/api/v1/replay", tag = "replay",
    request_body(content = ReplayBody),
    responses((status = 200, body = ReplayAnswer), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub(super) async fn replay(
    State(s): State<ApiState>,
    body: axum::body::Bytes,
) -> Result<Json<ReplayAnswer>, ApiError> {
    let b: ReplayBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid replay: {e}")))?;
    let now = crate::store::now_ms();
    let at = |name: &str, v: &str| {
        instant(v, now).map_err(|e| ApiError::BadRequest(format!("{name}: {e}")))
    };
    let window = Window {
        since: Some(at("since", &b.since)?),
        until: b.until.as_deref().map(|u| at("until", u)).transpose()?,
    };
    let rule = match b.component_base64 {
        None => Candidate::Installed(b.rule.clone()),
        Some(wasm) => Candidate::Bytes {
            name: b.rule.clone(),
            wasm: base64::engine::general_purpose::STANDARD
                .decode(wasm.trim())
                .map_err(|e| ApiError::BadRequest(format!("component_base64: {e}")))?,
            manifest: b.manifest.unwrap_or_default(),
        },
    };
    let request = replay::Request {
        rule,
        against: b.against,
        window,
        state: b.state,
        max_events: b.max_events.unwrap_or(100_000),
        deadline: std::time::Duration::from_secs(120),
    };
    let _running = s.replay.running.try_acquire().map_err(|_| {
        ApiError::Conflict("another replay is running; try again when it ends".into())
    })?;
    let mut differences = Vec::new();
    let mut omitted = 0;
    let summary = replay::replay(&s.store, &s.replay, &request, |d| {
        if differences.len() < MAX_LISTED {
            differences.push(d);
        } else {
            omitted += 1;
        }
    })
    .await
    .map_err(|e| match e {
        replay::Error::NotFound(m) => ApiError::NotFound(m),
        replay::Error::Invalid(m) => ApiError::Unprocessable(m),
        replay::Error::Store(e) => e.into(),
    })?;
    Ok(Json(ReplayAnswer {
        summary,
        differences,
        differences_omitted: omitted,
    }))
}
