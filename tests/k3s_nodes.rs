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

/// action-k3s-node-add on `pool` (the stand-in agent image, unprivileged),
/// against the API server at `url`, its secrets in the files given.
fn node_add_manifest(
    pool: &str,
    url: &str,
    join: &std::path::Path,
    kube: &std::path::Path,
) -> String {
    format!(
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
join_token = {{ file = "{}" }}
kube_token = {{ file = "{}" }}
"#,
        join.display(),
        kube.display()
    )
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
        &node_add_manifest(
            &pool,
            &kube.url,
            &secrets.join("join"),
            &secrets.join("kube"),
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

/// `(decisions of rule-min-nodes, signal names emitted so far, in order)`.
async fn checked(host: &Host) -> (i64, Vec<String>) {
    use sqlx::Connection as _;
    let mut db = sqlx::AnyConnection::connect(host.database_url())
        .await
        .unwrap();
    let decisions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM decisions_log WHERE rule = 'rule-min-nodes'")
            .fetch_one(&mut db)
            .await
            .unwrap();
    let payloads: Vec<String> = sqlx::query_scalar(
        "SELECT payload FROM outbox_events WHERE kind = 'signal.emitted' ORDER BY seq",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    let names = payloads
        .iter()
        .map(|p| {
            let envelope: serde_json::Value = serde_json::from_str(p).unwrap();
            let data: serde_json::Value =
                serde_json::from_str(envelope["data"].as_str().unwrap()).unwrap();
            data["signal"]["name"].as_str().unwrap().to_owned()
        })
        .collect();
    (decisions, names)
}

/// One scheduled check: move the (manual) clock a period on and wait until
/// the rule has decided on it.
async fn tick(host: &Host) {
    let (before, _) = checked(host).await;
    let started = std::time::Instant::now();
    let mut advanced = std::time::Instant::now();
    host.clock.advance(10_000);
    while checked(host).await.0 <= before {
        assert!(started.elapsed() < SETTLE, "no scheduled check came");
        // The timer task arms the next call within a second of the last:
        // if this advance came before that, the next one makes it due.
        if advanced.elapsed() > Duration::from_secs(3) {
            host.clock.advance(10_000);
            advanced = std::time::Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// rule-min-nodes checking the cluster at `url` every 10 s, its token in
/// the file `token`.
fn min_nodes_manifest(url: &str, token: &str) -> String {
    format!(
        r#"[schedule]
every_secs = 10

[grants.kube]
endpoint = "{url}"
token_secret = "kube_token"

[secrets]
kube_token = {{ file = {token:?} }}

[config]
min_nodes = "2"
max_nodes = "4"
underutilized_secs = "20"
check_every_secs = "10"
channels = "notifier-log"
"#
    )
}

/// action-k3s-node-remove on `pool`, with the kube writes `write`.
fn node_remove_manifest(url: &str, pool: &str, write: &str, token: &str) -> String {
    format!(
        r#"[limits]
timeout_ms = 10000
fuel = 200_000_000

[grants.docker]
selector = {{ "k3s.pool" = "{pool}" }}
images = ["eventpulse-k3s-agent:*"]

[grants.kube]
endpoint = "{url}"
token_secret = "kube_token"
write = [{write}]

[secrets]
kube_token = {{ file = {token:?} }}

[config]
pool = "{pool}"
"#
    )
}

/// Seed 002's autoscaler loop through the real host, against a stand-in
/// for the Kubernetes API (`kubecluster.rs`; no k3s server runs here) and
/// the real Docker Engine (where no agent container of this pool runs):
/// - the scheduled check (`[schedule] every_secs`, on the host's manual
///   clock) sees three underutilised workers and takes one away through
///   `action-k3s-node-remove` (cordon, evict, delete), with the seed's
///   scale-down sequence of signals on the timeline;
/// - without `write` in its kube grant, the same action is refused at the
///   host, the refusal audited, and the cluster untouched;
/// - a check that came due while the host was down runs when it starts,
///   and remembers what it saw before (a node gone meanwhile is lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_check_scales_down_is_refused_without_grants_and_survives_a_restart() {
    const TOKEN: &str = "cluster-token-never-shown";
    let pool = format!("pool-{}", dockerkit::unique());
    let cluster = eventpulse_tests::kubecluster::Cluster::start(TOKEN).await;
    cluster.set_workers(&[
        ("w1", true, 0.2, 1.0),
        ("w2", true, 0.2, 1.0),
        ("w3", true, 0.2, 1.0),
    ]);
    cluster.set_pods(vec![serde_json::json!({
        "metadata": {"name": "web-3", "namespace": "shop", "ownerReferences": [{"kind": "ReplicaSet", "name": "web-7d8f"}]},
        "spec": {"nodeName": "w3"},
        "status": {"phase": "Running"},
    })]);
    let host = Host::start().await;
    let token = host.dir.path().join("kube-token");
    std::fs::write(&token, TOKEN).unwrap();
    let token = token.display().to_string();
    host.install("notifier-log", "notifier-log", "");
    host.install(
        "action-k3s-node-remove",
        "action-k3s-node-remove",
        &node_remove_manifest(
            &cluster.url,
            &pool,
            r#""cordon", "evict", "delete""#,
            &token,
        ),
    );
    host.install_now(
        "rule-min-nodes",
        "rule-min-nodes",
        &min_nodes_manifest(&cluster.url, &token),
    )
    .await;

    // Three checks: in sync, underutilised, time to scale down.
    for _ in 0..3 {
        tick(&host).await;
    }
    let d = incident_titled(&host, "k3s pool workers underutilised", |d| {
        d.incident.status == "resolved" && signals(d).iter().any(|s| s == "ClusterStateSynced")
    })
    .await;
    let result: serde_json::Value =
        serde_json::from_str(d.actions[0].result.as_deref().unwrap()).unwrap();
    println!("scale-down: {result}");
    assert_eq!(result["details"]["node"], "w3");
    assert_eq!(
        cluster.writes(),
        ["cordon w3", "evict shop/web-3", "delete w3"]
    );
    assert_eq!(cluster.workers(), ["w1", "w2"]);
    assert_eq!(
        signals(&d),
        [
            "UnderutilizationWarning",
            "OptimalStateTrigger",
            "ScaleDownDecision",
            "ScaleDownStarted",
            "ScalingActionCompleted",
            "OptimalStateTrigger",
            "ClusterStateSynced",
        ],
        "{:#?}",
        d.timeline
    );
    assert_eq!(
        checked(&host).await.1,
        [
            "ClusterStateSynced",
            "UnderutilizationWarning",
            "OptimalStateTrigger",
            "ScaleDownDecision",
            "ScaleDownStarted",
            "ScalingActionCompleted",
            "OptimalStateTrigger",
            "ClusterStateSynced",
        ],
        "the seed's scale-down flow, in order"
    );

    // The same removal without the write grant: refused and audited.
    host.install_now(
        "action-k3s-node-remove",
        "action-k3s-node-remove",
        &node_remove_manifest(&cluster.url, &pool, "", &token),
    )
    .await;
    cluster.set_workers(&[
        ("w1", true, 0.2, 1.0),
        ("w2", true, 0.2, 1.0),
        ("w4", true, 0.2, 1.0),
    ]);
    let refused = wait_for("a refused cordon in the audit log", SETTLE, || async {
        tick(&host).await;
        let (records, _) = host
            .store
            .audit_page(Some("action-k3s-node-remove"), None, 50)
            .await
            .unwrap();
        records
            .into_iter()
            .find(|r| r.capability == "kube" && r.operation == "cordon" && !r.allowed)
    })
    .await;
    println!("audited: {refused:?}");
    assert!(refused.detail.contains("grants.kube.write"), "{refused:?}");
    assert_eq!(refused.target, "/api/v1/nodes/w4");
    assert_eq!(cluster.writes().len(), 3, "nothing more was written");
    assert_eq!(cluster.workers(), ["w1", "w2", "w4"]);

    // Down for a while; w1 goes meanwhile. The check that came due runs at
    // start, without the clock moving, and knows w1 from before.
    let clock = host.clock.clone();
    let (before, _) = checked(&host).await;
    let host = host
        .restart_after(|| {
            cluster.set_workers(&[("w2", true, 1.0, 2.0), ("w4", true, 1.0, 2.0)]);
            clock.advance(60_000);
        })
        .await;
    let lost = wait_for("the overdue check after the restart", SETTLE, || async {
        let (decisions, names) = checked(&host).await;
        (decisions > before && names.last().is_some_and(|n| n == "NodeUnexpectedlyLost"))
            .then_some(names)
    })
    .await;
    println!("signals in all: {lost:?}");
}

/// Seed 002's recovery: a worker (an agent container on the real Docker
/// Engine) dies; the scheduled check finds it gone, asks
/// `action-k3s-node-add` for one, which starts an agent container and
/// waits until the (stand-in) API server reports it Ready; the timeline
/// carries the seed's whole sequence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_check_replaces_a_lost_node_with_the_seed_sequence() {
    const TOKEN: &str = "cluster-token-never-shown-2";
    let pool = format!("pool-{}", dockerkit::unique());
    let _cleanup = Labelled(format!("k3s.pool={pool}"));
    let doomed = format!("{pool}-a");
    dockerkit::run(
        &doomed,
        "eventpulse-k3s-agent:latest",
        &[("k3s.pool", &pool), ("k3s.node", &doomed)],
    )
    .await;
    let cluster = eventpulse_tests::kubecluster::Cluster::with_docker_pool(TOKEN, &pool).await;
    cluster.set_workers(&[("w1", true, 1.0, 2.0)]);

    let host = Host::start().await;
    let secrets = host.dir.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("join"), JOIN_TOKEN).unwrap();
    std::fs::write(secrets.join("kube"), TOKEN).unwrap();
    let kube_secret = secrets.join("kube").display().to_string();
    host.install("notifier-log", "notifier-log", "");
    host.install(
        "action-k3s-node-add",
        "action-k3s-node-add",
        &node_add_manifest(
            &pool,
            &cluster.url,
            &secrets.join("join"),
            &secrets.join("kube"),
        ),
    );
    let manifest = min_nodes_manifest(&cluster.url, &kube_secret);
    host.install_now("rule-min-nodes", "rule-min-nodes", &manifest)
        .await;

    // Two Ready workers (the minimum): in sync.
    wait_for("the agent container healthy", SETTLE, || async {
        dockerkit::labelled(&format!("k3s.pool={pool}"), false)
            .await
            .ok()?
            .iter()
            .any(|c| {
                c.status
                    .as_deref()
                    .unwrap_or_default()
                    .contains("(healthy)")
            })
            .then_some(())
    })
    .await;
    tick(&host).await;
    assert_eq!(checked(&host).await.1, ["ClusterStateSynced"]);

    // The agent dies: the next check finds it gone and replaces it.
    dockerkit::remove_labelled(&format!("k3s.node={doomed}"));
    tick(&host).await;
    let d = incident_titled(&host, "k3s pool workers below minimum", |d| {
        d.incident.status == "resolved" && signals(d).iter().any(|s| s == "ClusterStateSynced")
    })
    .await;
    let result: serde_json::Value =
        serde_json::from_str(d.actions[0].result.as_deref().unwrap()).unwrap();
    println!("replacement: {result}");
    assert_eq!(
        signals(&d),
        [
            "NodeUnexpectedlyLost",
            "MinimumNodesViolation",
            "AutoScaleUpToMinimum",
            "ScaleUpStarted",
            "NodeCreated",
            "NodeReady",
            "ScalingActionCompleted",
            "MinimumNodesRestored",
            "ClusterStateSynced",
        ],
        "{:#?}",
        d.timeline
    );
    let added = result["details"]["nodes"][0].as_str().unwrap().to_owned();
    assert!(
        cluster.workers().len() == 1
            && dockerkit::labelled(&format!("k3s.node={added}"), false)
                .await
                .unwrap()
                .len()
                == 1,
        "the new agent runs"
    );
}

/// A host whose rule-min-nodes checks the in-memory `cluster` every 10 s
/// (manual clock) and scales up through action-noop (the scenarios below
/// are about what the check says, not about adding machines).
async fn checking_host(cluster: &eventpulse_tests::kubecluster::Cluster, token: &str) -> Host {
    let host = Host::start().await;
    let file = host.dir.path().join("kube-token");
    std::fs::write(&file, token).unwrap();
    host.install("notifier-log", "notifier-log", "");
    host.install("action-noop", "action-noop", "");
    let manifest = min_nodes_manifest(&cluster.url, &file.display().to_string()).replace(
        "[config]\n",
        "[config]\naction = \"action-noop\"\nmin_nodes = \"3\"\n",
    );
    // min_nodes appears twice now: keep the first (3).
    let manifest = manifest.replacen("min_nodes = \"2\"\n", "", 1);
    host.install_now("rule-min-nodes", "rule-min-nodes", &manifest)
        .await;
    host
}

/// The signals of the check that followed `change`, as its incident's
/// timeline has them (up to the action it asked for).
async fn after(
    cluster: &eventpulse_tests::kubecluster::Cluster,
    token: &str,
    title: &str,
    change: impl FnOnce(&eventpulse_tests::kubecluster::Cluster),
) -> Vec<String> {
    cluster.set_workers(&[
        ("w1", true, 1.0, 2.0),
        ("w2", true, 1.0, 2.0),
        ("w3", true, 1.0, 2.0),
    ]);
    let host = checking_host(cluster, token).await;
    tick(&host).await;
    assert_eq!(checked(&host).await.1, ["ClusterStateSynced"]);
    change(cluster);
    tick(&host).await;
    let d = incident_titled(&host, title, |d| {
        signals(d).iter().any(|s| s == "ScaleUpStarted")
    })
    .await;
    let mut seen = signals(&d);
    seen.truncate(
        seen.iter()
            .position(|s| s == "ScaleUpStarted")
            .map_or(seen.len(), |i| i + 1),
    );
    seen
}

/// Seed 002's other scenarios through the host and the API stand-in: each
/// yields its exact sequence on the incident timeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_lost_pressure_and_pending_pods_each_yield_the_seed_sequence() {
    const TOKEN: &str = "cluster-token-never-shown-3";
    let cluster = eventpulse_tests::kubecluster::Cluster::start(TOKEN).await;

    let lost = after(&cluster, TOKEN, "k3s pool workers below minimum", |c| {
        c.set_workers(&[("w1", true, 1.0, 2.0)]);
    })
    .await;
    assert_eq!(
        lost,
        [
            "NodeUnexpectedlyLost",
            "NodeUnexpectedlyLost",
            "MinimumNodesViolation",
            "EmergencyScaleUp",
            "ScaleUpStarted"
        ]
    );

    let pressure = after(&cluster, TOKEN, "k3s pool workers needs capacity", |c| {
        // 90 % CPU on each worker.
        c.set_workers(&[
            ("w1", true, 1.8, 2.0),
            ("w2", true, 1.8, 2.0),
            ("w3", true, 1.8, 2.0),
        ]);
    })
    .await;
    assert_eq!(pressure, ["ResourcePressureAlert", "ScaleUpStarted"]);

    let pending = after(&cluster, TOKEN, "k3s pool workers needs capacity", |c| {
        c.set_pods(vec![serde_json::json!({
            "metadata": {"name": "api-5f9c-x", "namespace": "shop", "ownerReferences": [{"kind": "ReplicaSet", "name": "api-5f9c"}]},
            "status": {"phase": "Pending"},
        })]);
    })
    .await;
    assert_eq!(pending, ["PendingPodsDetected", "ScaleUpStarted"]);
    println!("several lost: {lost:?}\npressure: {pressure:?}\npending pods: {pending:?}");
}
