//! The compose demo, whole, on the real Docker Engine: `compose/build-stack.sh`
//! builds its images offline (this very binary, Debian's Prometheus and
//! Alertmanager, the demo service), `docker-compose up` starts
//! `compose/docker-compose.yml`, and load on the demo service must carry it
//! through Prometheus → HighCPU → Alertmanager → EventPulse → a second
//! healthy replica → incident resolved and notified, then back to one
//! replica once the load stops and the alert resolves.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[allow(dead_code)] // shared with the other binaries' tests
mod common;

/// A compose project, taken down (with every container carrying its label,
/// replicas included) when dropped.
struct Stack {
    project: String,
    file: String,
}

impl Stack {
    fn compose(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("docker-compose");
        cmd.args(["-p", &self.project, "-f", &self.file]).args(args);
        stdout(cmd)
    }

    /// `http://127.0.0.1:PORT` of `service`'s port 8080.
    fn url(&self, service: &str) -> String {
        format!("http://{}", self.compose(&["port", service, "8080"]).trim())
    }

    /// Healthy containers of the demo service (replicas carry its labels).
    fn healthy_replicas(&self) -> usize {
        docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.project),
            "--filter",
            "label=service=app",
            "--filter",
            "health=healthy",
        ])
        .lines()
        .count()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = Command::new("docker-compose")
            .args(["-p", &self.project, "-f", &self.file])
            .args(["down", "-v", "--remove-orphans", "-t", "1"])
            .output();
        let left = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.project),
        ]);
        for id in left.lines() {
            let _ = Command::new("docker").args(["rm", "-f", id]).output();
        }
    }
}

fn docker(args: &[&str]) -> String {
    let mut cmd = Command::new("docker");
    cmd.args(args);
    stdout(cmd)
}

/// What `cmd` printed; it must succeed.
fn stdout(mut cmd: Command) -> String {
    let out = cmd.output().expect("running a command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn wait_until<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn load_scales_the_demo_service_out_and_back_through_the_whole_stack() {
    let root = common::workspace();
    let built = Command::new("bash")
        .arg(root.join("compose/build-stack.sh"))
        .env("DEMO_EVENTPULSE_BIN", env!("CARGO_BIN_EXE_eventpulse"))
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "build-stack.sh: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let stack = Stack {
        project: format!("ep-demo-test-{}", std::process::id()),
        file: root
            .join("compose/docker-compose.yml")
            .display()
            .to_string(),
    };
    stack.compose(&["up", "-d"]);
    let (app, eventpulse) = (stack.url("app"), stack.url("eventpulse"));

    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    wait_until("EventPulse up", Duration::from_secs(60), || {
        http.get(format!("{eventpulse}/healthz"))
            .send()
            .ok()
            .filter(|r| r.status().is_success())
    });
    let dir = tempfile::tempdir().unwrap();
    let container = stack.compose(&["ps", "-q", "eventpulse"]);
    docker(&[
        "cp",
        &format!("{}:/data/admin.token", container.trim()),
        &dir.path().display().to_string(),
    ]);
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let api = |path: &str| -> serde_json::Value {
        http.get(format!("{eventpulse}/api/v1{path}"))
            .bearer_auth(token.trim())
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let plugins = api("/plugins");
    assert_eq!(
        plugins["plugins"].as_array().map(Vec::len),
        Some(3),
        "{plugins}"
    );
    assert_eq!(stack.healthy_replicas(), 1);

    // Four clients keep the demo service busy until told to stop.
    let busy = Arc::new(AtomicBool::new(true));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (busy, url, http) = (busy.clone(), format!("{app}/work?ms=200"), http.clone());
            std::thread::spawn(move || {
                while busy.load(Ordering::Relaxed) {
                    let _ = http.get(&url).send();
                }
            })
        })
        .collect();
    let incident = wait_until(
        "an incident resolved by a second replica",
        Duration::from_secs(120),
        || {
            let list = api("/incidents");
            let first = list["incidents"].as_array()?.first()?.clone();
            (first["status"] == "resolved").then_some(first)
        },
    );
    assert_eq!(stack.healthy_replicas(), 2);
    assert_eq!(
        (&incident["title"], &incident["dedup_key"]),
        (&"High CPU on app".into(), &"cpu:app".into())
    );
    let detail = api(&format!("/incidents/{}", incident["id"].as_str().unwrap()));
    let scaled_out: serde_json::Value =
        serde_json::from_str(detail["incident"]["actions"][0]["result"].as_str().unwrap()).unwrap();
    assert_eq!(scaled_out["details"]["replicas"], 2, "{scaled_out}");
    assert_eq!(
        detail["incident"]["notifications"][0]["status"], "delivered",
        "{detail}"
    );

    // Load gone → the alert resolves → back to one replica. The load stays
    // past the rule's 10 s cooldown (compose/plugins/rule-cpu-autoscale.toml):
    // a scale-in inside it is held back.
    std::thread::sleep(Duration::from_secs(12));
    busy.store(false, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    wait_until("back to one replica", Duration::from_secs(120), || {
        (stack.healthy_replicas() == 1
            && docker(&[
                "ps",
                "-aq",
                "--filter",
                &format!("label=com.docker.compose.project={}", stack.project),
                "--filter",
                "label=eventpulse.replica-of",
            ])
            .is_empty())
        .then_some(())
    });
    let detail = api(&format!("/incidents/{}", incident["id"].as_str().unwrap()));
    let actions = detail["incident"]["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 2, "{detail}");
    assert!(
        actions[1]["result"]
            .as_str()
            .unwrap()
            .contains("\"replicas\":1"),
        "{detail}"
    );
}
