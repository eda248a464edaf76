//! A short-lived cache of verified Basic credentials, so a phone syncing many submissions costs
//! one PBKDF2 run, not one per request (DESIGN §4: "never a PBKDF2 per submission").
//!
//! Entries are keyed by an HMAC of `username ‖ password` under a random per-process key: the
//! cache holds no password and nothing that can be brute-forced offline faster than PBKDF2
//! without that key. A hit is only trusted after re-reading the account: if its stored hash
//! changed (password change) or it is no longer active (suspension), the entry is dropped at
//! once and the full check runs — on every instance, with no cross-instance invalidation.
//!
//! Degraded intake (M11): while the database is unreachable the account cannot be re-read, so
//! [`AuthCache::lookup_offline`] trusts an entry verified within [`OFFLINE_TTL`] whose account
//! was seen to sign in with Basic alone (no second factor). A password changed or an account
//! suspended during the outage takes effect when the database answers again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fieldvault_crypto::{Key256, SecretString};
use fieldvault_store::UserRow;

/// How long a verified credential is trusted before PBKDF2 runs again.
pub const TTL: Duration = Duration::from_secs(300);
/// How long a verified credential may stand in for the database while it is unreachable.
pub const OFFLINE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Most entries kept; beyond it the cache is cleared (bounded memory under credential stuffing).
const MAX_ENTRIES: usize = 10_000;

struct Entry {
    user: UserRow,
    verified: Instant,
    /// The account signed in with Basic alone (it has no second factor).
    basic_ok: bool,
}

/// The cache.
pub struct AuthCache {
    key: Key256,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

impl Default for AuthCache {
    fn default() -> Self {
        Self {
            key: Key256::generate().unwrap_or_else(|_| Key256::from_bytes([0u8; 32])),
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl AuthCache {
    fn slot(&self, username: &str, password: &SecretString) -> [u8; 32] {
        fieldvault_crypto::mac::hmac_sha256(
            &self.key,
            &[
                username.to_ascii_lowercase().as_bytes(),
                password.expose().as_bytes(),
            ],
        )
    }

    /// The user id cached for these credentials, with the hash it was verified against
    /// (entries older than [`TTL`] are not returned, but kept for [`Self::lookup_offline`]).
    pub fn lookup(&self, username: &str, password: &SecretString) -> Option<(i64, String)> {
        let slot = self.slot(username, password);
        let map = self.entries.lock().ok()?;
        map.get(&slot)
            .filter(|e| e.verified.elapsed() < TTL)
            .map(|e| (e.user.id, e.user.password_hash.clone()))
    }

    /// The account last verified with these credentials, when the database cannot be asked:
    /// only within [`OFFLINE_TTL`] and only for an account that signs in with Basic alone.
    pub fn lookup_offline(&self, username: &str, password: &SecretString) -> Option<UserRow> {
        let slot = self.slot(username, password);
        let map = self.entries.lock().ok()?;
        map.get(&slot)
            .filter(|e| e.basic_ok && e.verified.elapsed() < OFFLINE_TTL && e.user.active)
            .map(|e| e.user.clone())
    }

    /// Remembers credentials that just passed the full check.
    pub fn insert(&self, username: &str, password: &SecretString, user: &UserRow) {
        let slot = self.slot(username, password);
        if let Ok(mut map) = self.entries.lock() {
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
            let basic_ok = map
                .get(&slot)
                .is_some_and(|e| e.basic_ok && e.user == *user);
            map.insert(
                slot,
                Entry {
                    user: user.clone(),
                    verified: Instant::now(),
                    basic_ok,
                },
            );
        }
    }

    /// Records that these credentials signed in with Basic alone (no second factor).
    pub fn mark_basic_ok(&self, username: &str, password: &SecretString) {
        let slot = self.slot(username, password);
        if let Ok(mut map) = self.entries.lock()
            && let Some(e) = map.get_mut(&slot)
        {
            e.basic_ok = true;
        }
    }

    /// Forgets these credentials.
    pub fn remove(&self, username: &str, password: &SecretString) {
        let slot = self.slot(username, password);
        if let Ok(mut map) = self.entries.lock() {
            map.remove(&slot);
        }
    }
}
