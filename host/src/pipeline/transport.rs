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

/// The outbox table as the log (the embedded deployment).
#[derive(Clone)]
pub struct EmbeddedLog {
    store: Store,
    batch: u32,
}

impl EmbeddedLog {
    /// Read `store`'s outbox, at most `batch` events per fetch.
    pub fn new(store: Store, batch: u32) -> Self {
        EmbeddedLog {
            store,
            batch: batch.max(1),
        }
    }
}

impl Transport for EmbeddedLog {
    fn subscribe(
        &self,
        consumer: &'static str,
        kinds: &'static [&'static str],
    ) -> anyhow::Result<Box<dyn Subscription>> {
        Ok(Box::new(EmbeddedSubscription {
            log: self.clone(),
            consumer,
            kinds,
            offset: None,
            unsaved: None,
            saved_at: None,
        }))
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

/// How often a busy consumer saves its acknowledged offset. Saving is a
/// commit of its own (an fsync with the default durability), so it is not
/// done per batch: after a crash at most this much is read again, and the
/// inbox skips it. An idle consumer saves before it waits.
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
                self.save().await?;
                tokio::select! {
                    () = &mut appended => {}
                    () = cancel.cancelled() => return Ok(Vec::new()),
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
