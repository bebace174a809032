//! `rule-cpu-autoscale`, compiled to a component and run in the host's
//! sandbox: its decisions for firing, resolved, flapping and failed-action
//! inputs, and its cooldown state surviving a host restart.

use eventpulse::model::AlertStatus;
use eventpulse::runtime::types::{self, IncidentDirective, IncidentStatus};
use eventpulse_tests::{Host, alert_event};

const MANIFEST: &str = "[limits]\nfuel = 10_000_000\ntimeout_ms = 500\nmemory_mb = 16\n\n\
    [config]\ncooldown_secs = \"60\"\nchannels = \"notifier-slack, notifier-email\"\n";

fn replicas(a: &types::ActionRequest) -> u64 {
    serde_json::from_str::<serde_json::Value>(&a.params).unwrap()["replicas"]
        .as_u64()
        .unwrap()
}

async fn host() -> Host {
    let host = Host::start().await;
    host.install_now("cpu", "rule-cpu-autoscale", MANIFEST)
        .await;
    host
}

#[tokio::test]
async fn firing_opens_an_incident_scales_out_and_notifies() {
    let host = host().await;
    let event = alert_event("HighCPU", AlertStatus::Firing, &[("service", "app")]);
    let d = host.registry.decide("cpu", &event).await.unwrap();

    let Some(IncidentDirective::Open(open)) = &d.incident else {
        panic!("expected an incident to open: {d:?}")
    };
    assert_eq!(
        (open.service.as_str(), open.severity),
        ("app", types::Severity::Critical)
    );
    assert_eq!(open.dedup_key, "cpu:app");
    assert_eq!(d.actions.len(), 1);
    assert_eq!(d.actions[0].action, "action-docker-scale");
    assert_eq!(replicas(&d.actions[0]), 2);
    let channels: Vec<_> = d.notifications.iter().map(|n| n.channel.as_str()).collect();
    assert_eq!(channels, ["notifier-slack", "notifier-email"]);
}

#[tokio::test]
async fn resolved_alert_resolves_the_incident_and_scales_in_after_cooldown() {
    let host = host().await;
    let firing = alert_event("HighCPU", AlertStatus::Firing, &[("service", "app")]);
    let resolved = alert_event("HighCPU", AlertStatus::Resolved, &[("service", "app")]);
    host.registry.decide("cpu", &firing).await.unwrap();

    host.clock.advance(61_000);
    let d = host.registry.decide("cpu", &resolved).await.unwrap();
    assert!(matches!(
        &d.incident,
        Some(IncidentDirective::Transition(t)) if t.status == IncidentStatus::Resolved
    ));
    assert_eq!(d.actions.len(), 1);
    assert_eq!(replicas(&d.actions[0]), 1);
}

#[tokio::test]
async fn flapping_alert_does_not_cause_an_action_storm() {
    let host = host().await;
    let firing = alert_event("HighCPU", AlertStatus::Firing, &[("service", "app")]);
    let resolved = alert_event("HighCPU", AlertStatus::Resolved, &[("service", "app")]);

    let mut actions = 0;
    for _ in 0..10 {
        actions += host
            .registry
            .decide("cpu", &firing)
            .await
            .unwrap()
            .actions
            .len();
        host.clock.advance(2_000);
        actions += host
            .registry
            .decide("cpu", &resolved)
            .await
            .unwrap()
            .actions
            .len();
        host.clock.advance(2_000);
    }
    assert_eq!(
        actions, 1,
        "20 flaps inside the cooldown → one scale-out only"
    );

    host.clock.advance(30_000);
    let d = host.registry.decide("cpu", &firing).await.unwrap();
    assert_eq!(
        d.actions.len(),
        1,
        "after the cooldown it acts again: {d:?}"
    );
}

#[tokio::test]
async fn cooldown_state_survives_a_restart_but_not_a_dry_run() {
    let host = host().await;
    let firing = alert_event("HighCPU", AlertStatus::Firing, &[("service", "api")]);

    // A dry run decides but keeps no state: the real run still scales out.
    let dry = host.registry.dry_run("cpu", &firing).await.unwrap();
    assert_eq!(dry.actions.len(), 1);
    let real = host.registry.decide("cpu", &firing).await.unwrap();
    assert_eq!(real.actions.len(), 1);

    let host = host.restart().await;
    let again = host.registry.decide("cpu", &firing).await.unwrap();
    assert!(
        again.actions.is_empty(),
        "cooldown persisted across restart: {again:?}"
    );
    assert!(again.note.unwrap().contains("cooldown"));
}

#[tokio::test]
async fn failed_scale_out_is_compensated_and_fails_the_incident() {
    let host = host().await;
    let plugin = host.registry.get("cpu").unwrap();
    let event = alert_event("HighCPU", AlertStatus::Firing, &[("service", "app")]);
    let request = types::ActionRequest {
        action: "action-docker-scale".into(),
        target: "app".into(),
        params: r#"{"replicas":2}"#.into(),
        reason: "HighCPU on app".into(),
    };
    let failed = types::ActionOutcome {
        action_id: "act-1".into(),
        request: request.clone(),
        result: Err(types::PluginError::Permanent(
            "replica never became healthy".into(),
        )),
        attempts: 3,
    };
    let d = plugin
        .on_action_outcome(&event, &failed)
        .await
        .unwrap()
        .output;
    assert_eq!(d.actions.len(), 1);
    assert_eq!(replicas(&d.actions[0]), 1);
    assert!(
        d.actions[0].reason.contains("never became healthy"),
        "{:?}",
        d.actions[0]
    );
    assert!(matches!(
        &d.incident,
        Some(IncidentDirective::Transition(t)) if t.status == IncidentStatus::Failed
    ));

    let completed = types::ActionOutcome {
        result: Ok(types::ActionResult {
            summary: "2 replicas".into(),
            details: "{}".into(),
        }),
        ..failed
    };
    let d = plugin
        .on_action_outcome(&event, &completed)
        .await
        .unwrap()
        .output;
    assert!(d.actions.is_empty());
    assert!(matches!(
        &d.incident,
        Some(IncidentDirective::Transition(t)) if t.status == IncidentStatus::Resolved
    ));
}

#[tokio::test]
async fn subscriptions_select_the_rule() {
    let host = host().await;
    let high = alert_event("HighCPU", AlertStatus::Firing, &[("service", "app")]);
    let disk = alert_event("DiskFull", AlertStatus::Firing, &[("service", "app")]);
    assert_eq!(host.registry.rules_for(&high).len(), 1);
    assert!(host.registry.rules_for(&disk).is_empty());
    host.stop().await;
}
