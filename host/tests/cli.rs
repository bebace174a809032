//! The `eventpulse` binary end to end: `plugin new` scaffolds a crate,
//! `plugin build` installs it, and a running `eventpulse serve` loads it and
//! answers a dry run, with no hand edits in between. The binary runs as an
//! operator's would: copied alone into an empty directory, no checkout
//! beside it, `HOME` a fresh folder (cargo's and rustup's homes, with
//! their caches of the registry, are kept).

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_eventpulse");

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The binary copied alone into `bin/` under `root`, and a fresh `HOME`.
struct Installed {
    bin: std::path::PathBuf,
    home: std::path::PathBuf,
}

impl Installed {
    fn into(root: &Path) -> Installed {
        let (bin, home) = (root.join("bin/eventpulse"), root.join("home"));
        std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
        std::fs::create_dir_all(&home).unwrap();
        std::fs::copy(BIN, &bin).unwrap();
        Installed { bin, home }
    }

    /// A command in `dir` with `HOME` fresh and cargo's and rustup's own
    /// homes (toolchains, registry caches) where they were.
    fn command(&self, program: &Path, dir: &Path) -> Command {
        let real_home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        let keep = |var: &str, default: &str| {
            std::env::var(var).unwrap_or_else(|_| format!("{real_home}/{default}"))
        };
        let mut c = Command::new(program);
        c.current_dir(dir)
            .env("HOME", &self.home)
            .env("CARGO_HOME", keep("CARGO_HOME", ".cargo"))
            .env("RUSTUP_HOME", keep("RUSTUP_HOME", ".rustup"))
            // Cargo running this test sets these; an operator's shell does not.
            .env_remove("CARGO")
            .env_remove("CARGO_MANIFEST_DIR")
            .env_remove("RUSTUP_TOOLCHAIN");
        c
    }

    fn run(&self, dir: &Path, args: &[&str]) -> std::process::Output {
        let out = self.command(&self.bin, dir).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "eventpulse {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

#[test]
fn scaffolded_plugins_build_and_load_in_a_running_host() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let installed = Installed::into(root);
    let eventpulse = |dir: &Path, args: &[&str]| {
        installed.run(dir, args);
    };
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins");
    let cache = target.join("test-cache");
    let scaffold_target = target.join("scaffold").display().to_string();
    std::fs::write(
        root.join("eventpulse.toml"),
        format!(
            "listen = \"127.0.0.1:{port}\"\nplugin_dir = \"dist\"\ncache_dir = {cache:?}\n\n[admin]\ntoken = \"t0ken\"\n",
            port = free_port(),
            cache = cache.display().to_string(),
        ),
    )
    .unwrap();

    for (name, kind) in [
        ("demo", "rule"),
        ("demo-action", "action"),
        ("demo-notifier", "notifier"),
    ] {
        eventpulse(
            root,
            &[
                "-c",
                "eventpulse.toml",
                "plugin",
                "new",
                name,
                "--kind",
                kind,
                "--dir",
                ".",
            ],
        );
    }
    // The scaffold carries the SDK and the WIT it builds against.
    for f in [
        "demo/sdk/Cargo.toml",
        "demo/sdk/src/lib.rs",
        "demo/wit/worlds.wit",
    ] {
        assert!(root.join(f).is_file(), "{f} written by plugin new");
    }
    // Its own unit test passes as generated.
    let tested = installed
        .command(Path::new("cargo"), &root.join("demo"))
        .args(["test", "--quiet", "--target-dir", &scaffold_target])
        .output()
        .unwrap();
    assert!(
        tested.status.success(),
        "the scaffold's test: {}",
        String::from_utf8_lossy(&tested.stderr)
    );
    eventpulse(
        root,
        &[
            "-c",
            "eventpulse.toml",
            "plugin",
            "build",
            "--target-dir",
            &scaffold_target,
            "demo",
            "demo-action",
            "demo-notifier",
        ],
    );
    for f in [
        "demo.wasm",
        "demo.toml",
        "demo-action.wasm",
        "demo-notifier.wasm",
    ] {
        assert!(root.join("dist").join(f).exists(), "{f} installed");
    }

    let config = std::fs::read_to_string(root.join("eventpulse.toml")).unwrap();
    let addr = config
        .lines()
        .next()
        .unwrap()
        .split('"')
        .nth(1)
        .unwrap()
        .to_owned();
    let _serve = Serve(
        installed
            .command(&installed.bin, root)
            .args(["-c", "eventpulse.toml", "serve"])
            .spawn()
            .unwrap(),
    );

    let client = reqwest::blocking::Client::new();
    let list = wait_for(|| {
        let r = client
            .get(format!("http://{addr}/api/v1/plugins"))
            .bearer_auth("t0ken")
            .send()
            .ok()?;
        r.json::<serde_json::Value>().ok()
    });
    let plugins = list["plugins"].as_array().unwrap();
    let kinds: Vec<_> = plugins
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("demo", "rule"),
            ("demo-action", "action"),
            ("demo-notifier", "notifier")
        ]
    );
    assert!(
        plugins
            .iter()
            .all(|p| p["loaded"] == true && p["error"].is_null()),
        "{list}"
    );

    let event = serde_json::json!({
        "id": "e1", "kind": "alert.raised", "source": "test", "time": 0, "trace_id": "t", "key": "app",
        "correlation": {"alert_id": null, "incident_id": null, "action_id": null},
        "labels": [], "annotations": [],
        "alert": {"fingerprint": "f", "name": "Demo", "status": "Firing", "severity": null,
                  "labels": [["alertname", "Demo"]], "annotations": [], "starts_at": 0,
                  "ends_at": null, "generator_url": null},
        "data": "{}"
    });
    let r = client
        .post(format!("http://{addr}/api/v1/plugins/demo/dry-run"))
        .bearer_auth("t0ken")
        .json(&event)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["decision"]["note"], "Demo seen by demo", "{body}");

    // The same decision without a host: `plugin run`, text and JSON.
    std::fs::write(root.join("event.json"), event.to_string()).unwrap();
    let args = [
        "-c",
        "eventpulse.toml",
        "plugin",
        "run",
        "dist/demo.wasm",
        "--event",
        "event.json",
    ];
    let text = String::from_utf8(installed.run(root, &args).stdout).unwrap();
    assert!(
        text.contains("demo (rule)") && text.contains("Demo seen by demo"),
        "{text}"
    );
    let json = installed.run(root, &[&args[..], &["--json"]].concat());
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["returned"]["note"], "Demo seen by demo", "{report}");
    assert_eq!(report["calls"], serde_json::json!([]), "{report}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "host did not come up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Logs written anywhere but a terminal carry no colour escapes, and
/// `telemetry.log_format = "json"` writes one JSON object per line.
#[test]
fn logs_off_a_terminal_are_plain_text_or_json() {
    let dir = tempfile::tempdir().unwrap();
    let run = |format: &str| {
        let out = Command::new(BIN)
            .arg("migrate")
            .current_dir(dir.path())
            .env("EVENTPULSE_DATABASE_URL", "sqlite://ep.db")
            .env("EVENTPULSE_TELEMETRY__LOG_FORMAT", format)
            .env_remove("EVENTPULSE_LOG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let text = run("text");
    assert!(text.contains("migrated"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "ANSI escapes in a piped log: {text:?}"
    );
    let json = run("json");
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["fields"]["message"] == "migrated"),
        "{json}"
    );
}

/// `eventpulse silence add | list | expire` against the configured store.
#[test]
fn silences_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(["silence"])
            .args(args)
            .current_dir(dir.path())
            .env("EVENTPULSE_DATABASE_URL", "sqlite://ep.db")
            .env("EVENTPULSE_LOG", "warn")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (ok, out, err) = run(&[
        "add",
        "-m",
        r#"alertname="DiskFull""#,
        "-m",
        r#"service=~"db.*""#,
        "--duration-secs",
        "3600",
        "--mode",
        "notifications",
        "--days",
        "sat,sun",
        "--from",
        "22:00",
        "--to",
        "06:00",
        "--by",
        "ops",
        "--comment",
        "weekend disk swaps",
    ]);
    assert!(ok, "{err}");
    let made: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = made["id"].as_str().unwrap().to_owned();
    assert_eq!(made["mode"], "notifications");
    assert_eq!(made["weekly"]["days"], serde_json::json!(["sat", "sun"]));

    let (ok, out, _) = run(&["list"]);
    assert!(ok && out.contains(&id), "{out}");
    let (ok, _, err) = run(&["expire", &id]);
    assert!(ok, "{err}");
    let (ok, out, _) = run(&["list"]);
    assert!(ok && !out.contains(&id), "{out}");
    let (ok, _, err) = run(&["expire", &id]);
    assert!(!ok && err.contains("has not ended"), "{err}");
    let (ok, _, err) = run(&[
        "add",
        "-m",
        "alertname",
        "--duration-secs",
        "60",
        "--by",
        "ops",
        "--comment",
        "x",
    ]);
    assert!(!ok && err.contains("no operator"), "{err}");
}

/// The README's flow from another terminal, as written: `send-alert`
/// prints the alert's startsAt and the command that resolves it (a
/// `--resolved` without `--starts-at` is refused); and an action that
/// needs approval waits until `eventpulse approval approve`, run as its own
/// process, lets it run.
#[test]
fn send_alert_resolve_and_approve_from_the_command_line() {
    use common::{build_pipeline, start, write_config};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    build_pipeline(root, "action-noop", "resolve_on = \"alert\"\n");
    std::fs::write(
        root.join("dist/action-noop.toml"),
        "[safety]\nrequire_approval = true\n",
    )
    .unwrap();
    let port = write_config(root, "");
    let _serve = start(root, "warn");
    let cli = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(["--config", "eventpulse.toml"])
            .args(args)
            .current_dir(root)
            .env("EVENTPULSE_LOG", "warn")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    wait_for(|| {
        reqwest::blocking::get(format!("http://127.0.0.1:{port}/healthz"))
            .is_ok_and(|r| r.status().is_success())
            .then_some(())
    });
    let (ok, out, err) = cli(&["send-alert", "--service", "web"]);
    assert!(ok, "{err}");
    let starts_at = out
        .split("startsAt ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("no startsAt in {out:?}"))
        .to_owned();
    assert!(
        out.contains(&format!("--resolved --starts-at {starts_at}")),
        "{out}"
    );

    let incident = |cli: &dyn Fn(&[&str]) -> (bool, String, String)| {
        let (ok, out, err) = cli(&["incidents", "--json"]);
        assert!(ok, "{err}");
        let list: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        list.into_iter().next()
    };
    let waiting = wait_for(|| {
        let (ok, out, _) = cli(&["approval", "list"]);
        let list: Vec<serde_json::Value> = serde_json::from_str(&out).ok()?;
        (ok && !list.is_empty()).then(|| list[0].clone())
    });
    let (id, hash) = (
        waiting["id"].as_str().unwrap(),
        waiting["params_hash"].as_str().unwrap(),
    );
    let (ok, _, err) = cli(&[
        "approval",
        "approve",
        id,
        "--hash",
        &"0".repeat(64),
        "--by",
        "ops",
    ]);
    assert!(!ok && err.contains("params hash does not match"), "{err}");
    let (ok, out, err) = cli(&["approval", "approve", id, "--hash", hash, "--by", "ops"]);
    assert!(ok, "{err}");
    assert!(out.contains("is now pending"), "{out}");
    wait_for(|| {
        let i = incident(&cli)?;
        (i["actions"][0]["status"] == "completed").then_some(())
    });

    let (ok, _, err) = cli(&["send-alert", "--service", "web", "--resolved"]);
    assert!(!ok && err.contains("--starts-at"), "{err}");
    let (ok, _, err) = cli(&[
        "send-alert",
        "--service",
        "web",
        "--resolved",
        "--starts-at",
        &starts_at,
    ]);
    assert!(ok, "{err}");
    wait_for(|| {
        let i = incident(&cli)?;
        (i["status"] == "resolved").then_some(())
    });

    // The installed rule replayed over what just happened decides the same.
    let (ok, out, err) = cli(&[
        "replay",
        "--rule",
        "rule-cpu-autoscale",
        "--since",
        "1h",
        "--json",
    ]);
    assert!(ok, "{err}");
    let summary: serde_json::Value =
        serde_json::from_str(out.lines().last().expect("a summary line")).unwrap();
    let summary = &summary["summary"];
    assert!(summary["replayed"].as_u64().unwrap() >= 3, "{out}");
    assert_eq!(summary["different"], 0, "{out}");
    let (ok, _, err) = cli(&["replay", "--rule", "no-such-rule", "--since", "1h"]);
    assert!(
        !ok && err.contains("no installed rule `no-such-rule`"),
        "{err}"
    );
}

/// The README's Python steps with the binary alone: `plugin new --lang
/// python`, `plugin build` (componentize-py, `COMPONENTIZE_PY`), `plugin
/// run` on the result.
#[test]
fn a_python_plugin_from_the_binary_alone() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let installed = Installed::into(root);
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins/test-cache");
    std::fs::write(
        root.join("eventpulse.toml"),
        format!("cache_dir = {:?}\n", cache.display().to_string()),
    )
    .unwrap();
    let ep = |args: &[&str]| installed.run(root, &[&["-c", "eventpulse.toml"], args].concat());
    ep(&[
        "plugin", "new", "disk-py", "--kind", "rule", "--lang", "python", "--dir", ".",
    ]);
    let built = ep(&["plugin", "build", "disk-py", "--out", "plugins/dist"]);
    assert!(
        String::from_utf8_lossy(&built.stdout).contains("plugins/dist/disk-py.wasm"),
        "{}",
        String::from_utf8_lossy(&built.stdout)
    );
    let event = serde_json::json!({
        "id": "e1", "kind": "alert.raised", "source": "test", "time": 0, "trace_id": "t", "key": "db",
        "correlation": {"alert_id": null, "incident_id": null, "action_id": null},
        "labels": [], "annotations": [],
        "alert": {"fingerprint": "f", "name": "DiskFull", "status": "Firing", "severity": null,
                  "labels": [["alertname", "DiskFull"], ["service", "db"]], "annotations": [],
                  "starts_at": 0, "ends_at": null, "generator_url": null},
        "data": "{}"
    });
    std::fs::write(root.join("event.json"), event.to_string()).unwrap();
    let out = ep(&[
        "plugin",
        "run",
        "plugins/dist/disk-py.wasm",
        "--event",
        "event.json",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["kind"], "rule", "{report}");
    assert_eq!(
        report["returned"]["note"], "DiskFull seen by disk-py",
        "{report}"
    );
}

/// `eventpulse token new` prints a token once and a config entry holding
/// only its hash; that entry, loaded as configuration, takes the token at
/// the scope asked for.
#[test]
fn a_new_token_and_its_config_entry() {
    let out = Command::new(BIN)
        .args(["token", "new", "--name", "grafana", "--scope", "read"])
        .env("EVENTPULSE_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(token.len(), 64, "{token}");
    let err = String::from_utf8(out.stderr).unwrap();
    let entry = &err[err.find("[[admin.tokens]]").expect("a config entry")..];
    assert!(
        !entry.contains(&token),
        "the entry holds the hash, not the token"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("eventpulse.toml");
    std::fs::write(&file, entry).unwrap();
    let config = eventpulse::config::Config::load(Some(&file)).unwrap();
    let tokens =
        eventpulse::api::auth::Tokens::new(&"main".to_owned().into(), &config.admin.tokens)
            .unwrap();
    let who = tokens.verify(&token).expect("the printed token is taken");
    assert_eq!(who.name, "grafana");
    assert_eq!(who.scope, eventpulse::config::TokenScope::Read);
    assert!(tokens.verify(&token[1..]).is_none());
}
