//! The work queues' shared executor. Actions and notifications are each a
//! [`Work`] ([`super::actions`], [`super::notifications`]): what a request
//! becomes, how it is admitted (rate limit, dedup) and how one attempt
//! runs. This module does the rest, the same for both: the intake stage
//! records each request in its queue in the inbox transaction, and an
//! [`Executor`] claims due jobs in batches, runs them under a deadline,
//! retries with backoff, dead-letters, and records ended attempts in
//! batches.
//!
//! A job is claimed (`running`, attempts + 1) before its plugin is called.
//! Each attempt has a deadline. Retryable failures are retried with
//! exponential backoff and jitter up to `max_attempts`, then the job fails
//! and is dead-lettered; permanent failures fail at once. Success or final
//! failure commits the job's end and its outcome event together. A job
//! found `running` at start was cut off by a crash and runs again: actions
//! are convergent ("ensure N"), so that is safe.
//!
//! On a shared (PostgreSQL) store several instances run the same queues:
//! a claim is a conditional update, so each attempt runs once; every
//! instance also polls for jobs the others enqueued, and a `running` job
//! whose claim is older than an attempt can last ([`PipelineConfig::attempt_timeout_ms`]
//! plus [`LEASE_GRACE`]) belonged to an instance that died, and runs again.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::actions::Actions;
use super::notifications::Notifications;
use super::{Payload, Received, Stage, event_span, sleep_or_cancel, store_backoff};
use crate::config::PipelineConfig;
use crate::model::{self, Job};
use crate::registry::{self, PluginState, Registry};
use crate::runtime;
use crate::store::{self, JobEnd, Queue, Store, Tx, now_ms};

/// The longest a plugin's Retry-After may hold a job back (15 minutes).
const MAX_RETRY_AFTER_MS: u64 = 15 * 60 * 1000;

/// How long past its attempt deadline a claim on a shared store is kept
/// before another instance takes the job over.
pub const LEASE_GRACE: Duration = Duration::from_secs(10);

/// How often executors on a shared store look for jobs other instances
/// enqueued or left behind.
const SHARED_POLL: Duration = Duration::from_secs(1);

/// One kind of work: what differs between the action and the notification
/// queue.
pub trait Work: Send + Sync + Sized + 'static {
    /// Its table.
    const QUEUE: Queue;
    /// Its intake stage's consumer name (inbox, offsets, dead letters).
    const CONSUMER: &'static str;
    /// The request kind its intake consumes.
    const KINDS: &'static [&'static str];
    /// Its name in logs and spans.
    const NAME: &'static str;

    /// The job a request asks for (`None`: not a request of this kind).
    fn job(received: &Received) -> Option<Job>;

    /// Admit a new job in the intake transaction: enqueue it, or record
    /// why it will never run.
    fn admit(
        executor: &Executor<Self>,
        tx: &mut Tx,
        received: &Received,
        job: Job,
    ) -> impl Future<Output = Result<(), store::Error>> + Send;

    /// Before a batch's new `jobs` are admitted (in this order), whatever
    /// is best decided for all of them at once.
    fn prepare(
        _executor: &Executor<Self>,
        _tx: &mut Tx,
        _jobs: &[(&Received, &Job)],
    ) -> impl Future<Output = Result<(), store::Error>> + Send {
        async { Ok(()) }
    }

    /// One attempt (the job is claimed): how it ended, and the outcome
    /// event to announce with it (none when it will be retried).
    fn attempt(
        executor: &Executor<Self>,
        received: &Received,
        attempts: u32,
        limit: Duration,
    ) -> impl Future<Output = Attempt> + Send;
}

/// How one attempt ended.
pub struct Attempt {
    /// What the queue records.
    pub end: JobEnd,
    /// The outcome event to announce with it (none when it will be retried).
    pub outcome: Option<model::Event>,
    /// The plugin's state writes, committed with the end (successes only).
    pub state: Option<PluginState>,
}

impl Attempt {
    /// An attempt with no state to commit.
    pub fn ended(end: JobEnd, outcome: Option<model::Event>) -> Attempt {
        Attempt {
            end,
            outcome,
            state: None,
        }
    }
}

/// An attempt that ended, waiting to be recorded.
struct Finished {
    job: Job,
    end: JobEnd,
    /// The outcome event to announce with it.
    outcome: Option<model::Event>,
    /// The requesting event, when the job is dead-lettered.
    dead: Option<model::Event>,
    /// The plugin's state writes.
    state: Option<PluginState>,
}

/// Runs the jobs of one queue.
pub struct Executor<W: Work> {
    /// What its jobs are.
    pub(super) work: W,
    pub(super) store: Store,
    pub(super) registry: Arc<Registry>,
    pub(super) config: PipelineConfig,
    wake: Notify,
}

impl<W: Work> Executor<W> {
    /// An executor for `work`'s queue.
    pub fn new(work: W, store: Store, registry: Arc<Registry>, config: PipelineConfig) -> Self {
        Executor {
            work,
            store,
            registry,
            config,
            wake: Notify::new(),
        }
    }

    /// New work was enqueued.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Delay before attempt `attempts + 1`.
    fn backoff(&self, attempts: u32) -> Duration {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(self.config.backoff_initial_ms))
            .with_max_delay(Duration::from_millis(self.config.backoff_max_ms))
            .with_jitter()
            .without_max_times()
            .build()
            .nth(attempts.saturating_sub(1) as usize)
            .unwrap_or(Duration::from_millis(self.config.backoff_max_ms))
    }

    /// Run due jobs until `cancel` fires. Sleeps until woken, until the
    /// next retry is due, or until a running job frees a slot.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        let shared = self.store.backend() == store::Backend::Postgres;
        let lease_ms = (self.config.attempt_timeout_ms + LEASE_GRACE.as_millis() as u64) as i64;
        // Embedded, one process runs the queue: every `running` job at start
        // was cut off. Shared, only claims older than the lease were.
        let claimed_before = if shared {
            now_ms() - lease_ms
        } else {
            i64::MAX
        };
        let mut wait = store_backoff();
        while let Err(e) = self.requeue_cut_off(claimed_before).await {
            tracing::warn!(queue = W::NAME, error = %e, "cannot read the queue yet; retrying");
            if sleep_or_cancel(wait.next(), &cancel).await {
                return Ok(());
            }
        }
        let slots = self.config.concurrency.max(1);
        let mut running: JoinSet<Finished> = JoinSet::new();
        let mut last_sweep = std::time::Instant::now();
        loop {
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let requeued = self.store.requeued().notified();
            tokio::pin!(requeued);
            requeued.as_mut().enable();

            if shared && last_sweep.elapsed() >= SHARED_POLL {
                last_sweep = std::time::Instant::now();
                if let Err(e) = self.requeue_cut_off(now_ms() - lease_ms).await {
                    tracing::warn!(queue = W::NAME, error = %e, "cannot sweep the queue; retrying");
                }
            }
            let mut next_due = None;
            if running.len() < slots {
                match self.start_due(&mut running, slots).await {
                    Ok(next) => {
                        next_due = next;
                        wait = store_backoff();
                    }
                    Err(e) => {
                        tracing::warn!(queue = W::NAME, error = %e, "reading the queue failed; retrying");
                        next_due =
                            Some(now_ms() + wait.next().map_or(5000, |d| d.as_millis() as i64));
                    }
                }
            }
            let has_slot = running.len() < slots;
            let sleep = async {
                match next_due {
                    Some(at) if has_slot => {
                        let ms = (at - now_ms()).max(1) as u64;
                        tokio::time::sleep(Duration::from_millis(ms)).await
                    }
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                () = cancel.cancelled() => {
                    // Attempts in flight are dropped; their jobs stay
                    // `running` and run again at the next start.
                    running.abort_all();
                    return Ok(());
                }
                () = &mut woken => {}
                () = &mut requeued => {}
                () = sleep => {}
                // Other processes enqueue too: instances on a shared
                // store, and `eventpulse approval approve` on any.
                () = tokio::time::sleep(SHARED_POLL) => {}
                Some(done) = running.join_next(), if !running.is_empty() => {
                    // Every attempt that has ended is recorded in one transaction.
                    let mut finished = Vec::new();
                    for done in std::iter::once(done).chain(std::iter::from_fn(|| running.try_join_next())) {
                        match done {
                            Ok(f) => finished.push(f),
                            // Its job stays `running` and runs again after a restart or sweep.
                            Err(e) if e.is_panic() => tracing::error!(queue = W::NAME, "job attempt panicked"),
                            Err(_) => {}
                        }
                    }
                    if !self.record(&finished, &cancel).await {
                        running.abort_all();
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Put jobs claimed before `claimed_before` back in the queue.
    async fn requeue_cut_off(&self, claimed_before: i64) -> Result<(), store::Error> {
        let n = self.store.requeue_running(W::QUEUE, claimed_before).await?;
        if n > 0 {
            tracing::warn!(
                queue = W::NAME,
                jobs = n,
                "re-running jobs whose attempt was cut off"
            );
        }
        Ok(())
    }

    /// Claim and start due jobs while slots are free; returns when the next
    /// pending job is due.
    async fn start_due(
        self: &Arc<Self>,
        running: &mut JoinSet<Finished>,
        slots: usize,
    ) -> Result<Option<i64>, store::Error> {
        let free = slots - running.len();
        let due = self.store.due(W::QUEUE, now_ms(), free as u32).await?;
        if !due.is_empty() {
            let ids: Vec<&str> = due.iter().map(|j| j.id.as_str()).collect();
            let mut tx = self.store.begin(store::Holder::QueueClaim).await?;
            let claimed = tx.claim(W::QUEUE, &ids).await?;
            tx.commit().await?;
            for job in due.into_iter().filter(|j| claimed.contains(&j.id)) {
                let this = self.clone();
                running.spawn(async move { this.attempt(job).await });
            }
        }
        if running.len() >= slots {
            return Ok(None);
        }
        self.store.next_due(W::QUEUE).await
    }

    /// One attempt of `job` (already claimed): how it ended.
    async fn attempt(&self, job: Job) -> Finished {
        let attempts = job.attempts as u32 + 1;
        let received = match Received::parse(&job.request) {
            Ok(r) => r,
            Err(e) => {
                let end = JobEnd::Failed {
                    error: format!("unreadable request: {e}"),
                };
                return Finished {
                    job,
                    end,
                    outcome: None,
                    dead: None,
                    state: None,
                };
            }
        };
        let span = event_span(W::NAME, &received.event);
        let limit = Duration::from_millis(self.config.attempt_timeout_ms);
        let Attempt {
            end,
            outcome,
            state,
        } = async {
            tracing::info!(plugin = %job.plugin, attempt = attempts, "attempt started");
            let attempt = W::attempt(self, &received, attempts, limit).await;
            match &attempt.end {
                JobEnd::Succeeded { .. } => tracing::info!(plugin = %job.plugin, attempt = attempts, "attempt succeeded"),
                JobEnd::Retry { error, at } => tracing::warn!(plugin = %job.plugin, attempt = attempts, error, retry_in_ms = at - now_ms(), "attempt failed; will retry"),
                JobEnd::Failed { error } => tracing::warn!(plugin = %job.plugin, attempt = attempts, error, "job failed"),
            }
            attempt
        }
        .instrument(span.clone())
        .await;
        let dead = matches!(end, JobEnd::Failed { .. }) && attempts >= self.config.max_attempts;
        Finished {
            job,
            end,
            outcome,
            dead: dead.then_some(received.event),
            state,
        }
    }

    /// How an attempt that failed with `error` ends.
    pub(super) fn failure(&self, error: &registry::Error, attempts: u32) -> (JobEnd, bool) {
        let retryable = match error {
            registry::Error::Plugin(e) => {
                e.is_retryable()
                    // A plugin being replaced or re-enabled comes back.
                    || matches!(e, runtime::Error::NotFound(_) | runtime::Error::Disabled(_))
            }
            registry::Error::Store(_) | registry::Error::Dir { .. } => true,
        };
        let text = error.to_string();
        if retryable && attempts < self.config.max_attempts {
            // The remote side's Retry-After wins over a shorter backoff
            // (capped, so a hostile value cannot park the job for days).
            let asked = match error {
                registry::Error::Plugin(e) => e.retry_after_ms().unwrap_or(0),
                _ => 0,
            };
            let delay =
                (self.backoff(attempts).as_millis() as u64).max(asked.min(MAX_RETRY_AFTER_MS));
            let at = now_ms() + delay as i64;
            (JobEnd::Retry { error: text, at }, retryable)
        } else if retryable {
            (
                JobEnd::Failed {
                    error: format!("gave up after {attempts} attempts: {text}"),
                },
                retryable,
            )
        } else {
            (JobEnd::Failed { error: text }, retryable)
        }
    }

    /// Count recorded attempts.
    fn count(&self, finished: &[Finished]) {
        let metrics = self.registry.metrics();
        for f in finished {
            let outcome = match f.end {
                JobEnd::Succeeded { .. } => "ok",
                JobEnd::Retry { .. } => "retry",
                JobEnd::Failed { .. } => "failed",
            };
            metrics.job_attempt(W::CONSUMER, &f.job.plugin, outcome);
            if outcome == "ok" && W::QUEUE == Queue::Notifications {
                metrics.notification_sent(&f.job.plugin);
            }
            if f.dead.is_some() {
                metrics.dead_letter(W::CONSUMER);
            }
        }
    }

    /// Commit the attempts' ends with their outcome events (and dead
    /// letters) in one transaction, retrying until the store takes them: a
    /// finished attempt is never forgotten while the process lives (and
    /// re-runs if it dies). `false` if `cancel` fired first.
    async fn record(&self, finished: &[Finished], cancel: &CancellationToken) -> bool {
        if finished.is_empty() {
            return true;
        }
        let consumer = W::CONSUMER;
        let mut wait = store_backoff();
        loop {
            let result = async {
                let mut tx = self.store.begin(store::Holder::QueueRecord).await?;
                for f in finished {
                    tx.finish(W::QUEUE, &f.job.id, &f.end).await?;
                    if let Some(s) = &f.state {
                        tx.write_plugin_state(s.plugin.name(), &s.writes).await?;
                    }
                    if let Some(e) = &f.outcome {
                        tx.append(e).await?;
                    }
                    if let (Some(e), JobEnd::Failed { error }) = (&f.dead, &f.end) {
                        tx.dead_letter(consumer, e, error, f.job.attempts + 1)
                            .await?;
                    }
                }
                tx.commit().await
            }
            .await;
            match result {
                Ok(()) => {
                    // The in-memory state follows the store once it is durable.
                    for s in finished.iter().filter_map(|f| f.state.as_ref()) {
                        s.committed();
                    }
                    self.count(finished);
                    return true;
                }
                Err(e) => {
                    tracing::warn!(queue = W::NAME, jobs = finished.len(), error = %e, "could not record the attempts; retrying");
                    if sleep_or_cancel(wait.next(), cancel).await {
                        return false;
                    }
                }
            }
        }
    }
}

/// Awaits `call`, failing it with a timeout after `limit`.
pub(super) async fn deadline<T>(
    limit: Duration,
    call: impl Future<Output = Result<T, registry::Error>>,
) -> Result<T, registry::Error> {
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or_else(|_| Err(runtime::Error::Timeout(limit.as_millis() as u64).into()))
}

/// A queue's intake stage: its requests into the queue.
pub struct Intake<W: Work>(pub Arc<Executor<W>>);

impl<W: Work> Stage for Intake<W> {
    const NAME: &'static str = W::CONSUMER;
    const KINDS: &'static [&'static str] = W::KINDS;

    async fn handle(&self, events: &[Received]) -> Result<(), store::Error> {
        intake(&self.0, events).await
    }
}

/// Admit `events`' jobs in one transaction with their inbox rows, then
/// wake the executor.
async fn intake<W: Work>(executor: &Executor<W>, events: &[Received]) -> Result<(), store::Error> {
    let consumer = W::CONSUMER;
    let ids: Vec<&str> = events.iter().map(|r| r.event.id.as_str()).collect();
    // Jobs are built (each copies its request, the whole event) before the
    // writer is taken: nothing in them depends on the store.
    let mut jobs: Vec<Option<Job>> = events.iter().map(W::job).collect();
    let mut tx = executor.store.begin(store::Holder::QueueIntake).await?;
    let new = tx.inbox_many(consumer, &ids).await?;
    let admitted: Vec<(&Received, Option<Job>)> = events
        .iter()
        .zip(jobs.iter_mut())
        .filter(|(r, _)| new.contains(&r.event.id))
        .map(|(r, job)| (r, job.take()))
        .collect();
    let jobs: Vec<(&Received, &Job)> = admitted
        .iter()
        .filter_map(|(r, job)| job.as_ref().map(|j| (*r, j)))
        .collect();
    W::prepare(executor, &mut tx, &jobs).await?;
    for (received, job) in admitted {
        match job {
            Some(job) => {
                let span = event_span(consumer, &received.event);
                W::admit(executor, &mut tx, received, job)
                    .instrument(span)
                    .await?
            }
            None => {
                let why = format!("a {} is not a request for this queue", received.kind);
                tx.dead_letter(consumer, &received.event, &why, 0).await?;
            }
        }
    }
    tx.commit().await?;
    executor.wake();
    Ok(())
}

/// The job a dead letter of an intake stage is about: its queue and id
/// (taken from the requesting event in the letter).
pub fn dead_letter_job(consumer: &str, payload: &str) -> Option<(Queue, String)> {
    let received = Received::parse(payload).ok()?;
    match (consumer, received.payload) {
        (Actions::CONSUMER, Payload::Action(_)) => {
            Some((Queue::Actions, received.event.correlation.action_id?))
        }
        (Notifications::CONSUMER, Payload::Notification(d)) => {
            Some((Queue::Notifications, d.notification_id))
        }
        _ => None,
    }
}
