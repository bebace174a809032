//! # EventPulse host
//!
//! The trusted half of EventPulse: it owns the store, the plugin registry
//! and the WebAssembly sandbox that rules, actions and notifiers run in,
//! and serves the admin API.
//!
//! ## Layout
//!
//! - [`model`]: the domain model (events and kinds, alerts, incidents and
//!   their lifecycle, jobs); no I/O.
//! - [`config`]: the one typed configuration (file + `EVENTPULSE_*` env).
//! - [`store`]: everything persisted; all SQL lives here.
//! - [`runtime`]: wasmtime engine, capabilities lent to plugins, limits,
//!   circuit breaker, invocation; the plugin contract's types stop here.
//! - [`ingest`]: parsing and validating what arrives (Alertmanager v4,
//!   CloudEvents, Kubernetes Warning events) and committing it in groups.
//! - [`sources`]: event sources the host pulls itself (a Kubernetes
//!   cluster's Warning events, listed and watched with a checkpoint).
//! - [`pipeline`]: the stages and work queues an event travels through.
//! - [`registry`]: the plugin directory as the registry (hot reload,
//!   enable/disable).
//! - [`api`]: the admin HTTP API.
//! - [`console`]: the operator's console, server-rendered under `/ui`.
//! - [`telemetry`]: logs, Prometheus metrics, readiness.
//! - [`app`]: builds the above from a config and runs their tasks.
//! - [`scaffold`]: `eventpulse plugin new` and `plugin build`.
//! - [`replay`]: a rule over stored events, diffed against what was
//!   decided then (`eventpulse replay`, `POST /api/v1/replay`).
//!
//! `model`, `config`, `telemetry`, `store`, `runtime`, `registry`,
//! `ingest`, `sources` and `pipeline` each use only the ones before them
//! in that order, so none of them is in an import cycle (a test reads the
//! sources and checks); `api`, `console`, `replay` and `app` sit on top.

pub mod api;
pub mod app;
pub mod config;
pub mod console;
pub mod ingest;
pub mod model;
pub mod pipeline;
pub mod plugin_run;
pub mod registry;
pub mod replay;
pub mod runtime;
pub mod scaffold;
pub mod sources;
pub mod store;
pub mod telemetry;

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    /// The host's core modules, each allowed to use only those before it:
    /// a module that reaches up (`store` using `pipeline`, `telemetry`
    /// using `runtime`) would make a cycle. The layers above (`api`,
    /// `console`, `replay`, `app`) may use any of them.
    const LAYERS: [&str; 9] = [
        "model",
        "config",
        "telemetry",
        "store",
        "runtime",
        "registry",
        "ingest",
        "sources",
        "pipeline",
    ];

    /// Every `crate::<module>` a source file names outside comments.
    fn uses(source: &str) -> BTreeSet<String> {
        let mut used = BTreeSet::new();
        for line in source.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (_, rest) in line
                .match_indices("crate::")
                .map(|(i, _)| line.split_at(i + 7))
            {
                let names = match rest.strip_prefix('{') {
                    Some(group) => group.split('}').next().unwrap_or("").split(',').collect(),
                    None => vec![rest],
                };
                for name in names {
                    let name: String = name
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        used.insert(name);
                    }
                }
            }
        }
        used
    }

    fn sources(path: &Path, out: &mut Vec<String>) {
        if path.is_dir() {
            for entry in std::fs::read_dir(path).unwrap() {
                sources(&entry.unwrap().path(), out);
            }
        } else if path.is_file() && path.extension().is_some_and(|e| e == "rs") {
            out.push(std::fs::read_to_string(path).unwrap());
        }
    }

    #[test]
    fn core_modules_use_only_the_layers_below() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut wrong = Vec::new();
        for (layer, module) in LAYERS.iter().enumerate() {
            let mut files = Vec::new();
            sources(&src.join(module), &mut files);
            sources(&src.join(format!("{module}.rs")), &mut files);
            assert!(!files.is_empty(), "no source for {module}");
            let used: BTreeSet<String> = files.iter().flat_map(|f| uses(f)).collect();
            for other in used.iter().filter(|u| *u != module) {
                match LAYERS.iter().position(|l| l == other) {
                    Some(at) if at < layer => {}
                    // `crate::` names other than modules (a macro) pass.
                    None if !src.join(other).exists()
                        && !src.join(format!("{other}.rs")).exists() => {}
                    _ => wrong.push(format!("{module} uses crate::{other}")),
                }
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn uses_reads_plain_and_grouped_paths_and_skips_comments() {
        let used = uses(
            "use crate::store::Store;\n//! see [`crate::api`]\nuse crate::{config::Config, model};\nlet m = crate::telemetry::Metrics::new();",
        );
        assert_eq!(
            used.into_iter().collect::<Vec<_>>(),
            ["config", "model", "store", "telemetry"]
        );
    }
}
