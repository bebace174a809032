//! The API's lists: incidents, alerts, actions, notifications and the
//! decisions log, filtered, newest first, and paged by a cursor. A cursor
//! is the last row's position in the list's order (a unique id, or the
//! columns that make one), so a page is one indexed range read however
//! deep it is, and rows written meanwhile neither repeat nor shift a page.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::incidents::INCIDENT_COLUMNS;
use super::queues::{JOB_COLUMNS, Queue};
use super::rows::{alert_from, decision_from, incident_from, job_from};
use super::{Error, Store};
use crate::model::{AlertStatus, Incident, IncidentStatus, Job, JobStatus, Severity};

/// One page of a list, and where the next one starts (`None`: this is
/// the last).
#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    /// The rows, newest first.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<String>,
}

/// A time window on a list's time column, ms since the epoch: `since`
/// inclusive, `until` exclusive.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    /// From (inclusive).
    pub since: Option<i64>,
    /// Up to (exclusive).
    pub until: Option<i64>,
}

/// Which incidents.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    /// Any of these statuses (empty: all).
    pub status: Vec<IncidentStatus>,
    /// Of this service.
    pub service: Option<String>,
    /// Of this severity.
    pub severity: Option<Severity>,
    /// Opened by this rule.
    pub rule: Option<String>,
    /// Opened in this window.
    pub opened: Window,
}

/// Which alerts.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    /// Firing or resolved.
    pub status: Option<AlertStatus>,
    /// The `alertname`.
    pub name: Option<String>,
    /// Linked to this incident.
    pub incident: Option<String>,
    /// First seen in this window.
    pub seen: Window,
}

/// Which actions or notifications.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Of this incident.
    pub incident: Option<String>,
    /// Any of these statuses (empty: all).
    pub status: Vec<JobStatus>,
    /// Run by this plugin.
    pub plugin: Option<String>,
    /// Asked for by this rule.
    pub rule: Option<String>,
    /// Created in this window.
    pub created: Window,
}

/// Which decisions.
#[derive(Debug, Clone, Default)]
pub struct DecisionFilter {
    /// About this incident.
    pub incident: Option<String>,
    /// Made by this rule.
    pub rule: Option<String>,
    /// On this event.
    pub event: Option<String>,
    /// Made in this window.
    pub at: Window,
}

/// An alert instance as stored: one series (`fingerprint`) from one
/// `starts_at`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StoredAlert {
    /// `fingerprint:starts_at`, as incidents list their alerts.
    pub id: String,
    /// The series.
    pub fingerprint: String,
    /// `alertname`.
    pub name: String,
    /// Firing or resolved.
    pub status: String,
    /// From the `severity` label.
    pub severity: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// When it started (ms).
    pub starts_at: i64,
    /// When it ended, if it has.
    pub ends_at: Option<i64>,
    /// Where it came from.
    pub generator_url: Option<String>,
    /// Alertmanager's group key.
    pub group_key: String,
    /// First received (ms).
    pub first_seen: i64,
    /// Last received (ms).
    pub last_seen: i64,
    /// Deliveries received, retries and HA duplicates included.
    pub occurrences: i64,
}

/// An action or notification with when it was asked for and last changed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ListedJob {
    /// The job.
    #[serde(flatten)]
    pub job: Job,
    /// Asked for (ms).
    pub created_at: i64,
    /// Last changed (ms).
    pub updated_at: i64,
}

/// One rule invocation from the decisions log.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Decision {
    /// Its position in the log.
    pub id: i64,
    /// The rule.
    pub rule: String,
    /// The rule's version (`describe`), when logged.
    pub rule_version: Option<String>,
    /// The rule component's digest, when logged.
    pub rule_digest: Option<String>,
    /// The event decided on.
    pub event_id: String,
    /// Its kind.
    pub event_kind: String,
    /// Its trace.
    pub trace_id: String,
    /// The incident the decision applied to.
    pub incident_id: Option<String>,
    /// What the rule decided, with every effect it asked for (incident
    /// directive, actions, notifications, signals); `null` if it failed.
    pub decision: Option<serde_json::Value>,
    /// How the rule failed.
    pub error: Option<String>,
    /// When (ms).
    pub at: i64,
}

/// A cursor that is not one of this list's.
#[derive(Debug, thiserror::Error)]
#[error("invalid cursor `{0}`: pass a next_cursor this list returned")]
pub struct BadCursor(pub String);

/// A `WHERE` clause built from optional filters, its arguments numbered
/// in order (`$N` runs on both backends).
#[derive(Default)]
struct Where {
    clauses: Vec<String>,
    args: Vec<Arg>,
}

enum Arg {
    Text(String),
    Int(i64),
}

impl Where {
    fn arg(&mut self, a: Arg) -> String {
        self.args.push(a);
        format!("${}", self.args.len())
    }

    fn eq(&mut self, column: &str, value: Option<&str>) {
        if let Some(v) = value {
            let p = self.arg(Arg::Text(v.to_owned()));
            self.clauses.push(format!("{column} = {p}"));
        }
    }

    fn any_of(&mut self, column: &str, values: &[&str]) {
        if values.is_empty() {
            return;
        }
        let ps: Vec<String> = values
            .iter()
            .map(|v| self.arg(Arg::Text((*v).to_owned())))
            .collect();
        self.clauses
            .push(format!("{column} IN ({})", ps.join(", ")));
    }

    fn window(&mut self, column: &str, w: Window) {
        if let Some(since) = w.since {
            let p = self.arg(Arg::Int(since));
            self.clauses.push(format!("{column} >= {p}"));
        }
        if let Some(until) = w.until {
            let p = self.arg(Arg::Int(until));
            self.clauses.push(format!("{column} < {p}"));
        }
    }

    fn raw(&mut self, clause: String) {
        self.clauses.push(clause);
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.clauses.join(" AND "))
        }
    }

    /// `SELECT {select} FROM {from} WHERE … ORDER BY {order} LIMIT n+1`:
    /// one row more than asked, to know whether there is a next page.
    async fn fetch(
        mut self,
        store: &Store,
        select: &str,
        order: &str,
        limit: u32,
    ) -> Result<Vec<AnyRow>, Error> {
        let n = self.arg(Arg::Int(i64::from(limit) + 1));
        let sql = format!("SELECT {select} {} ORDER BY {order} LIMIT {n}", self.sql());
        let mut q = sqlx::query(&sql);
        for a in self.args {
            q = match a {
                Arg::Text(t) => q.bind(t),
                Arg::Int(i) => q.bind(i),
            };
        }
        Ok(q.fetch_all(&store.reads).await?)
    }
}

/// The page of `rows` (one more than `limit` was asked for), with the
/// cursor of its last row.
fn page<T>(
    rows: Vec<AnyRow>,
    limit: u32,
    read: impl Fn(&AnyRow) -> Result<T, sqlx::Error>,
    cursor: impl Fn(&T) -> String,
) -> Result<Page<T>, Error> {
    let more = rows.len() > limit as usize;
    let items = rows
        .iter()
        .take(limit as usize)
        .map(read)
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if more { items.last().map(cursor) } else { None };
    Ok(Page { items, next_cursor })
}

impl Store {
    /// Incidents, newest first (by id: UUIDv7 follows opening order).
    pub async fn list_incidents(
        &self,
        f: &IncidentFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Result<Page<Incident>, BadCursor>, Error> {
        let mut w = Where::default();
        let statuses: Vec<&str> = f.status.iter().map(|s| s.as_str()).collect();
        w.any_of("status", &statuses);
        w.eq("service", f.service.as_deref());
        w.eq("severity", f.severity.map(Severity::as_str));
        w.eq("rule", f.rule.as_deref());
        w.window("opened_at", f.opened);
        if let Some(c) = cursor {
            if uuid::Uuid::parse_str(c).is_err() {
                return Ok(Err(BadCursor(c.to_owned())));
            }
            let p = w.arg(Arg::Text(c.to_owned()));
            w.raw(format!("id < {p}"));
        }
        let select = format!("{INCIDENT_COLUMNS} FROM incidents");
        let rows = w.fetch(self, &select, "id DESC", limit).await?;
        Ok(Ok(page(rows, limit, incident_from, |i| i.id.clone())?))
    }

    /// Alert instances, the most recently first seen first.
    pub async fn list_alerts(
        &self,
        f: &AlertFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Result<Page<StoredAlert>, BadCursor>, Error> {
        let mut w = Where::default();
        w.eq("a.status", f.status.map(AlertStatus::as_str));
        w.eq("a.name", f.name.as_deref());
        w.window("a.first_seen", f.seen);
        if let Some(incident) = &f.incident {
            let p = w.arg(Arg::Text(incident.clone()));
            w.raw(format!(
                "EXISTS (SELECT 1 FROM incident_alerts l WHERE l.incident_id = {p}
                 AND l.fingerprint = a.fingerprint AND l.starts_at = a.starts_at)"
            ));
        }
        if let Some(c) = cursor {
            // `first_seen:starts_at:fingerprint`; the fingerprint may hold
            // anything, so it is last.
            let mut parts = c.splitn(3, ':');
            let (Some(seen), Some(starts), Some(fp)) = (
                parts.next().and_then(|p| p.parse::<i64>().ok()),
                parts.next().and_then(|p| p.parse::<i64>().ok()),
                parts.next(),
            ) else {
                return Ok(Err(BadCursor(c.to_owned())));
            };
            let (s, st, f) = (
                w.arg(Arg::Int(seen)),
                w.arg(Arg::Int(starts)),
                w.arg(Arg::Text(fp.to_owned())),
            );
            w.raw(format!(
                "(a.first_seen < {s} OR (a.first_seen = {s} AND (a.starts_at < {st}
                  OR (a.starts_at = {st} AND a.fingerprint < {f}))))"
            ));
        }
        let select = "a.fingerprint, a.starts_at, a.name, a.status, a.severity, a.labels, \
                      a.annotations, a.ends_at, a.generator_url, a.group_key, a.first_seen, \
                      a.last_seen, a.occurrences FROM alerts a";
        let order = "a.first_seen DESC, a.starts_at DESC, a.fingerprint DESC";
        let rows = w.fetch(self, select, order, limit).await?;
        Ok(Ok(page(rows, limit, alert_from, |a| {
            format!("{}:{}:{}", a.first_seen, a.starts_at, a.fingerprint)
        })?))
    }

    /// Actions or notifications, newest first (by id: UUIDv7).
    pub async fn list_jobs(
        &self,
        queue: Queue,
        f: &JobFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Result<Page<ListedJob>, BadCursor>, Error> {
        let mut w = Where::default();
        w.eq("incident_id", f.incident.as_deref());
        let statuses: Vec<&str> = f.status.iter().map(|s| s.as_str()).collect();
        w.any_of("status", &statuses);
        w.eq("plugin", f.plugin.as_deref());
        w.eq("rule", f.rule.as_deref());
        w.window("created_at", f.created);
        if let Some(c) = cursor {
            if uuid::Uuid::parse_str(c).is_err() {
                return Ok(Err(BadCursor(c.to_owned())));
            }
            let p = w.arg(Arg::Text(c.to_owned()));
            w.raw(format!("id < {p}"));
        }
        let select = format!(
            "{JOB_COLUMNS}, created_at, updated_at FROM {}",
            queue.table()
        );
        let rows = w.fetch(self, &select, "id DESC", limit).await?;
        let read = |r: &AnyRow| {
            Ok(ListedJob {
                job: job_from(r)?,
                created_at: r.try_get("created_at")?,
                updated_at: r.try_get("updated_at")?,
            })
        };
        Ok(Ok(page(rows, limit, read, |j| j.job.id.clone())?))
    }

    /// Rule invocations from the decisions log, newest first.
    pub async fn list_decisions(
        &self,
        f: &DecisionFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Result<Page<Decision>, BadCursor>, Error> {
        let mut w = Where::default();
        w.eq("incident_id", f.incident.as_deref());
        w.eq("rule", f.rule.as_deref());
        w.eq("event_id", f.event.as_deref());
        w.window("at", f.at);
        if let Some(c) = cursor {
            let Ok(id) = c.parse::<i64>() else {
                return Ok(Err(BadCursor(c.to_owned())));
            };
            let p = w.arg(Arg::Int(id));
            w.raw(format!("id < {p}"));
        }
        let select = "id, event_id, event_kind, rule, rule_version, rule_digest, trace_id, \
                      incident_id, decision, error, at FROM decisions_log";
        let rows = w.fetch(self, select, "id DESC", limit).await?;
        Ok(Ok(page(rows, limit, decision_from, |d| d.id.to_string())?))
    }
}
