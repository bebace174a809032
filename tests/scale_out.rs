//! The scale-out deployment: instances sharing one PostgreSQL database and
//! one Kafka cluster. Every stage is a consumer group, so the instances
//! split the partitions; the outbox relay runs on one of them at a time.
//!
//! Two brokers: a real Kafka-protocol broker, tansu (`.ci/run` starts it on
//! 127.0.0.1, `EP_TEST_KAFKA_BROKERS`), where the host creates its topics
//! itself through the AdminClient; and librdkafka's own mock cluster, in
//! this process, for the faults it can inject (brokers going down). Both
//! have real topics, keyed partitions, consumer-group rebalancing and
//! offset commits, reached over TCP on 127.0.0.1.

use std::sync::Arc;
use std::time::Duration;

use eventpulse::config::{PipelineConfig, TransportKind};
use eventpulse::ingest::alertmanager::sample;
use eventpulse::pipeline::kinds;
use eventpulse::pipeline::queue::LEASE_GRACE;
use eventpulse::runtime::Clock;
use eventpulse::store::Store;
use eventpulse_tests::{Backend, Host, database_url, post_webhook, test_config, wait_for};
use rdkafka::mocking::MockCluster;
use sqlx::{Connection, Row};

const SETTLE: Duration = Duration::from_secs(60);
const STARTS: &str = "2026-11-24T10:00:00Z";

/// Where the instances' Kafka is.
#[derive(Clone)]
struct Kafka {
    /// `bootstrap.servers`.
    brokers: String,
    /// Topic and group prefix (unique per test on the shared broker).
    prefix: String,
    /// Whether the host creates the topics (the mock cannot).
    create_topics: bool,
    /// Client settings beyond the test's own (TLS, for one).
    properties: Vec<(String, String)>,
}

impl Kafka {
    /// The mock cluster's.
    fn mock(cluster: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>) -> Kafka {
        Kafka {
            brokers: cluster.bootstrap_servers(),
            prefix: "eventpulse.".into(),
            create_topics: false,
            properties: Vec::new(),
        }
    }

    /// The real broker `.ci/run` starts, with topics of this test's own.
    fn real() -> Kafka {
        let brokers = std::env::var("EP_TEST_KAFKA_BROKERS").expect(
            "EP_TEST_KAFKA_BROKERS must name the Kafka-protocol broker (.ci/run starts tansu)",
        );
        Kafka {
            brokers,
            prefix: format!("ep{}.", eventpulse_tests::dockerkit::unique()),
            create_topics: true,
            properties: Vec::new(),
        }
    }
}

/// An instance named `name` on `database` and `kafka`, with the
/// first-party rule, action and notifier loaded.
async fn instance(name: &str, database: &str, kafka: &Kafka) -> Host {
    // Warnings show with a failing test's output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn,librdkafka=off,rdkafka=off")
        .with_test_writer()
        .try_init();
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut config = test_config(dir.path());
    config.instance = name.into();
    config.database_url = database.into();
    config.transport.kind = TransportKind::Kafka;
    let k = &mut config.transport.kafka;
    k.brokers = kafka.brokers.clone();
    k.topic_prefix = kafka.prefix.clone();
    k.group_prefix = kafka.prefix.clone();
    k.create_topics = kafka.create_topics;
    k.partitions = 4;
    k.relay_poll_ms = 50;
    if kafka.create_topics {
        // Per-kind topic settings, and compressed batches.
        k.topics.insert(
            kinds::ALERT_RAISED.into(),
            eventpulse::config::TopicSettings {
                partitions: Some(8),
                config: [("retention.ms".to_owned(), "86400000".to_owned())].into(),
            },
        );
        k.properties
            .insert("compression.type".into(), "zstd".into());
    }
    // Quick group joins and failure detection for the test.
    k.properties
        .insert("session.timeout.ms".into(), "6000".into());
    k.properties
        .insert("heartbeat.interval.ms".into(), "500".into());
    k.properties.extend(kafka.properties.iter().cloned());
    config.pipeline.backoff_initial_ms = 20;
    config.pipeline.backoff_max_ms = 100;
    std::fs::create_dir_all(&config.plugin_dir).unwrap();
    let host = Host::start_with(config, dir, Clock::system()).await;
    host.install_first_party("cooldown_secs = \"300\"\n").await;
    host
}

/// A mock cluster of `brokers` brokers with the event topics, 4 partitions
/// each.
fn kafka_cluster(brokers: i32) -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = MockCluster::new(brokers).unwrap();
    for kind in kinds::ALL {
        cluster
            .create_topic(&format!("eventpulse.{kind}"), 4, brokers.min(3))
            .unwrap();
    }
    cluster
}

/// A firing HighCPU alert for `service`.
fn high_cpu(service: &str) -> serde_json::Value {
    sample(
        "HighCPU",
        &[("service", service), ("severity", "critical")],
        false,
        STARTS,
        "",
    )
}

/// Wait until `n` incidents are resolved with their action completed and
/// notification delivered; then check there is nothing more than that.
async fn all_resolved(store: &Store, n: usize) {
    wait_for(&format!("{n} incidents resolved"), SETTLE, || async {
        let c = store.counts().await.unwrap();
        let list = store.incidents(1000).await.unwrap();
        let resolved = list.iter().filter(|i| i.status == "resolved").count();
        (resolved == n && c.actions_completed == n as i64 && c.notifications_delivered == n as i64)
            .then_some(())
    })
    .await;
    let c = store.counts().await.unwrap();
    assert_eq!(
        (c.incidents, c.actions, c.notifications, c.dead_letters),
        (n as i64, n as i64, n as i64, 0),
        "each alert handled exactly once: {c:?}"
    );
}

/// Events the rule stage processed, by instance. Each alert makes two: its
/// `alert.raised` and its action's `action.completed`.
async fn processed_by(database: &str) -> Vec<(String, i64)> {
    let mut conn = sqlx::PgConnection::connect(database).await.unwrap();
    sqlx::query(
        "SELECT processed_by, COUNT(*) FROM inbox_events WHERE consumer = 'rules'
         GROUP BY processed_by ORDER BY processed_by",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// The services whose `alert.raised` events `instance` processed.
async fn services_handled_by(database: &str, instance: &str) -> Vec<String> {
    let mut conn = sqlx::PgConnection::connect(database).await.unwrap();
    sqlx::query(
        "SELECT DISTINCT o.event_key FROM inbox_events i JOIN outbox_events o USING (event_id)
         WHERE i.consumer = 'rules' AND o.kind = 'alert.raised' AND i.processed_by = $1",
    )
    .bind(instance)
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// On the real broker: the first instance creates the topics; the second
/// joins every group and the partitions rebalance.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_split_the_work_and_one_takes_over_when_the_other_leaves() {
    split_and_take_over(Kafka::real()).await;
}

/// The same on three mock brokers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_split_the_work_on_the_mock_cluster() {
    let cluster = kafka_cluster(3);
    split_and_take_over(Kafka::mock(&cluster)).await;
}

async fn split_and_take_over(kafka: Kafka) {
    let scratch = tempfile::tempdir().unwrap();
    let database = database_url(Backend::Postgres, scratch.path()).await;
    let a = instance("a", &database, &kafka).await;
    let b = instance("b", &database, &kafka).await;
    if kafka.create_topics {
        // The host made its topics, alert.raised with its own partitions.
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let client: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &kafka.brokers)
            .create()
            .unwrap();
        for (kind, want) in [(kinds::ALERT_RAISED, 8), (kinds::ACTION_REQUESTED, 4)] {
            let topic = format!("{}{kind}", kafka.prefix);
            let md = client
                .fetch_metadata(Some(&topic), Duration::from_secs(10))
                .unwrap();
            assert_eq!(md.topics()[0].partitions().len(), want, "{topic}");
        }
    }

    // Alerts for new services, half to each instance's ingest, until both
    // instances have processed some (B joins the groups after A, and a
    // rebalance takes a moment).
    let mut sent = 0;
    wait_for("both instances processing", SETTLE, || {
        sent += 1;
        let (url, alert) = (
            if sent % 2 == 0 { &a.url } else { &b.url }.clone(),
            high_cpu(&format!("svc{sent}")),
        );
        let database = database.clone();
        async move {
            let (status, body) = post_webhook(&url, &alert).await;
            assert_eq!(status, 200, "{body}");
            tokio::time::sleep(Duration::from_millis(200)).await;
            (processed_by(&database).await.len() == 2).then_some(())
        }
    })
    .await;
    for i in 0..12 {
        sent += 1;
        let url = if i % 2 == 0 { &a.url } else { &b.url };
        let (status, _) = post_webhook(url, &high_cpu(&format!("svc{sent}"))).await;
        assert_eq!(status, 200);
    }
    all_resolved(&a.store, sent).await;
    let split = processed_by(&database).await;
    assert_eq!(
        split.iter().map(|(i, _)| i.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(
        split.iter().map(|(_, n)| n).sum::<i64>(),
        2 * sent as i64,
        "every event processed once by the rule stage: {split:?}"
    );
    // Redelivered duplicates would show as second attempts.
    let list = a.store.incidents(1000).await.unwrap();
    for i in &list {
        let d = a.store.incident_detail(&i.id).await.unwrap().unwrap();
        assert_eq!(d.actions[0].attempts, 1, "{}", i.id);
        assert_eq!(d.notifications[0].attempts, 1, "{}", i.id);
    }

    // B leaves: its partitions (and the relay, if it held it) go to A.
    // The services whose alerts B handled resolve now: their events have
    // the same keys, so they land on B's former partitions.
    let of_b = services_handled_by(&database, "b").await;
    assert!(!of_b.is_empty());
    b.stop().await;
    let before = processed_by(&database).await;
    for service in &of_b {
        let resolved = sample(
            "HighCPU",
            &[("service", service), ("severity", "critical")],
            true,
            STARTS,
            "2026-11-24T10:05:00Z",
        );
        let (status, body) = post_webhook(&a.url, &resolved).await;
        assert_eq!((status, body["new_events"].as_u64()), (200, Some(1)));
    }
    wait_for("A handles B's partitions", SETTLE, || async {
        let now = processed_by(&database).await;
        (now[0].1 == before[0].1 + of_b.len() as i64).then_some(())
    })
    .await;
    assert_eq!(
        processed_by(&database).await[1],
        before[1],
        "B did nothing after it left"
    );
    assert_eq!(services_handled_by(&database, "a").await.len(), sent);
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alerts_accepted_while_kafka_is_down_are_delivered_when_it_returns() {
    let cluster = kafka_cluster(1);
    let scratch = tempfile::tempdir().unwrap();
    let database = database_url(Backend::Postgres, scratch.path()).await;
    let a = instance("a", &database, &Kafka::mock(&cluster)).await;
    post_webhook(&a.url, &high_cpu("before")).await;
    all_resolved(&a.store, 1).await;

    cluster.broker_down(1).unwrap();
    for service in ["during-1", "during-2"] {
        let (status, body) = post_webhook(&a.url, &high_cpu(service)).await;
        assert_eq!(
            (status, body["new_events"].as_u64()),
            (200, Some(1)),
            "ingest does not need the brokers: {body}"
        );
    }
    // Held in the outbox, not lost and not processed; readiness and the
    // metrics say so.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = reqwest::get(format!("{}/readyz", a.url)).await.unwrap();
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(
        body["failing"][0]
            .as_str()
            .unwrap()
            .starts_with("transport"),
        "{body}"
    );
    // The gauge is every unpublished row: the two alerts, and whatever the
    // first alert's last transaction appended after the broker went away.
    let mut conn = sqlx::PgConnection::connect(&database).await.unwrap();
    let rows = sqlx::query("SELECT COUNT(*) FROM outbox_events WHERE published_at IS NULL")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get::<i64, _>(0) as f64;
    assert!(rows >= 2.0, "{rows}");
    let metrics = a.get_text("/metrics").await;
    assert_eq!(
        unlabelled(&metrics, "eventpulse_outbox_unpublished_events"),
        Some(rows),
        "the gauge is the store's count"
    );
    assert_eq!(a.store.counts().await.unwrap().incidents, 1);
    let held: i64 = sqlx::query(
        "SELECT COUNT(*) FROM outbox_events WHERE kind = 'alert.raised' AND published_at IS NULL",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap()
    .get(0);
    assert_eq!(held, 2);

    cluster.broker_up(1).unwrap();
    all_resolved(&a.store, 3).await;
    wait_for("ready, nothing unpublished, no lag", SETTLE, || async {
        let ready = reqwest::get(format!("{}/readyz", a.url))
            .await
            .unwrap()
            .status()
            == 200;
        let metrics = a.get_text("/metrics").await;
        let lag = rules_lag(&metrics);
        let drained = unlabelled(&metrics, "eventpulse_outbox_unpublished_events") == Some(0.0);
        // Every partition of the topic is reported, each at 0.
        (ready && drained && lag.len() == 4 && lag.iter().all(|(_, v)| *v == 0.0)).then_some(())
    })
    .await;
    // Only the lag could not be read, and only while the broker was down.
    let metrics = a.get_text("/metrics").await;
    let errors: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("eventpulse_scrape_errors_total{"))
        .collect();
    assert!(
        errors.iter().all(|l| l.contains("what=\"consumer lag\"")),
        "every sampled query ran on PostgreSQL: {errors:?}"
    );
    a.stop().await;
}

/// The value of the unlabelled series `name` in an exposition.
fn unlabelled(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// `(partition, lag)` of the rule stage's group on the `alert.raised`
/// topic, from the exposition.
fn rules_lag(metrics: &str) -> Vec<(String, f64)> {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("eventpulse_kafka_consumer_lag{")
                && l.contains("group=\"eventpulse.rules\"")
                && l.contains("topic=\"eventpulse.alert.raised\"")
        })
        .map(|l| {
            let partition = l
                .split("partition=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            let value = l.rsplit_once(' ').unwrap().1.parse().unwrap();
            (partition.to_owned(), value)
        })
        .collect()
}

/// Status and attempts of the action on `target`.
async fn action_state(database: &str, target: &str) -> (String, i64) {
    let mut conn = sqlx::PgConnection::connect(database).await.unwrap();
    let r = sqlx::query("SELECT status, attempts FROM actions WHERE target = $1")
        .bind(target)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

/// A dead instance leaves its claimed jobs `running`. Another instance
/// takes a job over once the claim is older than an attempt can last
/// (`attempt_timeout_ms` + the lease grace), and leaves younger claims to
/// their owner. The dead instance's rows are written as it leaves them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_left_by_a_dead_instance_is_taken_over_after_its_lease() {
    let scratch = tempfile::tempdir().unwrap();
    let database = database_url(Backend::Postgres, scratch.path()).await;
    let a = instance("a", &database, &Kafka::real()).await;
    for service in ["stale", "live"] {
        post_webhook(&a.url, &high_cpu(service)).await;
    }
    all_resolved(&a.store, 2).await;

    let mut conn = sqlx::PgConnection::connect(&database).await.unwrap();
    let lease_ms =
        (PipelineConfig::default().attempt_timeout_ms as u128 + LEASE_GRACE.as_millis()) as i64;
    let now: i64 = sqlx::query("SELECT (extract(epoch FROM now()) * 1000)::bigint")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    for (target, claimed_at) in [("stale", now - lease_ms - 1000), ("live", now)] {
        sqlx::query("UPDATE actions SET status = 'running', updated_at = $2 WHERE target = $1")
            .bind(target)
            .bind(claimed_at)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    wait_for("the stale claim taken over", SETTLE, || async {
        (action_state(&database, "stale").await == ("completed".into(), 2)).then_some(())
    })
    .await;
    // Swept at least twice since (once a second): the live claim stays.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(action_state(&database, "live").await, ("running".into(), 1));
    a.stop().await;
}

/// A tansu broker of a test's own, for settings the shared one lacks.
struct Tansu(std::process::Child);

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Tansu {
    /// Listening on `port`, advertising `advertised` (`host:port`), with
    /// SASL authentication required when `authentication`.
    async fn start(port: u16, advertised: &str, authentication: bool) -> Tansu {
        let binary = std::env::var("EP_TEST_TANSU")
            .expect("EP_TEST_TANSU must name the tansu binary (.ci/run fetches it)");
        let mut command = std::process::Command::new(binary);
        command
            .arg("broker")
            .args(["--listener-url", &format!("tcp://127.0.0.1:{port}")])
            .args(["--advertised-listener-url", &format!("tcp://{advertised}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if authentication {
            command.arg("--authentication");
        }
        let broker = Tansu(command.spawn().expect("starting tansu"));
        wait_for("tansu listening", SETTLE, || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(drop)
        })
        .await;
        broker
    }
}

/// A Kafka log on `brokers` with `properties`, to ask whether it is ready.
async fn readiness(
    brokers: &str,
    properties: &[(&str, &str)],
    secret: Option<&std::path::Path>,
) -> Result<(), String> {
    use eventpulse::pipeline::transport::Transport as _;
    let mut config = eventpulse::config::KafkaConfig {
        brokers: brokers.into(),
        ..Default::default()
    };
    for (k, v) in properties {
        config.properties.insert((*k).into(), (*v).into());
    }
    if let Some(file) = secret {
        config.secret_properties.insert(
            "sasl.password".into(),
            eventpulse::runtime::manifest::SecretRef::File(file.into()),
        );
    }
    eventpulse::pipeline::kafka::KafkaLog::new(config, 1)
        .unwrap()
        .ready()
        .await
}

/// Kafka over TLS, and SASL, against tansu. tansu 0.6.0 has no TLS
/// listener of its own (`--cert` is accepted, and a ClientHello is then
/// read as a Kafka frame), so TLS is terminated in front of it by rustls
/// (`pki::TlsFront`) and tansu advertises the front: every connection
/// librdkafka makes, to the bootstrap server and to partition leaders,
/// is TLS, verified against the test CA with the hostname checked.
///
/// - An instance with `security.protocol = "ssl"` creates its topics and
///   runs an alert through the whole pipeline.
/// - Another CA's certificate is refused, and readiness says why.
/// - SASL: tansu keeps its users in its storage, and the only storage of
///   this build is in memory, where no user can be created once
///   authentication is required. So only the refusal is shown: a
///   SCRAM-SHA-512 login over TLS is refused by the broker, readiness
///   names it, and the password appears nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_over_tls_verifies_the_broker_and_logs_in_with_sasl() {
    use eventpulse_tests::pki::{Backend as Forward, TestCa, TlsFront, free_port};
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "kafka");
    let server = ca.issue("broker", false);
    let ca_file = ca.cert.to_str().unwrap().to_owned();

    let back = free_port();
    let front = TlsFront::start(&server, None, Forward::Tcp(format!("127.0.0.1:{back}"))).await;
    let _broker = Tansu::start(back, &front.addr, false).await;
    let kafka = Kafka {
        brokers: front.addr.clone(),
        prefix: format!("eptls{}.", eventpulse_tests::dockerkit::unique()),
        create_topics: true,
        properties: vec![
            ("security.protocol".into(), "ssl".into()),
            ("ssl.ca.location".into(), ca_file.clone()),
        ],
    };
    let scratch = tempfile::tempdir().unwrap();
    let database = database_url(Backend::Postgres, scratch.path()).await;
    let a = instance("tls", &database, &kafka).await;
    let (status, body) = post_webhook(&a.url, &high_cpu("over-tls")).await;
    assert_eq!(status, 200, "{body}");
    all_resolved(&a.store, 1).await;
    a.stop().await;

    let stranger = TestCa::new(dir.path(), "stranger");
    let refused = readiness(
        &front.addr,
        &[
            ("security.protocol", "ssl"),
            ("ssl.ca.location", stranger.cert.to_str().unwrap()),
        ],
        None,
    )
    .await
    .expect_err("a broker certificate from another CA");
    eprintln!("another CA: {refused}");
    assert!(refused.contains("certificate verify failed"), "{refused}");

    let back = free_port();
    let guarded = TlsFront::start(&server, None, Forward::Tcp(format!("127.0.0.1:{back}"))).await;
    let _broker = Tansu::start(back, &guarded.addr, true).await;
    let password = dir.path().join("kafka-password");
    std::fs::write(&password, "not-a-user-here-9f2c\n").unwrap();
    let refused = readiness(
        &guarded.addr,
        &[
            ("security.protocol", "sasl_ssl"),
            ("ssl.ca.location", &ca_file),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.username", "eventpulse"),
        ],
        Some(&password),
    )
    .await
    .expect_err("an unknown SASL user");
    eprintln!("unknown SASL user: {refused}");
    assert!(
        refused.contains("SASL authentication error") && refused.contains("unknown-user"),
        "{refused}"
    );
    assert!(!refused.contains("not-a-user-here"), "{refused}");
}
