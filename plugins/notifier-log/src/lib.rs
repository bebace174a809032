//! `notifier-log`: delivers a notification by writing it to the host log
//! (through the `log` capability), with the incident and trace ids. The
//! channel to use while no real notifier is configured.

use eventpulse_sdk::{Context, Delivery, Error, Event, NotificationRequest, Notifier};

/// The notifier.
#[derive(Default)]
pub struct Log;

/// The one line a notification becomes.
pub fn render(event: &Event, n: &NotificationRequest) -> String {
    let mut line = format!("[{:?}] {}: {}", n.severity, n.title, n.body);
    for (k, v) in &n.fields.0 {
        line.push_str(&format!(" {k}={v}"));
    }
    if let Some(id) = &event.correlation.incident_id {
        line.push_str(&format!(" incident={id}"));
    }
    line.push_str(&format!(" trace={}", event.trace_id));
    line
}

impl Notifier for Log {
    fn description(&self) -> String {
        "writes each notification to the host log".into()
    }

    fn deliver(
        &self,
        event: &Event,
        n: &NotificationRequest,
        cx: &Context<'_>,
    ) -> Result<Delivery, Error> {
        let line = render(event, n);
        cx.info(&line);
        Ok(Delivery {
            remote_id: None,
            detail: format!("logged: {}", n.title),
        })
    }
}

eventpulse_sdk::export_notifier!(Log);

#[cfg(test)]
mod tests {
    use super::*;
    use eventpulse_sdk::AlertStatus;
    use eventpulse_sdk::Severity;
    use eventpulse_sdk::testing::{FakeHost, alert_event};

    #[test]
    fn logs_one_line_with_fields_and_ids() {
        let host = FakeHost::default();
        let cx = Context::new(&host);
        let mut event = alert_event("HighCPU", AlertStatus::Firing, &[("service", "app")]);
        event.correlation.incident_id = Some("inc-1".into());
        let n = NotificationRequest::new(
            "notifier-log",
            Severity::Critical,
            "High CPU on app",
            "cpu 97%",
        )
        .field("service", "app");
        let d = Log.deliver(&event, &n, &cx).unwrap();
        assert_eq!(d.detail, "logged: High CPU on app");
        let logs = host.logs();
        assert_eq!(logs.len(), 1, "{logs:?}");
        let line = &logs[0].1;
        assert!(line.contains("High CPU on app: cpu 97%"), "{line}");
        assert!(
            line.contains("service=app") && line.contains("incident=inc-1"),
            "{line}"
        );
    }
}
