//! Retention over a long run: does the store stop growing?
//!
//! `BENCH_SOAK_ALERTS` (default 100,000) HighCPU alerts, each firing and
//! then resolved, through the embedded pipeline with the first-party
//! plugins, on SQLite and then on PostgreSQL. Every retention age is 2 s
//! and the pruning task runs every 2 s (`[retention]`), while the alerts
//! keep coming. After every `BENCH_SOAK_ROUND` (default 10,000) alerts
//! have been handled the bench prints the store's size (SQLite: the
//! database file with its WAL; PostgreSQL: the database) and the rows of
//! the tables that grow with every alert. Without retention every one of
//! those grows linearly; with it they stay on a plateau.
//!
//! Meanwhile one incident stays open (its alert keeps firing): at the end
//! its whole timeline, its alert and its action are still there. And
//! every alert was handled while pruning ran beside the stages (no event
//! was deleted before every stage had processed it: a missing one would
//! leave its alert unfinished).
//!
//! `cargo bench -p eventpulse-tests --bench retention`; `BENCH_ONLY=sqlite`
//! or `=postgres` runs one store. PostgreSQL comes from
//! `EP_TEST_POSTGRES_URL` (as in the tests).

use std::sync::Arc;
use std::time::{Duration, Instant};

use eventpulse::ingest::alertmanager::sample;
use eventpulse::runtime::Clock;
use eventpulse_tests::{Backend, Host, database_url, test_config};
use sqlx::Row as _;

const STARTS: &str = "2026-11-24T10:00:00Z";
const ENDS: &str = "2026-11-24T10:05:00Z";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A webhook of alerts `first..first + n`, firing or resolved.
fn webhook(first: usize, n: usize, resolved: bool) -> serde_json::Value {
    let ends = if resolved { ENDS } else { "" };
    let mut body = sample("HighCPU", &[("service", "x")], resolved, STARTS, ends);
    let template = body["alerts"][0].clone();
    body["alerts"] = (first..first + n)
        .map(|i| {
            let mut a = template.clone();
            a["labels"]["service"] = format!("soak-{i}").into();
            a["fingerprint"] = format!("soak{i:010}").into();
            a
        })
        .collect::<Vec<_>>()
        .into();
    body
}

/// Post alerts `from..to` as webhooks of 10 from 8 senders; a 503 is
/// retried after a pause, as Alertmanager does.
async fn post(url: &str, from: usize, to: usize, resolved: bool) {
    let client = reqwest::Client::new();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(from));
    let mut senders = Vec::new();
    for _ in 0..8 {
        let (client, url, next) = (client.clone(), url.to_owned(), next.clone());
        senders.push(tokio::spawn(async move {
            loop {
                let first = next.fetch_add(10, std::sync::atomic::Ordering::Relaxed);
                if first >= to {
                    return;
                }
                let body = webhook(first, 10.min(to - first), resolved);
                loop {
                    let r = client.post(&url).json(&body).send().await.unwrap();
                    if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    assert!(r.status().is_success(), "{}", r.status());
                    break;
                }
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
}

/// Tables that grow with every alert, and what the prune keeps in check.
const TABLES: [&str; 9] = [
    "outbox_events",
    "inbox_events",
    "alerts",
    "incidents",
    "incident_events",
    "actions",
    "notifications",
    "decisions_log",
    "audit_log",
];

/// One line of the table: store size in MiB and row counts.
struct Sample {
    handled: usize,
    seconds: f64,
    mib: f64,
    rows: Vec<i64>,
}

async fn sample_store(
    pool: &sqlx::AnyPool,
    backend: Backend,
    dir: &std::path::Path,
) -> (f64, Vec<i64>) {
    let mut rows = Vec::new();
    for t in TABLES {
        let n: i64 = sqlx::query(&format!("SELECT COUNT(*) FROM {t}"))
            .fetch_one(pool)
            .await
            .unwrap()
            .get(0);
        rows.push(n);
    }
    let bytes = match backend {
        Backend::Sqlite => ["eventpulse.db", "eventpulse.db-wal"]
            .iter()
            .map(|f| std::fs::metadata(dir.join(f)).map_or(0, |m| m.len()))
            .sum::<u64>() as f64,
        Backend::Postgres => {
            let n: i64 = sqlx::query("SELECT pg_database_size(current_database())")
                .fetch_one(pool)
                .await
                .unwrap()
                .get(0);
            n as f64
        }
    };
    (bytes / (1024.0 * 1024.0), rows)
}

/// Until no alert is unfinished and only the open incident is not
/// resolved.
async fn drained(host: &Host, pool: &sqlx::AnyPool) {
    loop {
        let unfinished = host
            .store
            .unfinished(eventpulse::pipeline::CONSUMERS[0], true)
            .await
            .unwrap()
            .alerts;
        let open: i64 = sqlx::query("SELECT COUNT(*) FROM incidents WHERE status <> 'resolved'")
            .fetch_one(pool)
            .await
            .unwrap()
            .get(0);
        if unfinished == 0 && open == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn soak(name: &str, backend: Backend) -> Vec<Sample> {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut config = test_config(dir.path());
    config.database_url = database_url(backend, dir.path()).await;
    let r = &mut config.retention;
    r.enabled = true;
    r.every_secs = 2;
    for age in [
        &mut r.outbox_secs,
        &mut r.inbox_secs,
        &mut r.decisions_secs,
        &mut r.audit_secs,
        &mut r.incidents_secs,
        &mut r.alerts_secs,
        &mut r.kube_events_secs,
        &mut r.dead_letters_secs,
        &mut r.jobs_secs,
    ] {
        *age = 2;
    }
    std::fs::create_dir_all(&config.plugin_dir).unwrap();
    let host = Host::start_with(config, dir.clone(), Clock::system()).await;
    host.install_first_party("cooldown_secs = \"0\"\nresolve_on = \"alert\"\n")
        .await;
    let url = format!("{}/api/v1/alerts/alertmanager", host.url);
    // The bench's own reads (the host installed the database drivers).
    let pool = sqlx::AnyPool::connect(host.database_url()).await.unwrap();

    // The incident that stays open: its alert fires throughout.
    let keep = sample(
        "HighCPU",
        &[("service", "stays-open"), ("severity", "critical")],
        false,
        STARTS,
        "",
    );
    let r = reqwest::Client::new()
        .post(&url)
        .json(&keep)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let open = host
        .newest_incident(
            "the open incident mitigated",
            Duration::from_secs(60),
            |d| {
                d.incident.status == "mitigating"
                    && !d.actions.is_empty()
                    && d.actions.iter().all(|a| a.status == "completed")
                    && d.notifications.iter().all(|n| n.status == "delivered")
            },
        )
        .await;

    let total = env("BENCH_SOAK_ALERTS", 100_000);
    let round = env("BENCH_SOAK_ROUND", 10_000).max(10);
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut handled = 0;
    while handled < total {
        let to = (handled + round).min(total);
        post(&url, handled, to, false).await;
        post(&url, handled, to, true).await;
        drained(&host, &pool).await;
        handled = to;
        let (mib, rows) = sample_store(&pool, backend, dir.path()).await;
        eprintln!("{name}: {handled} alerts, {mib:.1} MiB, rows {rows:?}");
        samples.push(Sample {
            handled,
            seconds: start.elapsed().as_secs_f64(),
            mib,
            rows,
        });
    }

    // The open incident kept everything it refers to.
    let now = host
        .store
        .incident_detail(&open.incident.id)
        .await
        .unwrap()
        .expect("the open incident survives");
    assert_eq!(now.incident.status, "mitigating");
    for entry in &open.timeline {
        assert!(
            now.timeline.contains(entry),
            "pruned from an open incident's timeline: {entry:?}"
        );
    }
    assert_eq!(now.alerts, open.alerts, "its alert");
    assert_eq!(
        now.actions.iter().map(|a| &a.id).collect::<Vec<_>>(),
        open.actions.iter().map(|a| &a.id).collect::<Vec<_>>(),
        "its actions"
    );
    let dead: i64 = sqlx::query("SELECT COUNT(*) FROM dead_letters")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(dead, 0, "nothing dead-lettered");
    pool.close().await;
    let database = host.database_url().to_owned();
    host.stop().await;
    eventpulse_tests::drop_database(&database).await;
    samples
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let only = std::env::var("BENCH_ONLY")
        .unwrap_or_default()
        .to_lowercase();
    let mut tables = Vec::new();
    for (name, backend) in [
        ("SQLite", Backend::Sqlite),
        ("PostgreSQL", Backend::Postgres),
    ] {
        if !name.to_lowercase().contains(&only) {
            continue;
        }
        tables.push((name, rt.block_on(soak(name, backend))));
    }
    let abbreviated = [
        "outbox", "inbox", "alerts", "incid.", "timeln", "actions", "notif.", "decis.", "audit",
    ];
    for (name, samples) in tables {
        println!("\n{name}: every retention age 2 s, pruned every 2 s\n");
        print!("| alerts handled | elapsed s | store MiB |");
        for a in abbreviated {
            print!(" {a} |");
        }
        print!("\n|---:|---:|---:|");
        for _ in abbreviated {
            print!("---:|");
        }
        println!();
        for s in &samples {
            print!("| {} | {:.0} | {:.1} |", s.handled, s.seconds, s.mib);
            for n in &s.rows {
                print!(" {n} |");
            }
            println!();
        }
        let first = samples.first().map_or(0.0, |s| s.mib);
        let last = samples.last().map_or(0.0, |s| s.mib);
        let peak = samples.iter().map(|s| s.mib).fold(0.0, f64::max);
        println!(
            "\nsize after the first round {first:.1} MiB, peak {peak:.1} MiB, at the end {last:.1} MiB"
        );
    }
}
