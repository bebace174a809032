//! How stages receive events. A stage sees only [`Transport`] and
//! [`Subscription`]: it asks for the next events and acknowledges a
//! position once their inbox transactions have committed. Publishing is not
//! here: every producer appends to the outbox in its own transaction.
//!
//! [`EmbeddedLog`] reads the outbox itself as the log, keeps each
//! consumer's offset in the store and sleeps until a commit appends (no
//! polling). [`super::kafka`] implements the same two traits: a relay
//! publishes the outbox, `next` polls the consumer group, `ack` commits the
//! group offset. Delivery is at-least-once either way; the inbox makes it
//! effectively-once.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// A boxed future, so transports can be chosen at run time.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One event as the transport hands it over.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Where it sits in the log: what [`Subscription::ack`] takes.
    pub position: i64,
    /// The event envelope, JSON.
    pub payload: String,
}

/// A source of events for named consumers.
pub trait Transport: Send + Sync + 'static {
    /// Events of `kinds` for `consumer`, from where it last acknowledged.
    fn subscribe(
        &self,
        consumer: &'static str,
        kinds: &'static [&'static str],
    ) -> anyhow::Result<Box<dyn Subscription>>;

    /// How far each subscribed consumer is behind, for monitoring.
    fn lag(&self) -> BoxFuture<'_, anyhow::Result<Vec<Lag>>>;

    /// Whether events can flow now (`Err` says why not).
    fn ready(&self) -> BoxFuture<'_, Result<(), String>>;

    /// Whether stage offsets are kept in the store (the outbox is the log).
    fn is_embedded(&self) -> bool;
}

/// One consumer's distance from the head of the log (embedded: the whole
/// consumer; Kafka: one partition of one topic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lag {
    /// Consumer (embedded) or consumer group (Kafka) name.
    pub consumer: String,
    /// Kafka topic and partition; `None` embedded.
    pub partition: Option<(String, i32)>,
    /// Events waiting.
    pub events: i64,
    /// When the oldest waiting event was appended (ms; embedded only).
    pub oldest_ms: Option<i64>,
}

/// One consumer's position in the log.
pub trait Subscription: Send {
    /// The next events in log order, waiting until there are some. Empty
    /// only when `cancel` fired.
    fn next<'a>(
        &'a mut self,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, anyhow::Result<Vec<Delivery>>>;

    /// Everything up to and including `position` has been processed.
    fn ack(&mut self, position: i64) -> BoxFuture<'_, anyhow::Result<()>>;
}

/// A consumer and the kinds it reads.
type Subscribed = (&'static str, &'static [&'static str]);

/// The outbox table as the log (the embedded deployment).
#[derive(Clone)]
pub struct EmbeddedLog {
    store: Store,
    batch: u32,
    subscribed: Arc<Mutex<Vec<Subscribed>>>,
}

impl EmbeddedLog {
    /// Read `store`'s outbox, at most `batch` events per fetch.
    pub fn new(store: Store, batch: u32) -> Self {
        EmbeddedLog {
            store,
            batch: batch.max(1),
            subscribed: Arc::default(),
        }
    }
}

impl Transport for EmbeddedLog {
    fn subscribe(
        &self,
        consumer: &'static str,
        kinds: &'static [&'static str],
    ) -> anyhow::Result<Box<dyn Subscription>> {
        self.subscribed
            .lock()
            .expect("subscriptions lock")
            .push((consumer, kinds));
        Ok(Box::new(EmbeddedSubscription {
            log: self.clone(),
            consumer,
            kinds,
            offset: None,
            unsaved: None,
            saved_at: None,
        }))
    }

    fn lag(&self) -> BoxFuture<'_, anyhow::Result<Vec<Lag>>> {
        Box::pin(async move {
            let subscribed = self.subscribed.lock().expect("subscriptions lock").clone();
            let mut lags = Vec::with_capacity(subscribed.len());
            for (consumer, kinds) in subscribed {
                let b = self.store.backlog(consumer, kinds).await?;
                lags.push(Lag {
                    consumer: consumer.to_owned(),
                    partition: None,
                    events: b.events,
                    oldest_ms: b.oldest_ms,
                });
            }
            Ok(lags)
        })
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), String>> {
        // The log is the store, whose readiness is checked on its own.
        Box::pin(async { Ok(()) })
    }

    fn is_embedded(&self) -> bool {
        true
    }
}

struct EmbeddedSubscription {
    log: EmbeddedLog,
    consumer: &'static str,
    kinds: &'static [&'static str],
    /// Fetched up to here (in memory); the store holds what was acknowledged.
    offset: Option<i64>,
    /// Acknowledged but not yet saved (see [`ACK_EVERY`]).
    unsaved: Option<i64>,
    /// When an acknowledgement was last saved.
    saved_at: Option<std::time::Instant>,
}

/// How often a consumer saves its acknowledged offset, at most. Saving is
/// a commit of its own on the store's one writer (an fsync with the
/// default durability), so it is not done per batch, nor each time a
/// consumer catches up: after a crash at most this much is read again, and
/// the inbox skips it. A consumer that has caught up saves once this long
/// has passed since its last save (or at shutdown), so the stored offset,
/// which the lag gauges read, is never further behind than that.
const ACK_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

impl EmbeddedSubscription {
    async fn save(&mut self) -> anyhow::Result<()> {
        if let Some(position) = self.unsaved.take() {
            self.log
                .store
                .set_consumer_offset(self.consumer, position)
                .await?;
            self.saved_at = Some(std::time::Instant::now());
        }
        Ok(())
    }
}

impl Subscription for EmbeddedSubscription {
    fn next<'a>(
        &'a mut self,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, anyhow::Result<Vec<Delivery>>> {
        Box::pin(async move {
            let store = self.log.store.clone();
            let offset = match self.offset {
                Some(o) => o,
                None => {
                    let o = store.consumer_offset(self.consumer).await?;
                    self.offset = Some(o);
                    o
                }
            };
            loop {
                // Register for the wake-up before reading, so an append
                // committed between the read and the wait is not missed.
                let appended = store.appended().notified();
                tokio::pin!(appended);
                appended.as_mut().enable();
                let rows = store
                    .outbox_read(self.kinds, offset, self.log.batch)
                    .await?;
                if let Some(&(last, _)) = rows.last() {
                    self.offset = Some(last);
                    return Ok(rows
                        .into_iter()
                        .map(|(position, payload)| Delivery { position, payload })
                        .collect());
                }
                let save_at = match (self.unsaved, self.saved_at) {
                    (None, _) => None,
                    (Some(_), None) => Some(tokio::time::Instant::now()),
                    (Some(_), Some(at)) => Some((at + ACK_EVERY).into()),
                };
                let save_due = async {
                    match save_at {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = &mut appended => {}
                    () = save_due => self.save().await?,
                    () = cancel.cancelled() => {
                        // Best effort: what is not saved is read again
                        // after the restart, and the inbox skips it.
                        if let Err(e) = self.save().await {
                            tracing::warn!(consumer = self.consumer, error = format!("{e:#}"), "could not save the log position at shutdown");
                        }
                        return Ok(Vec::new());
                    }
                }
            }
        })
    }

    fn ack(&mut self, position: i64) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            self.unsaved = Some(position);
            if self.saved_at.is_none_or(|at| at.elapsed() >= ACK_EVERY) {
                self.save().await?;
            }
            Ok(())
        })
    }
}
