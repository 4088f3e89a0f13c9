//! What a failed upload tells the user: where the data is kept, and when it is retried.

use tracing::Level;

use super::backoff::next_delay;
use super::staging::Dirs;
use super::{UploadTarget, WriteConfig};
use crate::api::{ApiError, ApiErrorKind};
use crate::fs::error::Error;

/// The error a failed commit reports: where the data is kept and when it is retried.
pub(super) fn upload_error(
    dirs: &Dirs,
    config: &WriteConfig,
    target: &UploadTarget,
    size: u64,
    err: ApiError,
    kept: bool,
) -> Error {
    let name = &target.name;
    let dir = dirs.pending.display();
    let kept = if kept {
        format!("kept in {dir}")
    } else {
        format!("kept in {}", dirs.staging.display())
    };
    match err.kind {
        ApiErrorKind::TooLarge => {
            let every = next_delay(config, 0);
            tracing::error!(
                file = %name,
                size,
                "upload rejected as too large by the service (HTTP 413, {size} bytes \
                 over its size limit); {kept}, retried every {every:?}"
            );
            Error::api(
                format!("upload of {name:?} ({size} bytes) over the service's size limit; {kept}"),
                err,
            )
        }
        ApiErrorKind::NotFound => {
            let parent = target.parent_folder_id.as_deref().unwrap_or("(root)");
            tracing::error!(
                file = %name,
                "upload failed: the folder {parent} no longer exists; {kept}"
            );
            Error::api(
                format!("upload of {name:?}: folder {parent} not found; {kept}"),
                err,
            )
            .with_level(Level::WARN)
        }
        _ => Error::api(
            format!("upload of {name:?} ({size} bytes) failed; {kept}, retried in the background"),
            err,
        ),
    }
}
