//! Retention: deleting what is older than its configured age, in batches
//! of `retention.batch` rows per statement so a prune never holds the
//! database for long.
//!
//! What is never deleted, whatever the ages:
//! - an outbox event some stage has not processed (embedded: at or past the
//!   lowest stage offset; every stage must have an offset) or that is not
//!   yet published (Kafka);
//! - an open or mitigating incident, its timeline, alerts, actions and
//!   notifications, and the decisions about it;
//! - a closed incident with an action or notification still to run;
//! - a firing alert, and an unfinished action or notification.
//!
//! Tables keyed by a growing id are pruned from the lowest id up, a window
//! of `batch` ids at a time (their time columns grow with the id, so the
//! first window with nothing old ends the prune); the others by an index
//! on their time column (migration 0009).

use sqlx::AnyConnection;
use sqlx::Row;

use super::{Error, Holder, Store};
use crate::config::RetentionConfig;

/// Which transport the outbox feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feeds {
    /// The embedded log: the outbox is read by these stage consumers.
    Embedded(&'static [&'static str]),
    /// Kafka: the relay publishes the outbox.
    Kafka,
}

/// Rows deleted (or, in a dry run, that would be), per record kind.
pub type Pruned = Vec<(&'static str, u64)>;

/// Unfinished job statuses.
const ACTIVE_JOBS: &str = "('pending', 'running', 'awaiting_approval')";
/// Incidents still being handled.
const OPEN_INCIDENTS: &str = "('open', 'mitigating')";

/// One kind of record and its age.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Outbox,
    Inbox,
    Decisions,
    Audit,
    Failures,
    Incidents,
    Alerts,
    KubeEvents,
    DeadLetters,
    Jobs,
    Silences,
    Dedup,
    ExpiredState,
}

impl Kind {
    const ALL: [Kind; 13] = [
        Kind::Outbox,
        Kind::Inbox,
        Kind::Decisions,
        Kind::Audit,
        Kind::Failures,
        Kind::Incidents,
        Kind::Alerts,
        Kind::KubeEvents,
        Kind::DeadLetters,
        Kind::Jobs,
        Kind::Silences,
        Kind::Dedup,
        Kind::ExpiredState,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Outbox => "outbox events",
            Kind::Inbox => "inbox rows",
            Kind::Decisions => "decisions",
            Kind::Audit => "audit records",
            Kind::Failures => "sandbox failures",
            Kind::Incidents => "closed incidents",
            Kind::Alerts => "resolved alerts",
            Kind::KubeEvents => "kubernetes events",
            Kind::DeadLetters => "dead letters",
            Kind::Jobs => "finished jobs",
            Kind::Silences => "ended silences",
            Kind::Dedup => "notification dedup keys",
            Kind::ExpiredState => "expired plugin state",
        }
    }

    /// The tables its pruning deletes from.
    fn tables(self) -> &'static [&'static str] {
        match self {
            Kind::Outbox => &["outbox_events"],
            Kind::Inbox => &["inbox_events"],
            Kind::Decisions => &["decisions_log"],
            Kind::Audit => &["audit_log"],
            Kind::Failures => &["plugin_failures"],
            Kind::Incidents => &[
                "incidents",
                "incident_events",
                "incident_alerts",
                "actions",
                "notifications",
            ],
            Kind::Alerts => &["alerts"],
            Kind::KubeEvents => &["kube_events"],
            Kind::DeadLetters => &["dead_letters"],
            Kind::Jobs => &["actions", "notifications"],
            Kind::Silences => &["silences"],
            Kind::Dedup => &["notification_dedup"],
            Kind::ExpiredState => &["plugin_state"],
        }
    }

    /// Its age in seconds (`0`: kept for ever).
    fn age_secs(self, c: &RetentionConfig) -> u64 {
        match self {
            Kind::Outbox => c.outbox_secs,
            Kind::Inbox => c.inbox_secs,
            Kind::Decisions => c.decisions_secs,
            Kind::Audit | Kind::Failures => c.audit_secs,
            Kind::Incidents => c.incidents_secs,
            Kind::Alerts => c.alerts_secs,
            Kind::KubeEvents => c.kube_events_secs,
            Kind::DeadLetters => c.dead_letters_secs,
            Kind::Jobs | Kind::Silences | Kind::Dedup => c.jobs_secs,
            // Expired state is gone for the plugin already.
            Kind::ExpiredState => 1,
        }
    }
}

impl Store {
    /// Delete what `config` says is old at `now` (ms). A dry run deletes
    /// in one transaction and rolls it back, so its counts are exact.
    pub async fn prune(
        &self,
        config: &RetentionConfig,
        feeds: Feeds,
        now: i64,
        dry_run: bool,
    ) -> Result<Pruned, Error> {
        let batch = i64::from(config.batch.max(1));
        let mut pruned = Vec::new();
        let mut dry = if dry_run {
            Some(self.begin(Holder::Retention).await?)
        } else {
            None
        };
        for kind in Kind::ALL {
            let age = kind.age_secs(config);
            if age == 0 {
                continue;
            }
            let cutoff = match kind {
                Kind::ExpiredState => now,
                _ => now - (age as i64).saturating_mul(1000),
            };
            let mut total = 0;
            loop {
                let n = match dry.as_mut() {
                    Some(tx) => prune_batch(tx.conn(), kind, feeds, cutoff, batch).await?,
                    None => {
                        let mut tx = self.begin(Holder::Retention).await?;
                        let n = prune_batch(tx.conn(), kind, feeds, cutoff, batch).await?;
                        tx.commit().await?;
                        n
                    }
                };
                total += n;
                if n == 0 {
                    break;
                }
                if dry.is_none() {
                    // Let other writers in between batches.
                    tokio::task::yield_now().await;
                }
            }
            pruned.push((kind.name(), total));
        }
        match dry {
            Some(tx) => tx.rollback().await?,
            None => self.vacuum(&pruned).await,
        }
        Ok(pruned)
    }

    /// On PostgreSQL, `VACUUM` the tables a prune deleted from, so their
    /// space is reused at once rather than when autovacuum next gets to
    /// them: under a steady stream of alerts the tables otherwise grow
    /// with dead rows while their live rows stay level. (SQLite reuses
    /// freed pages by itself.) A failed vacuum is logged; the prune stands.
    async fn vacuum(&self, pruned: &Pruned) {
        if self.backend != super::Backend::Postgres {
            return;
        }
        let mut tables: Vec<&str> = Kind::ALL
            .iter()
            .filter(|k| pruned.iter().any(|(name, n)| *name == k.name() && *n > 0))
            .flat_map(|k| k.tables().iter().copied())
            .collect();
        tables.sort_unstable();
        tables.dedup();
        if tables.is_empty() {
            return;
        }
        // VACUUM cannot run in a transaction: a pooled connection of its own.
        let sql = format!("VACUUM (ANALYZE) {}", tables.join(", "));
        if let Err(e) = sqlx::raw_sql(&sql).execute(&self.pool).await {
            tracing::warn!(error = %e, "vacuuming after the prune failed");
        }
    }
}

/// Delete the `batch` lowest ids of `table` whose `time` is before
/// `cutoff` and that satisfy `extra`.
async fn by_id(
    conn: &mut AnyConnection,
    table: &str,
    id: &str,
    time: &str,
    extra: &str,
    cutoff: i64,
    batch: i64,
) -> Result<u64, Error> {
    // The oldest `batch` rows that may go, found through the primary key:
    // rows kept for ever at the low end (an open incident's decisions)
    // must not stop the pruning of everything after them.
    let sql = format!(
        "DELETE FROM {table} WHERE {id} IN (
             SELECT {id} FROM {table} WHERE {time} < $1 {extra} ORDER BY {id} LIMIT $2)"
    );
    delete(conn, &sql, cutoff, batch).await
}

/// Run a batched delete that reads the cutoff as `$1` and the batch as `$2`.
async fn delete(
    conn: &mut AnyConnection,
    sql: &str,
    cutoff: i64,
    batch: i64,
) -> Result<u64, Error> {
    let done = sqlx::query(sql)
        .bind(cutoff)
        .bind(batch)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}

/// Delete up to `batch` rows of `table` (keyed by the columns `key`)
/// matching `filter` (which reads the cutoff as `$1`).
async fn by_key(
    conn: &mut AnyConnection,
    table: &str,
    key: &str,
    filter: &str,
    cutoff: i64,
    batch: i64,
) -> Result<u64, Error> {
    let sql = format!(
        "DELETE FROM {table} WHERE ({key}) IN (SELECT {key} FROM {table} WHERE {filter} LIMIT $2)"
    );
    delete(conn, &sql, cutoff, batch).await
}

/// One batch of `kind`: how many rows went.
async fn prune_batch(
    conn: &mut AnyConnection,
    kind: Kind,
    feeds: Feeds,
    cutoff: i64,
    batch: i64,
) -> Result<u64, Error> {
    match kind {
        Kind::Outbox => {
            let extra = match feeds {
                Feeds::Kafka => "AND published_at IS NOT NULL".to_owned(),
                Feeds::Embedded(consumers) => {
                    // Only below every stage's position; a stage without one
                    // has processed nothing, so nothing goes.
                    let row = sqlx::query(&format!(
                        "SELECT COUNT(*), COALESCE(MIN(seq), 0) FROM consumer_offsets
                         WHERE consumer IN ({})",
                        quoted(consumers)
                    ))
                    .fetch_one(&mut *conn)
                    .await?;
                    let (known, lowest): (i64, i64) = (row.get(0), row.get(1));
                    if known < consumers.len() as i64 {
                        return Ok(0);
                    }
                    format!("AND seq <= {lowest}")
                }
            };
            by_id(
                conn,
                "outbox_events",
                "seq",
                "created_at",
                &extra,
                cutoff,
                batch,
            )
            .await
        }
        Kind::Inbox => {
            let key = "consumer, event_id";
            by_key(
                conn,
                "inbox_events",
                key,
                "processed_at < $1",
                cutoff,
                batch,
            )
            .await
        }
        Kind::Decisions => {
            let extra = format!(
                "AND (incident_id IS NULL OR incident_id NOT IN
                     (SELECT id FROM incidents WHERE status IN {OPEN_INCIDENTS}))"
            );
            by_id(conn, "decisions_log", "id", "at", &extra, cutoff, batch).await
        }
        Kind::Audit => by_id(conn, "audit_log", "id", "at", "", cutoff, batch).await,
        Kind::Failures => by_id(conn, "plugin_failures", "id", "at", "", cutoff, batch).await,
        Kind::DeadLetters => by_id(conn, "dead_letters", "id", "at", "", cutoff, batch).await,
        Kind::Incidents => {
            let ids: Vec<String> = sqlx::query(&format!(
                "SELECT id FROM incidents i
                 WHERE closed_at IS NOT NULL AND closed_at < $1 AND status NOT IN {OPEN_INCIDENTS}
                   AND NOT EXISTS (SELECT 1 FROM actions a
                                   WHERE a.incident_id = i.id AND a.status IN {ACTIVE_JOBS})
                   AND NOT EXISTS (SELECT 1 FROM notifications n
                                   WHERE n.incident_id = i.id AND n.status IN {ACTIVE_JOBS})
                 ORDER BY closed_at LIMIT $2"
            ))
            .bind(cutoff)
            .bind(batch)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
            if ids.is_empty() {
                return Ok(0);
            }
            let list = quoted(&ids.iter().map(String::as_str).collect::<Vec<_>>());
            for table in [
                "incident_events",
                "incident_alerts",
                "actions",
                "notifications",
            ] {
                sqlx::query(&format!(
                    "DELETE FROM {table} WHERE incident_id IN ({list})"
                ))
                .execute(&mut *conn)
                .await?;
            }
            let done = sqlx::query(&format!("DELETE FROM incidents WHERE id IN ({list})"))
                .execute(&mut *conn)
                .await?;
            Ok(done.rows_affected())
        }
        Kind::Alerts => {
            let filter = format!(
                "status = 'resolved' AND last_seen < $1
                 AND NOT EXISTS (
                     SELECT 1 FROM incident_alerts ia JOIN incidents i ON i.id = ia.incident_id
                     WHERE ia.fingerprint = alerts.fingerprint AND ia.starts_at = alerts.starts_at
                       AND i.status IN {OPEN_INCIDENTS})"
            );
            by_key(
                conn,
                "alerts",
                "fingerprint, starts_at",
                &filter,
                cutoff,
                batch,
            )
            .await
        }
        Kind::KubeEvents => {
            by_key(
                conn,
                "kube_events",
                "dedup_key",
                "updated_at < $1",
                cutoff,
                batch,
            )
            .await
        }
        Kind::Jobs => {
            let filter =
                format!("incident_id IS NULL AND status NOT IN {ACTIVE_JOBS} AND updated_at < $1");
            let actions = by_key(&mut *conn, "actions", "id", &filter, cutoff, batch).await?;
            Ok(actions + by_key(conn, "notifications", "id", &filter, cutoff, batch).await?)
        }
        Kind::Silences => {
            let filter = "ends_at < $1 OR (expired_at IS NOT NULL AND expired_at < $1)";
            by_key(conn, "silences", "id", filter, cutoff, batch).await
        }
        Kind::Dedup => {
            let key = "channel, dedup_key";
            by_key(
                conn,
                "notification_dedup",
                key,
                "last_sent_at < $1",
                cutoff,
                batch,
            )
            .await
        }
        Kind::ExpiredState => {
            let filter = "expires_at IS NOT NULL AND expires_at < $1";
            by_key(conn, "plugin_state", "plugin, key", filter, cutoff, batch).await
        }
    }
}

/// `'a', 'b'` for an `IN` list of trusted names and ids (no quotes in
/// them: stage names and UUIDs; any quote is doubled anyway).
fn quoted(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| format!("'{}'", s.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(", ")
}
