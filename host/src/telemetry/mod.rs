//! What the host tells about itself: logs (text or JSON, no colour escapes
//! off a terminal), traces exported over OTLP ([`trace`]), Prometheus
//! metrics ([`Metrics`], served at `GET /metrics`) and the values sampled
//! from the store when they are scraped ([`sample`]: backlog, lag, queue
//! depth, unfinished alerts). [`init`] starts logging and tracing.

mod metrics;
mod sample;

pub mod trace;

pub use metrics::{Metrics, Outcome};
pub use sample::sample;

use std::io::IsTerminal as _;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::{Deserialize, Serialize};

use crate::config::TelemetryConfig;

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

/// Keeps the trace exporter alive; dropping it flushes what is buffered.
#[must_use = "dropping the guard stops trace export"]
pub struct Guard(Option<SdkTracerProvider>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("flushing traces: {e}");
        }
    }
}

/// Start logging to stdout at `EVENTPULSE_LOG`'s filter (default `info`)
/// in `config.log_format`, and export spans over OTLP when
/// `config.otlp_endpoint` is set.
pub fn init(config: &TelemetryConfig) -> anyhow::Result<Guard> {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("EVENTPULSE_LOG")
        .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into());
    let fmt = match config.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stdout().is_terminal())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .boxed(),
    }
    .with_filter(filter);
    let (otel, provider) = match &config.otlp_endpoint {
        None => (None, None),
        Some(endpoint) => {
            let provider = tracer_provider(endpoint)?;
            let layer = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("eventpulse"))
                .with_filter(
                    tracing_subscriber::filter::Targets::new()
                        .with_target("eventpulse", tracing::Level::INFO),
                );
            (Some(layer), Some(provider))
        }
    };
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|e| anyhow::anyhow!("starting logging: {e}"))?;
    Ok(Guard(provider))
}

/// A batching OTLP/HTTP (protobuf) exporter to `endpoint` (the
/// collector's base URL; `/v1/traces` is added unless it is there). Built
/// on a thread of its own: its blocking HTTP client must not be made
/// inside an async runtime.
fn tracer_provider(endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::WithExportConfig as _;
    let base = endpoint.trim_end_matches('/');
    let url = if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    };
    let exporter = std::thread::spawn(move || {
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url)
            .with_timeout(std::time::Duration::from_secs(10))
            .build()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("building the OTLP exporter panicked"))??;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("eventpulse")
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}
