//! Builds the host from a [`Config`] and runs its tasks under one
//! supervisor: the HTTP server, the plugin-directory watcher and the
//! pipeline's stages and work queues. Tests
//! build the same app on `127.0.0.1:0`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState};
use crate::config::{Config, TransportKind};
use crate::ingest::group_commit::GroupCommit;
use crate::pipeline::Pipeline;
use crate::pipeline::approvals::Approvals;
use crate::pipeline::kafka::{self, KafkaLog};
use crate::pipeline::transport::{EmbeddedLog, Transport};
use crate::registry::Registry;
use crate::runtime::{Audit, AuditRecord, Clock, Runtime, RuntimeOptions};
use crate::store::{Store, StoreOptions, redacted_url};
use crate::telemetry::Metrics;

/// A built host, ready to [`App::run`].
pub struct App {
    /// The configuration it was built from.
    pub config: Config,
    /// The store.
    pub store: Store,
    /// The plugin registry.
    pub registry: Arc<Registry>,
    tokens: Arc<api::auth::Tokens>,
    sessions: Arc<crate::console::Sessions>,
    audit_rx: mpsc::UnboundedReceiver<AuditRecord>,
}

impl App {
    /// Build with the system clock.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        App::build_with_clock(config, Clock::system()).await
    }

    /// Build with `clock` as the time plugins see.
    pub async fn build_with_clock(config: Config, clock: Clock) -> anyhow::Result<App> {
        config.validate().map_err(anyhow::Error::msg)?;
        std::fs::create_dir_all(&config.plugin_dir).with_context(|| {
            format!("creating plugin directory {}", config.plugin_dir.display())
        })?;
        let metrics = if config.telemetry.metrics {
            Metrics::new()
        } else {
            Metrics::disabled()
        };
        let options = StoreOptions {
            busy_timeout: std::time::Duration::from_millis(config.store.busy_timeout_ms),
            max_connections: config.store.max_connections,
            durability: config.store.durability,
            sqlite_cache_mib: config.store.sqlite_cache_mib,
            sqlite_mmap_mib: config.store.sqlite_mmap_mib,
            instance: config.instance_name(),
            metrics: metrics.clone(),
        };
        let store = Store::connect_with(&config.database_url, &options)
            .await
            .with_context(|| {
                format!(
                    "opening the store at {}",
                    redacted_url(&config.database_url)
                )
            })?;
        let (audit, audit_rx) = Audit::channel();
        let runtime = Arc::new(
            Runtime::new(
                &config.cache_dir,
                &RuntimeOptions::new(config.runtime.clone()),
            )?
            .with_audit(audit)
            .with_metrics(metrics),
        );
        let registry = Arc::new(Registry::new(
            runtime,
            store.clone(),
            &config.plugin_dir,
            clock,
            config.runtime.clone(),
        ));
        registry.reload().await?;
        let tokens = api::auth::Tokens::new(&admin_token(&config)?, &config.admin.tokens)
            .map_err(anyhow::Error::msg)?;
        let tokens = Arc::new(tokens);
        let sessions = Arc::new(crate::console::Sessions::new(Duration::from_secs(
            config.admin.console_session_secs,
        )));
        Ok(App {
            config,
            store,
            registry,
            tokens,
            sessions,
            audit_rx,
        })
    }

    /// The HTTP routes, committing ingest through `commits`.
    fn router(
        &self,
        commits: GroupCommit,
        transport: Option<Arc<dyn Transport>>,
        approvals: Arc<Approvals>,
    ) -> axum::Router {
        api::router(ApiState {
            approvals,
            registry: self.registry.clone(),
            store: self.store.clone(),
            tokens: self.tokens.clone(),
            ingest: Arc::new(self.config.ingest.clone()),
            commits,
            transport,
            metrics_token: self.config.telemetry.metrics_token.clone().map(Arc::new),
            replay: Arc::new(crate::replay::Settings::new(&self.config)),
            sessions: self.sessions.clone(),
        })
    }

    /// Serve on `listener` and watch the plugin directory until `shutdown`
    /// fires or a task fails.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut tasks = JoinSet::new();
        let (commits, writer) = GroupCommit::new(
            self.store.clone(),
            self.config.ingest.max_pending,
            shutdown.clone(),
        );
        tasks.spawn(async move {
            writer.await;
            Ok("ingest writer")
        });
        let transport = self.transport(&mut tasks, &shutdown).await?;
        let approvals = Arc::new(self.approvals(listener.local_addr()?)?);
        let router = self.router(commits, transport.clone(), approvals.clone());
        let (metrics, stop) = (self.registry.metrics().clone(), shutdown.clone());
        tasks.spawn(async move {
            // Histogram samples are folded here as well as on each scrape,
            // so an unscraped host does not accumulate them.
            let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tokio::select! {
                    () = stop.cancelled() => return Ok("metrics upkeep"),
                    _ = every.tick() => metrics.upkeep(),
                }
            }
        });
        if self.config.retention.enabled {
            tasks.spawn(prune(
                self.store.clone(),
                self.config.clone(),
                self.registry.metrics().clone(),
                shutdown.clone(),
            ));
        }
        tasks.spawn(write_audit(
            self.store.clone(),
            self.audit_rx,
            shutdown.clone(),
        ));
        let stop = shutdown.clone();
        tasks.spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .context("http server")
                .map(|()| "http server")
        });
        let debounce = std::time::Duration::from_millis(self.config.runtime.reload_debounce_ms);
        let (registry, stop) = (self.registry.clone(), shutdown.clone());
        tasks.spawn(async move {
            registry
                .watch(debounce, stop)
                .await
                .context("plugin watcher")
                .map(|()| "plugin watcher")
        });

        if let Some(source) = self.config.sources.kubernetes.clone() {
            let zone = self.config.ingest.zone().map_err(anyhow::Error::msg)?;
            let watcher = crate::sources::kubernetes::Watcher::new(
                source,
                self.store.clone(),
                self.registry.metrics().clone(),
                zone,
            );
            tasks.spawn(watcher.run(shutdown.clone()));
        }

        if let Some(transport) = transport {
            Pipeline::new(
                self.store.clone(),
                self.registry.clone(),
                self.config.pipeline.clone(),
                transport,
                approvals,
            )
            .spawn(&mut tasks, &shutdown);
        }

        let mut result = Ok(());
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(Ok(task)) => tracing::info!(task, "task finished"),
                Ok(Err(e)) => {
                    tracing::error!(error = format!("{e:#}"), "task failed; shutting down");
                    result = result.and(Err(e));
                }
                Err(e) => {
                    tracing::error!(error = %e, "task panicked; shutting down");
                    result = result.and(Err(e.into()));
                }
            }
            shutdown.cancel();
        }
        result
    }
}

impl App {
    /// Approval settings, links under `[approvals] public_url` or else
    /// the address the host listens on.
    fn approvals(&self, listening: std::net::SocketAddr) -> anyhow::Result<Approvals> {
        let c = &self.config.approvals;
        let key = kept_secret(c.link_key.as_ref(), &c.link_key_file, "approval link key")?;
        let url = c
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{listening}"));
        Ok(Approvals::new(key, &url, c.notify.clone()))
    }

    /// The stages' transport when the pipeline runs here (with Kafka, its
    /// topics created and the outbox relay started on `tasks`).
    async fn transport(
        &self,
        tasks: &mut JoinSet<anyhow::Result<&'static str>>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Option<Arc<dyn Transport>>> {
        if !self.config.pipeline.enabled {
            return Ok(None);
        }
        let batch = self.config.pipeline.batch;
        Ok(Some(match self.config.transport.kind {
            TransportKind::Embedded => Arc::new(EmbeddedLog::new(self.store.clone(), batch)),
            TransportKind::Kafka => {
                let log = Arc::new(KafkaLog::new(self.config.transport.kafka.clone(), batch)?);
                if self.config.transport.kafka.create_topics {
                    log.create_topics().await?;
                }
                let (store, log2, stop) = (self.store.clone(), log.clone(), shutdown.clone());
                tasks.spawn(async move {
                    kafka::relay(store, log2, stop)
                        .await
                        .map(|()| "outbox relay")
                });
                log
            }
        }))
    }
}

/// What the outbox feeds under `config`, for retention.
pub fn feeds(config: &Config) -> crate::store::Feeds {
    match config.transport.kind {
        TransportKind::Embedded => crate::store::Feeds::Embedded(crate::pipeline::CONSUMERS),
        TransportKind::Kafka => crate::store::Feeds::Kafka,
    }
}

/// Prune what is past its retention every `retention.every_secs` (the
/// first time a minute after start); a failed prune is logged and tried
/// again next time.
async fn prune(
    store: Store,
    config: Config,
    metrics: Metrics,
    stop: CancellationToken,
) -> anyhow::Result<&'static str> {
    let every = std::time::Duration::from_secs(config.retention.every_secs.max(1));
    let mut next = std::time::Duration::from_secs(60).min(every);
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok("pruning"),
            () = tokio::time::sleep(next) => {}
        }
        next = every;
        let started = std::time::Instant::now();
        match store
            .prune(
                &config.retention,
                feeds(&config),
                crate::store::now_ms(),
                false,
            )
            .await
        {
            Ok(pruned) => {
                let total: u64 = pruned.iter().map(|(_, n)| n).sum();
                for (what, n) in &pruned {
                    metrics.pruned(what, *n);
                }
                if total > 0 {
                    tracing::info!(rows = total, took_ms = started.elapsed().as_millis() as u64, detail = ?pruned.iter().filter(|(_, n)| *n > 0).collect::<Vec<_>>(), "pruned old records");
                }
            }
            Err(e) => tracing::warn!(error = %e, "pruning failed; trying again next time"),
        }
    }
}

/// Write audit records to the store as they come, in batches, retrying
/// while the store is unavailable.
async fn write_audit(
    store: Store,
    mut rx: mpsc::UnboundedReceiver<AuditRecord>,
    stop: CancellationToken,
) -> anyhow::Result<&'static str> {
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok("audit writer"),
            n = rx.recv_many(&mut batch, 256) => if n == 0 { return Ok("audit writer") },
        }
        while let Err(e) = store.audit(&batch).await {
            tracing::warn!(error = %e, records = batch.len(), "cannot write audit records yet; retrying");
            tokio::select! {
                () = stop.cancelled() => return Ok("audit writer"),
                () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
        }
        batch.clear();
    }
}

/// The configured admin token, else the one in `token_file`, else a new
/// random one written there with mode 0600. The value is never logged.
fn admin_token(config: &Config) -> anyhow::Result<SecretString> {
    kept_secret(
        config.admin.token.as_ref(),
        &config.admin.token_file,
        "admin token",
    )
}

/// `configured`, else the secret in `file`, else a new random one (32
/// bytes, hex) written there with mode 0600.
pub(crate) fn kept_secret(
    configured: Option<&SecretString>,
    file: &Path,
    what: &str,
) -> anyhow::Result<SecretString> {
    if let Some(secret) = configured {
        return Ok(secret.clone());
    }
    if let Ok(text) = std::fs::read_to_string(file) {
        let t = text.trim();
        anyhow::ensure!(!t.is_empty(), "{what} file {} is empty", file.display());
        return Ok(SecretString::from(t.to_owned()));
    }
    let secret = hex::encode(rand::random::<[u8; 32]>());
    write_private(file, &secret)
        .with_context(|| format!("writing the {what} to {}", file.display()))?;
    tracing::info!(path = %file.display(), "generated the {what}");
    Ok(SecretString::from(secret))
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())
}
