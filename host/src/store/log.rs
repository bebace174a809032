//! The log and its consumers: inbox rows, consumer offsets, reading the
//! outbox, and publishing it (the relay's lease and marks).

use std::collections::HashSet;

use sqlx::{Any, Row};

use super::{Backend, Error, Holder, Store, now_ms};

use super::tx::{ROWS_PER_INSERT, Tx, multi_insert, params};

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

impl Tx {
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
}

impl Store {
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
        self.write_one(
            Holder::Offsets,
            sqlx::query(
            "INSERT INTO consumer_offsets (consumer, seq, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (consumer) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at
             WHERE consumer_offsets.seq < excluded.seq",
        )
        .bind(consumer)
        .bind(seq)
        .bind(now_ms())
        )
        .await?;
        Ok(())
    }

    /// Outbox events of `kinds` after `after`, oldest first: `(seq, payload)`.
    ///
    /// One ordered index range per kind, each cut at `limit`, then merged:
    /// a read costs at most `limit` rows per kind however far behind the
    /// consumer is. (`kind IN (..)` over the same index would fetch and sort
    /// every event of those kinds after `after`, the whole backlog, on each
    /// read.)
    pub async fn outbox_read(
        &self,
        kinds: &[&str],
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, String)>, Error> {
        let ranges: Vec<String> = (0..kinds.len())
            .map(|i| {
                format!(
                    "SELECT seq, payload FROM (SELECT seq, payload FROM outbox_events
                     WHERE kind = ${} AND seq > $1 ORDER BY seq LIMIT $2) AS k{i}",
                    i + 3
                )
            })
            .collect();
        let sql = format!("{} ORDER BY seq LIMIT $2", ranges.join(" UNION ALL "));
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
        self.write_one(
            Holder::KafkaRelay,
            sqlx::query(
            "UPDATE outbox_events SET published_at = $1 WHERE seq <= $2 AND published_at IS NULL",
        )
        .bind(now_ms())
        .bind(through)
        )
        .await?;
        Ok(())
    }
}
