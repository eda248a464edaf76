//! Leadership among instances sharing one database: exactly one runs a schedule (the daily
//! backup) at a time.
//!
//! On PostgreSQL a leader holds a session-level advisory lock on a connection of its own,
//! taken out of the pool. If the process dies or its connection breaks, PostgreSQL releases the
//! lock and another instance takes over at its next attempt — unlike a claim row, which a
//! crashed winner would keep. The embedded store serves one process, which always leads.

use async_trait::async_trait;

use crate::StoreError;

/// Held while leading; dropping it gives leadership up (the connection closes).
pub struct Leadership {
    #[allow(dead_code)]
    conn: Option<sqlx::PgConnection>,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Leadership")
    }
}

impl Leadership {
    /// Leadership without a lock (the embedded store: one process).
    pub(crate) fn sole() -> Self {
        Self { conn: None }
    }

    /// Leadership held by `conn`'s advisory lock.
    pub(crate) fn locked(conn: sqlx::PgConnection) -> Self {
        Self { conn: Some(conn) }
    }

    /// Whether the lock is still held: its connection still answers. A leader checks before
    /// each run and steps down when it does not.
    pub async fn still_held(&mut self) -> bool {
        match &mut self.conn {
            None => true,
            Some(c) => sqlx::query("SELECT 1").execute(&mut *c).await.is_ok(),
        }
    }
}

/// The advisory-lock key of a named role (stable across versions: the first 8 bytes of its
/// SHA-256).
pub fn lock_key(name: &str) -> i64 {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(format!("fieldvault leader {name}").as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    i64::from_be_bytes(b)
}

/// Leadership.
#[async_trait]
pub trait LeaderStore: Send + Sync {
    /// Tries to become the leader for `name`; `None` when another instance leads.
    async fn try_lead(&self, name: &str) -> Result<Option<Leadership>, StoreError>;
}
