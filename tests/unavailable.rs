//! The database goes away and comes back. While it is away ingest answers
//! 503 (so Alertmanager retries) and writes nothing; what was acknowledged
//! before is not lost; once it is back the retry is accepted and the stages
//! carry on from where they were.

use std::time::Duration;

use eventpulse::ingest::alertmanager::sample;
use eventpulse_tests::{Backend, Host, database_url, post_webhook, test_config, wait_for};
use sqlx::{Connection, Executor};

const SETTLE: Duration = Duration::from_secs(30);

fn alert(service: &str) -> serde_json::Value {
    sample(
        "HighCPU",
        &[("service", service)],
        false,
        "2026-11-24T10:00:00Z",
        "",
    )
}

async fn host_on(backend: Backend) -> Host {
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let mut config = test_config(dir.path());
    config.database_url = database_url(backend, dir.path()).await;
    config.store.busy_timeout_ms = 300;
    std::fs::create_dir_all(&config.plugin_dir).unwrap();
    let host = Host::start_with(config, dir, eventpulse::runtime::Clock::system()).await;
    host.install_first_party("").await;
    host
}

/// Both alerts became incidents whose action completed.
async fn both_processed(host: &Host) {
    wait_for(
        "both alerts processed to completed actions",
        SETTLE,
        || async {
            let c = host.store.counts().await.ok()?;
            (c.incidents == 2 && c.actions_completed == 2 && c.notifications_delivered == 2)
                .then_some(())
        },
    )
    .await;
}

/// SQLite: another process holds the write lock (`BEGIN EXCLUSIVE`), as a
/// backup tool or a stuck writer would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_locked_is_503_then_resumes() {
    let host = host_on(Backend::Sqlite).await;
    let (status, _) = post_webhook(&host.url, &alert("before")).await;
    assert_eq!(status, 200);

    let mut locker = sqlx::SqliteConnection::connect(host.database_url())
        .await
        .unwrap();
    locker.execute("BEGIN EXCLUSIVE").await.unwrap();
    let (status, body) = post_webhook(&host.url, &alert("during")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "store unavailable; retry later");
    // Keep it locked a little longer, so the stages meet it too.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let alerts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM alerts WHERE labels LIKE '%during%'")
            .fetch_one(&mut locker)
            .await
            .unwrap();
    assert_eq!(alerts, 0, "nothing of the refused delivery was written");
    locker.execute("ROLLBACK").await.unwrap();
    drop(locker);

    // Alertmanager retries; now it is accepted and everything completes.
    let (status, body) = post_webhook(&host.url, &alert("during")).await;
    assert_eq!(
        (status, body["new_events"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    both_processed(&host).await;
    host.stop().await;
}

/// PostgreSQL: the database refuses connections and the host's are
/// terminated, as in a failover or a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_is_503_then_resumes() {
    let host = host_on(Backend::Postgres).await;
    let db = eventpulse_tests::database_of(host.database_url()).to_owned();
    let mut admin = sqlx::PgConnection::connect(&eventpulse_tests::postgres_base_url())
        .await
        .unwrap();
    let (status, _) = post_webhook(&host.url, &alert("before")).await;
    assert_eq!(status, 200);

    admin
        .execute(format!("ALTER DATABASE {db} ALLOW_CONNECTIONS false").as_str())
        .await
        .unwrap();
    admin
        .execute(
            format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{db}' AND pid <> pg_backend_pid()"
            )
            .as_str(),
        )
        .await
        .unwrap();
    // Every request while it is down is refused, never acknowledged.
    for _ in 0..3 {
        let (status, body) = post_webhook(&host.url, &alert("during")).await;
        assert_eq!(status, 503, "{body}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    admin
        .execute(format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true").as_str())
        .await
        .unwrap();

    let (status, body) = wait_for("ingest accepts again", SETTLE, || async {
        let (status, body) = post_webhook(&host.url, &alert("during")).await;
        (status == 200).then_some((status, body))
    })
    .await;
    assert_eq!(
        (status, body["new_events"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    both_processed(&host).await;
    host.stop().await;
}

/// PostgreSQL over TLS (`.ci/run` starts the server with `ssl=on`, a
/// certificate from its own throwaway CA, and `hostnossl ... reject`, so
/// every PostgreSQL test runs over TLS): `sslmode=verify-full` with the
/// server's CA connects; another CA is refused, naming the certificate;
/// without TLS the server refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_verifies_the_server() {
    let base = eventpulse_tests::postgres_base_url();
    assert!(
        base.contains("sslmode=verify-full") && base.contains("sslrootcert="),
        "EP_TEST_POSTGRES_URL must ask for TLS with verify-full and name its CA (.ci/run does): {base}"
    );
    let store = eventpulse::store::Store::connect(&base)
        .await
        .expect("verify-full connects");
    assert!(store.ping().await.is_ok());

    let dir = tempfile::tempdir().unwrap();
    let other = eventpulse_tests::pki::TestCa::new(dir.path(), "other");
    let (head, query) = base.split_once('?').unwrap();
    let rest: Vec<String> = query
        .split('&')
        .filter(|kv| !kv.starts_with("sslrootcert="))
        .map(str::to_owned)
        .collect();
    let wrong = format!(
        "{head}?{}&sslrootcert={}",
        rest.join("&"),
        other.cert.display()
    );
    let err = eventpulse::store::Store::connect(&wrong)
        .await
        .err()
        .expect("another CA is refused");
    let text = chain(&err).to_lowercase();
    assert!(
        text.contains("certificate") || text.contains("unknownissuer"),
        "{text}"
    );

    let plain = format!("{head}?sslmode=disable");
    let err = eventpulse::store::Store::connect(&plain)
        .await
        .err()
        .expect("plain text is refused");
    let text = chain(&err);
    assert!(text.contains("pg_hba") || text.contains("SSL"), "{text}");
}

/// An error with its sources.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
