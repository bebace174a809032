//! The pipeline end to end inside one host, on SQLite and on PostgreSQL:
//! webhook → `alert.raised` → rule → incident + `action.requested` +
//! `notification.requested` → action and notifier plugins → outcomes →
//! incident lifecycle and timeline. Retries, dead letters and a database
//! that goes away are here too.

use std::time::Duration;

use eventpulse::ingest::alertmanager::sample;
use eventpulse::store::{Holder, IncidentDetail, Queue};
use eventpulse_tests::{Backend, Host, post_webhook, scripted_alert, wait_for};

const SETTLE: Duration = Duration::from_secs(20);

fn timeline(d: &IncidentDetail) -> Vec<String> {
    d.timeline
        .iter()
        .map(|e| match (&e.from_status, &e.to_status) {
            (Some(f), Some(t)) => format!("{} {f}->{t}", e.kind),
            (None, Some(t)) => format!("{} ->{t}", e.kind),
            _ => e.kind.clone(),
        })
        .collect()
}

async fn alert_to_resolved_incident(backend: Backend) {
    let host = Host::start_on(backend).await;
    host.install_first_party("cooldown_secs = \"300\"\n").await;
    let starts = "2026-11-24T10:00:00Z";
    let firing = sample(
        "HighCPU",
        &[("service", "app"), ("severity", "critical")],
        false,
        starts,
        "",
    );
    let (status, body) = post_webhook(&host.url, &firing).await;
    assert_eq!(
        (status, body["new_events"].as_u64()),
        (200, Some(1)),
        "{body}"
    );

    let d = host
        .newest_incident(
            "incident resolved with action and notification done",
            SETTLE,
            // `incident_detail` reads the incident row, timeline and jobs in
            // separate statements, so wait for every part asserted below:
            // the incident stage's commit can land between two of them.
            |d| {
                d.incident.status == "resolved"
                    && d.actions.iter().all(|a| a.status == "completed")
                    && d.notifications.iter().any(|n| n.status == "delivered")
                    && d.timeline.iter().any(|e| e.kind == "notification")
                    && d.incident.last_notified_at.is_some()
            },
        )
        .await;
    assert_eq!(d.incident.title, "High CPU on app");
    assert_eq!(d.incident.severity, "critical");
    assert_eq!(d.incident.dedup_key, "cpu:app");
    assert_eq!(d.alerts.len(), 1);
    assert_eq!(d.actions.len(), 1);
    let action = &d.actions[0];
    assert_eq!(
        (
            action.plugin.as_str(),
            action.target.as_str(),
            action.attempts
        ),
        ("action-noop", "app", 1)
    );
    assert!(
        action.result.as_deref().unwrap().contains("\"replicas\":2"),
        "{:?}",
        action.result
    );
    assert_eq!(d.notifications.len(), 1);
    assert!(d.incident.last_notified_at.is_some());
    assert!(d.incident.closed_at.is_some());
    let t = timeline(&d);
    for expected in [
        "opened ->open",
        "alert",
        "transition open->mitigating",
        "action",
        "notification",
        "transition mitigating->resolved",
    ] {
        assert!(
            t.contains(&expected.to_string()),
            "{expected} missing from {t:?}"
        );
    }
    // Every transition is tied to the event that caused it.
    assert!(d.timeline.iter().all(|e| !e.event_id.is_empty()));

    // Alertmanager retries and HA peers resend: nothing new happens.
    let before = host.store.counts().await.unwrap();
    for _ in 0..3 {
        let (status, body) = post_webhook(&host.url, &firing).await;
        assert_eq!((status, body["new_events"].as_u64()), (200, Some(0)));
    }
    // The alert resolves: the rule wants a scale-in, which the cooldown
    // holds back; the incident is already resolved and stays so.
    let resolved = sample(
        "HighCPU",
        &[("service", "app"), ("severity", "critical")],
        true,
        starts,
        "2026-11-24T10:05:00Z",
    );
    let (status, body) = post_webhook(&host.url, &resolved).await;
    assert_eq!((status, body["new_events"].as_u64()), (200, Some(1)));
    wait_for("the resolved alert decided on", SETTLE, || async {
        let after = host.store.counts().await.unwrap();
        (after.events == before.events + 1).then_some(())
    })
    .await;
    // Give the stages a moment to (wrongly) do more, then compare.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = host.store.counts().await.unwrap();
    assert_eq!(
        (after.incidents, after.actions, after.notifications),
        (1, 1, 1),
        "{after:?}"
    );
    let d = host
        .store
        .incident_detail(&d.incident.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.incident.status, "resolved");
    assert_eq!(d.alerts.len(), 1);

    // The incidents API shows the same.
    let api = host
        .get_json(&format!("/api/v1/incidents/{}", d.incident.id))
        .await;
    assert_eq!(api["incident"]["status"], "resolved");
    assert_eq!(
        api["incident"]["timeline"].as_array().unwrap().len(),
        d.timeline.len()
    );
    let list = host.get_json("/api/v1/incidents").await;
    assert_eq!(list["incidents"].as_array().unwrap().len(), 1);
    host.stop().await;
}

#[tokio::test]
async fn alert_becomes_incident_action_notification_and_resolves_on_sqlite() {
    alert_to_resolved_incident(Backend::Sqlite).await;
}

#[tokio::test]
async fn alert_becomes_incident_action_notification_and_resolves_on_postgres() {
    alert_to_resolved_incident(Backend::Postgres).await;
}

fn scripted(group: &str, params: &str) -> serde_json::Value {
    scripted_alert(
        group,
        &[
            ("action", "action-flaky"),
            ("params", params),
            ("channel", "none"),
        ],
    )
}

async fn retries_and_dead_letters(backend: Backend) {
    // Backoff 400-1600 ms: the 5th attempt comes at least 4.4 s after the
    // first.
    let host = Host::start_on(backend)
        .await
        .restart_with(|c| {
            c.pipeline.backoff_initial_ms = 400;
            c.pipeline.backoff_max_ms = 1600;
        })
        .await;
    host.install("rule-scripted", "rule-scripted", "");
    // All three act on target `svc`; the per-target breaker would open on
    // the broken one's failures and fail the flaky one fast. Breakers are
    // tested in docker_actions.rs; here they stay out of the way.
    host.install_now(
        "action-flaky",
        "action-flaky",
        "[safety]\nbreaker_threshold = 1000\n",
    )
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;

    // Flaky for 2 s after the post (the first attempt comes well before,
    // even on a loaded machine): retried with backoff, then completes
    // (by the 5th attempt at the latest).
    let flaky = scripted(
        "flaky",
        &format!(r#"{{"fail":"retryable","until_ms":{}}}"#, now + 2000),
    );
    assert_eq!(post_webhook(&host.url, &flaky).await.0, 200);
    // Never succeeds: 5 attempts (max_attempts), then failed + dead letter.
    let broken = scripted("broken", r#"{"fail":"retryable"}"#);
    assert_eq!(post_webhook(&host.url, &broken).await.0, 200);
    // Permanent: one attempt, failed, no dead letter.
    let refused = scripted("refused", r#"{"fail":"permanent"}"#);
    assert_eq!(post_webhook(&host.url, &refused).await.0, 200);

    let incidents = wait_for("three incidents settled", SETTLE, || async {
        let list = host.store.incidents(10).await.unwrap();
        let mut out = Vec::new();
        for i in &list {
            let d = host.store.incident_detail(&i.id).await.unwrap().unwrap();
            let terminal = matches!(d.incident.status.as_str(), "resolved" | "failed");
            let recorded = d.timeline.iter().filter(|e| e.kind == "action").count() == 2;
            if !(terminal && recorded) {
                return None;
            }
            out.push(d);
        }
        (out.len() == 3).then_some(out)
    })
    .await;
    let by_key = |k: &str| {
        incidents
            .iter()
            .find(|d| d.incident.dedup_key == k)
            .unwrap()
    };

    let flaky = by_key("flaky");
    assert_eq!(flaky.incident.status, "resolved");
    assert_eq!(flaky.actions[0].status, "completed");
    assert!(
        flaky.actions[0].attempts >= 2,
        "retried: {:?}",
        flaky.actions[0]
    );

    let broken = by_key("broken");
    assert_eq!(broken.incident.status, "failed");
    assert_eq!(
        (
            broken.actions[0].status.as_str(),
            broken.actions[0].attempts
        ),
        ("failed", 5)
    );
    assert!(
        broken.actions[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("gave up after 5 attempts"),
        "{:?}",
        broken.actions[0]
    );
    assert!(
        broken
            .timeline
            .iter()
            .any(|e| e.cause.contains("action failed") && e.cause.contains("after 5 attempt(s)")),
        "{:?}",
        broken.timeline
    );

    let refused = by_key("refused");
    assert_eq!(refused.incident.status, "failed");
    assert_eq!(
        (
            refused.actions[0].status.as_str(),
            refused.actions[0].attempts
        ),
        ("failed", 1)
    );

    let letters = host.get_json("/api/v1/dead-letters").await;
    let letters = letters["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "only the exhausted action: {letters:?}");
    assert_eq!(letters[0]["consumer"], "actions");
    assert_eq!(letters[0]["attempts"], 5);
    assert_eq!(
        host.store
            .job(Queue::Actions, &broken.actions[0].id)
            .await
            .unwrap()
            .unwrap()
            .status,
        "failed"
    );

    // Replay: the action runs again with a fresh budget (and, still broken,
    // fails into a second letter); a letter replays once.
    let id = letters[0]["id"].as_i64().unwrap();
    let replay = |id: i64| {
        host.post(&format!("/api/v1/dead-letters/{id}/replay"))
            .send()
    };
    assert_eq!(replay(id).await.unwrap().status(), 200);
    assert_eq!(replay(id).await.unwrap().status(), 409);
    let letters = wait_for(
        "the replayed action dead-lettered again",
        SETTLE,
        || async {
            let l = host.get_json("/api/v1/dead-letters").await;
            let l = l["dead_letters"].as_array().unwrap().clone();
            (l.len() == 2).then_some(l)
        },
    )
    .await;
    assert!(
        letters
            .iter()
            .any(|l| l["id"] == id && !l["replayed_at"].is_null()),
        "{letters:?}"
    );
    let job = host
        .store
        .job(Queue::Actions, &broken.actions[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((job.status.as_str(), job.attempts), ("failed", 5));
    // A rule-stage letter would be refused (409); none exists here.
    assert_eq!(replay(9_999).await.unwrap().status(), 404);
    host.stop().await;
}

#[tokio::test]
async fn actions_retry_with_backoff_then_fail_into_dead_letters_on_sqlite() {
    retries_and_dead_letters(Backend::Sqlite).await;
}

#[tokio::test]
async fn actions_retry_with_backoff_then_fail_into_dead_letters_on_postgres() {
    retries_and_dead_letters(Backend::Postgres).await;
}

/// A restart in the middle loses nothing and repeats nothing: the stages
/// resume from their stored offsets, and the inbox skips what was done.
#[tokio::test]
async fn a_restart_resumes_where_the_stages_left_off() {
    let host = Host::start_on(Backend::Sqlite).await;
    host.install_first_party("cooldown_secs = \"300\"\n").await;
    for service in ["a", "b", "c"] {
        let body = sample(
            "HighCPU",
            &[("service", service)],
            false,
            "2026-11-24T10:00:00Z",
            "",
        );
        assert_eq!(post_webhook(&host.url, &body).await.0, 200);
    }
    let host = host.restart().await;
    for service in ["d", "e"] {
        let body = sample(
            "HighCPU",
            &[("service", service)],
            false,
            "2026-11-24T10:00:00Z",
            "",
        );
        assert_eq!(post_webhook(&host.url, &body).await.0, 200);
    }
    let counts = wait_for(
        "five incidents, actions and notifications",
        SETTLE,
        || async {
            let c = host.store.counts().await.unwrap();
            (c.actions_completed == 5 && c.notifications_delivered == 5).then_some(c)
        },
    )
    .await;
    assert_eq!(
        (counts.incidents, counts.actions, counts.notifications),
        (5, 5, 5)
    );
    host.stop().await;
}

/// Generic events: CloudEvents in, stored once per (source, id), and
/// refused with the attribute named when malformed.
#[tokio::test]
async fn generic_events_are_stored_once_and_validated() {
    let host = Host::start_on(Backend::Sqlite).await;
    let post = |body: String| {
        let url = format!("{}/api/v1/events", host.url);
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .body(body)
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    let event =
        r#"{"specversion":"1.0","id":"42","source":"/disk","type":"disk.full","subject":"db-1"}"#;
    let (status, first) = post(event.into()).await;
    assert_eq!(
        (status, &first["duplicate"]),
        (202, &serde_json::json!(false))
    );
    let (status, again) = post(event.into()).await;
    assert_eq!(
        (status, &again["duplicate"]),
        (202, &serde_json::json!(true))
    );
    assert_eq!(first["id"], again["id"]);
    let (status, bad) =
        post(r#"{"specversion":"1.0","source":"/disk","type":"disk.full"}"#.into()).await;
    assert_eq!(status, 400);
    assert!(
        bad["error"].as_str().unwrap().contains("`id`: missing"),
        "{bad}"
    );
    let c = host.store.counts().await.unwrap();
    assert_eq!(c.events, 1);
    host.stop().await;
}

/// Poison in a batch: the rule stage reads 22 (on PostgreSQL 23) events in
/// one batch, and 20 of them are ordinary. Of the others, one is not an
/// event at all (unparseable payload), one makes its rule trap every time,
/// and on PostgreSQL one fails the batch's transaction on its data (a NUL
/// in a text column is a data exception there; SQLite stores it). The 20
/// commit; each poison one is dead-lettered with its reason; the one that
/// failed the transaction is retried alone first.
async fn poison_in_a_batch(backend: Backend) {
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let mut config = eventpulse_tests::test_config(dir.path());
    config.database_url = eventpulse_tests::database_url(backend, dir.path()).await;
    config.pipeline.enabled = false;
    std::fs::create_dir_all(&config.plugin_dir).unwrap();
    let host = Host::start_with(
        config.clone(),
        dir.clone(),
        eventpulse::runtime::Clock::system(),
    )
    .await;
    host.install("rule-scripted", "rule-scripted", "");

    // Ingest only: everything waits in the log for one batch.
    let mut body = scripted_alert("g0", &[("channel", "none")]);
    let template = body["alerts"][0].clone();
    let mut alerts = Vec::new();
    for i in 0..20 {
        let mut a = template.clone();
        a["labels"]["group"] = format!("g{i}").into();
        a["fingerprint"] = format!("ok{i:04}").into();
        alerts.push(a);
    }
    let mut trap = template.clone();
    trap["labels"]["group"] = "trap".into();
    trap["fingerprint"] = "trap0001".into();
    trap["annotations"]["panic"] = "poison".into();
    alerts.push(trap);
    if backend == Backend::Postgres {
        // Stored escaped in the alert's JSON, so ingest takes it; the rule
        // stage writes the action's name into the timeline as text.
        let mut nul = template.clone();
        nul["labels"]["group"] = "nul".into();
        nul["fingerprint"] = "nul00001".into();
        nul["annotations"]["action"] = "action-noop\u{0}".into();
        alerts.push(nul);
    }
    body["alerts"] = alerts.into();
    assert_eq!(post_webhook(&host.url, &body).await.0, 200);
    let mut tx = host.store.begin(Holder::Rules).await.unwrap();
    tx.append_raw("not-an-event", "alert.raised", "k", "{this is not json")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    host.stop().await;

    let mut config = config;
    config.pipeline.enabled = true;
    config.pipeline.event_attempts = 3;
    let host = Host::start_with(config, dir, eventpulse::runtime::Clock::system()).await;
    let expected_letters = if backend == Backend::Postgres { 3 } else { 2 };
    let letters = wait_for(
        "20 incidents and the poison dead-lettered",
        SETTLE,
        || async {
            let incidents = host.store.incidents(100).await.unwrap();
            let ok = incidents
                .iter()
                .filter(|i| i.dedup_key.starts_with('g'))
                .count();
            let letters = host.store.dead_letters(10).await.unwrap();
            (ok == 20 && letters.len() >= expected_letters).then_some(letters)
        },
    )
    .await;
    assert_eq!(letters.len(), expected_letters, "{letters:?}");
    let letter = |what: &str| {
        letters
            .iter()
            .find(|l| l.error.contains(what))
            .unwrap_or_else(|| panic!("no dead letter mentions `{what}`: {letters:?}"))
    };
    let unreadable = letter("key must be a string");
    assert_eq!(
        (unreadable.consumer.as_str(), unreadable.kind.as_str()),
        ("rules", "unreadable")
    );
    let trapped = letter("scripted to panic: poison");
    assert_eq!(trapped.consumer, "rules");
    assert!(
        trapped.error.starts_with("rule rule-scripted: trap"),
        "{trapped:?}"
    );
    if backend == Backend::Postgres {
        let nul = letter("gave up after 3 attempts");
        assert_eq!((nul.consumer.as_str(), nul.attempts), ("rules", 3));
    }
    let incidents = host.store.incidents(100).await.unwrap();
    let poisoned = |i: &eventpulse::store::Incident| {
        i.dedup_key == "trap" || (backend == Backend::Postgres && i.dedup_key == "nul")
    };
    assert!(
        !incidents.iter().any(poisoned),
        "no incident for a poison event: {incidents:?}"
    );
    host.stop().await;
}

#[tokio::test]
async fn poison_in_a_batch_is_isolated_and_dead_lettered_on_sqlite() {
    poison_in_a_batch(Backend::Sqlite).await;
}

#[tokio::test]
async fn poison_in_a_batch_is_isolated_and_dead_lettered_on_postgres() {
    poison_in_a_batch(Backend::Postgres).await;
}

/// A firing alert for group `group`, distinct from others of the group by
/// `fingerprint`.
fn in_group(group: &str, fingerprint: &str) -> serde_json::Value {
    let mut alert = scripted_alert(group, &[]);
    alert["alerts"][0]["fingerprint"] = fingerprint.into();
    alert
}

/// The value of the silenced-alerts counter for `mode`.
async fn silenced(host: &Host, mode: &str) -> f64 {
    let text = host.get_text("/metrics").await;
    let series = format!("eventpulse_alerts_silenced_total{{mode=\"{mode}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
        .unwrap_or(0.0)
}

/// Silences: a silenced firing alert is stored and counted and becomes no
/// incident, action or notification; the next one after the silence ends
/// does. A notification-only silence lets the action run, mutes the
/// notification and says so on the incident. Silences are listed and
/// expired through the API, which refuses what is not a silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silences_mute_alerts_or_only_their_notifications_until_they_end() {
    let host = Host::start_on(Backend::Sqlite).await;
    host.install("rule-scripted", "rule-scripted", "");
    host.install("action-noop", "action-noop", "");
    host.install_now("notifier-log", "notifier-log", "").await;
    let silence = |body: serde_json::Value| {
        let request = host.post("/api/v1/silences").json(&body);
        async move {
            let r = request.send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/silences", host.url))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "silences need the admin token");
    let (status, body) = silence(serde_json::json!({
        "matchers": ["group~\"quiet\""], "duration_secs": 60, "created_by": "ops", "comment": "x"
    }))
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("matchers"),
        "{body}"
    );

    // 1. Everything muted for three seconds.
    let (status, body) = silence(serde_json::json!({
        "matchers": ["group=\"quiet\"", "service=~\"svc|other\""], "duration_secs": 3,
        "created_by": "ops", "comment": "switch maintenance"
    }))
    .await;
    assert_eq!(status, 201, "{body}");
    let all_id = body["silence"]["id"].as_str().unwrap().to_owned();
    let ends_at = body["silence"]["ends_at"].as_i64().unwrap();
    assert_eq!(
        post_webhook(&host.url, &in_group("quiet", "q1")).await.0,
        200
    );
    wait_for("the alert silenced", SETTLE, || async {
        (silenced(&host, "all").await == 1.0).then_some(())
    })
    .await;
    let c = host.store.counts().await.unwrap();
    assert_eq!(
        (c.alerts, c.incidents, c.actions, c.notifications),
        (1, 0, 0, 0),
        "stored, nothing else: {c:?}"
    );
    // After it ends, the next alert is handled.
    let wait = ends_at - eventpulse::store::now_ms() + 200;
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
    assert_eq!(
        post_webhook(&host.url, &in_group("quiet", "q2")).await.0,
        200
    );
    host.newest_incident("an incident after the silence", SETTLE, |d| {
        d.incident.dedup_key == "quiet" && d.notifications.iter().any(|n| n.status == "delivered")
    })
    .await;

    // 2. Notifications only: the action runs, the notification is muted.
    let (status, body) = silence(serde_json::json!({
        "matchers": ["group=\"muted\""], "duration_secs": 600, "mode": "notifications",
        "created_by": "ops", "comment": "known issue"
    }))
    .await;
    assert_eq!(status, 201, "{body}");
    let muted_id = body["silence"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        post_webhook(&host.url, &in_group("muted", "m1")).await.0,
        200
    );
    let d = host
        .newest_incident("the muted incident remediated", SETTLE, |d| {
            d.incident.dedup_key == "muted"
                && d.actions.iter().any(|a| a.status == "completed")
                && d.incident.status == "resolved"
        })
        .await;
    assert!(d.notifications.is_empty(), "{:?}", d.notifications);
    let causes: Vec<&str> = d.timeline.iter().map(|e| e.cause.as_str()).collect();
    assert!(
        causes
            .iter()
            .any(|c| c.contains("1 notification(s) from rule-scripted muted")
                && c.contains(&muted_id)
                && c.contains("known issue")),
        "{causes:?}"
    );
    assert_eq!(silenced(&host, "notifications").await, 1.0);

    // 3. Listed, expired once, and what is not there is said so.
    let listed = host.get_json("/api/v1/silences").await;
    let ids: Vec<&str> = listed["silences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [muted_id.as_str()], "the ended one is not listed");
    let every = host.get_json("/api/v1/silences?all=true").await;
    assert_eq!(every["silences"].as_array().unwrap().len(), 2);
    let expire = |id: &str| {
        let request = reqwest::Client::new()
            .delete(format!("{}/api/v1/silences/{id}", host.url))
            .bearer_auth(eventpulse_tests::TOKEN);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(expire(&muted_id).await, 200);
    assert_eq!(expire(&muted_id).await, 409);
    assert_eq!(expire(&all_id).await, 409, "ended by its time");
    assert_eq!(expire("no-such-silence").await, 404);
    assert_eq!(
        post_webhook(&host.url, &in_group("muted", "m2")).await.0,
        200
    );
    host.newest_incident("notified once the silence is expired", SETTLE, |d| {
        d.incident.dedup_key == "muted" && d.notifications.iter().any(|n| n.status == "delivered")
    })
    .await;
    host.stop().await;
}

/// Verification: `rule-cpu-autoscale` with `verify_secs = 1` asks the host
/// to check its scale-out. Where the alert keeps firing, the timeline shows
/// the failed verification, the rule escalates (a critical notification)
/// and the (action, target) breaker counts it (threshold 1: open). Where
/// the alert resolves in time, the timeline says the mitigation worked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mitigation_that_does_not_resolve_its_alert_is_recorded_and_escalated() {
    let host = Host::start_on(Backend::Sqlite).await;
    host.install(
        "rule-cpu-autoscale",
        "rule-cpu-autoscale",
        "[config]\naction = \"action-noop\"\nchannels = \"notifier-log\"\ncooldown_secs = \"0\"\nresolve_on = \"alert\"\nverify_secs = \"1\"\n",
    );
    host.install(
        "action-noop",
        "action-noop",
        "[safety]\nbreaker_threshold = 1\n",
    );
    host.install_now("notifier-log", "notifier-log", "").await;
    let starts = "2026-11-24T10:00:00Z";
    let high = |service: &str, resolved: bool| {
        let ends = if resolved { "2026-11-24T10:05:00Z" } else { "" };
        sample(
            "HighCPU",
            &[("service", service), ("severity", "critical")],
            resolved,
            starts,
            ends,
        )
    };
    let incident_of = |service: &'static str| {
        let store = host.store.clone();
        move || {
            let store = store.clone();
            async move {
                for i in store.incidents(10).await.unwrap() {
                    if i.service == service {
                        return store.incident_detail(&i.id).await.unwrap();
                    }
                }
                None
            }
        }
    };

    // Resolves in time.
    assert_eq!(post_webhook(&host.url, &high("cool", false)).await.0, 200);
    wait_for("cool scaled out", SETTLE, || async {
        let d = incident_of("cool")().await?;
        d.actions
            .iter()
            .any(|a| a.status == "completed")
            .then_some(())
    })
    .await;
    assert_eq!(post_webhook(&host.url, &high("cool", true)).await.0, 200);

    // Keeps firing.
    assert_eq!(post_webhook(&host.url, &high("hot", false)).await.0, 200);
    let hot = wait_for("the failed verification escalated", SETTLE, || async {
        let d = incident_of("hot")().await?;
        let escalated = d
            .notifications
            .iter()
            .any(|n| n.status == "delivered" && n.target.contains("escalated"));
        let recorded = d.timeline.iter().any(|e| e.kind == "verification");
        (escalated && recorded).then_some(d)
    })
    .await;
    let causes: Vec<&str> = hot.timeline.iter().map(|e| e.cause.as_str()).collect();
    assert!(
        causes.iter().any(|c| c.contains(
            "mitigation did not resolve the alert: action-noop on hot completed, still firing after 1 s"
        )),
        "{causes:?}"
    );
    let breakers = host.get_json("/api/v1/breakers").await;
    let hot_breaker = breakers["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["plugin"] == "action-noop" && b["target"] == "hot")
        .cloned();
    assert_eq!(
        hot_breaker.map(|b| b["state"].clone()),
        Some(serde_json::json!("open")),
        "{breakers}"
    );

    let cool = wait_for("the verification passed", SETTLE, || async {
        let d = incident_of("cool")().await?;
        d.timeline
            .iter()
            .any(|e| e.kind == "verification")
            .then_some(d)
    })
    .await;
    let causes: Vec<&str> = cool.timeline.iter().map(|e| e.cause.as_str()).collect();
    assert!(
        causes.iter().any(|c| c.contains("mitigation verified")),
        "{causes:?}"
    );
    assert!(
        !cool
            .notifications
            .iter()
            .any(|n| n.target.contains("escalated")),
        "no escalation where the alert resolved"
    );
    assert!(
        host.store.timers().await.unwrap().is_empty(),
        "both fired once"
    );
    host.stop().await;
}

/// Durable timers in the store, on both databases: a newer timer with the
/// same (rule, key) replaces the older, a cancelled one never fires, and a
/// due one fires exactly once (its event appended, its row gone), however
/// often the timer task looks.
async fn timers_replace_cancel_and_fire_once(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let url = eventpulse_tests::database_url(backend, dir.path()).await;
    let store = eventpulse::store::Store::connect(&url).await.unwrap();
    let event = |id: &str| {
        let mut e = eventpulse_tests::alert_event(
            "HighCPU",
            eventpulse::model::AlertStatus::Firing,
            &[("service", "app")],
        );
        e.id = id.into();
        e.kind = "timer.fired".into();
        e.data = r#"{"rule":"r","key":"k","data":"d"}"#.into();
        e
    };
    let set = |key: &'static str, due: i64, id: &'static str| {
        let store = store.clone();
        async move {
            let mut tx = store.begin(Holder::Rules).await.unwrap();
            tx.set_timer("r", key, due, &event(id)).await.unwrap();
            tx.commit().await.unwrap();
        }
    };
    set("k", 1_000, "first").await;
    set("k", 5_000, "second").await;
    set("gone", 1_000, "cancelled").await;
    let mut tx = store.begin(Holder::Rules).await.unwrap();
    tx.cancel_timer("r", "gone").await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        store.timers().await.unwrap(),
        [("r".to_owned(), "k".to_owned(), 5_000)],
        "replaced, and the cancelled one is gone"
    );
    assert_eq!(
        store.fire_timers(4_999, 10).await.unwrap(),
        0,
        "not yet due"
    );
    assert_eq!(store.fire_timers(5_000, 10).await.unwrap(), 1);
    assert_eq!(store.fire_timers(9_000, 10).await.unwrap(), 0, "once");
    let fired: Vec<String> = store
        .outbox_read(&["timer.fired"], 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, payload)| {
            serde_json::from_str::<eventpulse::model::Event>(&payload)
                .unwrap()
                .id
        })
        .collect();
    assert_eq!(fired, ["second"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_replace_cancel_and_fire_once_on_sqlite() {
    timers_replace_cancel_and_fire_once(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_replace_cancel_and_fire_once_on_postgres() {
    timers_replace_cancel_and_fire_once(Backend::Postgres).await;
}

/// A counter or gauge series' value in `/metrics` (0 when absent).
async fn series(host: &Host, name_and_labels: &str) -> f64 {
    let text = host.get_text("/metrics").await;
    let prefix = format!("{name_and_labels} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
        .unwrap_or(0.0)
}

/// Approvals asked both ways: by the rule's decision (`rule-alert-route`'s
/// `require_approval`) and by the action plugin's `[safety]
/// approval_when` (target and incident severity). An action neither asks
/// for runs at once. One held action is approved from another store
/// connection, as `eventpulse approval approve` does from another process,
/// and runs; the other is rejected and never runs. The queue gauge and the
/// approval counter follow.
async fn approvals_hold_what_is_asked(backend: Backend) {
    let host = Host::start_on(backend).await;
    let route = r#"
[[config.routes]]
matchers = ['alertname="DiskFull"']
severity = "{{ labels.severity }}"
channels = { default = ["notifier-log"] }
actions = [
  { action = "action-noop", target = "asked", require_approval = true },
  { action = "action-noop", target = "free" },
  { action = "action-noop", target = "guarded" },
]
"#;
    host.install("rule-alert-route", "rule-alert-route", route);
    host.install(
        "action-noop",
        "action-noop",
        "[safety]\napproval_when = ['target=~\"guard.*\"', 'severity=\"critical\"']\napproval_timeout_secs = 600\n",
    );
    host.install_now("notifier-log", "notifier-log", "").await;
    let alert = sample(
        "DiskFull",
        &[("service", "db"), ("severity", "critical")],
        false,
        "2026-11-24T10:00:00Z",
        "",
    );
    let (status, body) = post_webhook(&host.url, &alert).await;
    assert_eq!(status, 200, "{body}");
    let d = host
        .newest_incident("the free action done, two held", SETTLE, |d| {
            let status = |t: &str| d.actions.iter().find(|a| a.target == t).map(|a| a.status);
            status("free").is_some_and(|s| s == "completed")
                && status("asked").is_some_and(|s| s == "awaiting_approval")
                && status("guarded").is_some_and(|s| s == "awaiting_approval")
                // (the timeline is read apart from the actions)
                && d.timeline.iter().filter(|e| e.kind == "approval").count() == 2
        })
        .await;
    let held = |t: &str| d.actions.iter().find(|a| a.target == t).unwrap().clone();
    let (asked, guarded) = (held("asked"), held("guarded"));
    assert_eq!(
        series(
            &host,
            "eventpulse_queue_jobs{queue=\"actions\",status=\"awaiting_approval\"}"
        )
        .await,
        2.0
    );
    let requested = "eventpulse_approvals_total{plugin=\"action-noop\",outcome=\"requested\"}";
    assert_eq!(series(&host, requested).await, 2.0);
    let causes: Vec<&str> = d
        .timeline
        .iter()
        .filter(|e| e.kind == "approval")
        .map(|e| e.cause.as_str())
        .collect();
    assert!(
        causes
            .iter()
            .any(|c| c.contains("asked by rule rule-alert-route"))
            && causes
                .iter()
                .any(|c| c.contains("asked by the [safety] of action-noop")),
        "{causes:?}"
    );

    // Approved from another connection (the CLI's path): this host's
    // executor is not woken, it finds the job on its own.
    let other = eventpulse::store::Store::connect(host.database_url())
        .await
        .unwrap();
    let waiting = eventpulse::pipeline::approvals::Waiting::of(&asked).unwrap();
    let ruling =
        |verdict, hash: Option<String>, by: &str| eventpulse::pipeline::approvals::Ruling {
            verdict,
            params_hash: hash,
            by: by.into(),
            reason: String::new(),
            via: "cli",
        };
    use eventpulse::pipeline::approvals::{RulingError, Verdict, rule};
    let metrics = eventpulse::telemetry::Metrics::disabled();
    let wrong = rule(
        &other,
        &metrics,
        &asked.id,
        &ruling(Verdict::Approve, Some(hash_of(&guarded)), "carol"),
    )
    .await;
    assert!(
        matches!(wrong, Err(RulingError::WrongHash(_))),
        "another action's hash: {wrong:?}"
    );
    let none = rule(
        &other,
        &metrics,
        &asked.id,
        &ruling(Verdict::Approve, None, "carol"),
    )
    .await;
    assert!(matches!(none, Err(RulingError::NoHash)), "{none:?}");
    let job = rule(
        &other,
        &metrics,
        &asked.id,
        &ruling(Verdict::Approve, Some(waiting.params_hash), "carol"),
    )
    .await
    .unwrap();
    assert_eq!(job.status, "pending");
    wait_for("the approved action ran", SETTLE, || async {
        let job = host.store.job(Queue::Actions, &asked.id).await.unwrap()?;
        (job.status == "completed").then_some(())
    })
    .await;

    let r = host
        .post(&format!("/api/v1/actions/{}/reject", guarded.id))
        .json(&serde_json::json!({"by": "dave", "reason": "not now"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["action"]["status"], "rejected");
    let r = host
        .post(&format!("/api/v1/actions/{}/reject", guarded.id))
        .json(&serde_json::json!({"by": "dave"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "ruled once");
    let r = host
        .post("/api/v1/actions/nope/approve")
        .json(&serde_json::json!({"by": "dave", "params_hash": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = host
        .post(&format!("/api/v1/actions/{}/approve", guarded.id))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // The rule hears that the rejected action never ran.
    wait_for("the rejection on the timeline", SETTLE, || async {
        let d = host.store.incident_detail(&d.incident.id).await.unwrap()?;
        let seen = d.timeline.iter().any(|e| {
            e.kind == "action"
                && e.cause.contains("guarded")
                && e.cause.contains("rejected by dave (token admin) via api")
        });
        seen.then_some(())
    })
    .await;
    let job = host
        .store
        .job(Queue::Actions, &guarded.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((job.status.as_str(), job.attempts), ("rejected", 0));
    // The approval counter of this process counts its own rulings.
    let rejected = "eventpulse_approvals_total{plugin=\"action-noop\",outcome=\"rejected\"}";
    assert_eq!(series(&host, rejected).await, 1.0);
    assert_eq!(
        series(
            &host,
            "eventpulse_queue_jobs{queue=\"actions\",status=\"awaiting_approval\"}"
        )
        .await,
        0.0
    );
    assert!(
        host.get_json("/api/v1/approvals").await["approvals"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    host.stop().await;
}

/// The params hash of a held action.
fn hash_of(job: &eventpulse::store::Job) -> String {
    eventpulse::pipeline::approvals::Waiting::of(job)
        .unwrap()
        .params_hash
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_hold_what_is_asked_on_sqlite() {
    approvals_hold_what_is_asked(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_hold_what_is_asked_on_postgres() {
    approvals_hold_what_is_asked(Backend::Postgres).await;
}

/// Retention, with every age at one second and the prune run as if a year
/// had passed: a resolved incident goes with its timeline, jobs, decisions
/// and resolved alert, and so do the outbox events every stage has
/// processed; an open incident keeps everything it refers to, and an
/// event no stage has processed yet (the pipeline was off when it came)
/// survives and is handled once the pipeline runs again. A dry run counts
/// the same rows and deletes none.
async fn retention_keeps_what_is_still_needed(backend: Backend) {
    let host = Host::start_on(backend).await;
    host.install_first_party("cooldown_secs = \"0\"\nresolve_on = \"alert\"\n")
        .await;
    let alert = |service: &str, resolved: bool, starts: &str| {
        let ends = if resolved { "2026-11-24T10:05:00Z" } else { "" };
        sample(
            "HighCPU",
            &[("service", service), ("severity", "critical")],
            resolved,
            starts,
            ends,
        )
    };
    let starts = "2026-11-24T10:00:00Z";
    post_webhook(&host.url, &alert("done", false, starts)).await;
    host.newest_incident("the first scale-out done", SETTLE, |d| {
        d.actions.iter().any(|a| a.status == "completed")
    })
    .await;
    post_webhook(&host.url, &alert("done", true, starts)).await;
    host.newest_incident("the first incident resolved", SETTLE, |d| {
        d.incident.status == "resolved" && d.actions.iter().all(|a| a.status == "completed")
    })
    .await;
    post_webhook(&host.url, &alert("open", false, starts)).await;
    let open = host
        .newest_incident("the second incident mitigating", SETTLE, |d| {
            d.incident.service == "open"
                && d.incident.status == "mitigating"
                && !d.actions.is_empty()
                && d.actions.iter().all(|a| a.status == "completed")
                && d.notifications.iter().all(|n| n.status == "delivered")
        })
        .await;
    // An incident opened and resolved after the open one: its decisions
    // come after the open incident's, which stay.
    post_webhook(&host.url, &alert("after", false, starts)).await;
    host.newest_incident("the third scale-out done", SETTLE, |d| {
        d.incident.service == "after" && d.actions.iter().any(|a| a.status == "completed")
    })
    .await;
    post_webhook(&host.url, &alert("after", true, starts)).await;
    host.newest_incident("the third incident resolved", SETTLE, |d| {
        d.incident.service == "after"
            && d.incident.status == "resolved"
            && d.actions.iter().all(|a| a.status == "completed")
    })
    .await;
    wait_for("every action finished", SETTLE, || async {
        let c = host.store.counts().await.unwrap();
        (c.actions_completed == 5).then_some(())
    })
    .await;
    let done = host.store.incidents(10).await.unwrap();
    let done = done
        .iter()
        .find(|i| i.service == "done")
        .unwrap()
        .id
        .clone();
    // `open`'s incident stays mitigating: its alert keeps firing.

    // An alert arriving while no stage runs.
    let host = host.restart_with(|c| c.pipeline.enabled = false).await;
    post_webhook(&host.url, &alert("late", false, starts)).await;
    let late_alert = host
        .store
        .outbox_after(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .rev()
        .find(|(_, kind, payload)| kind == "alert.raised" && payload.contains("late"))
        .expect("the late alert's event")
        .0;

    // Its history as it stands, with no stage running.
    let open = host
        .store
        .incident_detail(&open.incident.id)
        .await
        .unwrap()
        .unwrap();
    let mut retention = eventpulse::config::RetentionConfig::default();
    for age in [
        &mut retention.outbox_secs,
        &mut retention.inbox_secs,
        &mut retention.decisions_secs,
        &mut retention.audit_secs,
        &mut retention.incidents_secs,
        &mut retention.alerts_secs,
        &mut retention.kube_events_secs,
        &mut retention.dead_letters_secs,
        &mut retention.jobs_secs,
    ] {
        *age = 1;
    }
    retention.batch = 3; // several batches per table
    let feeds = eventpulse::store::Feeds::Embedded(eventpulse::pipeline::CONSUMERS);
    let later = eventpulse::store::now_ms() + 365 * 24 * 3600 * 1000;
    let before = host.store.counts().await.unwrap();
    let dry = host
        .store
        .prune(&retention, feeds, later, true)
        .await
        .unwrap();
    assert_eq!(
        host.store.counts().await.unwrap(),
        before,
        "a dry run deletes nothing"
    );
    let pruned = host
        .store
        .prune(&retention, feeds, later, false)
        .await
        .unwrap();
    assert_eq!(dry, pruned, "the dry run counted what the prune deleted");
    let count = |what: &str| pruned.iter().find(|(w, _)| *w == what).unwrap().1;
    assert_eq!(count("closed incidents"), 2, "{pruned:?}");
    assert_eq!(count("resolved alerts"), 2, "{pruned:?}");
    assert!(
        count("outbox events") > 0 && count("inbox rows") > 0 && count("decisions") > 0,
        "{pruned:?}"
    );

    assert!(
        host.store.incident_detail(&done).await.unwrap().is_none(),
        "the resolved incident went"
    );
    let kept = host
        .store
        .incident_detail(&open.incident.id)
        .await
        .unwrap()
        .expect("the open incident stays");
    assert_eq!(
        kept.timeline.len(),
        open.timeline.len(),
        "with its whole timeline"
    );
    assert_eq!(kept.actions.len(), open.actions.len());
    assert_eq!(kept.alerts.len(), 1, "and its firing alert");
    let outbox = host.store.outbox_after(0, 10_000).await.unwrap();
    assert!(
        outbox.iter().any(|(seq, _, _)| *seq == late_alert),
        "the unprocessed event stays"
    );
    // Every decision left is about the open incident, including those
    // made after its own (rows kept at the low end stop nothing).
    use sqlx::Connection as _;
    let mut db = sqlx::AnyConnection::connect(host.database_url())
        .await
        .unwrap();
    let left: Vec<Option<String>> = sqlx::query("SELECT incident_id FROM decisions_log")
        .fetch_all(&mut db)
        .await
        .unwrap()
        .iter()
        .map(|r| sqlx::Row::get(r, 0))
        .collect();
    assert!(!left.is_empty(), "the open incident's decisions stay");
    if backend == Backend::Postgres {
        // The tables it deleted from were vacuumed after it.
        let vacuumed: bool = sqlx::query(
            "SELECT last_vacuum IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'decisions_log'",
        )
        .fetch_one(&mut db)
        .await
        .map(|r| sqlx::Row::get(&r, 0))
        .unwrap();
        assert!(vacuumed, "decisions_log vacuumed after the prune");
    }
    assert!(
        left.iter()
            .all(|i| i.as_deref() == Some(open.incident.id.as_str())),
        "{left:?}"
    );
    let again = host
        .store
        .prune(&retention, feeds, later, false)
        .await
        .unwrap();
    assert!(
        again.iter().all(|(_, n)| *n == 0),
        "a second prune finds nothing: {again:?}"
    );

    // The pipeline back on: the late alert is handled, once.
    let host = host.restart_with(|c| c.pipeline.enabled = true).await;
    host.newest_incident("the late alert's incident", SETTLE, |d| {
        d.incident.service == "late"
    })
    .await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_what_is_still_needed_on_sqlite() {
    retention_keeps_what_is_still_needed(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_what_is_still_needed_on_postgres() {
    retention_keeps_what_is_still_needed(Backend::Postgres).await;
}

/// A fresh PostgreSQL store holding an open incident for each of `ids`
/// (dedup key `key-<id>`).
async fn store_with_open_incidents(ids: &[&str]) -> eventpulse::store::Store {
    use eventpulse::model::{Incident, IncidentStatus, Severity};
    let dir = tempfile::tempdir().unwrap();
    let url = eventpulse_tests::database_url(Backend::Postgres, dir.path()).await;
    let store = eventpulse::store::Store::connect(&url).await.unwrap();
    let mut tx = store.begin(Holder::Rules).await.unwrap();
    for id in ids {
        let incident = Incident {
            id: (*id).into(),
            dedup_key: format!("key-{id}"),
            title: "t".into(),
            service: "s".into(),
            severity: Severity::Critical,
            status: IncidentStatus::Open,
            summary: String::new(),
            rule: "r".into(),
            trace_id: String::new(),
            opened_at: 1,
            updated_at: 1,
            closed_at: None,
            last_notified_at: None,
            acknowledged_by: None,
            acknowledged_at: None,
        };
        tx.insert_incident(&incident).await.unwrap();
    }
    tx.commit().await.unwrap();
    store
}

/// Scale-out on PostgreSQL: a batch reads its incidents once and writes its
/// changes at commit, guarded by the status it read. If another instance
/// moved one of them in between, the commit fails as a conflict (a
/// transient error: the pipeline retries the batch) and nothing of the
/// batch is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_changed_under_a_batch_fails_it_as_a_conflict() {
    use eventpulse::model::IncidentStatus;
    let store = store_with_open_incidents(&["a", "b"]).await;

    let (open, mitigating, resolved) = (
        IncidentStatus::Open,
        IncidentStatus::Mitigating,
        IncidentStatus::Resolved,
    );
    let mut batch = store.begin(Holder::Rules).await.unwrap();
    batch.prefetch_incidents(&["a", "b"], &[]).await.unwrap();
    // Another instance resolves `a` meanwhile.
    let mut other = store.begin(Holder::Rules).await.unwrap();
    assert!(
        other
            .set_incident_status("a", open, resolved)
            .await
            .unwrap()
    );
    other.commit().await.unwrap();
    assert!(
        batch
            .set_incident_status("a", open, mitigating)
            .await
            .unwrap()
    );
    assert!(
        batch
            .set_incident_status("b", open, mitigating)
            .await
            .unwrap()
    );
    let err = batch.commit().await.expect_err("a changed under the batch");
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("conflict"), "{err}");

    let mut tx = store.begin(Holder::Rules).await.unwrap();
    let a = tx.incident("a").await.unwrap().unwrap();
    let b = tx.incident("b").await.unwrap().unwrap();
    assert_eq!(
        (a.status, b.status),
        (resolved, open),
        "b rolled back with the batch"
    );
}

/// On PostgreSQL two stages can hold one incident at once (READ COMMITTED,
/// no row lock): the rule stage reads it, the incident stage notes a
/// delivery and commits, then the rule stage moves it. The move must not
/// write back the delivery time it read before, nor undo an operator's
/// acknowledgement of an incident it only noted a delivery on. (Both were
/// lost before: CI once saw an incident resolved with its delivered
/// notification's time gone.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_writes_back_only_what_it_changed_on_postgres() {
    use eventpulse::model::IncidentStatus;
    let store = store_with_open_incidents(&["a", "b"]).await;

    let mut batch = store.begin(Holder::Rules).await.unwrap();
    batch.prefetch_incidents(&["a", "b"], &[]).await.unwrap();
    // Meanwhile a notification about `a` is delivered, and an operator
    // acknowledges `b`.
    let mut other = store.begin(Holder::Rules).await.unwrap();
    other.set_last_notified("a", 42).await.unwrap();
    other.commit().await.unwrap();
    assert!(matches!(
        store.acknowledge("b", Some("ops")).await.unwrap(),
        eventpulse::store::Acknowledged::Done(_)
    ));
    // The batch moves `a` and notes a delivery about `b`.
    assert!(
        batch
            .set_incident_status("a", IncidentStatus::Open, IncidentStatus::Mitigating)
            .await
            .unwrap()
    );
    batch.set_last_notified("b", 50).await.unwrap();
    batch.commit().await.unwrap();

    let mut tx = store.begin(Holder::Rules).await.unwrap();
    let a = tx.incident("a").await.unwrap().unwrap();
    let b = tx.incident("b").await.unwrap().unwrap();
    assert_eq!(
        (a.status, a.last_notified_at),
        (IncidentStatus::Mitigating, Some(42))
    );
    assert_eq!(
        (b.status, b.last_notified_at, b.acknowledged_by.as_deref()),
        (IncidentStatus::Open, Some(50), Some("ops"))
    );
    assert!(b.acknowledged_at.is_some());
}
