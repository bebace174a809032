//! The store: everything the host persists, behind one type. All SQL lives
//! here and runs unchanged on both backends through sqlx's `Any` driver:
//! SQLite (WAL, one connection) is the embedded default, PostgreSQL is
//! selected by a `postgres://` URL. Migrations for each backend live in
//! `migrations/<backend>/` with the same numbering and run on connect.
//!
//! SQL here uses `$N` placeholders, `BIGINT`-compatible integers and text
//! JSON, so the one code path serves both. This module owns no policy:
//! callers decide what to write and when.

mod pipeline;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::AnyConnection;
use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyPool, Executor, Row, Transaction};
use tokio::sync::Notify;

use crate::runtime::types;

pub use pipeline::*;

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

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// An SQLite file: the embedded default.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How long a write waits for a lock (SQLite) or a connection before it
    /// fails, which the API turns into 503.
    pub busy_timeout: Duration,
    /// PostgreSQL pool size (SQLite always uses one connection: one writer).
    pub max_connections: u32,
    /// This process's name, recorded with every event it processes.
    pub instance: String,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            busy_timeout: Duration::from_secs(5),
            max_connections: 8,
            instance: String::new(),
        }
    }
}

/// The database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Woken after a commit that appended to the outbox.
    appended: Arc<Notify>,
    /// Woken when a job became due outside the executors (replay).
    requeued: Arc<Notify>,
    /// [`StoreOptions::instance`].
    instance: Arc<str>,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// The embedded default gets `mode=rwc` so a fresh `./eventpulse.db` is created.
fn sqlite_url(url: &str) -> String {
    if url.contains("mode=") || url.contains(":memory:") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

/// `url` fit for logs and errors: a password in it is replaced by `***`.
pub fn redacted_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Open (creating an SQLite file if missing) and migrate the database
    /// at `url` (`sqlite://path` or `postgres://...`) with default options.
    pub async fn connect(url: &str) -> Result<Store, Error> {
        Store::connect_with(url, &StoreOptions::default()).await
    }

    /// Open and migrate the database at `url`.
    pub async fn connect_with(url: &str, options: &StoreOptions) -> Result<Store, Error> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            (Backend::Postgres, url.to_owned())
        } else if url.starts_with("sqlite:") {
            (Backend::Sqlite, sqlite_url(url))
        } else {
            return Err(Error::Database(sqlx::Error::Configuration(
                format!(
                    "unsupported database URL scheme in `{url}` (use sqlite:// or postgres://)"
                )
                .into(),
            )));
        };
        let busy_ms = options.busy_timeout.as_millis();
        let pool = match backend {
            // One connection: SQLite has one writer anyway, and a single
            // connection never meets SQLITE_BUSY from itself.
            Backend::Sqlite => AnyPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(options.busy_timeout.max(Duration::from_secs(1)))
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        conn.execute(
                            format!(
                                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
                                 PRAGMA busy_timeout = {busy_ms}; PRAGMA foreign_keys = ON;"
                            )
                            .as_str(),
                        )
                        .await?;
                        Ok(())
                    })
                }),
            Backend::Postgres => AnyPoolOptions::new()
                .max_connections(options.max_connections)
                .acquire_timeout(options.busy_timeout),
        }
        .connect(&url)
        .await?;
        match backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&pool).await?,
        }
        Ok(Store {
            pool,
            backend,
            appended: Arc::new(Notify::new()),
            requeued: Arc::new(Notify::new()),
            instance: options.instance.as_str().into(),
        })
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Notified after every commit that appended to the outbox. Waiters
    /// should `enable()` the `Notified` future before reading the outbox so
    /// no append is missed between the read and the wait.
    pub fn appended(&self) -> &Notify {
        &self.appended
    }

    /// Notified when jobs were put back in a queue from outside the
    /// executors (dead-letter replay).
    pub fn requeued(&self) -> &Notify {
        &self.requeued
    }

    /// Start a write transaction. The first statement of every write
    /// transaction should be a write (SQLite takes the write lock then).
    pub async fn begin(&self) -> Result<Tx, Error> {
        Ok(Tx {
            tx: self.pool.begin().await?,
            backend: self.backend,
            appended: false,
            locked: false,
            notify: self.appended.clone(),
            instance: self.instance.clone(),
        })
    }

    /// Close the pool (waits for connections in use to be returned).
    pub async fn close(&self) {
        self.pool.close().await;
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
            "INSERT INTO plugins (name, enabled, updated_at) VALUES ($1, $2, $3)
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
             WHERE plugin = $1 AND (expires_at IS NULL OR expires_at > $2)",
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
        let mut tx = self.begin().await?;
        tx.write_plugin_state(plugin, writes).await?;
        tx.commit().await
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
        let mut tx = self.begin().await?;
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
            .execute(tx.conn())
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
                .execute(tx.conn())
                .await?
                .rows_affected()
                    == 1;
            if inserted || changed {
                tx.append(&event_for(a)).await?;
                events += 1;
            } else {
                sqlx::query(
                    "UPDATE alerts SET last_seen = $3, occurrences = occurrences + 1
                     WHERE fingerprint = $1 AND starts_at = $2",
                )
                .bind(&a.fingerprint)
                .bind(a.starts_at as i64)
                .bind(now)
                .execute(tx.conn())
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

    /// Status of the newest alert instance named `name`.
    pub async fn alert_state_by_name(&self, name: &str) -> Result<Option<String>, Error> {
        let row = sqlx::query(
            "SELECT status FROM alerts WHERE name = $1 ORDER BY starts_at DESC LIMIT 1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.get(0)))
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
            "INSERT INTO plugin_failures (plugin, operation, kind, message, at) VALUES ($1, $2, $3, $4, $5)",
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
             WHERE plugin = $1 ORDER BY id DESC LIMIT $2",
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
    #[test]
    fn passwords_in_database_urls_are_redacted() {
        assert_eq!(
            super::redacted_url("postgres://ep:hunter2@db:5432/ep"),
            "postgres://ep:***@db:5432/ep"
        );
        assert_eq!(
            super::redacted_url("sqlite://eventpulse.db"),
            "sqlite://eventpulse.db"
        );
    }

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
