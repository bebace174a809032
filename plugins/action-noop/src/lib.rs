//! `action-noop`: a runbook action that changes nothing. It logs the
//! request and reports it back, and remembers the last parameters applied
//! per target, so a pipeline can run end to end before any capability is
//! granted (and so a rule can be tried out safely: point its `action` at
//! `action-noop`).

use eventpulse_sdk::{Action, ActionRequest, ActionResult, Context, Error, Event};

/// The action.
#[derive(Default)]
pub struct Noop;

impl Action for Noop {
    fn description(&self) -> String {
        "changes nothing; reports what it was asked to do".into()
    }

    fn run(
        &self,
        event: &Event,
        request: &ActionRequest,
        cx: &Context<'_>,
    ) -> Result<ActionResult, Error> {
        let key = format!("last:{}", request.target);
        let previous = cx.state_get(&key);
        let params = request.params.to_string();
        cx.state_set(&key, &params, None);
        cx.info(&format!(
            "no-op {} on {}: {} ({})",
            request.action, request.target, params, request.reason
        ));
        Ok(ActionResult {
            summary: format!("no-op on {}: {params}", request.target),
            details: serde_json::json!({
                "target": request.target,
                "params": request.params,
                "previous": previous.and_then(|p| serde_json::from_str::<serde_json::Value>(&p).ok()),
                "action_id": event.correlation.action_id,
            }),
        })
    }
}

eventpulse_sdk::export_action!(Noop);

#[cfg(test)]
mod tests {
    use super::*;
    use eventpulse_sdk::AlertStatus;
    use eventpulse_sdk::testing::{FakeHost, alert_event};

    #[test]
    fn reports_the_request_and_remembers_the_previous_params() {
        let host = FakeHost::default();
        let cx = Context::new(&host);
        let event = alert_event("HighCPU", AlertStatus::Firing, &[("service", "app")]);
        let first = ActionRequest::new("action-noop", "app").param("replicas", 2);
        let r = Noop.run(&event, &first, &cx).unwrap();
        assert_eq!(r.details["target"], "app");
        assert_eq!(r.details["params"]["replicas"], 2);
        assert!(r.details["previous"].is_null());
        let second = ActionRequest::new("action-noop", "app").param("replicas", 1);
        let r = Noop.run(&event, &second, &cx).unwrap();
        assert_eq!(r.details["previous"]["replicas"], 2);
        assert!(r.summary.contains("replicas"), "{}", r.summary);
    }
}
