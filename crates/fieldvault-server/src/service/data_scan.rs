//! The decrypt pipeline of [`super::data::stream`] on a backend with blocking readers (the
//! embedded store): each chunk of rows is read, filtered, decrypted and mapped by one blocking
//! job from start to end, and as many jobs run at once as there are cores.
//!
//! The pooled pipeline reads pages through sqlx, which copies every row across threads before a
//! decrypting core sees it; on a CSV export that hand-over cost more CPU than everything else
//! together (see `fieldvault_store::bulk_read`). Here the only hand-over is the mapped result.
//! Chunks are cut by keyset position read from the index alone, so they are disjoint and come
//! back in the store's order whatever order the jobs finish in; the coordinator awaits them
//! oldest first and keeps at most `cores + 1` in flight, so memory stays a few chunks whatever
//! the form's size.

use std::collections::VecDeque;
use std::sync::Arc;

use fieldvault_core::odata::Filter;
use fieldvault_crypto::Key256;
use fieldvault_store::{Cursor, PageQuery, PageReader, Store, SubmissionRecord};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::ServiceError;
use super::data::{Item, MapFn, Selection, Source, decode, passes};

/// Rows per chunk: one job's work, and the unit the coordinator waits for.
const CHUNK_ROWS: i64 = 1024;
/// Metadata rows read per step while passing over an offset with a filter.
const SKIP_ROWS: i64 = 4096;

/// Where the jobs get their readers: the store keeps idle ones open between uses, so a job
/// usually takes a reader whose page cache is warm.
struct Readers {
    store: Arc<dyn Store>,
}

impl Readers {
    /// Runs `f` on a reader of the store's; the reader goes back to the store afterwards.
    fn with<R>(
        &self,
        f: impl FnOnce(&mut dyn PageReader) -> Result<R, ServiceError>,
    ) -> Result<R, ServiceError> {
        let mut reader = self
            .store
            .page_reader()
            .ok_or_else(|| ServiceError::Internal("this store has no bulk reader".into()))??;
        f(reader.as_mut())
    }
}

/// What every job of one scan shares.
struct Scan<T> {
    readers: Readers,
    key: Arc<Key256>,
    project_id: i64,
    form_id: i64,
    sel: Selection,
    map: MapFn<T>,
    now: i64,
}

/// Runs the pipeline and sends the items to `tx` in order.
pub(super) async fn run<T: Send + 'static>(
    src: Source,
    sel: Selection,
    map: MapFn<T>,
    tx: mpsc::Sender<Item<T>>,
) {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let scan = Arc::new(Scan {
        readers: Readers { store: src.store },
        key: src.key,
        project_id: src.project_id,
        form_id: src.form_id,
        now: fieldvault_store::now_ms(),
        sel,
        map,
    });
    if let Err(e) = coordinate(&scan, workers, &tx).await {
        let _ = tx.send(Err(e)).await;
    }
}

async fn coordinate<T: Send + 'static>(
    scan: &Arc<Scan<T>>,
    workers: usize,
    tx: &mpsc::Sender<Item<T>>,
) -> Result<(), ServiceError> {
    let mut left = scan.sel.take.unwrap_or(u64::MAX);
    if left == 0 {
        return Ok(());
    }
    let mut after = scan.sel.after;
    if scan.sel.skip > 0 {
        let s = scan.clone();
        match blocking(move || s.pass_over(after)).await? {
            Some(c) => after = c,
            None => return Ok(()),
        }
    }
    // A short list (the JSON data API's pages) is cut so every core gets part of it.
    let chunk = i64::try_from(left.div_ceil(workers as u64))
        .unwrap_or(i64::MAX)
        .clamp(64, CHUNK_ROWS);
    let mut inflight: VecDeque<JoinHandle<Result<Vec<Item<T>>, ServiceError>>> = VecDeque::new();
    let mut more = true;
    let result = async {
        loop {
            while more && inflight.len() <= workers {
                let s = scan.clone();
                let until = blocking(move || s.boundary(after, chunk)).await?;
                let s = scan.clone();
                inflight.push_back(tokio::task::spawn_blocking(move || s.chunk(after, until)));
                match until {
                    Some(c) => after = c,
                    None => more = false,
                }
            }
            let Some(job) = inflight.pop_front() else {
                return Ok(());
            };
            let items = job
                .await
                .map_err(|e| ServiceError::Internal(format!("decrypt worker: {e}")))??;
            for item in items {
                if tx.send(item).await.is_err() {
                    return Ok(());
                }
                left -= 1;
                if left == 0 {
                    return Ok(());
                }
            }
        }
    }
    .await;
    for job in inflight {
        job.abort();
    }
    result
}

/// Runs blocking reader work on the blocking pool.
async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, ServiceError> + Send + 'static,
) -> Result<R, ServiceError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ServiceError::Internal(format!("bulk reader: {e}")))?
}

impl<T> Scan<T> {
    fn query(&self, after: Cursor, limit: i64, with_xml: bool) -> PageQuery {
        PageQuery {
            form_id: self.form_id,
            deleted: self.sel.deleted,
            after,
            limit,
            with_xml,
        }
    }

    /// The position after the offset: counted in the index alone without a filter, over the
    /// rows' metadata with one.
    fn pass_over(&self, mut after: Cursor) -> Result<Option<Cursor>, ServiceError> {
        let mut skip = self.sel.skip;
        let Some(filter) = self.sel.filter.as_deref() else {
            let n = i64::try_from(skip).unwrap_or(i64::MAX);
            return self
                .readers
                .with(|r| Ok(r.cursor_after(&self.query(after, n, false))?));
        };
        while skip > 0 {
            let page = self
                .readers
                .with(|r| Ok(r.range(&self.query(after, SKIP_ROWS, false), None)?))?;
            if page.is_empty() {
                return Ok(None);
            }
            for r in &page {
                after = r.cursor();
                if passes(Some(filter), r, self.now) {
                    skip -= 1;
                    if skip == 0 {
                        break;
                    }
                }
            }
        }
        Ok(Some(after))
    }

    /// Where the chunk that starts after `after` ends (`None`: it runs to the end).
    fn boundary(&self, after: Cursor, rows: i64) -> Result<Option<Cursor>, ServiceError> {
        self.readers
            .with(|r| Ok(r.cursor_after(&self.query(after, rows, false))?))
    }

    /// One chunk read, filtered, decrypted and mapped.
    fn chunk(&self, after: Cursor, until: Option<Cursor>) -> Result<Vec<Item<T>>, ServiceError> {
        let rows: Vec<SubmissionRecord> = self
            .readers
            .with(|r| Ok(r.range(&self.query(after, i64::MAX, true), until)?))?;
        let filter: Option<&Filter> = self.sel.filter.as_deref();
        Ok(rows
            .into_iter()
            .filter(|r| passes(filter, r, self.now))
            .map(|r| {
                decode(
                    &self.key,
                    self.project_id,
                    self.form_id,
                    r,
                    self.map.as_ref(),
                )
            })
            .collect())
    }
}
