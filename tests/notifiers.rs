//! Notifiers end to end: Kubernetes Warning events posted to the host →
//! `rule-k8s-events` (routing by severity, enrichment through `kube`) →
//! every first-party notifier → its peer.
//!
//! Peers. The mail server is real: aiosmtpd (`tests/smtp_sink.py`, Debian's
//! python3-aiosmtpd), with STARTTLS and AUTH required. Slack, the Telegram
//! Bot API and the Kubernetes API cannot be reached from here, so they are
//! stand-ins on 127.0.0.1 that speak the documented formats: Slack's
//! incoming webhook (JSON `text`/`blocks` in, `ok` or `no_service` out),
//! Telegram's `POST /bot<token>/sendMessage` (`{"ok":true,"result":
//! {"message_id":N}}`, or 429 with `parameters.retry_after`), and the
//! Kubernetes API's Pod/ReplicaSet/Deployment GETs with bearer auth. The
//! generic webhook receiver checks the HMAC signature.
//!
//! Every log line of this test binary is captured, to check that no
//! secret ever reaches the logs.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use eventpulse::runtime::Clock;
use eventpulse::store::{IncidentDetail, Job};
use eventpulse_tests::{Backend, Captured, Host, database_url, test_config, wait_for};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const SLACK_SECRET: &str = "slack-secret-9f2c81";
const TG_TOKEN: &str = "123456:tg-secret-77aa0b";
const SMTP_PASSWORD: &str = "smtp-secret-41bd6e";
const HMAC_KEY: &str = "hmac-secret-0d3e55";
const KUBE_TOKEN: &str = "kube-secret-5e6f19";
const SECRETS: [&str; 5] = [SLACK_SECRET, TG_TOKEN, SMTP_PASSWORD, HMAC_KEY, KUBE_TOKEN];

// ---- log capture ---------------------------------------------------------

/// Every log line this test binary writes, at debug (our crates) and info.
fn logs() -> String {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    let captured = LOGS.get_or_init(|| {
        let c = Captured::default();
        let writer = c.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "info,eventpulse=debug,audit=debug",
            ))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .init();
        c
    });
    captured.text()
}

// ---- peers ---------------------------------------------------------------

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

type Log = Arc<Mutex<Vec<(Instant, Value)>>>;

fn resource(body: &Value) -> String {
    body.to_string()
}

/// Slack incoming webhook at `/services/T0/B0/<secret>`: a body whose
/// text names `flaky-*` fails once with 500, `gone-*` always answers 404
/// `no_service`; everything else `200 ok`.
async fn slack() -> (String, Log) {
    let log: Log = Arc::default();
    let app = axum::Router::new()
        .route(
            "/services/T0/B0/{secret}",
            post(
                |State(log): State<Log>,
                 Path(secret): Path<String>,
                 axum::Json(body): axum::Json<Value>| async move {
                    if secret != SLACK_SECRET {
                        return (StatusCode::FORBIDDEN, "invalid_token");
                    }
                    let valid = body["text"].is_string()
                        && body["blocks"]
                            .as_array()
                            .is_some_and(|b| b[0]["type"] == "header");
                    let mut log = log.lock().unwrap();
                    let text = resource(&body);
                    let earlier = log.iter().filter(|(_, b)| resource(b) == text).count();
                    log.push((Instant::now(), body));
                    match () {
                        _ if !valid => (StatusCode::BAD_REQUEST, "invalid_blocks"),
                        _ if text.contains("gone-") => (StatusCode::NOT_FOUND, "no_service"),
                        _ if text.contains("flaky-") && earlier == 0 => {
                            (StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
                        }
                        _ => (StatusCode::OK, "ok"),
                    }
                },
            ),
        )
        .with_state(log.clone());
    (serve(app).await, log)
}

/// Telegram Bot API: the first `sendMessage` is throttled (429,
/// `retry_after` 1 s), later ones succeed with increasing message ids.
async fn telegram() -> (String, Log) {
    let log: Log = Arc::default();
    let app = axum::Router::new()
        .route(
            "/{bot}/sendMessage",
            post(|State(log): State<Log>, Path(bot): Path<String>, axum::Json(body): axum::Json<Value>| async move {
                if bot != format!("bot{TG_TOKEN}") {
                    return (StatusCode::UNAUTHORIZED, axum::Json(json!({"ok": false, "error_code": 401, "description": "Unauthorized"})));
                }
                let mut log = log.lock().unwrap();
                log.push((Instant::now(), body));
                if log.len() == 1 {
                    return (
                        StatusCode::TOO_MANY_REQUESTS,
                        axum::Json(json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 1", "parameters": {"retry_after": 1}})),
                    );
                }
                let id = 100 + log.len();
                (StatusCode::OK, axum::Json(json!({"ok": true, "result": {"message_id": id, "chat": {"id": -100123}, "date": 0}})))
            }),
        )
        .with_state(log.clone());
    (serve(app).await, log)
}

/// A generic webhook receiver that checks the HMAC signature.
async fn webhook() -> (String, Log) {
    let log: Log = Arc::default();
    let app = axum::Router::new()
        .route(
            "/hook",
            post(
                |State(log): State<Log>, headers: HeaderMap, body: axum::body::Bytes| async move {
                    let mut mac = Hmac::<Sha256>::new_from_slice(HMAC_KEY.as_bytes()).unwrap();
                    mac.update(&body);
                    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
                    if headers.get("x-eventpulse-signature").map(|v| v.as_bytes())
                        != Some(expected.as_bytes())
                    {
                        return StatusCode::UNAUTHORIZED;
                    }
                    log.lock()
                        .unwrap()
                        .push((Instant::now(), serde_json::from_slice(&body).unwrap()));
                    StatusCode::OK
                },
            ),
        )
        .with_state(log.clone());
    (serve(app).await, log)
}

/// The Kubernetes API for Pod `shop/web-7d8f-x4k2m` → ReplicaSet
/// `web-7d8f` → Deployment `web`, bearer token required.
async fn kube_api() -> (String, Arc<Mutex<usize>>) {
    let hits = Arc::new(Mutex::new(0));
    let object = |path: &str| -> Option<Value> {
        match path {
            "/api/v1/namespaces/shop/pods/web-7d8f-x4k2m" => Some(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web-7d8f-x4k2m", "namespace": "shop",
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d8f", "controller": true}]},
                "spec": {"nodeName": "node-1"},
                "status": {"phase": "Running", "containerStatuses": [
                    {"name": "web", "ready": false, "restartCount": 5},
                ]},
            })),
            "/apis/apps/v1/namespaces/shop/replicasets/web-7d8f" => Some(json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": "web-7d8f", "namespace": "shop",
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "controller": true}]},
            })),
            "/apis/apps/v1/namespaces/shop/deployments/web" => Some(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "shop"},
                "spec": {"replicas": 3}, "status": {"readyReplicas": 2},
            })),
            _ => None,
        }
    };
    let h = hits.clone();
    let app = axum::Router::new().fallback(get(move |headers: HeaderMap, uri: axum::http::Uri| {
        let h = h.clone();
        async move {
            *h.lock().unwrap() += 1;
            let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
            if auth != Some(&format!("Bearer {KUBE_TOKEN}")) {
                return (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(json!({"kind": "Status", "code": 401})),
                );
            }
            match object(uri.path()) {
                Some(o) => (StatusCode::OK, axum::Json(o)),
                None => (
                    StatusCode::NOT_FOUND,
                    axum::Json(json!({"kind": "Status", "code": 404, "reason": "NotFound"})),
                ),
            }
        }
    }));
    (serve(app).await, hits)
}

/// aiosmtpd on 127.0.0.1 with STARTTLS (a certificate for 127.0.0.1 from
/// a throwaway CA) and AUTH; killed on drop.
struct SmtpSink {
    port: u16,
    maildir: PathBuf,
    /// The CA that signed the server's certificate (the grant's `ca_file`).
    ca: PathBuf,
    child: std::process::Child,
}

impl SmtpSink {
    fn start(dir: &std::path::Path) -> SmtpSink {
        let maildir = dir.join("mail");
        std::fs::create_dir_all(&maildir).unwrap();
        // A throwaway CA and a server certificate for 127.0.0.1 signed by it.
        let (ca, ca_key) = (dir.join("smtp-ca.pem"), dir.join("smtp-ca.key"));
        let (cert, key, csr) = (
            dir.join("smtp-cert.pem"),
            dir.join("smtp-key.pem"),
            dir.join("smtp.csr"),
        );
        let ext = dir.join("smtp.ext");
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        let openssl = |args: &[&std::ffi::OsStr]| {
            let ok = std::process::Command::new("openssl")
                .args(args)
                .stderr(std::process::Stdio::null())
                .status()
                .expect("openssl is needed to make the SMTP server's certificate");
            assert!(ok.success(), "openssl {args:?}");
        };
        let s = |t: &'static str| std::ffi::OsStr::new(t);
        openssl(&[
            s("req"),
            s("-x509"),
            s("-newkey"),
            s("rsa:2048"),
            s("-nodes"),
            s("-days"),
            s("2"),
            s("-subj"),
            s("/CN=eventpulse-test-ca"),
            s("-keyout"),
            ca_key.as_os_str(),
            s("-out"),
            ca.as_os_str(),
        ]);
        openssl(&[
            s("req"),
            s("-newkey"),
            s("rsa:2048"),
            s("-nodes"),
            s("-subj"),
            s("/CN=127.0.0.1"),
            s("-keyout"),
            key.as_os_str(),
            s("-out"),
            csr.as_os_str(),
        ]);
        openssl(&[
            s("x509"),
            s("-req"),
            s("-in"),
            csr.as_os_str(),
            s("-CA"),
            ca.as_os_str(),
            s("-CAkey"),
            ca_key.as_os_str(),
            s("-CAcreateserial"),
            s("-days"),
            s("2"),
            s("-extfile"),
            ext.as_os_str(),
            s("-out"),
            cert.as_os_str(),
        ]);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let script = eventpulse_tests::workspace().join("tests/smtp_sink.py");
        let mut child = std::process::Command::new("/usr/bin/python3")
            .arg(script)
            .arg(port.to_string())
            .arg(&maildir)
            .arg("--tls")
            .args([&cert, &key])
            .args(["--auth", "eventpulse", SMTP_PASSWORD])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect(
                "python3 with aiosmtpd (Debian: python3-aiosmtpd) is needed; .ci/run installs it",
            );
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "ready", "the SMTP sink did not start");
        SmtpSink {
            port,
            maildir,
            ca,
            child,
        }
    }

    /// Messages received so far: (raw message, envelope).
    fn messages(&self) -> Vec<(Vec<u8>, Value)> {
        let mut out = Vec::new();
        for n in 1.. {
            let eml = self.maildir.join(format!("{n}.eml"));
            let Ok(raw) = std::fs::read(&eml) else { break };
            let env = std::fs::read_to_string(eml.with_extension("envelope.json")).unwrap();
            out.push((raw, serde_json::from_str(&env).unwrap()));
        }
        out
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- host ----------------------------------------------------------------

/// A host with fast retries (3 attempts) and the manual clock.
async fn host() -> Host {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut config = test_config(dir.path());
    config.database_url = database_url(Backend::Sqlite, dir.path()).await;
    config.pipeline.backoff_initial_ms = 20;
    config.pipeline.backoff_max_ms = 100;
    config.pipeline.max_attempts = 3;
    std::fs::create_dir_all(&config.plugin_dir).unwrap();
    Host::start_with(config, dir, Clock::manual(1_769_300_000_000)).await
}

fn secret_file(host: &Host, name: &str, value: &str) -> String {
    let path = host.dir.path().join(name);
    std::fs::write(&path, value).unwrap();
    format!("{{ file = {:?} }}", path.display().to_string())
}

/// rule-k8s-events with enrichment from `kube` (an address) and `routes`
/// (TOML config lines).
fn rule_manifest(host: &Host, kube: &str, routes: &str) -> String {
    format!(
        "[limits]\ntimeout_ms = 15000\nfuel = 50_000_000\n\n[grants]\nkube = {{ endpoint = \"http://{kube}\", token_secret = \"kube_token\" }}\n\n[config]\n{routes}\n\n[secrets]\nkube_token = {}\n",
        secret_file(host, "kube-token", KUBE_TOKEN)
    )
}

fn webhook_manifest(host: &Host, addr: &str) -> String {
    format!(
        "[limits]\ntimeout_ms = 5000\n\n[grants]\nhttp = {{ allow = [\"http://{addr}\"] }}\n\n[config]\nurl = \"http://{addr}/hook\"\n\n[secrets]\nhmac_key = {}\n",
        secret_file(host, "hmac-key", HMAC_KEY)
    )
}

fn slack_manifest(host: &Host, addr: &str) -> String {
    format!(
        "[limits]\ntimeout_ms = 5000\n\n[grants]\nhttp = {{ allow = [\"http://{addr}\"] }}\n\n[secrets]\nwebhook_url = {}\n",
        secret_file(
            host,
            "slack-url",
            &format!("http://{addr}/services/T0/B0/{SLACK_SECRET}")
        )
    )
}

/// notifier-email through the server on `port`: STARTTLS trusting `cert`,
/// or plain without one.
fn email_manifest(host: &Host, port: u16, cert: Option<&std::path::Path>) -> String {
    let tls = match cert {
        Some(c) => format!(
            "tls = \"starttls\", ca_file = {:?}",
            c.display().to_string()
        ),
        None => "tls = \"none\"".into(),
    };
    format!(
        "[limits]\ntimeout_ms = 10000\n\n[grants]\nsmtp = {{ server = \"127.0.0.1\", port = {port}, {tls}, timeout_ms = 3000, from = \"EventPulse <eventpulse@example.com>\", username = \"eventpulse\", password_secret = \"smtp_password\" }}\n\n[config]\nto = \"oncall@example.com, sre@example.com\"\n\n[secrets]\nsmtp_password = {}\n",
        secret_file(host, "smtp-password", SMTP_PASSWORD)
    )
}

/// rule-k8s-events enriching from `kube`, sending every severity to
/// notifier-webhook at `hook`.
async fn install_rule_and_webhook(host: &Host, kube: &str, hook: &str) {
    host.install(
        "rule-k8s-events",
        "rule-k8s-events",
        &rule_manifest(host, kube, "channels = \"notifier-webhook\""),
    );
    host.install_now(
        "notifier-webhook",
        "notifier-webhook",
        &webhook_manifest(host, hook),
    )
    .await;
}

/// POST one Warning event about Pod `shop/<pod>`; the response JSON.
async fn warning(host: &Host, pod: &str, reason: &str, count: i64) -> Value {
    let last = format!("2026-01-25T01:{:02}:00Z", count % 60);
    let body = eventpulse::ingest::kubernetes::sample(
        "Pod",
        "shop",
        pod,
        reason,
        "Container exceeded memory limit & was killed",
        count,
        &last,
    );
    let r = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/events/kubernetes?cluster=prod-eu",
            host.url
        ))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    r.json().await.unwrap()
}

/// The incident of `pod` once `ready` holds for it.
async fn incident_when(
    host: &Host,
    pod: &str,
    what: &str,
    ready: impl Fn(&IncidentDetail) -> bool,
) -> IncidentDetail {
    wait_for(what, Duration::from_secs(30), || async {
        for i in host.store.incidents(50).await.unwrap() {
            if !i.summary.contains(pod) {
                continue;
            }
            let d = host.store.incident_detail(&i.id).await.unwrap()?;
            if ready(&d) {
                return Some(d);
            }
        }
        None
    })
    .await
}

fn settled(d: &IncidentDetail, n: usize) -> bool {
    d.notifications.len() >= n
        && d.notifications
            .iter()
            .all(|j| matches!(j.status.as_str(), "delivered" | "failed" | "suppressed"))
        && d.timeline
            .iter()
            .filter(|e| e.kind == "notification")
            .count()
            >= n
}

fn by<'a>(d: &'a IncidentDetail, channel: &str) -> Vec<&'a Job> {
    d.notifications
        .iter()
        .filter(|j| j.plugin == channel)
        .collect()
}

/// Every text the API serves and the database holds, for the leak check.
async fn everything_stored_and_served(host: &Host, incident: &str) -> String {
    let mut all = String::new();
    let mut paths = vec![
        "/api/v1/incidents".to_owned(),
        format!("/api/v1/incidents/{incident}"),
        "/api/v1/plugins".into(),
        "/api/v1/audit?limit=500".into(),
        "/api/v1/dead-letters".into(),
    ];
    for p in [
        "rule-k8s-events",
        "notifier-slack",
        "notifier-telegram",
        "notifier-email",
        "notifier-webhook",
    ] {
        paths.push(format!("/api/v1/plugins/{p}"));
    }
    for p in paths {
        all += &host.get(&p).send().await.unwrap().text().await.unwrap();
    }
    use sqlx::{Connection, Row};
    let mut db = sqlx::SqliteConnection::connect(host.database_url())
        .await
        .unwrap();
    let tables: Vec<String> = sqlx::query("SELECT name FROM sqlite_master WHERE type = 'table'")
        .fetch_all(&mut db)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for t in tables {
        for row in sqlx::query(&format!("SELECT * FROM \"{t}\""))
            .fetch_all(&mut db)
            .await
            .unwrap()
        {
            for i in 0..row.len() {
                if let Ok(Some(text)) = row.try_get::<Option<String>, _>(i) {
                    all += &text;
                }
            }
        }
    }
    assert!(all.contains("prod-eu"), "the dump holds the incident");
    all
}

// ---- tests ---------------------------------------------------------------

/// One critical OOMKilled event reaches Slack, Telegram, email and the
/// webhook, enriched from the Kubernetes API; Telegram's 429 is retried
/// after its `retry_after`; the incident records the deliveries; no secret
/// shows up in logs, API output or the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_notifier_reaches_its_peer_and_no_secret_leaks() {
    logs();
    let ((slack_addr, slack_log), (tg_addr, tg_log), (hook_addr, hook_log), (kube_addr, kube_hits)) = (
        slack().await,
        telegram().await,
        webhook().await,
        kube_api().await,
    );
    let host = host().await;
    let smtp = SmtpSink::start(host.dir.path());
    let all = "notifier-slack,notifier-telegram,notifier-email,notifier-webhook";
    host.install(
        "rule-k8s-events",
        "rule-k8s-events",
        &rule_manifest(
            &host,
            &kube_addr,
            &format!("\"channels.critical\" = \"{all}\"\n\"channels.warning\" = \"notifier-log\""),
        ),
    );
    host.install(
        "notifier-slack",
        "notifier-slack",
        &slack_manifest(&host, &slack_addr),
    );
    host.install(
        "notifier-telegram",
        "notifier-telegram",
        &format!(
            "[limits]\ntimeout_ms = 5000\n\n[grants]\nhttp = {{ allow = [\"http://{tg_addr}\"] }}\n\n[config]\nchat_id = \"-100123\"\napi_url = \"http://{tg_addr}\"\n\n[secrets]\nbot_token = {}\n",
            secret_file(&host, "tg-token", TG_TOKEN)
        ),
    );
    host.install(
        "notifier-email",
        "notifier-email",
        &email_manifest(&host, smtp.port, Some(&smtp.ca)),
    );
    host.install_now(
        "notifier-webhook",
        "notifier-webhook",
        &webhook_manifest(&host, &hook_addr),
    )
    .await;

    let accepted = warning(&host, "web-7d8f-x4k2m", "OOMKilled", 3).await;
    assert_eq!(accepted["accepted"], 1, "{accepted}");
    let d = incident_when(&host, "web-7d8f-x4k2m", "4 notifications delivered", |d| {
        // The incident row is read apart from the jobs and the timeline:
        // also wait for the incident stage's `last_notified_at`.
        settled(d, 4)
            && d.notifications.iter().all(|j| j.status == "delivered")
            && d.incident.last_notified_at.is_some()
    })
    .await;
    assert_eq!(d.incident.severity, "critical");
    assert!(
        d.incident
            .title
            .starts_with("[prod-eu] OOMKilled: Container killed due to out of memory"),
        "{}",
        d.incident.title
    );
    assert!(
        d.incident.last_notified_at.is_some(),
        "last_notified_at recorded"
    );
    for channel in all.split(',') {
        assert!(
            d.timeline.iter().any(|e| e
                .cause
                .starts_with(&format!("notification delivered via {channel}"))),
            "{channel} delivery on the timeline: {:?}",
            d.timeline
        );
    }
    assert!(
        *kube_hits.lock().unwrap() >= 3,
        "Pod, ReplicaSet and Deployment were read"
    );

    // Slack: one Block Kit message in the seed 003 shape.
    {
        let log = slack_log.lock().unwrap();
        assert_eq!(log.len(), 1);
        let b = &log[0].1;
        assert_eq!(
            b["blocks"][0]["text"]["text"],
            "🔴 [prod-eu] OOMKilled: Container killed due to out of memory"
        );
        let sections: Vec<&str> = b["blocks"].as_array().unwrap()[1..]
            .iter()
            .map(|s| s["text"]["text"].as_str().unwrap())
            .collect();
        assert_eq!(
            sections[0],
            "*Resource:* Pod/shop/web-7d8f-x4k2m\n*Message:* Container exceeded memory limit &amp; was killed\n*Occurrences:* 1"
        );
        assert_eq!(
            sections[1],
            "*Status*\n*Phase:* Running\n*Restarts:* 5\n*Ready:* 0/1\n*Node:* node-1"
        );
        assert_eq!(
            sections[2],
            "*Related Deployment*\n*Name:* web\n*Replicas:* 2/3"
        );
        assert!(
            sections[3].starts_with("*Time:* 2026-01-25 "),
            "{}",
            sections[3]
        );
    }
    // Telegram: throttled once, retried no sooner than retry_after.
    {
        let log = tg_log.lock().unwrap();
        assert_eq!(log.len(), 2, "429 then delivered");
        let gap = log[1].0 - log[0].0;
        eprintln!("telegram: 429 with retry_after=1, retried after {gap:?}");
        assert!(
            gap >= Duration::from_millis(1000),
            "retry_after of 1 s honoured, retried after {gap:?}"
        );
        let b = &log[1].1;
        assert_eq!(
            (b["chat_id"].as_str(), b["parse_mode"].as_str()),
            (Some("-100123"), Some("HTML"))
        );
        let text = b["text"].as_str().unwrap();
        assert!(
            text.starts_with(
                "<b>🔴 [prod-eu] OOMKilled: Container killed due to out of memory</b>"
            ),
            "{text}"
        );
        assert!(
            text.contains("Message: Container exceeded memory limit &amp; was killed"),
            "escaped: {text}"
        );
        assert!(
            text.contains("<b>Related Deployment:</b>\nName: web\nReplicas: 2/3"),
            "{text}"
        );
        let job = by(&d, "notifier-telegram")[0];
        assert_eq!(job.attempts, 2);
        assert!(
            job.result.as_deref().unwrap().contains("102"),
            "message id as the remote id: {:?}",
            job.result
        );
    }
    // Email: over STARTTLS with AUTH; headers and both bodies.
    {
        let messages = smtp.messages();
        assert_eq!(messages.len(), 1);
        let (raw, envelope) = &messages[0];
        assert_eq!(envelope["tls"], true, "STARTTLS was used");
        assert_eq!(envelope["auth"], true, "AUTH was used");
        assert_eq!(envelope["mail_from"], "eventpulse@example.com");
        assert_eq!(
            envelope["rcpt_tos"],
            json!(["oncall@example.com", "sre@example.com"])
        );
        let mail = mailparse::parse_mail(raw).unwrap();
        use mailparse::MailHeaderMap;
        let h = |name: &str| mail.headers.get_first_value(name).unwrap_or_default();
        assert_eq!(
            h("Subject"),
            "[EventPulse] critical: [prod-eu] OOMKilled: Container killed due to out of memory"
        );
        assert_eq!(h("From"), "EventPulse <eventpulse@example.com>");
        assert!(
            h("To").contains("oncall@example.com") && h("To").contains("sre@example.com"),
            "{}",
            h("To")
        );
        assert!(
            h("Message-ID").ends_with("@example.com>"),
            "{}",
            h("Message-ID")
        );
        assert_eq!(mail.ctype.mimetype, "multipart/alternative");
        let part = |t: &str| {
            mail.subparts
                .iter()
                .find(|p| p.ctype.mimetype == t)
                .unwrap()
                .get_body()
                .unwrap()
                .replace("\r\n", "\n")
        };
        let text = part("text/plain");
        assert!(
            text.contains("Status:\n  Phase: Running\n  Restarts: 5"),
            "{text}"
        );
        assert!(
            text.contains("Related Deployment:\n  Name: web\n  Replicas: 2/3"),
            "{text}"
        );
        let html = part("text/html");
        assert!(html.contains("<b>Status:</b>"), "{html}");
        assert!(html.contains("memory limit &amp; was killed"), "{html}");
        let whole = String::from_utf8_lossy(raw);
        for s in SECRETS {
            assert!(!whole.contains(s), "the mail holds a secret");
        }
    }
    // Webhook: signed, carries the rendered text.
    {
        let log = hook_log.lock().unwrap();
        assert_eq!(log.len(), 1);
        assert!(log[0].1["text"].as_str().unwrap().contains("Replicas: 2/3"));
        assert_eq!(log[0].1["severity"], "critical");
    }

    let dump = everything_stored_and_served(&host, &d.incident.id).await;
    let captured = logs();
    assert!(
        captured.contains("attempt failed; will retry"),
        "logs were captured"
    );
    for s in SECRETS {
        assert!(
            !dump.contains(s),
            "a secret is in the API output or the database"
        );
        assert!(!captured.contains(s), "a secret is in the logs");
    }
    host.stop().await;
}

/// Five repeats of one Warning event inside the TTL → one notification;
/// after the TTL (manual clock) the next goes out with the updated count
/// and how many were held back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeats_inside_the_ttl_are_suppressed_and_counted() {
    logs();
    let ((hook_addr, hook_log), (kube_addr, _)) = (webhook().await, kube_api().await);
    let host = host().await;
    install_rule_and_webhook(&host, &kube_addr, &hook_addr).await;

    let mut keys = Vec::new();
    for count in 1..=5 {
        keys.push(
            warning(&host, "web-7d8f-x4k2m", "BackOff", count).await["dedup_keys"][0].clone(),
        );
    }
    assert!(
        keys.iter().all(|k| *k == keys[0]),
        "one dedup key: {keys:?}"
    );
    assert_eq!(
        keys[0],
        eventpulse::ingest::kubernetes::dedup_key(
            "prod-eu",
            "Pod",
            "shop",
            "web-7d8f-x4k2m",
            "BackOff"
        )
    );
    let d = incident_when(&host, "web-7d8f-x4k2m", "1 delivered, 4 suppressed", |d| {
        settled(d, 5)
    })
    .await;
    let statuses: Vec<&str> = d.notifications.iter().map(|j| j.status.as_str()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "delivered").count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == "suppressed").count(),
        4,
        "{statuses:?}"
    );
    assert_eq!(
        d.timeline
            .iter()
            .filter(|e| e.cause.contains("suppressed"))
            .count(),
        4
    );
    {
        let log = hook_log.lock().unwrap();
        assert_eq!(log.len(), 1, "one notification inside the TTL");
        let text = log[0].1["text"].as_str().unwrap();
        assert!(text.contains("Occurrences: 1"), "{text}");
        assert_eq!(log[0].1["severity"], "warning");
    }

    host.clock.advance(601_000);
    warning(&host, "web-7d8f-x4k2m", "BackOff", 6).await;
    let d = incident_when(
        &host,
        "web-7d8f-x4k2m",
        "the repeat after the TTL delivered",
        |d| {
            settled(d, 6)
                && d.notifications
                    .iter()
                    .filter(|j| j.status == "delivered")
                    .count()
                    == 2
        },
    )
    .await;
    assert_eq!(d.notifications.len(), 6);
    let second = {
        let log = hook_log.lock().unwrap();
        assert_eq!(log.len(), 2);
        log[1].1.clone()
    };
    let text = second["text"].as_str().unwrap();
    assert!(text.contains("Occurrences: 6"), "the updated count: {text}");
    assert!(text.contains("Suppressed repeats: 4"), "{text}");
    assert_eq!(second["fields"]["suppressed"], "4");
    host.stop().await;
}

/// With the Kubernetes API down the notification still goes out, marked
/// unenriched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_kube_api_the_message_goes_out_unenriched() {
    logs();
    let (hook_addr, hook_log) = webhook().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let host = host().await;
    install_rule_and_webhook(&host, &closed, &hook_addr).await;

    warning(&host, "web-7d8f-x4k2m", "OOMKilled", 1).await;
    let d = incident_when(&host, "web-7d8f-x4k2m", "delivered", |d| settled(d, 1)).await;
    assert_eq!(d.notifications[0].status, "delivered");
    let sent = hook_log.lock().unwrap()[0].1.clone();
    let text = sent["text"].as_str().unwrap();
    assert!(
        text.contains("Enrichment: unavailable (unavailable: kube"),
        "{text}"
    );
    assert!(!text.contains("Status:"), "{text}");
    assert!(text.contains("Resource: Pod/shop/web-7d8f-x4k2m"), "{text}");
    assert_eq!(
        d.incident.service, "web-7d8f-x4k2m",
        "no owner known: the pod itself"
    );
    host.stop().await;
}

/// 5xx then success → delivered once; a persistent 4xx → failed after one
/// attempt, on the incident; the SMTP server down → retried, then failed
/// and dead-lettered with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_retry_or_fail_as_they_should() {
    logs();
    let ((slack_addr, slack_log), (kube_addr, _)) = (slack().await, kube_api().await);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let host = host().await;
    host.install(
        "rule-k8s-events",
        "rule-k8s-events",
        &rule_manifest(
            &host,
            &kube_addr,
            "channels = \"notifier-slack,notifier-email\"",
        ),
    );
    host.install(
        "notifier-slack",
        "notifier-slack",
        &slack_manifest(&host, &slack_addr),
    );
    host.install_now(
        "notifier-email",
        "notifier-email",
        &email_manifest(&host, closed, None),
    )
    .await;
    assert_eq!(
        host.registry.status("notifier-email").unwrap().error,
        None,
        "email manifest loads"
    );

    warning(&host, "flaky-1", "Unhealthy", 1).await;
    warning(&host, "gone-1", "Unhealthy", 1).await;
    let flaky = incident_when(&host, "flaky-1", "both settled", |d| settled(d, 2)).await;
    let gone = incident_when(&host, "gone-1", "both settled", |d| settled(d, 2)).await;

    let s = by(&flaky, "notifier-slack")[0];
    assert_eq!((s.status.as_str(), s.attempts), ("delivered", 2), "{s:?}");
    let s = by(&gone, "notifier-slack")[0];
    assert_eq!((s.status.as_str(), s.attempts), ("failed", 1), "{s:?}");
    assert!(
        s.last_error
            .as_deref()
            .unwrap()
            .contains("HTTP 404: no_service"),
        "{s:?}"
    );
    assert!(
        gone.timeline.iter().any(|e| e
            .cause
            .contains("notification via notifier-slack failed after 1 attempt(s)")),
        "{:?}",
        gone.timeline
    );
    {
        let log = slack_log.lock().unwrap();
        let count = |name: &str| {
            log.iter()
                .filter(|(_, b)| b.to_string().contains(name))
                .count()
        };
        assert_eq!(
            count("flaky-1"),
            2,
            "500 then 200: sent twice, delivered once"
        );
        assert_eq!(count("gone-1"), 1, "a 404 is not retried");
    }

    for d in [&flaky, &gone] {
        let e = by(d, "notifier-email")[0];
        assert_eq!((e.status.as_str(), e.attempts), ("failed", 3), "{e:?}");
        let error = e.last_error.as_deref().unwrap();
        assert!(
            error.contains("gave up after 3 attempts") && error.contains("smtp"),
            "{error}"
        );
    }
    let letters = host.get_json("/api/v1/dead-letters").await;
    let letters: Vec<&Value> = letters["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["consumer"] == "notifications")
        .collect();
    assert_eq!(letters.len(), 2, "{letters:?}");
    for l in letters {
        let error = l["error"].as_str().unwrap();
        assert!(
            error.contains("smtp") && error.contains("Connection"),
            "the reason: {error}"
        );
        assert_eq!(l["attempts"], 3);
    }
    host.stop().await;
}
