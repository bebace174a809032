//! Incidents and their lifecycle.
//!
//! ```text
//! open ──▶ mitigating ──▶ resolved
//!   │           └───────▶ failed
//!   └──▶ resolved | failed
//! ```
//!
//! `resolved` and `failed` are final; a later alert with the same dedup
//! key opens a new incident.

use serde::{Serialize, Serializer};

use super::Severity;

/// Where an incident is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IncidentStatus {
    /// Opened; nothing done yet.
    Open,
    /// Remediation requested.
    Mitigating,
    /// Over: it went away or was fixed.
    Resolved,
    /// Over: remediation failed.
    Failed,
}

impl IncidentStatus {
    /// The statuses an incident is active in (one per dedup key at a time).
    pub const ACTIVE: [IncidentStatus; 2] = [IncidentStatus::Open, IncidentStatus::Mitigating];

    /// Lower-case name, as stored and shown.
    pub const fn as_str(self) -> &'static str {
        match self {
            IncidentStatus::Open => "open",
            IncidentStatus::Mitigating => "mitigating",
            IncidentStatus::Resolved => "resolved",
            IncidentStatus::Failed => "failed",
        }
    }

    /// From the stored name.
    pub fn parse(name: &str) -> Option<IncidentStatus> {
        [
            IncidentStatus::Open,
            IncidentStatus::Mitigating,
            IncidentStatus::Resolved,
            IncidentStatus::Failed,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }

    /// Whether the lifecycle allows `self → to`.
    pub fn allows(self, to: IncidentStatus) -> bool {
        use IncidentStatus::*;
        matches!(
            (self, to),
            (Open, Mitigating | Resolved | Failed) | (Mitigating, Resolved | Failed)
        )
    }

    /// Final: nothing follows.
    pub fn is_closed(self) -> bool {
        matches!(self, IncidentStatus::Resolved | IncidentStatus::Failed)
    }
}

impl std::fmt::Display for IncidentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compared with its name (`status == "open"`), as tests and scripts read it.
impl PartialEq<&str> for IncidentStatus {
    fn eq(&self, name: &&str) -> bool {
        self.as_str() == *name
    }
}

fn severity_name<S: Serializer>(s: &Severity, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.as_str())
}

/// An incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Incident {
    /// UUIDv7.
    pub id: String,
    /// Incidents with the same key while active are one incident.
    pub dedup_key: String,
    /// One line.
    pub title: String,
    /// The affected service.
    pub service: String,
    /// How severe (shown lower-case).
    #[serde(serialize_with = "severity_name")]
    #[schema(value_type = String, example = "critical")]
    pub severity: Severity,
    /// Where it is in its lifecycle.
    pub status: IncidentStatus,
    /// Longer text.
    pub summary: String,
    /// The rule that opened it.
    pub rule: String,
    /// The trace of the event that opened it.
    pub trace_id: String,
    /// When it opened (ms).
    pub opened_at: i64,
    /// Last change (ms).
    pub updated_at: i64,
    /// When it reached `resolved` or `failed`.
    pub closed_at: Option<i64>,
    /// When a notification about it was last delivered.
    pub last_notified_at: Option<i64>,
    /// Who acknowledged it; cleared when its status next changes.
    pub acknowledged_by: Option<String>,
    /// When (ms).
    pub acknowledged_at: Option<i64>,
}

/// One line of an incident's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TimelineEntry {
    /// When (ms).
    pub at: i64,
    /// `opened`, `transition`, `alert`, `action`, `notification`, `signal`.
    pub kind: String,
    /// Status before (transitions).
    pub from_status: Option<IncidentStatus>,
    /// Status after (transitions, openings).
    pub to_status: Option<IncidentStatus>,
    /// What caused it.
    pub cause: String,
    /// The event that caused it.
    pub event_id: String,
    /// The alert, action or notification it is about.
    pub ref_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::IncidentStatus::*;
    use super::*;

    #[test]
    fn lifecycle() {
        assert!(Open.allows(Mitigating));
        assert!(Open.allows(Resolved));
        assert!(Mitigating.allows(Failed));
        assert!(!Mitigating.allows(Open));
        assert!(!Resolved.allows(Open));
        assert!(!Failed.allows(Resolved));
        assert!(!Open.allows(Open));
        assert!(Resolved.is_closed() && Failed.is_closed() && !Mitigating.is_closed());
        for s in [Open, Mitigating, Resolved, Failed] {
            assert_eq!(IncidentStatus::parse(s.as_str()), Some(s));
        }
    }
}
