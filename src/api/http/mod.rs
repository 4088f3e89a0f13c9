//! HTTP implementation of [`super::MediaClient`]: reqwest over one connection pool.
//!
//! - Every API call carries `Authorization: Bearer <token>`; reads from signed (CDN) URLs
//!   carry none.
//! - Transient failures ([`ApiError::is_transient`]: 429, 5xx, timeouts, resets, truncated
//!   bodies) are retried by the one loop of [`super::retry`]; other errors are final.
//! - Non-idempotent calls (Create File, Create Folder) are retried only when the request
//!   surely was not processed; see [`response::Idempotency`].
//! - What the client buffers is bounded: API answers by
//!   [`ClientConfig::max_response_bytes`], listing walks by what their first page announces
//!   ([`paging`]), CDN reads by the length asked for ([`cdn`]).
//! - Nothing that may hold a token or a signed URL reaches an error message or a log line
//!   unscrubbed: reqwest errors lose their URL before they are kept as a source, messages name
//!   the host and a path template, and everything passes through [`scrub`].
//!
//! Modules: [`response`] (status → error, bounded reads), [`paging`] (list walks), [`cdn`]
//! (Range reads of signed URLs), [`create_file`] (the streamed upload and its stall
//! detector), [`whole`] (the whole-library walk of a service that ignores list filters).

mod cdn;
mod create_file;
mod paging;
mod response;

pub(crate) use response::describe;
#[cfg(test)]
mod tests;
mod whole;

use std::fmt;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::header::{self, HeaderValue};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::Instrument;

use super::error::{scrub, ApiError, ApiErrorKind, ApiResult};
use super::retry::{self, Failure, RetryPolicy};
use super::types::{
    DataEnvelope, FileUpdate, Folder, FolderUpdate, ListPage, MediaFile, NewFile, NewFolder, Parent,
};
use super::MediaClient;
use response::Idempotency;
use response::{decode, origin, read_capped, status_failure, transport_failure};

/// The path every API call lives under.
pub const API_PREFIX: &str = "/api/v1/media-manager";

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
    /// Largest API answer (JSON) the client reads; a larger one fails with a `Decode` error
    /// naming the limit. CDN reads are bounded by the length asked for instead.
    pub max_response_bytes: u64,
    /// Most entries one listing (the files or folders of one folder) may have; a walk that
    /// announces or delivers more fails with a `Decode` error naming the limit.
    pub max_list_entries: u64,
    /// How long one walk of the whole library serves every folder's listing, once the
    /// service is seen to ignore the list filters (changes made through this client end it
    /// at once). Zero (the default): a walk per listing; a mount sets its `--dir-ttl`.
    pub whole_list_ttl: Duration,
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
            max_response_bytes: 64 << 20,
            max_list_entries: 1_000_000,
            whole_list_ttl: Duration::ZERO,
        }
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::new(self.max_attempts, self.backoff_base, self.backoff_max)
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
            .field("max_response_bytes", &self.max_response_bytes)
            .field("max_list_entries", &self.max_list_entries)
            .field("whole_list_ttl", &self.whole_list_ttl)
            .finish()
    }
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
    whole: whole::WholeLists,
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
    fn get(url: Url, template: &'static str) -> Call {
        Call {
            method: Method::GET,
            url,
            template,
            json: None,
            idempotency: Idempotency::Idempotent,
        }
    }

    fn what(&self, host: &str) -> String {
        format!("{} {host}{API_PREFIX}{}", self.method, self.template)
    }
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
            whole: whole::WholeLists::default(),
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
        let call = Call::get(url, "/folders");
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
            read_capped(
                resp,
                self.config.max_response_bytes,
                &what,
                call.idempotency,
            )
            .await
        }
        .instrument(span)
        .await
    }

    /// Runs `call` with retries and decodes its answer as `T`.
    async fn call_decoded<T: DeserializeOwned>(&self, call: &Call) -> ApiResult<T> {
        let what = &call.what(&self.host);
        retry::run(&self.policy, what, |n| async move {
            let body = self.attempt(call, n).await?;
            decode::<T>(&body, what)
        })
        .await
    }

    /// Runs `call` with retries and decodes `{"data": T}`.
    async fn call_data<T: DeserializeOwned>(&self, call: Call) -> ApiResult<T> {
        self.call_decoded::<DataEnvelope<T>>(&call)
            .await
            .map(|e| e.data)
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
            ..Call::get(url, template)
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
}

#[async_trait]
impl MediaClient for HttpClient {
    async fn list_folders(&self, parent: &Parent) -> ApiResult<Vec<Folder>> {
        let kind = whole::ListKind {
            path: "/folders",
            filter: "parentId",
            id_of: |f: &Folder| &f.id,
            parent_of: |f: &Folder| f.parent_id.as_deref(),
        };
        self.list_children(&kind, &self.whole.folders, parent).await
    }

    async fn get_folder(&self, id: &str) -> ApiResult<Folder> {
        self.call_data(Call::get(self.url(&["folders", id]), "/folders/{id}"))
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
        let answer = ApiError::name_taken_on_conflict(self.call_data(call).await);
        self.whole.changed();
        answer
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
        let answer = ApiError::name_taken_on_conflict(self.call_data(call).await);
        self.whole.changed();
        crate::api::moves::check_folder(self, id, update, answer?).await
    }

    async fn delete_folder(&self, id: &str) -> ApiResult<()> {
        let done = self
            .delete(self.url(&["folders", id]), "/folders/{id}")
            .await;
        self.whole.changed();
        done
    }

    async fn list_files(&self, folder: &Parent) -> ApiResult<Vec<MediaFile>> {
        let kind = whole::ListKind {
            path: "/files",
            filter: "folderId",
            id_of: |f: &MediaFile| &f.id,
            parent_of: |f: &MediaFile| f.folder_id.as_deref(),
        };
        self.list_children(&kind, &self.whole.files, folder).await
    }

    async fn get_file(&self, id: &str) -> ApiResult<MediaFile> {
        self.call_data(Call::get(self.url(&["files", id]), "/files/{id}"))
            .await
    }

    async fn create_file(&self, meta: &NewFile, content: &Path) -> ApiResult<MediaFile> {
        let what = format!("POST {}{API_PREFIX}/files", self.host);
        let answer = retry::run(&self.policy, &what, |n| {
            self.upload_once(meta, content, &what, n)
        })
        .await;
        self.whole.changed();
        ApiError::name_taken_on_conflict(answer)
    }

    async fn update_file(&self, id: &str, update: &FileUpdate) -> ApiResult<MediaFile> {
        let call = self.json_call(
            Method::PATCH,
            self.url(&["files", id]),
            "/files/{id}",
            update,
            Idempotency::Idempotent,
        )?;
        let answer = ApiError::name_taken_on_conflict(self.call_data(call).await);
        self.whole.changed();
        crate::api::moves::check_file(self, id, update, answer?).await
    }

    async fn delete_file(&self, id: &str) -> ApiResult<()> {
        let done = self.delete(self.url(&["files", id]), "/files/{id}").await;
        self.whole.changed();
        done
    }

    async fn read_range(&self, url: &str, offset: u64, len: u64) -> ApiResult<Bytes> {
        let mut pieces = self.read_signed(url, offset, len, len).await?;
        Ok(pieces.pop().unwrap_or_default())
    }

    async fn read_range_pieces(
        &self,
        url: &str,
        offset: u64,
        len: u64,
        piece: u64,
    ) -> ApiResult<Vec<Bytes>> {
        self.read_signed(url, offset, len, piece).await
    }

    fn forget_listings(&self) {
        self.whole.changed();
    }
}
