//! Group commit for intake: submissions from concurrent requests are gathered into one store
//! transaction, so one fsync acknowledges many of them (DESIGN §4). A request waits for its own
//! outcome; nothing is acknowledged before the transaction that holds it has committed.
//!
//! One writer task per process drains the queue: it takes what is waiting (up to
//! [`MAX_BATCH`]), commits it, answers each sender, and deletes blobs no row kept. If a batch
//! fails because another instance won a race on the same instanceID (PostgreSQL reports the
//! unique violation for the whole transaction), the batch is replayed one by one, so the loser
//! becomes a duplicate or a conflict rather than an error.

use std::sync::Arc;

use fieldvault_store::{BlobStore, IngestOutcome, NewSubmission, Store, StoreError};
use tokio::sync::{mpsc, oneshot};

/// Most submissions committed in one transaction.
pub const MAX_BATCH: usize = 256;
/// Requests that may wait for the writer before senders feel back-pressure.
const QUEUE_DEPTH: usize = 4096;

type Reply = oneshot::Sender<Result<IngestOutcome, StoreError>>;

/// Handle to the writer task.
#[derive(Clone)]
pub struct IngestQueue {
    tx: mpsc::Sender<(NewSubmission, Reply)>,
}

impl IngestQueue {
    /// Starts the writer task on the current runtime.
    pub fn start(store: Arc<dyn Store>, blobs: BlobStore) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(writer(store, blobs, rx));
        Self { tx }
    }

    /// Queues one submission and waits until it is committed (or refused).
    pub async fn submit(&self, s: NewSubmission) -> Result<IngestOutcome, StoreError> {
        let (reply, wait) = oneshot::channel();
        self.tx
            .send((s, reply))
            .await
            .map_err(|_| StoreError::Unavailable("intake writer stopped".into()))?;
        wait.await
            .map_err(|_| StoreError::Unavailable("intake writer stopped".into()))?
    }
}

async fn writer(
    store: Arc<dyn Store>,
    blobs: BlobStore,
    mut rx: mpsc::Receiver<(NewSubmission, Reply)>,
) {
    let mut batch: Vec<NewSubmission> = Vec::with_capacity(MAX_BATCH);
    let mut replies: Vec<Reply> = Vec::with_capacity(MAX_BATCH);
    while let Some((s, r)) = rx.recv().await {
        batch.push(s);
        replies.push(r);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok((s, r)) => {
                    batch.push(s);
                    replies.push(r);
                }
                Err(_) => break,
            }
        }
        let results = commit(store.as_ref(), &blobs, &batch).await;
        for (reply, result) in replies.drain(..).zip(results) {
            let _ = reply.send(result);
        }
        batch.clear();
    }
}

async fn commit(
    store: &dyn Store,
    blobs: &BlobStore,
    batch: &[NewSubmission],
) -> Vec<Result<IngestOutcome, StoreError>> {
    match store.ingest(batch).await {
        Ok(r) => {
            delete_blobs(blobs, &r.unused_blobs).await;
            r.outcomes.into_iter().map(Ok).collect()
        }
        Err(StoreError::Conflict { .. }) if batch.len() > 1 => {
            let mut out = Vec::with_capacity(batch.len());
            for s in batch {
                out.push(commit_one(store, blobs, s).await);
            }
            out
        }
        Err(StoreError::Conflict { .. }) => match batch.first() {
            Some(s) => vec![commit_one(store, blobs, s).await],
            None => Vec::new(),
        },
        Err(e) => {
            let msg = e.to_string();
            tracing::error!(error = %msg, size = batch.len(), "intake batch failed");
            let blobs_of: Vec<String> = batch
                .iter()
                .flat_map(|s| s.attachments.iter().map(|a| a.blob_name.clone()))
                .collect();
            delete_blobs(blobs, &blobs_of).await;
            batch
                .iter()
                .map(|_| Err(StoreError::Unavailable(msg.clone())))
                .collect()
        }
    }
}

/// One submission alone; a unique violation here means a concurrent writer stored this
/// instanceID between our read and our insert, so reading again gives the right answer.
async fn commit_one(
    store: &dyn Store,
    blobs: &BlobStore,
    s: &NewSubmission,
) -> Result<IngestOutcome, StoreError> {
    for _ in 0..3 {
        match store.ingest(std::slice::from_ref(s)).await {
            Ok(mut r) => {
                delete_blobs(blobs, &r.unused_blobs).await;
                return r
                    .outcomes
                    .pop()
                    .ok_or_else(|| StoreError::Backend("no outcome".into()));
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Unavailable(
        "could not store the submission; retry".into(),
    ))
}

async fn delete_blobs(blobs: &BlobStore, names: &[String]) {
    for n in names {
        if let Err(e) = blobs.delete(n).await {
            tracing::warn!(blob = %n, error = %e, "could not delete an unused blob");
        }
    }
}
