//! The pipeline's tables: outbox appends, inbox, consumer offsets, the
//! decisions log, incidents and their timelines, the action and
//! notification work queues, and dead letters.
//!
//! Writes that must commit together go through [`Tx`]; reads that stand
//! alone are on [`Store`].

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use std::collections::{BTreeMap, HashSet};

use crate::model;
use crate::model::{
    Incident, IncidentStatus, Job, JobStatus, KubeWarning, Severity, TimelineEntry,
};

use super::*;

/// A write transaction. Dropping it without [`Tx::commit`] rolls back.
///
/// Outbox appends, timeline entries and decision-log rows are insert-only
/// and never read back inside a transaction, so they are buffered and
/// written at commit as multi-row inserts: a batch of events costs a few
/// statements for them, not one per row.
pub struct Tx {
    pub(super) tx: Transaction<'static, Any>,
    pub(super) backend: Backend,
    pub(super) appended: bool,
    pub(super) locked: bool,
    pub(super) notify: Arc<Notify>,
    pub(super) instance: Arc<str>,
    pub(super) pending: Pending,
}

/// Rows [`Tx`] writes at commit.
#[derive(Default)]
pub(super) struct Pending {
    /// `(event_id, kind, key, payload, created_at)`.
    outbox: Vec<(String, String, String, String, i64)>,
    /// `(incident_id, entry)`.
    timeline: Vec<(String, TimelineEntry)>,
    decisions: Vec<DecisionRow>,
    /// New jobs: `(queue, job, status, error)`.
    jobs: Vec<(Queue, Job, JobStatus, Option<String>)>,
    /// Attempt ends: `(queue, id, status, result, error, next_attempt_at)`.
    ends: Vec<(
        Queue,
        String,
        JobStatus,
        Option<String>,
        Option<String>,
        i64,
    )>,
    /// Alert links of incidents opened in this transaction:
    /// `(incident_id, fingerprint, starts_at)`.
    links: Vec<(String, String, i64)>,
    /// Plugin state, last write per `(plugin, key)` wins.
    state: BTreeMap<(String, String), Option<(String, Option<u64>)>>,
}

struct DecisionRow {
    event_id: String,
    event_kind: String,
    rule: String,
    trace_id: String,
    incident_id: Option<String>,
    decision: Option<String>,
    error: Option<String>,
    at: i64,
}

/// Rows per multi-row statement: well under both backends' limits on
/// bound parameters (SQLite 32,766; PostgreSQL 65,535) at 8 columns.
const ROWS_PER_INSERT: usize = 200;

/// `INSERT INTO table (columns) VALUES (p, ..), (..), ..` for `rows` rows,
/// parameters bound in order (see [`params`]).
pub(super) fn multi_insert(backend: Backend, head: &str, columns: usize, rows: usize) -> String {
    let mut sql = String::with_capacity(head.len() + rows * columns * 5);
    sql.push_str(head);
    sql.push_str(" VALUES ");
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        sql.push_str(&params(backend, r * columns + 1, columns));
        sql.push(')');
    }
    sql
}

/// `n` parameters, the first numbered `first`, comma-separated. SQLite gets
/// anonymous `?`s, bound in order: sqlx looks each numbered parameter up by
/// name, a linear scan of the statement's names, which is quadratic in a
/// multi-row statement (it was most of the database thread's time).
/// PostgreSQL needs `$N`.
pub(super) fn params(backend: Backend, first: usize, n: usize) -> String {
    let mut out = String::with_capacity(n * 5);
    for i in 0..n {
        if i > 0 {
            out.push_str(", ");
        }
        match backend {
            Backend::Sqlite => out.push('?'),
            Backend::Postgres => {
                out.push('$');
                out.push_str(&(first + i).to_string());
            }
        }
    }
    out
}

/// One of the two work queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Queue {
    /// `actions` (the action_exec record).
    Actions,
    /// `notifications`.
    Notifications,
}

impl Queue {
    fn table(self) -> &'static str {
        match self {
            Queue::Actions => "actions",
            Queue::Notifications => "notifications",
        }
    }
}

/// What notification deduplication decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dedup {
    /// Send it; `suppressed` requests were held back since the last one.
    Send {
        /// Requests with this key so far, this one included.
        seen: i64,
        /// Held back since the last one that went out.
        suppressed: i64,
    },
    /// Hold it back: one went out within the TTL.
    Suppress {
        /// Requests with this key so far, this one included.
        seen: i64,
    },
}

/// A job row, by column name.
fn job_from(r: &AnyRow) -> Result<Job, sqlx::Error> {
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
fn parsed<T>(r: &AnyRow, column: &str, parse: fn(&str) -> Option<T>) -> Result<T, sqlx::Error> {
    let text: String = r.try_get(column)?;
    parse(&text).ok_or_else(|| sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: format!("unknown value `{text}`").into(),
    })
}

/// An optional text column holding a model enum's name.
fn parsed_opt<T>(
    r: &AnyRow,
    column: &str,
    parse: fn(&str) -> Option<T>,
) -> Result<Option<T>, sqlx::Error> {
    let text: Option<String> = r.try_get(column)?;
    text.map(|t| {
        parse(&t).ok_or_else(|| sqlx::Error::ColumnDecode {
            index: column.to_owned(),
            source: format!("unknown value `{t}`").into(),
        })
    })
    .transpose()
}

const JOB_COLUMNS: &str = "id, incident_id, rule, plugin, target, status, attempts, \
                           next_attempt_at, last_error, result, request";

/// How an attempt ended, as the queue records it.
#[derive(Debug, Clone)]
pub enum JobEnd {
    /// Done: `completed` (actions) or `delivered` (notifications).
    Succeeded {
        /// The terminal status.
        status: JobStatus,
        /// What the plugin reported (JSON).
        result: String,
    },
    /// Try again at `at`.
    Retry {
        /// The error of this attempt.
        error: String,
        /// When (ms).
        at: i64,
    },
    /// Gave up.
    Failed {
        /// Why.
        error: String,
    },
}

const INCIDENT_COLUMNS: &str = "id, dedup_key, title, service, severity, status, summary, rule, \
                                trace_id, opened_at, updated_at, closed_at, last_notified_at";

/// An incident row, by column name.
fn incident_from(r: &AnyRow) -> Result<Incident, sqlx::Error> {
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
    })
}

/// An incident with everything linked to it.
#[derive(Debug, Clone, Serialize)]
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

/// A rule invocation as the decisions log keeps it.
#[derive(Debug, Clone)]
pub struct DecisionRecord<'a> {
    /// The event decided on.
    pub event: &'a model::Event,
    /// The rule.
    pub rule: &'a str,
    /// The incident it applied to.
    pub incident_id: Option<&'a str>,
    /// The decision (JSON), or `None` if the rule failed.
    pub decision: Option<String>,
    /// How the rule failed.
    pub error: Option<String>,
}

/// A dead letter.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Row id, for replay.
    pub id: i64,
    /// The stage that gave up.
    pub consumer: String,
    /// The event.
    pub event_id: String,
    /// Its kind.
    pub kind: String,
    /// Why.
    pub error: String,
    /// Attempts made.
    pub attempts: i64,
    /// When (ms).
    pub at: i64,
    /// When it was replayed, if it was.
    pub replayed_at: Option<i64>,
}

impl DeadLetter {
    /// A `dead_letters` row, by column name.
    fn from_row(r: &AnyRow) -> Self {
        DeadLetter {
            id: r.get("id"),
            consumer: r.get("consumer"),
            event_id: r.get("event_id"),
            kind: r.get("kind"),
            error: r.get("error"),
            attempts: r.get("attempts"),
            at: r.get("at"),
            replayed_at: r.get("replayed_at"),
        }
    }
}

/// An outbox row, as the relay publishes it.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    /// Its position.
    pub seq: i64,
    /// The event kind (the topic).
    pub kind: String,
    /// The partition key.
    pub key: String,
    /// The event envelope, JSON.
    pub payload: String,
}

/// Held by the one relay that publishes the outbox
/// ([`Store::relay_lease`]).
pub struct RelayLease {
    conn: Option<sqlx::pool::PoolConnection<Any>>,
}

impl RelayLease {
    /// Whether the lease still holds (its connection is alive).
    pub async fn holds(&mut self) -> bool {
        match &mut self.conn {
            None => true,
            Some(c) => sqlx::query("SELECT 1").execute(&mut **c).await.is_ok(),
        }
    }
}

/// Row counts, for tests and `eventpulse incidents`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Rows in `alerts`.
    pub alerts: i64,
    /// Rows in `outbox_events`.
    pub events: i64,
    /// Rows in `incidents`.
    pub incidents: i64,
    /// Rows in `actions`.
    pub actions: i64,
    /// Actions completed.
    pub actions_completed: i64,
    /// Rows in `notifications`.
    pub notifications: i64,
    /// Notifications delivered.
    pub notifications_delivered: i64,
    /// Rows in `dead_letters`.
    pub dead_letters: i64,
}

impl Tx {
    /// The connection, for statements.
    pub fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    /// Write the buffered rows, commit, then wake outbox readers if
    /// anything was appended.
    pub async fn commit(mut self) -> Result<(), Error> {
        self.flush().await?;
        self.tx.commit().await?;
        if self.appended {
            self.notify.notify_waiters();
        }
        Ok(())
    }

    /// Write the buffered rows now.
    async fn flush(&mut self) -> Result<(), Error> {
        let pending = std::mem::take(&mut self.pending);
        if !pending.outbox.is_empty() {
            self.lock_outbox().await?;
            for chunk in pending.outbox.chunks(ROWS_PER_INSERT) {
                let sql = multi_insert(
                    self.backend,
                    "INSERT INTO outbox_events (event_id, kind, event_key, payload, created_at)",
                    5,
                    chunk.len(),
                );
                let mut q = sqlx::query(&sql);
                for (id, kind, key, payload, at) in chunk {
                    q = q.bind(id).bind(kind).bind(key).bind(payload).bind(*at);
                }
                q.execute(self.conn()).await?;
            }
            self.appended = true;
        }
        for chunk in pending.timeline.chunks(ROWS_PER_INSERT) {
            let sql = multi_insert(
                self.backend,
                "INSERT INTO incident_events (incident_id, at, kind, from_status, to_status, cause, event_id, ref_id)",
                8,
                chunk.len(),
            );
            let mut q = sqlx::query(&sql);
            for (incident, e) in chunk {
                q = q
                    .bind(incident)
                    .bind(e.at)
                    .bind(&e.kind)
                    .bind(e.from_status.map(IncidentStatus::as_str))
                    .bind(e.to_status.map(IncidentStatus::as_str))
                    .bind(&e.cause)
                    .bind(&e.event_id)
                    .bind(&e.ref_id);
            }
            q.execute(self.conn()).await?;
        }
        for chunk in pending.decisions.chunks(ROWS_PER_INSERT) {
            let sql = multi_insert(
                self.backend,
                "INSERT INTO decisions_log (event_id, event_kind, rule, trace_id, incident_id, decision, error, at)",
                8,
                chunk.len(),
            );
            let mut q = sqlx::query(&sql);
            for d in chunk {
                q = q
                    .bind(&d.event_id)
                    .bind(&d.event_kind)
                    .bind(&d.rule)
                    .bind(&d.trace_id)
                    .bind(&d.incident_id)
                    .bind(&d.decision)
                    .bind(&d.error)
                    .bind(d.at);
            }
            q.execute(self.conn()).await?;
        }
        for chunk in pending.links.chunks(ROWS_PER_INSERT) {
            let sql = multi_insert(
                self.backend,
                "INSERT INTO incident_alerts (incident_id, fingerprint, starts_at)",
                3,
                chunk.len(),
            ) + " ON CONFLICT (incident_id, fingerprint, starts_at) DO NOTHING";
            let mut q = sqlx::query(&sql);
            for (incident, fingerprint, starts_at) in chunk {
                q = q.bind(incident).bind(fingerprint).bind(*starts_at);
            }
            q.execute(self.conn()).await?;
        }
        let now = now_ms();
        for queue in [Queue::Actions, Queue::Notifications] {
            let jobs: Vec<_> = pending.jobs.iter().filter(|j| j.0 == queue).collect();
            for chunk in jobs.chunks(ROWS_PER_INSERT / 2) {
                let head = format!(
                    "INSERT INTO {} (id, incident_id, rule, plugin, target, status, attempts, \
                     next_attempt_at, last_error, result, request, created_at, updated_at)",
                    queue.table()
                );
                let sql = multi_insert(self.backend, &head, 13, chunk.len())
                    + " ON CONFLICT (id) DO NOTHING";
                let mut q = sqlx::query(&sql);
                for (_, job, status, error) in chunk {
                    q = q
                        .bind(&job.id)
                        .bind(&job.incident_id)
                        .bind(&job.rule)
                        .bind(&job.plugin)
                        .bind(&job.target)
                        .bind(status.as_str())
                        .bind(0_i64)
                        .bind(now)
                        .bind(error)
                        .bind(None::<String>)
                        .bind(&job.request)
                        .bind(now)
                        .bind(now);
                }
                q.execute(self.conn()).await?;
            }
            let ends: Vec<_> = pending.ends.iter().filter(|e| e.0 == queue).collect();
            for chunk in ends.chunks(ROWS_PER_INSERT) {
                let rows: Vec<String> = (0..chunk.len())
                    .map(|r| {
                        let p: Vec<String> = params(self.backend, r * 5 + 1, 5)
                            .split(", ")
                            .map(str::to_owned)
                            .collect();
                        format!(
                            "({}, {}, {}, {}, CAST({} AS BIGINT))",
                            p[0], p[1], p[2], p[3], p[4]
                        )
                    })
                    .collect();
                let n = chunk.len() * 5 + 1;
                let sql = format!(
                    "WITH v (id, status, result, last_error, next_attempt_at) AS (VALUES {})
                     UPDATE {t} SET status = v.status, result = v.result, last_error = v.last_error,
                            next_attempt_at = v.next_attempt_at, updated_at = CAST({} AS BIGINT)
                     FROM v WHERE {t}.id = v.id",
                    rows.join(", "),
                    params(self.backend, n, 1),
                    t = queue.table(),
                );
                let mut q = sqlx::query(&sql);
                for (_, id, status, result, error, next) in chunk {
                    q = q
                        .bind(id)
                        .bind(status.as_str())
                        .bind(result)
                        .bind(error)
                        .bind(*next);
                }
                q.bind(now).execute(self.conn()).await?;
            }
        }
        let (set, deleted): (Vec<_>, Vec<_>) = pending.state.iter().partition(|(_, v)| v.is_some());
        for chunk in set.chunks(ROWS_PER_INSERT) {
            let sql = multi_insert(
                self.backend,
                "INSERT INTO plugin_state (plugin, key, value, expires_at)",
                4,
                chunk.len(),
            ) + " ON CONFLICT (plugin, key) DO UPDATE
                  SET value = excluded.value, expires_at = excluded.expires_at";
            let mut q = sqlx::query(&sql);
            for ((plugin, key), value) in chunk {
                let (value, expires) = value.as_ref().expect("partitioned on is_some");
                q = q
                    .bind(plugin)
                    .bind(key)
                    .bind(value)
                    .bind(expires.map(|e| e as i64));
            }
            q.execute(self.conn()).await?;
        }
        for ((plugin, key), _) in deleted {
            sqlx::query("DELETE FROM plugin_state WHERE plugin = $1 AND key = $2")
                .bind(plugin)
                .bind(key)
                .execute(self.conn())
                .await?;
        }
        Ok(())
    }

    /// Append `event` to the outbox.
    ///
    /// On PostgreSQL, appends are serialised with a transaction-scoped
    /// advisory lock so that `seq` order is commit order: a reader that has
    /// seen `seq = n` can never later see a smaller one commit. (SQLite has
    /// one writer, so this holds already.)
    ///
    /// The row is written at commit, with the transaction's other appends.
    pub async fn append(&mut self, event: &model::Event) -> Result<(), Error> {
        self.pending.outbox.push((
            event.id.clone(),
            event.kind.clone(),
            event.key.clone(),
            serde_json::to_string(event).expect("event serialises"),
            now_ms(),
        ));
        Ok(())
    }

    /// Append an envelope as it is, however (un)readable: how tests put
    /// into the log what a broken producer could.
    pub async fn append_raw(
        &mut self,
        event_id: &str,
        kind: &str,
        key: &str,
        payload: &str,
    ) -> Result<(), Error> {
        self.pending.outbox.push((
            event_id.to_owned(),
            kind.to_owned(),
            key.to_owned(),
            payload.to_owned(),
            now_ms(),
        ));
        Ok(())
    }

    /// Append `event` unless an event with its id is already in the outbox;
    /// `false` if it was (a retried delivery).
    pub async fn append_new(&mut self, event: &model::Event) -> Result<bool, Error> {
        // Locked before the check, so two deliveries of one event at once
        // cannot both pass it.
        if self.event_known(&event.id).await? {
            return Ok(false);
        }
        self.append(event).await?;
        Ok(true)
    }

    /// Whether the outbox holds `event_id`. Takes the outbox lock first, so
    /// two deliveries of one event at once cannot both find it missing.
    pub async fn event_known(&mut self, event_id: &str) -> Result<bool, Error> {
        if self.pending.outbox.iter().any(|row| row.0 == event_id) {
            return Ok(true);
        }
        self.lock_outbox().await?;
        Ok(
            sqlx::query("SELECT 1 FROM outbox_events WHERE event_id = $1")
                .bind(event_id)
                .fetch_optional(self.conn())
                .await?
                .is_some(),
        )
    }

    /// Serialise outbox appends (PostgreSQL; once per transaction).
    async fn lock_outbox(&mut self) -> Result<(), Error> {
        if self.backend == Backend::Postgres && !self.locked {
            sqlx::query("SELECT pg_advisory_xact_lock(7307171)")
                .execute(self.conn())
                .await?;
            self.locked = true;
        }
        Ok(())
    }

    /// Record that `consumer` processed `event_id`. `false` if it already
    /// had: the caller must then skip the event's effects.
    pub async fn inbox(&mut self, consumer: &str, event_id: &str) -> Result<bool, Error> {
        Ok(!self.inbox_many(consumer, &[event_id]).await?.is_empty())
    }

    /// Record that `consumer` processed each of `event_ids`; returns those
    /// it had not processed before (the caller applies only their effects).
    pub async fn inbox_many(
        &mut self,
        consumer: &str,
        event_ids: &[&str],
    ) -> Result<HashSet<String>, Error> {
        let instance = self.instance.clone();
        let now = now_ms();
        let mut new = HashSet::with_capacity(event_ids.len());
        for chunk in event_ids.chunks(ROWS_PER_INSERT) {
            let sql = multi_insert(
                self.backend,
                "INSERT INTO inbox_events (consumer, event_id, processed_at, processed_by)",
                4,
                chunk.len(),
            ) + " ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id";
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(consumer).bind(*id).bind(now).bind(&*instance);
            }
            for row in q.fetch_all(self.conn()).await? {
                new.insert(row.get::<String, _>(0));
            }
        }
        Ok(new)
    }

    /// Apply a plugin's state writes in this transaction (written at
    /// commit; a later write of the same key in the transaction wins).
    pub async fn write_plugin_state(
        &mut self,
        plugin: &str,
        writes: &[StateWrite],
    ) -> Result<(), Error> {
        for w in writes {
            self.pending
                .state
                .insert((plugin.to_owned(), w.key.clone()), w.value.clone());
        }
        Ok(())
    }

    /// Log one rule invocation (written at commit).
    pub async fn log_decision(&mut self, d: &DecisionRecord<'_>) -> Result<(), Error> {
        self.pending.decisions.push(DecisionRow {
            event_id: d.event.id.clone(),
            event_kind: d.event.kind.clone(),
            rule: d.rule.to_owned(),
            trace_id: d.event.trace_id.clone(),
            incident_id: d.incident_id.map(str::to_owned),
            decision: d.decision.clone(),
            error: d.error.clone(),
            at: now_ms(),
        });
        Ok(())
    }

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
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
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
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Move an incident from `from` to `to` (closing it if `to` is final);
    /// `false` if it was not in `from`. The lifecycle check is the caller's.
    pub async fn set_incident_status(
        &mut self,
        id: &str,
        from: IncidentStatus,
        to: IncidentStatus,
    ) -> Result<bool, Error> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE incidents SET status = $3, updated_at = $4,
                    closed_at = CASE WHEN $5 = 1 THEN $4 ELSE closed_at END
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

    /// Add a job to a queue, due now (written at commit; an id already
    /// there is left as it is).
    pub async fn enqueue(&mut self, queue: Queue, job: &Job) -> Result<(), Error> {
        self.insert_job(queue, job, JobStatus::Pending, None);
        Ok(())
    }

    /// Actions of `plugin` on `target` requested since `since_ms` that
    /// were not refused (what a rate limit counts).
    pub async fn recent_actions(
        &mut self,
        plugin: &str,
        target: &str,
        since_ms: i64,
    ) -> Result<i64, Error> {
        // It counts jobs this transaction enqueued too.
        self.flush().await?;
        let row = sqlx::query(
            "SELECT COUNT(*) FROM actions
             WHERE plugin = $1 AND target = $2 AND created_at >= $3 AND status <> 'refused'",
        )
        .bind(plugin)
        .bind(target)
        .bind(since_ms)
        .fetch_one(self.conn())
        .await?;
        Ok(row.get(0))
    }

    /// Record a job that will never run: `refused` (rate limit) or
    /// `suppressed` (duplicate notification), with why.
    pub async fn set_aside(
        &mut self,
        queue: Queue,
        job: &Job,
        status: JobStatus,
        why: &str,
    ) -> Result<(), Error> {
        self.insert_job(queue, job, status, Some(why));
        Ok(())
    }

    /// Count one notification request for (`channel`, `key`) at `now` and
    /// decide: suppressed if one went out less than `ttl_ms` ago, else
    /// send, with how many were suppressed since the last one.
    pub async fn notification_dedup(
        &mut self,
        channel: &str,
        key: &str,
        now: i64,
        ttl_ms: i64,
    ) -> Result<Dedup, Error> {
        // One statement decides "inside the TTL", so concurrent instances
        // (row lock on PostgreSQL) cannot both let the same key through.
        let held = sqlx::query(
            "UPDATE notification_dedup SET seen = seen + 1, suppressed = suppressed + 1
             WHERE channel = $1 AND dedup_key = $2 AND last_sent_at > $3
             RETURNING seen",
        )
        .bind(channel)
        .bind(key)
        .bind(now - ttl_ms)
        .fetch_optional(self.conn())
        .await?;
        if let Some(row) = held {
            return Ok(Dedup::Suppress { seen: row.get(0) });
        }
        let before = sqlx::query(
            "SELECT suppressed FROM notification_dedup WHERE channel = $1 AND dedup_key = $2",
        )
        .bind(channel)
        .bind(key)
        .fetch_optional(self.conn())
        .await?
        .map_or(0, |r| r.get::<i64, _>(0));
        let row = sqlx::query(
            "INSERT INTO notification_dedup (channel, dedup_key, last_sent_at, seen, suppressed)
             VALUES ($1, $2, $3, 1, 0)
             ON CONFLICT (channel, dedup_key) DO UPDATE
                 SET last_sent_at = $3, seen = notification_dedup.seen + 1, suppressed = 0
             RETURNING seen",
        )
        .bind(channel)
        .bind(key)
        .bind(now)
        .fetch_one(self.conn())
        .await?;
        Ok(Dedup::Send {
            seen: row.get(0),
            suppressed: before,
        })
    }

    /// Count one Kubernetes Warning event under its dedup key; returns how
    /// many have been received with that key, this one included.
    pub async fn count_kube_event(&mut self, e: &KubeWarning) -> Result<i64, Error> {
        let row = sqlx::query(
            "INSERT INTO kube_events (dedup_key, cluster, kind, namespace, name, reason, message,
                                      occurrences, reported_count, first_seen, last_seen, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $9, $10, $11)
             ON CONFLICT (dedup_key) DO UPDATE
                 SET message = $7, occurrences = kube_events.occurrences + 1,
                     reported_count = $8, last_seen = $10, updated_at = $11
             RETURNING occurrences",
        )
        .bind(&e.dedup_key)
        .bind(&e.cluster)
        .bind(&e.kind)
        .bind(&e.namespace)
        .bind(&e.name)
        .bind(&e.reason)
        .bind(&e.message)
        .bind(e.count)
        .bind(e.first_seen)
        .bind(e.last_seen)
        .bind(now_ms())
        .fetch_one(self.conn())
        .await?;
        Ok(row.get(0))
    }

    fn insert_job(&mut self, queue: Queue, job: &Job, status: JobStatus, error: Option<&str>) {
        self.pending
            .jobs
            .push((queue, job.clone(), status, error.map(str::to_owned)));
    }

    /// Claim pending jobs for an attempt each: `running`, attempts + 1.
    /// Returns the ids claimed (others were taken by someone else).
    pub async fn claim(&mut self, queue: Queue, ids: &[&str]) -> Result<HashSet<String>, Error> {
        let mut claimed = HashSet::with_capacity(ids.len());
        for chunk in ids.chunks(ROWS_PER_INSERT) {
            let sql = format!(
                "UPDATE {} SET status = 'running', attempts = attempts + 1, updated_at = {}
                 WHERE status = 'pending' AND id IN ({}) RETURNING id",
                queue.table(),
                params(self.backend, 1, 1),
                params(self.backend, 2, chunk.len())
            );
            let mut q = sqlx::query(&sql).bind(now_ms());
            for id in chunk {
                q = q.bind(*id);
            }
            for row in q.fetch_all(self.conn()).await? {
                claimed.insert(row.get::<String, _>(0));
            }
        }
        Ok(claimed)
    }

    /// Record how a running job's attempt ended (written at commit).
    pub async fn finish(&mut self, queue: Queue, id: &str, end: &JobEnd) -> Result<(), Error> {
        let now = now_ms();
        let (status, result, error, next) = match end {
            JobEnd::Succeeded { status, result } => (*status, Some(result.clone()), None, now),
            JobEnd::Retry { error, at } => (JobStatus::Pending, None, Some(error.clone()), *at),
            JobEnd::Failed { error } => (JobStatus::Failed, None, Some(error.clone()), now),
        };
        self.pending
            .ends
            .push((queue, id.to_owned(), status, result, error, next));
        Ok(())
    }

    /// Park an event a stage gave up on.
    pub async fn dead_letter(
        &mut self,
        consumer: &str,
        event: &model::Event,
        error: &str,
        attempts: i64,
    ) -> Result<(), Error> {
        let payload = serde_json::to_string(event).expect("event serialises");
        self.dead_letter_raw(consumer, &event.id, &event.kind, &payload, error, attempts)
            .await
    }

    /// Park a payload a stage could not even read.
    pub async fn dead_letter_raw(
        &mut self,
        consumer: &str,
        event_id: &str,
        kind: &str,
        payload: &str,
        error: &str,
        attempts: i64,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO dead_letters (consumer, event_id, kind, payload, error, attempts, at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(consumer)
        .bind(event_id)
        .bind(kind)
        .bind(payload)
        .bind(error)
        .bind(attempts)
        .bind(now_ms())
        .execute(self.conn())
        .await?;
        Ok(())
    }
}

impl Tx {
    /// An alert instance already stored was received again: a status change
    /// updates it and returns `true` (announce it); a repeat only counts.
    pub(super) async fn update_seen_alert(
        &mut self,
        a: &model::Alert,
        now: i64,
    ) -> Result<bool, Error> {
        let annotations = serde_json::to_string(&a.annotations).expect("annotations serialise");
        let changed = sqlx::query(
            "UPDATE alerts SET status = $3, ends_at = $4, annotations = $5,
                    last_seen = $6, occurrences = occurrences + 1
             WHERE fingerprint = $1 AND starts_at = $2 AND status <> $3",
        )
        .bind(&a.fingerprint)
        .bind(a.starts_at as i64)
        .bind(alert_status(a))
        .bind(a.ends_at.map(|t| t as i64))
        .bind(&annotations)
        .bind(now)
        .execute(self.conn())
        .await?
        .rows_affected()
            == 1;
        if !changed {
            sqlx::query(
                "UPDATE alerts SET last_seen = $3, occurrences = occurrences + 1
                 WHERE fingerprint = $1 AND starts_at = $2",
            )
            .bind(&a.fingerprint)
            .bind(a.starts_at as i64)
            .bind(now)
            .execute(self.conn())
            .await?;
        }
        Ok(changed)
    }
}

impl Store {
    /// Count each Kubernetes Warning event under its key and append its
    /// `event.received` (built by `event_for` from the count so far), all
    /// in one transaction; an event already stored is neither counted nor
    /// appended again. Returns (new events, duplicates).
    pub async fn ingest_kube_events(
        &self,
        warnings: &[KubeWarning],
        event_for: impl Fn(&KubeWarning, i64) -> model::Event,
    ) -> Result<(usize, usize), Error> {
        let mut tx = self.begin().await?;
        let (mut new, mut duplicates) = (0, 0);
        for w in warnings {
            if tx.event_known(&w.event_id).await? {
                duplicates += 1;
                continue;
            }
            let occurrences = tx.count_kube_event(w).await?;
            tx.append(&event_for(w, occurrences)).await?;
            new += 1;
        }
        tx.commit().await?;
        Ok((new, duplicates))
    }

    /// Which of `event_ids` `consumer` already processed.
    pub async fn inbox_seen(
        &self,
        consumer: &str,
        event_ids: &[&str],
    ) -> Result<HashSet<String>, Error> {
        let mut seen = HashSet::new();
        for chunk in event_ids.chunks(ROWS_PER_INSERT) {
            let sql = format!(
                "SELECT event_id FROM inbox_events WHERE consumer = {} AND event_id IN ({})",
                params(self.backend, 1, 1),
                params(self.backend, 2, chunk.len())
            );
            let mut q = sqlx::query(&sql).bind(consumer);
            for id in chunk {
                q = q.bind(*id);
            }
            for row in q.fetch_all(&self.reads).await? {
                seen.insert(row.get::<String, _>(0));
            }
        }
        Ok(seen)
    }

    /// The outbox position `consumer` has read up to (0 if never).
    pub async fn consumer_offset(&self, consumer: &str) -> Result<i64, Error> {
        let row = sqlx::query("SELECT seq FROM consumer_offsets WHERE consumer = $1")
            .bind(consumer)
            .fetch_optional(&self.reads)
            .await?;
        Ok(row.map(|r| r.get(0)).unwrap_or(0))
    }

    /// Move `consumer`'s offset forward to `seq`.
    pub async fn set_consumer_offset(&self, consumer: &str, seq: i64) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO consumer_offsets (consumer, seq, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (consumer) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at
             WHERE consumer_offsets.seq < excluded.seq",
        )
        .bind(consumer)
        .bind(seq)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Outbox events of `kinds` after `seq`, oldest first: `(seq, payload)`.
    /// Also returns the highest `seq` scanned, so a consumer can skip past
    /// events of other kinds.
    pub async fn outbox_read(
        &self,
        kinds: &[&str],
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, String)>, Error> {
        let placeholders: Vec<String> = (0..kinds.len()).map(|i| format!("${}", i + 3)).collect();
        let sql = format!(
            "SELECT seq, payload FROM outbox_events WHERE seq > $1 AND kind IN ({})
             ORDER BY seq LIMIT $2",
            placeholders.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(after).bind(limit as i64);
        for k in kinds {
            q = q.bind(*k);
        }
        Ok(q.fetch_all(&self.reads)
            .await?
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    /// Jobs `running` since before `claimed_before` (ms) go back to
    /// `pending`: their attempt was cut off by a crash. Actions are
    /// convergent, so running one again is safe. Returns how many.
    pub async fn requeue_running(&self, queue: Queue, claimed_before: i64) -> Result<u64, Error> {
        let done = sqlx::query(&format!(
            "UPDATE {} SET status = 'pending', updated_at = $1
             WHERE status = 'running' AND updated_at < $2",
            queue.table()
        ))
        .bind(now_ms())
        .bind(claimed_before)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// The right to publish the outbox, if no other instance holds it. On
    /// PostgreSQL a session advisory lock, held by a connection kept for as
    /// long as the lease lives (a crashed holder's lock goes with its
    /// session); SQLite serves one process, which always gets it.
    pub async fn relay_lease(&self) -> Result<Option<RelayLease>, Error> {
        if self.backend == Backend::Sqlite {
            return Ok(Some(RelayLease { conn: None }));
        }
        let mut conn = self.pool.acquire().await?;
        let got: bool = sqlx::query("SELECT pg_try_advisory_lock(7307172)")
            .fetch_one(&mut *conn)
            .await?
            .get(0);
        Ok(got.then_some(RelayLease { conn: Some(conn) }))
    }

    /// Outbox rows not yet published, oldest first.
    pub async fn unpublished(&self, limit: u32) -> Result<Vec<OutboxRow>, Error> {
        let rows = sqlx::query(
            "SELECT seq, kind, event_key, payload FROM outbox_events
             WHERE published_at IS NULL ORDER BY seq LIMIT $1",
        )
        .bind(limit as i64)
        .fetch_all(&self.reads)
        .await?;
        Ok(rows
            .iter()
            .map(|r| OutboxRow {
                seq: r.get(0),
                kind: r.get(1),
                key: r.get(2),
                payload: r.get(3),
            })
            .collect())
    }

    /// Mark every unpublished row up to `seq` published. (Appends commit
    /// in `seq` order, so none below it can appear later.)
    pub async fn mark_published(&self, through: i64) -> Result<(), Error> {
        sqlx::query(
            "UPDATE outbox_events SET published_at = $1 WHERE seq <= $2 AND published_at IS NULL",
        )
        .bind(now_ms())
        .bind(through)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Pending jobs due at `now`, oldest first.
    pub async fn due(&self, queue: Queue, now: i64, limit: u32) -> Result<Vec<Job>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM {} WHERE status = 'pending' AND next_attempt_at <= $1
             ORDER BY next_attempt_at, id LIMIT $2",
            queue.table()
        ))
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&self.reads)
        .await?;
        Ok(rows.iter().map(job_from).collect::<Result<_, _>>()?)
    }

    /// When the earliest pending job is due.
    pub async fn next_due(&self, queue: Queue) -> Result<Option<i64>, Error> {
        let row = sqlx::query(&format!(
            "SELECT MIN(next_attempt_at) FROM {} WHERE status = 'pending'",
            queue.table()
        ))
        .fetch_one(&self.reads)
        .await?;
        Ok(row.get(0))
    }

    /// A job by id.
    pub async fn job(&self, queue: Queue, id: &str) -> Result<Option<Job>, Error> {
        let row = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM {} WHERE id = $1",
            queue.table()
        ))
        .bind(id)
        .fetch_optional(&self.reads)
        .await?;
        Ok(row.as_ref().map(job_from).transpose()?)
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
        .map(|r| {
            Ok(TimelineEntry {
                at: r.try_get("at")?,
                kind: r.try_get("kind")?,
                from_status: parsed_opt(r, "from_status", IncidentStatus::parse)?,
                to_status: parsed_opt(r, "to_status", IncidentStatus::parse)?,
                cause: r.try_get("cause")?,
                event_id: r.try_get("event_id")?,
                ref_id: r.try_get("ref_id")?,
            })
        })
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

    /// An incident's jobs in `queue`, oldest first.
    async fn jobs_of(&self, queue: Queue, incident_id: &str) -> Result<Vec<Job>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM {} WHERE incident_id = $1 ORDER BY created_at, id",
            queue.table()
        ))
        .bind(incident_id)
        .fetch_all(&self.reads)
        .await?;
        Ok(rows.iter().map(job_from).collect::<Result<_, _>>()?)
    }

    /// The newest dead letters.
    pub async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>, Error> {
        let rows = sqlx::query(
            "SELECT id, consumer, event_id, kind, error, attempts, at, replayed_at
             FROM dead_letters ORDER BY id DESC LIMIT $1",
        )
        .bind(limit as i64)
        .fetch_all(&self.reads)
        .await?;
        Ok(rows.iter().map(DeadLetter::from_row).collect())
    }

    /// Put the job a dead letter is about back in its queue, due now with a
    /// fresh attempt budget, and mark the letter replayed. `job_id` is the
    /// action or notification id; `None` if there is no such letter, it was
    /// already replayed, or its job is not `failed`.
    pub async fn replay_dead_letter(
        &self,
        id: i64,
        queue: Queue,
        job_id: &str,
    ) -> Result<Option<()>, Error> {
        let mut tx = self.begin().await?;
        let now = now_ms();
        let marked = sqlx::query(
            "UPDATE dead_letters SET replayed_at = $2 WHERE id = $1 AND replayed_at IS NULL",
        )
        .bind(id)
        .bind(now)
        .execute(tx.conn())
        .await?
        .rows_affected();
        let reset = sqlx::query(&format!(
            "UPDATE {} SET status = 'pending', attempts = 0, next_attempt_at = $2, updated_at = $2
             WHERE id = $1 AND status = 'failed'",
            queue.table()
        ))
        .bind(job_id)
        .bind(now)
        .execute(tx.conn())
        .await?
        .rows_affected();
        if marked != 1 || reset != 1 {
            return Ok(None); // rolled back
        }
        tx.commit().await?;
        self.requeued.notify_waiters();
        Ok(Some(()))
    }

    /// One dead letter with its payload.
    pub async fn dead_letter(&self, id: i64) -> Result<Option<(DeadLetter, String)>, Error> {
        let row = sqlx::query(
            "SELECT id, consumer, event_id, kind, error, attempts, at, replayed_at, payload
             FROM dead_letters WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.reads)
        .await?;
        Ok(row.map(|r| (DeadLetter::from_row(&r), r.get("payload"))))
    }

    /// Row counts of the pipeline's tables.
    pub async fn counts(&self) -> Result<Counts, Error> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM alerts),
                    (SELECT COUNT(*) FROM outbox_events),
                    (SELECT COUNT(*) FROM incidents),
                    (SELECT COUNT(*) FROM actions),
                    (SELECT COUNT(*) FROM actions WHERE status = 'completed'),
                    (SELECT COUNT(*) FROM notifications),
                    (SELECT COUNT(*) FROM notifications WHERE status = 'delivered'),
                    (SELECT COUNT(*) FROM dead_letters)",
        )
        .fetch_one(&self.reads)
        .await?;
        Ok(Counts {
            alerts: row.get(0),
            events: row.get(1),
            incidents: row.get(2),
            actions: row.get(3),
            actions_completed: row.get(4),
            notifications: row.get(5),
            notifications_delivered: row.get(6),
            dead_letters: row.get(7),
        })
    }
}

// ---- audit log ------------------------------------------------------------------

impl Store {
    /// Append capability audit records.
    pub async fn audit(&self, records: &[crate::model::AuditRecord]) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        for r in records {
            sqlx::query(
                "INSERT INTO audit_log (at, plugin, capability, operation, target, allowed, detail)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(r.at)
            .bind(&r.plugin)
            .bind(&r.capability)
            .bind(&r.operation)
            .bind(&r.target)
            .bind(i64::from(r.allowed))
            .bind(&r.detail)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The newest `limit` audit records, newest first; only `plugin`'s if given.
    pub async fn audit_log(
        &self,
        plugin: Option<&str>,
        limit: u32,
    ) -> Result<Vec<crate::model::AuditRecord>, Error> {
        let rows = sqlx::query(
            "SELECT at, plugin, capability, operation, target, allowed, detail
             FROM audit_log WHERE ($1 = '' OR plugin = $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(plugin.unwrap_or_default())
        .bind(limit as i64)
        .fetch_all(&self.reads)
        .await?;
        Ok(rows
            .iter()
            .map(|r| crate::model::AuditRecord {
                at: r.get(0),
                plugin: r.get(1),
                capability: r.get(2),
                operation: r.get(3),
                target: r.get(4),
                allowed: r.get::<i64, _>(5) != 0,
                detail: r.get(6),
            })
            .collect())
    }
}
