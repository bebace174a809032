//! The console in a real browser: headless Chromium (Debian's
//! `chromium`; `CHROMIUM` names another binary), driven over the Chrome
//! DevTools Protocol. Screenshots of the incident list and an incident
//! page are written to `target/console-screenshots/`.

use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;
use tokio_tungstenite::tungstenite::Message;

use eventpulse_tests::{
    Backend, Host, READ_TOKEN, TOKEN, post_webhook, scripted_alert, wait_for, workspace,
};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One headless Chromium and its first page, over the DevTools protocol.
struct Browser {
    _child: tokio::process::Child,
    page: Socket,
    next: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn launch() -> Browser {
        let bin = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into());
        let profile = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new(&bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
                "--window-size=1280,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin} (set CHROMIUM): {e}"));
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let ws = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return url.trim().to_owned();
                }
            }
            panic!("chromium exited without a DevTools address");
        })
        .await
        .expect("chromium's DevTools address");
        // Keep draining its stderr so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let port = ws.split(':').nth(2).unwrap().split('/').next().unwrap();
        let targets: Value = reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let page_ws = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_owned();
        let (page, _) = tokio_tungstenite::connect_async(page_ws).await.unwrap();
        let mut b = Browser {
            _child: child,
            page,
            next: 0,
            _profile: profile,
        };
        b.call("Page.enable", json!({})).await;
        b
    }

    /// A DevTools command's result (events in between are skipped).
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let msg = json!({ "id": id, "method": method, "params": params });
        self.page
            .send(Message::text(msg.to_string()))
            .await
            .unwrap();
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(30), self.page.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method}"))
                .unwrap()
                .unwrap();
            let Message::Text(text) = frame else { continue };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["id"] == id {
                assert!(v["error"].is_null(), "{method}: {}", v["error"]);
                return v["result"].clone();
            }
        }
    }

    /// Evaluate `js` in the page; its value.
    async fn eval(&mut self, js: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": js, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        assert!(
            r["exceptionDetails"].is_null(),
            "{js}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// The page's path once it has loaded.
    async fn settled(&mut self) -> String {
        for _ in 0..200 {
            let state = self.eval("[document.readyState, location.pathname]").await;
            if state[0] == "complete" {
                return state[1].as_str().unwrap().to_owned();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the page never finished loading");
    }

    async fn goto(&mut self, url: &str) -> String {
        self.call("Page.navigate", json!({ "url": url })).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.settled().await
    }

    /// Run `js` (which submits a form or follows a link) and wait until
    /// the page is at another document.
    async fn act(&mut self, js: &str) -> String {
        let before = self.eval("performance.timeOrigin").await;
        self.eval(js).await;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if self.eval("performance.timeOrigin").await != before {
                return self.settled().await;
            }
        }
        panic!("`{js}` led nowhere");
    }

    async fn text(&mut self, selector: &str) -> String {
        let js = format!(
            "(document.querySelector({}) || {{innerText: ''}}).innerText",
            serde_json::to_string(selector).unwrap()
        );
        self.eval(&js).await.as_str().unwrap_or_default().to_owned()
    }

    async fn count(&mut self, selector: &str) -> u64 {
        let js = format!(
            "document.querySelectorAll({}).length",
            serde_json::to_string(selector).unwrap()
        );
        self.eval(&js).await.as_u64().unwrap()
    }

    async fn screenshot(&mut self, name: &str) -> std::path::PathBuf {
        use base64::Engine as _;
        let shot = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        let dir = workspace().join("target/console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap();
        println!("screenshot: {}", path.display());
        path
    }

    /// The session cookie the console set (HttpOnly: only the protocol
    /// can read it).
    async fn session_cookie(&mut self) -> String {
        let cookies = self.call("Network.getAllCookies", json!({})).await;
        cookies["cookies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == eventpulse::console::COOKIE)
            .map(|c| {
                assert_eq!(c["httpOnly"], true, "{c}");
                assert_eq!(c["sameSite"], "Strict", "{c}");
                assert!(c["expires"].as_f64().unwrap() > 0.0, "it expires: {c}");
                format!(
                    "{}={}",
                    c["name"].as_str().unwrap(),
                    c["value"].as_str().unwrap()
                )
            })
            .expect("a session cookie")
    }

    async fn log_in(&mut self, url: &str, token: &str) -> String {
        assert_eq!(self.goto(&format!("{url}/ui")).await, "/ui/login");
        let js = format!(
            "document.querySelector('input[name=token]').value = {}; document.querySelector('form').submit()",
            serde_json::to_string(token).unwrap()
        );
        self.act(&js).await
    }
}

/// Log in, read the incident the test made and its timeline, switch a
/// plugin off (the API then reports it disabled), replay a dead letter,
/// replay a rule; a POST without the session's CSRF token is refused; a
/// read-only login shows no control that changes anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    let host = Host::start_on(Backend::Sqlite).await;
    host.install_first_party("cooldown_secs = \"300\"\n").await;
    host.install("rule-scripted", "rule-scripted", "");
    // Never succeeds: dead-lettered after max_attempts.
    host.install_now(
        "action-flaky",
        "action-flaky",
        "[safety]\nbreaker_threshold = 1000\n",
    )
    .await;
    let firing = eventpulse::ingest::alertmanager::sample(
        "HighCPU",
        &[("service", "app"), ("severity", "critical")],
        false,
        "2026-11-24T10:00:00Z",
        "",
    );
    assert_eq!(post_webhook(&host.url, &firing).await.0, 200);
    let broken = scripted_alert(
        "broken",
        &[
            ("action", "action-flaky"),
            ("params", r#"{"fail": "retryable"}"#),
            ("channel", "none"),
        ],
    );
    assert_eq!(post_webhook(&host.url, &broken).await.0, 200);
    let letter = wait_for(
        "a dead-lettered action",
        Duration::from_secs(30),
        || async {
            let list = host.store.dead_letters(10).await.unwrap();
            list.into_iter().find(|l| l.consumer == "actions")
        },
    )
    .await;
    let cpu = wait_for(
        "the HighCPU incident resolved",
        Duration::from_secs(30),
        || async {
            let list = host.store.incidents(10).await.unwrap();
            list.into_iter()
                .find(|i| i.title == "High CPU on app" && i.status.is_closed())
        },
    )
    .await;

    let mut b = Browser::launch().await;
    // A wrong token: the login page again, saying so.
    assert_eq!(b.goto(&format!("{}/ui", host.url)).await, "/ui/login");
    b.act("document.querySelector('input[name=token]').value = 'nope'; document.querySelector('form').submit()")
        .await;
    assert!(b.text(".error").await.contains("not one this host knows"));

    assert_eq!(b.log_in(&host.url, TOKEN).await, "/ui");
    let list = b.text("#incidents").await;
    assert!(list.contains("High CPU on app"), "{list}");
    b.screenshot("incidents.png").await;

    let link = format!("a[href='/ui/incidents/{}']", cpu.id);
    let path = b
        .act(&format!(
            "document.querySelector({}).click()",
            serde_json::to_string(&link).unwrap()
        ))
        .await;
    assert_eq!(path, format!("/ui/incidents/{}", cpu.id));
    let timeline = b.text("#timeline").await;
    assert!(
        timeline.contains("opened by rule-cpu-autoscale"),
        "{timeline}"
    );
    assert!(timeline.contains("action completed"), "{timeline}");
    assert!(b.text("#actions").await.contains("action-noop"));
    assert!(b.text("#decisions").await.contains("rule-cpu-autoscale"));
    b.screenshot("incident.png").await;

    // Switch a plugin off; the API agrees.
    b.goto(&format!("{}/ui/plugins", host.url)).await;
    b.act("document.querySelector('#plugin-rule-cpu-autoscale button.switch').click()")
        .await;
    let api = host.get_json("/api/v1/plugins/rule-cpu-autoscale").await;
    assert_eq!(api["plugin"]["enabled"], false, "{api}");
    assert!(
        b.text("#plugin-rule-cpu-autoscale")
            .await
            .contains("disabled")
    );

    // Replay the dead letter.
    b.goto(&format!("{}/ui/dead-letters", host.url)).await;
    let row = format!("#letter-{} button", letter.id);
    b.act(&format!(
        "document.querySelector({}).click()",
        serde_json::to_string(&row).unwrap()
    ))
    .await;
    let (replayed, _) = host.store.dead_letter(letter.id).await.unwrap().unwrap();
    assert!(replayed.replayed_at.is_some(), "{replayed:?}");
    assert!(
        b.text(&format!("#letter-{}", letter.id))
            .await
            .contains("replayed")
    );

    // Replay the (now disabled) rule over what happened: nothing differs.
    b.goto(&format!("{}/ui/replay", host.url)).await;
    b.act("document.querySelector('select[name=rule]').value = 'rule-cpu-autoscale'; document.querySelector('form.filters').submit()")
        .await;
    let summary = b.text("#replay-summary").await;
    assert!(summary.contains("0 different"), "{summary}");

    // The session cookie without the form's CSRF token: refused.
    let cookie = b.session_cookie().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let forged = client
        .post(format!("{}/ui/plugins/rule-cpu-autoscale/enable", host.url))
        .header("cookie", &cookie)
        .form(&[("csrf", "not-the-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let missing = client
        .post(format!("{}/ui/plugins/rule-cpu-autoscale/enable", host.url))
        .header("cookie", &cookie)
        .form(&[("x", "y")])
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 403);
    let api = host.get_json("/api/v1/plugins/rule-cpu-autoscale").await;
    assert_eq!(api["plugin"]["enabled"], false, "still disabled: {api}");

    // Log out; a read-only login sees no control that changes anything.
    assert_eq!(
        b.act("document.querySelector('header form').submit()")
            .await,
        "/ui/login"
    );
    assert_eq!(b.log_in(&host.url, READ_TOKEN).await, "/ui");
    assert!(b.text("header .who").await.contains("viewer · read"));
    for page in [
        "/ui/plugins",
        "/ui/dead-letters",
        "/ui/replay",
        &format!("/ui/incidents/{}", cpu.id),
    ] {
        b.goto(&format!("{}{page}", host.url)).await;
        let posts = b.count("main form[method=post]").await;
        assert_eq!(posts, 0, "{page}: a read-only login sees no mutating form");
    }
    let cookie = b.session_cookie().await;
    let csrf_less = client
        .post(format!("{}/ui/plugins/rule-cpu-autoscale/enable", host.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(csrf_less.status(), 403, "read-only sessions cannot post");
}
