//! File contents as plain files in `<data-dir>/blobs/`, named by upload id.
//!
//! Names never come from user input: an upload id is a UUID this server generated, and
//! any id that does not parse as a UUID is refused before it touches a path.

use std::path::{Path, PathBuf};

const TEMP_SUFFIX: &str = ".part";

#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
}

impl BlobStore {
    /// Opens (creates) the directory (0700), removes temp files left by an interrupted
    /// upload and makes blobs of older versions (0644) private.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        crate::private_files::ensure_dir(dir)?;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().ends_with(TEMP_SUFFIX) {
                let _ = std::fs::remove_file(entry.path());
            } else if entry.file_type()?.is_file() {
                crate::private_files::fix_file(&entry.path())?;
            }
        }
        Ok(BlobStore {
            dir: dir.to_path_buf(),
        })
    }

    /// Path of the blob of `upload_id`, or `None` for an id that is not a UUID.
    pub fn path(&self, upload_id: &str) -> Option<PathBuf> {
        let id = uuid::Uuid::try_parse(upload_id).ok()?;
        // Re-format instead of reusing the input: the path holds only hex and dashes.
        Some(self.dir.join(id.hyphenated().to_string()))
    }

    /// A fresh temp path for an upload in progress (same directory, so the final rename is
    /// atomic).
    pub fn temp_path(&self) -> PathBuf {
        self.dir
            .join(format!("upload-{}{TEMP_SUFFIX}", uuid::Uuid::new_v4()))
    }

    /// Moves a finished temp file into place as the blob of `upload_id`.
    pub async fn commit(&self, temp: &Path, upload_id: &str) -> std::io::Result<PathBuf> {
        let dest = self.path(upload_id).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "upload id is not a UUID")
        })?;
        tokio::fs::rename(temp, &dest).await?;
        Ok(dest)
    }

    /// Removes the blob of `upload_id`; a missing blob is not an error.
    pub async fn remove(&self, upload_id: &str) -> std::io::Result<()> {
        let Some(path) = self.path(upload_id) else {
            return Ok(());
        };
        match tokio::fs::remove_file(path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Creates a temp file for an upload: new (never an existing file or link), mode 0600.
pub async fn create_temp(path: &Path) -> std::io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .await
}

/// Deletes a temp file when dropped unless [`TempGuard::disarm`] was called: an upload that
/// fails, or whose client goes away (the handler future is dropped), leaves nothing behind.
pub struct TempGuard {
    path: Option<PathBuf>,
}

impl TempGuard {
    pub fn new(path: PathBuf) -> Self {
        TempGuard { path: Some(path) }
    }

    pub fn disarm(&mut self) {
        self.path = None;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_only_for_uuids() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        assert!(store.path("../../etc/passwd").is_none());
        assert!(store.path("").is_none());
        let id = uuid::Uuid::new_v4().to_string();
        assert_eq!(store.path(&id).unwrap(), dir.path().join(&id));
        // Other spellings of a UUID map to the canonical name.
        let upper = id.to_uppercase();
        assert_eq!(store.path(&upper).unwrap(), dir.path().join(&id));
    }

    #[test]
    fn open_removes_stale_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join("upload-x.part");
        std::fs::write(&stale, b"partial").unwrap();
        let keep = dir.path().join(uuid::Uuid::new_v4().to_string());
        std::fs::write(&keep, b"blob").unwrap();
        BlobStore::open(dir.path()).unwrap();
        assert!(!stale.exists());
        assert!(keep.exists());
    }
}
