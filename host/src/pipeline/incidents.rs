//! Incident transitions and the incident stage. The lifecycle itself is
//! [`IncidentStatus`]'s (in the model). Every transition is appended to
//! `incident_events` with its cause and the event that caused it, in the
//! same transaction as the change. Rules drive transitions (through the
//! rule stage); this stage records what happened to the incident's
//! actions, notifications and signals.

use std::collections::HashMap;

use serde::Serialize;
use tracing::Instrument as _;

use super::kinds::*;
use super::{Payload, Received, Stage};
use crate::model::{EventKind, Incident, IncidentStatus, TimelineEntry};
use crate::runtime::types;
use crate::store::{self, Store, Tx, now_ms};

/// `data` of `incident.opened` and `incident.updated`.
#[derive(Debug, Serialize)]
pub struct IncidentData<'a> {
    /// The incident after the change.
    pub incident: &'a Incident,
    /// What changed.
    pub change: String,
}

/// Move `incident` to `to` if the lifecycle allows it, recording the
/// transition; `false` (and nothing written) if it does not.
pub async fn transition(
    tx: &mut Tx,
    incident: &mut Incident,
    to: IncidentStatus,
    cause: &str,
    event_id: &str,
) -> Result<bool, store::Error> {
    if !incident.status.allows(to) {
        return Ok(false);
    }
    if !tx
        .set_incident_status(&incident.id, incident.status, to)
        .await?
    {
        return Ok(false);
    }
    let now = now_ms();
    tx.timeline(
        &incident.id,
        &TimelineEntry {
            at: now,
            kind: "transition".into(),
            from_status: Some(incident.status),
            to_status: Some(to),
            cause: cause.to_owned(),
            event_id: event_id.to_owned(),
            ref_id: None,
        },
    )
    .await?;
    incident.status = to;
    incident.updated_at = now;
    incident.acknowledged_by = None;
    incident.acknowledged_at = None;
    if to.is_closed() {
        incident.closed_at = Some(now);
    }
    Ok(true)
}

/// The incident stage: outcomes onto the timeline.
pub struct IncidentStage {
    store: Store,
}

impl IncidentStage {
    /// A stage writing to `store`.
    pub fn new(store: Store) -> Self {
        IncidentStage { store }
    }
}

impl Stage for IncidentStage {
    const NAME: &'static str = "incidents";
    const KINDS: &'static [&'static str] = &[
        ACTION_COMPLETED,
        ACTION_FAILED,
        NOTIFICATION_DELIVERED,
        NOTIFICATION_FAILED,
        SIGNAL_EMITTED,
    ];

    async fn handle(&self, events: &[Received]) -> Result<(), store::Error> {
        let ids: Vec<&str> = events.iter().map(|r| r.event.id.as_str()).collect();
        let mut tx = self.store.begin(store::Holder::Incidents).await?;
        let new = tx.inbox_many(Self::NAME, &ids).await?;
        let mut notified: HashMap<&str, i64> = HashMap::new();
        for received in events.iter().filter(|r| new.contains(&r.event.id)) {
            let event = &received.event;
            // Not about an incident: nothing to record beyond the inbox row.
            let Some(incident_id) = &event.correlation.incident_id else {
                continue;
            };
            let (cause, ref_id) = describe(received);
            let now = now_ms();
            let kind = received.kind.family().to_owned();
            let entry = TimelineEntry {
                at: now,
                kind,
                from_status: None,
                to_status: None,
                cause,
                event_id: event.id.clone(),
                ref_id,
            };
            tx.timeline(incident_id, &entry)
                .instrument(super::event_span(Self::NAME, event))
                .await?;
            if received.kind == EventKind::NotificationDelivered {
                notified.insert(incident_id, now);
            }
        }
        for (incident_id, at) in notified {
            tx.set_last_notified(incident_id, at).await?;
        }
        tx.commit().await
    }
}

/// Timeline text for an outcome event, and the id it is about.
fn describe(received: &Received) -> (String, Option<String>) {
    let (kind, event) = (received.kind, &received.event);
    match &received.payload {
        Payload::Action(d) => {
            let what = format!("{} on {}", d.request.action, d.request.target);
            let text = match (&d.result, &d.error) {
                (Some(r), _) => format!(
                    "action completed: {what} after {} attempt(s): {}",
                    d.attempts, r.summary
                ),
                (
                    _,
                    Some(
                        types::PluginError::Retryable(e)
                        | types::PluginError::Permanent(e)
                        | types::PluginError::RetryAfter(types::RetryLater { message: e, .. }),
                    ),
                ) => format!("action failed: {what} after {} attempt(s): {e}", d.attempts),
                _ => format!("{kind}: {what}"),
            };
            (text, event.correlation.action_id.clone())
        }
        Payload::Notification(d) => {
            let text = match (&d.delivery, &d.error) {
                (Some(dl), _) => format!(
                    "notification delivered via {}: {}",
                    d.request.channel, dl.detail
                ),
                (_, Some(e)) => format!(
                    "notification via {} failed after {} attempt(s): {e}",
                    d.request.channel, d.attempts
                ),
                _ => format!("{kind} via {}", d.request.channel),
            };
            (text, Some(d.notification_id.clone()))
        }
        Payload::Signal(d) => (format!("signal {}", d.signal.name), None),
        Payload::Timer(d) => (format!("timer {} of {} fired", d.key, d.rule), None),
        Payload::Alert | Payload::Received | Payload::Incident => (kind.to_string(), None),
    }
}
