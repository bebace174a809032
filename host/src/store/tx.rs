//! [`Tx`], the write transaction: commit, the rows it buffers and writes
//! as multi-row statements at commit, outbox appends, plugin state and the
//! decisions log.

use std::collections::BTreeMap;
use std::sync::Arc;

use sqlx::{Any, AnyConnection, Transaction};

use super::writer::Member;
use tokio::sync::Notify;

use super::{Backend, Error, now_ms};
use crate::model::{self, IncidentStatus, Job, JobStatus, StateWrite, TimelineEntry};

use super::queues::Queue;

/// A write transaction. Dropping it without [`Tx::commit`] rolls back.
///
/// Outbox appends, timeline entries and decision-log rows are insert-only
/// and never read back inside a transaction, so they are buffered and
/// written at commit as multi-row inserts: a batch of events costs a few
/// statements for them, not one per row.
pub struct Tx {
    pub(super) tx: TxConn,
    pub(super) backend: Backend,
    pub(super) appended: bool,
    pub(super) locked: bool,
    pub(super) notify: Arc<Notify>,
    pub(super) instance: Arc<str>,
    pub(super) pending: Pending,
    /// Incidents read or written in this transaction.
    pub(super) incidents: super::incidents::Cache,
    /// Notification dedup decided for the batch, per `(channel, key)` in
    /// request order ([`Tx::decide_dedup`]).
    pub(super) dedup:
        std::collections::HashMap<(String, String), std::collections::VecDeque<super::Dedup>>,
}

/// Where a [`Tx`] runs.
pub(super) enum TxConn {
    /// A transaction of its own on a pooled connection (PostgreSQL, and
    /// SQLite in memory).
    Pool(Transaction<'static, Any>),
    /// A member of a group commit on SQLite's one writer.
    Shared(Member),
}

/// Rows [`Tx`] writes at commit.
#[derive(Default)]
pub(super) struct Pending {
    /// `(event_id, kind, key, payload, created_at)`.
    pub(super) outbox: Vec<(String, String, String, String, i64)>,
    /// `(incident_id, entry)`.
    pub(super) timeline: Vec<(String, TimelineEntry)>,
    pub(super) decisions: Vec<DecisionRow>,
    /// New jobs: `(queue, job, status, error)`.
    pub(super) jobs: Vec<(Queue, Job, JobStatus, Option<String>)>,
    /// Attempt ends: `(queue, id, status, result, error, next_attempt_at)`.
    pub(super) ends: Vec<(
        Queue,
        String,
        JobStatus,
        Option<String>,
        Option<String>,
        i64,
    )>,
    /// Alert links of incidents opened in this transaction:
    /// `(incident_id, fingerprint, starts_at)`.
    pub(super) links: Vec<(String, String, i64)>,
    /// Plugin state, last write per `(plugin, key)` wins.
    pub(super) state: BTreeMap<(String, String), Option<(String, Option<u64>)>>,
    /// When a notification about an incident this transaction does not
    /// hold went out: `(incident_id, at)`.
    pub(super) notified: Vec<(String, i64)>,
    /// Rule timers, last write per `(plugin, key)` wins: set (see
    /// [`TimerRow`]) or cancelled.
    pub(super) timers: BTreeMap<(String, String), Option<TimerRow>>,
}

/// A timer as set: `(id, due_at, event, created_at)`.
pub(super) type TimerRow = (String, i64, String, i64);

pub(super) struct DecisionRow {
    event_id: String,
    event_kind: String,
    rule: String,
    trace_id: String,
    incident_id: Option<String>,
    decision: Option<String>,
    error: Option<String>,
    at: i64,
    rule_version: Option<String>,
    rule_digest: Option<String>,
}

/// Rows per multi-row statement: well under both backends' limits on
/// bound parameters (SQLite 32,766; PostgreSQL 65,535) at 10 columns.
pub(super) const ROWS_PER_INSERT: usize = 200;

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
    /// The rule's version (from `describe`) and component digest, when a
    /// version was loaded.
    pub build: Option<(&'a str, &'a str)>,
}

impl Tx {
    /// The connection, for statements.
    pub fn conn(&mut self) -> &mut AnyConnection {
        match &mut self.tx {
            TxConn::Pool(tx) => tx,
            TxConn::Shared(member) => member.conn(),
        }
    }

    /// Undo everything this transaction wrote.
    pub async fn rollback(self) -> Result<(), Error> {
        match self.tx {
            TxConn::Pool(tx) => Ok(tx.rollback().await?),
            TxConn::Shared(member) => member.rollback().await,
        }
    }

    /// Write the buffered rows, commit, then wake outbox readers if
    /// anything was appended.
    pub async fn commit(mut self) -> Result<(), Error> {
        self.flush().await?;
        match self.tx {
            TxConn::Pool(tx) => tx.commit().await?,
            TxConn::Shared(member) => member.commit().await?,
        }
        if self.appended {
            self.notify.notify_waiters();
        }
        Ok(())
    }

    /// Write the buffered rows now: incidents first (the other rows refer
    /// to them), the outbox last. On PostgreSQL appending takes the outbox
    /// lock, which every appending transaction waits for and holds until it
    /// commits; taken last, it is held for one insert and the commit rather
    /// than for all of the transaction's writes.
    pub(super) async fn flush(&mut self) -> Result<(), Error> {
        self.flush_incidents().await?;
        let pending = std::mem::take(&mut self.pending);
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
                "INSERT INTO decisions_log (event_id, event_kind, rule, trace_id, incident_id, decision, error, at, rule_version, rule_digest)",
                10,
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
                    .bind(d.at)
                    .bind(&d.rule_version)
                    .bind(&d.rule_digest);
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
                        // Due now, unless the job says when (an approval's expiry).
                        .bind(if job.next_attempt_at > 0 {
                            job.next_attempt_at
                        } else {
                            now
                        })
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
        let deleted: Vec<_> = deleted.into_iter().map(|(k, _)| k).collect();
        self.delete_keyed("plugin_state", &deleted).await?;
        let (set, cancelled): (Vec<_>, Vec<_>) =
            pending.timers.iter().partition(|(_, v)| v.is_some());
        let cancelled: Vec<_> = cancelled.into_iter().map(|(k, _)| k).collect();
        self.delete_keyed("timers", &cancelled).await?;
        for chunk in set.chunks(ROWS_PER_INSERT) {
            let sql = multi_insert(
                self.backend,
                "INSERT INTO timers (plugin, key, id, due_at, event, created_at)",
                6,
                chunk.len(),
            ) + " ON CONFLICT (plugin, key) DO UPDATE SET id = excluded.id, due_at = excluded.due_at,
                  event = excluded.event, created_at = excluded.created_at";
            let mut q = sqlx::query(&sql);
            for ((plugin, key), row) in chunk {
                let (id, due_at, event, created_at) = row.as_ref().expect("partitioned on is_some");
                q = q
                    .bind(plugin)
                    .bind(key)
                    .bind(id)
                    .bind(*due_at)
                    .bind(event)
                    .bind(*created_at);
            }
            q.execute(self.conn()).await?;
        }
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
        Ok(())
    }

    /// Delete the rows of `table` (keyed by `plugin, key`) named in
    /// `keys`, a few hundred per statement.
    async fn delete_keyed(&mut self, table: &str, keys: &[&(String, String)]) -> Result<(), Error> {
        for chunk in keys.chunks(ROWS_PER_INSERT) {
            let terms: Vec<String> = (0..chunk.len())
                .map(|r| {
                    let p = params(self.backend, r * 2 + 1, 2);
                    let (plugin, key) = p.split_once(", ").expect("two parameters");
                    format!("(plugin = {plugin} AND key = {key})")
                })
                .collect();
            let sql = format!("DELETE FROM {table} WHERE {}", terms.join(" OR "));
            let mut q = sqlx::query(&sql);
            for (plugin, key) in chunk {
                q = q.bind(plugin).bind(key);
            }
            q.execute(self.conn()).await?;
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
    pub(super) async fn lock_outbox(&mut self) -> Result<(), Error> {
        if self.backend == Backend::Postgres && !self.locked {
            sqlx::query("SELECT pg_advisory_xact_lock(7307171)")
                .execute(self.conn())
                .await?;
            self.locked = true;
        }
        Ok(())
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
            rule_version: d.build.map(|b| b.0.to_owned()),
            rule_digest: d.build.map(|b| b.1.to_owned()),
        });
        Ok(())
    }
}
