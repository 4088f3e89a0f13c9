//! mediafs as people run it: signals and unmount without fusermount3 (host and
//! namespaces), dead-mount recovery, PID 1, the mount helper, systemd readiness, status,
//! completions and man page, two mounts of one library.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A directory for PATH holding links to only the given programs (so no fusermount3).
fn tools_dir(root: &Path, tools: &[&str]) -> PathBuf {
    let dir = root.join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    for t in tools {
        let real = which(t).unwrap_or_else(|| panic!("{t} is needed by this test"));
        std::os::unix::fs::symlink(real, dir.join(t)).unwrap();
    }
    dir
}

fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

fn mounted_in(mounts: &str, path: &Path) -> bool {
    let want = path.display().to_string();
    mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(want.as_str()))
}

fn host_mounted(path: &Path) -> bool {
    mounted_in(&std::fs::read_to_string("/proc/self/mounts").unwrap(), path)
}

/// Children of a process (host pids), zombies included.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    out
}

/// A mediafs daemon run in the foreground with a chosen environment.
struct Daemon {
    child: Option<Child>,
    mountpoint: PathBuf,
    log: PathBuf,
}

struct Setup {
    work: tempfile::TempDir,
    token_file: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let work = tempfile::tempdir().unwrap();
        let token_file = work.path().join("token");
        std::fs::write(&token_file, TOKEN).unwrap();
        Setup { work, token_file }
    }

    fn path(&self, rel: &str) -> PathBuf {
        let p = self.work.path().join(rel);
        p
    }

    /// `mediafs mount MP --api-url … --foreground` plus `extra`, with `path` as PATH.
    fn mount_args(&self, server: &Server, mp: &Path, cache: &str, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "mount".into(),
            mp.display().to_string(),
            "--api-url".into(),
            server.url(),
            "--token-file".into(),
            self.token_file.display().to_string(),
            "--cache-dir".into(),
            self.path(cache).display().to_string(),
            "--foreground".into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }
}

impl Daemon {
    fn start(args: &[String], mountpoint: &Path, path_env: &Path, log: PathBuf) -> Daemon {
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin())
            .args(args)
            .env("PATH", path_env)
            .env(
                "MEDIAFS_LOG",
                format!("{},mediafs=debug", mediafs::DEFAULT_LOG_FILTER),
            )
            // These tests are about what is left when nothing cleans up after a crash.
            .env("MEDIAFS_NO_CRASH_GUARD", "1")
            .env_remove("NOTIFY_SOCKET")
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        let mut d = Daemon {
            child: Some(child),
            mountpoint: mountpoint.to_path_buf(),
            log,
        };
        let mp = d.mountpoint.clone();
        // Mounted and answering (a dead mount left on the same path is listed too).
        let up = |mp: &Path| host_mounted(mp) && std::fs::read_dir(mp).is_ok();
        let ok = wait_until(Duration::from_secs(30), || {
            up(&mp) || d.child.as_mut().unwrap().try_wait().unwrap().is_some()
        });
        assert!(ok && up(&mp), "no mount; log:\n{}", d.log_text());
        d
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: i32) {
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }

    /// Waits (bounded) for the daemon to exit; panics with its log if it does not.
    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut c = self.child.take().unwrap();
        let start = Instant::now();
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            if start.elapsed() > within {
                let _ = c.kill();
                let _ = c.wait();
                panic!("daemon did not exit; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if host_mounted(&self.mountpoint) {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mountpoint)
                .status();
        }
    }
}

/// The tools a scripted test in a namespace needs; no fusermount3 among them.
const SCRIPT_TOOLS: &[&str] = &["bash", "cat", "grep", "sleep", "seq", "sha256sum", "ls"];

#[test]
fn sigterm_without_fusermount3_on_the_host_unmounts_and_exits_0() {
    if !fuse_available() {
        return;
    }
    let server = Server::start(|_| {});
    let s = Setup::new();
    let bin_dir = tools_dir(s.work.path(), SCRIPT_TOOLS);
    let mp = s.path("mnt");
    std::fs::create_dir(&mp).unwrap();
    let args = s.mount_args(&server, &mp, "cache", &[]);
    let mut d = Daemon::start(&args, &mp, &bin_dir, s.path("log"));
    std::fs::write(mp.join("a.txt"), b"hello").unwrap();
    d.signal(libc::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "exit {status}; log:\n{}", d.log_text());
    assert!(!host_mounted(&mp), "mount left behind");
    // fuser's second unmount try after ours is expected, and not shown as a failure.
    assert!(
        !d.log_text().contains("Unmount failed"),
        "misleading warning:\n{}",
        d.log_text()
    );
    let files = server.remote_files(None);
    assert!(files.iter().any(|f| f.title.as_deref() == Some("a.txt")));
}

#[test]
fn sigint_with_a_file_open_detaches_and_exits_once_it_closes() {
    if !fuse_available() {
        return;
    }
    let server = Server::start(|_| {});
    server.put_file(None, "held.bin", &pseudo_random(100_000, 3));
    let s = Setup::new();
    let bin_dir = tools_dir(s.work.path(), SCRIPT_TOOLS);
    let mp = s.path("mnt");
    std::fs::create_dir(&mp).unwrap();
    let args = s.mount_args(&server, &mp, "cache", &[]);
    let mut d = Daemon::start(&args, &mp, &bin_dir, s.path("log"));
    let held = std::fs::File::open(mp.join("held.bin")).unwrap();
    d.signal(libc::SIGINT);
    // Detached at once, still serving the open file.
    assert!(
        wait_until(Duration::from_secs(30), || !host_mounted(&mp)),
        "not detached; log:\n{}",
        d.log_text()
    );
    let mut buf = Vec::new();
    use std::io::Read;
    (&held).read_to_end(&mut buf).unwrap();
    assert_eq!(sha256(&buf), sha256(&pseudo_random(100_000, 3)));
    assert!(d.child.as_mut().unwrap().try_wait().unwrap().is_none());
    drop(held);
    let status = d.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "exit {status}; log:\n{}", d.log_text());
}

#[test]
fn sigterm_in_mount_and_pid_namespace_script_without_fusermount3() {
    if !fuse_available() {
        return;
    }
    let server = Server::start(|_| {});
    let s = Setup::new();
    let bin_dir = tools_dir(s.work.path(), SCRIPT_TOOLS);
    let mp = s.path("mnt");
    std::fs::create_dir(&mp).unwrap();
    let args = s.mount_args(&server, &mp, "cache", &[]).join(" ");
    let script = format!(
        r#"
set -u
if command -v fusermount3 >/dev/null; then echo "fusermount3 found"; exit 9; fi
{bin} {args} >{log} 2>&1 &
pid=$!
for i in $(seq 600); do grep -q " {mp} fuse" /proc/self/mounts && break; sleep 0.05; done
echo hello > {mp}/ns.txt
cat {mp}/ns.txt
kill -TERM $pid
rc=0; wait $pid || rc=$?
echo "exit=$rc"
echo "left=$(grep -c " {mp} " /proc/self/mounts)"
"#,
        bin = bin(),
        log = s.path("log").display(),
        mp = mp.display(),
    );
    let out = Command::new(which("unshare").expect("unshare (util-linux)"))
        .args([
            "--mount",
            "--pid",
            "--fork",
            "--propagation",
            "private",
            "--",
        ])
        .arg(bin_dir.join("bash"))
        .arg("-c")
        .arg(&script)
        .env("PATH", &bin_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let log = std::fs::read_to_string(s.path("log")).unwrap_or_default();
    assert!(
        stdout.contains("hello\nexit=0\nleft=0"),
        "stdout:\n{stdout}\nstderr:\n{}\nlog:\n{log}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(server
        .remote_files(None)
        .iter()
        .any(|f| f.title.as_deref() == Some("ns.txt")));
}

#[test]
fn mediafs_as_pid_1_forwards_sigterm_reaps_orphans_and_unmounts() {
    if !fuse_available() {
        return;
    }
    let server = Server::start(|_| {});
    let s = Setup::new();
    let bin_dir = tools_dir(s.work.path(), SCRIPT_TOOLS);
    let mp = s.path("mnt");
    std::fs::create_dir(&mp).unwrap();
    let args = s.mount_args(&server, &mp, "cache", &[]);
    let log = std::fs::File::create(s.path("log")).unwrap();
    let mut unshare = Command::new(which("unshare").expect("unshare (util-linux)"))
        .args([
            "--mount",
            "--pid",
            "--fork",
            "--propagation",
            "private",
            "--",
        ])
        .arg(bin())
        .args(&args)
        .env("PATH", &bin_dir)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let logtext = || std::fs::read_to_string(s.path("log")).unwrap_or_default();
    // mediafs is PID 1 of the new namespace: the child of unshare.
    let mut init = 0;
    assert!(
        wait_until(Duration::from_secs(10), || {
            init = children(unshare.id()).first().copied().unwrap_or(0);
            init != 0
        }),
        "no child of unshare"
    );
    let ns = format!("/proc/{init}/ns/mnt");
    assert!(
        wait_until(Duration::from_secs(30), || {
            mounted_in(
                &std::fs::read_to_string(format!("/proc/{init}/mounts")).unwrap_or_default(),
                &mp,
            )
        }),
        "no mount in the namespace; log:\n{}",
        logtext()
    );
    // Keep the namespace alive after mediafs exits, to look at what it leaves there.
    let held_ns = std::fs::File::open(&ns).unwrap();
    let held_path = format!("/proc/{}/fd/{}", std::process::id(), {
        use std::os::fd::AsRawFd;
        held_ns.as_raw_fd()
    });
    let nsenter = |extra: &[&str], script: &str| {
        Command::new("nsenter")
            .args(extra)
            .arg("--")
            .arg("bash")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap()
    };
    let out = nsenter(
        &[&format!("--mount={ns}")],
        &format!("echo pid1 > {0}/p.txt && cat {0}/p.txt", mp.display()),
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pid1\n", "{out:?}");

    // An orphan in the namespace is handed to PID 1, which must reap it.
    let daemon: Vec<u32> = children(init);
    assert_eq!(daemon.len(), 1, "PID 1 should have one child, the daemon");
    let out = nsenter(
        &["-t", &init.to_string(), "--pid", "--mount"],
        "sleep 0.3 & echo started",
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        wait_until(Duration::from_secs(20), || children(init) == daemon),
        "orphan not reaped: children of PID 1 {:?}",
        children(init)
    );

    assert_eq!(unsafe { libc::kill(init as i32, libc::SIGTERM) }, 0);
    let start = Instant::now();
    let status = loop {
        if let Some(st) = unshare.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = unshare.kill();
            panic!(
                "mediafs as PID 1 did not exit on SIGTERM; log:\n{}",
                logtext()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit {status}; log:\n{}", logtext());
    let out = Command::new("nsenter")
        .arg(format!("--mount={held_path}"))
        .args(["--", "cat", "/proc/self/mounts"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        !mounted_in(&String::from_utf8_lossy(&out.stdout), &mp),
        "mount left in the namespace:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    drop(held_ns);
    assert!(server
        .remote_files(None)
        .iter()
        .any(|f| f.title.as_deref() == Some("p.txt")));
}

#[test]
fn dead_mount_after_sigkill_is_cleared_by_the_next_mount_and_by_unmount() {
    if !fuse_available() {
        return;
    }
    let server = Server::start(|_| {});
    server.put_file(None, "x.txt", b"x");
    let s = Setup::new();
    // No fusermount3 and no crash guard (Daemon::start): SIGKILL leaves a dead mount.
    let bin_dir = tools_dir(s.work.path(), SCRIPT_TOOLS);
    let mp = s.path("mnt");
    std::fs::create_dir(&mp).unwrap();
    let args = s.mount_args(&server, &mp, "cache", &[]);
    let mut d = Daemon::start(&args, &mp, &bin_dir, s.path("log1"));
    d.signal(libc::SIGKILL);
    d.wait_exit(Duration::from_secs(30));
    let err = std::fs::read_dir(&mp).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");

    let d2 = Daemon::start(&args, &mp, &bin_dir, s.path("log2"));
    assert!(
        d2.log_text().contains(&format!(
            "mediafs: {} was a dead mount (\"Transport endpoint is not connected\": its daemon had died); unmounted it",
            mp.display()
        )),
        "log:\n{}",
        d2.log_text()
    );
    assert_eq!(std::fs::read(mp.join("x.txt")).unwrap(), b"x");
    d2.signal(libc::SIGKILL);
    let mut d2 = d2;
    d2.wait_exit(Duration::from_secs(30));
    assert_eq!(
        std::fs::read_dir(&mp).unwrap_err().raw_os_error(),
        Some(libc::ENOTCONN)
    );

    let out = Command::new(bin())
        .arg("unmount")
        .arg(&mp)
        .env("PATH", &bin_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("was a dead mount"));
    assert!(!host_mounted(&mp));
    assert!(std::fs::metadata(&mp).unwrap().is_dir());
}

#[test]
fn a_non_empty_mountpoint_is_refused_unless_asked_for() {
    if !fuse_available() {
        return;
    }
    let server = Server::start(|_| {});
    server.put_file(None, "remote.txt", b"remote");
    let s = Setup::new();
    let bin_dir = tools_dir(s.work.path(), SCRIPT_TOOLS);
    let mp = s.path("mnt");
    std::fs::create_dir(&mp).unwrap();
    std::fs::write(mp.join("local.txt"), b"local").unwrap();

    let args = s.mount_args(&server, &mp, "cache", &[]);
    let out = Command::new(bin())
        .args(&args)
        .env("PATH", &bin_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr.contains("is not empty") && stderr.contains("--allow-non-empty"),
        "{stderr}"
    );
    assert!(!host_mounted(&mp));
    assert_eq!(std::fs::read(mp.join("local.txt")).unwrap(), b"local");

    let args = s.mount_args(&server, &mp, "cache", &["--allow-non-empty"]);
    let mut d = Daemon::start(&args, &mp, &bin_dir, s.path("log"));
    assert_eq!(std::fs::read(mp.join("remote.txt")).unwrap(), b"remote");
    assert!(!mp.join("local.txt").exists(), "the mount hides local.txt");
    d.signal(libc::SIGTERM);
    d.wait_exit(Duration::from_secs(60));
    assert!(!host_mounted(&mp));
    assert_eq!(std::fs::read(mp.join("local.txt")).unwrap(), b"local");
}

#[test]
fn a_foreground_mount_logs_to_the_log_file_it_is_given() {
    if !fuse_available() {
        return;
    }
    let server = Server::start(|_| {});
    let s = Setup::new();
    let bin_dir = tools_dir(s.work.path(), SCRIPT_TOOLS);
    let mp = s.path("mnt");
    std::fs::create_dir(&mp).unwrap();
    let log_file = s.path("named.log");
    let log_arg = log_file.display().to_string();
    let args = s.mount_args(&server, &mp, "cache", &["--log-file", &log_arg]);
    let mut d = Daemon::start(&args, &mp, &bin_dir, s.path("stderr"));
    std::fs::write(mp.join("x.txt"), b"x").unwrap();
    d.signal(libc::SIGTERM);
    d.wait_exit(Duration::from_secs(60));
    let logged = std::fs::read_to_string(&log_file).unwrap();
    assert!(logged.contains("x.txt"), "log file:\n{logged}");
    assert!(!d.log_text().contains("x.txt"), "stderr:\n{}", d.log_text());
}

/// Runs `mediafs ARGS` and returns (exit code, stdout, stderr).
fn run_mediafs(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn notify_socket_gets_ready_after_the_mount_answers_and_stopping_at_shutdown() {
    if !fuse_available() {
        return;
    }
    let server = Server::start(|_| {});
    server.put_file(None, "seen.txt", b"seen");
    let s = Setup::new();
    let sock_path = s.path("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mp = s.path("mnt");
    std::fs::create_dir(&mp).unwrap();
    let log = std::fs::File::create(s.path("log")).unwrap();
    let mut child = Command::new(bin())
        .args(s.mount_args(&server, &mp, "cache", &[]))
        .env("NOTIFY_SOCKET", &sock_path)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let recv = |sock: &std::os::unix::net::UnixDatagram| {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).expect("a notification within 60 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let msg = recv(&sock);
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg}");
    // When READY=1 arrives, the mount is there and answers.
    assert!(host_mounted(&mp));
    assert_eq!(std::fs::read(mp.join("seen.txt")).unwrap(), b"seen");
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let msg = recv(&sock);
    assert!(msg.lines().any(|l| l == "STOPPING=1"), "{msg}");
    let status = child.wait().unwrap();
    assert!(status.success());
    assert!(!host_mounted(&mp));
}

#[test]
fn status_json_lists_pending_uploads_with_size_and_error_and_counts_requests() {
    if !fuse_available() {
        return;
    }
    let mut server = Server::start(|_| {});
    let data = pseudo_random(300_000, 11);
    server.put_file(None, "read-me.bin", &data);
    let free_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics = format!("127.0.0.1:{free_port}");
    let m = Mount::new(
        &server,
        &["--upload-retry-secs", "1", "--metrics-addr", &metrics],
    );
    // Reads: the second one is served by the block cache (the kernel's pages of the file
    // dropped first, or the kernel would answer it). Whether the first read is a hit or a
    // miss depends on whether the fetch started at open is done by then.
    assert_eq!(sha256_file(&m.p("read-me.bin")), sha256(&data));
    {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(m.p("read-me.bin")).unwrap();
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0);
    }
    assert_eq!(sha256_file(&m.p("read-me.bin")), sha256(&data));

    let (code, out, err) = run_mediafs(&["status", &m.path().display().to_string(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let st: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st["remote"], server.url());
    assert!(!st["remote"].as_str().unwrap().contains(TOKEN));
    assert_eq!(st["mountpoint"], m.path().display().to_string());
    assert_eq!(st["pid"], m.pid());
    assert!(st["requests"]["list_files"].as_u64().unwrap() >= 1);
    assert!(st["requests"]["read_range"].as_u64().unwrap() >= 1);
    let (hits, misses) = (st["cache"]["hits"].as_u64(), st["cache"]["misses"].as_u64());
    assert!(hits.unwrap() >= 1, "{st}");
    assert!(hits.unwrap() + misses.unwrap() >= 2, "{st}");
    assert!(st["cache"]["used_bytes"].as_u64().unwrap() >= data.len() as u64);
    assert_eq!(st["cache"]["capacity_bytes"], 256 << 20);
    assert_eq!(st["pending_uploads"].as_array().unwrap().len(), 0);

    // The server goes away; a write cannot land and waits in the pending area.
    server.stop();
    let payload = pseudo_random(123_456, 12);
    let write = {
        use std::io::Write;
        let mut f = std::fs::File::create(m.p("offline.bin")).unwrap();
        f.write_all(&payload).unwrap();
        f.sync_all()
    };
    assert!(write.is_err(), "fsync should report the failed upload");
    let (code, out, err) = run_mediafs(&["status", &m.path().display().to_string(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let st: serde_json::Value = serde_json::from_str(&out).unwrap();
    let pending = st["pending_uploads"].as_array().unwrap();
    assert_eq!(pending.len(), 1, "{st}");
    assert_eq!(pending[0]["name"], "offline.bin");
    assert_eq!(pending[0]["size"], 123_456);
    assert!(
        !pending[0]["last_error"].as_str().unwrap().is_empty(),
        "{st}"
    );
    let data_path = PathBuf::from(pending[0]["data_path"].as_str().unwrap());
    assert_eq!(sha256_file(&data_path), sha256(&payload));
    assert!(st["requests"]["create_file"].as_u64().unwrap() >= 1);
    assert!(st["errors"]["transport"].as_u64().unwrap() >= 1, "{st}");
    assert!(st["errors_by_request"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["request"] == "create_file" && e["kind"] == "transport"));

    // The text form says the same.
    let (code, out, _) = run_mediafs(&["status", &m.path().display().to_string()]);
    assert_eq!(code, 0);
    assert!(out.contains("1 pending"), "{out}");
    assert!(out.contains("offline.bin"), "{out}");

    // Prometheus text with the same counters.
    let body = server.block(async move {
        reqwest::get(format!("http://{metrics}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert!(body.contains("mediafs_pending_uploads 1"), "{body}");
    assert!(
        body.contains("mediafs_request_errors_total{request=\"create_file\",kind=\"transport\"}"),
        "{body}"
    );
    assert!(body.contains("mediafs_cache_hits_total"), "{body}");

    // The server comes back: the pending upload lands.
    server.restart();
    assert!(wait_until(Duration::from_secs(60), || {
        server
            .remote_files(None)
            .iter()
            .any(|f| f.title.as_deref() == Some("offline.bin"))
    }));
    drop(m);
}

#[test]
fn status_exits_non_zero_when_no_daemon_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run_mediafs(&["status", &dir.path().display().to_string()]);
    assert_eq!(code, 1);
    assert!(err.contains("no mediafs daemon answers for"), "{err}");
}

#[test]
fn status_socket_is_private_to_the_owner() {
    if !fuse_available() {
        return;
    }
    let server = Server::start(|_| {});
    let m = Mount::new(&server, &[]);
    let (code, out, _) = run_mediafs(&["status", &m.path().display().to_string(), "--json"]);
    assert_eq!(code, 0);
    let st: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st["pid"], m.pid());
    let sock = mediafs::control::socket_path(&m.path().canonicalize().unwrap());
    let meta = std::fs::metadata(&sock).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let dir = std::fs::metadata(sock.parent().unwrap()).unwrap();
    assert_eq!(dir.permissions().mode() & 0o777, 0o700);
    let mut m = m;
    m.unmount();
    assert!(!sock.exists(), "socket left behind");
    let (code, _, _) = run_mediafs(&["status", &m.path().display().to_string()]);
    assert_eq!(code, 1);
}

#[test]
fn completions_and_man_page_name_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = run_mediafs(&["completions", shell]);
        assert_eq!(code, 0, "{err}");
        for sub in ["mount", "unmount", "status", "serve"] {
            assert!(out.contains(sub), "{shell} completions lack {sub}");
        }
        assert!(
            out.contains("--api-url"),
            "{shell} completions lack mount flags"
        );
    }
    // bash can load its script.
    let (_, out, _) = run_mediafs(&["completions", "bash"]);
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), out).unwrap();
    let st = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && complete -p mediafs",
            f.path().display()
        ))
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    let (code, man, _) = run_mediafs(&["man"]);
    assert_eq!(code, 0);
    assert!(
        man.starts_with(".ie") || man.contains(".TH mediafs"),
        "{man}"
    );
    for sub in ["mount", "unmount", "status", "serve", "completions"] {
        assert!(man.contains(sub), "man page lacks {sub}");
    }
    // The page it refers to, mediafs-mount(1), has every mount flag.
    let (code, mount_man, _) = run_mediafs(&["man", "mount"]);
    assert_eq!(code, 0);
    assert!(mount_man.contains(".TH mediafs-mount"), "{mount_man}");
    for flag in [
        "api\\-url",
        "cache\\-size",
        "allow\\-other",
        "upload\\-retry\\-secs",
    ] {
        assert!(mount_man.contains(flag), "mediafs-mount(1) lacks {flag}");
    }
    assert_eq!(run_mediafs(&["man", "nosuch"]).0, 2);
}

fn mount_line(path: &Path) -> Option<String> {
    let want = path.display().to_string();
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(want.as_str()))
        .map(str::to_string)
}

#[test]
fn mount_helper_invoked_as_mount_mediafs_maps_options() {
    if !fuse_available() {
        return;
    }
    let server = Server::start(|_| {});
    server.put_file(None, "here.txt", b"here");
    let s = Setup::new();
    let helper = s.path("mount.mediafs");
    std::os::unix::fs::symlink(bin(), &helper).unwrap();
    let mp = s.path("mnt");
    std::fs::create_dir(&mp).unwrap();
    let opts = format!(
        "token_file={},cache_dir={},ro,dir_ttl=5,_netdev,nofail,defaults,x-systemd.automount",
        s.token_file.display(),
        s.path("cache").display()
    );
    // An unknown option is refused before anything happens.
    let out = Command::new(&helper)
        .args([&server.url(), &mp.display().to_string(), "-o", "ro,bogus=1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown option \"bogus=1\""), "{err}");
    assert!(!host_mounted(&mp));

    let out = Command::new(&helper)
        .args([&server.url(), &mp.display().to_string(), "-o", &opts])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let line = mount_line(&mp).expect("mounted");
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[0], server.url(), "{line}");
    assert_eq!(fields[2], "fuse.mediafs", "{line}");
    assert!(fields[3].split(',').any(|o| o == "ro"), "{line}");
    assert_eq!(std::fs::read(mp.join("here.txt")).unwrap(), b"here");
    let err = std::fs::write(mp.join("new.txt"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    let (code, out, _) = run_mediafs(&["status", &mp.display().to_string(), "--json"]);
    assert_eq!(code, 0);
    let st: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st["read_only"], true);
    let pid = st["pid"].as_i64().unwrap() as i32;
    let (code, _, err) = run_mediafs(&["unmount", &mp.display().to_string()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        wait_until(Duration::from_secs(60), || unsafe { libc::kill(pid, 0) }
            != 0),
        "daemon still running after unmount"
    );
}

#[test]
fn mount_t_mediafs_in_a_private_mount_namespace() {
    if !fuse_available() {
        return;
    }
    let server = Server::start(|_| {});
    let s = Setup::new();
    let mp = s.path("mnt");
    std::fs::create_dir(&mp).unwrap();
    // /sbin gets a tmpfs holding only the helper link, in this mount namespace only.
    let script = format!(
        r#"
set -eu
sbin=$(realpath /sbin)
mount -t tmpfs tmpfs "$sbin"
ln -s {bin} "$sbin/mount.mediafs"
mount -t mediafs {url} {mp} -o token_file={tf},cache_dir={cache},allow_other,_netdev,nofail
grep " {mp} fuse.mediafs " /proc/self/mounts
echo "through mount(8)" > {mp}/helper.txt
cat {mp}/helper.txt
pid=$({bin} status {mp} --json | sed -n 's/^ *"pid": \([0-9]*\),/\1/p')
umount {mp}
for i in $(seq 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then echo "daemon still running"; exit 1; fi
grep -c " {mp} " /proc/self/mounts || true
"#,
        bin = bin(),
        url = server.url(),
        mp = mp.display(),
        tf = s.token_file.display(),
        cache = s.path("cache").display(),
    );
    let out = Command::new(which("unshare").expect("unshare (util-linux)"))
        .args(["--mount", "--propagation", "private", "--", "bash", "-c"])
        .arg(&script)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("through mount(8)\n0\n"),
        "stdout:\n{stdout}\nstderr:\n{}\nlog:\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(s.path("cache/mediafs.log")).unwrap_or_default()
    );
    assert!(stdout.contains(&format!("{} {} fuse.mediafs", server.url(), mp.display())));
    assert!(server
        .remote_files(None)
        .iter()
        .any(|f| f.title.as_deref() == Some("helper.txt")));
    // The host's /sbin is untouched.
    assert!(!Path::new("/sbin/mount.mediafs").exists());
}

#[test]
fn container_example_script_passes_in_namespaces_without_fusermount3() {
    if !fuse_available() {
        return;
    }
    let s = Setup::new();
    let bin_dir = tools_dir(
        s.work.path(),
        &[
            "bash",
            "mktemp",
            "mkdir",
            "seq",
            "grep",
            "sleep",
            "head",
            "sha256sum",
            "cp",
            "mv",
            "tar",
            "cat",
            "ls",
            "tr",
            "rm",
        ],
    );
    std::os::unix::fs::symlink(bin(), bin_dir.join("mediafs")).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/container-example.sh");
    let out = Command::new(which("unshare").expect("unshare (util-linux)"))
        .args([
            "--mount",
            "--pid",
            "--fork",
            "--propagation",
            "private",
            "--",
        ])
        .arg(bin_dir.join("bash"))
        .arg(&script)
        .env("PATH", &bin_dir)
        .env("TMPDIR", s.work.path())
        .env_remove("MEDIAFS")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("container-example: OK"),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn two_mounts_of_one_library_see_each_others_changes_within_dir_ttl_and_lose_nothing() {
    if !fuse_available() {
        return;
    }
    let server = Server::start(|_| {});
    // Two daemons, two cache dirs (as two machines or two containers would have).
    let a = Mount::new(&server, &["--dir-ttl", "1"]);
    let b = Mount::new(&server, &["--dir-ttl", "1"]);
    assert_ne!(a.cache_dir, b.cache_dir);
    let within_ttl = Duration::from_secs(30);
    let (da, db) = (a.p("shared"), b.p("shared"));

    // Create on A: B sees it once its cached listing expires.
    std::fs::create_dir(&da).unwrap();
    std::fs::write(da.join("one.txt"), b"from A").unwrap();
    assert!(wait_until(within_ttl, || names(&db) == ["one.txt"]));
    assert_eq!(std::fs::read(db.join("one.txt")).unwrap(), b"from A");

    // Rename on A: B sees the new name and not the old one.
    std::fs::rename(da.join("one.txt"), da.join("two.txt")).unwrap();
    assert!(wait_until(within_ttl, || names(&db) == ["two.txt"]));
    assert_eq!(std::fs::read(db.join("two.txt")).unwrap(), b"from A");

    // Overwrite on B: A reads the new bytes.
    std::fs::write(db.join("two.txt"), b"from B, longer").unwrap();
    assert!(wait_until(within_ttl, || {
        std::fs::read(da.join("two.txt")).is_ok_and(|d| d == b"from B, longer")
    }));
    assert_eq!(names(&da), ["two.txt"]);

    // Delete on B: gone on A.
    std::fs::remove_file(db.join("two.txt")).unwrap();
    assert!(wait_until(within_ttl, || names(&da).is_empty()));

    // Both create one name at once (each open before either lands): both versions are
    // kept, one shown as a duplicate `same~<id>.txt`, on both mounts, nothing lost.
    let (pa, pb) = (pseudo_random(200_000, 21), pseudo_random(150_000, 22));
    let want = {
        let mut w = vec![sha256(&pa), sha256(&pb)];
        w.sort();
        w
    };
    {
        use std::io::Write;
        let mut fa = std::fs::File::create(da.join("same.txt")).unwrap();
        let mut fb = std::fs::File::create(db.join("same.txt")).unwrap();
        fa.write_all(&pa).unwrap();
        fb.write_all(&pb).unwrap();
        fa.sync_all().unwrap();
        fb.sync_all().unwrap();
    }
    let dup = regex::Regex::new(r"^same~[0-9a-f]{8}\.txt$").unwrap();
    for dir in [&da, &db] {
        assert!(
            wait_until(within_ttl, || {
                let n = names(dir);
                n.len() == 2
                    && n.contains(&"same.txt".to_string())
                    && n.iter().any(|x| dup.is_match(x))
            }),
            "{}: {:?}",
            dir.display(),
            names(dir)
        );
        let mut got: Vec<String> = names(dir)
            .iter()
            .map(|n| sha256_file(&dir.join(n)))
            .collect();
        got.sort();
        assert_eq!(got, want, "{}", dir.display());
    }
    // The service holds both, under the one name.
    let folder = server
        .remote_folders(None)
        .into_iter()
        .find(|f| f.name == "shared")
        .unwrap();
    let files = server.remote_files(Some(&folder.id));
    assert_eq!(files.len(), 2);
    assert!(files.iter().all(|f| f.title.as_deref() == Some("same.txt")));
    let mut remote: Vec<String> = files
        .iter()
        .map(|f| sha256(&server.remote_bytes(&f.id)))
        .collect();
    remote.sort();
    assert_eq!(remote, want);
}

#[test]
fn status_lists_an_upload_in_flight_with_name_size_and_age() {
    if !fuse_available() {
        return;
    }
    let server = Server::start(|_| {});
    let m = Mount::new(&server, &[]);
    // The next Create File waits 12 s before the server handles it.
    server.set_faults(serde_json::json!({
        "latencyMs": 12000,
        "route": "POST /api/v1/media-manager/files",
        "count": 1
    }));
    // The writer is another process: a fork of this one while it held the file open would
    // close its copy of the descriptor at exec, and that close (a FUSE flush) would wait
    // for the upload.
    let src = tempfile::tempdir().unwrap();
    let payload = pseudo_random(100_000, 31);
    std::fs::write(src.path().join("slow.bin"), &payload).unwrap();
    let mut writer = Command::new("cp")
        .arg(src.path().join("slow.bin"))
        .arg(m.p("slow.bin"))
        .spawn()
        .unwrap();
    // Polled over the socket from here, not by spawning `mediafs status`: a process spawned
    // while another test of this binary holds a file of its own mount open closes its copy
    // at exec, and that FUSE flush can hold the spawn up for the length of an upload. The
    // command itself is covered by the other status tests.
    let mut seen = None;
    let mut last = None;
    let mut slowest = Duration::ZERO;
    let found = wait_until(Duration::from_secs(40), || {
        let asked = Instant::now();
        let st = mediafs::control::query(m.path()).expect("the daemon answers");
        slowest = slowest.max(asked.elapsed());
        seen = st
            .uploads_in_flight
            .iter()
            .find(|u| u.name == "slow.bin")
            .cloned();
        last = Some(st);
        seen.is_some() || writer.try_wait().unwrap().is_some()
    });
    let seen = seen.unwrap_or_else(|| {
        panic!(
            "never listed in flight (found {found}, slowest answer {slowest:?}); last status \
             {last:?}; log:\n{}",
            m.log_text()
        )
    });
    assert_eq!(seen.size, 100_000);
    assert!(seen.age_secs < 60, "{seen:?}");
    assert!(
        seen.data_path.is_none(),
        "not in the pending area: {seen:?}"
    );
    assert!(writer.wait().unwrap().success(), "the slow upload lands");
    let mp = m.path().display().to_string();
    let (_, out, _) = run_mediafs(&["status", &mp, "--json"]);
    let st: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st["uploads_in_flight"].as_array().unwrap().len(), 0, "{st}");
    assert_eq!(st["requests"]["create_file"], 1, "{st}");
    assert_eq!(sha256_file(&m.p("slow.bin")), sha256(&payload));
}
