//! The notification message shape every first-party notifier renders
//! (seed 003): a title line, then `Label: value` lines grouped in sections.
//!
//! ```text
//! 🔴 [ZGMF-X10A] OOMKilled: Container killed due to out of memory
//!
//! Resource: Pod/atlhyper/atlhyper-agent-7d8f9b6c5d-x4k2m
//! Message: Container exceeded memory limit and was killed
//! Occurrences: 3
//!
//! Status:
//!   Phase: Running
//!   Restarts: 5
//!
//! Related Deployment:
//!   Name: atlhyper-agent
//!   Replicas: 2/3
//!
//! Time: 2026-01-25 01:30:45 UTC
//! ```
//!
//! A rule builds a [`Message`] and turns it into a [`NotificationRequest`]:
//! the plain text goes in `body`, the lines in `fields` (`Section.Label`
//! keys, in order), so a notifier can rebuild the structure with
//! [`Message::from_request`] and render it as Block Kit, HTML or text. The
//! host's deduplication adds `suppressed` and `dedup_seen` fields, shown
//! as "Suppressed repeats".

use crate::model::{NotificationRequest, Severity, Timestamp};

/// One titled group of lines; the untitled first group is the header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Section {
    /// `None` for top-level lines.
    pub heading: Option<String>,
    /// `(label, value)` lines.
    pub lines: Vec<(String, String)>,
}

/// A notification message before rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// How bad (the title's marker).
    pub severity: Severity,
    /// Title line, without the marker.
    pub title: String,
    /// Sections in order; lines outside any section come first.
    pub sections: Vec<Section>,
}

/// The marker before a title.
pub fn marker(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "🔴",
        Severity::Error => "🟠",
        Severity::Warning => "🟡",
        Severity::Info => "🔵",
    }
}

/// `2026-01-25 01:30:45 UTC` for a timestamp in ms.
pub fn format_time(ms: Timestamp) -> String {
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

const HOST_FIELDS: [(&str, &str); 2] = [
    ("suppressed", "Suppressed repeats"),
    ("dedup_seen", "Seen in all"),
];

impl Message {
    /// A message with a title and no lines.
    pub fn new(severity: Severity, title: impl Into<String>) -> Self {
        Message {
            severity,
            title: title.into(),
            sections: vec![Section::default()],
        }
    }

    /// Add a line to the current section.
    pub fn line(mut self, label: impl Into<String>, value: impl Into<String>) -> Self {
        let section = self.sections.last_mut().expect("always one section");
        section.lines.push((label.into(), value.into()));
        self
    }

    /// Start a titled section; later lines go into it.
    pub fn section(mut self, heading: impl Into<String>) -> Self {
        self.sections.push(Section {
            heading: Some(heading.into()),
            lines: Vec::new(),
        });
        self
    }

    /// Start an untitled section (e.g. for the closing `Time` line).
    pub fn end_section(mut self) -> Self {
        self.sections.push(Section::default());
        self
    }

    /// The title with its severity marker.
    pub fn title_line(&self) -> String {
        format!("{} {}", marker(self.severity), self.title)
    }

    /// Non-empty sections.
    pub fn visible(&self) -> impl Iterator<Item = &Section> {
        self.sections.iter().filter(|s| !s.lines.is_empty())
    }

    /// Plain text, in the seed 003 shape.
    pub fn text(&self) -> String {
        let mut out = self.title_line();
        for s in self.visible() {
            out.push_str("\n\n");
            let indent = match &s.heading {
                Some(h) => {
                    out.push_str(h);
                    out.push_str(":\n");
                    "  "
                }
                None => "",
            };
            let lines: Vec<String> = s
                .lines
                .iter()
                .map(|(k, v)| format!("{indent}{k}: {v}"))
                .collect();
            out.push_str(&lines.join("\n"));
        }
        out
    }

    /// HTML (for email and Telegram's `HTML` parse mode): every value escaped.
    /// `block` wraps sections: `<p>` for email, nothing for Telegram, which
    /// allows only a few tags.
    pub fn html(&self, paragraphs: bool) -> String {
        let (open, close, br) = if paragraphs {
            ("<p>", "</p>\n", "<br>\n")
        } else {
            ("", "\n\n", "\n")
        };
        let mut out = format!("{open}<b>{}</b>{close}", escape_html(&self.title_line()));
        for s in self.visible() {
            out.push_str(open);
            if let Some(h) = &s.heading {
                out.push_str(&format!("<b>{}:</b>{br}", escape_html(h)));
            }
            let lines: Vec<String> = s
                .lines
                .iter()
                .map(|(k, v)| format!("{}: {}", escape_html(k), escape_html(v)))
                .collect();
            out.push_str(&lines.join(br));
            out.push_str(close);
        }
        out.trim_end().to_owned()
    }

    /// Lines as request fields: `Label` or `Section.Label` keys, in order.
    pub fn fields(&self) -> Vec<(String, String)> {
        self.sections
            .iter()
            .flat_map(|s| {
                s.lines.iter().map(move |(k, v)| {
                    let key = match &s.heading {
                        Some(h) => format!("{h}.{k}"),
                        None => k.clone(),
                    };
                    (key, v.clone())
                })
            })
            .collect()
    }

    /// The request for `channel`: text body, structured fields.
    pub fn into_request(self, channel: impl Into<String>) -> NotificationRequest {
        let mut n =
            NotificationRequest::new(channel, self.severity, self.title.clone(), self.text());
        n.fields.0 = self.fields();
        n
    }

    /// Rebuild the message from a request: sections from `Section.Label`
    /// field keys; a request without fields keeps its body as one line.
    pub fn from_request(n: &NotificationRequest) -> Message {
        let mut m = Message::new(n.severity, n.title.clone());
        if n.fields.0.is_empty() && !n.body.is_empty() {
            return m.line("Details", n.body.clone());
        }
        let mut host = Vec::new();
        for (key, value) in &n.fields.0 {
            if let Some((_, label)) = HOST_FIELDS.iter().find(|(k, _)| k == key) {
                host.push(((*label).to_owned(), value.clone()));
                continue;
            }
            let (heading, label) = match key.split_once('.') {
                Some((h, l)) => (Some(h), l),
                None => (None, key.as_str()),
            };
            let current = m.sections.last().and_then(|s| s.heading.as_deref());
            if heading != current {
                m = match heading {
                    Some(h) => m.section(h),
                    None => m.end_section(),
                };
            }
            m = m.line(label, value.clone());
        }
        if !host.is_empty() {
            m = m.end_section();
            for (k, v) in host {
                m = m.line(k, v);
            }
        }
        m
    }
}

/// `&`, `<`, `>` and `"` escaped, as HTML (and Telegram's HTML mode) needs.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// Slack `mrkdwn` escaping: `&`, `<` and `>` only (Slack's documented set).
pub fn escape_slack(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oom() -> Message {
        Message::new(
            Severity::Critical,
            "[ZGMF-X10A] OOMKilled: Container killed due to out of memory",
        )
        .line("Resource", "Pod/atlhyper/agent-1")
        .line("Occurrences", "3")
        .section("Status")
        .line("Phase", "Running")
        .line("Ready", "0/1")
        .section("Related Deployment")
        .line("Name", "atlhyper-agent")
        .end_section()
        .line("Time", format_time(1_769_304_645_000))
    }

    #[test]
    fn text_has_the_seed_shape() {
        assert_eq!(
            oom().text(),
            "🔴 [ZGMF-X10A] OOMKilled: Container killed due to out of memory\n\n\
             Resource: Pod/atlhyper/agent-1\nOccurrences: 3\n\n\
             Status:\n  Phase: Running\n  Ready: 0/1\n\n\
             Related Deployment:\n  Name: atlhyper-agent\n\n\
             Time: 2026-01-25 01:30:45 UTC"
        );
    }

    #[test]
    fn a_request_round_trips_with_host_fields() {
        let mut n = oom().into_request("notifier-slack");
        assert_eq!(n.fields.get("Status.Phase"), Some("Running"));
        n.fields.0.push(("suppressed".into(), "4".into()));
        let back = Message::from_request(&n);
        assert!(back.text().starts_with(&oom().text()));
        assert!(
            back.text().ends_with("Suppressed repeats: 4"),
            "{}",
            back.text()
        );
    }

    #[test]
    fn html_escapes_every_value() {
        let m =
            Message::new(Severity::Warning, "a <b> & \"c\"").line("Message", "<script>x</script>");
        let html = m.html(false);
        assert!(html.contains("a &lt;b&gt; &amp; &quot;c&quot;"), "{html}");
        assert!(html.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(!html.contains("<script>"));
        assert_eq!(escape_slack("<!channel> & co"), "&lt;!channel&gt; &amp; co");
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_time(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }
}
