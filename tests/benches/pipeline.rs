//! The pipeline under load, in one run, each configuration with
//! `pipeline.batch = 1` (one event per transaction: the baseline) and the
//! batched default: embedded on SQLite, embedded on PostgreSQL, and scaled
//! out on PostgreSQL + Kafka with one and two instances (librdkafka's mock
//! cluster in this process: the relay, the topics and the consumer groups
//! are real; the broker is in memory). Every row runs on the default
//! durability (`store.durability = "power-loss"`):
//!
//! - throughput: `BENCH_ALERTS` (default 5,000) HighCPU alerts for distinct
//!   services, posted as webhooks of 10 alerts by 8 concurrent senders;
//!   measured from the first post until every alert's no-op action has
//!   completed and its notification was delivered (ingest → rule →
//!   incident + action + notification → action and notifier plugins →
//!   outcome → rule again);
//! - latency at a fixed rate: single-alert webhooks at `BENCH_RATE`
//!   (default 1,000/s) for 3 s; webhook round trip p50/p99, and
//!   alert.raised → action.requested p50/p99 (event timestamps, ms);
//! - a storm: `BENCH_STORM` (default 50,000) alerts posted by 64 senders as
//!   fast as they can (a 503 is retried, as Alertmanager does); seconds
//!   until all are drained, and the process's peak RSS meanwhile (the
//!   bench's own HTTP clients included); on SQLite also the share of the
//!   storm its one write connection was busy (transactions holding it plus
//!   group commits, from `eventpulse_sqlite_writer_*_seconds`): near 100 %
//!   the writer is what bounds the row; and the CPU time the process used
//!   per storm alert and on how many cores on average (from
//!   `/proc/self/stat`; the bench's senders run in this process too), and
//!   the same for the whole machine (`/proc/stat`: PostgreSQL's server
//!   included). At 2 cores, 2 / (the machine's CPU per alert) is what no
//!   scheduling could beat.
//!   Baseline rows skip the storm unless `BENCH_BASELINE_STORM=1` (it
//!   takes minutes at their rate).
//!
//! `cargo bench -p eventpulse-tests --bench pipeline` prints a table;
//! `BENCH_ONLY=sqlite` (a substring of the store column) and
//! `BENCH_BASELINE=0` (batched rows only) run fewer rows.
//! `BENCH_SQLITE_CACHE_MIB`, `BENCH_SQLITE_MMAP_MIB` and
//! `BENCH_DURABILITY=process-crash` change the store's settings;
//! `BENCH_LOG=<filter>` keeps the hosts' logs (`sqlx::query=debug`: every
//! statement); `BENCH_WRITER=1` prints after each SQLite storm how often
//! and how long each holder held its writer per second, then its commits,
//! WAL syncs and checkpoints, how busy each stage was, and how many
//! sandbox invocations an alert cost.
//! PostgreSQL comes from `EP_TEST_POSTGRES_URL` (as in the tests).
//!
//! `BENCH_TELEMETRY=1` measures instead what metrics and traces cost: the
//! batched SQLite throughput run `BENCH_ROUNDS` (default 3) times with both
//! off (no metrics registry, trace export paused) and with both on (metrics
//! kept and scraped every second, every span exported over OTLP/HTTP to a
//! local receiver that decodes nothing), alternating which goes first, and
//! prints the medians and the overhead.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventpulse::config::TransportKind;
use eventpulse::ingest::alertmanager::sample;
use eventpulse::runtime::Clock;
use eventpulse_tests::{Backend, Host, database_url, drop_database, test_config};
use rdkafka::mocking::MockCluster;

/// The allocator the `eventpulse` binary runs with (host/src/main.rs): the
/// hosts run inside this process, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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

/// One configuration of the bench.
struct Setup {
    name: &'static str,
    backend: Backend,
    kafka: bool,
    batch: u32,
    instances: usize,
    /// Keep metrics (`telemetry.metrics`).
    metrics: bool,
}

struct Row {
    name: &'static str,
    batch: u32,
    instances: usize,
    alerts_per_sec: f64,
    rate: f64,
    webhook_p50: Duration,
    webhook_p99: Duration,
    action_p50: Duration,
    action_p99: Duration,
    /// The storm: see [`Storm`].
    storm: Option<Storm>,
}

/// What a storm took.
struct Storm {
    /// Seconds to drain it.
    secs: f64,
    /// This process's peak resident set meanwhile, MiB.
    rss: f64,
    /// 503s answered (and retried).
    refused: usize,
    /// On SQLite, the share of the storm its one writer was busy.
    busy: Option<f64>,
    /// Alerts posted.
    alerts: usize,
    /// CPU seconds this process used meanwhile (user + system; the
    /// bench's senders included).
    cpu: f64,
    /// CPU seconds the whole machine used meanwhile (PostgreSQL's server
    /// included).
    machine_cpu: f64,
}

/// CPU seconds this process has used so far, user plus system, from
/// `/proc/self/stat` (`utime` and `stime`, in ticks of 1/100 s on Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The fields after the command name, which is in parentheses and may
    // hold spaces: the first of them is field 3, so utime (14) is the 12th.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// CPU seconds all of this machine's cores have spent busy so far (every
/// state of `/proc/stat`'s `cpu` line but idle and iowait, in ticks of
/// 1/100 s).
fn machine_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        // user nice system idle iowait irq softirq steal (guest time is
        // counted in user and nice already)
        .take(8)
        .map(|t| t.parse().unwrap())
        .collect();
    let (idle, iowait) = (ticks[3], ticks[4]);
    (ticks.iter().sum::<f64>() - idle - iowait) / 100.0
}

/// Every sample in `host`'s metrics (Prometheus text): series with its
/// labels, and value.
fn samples(host: &Host) -> Vec<(String, f64)> {
    host.registry
        .metrics()
        .render()
        .lines()
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The sandbox's invocations so far, all plugins and operations: (count,
/// seconds), wall time from the slot request to the answer.
fn invocation_stats(host: &Host) -> (f64, f64) {
    let mut stats = (0.0, 0.0);
    for (series, value) in samples(host) {
        if series.starts_with("eventpulse_plugin_invocation_duration_seconds_count{") {
            stats.0 += value;
        } else if series.starts_with("eventpulse_plugin_invocation_duration_seconds_sum{") {
            stats.1 += value;
        }
    }
    stats
}

/// SQLite's writer histograms in `host`'s metrics so far: (count, sum) of
/// the holds by holder, then of the group commits, the WAL syncs and the
/// checkpoints, keyed "commit", "WAL sync" and "checkpoint" (`None` on
/// PostgreSQL, which has no single writer).
fn writer_stats(host: &Host) -> Option<BTreeMap<String, (f64, f64)>> {
    let mut stats = BTreeMap::<String, (f64, f64)>::new();
    for (series, value) in samples(host) {
        let (name, holder) = match series.split_once("{holder=\"") {
            Some((name, rest)) => (name, rest.trim_end_matches("\"}")),
            None => (series.as_str(), ""),
        };
        let (key, what) = match name.strip_prefix("eventpulse_sqlite_") {
            Some("writer_hold_seconds_count") => (holder, 0),
            Some("writer_hold_seconds_sum") => (holder, 1),
            Some("writer_commit_seconds_count") => ("commit", 0),
            Some("writer_commit_seconds_sum") => ("commit", 1),
            Some("wal_sync_seconds_count") => ("WAL sync", 0),
            Some("wal_sync_seconds_sum") => ("WAL sync", 1),
            Some("checkpoint_seconds_count") => ("checkpoint", 0),
            Some("checkpoint_seconds_sum") => ("checkpoint", 1),
            _ => continue,
        };
        let entry = stats.entry(key.to_owned()).or_default();
        match what {
            0 => entry.0 = value,
            _ => entry.1 = value,
        }
    }
    stats.contains_key("commit").then_some(stats)
}

/// The stages' batch histograms in `host`'s metrics so far, by stage:
/// (batches, seconds handling and committing them, events in them).
fn stage_stats(host: &Host) -> BTreeMap<String, (f64, f64, f64)> {
    let mut stats = BTreeMap::<String, (f64, f64, f64)>::new();
    for (series, value) in samples(host) {
        let Some((name, rest)) = series.split_once("{stage=\"") else {
            continue;
        };
        let stage = rest.trim_end_matches("\"}");
        let entry = stats.entry(stage.to_owned()).or_default();
        match name {
            "eventpulse_stage_batch_duration_seconds_count" => entry.0 = value,
            "eventpulse_stage_batch_duration_seconds_sum" => entry.1 = value,
            "eventpulse_stage_batch_size_sum" => entry.2 = value,
            _ => {}
        }
    }
    stats
}

/// With `BENCH_WRITER=1`, per stage over a storm of `secs` (the change
/// from `before`): batches per second, events per batch, how long a batch
/// took to handle and commit, and the share of the storm the stage spent
/// doing so. A stage near 100 % is a stage whose own loop bounds the row.
/// Then the sandbox's invocations per alert of the storm (`alerts`) and
/// their wall time.
fn print_stages(
    before: &BTreeMap<String, (f64, f64, f64)>,
    invocations_before: (f64, f64),
    host: &Host,
    secs: f64,
    alerts: usize,
) {
    if !std::env::var("BENCH_WRITER").is_ok_and(|v| v == "1") {
        return;
    }
    eprintln!("Stages per storm second ({secs:.1} s):");
    eprintln!("| stage | batches per s | events per batch | ms each | busy |");
    eprintln!("|---|---:|---:|---:|---:|");
    for (stage, a) in stage_stats(host) {
        let b = before.get(&stage).copied().unwrap_or_default();
        let (n, held, size) = (a.0 - b.0, a.1 - b.1, a.2 - b.2);
        if n > 0.0 {
            eprintln!(
                "| {stage} | {:.0} | {:.1} | {:.2} | {:.0} % |",
                n / secs,
                size / n,
                held / n * 1e3,
                held / secs * 100.0
            );
        }
    }
    let (count, wall) = invocation_stats(host);
    let (count, wall) = (count - invocations_before.0, wall - invocations_before.1);
    eprintln!(
        "Sandbox: {:.2} invocations per alert, {:.1} us each (wall), {:.2} s per storm second",
        count / alerts as f64,
        wall / count.max(1.0) * 1e6,
        wall / secs
    );
}

/// Over a storm of `secs`: the share of it SQLite's writer was busy
/// (holds plus commits). With `BENCH_WRITER=1` it prints, per storm second,
/// how often and how long each holder held the writer, then the commits
/// and the WAL syncs and checkpoints (which run beside the connection).
fn writer_busy(
    before: Option<BTreeMap<String, (f64, f64)>>,
    host: &Host,
    secs: f64,
) -> Option<f64> {
    let (before, after) = (before?, writer_stats(host)?);
    let mut rows: Vec<(&str, f64, f64)> = after
        .iter()
        .map(|(key, a)| {
            let b = before.get(key).copied().unwrap_or_default();
            (key.as_str(), (a.0 - b.0) / secs, (a.1 - b.1) / secs)
        })
        .filter(|r| r.1 > 0.0)
        .collect();
    // Syncs and checkpoints run beside the writer's connection.
    let beside = |key: &str| key == "WAL sync" || key == "checkpoint";
    let is_hold = |key: &str| key != "commit" && !beside(key);
    let busy = rows.iter().filter(|r| !beside(r.0)).map(|r| r.2).sum();
    if std::env::var("BENCH_WRITER").is_ok_and(|v| v == "1") {
        // Holders by time held, then commits, then syncs and checkpoints.
        rows.sort_by(|x, y| {
            (!is_hold(x.0), beside(x.0))
                .cmp(&(!is_hold(y.0), beside(y.0)))
                .then(y.2.total_cmp(&x.2))
        });
        eprintln!("SQLite writer per storm second ({secs:.1} s):");
        eprintln!("| held by | per s | s per s | ms each |");
        eprintln!("|---|---:|---:|---:|");
        for (key, count, held) in &rows {
            eprintln!(
                "| {key} | {count:.0} | {held:.3} | {:.2} |",
                held / count * 1e3
            );
        }
    }
    Some(busy)
}

/// Hosts for `setup`, sharing one database (and the Kafka topics).
async fn hosts(setup: &Setup, brokers: &str, run: usize) -> Vec<Host> {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let url = database_url(setup.backend, dir.path()).await;
    let mut hosts = Vec::new();
    for i in 0..setup.instances {
        let mut config = test_config(dir.path());
        config.database_url = url.clone();
        config.pipeline.batch = setup.batch;
        config.telemetry.metrics = setup.metrics;
        if let Ok(n) = std::env::var("BENCH_CONCURRENCY") {
            config.pipeline.concurrency = n.parse().expect("BENCH_CONCURRENCY is a number");
        }
        if let Ok(n) = std::env::var("BENCH_SQLITE_CACHE_MIB") {
            config.store.sqlite_cache_mib = n.parse().expect("BENCH_SQLITE_CACHE_MIB is a number");
        }
        if let Ok(n) = std::env::var("BENCH_SQLITE_MMAP_MIB") {
            config.store.sqlite_mmap_mib = n.parse().expect("BENCH_SQLITE_MMAP_MIB is a number");
        }
        if std::env::var("BENCH_DURABILITY").is_ok_and(|v| v == "process-crash") {
            config.store.durability = eventpulse::config::Durability::ProcessCrash;
        }
        config.instance = format!("bench-{i}");
        if setup.kafka {
            config.transport.kind = TransportKind::Kafka;
            config.transport.kafka.brokers = brokers.into();
            // The mock cluster has no CreateTopics: main() made them.
            config.transport.kafka.create_topics = false;
            config.transport.kafka.topic_prefix = format!("r{run}.");
            config.transport.kafka.group_prefix = format!("r{run}.");
        }
        std::fs::create_dir_all(&config.plugin_dir).unwrap();
        hosts.push(Host::start_with(config, dir.clone(), Clock::system()).await);
    }
    hosts
}

/// Until every alert so far has its action completed and its
/// notification delivered.
async fn drained(host: &Host, alerts: usize) {
    loop {
        let (actions, notifications) = host.store.finished_jobs().await.unwrap();
        if actions as usize >= alerts && notifications as usize >= alerts {
            return;
        }
        // Counted from the status indexes on a read connection; still, often
        // polling would take from what it measures.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Post `total` alerts as webhooks of `per_hook` from `senders` tasks,
/// spread over `urls`; a 503 is retried after its `Retry-After`, as
/// Alertmanager does. Returns how many 503s were answered.
async fn flood(
    urls: &[String],
    total: usize,
    per_hook: usize,
    senders: usize,
    tag: &'static str,
) -> usize {
    let client = reqwest::Client::new();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let busy = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for s in 0..senders {
        let (client, url, next, busy) = (
            client.clone(),
            urls[s % urls.len()].clone(),
            next.clone(),
            busy.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i * per_hook >= total {
                    return;
                }
                let body = webhook(i * per_hook, per_hook.min(total - i * per_hook), tag);
                loop {
                    let r = client.post(&url).json(&body).send().await.unwrap();
                    if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                        busy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    assert!(r.status().is_success(), "{}", r.status());
                    break;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    busy.load(std::sync::atomic::Ordering::Relaxed)
}

/// This process's peak resident set since the last [`reset_peak_rss`], MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024.0
}

fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

/// Alerts per second from the first post of `total` alerts until every
/// one's action completed and notification was delivered.
async fn throughput(host: &Host, urls: &[String], total: usize) -> f64 {
    let start = Instant::now();
    flood(urls, total, 10, 8, "t").await;
    drained(host, total).await;
    total as f64 / start.elapsed().as_secs_f64()
}

async fn run(setup: &Setup, brokers: &str, run: usize, storm: bool) -> Row {
    let hosts = hosts(setup, brokers, run).await;
    for h in &hosts {
        h.install_first_party("").await;
    }
    let host = &hosts[0];
    let urls: Vec<String> = hosts
        .iter()
        .map(|h| format!("{}/api/v1/alerts/alertmanager", h.url))
        .collect();

    let total = env("BENCH_ALERTS", 5_000);
    let alerts_per_sec = throughput(host, &urls, total).await;

    // Latency at a fixed rate.
    let client = reqwest::Client::new();
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
        let (client, url) = (client.clone(), urls[i % urls.len()].clone());
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
    drained(host, total + n).await;
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

    // A storm: everything at once, as fast as 64 senders can post.
    let storm = if storm {
        let size = env("BENCH_STORM", 50_000);
        reset_peak_rss();
        let busy_before = writer_stats(host);
        let stages_before = stage_stats(host);
        let invocations_before = invocation_stats(host);
        let cpu_before = cpu_seconds();
        let machine_before = machine_cpu_seconds();
        let start = Instant::now();
        let refused = flood(&urls, size, 10, 64, "s").await;
        drained(host, total + n + size).await;
        let secs = start.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu_before;
        let machine_cpu = machine_cpu_seconds() - machine_before;
        let busy = writer_busy(busy_before, host, secs);
        print_stages(&stages_before, invocations_before, host, secs, size);
        Some(Storm {
            secs,
            rss: peak_rss_mib(),
            refused,
            busy,
            alerts: size,
            cpu,
            machine_cpu,
        })
    } else {
        None
    };
    let url = host.database_url().to_owned();
    for h in hosts {
        h.stop().await;
    }
    drop_database(&url).await;
    Row {
        name: setup.name,
        batch: setup.batch,
        instances: setup.instances,
        alerts_per_sec,
        rate: achieved,
        webhook_p50: pct(&mut webhook_lat, 0.5),
        webhook_p99: pct(&mut webhook_lat, 0.99),
        action_p50: pct(&mut action_lat, 0.5),
        action_p99: pct(&mut action_lat, 0.99),
        storm,
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    eventpulse_tests::components();
    // `BENCH_LOG=<filter>` (e.g. `sqlx::query=debug`, every statement)
    // writes the hosts' logs to `BENCH_LOG_FILE` (default bench.log).
    if let Ok(filter) = std::env::var("BENCH_LOG") {
        let path = std::env::var("BENCH_LOG_FILE").unwrap_or_else(|_| "bench.log".into());
        let file = std::fs::File::create(&path).unwrap();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::sync::Mutex::new(file))
            .with_ansi(false)
            .init();
    }
    let batch = eventpulse::config::PipelineConfig::default().batch;
    if std::env::var("BENCH_TELEMETRY").is_ok_and(|v| v == "1") {
        return rt.block_on(telemetry_overhead());
    }
    let setup = |name, backend, kafka, batch, instances| Setup {
        name,
        backend,
        kafka,
        batch,
        instances,
        metrics: true,
    };
    let mut setups = vec![
        setup("SQLite (embedded)", Backend::Sqlite, false, 1, 1),
        setup("SQLite (embedded)", Backend::Sqlite, false, batch, 1),
        setup("PostgreSQL (embedded)", Backend::Postgres, false, 1, 1),
        setup("PostgreSQL (embedded)", Backend::Postgres, false, batch, 1),
        setup("PostgreSQL + Kafka", Backend::Postgres, true, 1, 1),
        setup("PostgreSQL + Kafka", Backend::Postgres, true, batch, 1),
        setup("PostgreSQL + Kafka", Backend::Postgres, true, batch, 2),
    ];
    if let Ok(only) = std::env::var("BENCH_ONLY") {
        setups.retain(|s| s.name.to_lowercase().contains(&only.to_lowercase()));
    }
    if std::env::var("BENCH_BASELINE").is_ok_and(|v| v == "0") {
        setups.retain(|s| s.batch > 1);
    }
    let baseline_storm = std::env::var("BENCH_BASELINE_STORM").is_ok_and(|v| v == "1");
    let kafka = MockCluster::new(1).unwrap();
    for run in 0..setups.len() {
        for kind in eventpulse::pipeline::kinds::ALL {
            kafka.create_topic(&format!("r{run}.{kind}"), 6, 1).unwrap();
        }
    }
    let brokers = kafka.bootstrap_servers();
    let rows: Vec<Row> = rt.block_on(async {
        let mut rows = Vec::new();
        for (run, s) in setups.iter().enumerate() {
            let storm = s.batch > 1 || baseline_storm;
            rows.push(self::run(s, &brokers, run, storm).await);
        }
        rows
    });
    println!();
    println!(
        "| store | batch | instances | alerts/s to completed action + delivered notification | paced rate | webhook p50 | webhook p99 | alert→action.requested p50 | p99 | 50k storm: drained in | peak RSS | 503s | SQLite writer busy | storm CPU per alert: process / machine | cores used: process / machine |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let storm = match r.storm {
            Some(s) => {
                let busy = s
                    .busy
                    .map_or("n/a".into(), |b| format!("{:.0} %", b * 100.0));
                format!(
                    "{:.1} s | {:.0} MiB | {} | {busy} | {:.0} / {:.0} us | {:.2} / {:.2}",
                    s.secs,
                    s.rss,
                    s.refused,
                    s.cpu / s.alerts as f64 * 1e6,
                    s.machine_cpu / s.alerts as f64 * 1e6,
                    s.cpu / s.secs,
                    s.machine_cpu / s.secs
                )
            }
            None => "not run (BENCH_BASELINE_STORM=1) | | | | | ".into(),
        };
        println!(
            "| {} | {} | {} | {:.0} | {:.0}/s | {:.2} ms | {:.2} ms | {} ms | {} ms | {} |",
            r.name,
            r.batch,
            r.instances,
            r.alerts_per_sec,
            r.rate,
            r.webhook_p50.as_secs_f64() * 1e3,
            r.webhook_p99.as_secs_f64() * 1e3,
            r.action_p50.as_millis(),
            r.action_p99.as_millis(),
            storm,
        );
    }
}

/// Batched SQLite throughput with metrics and trace export off and on
/// (see the module documentation).
async fn telemetry_overhead() {
    // The receiver counts what arrives and answers 200, as a collector
    // would; decoding is the collector's cost, not ours.
    let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = received.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            count.fetch_add(body.len(), std::sync::atomic::Ordering::Relaxed);
            async { "" }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let config = eventpulse::config::TelemetryConfig {
        otlp_endpoint: Some(sink),
        log_filter: "warn,wasmtime=warn,cranelift=warn".into(),
        ..Default::default()
    };
    let guard = eventpulse::telemetry::init(&config).unwrap();

    let total = env("BENCH_ALERTS", 5_000);
    let rounds = env("BENCH_ROUNDS", 3);
    let batch = eventpulse::config::PipelineConfig::default().batch;
    let mut off = Vec::new();
    let mut on = Vec::new();
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for telemetry in order {
            guard.set_export(telemetry);
            let setup = Setup {
                name: "SQLite (embedded)",
                backend: Backend::Sqlite,
                kafka: false,
                batch,
                instances: 1,
                metrics: telemetry,
            };
            let hosts = hosts(&setup, "", round).await;
            let host = &hosts[0];
            host.install_first_party("").await;
            let url = format!("{}/api/v1/alerts/alertmanager", host.url);
            // Scraped every second while on, as Prometheus would (every
            // 15 s is more usual).
            let scraper = telemetry.then(|| {
                let metrics = host.get("/metrics");
                tokio::spawn(async move {
                    loop {
                        let r = metrics.try_clone().unwrap().send().await.unwrap();
                        assert!(r.status().is_success());
                        r.bytes().await.unwrap();
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                })
            });
            let rate = throughput(host, &[url], total).await;
            if let Some(s) = scraper {
                s.abort();
            }
            eprintln!("round {round}, telemetry {telemetry}: {rate:.0} alerts/s");
            if telemetry {
                on.push(rate)
            } else {
                off.push(rate)
            }
            for h in hosts {
                h.stop().await;
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let show = |v: &[f64]| {
        v.iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (all_off, all_on) = (show(&off), show(&on));
    let (m_off, m_on) = (median(&mut off), median(&mut on));
    drop(guard);
    println!();
    println!("| metrics + traces | runs (alerts/s) | median alerts/s |");
    println!("|---|---|---|");
    println!("| off | {all_off} | {m_off:.0} |");
    println!("| on | {all_on} | {m_on:.0} |");
    println!();
    println!(
        "overhead: {:.1} % of throughput; {} KiB of OTLP protobuf received",
        (1.0 - m_on / m_off) * 100.0,
        received.load(std::sync::atomic::Ordering::Relaxed) / 1024
    );
}
