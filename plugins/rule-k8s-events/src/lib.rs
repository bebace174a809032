//! `rule-k8s-events` (seed 003): Kubernetes Warning events → an incident
//! per dedup key, a severity by reason, and a notification enriched with
//! the involved object's state, sent to the channels routed for that
//! severity.
//!
//! - Severity by reason: Killing, BackOff → warning; Unhealthy,
//!   FailedScheduling, OOMKilled → critical; others `default_severity`
//!   (warning). Config `severity.<Reason> = "<severity>"` overrides.
//! - Enrichment through the `kube` capability: Pod → phase, restarts,
//!   ready, node and the owning Deployment (through its ReplicaSet); Node →
//!   ready, allocatable, conditions; Deployment/ReplicaSet → replicas. When
//!   the API fails the message still goes out, marked unenriched.
//! - Routing: [`Context::channels`] (`channels.<severity>`, else
//!   `channels`).
//! - Dedup: the notifications carry the event's dedup key; the host holds
//!   back repeats within its TTL and counts them.

use eventpulse_sdk::message::{Message, format_time};
use eventpulse_sdk::{
    CapabilityError, Context, Decision, EVENT_RECEIVED, Error, Event, IncidentOpen, Rule, Severity,
    Subscription,
};
use serde_json::Value;

/// The rule.
#[derive(Default)]
pub struct K8sEvents;

/// Built-in reasons: severity and what they mean.
const REASONS: &[(&str, Severity, &str)] = &[
    ("Killing", Severity::Warning, "Pod is being terminated"),
    ("BackOff", Severity::Warning, "Container restart backoff"),
    (
        "Unhealthy",
        Severity::Critical,
        "Container health check failed",
    ),
    (
        "FailedScheduling",
        Severity::Critical,
        "Pod cannot be scheduled",
    ),
    (
        "OOMKilled",
        Severity::Critical,
        "Container killed due to out of memory",
    ),
];

/// The severity and description for `reason`.
pub fn classify(reason: &str, cx: &Context<'_>) -> Result<(Severity, String), Error> {
    let builtin = REASONS.iter().find(|(r, _, _)| *r == reason);
    let description =
        builtin.map_or_else(|| "Warning event".to_owned(), |(_, _, d)| (*d).to_owned());
    let parse = |key: &str, v: String| {
        Severity::parse(&v)
            .ok_or_else(|| Error::permanent(format!("config `{key}`: `{v}` is not a severity")))
    };
    let key = format!("severity.{reason}");
    let severity = match (cx.config(&key), builtin) {
        (Some(v), _) => parse(&key, v)?,
        (None, Some((_, s, _))) => *s,
        (None, None) => match cx.config("default_severity") {
            Some(v) => parse("default_severity", v)?,
            None => Severity::Warning,
        },
    };
    Ok((severity, description))
}

/// What the involved object looks like now, as message sections.
struct Enrichment {
    sections: Vec<(String, Vec<(String, String)>)>,
    service: Option<String>,
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn owner<'a>(object: &'a Value, kind: &str) -> Option<&'a str> {
    object["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|o| o["kind"] == kind)?["name"]
        .as_str()
}

fn deployment_lines(d: &Value) -> Vec<(String, String)> {
    let desired = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let ready = d["status"]["readyReplicas"].as_i64().unwrap_or(0);
    vec![
        ("Name".into(), text(&d["metadata"]["name"])),
        ("Replicas".into(), format!("{ready}/{desired}")),
    ]
}

/// The Deployment owning ReplicaSet `rs` in `ns`, if any.
fn deployment_of_replicaset(
    cx: &Context<'_>,
    ns: &str,
    rs: &str,
) -> Result<Option<Value>, CapabilityError> {
    let rs = cx.kube_get("ReplicaSet", Some(ns), rs)?;
    match owner(&rs, "Deployment") {
        Some(name) => Ok(Some(cx.kube_get("Deployment", Some(ns), name)?)),
        None => Ok(None),
    }
}

fn enrich(
    cx: &Context<'_>,
    kind: &str,
    ns: &str,
    name: &str,
) -> Result<Enrichment, CapabilityError> {
    let mut e = Enrichment {
        sections: Vec::new(),
        service: None,
    };
    let related = |e: &mut Enrichment, d: Value| {
        e.service = d["metadata"]["name"].as_str().map(str::to_owned);
        e.sections
            .push(("Related Deployment".into(), deployment_lines(&d)));
    };
    match kind {
        "Pod" => {
            let pod = cx.kube_get("Pod", Some(ns), name)?;
            let statuses = pod["status"]["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let restarts: i64 = statuses
                .iter()
                .filter_map(|c| c["restartCount"].as_i64())
                .sum();
            let ready = statuses.iter().filter(|c| c["ready"] == true).count();
            e.sections.push((
                "Status".into(),
                vec![
                    ("Phase".into(), text(&pod["status"]["phase"])),
                    ("Restarts".into(), restarts.to_string()),
                    ("Ready".into(), format!("{ready}/{}", statuses.len())),
                    ("Node".into(), text(&pod["spec"]["nodeName"])),
                ],
            ));
            if let Some(rs) = owner(&pod, "ReplicaSet")
                && let Some(d) = deployment_of_replicaset(cx, ns, rs)?
            {
                related(&mut e, d);
            }
        }
        "Node" => {
            let node = cx.kube_get("Node", None, name)?;
            let conditions = node["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let ready = conditions
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            let troubled: Vec<String> = conditions
                .iter()
                .filter(|c| c["type"] != "Ready" && c["status"] == "True")
                .map(|c| text(&c["type"]))
                .collect();
            let alloc = &node["status"]["allocatable"];
            e.sections.push((
                "Node Status".into(),
                vec![
                    ("Ready".into(), ready.to_string()),
                    (
                        "Allocatable".into(),
                        format!(
                            "cpu {}, memory {}",
                            text(&alloc["cpu"]),
                            text(&alloc["memory"])
                        ),
                    ),
                    (
                        "Conditions".into(),
                        if troubled.is_empty() {
                            "none".into()
                        } else {
                            troubled.join(", ")
                        },
                    ),
                ],
            ));
        }
        "Deployment" => related(&mut e, cx.kube_get("Deployment", Some(ns), name)?),
        "ReplicaSet" => {
            if let Some(d) = deployment_of_replicaset(cx, ns, name)? {
                related(&mut e, d);
            }
        }
        _ => {}
    }
    Ok(e)
}

impl Rule for K8sEvents {
    fn description(&self) -> String {
        "Kubernetes Warning events → severity by reason, enriched notifications".into()
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        vec![Subscription::kind(EVENT_RECEIVED).label("type", "kubernetes.event")]
    }

    fn decide(&self, event: &Event, cx: &Context<'_>) -> Result<Decision, Error> {
        let label = |k: &str| event.labels.get(k).unwrap_or("").to_owned();
        let note = |k: &str| event.annotations.get(k).unwrap_or("").to_owned();
        let (cluster, kind, ns, name, reason) = (
            label("cluster"),
            label("object_kind"),
            label("namespace"),
            label("object_name"),
            label("reason"),
        );
        let key = note("dedup_key");
        if reason.is_empty() || key.is_empty() {
            return Ok(Decision::none().note("not a Kubernetes Warning event"));
        }
        let (severity, description) = classify(&reason, cx)?;
        let resource = if ns.is_empty() {
            format!("{kind}/{name}")
        } else {
            format!("{kind}/{ns}/{name}")
        };
        let title = format!("[{cluster}] {reason}: {description}");
        let mut m = Message::new(severity, &title)
            .line("Resource", &resource)
            .line("Message", note("message"))
            .line("Occurrences", note("occurrences"));
        let mut service = name.clone();
        match enrich(cx, &kind, &ns, &name) {
            Ok(e) => {
                for (heading, lines) in e.sections {
                    m = m.section(heading);
                    for (k, v) in lines {
                        m = m.line(k, v);
                    }
                }
                service = e.service.unwrap_or(service);
            }
            Err(err) => {
                cx.warn(&format!("enrichment of {resource} failed: {err}"));
                m = m.line("Enrichment", format!("unavailable ({err})"));
            }
        }
        // When Kubernetes last saw it (the ingest time for senders without
        // one), in the zone the host writes it in for people
        // (`ingest.time_zone`), else UTC.
        let data = event.data_json();
        let time = match data["last_seen_text"].as_str() {
            Some(text) if !text.is_empty() => text.to_owned(),
            _ => format_time(data["last_seen"].as_u64().unwrap_or(event.time)),
        };
        m = m.end_section().line("Time", time);
        let mut d = Decision::none().open_incident(IncidentOpen {
            title: title.clone(),
            service,
            severity,
            dedup_key: format!("k8s:{key}"),
            summary: format!("{resource}: {}", note("message")),
        });
        for channel in cx.channels(severity) {
            let mut n = m.clone().into_request(channel);
            n.dedup_key = Some(key.clone());
            d = d.notify(n);
        }
        Ok(d)
    }
}

eventpulse_sdk::export_rule!(K8sEvents);

#[cfg(test)]
mod tests {
    use super::*;
    use eventpulse_sdk::testing::FakeHost;
    use serde_json::json;

    fn warning(kind: &str, ns: &str, name: &str, reason: &str) -> Event {
        let mut e =
            eventpulse_sdk::testing::alert_event("x", eventpulse_sdk::AlertStatus::Firing, &[]);
        e.kind = EVENT_RECEIVED.into();
        e.alert = None;
        e.time = 1_769_304_645_000;
        for (k, v) in [
            ("type", "kubernetes.event"),
            ("cluster", "c1"),
            ("object_kind", kind),
            ("namespace", ns),
            ("object_name", name),
            ("reason", reason),
        ] {
            e.labels.insert(k, v);
        }
        for (k, v) in [
            ("message", "Container exceeded memory limit"),
            ("occurrences", "3"),
            ("dedup_key", "abc"),
        ] {
            e.annotations.insert(k, v);
        }
        e
    }

    fn pod_world() -> FakeHost {
        FakeHost::new()
            .config("channels.critical", "notifier-slack, notifier-email")
            .config("channels.warning", "notifier-telegram")
            .kube_object("Pod", "shop", "web-7d8f-x4k2m", json!({
                "metadata": {"name": "web-7d8f-x4k2m", "ownerReferences": [{"kind": "ReplicaSet", "name": "web-7d8f"}]},
                "spec": {"nodeName": "node-1"},
                "status": {"phase": "Running", "containerStatuses": [{"ready": false, "restartCount": 5}]},
            }))
            .kube_object("ReplicaSet", "shop", "web-7d8f", json!({
                "metadata": {"name": "web-7d8f", "ownerReferences": [{"kind": "Deployment", "name": "web"}]},
            }))
            .kube_object("Deployment", "shop", "web", json!({
                "metadata": {"name": "web"}, "spec": {"replicas": 3}, "status": {"readyReplicas": 2},
            }))
    }

    #[test]
    fn oom_killed_pod_is_critical_enriched_and_routed() {
        let host = pod_world();
        let d = K8sEvents
            .decide(
                &warning("Pod", "shop", "web-7d8f-x4k2m", "OOMKilled"),
                &host.context(),
            )
            .unwrap();
        let channels: Vec<_> = d.notifications.iter().map(|n| n.channel.as_str()).collect();
        assert_eq!(channels, ["notifier-slack", "notifier-email"]);
        let n = &d.notifications[0];
        assert_eq!(n.severity, Severity::Critical);
        assert_eq!(n.dedup_key.as_deref(), Some("abc"));
        assert_eq!(
            n.body,
            "🔴 [c1] OOMKilled: Container killed due to out of memory\n\n\
             Resource: Pod/shop/web-7d8f-x4k2m\nMessage: Container exceeded memory limit\nOccurrences: 3\n\n\
             Status:\n  Phase: Running\n  Restarts: 5\n  Ready: 0/1\n  Node: node-1\n\n\
             Related Deployment:\n  Name: web\n  Replicas: 2/3\n\n\
             Time: 2026-01-25 01:30:45 UTC"
        );
        let incident = match &d.incident {
            Some(eventpulse_sdk::IncidentDirective::Open(o)) => o,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            (incident.service.as_str(), incident.dedup_key.as_str()),
            ("web", "k8s:abc")
        );
    }

    #[test]
    fn the_time_is_shown_as_the_host_wrote_it_for_people() {
        let mut e = warning("Pod", "shop", "web-7d8f-x4k2m", "BackOff");
        e.data =
            json!({"last_seen": 1_769_304_645_000u64, "last_seen_text": "2026-01-25 04:30:45 MSK"})
                .to_string();
        let d = K8sEvents.decide(&e, &pod_world().context()).unwrap();
        assert!(
            d.notifications[0]
                .body
                .ends_with("Time: 2026-01-25 04:30:45 MSK"),
            "{}",
            d.notifications[0].body
        );
    }

    #[test]
    fn backoff_is_a_warning_and_config_can_change_severities() {
        let host = pod_world();
        let d = K8sEvents
            .decide(
                &warning("Pod", "shop", "web-7d8f-x4k2m", "BackOff"),
                &host.context(),
            )
            .unwrap();
        assert_eq!(d.notifications[0].channel, "notifier-telegram");
        assert_eq!(d.notifications[0].severity, Severity::Warning);
        let host = pod_world().config("severity.BackOff", "critical");
        let d = K8sEvents
            .decide(
                &warning("Pod", "shop", "web-7d8f-x4k2m", "BackOff"),
                &host.context(),
            )
            .unwrap();
        assert_eq!(d.notifications[0].severity, Severity::Critical);
    }

    #[test]
    fn without_the_api_the_message_goes_out_unenriched() {
        let host = FakeHost::new();
        let d = K8sEvents
            .decide(
                &warning("Pod", "shop", "web-1", "Unhealthy"),
                &host.context(),
            )
            .unwrap();
        assert_eq!(d.notifications.len(), 1);
        assert_eq!(d.notifications[0].channel, "notifier-log");
        assert!(
            d.notifications[0]
                .body
                .contains("Enrichment: unavailable (not granted: kube)"),
            "{}",
            d.notifications[0].body
        );
        assert!(!d.notifications[0].body.contains("Status:"));
    }

    #[test]
    fn node_events_show_node_status() {
        let host = FakeHost::new().kube_object("Node", "", "node-2", json!({
            "metadata": {"name": "node-2"},
            "status": {"allocatable": {"cpu": "2", "memory": "4Gi"}, "conditions": [
                {"type": "Ready", "status": "False"}, {"type": "MemoryPressure", "status": "True"}]},
        }));
        let d = K8sEvents
            .decide(
                &warning("Node", "", "node-2", "NodeNotReady"),
                &host.context(),
            )
            .unwrap();
        let body = &d.notifications[0].body;
        assert!(body.contains("Resource: Node/node-2"), "{body}");
        assert!(body.contains("Node Status:\n  Ready: false\n  Allocatable: cpu 2, memory 4Gi\n  Conditions: MemoryPressure"), "{body}");
        assert_eq!(
            d.notifications[0].severity,
            Severity::Warning,
            "unknown reasons default to warning"
        );
    }
}
