//! Actions and notifications: the intake stages record each request in its
//! work queue (`actions`, the action_exec record, or `notifications`) in
//! the inbox transaction; an [`Executor`] runs due jobs through their
//! plugins.
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

use super::kinds::*;
use super::{Payload, Received, Stage, derive, event_span, sleep_or_cancel, store_backoff};
use crate::config::PipelineConfig;
use crate::model;
use crate::model::{Job, JobStatus, TimelineEntry};
use crate::registry::{self, Registry};
use crate::runtime::{self, BreakerState, types};
use crate::store::{self, Dedup, JobEnd, Queue, Store, now_ms};

/// The longest a plugin's Retry-After may hold a job back (15 minutes).
const MAX_RETRY_AFTER_MS: u64 = 15 * 60 * 1000;

/// How long past its attempt deadline a claim on a shared store is kept
/// before another instance takes the job over.
pub const LEASE_GRACE: Duration = Duration::from_secs(10);

/// How often executors on a shared store look for jobs other instances
/// enqueued or left behind.
const SHARED_POLL: Duration = Duration::from_secs(1);

/// An attempt that ended, waiting to be recorded.
struct Finished {
    job: Job,
    end: JobEnd,
    /// The outcome event to announce with it.
    outcome: Option<model::Event>,
    /// The requesting event, when the job is dead-lettered.
    dead: Option<model::Event>,
}

/// Runs the jobs of one queue.
pub struct Executor {
    queue: Queue,
    store: Store,
    registry: Arc<Registry>,
    config: PipelineConfig,
    wake: Notify,
}

impl Executor {
    /// An executor for `queue`.
    pub fn new(
        queue: Queue,
        store: Store,
        registry: Arc<Registry>,
        config: PipelineConfig,
    ) -> Self {
        Executor {
            queue,
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

    /// Why `job` must not run, if the action plugin's rate limit on its
    /// target is reached (`[safety] max_actions` per `window_secs`). Counted
    /// in the transaction that enqueues.
    async fn refusal(&self, tx: &mut store::Tx, job: &Job) -> Result<Option<String>, store::Error> {
        if self.queue != Queue::Actions {
            return Ok(None);
        }
        let safety = self
            .registry
            .get(&job.plugin)
            .map(|p| p.manifest().safety.clone())
            .unwrap_or_default();
        if safety.max_actions == 0 {
            return Ok(None);
        }
        let since = now_ms() - (safety.window_secs as i64) * 1000;
        let recent = tx.recent_actions(&job.plugin, &job.target, since).await?;
        Ok((recent >= i64::from(safety.max_actions)).then(|| {
            format!(
                "refused: rate limit of {} `{}` actions per {} s on target `{}` reached",
                safety.max_actions, job.plugin, safety.window_secs, job.target
            )
        }))
    }

    /// Notification deduplication, decided in the transaction that
    /// enqueues: `Some(why)` if `job` repeats a dedup key that went out to
    /// the same notifier within `pipeline.notification_dedup_secs`. A
    /// request that goes out after some were held back carries their count
    /// in the `suppressed` field (and the key's total in `dedup_seen`).
    async fn dedup(
        &self,
        tx: &mut store::Tx,
        job: &mut Job,
        received: &Received,
    ) -> Result<Option<String>, store::Error> {
        let Payload::Notification(data) = &received.payload else {
            return Ok(None);
        };
        let (mut data, event) = (data.clone(), &received.event);
        let Some(key) = data.request.dedup_key.clone() else {
            return Ok(None);
        };
        let ttl_ms = (self.config.notification_dedup_secs * 1000) as i64;
        let now = self.registry.clock().now_ms() as i64;
        match tx
            .notification_dedup(&job.plugin, &key, now, ttl_ms)
            .await?
        {
            Dedup::Suppress { seen } => Ok(Some(format!(
                "suppressed: `{key}` went out less than {} s ago ({seen} requests so far)",
                self.config.notification_dedup_secs
            ))),
            Dedup::Send { seen, suppressed } => {
                if seen > 1 {
                    let fields = &mut data.request.fields;
                    fields.retain(|(k, _)| k != "suppressed" && k != "dedup_seen");
                    fields.push(("suppressed".into(), suppressed.to_string()));
                    fields.push(("dedup_seen".into(), seen.to_string()));
                    let event = model::Event {
                        data: serde_json::to_string(&data).expect("data serialises"),
                        ..event.clone()
                    };
                    job.request = serde_json::to_string(&event).expect("event serialises");
                }
                Ok(None)
            }
        }
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
            tracing::warn!(queue = ?self.queue, error = %e, "cannot read the queue yet; retrying");
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
                    tracing::warn!(queue = ?self.queue, error = %e, "cannot sweep the queue; retrying");
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
                        tracing::warn!(queue = ?self.queue, error = %e, "reading the queue failed; retrying");
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
                () = tokio::time::sleep(SHARED_POLL), if shared => {}
                Some(done) = running.join_next(), if !running.is_empty() => {
                    // Every attempt that has ended is recorded in one transaction.
                    let mut finished = Vec::new();
                    for done in std::iter::once(done).chain(std::iter::from_fn(|| running.try_join_next())) {
                        match done {
                            Ok(f) => finished.push(f),
                            // Its job stays `running` and runs again after a restart or sweep.
                            Err(e) if e.is_panic() => tracing::error!(queue = ?self.queue, "job attempt panicked"),
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
        let n = self
            .store
            .requeue_running(self.queue, claimed_before)
            .await?;
        if n > 0 {
            tracing::warn!(queue = ?self.queue, jobs = n, "re-running jobs whose attempt was cut off");
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
        let due = self.store.due(self.queue, now_ms(), free as u32).await?;
        if !due.is_empty() {
            let ids: Vec<&str> = due.iter().map(|j| j.id.as_str()).collect();
            let mut tx = self.store.begin().await?;
            let claimed = tx.claim(self.queue, &ids).await?;
            tx.commit().await?;
            for job in due.into_iter().filter(|j| claimed.contains(&j.id)) {
                let this = self.clone();
                running.spawn(async move { this.attempt(job).await });
            }
        }
        if running.len() >= slots {
            return Ok(None);
        }
        self.store.next_due(self.queue).await
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
                };
            }
        };
        let span = event_span(self.queue_name(), &received.event);
        let limit = Duration::from_millis(self.config.attempt_timeout_ms);
        let (end, outcome) = async {
            tracing::info!(plugin = %job.plugin, attempt = attempts, "attempt started");
            let (end, outcome) = self.call_plugin(&received, attempts, limit).await;
            match &end {
                JobEnd::Succeeded { .. } => tracing::info!(plugin = %job.plugin, attempt = attempts, "attempt succeeded"),
                JobEnd::Retry { error, at } => tracing::warn!(plugin = %job.plugin, attempt = attempts, error, retry_in_ms = at - now_ms(), "attempt failed; will retry"),
                JobEnd::Failed { error } => tracing::warn!(plugin = %job.plugin, attempt = attempts, error, "job failed"),
            }
            (end, outcome)
        }
        .instrument(span.clone())
        .await;
        let dead = matches!(end, JobEnd::Failed { .. }) && attempts >= self.config.max_attempts;
        Finished {
            job,
            end,
            outcome,
            dead: dead.then_some(received.event),
        }
    }

    fn queue_name(&self) -> &'static str {
        match self.queue {
            Queue::Actions => "action queue",
            Queue::Notifications => "notification queue",
        }
    }

    /// How an attempt that failed with `error` ends.
    fn failure(&self, error: &registry::Error, attempts: u32) -> (JobEnd, bool) {
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

    /// Call the queue's plugin for `event` under the attempt deadline; the
    /// attempt's end and the outcome event to announce with it (none when
    /// it will be retried).
    async fn call_plugin(
        &self,
        received: &Received,
        attempts: u32,
        limit: Duration,
    ) -> (JobEnd, Option<model::Event>) {
        async fn deadline<T>(
            limit: Duration,
            call: impl Future<Output = Result<T, registry::Error>>,
        ) -> Result<T, registry::Error> {
            tokio::time::timeout(limit, call)
                .await
                .unwrap_or_else(|_| Err(runtime::Error::Timeout(limit.as_millis() as u64).into()))
        }
        let event = &received.event;
        let wrong_kind = || {
            let error = format!("a {} is not a request for this queue", received.kind);
            (JobEnd::Failed { error }, None)
        };
        match self.queue {
            Queue::Actions => {
                let mut data = match &received.payload {
                    Payload::Action(d) => d.clone(),
                    _ => return wrong_kind(),
                };
                data.attempts = attempts;
                let source = format!("eventpulse/action/{}", data.request.action);
                let (plugin, target) = (&data.request.action, &data.request.target);
                let breaker = self.registry.target_breaker(plugin, target);
                let result = if breaker.permits() {
                    let call = self.registry.run_action(plugin, event, &data.request);
                    let result = deadline(limit, call).await;
                    let was = breaker.state();
                    breaker.record(result.is_err());
                    if breaker.state() == BreakerState::Open && was != BreakerState::Open {
                        tracing::warn!(plugin, target, "circuit breaker opened");
                    }
                    result
                } else {
                    let what = format!("{plugin}` on target `{target}");
                    Err(runtime::Error::CircuitOpen(what).into())
                };
                match result {
                    Ok(r) => {
                        let details = serde_json::from_str(&r.details)
                            .unwrap_or_else(|_| serde_json::Value::String(r.details.clone()));
                        let result =
                            serde_json::json!({ "summary": r.summary, "details": details });
                        data.result = Some(r);
                        let end = JobEnd::Succeeded {
                            status: JobStatus::Completed,
                            result: result.to_string(),
                        };
                        (
                            end,
                            Some(derive(
                                event,
                                ACTION_COMPLETED,
                                &source,
                                event.correlation.clone(),
                                &data,
                            )),
                        )
                    }
                    Err(e) => match self.failure(&e, attempts) {
                        (JobEnd::Failed { error }, retryable) => {
                            data.error = Some(if retryable {
                                types::PluginError::Retryable(error.clone())
                            } else {
                                types::PluginError::Permanent(error.clone())
                            });
                            let failed = Some(derive(
                                event,
                                ACTION_FAILED,
                                &source,
                                event.correlation.clone(),
                                &data,
                            ));
                            (JobEnd::Failed { error }, failed)
                        }
                        (retry, _) => (retry, None),
                    },
                }
            }
            Queue::Notifications => {
                let mut data = match &received.payload {
                    Payload::Notification(d) => d.clone(),
                    _ => return wrong_kind(),
                };
                data.attempts = attempts;
                let source = format!("eventpulse/notifier/{}", data.request.channel);
                let call = self
                    .registry
                    .deliver(&data.request.channel, event, &data.request);
                match deadline(limit, call).await {
                    Ok(d) => {
                        let result = serde_json::to_string(&d).expect("delivery serialises");
                        data.delivery = Some(d);
                        let end = JobEnd::Succeeded {
                            status: JobStatus::Delivered,
                            result,
                        };
                        (
                            end,
                            Some(derive(
                                event,
                                NOTIFICATION_DELIVERED,
                                &source,
                                event.correlation.clone(),
                                &data,
                            )),
                        )
                    }
                    Err(e) => match self.failure(&e, attempts) {
                        (JobEnd::Failed { error }, _) => {
                            data.error = Some(error.clone());
                            let failed = Some(derive(
                                event,
                                NOTIFICATION_FAILED,
                                &source,
                                event.correlation.clone(),
                                &data,
                            ));
                            (JobEnd::Failed { error }, failed)
                        }
                        (retry, _) => (retry, None),
                    },
                }
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
        let consumer = match self.queue {
            Queue::Actions => ActionIntake::NAME,
            Queue::Notifications => NotificationIntake::NAME,
        };
        let mut wait = store_backoff();
        loop {
            let result = async {
                let mut tx = self.store.begin().await?;
                for f in finished {
                    tx.finish(self.queue, &f.job.id, &f.end).await?;
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
                Ok(()) => return true,
                Err(e) => {
                    tracing::warn!(queue = ?self.queue, jobs = finished.len(), error = %e, "could not record the attempts; retrying");
                    if sleep_or_cancel(wait.next(), cancel).await {
                        return false;
                    }
                }
            }
        }
    }
}

/// The action stage: `action.requested` into the `actions` queue.
pub struct ActionIntake(pub Arc<Executor>);

/// The notification stage: `notification.requested` into `notifications`.
pub struct NotificationIntake(pub Arc<Executor>);

/// Record `events`' jobs (`job_of` each) in one transaction with their
/// inbox rows, then wake the executor.
async fn intake(
    executor: &Executor,
    consumer: &str,
    events: &[Received],
    job_of: fn(&Received) -> Option<Job>,
) -> Result<(), store::Error> {
    let ids: Vec<&str> = events.iter().map(|r| r.event.id.as_str()).collect();
    let mut tx = executor.store.begin().await?;
    let new = tx.inbox_many(consumer, &ids).await?;
    for received in events.iter().filter(|r| new.contains(&r.event.id)) {
        intake_one(executor, &mut tx, consumer, received, job_of(received)).await?;
    }
    tx.commit().await?;
    executor.wake();
    Ok(())
}

/// One request into the queue: enqueued, refused by the rate limit, or
/// suppressed by notification dedup.
async fn intake_one(
    executor: &Executor,
    tx: &mut store::Tx,
    consumer: &str,
    received: &Received,
    job: Option<Job>,
) -> Result<(), store::Error> {
    let event = &received.event;
    match job {
        Some(mut job) if executor.queue == Queue::Notifications => {
            match executor.dedup(tx, &mut job, received).await? {
                None => {
                    tx.enqueue(executor.queue, &job).await?;
                }
                Some(why) => {
                    tracing::info!(plugin = %job.plugin, "{why}");
                    tx.set_aside(executor.queue, &job, JobStatus::Suppressed, &why)
                        .await?;
                    if let Some(incident) = &job.incident_id {
                        let entry = TimelineEntry {
                            at: now_ms(),
                            kind: "notification".into(),
                            from_status: None,
                            to_status: None,
                            cause: format!("notification via {} {why}", job.plugin),
                            event_id: event.id.clone(),
                            ref_id: Some(job.id.clone()),
                        };
                        tx.timeline(incident, &entry).await?;
                    }
                }
            }
        }
        Some(job) => match executor.refusal(tx, &job).await? {
            None => {
                tx.enqueue(executor.queue, &job).await?;
            }
            Some(error) => {
                tracing::warn!(plugin = %job.plugin, target = %job.target, "{error}");
                tx.set_aside(executor.queue, &job, JobStatus::Refused, &error)
                    .await?;
                if let Payload::Action(data) = &received.payload {
                    let mut data = data.clone();
                    data.error = Some(types::PluginError::Permanent(error));
                    let source = format!("eventpulse/action/{}", job.plugin);
                    let failed = derive(
                        event,
                        ACTION_FAILED,
                        &source,
                        event.correlation.clone(),
                        &data,
                    );
                    tx.append(&failed).await?;
                }
            }
        },
        None => {
            tx.dead_letter(consumer, event, "not a request for this queue", 0)
                .await?;
        }
    }
    Ok(())
}

impl Stage for ActionIntake {
    const NAME: &'static str = "actions";
    const KINDS: &'static [&'static str] = &[ACTION_REQUESTED];

    async fn handle(&self, events: &[Received]) -> Result<(), store::Error> {
        intake(&self.0, Self::NAME, events, action_job).await
    }
}

/// The job an `action.requested` asks for.
fn action_job(received: &Received) -> Option<Job> {
    let (Payload::Action(d), event) = (&received.payload, &received.event) else {
        return None;
    };
    Some(Job {
        id: event
            .correlation
            .action_id
            .clone()
            .unwrap_or_else(|| event.id.clone()),
        incident_id: event.correlation.incident_id.clone(),
        rule: d.rule.clone(),
        plugin: d.request.action.clone(),
        target: d.request.target.clone(),
        status: JobStatus::Pending,
        attempts: 0,
        next_attempt_at: 0,
        last_error: None,
        result: None,
        request: serde_json::to_string(event).expect("event serialises"),
    })
}

impl Stage for NotificationIntake {
    const NAME: &'static str = "notifications";
    const KINDS: &'static [&'static str] = &[NOTIFICATION_REQUESTED];

    async fn handle(&self, events: &[Received]) -> Result<(), store::Error> {
        intake(&self.0, Self::NAME, events, notification_job).await
    }
}

/// The job a `notification.requested` asks for.
fn notification_job(received: &Received) -> Option<Job> {
    let (Payload::Notification(d), event) = (&received.payload, &received.event) else {
        return None;
    };
    Some(Job {
        id: d.notification_id.clone(),
        incident_id: event.correlation.incident_id.clone(),
        rule: d.rule.clone(),
        plugin: d.request.channel.clone(),
        target: d
            .request
            .dedup_key
            .clone()
            .unwrap_or_else(|| d.request.title.clone()),
        status: JobStatus::Pending,
        attempts: 0,
        next_attempt_at: 0,
        last_error: None,
        result: None,
        request: serde_json::to_string(event).expect("event serialises"),
    })
}

/// The job a dead letter of the action or notification stage is about:
/// its queue and id (taken from the requesting event in the letter).
pub fn dead_letter_job(consumer: &str, payload: &str) -> Option<(Queue, String)> {
    let received = Received::parse(payload).ok()?;
    match (consumer, received.payload) {
        (ActionIntake::NAME, Payload::Action(_)) => {
            Some((Queue::Actions, received.event.correlation.action_id?))
        }
        (NotificationIntake::NAME, Payload::Notification(d)) => {
            Some((Queue::Notifications, d.notification_id))
        }
        _ => None,
    }
}
