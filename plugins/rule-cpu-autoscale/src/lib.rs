//! `rule-cpu-autoscale`: the seed scenario's rule.
//!
//! - A scale-out alert (`scale_out_alerts`, default `HighCPU`) firing →
//!   open an incident for the service, scale out, notify. `scaling =
//!   "absolute"` (default) ensures `max_replicas` (default 2); `"relative"`
//!   adds `step` (default 1) to the replica count this rule last brought the
//!   service to (`min_replicas` before any), up to `max_replicas`.
//! - A scale-in alert (`scale_in_alerts`, default `LowCPU`) firing →
//!   absolute: ensure `min_replicas` (default 1); relative: `step` fewer,
//!   down to `min_replicas`. A resolved scale-out alert resolves the
//!   incident; absolute, it also goes back to `min_replicas`; relative
//!   scaling is a ratchet, and capacity stays until a scale-in alert.
//! - A failed scale-out → compensate with `min_replicas` and mark the
//!   incident failed; a completed one resolves it, unless `resolve_on` is
//!   `alert`: then the incident stays `mitigating` until the alert resolves.
//! - Cooldown: after a scale-out, further scaling of the same service is
//!   suppressed for `cooldown_secs` (default 300), so a flapping alert does
//!   not cause a storm of actions. The timestamp lives in plugin state. A
//!   scale-in the cooldown holds back is not dropped: a durable timer
//!   retries it when the cooldown ends (cancelled by a new scale-out).
//!
//! - Verification (`verify_secs`, default off): the host checks the alert
//!   resolved that long after a scale-out completed; if it did not, the
//!   rule escalates with a critical notification.
//!
//! Config (manifest `[config]`): `scale_out_alerts` and `scale_in_alerts`
//! (comma-separated alert names; the rule subscribes to exactly these),
//! `scaling`, `step`, `service_label` (default `service`),
//! `min_replicas`, `max_replicas`, `cooldown_secs`, `action`
//! (default `action-docker-scale`), `channels` (comma-separated notifier
//! names, default `notifier-log`; `"channels.<severity>"` routes one
//! severity elsewhere), `resolve_on` (`action`, the default, or
//! `alert`).

use eventpulse_sdk::{
    ALERT_RAISED, ActionOutcome, ActionRequest, AlertStatus, Context, Decision, Error, Event,
    IncidentOpen, IncidentStatus, NotificationRequest, Rule, Severity, Subscription, Timer,
};

/// The rule; stateless between invocations (state lives in the host).
#[derive(Default)]
pub struct CpuAutoscale;

/// How a scale-out or scale-in alert changes the replica count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scaling {
    /// To `max_replicas` / `min_replicas`.
    Absolute,
    /// By `step`, within `min_replicas..=max_replicas`.
    Relative,
}

/// The comma-separated alert names of `key`, or `default`.
fn names(cx: &Context<'_>, key: &str, default: &str) -> Vec<String> {
    cx.config(key)
        .unwrap_or_else(|| default.into())
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Settings read from the manifest's `[config]`, with defaults.
struct Settings {
    scale_out: Vec<String>,
    scale_in: Vec<String>,
    scaling: Scaling,
    step: u64,
    /// Ask the host to check the alert resolved this long after a
    /// scale-out completed (0: off).
    verify_secs: u64,
    service_label: String,
    min_replicas: u64,
    max_replicas: u64,
    cooldown_ms: u64,
    action: String,
    resolve_on_alert: bool,
}

impl Settings {
    fn load(cx: &Context<'_>) -> Result<Settings, Error> {
        let num = |key: &str, default: u64| -> Result<u64, Error> {
            match cx.config(key) {
                None => Ok(default),
                Some(v) => v.parse().map_err(|_| {
                    Error::permanent(format!("config `{key}`: `{v}` is not a number"))
                }),
            }
        };
        let s = Settings {
            scale_out: names(cx, "scale_out_alerts", "HighCPU"),
            scale_in: names(cx, "scale_in_alerts", "LowCPU"),
            scaling: match cx.config("scaling").as_deref() {
                None | Some("absolute") => Scaling::Absolute,
                Some("relative") => Scaling::Relative,
                Some(other) => {
                    return Err(Error::permanent(format!(
                        "config `scaling`: `{other}` is neither `absolute` nor `relative`"
                    )));
                }
            },
            step: num("step", 1)?,
            verify_secs: num("verify_secs", 0)?,
            service_label: cx
                .config("service_label")
                .unwrap_or_else(|| "service".into()),
            min_replicas: num("min_replicas", 1)?,
            max_replicas: num("max_replicas", 2)?,
            cooldown_ms: num("cooldown_secs", 300)? * 1000,
            action: cx
                .config("action")
                .unwrap_or_else(|| "action-docker-scale".into()),
            resolve_on_alert: match cx.config("resolve_on").as_deref() {
                None | Some("action") => false,
                Some("alert") => true,
                Some(other) => {
                    return Err(Error::permanent(format!(
                        "config `resolve_on`: `{other}` is neither `action` nor `alert`"
                    )));
                }
            },
        };
        if s.min_replicas > s.max_replicas || s.step == 0 {
            return Err(Error::permanent(
                "config: need min_replicas <= max_replicas and step >= 1",
            ));
        }
        Ok(s)
    }

    /// The replica count a scale-out (`out`) or scale-in leads to from
    /// `current`.
    fn target(&self, current: u64, out: bool) -> u64 {
        match (self.scaling, out) {
            (Scaling::Absolute, true) => self.max_replicas,
            (Scaling::Absolute, false) => self.min_replicas,
            (Scaling::Relative, true) => current.saturating_add(self.step).min(self.max_replicas),
            (Scaling::Relative, false) => current
                .saturating_sub(self.step)
                .clamp(self.min_replicas, self.max_replicas),
        }
    }

    fn scale(&self, service: &str, replicas: u64, reason: String) -> ActionRequest {
        ActionRequest::new(&self.action, service)
            .param("replicas", replicas)
            .reason(reason)
    }
}

fn cooldown_key(service: &str) -> String {
    format!("last-scale-out:{service}")
}

fn scale_in_timer(service: &str) -> String {
    format!("scale-in:{service}")
}

fn replicas_key(service: &str) -> String {
    format!("replicas:{service}")
}

/// The replica count this rule last brought `service` to, else
/// `min_replicas`.
fn current(cx: &Context<'_>, s: &Settings, service: &str) -> u64 {
    cx.state_get(&replicas_key(service))
        .and_then(|v| v.parse().ok())
        .unwrap_or(s.min_replicas)
}

/// Milliseconds left in the service's cooldown, if any.
fn cooling(cx: &Context<'_>, s: &Settings, service: &str) -> Option<u64> {
    let last: u64 = cx.state_get(&cooldown_key(service))?.parse().ok()?;
    let until = last.saturating_add(s.cooldown_ms);
    (cx.now() < until).then(|| until - cx.now())
}

impl Rule for CpuAutoscale {
    fn description(&self) -> String {
        "HighCPU → scale out and open an incident; LowCPU or resolved → scale in".into()
    }

    fn subscriptions_in(&self, cx: &Context<'_>) -> Vec<Subscription> {
        let mut all = names(cx, "scale_out_alerts", "HighCPU");
        all.extend(names(cx, "scale_in_alerts", "LowCPU"));
        all.iter()
            .map(|name| Subscription::kind(ALERT_RAISED).label("alertname", name))
            .collect()
    }

    fn decide(&self, event: &Event, cx: &Context<'_>) -> Result<Decision, Error> {
        let Some(alert) = &event.alert else {
            return Ok(Decision::none().note("not an alert"));
        };
        let s = Settings::load(cx)?;
        let Some(service) = alert.labels.get(&s.service_label) else {
            return Ok(Decision::none().note(format!("no `{}` label", s.service_label)));
        };

        let out = s.scale_out.contains(&alert.name);
        let scale_in = s.scale_in.contains(&alert.name);
        match (out, scale_in, alert.status) {
            (true, _, AlertStatus::Firing) => {
                if let Some(left) = cooling(cx, &s, service) {
                    return Ok(Decision::none().note(format!(
                        "scale-out of {service} suppressed: cooldown, {}s left",
                        left.div_ceil(1000)
                    )));
                }
                cx.cancel_timer(&scale_in_timer(service));
                cx.state_set(
                    &cooldown_key(service),
                    &cx.now().to_string(),
                    Some(s.cooldown_ms),
                );
                let severity = alert.severity.unwrap_or(Severity::Warning);
                let title = format!("High CPU on {service}");
                let summary = alert
                    .annotations
                    .get("summary")
                    .unwrap_or("CPU usage above threshold")
                    .to_owned();
                let (from, to) = (
                    current(cx, &s, service),
                    s.target(current(cx, &s, service), true),
                );
                let mut decision = Decision::none().open_incident(IncidentOpen {
                    title: title.clone(),
                    service: service.into(),
                    severity,
                    dedup_key: format!("cpu:{service}"),
                    summary: summary.clone(),
                });
                if s.scaling == Scaling::Relative && to == from {
                    decision = decision.note(format!(
                        "{service} is at max_replicas ({to}): no further scale-out"
                    ));
                } else {
                    let reason = format!("{} on {service}", alert.name);
                    decision = decision.action(s.scale(service, to, reason));
                    if s.verify_secs > 0 {
                        decision = decision.verify(&s.action, service, s.verify_secs);
                    }
                }
                for channel in cx.channels(severity) {
                    decision = decision.notify(
                        NotificationRequest::new(channel, severity, &title, &summary)
                            .dedup_key(format!("cpu:{service}"))
                            .field("service", service)
                            .field("replicas", to.to_string()),
                    );
                }
                Ok(decision)
            }
            (true, _, AlertStatus::Resolved) | (false, true, AlertStatus::Firing) => {
                let mut decision = Decision::none();
                if out {
                    let note = format!("{} resolved", alert.name);
                    decision = decision.transition(IncidentStatus::Resolved, note);
                    if s.scaling == Scaling::Relative {
                        // A ratchet: capacity stays until a scale-in alert.
                        return Ok(decision.note(format!(
                            "{service} keeps its replicas until a scale-in alert"
                        )));
                    }
                }
                if let Some(left) = cooling(cx, &s, service) {
                    cx.set_timer(&scale_in_timer(service), left, service);
                    return Ok(decision.note(format!(
                        "scale-in of {service} deferred: cooldown, {}s left; retried then",
                        left.div_ceil(1000)
                    )));
                }
                let reason = format!("{} {:?} on {service}", alert.name, alert.status);
                let to = if out {
                    s.min_replicas
                } else {
                    s.target(current(cx, &s, service), false)
                };
                Ok(decision.action(s.scale(service, to, reason.to_lowercase())))
            }
            _ => Ok(Decision::none().note("nothing to do")),
        }
    }

    fn on_timer(&self, _event: &Event, timer: &Timer, cx: &Context<'_>) -> Result<Decision, Error> {
        let s = Settings::load(cx)?;
        if let Some(failed) = timer.verification_failed() {
            // Scaling out did not bring the alert down: tell a human.
            let service = &failed.target;
            let title = format!("Scale-out of {service} did not resolve the alert");
            let body = format!(
                "{} on {service} completed, and the alert still fires after {} s",
                failed.action, failed.within_secs
            );
            let mut d = Decision::none().note(format!("escalated: {title}"));
            for channel in cx.channels(Severity::Critical) {
                d = d.notify(
                    NotificationRequest::new(channel, Severity::Critical, &title, &body)
                        .dedup_key(format!("cpu:{service}:escalated"))
                        .field("service", service.as_str()),
                );
            }
            return Ok(d);
        }
        let service = timer.data.as_str();
        if timer.key != scale_in_timer(service) {
            return Ok(Decision::none().note(format!("unknown timer `{}`", timer.key)));
        }
        if let Some(left) = cooling(cx, &s, service) {
            cx.set_timer(&timer.key, left, service);
            return Ok(Decision::none().note(format!(
                "scale-in of {service} deferred again: cooldown, {}s left",
                left.div_ceil(1000)
            )));
        }
        let reason = format!("scale-in of {service} held back by the cooldown");
        Ok(Decision::none().action(s.scale(service, s.min_replicas, reason)))
    }

    fn on_action_completed(
        &self,
        _event: &Event,
        outcome: &ActionOutcome,
        cx: &Context<'_>,
    ) -> Result<Decision, Error> {
        let s = Settings::load(cx)?;
        let replicas = outcome.request.params["replicas"].as_u64().unwrap_or(0);
        if outcome.request.action == s.action {
            cx.state_set(
                &replicas_key(&outcome.request.target),
                &replicas.to_string(),
                None,
            );
        }
        if replicas > s.min_replicas {
            let note = format!("{} scaled to {replicas} replicas", outcome.request.target);
            if s.resolve_on_alert {
                return Ok(Decision::none().note(format!("{note}; resolves with the alert")));
            }
            return Ok(Decision::none().transition(IncidentStatus::Resolved, note));
        }
        Ok(Decision::none())
    }

    fn on_action_failed(
        &self,
        _event: &Event,
        outcome: &ActionOutcome,
        cx: &Context<'_>,
    ) -> Result<Decision, Error> {
        let s = Settings::load(cx)?;
        let replicas = outcome.request.params["replicas"].as_u64().unwrap_or(0);
        if outcome.request.action != s.action || replicas <= s.min_replicas {
            // A failed scale-in needs no compensation: it left more capacity.
            return Ok(Decision::none().note("failed scale-in: no compensation"));
        }
        let service = &outcome.request.target;
        let why = match &outcome.result {
            Err(e) => e.to_string(),
            Ok(_) => "unknown".into(),
        };
        if outcome.never_ran() {
            // Refused, rejected or not approved: nothing changed, so
            // nothing to compensate; the incident waits for the alert.
            let note = format!("scale-out of {service} did not run: {why}");
            let mut d = Decision::none().note(note.clone());
            for channel in cx.channels(Severity::Warning) {
                d = d.notify(
                    NotificationRequest::new(channel, Severity::Warning, &note, &why)
                        .dedup_key(format!("not-run:{}", outcome.action_id)),
                );
            }
            return Ok(d);
        }
        Ok(Decision::none()
            .action(s.scale(
                service,
                s.min_replicas,
                format!("compensate failed scale-out of {service}: {why}"),
            ))
            .transition(
                IncidentStatus::Failed,
                format!("scale-out of {service} failed: {why}"),
            ))
    }
}

eventpulse_sdk::export_rule!(CpuAutoscale);

#[cfg(test)]
mod tests {
    use super::*;
    use eventpulse_sdk::testing::{FakeHost, alert_event};
    use eventpulse_sdk::{ActionResult, IncidentDirective};

    fn high(status: AlertStatus) -> Event {
        alert_event(
            "HighCPU",
            status,
            &[("service", "app"), ("severity", "critical")],
        )
    }

    #[test]
    fn firing_opens_incident_scales_out_and_notifies() {
        let host = FakeHost::new().at(1_000_000);
        let d = CpuAutoscale
            .decide(&high(AlertStatus::Firing), &host.context())
            .unwrap();
        let Some(IncidentDirective::Open(open)) = &d.incident else {
            panic!("expected an incident, got {d:?}")
        };
        assert_eq!(open.service, "app");
        assert_eq!(open.severity, Severity::Critical);
        assert_eq!(d.actions.len(), 1);
        assert_eq!(d.actions[0].action, "action-docker-scale");
        assert_eq!(d.actions[0].target, "app");
        assert_eq!(d.actions[0].params["replicas"], 2);
        assert_eq!(d.notifications.len(), 1);
        assert_eq!(d.notifications[0].channel, "notifier-log");
    }

    #[test]
    fn flapping_alert_is_suppressed_until_cooldown_ends() {
        let host = FakeHost::new().at(1_000_000).config("cooldown_secs", "60");
        let cx = host.context();
        assert_eq!(
            CpuAutoscale
                .decide(&high(AlertStatus::Firing), &cx)
                .unwrap()
                .actions
                .len(),
            1
        );

        host.advance(5_000);
        let resolved = CpuAutoscale
            .decide(&high(AlertStatus::Resolved), &cx)
            .unwrap();
        assert!(
            resolved.actions.is_empty(),
            "scale-in deferred: {resolved:?}"
        );
        let timers = host.timers();
        assert_eq!(timers.len(), 1, "a retry is scheduled");
        assert_eq!(
            (timers[0].0.as_str(), timers[0].1),
            ("scale-in:app", 1_060_000)
        );
        assert!(matches!(
            resolved.incident,
            Some(IncidentDirective::Transition {
                status: IncidentStatus::Resolved,
                ..
            })
        ));
        host.advance(5_000);
        let again = CpuAutoscale
            .decide(&high(AlertStatus::Firing), &cx)
            .unwrap();
        assert!(again.is_empty(), "suppressed: {again:?}");
        assert!(again.note.unwrap().contains("cooldown, 50s left"));

        host.advance(51_000);
        let after = CpuAutoscale
            .decide(&high(AlertStatus::Firing), &cx)
            .unwrap();
        assert_eq!(after.actions.len(), 1, "cooldown over: {after:?}");
    }

    #[test]
    fn resolved_and_lowcpu_scale_in() {
        let host = FakeHost::new().at(1_000_000).config("min_replicas", "1");
        let cx = host.context();
        let d = CpuAutoscale
            .decide(&high(AlertStatus::Resolved), &cx)
            .unwrap();
        assert_eq!(d.actions[0].params["replicas"], 1);
        let low = alert_event("LowCPU", AlertStatus::Firing, &[("service", "app")]);
        let d = CpuAutoscale.decide(&low, &cx).unwrap();
        assert_eq!(d.actions[0].params["replicas"], 1);
        assert!(d.incident.is_none());
    }

    #[test]
    fn a_scale_out_that_never_ran_is_not_compensated() {
        let host = FakeHost::new();
        let request = ActionRequest::new("action-docker-scale", "app").param("replicas", 2);
        let outcome = ActionOutcome {
            action_id: "a1".into(),
            request,
            result: Err(Error::permanent("rejected by alice via api")),
            attempts: 0,
        };
        assert!(outcome.never_ran());
        let d = CpuAutoscale
            .on_action_failed(&high(AlertStatus::Firing), &outcome, &host.context())
            .unwrap();
        assert!(d.actions.is_empty(), "{d:?}");
        assert!(d.incident.is_none(), "the incident waits for the alert");
        assert!(d.notifications[0].title.contains("did not run"), "{d:?}");
    }

    #[test]
    fn failed_scale_out_is_compensated() {
        let host = FakeHost::new();
        let request = ActionRequest::new("action-docker-scale", "app").param("replicas", 2);
        let outcome = ActionOutcome {
            action_id: "a1".into(),
            request,
            result: Err(Error::permanent("replica never became healthy")),
            attempts: 3,
        };
        let d = CpuAutoscale
            .on_action_failed(&high(AlertStatus::Firing), &outcome, &host.context())
            .unwrap();
        assert_eq!(d.actions[0].params["replicas"], 1);
        assert!(d.actions[0].reason.contains("never became healthy"));
        assert!(matches!(
            d.incident,
            Some(IncidentDirective::Transition {
                status: IncidentStatus::Failed,
                ..
            })
        ));
    }

    #[test]
    fn completed_scale_out_resolves_incident() {
        let host = FakeHost::new();
        let outcome = ActionOutcome {
            action_id: "a1".into(),
            request: ActionRequest::new("action-docker-scale", "app").param("replicas", 2),
            result: Ok(ActionResult {
                summary: "ok".into(),
                details: serde_json::json!({}),
            }),
            attempts: 1,
        };
        let d = CpuAutoscale
            .on_action_completed(&high(AlertStatus::Firing), &outcome, &host.context())
            .unwrap();
        assert!(matches!(
            d.incident,
            Some(IncidentDirective::Transition {
                status: IncidentStatus::Resolved,
                ..
            })
        ));

        // With `resolve_on = alert` the incident waits for the alert.
        let host = FakeHost::new().config("resolve_on", "alert");
        let d = CpuAutoscale
            .on_action_completed(&high(AlertStatus::Firing), &outcome, &host.context())
            .unwrap();
        assert!(d.incident.is_none(), "{d:?}");
        let bad = FakeHost::new().config("resolve_on", "never");
        let err = CpuAutoscale
            .on_action_completed(&high(AlertStatus::Firing), &outcome, &bad.context())
            .unwrap_err();
        assert!(err.to_string().contains("resolve_on"), "{err}");
    }

    #[test]
    fn bad_config_is_a_permanent_error() {
        let host = FakeHost::new().config("max_replicas", "two");
        let err = CpuAutoscale
            .decide(&high(AlertStatus::Firing), &host.context())
            .unwrap_err();
        assert_eq!(
            err,
            Error::permanent("config `max_replicas`: `two` is not a number")
        );
    }

    #[test]
    fn missing_service_label_does_nothing() {
        let host = FakeHost::new();
        let e = alert_event("HighCPU", AlertStatus::Firing, &[]);
        assert!(CpuAutoscale.decide(&e, &host.context()).unwrap().is_empty());
    }

    /// Seed 001: `cpu_high` scales out one replica at a time, counting from
    /// what the completed actions reached, and stops at `max_replicas`.
    #[test]
    fn configured_names_and_relative_steps_up_to_the_cap() {
        let host = FakeHost::new()
            .at(1_000_000)
            .config("scale_out_alerts", "cpu_high, HighCPU")
            .config("scale_in_alerts", "cpu_low")
            .config("scaling", "relative")
            .config("max_replicas", "3")
            .config("cooldown_secs", "0");
        let cx = host.context();
        let subs: Vec<String> = CpuAutoscale
            .subscriptions_in(&cx)
            .iter()
            .map(|s| s.labels.get("alertname").unwrap().to_owned())
            .collect();
        assert_eq!(subs, ["cpu_high", "HighCPU", "cpu_low"]);

        let cpu_high = alert_event("cpu_high", AlertStatus::Firing, &[("service", "app")]);
        let completed = |replicas: u64| {
            let outcome = ActionOutcome {
                action_id: "a".into(),
                request: ActionRequest::new("action-docker-scale", "app")
                    .param("replicas", replicas),
                result: Ok(ActionResult {
                    summary: "ok".into(),
                    details: serde_json::json!({}),
                }),
                attempts: 1,
            };
            CpuAutoscale
                .on_action_completed(&cpu_high, &outcome, &cx)
                .unwrap();
        };
        let wanted = |d: &Decision| {
            d.actions
                .first()
                .map(|a| a.params["replicas"].as_u64().unwrap())
        };
        let d = CpuAutoscale.decide(&cpu_high, &cx).unwrap();
        assert_eq!(wanted(&d), Some(2));
        completed(2);
        let d = CpuAutoscale.decide(&cpu_high, &cx).unwrap();
        assert_eq!(wanted(&d), Some(3));
        completed(3);
        let d = CpuAutoscale.decide(&cpu_high, &cx).unwrap();
        assert_eq!(wanted(&d), None, "capped: {d:?}");
        assert!(d.incident.is_some() && !d.notifications.is_empty());
        assert!(d.note.unwrap().contains("max_replicas (3)"));

        let mut resolved = cpu_high.clone();
        resolved.alert.as_mut().unwrap().status = AlertStatus::Resolved;
        let d = CpuAutoscale.decide(&resolved, &cx).unwrap();
        assert!(
            d.actions.is_empty() && host.timers().is_empty(),
            "a ratchet: {d:?}"
        );
        assert!(d.incident.is_some(), "the incident resolves");

        let low = alert_event("cpu_low", AlertStatus::Firing, &[("service", "app")]);
        assert_eq!(
            wanted(&CpuAutoscale.decide(&low, &cx).unwrap()),
            Some(2),
            "one step in"
        );
        let other = alert_event("LowCPU", AlertStatus::Firing, &[("service", "app")]);
        assert!(
            CpuAutoscale.decide(&other, &cx).unwrap().is_empty(),
            "not configured"
        );

        let bad = FakeHost::new().config("scaling", "sideways");
        assert!(CpuAutoscale.decide(&cpu_high, &bad.context()).is_err());
    }

    /// The scale-in a cooldown held back runs when the timer fires; a new
    /// scale-out before then cancels it.
    #[test]
    fn a_deferred_scale_in_runs_when_its_timer_fires() {
        let host = FakeHost::new().at(1_000_000).config("cooldown_secs", "60");
        let cx = host.context();
        CpuAutoscale
            .decide(&high(AlertStatus::Firing), &cx)
            .unwrap();
        host.advance(10_000);
        CpuAutoscale
            .decide(&high(AlertStatus::Resolved), &cx)
            .unwrap();
        host.advance(50_000);
        let (fired, timer) = host
            .fire("scale-in:app", &high(AlertStatus::Resolved))
            .unwrap();
        let d = CpuAutoscale.on_timer(&fired, &timer, &cx).unwrap();
        assert_eq!(d.actions.len(), 1, "{d:?}");
        assert_eq!(d.actions[0].params["replicas"], 1);

        // Fired early (the clock says the cooldown is not over): re-armed.
        CpuAutoscale
            .decide(&high(AlertStatus::Firing), &cx)
            .unwrap();
        host.advance(1_000);
        CpuAutoscale
            .decide(&high(AlertStatus::Resolved), &cx)
            .unwrap();
        let (fired, timer) = host
            .fire("scale-in:app", &high(AlertStatus::Resolved))
            .unwrap();
        let d = CpuAutoscale.on_timer(&fired, &timer, &cx).unwrap();
        assert!(d.actions.is_empty(), "{d:?}");
        assert_eq!(host.timers().len(), 1, "re-armed");

        // A new scale-out cancels it.
        host.advance(60_000);
        CpuAutoscale
            .decide(&high(AlertStatus::Firing), &cx)
            .unwrap();
        assert!(host.timers().is_empty());
    }
}
