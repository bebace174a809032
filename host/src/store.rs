//! The store: everything the host persists, behind one type. All SQL lives
//! here. SQLite (WAL) is the embedded default; migrations in `migrations/`
//! run on connect.
//!
//! This module owns no policy: callers decide what to write and when.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::runtime::types;

/// What went wrong talking to the database.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database refused or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// A state write from one successful invocation: `None` deletes the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateWrite {
    /// The key.
    pub key: String,
    /// The new value and its expiry (ms since epoch), or `None` to delete.
    pub value: Option<(String, Option<u64>)>,
}

/// What one ingest transaction changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct IngestOutcome {
    /// Alerts in the delivery.
    pub alerts: usize,
    /// `alert.raised` events appended to the outbox: new alerts and status
    /// changes; retries and duplicates append none.
    pub events: usize,
}

/// A recorded sandbox failure.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FailureRecord {
    /// The export that was called (`decide`, `run`, ...).
    pub operation: String,
    /// `trap`, `timeout`, `out-of-fuel`, `memory`, `invalid-output`, `denied`.
    pub kind: String,
    /// What happened.
    pub message: String,
    /// When (ms since epoch).
    pub at: i64,
}

/// The database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Open (creating if missing) and migrate the database at `url`.
    pub async fn connect(url: &str) -> Result<Store, Error> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Store { pool })
    }

    /// Whether each known plugin is enabled. Plugins never toggled are absent
    /// (the registry treats them as enabled).
    pub async fn plugin_enablement(&self) -> Result<HashMap<String, bool>, Error> {
        let rows = sqlx::query("SELECT name, enabled FROM plugins")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1) != 0))
            .collect())
    }

    /// Persist a plugin's enablement.
    pub async fn set_plugin_enabled(&self, name: &str, enabled: bool) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO plugins (name, enabled, updated_at) VALUES (?, ?, ?)
             ON CONFLICT (name) DO UPDATE SET enabled = excluded.enabled, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(enabled as i64)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A plugin's state still live at `now_ms` (the host clock plugins
    /// see): `key → (value, expires_at)`.
    pub async fn plugin_state(
        &self,
        plugin: &str,
        now_ms: u64,
    ) -> Result<HashMap<String, (String, Option<u64>)>, Error> {
        let rows = sqlx::query(
            "SELECT key, value, expires_at FROM plugin_state
             WHERE plugin = ? AND (expires_at IS NULL OR expires_at > ?)",
        )
        .bind(plugin)
        .bind(now_ms as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let expires: Option<i64> = r.get(2);
                (r.get(0), (r.get(1), expires.map(|e| e as u64)))
            })
            .collect())
    }

    /// Apply one invocation's state writes atomically.
    pub async fn write_plugin_state(
        &self,
        plugin: &str,
        writes: &[StateWrite],
    ) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        for w in writes {
            match &w.value {
                Some((value, expires)) => {
                    sqlx::query(
                        "INSERT INTO plugin_state (plugin, key, value, expires_at) VALUES (?, ?, ?, ?)
                         ON CONFLICT (plugin, key) DO UPDATE
                         SET value = excluded.value, expires_at = excluded.expires_at",
                    )
                    .bind(plugin)
                    .bind(&w.key)
                    .bind(value)
                    .bind(expires.map(|e| e as i64))
                    .execute(&mut *tx)
                    .await?;
                }
                None => {
                    sqlx::query("DELETE FROM plugin_state WHERE plugin = ? AND key = ?")
                        .bind(plugin)
                        .bind(&w.key)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Upsert `alerts` and append an event for each new alert or status
    /// change, all in one transaction: either everything is durable or
    /// nothing is. Deduplication is by `(fingerprint, starts_at)`.
    pub async fn ingest_alerts(
        &self,
        group_key: &str,
        alerts: &[types::Alert],
        mut event_for: impl FnMut(&types::Alert) -> types::Event,
    ) -> Result<IngestOutcome, Error> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let mut events = 0;
        for a in alerts {
            let status = match a.status {
                types::AlertStatus::Firing => "firing",
                types::AlertStatus::Resolved => "resolved",
            };
            let severity = a.severity.map(|s| format!("{s:?}").to_lowercase());
            let labels = serde_json::to_string(&a.labels).expect("labels serialise");
            let annotations = serde_json::to_string(&a.annotations).expect("annotations serialise");
            let inserted = sqlx::query(
                "INSERT INTO alerts (fingerprint, starts_at, name, status, severity, labels, annotations,
                                     ends_at, generator_url, group_key, first_seen, last_seen, occurrences)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, 1)
                 ON CONFLICT (fingerprint, starts_at) DO NOTHING",
            )
            .bind(&a.fingerprint)
            .bind(a.starts_at as i64)
            .bind(&a.name)
            .bind(status)
            .bind(&severity)
            .bind(&labels)
            .bind(&annotations)
            .bind(a.ends_at.map(|t| t as i64))
            .bind(&a.generator_url)
            .bind(group_key)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            let changed = !inserted
                && sqlx::query(
                    "UPDATE alerts SET status = $3, ends_at = $4, annotations = $5,
                            last_seen = $6, occurrences = occurrences + 1
                     WHERE fingerprint = $1 AND starts_at = $2 AND status <> $3",
                )
                .bind(&a.fingerprint)
                .bind(a.starts_at as i64)
                .bind(status)
                .bind(a.ends_at.map(|t| t as i64))
                .bind(&annotations)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
            if inserted || changed {
                let event = event_for(a);
                sqlx::query(
                    "INSERT INTO outbox_events (event_id, kind, event_key, payload, created_at)
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&event.id)
                .bind(&event.kind)
                .bind(&event.key)
                .bind(serde_json::to_string(&event).expect("event serialises"))
                .bind(now)
                .execute(&mut *tx)
                .await?;
                events += 1;
            } else {
                sqlx::query(
                    "UPDATE alerts SET last_seen = $3, occurrences = occurrences + 1
                     WHERE fingerprint = $1 AND starts_at = $2",
                )
                .bind(&a.fingerprint)
                .bind(a.starts_at as i64)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(IngestOutcome {
            alerts: alerts.len(),
            events,
        })
    }

    /// Outbox events after `seq`, oldest first: `(seq, kind, payload)`.
    pub async fn outbox_after(
        &self,
        seq: i64,
        limit: u32,
    ) -> Result<Vec<(i64, String, String)>, Error> {
        let rows = sqlx::query(
            "SELECT seq, kind, payload FROM outbox_events WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(seq)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// `(status, occurrences)` of an alert instance.
    pub async fn alert_state(
        &self,
        fingerprint: &str,
        starts_at: u64,
    ) -> Result<Option<(String, i64)>, Error> {
        let row = sqlx::query(
            "SELECT status, occurrences FROM alerts WHERE fingerprint = $1 AND starts_at = $2",
        )
        .bind(fingerprint)
        .bind(starts_at as i64)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// Record a sandbox failure.
    pub async fn record_failure(
        &self,
        plugin: &str,
        operation: &str,
        kind: &str,
        message: &str,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO plugin_failures (plugin, operation, kind, message, at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(plugin)
        .bind(operation)
        .bind(kind)
        .bind(message)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The newest `limit` failures of a plugin, newest first.
    pub async fn plugin_failures(
        &self,
        plugin: &str,
        limit: u32,
    ) -> Result<Vec<FailureRecord>, Error> {
        let rows = sqlx::query(
            "SELECT operation, kind, message, at FROM plugin_failures
             WHERE plugin = ? ORDER BY id DESC LIMIT ?",
        )
        .bind(plugin)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| FailureRecord {
                operation: r.get(0),
                kind: r.get(1),
                message: r.get(2),
                at: r.get(3),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::connect(&url).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn enablement_round_trips() {
        let (_dir, store) = store().await;
        store.set_plugin_enabled("a", false).await.unwrap();
        store.set_plugin_enabled("b", true).await.unwrap();
        store.set_plugin_enabled("a", true).await.unwrap();
        let e = store.plugin_enablement().await.unwrap();
        assert_eq!(e.get("a"), Some(&true));
        assert_eq!(e.get("b"), Some(&true));
    }

    #[tokio::test]
    async fn state_writes_apply_and_expire() {
        let (_dir, store) = store().await;
        let far = (now_ms() + 60_000) as u64;
        let writes = vec![
            StateWrite {
                key: "k".into(),
                value: Some(("v".into(), None)),
            },
            StateWrite {
                key: "gone".into(),
                value: Some(("x".into(), Some(1))),
            },
            StateWrite {
                key: "ttl".into(),
                value: Some(("t".into(), Some(far))),
            },
        ];
        store.write_plugin_state("p", &writes).await.unwrap();
        let s = store.plugin_state("p", now_ms() as u64).await.unwrap();
        assert_eq!(s.get("k"), Some(&("v".to_string(), None)));
        assert_eq!(s.get("ttl"), Some(&("t".to_string(), Some(far))));
        assert!(!s.contains_key("gone"), "expired keys are not loaded");
        store
            .write_plugin_state(
                "p",
                &[StateWrite {
                    key: "k".into(),
                    value: None,
                }],
            )
            .await
            .unwrap();
        assert!(!store.plugin_state("p", 0).await.unwrap().contains_key("k"));
        assert!(store.plugin_state("other", 0).await.unwrap().is_empty());
    }
}
