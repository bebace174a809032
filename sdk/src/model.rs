//! The values plugins read (events, alerts, outcomes) and build (decisions,
//! requests). Plain Rust mirrors of `wit/types.wit`, with builders.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Event kind: an alert arrived or changed status.
pub const ALERT_RAISED: &str = "alert.raised";
/// Event kind: a timer this rule set came due (see [`crate::Rule::on_timer`]).
pub const TIMER_FIRED: &str = "timer.fired";
/// Event kind: an action was requested.
pub const ACTION_REQUESTED: &str = "action.requested";
/// Event kind: a notification was requested.
pub const NOTIFICATION_REQUESTED: &str = "notification.requested";
/// Event kind: a generic event arrived (CloudEvents, Kubernetes events);
/// its `type` label says which.
pub const EVENT_RECEIVED: &str = "event.received";

/// Milliseconds since the Unix epoch, UTC.
pub type Timestamp = u64;

/// How bad something is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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
    /// Parse the usual label spellings (`critical`, `page`, `warn`, ...).
    pub fn parse(s: &str) -> Option<Severity> {
        match s.to_ascii_lowercase().as_str() {
            "info" | "informational" | "none" => Some(Severity::Info),
            "warning" | "warn" => Some(Severity::Warning),
            "error" | "major" | "high" => Some(Severity::Error),
            "critical" | "page" | "fatal" => Some(Severity::Critical),
            _ => None,
        }
    }

    /// `info`, `warning`, `error` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }
}

/// Whether an alert is firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    /// The condition holds.
    Firing,
    /// The condition no longer holds.
    Resolved,
}

/// Where an incident is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IncidentStatus {
    /// Opened, nothing done yet.
    Open,
    /// Actions are running.
    Mitigating,
    /// Over, the problem is gone.
    Resolved,
    /// Over, mitigation failed.
    Failed,
}

/// Ordered key/value pairs: labels, annotations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Labels(pub Vec<(String, String)>);

impl Labels {
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Add or replace `key`.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// Whether every pair of `other` is present here.
    pub fn contains_all(&self, other: &Labels) -> bool {
        other.0.iter().all(|(k, v)| self.get(k) == Some(v.as_str()))
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Labels {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Labels(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

/// Ids that tie one alert's journey together.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Correlation {
    /// The alert that started it.
    pub alert_id: Option<String>,
    /// The incident it belongs to.
    pub incident_id: Option<String>,
    /// The action it is about.
    pub action_id: Option<String>,
}

/// An alert as the host normalised it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable identity of the alert series.
    pub fingerprint: String,
    /// The `alertname` label.
    pub name: String,
    /// Firing or resolved.
    pub status: AlertStatus,
    /// From the `severity` label, when it parses.
    pub severity: Option<Severity>,
    /// The alert's labels.
    pub labels: Labels,
    /// The alert's annotations.
    pub annotations: Labels,
    /// When it started firing.
    pub starts_at: Timestamp,
    /// When it resolved.
    pub ends_at: Option<Timestamp>,
    /// Link to the source expression.
    pub generator_url: Option<String>,
}

/// The envelope every event travels in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// UUIDv7.
    pub id: String,
    /// `alert.raised`, `action.failed`, ...
    pub kind: String,
    /// Who produced it.
    pub source: String,
    /// When it was produced.
    pub time: Timestamp,
    /// The trace it belongs to.
    pub trace_id: String,
    /// Partition key: the service or incident it is about.
    pub key: String,
    /// Alert, incident and action ids.
    pub correlation: Correlation,
    /// Event labels.
    pub labels: Labels,
    /// Event annotations.
    pub annotations: Labels,
    /// Set on `alert.raised`.
    pub alert: Option<Alert>,
    /// Kind-specific data, as JSON text.
    pub data: String,
}

impl Event {
    /// A label from the alert, falling back to the event's own labels.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.alert
            .as_ref()
            .and_then(|a| a.labels.get(key))
            .or_else(|| self.labels.get(key))
    }

    /// `data` parsed as JSON (`Null` when empty or malformed).
    pub fn data_json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }
}

/// What a rule wants done to the incident of the event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentDirective {
    /// Open one (or attach to the open one with the same dedup key).
    Open(IncidentOpen),
    /// Move the current incident to `status`.
    Transition {
        /// The new status.
        status: IncidentStatus,
        /// Why, for the timeline.
        note: String,
    },
}

/// An incident to open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentOpen {
    /// One line.
    pub title: String,
    /// The service it is about.
    pub service: String,
    /// How bad.
    pub severity: Severity,
    /// Open incidents with the same key are one incident.
    pub dedup_key: String,
    /// More words.
    pub summary: String,
}

/// A timer this rule set, as it fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    /// The key it was set with.
    pub key: String,
    /// The data it was set with.
    pub data: String,
}

/// An action whose verification failed: its alert was still firing
/// `within_secs` after it completed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedVerification {
    /// The action's id.
    pub action_id: String,
    /// The action plugin.
    pub action: String,
    /// Its target.
    pub target: String,
    /// How long the alert had to resolve.
    pub within_secs: u64,
}

impl Timer {
    /// Set by the host for [`Decision::verify`]: the action that did not
    /// resolve its alert in time.
    pub fn verification_failed(&self) -> Option<FailedVerification> {
        self.key
            .strip_prefix("eventpulse.verify:")
            .and_then(|_| serde_json::from_str(&self.data).ok())
    }
}

/// A runbook step a rule asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRequest {
    /// The action plugin, e.g. `action-docker-scale`.
    pub action: String,
    /// What it acts on, e.g. a service name.
    pub target: String,
    /// Parameters (a JSON object).
    pub params: Value,
    /// Why, for the timeline.
    pub reason: String,
}

impl ActionRequest {
    /// A request for `action` on `target` with no parameters.
    pub fn new(action: impl Into<String>, target: impl Into<String>) -> Self {
        ActionRequest {
            action: action.into(),
            target: target.into(),
            params: Value::Object(Default::default()),
            reason: String::new(),
        }
    }

    /// Set one parameter.
    pub fn param(mut self, key: &str, value: impl Into<Value>) -> Self {
        if let Value::Object(map) = &mut self.params {
            map.insert(key.to_owned(), value.into());
        }
        self
    }

    /// Say why.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = reason.into();
        self
    }
}

/// What an action reports back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionResult {
    /// One line.
    pub summary: String,
    /// Details (a JSON object).
    pub details: Value,
}

/// A finished action, handed back to the rule that asked for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionOutcome {
    /// The action's id.
    pub action_id: String,
    /// What was asked.
    pub request: ActionRequest,
    /// How it went.
    pub result: Result<ActionResult, Error>,
    /// How many attempts it took.
    pub attempts: u32,
}

impl ActionOutcome {
    /// The action never ran: refused by a rate limit, rejected by an
    /// approver, or its approval expired. Nothing changed, so there is
    /// nothing to compensate.
    pub fn never_ran(&self) -> bool {
        self.attempts == 0 && self.result.is_err()
    }
}

/// A notification a rule asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationRequest {
    /// The notifier plugin, e.g. `notifier-slack`.
    pub channel: String,
    /// How bad.
    pub severity: Severity,
    /// Title line.
    pub title: String,
    /// Body text.
    pub body: String,
    /// Same key inside the dedup window → one notification.
    pub dedup_key: Option<String>,
    /// Extra fields shown with the message.
    pub fields: Labels,
}

impl NotificationRequest {
    /// A notification on `channel`.
    pub fn new(
        channel: impl Into<String>,
        severity: Severity,
        title: impl Into<String>,
        body: impl Into<String>,
    ) -> Self {
        NotificationRequest {
            channel: channel.into(),
            severity,
            title: title.into(),
            body: body.into(),
            dedup_key: None,
            fields: Labels::default(),
        }
    }

    /// Set the dedup key.
    pub fn dedup_key(mut self, key: impl Into<String>) -> Self {
        self.dedup_key = Some(key.into());
        self
    }

    /// Add a field.
    pub fn field(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.fields.insert(key, value);
        self
    }
}

/// A delivered notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The id the remote side gave it.
    pub remote_id: Option<String>,
    /// One line.
    pub detail: String,
}

/// A named domain event, e.g. `MinimumNodesViolation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    /// The name.
    pub name: String,
    /// Details (JSON).
    pub data: Value,
}

/// Everything a rule decided about one event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// What happens to the incident.
    pub incident: Option<IncidentDirective>,
    /// Actions to run.
    pub actions: Vec<ActionRequest>,
    /// Notifications to send.
    pub notifications: Vec<NotificationRequest>,
    /// Named domain events to emit.
    pub signals: Vec<Signal>,
    /// Kept in the decisions log.
    pub note: Option<String>,
}

impl Decision {
    /// Nothing to do.
    pub fn none() -> Self {
        Decision::default()
    }

    /// Whether nothing is to be done.
    pub fn is_empty(&self) -> bool {
        self.incident.is_none()
            && self.actions.is_empty()
            && self.notifications.is_empty()
            && self.signals.is_empty()
    }

    /// Open an incident.
    pub fn open_incident(mut self, open: IncidentOpen) -> Self {
        self.incident = Some(IncidentDirective::Open(open));
        self
    }

    /// Move the incident to `status`.
    pub fn transition(mut self, status: IncidentStatus, note: impl Into<String>) -> Self {
        self.incident = Some(IncidentDirective::Transition {
            status,
            note: note.into(),
        });
        self
    }

    /// Request an action.
    pub fn action(mut self, request: ActionRequest) -> Self {
        self.actions.push(request);
        self
    }

    /// Request a notification.
    pub fn notify(mut self, request: NotificationRequest) -> Self {
        self.notifications.push(request);
        self
    }

    /// Ask the host to verify the requested action `action` on `target`:
    /// if its alert has not resolved `within_secs` after the action
    /// completed, the host records that on the incident, counts it against
    /// the (action, target) breaker and calls [`crate::Rule::on_timer`]
    /// with a timer whose [`Timer::verification_failed`] says which action
    /// did not work, for the rule to decide (escalate, compensate, ...).
    pub fn verify(self, action: &str, target: &str, within_secs: u64) -> Self {
        self.signal(
            "eventpulse.verify",
            serde_json::json!({ "action": action, "target": target, "within_secs": within_secs }),
        )
    }

    /// Ask the host to hold the requested action `action` on `target`
    /// until someone approves it (admin API, CLI or a signed link in the
    /// approval notice). Rejected or not approved in time, it never runs
    /// and the rule hears an `action.failed` whose
    /// [`ActionOutcome::never_ran`] is true.
    pub fn require_approval(self, action: &str, target: &str) -> Self {
        self.signal(
            "eventpulse.approval",
            serde_json::json!({ "action": action, "target": target }),
        )
    }

    /// Emit a named signal.
    pub fn signal(mut self, name: impl Into<String>, data: Value) -> Self {
        self.signals.push(Signal {
            name: name.into(),
            data,
        });
        self
    }

    /// Leave a note in the decisions log.
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }
}

/// Which events a plugin wants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// The event kind.
    pub event_kind: String,
    /// Labels that must all match.
    pub labels: Labels,
}

impl Subscription {
    /// Every event of `kind`.
    pub fn kind(kind: &str) -> Self {
        Subscription {
            event_kind: kind.to_owned(),
            labels: Labels::default(),
        }
    }

    /// Only events whose labels include `key=value`.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key, value);
        self
    }
}

/// How a plugin call failed: the host retries only [`Error::Retryable`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Error {
    /// Worth retrying later.
    Retryable(String),
    /// Retrying will not help.
    Permanent(String),
    /// Worth retrying, but not before `after_ms` (the remote side's
    /// `Retry-After`); the host waits at least that long.
    RetryAfter {
        /// What went wrong.
        message: String,
        /// Milliseconds to wait before the next attempt.
        after_ms: u64,
    },
}

impl Error {
    /// A permanent error.
    pub fn permanent(msg: impl Into<String>) -> Self {
        Error::Permanent(msg.into())
    }

    /// A retryable error.
    pub fn retryable(msg: impl Into<String>) -> Self {
        Error::Retryable(msg.into())
    }

    /// A retryable error the host must not retry before `after`.
    pub fn retry_after(msg: impl Into<String>, after: std::time::Duration) -> Self {
        Error::RetryAfter {
            message: msg.into(),
            after_ms: after.as_millis().min(u128::from(u64::MAX)) as u64,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Retryable(m) => write!(f, "retryable: {m}"),
            Error::Permanent(m) => write!(f, "permanent: {m}"),
            Error::RetryAfter { message, after_ms } => {
                write!(f, "retryable after {after_ms} ms: {message}")
            }
        }
    }
}

impl std::error::Error for Error {}
