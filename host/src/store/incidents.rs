//! Incidents, their alert links and their timelines.

use serde::Serialize;
use sqlx::Row;

use super::{Error, Store, now_ms};
use crate::model::{Incident, IncidentStatus, Job, TimelineEntry};

use super::queues::Queue;
use super::rows::{incident_from, timeline_from};
use super::tx::Tx;

pub(super) const INCIDENT_COLUMNS: &str = "id, dedup_key, title, service, severity, status, summary, rule, \
                                trace_id, opened_at, updated_at, closed_at, last_notified_at, \
                                acknowledged_by, acknowledged_at";

/// An incident with everything linked to it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IncidentDetail {
    /// The incident.
    #[serde(flatten)]
    pub incident: Incident,
    /// Its timeline, oldest first.
    pub timeline: Vec<TimelineEntry>,
    /// Linked alert ids (`fingerprint:startsAt`).
    pub alerts: Vec<String>,
    /// Its actions.
    pub actions: Vec<Job>,
    /// Its notifications.
    pub notifications: Vec<Job>,
}

impl Tx {
    /// The active (open or mitigating) incident with `dedup_key`.
    pub async fn active_incident(&mut self, dedup_key: &str) -> Result<Option<Incident>, Error> {
        let row = sqlx::query(&format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents
             WHERE dedup_key = $1 AND status IN ('open', 'mitigating')"
        ))
        .bind(dedup_key)
        .fetch_optional(self.conn())
        .await?;
        Ok(row.as_ref().map(incident_from).transpose()?)
    }

    /// An incident by id.
    pub async fn incident(&mut self, id: &str) -> Result<Option<Incident>, Error> {
        let row = sqlx::query(&format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.conn())
        .await?;
        Ok(row.as_ref().map(incident_from).transpose()?)
    }

    /// The newest incident an alert series (fingerprint) is linked to.
    pub async fn incident_for_alert(
        &mut self,
        fingerprint: &str,
    ) -> Result<Option<Incident>, Error> {
        // It must see links buffered by this transaction.
        if !self.pending.links.is_empty() {
            self.flush().await?;
        }
        let row = sqlx::query(&format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = (
                 SELECT incident_id FROM incident_alerts WHERE fingerprint = $1
                 ORDER BY starts_at DESC, incident_id DESC LIMIT 1)"
        ))
        .bind(fingerprint)
        .fetch_optional(self.conn())
        .await?;
        Ok(row.as_ref().map(incident_from).transpose()?)
    }

    /// Insert a new incident.
    pub async fn insert_incident(&mut self, i: &Incident) -> Result<(), Error> {
        sqlx::query(&format!(
            "INSERT INTO incidents ({INCIDENT_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        ))
        .bind(&i.id)
        .bind(&i.dedup_key)
        .bind(&i.title)
        .bind(&i.service)
        .bind(i.severity.as_str())
        .bind(i.status.as_str())
        .bind(&i.summary)
        .bind(&i.rule)
        .bind(&i.trace_id)
        .bind(i.opened_at)
        .bind(i.updated_at)
        .bind(i.closed_at)
        .bind(i.last_notified_at)
        .bind(i.acknowledged_by.as_deref())
        .bind(i.acknowledged_at)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Move an incident from `from` to `to` (closing it if `to` is final,
    /// and ending any acknowledgement: it was of the old status); `false`
    /// if it was not in `from`. The lifecycle check is the caller's.
    pub async fn set_incident_status(
        &mut self,
        id: &str,
        from: IncidentStatus,
        to: IncidentStatus,
    ) -> Result<bool, Error> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE incidents SET status = $3, updated_at = $4,
                    closed_at = CASE WHEN $5 = 1 THEN $4 ELSE closed_at END,
                    acknowledged_by = NULL, acknowledged_at = NULL
             WHERE id = $1 AND status = $2",
        )
        .bind(id)
        .bind(from.as_str())
        .bind(to.as_str())
        .bind(now)
        .bind(to.is_closed() as i64)
        .execute(self.conn())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Note that a notification about the incident was delivered.
    pub async fn set_last_notified(&mut self, id: &str, at: i64) -> Result<(), Error> {
        sqlx::query("UPDATE incidents SET last_notified_at = $2, updated_at = $2 WHERE id = $1")
            .bind(id)
            .bind(at)
            .execute(self.conn())
            .await?;
        Ok(())
    }

    /// Append to an incident's timeline (written at commit).
    pub async fn timeline(&mut self, incident_id: &str, e: &TimelineEntry) -> Result<(), Error> {
        self.pending
            .timeline
            .push((incident_id.to_owned(), e.clone()));
        Ok(())
    }

    /// Link an alert instance to an incident opened in this transaction
    /// (so the link is new; written at commit).
    pub fn link_new_alert(&mut self, incident_id: &str, fingerprint: &str, starts_at: u64) {
        self.pending.links.push((
            incident_id.to_owned(),
            fingerprint.to_owned(),
            starts_at as i64,
        ));
    }

    /// Link an alert instance to an incident; `false` if it already was.
    pub async fn link_alert(
        &mut self,
        incident_id: &str,
        fingerprint: &str,
        starts_at: u64,
    ) -> Result<bool, Error> {
        // It must see links buffered by this transaction.
        if !self.pending.links.is_empty() {
            self.flush().await?;
        }
        let done = sqlx::query(
            "INSERT INTO incident_alerts (incident_id, fingerprint, starts_at) VALUES ($1, $2, $3)
             ON CONFLICT (incident_id, fingerprint, starts_at) DO NOTHING",
        )
        .bind(incident_id)
        .bind(fingerprint)
        .bind(starts_at as i64)
        .execute(self.conn())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// What acknowledging (or un-acknowledging) an incident found.
#[derive(Debug)]
pub enum Acknowledged {
    /// Done: the incident as it now is.
    Done(Incident),
    /// No incident with that id.
    NotFound,
    /// Resolved or failed: nothing to acknowledge.
    Closed(Incident),
}

impl Store {
    /// Acknowledge an active incident (`by` is `Some`) or take an
    /// acknowledgement back (`None`), noting it on the timeline. An
    /// acknowledgement mutes repeat notifications about the incident until
    /// its status next changes, which ends it.
    pub async fn acknowledge(&self, id: &str, by: Option<&str>) -> Result<Acknowledged, Error> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        let Some(incident) = tx.incident(id).await? else {
            return Ok(Acknowledged::NotFound);
        };
        if incident.status.is_closed() {
            return Ok(Acknowledged::Closed(incident));
        }
        sqlx::query(
            "UPDATE incidents SET acknowledged_by = $2, acknowledged_at = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(by)
        .bind(by.map(|_| now))
        .execute(tx.conn())
        .await?;
        let cause = match (by, &incident.acknowledged_by) {
            (Some(by), _) => {
                format!("acknowledged by {by}: repeat notifications muted until its status changes")
            }
            (None, Some(was)) => format!("acknowledgement by {was} taken back"),
            (None, None) => "acknowledgement taken back (there was none)".to_owned(),
        };
        tx.timeline(
            id,
            &TimelineEntry {
                at: now,
                kind: "acknowledgement".into(),
                from_status: None,
                to_status: None,
                cause,
                event_id: String::new(),
                ref_id: None,
            },
        )
        .await?;
        let incident = tx.incident(id).await?.expect("read in this transaction");
        tx.commit().await?;
        Ok(Acknowledged::Done(incident))
    }

    /// The newest incidents, newest first.
    pub async fn incidents(&self, limit: u32) -> Result<Vec<Incident>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents ORDER BY opened_at DESC, id DESC LIMIT $1"
        ))
        .bind(limit as i64)
        .fetch_all(&self.reads)
        .await?;
        Ok(rows.iter().map(incident_from).collect::<Result<_, _>>()?)
    }

    /// An incident with its timeline, alerts, actions and notifications.
    pub async fn incident_detail(&self, id: &str) -> Result<Option<IncidentDetail>, Error> {
        let Some(row) = sqlx::query(&format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.reads)
        .await?
        else {
            return Ok(None);
        };
        let timeline = sqlx::query(
            "SELECT at, kind, from_status, to_status, cause, event_id, ref_id
             FROM incident_events WHERE incident_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.reads)
        .await?
        .iter()
        .map(timeline_from)
        .collect::<Result<_, sqlx::Error>>()?;
        let alerts = sqlx::query(
            "SELECT fingerprint, starts_at FROM incident_alerts WHERE incident_id = $1
             ORDER BY starts_at, fingerprint",
        )
        .bind(id)
        .fetch_all(&self.reads)
        .await?
        .iter()
        .map(|r| format!("{}:{}", r.get::<String, _>(0), r.get::<i64, _>(1)))
        .collect();
        let actions = self.jobs_of(Queue::Actions, id).await?;
        let notifications = self.jobs_of(Queue::Notifications, id).await?;
        Ok(Some(IncidentDetail {
            incident: incident_from(&row)?,
            timeline,
            alerts,
            actions,
            notifications,
        }))
    }
}
