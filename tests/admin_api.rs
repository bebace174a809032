//! The admin API over HTTP on a real listener: bearer auth and scopes
//! over every route, listing, the paged lists and their filters,
//! acknowledgement, enable/disable persisted across restarts, reload, dry
//! runs, and errors that say what went wrong.

mod console;

use std::collections::HashSet;
use std::time::Duration;

use eventpulse::api::{Guard, routes};
use eventpulse::model::{AlertStatus, Incident, IncidentStatus, Severity};
use eventpulse::store::Holder;
use eventpulse_tests::{
    Backend, Host, READ_TOKEN, TOKEN, alert_event, post_webhook, scripted_alert, wait_for,
};

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

/// Every route the router serves (its own list, `api::routes`), asked
/// with no token, a wrong one, the read token, the admin token and the
/// ingest token: each answers as its guard says. A route added without a
/// guard, or to the router but not the list, fails here.
#[tokio::test]
async fn every_route_answers_each_token_as_its_guard_says() {
    const INGEST: &str = "test-ingest-token";
    let host = Host::start()
        .await
        .restart_with(|c| c.ingest.token = Some(INGEST.to_owned().into()))
        .await;
    // Redirects are answers here (the console sends a GET without a
    // session to its login page).
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let all: Vec<_> = routes().collect();
    assert!(all.len() >= 30, "{} routes", all.len());
    println!("{} routes, each asked with 5 credentials", all.len());
    let mut seen = HashSet::new();
    for route in &all {
        assert!(
            seen.insert((route.method, route.path)),
            "listed twice: {route:?}"
        );
        let path = route
            .path
            .replace("{name}", "no-such-plugin")
            .replace("{id}", "0190c000-0000-7000-8000-000000000000");
        let url = format!("{}{path}", host.url);
        let ask = |token: Option<&str>| {
            let mut r = client
                .request(route.method.parse().unwrap(), &url)
                .header("content-type", "application/json")
                .body("{}");
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            async move {
                let r = r.send().await.unwrap();
                let status = r.status().as_u16();
                (status, r.text().await.unwrap())
            }
        };
        let wrong = format!("{TOKEN}x");
        let answers = [
            ("no token", ask(None).await),
            ("a wrong token", ask(Some(&wrong)).await),
            ("the read token", ask(Some(READ_TOKEN)).await),
            ("the admin token", ask(Some(TOKEN)).await),
            ("the ingest token", ask(Some(INGEST)).await),
        ];
        let is_get = route.method == "GET";
        for (who, (status, body)) in &answers {
            let want: &dyn Fn(u16) -> bool = match (route.guard, *who) {
                (Guard::Scoped, "the admin token") => &|s| s != 401 && s != 403,
                (Guard::Scoped, "the read token") if is_get => &|s| s != 401 && s != 403,
                (Guard::Scoped, "the read token") => &|s| s == 403,
                (Guard::Scoped, _) => &|s| s == 401,
                (Guard::Ingest, "the ingest token") => &|s| s != 401 && s != 403,
                (Guard::Ingest, _) => &|s| s == 401,
                (Guard::Metrics, "the read token" | "the admin token") => &|s| s == 200,
                (Guard::Metrics, _) => &|s| s == 401,
                // No signature in the query: refused whatever the token.
                (Guard::SignedLink, _) => &|s| s == 400 || s == 403,
                // No console session: a GET is sent to log in, a POST
                // refused, whatever bearer token comes with it.
                (Guard::Session, _) if is_get => &|s| s == 303,
                (Guard::Session, _) => &|s| s == 403,
                (Guard::Open, _) if route.path == "/" => &|s| s == 303,
                // The login form wants a form body, not this JSON one.
                (Guard::Open, _) if !is_get => &|s| s == 415,
                (Guard::Open, _) => &|s| s == 200,
            };
            assert!(
                want(*status),
                "{} {} with {who}: {status} {body}",
                route.method,
                route.path
            );
            // Served by the router, not its fallback: a 404 or 405 here
            // would mean the list names a route the router lacks.
            if *status == 404 {
                assert!(
                    !body.contains("no such route"),
                    "{} {}: {body}",
                    route.method,
                    route.path
                );
                assert!(
                    body.contains("\"error\""),
                    "{} {}: {body}",
                    route.method,
                    route.path
                );
            }
            assert_ne!(*status, 405, "{} {}", route.method, route.path);
        }
        if route.guard == Guard::Scoped && !is_get {
            let (_, body) = &answers[2].1;
            assert!(
                body.contains("token `viewer` has the `read` scope"),
                "the refusal names the token and scope: {body}"
            );
        }
    }
}

/// Insert `n` incidents straight into the store: statuses, services and
/// severities in rotation, one per ms of `opened_at`.
async fn seed_incidents(host: &Host, n: usize) -> Vec<Incident> {
    let statuses = [
        IncidentStatus::Open,
        IncidentStatus::Mitigating,
        IncidentStatus::Resolved,
        IncidentStatus::Failed,
    ];
    let severities = [Severity::Critical, Severity::Warning, Severity::Info];
    let mut made = Vec::new();
    let mut tx = host.store.begin(Holder::Rules).await.unwrap();
    for k in 0..n {
        let status = statuses[k % 4];
        let i = Incident {
            id: uuid::Uuid::now_v7().to_string(),
            dedup_key: format!("seed-{k}"),
            title: format!("seeded {k}"),
            service: format!("svc-{}", k % 5),
            severity: severities[k % 3],
            status,
            summary: String::new(),
            rule: if k % 2 == 0 { "rule-a" } else { "rule-b" }.into(),
            trace_id: String::new(),
            opened_at: 1_000_000 + k as i64,
            updated_at: 1_000_000 + k as i64,
            closed_at: status.is_closed().then_some(1_000_000 + k as i64),
            last_notified_at: None,
            acknowledged_by: None,
            acknowledged_at: None,
        };
        tx.insert_incident(&i).await.unwrap();
        made.push(i);
    }
    tx.commit().await.unwrap();
    made
}

/// Every page of `path` (which has a `?`), `limit` at a time.
async fn all_pages(host: &Host, path: &str, list: &str, limit: u32) -> (Vec<String>, usize) {
    let (mut ids, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
    loop {
        let mut url = format!("{path}&limit={limit}");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let r = host.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        let body: serde_json::Value = r.json().await.unwrap();
        let items = body[list].as_array().unwrap();
        assert!(items.len() <= limit as usize);
        // Decision ids are numbers, the others strings.
        ids.extend(items.iter().map(|i| match i["id"].as_str() {
            Some(s) => s.to_owned(),
            None => i["id"].to_string(),
        }));
        pages += 1;
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return (ids, pages),
        }
    }
}

async fn pages_through_incidents(backend: Backend) {
    let host = Host::start_on(backend).await;
    let made = seed_incidents(&host, 500).await;
    let newest_first = |keep: &dyn Fn(&Incident) -> bool| -> Vec<String> {
        let mut ids: Vec<String> = made
            .iter()
            .filter(|i| keep(i))
            .map(|i| i.id.clone())
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids
    };
    let cases: Vec<(String, Vec<String>)> = vec![
        ("".into(), newest_first(&|_| true)),
        (
            "status=open".into(),
            newest_first(&|i| i.status == IncidentStatus::Open),
        ),
        (
            "status=mitigating".into(),
            newest_first(&|i| i.status == IncidentStatus::Mitigating),
        ),
        (
            "status=resolved".into(),
            newest_first(&|i| i.status == IncidentStatus::Resolved),
        ),
        (
            "status=failed".into(),
            newest_first(&|i| i.status == IncidentStatus::Failed),
        ),
        (
            "status=open,mitigating".into(),
            newest_first(&|i| !i.status.is_closed()),
        ),
        (
            "service=svc-3&severity=warning".into(),
            newest_first(&|i| i.service == "svc-3" && i.severity == Severity::Warning),
        ),
        (
            "rule=rule-b&status=failed".into(),
            newest_first(&|i| i.rule == "rule-b" && i.status == IncidentStatus::Failed),
        ),
        (
            "since=1000100&until=1000200".into(),
            newest_first(&|i| (1_000_100..1_000_200).contains(&i.opened_at)),
        ),
    ];
    for (filter, want) in cases {
        let (got, pages) = all_pages(
            &host,
            &format!("/api/v1/incidents?{filter}"),
            "incidents",
            37,
        )
        .await;
        let unique: HashSet<&String> = got.iter().collect();
        assert_eq!(unique.len(), got.len(), "{filter}: a repeat across pages");
        assert_eq!(got, want, "{filter}: not every incident, in order, once");
        assert_eq!(pages, want.len().div_ceil(37).max(1), "{filter}");
    }
    for (query, says) in [
        ("status=closed", "status: unknown value `closed`"),
        ("severity=huge", "severity: unknown value `huge`"),
        ("limit=0", "limit must be"),
        ("limit=5000", "limit must be"),
        ("since=yesterday", "since: `yesterday` is not"),
        ("cursor=nonsense", "invalid cursor"),
    ] {
        let r = host
            .get(&format!("/api/v1/incidents?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{query}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains(says),
            "{query}: {body}"
        );
    }
}

#[tokio::test]
async fn five_hundred_incidents_page_through_every_filter_on_sqlite() {
    pages_through_incidents(Backend::Sqlite).await;
}

#[tokio::test]
async fn five_hundred_incidents_page_through_every_filter_on_postgres() {
    pages_through_incidents(Backend::Postgres).await;
}

/// One more alert of group `ack` (instance `n`): another alert instance
/// the scripted rule attaches to the same incident, asking again for an
/// action that keeps failing (so the incident stays mitigating) and a
/// notification.
fn ack_alert(n: u32) -> serde_json::Value {
    let mut body = scripted_alert(
        "ack",
        &[
            ("action", "action-flaky"),
            ("params", r#"{"fail": "retryable"}"#),
        ],
    );
    body["alerts"][0]["labels"]["instance"] = format!("i-{n}").into();
    body["alerts"][0]["fingerprint"] = format!("{:016x}", 0xac00 + n).into();
    body
}

/// Acknowledging an incident records who, mutes repeat notifications
/// while its status stays, and ends when taken back or when the status
/// changes; the lists show its alerts, actions, notifications and the
/// decisions behind them, with the rule's version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgement_mutes_repeats_until_taken_back_and_lists_show_it_all() {
    let host = Host::start_on(Backend::Sqlite)
        .await
        .restart_with(|c| c.pipeline.max_attempts = 100_000)
        .await;
    host.install("rule-scripted", "rule-scripted", "");
    host.install(
        "action-flaky",
        "action-flaky",
        "[safety]\nbreaker_threshold = 1000000\n",
    );
    host.install_now("notifier-log", "notifier-log", "").await;
    let settle = Duration::from_secs(20);
    assert_eq!(post_webhook(&host.url, &ack_alert(1)).await.0, 200);
    let d = host
        .newest_incident("incident notified", settle, |d| {
            d.incident.status == "mitigating" && d.notifications.len() == 1
        })
        .await;
    let id = d.incident.id.clone();
    let ack = |token: &str, body: serde_json::Value| {
        reqwest::Client::new()
            .post(format!("{}/api/v1/incidents/{id}/acknowledge", host.url))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    assert_eq!(
        ack(READ_TOKEN, serde_json::json!({}))
            .await
            .unwrap()
            .status(),
        403
    );
    let r = ack(TOKEN, serde_json::json!({"by": "erin"})).await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body["incident"]["acknowledged_by"], "erin (token admin)",
        "{body}"
    );
    assert!(body["incident"]["acknowledged_at"].as_i64().is_some());

    // Acknowledged: the next alert is attached, its notification muted.
    assert_eq!(post_webhook(&host.url, &ack_alert(2)).await.0, 200);
    let muted = "1 notification(s) from rule-scripted muted: acknowledged by erin (token admin)";
    let d = host
        .newest_incident("the repeat muted", settle, |d| {
            d.timeline.iter().any(|e| e.cause == muted)
        })
        .await;
    assert_eq!(d.notifications.len(), 1, "no new notification job");
    assert!(
        d.timeline
            .iter()
            .any(|e| e.kind == "acknowledgement" && e.cause.starts_with("acknowledged by erin")),
        "{:?}",
        d.timeline
    );

    // Taken back: the next alert notifies again.
    let r = reqwest::Client::new()
        .delete(format!("{}/api/v1/incidents/{id}/acknowledge", host.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["incident"]["acknowledged_by"].is_null(), "{body}");
    assert_eq!(post_webhook(&host.url, &ack_alert(3)).await.0, 200);
    host.newest_incident("notified again", settle, |d| d.notifications.len() == 2)
        .await;

    // The lists, filtered to this incident.
    let alerts = host
        .get_json(&format!("/api/v1/alerts?incident={id}"))
        .await;
    let names: Vec<&str> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["labels"]["instance"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["i-3", "i-2", "i-1"], "newest first: {alerts}");
    assert_eq!(alerts["alerts"][0]["status"], "firing");
    let actions = host
        .get_json(&format!(
            "/api/v1/actions?incident={id}&plugin=action-flaky"
        ))
        .await;
    assert_eq!(actions["actions"].as_array().unwrap().len(), 3, "{actions}");
    assert!(actions["actions"][0]["created_at"].as_i64().is_some());
    let none = host
        .get_json(&format!("/api/v1/actions?incident={id}&status=completed"))
        .await;
    assert_eq!(none["actions"].as_array().unwrap().len(), 0, "{none}");
    let notes = host
        .get_json(&format!("/api/v1/notifications?incident={id}"))
        .await;
    assert_eq!(
        notes["notifications"].as_array().unwrap().len(),
        2,
        "{notes}"
    );
    let decisions = host
        .get_json(&format!(
            "/api/v1/decisions?incident={id}&rule=rule-scripted"
        ))
        .await;
    let list = decisions["decisions"].as_array().unwrap();
    assert_eq!(list.len(), 3, "{decisions}");
    for d in list {
        assert_eq!(d["event_kind"], "alert.raised");
        assert!(
            d["rule_version"].as_str().is_some_and(|v| !v.is_empty()),
            "{d}"
        );
        assert_eq!(d["rule_digest"].as_str().map(str::len), Some(16), "{d}");
        assert_eq!(
            d["decision"]["notifications"].as_array().unwrap().len(),
            1,
            "{d}"
        );
        assert_eq!(d["decision"]["actions"][0]["action"], "action-flaky", "{d}");
    }
    let paged = host
        .get_json(&format!("/api/v1/decisions?incident={id}&limit=2"))
        .await;
    let cursor = paged["next_cursor"].as_str().unwrap();
    let rest = host
        .get_json(&format!(
            "/api/v1/decisions?incident={id}&limit=2&cursor={cursor}"
        ))
        .await;
    assert_eq!(rest["decisions"].as_array().unwrap().len(), 1, "{rest}");
    assert!(rest["next_cursor"].is_null());

    // A status change ends an acknowledgement; a closed incident takes none.
    assert_eq!(
        ack(TOKEN, serde_json::json!({})).await.unwrap().status(),
        200
    );
    let mut resolved = ack_alert(1);
    resolved["alerts"][0]["status"] = "resolved".into();
    resolved["alerts"][0]["endsAt"] = "2026-11-24T10:05:00Z".into();
    assert_eq!(post_webhook(&host.url, &resolved).await.0, 200);
    let d = host
        .newest_incident("resolved", settle, |d| d.incident.status == "resolved")
        .await;
    assert!(d.incident.acknowledged_by.is_none(), "{:?}", d.incident);
    let r = ack(TOKEN, serde_json::json!({})).await.unwrap();
    assert_eq!(r.status(), 409);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("is resolved"),
        "{body}"
    );
    let missing = host
        .post("/api/v1/incidents/0190c000-0000-7000-8000-000000000000/acknowledge")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

/// `GET /api/v1/openapi.json` is OpenAPI 3.1 and describes exactly the
/// router's token-guarded routes, each with its security scheme and the
/// shared error shape.
#[tokio::test]
async fn the_openapi_document_describes_every_guarded_route() {
    let host = Host::start().await;
    let r = host
        .get("/api/v1/openapi.json")
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let doc: serde_json::Value = r.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert!(doc["components"]["schemas"]["ErrorBody"]["properties"]["error"].is_object());
    let mut described = HashSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            described.insert((method.to_uppercase(), path.clone()));
            let scheme = op["security"][0]
                .as_object()
                .and_then(|s| s.keys().next().cloned());
            let route = routes()
                .find(|r| r.path == path && r.method.eq_ignore_ascii_case(method))
                .unwrap_or_else(|| panic!("{method} {path} is described but not routed"));
            let want = match route.guard {
                Guard::Scoped => "api_token",
                Guard::Ingest => "ingest_token",
                g => panic!("{method} {path}: {g:?} routes are not in the document"),
            };
            assert_eq!(scheme.as_deref(), Some(want), "{method} {path}");
            assert!(
                op["responses"]["401"].is_object(),
                "{method} {path}: no 401"
            );
        }
    }
    for r in routes().filter(|r| matches!(r.guard, Guard::Scoped | Guard::Ingest)) {
        assert!(
            described.contains(&(r.method.to_owned(), r.path.to_owned())),
            "{} {} is routed but not described",
            r.method,
            r.path
        );
    }
}

/// A stand-in HTTP endpoint that answers every request with the JSON
/// `body` and counts them.
async fn counting_server(
    body: &'static str,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let counted = counted.clone();
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body,
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr.to_string(), hits)
}

fn threshold_manifest(threshold: u32, probe: &str) -> String {
    format!(
        "[grants]\nhttp = {{ allow = [\"{probe}\"] }}\n\n[grants.docker]\nselector = {{ test = \"threshold\" }}\n\n[config]\nthreshold = \"{threshold}\"\n"
    )
}

/// The value of event `k` of 200: spread over 0..=100.
fn value_of(k: u32) -> u32 {
    (k * 37) % 101
}

/// 200 varied alerts go through `rule-threshold` at 80; replaying a
/// candidate at 90 (a component sent in the request, not installed) lists
/// exactly the events above 80, with the fields that differ, and the
/// candidate's HTTP call is refused: the stand-in it posts to hears
/// nothing during the replay. Replaying the installed rule itself finds
/// no difference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_diffs_a_candidate_against_what_was_decided_and_touches_nothing() {
    use std::sync::atomic::Ordering;
    // The Docker Engine is a stand-in that counts requests (its container
    // list answers `[]`): the real one keeps no count to read.
    let (probe, hits) = counting_server("{}").await;
    let (engine, engine_hits) = counting_server("[]").await;
    let host = Host::start_on(Backend::Sqlite)
        .await
        .restart_with(|c| c.runtime.docker_host = format!("tcp://{engine}"))
        .await;
    host.install("action-noop", "action-noop", "");
    host.install("notifier-log", "notifier-log", "");
    host.install_now(
        "rule-threshold",
        "rule-threshold",
        &threshold_manifest(80, &probe),
    )
    .await;
    let mut value_by_fingerprint = std::collections::HashMap::new();
    for k in 0..200u32 {
        let mut body = eventpulse::ingest::alertmanager::sample(
            "Load",
            &[
                ("test", "threshold"),
                ("service", &format!("svc-{}", k % 7)),
                ("n", &k.to_string()),
            ],
            false,
            "2026-11-24T10:00:00Z",
            "",
        );
        body["alerts"][0]["annotations"]["value"] = value_of(k).to_string().into();
        if k % 20 == 0 {
            body["alerts"][0]["annotations"]["probe"] = format!("http://{probe}/probe").into();
        }
        let fp = body["alerts"][0]["fingerprint"]
            .as_str()
            .unwrap()
            .to_owned();
        value_by_fingerprint.insert(fp, value_of(k));
        assert_eq!(post_webhook(&host.url, &body).await.0, 200);
    }
    let probes = 10;
    let logged = wait_for("200 decisions logged", Duration::from_secs(60), || async {
        let (ids, _) = all_pages(
            &host,
            "/api/v1/decisions?rule=rule-threshold",
            "decisions",
            1000,
        )
        .await;
        // One per alert, and one per action outcome (heard by the rule
        // that asked).
        let c = host.store.counts().await.unwrap();
        let settled = c.actions > 0 && c.actions_completed == c.actions;
        (settled && ids.len() as i64 == 200 + c.actions).then_some(ids)
    })
    .await;
    let decided = logged.len() as u64;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        probes,
        "the live rule's probes arrived"
    );
    let engine_calls = engine_hits.load(Ordering::SeqCst);
    assert!(
        engine_calls >= probes,
        "the live rule listed containers: {engine_calls}"
    );

    // Which events are above 80, from the stored alerts.
    let mut above = HashSet::new();
    let events: std::collections::HashMap<String, eventpulse::model::Event> = host
        .store
        .outbox_after(0, 100_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, kind, _)| kind == "alert.raised")
        .map(|(_, _, p)| {
            let e: eventpulse::model::Event = serde_json::from_str(&p).unwrap();
            (e.id.clone(), e)
        })
        .collect();
    for d in host
        .get_json("/api/v1/decisions?rule=rule-threshold&limit=1000")
        .await["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["event_kind"] == "alert.raised")
    {
        let event = d["event_id"].as_str().unwrap().to_owned();
        let alert = events[&event].alert.as_ref().unwrap();
        let v = value_by_fingerprint[&alert.fingerprint];
        if v > 80 {
            above.insert((event, v));
        }
    }
    assert!(
        above.len() > 20 && above.len() < 100,
        "{} above 80",
        above.len()
    );

    let candidate = std::fs::read(eventpulse_tests::component("rule-threshold")).unwrap();
    use base64::Engine as _;
    let r = host
        .post("/api/v1/replay")
        .json(&serde_json::json!({
            "rule": "rule-threshold-v2",
            "against": "rule-threshold",
            "since": "1h",
            "component_base64": base64::engine::general_purpose::STANDARD.encode(&candidate),
            "manifest": threshold_manifest(90, &probe),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: serde_json::Value = r.json().await.unwrap();
    let summary = &answer["summary"];
    println!(
        "candidate (threshold 90) against v1 (80): {summary}; {} events above 80; \
         probe hits {} of {probes} live, engine calls {} of {engine_calls} live",
        above.len(),
        hits.load(Ordering::SeqCst),
        engine_hits.load(Ordering::SeqCst)
    );
    assert_eq!(summary["replayed"], decided, "{summary}");
    assert_eq!(summary["different"], above.len(), "{summary}");
    assert_eq!(summary["same"], decided - above.len() as u64, "{summary}");
    assert_eq!(summary["errors"], 0, "{summary}");
    assert_eq!(
        summary["refused_calls"],
        2 * probes,
        "http and docker: {summary}"
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        probes,
        "the replay posted nothing"
    );
    assert_eq!(
        engine_hits.load(Ordering::SeqCst),
        engine_calls,
        "nor asked the engine anything"
    );
    let diffs = answer["differences"].as_array().unwrap();
    let listed: HashSet<String> = diffs
        .iter()
        .map(|d| d["event_id"].as_str().unwrap().to_owned())
        .collect();
    let want: HashSet<String> = above.iter().map(|(e, _)| e.clone()).collect();
    assert_eq!(listed, want, "exactly the events above 80");
    for d in diffs {
        let id = d["event_id"].as_str().unwrap();
        let v = above.iter().find(|(e, _)| e == id).unwrap().1;
        let fields: Vec<&str> = d["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["field"].as_str().unwrap())
            .collect();
        assert_eq!(
            fields,
            ["incident", "actions", "notifications"],
            "value {v}: {d}"
        );
        let incident = &d["changes"][0];
        if v <= 90 {
            assert!(
                incident["now"].is_null() && !incident["then"].is_null(),
                "value {v}: {d}"
            );
        } else {
            let text = incident.to_string();
            assert!(
                text.contains("critical") || text.contains("Critical"),
                "value {v}: {d}"
            );
            assert!(!incident["now"].is_null(), "value {v}: {d}");
        }
    }

    let r = host
        .post("/api/v1/replay")
        .json(&serde_json::json!({ "rule": "rule-threshold", "since": "1h" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let same: serde_json::Value = r.json().await.unwrap();
    println!("v1 replayed over itself: {}", same["summary"]);
    assert_eq!(same["summary"]["replayed"], decided, "{same}");
    assert_eq!(same["summary"]["different"], 0, "{same}");
    assert_eq!(hits.load(Ordering::SeqCst), probes, "still nothing posted");

    for (body, status) in [
        (
            serde_json::json!({ "rule": "no-such-rule", "since": "1h" }),
            404,
        ),
        (
            serde_json::json!({ "rule": "action-noop", "since": "1h" }),
            422,
        ),
        (
            serde_json::json!({ "rule": "rule-threshold", "since": "last week" }),
            400,
        ),
        (serde_json::json!({ "rule": "rule-threshold" }), 400),
    ] {
        let r = host
            .post("/api/v1/replay")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{body}");
    }
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/replay", host.url))
        .bearer_auth(READ_TOKEN)
        .json(&serde_json::json!({ "rule": "rule-threshold", "since": "1h" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a replay needs the admin scope");
}

/// schemathesis (PyPI: `SCHEMATHESIS`, else `schemathesis` on `PATH`;
/// `.ci/run` installs it) against a live host holding data: an incident
/// with its alert, action, notification and decisions, a silence, the
/// first-party plugins. Every operation of `/api/v1/openapi.json` is
/// called with generated requests, valid and invalid, and every check
/// runs: no 5xx, and every status, content type, header and body as the
/// document says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_wrong_with_the_api() {
    let host = Host::start_on(Backend::Sqlite).await;
    host.install_first_party("cooldown_secs = \"300\"\n").await;
    let firing = eventpulse::ingest::alertmanager::sample(
        "HighCPU",
        &[("service", "app"), ("severity", "critical")],
        false,
        "2026-11-24T10:00:00Z",
        "",
    );
    assert_eq!(post_webhook(&host.url, &firing).await.0, 200);
    host.newest_incident("an incident", Duration::from_secs(30), |d| {
        !d.actions.is_empty() && !d.notifications.is_empty()
    })
    .await;
    let r = host
        .post("/api/v1/silences")
        .json(&serde_json::json!({"matchers": ["service=\"db\""], "duration_secs": 600, "comment": "kept"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let bin = std::env::var("SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".into());
    let url = host.url.clone();
    let seed = std::env::var("EP_SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261205".into());
    let examples = std::env::var("EP_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "25".into());
    println!("schemathesis --seed {seed} --max-examples {examples}");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&bin)
            .args(["run", &format!("{url}/api/v1/openapi.json")])
            .args(["--url", &url])
            .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
            // Every check but positive_data_acceptance: the document
            // cannot say everything a request is checked for (a silence's
            // matchers must parse, a replay's `since` must be a time, a
            // webhook must be Alertmanager's), and those get a 400 naming
            // the field, which the document lists.
            .args([
                "--checks",
                "all",
                "--exclude-checks",
                "positive_data_acceptance",
            ])
            // A fixed seed keeps CI's verdict about this code, not about
            // the draw; `EP_SCHEMATHESIS_SEED` and
            // `EP_SCHEMATHESIS_EXAMPLES` explore further.
            .args(["--seed", &seed, "--max-examples", &examples, "--no-color"])
            .args(["--phases", "examples,coverage,fuzzing"])
            .output()
            .unwrap_or_else(|e| panic!("running {bin} (set SCHEMATHESIS): {e}"))
    })
    .await
    .unwrap();
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{report}");
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{report}"
    );
}

/// The audit log and the dead letters page by cursor like the other lists.
#[tokio::test]
async fn the_audit_log_pages_by_cursor() {
    let host = Host::start().await;
    let records: Vec<eventpulse::model::AuditRecord> = (0..120)
        .map(|k| eventpulse::model::AuditRecord {
            at: 1_000 + k,
            plugin: if k % 3 == 0 { "a" } else { "b" }.into(),
            capability: "docker".into(),
            operation: "list-containers".into(),
            target: format!("t-{k}"),
            allowed: true,
            detail: String::new(),
        })
        .collect();
    host.store.audit(&records).await.unwrap();
    for (filter, want) in [("", 120), ("plugin=a&", 40)] {
        let (mut targets, mut cursor, mut pages) = (Vec::new(), None::<String>, 0);
        loop {
            let mut url = format!("/api/v1/audit?{filter}limit=25");
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let page = host.get_json(&url).await;
            pages += 1;
            targets.extend(
                page["audit"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["target"].as_str().unwrap().to_owned()),
            );
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        let expected: Vec<String> = records
            .iter()
            .rev()
            .filter(|r| filter.is_empty() || r.plugin == "a")
            .map(|r| r.target.clone())
            .collect();
        assert_eq!(targets.len(), want, "{filter}");
        assert_eq!(targets, expected, "{filter}: newest first, each once");
        assert_eq!(pages, want.div_ceil(25), "{filter}");
    }
    let bad = host
        .get("/api/v1/dead-letters?cursor=x")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let empty = host.get_json("/api/v1/dead-letters?limit=5").await;
    assert!(empty["dead_letters"].as_array().unwrap().is_empty() && empty["next_cursor"].is_null());
}
