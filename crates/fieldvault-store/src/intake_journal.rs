//! The intake journal (M11): where accepted submissions wait while the database cannot take them.
//!
//! One file per submission, `<data_dir>/intake-journal/<seq>.fvj`, named by a 20-digit sequence
//! number so the directory lists in arrival order. Each file is sealed with AES-256-GCM under a
//! key derived from the master key ([`fieldvault_crypto::MasterKey::purpose_key`]), with the
//! sequence number as associated data, so entries cannot be read without the master key nor
//! reordered or swapped unnoticed. The submission's XML inside is already sealed under its
//! project's data key; attachments are not copied here, they are already in the blob store.
//!
//! Durability: a batch is written to temporary files, each fsync'd, renamed into place, and the
//! directory fsync'd once, before [`IntakeJournal::append`] returns. A crash leaves either the
//! whole entry or a temporary file that the next open deletes. Size is bounded
//! ([`JournalError::Full`] past `max_bytes`), so a long outage cannot fill the disk.
//!
//! Replay is the caller's job (it needs the store): read the oldest entries with
//! [`IntakeJournal::oldest`], store them, then [`IntakeJournal::remove`] each. A crash between
//! the two stores an entry twice, which intake's idempotence by instanceID turns into a duplicate.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use fieldvault_crypto::Key256;
use serde::{Deserialize, Serialize};

use crate::{NewSubmission, ReceivedAttachment};

/// Directory name under the data directory.
pub const DIR: &str = "intake-journal";
/// Purpose label of the journal key.
pub const KEY_PURPOSE: &[u8] = b"intake-journal v1";
const EXT: &str = "fvj";
/// Largest entry accepted when reading (a submission's XML is at most 10 MiB plus metadata).
const MAX_ENTRY_BYTES: u64 = 64 * 1024 * 1024;

/// What the journal can report.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Accepting the batch would pass the configured size bound.
    #[error("the intake journal is full ({used} of {max} bytes used)")]
    Full {
        /// Bytes held now.
        used: u64,
        /// The bound.
        max: u64,
    },
    /// The file system refused.
    #[error("intake journal I/O: {0}")]
    Io(String),
    /// An entry does not open with this key or is not in the known format.
    #[error("intake journal entry {seq} is damaged: {reason}")]
    Corrupt {
        /// Its sequence number.
        seq: u64,
        /// Why.
        reason: String,
    },
}

impl From<std::io::Error> for JournalError {
    fn from(e: std::io::Error) -> Self {
        JournalError::Io(e.to_string())
    }
}

/// Everything of a [`NewSubmission`] but the sealed XML, which follows it raw.
#[derive(Serialize, Deserialize)]
struct Header {
    project_id: i64,
    form_id: i64,
    form_def_id: i64,
    form_version: String,
    instance_id: String,
    deprecated_id: Option<String>,
    instance_name: Option<String>,
    xml_sha256: String,
    xml_size: i64,
    encrypted: bool,
    submitter_user_id: Option<i64>,
    submitter_app_user_id: Option<i64>,
    device_id: Option<String>,
    expected_attachments: Vec<String>,
    attachments: Vec<Attachment>,
    journaled_at: i64,
    /// Absent in entries written before it existed: not checked.
    #[serde(default)]
    fits_form: Option<bool>,
}

#[derive(Serialize, Deserialize)]
struct Attachment {
    name: String,
    content_type: Option<String>,
    blob_name: String,
    size: i64,
    sha256: String,
}

fn encode(s: &NewSubmission) -> Result<Vec<u8>, JournalError> {
    let h = Header {
        project_id: s.project_id,
        form_id: s.form_id,
        form_def_id: s.form_def_id,
        form_version: s.form_version.clone(),
        instance_id: s.instance_id.clone(),
        deprecated_id: s.deprecated_id.clone(),
        instance_name: s.instance_name.clone(),
        xml_sha256: b64(&s.xml_sha256),
        xml_size: s.xml_size,
        encrypted: s.encrypted,
        submitter_user_id: s.submitter_user_id,
        submitter_app_user_id: s.submitter_app_user_id,
        device_id: s.device_id.clone(),
        expected_attachments: s.expected_attachments.clone(),
        attachments: s
            .attachments
            .iter()
            .map(|a| Attachment {
                name: a.name.clone(),
                content_type: a.content_type.clone(),
                blob_name: a.blob_name.clone(),
                size: a.size,
                sha256: b64(&a.sha256),
            })
            .collect(),
        journaled_at: crate::now_ms(),
        fits_form: s.fits_form,
    };
    let json = serde_json::to_vec(&h).map_err(|e| JournalError::Io(e.to_string()))?;
    let len = u32::try_from(json.len()).map_err(|_| JournalError::Io("header too large".into()))?;
    let mut out = Vec::with_capacity(4 + json.len() + s.xml_sealed.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&s.xml_sealed);
    Ok(out)
}

fn decode(seq: u64, plain: &[u8]) -> Result<NewSubmission, JournalError> {
    let corrupt = |reason: &str| JournalError::Corrupt {
        seq,
        reason: reason.to_owned(),
    };
    let (len, rest) = plain.split_at_checked(4).ok_or_else(|| corrupt("short"))?;
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let (json, xml) = rest
        .split_at_checked(len)
        .ok_or_else(|| corrupt("short header"))?;
    let h: Header = serde_json::from_slice(json).map_err(|e| corrupt(&e.to_string()))?;
    let unhex = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|_| corrupt("bad base64"))
    };
    let mut attachments = Vec::with_capacity(h.attachments.len());
    for a in h.attachments {
        attachments.push(ReceivedAttachment {
            sha256: unhex(&a.sha256)?,
            name: a.name,
            content_type: a.content_type,
            blob_name: a.blob_name,
            size: a.size,
        });
    }
    Ok(NewSubmission {
        project_id: h.project_id,
        form_id: h.form_id,
        form_def_id: h.form_def_id,
        form_version: h.form_version,
        xml_sha256: unhex(&h.xml_sha256)?,
        instance_id: h.instance_id,
        deprecated_id: h.deprecated_id,
        instance_name: h.instance_name,
        xml_sealed: xml.to_vec(),
        xml_size: h.xml_size,
        encrypted: h.encrypted,
        submitter_user_id: h.submitter_user_id,
        submitter_app_user_id: h.submitter_app_user_id,
        device_id: h.device_id,
        expected_attachments: h.expected_attachments,
        attachments,
        fits_form: h.fits_form,
    })
}

fn b64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn aad(seq: u64) -> Vec<u8> {
    format!("intake-journal:{seq}").into_bytes()
}

#[derive(Default)]
struct State {
    next_seq: u64,
    /// Sequence number → file size.
    entries: BTreeMap<u64, u64>,
    bytes: u64,
}

/// The journal of one instance.
pub struct IntakeJournal {
    dir: PathBuf,
    key: Key256,
    max_bytes: u64,
    state: Mutex<State>,
}

impl std::fmt::Debug for IntakeJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IntakeJournal({})", self.dir.display())
    }
}

/// What a replayer reads.
pub struct JournalEntry {
    /// Sequence number (pass it to [`IntakeJournal::remove`]).
    pub seq: u64,
    /// The submission, or why it could not be read.
    pub submission: Result<NewSubmission, JournalError>,
}

impl IntakeJournal {
    /// Opens (creating, mode 0700) the journal in `dir`; deletes temporary files a crash left.
    pub fn open(dir: &Path, key: Key256, max_bytes: u64) -> Result<Self, JournalError> {
        std::fs::create_dir_all(dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let mut state = State::default();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                std::fs::remove_file(entry.path())?;
                continue;
            }
            let Some(seq) = name
                .strip_suffix(&format!(".{EXT}"))
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            let size = entry.metadata()?.len();
            state.entries.insert(seq, size);
            state.bytes += size;
        }
        state.next_seq = state.entries.keys().next_back().map_or(1, |s| s + 1);
        Ok(Self {
            dir: dir.to_path_buf(),
            key,
            max_bytes,
            state: Mutex::new(state),
        })
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.{EXT}"))
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>, JournalError> {
        self.state
            .lock()
            .map_err(|_| JournalError::Io("journal state poisoned".into()))
    }

    /// Entries waiting and their total size in bytes.
    pub fn pending(&self) -> (u64, u64) {
        self.state
            .lock()
            .map(|s| (s.entries.len() as u64, s.bytes))
            .unwrap_or((0, 0))
    }

    /// The configured bound in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Writes `batch` durably, in order. Blocking file I/O: call it from a blocking-safe context
    /// (the intake writer uses `spawn_blocking`). All or nothing as far as the caller can tell:
    /// on error no entry of the batch is left in the journal.
    pub fn append(&self, batch: &[NewSubmission]) -> Result<Vec<u64>, JournalError> {
        let mut sealed = Vec::with_capacity(batch.len());
        let mut total = 0u64;
        let first = {
            let mut st = self.lock()?;
            let mut encoded = Vec::with_capacity(batch.len());
            for s in batch {
                encoded.push(encode(s)?);
            }
            let add: u64 = encoded
                .iter()
                .map(|e| (e.len() + fieldvault_crypto::envelope::OVERHEAD) as u64)
                .sum();
            if st.bytes + add > self.max_bytes {
                return Err(JournalError::Full {
                    used: st.bytes,
                    max: self.max_bytes,
                });
            }
            let first = st.next_seq;
            st.next_seq += batch.len() as u64;
            for (i, e) in encoded.into_iter().enumerate() {
                let seq = first + i as u64;
                let s = fieldvault_crypto::envelope::seal(&self.key, &aad(seq), &e)
                    .map_err(|e| JournalError::Io(e.to_string()))?;
                total += s.len() as u64;
                sealed.push((seq, s));
            }
            // Reserve the space now so concurrent appenders cannot both pass the bound.
            st.bytes += total;
            first
        };
        let written = self.write_all(&sealed);
        let mut st = self.lock()?;
        match written {
            Ok(()) => {
                for (seq, s) in &sealed {
                    st.entries.insert(*seq, s.len() as u64);
                }
                Ok((first..first + batch.len() as u64).collect())
            }
            Err(e) => {
                st.bytes = st.bytes.saturating_sub(total);
                for (seq, _) in &sealed {
                    let _ = std::fs::remove_file(self.path(*seq));
                }
                Err(e)
            }
        }
    }

    fn write_all(&self, sealed: &[(u64, Vec<u8>)]) -> Result<(), JournalError> {
        let mut tmps = Vec::with_capacity(sealed.len());
        for (seq, bytes) in sealed {
            let tmp = self.dir.join(format!("{seq:020}.tmp"));
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            tmps.push((tmp, self.path(*seq)));
        }
        for (tmp, path) in &tmps {
            std::fs::rename(tmp, path)?;
        }
        std::fs::File::open(&self.dir)?.sync_all()?;
        Ok(())
    }

    /// Up to `n` of the oldest entries, decrypted, oldest first.
    pub fn oldest(&self, n: usize) -> Result<Vec<JournalEntry>, JournalError> {
        let seqs: Vec<u64> = self.lock()?.entries.keys().take(n).copied().collect();
        let mut out = Vec::with_capacity(seqs.len());
        for seq in seqs {
            out.push(JournalEntry {
                seq,
                submission: self.read(seq),
            });
        }
        Ok(out)
    }

    fn read(&self, seq: u64) -> Result<NewSubmission, JournalError> {
        let path = self.path(seq);
        let len = std::fs::metadata(&path)?.len();
        if len > MAX_ENTRY_BYTES {
            return Err(JournalError::Corrupt {
                seq,
                reason: format!("{len} bytes is larger than any entry"),
            });
        }
        let sealed = std::fs::read(&path)?;
        let plain = fieldvault_crypto::envelope::open(&self.key, &aad(seq), &sealed).map_err(|_| {
            JournalError::Corrupt {
                seq,
                reason: "does not open with the journal key (damaged, or written under another master key)".into(),
            }
        })?;
        decode(seq, &plain)
    }

    /// Deletes a replayed entry (durably: the directory is fsync'd).
    pub fn remove(&self, seqs: &[u64]) -> Result<(), JournalError> {
        for seq in seqs {
            match std::fs::remove_file(self.path(*seq)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        std::fs::File::open(&self.dir)?.sync_all()?;
        let mut st = self.lock()?;
        for seq in seqs {
            if let Some(size) = st.entries.remove(seq) {
                st.bytes = st.bytes.saturating_sub(size);
            }
        }
        Ok(())
    }

    /// Moves an entry that cannot be replayed to `<dir>/failed/` for an operator to inspect
    /// (it stays encrypted), so it no longer blocks the entries behind it.
    pub fn quarantine(&self, seq: u64) -> Result<PathBuf, JournalError> {
        let failed = self.dir.join("failed");
        std::fs::create_dir_all(&failed)?;
        let to = failed.join(format!("{seq:020}.{EXT}"));
        std::fs::rename(self.path(seq), &to)?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        let mut st = self.lock()?;
        if let Some(size) = st.entries.remove(&seq) {
            st.bytes = st.bytes.saturating_sub(size);
        }
        Ok(to)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sub(instance: &str, xml: &[u8]) -> NewSubmission {
        NewSubmission {
            project_id: 1,
            form_id: 2,
            form_def_id: 3,
            form_version: "v1".into(),
            instance_id: instance.into(),
            deprecated_id: None,
            instance_name: Some("n".into()),
            xml_sealed: xml.to_vec(),
            xml_sha256: vec![1, 2, 3],
            xml_size: 3,
            encrypted: false,
            submitter_user_id: Some(9),
            submitter_app_user_id: None,
            device_id: Some("collect:x".into()),
            expected_attachments: vec!["a.jpg".into()],
            attachments: vec![ReceivedAttachment {
                name: "a.jpg".into(),
                content_type: Some("image/jpeg".into()),
                blob_name: "p1/f2/abc".into(),
                size: 10,
                sha256: vec![7; 32],
            }],
            fits_form: Some(true),
        }
    }

    #[test]
    fn entries_survive_reopen_in_order_encrypted_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let key = Key256::from_bytes([5; 32]);
        let j = IntakeJournal::open(dir.path(), key.clone(), 10_000).unwrap();
        j.append(&[sub("uuid:a", b"secret-xml-a"), sub("uuid:b", b"xb")])
            .unwrap();
        j.append(&[sub("uuid:c", b"xc")]).unwrap();
        std::fs::write(dir.path().join("00000000000000000009.tmp"), b"half").unwrap();
        drop(j);
        for f in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(f.unwrap().path()).unwrap();
            assert!(!bytes.windows(12).any(|w| w == b"secret-xml-a"));
            assert!(!bytes.windows(6).any(|w| w == b"uuid:a"));
        }
        let j = IntakeJournal::open(dir.path(), key.clone(), 10_000).unwrap();
        assert!(!dir.path().join("00000000000000000009.tmp").exists());
        assert_eq!(j.pending().0, 3);
        let got = j.oldest(10).unwrap();
        let ids: Vec<String> = got
            .iter()
            .map(|e| e.submission.as_ref().unwrap().instance_id.clone())
            .collect();
        assert_eq!(ids, ["uuid:a", "uuid:b", "uuid:c"]);
        let a = got[0].submission.as_ref().unwrap();
        assert_eq!(a.xml_sealed, b"secret-xml-a");
        assert_eq!(a.attachments[0].sha256, vec![7; 32]);
        j.remove(&[got[0].seq]).unwrap();
        assert_eq!(j.pending().0, 2);
        // A new entry goes after the old ones even after reopening.
        let seqs = j.append(&[sub("uuid:d", b"xd")]).unwrap();
        assert!(seqs[0] > got[2].seq);
        // The bound refuses, and a refused batch leaves nothing.
        let big = sub("uuid:e", &vec![0u8; 20_000]);
        assert!(matches!(j.append(&[big]), Err(JournalError::Full { .. })));
        assert_eq!(j.pending().0, 3);
        // Another key cannot read the entries.
        let other = IntakeJournal::open(dir.path(), Key256::from_bytes([6; 32]), 10_000).unwrap();
        let e = other.oldest(1).unwrap();
        assert!(matches!(e[0].submission, Err(JournalError::Corrupt { .. })));
        other.quarantine(e[0].seq).unwrap();
        assert_eq!(other.pending().0, 2);
        assert!(dir.path().join("failed").read_dir().unwrap().count() == 1);
    }
}
