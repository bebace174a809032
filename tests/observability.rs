//! Observing EventPulse itself (a module of the `e2e_alertmanager` test
//! binary, which already runs Prometheus): real Prometheus (Debian's 2.42)
//! scrapes the host's `/metrics` with the metrics token and evaluates the
//! shipped rules file (`monitoring/eventpulse-rules.yml`) unchanged;
//! `promtool check metrics` lints the exposition; `/readyz` follows the
//! store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use eventpulse::runtime::Clock;
use eventpulse_tests::{Host, post_webhook, scripted_alert, test_config, wait_for, workspace};

use super::{free_ports, prometheus};

const METRICS_TOKEN: &str = "metrics-only-token";

/// One sample of the exposition: name and labels → value.
type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

/// Parse the text exposition (label values here hold no `"` or `,`).
fn parse(text: &str) -> Samples {
    let mut out = Samples::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels close");
                let labels = body
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p.split_once("=\"").expect("label has a value");
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (name, labels)
            }
        };
        out.insert(
            (name.to_owned(), labels),
            value.parse().expect("value is a number"),
        );
    }
    out
}

/// The value of `name` at exactly `labels`, if exposed.
fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples.get(&(name.to_owned(), labels)).copied()
}

async fn scrape(host: &Host) -> Samples {
    let r = reqwest::Client::new()
        .get(format!("{}/metrics", host.url))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    parse(&r.text().await.unwrap())
}

/// A host on SQLite with the system clock, the metrics token, one rule
/// attempt per event (so a trap is counted once) and small ingest bodies.
async fn host() -> Host {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut config = test_config(dir.path());
    config.telemetry.metrics_token = Some(METRICS_TOKEN.to_owned().into());
    config.pipeline.rule_attempts = 1;
    config.pipeline.backoff_initial_ms = 20;
    config.pipeline.backoff_max_ms = 100;
    config.ingest.max_body_bytes = 16 << 10;
    std::fs::create_dir_all(&config.plugin_dir).unwrap();
    Host::start_with(config, dir, Clock::system()).await
}

/// Run `promtool` with `args`, `stdin` on its standard input, and assert
/// it succeeds.
fn promtool(args: &[&str], stdin: &str) {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is required (.ci/run installs prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sum of the instant vector `query` evaluates to in Prometheus at
/// `port` (`None` while it is empty).
async fn prom(port: u16, query: &str) -> Option<f64> {
    let body: serde_json::Value = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/api/v1/query"))
        .query(&[("query", query)])
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let result = body["data"]["result"].as_array()?;
    if result.is_empty() {
        return None;
    }
    Some(
        result
            .iter()
            .map(|r| r["value"][1].as_str().unwrap().parse::<f64>().unwrap())
            .sum(),
    )
}

/// A known sequence — three alerts, a duplicate, a rejected body, an
/// oversized body, a trapping rule, a notification suppressed by dedup, a
/// rate-limit refusal, a dead letter — and the exact counts, read through
/// Prometheus's query API after it scraped them. Then the trapped alert is
/// backdated an hour in the store (standing in for an hour of waiting) and
/// Prometheus, evaluating the shipped rules, fires the stuck-work alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_reads_exact_counts_and_fires_the_stuck_work_alert() {
    let host = host().await;
    host.install("rule-scripted", "rule-scripted", "");
    host.install(
        "action-noop",
        "action-noop",
        "[safety]\nmax_actions = 1\nwindow_secs = 3600\n",
    );
    host.install_now("notifier-log", "notifier-log", "").await;

    // Unauthorised scrapes are refused; the metrics token opens nothing else.
    let client = reqwest::Client::new();
    let r = client
        .get(format!("{}/metrics", host.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .get(format!("{}/api/v1/plugins", host.url))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = host.get("/metrics").send().await.unwrap();
    assert_eq!(r.status(), 200, "the admin token may scrape too");

    // 1. An alert: incident, action (completes), notification (sent).
    let first = scripted_alert("g1", &[]);
    assert_eq!(post_webhook(&host.url, &first).await.0, 200);
    host.newest_incident("first incident resolved", Duration::from_secs(20), |d| {
        d.incident.status == "resolved" && d.notifications.iter().any(|n| n.status == "delivered")
    })
    .await;
    // 2. The same delivery again: deduplicated.
    assert_eq!(post_webhook(&host.url, &first).await.0, 200);
    // 3. Another alert of the same group: its notification repeats the
    //    dedup key (suppressed) and its action the target (rate-limited).
    let mut second = scripted_alert("g1", &[]);
    second["alerts"][0]["fingerprint"] = "second".into();
    assert_eq!(post_webhook(&host.url, &second).await.0, 200);
    host.newest_incident("second incident failed", Duration::from_secs(20), |d| {
        d.incident.status == "failed"
    })
    .await;
    // 4. A rule that traps on every call: dead-lettered, unfinished.
    let trapping = scripted_alert("g3", &[("panic", "on purpose")]);
    assert_eq!(post_webhook(&host.url, &trapping).await.0, 200);
    wait_for(
        "the trap dead-lettered",
        Duration::from_secs(20),
        || async { (host.store.counts().await.unwrap().dead_letters == 1).then_some(()) },
    )
    .await;
    // 5. A body that is not a webhook, and one over ingest.max_body_bytes.
    let url = format!("{}/api/v1/alerts/alertmanager", host.url);
    let r = client
        .post(&url)
        .body("{\"not\": \"a webhook\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = client
        .post(&url)
        .body(vec![b' '; 20 << 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    // promtool lints the exposition as scraped.
    let text = host
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("eventpulse_scrape_errors_total"), "{text}");
    // The SQLite writer's occupancy: each committed write transaction held
    // the one write connection, counted by who held it (three accepted
    // alerts alone took three holds by ingest; the rule stage and the work
    // queues held it too), and commits took them in groups of one or more.
    let samples = parse(&text);
    let stat =
        |name: &str| value(&samples, name, &[]).unwrap_or_else(|| panic!("{name} in {text}"));
    let held_by = |holder: &str, what: &str| {
        let name = format!("eventpulse_sqlite_writer_hold_seconds_{what}");
        value(&samples, &name, &[("holder", holder)]).unwrap_or(0.0)
    };
    let holds: f64 = samples
        .iter()
        .filter(|((name, _), _)| name == "eventpulse_sqlite_writer_hold_seconds_count")
        .map(|(_, v)| v)
        .sum();
    let commits = stat("eventpulse_sqlite_writer_commit_seconds_count");
    assert!(
        held_by("ingest", "count") >= 3.0
            && held_by("rules", "count") >= 1.0
            && held_by("queue_intake", "count") >= 1.0
            && held_by("queue_record", "count") >= 1.0,
        "holds by holder in {text}"
    );
    assert!(
        commits >= 1.0 && holds >= commits,
        "{holds} holds, {commits} commits"
    );
    assert!(held_by("ingest", "sum") > 0.0 && held_by("rules", "sum") > 0.0);
    assert!(stat("eventpulse_sqlite_writer_commit_seconds_sum") > 0.0);
    // The default durability syncs the WAL after commits, one sync for
    // every group committed while the last one ran.
    let syncs = stat("eventpulse_sqlite_wal_sync_seconds_count");
    assert!(
        syncs >= 1.0 && syncs <= commits,
        "{syncs} WAL syncs, {commits} commits"
    );
    assert!(stat("eventpulse_sqlite_wal_sync_seconds_sum") > 0.0);
    promtool(&["check", "metrics"], &text);

    // Real Prometheus scrapes with the metrics token and evaluates the
    // shipped rules file as it is, which promtool accepts.
    let dir = host.dir.path();
    let (prom_port, _) = free_ports();
    let rules = workspace().join("monitoring/eventpulse-rules.yml");
    promtool(&["check", "rules", rules.to_str().unwrap()], "");
    // Its unit tests: alerts that need more history than this test has.
    let unit = workspace().join("monitoring/eventpulse-rules.test.yml");
    promtool(&["test", "rules", unit.to_str().unwrap()], "");
    let target = host.url.trim_start_matches("http://");
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            r#"global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [{rules}]
scrape_configs:
  - job_name: eventpulse
    authorization:
      credentials: {METRICS_TOKEN}
    static_configs:
      - targets: ["{target}"]
"#,
            rules = rules.display()
        ),
    )
    .unwrap();
    let _prom = prometheus(dir, prom_port);
    let log = || std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();

    let expected: &[(&str, f64)] = &[
        (
            r#"eventpulse_ingest_alerts_total{source="alertmanager",outcome="accepted"}"#,
            3.0,
        ),
        (
            r#"eventpulse_ingest_alerts_total{source="alertmanager",outcome="deduplicated"}"#,
            1.0,
        ),
        (
            r#"eventpulse_ingest_alerts_total{source="alertmanager",outcome="rejected"}"#,
            2.0,
        ),
        (
            r#"eventpulse_ingest_body_too_large_total{route="/api/v1/alerts/alertmanager"}"#,
            1.0,
        ),
        (
            r#"eventpulse_http_requests_total{route="/api/v1/alerts/alertmanager",status="200"}"#,
            4.0,
        ),
        (
            r#"eventpulse_http_requests_total{route="/api/v1/alerts/alertmanager",status="400"}"#,
            1.0,
        ),
        (
            r#"eventpulse_plugin_invocations_total{plugin="rule-scripted",operation="decide",outcome="trap"}"#,
            1.0,
        ),
        (
            r#"eventpulse_plugin_invocations_total{plugin="rule-scripted",operation="decide",outcome="ok"}"#,
            2.0,
        ),
        (
            r#"eventpulse_plugin_invocation_duration_seconds_count{plugin="rule-scripted",operation="decide"}"#,
            3.0,
        ),
        (
            r#"eventpulse_stage_events_total{stage="rules",kind="alert.raised"}"#,
            3.0,
        ),
        (
            r#"eventpulse_notifications_sent_total{notifier="notifier-log"}"#,
            1.0,
        ),
        (
            r#"eventpulse_notifications_suppressed_total{notifier="notifier-log"}"#,
            1.0,
        ),
        (
            r#"eventpulse_rate_limited_total{plugin="action-noop"}"#,
            1.0,
        ),
        (
            r#"eventpulse_job_attempts_total{queue="actions",plugin="action-noop",outcome="ok"}"#,
            1.0,
        ),
        (r#"eventpulse_dead_letters_total{stage="rules"}"#, 1.0),
        (r#"eventpulse_dead_letters_waiting{stage="rules"}"#, 1.0),
        (r#"eventpulse_dead_letters_waiting{stage="actions"}"#, 0.0),
        (r#"eventpulse_unfinished_alerts"#, 1.0),
        (
            r#"eventpulse_queue_jobs{queue="actions",status="pending"}"#,
            0.0,
        ),
        (r#"eventpulse_consumer_lag_events{consumer="rules"}"#, 0.0),
        (r#"eventpulse_plugins{state="loaded"}"#, 3.0),
        (r#"eventpulse_plugins{state="failed"}"#, 0.0),
    ];
    for &(query, want) in expected {
        prom_until(prom_port, query, &log, |v| v == Some(want)).await;
    }
    let stuck = r#"ALERTS{alertname="EventPulseAlertHandlingStuck",alertstate="firing"}"#;
    assert_eq!(prom(prom_port, stuck).await, None, "not stuck yet");
    // The dead-lettered alert waits for an operator; make it an hour old.
    backdate_dead_letters(&host, 3_600_000).await;
    prom_until(prom_port, stuck, &log, |v| v == Some(1.0)).await;
    let age = prom(prom_port, "eventpulse_oldest_unfinished_alert_seconds")
        .await
        .unwrap();
    assert!(age >= 3_600.0, "oldest unfinished age {age}");
    let dead = r#"ALERTS{alertname="EventPulseDeadLetters",alertstate="firing",stage="rules"}"#;
    prom_until(prom_port, dead, &log, |v| v == Some(1.0)).await;
    host.stop().await;
}

/// Query Prometheus until `ok` holds for the value (a minute at most:
/// a scrape and an evaluation every second).
async fn prom_until(
    port: u16,
    query: &str,
    log: &dyn Fn() -> String,
    ok: impl Fn(Option<f64>) -> bool,
) {
    let start = std::time::Instant::now();
    loop {
        let v = prom(port, query).await;
        if ok(v) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{query}: Prometheus has {v:?}\n--- prometheus:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn backdate_dead_letters(host: &Host, by_ms: i64) {
    use sqlx::Connection as _;
    let mut conn = sqlx::SqliteConnection::connect(host.database_url())
        .await
        .unwrap();
    sqlx::query("UPDATE dead_letters SET at = at - $1")
        .bind(by_ms)
        .execute(&mut conn)
        .await
        .unwrap();
}

/// A notifier held back (its HTTP endpoint does not answer until
/// released): the notification queue's depth and the unfinished-alert
/// count rise to the number of alerts waiting, and return to 0 once it
/// answers. The endpoint is a local server standing in for any webhook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_rises_while_a_notifier_is_held_back_and_drains() {
    let released = Arc::new(AtomicBool::new(false));
    let gate = released.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let gate = gate.clone();
            async move {
                while !gate.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                "ok"
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let host = host().await;
    host.install("rule-scripted", "rule-scripted", "");
    host.install("action-noop", "action-noop", "");
    host.install_now(
        "hook",
        "notifier-http-probe",
        &format!(
            "[limits]\ntimeout_ms = 20000\n\n[grants]\nhttp = {{ allow = [\"{addr}\"], timeout_ms = 20000 }}\n\n[config]\nurl = \"http://{addr}/hook\"\n"
        ),
    )
    .await;
    const ALERTS: usize = 5;
    for i in 0..ALERTS {
        let alert = scripted_alert(&format!("held-{i}"), &[("channel", "hook")]);
        assert_eq!(post_webhook(&host.url, &alert).await.0, 200);
    }
    let waiting = |s: &Samples| {
        let q = |status| {
            value(
                s,
                "eventpulse_queue_jobs",
                &[("queue", "notifications"), ("status", status)],
            )
        };
        q("pending").unwrap_or(0.0) + q("running").unwrap_or(0.0)
    };
    wait_for(
        "the notifications waiting",
        Duration::from_secs(20),
        || async {
            let s = scrape(&host).await;
            let unfinished = value(&s, "eventpulse_unfinished_alerts", &[]);
            (waiting(&s) == ALERTS as f64 && unfinished == Some(ALERTS as f64)).then_some(())
        },
    )
    .await;
    let s = scrape(&host).await;
    assert!(value(&s, "eventpulse_oldest_unfinished_alert_seconds", &[]).unwrap() > 0.0);

    released.store(true, Ordering::SeqCst);
    wait_for("the backlog drained", Duration::from_secs(30), || async {
        let s = scrape(&host).await;
        let unfinished = value(&s, "eventpulse_unfinished_alerts", &[]);
        let oldest = value(&s, "eventpulse_oldest_unfinished_alert_seconds", &[]);
        (waiting(&s) == 0.0 && unfinished == Some(0.0) && oldest == Some(0.0)).then_some(())
    })
    .await;
    let s = scrape(&host).await;
    assert_eq!(
        value(
            &s,
            "eventpulse_notifications_sent_total",
            &[("notifier", "hook")]
        ),
        Some(ALERTS as f64)
    );
    host.stop().await;
}

/// `/readyz` answers 503 naming the store while another process holds the
/// SQLite database locked, and 200 once it lets go; `/healthz` stays 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_a_locked_store() {
    use sqlx::Connection as _;
    let host = host().await;
    let ready = || async {
        let r = reqwest::get(format!("{}/readyz", host.url)).await.unwrap();
        (
            r.status().as_u16(),
            r.json::<serde_json::Value>().await.unwrap(),
        )
    };
    let (status, body) = ready().await;
    assert_eq!(
        (status, &body["ready"]),
        (200, &serde_json::json!(true)),
        "{body}"
    );

    let mut other = sqlx::SqliteConnection::connect(host.database_url())
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut other)
        .await
        .unwrap();
    let (status, body) = ready().await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["failing"][0].as_str().unwrap().starts_with("store"),
        "{body}"
    );
    let live = reqwest::get(format!("{}/healthz", host.url)).await.unwrap();
    assert_eq!(live.status(), 200);

    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    wait_for("ready again", Duration::from_secs(10), || async {
        (ready().await.0 == 200).then_some(())
    })
    .await;
    drop(other);
    host.stop().await;
}

/// A span as the stand-in collector received it.
#[derive(Debug, Clone)]
struct Received {
    trace: String,
    id: String,
    parent: String,
    name: String,
}

/// A local OTLP/HTTP receiver: decodes each `POST /v1/traces` with the
/// OpenTelemetry protobuf definitions, as a collector would (a stand-in
/// for one: no collector runs here). Returns its base URL and the spans.
async fn otlp_receiver() -> (String, Arc<std::sync::Mutex<Vec<Received>>>) {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message as _;
    let spans = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = spans.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                let mut seen = seen.lock().unwrap();
                for rs in request.resource_spans {
                    for ss in rs.scope_spans {
                        for s in ss.spans {
                            seen.push(Received {
                                trace: hex::encode(&s.trace_id),
                                id: hex::encode(&s.span_id),
                                parent: hex::encode(&s.parent_span_id),
                                name: s.name,
                            });
                        }
                    }
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, spans)
}

/// An alert posted with a W3C `traceparent` becomes one trace at the
/// OTLP receiver: ingest, the rule deciding, the action's attempt and
/// invocation, the notification's, and the rule hearing the outcome,
/// every span in the caller's trace and parented inside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_is_one_trace_from_its_traceparent_to_its_notification() {
    let (url, spans) = otlp_receiver().await;
    // The process's one subscriber (no other test of this binary sets one).
    static TELEMETRY: std::sync::OnceLock<eventpulse::telemetry::Guard> =
        std::sync::OnceLock::new();
    let config = eventpulse::config::TelemetryConfig {
        otlp_endpoint: Some(url),
        ..Default::default()
    };
    assert!(
        TELEMETRY
            .set(eventpulse::telemetry::init(&config).unwrap())
            .is_ok()
    );

    let host = host().await;
    host.install("rule-scripted", "rule-scripted", "");
    host.install("action-noop", "action-noop", "");
    host.install_now("notifier-log", "notifier-log", "").await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller = "00f067aa0ba902b7";
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/alerts/alertmanager", host.url))
        .header("traceparent", format!("00-{trace}-{caller}-01"))
        .json(&scripted_alert("traced", &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    host.newest_incident("incident resolved", Duration::from_secs(20), |d| {
        d.incident.status == "resolved" && d.notifications.iter().any(|n| n.status == "delivered")
    })
    .await;
    let incident = host.store.incidents(1).await.unwrap().remove(0);
    assert_eq!(
        incident.trace_id, trace,
        "the incident keeps the caller's trace"
    );

    let wanted = [
        "ingest alertmanager",
        "rules alert.raised",
        "plugin rule-scripted decide",
        "actions action.requested",
        "incidents action.completed",
        "action queue action.requested",
        "plugin action-noop run",
        "notification queue notification.requested",
        "plugin notifier-log deliver",
        "rules action.completed",
        "plugin rule-scripted on-action-completed",
    ];
    // The batch exporter sends every 5 s.
    let got = wait_for("the trace at the receiver", Duration::from_secs(30), || {
        let spans = spans.clone();
        async move {
            let of_trace: Vec<Received> = spans
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.trace == trace)
                .cloned()
                .collect();
            wanted
                .iter()
                .all(|w| of_trace.iter().any(|s| s.name == *w))
                .then_some(of_trace)
        }
    })
    .await;
    let ingest = got
        .iter()
        .find(|s| s.name == "ingest alertmanager")
        .unwrap();
    assert_eq!(
        ingest.parent, caller,
        "ingest is a child of the caller's span"
    );
    for s in &got {
        assert!(
            s.parent == caller || got.iter().any(|p| p.id == s.parent),
            "{} has a parent outside the trace: {got:#?}",
            s.name
        );
    }
    let decide = got.iter().find(|s| s.name == "rules alert.raised").unwrap();
    assert_eq!(decide.parent, ingest.id, "the rule stage follows ingest");
    host.stop().await;
}

/// A TCP forwarder to PostgreSQL that can be cut: while down it drops
/// every open connection and refuses new ones, as a database that went
/// away would look to the host.
struct Link {
    port: u16,
    up: Arc<AtomicBool>,
    open: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Link {
    async fn to(server: std::net::SocketAddr) -> Link {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let open = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (is_up, opened) = (up.clone(), open.clone());
        tokio::spawn(async move {
            loop {
                let (mut client, _) = listener.accept().await.unwrap();
                if !is_up.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut db) = tokio::net::TcpStream::connect(server).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut db).await;
                    }
                });
                opened.lock().unwrap().push(task.abort_handle());
            }
        });
        Link { port, up, open }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for t in self.open.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// `/readyz` answers 503 naming the store while PostgreSQL is
/// unreachable, and 200 once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_postgres_going_away_and_coming_back() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let url = eventpulse_tests::database_url(eventpulse_tests::Backend::Postgres, dir.path()).await;
    let server: std::net::SocketAddr = url
        .split_once('@')
        .unwrap()
        .1
        .split_once('/')
        .unwrap()
        .0
        .parse()
        .expect("EP_TEST_POSTGRES_URL names host:port");
    let link = Link::to(server).await;
    let mut config = test_config(dir.path());
    // Through the link, with the same database and TLS settings.
    config.database_url = url.replacen(&server.to_string(), &format!("127.0.0.1:{}", link.port), 1);
    std::fs::create_dir_all(&config.plugin_dir).unwrap();
    let host = Host::start_with(config, dir, Clock::system()).await;
    let ready = || async {
        let r = reqwest::get(format!("{}/readyz", host.url)).await.unwrap();
        (
            r.status().as_u16(),
            r.json::<serde_json::Value>().await.unwrap(),
        )
    };
    assert_eq!(ready().await.0, 200);

    link.cut();
    let (status, body) = ready().await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["failing"][0].as_str().unwrap().starts_with("store"),
        "{body}"
    );

    link.restore();
    wait_for("ready again", Duration::from_secs(30), || async {
        (ready().await.0 == 200).then_some(())
    })
    .await;
    host.stop().await;
}
