//! Group commit for intake, and the intake journal that keeps intake open while the database is
//! down (DESIGN §4, M11).
//!
//! Submissions from concurrent requests are gathered into one store transaction, so one fsync
//! acknowledges many of them. A request waits for its own outcome; nothing is acknowledged before
//! the transaction (or the journal write) that holds it is durable.
//!
//! One writer task per process drains the queue: it takes what is waiting (up to
//! [`MAX_BATCH`]), commits it, answers each sender, and deletes blobs no row kept. If a batch
//! fails because another instance won a race on the same instanceID (PostgreSQL reports the
//! unique violation for the whole transaction), the batch is replayed one by one, so the loser
//! becomes a duplicate or a conflict rather than an error.
//!
//! Degraded intake: when the store reports itself unreachable ([`StoreError::Unavailable`]), the
//! instance turns *degraded*. The batch, and every later one, is written to the encrypted local
//! [`IntakeJournal`] (fsync'd) and acknowledged as [`Queued::Journaled`]. A prober checks the
//! store every second; once it answers, the writer replays the journal oldest first, in batches,
//! before anything newer reaches the store (new submissions keep going to the journal while it
//! holds entries), so submissions are stored in the order they were acknowledged. Replay is
//! exactly once: an entry is deleted only after the transaction holding it committed, and a
//! replay of an entry that was already stored (a crash between the two) is a duplicate by
//! instanceID. An entry the store refuses (a conflicting instanceID, an edit of a deleted
//! submission) or that cannot be read is moved to `intake-journal/failed/` and logged, never
//! dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use fieldvault_store::intake_journal::{IntakeJournal, JournalError};
use fieldvault_store::{BlobStore, IngestOutcome, NewSubmission, Store, StoreError};
use tokio::sync::{mpsc, oneshot};

use super::ServiceError;

/// Most submissions committed in one transaction.
pub const MAX_BATCH: usize = 256;
/// Requests that may wait for the writer before senders feel back-pressure.
const QUEUE_DEPTH: usize = 4096;
/// How often a degraded instance checks whether the database is back.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long a probe may take before it counts as a failure.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Where a submission went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Queued {
    /// Stored in the database.
    Stored(IngestOutcome),
    /// Durably in the intake journal; stored when the database is back.
    Journaled,
}

type Reply = oneshot::Sender<Result<Queued, ServiceError>>;

/// Whether the database is reachable, and the journal's counters (for `/readyz` and `/metrics`).
pub struct IntakeHealth {
    degraded: AtomicBool,
    journal: Arc<IntakeJournal>,
    /// Submissions acknowledged from the journal since start.
    pub journaled_total: AtomicU64,
    /// Journal entries stored in the database since start.
    pub replayed_total: AtomicU64,
    /// Journal entries set aside (refused by the store, or unreadable) since start.
    pub replay_failed_total: AtomicU64,
    /// Submissions refused because the journal was full.
    pub journal_full_total: AtomicU64,
}

impl IntakeHealth {
    /// A healthy state over `journal`.
    pub fn new(journal: Arc<IntakeJournal>) -> Self {
        Self {
            degraded: AtomicBool::new(false),
            journal,
            journaled_total: AtomicU64::new(0),
            replayed_total: AtomicU64::new(0),
            replay_failed_total: AtomicU64::new(0),
            journal_full_total: AtomicU64::new(0),
        }
    }

    /// True while the database is considered unreachable: intake journals, lookups use the last
    /// known values.
    pub fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    /// Records that the store failed as unreachable.
    pub fn mark_unreachable(&self, why: &str) {
        if !self.degraded.swap(true, Ordering::AcqRel) {
            tracing::error!(
                error = %why,
                "database unreachable: intake is degraded, submissions go to the intake journal"
            );
        }
    }

    fn mark_reachable(&self) {
        if self.degraded.swap(false, Ordering::AcqRel) {
            tracing::warn!(
                pending = self.journal.pending().0,
                "database reachable again: replaying the intake journal"
            );
        }
    }

    /// The journal.
    pub fn journal(&self) -> &IntakeJournal {
        &self.journal
    }
}

/// Handle to the writer task.
#[derive(Clone)]
pub struct IngestQueue {
    tx: mpsc::Sender<(NewSubmission, Reply)>,
    health: Arc<IntakeHealth>,
}

impl IngestQueue {
    /// Starts the writer task and the database prober on the current runtime. Entries left in
    /// the journal by an earlier run are replayed first.
    pub fn start(store: Arc<dyn Store>, blobs: BlobStore, health: Arc<IntakeHealth>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(writer(store.clone(), blobs, health.clone(), rx));
        tokio::spawn(prober(store, health.clone()));
        Self { tx, health }
    }

    /// The shared health state.
    pub fn health(&self) -> &Arc<IntakeHealth> {
        &self.health
    }

    /// Queues one submission and waits until it is committed, journaled or refused.
    pub async fn submit(&self, s: NewSubmission) -> Result<Queued, ServiceError> {
        let stopped =
            || ServiceError::Store(StoreError::Unavailable("intake writer stopped".into()));
        let (reply, wait) = oneshot::channel();
        self.tx.send((s, reply)).await.map_err(|_| stopped())?;
        wait.await.map_err(|_| stopped())?
    }
}

async fn prober(store: Arc<dyn Store>, health: Arc<IntakeHealth>) {
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        if health.degraded()
            && matches!(
                tokio::time::timeout(PROBE_TIMEOUT, store.health()).await,
                Ok(Ok(()))
            )
        {
            health.mark_reachable();
        }
    }
}

async fn writer(
    store: Arc<dyn Store>,
    blobs: BlobStore,
    health: Arc<IntakeHealth>,
    mut rx: mpsc::Receiver<(NewSubmission, Reply)>,
) {
    let mut batch: Vec<NewSubmission> = Vec::with_capacity(MAX_BATCH);
    let mut replies: Vec<Reply> = Vec::with_capacity(MAX_BATCH);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some((s, r)) = msg else { break };
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
                let results = handle(store.as_ref(), &blobs, &health, std::mem::take(&mut batch)).await;
                for (reply, result) in replies.drain(..).zip(results) {
                    let _ = reply.send(result);
                }
            }
            _ = tick.tick() => {}
        }
        if !health.degraded() && health.journal.pending().0 > 0 {
            replay_chunk(store.as_ref(), &blobs, &health).await;
        }
    }
}

/// Stores (or journals) one batch; one result per submission, in order.
async fn handle(
    store: &dyn Store,
    blobs: &BlobStore,
    health: &Arc<IntakeHealth>,
    batch: Vec<NewSubmission>,
) -> Vec<Result<Queued, ServiceError>> {
    // While older submissions wait in the journal, newer ones queue behind them.
    if health.degraded() || health.journal.pending().0 > 0 {
        return journal(blobs, health, batch).await;
    }
    let results = match store_batch(store, &batch).await {
        Ok((results, unused)) => {
            delete_blobs(blobs, &unused).await;
            results
        }
        Err(StoreError::Unavailable(why)) => {
            health.mark_unreachable(&why);
            return journal(blobs, health, batch).await;
        }
        Err(e) => {
            let msg = e.to_string();
            tracing::error!(error = %msg, size = batch.len(), "intake batch failed");
            let blobs_of: Vec<String> = batch
                .iter()
                .flat_map(|s| s.attachments.iter().map(|a| a.blob_name.clone()))
                .collect();
            delete_blobs(blobs, &blobs_of).await;
            return batch
                .iter()
                .map(|_| Err(StoreError::Unavailable(msg.clone()).into()))
                .collect();
        }
    };
    // Replayed one by one after a race, a single submission may still meet an unreachable
    // store: those go to the journal too.
    let mut out = Vec::with_capacity(batch.len());
    let mut late = Vec::new();
    for (s, r) in batch.into_iter().zip(results) {
        match r {
            Ok(o) => out.push(Some(Ok(Queued::Stored(o)))),
            Err(StoreError::Unavailable(why)) => {
                health.mark_unreachable(&why);
                late.push(s);
                out.push(None);
            }
            Err(e) => {
                delete_blobs(blobs, &blob_names(&s)).await;
                out.push(Some(Err(e.into())));
            }
        }
    }
    let mut journaled = journal(blobs, health, late).await.into_iter();
    out.into_iter()
        .map(|r| {
            r.or_else(|| journaled.next())
                .unwrap_or_else(|| Err(ServiceError::Internal("lost a journal result".into())))
        })
        .collect()
}

fn blob_names(s: &NewSubmission) -> Vec<String> {
    s.attachments.iter().map(|a| a.blob_name.clone()).collect()
}

/// Writes `batch` to the journal (blocking I/O off the runtime). A refused batch's blobs are
/// deleted: nothing will store them.
async fn journal(
    blobs: &BlobStore,
    health: &Arc<IntakeHealth>,
    batch: Vec<NewSubmission>,
) -> Vec<Result<Queued, ServiceError>> {
    if batch.is_empty() {
        return Vec::new();
    }
    let n = batch.len();
    let j = health.journal.clone();
    let names: Vec<String> = batch.iter().flat_map(blob_names).collect();
    let written = tokio::task::spawn_blocking(move || j.append(&batch))
        .await
        .unwrap_or_else(|e| Err(JournalError::Io(e.to_string())));
    match written {
        Ok(_) => {
            health
                .journaled_total
                .fetch_add(n as u64, Ordering::Relaxed);
            (0..n).map(|_| Ok(Queued::Journaled)).collect()
        }
        Err(e) => {
            delete_blobs(blobs, &names).await;
            let full = matches!(e, JournalError::Full { .. });
            if full {
                health
                    .journal_full_total
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
            tracing::error!(error = %e, size = n, "could not journal submissions");
            (0..n)
                .map(|_| {
                    Err(if full {
                        ServiceError::Busy {
                            code: "intake.journal_full",
                            message: "The database is unreachable and this server's intake journal is full; keep the submission on the device and send it again later.".into(),
                        }
                    } else {
                        ServiceError::Store(StoreError::Unavailable(e.to_string()))
                    })
                })
                .collect()
        }
    }
}

/// Stores a batch in one transaction (falling back to one by one after a unique-violation
/// race). `Err` only when the whole batch failed; the blobs no row kept are returned, not deleted.
async fn store_batch(
    store: &dyn Store,
    batch: &[NewSubmission],
) -> Result<(Vec<Result<IngestOutcome, StoreError>>, Vec<String>), StoreError> {
    match store.ingest(batch).await {
        Ok(r) => Ok((r.outcomes.into_iter().map(Ok).collect(), r.unused_blobs)),
        Err(StoreError::Conflict { .. }) => {
            let mut out = Vec::with_capacity(batch.len());
            let mut unused = Vec::new();
            for s in batch {
                out.push(commit_one(store, s, &mut unused).await);
            }
            Ok((out, unused))
        }
        Err(e) => Err(e),
    }
}

/// One submission alone; a unique violation here means a concurrent writer stored this
/// instanceID between our read and our insert, so reading again gives the right answer.
async fn commit_one(
    store: &dyn Store,
    s: &NewSubmission,
    unused: &mut Vec<String>,
) -> Result<IngestOutcome, StoreError> {
    for _ in 0..3 {
        match store.ingest(std::slice::from_ref(s)).await {
            Ok(mut r) => {
                unused.append(&mut r.unused_blobs);
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

/// Whether the store refused a replayed submission (the client was already told 201).
fn refused(o: &IngestOutcome) -> bool {
    !matches!(
        o,
        IngestOutcome::Created { .. }
            | IngestOutcome::Duplicate { .. }
            | IngestOutcome::Edited { .. }
    )
}

/// Replays up to [`MAX_BATCH`] of the oldest journal entries.
async fn replay_chunk(store: &dyn Store, blobs: &BlobStore, health: &Arc<IntakeHealth>) {
    let j = health.journal.clone();
    let entries = match tokio::task::spawn_blocking(move || j.oldest(MAX_BATCH)).await {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot read the intake journal");
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "intake journal reader failed");
            return;
        }
    };
    let mut seqs = Vec::with_capacity(entries.len());
    let mut subs = Vec::with_capacity(entries.len());
    for e in entries {
        match e.submission {
            Ok(s) => {
                seqs.push(e.seq);
                subs.push(s);
            }
            Err(err) => set_aside(health, e.seq, &err.to_string()),
        }
    }
    if subs.is_empty() {
        return;
    }
    let (results, unused) = match store_batch(store, &subs).await {
        Ok(r) => r,
        Err(StoreError::Unavailable(why)) => {
            health.mark_unreachable(&why);
            return;
        }
        Err(e) => {
            // Find the entry the store cannot take by replaying alone.
            tracing::warn!(error = %e, "intake journal batch failed; replaying one by one");
            let mut out = Vec::with_capacity(subs.len());
            let mut unused = Vec::new();
            for s in &subs {
                out.push(commit_one(store, s, &mut unused).await);
            }
            (out, unused)
        }
    };
    let mut done = Vec::with_capacity(seqs.len());
    let mut keep: std::collections::HashSet<String> = std::collections::HashSet::new();
    for ((seq, s), r) in seqs.iter().zip(&subs).zip(results) {
        match r {
            Ok(o) if !refused(&o) => done.push(*seq),
            Ok(o) => {
                keep.extend(blob_names(s));
                set_aside(
                    health,
                    *seq,
                    &format!("the store refused it ({o:?}); instanceID {}", s.instance_id),
                );
            }
            Err(StoreError::Unavailable(why)) => {
                // Stop here: this and later entries stay, in order, for the next attempt.
                health.mark_unreachable(&why);
                break;
            }
            Err(e) => {
                keep.extend(blob_names(s));
                set_aside(health, *seq, &e.to_string());
            }
        }
    }
    let unused: Vec<String> = unused.into_iter().filter(|b| !keep.contains(b)).collect();
    delete_blobs(blobs, &unused).await;
    let n = done.len() as u64;
    let j = health.journal.clone();
    match tokio::task::spawn_blocking(move || j.remove(&done)).await {
        Ok(Ok(())) => {
            health.replayed_total.fetch_add(n, Ordering::Relaxed);
            tracing::info!(
                replayed = n,
                pending = health.journal.pending().0,
                "intake journal replayed"
            );
        }
        Ok(Err(e)) => tracing::error!(error = %e, "cannot delete replayed journal entries"),
        Err(e) => tracing::error!(error = %e, "intake journal remover failed"),
    }
}

fn set_aside(health: &IntakeHealth, seq: u64, why: &str) {
    health.replay_failed_total.fetch_add(1, Ordering::Relaxed);
    match health.journal.quarantine(seq) {
        Ok(path) => tracing::error!(
            seq,
            error = %why,
            kept = %path.display(),
            "intake journal entry could not be stored; set aside for an operator"
        ),
        Err(e) => tracing::error!(seq, error = %e, "cannot set aside a journal entry"),
    }
}

async fn delete_blobs(blobs: &BlobStore, names: &[String]) {
    for n in names {
        if let Err(e) = blobs.delete(n).await {
            tracing::warn!(blob = %n, error = %e, "could not delete an unused blob");
        }
    }
}
