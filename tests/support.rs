//! Shared support for the end-to-end tests: builds the first-party plugins
//! and the `tests/fixtures` components to wasm32-wasip2 once (with the same
//! code path as `eventpulse plugin build`), and starts a real host on
//! `127.0.0.1:0` over a temporary plugin directory and database.

pub mod dockerkit;
pub mod kubeapi;
pub mod kubecluster;
pub mod pki;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use eventpulse::app::App;
use eventpulse::config::Config;
use eventpulse::registry::Registry;
use eventpulse::runtime::{Clock, types};
use tokio_util::sync::CancellationToken;

/// The admin token every test host uses.
pub const TOKEN: &str = "test-admin-token";

/// A `read`-scoped token every test host also takes, named `viewer`.
pub const READ_TOKEN: &str = "test-read-token";

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The directory holding every built component (`name.wasm`), built on
/// first use. Cargo's own lock serialises test binaries that race here.
pub fn components() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = workspace();
        let mut crates = eventpulse::scaffold::workspace_plugins(&root.join("plugins")).unwrap();
        crates
            .extend(eventpulse::scaffold::workspace_plugins(&root.join("tests/fixtures")).unwrap());
        let out = root.join("target/plugins/test-components");
        eventpulse::scaffold::build(&crates, &out, None).expect("building test components");
        out
    })
}

/// The Python plugin in `dir` (relative to the workspace) built with
/// componentize-py (`COMPONENTIZE_PY`, else on `PATH`; `.ci/run` installs
/// it) into `target/plugins/python-components`, once per test binary.
pub fn python_component(dir: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap();
    if let Some((_, p)) = built.iter().find(|(d, _)| d == dir) {
        return p.clone();
    }
    let out = workspace().join("target/plugins/python-components");
    let wasm = eventpulse::scaffold::build(&[workspace().join(dir)], &out, None)
        .unwrap_or_else(|e| panic!("building the Python plugin {dir}: {e:#}"))
        .pop()
        .unwrap();
    built.push((dir.to_owned(), wasm.clone()));
    wasm
}

/// Path of a built component.
pub fn component(name: &str) -> PathBuf {
    let path = components().join(format!("{name}.wasm"));
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// A running host over a temporary directory.
pub struct Host {
    /// The registry, for direct (typed) invocations.
    pub registry: Arc<Registry>,
    /// The store, to check what was written.
    pub store: eventpulse::store::Store,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The clock plugins see.
    pub clock: Clock,
    /// The plugin directory.
    pub plugin_dir: PathBuf,
    config: Config,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// Holds the directory until the test ends.
    pub dir: Arc<tempfile::TempDir>,
}

/// A log writer that keeps everything written to it (for `tracing`
/// subscribers), so tests can look for what must never be logged.
#[derive(Clone, Default)]
pub struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Test defaults: small breaker threshold, quick reloads, a shared compile cache.
pub fn test_config(dir: &Path) -> Config {
    let mut config = Config {
        database_url: format!("sqlite://{}", dir.join("eventpulse.db").display()),
        plugin_dir: dir.join("plugins"),
        cache_dir: workspace().join("target/plugins/test-cache"),
        ..Config::default()
    };
    config.admin.token = Some(TOKEN.to_owned().into());
    config.admin.tokens = vec![eventpulse::config::NamedToken {
        name: "viewer".into(),
        scope: eventpulse::config::TokenScope::Read,
        sha256: Some(eventpulse::api::auth::hash_hex(READ_TOKEN)),
        secret: None,
    }];
    config.approvals.link_key_file = dir.join("approval-link.key");
    config.runtime.breaker_threshold = 3;
    config.runtime.reload_debounce_ms = 100;
    config
}

/// Which database a test runs on. Tests that take one run on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server tests use (`.ci/run` starts one there).
pub fn postgres_base_url() -> String {
    std::env::var("EP_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:55432/postgres".into())
}

/// `url` (a PostgreSQL URL, perhaps with `?sslmode=...`) naming database
/// `name` instead of its own.
pub fn with_database(url: &str, name: &str) -> String {
    let (main, query) = url
        .split_once('?')
        .map_or((url, None), |(m, q)| (m, Some(q)));
    let (prefix, _) = main.rsplit_once('/').expect("URL has a database part");
    match query {
        Some(q) => format!("{prefix}/{name}?{q}"),
        None => format!("{prefix}/{name}"),
    }
}

/// The database a PostgreSQL URL names.
pub fn database_of(url: &str) -> &str {
    let main = url.split_once('?').map_or(url, |(m, _)| m);
    main.rsplit_once('/').expect("URL has a database part").1
}

/// A fresh, empty database for one test. PostgreSQL must be running: a
/// test that needs it fails (it never skips) when it is not.
pub async fn database_url(backend: Backend, dir: &Path) -> String {
    use sqlx::{Connection, Executor};
    match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.join("eventpulse.db").display()),
        Backend::Postgres => {
            static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let base = postgres_base_url();
            let mut conn = sqlx::PgConnection::connect(&base).await.unwrap_or_else(|e| {
                panic!("PostgreSQL at {base} is required (set EP_TEST_POSTGRES_URL; .ci/run starts one): {e}")
            });
            let name = format!(
                "ep_{}_{}_{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_micros(),
                N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            conn.execute(format!("CREATE DATABASE {name}").as_str())
                .await
                .unwrap();
            with_database(&base, &name)
        }
    }
}

/// Drop a database [`database_url`] made: PostgreSQL's; an SQLite file
/// goes with its directory. The bench drops each row's; tests leave theirs
/// to be looked at after a failure.
pub async fn drop_database(url: &str) {
    use sqlx::{Connection, Executor};
    if !url.starts_with("postgres") {
        return;
    }
    let mut conn = sqlx::PgConnection::connect(&postgres_base_url())
        .await
        .unwrap();
    conn.execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", database_of(url)).as_str())
        .await
        .unwrap();
}

impl Host {
    /// A host on `backend` with the system clock and fast pipeline retries
    /// (backoff 20-100 ms, 5 attempts).
    pub async fn start_on(backend: Backend) -> Host {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let mut config = test_config(dir.path());
        config.database_url = database_url(backend, dir.path()).await;
        config.pipeline.backoff_initial_ms = 20;
        config.pipeline.backoff_max_ms = 100;
        config.pipeline.max_attempts = 5;
        std::fs::create_dir_all(&config.plugin_dir).unwrap();
        Host::start_with(config, dir, Clock::system()).await
    }

    /// A host over a fresh directory with the manual clock at `1_000_000`.
    pub async fn start() -> Host {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let config = test_config(dir.path());
        std::fs::create_dir_all(&config.plugin_dir).unwrap();
        Host::start_with(config, dir, Clock::manual(1_000_000)).await
    }

    /// A host over `config` (whose paths point into `dir`).
    pub async fn start_with(config: Config, dir: Arc<tempfile::TempDir>, clock: Clock) -> Host {
        log_to_test_output();
        let app = App::build_with_clock(config.clone(), clock.clone())
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let registry = app.registry.clone();
        let store = app.store.clone();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run(listener, shutdown.clone()));
        Host {
            registry,
            store,
            url,
            clock,
            plugin_dir: config.plugin_dir.clone(),
            config,
            shutdown,
            task,
            dir,
        }
    }

    /// Stop this host and start another over the same directory and database.
    pub async fn restart(self) -> Host {
        let (config, dir, clock) = (self.config.clone(), self.dir.clone(), self.clock.clone());
        self.stop().await;
        Host::start_with(config, dir, clock).await
    }

    /// Stop this host and start another over the same directory and
    /// database, its configuration changed by `change`.
    pub async fn restart_with(self, change: impl FnOnce(&mut Config)) -> Host {
        let (mut config, dir, clock) = (self.config.clone(), self.dir.clone(), self.clock.clone());
        change(&mut config);
        self.stop().await;
        Host::start_with(config, dir, clock).await
    }

    /// Stop this host, run `while_down`, then start another over the same
    /// directory, database and clock.
    pub async fn restart_after(self, while_down: impl FnOnce()) -> Host {
        let (config, dir, clock) = (self.config.clone(), self.dir.clone(), self.clock.clone());
        self.stop().await;
        while_down();
        Host::start_with(config, dir, clock).await
    }

    /// Stop the host and wait for its tasks.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }

    /// Install built component `component` as plugin `name`, with `manifest`.
    /// The manifest goes first, and both are renamed into place, as
    /// `eventpulse plugin build` does.
    /// Install and load the first-party pipeline plugins: rule-cpu-autoscale
    /// acting through action-noop and notifying notifier-log, with
    /// `rule_config` (TOML lines) added to its `[config]`.
    pub async fn install_first_party(&self, rule_config: &str) {
        let manifest = format!(
            "[config]\naction = \"action-noop\"\nchannels = \"notifier-log\"\n{rule_config}"
        );
        self.install("rule-cpu-autoscale", "rule-cpu-autoscale", &manifest);
        self.install("action-noop", "action-noop", "");
        self.install_now("notifier-log", "notifier-log", "").await;
    }

    /// The database this host uses.
    pub fn database_url(&self) -> &str {
        &self.config.database_url
    }

    pub fn install(&self, name: &str, component_name: &str, manifest: &str) {
        self.install_file(name, &component(component_name), manifest);
    }

    /// Install the component at `wasm` as plugin `name` with `manifest`.
    pub fn install_file(&self, name: &str, wasm_file: &Path, manifest: &str) {
        let toml = self.plugin_dir.join(format!("{name}.toml"));
        std::fs::write(toml.with_extension("partial"), manifest).unwrap();
        std::fs::rename(toml.with_extension("partial"), &toml).unwrap();
        let wasm = self.plugin_dir.join(format!("{name}.wasm"));
        std::fs::copy(wasm_file, wasm.with_extension("partial")).unwrap();
        std::fs::rename(wasm.with_extension("partial"), &wasm).unwrap();
    }

    /// Install and load synchronously (without waiting for the watcher).
    pub async fn install_now(&self, name: &str, component_name: &str, manifest: &str) {
        self.install(name, component_name, manifest);
        self.registry.reload().await.unwrap();
    }

    /// An HTTP client request with the admin token.
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .get(format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
    }

    /// GET `path` with the admin token, as JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.get(path).send().await.unwrap().json().await.unwrap()
    }

    /// The body of an admin GET, as text.
    pub async fn get_text(&self, path: &str) -> String {
        self.get(path).send().await.unwrap().text().await.unwrap()
    }

    /// The newest incident, once `done` holds for it (within `timeout`).
    pub async fn newest_incident(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&eventpulse::store::IncidentDetail) -> bool,
    ) -> eventpulse::store::IncidentDetail {
        wait_for(what, timeout, || async {
            let list = self.store.incidents(10).await.unwrap();
            let d = self
                .store
                .incident_detail(&list.first()?.id)
                .await
                .unwrap()?;
            done(&d).then_some(d)
        })
        .await
    }

    /// A POST with the admin token.
    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .post(format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
    }
}

/// With `EP_TEST_LOG` set (an `EnvFilter`, e.g. `info` or
/// `eventpulse=debug`), the hosts' logs go to the test's captured output:
/// shown for a test that fails, hidden for one that passes. Tests that set
/// up logging of their own keep theirs.
fn log_to_test_output() {
    if let Ok(filter) = std::env::var("EP_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// Poll `probe` until it yields a value; fail after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A firing alert for the `rule-scripted` fixture in group `group` (its
/// incident dedup key), with `annotations` telling the rule what to do.
pub fn scripted_alert(group: &str, annotations: &[(&str, &str)]) -> serde_json::Value {
    let mut body = eventpulse::ingest::alertmanager::sample(
        "Scripted",
        &[("service", "svc"), ("test", "scripted"), ("group", group)],
        false,
        "2026-11-24T10:00:00Z",
        "",
    );
    for (k, v) in annotations {
        body["alerts"][0]["annotations"][*k] = (*v).into();
    }
    body
}

/// Post an Alertmanager webhook body; `(status, json)`.
pub async fn post_webhook(url: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("{url}/api/v1/alerts/alertmanager"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

pub async fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An action request as a rule would make it, for calling an action plugin
/// directly (`params` is JSON text).
pub fn action_request(action: &str, target: &str, params: &str) -> types::ActionRequest {
    types::ActionRequest {
        action: action.into(),
        target: target.into(),
        params: params.into(),
        reason: "test".into(),
    }
}

/// An `alert.raised` event as ingest will build it.
pub fn alert_event(
    name: &str,
    status: eventpulse::model::AlertStatus,
    labels: &[(&str, &str)],
) -> eventpulse::model::Event {
    let mut all: Vec<(String, String)> = vec![("alertname".into(), name.into())];
    all.extend(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    eventpulse::model::Event {
        id: format!("evt-{name}"),
        kind: "alert.raised".into(),
        source: "test".into(),
        time: 0,
        trace_id: "trace-1".into(),
        span_id: String::new(),
        key: "app".into(),
        correlation: eventpulse::model::Correlation {
            alert_id: Some(format!("alert-{name}")),
            incident_id: None,
            action_id: None,
        },
        labels: vec![],
        annotations: vec![],
        alert: Some(eventpulse::model::Alert {
            fingerprint: format!("fp-{name}"),
            name: name.into(),
            status,
            severity: Some(eventpulse::model::Severity::Critical),
            labels: all,
            annotations: vec![("summary".into(), "CPU above 90%".into())],
            starts_at: 0,
            ends_at: None,
            generator_url: None,
        }),
        data: "{}".into(),
    }
}

/// The manifest `rule-hostile` runs with in `mode`, with extra TOML lines.
pub fn hostile_manifest(mode: &str, limits: &str) -> String {
    format!("[limits]\n{limits}\n\n[config]\nmode = \"{mode}\"\n")
}
