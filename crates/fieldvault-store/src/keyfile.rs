//! Files in the data directory that hold key material, and the rules for them.
//!
//! A key file is created with mode 0600 and written with `create_new`, so an existing key is
//! never overwritten; one that group or others can read is refused, with the `chmod` that fixes it.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use crate::StoreError;

/// Reads a secret file, refusing one that is readable by group or others.
pub fn read_private(path: &Path) -> Result<zeroize::Zeroizing<String>, StoreError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| StoreError::Setup(format!("cannot read {}: {e}", path.display())))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(StoreError::Setup(format!(
            "{} is readable by other users (mode {mode:o}); run `chmod 600 {}` and start again",
            path.display(),
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| StoreError::Setup(format!("cannot read {}: {e}", path.display())))?;
    Ok(zeroize::Zeroizing::new(text))
}

/// Creates a new file with mode 0600 holding `contents`, fsync'd with its directory. Fails if the
/// file already exists.
pub fn write_private_new(path: &Path, contents: &[u8]) -> Result<(), StoreError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| StoreError::Setup(format!("cannot create {}: {e}", path.display())))?;
    f.write_all(contents)
        .and_then(|()| f.sync_all())
        .map_err(|e| StoreError::Setup(format!("cannot write {}: {e}", path.display())))?;
    sync_dir(path)
}

/// Atomically replaces `path` with `contents` (write a 0600 temporary, fsync, rename, fsync dir).
pub fn replace_private(path: &Path, contents: &[u8]) -> Result<(), StoreError> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    write_private_new(&tmp, contents)?;
    std::fs::rename(&tmp, path)
        .map_err(|e| StoreError::Setup(format!("cannot replace {}: {e}", path.display())))?;
    sync_dir(path)
}

/// Fsyncs the directory holding `path`, so a create or rename survives a crash.
pub fn sync_dir(path: &Path) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::Setup(format!("cannot sync {}: {e}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        write_private_new(&p, b"secret").unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read_private(&p).unwrap().as_str(), "secret");
        assert!(write_private_new(&p, b"other").is_err(), "never overwrites");
        replace_private(&p, b"new").unwrap();
        assert_eq!(read_private(&p).unwrap().as_str(), "new");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_private(&p).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }
}
