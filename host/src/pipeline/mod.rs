//! The stages an alert travels through after ingest, each an inbox
//! consumer of the transport:
//!
//! - [`rules`] consumes `alert.raised`, `action.completed`, `action.failed` → rule
//!   plugins → decisions log, incident changes, `incident.opened`/`updated`,
//!   `action.requested`, `notification.requested`, `signal.emitted`.
//! - [`incidents`] puts outcomes (`action.*`, `notification.*`, `signal.emitted`)
//!   → the incident timeline.
//! - [`queue`] turns `action.requested` / `notification.requested` → the
//!   `actions` / `notifications` work queues ([`actions`]: rate limit and
//!   target breaker; [`notifications`]: dedup) → action and notifier
//!   plugins with per-attempt timeouts, backoff and dead letters →
//!   `action.completed`/`failed`, `notification.delivered`/`failed`.
//!
//! - [`timers`] fires the timers rules set, as `timer.fired` events the rule
//!   stage hands to the rule that set each one.
//! - [`approvals`] holds the actions that must be approved, takes rulings
//!   and expires the waits nobody ruled on.
//!
//! Every event enters a stage as a [`Received`] ([`payload`]): its payload
//! is parsed there, once. A stage takes a batch (what the transport has
//! ready, up to `pipeline.batch`) and commits the batch's effects, outbox
//! appends and inbox rows in one transaction, so a redelivered event is a
//! no-op; the transport's position is acknowledged after that commit.

pub mod actions;
pub mod approvals;
pub mod incidents;
pub mod kafka;
pub mod notifications;
pub mod payload;
pub mod queue;
pub mod rules;
pub mod silences;
pub mod timers;
pub mod transport;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::PipelineConfig;
use crate::model;
use crate::registry::Registry;
use crate::store::{self, Store};
use crate::telemetry::Metrics;
use actions::Actions;
use notifications::Notifications;
use queue::{Executor, Intake, Work};
use transport::{Subscription, Transport};

/// Event kind names, as stages subscribe to them (the kinds themselves
/// are [`model::EventKind`]).
pub mod kinds {
    use crate::model::EventKind;

    /// An alert was ingested (new, or its status changed).
    pub const ALERT_RAISED: &str = EventKind::AlertRaised.as_str();
    /// A rule opened an incident.
    pub const INCIDENT_OPENED: &str = EventKind::IncidentOpened.as_str();
    /// An incident changed (status, attached alert).
    pub const INCIDENT_UPDATED: &str = EventKind::IncidentUpdated.as_str();
    /// A rule asked for an action.
    pub const ACTION_REQUESTED: &str = EventKind::ActionRequested.as_str();
    /// An action finished.
    pub const ACTION_COMPLETED: &str = EventKind::ActionCompleted.as_str();
    /// An action failed for good.
    pub const ACTION_FAILED: &str = EventKind::ActionFailed.as_str();
    /// A rule asked for a notification.
    pub const NOTIFICATION_REQUESTED: &str = EventKind::NotificationRequested.as_str();
    /// A notifier delivered.
    pub const NOTIFICATION_DELIVERED: &str = EventKind::NotificationDelivered.as_str();
    /// A notification failed for good.
    pub const NOTIFICATION_FAILED: &str = EventKind::NotificationFailed.as_str();
    /// A rule emitted a named domain event.
    pub const SIGNAL_EMITTED: &str = EventKind::SignalEmitted.as_str();
    /// A generic event posted to `/api/v1/events`.
    pub const EVENT_RECEIVED: &str = EventKind::EventReceived.as_str();
    /// A rule's timer came due.
    pub const TIMER_FIRED: &str = EventKind::TimerFired.as_str();

    /// Every kind.
    pub const ALL: &[&str] = &[
        ALERT_RAISED,
        INCIDENT_OPENED,
        INCIDENT_UPDATED,
        ACTION_REQUESTED,
        ACTION_COMPLETED,
        ACTION_FAILED,
        NOTIFICATION_REQUESTED,
        NOTIFICATION_DELIVERED,
        NOTIFICATION_FAILED,
        SIGNAL_EMITTED,
        EVENT_RECEIVED,
        TIMER_FIRED,
    ];
}

/// Every stage's consumer name (inbox rows, embedded offsets, dead letters).
pub const CONSUMERS: &[&str] = &[
    <rules::RuleStage as Stage>::NAME,
    <incidents::IncidentStage as Stage>::NAME,
    Actions::CONSUMER,
    Notifications::CONSUMER,
];

pub use payload::{
    ActionData, NotificationData, Payload, Received, SignalData, TimerData, Unreadable,
};

/// A new event caused by `parent`: same trace, key, labels and alert.
pub fn derive(
    parent: &model::Event,
    kind: &str,
    source: &str,
    correlation: model::Correlation,
    data: &impl Serialize,
) -> model::Event {
    model::Event {
        id: uuid::Uuid::now_v7().to_string(),
        kind: kind.to_owned(),
        source: source.to_owned(),
        time: store::now_ms() as u64,
        trace_id: parent.trace_id.clone(),
        span_id: Some(crate::telemetry::trace::current_span_id())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| parent.span_id.clone()),
        key: parent.key.clone(),
        correlation,
        labels: parent.labels.clone(),
        annotations: parent.annotations.clone(),
        alert: parent.alert.clone(),
        data: serde_json::to_string(data).expect("event data serialises"),
    }
}

/// The span every piece of work on an event runs in: correlation ids are
/// on every log line, and the span is in the event's trace, a child of the
/// span that appended it.
pub fn event_span(stage: &'static str, event: &model::Event) -> tracing::Span {
    let c = &event.correlation;
    let span = tracing::info_span!(
        "event",
        otel.name = format!("{stage} {}", event.kind),
        stage,
        event.kind = %event.kind,
        event.id = %event.id,
        trace_id = %event.trace_id,
        alert_id = c.alert_id.as_deref().unwrap_or(""),
        incident_id = c.incident_id.as_deref().unwrap_or(""),
        action_id = c.action_id.as_deref().unwrap_or(""),
    );
    crate::telemetry::trace::follow(&span, event);
    span
}

/// Delays between retries of store operations: 50 ms doubling to 5 s,
/// jittered, forever (a stage never drops an event because the database
/// is down; it waits for it).
fn store_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}

/// An inbox consumer.
pub trait Stage: Send + Sync + 'static {
    /// Consumer name: inbox rows and transport offsets are kept under it.
    const NAME: &'static str;
    /// Event kinds it consumes.
    const KINDS: &'static [&'static str];

    /// Process `events`, in log order: their effects, appends and inbox
    /// rows in one transaction. An error means nothing was committed; the
    /// events will be handed over again (alone, if the error was in the
    /// data rather than the database).
    fn handle(&self, events: &[Received]) -> impl Future<Output = Result<(), store::Error>> + Send;
}

/// Feed `stage` from `transport` until `cancel` fires, a batch (what the
/// transport has ready, up to `pipeline.batch`) per transaction. A payload
/// that is not an event is dead-lettered; `handle_batch` says what happens
/// when a batch fails.
pub async fn run_stage<S: Stage>(
    stage: Arc<S>,
    store: Store,
    transport: Arc<dyn Transport>,
    attempts: u32,
    metrics: Metrics,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let ctx = StageContext {
        store: &store,
        metrics: &metrics,
        attempts: attempts.max(1),
        cancel: &cancel,
    };
    let mut sub: Box<dyn Subscription> = transport.subscribe(S::NAME, S::KINDS)?;
    let mut wait = store_backoff();
    tracing::info!(stage = S::NAME, kinds = ?S::KINDS, "stage started");
    loop {
        let batch = match sub.next(&cancel).await {
            Ok(b) if b.is_empty() => return Ok(()),
            Ok(b) => {
                wait = store_backoff();
                b
            }
            Err(e) => {
                tracing::warn!(
                    stage = S::NAME,
                    error = format!("{e:#}"),
                    "reading the log failed; retrying"
                );
                if sleep_or_cancel(wait.next(), &cancel).await {
                    return Ok(());
                }
                continue;
            }
        };
        let mut events = Vec::with_capacity(batch.len());
        let mut ids = std::collections::HashSet::with_capacity(batch.len());
        for d in &batch {
            match Received::parse(&d.payload) {
                // A redelivered copy inside one batch is handled once.
                Ok(r) if !ids.insert(r.event.id.clone()) => {}
                Ok(r) => events.push(r),
                Err(e) => poison(&ctx, S::NAME, d, &e).await,
            }
        }
        if !handle_batch(&*stage, &ctx, &events).await {
            return Ok(());
        }
        let last = batch.last().expect("batch is not empty").position;
        if let Err(e) = sub.ack(last).await {
            // Harmless: the next ack covers it; a restart redelivers and the
            // inbox skips what was done.
            tracing::warn!(
                stage = S::NAME,
                error = format!("{e:#}"),
                "could not record the log position"
            );
        }
    }
}

/// What a stage's batches are handled with.
struct StageContext<'a> {
    store: &'a Store,
    metrics: &'a Metrics,
    /// Failures caused by an event's data before it is dead-lettered.
    attempts: u32,
    cancel: &'a CancellationToken,
}

impl StageContext<'_> {
    /// `events` were committed by stage `S` in `started.elapsed()`.
    fn committed<S: Stage>(&self, events: &[Received], started: std::time::Instant) {
        self.metrics
            .stage_batch(S::NAME, events.len(), started.elapsed().as_secs_f64());
        let now = store::now_ms();
        for r in events {
            let delay = (now - r.event.time as i64) as f64 / 1000.0;
            self.metrics.stage_event(S::NAME, &r.event.kind, delay);
        }
    }
}

/// Commit `events` in one transaction. While the database fails, the
/// batch is retried with backoff (nothing is dropped because the store is
/// down). If the batch fails on its data (a constraint one event
/// violates), its events are handled one by one, so the others commit and
/// the one at fault is retried alone and then dead-lettered. `false` if
/// `cancel` fired first.
async fn handle_batch<S: Stage>(stage: &S, ctx: &StageContext<'_>, events: &[Received]) -> bool {
    if events.len() > 1 {
        let span = tracing::info_span!("batch", stage = S::NAME, events = events.len());
        let mut wait = store_backoff();
        loop {
            let started = std::time::Instant::now();
            match stage.handle(events).instrument(span.clone()).await {
                Ok(()) => {
                    ctx.committed::<S>(events, started);
                    return true;
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(parent: &span, error = %e, "stage transaction failed; retrying the batch");
                    ctx.metrics.stage_retry(S::NAME, "store");
                    if sleep_or_cancel(wait.next(), ctx.cancel).await {
                        return false;
                    }
                }
                Err(e) => {
                    tracing::warn!(parent: &span, error = %e, "batch failed on its data; handling its events one by one");
                    ctx.metrics.stage_retry(S::NAME, "data");
                    break;
                }
            }
        }
    }
    for event in events {
        if !handle_alone(stage, ctx, event).await {
            return false;
        }
    }
    true
}

/// One event in its own transaction, retried with backoff; dead-lettered
/// (with its inbox row, so it is not handled again) after `attempts`
/// failures caused by its data.
async fn handle_alone<S: Stage>(stage: &S, ctx: &StageContext<'_>, received: &Received) -> bool {
    let event = &received.event;
    let span = event_span(S::NAME, event);
    let mut wait = store_backoff();
    let mut failures = 0;
    loop {
        let started = std::time::Instant::now();
        let one = std::slice::from_ref(received);
        // Not instrumented: the stage opens the event's own span inside.
        let error = match stage.handle(one).await {
            Ok(()) => {
                ctx.committed::<S>(one, started);
                return true;
            }
            Err(e) => e,
        };
        if !error.is_transient() {
            failures += 1;
            if failures >= ctx.attempts {
                tracing::error!(parent: &span, error = %error, failures, "event dead-lettered");
                let why = format!("gave up after {failures} attempts: {error}");
                ctx.metrics.dead_letter(S::NAME);
                return dead_letter_event(ctx.store, S::NAME, event, &why, failures, ctx.cancel)
                    .await;
            }
        }
        tracing::warn!(parent: &span, error = %error, failures, "stage transaction failed; retrying the event");
        let reason = if error.is_transient() {
            "store"
        } else {
            "data"
        };
        ctx.metrics.stage_retry(S::NAME, reason);
        if sleep_or_cancel(wait.next(), ctx.cancel).await {
            return false;
        }
    }
}

/// Park an event a stage gave up on, marking it processed for `consumer`.
async fn dead_letter_event(
    store: &Store,
    consumer: &str,
    event: &model::Event,
    why: &str,
    attempts: u32,
    cancel: &CancellationToken,
) -> bool {
    let mut wait = store_backoff();
    loop {
        let parked = async {
            let mut tx = store.begin(store::Holder::DeadLetters).await?;
            if tx.inbox(consumer, &event.id).await? {
                tx.dead_letter(consumer, event, why, i64::from(attempts))
                    .await?;
            }
            tx.commit().await
        };
        match parked.await {
            Ok(()) => return true,
            Err(e) => {
                tracing::warn!(stage = consumer, error = %e, "could not dead-letter; retrying")
            }
        }
        if sleep_or_cancel(wait.next(), cancel).await {
            return false;
        }
    }
}

/// Park what `consumer` cannot read, ever: not an envelope (kept under
/// its log position, kind `unreadable`), an unknown kind, or data its kind
/// does not carry (kept under its id and kind, and marked processed).
async fn poison(
    ctx: &StageContext<'_>,
    consumer: &str,
    d: &transport::Delivery,
    error: &Unreadable,
) {
    let (store, cancel) = (ctx.store, ctx.cancel);
    ctx.metrics.dead_letter(consumer);
    let error = error.to_string();
    tracing::error!(
        stage = consumer,
        position = d.position,
        error,
        "unreadable event dead-lettered"
    );
    let envelope = serde_json::from_str::<model::Event>(&d.payload).ok();
    let (id, kind) = match &envelope {
        Some(e) => (e.id.clone(), e.kind.clone()),
        None => (format!("position:{}", d.position), "unreadable".to_owned()),
    };
    let mut wait = store_backoff();
    loop {
        let parked = async {
            let mut tx = store.begin(store::Holder::DeadLetters).await?;
            if envelope.is_none() || tx.inbox(consumer, &id).await? {
                tx.dead_letter_raw(consumer, &id, &kind, &d.payload, &error, 1)
                    .await?;
            }
            tx.commit().await
        };
        match parked.await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(stage = consumer, error = %e, "could not dead-letter; retrying")
            }
        }
        if sleep_or_cancel(wait.next(), cancel).await {
            return;
        }
    }
}

/// Sleep for `delay` unless `cancel` fires first; `true` if it did.
async fn sleep_or_cancel(delay: Option<Duration>, cancel: &CancellationToken) -> bool {
    let delay = delay.unwrap_or(Duration::from_secs(5));
    tokio::select! {
        () = tokio::time::sleep(delay) => false,
        () = cancel.cancelled() => true,
    }
}

/// All the stages, wired to one store, registry and transport.
pub struct Pipeline {
    store: Store,
    registry: Arc<Registry>,
    config: PipelineConfig,
    transport: Arc<dyn Transport>,
    approvals: Arc<approvals::Approvals>,
}

impl Pipeline {
    /// Stages over `transport`.
    pub fn new(
        store: Store,
        registry: Arc<Registry>,
        config: PipelineConfig,
        transport: Arc<dyn Transport>,
        approvals: Arc<approvals::Approvals>,
    ) -> Self {
        Pipeline {
            store,
            registry,
            config,
            transport,
            approvals,
        }
    }

    /// Start every stage and work queue on `tasks`; they stop when `cancel`
    /// fires.
    pub fn spawn(
        &self,
        tasks: &mut JoinSet<anyhow::Result<&'static str>>,
        cancel: &CancellationToken,
    ) {
        let (store, registry, config) = (&self.store, &self.registry, &self.config);
        let work = Actions {
            approvals: self.approvals.clone(),
        };
        let actions = Arc::new(Executor::new(
            work,
            store.clone(),
            registry.clone(),
            config.clone(),
        ));
        let notifications = Arc::new(Executor::new(
            Notifications,
            store.clone(),
            registry.clone(),
            config.clone(),
        ));
        let rules = Arc::new(rules::RuleStage::new(
            self.store.clone(),
            self.registry.clone(),
            self.config.rule_attempts,
            !self.transport.is_embedded(),
        ));
        let incidents = Arc::new(incidents::IncidentStage::new(self.store.clone()));
        let action_intake = Arc::new(Intake(actions.clone()));
        let notification_intake = Arc::new(Intake(notifications.clone()));

        macro_rules! stage {
            ($stage:expr, $name:expr) => {{
                let (t, c, st) = (self.transport.clone(), cancel.clone(), self.store.clone());
                let (s, n) = ($stage, self.config.event_attempts);
                let m = self.registry.metrics().clone();
                tasks.spawn(async move { run_stage(s, st, t, n, m, c).await.map(|()| $name) });
            }};
        }
        stage!(rules, "rule stage");
        stage!(incidents, "incident stage");
        stage!(action_intake, "action stage");
        stage!(notification_intake, "notification stage");
        let c = cancel.clone();
        tasks.spawn(async move { actions.run(c).await.map(|()| Actions::NAME) });
        let c = cancel.clone();
        tasks.spawn(async move { notifications.run(c).await.map(|()| Notifications::NAME) });
        let (st, registry, c) = (self.store.clone(), self.registry.clone(), cancel.clone());
        tasks.spawn(async move { timers::run(st, registry, c).await.map(|()| "timer task") });
        let (st, m, c) = (
            self.store.clone(),
            self.registry.metrics().clone(),
            cancel.clone(),
        );
        tasks.spawn(async move { approvals::run(st, m, c).await.map(|()| "approval expiry") });
    }
}
