//! Rule replay: run a rule (installed, disabled, or a candidate component
//! that is not in the plugin directory) over the stored events of a
//! window, in their original log order, and compare each decision with
//! what the installed rule decided then (the decisions log).
//!
//! The rule runs in the real sandbox with its manifest's fuel, deadline
//! and memory, one fresh instance per event as in the pipeline, on a
//! manual clock set to each event's time (so cooldowns and windows behave
//! as they did). Nothing outside is touched: every capability call it is
//! granted (`docker`, `kube`, `smtp`, HTTP) is refused as `unavailable`
//! and listed with the event, because the answers the world gave then are
//! not recorded and a made-up answer would make a decision differ for no
//! real reason. Its state starts empty or from a snapshot of the installed
//! rule's state now, and its writes stay in memory.
//!
//! A decision is compared on what it asks for: `incident` (opened or
//! not, severity, transitions), `actions` (with params), `notifications`
//! (with channels) and `signals`; the free-text `note` is not compared.
//! Events are read a page at a time and differences are handed to the
//! caller as they are found, so a large window streams; a replay stops at
//! `max_events` or its deadline and says so.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::config::RuntimeConfig;
use crate::pipeline::Stage as _;
use crate::pipeline::payload::{Payload, Received, VERIFY_TIMER};
use crate::pipeline::rules::{RuleStage, outcome_of};
use crate::runtime::rehearsal::{Call, Rehearsal};
use crate::runtime::{Clock, Manifest, Plugin, PluginKind, Runtime, RuntimeOptions};
use crate::store::{Logged, Store, Window};

/// Why capability calls are refused in a replay.
pub const REFUSED: &str = "refused in a replay: the world's answers at the time are not recorded, and a replay changes nothing";

/// The decision fields compared.
pub const COMPARED: [&str; 4] = ["incident", "actions", "notifications", "signals"];

/// Which rule to replay.
#[derive(Debug, Clone)]
pub enum Candidate {
    /// An installed rule, enabled or not, by name.
    Installed(String),
    /// A component on disk, its manifest beside it (`NAME.toml`) unless
    /// given.
    File {
        /// The `.wasm`.
        wasm: PathBuf,
        /// Its manifest.
        manifest: Option<PathBuf>,
    },
    /// A component sent in a request.
    Bytes {
        /// What to call it.
        name: String,
        /// The component.
        wasm: Vec<u8>,
        /// Its manifest (TOML); empty for the defaults.
        manifest: String,
    },
}

/// Where the replayed rule's state starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StartState {
    /// No keys.
    #[default]
    Empty,
    /// The installed rule's state as it is now.
    Snapshot,
}

/// A replay to run.
#[derive(Debug, Clone)]
pub struct Request {
    /// The rule.
    pub rule: Candidate,
    /// The installed rule whose logged decisions it is compared with
    /// (default: the candidate's own name).
    pub against: Option<String>,
    /// The events' window (their creation time).
    pub window: Window,
    /// Where its state starts.
    pub state: StartState,
    /// Stop after this many events.
    pub max_events: u64,
    /// Stop after this long.
    pub deadline: Duration,
}

/// How a replay went.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Summary {
    /// The rule replayed.
    pub rule: String,
    /// Its version (`describe`) and component digest.
    pub version: String,
    /// The digest.
    pub digest: String,
    /// Whose logged decisions it was compared with.
    pub against: String,
    /// Events it was handed (subscribed, or decided on then).
    pub replayed: u64,
    /// Decided as then.
    pub same: u64,
    /// Decided otherwise (errors included).
    pub different: u64,
    /// Events on which the replayed rule failed.
    pub errors: u64,
    /// Capability calls refused (see `capabilities`).
    pub refused_calls: u64,
    /// What happened to capability calls.
    pub capabilities: &'static str,
    /// Why it stopped early, if it did.
    pub truncated: Option<String>,
}

/// One field of a decision that differs.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Change {
    /// `incident`, `actions`, `notifications`, `signals`.
    pub field: String,
    /// What was decided then (`null`: nothing).
    #[schema(value_type = Object)]
    pub then: Value,
    /// What the replayed rule decides.
    #[schema(value_type = Object)]
    pub now: Value,
}

/// An event whose decision differs.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Difference {
    /// Its place in the log.
    pub seq: i64,
    /// The event.
    pub event_id: String,
    /// Its kind.
    pub event_kind: String,
    /// Its time (ms).
    pub time: u64,
    /// Its alert's name, when it is about one.
    pub alert: Option<String>,
    /// The fields that differ.
    pub changes: Vec<Change>,
    /// The rule failed then.
    pub then_error: Option<String>,
    /// The replayed rule failed.
    pub now_error: Option<String>,
    /// Capability calls it made, each refused.
    pub calls: Vec<Call>,
}

/// Where replays find installed rules and compiled components, and the
/// runtime limits they run under.
#[derive(Debug)]
pub struct Settings {
    /// The plugin directory.
    pub plugin_dir: PathBuf,
    /// The compile cache.
    pub cache_dir: PathBuf,
    /// Runtime-wide limits (each manifest may only lower them).
    pub limits: RuntimeConfig,
    /// One replay at a time: each compiles a component and runs a sandbox
    /// per event, which the pipeline needs the cores for.
    pub running: tokio::sync::Semaphore,
}

impl Settings {
    /// Settings from the host's configuration.
    pub fn new(config: &crate::config::Config) -> Settings {
        Settings {
            plugin_dir: config.plugin_dir.clone(),
            cache_dir: config.cache_dir.clone(),
            limits: config.runtime.clone(),
            running: tokio::sync::Semaphore::new(1),
        }
    }
}

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such installed rule.
    #[error("{0}")]
    NotFound(String),
    /// The rule cannot be loaded, or is not a rule.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

/// The rule, loaded into a replaying runtime.
struct Loaded {
    plugin: Plugin,
    clock: Clock,
    recorded: Rehearsal,
}

async fn load(
    candidate: &Candidate,
    settings: &Settings,
    state: HashMap<String, (String, Option<u64>)>,
) -> Result<Loaded, Error> {
    let invalid = |e: &dyn std::fmt::Display| Error::Invalid(e.to_string());
    let (plugin_dir, cache_dir, limits) =
        (&settings.plugin_dir, &settings.cache_dir, &settings.limits);
    let (name, file, bytes, manifest) = match candidate {
        Candidate::Installed(name) => {
            let wasm = plugin_dir.join(format!("{name}.wasm"));
            let bytes = std::fs::read(&wasm).map_err(|e| {
                Error::NotFound(format!(
                    "no installed rule `{name}` ({}: {e})",
                    wasm.display()
                ))
            })?;
            let manifest = Manifest::load(&plugin_dir.join(format!("{name}.toml")))
                .map_err(|e| invalid(&e))?;
            (name.clone(), wasm.display().to_string(), bytes, manifest)
        }
        Candidate::File { wasm, manifest } => {
            let name = stem(wasm);
            let bytes = std::fs::read(wasm)
                .map_err(|e| Error::NotFound(format!("{}: {e}", wasm.display())))?;
            let path = manifest
                .clone()
                .unwrap_or_else(|| wasm.with_extension("toml"));
            let manifest = Manifest::load(&path).map_err(|e| invalid(&e))?;
            (name, wasm.display().to_string(), bytes, manifest)
        }
        Candidate::Bytes {
            name,
            wasm,
            manifest,
        } => {
            let manifest: Manifest =
                toml::from_str(manifest).map_err(|e| invalid(&format!("the manifest: {e}")))?;
            (
                name.clone(),
                format!("{name} (sent)"),
                wasm.clone(),
                manifest,
            )
        }
    };
    let (runtime, recorded) =
        Runtime::replaying(cache_dir, &RuntimeOptions::new(limits.clone()), REFUSED)
            .map_err(|e| invalid(&e))?;
    let clock = Clock::manual(0);
    let plugin = Plugin::load(
        Arc::new(runtime),
        &name,
        &file,
        bytes,
        manifest,
        Arc::new(Mutex::new(state)),
        clock.clone(),
        limits,
    )
    .await
    .map_err(|e| invalid(&e))?;
    if plugin.kind() != PluginKind::Rule {
        return Err(Error::Invalid(format!(
            "`{name}` is not a rule: it is a {:?} plugin",
            plugin.kind()
        )));
    }
    Ok(Loaded {
        plugin,
        clock,
        recorded,
    })
}

/// Whether the rule stage would hand `received` to the replayed rule, as
/// it did to `against`: alerts and generic events by subscription, an
/// action's outcome and a timer to the rule that asked (a verification
/// timer is the host's own).
fn handed(received: &Received, plugin: &Plugin, against: &str) -> bool {
    match &received.payload {
        Payload::Alert | Payload::Received => plugin.subscribes_to(&received.event),
        Payload::Action(data) => data.rule == against,
        Payload::Timer(t) => t.rule == against && !t.key.starts_with(VERIFY_TIMER),
        _ => false,
    }
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("candidate")
        .to_owned()
}

/// The compared fields of a decision (JSON as the log keeps it); `None`
/// fields as empty.
fn compared(decision: Option<&str>) -> Vec<(&'static str, Value)> {
    let parsed: Value = decision
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or(Value::Null);
    COMPARED
        .iter()
        .map(|f| {
            let v = parsed.get(*f).cloned().unwrap_or(Value::Null);
            let empty = v.is_null() || v.as_array().is_some_and(Vec::is_empty);
            (*f, if empty { Value::Null } else { v })
        })
        .collect()
}

/// Replay `req` over `store`'s events, handing each difference to `emit`
/// as it is found.
pub async fn replay(
    store: &Store,
    settings: &Settings,
    req: &Request,
    mut emit: impl FnMut(Difference),
) -> Result<Summary, Error> {
    let started = Instant::now();
    let own_name = match &req.rule {
        Candidate::Installed(n) | Candidate::Bytes { name: n, .. } => n.clone(),
        Candidate::File { wasm, .. } => stem(wasm),
    };
    let against = req.against.clone().unwrap_or(own_name);
    let state = match req.state {
        StartState::Empty => HashMap::new(),
        StartState::Snapshot => store.plugin_state(&against, 0).await?,
    };
    let Loaded {
        plugin,
        clock,
        recorded,
    } = load(&req.rule, settings, state).await?;
    let mut summary = Summary {
        rule: plugin.info().name.clone(),
        version: plugin.info().version.clone(),
        digest: plugin.digest().to_owned(),
        against: against.clone(),
        capabilities: REFUSED,
        ..Summary::default()
    };
    const PAGE: u32 = 256;
    let mut after = 0;
    'pages: loop {
        let rows = store
            .events_in_window(RuleStage::KINDS, req.window, after, PAGE)
            .await?;
        let Some((last, _)) = rows.last() else { break };
        after = *last;
        let events: Vec<(i64, Received)> = rows
            .into_iter()
            .filter_map(|(seq, payload)| Some((seq, Received::parse(&payload).ok()?)))
            .collect();
        let ids: Vec<&str> = events.iter().map(|(_, r)| r.event.id.as_str()).collect();
        let then = store.logged_decisions(&against, &ids).await?;
        for (seq, received) in &events {
            let event = &received.event;
            if summary.replayed >= req.max_events {
                summary.truncated = Some(format!("stopped after max_events = {}", req.max_events));
                break 'pages;
            }
            if started.elapsed() > req.deadline {
                summary.truncated = Some(format!(
                    "stopped at the deadline ({} s)",
                    req.deadline.as_secs()
                ));
                break 'pages;
            }
            let logged = then.get(&event.id);
            let subscribed = handed(received, &plugin, &against);
            if !subscribed && logged.is_none() {
                continue;
            }
            summary.replayed += 1;
            let (now, now_error, calls) = if subscribed {
                clock.set(event.time);
                // As the rule stage calls it: an action's outcome through
                // its own export, anything else through `decide`.
                let decided = match &received.payload {
                    Payload::Action(data) => {
                        plugin
                            .on_action_outcome(event, &outcome_of(event, data))
                            .await
                    }
                    _ => plugin.decide(event).await,
                };
                let calls = recorded.take();
                match decided {
                    Ok(inv) => {
                        plugin.apply_writes(&inv.writes);
                        let json = serde_json::to_string(&inv.output).expect("decision serialises");
                        (Some(json), None, calls)
                    }
                    Err(e) => (None, Some(format!("{}: {e}", e.kind())), calls),
                }
            } else {
                let why = "the replayed rule would not be handed this event";
                (None, Some(why.to_owned()), Vec::new())
            };
            summary.refused_calls += calls.len() as u64;
            if now_error.is_some() && subscribed {
                summary.errors += 1;
            }
            let then_error = logged.and_then(|l: &Logged| l.error.clone());
            let before = compared(logged.and_then(|l| l.decision.as_deref()));
            let after_ = compared(now.as_deref());
            let changes: Vec<Change> = before
                .into_iter()
                .zip(after_)
                .filter(|((_, a), (_, b))| a != b)
                .map(|((field, then), (_, now))| Change {
                    field: field.to_owned(),
                    then,
                    now,
                })
                .collect();
            if changes.is_empty() && now_error.is_none() && then_error.is_none() {
                summary.same += 1;
                continue;
            }
            summary.different += 1;
            emit(Difference {
                seq: *seq,
                event_id: event.id.clone(),
                event_kind: event.kind.clone(),
                time: event.time,
                alert: event.alert.as_ref().map(|a| a.name.clone()),
                changes,
                then_error,
                now_error,
                calls,
            });
        }
    }
    Ok(summary)
}
