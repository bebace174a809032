//! Silences: created, listed, expired; the active ones read by the rule
//! stage once per batch.

use super::rows::silence_from;
use super::{Error, Holder, Store};
use crate::model::Silence;

const COLUMNS: &str =
    "id, matchers, mode, starts_at, ends_at, weekly, created_by, comment, created_at, expired_at";

impl Store {
    /// Keep `s`.
    pub async fn create_silence(&self, s: &Silence) -> Result<(), Error> {
        self.write_one(
            Holder::Admin,
            sqlx::query(&format!(
                "INSERT INTO silences ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            ))
            .bind(&s.id)
            .bind(serde_json::to_string(&s.matchers).expect("strings serialise"))
            .bind(s.mode.as_str())
            .bind(s.starts_at)
            .bind(s.ends_at)
            .bind(
                s.weekly
                    .as_ref()
                    .map(|w| serde_json::to_string(w).expect("window serialises")),
            )
            .bind(&s.created_by)
            .bind(&s.comment)
            .bind(s.created_at)
            .bind(s.expired_at),
        )
        .await?;
        Ok(())
    }

    /// Silences not yet over at `now` (active or to come), soonest end
    /// first; with `all`, the ended ones too, newest first after them.
    pub async fn silences(&self, now: i64, all: bool) -> Result<Vec<Silence>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM silences
             WHERE $1 = 1 OR (expired_at IS NULL AND ends_at > $2)
             ORDER BY (CASE WHEN expired_at IS NULL AND ends_at > $2 THEN 0 ELSE 1 END), ends_at"
        ))
        .bind(i64::from(all))
        .bind(now)
        .fetch_all(&self.reads)
        .await?;
        Ok(rows.iter().map(silence_from).collect::<Result<_, _>>()?)
    }

    /// End silence `id` at `now`; `None` if there is none or it had ended.
    pub async fn expire_silence(&self, id: &str, now: i64) -> Result<Option<Silence>, Error> {
        let mut tx = self.begin(Holder::Admin).await?;
        let done = sqlx::query(
            "UPDATE silences SET expired_at = $2 WHERE id = $1 AND expired_at IS NULL AND ends_at > $2",
        )
        .bind(id)
        .bind(now)
        .execute(tx.conn())
        .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM silences WHERE id = $1"))
            .bind(id)
            .fetch_one(tx.conn())
            .await?;
        tx.commit().await?;
        Ok(Some(silence_from(&row)?))
    }

    /// One silence by id.
    pub async fn silence(&self, id: &str) -> Result<Option<Silence>, Error> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM silences WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.reads)
            .await?;
        Ok(row.as_ref().map(silence_from).transpose()?)
    }
}
