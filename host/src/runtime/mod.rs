//! The WebAssembly runtime: one wasmtime `Engine` with the pooling
//! allocator, fuel and epoch interruption; components compiled once and
//! cached on disk; a fresh `Store` per invocation.
//!
//! This module owns sandboxing and the contract check. It does not know
//! about the plugin directory (see `registry`) or about event transport.

pub mod audit;
mod bindings;
mod breaker;
mod conversions;
mod docker;
mod host;
pub(crate) mod kube;
pub mod manifest;
mod plugin;
pub mod rehearsal;
mod smtp;
mod tls;

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker, types::ComponentItem};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use audit::{Audit, AuditRecord};
pub use bindings::types;
pub use breaker::{Breaker, BreakerState};
pub use docker::{CREATED_BY, DockerHost, REPLICA_OF};
pub use host::{HostState, StateMap, StateOverlay};
pub use manifest::Manifest;
pub use plugin::{Invocation, Plugin};

use crate::config::RuntimeConfig;

/// The WIT package version this host speaks (`wit/`).
pub const CONTRACT_VERSION: &str = "0.1.0";
const CONTRACT_PACKAGE: &str = "eventpulse:plugin";

/// How often the epoch advances, i.e. how often a running guest yields.
const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Why loading or invoking a plugin failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum Error {
    /// The guest trapped (panic, unreachable, stack overflow, ...).
    #[error("plugin trapped: {0}")]
    Trap(String),
    /// The invocation ran past its wall-clock deadline.
    #[error("plugin exceeded its {0} ms deadline")]
    Timeout(u64),
    /// The invocation used up its fuel.
    #[error("plugin ran out of fuel ({0} units)")]
    OutOfFuel(u64),
    /// The guest tried to grow memory past its limit.
    #[error("plugin exceeded its memory limit of {0} MiB")]
    Memory(u64),
    /// The guest returned something the contract does not allow.
    #[error("plugin returned invalid output: {0}")]
    InvalidOutput(String),
    /// The guest used a capability its manifest does not grant.
    #[error("plugin was denied capability `{0}` (not granted, or outside its grant)")]
    Denied(String),
    /// The plugin itself reported an error.
    #[error("plugin error ({}): {}", if *retryable { "retryable" } else { "permanent" }, message)]
    Plugin {
        /// Whether retrying may help.
        retryable: bool,
        /// What the plugin said.
        message: String,
        /// The earliest the remote side accepts another try, in ms.
        retry_after_ms: Option<u64>,
    },
    /// The plugin's circuit breaker is open.
    #[error("circuit breaker open for plugin `{0}`")]
    CircuitOpen(String),
    /// The plugin is disabled.
    #[error("plugin `{0}` is disabled")]
    Disabled(String),
    /// No plugin by that name is loaded.
    #[error("no plugin named `{0}` is loaded")]
    NotFound(String),
    /// The plugin is of another kind than the call needs.
    #[error("plugin `{name}` is a {actual}, not a {wanted}")]
    WrongKind {
        /// The plugin.
        name: String,
        /// Its kind.
        actual: &'static str,
        /// The kind the call needs.
        wanted: &'static str,
    },
    /// Built against a contract version this host does not speak.
    #[error(
        "{file}: built against {found}; this host speaks {CONTRACT_PACKAGE}@{CONTRACT_VERSION}"
    )]
    Incompatible {
        /// The component file.
        file: String,
        /// What it was built against.
        found: String,
    },
    /// The file could not be compiled, linked or described.
    #[error("{file}: {reason}")]
    Load {
        /// The component file.
        file: String,
        /// Why.
        reason: String,
    },
}

impl Error {
    /// A stable name for records and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Trap(_) => "trap",
            Error::Timeout(_) => "timeout",
            Error::OutOfFuel(_) => "out-of-fuel",
            Error::Memory(_) => "memory",
            Error::InvalidOutput(_) => "invalid-output",
            Error::Denied(_) => "denied",
            Error::Plugin { .. } => "plugin-error",
            Error::CircuitOpen(_) => "circuit-open",
            Error::Disabled(_) => "disabled",
            Error::NotFound(_) => "not-found",
            Error::WrongKind { .. } => "wrong-kind",
            Error::Incompatible { .. } => "incompatible",
            Error::Load { .. } => "load",
        }
    }

    /// Whether this is the sandbox stopping a misbehaving plugin (what the
    /// circuit breaker counts), as opposed to the plugin reporting an error.
    pub fn is_sandbox_failure(&self) -> bool {
        matches!(
            self,
            Error::Trap(_)
                | Error::Timeout(_)
                | Error::OutOfFuel(_)
                | Error::Memory(_)
                | Error::InvalidOutput(_)
                | Error::Denied(_)
        )
    }

    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Plugin { retryable, .. } => *retryable,
            Error::Timeout(_) | Error::CircuitOpen(_) => true,
            _ => false,
        }
    }

    /// How long the plugin was told to wait before trying again, if it was.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            Error::Plugin { retry_after_ms, .. } => *retry_after_ms,
            _ => None,
        }
    }
}

/// The host clock plugins see. Manual in tests, so rules stay testable.
#[derive(Clone, Debug, Default)]
pub struct Clock(Option<Arc<AtomicU64>>);

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock(None)
    }

    /// A clock that only moves when told to.
    pub fn manual(start_ms: u64) -> Clock {
        Clock(Some(Arc::new(AtomicU64::new(start_ms))))
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        match &self.0 {
            Some(t) => t.load(Ordering::Relaxed),
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        }
    }

    /// Set a manual clock to `ms` (no effect on the system clock).
    pub fn set(&self, ms: u64) {
        if let Some(t) = &self.0 {
            t.store(ms, Ordering::Relaxed);
        }
    }

    /// Move a manual clock forward (no effect on the system clock).
    pub fn advance(&self, ms: u64) {
        if let Some(t) = &self.0 {
            t.fetch_add(ms, Ordering::Relaxed);
        }
    }
}

/// The engine, the linker and the compile cache, shared by every plugin.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    cache_dir: PathBuf,
    max_memory_mb: u64,
    tuning: Tuning,
    ticker: EpochTicker,
    docker: DockerHost,
    audit: Audit,
    metrics: crate::telemetry::Metrics,
    /// Set when capabilities are stubs that record (see [`rehearsal`]).
    rehearsal: Option<rehearsal::Rehearsal>,
}

/// The engine-and-pooling settings the engine was built with.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Runtime-wide limits.
    pub limits: RuntimeConfig,
    /// Use the pooling allocator (off only to measure what it buys).
    pub pooling: bool,
    /// What a fresh sandbox avoids doing.
    pub tuning: Tuning,
}

impl RuntimeOptions {
    /// The production settings: pooling and every [`Tuning`] on.
    pub fn new(limits: RuntimeConfig) -> RuntimeOptions {
        RuntimeOptions {
            limits,
            pooling: true,
            tuning: Tuning::default(),
        }
    }
}

/// Work a fresh sandbox skips or makes cheaper. Every switch is on by
/// default; the invoke benchmark turns each off in turn, so what it is
/// worth stays visible. None of them changes what a plugin can observe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Build the WASI context (clocks, random sources, stdio pipes) on the
    /// guest's first WASI call instead of with every `Store`.
    pub lazy_wasi: bool,
    /// Map a plugin's initial memory from a copy-on-write image of its data
    /// segments instead of copying them in per instance.
    pub memory_cow: bool,
    /// On reuse of a pooled memory slot, reset the pages the last instance
    /// touched with `memset` (and find them with `PAGEMAP_SCAN`) instead of
    /// handing them back to the kernel and faulting them in again.
    pub keep_resident: bool,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            lazy_wasi: true,
            memory_cow: true,
            keep_resident: true,
        }
    }
}

impl Runtime {
    /// Build the engine and linker; compiled components go to `cache_dir`.
    pub fn new(cache_dir: &Path, options: &RuntimeOptions) -> anyhow::Result<Runtime> {
        Self::build(cache_dir, options, None)
    }

    /// A runtime whose `docker`, `kube`, `smtp` and HTTP capabilities are
    /// recording stubs: plugins loaded into it touch nothing outside, and
    /// the returned [`rehearsal::Rehearsal`] lists what they called.
    pub fn rehearsing(
        cache_dir: &Path,
        options: &RuntimeOptions,
    ) -> anyhow::Result<(Runtime, rehearsal::Rehearsal)> {
        let recorded = rehearsal::Rehearsal::default();
        let runtime = Self::build(cache_dir, options, Some(recorded.clone()))?;
        Ok((runtime, recorded))
    }

    /// A runtime for replays: like [`Runtime::rehearsing`], but every
    /// capability call a plugin is granted is refused with `why`.
    pub fn replaying(
        cache_dir: &Path,
        options: &RuntimeOptions,
        why: &str,
    ) -> anyhow::Result<(Runtime, rehearsal::Rehearsal)> {
        let recorded = rehearsal::Rehearsal::refusing(why);
        let runtime = Self::build(cache_dir, options, Some(recorded.clone()))?;
        Ok((runtime, recorded))
    }

    fn build(
        cache_dir: &Path,
        options: &RuntimeOptions,
        rehearsal: Option<rehearsal::Rehearsal>,
    ) -> anyhow::Result<Runtime> {
        let limits = &options.limits;
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.consume_fuel(true);
        config.epoch_interruption(true);
        config.memory_init_cow(options.tuning.memory_cow);
        if options.pooling {
            let mut pool = PoolingAllocationConfig::default();
            pool.total_component_instances(limits.max_instances);
            pool.total_core_instances(limits.max_instances * 4);
            pool.total_memories(limits.max_instances * 2);
            pool.total_tables(limits.max_instances * 4);
            pool.total_stacks(limits.max_instances);
            pool.max_memory_size((limits.max_memory_mb as usize) << 20);
            if options.tuning.keep_resident {
                // Instances are short-lived and slots are reused at once:
                // reset the pages a plugin touched with memset instead of
                // handing them back to the kernel, so the next instance
                // does not fault them in.
                pool.linear_memory_keep_resident(4 << 20);
                pool.table_keep_resident(1 << 20);
                pool.async_stack_keep_resident(512 << 10);
                pool.pagemap_scan(wasmtime::Enabled::Auto);
            } else {
                pool.pagemap_scan(wasmtime::Enabled::No);
            }
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&config)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        {
            use bindings::eventpulse::plugin::{
                clock, config, docker, kube, log, smtp, state, timer,
            };
            type Data = wasmtime::component::HasSelf<HostState>;
            log::add_to_linker::<_, Data>(&mut linker, |s| s)?;
            clock::add_to_linker::<_, Data>(&mut linker, |s| s)?;
            state::add_to_linker::<_, Data>(&mut linker, |s| s)?;
            timer::add_to_linker::<_, Data>(&mut linker, |s| s)?;
            config::add_to_linker::<_, Data>(&mut linker, |s| s)?;
            if rehearsal.is_none() {
                docker::add_to_linker::<_, Data>(&mut linker, |s| s)?;
                kube::add_to_linker::<_, Data>(&mut linker, |s| s)?;
                smtp::add_to_linker::<_, Data>(&mut linker, |s| s)?;
            } else {
                use rehearsal::{Stubbed, Stubs};
                docker::add_to_linker::<_, Stubs>(&mut linker, |s| Stubbed(s))?;
                kube::add_to_linker::<_, Stubs>(&mut linker, |s| Stubbed(s))?;
                smtp::add_to_linker::<_, Stubs>(&mut linker, |s| Stubbed(s))?;
            }
        }

        std::fs::create_dir_all(cache_dir)?;
        Ok(Runtime {
            ticker: EpochTicker::start(engine.clone()),
            engine,
            linker,
            cache_dir: cache_dir.to_owned(),
            max_memory_mb: limits.max_memory_mb,
            tuning: options.tuning,
            docker: DockerHost {
                url: limits.docker_host.clone(),
                cert_path: limits.docker_cert_path.clone(),
            },
            audit: Audit::log_only(),
            metrics: crate::telemetry::Metrics::new(),
            rehearsal,
        })
    }

    /// Send capability audit records to `audit` (default: log only).
    pub fn with_audit(mut self, audit: Audit) -> Runtime {
        self.audit = audit;
        self
    }

    /// Count invocations and capability calls in `metrics` (default: a
    /// registry of its own that nobody reads).
    pub fn with_metrics(mut self, metrics: crate::telemetry::Metrics) -> Runtime {
        self.metrics = metrics;
        self
    }

    /// Where invocations and capability calls are counted.
    pub fn metrics(&self) -> &crate::telemetry::Metrics {
        &self.metrics
    }

    /// Compile `bytes`, or load the cached compilation. The cache key covers
    /// the content and everything that makes a compilation loadable (engine
    /// version and configuration).
    pub fn compile(&self, file: &str, bytes: &[u8]) -> Result<Component, Error> {
        let load_err = |reason: String| Error::Load {
            file: file.to_owned(),
            reason,
        };
        let mut engine_hash = std::hash::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hash);
        let digest = hex::encode(Sha256::digest(bytes));
        let cached = self
            .cache_dir
            .join(format!("{digest}-{:016x}.cwasm", engine_hash.finish()));
        if cached.exists() {
            // SAFETY: only files this host wrote into its own cache directory
            // are deserialised, and the key pins the engine configuration.
            #[allow(unsafe_code)]
            match unsafe { Component::deserialize_file(&self.engine, &cached) } {
                Ok(component) => return Ok(component),
                Err(e) => tracing::warn!(file, error = %e, "ignoring unusable cache entry"),
            }
        }
        let component =
            Component::new(&self.engine, bytes).map_err(|e| load_err(format!("{e:#}")))?;
        match component.serialize() {
            Ok(compiled) => {
                let tmp = cached.with_extension(format!("tmp{:016x}", rand::random::<u64>()));
                if let Err(e) =
                    std::fs::write(&tmp, compiled).and_then(|()| std::fs::rename(&tmp, &cached))
                {
                    tracing::warn!(file, error = %e, "could not write compile cache");
                }
            }
            Err(e) => tracing::warn!(file, error = %e, "could not serialise component"),
        }
        Ok(component)
    }

    /// Which plugin kind `component` exports, and the exported interface's
    /// full name, after checking that it speaks this host's contract version.
    fn check_contract(
        &self,
        file: &str,
        component: &Component,
    ) -> Result<(PluginKind, String), Error> {
        let ty = component.component_type();
        let incompatible = |name: &str| Error::Incompatible {
            file: file.to_owned(),
            found: name
                .split_once('/')
                .and_then(|(pkg, rest)| rest.split_once('@').map(|(_, v)| format!("{pkg}@{v}")))
                .unwrap_or_else(|| name.to_owned()),
        };
        let mut kind = None;
        for (name, item) in ty.exports(&self.engine) {
            let Some((iface, version)) = contract_name(name) else {
                continue;
            };
            if !compatible(version) {
                return Err(incompatible(name));
            }
            if let ComponentItem::ComponentInstance(_) = item.ty {
                let found = match iface {
                    "rule-plugin" => Some(PluginKind::Rule),
                    "action-plugin" => Some(PluginKind::Action),
                    "notifier-plugin" => Some(PluginKind::Notifier),
                    _ => None,
                };
                if let Some(found) = found {
                    kind = Some((found, name.to_owned()));
                }
            }
        }
        for (name, _) in ty.imports(&self.engine) {
            if let Some((_, version)) = contract_name(name)
                && !compatible(version)
            {
                return Err(incompatible(name));
            }
        }
        kind.ok_or_else(|| Error::Load {
            file: file.to_owned(),
            reason: format!(
                "not an EventPulse plugin: exports none of {CONTRACT_PACKAGE}/rule-plugin, \
                 action-plugin or notifier-plugin"
            ),
        })
    }

    /// The engine (for tests and benchmarks).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Stop the epoch ticker; invocations after this never time out by epoch.
    pub fn shutdown(&self) {
        self.ticker.stop.store(true, Ordering::Relaxed);
    }
}

/// `eventpulse:plugin/<iface>@<version>` → `(iface, version)`.
fn contract_name(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(CONTRACT_PACKAGE)?.strip_prefix('/')?;
    Some(rest.split_once('@').unwrap_or((rest, "")))
}

/// Semver compatibility in the 0.x sense: same major and minor.
fn compatible(version: &str) -> bool {
    let minor = |v: &str| {
        let mut parts = v.split('.');
        (
            parts.next().map(str::to_owned),
            parts.next().map(str::to_owned),
        )
    };
    minor(version) == minor(CONTRACT_VERSION)
}

/// What a plugin is, from the interface its component exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    /// Exports `rule-plugin`.
    Rule,
    /// Exports `action-plugin`.
    Action,
    /// Exports `notifier-plugin`.
    Notifier,
}

impl PluginKind {
    /// `rule`, `action` or `notifier`.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Rule => "rule",
            PluginKind::Action => "action",
            PluginKind::Notifier => "notifier",
        }
    }
}

/// Advances the engine epoch so deadlines fire; a plain thread, since it
/// must keep ticking while every async worker is busy running guests.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: Engine) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("eventpulse-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawn epoch thread");
        EpochTicker { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_versions() {
        assert!(compatible("0.1.0"));
        assert!(compatible("0.1.7"));
        assert!(!compatible("0.2.0"));
        assert!(!compatible(""));
        assert_eq!(
            contract_name("eventpulse:plugin/rule-plugin@0.1.0"),
            Some(("rule-plugin", "0.1.0"))
        );
        assert_eq!(contract_name("wasi:cli/stderr@0.2.0"), None);
    }
}
