//! The contract: behaviour the in-memory mock and the HTTP client talking to the embedded
//! server must share, so that the filesystem tests run on the mock test what a mount sees.
//!
//! Each case is one `async fn` over a [`Backend`], run twice by [`contract!`]: against a
//! `MockClient`, and against an `HttpClient` with a fresh embedded server on loopback. What
//! only one side can show (request counts from the server's `/_emulator/stats`) is checked
//! under `if let Some(http) = b.http()`. HTTP-only behaviour (retries, Range variants,
//! 100 MiB transfers) lives in `tests/contract.rs`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::mock::MockClient;
use super::{
    ApiError, ApiErrorKind, ClientConfig, FileUpdate, FolderUpdate, HttpClient, MediaClient,
    MediaFile, NewFile, Parent,
};
use crate::server::{self, ServerConfig, ServerHandle};

/// Not `kpt_…`: the scrubber's pattern must not be what keeps it out of messages.
const TOKEN: &str = "contract-secret-t0k";

const FILES: &str = "GET /api/v1/media-manager/files";
const CREATE_FILE: &str = "POST /api/v1/media-manager/files";
const CDN: &str = "GET /cdn/{key}";

/// What a case may change about the library it runs on.
#[derive(Clone, Copy)]
struct Settings {
    url_ttl: Duration,
    max_upload_size: Option<u64>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            url_ttl: Duration::from_secs(600),
            max_upload_size: None,
        }
    }
}

/// The HTTP side: the embedded server and its test hooks.
struct Http {
    srv: ServerHandle,
    _dir: tempfile::TempDir,
}

impl Http {
    /// Test hooks, with the token (harmless where the hooks need none).
    fn hook(&self, method: reqwest::Method) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .request(method, format!("{}/_emulator/stats", self.srv.base_url()))
            .bearer_auth(TOKEN)
    }

    async fn stats(&self) -> Value {
        let r = self.hook(reqwest::Method::GET).send().await.unwrap();
        assert!(r.status().is_success(), "stats: {}", r.status());
        r.json().await.unwrap()
    }

    async fn reset_stats(&self) {
        let r = self.hook(reqwest::Method::DELETE).send().await.unwrap();
        assert!(r.status().is_success(), "reset stats: {}", r.status());
    }

    async fn route_count(&self, route: &str) -> u64 {
        self.stats().await["byRoute"][route].as_u64().unwrap_or(0)
    }
}

struct Backend {
    client: Arc<dyn MediaClient>,
    http: Option<Http>,
    /// Contents of uploads, written here first (Create File reads a local file).
    tmp: tempfile::TempDir,
}

impl Backend {
    async fn start_mock(s: Settings) -> Backend {
        let m = MockClient::new();
        m.set_url_ttl(s.url_ttl);
        if let Some(max) = s.max_upload_size {
            m.set_max_upload_size(max);
        }
        Backend {
            client: m,
            http: None,
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    async fn start_http(s: Settings) -> Backend {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = ServerConfig::for_tests(dir.path().to_path_buf(), TOKEN);
        cfg.url_ttl = s.url_ttl;
        if let Some(max) = s.max_upload_size {
            cfg.max_upload_size = max;
        }
        let srv = server::start(cfg).await.unwrap();
        let mut cc = ClientConfig::new(srv.base_url(), TOKEN);
        // Short backoff so retries stay fast; the rest are the defaults.
        cc.backoff_base = Duration::from_millis(20);
        cc.backoff_max = Duration::from_secs(2);
        let client = HttpClient::new(cc).unwrap();
        client.probe().await.unwrap();
        Backend {
            client: Arc::new(client),
            http: Some(Http { srv, _dir: dir }),
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    fn http(&self) -> Option<&Http> {
        self.http.as_ref()
    }

    /// Creates a file with `bytes` (title = file name) through the client.
    async fn upload(&self, name: &str, folder: Option<&str>, bytes: &[u8]) -> MediaFile {
        let path = self.tmp.path().join(name);
        tokio::fs::write(&path, bytes).await.unwrap();
        self.client
            .create_file(&new_file(name, folder), &path)
            .await
            .unwrap()
    }

    async fn shutdown(self) {
        if let Some(h) = self.http {
            h.srv.shutdown().await;
        }
    }
}

/// Runs `case` against the mock and against HTTP + the embedded server.
macro_rules! contract {
    ($case:ident) => {
        contract!($case, Settings::default());
    };
    ($case:ident, $settings:expr) => {
        mod $case {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mock() {
                let b = Backend::start_mock($settings).await;
                super::$case(&b).await;
                b.shutdown().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn http() {
                let b = Backend::start_http($settings).await;
                super::$case(&b).await;
                b.shutdown().await;
            }
        }
    };
}

fn new_file(name: &str, folder: Option<&str>) -> NewFile {
    NewFile {
        file_name: name.to_string(),
        mime_type: "application/octet-stream".into(),
        title: Some(name.to_string()),
        folder_id: folder.map(str::to_string),
        ..Default::default()
    }
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Deterministic pseudo-random bytes (xorshift).
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn assert_no_token(err: &ApiError) {
    assert!(!format!("{err:?}").contains(TOKEN), "{err:?}");
    assert!(!err.to_string().contains(TOKEN), "{err}");
}

contract!(all_ten_operations);
async fn all_ten_operations(b: &Backend) {
    let c = &b.client;

    // Create Folder, Get Folders, Get Folder By ID.
    let a = c.create_folder("alpha / one", None).await.unwrap();
    assert_eq!(a.name, "alpha / one");
    assert_eq!(a.parent_id, None);
    let f2 = c.create_folder("beta", Some(&a.id)).await.unwrap();
    assert_eq!(f2.parent_id.as_deref(), Some(a.id.as_str()));
    let root = c.list_folders(&Parent::Root).await.unwrap();
    assert_eq!(root.iter().map(|f| &f.id).collect::<Vec<_>>(), vec![&a.id]);
    let kids = c.list_folders(&Parent::Folder(a.id.clone())).await.unwrap();
    assert_eq!(kids, vec![f2.clone()]);
    assert_eq!(c.get_folder(&f2.id).await.unwrap(), f2);

    // Update Folder: rename and move to the root.
    let moved = c
        .update_folder(
            &f2.id,
            &FolderUpdate {
                name: Some("gamma".into()),
                parent_id: Some(None),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (moved.name.as_str(), moved.parent_id.as_deref()),
        ("gamma", None)
    );
    assert_eq!(c.list_folders(&Parent::Root).await.unwrap().len(), 2);
    assert!(c
        .list_folders(&Parent::Folder(a.id.clone()))
        .await
        .unwrap()
        .is_empty());

    // Create File, Get Files, Get File By ID, read the bytes back.
    let bytes = random_bytes(70_001, 1);
    let f = b.upload("pixel.png", Some(&a.id), &bytes).await;
    assert_eq!(f.size(), bytes.len() as u64);
    assert_eq!(f.folder_id.as_deref(), Some(a.id.as_str()));
    assert_eq!(f.title.as_deref(), Some("pixel.png"));
    let listed = c.list_files(&Parent::Folder(a.id.clone())).await.unwrap();
    assert_eq!(
        listed.iter().map(|f| &f.id).collect::<Vec<_>>(),
        vec![&f.id]
    );
    assert!(c.list_files(&Parent::Root).await.unwrap().is_empty());
    let got = c.get_file(&f.id).await.unwrap();
    assert_eq!(got.upload.as_ref().unwrap().file_name, "pixel.png");
    let read = c.read_range(got.url().unwrap(), 0, 1 << 20).await.unwrap();
    assert_eq!(sha(&read), sha(&bytes));

    // Update File: title, metadata, move to the root.
    let upd = c
        .update_file(
            &f.id,
            &FileUpdate {
                title: Some("renamed".into()),
                description: Some("desc".into()),
                is_favorite: Some(true),
                folder_id: Some(None),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(upd.title.as_deref(), Some("renamed"));
    assert_eq!(upd.description.as_deref(), Some("desc"));
    assert_eq!(upd.is_favorite, Some(true));
    assert_eq!(upd.folder_id, None);
    assert_eq!(upd.upload.as_ref().unwrap().file_name, "pixel.png");
    assert_eq!(c.list_files(&Parent::Root).await.unwrap().len(), 1);

    // Delete File, Delete Folder.
    c.delete_file(&f.id).await.unwrap();
    let gone = c.get_file(&f.id).await.unwrap_err();
    assert_eq!(
        (gone.kind, gone.errno()),
        (ApiErrorKind::NotFound, libc::ENOENT)
    );
    c.delete_folder(&f2.id).await.unwrap();
    c.delete_folder(&a.id).await.unwrap();
    assert_eq!(
        c.get_folder(&a.id).await.unwrap_err().kind,
        ApiErrorKind::NotFound
    );
    assert!(c.list_folders(&Parent::Root).await.unwrap().is_empty());
}

contract!(listing_walks_all_pages);
async fn listing_walks_all_pages(b: &Backend) {
    let c = &b.client;
    let dir = c.create_folder("many", None).await.unwrap();
    let content = b.tmp.path().join("one.txt");
    std::fs::write(&content, b"x").unwrap();
    let created: Vec<MediaFile> = futures::stream::iter(0..250)
        .map(|i| {
            let meta = new_file(&format!("f{i:03}.txt"), Some(&dir.id));
            let content = content.clone();
            async move { c.create_file(&meta, &content).await }
        })
        .buffer_unordered(8)
        .try_collect()
        .await
        .unwrap();
    // A file outside the folder must not show up.
    b.upload("elsewhere.txt", None, b"y").await;

    if let Some(http) = b.http() {
        http.reset_stats().await;
    }
    let listed = c.list_files(&Parent::Folder(dir.id.clone())).await.unwrap();
    let mut want: Vec<_> = created.iter().map(|f| f.id.clone()).collect();
    let mut got: Vec<_> = listed.iter().map(|f| f.id.clone()).collect();
    want.sort();
    got.sort();
    got.dedup();
    assert_eq!(listed.len(), 250);
    assert_eq!(got, want);
    if let Some(http) = b.http() {
        assert_eq!(http.route_count(FILES).await, 3, "pages of 100, 100, 50");
    }
}

contract!(
    expired_url_is_distinct_and_a_fresh_one_works,
    Settings {
        url_ttl: Duration::from_secs(1),
        ..Settings::default()
    }
);
async fn expired_url_is_distinct_and_a_fresh_one_works(b: &Backend) {
    let c = &b.client;
    let bytes = random_bytes(5000, 7);
    let f = b.upload("short.bin", None, &bytes).await;
    let url = c.get_file(&f.id).await.unwrap().url().unwrap().to_string();
    tokio::time::sleep(Duration::from_secs(2)).await;

    if let Some(http) = b.http() {
        http.reset_stats().await;
    }
    let err = c.read_range(&url, 0, 100).await.unwrap_err();
    assert_eq!(err.kind, ApiErrorKind::UrlExpired, "{err}");
    assert_eq!(err.errno(), libc::EACCES);
    if let Some(http) = b.http() {
        assert_eq!(http.route_count(CDN).await, 1, "403 is not retried");
    }
    // The signature must not leak into the message.
    let sig = url.split_once('?').unwrap().1;
    assert!(!format!("{err:?}").contains(sig), "{err:?}");
    assert_no_token(&err);

    let fresh = c.get_file(&f.id).await.unwrap().url().unwrap().to_string();
    let got = c.read_range(&fresh, 100, 200).await.unwrap();
    assert_eq!(sha(&got), sha(&bytes[100..300]));
}

contract!(non_empty_folder_delete_is_a_conflict);
async fn non_empty_folder_delete_is_a_conflict(b: &Backend) {
    let c = &b.client;
    let d = c.create_folder("full", None).await.unwrap();
    let sub = c.create_folder("sub", Some(&d.id)).await.unwrap();
    let err = c.delete_folder(&d.id).await.unwrap_err();
    assert_eq!(
        (err.kind, err.errno()),
        (ApiErrorKind::Conflict, libc::ENOTEMPTY)
    );
    assert_eq!(err.status, Some(409));
    assert_no_token(&err);
    c.delete_folder(&sub.id).await.unwrap();

    let f = b.upload("in.txt", Some(&d.id), b"x").await;
    let err = c.delete_folder(&d.id).await.unwrap_err();
    assert_eq!(err.errno(), libc::ENOTEMPTY);
    c.delete_file(&f.id).await.unwrap();
    c.delete_folder(&d.id).await.unwrap();
}

contract!(
    upload_over_the_limit_is_too_large,
    Settings {
        max_upload_size: Some(1 << 20),
        ..Settings::default()
    }
);
async fn upload_over_the_limit_is_too_large(b: &Backend) {
    let c = &b.client;
    let path = b.tmp.path().join("big.bin");
    std::fs::write(&path, random_bytes(2 << 20, 5)).unwrap();
    if let Some(http) = b.http() {
        http.reset_stats().await;
    }
    let err = c
        .create_file(&new_file("big.bin", None), &path)
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind, err.errno()),
        (ApiErrorKind::TooLarge, libc::EFBIG),
        "{err}"
    );
    assert_eq!(err.status, Some(413));
    if let Some(http) = b.http() {
        assert_eq!(http.route_count(CREATE_FILE).await, 1, "413 is final");
    }
    assert_no_token(&err);
    assert!(c.list_files(&Parent::Root).await.unwrap().is_empty());
}

contract!(errors_never_carry_the_token);
async fn errors_never_carry_the_token(b: &Backend) {
    let c = &b.client;
    let mut errs = vec![
        c.get_file("no-such-file").await.unwrap_err(),
        c.get_folder("no-such-folder").await.unwrap_err(),
        c.delete_file("no-such-file").await.unwrap_err(),
        c.create_folder("x", Some("no-such-parent"))
            .await
            .unwrap_err(),
    ];
    let missing = c
        .create_file(&new_file("m", None), Path::new("/nonexistent/mediafs"))
        .await
        .unwrap_err();
    assert_eq!(missing.kind, ApiErrorKind::Local);
    errs.push(missing);
    for err in &errs {
        assert_no_token(err);
    }
    assert_eq!(errs[0].kind, ApiErrorKind::NotFound);
    assert_eq!(errs[1].kind, ApiErrorKind::NotFound);
}

contract!(rejections_and_unknown_ids);
async fn rejections_and_unknown_ids(b: &Backend) {
    let c = &b.client;
    let a = c.create_folder("a", None).await.unwrap();
    let fb = c.create_folder("b", Some(&a.id)).await.unwrap();
    let fc = c.create_folder("c", Some(&fb.id)).await.unwrap();

    // Moving a folder into itself or a descendant.
    for target in [&a.id, &fb.id, &fc.id] {
        let e = c
            .update_folder(
                &a.id,
                &FolderUpdate {
                    parent_id: Some(Some(target.clone())),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind, ApiErrorKind::InvalidInput, "target {target}: {e}");
    }
    // Non-empty folder: a sub-folder, then a file.
    let e = c.delete_folder(&fb.id).await.unwrap_err();
    assert_eq!((e.kind, e.status), (ApiErrorKind::Conflict, Some(409)));
    c.delete_folder(&fc.id).await.unwrap();
    let f = b.upload("x", Some(&fb.id), b"x").await;
    assert_eq!(
        c.delete_folder(&fb.id).await.unwrap_err().kind,
        ApiErrorKind::Conflict
    );
    c.delete_file(&f.id).await.unwrap();
    c.delete_folder(&fb.id).await.unwrap();

    // Unknown ids.
    for e in [
        c.get_folder("nope").await.unwrap_err(),
        c.delete_folder("nope").await.unwrap_err(),
        c.create_folder("x", Some("nope")).await.unwrap_err(),
        c.update_folder("nope", &FolderUpdate::default())
            .await
            .unwrap_err(),
        c.get_file("nope").await.unwrap_err(),
        c.delete_file(&f.id).await.unwrap_err(),
        c.update_file(&f.id, &FileUpdate::default())
            .await
            .unwrap_err(),
    ] {
        assert_eq!(
            (e.kind, e.status),
            (ApiErrorKind::NotFound, Some(404)),
            "{e}"
        );
    }
    let g = b.upload("g", None, b"g").await;
    let e = c
        .update_file(
            &g.id,
            &FileUpdate {
                folder_id: Some(Some("nope".into())),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, ApiErrorKind::NotFound, "{e}");
    // A filter on an unknown folder matches nothing (no 404).
    let unknown = Parent::Folder("nope".into());
    assert!(c.list_folders(&unknown).await.unwrap().is_empty());
    assert!(c.list_files(&unknown).await.unwrap().is_empty());
    assert_eq!(
        c.create_folder("", None).await.unwrap_err().kind,
        ApiErrorKind::InvalidInput
    );
}

contract!(file_fields_and_ranges);
async fn file_fields_and_ranges(b: &Backend) {
    let c = &b.client;
    let dir = c.create_folder("d", None).await.unwrap();
    let bytes = random_bytes(10_000, 3);
    let path = b.tmp.path().join("content");
    std::fs::write(&path, &bytes).unwrap();

    // Without a title, the title is the file name.
    let untitled = c
        .create_file(
            &NewFile {
                title: None,
                ..new_file("photo.jpg", Some(&dir.id))
            },
            &path,
        )
        .await
        .unwrap();
    assert_eq!(untitled.title.as_deref(), Some("photo.jpg"));
    assert_eq!(untitled.size(), bytes.len() as u64);
    let titled = c
        .create_file(
            &NewFile {
                title: Some("Holiday".into()),
                ..new_file("h.png", None)
            },
            &path,
        )
        .await
        .unwrap();
    assert_eq!(titled.title.as_deref(), Some("Holiday"));
    assert_eq!(titled.upload.as_ref().unwrap().file_name, "h.png");

    // Ranges: inside, across the end, past the end.
    let url = c.get_file(&untitled.id).await.unwrap();
    let url = url.url().unwrap();
    let mid = c.read_range(url, 4000, 100).await.unwrap();
    assert_eq!(sha(&mid), sha(&bytes[4000..4100]));
    let tail = c.read_range(url, 9990, 100).await.unwrap();
    assert_eq!(sha(&tail), sha(&bytes[9990..]));
    assert!(c.read_range(url, 20_000, 10).await.unwrap().is_empty());

    // Update: title and flags; fileName never changes; updatedAt moves on.
    let upd = c
        .update_file(
            &untitled.id,
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
    assert!(upd.updated_at >= untitled.updated_at);
    assert!(c
        .list_files(&Parent::Folder(dir.id.clone()))
        .await
        .unwrap()
        .is_empty());
    let at_root: Vec<String> = c
        .list_files(&Parent::Root)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.id)
        .collect();
    let mut want = vec![untitled.id.clone(), titled.id.clone()];
    let mut got = at_root.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want);
}
