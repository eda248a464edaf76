//! The audit log's hash chain (M5).
//!
//! ```text
//! hash(n) = SHA-256( hash(n-1) ‖ seq ‖ at ‖ actor ‖ action ‖ target ‖ details )   (each field length-prefixed)
//! hash(0) = 32 zero bytes
//! ```
//! Appends take a lock on the single `audit_head` row (the newest seq and hash), so concurrent
//! writers, on one instance or many, extend one chain. [`verify`] walks the log in `seq` order and
//! names the first entry that was edited, deleted, inserted or reordered; the head row catches a
//! truncated tail.

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::StoreError;

/// One entry, as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditRow {
    /// Store id.
    pub id: i64,
    /// Position in the chain, from 1.
    pub seq: i64,
    /// Time (Unix ms).
    pub at: i64,
    /// Who: `user:<name>`, `app-user:<id>`, `cli:<os user>`, `anonymous`.
    pub actor: String,
    /// What: a stable `noun.verb` name.
    pub action: String,
    /// On what (`project:3`, `form:3/household`), if anything.
    pub target: Option<String>,
    /// JSON details (never secrets).
    pub details: String,
    /// Hash of the previous entry.
    pub prev_hash: Vec<u8>,
    /// This entry's hash.
    pub hash: Vec<u8>,
}

/// An entry to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAudit {
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// On what.
    pub target: Option<String>,
    /// JSON details.
    pub details: String,
}

/// The chain hash of an entry.
pub fn entry_hash(prev: &[u8], seq: i64, at: i64, e: &NewAudit) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_be_bytes());
        h.update(b);
    };
    field(prev);
    field(&seq.to_be_bytes());
    field(&at.to_be_bytes());
    field(e.actor.as_bytes());
    field(e.action.as_bytes());
    field(e.target.as_deref().unwrap_or("\u{0}").as_bytes());
    field(e.details.as_bytes());
    h.finalize().into()
}

/// Result of a verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// The chain is intact.
    Intact {
        /// Entries checked.
        entries: i64,
    },
    /// The first problem found.
    Broken {
        /// The sequence number at which the chain breaks.
        seq: i64,
        /// What is wrong there.
        reason: String,
    },
}

/// Checks a chain one entry at a time, in constant memory.
pub struct Verifier {
    prev: Vec<u8>,
    next_seq: i64,
    checked: i64,
    broken: Option<Verified>,
}

impl Default for Verifier {
    fn default() -> Self {
        Self {
            prev: vec![0u8; 32],
            next_seq: 1,
            checked: 0,
            broken: None,
        }
    }
}

impl Verifier {
    /// Starts after the retention anchor: `(seq, hash)` of the newest entry retention deleted.
    pub fn from_anchor(anchor: Option<(i64, Vec<u8>)>) -> Self {
        match anchor {
            Some((seq, hash)) if seq > 0 => Self {
                prev: hash,
                next_seq: seq + 1,
                checked: 0,
                broken: None,
            },
            _ => Self::default(),
        }
    }

    /// The seq after which entries are expected (the anchor's, or 0).
    pub fn start_after(&self) -> i64 {
        self.next_seq - 1
    }

    /// Feeds the next entry (in `seq` order). After the first problem, further entries are ignored.
    pub fn push(&mut self, r: &AuditRow) {
        if self.broken.is_some() {
            return;
        }
        let broken = |seq, reason: String| Some(Verified::Broken { seq, reason });
        if r.seq != self.next_seq {
            self.broken = broken(
                self.next_seq,
                format!(
                    "entry {} is missing (next present is {})",
                    self.next_seq, r.seq
                ),
            );
            return;
        }
        if r.prev_hash != self.prev {
            self.broken = broken(
                r.seq,
                "does not follow the entry before it (deleted, inserted or reordered)".into(),
            );
            return;
        }
        let e = NewAudit {
            actor: r.actor.clone(),
            action: r.action.clone(),
            target: r.target.clone(),
            details: r.details.clone(),
        };
        if entry_hash(&r.prev_hash, r.seq, r.at, &e).as_slice() != r.hash.as_slice() {
            self.broken = broken(
                r.seq,
                "its contents were changed after it was written".into(),
            );
            return;
        }
        self.prev = r.hash.clone();
        self.next_seq += 1;
        self.checked += 1;
    }

    /// The verdict, given the recorded head (which catches entries cut from the end).
    pub fn finish(self, head: Option<(i64, Vec<u8>)>) -> Verified {
        if let Some(b) = self.broken {
            return b;
        }
        let last = self.next_seq - 1;
        match head {
            Some((seq, hash)) if seq != last || hash != self.prev => Verified::Broken {
                seq: last + 1,
                reason: format!(
                    "the log ends at entry {last} but {seq} were written (entries removed from the end)"
                ),
            },
            None if last > 0 => Verified::Broken {
                seq: 1,
                reason: "the chain head is missing".into(),
            },
            _ => Verified::Intact {
                entries: self.checked,
            },
        }
    }
}

/// Walks `rows` (in seq order) and the recorded head.
pub fn verify(rows: &[AuditRow], head: Option<(i64, Vec<u8>)>) -> Verified {
    let mut v = Verifier::default();
    for r in rows {
        v.push(r);
    }
    v.finish(head)
}

/// The audit log.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends one entry at the end of the chain.
    async fn append_audit(&self, entry: &NewAudit) -> Result<AuditRow, StoreError>;

    /// Entries after `after_seq`, oldest first, at most `limit`.
    async fn audit_entries(&self, after_seq: i64, limit: i64) -> Result<Vec<AuditRow>, StoreError>;

    /// The chain head: (seq, hash) of the newest entry.
    async fn audit_head(&self) -> Result<Option<(i64, Vec<u8>)>, StoreError>;

    /// A project's entries (target `project:<id>` or below it), newest first, with `seq` below
    /// `before_seq`, at most `limit`.
    async fn audit_entries_for_project(
        &self,
        project_id: i64,
        before_seq: i64,
        limit: i64,
    ) -> Result<Vec<AuditRow>, StoreError>;

    /// The retention anchor: (seq, hash) of the newest entry deleted by retention, if any.
    async fn audit_anchor(&self) -> Result<Option<(i64, Vec<u8>)>, StoreError>;

    /// Deletes entries written before `before_at` (never the newest one) and moves the anchor to
    /// the newest deleted; returns how many were deleted.
    async fn audit_prune(&self, before_at: i64) -> Result<u64, StoreError>;
}
