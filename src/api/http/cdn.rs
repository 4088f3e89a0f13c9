//! Range reads of signed (CDN) URLs.
//!
//! No `Authorization` header: the signature is the credential, and a CDN may reject both.
//! What is held is bounded by the length asked for, whatever the CDN sends: a 200 that
//! ignored `Range` is skipped through as a stream, and at most `len` bytes are kept.
//!
//! The body is copied once, out of the HTTP stream into pieces of the size the caller
//! asks for (the read path's blocks), each its own allocation: the block cache can then
//! free blocks one by one without copying them out of one large buffer first.

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
    /// [`MediaClient::read_range_pieces`](crate::api::MediaClient::read_range_pieces):
    /// ranged GETs of a signed URL until `len` bytes or the end of the file, in pieces of
    /// `piece` bytes.
    pub(super) async fn read_signed(
        &self,
        url: &str,
        offset: u64,
        len: u64,
        piece: u64,
    ) -> ApiResult<Vec<Bytes>> {
        if len == 0 {
            return Ok(Vec::new());
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
            let mut out = Pieces::new(piece, len);
            // A server may answer fewer bytes than asked (capped ranges): ask again for the rest.
            loop {
                let at = offset + out.len();
                let want = len - out.len();
                let (part, eof) = retry::run(&self.policy, &label, |_| {
                    self.read_once(&parsed, &label, at, want, piece)
                })
                .await?;
                if out.len() == 0 && (eof || part.len() == want) {
                    return Ok(part.finish());
                }
                // Rare (a capped range): the parts are copied into one run of pieces.
                let empty = part.len() == 0;
                for p in part.finish() {
                    out.push(&p);
                }
                if eof || empty || out.len() >= len {
                    return Ok(out.finish());
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
        piece: u64,
    ) -> Result<(Pieces, bool), Failure> {
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
                let bytes = read_body(resp, 0, len, piece, &what).await?;
                if let Some(n) = expected {
                    if bytes.len() < n {
                        return Err(truncated(&what, bytes.len(), n));
                    }
                }
                Ok((bytes, eof))
            }
            StatusCode::OK => {
                // The CDN ignored Range: skip to `offset` in the stream, never holding more
                // than `len` bytes.
                let total = resp.content_length();
                let bytes = read_body(resp, offset, len, piece, &what).await?;
                let got = bytes.len();
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
            StatusCode::RANGE_NOT_SATISFIABLE => Ok((Pieces::new(piece, 0), true)),
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

/// Bytes in pieces of a fixed size (the last may be shorter), each its own allocation.
pub(super) struct Pieces {
    piece: usize,
    /// Bytes still expected after `cur`: bounds the last allocation.
    left: u64,
    done: Vec<Bytes>,
    cur: BytesMut,
    len: u64,
}

impl Pieces {
    /// Room for up to `total` bytes, allocated one piece at a time as bytes arrive.
    pub(super) fn new(piece: u64, total: u64) -> Self {
        Pieces {
            piece: usize::try_from(piece.max(1)).unwrap_or(usize::MAX),
            left: total,
            done: Vec::new(),
            cur: BytesMut::new(),
            len: 0,
        }
    }

    pub(super) fn len(&self) -> u64 {
        self.len
    }

    pub(super) fn push(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.cur.capacity() == 0 {
                // A new piece, no larger than what is still expected.
                let size = (self.piece as u64).min(self.left).max(1);
                self.cur = BytesMut::with_capacity(usize::try_from(size).unwrap_or(self.piece));
                self.left = self.left.saturating_sub(size);
            }
            // Grows the piece if more arrives than expected (never splits it early).
            let n = (self.piece - self.cur.len()).min(data.len());
            self.cur.extend_from_slice(&data[..n]);
            self.len += n as u64;
            data = &data[n..];
            if self.cur.len() == self.piece {
                self.done.push(std::mem::take(&mut self.cur).freeze());
            }
        }
    }

    pub(super) fn finish(mut self) -> Vec<Bytes> {
        if !self.cur.is_empty() {
            self.done.push(self.cur.freeze());
        }
        self.done
    }
}

/// Reads a response body, discarding the first `skip` bytes and keeping at most `take`, in
/// pieces of `piece` bytes.
async fn read_body(
    resp: reqwest::Response,
    skip: u64,
    take: u64,
    piece: u64,
    what: &str,
) -> Result<Pieces, Failure> {
    let mut out = Pieces::new(piece, take);
    let mut to_skip = skip;
    let mut stream = resp.bytes_stream();
    while out.len() < take {
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
        let room = take - out.len();
        let n = (chunk.len() as u64).min(room) as usize;
        out.push(&chunk[..n]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::Pieces;

    #[test]
    fn pieces_split_at_fixed_offsets_whatever_the_chunks() {
        let data: Vec<u8> = (0..100u8).collect();
        for chunk in [1, 3, 7, 10, 64, 100] {
            let mut p = Pieces::new(10, 95);
            for c in data[..95].chunks(chunk) {
                p.push(c);
            }
            assert_eq!(p.len(), 95);
            let got = p.finish();
            assert_eq!(got.len(), 10, "chunk {chunk}");
            assert!(got[..9].iter().all(|b| b.len() == 10));
            assert_eq!(got[9].len(), 5);
            assert_eq!(got.concat(), &data[..95]);
        }
        let mut p = Pieces::new(10, 4);
        p.push(&data[..4]);
        assert_eq!(p.finish().concat(), &data[..4]);
        assert!(Pieces::new(10, 0).finish().is_empty());
    }
}
