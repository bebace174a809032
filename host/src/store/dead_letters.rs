//! Dead letters: events and jobs a stage gave up on, and their replay.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Error, Holder, Store, now_ms};
use crate::model::{self};

use super::queues::Queue;
use super::tx::Tx;

/// A dead letter.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
    pub(super) fn from_row(r: &AnyRow) -> Self {
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

impl Tx {
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

impl Store {
    /// The newest dead letters.
    pub async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>, Error> {
        Ok(self.dead_letter_page(None, limit).await?.0)
    }

    /// Up to `limit` dead letters older than `before` (a letter id), newest
    /// first, and the cursor of the next page.
    pub async fn dead_letter_page(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> Result<(Vec<DeadLetter>, Option<String>), Error> {
        let rows = sqlx::query(
            "SELECT id, consumer, event_id, kind, error, attempts, at, replayed_at
             FROM dead_letters WHERE id < $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.reads)
        .await?;
        let mut letters: Vec<DeadLetter> = rows.iter().map(DeadLetter::from_row).collect();
        let next = (letters.len() > limit as usize).then(|| {
            letters.truncate(limit as usize);
            letters.last().map(|l| l.id.to_string())
        });
        Ok((letters, next.flatten()))
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
        let mut tx = self.begin(Holder::Admin).await?;
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
}
