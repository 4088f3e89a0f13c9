//! From an HTTP answer (or a failure to get one) to a value or a classified [`Failure`]:
//! status → error, transport errors, bounded body reads and JSON decoding.
//!
//! Whether a failure is retried is decided by [`ApiError::is_transient`]; this module only
//! adds what HTTP knows beyond the error itself: whether a non-idempotent request may
//! already have been applied ([`Failure::ambiguous`]) and the server's `Retry-After`.

use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use reqwest::header::{self, HeaderMap};
use reqwest::Url;
use serde::de::DeserializeOwned;

use crate::api::error::{scrub, ApiError, ApiErrorKind};
use crate::api::retry::{self, Failure};

/// Most bytes of an error body kept for the error message.
const ERROR_BODY_LIMIT: usize = 8 * 1024;

/// Whether a call may be repeated after an ambiguous failure.
///
/// A POST that timed out or lost its connection mid-request may already have created the
/// folder or file; repeating it could leave a duplicate (the service allows duplicate names,
/// so nothing would stop it). Such calls are retried only when the request surely was not
/// processed: connect errors (nothing sent), 429 and 502/503/504 (turned away before the
/// application). After a timeout or reset they fail with `Transport` and the caller (the
/// write path, which can list the folder) decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Idempotency {
    Idempotent,
    NotIdempotent,
}

/// `scheme://host[:port]` of a URL: enough to say where a call went, nothing secret.
pub(super) fn origin(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{}://{h}:{p}", url.scheme()),
        (Some(h), None) => format!("{}://{h}", url.scheme()),
        _ => url.scheme().to_string(),
    }
}

/// The error chain of a reqwest error, without its URL.
pub(crate) fn describe(err: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let s = e.to_string();
        if !text.contains(&s) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&s);
        }
        cur = e.source();
    }
    scrub(&text)
}

/// A failed send or body read, classified for the retry loop.
pub(super) fn transport_failure(
    err: reqwest::Error,
    what: &str,
    idempotency: Idempotency,
    response_started: bool,
) -> Failure {
    let err = err.without_url();
    let cause = if err.is_connect() {
        "cannot connect"
    } else if err.is_timeout() {
        "timed out"
    } else if response_started {
        "response interrupted"
    } else {
        "connection failed"
    };
    let mut message = format!("{what}: {cause}: {}", describe(&err));
    // Connect errors happen before a byte of the request leaves: always safe to repeat.
    let ambiguous = !err.is_connect() && idempotency == Idempotency::NotIdempotent;
    if ambiguous {
        message.push_str(" (the request may or may not have been applied; not retried)");
    }
    let error = ApiError::new(ApiErrorKind::Transport, message).with_source(err);
    Failure {
        error,
        ambiguous,
        retry_after: None,
    }
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry::parse_retry_after(v, SystemTime::now()))
}

/// The human part of an error body: the JSON `message` (string or list) or `error`, else the
/// start of the text.
pub(super) fn server_message(body: &[u8]) -> Option<String> {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let pick = |key: &str| match v.get(key) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Array(items)) => Some(
                items
                    .iter()
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            _ => None,
        };
        if let Some(m) = pick("message").or_else(|| pick("error")) {
            return Some(m);
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        return None;
    }
    Some(text.chars().take(200).collect())
}

/// Reads at most `limit` bytes of a body (error bodies: only for the message).
async fn read_limited(resp: reqwest::Response, limit: usize, timeout: Duration) -> Bytes {
    let read = async {
        let mut out = BytesMut::new();
        let mut stream = resp.bytes_stream();
        while let Some(Ok(chunk)) = stream.next().await {
            let room = limit - out.len();
            out.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if out.len() >= limit {
                break;
            }
        }
        out.freeze()
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or_default()
}

/// Turns a non-2xx API answer into a classified failure.
pub(super) async fn status_failure(
    resp: reqwest::Response,
    what: &str,
    idempotency: Idempotency,
    timeout: Duration,
) -> Failure {
    let status = resp.status();
    let after = retry_after(resp.headers());
    let body = read_limited(resp, ERROR_BODY_LIMIT, timeout).await;
    let detail = server_message(&body)
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
    let code = status.as_u16();
    let error = ApiError::new(ApiError::kind_for_status(code), format!("{what}: {detail}"))
        .with_status(code);
    // 502/503/504 come from in front of the application: nothing was created.
    let ambiguous = idempotency == Idempotency::NotIdempotent
        && (500..=599).contains(&code)
        && !(502..=504).contains(&code);
    Failure {
        error,
        ambiguous,
        retry_after: if code == 429 { after } else { None },
    }
}

/// `n` bytes as "64 MiB" when whole mebibytes, else as bytes.
pub(super) fn size_text(n: u64) -> String {
    if n >= 1 << 20 && n % (1 << 20) == 0 {
        format!("{} MiB", n >> 20)
    } else {
        format!("{n} bytes")
    }
}

/// Reads a whole 2xx answer, refusing one larger than `cap` bytes (checked against
/// `Content-Length` first, then while reading), so a broken or hostile service cannot make
/// the client buffer without bound.
pub(super) async fn read_capped(
    resp: reqwest::Response,
    cap: u64,
    what: &str,
    idempotency: Idempotency,
) -> Result<Bytes, Failure> {
    let too_big = || {
        Failure::new(ApiError::new(
            ApiErrorKind::Decode,
            format!(
                "{what}: answer larger than the {} limit on API responses",
                size_text(cap)
            ),
        ))
    };
    if resp.content_length().is_some_and(|n| n > cap) {
        return Err(too_big());
    }
    let mut out = BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| transport_failure(e, what, idempotency, true))?;
        if (out.len() + chunk.len()) as u64 > cap {
            return Err(too_big());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

pub(super) fn decode<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|e| {
        Failure::new(ApiError::new(
            ApiErrorKind::Decode,
            format!("{what}: unexpected response body: {e}"),
        ))
    })
}
