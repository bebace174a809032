//! What the tests that drive the real `eventpulse` binary share.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_eventpulse");

/// A running `eventpulse serve`, killed when dropped.
pub struct Serve(pub Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The repository root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Write `root/eventpulse.toml` for a host on a free 127.0.0.1 port, over
/// `root/eventpulse.db` and the plugins in `root/dist`, admin token `t`,
/// with `extra` (TOML) appended; returns the port.
#[allow(dead_code)] // not every test binary uses it
pub fn write_config(root: &Path, extra: &str) -> u16 {
    write_config_on(root, "sqlite://eventpulse.db", extra)
}

/// [`write_config`] over the database at `database_url`.
pub fn write_config_on(root: &Path, database_url: &str, extra: &str) -> u16 {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cache = workspace().join("target/plugins/test-cache");
    std::fs::write(
        root.join("eventpulse.toml"),
        format!(
            "listen = \"127.0.0.1:{port}\"\ndatabase_url = {database_url:?}\nplugin_dir = \"dist\"\ncache_dir = {cache:?}\n\n[admin]\ntoken = \"t\"\n{extra}"
        ),
    )
    .unwrap();
    port
}

/// Start `eventpulse serve` with `root/eventpulse.toml`, logging at `level`
/// to `root/serve.log` (appended across restarts).
pub fn start(root: &Path, level: &str) -> Serve {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join("serve.log"))
        .unwrap();
    Serve(
        Command::new(BIN)
            .args(["--config", "eventpulse.toml", "serve"])
            .current_dir(root)
            .env("EVENTPULSE_LOG", level)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// Build rule-cpu-autoscale, `action` and notifier-log into `root/dist`;
/// the rule acts through `action`, notifies notifier-log, and gets
/// `rule_config` (TOML lines) in its `[config]` too.
pub fn build_pipeline(root: &Path, action: &str, rule_config: &str) {
    let plugins = workspace().join("plugins");
    eventpulse::scaffold::build(
        &[
            plugins.join("rule-cpu-autoscale"),
            plugins.join(action),
            plugins.join("notifier-log"),
        ],
        &root.join("dist"),
        None,
    )
    .unwrap();
    std::fs::write(
        root.join("dist/rule-cpu-autoscale.toml"),
        format!("[config]\naction = \"{action}\"\nchannels = \"notifier-log\"\n{rule_config}"),
    )
    .unwrap();
}

/// A fresh, empty PostgreSQL database on the test server
/// (`EP_TEST_POSTGRES_URL`, which `.ci/run` starts): its URL. Fails, never
/// skips, when the server is not there.
#[allow(dead_code)] // not every test binary uses it
pub fn postgres_database() -> String {
    use sqlx::{Connection, Executor};
    let base = std::env::var("EP_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:55432/postgres".into());
    let name = format!(
        "ep_host_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros()
    );
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut conn = sqlx::PgConnection::connect(&base)
            .await
            .unwrap_or_else(|e| {
                panic!("PostgreSQL at {base} is required (EP_TEST_POSTGRES_URL): {e}")
            });
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap();
    });
    // Keep any `?sslmode=...` after the database.
    let (main, query) = base
        .split_once('?')
        .map_or((base.as_str(), ""), |(m, q)| (m, q));
    let (prefix, _) = main.rsplit_once('/').expect("URL has a database part");
    if query.is_empty() {
        format!("{prefix}/{name}")
    } else {
        format!("{prefix}/{name}?{query}")
    }
}
