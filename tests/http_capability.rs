//! Outgoing HTTP through wasi:http: a notifier reaches a destination its
//! manifest grants (scheme, host and port) and is denied, and audited, for
//! any other; a response larger than the grant's cap or slower than its
//! timeout fails the read. The receiving end is a local HTTP server on
//! 127.0.0.1.

mod kube_tls;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use eventpulse::registry;
use eventpulse::runtime::{Error, types};
use eventpulse_tests::{Host, alert_event};

/// A local receiver that records request bodies and answers `status`.
async fn receiver(status: StatusCode) -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let store = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let store = store.clone();
            async move {
                store.lock().unwrap().push(body);
                (status, [("x-request-id", "req-42")], "ok")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

fn notification() -> types::NotificationRequest {
    types::NotificationRequest {
        channel: "probe".into(),
        severity: types::Severity::Critical,
        title: "High CPU on app".into(),
        body: "cpu > 90%".into(),
        dedup_key: None,
        fields: vec![],
    }
}

fn manifest(url: &str, allow: &str) -> String {
    format!("[grants]\nhttp = {{ allow = [{allow}] }}\n\n[config]\nurl = \"{url}\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granted_host_is_reached() {
    let (addr, seen) = receiver(StatusCode::OK).await;
    let host = Host::start().await;
    host.install_now(
        "probe",
        "notifier-http-probe",
        &manifest(&format!("http://{addr}/hook"), &format!("{addr:?}")),
    )
    .await;
    let event = alert_event(
        "HighCPU",
        eventpulse::model::AlertStatus::Firing,
        &[("service", "app")],
    );

    let delivery = host
        .registry
        .deliver("probe", &event, &notification())
        .await
        .unwrap();
    assert_eq!(delivery.detail, "HTTP 200");
    assert_eq!(delivery.remote_id.as_deref(), Some("req-42"));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["title"], "High CPU on app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ungranted_hosts_are_denied() {
    let (addr, seen) = receiver(StatusCode::OK).await;
    let host = Host::start().await;
    let url = format!("http://{addr}/hook");
    // No http grant at all, a grant for another port of the same host, one
    // for the host without a port (80 only) and one for https only.
    host.install_now(
        "nogrant",
        "notifier-http-probe",
        &format!("[config]\nurl = \"{url}\"\n"),
    )
    .await;
    host.install_now(
        "otherport",
        "notifier-http-probe",
        &manifest(&url, "\"127.0.0.1:1\""),
    )
    .await;
    host.install_now(
        "bare",
        "notifier-http-probe",
        &manifest(&url, "\"127.0.0.1\""),
    )
    .await;
    host.install_now(
        "httpsonly",
        "notifier-http-probe",
        &manifest(&url, &format!("\"https://{addr}\"")),
    )
    .await;
    let event = alert_event(
        "HighCPU",
        eventpulse::model::AlertStatus::Firing,
        &[("service", "app")],
    );

    for name in ["nogrant", "otherport", "bare", "httpsonly"] {
        let err = host
            .registry
            .deliver(name, &event, &notification())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, registry::Error::Plugin(Error::Denied(cap)) if cap == "http"),
            "{name}: {err}"
        );
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing reached the server"
    );
    // Each refusal is in the audit log, naming the destination only.
    let audit =
        eventpulse_tests::wait_for("4 audited denials", Duration::from_secs(10), || async {
            let a = host.get_json("/api/v1/audit?limit=50").await;
            let denied: Vec<serde_json::Value> = a["audit"]
                .as_array()?
                .iter()
                .filter(|r| r["capability"] == "http" && r["allowed"] == false)
                .cloned()
                .collect();
            (denied.len() >= 4).then_some(denied)
        })
        .await;
    for r in &audit {
        assert_eq!(r["target"], format!("http://{addr}"), "{r}");
        assert_eq!(r["detail"], "destination not granted", "{r}");
    }
    let plugins: Vec<&str> = audit
        .iter()
        .map(|r| r["plugin"].as_str().unwrap())
        .collect();
    for name in ["nogrant", "otherport", "bare", "httpsonly"] {
        assert!(plugins.contains(&name), "{name} audited: {plugins:?}");
    }
}

/// A server that answers `/big` with 2 MiB and `/slow` after 3 s.
async fn awkward_server() -> String {
    let app = axum::Router::new()
        .route(
            "/big",
            axum::routing::post(|| async { vec![b'x'; 2 << 20] }),
        )
        .route(
            "/slow",
            axum::routing::post(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "late"
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_capped_in_size_and_time() {
    let addr = awkward_server().await;
    let host = Host::start().await;
    for (name, path) in [("big", "big"), ("slow", "slow")] {
        host.install_now(
            name,
            "notifier-http-probe",
            &format!(
                "[limits]\ntimeout_ms = 10000\n\n[grants]\nhttp = {{ allow = [\"{addr}\"], timeout_ms = 300, max_response_bytes = 65536 }}\n\n[config]\nurl = \"http://{addr}/{path}\"\n"
            ),
        )
        .await;
    }
    let event = alert_event(
        "HighCPU",
        eventpulse::model::AlertStatus::Firing,
        &[("service", "app")],
    );
    let err = host
        .registry
        .deliver("big", &event, &notification())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("HttpResponseBodySize"), "{err}");
    let started = std::time::Instant::now();
    let err = host
        .registry
        .deliver("slow", &event, &notification())
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(err.to_string().contains("Timeout"), "{err}");
    assert!(
        matches!(&err, registry::Error::Plugin(e) if e.is_retryable()),
        "a timeout may pass: {err}"
    );
    assert!(
        took < Duration::from_secs(2),
        "cut off at the grant's 300 ms, took {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_come_back_as_retryable() {
    let (addr, _seen) = receiver(StatusCode::SERVICE_UNAVAILABLE).await;
    let host = Host::start().await;
    host.install_now(
        "probe",
        "notifier-http-probe",
        &manifest(
            &format!("http://{addr}/hook"),
            &format!("\"http://{addr}\""),
        ),
    )
    .await;
    let event = alert_event(
        "HighCPU",
        eventpulse::model::AlertStatus::Firing,
        &[("service", "app")],
    );
    let err = host
        .registry
        .deliver("probe", &event, &notification())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, registry::Error::Plugin(Error::Plugin { retryable: true, message, .. }) if message.starts_with("HTTP 503")),
        "{err}"
    );
}
