//! Runbook actions on the real Docker Engine (seed 000): the host's
//! `docker` capability, `action-docker-scale`, and the host's action
//! safety (rate limit, breaker). Replica counts and health are read through
//! the Engine API, not from the plugin's report. Every container a test
//! makes carries its service's label and is removed when the test ends.

use std::time::Duration;

use eventpulse::ingest::alertmanager::sample;
use eventpulse::registry;
use eventpulse::runtime::{Error, types};
use eventpulse::store::IncidentDetail;
use eventpulse_tests::dockerkit::{Service, docker};
use eventpulse_tests::{Host, post_webhook, wait_for};

const SETTLE: Duration = Duration::from_secs(60);
const STARTS: &str = "2026-11-24T10:00:00Z";

/// The scale rule and action for `svc`, with `notifier-log`.
async fn install_scaling(host: &Host, svc: &Service, ready_ms: u32, safety: &str) {
    let rule = "cooldown_secs = \"0\"\nmin_replicas = \"1\"\nmax_replicas = \"2\"\n";
    install_scaling_with(host, svc, rule, ready_ms, safety).await;
}

/// The same, with `rule` (TOML lines) as the rest of the rule's `[config]`.
async fn install_scaling_with(host: &Host, svc: &Service, rule: &str, ready_ms: u32, safety: &str) {
    host.install(
        "rule-cpu-autoscale",
        "rule-cpu-autoscale",
        &format!("[config]\naction = \"action-docker-scale\"\nchannels = \"notifier-log\"\n{rule}"),
    );
    host.install("notifier-log", "notifier-log", "");
    host.install_now(
        "action-docker-scale",
        "action-docker-scale",
        &format!(
            "[limits]\ntimeout_ms = 28000\nfuel = 200_000_000\n\n{}\n[config]\nready_timeout_ms = \"{ready_ms}\"\n\n{safety}",
            svc.grant()
        ),
    )
    .await;
}

fn high_cpu(svc: &Service, resolved: bool) -> serde_json::Value {
    let ends = if resolved { "2026-11-24T10:05:00Z" } else { "" };
    sample(
        "HighCPU",
        &[("service", &svc.name), ("severity", "critical")],
        resolved,
        STARTS,
        ends,
    )
}

async fn settle_counts(svc: &Service, want: (usize, usize)) {
    wait_for(
        &format!("{} at {want:?} (running, healthy)", svc.name),
        SETTLE,
        || async { (svc.counts().await == want).then_some(()) },
    )
    .await;
}

fn kinds(d: &IncidentDetail) -> Vec<String> {
    d.timeline
        .iter()
        .map(|e| {
            format!(
                "{} {:?}->{:?} {}",
                e.kind, e.from_status, e.to_status, e.cause
            )
        })
        .collect()
}

/// HighCPU for `service=app` → incident → 1 → 2 healthy replicas (Engine
/// API) → `action.completed` → incident resolved; the resolved alert → 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_cpu_scales_to_two_healthy_replicas_and_back_to_one() {
    let svc = Service::start("app", "eventpulse-demo-app:latest", false).await;
    settle_counts(&svc, (1, 1)).await;
    let host = Host::start().await;
    install_scaling(&host, &svc, 20_000, "").await;

    let (status, body) = post_webhook(&host.url, &high_cpu(&svc, false)).await;
    assert_eq!(status, 200, "{body}");
    let d = host
        .newest_incident("scale-out completed and incident resolved", SETTLE, |d| {
            d.incident.status == "resolved" && d.actions.iter().any(|a| a.status == "completed")
        })
        .await;
    assert_eq!(svc.counts().await, (2, 2), "two running, healthy replicas");
    let result: serde_json::Value =
        serde_json::from_str(d.actions[0].result.as_deref().unwrap()).unwrap();
    assert_eq!(
        (
            result["details"]["previous"].as_u64(),
            result["details"]["replicas"].as_u64()
        ),
        (Some(1), Some(2)),
        "{result}"
    );
    // The replica is a copy: same image, Traefik labels, env and network.
    let created = result["details"]["created"][0].as_str().unwrap().to_owned();
    let replica = docker()
        .inspect_container(
            &created,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap();
    let config = replica.config.unwrap();
    let labels = config.labels.unwrap();
    assert_eq!(
        labels
            .get(&format!(
                "traefik.http.services.{}.loadbalancer.server.port",
                svc.name
            ))
            .map(String::as_str),
        Some("8080")
    );
    assert_eq!(
        labels.get("eventpulse.created-by").map(String::as_str),
        Some("action-docker-scale")
    );
    assert!(
        config
            .env
            .unwrap()
            .contains(&format!("SERVICE={}", svc.name))
    );
    assert_eq!(
        replica.host_config.unwrap().network_mode.as_deref(),
        Some("bridge")
    );
    let timeline = kinds(&d);
    assert!(
        timeline
            .iter()
            .any(|k| k.starts_with("action") && k.contains("completed")),
        "{timeline:?}"
    );

    let (status, _) = post_webhook(&host.url, &high_cpu(&svc, true)).await;
    assert_eq!(status, 200);
    wait_for("scale-in completed", SETTLE, || async {
        let d = host.store.incident_detail(&d.incident.id).await.unwrap()?;
        (d.actions.len() == 2 && d.actions.iter().all(|a| a.status == "completed")).then_some(())
    })
    .await;
    assert_eq!(svc.counts().await, (1, 1), "back to one");
    assert_eq!(svc.containers().await.len(), 1, "nothing left behind");
    host.stop().await;
}

/// Seed 001: `cpu_high` with `rule-cpu-autoscale` configured for it and
/// relative scaling takes the service from 1 to 2 replicas, then to 3 on a
/// second episode, and no further on a third (`max_replicas = 3`), counted
/// through the Engine API. Relative scaling is a ratchet: a resolved
/// episode keeps its replicas (only a scale-in alert removes them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_high_scales_one_step_per_episode_up_to_max_replicas() {
    const COOLDOWN: Duration = Duration::from_secs(10);
    let svc = Service::start("step", "eventpulse-demo-app:latest", false).await;
    settle_counts(&svc, (1, 1)).await;
    let host = Host::start_on(eventpulse_tests::Backend::Sqlite).await;
    let rule = format!(
        "scale_out_alerts = \"cpu_high\"\nscaling = \"relative\"\nmin_replicas = \"1\"\nmax_replicas = \"3\"\ncooldown_secs = \"{}\"\n",
        COOLDOWN.as_secs()
    );
    install_scaling_with(&host, &svc, &rule, 20_000, "").await;
    let episode = |n: u32, resolved: bool| {
        let starts = format!("2026-11-24T1{n}:00:00Z");
        let ends = if resolved {
            format!("2026-11-24T1{n}:05:00Z")
        } else {
            String::new()
        };
        sample(
            "cpu_high",
            &[("service", &svc.name), ("severity", "critical")],
            resolved,
            &starts,
            &ends,
        )
    };
    let completed = |n: usize| {
        let store = host.store.clone();
        move || {
            let store = store.clone();
            async move {
                let c = store.counts().await.unwrap();
                (c.actions_completed as usize == n).then_some(())
            }
        }
    };
    for (n, replicas) in [(1, 2), (2, 3)] {
        let began = std::time::Instant::now();
        let (status, body) = post_webhook(&host.url, &episode(n, false)).await;
        assert_eq!(status, 200, "{body}");
        wait_for(
            &format!("episode {n} scaled out"),
            SETTLE,
            completed(n as usize),
        )
        .await;
        assert_eq!(svc.counts().await, (replicas, replicas), "episode {n}");
        post_webhook(&host.url, &episode(n, true)).await;
        tokio::time::sleep(COOLDOWN.saturating_sub(began.elapsed()) + Duration::from_millis(500))
            .await;
    }
    // A third episode: at max_replicas, an incident and a notification
    // (held back by dedup: the last went out minutes ago) but no action.
    post_webhook(&host.url, &episode(3, false)).await;
    let d = host
        .newest_incident("third incident", SETTLE, |d| {
            d.incident.status == "open" && !d.notifications.is_empty()
        })
        .await;
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(svc.counts().await, (3, 3), "capped at max_replicas");
    assert_eq!(
        host.store.counts().await.unwrap().actions,
        2,
        "resolutions scaled nothing in"
    );
    host.stop().await;
}

/// Cooldown (seed 000): the resolved alert arrives inside the cooldown, so
/// the scale-in is held back; when the cooldown ends a durable timer runs
/// it and the service goes back to one replica (Engine API), with a host
/// restart in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_in_held_back_by_the_cooldown_runs_when_it_ends_across_a_restart() {
    const COOLDOWN: Duration = Duration::from_secs(8);
    let svc = Service::start("cool", "eventpulse-demo-app:latest", false).await;
    settle_counts(&svc, (1, 1)).await;
    let host = Host::start_on(eventpulse_tests::Backend::Sqlite).await;
    let rule = format!(
        "min_replicas = \"1\"\nmax_replicas = \"2\"\ncooldown_secs = \"{}\"\n",
        COOLDOWN.as_secs()
    );
    install_scaling_with(&host, &svc, &rule, 20_000, "").await;
    let began = std::time::Instant::now();
    post_webhook(&host.url, &high_cpu(&svc, false)).await;
    wait_for("scaled out", SETTLE, || async {
        (host.store.counts().await.unwrap().actions_completed == 1).then_some(())
    })
    .await;
    assert_eq!(svc.counts().await, (2, 2));
    post_webhook(&host.url, &high_cpu(&svc, true)).await;
    let timers = wait_for("the scale-in deferred to a timer", SETTLE, || async {
        let t = host.store.timers().await.unwrap();
        (!t.is_empty()).then_some(t)
    })
    .await;
    assert_eq!(
        (timers[0].0.as_str(), timers[0].1.as_str()),
        (
            "rule-cpu-autoscale",
            format!("scale-in:{}", svc.name).as_str()
        )
    );
    assert!(
        began.elapsed() < COOLDOWN,
        "the test needs a longer cooldown"
    );
    assert_eq!(host.store.counts().await.unwrap().actions, 1, "held back");

    let host = host.restart().await;
    wait_for("scaled back in by the timer", SETTLE, || async {
        let done = host.store.counts().await.unwrap().actions_completed == 2;
        (done && svc.counts().await == (1, 1)).then_some(())
    })
    .await;
    assert!(began.elapsed() >= COOLDOWN, "not before the cooldown ended");
    let c = host.store.counts().await.unwrap();
    assert_eq!((c.actions, c.actions_completed), (2, 2), "{c:?}");
    assert!(host.store.timers().await.unwrap().is_empty(), "fired once");
    assert_eq!(svc.containers().await.len(), 1, "nothing left behind");
    host.stop().await;
}

/// A replica whose health check never passes: `action.failed` → the rule
/// compensates (back to 1, the zombie removed) and marks the incident
/// failed; every step is on the timeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_never_gets_healthy_is_compensated() {
    // The running container has its health check switched off; replicas
    // get the image's own, which probes a path that 404s.
    let svc = Service::start("sick", "eventpulse-demo-app:sick", true).await;
    settle_counts(&svc, (1, 1)).await;
    let host = Host::start().await;
    install_scaling(&host, &svc, 4_000, "").await;

    post_webhook(&host.url, &high_cpu(&svc, false)).await;
    let d = host
        .newest_incident("incident failed and compensation completed", SETTLE, |d| {
            d.incident.status == "failed"
            && d.actions.len() == 2
            && d.actions
                .iter()
                .all(|a| a.status != "pending" && a.status != "running")
            // The job row and its timeline entry are written by different
            // stages: wait for the compensation's entry too.
            && kinds(d).iter().any(|k| k.contains("action completed"))
        })
        .await;
    let scale_out = d
        .actions
        .iter()
        .find(|a| a.status == "failed")
        .expect("failed scale-out");
    let error = scale_out.last_error.clone().unwrap_or_default();
    assert!(error.contains("did not become healthy"), "{error}");
    assert_eq!(scale_out.attempts, 1, "a permanent failure is not retried");
    assert!(
        d.actions.iter().any(|a| a.status == "completed"),
        "compensation ran"
    );
    assert_eq!(svc.counts().await, (1, 1));
    assert_eq!(
        svc.containers().await.len(),
        1,
        "the unhealthy replica was removed"
    );
    let timeline = kinds(&d);
    for step in [
        "opened",
        "action requested: action-docker-scale",
        "did not become healthy",
        "Some(Mitigating)->Some(Failed)",
        "compensate failed scale-out",
        "action completed",
    ] {
        assert!(
            timeline.iter().any(|k| k.contains(step)),
            "{step} missing: {timeline:?}"
        );
    }
    host.stop().await;
}

fn probe_request(params: serde_json::Value) -> types::ActionRequest {
    eventpulse_tests::action_request("action-docker-probe", "app", &params.to_string())
}

/// Outside the grant: another service's containers, a privileged
/// container, a host mount, host networking, an image not allowed. Each is
/// refused and audited, and nothing changed on the engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_outside_the_grant_are_denied_audited_and_change_nothing() {
    let mine = Service::start("mine", "eventpulse-demo-app:latest", true).await;
    let other = Service::start("other", "eventpulse-demo-app:latest", true).await;
    settle_counts(&mine, (1, 1)).await;
    settle_counts(&other, (1, 1)).await;
    let other_before = other.containers().await;
    let host = Host::start().await;
    host.install_now("action-docker-probe", "action-docker-probe", &mine.grant())
        .await;
    let event =
        eventpulse_tests::alert_event("HighCPU", eventpulse::model::AlertStatus::Firing, &[]);
    let labels = serde_json::json!({ "service": mine.name });
    let other_id = other_before[0].0.clone();
    let cases = [
        (
            "list another service",
            serde_json::json!({"op": "list", "selector": {"service": other.name}}),
        ),
        (
            "stop another service's container",
            serde_json::json!({"op": "stop", "id": other_id}),
        ),
        (
            "remove another service's container",
            serde_json::json!({"op": "remove", "id": other_id}),
        ),
        (
            "privileged",
            serde_json::json!({"op": "create", "image": "eventpulse-demo-app:latest", "labels": labels, "privileged": true}),
        ),
        (
            "host mount",
            serde_json::json!({"op": "create", "image": "eventpulse-demo-app:latest", "labels": labels, "mounts": ["/etc:/host-etc:ro"]}),
        ),
        (
            "host network",
            serde_json::json!({"op": "create", "image": "eventpulse-demo-app:latest", "labels": labels, "network": "host"}),
        ),
        (
            "image not allowed",
            serde_json::json!({"op": "create", "image": "eventpulse-k3s-agent:latest", "labels": labels}),
        ),
        (
            "unlabelled container",
            serde_json::json!({"op": "create", "image": "eventpulse-demo-app:latest", "labels": {}}),
        ),
    ];
    for (what, params) in &cases {
        let err = host
            .registry
            .run_action(
                "action-docker-probe",
                &event,
                &probe_request(params.clone()),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, registry::Error::Plugin(Error::Denied(cap)) if cap == "docker"),
            "{what}: {err}"
        );
        // Breaker of the probe plugin: reset so every case runs.
        host.registry.reset_breaker("action-docker-probe").unwrap();
    }
    // Within the grant works (the probe is not simply broken).
    let ok = host
        .registry
        .run_action(
            "action-docker-probe",
            &event,
            &probe_request(serde_json::json!({"op": "list", "selector": {}})),
        )
        .await
        .unwrap();
    assert_eq!(ok.summary, "1 containers");

    let audit = wait_for(
        "8 denials in the audit log",
        Duration::from_secs(10),
        || async {
            let a = host
                .get_json("/api/v1/audit?plugin=action-docker-probe")
                .await;
            let denied: Vec<serde_json::Value> = a["audit"]
                .as_array()?
                .iter()
                .filter(|r| r["allowed"] == false)
                .cloned()
                .collect();
            (denied.len() >= cases.len()).then_some(denied)
        },
    )
    .await;
    let details: Vec<&str> = audit
        .iter()
        .map(|r| r["detail"].as_str().unwrap())
        .collect();
    for needle in [
        "outside the grant",
        "privileged",
        "/etc",
        "host networking",
        "allowlist",
        "must carry",
    ] {
        assert!(
            details.iter().any(|d| d.contains(needle)),
            "no audit record about {needle}: {details:?}"
        );
    }
    assert_eq!(
        other.containers().await,
        other_before,
        "the other service is untouched"
    );
    assert_eq!(mine.containers().await.len(), 1, "nothing was created");

    // The scale action pointed at a service outside its selector fails
    // permanently with the denial, too.
    host.install_now("action-docker-scale", "action-docker-scale", &mine.grant())
        .await;
    let request =
        eventpulse_tests::action_request("action-docker-scale", &other.name, r#"{"replicas": 2}"#);
    let err = host
        .registry
        .run_action("action-docker-scale", &event, &request)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, registry::Error::Plugin(Error::Denied(_))),
        "{err}"
    );
    assert_eq!(other.containers().await, other_before);
    host.stop().await;
}

fn scripted_on(group: &str, service: &str, params: &str) -> serde_json::Value {
    let mut body = eventpulse_tests::scripted_alert(
        group,
        &[
            ("action", "action-flaky"),
            ("params", params),
            ("channel", "none"),
        ],
    );
    body["alerts"][0]["labels"]["service"] = service.into();
    body
}

async fn actions_on(host: &Host, target: &str) -> Vec<eventpulse::store::Job> {
    let mut all = Vec::new();
    for i in host.store.incidents(50).await.unwrap() {
        if let Some(d) = host.store.incident_detail(&i.id).await.unwrap() {
            all.extend(d.actions.into_iter().filter(|a| a.target == target));
        }
    }
    all
}

/// A burst of requests for one target is cut at K per window (the excess
/// is refused and recorded as `action.failed`), and a plugin that keeps
/// failing on a target trips that target's breaker, which half-opens after
/// the open period and closes on a successful trial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_cuts_a_burst_and_the_breaker_half_opens() {
    let host = Host::start().await;
    // `rule-scripted` asks for the action its alert's annotations name, on
    // the alert's `service`.
    host.install("rule-scripted", "rule-scripted", "");
    host.install_now(
        "action-flaky",
        "action-flaky",
        "[safety]\nmax_actions = 3\nwindow_secs = 600\nbreaker_threshold = 2\nbreaker_open_secs = 2\n",
    )
    .await;
    for i in 0..6 {
        let (status, b) = post_webhook(
            &host.url,
            &scripted_on(&format!("burst-{i}"), "svc-a", "{}"),
        )
        .await;
        assert_eq!(status, 200, "{b}");
    }
    let actions = wait_for("6 actions settled", SETTLE, || async {
        let all = actions_on(&host, "svc-a").await;
        (all.len() == 6
            && all
                .iter()
                .all(|a| a.status == "completed" || a.status == "refused"))
        .then_some(all)
    })
    .await;
    let refused: Vec<_> = actions.iter().filter(|a| a.status == "refused").collect();
    assert_eq!(refused.len(), 3, "K = 3 per window: {actions:#?}");
    assert!(
        refused[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("rate limit of 3")
    );
    assert!(
        refused.iter().all(|a| a.attempts == 0),
        "refused actions never ran"
    );
    // The refusal is on the incident's timeline as a failed action.
    let d = host
        .store
        .incident_detail(refused[0].incident_id.as_deref().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(
        kinds(&d).iter().any(|k| k.contains("rate limit")),
        "{:?}",
        kinds(&d)
    );

    // Breaker on another target: the plugin fails retryably until the
    // host clock it sees (manual in tests) passes `until`.
    let until = host.clock.now_ms() + 1_000;
    let params = format!(r#"{{"fail": "retryable", "until_ms": {until}}}"#);
    post_webhook(&host.url, &scripted_on("breaker", "svc-b", &params)).await;
    let state = |want: &'static str| {
        let host = &host;
        async move {
            let b = host.get_json("/api/v1/breakers").await;
            b["breakers"]
                .as_array()?
                .iter()
                .any(|b| b["target"] == "svc-b" && b["state"] == want)
                .then_some(())
        }
    };
    wait_for("breaker of (action-flaky, svc-b) open", SETTLE, || {
        state("open")
    })
    .await;
    let held = wait_for(
        "an attempt held back by the open breaker",
        SETTLE,
        || async {
            let a = actions_on(&host, "svc-b").await.pop()?;
            a.last_error
                .filter(|e| e.contains("circuit breaker open"))
                .map(|_| a.attempts)
        },
    )
    .await;
    assert!(
        held >= 3,
        "two failures opened it; attempt {held} was held back"
    );
    host.clock.advance(2_000); // the plugin recovers
    let done = wait_for("trial after the open period succeeded", SETTLE, || async {
        let a = actions_on(&host, "svc-b").await.pop()?;
        if a.status == "failed" {
            panic!("gave up: {a:?}");
        }
        (a.status == "completed").then_some(a)
    })
    .await;
    assert!(done.attempts > held, "{done:?}");
    wait_for("breaker closed again", SETTLE, || state("closed")).await;
    // svc-a's breaker was never affected.
    let b = host.get_json("/api/v1/breakers").await;
    assert!(
        b["breakers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["target"] == "svc-a" && b["state"] == "closed"),
        "{b}"
    );
    host.stop().await;
}

/// `action-container-restart`: a stopped container of the service is
/// restarted and healthy again (Engine API); healthy ones are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_restart_brings_a_stopped_container_back_healthy() {
    let svc = Service::start("restart", "eventpulse-demo-app:latest", false).await;
    settle_counts(&svc, (1, 1)).await;
    let id = svc.containers().await[0].0.clone();
    docker()
        .stop_container(&id, None::<bollard::query_parameters::StopContainerOptions>)
        .await
        .unwrap();
    assert_eq!(svc.counts().await, (0, 0));
    let host = Host::start().await;
    host.install_now(
        "action-container-restart",
        "action-container-restart",
        &format!("[limits]\ntimeout_ms = 28000\n\n{}", svc.grant()),
    )
    .await;
    let event =
        eventpulse_tests::alert_event("ContainerDown", eventpulse::model::AlertStatus::Firing, &[]);
    let request = eventpulse_tests::action_request("action-container-restart", &svc.name, "{}");
    let r = host
        .registry
        .run_action("action-container-restart", &event, &request)
        .await
        .unwrap();
    assert_eq!(r.summary, format!("{}: restarted 1 container(s)", svc.name));
    assert_eq!(svc.counts().await, (1, 1));
    // Again: nothing is unhealthy, nothing is restarted.
    let r = host
        .registry
        .run_action("action-container-restart", &event, &request)
        .await
        .unwrap();
    assert_eq!(r.summary, format!("{}: restarted 0 container(s)", svc.name));
    host.stop().await;
}

/// Docker unreachable (`runtime.docker_host` pointing at no socket): the
/// scale action fails retryably with `unavailable`, and the host keeps
/// serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_engine_is_a_retryable_failure() {
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let mut config = eventpulse_tests::test_config(dir.path());
    config.runtime.docker_host = format!("unix://{}/no-such.sock", dir.path().display());
    let host = Host::start_with(config, dir, eventpulse::runtime::Clock::manual(1_000)).await;
    host.install_now(
        "action-docker-scale",
        "action-docker-scale",
        "[grants.docker]\nselector = { service = \"app\" }\nimages = [\"eventpulse-demo-app:*\"]\n",
    )
    .await;
    let event =
        eventpulse_tests::alert_event("HighCPU", eventpulse::model::AlertStatus::Firing, &[]);
    let request =
        eventpulse_tests::action_request("action-docker-scale", "app", r#"{"replicas": 2}"#);
    let err = host
        .registry
        .run_action("action-docker-scale", &event, &request)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("retryable") && text.contains("unavailable: docker engine"),
        "{text}"
    );
    assert!(
        matches!(&err, registry::Error::Plugin(e) if e.is_retryable()),
        "{err:?}"
    );
    let health = reqwest::get(format!("{}/healthz", host.url)).await.unwrap();
    assert!(health.status().is_success());
    host.stop().await;
}

/// The link in the approval notice of action `id` that rules `verdict`.
fn approval_link(d: &IncidentDetail, id: &str, verdict: &str) -> String {
    let notice = d
        .notifications
        .iter()
        .find_map(|n| {
            let event: serde_json::Value = serde_json::from_str(&n.request).unwrap();
            let data: serde_json::Value =
                serde_json::from_str(event["data"].as_str().unwrap()).unwrap();
            let body = data["request"]["body"].as_str()?.to_owned();
            (data["rule"] == "eventpulse/approvals" && body.contains(id)).then_some(body)
        })
        .expect("an approval notice");
    let start = notice
        .find(&format!("/approvals/{id}?verdict={verdict}"))
        .unwrap();
    notice[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

async fn waiting(host: &Host) -> Vec<serde_json::Value> {
    host.get_json("/api/v1/approvals").await["approvals"]
        .as_array()
        .unwrap()
        .clone()
}

async fn action_status(host: &Host, id: &str) -> String {
    let job = host
        .store
        .job(eventpulse::store::Queue::Actions, id)
        .await
        .unwrap()
        .unwrap();
    job.status.to_string()
}

/// Approvals on the real Docker Engine (`[safety] require_approval`): the
/// scale-out waits with its exact params and leaves the containers alone,
/// across a host restart; an approval naming another params hash is
/// refused; the signed link's GET only shows the request, its POST
/// approves once, and the service goes to 2 replicas (Engine API). The
/// scale-in is rejected and a later one expires: neither runs, and every
/// step is on the timeline and in the audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_needing_approval_run_only_when_approved() {
    let svc = Service::start("appr", "eventpulse-demo-app:latest", false).await;
    settle_counts(&svc, (1, 1)).await;
    let host = Host::start_on(eventpulse_tests::Backend::Sqlite).await;
    let safety = "[safety]\nrequire_approval = true\napproval_timeout_secs = 600\n";
    install_scaling(&host, &svc, 20_000, safety).await;

    post_webhook(&host.url, &high_cpu(&svc, false)).await;
    let asked = wait_for("a scale-out waiting for approval", SETTLE, || async {
        waiting(&host).await.into_iter().next()
    })
    .await;
    assert_eq!(asked["plugin"], "action-docker-scale");
    assert_eq!(asked["target"], svc.name.as_str());
    assert_eq!(asked["params"]["replicas"], 2, "{asked}");
    let id = asked["id"].as_str().unwrap().to_owned();
    let hash = asked["params_hash"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(svc.counts().await, (1, 1), "nothing runs before approval");

    // A restart while it waits does not run it.
    let host = host.restart().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(action_status(&host, &id).await, "awaiting_approval");
    assert_eq!(
        svc.counts().await,
        (1, 1),
        "a restart runs nothing unapproved"
    );

    let approve = format!("/api/v1/actions/{id}/approve");
    let r = host
        .post(&approve)
        .json(&serde_json::json!({"by": "mallory", "params_hash": "0".repeat(64)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let text = r.text().await.unwrap();
    assert!(text.contains("params hash does not match"), "{text}");
    // Who rules is the token's name (and whoever the body names); a
    // read-only token may not rule at all.
    let r = reqwest::Client::new()
        .post(format!("{}{approve}", host.url))
        .bearer_auth(eventpulse_tests::READ_TOKEN)
        .json(&serde_json::json!({"params_hash": hash}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a read token cannot rule");
    let r = reqwest::Client::new()
        .post(format!("{}{approve}", host.url))
        .json(&serde_json::json!({"by": "x", "params_hash": hash}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the API needs the admin token");
    assert_eq!(action_status(&host, &id).await, "awaiting_approval");

    // The signed link from the approval notice.
    let incident = host.store.incidents(1).await.unwrap()[0].id.clone();
    let d = wait_for("the approval notice", SETTLE, || async {
        let d = host.store.incident_detail(&incident).await.unwrap()?;
        let noticed = d
            .notifications
            .iter()
            .any(|n| n.plugin == "notifier-log" && n.status == "delivered");
        noticed.then_some(d)
    })
    .await;
    let link = approval_link(&d, &id, "approve");
    let path = &link[link.find("/approvals/").unwrap()..];
    let url = format!("{}{path}", host.url);
    let client = reqwest::Client::new();
    let page = client.get(&url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains(&hash) && html.contains("<form method=\"post\""),
        "{html}"
    );
    let forged = url.replace("verdict=approve", "verdict=reject");
    assert_eq!(
        client.get(&forged).send().await.unwrap().status(),
        403,
        "the verdict is signed"
    );
    assert_eq!(
        action_status(&host, &id).await,
        "awaiting_approval",
        "a GET rules nothing"
    );
    let r = client
        .post(&url)
        .form(&[("by", "alice"), ("reason", "load is real")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    settle_counts(&svc, (2, 2)).await;
    wait_for("the approved scale-out completed", SETTLE, || async {
        (action_status(&host, &id).await == "completed").then_some(())
    })
    .await;
    let again = client
        .post(&url)
        .form(&[("by", "alice")])
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409, "a link works once");

    // The scale-in on the resolved alert: rejected, it never runs.
    post_webhook(&host.url, &high_cpu(&svc, true)).await;
    let asked = wait_for("the scale-in waiting", SETTLE, || async {
        waiting(&host).await.into_iter().next()
    })
    .await;
    assert_eq!(asked["params"]["replicas"], 1);
    let scale_in = asked["id"].as_str().unwrap().to_owned();
    let r = host
        .post(&format!("/api/v1/actions/{scale_in}/reject"))
        .json(&serde_json::json!({"by": "bob", "reason": "keep the capacity"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ruled: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        ruled["action"]["last_error"], "rejected by bob (token admin) via api: keep the capacity",
        "the ruling names the person and the token: {ruled}"
    );
    let r = host
        .post(&format!("/api/v1/actions/{scale_in}/approve"))
        .json(&serde_json::json!({"by": "alice", "params_hash": asked["params_hash"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        409,
        "a rejected action cannot be approved after"
    );

    // A LowCPU scale-in whose approval expires.
    let expiring = safety.replace("approval_timeout_secs = 600", "approval_timeout_secs = 3");
    install_scaling(&host, &svc, 20_000, &expiring).await;
    let low = sample(
        "LowCPU",
        &[("service", &svc.name), ("severity", "warning")],
        false,
        "2026-11-24T11:00:00Z",
        "",
    );
    post_webhook(&host.url, &low).await;
    let asked = wait_for("the LowCPU scale-in waiting", SETTLE, || async {
        waiting(&host).await.into_iter().next()
    })
    .await;
    let low_id = asked["id"].as_str().unwrap().to_owned();
    assert_ne!(low_id, scale_in);
    wait_for("the LowCPU scale-in expired", SETTLE, || async {
        (action_status(&host, &low_id).await == "expired").then_some(())
    })
    .await;
    let expired = host
        .store
        .job(eventpulse::store::Queue::Actions, &low_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(expired.attempts, 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        svc.counts().await,
        (2, 2),
        "neither the rejected nor the expired scale-in ran"
    );
    assert_eq!(action_status(&host, &scale_in).await, "rejected");

    let d = host
        .store
        .incident_detail(&incident)
        .await
        .unwrap()
        .unwrap();
    let timeline = kinds(&d);
    for step in [
        "waiting for approval",
        "approved by alice via link: load is real",
        "rejected by bob (token admin) via api: keep the capacity",
    ] {
        assert!(
            timeline
                .iter()
                .any(|k| k.starts_with("approval") && k.contains(step)),
            "{step}: {timeline:?}"
        );
    }
    let audit = wait_for("the approval audit", SETTLE, || async {
        let a = host
            .get_json("/api/v1/audit?plugin=action-docker-scale")
            .await;
        let records: Vec<(String, bool)> = a["audit"]
            .as_array()?
            .iter()
            .filter(|r| r["capability"] == "approval")
            .map(|r| {
                (
                    r["operation"].as_str().unwrap().to_owned(),
                    r["allowed"].as_bool().unwrap(),
                )
            })
            .collect();
        (records.iter().any(|r| r.0 == "expire")).then_some(records)
    })
    .await;
    for step in [
        ("request", true),
        ("approve", true),
        ("reject", false),
        ("expire", false),
    ] {
        assert!(
            audit.contains(&(step.0.to_owned(), step.1)),
            "{step:?}: {audit:?}"
        );
    }
    host.stop().await;
}

/// The `docker` capability over TCP with TLS client certificates
/// (`runtime.docker_host = "tcp://…"`, `runtime.docker_cert_path` with
/// `ca.pem`, `cert.pem`, `key.pem`). The Engine here only listens on its
/// unix socket, so the peer is `docker_tls_front` (rustls, client
/// certificates required) forwarding to it: the probe's container list is
/// the Engine's; a client certificate from another CA gets no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_over_tls_presents_the_client_certificate() {
    use eventpulse_tests::dockerkit::docker_tls_front;
    use eventpulse_tests::pki::TestCa;
    let svc = Service::start("tlsapp", "eventpulse-demo-app:latest", true).await;
    settle_counts(&svc, (1, 1)).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "docker");
    let clients = TestCa::new(dir.path(), "docker-clients");
    let strangers = TestCa::new(dir.path(), "strangers");
    let front = docker_tls_front(&ca.issue("dockerd", false), &clients.cert).await;
    let cert_dir = |name: &str, issuer: &TestCa| {
        let me = issuer.issue(name, true);
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(&ca.cert, d.join("ca.pem")).unwrap();
        std::fs::copy(&me.cert, d.join("cert.pem")).unwrap();
        std::fs::copy(&me.key, d.join("key.pem")).unwrap();
        d
    };
    let (good, bad) = (
        cert_dir("eventpulse", &clients),
        cert_dir("stranger", &strangers),
    );
    let event =
        eventpulse_tests::alert_event("HighCPU", eventpulse::model::AlertStatus::Firing, &[]);
    let list = probe_request(serde_json::json!({"op": "list", "selector": {}}));
    let mut answers = Vec::new();
    for certs in [good, bad] {
        let host = Host::start()
            .await
            .restart_with(|c| {
                c.runtime.docker_host = format!("tcp://{}", front.addr);
                c.runtime.docker_cert_path = Some(certs.clone());
            })
            .await;
        host.install_now("action-docker-probe", "action-docker-probe", &svc.grant())
            .await;
        answers.push(
            host.registry
                .run_action("action-docker-probe", &event, &list)
                .await
                .map(|r| r.summary)
                .map_err(|e| e.to_string()),
        );
        host.stop().await;
    }
    assert_eq!(answers[0].as_deref(), Ok("1 containers"), "{answers:?}");
    let err = answers[1].as_ref().unwrap_err();
    assert!(err.contains("docker engine"), "{err}");
}
