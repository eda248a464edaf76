//! SQLite intake of new submissions on a connection of its own, stepped on a blocking thread.
//!
//! Why not through sqlx: sqlx runs each SQLite connection on a worker thread of its own, and
//! every statement is a hand-over to that thread and back (`BEGIN`, an insert into
//! `submissions`, one into `submission_versions`, `COMMIT`: four round trips for one
//! submission). The profile of single-client intake showed those hand-overs — futex wake-ups and
//! context switches on both sides, each far dearer on a VM than the insert it carries — as the
//! largest part of the server's time, more than the inserts and the commit's page encryption
//! together. Here the whole transaction of a batch is one blocking call: one hand-over there and
//! one back, however many statements and submissions it holds.
//!
//! The connection stays open between batches for the reason the old sqlx intake connection did:
//! a WAL connection keeps its page cache across its own commits, so the upper levels of every
//! index it inserts into stay decrypted. It is configured as the pool's connections are
//! (`synchronous = FULL`, foreign keys, secure delete): a 201 is on disk before it is sent. Only
//! the fast path runs here ([`crate::intake_split`]); duplicates, conflicts and edits go through
//! the general path on the pool afterwards.

use std::sync::Mutex;

use rusqlite::{OpenFlags, OptionalExtension as _, TransactionBehavior, params};

use crate::bulk_read::SqliteSource;
use crate::intake_split::slots;
use crate::{NewSubmission, StoreError};

/// The intake writer's connection, opened on first use.
pub(crate) struct IntakeWriter {
    source: SqliteSource,
    conn: Mutex<Option<rusqlite::Connection>>,
    closed: std::sync::atomic::AtomicBool,
}

impl IntakeWriter {
    pub(crate) fn new(source: SqliteSource) -> Self {
        Self {
            source,
            conn: Mutex::new(None),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Inserts each `(i, submission)` of `items` whose instanceID is unknown, in one
    /// transaction committed before this returns; returns `(i, submission id)` of those
    /// inserted. Blocking.
    pub(crate) fn insert_new(
        &self,
        items: &[(usize, NewSubmission)],
    ) -> Result<Vec<(usize, i64)>, StoreError> {
        let mut slot = self
            .conn
            .lock()
            .map_err(|_| StoreError::Backend("intake writer poisoned".into()))?;
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(StoreError::Unavailable("the store is closing".into()));
        }
        self.run(&mut slot, |c| insert(c, items))
    }

    /// Runs `f` on the connection in `slot`, opening one if there is none. Any error drops the
    /// connection (rolling back what it held): the next call opens a fresh one rather than
    /// trusting one in an unknown state.
    fn run<R>(
        &self,
        slot: &mut Option<rusqlite::Connection>,
        f: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<R>,
    ) -> Result<R, StoreError> {
        let mut conn = match slot.take() {
            Some(c) => c,
            None => self.open()?,
        };
        let out = f(&mut conn).map_err(error)?;
        *slot = Some(conn);
        Ok(out)
    }

    /// Closes the connection and opens none from now on (at shutdown: see
    /// `SqliteStore::close_own_connections`). Waits for a batch being written.
    pub(crate) fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        let conn = match self.conn.lock() {
            Ok(mut slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        drop(conn);
    }

    fn open(&self) -> Result<rusqlite::Connection, StoreError> {
        let conn = self.source.connect(OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        // The settings sqlx gives the pool's connections (`SqliteStore::open`); the journal mode
        // is the file's own (WAL, set by the pool).
        conn.execute_batch(
            "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON;",
        )
        .map_err(error)?;
        Ok(conn)
    }
}

fn insert(
    conn: &mut rusqlite::Connection,
    items: &[(usize, NewSubmission)],
) -> rusqlite::Result<Vec<(usize, i64)>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut inserted = Vec::with_capacity(items.len());
    {
        let mut submission = tx.prepare_cached(crate::sql::INSERT_IF_UNKNOWN)?;
        let mut version = tx.prepare_cached(crate::sql::INSERT_VERSION)?;
        let mut attachment = tx.prepare_cached(crate::sql::INSERT_ATTACHMENT_SLOT)?;
        for (i, s) in items {
            let now = crate::now_ms();
            let id: Option<i64> = submission
                .query_row(
                    params![
                        s.project_id,
                        s.form_id,
                        s.instance_id,
                        s.encrypted,
                        s.submitter_user_id,
                        s.submitter_app_user_id,
                        s.device_id,
                        now
                    ],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(submission_id) = id else { continue };
            let version_id: i64 = version.query_row(
                params![
                    submission_id,
                    s.form_id,
                    s.instance_id,
                    s.form_def_id,
                    s.form_version,
                    s.xml_sealed,
                    s.xml_sha256,
                    s.xml_size,
                    s.instance_name,
                    s.deprecated_id,
                    s.submitter_user_id,
                    s.submitter_app_user_id,
                    s.device_id,
                    now,
                    s.fits_form
                ],
                |r| r.get(0),
            )?;
            for (name, received) in slots(s) {
                attachment.execute(params![
                    version_id,
                    name,
                    received.and_then(|a| a.content_type.as_deref()),
                    received.map(|a| a.blob_name.as_str()),
                    received.map(|a| a.size),
                    received.map(|a| a.sha256.as_slice()),
                ])?;
            }
            inserted.push((*i, submission_id));
        }
    }
    tx.commit()?;
    Ok(inserted)
}

/// The same mapping as sqlx's errors get ([`StoreError::from`]): a unique violation is a
/// conflict on the index it names, a file the key cannot read is corrupt, the rest a backend
/// error (the message is for the log only).
fn error(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, msg)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            StoreError::Conflict {
                constraint: crate::error::sqlite_constraint(msg.as_deref().unwrap_or_default()),
            }
        }
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::NotADatabase => {
            StoreError::Corrupt("the database file is not readable with this key".into())
        }
        _ => StoreError::Backend(format!("intake writer: {e}")),
    }
}
