//! Rows read back into model types, by column name.

use std::collections::BTreeMap;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::lists::{Decision, StoredAlert};

use crate::model::{
    Incident, IncidentStatus, Job, JobStatus, Severity, Silence, SilenceMode, TimelineEntry,
};

/// A job row, by column name.
pub(super) fn job_from(r: &AnyRow) -> Result<Job, sqlx::Error> {
    Ok(Job {
        id: r.try_get("id")?,
        incident_id: r.try_get("incident_id")?,
        rule: r.try_get("rule")?,
        plugin: r.try_get("plugin")?,
        target: r.try_get("target")?,
        status: parsed(r, "status", JobStatus::parse)?,
        attempts: r.try_get("attempts")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        last_error: r.try_get("last_error")?,
        result: r.try_get("result")?,
        request: r.try_get("request")?,
    })
}

/// A text column holding a model enum's name.
pub(super) fn parsed<T>(
    r: &AnyRow,
    column: &str,
    parse: fn(&str) -> Option<T>,
) -> Result<T, sqlx::Error> {
    let text: String = r.try_get(column)?;
    parse(&text).ok_or_else(|| undecodable(column, &text))
}

fn undecodable(column: &str, text: &str) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: format!("unknown value `{text}`").into(),
    }
}

/// A nullable text column holding JSON of `T`.
fn json_opt<T: serde::de::DeserializeOwned>(
    r: &AnyRow,
    column: &str,
) -> Result<Option<T>, sqlx::Error> {
    let text: Option<String> = r.try_get(column)?;
    text.map(|t| serde_json::from_str(&t))
        .transpose()
        .map_err(|e| sqlx::Error::ColumnDecode {
            index: column.to_owned(),
            source: e.into(),
        })
}

/// An optional text column holding a model enum's name.
pub(super) fn parsed_opt<T>(
    r: &AnyRow,
    column: &str,
    parse: fn(&str) -> Option<T>,
) -> Result<Option<T>, sqlx::Error> {
    let text: Option<String> = r.try_get(column)?;
    text.map(|t| parse(&t).ok_or_else(|| undecodable(column, &t)))
        .transpose()
}

/// A timeline row, by column name.
pub(super) fn timeline_from(r: &AnyRow) -> Result<TimelineEntry, sqlx::Error> {
    Ok(TimelineEntry {
        at: r.try_get("at")?,
        kind: r.try_get("kind")?,
        from_status: parsed_opt(r, "from_status", IncidentStatus::parse)?,
        to_status: parsed_opt(r, "to_status", IncidentStatus::parse)?,
        cause: r.try_get("cause")?,
        event_id: r.try_get("event_id")?,
        ref_id: r.try_get("ref_id")?,
    })
}

/// A silence row, by column name.
pub(super) fn silence_from(r: &AnyRow) -> Result<Silence, sqlx::Error> {
    Ok(Silence {
        id: r.try_get("id")?,
        matchers: json_opt(r, "matchers")?.unwrap_or_default(),
        mode: parsed(r, "mode", SilenceMode::parse)?,
        starts_at: r.try_get("starts_at")?,
        ends_at: r.try_get("ends_at")?,
        weekly: json_opt(r, "weekly")?,
        created_by: r.try_get("created_by")?,
        comment: r.try_get("comment")?,
        created_at: r.try_get("created_at")?,
        expired_at: r.try_get("expired_at")?,
    })
}

/// An incident row, by column name.
pub(super) fn incident_from(r: &AnyRow) -> Result<Incident, sqlx::Error> {
    Ok(Incident {
        id: r.try_get("id")?,
        dedup_key: r.try_get("dedup_key")?,
        title: r.try_get("title")?,
        service: r.try_get("service")?,
        severity: parsed(r, "severity", Severity::parse)?,
        status: parsed(r, "status", IncidentStatus::parse)?,
        summary: r.try_get("summary")?,
        rule: r.try_get("rule")?,
        trace_id: r.try_get("trace_id")?,
        opened_at: r.try_get("opened_at")?,
        updated_at: r.try_get("updated_at")?,
        closed_at: r.try_get("closed_at")?,
        last_notified_at: r.try_get("last_notified_at")?,
        acknowledged_by: r.try_get("acknowledged_by")?,
        acknowledged_at: r.try_get("acknowledged_at")?,
    })
}

/// A text column of JSON `[[k, v], ...]` pairs, as a map.
fn pairs(r: &AnyRow, column: &str) -> Result<BTreeMap<String, String>, sqlx::Error> {
    let pairs: Vec<(String, String)> = json_opt(r, column)?.unwrap_or_default();
    Ok(pairs.into_iter().collect())
}

/// An `alerts` row, by column name.
pub(super) fn alert_from(r: &AnyRow) -> Result<StoredAlert, sqlx::Error> {
    let fingerprint: String = r.try_get("fingerprint")?;
    let starts_at: i64 = r.try_get("starts_at")?;
    Ok(StoredAlert {
        id: format!("{fingerprint}:{starts_at}"),
        fingerprint,
        name: r.try_get("name")?,
        status: r.try_get("status")?,
        severity: r.try_get("severity")?,
        labels: pairs(r, "labels")?,
        annotations: pairs(r, "annotations")?,
        starts_at,
        ends_at: r.try_get("ends_at")?,
        generator_url: r.try_get("generator_url")?,
        group_key: r.try_get("group_key")?,
        first_seen: r.try_get("first_seen")?,
        last_seen: r.try_get("last_seen")?,
        occurrences: r.try_get("occurrences")?,
    })
}

/// A `decisions_log` row, by column name.
pub(super) fn decision_from(r: &AnyRow) -> Result<Decision, sqlx::Error> {
    let decision = json_opt(r, "decision")?;
    Ok(Decision {
        id: r.try_get("id")?,
        rule: r.try_get("rule")?,
        rule_version: r.try_get("rule_version")?,
        rule_digest: r.try_get("rule_digest")?,
        event_id: r.try_get("event_id")?,
        event_kind: r.try_get("event_kind")?,
        trace_id: r.try_get("trace_id")?,
        incident_id: r.try_get("incident_id")?,
        decision,
        error: r.try_get("error")?,
        at: r.try_get("at")?,
    })
}
