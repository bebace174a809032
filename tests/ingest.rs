//! `POST /api/v1/alerts/alertmanager` over HTTP: what Alertmanager sends is
//! made durable (alerts + `alert.raised` in the outbox, one transaction),
//! retries and duplicates add no events, and every bad body gets a 4xx that
//! names the problem while nothing is written.

use eventpulse::store::Holder;
use eventpulse_tests::Host;
use serde_json::{Value, json};

fn webhook(status: &str, ends_at: &str) -> Value {
    json!({
        "receiver": "eventpulse", "status": status, "version": "4",
        "groupKey": "{}:{alertname=\"HighCPU\"}", "truncatedAlerts": 0,
        "groupLabels": {"alertname": "HighCPU"}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": [{
            "status": status,
            "labels": {"alertname": "HighCPU", "service": "app", "severity": "critical"},
            "annotations": {"summary": "CPU above 90%"},
            "startsAt": "2026-11-23T22:54:37Z", "endsAt": ends_at,
            "generatorURL": "http://127.0.0.1:9090/graph", "fingerprint": "c3f0a1b2d4e5f607"
        }, {
            "status": "firing",
            "labels": {"alertname": "HighCPU", "service": "api"},
            "annotations": {},
            "startsAt": "2026-11-23T22:54:38Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "", "fingerprint": "00aa11bb22cc33dd"
        }]
    })
}

async fn post(host: &Host, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/alerts/alertmanager", host.url))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn outbox(host: &Host) -> Vec<eventpulse::model::Event> {
    host.store
        .outbox_after(0, 1_000)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, kind, payload)| {
            assert_eq!(kind, "alert.raised");
            serde_json::from_str(&payload).unwrap()
        })
        .collect()
}

#[tokio::test]
async fn alerts_become_durable_events_once() {
    let host = Host::start().await;
    let firing = webhook("firing", "0001-01-01T00:00:00Z").to_string();

    let (status, body) = post(&host, firing.clone()).await;
    assert_eq!(
        (status, &body),
        (200, &json!({"accepted": 2, "new_events": 2}))
    );
    let events = outbox(&host).await;
    assert_eq!(events.len(), 2);
    let e = &events[0];
    assert_eq!(e.key, "app");
    assert_eq!(e.source, "alertmanager/eventpulse");
    assert_eq!(
        e.correlation.alert_id.as_deref(),
        Some("c3f0a1b2d4e5f607:1795474477000")
    );
    assert_eq!(e.trace_id.len(), 32);
    let alert = e.alert.as_ref().unwrap();
    assert_eq!(
        (alert.name.as_str(), alert.status),
        ("HighCPU", eventpulse::model::AlertStatus::Firing)
    );
    assert_ne!(events[0].id, events[1].id);

    // Alertmanager retries and HA peers deliver the same thing again.
    for _ in 0..3 {
        let (status, body) = post(&host, firing.clone()).await;
        assert_eq!((status, body["new_events"].as_u64()), (200, Some(0)));
    }
    assert_eq!(outbox(&host).await.len(), 2, "no event for a duplicate");
    let state = host
        .store
        .alert_state("c3f0a1b2d4e5f607", 1_795_474_477_000)
        .await
        .unwrap();
    assert_eq!(state, Some(("firing".into(), 4)), "occurrences counted");

    // The first alert resolves: one new event, for that status change only.
    let resolved = webhook("resolved", "2026-11-23T23:00:00Z");
    let (status, body) = post(&host, resolved.to_string()).await;
    assert_eq!((status, body["new_events"].as_u64()), (200, Some(1)));
    let events = outbox(&host).await;
    assert_eq!(events.len(), 3);
    let alert = events[2].alert.as_ref().unwrap();
    assert_eq!(alert.status, eventpulse::model::AlertStatus::Resolved);
    assert_eq!(alert.ends_at, Some(1_795_474_800_000));
}

#[tokio::test]
async fn bad_bodies_get_a_precise_4xx_and_write_nothing() {
    let host = Host::start().await;
    let mut missing = webhook("firing", "0001-01-01T00:00:00Z");
    missing["alerts"][1]
        .as_object_mut()
        .unwrap()
        .remove("startsAt");
    let mut wrong_type = webhook("firing", "0001-01-01T00:00:00Z");
    wrong_type["alerts"][0]["labels"] = json!(["alertname"]);
    let mut version = webhook("firing", "0001-01-01T00:00:00Z");
    version["version"] = json!("5");

    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (
            b"{\"receiver\": ".to_vec(),
            400,
            "body: invalid JSON: EOF while parsing a value at line 1 column 13",
        ),
        (
            b"\"just a string\"".to_vec(),
            400,
            "body: invalid type: string \"just a string\", expected struct Webhook",
        ),
        (
            missing.to_string().into_bytes(),
            400,
            "alerts[1]: missing field `startsAt`",
        ),
        (
            wrong_type.to_string().into_bytes(),
            400,
            "alerts[0].labels: invalid type: sequence, expected a map",
        ),
        (
            version.to_string().into_bytes(),
            400,
            "version: unsupported webhook version `5`, expected \"4\"",
        ),
        (
            vec![0xc3, 0x28, b'{'],
            400,
            "body is not valid UTF-8 (byte 0)",
        ),
        (vec![b' '; 10 << 20], 413, "body larger than 1048576 bytes"),
    ];
    for (body, status, message) in cases {
        let (got, json) = post(&host, body).await;
        assert_eq!((got, json["error"].as_str()), (status, Some(message)));
    }
    assert!(outbox(&host).await.is_empty(), "nothing was written");
}

#[tokio::test]
async fn an_ingest_token_is_enforced_when_configured() {
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let mut config = eventpulse_tests::test_config(dir.path());
    config.ingest.token = Some("ingest-secret".to_owned().into());
    std::fs::create_dir_all(&config.plugin_dir).unwrap();
    let host = Host::start_with(config, dir, eventpulse::runtime::Clock::system()).await;
    let body = webhook("firing", "0001-01-01T00:00:00Z").to_string();

    let (status, _) = post(&host, body.clone()).await;
    assert_eq!(status, 401);
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/alerts/alertmanager", host.url))
        .bearer_auth("ingest-secret")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(outbox(&host).await.len(), 2);
}

/// The store fails in the middle of the transaction (a trigger aborts the
/// outbox insert after the alert rows were written): the sender gets 503,
/// so Alertmanager retries, and nothing of the delivery remains. Once the
/// store works again the retry is accepted in full.
#[tokio::test]
async fn a_store_failure_is_a_503_and_leaves_nothing_half_written() {
    use sqlx::Connection;
    let host = Host::start().await;
    let url = format!(
        "sqlite://{}",
        host.dir.path().join("eventpulse.db").display()
    );
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query(
        "CREATE TRIGGER fail_outbox BEFORE INSERT ON outbox_events \
         BEGIN SELECT RAISE(ABORT, 'simulated disk failure'); END",
    )
    .execute(&mut db)
    .await
    .unwrap();

    let body = webhook("firing", "0001-01-01T00:00:00Z").to_string();
    let (status, json) = post(&host, body.clone()).await;
    assert_eq!(
        (status, json["error"].as_str()),
        (503, Some("store unavailable; retry later"))
    );
    let alerts: i64 = sqlx::query_scalar("SELECT count(*) FROM alerts")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(
        alerts, 0,
        "the alert rows were rolled back with the failed outbox insert"
    );

    sqlx::query("DROP TRIGGER fail_outbox")
        .execute(&mut db)
        .await
        .unwrap();
    let (status, json) = post(&host, body).await;
    assert_eq!((status, json["new_events"].as_u64()), (200, Some(2)));
    assert_eq!(outbox(&host).await.len(), 2);
}

/// The default configuration commits durably against power loss, as the
/// database itself reports it: SQLite in WAL mode with `synchronous =
/// NORMAL` (1) and the writer syncing the WAL before it answers a commit
/// (store::writer's tests show the answer waits for that sync), PostgreSQL
/// with `synchronous_commit = on`. The explicit `process-crash` setting
/// relaxes it: SQLite without the sync, PostgreSQL `off`.
#[tokio::test]
async fn the_default_config_commits_durably_against_power_loss() {
    use eventpulse::config::{Config, Durability};
    use eventpulse::store::{Store, StoreOptions};
    use eventpulse_tests::{Backend, database_url};
    assert_eq!(Config::default().store.durability, Durability::PowerLoss);
    for (backend, durable, relaxed) in [
        (Backend::Sqlite, "normal + wal sync", "normal"),
        (Backend::Postgres, "on", "off"),
    ] {
        let host = Host::start_on(backend).await;
        assert_eq!(host.store.commit_durability().await.unwrap(), durable);
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            durability: Durability::ProcessCrash,
            ..StoreOptions::default()
        };
        let url = database_url(backend, dir.path()).await;
        let store = Store::connect_with(&url, &options).await.unwrap();
        assert_eq!(store.commit_durability().await.unwrap(), relaxed);
        host.stop().await;
    }
}

/// A host on SQLite with the pipeline off (ingest alone), configured by
/// `change`.
async fn ingest_only(change: impl FnOnce(&mut eventpulse::config::Config)) -> Host {
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let mut config = eventpulse_tests::test_config(dir.path());
    config.pipeline.enabled = false;
    change(&mut config);
    std::fs::create_dir_all(&config.plugin_dir).unwrap();
    Host::start_with(config, dir, eventpulse::runtime::Clock::system()).await
}

/// 200 webhooks at once against a queue of one waiting request: those the
/// store could not take at once get 503 with `Retry-After` and wrote
/// nothing; every 200 answered is durable.
#[tokio::test]
async fn a_saturated_ingest_says_retry_after_and_loses_nothing_it_accepted() {
    let host = ingest_only(|config| config.ingest.max_pending = 1).await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/alerts/alertmanager", host.url);
    let mut posts = Vec::new();
    for i in 0..200 {
        let mut body = webhook("firing", "0001-01-01T00:00:00Z");
        body["alerts"][0]["fingerprint"] = format!("a{i:06}").into();
        body["alerts"][1]["fingerprint"] = format!("b{i:06}").into();
        let (client, url) = (client.clone(), url.clone());
        posts.push(tokio::spawn(async move {
            let r = client.post(&url).json(&body).send().await.unwrap();
            let retry_after = r.headers().get("retry-after").cloned();
            (i, r.status().as_u16(), retry_after)
        }));
    }
    let (mut accepted, mut refused) = (Vec::new(), 0);
    for p in posts {
        match p.await.unwrap() {
            (i, 200, _) => accepted.push(i),
            (_, 503, Some(after)) => {
                assert_eq!(after, "1");
                refused += 1;
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(
        refused > 0,
        "a queue of one must overflow under 200 at once"
    );
    for i in 0..200 {
        let stored = host
            .store
            .alert_state(&format!("a{i:06}"), 1_795_474_477_000)
            .await
            .unwrap()
            .is_some();
        assert_eq!(stored, accepted.contains(&i), "webhook {i}");
    }
    host.stop().await;
}

/// The request is queued, but the store's one writer stays taken (here by
/// a transaction the test holds open) past the busy timeout: the sender
/// gets 503 with `Retry-After`, as when the queue is full, and nothing of
/// the delivery is written. Once the writer is free the retry is accepted.
#[tokio::test]
async fn a_writer_busy_past_the_timeout_says_retry_after_and_writes_nothing() {
    let host = ingest_only(|config| config.store.busy_timeout_ms = 1000).await;
    let url = format!("{}/api/v1/alerts/alertmanager", host.url);
    let body = webhook("firing", "0001-01-01T00:00:00Z");

    let held = host.store.begin(Holder::Rules).await.unwrap();
    // Several senders at once: queued together, refused together.
    let client = reqwest::Client::new();
    let posts: Vec<_> = (0..8)
        .map(|n| {
            let (client, url) = (client.clone(), url.clone());
            let mut body = body.clone();
            body["alerts"][0]["fingerprint"] = format!("busy{n}").into();
            tokio::spawn(async move {
                let r = client.post(&url).json(&body).send().await.unwrap();
                let retry_after = r.headers().get("retry-after").cloned();
                (
                    r.status().as_u16(),
                    retry_after.map(|v| v.to_str().unwrap().to_owned()),
                )
            })
        })
        .collect();
    for p in posts {
        assert_eq!(p.await.unwrap(), (503, Some("1".to_owned())));
    }
    drop(held);
    assert!(outbox(&host).await.is_empty(), "nothing written");

    let (status, json) = post(&host, body.to_string()).await;
    assert_eq!((status, json["new_events"].as_u64()), (200, Some(2)));
    host.stop().await;
}
