//! Create File over HTTP: one attempt streams the body of [`crate::api::upload`] from the
//! local file, watched by a stall detector (reqwest's read timeout would also bound the
//! time to send the whole body).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header;
use tracing::Instrument;

use super::response::{decode, read_capped, status_failure, transport_failure, Idempotency};
use super::HttpClient;
use crate::api::error::{ApiError, ApiErrorKind};
use crate::api::retry::Failure;
use crate::api::types::{DataEnvelope, MediaFile, NewFile};
use crate::api::upload;

impl HttpClient {
    /// Create File, one attempt: the body streams from `content`, re-opened per attempt.
    pub(super) async fn upload_once(
        &self,
        meta: &NewFile,
        content: &Path,
        what: &str,
        attempt: u32,
    ) -> Result<MediaFile, Failure> {
        let span = tracing::debug_span!("api", method = "POST", path = "/files", attempt);
        async {
            let progress = Arc::new(upload::Progress::default());
            let (body, length) = upload::file_body(meta, content, progress.clone()).await?;
            let mut req = self
                .upload_client
                .post(self.url(&["files"]))
                .header(header::AUTHORIZATION, self.auth.clone())
                .header(header::ACCEPT, "application/json")
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CONTENT_LENGTH, length)
                .body(body);
            if let Some(t) = self.config.upload_timeout {
                req = req.timeout(t);
            }
            let send = req.send();
            tokio::pin!(send);
            let idle_limit = self.config.read_timeout;
            // After the last byte the service decodes and stores the file before answering:
            // allow one second per 8 MiB on top of the idle limit.
            let answer_limit = idle_limit + Duration::from_secs(length / (8 << 20));
            let first_limit = idle_limit + self.config.connect_timeout;
            let tick = (idle_limit / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
            let resp = loop {
                tokio::select! {
                    r = &mut send => break r
                        .map_err(|e| transport_failure(e, what, Idempotency::NotIdempotent, false))?,
                    _ = tokio::time::sleep(tick) => {
                        let limit = if progress.is_done() {
                            answer_limit
                        } else if progress.sent() == 0 {
                            first_limit
                        } else {
                            idle_limit
                        };
                        if progress.idle() > limit {
                            return Err(Failure::ambiguous(ApiError::new(
                                ApiErrorKind::Transport,
                                format!(
                                    "{what}: stalled for {:?} after {} of {length} bytes \
                                     (the upload may or may not have been applied; not retried)",
                                    progress.idle(),
                                    progress.sent()
                                ),
                            )));
                        }
                    }
                }
            };
            let status = resp.status();
            tracing::debug!(status = status.as_u16(), bytes = length, "response");
            if !status.is_success() {
                return Err(status_failure(
                    resp,
                    what,
                    Idempotency::NotIdempotent,
                    self.config.read_timeout,
                )
                .await);
            }
            let read = read_capped(
                resp,
                self.config.max_response_bytes,
                what,
                Idempotency::NotIdempotent,
            );
            let body = tokio::time::timeout(self.config.read_timeout, read)
                .await
                .map_err(|_| {
                    Failure::ambiguous(ApiError::new(
                        ApiErrorKind::Transport,
                        format!("{what}: timed out reading the answer"),
                    ))
                })??;
            decode::<DataEnvelope<MediaFile>>(&body, what).map(|e| e.data)
        }
        .instrument(span)
        .await
    }
}
