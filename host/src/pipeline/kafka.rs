//! The scale-out transport: Kafka, through librdkafka.
//!
//! - [`relay`] publishes the outbox: one topic per event kind
//!   (`<topic_prefix><kind>`), keyed by the event's key, so one key's events
//!   of a kind keep their order. A row is marked published once the brokers
//!   acknowledged it (idempotent producer, `acks=all`). One relay publishes
//!   at a time across instances (the store's relay lease); the others wait
//!   to take over.
//! - [`KafkaLog`] gives each stage a consumer in the group
//!   `<group_prefix><stage>`: instances running the same stage split its
//!   partitions, and the partitions of a member that leaves or dies go to
//!   the others. Offsets are committed after the stage's inbox transaction,
//!   so a crash redelivers and the inbox skips what was done.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::transport::{BoxFuture, Delivery, Lag, Subscription, Transport};
use super::{kinds, sleep_or_cancel, store_backoff};
use crate::config::KafkaConfig;
use crate::store::Store;

/// Kafka as the log: what stages consume when `transport.kind = "kafka"`.
pub struct KafkaLog {
    config: KafkaConfig,
    batch: u32,
    /// (group, topics) of every subscription, for [`Transport::lag`].
    subscribed: Mutex<Vec<(String, Vec<String>)>>,
    /// Lag and readiness.
    monitor: Monitor,
}

/// Clients that only read metadata and committed offsets, by group
/// (`""`: no group, for readiness); they never join their group.
#[derive(Clone)]
struct Monitor {
    /// The settings every client of this log starts from.
    config: ClientConfig,
    clients: Arc<Mutex<HashMap<String, Arc<BaseConsumer<LastError>>>>>,
    /// What the brokers last refused, for readiness to name.
    last_error: LastError,
}

/// A client context that keeps librdkafka's last few distinct errors (a
/// broker down, a certificate or a SASL login refused), which a failed
/// call alone only reports as a timeout or a transport failure.
#[derive(Clone, Default)]
struct LastError(Arc<Mutex<VecDeque<String>>>);

impl LastError {
    /// The errors joined, oldest first.
    fn get(&self) -> Option<String> {
        let recent = self.0.lock().expect("last error lock");
        (!recent.is_empty()).then(|| Vec::from(recent.clone()).join("; "))
    }
}

impl ClientContext for LastError {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", "{error}: {reason}");
        let mut recent = self.0.lock().expect("last error lock");
        recent.retain(|r| r != reason);
        recent.push_back(reason.to_owned());
        if recent.len() > 3 {
            recent.pop_front();
        }
    }
}

impl ConsumerContext for LastError {}

impl Monitor {
    /// The monitoring client of `group`, created on first use.
    fn client(&self, group: &str) -> anyhow::Result<Arc<BaseConsumer<LastError>>> {
        let mut monitors = self.clients.lock().expect("monitors lock");
        if let Some(c) = monitors.get(group) {
            return Ok(c.clone());
        }
        let mut config = self.config.clone();
        if !group.is_empty() {
            config.set("group.id", group);
        }
        config.set("enable.auto.commit", "false");
        let consumer: Arc<BaseConsumer<LastError>> = Arc::new(
            config
                .create_with_context(self.last_error.clone())
                .context("creating a Kafka client for monitoring")?,
        );
        monitors.insert(group.to_owned(), consumer.clone());
        Ok(consumer)
    }

    /// Lag of `group` on each partition of `topics` (blocking).
    fn group_lag(&self, group: &str, topics: &[String]) -> anyhow::Result<Vec<Lag>> {
        let consumer = self.client(group)?;
        let metadata = consumer
            .fetch_metadata(None, MONITOR_TIMEOUT)
            .context("fetching Kafka metadata")?;
        let mut partitions = TopicPartitionList::new();
        for t in metadata
            .topics()
            .iter()
            .filter(|t| topics.iter().any(|n| n == t.name()))
        {
            for p in t.partitions() {
                partitions.add_partition(t.name(), p.id());
            }
        }
        let committed = consumer
            .committed_offsets(partitions, MONITOR_TIMEOUT)
            .with_context(|| format!("reading the committed offsets of {group}"))?;
        let positions: Vec<(String, i32, Offset)> = committed
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition(), e.offset()))
            .collect();
        // Dropped before the client may be: a client dropped while a list
        // it returned is alive hangs on close.
        drop(committed);
        let mut lags = Vec::with_capacity(positions.len());
        for (topic, partition, offset) in positions {
            let (low, high) = consumer
                .fetch_watermarks(&topic, partition, MONITOR_TIMEOUT)
                .with_context(|| format!("reading the watermarks of {topic}/{partition}"))?;
            let done = match offset {
                Offset::Offset(o) => o,
                _ => low,
            };
            lags.push(Lag {
                consumer: group.to_owned(),
                partition: Some((topic, partition)),
                events: (high - done).max(0),
                oldest_ms: None,
            });
        }
        Ok(lags)
    }
}

/// How long a monitoring call may wait for the brokers.
const MONITOR_TIMEOUT: Duration = Duration::from_secs(2);

impl KafkaLog {
    /// Consumers fetch at most `batch` events at once; the relay publishes
    /// `batch` rows per round.
    pub fn new(config: KafkaConfig, batch: u32) -> anyhow::Result<Self> {
        use secrecy::ExposeSecret as _;
        let mut client = ClientConfig::new();
        client.set("bootstrap.servers", &config.brokers);
        for (k, v) in &config.properties {
            client.set(k, v);
        }
        for (k, source) in &config.secret_properties {
            let value = source
                .read()
                .map_err(|e| anyhow::anyhow!("Kafka property {k}: {e}"))?;
            client.set(k, value.expose_secret());
        }
        for kind in config.topics.keys() {
            anyhow::ensure!(
                kinds::ALL.contains(&kind.as_str()),
                "transport.kafka.topics: `{kind}` is not an event kind (one of {})",
                kinds::ALL.join(", ")
            );
        }
        Ok(KafkaLog {
            config,
            batch: batch.max(1),
            subscribed: Mutex::default(),
            monitor: Monitor {
                config: client,
                clients: Arc::default(),
                last_error: LastError::default(),
            },
        })
    }

    /// The topic events of `kind` go to.
    pub fn topic(&self, kind: &str) -> String {
        format!("{}{kind}", self.config.topic_prefix)
    }

    /// What every client starts from: the brokers and `properties`.
    fn client_config(&self) -> ClientConfig {
        self.monitor.config.clone()
    }

    /// Create the topic of every event kind; topics that exist are kept as
    /// they are.
    pub async fn create_topics(&self) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> = self
            .client_config()
            .create()
            .context("creating the Kafka admin client")?;
        let names: Vec<(String, &str)> = kinds::ALL.iter().map(|k| (self.topic(k), *k)).collect();
        let no_override = crate::config::TopicSettings::default();
        let topics: Vec<NewTopic<'_>> = names
            .iter()
            .map(|(name, kind)| {
                let own = self.config.topics.get(*kind).unwrap_or(&no_override);
                let partitions = own.partitions.unwrap_or(self.config.partitions);
                let mut topic = NewTopic::new(
                    name,
                    partitions,
                    TopicReplication::Fixed(self.config.replication),
                );
                for (k, v) in self.config.topic_config.iter().chain(&own.config) {
                    topic = topic.set(k, v);
                }
                topic
            })
            .collect();
        let timeout = Some(Duration::from_secs(30));
        let options = AdminOptions::new()
            .operation_timeout(timeout)
            .request_timeout(timeout);
        for result in admin
            .create_topics(&topics, &options)
            .await
            .context("creating Kafka topics")?
        {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, e)) => anyhow::bail!("creating Kafka topic {topic}: {e}"),
            }
        }
        Ok(())
    }
}

impl Transport for KafkaLog {
    fn subscribe(
        &self,
        consumer: &'static str,
        kinds: &'static [&'static str],
    ) -> anyhow::Result<Box<dyn Subscription>> {
        let group = format!("{}{consumer}", self.config.group_prefix);
        let kafka: StreamConsumer = self
            .client_config()
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .with_context(|| format!("creating the Kafka consumer for group {group}"))?;
        let names: Vec<String> = kinds.iter().map(|k| self.topic(k)).collect();
        let topics: Vec<&str> = names.iter().map(String::as_str).collect();
        kafka
            .subscribe(&topics)
            .with_context(|| format!("subscribing group {group} to {topics:?}"))?;
        self.subscribed
            .lock()
            .expect("subscriptions lock")
            .push((group, names));
        Ok(Box::new(KafkaSubscription {
            kafka,
            batch: self.batch as usize,
            next_position: 1,
            delivered: VecDeque::new(),
        }))
    }

    fn lag(&self) -> BoxFuture<'_, anyhow::Result<Vec<Lag>>> {
        Box::pin(async move {
            let subscribed = self.subscribed.lock().expect("subscriptions lock").clone();
            // The groups at once, so brokers that do not answer cost one
            // timeout per scrape, not one per group.
            let mut reads = tokio::task::JoinSet::new();
            for (group, topics) in subscribed {
                let monitor = self.monitor.clone();
                reads.spawn_blocking(move || monitor.group_lag(&group, &topics));
            }
            let mut lags = Vec::new();
            while let Some(got) = reads.join_next().await {
                lags.extend(got.context("lag task")??);
            }
            lags.sort_by(|a, b| (&a.consumer, &a.partition).cmp(&(&b.consumer, &b.partition)));
            Ok(lags)
        })
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let monitor = self.monitor.clone();
            tokio::task::spawn_blocking(move || {
                monitor
                    .client("")
                    .and_then(|c| {
                        let answered = c
                            .fetch_metadata(None, MONITOR_TIMEOUT)
                            .map(drop)
                            .context("no Kafka broker answered");
                        if answered.is_err() {
                            // librdkafka reports why through the client's
                            // event queue: serve it, so `last_error` has it.
                            let until = std::time::Instant::now() + Duration::from_millis(200);
                            while std::time::Instant::now() < until {
                                let _ = c.poll(Duration::from_millis(50));
                            }
                        }
                        answered
                    })
                    .map_err(|e| match monitor.last_error.get() {
                        Some(refused) => format!("{e:#} (broker errors: {refused})"),
                        None => format!("{e:#}"),
                    })
            })
            .await
            .map_err(|e| e.to_string())?
        })
    }

    fn is_embedded(&self) -> bool {
        false
    }
}

struct KafkaSubscription {
    kafka: StreamConsumer,
    batch: usize,
    /// Positions are this subscription's own sequence numbers: a batch
    /// spans partitions, and `ack` needs one number.
    next_position: i64,
    /// Handed over, not yet acknowledged: (position, topic, partition, offset).
    delivered: VecDeque<(i64, String, i32, i64)>,
}

impl KafkaSubscription {
    fn take(&mut self, m: &impl Message) -> Delivery {
        let position = self.next_position;
        self.next_position += 1;
        self.delivered
            .push_back((position, m.topic().to_owned(), m.partition(), m.offset()));
        Delivery {
            position,
            // A payload that is not UTF-8 JSON is dead-lettered by the stage.
            payload: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
        }
    }
}

impl Subscription for KafkaSubscription {
    fn next<'a>(
        &'a mut self,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, anyhow::Result<Vec<Delivery>>> {
        Box::pin(async move {
            let first = tokio::select! {
                m = self.kafka.recv() => m.context("reading from Kafka")?.detach(),
                () = cancel.cancelled() => return Ok(Vec::new()),
            };
            let mut batch = vec![self.take(&first)];
            // Whatever else is already fetched, without waiting.
            while batch.len() < self.batch {
                match tokio::time::timeout(Duration::ZERO, self.kafka.recv()).await {
                    Ok(Ok(m)) => {
                        let m = m.detach();
                        batch.push(self.take(&m));
                    }
                    Ok(Err(_)) | Err(_) => break,
                }
            }
            Ok(batch)
        })
    }

    fn ack(&mut self, position: i64) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
            while self.delivered.front().is_some_and(|d| d.0 <= position) {
                let (_, topic, partition, offset) = self.delivered.pop_front().expect("front");
                let o = next.entry((topic, partition)).or_default();
                *o = (*o).max(offset + 1);
            }
            if next.is_empty() {
                return Ok(());
            }
            let mut list = TopicPartitionList::new();
            for ((topic, partition), offset) in next {
                list.add_partition_offset(&topic, partition, Offset::Offset(offset))?;
            }
            // Asynchronous: a commit lost to a crash only means a
            // redelivery, which the inbox skips.
            self.kafka
                .commit(&list, CommitMode::Async)
                .context("committing Kafka offsets")
        })
    }
}

/// Publish the outbox to Kafka until `cancel` fires: take the relay lease
/// (or wait for the instance holding it to go), then publish rows in `seq`
/// order as they are appended, marking them published once acknowledged.
pub async fn relay(
    store: Store,
    log: Arc<KafkaLog>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let producer: FutureProducer = log
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .context("creating the Kafka producer")?;
    let poll = Duration::from_millis(log.config.relay_poll_ms.max(10));
    'lease: loop {
        let mut lease = loop {
            match store.relay_lease().await {
                Ok(Some(lease)) => break lease,
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot ask for the relay lease; retrying"),
            }
            if sleep_or_cancel(Some(poll * 5), &cancel).await {
                return Ok(());
            }
        };
        tracing::info!("outbox relay publishing to Kafka");
        let mut wait = store_backoff();
        loop {
            if cancel.is_cancelled() {
                return Ok(());
            }
            let appended = store.appended().notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            if !lease.holds().await {
                tracing::warn!("lost the relay lease");
                continue 'lease;
            }
            match publish(&store, &producer, &log).await {
                Ok(n) if n >= log.batch as usize => continue,
                Ok(_) => {
                    wait = store_backoff();
                    tokio::select! {
                        () = &mut appended => {}
                        () = tokio::time::sleep(poll) => {}
                        () = cancel.cancelled() => return Ok(()),
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "publishing the outbox failed; retrying"
                    );
                    if sleep_or_cancel(wait.next(), &cancel).await {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// Publish one batch of unpublished rows; how many there were. Rows are
/// marked published up to the first that was not acknowledged.
async fn publish(
    store: &Store,
    producer: &FutureProducer,
    log: &KafkaLog,
) -> anyhow::Result<usize> {
    let rows = store.unpublished(log.batch).await?;
    if !rows.is_empty() {
        // What the read saw may not be on disk yet (SQLite syncs its WAL
        // after the commit); nothing leaves the host before it is.
        store.synced().await?;
    }
    let topics: Vec<String> = rows.iter().map(|r| log.topic(&r.kind)).collect();
    let mut sent = Vec::with_capacity(rows.len());
    let mut failure = None;
    for (row, topic) in rows.iter().zip(&topics) {
        let record = FutureRecord::to(topic).key(&row.key).payload(&row.payload);
        match producer.send_result(record) {
            Ok(delivery) => sent.push((row.seq, delivery)),
            Err((e, _)) => {
                failure = Some(anyhow::Error::new(e).context("queueing an event for Kafka"));
                break;
            }
        }
    }
    let mut through = None;
    for (seq, delivery) in sent {
        match delivery.await {
            Ok(Ok(_)) => through = Some(seq),
            Ok(Err((e, _))) => {
                failure = Some(anyhow::Error::new(e).context("publishing an event to Kafka"));
                break;
            }
            Err(_) => {
                failure = Some(anyhow::anyhow!("the Kafka producer shut down"));
                break;
            }
        }
    }
    if let Some(seq) = through {
        store.mark_published(seq).await?;
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(rows.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::producer::FutureProducer;

    /// librdkafka is built with OpenSSL (SSL, SASL PLAIN/SCRAM) and zstd:
    /// clients with those settings are created (a build without them
    /// refuses the values). Secret properties come from their source, and
    /// an unknown event kind in `topics` is refused.
    #[test]
    fn tls_sasl_and_compression_are_built_in() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("kafka-password");
        std::fs::write(&secret, "hunter2\n").unwrap();
        let mut config = KafkaConfig::default();
        for (k, v) in [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.username", "eventpulse"),
            ("compression.type", "zstd"),
        ] {
            config.properties.insert(k.into(), v.into());
        }
        config.secret_properties.insert(
            "sasl.password".into(),
            crate::runtime::manifest::SecretRef::File(secret),
        );
        let log = KafkaLog::new(config.clone(), 1).unwrap();
        assert_eq!(
            log.client_config().get("sasl.password"),
            Some("hunter2"),
            "read from its file"
        );
        let producer: Result<FutureProducer, _> = log.client_config().create();
        assert!(producer.is_ok(), "{:?}", producer.err());
        for mechanism in ["PLAIN", "SCRAM-SHA-256"] {
            let mut c = log.client_config();
            c.set("sasl.mechanisms", mechanism)
                .set("compression.type", "lz4");
            let p: Result<FutureProducer, _> = c.create();
            assert!(p.is_ok(), "{mechanism}: {:?}", p.err());
        }

        config
            .topics
            .insert("alert.rased".into(), Default::default());
        let err = KafkaLog::new(config, 1).err().unwrap().to_string();
        assert!(err.contains("alert.rased"), "{err}");
    }
}
