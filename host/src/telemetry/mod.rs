//! What the host tells about itself: logs (text or JSON, no colour escapes
//! off a terminal), Prometheus metrics ([`Metrics`], served at `GET
//! /metrics`) and the values sampled from the store when they are scraped
//! ([`sample`]: backlog, lag, queue depth, unfinished alerts).

mod metrics;
mod sample;

pub use metrics::{Metrics, Outcome};
pub use sample::sample;

use std::io::IsTerminal as _;

use serde::{Deserialize, Serialize};

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

/// Start logging to stdout at `EVENTPULSE_LOG`'s filter (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EVENTPULSE_LOG")
        .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stdout().is_terminal()).init(),
        LogFormat::Json => builder.json().with_current_span(true).init(),
    }
}
