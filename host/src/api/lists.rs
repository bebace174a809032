//! The lists an operator pages through: incidents, alerts, actions,
//! notifications and decisions, each filtered by query parameters and
//! paged by `cursor` (the `next_cursor` of the page before), and incident
//! acknowledgement.
//!
//! Times in filters are RFC 3339, ms since the epoch, or a duration back
//! from now (`90s`, `15m`, `24h`, `7d`). A filter value that cannot be
//! read is a 400 naming the parameter, never an empty page.

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::Principal;
use super::{ApiError, ApiState, ErrorBody};
use crate::model::{AlertStatus, Incident, IncidentStatus, JobStatus, Severity};
use crate::store::{
    Acknowledged, AlertFilter, BadCursor, Decision, DecisionFilter, IncidentFilter, JobFilter,
    ListedJob, Page, Queue, StoredAlert, Window,
};

/// The largest page; the default is 50.
pub const MAX_PAGE: u32 = 1000;

/// Paging and time parameters every list takes.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct Paging {
    cursor: Option<String>,
    // Text, not u32: a flattened query struct sees every value as a string.
    limit: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

impl Paging {
    fn limit(&self) -> Result<u32, ApiError> {
        page_limit(self.limit.as_deref())
    }

    fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref().filter(|c| !c.is_empty())
    }

    fn window(&self) -> Result<Window, ApiError> {
        let now = crate::store::now_ms();
        let read = |name: &str, v: &Option<String>| {
            v.as_deref()
                .filter(|t| !t.trim().is_empty())
                .map(|t| instant(t, now).map_err(|e| ApiError::BadRequest(format!("{name}: {e}"))))
                .transpose()
        };
        Ok(Window {
            since: read("since", &self.since)?,
            until: read("until", &self.until)?,
        })
    }
}

/// A page size: 1 to [`MAX_PAGE`], default 50 when the parameter is absent.
/// The document calls it an integer, so an empty `limit=` or a signed one
/// (`+5`, which Rust's parser would take) is a 400 like any other non-number.
pub(super) fn page_limit(text: Option<&str>) -> Result<u32, ApiError> {
    let Some(text) = text else { return Ok(50) };
    match text
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| text.parse::<u32>())
    {
        Some(Ok(n @ 1..=MAX_PAGE)) => Ok(n),
        _ => Err(ApiError::BadRequest(format!(
            "limit must be a whole number from 1 to {MAX_PAGE}, not `{text}`"
        ))),
    }
}

/// A filter value, unless it was left empty (as a form sends it).
fn given(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

/// An instant: RFC 3339, ms since the epoch, or a duration before `now`
/// (`30s`, `15m`, `24h`, `7d`).
pub fn instant(text: &str, now_ms: i64) -> Result<i64, String> {
    let t = text.trim();
    if let Ok(ms) = t.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(t) {
        return Ok(at.timestamp_millis());
    }
    let last = t.chars().last();
    let unit_ms = match last {
        Some('s') => 1_000,
        Some('m') => 60_000,
        Some('h') => 3_600_000,
        Some('d') => 86_400_000,
        _ => 0,
    };
    // Cut the unit by its own length: the text may end in any character.
    let number = &t[..t.len() - last.map_or(0, char::len_utf8)];
    match number.parse::<u32>() {
        Ok(n) if unit_ms > 0 => Ok(now_ms - i64::from(n) * unit_ms),
        _ => Err(format!(
            "`{t}` is not RFC 3339, ms since the epoch, or a duration like 24h"
        )),
    }
}

/// A comma-separated list of names, each parsed.
fn names<T>(
    param: &str,
    text: Option<&str>,
    parse: fn(&str) -> Option<T>,
) -> Result<Vec<T>, ApiError> {
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return Ok(Vec::new());
    };
    text.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| {
            parse(n).ok_or_else(|| ApiError::BadRequest(format!("{param}: unknown value `{n}`")))
        })
        .collect()
}

fn one<T>(
    param: &str,
    text: Option<&str>,
    parse: fn(&str) -> Option<T>,
) -> Result<Option<T>, ApiError> {
    text.map(|n| {
        parse(n).ok_or_else(|| ApiError::BadRequest(format!("{param}: unknown value `{n}`")))
    })
    .transpose()
}

/// The page, or a 400 for a cursor that is not this list's.
fn read<T>(page: Result<Page<T>, BadCursor>) -> Result<Page<T>, ApiError> {
    page.map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// A page of incidents.
#[derive(Serialize, ToSchema)]
pub(super) struct IncidentPage {
    incidents: Vec<Incident>,
    /// Pass as `cursor` for the next page; `null` on the last.
    next_cursor: Option<String>,
}

/// A page of alert instances.
#[derive(Serialize, ToSchema)]
pub(super) struct AlertPage {
    alerts: Vec<StoredAlert>,
    /// Pass as `cursor` for the next page; `null` on the last.
    next_cursor: Option<String>,
}

/// A page of actions.
#[derive(Serialize, ToSchema)]
pub(super) struct ActionPage {
    actions: Vec<ListedJob>,
    /// Pass as `cursor` for the next page; `null` on the last.
    next_cursor: Option<String>,
}

/// A page of notifications.
#[derive(Serialize, ToSchema)]
pub(super) struct NotificationPage {
    notifications: Vec<ListedJob>,
    /// Pass as `cursor` for the next page; `null` on the last.
    next_cursor: Option<String>,
}

/// A page of the decisions log.
#[derive(Serialize, ToSchema)]
pub(super) struct DecisionPage {
    decisions: Vec<Decision>,
    /// Pass as `cursor` for the next page; `null` on the last.
    next_cursor: Option<String>,
}

/// An incident after an acknowledgement changed.
#[derive(Serialize, ToSchema)]
pub(super) struct IncidentAnswer {
    incident: Incident,
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct IncidentQuery {
    status: Option<String>,
    service: Option<String>,
    severity: Option<String>,
    rule: Option<String>,
    #[serde(flatten)]
    paging: Paging,
}

/// Incidents, newest first.
#[utoipa::path(get, path = "/api/v1/incidents", tag = "incidents",
    params(
        ("status" = Option<String>, Query, description = "comma-separated: open, mitigating, resolved, failed"),
        ("service" = Option<String>, Query, description = "the affected service"),
        ("severity" = Option<String>, Query, description = "info, warning, error or critical"),
        ("rule" = Option<String>, Query, description = "the rule that opened it"),
        ("since" = Option<String>, Query, description = "opened at or after: RFC 3339, ms, or a duration back (24h)"),
        ("until" = Option<String>, Query, description = "opened before"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the page before"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "1 to 1000, default 50"),
    ),
    responses((status = 200, body = IncidentPage), (status = 400, body = ErrorBody)))]
pub(super) async fn incidents(
    State(s): State<ApiState>,
    Query(q): Query<IncidentQuery>,
) -> Result<Json<IncidentPage>, ApiError> {
    let filter = IncidentFilter {
        status: names("status", q.status.as_deref(), IncidentStatus::parse)?,
        service: given(q.service),
        severity: one("severity", q.severity.as_deref(), Severity::parse)?,
        rule: given(q.rule),
        opened: q.paging.window()?,
    };
    let limit = q.paging.limit()?;
    let page = read(
        s.store
            .list_incidents(&filter, q.paging.cursor(), limit)
            .await?,
    )?;
    Ok(Json(IncidentPage {
        incidents: page.items,
        next_cursor: page.next_cursor,
    }))
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct AlertQuery {
    status: Option<String>,
    name: Option<String>,
    incident: Option<String>,
    #[serde(flatten)]
    paging: Paging,
}

fn alert_status(name: &str) -> Option<AlertStatus> {
    [AlertStatus::Firing, AlertStatus::Resolved]
        .into_iter()
        .find(|s| s.as_str() == name)
}

/// Alert instances, the most recently first seen first.
#[utoipa::path(get, path = "/api/v1/alerts", tag = "incidents",
    params(
        ("status" = Option<String>, Query, description = "firing or resolved"),
        ("name" = Option<String>, Query, description = "the alertname"),
        ("incident" = Option<String>, Query, description = "linked to this incident"),
        ("since" = Option<String>, Query, description = "first seen at or after"),
        ("until" = Option<String>, Query, description = "first seen before"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the page before"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "1 to 1000, default 50"),
    ),
    responses((status = 200, body = AlertPage), (status = 400, body = ErrorBody)))]
pub(super) async fn alerts(
    State(s): State<ApiState>,
    Query(q): Query<AlertQuery>,
) -> Result<Json<AlertPage>, ApiError> {
    let filter = AlertFilter {
        status: one("status", q.status.as_deref(), alert_status)?,
        name: given(q.name),
        incident: given(q.incident),
        seen: q.paging.window()?,
    };
    let limit = q.paging.limit()?;
    let page = read(
        s.store
            .list_alerts(&filter, q.paging.cursor(), limit)
            .await?,
    )?;
    Ok(Json(AlertPage {
        alerts: page.items,
        next_cursor: page.next_cursor,
    }))
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct JobQuery {
    incident: Option<String>,
    status: Option<String>,
    plugin: Option<String>,
    rule: Option<String>,
    #[serde(flatten)]
    paging: Paging,
}

async fn jobs(s: &ApiState, queue: Queue, q: JobQuery) -> Result<Page<ListedJob>, ApiError> {
    let filter = JobFilter {
        incident: given(q.incident),
        status: names("status", q.status.as_deref(), JobStatus::parse)?,
        plugin: given(q.plugin),
        rule: given(q.rule),
        created: q.paging.window()?,
    };
    let limit = q.paging.limit()?;
    read(
        s.store
            .list_jobs(queue, &filter, q.paging.cursor(), limit)
            .await?,
    )
}

/// Actions, newest first, with attempts, last error and result.
#[utoipa::path(get, path = "/api/v1/actions", tag = "incidents",
    params(
        ("incident" = Option<String>, Query, description = "of this incident"),
        ("status" = Option<String>, Query, description = "comma-separated job statuses"),
        ("plugin" = Option<String>, Query, description = "run by this plugin"),
        ("rule" = Option<String>, Query, description = "asked for by this rule"),
        ("since" = Option<String>, Query, description = "asked for at or after"),
        ("until" = Option<String>, Query, description = "asked for before"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the page before"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "1 to 1000, default 50"),
    ),
    responses((status = 200, body = ActionPage), (status = 400, body = ErrorBody)))]
pub(super) async fn actions(
    State(s): State<ApiState>,
    Query(q): Query<JobQuery>,
) -> Result<Json<ActionPage>, ApiError> {
    let page = jobs(&s, Queue::Actions, q).await?;
    Ok(Json(ActionPage {
        actions: page.items,
        next_cursor: page.next_cursor,
    }))
}

/// Notifications, newest first; the same filters as actions.
#[utoipa::path(get, path = "/api/v1/notifications", tag = "incidents",
    params(
        ("incident" = Option<String>, Query, description = "of this incident"),
        ("status" = Option<String>, Query, description = "comma-separated job statuses"),
        ("plugin" = Option<String>, Query, description = "run by this plugin"),
        ("rule" = Option<String>, Query, description = "asked for by this rule"),
        ("since" = Option<String>, Query, description = "asked for at or after"),
        ("until" = Option<String>, Query, description = "asked for before"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the page before"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "1 to 1000, default 50"),
    ),
    responses((status = 200, body = NotificationPage), (status = 400, body = ErrorBody)))]
pub(super) async fn notifications(
    State(s): State<ApiState>,
    Query(q): Query<JobQuery>,
) -> Result<Json<NotificationPage>, ApiError> {
    let page = jobs(&s, Queue::Notifications, q).await?;
    Ok(Json(NotificationPage {
        notifications: page.items,
        next_cursor: page.next_cursor,
    }))
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct DecisionQuery {
    incident: Option<String>,
    rule: Option<String>,
    event: Option<String>,
    #[serde(flatten)]
    paging: Paging,
}

/// What rules decided, newest first.
#[utoipa::path(get, path = "/api/v1/decisions", tag = "incidents",
    params(
        ("incident" = Option<String>, Query, description = "about this incident"),
        ("rule" = Option<String>, Query, description = "made by this rule"),
        ("event" = Option<String>, Query, description = "on this event id"),
        ("since" = Option<String>, Query, description = "made at or after"),
        ("until" = Option<String>, Query, description = "made before"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the page before"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "1 to 1000, default 50"),
    ),
    responses((status = 200, body = DecisionPage), (status = 400, body = ErrorBody)))]
pub(super) async fn decisions(
    State(s): State<ApiState>,
    Query(q): Query<DecisionQuery>,
) -> Result<Json<DecisionPage>, ApiError> {
    let filter = DecisionFilter {
        incident: given(q.incident),
        rule: given(q.rule),
        event: given(q.event),
        at: q.paging.window()?,
    };
    let limit = q.paging.limit()?;
    let page = read(
        s.store
            .list_decisions(&filter, q.paging.cursor(), limit)
            .await?,
    )?;
    Ok(Json(DecisionPage {
        decisions: page.items,
        next_cursor: page.next_cursor,
    }))
}

/// The body of an acknowledgement (may be empty).
#[derive(Debug, Default, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AckBody {
    /// Who, when the token is shared (recorded beside its name).
    #[serde(default)]
    by: Option<String>,
}

/// Acknowledge an active incident. Repeat notifications about it are
/// muted until its status next changes. 409 if it has closed.
#[utoipa::path(post, path = "/api/v1/incidents/{id}/acknowledge", tag = "incidents",
    params(("id" = String, Path, description = "the incident")),
    request_body(content = Option<AckBody>, description = "optional: who, when the token is shared"),
    responses((status = 200, body = IncidentAnswer), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn acknowledge(
    State(s): State<ApiState>,
    Extension(caller): Extension<Principal>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<IncidentAnswer>, ApiError> {
    let empty = body.iter().all(u8::is_ascii_whitespace) || body.trim_ascii() == b"null";
    let b: AckBody = if empty {
        AckBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid acknowledgement: {e}")))?
    };
    let by = super::recorded_by(&caller, b.by.as_deref());
    acknowledged(&id, s.store.acknowledge(&id, Some(&by)).await?)
}

/// Take an acknowledgement back: notifications flow again.
#[utoipa::path(delete, path = "/api/v1/incidents/{id}/acknowledge", tag = "incidents",
    params(("id" = String, Path, description = "the incident")),
    responses((status = 200, body = IncidentAnswer), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(super) async fn unacknowledge(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<IncidentAnswer>, ApiError> {
    acknowledged(&id, s.store.acknowledge(&id, None).await?)
}

fn acknowledged(id: &str, a: Acknowledged) -> Result<Json<IncidentAnswer>, ApiError> {
    match a {
        Acknowledged::Done(incident) => Ok(Json(IncidentAnswer { incident })),
        Acknowledged::NotFound => Err(ApiError::NotFound(format!("no incident `{id}`"))),
        Acknowledged::Closed(i) => Err(ApiError::Conflict(format!(
            "incident `{id}` is {}; only an open or mitigating incident can be acknowledged",
            i.status
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::{instant, page_limit};

    #[test]
    fn a_page_limit_is_a_plain_number_in_range_or_absent() {
        assert_eq!(page_limit(None).ok(), Some(50));
        assert_eq!(page_limit(Some("1")).ok(), Some(1));
        assert_eq!(page_limit(Some("1000")).ok(), Some(1000));
        // Found by schemathesis: `limit=` was read as absent although the
        // document says integer.
        for bad in ["", "0", "1001", "+5", "-1", " 5", "5.0", "ten"] {
            assert!(page_limit(Some(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn instants_are_rfc3339_ms_or_a_duration_back() {
        let now = 1_700_000_000_000;
        assert_eq!(instant("1699999999000", now), Ok(1_699_999_999_000));
        assert_eq!(instant("2023-11-14T22:13:20Z", now), Ok(1_700_000_000_000));
        assert_eq!(instant("24h", now), Ok(now - 86_400_000));
        assert_eq!(instant("15m", now), Ok(now - 900_000));
        assert_eq!(instant("7d", now), Ok(now - 7 * 86_400_000));
        // Found by schemathesis: a multi-byte last character once made
        // the unit cut panic.
        for bad in ["yesterday", "h", "-5m", "5w", "", "\u{80}", "5\u{e9}"] {
            assert!(instant(bad, now).is_err(), "{bad}");
        }
    }
}
