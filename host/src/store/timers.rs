//! Durable timers: set and cancelled in a rule stage's transaction, fired
//! (appended as their `timer.fired` event and deleted, in one transaction)
//! by the pipeline's timer task.

use sqlx::Row;

use super::{Error, Holder, Store, Tx, now_ms};
use crate::model;

impl Tx {
    /// Set `plugin`'s timer `key` to fire as `event` at `due_at`,
    /// replacing a pending one with the same key (written at commit).
    pub async fn set_timer(
        &mut self,
        plugin: &str,
        key: &str,
        due_at: i64,
        event: &model::Event,
    ) -> Result<(), Error> {
        let event_json = serde_json::to_string(event).expect("events serialise");
        self.pending.timers.insert(
            (plugin.to_owned(), key.to_owned()),
            Some((event.id.clone(), due_at, event_json, now_ms())),
        );
        Ok(())
    }

    /// Forget `plugin`'s pending timer `key` (at commit).
    pub async fn cancel_timer(&mut self, plugin: &str, key: &str) -> Result<(), Error> {
        self.pending
            .timers
            .insert((plugin.to_owned(), key.to_owned()), None);
        Ok(())
    }
}

impl Store {
    /// Arm `plugin`'s repeating timer `key` to fire as `event` at `due_at`
    /// and every `repeat_ms` after, unless it is armed already (then only
    /// its period is updated). Returns whether it was armed now.
    pub async fn arm_repeating(
        &self,
        plugin: &str,
        key: &str,
        due_at: i64,
        repeat_ms: i64,
        event: &model::Event,
    ) -> Result<bool, Error> {
        // Looked up beside the writer: nearly always it is armed as it is.
        let known: Option<Option<i64>> =
            sqlx::query_scalar("SELECT repeat_ms FROM timers WHERE plugin = $1 AND key = $2")
                .bind(plugin)
                .bind(key)
                .fetch_optional(&self.reads)
                .await?;
        if known == Some(Some(repeat_ms)) {
            return Ok(false);
        }
        let mut tx = self.begin(Holder::Timers).await?;
        let armed = match known {
            Some(_) => {
                sqlx::query("UPDATE timers SET repeat_ms = $1 WHERE plugin = $2 AND key = $3")
                    .bind(repeat_ms)
                    .bind(plugin)
                    .bind(key)
                    .execute(tx.conn())
                    .await?;
                false
            }
            None => {
                sqlx::query(
                    "INSERT INTO timers (plugin, key, id, due_at, event, created_at, repeat_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (plugin, key) DO UPDATE SET repeat_ms = excluded.repeat_ms",
                )
                .bind(plugin)
                .bind(key)
                .bind(&event.id)
                .bind(due_at)
                .bind(serde_json::to_string(event).expect("events serialise"))
                .bind(now_ms())
                .bind(repeat_ms)
                .execute(tx.conn())
                .await?;
                true
            }
        };
        tx.commit().await?;
        Ok(armed)
    }

    /// Drop the repeating timers `key` of plugins not in `keep` (a rule
    /// whose schedule was removed, or that was disabled or deleted).
    pub async fn disarm_repeating(&self, key: &str, keep: &[String]) -> Result<(), Error> {
        let armed: Vec<String> = sqlx::query_scalar(
            "SELECT plugin FROM timers WHERE key = $1 AND repeat_ms IS NOT NULL",
        )
        .bind(key)
        .fetch_all(&self.reads)
        .await?;
        for plugin in armed.iter().filter(|p| !keep.contains(p)) {
            let mut tx = self.begin(Holder::Timers).await?;
            sqlx::query(
                "DELETE FROM timers WHERE plugin = $1 AND key = $2 AND repeat_ms IS NOT NULL",
            )
            .bind(plugin)
            .bind(key)
            .execute(tx.conn())
            .await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// Fire up to `limit` timers due at `now` (host clock): each one's
    /// event is appended and its row deleted in one transaction, so it
    /// fires once even when instances race for it. How many fired.
    pub async fn fire_timers(&self, now: i64, limit: u32) -> Result<usize, Error> {
        let due = sqlx::query(
            "SELECT id, event, repeat_ms FROM timers WHERE due_at <= $1 ORDER BY due_at, id LIMIT $2",
        )
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&self.reads)
        .await?;
        if due.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin(Holder::Timers).await?;
        let mut fired = 0;
        for row in &due {
            let (id, event, repeat): (String, String, Option<i64>) =
                (row.get(0), row.get(1), row.get(2));
            // A repeating timer moves on (under a fresh id: each firing is
            // its own event); any other is deleted.
            let taken = match repeat {
                Some(every) => {
                    sqlx::query("UPDATE timers SET id = $1, due_at = $2 WHERE id = $3")
                        .bind(uuid::Uuid::now_v7().to_string())
                        .bind(now + every.max(1))
                        .bind(&id)
                        .execute(tx.conn())
                        .await?
                }
                None => {
                    sqlx::query("DELETE FROM timers WHERE id = $1")
                        .bind(&id)
                        .execute(tx.conn())
                        .await?
                }
            };
            if taken.rows_affected() == 0 {
                continue; // replaced, cancelled or fired elsewhere meanwhile
            }
            // Written by `set_timer`; a row that no longer reads is dropped.
            let Ok(mut event) = serde_json::from_str::<model::Event>(&event) else {
                tracing::error!(timer = %id, "unreadable timer dropped");
                continue;
            };
            event.id = id;
            event.time = now.max(0) as u64;
            tx.append(&event).await?;
            fired += 1;
        }
        tx.commit().await?;
        Ok(fired)
    }

    /// When the next timer is due (ms, host clock).
    pub async fn next_timer(&self) -> Result<Option<i64>, Error> {
        let row = sqlx::query("SELECT MIN(due_at) FROM timers")
            .fetch_one(&self.reads)
            .await?;
        Ok(row.get(0))
    }

    /// Pending timers: `(plugin, key, due_at)`, soonest first.
    pub async fn timers(&self) -> Result<Vec<(String, String, i64)>, Error> {
        let rows =
            sqlx::query("SELECT plugin, key, due_at FROM timers ORDER BY due_at, plugin, key")
                .fetch_all(&self.reads)
                .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }
}
