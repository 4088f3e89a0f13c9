//! Contract tests: the real HTTP client against the real embedded server over loopback.
//!
//! Each test starts its own server on an ephemeral port with its own library directory, so
//! tests run in parallel and counters (`/_emulator/stats`) belong to one test.

mod common;

use common::{pseudo_random as random_bytes, sha256 as sha};

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use mediafs::api::{
    ApiError, ApiErrorKind, ClientConfig, FileUpdate, FolderUpdate, HttpClient, MediaClient,
    MediaFile, NewFile, Parent,
};
use mediafs::server::{self, ServerConfig, ServerHandle};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Not `kpt_…`: the scrubber's pattern must not be what keeps it out of messages.
const TOKEN: &str = "contract-secret-t0k";

struct Env {
    srv: ServerHandle,
    client: HttpClient,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn start(tune: impl FnOnce(&mut ServerConfig)) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = ServerConfig::for_tests(dir.path().to_path_buf(), TOKEN);
        tune(&mut cfg);
        let srv = server::start(cfg).await.unwrap();
        let client = HttpClient::new(fast_config(&srv.base_url(), TOKEN)).unwrap();
        Env {
            srv,
            client,
            _dir: dir,
        }
    }

    fn base(&self) -> String {
        self.srv.base_url()
    }

    async fn stats(&self) -> Value {
        reqwest::Client::new()
            .get(format!("{}/_emulator/stats", self.base()))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn reset_stats(&self) {
        let r = reqwest::Client::new()
            .delete(format!("{}/_emulator/stats", self.base()))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    async fn faults(&self, cfg: Value) {
        let r = reqwest::Client::new()
            .put(format!("{}/_emulator/faults", self.base()))
            .bearer_auth(TOKEN)
            .json(&cfg)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }

    async fn upload(
        &self,
        dir: &Path,
        name: &str,
        folder: Option<&str>,
        bytes: &[u8],
    ) -> MediaFile {
        let path = dir.join(name);
        tokio::fs::write(&path, bytes).await.unwrap();
        self.client
            .create_file(&new_file(name, folder), &path)
            .await
            .unwrap()
    }

    async fn shutdown(self) {
        self.srv.shutdown().await;
    }
}

/// Short backoff so retry tests stay fast; the rest are the defaults.
fn fast_config(base: &str, token: &str) -> ClientConfig {
    let mut cfg = ClientConfig::new(base, token);
    cfg.backoff_base = Duration::from_millis(20);
    cfg.backoff_max = Duration::from_secs(2);
    cfg
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

fn route_count(stats: &Value, route: &str) -> u64 {
    stats["byRoute"][route].as_u64().unwrap_or(0)
}

fn status_count(stats: &Value, status: u16) -> u64 {
    stats["byStatus"][status.to_string()].as_u64().unwrap_or(0)
}

fn assert_no_token(err: &ApiError) {
    assert!(!format!("{err:?}").contains(TOKEN), "{err:?}");
    assert!(!err.to_string().contains(TOKEN), "{err}");
}

const FILES: &str = "GET /api/v1/media-manager/files";
const FILE_BY_ID: &str = "GET /api/v1/media-manager/files/{id}";
const CREATE_FILE: &str = "POST /api/v1/media-manager/files";
const CREATE_FOLDER: &str = "POST /api/v1/media-manager/folders";
const FOLDERS: &str = "GET /api/v1/media-manager/folders";
const CDN: &str = "GET /cdn/{key}";

#[tokio::test(flavor = "multi_thread")]
async fn all_ten_operations() {
    let env = Env::start(|_| {}).await;
    let c = &env.client;
    let tmp = tempfile::tempdir().unwrap();
    c.probe().await.unwrap();

    // Create Folder, Get Folders, Get Folder By ID.
    let a = c.create_folder("alpha / one", None).await.unwrap();
    assert_eq!(a.name, "alpha / one");
    assert_eq!(a.parent_id, None);
    let b = c.create_folder("beta", Some(&a.id)).await.unwrap();
    assert_eq!(b.parent_id.as_deref(), Some(a.id.as_str()));
    let root = c.list_folders(&Parent::Root).await.unwrap();
    assert_eq!(root.iter().map(|f| &f.id).collect::<Vec<_>>(), vec![&a.id]);
    let kids = c.list_folders(&Parent::Folder(a.id.clone())).await.unwrap();
    assert_eq!(kids, vec![b.clone()]);
    assert_eq!(c.get_folder(&b.id).await.unwrap(), b);

    // Update Folder: rename and move to the root.
    let moved = c
        .update_folder(
            &b.id,
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
    let f = env
        .upload(tmp.path(), "pixel.png", Some(&a.id), &bytes)
        .await;
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
    c.delete_folder(&b.id).await.unwrap();
    c.delete_folder(&a.id).await.unwrap();
    assert_eq!(
        c.get_folder(&a.id).await.unwrap_err().kind,
        ApiErrorKind::NotFound
    );
    assert!(c.list_folders(&Parent::Root).await.unwrap().is_empty());
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn listing_walks_all_pages() {
    let env = Env::start(|_| {}).await;
    let c = &env.client;
    let tmp = tempfile::tempdir().unwrap();
    let dir = c.create_folder("many", None).await.unwrap();
    let content = tmp.path().join("one.txt");
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
    env.upload(tmp.path(), "elsewhere.txt", None, b"y").await;

    env.reset_stats().await;
    let listed = c.list_files(&Parent::Folder(dir.id.clone())).await.unwrap();
    let mut want: Vec<_> = created.iter().map(|f| f.id.clone()).collect();
    let mut got: Vec<_> = listed.iter().map(|f| f.id.clone()).collect();
    want.sort();
    got.sort();
    got.dedup();
    assert_eq!(listed.len(), 250);
    assert_eq!(got, want);
    assert_eq!(
        route_count(&env.stats().await, FILES),
        3,
        "pages of 100, 100, 50"
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn large_upload_and_odd_range_reads() {
    const SIZE: usize = 100 << 20;
    const CHUNK: u64 = 8 << 20;
    let env = Env::start(|_| {}).await;
    let c = &env.client;
    let tmp = tempfile::tempdir().unwrap();
    let bytes = random_bytes(SIZE, 42);
    let t = Instant::now();
    let f = env.upload(tmp.path(), "big.bin", None, &bytes).await;
    eprintln!("100 MiB upload: {:?}", t.elapsed());
    assert_eq!(f.size(), SIZE as u64);

    let url = c.get_file(&f.id).await.unwrap().url().unwrap().to_string();
    let t = Instant::now();
    let mut hasher = Sha256::new();
    let mut offset = 0;
    while offset < SIZE as u64 {
        let part = c.read_range(&url, offset, CHUNK).await.unwrap();
        assert!(!part.is_empty());
        hasher.update(&part);
        offset += part.len() as u64;
    }
    eprintln!("100 MiB read in 8 MiB ranges: {:?}", t.elapsed());
    assert_eq!(offset, SIZE as u64);
    assert_eq!(hex::encode(hasher.finalize()), sha(&bytes));

    let last = SIZE as u64 - 1;
    for (off, len) in [
        (1u64, 1u64),
        (1, 10_000),
        (4095, 4097),
        (1_000_003, 65_537),
        (last, 1),
        (last, 100),
        (last - 10, 11),
    ] {
        let got = c.read_range(&url, off, len).await.unwrap();
        let end = ((off + len) as usize).min(SIZE);
        assert_eq!(sha(&got), sha(&bytes[off as usize..end]), "{off}+{len}");
    }
    for off in [SIZE as u64, SIZE as u64 + 12345] {
        assert_eq!(
            c.read_range(&url, off, 10).await.unwrap(),
            Bytes::new(),
            "past EOF at {off}"
        );
    }
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_url_is_distinct_and_a_fresh_one_works() {
    let env = Env::start(|cfg| cfg.url_ttl = Duration::from_secs(1)).await;
    let c = &env.client;
    let tmp = tempfile::tempdir().unwrap();
    let bytes = random_bytes(5000, 7);
    let f = env.upload(tmp.path(), "short.bin", None, &bytes).await;
    let url = c.get_file(&f.id).await.unwrap().url().unwrap().to_string();
    tokio::time::sleep(Duration::from_secs(2)).await;

    env.reset_stats().await;
    let err = c.read_range(&url, 0, 100).await.unwrap_err();
    assert_eq!(err.kind, ApiErrorKind::UrlExpired, "{err}");
    assert_eq!(err.errno(), libc::EACCES);
    assert_eq!(
        route_count(&env.stats().await, CDN),
        1,
        "403 is not retried"
    );
    // The signature must not leak into the message.
    let sig = url.split_once('?').unwrap().1;
    assert!(!format!("{err:?}").contains(sig), "{err:?}");
    assert_no_token(&err);

    let fresh = c.get_file(&f.id).await.unwrap().url().unwrap().to_string();
    let got = c.read_range(&fresh, 100, 200).await.unwrap();
    assert_eq!(sha(&got), sha(&bytes[100..300]));
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_succeed_under_injected_5xx_and_429() {
    let env = Env::start(|_| {}).await;
    let c = &env.client;
    let tmp = tempfile::tempdir().unwrap();
    let f = env.upload(tmp.path(), "r.bin", None, b"retry me").await;

    // Two 503s, then success: three calls.
    env.reset_stats().await;
    env.faults(json!({"errorRate": 1.0, "count": 2})).await;
    assert_eq!(c.get_file(&f.id).await.unwrap().id, f.id);
    let s = env.stats().await;
    assert_eq!(route_count(&s, FILE_BY_ID), 3, "{s}");
    assert_eq!(status_count(&s, 503), 2, "{s}");

    // Two 429s with Retry-After: 1, then success; the client waited as told.
    env.reset_stats().await;
    env.faults(json!({"rateLimitRate": 1.0, "retryAfterSecs": 1, "count": 2}))
        .await;
    let t = Instant::now();
    let listed = c.list_files(&Parent::Root).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(
        t.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        t.elapsed()
    );
    let s = env.stats().await;
    assert_eq!(route_count(&s, FILES), 3, "{s}");
    assert_eq!(status_count(&s, 429), 2, "{s}");

    // 503 is safe to repeat for Create Folder and Create File (turned away unprocessed):
    // retried, and exactly one object comes into being.
    env.reset_stats().await;
    env.faults(json!({"errorRate": 1.0, "count": 2, "route": CREATE_FOLDER}))
        .await;
    let d = c.create_folder("once", None).await.unwrap();
    assert_eq!(route_count(&env.stats().await, CREATE_FOLDER), 3);
    let named: Vec<_> = c
        .list_folders(&Parent::Root)
        .await
        .unwrap()
        .into_iter()
        .filter(|f| f.name == "once")
        .collect();
    assert_eq!(named.len(), 1);

    env.faults(json!({"errorRate": 1.0, "count": 1, "route": CREATE_FILE}))
        .await;
    let bytes = random_bytes(300_000, 3);
    let up = env
        .upload(tmp.path(), "again.bin", Some(&d.id), &bytes)
        .await;
    assert_eq!(route_count(&env.stats().await, CREATE_FILE), 2);
    assert_eq!(
        c.list_files(&Parent::Folder(d.id.clone()))
            .await
            .unwrap()
            .len(),
        1
    );
    let got = c.read_range(up.url().unwrap(), 0, 1 << 20).await.unwrap();
    assert_eq!(sha(&got), sha(&bytes));

    // Persistent failure: bounded attempts, then EIO / EAGAIN.
    env.reset_stats().await;
    env.faults(json!({"errorRate": 1.0})).await;
    let err = c.get_folder(&d.id).await.unwrap_err();
    assert_eq!((err.kind, err.errno()), (ApiErrorKind::Server, libc::EIO));
    assert_eq!(status_count(&env.stats().await, 503), 6, "max_attempts = 6");
    assert_no_token(&err);
    env.faults(json!({"rateLimitRate": 1.0, "retryAfterSecs": 0}))
        .await;
    let err = c.get_folder(&d.id).await.unwrap_err();
    assert_eq!(
        (err.kind, err.errno()),
        (ApiErrorKind::RateLimited, libc::EAGAIN)
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_token_fails_fast_without_retries() {
    let env = Env::start(|_| {}).await;
    let wrong = "wrong-secret-t0k";
    let c = HttpClient::new(fast_config(&env.base(), wrong)).unwrap();
    env.reset_stats().await;
    let t = Instant::now();
    let err = c.probe().await.unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(
        (err.kind, err.errno()),
        (ApiErrorKind::Unauthorized, libc::EACCES)
    );
    assert_eq!(err.status, Some(401));
    let s = env.stats().await;
    assert_eq!(s["total"].as_u64(), Some(1), "{s}");
    assert_eq!(route_count(&s, FOLDERS), 1, "{s}");
    for secret in [wrong, TOKEN] {
        assert!(!format!("{err:?}").contains(secret), "{err:?}");
        assert!(!err.to_string().contains(secret), "{err}");
    }
    // Any other call: also a single attempt.
    let err = c.list_folders(&Parent::Root).await.unwrap_err();
    assert_eq!(err.kind, ApiErrorKind::Unauthorized);
    assert_eq!(env.stats().await["total"].as_u64(), Some(2));
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_url_is_a_quick_transport_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = HttpClient::new(fast_config(&format!("http://127.0.0.1:{port}/"), TOKEN)).unwrap();
    let t = Instant::now();
    let err = c.probe().await.unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(
        (err.kind, err.errno()),
        (ApiErrorKind::Transport, libc::EIO)
    );
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert_no_token(&err);
}

#[tokio::test(flavor = "multi_thread")]
async fn cdn_ignoring_range_still_gives_the_right_bytes() {
    let env = Env::start(|cfg| cfg.ignore_range = true).await;
    let c = &env.client;
    let tmp = tempfile::tempdir().unwrap();
    let bytes = random_bytes(3_000_007, 9);
    let f = env.upload(tmp.path(), "whole.bin", None, &bytes).await;
    let url = f.url().unwrap();
    let n = bytes.len() as u64;
    for (off, len) in [
        (0u64, 10u64),
        (1, 4095),
        (1_000_003, 1 << 20),
        (n - 1, 1),
        (n - 5, 100),
    ] {
        let got = c.read_range(url, off, len).await.unwrap();
        let end = ((off + len) as usize).min(bytes.len());
        assert_eq!(sha(&got), sha(&bytes[off as usize..end]), "{off}+{len}");
    }
    assert!(c.read_range(url, n + 1, 10).await.unwrap().is_empty());
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dropped_connection_mid_body_is_retried() {
    let env = Env::start(|_| {}).await;
    let c = &env.client;
    let tmp = tempfile::tempdir().unwrap();
    let bytes = random_bytes(4 << 20, 11);
    let f = env.upload(tmp.path(), "drop.bin", None, &bytes).await;
    env.reset_stats().await;
    env.faults(json!({"dropRate": 1.0, "route": CDN, "count": 1}))
        .await;
    let got = c
        .read_range(f.url().unwrap(), 12_345, 2 << 20)
        .await
        .unwrap();
    assert_eq!(sha(&got), sha(&bytes[12_345..12_345 + (2 << 20)]));
    assert_eq!(
        route_count(&env.stats().await, CDN),
        2,
        "one dropped, one whole"
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn non_empty_folder_delete_is_a_conflict() {
    let env = Env::start(|_| {}).await;
    let c = &env.client;
    let tmp = tempfile::tempdir().unwrap();
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

    let f = env.upload(tmp.path(), "in.txt", Some(&d.id), b"x").await;
    let err = c.delete_folder(&d.id).await.unwrap_err();
    assert_eq!(err.errno(), libc::ENOTEMPTY);
    c.delete_file(&f.id).await.unwrap();
    c.delete_folder(&d.id).await.unwrap();
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_over_the_limit_is_too_large() {
    let env = Env::start(|cfg| cfg.max_upload_size = 1 << 20).await;
    let c = &env.client;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("big.bin");
    std::fs::write(&path, random_bytes(2 << 20, 5)).unwrap();
    env.reset_stats().await;
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
    assert_eq!(
        route_count(&env.stats().await, CREATE_FILE),
        1,
        "413 is final"
    );
    assert_no_token(&err);
    assert!(c.list_files(&Parent::Root).await.unwrap().is_empty());
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_never_carry_the_token() {
    let env = Env::start(|_| {}).await;
    let c = &env.client;
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
    env.shutdown().await;
}
