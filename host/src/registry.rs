//! The plugin directory is the registry: every `name.wasm` (with an optional
//! `name.toml` manifest beside it) is a plugin called `name`. Adding,
//! replacing or deleting files takes effect on the next reload, which the
//! watcher triggers after a quiet period.
//!
//! A file that fails to load is refused with its reason; if an earlier
//! version of the same plugin was loaded, that version keeps serving.
//! In-flight invocations hold the version they started with. Enablement is
//! persisted in the store.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::config::RuntimeConfig;
use crate::model;
use crate::runtime::manifest::Limits;
use crate::runtime::{
    self, Breaker, BreakerState, Clock, Manifest, Plugin, PluginKind, Runtime, StateMap, types,
};
use crate::store::{self, Store};

/// What a registry operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The plugin (or the sandbox) failed.
    #[error(transparent)]
    Plugin(#[from] runtime::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The plugin directory could not be read.
    #[error("plugin directory {}: {source}", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// One name in the directory.
struct Slot {
    plugin: Option<Arc<Plugin>>,
    /// Why the current files were refused, if they were.
    error: Option<String>,
    enabled: bool,
    /// Hash of the `.wasm` and `.toml` last looked at, to skip unchanged files.
    source: [u8; 32],
}

/// A plugin as the admin API lists it. Never includes config or secrets.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PluginStatus {
    /// Registry name (file stem).
    pub name: String,
    /// Whether invocations are allowed.
    pub enabled: bool,
    /// Whether a version is loaded and serving.
    pub loaded: bool,
    /// Why the current files were refused.
    pub error: Option<String>,
    /// Rule, action or notifier.
    pub kind: Option<PluginKind>,
    /// Version from `describe`.
    pub version: Option<String>,
    /// Description from `describe`.
    pub description: Option<String>,
    /// Event kinds and labels it subscribes to: `{kind, labels: [[name, value]]}`.
    #[schema(value_type = Vec<Object>)]
    pub subscriptions: Vec<types::Subscription>,
    /// Granted capabilities (names only).
    pub grants: Vec<&'static str>,
    /// Limits in force.
    pub limits: Option<Limits>,
    /// Circuit breaker state.
    pub breaker: Option<BreakerState>,
    /// Short content hash of the loaded component.
    pub digest: Option<String>,
}

/// An invocation's output with its state writes, not yet committed.
pub struct Pending<T> {
    /// What the plugin returned.
    pub output: T,
    /// Its state writes, for the caller's transaction.
    pub state: PluginState,
}

/// State writes of one invocation, to commit and then apply.
pub struct PluginState {
    /// The plugin that wrote them.
    pub plugin: Arc<Plugin>,
    /// The writes.
    pub writes: Vec<model::StateWrite>,
}

impl PluginState {
    /// After the transaction holding the writes committed: the in-memory
    /// state follows the store.
    pub fn committed(&self) {
        self.plugin.apply_writes(&self.writes);
    }
}

impl<T> Pending<T> {
    fn new(plugin: Arc<Plugin>, inv: runtime::Invocation<T>) -> Self {
        Pending {
            output: inv.output,
            state: PluginState {
                plugin,
                writes: inv.writes,
            },
        }
    }
}

/// The plugin registry.
pub struct Registry {
    runtime: Arc<Runtime>,
    store: Store,
    dir: PathBuf,
    clock: Clock,
    limits: RuntimeConfig,
    slots: RwLock<BTreeMap<String, Slot>>,
    /// Plugin state by name, kept across versions of a plugin.
    states: Mutex<HashMap<String, Arc<StateMap>>>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    /// Circuit breakers per (action plugin, target).
    target_breakers: Mutex<BTreeMap<(String, String), Arc<Breaker>>>,
    /// Set once a reload has scanned the directory.
    loaded: std::sync::atomic::AtomicBool,
}

/// The breaker of an action plugin on one target, for the admin API.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct TargetBreaker {
    /// The action plugin.
    pub plugin: String,
    /// What it acts on.
    pub target: String,
    /// Where the breaker stands.
    pub state: BreakerState,
}

impl Registry {
    /// Where the host's metrics are counted (the runtime's).
    pub fn metrics(&self) -> &crate::telemetry::Metrics {
        self.runtime.metrics()
    }

    /// The clock plugins see (manual in tests); the pipeline times
    /// notification deduplication by it too.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// A registry over `dir`. Call [`Registry::reload`] to load it.
    pub fn new(
        runtime: Arc<Runtime>,
        store: Store,
        dir: &Path,
        clock: Clock,
        limits: RuntimeConfig,
    ) -> Self {
        Registry {
            runtime,
            store,
            dir: dir.to_owned(),
            clock,
            limits,
            slots: RwLock::new(BTreeMap::new()),
            states: Mutex::new(HashMap::new()),
            reloading: tokio::sync::Mutex::new(()),
            target_breakers: Mutex::default(),
            loaded: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether the directory has been loaded at least once.
    pub fn has_loaded(&self) -> bool {
        self.loaded.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The breaker of action `plugin` acting on `target`, configured by
    /// the plugin's manifest (`[safety]`) when first used.
    pub fn target_breaker(&self, plugin: &str, target: &str) -> Arc<Breaker> {
        let mut breakers = self.target_breakers.lock().expect("breakers lock");
        breakers
            .entry((plugin.to_owned(), target.to_owned()))
            .or_insert_with(|| {
                let safety = self
                    .get(plugin)
                    .map(|p| p.manifest().safety.clone())
                    .unwrap_or_default();
                Arc::new(Breaker::new(
                    safety.breaker_threshold,
                    Duration::from_secs(safety.breaker_open_secs),
                ))
            })
            .clone()
    }

    /// Every (action plugin, target) breaker used so far.
    pub fn target_breakers(&self) -> Vec<TargetBreaker> {
        let breakers = self.target_breakers.lock().expect("breakers lock");
        breakers
            .iter()
            .map(|((plugin, target), b)| TargetBreaker {
                plugin: plugin.clone(),
                target: target.clone(),
                state: b.state(),
            })
            .collect()
    }

    /// The directory this registry serves.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bring the loaded set in line with the directory.
    pub async fn reload(&self) -> Result<(), Error> {
        let _one = self.reloading.lock().await;
        let enablement = self.store.plugin_enablement().await?;
        let found = self.scan()?;

        let gone: Vec<String> = {
            let slots = self.slots.read().expect("registry lock");
            slots
                .keys()
                .filter(|n| !found.contains_key(*n))
                .cloned()
                .collect()
        };
        for name in gone {
            self.slots.write().expect("registry lock").remove(&name);
            tracing::info!(plugin.name = %name, "plugin unloaded: file removed");
        }

        for (name, (wasm, source)) in found {
            let unchanged = self
                .slots
                .read()
                .expect("registry lock")
                .get(&name)
                .is_some_and(|s| s.source == source);
            if unchanged {
                continue;
            }
            let result = self.load(&name, &wasm).await;
            let mut slots = self.slots.write().expect("registry lock");
            let slot = slots.entry(name.clone()).or_insert_with(|| Slot {
                plugin: None,
                error: None,
                enabled: enablement.get(&name).copied().unwrap_or(true),
                source,
            });
            slot.source = source;
            match result {
                Ok(plugin) => {
                    tracing::info!(
                        plugin.name = %name,
                        kind = plugin.kind().as_str(),
                        version = %plugin.info().version,
                        digest = plugin.digest(),
                        "plugin loaded"
                    );
                    slot.plugin = Some(Arc::new(plugin));
                    slot.error = None;
                }
                Err(e) => {
                    let keeps = if slot.plugin.is_some() {
                        "; the previous version keeps serving"
                    } else {
                        ""
                    };
                    tracing::warn!(plugin.name = %name, error = %e, "plugin refused{keeps}");
                    slot.error = Some(e.to_string());
                }
            }
        }
        self.loaded
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// `name → (wasm path, hash of wasm + manifest)` for every `.wasm` file.
    fn scan(&self) -> Result<BTreeMap<String, (PathBuf, [u8; 32])>, Error> {
        let dir_err = |source| Error::Dir {
            path: self.dir.clone(),
            source,
        };
        let mut found = BTreeMap::new();
        for entry in std::fs::read_dir(&self.dir).map_err(dir_err)? {
            let path = entry.map_err(dir_err)?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("wasm") {
                continue;
            }
            let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
                continue;
            };
            let mut hash = Sha256::new();
            // Unreadable files hash as empty and are refused at load.
            hash.update(std::fs::read(&path).unwrap_or_default());
            hash.update([0]);
            hash.update(std::fs::read(path.with_extension("toml")).unwrap_or_default());
            found.insert(name, (path, hash.finalize().into()));
        }
        Ok(found)
    }

    async fn load(&self, name: &str, wasm: &Path) -> Result<Plugin, runtime::Error> {
        let file = wasm.display().to_string();
        let load_err = |reason: String| runtime::Error::Load {
            file: file.clone(),
            reason,
        };
        let bytes = std::fs::read(wasm).map_err(|e| load_err(e.to_string()))?;
        let manifest =
            Manifest::load(&wasm.with_extension("toml")).map_err(|e| runtime::Error::Load {
                file: wasm.with_extension("toml").display().to_string(),
                reason: e,
            })?;
        let state = self
            .state_of(name)
            .await
            .map_err(|e| load_err(e.to_string()))?;
        Plugin::load(
            self.runtime.clone(),
            name,
            &file,
            bytes,
            manifest,
            state,
            self.clock.clone(),
            &self.limits,
        )
        .await
    }

    /// Re-read every loaded plugin's state from the store. With several
    /// instances (Kafka), another one may have committed state for the
    /// keys this one now handles (after a rebalance or a kill), so what
    /// this process holds is stale; the rule stage calls this before each
    /// batch there.
    pub async fn refresh_states(&self) -> Result<(), store::Error> {
        let states: Vec<(String, Arc<StateMap>)> = self
            .states
            .lock()
            .expect("states lock")
            .iter()
            .map(|(name, map)| (name.clone(), map.clone()))
            .collect();
        for (name, map) in states {
            let fresh = self.store.plugin_state(&name, self.clock.now_ms()).await?;
            *map.lock().expect("state lock") = fresh;
        }
        Ok(())
    }

    async fn state_of(&self, name: &str) -> Result<Arc<StateMap>, store::Error> {
        if let Some(s) = self.states.lock().expect("states lock").get(name) {
            return Ok(s.clone());
        }
        let loaded = Arc::new(StateMap::new(
            self.store.plugin_state(name, self.clock.now_ms()).await?,
        ));
        Ok(self
            .states
            .lock()
            .expect("states lock")
            .entry(name.to_owned())
            .or_insert(loaded)
            .clone())
    }

    /// Every plugin in the directory, loaded or refused.
    pub fn list(&self) -> Vec<PluginStatus> {
        let slots = self.slots.read().expect("registry lock");
        slots
            .iter()
            .map(|(name, slot)| status(name, slot))
            .collect()
    }

    /// One plugin's status.
    pub fn status(&self, name: &str) -> Option<PluginStatus> {
        let slots = self.slots.read().expect("registry lock");
        slots.get(name).map(|slot| status(name, slot))
    }

    /// The serving version of an enabled plugin.
    pub fn get(&self, name: &str) -> Result<Arc<Plugin>, runtime::Error> {
        let slots = self.slots.read().expect("registry lock");
        match slots.get(name) {
            Some(Slot {
                plugin: Some(p),
                enabled: true,
                ..
            }) => Ok(p.clone()),
            Some(Slot {
                plugin: Some(_),
                enabled: false,
                ..
            }) => Err(runtime::Error::Disabled(name.to_owned())),
            _ => Err(runtime::Error::NotFound(name.to_owned())),
        }
    }

    /// The `[safety]` of a loaded plugin, enabled or not (an action
    /// requested while its plugin is disabled is still guarded by it).
    pub fn safety(&self, name: &str) -> Option<crate::runtime::manifest::Safety> {
        self.loaded(name).ok().map(|p| p.manifest().safety.clone())
    }

    /// The serving version of a plugin, enabled or not.
    fn loaded(&self, name: &str) -> Result<Arc<Plugin>, runtime::Error> {
        let slots = self.slots.read().expect("registry lock");
        slots
            .get(name)
            .and_then(|s| s.plugin.clone())
            .ok_or_else(|| runtime::Error::NotFound(name.to_owned()))
    }

    /// Enabled rules with a `[schedule]`: (name, period in ms).
    pub fn schedules(&self) -> Vec<(String, u64)> {
        let slots = self.slots.read().expect("registry lock");
        slots
            .iter()
            .filter(|(_, s)| s.enabled)
            .filter_map(|(name, s)| {
                let p = s.plugin.as_ref()?;
                let every = p.manifest().schedule.every_secs;
                (p.kind() == PluginKind::Rule && every > 0).then(|| (name.clone(), every * 1000))
            })
            .collect()
    }

    /// Enabled rules subscribed to `event`, in name order.
    pub fn rules_for(&self, event: &model::Event) -> Vec<Arc<Plugin>> {
        let slots = self.slots.read().expect("registry lock");
        slots
            .values()
            .filter(|s| s.enabled)
            .filter_map(|s| s.plugin.clone())
            .filter(|p| p.kind() == PluginKind::Rule && p.subscribes_to(event))
            .collect()
    }

    /// Enable or disable a plugin, persistently.
    pub async fn set_enabled(&self, name: &str, enabled: bool) -> Result<(), Error> {
        if !self.slots.read().expect("registry lock").contains_key(name) {
            return Err(runtime::Error::NotFound(name.to_owned()).into());
        }
        self.store.set_plugin_enabled(name, enabled).await?;
        if let Some(slot) = self.slots.write().expect("registry lock").get_mut(name) {
            slot.enabled = enabled;
        }
        tracing::info!(plugin.name = %name, enabled, "plugin enablement changed");
        Ok(())
    }

    /// Close a plugin's circuit breaker.
    pub fn reset_breaker(&self, name: &str) -> Result<(), runtime::Error> {
        self.loaded(name)?.reset_breaker();
        tracing::info!(plugin.name = %name, "circuit breaker reset");
        Ok(())
    }

    /// Ask enabled rule `name` about `event`; its state writes are persisted.
    pub async fn decide(&self, name: &str, event: &model::Event) -> Result<types::Decision, Error> {
        let plugin = self.get(name)?;
        let result = plugin.decide(event).await;
        self.finish(&plugin, "decide", result, true).await
    }

    /// Ask rule `name` (enabled or not) about `event` without keeping any
    /// state change: a dry run.
    pub async fn dry_run(
        &self,
        name: &str,
        event: &model::Event,
    ) -> Result<types::Decision, Error> {
        let plugin = self.loaded(name)?;
        let result = plugin.decide(event).await;
        self.finish(&plugin, "decide", result, false).await
    }

    /// Run action `name` and commit its state writes on their own.
    pub async fn run_action(
        &self,
        name: &str,
        event: &model::Event,
        request: &types::ActionRequest,
    ) -> Result<types::ActionResult, Error> {
        let plugin = self.get(name)?;
        let result = plugin.run(event, request).await;
        self.finish(&plugin, "run", result, true).await
    }

    /// Deliver through notifier `name` and commit its state writes on
    /// their own.
    pub async fn deliver(
        &self,
        name: &str,
        event: &model::Event,
        request: &types::NotificationRequest,
    ) -> Result<types::Delivery, Error> {
        let plugin = self.get(name)?;
        let result = plugin.deliver(event, request).await;
        self.finish(&plugin, "deliver", result, true).await
    }

    /// Run action `name`; its state writes are the caller's to commit (the
    /// action queue commits them with the job's end).
    pub async fn invoke_action(
        &self,
        name: &str,
        event: &model::Event,
        request: &types::ActionRequest,
    ) -> Result<Pending<types::ActionResult>, Error> {
        let plugin = self.get(name)?;
        let result = plugin.run(event, request).await;
        let inv = self.observe(&plugin, "run", result).await?;
        Ok(Pending::new(plugin, inv))
    }

    /// Deliver through notifier `name`; its state writes are the caller's
    /// to commit (the notification queue commits them with the job's end).
    pub async fn invoke_notifier(
        &self,
        name: &str,
        event: &model::Event,
        request: &types::NotificationRequest,
    ) -> Result<Pending<types::Delivery>, Error> {
        let plugin = self.get(name)?;
        let result = plugin.deliver(event, request).await;
        let inv = self.observe(&plugin, "deliver", result).await?;
        Ok(Pending::new(plugin, inv))
    }

    /// Record a sandbox failure of `result`, if it is one, and pass the
    /// result on. State writes of a success are the caller's to commit.
    pub async fn observe<T>(
        &self,
        plugin: &Plugin,
        operation: &str,
        result: Result<runtime::Invocation<T>, runtime::Error>,
    ) -> Result<runtime::Invocation<T>, runtime::Error> {
        if let Err(e) = &result
            && e.is_sandbox_failure()
            && let Err(db) = self
                .store
                .record_failure(plugin.name(), operation, e.kind(), &e.to_string())
                .await
        {
            tracing::error!(plugin.name = plugin.name(), error = %db, "could not record plugin failure");
        }
        result
    }

    /// Persist state writes of a success, record a sandbox failure.
    async fn finish<T>(
        &self,
        plugin: &Plugin,
        operation: &str,
        result: Result<runtime::Invocation<T>, runtime::Error>,
        commit: bool,
    ) -> Result<T, Error> {
        let inv = self.observe(plugin, operation, result).await?;
        if commit && !inv.writes.is_empty() {
            self.store
                .write_plugin_state(plugin.name(), &inv.writes)
                .await?;
            plugin.apply_writes(&inv.writes);
        }
        Ok(inv.output)
    }

    /// The newest recorded sandbox failures of a plugin.
    pub async fn failures(
        &self,
        name: &str,
        limit: u32,
    ) -> Result<Vec<store::FailureRecord>, Error> {
        Ok(self.store.plugin_failures(name, limit).await?)
    }

    /// Reload whenever the directory changes, after `debounce` of quiet,
    /// until `cancel` fires.
    pub async fn watch(
        self: Arc<Self>,
        debounce: Duration,
        cancel: CancellationToken,
    ) -> anyhow::Result<()> {
        use notify::RecursiveMode;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut debouncer = notify_debouncer_mini::new_debouncer(
            debounce,
            move |res: notify_debouncer_mini::DebounceEventResult| {
                let _ = tx.send(res);
            },
        )?;
        debouncer
            .watcher()
            .watch(&self.dir, RecursiveMode::NonRecursive)?;
        tracing::info!(dir = %self.dir.display(), "watching plugin directory");
        // Catch changes made between the initial load and the watch starting.
        if let Err(e) = self.reload().await {
            tracing::error!(error = %e, "plugin reload failed");
        }
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                event = rx.recv() => match event {
                    None => anyhow::bail!("plugin directory watcher stopped"),
                    Some(Err(e)) => tracing::warn!(error = %e, "plugin directory watch error"),
                    Some(Ok(_)) => {
                        if let Err(e) = self.reload().await {
                            tracing::error!(error = %e, "plugin reload failed");
                        }
                    }
                },
            }
        }
    }
}

fn status(name: &str, slot: &Slot) -> PluginStatus {
    let p = slot.plugin.as_deref();
    PluginStatus {
        name: name.to_owned(),
        enabled: slot.enabled,
        loaded: p.is_some(),
        error: slot.error.clone(),
        kind: p.map(Plugin::kind),
        version: p.map(|p| p.info().version.clone()),
        description: p.map(|p| p.info().description.clone()),
        subscriptions: p
            .map(|p| p.info().subscriptions.clone())
            .unwrap_or_default(),
        grants: p.map(|p| p.manifest().granted()).unwrap_or_default(),
        limits: p.map(|p| p.manifest().limits.clone()),
        breaker: p.map(Plugin::breaker_state),
        digest: p.map(|p| p.digest().to_owned()),
    }
}
