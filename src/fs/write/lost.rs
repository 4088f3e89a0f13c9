//! Lost answers: Create File is not idempotent, so after an upload that may have been
//! stored although its answer was lost, the target folder is searched for it (same name,
//! size and SHA-256) before uploading again.

use std::fs::File;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::UploadTarget;
use crate::api::{ApiError, ApiErrorKind, MediaClient, MediaFile, Parent};

/// A file in the target folder with the upload's name, size and bytes (SHA-256), other
/// than the one it replaces: an earlier attempt that landed although its answer was lost.
pub(super) async fn find_landed(
    client: &dyn MediaClient,
    target: &UploadTarget,
    data: &Path,
    size: u64,
) -> std::result::Result<Option<MediaFile>, ApiError> {
    let parent = Parent::from_id(target.parent_folder_id.as_deref());
    let mut candidates: Vec<MediaFile> = client
        .list_files(&parent)
        .await?
        .into_iter()
        .filter(|f| {
            f.title.as_deref() == Some(target.name.as_str())
                && f.upload
                    .as_ref()
                    .is_some_and(|u| u.file_name == target.name)
                && f.size() == size
                && target.replaces.as_deref() != Some(f.id.as_str())
        })
        .collect();
    if candidates.is_empty() {
        return Ok(None);
    }
    // Newest first: the lost upload is the latest of its kind.
    candidates.sort_by(|a, b| (&b.created_at, &b.id).cmp(&(&a.created_at, &a.id)));
    let path = data.to_path_buf();
    let local = tokio::task::spawn_blocking(move || sha256_file(&path))
        .await
        .map_err(|e| ApiError::new(ApiErrorKind::Local, format!("hashing task: {e}")))?
        .map_err(|e| ApiError::new(ApiErrorKind::Local, format!("hashing staged data: {e}")))?;
    for c in candidates {
        let fresh = client.get_file(&c.id).await?;
        if remote_sha256(client, &fresh).await? == Some(local) {
            return Ok(Some(fresh));
        }
    }
    Ok(None)
}

/// SHA-256 of a remote file's bytes, read in chunks; `None` if it has no URL or its
/// bytes end early.
async fn remote_sha256(
    client: &dyn MediaClient,
    file: &MediaFile,
) -> std::result::Result<Option<[u8; 32]>, ApiError> {
    const CHUNK: u64 = 4 << 20;
    let Some(url) = file.url() else {
        return Ok(None);
    };
    let mut hasher = Sha256::new();
    let mut offset = 0;
    while offset < file.size() {
        let bytes = client
            .read_range(url, offset, CHUNK.min(file.size() - offset))
            .await?;
        if bytes.is_empty() {
            return Ok(None);
        }
        hasher.update(&bytes);
        offset += bytes.len() as u64;
    }
    Ok(Some(hasher.finalize().into()))
}

fn sha256_file(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hasher.finalize().into())
}
