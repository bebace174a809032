//! `notifier-telegram`: sends each notification with the Bot API's
//! `sendMessage` to the configured chat, in `HTML` parse mode with every
//! value escaped (the only characters Telegram's HTML mode needs escaped are
//! `<`, `>`, `&` and `"`; Markdown would need a dozen, context-dependent).
//!
//! - Token: the `bot_token` secret; chat: config `chat_id`; API base:
//!   config `api_url` (default `https://api.telegram.org`).
//! - `{"ok": true, "result": {"message_id": N}}` → delivered, remote id N.
//! - 429 → retried after `parameters.retry_after` seconds; 5xx retried;
//!   other errors (400 chat not found, 401 bad token, 403 blocked) permanent.
//!   The token is part of the URL, so no error text includes the URL.

use eventpulse_sdk::message::{Message, escape_html};
use eventpulse_sdk::{Context, Delivery, Error, Event, HttpRequest, NotificationRequest, Notifier};
use serde_json::{Value, json};

/// The notifier.
#[derive(Default)]
pub struct Telegram;

/// Telegram's limit on message text (after entity parsing).
const TEXT_MAX: usize = 4096;

/// The message text: the HTML rendering, or the escaped plain text cut to
/// fit when the HTML would be too long (cutting HTML could split a tag).
pub fn text(m: &Message) -> String {
    let html = m.html(false);
    if html.chars().count() <= TEXT_MAX {
        return html;
    }
    let plain: String = m.text().chars().take(TEXT_MAX / 2).collect();
    escape_html(&format!("{plain}…"))
}

/// The error for a failed `sendMessage` response.
pub fn error(status: u16, body: &Value) -> Error {
    let code = body["error_code"].as_u64().unwrap_or(u64::from(status));
    let description = body["description"].as_str().unwrap_or("no description");
    let message = format!("telegram {code}: {description}");
    match (code, body["parameters"]["retry_after"].as_u64()) {
        (_, Some(secs)) => Error::retry_after(message, std::time::Duration::from_secs(secs)),
        (429 | 500..=599, None) => Error::retryable(message),
        _ => Error::permanent(message),
    }
}

impl Notifier for Telegram {
    fn description(&self) -> String {
        "Telegram Bot API sendMessage, HTML".into()
    }

    fn deliver(
        &self,
        _event: &Event,
        n: &NotificationRequest,
        cx: &Context<'_>,
    ) -> Result<Delivery, Error> {
        let token = cx
            .secret("bot_token")
            .ok_or_else(|| Error::permanent("secret `bot_token` is not set"))?;
        let chat_id = cx
            .config("chat_id")
            .ok_or_else(|| Error::permanent("config `chat_id` is not set"))?;
        let base = cx
            .config("api_url")
            .unwrap_or_else(|| "https://api.telegram.org".into());
        let body = json!({
            "chat_id": chat_id,
            "text": text(&Message::from_request(n)),
            "parse_mode": "HTML",
            "disable_web_page_preview": true,
        });
        let url = format!("{}/bot{token}/sendMessage", base.trim_end_matches('/'));
        let response = cx.http(&HttpRequest::post_json(url, &body))?;
        let parsed: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        if (200..300).contains(&response.status) && parsed["ok"] == true {
            let id = parsed["result"]["message_id"].as_i64();
            return Ok(Delivery {
                remote_id: id.map(|i| i.to_string()),
                detail: format!("sent to chat {chat_id}"),
            });
        }
        if parsed.is_null() {
            // Not the Bot API's JSON (a proxy's error page): judge by status.
            response.check()?;
            return Err(Error::retryable(format!(
                "HTTP {}: not a Bot API response",
                response.status
            )));
        }
        Err(error(response.status, &parsed))
    }
}

eventpulse_sdk::export_notifier!(Telegram);

#[cfg(test)]
mod tests {
    use super::*;
    use eventpulse_sdk::Severity;

    #[test]
    fn html_mode_text_is_escaped() {
        let m =
            Message::new(Severity::Warning, "[c1] BackOff: <pod> & \"x\"").line("Message", "a<b");
        let t = text(&m);
        assert!(
            t.starts_with("<b>🟡 [c1] BackOff: &lt;pod&gt; &amp; &quot;x&quot;</b>"),
            "{t}"
        );
        assert!(t.contains("Message: a&lt;b"));
    }

    #[test]
    fn too_long_messages_are_cut_as_plain_text() {
        let m = Message::new(Severity::Info, "t").line("Message", "<".repeat(5000));
        let t = text(&m);
        assert!(t.chars().count() <= TEXT_MAX * 2);
        assert!(!t.contains('<'));
    }

    #[test]
    fn bot_api_errors_are_classified() {
        let throttled = json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 3", "parameters": {"retry_after": 3}});
        assert_eq!(
            error(429, &throttled),
            Error::RetryAfter {
                message: "telegram 429: Too Many Requests: retry after 3".into(),
                after_ms: 3000
            }
        );
        let gone =
            json!({"ok": false, "error_code": 400, "description": "Bad Request: chat not found"});
        assert!(matches!(error(400, &gone), Error::Permanent(_)));
        let down = json!({"ok": false, "error_code": 502, "description": "Bad Gateway"});
        assert!(matches!(error(502, &down), Error::Retryable(_)));
    }
}
