//! `notifier-email`: mails each notification through the host's `smtp`
//! capability: subject `[EventPulse] <severity>: <title>`, a plain-text
//! body and an HTML alternative (every value escaped). Server, sender,
//! TLS and credentials are the manifest's `smtp` grant; the plugin never
//! sees the password.
//!
//! - Recipients: config `to` (comma-separated).
//! - A permanent SMTP refusal (5xx, bad address) is permanent; an
//!   unreachable server or a 4xx reply is retried.

use eventpulse_sdk::message::Message;
use eventpulse_sdk::{
    CapabilityError, Context, Delivery, Error, Event, Mail, NotificationRequest, Notifier,
};

/// The notifier.
#[derive(Default)]
pub struct Email;

/// The mail for `n` to `to`.
pub fn mail(n: &NotificationRequest, to: Vec<String>) -> Mail {
    let m = Message::from_request(n);
    let html = format!(
        "<!DOCTYPE html>\n<html><body style=\"font-family: sans-serif\">\n{}\n</body></html>\n",
        m.html(true)
    );
    Mail {
        to,
        subject: format!("[EventPulse] {}: {}", n.severity.as_str(), n.title),
        text_body: m.text(),
        html_body: Some(html),
    }
}

impl Notifier for Email {
    fn description(&self) -> String {
        "email through the host's SMTP capability, text + HTML".into()
    }

    fn deliver(
        &self,
        _event: &Event,
        n: &NotificationRequest,
        cx: &Context<'_>,
    ) -> Result<Delivery, Error> {
        let to: Vec<String> = cx
            .config("to")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if to.is_empty() {
            return Err(Error::permanent("config `to` names no recipient"));
        }
        let count = to.len();
        match cx.send_mail(&mail(n, to)) {
            Ok(id) => Ok(Delivery {
                remote_id: Some(id),
                detail: format!("mailed {count} recipient(s)"),
            }),
            Err(e @ CapabilityError::Unavailable(_)) => Err(Error::retryable(e.to_string())),
            Err(e) => Err(Error::permanent(e.to_string())),
        }
    }
}

eventpulse_sdk::export_notifier!(Email);

#[cfg(test)]
mod tests {
    use super::*;
    use eventpulse_sdk::Severity;

    #[test]
    fn subject_text_and_escaped_html() {
        let n = Message::new(Severity::Critical, "[c1] OOMKilled: <x>")
            .line("Resource", "Pod/a/b")
            .into_request("notifier-email");
        let m = mail(&n, vec!["ops@example.com".into()]);
        assert_eq!(m.subject, "[EventPulse] critical: [c1] OOMKilled: <x>");
        assert!(m.text_body.contains("Resource: Pod/a/b"));
        let html = m.html_body.unwrap();
        assert!(html.contains("[c1] OOMKilled: &lt;x&gt;"), "{html}");
        assert!(!html.contains("<x>"));
    }
}
