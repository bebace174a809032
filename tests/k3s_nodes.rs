//! Seed 002 on the real Docker Engine: `rule-min-nodes` sees the k3s
//! worker pool drop below its minimum, `action-k3s-node-add` starts a
//! worker container (from the locally built stand-in agent image) and waits
//! until the Kubernetes API reports the node `Ready`. The API server is the
//! stand-in in `kubeapi.rs` (no k3s server runs here); the containers are
//! real and checked through the Engine API. A real k3s agent runs
//! privileged (the shipped manifest grants it); this machine's engine
//! refuses to start privileged containers, so here the workers run without.

use std::time::Duration;

use eventpulse::ingest::alertmanager::sample;
use eventpulse::store::IncidentDetail;
use eventpulse_tests::dockerkit::{self, Labelled};
use eventpulse_tests::kubeapi::KubeApi;
use eventpulse_tests::{Host, post_webhook, wait_for};

const SETTLE: Duration = Duration::from_secs(60);
const JOIN_TOKEN: &str = "K10c0ffee-join-token-never-shown";
const KUBE_TOKEN: &str = "kube-bearer-token-never-shown";

fn alert(
    name: &str,
    pool: &str,
    resolved: bool,
    annotations: &[(&str, &str)],
) -> serde_json::Value {
    let ends = if resolved { "2026-11-24T10:05:00Z" } else { "" };
    let mut body = sample(
        name,
        &[("pool", pool), ("severity", "critical")],
        resolved,
        "2026-11-24T10:00:00Z",
        ends,
    );
    for (k, v) in annotations {
        body["alerts"][0]["annotations"][*k] = (*v).into();
    }
    body
}

fn signals(d: &IncidentDetail) -> Vec<String> {
    d.timeline
        .iter()
        .filter(|e| e.kind == "signal")
        .map(|e| e.cause.trim_start_matches("signal ").to_owned())
        .collect()
}

async fn incident_titled(
    host: &Host,
    title: &str,
    done: impl Fn(&IncidentDetail) -> bool,
) -> IncidentDetail {
    wait_for(title, SETTLE, || async {
        for i in host.store.incidents(10).await.unwrap() {
            if i.title.starts_with(title) {
                let d = host.store.incident_detail(&i.id).await.unwrap()?;
                return done(&d).then_some(d);
            }
        }
        None
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_worker_is_replaced_until_the_api_reports_it_ready() {
    let pool = format!("pool-{}", dockerkit::unique());
    let _cleanup = Labelled(format!("k3s.pool={pool}"));
    let seed = format!("{pool}-seed");
    dockerkit::run(
        &seed,
        "eventpulse-k3s-agent:latest",
        &[("k3s.pool", &pool), ("k3s.node", &seed)],
    )
    .await;
    let kube = KubeApi::start(&pool, KUBE_TOKEN).await;

    let host = Host::start().await;
    let secrets = host.dir.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("join"), JOIN_TOKEN).unwrap();
    std::fs::write(secrets.join("kube"), KUBE_TOKEN).unwrap();
    host.install(
        "rule-min-nodes",
        "rule-min-nodes",
        "[config]\nmin_nodes = \"2\"\nmax_nodes = \"4\"\nchannels = \"notifier-log\"\n",
    );
    host.install("notifier-log", "notifier-log", "");
    host.install_now(
        "action-k3s-node-add",
        "action-k3s-node-add",
        &format!(
            r#"[limits]
timeout_ms = 28000
fuel = 200_000_000

[grants.docker]
selector = {{ "k3s.pool" = "{pool}" }}
images = ["eventpulse-k3s-agent:*"]

[grants.kube]
endpoint = "{url}"
token_secret = "kube_token"

[config]
image = "eventpulse-k3s-agent:latest"
server_url = "https://k3s-server:6443"
pool = "{pool}"
privileged = "false"
ready_timeout_ms = "20000"

[secrets]
join_token = {{ file = "{join}" }}
kube_token = {{ file = "{kube}" }}
"#,
            url = kube.url,
            join = secrets.join("join").display(),
            kube = secrets.join("kube").display(),
        ),
    )
    .await;

    // One Ready worker of a minimum of two.
    let (status, body) = post_webhook(
        &host.url,
        &alert(
            "K3sWorkersBelowMinimum",
            &pool,
            false,
            &[("ready_workers", "1")],
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let title = format!("k3s pool {pool} below minimum");
    let d = incident_titled(&host, &title, |d| {
        d.actions.iter().any(|a| a.status == "completed")
    })
    .await;
    let result: serde_json::Value =
        serde_json::from_str(d.actions[0].result.as_deref().unwrap()).unwrap();
    let new_node = result["details"]["nodes"][0].as_str().unwrap().to_owned();

    // The Engine has two running, healthy workers of the pool; the new one
    // carries the join settings. (It runs unprivileged: this machine's
    // engine cannot start privileged containers, "unable to apply caps".)
    let containers = dockerkit::labelled(&format!("k3s.pool={pool}"), false)
        .await
        .unwrap();
    assert_eq!(containers.len(), 2, "{containers:#?}");
    assert!(containers.iter().all(|c| {
        c.status
            .as_deref()
            .unwrap_or_default()
            .contains("(healthy)")
    }));
    let worker = dockerkit::docker()
        .inspect_container(
            &new_node,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap();
    assert_eq!(worker.host_config.unwrap().privileged, Some(false));
    let env = worker.config.unwrap().env.unwrap();
    assert!(
        env.contains(&format!("K3S_TOKEN={JOIN_TOKEN}")),
        "the agent gets the join token"
    );
    assert!(env.contains(&"K3S_URL=https://k3s-server:6443".to_owned()));
    assert!(
        kube.requests.load(std::sync::atomic::Ordering::Relaxed) >= 2,
        "readiness came from the API"
    );

    // Back at the minimum: the alert resolves, and so does the incident.
    post_webhook(
        &host.url,
        &alert(
            "K3sWorkersBelowMinimum",
            &pool,
            true,
            &[("ready_workers", "2")],
        ),
    )
    .await;
    // The transition is the rule stage's, the signal's timeline entry the
    // incident stage's: wait for both.
    let d = incident_titled(&host, &title, |d| {
        d.incident.status == "resolved" && signals(d).iter().any(|s| s == "MinimumNodesRestored")
    })
    .await;
    assert_eq!(
        signals(&d),
        [
            "MinimumNodesViolation",
            "AutoScaleUpToMinimum",
            "ScalingActionCompleted",
            "MinimumNodesRestored"
        ],
        "{:#?}",
        d.timeline
    );

    // Pods pending: scale-down is blocked, and the reason is on record.
    post_webhook(
        &host.url,
        &alert(
            "K3sScaleDownCandidate",
            &pool,
            false,
            &[("ready_workers", "3"), ("pending_pods", "2")],
        ),
    )
    .await;
    let blocked = incident_titled(
        &host,
        &format!("Scale-down of k3s pool {pool} blocked"),
        |d| !signals(d).is_empty(),
    )
    .await;
    assert_eq!(signals(&blocked), ["ScaleDownBlocked"]);
    assert_eq!(blocked.incident.severity.as_str(), "info");

    // The join token and the API token appear in no API output and no
    // stored event.
    let api = host
        .get_text(&format!("/api/v1/incidents/{}", d.incident.id))
        .await;
    let audit = host.get_text("/api/v1/audit").await;
    let kinds = [
        "alert.raised",
        "incident.opened",
        "incident.updated",
        "action.requested",
        "action.completed",
        "action.failed",
        "notification.requested",
        "notification.delivered",
        "signal.emitted",
    ];
    let events = host.store.outbox_read(&kinds, 0, 10_000).await.unwrap();
    assert!(events.len() > 10, "{} events read", events.len());
    let stored = serde_json::to_string(&events).unwrap();
    for (what, text) in [
        ("incident API", &api),
        ("audit API", &audit),
        ("event log", &stored),
    ] {
        assert!(
            !text.contains(JOIN_TOKEN) && !text.contains(KUBE_TOKEN),
            "a token leaked into the {what}"
        );
    }
    assert!(audit.contains("\"operation\":\"create\""), "{audit}");
    host.stop().await;
}

/// Without the API token the capability is refused by the API server, and
/// the action fails (retryably) without adding a worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_api_token_fails_before_any_worker_is_added() {
    let pool = format!("pool-{}", dockerkit::unique());
    let _cleanup = Labelled(format!("k3s.pool={pool}"));
    let kube = KubeApi::start(&pool, KUBE_TOKEN).await;
    let host = Host::start().await;
    let secret = host.dir.path().join("wrong");
    std::fs::write(&secret, "not-the-token").unwrap();
    std::fs::write(host.dir.path().join("join"), JOIN_TOKEN).unwrap();
    host.install_now(
        "action-k3s-node-add",
        "action-k3s-node-add",
        &format!(
            "[grants.docker]\nselector = {{ \"k3s.pool\" = \"{pool}\" }}\nimages = [\"eventpulse-k3s-agent:*\"]\nprivileged = true\n\n[grants.kube]\nendpoint = \"{}\"\ntoken_secret = \"kube_token\"\n\n[config]\nimage = \"eventpulse-k3s-agent:latest\"\nserver_url = \"https://k3s-server:6443\"\npool = \"{pool}\"\n\n[secrets]\njoin_token = {{ file = \"{}\" }}\nkube_token = {{ file = \"{}\" }}\n",
            kube.url,
            host.dir.path().join("join").display(),
            secret.display()
        ),
    )
    .await;
    let event = eventpulse_tests::alert_event(
        "K3sWorkersBelowMinimum",
        eventpulse::model::AlertStatus::Firing,
        &[],
    );
    let request = eventpulse_tests::action_request("action-k3s-node-add", &pool, r#"{"add": 1}"#);
    let err = host
        .registry
        .run_action("action-k3s-node-add", &event, &request)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("401"), "{text}");
    assert!(text.contains("retryable"), "{text}");
    assert!(!text.contains("not-the-token"));
    let left = dockerkit::labelled(&format!("k3s.pool={pool}"), true)
        .await
        .unwrap();
    assert!(left.is_empty(), "no worker was created: {left:#?}");
    host.stop().await;
}
