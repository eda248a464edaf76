//! The keyring at run time: the master key, and the project data keys it unwraps (M2).
//!
//! Data keys are stored wrapped (`data_keys` table), bound by associated data to their id, and
//! cached unwrapped in memory so the intake path never touches the master key. The store keeps a
//! key check (an HMAC of the master key), so a wrong key is named as such at start instead of
//! surfacing later as "decryption failed".

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use fieldvault_crypto::{Key256, MasterKey};

use crate::{DataKeyRow, Store, StoreError, now_ms};

/// `fv_meta` key of the master-key check.
pub const KEY_CHECK_META: &str = "master_key_check";

/// Id of the site data key.
pub const SITE_KEY_ID: &str = "dk_site";

/// Associated data binding a wrapped data key to its id.
pub fn data_key_aad(id: &str) -> Vec<u8> {
    format!("datakey:{id}").into_bytes()
}

/// The master key joined to a store.
pub struct Keyring {
    master: MasterKey,
    store: Arc<dyn Store>,
    cache: RwLock<HashMap<String, Key256>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keyring(master {})", self.master.fingerprint())
    }
}

impl Keyring {
    /// Joins `master` to `store`: records the key check on first use, refuses a different key.
    pub async fn attach(master: MasterKey, store: Arc<dyn Store>) -> Result<Self, StoreError> {
        let stored = store.meta_init(KEY_CHECK_META, &master.key_check()).await?;
        if !master.matches_check(&stored) {
            return Err(wrong_key(&master));
        }
        Ok(Self {
            master,
            store,
            cache: RwLock::new(HashMap::new()),
        })
    }

    /// The master key.
    pub fn master(&self) -> &MasterKey {
        &self.master
    }

    /// Re-reads the stored key check: after a rotation by another process this instance must not
    /// wrap new keys under the retired master key.
    pub async fn ensure_current(&self) -> Result<(), StoreError> {
        match self.store.meta(KEY_CHECK_META).await? {
            Some(c) if self.master.matches_check(&c) => Ok(()),
            _ => Err(wrong_key(&self.master)),
        }
    }

    /// A fresh data key, wrapped and ready to be stored with the row that owns it.
    pub fn new_data_key(&self) -> Result<(DataKeyRow, Key256), StoreError> {
        let id = format!("dk_{}", fieldvault_crypto::random::hex(12)?);
        let key = Key256::generate()?;
        let wrapped = self.master.wrap(&key, &data_key_aad(&id))?;
        Ok((
            DataKeyRow {
                id,
                wrapped,
                created_at: now_ms(),
            },
            key,
        ))
    }

    /// Remembers a key this process just created, so its first use needs no store round trip.
    pub fn remember(&self, id: &str, key: &Key256) {
        if let Ok(mut c) = self.cache.write() {
            c.insert(id.to_owned(), key.clone());
        }
    }

    /// The unwrapped data key `id` (cached after first use).
    pub async fn data_key(&self, id: &str) -> Result<Key256, StoreError> {
        if let Some(k) = self.cache.read().ok().and_then(|c| c.get(id).cloned()) {
            return Ok(k);
        }
        let row = self.store.data_key(id).await?.ok_or(StoreError::NotFound)?;
        let key = self
            .master
            .unwrap(&row.wrapped, &data_key_aad(id))
            .map_err(|_| {
                StoreError::WrongKey(format!("data key {id} does not open with the master key"))
            })?;
        self.remember(id, &key);
        Ok(key)
    }

    /// The site data key: seals server-side secrets that belong to no project (TOTP secrets). It
    /// is a data key like any other, so `keys rotate` re-wraps it. Created on first use; when
    /// several instances race, the first stored key wins and every instance uses it.
    pub async fn site_key(&self) -> Result<Key256, StoreError> {
        if let Some(k) = self
            .cache
            .read()
            .ok()
            .and_then(|c| c.get(SITE_KEY_ID).cloned())
        {
            return Ok(k);
        }
        if self.store.data_key(SITE_KEY_ID).await?.is_none() {
            let key = Key256::generate()?;
            let row = DataKeyRow {
                id: SITE_KEY_ID.to_owned(),
                wrapped: self.master.wrap(&key, &data_key_aad(SITE_KEY_ID))?,
                created_at: now_ms(),
            };
            self.store.ensure_data_key(&row).await?;
        }
        self.data_key(SITE_KEY_ID).await
    }

    /// Drops a key from the cache (after crypto-shredding it).
    pub fn forget(&self, id: &str) {
        if let Ok(mut c) = self.cache.write() {
            c.remove(id);
        }
    }
}

/// Re-wraps every data key from `old` (or `new`, when a previous run already did it) to `new`.
/// Safe to run again after an interruption.
pub async fn rotate_data_keys(
    store: &dyn Store,
    old: &MasterKey,
    new: &MasterKey,
) -> Result<u64, StoreError> {
    let rewrap = |id: &str, wrapped: &[u8]| -> Result<Vec<u8>, StoreError> {
        let aad = data_key_aad(id);
        let key = old
            .unwrap(wrapped, &aad)
            .or_else(|_| new.unwrap(wrapped, &aad))
            .map_err(|_| StoreError::WrongKey(format!("data key {id} opens with neither key")))?;
        Ok(new.wrap(&key, &aad)?)
    };
    store.rewrap_data_keys(&rewrap, &new.key_check()).await
}

fn wrong_key(master: &MasterKey) -> StoreError {
    StoreError::WrongKey(format!(
        "the master key (fingerprint {}) does not match this database; supply the key it was \
         created with (key file, FIELDVAULT_MASTER_KEY or passphrase)",
        master.fingerprint()
    ))
}
