//! Alerts seen again (retries, HA duplicates, status changes).

use super::Error;
use crate::model::{self};

use super::tx::Tx;

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
        .bind(a.status.as_str())
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
