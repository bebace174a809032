//! The host's Prometheus metrics. Every name is declared here once, with
//! its help text (the README lists them); code elsewhere records through
//! the typed methods of [`Metrics`], never by name.
//!
//! Each [`Metrics`] is its own registry (`metrics-exporter-prometheus`'
//! recorder, not installed globally), so several hosts in one process, as
//! in the tests, count apart.

use std::sync::Arc;

use metrics::{Key, Label, Recorder as _, SharedString, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

const SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const SIZES: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// (name, kind, unit, help) of every metric.
const METRICS: &[(&str, Kind, Option<Unit>, &str)] = &[
    (
        "eventpulse_http_requests_total",
        Kind::Counter,
        None,
        "HTTP requests answered, by route pattern, method and status code.",
    ),
    (
        "eventpulse_http_request_duration_seconds",
        Kind::Histogram,
        Some(Unit::Seconds),
        "Time to answer an HTTP request, by route pattern.",
    ),
    (
        "eventpulse_ingest_alerts_total",
        Kind::Counter,
        None,
        "Alerts and events received at ingest, by source and outcome (accepted: appended as a new event; deduplicated: already stored; rejected: the request was refused).",
    ),
    (
        "eventpulse_ingest_body_too_large_total",
        Kind::Counter,
        None,
        "Ingest requests refused because the body exceeded ingest.max_body_bytes.",
    ),
    (
        "eventpulse_stage_events_total",
        Kind::Counter,
        None,
        "Events a stage committed, by stage and event kind.",
    ),
    (
        "eventpulse_stage_batch_size",
        Kind::Histogram,
        None,
        "Events per committed stage transaction.",
    ),
    (
        "eventpulse_sqlite_writer_hold_seconds",
        Kind::Histogram,
        Some(Unit::Seconds),
        "SQLite: how long each committed write transaction held the database's one write connection (its statements and the work between them), by holder (ingest, rules, incidents, queue_intake, queue_claim, queue_record, ...).",
    ),
    (
        "eventpulse_sqlite_writer_commit_seconds",
        Kind::Histogram,
        Some(Unit::Seconds),
        "SQLite: one group commit on the write connection (its WAL writes; the fsync is in eventpulse_sqlite_wal_sync_seconds), during which nothing else can write.",
    ),
    (
        "eventpulse_sqlite_wal_sync_seconds",
        Kind::Histogram,
        Some(Unit::Seconds),
        "SQLite: one fdatasync of the WAL, after which the writes of every group committed before it are answered (store.durability = power-loss).",
    ),
    (
        "eventpulse_sqlite_checkpoint_seconds",
        Kind::Histogram,
        Some(Unit::Seconds),
        "SQLite: one checkpoint of the WAL into the database file, on a connection of its own beside the writer (passive: it neither waits for nor blocks it).",
    ),
    (
        "eventpulse_stage_batch_duration_seconds",
        Kind::Histogram,
        Some(Unit::Seconds),
        "Time to handle and commit one stage batch.",
    ),
    (
        "eventpulse_stage_event_delay_seconds",
        Kind::Histogram,
        Some(Unit::Seconds),
        "From an event's append to its commit by a stage.",
    ),
    (
        "eventpulse_stage_retries_total",
        Kind::Counter,
        None,
        "Stage transactions retried, by stage and reason (store: the database failed; data: an event in it did).",
    ),
    (
        "eventpulse_dead_letters_total",
        Kind::Counter,
        None,
        "Events or jobs dead-lettered, by stage.",
    ),
    (
        "eventpulse_plugin_invocations_total",
        Kind::Counter,
        None,
        "Plugin invocations, by plugin, operation and outcome (ok, trap, out-of-fuel, timeout, memory, invalid-output, denied, plugin-error, circuit-open).",
    ),
    (
        "eventpulse_plugin_invocation_duration_seconds",
        Kind::Histogram,
        Some(Unit::Seconds),
        "Time of one plugin invocation in the sandbox, by plugin and operation.",
    ),
    (
        "eventpulse_rate_limited_total",
        Kind::Counter,
        None,
        "Action requests refused by an action plugin's rate limit, by plugin.",
    ),
    (
        "eventpulse_job_attempts_total",
        Kind::Counter,
        None,
        "Work-queue job attempts, by queue, plugin and outcome (ok, retry, failed, refused).",
    ),
    (
        "eventpulse_notifications_sent_total",
        Kind::Counter,
        None,
        "Notifications delivered, by notifier.",
    ),
    (
        "eventpulse_notifications_suppressed_total",
        Kind::Counter,
        None,
        "Notifications held back by deduplication, by notifier.",
    ),
    (
        "eventpulse_enrichment_failures_total",
        Kind::Counter,
        None,
        "Failed lookups a plugin made to enrich an event (kube reads), by plugin.",
    ),
    (
        "eventpulse_capability_calls_total",
        Kind::Counter,
        None,
        "Capability calls by plugins, by capability and outcome (allowed, failed: allowed but the call failed, denied: outside the plugin's grants).",
    ),
    (
        "eventpulse_consumer_lag_events",
        Kind::Gauge,
        None,
        "Events appended to the log that a stage has not yet committed, by consumer (embedded transport).",
    ),
    (
        "eventpulse_consumer_oldest_waiting_seconds",
        Kind::Gauge,
        Some(Unit::Seconds),
        "Age of the oldest event a stage has not yet committed, by consumer (embedded transport).",
    ),
    (
        "eventpulse_kafka_consumer_lag",
        Kind::Gauge,
        None,
        "Kafka consumer lag (high watermark minus committed offset), by group, topic and partition.",
    ),
    (
        "eventpulse_outbox_unpublished_events",
        Kind::Gauge,
        None,
        "Outbox rows the relay has not yet published to Kafka.",
    ),
    (
        "eventpulse_queue_jobs",
        Kind::Gauge,
        None,
        "Work-queue jobs, by queue and status (pending, running, awaiting_approval).",
    ),
    (
        "eventpulse_queue_oldest_due_seconds",
        Kind::Gauge,
        Some(Unit::Seconds),
        "How long the oldest due pending job of a queue has been due.",
    ),
    (
        "eventpulse_dead_letters_waiting",
        Kind::Gauge,
        None,
        "Dead letters not replayed, by stage.",
    ),
    (
        "eventpulse_unfinished_alerts",
        Kind::Gauge,
        None,
        "Alerts whose handling has not reached a final state: an alert event no rule stage has committed, a dead-lettered event of it not replayed, or a job for it still pending or running.",
    ),
    (
        "eventpulse_oldest_unfinished_alert_seconds",
        Kind::Gauge,
        Some(Unit::Seconds),
        "Age of the oldest unfinished piece of alert handling (see eventpulse_unfinished_alerts); 0 when there is none.",
    ),
    (
        "eventpulse_breaker_open",
        Kind::Gauge,
        None,
        "1 while a circuit breaker is open or half-open, by plugin and target (empty target: the plugin's own breaker).",
    ),
    (
        "eventpulse_plugins",
        Kind::Gauge,
        None,
        "Plugins in the plugin directory, by state (loaded, disabled, failed: its files were refused).",
    ),
    (
        "eventpulse_alerts_silenced_total",
        Kind::Counter,
        None,
        "Alert events a silence acted on, by effect (all: handed to no rule; notifications: rules ran, their notifications muted).",
    ),
    (
        "eventpulse_approvals_total",
        Kind::Counter,
        None,
        "Approval steps of actions, by action plugin and outcome (requested, approved, rejected, expired).",
    ),
    (
        "eventpulse_pruned_total",
        Kind::Counter,
        None,
        "Rows the retention task deleted, by what (outbox events, inbox rows, closed incidents, ...).",
    ),
    (
        "eventpulse_scrape_errors_total",
        Kind::Counter,
        None,
        "Values a scrape could not sample from the store or the transport, by what (logged with the error).",
    ),
];

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// How a plugin invocation, a job attempt or a capability call ended, as
/// a label value.
pub type Outcome = &'static str;

/// The host's metrics registry. Cloning shares it.
#[derive(Clone)]
pub struct Metrics {
    /// `None`: metrics are off (`telemetry.metrics = false`).
    recorder: Option<Arc<PrometheusRecorder>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

static META: metrics::Metadata<'static> =
    metrics::Metadata::new("eventpulse", metrics::Level::INFO, Some(module_path!()));

fn labels(pairs: &[(&'static str, &str)]) -> Vec<Label> {
    pairs
        .iter()
        .map(|&(k, v)| Label::new(k, v.to_owned()))
        .collect()
}

impl Metrics {
    /// An empty registry with every metric described.
    pub fn new() -> Metrics {
        let recorder = PrometheusBuilder::new()
            .set_buckets(SECONDS)
            .expect("buckets are not empty")
            .set_buckets_for_metric(Matcher::Full("eventpulse_stage_batch_size".into()), SIZES)
            .expect("buckets are not empty")
            .build_recorder();
        for &(name, kind, unit, help) in METRICS {
            let help = SharedString::const_str(help);
            match kind {
                Kind::Counter => recorder.describe_counter(name.into(), unit, help),
                Kind::Gauge => recorder.describe_gauge(name.into(), unit, help),
                Kind::Histogram => recorder.describe_histogram(name.into(), unit, help),
            }
        }
        Metrics {
            recorder: Some(Arc::new(recorder)),
        }
    }

    /// Whether this registry keeps nothing (so there is nothing to sample).
    pub fn is_disabled(&self) -> bool {
        self.recorder.is_none()
    }

    /// A registry that keeps nothing and renders an empty exposition.
    pub fn disabled() -> Metrics {
        Metrics { recorder: None }
    }

    /// The exposition, Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        self.recorder
            .as_ref()
            .map(|r| r.handle().render())
            .unwrap_or_default()
    }

    /// Fold recent histogram samples (call now and then, so they do not
    /// pile up between scrapes).
    pub fn upkeep(&self) {
        if let Some(r) = &self.recorder {
            r.handle().run_upkeep();
        }
    }

    fn count(&self, name: &'static str, pairs: &[(&'static str, &str)], n: u64) {
        if let Some(r) = &self.recorder {
            r.register_counter(&Key::from_parts(name, labels(pairs)), &META)
                .increment(n);
        }
    }

    fn observe(&self, name: &'static str, pairs: &[(&'static str, &str)], value: f64) {
        if let Some(r) = &self.recorder {
            r.register_histogram(&Key::from_parts(name, labels(pairs)), &META)
                .record(value);
        }
    }

    /// Set gauge `name` (one of the gauges above) at `pairs` to `value`.
    pub fn set(&self, name: &'static str, pairs: &[(&'static str, &str)], value: f64) {
        debug_assert!(METRICS.iter().any(|m| m.0 == name), "undeclared {name}");
        if let Some(r) = &self.recorder {
            r.register_gauge(&Key::from_parts(name, labels(pairs)), &META)
                .set(value);
        }
    }

    /// An HTTP request was answered.
    pub fn http_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        if self.recorder.is_none() {
            return;
        }
        let code = status.to_string();
        self.count(
            "eventpulse_http_requests_total",
            &[("route", route), ("method", method), ("status", &code)],
            1,
        );
        self.observe(
            "eventpulse_http_request_duration_seconds",
            &[("route", route)],
            seconds,
        );
        if status == 413 {
            self.count(
                "eventpulse_ingest_body_too_large_total",
                &[("route", route)],
                1,
            );
        }
    }

    /// `n` alerts or events from `source` ended at ingest as `outcome`.
    pub fn ingested(&self, source: &'static str, outcome: &'static str, n: usize) {
        if n > 0 {
            self.count(
                "eventpulse_ingest_alerts_total",
                &[("source", source), ("outcome", outcome)],
                n as u64,
            );
        }
    }

    /// A stage committed a batch of `size` events in `seconds`.
    pub fn stage_batch(&self, stage: &'static str, size: usize, seconds: f64) {
        self.observe(
            "eventpulse_stage_batch_size",
            &[("stage", stage)],
            size as f64,
        );
        self.observe(
            "eventpulse_stage_batch_duration_seconds",
            &[("stage", stage)],
            seconds,
        );
    }

    /// A write transaction of `holder` held SQLite's write connection for
    /// `seconds`.
    pub fn writer_hold(&self, holder: &'static str, seconds: f64) {
        self.observe(
            "eventpulse_sqlite_writer_hold_seconds",
            &[("holder", holder)],
            seconds,
        );
    }

    /// A group commit on SQLite's write connection took `seconds`.
    pub fn writer_commit(&self, seconds: f64) {
        self.observe("eventpulse_sqlite_writer_commit_seconds", &[], seconds);
    }

    /// A sync of SQLite's WAL took `seconds`.
    pub fn wal_sync(&self, seconds: f64) {
        self.observe("eventpulse_sqlite_wal_sync_seconds", &[], seconds);
    }

    /// A checkpoint of SQLite's WAL took `seconds`.
    pub fn checkpoint(&self, seconds: f64) {
        self.observe("eventpulse_sqlite_checkpoint_seconds", &[], seconds);
    }

    /// A stage committed an event of `kind` appended `delay` seconds ago.
    pub fn stage_event(&self, stage: &'static str, kind: &str, delay: f64) {
        self.count(
            "eventpulse_stage_events_total",
            &[("stage", stage), ("kind", kind)],
            1,
        );
        self.observe(
            "eventpulse_stage_event_delay_seconds",
            &[("stage", stage)],
            delay.max(0.0),
        );
    }

    /// A stage transaction is retried because of `reason` (`store`, `data`).
    pub fn stage_retry(&self, stage: &'static str, reason: &'static str) {
        self.count(
            "eventpulse_stage_retries_total",
            &[("stage", stage), ("reason", reason)],
            1,
        );
    }

    /// `stage` dead-lettered an event or job.
    pub fn dead_letter(&self, stage: &str) {
        self.count("eventpulse_dead_letters_total", &[("stage", stage)], 1);
    }

    /// A plugin invocation ended as `outcome` after `seconds`.
    pub fn invocation(&self, plugin: &str, operation: &str, outcome: Outcome, seconds: f64) {
        self.count(
            "eventpulse_plugin_invocations_total",
            &[
                ("plugin", plugin),
                ("operation", operation),
                ("outcome", outcome),
            ],
            1,
        );
        if outcome != "circuit-open" {
            self.observe(
                "eventpulse_plugin_invocation_duration_seconds",
                &[("plugin", plugin), ("operation", operation)],
                seconds,
            );
        }
    }

    /// An action request was refused by `plugin`'s rate limit.
    pub fn rate_limited(&self, plugin: &str) {
        self.count("eventpulse_rate_limited_total", &[("plugin", plugin)], 1);
    }

    /// A job attempt of `queue` ended as `outcome`.
    pub fn job_attempt(&self, queue: &str, plugin: &str, outcome: Outcome) {
        self.count(
            "eventpulse_job_attempts_total",
            &[("queue", queue), ("plugin", plugin), ("outcome", outcome)],
            1,
        );
    }

    /// `notifier` delivered a notification.
    pub fn notification_sent(&self, notifier: &str) {
        self.count(
            "eventpulse_notifications_sent_total",
            &[("notifier", notifier)],
            1,
        );
    }

    /// Deduplication held back a notification for `notifier`.
    pub fn notification_suppressed(&self, notifier: &str) {
        self.count(
            "eventpulse_notifications_suppressed_total",
            &[("notifier", notifier)],
            1,
        );
    }

    /// A plugin's lookup to enrich an event failed.
    pub fn enrichment_failed(&self, plugin: &str) {
        self.count(
            "eventpulse_enrichment_failures_total",
            &[("plugin", plugin)],
            1,
        );
    }

    /// A plugin called `capability`: `allowed` (and done), `failed` (allowed,
    /// but the call failed) or `denied` by its grants.
    pub fn capability_call(&self, capability: &str, outcome: Outcome) {
        self.count(
            "eventpulse_capability_calls_total",
            &[("capability", capability), ("outcome", outcome)],
            1,
        );
    }

    /// A silence of `mode` acted on an alert event.
    pub fn silenced(&self, mode: &str) {
        self.count("eventpulse_alerts_silenced_total", &[("mode", mode)], 1);
    }

    /// An action of `plugin` reached approval step `outcome`.
    pub fn approval(&self, plugin: &str, outcome: &str) {
        self.count(
            "eventpulse_approvals_total",
            &[("plugin", plugin), ("outcome", outcome)],
            1,
        );
    }

    /// The retention task deleted `n` rows of `what`.
    pub fn pruned(&self, what: &str, n: u64) {
        self.count("eventpulse_pruned_total", &[("what", what)], n);
    }

    /// A scrape could not sample `what`.
    pub fn scrape_error(&self, what: &str) {
        self.count("eventpulse_scrape_errors_total", &[("what", what)], 1);
    }

    /// Every declared metric name (for the README and its test).
    pub fn names() -> impl Iterator<Item = &'static str> {
        METRICS.iter().map(|m| m.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        for &(name, kind, unit, _) in METRICS {
            assert!(name.starts_with("eventpulse_"), "{name}");
            match kind {
                Kind::Counter => assert!(name.ends_with("_total"), "{name}"),
                _ => assert!(!name.ends_with("_total"), "{name}"),
            }
            if unit == Some(Unit::Seconds) {
                assert!(name.ends_with("_seconds"), "{name}");
            }
        }
    }

    #[test]
    fn every_metric_is_listed_in_the_readme() {
        let readme = include_str!("../../../README.md");
        for name in Metrics::names() {
            assert!(
                readme.contains(&format!("| `{name}` |")),
                "{name} is not in the README"
            );
        }
    }

    #[test]
    fn disabled_keeps_nothing() {
        let m = Metrics::disabled();
        m.rate_limited("x");
        m.set("eventpulse_plugins", &[("state", "loaded")], 1.0);
        assert_eq!(m.render(), "");
    }

    #[test]
    fn registries_count_apart_and_render_help() {
        let (a, b) = (Metrics::new(), Metrics::new());
        a.rate_limited("x");
        a.rate_limited("x");
        assert!(
            a.render()
                .contains("eventpulse_rate_limited_total{plugin=\"x\"} 2")
        );
        assert!(a.render().contains("# HELP eventpulse_rate_limited_total"));
        assert!(!b.render().contains("eventpulse_rate_limited_total{"));
    }
}
