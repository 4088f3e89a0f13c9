//! HTTP-only contract tests: the real HTTP client against the real embedded server over
//! loopback (retries, Range variants, large transfers, tokens). Behaviour the mock must share
//! is in the contract suite of `src/api/contract.rs`, run against both.
//!
//! Each test starts its own server on an ephemeral port with its own library directory, so
//! tests run in parallel and counters (`/_emulator/stats`) belong to one test.

mod common;

use common::{pseudo_random as random_bytes, sha256 as sha};

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mediafs::api::{
    ApiError, ApiErrorKind, ClientConfig, HttpClient, MediaClient, MediaFile, NewFile, Parent,
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
