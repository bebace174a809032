//! Python plugins (componentize-py) under the same sandbox as Rust ones:
//! scaffolded and built by the host's own `plugin new --lang python` and
//! `plugin build` code, dropped into a running host's plugin directory
//! beside Rust plugins, driven through the pipeline; and hostile Python
//! (`tests/python/rule-py-hostile`) contained with the same typed errors.

use eventpulse::ingest::alertmanager::sample;
use eventpulse::model::AlertStatus;
use eventpulse::registry;
use eventpulse::runtime::Error;
use eventpulse::scaffold::{self, Kind};
use eventpulse_tests::{Host, alert_event, post_webhook, python_component, workspace};

const SETTLE: std::time::Duration = std::time::Duration::from_secs(60);

fn shipped_manifest(dir: &str) -> String {
    std::fs::read_to_string(workspace().join(dir).join("plugin.toml")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_rules_load_beside_rust_ones_and_drive_the_pipeline() {
    let host = Host::start().await;
    // A Python rule as `eventpulse plugin new --lang python` writes it,
    // built as `eventpulse plugin build` builds it.
    let scratch = tempfile::tempdir().unwrap();
    let made = scaffold::new_python_plugin(scratch.path(), "py-hello", Kind::Rule).unwrap();
    for f in [
        "app.py",
        "pyproject.toml",
        "plugin.toml",
        "eventpulse_plugin.py",
        "wit/worlds.wit",
    ] {
        assert!(made.join(f).is_file(), "{f} scaffolded");
    }
    let wasm = scaffold::build(
        std::slice::from_ref(&made),
        &scratch.path().join("out"),
        None,
    )
    .unwrap()
    .pop()
    .unwrap();
    host.install_file(
        "py-hello",
        &wasm,
        &std::fs::read_to_string(made.join("plugin.toml")).unwrap(),
    );
    // The first-party Python rule, and a Rust notifier beside them.
    host.install_file(
        "rule-disk-full",
        &python_component("plugins/python/rule-disk-full"),
        &shipped_manifest("plugins/python/rule-disk-full"),
    );
    host.install_now("notifier-log", "notifier-log", "").await;
    for name in ["py-hello", "rule-disk-full", "notifier-log"] {
        let status = host.registry.status(name).expect("installed");
        assert!(
            status.loaded && status.error.is_none(),
            "{name}: {:?}",
            status.error
        );
    }

    let mut alert = sample(
        "DiskFull",
        &[("service", "db"), ("instance", "db-1:9100")],
        false,
        "2026-12-01T10:00:00Z",
        "",
    );
    alert["alerts"][0]["annotations"] =
        serde_json::json!({"summary": "/var on db-1 is almost full", "free_percent": "3"});
    let (status, body) = post_webhook(&host.url, &alert).await;
    assert_eq!(status, 200, "{body}");
    let d = host
        .newest_incident("the Python rule's incident, notified", SETTLE, |d| {
            // The timeline's notification entry is written by the incident
            // stage after the delivery: wait for both (the detail is read
            // in separate statements).
            d.notifications.iter().any(|n| n.status == "delivered")
                && d.timeline.iter().any(|e| e.kind == "notification")
        })
        .await;
    assert_eq!(d.incident.title, "Disk full on db");
    assert_eq!(
        d.incident.severity.as_str(),
        "critical",
        "3% free is below 5%"
    );
    let kinds: Vec<&str> = d.timeline.iter().map(|e| e.kind.as_str()).collect();
    assert!(
        kinds.contains(&"opened") && kinds.contains(&"notification"),
        "{kinds:?}"
    );
    assert!(
        d.timeline
            .iter()
            .any(|e| e.cause.contains("rule-disk-full")),
        "the timeline names the Python rule: {:?}",
        d.timeline
    );

    // The resolved alert resolves the incident, through the same rule.
    let resolved = sample(
        "DiskFull",
        &[("service", "db"), ("instance", "db-1:9100")],
        true,
        "2026-12-01T10:00:00Z",
        "2026-12-01T10:20:00Z",
    );
    post_webhook(&host.url, &resolved).await;
    host.newest_incident("resolved by the Python rule", SETTLE, |d| {
        d.incident.status.as_str() == "resolved"
    })
    .await;

    // The scaffolded rule answers a dry run as generated.
    let event = alert_event("Demo", AlertStatus::Firing, &[("service", "app")]);
    let decision = host.registry.dry_run("py-hello", &event).await.unwrap();
    assert_eq!(decision.note.as_deref(), Some("Demo seen by py-hello"));
    host.stop().await;
}

async fn decide(host: &Host, name: &str) -> Result<(), Error> {
    let event = alert_event("HighCPU", AlertStatus::Firing, &[("service", "app")]);
    match host.registry.decide(name, &event).await {
        Ok(_) => Ok(()),
        Err(registry::Error::Plugin(e)) => Err(e),
        Err(other) => panic!("unexpected registry error: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_python_is_contained_with_the_same_typed_errors() {
    let host = Host::start().await;
    let wasm = python_component("tests/python/rule-py-hostile");
    let manifest = |mode: &str, limits: &str| {
        format!("[limits]\nmemory_mb = 64\n{limits}\n\n[config]\nmode = \"{mode}\"\n")
    };
    host.install_file("py-ok", &wasm, &manifest("ok", ""));
    let cases: [(&str, &str, &str, fn(&Error) -> bool); 4] = [
        (
            "py-spin-fuel",
            "loop",
            "fuel = 20_000_000\ntimeout_ms = 30_000",
            |e| matches!(e, Error::OutOfFuel(20_000_000)),
        ),
        (
            "py-spin-time",
            "loop",
            "fuel = 1_000_000_000_000_000\ntimeout_ms = 300",
            |e| matches!(e, Error::Timeout(300)),
        ),
        (
            "py-grow",
            "grow",
            "fuel = 1_000_000_000_000_000\ntimeout_ms = 30_000",
            |e| matches!(e, Error::Memory(64)),
        ),
        (
            "py-http",
            "http",
            "",
            |e| matches!(e, Error::Denied(c) if c == "http"),
        ),
    ];
    for (name, mode, limits, _) in &cases {
        host.install_file(name, &wasm, &manifest(mode, limits));
    }
    host.registry.reload().await.unwrap();
    decide(&host, "py-ok")
        .await
        .expect("the healthy Python rule");
    for (name, mode, _, expected) in &cases {
        let err = decide(&host, name)
            .await
            .expect_err("hostile call must fail");
        assert!(expected(&err), "{mode}: unexpected error {err:?}");
        // The host keeps serving: the healthy plugin answers right after.
        decide(&host, "py-ok")
            .await
            .unwrap_or_else(|e| panic!("healthy Python rule after {mode}: {e}"));
    }
    host.stop().await;
}

/// `cx.http` from Python: a granted POST goes out through wasi:http (here
/// to `plugin run`'s recording stub, which answers `{"ok":true}`), body
/// and all; the rule reads the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_http_goes_through_wasi_http() {
    let scratch = tempfile::tempdir().unwrap();
    let manifest = scratch.path().join("post.toml");
    std::fs::write(
        &manifest,
        "[limits]\nmemory_mb = 64\n\n[grants]\nhttp = { allow = [\"https://hooks.example.com\"] }\n\n\
         [config]\nmode = \"post\"\nurl = \"https://hooks.example.com/eventpulse\"\n",
    )
    .unwrap();
    let event = alert_event("DiskFull", AlertStatus::Firing, &[("service", "db")]);
    let report = eventpulse::plugin_run::run(eventpulse::plugin_run::Input {
        wasm: python_component("tests/python/rule-py-hostile"),
        manifest: Some(manifest),
        config: Vec::new(),
        state: None,
        event: serde_json::to_value(&event).unwrap(),
        request: None,
        cache_dir: workspace().join("target/plugins/test-cache"),
    })
    .await
    .unwrap();
    assert!(report.failed.is_none(), "{:?}", report.failed);
    assert_eq!(
        report.returned.unwrap()["note"],
        "posted, answer {'ok': True}"
    );
    assert_eq!(report.calls.len(), 1, "{:?}", report.calls);
    let call = &report.calls[0];
    assert_eq!(
        (call.capability.as_str(), call.operation.as_str()),
        ("http", "POST")
    );
    assert_eq!(call.args["uri"], "https://hooks.example.com/eventpulse");
    assert_eq!(call.args["body"]["alert"], "DiskFull");
}
