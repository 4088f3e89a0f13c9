//! An in-memory [`MediaClient`] for unit tests of the filesystem core.
//!
//! It behaves as the embedded server does (filters, 404/409 cases, signed URLs that expire;
//! `crate::api::contract` runs the same cases against both) without HTTP, and adds what tests need on top: out-of-band changes (as
//! another user of the library would make), per-operation call counters, fault injection,
//! an offline switch and artificial latency.
//!
//! Signed URLs look like `mock://cdn/<file id>?Expires=<unix secs>&Signature=mock&n=<nonce>`.
//! `Expires` has one-second resolution, too coarse for fast tests, so the real expiry is an
//! [`Instant`] kept per issued URL; the nonce makes every issued URL distinct.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::error::{ApiError, ApiErrorKind, ApiResult};
use super::types::{FileUpdate, Folder, FolderUpdate, MediaFile, NewFile, Parent, Upload};
use super::MediaClient;

/// Operation names accepted by [`MockClient::calls`] and [`MockClient::fail_next`].
pub const OPS: [&str; 11] = [
    "list_folders",
    "get_folder",
    "create_folder",
    "update_folder",
    "delete_folder",
    "list_files",
    "get_file",
    "create_file",
    "update_file",
    "delete_file",
    "read_range",
];

const DEFAULT_URL_TTL: Duration = Duration::from_secs(600);
/// Issued URLs are pruned (expired ones only) once the table grows past this.
const URL_TABLE_PRUNE_AT: usize = 4096;

struct StoredFile {
    /// Stored without a URL: a fresh one is attached to every copy handed out.
    meta: MediaFile,
    bytes: Bytes,
}

struct IssuedUrl {
    file_id: String,
    expires: Instant,
}

struct State {
    folders: HashMap<String, Folder>,
    files: HashMap<String, StoredFile>,
    urls: HashMap<String, IssuedUrl>,
    url_nonce: u64,
    url_ttl: Duration,
    calls: HashMap<&'static str, u64>,
    faults: HashMap<&'static str, VecDeque<ApiErrorKind>>,
    offline: bool,
    latency: Duration,
    max_upload_size: Option<u64>,
    /// Last timestamp handed out, in microseconds since the epoch: timestamps are made
    /// strictly increasing so that "oldest first" orderings in tests are deterministic.
    last_micros: i64,
}

/// An in-memory Media Manager library. Cheap to create; share it as `Arc<MockClient>`
/// (or `Arc<dyn MediaClient>`).
pub struct MockClient {
    state: Mutex<State>,
}

impl MockClient {
    pub fn new() -> Arc<MockClient> {
        Arc::new(MockClient {
            state: Mutex::new(State {
                folders: HashMap::new(),
                files: HashMap::new(),
                urls: HashMap::new(),
                url_nonce: 0,
                url_ttl: DEFAULT_URL_TTL,
                calls: HashMap::new(),
                faults: HashMap::new(),
                offline: false,
                latency: Duration::ZERO,
                max_upload_size: None,
                last_micros: 0,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test must not poison the mock for the assertions that follow.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates a folder out of band (no call counted, no fault applied), as another user
    /// of the library would. The parent is not checked, so tests can build odd trees.
    pub fn add_folder(&self, name: &str, parent_id: Option<&str>) -> Folder {
        let mut st = self.lock();
        st.insert_folder(name, parent_id)
    }

    /// Creates a file out of band with `fileName = title`.
    pub fn add_file(&self, folder_id: Option<&str>, title: &str, bytes: &[u8]) -> MediaFile {
        let mut st = self.lock();
        let meta = NewFile {
            file_name: title.to_string(),
            mime_type: mime_guess::from_path(title)
                .first_or_octet_stream()
                .to_string(),
            title: Some(title.to_string()),
            folder_id: folder_id.map(str::to_string),
            ..Default::default()
        };
        let id = st.insert_file(&meta, Bytes::copy_from_slice(bytes));
        st.file_with_url(&id)
    }

    /// The stored bytes of a file, `None` if there is no such file.
    pub fn file_bytes(&self, id: &str) -> Option<Vec<u8>> {
        self.lock().files.get(id).map(|f| f.bytes.to_vec())
    }

    /// Every folder, oldest first.
    pub fn folders(&self) -> Vec<Folder> {
        let st = self.lock();
        let mut v: Vec<Folder> = st.folders.values().cloned().collect();
        v.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        v
    }

    /// Every file, oldest first, without signed URLs (this is not a client call).
    pub fn files(&self) -> Vec<MediaFile> {
        let st = self.lock();
        let mut v: Vec<MediaFile> = st.files.values().map(|f| f.meta.clone()).collect();
        v.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        v
    }

    /// How many times the operation `op` (a trait method name, see [`OPS`]) was called,
    /// failed calls included.
    pub fn calls(&self, op: &str) -> u64 {
        self.lock().calls.get(op).copied().unwrap_or(0)
    }

    pub fn total_calls(&self) -> u64 {
        self.lock().calls.values().sum()
    }

    pub fn reset_calls(&self) {
        self.lock().calls.clear();
    }

    /// Lifetime of URLs issued from now on (default 600 s).
    pub fn set_url_ttl(&self, ttl: Duration) {
        self.lock().url_ttl = ttl;
    }

    /// Makes every URL issued so far expired, as if its lifetime had passed.
    pub fn expire_urls(&self) {
        self.lock().urls.clear();
    }

    /// The next `times` calls of `op` fail with `kind` (queued after faults already set).
    ///
    /// # Panics
    /// If `op` is not one of [`OPS`]: a typo would otherwise make a test silently pass.
    pub fn fail_next(&self, op: &str, kind: ApiErrorKind, times: usize) {
        let op = op_name(op);
        let mut st = self.lock();
        st.faults
            .entry(op)
            .or_default()
            .extend(std::iter::repeat_n(kind, times));
    }

    /// While offline, every call fails with [`ApiErrorKind::Transport`].
    pub fn set_offline(&self, offline: bool) {
        self.lock().offline = offline;
    }

    /// Every call sleeps this long (tokio time) before doing anything.
    pub fn set_latency(&self, d: Duration) {
        self.lock().latency = d;
    }

    /// `create_file` with more bytes than this fails with [`ApiErrorKind::TooLarge`].
    pub fn set_max_upload_size(&self, bytes: u64) {
        self.lock().max_upload_size = Some(bytes);
    }

    /// The common prologue of every call: count it, wait, then apply offline and faults.
    async fn enter(&self, op: &'static str) -> ApiResult<()> {
        let latency = {
            let mut st = self.lock();
            *st.calls.entry(op).or_insert(0) += 1;
            st.latency
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let mut st = self.lock();
        if st.offline {
            return Err(ApiError::new(
                ApiErrorKind::Transport,
                format!("{op}: mock server unreachable"),
            ));
        }
        if let Some(kind) = st.faults.get_mut(op).and_then(VecDeque::pop_front) {
            return Err(error(kind, format!("{op}: injected fault")));
        }
        Ok(())
    }
}

/// Maps a caller's op name to the static one; panics on an unknown name.
fn op_name(op: &str) -> &'static str {
    OPS.iter()
        .copied()
        .find(|o| *o == op)
        .unwrap_or_else(|| panic!("MockClient: unknown operation {op:?}; expected one of {OPS:?}"))
}

/// An error of `kind` with the HTTP status the real client would have seen.
fn error(kind: ApiErrorKind, message: impl Into<String>) -> ApiError {
    let status = match kind {
        ApiErrorKind::InvalidInput => Some(422),
        ApiErrorKind::Unauthorized => Some(401),
        ApiErrorKind::Forbidden | ApiErrorKind::UrlExpired => Some(403),
        ApiErrorKind::NotFound => Some(404),
        ApiErrorKind::Conflict | ApiErrorKind::NameTaken => Some(409),
        ApiErrorKind::TooLarge => Some(413),
        ApiErrorKind::RateLimited => Some(429),
        ApiErrorKind::Server => Some(503),
        ApiErrorKind::Decode | ApiErrorKind::MoveIgnored => Some(200),
        ApiErrorKind::Other => Some(418),
        ApiErrorKind::Transport | ApiErrorKind::Local => None,
    };
    let e = ApiError::new(kind, message);
    match status {
        Some(s) => e.with_status(s),
        None => e,
    }
}

fn not_found(what: &str, id: &str) -> ApiError {
    error(ApiErrorKind::NotFound, format!("{what} {id} not found"))
}

fn timestamp(micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .expect("timestamp in range")
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

impl State {
    /// Now, as a timestamp strictly later than every one handed out before.
    fn now(&mut self) -> String {
        let micros = Utc::now().timestamp_micros().max(self.last_micros + 1);
        self.last_micros = micros;
        timestamp(micros)
    }

    fn insert_folder(&mut self, name: &str, parent_id: Option<&str>) -> Folder {
        let now = self.now();
        let folder = Folder {
            id: uuid::Uuid::now_v7().to_string(),
            name: name.to_string(),
            parent_id: parent_id.map(str::to_string),
            created_at: Some(now.clone()),
            updated_at: Some(now),
        };
        self.folders.insert(folder.id.clone(), folder.clone());
        folder
    }

    fn insert_file(&mut self, meta: &NewFile, bytes: Bytes) -> String {
        let now = self.now();
        let id = uuid::Uuid::new_v4().to_string();
        let upload_id = uuid::Uuid::new_v4().to_string();
        let title = meta.title.clone().unwrap_or_else(|| meta.file_name.clone());
        let file = MediaFile {
            id: id.clone(),
            upload_id: Some(upload_id.clone()),
            folder_id: meta.folder_id.clone(),
            title: Some(title),
            description: meta.description.clone(),
            alt_text: meta.alt_text.clone(),
            sort_order: Some(meta.sort_order.unwrap_or(0)),
            is_favorite: Some(meta.is_favorite.unwrap_or(false)),
            is_private: Some(meta.is_private.unwrap_or(false)),
            created_at: Some(now.clone()),
            updated_at: Some(now),
            upload: Some(Upload {
                id: Some(upload_id),
                file_name: meta.file_name.clone(),
                file_size: bytes.len() as u64,
                file_url: None,
                mime_type: Some(meta.mime_type.clone()),
            }),
        };
        self.files
            .insert(id.clone(), StoredFile { meta: file, bytes });
        id
    }

    fn get_folder(&self, id: &str) -> ApiResult<&Folder> {
        self.folders.get(id).ok_or_else(|| not_found("folder", id))
    }

    /// Checks that a new parent (of a folder or file) names an existing folder.
    fn check_parent(&self, parent: Option<&str>) -> ApiResult<()> {
        match parent {
            None => Ok(()),
            Some(id) => self.get_folder(id).map(|_| ()),
        }
    }

    /// True if `candidate` is `ancestor` or lies below it.
    fn is_within(&self, candidate: &str, ancestor: &str) -> bool {
        let mut cur = Some(candidate.to_string());
        // Bounded by the number of folders, in case a test built a cycle out of band.
        for _ in 0..=self.folders.len() {
            match cur {
                None => return false,
                Some(ref id) if id == ancestor => return true,
                Some(id) => cur = self.folders.get(&id).and_then(|f| f.parent_id.clone()),
            }
        }
        false
    }

    fn issue_url(&mut self, file_id: &str) -> String {
        if self.urls.len() >= URL_TABLE_PRUNE_AT {
            let now = Instant::now();
            self.urls.retain(|_, u| u.expires > now);
        }
        self.url_nonce += 1;
        let expires_unix = Utc::now().timestamp() + self.url_ttl.as_secs() as i64;
        let url = format!(
            "mock://cdn/{file_id}?Expires={expires_unix}&Signature=mock&n={}",
            self.url_nonce
        );
        let expires = Instant::now() + self.url_ttl;
        self.urls.insert(
            url.clone(),
            IssuedUrl {
                file_id: file_id.to_string(),
                expires,
            },
        );
        url
    }

    /// A copy of a stored file carrying a freshly issued URL. The file must exist.
    fn file_with_url(&mut self, id: &str) -> MediaFile {
        let url = self.issue_url(id);
        let mut f = self.files[id].meta.clone();
        if let Some(u) = f.upload.as_mut() {
            u.file_url = Some(url);
        }
        f
    }
}

#[async_trait]
impl MediaClient for MockClient {
    async fn list_folders(&self, parent: &Parent) -> ApiResult<Vec<Folder>> {
        self.enter("list_folders").await?;
        // Like the server: a filter on an unknown folder matches nothing (no 404).
        let st = self.lock();
        let mut v: Vec<Folder> = st
            .folders
            .values()
            .filter(|f| f.parent_id.as_deref() == parent.as_id())
            .cloned()
            .collect();
        v.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        Ok(v)
    }

    async fn get_folder(&self, id: &str) -> ApiResult<Folder> {
        self.enter("get_folder").await?;
        self.lock().get_folder(id).cloned()
    }

    async fn create_folder(&self, name: &str, parent_id: Option<&str>) -> ApiResult<Folder> {
        self.enter("create_folder").await?;
        let mut st = self.lock();
        if name.is_empty() {
            return Err(error(ApiErrorKind::InvalidInput, "folder name is empty"));
        }
        st.check_parent(parent_id)?;
        Ok(st.insert_folder(name, parent_id))
    }

    async fn update_folder(&self, id: &str, update: &FolderUpdate) -> ApiResult<Folder> {
        self.enter("update_folder").await?;
        let mut st = self.lock();
        st.get_folder(id)?;
        if let Some(name) = &update.name {
            if name.is_empty() {
                return Err(error(ApiErrorKind::InvalidInput, "folder name is empty"));
            }
        }
        if let Some(Some(new_parent)) = &update.parent_id {
            st.check_parent(Some(new_parent))?;
            if st.is_within(new_parent, id) {
                return Err(error(
                    ApiErrorKind::InvalidInput,
                    "cannot move a folder into itself or its descendant",
                ));
            }
        }
        let now = st.now();
        let f = st.folders.get_mut(id).expect("checked above");
        if let Some(name) = &update.name {
            f.name = name.clone();
        }
        if let Some(parent) = &update.parent_id {
            f.parent_id = parent.clone();
        }
        f.updated_at = Some(now);
        Ok(f.clone())
    }

    async fn delete_folder(&self, id: &str) -> ApiResult<()> {
        self.enter("delete_folder").await?;
        let mut st = self.lock();
        st.get_folder(id)?;
        let has_children = st
            .folders
            .values()
            .any(|f| f.parent_id.as_deref() == Some(id))
            || st
                .files
                .values()
                .any(|f| f.meta.folder_id.as_deref() == Some(id));
        if has_children {
            return Err(error(
                ApiErrorKind::Conflict,
                format!("folder {id} is not empty"),
            ));
        }
        st.folders.remove(id);
        Ok(())
    }

    async fn list_files(&self, folder: &Parent) -> ApiResult<Vec<MediaFile>> {
        self.enter("list_files").await?;
        let mut st = self.lock();
        let mut ids: Vec<(Option<String>, String)> = st
            .files
            .values()
            .filter(|f| f.meta.folder_id.as_deref() == folder.as_id())
            .map(|f| (f.meta.created_at.clone(), f.meta.id.clone()))
            .collect();
        ids.sort();
        Ok(ids
            .into_iter()
            .map(|(_, id)| st.file_with_url(&id))
            .collect())
    }

    async fn get_file(&self, id: &str) -> ApiResult<MediaFile> {
        self.enter("get_file").await?;
        let mut st = self.lock();
        if !st.files.contains_key(id) {
            return Err(not_found("file", id));
        }
        Ok(st.file_with_url(id))
    }

    async fn create_file(&self, meta: &NewFile, content: &Path) -> ApiResult<MediaFile> {
        self.enter("create_file").await?;
        let bytes = tokio::fs::read(content).await.map_err(|e| {
            ApiError::new(
                ApiErrorKind::Local,
                format!("reading {}: {e}", content.display()),
            )
            .with_source(e)
        })?;
        let mut st = self.lock();
        if meta.file_name.is_empty() {
            return Err(error(ApiErrorKind::InvalidInput, "fileName is empty"));
        }
        if let Some(max) = st.max_upload_size {
            if bytes.len() as u64 > max {
                return Err(error(
                    ApiErrorKind::TooLarge,
                    format!("{} bytes is over the limit of {max}", bytes.len()),
                ));
            }
        }
        st.check_parent(meta.folder_id.as_deref())?;
        let id = st.insert_file(meta, Bytes::from(bytes));
        Ok(st.file_with_url(&id))
    }

    async fn update_file(&self, id: &str, update: &FileUpdate) -> ApiResult<MediaFile> {
        self.enter("update_file").await?;
        let mut st = self.lock();
        if !st.files.contains_key(id) {
            return Err(not_found("file", id));
        }
        if let Some(Some(folder)) = &update.folder_id {
            st.check_parent(Some(folder))?;
        }
        let now = st.now();
        let f = &mut st.files.get_mut(id).expect("checked above").meta;
        if let Some(v) = &update.title {
            f.title = Some(v.clone());
        }
        if let Some(v) = &update.description {
            f.description = Some(v.clone());
        }
        if let Some(v) = &update.alt_text {
            f.alt_text = Some(v.clone());
        }
        if let Some(v) = update.sort_order {
            f.sort_order = Some(v);
        }
        if let Some(v) = update.is_favorite {
            f.is_favorite = Some(v);
        }
        if let Some(v) = update.is_private {
            f.is_private = Some(v);
        }
        if let Some(v) = &update.folder_id {
            f.folder_id = v.clone();
        }
        f.updated_at = Some(now);
        Ok(st.file_with_url(id))
    }

    async fn delete_file(&self, id: &str) -> ApiResult<()> {
        self.enter("delete_file").await?;
        let mut st = self.lock();
        if st.files.remove(id).is_none() {
            return Err(not_found("file", id));
        }
        st.urls.retain(|_, u| u.file_id != id);
        Ok(())
    }

    async fn read_range(&self, url: &str, offset: u64, len: u64) -> ApiResult<Bytes> {
        self.enter("read_range").await?;
        let st = self.lock();
        // Unknown (altered, never issued) and expired URLs look the same, as on a CDN.
        let file_id = match st.urls.get(url) {
            Some(u) if Instant::now() < u.expires => u.file_id.as_str(),
            _ => {
                return Err(error(
                    ApiErrorKind::UrlExpired,
                    "signed URL expired or invalid",
                ))
            }
        };
        let Some(file) = st.files.get(file_id) else {
            return Err(not_found("file", file_id));
        };
        let size = file.bytes.len() as u64;
        let start = offset.min(size);
        let end = offset.saturating_add(len).min(size);
        Ok(file.bytes.slice(start as usize..end as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn sha(b: &[u8]) -> String {
        hex::encode(Sha256::digest(b))
    }

    fn temp_content(bytes: &[u8]) -> tempfile::NamedTempFile {
        use std::io::Write;
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f.flush().unwrap();
        f
    }

    fn new_file(name: &str, folder: Option<&str>) -> NewFile {
        NewFile {
            file_name: name.to_string(),
            mime_type: "application/octet-stream".to_string(),
            folder_id: folder.map(str::to_string),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn folder_crud_and_filters() {
        let m = MockClient::new();
        let a = m.create_folder("a", None).await.unwrap();
        let b = m.create_folder("b", Some(&a.id)).await.unwrap();
        let c = m.add_folder("c", None);
        assert_eq!(
            uuid::Uuid::parse_str(&a.id).unwrap().get_version_num(),
            7,
            "folder ids are UUIDv7"
        );

        let root: Vec<String> = m
            .list_folders(&Parent::Root)
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(root, ["a", "c"]);
        let in_a = m.list_folders(&Parent::Folder(a.id.clone())).await.unwrap();
        assert_eq!(in_a, vec![b.clone()]);

        let got = m.get_folder(&b.id).await.unwrap();
        assert_eq!(got.parent_id.as_deref(), Some(a.id.as_str()));

        let moved = m
            .update_folder(
                &b.id,
                &FolderUpdate {
                    name: Some("b2".into()),
                    parent_id: Some(Some(c.id.clone())),
                },
            )
            .await
            .unwrap();
        assert_eq!(moved.name, "b2");
        assert_eq!(moved.parent_id.as_deref(), Some(c.id.as_str()));
        assert!(moved.updated_at > b.updated_at);
        assert!(m
            .list_folders(&Parent::Folder(a.id.clone()))
            .await
            .unwrap()
            .is_empty());

        let to_root = m
            .update_folder(
                &b.id,
                &FolderUpdate {
                    parent_id: Some(None),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(to_root.parent_id, None);
        assert_eq!(m.list_folders(&Parent::Root).await.unwrap().len(), 3);

        m.delete_folder(&b.id).await.unwrap();
        let e = m.get_folder(&b.id).await.unwrap_err();
        assert_eq!((e.kind, e.status), (ApiErrorKind::NotFound, Some(404)));
        assert_eq!(m.folders().len(), 2);
    }

    #[tokio::test]
    async fn folder_errors() {
        let m = MockClient::new();
        let a = m.add_folder("a", None);
        let b = m.add_folder("b", Some(&a.id));
        let c = m.add_folder("c", Some(&b.id));

        // Moving into itself or a descendant.
        for target in [&a.id, &b.id, &c.id] {
            let e = m
                .update_folder(
                    &a.id,
                    &FolderUpdate {
                        parent_id: Some(Some(target.clone())),
                        ..Default::default()
                    },
                )
                .await
                .unwrap_err();
            assert_eq!(e.kind, ApiErrorKind::InvalidInput, "target {target}");
        }
        // Non-empty folder: sub-folder, then a file.
        let e = m.delete_folder(&b.id).await.unwrap_err();
        assert_eq!((e.kind, e.status), (ApiErrorKind::Conflict, Some(409)));
        m.delete_folder(&c.id).await.unwrap();
        let f = m.add_file(Some(&b.id), "x", b"x");
        assert_eq!(
            m.delete_folder(&b.id).await.unwrap_err().kind,
            ApiErrorKind::Conflict
        );
        m.delete_file(&f.id).await.unwrap();
        m.delete_folder(&b.id).await.unwrap();

        // Unknown ids.
        for e in [
            m.get_folder("nope").await.unwrap_err(),
            m.delete_folder("nope").await.unwrap_err(),
            m.create_folder("x", Some("nope")).await.unwrap_err(),
            m.update_folder("nope", &FolderUpdate::default())
                .await
                .unwrap_err(),
        ] {
            assert_eq!(e.kind, ApiErrorKind::NotFound, "{e}");
        }
        // A filter on an unknown folder matches nothing, as on the server.
        let unknown = Parent::Folder("nope".into());
        assert!(m.list_folders(&unknown).await.unwrap().is_empty());
        assert!(m.list_files(&unknown).await.unwrap().is_empty());
        assert_eq!(
            m.create_folder("", None).await.unwrap_err().kind,
            ApiErrorKind::InvalidInput
        );
    }

    #[tokio::test]
    async fn file_crud_filters_and_bytes() {
        let m = MockClient::new();
        let dir = m.add_folder("d", None);
        let content: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let tmp = temp_content(&content);

        let created = m
            .create_file(&new_file("photo.jpg", Some(&dir.id)), tmp.path())
            .await
            .unwrap();
        assert_eq!(
            created.title.as_deref(),
            Some("photo.jpg"),
            "title defaults"
        );
        assert_eq!(created.size(), content.len() as u64);
        assert_eq!(created.folder_id.as_deref(), Some(dir.id.as_str()));
        assert_eq!(
            uuid::Uuid::parse_str(&created.id)
                .unwrap()
                .get_version_num(),
            4
        );
        assert_eq!(sha(&m.file_bytes(&created.id).unwrap()), sha(&content));

        let titled = m
            .create_file(
                &NewFile {
                    title: Some("Holiday".into()),
                    ..new_file("h.png", None)
                },
                tmp.path(),
            )
            .await
            .unwrap();
        assert_eq!(titled.title.as_deref(), Some("Holiday"));
        assert_eq!(titled.upload.as_ref().unwrap().file_name, "h.png");
        let root_other = m.add_file(None, "r.txt", b"root");

        let in_dir = m.list_files(&Parent::Folder(dir.id.clone())).await.unwrap();
        assert_eq!(in_dir.len(), 1);
        assert_eq!(in_dir[0].id, created.id);
        let at_root: Vec<String> = m
            .list_files(&Parent::Root)
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.id)
            .collect();
        assert_eq!(at_root, [titled.id.clone(), root_other.id.clone()]);

        // Read back through the signed URL, whole and in ranges.
        let got = m.get_file(&created.id).await.unwrap();
        let url = got.url().unwrap();
        assert!(url.starts_with(&format!("mock://cdn/{}?Expires=", created.id)));
        let whole = m.read_range(url, 0, 1 << 20).await.unwrap();
        assert_eq!(sha(&whole), sha(&content));
        let mid = m.read_range(url, 4000, 100).await.unwrap();
        assert_eq!(sha(&mid), sha(&content[4000..4100]));
        let tail = m.read_range(url, 9990, 100).await.unwrap();
        assert_eq!(sha(&tail), sha(&content[9990..]));
        assert!(m.read_range(url, 20_000, 10).await.unwrap().is_empty());

        // Update: title, metadata, move; fileName never changes.
        let upd = m
            .update_file(
                &created.id,
                &FileUpdate {
                    title: Some("renamed".into()),
                    is_favorite: Some(true),
                    folder_id: Some(None),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(upd.title.as_deref(), Some("renamed"));
        assert_eq!(upd.is_favorite, Some(true));
        assert_eq!(upd.folder_id, None);
        assert_eq!(upd.upload.as_ref().unwrap().file_name, "photo.jpg");
        assert!(upd.updated_at > created.updated_at);
        assert!(m
            .list_files(&Parent::Folder(dir.id.clone()))
            .await
            .unwrap()
            .is_empty());

        m.delete_file(&created.id).await.unwrap();
        assert_eq!(m.file_bytes(&created.id), None);
        assert_eq!(
            m.get_file(&created.id).await.unwrap_err().kind,
            ApiErrorKind::NotFound
        );
        assert_eq!(
            m.delete_file(&created.id).await.unwrap_err().kind,
            ApiErrorKind::NotFound
        );
        let e = m
            .update_file(
                &titled.id,
                &FileUpdate {
                    folder_id: Some(Some("nope".into())),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind, ApiErrorKind::NotFound);
        assert_eq!(m.files().len(), 2);
    }

    #[tokio::test]
    async fn create_file_limits_and_local_errors() {
        let m = MockClient::new();
        m.set_max_upload_size(4);
        let ok = temp_content(b"1234");
        let big = temp_content(b"12345");
        m.create_file(&new_file("ok", None), ok.path())
            .await
            .unwrap();
        let e = m
            .create_file(&new_file("big", None), big.path())
            .await
            .unwrap_err();
        assert_eq!((e.kind, e.status), (ApiErrorKind::TooLarge, Some(413)));
        let e = m
            .create_file(&new_file("x", None), Path::new("/nonexistent/mediafs-mock"))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ApiErrorKind::Local);
        let e = m
            .create_file(&new_file("x", Some("nope")), ok.path())
            .await
            .unwrap_err();
        assert_eq!(e.kind, ApiErrorKind::NotFound);
        assert_eq!(m.files().len(), 1);
        assert_eq!(m.calls("create_file"), 4);
    }

    #[tokio::test]
    async fn timestamps_strictly_increase() {
        let m = MockClient::new();
        let mut last = String::new();
        for i in 0..200 {
            let f = m.add_file(None, &format!("f{i}"), b"");
            let ts = f.created_at.unwrap();
            assert!(ts > last, "{ts} after {last}");
            assert!(ts.ends_with('Z') && ts.len() == "2026-02-20T11:29:59.000000Z".len());
            last = ts;
        }
    }

    #[tokio::test]
    async fn urls_expire_and_are_distinct() {
        let m = MockClient::new();
        m.set_url_ttl(Duration::from_millis(50));
        let f = m.add_file(None, "a", b"hello");
        let u1 = m.get_file(&f.id).await.unwrap().url().unwrap().to_string();
        let u2 = m.get_file(&f.id).await.unwrap().url().unwrap().to_string();
        assert_ne!(u1, u2);
        assert_eq!(&m.read_range(&u1, 0, 5).await.unwrap()[..], b"hello");

        // An altered URL is refused like an expired one.
        let altered = u1.replace("Signature=mock", "Signature=evil");
        let e = m.read_range(&altered, 0, 5).await.unwrap_err();
        assert_eq!((e.kind, e.status), (ApiErrorKind::UrlExpired, Some(403)));

        tokio::time::sleep(Duration::from_millis(80)).await;
        for u in [&u1, &u2] {
            let e = m.read_range(u, 0, 5).await.unwrap_err();
            assert_eq!(e.kind, ApiErrorKind::UrlExpired);
            // The message must not carry the signed URL.
            assert!(!e.to_string().contains("Signature"), "{e}");
        }
        // A fresh URL works again.
        m.set_url_ttl(Duration::from_secs(60));
        let u3 = m.get_file(&f.id).await.unwrap().url().unwrap().to_string();
        assert_eq!(&m.read_range(&u3, 1, 3).await.unwrap()[..], b"ell");
        m.expire_urls();
        assert_eq!(
            m.read_range(&u3, 0, 1).await.unwrap_err().kind,
            ApiErrorKind::UrlExpired
        );
    }

    #[tokio::test]
    async fn fail_next_counts_and_recovers() {
        let m = MockClient::new();
        m.fail_next("get_folder", ApiErrorKind::Server, 2);
        m.fail_next("get_folder", ApiErrorKind::RateLimited, 1);
        let a = m.add_folder("a", None);
        let e1 = m.get_folder(&a.id).await.unwrap_err();
        let e2 = m.get_folder(&a.id).await.unwrap_err();
        let e3 = m.get_folder(&a.id).await.unwrap_err();
        assert_eq!((e1.kind, e1.status), (ApiErrorKind::Server, Some(503)));
        assert_eq!(e2.kind, ApiErrorKind::Server);
        assert_eq!((e3.kind, e3.status), (ApiErrorKind::RateLimited, Some(429)));
        assert_eq!(m.get_folder(&a.id).await.unwrap(), a);
        // Faults are per operation.
        m.list_folders(&Parent::Root).await.unwrap();
        assert_eq!(m.calls("get_folder"), 4);
        assert_eq!(m.calls("list_folders"), 1);
        assert_eq!(m.calls("delete_file"), 0);
        assert_eq!(m.total_calls(), 5);
        m.reset_calls();
        assert_eq!(m.total_calls(), 0);
        // A failed mutation changes nothing.
        m.fail_next("delete_folder", ApiErrorKind::Server, 1);
        assert!(m.delete_folder(&a.id).await.is_err());
        assert_eq!(m.folders().len(), 1);
    }

    #[test]
    #[should_panic(expected = "unknown operation")]
    fn fail_next_rejects_unknown_op() {
        MockClient::new().fail_next("get_files", ApiErrorKind::Server, 1);
    }

    #[tokio::test]
    async fn offline_fails_every_call() {
        let m = MockClient::new();
        let f = m.add_file(None, "a", b"abc");
        let url = f.url().unwrap().to_string();
        m.set_offline(true);
        let errs = [
            m.list_folders(&Parent::Root).await.unwrap_err(),
            m.list_files(&Parent::Root).await.unwrap_err(),
            m.get_file(&f.id).await.unwrap_err(),
            m.delete_file(&f.id).await.unwrap_err(),
            m.create_folder("x", None).await.unwrap_err(),
            m.read_range(&url, 0, 3).await.unwrap_err(),
        ];
        for e in &errs {
            assert_eq!((e.kind, e.status), (ApiErrorKind::Transport, None));
        }
        assert_eq!(m.total_calls(), errs.len() as u64);
        assert!(m.folders().is_empty(), "offline create changed state");
        m.set_offline(false);
        assert_eq!(&m.read_range(&url, 0, 3).await.unwrap()[..], b"abc");
    }

    #[tokio::test]
    async fn latency_is_applied() {
        let m = MockClient::new();
        m.set_latency(Duration::from_millis(30));
        let t0 = Instant::now();
        m.list_folders(&Parent::Root).await.unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(30));
    }

    #[tokio::test]
    async fn usable_as_trait_object() {
        let m = MockClient::new();
        let client: Arc<dyn MediaClient> = m.clone();
        client.create_folder("via dyn", None).await.unwrap();
        assert_eq!(m.folders()[0].name, "via dyn");
    }
}
