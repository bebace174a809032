//! The notification queue: `notification.requested` → the `notifications`
//! table → notifier plugins. Admission applies deduplication: a request
//! repeating a dedup key that went out to the same notifier within
//! `pipeline.notification_dedup_secs` is suppressed and counted, in the
//! transaction that enqueues.

use std::time::Duration;

use super::kinds::*;
use super::queue::{Attempt, Executor, Work, deadline};
use super::{Payload, Received, derive};
use crate::model::{self, Job, JobStatus, TimelineEntry};
use crate::store::{self, Dedup, JobEnd, Queue, Tx, now_ms};

/// Notifications, as a queue's [`Work`].
pub struct Notifications;

impl Work for Notifications {
    const QUEUE: Queue = Queue::Notifications;
    const CONSUMER: &'static str = "notifications";
    const KINDS: &'static [&'static str] = &[NOTIFICATION_REQUESTED];
    const NAME: &'static str = "notification queue";

    fn job(received: &Received) -> Option<Job> {
        notification_job(received)
    }

    async fn prepare(
        executor: &Executor<Self>,
        tx: &mut Tx,
        jobs: &[(&Received, &Job)],
    ) -> Result<(), store::Error> {
        let requests: Vec<(&str, &str)> = jobs
            .iter()
            .filter_map(|(received, job)| match &received.payload {
                Payload::Notification(d) => d
                    .request
                    .dedup_key
                    .as_deref()
                    .map(|key| (job.plugin.as_str(), key)),
                _ => None,
            })
            .collect();
        if requests.len() < 2 {
            return Ok(());
        }
        let (now, ttl_ms) = dedup_window(executor);
        tx.decide_dedup(&requests, now, ttl_ms).await
    }

    async fn admit(
        executor: &Executor<Self>,
        tx: &mut Tx,
        received: &Received,
        mut job: Job,
    ) -> Result<(), store::Error> {
        let event = &received.event;
        match dedup(executor, tx, &mut job, received).await? {
            None => {
                tx.enqueue(Queue::Notifications, &job).await?;
            }
            Some(why) => {
                tracing::info!(plugin = %job.plugin, "{why}");
                executor
                    .registry
                    .metrics()
                    .notification_suppressed(&job.plugin);
                tx.set_aside(Queue::Notifications, &job, JobStatus::Suppressed, &why)
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
            Payload::Notification(d) => d.clone(),
            _ => return wrong_kind(),
        };
        data.attempts = attempts;
        let source = format!("eventpulse/notifier/{}", data.request.channel);
        let call = executor
            .registry
            .invoke_notifier(&data.request.channel, event, &data.request);
        match deadline(limit, call).await {
            Ok(pending) => {
                let d = pending.output;
                let result = serde_json::to_string(&d).expect("delivery serialises");
                data.delivery = Some(d);
                let end = JobEnd::Succeeded {
                    status: JobStatus::Delivered,
                    result,
                };
                let done = derive(
                    event,
                    NOTIFICATION_DELIVERED,
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
                (JobEnd::Failed { error }, _) => {
                    data.error = Some(error.clone());
                    let failed = Some(derive(
                        event,
                        NOTIFICATION_FAILED,
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

/// Notification deduplication, decided in the transaction that
/// enqueues: `Some(why)` if `job` repeats a dedup key that went out to
/// the same notifier within `pipeline.notification_dedup_secs`. A
/// request that goes out after some were held back carries their count
/// in the `suppressed` field (and the key's total in `dedup_seen`).
async fn dedup(
    executor: &Executor<Notifications>,
    tx: &mut Tx,
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
    let (now, ttl_ms) = dedup_window(executor);
    match tx
        .notification_dedup(&job.plugin, &key, now, ttl_ms)
        .await?
    {
        Dedup::Suppress { seen } => Ok(Some(format!(
            "suppressed: `{key}` went out less than {} s ago ({seen} requests so far)",
            executor.config.notification_dedup_secs
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

/// Now, and how long a dedup key holds back repeats (ms).
fn dedup_window(executor: &Executor<Notifications>) -> (i64, i64) {
    let ttl_ms = (executor.config.notification_dedup_secs * 1000) as i64;
    (executor.registry.clock().now_ms() as i64, ttl_ms)
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
