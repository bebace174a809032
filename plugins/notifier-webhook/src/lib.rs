//! `notifier-webhook`: POSTs each notification as one JSON document to a
//! webhook, through the host's outgoing-HTTP capability (only to hosts the
//! manifest grants).
//!
//! - URL: the `url` secret if set (webhook URLs often carry a token), else
//!   config `url`.
//! - Signature: with an `hmac_key` secret, header `X-EventPulse-Signature:
//!   sha256=<hex HMAC-SHA256 of the exact body>` (the GitHub convention), so
//!   the receiver can check the sender and that the body is intact.
//! - `Idempotency-Key`: the requesting event's id, the same on every retry,
//!   so a receiver can drop a delivery it already has.
//! - 2xx → delivered (`x-request-id` as the remote id); 408, 429 and 5xx →
//!   retryable (not before `Retry-After`); any other status → permanent.
//! - The document carries the fields and `text`, the message rendered in
//!   the seed 003 shape.

use eventpulse_sdk::message::Message;
use eventpulse_sdk::{Context, Delivery, Error, Event, HttpRequest, NotificationRequest, Notifier};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The notifier.
#[derive(Default)]
pub struct Webhook;

/// The JSON document sent for `n`.
pub fn body(event: &Event, n: &NotificationRequest) -> serde_json::Value {
    let fields: serde_json::Map<String, serde_json::Value> = n
        .fields
        .0
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into()))
        .collect();
    serde_json::json!({
        "title": n.title,
        "body": n.body,
        "severity": format!("{:?}", n.severity).to_lowercase(),
        "channel": n.channel,
        "dedup_key": n.dedup_key,
        "fields": fields,
        "text": Message::from_request(n).text(),
        "incident_id": event.correlation.incident_id,
        "alert_id": event.correlation.alert_id,
        "trace_id": event.trace_id,
        "event_id": event.id,
        "time": event.time,
    })
}

/// `sha256=<hex>` of `body` under `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Notifier for Webhook {
    fn description(&self) -> String {
        "POSTs the notification as JSON to a webhook, optionally HMAC-signed".into()
    }

    fn deliver(
        &self,
        event: &Event,
        n: &NotificationRequest,
        cx: &Context<'_>,
    ) -> Result<Delivery, Error> {
        let url = cx
            .secret("url")
            .or_else(|| cx.config("url"))
            .ok_or_else(|| Error::permanent("neither secret nor config `url` is set"))?;
        let mut request = HttpRequest::post_json(url, &body(event, n));
        request
            .headers
            .push(("idempotency-key".into(), event.id.clone()));
        if let Some(key) = cx.secret("hmac_key") {
            let sig = signature(key.as_bytes(), &request.body);
            request.headers.push(("x-eventpulse-signature".into(), sig));
        }
        let response = cx.http(&request)?;
        response.check()?;
        Ok(Delivery {
            remote_id: response.header("x-request-id").map(str::to_owned),
            detail: format!("HTTP {}", response.status),
        })
    }
}

eventpulse_sdk::export_notifier!(Webhook);

#[cfg(test)]
mod tests {
    use super::*;
    use eventpulse_sdk::testing::alert_event;
    use eventpulse_sdk::{AlertStatus, Severity};

    #[test]
    fn body_carries_the_notification_and_its_ids() {
        let mut event = alert_event("HighCPU", AlertStatus::Firing, &[("service", "app")]);
        event.correlation.incident_id = Some("inc-1".into());
        let n = NotificationRequest::new("notifier-webhook", Severity::Critical, "High CPU", "97%")
            .field("service", "app")
            .dedup_key("cpu:app");
        let b = body(&event, &n);
        assert_eq!(b["title"], "High CPU");
        assert_eq!(b["severity"], "critical");
        assert_eq!(b["fields"]["service"], "app");
        assert_eq!(b["incident_id"], "inc-1");
        assert_eq!(b["dedup_key"], "cpu:app");
    }

    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
