//! Browsing and reading through a real mount, with real programs (issue: the mount, part 1).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use mediafs::api::MediaClient;

#[test]
fn ls_stat_find_du_and_cat_show_the_library() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let photos = srv.put_folder(None, "Photos");
    let trips = srv.put_folder(Some(&photos), "Trips");
    let small = pseudo_random(1000, 1);
    srv.put_file(None, "readme.txt", b"hello mediafs\n");
    srv.put_file(Some(&photos), "a.jpg", &small);
    srv.put_file(Some(&trips), "empty.bin", b"");
    let m = Mount::new(&srv, &[]);

    let ls = sh(m.path(), "ls -la");
    assert!(ls.contains("Photos") && ls.contains("readme.txt"), "{ls}");
    assert_eq!(sh(m.path(), "cat readme.txt"), "hello mediafs\n");
    assert_eq!(
        sh(m.path(), "stat -c '%s %F' Photos/a.jpg").trim(),
        "1000 regular file"
    );
    assert_eq!(
        sh(m.path(), "stat -c '%F' Photos/Trips").trim(),
        "directory"
    );
    assert_eq!(sha256_file(&m.p("Photos/a.jpg")), sha256(&small));
    let found = sh(m.path(), "find . | sort");
    assert_eq!(
        found.lines().collect::<Vec<_>>(),
        vec![
            ".",
            "./Photos",
            "./Photos/Trips",
            "./Photos/Trips/empty.bin",
            "./Photos/a.jpg",
            "./readme.txt"
        ]
    );
    let sized = sh(m.path(), "find . -type f -size +100c");
    assert_eq!(sized.trim(), "./Photos/a.jpg");
    let du = sh(m.path(), "du -sb .");
    let total: u64 = du.split_whitespace().next().unwrap().parse().unwrap();
    assert!(total >= 1014, "du -sb counts the file bytes: {du}");
    assert_eq!(
        sh(m.path(), "cat Photos/Trips/empty.bin | wc -c").trim(),
        "0"
    );
    let df = sh(m.path(), "df -h . | tail -1");
    assert!(df.contains("mediafs"), "{df}");
    // Absent names are ENOENT.
    let out = sh_out(m.path(), "stat nope");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such file"));
}

// ----- helpers --------------------------------------------------------------------------

/// Streams `len` pseudo-random bytes into a temp file and uploads it; returns the file's
/// remote object and the bytes' SHA-256.
fn put_random(
    srv: &Server,
    folder: Option<&str>,
    title: &str,
    len: usize,
    seed: u64,
) -> (mediafs::api::MediaFile, String) {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    let sum = write_random_file(tmp.path(), len, seed);
    (srv.put_file_path(folder, title, tmp.path()), sum)
}

/// SHA-256 of `path` as `sha256sum` (a real program) computes it.
fn sha256sum(cwd: &Path, path: &str) -> String {
    let out = sh(cwd, &format!("sha256sum {}", shell_quote(path)));
    out.split_whitespace().next().unwrap().to_string()
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Reads a file in `chunk`-byte pieces with a pause after each, dropping the kernel's page
/// cache for it as it goes (so every piece reaches the daemon); prints the SHA-256.
const SLOW_READ_PY: &str = r#"
import hashlib, os, sys, time
path, chunk, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
h = hashlib.sha256()
fd = os.open(path, os.O_RDONLY)
off = 0
while True:
    b = os.pread(fd, chunk, off)
    if not b:
        break
    h.update(b)
    off += len(b)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    time.sleep(pause)
os.close(fd)
print(h.hexdigest())
"#;

fn slow_read(cwd: &Path, path: &str, chunk: usize, pause: f64) -> String {
    let script = cwd.join("slow_read.py");
    std::fs::write(&script, SLOW_READ_PY).unwrap();
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(path)
        .arg(chunk.to_string())
        .arg(pause.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "slow read of {path} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Runs `mediafs` with `args` (no harness): for the background mode and mount errors.
fn run_mediafs(args: &[&str]) -> (std::process::Output, Duration) {
    let start = Instant::now();
    let out = std::process::Command::new(bin())
        .args(args)
        .env("MEDIAFS_LOG", "info,mediafs=debug")
        .env_remove("MEDIAFS_API_URL")
        .env_remove("MEDIAFS_TOKEN")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run mediafs");
    (out, start.elapsed())
}

/// Pids of `mediafs mount <mountpoint> …` processes, from /proc (not pgrep, whose pattern
/// would also match the shell running it).
fn daemon_pids(mountpoint: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let argv: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        if argv.len() > 2
            && argv[0].ends_with(b"mediafs")
            && argv[1] == b"mount"
            && argv[2] == mountpoint.as_bytes()
        {
            pids.push(pid);
        }
    }
    pids
}

fn is_mountpoint(path: &Path) -> bool {
    let want = path.display().to_string();
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(want.as_str()))
}

// ----- contents -------------------------------------------------------------------------

#[test]
fn files_of_every_size_read_back_identical_with_cat_and_cp() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let dir = srv.put_folder(None, "sizes");
    let sizes = [0usize, 1, 4095, 4096, (1 << 20) + 1, 20 << 20];
    let mut expected = Vec::new();
    for (i, &len) in sizes.iter().enumerate() {
        let name = format!("f{len}.bin");
        let (_, sum) = put_random(&srv, Some(&dir), &name, len, 100 + i as u64);
        expected.push((name, len, sum));
    }
    let m = Mount::new(&srv, &[]);
    let out = tempfile::tempdir().unwrap();

    let ls = sh(&m.p("sizes"), "ls -la");
    for (name, len, sum) in &expected {
        assert!(
            ls.contains(name.as_str()),
            "{name} missing from ls -la:\n{ls}"
        );
        let path = format!("sizes/{name}");
        assert_eq!(
            sh(m.path(), &format!("stat -c %s {path}")).trim(),
            len.to_string()
        );
        // cat through a pipe, and cp to a local file.
        let piped = sh(m.path(), &format!("cat {path} | sha256sum"));
        assert_eq!(piped.split_whitespace().next().unwrap(), sum, "cat {name}");
        let copy = out.path().join(name);
        sh(m.path(), &format!("cp {path} {}", copy.display()));
        assert_eq!(&sha256_file(&copy), sum, "cp {name}");
    }
    // A read that starts past the first block and crosses block boundaries.
    let big = &expected.last().unwrap().0;
    let slice = sh(
        m.path(),
        &format!("dd if=sizes/{big} bs=4096 skip=1000 count=700 status=none | sha256sum"),
    );
    let local = sh(
        out.path(),
        &format!("dd if={big} bs=4096 skip=1000 count=700 status=none | sha256sum"),
    );
    assert_eq!(slice, local);
}

#[test]
fn a_200_mib_file_reads_back_identical() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let (_, sum) = put_random(&srv, None, "big.bin", 200 << 20, 7);
    let m = Mount::new(&srv, &[]);
    assert_eq!(
        sh(m.path(), "stat -c %s big.bin").trim(),
        (200u64 << 20).to_string()
    );
    assert_eq!(sha256sum(m.path(), "big.bin"), sum);
    let out = tempfile::tempdir().unwrap();
    sh(
        m.path(),
        &format!(
            "dd if=big.bin of={}/big.bin bs=1M status=none",
            out.path().display()
        ),
    );
    assert_eq!(sha256_file(&out.path().join("big.bin")), sum);
}

#[test]
fn tar_of_a_tree_extracts_identical_to_the_source() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    // A local tree, mirrored into the library through the API.
    let src = tempfile::tempdir().unwrap();
    let tree = src.path().join("tree");
    let files: [(&str, usize); 7] = [
        ("a.txt", 10),
        ("empty", 0),
        ("docs/report.pdf", 300_000),
        ("docs/notes.md", 4097),
        ("docs/old/2019.csv", 65_536),
        ("media/clip.mp4", 3 << 20),
        ("media/thumbs/t1.png", 1234),
    ];
    let dirs = ["docs", "docs/old", "media", "media/thumbs", "nothing-here"];
    let root = srv.put_folder(None, "tree");
    std::fs::create_dir(&tree).unwrap();
    let mut ids = std::collections::HashMap::new();
    ids.insert(String::new(), root.clone());
    for d in dirs {
        std::fs::create_dir(tree.join(d)).unwrap();
        let (parent, name) = d.rsplit_once('/').unwrap_or(("", d));
        let id = srv.put_folder(Some(&ids[parent]), name);
        ids.insert(d.to_string(), id);
    }
    for (i, (path, len)) in files.iter().enumerate() {
        let bytes = pseudo_random(*len, 300 + i as u64);
        std::fs::write(tree.join(path), &bytes).unwrap();
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        srv.put_file(Some(&ids[parent]), name, &bytes);
    }

    let m = Mount::new(&srv, &[]);
    let out = tempfile::tempdir().unwrap();
    sh(
        m.path(),
        &format!("tar cf - tree | tar xf - -C {}", out.path().display()),
    );
    sh(
        src.path(),
        &format!("diff -r tree {}/tree", out.path().display()),
    );
    // find sees the same tree too.
    let listed = |dir: &Path| sh(dir, "find tree | sort");
    assert_eq!(listed(m.path()), listed(src.path()));
}

// ----- metadata -------------------------------------------------------------------------

#[test]
fn getfattr_shows_the_service_fields() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let folder = srv.put_folder(None, "Album");
    let f = srv.put_file_meta(
        mediafs::api::NewFile {
            file_name: "IMG_0001.jpg".into(),
            mime_type: "image/jpeg".into(),
            title: Some("sunset.jpg".into()),
            description: Some("Evening at the beach".into()),
            alt_text: Some("An orange sky".into()),
            is_private: Some(true),
            folder_id: Some(folder.clone()),
            is_favorite: Some(true),
            sort_order: Some(7),
        },
        b"not really a jpeg",
    );
    let m = Mount::new(&srv, &[]);
    let dump = sh(m.path(), "getfattr -d Album/sunset.jpg");
    let mut got: Vec<String> = dump
        .lines()
        .filter(|l| l.starts_with("user."))
        .map(str::to_string)
        .collect();
    got.sort();
    // Listed: the writable fields copy tools carry (not title); the rest by name.
    let mut want: Vec<String> = [
        ("alt_text", "An orange sky"),
        ("description", "Evening at the beach"),
        ("is_favorite", "true"),
        ("is_private", "true"),
        ("sort_order", "7"),
    ]
    .iter()
    .map(|(k, v)| format!("user.mediafs.{k}=\"{v}\""))
    .collect();
    want.sort();
    assert_eq!(got, want, "getfattr -d:\n{dump}");
    for (k, v) in [
        ("file_name", "IMG_0001.jpg"),
        ("id", f.id.as_str()),
        ("mime_type", "image/jpeg"),
        ("title", "sunset.jpg"),
    ] {
        assert_eq!(
            sh(
                m.path(),
                &format!("getfattr --only-values -n user.mediafs.{k} Album/sunset.jpg")
            ),
            v
        );
    }
    // One key at a time, as scripts read them.
    assert_eq!(
        sh(
            m.path(),
            "getfattr --only-values -n user.mediafs.description Album/sunset.jpg"
        ),
        "Evening at the beach"
    );
    // A folder shows its id.
    let dir_dump = sh(m.path(), "getfattr -n user.mediafs.id Album");
    assert!(
        dir_dump.contains(&format!("user.mediafs.id=\"{folder}\"")),
        "{dir_dump}"
    );
    // An attribute that does not exist is ENODATA.
    let out = sh_out(m.path(), "getfattr -n user.mediafs.nope Album/sunset.jpg");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No such attribute"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Other namespaces are not supported (ls -l then stops asking for ACLs and SELinux
    // labels of every entry).
    for name in ["security.selinux", "system.posix_acl_access"] {
        let out = sh_out(m.path(), &format!("getfattr -n {name} Album/sunset.jpg"));
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Operation not supported"),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn duplicate_and_odd_names_are_all_shown_and_readable() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let dir = srv.put_folder(None, "odd");
    let old = pseudo_random(5000, 1);
    let new = pseudo_random(6000, 2);
    let first = srv.put_file(Some(&dir), "photo.jpg", &old);
    std::thread::sleep(Duration::from_millis(20));
    let second = srv.put_file(Some(&dir), "photo.jpg", &new);
    // A folder and a file with one name: the folder keeps it.
    let clash_dir = srv.put_folder(Some(&dir), "clash");
    srv.put_file(Some(&clash_dir), "inside.txt", b"inside\n");
    let clash_file = srv.put_file(Some(&dir), "clash", b"the file named clash\n");
    let slash = srv.put_file(Some(&dir), "AC/DC live.mp3", b"thunder");
    let dotdot = srv.put_file(Some(&dir), "..", b"two dots");
    let long_title = format!("{}.bin", "x".repeat(296));
    assert_eq!(long_title.len(), 300);
    let long = srv.put_file(Some(&dir), &long_title, b"long name");

    let m = Mount::new(&srv, &[]);
    let d = m.p("odd");
    let second_name = format!("photo~{}.jpg", &second.id[..8]);
    let clash_name = format!("clash~{}", &clash_file.id[..8]);
    let long_name = format!("{}~{}.bin", "x".repeat(255 - 9 - 4), &long.id[..8]);
    assert_eq!(long_name.len(), 255);
    let mut want = vec![
        "photo.jpg".to_string(),
        second_name.clone(),
        "clash".to_string(),
        clash_name.clone(),
        "AC\u{2215}DC live.mp3".to_string(),
        "\u{FF0E}\u{FF0E}".to_string(),
        long_name.clone(),
    ];
    want.sort();
    let ls = sh(&d, "ls -1A | LC_ALL=C sort");
    let mut got: Vec<String> = ls.lines().map(str::to_string).collect();
    got.sort();
    assert_eq!(got, want, "ls -1A");

    assert_eq!(sha256_file(&d.join("photo.jpg")), sha256(&old));
    assert_eq!(sha256_file(&d.join(&second_name)), sha256(&new));
    assert_eq!(
        sh(&d, "getfattr --only-values -n user.mediafs.id photo.jpg"),
        first.id
    );
    assert_eq!(sh(&d, "stat -c %F clash").trim(), "directory");
    assert_eq!(sh(&d, "cat clash/inside.txt"), "inside\n");
    assert_eq!(
        sh(&d, &format!("cat {clash_name}")),
        "the file named clash\n"
    );
    assert_eq!(sh(&d, "cat 'AC\u{2215}DC live.mp3'"), "thunder");
    assert_eq!(
        sh(
            &d,
            "getfattr --only-values -n user.mediafs.title 'AC\u{2215}DC live.mp3'"
        ),
        "AC/DC live.mp3"
    );
    assert_eq!(sh(&d, "cat \u{FF0E}\u{FF0E}"), "two dots");
    assert_eq!(
        sh(
            &d,
            "getfattr --only-values -n user.mediafs.id \u{FF0E}\u{FF0E}"
        ),
        dotdot.id
    );
    assert_eq!(sh(&d, &format!("cat {long_name}")), "long name");
    assert_eq!(
        sh(
            &d,
            &format!("getfattr --only-values -n user.mediafs.title {long_name}")
        ),
        long_title
    );
    assert_eq!(slash.title.as_deref(), Some("AC/DC live.mp3"));
    // find walks everything, including the odd names.
    assert_eq!(sh(&d, "find . -type f | wc -l").trim(), "7");
}

// ----- reads against an unfriendly CDN --------------------------------------------------

#[test]
fn slow_reads_survive_signed_url_expiry() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|c| c.url_ttl = Duration::from_secs(2));
    let (_, sum) = put_random(&srv, None, "slow.bin", 6 << 20, 11);
    let scratch = tempfile::tempdir().unwrap();
    // Default cache: the file's blocks may all be prefetched, but the URL from the listing
    // has expired by the time the first read comes.
    {
        let m = Mount::new(&srv, &[]);
        sh(m.path(), "ls -l slow.bin");
        std::thread::sleep(Duration::from_millis(2500));
        let path = m.p("slow.bin").display().to_string();
        assert_eq!(slow_read(scratch.path(), &path, 512 << 10, 0.3), sum);
    }
    // A 1 MiB cache: blocks are evicted and fetched again, several URL lifetimes apart.
    let m = Mount::new(&srv, &["--cache-size", "1M"]);
    srv.reset_stats();
    let path = m.p("slow.bin").display().to_string();
    assert_eq!(slow_read(scratch.path(), &path, 512 << 10, 0.3), sum);
    // Twice more after the first pass: what was read first is long evicted.
    assert_eq!(slow_read(scratch.path(), &path, 2 << 20, 1.0), sum);
    let refreshes = srv.route_calls("GET /api/v1/media-manager/files/{id}");
    assert!(
        refreshes >= 2,
        "the reads spanned several URL lifetimes, yet the URL was refreshed {refreshes} times; stats: {}",
        srv.stats()
    );
    assert!(
        !m.log_text().contains("Signature="),
        "a signed URL reached the log"
    );
}

#[test]
fn a_cdn_that_ignores_range_still_reads_correctly() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|c| c.ignore_range = true);
    let bytes = pseudo_random((3 << 20) + 777, 21);
    srv.put_file(None, "whole.bin", &bytes);
    let m = Mount::new(&srv, &[]);
    assert_eq!(sha256sum(m.path(), "whole.bin"), sha256(&bytes));
    // A piece from the middle (a fresh mount, so nothing is cached yet).
    drop(m);
    let m = Mount::new(&srv, &[]);
    let piece = sh(
        m.path(),
        "dd if=whole.bin bs=1000 skip=2000 count=300 status=none | sha256sum",
    );
    assert_eq!(
        piece.split_whitespace().next().unwrap(),
        sha256(&bytes[2_000_000..2_300_000])
    );
}

#[test]
fn cdn_errors_and_dropped_connections_are_retried() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let (_, sum_a) = put_random(&srv, None, "a.bin", 8 << 20, 31);
    let (_, sum_b) = put_random(&srv, None, "b.bin", 8 << 20, 32);
    // A small cache and a small read size make many CDN requests, so the faults hit.
    let m = Mount::new(&srv, &["--cache-size", "2M"]);
    sh(m.path(), "ls -l");
    srv.reset_stats();
    srv.set_faults(serde_json::json!({"errorRate": 0.3, "route": "GET /cdn/{key}"}));
    assert_eq!(sha256sum(m.path(), "a.bin"), sum_a);
    let errors = srv.stats()["byStatus"]["503"].as_u64().unwrap_or(0);
    assert!(errors > 0, "no 503 was injected: {}", srv.stats());

    srv.set_faults(serde_json::json!({"dropRate": 0.3, "route": "GET /cdn/{key}"}));
    assert_eq!(sha256sum(m.path(), "b.bin"), sum_b);
    srv.clear_faults();
}

#[test]
fn eight_readers_of_different_files_and_four_of_one_file_all_get_the_right_bytes() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let mut sums = Vec::new();
    for i in 0..8 {
        let (_, sum) = put_random(&srv, None, &format!("r{i}.bin"), 20 << 20, 40 + i);
        sums.push(sum);
    }
    let (_, same_sum) = put_random(&srv, None, "same.bin", 20 << 20, 49);
    let m = Mount::new(&srv, &[]);
    let out = sh(
        m.path(),
        "for i in 0 1 2 3 4 5 6 7; do sha256sum r$i.bin > /tmp/$$.r$i & done; wait; \
         for i in 0 1 2 3 4 5 6 7; do cat /tmp/$$.r$i; rm /tmp/$$.r$i; done",
    );
    let got: Vec<(String, String)> = out
        .lines()
        .map(|l| {
            let mut w = l.split_whitespace();
            (w.next().unwrap().into(), w.next().unwrap().into())
        })
        .collect();
    assert_eq!(got.len(), 8, "{out}");
    for (i, (sum, name)) in got.iter().enumerate() {
        assert_eq!(name, &format!("r{i}.bin"));
        assert_eq!(sum, &sums[i], "{name}");
    }
    // Four readers of one file not read before (nothing cached), with different read sizes.
    let out = sh(
        m.path(),
        "sha256sum same.bin > /tmp/$$.a & dd if=same.bin bs=4k status=none | sha256sum > /tmp/$$.b & \
         dd if=same.bin bs=1M status=none | sha256sum > /tmp/$$.c & cat same.bin | sha256sum > /tmp/$$.d & \
         wait; cat /tmp/$$.a /tmp/$$.b /tmp/$$.c /tmp/$$.d; rm /tmp/$$.[abcd]",
    );
    let got: Vec<&str> = out
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(got, vec![same_sum.as_str(); 4], "{out}");
}

#[test]
fn the_kernel_page_cache_is_kept_across_opens() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let (_, sum) = put_random(&srv, None, "kept.bin", 8 << 20, 51);
    // The daemon's own cache is smaller than the file: a second read without the kernel's
    // page cache would have to go to the CDN again.
    let m = Mount::new(&srv, &["--cache-size", "1M"]);
    assert_eq!(sha256sum(m.path(), "kept.bin"), sum);
    srv.reset_stats();
    assert_eq!(sha256sum(m.path(), "kept.bin"), sum);
    assert_eq!(
        srv.route_calls("GET /cdn/{key}"),
        0,
        "second full read went to the CDN: {}",
        srv.stats()
    );
}

// ----- listings -------------------------------------------------------------------------

#[test]
fn a_ten_thousand_file_folder_lists_in_pages_without_per_file_calls() {
    if !fuse_available() {
        return;
    }
    use futures::StreamExt;
    const N: usize = 10_000;
    let srv = Server::start(|_| {});
    let dir = srv.put_folder(None, "big");
    // Contents of 1..=10 bytes, so `find -size` has something to tell apart.
    let blobs = tempfile::tempdir().unwrap();
    for len in 1..=10 {
        std::fs::write(blobs.path().join(len.to_string()), pseudo_random(len, 0)).unwrap();
    }
    let c = srv.client();
    let created: Vec<_> = srv.block(
        futures::stream::iter(0..N)
            .map(|i| {
                let c = c.clone();
                let dir = dir.clone();
                let path = blobs.path().join((i % 10 + 1).to_string());
                async move {
                    let meta = mediafs::api::NewFile {
                        file_name: format!("f{i:05}.bin"),
                        title: Some(format!("f{i:05}.bin")),
                        mime_type: "application/octet-stream".into(),
                        folder_id: Some(dir),
                        ..Default::default()
                    };
                    c.create_file(&meta, &path).await
                }
            })
            .buffer_unordered(16)
            .collect(),
    );
    assert!(created.iter().all(Result::is_ok));
    assert_eq!(created.len(), N);

    let m = Mount::new(&srv, &["--dir-ttl", "300"]);
    srv.reset_stats();
    let lines = sh(&m.p("big"), "ls -l | wc -l");
    assert_eq!(
        lines.trim(),
        (N + 1).to_string(),
        "ls -l: one line per file + total"
    );
    // Sizes 1..=5 bytes: half of them.
    let small = sh(&m.p("big"), "find . -type f -size -6c | wc -l");
    assert_eq!(small.trim(), (N / 2).to_string());
    let pages = srv.route_calls("GET /api/v1/media-manager/files");
    assert!(
        (100..=105).contains(&pages),
        "expected ~100 list pages, got {pages}: {}",
        srv.stats()
    );
    assert_eq!(
        srv.route_calls("GET /api/v1/media-manager/files/{id}"),
        0,
        "per-file calls: {}",
        srv.stats()
    );
    // Within the TTL: no call at all.
    srv.reset_stats();
    let again = sh(&m.p("big"), "ls -l | wc -l");
    assert_eq!(again.trim(), (N + 1).to_string());
    assert_eq!(srv.stats()["total"].as_u64(), Some(0), "{}", srv.stats());
}

#[test]
fn remote_changes_appear_after_the_dir_ttl() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let dir = srv.put_folder(None, "shared");
    let a = srv.put_file(Some(&dir), "a.txt", b"a\n");
    let c = srv.put_file(Some(&dir), "c.txt", b"c\n");
    let m = Mount::new(&srv, &["--dir-ttl", "1"]);
    let d = m.p("shared");
    assert_eq!(sh(&d, "ls"), "a.txt\nc.txt\n");
    assert_eq!(sh(&d, "cat a.txt"), "a\n");

    // Another user of the library: create, rename, delete.
    srv.put_file(Some(&dir), "b.txt", b"b\n");
    let client = srv.client();
    srv.block(async {
        client
            .update_file(
                &a.id,
                &mediafs::api::FileUpdate {
                    title: Some("a2.txt".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        client.delete_file(&c.id).await.unwrap();
    });
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(sh(&d, "ls"), "a2.txt\nb.txt\n");
    assert_eq!(sh(&d, "cat a2.txt b.txt"), "a\nb\n");
    let gone = sh_out(&d, "cat c.txt");
    assert!(!gone.status.success());
    let gone = sh_out(&d, "stat a.txt");
    assert!(!gone.status.success());
}

#[test]
fn sighup_drops_the_caches() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let old = srv.put_file(None, "old.txt", b"old\n");
    let m = Mount::new(&srv, &["--dir-ttl", "3600"]);
    assert_eq!(sh(m.path(), "ls"), "old.txt\n");
    srv.put_file(None, "new.txt", b"new\n");
    let client = srv.client();
    srv.block(async { client.delete_file(&old.id).await.unwrap() });
    // Within the TTL the listing is trusted.
    assert_eq!(sh(m.path(), "ls"), "old.txt\n");
    sh(m.path(), &format!("kill -HUP {}", m.pid()));
    assert!(
        wait_until(Duration::from_secs(1), || sh(m.path(), "ls") == "new.txt\n"),
        "after SIGHUP: {}",
        sh(m.path(), "ls")
    );
    assert_eq!(sh(m.path(), "cat new.txt"), "new\n");
    assert!(m.is_mounted(), "SIGHUP must not end the daemon");
}

// ----- mount modes and failures ---------------------------------------------------------

#[test]
fn a_read_only_mount_refuses_every_change_with_erofs() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let dir = srv.put_folder(None, "keep");
    srv.put_file(Some(&dir), "f.txt", b"keep me\n");
    let m = Mount::new(&srv, &["--read-only"]);
    assert_eq!(sh(m.path(), "cat keep/f.txt"), "keep me\n");
    for cmd in [
        "touch new.txt",
        "echo x > keep/f.txt",
        "echo x >> keep/f.txt",
        "mkdir newdir",
        "rm keep/f.txt",
        "rmdir keep",
        "mv keep/f.txt keep/g.txt",
        "mv keep kept",
        "setfattr -n user.mediafs.title -v t keep/f.txt",
    ] {
        let out = sh_out(m.path(), cmd);
        assert!(
            !out.status.success(),
            "{cmd} succeeded on a read-only mount"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("Read-only file system"), "{cmd}: {err}");
    }
    // Nothing changed remotely.
    let files = srv.remote_files(Some(&dir));
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].title.as_deref(), Some("f.txt"));
    assert_eq!(srv.remote_folders(None).len(), 1);
    // df works and shows the mount.
    let df = sh(m.path(), "df -P . | tail -1");
    let cols: Vec<&str> = df.split_whitespace().collect();
    assert_eq!(cols[0], "mediafs", "{df}");
    assert!(cols[1].parse::<u64>().unwrap() > 0, "{df}");
    assert_eq!(sh(m.path(), "stat -f -c %l .").trim(), "255");
}

#[test]
fn background_mount_returns_once_mounted_and_unmount_ends_it() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    srv.put_file(None, "hello.txt", b"hello\n");
    let work = tempfile::tempdir().unwrap();
    let mp = tempfile::tempdir().unwrap();
    let token = work.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let mp_s = mp.path().display().to_string();
    let url = srv.url();
    let token_s = token.display().to_string();
    let cache_s = work.path().join("cache").display().to_string();
    let log_s = work.path().join("daemon.log").display().to_string();
    let (out, took) = run_mediafs(&[
        "mount",
        &mp_s,
        "--api-url",
        &url,
        "--token-file",
        &token_s,
        "--cache-dir",
        &cache_s,
        "--log-file",
        &log_s,
    ]);
    let log = || std::fs::read_to_string(&log_s).unwrap_or_default();
    assert!(
        out.status.success(),
        "mount: {}\n{}\nlog:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        log()
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
    // Mounted when the command returns, not some time later.
    assert!(is_mountpoint(mp.path()), "not mounted after mount returned");
    assert_eq!(sh(mp.path(), "cat hello.txt"), "hello\n");
    assert_eq!(daemon_pids(&mp_s).len(), 1, "one daemon process");

    let (out, _) = run_mediafs(&["unmount", &mp_s]);
    assert!(
        out.status.success(),
        "unmount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        wait_until(Duration::from_secs(20), || !is_mountpoint(mp.path())),
        "still mounted after unmount"
    );
    assert!(
        wait_until(Duration::from_secs(20), || daemon_pids(&mp_s).is_empty()),
        "the daemon is still running after unmount; log:\n{}",
        log()
    );
    let log = log();
    assert!(!log.contains(TOKEN), "the token reached the log");
}

/// Mount arguments against `url` with a token file holding `token`.
fn mount_failure(url: &str, token: &str, mp: &Path) -> (std::process::Output, Duration) {
    let work = tempfile::tempdir().unwrap();
    let token_file = work.path().join("token");
    std::fs::write(&token_file, token).unwrap();
    let mp_s = mp.display().to_string();
    let token_s = token_file.display().to_string();
    let cache_s = work.path().join("cache").display().to_string();
    let log_s = work.path().join("daemon.log").display().to_string();
    run_mediafs(&[
        "mount",
        &mp_s,
        "--api-url",
        url,
        "--token-file",
        &token_s,
        "--cache-dir",
        &cache_s,
        "--log-file",
        &log_s,
    ])
}

#[test]
fn a_bad_token_fails_the_mount_quickly_with_a_clear_message() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let mp = tempfile::tempdir().unwrap();
    let (out, took) = mount_failure(&srv.url(), "kpt_wrong", mp.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "mount with a bad token succeeded");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(err.contains("token"), "message: {err}");
    assert!(
        !err.contains("kpt_wrong"),
        "the token reached the message: {err}"
    );
    assert!(!is_mountpoint(mp.path()));
}

#[test]
fn an_unreachable_api_fails_the_mount_with_a_clear_message() {
    if !fuse_available() {
        return;
    }
    // A port that was just closed: connection refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mp = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let (out, took) = mount_failure(&url, TOKEN, mp.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "mount of a closed port succeeded");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert!(
        err.contains("cannot reach") && err.contains(&format!("127.0.0.1:{port}")),
        "message: {err}"
    );
    assert!(!is_mountpoint(mp.path()));
}

#[test]
fn mounting_twice_on_one_directory_is_refused_clearly() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    srv.put_file(None, "x.txt", b"x\n");
    let m = Mount::new(&srv, &[]);
    let (out, took) = mount_failure(&srv.url(), TOKEN, m.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "second mount succeeded");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        err.contains("already a mount point") || err.contains("busy"),
        "message: {err}"
    );
    // The first mount is untouched.
    assert_eq!(sh(m.path(), "cat x.txt"), "x\n");
}
