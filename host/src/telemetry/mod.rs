//! What the host tells about itself: logs (text or JSON, no colour escapes
//! off a terminal), traces exported over OTLP ([`trace`]), Prometheus
//! metrics ([`Metrics`], served at `GET /metrics`, where `api` samples the
//! store's gauges: backlog, lag, queue depth, unfinished alerts). [`init`]
//! starts logging and tracing.

mod metrics;

pub mod trace;

pub use metrics::{Metrics, Outcome};

use std::io::IsTerminal as _;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::{Layer, Registry, reload};

pub use crate::config::LogFormat;
use crate::config::TelemetryConfig;

/// Keeps the trace exporter alive; dropping it flushes what is buffered.
#[must_use = "dropping the guard stops trace export"]
pub struct Guard {
    provider: Option<SdkTracerProvider>,
    export: Option<reload::Handle<Targets, Registry>>,
}

/// The spans exported: the host's own, from `info` up.
fn exported() -> Targets {
    Targets::new().with_target("eventpulse", tracing::Level::INFO)
}

impl Guard {
    /// Pause (`false`) or resume trace export, e.g. to measure what it
    /// costs (`cargo bench --bench pipeline`, `BENCH_TELEMETRY=1`).
    pub fn set_export(&self, on: bool) {
        if let Some(handle) = &self.export {
            let _ = handle.modify(|t| *t = if on { exported() } else { Targets::new() });
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("flushing traces: {e}");
        }
    }
}

/// Start logging to stdout at `EVENTPULSE_LOG`'s filter (else
/// `config.log_filter`) in `config.log_format`, and export spans over OTLP when
/// `config.otlp_endpoint` is set.
pub fn init(config: &TelemetryConfig) -> anyhow::Result<Guard> {
    init_to(config, false)
}

/// [`init`], logging to stderr when `to_stderr` (commands whose stdout
/// is their output, e.g. `plugin run --json`).
pub fn init_to(config: &TelemetryConfig, to_stderr: bool) -> anyhow::Result<Guard> {
    use tracing_subscriber::prelude::*;
    let filter = match tracing_subscriber::EnvFilter::try_from_env("EVENTPULSE_LOG") {
        Ok(f) => f,
        Err(_) => tracing_subscriber::EnvFilter::try_new(&config.log_filter)
            .map_err(|e| anyhow::anyhow!("telemetry.log_filter: {e}"))?,
    };
    let writer = tracing_subscriber::fmt::writer::BoxMakeWriter::new(move || {
        if to_stderr {
            Box::new(std::io::stderr()) as Box<dyn std::io::Write>
        } else {
            Box::new(std::io::stdout())
        }
    });
    let terminal = if to_stderr {
        std::io::stderr().is_terminal()
    } else {
        std::io::stdout().is_terminal()
    };
    let fmt = match config.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(terminal)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .json()
            .with_current_span(true)
            .boxed(),
    };
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> =
        vec![fmt.with_filter(filter).boxed()];
    let mut guard = Guard {
        provider: None,
        export: None,
    };
    if let Some(endpoint) = &config.otlp_endpoint {
        let provider = tracer_provider(endpoint)?;
        let (targets, handle) = reload::Layer::new(exported());
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("eventpulse"))
                .with_filter(targets)
                .boxed(),
        );
        guard.provider = Some(provider);
        guard.export = Some(handle);
    }
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|e| anyhow::anyhow!("starting logging: {e}"))?;
    Ok(guard)
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
