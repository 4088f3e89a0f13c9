//! Test harness: a real embedded server on loopback and a real FUSE mount of it by the
//! real `mediafs` binary, driven with real programs.
//!
//! FUSE tests fail (not skip) where /dev/fuse is missing, unless MEDIAFS_SKIP_FUSE_TESTS=1.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mediafs::api::{ClientConfig, HttpClient, MediaClient, MediaFile, NewFile};
use mediafs::server::{self, ServerConfig, ServerHandle};
use sha2::{Digest, Sha256};

pub const TOKEN: &str = "test-token-do-not-log";

/// Returns false (and the test should return) only when FUSE tests are explicitly skipped.
pub fn fuse_available() -> bool {
    if std::env::var("MEDIAFS_SKIP_FUSE_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("MEDIAFS_SKIP_FUSE_TESTS=1: skipping a FUSE test");
        return false;
    }
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: FUSE tests need it (set MEDIAFS_SKIP_FUSE_TESTS=1 to skip them explicitly)"
    );
    true
}

pub struct Server {
    pub rt: tokio::runtime::Runtime,
    pub handle: Option<ServerHandle>,
    pub config: ServerConfig,
    pub data_dir: tempfile::TempDir,
}

impl Server {
    pub fn start(tweak: impl FnOnce(&mut ServerConfig)) -> Server {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let data_dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::for_tests(data_dir.path().to_path_buf(), TOKEN);
        tweak(&mut config);
        let handle = rt
            .block_on(server::start(config.clone()))
            .expect("server starts");
        // Restarts reuse the same port.
        config.listen = handle.addr();
        Server {
            rt,
            handle: Some(handle),
            config,
            data_dir,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.config.listen)
    }

    pub fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            self.rt.block_on(h.shutdown());
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        let h = self
            .rt
            .block_on(server::start(self.config.clone()))
            .expect("server restarts");
        self.handle = Some(h);
    }

    pub fn client(&self) -> Arc<HttpClient> {
        Arc::new(HttpClient::new(ClientConfig::new(self.url(), TOKEN)).unwrap())
    }

    /// A blocking call on the server's runtime.
    pub fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Creates a file through the API (as another user of the library would).
    pub fn put_file(&self, folder: Option<&str>, title: &str, bytes: &[u8]) -> MediaFile {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tmp.path(), bytes).unwrap();
        let meta = NewFile {
            file_name: title.into(),
            title: Some(title.into()),
            mime_type: "application/octet-stream".into(),
            folder_id: folder.map(Into::into),
            ..Default::default()
        };
        let c = self.client();
        self.block(async move { c.create_file(&meta, tmp.path()).await })
            .expect("create file")
    }

    /// Creates a file with full metadata (`meta.folder_id`, title, description, …).
    pub fn put_file_meta(&self, meta: NewFile, bytes: &[u8]) -> MediaFile {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tmp.path(), bytes).unwrap();
        let c = self.client();
        self.block(async move { c.create_file(&meta, tmp.path()).await })
            .expect("create file")
    }

    /// Creates a file from a local file (streamed: large files never sit in memory).
    pub fn put_file_path(&self, folder: Option<&str>, title: &str, path: &Path) -> MediaFile {
        let meta = NewFile {
            file_name: title.into(),
            title: Some(title.into()),
            mime_type: "application/octet-stream".into(),
            folder_id: folder.map(Into::into),
            ..Default::default()
        };
        let c = self.client();
        let path = path.to_path_buf();
        self.block(async move { c.create_file(&meta, &path).await })
            .expect("create file")
    }

    pub fn put_folder(&self, parent: Option<&str>, name: &str) -> String {
        let c = self.client();
        self.block(async move { c.create_folder(name, parent).await })
            .expect("create folder")
            .id
    }

    /// Bytes of a remote file, read through the API + CDN (not through the mount).
    pub fn remote_bytes(&self, id: &str) -> Vec<u8> {
        let c = self.client();
        self.block(async move {
            let f = c.get_file(id).await.unwrap();
            let url = f.url().unwrap().to_string();
            let mut out = Vec::new();
            let mut off = 0u64;
            loop {
                let chunk = c.read_range(&url, off, 8 << 20).await.unwrap();
                if chunk.is_empty() {
                    break;
                }
                off += chunk.len() as u64;
                out.extend_from_slice(&chunk);
            }
            out
        })
    }

    /// All files of a folder (`None` = root), through the API.
    pub fn remote_files(&self, folder: Option<&str>) -> Vec<MediaFile> {
        let c = self.client();
        let p = mediafs::api::Parent::from_id(folder);
        self.block(async move { c.list_files(&p).await }).unwrap()
    }

    pub fn remote_folders(&self, parent: Option<&str>) -> Vec<mediafs::api::Folder> {
        let c = self.client();
        let p = mediafs::api::Parent::from_id(parent);
        self.block(async move { c.list_folders(&p).await }).unwrap()
    }

    pub fn stats(&self) -> serde_json::Value {
        let url = format!("{}/_emulator/stats", self.url());
        self.block(async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        })
    }

    pub fn reset_stats(&self) {
        let url = format!("{}/_emulator/stats", self.url());
        self.block(async move {
            reqwest::Client::new()
                .delete(url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
        });
    }

    /// Calls of one route template since the last reset.
    pub fn route_calls(&self, route: &str) -> u64 {
        self.stats()["byRoute"][route].as_u64().unwrap_or(0)
    }

    pub fn set_faults(&self, json: serde_json::Value) {
        let url = format!("{}/_emulator/faults", self.url());
        let r = self.block(async move {
            reqwest::Client::new()
                .put(url)
                .bearer_auth(TOKEN)
                .json(&json)
                .send()
                .await
                .unwrap()
        });
        assert!(r.status().is_success(), "setting faults: {}", r.status());
    }

    pub fn clear_faults(&self) {
        let url = format!("{}/_emulator/faults", self.url());
        self.block(async move {
            reqwest::Client::new()
                .delete(url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
        });
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

pub struct Mount {
    pub dir: tempfile::TempDir,
    pub cache_dir: PathBuf,
    pub child: Option<Child>,
    pub log: PathBuf,
    _work: tempfile::TempDir,
    args: Vec<String>,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mediafs")
}

impl Mount {
    /// Mounts `server` in the foreground (child process) with extra flags.
    pub fn new(server: &Server, extra: &[&str]) -> Mount {
        let work = tempfile::tempdir().unwrap();
        let cache_dir = work.path().join("cache");
        Self::with_cache_dir(server, extra, work, cache_dir)
    }

    pub fn with_cache_dir(
        server: &Server,
        extra: &[&str],
        work: tempfile::TempDir,
        cache_dir: PathBuf,
    ) -> Mount {
        Self::with_url(&server.url(), extra, work, cache_dir)
    }

    /// Mounts whatever service answers at `url` (one that is not the embedded server).
    pub fn at_url(url: &str, extra: &[&str]) -> Mount {
        let work = tempfile::tempdir().unwrap();
        let cache_dir = work.path().join("cache");
        Self::with_url(url, extra, work, cache_dir)
    }

    fn with_url(url: &str, extra: &[&str], work: tempfile::TempDir, cache_dir: PathBuf) -> Mount {
        let dir = tempfile::tempdir().unwrap();
        let token_file = work.path().join("token");
        std::fs::write(&token_file, TOKEN).unwrap();
        let log = work.path().join("mount.log");
        let mut args: Vec<String> = vec![
            "mount".into(),
            dir.path().display().to_string(),
            "--api-url".into(),
            url.to_string(),
            "--token-file".into(),
            token_file.display().to_string(),
            "--cache-dir".into(),
            cache_dir.display().to_string(),
            "--foreground".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut m = Mount {
            dir,
            cache_dir,
            child: None,
            log,
            _work: work,
            args,
        };
        m.spawn();
        m
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(&self.log).unwrap();
        let child = Command::new(bin())
            .args(&self.args)
            .env("MEDIAFS_LOG", "info,mediafs=debug")
            .env_remove("MEDIAFS_API_URL")
            .env_remove("MEDIAFS_TOKEN")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn mediafs");
        self.child = Some(child);
        self.wait_mounted();
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The daemon's process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn is_mounted(&self) -> bool {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let want = self.dir.path().display().to_string();
        mounts
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(want.as_str()))
    }

    fn wait_mounted(&mut self) {
        let start = Instant::now();
        while !self.is_mounted() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "mediafs exited with {status} before mounting; log:\n{}",
                    self.log_text()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "mount did not appear; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the daemon with SIGKILL (a crash).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // auto_unmount removes the mount shortly after the daemon dies.
        let start = Instant::now();
        while self.is_mounted() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.is_mounted() {
            let _ = Command::new("umount").arg("-l").arg(self.path()).status();
        }
    }

    /// Mounts again with the same flags and cache dir (after `kill` or `unmount`).
    pub fn remount(&mut self) {
        self.spawn();
    }

    /// Unmounts with `mediafs unmount` and waits for the daemon to exit; returns its log.
    pub fn unmount(&mut self) -> String {
        if self.child.is_none() {
            return self.log_text();
        }
        let out = Command::new(bin())
            .arg("unmount")
            .arg(self.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "unmount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut c = self.child.take().unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "daemon exit status {status}; log:\n{}",
                    self.log_text()
                );
                break;
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = c.kill();
                panic!(
                    "daemon did not exit after unmount; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.log_text()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new(bin())
                .arg("unmount")
                .arg(self.dir.path())
                .output();
            let start = Instant::now();
            while c.try_wait().ok().flatten().is_none() && start.elapsed() < Duration::from_secs(20)
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.is_mounted() {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// Runs a shell command (bash -c) in `cwd`; panics with its output unless it succeeds.
pub fn sh(cwd: &Path, script: &str) -> String {
    let out = sh_out(cwd, script);
    assert!(
        out.status.success(),
        "command failed ({}): {script}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn sh_out(cwd: &Path, script: &str) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("run bash")
}

pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn sha256_file(path: &Path) -> String {
    let mut h = Sha256::new();
    let mut f =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    std::io::copy(&mut f, &mut h).unwrap();
    hex::encode(h.finalize())
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
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

/// Writes `len` pseudo-random bytes to `path` in chunks; returns their SHA-256.
pub fn write_random_file(path: &Path, len: usize, seed: u64) -> String {
    let mut f = std::fs::File::create(path).unwrap();
    let mut h = Sha256::new();
    let mut done = 0;
    let mut s = seed;
    while done < len {
        let n = (len - done).min(4 << 20);
        let chunk = pseudo_random(n, s);
        s += 1;
        h.update(&chunk);
        f.write_all(&chunk).unwrap();
        done += n;
    }
    hex::encode(h.finalize())
}

/// Polls `cond` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    cond()
}
