//! Kubernetes Warning events, counted per dedup key.

use sqlx::Row;

use super::{Error, Holder, Store, now_ms};
use crate::model::{self, KubeWarning};

use super::tx::Tx;

impl Tx {
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
}

impl Store {
    /// Count each Kubernetes Warning event under its key and append its
    /// `event.received` (built by `event_for` from the count so far), all
    /// in one transaction; an event already stored is neither counted nor
    /// appended again. With `checkpoint` (source, position), the source's
    /// position is moved there in the same transaction, so what was read up
    /// to it is stored exactly when the position is. Returns (new events,
    /// duplicates).
    pub async fn ingest_kube_events(
        &self,
        warnings: &[KubeWarning],
        event_for: impl Fn(&KubeWarning, i64) -> model::Event,
        checkpoint: Option<(&str, &str)>,
    ) -> Result<(usize, usize), Error> {
        let mut tx = self.begin(Holder::KubeEvents).await?;
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
        if let Some((source, position)) = checkpoint {
            sqlx::query(
                "INSERT INTO source_checkpoints (source, position, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (source) DO UPDATE SET position = $2, updated_at = $3",
            )
            .bind(source)
            .bind(position)
            .bind(now_ms())
            .execute(tx.conn())
            .await?;
        }
        tx.commit().await?;
        Ok((new, duplicates))
    }

    /// Where `source` stopped, if it ever checkpointed.
    pub async fn source_checkpoint(&self, source: &str) -> Result<Option<String>, Error> {
        let row = sqlx::query("SELECT position FROM source_checkpoints WHERE source = $1")
            .bind(source)
            .fetch_optional(&self.reads)
            .await?;
        Ok(row.map(|r| r.get(0)))
    }
}
