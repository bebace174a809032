//! Generic events for `POST /api/v1/events`: a CloudEvents 1.0 event in
//! structured JSON mode. Required: `specversion` (`"1.0"`), `id`, `source`,
//! `type`; optional: `subject`, `time`, `datacontenttype`, `data`, and
//! extension attributes (string, number or boolean), which become labels.
//!
//! The event travels as `event.received` with labels `type`, `source`,
//! `subject` and the extensions, so rules subscribe by label. Its id is
//! derived from `(source, id)`, which CloudEvents makes unique: a retried
//! POST is the same event and is stored once.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::model;

/// Why an event was refused; the message names the attribute.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct Invalid(pub String);

const KNOWN: &[&str] = &[
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
    "data",
    "data_base64",
];

fn required<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<&'a str, Invalid> {
    match obj.get(name) {
        None => Err(Invalid(format!(
            "`{name}`: missing (required by CloudEvents 1.0)"
        ))),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(Value::String(_)) => Err(Invalid(format!("`{name}`: must not be empty"))),
        Some(other) => Err(Invalid(format!(
            "`{name}`: expected a string, found {}",
            kind(other)
        ))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parse and normalise one CloudEvent into an `event.received` envelope.
pub fn parse(body: &[u8], now_ms: u64) -> Result<model::Event, Invalid> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        if e.classify() == serde_json::error::Category::Data {
            Invalid(format!("body: {e}"))
        } else {
            Invalid(format!("body is not valid JSON: {e}"))
        }
    })?;
    let Value::Object(obj) = value else {
        return Err(Invalid(format!(
            "body: expected a CloudEvents JSON object, found {}",
            kind(&value)
        )));
    };
    let version = required(&obj, "specversion")?;
    if version != "1.0" {
        return Err(Invalid(format!(
            "`specversion`: `{version}` is not supported (only \"1.0\")"
        )));
    }
    let id = required(&obj, "id")?;
    let source = required(&obj, "source")?;
    let ty = required(&obj, "type")?;
    let subject = match obj.get("subject") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(Invalid(format!(
                "`subject`: expected a string, found {}",
                kind(other)
            )));
        }
    };
    let time = match obj.get("time") {
        None | Some(Value::Null) => now_ms,
        Some(Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
            .map_err(|e| Invalid(format!("`time`: `{s}` is not RFC 3339: {e}")))?
            .timestamp_millis()
            .max(0) as u64,
        Some(other) => {
            return Err(Invalid(format!(
                "`time`: expected an RFC 3339 string, found {}",
                kind(other)
            )));
        }
    };
    let mut labels = vec![
        ("type".to_owned(), ty.to_owned()),
        ("source".to_owned(), source.to_owned()),
    ];
    if let Some(s) = &subject {
        labels.push(("subject".into(), s.clone()));
    }
    for (k, v) in &obj {
        if KNOWN.contains(&k.as_str()) {
            continue;
        }
        let ok_name = !k.is_empty()
            && k.len() <= 20
            && k.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !ok_name {
            return Err(Invalid(format!(
                "`{k}`: extension attribute names are 1-20 lower-case letters or digits"
            )));
        }
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                return Err(Invalid(format!(
                    "`{k}`: extension attributes must be strings, numbers or booleans, found {}",
                    kind(other)
                )));
            }
        };
        labels.push((k.clone(), text));
    }
    let data = obj.get("data").cloned().unwrap_or(Value::Null);
    let digest = Sha256::new()
        .chain_update(source.as_bytes())
        .chain_update([0])
        .chain_update(id.as_bytes())
        .finalize();
    let bytes: [u8; 16] = digest[..16].try_into().expect("16 bytes");
    Ok(model::Event {
        id: uuid::Builder::from_custom_bytes(bytes)
            .into_uuid()
            .to_string(),
        kind: model::EventKind::EventReceived.as_str().into(),
        source: source.to_owned(),
        time,
        trace_id: hex::encode(rand::random::<[u8; 16]>()),
        span_id: String::new(),
        key: subject.unwrap_or_else(|| ty.to_owned()),
        correlation: model::Correlation {
            alert_id: None,
            incident_id: None,
            action_id: None,
        },
        labels,
        annotations: vec![],
        alert: None,
        data: serde_json::json!({ "id": id, "type": ty, "data": data }).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> model::Event {
        parse(body.as_bytes(), 1).unwrap()
    }

    fn err(body: &str) -> String {
        parse(body.as_bytes(), 1).unwrap_err().0
    }

    #[test]
    fn normalises_a_cloudevent() {
        let e = ok(
            r#"{"specversion":"1.0","id":"1","source":"/disk","type":"disk.full",
                      "subject":"db-1","region":"eu","data":{"used":99}}"#,
        );
        assert_eq!(e.kind, "event.received");
        assert_eq!(e.key, "db-1");
        assert!(e.labels.contains(&("type".into(), "disk.full".into())));
        assert!(e.labels.contains(&("region".into(), "eu".into())));
        assert!(e.data.contains("\"used\":99"));
        // Same (source, id) → same event id, so a retry is stored once.
        let again = ok(r#"{"specversion":"1.0","id":"1","source":"/disk","type":"disk.full"}"#);
        assert_eq!(e.id, again.id);
        let other = ok(r#"{"specversion":"1.0","id":"2","source":"/disk","type":"disk.full"}"#);
        assert_ne!(e.id, other.id);
    }

    #[test]
    fn names_the_attribute_at_fault() {
        assert!(err(r#"{"id":"1","source":"s","type":"t"}"#).contains("`specversion`: missing"));
        assert!(err(r#"{"specversion":"0.3","id":"1","source":"s","type":"t"}"#).contains("0.3"));
        assert!(
            err(r#"{"specversion":"1.0","id":1,"source":"s","type":"t"}"#)
                .contains("`id`: expected a string, found a number")
        );
        assert!(
            err(r#"{"specversion":"1.0","id":"1","source":"s","type":""}"#)
                .contains("`type`: must not be empty")
        );
        assert!(
            err(r#"{"specversion":"1.0","id":"1","source":"s","type":"t","time":"yesterday"}"#)
                .contains("`time`")
        );
        assert!(
            err(r#"{"specversion":"1.0","id":"1","source":"s","type":"t","x":{"a":1}}"#)
                .contains("`x`: extension")
        );
        assert!(err("[1]").contains("found an array"));
        assert!(err("{").contains("not valid JSON"));
    }
}
