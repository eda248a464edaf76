//! Opening the storage described by the configuration: data directory, master key, database,
//! blob store. Every refusal is one line naming the problem and the fix, and nothing is modified
//! before all checks pass.
//!
//! Data-directory layout (embedded default):
//! ```text
//! fieldvault-data/          mode 0700
//!   master.key              base64 master key, mode 0600 (unless the key comes from env/passphrase)
//!   master.salt             Argon2 salt, only for a passphrase-derived master key
//!   keyring.json            SQLCipher database key, wrapped by the master key
//!   fieldvault.db (+ -wal)  SQLCipher database
//!   blobs/                  encrypted blobs (when no S3 store is configured)
//!   fieldvault.lock         shared by running processes, exclusive for `keys rotate`
//! ```

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use fieldvault_crypto::keyring::{PASSPHRASE_SALT_LEN, encode_key_base64};
use fieldvault_crypto::{Key256, MasterKey, SecretString};
use serde::{Deserialize, Serialize};

use crate::blob::{BlobSettings, BlobStore};
use crate::keyfile::{read_private, replace_private, sync_dir, write_private_new};
use crate::keyring::{Keyring, rotate_data_keys};
use crate::postgres::PgStore;
use crate::sqlite::SqliteStore;
use crate::{Store, StoreError};

/// Master key file name inside the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";
/// A rotation in progress keeps the next key here until it completes.
pub const NEXT_KEY_FILE: &str = "master.key.new";
/// Salt for a passphrase-derived master key.
pub const SALT_FILE: &str = "master.salt";
const NEXT_SALT_FILE: &str = "master.salt.new";
/// The wrapped SQLCipher key.
pub const KEYRING_FILE: &str = "keyring.json";
/// The embedded database.
pub const DATABASE_FILE: &str = "fieldvault.db";
/// Left by a restore in the data directory: the restored database's change-journal timeline is
/// the original's, which the original server may still be shipping, so the next start ends it
/// and begins a new one (`change_journal`).
pub const JOURNAL_RESET_FILE: &str = "journal-reset";
const LOCK_FILE: &str = "fieldvault.lock";
const DB_KEY_AAD: &[u8] = b"sqlcipher-database-key";

/// Where the master key comes from.
#[derive(Clone)]
pub enum MasterKeySource {
    /// A key file (default `<data_dir>/master.key`), generated on first start.
    File(PathBuf),
    /// Base64 text, e.g. from `FIELDVAULT_MASTER_KEY`.
    Inline(SecretString),
    /// A passphrase typed at start; the salt lives in `<data_dir>/master.salt`.
    Passphrase(SecretString),
}

impl std::fmt::Debug for MasterKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MasterKeySource::File(p) => write!(f, "File({})", p.display()),
            MasterKeySource::Inline(_) => f.write_str("Inline([redacted])"),
            MasterKeySource::Passphrase(_) => f.write_str("Passphrase([redacted])"),
        }
    }
}

/// Everything needed to open storage.
#[derive(Debug, Clone)]
pub struct StorageSettings {
    /// The data directory.
    pub data_dir: PathBuf,
    /// PostgreSQL URL; `None` for the embedded database.
    pub database_url: Option<SecretString>,
    /// Blob store; `None` for `<data_dir>/blobs`.
    pub blobs: Option<BlobSettings>,
    /// Master key source.
    pub master_key: MasterKeySource,
    /// Database connection pool size.
    pub max_connections: u32,
}

/// Opened storage.
pub struct Opened {
    /// The database.
    pub store: Arc<dyn Store>,
    /// The encrypted blob store.
    pub blobs: BlobStore,
    /// Master key and data keys.
    pub keyring: Arc<Keyring>,
    /// True when this call created a new master key (first start).
    pub created_master_key: bool,
    /// Held while the storage is in use; see the module docs.
    pub lock: std::fs::File,
}

#[derive(Serialize, Deserialize)]
struct KeyringFile {
    version: u32,
    /// Base64 of the database key wrapped under the master key.
    database_key: String,
}

/// Opens storage, creating the data directory, master key and database on first start when
/// `create` is true.
pub async fn open(settings: &StorageSettings, create: bool) -> Result<Opened, StoreError> {
    let dir = &settings.data_dir;
    prepare_data_dir(dir, create)?;
    let lock = lock_data_dir(dir, false)?;
    if dir.join(NEXT_KEY_FILE).exists() || dir.join(NEXT_SALT_FILE).exists() {
        return Err(StoreError::Setup(format!(
            "an interrupted master-key rotation was found in {}; run `fieldvault keys rotate` \
             again to finish it",
            dir.display()
        )));
    }
    let embedded = settings.database_url.is_none();
    let existing =
        embedded && (dir.join(DATABASE_FILE).exists() || dir.join(KEYRING_FILE).exists());
    let (master, created_master_key) = load_master(settings, create && !existing)?;
    let store: Arc<dyn Store> = match &settings.database_url {
        None => {
            let db_key = database_key(dir, &master, create)?;
            Arc::new(
                SqliteStore::open(
                    &dir.join(DATABASE_FILE),
                    &db_key,
                    create,
                    settings.max_connections,
                )
                .await?,
            )
        }
        Some(url) => Arc::new(PgStore::connect(url.expose(), settings.max_connections).await?),
    };
    let keyring = Arc::new(Keyring::attach(master, store.clone()).await?);
    let blob_settings = settings
        .blobs
        .clone()
        .unwrap_or_else(|| BlobSettings::Local(dir.join("blobs")));
    let blobs = BlobStore::open(&blob_settings)?;
    Ok(Opened {
        store,
        blobs,
        keyring,
        created_master_key,
        lock,
    })
}

fn prepare_data_dir(dir: &Path, create: bool) -> Result<(), StoreError> {
    if !dir.exists() {
        if !create {
            return Err(StoreError::Setup(format!(
                "data directory {} does not exist; start `fieldvault serve` once to create it, \
                 or pass --data-dir",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Setup(format!(
                "cannot create data directory {}: {e}; choose another with --data-dir",
                dir.display()
            ))
        })?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| StoreError::Setup(format!("cannot restrict {}: {e}", dir.display())))?;
    }
    if !dir.is_dir() {
        return Err(StoreError::Setup(format!(
            "data directory {} is not a directory",
            dir.display()
        )));
    }
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| {
            StoreError::Setup(format!(
                "data directory {} is not writable ({e}); fix its owner or permissions, or pass \
                 --data-dir",
                dir.display()
            ))
        })
}

fn lock_data_dir(dir: &Path, exclusive: bool) -> Result<std::fs::File, StoreError> {
    let path = dir.join(LOCK_FILE);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::Setup(format!("cannot open {}: {e}", path.display())))?;
    let locked = if exclusive {
        f.try_lock()
    } else {
        f.try_lock_shared()
    };
    locked.map_err(|_| {
        StoreError::Setup(if exclusive {
            format!(
                "{} is in use by a running Fieldvault; stop it first",
                dir.display()
            )
        } else {
            format!(
                "{} is locked by `fieldvault keys rotate`; wait for it to finish",
                dir.display()
            )
        })
    })?;
    Ok(f)
}

/// The master key of `settings`, which must exist already (a passphrase's salt is read from
/// the data directory, where a restore has put it).
pub fn existing_master_key(settings: &StorageSettings) -> Result<MasterKey, StoreError> {
    load_master(settings, false).map(|(k, _)| k)
}

fn load_master(
    settings: &StorageSettings,
    may_create: bool,
) -> Result<(MasterKey, bool), StoreError> {
    let dir = &settings.data_dir;
    match &settings.master_key {
        MasterKeySource::File(path) => {
            if path.exists() {
                let text = read_private(path)?;
                let key = MasterKey::from_base64(&text).map_err(|e| {
                    StoreError::Setup(format!("master key file {}: {e}", path.display()))
                })?;
                return Ok((key, false));
            }
            if !may_create {
                return Err(StoreError::Setup(format!(
                    "master key file {} is missing, and the data in {} cannot be opened without \
                     it; restore it from your escrow copy, or point master_key_file at it",
                    path.display(),
                    dir.display()
                )));
            }
            let root = Key256::generate()?;
            write_private_new(path, format!("{}\n", encode_key_base64(&root)).as_bytes())?;
            Ok((MasterKey::from_key(&root)?, true))
        }
        MasterKeySource::Inline(text) => Ok((
            MasterKey::from_base64(text.expose())
                .map_err(|e| StoreError::Setup(format!("FIELDVAULT_MASTER_KEY: {e}")))?,
            false,
        )),
        MasterKeySource::Passphrase(pass) => {
            let salt = load_or_create_salt(&dir.join(SALT_FILE), may_create)?;
            Ok((
                MasterKey::from_passphrase(pass, &salt)
                    .map_err(|e| StoreError::Setup(format!("master passphrase: {e}")))?,
                false,
            ))
        }
    }
}

fn load_or_create_salt(path: &Path, may_create: bool) -> Result<Vec<u8>, StoreError> {
    if path.exists() {
        let text = std::fs::read_to_string(path)
            .map_err(|e| StoreError::Setup(format!("cannot read {}: {e}", path.display())))?;
        return base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| StoreError::Setup(format!("{} is not valid base64", path.display())));
    }
    if !may_create {
        return Err(StoreError::Setup(format!(
            "{} is missing; a passphrase-derived master key needs the salt it was made with",
            path.display()
        )));
    }
    let salt = fieldvault_crypto::random::bytes::<PASSPHRASE_SALT_LEN>()?;
    let text = base64::engine::general_purpose::STANDARD.encode(salt);
    write_private_new(path, format!("{text}\n").as_bytes())?;
    Ok(salt.to_vec())
}

/// Unwraps (or on first start creates) the SQLCipher key.
/// Opens a second connection to the embedded database of `dir` (for a backup copy while the
/// server runs: SQLite's WAL lets it read a consistent snapshot beside the writer).
pub async fn open_embedded(dir: &Path, master: &MasterKey) -> Result<SqliteStore, StoreError> {
    let key = database_key(dir, master, false)?;
    SqliteStore::open(&dir.join(DATABASE_FILE), &key, false, 1).await
}

/// The SQLCipher key of the embedded database in `dir` (to attach a restored copy to the live
/// database, which needs the copy's key).
pub fn embedded_database_key(dir: &Path, master: &MasterKey) -> Result<Key256, StoreError> {
    database_key(dir, master, false)
}

fn database_key(dir: &Path, master: &MasterKey, create: bool) -> Result<Key256, StoreError> {
    let path = dir.join(KEYRING_FILE);
    if path.exists() {
        return unwrap_database_key(&path, &[master]).map(|(k, _)| k);
    }
    if dir.join(DATABASE_FILE).exists() || !create {
        return Err(StoreError::Setup(format!(
            "{} is missing; the database cannot be opened without it (restore it from a backup)",
            path.display()
        )));
    }
    let key = Key256::generate()?;
    write_keyring_file(&path, master, &key, false)?;
    Ok(key)
}

fn unwrap_database_key(path: &Path, masters: &[&MasterKey]) -> Result<(Key256, usize), StoreError> {
    let text = read_private(path)?;
    let file: KeyringFile = serde_json::from_str(&text)
        .map_err(|e| StoreError::Corrupt(format!("{}: {e}", path.display())))?;
    let wrapped = base64::engine::general_purpose::STANDARD
        .decode(&file.database_key)
        .map_err(|_| {
            StoreError::Corrupt(format!("{}: database_key is not base64", path.display()))
        })?;
    for (i, m) in masters.iter().enumerate() {
        if let Ok(k) = m.unwrap(&wrapped, DB_KEY_AAD) {
            return Ok((k, i));
        }
    }
    Err(StoreError::WrongKey(format!(
        "the master key (fingerprint {}) does not open {}; supply the key this data directory \
         was created with (key file, FIELDVAULT_MASTER_KEY or passphrase)",
        masters.first().map(|m| m.fingerprint()).unwrap_or_default(),
        path.display()
    )))
}

fn write_keyring_file(
    path: &Path,
    master: &MasterKey,
    key: &Key256,
    replace: bool,
) -> Result<(), StoreError> {
    let file = KeyringFile {
        version: 1,
        database_key: base64::engine::general_purpose::STANDARD
            .encode(master.wrap(key, DB_KEY_AAD)?),
    };
    let text = serde_json::to_vec_pretty(&file).map_err(|e| StoreError::Backend(e.to_string()))?;
    if replace {
        replace_private(path, &text)
    } else {
        write_private_new(path, &text)
    }
}

/// The key a rotation moves to.
pub enum RotateTo {
    /// A fresh random key (written to `master.key.new` first, so an interrupted run can resume).
    RandomKey,
    /// A key derived from a new passphrase (salt in `master.salt.new` until done).
    Passphrase(SecretString),
}

/// What a rotation did.
pub struct Rotated {
    /// Data keys re-wrapped.
    pub data_keys: u64,
    /// Fingerprint of the new master key.
    pub fingerprint: String,
    /// The new key in base64 when the old one came from the environment: the operator must put it
    /// there. `None` when it replaced the key file or came from a passphrase.
    pub new_inline_key: Option<SecretString>,
}

/// Re-wraps every key under a new master key without rewriting data. Needs every process using
/// the data directory stopped (on PostgreSQL: every instance). Resumable: an interrupted run
/// leaves `master.key.new` (or `master.salt.new`) behind and the next run finishes the job.
pub async fn rotate_master_key(
    settings: &StorageSettings,
    to: RotateTo,
) -> Result<Rotated, StoreError> {
    let dir = &settings.data_dir;
    prepare_data_dir(dir, false)?;
    let _lock = lock_data_dir(dir, true)?;
    let (old, _) = load_master(settings, false)?;
    let (new, new_root) = match &to {
        RotateTo::RandomKey => {
            let next = dir.join(NEXT_KEY_FILE);
            if !next.exists() {
                let root = Key256::generate()?;
                write_private_new(&next, format!("{}\n", encode_key_base64(&root)).as_bytes())?;
            }
            let root = fieldvault_crypto::keyring::decode_key_base64(&read_private(&next)?)?;
            (MasterKey::from_key(&root)?, Some(root))
        }
        RotateTo::Passphrase(pass) => {
            let salt = load_or_create_salt(&dir.join(NEXT_SALT_FILE), true)?;
            (
                MasterKey::from_passphrase(pass, &salt)
                    .map_err(|e| StoreError::Setup(format!("new passphrase: {e}")))?,
                None,
            )
        }
    };
    let data_keys = match &settings.database_url {
        None => {
            let kf = dir.join(KEYRING_FILE);
            let (db_key, _) = unwrap_database_key(&kf, &[&old, &new])?;
            let store = SqliteStore::open(&dir.join(DATABASE_FILE), &db_key, false, 1).await?;
            check_either(&store, &old, &new).await?;
            let n = rotate_data_keys(&store, &old, &new).await?;
            store.close().await;
            write_keyring_file(&kf, &new, &db_key, true)?;
            n
        }
        Some(url) => {
            let store = PgStore::connect(url.expose(), 1).await?;
            check_either(&store, &old, &new).await?;
            let n = rotate_data_keys(&store, &old, &new).await?;
            store.close().await;
            n
        }
    };
    let mut new_inline_key = None;
    match (&to, &settings.master_key) {
        (RotateTo::RandomKey, MasterKeySource::File(path)) => {
            std::fs::rename(dir.join(NEXT_KEY_FILE), path)
                .map_err(|e| StoreError::Setup(format!("cannot install the new key file: {e}")))?;
            sync_dir(path)?;
        }
        (RotateTo::RandomKey, _) => {
            new_inline_key = new_root.map(|r| SecretString::new(encode_key_base64(&r)));
            std::fs::remove_file(dir.join(NEXT_KEY_FILE))
                .map_err(|e| StoreError::Setup(format!("cannot remove {NEXT_KEY_FILE}: {e}")))?;
        }
        (RotateTo::Passphrase(_), _) => {
            std::fs::rename(dir.join(NEXT_SALT_FILE), dir.join(SALT_FILE))
                .map_err(|e| StoreError::Setup(format!("cannot install the new salt: {e}")))?;
            sync_dir(&dir.join(SALT_FILE))?;
        }
    }
    Ok(Rotated {
        data_keys,
        fingerprint: new.fingerprint(),
        new_inline_key,
    })
}

async fn check_either(
    store: &dyn Store,
    old: &MasterKey,
    new: &MasterKey,
) -> Result<(), StoreError> {
    match store.meta(crate::keyring::KEY_CHECK_META).await? {
        Some(c) if old.matches_check(&c) || new.matches_check(&c) => Ok(()),
        Some(_) => Err(StoreError::WrongKey(format!(
            "the master key (fingerprint {}) does not match this database",
            old.fingerprint()
        ))),
        None => Ok(()),
    }
}
