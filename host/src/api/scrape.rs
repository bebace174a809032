//! Gauges read when `/metrics` is scraped, so they are as fresh as the
//! scrape: backlog and lag, queue depth, dead letters waiting, unfinished
//! alerts, breakers, plugins. Nothing polls the store between scrapes.

use crate::pipeline::Stage as _;
use crate::pipeline::rules::RuleStage;
use crate::pipeline::transport::Transport;
use crate::registry::Registry;
use crate::runtime::BreakerState;
use crate::store::{self, Queue, Store};
use crate::telemetry::Metrics;

/// Stages whose dead letters are counted even when there are none (so the
/// gauge returns to 0 after a replay).
const STAGES: [&str; 4] = ["rules", "incidents", "actions", "notifications"];

fn age_seconds(since_ms: Option<i64>, now_ms: i64) -> f64 {
    since_ms.map_or(0.0, |t| (now_ms - t).max(0) as f64 / 1000.0)
}

/// Set every sampled gauge in `metrics`. What cannot be read is counted
/// in `eventpulse_scrape_errors_total` and logged; the rest is still set.
pub async fn sample(
    metrics: &Metrics,
    store: &Store,
    registry: &Registry,
    transport: Option<&dyn Transport>,
) {
    if metrics.is_disabled() {
        return;
    }
    let now = store::now_ms();
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        metrics.scrape_error(what);
        tracing::warn!(what, error = %e, "could not sample a metric");
    };

    if let Some(t) = transport {
        match t.lag().await {
            Ok(lags) => {
                for lag in lags {
                    match &lag.partition {
                        None => {
                            let c = [("consumer", lag.consumer.as_str())];
                            metrics.set("eventpulse_consumer_lag_events", &c, lag.events as f64);
                            metrics.set(
                                "eventpulse_consumer_oldest_waiting_seconds",
                                &c,
                                age_seconds(lag.oldest_ms, now),
                            );
                        }
                        Some((topic, partition)) => {
                            let partition = partition.to_string();
                            metrics.set(
                                "eventpulse_kafka_consumer_lag",
                                &[
                                    ("group", lag.consumer.as_str()),
                                    ("topic", topic.as_str()),
                                    ("partition", partition.as_str()),
                                ],
                                lag.events as f64,
                            );
                        }
                    }
                }
            }
            Err(e) => failed("consumer lag", &format!("{e:#}")),
        }
        if !t.is_embedded() {
            match store.unpublished_count().await {
                Ok(n) => metrics.set("eventpulse_outbox_unpublished_events", &[], n as f64),
                Err(e) => failed("unpublished outbox rows", &e),
            }
        }
    }

    for queue in [Queue::Actions, Queue::Notifications] {
        let name = queue.table();
        match store.queue_depth(queue).await {
            Ok(depth) => {
                for status in ["pending", "running", "awaiting_approval"] {
                    let n = depth
                        .by_status
                        .iter()
                        .find(|(s, _)| s == status)
                        .map_or(0, |(_, n)| *n);
                    metrics.set(
                        "eventpulse_queue_jobs",
                        &[("queue", name), ("status", status)],
                        n as f64,
                    );
                }
                metrics.set(
                    "eventpulse_queue_oldest_due_seconds",
                    &[("queue", name)],
                    age_seconds(depth.oldest_due_ms, now),
                );
            }
            Err(e) => failed("queue depth", &e),
        }
    }

    match store.dead_letters_waiting().await {
        Ok(waiting) => {
            for stage in STAGES {
                if !waiting.iter().any(|(c, _)| c == stage) {
                    metrics.set("eventpulse_dead_letters_waiting", &[("stage", stage)], 0.0);
                }
            }
            for (stage, n) in &waiting {
                metrics.set(
                    "eventpulse_dead_letters_waiting",
                    &[("stage", stage.as_str())],
                    *n as f64,
                );
            }
        }
        Err(e) => failed("dead letters", &e),
    }

    let embedded = transport.is_none_or(|t| t.is_embedded());
    match store.unfinished(RuleStage::NAME, embedded).await {
        Ok(u) => {
            metrics.set("eventpulse_unfinished_alerts", &[], u.alerts as f64);
            metrics.set(
                "eventpulse_oldest_unfinished_alert_seconds",
                &[],
                age_seconds(u.oldest_ms, now),
            );
        }
        Err(e) => failed("unfinished alerts", &e),
    }

    let open = |s: BreakerState| if s == BreakerState::Closed { 0.0 } else { 1.0 };
    let (mut loaded, mut disabled, mut refused) = (0, 0, 0);
    for p in registry.list() {
        if p.error.is_some() {
            refused += 1;
        }
        if p.loaded && !p.enabled {
            disabled += 1;
        } else if p.loaded {
            loaded += 1;
        }
        if let Some(state) = p.breaker {
            metrics.set(
                "eventpulse_breaker_open",
                &[("plugin", p.name.as_str()), ("target", "")],
                open(state),
            );
        }
    }
    for b in registry.target_breakers() {
        metrics.set(
            "eventpulse_breaker_open",
            &[("plugin", b.plugin.as_str()), ("target", b.target.as_str())],
            open(b.state),
        );
    }
    for (state, n) in [
        ("loaded", loaded),
        ("disabled", disabled),
        ("failed", refused),
    ] {
        metrics.set("eventpulse_plugins", &[("state", state)], f64::from(n));
    }
}
