//! `notifier-webhook` through the pipeline against a local receiver (an
//! axum stand-in for a generic webhook endpoint on 127.0.0.1) that checks
//! the HMAC signature with its own copy of the key: a 503 is retried and
//! then delivered once; a 400 fails at once without retries, and the
//! failure is on the incident's timeline. The key never reaches the API.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use eventpulse::store::Queue;
use eventpulse_tests::{Backend, Host, post_webhook, scripted_alert, wait_for};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const KEY: &str = "hmac-key-do-not-leak-7c1f";

#[derive(Default)]
struct Received {
    /// (dedup key, signature valid, idempotency key)
    requests: Vec<(String, bool, String)>,
}

async fn receiver(state: Arc<Mutex<Received>>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let state = state.clone();
            async move {
                let mut mac = Hmac::<Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
                mac.update(&body);
                let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
                let valid = headers
                    .get("x-eventpulse-signature")
                    .is_some_and(|v| v.as_bytes() == expected.as_bytes());
                let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let key = json["dedup_key"].as_str().unwrap_or("").to_owned();
                let idem = headers
                    .get("idempotency-key")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                let mut s = state.lock().unwrap();
                let seen = s.requests.iter().filter(|r| r.0 == key).count();
                s.requests.push((key.clone(), valid, idem));
                match (key.as_str(), seen) {
                    _ if !valid => (StatusCode::UNAUTHORIZED, "bad signature"),
                    ("retry", 0) => (StatusCode::SERVICE_UNAVAILABLE, "try later"),
                    ("reject", _) => (StatusCode::BAD_REQUEST, "malformed"),
                    _ => (StatusCode::OK, "ok"),
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

fn alert(group: &str) -> serde_json::Value {
    scripted_alert(group, &[("channel", "notifier-webhook")])
}

#[tokio::test]
async fn signed_delivery_retries_5xx_and_fails_4xx_at_once() {
    let received = Arc::new(Mutex::new(Received::default()));
    let port = receiver(received.clone()).await;
    let host = Host::start_on(Backend::Sqlite).await;
    let key_file = host.dir.path().join("hmac.key");
    std::fs::write(&key_file, KEY).unwrap();
    host.install("rule-scripted", "rule-scripted", "");
    host.install("action-noop", "action-noop", "");
    host.install_now(
        "notifier-webhook",
        "notifier-webhook",
        &format!(
            "[grants]\nhttp = {{ allow = [\"127.0.0.1:{port}\"] }}\n\n[config]\nurl = \"http://127.0.0.1:{port}/hook\"\n\n[secrets]\nhmac_key = {{ file = {key_file:?} }}\n"
        ),
    )
    .await;

    assert_eq!(post_webhook(&host.url, &alert("retry")).await.0, 200);
    assert_eq!(post_webhook(&host.url, &alert("reject")).await.0, 200);

    let done = wait_for(
        "both notifications settled",
        Duration::from_secs(20),
        || async {
            let mut out = Vec::new();
            for i in host.store.incidents(10).await.unwrap() {
                let d = host.store.incident_detail(&i.id).await.unwrap().unwrap();
                let n = d.notifications.first()?.clone();
                if !matches!(n.status.as_str(), "delivered" | "failed")
                    || !d.timeline.iter().any(|e| e.kind == "notification")
                {
                    return None;
                }
                out.push(d);
            }
            (out.len() == 2).then_some(out)
        },
    )
    .await;
    let by_key = |k: &str| done.iter().find(|d| d.incident.dedup_key == k).unwrap();

    let retried = &by_key("retry").notifications[0];
    assert_eq!(
        (retried.status.as_str(), retried.attempts),
        ("delivered", 2),
        "{retried:?}"
    );
    let rejected = by_key("reject");
    let n = &rejected.notifications[0];
    assert_eq!((n.status.as_str(), n.attempts), ("failed", 1), "{n:?}");
    assert!(
        n.last_error.as_deref().unwrap().contains("HTTP 400"),
        "{n:?}"
    );
    assert!(
        rejected.timeline.iter().any(|e| e
            .cause
            .contains("notification via notifier-webhook failed after 1 attempt(s)")),
        "{:?}",
        rejected.timeline
    );

    {
        let r = received.lock().unwrap();
        assert!(
            r.requests.iter().all(|(_, valid, _)| *valid),
            "every request signed correctly"
        );
        let retry_requests: Vec<_> = r.requests.iter().filter(|x| x.0 == "retry").collect();
        assert_eq!(retry_requests.len(), 2, "503 then 200: delivered once");
        assert_eq!(
            retry_requests[0].2, retry_requests[1].2,
            "the same idempotency key on the retry"
        );
        assert_eq!(
            r.requests.iter().filter(|x| x.0 == "reject").count(),
            1,
            "a 400 is not retried"
        );
    }

    // The key is nowhere in what the API shows.
    for path in [
        "/api/v1/plugins/notifier-webhook",
        "/api/v1/incidents",
        "/api/v1/dead-letters",
    ] {
        let text = host.get(path).send().await.unwrap().text().await.unwrap();
        assert!(!text.contains(KEY), "{path} leaks the key");
    }
    let job = host
        .store
        .job(Queue::Notifications, &retried.id)
        .await
        .unwrap()
        .unwrap();
    assert!(!format!("{job:?}").contains(KEY));
    host.stop().await;
}
