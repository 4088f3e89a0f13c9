//! HTTP implementation of [`super::MediaClient`]: reqwest over one connection pool.
//!
//! - Every API call carries `Authorization: Bearer <token>`; reads from signed (CDN) URLs
//!   carry none.
//! - Transient failures (429, 5xx, timeouts, resets, truncated bodies) are retried with the
//!   policy of [`super::retry`]; other 4xx are final.
//! - Non-idempotent calls (Create File, Create Folder) are retried only when the request
//!   surely was not processed; see [`Idempotency`].
//! - Nothing that may hold a token or a signed URL reaches an error message or a log line
//!   unscrubbed: reqwest errors lose their URL before they are kept as a source, messages name
//!   the host and a path template, and everything passes through [`scrub`].

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::Instrument;

use super::error::{scrub, ApiError, ApiErrorKind, ApiResult};
use super::retry::{self, Failure, RetryPolicy};
use super::types::{
    DataEnvelope, FileUpdate, Folder, FolderUpdate, ListPage, MediaFile, NewFile, NewFolder, Parent,
};
use super::upload;
use super::MediaClient;

/// The path every API call lives under.
pub const API_PREFIX: &str = "/api/v1/media-manager";

/// Most bytes of an error body kept for the error message.
const ERROR_BODY_LIMIT: usize = 8 * 1024;

/// Connection settings of the HTTP client.
#[derive(Clone)]
pub struct ClientConfig {
    /// Service root, e.g. `https://apigw.klinkcx.com` (with or without [`API_PREFIX`]).
    pub base_url: String,
    /// Bearer token. Never printed (the `Debug` impl redacts it).
    pub token: String,
    pub connect_timeout: Duration,
    /// Longest wait for a response, and for each read of a response body.
    pub read_timeout: Duration,
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// `pageSize` of list calls (the API's maximum is 100).
    pub page_size: u32,
    /// Pages of one listing fetched at the same time.
    pub list_concurrency: usize,
    /// Hard limit on a whole Create File call; `None` relies on the stall detector only.
    pub upload_timeout: Option<Duration>,
}

impl ClientConfig {
    pub fn new(base_url: impl Into<String>, token: impl Into<String>) -> Self {
        ClientConfig {
            base_url: base_url.into(),
            token: token.into(),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            max_attempts: 6,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            page_size: 100,
            list_concurrency: 8,
            upload_timeout: None,
        }
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts.max(1),
            base: self.backoff_base,
            max: self.backoff_max,
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &scrub(&self.base_url))
            .field("token", &"<redacted>")
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("max_attempts", &self.max_attempts)
            .field("backoff_base", &self.backoff_base)
            .field("backoff_max", &self.backoff_max)
            .field("page_size", &self.page_size)
            .field("list_concurrency", &self.list_concurrency)
            .field("upload_timeout", &self.upload_timeout)
            .finish()
    }
}

/// Whether a call may be repeated after an ambiguous failure.
///
/// A POST that timed out or lost its connection mid-request may already have created the
/// folder or file; repeating it could leave a duplicate (the service allows duplicate names,
/// so nothing would stop it). Such calls are retried only when the request surely was not
/// processed: connect errors (nothing sent), 429 and 502/503/504 (turned away before the
/// application). After a timeout or reset they fail with `Transport` and the caller (the
/// write path, which can list the folder) decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Idempotency {
    Idempotent,
    NotIdempotent,
}

/// The reqwest-based client. Cheap to share behind an `Arc`: one connection pool for all
/// calls.
pub struct HttpClient {
    /// API calls and CDN reads: connect and read timeouts.
    client: reqwest::Client,
    /// Create File only. reqwest's `read_timeout` also bounds the time until the response
    /// headers, which for a large upload includes sending the whole body; uploads therefore
    /// use a client without it and a stall detector of their own.
    upload_client: reqwest::Client,
    /// `…/api/v1/media-manager`.
    base: Url,
    /// `scheme://host[:port]`, for messages.
    host: String,
    auth: HeaderValue,
    config: ClientConfig,
    policy: RetryPolicy,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("base", &self.base.as_str())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Normalises the configured base URL to `…/api/v1/media-manager` (no trailing slash).
fn api_base(base_url: &str) -> ApiResult<Url> {
    let trimmed = base_url.trim().trim_end_matches('/');
    let full = if trimmed.ends_with(API_PREFIX) {
        trimmed.to_string()
    } else {
        format!("{trimmed}{API_PREFIX}")
    };
    let url = Url::parse(&full).map_err(|e| {
        ApiError::new(
            ApiErrorKind::InvalidInput,
            format!("invalid API URL {}: {e}", scrub(trimmed)),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() || url.host().is_none() {
        return Err(ApiError::new(
            ApiErrorKind::InvalidInput,
            format!("invalid API URL {}: need http(s)://host", scrub(trimmed)),
        ));
    }
    Ok(url)
}

/// `scheme://host[:port]` of a URL: enough to say where a call went, nothing secret.
fn origin(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{}://{h}:{p}", url.scheme()),
        (Some(h), None) => format!("{}://{h}", url.scheme()),
        _ => url.scheme().to_string(),
    }
}

/// The error chain of a reqwest error, without its URL.
fn describe(err: &reqwest::Error) -> String {
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
fn transport_failure(
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
    let retryable = err.is_connect() || idempotency == Idempotency::Idempotent;
    if !retryable {
        message.push_str(" (the request may or may not have been applied; not retried)");
    }
    let error = ApiError::new(ApiErrorKind::Transport, message).with_source(err);
    Failure {
        error,
        retryable,
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
fn server_message(body: &[u8]) -> Option<String> {
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
async fn status_failure(
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
    let retryable = match code {
        429 => true,
        // Turned away before the application: nothing was created.
        502..=504 => true,
        500..=599 => idempotency == Idempotency::Idempotent,
        _ => false,
    };
    Failure {
        error,
        retryable,
        retry_after: if code == 429 { after } else { None },
    }
}

fn decode<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|e| {
        Failure::fatal(ApiError::new(
            ApiErrorKind::Decode,
            format!("{what}: unexpected response body: {e}"),
        ))
    })
}

/// One API request, repeatable: everything needed to send it again.
struct Call {
    method: Method,
    url: Url,
    /// The path with ids left out (`/files/{id}`), for logs and messages.
    template: &'static str,
    json: Option<Bytes>,
    idempotency: Idempotency,
}

impl Call {
    fn what(&self, host: &str) -> String {
        format!("{} {host}{API_PREFIX}{}", self.method, self.template)
    }
}

/// `Content-Range: bytes a-b/total` (total may be `*`).
fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?, total))
}

impl HttpClient {
    pub fn new(config: ClientConfig) -> ApiResult<Self> {
        let base = api_base(&config.base_url)?;
        let host = origin(&base);
        let mut auth =
            HeaderValue::from_str(&format!("Bearer {}", config.token.trim())).map_err(|_| {
                ApiError::new(
                    ApiErrorKind::InvalidInput,
                    "the token holds characters not allowed in an HTTP header",
                )
            })?;
        auth.set_sensitive(true);

        let builder = || {
            reqwest::Client::builder()
                .user_agent(concat!("mediafs/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(config.connect_timeout)
                .tcp_nodelay(true)
                .tcp_keepalive(Duration::from_secs(30))
                .pool_idle_timeout(Duration::from_secs(60))
        };
        let build_err = |e: reqwest::Error| {
            ApiError::new(
                ApiErrorKind::Local,
                format!("building the HTTP client: {}", describe(&e)),
            )
        };
        let client = builder()
            .read_timeout(config.read_timeout)
            .build()
            .map_err(build_err)?;
        let upload_client = builder().build().map_err(build_err)?;
        Ok(HttpClient {
            client,
            upload_client,
            policy: config.retry_policy(),
            base,
            host,
            auth,
            config,
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// `…/api/v1/media-manager/<segments…>`, each segment percent-encoded (ids are opaque).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("base URL checked in new()")
            .pop_if_empty()
            .extend(segments);
        url
    }

    /// One cheap authenticated call (first page of root folders, one item), at most two
    /// attempts, so a mount fails fast on a bad token (`Unauthorized`) or an unreachable
    /// service (`Transport`).
    pub async fn probe(&self) -> ApiResult<()> {
        let mut url = self.url(&["folders"]);
        url.query_pairs_mut()
            .append_pair("parentId", "root")
            .append_pair("page", "1")
            .append_pair("pageSize", "1");
        let call = Call {
            method: Method::GET,
            url,
            template: "/folders",
            json: None,
            idempotency: Idempotency::Idempotent,
        };
        let policy = self
            .policy
            .with_max_attempts(self.policy.max_attempts.min(2));
        let call = &call;
        let result = retry::run(&policy, "probe", |n| async move {
            let body = self.attempt(call, n).await?;
            decode::<ListPage<Folder>>(&body, &call.what(&self.host)).map(|_| ())
        })
        .await;
        result.map_err(|mut e| {
            if e.kind == ApiErrorKind::Unauthorized {
                e.message = scrub(&format!(
                    "the service at {} rejected the token (wrong, expired or revoked): {}",
                    self.host, e.message
                ));
            }
            e
        })
    }

    /// Sends `call` once; the body of a 2xx answer, or a classified failure.
    async fn attempt(&self, call: &Call, attempt: u32) -> Result<Bytes, Failure> {
        let what = call.what(&self.host);
        let span = tracing::debug_span!(
            "api",
            method = %call.method,
            path = call.template,
            attempt
        );
        async {
            let mut req = self
                .client
                .request(call.method.clone(), call.url.clone())
                .header(header::AUTHORIZATION, self.auth.clone())
                .header(header::ACCEPT, "application/json");
            if let Some(json) = &call.json {
                req = req
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(json.clone());
            }
            let resp = req
                .send()
                .await
                .map_err(|e| transport_failure(e, &what, call.idempotency, false))?;
            let status = resp.status();
            tracing::debug!(status = status.as_u16(), "response");
            if !status.is_success() {
                return Err(status_failure(
                    resp,
                    &what,
                    call.idempotency,
                    self.config.read_timeout,
                )
                .await);
            }
            resp.bytes()
                .await
                .map_err(|e| transport_failure(e, &what, call.idempotency, true))
        }
        .instrument(span)
        .await
    }

    /// Runs `call` with retries and decodes `{"data": T}`.
    async fn call_data<T: DeserializeOwned>(&self, call: Call) -> ApiResult<T> {
        let what = &call.what(&self.host);
        let call = &call;
        retry::run(&self.policy, what, |n| async move {
            let body = self.attempt(call, n).await?;
            decode::<DataEnvelope<T>>(&body, what).map(|e| e.data)
        })
        .await
    }

    fn json_call<B: Serialize>(
        &self,
        method: Method,
        url: Url,
        template: &'static str,
        body: &B,
        idempotency: Idempotency,
    ) -> ApiResult<Call> {
        let json = serde_json::to_vec(body).map_err(|e| {
            ApiError::new(ApiErrorKind::Local, format!("encoding request body: {e}"))
        })?;
        Ok(Call {
            method,
            url,
            template,
            json: Some(Bytes::from(json)),
            idempotency,
        })
    }

    /// DELETE, accepting 200 and 204 with any body.
    async fn delete(&self, url: Url, template: &'static str) -> ApiResult<()> {
        let call = Call {
            method: Method::DELETE,
            url,
            template,
            json: None,
            idempotency: Idempotency::Idempotent,
        };
        let call = &call;
        retry::run(&self.policy, &call.what(&self.host), |n| async move {
            match self.attempt(call, n).await {
                Ok(_) => Ok(()),
                // A retry after a lost answer finds the object already gone: the delete took.
                Err(f) if n > 1 && f.error.kind == ApiErrorKind::NotFound => Ok(()),
                Err(f) => Err(f),
            }
        })
        .await
    }

    /// Fetches one list page.
    async fn page<T: DeserializeOwned>(
        &self,
        path: &'static str,
        filter: &str,
        parent: &Parent,
        page: u64,
    ) -> ApiResult<ListPage<T>> {
        let mut url = self.url(&[&path[1..]]);
        url.query_pairs_mut()
            .append_pair(filter, parent.query_value())
            .append_pair("page", &page.to_string())
            .append_pair("pageSize", &self.config.page_size.max(1).to_string());
        let call = Call {
            method: Method::GET,
            url,
            template: path,
            json: None,
            idempotency: Idempotency::Idempotent,
        };
        let what = &call.what(&self.host);
        let call = &call;
        retry::run(&self.policy, what, |n| async move {
            let body = self.attempt(call, n).await?;
            decode::<ListPage<T>>(&body, what)
        })
        .await
    }

    /// Walks every page of a listing, keeps the objects whose own parent is `parent` (the
    /// real API may ignore the filter) and drops duplicates (objects shift between pages when
    /// the library changes during the walk).
    async fn list_all<T>(
        &self,
        path: &'static str,
        filter: &str,
        parent: &Parent,
        id_of: fn(&T) -> &str,
        parent_of: fn(&T) -> Option<&str>,
    ) -> ApiResult<Vec<T>>
    where
        T: DeserializeOwned + Send,
    {
        let first = self.page::<T>(path, filter, parent, 1).await?;
        let bare = first.total.is_none()
            && first.page.is_none()
            && first.page_size.is_none()
            && first.last_page.is_none();
        // The server may cap pageSize below what was asked; its own figure decides "short".
        let size = first
            .page_size
            .filter(|&s| s > 0)
            .unwrap_or(u64::from(self.config.page_size.max(1)));
        let last = first
            .last_page
            .or_else(|| first.total.map(|t| t.div_ceil(size).max(1)));
        let mut items = first.data;

        if bare {
            // `{"data": [...]}`: the whole list in one answer.
        } else if let Some(last) = last {
            if last > 1 {
                // In order (`buffered`); an empty page ends the walk early, so a wild
                // `lastPage` costs a few extra calls, not millions.
                let rest: Vec<ListPage<T>> = futures::stream::iter(2..=last)
                    .map(|p| self.page::<T>(path, filter, parent, p))
                    .buffered(self.config.list_concurrency.max(1))
                    .try_take_while(|p| futures::future::ready(Ok(!p.data.is_empty())))
                    .try_collect()
                    .await?;
                items.extend(rest.into_iter().flat_map(|p| p.data));
            }
        } else {
            // Paged but with no lastPage or total: walk until a short or empty page.
            let mut seen: HashSet<String> = items.iter().map(|i| id_of(i).to_string()).collect();
            let mut previous = items.len() as u64;
            let mut p = 1;
            while previous >= size {
                p += 1;
                let page = self.page::<T>(path, filter, parent, p).await?;
                previous = page.data.len() as u64;
                let mut fresh = 0;
                for item in page.data {
                    if seen.insert(id_of(&item).to_string()) {
                        fresh += 1;
                    }
                    items.push(item);
                }
                // A server that ignores `page` repeats page 1 forever; stop on nothing new.
                if fresh == 0 || page.last_page.is_some_and(|l| p >= l) {
                    break;
                }
            }
        }

        Ok(super::filter::children(items, parent, id_of, parent_of))
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
                            return Err(Failure::transient(
                                ApiError::new(
                                    ApiErrorKind::Transport,
                                    format!("{what}: asked for bytes from {offset}, got {a}-{b}"),
                                ),
                                None,
                            ));
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
            StatusCode::FORBIDDEN => Err(Failure::fatal(
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

    /// Create File, one attempt: the body streams from `content`, re-opened per attempt.
    async fn upload_once(
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
                            return Err(Failure::fatal(ApiError::new(
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
            let body = tokio::time::timeout(self.config.read_timeout, resp.bytes())
                .await
                .map_err(|_| {
                    Failure::fatal(ApiError::new(
                        ApiErrorKind::Transport,
                        format!("{what}: timed out reading the answer"),
                    ))
                })?
                .map_err(|e| transport_failure(e, what, Idempotency::NotIdempotent, true))?;
            decode::<DataEnvelope<MediaFile>>(&body, what).map(|e| e.data)
        }
        .instrument(span)
        .await
    }
}

fn truncated(what: &str, got: u64, expected: u64) -> Failure {
    Failure::transient(
        ApiError::new(
            ApiErrorKind::Transport,
            format!("{what}: body truncated after {got} of {expected} bytes"),
        ),
        None,
    )
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

#[async_trait]
impl MediaClient for HttpClient {
    async fn list_folders(&self, parent: &Parent) -> ApiResult<Vec<Folder>> {
        self.list_all(
            "/folders",
            "parentId",
            parent,
            |f: &Folder| &f.id,
            |f: &Folder| f.parent_id.as_deref(),
        )
        .await
    }

    async fn get_folder(&self, id: &str) -> ApiResult<Folder> {
        self.call_data(Call {
            method: Method::GET,
            url: self.url(&["folders", id]),
            template: "/folders/{id}",
            json: None,
            idempotency: Idempotency::Idempotent,
        })
        .await
    }

    async fn create_folder(&self, name: &str, parent_id: Option<&str>) -> ApiResult<Folder> {
        let body = NewFolder {
            name: name.to_string(),
            parent_id: parent_id.map(str::to_string),
        };
        let call = self.json_call(
            Method::POST,
            self.url(&["folders"]),
            "/folders",
            &body,
            Idempotency::NotIdempotent,
        )?;
        self.call_data(call).await
    }

    async fn update_folder(&self, id: &str, update: &FolderUpdate) -> ApiResult<Folder> {
        // PATCH sets fields to given values: repeating it is harmless.
        let call = self.json_call(
            Method::PATCH,
            self.url(&["folders", id]),
            "/folders/{id}",
            update,
            Idempotency::Idempotent,
        )?;
        super::moves::check_folder(self, id, update, self.call_data(call).await?).await
    }

    async fn delete_folder(&self, id: &str) -> ApiResult<()> {
        self.delete(self.url(&["folders", id]), "/folders/{id}")
            .await
    }

    async fn list_files(&self, folder: &Parent) -> ApiResult<Vec<MediaFile>> {
        self.list_all(
            "/files",
            "folderId",
            folder,
            |f: &MediaFile| &f.id,
            |f: &MediaFile| f.folder_id.as_deref(),
        )
        .await
    }

    async fn get_file(&self, id: &str) -> ApiResult<MediaFile> {
        self.call_data(Call {
            method: Method::GET,
            url: self.url(&["files", id]),
            template: "/files/{id}",
            json: None,
            idempotency: Idempotency::Idempotent,
        })
        .await
    }

    async fn create_file(&self, meta: &NewFile, content: &Path) -> ApiResult<MediaFile> {
        let what = format!("POST {}{API_PREFIX}/files", self.host);
        retry::run(&self.policy, &what, |n| {
            self.upload_once(meta, content, &what, n)
        })
        .await
    }

    async fn update_file(&self, id: &str, update: &FileUpdate) -> ApiResult<MediaFile> {
        let call = self.json_call(
            Method::PATCH,
            self.url(&["files", id]),
            "/files/{id}",
            update,
            Idempotency::Idempotent,
        )?;
        super::moves::check_file(self, id, update, self.call_data(call).await?).await
    }

    async fn delete_file(&self, id: &str) -> ApiResult<()> {
        self.delete(self.url(&["files", id]), "/files/{id}").await
    }

    async fn read_range(&self, url: &str, offset: u64, len: u64) -> ApiResult<Bytes> {
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
}

#[cfg(test)]
mod tests {
    //! Client behaviour against tiny local servers (axum, or raw TCP where a misbehaving
    //! peer is needed). The contract tests in `tests/contract.rs` run against the real
    //! embedded server.
    use super::*;
    use axum::extract::{Query, State};
    use axum::http::{HeaderMap as AxHeaders, StatusCode as AxStatus};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, post};
    use axum::Router;
    use sha2::{Digest, Sha256};
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const TOKEN: &str = "kpt_unit_secret_token";

    #[derive(Default)]
    struct Seen {
        calls: AtomicU32,
        auth: Mutex<Vec<Option<String>>>,
        bodies: Mutex<Vec<(Option<String>, Vec<u8>)>>,
    }

    type Shared = Arc<Seen>;

    fn record(seen: &Seen, headers: &AxHeaders) -> u32 {
        seen.auth.lock().unwrap().push(
            headers
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_string()),
        );
        seen.calls.fetch_add(1, Ordering::SeqCst) + 1
    }

    async fn serve(router: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        format!("http://{addr}")
    }

    fn client(base: &str) -> HttpClient {
        let mut cfg = ClientConfig::new(base, TOKEN);
        cfg.backoff_base = Duration::from_millis(5);
        cfg.backoff_max = Duration::from_millis(50);
        cfg.read_timeout = Duration::from_secs(5);
        HttpClient::new(cfg).unwrap()
    }

    fn blob(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn sha(b: &[u8]) -> String {
        hex::encode(Sha256::digest(b))
    }

    fn folder(id: &str, parent: Option<&str>) -> serde_json::Value {
        serde_json::json!({"id": id, "name": format!("n{id}"), "parentId": parent})
    }

    #[test]
    fn base_url_is_normalised() {
        for (given, want) in [
            (
                "http://127.0.0.1:8787",
                "http://127.0.0.1:8787/api/v1/media-manager",
            ),
            (
                "http://127.0.0.1:8787/",
                "http://127.0.0.1:8787/api/v1/media-manager",
            ),
            (
                "https://apigw.klinkcx.com/api/v1/media-manager/",
                "https://apigw.klinkcx.com/api/v1/media-manager",
            ),
            ("https://h/prefix", "https://h/prefix/api/v1/media-manager"),
        ] {
            assert_eq!(api_base(given).unwrap().as_str(), want, "{given}");
        }
        assert_eq!(
            api_base("ftp://h").unwrap_err().kind,
            ApiErrorKind::InvalidInput
        );
        assert_eq!(
            api_base("not a url").unwrap_err().kind,
            ApiErrorKind::InvalidInput
        );
        let c = client("http://h:1/");
        assert_eq!(
            c.url(&["files", "a/b?c"]).as_str(),
            "http://h:1/api/v1/media-manager/files/a%2Fb%3Fc"
        );
    }

    #[test]
    fn config_debug_hides_token() {
        let cfg = ClientConfig::new("http://h", TOKEN);
        let c = HttpClient::new(cfg.clone()).unwrap();
        assert!(!format!("{cfg:?}").contains(TOKEN));
        assert!(!format!("{c:?}").contains(TOKEN));
    }

    #[test]
    fn content_range_parses() {
        assert_eq!(
            parse_content_range("bytes 0-99/1000"),
            Some((0, 99, Some(1000)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, 9, None)));
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }

    #[test]
    fn server_message_extraction() {
        assert_eq!(
            server_message(br#"{"statusCode":409,"message":"folder not empty"}"#).as_deref(),
            Some("folder not empty")
        );
        assert_eq!(
            server_message(br#"{"message":["name too long","bad"]}"#).as_deref(),
            Some("name too long; bad")
        );
        assert_eq!(
            server_message(b"<html>\n  Bad  gateway </html>").as_deref(),
            Some("<html> Bad gateway </html>")
        );
        assert_eq!(server_message(b""), None);
    }

    /// A list endpoint with three paging styles, a filter that is ignored, and duplicates.
    async fn folders(
        State(seen): State<Shared>,
        headers: AxHeaders,
        Query(q): Query<HashMap<String, String>>,
    ) -> Response {
        record(&seen, &headers);
        let parent = q.get("parentId").cloned().unwrap_or_default();
        let page: usize = q["page"].parse().unwrap();
        let size: usize = q["pageSize"].parse().unwrap();
        assert_eq!(size, 100);
        match parent.as_str() {
            // Bare envelope, filter ignored: a child of "p" sneaks in.
            "bare" => axum::Json(serde_json::json!({"data": [
                folder("1", Some("bare")), folder("2", Some("p")), folder("1", Some("bare"))
            ]}))
            .into_response(),
            // Paged without lastPage/total; server caps pageSize at 2.
            "nolast" => {
                let all: Vec<_> = (0..5)
                    .map(|i| folder(&format!("n{i}"), Some("nolast")))
                    .collect();
                let data: Vec<_> = all.iter().skip((page - 1) * 2).take(2).cloned().collect();
                axum::Json(serde_json::json!({"page": page, "pageSize": 2, "data": data}))
                    .into_response()
            }
            // 250 items, lastPage given; item 099 shows up again on page 2.
            _ => {
                let all: Vec<_> = (0..250).map(|i| folder(&format!("{i:03}"), None)).collect();
                let start = ((page - 1) * 100).saturating_sub(usize::from(page == 2));
                let take = 100 + usize::from(page == 2);
                let data: Vec<_> = all.iter().skip(start).take(take).cloned().collect();
                axum::Json(serde_json::json!({
                    "total": 250, "page": page, "pageSize": 100, "lastPage": 3, "data": data
                }))
                .into_response()
            }
        }
    }

    #[tokio::test]
    async fn lists_walk_pages_filter_and_dedup() {
        let seen = Shared::default();
        let base = serve(
            Router::new()
                .route("/api/v1/media-manager/folders", get(folders))
                .with_state(seen.clone()),
        )
        .await;
        let c = client(&base);

        let root = c.list_folders(&Parent::Root).await.unwrap();
        let ids: Vec<_> = root.iter().map(|f| f.id.clone()).collect();
        let want: Vec<_> = (0..250).map(|i| format!("{i:03}")).collect();
        assert_eq!(ids, want, "all pages, in order, no duplicates");
        assert_eq!(seen.calls.load(Ordering::SeqCst), 3);

        let bare = c
            .list_folders(&Parent::Folder("bare".into()))
            .await
            .unwrap();
        assert_eq!(
            bare,
            vec![serde_json::from_value(folder("1", Some("bare"))).unwrap()]
        );
        assert_eq!(
            seen.calls.load(Ordering::SeqCst),
            4,
            "bare envelope: one call"
        );

        let nolast = c
            .list_folders(&Parent::Folder("nolast".into()))
            .await
            .unwrap();
        assert_eq!(nolast.len(), 5);
        assert_eq!(
            seen.calls.load(Ordering::SeqCst),
            7,
            "pages of 2,2,1: stop at the short page"
        );
        let auth = seen.auth.lock().unwrap();
        assert!(auth
            .iter()
            .all(|a| a.as_deref() == Some(&*format!("Bearer {TOKEN}"))));
    }

    /// Answers 429 (Retry-After: 0) `fails` times, then a folder.
    async fn flaky_get(State(seen): State<Shared>, headers: AxHeaders) -> Response {
        let n = record(&seen, &headers);
        if n <= 2 {
            (
                AxStatus::TOO_MANY_REQUESTS,
                [("retry-after", "0")],
                r#"{"statusCode":429,"message":"slow down"}"#,
            )
                .into_response()
        } else {
            axum::Json(serde_json::json!({"data": folder("f", None)})).into_response()
        }
    }

    #[tokio::test]
    async fn retries_429_then_succeeds_and_gives_up_eventually() {
        let seen = Shared::default();
        let base = serve(
            Router::new()
                .route("/api/v1/media-manager/folders/{id}", get(flaky_get))
                .with_state(seen.clone()),
        )
        .await;
        let c = client(&base);
        assert_eq!(c.get_folder("f").await.unwrap().id, "f");
        assert_eq!(seen.calls.load(Ordering::SeqCst), 3);

        // Two attempts only: the two 429s exhaust them.
        seen.calls.store(0, Ordering::SeqCst);
        let mut cfg = c.config().clone();
        cfg.max_attempts = 2;
        let c2 = HttpClient::new(cfg).unwrap();
        let err = c2.get_folder("f").await.unwrap_err();
        assert_eq!(err.kind, ApiErrorKind::RateLimited);
        assert_eq!(err.errno(), libc::EAGAIN);
        assert!(err.message.contains("slow down"), "{err}");
    }

    async fn status_by_name(
        State(seen): State<Shared>,
        headers: AxHeaders,
        body: String,
    ) -> Response {
        record(&seen, &headers);
        let name = serde_json::from_str::<serde_json::Value>(&body).unwrap()["name"]
            .as_str()
            .unwrap()
            .to_string();
        let code: u16 = name.parse().unwrap_or(200);
        if code == 200 {
            return axum::Json(serde_json::json!({"data": folder("new", None)})).into_response();
        }
        (
            AxStatus::from_u16(code).unwrap(),
            format!(r#"{{"statusCode":{code},"message":"status {code} with Bearer {TOKEN}"}}"#),
        )
            .into_response()
    }

    #[tokio::test]
    async fn post_retries_only_when_surely_unprocessed() {
        let seen = Shared::default();
        let base = serve(
            Router::new()
                .route("/api/v1/media-manager/folders", post(status_by_name))
                .with_state(seen.clone()),
        )
        .await;
        let c = client(&base);
        for (code, kind, calls) in [
            (500, ApiErrorKind::Server, 1),
            (503, ApiErrorKind::Server, 6),
            (409, ApiErrorKind::Conflict, 1),
            (422, ApiErrorKind::InvalidInput, 1),
            (401, ApiErrorKind::Unauthorized, 1),
        ] {
            seen.calls.store(0, Ordering::SeqCst);
            let err = c.create_folder(&code.to_string(), None).await.unwrap_err();
            assert_eq!(err.kind, kind, "{code}");
            assert_eq!(err.status, Some(code), "{code}");
            assert_eq!(
                seen.calls.load(Ordering::SeqCst),
                calls,
                "attempts for {code}"
            );
            assert!(err.message.contains(&format!("status {code}")), "{err}");
            assert!(!format!("{err:?}").contains(TOKEN));
            assert!(!err.to_string().contains(TOKEN));
        }
        assert_eq!(c.create_folder("ok", None).await.unwrap().id, "new");
    }

    #[tokio::test]
    async fn delete_accepts_200_204_and_treats_404_on_retry_as_done() {
        let seen = Shared::default();
        async fn del(
            State(seen): State<Shared>,
            headers: AxHeaders,
            axum::extract::Path(id): axum::extract::Path<String>,
        ) -> Response {
            let n = record(&seen, &headers);
            match id.as_str() {
                "a" => AxStatus::NO_CONTENT.into_response(),
                "b" => (AxStatus::OK, "whatever, not json").into_response(),
                "c" if n % 2 == 1 => AxStatus::BAD_GATEWAY.into_response(),
                _ => AxStatus::NOT_FOUND.into_response(),
            }
        }
        let base = serve(
            Router::new()
                .route(
                    "/api/v1/media-manager/files/{id}",
                    axum::routing::delete(del),
                )
                .with_state(seen.clone()),
        )
        .await;
        let c = client(&base);
        c.delete_file("a").await.unwrap();
        c.delete_file("b").await.unwrap();
        c.delete_file("c").await.unwrap();
        let calls = seen.calls.load(Ordering::SeqCst);
        assert_eq!(
            c.delete_file("zz").await.unwrap_err().kind,
            ApiErrorKind::NotFound
        );
        assert_eq!(seen.calls.load(Ordering::SeqCst), calls + 1);
    }

    #[tokio::test]
    async fn non_json_success_is_a_decode_error() {
        let seen = Shared::default();
        async fn html(State(seen): State<Shared>, headers: AxHeaders) -> Response {
            record(&seen, &headers);
            (AxStatus::OK, "<html>login</html>").into_response()
        }
        let base = serve(
            Router::new()
                .route("/api/v1/media-manager/files/{id}", get(html))
                .with_state(seen.clone()),
        )
        .await;
        let err = client(&base).get_file("x").await.unwrap_err();
        assert_eq!(err.kind, ApiErrorKind::Decode);
        assert_eq!(seen.calls.load(Ordering::SeqCst), 1);
    }

    /// A CDN that serves `blob(n)`; `?ignore` answers 200 with the whole body; no auth allowed.
    async fn cdn(
        State(seen): State<Shared>,
        headers: AxHeaders,
        Query(q): Query<HashMap<String, String>>,
    ) -> Response {
        record(&seen, &headers);
        if q.contains_key("expired") {
            return (
                AxStatus::FORBIDDEN,
                "<Error><Code>AccessDenied</Code></Error>",
            )
                .into_response();
        }
        let data = blob(1_000_000);
        let range = headers
            .get("range")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("bytes="))
            .and_then(|v| v.split_once('-'))
            .map(|(a, b)| (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap()));
        match range {
            Some((a, b)) if !q.contains_key("ignore") => {
                if a >= data.len() {
                    return (
                        AxStatus::RANGE_NOT_SATISFIABLE,
                        [("content-range", format!("bytes */{}", data.len()))],
                    )
                        .into_response();
                }
                // `?cap` serves at most 1000 bytes per request, like a capped CDN.
                let mut b = b.min(data.len() - 1);
                if q.contains_key("cap") {
                    b = b.min(a + 999);
                }
                (
                    AxStatus::PARTIAL_CONTENT,
                    [("content-range", format!("bytes {a}-{b}/{}", data.len()))],
                    data[a..=b].to_vec(),
                )
                    .into_response()
            }
            _ => (AxStatus::OK, data).into_response(),
        }
    }

    #[tokio::test]
    async fn range_reads_honoured_ignored_capped_eof_and_expired() {
        let seen = Shared::default();
        let base = serve(
            Router::new()
                .route("/cdn/blob.bin", get(cdn))
                .with_state(seen.clone()),
        )
        .await;
        let c = client(&base);
        let data = blob(1_000_000);
        for q in [
            "?Signature=s",
            "?ignore=1&Signature=s",
            "?cap=1&Signature=s",
        ] {
            let url = format!("{base}/cdn/blob.bin{q}");
            for (off, len) in [
                (0u64, 10u64),
                (1, 4095),
                (4095, 70_000),
                (999_999, 10),
                (990_000, 20_000),
                (1_000_000, 5),
                (2_000_000, 5),
            ] {
                let got = c.read_range(&url, off, len).await.unwrap();
                let lo = (off as usize).min(data.len());
                let hi = ((off + len) as usize).min(data.len());
                assert_eq!(sha(&got), sha(&data[lo..hi]), "{q} {off}+{len}");
            }
        }
        assert!(
            seen.auth.lock().unwrap().iter().all(Option::is_none),
            "no auth to the CDN"
        );

        let url = format!("{base}/cdn/blob.bin?expired=1&Signature=supersecret");
        let calls = seen.calls.load(Ordering::SeqCst);
        let err = c.read_range(&url, 0, 10).await.unwrap_err();
        assert_eq!(err.kind, ApiErrorKind::UrlExpired);
        assert_eq!(
            seen.calls.load(Ordering::SeqCst),
            calls + 1,
            "403 not retried"
        );
        assert!(!format!("{err:?}").contains("supersecret"));
    }

    /// Raw TCP CDN: the first answer drops the connection mid-body, the second is whole.
    #[tokio::test]
    async fn truncated_range_body_is_retried() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let data = blob(100);
        let served = Arc::new(AtomicU32::new(0));
        let (d, s) = (data.clone(), served.clone());
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let _ = sock.read(&mut buf).await.unwrap();
                let n = s.fetch_add(1, Ordering::SeqCst);
                let head = "HTTP/1.1 206 Partial Content\r\nContent-Length: 100\r\n\
                            Content-Range: bytes 0-99/1000\r\nConnection: close\r\n\r\n";
                sock.write_all(head.as_bytes()).await.unwrap();
                let body = if n == 0 { &d[..50] } else { &d[..] };
                sock.write_all(body).await.unwrap();
                sock.shutdown().await.unwrap();
            }
        });
        let c = client(&format!("http://{addr}"));
        let got = c
            .read_range(&format!("http://{addr}/cdn/x?Signature=s"), 0, 100)
            .await
            .unwrap();
        assert_eq!(sha(&got), sha(&data));
        assert_eq!(served.load(Ordering::SeqCst), 2);
    }

    async fn upload_handler(
        State(seen): State<Shared>,
        headers: AxHeaders,
        body: axum::body::Bytes,
    ) -> Response {
        let n = record(&seen, &headers);
        seen.bodies.lock().unwrap().push((
            headers
                .get("content-length")
                .map(|v| v.to_str().unwrap().to_string()),
            body.to_vec(),
        ));
        if n == 1 {
            return (AxStatus::SERVICE_UNAVAILABLE, "busy").into_response();
        }
        use base64::Engine;
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v["data"].as_str().unwrap())
            .unwrap();
        axum::Json(serde_json::json!({"data": {
            "id": "new", "folderId": v["folderId"], "title": v["title"],
            "upload": {"fileName": v["fileName"], "fileSize": bytes.len(), "fileUrl": sha(&bytes)}
        }}))
        .into_response()
    }

    #[tokio::test]
    async fn upload_streams_exact_length_and_retries_503_with_a_fresh_body() {
        let seen = Shared::default();
        let base = serve(
            Router::new()
                .route("/api/v1/media-manager/files", post(upload_handler))
                .layer(axum::extract::DefaultBodyLimit::disable())
                .with_state(seen.clone()),
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        let data = blob(3 * upload::CHUNK + 1);
        std::fs::write(&path, &data).unwrap();
        let meta = NewFile {
            file_name: "f.bin".into(),
            mime_type: "application/octet-stream".into(),
            title: Some("F".into()),
            folder_id: Some("dir".into()),
            ..Default::default()
        };
        let file = client(&base).create_file(&meta, &path).await.unwrap();
        assert_eq!(file.size(), data.len() as u64);
        assert_eq!(
            file.url(),
            Some(sha(&data).as_str()),
            "server saw the same bytes"
        );
        assert_eq!(file.folder_id.as_deref(), Some("dir"));
        let bodies = seen.bodies.lock().unwrap().clone();
        assert_eq!(bodies.len(), 2, "503 then success");
        for (len, body) in bodies.iter() {
            assert_eq!(
                len.as_deref(),
                Some(&*body.len().to_string()),
                "exact Content-Length"
            );
            assert_eq!(sha(body), sha(&bodies[0].1), "retry re-sent the whole body");
        }
        let missing = client(&base)
            .create_file(&meta, &dir.path().join("missing"))
            .await
            .unwrap_err();
        assert_eq!(missing.kind, ApiErrorKind::Local);
    }

    /// A peer that accepts connections and never reads or answers.
    async fn black_hole() -> (String, Arc<AtomicU32>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicU32::new(0));
        let a = accepted.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                held.push(sock);
            }
        });
        (format!("http://{addr}"), accepted)
    }

    #[tokio::test]
    async fn stalled_upload_fails_without_retry_and_silent_get_is_retried() {
        let (base, accepted) = black_hole().await;
        let mut cfg = ClientConfig::new(&base, TOKEN);
        cfg.read_timeout = Duration::from_millis(300);
        cfg.connect_timeout = Duration::from_millis(300);
        cfg.backoff_base = Duration::from_millis(1);
        cfg.max_attempts = 3;
        let c = HttpClient::new(cfg).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.bin");
        // Larger than any socket buffer, so the send stalls.
        std::fs::write(&path, blob(32 << 20)).unwrap();
        let meta = NewFile {
            file_name: "big.bin".into(),
            ..Default::default()
        };
        let t = std::time::Instant::now();
        let err = c.create_file(&meta, &path).await.unwrap_err();
        assert_eq!(err.kind, ApiErrorKind::Transport, "{err}");
        assert!(err.message.contains("not retried"), "{err}");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "a stalled POST is not repeated"
        );
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

        let err = c.get_file("x").await.unwrap_err();
        assert_eq!(err.kind, ApiErrorKind::Transport, "{err}");
        assert!(err.message.contains("timed out"), "{err}");
        assert_eq!(accepted.load(Ordering::SeqCst), 4, "GET tried 3 times");
    }

    #[tokio::test]
    async fn probe_fails_fast_on_unreachable_and_bad_token() {
        // A port that was just closed: connection refused.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let c = client(&format!("http://127.0.0.1:{port}"));
        let t = std::time::Instant::now();
        let err = c.probe().await.unwrap_err();
        assert_eq!(err.kind, ApiErrorKind::Transport);
        assert!(err.message.contains(&format!("127.0.0.1:{port}")), "{err}");
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(!format!("{err:?}").contains(TOKEN));

        let seen = Shared::default();
        async fn deny(State(seen): State<Shared>, headers: AxHeaders) -> Response {
            record(&seen, &headers);
            (
                AxStatus::UNAUTHORIZED,
                r#"{"statusCode":401,"message":"Unauthorized"}"#,
            )
                .into_response()
        }
        let base = serve(
            Router::new()
                .route("/api/v1/media-manager/folders", get(deny))
                .with_state(seen.clone()),
        )
        .await;
        let err = client(&base).probe().await.unwrap_err();
        assert_eq!(err.kind, ApiErrorKind::Unauthorized);
        assert_eq!(seen.calls.load(Ordering::SeqCst), 1);
        assert!(err.message.contains("rejected the token"), "{err}");
        assert!(!format!("{err:?}").contains(TOKEN));
    }
}
