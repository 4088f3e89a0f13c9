//! Another local user against mediafs: the attacker runs as uid/gid 65534 (`setpriv`), on
//! real servers and real mounts. What it must not be able to do is in README.md, "Security".
//!
//! The test directories are made traversable (0755) on purpose, so that only the modes
//! mediafs itself sets keep the attacker out.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use base64::Engine as _;
use common::{bin, fuse_available, sh, sha256, Mount, Server, TOKEN};
use serde_json::json;

const NOBODY: u32 = 65534;

/// Runs `script` with bash as uid/gid 65534 and no supplementary groups.
fn as_nobody(script: &str) -> Output {
    as_user(NOBODY, NOBODY, script)
}

fn as_user(uid: u32, gid: u32, script: &str) -> Output {
    Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
            "--",
            "bash",
            "-c",
            script,
        ])
        .current_dir("/")
        .env("MEDIAFS_TEST_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .output()
        .expect("setpriv (util-linux) runs")
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A work directory anyone may traverse (tempfile makes 0700 ones).
fn open_workdir() -> tempfile::TempDir {
    let w = tempfile::tempdir().unwrap();
    std::fs::set_permissions(w.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    w
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .mode()
        & 0o7777
}

/// Asserts the attacker gets "Permission denied" reading `path`.
fn nobody_cannot_read(path: &Path) {
    let o = as_nobody(&format!("cat -- '{}' > /dev/null", path.display()));
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("Permission denied"),
        "uid 65534 could read {} (or failed otherwise): {}",
        path.display(),
        text(&o)
    );
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            out.extend(files_under(&e.path()));
        } else if t.is_file() {
            out.push(e.path());
        }
    }
    out
}

/// A background `mediafs mount` of the embedded server (the default mount), unmounted
/// when dropped.
struct DefaultMount {
    mp: tempfile::TempDir,
}

impl DefaultMount {
    fn start(work: &Path, extra: &[&str]) -> Result<DefaultMount, String> {
        let mp = tempfile::tempdir().unwrap();
        let o = Command::new(bin())
            .arg("mount")
            .arg(mp.path())
            .arg("--data-dir")
            .arg(work.join("library"))
            .arg("--cache-dir")
            .arg(work.join("cache"))
            .arg("--log-file")
            .arg(work.join("mediafs.log"))
            .args(extra)
            .env("MEDIAFS_LOG", "info")
            .env_remove("MEDIAFS_API_URL")
            .env_remove("MEDIAFS_TOKEN")
            .output()
            .unwrap();
        if !o.status.success() {
            return Err(String::from_utf8_lossy(&o.stderr).into_owned());
        }
        Ok(DefaultMount { mp })
    }

    fn path(&self) -> &Path {
        self.mp.path()
    }
}

impl Drop for DefaultMount {
    fn drop(&mut self) {
        let _ = Command::new(bin())
            .arg("unmount")
            .arg(self.mp.path())
            .status();
        for _ in 0..100 {
            let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
            if !mounts.contains(&self.mp.path().display().to_string()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.mp.path())
            .status();
    }
}

/// The embedded server's URL, from the daemon's log.
fn embedded_url(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap();
    let i = text
        .find("url=http://127.0.0.1:")
        .unwrap_or_else(|| panic!("no server url in the log:\n{text}"));
    text[i + 4..].split_whitespace().next().unwrap().to_string()
}

#[test]
fn hooks_of_a_default_mount_are_absent_and_the_mount_keeps_working() {
    if !fuse_available() {
        return;
    }
    let work = open_workdir();
    let m = DefaultMount::start(work.path(), &[]).unwrap();
    let url = embedded_url(&work.path().join("mediafs.log"));
    let o = as_nobody(&format!(
        "for i in 1 2; do
           curl -s -o /dev/null -w '%{{http_code}} ' -X PUT -H 'Content-Type: application/json' \
             -d '{{\"errorRate\":1.0,\"latencyMs\":600000}}' {url}/_emulator/faults
           curl -s -o /dev/null -w '%{{http_code}} ' -H 'Authorization: Bearer guess' {url}/_emulator/stats
           curl -s -o /dev/null -w '%{{http_code}} ' {url}/_emulator/stats
         done
         curl -s -o /dev/null -w '%{{http_code}}' {url}/api/v1/media-manager/folders"
    ));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "404 404 404 404 404 404 401",
        "{}",
        text(&o)
    );
    // The owner's mount is untouched: list, read, write, read back.
    let out = sh(
        m.path(),
        "ls >/dev/null && cat */* >/dev/null 2>&1; mkdir -p new && \
         head -c 300000 /dev/urandom > /tmp/.sec-hooks-$$ && cp /tmp/.sec-hooks-$$ new/f && \
         cmp /tmp/.sec-hooks-$$ new/f && rm /tmp/.sec-hooks-$$ && ls new",
    );
    assert_eq!(out.trim(), "f");
}

#[test]
fn test_hooks_need_the_token() {
    let srv = Server::start(|_| {});
    let url = srv.url();
    let o = as_nobody(&format!(
        "curl -s -o /dev/null -w '%{{http_code}} ' -X PUT -H 'Content-Type: application/json' \
           -d '{{\"errorRate\":1.0}}' {url}/_emulator/faults
         curl -s -o /dev/null -w '%{{http_code}} ' -X DELETE {url}/_emulator/stats
         curl -s -o /dev/null -w '%{{http_code}}' -H 'Authorization: Bearer wrong' {url}/_emulator/stats"
    ));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "401 401 401",
        "{}",
        text(&o)
    );
    // Nothing changed: no fault was set.
    srv.put_folder(None, "still-works");
    assert_eq!(srv.remote_folders(None).len(), 1);
    // With the token, the hooks are there.
    srv.set_faults(json!({"errorRate": 0.0}));
    assert!(srv.stats()["total"].as_u64().unwrap() >= 2);
}

#[test]
fn library_cache_token_and_log_are_private() {
    if !fuse_available() {
        return;
    }
    let work = open_workdir();
    // A library of an older version: 0755 directory, 0644 database.
    let lib = work.path().join("library");
    std::fs::create_dir(&lib).unwrap();
    std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o755)).unwrap();
    {
        let m = DefaultMount::start(work.path(), &[]).unwrap();
        sh(
            m.path(),
            "head -c 100000 /dev/urandom > written.bin && ls >/dev/null",
        );
        assert_eq!(mode(&lib), 0o700);
        assert_eq!(mode(&lib.join("blobs")), 0o700);
        assert_eq!(mode(&work.path().join("cache")), 0o700);
        assert_eq!(mode(&work.path().join("mediafs.log")), 0o600);
        let files = files_under(&lib);
        assert!(files.iter().any(|f| f.ends_with("library.db-wal")));
        assert!(files.len() > 5, "{files:?}");
        for f in &files {
            assert_eq!(mode(f), 0o600, "{}", f.display());
            nobody_cannot_read(f);
        }
        nobody_cannot_read(&work.path().join("mediafs.log"));
        let o = as_nobody(&format!("ls '{}'", lib.display()));
        assert!(!o.status.success(), "{}", text(&o));
    }
    // `mediafs serve` with no token: the generated one is private.
    let lib2 = work.path().join("served");
    let mut srv = Serve::start(&lib2, &[]);
    srv.expect_line("generated a token");
    srv.stop();
    let token = lib2.join("generated-token");
    assert_eq!(mode(&token), 0o600);
    nobody_cannot_read(&token);
}

#[test]
fn staged_and_pending_uploads_are_private() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let work = open_workdir();
    let cache = work.path().join("cache");
    let mut m = Mount::with_cache_dir(
        &srv,
        &["--upload-retry-secs", "1"],
        tempfile::tempdir().unwrap(),
        cache.clone(),
    );
    srv.set_faults(json!({"errorRate": 1.0, "route": "POST /api/v1/media-manager/files"}));
    // The upload fails, so the bytes stay in the pending area.
    let _ = common::sh_out(m.path(), "head -c 50000 /dev/urandom > kept.bin");
    srv.clear_faults();
    let files = files_under(&cache);
    assert!(!files.is_empty(), "nothing staged in {}", cache.display());
    for f in &files {
        nobody_cannot_read(f);
    }
    let o = as_nobody(&format!("ls '{}'", cache.display()));
    assert!(!o.status.success(), "{}", text(&o));
    m.unmount();
}

#[test]
fn allow_other_enforces_the_modes_shown() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let folder = srv.put_folder(None, "shared");
    let bytes = common::pseudo_random(70_000, 7);
    srv.put_file(Some(&folder), "doc.bin", &bytes);

    // Without --allow-other, another user cannot even look.
    let private = Mount::new(&srv, &[]);
    let o = as_nobody(&format!("stat '{}'", private.path().display()));
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("Permission denied"),
        "{}",
        text(&o)
    );
    drop(private);

    // With it, entries are root's 0644/0755: readable, not writable.
    let m = Mount::new(&srv, &["--allow-other"]);
    let mp = m.path().display().to_string();
    let o = as_nobody(&format!(
        "sha256sum '{mp}/shared/doc.bin' && ls '{mp}/shared'"
    ));
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&sha256(&bytes)));
    for attempt in [
        format!("echo x > '{mp}/shared/doc.bin'"),
        format!("echo x >> '{mp}/shared/doc.bin'"),
        format!("truncate -s 0 '{mp}/shared/doc.bin'"),
        format!("rm -f '{mp}/shared/doc.bin'"),
        format!("mv '{mp}/shared/doc.bin' '{mp}/shared/moved.bin'"),
        format!("mkdir '{mp}/shared/sub'"),
        format!("touch '{mp}/shared/new.txt'"),
        format!("rmdir '{mp}/shared'"),
        format!("mkdir '{mp}/top'"),
    ] {
        let o = as_nobody(&attempt);
        assert!(
            !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("Permission denied"),
            "{attempt}: {}",
            text(&o)
        );
    }
    // The service saw none of it.
    let files = srv.remote_files(Some(&folder));
    assert_eq!(files.len(), 1);
    assert_eq!(sha256(&srv.remote_bytes(&files[0].id)), sha256(&bytes));
    assert_eq!(srv.remote_folders(None).len(), 1);
    assert_eq!(srv.remote_folders(Some(&folder)).len(), 0);
    drop(m);

    // Sharing read-only with one group: 0640/0750 owned by that group.
    let m = Mount::new(
        &srv,
        &[
            "--allow-other",
            "--gid",
            "65534",
            "--file-mode",
            "640",
            "--dir-mode",
            "750",
        ],
    );
    let mp = m.path().display().to_string();
    let o = as_user(
        NOBODY,
        NOBODY,
        &format!("cat '{mp}/shared/doc.bin' | sha256sum"),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&sha256(&bytes)));
    let o = as_user(NOBODY, NOBODY, &format!("touch '{mp}/shared/x'"));
    assert!(!o.status.success(), "the group can write: {}", text(&o));
    let o = as_user(NOBODY, 65533, &format!("ls '{mp}/shared'"));
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("Permission denied"),
        "a user outside the group got in: {}",
        text(&o)
    );
}

/// `mediafs serve` as a child process, optionally under `prlimit`.
struct Serve {
    child: Child,
    url: String,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Serve {
    fn start(data_dir: &Path, extra: &[&str]) -> Serve {
        Self::start_with(data_dir, extra, None)
    }

    fn start_with(data_dir: &Path, extra: &[&str], nofile: Option<u32>) -> Serve {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut cmd = match nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg("--").arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env_remove("MEDIAFS_SERVER_TOKENS")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let s = Serve {
            child,
            url: format!("http://127.0.0.1:{port}"),
            lines,
        };
        s.expect_line("listening");
        s
    }

    /// Waits for a line of its output holding `what`.
    fn expect_line(&self, what: &str) {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(30)) {
                Ok(l) if l.contains(what) => return,
                Ok(_) => {}
                Err(e) => panic!("mediafs serve never said {what:?}: {e}"),
            }
        }
    }

    fn stop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The attacker's side of the connection tests, as a Python program run by uid 65534.
const PROBE: &str = r#"
import os, socket, sys, time
host, port, what = "127.0.0.1", int(sys.argv[1]), sys.argv[2]
def closed_after(s, bound=60):
    s.settimeout(bound)
    t = time.monotonic()
    try:
        while s.recv(65536):
            pass
    except OSError:
        pass
    return time.monotonic() - t
def conn():
    return socket.create_connection((host, port))
if what == "slow-header":
    s = conn(); s.sendall(b"GET /api/v1/media-manager/folders HTTP/1.1\r\nHost: x\r\n")
    print(closed_after(s))
elif what == "silent":
    print(closed_after(conn()))
elif what == "keep-alive":
    s = conn(); s.sendall(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
    s.settimeout(60); first = s.recv(65536)
    assert first.startswith(b"HTTP/1.1 404"), first
    print(closed_after(s))
elif what == "slow-body":
    s = conn()
    auth = ("Authorization: Bearer " + os.environ["MEDIAFS_TEST_TOKEN"] + "\r\n").encode()
    s.sendall(b"POST /api/v1/media-manager/folders HTTP/1.1\r\nHost: x\r\n" + auth +
              b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"na")
    print(closed_after(s))
elif what == "flood":
    socks = [conn() for _ in range(int(sys.argv[3]))]
    print("flooding", len(socks), flush=True)
    sys.stdin.read()
"#;

#[test]
fn slow_idle_and_flooding_connections_are_closed_and_a_real_client_gets_through() {
    let work = open_workdir();
    let probe = work.path().join("probe.py");
    std::fs::write(&probe, PROBE).unwrap();
    let token_file = work.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    // 160 descriptors: the server fits (160 - 64) / 2 = 48 connections; 300 idle sockets
    // used to make accept() fail with "Too many open files".
    let srv = Serve::start_with(
        &work.path().join("library"),
        &[
            "--token-file",
            token_file.to_str().unwrap(),
            "--header-timeout",
            "2",
            "--body-timeout",
            "2",
        ],
        Some(160),
    );
    let port = srv.url.rsplit(':').next().unwrap().to_string();
    // Configured 2 s; "closed" means well before the probe's own 60 s bound.
    for what in ["slow-header", "silent", "keep-alive", "slow-body"] {
        let o = as_nobody(&format!("python3 '{}' {port} {what}", probe.display()));
        assert!(o.status.success(), "{what}: {}", text(&o));
        let secs: f64 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
        assert!(secs < 30.0, "{what} connection open for {secs} s");
    }

    let mut flood = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "bash",
            "-c",
            &format!("exec python3 '{}' {port} flood 300", probe.display()),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(flood.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "flooding 300");
    // While the 300 sockets are open: a real request (long client timeout: the point is
    // that it succeeds, not how fast).
    let o = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "60",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            &format!("Authorization: Bearer {TOKEN}"),
            &format!("{}/api/v1/media-manager/folders", srv.url),
        ])
        .output()
        .unwrap();
    drop(flood.stdin.take());
    let _ = flood.kill();
    let _ = flood.wait();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "200", "{}", text(&o));
}

#[test]
fn planted_token_file_and_log_link_are_replaced_or_refused() {
    let work = open_workdir();
    let lib = work.path().join("library");
    std::fs::create_dir(&lib).unwrap();
    std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o700)).unwrap();
    let target = work.path().join("target");
    std::fs::write(&target, "precious").unwrap();

    // A planted world-readable token file: replaced by a new private one.
    let token = lib.join("generated-token");
    std::fs::write(&token, "planted").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut s = Serve::start(&lib, &[]);
    s.expect_line("generated a token");
    s.stop();
    assert_eq!(mode(&token), 0o600);
    let t = std::fs::read_to_string(&token).unwrap();
    assert!(t.starts_with("mfs_") && t != "planted", "{t}");

    // A planted link: replaced, its target untouched.
    std::fs::remove_file(&token).unwrap();
    std::os::unix::fs::symlink(&target, &token).unwrap();
    let mut s = Serve::start(&lib, &[]);
    s.expect_line("generated a token");
    s.stop();
    assert!(std::fs::symlink_metadata(&token).unwrap().is_file());
    assert_eq!(mode(&token), 0o600);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");

    if !fuse_available() {
        return;
    }
    // A link where the daemon log goes: the mount is refused, with the reason.
    let log = work.path().join("mediafs.log");
    std::os::unix::fs::symlink(&target, &log).unwrap();
    let err = DefaultMount::start(work.path(), &[])
        .err()
        .expect("refused");
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
    assert_eq!(mode(&target), 0o644);
    // A world-readable log of an older version: made private.
    std::fs::remove_file(&log).unwrap();
    std::fs::write(&log, "old lines\n").unwrap();
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();
    let m = DefaultMount::start(work.path(), &[]).unwrap();
    assert_eq!(mode(&log), 0o600);
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .starts_with("old lines\n"));
    drop(m);
}

/// Uploads `bytes` as `name` with `mime` through the API; returns the signed URL.
fn upload(srv: &Server, name: &str, mime: &str, bytes: &[u8]) -> String {
    let meta = mediafs::api::NewFile {
        file_name: name.into(),
        title: Some(name.into()),
        mime_type: mime.into(),
        ..Default::default()
    };
    srv.put_file_meta(meta, bytes).url().unwrap().to_string()
}

/// A GET with curl: status, headers (lowercase), body.
struct Got {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

fn get(url: &str) -> Got {
    let o = Command::new("curl")
        .args(["-s", "-i", "--max-time", "30", url])
        .output()
        .unwrap();
    let split = o
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no answer from {url}: {}", text(&o)));
    let headers = String::from_utf8_lossy(&o.stdout[..split]).to_ascii_lowercase();
    let status = headers.split_whitespace().nth(1).unwrap().parse().unwrap();
    Got {
        status,
        headers,
        body: o.stdout[split + 4..].to_vec(),
    }
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim())
        })
    }
}

#[test]
fn cdn_sends_nosniff_and_active_content_as_attachment() {
    let srv = Server::start(|_| {});
    let html = upload(&srv, "page.html", "text/html", b"<script>alert(1)</script>");
    let svg = upload(&srv, "i.svg", "image/svg+xml", b"<svg onload=alert(1)/>");
    let png = upload(&srv, "i.png", "image/png", b"\x89PNG....");
    for (url, attachment) in [(&html, true), (&svg, true), (&png, false)] {
        let r = get(url);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        let cd = r.header("content-disposition");
        assert_eq!(
            cd.is_some_and(|v| v.starts_with("attachment")),
            attachment,
            "{url}: {cd:?}"
        );
    }
    let r = get(&html.replace("Signature=", "Signature=x"));
    assert_eq!(r.status, 403);
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
}

#[test]
fn cdn_accepts_only_the_canonical_signed_url() {
    let srv = Server::start(|_| {});
    let url = upload(&srv, "a b.txt", "text/plain", b"hello");
    assert_eq!(get(&url).body, b"hello");
    let (base, query) = url.split_once('?').unwrap();
    let expires = query
        .split('&')
        .next()
        .unwrap()
        .strip_prefix("Expires=")
        .unwrap();
    let alter = |from: &str, to: &str| url.replacen(from, to, 1);
    for bad in [
        alter("Expires=", "Expires=+"),
        alter("Expires=", "Expires=0"),
        format!("{url}&Expires={expires}"),
        format!("{base}?Expires={expires}&{query}"),
        format!("{url}="),
        format!("{url}&x=1"),
        format!("{base}?x=1&{query}"),
        alter("a%20b.txt", "a%20%62.txt"),
        {
            // The signature's first character percent-encoded.
            let i = url.find("Signature=").unwrap() + "Signature=".len();
            let c = url.as_bytes()[i];
            format!("{}%{c:02X}{}", &url[..i], &url[i + 1..])
        },
    ] {
        assert_ne!(bad, url);
        assert_eq!(get(&bad).status, 403, "{bad}");
    }
    // Each component of the signature moved to another position is refused too.
    let parts: Vec<&str> = query.split('&').collect();
    let reordered = format!("{base}?{}&{}&{}", parts[1], parts[0], parts[2]);
    assert_eq!(get(&reordered).status, 403);
}

/// Peak memory of a server process, in KiB.
fn peak_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn create_file_memory_does_not_depend_on_the_body_shape() {
    let work = open_workdir();
    let token_file = work.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let srv = Serve::start(
        &work.path().join("library"),
        &["--token-file", token_file.to_str().unwrap()],
    );
    let pid = srv.child.id();
    let body_file = work.path().join("body.json");
    let post = |body: String| -> String {
        std::fs::write(&body_file, body).unwrap();
        let o = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "60",
            ])
            .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
            .args(["-H", "Content-Type: application/json"])
            .arg("--data-binary")
            .arg(format!("@{}", body_file.display()))
            .arg(format!("{}/api/v1/media-manager/files", srv.url))
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // Warm up with a normal upload, then measure the growth for 3 MB of tiny members
    // (the worst shape measured: 57 MiB before members were bounded).
    let data = base64::engine::general_purpose::STANDARD.encode(vec![7u8; 3 << 20]);
    assert_eq!(
        post(format!(r#"{{"fileName":"a","data":"{data}"}}"#)),
        "200"
    );
    let before = peak_kib(pid);
    let tiny = vec![r#""title":0"#; (3 << 20) / 10].join(",");
    let status = post(format!(r#"{{"data":"","fileName":"a",{tiny}}}"#));
    assert!(status == "200" || status == "413", "{status}");
    let grown_mib = (peak_kib(pid).saturating_sub(before)) / 1024;
    assert!(
        grown_mib < 24,
        "3 MB of tiny members grew the server by {grown_mib} MiB"
    );
    // Still serving.
    assert_eq!(post(r#"{"fileName":"b","data":"QUJD"}"#.to_string()), "200");
}
