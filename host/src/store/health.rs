//! What monitoring asks the store: readiness, each consumer's backlog,
//! work-queue depth, dead letters waiting and the alerts whose handling
//! has not finished. Read on every scrape: each query touches only what is
//! waiting (indexed by status, offset or `published_at`), not history.

use sqlx::Row;

use super::{Backend, Error, Holder, Store, now_ms};
use crate::model::EventKind;

/// How far one consumer is behind the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Events of its kinds appended and not yet committed by it.
    pub events: i64,
    /// When the oldest of them was appended (ms), if any.
    pub oldest_ms: Option<i64>,
}

/// The alerts whose handling has not reached a final state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unfinished {
    /// Distinct alerts.
    pub alerts: i64,
    /// When the oldest outstanding piece of their handling began (ms).
    pub oldest_ms: Option<i64>,
}

/// A work queue's jobs by status, and its oldest due pending job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDepth {
    /// `(status, jobs)`.
    pub by_status: Vec<(String, i64)>,
    /// `next_attempt_at` of the oldest pending job already due (ms).
    pub oldest_due_ms: Option<i64>,
}

/// The consumers whose dead letters are failed jobs: final outcomes (the
/// failure was announced to the rules), not unfinished work.
const JOB_CONSUMERS: [&str; 2] = ["actions", "notifications"];

impl Store {
    /// Whether the store takes a write now: on SQLite a write lock is
    /// taken and released (so a database another process holds locked
    /// answers "busy" after the busy timeout), on PostgreSQL a round trip.
    /// Runs to the end on its own task even if the caller stops waiting,
    /// so a connection never goes back to the pool inside the probe's
    /// transaction.
    pub async fn ping(&self) -> Result<(), Error> {
        let store = self.clone();
        tokio::spawn(async move { store.probe().await })
            .await
            .expect("the store probe does not panic")
    }

    async fn probe(&self) -> Result<(), Error> {
        match self.backend {
            // A write that changes nothing: it takes the write lock.
            Backend::Sqlite => {
                let mut tx = self.begin(Holder::Health).await?;
                sqlx::query("UPDATE consumer_offsets SET seq = seq WHERE 0")
                    .execute(tx.conn())
                    .await?;
                tx.rollback().await
            }
            Backend::Postgres => {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }
        }
    }

    /// Events of `kinds` after `consumer`'s saved offset that it has not
    /// committed (embedded transport: the outbox is its log).
    pub async fn backlog(&self, consumer: &str, kinds: &[&str]) -> Result<Backlog, Error> {
        let placeholders: Vec<String> = (0..kinds.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT COUNT(*), MIN(o.created_at) FROM outbox_events o
             WHERE o.seq > COALESCE((SELECT seq FROM consumer_offsets WHERE consumer = $1), 0)
               AND o.kind IN ({})
               AND NOT EXISTS (SELECT 1 FROM inbox_events i
                               WHERE i.consumer = $1 AND i.event_id = o.event_id)",
            placeholders.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(consumer);
        for k in kinds {
            q = q.bind(*k);
        }
        let row = q.fetch_one(&self.reads).await?;
        Ok(Backlog {
            events: row.get(0),
            oldest_ms: row.get(1),
        })
    }

    /// Outbox rows not yet published to Kafka.
    pub async fn unpublished_count(&self) -> Result<i64, Error> {
        let row = sqlx::query("SELECT COUNT(*) FROM outbox_events WHERE published_at IS NULL")
            .fetch_one(&self.reads)
            .await?;
        Ok(row.get(0))
    }

    /// Jobs of `queue` by status, and its oldest due pending job.
    pub async fn queue_depth(&self, queue: super::Queue) -> Result<QueueDepth, Error> {
        let table = queue.table();
        let rows = sqlx::query(&format!(
            "SELECT status, COUNT(*) FROM {table} WHERE status IN ('pending', 'running', 'awaiting_approval')
             GROUP BY status"
        ))
        .fetch_all(&self.reads)
        .await?;
        let due = sqlx::query(&format!(
            "SELECT MIN(next_attempt_at) FROM {table}
             WHERE status = 'pending' AND next_attempt_at <= $1"
        ))
        .bind(now_ms())
        .fetch_one(&self.reads)
        .await?;
        Ok(QueueDepth {
            by_status: rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
            oldest_due_ms: due.get(0),
        })
    }

    /// Dead letters not replayed, by consumer.
    pub async fn dead_letters_waiting(&self) -> Result<Vec<(String, i64)>, Error> {
        let rows = sqlx::query(
            "SELECT consumer, COUNT(*) FROM dead_letters WHERE replayed_at IS NULL
             GROUP BY consumer ORDER BY consumer",
        )
        .fetch_all(&self.reads)
        .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Alerts whose handling has not reached a final state: an
    /// `alert.raised` the rule stage (`rules_consumer`) has not committed,
    /// a dead-lettered event of the alert not replayed (except failed
    /// jobs, which are final), or an action or notification for it still
    /// pending or running. With `embedded`, waiting alert events are read
    /// after the rule stage's offset; otherwise (Kafka, where offsets live
    /// in the brokers) only those not yet published count here, and the
    /// consumer-lag metric covers the rest.
    pub async fn unfinished(
        &self,
        rules_consumer: &str,
        embedded: bool,
    ) -> Result<Unfinished, Error> {
        let alert = |column: &str| match self.backend {
            Backend::Sqlite => format!("json_extract({column}, '$.correlation.alert_id')"),
            Backend::Postgres => format!("(({column})::jsonb -> 'correlation' ->> 'alert_id')"),
        };
        let waiting = if embedded {
            "o.seq > COALESCE((SELECT seq FROM consumer_offsets WHERE consumer = $1), 0)"
        } else {
            "o.published_at IS NULL"
        };
        let sql = format!(
            "SELECT COUNT(DISTINCT alert_id), MIN(since) FROM (
                 SELECT {o} AS alert_id, o.created_at AS since FROM outbox_events o
                  WHERE {waiting} AND o.kind = $2
                    AND NOT EXISTS (SELECT 1 FROM inbox_events i
                                    WHERE i.consumer = $1 AND i.event_id = o.event_id)
                 UNION ALL
                 SELECT {d}, d.at FROM dead_letters d
                  WHERE d.replayed_at IS NULL AND d.consumer NOT IN ($3, $4) AND d.kind <> 'unreadable'
                 UNION ALL
                 SELECT {a}, a.created_at FROM actions a WHERE a.status IN ('pending', 'running')
                 UNION ALL
                 SELECT {n}, n.created_at FROM notifications n WHERE n.status IN ('pending', 'running')
             ) u WHERE alert_id IS NOT NULL",
            o = alert("o.payload"),
            d = alert("d.payload"),
            a = alert("a.request"),
            n = alert("n.request"),
        );
        let row = sqlx::query(&sql)
            .bind(rules_consumer)
            .bind(EventKind::AlertRaised.as_str())
            .bind(JOB_CONSUMERS[0])
            .bind(JOB_CONSUMERS[1])
            .fetch_one(&self.reads)
            .await?;
        Ok(Unfinished {
            alerts: row.get(0),
            oldest_ms: row.get(1),
        })
    }
}
