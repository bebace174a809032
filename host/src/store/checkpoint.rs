//! Checkpoints of SQLite's WAL, off the write connection.
//!
//! In WAL mode a commit appends pages to the WAL, and a checkpoint copies
//! them back into the database file. By default SQLite checkpoints inside
//! the commit that takes the WAL past 1,000 pages, on the committing
//! connection: in a storm that is every few dozen group commits, and the
//! one [`super::writer`] connection, which everything that writes waits
//! for, spends a third of its commit time copying pages. Here the writer
//! runs with `wal_autocheckpoint = 0` and a task with a connection of its
//! own checkpoints instead (`PRAGMA wal_checkpoint(PASSIVE)`, which never
//! waits for or blocks the writer or the readers), shortly after commits,
//! while the writer goes on writing.
//!
//! A passive checkpoint never finishes the WAL while the writer keeps
//! appending to it, and SQLite starts the WAL over from its beginning only
//! when a write finds it all copied: under a sustained load the file would
//! grow for as long as the load lasts. So once the WAL holds more than
//! [`RESTART_FRAMES`], the writer, right after its next commit, copies the
//! little that arrived since this task's checkpoint itself (a passive
//! checkpoint on its own connection, milliseconds); its next write then
//! starts the WAL over.
//!
//! Durability is unchanged: a checkpoint syncs the WAL before it copies
//! and the database file after, as SQLite's own does, and frames not yet
//! copied stay in the WAL, which SQLite replays on open. A passive
//! checkpoint copies only what no reader still needs, so a long read can
//! keep the WAL growing until it ends, as it would with SQLite's own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sqlx::{AnyConnection, Connection, Row};
use tokio::sync::mpsc;

use crate::telemetry::Metrics;

/// How long after a commit the checkpoint runs: the commits of that time
/// are copied together, each page once however often they rewrote it.
const DELAY: Duration = Duration::from_millis(250);

/// A WAL this long (16 MiB of 4 KiB pages) is finished by the writer so
/// that it starts over.
const RESTART_FRAMES: i64 = 4096;

/// Asks the checkpointer for a checkpoint; cheap, never waits. Dropping the
/// last one stops the checkpointer.
#[derive(Clone)]
pub(super) struct Checkpoints {
    ask: mpsc::Sender<()>,
    /// The WAL is past [`RESTART_FRAMES`]: the writer should finish it.
    restart: Arc<AtomicBool>,
}

impl Checkpoints {
    /// Start checkpointing the database at `url` (a SQLite file in WAL
    /// mode) on a connection of its own, on a task of its own.
    pub(super) async fn start(url: &str, metrics: Metrics) -> Result<Checkpoints, sqlx::Error> {
        let conn = AnyConnection::connect(url).await?;
        // One pending request stands for any number of commits.
        let (ask, asked) = mpsc::channel(1);
        let restart = Arc::new(AtomicBool::new(false));
        tokio::spawn(run(conn, asked, restart.clone(), metrics));
        Ok(Checkpoints { ask, restart })
    }

    /// Something was committed: checkpoint soon.
    pub(super) fn ask(&self) {
        let _ = self.ask.try_send(());
    }

    /// Whether the writer should finish the WAL now, so that it starts
    /// over (once per time it grew past [`RESTART_FRAMES`]).
    pub(super) fn restart_due(&self) -> bool {
        self.restart.swap(false, Ordering::AcqRel)
    }
}

async fn run(
    mut conn: AnyConnection,
    mut asked: mpsc::Receiver<()>,
    restart: Arc<AtomicBool>,
    metrics: Metrics,
) {
    while asked.recv().await.is_some() {
        tokio::time::sleep(DELAY).await;
        let started = Instant::now();
        match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&mut conn)
            .await
        {
            Ok(row) => {
                metrics.checkpoint(started.elapsed().as_secs_f64());
                let (frames, copied): (i64, i64) = (row.get(1), row.get(2));
                tracing::trace!(frames, copied, "WAL checkpoint");
                if frames >= RESTART_FRAMES {
                    restart.store(true, Ordering::Release);
                }
            }
            // The frames stay in the WAL (nothing is lost); the next
            // commit asks again.
            Err(e) => tracing::warn!(error = %e, "checkpointing the SQLite WAL failed"),
        }
    }
    let _ = conn.close().await;
}
