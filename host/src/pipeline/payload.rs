//! What each event kind carries in `data`, and the one place it is parsed:
//! an event enters a stage (or a work queue's attempt) as a [`Received`],
//! its envelope, kind and payload read once. An event that cannot be read
//! is dead-lettered by the stage runner, the same way for every stage.

use serde::{Deserialize, Serialize};

use crate::model::{self, EventKind, UnknownKind};
use crate::runtime::types;

/// `data` of `action.requested`, `action.completed` and `action.failed`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActionData {
    /// The rule that asked (it hears the outcome).
    pub rule: String,
    /// What it asked for.
    pub request: types::ActionRequest,
    /// On `action.completed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<types::ActionResult>,
    /// On `action.failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<types::PluginError>,
    /// Attempts made (outcomes only).
    #[serde(default)]
    pub attempts: u32,
    /// The rule asked that the alert resolve within this many seconds of
    /// the action completing (see `pipeline::rules`, verification).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_secs: Option<u64>,
    /// The rule asked that it wait for approval (see `pipeline::approvals`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approval: bool,
}

/// The reserved signal a rule adds to a decision to have one of its
/// actions verified: data `{"action", "target", "within_secs"}`.
pub const VERIFY_SIGNAL: &str = "eventpulse.verify";
/// Timer keys the host sets to verify an action (`<prefix><action id>`);
/// the rule hears the ones that failed.
pub const VERIFY_TIMER: &str = "eventpulse.verify:";

/// The reserved signal a rule adds to a decision to have one of its
/// actions wait for approval: data `{"action", "target"}`.
pub const APPROVAL_SIGNAL: &str = "eventpulse.approval";

/// Which action an approval signal is about.
#[derive(Debug, Clone, Deserialize)]
pub struct ApprovalAsk {
    /// The action plugin.
    pub action: String,
    /// Its target.
    pub target: String,
}

/// What a verify signal asks.
#[derive(Debug, Clone, Deserialize)]
pub struct VerifyAsk {
    /// The action plugin.
    pub action: String,
    /// Its target.
    pub target: String,
    /// Seconds after completion.
    pub within_secs: u64,
}

/// `data` of a verification timer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyData {
    /// The action's id.
    pub action_id: String,
    /// The action plugin.
    pub action: String,
    /// Its target.
    pub target: String,
    /// The seconds it had.
    pub within_secs: u64,
}

/// `data` of `notification.requested`, `.delivered` and `.failed`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotificationData {
    /// The rule that asked.
    pub rule: String,
    /// The notification's id.
    pub notification_id: String,
    /// What to send.
    pub request: types::NotificationRequest,
    /// On `notification.delivered`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<types::Delivery>,
    /// On `notification.failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Attempts made (outcomes only).
    #[serde(default)]
    pub attempts: u32,
}

/// `data` of `signal.emitted`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignalData {
    /// The rule that emitted it.
    pub rule: String,
    /// The signal.
    pub signal: types::Signal,
}

/// `data` of `timer.fired`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TimerData {
    /// The rule that set it (the only one called).
    pub rule: String,
    /// The rule's key.
    pub key: String,
    /// What it set it with.
    pub data: String,
}

/// An event's payload, by kind.
#[derive(Debug, Clone)]
pub enum Payload {
    /// `alert.raised`: the alert is in the envelope.
    Alert,
    /// `event.received`: `data` is the sender's own JSON, for rules to read.
    Received,
    /// `incident.opened` / `incident.updated`: an announcement no stage of
    /// this process consumes.
    Incident,
    /// `action.*`.
    Action(ActionData),
    /// `notification.*`.
    Notification(NotificationData),
    /// `signal.emitted`.
    Signal(SignalData),
    /// `timer.fired`.
    Timer(TimerData),
}

/// Why an event cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum Unreadable {
    /// Not an event envelope at all.
    #[error("not an event envelope: {0}")]
    Envelope(serde_json::Error),
    /// A kind this host does not know.
    #[error(transparent)]
    Kind(#[from] UnknownKind),
    /// The envelope is fine; its `data` is not what the kind carries.
    #[error("{kind} data unreadable: {error}")]
    Data {
        /// The kind.
        kind: EventKind,
        /// What is wrong with it.
        error: serde_json::Error,
    },
}

/// An event as a stage receives it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The envelope.
    pub event: model::Event,
    /// Its kind.
    pub kind: EventKind,
    /// Its `data`, read.
    pub payload: Payload,
}

impl Received {
    /// Read an envelope (JSON) and its payload.
    pub fn parse(json: &str) -> Result<Received, Unreadable> {
        let event = serde_json::from_str(json).map_err(Unreadable::Envelope)?;
        Received::read(event)
    }

    /// Read an envelope's payload.
    pub fn read(event: model::Event) -> Result<Received, Unreadable> {
        let kind = event.kind()?;
        let data = |error| Unreadable::Data { kind, error };
        let payload = match kind {
            EventKind::AlertRaised => Payload::Alert,
            EventKind::EventReceived => Payload::Received,
            EventKind::IncidentOpened | EventKind::IncidentUpdated => Payload::Incident,
            EventKind::ActionRequested | EventKind::ActionCompleted | EventKind::ActionFailed => {
                Payload::Action(serde_json::from_str(&event.data).map_err(data)?)
            }
            EventKind::NotificationRequested
            | EventKind::NotificationDelivered
            | EventKind::NotificationFailed => {
                Payload::Notification(serde_json::from_str(&event.data).map_err(data)?)
            }
            EventKind::SignalEmitted => {
                Payload::Signal(serde_json::from_str(&event.data).map_err(data)?)
            }
            EventKind::TimerFired => {
                Payload::Timer(serde_json::from_str(&event.data).map_err(data)?)
            }
        };
        Ok(Received {
            event,
            kind,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(kind: &str, data: &str) -> String {
        serde_json::json!({
            "id": "e", "kind": kind, "source": "s", "time": 1, "trace_id": "t", "key": "k",
            "correlation": {"alert_id": null, "incident_id": null, "action_id": null},
            "labels": [], "annotations": [], "alert": null, "data": data,
        })
        .to_string()
    }

    #[test]
    fn every_way_to_be_unreadable_is_named() {
        assert!(matches!(Received::parse("{"), Err(Unreadable::Envelope(_))));
        assert!(matches!(
            Received::parse(&envelope("alert.exploded", "{}")),
            Err(Unreadable::Kind(_))
        ));
        let e = Received::parse(&envelope("action.requested", "{}")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("action.requested data unreadable: missing field `rule`"),
            "{e}"
        );
        let r = Received::parse(&envelope("event.received", "not json, and that is fine")).unwrap();
        assert!(matches!(r.payload, Payload::Received));
    }
}
