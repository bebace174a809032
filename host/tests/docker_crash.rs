//! A crash in the middle of a scale-out on the real Docker Engine: a real
//! `eventpulse serve` is `kill -9`ed after `action-docker-scale` has
//! created the first of two new replicas and before the action finished.
//! After a restart the same action (same `action_id`) runs again and the
//! service converges to exactly 3 running, healthy containers: no
//! duplicate replicas, no leftovers in any state. Counts come from the
//! Engine (`docker ps`), not from the plugin.

mod common;

use common::{build_pipeline, start, workspace, write_config};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Removes the service's containers however the test ends.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let ids = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=service={}", self.0),
        ]);
        for id in ids.split_whitespace() {
            docker(&["rm", "-f", id]);
        }
    }
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `(state, health)` of every container of `service`, any state.
fn containers(service: &str) -> Vec<String> {
    docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=service={service}"),
        "--format",
        "{{.State}} {{.Status}}",
    ])
    .lines()
    .map(str::to_owned)
    .collect()
}

fn wait(what: &str, root: &Path, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "timed out waiting for {what}; log:\n{}",
            std::fs::read_to_string(root.join("serve.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn kill_9_while_scaling_converges_to_exactly_n_after_restart() {
    let out = Command::new("bash")
        .arg(workspace().join("compose/build-images.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let service = format!("crash-{}", std::process::id());
    let _cleanup = Cleanup(service.clone());
    docker(&[
        "run",
        "-d",
        "--name",
        &format!("{service}-0"),
        "-l",
        &format!("service={service}"),
        "eventpulse-demo-app:latest",
    ]);

    build_pipeline(
        root,
        "action-docker-scale",
        "cooldown_secs = \"0\"\nmax_replicas = \"3\"\n",
    );
    std::fs::write(
        root.join("dist/action-docker-scale.toml"),
        format!("[limits]\ntimeout_ms = 28000\nfuel = 200_000_000\n\n[grants.docker]\nselector = {{ service = \"{service}\" }}\nimages = [\"eventpulse-demo-app:*\"]\n\n[config]\nready_timeout_ms = \"20000\"\n"),
    )
    .unwrap();
    let port = write_config(root, "");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let up = |client: &reqwest::blocking::Client| {
        client
            .get(format!("{base}/healthz"))
            .send()
            .is_ok_and(|r| r.status().is_success())
    };
    wait("the first container healthy", root, || {
        containers(&service).iter().any(|c| c.contains("(healthy)"))
    });

    let mut serve = start(root, "info");
    wait("host up", root, || up(&client));
    let alert = eventpulse::ingest::alertmanager::sample(
        "HighCPU",
        &[("service", &service), ("severity", "critical")],
        false,
        "2026-11-24T10:00:00Z",
        "",
    );
    let r = client
        .post(format!("{base}/api/v1/alerts/alertmanager"))
        .json(&alert)
        .send()
        .unwrap();
    assert!(r.status().is_success());

    // Kill as soon as the first new replica exists: mid-way through.
    wait("the first replica created", root, || {
        containers(&service).len() >= 2
    });
    serve.0.kill().unwrap(); // SIGKILL
    serve.0.wait().unwrap();
    let at_kill = containers(&service);
    eprintln!("at the kill: {at_kill:?}");

    let action = |client: &reqwest::blocking::Client| -> Option<serde_json::Value> {
        let list: serde_json::Value = client
            .get(format!("{base}/api/v1/incidents"))
            .bearer_auth("t")
            .send()
            .ok()?
            .json()
            .ok()?;
        let id = list["incidents"][0]["id"].as_str()?.to_owned();
        let d: serde_json::Value = client
            .get(format!("{base}/api/v1/incidents/{id}"))
            .bearer_auth("t")
            .send()
            .ok()?
            .json()
            .ok()?;
        d["incident"]["actions"].get(0).cloned()
    };
    let _serve = start(root, "info");
    wait("host up again", root, || up(&client));
    let mut last = None;
    wait("the interrupted action completed", root, || {
        last = action(&client);
        last.as_ref().is_some_and(|a| a["status"] == "completed")
    });
    let a = last.unwrap();
    assert!(
        a["attempts"].as_i64().unwrap() >= 2,
        "ran again after the kill: {a}"
    );
    let after = containers(&service);
    eprintln!("after the restart: {after:?}");
    assert_eq!(
        after.len(),
        3,
        "exactly 3 containers in any state: {after:?}"
    );
    assert!(
        after
            .iter()
            .all(|c| c.starts_with("running") && c.contains("(healthy)")),
        "{after:?}"
    );
}
