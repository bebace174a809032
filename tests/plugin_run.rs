//! `eventpulse plugin run` on every first-party plugin with the example
//! event (and request) it ships in `plugins/<name>/examples/`, through the
//! same library call the CLI makes: the real sandbox and the shipped
//! manifest, capabilities answered by recording stubs.

use std::path::Path;

use eventpulse::plugin_run::{Input, Report, run};
use serde_json::Value;

/// Rehearse `name` with its examples; `config` overrides its `[config]`.
/// Secrets the manifest reads from the environment are given from files
/// instead (a copy of the manifest), so the test sets no variables.
pub async fn rehearse(name: &str, config: &[(&str, &str)]) -> Report {
    let root = eventpulse_tests::workspace();
    let examples = root.join("plugins").join(name).join("examples");
    let read = |f: &str| -> Option<Value> {
        let p = examples.join(f);
        p.exists()
            .then(|| serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap())
    };
    let scratch = tempfile::tempdir().unwrap();
    let manifest = with_file_secrets(
        &root.join("plugins").join(name).join("plugin.toml"),
        scratch.path(),
    );
    run(Input {
        wasm: eventpulse_tests::component(name),
        manifest: Some(manifest),
        config: config
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        state: None,
        event: read("event.json").expect("every first-party plugin ships an example event"),
        request: read("request.json"),
        cache_dir: root.join("target/plugins/test-cache"),
    })
    .await
    .unwrap_or_else(|e| panic!("{name}: {e:#}"))
}

/// A copy of `manifest` under `dir` whose `[secrets]` read files holding
/// `secret-<name>` (`https://hooks.slack.com/services/secret-…` for a
/// URL the grant must allow).
fn with_file_secrets(manifest: &Path, dir: &Path) -> std::path::PathBuf {
    let mut doc: toml::Table = toml::from_str(&std::fs::read_to_string(manifest).unwrap()).unwrap();
    if let Some(toml::Value::Table(secrets)) = doc.get_mut("secrets") {
        for (name, source) in secrets.iter_mut() {
            let file = dir.join(format!("secret-{name}"));
            let value = if name.ends_with("url") {
                format!("https://hooks.slack.com/services/secret-{name}")
            } else {
                format!("secret-{name}")
            };
            std::fs::write(&file, value).unwrap();
            *source = toml::Value::Table(toml::Table::from_iter([(
                "file".to_owned(),
                toml::Value::String(file.display().to_string()),
            )]));
        }
    }
    let path = dir.join("plugin.toml");
    std::fs::write(&path, toml::to_string(&doc).unwrap()).unwrap();
    path
}

/// `(capability, operation)` of every call.
pub fn calls(r: &Report) -> Vec<(String, String)> {
    r.calls
        .iter()
        .map(|c| (c.capability.clone(), c.operation.clone()))
        .collect()
}

fn returned(r: &Report) -> &Value {
    assert!(r.failed.is_none(), "{}: {:?}", r.plugin, r.failed);
    r.returned.as_ref().unwrap()
}

fn pairs(calls: &[(&str, &str)]) -> Vec<(String, String)> {
    calls
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_decide_their_example_events() {
    // The shipped manifest scales with the no-op action; the demo (and
    // this override) with the Docker one.
    let r = rehearse("rule-cpu-autoscale", &[]).await;
    assert_eq!(returned(&r)["actions"][0]["action"], "action-noop");
    let r = rehearse("rule-cpu-autoscale", &[("action", "action-docker-scale")]).await;
    let d = returned(&r);
    assert_eq!(d["actions"][0]["action"], "action-docker-scale", "{d}");
    assert_eq!(d["actions"][0]["params"]["replicas"], 2, "{d}");
    assert_eq!(d["incident"]["Open"]["title"], "High CPU on app", "{d}");
    assert!(r.calls.is_empty());
    assert!(
        r.state_writes
            .iter()
            .any(|(k, _)| k == "last-scale-out:app"),
        "{:?}",
        r.state_writes
    );

    let r = rehearse("rule-alert-route", &[]).await;
    let d = returned(&r);
    assert_eq!(d["incident"]["Open"]["title"], "DiskFull on db", "{d}");
    assert_eq!(d["notifications"][0]["channel"], "notifier-log", "{d}");

    let r = rehearse("rule-min-nodes", &[]).await;
    let d = returned(&r);
    let signals: Vec<&str> = d["signals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(signals, ["MinimumNodesViolation", "AutoScaleUpToMinimum"]);
    assert_eq!(d["actions"][0]["action"], "action-k3s-node-add", "{d}");
    assert_eq!(d["actions"][0]["params"]["add"], 1, "{d}");

    // Enrichment reads go to the stubbed `kube` and are recorded.
    let r = rehearse("rule-k8s-events", &[]).await;
    let d = returned(&r);
    assert_eq!(d["incident"]["Open"]["severity"], "Critical", "{d}");
    assert!(
        calls(&r).contains(&("kube".to_owned(), "get".to_owned())),
        "{:?}",
        r.calls
    );
    assert_eq!(r.calls[0].args["name"], "web-7d8f-x4k2m");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_and_notifiers_show_the_calls_they_would_make() {
    let r = rehearse("action-container-restart", &[]).await;
    returned(&r);
    assert_eq!(
        calls(&r)[0],
        ("docker".to_owned(), "list-containers".to_owned())
    );
    assert!(
        calls(&r).contains(&("docker".to_owned(), "restart".to_owned())),
        "{:?}",
        r.calls
    );

    // The stubbed `kube` lists no nodes, so the new worker never shows up
    // Ready: the rehearsal ends in the timeout a real run would report,
    // after showing the agent container it would have started.
    let r = rehearse("action-k3s-node-add", &[("ready_timeout_ms", "300")]).await;
    let failed = r.failed.as_ref().expect("no node ever Ready");
    assert!(failed.message.contains("not Ready"), "{failed:?}");
    let made = calls(&r);
    assert!(
        made.contains(&("docker".to_owned(), "create".to_owned())),
        "{:?}",
        r.calls
    );
    assert!(
        made.contains(&("kube".to_owned(), "list-nodes".to_owned())),
        "{:?}",
        r.calls
    );
    // The join token is a secret: it is in no recorded argument.
    let shown = serde_json::to_string(&r.calls).unwrap();
    assert!(!shown.contains("secret-join_token"), "{shown}");

    // A container the docker grant would not let it create is refused,
    // as it would be: here an image outside the allowlist.
    let r = rehearse("action-k3s-node-add", &[("image", "evil/k3s:latest")]).await;
    let create = r
        .calls
        .iter()
        .find(|c| c.operation == "create")
        .expect("a create");
    assert!(
        create
            .refused
            .as_deref()
            .is_some_and(|why| why.contains("allowlist")),
        "{create:?}"
    );
    assert_eq!(
        r.failed.as_ref().map(|f| f.kind),
        Some("denied"),
        "{:?}",
        r.failed
    );

    let r = rehearse("action-noop", &[]).await;
    assert!(returned(&r)["summary"].is_string());
    assert!(r.calls.is_empty());

    let r = rehearse("notifier-log", &[]).await;
    assert!(returned(&r)["detail"].is_string());
    assert!(r.calls.is_empty());

    for notifier in ["notifier-slack", "notifier-telegram"] {
        let r = rehearse(notifier, &[]).await;
        returned(&r);
        assert_eq!(calls(&r), pairs(&[("http", "POST")]), "{notifier}");
        assert_eq!(r.calls[0].answer.as_ref().unwrap()["status"], 200);
        let shown = serde_json::to_string(&r.calls).unwrap();
        assert!(
            !shown.contains("secret-"),
            "a secret in the record: {shown}"
        );
        assert!(
            shown.contains("HighCPU on app"),
            "the message it would send: {shown}"
        );
    }

    // A destination outside the grant is refused, as it would be.
    let r = rehearse("notifier-webhook", &[("url", "http://203.0.113.9/hook")]).await;
    assert_eq!(
        r.failed.as_ref().map(|f| f.kind),
        Some("denied"),
        "{:?}",
        r.failed
    );
    assert_eq!(
        r.calls[0].refused.as_deref(),
        Some("destination not granted")
    );
    let r = rehearse("notifier-webhook", &[]).await;
    returned(&r);
    assert_eq!(r.calls[0].args["uri"], "http://127.0.0.1:9000/eventpulse");

    let r = rehearse("notifier-email", &[]).await;
    returned(&r);
    assert_eq!(calls(&r), pairs(&[("smtp", "send")]));
    assert_eq!(r.calls[0].args["to"][0], "oncall@localhost");
}

/// `action-docker-scale` with the Docker Engine running: the rehearsal
/// lists the calls a real run makes to go from one replica to two, and
/// the Engine's containers (all of them, any state) are the same after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_scale_rehearsal_changes_nothing_on_the_engine() {
    use bollard::query_parameters::ListContainersOptionsBuilder;
    let engine = eventpulse_tests::dockerkit::docker();
    let all = || async {
        let mut ids: Vec<String> = engine
            .list_containers(Some(
                ListContainersOptionsBuilder::default().all(true).build(),
            ))
            .await
            .expect("the Docker Engine")
            .into_iter()
            .filter_map(|c| c.id)
            .collect();
        ids.sort();
        ids
    };
    let before = all().await;
    let r = rehearse("action-docker-scale", &[]).await;
    let result = returned(&r);
    assert_eq!(
        calls(&r),
        pairs(&[
            ("docker", "list-containers"),
            ("docker", "create-replica"),
            ("docker", "start"),
            ("docker", "wait-healthy"),
        ])
    );
    assert_eq!(r.calls[0].args["selector"][0][1], "app");
    assert_eq!(result["details"]["replicas"], 2, "{result}");
    assert_eq!(all().await, before, "the rehearsal touched the Engine");
}
