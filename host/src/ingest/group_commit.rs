//! Group commit for ingest: concurrent webhook requests are coalesced into
//! one store transaction, so a storm of senders costs one commit (and, with
//! the default durability, one fsync) per group rather than one per
//! request. Each request still gets its answer only once its own writes
//! are committed.
//!
//! The queue in front of the writer is bounded. When it is full the store
//! is not keeping up, and a request is refused at once ([`Busy`]: the API
//! answers 503 with `Retry-After`, which Alertmanager retries) instead of
//! waiting in memory without bound.

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::store::{self, IngestWrite, Ingested, Store};

/// Requests coalesced into one transaction at most.
const MAX_GROUP: usize = 256;

/// The ingest queue is full: try again shortly.
#[derive(Debug, thiserror::Error)]
#[error("ingest is saturated: the store is not keeping up")]
pub struct Busy;

/// Why a write was not committed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Refused at the door; nothing was written.
    #[error(transparent)]
    Busy(#[from] Busy),
    /// The store failed; nothing was written.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The writer stopped (shutdown) before committing it.
    #[error("ingest is shutting down")]
    Stopped,
}

struct Request {
    write: IngestWrite,
    reply: oneshot::Sender<Result<Ingested, store::Error>>,
}

/// Where handlers send their writes. Cheap to clone.
#[derive(Clone, Debug)]
pub struct GroupCommit {
    queue: mpsc::Sender<Request>,
}

impl GroupCommit {
    /// A queue of at most `capacity` waiting requests, and the writer that
    /// drains it into `store` (run it until `cancel` fires).
    pub fn new(
        store: Store,
        capacity: usize,
        cancel: CancellationToken,
    ) -> (GroupCommit, impl Future<Output = ()> + Send) {
        let (queue, requests) = mpsc::channel(capacity.max(1));
        (GroupCommit { queue }, write(store, requests, cancel))
    }

    /// Commit `write` with whatever else is waiting; its outcome once durable.
    pub async fn commit(&self, write: IngestWrite) -> Result<Ingested, CommitError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .try_send(Request { write, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => CommitError::Busy(Busy),
                mpsc::error::TrySendError::Closed(_) => CommitError::Stopped,
            })?;
        match answer.await {
            Ok(result) => Ok(result?),
            Err(_) => Err(CommitError::Stopped),
        }
    }
}

/// The writer: take everything waiting (up to [`MAX_GROUP`]), commit it in
/// one transaction, answer each request. If the group's transaction fails,
/// each request is tried alone, so one bad write fails only its sender;
/// if the writer could not be had at all ([`store::Error::Busy`]), every
/// request of the group is refused at once.
async fn write(store: Store, mut requests: mpsc::Receiver<Request>, cancel: CancellationToken) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    loop {
        let first = tokio::select! {
            r = requests.recv() => r,
            () = cancel.cancelled() => None,
        };
        let Some(first) = first else { return };
        group.push(first);
        while group.len() < MAX_GROUP {
            match requests.try_recv() {
                Ok(r) => group.push(r),
                Err(_) => break,
            }
        }
        let (writes, replies): (Vec<_>, Vec<_>) =
            group.drain(..).map(|r| (r.write, r.reply)).unzip();
        match store.ingest(&writes).await {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            // The writer stayed taken and nothing was written: committing
            // the requests one by one would wait as long again for each.
            Err(store::Error::Busy(waited)) => {
                for reply in replies {
                    let _ = reply.send(Err(store::Error::Busy(waited)));
                }
            }
            Err(e) if writes.len() == 1 => {
                let _ = replies
                    .into_iter()
                    .next()
                    .expect("one request")
                    .send(Err(e));
            }
            Err(e) => {
                tracing::warn!(requests = writes.len(), error = %e, "group commit failed; committing its requests one by one");
                for (write, reply) in writes.iter().zip(replies) {
                    let result = store.ingest(std::slice::from_ref(write)).await;
                    let _ = reply.send(result.map(|mut o| o.pop().expect("one outcome")));
                }
            }
        }
    }
}
