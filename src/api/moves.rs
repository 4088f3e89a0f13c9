//! Detecting a service that ignores moves.
//!
//! Update File / Update Folder with a new `folderId` / `parentId` is assumed, not
//! documented, to move the object. A service may answer 200 and leave it where it was. The
//! client then fails the call with [`ApiErrorKind::MoveIgnored`] (`EXDEV`), which makes `mv`
//! fall back to copying and deleting, so nothing is lost and the move still happens.

use std::sync::atomic::{AtomicBool, Ordering};

use super::error::{ApiError, ApiErrorKind, ApiResult};
use super::types::{FileUpdate, Folder, FolderUpdate, MediaFile};
use super::MediaClient;

static LOGGED: AtomicBool = AtomicBool::new(false);

fn ignored(what: &str) -> ApiError {
    if !LOGGED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "the service ignores moves (Update {what} answered without moving): moves across \
             folders fail with EXDEV, and mv falls back to copy + delete"
        );
    }
    ApiError::new(
        ApiErrorKind::MoveIgnored,
        format!("the service did not move the {what}"),
    )
}

/// `answer` of Update File, or `MoveIgnored` when a move was asked and did not happen
/// (read back once: an answer may leave `folderId` out).
pub async fn check_file<C: MediaClient + ?Sized>(
    client: &C,
    id: &str,
    update: &FileUpdate,
    answer: MediaFile,
) -> ApiResult<MediaFile> {
    let Some(want) = &update.folder_id else {
        return Ok(answer);
    };
    if &answer.folder_id == want {
        return Ok(answer);
    }
    let now = client.get_file(id).await?;
    if &now.folder_id == want {
        Ok(now)
    } else {
        Err(ignored("file"))
    }
}

/// Like [`check_file`], for Update Folder.
pub async fn check_folder<C: MediaClient + ?Sized>(
    client: &C,
    id: &str,
    update: &FolderUpdate,
    answer: Folder,
) -> ApiResult<Folder> {
    let Some(want) = &update.parent_id else {
        return Ok(answer);
    };
    if &answer.parent_id == want {
        return Ok(answer);
    }
    let now = client.get_folder(id).await?;
    if &now.parent_id == want {
        Ok(now)
    } else {
        Err(ignored("folder"))
    }
}
