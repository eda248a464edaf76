//! Backups (M8): the database, the blobs and the wrapped keyring, copied to a *backup target*
//! (a directory or an S3-compatible bucket on another store) and encrypted under a **backup key**
//! that is kept apart from the master key.
//!
//! Layout on the target:
//! ```text
//! backups/<id>/manifest     sealed JSON: what the backup holds, with SHA-256 of every object
//! backups/<id>/database     SQLite: a `VACUUM INTO` copy (itself SQLCipher-encrypted);
//!                           PostgreSQL: a `pg_dump --format=custom` archive
//! backups/<id>/file/<name>  keyring.json (the wrapped SQLCipher key), master.salt
//! blobs/<sha256>            one object per distinct stored blob, named by the SHA-256 of its
//!                           stored (already encrypted) bytes: unchanged blobs are never copied
//!                           twice, whichever backup first stored them
//! ```
//! Every object is sealed with the STREAM construction of [`fieldvault_crypto::stream`] under the
//! backup key, bound to its name, so an object swapped, truncated or altered on the target fails
//! to open and `verify` names it. Restoring needs both the backup key and the master key (the
//! data keys inside the database, and the SQLCipher key in `keyring.json`, are wrapped by it):
//! escrow them separately.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use fieldvault_crypto::Key256;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::blob::BlobStore;
use crate::{Counts, StoreError};

/// Manifest format version.
pub const MANIFEST_VERSION: u32 = 1;
/// Largest database file or dump handled in one piece, in bytes (it is read into memory).
pub const MAX_DATABASE_BYTES: u64 = 8 * 1024 * 1024 * 1024;

/// The key backups are sealed with. Its file holds base64 of 32 random bytes, mode 0600.
pub struct BackupKey(Key256);

impl std::fmt::Debug for BackupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BackupKey({})", self.fingerprint())
    }
}

impl BackupKey {
    /// Reads a key file.
    pub fn load(path: &Path) -> Result<Self, StoreError> {
        let text = crate::keyfile::read_private(path)?;
        let key = fieldvault_crypto::keyring::decode_key_base64(text.trim()).map_err(|_| {
            StoreError::Setup(format!(
                "{} is not a backup key (base64 of 32 bytes)",
                path.display()
            ))
        })?;
        Ok(Self(key))
    }

    /// Creates a new key file (refuses to overwrite one).
    pub fn generate(path: &Path) -> Result<Self, StoreError> {
        let key = Key256::generate()?;
        crate::keyfile::write_private_new(
            path,
            format!("{}\n", fieldvault_crypto::keyring::encode_key_base64(&key)).as_bytes(),
        )?;
        Ok(Self(key))
    }

    pub(crate) fn key(&self) -> &Key256 {
        &self.0
    }

    /// A public fingerprint (recorded in each manifest; tells which key a backup needs).
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"fieldvault backup key v1");
        h.update(self.0.expose());
        fieldvault_crypto::random::to_hex(&h.finalize()[..8])
    }
}

/// One object on the target.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ObjectRef {
    /// Its name on the target.
    pub object: String,
    /// SHA-256 (hex) of its content before sealing.
    pub sha256: String,
    /// Bytes before sealing.
    pub size: u64,
}

/// What one backup holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version.
    pub version: u32,
    /// Backup id (UTC time of the start, sortable).
    pub id: String,
    /// Start time, Unix milliseconds.
    pub created_at: i64,
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// Fingerprint of the master key the data is wrapped under.
    pub master_key_fingerprint: String,
    /// Fingerprint of the backup key.
    pub backup_key_fingerprint: String,
    /// The database copy or dump.
    pub database: ObjectRef,
    /// Files of the data directory (`keyring.json`, `master.salt`).
    pub files: BTreeMap<String, ObjectRef>,
    /// Blob name in the blob store → content object.
    pub blobs: BTreeMap<String, ObjectRef>,
    /// Row counts at backup time.
    pub counts: BTreeMap<String, i64>,
    /// Embedded store: Unix milliseconds by which the database copy was complete (its state is
    /// that of an instant between `created_at` and this). Point-in-time recovery starts from the
    /// newest copy complete by its target time.
    #[serde(default)]
    pub snapshot_at: Option<i64>,
}

/// Counts as a name → value map (the manifest's form).
pub fn counts_map(c: &Counts) -> BTreeMap<String, i64> {
    [
        ("forms", c.forms),
        ("form_defs", c.form_defs),
        ("submissions", c.submissions),
        ("submission_versions", c.submission_versions),
        ("submission_attachments", c.submission_attachments),
        ("received_attachments", c.received_attachments),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn sha_hex(data: &[u8]) -> String {
    fieldvault_crypto::random::to_hex(&Sha256::digest(data))
}

pub(crate) fn aad(object: &str) -> Vec<u8> {
    format!("fieldvault-backup:{object}").into_bytes()
}

/// A new backup id for `now_ms`: `20261127T104100Z-123-1a2b` (UTC seconds, then milliseconds, so
/// ids sort by time even for two backups within one second; then a random tag).
pub fn new_id(now_ms: i64) -> Result<String, StoreError> {
    let t = std::time::UNIX_EPOCH
        + std::time::Duration::from_millis(u64::try_from(now_ms).unwrap_or(0));
    let text = humantime::format_rfc3339_seconds(t).to_string();
    let compact: String = text.chars().filter(|c| *c != '-' && *c != ':').collect();
    Ok(format!(
        "{compact}-{:03}-{}",
        now_ms.rem_euclid(1000),
        fieldvault_crypto::random::hex(2)?
    ))
}

/// Parses the time out of an id (Unix milliseconds).
pub fn id_time(id: &str) -> Option<i64> {
    let stamp = id.split('-').next()?;
    if stamp.len() != 16 {
        return None;
    }
    let text = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &stamp[0..4],
        &stamp[4..6],
        &stamp[6..8],
        &stamp[9..11],
        &stamp[11..13],
        &stamp[13..15]
    );
    let t = humantime::parse_rfc3339(&text).ok()?;
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
}

/// Where a backup's database comes from.
pub enum DatabaseSource<'a> {
    /// The embedded store of this data directory, copied with `VACUUM INTO` (the copy stays
    /// SQLCipher-encrypted under the database key).
    Sqlite(&'a fieldvault_crypto::MasterKey),
    /// PostgreSQL at this URL, dumped with `pg_dump`.
    Postgres(&'a fieldvault_crypto::SecretString),
}

/// Everything a backup reads.
pub struct Source<'a> {
    /// The database.
    pub database: DatabaseSource<'a>,
    /// Row counts source.
    pub store: &'a dyn crate::Store,
    /// The live blob store.
    pub blobs: &'a BlobStore,
    /// The data directory (for `keyring.json`, `master.salt`).
    pub data_dir: &'a Path,
    /// Fingerprint of the master key.
    pub master_key_fingerprint: String,
    /// A scratch directory for the database copy (deleted afterwards).
    pub scratch: &'a Path,
}

/// What a backup run did.
#[derive(Debug, Clone)]
pub struct Created {
    /// The manifest stored.
    pub manifest: Manifest,
    /// Blob objects copied by this run (the others were already on the target).
    pub blobs_copied: u64,
}

pub(crate) async fn put(
    target: &BlobStore,
    key: &BackupKey,
    object: &str,
    data: Bytes,
) -> Result<ObjectRef, StoreError> {
    let r = ObjectRef {
        object: object.to_owned(),
        sha256: sha_hex(&data),
        size: data.len() as u64,
    };
    target.put_bytes(&key.0, object, &aad(object), data).await?;
    Ok(r)
}

/// Takes a backup to `target`.
pub async fn create(
    source: &Source<'_>,
    target: &BlobStore,
    key: &BackupKey,
) -> Result<Created, StoreError> {
    let created_at = crate::now_ms();
    let id = new_id(created_at)?;
    let dump = source.scratch.join(format!("database-{id}"));
    let mut snapshot_at = None;
    let backend = match &source.database {
        DatabaseSource::Sqlite(master) => {
            let s = crate::open::open_embedded(source.data_dir, master).await?;
            let r = s.snapshot_into(&dump).await;
            crate::Store::close(&s).await;
            r?;
            snapshot_at = Some(crate::now_ms());
            "sqlite"
        }
        DatabaseSource::Postgres(url) => {
            pg_dump(url, &dump).await?;
            "postgres"
        }
    };
    let counts = counts_map(&source.store.counts().await?);
    let read = tokio::fs::read(&dump).await;
    let _ = tokio::fs::remove_file(&dump).await;
    let bytes = read.map_err(|e| StoreError::Backend(format!("reading the database copy: {e}")))?;
    if bytes.len() as u64 > MAX_DATABASE_BYTES {
        return Err(StoreError::Setup(format!(
            "the database copy is {} bytes, more than this backup handles in one piece",
            bytes.len()
        )));
    }
    let database = put(
        target,
        key,
        &format!("backups/{id}/database"),
        Bytes::from(bytes),
    )
    .await?;
    let mut files = BTreeMap::new();
    for name in [crate::open::KEYRING_FILE, crate::open::SALT_FILE] {
        let path = source.data_dir.join(name);
        if backend == "sqlite" && path.exists() {
            let data = tokio::fs::read(&path)
                .await
                .map_err(|e| StoreError::Backend(format!("reading {}: {e}", path.display())))?;
            let r = put(
                target,
                key,
                &format!("backups/{id}/file/{name}"),
                Bytes::from(data),
            )
            .await?;
            files.insert(name.to_owned(), r);
        }
    }
    // Blobs after the database copy: every blob a copied row names was written before its row.
    let mut blobs = BTreeMap::new();
    let mut copied = 0u64;
    let present: BTreeSet<String> = target.list("blobs").await?.into_iter().collect();
    for name in source.blobs.list("").await? {
        let raw = match source.blobs.get_raw(&name).await {
            Ok(r) => r,
            // Deleted since it was listed (an unused blob cleaned up): nothing names it.
            Err(StoreError::NotFound) => continue,
            Err(e) => return Err(e),
        };
        let sha = sha_hex(&raw);
        let object = format!("blobs/{sha}");
        let r = if present.contains(&object) {
            ObjectRef {
                object,
                sha256: sha,
                size: raw.len() as u64,
            }
        } else {
            copied += 1;
            put(target, key, &object, raw).await?
        };
        blobs.insert(name, r);
    }
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        id: id.clone(),
        created_at,
        backend: backend.to_owned(),
        master_key_fingerprint: source.master_key_fingerprint.clone(),
        backup_key_fingerprint: key.fingerprint(),
        database,
        files,
        blobs,
        counts,
        snapshot_at,
    };
    let json = serde_json::to_vec(&manifest).map_err(|e| StoreError::Backend(e.to_string()))?;
    let object = format!("backups/{id}/manifest");
    target
        .put_bytes(&key.0, &object, &aad(&object), Bytes::from(json))
        .await?;
    Ok(Created {
        manifest,
        blobs_copied: copied,
    })
}

async fn pg_dump(url: &fieldvault_crypto::SecretString, dest: &Path) -> Result<(), StoreError> {
    let out = tokio::process::Command::new("pg_dump")
        .args(["--format=custom", "--no-owner", "--no-privileges", "--file"])
        .arg(dest)
        .arg("--dbname")
        .arg(url.expose())
        .output()
        .await
        .map_err(|e| {
            StoreError::Setup(format!(
                "cannot run pg_dump (install the PostgreSQL client): {e}"
            ))
        })?;
    if !out.status.success() {
        return Err(StoreError::Backend(format!(
            "pg_dump failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .next()
                .unwrap_or_default()
        )));
    }
    Ok(())
}

/// Reads one backup's manifest.
pub async fn manifest(
    target: &BlobStore,
    key: &BackupKey,
    id: &str,
) -> Result<Manifest, StoreError> {
    let object = format!("backups/{id}/manifest");
    let bytes = target
        .get_bytes(&key.0, &object, &aad(&object))
        .await
        .map_err(|e| damaged(&object, e))?;
    serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt(format!("{object}: {e}")))
}

pub(crate) fn damaged(object: &str, e: StoreError) -> StoreError {
    match e {
        StoreError::NotFound => StoreError::Corrupt(format!("{object} is missing from the target")),
        StoreError::Corrupt(why) => StoreError::Corrupt(format!(
            "{object} is damaged: it does not open with the backup key ({why})"
        )),
        other => other,
    }
}

/// Ids of the backups on the target, oldest first.
pub async fn list(target: &BlobStore) -> Result<Vec<String>, StoreError> {
    let mut ids: BTreeSet<String> = BTreeSet::new();
    for name in target.list("backups").await? {
        if let Some(id) = name
            .strip_prefix("backups/")
            .and_then(|r| r.strip_suffix("/manifest"))
        {
            ids.insert(id.to_owned());
        }
    }
    Ok(ids.into_iter().collect())
}

/// Reads and checks one object: it opens with the backup key and has the recorded hash.
pub(crate) async fn fetch(
    target: &BlobStore,
    key: &BackupKey,
    r: &ObjectRef,
) -> Result<Vec<u8>, StoreError> {
    let data = target
        .get_bytes(&key.0, &r.object, &aad(&r.object))
        .await
        .map_err(|e| damaged(&r.object, e))?;
    if sha_hex(&data) != r.sha256 || data.len() as u64 != r.size {
        return Err(StoreError::Corrupt(format!(
            "{} is damaged: its content does not match the manifest",
            r.object
        )));
    }
    Ok(data)
}

/// Where a restore writes.
pub enum RestoreInto<'a> {
    /// A new data directory for the embedded store (database, keyring, blobs).
    DataDir {
        /// The directory (must be empty or missing unless `force`).
        dir: &'a Path,
        /// The blob store to fill (`<dir>/blobs` by default).
        blobs: &'a BlobStore,
    },
    /// A PostgreSQL database (`pg_restore`), and a blob store.
    Postgres {
        /// Target database URL.
        url: &'a fieldvault_crypto::SecretString,
        /// The blob store to fill.
        blobs: &'a BlobStore,
        /// Scratch directory for the dump file.
        scratch: &'a Path,
    },
}

/// What a restore or verify read.
#[derive(Debug, Clone, Default)]
pub struct Restored {
    /// Objects read and checked.
    pub objects: u64,
    /// Blobs written.
    pub blobs: u64,
}

/// Restores backup `id`: every object is checked (backup key, hash) before it is written.
pub async fn restore(
    target: &BlobStore,
    key: &BackupKey,
    id: &str,
    into: &RestoreInto<'_>,
    force: bool,
) -> Result<(Manifest, Restored), StoreError> {
    let m = manifest(target, key, id).await?;
    let mut done = Restored {
        objects: 1,
        blobs: 0,
    };
    let db = fetch(target, key, &m.database).await?;
    done.objects += 1;
    let blobs = match into {
        RestoreInto::DataDir { dir, blobs } => {
            if m.backend != "sqlite" {
                return Err(StoreError::Setup(format!(
                    "backup {id} is of a PostgreSQL database; restore it with --database-url"
                )));
            }
            refuse_live(dir, force)?;
            std::fs::create_dir_all(dir).map_err(io)?;
            set_mode(dir, 0o700)?;
            write_file(&dir.join(crate::open::DATABASE_FILE), &db)?;
            write_file(&dir.join(crate::open::JOURNAL_RESET_FILE), b"")?;
            for (name, r) in &m.files {
                if !matches!(
                    name.as_str(),
                    crate::open::KEYRING_FILE | crate::open::SALT_FILE
                ) {
                    continue;
                }
                let data = fetch(target, key, r).await?;
                done.objects += 1;
                write_file(&dir.join(name), &data)?;
            }
            *blobs
        }
        RestoreInto::Postgres {
            url,
            blobs,
            scratch,
        } => {
            if m.backend != "postgres" {
                return Err(StoreError::Setup(format!(
                    "backup {id} is of an embedded database; restore it with --data-dir"
                )));
            }
            let file = scratch.join(format!("restore-{id}"));
            write_file(&file, &db)?;
            let r = pg_restore(url, &file, force).await;
            let _ = std::fs::remove_file(&file);
            r?;
            *blobs
        }
    };
    let mut seen: BTreeMap<&str, Bytes> = BTreeMap::new();
    for (name, r) in &m.blobs {
        let data = match seen.get(r.object.as_str()) {
            Some(d) => d.clone(),
            None => {
                let d = Bytes::from(fetch(target, key, r).await?);
                done.objects += 1;
                seen.insert(&r.object, d.clone());
                d
            }
        };
        blobs.put_raw(name, data).await?;
        done.blobs += 1;
    }
    Ok((m, done))
}

/// Checks backup `id` without writing anywhere: every object opens and matches its hash.
pub async fn check(
    target: &BlobStore,
    key: &BackupKey,
    id: &str,
) -> Result<(Manifest, Restored), StoreError> {
    let m = manifest(target, key, id).await?;
    let mut done = Restored {
        objects: 1,
        blobs: 0,
    };
    fetch(target, key, &m.database).await?;
    done.objects += 1;
    for r in m.files.values() {
        fetch(target, key, r).await?;
        done.objects += 1;
    }
    let mut seen = BTreeSet::new();
    for r in m.blobs.values() {
        if seen.insert(r.object.as_str()) {
            fetch(target, key, r).await?;
            done.objects += 1;
        }
        done.blobs += 1;
    }
    Ok((m, done))
}

async fn pg_restore(
    url: &fieldvault_crypto::SecretString,
    file: &Path,
    force: bool,
) -> Result<(), StoreError> {
    let mut c = tokio::process::Command::new("pg_restore");
    c.args([
        "--no-owner",
        "--no-privileges",
        "--exit-on-error",
        "--single-transaction",
    ]);
    if force {
        c.args(["--clean", "--if-exists"]);
    }
    let out = c
        .arg("--dbname")
        .arg(url.expose())
        .arg(file)
        .output()
        .await
        .map_err(|e| {
            StoreError::Setup(format!(
                "cannot run pg_restore (install the PostgreSQL client): {e}"
            ))
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err
            .lines()
            .find(|l| l.contains("error"))
            .unwrap_or_default();
        return Err(StoreError::Setup(format!(
            "pg_restore failed (the target database must be empty, or pass --force to replace it): {first}"
        )));
    }
    Ok(())
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io)
}

fn write_file(path: &Path, data: &[u8]) -> Result<(), StoreError> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(io)?;
    set_mode(path, 0o600)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Refuses a directory that holds a database unless `force`.
fn refuse_live(dir: &Path, force: bool) -> Result<(), StoreError> {
    let live = [crate::open::DATABASE_FILE, crate::open::KEYRING_FILE]
        .iter()
        .any(|n| dir.join(n).exists());
    if live && !force {
        return Err(StoreError::Setup(format!(
            "{} already holds a Fieldvault database; restore into a new directory, or pass \
             --force to overwrite it (stop every server using it first)",
            dir.display()
        )));
    }
    if live {
        for n in [
            crate::open::DATABASE_FILE,
            "fieldvault.db-wal",
            "fieldvault.db-shm",
        ] {
            let _ = std::fs::remove_file(dir.join(n));
        }
    }
    Ok(())
}

/// Retention (default 7 daily, 4 weekly, 6 monthly): of each UTC day, ISO-ish week (7-day
/// period since the epoch) and 30-day month, the newest backup is kept, for the newest `daily`
/// days, `weekly` weeks and `monthly` months that have one. Returns the ids to delete.
pub fn expired(ids: &[String], daily: usize, weekly: usize, monthly: usize) -> Vec<String> {
    const DAY: i64 = 86_400_000;
    let mut timed: Vec<(i64, &String)> = ids
        .iter()
        .filter_map(|i| id_time(i).map(|t| (t, i)))
        .collect();
    timed.sort();
    timed.reverse();
    let mut keep: BTreeSet<&String> = BTreeSet::new();
    for (period, count) in [(DAY, daily), (7 * DAY, weekly), (30 * DAY, monthly)] {
        let mut periods = BTreeSet::new();
        for (t, id) in &timed {
            if periods.len() >= count {
                break;
            }
            if periods.insert(t.div_euclid(period)) {
                keep.insert(*id);
            }
        }
    }
    timed
        .iter()
        .filter(|(_, id)| !keep.contains(id))
        .map(|(_, id)| (*id).clone())
        .collect()
}

/// Deletes expired backups, the journal segments older than the oldest backup kept (a restore
/// never starts before it), and the blob objects they named that no remaining backup or
/// segment names. Only those: an object no manifest or segment names yet may be one the
/// journal shipper has just copied and is about to name. Returns the ids deleted.
pub async fn prune(
    target: &BlobStore,
    key: &BackupKey,
    daily: usize,
    weekly: usize,
    monthly: usize,
) -> Result<Vec<String>, StoreError> {
    /// Segments this much older than the oldest backup are kept too: a transaction that began
    /// before the copy and committed after it has entries timed before the copy.
    const SEGMENT_MARGIN_MS: i64 = 3_600_000;
    let ids = list(target).await?;
    let gone = expired(&ids, daily, weekly, monthly);
    let oldest_kept = ids
        .iter()
        .filter(|i| !gone.contains(i))
        .filter_map(|i| id_time(i))
        .min();
    let (old_segments, segments): (Vec<_>, Vec<_>) = crate::pitr::all_segments(target)
        .await?
        .into_iter()
        .partition(|s| oldest_kept.is_some_and(|t| s.last_ms < t - SEGMENT_MARGIN_MS));
    if gone.is_empty() && old_segments.is_empty() {
        return Ok(gone);
    }
    let mut referenced = crate::pitr::segment_blobs(target, key, &segments)
        .await
        .map_err(|e| StoreError::Corrupt(format!("pruning stopped: {e}")))?;
    let mut candidates = crate::pitr::segment_blobs(target, key, &old_segments)
        .await
        .map_err(|e| StoreError::Corrupt(format!("pruning stopped: {e}")))?;
    for id in &gone {
        // One that cannot be read names nothing here: its blobs stay (nothing is deleted on
        // doubt).
        if let Ok(m) = manifest(target, key, id).await {
            candidates.extend(m.blobs.into_values().map(|r| r.object));
        }
    }
    for id in ids.iter().filter(|i| !gone.contains(i)) {
        // A kept backup that cannot be read keeps every blob (nothing is deleted on doubt).
        match manifest(target, key, id).await {
            Ok(m) => referenced.extend(m.blobs.into_values().map(|r| r.object)),
            Err(e) => {
                return Err(StoreError::Corrupt(format!(
                    "pruning stopped: backup {id} cannot be read ({e})"
                )));
            }
        }
    }
    for id in &gone {
        for name in target.list(&format!("backups/{id}")).await? {
            target.delete(&name).await?;
        }
    }
    for s in &old_segments {
        target.delete(&s.object).await?;
    }
    for name in candidates.difference(&referenced) {
        target.delete(name).await?;
    }
    Ok(gone)
}

/// A scratch directory path under `base` for one run.
pub fn scratch_dir(base: &Path) -> PathBuf {
    base.join(format!(
        ".backup-scratch-{}",
        fieldvault_crypto::random::hex(6).unwrap_or_else(|_| "0".into())
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ids_sort_by_time_and_parse_back() {
        let a = new_id(1_795_000_000_000).unwrap();
        let b = new_id(1_795_000_060_000).unwrap();
        assert!(a < b);
        assert_eq!(id_time(&a), Some(1_795_000_000_000));
        assert_eq!(id_time("nonsense"), None);
    }

    #[test]
    fn retention_keeps_daily_weekly_monthly() {
        const DAY: i64 = 86_400_000;
        let start = 1_790_000_000_000i64;
        // One backup a day for 400 days, two on the last day.
        let mut ids: Vec<String> = (0..400).map(|d| new_id(start + d * DAY).unwrap()).collect();
        ids.push(new_id(start + 399 * DAY + 3_600_000).unwrap());
        let gone = expired(&ids, 7, 4, 6);
        let kept: Vec<&String> = ids.iter().filter(|i| !gone.contains(i)).collect();
        // 7 days + up to 4 weeks + up to 6 months, overlapping: between 7 and 17.
        assert!(kept.len() >= 7 && kept.len() <= 17, "{}", kept.len());
        let newest = ids.last().unwrap();
        assert!(kept.contains(&newest), "the newest is always kept");
        assert!(
            gone.contains(&ids[399]),
            "an older one of the same day goes"
        );
        let oldest_kept = kept.iter().filter_map(|i| id_time(i)).min().unwrap();
        assert!(
            start + 399 * DAY - oldest_kept >= 120 * DAY,
            "months reach back"
        );
        assert!(expired(&ids[..3], 7, 4, 6).is_empty());
    }
}
