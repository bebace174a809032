//! The pipeline under load, in one run: embedded on SQLite, embedded on
//! PostgreSQL, and scaled out (one instance) on PostgreSQL + Kafka
//! (librdkafka's mock cluster in this process: the relay, the topics and
//! the consumer groups are real; the broker is in memory):
//!
//! - throughput: `BENCH_ALERTS` (default 5,000) HighCPU alerts for distinct
//!   services, posted as webhooks of 10 alerts by 8 concurrent senders;
//!   measured from the first post until every alert's no-op action has
//!   completed (ingest → rule → incident + action + notification → action
//!   plugin → outcome → rule again);
//! - latency at a fixed rate: single-alert webhooks at `BENCH_RATE`
//!   (default 1,000/s) for 3 s; webhook round trip p50/p99, and
//!   alert.raised → action.requested p50/p99 (event timestamps).
//!
//! `cargo bench -p eventpulse-tests --bench pipeline` prints a table.
//! PostgreSQL comes from `EP_TEST_POSTGRES_URL` (as in the tests).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventpulse::config::TransportKind;
use eventpulse::ingest::alertmanager::sample;
use eventpulse::runtime::Clock;
use eventpulse_tests::{Backend, Host, database_url, test_config};
use rdkafka::mocking::MockCluster;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)]
}

fn webhook(first: usize, n: usize, tag: &str) -> serde_json::Value {
    let mut body = sample(
        "HighCPU",
        &[("service", "x")],
        false,
        "2026-11-24T10:00:00Z",
        "",
    );
    let template = body["alerts"][0].clone();
    let alerts: Vec<serde_json::Value> = (first..first + n)
        .map(|i| {
            let mut a = template.clone();
            a["labels"]["service"] = format!("{tag}-{i}").into();
            a["fingerprint"] = format!("{tag}{i:08}").into();
            a
        })
        .collect();
    body["alerts"] = alerts.into();
    body
}

struct Result {
    backend: &'static str,
    alerts_per_sec: f64,
    webhook_p50: Duration,
    webhook_p99: Duration,
    action_p50: Duration,
    action_p99: Duration,
    rate: f64,
}

/// A host on `backend`; on Kafka when `brokers` is given.
async fn host(backend: Backend, brokers: Option<&str>) -> Host {
    let Some(brokers) = brokers else {
        return Host::start_on(backend).await;
    };
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut config = test_config(dir.path());
    config.database_url = database_url(backend, dir.path()).await;
    config.transport.kind = TransportKind::Kafka;
    config.transport.kafka.brokers = brokers.into();
    config.transport.kafka.create_topics = false;
    std::fs::create_dir_all(&config.plugin_dir).unwrap();
    Host::start_with(config, dir, Clock::system()).await
}

async fn run(backend: Backend, brokers: Option<&str>, name: &'static str) -> Result {
    let host = host(backend, brokers).await;
    host.install_first_party("").await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/alerts/alertmanager", host.url);

    // Throughput.
    let total = env("BENCH_ALERTS", 5_000);
    let per_hook = 10;
    let senders = 8;
    let start = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..senders {
        let (client, url, next) = (client.clone(), url.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i * per_hook >= total {
                    return;
                }
                let r = client
                    .post(&url)
                    .json(&webhook(i * per_hook, per_hook, "t"))
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "{}", r.status());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    loop {
        let c = host.store.counts().await.unwrap();
        if c.actions_completed as usize >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let alerts_per_sec = total as f64 / start.elapsed().as_secs_f64();

    // Latency at a fixed rate.
    let rate = env("BENCH_RATE", 1_000);
    let seconds = 3;
    let n = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut handles = Vec::with_capacity(n);
    let paced = Instant::now();
    for i in 0..n {
        ticker.tick().await;
        let (client, url) = (client.clone(), url.clone());
        handles.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = client
                .post(&url)
                .json(&webhook(i, 1, "l"))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
            t.elapsed()
        }));
    }
    let mut webhook_lat = Vec::with_capacity(n);
    for h in handles {
        webhook_lat.push(h.await.unwrap());
    }
    let achieved = n as f64 / paced.elapsed().as_secs_f64();
    loop {
        let c = host.store.counts().await.unwrap();
        if c.actions_completed as usize >= total + n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // alert.raised time → action.requested time, per alert of this phase.
    let events = host
        .store
        .outbox_read(&["alert.raised", "action.requested"], 0, u32::MAX)
        .await
        .unwrap();
    let mut raised: HashMap<String, u64> = HashMap::new();
    let mut action_lat = Vec::new();
    for (_, payload) in events {
        let e: serde_json::Value = serde_json::from_str(&payload).unwrap();
        let alert_id = e["correlation"]["alert_id"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        if !alert_id.starts_with('l') {
            continue;
        }
        let t = e["time"].as_u64().unwrap();
        if e["kind"] == "alert.raised" {
            raised.insert(alert_id, t);
        } else if let Some(r) = raised.get(&alert_id) {
            action_lat.push(Duration::from_millis(t.saturating_sub(*r)));
        }
    }
    assert_eq!(action_lat.len(), n, "one action per paced alert");
    host.stop().await;
    Result {
        backend: name,
        alerts_per_sec,
        webhook_p50: pct(&mut webhook_lat, 0.5),
        webhook_p99: pct(&mut webhook_lat, 0.99),
        action_p50: pct(&mut action_lat, 0.5),
        action_p99: pct(&mut action_lat, 0.99),
        rate: achieved,
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    eventpulse_tests::components();
    let kafka = MockCluster::new(1).unwrap();
    for kind in eventpulse::pipeline::kinds::ALL {
        kafka
            .create_topic(&format!("eventpulse.{kind}"), 6, 1)
            .unwrap();
    }
    let brokers = kafka.bootstrap_servers();
    let results = rt.block_on(async {
        vec![
            run(Backend::Sqlite, None, "SQLite (embedded)").await,
            run(Backend::Postgres, None, "PostgreSQL (embedded)").await,
            run(Backend::Postgres, Some(&brokers), "PostgreSQL + Kafka").await,
        ]
    });
    println!();
    println!(
        "| store | alerts/s to completed action | paced rate | webhook p50 | webhook p99 | alert→action.requested p50 | p99 |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in results {
        println!(
            "| {} | {:.0} | {:.0}/s | {:.2} ms | {:.2} ms | {} ms | {} ms |",
            r.backend,
            r.alerts_per_sec,
            r.rate,
            r.webhook_p50.as_secs_f64() * 1e3,
            r.webhook_p99.as_secs_f64() * 1e3,
            r.action_p50.as_millis(),
            r.action_p99.as_millis()
        );
    }
}
