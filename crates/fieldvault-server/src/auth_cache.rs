//! A short-lived cache of verified Basic credentials, so a phone syncing many submissions costs
//! one PBKDF2 run, not one per request (DESIGN §4: "never a PBKDF2 per submission").
//!
//! Entries are keyed by an HMAC of `username ‖ password` under a random per-process key: the
//! cache holds no password and nothing that can be brute-forced offline faster than PBKDF2
//! without that key. A hit is only trusted after re-reading the account: if its stored hash
//! changed (password change) or it is no longer active (suspension), the entry is dropped at
//! once and the full check runs — on every instance, with no cross-instance invalidation.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fieldvault_crypto::{Key256, SecretString};

/// How long a verified credential is trusted before PBKDF2 runs again.
pub const TTL: Duration = Duration::from_secs(300);
/// Most entries kept; beyond it the cache is cleared (bounded memory under credential stuffing).
const MAX_ENTRIES: usize = 10_000;

struct Entry {
    user_id: i64,
    password_hash: String,
    expires: Instant,
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

    /// The user id cached for these credentials, with the hash it was verified against.
    pub fn lookup(&self, username: &str, password: &SecretString) -> Option<(i64, String)> {
        let slot = self.slot(username, password);
        let mut map = self.entries.lock().ok()?;
        match map.get(&slot) {
            Some(e) if e.expires > Instant::now() => Some((e.user_id, e.password_hash.clone())),
            Some(_) => {
                map.remove(&slot);
                None
            }
            None => None,
        }
    }

    /// Remembers credentials that just passed the full check.
    pub fn insert(
        &self,
        username: &str,
        password: &SecretString,
        user_id: i64,
        password_hash: &str,
    ) {
        let slot = self.slot(username, password);
        if let Ok(mut map) = self.entries.lock() {
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
            map.insert(
                slot,
                Entry {
                    user_id,
                    password_hash: password_hash.to_owned(),
                    expires: Instant::now() + TTL,
                },
            );
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
