//! The Media Manager client: a trait with one method per remote operation, so the
//! filesystem core can be tested without HTTP, and its HTTP implementation.
//!
//! - [`types`]: serde wire types (tolerant of unknown and missing fields);
//! - [`error`]: the one error type, the status → errno table and what is transient;
//! - [`filter`]: keeping one folder's objects out of a list answer;
//! - [`http`]: the reqwest implementation (paging, CDN reads, uploads);
//! - [`moves`]: detecting a service that ignores moves (EXDEV, so `mv` copies);
//! - [`retry`]: the backoff policy and the one retry loop;
//! - [`upload`]: the streaming JSON + base64 body of Create File;
//! - `mock`, `faulty` (tests only): an in-memory library, and a wrapper that injects
//!   failures into any client and counts its calls;
//! - `contract` (tests only): the behaviour the mock and the HTTP client with the embedded
//!   server must share, run against both.

#[cfg(test)]
mod contract;
pub mod error;
#[cfg(test)]
pub mod faulty;
pub mod filter;
pub mod http;
#[cfg(test)]
pub mod mock;
pub mod moves;
pub mod retry;
pub mod types;
pub mod upload;

use std::path::Path;

use async_trait::async_trait;
use bytes::Bytes;

pub use error::{ApiError, ApiErrorKind, ApiResult};
pub use http::{ClientConfig, HttpClient};
pub use types::{FileUpdate, Folder, FolderUpdate, MediaFile, NewFile, Parent, Upload};

/// The ten operations of the Media Manager API plus the byte read from a signed URL.
///
/// The HTTP implementation retries transient failures itself (bounded) before it returns an
/// error; callers that retry more (the upload queue) use [`retry::RetryPolicy`] and
/// [`ApiError::is_transient`], the same policy and the same notion of transient.
#[async_trait]
pub trait MediaClient: Send + Sync + 'static {
    /// Get Folders, all pages, children of `parent`.
    async fn list_folders(&self, parent: &Parent) -> ApiResult<Vec<Folder>>;
    /// Get Folder By ID.
    async fn get_folder(&self, id: &str) -> ApiResult<Folder>;
    /// Create Folder.
    async fn create_folder(&self, name: &str, parent_id: Option<&str>) -> ApiResult<Folder>;
    /// Update Folder (rename and/or move).
    async fn update_folder(&self, id: &str, update: &FolderUpdate) -> ApiResult<Folder>;
    /// Delete Folder; a non-empty folder gives [`ApiErrorKind::Conflict`].
    async fn delete_folder(&self, id: &str) -> ApiResult<()>;

    /// Get Files, all pages, files of `folder`.
    async fn list_files(&self, folder: &Parent) -> ApiResult<Vec<MediaFile>>;
    /// Get File By ID (comes with a fresh signed URL).
    async fn get_file(&self, id: &str) -> ApiResult<MediaFile>;
    /// Create File from the bytes of a local file, streamed (never held whole in memory).
    async fn create_file(&self, meta: &NewFile, content: &Path) -> ApiResult<MediaFile>;
    /// Update File (metadata, title, move).
    async fn update_file(&self, id: &str, update: &FileUpdate) -> ApiResult<MediaFile>;
    /// Delete File.
    async fn delete_file(&self, id: &str) -> ApiResult<()>;

    /// Reads `len` bytes at `offset` from a signed URL. Returns fewer bytes only at the end
    /// of the file. An expired or altered URL gives [`ApiErrorKind::UrlExpired`].
    async fn read_range(&self, url: &str, offset: u64, len: u64) -> ApiResult<Bytes>;

    /// Drops whatever listings the client itself keeps (SIGHUP). Wrappers forward it.
    fn forget_listings(&self) {}

    /// [`Self::read_range`] in pieces of `piece` bytes at fixed offsets from `offset` (the
    /// last may be shorter), each its own allocation, so a cache can free them one by one.
    /// The HTTP client fills the pieces straight from the response; this default copies.
    async fn read_range_pieces(
        &self,
        url: &str,
        offset: u64,
        len: u64,
        piece: u64,
    ) -> ApiResult<Vec<Bytes>> {
        let data = self.read_range(url, offset, len).await?;
        Ok(split_pieces(data, piece))
    }
}

/// `data` in pieces of `piece` bytes; one piece is handed on without a copy.
pub fn split_pieces(data: Bytes, piece: u64) -> Vec<Bytes> {
    let piece = usize::try_from(piece.max(1)).unwrap_or(usize::MAX);
    if data.is_empty() {
        Vec::new()
    } else if data.len() <= piece {
        vec![data]
    } else {
        data.chunks(piece).map(Bytes::copy_from_slice).collect()
    }
}
