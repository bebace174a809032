//! One loaded plugin: its compiled component as an `InstancePre`, its
//! manifest, breaker and concurrency limit, and the invocation path
//! (fresh `Store`, fuel, deadline, memory limit, classification of how it
//! ended, validation of what it returned).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tracing::Instrument;
use wasmtime::Store;
use wasmtime::component::{ComponentExportIndex, ComponentNamedList, InstancePre, Lift, Lower};

use super::bindings::types;
use super::breaker::{Breaker, BreakerState};
use super::host::{HostState, PluginEnv, StateMap, StateOverlay};
use super::manifest::Manifest;
use super::{Clock, Error, PluginKind, Runtime};
use crate::config::RuntimeConfig;
use crate::model::{self, StateWrite};

/// A plugin's exported functions, found once at load. An invocation then
/// looks up and type-checks only the one function it calls.
struct Exports {
    pre: InstancePre<HostState>,
    describe: ComponentExportIndex,
    /// `decide`, `run` or `deliver`.
    handle: ComponentExportIndex,
    /// A rule's `on-action-completed` and `on-action-failed`.
    outcomes: Option<(ComponentExportIndex, ComponentExportIndex)>,
}

impl Exports {
    fn find(
        pre: InstancePre<HostState>,
        interface: &str,
        kind: PluginKind,
    ) -> Result<Exports, String> {
        let component = pre.component();
        let (_, iface) = component
            .get_export(None, interface)
            .ok_or_else(|| format!("no export `{interface}`"))?;
        let func = |name: &str| {
            component
                .get_export_index(Some(&iface), name)
                .ok_or_else(|| format!("`{interface}` exports no `{name}`"))
        };
        let (handle, outcomes) = match kind {
            PluginKind::Rule => (
                func("decide")?,
                Some((func("on-action-completed")?, func("on-action-failed")?)),
            ),
            PluginKind::Action => (func("run")?, None),
            PluginKind::Notifier => (func("deliver")?, None),
        };
        Ok(Exports {
            describe: func("describe")?,
            handle,
            outcomes,
            pre,
        })
    }
}

/// A plugin ready to invoke. Cheap to share: in-flight invocations keep the
/// version they started with alive while the registry swaps in a new one.
pub struct Plugin {
    env: Arc<PluginEnv>,
    exports: Exports,
    info: types::PluginInfo,
    kind: PluginKind,
    digest: String,
    breaker: Breaker,
    slots: Semaphore,
    runtime: Arc<Runtime>,
}

/// A successful invocation: the output, and the state writes to apply if
/// the caller commits it.
#[derive(Debug)]
pub struct Invocation<T> {
    /// What the plugin returned.
    pub output: T,
    /// State changes made during the call.
    pub writes: Vec<StateWrite>,
    /// Timers set or cancelled during the call (rules only).
    pub timers: Vec<crate::model::TimerWrite>,
}

/// What every export returns: its output or the plugin's own error.
type Returned<T> = (Result<T, types::PluginError>,);

/// Upper bounds on what one decision may ask for.
const MAX_DECISION_ITEMS: usize = 64;
const MAX_TEXT: usize = 64 * 1024;

impl Plugin {
    /// Compile (or load from cache), check the contract, link, and call
    /// `describe` once in the sandbox. `state` is carried over from a
    /// previous version of the same plugin, if any.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn load(
        runtime: Arc<Runtime>,
        name: &str,
        file: &str,
        bytes: Vec<u8>,
        manifest: Manifest,
        state: Arc<StateMap>,
        clock: Clock,
        limits: &RuntimeConfig,
    ) -> Result<Plugin, Error> {
        let load_err = |reason: String| Error::Load {
            file: file.to_owned(),
            reason,
        };
        let digest = {
            use sha2::{Digest, Sha256};
            hex::encode(&Sha256::digest(&bytes)[..8])
        };
        // Compiling is CPU-bound (tens of ms); keep it off the async workers.
        let (rt, f) = (runtime.clone(), file.to_owned());
        let component = tokio::task::spawn_blocking(move || rt.compile(&f, &bytes))
            .await
            .map_err(|e| load_err(format!("compile task failed: {e}")))??;
        let (kind, interface) = runtime.check_contract(file, &component)?;
        let pre = runtime
            .linker
            .instantiate_pre(&component)
            .map_err(|e| load_err(format!("cannot link: {e:#}")))?;
        let exports = Exports::find(pre, &interface, kind)
            .map_err(|e| load_err(format!("cannot link: {e}")))?;
        let secrets = manifest.resolve_secrets().map_err(load_err)?;
        let mut manifest = manifest;
        manifest.limits.memory_mb = manifest.limits.memory_mb.min(runtime.max_memory_mb);
        let env = Arc::new(PluginEnv {
            name: name.to_owned(),
            config: manifest.config_strings(),
            manifest,
            secrets,
            state,
            clock,
            docker: runtime.docker.clone(),
            audit: runtime.audit.clone(),
            metrics: runtime.metrics.clone(),
            kube_client: std::sync::OnceLock::new(),
            http_client: std::sync::OnceLock::new(),
            rehearsal: runtime.rehearsal.clone(),
        });
        let mut plugin = Plugin {
            slots: Semaphore::new(env.manifest.limits.max_concurrency.max(1) as usize),
            env,
            exports,
            info: types::PluginInfo {
                name: name.to_owned(),
                version: String::new(),
                kind: types::PluginKind::Rule,
                description: String::new(),
                subscriptions: Vec::new(),
            },
            kind,
            digest,
            breaker: Breaker::new(
                limits.breaker_threshold,
                Duration::from_secs(limits.breaker_open_secs),
            ),
            runtime,
        };
        plugin
            .typecheck()
            .await
            .map_err(|e| load_err(format!("cannot link: {e:#}")))?;
        let info = plugin
            .describe()
            .await
            .map_err(|e| load_err(format!("describe failed: {e}")))?;
        let declared = match info.kind {
            types::PluginKind::Rule => PluginKind::Rule,
            types::PluginKind::Action => PluginKind::Action,
            types::PluginKind::Notifier => PluginKind::Notifier,
        };
        if declared != kind {
            return Err(load_err(format!(
                "describe says {} but the component exports a {}",
                declared.as_str(),
                kind.as_str()
            )));
        }
        plugin.info = info;
        Ok(plugin)
    }

    /// The registry name.
    pub fn name(&self) -> &str {
        &self.env.name
    }

    /// What `describe` returned at load.
    pub fn info(&self) -> &types::PluginInfo {
        &self.info
    }

    /// Rule, action or notifier.
    pub fn kind(&self) -> PluginKind {
        self.kind
    }

    /// The manifest in force.
    pub fn manifest(&self) -> &Manifest {
        &self.env.manifest
    }

    /// Short content hash of the component.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The circuit breaker's state.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// Close the circuit breaker.
    pub fn reset_breaker(&self) {
        self.breaker.reset()
    }

    /// Whether this plugin wants `event` (kind and labels).
    pub fn subscribes_to(&self, event: &model::Event) -> bool {
        let labels = event.alert.as_ref().map(|a| &a.labels);
        self.info.subscriptions.iter().any(|s| {
            s.event_kind == event.kind
                && s.labels.iter().all(|(k, v)| {
                    labels
                        .into_iter()
                        .chain(std::iter::once(&event.labels))
                        .any(|ls| ls.iter().any(|(lk, lv)| lk == k && lv == v))
                })
        })
    }

    /// Apply committed state writes to the in-memory state.
    pub fn apply_writes(&self, writes: &[StateWrite]) {
        let mut state = self.env.state.lock().expect("state lock");
        for w in writes {
            match &w.value {
                Some(v) => state.insert(w.key.clone(), v.clone()),
                None => state.remove(&w.key),
            };
        }
    }

    /// A fresh store for one invocation: fuel, the memory limit, and an
    /// epoch deadline on which the guest yields to the async runtime every
    /// tick, so a spinning plugin never holds a worker thread and the
    /// deadline is an ordinary timeout (which also covers a host call that
    /// hangs).
    fn sandbox(&self, overlay: Option<Arc<StateOverlay>>) -> Store<HostState> {
        let limits = &self.env.manifest.limits;
        let mut store = Store::new(
            &self.runtime.engine,
            HostState::new(
                self.env.clone(),
                (limits.memory_mb as usize) << 20,
                self.runtime.tuning.lazy_wasi,
                overlay,
            ),
        );
        store.limiter(|s| &mut s.limiter);
        store.set_fuel(limits.fuel).expect("fuel is enabled");
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        store
    }

    /// Check every export against the contract's types once, at load, so
    /// a mismatch is a load error rather than a failure on some later event.
    async fn typecheck(&self) -> wasmtime::Result<()> {
        let mut store = self.sandbox(None);
        let i = self.exports.pre.instantiate_async(&mut store).await?;
        let e = &self.exports;
        i.get_typed_func::<(), (types::PluginInfo,)>(&mut store, &e.describe)?;
        type Event<'a> = &'a types::Event;
        match self.kind {
            PluginKind::Rule => {
                i.get_typed_func::<(Event<'_>,), Returned<types::Decision>>(&mut store, &e.handle)?;
                let (done, failed) = e.outcomes.as_ref().expect("rules have outcome handlers");
                for f in [done, failed] {
                    i.get_typed_func::<(Event<'_>, &types::ActionOutcome), Returned<types::Decision>>(
                        &mut store, f,
                    )?;
                }
            }
            PluginKind::Action => {
                i.get_typed_func::<(Event<'_>, &types::ActionRequest), Returned<types::ActionResult>>(
                    &mut store, &e.handle,
                )?;
            }
            PluginKind::Notifier => {
                i.get_typed_func::<(Event<'_>, &types::NotificationRequest), Returned<types::Delivery>>(
                    &mut store, &e.handle,
                )?;
            }
        }
        Ok(())
    }

    async fn describe(&self) -> Result<types::PluginInfo, Error> {
        let describe = &self.exports.describe;
        let info = self
            .invoke(
                "describe",
                None,
                |_| Ok(()),
                describe,
                (),
                |(info,)| Ok(info),
            )
            .await?;
        Ok(info.output)
    }

    fn wrong_kind(&self, wanted: PluginKind) -> Error {
        Error::WrongKind {
            name: self.env.name.clone(),
            actual: self.kind.as_str(),
            wanted: wanted.as_str(),
        }
    }

    fn require(&self, kind: PluginKind) -> Result<(), Error> {
        if self.kind == kind {
            Ok(())
        } else {
            Err(self.wrong_kind(kind))
        }
    }

    /// Ask a rule what `event` means.
    pub async fn decide(&self, event: &model::Event) -> Result<Invocation<types::Decision>, Error> {
        self.decide_after(event, None).await
    }

    /// [`Plugin::decide`], reading `overlay` (writes of earlier decisions
    /// not committed yet) before the committed state.
    pub async fn decide_after(
        &self,
        event: &model::Event,
        overlay: Option<Arc<StateOverlay>>,
    ) -> Result<Invocation<types::Decision>, Error> {
        self.require(PluginKind::Rule)?;
        let event = &types::Event::from(event);
        self.invoke(
            "decide",
            overlay,
            validate_decision,
            &self.exports.handle,
            (event,),
            |(r,)| r,
        )
        .await
    }

    /// Hand a rule the outcome of an action it asked for.
    pub async fn on_action_outcome(
        &self,
        event: &model::Event,
        outcome: &types::ActionOutcome,
    ) -> Result<Invocation<types::Decision>, Error> {
        self.on_action_outcome_after(event, outcome, None).await
    }

    /// [`Plugin::on_action_outcome`] over `overlay` (see [`Plugin::decide_after`]).
    pub async fn on_action_outcome_after(
        &self,
        event: &model::Event,
        outcome: &types::ActionOutcome,
        overlay: Option<Arc<StateOverlay>>,
    ) -> Result<Invocation<types::Decision>, Error> {
        self.require(PluginKind::Rule)?;
        let event = &types::Event::from(event);
        let (completed, failed) = self.exports.outcomes.as_ref().expect("rules have them");
        let (op, func) = match outcome.result {
            Ok(_) => ("on-action-completed", completed),
            Err(_) => ("on-action-failed", failed),
        };
        self.invoke(
            op,
            overlay,
            validate_decision,
            func,
            (event, outcome),
            |(r,)| r,
        )
        .await
    }

    /// Run an action.
    pub async fn run(
        &self,
        event: &model::Event,
        request: &types::ActionRequest,
    ) -> Result<Invocation<types::ActionResult>, Error> {
        self.require(PluginKind::Action)?;
        let event = &types::Event::from(event);
        self.invoke(
            "run",
            None,
            |r: &types::ActionResult| {
                json_object(&r.details).map_err(|why| format!("details {why}"))
            },
            &self.exports.handle,
            (event, request),
            |(r,)| r,
        )
        .await
    }

    /// Deliver a notification.
    pub async fn deliver(
        &self,
        event: &model::Event,
        request: &types::NotificationRequest,
    ) -> Result<Invocation<types::Delivery>, Error> {
        self.require(PluginKind::Notifier)?;
        let event = &types::Event::from(event);
        self.invoke(
            "deliver",
            None,
            |_| Ok(()),
            &self.exports.handle,
            (event, request),
            |(r,)| r,
        )
        .await
    }

    /// The one place a guest runs: a fresh store with fuel, an epoch
    /// deadline and a memory limit, bounded concurrency, the breaker, and
    /// classification of how it ended. `func` is one of `self.exports`;
    /// `output` takes the plugin's answer out of what the export returns.
    async fn invoke<P, R, T>(
        &self,
        operation: &'static str,
        overlay: Option<Arc<StateOverlay>>,
        check: fn(&T) -> Result<(), String>,
        func: &ComponentExportIndex,
        params: P,
        output: fn(R) -> Result<T, types::PluginError>,
    ) -> Result<Invocation<T>, Error>
    where
        P: ComponentNamedList + Lower + Send + Sync,
        R: ComponentNamedList + Lift + Send + Sync + 'static,
    {
        let limits = &self.env.manifest.limits;
        let metrics = &self.runtime.metrics;
        if !self.breaker.permits() {
            metrics.invocation(&self.env.name, operation, "circuit-open", 0.0);
            return Err(Error::CircuitOpen(self.env.name.clone()));
        }
        let started = std::time::Instant::now();
        let _slot = self.slots.acquire().await.expect("semaphore never closed");

        let span = tracing::info_span!(
            "plugin.invoke",
            otel.name = format!("plugin {} {operation}", self.env.name),
            plugin.name = %self.env.name,
            operation,
            outcome = tracing::field::Empty,
        );
        let mut store = self.sandbox(overlay);
        let deadline = Duration::from_millis(limits.timeout_ms);
        let call = async {
            let instance = self.exports.pre.instantiate_async(&mut store).await?;
            // Type-checks this one export (a few hundred ns); the generated
            // bindings would check every export of the world per instance.
            let f = instance.get_typed_func::<P, R>(&mut store, func)?;
            wasmtime::Result::Ok(output(f.call_async(&mut store, params).await?))
        };
        let result = tokio::time::timeout(deadline, call.instrument(span.clone())).await;
        let outcome = match result {
            Err(_elapsed) => Err(Error::Timeout(limits.timeout_ms)),
            Ok(Err(trap)) => Err(self.classify(trap, store.data())),
            // A guest that hit the memory limit and then gave up (a Python
            // plugin turns the failed allocation into an exception) failed
            // of the limit, whatever it says.
            Ok(Ok(Err(_))) if store.data().limiter.hit => Err(Error::Memory(limits.memory_mb)),
            Ok(Ok(Err(plugin_error))) => match store.data().denial() {
                Some(cap) => Err(Error::Denied(cap.clone())),
                None => {
                    let (retryable, message, retry_after_ms) = match plugin_error {
                        types::PluginError::Retryable(m) => (true, m, None),
                        types::PluginError::Permanent(m) => (false, m, None),
                        types::PluginError::RetryAfter(r) => (true, r.message, Some(r.after_ms)),
                    };
                    Err(Error::Plugin {
                        retryable,
                        message: self.env.redact(&message),
                        retry_after_ms,
                    })
                }
            },
            Ok(Ok(Ok(output))) => match check(&output) {
                Ok(()) => Ok(Invocation {
                    output,
                    writes: store.data_mut().take_writes(),
                    timers: store.data_mut().take_timers(),
                }),
                Err(why) => Err(Error::InvalidOutput(why)),
            },
        };
        match &outcome {
            Ok(_) => self.breaker.record(false),
            Err(e) if e.is_sandbox_failure() => {
                self.breaker.record(true);
                tracing::warn!(plugin.name = %self.env.name, operation, error = %e, "invocation failed");
            }
            Err(_) => self.breaker.record(false),
        }
        let seconds = started.elapsed().as_secs_f64();
        let kind = outcome.as_ref().map_or_else(Error::kind, |_| "ok");
        span.record("outcome", kind);
        metrics.invocation(&self.env.name, operation, kind, seconds);
        outcome
    }

    fn classify(&self, err: wasmtime::Error, data: &HostState) -> Error {
        let limits = &self.env.manifest.limits;
        if data.limiter.hit {
            return Error::Memory(limits.memory_mb);
        }
        if let Some(cap) = data.denial() {
            return Error::Denied(cap.clone());
        }
        match err.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::OutOfFuel) => Error::OutOfFuel(limits.fuel),
            Some(wasmtime::Trap::Interrupt) => Error::Timeout(limits.timeout_ms),
            Some(trap) => {
                // A Rust guest prints "thread ... panicked at file:line:col:"
                // and then the message on the next line.
                let stderr = data.stderr();
                let mut lines = stderr.lines().skip_while(|l| !l.contains("panicked"));
                match (lines.next(), lines.next()) {
                    (Some(at), Some(msg)) => {
                        Error::Trap(format!("{trap}: {at} {}", self.env.redact(msg)))
                    }
                    (Some(at), None) => Error::Trap(format!("{trap}: {at}")),
                    _ => Error::Trap(trap.to_string()),
                }
            }
            None => Error::Trap(format!("{err:#}")),
        }
    }
}

// The checks below run on every successful invocation: they allocate
// nothing unless they fail, and check JSON without building it.

/// Valid JSON (not kept), or why not.
fn json(text: &str) -> Result<(), String> {
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(drop)
        .map_err(|e| format!("is not JSON: {e}"))
}

/// A JSON object, or why not.
fn json_object(text: &str) -> Result<(), String> {
    json(text)?;
    if !text.trim_start().starts_with('{') {
        return Err("must be a JSON object".into());
    }
    Ok(())
}

fn non_empty(text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err("is empty".into());
    }
    if text.len() > MAX_TEXT {
        return Err(format!("is longer than {MAX_TEXT} bytes"));
    }
    Ok(())
}

fn validate_decision(d: &types::Decision) -> Result<(), String> {
    let items = d.actions.len() + d.notifications.len() + d.signals.len();
    if items > MAX_DECISION_ITEMS {
        return Err(format!(
            "{items} actions, notifications and signals; at most {MAX_DECISION_ITEMS}"
        ));
    }
    if let Some(types::IncidentDirective::Open(open)) = &d.incident {
        for (field, text) in [
            ("title", &open.title),
            ("service", &open.service),
            ("dedup_key", &open.dedup_key),
        ] {
            non_empty(text).map_err(|why| format!("incident.{field} {why}"))?;
        }
    }
    for (i, a) in d.actions.iter().enumerate() {
        non_empty(&a.action).map_err(|why| format!("actions[{i}].action {why}"))?;
        non_empty(&a.target).map_err(|why| format!("actions[{i}].target {why}"))?;
        json_object(&a.params).map_err(|why| format!("actions[{i}].params {why}"))?;
    }
    for (i, n) in d.notifications.iter().enumerate() {
        non_empty(&n.channel).map_err(|why| format!("notifications[{i}].channel {why}"))?;
        non_empty(&n.title).map_err(|why| format!("notifications[{i}].title {why}"))?;
    }
    for (i, s) in d.signals.iter().enumerate() {
        non_empty(&s.name).map_err(|why| format!("signals[{i}].name {why}"))?;
        json(&s.data).map_err(|why| format!("signals[{i}].data {why}"))?;
    }
    Ok(())
}
