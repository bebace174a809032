//! Incidents, their alert links and their timelines.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;
use sqlx::Row;

use super::{Backend, Error, Holder, Store, now_ms};
use crate::model::{Incident, IncidentStatus, Job, TimelineEntry};

use super::queues::Queue;
use super::rows::{incident_from, timeline_from};
use super::tx::{ROWS_PER_INSERT, Tx, multi_insert, params};

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

/// Incidents a transaction has looked up or written. A stage looks up a
/// batch's incidents in a statement or two ([`Tx::prefetch_incidents`]),
/// changes them here, and [`Tx::flush`] writes the changes as multi-row
/// statements: a batch of alerts does not cost a lookup, an insert and an
/// update per alert.
///
/// Only lookups and writes through these methods go through it; any other
/// statement reading `incidents` flushes first.
#[derive(Default)]
pub(super) struct Cache {
    by_id: HashMap<String, Cached>,
    /// Dedup keys whose active incident is known: its id, or none.
    active: HashMap<String, Option<String>>,
}

struct Cached {
    incident: Incident,
    write: Write,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    /// As in the database.
    Clean,
    /// New: inserted at flush.
    Insert,
    /// Changed: written at flush if the row is still in status `from`
    /// (else another transaction moved it: [`Error::Conflict`]). `moved`:
    /// this transaction changed its status, so its `closed_at` and
    /// acknowledgement are this transaction's to write; otherwise they are
    /// left as they are in the row (another transaction, a stage on
    /// PostgreSQL or an operator's acknowledgement, may have written them
    /// since this one read the incident).
    Update { from: IncidentStatus, moved: bool },
}

impl Cache {
    fn dirty(&self) -> bool {
        self.by_id.values().any(|c| c.write != Write::Clean)
    }

    /// Keep `incident` as read, unless this transaction holds it already
    /// (its copy may be newer).
    fn read(&mut self, incident: Incident) {
        if incident.status.is_closed() {
            // Another incident may be active under its key: unknown.
        } else {
            self.active
                .insert(incident.dedup_key.clone(), Some(incident.id.clone()));
        }
        self.by_id.entry(incident.id.clone()).or_insert(Cached {
            incident,
            write: Write::Clean,
        });
    }

    /// Change a held incident with `change`, keeping the dedup-key index
    /// right.
    fn update(&mut self, id: &str, change: impl FnOnce(&mut Incident)) -> bool {
        let Some(c) = self.by_id.get_mut(id) else {
            return false;
        };
        let before = c.incident.status;
        change(&mut c.incident);
        let moved = c.incident.status != before;
        match &mut c.write {
            Write::Clean => {
                c.write = Write::Update {
                    from: before,
                    moved,
                }
            }
            Write::Update { moved: m, .. } => *m |= moved,
            Write::Insert => {}
        }
        let key = c.incident.dedup_key.clone();
        if c.incident.status.is_closed() {
            if self.active.get(&key) == Some(&Some(id.to_owned())) {
                self.active.insert(key, None);
            }
        } else {
            self.active.insert(key, Some(id.to_owned()));
        }
        true
    }
}

/// Rows per multi-row incident insert (15 columns).
const INCIDENT_ROWS: usize = 100;

impl Tx {
    /// Look up, in a statement or two, the incidents a batch will ask for:
    /// by `ids`, and the active ones under `dedup_keys`. Later lookups of
    /// these in this transaction are answered from memory.
    pub async fn prefetch_incidents(
        &mut self,
        ids: &[&str],
        dedup_keys: &[&str],
    ) -> Result<(), Error> {
        let ids: BTreeSet<&str> = ids
            .iter()
            .copied()
            .filter(|id| !self.incidents.by_id.contains_key(*id))
            .collect();
        let keys: BTreeSet<&str> = dedup_keys
            .iter()
            .copied()
            .filter(|k| !self.incidents.active.contains_key(*k))
            .collect();
        let ids: Vec<&str> = ids.into_iter().collect();
        let keys: Vec<&str> = keys.into_iter().collect();
        for chunk in ids.chunks(ROWS_PER_INSERT) {
            let sql = format!(
                "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id IN ({})",
                params(self.backend, 1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(*id);
            }
            for row in q.fetch_all(self.conn()).await? {
                self.incidents.read(incident_from(&row)?);
            }
        }
        for chunk in keys.chunks(ROWS_PER_INSERT) {
            let sql = active_by_keys_sql(self.backend, chunk.len());
            let mut q = sqlx::query(&sql);
            for key in chunk {
                q = q.bind(*key);
            }
            for row in q.fetch_all(self.conn()).await? {
                self.incidents.read(incident_from(&row)?);
            }
            for key in chunk {
                self.incidents
                    .active
                    .entry((*key).to_owned())
                    .or_insert(None);
            }
        }
        Ok(())
    }

    /// The active (open or mitigating) incident with `dedup_key`.
    pub async fn active_incident(&mut self, dedup_key: &str) -> Result<Option<Incident>, Error> {
        if let Some(known) = self.incidents.active.get(dedup_key) {
            return Ok(known
                .as_ref()
                .map(|id| self.incidents.by_id[id].incident.clone()));
        }
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
        if let Some(c) = self.incidents.by_id.get(id) {
            return Ok(Some(c.incident.clone()));
        }
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
        // It must see links and incidents buffered by this transaction.
        if !self.pending.links.is_empty() || self.incidents.dirty() {
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

    /// Insert a new incident (written at flush).
    pub async fn insert_incident(&mut self, i: &Incident) -> Result<(), Error> {
        let cache = &mut self.incidents;
        if !i.status.is_closed() {
            cache.active.insert(i.dedup_key.clone(), Some(i.id.clone()));
        }
        cache.by_id.insert(
            i.id.clone(),
            Cached {
                incident: i.clone(),
                write: Write::Insert,
            },
        );
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
        if let Some(c) = self.incidents.by_id.get(id) {
            if c.incident.status != from {
                return Ok(false);
            }
            return Ok(self.incidents.update(id, |i| {
                i.status = to;
                i.updated_at = now;
                if to.is_closed() {
                    i.closed_at = Some(now);
                }
                i.acknowledged_by = None;
                i.acknowledged_at = None;
            }));
        }
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

    /// Note that a notification about the incident was delivered (written
    /// at flush).
    pub async fn set_last_notified(&mut self, id: &str, at: i64) -> Result<(), Error> {
        let held = self.incidents.update(id, |i| {
            i.last_notified_at = Some(at);
            i.updated_at = at;
        });
        if !held {
            self.pending.notified.push((id.to_owned(), at));
        }
        Ok(())
    }

    /// Write the incidents this transaction inserted or changed, and the
    /// delivery times noted for others.
    pub(super) async fn flush_incidents(&mut self) -> Result<(), Error> {
        let mut inserts = Vec::new();
        let mut updates = Vec::new();
        for c in self.incidents.by_id.values_mut() {
            match std::mem::replace(&mut c.write, Write::Clean) {
                Write::Clean => {}
                Write::Insert => inserts.push(c.incident.clone()),
                Write::Update { from, moved } => updates.push((from, moved, c.incident.clone())),
            }
        }
        for chunk in inserts.chunks(INCIDENT_ROWS) {
            let sql = multi_insert(
                self.backend,
                &format!("INSERT INTO incidents ({INCIDENT_COLUMNS})"),
                15,
                chunk.len(),
            );
            let mut q = sqlx::query(&sql);
            for i in chunk {
                q = q
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
                    .bind(i.acknowledged_at);
            }
            q.execute(self.conn()).await?;
        }
        // Only what this transaction changed is written over the row as it
        // is now: on PostgreSQL another transaction may have changed the
        // incident since this one read it (READ COMMITTED, no row lock).
        // The status is guarded by `was`; the two times only move forward.
        for chunk in updates.chunks(INCIDENT_ROWS) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|r| {
                    let p = params(self.backend, r * 9 + 1, 9);
                    let p: Vec<&str> = p.split(", ").collect();
                    format!(
                        "({}, {}, {}, CAST({} AS BIGINT), CAST({} AS BIGINT), CAST({} AS BIGINT), \
                         CAST({} AS BIGINT), {}, CAST({} AS BIGINT))",
                        p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8]
                    )
                })
                .collect();
            let sql = format!(
                "WITH v (id, was, status, moved, updated_at, closed_at, last_notified_at,
                         acknowledged_by, acknowledged_at) AS (VALUES {})
                 UPDATE incidents SET status = v.status,
                        updated_at = CASE WHEN v.updated_at > incidents.updated_at
                                     THEN v.updated_at ELSE incidents.updated_at END,
                        closed_at = CASE WHEN v.moved = 1 THEN v.closed_at ELSE incidents.closed_at END,
                        last_notified_at = CASE WHEN incidents.last_notified_at IS NULL
                                                  OR v.last_notified_at > incidents.last_notified_at
                                           THEN v.last_notified_at ELSE incidents.last_notified_at END,
                        acknowledged_by = CASE WHEN v.moved = 1
                                          THEN v.acknowledged_by ELSE incidents.acknowledged_by END,
                        acknowledged_at = CASE WHEN v.moved = 1
                                          THEN v.acknowledged_at ELSE incidents.acknowledged_at END
                 FROM v WHERE incidents.id = v.id AND incidents.status = v.was",
                rows.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for (from, moved, i) in chunk {
                q = q
                    .bind(&i.id)
                    .bind(from.as_str())
                    .bind(i.status.as_str())
                    .bind(i64::from(*moved))
                    .bind(i.updated_at)
                    .bind(i.closed_at)
                    .bind(i.last_notified_at)
                    .bind(i.acknowledged_by.as_deref())
                    .bind(i.acknowledged_at);
            }
            let done = q.execute(self.conn()).await?;
            if done.rows_affected() != chunk.len() as u64 {
                return Err(Error::Conflict(format!(
                    "{} of {} incidents changed since they were read",
                    chunk.len() as u64 - done.rows_affected(),
                    chunk.len()
                )));
            }
        }
        let notified = std::mem::take(&mut self.pending.notified);
        for chunk in notified.chunks(ROWS_PER_INSERT) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|r| {
                    let p = params(self.backend, r * 2 + 1, 2);
                    let (id, at) = p.split_once(", ").expect("two parameters");
                    format!("({id}, CAST({at} AS BIGINT))")
                })
                .collect();
            let sql = format!(
                "WITH v (id, at) AS (VALUES {})
                 UPDATE incidents
                 SET last_notified_at = CASE WHEN incidents.last_notified_at IS NULL
                                               OR v.at > incidents.last_notified_at
                                        THEN v.at ELSE incidents.last_notified_at END,
                     updated_at = CASE WHEN v.at > incidents.updated_at
                                  THEN v.at ELSE incidents.updated_at END
                 FROM v WHERE incidents.id = v.id",
                rows.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for (id, at) in chunk {
                q = q.bind(id).bind(*at);
            }
            q.execute(self.conn()).await?;
        }
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
        let link = (
            incident_id.to_owned(),
            fingerprint.to_owned(),
            starts_at as i64,
        );
        // Opened in this transaction: the link is new unless buffered.
        if self
            .incidents
            .by_id
            .get(incident_id)
            .is_some_and(|c| c.write == Write::Insert)
        {
            if self.pending.links.contains(&link) {
                return Ok(false);
            }
            self.pending.links.push(link);
            return Ok(true);
        }
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
        let mut tx = self.begin(Holder::Admin).await?;
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

/// The active incidents of `n` dedup keys, found by the one-active-per-key
/// index. With a long key list SQLite (no statistics) would otherwise walk
/// `incidents_by_status` over every open incident.
pub(super) fn active_by_keys_sql(backend: Backend, n: usize) -> String {
    let hint = match backend {
        Backend::Sqlite => "INDEXED BY incidents_one_active",
        Backend::Postgres => "",
    };
    format!(
        "SELECT {INCIDENT_COLUMNS} FROM incidents {hint}
         WHERE dedup_key IN ({}) AND status IN ('open', 'mitigating')",
        params(backend, 1, n)
    )
}
