//! `rule-min-nodes` (seed 002): keep a k3s worker pool between `min_nodes`
//! and `max_nodes`, saying why at every step with named signals.
//!
//! Input is Prometheus alerts (label `pool`, default pool `workers`):
//! - `K3sWorkersBelowMinimum` firing, annotation `ready_workers`:
//!   `MinimumNodesViolation`, then `AutoScaleUpToMinimum` (or
//!   `EmergencyScaleUp` when `emergency_threshold` or more are missing at
//!   once); opens an incident (`min-nodes:<pool>`), asks `action` (default
//!   `action-k3s-node-add`) to add the missing workers (never past
//!   `max_nodes`), and notifies `channels` (or `"channels.critical"`).
//! - `K3sWorkersBelowMinimum` resolved: `MinimumNodesRestored`; the
//!   incident resolves.
//! - `K3sScaleDownCandidate` firing, annotations `ready_workers`,
//!   `pending_pods`: with pods pending, `ScaleDownBlocked` on an incident
//!   (`scale-down:<pool>`, info) so the reason is on record.
//! - The node-add action completed: `ScalingActionCompleted`; failed: the
//!   incident fails.
//!
//! Each signal is a `signal.emitted` event on the incident's timeline.
//!
//! With `[schedule] every_secs` in its manifest (the seed's
//! `min_violation_check_interval`) the rule also checks the cluster itself
//! through `kube`, without waiting for an alert, and scales up and down:
//! see [`check`]. Flow signals then follow the actions it asked for: on a
//! scale-up `NodeCreated` and `NodeReady` per node, `ScalingActionCompleted`,
//! `MinimumNodesRestored` (after a violation) and `ClusterStateSynced`; on a
//! scale-down `ScalingActionCompleted`, `OptimalStateTrigger` (at minimum)
//! and `ClusterStateSynced`.
//!
//! Config: `min_nodes` (2), `max_nodes` (6), `emergency_threshold` (2),
//! `auto_scale_to_min` (`true`), `action` (`action-k3s-node-add`),
//! `remove_action` (`action-k3s-node-remove`), `pool` (`workers`, for the
//! check), `cpu_high_pct` (80), `memory_high_pct` (85), `cpu_low_pct` (30),
//! `memory_low_pct` (40), `underutilized_secs` (300),
//! `scaling_timeout_secs` (300), `check_every_secs` (the schedule's period,
//! for the signals' times; default 10).

pub mod check;

use eventpulse_sdk::{
    ALERT_RAISED, ActionOutcome, ActionRequest, AlertStatus, Context, Decision, Error, Event,
    IncidentOpen, IncidentStatus, NotificationRequest, Rule, Severity, Subscription, Timer,
};
use serde_json::json;

/// The rule.
#[derive(Default)]
pub struct MinNodes;

/// The rule's settings, from its manifest's `[config]`.
pub struct Settings {
    min: u64,
    max: u64,
    emergency: u64,
    action: String,
    remove_action: String,
    auto_scale_to_min: bool,
    pool: String,
    cpu_high: f64,
    memory_high: f64,
    cpu_low: f64,
    memory_low: f64,
    underutilized_ms: u64,
    scaling_timeout_ms: u64,
    every_ms: u64,
}

impl Settings {
    fn load(cx: &Context<'_>) -> Result<Settings, Error> {
        let num = |key: &str, default: u64| -> Result<u64, Error> {
            cx.config(key).map_or(Ok(default), |v| {
                v.parse()
                    .map_err(|_| Error::permanent(format!("config `{key}`: `{v}` is not a number")))
            })
        };
        let pct = |key: &str, default: u64| -> Result<f64, Error> { Ok(num(key, default)? as f64) };
        let s = Settings {
            min: num("min_nodes", 2)?,
            max: num("max_nodes", 6)?,
            emergency: num("emergency_threshold", 2)?,
            action: cx
                .config("action")
                .unwrap_or_else(|| "action-k3s-node-add".into()),
            remove_action: cx
                .config("remove_action")
                .unwrap_or_else(|| "action-k3s-node-remove".into()),
            auto_scale_to_min: match cx.config("auto_scale_to_min").as_deref() {
                None | Some("true") => true,
                Some("false") => false,
                Some(v) => {
                    return Err(Error::permanent(format!(
                        "config `auto_scale_to_min`: `{v}` is neither true nor false"
                    )));
                }
            },
            pool: cx.config("pool").unwrap_or_else(|| "workers".into()),
            cpu_high: pct("cpu_high_pct", 80)?,
            memory_high: pct("memory_high_pct", 85)?,
            cpu_low: pct("cpu_low_pct", 30)?,
            memory_low: pct("memory_low_pct", 40)?,
            underutilized_ms: num("underutilized_secs", 300)? * 1000,
            scaling_timeout_ms: num("scaling_timeout_secs", 300)? * 1000,
            every_ms: num("check_every_secs", 10)? * 1000,
        };
        if s.min > s.max {
            return Err(Error::permanent("config: `min_nodes` is above `max_nodes`"));
        }
        Ok(s)
    }
}

/// `EmergencyScaleUp` when `emergency_threshold` or more workers are
/// missing at once, else `AutoScaleUpToMinimum`: adding `add` of `missing`.
fn to_minimum(
    d: Decision,
    s: &Settings,
    pool: &str,
    current: u64,
    missing: u64,
    add: u64,
) -> Decision {
    if missing >= s.emergency {
        d.signal(
            "EmergencyScaleUp",
            json!({"pool": pool, "lost_count": missing, "remaining_workers": current, "min_workers": s.min, "emergency_scale": add}),
        )
    } else {
        d.signal(
            "AutoScaleUpToMinimum",
            json!({"pool": pool, "current_workers": current, "min_workers": s.min, "scale_up_count": add, "reason": "minimum_violation"}),
        )
    }
}

/// Tell the critical channels that `add` workers are being added to `pool`.
fn notify_adding(mut d: Decision, cx: &Context<'_>, pool: &str, title: &str, add: u64) -> Decision {
    for channel in cx.channels(Severity::Critical) {
        d = d.notify(
            NotificationRequest::new(
                channel,
                Severity::Critical,
                title,
                format!("adding {add} worker(s)"),
            )
            .dedup_key(format!("min-nodes:{pool}"))
            .field("pool", pool.to_owned()),
        );
    }
    d
}

fn count(event: &Event, key: &str) -> Result<u64, Error> {
    let alert = event.alert.as_ref().expect("alert events only");
    let v = alert
        .annotations
        .get(key)
        .ok_or_else(|| Error::permanent(format!("annotation `{key}` is missing")))?;
    // Prometheus renders `{{ $value }}` as a float.
    v.parse::<f64>()
        .ok()
        .filter(|f| *f >= 0.0)
        .map(|f| f as u64)
        .ok_or_else(|| Error::permanent(format!("annotation `{key}`: `{v}` is not a count")))
}

impl Rule for MinNodes {
    fn description(&self) -> String {
        "keeps a k3s worker pool between min and max nodes".into()
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        vec![
            Subscription::kind(ALERT_RAISED).label("alertname", "K3sWorkersBelowMinimum"),
            Subscription::kind(ALERT_RAISED).label("alertname", "K3sScaleDownCandidate"),
        ]
    }

    fn decide(&self, event: &Event, cx: &Context<'_>) -> Result<Decision, Error> {
        let Some(alert) = &event.alert else {
            return Ok(Decision::none().note("not an alert"));
        };
        let s = Settings::load(cx)?;
        let pool = alert.labels.get("pool").unwrap_or("workers").to_owned();
        let now = cx.now();
        match (alert.name.as_str(), alert.status) {
            ("K3sWorkersBelowMinimum", AlertStatus::Firing) => {
                let current = count(event, "ready_workers")?;
                if current >= s.min {
                    return Ok(Decision::none().note(format!(
                        "{pool}: {current} Ready workers, not below the minimum of {}",
                        s.min
                    )));
                }
                let missing = s.min - current;
                let add = missing.min(s.max.saturating_sub(current));
                let title = format!("k3s pool {pool} below minimum: {current}/{} workers", s.min);
                let mut d = Decision::none()
                    .open_incident(IncidentOpen {
                        title: title.clone(),
                        service: pool.clone(),
                        severity: Severity::Critical,
                        dedup_key: format!("min-nodes:{pool}"),
                        summary: format!("{missing} worker(s) missing"),
                    })
                    .signal(
                        "MinimumNodesViolation",
                        json!({"pool": pool, "current_workers": current, "min_workers": s.min, "violation_time": now}),
                    );
                d = to_minimum(d, &s, &pool, current, missing, add);
                d = d.action(
                    ActionRequest::new(&s.action, &pool)
                        .param("add", add)
                        .param("previous_workers", current)
                        .reason(format!(
                            "{pool} has {current} of at least {} workers",
                            s.min
                        )),
                );
                d = notify_adding(d, cx, &pool, &title, add);
                Ok(d)
            }
            ("K3sWorkersBelowMinimum", AlertStatus::Resolved) => Ok(Decision::none()
                .signal(
                    "MinimumNodesRestored",
                    json!({"pool": pool, "min_workers": s.min, "restore_time": now}),
                )
                .transition(
                    IncidentStatus::Resolved,
                    format!("{pool} back at its minimum of {} workers", s.min),
                )),
            ("K3sScaleDownCandidate", AlertStatus::Firing) => {
                let workers = count(event, "ready_workers")?;
                let pending = count(event, "pending_pods")?;
                if pending == 0 || workers <= s.min {
                    return Ok(Decision::none().note(format!(
                        "{pool}: scale-down not blocked ({pending} pending pods, {workers} workers)"
                    )));
                }
                Ok(Decision::none()
                    .open_incident(IncidentOpen {
                        title: format!("Scale-down of k3s pool {pool} blocked"),
                        service: pool.clone(),
                        severity: Severity::Info,
                        dedup_key: format!("scale-down:{pool}"),
                        summary: format!("{pending} pod(s) pending"),
                    })
                    .signal(
                        "ScaleDownBlocked",
                        json!({"pool": pool, "reason": "pending_pods", "pending_count": pending, "workers": workers, "min_workers": s.min}),
                    ))
            }
            ("K3sScaleDownCandidate", AlertStatus::Resolved) => Ok(Decision::none()
                .transition(IncidentStatus::Resolved, "no longer a scale-down candidate")),
            _ => Ok(Decision::none().note("nothing to do")),
        }
    }

    fn on_timer(&self, _event: &Event, timer: &Timer, cx: &Context<'_>) -> Result<Decision, Error> {
        if timer.key != "schedule" {
            return Ok(Decision::none().note(format!("unknown timer `{}`", timer.key)));
        }
        let s = Settings::load(cx)?;
        let pool = s.pool.clone();
        check::run(cx, &s, &pool)
    }

    fn on_action_completed(
        &self,
        event: &Event,
        outcome: &ActionOutcome,
        cx: &Context<'_>,
    ) -> Result<Decision, Error> {
        if outcome.request.params["check"] == true {
            return checked_action_done(event, outcome, cx);
        }
        let details = match &outcome.result {
            Ok(r) => r.details.clone(),
            Err(_) => json!({}),
        };
        let params = &outcome.request.params;
        Ok(Decision::none().signal(
            "ScalingActionCompleted",
            json!({
                "action": "scale_up",
                "pool": outcome.request.target,
                "count": params["add"],
                "previous_workers": params["previous_workers"],
                "new_workers": details["ready"],
                "duration_ms": details["waited_ms"],
            }),
        ))
    }

    fn on_action_failed(
        &self,
        _event: &Event,
        outcome: &ActionOutcome,
        cx: &Context<'_>,
    ) -> Result<Decision, Error> {
        let why = match &outcome.result {
            Err(e) => e.to_string(),
            Ok(_) => "unknown".into(),
        };
        if outcome.request.params["check"] == true {
            // The next check decides again, from what the cluster is then.
            let s = Settings::load(cx)?;
            let mut mem = check::Memory::load(cx, &s.pool);
            mem.scaling_until = None;
            mem.restoring = false;
            mem.synced = false;
            mem.episode = None;
            mem.save(cx, &s.pool);
            return Ok(Decision::none().transition(
                IncidentStatus::Failed,
                format!(
                    "{} on {} failed: {why}",
                    outcome.request.action, outcome.request.target
                ),
            ));
        }
        Ok(Decision::none().transition(
            IncidentStatus::Failed,
            format!("adding workers to {} failed: {why}", outcome.request.target),
        ))
    }
}

/// The flow after an action the periodic check asked for.
fn checked_action_done(
    _event: &Event,
    outcome: &ActionOutcome,
    cx: &Context<'_>,
) -> Result<Decision, Error> {
    let s = Settings::load(cx)?;
    let pool = outcome.request.target.clone();
    let params = &outcome.request.params;
    let details = match &outcome.result {
        Ok(r) => r.details.clone(),
        Err(_) => json!({}),
    };
    let previous = params["previous_workers"].as_u64().unwrap_or(0);
    let mut mem = check::Memory::load(cx, &pool);
    let was_violation = mem.restoring;
    let mut d = Decision::none();
    let workers = if let Some(node) = params["node"].as_str() {
        let now_workers = previous.saturating_sub(1);
        d = d.signal(
            "ScalingActionCompleted",
            json!({"pool": pool, "action": "scale_down", "count": 1, "node": node, "previous_workers": previous, "new_workers": now_workers}),
        );
        if now_workers == s.min {
            mem.optimal = true;
            d = d.signal(
                "OptimalStateTrigger",
                json!({"pool": pool, "state": "active", "current_workers": now_workers, "min_workers": s.min}),
            );
        }
        now_workers
    } else {
        let added = params["add"].as_u64().unwrap_or(0);
        for node in details["nodes"].as_array().into_iter().flatten() {
            d = d.signal("NodeCreated", json!({"pool": pool, "node_name": node}));
        }
        for node in details["nodes"].as_array().into_iter().flatten() {
            d = d.signal("NodeReady", json!({"pool": pool, "node_name": node}));
        }
        let now_workers = previous + added;
        d = d.signal(
            "ScalingActionCompleted",
            json!({"pool": pool, "action": "scale_up", "count": added, "previous_workers": previous, "new_workers": now_workers, "duration_ms": details["waited_ms"]}),
        );
        if was_violation && now_workers >= s.min {
            d = d.signal(
                "MinimumNodesRestored",
                json!({"pool": pool, "current_workers": now_workers, "min_workers": s.min, "restore_time": cx.now()}),
            );
        }
        now_workers
    };
    d = d.signal(
        "ClusterStateSynced",
        json!({"pool": pool, "workers": workers, "last_sync": cx.now()}),
    );
    mem.scaling_until = None;
    mem.restoring = false;
    mem.synced = true;
    mem.episode = None;
    mem.save(cx, &pool);
    Ok(d.transition(
        IncidentStatus::Resolved,
        format!("{pool} at {workers} worker(s)"),
    ))
}

eventpulse_sdk::export_rule!(MinNodes);

#[cfg(test)]
mod tests {
    use super::*;
    use eventpulse_sdk::IncidentDirective;
    use eventpulse_sdk::testing::{FakeHost, alert_event};

    fn below(ready: &str) -> Event {
        let mut e = alert_event(
            "K3sWorkersBelowMinimum",
            AlertStatus::Firing,
            &[("pool", "workers")],
        );
        e.alert
            .as_mut()
            .unwrap()
            .annotations
            .insert("ready_workers", ready);
        e
    }

    fn names(d: &Decision) -> Vec<&str> {
        d.signals.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn one_lost_scales_up_to_minimum() {
        let host = FakeHost::new().config("min_nodes", "2");
        let d = MinNodes.decide(&below("1"), &host.context()).unwrap();
        assert_eq!(names(&d), ["MinimumNodesViolation", "AutoScaleUpToMinimum"]);
        assert_eq!(d.actions[0].action, "action-k3s-node-add");
        assert_eq!(d.actions[0].params["add"], 1);
        assert!(matches!(d.incident, Some(IncidentDirective::Open(_))));
    }

    #[test]
    fn several_lost_at_once_is_an_emergency_capped_at_max() {
        let host = FakeHost::new()
            .config("min_nodes", "3")
            .config("max_nodes", "4");
        let d = MinNodes.decide(&below("0"), &host.context()).unwrap();
        assert_eq!(names(&d), ["MinimumNodesViolation", "EmergencyScaleUp"]);
        assert_eq!(d.actions[0].params["add"], 3);
        let d = MinNodes.decide(&below("2.0"), &host.context()).unwrap();
        assert_eq!(names(&d), ["MinimumNodesViolation", "AutoScaleUpToMinimum"]);
        assert_eq!(d.signals[1].data["scale_up_count"], 1);
    }

    #[test]
    fn at_minimum_does_nothing_and_resolved_restores() {
        let host = FakeHost::new().config("min_nodes", "2");
        assert!(
            MinNodes
                .decide(&below("2"), &host.context())
                .unwrap()
                .actions
                .is_empty()
        );
        let resolved = alert_event(
            "K3sWorkersBelowMinimum",
            AlertStatus::Resolved,
            &[("pool", "workers")],
        );
        let d = MinNodes.decide(&resolved, &host.context()).unwrap();
        assert_eq!(names(&d), ["MinimumNodesRestored"]);
        assert!(matches!(
            d.incident,
            Some(IncidentDirective::Transition {
                status: IncidentStatus::Resolved,
                ..
            })
        ));
    }

    /// A scale-down candidate with 4 ready workers and `pending` pods.
    fn scale_down_candidate(pending: &str) -> Event {
        let mut e = alert_event(
            "K3sScaleDownCandidate",
            AlertStatus::Firing,
            &[("pool", "workers")],
        );
        let a = e.alert.as_mut().unwrap();
        a.annotations.insert("ready_workers", "4");
        a.annotations.insert("pending_pods", pending);
        e
    }

    #[test]
    fn pending_pods_block_scale_down() {
        let host = FakeHost::new().config("min_nodes", "2");
        let d = MinNodes
            .decide(&scale_down_candidate("5"), &host.context())
            .unwrap();
        assert_eq!(names(&d), ["ScaleDownBlocked"]);
        assert_eq!(d.signals[0].data["pending_count"], 5);
        // Without pending pods, nothing to say.
        assert!(
            MinNodes
                .decide(&scale_down_candidate("0"), &host.context())
                .unwrap()
                .signals
                .is_empty()
        );
    }

    #[test]
    fn bad_annotation_is_a_permanent_error() {
        let err = MinNodes
            .decide(&below("many"), &FakeHost::new().context())
            .unwrap_err();
        assert!(err.to_string().contains("ready_workers"), "{err}");
    }
}
