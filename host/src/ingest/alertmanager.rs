//! The Alertmanager webhook (version 4), parsed and normalised into the
//! [`model::Alert`]s rules see. Pure: no I/O, so it can be fuzzed and so the
//! ingest handler can reject a bad body before touching the store.
//!
//! Every error names the field and the reason (`alerts[2].startsAt: ...`).
//! Unknown fields are accepted, since Alertmanager adds fields over time;
//! unknown `version`s are not.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::model;

/// Upper bounds that keep one webhook from exhausting the host.
pub const MAX_ALERTS: usize = 1_000;
const MAX_LABELS: usize = 128;
const MAX_NAME_LEN: usize = 256;
const MAX_VALUE_LEN: usize = 16 * 1024;

/// Why a webhook body was refused. The message is safe to return to the
/// sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The body is not UTF-8.
    #[error("body is not valid UTF-8 (byte {0})")]
    InvalidUtf8(usize),
    /// The body is not JSON of the webhook's shape.
    #[error("{path}: {message}")]
    Malformed {
        /// Where (`alerts[0].labels`), or `body` for the document itself.
        path: String,
        /// What is wrong there.
        message: String,
    },
    /// A webhook version this host does not speak.
    #[error("version: unsupported webhook version `{0}`, expected \"4\"")]
    UnsupportedVersion(String),
}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> WebhookError {
    WebhookError::Malformed {
        path: path.into(),
        message: message.into(),
    }
}

/// The webhook body as Alertmanager sends it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Webhook {
    version: String,
    group_key: String,
    /// Validated only: each alert carries its own status.
    #[serde(rename = "status")]
    _status: Status,
    receiver: String,
    #[serde(default)]
    truncated_alerts: u64,
    alerts: Vec<WebhookAlert>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Firing,
    Resolved,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WebhookAlert {
    status: Status,
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    starts_at: String,
    #[serde(default)]
    ends_at: Option<String>,
    #[serde(default, rename = "generatorURL")]
    generator_url: Option<String>,
    fingerprint: String,
}

/// A parsed, validated webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Alertmanager's group key (stable per route and group labels).
    pub group_key: String,
    /// The receiver that sent it.
    pub receiver: String,
    /// Alerts Alertmanager dropped because of `max_alerts`.
    pub truncated_alerts: u64,
    /// The alerts, normalised.
    pub alerts: Vec<model::Alert>,
}

/// Parse and validate a webhook body.
pub fn parse(body: &[u8]) -> Result<Notification, WebhookError> {
    let text = std::str::from_utf8(body).map_err(|e| WebhookError::InvalidUtf8(e.valid_up_to()))?;
    // Check the version first, so an unknown version is reported as such
    // rather than as whatever field its shape lacks.
    if let Ok(probe) = serde_json::from_str::<VersionProbe>(text)
        && let Some(version) = probe.version
        && version != serde_json::Value::String("4".into())
    {
        let shown = match version {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        return Err(WebhookError::UnsupportedVersion(shown));
    }
    let de = &mut serde_json::Deserializer::from_str(text);
    let webhook: Webhook = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return invalid("body", format!("invalid JSON: {inner}"));
        }
        let path = if path == "." || path == "?" {
            "body".to_owned()
        } else {
            path
        };
        invalid(path, without_position(&inner.to_string()))
    })?;
    normalise(webhook)
}

#[derive(Deserialize)]
struct VersionProbe {
    version: Option<serde_json::Value>,
}

/// serde_json appends " at line L column C"; the path says where already.
fn without_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

fn normalise(w: Webhook) -> Result<Notification, WebhookError> {
    if w.version != "4" {
        return Err(WebhookError::UnsupportedVersion(w.version));
    }
    if w.group_key.is_empty() {
        return Err(invalid("groupKey", "must not be empty"));
    }
    if w.alerts.len() > MAX_ALERTS {
        return Err(invalid(
            "alerts",
            format!("{} alerts; at most {MAX_ALERTS}", w.alerts.len()),
        ));
    }
    let alerts = w
        .alerts
        .into_iter()
        .enumerate()
        .map(|(i, a)| alert(i, a))
        .collect::<Result<_, _>>()?;
    Ok(Notification {
        group_key: w.group_key,
        receiver: w.receiver,
        truncated_alerts: w.truncated_alerts,
        alerts,
    })
}

fn pairs(path: &str, map: BTreeMap<String, String>) -> Result<Vec<(String, String)>, WebhookError> {
    if map.len() > MAX_LABELS {
        return Err(invalid(
            path,
            format!("{} entries; at most {MAX_LABELS}", map.len()),
        ));
    }
    for (k, v) in &map {
        if k.is_empty() || k.len() > MAX_NAME_LEN {
            return Err(invalid(
                path,
                format!(
                    "name `{}` must be 1 to {MAX_NAME_LEN} bytes",
                    k.escape_debug()
                ),
            ));
        }
        if v.len() > MAX_VALUE_LEN {
            return Err(invalid(
                format!("{path}.{k}"),
                format!("longer than {MAX_VALUE_LEN} bytes"),
            ));
        }
    }
    Ok(map.into_iter().collect())
}

/// RFC 3339 → ms since the epoch. Alertmanager's zero time
/// (`0001-01-01T00:00:00Z`, "not resolved yet") is `None`.
fn timestamp(path: &str, text: &str) -> Result<Option<u64>, WebhookError> {
    let t = chrono::DateTime::parse_from_rfc3339(text).map_err(|e| {
        invalid(
            path,
            format!("`{}` is not an RFC 3339 time: {e}", text.escape_debug()),
        )
    })?;
    let ms = t.timestamp_millis();
    Ok((ms > 0).then_some(ms as u64))
}

fn alert(i: usize, a: WebhookAlert) -> Result<model::Alert, WebhookError> {
    let at = |field: &str| format!("alerts[{i}].{field}");
    if a.fingerprint.is_empty() {
        return Err(invalid(at("fingerprint"), "must not be empty"));
    }
    let name = a
        .labels
        .get("alertname")
        .filter(|n| !n.is_empty())
        .cloned()
        .ok_or_else(|| invalid(at("labels"), "missing `alertname`"))?;
    let starts_at = timestamp(&at("startsAt"), &a.starts_at)?
        .ok_or_else(|| invalid(at("startsAt"), "must be a real time, not the zero time"))?;
    let ends_at = match &a.ends_at {
        Some(t) => timestamp(&at("endsAt"), t)?,
        None => None,
    };
    let severity = a.labels.get("severity").and_then(|s| severity(s));
    Ok(model::Alert {
        fingerprint: a.fingerprint,
        name,
        status: match a.status {
            Status::Firing => model::AlertStatus::Firing,
            Status::Resolved => model::AlertStatus::Resolved,
        },
        severity,
        labels: pairs(&at("labels"), a.labels)?,
        annotations: pairs(&at("annotations"), a.annotations)?,
        starts_at,
        ends_at,
        generator_url: a.generator_url.filter(|u| !u.is_empty()),
    })
}

/// The `alert.raised` envelope for one alert of `n`.
pub fn alert_raised(n: &Notification, alert: &model::Alert, now_ms: u64) -> model::Event {
    let label = |k: &str| {
        alert
            .labels
            .iter()
            .find(|(lk, _)| lk == k)
            .map(|(_, v)| v.clone())
    };
    model::Event {
        id: uuid::Uuid::now_v7().to_string(),
        kind: model::EventKind::AlertRaised.as_str().into(),
        source: format!("alertmanager/{}", n.receiver),
        time: now_ms,
        // A new trace per alert instance and status: W3C trace-id format.
        trace_id: hex::encode(rand::random::<[u8; 16]>()),
        span_id: String::new(),
        key: label("service")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| alert.name.clone()),
        correlation: model::Correlation {
            alert_id: Some(format!("{}:{}", alert.fingerprint, alert.starts_at)),
            incident_id: None,
            action_id: None,
        },
        labels: vec![],
        annotations: vec![],
        alert: Some(alert.clone()),
        data: serde_json::json!({ "group_key": n.group_key, "receiver": n.receiver }).to_string(),
    }
}

fn severity(label: &str) -> Option<model::Severity> {
    match label.to_ascii_lowercase().as_str() {
        "info" | "informational" | "none" => Some(model::Severity::Info),
        "warning" | "warn" => Some(model::Severity::Warning),
        "error" | "major" | "high" => Some(model::Severity::Error),
        "critical" | "page" | "fatal" => Some(model::Severity::Critical),
        _ => None,
    }
}

/// A webhook body as Alertmanager (v4) sends it, with one alert: what
/// `eventpulse send-alert` and `serve --demo` post. `starts_at` is RFC 3339;
/// the fingerprint is derived from the labels, as Alertmanager does.
pub fn sample(
    alertname: &str,
    labels: &[(&str, &str)],
    resolved: bool,
    starts_at: &str,
    ends_at: &str,
) -> serde_json::Value {
    let mut all: std::collections::BTreeMap<&str, &str> = labels.iter().copied().collect();
    all.insert("alertname", alertname);
    let fingerprint = {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for (k, v) in &all {
            h.update(k.as_bytes());
            h.update([0xff]);
            h.update(v.as_bytes());
            h.update([0xff]);
        }
        hex::encode(&h.finalize()[..8])
    };
    let status = if resolved { "resolved" } else { "firing" };
    let group_labels = serde_json::json!({ "alertname": alertname });
    serde_json::json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{alertname}\"}}"),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "eventpulse",
        "groupLabels": group_labels,
        "commonLabels": all,
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": [{
            "status": status,
            "labels": all,
            "annotations": { "summary": format!("{alertname} ({status}) sent by eventpulse") },
            "startsAt": starts_at,
            "endsAt": if resolved { ends_at } else { "0001-01-01T00:00:00Z" },
            "generatorURL": "http://127.0.0.1:9090/graph",
            "fingerprint": fingerprint,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body as Alertmanager 0.25 posts it (one firing, one resolved).
    const SAMPLE: &str = r#"{
      "receiver": "eventpulse",
      "status": "firing",
      "alerts": [
        {
          "status": "firing",
          "labels": {"alertname": "HighCPU", "service": "app", "severity": "critical"},
          "annotations": {"summary": "CPU above 90% for 1m"},
          "startsAt": "2026-11-23T22:54:37.123Z",
          "endsAt": "0001-01-01T00:00:00Z",
          "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=cpu",
          "fingerprint": "c3f0a1b2d4e5f607"
        },
        {
          "status": "resolved",
          "labels": {"alertname": "LowCPU", "service": "app"},
          "annotations": {},
          "startsAt": "2026-11-23T22:50:00Z",
          "endsAt": "2026-11-23T22:55:00+00:00",
          "generatorURL": "",
          "fingerprint": "0011223344556677"
        }
      ],
      "groupLabels": {"alertname": "HighCPU"},
      "commonLabels": {"service": "app"},
      "commonAnnotations": {},
      "externalURL": "http://127.0.0.1:9093",
      "version": "4",
      "groupKey": "{}:{alertname=\"HighCPU\"}",
      "truncatedAlerts": 0
    }"#;

    fn with(edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let mut v: serde_json::Value = serde_json::from_str(SAMPLE).unwrap();
        edit(&mut v);
        serde_json::to_vec(&v).unwrap()
    }

    fn error(body: &[u8]) -> String {
        parse(body).unwrap_err().to_string()
    }

    #[test]
    fn parses_what_alertmanager_sends() {
        let n = parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(n.group_key, "{}:{alertname=\"HighCPU\"}");
        assert_eq!(n.alerts.len(), 2);
        let high = &n.alerts[0];
        assert_eq!(high.name, "HighCPU");
        assert_eq!(high.status, model::AlertStatus::Firing);
        assert_eq!(high.severity, Some(model::Severity::Critical));
        assert_eq!(high.starts_at, 1_795_474_477_123);
        assert_eq!(high.ends_at, None, "the zero time means not resolved");
        assert!(high.labels.contains(&("service".into(), "app".into())));
        let low = &n.alerts[1];
        assert_eq!(low.status, model::AlertStatus::Resolved);
        assert_eq!(low.ends_at, Some(1_795_474_500_000));
        assert_eq!(low.generator_url, None);
    }

    #[test]
    fn each_bad_input_names_the_field_and_the_reason() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                b"{not json".to_vec(),
                "body: invalid JSON: key must be a string at line 1 column 2",
            ),
            (
                b"{\"version\": \"4\"".to_vec(),
                "body: invalid JSON: EOF while parsing an object at line 1 column 15",
            ),
            (b"\xff\xfe".to_vec(), "body is not valid UTF-8 (byte 0)"),
            (
                with(|v| v["version"] = "3".into()),
                "version: unsupported webhook version `3`, expected \"4\"",
            ),
            (
                with(|v| v["version"] = 4.into()),
                "version: unsupported webhook version `4`, expected \"4\"",
            ),
            (
                with(|v| v["alerts"][0]["startsAt"] = 17.into()),
                "alerts[0].startsAt: invalid type: integer `17`, expected a string",
            ),
            (
                with(|v| {
                    v["alerts"][1]
                        .as_object_mut()
                        .unwrap()
                        .remove("fingerprint");
                }),
                "alerts[1]: missing field `fingerprint`",
            ),
            (
                with(|v| v["alerts"][0]["status"] = "pending".into()),
                "alerts[0].status: unknown variant `pending`, expected `firing` or `resolved`",
            ),
            (
                with(|v| v["alerts"][0]["startsAt"] = "yesterday".into()),
                "alerts[0].startsAt: `yesterday` is not an RFC 3339 time: premature end of input",
            ),
            (
                with(|v| {
                    v["alerts"][1]["labels"]
                        .as_object_mut()
                        .unwrap()
                        .remove("alertname");
                }),
                "alerts[1].labels: missing `alertname`",
            ),
            (
                with(|v| v["alerts"][0]["labels"]["service"] = serde_json::json!(["app"])),
                "alerts[0].labels.service: invalid type: sequence, expected a string",
            ),
            (
                with(|v| v["groupKey"] = "".into()),
                "groupKey: must not be empty",
            ),
            (
                with(|v| {
                    v.as_object_mut().unwrap().remove("alerts");
                }),
                "body: missing field `alerts`",
            ),
            (
                with(|v| {
                    v["alerts"][0]["annotations"]["big"] = "x".repeat(MAX_VALUE_LEN + 1).into()
                }),
                "alerts[0].annotations.big: longer than 16384 bytes",
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(
                error(&body),
                expected,
                "for {}",
                String::from_utf8_lossy(&body[..body.len().min(80)])
            );
        }
    }

    #[test]
    fn too_many_alerts_are_refused() {
        let body = with(|v| {
            let one = v["alerts"][0].clone();
            v["alerts"] = serde_json::Value::Array(vec![one; MAX_ALERTS + 1]);
        });
        assert_eq!(error(&body), "alerts: 1001 alerts; at most 1000");
    }

    /// Until the fuzz target (issue 3): every prefix and every one-byte
    /// corruption of a real body is either accepted or refused with a
    /// message, never a panic.
    #[test]
    fn truncated_and_corrupted_bodies_never_panic() {
        let body = SAMPLE.as_bytes();
        let mut refused = 0;
        for end in 0..body.len() {
            if let Err(e) = parse(&body[..end]) {
                assert!(!e.to_string().is_empty());
                refused += 1;
            }
        }
        assert_eq!(
            refused,
            body.len(),
            "every strict prefix is incomplete JSON"
        );
        for i in 0..body.len() {
            for byte in [b'"', b'{', b'0', 0xff, b' '] {
                let mut bad = body.to_vec();
                bad[i] = byte;
                if let Err(e) = parse(&bad) {
                    assert!(!e.to_string().is_empty());
                }
            }
        }
    }

    #[test]
    fn unknown_fields_are_tolerated() {
        let body = with(|v| v["somethingNew"] = true.into());
        assert_eq!(parse(&body).unwrap().alerts.len(), 2);
    }
}
