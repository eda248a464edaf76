//! Bulk reads of a form's rows on the calling thread, for exports and scans that want every core.
//!
//! Why not through the pool: sqlx runs each SQLite connection on a thread of its own and hands
//! every row across to the async side, copying each value into a fresh allocation on the way.
//! The profile of a 100 k-row CSV export showed that hand-over (malloc and free across threads,
//! mutexes, wake-ups) as well over half of the export's CPU, with SQLite's own work a few per
//! cent. A [`PageReader`] is a plain rusqlite connection to the same database file, opened with
//! the same raw key (no key derivation) and used by one blocking thread at a time: it steps the
//! query and builds the records where it runs. Several readers on disjoint key ranges therefore
//! read, decrypt and format on all cores at once; WAL lets them read beside the intake writer.
//!
//! PostgreSQL has no reader here: its rows arrive over a socket from a server that does the
//! reading on cores of its own, and the pooled path keeps up with that.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fieldvault_crypto::Key256;
use rusqlite::{Connection, OpenFlags, Row, params};
use zeroize::Zeroizing;

use crate::data::Deleted;
use crate::{Cursor, KoboRecord, PageQuery, StoreError, SubmissionRecord};

/// Backends that can read a form's rows on a blocking thread, without the async pool.
pub trait BulkReadStore: Send + Sync {
    /// A new reader, or `None` when the backend reads through its pool only.
    fn page_reader(&self) -> Option<Result<Box<dyn PageReader>, StoreError>> {
        None
    }
}

/// A blocking reader of keyset ranges of a form's rows (newest first, as
/// [`crate::DataStore::submission_page`] orders them).
pub trait PageReader: Send {
    /// The position of the `q.limit`-th row after `q.after` that `q.deleted` selects, `None` when
    /// fewer remain. Reads an index only.
    fn cursor_after(&mut self, q: &PageQuery) -> Result<Option<Cursor>, StoreError>;

    /// The rows after `q.after`, down to and including `until` when given, at most `q.limit`;
    /// with the sealed XML when `q.with_xml`.
    fn range(
        &mut self,
        q: &PageQuery,
        until: Option<Cursor>,
    ) -> Result<Vec<SubmissionRecord>, StoreError>;

    /// What [`crate::KoboStore::kobo_records`] returns: live records after `after_id` in id
    /// order, at most `limit`.
    fn kobo_records(
        &mut self,
        form_id: i64,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<KoboRecord>, StoreError>;
}

/// Where and how to open the embedded database again (kept by the SQLite store).
pub(crate) struct SqliteSource {
    path: PathBuf,
    key: Key256,
}

impl SqliteSource {
    pub(crate) fn new(path: &Path, key: &Key256) -> Self {
        Self {
            path: path.to_path_buf(),
            key: key.clone(),
        }
    }

    /// Opens a read-only connection; the key is checked by reading the schema.
    pub(crate) fn open(&self) -> Result<SqliteReader, StoreError> {
        let conn = self.connect(OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        Ok(SqliteReader { conn })
    }

    /// Opens a connection with `flags` (never creating the file: the pool did), keyed with the
    /// raw key; the key is checked by reading the schema.
    pub(crate) fn connect(&self, flags: OpenFlags) -> Result<Connection, StoreError> {
        let open_failed =
            |e: rusqlite::Error| StoreError::Backend(format!("opening the database: {e}"));
        let conn = Connection::open_with_flags(&self.path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(open_failed)?;
        let pragma = Zeroizing::new(format!(
            "PRAGMA key = \"x'{}'\";",
            fieldvault_crypto::random::to_hex(self.key.expose())
        ));
        conn.execute_batch(&pragma).map_err(open_failed)?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(open_failed)?;
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::NotADatabase =>
                {
                    StoreError::Corrupt("the database file is not readable with this key".into())
                }
                other => open_failed(other),
            })?;
        Ok(conn)
    }
}

/// A [`PageReader`] over the embedded database.
/// Its statements are prepared once per connection (`prepare_cached`): a scan runs the same few
/// queries once per chunk, and parsing them showed in the export profile.
pub(crate) struct SqliteReader {
    conn: Connection,
}

/// Idle readers kept at most: one per core and one for the coordinator of a scan, on the 2-core
/// machines Fieldvault is sized for.
const MAX_IDLE: usize = 4;

/// Readers kept open between bulk reads. A reader's page cache holds the decrypted index pages
/// an offset is counted in, so the next request that passes over the same offset reads them
/// without decrypting again (SQLite drops a cache itself when another connection has changed
/// the database). Opening a reader also costs a schema read.
pub(crate) struct ReaderPool {
    source: SqliteSource,
    idle: std::sync::Mutex<Vec<SqliteReader>>,
    /// The reader every position lookup goes to, with a cache large enough for the live-rows
    /// index of a million submissions: passing over an offset walks the index, and with the
    /// default 2 MiB cache each walk read and decrypted every index page again.
    positions: std::sync::Mutex<Option<SqliteReader>>,
    /// Readers handed out and not yet back.
    loaned: std::sync::atomic::AtomicUsize,
    /// Set by [`ReaderPool::close`]: no reader is handed out or kept any more.
    closed: std::sync::atomic::AtomicBool,
}

/// Page cache of the position reader, in KiB (SQLite's negative `cache_size`).
const POSITION_CACHE_KIB: i64 = 24 * 1024;

impl ReaderPool {
    pub(crate) fn new(source: SqliteSource) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            source,
            idle: std::sync::Mutex::new(Vec::new()),
            positions: std::sync::Mutex::new(None),
            loaned: std::sync::atomic::AtomicUsize::new(0),
            closed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Runs `f` on the position reader, opening it on first use.
    pub(crate) fn with_positions<R>(
        &self,
        f: impl FnOnce(&mut SqliteReader) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let mut slot = self
            .positions
            .lock()
            .map_err(|_| StoreError::Backend("bulk read: position reader poisoned".into()))?;
        if self.is_closed() {
            return Err(StoreError::Backend(
                "bulk read: the store is closing".into(),
            ));
        }
        if slot.is_none() {
            let r = self.source.open()?;
            r.conn
                .execute_batch(&format!("PRAGMA cache_size = -{POSITION_CACHE_KIB};"))
                .map_err(backend)?;
            *slot = Some(r);
        }
        match slot.as_mut() {
            Some(r) => f(r),
            None => Err(StoreError::Backend("bulk read: no position reader".into())),
        }
    }

    /// An idle reader, or a new one; it comes back here when dropped.
    pub(crate) fn get(self: &std::sync::Arc<Self>) -> Result<Box<dyn PageReader>, StoreError> {
        // Counted before the check, so `close` either sees this loan or this call sees `closed`.
        let loan = Loan::new(self);
        if self.is_closed() {
            return Err(StoreError::Backend(
                "bulk read: the store is closing".into(),
            ));
        }
        let idle = self.idle.lock().ok().and_then(|mut v| v.pop());
        let reader = match idle {
            Some(r) => r,
            None => self.source.open()?,
        };
        Ok(Box::new(Pooled {
            reader: Some(reader),
            loan,
        }))
    }

    /// Readers handed out and not yet back.
    pub(crate) fn on_loan(&self) -> usize {
        self.loaned.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Closes the idle readers and keeps no reader from now on (at shutdown, before the
    /// process's libraries are torn down); those on loan are closed as they come back.
    pub(crate) fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        if let Ok(mut v) = self.idle.lock() {
            v.clear();
        }
        if let Ok(mut p) = self.positions.lock() {
            *p = None;
        }
    }
}

/// One reader counted as on loan until this is dropped.
struct Loan {
    pool: std::sync::Arc<ReaderPool>,
}

impl Loan {
    fn new(pool: &std::sync::Arc<ReaderPool>) -> Self {
        pool.loaned
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Self { pool: pool.clone() }
    }
}

impl Drop for Loan {
    fn drop(&mut self) {
        self.pool
            .loaned
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// A reader on loan from a [`ReaderPool`]. Fields drop in order: the reader is closed or back
/// in the pool before the loan ends.
struct Pooled {
    reader: Option<SqliteReader>,
    loan: Loan,
}

impl Pooled {
    fn inner(&mut self) -> Result<&mut SqliteReader, StoreError> {
        self.reader
            .as_mut()
            .ok_or_else(|| StoreError::Backend("bulk read: reader already returned".into()))
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let pool = &self.loan.pool;
        if let (Some(r), Ok(mut idle)) = (self.reader.take(), pool.idle.lock())
            && idle.len() < MAX_IDLE
            && !pool.is_closed()
        {
            idle.push(r);
        }
    }
}

impl PageReader for Pooled {
    fn cursor_after(&mut self, q: &PageQuery) -> Result<Option<Cursor>, StoreError> {
        self.loan.pool.with_positions(|r| r.cursor_after(q))
    }

    fn range(
        &mut self,
        q: &PageQuery,
        until: Option<Cursor>,
    ) -> Result<Vec<SubmissionRecord>, StoreError> {
        self.inner()?.range(q, until)
    }

    fn kobo_records(
        &mut self,
        form_id: i64,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<KoboRecord>, StoreError> {
        self.inner()?.kobo_records(form_id, after_id, limit)
    }
}

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(format!("bulk read: {e}"))
}

/// The condition on `deleted_at` as literal SQL, so SQLite can use the partial index of live rows.
fn deleted_sql(d: Deleted) -> &'static str {
    match d {
        Deleted::Exclude => "AND s.deleted_at IS NULL ",
        Deleted::Only => "AND s.deleted_at IS NOT NULL ",
        Deleted::Include => "",
    }
}

const AFTER: &str = "AND (s.created_at < ?2 OR (s.created_at = ?2 AND s.id < ?3)) ";
const ORDER: &str = "ORDER BY s.created_at DESC, s.id DESC ";
const ORDER_ASC: &str = "ORDER BY s.created_at, s.id ";

impl SqliteReader {
    /// A form's live rows and the newest `created_at`, counted in the narrowest live-rows index
    /// (`(form_id, id)`, about 14 MB at a million rows): on the position reader its pages stay
    /// cached, where the `created_at` index is larger than the cache and a walk over all of it
    /// evicted itself.
    pub(crate) fn live_count(&mut self, form_id: i64) -> Result<(i64, Option<i64>), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT (SELECT COUNT(*) FROM submissions INDEXED BY submissions_form_live_id \
                 WHERE form_id = ?1 AND deleted_at IS NULL), \
                 (SELECT MAX(created_at) FROM submissions \
                 WHERE form_id = ?1 AND deleted_at IS NULL)",
            )
            .map_err(backend)?;
        stmt.query_row(params![form_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(backend)
    }
}

impl PageReader for SqliteReader {
    fn cursor_after(&mut self, q: &PageQuery) -> Result<Option<Cursor>, StoreError> {
        if q.limit < 1 {
            return Ok(Some(q.after));
        }
        let sql = format!(
            "SELECT s.created_at, s.id FROM submissions s WHERE s.form_id = ?1 {}{AFTER}{ORDER}\
             LIMIT 1 OFFSET ?4",
            deleted_sql(q.deleted)
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(backend)?;
        let mut rows = stmt
            .query(params![
                q.form_id,
                q.after.created_at,
                q.after.id,
                q.limit - 1
            ])
            .map_err(backend)?;
        match rows.next().map_err(backend)? {
            Some(r) => Ok(Some(Cursor {
                created_at: r.get(0).map_err(backend)?,
                id: r.get(1).map_err(backend)?,
            })),
            None => Ok(None),
        }
    }

    fn range(
        &mut self,
        q: &PageQuery,
        until: Option<Cursor>,
    ) -> Result<Vec<SubmissionRecord>, StoreError> {
        // A whole window (no limit cutting it) is read oldest first and turned around here:
        // row ids then mostly grow by one from row to row, and SQLite steps to the next row
        // instead of searching each table from its root (the export profile showed those
        // searches as the largest part of reading).
        let whole = q.limit == i64::MAX;
        let sql = format!(
            "{}WHERE s.form_id = ?1 {}{AFTER}\
             AND (s.created_at > ?4 OR (s.created_at = ?4 AND s.id >= ?5)) {}LIMIT ?6",
            if q.with_xml {
                crate::sql::record_select!("v.xml_sealed")
            } else {
                crate::sql::record_select!("NULL")
            },
            deleted_sql(q.deleted),
            if whole { ORDER_ASC } else { ORDER }
        );
        let until = until.unwrap_or(Cursor {
            created_at: i64::MIN,
            id: i64::MIN,
        });
        let mut stmt = self.conn.prepare_cached(&sql).map_err(backend)?;
        let rows = stmt
            .query_map(
                params![
                    q.form_id,
                    q.after.created_at,
                    q.after.id,
                    until.created_at,
                    until.id,
                    q.limit.max(0)
                ],
                record,
            )
            .map_err(backend)?;
        let mut rows = rows.collect::<Result<Vec<_>, _>>().map_err(backend)?;
        if whole {
            rows.reverse();
        }
        Ok(rows)
    }

    fn kobo_records(
        &mut self,
        form_id: i64,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<KoboRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(concat!(
                crate::sql::kobo_record_select!(),
                "WHERE s.form_id = ?1 AND s.deleted_at IS NULL AND s.id > ?2 \
                 ORDER BY s.id LIMIT ?3"
            ))
            .map_err(backend)?;
        let rows = stmt
            .query_map(params![form_id, after_id, limit.max(0)], kobo_record)
            .map_err(backend)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(backend)
    }
}

/// A row of `kobo_record_select!`, its columns read by position (checked by a test).
fn kobo_record(r: &Row<'_>) -> rusqlite::Result<KoboRecord> {
    Ok(KoboRecord {
        id: r.get(0)?,
        root_instance_id: r.get(1)?,
        encrypted: r.get(2)?,
        created_at: r.get(3)?,
        submitted_by: r.get(4)?,
        validation_status: r.get(5)?,
        validation_by: r.get(6)?,
        validation_at: r.get(7)?,
        version_id: r.get(8)?,
        instance_id: r.get(9)?,
        form_version: r.get(10)?,
        form_def_id: r.get(11)?,
        xml_sealed: r.get(12)?,
    })
}

/// A row of `record_select!` as a record, its columns read by position (a lookup by name compares
/// strings for every column of every row); a test checks the positions against the names.
fn record(r: &Row<'_>) -> rusqlite::Result<SubmissionRecord> {
    Ok(SubmissionRecord {
        id: r.get(0)?,
        instance_id: r.get(1)?,
        encrypted: r.get(2)?,
        review_state: r.get(3)?,
        submitter_user_id: r.get(4)?,
        submitter_app_user_id: r.get(5)?,
        submitter_name: r.get(6)?,
        device_id: r.get(7)?,
        created_at: r.get(8)?,
        updated_at: r.get(9)?,
        deleted_at: r.get(10)?,
        version_id: r.get(11)?,
        current_instance_id: r.get(12)?,
        instance_name: r.get(13)?,
        form_def_id: r.get(14)?,
        form_version: r.get(15)?,
        edits: r.get(16)?,
        attachments_expected: r.get(17)?,
        attachments_present: r.get(18)?,
        xml_sealed: r.get::<_, Option<Vec<u8>>>(19)?.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The columns of `record_select!`, in the order [`record`] reads them.
    const RECORD_COLUMNS: [&str; 20] = [
        "id",
        "instance_id",
        "encrypted",
        "review_state",
        "submitter_user_id",
        "submitter_app_user_id",
        "submitter_name",
        "device_id",
        "created_at",
        "updated_at",
        "deleted_at",
        "version_id",
        "current_instance_id",
        "instance_name",
        "form_def_id",
        "form_version",
        "edits",
        "attachments_expected",
        "attachments_present",
        "xml_sealed",
    ];

    /// The columns of `kobo_record_select!`, in the order [`kobo_record`] reads them.
    const KOBO_COLUMNS: [&str; 13] = [
        "id",
        "root_instance_id",
        "encrypted",
        "created_at",
        "submitted_by",
        "validation_status",
        "validation_by",
        "validation_at",
        "version_id",
        "instance_id",
        "form_version",
        "form_def_id",
        "xml_sealed",
    ];

    #[test]
    fn record_columns_are_in_the_order_record_reads_them() {
        let conn = Connection::open_in_memory().expect("in-memory database");
        // The real schema: every migration, in order.
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite");
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .expect("migrations")
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        for f in files {
            let sql = std::fs::read_to_string(&f).expect("migration text");
            conn.execute_batch(&sql).expect("migration applies");
        }
        let sql = concat!(crate::sql::record_select!("v.xml_sealed"), "WHERE s.id = 1");
        let stmt = conn.prepare(sql).expect("record_select! prepares");
        assert_eq!(stmt.column_names(), RECORD_COLUMNS);
        let sql = concat!(crate::sql::kobo_record_select!(), "WHERE s.id = 1");
        let stmt = conn.prepare(sql).expect("kobo_record_select! prepares");
        assert_eq!(stmt.column_names(), KOBO_COLUMNS);
    }
}
