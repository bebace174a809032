//! Outgoing HTTP through wasi:http: a notifier reaches a host its manifest
//! grants and is denied (and audited) for any other. The receiving end is a
//! local HTTP server on 127.0.0.1.

use std::sync::{Arc, Mutex};

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
    let event = alert_event("HighCPU", types::AlertStatus::Firing, &[("service", "app")]);

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
    // No http grant at all, and a grant for another port of the same host.
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
    let event = alert_event("HighCPU", types::AlertStatus::Firing, &[("service", "app")]);

    for name in ["nogrant", "otherport"] {
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_come_back_as_retryable() {
    let (addr, _seen) = receiver(StatusCode::SERVICE_UNAVAILABLE).await;
    let host = Host::start().await;
    host.install_now(
        "probe",
        "notifier-http-probe",
        &manifest(&format!("http://{addr}/hook"), "\"127.0.0.1\""),
    )
    .await;
    let event = alert_event("HighCPU", types::AlertStatus::Firing, &[("service", "app")]);
    let err = host
        .registry
        .deliver("probe", &event, &notification())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, registry::Error::Plugin(Error::Plugin { retryable: true, message }) if message == "HTTP 503"),
        "{err}"
    );
}
