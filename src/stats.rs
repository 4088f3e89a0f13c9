//! What `mediafs status` and `--metrics-addr` report about one mount.
//!
//! Remote requests and their errors are counted by [`CountingClient`], a [`MediaClient`]
//! wrapper, so neither the filesystem core nor the API client carries counters for it. The
//! rest (pending uploads, block cache) is read from the core when a report is asked for.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::api::{
    ApiErrorKind, ApiResult, FileUpdate, Folder, FolderUpdate, MediaClient, MediaFile, NewFile,
    Parent,
};
use crate::fs::read::Reader;
use crate::fs::write::Uploader;

/// Counters of one mount, shared by the client wrapper and the reporters.
pub struct Stats {
    started: Instant,
    started_at: SystemTime,
    requests: Mutex<BTreeMap<&'static str, u64>>,
    /// (request, error kind) → count.
    errors: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    uploads: Mutex<HashMap<u64, Running>>,
    next_upload: AtomicU64,
    /// Last failure of an upload by file name, until one of that name succeeds.
    upload_errors: Mutex<HashMap<String, String>>,
}

struct Running {
    name: String,
    size: u64,
    started: Instant,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A stable, lower-case name for each error kind (status output and metric labels).
pub fn kind_name(kind: ApiErrorKind) -> &'static str {
    match kind {
        ApiErrorKind::InvalidInput => "invalid_input",
        ApiErrorKind::Unauthorized => "unauthorized",
        ApiErrorKind::Forbidden => "forbidden",
        ApiErrorKind::NotFound => "not_found",
        ApiErrorKind::Conflict => "conflict",
        ApiErrorKind::NameTaken => "name_taken",
        ApiErrorKind::TooLarge => "too_large",
        ApiErrorKind::RateLimited => "rate_limited",
        ApiErrorKind::Server => "server",
        ApiErrorKind::Transport => "transport",
        ApiErrorKind::UrlExpired => "url_expired",
        ApiErrorKind::Decode => "decode",
        ApiErrorKind::Local => "local",
        #[allow(unreachable_patterns)]
        _ => "other",
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            started: Instant::now(),
            started_at: SystemTime::now(),
            requests: Mutex::default(),
            errors: Mutex::default(),
            uploads: Mutex::default(),
            next_upload: AtomicU64::new(0),
            upload_errors: Mutex::default(),
        }
    }
}

impl Stats {
    pub fn new() -> Arc<Stats> {
        Arc::new(Stats::default())
    }

    fn count<T>(&self, op: &'static str, r: &ApiResult<T>) {
        *lock(&self.requests).entry(op).or_default() += 1;
        if let Err(e) = r {
            *lock(&self.errors)
                .entry((op, kind_name(e.kind)))
                .or_default() += 1;
        }
    }

    /// Requests by operation.
    pub fn requests(&self) -> BTreeMap<String, u64> {
        lock(&self.requests)
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect()
    }

    /// Errors by (operation, kind).
    pub fn errors(&self) -> Vec<(String, String, u64)> {
        lock(&self.errors)
            .iter()
            .map(|((op, kind), n)| (op.to_string(), kind.to_string(), *n))
            .collect()
    }

    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}

/// A [`MediaClient`] that counts requests, errors by kind, and the uploads running now.
pub struct CountingClient {
    inner: Arc<dyn MediaClient>,
    stats: Arc<Stats>,
}

impl CountingClient {
    pub fn new(inner: Arc<dyn MediaClient>, stats: Arc<Stats>) -> Arc<CountingClient> {
        Arc::new(CountingClient { inner, stats })
    }
}

#[async_trait]
impl MediaClient for CountingClient {
    async fn list_folders(&self, parent: &Parent) -> ApiResult<Vec<Folder>> {
        let r = self.inner.list_folders(parent).await;
        self.stats.count("list_folders", &r);
        r
    }
    async fn get_folder(&self, id: &str) -> ApiResult<Folder> {
        let r = self.inner.get_folder(id).await;
        self.stats.count("get_folder", &r);
        r
    }
    async fn create_folder(&self, name: &str, parent_id: Option<&str>) -> ApiResult<Folder> {
        let r = self.inner.create_folder(name, parent_id).await;
        self.stats.count("create_folder", &r);
        r
    }
    async fn update_folder(&self, id: &str, update: &FolderUpdate) -> ApiResult<Folder> {
        let r = self.inner.update_folder(id, update).await;
        self.stats.count("update_folder", &r);
        r
    }
    async fn delete_folder(&self, id: &str) -> ApiResult<()> {
        let r = self.inner.delete_folder(id).await;
        self.stats.count("delete_folder", &r);
        r
    }
    async fn list_files(&self, folder: &Parent) -> ApiResult<Vec<MediaFile>> {
        let r = self.inner.list_files(folder).await;
        self.stats.count("list_files", &r);
        r
    }
    async fn get_file(&self, id: &str) -> ApiResult<MediaFile> {
        let r = self.inner.get_file(id).await;
        self.stats.count("get_file", &r);
        r
    }
    async fn create_file(&self, meta: &NewFile, content: &Path) -> ApiResult<MediaFile> {
        let key = self.stats.next_upload.fetch_add(1, Ordering::Relaxed);
        let size = std::fs::metadata(content).map(|m| m.len()).unwrap_or(0);
        lock(&self.stats.uploads).insert(
            key,
            Running {
                name: meta.file_name.clone(),
                size,
                started: Instant::now(),
            },
        );
        let r = self.inner.create_file(meta, content).await;
        lock(&self.stats.uploads).remove(&key);
        match &r {
            Ok(_) => {
                lock(&self.stats.upload_errors).remove(&meta.file_name);
            }
            Err(e) => {
                lock(&self.stats.upload_errors).insert(meta.file_name.clone(), e.to_string());
            }
        }
        self.stats.count("create_file", &r);
        r
    }
    async fn update_file(&self, id: &str, update: &FileUpdate) -> ApiResult<MediaFile> {
        let r = self.inner.update_file(id, update).await;
        self.stats.count("update_file", &r);
        r
    }
    async fn delete_file(&self, id: &str) -> ApiResult<()> {
        let r = self.inner.delete_file(id).await;
        self.stats.count("delete_file", &r);
        r
    }
    async fn read_range(&self, url: &str, offset: u64, len: u64) -> ApiResult<Bytes> {
        let r = self.inner.read_range(url, offset, len).await;
        self.stats.count("read_range", &r);
        r
    }

    fn forget_listings(&self) {
        self.inner.forget_listings();
    }
    async fn read_range_pieces(
        &self,
        url: &str,
        offset: u64,
        len: u64,
        piece: u64,
    ) -> ApiResult<Vec<Bytes>> {
        let r = self.inner.read_range_pieces(url, offset, len, piece).await;
        self.stats.count("read_range", &r);
        r
    }
}

/// One upload in a report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UploadInfo {
    pub name: String,
    pub size: u64,
    /// Seconds since the data was last written (pending) or the attempt started (in flight).
    pub age_secs: u64,
    pub last_error: Option<String>,
    /// The local copy of a pending upload's data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_path: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CacheInfo {
    pub used_bytes: u64,
    pub capacity_bytes: u64,
    /// Block reads served from the cache, and those that needed a fetch.
    pub hits: u64,
    pub misses: u64,
    /// hits / (hits + misses); none before the first read.
    pub hit_rate: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorCount {
    pub request: String,
    pub kind: String,
    pub count: u64,
}

/// The whole report (`mediafs status --json` prints it as is).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    pub mountpoint: PathBuf,
    /// The API URL (never a token), or the embedded server's.
    pub remote: String,
    pub read_only: bool,
    pub started_at: String,
    pub uptime_secs: u64,
    /// Every upload not on the service yet, including those being sent right now.
    pub pending_uploads: Vec<UploadInfo>,
    /// The Create File calls running now (most of them are also pending).
    pub uploads_in_flight: Vec<UploadInfo>,
    pub cache: CacheInfo,
    /// Remote requests by operation.
    pub requests: BTreeMap<String, u64>,
    /// Failed requests by error kind (all operations).
    pub errors: BTreeMap<String, u64>,
    /// Failed requests by operation and kind.
    pub errors_by_request: Vec<ErrorCount>,
}

impl Status {
    /// Every upload not on the service yet, once each (a pending upload being sent is also
    /// in flight), with whether it is being sent now: pending ones first.
    pub fn unfinished(&self) -> Vec<(&UploadInfo, bool)> {
        let same = |a: &UploadInfo, b: &UploadInfo| a.name == b.name && a.size == b.size;
        let sending = |u: &UploadInfo| self.uploads_in_flight.iter().any(|f| same(f, u));
        let pending = self.pending_uploads.iter().map(|u| (u, sending(u)));
        let only_in_flight = self
            .uploads_in_flight
            .iter()
            .filter(|f| !self.pending_uploads.iter().any(|u| same(f, u)))
            .map(|f| (f, true));
        pending.chain(only_in_flight).collect()
    }
}

/// What a report is made of.
pub struct Sources {
    pub stats: Arc<Stats>,
    pub reader: Arc<Reader>,
    pub uploader: Option<Arc<Uploader>>,
    pub mountpoint: PathBuf,
    pub remote: String,
    pub read_only: bool,
    pub cache_capacity: u64,
}

fn age_of(path: &Path) -> u64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .map_or(0, |d| d.as_secs())
}

impl Sources {
    pub fn status(&self) -> Status {
        let pending = self
            .uploader
            .as_ref()
            .map(|u| u.pending())
            .unwrap_or_default()
            .into_iter()
            .map(|p| UploadInfo {
                age_secs: age_of(&p.data_path),
                name: p.name,
                size: p.size,
                last_error: p.last_error,
                data_path: Some(p.data_path),
            })
            .collect();
        let errs = lock(&self.stats.upload_errors).clone();
        let mut in_flight: Vec<UploadInfo> = lock(&self.stats.uploads)
            .values()
            .map(|r| UploadInfo {
                name: r.name.clone(),
                size: r.size,
                age_secs: r.started.elapsed().as_secs(),
                last_error: errs.get(&r.name).cloned(),
                data_path: None,
            })
            .collect();
        in_flight.sort_by(|a, b| a.name.cmp(&b.name));
        let (hits, misses) = self.reader.cache_counts();
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        let errors_by_request: Vec<ErrorCount> = self
            .stats
            .errors()
            .into_iter()
            .map(|(request, kind, count)| {
                *errors.entry(kind.clone()).or_default() += count;
                ErrorCount {
                    request,
                    kind,
                    count,
                }
            })
            .collect();
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            mountpoint: self.mountpoint.clone(),
            remote: self.remote.clone(),
            read_only: self.read_only,
            started_at: chrono::DateTime::<chrono::Utc>::from(self.stats.started_at)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            uptime_secs: self.stats.uptime_secs(),
            pending_uploads: pending,
            uploads_in_flight: in_flight,
            cache: CacheInfo {
                used_bytes: self.reader.cached_bytes(),
                capacity_bytes: self.cache_capacity,
                hits,
                misses,
                hit_rate: (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64),
            },
            requests: self.stats.requests(),
            errors,
            errors_by_request,
        }
    }
}

/// The API URL as shown to users: no user info, query or fragment (where a token could hide).
pub fn display_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let rest = match rest.split_once('/') {
        Some((auth, path)) => format!("{}/{path}", auth.rsplit('@').next().unwrap_or(auth)),
        None => rest.rsplit('@').next().unwrap_or(rest).to_string(),
    };
    if scheme.is_empty() {
        rest
    } else {
        format!("{scheme}://{rest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_url_drops_credentials_and_query() {
        assert_eq!(
            display_url("https://user:secret@api.example.com/v1?token=abc#x"),
            "https://api.example.com/v1"
        );
        assert_eq!(
            display_url("http://127.0.0.1:8787"),
            "http://127.0.0.1:8787"
        );
    }

    #[tokio::test]
    async fn counts_requests_errors_and_running_uploads() {
        let mock = crate::api::mock::MockClient::new();
        let stats = Stats::new();
        let c = CountingClient::new(mock, stats.clone());
        c.list_files(&Parent::Root).await.unwrap();
        assert!(c.get_file("nope").await.is_err());
        assert_eq!(stats.requests()["list_files"], 1);
        assert_eq!(stats.requests()["get_file"], 1);
        assert_eq!(
            stats.errors(),
            vec![("get_file".to_string(), "not_found".to_string(), 1)]
        );
    }
}
