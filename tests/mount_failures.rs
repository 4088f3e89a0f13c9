//! Failures on the write path, on real mounts: the server down or failing during an upload,
//! a crash of the daemon with uploads pending, an upload over the size limit, a read-only
//! mount, and unmount with uploads still pending. Nothing written may be lost.

mod common;
mod write_support;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;
use write_support::*;

/// Short upload retries, so failed uploads reach the pending area (and land) quickly.
const FAST_RETRY: [&str; 2] = ["--upload-retry-secs", "2"];

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn server_down_during_upload_cp_fails_then_the_file_lands_after_restart() {
    if !fuse_available() {
        return;
    }
    let mut srv = Server::start(|_| {});
    let old = pseudo_random(3000, 5);
    srv.put_file(None, "old.bin", &old);
    let m = Mount::new(&srv, &FAST_RETRY);
    // Read once, so the listing and the bytes are cached.
    assert_eq!(sha256_file(&m.p("old.bin")), sha256(&old));
    let src = tempfile::tempdir().unwrap();
    let sha = write_random_file(&src.path().join("new.bin"), 300_000, 6);

    srv.stop();
    // The cached listing keeps answering (stale), and cached bytes stay readable.
    assert_eq!(sh(m.path(), "ls").trim(), "old.bin");
    assert_eq!(sha256_file(&m.p("old.bin")), sha256(&old));
    // A new file can be created and written; close() reports the failed upload.
    let out = sh_out(
        m.path(),
        &format!("cp {}/new.bin new.bin", src.path().display()),
    );
    assert!(
        !out.status.success(),
        "cp must report the failed upload; stderr: {}",
        stderr_of(&out)
    );
    // The data waits in the pending area, byte for byte, and the mount still shows it.
    assert_eq!(pending_data(&m.cache_dir), vec![sha.clone()]);
    assert_eq!(sha256_file(&m.p("new.bin")), sha);
    // Reading it (cat checks close) does not report, or retry, the pending upload.
    sh(m.path(), "cat new.bin > /dev/null");
    // Changes to the namespace need the service: they fail, and change nothing.
    for cmd in ["mkdir newdir", "rm old.bin", "mv old.bin moved.bin"] {
        let out = sh_out(m.path(), cmd);
        assert!(
            !out.status.success(),
            "{cmd} must fail while the server is down"
        );
    }
    assert_eq!(
        sh(m.path(), "ls").split_whitespace().collect::<Vec<_>>(),
        ["new.bin", "old.bin"]
    );

    srv.restart();
    assert!(
        wait_landed(&srv, None, "new.bin", &sha, 60),
        "the pending upload lands after the server is back; log:\n{}",
        m.log_text()
    );
    // The pending area empties once it landed, and the mount shows the remote file.
    assert!(wait_until(Duration::from_secs(10), || pending_data(
        &m.cache_dir
    )
    .is_empty()));
    assert_eq!(sha256_file(&m.p("new.bin")), sha);
    assert_eq!(srv.remote_files(None).len(), 2);
    assert_eq!(
        remote_sha256(&srv, &remote_file(&srv, None, "old.bin").id),
        sha256(&old)
    );
}

#[test]
fn server_failing_every_request_during_upload_then_recovering() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let m = Mount::new(&srv, &FAST_RETRY);
    sh(m.path(), "mkdir d && ls d");
    let d = remote_folder(&srv, None, "d");
    let src = tempfile::tempdir().unwrap();
    let sha = write_random_file(&src.path().join("x.bin"), 1 << 20, 8);

    srv.set_faults(json!({ "errorRate": 1.0 }));
    let out = sh_out(
        m.path(),
        &format!("cp {}/x.bin d/x.bin", src.path().display()),
    );
    assert!(!out.status.success(), "cp reports the failure");
    assert!(
        stderr_of(&out).contains("x.bin"),
        "cp names the file: {}",
        stderr_of(&out)
    );
    assert_eq!(pending_data(&m.cache_dir), vec![sha.clone()]);
    srv.clear_faults();
    assert!(
        wait_landed(&srv, Some(&d.id), "x.bin", &sha, 60),
        "lands once the service answers again; log:\n{}",
        m.log_text()
    );
    assert!(wait_until(Duration::from_secs(10), || pending_data(
        &m.cache_dir
    )
    .is_empty()));
    assert_eq!(sha256_file(&m.p("d/x.bin")), sha);
}

#[test]
fn sigkill_with_uploads_pending_then_remount_completes_them() {
    if !fuse_available() {
        return;
    }
    let mut srv = Server::start(|_| {});
    let mut m = Mount::new(&srv, &FAST_RETRY);
    sh(m.path(), "mkdir keep && ls keep");
    let keep = remote_folder(&srv, None, "keep");
    let src = tempfile::tempdir().unwrap();
    let sha_a = write_random_file(&src.path().join("a.bin"), 2 << 20, 21);

    srv.stop();
    // One upload failed and pending...
    let out = sh_out(
        m.path(),
        &format!("cp {}/a.bin keep/a.bin", src.path().display()),
    );
    assert!(!out.status.success());
    // ...and one file still open for writing when the daemon dies.
    let mut writer = Command::new("bash")
        .arg("-c")
        .arg("exec 3>keep/held.txt; printf 'written before the crash' >&3; echo ready; sleep 60")
        .current_dir(m.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(writer.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");

    m.kill();
    let _ = writer.kill();
    let _ = writer.wait();
    srv.restart();
    m.remount();

    assert!(
        wait_landed(&srv, Some(&keep.id), "a.bin", &sha_a, 60),
        "the pending upload lands after the remount; log:\n{}",
        m.log_text()
    );
    let held = sha256(b"written before the crash");
    assert!(
        wait_landed(&srv, Some(&keep.id), "held.txt", &held, 60),
        "the interrupted write lands with what had been written; log:\n{}",
        m.log_text()
    );
    assert_eq!(srv.remote_files(Some(&keep.id)).len(), 2);
    assert!(wait_until(Duration::from_secs(10), || pending_data(
        &m.cache_dir
    )
    .is_empty()));
    assert_eq!(sha256_file(&m.p("keep/a.bin")), sha_a);
    assert_eq!(
        sh(m.path(), "cat keep/held.txt"),
        "written before the crash"
    );
}

#[test]
fn upload_over_the_size_limit_fails_with_efbig_and_is_kept() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|c| c.max_upload_size = 1 << 20);
    let m = Mount::new(&srv, &FAST_RETRY);
    let src = tempfile::tempdir().unwrap();
    let sha = write_random_file(&src.path().join("huge.bin"), 2 << 20, 31);
    let out = sh_out(
        m.path(),
        &format!("cp {}/huge.bin huge.bin", src.path().display()),
    );
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("File too large"),
        "EFBIG reaches cp: {}",
        stderr_of(&out)
    );
    assert_eq!(pending_data(&m.cache_dir), vec![sha]);
    assert!(srv.remote_files(None).is_empty());
    // Below the limit, uploads still work.
    sh(m.path(), "echo small > small.txt");
    assert_eq!(
        srv.remote_bytes(&remote_file(&srv, None, "small.txt").id),
        b"small\n"
    );
}

#[test]
fn read_only_mount_refuses_every_change() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let d = srv.put_folder(None, "dir");
    let f = srv.put_file(Some(&d), "f.txt", b"hello\n");
    let m = Mount::new(&srv, &["--read-only"]);
    assert_eq!(sh(m.path(), "cat dir/f.txt"), "hello\n");
    for cmd in [
        "touch new.txt",
        "touch dir/f.txt",
        "mkdir newdir",
        "rm dir/f.txt",
        "mv dir/f.txt dir/g.txt",
        "mv dir dir2",
        "rmdir dir",
        "echo x > dir/f.txt",
        "echo x >> dir/f.txt",
        "truncate -s 0 dir/f.txt",
        "setfattr -n user.mediafs.description -v x dir/f.txt",
    ] {
        let out = sh_out(m.path(), cmd);
        assert!(!out.status.success(), "{cmd} must fail");
        assert!(
            stderr_of(&out).contains("Read-only file system"),
            "{cmd}: {}",
            stderr_of(&out)
        );
    }
    // Nothing changed remotely.
    let tree = remote_tree(&srv, None);
    assert_eq!(tree.len(), 2, "{tree:?}");
    assert_eq!(tree.get("dir/f.txt"), Some(&Node::File(sha256(b"hello\n"))));
    assert_eq!(remote_file(&srv, Some(&d), "f.txt").id, f.id);
}

#[test]
fn unmount_with_uploads_pending_says_so_and_where_and_the_next_mount_lands_them() {
    if !fuse_available() {
        return;
    }
    let mut srv = Server::start(|_| {});
    let mut m = Mount::new(&srv, &FAST_RETRY);
    sh(m.path(), "ls");
    srv.stop();
    // cp, not a shell redirection: only a program that checks close() sees the error.
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("late.txt"), b"not yet").unwrap();
    let out = sh_out(
        m.path(),
        &format!("cp {}/late.txt late.txt", src.path().display()),
    );
    assert!(!out.status.success());
    let log = m.unmount();
    let pending_dir = m.cache_dir.join("pending");
    let tail: Vec<&str> = log.lines().filter(|l| l.contains("pending")).collect();
    assert!(
        tail.iter().any(|l| l.contains("late.txt")),
        "the unmount log names the pending file:\n{log}"
    );
    assert!(
        tail.iter()
            .any(|l| l.contains(&pending_dir.display().to_string())),
        "the unmount log says where the data is:\n{log}"
    );
    assert_eq!(pending_data(&m.cache_dir), vec![sha256(b"not yet")]);

    srv.restart();
    m.remount();
    assert!(
        wait_landed(&srv, None, "late.txt", &sha256(b"not yet"), 60),
        "log:\n{}",
        m.log_text()
    );
}

#[test]
fn overwrite_while_the_server_is_down_lands_as_a_replacement() {
    if !fuse_available() {
        return;
    }
    let mut srv = Server::start(|_| {});
    let old = srv.put_file(None, "doc.txt", b"version 1\n");
    remote_update(
        &srv,
        &old.id,
        mediafs::api::FileUpdate {
            description: Some("carried".into()),
            ..Default::default()
        },
    );
    let m = Mount::new(&srv, &FAST_RETRY);
    assert_eq!(sh(m.path(), "cat doc.txt"), "version 1\n");
    srv.stop();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("v2"), b"version 2\n").unwrap();
    let out = sh_out(m.path(), &format!("cp {}/v2 doc.txt", src.path().display()));
    assert!(!out.status.success(), "cp reports the failed upload");
    // The mount shows the new bytes meanwhile.
    assert_eq!(sh(m.path(), "cat doc.txt"), "version 2\n");
    srv.restart();
    assert!(
        wait_landed(&srv, None, "doc.txt", &sha256(b"version 2\n"), 60),
        "log:\n{}",
        m.log_text()
    );
    let f = remote_file(&srv, None, "doc.txt");
    assert_eq!(f.description.as_deref(), Some("carried"));
    assert!(
        wait_until(Duration::from_secs(10), || remote_get(&srv, &old.id)
            .is_none()),
        "the replaced file is deleted once the new one landed"
    );
}

#[test]
fn upload_whose_answer_is_lost_is_not_stored_twice() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let m = Mount::new(&srv, &FAST_RETRY);
    sh(m.path(), "ls");
    let src = tempfile::tempdir().unwrap();
    let sha = write_random_file(&src.path().join("once.bin"), 200_000, 41);
    // The service stores the file, then the connection breaks before the answer arrives.
    srv.set_faults(json!({
        "dropRate": 1.0,
        "route": "POST /api/v1/media-manager/files",
        "count": 1
    }));
    sh(
        m.path(),
        &format!("cp {}/once.bin once.bin", src.path().display()),
    );
    let files = srv.remote_files(None);
    assert_eq!(files.len(), 1, "one copy, not two: {files:#?}");
    assert_eq!(remote_sha256(&srv, &files[0].id), sha);
    assert_eq!(sh(m.path(), "ls").trim(), "once.bin");
    assert_eq!(sha256_file(&m.p("once.bin")), sha);
}

#[test]
fn sigkill_during_an_upload_then_remount_lands_it_once() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let mut m = Mount::new(&srv, &FAST_RETRY);
    sh(m.path(), "ls");
    let src = tempfile::tempdir().unwrap();
    let size = 8 << 20;
    let sha = write_random_file(&src.path().join("mid.bin"), size, 51);
    // Uploads wait 3 s before the service handles them: the daemon dies meanwhile.
    srv.set_faults(json!({
        "latencyMs": 3000,
        "route": "POST /api/v1/media-manager/files"
    }));
    let mut cp = Command::new("cp")
        .arg(src.path().join("mid.bin"))
        .arg(m.p("mid.bin"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until all bytes are staged (the upload starts at close, right after).
    let staging = m.cache_dir.join("staging");
    assert!(wait_until(Duration::from_secs(30), || {
        std::fs::read_dir(&staging).is_ok_and(|rd| {
            rd.filter_map(|e| e.ok())
                .any(|e| e.metadata().is_ok_and(|md| md.len() == size as u64))
        })
    }));
    std::thread::sleep(Duration::from_millis(500));
    m.kill();
    assert!(!cp.wait().unwrap().success(), "cp sees the daemon die");
    srv.clear_faults();
    m.remount();
    assert!(
        wait_landed(&srv, None, "mid.bin", &sha, 60),
        "the interrupted upload lands once after the remount; log:\n{}",
        m.log_text()
    );
    // Give a duplicate upload, if any, the time to show up.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(remote_files_named(&srv, None, "mid.bin").len(), 1);
    assert_eq!(srv.remote_files(None).len(), 1);
    assert_eq!(sha256_file(&m.p("mid.bin")), sha);
}

/// A crashed daemon leaves no "Transport endpoint is not connected" behind: the kernel
/// mount goes away by itself (auto-unmount), with no `umount` from anyone.
#[test]
fn a_crashed_daemon_leaves_no_dead_mount() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    srv.put_file(None, "x.txt", b"x");
    let mut m = Mount::new(&srv, &[]);
    assert_eq!(sh(m.path(), "cat x.txt"), "x");
    let mut child = m.child.take().expect("daemon running");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || !m.is_mounted()),
        "the mount outlived its daemon"
    );
    let probe = std::fs::read_dir(m.path()).map(|d| d.count());
    assert_eq!(
        probe.ok(),
        Some(0),
        "the mountpoint is an empty, usable directory again"
    );
}
