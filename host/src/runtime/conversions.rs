//! The plugin contract's generated types (`types`, from `wit/`) and the
//! host's [`model`] meet here, and only here: the runtime converts the
//! event it is asked about into the contract's shape before a call, and
//! the statuses and severities a decision names back into the model's.

use super::types;
use crate::model;

impl From<model::Severity> for types::Severity {
    fn from(s: model::Severity) -> Self {
        match s {
            model::Severity::Info => types::Severity::Info,
            model::Severity::Warning => types::Severity::Warning,
            model::Severity::Error => types::Severity::Error,
            model::Severity::Critical => types::Severity::Critical,
        }
    }
}

impl From<types::Severity> for model::Severity {
    fn from(s: types::Severity) -> Self {
        match s {
            types::Severity::Info => model::Severity::Info,
            types::Severity::Warning => model::Severity::Warning,
            types::Severity::Error => model::Severity::Error,
            types::Severity::Critical => model::Severity::Critical,
        }
    }
}

impl From<types::IncidentStatus> for model::IncidentStatus {
    fn from(s: types::IncidentStatus) -> Self {
        match s {
            types::IncidentStatus::Open => model::IncidentStatus::Open,
            types::IncidentStatus::Mitigating => model::IncidentStatus::Mitigating,
            types::IncidentStatus::Resolved => model::IncidentStatus::Resolved,
            types::IncidentStatus::Failed => model::IncidentStatus::Failed,
        }
    }
}

impl From<&model::Alert> for types::Alert {
    fn from(a: &model::Alert) -> Self {
        types::Alert {
            fingerprint: a.fingerprint.clone(),
            name: a.name.clone(),
            status: match a.status {
                model::AlertStatus::Firing => types::AlertStatus::Firing,
                model::AlertStatus::Resolved => types::AlertStatus::Resolved,
            },
            severity: a.severity.map(Into::into),
            labels: a.labels.clone(),
            annotations: a.annotations.clone(),
            starts_at: a.starts_at,
            ends_at: a.ends_at,
            generator_url: a.generator_url.clone(),
        }
    }
}

impl From<&model::Event> for types::Event {
    fn from(e: &model::Event) -> Self {
        types::Event {
            id: e.id.clone(),
            kind: e.kind.clone(),
            source: e.source.clone(),
            time: e.time,
            trace_id: e.trace_id.clone(),
            key: e.key.clone(),
            correlation: types::Correlation {
                alert_id: e.correlation.alert_id.clone(),
                incident_id: e.correlation.incident_id.clone(),
                action_id: e.correlation.action_id.clone(),
            },
            labels: e.labels.clone(),
            annotations: e.annotations.clone(),
            alert: e.alert.as_ref().map(Into::into),
            data: e.data.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The outbox holds the model's JSON; the contract's types must read
    /// the same JSON (and the other way), so neither side can drift.
    #[test]
    fn the_model_and_the_contract_share_one_json_shape() {
        let event = model::Event {
            id: "e1".into(),
            kind: "alert.raised".into(),
            source: "s".into(),
            time: 7,
            trace_id: "t".into(),
            span_id: String::new(),
            key: "k".into(),
            correlation: model::Correlation {
                alert_id: Some("a".into()),
                incident_id: None,
                action_id: Some("x".into()),
            },
            labels: vec![("l".into(), "v".into())],
            annotations: vec![],
            alert: Some(model::Alert {
                fingerprint: "f".into(),
                name: "HighCPU".into(),
                status: model::AlertStatus::Resolved,
                severity: Some(model::Severity::Critical),
                labels: vec![],
                annotations: vec![("summary".into(), "hot".into())],
                starts_at: 1,
                ends_at: Some(2),
                generator_url: None,
            }),
            data: "{}".into(),
        };
        let json = serde_json::to_string(&event).unwrap();
        let contract: types::Event = serde_json::from_str(&json).unwrap();
        assert_eq!(contract, types::Event::from(&event));
        assert_eq!(serde_json::to_string(&contract).unwrap(), json);
    }
}
