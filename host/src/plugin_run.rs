//! `eventpulse plugin run`: one invocation of a plugin, without a host.
//!
//! The plugin runs in the real sandbox with its manifest's fuel, deadline
//! and memory, and its config (with `--config` overrides) and state (from
//! `--state`, written back after a successful run). Capabilities that
//! touch the outside are recording stubs ([`crate::runtime::rehearsal`]):
//! the report lists every call it made, with its arguments and the stub's
//! answer or the refusal, and nothing is changed anywhere.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::Value;

use crate::model;
use crate::runtime::rehearsal::Call;
use crate::runtime::{Clock, Manifest, Plugin, PluginKind, Runtime, RuntimeOptions, types};

/// What to run.
pub struct Input {
    /// The component.
    pub wasm: PathBuf,
    /// Its manifest; `None`: `<stem>.toml` beside it, if there is one.
    pub manifest: Option<PathBuf>,
    /// `[config]` values to set or replace.
    pub config: Vec<(String, String)>,
    /// A JSON object of state keys and values, read before and written
    /// after a successful run.
    pub state: Option<PathBuf>,
    /// The event (the envelope the host hands plugins).
    pub event: Value,
    /// The action or notification request (actions and notifiers).
    pub request: Option<Value>,
    /// Where compiled components are cached.
    pub cache_dir: PathBuf,
}

/// What happened.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The plugin's name (the file stem).
    pub plugin: String,
    /// `rule`, `action` or `notifier`.
    pub kind: &'static str,
    /// Its decision, result or delivery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub returned: Option<Value>,
    /// How it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<Failure>,
    /// The state keys it set (a value) or deleted (`null`).
    pub state_writes: Vec<(String, Option<String>)>,
    /// Timers it set (`[key, delay_ms]`) or cancelled (`[key, null]`).
    pub timers: Vec<(String, Option<i64>)>,
    /// Every capability call, in order.
    pub calls: Vec<Call>,
}

/// A failed invocation.
#[derive(Debug, Serialize)]
pub struct Failure {
    /// The runtime's error kind (`out-of-fuel`, `timeout`, `memory`,
    /// `denied`, `plugin`, ...).
    pub kind: &'static str,
    /// What it said.
    pub message: String,
}

/// Run `input` once.
pub async fn run(input: Input) -> anyhow::Result<Report> {
    let name = input
        .wasm
        .file_stem()
        .and_then(|s| s.to_str())
        .context("the component's file name")?
        .to_owned();
    let manifest_path = input
        .manifest
        .clone()
        .unwrap_or_else(|| input.wasm.with_extension("toml"));
    let mut manifest = Manifest::load(&manifest_path).map_err(anyhow::Error::msg)?;
    for (k, v) in &input.config {
        manifest
            .config
            .insert(k.clone(), toml::Value::String(v.clone()));
    }
    let state: HashMap<String, (String, Option<u64>)> = match &input.state {
        Some(p) if p.exists() => read_state(p)?
            .into_iter()
            .map(|(k, v)| (k, (v, None)))
            .collect(),
        _ => HashMap::new(),
    };
    let state = Arc::new(Mutex::new(state));
    let event: model::Event =
        serde_json::from_value(input.event).context("the event is not an EventPulse event")?;

    let limits = crate::config::RuntimeConfig::default();
    let (runtime, rehearsal) =
        Runtime::rehearsing(&input.cache_dir, &RuntimeOptions::new(limits.clone()))?;
    let bytes =
        std::fs::read(&input.wasm).with_context(|| format!("reading {}", input.wasm.display()))?;
    let file = input.wasm.display().to_string();
    let plugin = Plugin::load(
        Arc::new(runtime),
        &name,
        &file,
        bytes,
        manifest,
        state.clone(),
        Clock::system(),
        &limits,
    )
    .await?;
    let kind = plugin.kind();
    let request = |what: &str| {
        input
            .request
            .clone()
            .with_context(|| format!("a {what} needs --request FILE"))
    };
    let invoked = match kind {
        PluginKind::Rule => shown(plugin.decide(&event).await),
        PluginKind::Action => {
            let request: types::ActionRequest =
                serde_json::from_value(params_as_text(request("action")?))
                    .context("the request is not an action request")?;
            shown(plugin.run(&event, &request).await)
        }
        PluginKind::Notifier => {
            let request: types::NotificationRequest = serde_json::from_value(request("notifier")?)
                .context("the request is not a notification request")?;
            shown(plugin.deliver(&event, &request).await)
        }
    };
    let (returned, failed, state_writes, timers) = match invoked {
        Ok((output, writes, timers)) => {
            plugin.apply_writes(&writes);
            if let Some(p) = &input.state {
                write_state(p, &state)?;
            }
            (
                Some(output),
                None,
                writes
                    .into_iter()
                    .map(|w| (w.key, w.value.map(|(v, _)| v)))
                    .collect(),
                timers
                    .into_iter()
                    .map(|t| (t.key, t.set.map(|(delay, _)| delay)))
                    .collect(),
            )
        }
        Err(e) => (
            None,
            Some(Failure {
                kind: e.kind(),
                message: e.to_string(),
            }),
            Vec::new(),
            Vec::new(),
        ),
    };
    Ok(Report {
        plugin: name,
        kind: kind.as_str(),
        returned,
        failed,
        state_writes,
        timers,
        calls: rehearsal.calls(),
    })
}

type Shown = (Value, Vec<model::StateWrite>, Vec<model::TimerWrite>);

fn shown<T: Serialize>(
    result: Result<crate::runtime::Invocation<T>, crate::runtime::Error>,
) -> Result<Shown, crate::runtime::Error> {
    result.map(|i| {
        let mut output = serde_json::to_value(&i.output).unwrap_or(Value::Null);
        unnest(&mut output);
        (output, i.writes, i.timers)
    })
}

/// The contract carries JSON values (`params`, `data`, `details`) as
/// text; show them as JSON.
fn unnest(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            for (k, v) in fields.iter_mut() {
                if let Value::String(text) = v
                    && matches!(k.as_str(), "params" | "data" | "details")
                    && let Ok(parsed) = serde_json::from_str::<Value>(text)
                {
                    *v = parsed;
                }
                unnest(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(unnest),
        _ => {}
    }
}

/// An action request's `params` may be written as an object; the
/// contract carries it as JSON text.
fn params_as_text(mut request: Value) -> Value {
    if let Some(params) = request.get_mut("params")
        && !params.is_string()
    {
        *params = Value::String(params.to_string());
    }
    request
}

fn read_state(path: &Path) -> anyhow::Result<HashMap<String, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let map: HashMap<String, Value> = serde_json::from_str(&text)
        .with_context(|| format!("{}: a JSON object of state keys", path.display()))?;
    map.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            other => bail!("{}: state `{k}` is {other}, not a string", path.display()),
        })
        .collect()
}

fn write_state(
    path: &Path,
    state: &Mutex<HashMap<String, (String, Option<u64>)>>,
) -> anyhow::Result<()> {
    let map: std::collections::BTreeMap<String, String> = state
        .lock()
        .expect("state lock")
        .iter()
        .map(|(k, (v, _))| (k.clone(), v.clone()))
        .collect();
    std::fs::write(path, serde_json::to_string_pretty(&map)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

/// The report as text for a terminal.
pub fn render(report: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = format!("{} ({})\n", report.plugin, report.kind);
    if let Some(v) = &report.returned {
        let pretty = serde_json::to_string_pretty(v).unwrap_or_default();
        let _ = writeln!(out, "\nreturned:\n{}", indent(&pretty));
    }
    if let Some(f) = &report.failed {
        let _ = writeln!(out, "\nfailed ({}): {}", f.kind, f.message);
    }
    if report.calls.is_empty() {
        out.push_str("\nno capability calls\n");
    } else {
        let _ = writeln!(
            out,
            "\ncapability calls (stubbed: nothing outside was touched):"
        );
        for c in &report.calls {
            let answer = match (&c.answer, &c.refused) {
                (_, Some(why)) => format!("✗ refused: {why}"),
                (Some(v), None) => format!("→ {v}"),
                (None, None) => String::new(),
            };
            let _ = writeln!(
                out,
                "  {} {} {} {answer}",
                c.capability, c.operation, c.args
            );
        }
    }
    for (k, v) in &report.state_writes {
        match v {
            Some(v) => {
                let _ = writeln!(out, "state set {k} = {v}");
            }
            None => {
                let _ = writeln!(out, "state deleted {k}");
            }
        }
    }
    for (k, delay) in &report.timers {
        match delay {
            Some(ms) => {
                let _ = writeln!(out, "timer {k} set to fire at {ms}");
            }
            None => {
                let _ = writeln!(out, "timer {k} cancelled");
            }
        }
    }
    out
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
