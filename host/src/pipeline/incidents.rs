//! The incident lifecycle and the incident stage.
//!
//! ```text
//! open ──▶ mitigating ──▶ resolved
//!   │           └───────▶ failed
//!   └──▶ resolved | failed
//! ```
//!
//! `resolved` and `failed` are final; a later alert with the same dedup
//! key opens a new incident. Every transition is appended to
//! `incident_events` with its cause and the event that caused it, in the
//! same transaction as the change. Rules drive transitions (through the
//! rule stage); this stage records what happened to the incident's
//! actions, notifications and signals.

use std::collections::HashMap;

use serde::Serialize;

use super::kinds::*;
use super::{ActionData, NotificationData, Stage};
use crate::runtime::types;
use crate::store::{self, Incident, Store, TimelineEntry, Tx, now_ms};

/// Lower-case status name, as stored.
pub fn status_name(s: types::IncidentStatus) -> &'static str {
    match s {
        types::IncidentStatus::Open => "open",
        types::IncidentStatus::Mitigating => "mitigating",
        types::IncidentStatus::Resolved => "resolved",
        types::IncidentStatus::Failed => "failed",
    }
}

/// Whether the lifecycle allows `from → to`.
pub fn allowed(from: &str, to: &str) -> bool {
    matches!(
        (from, to),
        ("open", "mitigating" | "resolved" | "failed") | ("mitigating", "resolved" | "failed")
    )
}

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
    to: &str,
    cause: &str,
    event_id: &str,
) -> Result<bool, store::Error> {
    if !allowed(&incident.status, to) {
        return Ok(false);
    }
    let closed = matches!(to, "resolved" | "failed");
    if !tx
        .set_incident_status(&incident.id, &incident.status, to, closed)
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
            from_status: Some(incident.status.clone()),
            to_status: Some(to.to_owned()),
            cause: cause.to_owned(),
            event_id: event_id.to_owned(),
            ref_id: None,
        },
    )
    .await?;
    incident.status = to.to_owned();
    incident.updated_at = now;
    if closed {
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

    async fn handle(&self, events: &[types::Event]) -> Result<(), store::Error> {
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        let mut tx = self.store.begin().await?;
        let new = tx.inbox_many(Self::NAME, &ids).await?;
        let mut notified: HashMap<&str, i64> = HashMap::new();
        for event in events.iter().filter(|e| new.contains(&e.id)) {
            // Not about an incident: nothing to record beyond the inbox row.
            let Some(incident_id) = &event.correlation.incident_id else {
                continue;
            };
            let (cause, ref_id) = describe(event);
            let now = now_ms();
            let kind = event.kind.split('.').next().unwrap_or("event").to_owned();
            tx.timeline(
                incident_id,
                &TimelineEntry {
                    at: now,
                    kind,
                    from_status: None,
                    to_status: None,
                    cause,
                    event_id: event.id.clone(),
                    ref_id,
                },
            )
            .await?;
            if event.kind == NOTIFICATION_DELIVERED {
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
fn describe(event: &types::Event) -> (String, Option<String>) {
    let kind = event.kind.as_str();
    match kind {
        ACTION_COMPLETED | ACTION_FAILED => match serde_json::from_str::<ActionData>(&event.data) {
            Ok(d) => {
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
                            | types::PluginError::RetryAfter(types::RetryLater {
                                message: e, ..
                            }),
                        ),
                    ) => {
                        format!("action failed: {what} after {} attempt(s): {e}", d.attempts)
                    }
                    _ => format!("{kind}: {what}"),
                };
                (text, event.correlation.action_id.clone())
            }
            Err(e) => (format!("{kind} (unreadable data: {e})"), None),
        },
        NOTIFICATION_DELIVERED | NOTIFICATION_FAILED => {
            match serde_json::from_str::<NotificationData>(&event.data) {
                Ok(d) => {
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
                    (text, Some(d.notification_id))
                }
                Err(e) => (format!("{kind} (unreadable data: {e})"), None),
            }
        }
        SIGNAL_EMITTED => {
            let name = serde_json::from_str::<serde_json::Value>(&event.data)
                .ok()
                .and_then(|v| v["signal"]["name"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "signal".into());
            (format!("signal {name}"), None)
        }
        _ => (kind.to_owned(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle() {
        assert!(allowed("open", "mitigating"));
        assert!(allowed("open", "resolved"));
        assert!(allowed("mitigating", "failed"));
        assert!(!allowed("mitigating", "open"));
        assert!(!allowed("resolved", "open"));
        assert!(!allowed("failed", "resolved"));
        assert!(!allowed("open", "open"));
    }
}
