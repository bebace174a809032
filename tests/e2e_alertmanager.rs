//! End to end with the real thing: Prometheus (Debian's 2.42) scrapes a
//! metric this test serves, evaluates a `HighCPU` alerting rule and sends
//! to Alertmanager (Debian's 0.25), whose webhook receiver is the host's
//! ingest. The cpu-autoscale rule opens an incident and asks for a scale
//! out (action-noop), the notification goes out (notifier-log), and when
//! the metric drops the resolved notification resolves the incident.
//! Everything listens on 127.0.0.1; `.ci/run` installs both binaries.
//! The [`observability`] module has Prometheus scrape the host itself.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use eventpulse::store::IncidentDetail;
use eventpulse_tests::{Backend, Host, wait_for};

mod observability;

/// A child process killed when the test ends, however it ends.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Two distinct free ports: both listeners are held until both are known,
/// so the kernel cannot hand out the same port twice.
fn free_ports() -> (u16, u16) {
    let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

fn spawn(bin: &'static str, args: &[String], log: &std::path::Path) -> Daemon {
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("{bin} is required (.ci/run installs it): {e}"));
    Daemon(child)
}

/// Prometheus on 127.0.0.1:`port` with `dir/prometheus.yml`, its data and
/// log (`prometheus.log`) in `dir`; alerts are re-sent every second.
fn prometheus(dir: &std::path::Path, port: u16) -> Daemon {
    spawn(
        "prometheus",
        &[
            format!("--config.file={}", dir.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", dir.join("prom-data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--rules.alert.resend-delay=1s".into(),
        ],
        &dir.join("prometheus.log"),
    )
}

/// Serve `cpu_usage{service="app"}` with a value the test sets (per mille).
async fn metrics_server(value: Arc<AtomicU64>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let v = value.load(Ordering::SeqCst) as f64 / 1000.0;
            async move {
                format!(
                    "# HELP cpu_usage CPU usage ratio.\n# TYPE cpu_usage gauge\ncpu_usage{{service=\"app\"}} {v}\n"
                )
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

/// Alertmanager (webhook receiver: `host`'s ingest, resolved alerts sent)
/// and Prometheus (scraping the test's metrics on `metrics_port`,
/// evaluating `rules`, every second), both on free ports of 127.0.0.1.
struct AlertStack {
    _alertmanager: Daemon,
    _prometheus: Daemon,
}

impl AlertStack {
    fn start(host: &Host, metrics_port: u16, rules: &str) -> AlertStack {
        let dir = host.dir.path();
        let (am_port, prom_port) = free_ports();
        std::fs::write(
            dir.join("alertmanager.yml"),
            format!(
                r#"route:
  receiver: eventpulse
  group_by: [alertname, service]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: eventpulse
    webhook_configs:
      - url: {}/api/v1/alerts/alertmanager
        send_resolved: true
"#,
                host.url
            ),
        )
        .unwrap();
        let alertmanager = spawn(
            "prometheus-alertmanager",
            &[
                format!("--config.file={}", dir.join("alertmanager.yml").display()),
                format!("--storage.path={}", dir.join("am-data").display()),
                format!("--web.listen-address=127.0.0.1:{am_port}"),
                "--cluster.listen-address=".into(),
            ],
            &dir.join("alertmanager.log"),
        );
        std::fs::write(dir.join("rules.yml"), rules).unwrap();
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                r#"global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [{rules}]
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["127.0.0.1:{am_port}"]
scrape_configs:
  - job_name: app
    static_configs:
      - targets: ["127.0.0.1:{metrics_port}"]
"#,
                rules = dir.join("rules.yml").display()
            ),
        )
        .unwrap();
        let prometheus = prometheus(dir, prom_port);
        AlertStack {
            _alertmanager: alertmanager,
            _prometheus: prometheus,
        }
    }

    /// Both daemons' logs, for a failure message.
    fn logs(&self, dir: &std::path::Path) -> String {
        format!(
            "\n--- alertmanager:\n{}\n--- prometheus:\n{}",
            std::fs::read_to_string(dir.join("alertmanager.log")).unwrap_or_default(),
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        )
    }
}

async fn prometheus_to_incident(backend: Backend) {
    let host = Host::start_on(backend).await;
    host.install_first_party(
        "resolve_on = \"alert\"
",
    )
    .await;

    let cpu = Arc::new(AtomicU64::new(970));
    let metrics = metrics_server(cpu.clone()).await;
    let stack = AlertStack::start(
        &host,
        metrics,
        r#"groups:
  - name: cpu
    rules:
      - alert: HighCPU
        expr: cpu_usage > 0.9
        labels:
          severity: critical
        annotations:
          summary: "CPU of {{ $labels.service }} is {{ $value }}"
"#,
    );
    let dir = host.dir.path();
    let incident = |want: &'static str| {
        let store = host.store.clone();
        move || {
            let store = store.clone();
            async move {
                let list = store.incidents(5).await.unwrap();
                let d: IncidentDetail = store.incident_detail(&list.first()?.id).await.unwrap()?;
                let actions_done =
                    !d.actions.is_empty() && d.actions.iter().all(|a| a.status == "completed");
                (d.incident.status == want && actions_done).then_some(d)
            }
        }
    };
    let logs = || stack.logs(dir);

    // Firing: Prometheus → Alertmanager → webhook → incident, mitigating,
    // scale-out completed, notification delivered.
    let d = tokio::time::timeout(
        Duration::from_secs(60),
        wait_for(
            "incident mitigating",
            Duration::from_secs(60),
            incident("mitigating"),
        ),
    )
    .await
    .unwrap_or_else(|_| panic!("no incident within 60 s{}", logs()));
    assert_eq!(d.incident.title, "High CPU on app");
    assert_eq!(d.incident.severity, "critical");
    assert!(
        d.actions[0]
            .result
            .as_deref()
            .unwrap()
            .contains("\"replicas\":2")
    );
    let summary = host
        .store
        .alert_state_by_name("HighCPU")
        .await
        .unwrap()
        .expect("the alert is stored");
    assert_eq!(summary, "firing");

    // The metric drops: the resolved notification resolves the incident.
    cpu.store(100, Ordering::SeqCst);
    let d = wait_for(
        "incident resolved",
        Duration::from_secs(60),
        incident("resolved"),
    )
    .await;
    let causes: Vec<&str> = d.timeline.iter().map(|e| e.cause.as_str()).collect();
    assert!(
        causes.iter().any(|c| c.contains("HighCPU resolved")),
        "{causes:?}"
    );
    assert_eq!(
        d.alerts.len(),
        1,
        "one alert instance, firing then resolved"
    );
    assert_eq!(
        host.store
            .alert_state_by_name("HighCPU")
            .await
            .unwrap()
            .as_deref(),
        Some("resolved")
    );
    // Exactly one incident, one scale-out (the scale-in is held back by the
    // cooldown), one notification.
    let c = host.store.counts().await.unwrap();
    assert_eq!(
        (c.incidents, c.actions, c.notifications),
        (1, 1, 1),
        "{c:?}"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_alertmanager_to_resolved_incident_on_sqlite() {
    prometheus_to_incident(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_alertmanager_to_resolved_incident_on_postgres() {
    prometheus_to_incident(Backend::Postgres).await;
}

/// Serve the unlabelled gauges in `values` (name → value) for Prometheus.
async fn gauges_server(values: Arc<std::sync::Mutex<Vec<(&'static str, f64)>>>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let text: String = values
                .lock()
                .unwrap()
                .iter()
                .map(|(name, v)| format!("# TYPE {name} gauge\n{name}{{service=\"shop\"}} {v}\n"))
                .collect();
            async move { text }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

/// Day one, with only the shipped defaults: real Prometheus fires three
/// unrelated alerts (none named HighCPU or LowCPU, one of them seed 001's
/// `cpu_high`) through real Alertmanager. `rule-alert-route`, installed
/// with its manifest as shipped, makes each an incident with a delivered
/// notification (notifier-log), and resolves each when its alert resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_defaults_turn_any_alert_into_an_incident_and_resolve_it() {
    let host = Host::start_on(Backend::Sqlite).await;
    let root = eventpulse_tests::workspace().join("plugins");
    let manifest =
        |name: &str| std::fs::read_to_string(root.join(name).join("plugin.toml")).unwrap();
    host.install(
        "rule-alert-route",
        "rule-alert-route",
        &manifest("rule-alert-route"),
    );
    host.install_now("notifier-log", "notifier-log", &manifest("notifier-log"))
        .await;

    let values = Arc::new(std::sync::Mutex::new(vec![
        ("disk_used_ratio", 0.97),
        ("queue_depth", 500.0),
        ("cpu_usage", 0.95),
    ]));
    let port = gauges_server(values.clone()).await;
    let stack = AlertStack::start(
        &host,
        port,
        r#"groups:
  - name: shop
    rules:
      - alert: DiskAlmostFull
        expr: disk_used_ratio > 0.9
        labels: { severity: critical }
        annotations: { summary: "disk of {{ $labels.service }} at {{ $value }}" }
      - alert: QueueBacklog
        expr: queue_depth > 100
        labels: { severity: warning }
      - alert: cpu_high
        expr: cpu_usage > 0.9
"#,
    );
    let dir = host.dir.path();
    let names = ["DiskAlmostFull", "QueueBacklog", "cpu_high"];
    // Incidents in `status` with their notifications so far delivered: one
    // when open, two (firing and resolved) once resolved. (The resolution
    // and its notification request commit together; the notification's job
    // comes a stage later.)
    let incidents = |status: &'static str| {
        let store = host.store.clone();
        let want = if status == "resolved" { 2 } else { 1 };
        move || {
            let store = store.clone();
            async move {
                let list = store.incidents(10).await.unwrap();
                let mut done = Vec::new();
                for i in list.iter().filter(|i| i.status == status) {
                    let d = store.incident_detail(&i.id).await.unwrap()?;
                    let delivered = d.notifications.iter().filter(|n| n.status == "delivered");
                    if delivered.count() >= want {
                        done.push(d);
                    }
                }
                (done.len() == 3).then_some(done)
            }
        }
    };
    let open = tokio::time::timeout(
        Duration::from_secs(90),
        wait_for(
            "three incidents notified",
            Duration::from_secs(90),
            incidents("open"),
        ),
    )
    .await
    .unwrap_or_else(|_| panic!("no three incidents{}", stack.logs(dir)));
    let mut titles: Vec<String> = open.iter().map(|d| d.incident.title.clone()).collect();
    titles.sort();
    assert_eq!(
        titles,
        names.map(|n| format!("{n} on shop")).to_vec(),
        "one incident per alert, titled from its labels"
    );
    let disk = open
        .iter()
        .find(|d| d.incident.title.starts_with("DiskAlmostFull"))
        .unwrap();
    assert_eq!(disk.incident.severity, "critical");
    assert_eq!(disk.incident.summary, "disk of shop at 0.97");

    // The metrics recover: each resolved notification resolves its incident.
    for (_, v) in values.lock().unwrap().iter_mut() {
        *v = 0.0;
    }
    let resolved = tokio::time::timeout(
        Duration::from_secs(90),
        wait_for(
            "three incidents resolved",
            Duration::from_secs(90),
            incidents("resolved"),
        ),
    )
    .await
    .unwrap_or_else(|_| panic!("not all resolved{}", stack.logs(dir)));
    for d in &resolved {
        let causes: Vec<&str> = d.timeline.iter().map(|e| e.cause.as_str()).collect();
        assert!(causes.iter().any(|c| c.contains("resolved")), "{causes:?}");
        assert!(
            d.notifications.iter().any(|n| n.status == "delivered") && d.notifications.len() == 2,
            "firing and resolved notifications: {:?}",
            d.notifications
        );
    }
    let c = host.store.counts().await.unwrap();
    assert_eq!((c.incidents, c.actions, c.dead_letters), (3, 0, 0), "{c:?}");
    host.stop().await;
}
