//! The compose demo (seed 000), whole, on the real Docker Engine:
//! `compose/build-stack.sh` builds its images offline (this very binary,
//! Debian's Prometheus, Alertmanager and HAProxy, the demo service),
//! `docker-compose --profile offline up` starts `compose/docker-compose.yml`,
//! and the load generator container's requests through the load balancer
//! must carry it through Prometheus → HighCPU → Alertmanager → EventPulse →
//! a second healthy replica → incident resolved and notified; the load
//! balancer finds the replica by the service's network alias and sends it
//! at least 30 % of the requests, and per-replica CPU drops; once the load
//! stops, LowCPU brings the service back to one replica.

use std::process::Command;
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

    /// `http://127.0.0.1:PORT` of `service`'s `port`.
    fn url(&self, service: &str, port: u16) -> String {
        format!(
            "http://{}",
            self.compose(&["port", service, &port.to_string()]).trim()
        )
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
            .args(["--profile", "offline", "--profile", "load"])
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
    stack.compose(&["--profile", "offline", "up", "-d"]);
    let (prometheus, eventpulse) = (stack.url("prometheus", 9090), stack.url("eventpulse", 8080));

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
    // One value per replica (by instance) of a PromQL expression.
    let per_replica = |expr: &str| -> Vec<f64> {
        let answer: serde_json::Value = http
            .get(format!("{prometheus}/api/v1/query"))
            .query(&[("query", expr)])
            .send()
            .unwrap()
            .json()
            .unwrap();
        answer["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["value"][1].as_str()?.parse().ok())
            .collect()
    };
    const CPU: &str = "rate(demo_app_cpu_seconds_total[10s])";
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

    // The load generator container: 4 clients through the load balancer.
    stack.compose(&[
        "--profile",
        "offline",
        "--profile",
        "load",
        "up",
        "-d",
        "load",
    ]);
    // The one replica's CPU under load, up to the moment a second is healthy.
    let mut before = 0.0;
    wait_until("a second healthy replica", Duration::from_secs(120), || {
        if stack.healthy_replicas() >= 2 {
            return Some(());
        }
        if let [one] = per_replica(CPU)[..] {
            before = one;
        }
        None
    });
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

    // The load balancer found the new replica by its alias: both share the
    // requests, and each now burns less CPU than the one did alone.
    std::thread::sleep(Duration::from_secs(20));
    let after = per_replica(CPU);
    let shares = per_replica(
        "increase(demo_app_requests_total[15s]) / scalar(sum(increase(demo_app_requests_total[15s])))",
    );
    println!(
        "CPU of the one replica under load: {before:.2} cores; of each after the scale-out: {after:.2?}"
    );
    println!("share of the requests per replica over 15 s: {shares:.2?}");
    assert_eq!(shares.len(), 2, "{shares:?}");
    assert!(
        shares.iter().all(|s| *s >= 0.30),
        "each replica serves at least 30 %: {shares:?}"
    );
    assert!(before > 0.5, "the one replica was busy: {before}");
    assert!(
        after.len() == 2 && after.iter().all(|c| *c < before),
        "per-replica CPU dropped from {before}: {after:?}"
    );

    // Load gone → LowCPU → back to one replica (HighCPU resolving keeps the
    // capacity: relative scaling is a ratchet).
    stack.compose(&["--profile", "load", "stop", "load"]);
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
    let actions = api("/actions");
    let summaries: Vec<&str> = actions["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["result"].as_str())
        .collect();
    assert!(
        summaries
            .iter()
            .any(|r| r.contains("\"previous\":2") && r.contains("\"replicas\":1")),
        "{actions}"
    );
    let alerts = api("/alerts?name=LowCPU");
    assert!(
        alerts.to_string().contains("LowCPU"),
        "the scale-in came from LowCPU: {alerts}"
    );
}
