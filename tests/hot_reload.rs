//! The plugin directory is the registry: files added, replaced or deleted
//! take effect through the watcher, without a restart; in-flight calls
//! never fail; bad files are refused with a reason naming them while the
//! rest keep working.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use eventpulse::model::AlertStatus;
use eventpulse::runtime::Error;
use eventpulse_tests::{Host, alert_event, eventually, hostile_manifest};

const WAIT: Duration = Duration::from_secs(20);
const CPU: &str = "[limits]\ntimeout_ms = 2_000\n\n[config]\ncooldown_secs = \"0\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_plugin_under_load_switches_versions_without_failed_calls() {
    let host = Host::start().await;
    host.install_now("live", "rule-cpu-autoscale", CPU).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (calls, failures, v2) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (registry, stop) = (host.registry.clone(), stop.clone());
        let (calls, failures, v2) = (calls.clone(), failures.clone(), v2.clone());
        workers.push(tokio::spawn(async move {
            let event = alert_event("HighCPU", AlertStatus::Firing, &[("service", "app")]);
            while !stop.load(Ordering::Relaxed) {
                match registry.decide("live", &event).await {
                    Ok(d) if d.note.as_deref() == Some("hostile: ok") => {
                        v2.fetch_add(1, Ordering::Relaxed)
                    }
                    Ok(_) => 0,
                    Err(e) => {
                        eprintln!("in-flight call failed: {e}");
                        failures.fetch_add(1, Ordering::Relaxed)
                    }
                };
                calls.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    eventually("calls on version 1", WAIT, || {
        calls.load(Ordering::Relaxed) > 20
    })
    .await;
    let before = calls.load(Ordering::Relaxed);

    // A different component under the same name, dropped in by file.
    host.install("live", "rule-hostile", &hostile_manifest("ok", ""));
    eventually("version 2 answering", WAIT, || {
        v2.load(Ordering::Relaxed) > 20
    })
    .await;

    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let total = calls.load(Ordering::Relaxed);
    eprintln!(
        "{total} calls ({before} before the swap), {} on version 2",
        v2.load(Ordering::Relaxed)
    );
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "no call failed during the swap"
    );
}

#[tokio::test]
async fn dropping_in_and_deleting_files_loads_and_unloads() {
    let host = Host::start().await;
    host.install("fresh", "rule-cpu-autoscale", CPU);
    eventually("new plugin loaded by the watcher", WAIT, || {
        host.registry.get("fresh").is_ok()
    })
    .await;

    std::fs::remove_file(host.plugin_dir.join("fresh.wasm")).unwrap();
    eventually("plugin unloaded", WAIT, || {
        matches!(host.registry.get("fresh"), Err(Error::NotFound(_)))
    })
    .await;
    let list = host.get_json("/api/v1/plugins").await;
    assert_eq!(list["plugins"].as_array().unwrap().len(), 0, "{list}");
}

#[tokio::test]
async fn corrupt_files_are_refused_and_the_rest_keep_working() {
    let host = Host::start().await;
    host.install_now("cpu", "rule-cpu-autoscale", CPU).await;
    let event = alert_event("HighCPU", AlertStatus::Firing, &[("service", "app")]);

    // A new corrupt plugin: refused, with the file and the reason.
    std::fs::write(
        host.plugin_dir.join("broken.wasm"),
        b"\0asm\x01\0\0\0garbage",
    )
    .unwrap();
    eventually("broken.wasm refused", WAIT, || {
        host.registry
            .status("broken")
            .is_some_and(|s| s.error.is_some())
    })
    .await;
    let status = host.registry.status("broken").unwrap();
    let error = status.error.unwrap();
    assert!(!status.loaded);
    assert!(error.contains("broken.wasm"), "names the file: {error}");
    host.registry
        .decide("cpu", &event)
        .await
        .expect("others keep working");

    // A corrupt replacement of a loaded plugin: refused, the old version serves on.
    std::fs::write(host.plugin_dir.join("cpu.wasm"), b"not wasm at all").unwrap();
    eventually("cpu.wasm replacement refused", WAIT, || {
        host.registry
            .status("cpu")
            .is_some_and(|s| s.error.is_some())
    })
    .await;
    let status = host.registry.status("cpu").unwrap();
    assert!(status.loaded, "previous version still loaded");
    host.registry
        .decide("cpu", &event)
        .await
        .expect("previous version keeps serving");
}

#[tokio::test]
async fn a_plugin_built_against_another_contract_version_is_refused() {
    let host = Host::start().await;
    host.install_now("future", "rule-future-contract", "").await;
    let status = host.registry.status("future").unwrap();
    assert!(!status.loaded);
    let error = status.error.unwrap();
    assert!(
        error.ends_with("future.wasm: built against eventpulse:plugin@0.2.0; this host speaks eventpulse:plugin@0.1.0"),
        "{error}"
    );
}

#[tokio::test]
async fn a_bad_manifest_is_refused_with_its_reason() {
    let host = Host::start().await;
    host.install_now("typo", "rule-cpu-autoscale", "[grants]\ndokcer = {}\n")
        .await;
    let error = host.registry.status("typo").unwrap().error.unwrap();
    assert!(
        error.contains("typo.toml") && error.contains("dokcer"),
        "{error}"
    );

    host.install_now(
        "nosecret",
        "rule-cpu-autoscale",
        "[secrets]\nhook = { env = \"EVENTPULSE_TEST_UNSET_VAR\" }\n",
    )
    .await;
    let error = host.registry.status("nosecret").unwrap().error.unwrap();
    assert!(
        error.contains("secret `hook`: environment variable EVENTPULSE_TEST_UNSET_VAR is not set"),
        "{error}"
    );
}
