//! The store: everything the host persists, behind one type. All SQL lives
//! here and runs unchanged on both backends through sqlx's `Any` driver:
//! SQLite (WAL, one connection) is the embedded default, PostgreSQL is
//! selected by a `postgres://` URL. Migrations for each backend live in
//! `migrations/<backend>/` with the same numbering and run on connect.
//!
//! SQL here uses `$N` placeholders, `BIGINT`-compatible integers and text
//! JSON, so the one code path serves both. Callers decide what to write and
//! when; the few rules kept here are the ones that must be atomic in SQL
//! (notification dedup, the rate-limit count, which statuses are active,
//! dead-letter replay).
//!
//! `writer.rs` is SQLite's one writer and its group commits, `checkpoint.rs`
//! the WAL checkpoints beside it. By table group: `tx.rs` the write
//! transaction and what it buffers;
//! `log.rs` the outbox as the log, the inbox and consumer offsets;
//! `incidents.rs`; `queues.rs` the two work queues; `dead_letters.rs`;
//! `alerts.rs`; `kube_events.rs`; `health.rs` what monitoring reads; `audit.rs`; `silences.rs`; `timers.rs`; `counts.rs`; `rows.rs` reads
//! rows into model types by column name. This file: connecting, migrating, plugin state and
//! failures, and the ingest transaction.

mod alerts;
mod approvals;
mod audit;
mod checkpoint;
mod counts;
mod dead_letters;
mod health;
mod incidents;
mod kube_events;
mod lists;
mod log;
mod queues;
mod replay;
mod retention;
mod rows;
mod silences;
mod timers;
mod tx;
mod writer;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor, Row};
use tokio::sync::Notify;

use crate::config::Durability;
use crate::model;

pub use counts::Counts;
pub use dead_letters::DeadLetter;
pub use health::{Backlog, QueueDepth, Unfinished};
pub use incidents::{Acknowledged, IncidentDetail};
pub use lists::{
    AlertFilter, BadCursor, Decision, DecisionFilter, IncidentFilter, JobFilter, ListedJob, Page,
    StoredAlert, Window,
};
pub use log::{OutboxRow, RelayLease};
pub use queues::{Dedup, JobEnd, Queue};
pub use replay::Logged;
pub use retention::{Feeds, Pruned};
use tx::multi_insert;
pub use tx::{DecisionRecord, Tx};
pub use writer::Holder;

/// The model types the store returns.
pub use crate::model::{Incident, Job, StateWrite, TimelineEntry};

/// What went wrong talking to the database.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database refused or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Rows read earlier in the transaction changed under it (another
    /// instance wrote them): the transaction is rolled back, to be retried.
    #[error("conflict: {0}")]
    Conflict(String),
    /// SQLite's one write connection stayed taken for longer than the
    /// store's busy timeout: the database is overloaded or a write hangs.
    #[error("the database's writer stayed busy for {0:?}; try again")]
    Busy(Duration),
}

impl Error {
    /// Whether trying the same write again can succeed: `false` for what
    /// the data itself causes (a constraint it violates, a value that does
    /// not decode), `true` for an unreachable, busy or failing database.
    pub fn is_transient(&self) -> bool {
        use sqlx::error::ErrorKind;
        match self {
            Error::Database(sqlx::Error::Database(e)) => {
                let constraint = matches!(
                    e.kind(),
                    ErrorKind::UniqueViolation
                        | ErrorKind::ForeignKeyViolation
                        | ErrorKind::NotNullViolation
                        | ErrorKind::CheckViolation
                );
                // PostgreSQL classes 22 (data exception: a NUL in text, a
                // value out of range) and 23 (integrity constraint).
                let data = e
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .is_some_and(|pg| pg.code().starts_with("22") || pg.code().starts_with("23"));
                !(constraint || data)
            }
            Error::Database(
                sqlx::Error::Encode(_)
                | sqlx::Error::Decode(_)
                | sqlx::Error::ColumnDecode { .. }
                | sqlx::Error::ColumnNotFound(_)
                | sqlx::Error::TypeNotFound { .. },
            ) => false,
            Error::Database(_) => true,
            Error::Migrate(_) => false,
            Error::Conflict(_) | Error::Busy(_) => true,
        }
    }
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

/// One sender's write, for [`Store::ingest`].
#[derive(Debug, Clone)]
pub enum IngestWrite {
    /// An Alertmanager notification's alerts, each with the `alert.raised`
    /// to append if it is new or changed status.
    Alerts {
        /// Alertmanager's group key.
        group_key: String,
        /// The alerts.
        alerts: Vec<model::Alert>,
        /// `events[i]` announces `alerts[i]`.
        events: Vec<model::Event>,
    },
    /// A received event, appended unless its id is already stored.
    Event(model::Event),
}

/// What [`Store::ingest`] did with one [`IngestWrite`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    /// Alerts upserted and events appended.
    Alerts(IngestOutcome),
    /// The event; `new: false` if it was already stored.
    Event {
        /// Whether it was appended.
        new: bool,
    },
}

fn alert_status(a: &model::Alert) -> &'static str {
    a.status.as_str()
}

/// A recorded sandbox failure.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
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
    /// What a commit survives.
    pub durability: Durability,
    /// SQLite: the writer's page cache, MiB.
    pub sqlite_cache_mib: u32,
    /// SQLite: memory-mapped reads up to this many MiB (0: off).
    pub sqlite_mmap_mib: u32,
    /// Where the SQLite writer's occupancy is recorded.
    pub metrics: crate::telemetry::Metrics,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            busy_timeout: Duration::from_secs(5),
            max_connections: 8,
            durability: Durability::PowerLoss,
            sqlite_cache_mib: 16,
            sqlite_mmap_mib: 0,
            instance: String::new(),
            metrics: crate::telemetry::Metrics::disabled(),
        }
    }
}

/// The database.
#[derive(Clone, Debug)]
pub struct Store {
    /// Writes (and reads that must see the writer's connection). SQLite:
    /// one connection, the one writer.
    pool: AnyPool,
    /// Reads that stand alone. SQLite in WAL mode lets readers run beside
    /// the writer, so the stages' reads (the log, the inbox, due jobs) do
    /// not queue behind its transactions; PostgreSQL: the same pool.
    reads: AnyPool,
    /// SQLite's one write connection, taken out of `pool` (which is then
    /// closed): every write transaction is a member of a group commit on it.
    /// `None` on PostgreSQL and for an in-memory SQLite database.
    writer: Option<Arc<writer::Writer>>,
    backend: Backend,
    /// Woken after a commit that appended to the outbox.
    appended: Arc<Notify>,
    /// Woken when a job became due outside the executors (replay).
    requeued: Arc<Notify>,
    /// [`StoreOptions::instance`].
    instance: Arc<str>,
}

/// Read-only SQLite connections beside the writer.
const SQLITE_READERS: u32 = 4;

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

/// What makes the writer's commits durable against power loss on SQLite:
/// an fdatasync of the database's WAL file. The file is opened once; it
/// lives as long as the writer's connection keeps the database open. It
/// and its directory entry are synced here, so the file itself survives.
/// (SQLite syncs the database file after each checkpoint on its own.)
async fn wal_sync(conn: &mut sqlx::AnyConnection) -> Result<writer::SyncFn, Error> {
    let mut main = None;
    for row in sqlx::query("PRAGMA database_list")
        .fetch_all(&mut *conn)
        .await?
    {
        if row.get::<String, _>(1) == "main" {
            main = Some(row.get::<String, _>(2));
        }
    }
    let Some(db) = main.filter(|f| !f.is_empty()) else {
        return Err(Error::Database(sqlx::Error::Configuration(
            "SQLite reports no file for the main database".into(),
        )));
    };
    let wal = std::path::PathBuf::from(format!("{db}-wal"));
    let io = |what: &str, e: std::io::Error| {
        Error::Database(sqlx::Error::Io(std::io::Error::new(
            e.kind(),
            format!("{what} {}: {e}", wal.display()),
        )))
    };
    let file = std::fs::File::open(&wal).map_err(|e| io("opening SQLite's WAL", e))?;
    file.sync_all().map_err(|e| io("syncing SQLite's WAL", e))?;
    if let Some(dir) = wal.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("syncing the directory of", e))?;
    }
    Ok(Box::new(move || file.sync_data()))
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

/// Milliseconds since the Unix epoch, by the system clock.
pub fn now_ms() -> i64 {
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
        // In WAL mode `NORMAL` syncs the log only at checkpoints: a process
        // crash loses nothing, an OS crash may lose the last commits. For
        // power-loss durability the writer syncs the WAL itself after each
        // group commit, off the connection, and answers the group's
        // members only then (see [`writer`]); on PostgreSQL the server
        // flushes its WAL before a commit returns. The writer's
        // page cache (16 MiB by default; SQLite's own is 2 MiB) keeps the
        // pipeline's indexes resident instead of re-reading them from the
        // OS; a memory map (off by default) saves the copy of each page
        // read, paid for in resident memory.
        let pg_commit = match options.durability {
            Durability::PowerLoss => "on",
            Durability::ProcessCrash => "off",
        };
        let cache_kib = u64::from(options.sqlite_cache_mib.max(1)) * 1024;
        let mmap_bytes = u64::from(options.sqlite_mmap_mib) << 20;
        let pool = match backend {
            // One connection: SQLite has one writer anyway, and a single
            // connection never meets SQLITE_BUSY from itself.
            Backend::Sqlite => AnyPoolOptions::new()
                .max_connections(1)
                .test_before_acquire(false)
                .acquire_timeout(options.busy_timeout.max(Duration::from_secs(1)))
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        conn.execute(
                            format!(
                                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
                                 PRAGMA busy_timeout = {busy_ms}; PRAGMA foreign_keys = ON;
                                 PRAGMA cache_size = -{cache_kib}; PRAGMA mmap_size = {mmap_bytes};"
                            )
                            .as_str(),
                        )
                        .await?;
                        Ok(())
                    })
                }),
            Backend::Postgres => AnyPoolOptions::new()
                .max_connections(options.max_connections)
                .acquire_timeout(options.busy_timeout)
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        conn.execute(format!("SET synchronous_commit = {pg_commit}").as_str())
                            .await?;
                        Ok(())
                    })
                }),
        }
        .connect(&url)
        .await?;
        match backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&pool).await?,
        }
        // A file-backed SQLite database: the writer leaves the pool.
        let writer = match backend {
            Backend::Sqlite if !url.contains(":memory:") => {
                let mut conn = pool.acquire().await?.detach();
                pool.close().await;
                let sync = match options.durability {
                    Durability::PowerLoss => Some(wal_sync(&mut conn).await?),
                    Durability::ProcessCrash => None,
                };
                // The WAL is copied back into the file off this connection
                // (see [`checkpoint`]), not inside its commits.
                sqlx::query("PRAGMA wal_autocheckpoint = 0")
                    .execute(&mut conn)
                    .await?;
                let checkpoints =
                    checkpoint::Checkpoints::start(&url, options.metrics.clone()).await?;
                Some(writer::Writer::new(
                    conn,
                    options.busy_timeout.max(Duration::from_secs(1)),
                    options.metrics.clone(),
                    sync,
                    Some(checkpoints),
                ))
            }
            _ => None,
        };
        let reads = match backend {
            // An in-memory database exists once per connection.
            Backend::Sqlite if !url.contains(":memory:") => {
                AnyPoolOptions::new()
                    .max_connections(SQLITE_READERS)
                    .test_before_acquire(false)
                    .acquire_timeout(options.busy_timeout.max(Duration::from_secs(1)))
                    .after_connect(move |conn, _| {
                        Box::pin(async move {
                            conn.execute(
                                format!(
                                    "PRAGMA busy_timeout = {busy_ms}; PRAGMA cache_size = -8192;
                                     PRAGMA query_only = ON;"
                                )
                                .as_str(),
                            )
                            .await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await?
            }
            _ => pool.clone(),
        };
        Ok(Store {
            pool,
            reads,
            writer,
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

    /// Start a write transaction for `holder`. On a SQLite file it is a
    /// member of a group commit on the one writer connection (see
    /// [`writer`]): it waits for the connection (ingest ahead of the other
    /// writers waiting: its senders wait for the answer, the stages can),
    /// and its [`Tx::commit`] returns once the commit holding its writes is
    /// durable. Never hold one across a wait for another write (a sandbox
    /// call, another transaction): every writer queues behind it.
    pub async fn begin(&self, holder: Holder) -> Result<Tx, Error> {
        let tx = match &self.writer {
            Some(writer) => tx::TxConn::Shared(writer.begin(holder).await?),
            None => tx::TxConn::Pool(self.pool.begin().await?),
        };
        Ok(Tx {
            tx,
            backend: self.backend,
            appended: false,
            locked: false,
            notify: self.appended.clone(),
            instance: self.instance.clone(),
            pending: tx::Pending::default(),
            incidents: incidents::Cache::default(),
            dedup: Default::default(),
        })
    }

    /// Run one statement as a write transaction of its own: a member of a
    /// group commit on a SQLite file, an autocommit statement elsewhere (on
    /// PostgreSQL a `BEGIN`/`COMMIT` around it would cost two round trips).
    async fn write_one<'q>(
        &self,
        holder: Holder,
        statement: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> Result<sqlx::any::AnyQueryResult, Error> {
        if self.writer.is_none() {
            return Ok(statement.execute(&self.pool).await?);
        }
        let mut tx = self.begin(holder).await?;
        let done = statement.execute(tx.conn()).await?;
        tx.commit().await?;
        Ok(done)
    }

    /// Returns once every write committed before the call is durable
    /// (power-loss durability on SQLite syncs the WAL after commits, and
    /// other connections may read a commit before that). For whatever
    /// acts outside the database on what it read, like the Kafka relay.
    pub async fn synced(&self) -> Result<(), Error> {
        match &self.writer {
            Some(writer) => writer.synced().await,
            None => Ok(()),
        }
    }

    /// The commit durability in force on a connection, as the database
    /// reports it: SQLite's `synchronous` (`"full"`, `"normal"`, ...),
    /// followed by `" + wal sync"` when the writer syncs the WAL before it
    /// answers a commit, or PostgreSQL's `synchronous_commit` (`"on"`,
    /// `"off"`, ...).
    pub async fn commit_durability(&self) -> Result<String, Error> {
        Ok(match self.backend {
            Backend::Sqlite => {
                // On the writer's connection: the readers' do not commit.
                let mut tx = self.begin(Holder::Health).await?;
                let level: i64 = sqlx::query("PRAGMA synchronous")
                    .fetch_one(tx.conn())
                    .await?
                    .get(0);
                tx.rollback().await?;
                let level = match level {
                    0 => "off",
                    1 => "normal",
                    2 => "full",
                    _ => "extra",
                };
                match self.writer.as_ref().is_some_and(|w| w.syncs()) {
                    true => format!("{level} + wal sync"),
                    false => level.to_owned(),
                }
            }
            Backend::Postgres => sqlx::query("SHOW synchronous_commit")
                .fetch_one(&self.pool)
                .await?
                .get(0),
        })
    }

    /// Whether each known plugin is enabled. Plugins never toggled are absent
    /// (the registry treats them as enabled).
    pub async fn plugin_enablement(&self) -> Result<HashMap<String, bool>, Error> {
        let rows = sqlx::query("SELECT name, enabled FROM plugins")
            .fetch_all(&self.reads)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1) != 0))
            .collect())
    }

    /// Persist a plugin's enablement.
    pub async fn set_plugin_enabled(&self, name: &str, enabled: bool) -> Result<(), Error> {
        self.write_one(
            Holder::Admin,
            sqlx::query(
            "INSERT INTO plugins (name, enabled, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET enabled = excluded.enabled, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(enabled as i64)
        .bind(now_ms())
        )
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
        .fetch_all(&self.reads)
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
        let mut tx = self.begin(Holder::Plugins).await?;
        tx.write_plugin_state(plugin, writes).await?;
        tx.commit().await
    }

    /// Upsert `alerts` and append an event for each new alert or status
    /// change, all in one transaction: either everything is durable or
    /// nothing is. Deduplication is by `(fingerprint, starts_at)`.
    pub async fn ingest_alerts(
        &self,
        group_key: &str,
        alerts: &[model::Alert],
        event_for: impl FnMut(&model::Alert) -> model::Event,
    ) -> Result<IngestOutcome, Error> {
        let write = IngestWrite::Alerts {
            group_key: group_key.to_owned(),
            alerts: alerts.to_vec(),
            events: alerts.iter().map(event_for).collect(),
        };
        match self.ingest(std::slice::from_ref(&write)).await?.pop() {
            Some(Ingested::Alerts(outcome)) => Ok(outcome),
            _ => unreachable!("one outcome per write, of its kind"),
        }
    }

    /// Store a received event unless it is already stored; `false` if it
    /// was. Durable when this returns.
    pub async fn ingest_event(&self, event: &model::Event) -> Result<bool, Error> {
        match self
            .ingest(&[IngestWrite::Event(event.clone())])
            .await?
            .pop()
        {
            Some(Ingested::Event { new }) => Ok(new),
            _ => unreachable!("one outcome per write, of its kind"),
        }
    }

    /// Commit several senders' writes in one transaction (group commit):
    /// one outcome per write, in order. Alerts are inserted with
    /// multi-row statements; an alert seen before (a retry, a duplicate
    /// from an HA peer, a status change) is updated row by row.
    pub async fn ingest(&self, writes: &[IngestWrite]) -> Result<Vec<Ingested>, Error> {
        let now = now_ms();
        let mut tx = self.begin(Holder::Ingest).await?;
        // Every alert of the group, in order, inserted where new.
        let rows: Vec<(&str, &model::Alert, &model::Event)> = writes
            .iter()
            .filter_map(|w| match w {
                IngestWrite::Alerts {
                    group_key,
                    alerts,
                    events,
                } => Some(
                    alerts
                        .iter()
                        .zip(events)
                        .map(move |(a, e)| (group_key.as_str(), a, e)),
                ),
                IngestWrite::Event(_) => None,
            })
            .flatten()
            .collect();
        let mut inserted: HashSet<(String, i64)> = HashSet::new();
        for chunk in rows.chunks(100) {
            let sql = multi_insert(
                self.backend,
                "INSERT INTO alerts (fingerprint, starts_at, name, status, severity, labels, annotations,
                                     ends_at, generator_url, group_key, first_seen, last_seen, occurrences)",
                13,
                chunk.len(),
            ) + " ON CONFLICT (fingerprint, starts_at) DO NOTHING RETURNING fingerprint, starts_at";
            let mut q = sqlx::query(&sql);
            for (group_key, a, _) in chunk {
                q = q
                    .bind(&a.fingerprint)
                    .bind(a.starts_at as i64)
                    .bind(&a.name)
                    .bind(alert_status(a))
                    .bind(a.severity.map(model::Severity::as_str))
                    .bind(serde_json::to_string(&a.labels).expect("labels serialise"))
                    .bind(serde_json::to_string(&a.annotations).expect("annotations serialise"))
                    .bind(a.ends_at.map(|t| t as i64))
                    .bind(&a.generator_url)
                    .bind(*group_key)
                    .bind(now)
                    .bind(now)
                    .bind(1_i64);
            }
            for r in q.fetch_all(tx.conn()).await? {
                inserted.insert((r.get(0), r.get(1)));
            }
        }
        let mut outcomes = Vec::with_capacity(writes.len());
        for w in writes {
            match w {
                IngestWrite::Alerts { alerts, events, .. } => {
                    let mut appended = 0;
                    for (a, event) in alerts.iter().zip(events) {
                        // The first copy of a new alert was inserted; any
                        // later one in this group is a repeat.
                        let new = inserted.remove(&(a.fingerprint.clone(), a.starts_at as i64));
                        if new || tx.update_seen_alert(a, now).await? {
                            tx.append(event).await?;
                            appended += 1;
                        }
                    }
                    outcomes.push(Ingested::Alerts(IngestOutcome {
                        alerts: alerts.len(),
                        events: appended,
                    }));
                }
                IngestWrite::Event(event) => {
                    let new = tx.append_new(event).await?;
                    outcomes.push(Ingested::Event { new });
                }
            }
        }
        tx.commit().await?;
        Ok(outcomes)
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
        .fetch_all(&self.reads)
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
        .fetch_optional(&self.reads)
        .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// Status of the newest alert instance named `name`.
    pub async fn alert_state_by_name(&self, name: &str) -> Result<Option<String>, Error> {
        let row = sqlx::query(
            "SELECT status FROM alerts WHERE name = $1 ORDER BY starts_at DESC LIMIT 1",
        )
        .bind(name)
        .fetch_optional(&self.reads)
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
        self.write_one(
            Holder::Plugins,
            sqlx::query(
            "INSERT INTO plugin_failures (plugin, operation, kind, message, at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(plugin)
        .bind(operation)
        .bind(kind)
        .bind(message)
        .bind(now_ms())
        )
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
        .fetch_all(&self.reads)
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

    /// The writer never checkpoints (a checkpoint inside its commit would
    /// hold up every writer), yet what it commits reaches the database
    /// file: the checkpointer beside it copies the WAL back.
    #[tokio::test]
    async fn the_wal_is_checkpointed_off_the_writer() {
        let (dir, store) = store().await;
        let mut tx = store.begin(Holder::Health).await.unwrap();
        let auto: i64 = sqlx::query("PRAGMA wal_autocheckpoint")
            .fetch_one(tx.conn())
            .await
            .unwrap()
            .get(0);
        tx.rollback().await.unwrap();
        assert_eq!(auto, 0, "the writer's own checkpoints are off");
        let file = dir.path().join("t.db");
        let before = std::fs::metadata(&file).unwrap().len();
        // ~8 MiB over 64 commits, well past SQLite's 1,000-page default.
        let value = "x".repeat(4096);
        for i in 0..64 {
            let writes: Vec<StateWrite> = (0..32)
                .map(|k| StateWrite {
                    key: format!("{i}/{k}"),
                    value: Some((value.clone(), None)),
                })
                .collect();
            store.write_plugin_state("p", &writes).await.unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let size = std::fs::metadata(&file).unwrap().len();
            if size > before + (8 << 20) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the database file stayed at {size} bytes (from {before}): nothing checkpointed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Under a sustained load a passive checkpoint never finds the WAL all
    /// copied, so SQLite would never start it over: the writer finishes it
    /// once it is long, and the file stays bounded.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_stays_bounded_under_sustained_writes() {
        let (dir, store) = store().await;
        let wal = dir.path().join("t.db-wal");
        let start = std::time::Instant::now();
        let busy = Duration::from_secs(5);
        let mut writers = Vec::new();
        for w in 0..8 {
            let store = store.clone();
            writers.push(tokio::spawn(async move {
                let value = "x".repeat(1024);
                let mut written = 0u64;
                while start.elapsed() < busy {
                    let writes: Vec<StateWrite> = (0..8)
                        .map(|k| StateWrite {
                            key: format!("{w}/{}/{k}", written % 500),
                            value: Some((value.clone(), None)),
                        })
                        .collect();
                    store.write_plugin_state("p", &writes).await.unwrap();
                    written += 1;
                }
                written * 8 * 1024
            }));
        }
        let mut largest = 0;
        while start.elapsed() < busy {
            tokio::time::sleep(Duration::from_millis(50)).await;
            largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        }
        let mut written = 0;
        for w in writers {
            written += w.await.unwrap();
        }
        // The writer finishes the WAL past 16 MiB; what the writes add in
        // the checkpointer's quarter second on top stays well under 64 MiB.
        assert!(
            largest < 64 << 20,
            "the WAL grew to {} MiB ({} MiB written)",
            largest >> 20,
            written >> 20
        );
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

    /// A batch's dedup decisions, made in one go, are the ones requests
    /// made one at a time would get: repeats inside the TTL held back and
    /// counted, the next one out after the TTL reporting how many were.
    #[tokio::test]
    async fn dedup_decided_for_a_batch_matches_one_at_a_time() {
        let (_dir, store) = store().await;
        let (t0, ttl) = (1_000_000, 60_000);
        let mut tx = store.begin(Holder::Rules).await.unwrap();
        let batch = [
            ("slack", "k1"),
            ("slack", "k1"),
            ("slack", "k2"),
            ("mail", "k1"),
            ("slack", "k1"),
        ];
        tx.decide_dedup(&batch, t0, ttl).await.unwrap();
        let mut got = Vec::new();
        for (channel, key) in batch {
            got.push(tx.notification_dedup(channel, key, t0, ttl).await.unwrap());
        }
        tx.commit().await.unwrap();
        assert_eq!(
            got,
            [
                Dedup::Send {
                    seen: 1,
                    suppressed: 0
                },
                Dedup::Suppress { seen: 2 },
                Dedup::Send {
                    seen: 1,
                    suppressed: 0
                },
                Dedup::Send {
                    seen: 1,
                    suppressed: 0
                },
                Dedup::Suppress { seen: 3 },
            ]
        );
        // One at a time (no batch decided): still inside the TTL, then after.
        let mut tx = store.begin(Holder::Rules).await.unwrap();
        let inside = tx
            .notification_dedup("slack", "k1", t0 + ttl - 1, ttl)
            .await
            .unwrap();
        let after = tx
            .notification_dedup("slack", "k1", t0 + ttl + 1, ttl)
            .await
            .unwrap();
        let again = tx
            .notification_dedup("slack", "k1", t0 + ttl + 2, ttl)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(inside, Dedup::Suppress { seen: 4 });
        assert_eq!(
            after,
            Dedup::Send {
                seen: 5,
                suppressed: 3
            }
        );
        assert_eq!(again, Dedup::Suppress { seen: 6 });
    }

    use crate::model::IncidentStatus;

    fn incident(id: &str, key: &str) -> Incident {
        Incident {
            id: id.into(),
            dedup_key: key.into(),
            title: "t".into(),
            service: "s".into(),
            severity: crate::model::Severity::Warning,
            status: IncidentStatus::Open,
            summary: String::new(),
            rule: "r".into(),
            trace_id: String::new(),
            opened_at: 1,
            updated_at: 1,
            closed_at: None,
            last_notified_at: None,
            acknowledged_by: None,
            acknowledged_at: None,
        }
    }

    /// Incidents opened, moved and closed in one transaction are seen as
    /// they are now by later lookups in it, and written once at commit.
    #[tokio::test]
    async fn a_transaction_sees_its_own_incident_changes_and_writes_them() {
        let (_dir, store) = store().await;
        let mut tx = store.begin(Holder::Rules).await.unwrap();
        tx.insert_incident(&incident("a", "key-a")).await.unwrap();
        tx.commit().await.unwrap();

        let mut tx = store.begin(Holder::Rules).await.unwrap();
        tx.prefetch_incidents(&["a"], &["key-a", "key-b"])
            .await
            .unwrap();
        assert_eq!(tx.active_incident("key-a").await.unwrap().unwrap().id, "a");
        assert!(tx.active_incident("key-b").await.unwrap().is_none());
        tx.insert_incident(&incident("b", "key-b")).await.unwrap();
        assert_eq!(tx.active_incident("key-b").await.unwrap().unwrap().id, "b");
        // A status it is not in: refused, as the database would.
        let (open, mitigating, resolved) = (
            IncidentStatus::Open,
            IncidentStatus::Mitigating,
            IncidentStatus::Resolved,
        );
        assert!(
            !tx.set_incident_status("a", mitigating, resolved)
                .await
                .unwrap()
        );
        assert!(tx.set_incident_status("a", open, mitigating).await.unwrap());
        assert!(
            tx.set_incident_status("a", mitigating, resolved)
                .await
                .unwrap()
        );
        assert!(
            tx.active_incident("key-a").await.unwrap().is_none(),
            "closed"
        );
        tx.set_last_notified("b", 42).await.unwrap();
        assert!(
            tx.link_alert("b", "fp", 7).await.unwrap(),
            "a new incident's first link"
        );
        assert!(
            !tx.link_alert("b", "fp", 7).await.unwrap(),
            "linked already"
        );
        tx.commit().await.unwrap();

        let mut tx = store.begin(Holder::Rules).await.unwrap();
        let a = tx.incident("a").await.unwrap().unwrap();
        assert_eq!((a.status, a.closed_at.is_some()), (resolved, true));
        let b = tx.incident("b").await.unwrap().unwrap();
        assert_eq!((b.status, b.last_notified_at), (open, Some(42)));
        assert_eq!(tx.incident_for_alert("fp").await.unwrap().unwrap().id, "b");
        // Another incident may open under a closed one's key.
        assert!(tx.active_incident("key-a").await.unwrap().is_none());
        tx.set_last_notified("a", 50).await.unwrap();
        tx.commit().await.unwrap();
        let mut tx = store.begin(Holder::Rules).await.unwrap();
        assert_eq!(
            tx.incident("a").await.unwrap().unwrap().last_notified_at,
            Some(50)
        );
    }

    /// SQLite keeps no statistics, so a statement that names both an
    /// indexed status and a long id list can be planned as a walk over every
    /// row of that status. These are run per batch under load: each must
    /// look its rows up by key, whatever the list's length.
    #[tokio::test]
    async fn batch_lookups_go_by_key_on_sqlite() {
        let (_dir, store) = store().await;
        let plan = |sql: String| {
            let pool = store.reads.clone();
            async move {
                let rows = sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
                    .fetch_all(&pool)
                    .await
                    .unwrap();
                rows.iter()
                    .map(|r| r.get::<String, _>(3))
                    .collect::<Vec<_>>()
                    .join("; ")
            }
        };
        for n in [1, tx::ROWS_PER_INSERT] {
            for (queue, by_id) in [
                (Queue::Actions, "sqlite_autoindex_actions_1 (id=?)"),
                (
                    Queue::Notifications,
                    "sqlite_autoindex_notifications_1 (id=?)",
                ),
            ] {
                let p = plan(queues::claim_sql(Backend::Sqlite, queue, n)).await;
                assert!(p.contains(by_id), "claim of {n}: {p}");
            }
            let p = plan(incidents::active_by_keys_sql(Backend::Sqlite, n)).await;
            assert!(
                p.contains("incidents_one_active (dedup_key=?)"),
                "{n} keys: {p}"
            );
        }
    }
}
