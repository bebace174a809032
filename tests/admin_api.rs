//! The admin API over HTTP on a real listener: bearer auth, listing,
//! enable/disable persisted across restarts, reload, dry runs, and errors
//! that say what went wrong.

use eventpulse::model::AlertStatus;
use eventpulse_tests::{Host, TOKEN, alert_event};

const CPU: &str = "[limits]\ntimeout_ms = 500\n\n[config]\ncooldown_secs = \"60\"\n";

#[tokio::test]
async fn every_admin_route_needs_the_token() {
    let host = Host::start().await;
    let client = reqwest::Client::new();
    for (method, path) in [
        ("GET", "/api/v1/plugins"),
        ("POST", "/api/v1/plugins/reload"),
        ("POST", "/api/v1/plugins/x/enable"),
        ("POST", "/api/v1/plugins/x/dry-run"),
    ] {
        let url = format!("{}{path}", host.url);
        let req = client.request(method.parse().unwrap(), &url);
        assert_eq!(
            req.try_clone().unwrap().send().await.unwrap().status(),
            401,
            "{path} without token"
        );
        let wrong = req.bearer_auth(format!("{TOKEN}x")).send().await.unwrap();
        assert_eq!(wrong.status(), 401, "{path} with a wrong token");
    }
    let health = client
        .get(format!("{}/healthz", host.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn disable_is_persisted_and_enable_restores() {
    let host = Host::start().await;
    host.install_now("cpu", "rule-cpu-autoscale", CPU).await;
    let event = alert_event("HighCPU", AlertStatus::Firing, &[("service", "app")]);

    let r = host
        .post("/api/v1/plugins/cpu/disable")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        host.registry.rules_for(&event).is_empty(),
        "disabled rules are not selected"
    );

    let host = host.restart().await;
    let list = host.get_json("/api/v1/plugins").await;
    assert_eq!(list["plugins"][0]["name"], "cpu");
    assert_eq!(
        list["plugins"][0]["enabled"], false,
        "still disabled after restart: {list}"
    );
    assert!(host.registry.decide("cpu", &event).await.is_err());

    let r = host
        .post("/api/v1/plugins/cpu/enable")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(host.registry.rules_for(&event).len(), 1);

    let missing = host
        .post("/api/v1/plugins/nope/enable")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["error"], "no plugin named `nope` is loaded");
}

#[tokio::test]
async fn reload_and_dry_run() {
    let host = Host::start().await;
    host.install("cpu", "rule-cpu-autoscale", CPU);
    let r = host.post("/api/v1/plugins/reload").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["plugins"][0]["loaded"], true, "{body}");
    assert_eq!(body["plugins"][0]["kind"], "rule");

    let event = alert_event("HighCPU", AlertStatus::Firing, &[("service", "app")]);
    let r = host
        .post("/api/v1/plugins/cpu/dry-run")
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["decision"]["actions"][0]["target"], "app", "{body}");

    let bad = host
        .post("/api/v1/plugins/cpu/dry-run")
        .body("{\"id\": 1}")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: serde_json::Value = bad.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid event: invalid type: integer `1`"),
        "{body}"
    );
}

#[tokio::test]
async fn plugin_failures_come_back_as_422_with_their_kind() {
    let host = Host::start().await;
    host.install_now(
        "panicky",
        "rule-hostile",
        &eventpulse_tests::hostile_manifest("panic", ""),
    )
    .await;
    let event = alert_event("HighCPU", AlertStatus::Firing, &[("service", "app")]);
    let r = host
        .post("/api/v1/plugins/panicky/dry-run")
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["kind"], "trap");
    assert_eq!(body["retryable"], false);
}
