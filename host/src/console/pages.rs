//! The console's pages: incidents, an incident, plugins, dead letters,
//! the audit log, and replay.

use axum::Extension;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};

use super::{
    Fields, Session, badge, csrf_field, csrf_refused, json_text, layout, none, refused, when,
};
use crate::api::ApiState;
use crate::api::lists::instant;
use crate::model::{IncidentStatus, Severity};
use crate::registry::PluginStatus;
use crate::replay::{self, Candidate, StartState};
use crate::store::{
    AlertFilter, DecisionFilter, IncidentFilter, JobFilter, ListedJob, Queue, Window,
};

/// A store or API failure, as a page.
fn failed(e: impl Into<crate::api::ApiError>) -> Response {
    let (status, body) = e.into().answer();
    refused(status, "Not done", &body.error)
}

fn filled(v: Option<&String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty()).cloned()
}

/// The incident list: filters, newest first, refreshing every 15 s.
pub(crate) async fn incidents(
    State(s): State<ApiState>,
    Extension(session): Extension<Session>,
    Query(q): Query<Fields>,
) -> Response {
    let now = crate::store::now_ms();
    let status: Vec<IncidentStatus> = q
        .get("status")
        .map(|v| v.split(',').filter_map(IncidentStatus::parse).collect())
        .unwrap_or_default();
    let since = match filled(q.get("since")).map(|t| instant(&t, now)).transpose() {
        Ok(v) => v,
        Err(e) => {
            return refused(
                StatusCode::BAD_REQUEST,
                "Bad filter",
                &format!("since: {e}"),
            );
        }
    };
    let filter = IncidentFilter {
        status,
        service: filled(q.get("service")),
        severity: q.get("severity").and_then(|v| Severity::parse(v)),
        rule: filled(q.get("rule")),
        opened: Window { since, until: None },
    };
    let cursor = filled(q.get("cursor"));
    let page = match s.store.list_incidents(&filter, cursor.as_deref(), 50).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return refused(StatusCode::BAD_REQUEST, "Bad cursor", &e.to_string()),
        Err(e) => return failed(e),
    };
    let picked = |name: &str, value: &str| q.get(name).is_some_and(|v| v == value);
    let next = page.next_cursor.as_ref().map(|c| {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.extend_pairs(q.iter().filter(|(k, _)| k.as_str() != "cursor"));
        query.append_pair("cursor", c);
        format!("/ui?{}", query.finish())
    });
    let body = html! {
        meta http-equiv="refresh" content="15";
        h1 { "Incidents" }
        form class="filters" method="get" action="/ui" {
            label { "Status" select name="status" {
                option value="" { "any" }
                option value="open,mitigating" selected[picked("status", "open,mitigating")] { "active" }
                @for st in ["open", "mitigating", "resolved", "failed"] {
                    option value=(st) selected[picked("status", st)] { (st) }
                }
            } }
            label { "Severity" select name="severity" {
                option value="" { "any" }
                @for sev in ["critical", "error", "warning", "info"] {
                    option value=(sev) selected[picked("severity", sev)] { (sev) }
                }
            } }
            label { "Service" input name="service" value=[q.get("service")]; }
            label { "Rule" input name="rule" value=[q.get("rule")]; }
            label { "Since" input name="since" placeholder="24h" value=[q.get("since")]; }
            button type="submit" { "Filter" }
        }
        @if page.items.is_empty() {
            p class="muted" { "No incidents match." }
        } @else {
            table class="list" id="incidents" {
                thead { tr { th { "Opened" } th { "Status" } th { "Severity" } th { "Title" } th { "Service" } th { "Rule" } th { "Acknowledged" } } }
                tbody { @for i in &page.items {
                    tr {
                        td class="time" { (when(i.opened_at)) }
                        td { (badge(i.status.as_str())) }
                        td { (badge(i.severity.as_str())) }
                        td { a href={ "/ui/incidents/" (i.id) } { (i.title) } }
                        td { (i.service) }
                        td { (i.rule) }
                        td { @if let Some(by) = &i.acknowledged_by { (by) } @else { (none()) } }
                    }
                } }
            }
        }
        @if let Some(href) = next { p { a href=(href) { "Older →" } } }
    };
    layout("Incidents", &session, "/ui", body)
}

fn jobs_table(id: &str, jobs: &[ListedJob]) -> Markup {
    html! {
        @if jobs.is_empty() { p class="muted" { "None." } } @else {
            table class="list" id=(id) {
                thead { tr { th { "Asked" } th { "Plugin" } th { "Target" } th { "Status" } th { "Attempts" } th { "Result or last error" } } }
                tbody { @for j in jobs {
                    tr {
                        td class="time" { (when(j.created_at)) }
                        td { (j.job.plugin) }
                        td { (j.job.target) }
                        td { (badge(j.job.status.as_str())) }
                        td class="num" { (j.job.attempts) }
                        td { @if let Some(r) = &j.job.result { pre { (json_text(r)) } }
                             @else if let Some(e) = &j.job.last_error { span class="error" { (e) } }
                             @else { (none()) } }
                    }
                } }
            }
        }
    }
}

/// One incident: timeline, alerts, actions, notifications, decisions,
/// and acknowledgement.
pub(crate) async fn incident(
    State(s): State<ApiState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    let detail = match s.store.incident_detail(&id).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            return refused(
                StatusCode::NOT_FOUND,
                "No such incident",
                &format!("There is no incident {id}."),
            );
        }
        Err(e) => return failed(e),
    };
    let alerts = AlertFilter {
        incident: Some(id.clone()),
        ..AlertFilter::default()
    };
    let jobs = JobFilter {
        incident: Some(id.clone()),
        ..JobFilter::default()
    };
    let decisions = DecisionFilter {
        incident: Some(id.clone()),
        ..DecisionFilter::default()
    };
    let (alerts, actions, notifications, decisions) = match tokio::try_join!(
        s.store.list_alerts(&alerts, None, 200),
        s.store.list_jobs(Queue::Actions, &jobs, None, 200),
        s.store.list_jobs(Queue::Notifications, &jobs, None, 200),
        s.store.list_decisions(&decisions, None, 200),
    ) {
        Ok((Ok(a), Ok(ac), Ok(n), Ok(d))) => (a.items, ac.items, n.items, d.items),
        Ok(_) => {
            return refused(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Not shown",
                "a list failed",
            );
        }
        Err(e) => return failed(e),
    };
    let i = &detail.incident;
    let active = !i.status.is_closed();
    let body = html! {
        p class="crumbs" { a href="/ui" { "Incidents" } " / " (i.id) }
        h1 { (i.title) " " (badge(i.status.as_str())) " " (badge(i.severity.as_str())) }
        dl class="facts" {
            dt { "Service" } dd { (i.service) }
            dt { "Rule" } dd { (i.rule) }
            dt { "Opened" } dd { (when(i.opened_at)) }
            dt { "Closed" } dd { @if let Some(c) = i.closed_at { (when(c)) } @else { (none()) } }
            dt { "Summary" } dd { (i.summary) }
            dt { "Acknowledged" } dd id="acknowledged" {
                @if let (Some(by), Some(at)) = (&i.acknowledged_by, i.acknowledged_at) { (by) " at " (when(at)) } @else { (none()) }
            }
        }
        @if session.admin() && active {
            form method="post" action={ "/ui/incidents/" (i.id) "/acknowledge" } class="inline" {
                (csrf_field(&session))
                @if i.acknowledged_by.is_some() {
                    input type="hidden" name="undo" value="1";
                    button type="submit" class="secondary" { "Take the acknowledgement back" }
                } @else {
                    button type="submit" { "Acknowledge" }
                }
            }
        }
        h2 { "Timeline" }
        ol class="timeline" id="timeline" {
            @for e in &detail.timeline {
                li class={ "entry " (e.kind) } {
                    span class="time" { (when(e.at)) }
                    span class="kind" { (e.kind) }
                    @if let (Some(f), Some(t)) = (e.from_status, e.to_status) { span class="move" { (badge(f.as_str())) " → " (badge(t.as_str())) } }
                    span class="cause" { (e.cause) }
                }
            }
        }
        h2 { "Alerts" }
        @if alerts.is_empty() { p class="muted" { "None." } } @else {
            table class="list" id="alerts" {
                thead { tr { th { "First seen" } th { "Name" } th { "Status" } th { "Labels" } th { "Seen" } } }
                tbody { @for a in &alerts {
                    tr {
                        td class="time" { (when(a.first_seen)) }
                        td { (a.name) }
                        td { (badge(&a.status)) }
                        td class="labels" { @for (k, v) in &a.labels { code { (k) "=" (v) } " " } }
                        td class="num" { (a.occurrences) }
                    }
                } }
            }
        }
        h2 { "Actions" }
        (jobs_table("actions", &actions))
        h2 { "Notifications" }
        (jobs_table("notifications", &notifications))
        h2 { "Decisions" }
        @if decisions.is_empty() { p class="muted" { "None." } } @else {
            table class="list" id="decisions" {
                thead { tr { th { "At" } th { "Rule" } th { "Event" } th { "Decision" } } }
                tbody { @for d in &decisions {
                    tr {
                        td class="time" { (when(d.at)) }
                        td { (d.rule) @if let Some(v) = &d.rule_version { " " span class="muted" { (v) } } }
                        td { (d.event_kind) }
                        td { @if let Some(dec) = &d.decision { details { summary { "decision" } pre { (serde_json::to_string_pretty(dec).unwrap_or_default()) } } }
                             @else if let Some(e) = &d.error { span class="error" { (e) } } }
                    }
                } }
            }
        }
    };
    layout(&i.title, &session, "/ui", body)
}

/// Acknowledge an incident, or take the acknowledgement back (`undo`).
pub(crate) async fn acknowledge(
    State(s): State<ApiState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Form(form): Form<Fields>,
) -> Response {
    if let Some(r) = csrf_refused(&session, &form) {
        return r;
    }
    let by = if form.contains_key("undo") {
        None
    } else {
        Some(session.principal.name.as_str())
    };
    match s.store.acknowledge(&id, by).await {
        Ok(crate::store::Acknowledged::Done(_)) => {
            Redirect::to(&format!("/ui/incidents/{id}")).into_response()
        }
        Ok(crate::store::Acknowledged::NotFound) => {
            refused(StatusCode::NOT_FOUND, "No such incident", &id)
        }
        Ok(crate::store::Acknowledged::Closed(i)) => refused(
            StatusCode::CONFLICT,
            "Not acknowledged",
            &format!(
                "The incident is {}: only an active one can be acknowledged.",
                i.status
            ),
        ),
        Err(e) => failed(e),
    }
}

fn plugin_row(
    session: &Session,
    p: &PluginStatus,
    failures: &[crate::store::FailureRecord],
) -> Markup {
    let loaded = if p.loaded { "loaded" } else { "not-loaded" };
    html! {
        tr id={ "plugin-" (p.name) } {
            td { strong { (p.name) } br; span class="muted" { (p.description.clone().unwrap_or_default()) } }
            td { @if let Some(k) = p.kind { (format!("{k:?}").to_lowercase()) } @else { (none()) } }
            td { (p.version.clone().unwrap_or_default()) br; span class="muted" { (p.digest.clone().unwrap_or_default()) } }
            td { (badge(loaded)) @if let Some(e) = &p.error { br; span class="error" { (e) } } }
            td {
                (badge(if p.enabled { "enabled" } else { "disabled" }))
                @if session.admin() {
                    form method="post" action={ "/ui/plugins/" (p.name) "/" (if p.enabled { "disable" } else { "enable" }) } class="inline" {
                        (csrf_field(session))
                        button type="submit" class="switch" { (if p.enabled { "Disable" } else { "Enable" }) }
                    }
                }
            }
            td {
                @if let Some(b) = &p.breaker {
                    (badge(&format!("{b:?}").to_lowercase()))
                    @if session.admin() && !matches!(b, crate::runtime::BreakerState::Closed) {
                        form method="post" action={ "/ui/plugins/" (p.name) "/breaker-reset" } class="inline" {
                            (csrf_field(session))
                            button type="submit" class="secondary" { "Reset" }
                        }
                    }
                } @else { (none()) }
            }
            td { @for g in &p.grants { code { (g) } " " } }
            td { @if let Some(l) = &p.limits {
                span class="muted" { (l.fuel) " fuel · " (l.timeout_ms) " ms · " (l.memory_mb) " MiB" }
            } }
            td { @if failures.is_empty() { (none()) } @else { ul class="failures" { @for f in failures {
                li { span class="time" { (when(f.at)) } " " (f.kind) ": " (f.message) }
            } } } }
        }
    }
}

/// Plugins: kind, version, loaded or why not, the switch, the breaker,
/// grants, limits and recent sandbox failures.
pub(crate) async fn plugins(
    State(s): State<ApiState>,
    Extension(session): Extension<Session>,
) -> Response {
    let list = s.registry.list();
    let mut rows = Vec::new();
    for p in &list {
        let failures = s.registry.failures(&p.name, 3).await.unwrap_or_default();
        rows.push(plugin_row(&session, p, &failures));
    }
    let body = html! {
        h1 { "Plugins" }
        @if list.is_empty() { p class="muted" { "The plugin directory is empty." } } @else {
            table class="list" id="plugins" {
                thead { tr { th { "Plugin" } th { "Kind" } th { "Version" } th { "Loaded" } th { "Enabled" } th { "Breaker" } th { "Grants" } th { "Limits" } th { "Recent failures" } } }
                tbody { @for r in rows { (r) } }
            }
        }
    };
    layout("Plugins", &session, "/ui/plugins", body)
}

/// Enable, disable, or reset a plugin's breaker.
pub(crate) async fn change_plugin(
    State(s): State<ApiState>,
    Extension(session): Extension<Session>,
    Path((name, change)): Path<(String, String)>,
    Form(form): Form<Fields>,
) -> Response {
    if let Some(r) = csrf_refused(&session, &form) {
        return r;
    }
    let done = match change.as_str() {
        "enable" => s
            .registry
            .set_enabled(&name, true)
            .await
            .map_err(crate::api::ApiError::from),
        "disable" => s
            .registry
            .set_enabled(&name, false)
            .await
            .map_err(crate::api::ApiError::from),
        "breaker-reset" => s
            .registry
            .reset_breaker(&name)
            .map_err(crate::api::ApiError::from),
        _ => return refused(StatusCode::NOT_FOUND, "No such change", &change),
    };
    match done {
        Ok(()) => {
            tracing::info!(token = %session.principal.name, plugin = %name, change = %change, "console change");
            Redirect::to("/ui/plugins").into_response()
        }
        Err(e) => failed(e),
    }
}

/// Dead letters, with replay for actions and notifications.
pub(crate) async fn dead_letters(
    State(s): State<ApiState>,
    Extension(session): Extension<Session>,
) -> Response {
    let letters = match s.store.dead_letters(200).await {
        Ok(l) => l,
        Err(e) => return failed(e),
    };
    let body = html! {
        h1 { "Dead letters" }
        p class="muted" { "What a stage gave up on, and why. Actions and notifications can be run again with a fresh attempt budget, once." }
        @if letters.is_empty() { p class="muted" { "None." } } @else {
            table class="list" id="dead-letters" {
                thead { tr { th { "At" } th { "Stage" } th { "Kind" } th { "Error" } th { "Attempts" } th { "" } } }
                tbody { @for l in &letters {
                    tr id={ "letter-" (l.id) } {
                        td class="time" { (when(l.at)) }
                        td { (l.consumer) }
                        td { (l.kind) }
                        td { span class="error" { (l.error) } }
                        td class="num" { (l.attempts) }
                        td {
                            @if let Some(at) = l.replayed_at { "replayed " (when(at)) }
                            @else if session.admin() && (l.consumer == "actions" || l.consumer == "notifications") {
                                form method="post" action={ "/ui/dead-letters/" (l.id) "/replay" } class="inline" {
                                    (csrf_field(&session))
                                    button type="submit" { "Replay" }
                                }
                            }
                        }
                    }
                } }
            }
        }
    };
    layout("Dead letters", &session, "/ui/dead-letters", body)
}

/// Run a dead letter's job again.
pub(crate) async fn replay_dead_letter(
    State(s): State<ApiState>,
    Extension(session): Extension<Session>,
    Path(id): Path<i64>,
    Form(form): Form<Fields>,
) -> Response {
    if let Some(r) = csrf_refused(&session, &form) {
        return r;
    }
    match crate::api::records::replay_letter(&s, id).await {
        Ok(_) => Redirect::to("/ui/dead-letters").into_response(),
        Err(e) => failed(e),
    }
}

/// The capability audit log, newest first.
pub(crate) async fn audit(
    State(s): State<ApiState>,
    Extension(session): Extension<Session>,
    Query(q): Query<Fields>,
) -> Response {
    let plugin = filled(q.get("plugin"));
    let records = match s.store.audit_log(plugin.as_deref(), 300).await {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let body = html! {
        h1 { "Audit log" }
        form class="filters" method="get" action="/ui/audit" {
            label { "Plugin" input name="plugin" value=[plugin.as_ref()]; }
            button type="submit" { "Filter" }
        }
        @if records.is_empty() { p class="muted" { "Nothing recorded." } } @else {
            table class="list" id="audit" {
                thead { tr { th { "At" } th { "Plugin" } th { "Capability" } th { "Operation" } th { "Target" } th { "" } th { "Detail" } } }
                tbody { @for r in &records {
                    tr {
                        td class="time" { (when(r.at)) }
                        td { (r.plugin) }
                        td { (r.capability) }
                        td { (r.operation) }
                        td { (r.target) }
                        td { (badge(if r.allowed { "allowed" } else { "refused" })) }
                        td { (r.detail) }
                    }
                } }
            }
        }
    };
    layout("Audit", &session, "/ui/audit", body)
}

fn replay_form_markup(s: &ApiState, session: &Session, q: &Fields) -> Markup {
    let rules: Vec<String> = s
        .registry
        .list()
        .into_iter()
        .filter(|p| p.kind == Some(crate::runtime::PluginKind::Rule))
        .map(|p| p.name)
        .collect();
    let chosen = q.get("rule");
    html! {
        h1 { "Replay a rule" }
        p class="muted" { "Runs an installed rule, enabled or not, over the stored events of a window and compares each decision with what was decided then. Nothing outside is touched: capability calls are refused." }
        @if session.admin() {
            form class="filters" method="post" action="/ui/replay" {
                (csrf_field(session))
                label { "Rule" select name="rule" { @for r in &rules { option value=(r) selected[chosen == Some(r)] { (r) } } } }
                label { "Compare with" input name="against" placeholder="the same rule" value=[q.get("against")]; }
                label { "Since" input name="since" value=(q.get("since").cloned().unwrap_or_else(|| "24h".into())) required; }
                label { "Until" input name="until" placeholder="now" value=[q.get("until")]; }
                label { "State" select name="state" {
                    option value="empty" { "empty" }
                    option value="snapshot" selected[q.get("state").is_some_and(|v| v == "snapshot")] { "snapshot of now" }
                } }
                button type="submit" { "Replay" }
            }
        } @else {
            p { "A replay runs plugins: it needs a token with the " code { "admin" } " scope." }
        }
    }
}

/// The replay form.
pub(crate) async fn replay_form(
    State(s): State<ApiState>,
    Extension(session): Extension<Session>,
) -> Response {
    let body = replay_form_markup(&s, &session, &Fields::new());
    layout("Replay", &session, "/ui/replay", body)
}

/// Run a replay and show its diff.
pub(crate) async fn replay(
    State(s): State<ApiState>,
    Extension(session): Extension<Session>,
    Form(form): Form<Fields>,
) -> Response {
    if let Some(r) = csrf_refused(&session, &form) {
        return r;
    }
    let now = crate::store::now_ms();
    let at = |name: &str| filled(form.get(name)).map(|t| instant(&t, now)).transpose();
    let (since, until) = match (at("since"), at("until")) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return refused(StatusCode::BAD_REQUEST, "Bad window", &e),
    };
    let Some(rule) = filled(form.get("rule")) else {
        return refused(
            StatusCode::BAD_REQUEST,
            "No rule",
            "Choose a rule to replay.",
        );
    };
    let request = replay::Request {
        rule: Candidate::Installed(rule),
        against: filled(form.get("against")),
        window: Window { since, until },
        state: if form.get("state").is_some_and(|v| v == "snapshot") {
            StartState::Snapshot
        } else {
            StartState::Empty
        },
        max_events: 100_000,
        deadline: std::time::Duration::from_secs(120),
    };
    let Ok(_running) = s.replay.running.try_acquire() else {
        return refused(
            StatusCode::CONFLICT,
            "Busy",
            "Another replay is running; try again when it ends.",
        );
    };
    let mut diffs = Vec::new();
    let summary = match replay::replay(&s.store, &s.replay, &request, |d| {
        if diffs.len() < 500 {
            diffs.push(d);
        }
    })
    .await
    {
        Ok(summary) => summary,
        Err(replay::Error::NotFound(m)) => {
            return refused(StatusCode::NOT_FOUND, "No such rule", &m);
        }
        Err(replay::Error::Invalid(m)) => {
            return refused(StatusCode::UNPROCESSABLE_ENTITY, "Cannot replay", &m);
        }
        Err(replay::Error::Store(e)) => return failed(e),
    };
    let body = html! {
        (replay_form_markup(&s, &session, &form))
        h2 { "Result" }
        p id="replay-summary" class="summary" {
            strong { (summary.rule) } " " (summary.version) " (" (summary.digest) ") against " strong { (summary.against) } ": "
            (summary.replayed) " events, "
            span class="same" { (summary.same) " same" } ", "
            span class="different" { (summary.different) " different" } ", "
            (summary.errors) " errors"
            @if let Some(t) = &summary.truncated { " — " (t) }
        }
        @if summary.refused_calls > 0 { p class="muted" { (summary.refused_calls) " capability call(s) " (summary.capabilities) } }
        @if !diffs.is_empty() {
            table class="list diff" id="differences" {
                thead { tr { th { "Event" } th { "Field" } th { "Then" } th { "Now" } } }
                tbody { @for d in &diffs {
                    @let rows = d.changes.len().max(1);
                    @for (n, c) in d.changes.iter().enumerate() {
                        tr {
                            @if n == 0 { td rowspan=(rows) { (when(d.time as i64)) br; code { (d.event_kind) } " " (d.alert.clone().unwrap_or_default()) } }
                            td { (c.field) }
                            td class="then" { pre { (serde_json::to_string_pretty(&c.then).unwrap_or_default()) } }
                            td class="now" { pre { (serde_json::to_string_pretty(&c.now).unwrap_or_default()) } }
                        }
                    }
                    @if d.changes.is_empty() {
                        tr {
                            td { (when(d.time as i64)) br; code { (d.event_kind) } }
                            td { "error" }
                            td class="then" { (d.then_error.clone().unwrap_or_default()) }
                            td class="now" { (d.now_error.clone().unwrap_or_default()) }
                        }
                    }
                } }
            }
        }
    };
    layout("Replay", &session, "/ui/replay", body)
}
