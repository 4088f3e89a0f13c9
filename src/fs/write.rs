//! The write path: staging files, uploads on commit, the pending area and crash recovery.
//!
//! Every file opened for writing is a local file under `<cache_dir>/staging/<uuid>.data`
//! with a JSON sidecar `<uuid>.json` naming the upload target. All writes, reads-back and
//! truncations work on that file; nothing is held in memory. [`Uploader::commit`] (called on
//! flush, fsync and close) uploads it with one streaming Create File call, then deletes the
//! remote file it replaces: the old copy goes only after the new one exists.
//!
//! An upload that fails (after bounded retries) moves to `<cache_dir>/pending/`, where a
//! background task retries it until it lands:
//!
//! - transient failures (5xx, 429, transport, as [`crate::api::ApiError::is_transient`]
//!   decides): the shared [`crate::api::retry::RetryPolicy`] from `upload_retry_for / 12`
//!   (5 s by default) doubling up to `upload_retry_for` (60 s);
//! - everything else (413 too large, 400/422 rejected, 404 parent folder gone, 401/403):
//!   another attempt only every `10 × upload_retry_for` (10 min by default), so a file the
//!   service will never take does not hammer it, yet a cause fixed remotely (a larger
//!   limit, a renewed permission) still lets it land without a remount. The data stays in
//!   the pending directory either way, and the user can copy it out from there.
//!
//! After a crash, [`Uploader::recover`] on the next mount moves every staging file that has
//! a sidecar to the pending area and retries it with the rest: a file that was being written
//! when the daemon died lands with whatever had been written to it by then. A sidecar says
//! `"synced": true` when its data equals the remote file (`replaces`), so a file opened for
//! writing but not changed, or already uploaded, is not uploaded again.
//!
//! Known limit: Create File is not idempotent. When an upload fails ambiguously (the
//! connection broke after the request was sent), the service may have stored it; the retry
//! then leaves a second copy, shown as `name~<id>` by the namespace rule for duplicates.
//! Nothing is lost, at worst something is doubled.
//!
//! The API is small: [`Uploader::stage_new`] / [`Uploader::stage_existing`] stage, the
//! [`StagedFile`] takes writes, [`Uploader::commit`] uploads, [`Uploader::release`] hands a
//! staged file back when its user is done (explicitly: no `Drop` does I/O),
//! [`Uploader::pending`] and [`Uploader::recover`] cover the pending area. `staging` knows
//! nothing of `uploader`; uploads landing later are announced as [`Landed`] messages.
//!
//! Two daemons never share a cache dir: the [`Uploader`] holds `flock` on
//! `<cache_dir>/lock` for its lifetime.

mod backoff;
mod create;
pub mod deletes;
mod failure;
mod lost;
mod recovery;
mod staging;
pub mod uploader;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::api::MediaFile;
use crate::fs::entry::FileEntry;

pub use deletes::Deletes;
pub use staging::StagedFile;
pub use uploader::{Landed, Uploader};

/// Settings of the write path.
#[derive(Debug, Clone)]
pub struct WriteConfig {
    /// Root of the local cache of one library: `staging/`, `pending/` and `lock` live here.
    pub cache_dir: PathBuf,
    /// How long a commit keeps retrying transient upload failures before it reports the
    /// error (the data then waits in the pending area). Also scales the background retry
    /// intervals (see the module docs).
    pub upload_retry_for: Duration,
    /// Default wait for uploads in progress at unmount.
    pub shutdown_timeout: Duration,
    /// How long the upload of a new file with a temporary name ([`crate::fs::tempname`])
    /// is held back after close, waiting for the rename that gives it its final name.
    /// Zero: never held.
    pub temp_upload_delay: Duration,
}

impl WriteConfig {
    /// Defaults: retry uploads for 60 s, wait 30 s at unmount, hold temp files 5 s.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        WriteConfig {
            cache_dir: cache_dir.into(),
            upload_retry_for: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(30),
            temp_upload_delay: Duration::from_secs(5),
        }
    }
}

/// Metadata carried over from a replaced remote file to its new version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Carry {
    pub description: Option<String>,
    pub alt_text: Option<String>,
    pub is_favorite: Option<bool>,
    pub is_private: Option<bool>,
    pub sort_order: Option<i64>,
}

impl Carry {
    pub fn from_file(f: &MediaFile) -> Carry {
        Carry {
            description: f.description.clone(),
            alt_text: f.alt_text.clone(),
            is_favorite: f.is_favorite,
            is_private: f.is_private,
            sort_order: f.sort_order,
        }
    }

    pub fn from_entry(f: &FileEntry) -> Carry {
        Carry {
            description: f.description.clone(),
            alt_text: f.alt_text.clone(),
            is_favorite: f.is_favorite,
            is_private: f.is_private,
            sort_order: f.sort_order,
        }
    }
}

/// Where a staged file goes when it is committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadTarget {
    /// `None`: the library root.
    pub parent_folder_id: Option<String>,
    /// The remote name: `title` and `fileName` of the new file.
    pub name: String,
    /// Id of the remote file this one overwrites; deleted once the new one exists. After a
    /// successful commit this is the id of the file just created, so the next commit of the
    /// same staged file replaces it in turn.
    pub replaces: Option<String>,
    pub carry: Carry,
}

/// An upload that has not landed yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingInfo {
    pub name: String,
    pub size: u64,
    /// The local copy of the data (the user can rescue it from here).
    pub data_path: PathBuf,
    pub last_error: Option<String>,
}
