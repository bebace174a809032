//! The one typed configuration: defaults, then a TOML file, then
//! `EVENTPULSE_*` environment overrides (`__` separates levels, e.g.
//! `EVENTPULSE_ADMIN__TOKEN`). Nothing else in the host reads the environment,
//! except the secret references a plugin manifest names explicitly.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Everything `eventpulse serve` needs. Every field has a working default:
/// no file is needed to run embedded on 127.0.0.1.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address for the HTTP API (ingest and admin).
    pub listen: SocketAddr,
    /// Database URL. `sqlite://` runs embedded.
    pub database_url: String,
    /// The plugin registry: `name.wasm` + `name.toml` files.
    pub plugin_dir: PathBuf,
    /// Where compiled components are cached (`.cwasm`, keyed by content hash
    /// and engine version). Only files the host wrote are ever loaded.
    pub cache_dir: PathBuf,
    /// The admin API.
    pub admin: AdminConfig,
    /// Alert ingest endpoints.
    pub ingest: IngestConfig,
    /// The WebAssembly runtime.
    pub runtime: RuntimeConfig,
    /// The database connection.
    pub store: StoreConfig,
    /// The stages and their work queues.
    pub pipeline: PipelineConfig,
    /// How events travel between stages.
    pub transport: TransportConfig,
    /// This process's name in a scale-out deployment: recorded with every
    /// event it processes. Empty: `<hostname>-<pid>`.
    pub instance: String,
    /// Logs and metrics.
    pub telemetry: TelemetryConfig,
    /// Actions that wait for a person before they run.
    pub approvals: ApprovalsConfig,
    /// How long records are kept.
    pub retention: RetentionConfig,
    /// Sources the host pulls events from itself (beside the push endpoints).
    pub sources: SourcesConfig,
}

/// Event sources the host reads itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesConfig {
    /// Watch a cluster's Warning events (unset: no watcher).
    pub kubernetes: Option<KubeSourceConfig>,
}

/// `[sources.kubernetes]`: list, then watch, the `core/v1` Events of one
/// cluster (Warning only), checkpointing the watch's `resourceVersion` in
/// the store with the events it ingested.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubeSourceConfig {
    /// The cluster's name: it goes into every event's dedup key and labels,
    /// as `?cluster=` does on the push endpoint.
    pub cluster: String,
    /// API server URL, e.g. `https://10.0.0.1:6443` (unset with `in_cluster`).
    pub endpoint: String,
    /// The bearer token: `{ env = "VAR" }` or `{ file = "/path" }`, read
    /// at every (re)connection, so a rotated token is picked up.
    pub token: Option<SecretRef>,
    /// PEM bundle of the CAs that sign the API server's certificate; the
    /// system roots are not trusted when it is set.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate to authenticate with (with `client_key_file`).
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`.
    pub client_key_file: Option<PathBuf>,
    /// Run as the pod's service account (API server from
    /// `KUBERNETES_SERVICE_HOST`/`_PORT`, token and `ca.crt` from
    /// `service_account_dir`).
    pub in_cluster: bool,
    /// Where the service account is mounted (default
    /// `/var/run/secrets/kubernetes.io/serviceaccount`).
    pub service_account_dir: Option<PathBuf>,
    /// Only this namespace's events (unset: every namespace).
    pub namespace: Option<String>,
    /// How long one watch request stays open before it is renewed, in s.
    pub watch_timeout_secs: u64,
    /// First wait after a failed list or watch, in ms (doubling).
    pub retry_initial_ms: u64,
    /// Longest wait between retries, in ms.
    pub retry_max_ms: u64,
}

impl Default for KubeSourceConfig {
    fn default() -> Self {
        KubeSourceConfig {
            cluster: String::new(),
            endpoint: String::new(),
            token: None,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            in_cluster: false,
            service_account_dir: None,
            namespace: None,
            watch_timeout_secs: 290,
            retry_initial_ms: 500,
            retry_max_ms: 30_000,
        }
    }
}

/// How long each kind of record is kept before the pruning task deletes
/// it (ages in seconds; `0` keeps that kind for ever). Whatever the age,
/// nothing a consumer has not processed and nothing an open incident
/// refers to is deleted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Run the pruning task (`eventpulse prune` works either way).
    pub enabled: bool,
    /// How often it runs.
    pub every_secs: u64,
    /// Rows deleted per statement, so no prune holds the database long.
    pub batch: u32,
    /// Outbox events, once every stage has processed them (embedded) or
    /// they are published (Kafka).
    pub outbox_secs: u64,
    /// Inbox rows (which events a stage has already applied).
    pub inbox_secs: u64,
    /// The decisions log.
    pub decisions_secs: u64,
    /// Capability and approval audit records, and sandbox failures.
    pub audit_secs: u64,
    /// Resolved and failed incidents, with their timelines, actions and
    /// notifications (not those with work still waiting).
    pub incidents_secs: u64,
    /// Resolved alerts not attached to an open incident.
    pub alerts_secs: u64,
    /// Kubernetes events, by when they were last seen.
    pub kube_events_secs: u64,
    /// Dead letters, replayed or not.
    pub dead_letters_secs: u64,
    /// Finished actions and notifications of no incident, and ended
    /// silences.
    pub jobs_secs: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        const DAY: u64 = 24 * 3600;
        RetentionConfig {
            enabled: true,
            every_secs: 3600,
            batch: 5000,
            outbox_secs: 7 * DAY,
            inbox_secs: 7 * DAY,
            decisions_secs: 30 * DAY,
            audit_secs: 90 * DAY,
            incidents_secs: 90 * DAY,
            alerts_secs: 30 * DAY,
            kube_events_secs: 30 * DAY,
            dead_letters_secs: 30 * DAY,
            jobs_secs: 30 * DAY,
        }
    }
}

/// How approvals are asked for and answered. Which actions need one is
/// each action plugin's `[safety]` (or the rule's decision).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalsConfig {
    /// Notifier plugins told when an action waits, with signed links to
    /// approve or reject it (those not installed are skipped).
    pub notify: Vec<String>,
    /// The base URL the links use, as approvers reach this host (e.g.
    /// `https://eventpulse.example.org`). Unset: `http://` and the address
    /// the host listens on.
    pub public_url: Option<String>,
    /// The key that signs approval links. Every instance sharing a store
    /// needs the same one. Unset: a random key kept in `link_key_file`.
    #[serde(serialize_with = "redact")]
    pub link_key: Option<SecretString>,
    /// Where the generated link key is kept (mode 0600).
    pub link_key_file: PathBuf,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        ApprovalsConfig {
            notify: vec!["notifier-log".into()],
            public_url: None,
            link_key: None,
            link_key_file: PathBuf::from(".eventpulse/approval-link.key"),
        }
    }
}

/// Logs, metrics and traces.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Keep Prometheus metrics (default). Off: `/metrics` is empty.
    pub metrics: bool,
    /// What is logged, in `tracing` filter syntax
    /// (`info,eventpulse::pipeline=debug`); `EVENTPULSE_LOG` overrides it.
    pub log_filter: String,
    /// `text` (default) or `json`, one object per line.
    pub log_format: LogFormat,
    /// A bearer token that may read `GET /metrics` and nothing else (the
    /// admin token may too), for a Prometheus scrape config's
    /// `authorization`.
    #[serde(serialize_with = "redact")]
    pub metrics_token: Option<SecretString>,
    /// Export traces over OTLP/HTTP (protobuf) to this collector, e.g.
    /// `http://127.0.0.1:4318`. Unset: no export.
    pub otlp_endpoint: Option<String>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            metrics: true,
            log_filter: "info,wasmtime=warn,cranelift=warn".into(),
            log_format: LogFormat::Text,
            metrics_token: None,
            otlp_endpoint: None,
        }
    }
}

/// Which transport carries events between stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// The outbox table is the log; consumer offsets are kept in the store.
    /// One process.
    Embedded,
    /// Kafka: a relay publishes the outbox, one topic per event kind keyed
    /// by the event's key; each stage is a consumer group, so several
    /// instances sharing the store and the brokers split the partitions.
    Kafka,
}

/// Transport settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportConfig {
    /// `embedded` (default) or `kafka`.
    pub kind: TransportKind,
    /// Used when `kind = "kafka"`.
    pub kafka: KafkaConfig,
}

/// Kafka settings (librdkafka).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Topics are `<topic_prefix><event kind>`, e.g. `eventpulse.alert.raised`.
    pub topic_prefix: String,
    /// Consumer groups are `<group_prefix><stage>`, e.g. `eventpulse.rules`.
    pub group_prefix: String,
    /// Create the topics at start (existing ones are left as they are). Off
    /// where topics are provisioned by other means.
    pub create_topics: bool,
    /// Partitions of each topic the host creates.
    pub partitions: i32,
    /// Replication factor of the topics the host creates.
    pub replication: i32,
    /// How often the outbox relay looks for events other instances
    /// appended (its own appends wake it at once).
    pub relay_poll_ms: u64,
    /// Further librdkafka properties for every client (e.g.
    /// `security.protocol = "SASL_SSL"`, `sasl.mechanisms = "SCRAM-SHA-512"`,
    /// `ssl.ca.location`, `compression.type = "zstd"`).
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties whose values are secrets (`sasl.password`,
    /// `ssl.key.password`), each read from `{ env = "VAR" }` or
    /// `{ file = "/run/secrets/x" }` at start and never logged.
    pub secret_properties: BTreeMap<String, SecretRef>,
    /// Topic configs of every topic the host creates (e.g. `retention.ms`,
    /// `compression.type`, `min.insync.replicas`).
    pub topic_config: BTreeMap<String, String>,
    /// Per event kind (`alert.raised`, ...): partitions and topic configs
    /// that override the ones above.
    pub topics: BTreeMap<String, TopicSettings>,
}

/// One event kind's topic, when the host creates it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicSettings {
    /// Partitions (default: `partitions`).
    pub partitions: Option<i32>,
    /// Topic configs over `topic_config`.
    pub config: BTreeMap<String, String>,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            kind: TransportKind::Embedded,
            kafka: KafkaConfig::default(),
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            topic_prefix: "eventpulse.".into(),
            group_prefix: "eventpulse.".into(),
            create_topics: true,
            partitions: 6,
            replication: 1,
            relay_poll_ms: 200,
            properties: BTreeMap::new(),
            secret_properties: BTreeMap::new(),
            topic_config: BTreeMap::new(),
            topics: BTreeMap::new(),
        }
    }
}

/// Database connection settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// How long a write waits for the database (SQLite lock, pool
    /// connection) before the request fails with 503.
    pub busy_timeout_ms: u64,
    /// PostgreSQL connection pool size (SQLite uses one connection).
    pub max_connections: u32,
    /// What a commit (and so every 2xx to a sender) survives.
    pub durability: Durability,
    /// SQLite: the writer connection's page cache, MiB. The pipeline's
    /// indexes outgrow it in a long storm and pages are re-read from the
    /// OS; more is faster there and costs resident memory.
    pub sqlite_cache_mib: u32,
    /// SQLite: read the database through a memory map of up to this many
    /// MiB (0: off, the default). Faster in a storm (no copy per page
    /// read); the mapped pages count in the process's resident set.
    pub sqlite_mmap_mib: u32,
}

/// What a committed write survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    /// The default: a commit is on disk before it returns (SQLite: the
    /// writer fdatasyncs the WAL after the commit and answers only then;
    /// PostgreSQL `synchronous_commit = on`), so it survives an OS crash or
    /// power loss. Group commit pays for the sync.
    PowerLoss,
    /// Faster, explicitly weaker: a commit survives the process being
    /// killed but the last ones may be lost on an OS crash or power loss
    /// (SQLite without the WAL sync, PostgreSQL `synchronous_commit = off`).
    ProcessCrash,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            busy_timeout_ms: 5_000,
            max_connections: 8,
            durability: Durability::PowerLoss,
            sqlite_cache_mib: 16,
            sqlite_mmap_mib: 0,
        }
    }
}

/// Stage and work-queue settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Whether `serve` runs the stages (off: ingest and admin only).
    pub enabled: bool,
    /// Events a stage takes from the log at once and commits in one
    /// transaction (1: one event per transaction).
    pub batch: u32,
    /// Attempts at an event whose transaction fails for a reason in the
    /// event itself (a constraint it violates) before it is dead-lettered.
    /// Failures of the database itself are retried for as long as it takes.
    pub event_attempts: u32,
    /// Attempts per action or notification before it fails and is
    /// dead-lettered (retryable errors only; permanent ones fail at once).
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles per attempt, with jitter.
    pub backoff_initial_ms: u64,
    /// Longest backoff between attempts.
    pub backoff_max_ms: u64,
    /// Deadline for one attempt of an action or notification, on top of the
    /// plugin's own sandbox timeout.
    pub attempt_timeout_ms: u64,
    /// Attempts of a rule on one event when it fails retryably.
    pub rule_attempts: u32,
    /// Actions (and, separately, notifications) run at once.
    pub concurrency: usize,
    /// A notification repeating a dedup key that went out to the same
    /// notifier less than this long ago is suppressed and counted.
    pub notification_dedup_secs: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            enabled: true,
            batch: 256,
            event_attempts: 3,
            max_attempts: 5,
            backoff_initial_ms: 500,
            backoff_max_ms: 60_000,
            attempt_timeout_ms: 30_000,
            rule_attempts: 3,
            concurrency: 64,
            notification_dedup_secs: 600,
        }
    }
}

/// Admin API settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Bearer token for `/api/v1/*` admin routes. When unset, a random token
    /// is generated into `token_file` on first start.
    #[serde(serialize_with = "redact")]
    pub token: Option<SecretString>,
    /// Where the generated token is kept (mode 0600).
    pub token_file: PathBuf,
    /// More bearer tokens, each with a name (logged with what it does)
    /// and a scope. `eventpulse token new` makes one.
    pub tokens: Vec<NamedToken>,
    /// How long a console login lasts, in seconds.
    pub console_session_secs: u64,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenScope {
    /// Every GET of the API and `/metrics`.
    Read,
    /// Every route.
    Admin,
}

impl TokenScope {
    /// As written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenScope::Read => "read",
            TokenScope::Admin => "admin",
        }
    }
}

/// A named API token, given as its SHA-256 (so the config holds no
/// secret) or as a secret reference read once at start and hashed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedToken {
    /// Who or what uses it: recorded as `by` of what it does.
    pub name: String,
    /// `read` or `admin`.
    pub scope: TokenScope,
    /// The token's SHA-256, 64 hex digits.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Or where the token itself is: `{ env = "VAR" }` or `{ file = "path" }`.
    #[serde(default)]
    pub secret: Option<SecretRef>,
}

/// Alert ingest settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Bearer token senders must present (Alertmanager:
    /// `http_config.authorization.credentials`). Unset: no token needed,
    /// which is only sensible while `listen` is a loopback address.
    #[serde(serialize_with = "redact")]
    pub token: Option<SecretString>,
    /// Largest accepted request body, in bytes; larger ones get 413.
    pub max_body_bytes: usize,
    /// Requests waiting to be committed at most. Concurrent requests are
    /// committed together (group commit); past this many the store is not
    /// keeping up and a request gets 503 with `Retry-After` at once.
    pub max_pending: usize,
    /// The zone Kubernetes event times are written in for people (the
    /// `last_seen_text` of each event, which notifications show): an IANA
    /// name such as `Europe/Moscow`. Stored times stay UTC.
    pub time_zone: String,
}

impl IngestConfig {
    /// [`IngestConfig::time_zone`], parsed.
    pub fn zone(&self) -> Result<chrono_tz::Tz, String> {
        self.time_zone.parse().map_err(|_| {
            format!(
                "ingest.time_zone: `{}` is not an IANA time zone (e.g. Europe/Moscow)",
                self.time_zone
            )
        })
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            token: None,
            max_body_bytes: 1 << 20,
            max_pending: 1024,
            time_zone: "UTC".into(),
        }
    }
}

/// Runtime-wide limits; per-plugin limits live in each manifest and may
/// only be lower.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Largest linear memory any plugin may have, in MiB.
    pub max_memory_mb: u64,
    /// Instances the pooling allocator keeps slots for (concurrent calls).
    pub max_instances: u32,
    /// Consecutive sandbox failures (trap, timeout, fuel, memory, invalid
    /// output, denial) that open a plugin's circuit breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker refuses calls before letting one through.
    pub breaker_open_secs: u64,
    /// Quiet time before a change in the plugin directory is applied.
    pub reload_debounce_ms: u64,
    /// The Docker Engine the `docker` capability talks to:
    /// `unix:///path/to/docker.sock` or `tcp://host:port`.
    pub docker_host: String,
    /// With a `tcp://` engine: a directory holding `ca.pem`, `cert.pem` and
    /// `key.pem` (Docker's `DOCKER_CERT_PATH` layout). The engine's
    /// certificate is checked against `ca.pem` and `cert.pem` is presented
    /// to it, as `docker --tlsverify` does.
    pub docker_cert_path: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: "sqlite://eventpulse.db".into(),
            plugin_dir: PathBuf::from("plugins/dist"),
            cache_dir: PathBuf::from(".eventpulse/cache"),
            admin: AdminConfig::default(),
            ingest: IngestConfig::default(),
            runtime: RuntimeConfig::default(),
            store: StoreConfig::default(),
            pipeline: PipelineConfig::default(),
            transport: TransportConfig::default(),
            instance: String::new(),
            telemetry: TelemetryConfig::default(),
            approvals: ApprovalsConfig::default(),
            retention: RetentionConfig::default(),
            sources: SourcesConfig::default(),
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            token: None,
            token_file: PathBuf::from(".eventpulse/admin.token"),
            tokens: Vec::new(),
            console_session_secs: 8 * 3600,
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_memory_mb: 256,
            max_instances: 256,
            breaker_threshold: 5,
            breaker_open_secs: 30,
            reload_debounce_ms: 250,
            docker_host: "unix:///var/run/docker.sock".into(),
            docker_cert_path: None,
        }
    }
}

fn redact<S: serde::Serializer>(v: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    v.as_ref().map(|_| "[redacted]").serialize(s)
}

impl Config {
    /// Defaults, then `file` (if given; it must exist), then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            anyhow::ensure!(
                file.exists(),
                "config file {} does not exist",
                file.display()
            );
            figment = figment.merge(Toml::file(file));
        }
        let config: Config = figment
            // EVENTPULSE_LOG is the log filter, read by main, not a setting.
            .merge(Env::prefixed("EVENTPULSE_").ignore(&["log"]).split("__"))
            .extract()?;
        config.validate().map_err(anyhow::Error::msg)?;
        Ok(config)
    }

    /// What serde cannot check: names that must parse, settings that go
    /// together.
    pub fn validate(&self) -> Result<(), String> {
        self.ingest.zone()?;
        if let Some(k) = &self.sources.kubernetes {
            if k.cluster.is_empty() {
                return Err("sources.kubernetes.cluster: name the cluster".into());
            }
            if k.endpoint.is_empty() && !k.in_cluster {
                return Err(
                    "sources.kubernetes: set endpoint, or in_cluster = true in a pod".into(),
                );
            }
        }
        Ok(())
    }

    /// [`Config::instance`], or `<hostname>-<pid>` when it is empty.
    pub fn instance_name(&self) -> String {
        if !self.instance.is_empty() {
            return self.instance.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "eventpulse".into());
        format!("{host}-{}", std::process::id())
    }
}

/// Where a secret's value comes from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum SecretRef {
    /// An environment variable of the host process.
    Env(String),
    /// A file (e.g. a mounted Docker/Kubernetes secret); trailing newline trimmed.
    File(PathBuf),
}

impl SecretRef {
    /// The value; the error names the source, never a value.
    pub fn read(&self) -> Result<SecretString, String> {
        let value = match self {
            SecretRef::Env(var) => {
                std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?
            }
            SecretRef::File(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
        };
        Ok(SecretString::from(value))
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines; coloured only when stdout is a terminal.
    #[default]
    Text,
    /// One JSON object per line (with the span fields), for log shippers.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:1\"\nplugin_dri = \"x\"\n").unwrap();
        let err = Config::load(Some(&file)).unwrap_err().to_string();
        assert!(err.contains("plugin_dri"), "{err}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's signature
    fn the_log_filter_variable_is_not_a_setting() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("EVENTPULSE_LOG", "debug");
            jail.set_env("EVENTPULSE_PIPELINE__BATCH", "7");
            let c = Config::load(None).expect("EVENTPULSE_LOG is not refused");
            assert_eq!(c.pipeline.batch, 7);
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's signature
    fn kafka_transport_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("EVENTPULSE_TRANSPORT__KIND", "kafka");
            jail.set_env("EVENTPULSE_TRANSPORT__KAFKA__BROKERS", "k1:9092,k2:9092");
            let c = Config::load(None).unwrap();
            assert_eq!(c.transport.kind, TransportKind::Kafka);
            assert_eq!(c.transport.kafka.brokers, "k1:9092,k2:9092");
            assert_eq!(c.transport.kafka.partitions, 6);
            jail.set_env("EVENTPULSE_TRANSPORT__KIND", "nats");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("nats"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn token_never_serialises() {
        let mut c = Config::default();
        c.admin.token = Some(SecretString::from("hunter2"));
        let text = toml::to_string(&c).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
