//! One Create File of a staged file, repeated on transient failures within a time bound.

use std::path::Path;
use std::time::{Duration, Instant};

use super::backoff::quick_retries;
use super::lost;
use super::staging::mime_for;
use super::UploadTarget;
use crate::api::{ApiError, ApiErrorKind, MediaClient, MediaFile, NewFile};

/// One Create File, repeated on transient failures for at most `retry_for`.
///
/// Create File is not idempotent: after a failure that may have stored the file anyway
/// (`ambiguous`: transport error or 5xx), the parent folder is searched for it before
/// the next attempt, so a lost answer does not turn into a duplicate.
pub(super) async fn create_with_retry(
    client: &dyn MediaClient,
    target: &UploadTarget,
    meta: &NewFile,
    data: &Path,
    size: u64,
    retry_for: Duration,
    ambiguous: &mut bool,
) -> std::result::Result<MediaFile, ApiError> {
    let started = Instant::now();
    let policy = quick_retries(retry_for);
    let mut attempt = 0;
    loop {
        attempt += 1;
        if *ambiguous {
            match lost::find_landed(client, target, data, size).await {
                Ok(Some(f)) => {
                    tracing::info!(
                        file = %meta.file_name,
                        id = %f.id,
                        "an upload whose answer was lost had landed; not uploading again"
                    );
                    *ambiguous = false;
                    return Ok(f);
                }
                Ok(None) => *ambiguous = false,
                // Cannot tell (the service is unreachable, most likely): the attempt
                // below will say more; a duplicate is better than a loss.
                Err(e) => {
                    tracing::debug!(file = %meta.file_name, "looking for a lost upload: {e}")
                }
            }
        }
        let err = match client.create_file(meta, data).await {
            Ok(f) => {
                *ambiguous = false;
                return Ok(f);
            }
            Err(e) => e,
        };
        if matches!(err.kind, ApiErrorKind::Transport | ApiErrorKind::Server) {
            *ambiguous = true;
        }
        let delay = policy.delay(attempt, None);
        if !(err.is_transient() && started.elapsed() + delay <= retry_for) {
            return Err(err);
        }
        tracing::debug!(file = %meta.file_name, "upload failed, retrying: {err}");
        tokio::time::sleep(delay).await;
    }
}

pub(super) fn new_file(target: &UploadTarget) -> NewFile {
    let c = &target.carry;
    NewFile {
        file_name: target.name.clone(),
        mime_type: mime_for(&target.name),
        title: Some(target.name.clone()),
        description: c.description.clone(),
        alt_text: c.alt_text.clone(),
        is_private: c.is_private,
        folder_id: target.parent_folder_id.clone(),
        is_favorite: c.is_favorite,
        sort_order: c.sort_order,
    }
}
