//! The action queue: `action.requested` → the `actions` table → action
//! plugins. Admission applies the action plugin's rate limit on its target
//! (`[safety] max_actions` per `window_secs`), counted in the transaction
//! that enqueues, then holds the actions that need approval
//! ([`super::approvals`]); an attempt goes through the per-(plugin,
//! target) circuit breaker.

use std::sync::Arc;
use std::time::Duration;

use super::approvals::Approvals;
use super::kinds::*;
use super::queue::{Attempt, Executor, Work, deadline};
use super::{Payload, Received, derive};
use crate::model::{Job, JobStatus};
use crate::runtime::manifest::Safety;
use crate::runtime::{self, BreakerState, types};
use crate::store::{self, JobEnd, Queue, Tx, now_ms};

/// Actions, as a queue's [`Work`].
pub struct Actions {
    /// Holds the actions that need approval.
    pub approvals: Arc<Approvals>,
}

impl Work for Actions {
    const QUEUE: Queue = Queue::Actions;
    const CONSUMER: &'static str = "actions";
    const KINDS: &'static [&'static str] = &[ACTION_REQUESTED];
    const NAME: &'static str = "action queue";

    fn job(received: &Received) -> Option<Job> {
        action_job(received)
    }

    async fn admit(
        executor: &Executor<Self>,
        tx: &mut Tx,
        received: &Received,
        job: Job,
    ) -> Result<(), store::Error> {
        let event = &received.event;
        // Read once per request: the rate limit and approval both use it.
        let safety = executor.registry.safety(&job.plugin).unwrap_or_default();
        let Some(error) = refusal(&safety, tx, &job).await? else {
            let approvals = &executor.work.approvals;
            if !approvals
                .hold(&executor.registry, &safety, tx, received, &job)
                .await?
            {
                tx.enqueue(Queue::Actions, &job).await?;
            }
            return Ok(());
        };
        tracing::warn!(plugin = %job.plugin, target = %job.target, "{error}");
        executor.registry.metrics().rate_limited(&job.plugin);
        tx.set_aside(Queue::Actions, &job, JobStatus::Refused, &error)
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
        Ok(())
    }

    async fn attempt(
        executor: &Executor<Self>,
        received: &Received,
        attempts: u32,
        limit: Duration,
    ) -> Attempt {
        let event = &received.event;
        let wrong_kind = || {
            let error = format!("a {} is not a request for this queue", received.kind);
            Attempt::ended(JobEnd::Failed { error }, None)
        };
        let mut data = match &received.payload {
            Payload::Action(d) => d.clone(),
            _ => return wrong_kind(),
        };
        data.attempts = attempts;
        let source = format!("eventpulse/action/{}", data.request.action);
        let (plugin, target) = (&data.request.action, &data.request.target);
        let breaker = executor.registry.target_breaker(plugin, target);
        let result = if breaker.permits() {
            let call = executor
                .registry
                .invoke_action(plugin, event, &data.request);
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
            Ok(pending) => {
                let r = pending.output;
                let details = serde_json::from_str(&r.details)
                    .unwrap_or_else(|_| serde_json::Value::String(r.details.clone()));
                let result = serde_json::json!({ "summary": r.summary, "details": details });
                data.result = Some(r);
                let end = JobEnd::Succeeded {
                    status: JobStatus::Completed,
                    result: result.to_string(),
                };
                let done = derive(
                    event,
                    ACTION_COMPLETED,
                    &source,
                    event.correlation.clone(),
                    &data,
                );
                Attempt {
                    end,
                    outcome: Some(done),
                    state: Some(pending.state),
                }
            }
            Err(e) => match executor.failure(&e, attempts) {
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
                    Attempt::ended(JobEnd::Failed { error }, failed)
                }
                (retry, _) => Attempt::ended(retry, None),
            },
        }
    }
}

/// Why `job` must not run, if the action plugin's rate limit on its
/// target is reached (`[safety] max_actions` per `window_secs`). Counted
/// in the transaction that enqueues.
async fn refusal(safety: &Safety, tx: &mut Tx, job: &Job) -> Result<Option<String>, store::Error> {
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
