//! Kubernetes Warning events for `POST /api/v1/events/kubernetes?cluster=`
//! (seed 003). The body is what the API server serves: one `core/v1`
//! Event, an `EventList`, or a JSON array of Events, as an event exporter
//! forwards them. `Normal` events are counted as ignored.
//!
//! Each Warning event gets the dedup key `md5(cluster + kind + namespace +
//! name + reason)` (hex); repeats of a key count up in `kube_events` and
//! travel as `event.received` with labels `type=kubernetes.event`,
//! `cluster`, `object_kind`, `namespace`, `object_name`, `reason`, so rules
//! subscribe by label. The event id is derived from the key, the object's
//! uid, Kubernetes' count and the last timestamp: a re-sent event is
//! stored (and counted) once.

use md5::{Digest, Md5};
use serde::Deserialize;
use sha2::Sha256;

use crate::model;

/// The `type` label of the events made here.
pub const EVENT_TYPE: &str = "kubernetes.event";

/// Why a body was refused; the message names the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct Invalid(pub String);

/// The fields of a `core/v1` Event this ingest reads (others are ignored).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeEvent {
    #[serde(default)]
    metadata: Metadata,
    involved_object: ObjectRef,
    reason: String,
    #[serde(default)]
    message: String,
    #[serde(default, rename = "type")]
    ty: String,
    #[serde(default)]
    count: Option<i64>,
    #[serde(default)]
    first_timestamp: Option<String>,
    #[serde(default)]
    last_timestamp: Option<String>,
    #[serde(default)]
    event_time: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    #[serde(default)]
    uid: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    creation_timestamp: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct ObjectRef {
    kind: String,
    #[serde(default)]
    namespace: String,
    name: String,
}

/// One Warning event, normalised (the model's [`model::KubeWarning`]).
pub use crate::model::KubeWarning as Warning;

/// The parsed body: Warning events and how many others were ignored.
#[derive(Debug)]
pub struct Batch {
    /// The Warning events, in body order.
    pub warnings: Vec<Warning>,
    /// Events of other types (`Normal`).
    pub ignored: usize,
}

/// At most this many events per request.
pub const MAX_EVENTS: usize = 1000;

/// `md5(cluster + kind + namespace + name + reason)` as lower-case hex.
pub fn dedup_key(cluster: &str, kind: &str, namespace: &str, name: &str, reason: &str) -> String {
    hex::encode(Md5::digest(format!(
        "{cluster}{kind}{namespace}{name}{reason}"
    )))
}

fn time(field: &str, text: Option<&str>) -> Result<Option<i64>, Invalid> {
    match text {
        None | Some("") => Ok(None),
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)
            .map(|d| Some(d.timestamp_millis()))
            .map_err(|e| Invalid(format!("`{field}`: `{t}` is not RFC 3339: {e}"))),
    }
}

/// Parse a body of Events from `cluster`, received at `now_ms`.
pub fn parse(body: &[u8], cluster: &str, now_ms: i64) -> Result<Batch, Invalid> {
    if cluster.is_empty() || cluster.len() > 253 {
        return Err(Invalid(
            "`cluster`: query parameter required (1-253 characters)".into(),
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Invalid(format!("body is not valid JSON: {e}")))?;
    let items = match value {
        serde_json::Value::Array(items) => items,
        serde_json::Value::Object(mut obj)
            if obj.get("kind").and_then(|k| k.as_str()) == Some("EventList") =>
        {
            match obj.remove("items") {
                Some(serde_json::Value::Array(items)) => items,
                _ => {
                    return Err(Invalid(
                        "`items`: an EventList needs an array of Events".into(),
                    ));
                }
            }
        }
        obj @ serde_json::Value::Object(_) => vec![obj],
        _ => {
            return Err(Invalid(
                "body: expected an Event, an EventList or an array of Events".into(),
            ));
        }
    };
    if items.len() > MAX_EVENTS {
        return Err(Invalid(format!(
            "body: {} events, at most {MAX_EVENTS} per request",
            items.len()
        )));
    }
    let mut batch = Batch {
        warnings: Vec::new(),
        ignored: 0,
    };
    for (i, item) in items.into_iter().enumerate() {
        match warning(item, cluster, now_ms, &format!("events[{i}]"))? {
            Some(w) => batch.warnings.push(w),
            None => batch.ignored += 1,
        }
    }
    Ok(batch)
}

/// One `core/v1` Event (`at` names it in errors, e.g. `events[3]`): the
/// normalised Warning, or `None` for any other type.
pub fn warning(
    item: serde_json::Value,
    cluster: &str,
    now_ms: i64,
    at: &str,
) -> Result<Option<Warning>, Invalid> {
    let e: KubeEvent = serde_path_to_error::deserialize(item)
        .map_err(|err| Invalid(format!("{at}.{}: {}", err.path(), err.inner())))?;
    if e.ty != "Warning" {
        return Ok(None);
    }
    let time_of =
        |field: &str, text: &Option<String>| time(&format!("{at}.{field}"), text.as_deref());
    let event_time = time_of("eventTime", &e.event_time)?;
    let last_seen = time_of("lastTimestamp", &e.last_timestamp)?
        .or(event_time)
        .or(time_of(
            "metadata.creationTimestamp",
            &e.metadata.creation_timestamp,
        )?)
        .unwrap_or(now_ms);
    let first_seen = time_of("firstTimestamp", &e.first_timestamp)?.unwrap_or(last_seen);
    let o = &e.involved_object;
    if e.reason.is_empty() || o.kind.is_empty() || o.name.is_empty() {
        return Err(Invalid(format!(
            "{at}: `reason`, `involvedObject.kind` and `involvedObject.name` must not be empty"
        )));
    }
    let key = dedup_key(cluster, &o.kind, &o.namespace, &o.name, &e.reason);
    let count = e.count.unwrap_or(1).max(1);
    let digest = Sha256::new()
        .chain_update(key.as_bytes())
        .chain_update([0])
        .chain_update(
            if e.metadata.uid.is_empty() {
                &e.metadata.name
            } else {
                &e.metadata.uid
            }
            .as_bytes(),
        )
        .chain_update([0])
        .chain_update(count.to_be_bytes())
        .chain_update(last_seen.to_be_bytes())
        .finalize();
    let bytes: [u8; 16] = digest[..16].try_into().expect("16 bytes");
    Ok(Some(Warning {
        cluster: cluster.to_owned(),
        kind: o.kind.clone(),
        namespace: o.namespace.clone(),
        name: o.name.clone(),
        reason: e.reason.clone(),
        message: e.message.chars().take(4096).collect(),
        count,
        first_seen,
        last_seen,
        dedup_key: key,
        event_id: uuid::Builder::from_custom_bytes(bytes)
            .into_uuid()
            .to_string(),
    }))
}

/// `2026-01-25 04:30:45 MSK`: an instant as people in `zone` read it.
pub fn local_time(ms: i64, zone: chrono_tz::Tz) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&zone)
                .format("%Y-%m-%d %H:%M:%S %Z")
                .to_string()
        })
        .unwrap_or_default()
}

impl Warning {
    /// The `event.received` envelope, with `occurrences` of its key so far;
    /// `last_seen_text` gives the last sighting in `zone`.
    pub fn event(&self, occurrences: i64, now_ms: u64, zone: chrono_tz::Tz) -> model::Event {
        let rfc3339 = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms)
                .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default()
        };
        let pairs = |items: &[(&str, &str)]| -> Vec<(String, String)> {
            items
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let source = format!("kubernetes/{}", self.cluster);
        model::Event {
            id: self.event_id.clone(),
            kind: model::EventKind::EventReceived.as_str().into(),
            source: source.clone(),
            time: now_ms,
            trace_id: hex::encode(rand::random::<[u8; 16]>()),
            span_id: String::new(),
            key: self.dedup_key.clone(),
            correlation: model::Correlation {
                alert_id: Some(self.dedup_key.clone()),
                incident_id: None,
                action_id: None,
            },
            labels: pairs(&[
                ("type", EVENT_TYPE),
                ("source", &source),
                ("cluster", &self.cluster),
                ("object_kind", &self.kind),
                ("namespace", &self.namespace),
                ("object_name", &self.name),
                ("reason", &self.reason),
            ]),
            annotations: pairs(&[
                ("message", &self.message),
                ("occurrences", &occurrences.to_string()),
                ("reported_count", &self.count.to_string()),
                ("first_timestamp", &rfc3339(self.first_seen)),
                ("last_timestamp", &rfc3339(self.last_seen)),
                ("dedup_key", &self.dedup_key),
            ]),
            alert: None,
            data: serde_json::json!({
                "cluster": self.cluster,
                "kind": self.kind,
                "namespace": self.namespace,
                "name": self.name,
                "reason": self.reason,
                "message": self.message,
                "count": self.count,
                "occurrences": occurrences,
                "first_seen": self.first_seen,
                "last_seen": self.last_seen,
                "last_seen_text": local_time(self.last_seen, zone),
                "dedup_key": self.dedup_key,
            })
            .to_string(),
        }
    }
}

/// A Warning event in the shape the API server serves, for tests and demos.
pub fn sample(
    kind: &str,
    namespace: &str,
    name: &str,
    reason: &str,
    message: &str,
    count: i64,
    last: &str,
) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": { "name": format!("{name}.{reason}"), "namespace": namespace, "uid": format!("uid-{name}-{reason}") },
        "involvedObject": { "kind": kind, "namespace": namespace, "name": name },
        "reason": reason,
        "message": message,
        "type": "Warning",
        "count": count,
        "firstTimestamp": "2026-01-25T01:30:45Z",
        "lastTimestamp": last,
        "source": { "component": "kubelet", "host": "node-1" },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_key_is_md5_of_the_five_fields() {
        // md5("ZGMF-X10APodatlhyperagent-1OOMKilled")
        let key = dedup_key("ZGMF-X10A", "Pod", "atlhyper", "agent-1", "OOMKilled");
        assert_eq!(
            key,
            hex::encode(Md5::digest(b"ZGMF-X10APodatlhyperagent-1OOMKilled"))
        );
        assert_eq!(key.len(), 32);
        assert_ne!(
            key,
            dedup_key("ZGMF-X10A", "Pod", "atlhyper", "agent-1", "BackOff")
        );
    }

    #[test]
    fn parses_events_lists_and_arrays_keeping_warnings_only() {
        let warning = sample(
            "Pod",
            "shop",
            "web-1",
            "BackOff",
            "Back-off restarting",
            3,
            "2026-01-25T01:31:00Z",
        );
        let mut normal = warning.clone();
        normal["type"] = "Normal".into();
        let list = serde_json::json!({"kind": "EventList", "items": [warning, normal]});
        let b = parse(list.to_string().as_bytes(), "c1", 0).unwrap();
        assert_eq!((b.warnings.len(), b.ignored), (1, 1));
        let w = &b.warnings[0];
        assert_eq!(
            (w.kind.as_str(), w.name.as_str(), w.count),
            ("Pod", "web-1", 3)
        );
        assert_eq!(
            w.dedup_key,
            dedup_key("c1", "Pod", "shop", "web-1", "BackOff")
        );
        let one = parse(warning.to_string().as_bytes(), "c1", 0).unwrap();
        assert_eq!(one.warnings[0].event_id, w.event_id, "same event, same id");
        let mut again = warning.clone();
        again["count"] = 4.into();
        let next = parse(again.to_string().as_bytes(), "c1", 0).unwrap();
        assert_ne!(
            next.warnings[0].event_id, w.event_id,
            "a repeat is a new event"
        );
        assert_eq!(next.warnings[0].dedup_key, w.dedup_key, "with the same key");
    }

    #[test]
    fn times_for_people_are_in_the_configured_zone() {
        let ms = 1_769_304_645_000; // 2026-01-25T01:30:45Z
        assert_eq!(local_time(ms, chrono_tz::UTC), "2026-01-25 01:30:45 UTC");
        assert_eq!(
            local_time(ms, chrono_tz::Europe::Moscow),
            "2026-01-25 04:30:45 MSK"
        );
        // Daylight saving is the zone's, not a fixed offset.
        let july = 1_784_943_045_000; // 2026-07-25T01:30:45Z
        assert_eq!(
            local_time(july, chrono_tz::Europe::Berlin),
            "2026-07-25 03:30:45 CEST"
        );
    }

    #[test]
    fn bad_bodies_name_the_field() {
        let err = |body: &str, cluster: &str| parse(body.as_bytes(), cluster, 0).unwrap_err().0;
        assert!(err("{}", "").contains("`cluster`"));
        assert!(err("{", "c").contains("not valid JSON"));
        assert!(err("3", "c").contains("expected an Event"));
        assert!(err(r#"{"reason":"X","type":"Warning"}"#, "c").contains("involvedObject"));
        let mut bad = sample("Pod", "a", "b", "BackOff", "m", 1, "yesterday");
        assert!(err(&bad.to_string(), "c").contains("lastTimestamp"));
        bad["lastTimestamp"] = "2026-01-25T01:31:00Z".into();
        bad["reason"] = "".into();
        assert!(err(&bad.to_string(), "c").contains("must not be empty"));
    }
}
