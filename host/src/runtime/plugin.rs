//! One loaded plugin: its compiled component as an `InstancePre`, its
//! manifest, breaker and concurrency limit, and the invocation path
//! (fresh `Store`, fuel, deadline, memory limit, classification of how it
//! ended, validation of what it returned).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tracing::Instrument;
use wasmtime::Store;

use super::bindings::{self, types};
use super::breaker::{Breaker, BreakerState};
use super::host::{HostState, PluginEnv, StateMap};
use super::manifest::Manifest;
use super::{Clock, Error, PluginKind, Runtime};
use crate::config::RuntimeConfig;
use crate::store::StateWrite;

/// The typed, pre-linked exports of a plugin.
enum Exports {
    Rule(bindings::RulePre<HostState>),
    Action(bindings::action::ActionPre<HostState>),
    Notifier(bindings::notifier::NotifierPre<HostState>),
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
}

type Call<'a, T> =
    Pin<Box<dyn Future<Output = wasmtime::Result<Result<T, types::PluginError>>> + Send + 'a>>;

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
        let kind = runtime.check_contract(file, &component)?;
        let pre = runtime
            .linker
            .instantiate_pre(&component)
            .map_err(|e| load_err(format!("cannot link: {e:#}")))?;
        let link = |e: wasmtime::Error| load_err(format!("cannot link: {e:#}"));
        let exports = match kind {
            PluginKind::Rule => Exports::Rule(bindings::RulePre::new(pre).map_err(link)?),
            PluginKind::Action => {
                Exports::Action(bindings::action::ActionPre::new(pre).map_err(link)?)
            }
            PluginKind::Notifier => {
                Exports::Notifier(bindings::notifier::NotifierPre::new(pre).map_err(link)?)
            }
        };
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
    pub fn subscribes_to(&self, event: &types::Event) -> bool {
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

    async fn describe(&self) -> Result<types::PluginInfo, Error> {
        // The three worlds differ only in the export's accessor.
        macro_rules! describe {
            ($pre:expr, $export:ident) => {{
                let pre = $pre.clone();
                self.invoke(
                    "describe",
                    |_| Ok(()),
                    move |store| {
                        Box::pin(async move {
                            let i = pre.instantiate_async(&mut *store).await?;
                            Ok(Ok(i.$export().call_describe(&mut *store).await?))
                        })
                    },
                )
                .await?
            }};
        }
        let out = match &self.exports {
            Exports::Rule(pre) => describe!(pre, eventpulse_plugin_rule_plugin),
            Exports::Action(pre) => describe!(pre, eventpulse_plugin_action_plugin),
            Exports::Notifier(pre) => describe!(pre, eventpulse_plugin_notifier_plugin),
        };
        Ok(out.output)
    }

    fn wrong_kind(&self, wanted: PluginKind) -> Error {
        Error::WrongKind {
            name: self.env.name.clone(),
            actual: self.kind.as_str(),
            wanted: wanted.as_str(),
        }
    }

    /// Ask a rule what `event` means.
    pub async fn decide(&self, event: &types::Event) -> Result<Invocation<types::Decision>, Error> {
        let Exports::Rule(pre) = &self.exports else {
            return Err(self.wrong_kind(PluginKind::Rule));
        };
        let (pre, event) = (pre.clone(), event.clone());
        self.invoke("decide", validate_decision, move |store| {
            Box::pin(async move {
                let i = pre.instantiate_async(&mut *store).await?;
                i.eventpulse_plugin_rule_plugin()
                    .call_decide(&mut *store, &event)
                    .await
            })
        })
        .await
    }

    /// Hand a rule the outcome of an action it asked for.
    pub async fn on_action_outcome(
        &self,
        event: &types::Event,
        outcome: &types::ActionOutcome,
    ) -> Result<Invocation<types::Decision>, Error> {
        let Exports::Rule(pre) = &self.exports else {
            return Err(self.wrong_kind(PluginKind::Rule));
        };
        let failed = outcome.result.is_err();
        let (pre, event, outcome) = (pre.clone(), event.clone(), outcome.clone());
        let op = if failed {
            "on-action-failed"
        } else {
            "on-action-completed"
        };
        self.invoke(op, validate_decision, move |store| {
            Box::pin(async move {
                let i = pre.instantiate_async(&mut *store).await?;
                let g = i.eventpulse_plugin_rule_plugin();
                if failed {
                    g.call_on_action_failed(&mut *store, &event, &outcome).await
                } else {
                    g.call_on_action_completed(&mut *store, &event, &outcome)
                        .await
                }
            })
        })
        .await
    }

    /// Run an action.
    pub async fn run(
        &self,
        event: &types::Event,
        request: &types::ActionRequest,
    ) -> Result<Invocation<types::ActionResult>, Error> {
        let Exports::Action(pre) = &self.exports else {
            return Err(self.wrong_kind(PluginKind::Action));
        };
        let (pre, event, request) = (pre.clone(), event.clone(), request.clone());
        self.invoke(
            "run",
            |r: &types::ActionResult| json_object("details", &r.details),
            move |store| {
                Box::pin(async move {
                    let i = pre.instantiate_async(&mut *store).await?;
                    i.eventpulse_plugin_action_plugin()
                        .call_run(&mut *store, &event, &request)
                        .await
                })
            },
        )
        .await
    }

    /// Deliver a notification.
    pub async fn deliver(
        &self,
        event: &types::Event,
        request: &types::NotificationRequest,
    ) -> Result<Invocation<types::Delivery>, Error> {
        let Exports::Notifier(pre) = &self.exports else {
            return Err(self.wrong_kind(PluginKind::Notifier));
        };
        let (pre, event, request) = (pre.clone(), event.clone(), request.clone());
        self.invoke(
            "deliver",
            |_| Ok(()),
            move |store| {
                Box::pin(async move {
                    let i = pre.instantiate_async(&mut *store).await?;
                    i.eventpulse_plugin_notifier_plugin()
                        .call_deliver(&mut *store, &event, &request)
                        .await
                })
            },
        )
        .await
    }

    /// The one place a guest runs: a fresh store with fuel, an epoch
    /// deadline and a memory limit, bounded concurrency, the breaker, and
    /// classification of how it ended.
    async fn invoke<T, F>(
        &self,
        operation: &'static str,
        check: fn(&T) -> Result<(), String>,
        call: F,
    ) -> Result<Invocation<T>, Error>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(&'a mut Store<HostState>) -> Call<'a, T> + Send,
    {
        let limits = &self.env.manifest.limits;
        if !self.breaker.permits() {
            return Err(Error::CircuitOpen(self.env.name.clone()));
        }
        let _slot = self.slots.acquire().await.expect("semaphore never closed");

        let span = tracing::debug_span!("plugin.invoke", plugin.name = %self.env.name, operation);
        let mut store = Store::new(
            &self.runtime.engine,
            HostState::new(self.env.clone(), (limits.memory_mb as usize) << 20),
        );
        store.limiter(|s| &mut s.limiter);
        store.set_fuel(limits.fuel).expect("fuel is enabled");
        // The guest yields to the async runtime every epoch tick, so a
        // spinning plugin never holds a worker thread, and the deadline is
        // an ordinary timeout (which also covers a host call that hangs).
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        let deadline = Duration::from_millis(limits.timeout_ms);
        let result = tokio::time::timeout(deadline, call(&mut store).instrument(span)).await;
        let outcome = match result {
            Err(_elapsed) => Err(Error::Timeout(limits.timeout_ms)),
            Ok(Err(trap)) => Err(self.classify(trap, store.data())),
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
                let stderr = String::from_utf8_lossy(&data.stderr.contents()).into_owned();
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

fn json_object(field: &str, text: &str) -> Result<(), String> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        Ok(_) => Err(format!("{field} must be a JSON object")),
        Err(e) => Err(format!("{field} is not JSON: {e}")),
    }
}

fn non_empty(field: &str, text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err(format!("{field} is empty"));
    }
    if text.len() > MAX_TEXT {
        return Err(format!("{field} is longer than {MAX_TEXT} bytes"));
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
        non_empty("incident.title", &open.title)?;
        non_empty("incident.service", &open.service)?;
        non_empty("incident.dedup_key", &open.dedup_key)?;
    }
    for (i, a) in d.actions.iter().enumerate() {
        non_empty(&format!("actions[{i}].action"), &a.action)?;
        non_empty(&format!("actions[{i}].target"), &a.target)?;
        json_object(&format!("actions[{i}].params"), &a.params)?;
    }
    for (i, n) in d.notifications.iter().enumerate() {
        non_empty(&format!("notifications[{i}].channel"), &n.channel)?;
        non_empty(&format!("notifications[{i}].title"), &n.title)?;
    }
    for (i, s) in d.signals.iter().enumerate() {
        non_empty(&format!("signals[{i}].name"), &s.name)?;
        serde_json::from_str::<serde_json::Value>(&s.data)
            .map_err(|e| format!("signals[{i}].data is not JSON: {e}"))?;
    }
    Ok(())
}
