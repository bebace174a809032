//! Events: the envelope every event travels in, and the closed set of
//! event kinds. The envelope's JSON is the outbox and Kafka wire format.

use serde::{Deserialize, Serialize};

/// Every kind of event (one topic each in a Kafka deployment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// An alert was ingested (new, or its status changed).
    AlertRaised,
    /// A generic event posted to `/api/v1/events` (or a Kubernetes Warning).
    EventReceived,
    /// A rule opened an incident.
    IncidentOpened,
    /// An incident changed (status, attached alert).
    IncidentUpdated,
    /// A rule asked for an action.
    ActionRequested,
    /// An action finished.
    ActionCompleted,
    /// An action failed for good.
    ActionFailed,
    /// A rule asked for a notification.
    NotificationRequested,
    /// A notifier delivered.
    NotificationDelivered,
    /// A notification failed for good.
    NotificationFailed,
    /// A rule emitted a named domain event.
    SignalEmitted,
    /// A timer a rule set came due.
    TimerFired,
}

/// A kind name that is not one of [`EventKind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKind(pub String);

impl std::fmt::Display for UnknownKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown event kind `{}`", self.0)
    }
}

impl std::error::Error for UnknownKind {}

impl EventKind {
    /// Every kind.
    pub const ALL: [EventKind; 12] = [
        EventKind::AlertRaised,
        EventKind::EventReceived,
        EventKind::IncidentOpened,
        EventKind::IncidentUpdated,
        EventKind::ActionRequested,
        EventKind::ActionCompleted,
        EventKind::ActionFailed,
        EventKind::NotificationRequested,
        EventKind::NotificationDelivered,
        EventKind::NotificationFailed,
        EventKind::SignalEmitted,
        EventKind::TimerFired,
    ];

    /// The kind's name on the wire (`alert.raised`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::AlertRaised => "alert.raised",
            EventKind::EventReceived => "event.received",
            EventKind::IncidentOpened => "incident.opened",
            EventKind::IncidentUpdated => "incident.updated",
            EventKind::ActionRequested => "action.requested",
            EventKind::ActionCompleted => "action.completed",
            EventKind::ActionFailed => "action.failed",
            EventKind::NotificationRequested => "notification.requested",
            EventKind::NotificationDelivered => "notification.delivered",
            EventKind::NotificationFailed => "notification.failed",
            EventKind::SignalEmitted => "signal.emitted",
            EventKind::TimerFired => "timer.fired",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Result<EventKind, UnknownKind> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == name)
            .ok_or_else(|| UnknownKind(name.to_owned()))
    }

    /// The family it belongs to, as the incident timeline names it
    /// (`action`, `notification`, ...).
    pub fn family(self) -> &'static str {
        let name = self.as_str();
        &name[..name.find('.').unwrap_or(name.len())]
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How severe an alert or incident is.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub enum Severity {
    /// For the record.
    Info,
    /// Look at it soon.
    Warning,
    /// Something is broken.
    Error,
    /// Wake someone up.
    Critical,
}

impl Severity {
    /// Lower-case name, as stored and shown.
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }

    /// From the stored name.
    pub fn parse(name: &str) -> Option<Severity> {
        [
            Severity::Info,
            Severity::Warning,
            Severity::Error,
            Severity::Critical,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

/// Compared with its name (`severity == "critical"`), as tests and scripts read it.
impl PartialEq<&str> for Severity {
    fn eq(&self, name: &&str) -> bool {
        self.as_str() == *name
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an alert is firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum AlertStatus {
    /// Firing.
    Firing,
    /// Resolved.
    Resolved,
}

impl AlertStatus {
    /// Lower-case name, as stored.
    pub const fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// Ids that tie one alert's journey together.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Correlation {
    /// `fingerprint:startsAt` of the alert.
    pub alert_id: Option<String>,
    /// The incident.
    pub incident_id: Option<String>,
    /// The action.
    pub action_id: Option<String>,
}

/// An alert as the host normalised it (Alertmanager, generic events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Alert {
    /// Stable identity of the alert series (Alertmanager's fingerprint).
    pub fingerprint: String,
    /// The `alertname` label.
    pub name: String,
    /// Firing or resolved.
    pub status: AlertStatus,
    /// From the `severity` label, if it names one.
    pub severity: Option<Severity>,
    /// Its labels, in order.
    pub labels: Vec<(String, String)>,
    /// Its annotations, in order.
    pub annotations: Vec<(String, String)>,
    /// When it started (ms since epoch).
    pub starts_at: u64,
    /// When it ended, if it has.
    pub ends_at: Option<u64>,
    /// Where it came from.
    pub generator_url: Option<String>,
}

/// The envelope every event travels in (CloudEvents names where they fit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    /// UUIDv7.
    pub id: String,
    /// The kind's name (see [`EventKind`]); [`Event::kind`] parses it.
    pub kind: String,
    /// Who produced it (`eventpulse/rule/<name>`, ...).
    pub source: String,
    /// When (ms since epoch).
    pub time: u64,
    /// The trace the event belongs to (W3C trace id, 32 hex).
    pub trace_id: String,
    /// The span that appended it (W3C span id, 16 hex); empty when traces
    /// are not exported.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub span_id: String,
    /// Partition key: the service or incident the event is about.
    pub key: String,
    /// Correlation ids.
    pub correlation: Correlation,
    /// Labels (of the alert, or of the generic event).
    pub labels: Vec<(String, String)>,
    /// Annotations.
    pub annotations: Vec<(String, String)>,
    /// Set when the kind is `alert.raised`.
    pub alert: Option<Alert>,
    /// The kind's payload, JSON.
    pub data: String,
}

impl Event {
    /// Its kind, if it is one the host knows.
    pub fn kind(&self) -> Result<EventKind, UnknownKind> {
        EventKind::parse(&self.kind)
    }

    /// A new event caused by this one: same trace, key, labels and alert.
    pub fn caused(
        &self,
        id: String,
        kind: EventKind,
        source: &str,
        time: u64,
        correlation: Correlation,
        data: String,
    ) -> Event {
        Event {
            id,
            kind: kind.as_str().to_owned(),
            source: source.to_owned(),
            time,
            trace_id: self.trace_id.clone(),
            span_id: self.span_id.clone(),
            key: self.key.clone(),
            correlation,
            labels: self.labels.clone(),
            annotations: self.annotations.clone(),
            alert: self.alert.clone(),
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_by_name() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Ok(k));
        }
        assert!(EventKind::parse("alert.exploded").is_err());
        assert_eq!(EventKind::ActionFailed.family(), "action");
    }

    #[test]
    fn severities_round_trip_by_name() {
        for s in [
            Severity::Info,
            Severity::Warning,
            Severity::Error,
            Severity::Critical,
        ] {
            assert_eq!(Severity::parse(s.as_str()), Some(s));
        }
        assert_eq!(Severity::parse("loud"), None);
    }
}
