//! The embedded store's cache of collector-token lookups, dropped the moment a change to
//! `app_users` or `form_assignments` begins.
//!
//! Why: every token-authenticated request resolves its token, and under concurrent intake the
//! intake writer commits between any two requests, which throws away a pool connection's page
//! cache, so each lookup read and decrypted the same index and table pages again, on a sqlx
//! worker thread and back. Measured at 16 concurrent clients, that lookup was a third of the
//! server's CPU per submission.
//!
//! Why it is safe where a timed cache would not be: revoking a token or withdrawing a form must
//! work at once, not a TTL later. Every pool connection carries an SQLite update hook that, on
//! the first row it changes in either table, marks itself *dirty* and advances the cache's
//! epoch; the connection is marked clean (and the epoch advanced again) only when it is back in
//! the pool, that is, after its transaction has committed or rolled back. While any connection is
//! dirty, lookups bypass the cache and store nothing; an entry is served only when the epoch is
//! the one read before the lookup that filled it. So a lookup can only be answered from memory
//! if no change to those tables began since the database read behind that answer started, and
//! none is still unfinished.
//!
//! SQLite calls the update hook for rows changed by triggers and foreign-key actions too, but not
//! for `WITHOUT ROWID` tables nor for a `DELETE` without `WHERE` (the truncate optimisation):
//! neither watched table is `WITHOUT ROWID`, and nothing empties them whole; the store suite's
//! revocation and withdrawal checks fail if either stops being true.
//!
//! Its limit: the hook sees this process's pool connections. The intake writer and the bulk
//! readers never write those tables, and the data directory's lock keeps a second server out, but
//! one command does write them from a process of its own while the server runs: `fieldvault
//! restore --project ID --into-live`, which puts a project's rows, its collectors' assignments
//! among them, back as they were. So an entry is also trusted for at most [`MAX_AGE`], one second,
//! the bound `server/service/hot_cache.rs` already gives the project, form and role a submission
//! is checked against; a change made through the server itself still applies at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::sqlite::SqliteConnection;

use crate::AppUserRow;

/// A collector and its assigned forms, as the token lookup returns them.
pub(crate) type Collector = (AppUserRow, Vec<i64>);

/// Longest an entry is trusted, whatever the epoch says (see the module's last paragraph).
pub(crate) const MAX_AGE: Duration = Duration::from_secs(1);
/// Entries kept before the cache is emptied (bounds memory under many distinct tokens).
const MAX_ENTRIES: usize = 10_000;
/// The tables the token lookup reads.
const WATCHED: [&str; 2] = ["app_users", "form_assignments"];

/// What a lookup saw before it read the database.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamp {
    epoch: u64,
    /// No connection was in the middle of changing the watched tables.
    clean: bool,
}

struct Entry {
    epoch: u64,
    stored: Instant,
    collector: Collector,
}

/// The cache, shared by the store and the hooks of its pool connections.
#[derive(Default)]
pub(crate) struct TokenCache {
    epoch: AtomicU64,
    /// Pool connections that changed a watched table and are not back in the pool yet.
    dirty: AtomicU64,
    entries: Mutex<HashMap<Vec<u8>, Entry>>,
    /// Each pool connection's dirty flag, by its `sqlite3*` address.
    connections: Mutex<HashMap<usize, Arc<AtomicBool>>>,
}

impl TokenCache {
    /// Read before a lookup; decides what it may use and store.
    pub(crate) fn stamp(&self) -> Stamp {
        let epoch = self.epoch.load(Ordering::SeqCst);
        let clean = self.dirty.load(Ordering::SeqCst) == 0;
        Stamp { epoch, clean }
    }

    /// The cached answer for `hash`, if one filled since the last change is still trusted.
    pub(crate) fn get(&self, stamp: Stamp, hash: &[u8]) -> Option<Collector> {
        if !stamp.clean {
            return None;
        }
        let map = self.entries.lock().ok()?;
        map.get(hash)
            .filter(|e| e.epoch == stamp.epoch && e.stored.elapsed() < MAX_AGE)
            .map(|e| e.collector.clone())
    }

    /// Remembers what a lookup that began at `stamp` found, unless a change began since.
    pub(crate) fn put(&self, stamp: Stamp, hash: &[u8], collector: &Collector) {
        if !stamp.clean {
            return;
        }
        let Ok(mut map) = self.entries.lock() else {
            return;
        };
        let now = self.stamp();
        if now.epoch != stamp.epoch || !now.clean {
            return;
        }
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(
            hash.to_vec(),
            Entry {
                epoch: stamp.epoch,
                stored: Instant::now(),
                collector: collector.clone(),
            },
        );
    }

    /// Installs the update hook on a new pool connection (`after_connect`).
    pub(crate) async fn watch(self: &Arc<Self>, conn: &mut SqliteConnection) -> sqlx::Result<()> {
        let flag = Arc::new(AtomicBool::new(false));
        let mut handle = conn.lock_handle().await?;
        let key = handle.as_raw_handle().as_ptr() as usize;
        if let Ok(mut m) = self.connections.lock() {
            m.insert(key, flag.clone());
        }
        let guard = HookGuard {
            cache: self.clone(),
            flag,
            key,
        };
        handle.set_update_hook(move |change| {
            if change.database == "main" && WATCHED.contains(&change.table) {
                guard.changed();
            }
        });
        Ok(())
    }

    /// A pool connection is back in the pool (`after_release`): whatever it changed is
    /// committed or rolled back.
    pub(crate) async fn released(&self, conn: &mut SqliteConnection) -> sqlx::Result<()> {
        // Almost always nothing is dirty: then no hand-over to the connection's thread.
        if self.dirty.load(Ordering::SeqCst) == 0 {
            return Ok(());
        }
        let key = conn.lock_handle().await?.as_raw_handle().as_ptr() as usize;
        let flag = self
            .connections
            .lock()
            .ok()
            .and_then(|m| m.get(&key).cloned());
        if let Some(flag) = flag {
            self.clean(&flag);
        }
        Ok(())
    }

    fn clean(&self, flag: &AtomicBool) {
        if flag.swap(false, Ordering::SeqCst) {
            // The epoch moves before the connection stops counting as dirty: a lookup that
            // sees it clean also sees the new epoch.
            self.epoch.fetch_add(1, Ordering::SeqCst);
            self.dirty.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Entries held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().map(|m| m.len()).unwrap_or(0)
    }
}

/// Owned by a connection's update hook; dropped (by sqlx) when the connection closes, which
/// ends the transaction too, so a dirty connection that never comes back still ends dirty.
struct HookGuard {
    cache: Arc<TokenCache>,
    flag: Arc<AtomicBool>,
    key: usize,
}

impl HookGuard {
    fn changed(&self) {
        if !self.flag.swap(true, Ordering::SeqCst) {
            self.cache.dirty.fetch_add(1, Ordering::SeqCst);
        }
        // Every change moves the epoch, so an entry filled from a read that began before it
        // is never served, even after the connection is clean again.
        self.cache.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for HookGuard {
    fn drop(&mut self) {
        self.cache.clean(&self.flag);
        if let Ok(mut m) = self.cache.connections.lock() {
            m.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collector(id: i64) -> Collector {
        (
            AppUserRow {
                id,
                project_id: 1,
                display_name: "c".into(),
                token_hash: vec![1],
                created_by: None,
                created_at: 0,
                revoked_at: None,
            },
            vec![1],
        )
    }

    #[test]
    fn an_entry_is_served_only_under_the_epoch_it_was_read_in() {
        let c = Arc::new(TokenCache::default());
        let s = c.stamp();
        assert!(c.get(s, b"h").is_none());
        c.put(s, b"h", &collector(7));
        assert_eq!(c.get(c.stamp(), b"h").map(|x| x.0.id), Some(7));
        let flag = Arc::new(AtomicBool::new(false));
        let g = HookGuard {
            cache: c.clone(),
            flag: flag.clone(),
            key: 1,
        };
        g.changed();
        // Dirty: nothing served, nothing stored.
        let during = c.stamp();
        assert!(c.get(during, b"h").is_none());
        c.put(during, b"h", &collector(8));
        assert!(c.get(during, b"h").is_none());
        // Clean again: the old entry belongs to an older epoch.
        c.clean(&flag);
        assert!(c.get(c.stamp(), b"h").is_none());
        // A lookup that began before the change may not store what it read.
        c.put(s, b"h", &collector(9));
        assert!(c.get(c.stamp(), b"h").is_none());
        let after = c.stamp();
        c.put(after, b"h", &collector(10));
        assert_eq!(c.get(c.stamp(), b"h").map(|x| x.0.id), Some(10));
        drop(g);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn a_connection_closed_while_dirty_is_counted_clean() {
        let c = Arc::new(TokenCache::default());
        let flag = Arc::new(AtomicBool::new(false));
        let g = HookGuard {
            cache: c.clone(),
            flag,
            key: 2,
        };
        g.changed();
        assert!(!c.stamp().clean);
        drop(g);
        assert!(c.stamp().clean);
    }
}
