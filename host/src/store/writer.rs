//! SQLite's one writer connection, shared by write transactions that
//! commit together.
//!
//! SQLite has a single writer, and with the default durability every
//! commit is an fsync. Ingest, the stages and the work queues each commit
//! small transactions, several per alert when the load is light, so they
//! used to queue for the connection mostly to wait out each other's
//! commits. Here every write transaction ([`super::Tx`]) is a *member*: it
//! runs on the connection in turn, as a savepoint inside a transaction
//! that stays open while other members are waiting, and the member that
//! finds nobody waiting (or the open transaction old or full enough)
//! commits it for everyone in it. A burst of members costs one commit.
//!
//! Members queue for the connection first come, first served, except that
//! an urgent one (ingest, whose senders wait for the answer) goes ahead of
//! every ordinary one not yet at the head of the queue: it waits out at
//! most the member holding the connection and the one next in line, not a
//! queue of stage batches. Ingest commits from one task, so urgent members
//! come one at a time and cannot starve the others.
//!
//! The fsync is off the connection. SQLite commits with `synchronous =
//! NORMAL` (the WAL is written, not synced), and a [`Syncer`] thread
//! fdatasyncs the WAL file and only then answers the members of every
//! group committed before that sync began: the next group's statements run
//! on the connection while the last one's sync is in flight, and one sync
//! covers every group committed while the previous one ran. (SQLite itself
//! syncs the WAL before each checkpoint and the database file after it, so
//! a commit is on disk either in the WAL or, checkpointed, in the file.)
//! Other connections can read a commit before it is synced; nothing acts on
//! such a read outside the database before a write of its own was answered
//! (which proves the sync), except the Kafka relay, which waits for
//! [`Writer::synced`] before it publishes.
//!
//! What a member is told is still exact:
//! - [`Member::commit`] returns `Ok` only once the commit holding its
//!   writes is durable; if that commit fails, every member in it gets the
//!   error (transient: retry) and none of their writes stand. If a sync of
//!   the WAL fails, whether any unsynced commit reached the disk is
//!   unknown (the kernel may have dropped the pages it failed to write):
//!   every member waiting for it gets the error and the writer refuses
//!   every later write until the host restarts and SQLite recovers from
//!   what is on disk.
//! - A member that fails, or is dropped without committing, is rolled back
//!   to its savepoint, and the group is committed there and then, so the
//!   next member never starts inside a transaction that SQLite may have
//!   rolled back on that failure.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sqlx::AnyConnection;
use tokio::sync::{Mutex, OwnedMutexGuard, oneshot};

use super::Error;
use super::checkpoint::Checkpoints;
use crate::telemetry::Metrics;

/// A group is committed once it holds this many members ...
const MAX_MEMBERS: usize = 64;
/// ... or once its transaction, plus the typical hold of the next member,
/// would be open this long, even if more members are waiting. Under a
/// light load members are short and share a commit; under a heavy one a
/// stage's batch holds the connection for milliseconds, and a small member
/// before it commits at once rather than wait that out.
const MAX_OPEN: Duration = Duration::from_millis(2);

/// Who opens a write transaction: the `holder` label of
/// `eventpulse_sqlite_writer_hold_seconds`, so an operator can see which
/// part of the host SQLite's one writer spends its time on. It also
/// decides where the transaction queues for the connection: ingest, whose
/// senders wait for the answer, goes ahead of the others (see the module
/// docs). PostgreSQL has no single writer and ignores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// Webhook ingest: alerts and their `alert.raised` events.
    Ingest,
    /// The Kubernetes Warning event source.
    KubeEvents,
    /// The rule stage: a batch's decisions, incidents and events.
    Rules,
    /// The incident stage.
    Incidents,
    /// Approval rules and expiring approvals.
    Approvals,
    /// A work queue admitting the jobs of a batch of events.
    QueueIntake,
    /// A work queue claiming due jobs, or requeueing what a dead process
    /// left running.
    QueueClaim,
    /// A work queue recording how attempts ended.
    QueueRecord,
    /// A stage parking an event it cannot handle.
    DeadLetters,
    /// The embedded log's consumer offsets.
    Offsets,
    /// The Kafka relay marking what it published.
    KafkaRelay,
    /// Timers: arming, disarming and firing.
    Timers,
    /// Pruning old rows.
    Retention,
    /// Plugin state and failures recorded outside a job.
    Plugins,
    /// Writes of the admin API (silences, acknowledgements, replays,
    /// enabling plugins) and the audit log.
    Admin,
    /// The readiness probe and the durability check.
    Health,
}

impl Holder {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Holder::Ingest => "ingest",
            Holder::KubeEvents => "kube_events",
            Holder::Rules => "rules",
            Holder::Incidents => "incidents",
            Holder::Approvals => "approvals",
            Holder::QueueIntake => "queue_intake",
            Holder::QueueClaim => "queue_claim",
            Holder::QueueRecord => "queue_record",
            Holder::DeadLetters => "dead_letters",
            Holder::Offsets => "offsets",
            Holder::KafkaRelay => "kafka_relay",
            Holder::Timers => "timers",
            Holder::Retention => "retention",
            Holder::Plugins => "plugins",
            Holder::Admin => "admin",
            Holder::Health => "health",
        }
    }

    /// Whether it goes ahead of every ordinary member not yet next in line.
    fn urgent(self) -> bool {
        self == Holder::Ingest
    }
}

/// The connection and the transaction open on it.
pub(super) struct Writer {
    shared: Arc<Mutex<Shared>>,
    /// Ordinary members queue here first, so at most one of them at a
    /// time queues on `shared`, where urgent members queue directly.
    ordinary: Mutex<()>,
    /// Members waiting for the connection.
    waiting: AtomicUsize,
    /// How long a member waits for the connection before giving up.
    timeout: Duration,
    /// [`MAX_OPEN`] (tests set it longer).
    max_open: Duration,
    /// Why a sync of the WAL failed, once one has: no write is accepted
    /// after that.
    failed: Arc<OnceLock<String>>,
    /// Asks the syncer for a sync ([`Writer::synced`]); `None` when commits
    /// are answered without one.
    syncs: Option<std::sync::mpsc::Sender<Vec<Answer>>>,
}

/// How a member learns whether its group is durable.
type Answer = oneshot::Sender<Result<(), String>>;

/// Makes what SQLite committed durable: fdatasync of the WAL file (tests
/// put something slower or failing in its place).
pub(super) type SyncFn = Box<dyn FnMut() -> std::io::Result<()> + Send>;

struct Shared {
    conn: AnyConnection,
    /// Records how long members hold the connection and commits take: the
    /// writer's occupancy, which bounds what one SQLite database can take.
    metrics: Metrics,
    open: Option<Group>,
    /// How long members hold the connection, a moving average: what a
    /// member that leaves its group open for the next one expects to wait.
    typical_hold: Duration,
    /// Where committed groups wait for the sync that makes them durable;
    /// `None`: answered at once (`store.durability = "process-crash"`).
    syncs: Option<std::sync::mpsc::Sender<Vec<Answer>>>,
    /// Told of every commit, to copy the WAL back into the database file
    /// off this connection ([`Checkpoints`]); `None`: SQLite's own
    /// checkpoints, if the connection has them.
    checkpoints: Option<Checkpoints>,
}

/// The members of the open transaction that have released their
/// savepoints, waiting for its commit.
struct Group {
    started: Instant,
    members: Vec<Answer>,
}

/// One write transaction on the [`Writer`]: a savepoint in the open group.
pub(super) struct Member {
    writer: Arc<Writer>,
    guard: Option<OwnedMutexGuard<Shared>>,
    /// Opened the group's transaction (no savepoint: nobody's writes are
    /// before its own).
    first: bool,
    /// When it got the connection.
    since: Instant,
    /// Who it is, for the hold metric.
    holder: Holder,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("waiting", &self.waiting.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// Share `conn`, the database's one write connection. With `sync`,
    /// members are answered once it has run after their group's commit
    /// (on a thread of its own); without, as soon as the group commits.
    /// `checkpoints` is asked for a checkpoint after each commit.
    pub(super) fn new(
        conn: AnyConnection,
        timeout: Duration,
        metrics: Metrics,
        sync: Option<SyncFn>,
        checkpoints: Option<Checkpoints>,
    ) -> Arc<Writer> {
        let failed = Arc::new(OnceLock::new());
        let syncs = sync.map(|sync| Syncer::start(sync, metrics.clone(), failed.clone()));
        Arc::new(Writer {
            shared: Arc::new(Mutex::new(Shared {
                conn,
                metrics,
                open: None,
                typical_hold: Duration::ZERO,
                syncs: syncs.clone(),
                checkpoints,
            })),
            ordinary: Mutex::new(()),
            waiting: AtomicUsize::new(0),
            timeout,
            max_open: MAX_OPEN,
            failed,
            syncs,
        })
    }

    /// Whether members are answered only after a sync of the WAL.
    pub(super) fn syncs(&self) -> bool {
        self.syncs.is_some()
    }

    /// Returns once everything committed before the call is durable: at
    /// once when commits are answered without a sync.
    pub(super) async fn synced(&self) -> Result<(), Error> {
        let Some(syncs) = &self.syncs else {
            return Ok(());
        };
        let (done, outcome) = oneshot::channel();
        if syncs.send(vec![done]).is_err() {
            return Err(unsynced("the WAL syncer stopped"));
        }
        outcome
            .await
            .unwrap_or_else(|_| Err("the WAL syncer stopped".into()))
            .map_err(|e| unsynced(&e))
    }

    /// Wait for the connection, ahead of the queue if `holder` is urgent,
    /// and start a member. Runs on a task of its own: if the caller stops
    /// waiting, the member it would have got is dropped, which rolls it
    /// back and commits the group it joined, rather than leaving that
    /// group open with nobody to commit it.
    pub(super) async fn begin(self: &Arc<Self>, holder: Holder) -> Result<Member, Error> {
        if let Some(why) = self.failed.get() {
            return Err(unsynced(why));
        }
        let writer = self.clone();
        tokio::spawn(async move {
            let locked = {
                let _waiting = Waiting::new(&writer.waiting);
                tokio::time::timeout(writer.timeout, async {
                    let _in_line = if holder.urgent() {
                        None
                    } else {
                        Some(writer.ordinary.lock().await)
                    };
                    writer.shared.clone().lock_owned().await
                })
                .await
            };
            let mut guard = locked.map_err(|_| Error::Busy(writer.timeout))?;
            // The first member opens the transaction; the others each
            // write under a savepoint of their own.
            let first = guard.open.is_none();
            if first {
                run(&mut guard.conn, "BEGIN").await?;
                guard.open = Some(Group {
                    started: Instant::now(),
                    members: Vec::new(),
                });
            } else if let Err(e) = run(&mut guard.conn, "SAVEPOINT member").await {
                guard.fail(&e.to_string()).await;
                return Err(e.into());
            }
            Ok(Member {
                writer: writer.clone(),
                guard: Some(guard),
                first,
                since: Instant::now(),
                holder,
            })
        })
        .await
        .expect("starting a write transaction does not panic")
    }
}

/// Counts a member waiting for the connection while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Member {
    /// The connection, for statements.
    pub(super) fn conn(&mut self) -> &mut AnyConnection {
        &mut self.guard.as_mut().expect("a live member").conn
    }

    /// Join the group with this member's writes; `Ok` once they are
    /// committed. Runs on a task of its own, so a caller that stops waiting
    /// does not leave the group half-committed.
    pub(super) async fn commit(mut self) -> Result<(), Error> {
        let mut guard = self.guard.take().expect("a live member");
        let (writer, first, since, holder) =
            (self.writer.clone(), self.first, self.since, self.holder);
        let outcome = tokio::spawn(async move {
            if first {
                // Nothing to release.
            } else if let Err(e) = run(&mut guard.conn, "RELEASE member").await {
                // The savepoint is gone: SQLite rolled the whole
                // transaction back on an earlier error.
                guard.fail(&e.to_string()).await;
                return Err(e.to_string());
            }
            let (done, outcome) = oneshot::channel();
            let group = guard.open.as_mut().expect("a member runs in an open group");
            group.members.push(done);
            // Leave the group open for the next member only if it is
            // likely to be done soon: the wait is added to every member's.
            let full = group.members.len() >= MAX_MEMBERS;
            let age = group.started.elapsed();
            let held = since.elapsed();
            guard
                .metrics
                .writer_hold(holder.as_str(), held.as_secs_f64());
            guard.typical_hold = (guard.typical_hold * 7 + held) / 8;
            if writer.waiting.load(Ordering::SeqCst) == 0
                || full
                || age + guard.typical_hold >= writer.max_open
            {
                guard.commit().await;
            }
            drop(guard);
            outcome
                .await
                .unwrap_or_else(|_| Err("the writer stopped before committing".into()))
        })
        .await
        .expect("a group commit does not panic");
        outcome.map_err(|e| {
            unsynced(&format!(
                "the transaction this write was committed with failed: {e}"
            ))
        })
    }

    /// Undo this member's writes; the others in its group are committed.
    pub(super) async fn rollback(mut self) -> Result<(), Error> {
        let guard = self.guard.take().expect("a live member");
        tokio::spawn(abort(guard, self.first))
            .await
            .expect("a rollback does not panic")
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(guard) = self.guard.take() {
            let first = self.first;
            tokio::spawn(async move {
                if let Err(e) = abort(guard, first).await {
                    tracing::warn!(error = %e, "rolling back a write transaction failed");
                }
            });
        }
    }
}

/// Run `sql` on the writer's connection. (Boxed: the spawned tasks above
/// need a future whose type names no borrowed lifetime of sqlx's.)
fn run<'c>(
    conn: &'c mut AnyConnection,
    sql: &'static str,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), sqlx::Error>> + Send + 'c>> {
    Box::pin(async move {
        for statement in sql.split(';') {
            sqlx::query(statement.trim()).execute(&mut *conn).await?;
        }
        Ok(())
    })
}

/// Roll a member back to its savepoint, then commit its group (the first
/// member, alone in its group so far, rolls the transaction back).
async fn abort(mut guard: OwnedMutexGuard<Shared>, first: bool) -> Result<(), Error> {
    if first {
        let outcome = run(&mut guard.conn, "ROLLBACK").await;
        guard.open = None;
        return Ok(outcome?);
    }
    match run(&mut guard.conn, "ROLLBACK TO member; RELEASE member").await {
        Ok(_) => {
            guard.commit().await;
            Ok(())
        }
        Err(e) => {
            guard.fail(&e.to_string()).await;
            Err(e.into())
        }
    }
}

impl Shared {
    /// Commit the open transaction and tell its members how it went.
    async fn commit(&mut self) {
        let Some(group) = self.open.take() else {
            return;
        };
        let started = Instant::now();
        let committed = run(&mut self.conn, "COMMIT").await;
        if let (Ok(_), Some(checkpoints)) = (&committed, &self.checkpoints) {
            if checkpoints.restart_due() {
                // The WAL is long: copy what the checkpointer has not, so
                // that the next write starts it over (see `checkpoint`).
                if let Err(e) = run(&mut self.conn, "PRAGMA wal_checkpoint(PASSIVE)").await {
                    tracing::warn!(error = %e, "checkpointing the SQLite WAL failed");
                }
            }
            checkpoints.ask();
        }
        self.metrics.writer_commit(started.elapsed().as_secs_f64());
        let outcome = match committed {
            Ok(_) => match &self.syncs {
                // Answered by the syncer, after a sync that starts after
                // this send, so after the commit's WAL writes.
                Some(syncs) => match syncs.send(group.members) {
                    Ok(()) => return,
                    Err(std::sync::mpsc::SendError(members)) => {
                        for member in members {
                            let _ = member.send(Err("the WAL syncer stopped".into()));
                        }
                        return;
                    }
                },
                None => Ok(()),
            },
            Err(e) => {
                // A failed COMMIT can leave the transaction open.
                let _ = run(&mut self.conn, "ROLLBACK").await;
                Err(e.to_string())
            }
        };
        for member in group.members {
            let _ = member.send(outcome.clone());
        }
    }

    /// Roll the open transaction back: every member in it gets `why`.
    async fn fail(&mut self, why: &str) {
        let _ = run(&mut self.conn, "ROLLBACK").await;
        if let Some(group) = self.open.take() {
            for member in group.members {
                let _ = member.send(Err(why.to_owned()));
            }
        }
    }
}

/// The thread that syncs the WAL for groups already committed.
struct Syncer;

impl Syncer {
    /// Start the thread; it stops when every sender is dropped.
    fn start(
        mut sync: SyncFn,
        metrics: Metrics,
        failed: Arc<OnceLock<String>>,
    ) -> std::sync::mpsc::Sender<Vec<Answer>> {
        let (syncs, waiting) = std::sync::mpsc::channel::<Vec<Answer>>();
        std::thread::Builder::new()
            .name("sqlite-wal-sync".into())
            .spawn(move || {
                while let Ok(mut answers) = waiting.recv() {
                    // Everything committed by now: one sync covers it all.
                    while let Ok(more) = waiting.try_recv() {
                        answers.extend(more);
                    }
                    let outcome = match failed.get() {
                        Some(why) => Err(why.clone()),
                        None => {
                            let started = Instant::now();
                            let synced = sync();
                            metrics.wal_sync(started.elapsed().as_secs_f64());
                            synced.map_err(|e| {
                                let why = format!(
                                    "syncing the SQLite WAL to disk failed ({e}): commits since \
                                     the last sync may be lost, and no write is accepted until \
                                     the host restarts"
                                );
                                tracing::error!(error = %why, "the store stops taking writes");
                                failed.get_or_init(|| why).clone()
                            })
                        }
                    };
                    for answer in answers {
                        let _ = answer.send(outcome.clone());
                    }
                }
            })
            .expect("the WAL sync thread starts");
        syncs
    }
}

/// The error of a write the writer could not make durable.
fn unsynced(why: &str) -> Error {
    Error::Database(sqlx::Error::Protocol(why.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection;

    /// A writer over a fresh SQLite file whose groups stay open for as
    /// long as members wait, and a second connection to read it with.
    async fn writer() -> (tempfile::TempDir, Arc<Writer>, AnyConnection) {
        writer_syncing(None).await
    }

    /// [`writer`], answering members only after `sync` ran.
    async fn writer_syncing(
        sync: Option<SyncFn>,
    ) -> (tempfile::TempDir, Arc<Writer>, AnyConnection) {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("w.db").display());
        let mut conn = AnyConnection::connect(&url).await.unwrap();
        sqlx::raw_sql("PRAGMA journal_mode = WAL; CREATE TABLE t (k TEXT PRIMARY KEY)")
            .execute(&mut conn)
            .await
            .unwrap();
        let writer = Arc::new(Writer {
            max_open: Duration::from_secs(3600),
            ..Arc::into_inner(Writer::new(
                conn,
                Duration::from_secs(5),
                Metrics::disabled(),
                sync,
                None,
            ))
            .unwrap()
        });
        let reader = AnyConnection::connect(&url).await.unwrap();
        (dir, writer, reader)
    }

    async fn insert(member: &mut Member, k: &str) -> Result<(), Error> {
        sqlx::query("INSERT INTO t (k) VALUES ($1)")
            .bind(k.to_owned())
            .execute(member.conn())
            .await?;
        Ok(())
    }

    async fn keys(reader: &mut AnyConnection) -> Vec<String> {
        sqlx::query_scalar("SELECT k FROM t ORDER BY k")
            .fetch_all(reader)
            .await
            .unwrap()
    }

    /// Wait until `n` members are queued for the connection.
    async fn queued(writer: &Writer, n: usize) {
        while writer.waiting.load(Ordering::SeqCst) < n {
            tokio::task::yield_now().await;
        }
    }

    /// Members that queue behind one another share a transaction: a
    /// member whose statement fails is rolled back to its savepoint
    /// alone, one dropped without committing leaves nothing, and the
    /// others' writes are committed, each told so only then.
    #[tokio::test]
    async fn a_failing_or_dropped_member_undoes_only_its_own_writes() {
        let (_dir, writer, mut reader) = writer().await;
        let mut a = writer.begin(Holder::Rules).await.unwrap();
        insert(&mut a, "a").await.unwrap();
        let w = writer.clone();
        let b = tokio::spawn(async move {
            let mut b = w.begin(Holder::Rules).await?;
            insert(&mut b, "b").await?;
            insert(&mut b, "a").await?; // violates the key
            b.commit().await
        });
        queued(&writer, 1).await;
        // Others wait, so `a` leaves the group open: not durable yet.
        let a = tokio::spawn(a.commit());
        let b = b.await.unwrap();
        assert!(
            matches!(&b, Err(e) if !e.is_transient()),
            "the member at fault gets its own error: {b:?}"
        );
        a.await
            .unwrap()
            .expect("the group commits after the failure");
        assert_eq!(keys(&mut reader).await, ["a"]);

        let mut c = writer.begin(Holder::Rules).await.unwrap();
        insert(&mut c, "c").await.unwrap();
        let w = writer.clone();
        let d = tokio::spawn(async move {
            let mut d = w.begin(Holder::Rules).await.unwrap();
            insert(&mut d, "d").await.unwrap();
            // Dropped without a commit.
        });
        queued(&writer, 1).await;
        let c = tokio::spawn(c.commit());
        d.await.unwrap();
        c.await.unwrap().unwrap();
        let mut e = writer.begin(Holder::Rules).await.unwrap();
        insert(&mut e, "e").await.unwrap();
        e.commit().await.unwrap();
        assert_eq!(keys(&mut reader).await, ["a", "c", "e"]);
    }

    /// An urgent member goes ahead of every ordinary one that is not yet
    /// next in line.
    #[tokio::test]
    async fn an_urgent_member_overtakes_the_queue() {
        let (_dir, writer, mut reader) = writer().await;
        let mut a = writer.begin(Holder::Rules).await.unwrap();
        insert(&mut a, "a").await.unwrap();
        let mut members = Vec::new();
        let (line, ahead) = (Holder::Rules, Holder::Ingest);
        for (n, (key, turn)) in [("b", line), ("c", line), ("d", line), ("u", ahead)]
            .into_iter()
            .enumerate()
        {
            let w = writer.clone();
            members.push(tokio::spawn(async move {
                let mut m = w.begin(turn).await.unwrap();
                // Each member writes the keys before its own: the order it
                // got the connection in.
                let before = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM t")
                    .fetch_one(m.conn())
                    .await
                    .unwrap();
                insert(&mut m, &format!("{before}{key}")).await.unwrap();
                m.commit().await.unwrap();
            }));
            queued(&writer, n + 1).await;
        }
        a.commit().await.unwrap();
        for m in members {
            m.await.unwrap();
        }
        // `b` was next in line; `u` came last and went second.
        assert_eq!(keys(&mut reader).await, ["1b", "2u", "3c", "4d", "a"]);
    }

    /// While others wait, a member's commit returns only with the group's:
    /// its writes are not visible before.
    #[tokio::test]
    async fn a_member_is_answered_once_its_group_is_durable() {
        let (_dir, writer, mut reader) = writer().await;
        let mut a = writer.begin(Holder::Rules).await.unwrap();
        insert(&mut a, "a").await.unwrap();
        let w = writer.clone();
        let (go, wait) = oneshot::channel::<()>();
        let b = tokio::spawn(async move {
            let mut b = w.begin(Holder::Rules).await.unwrap();
            insert(&mut b, "b").await.unwrap();
            wait.await.unwrap();
            b.commit().await
        });
        queued(&writer, 1).await;
        let a = tokio::spawn(a.commit());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!a.is_finished(), "answered before its group committed");
        assert!(keys(&mut reader).await.is_empty());
        go.send(()).unwrap();
        b.await.unwrap().unwrap();
        a.await.unwrap().unwrap();
        assert_eq!(keys(&mut reader).await, ["a", "b"]);
    }

    /// With a sync (the default durability), a member is answered only
    /// once a sync has run after its group committed, though the commit
    /// is readable before; `synced` waits for a sync in the same way.
    #[tokio::test]
    async fn a_commit_is_answered_only_after_the_wal_sync() {
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let synced = Arc::new(AtomicUsize::new(0));
        let counted = synced.clone();
        let sync: SyncFn = Box::new(move || {
            gate.recv().expect("the test releases each sync");
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        let (_dir, writer, mut reader) = writer_syncing(Some(sync)).await;
        let mut a = writer.begin(Holder::Rules).await.unwrap();
        insert(&mut a, "a").await.unwrap();
        let a = tokio::spawn(a.commit());
        let w = writer.clone();
        let barrier = tokio::spawn(async move { w.synced().await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(keys(&mut reader).await, ["a"], "committed, not yet synced");
        assert!(!a.is_finished(), "answered before the WAL was synced");
        assert!(!barrier.is_finished(), "synced() returned before a sync");
        // The writer is free meanwhile: the next member commits too.
        let mut b = writer.begin(Holder::Rules).await.unwrap();
        insert(&mut b, "b").await.unwrap();
        let b = tokio::spawn(b.commit());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(keys(&mut reader).await, ["a", "b"]);
        release.send(()).unwrap();
        release.send(()).unwrap();
        a.await.unwrap().unwrap();
        b.await.unwrap().unwrap();
        barrier.await.unwrap().unwrap();
        assert!((1..=2).contains(&synced.load(Ordering::SeqCst)));
    }

    /// A failed sync fails the members waiting for it, and every later
    /// write, with the reason: whether the unsynced commits reached the
    /// disk is unknown until SQLite recovers on the next start.
    #[tokio::test]
    async fn a_failed_sync_fails_its_members_and_every_later_write() {
        let sync: SyncFn = Box::new(|| Err(std::io::Error::other("disk gone")));
        let (_dir, writer, _reader) = writer_syncing(Some(sync)).await;
        let mut a = writer.begin(Holder::Rules).await.unwrap();
        insert(&mut a, "a").await.unwrap();
        let failed = a.commit().await.unwrap_err().to_string();
        assert!(
            failed.contains("syncing the SQLite WAL to disk failed (disk gone)")
                && failed.contains("until the host restarts"),
            "{failed}"
        );
        let Err(later) = writer.begin(Holder::Rules).await else {
            panic!("a write was accepted after a failed sync");
        };
        let later = later.to_string();
        assert!(later.contains("disk gone"), "{later}");
        let barrier = writer.synced().await.unwrap_err().to_string();
        assert!(barrier.contains("disk gone"), "{barrier}");
    }
}
