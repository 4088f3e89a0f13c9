//! Range reads of signed (CDN) URLs.
//!
//! No `Authorization` header: the signature is the credential, and a CDN may reject both.
//! What is held is bounded by the length asked for, whatever the CDN sends: a 200 that
//! ignored `Range` is skipped through as a stream, and at most `len` bytes are kept.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use reqwest::header;
use reqwest::{StatusCode, Url};
use tracing::Instrument;

use super::response::{origin, status_failure, transport_failure, Idempotency};
use super::HttpClient;
use crate::api::error::{scrub, ApiError, ApiErrorKind, ApiResult};
use crate::api::retry::{self, Failure};

impl HttpClient {
    /// [`MediaClient::read_range`](crate::api::MediaClient::read_range): ranged GETs of a
    /// signed URL until `len` bytes or the end of the file.
    pub(super) async fn read_signed(&self, url: &str, offset: u64, len: u64) -> ApiResult<Bytes> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let parsed = Url::parse(url).map_err(|e| {
            ApiError::new(
                ApiErrorKind::InvalidInput,
                format!("invalid signed URL {}: {e}", scrub(url)),
            )
        })?;
        // Host and path only: the query holds the signature.
        let label = format!("{}{}", origin(&parsed), parsed.path());
        let span = tracing::debug_span!("cdn", url = %label, offset, len);
        async {
            let mut out = BytesMut::new();
            // A server may answer fewer bytes than asked (capped ranges): ask again for the rest.
            loop {
                let at = offset + out.len() as u64;
                let want = len - out.len() as u64;
                let (bytes, eof) = retry::run(&self.policy, &label, |_| {
                    self.read_once(&parsed, &label, at, want)
                })
                .await?;
                if out.is_empty() && (eof || bytes.len() as u64 == want) {
                    return Ok(bytes);
                }
                let empty = bytes.is_empty();
                out.extend_from_slice(&bytes);
                if eof || empty || out.len() as u64 >= len {
                    return Ok(out.freeze());
                }
            }
        }
        .instrument(span)
        .await
    }

    /// One ranged GET of a signed URL. Returns the bytes and whether the end of the file was
    /// reached.
    async fn read_once(
        &self,
        url: &Url,
        label: &str,
        offset: u64,
        len: u64,
    ) -> Result<(Bytes, bool), Failure> {
        let what = format!("GET {label}");
        let end = offset.saturating_add(len - 1);
        // No Authorization: the signature is the credential, and a CDN may reject both.
        let resp = self
            .client
            .get(url.clone())
            .header(header::RANGE, format!("bytes={offset}-{end}"))
            .send()
            .await
            .map_err(|e| transport_failure(e, &what, Idempotency::Idempotent, false))?;
        let status = resp.status();
        tracing::debug!(status = status.as_u16(), offset, len, "cdn response");
        match status {
            StatusCode::PARTIAL_CONTENT => {
                let range = resp
                    .headers()
                    .get(header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_content_range);
                let (expected, eof) = match range {
                    Some((a, b, total)) => {
                        if a != offset || b < a {
                            return Err(Failure::new(ApiError::new(
                                ApiErrorKind::Transport,
                                format!("{what}: asked for bytes from {offset}, got {a}-{b}"),
                            )));
                        }
                        let n = (b - a + 1).min(len);
                        (Some(n), total.is_some_and(|t| b + 1 >= t))
                    }
                    None => (resp.content_length().map(|n| n.min(len)), false),
                };
                let bytes = read_body(resp, 0, len, &what).await?;
                if let Some(n) = expected {
                    if (bytes.len() as u64) < n {
                        return Err(truncated(&what, bytes.len() as u64, n));
                    }
                }
                Ok((bytes, eof))
            }
            StatusCode::OK => {
                // The CDN ignored Range: skip to `offset` in the stream, never holding more
                // than `len` bytes.
                let total = resp.content_length();
                let bytes = read_body(resp, offset, len, &what).await?;
                let got = bytes.len() as u64;
                if got < len {
                    if let Some(total) = total {
                        let expected = total.saturating_sub(offset).min(len);
                        if got < expected {
                            return Err(truncated(&what, got, expected));
                        }
                    }
                }
                // The body ended (without error) before `len` bytes: end of file.
                Ok((bytes, got < len))
            }
            StatusCode::RANGE_NOT_SATISFIABLE => Ok((Bytes::new(), true)),
            StatusCode::FORBIDDEN => Err(Failure::new(
                ApiError::new(
                    ApiErrorKind::UrlExpired,
                    format!("{what}: signed URL rejected (expired or altered)"),
                )
                .with_status(403),
            )),
            _ => Err(status_failure(
                resp,
                &what,
                Idempotency::Idempotent,
                self.config.read_timeout,
            )
            .await),
        }
    }
}

/// `Content-Range: bytes a-b/total` (total may be `*`).
pub(super) fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?, total))
}

fn truncated(what: &str, got: u64, expected: u64) -> Failure {
    Failure::new(ApiError::new(
        ApiErrorKind::Transport,
        format!("{what}: body truncated after {got} of {expected} bytes"),
    ))
}

/// Reads a response body, discarding the first `skip` bytes and keeping at most `take`.
async fn read_body(
    resp: reqwest::Response,
    skip: u64,
    take: u64,
    what: &str,
) -> Result<Bytes, Failure> {
    let mut out = BytesMut::with_capacity(usize::try_from(take.min(16 << 20)).unwrap_or(0));
    let mut to_skip = skip;
    let mut stream = resp.bytes_stream();
    while (out.len() as u64) < take {
        let Some(chunk) = stream.next().await else {
            break;
        };
        let mut chunk =
            chunk.map_err(|e| transport_failure(e, what, Idempotency::Idempotent, true))?;
        if to_skip > 0 {
            let n = to_skip.min(chunk.len() as u64);
            let _ = chunk.split_to(n as usize);
            to_skip -= n;
        }
        let room = take - out.len() as u64;
        let n = (chunk.len() as u64).min(room) as usize;
        out.extend_from_slice(&chunk[..n]);
    }
    Ok(out.freeze())
}
