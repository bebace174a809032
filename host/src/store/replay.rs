//! What a rule replay reads: the stored events of a window, in log order,
//! and what the installed rule decided on them then.

use std::collections::HashMap;

use sqlx::Row;

use super::lists::Window;
use super::{Error, Store};

/// What the decisions log holds for one event and rule: the decision
/// (JSON) or the error.
#[derive(Debug, Clone)]
pub struct Logged {
    /// The decision, `None` if the rule failed.
    pub decision: Option<String>,
    /// How it failed.
    pub error: Option<String>,
}

impl Store {
    /// Up to `limit` outbox events of `kinds` created in `window`, after
    /// `seq`, oldest first: `(seq, payload)`.
    pub async fn events_in_window(
        &self,
        kinds: &[&str],
        window: Window,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, String)>, Error> {
        let kind_params: Vec<String> = (0..kinds.len()).map(|i| format!("${}", i + 5)).collect();
        let sql = format!(
            "SELECT seq, payload FROM outbox_events
             WHERE seq > $1 AND created_at >= $2 AND created_at < $3 AND kind IN ({})
             ORDER BY seq LIMIT $4",
            kind_params.join(", ")
        );
        let mut q = sqlx::query(&sql)
            .bind(after)
            .bind(window.since.unwrap_or(i64::MIN))
            .bind(window.until.unwrap_or(i64::MAX))
            .bind(i64::from(limit));
        for k in kinds {
            q = q.bind(*k);
        }
        Ok(q.fetch_all(&self.reads)
            .await?
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    /// The last logged decision of `rule` on each of `event_ids`.
    pub async fn logged_decisions(
        &self,
        rule: &str,
        event_ids: &[&str],
    ) -> Result<HashMap<String, Logged>, Error> {
        let mut found = HashMap::new();
        if event_ids.is_empty() {
            return Ok(found);
        }
        let params: Vec<String> = (0..event_ids.len())
            .map(|i| format!("${}", i + 2))
            .collect();
        let sql = format!(
            "SELECT event_id, decision, error FROM decisions_log
             WHERE rule = $1 AND event_id IN ({}) ORDER BY id",
            params.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(rule);
        for id in event_ids {
            q = q.bind(*id);
        }
        for r in q.fetch_all(&self.reads).await? {
            // Ordered by id: a later row (a retry) replaces an earlier one.
            found.insert(
                r.try_get("event_id")?,
                Logged {
                    decision: r.try_get("decision")?,
                    error: r.try_get("error")?,
                },
            );
        }
        Ok(found)
    }
}
