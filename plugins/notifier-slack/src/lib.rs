//! `notifier-slack`: posts each notification to a Slack incoming webhook
//! as a Block Kit message (a header with the title, one section per part
//! of the message), with the plain text as the notification fallback.
//!
//! - URL: the `webhook_url` secret (it is the credential).
//! - Slack answers `200 ok`; 429 (with `Retry-After`) and 5xx are retried,
//!   any other 4xx (`invalid_payload`, `no_service`, ...) is permanent.

use eventpulse_sdk::message::{Message, escape_slack};
use eventpulse_sdk::{Context, Delivery, Error, Event, HttpRequest, NotificationRequest, Notifier};
use serde_json::{Value, json};

/// The notifier.
#[derive(Default)]
pub struct Slack;

/// Slack's limits on header and section text.
const HEADER_MAX: usize = 150;
const SECTION_MAX: usize = 3000;

fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut s: String = text.chars().take(max - 1).collect();
    s.push('…');
    s
}

/// The webhook payload for `m`.
pub fn payload(m: &Message) -> Value {
    let mut blocks = vec![json!({
        "type": "header",
        "text": { "type": "plain_text", "text": cut(&m.title_line(), HEADER_MAX), "emoji": true },
    })];
    for s in m.visible() {
        let mut text = String::new();
        if let Some(h) = &s.heading {
            text.push_str(&format!("*{}*\n", escape_slack(h)));
        }
        let lines: Vec<String> = s
            .lines
            .iter()
            .map(|(k, v)| format!("*{}:* {}", escape_slack(k), escape_slack(v)))
            .collect();
        text.push_str(&lines.join("\n"));
        blocks.push(json!({
            "type": "section",
            "text": { "type": "mrkdwn", "text": cut(&text, SECTION_MAX) },
        }));
    }
    json!({ "text": cut(&escape_slack(&m.text()), SECTION_MAX), "blocks": blocks })
}

impl Notifier for Slack {
    fn description(&self) -> String {
        "Slack incoming webhook, Block Kit message".into()
    }

    fn deliver(
        &self,
        _event: &Event,
        n: &NotificationRequest,
        cx: &Context<'_>,
    ) -> Result<Delivery, Error> {
        let url = cx
            .secret("webhook_url")
            .ok_or_else(|| Error::permanent("secret `webhook_url` is not set"))?;
        let response = cx.http(&HttpRequest::post_json(
            url,
            &payload(&Message::from_request(n)),
        ))?;
        response.check()?;
        Ok(Delivery {
            remote_id: None,
            detail: format!(
                "HTTP {} {}",
                response.status,
                String::from_utf8_lossy(&response.body).trim()
            ),
        })
    }
}

eventpulse_sdk::export_notifier!(Slack);

#[cfg(test)]
mod tests {
    use super::*;
    use eventpulse_sdk::Severity;

    #[test]
    fn blocks_follow_the_message_and_escape_mrkdwn() {
        let m = Message::new(Severity::Critical, "[c1] OOMKilled: <oom> & co")
            .line("Resource", "Pod/shop/web-1")
            .section("Status")
            .line("Phase", "Running");
        let p = payload(&m);
        assert_eq!(p["blocks"][0]["type"], "header");
        assert_eq!(
            p["blocks"][0]["text"]["text"],
            "🔴 [c1] OOMKilled: <oom> & co"
        );
        assert_eq!(p["blocks"][1]["text"]["text"], "*Resource:* Pod/shop/web-1");
        assert_eq!(p["blocks"][2]["text"]["text"], "*Status*\n*Phase:* Running");
        assert!(p["text"].as_str().unwrap().contains("&lt;oom&gt; &amp; co"));
    }

    #[test]
    fn long_titles_fit_the_header_limit() {
        let m = Message::new(Severity::Info, "x".repeat(400));
        let p = payload(&m);
        assert_eq!(
            p["blocks"][0]["text"]["text"]
                .as_str()
                .unwrap()
                .chars()
                .count(),
            HEADER_MAX
        );
    }
}
