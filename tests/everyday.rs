//! Everyday programs behave as on a local disk: each rule of SEMANTICS.md that differs
//! from "just upload on close" gets a real-mount test driven by real programs, checked
//! through the API as well as through the mount.

mod common;
mod write_support;

use common::*;
use write_support::*;

use std::time::Duration;

/// Names over 255 bytes: ENAMETOOLONG from mkdir, creat, rename and stat, as on a local
/// disk, and nothing reaches the service.
#[test]
fn names_over_255_bytes_are_refused_before_any_call() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let m = Mount::new(&srv, &[]);
    std::fs::write(m.p("short.txt"), b"x").unwrap();
    srv.reset_stats();
    let out = sh(
        m.path(),
        r#"
        long=$(printf 'n%.0s' $(seq 256))
        fits=$(printf 'n%.0s' $(seq 255))
        python3 - "$long" <<'PY'
import errno, os, sys
long = sys.argv[1]
for what, call in [
    ("mkdir", lambda: os.mkdir(long)),
    ("creat", lambda: os.open(long, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)),
    ("rename", lambda: os.rename("short.txt", long)),
    ("stat", lambda: os.stat(long)),
]:
    try:
        call()
        print(what, "succeeded")
    except OSError as e:
        print(what, errno.errorcode[e.errno])
PY
        touch "$fits" && stat -c %s "$fits"
        "#,
    );
    for what in ["mkdir", "creat", "rename", "stat"] {
        assert!(
            out.contains(&format!("{what} ENAMETOOLONG")),
            "{what} should give ENAMETOOLONG:\n{out}"
        );
    }
    assert!(
        out.trim_end().ends_with('0'),
        "a 255-byte name works:\n{out}"
    );
    let names: Vec<String> = srv.remote_files(None).iter().map(file_name_of).collect();
    assert!(names.contains(&"short.txt".to_string()), "{names:?}");
    assert!(names.iter().all(|n| n.len() <= 255), "{names:?}");
    assert!(srv.remote_folders(None).iter().all(|f| f.name.len() <= 255));
    assert_eq!(srv.route_calls("PATCH /api/v1/media-manager/files/{id}"), 0);
    assert_eq!(srv.route_calls("POST /api/v1/media-manager/folders"), 0);
}

/// Local attributes: `rsync -a` of an unchanged tree transfers nothing the second time,
/// also after a remount on the same cache dir; `cp -p`, `touch -d`, `tar x` keep times;
/// `chmod` survives a remount. The service sees no upload on the second rsync.
#[test]
fn rsync_twice_transfers_nothing_and_attributes_survive_remount() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let mut m = Mount::new(&srv, &[]);
    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("src");
    sh(
        local.path(),
        r#"
        mkdir -p src/a src/b
        for i in $(seq 1 200); do
            d=a; [ $((i % 2)) = 0 ] && d=b
            printf 'file %s\n' "$i" > "src/$d/f$i.txt"
            touch -d "2020-01-01 00:00:$((i % 60))" "src/$d/f$i.txt"
        done
        touch -d '2019-05-06 07:08:09' src/a src/b
        "#,
    );
    let rsync = |m: &Mount| {
        sh(
            local.path(),
            &format!(
                "rsync -a --stats {}/ {}/tree/",
                src.display(),
                m.path().display()
            ),
        )
    };
    let first = rsync(&m);
    assert!(
        first.contains("Number of regular files transferred: 200"),
        "{first}"
    );
    let uploads = || srv.route_calls("POST /api/v1/media-manager/files");
    let after_first = uploads();
    let second = rsync(&m);
    assert!(
        second.contains("Number of regular files transferred: 0"),
        "{second}"
    );
    assert_eq!(uploads(), after_first, "nothing uploaded the second time");

    // cp -p, touch -d, chmod, tar x through the mount.
    sh(
        m.path(),
        &format!(
            r#"
        cp -p {src}/a/f1.txt kept.txt
        echo hi > touched.txt
        touch -d '2001-02-03 04:05:06' touched.txt
        echo secret > private.txt
        chmod 600 private.txt
        mkdir t && cd {src} && tar cf {tar} a && cd - && tar xf {tar} -C t
        "#,
            src = src.display(),
            tar = local.path().join("a.tar").display()
        ),
    );
    let stat = |m: &Mount, f: &str| sh(m.path(), &format!("stat -c '%Y %a' {f}"));
    let want_kept = sh(&src, "stat -c %Y a/f1.txt");
    let want_tar = sh(&src, "stat -c %Y a/f3.txt");
    let check = |m: &Mount| {
        assert_eq!(
            stat(m, "kept.txt").split(' ').next().unwrap(),
            want_kept.trim()
        );
        let touched: i64 = stat(m, "touched.txt")
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let want: i64 = sh(m.path(), "date -d '2001-02-03 04:05:06' +%s")
            .trim()
            .parse()
            .unwrap();
        assert_eq!(touched, want, "touch -d keeps the time");
        assert_eq!(stat(m, "private.txt").trim().split(' ').nth(1), Some("600"));
        assert_eq!(
            stat(m, "t/a/f3.txt").split(' ').next().unwrap(),
            want_tar.trim(),
            "tar x keeps mtimes"
        );
        assert_eq!(
            stat(m, "tree/a").split(' ').next().unwrap(),
            sh(&src, "stat -c %Y a").trim(),
            "directory times too"
        );
    };
    check(&m);

    // Unmount and remount on the same cache dir: everything is still there.
    m.unmount();
    m.remount();
    check(&m);
    let before = uploads();
    let third = rsync(&m);
    assert!(
        third.contains("Number of regular files transferred: 0"),
        "{third}"
    );
    assert_eq!(uploads(), before);
    // The bytes on the service are the tree's.
    let tree = remote_folder(&srv, None, "tree");
    let a = remote_folder(&srv, Some(&tree.id), "a");
    let f1 = remote_file(&srv, Some(&a.id), "f1.txt");
    assert_eq!(
        remote_sha256(&srv, &f1.id),
        sha256_file(&src.join("a/f1.txt"))
    );
    assert_eq!(srv.remote_files(Some(&a.id)).len(), 100, "no leftovers");
    // Private: the database is the owner's only.
    let mode = sh(&m.cache_dir, "stat -c %a attrs.db");
    assert_eq!(mode.trim(), "600");
}

/// The mode a program creates a file or directory with is kept (the umask applied), as
/// `cp`, `tar x` and `git checkout` rely on: an executable copied in runs, a private file
/// stays private, and both survive a remount.
#[test]
fn files_and_directories_keep_the_mode_they_were_created_with() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let mut m = Mount::new(&srv, &[]);
    let src = tempfile::tempdir().unwrap();
    sh(
        src.path(),
        "mkdir t && echo secret > t/key && chmod 600 t/key && tar -cf t.tar t",
    );
    let ran = sh(
        m.path(),
        &format!(
            r#"
        umask 022
        cp /usr/bin/true true2 && ./true2 && echo ran
        tar -xf {tar}
        python3 -c "import os; os.close(os.open('p600', os.O_CREAT | os.O_WRONLY, 0o600)); os.mkdir('d700', 0o700)"
        (umask 077; touch masked)
        "#,
            tar = src.path().join("t.tar").display()
        ),
    );
    assert!(ran.contains("ran"), "{ran}");
    let modes = |m: &Mount| sh(m.path(), "stat -c '%n %a' true2 t/key p600 d700 masked");
    let want = "true2 755\nt/key 600\np600 600\nd700 700\nmasked 600\n";
    assert_eq!(modes(&m), want);
    m.unmount();
    m.remount();
    assert_eq!(modes(&m), want, "after a remount");
    assert_eq!(sh(m.path(), "cat t/key"), "secret\n");
    let key = remote_file(&srv, Some(&remote_folder(&srv, None, "t").id), "key");
    assert_eq!(
        remote_sha256(&srv, &key.id),
        sha256_file(&src.path().join("t/key"))
    );
}

/// A file appended to while another descriptor reads it: that descriptor keeps the old
/// version (SEMANTICS.md), and an open made after the append reads the new one whole,
/// even within the attribute TTL (the old reader's short read had made the kernel believe
/// the old size), with reads through the two interleaved (they share one page cache).
#[test]
fn an_open_after_an_overwrite_reads_the_new_version_while_an_old_reader_goes_on() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let m = Mount::new(&srv, &["--attr-ttl", "60"]);
    let out = sh(
        m.path(),
        r#"
        echo start > f.txt && sleep 1.2
        python3 - <<'PY'
import os, subprocess
fd = os.open("f.txt", os.O_RDONLY)
with open("f.txt", "a") as f:
    f.write("line\n")
print("old", os.pread(fd, 100, 0))
fd2 = os.open("f.txt", os.O_RDONLY)
print("new", os.pread(fd2, 100, 0))
# Reads through both, interleaved: neither sees the other's version.
print("old2", os.pread(fd, 100, 0))
print("new2", os.pread(fd2, 100, 0))
print("cat", subprocess.run(["cat", "f.txt"], capture_output=True).stdout)
os.close(fd)
print("after", subprocess.run(["cat", "f.txt"], capture_output=True).stdout)
PY
        "#,
    );
    assert!(out.contains("old b'start\\n'"), "{out}");
    assert!(out.contains("new b'start\\nline\\n'"), "{out}");
    assert!(out.contains("old2 b'start\\n'"), "{out}");
    assert!(out.contains("new2 b'start\\nline\\n'"), "{out}");
    assert!(out.contains("cat b'start\\nline\\n'"), "{out}");
    assert!(out.contains("after b'start\\nline\\n'"), "{out}");
    let f = remote_file(&srv, None, "f.txt");
    assert_eq!(srv.remote_bytes(&f.id), b"start\nline\n");
}

/// Directory times and link counts: a directory's mtime and ctime move when entries are
/// created, removed or renamed in it through the mount (and stay after a remount); its
/// nlink is 2 + its subdirectories; the root shows a recent time, not 1970.
#[test]
fn directory_times_move_with_their_entries_and_nlink_counts_subdirectories() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    // No kernel attribute cache: each stat asks the mount (the count after a listing).
    let mut m = Mount::new(&srv, &["--attr-ttl", "0"]);
    let out = sh(
        m.path(),
        r#"
        st() { stat -c '%y|%z|%h' "$1"; }
        mkdir d e
        touch -d '2001-01-01' d e
        a=$(st d); mkdir d/sub1 d/sub2; b=$(st d)
        touch d/f; c=$(st d)
        rm d/f; dd=$(st d)
        touch d/g; e0=$(st e); g0=$(st d)
        mv d/g e/g; g1=$(st d); e1=$(st e)
        rmdir d/sub2; h=$(st d)
        echo "a=$a"; echo "b=$b"; echo "c=$c"; echo "d=$dd"; echo "g0=$g0"; echo "g1=$g1"
        echo "e0=$e0"; echo "e1=$e1"; echo "h=$h"
        echo "root=$(stat -c %Y .)"; echo "now=$(date +%s)"
        "#,
    );
    let field = |k: &str| -> Vec<String> {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{k} in {out}"))
            .split('|')
            .map(str::to_string)
            .collect()
    };
    assert!(field("a")[0].starts_with("2001-01-01"), "{out}");
    assert_eq!(field("a")[2], "2", "no subdirectories: {out}");
    assert_eq!(field("b")[2], "4", "two subdirectories: {out}");
    // Each change moves mtime and ctime forward (timestamps with nanoseconds).
    for (before, after) in [
        ("a", "b"),
        ("b", "c"),
        ("c", "d"),
        ("g0", "g1"),
        ("e0", "e1"),
    ] {
        let (x, y) = (field(before), field(after));
        assert!(y[0] > x[0], "mtime {before} -> {after}: {out}");
        assert!(y[1] > x[1], "ctime {before} -> {after}: {out}");
    }
    assert_eq!(field("h")[2], "3", "rmdir: {out}");
    let num = |k: &str| -> i64 { field(k)[0].trim().parse().unwrap() };
    assert!(
        num("root") > num("now") - 3600,
        "root time is recent: {out}"
    );
    // Kept after a remount (same cache dir).
    let before = sh(m.path(), "stat -c '%Y %h' d");
    m.unmount();
    m.remount();
    // nlink is counted from the listing: a directory not listed yet shows 1 ("not
    // counted", as find expects), then the count.
    assert_eq!(sh(m.path(), "ls d >/dev/null; stat -c '%Y %h' d"), before);
    assert_eq!(srv.remote_folders(None).len(), 2, "d and e on the service");
}

/// An unlinked open file: `cat` keeps reading it through the open descriptor, `fstat`
/// says nlink 0, the name is gone at once, and the service deletes it after the last
/// close. After a crash in between, the next mount hides it and finishes the delete.
#[test]
fn unlinked_open_files_stay_readable_until_closed() {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let mut m = Mount::new(&srv, &["--attr-ttl", "0"]);
    let sha = write_random_file(&m.p("f.bin"), 3 << 20, 9);
    let out = sh(
        m.path(),
        r#"
        exec 3<f.bin
        rm f.bin
        ls
        cat <&3 | sha256sum
        python3 -c 'import os; print("nlink", os.fstat(3).st_nlink)'
        "#,
    );
    assert!(out.contains(&sha), "read after rm: {out}");
    assert!(out.contains("nlink 0"), "{out}");
    assert!(!out.contains("f.bin"), "name gone at once: {out}");
    assert!(
        wait_until(Duration::from_secs(20), || srv
            .remote_files(None)
            .is_empty()),
        "deleted after the last close"
    );

    // Held open while the service is checked, then a crash before the close.
    let sha = write_random_file(&m.p("g.bin"), 1 << 20, 10);
    let id = remote_file(&srv, None, "g.bin").id;
    let mut held = std::fs::File::open(m.p("g.bin")).unwrap();
    std::fs::remove_file(m.p("g.bin")).unwrap();
    assert!(!m.p("g.bin").exists());
    assert_eq!(held.metadata().unwrap().nlink(), 0);
    assert!(remote_get(&srv, &id).is_some(), "kept for the reader");
    let mut bytes = Vec::new();
    held.read_to_end(&mut bytes).unwrap();
    assert_eq!(sha256(&bytes), sha);
    m.kill();
    drop(held);
    assert!(remote_get(&srv, &id).is_some(), "the crash left it");
    m.remount();
    let listed = sh(m.path(), "ls -a");
    assert!(!listed.contains("g.bin"), "not resurrected: {listed}");
    assert!(
        wait_until(Duration::from_secs(20), || remote_get(&srv, &id).is_none()),
        "the next mount deletes it"
    );
    // The record goes right after the service shows the delete done.
    assert!(wait_until(Duration::from_secs(10), || std::fs::read_dir(
        m.cache_dir.join("deletes")
    )
    .unwrap()
    .next()
    .is_none()));
}

/// Copy tools with extended attributes: `shutil.copy2`, `cp -a`, `cp --preserve=all`,
/// `rsync -aX` exit 0 inside the mount and from the mount to a local disk and back, each
/// copy keeps the name it was given, and the writable service fields travel with it,
/// also when set while the file is still open for writing.
#[test]
fn copy_tools_keep_names_and_service_fields() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let m = Mount::new(&srv, &[]);
    let local = tempfile::tempdir().unwrap();
    sh(
        m.path(),
        r#"
        echo hello > hello.txt
        setfattr -n user.mediafs.description -v 'a greeting' hello.txt
        setfattr -n user.mediafs.alt_text -v 'hi' hello.txt
        setfattr -n user.mediafs.is_favorite -v true hello.txt
        "#,
    );
    let out = sh(
        m.path(),
        &format!(
            r#"
        set -e
        python3 -c 'import shutil; shutil.copy2("hello.txt", "hello_copy.txt")'
        cp -a hello.txt a_copy.txt
        cp --preserve=all hello.txt p_copy.txt
        rsync -aX hello.txt r_copy.txt
        cp -a hello.txt {l}/out_cp.txt
        rsync -aX hello.txt {l}/out_rsync.txt
        cp -a {l}/out_cp.txt back_cp.txt
        rsync -aX {l}/out_rsync.txt back_rsync.txt
        python3 - <<'PY'
import os
with open("open_w.txt", "w") as f:
    f.write("being written")
    f.flush()
    os.setxattr(f.fileno(), "user.mediafs.description", b"set while open")
PY
        getfattr -n user.mediafs.id --only-values hello.txt; echo
        getfattr -d hello.txt
        ls
        "#,
            l = local.path().display()
        ),
    );
    let hello = remote_file(&srv, None, "hello.txt");
    assert!(out.contains(&hello.id), "id readable by name: {out}");
    assert!(!out.contains("user.mediafs.id="), "id not listed: {out}");
    for name in [
        "hello_copy.txt",
        "a_copy.txt",
        "p_copy.txt",
        "r_copy.txt",
        "back_cp.txt",
        "back_rsync.txt",
    ] {
        let f = remote_file(&srv, None, name);
        assert_eq!(file_name_of(&f), name);
        assert_eq!(f.description.as_deref(), Some("a greeting"), "{name}");
        assert_eq!(f.alt_text.as_deref(), Some("hi"), "{name}");
        assert_eq!(f.is_favorite, Some(true), "{name}");
        assert_eq!(remote_sha256(&srv, &f.id), sha256(b"hello\n"), "{name}");
    }
    let w = remote_file(&srv, None, "open_w.txt");
    assert_eq!(w.description.as_deref(), Some("set while open"));
    // Nothing renamed, nothing left over: the originals and their copies only.
    let names: Vec<String> = srv.remote_files(None).iter().map(file_name_of).collect();
    assert_eq!(names.len(), 8, "{names:?}");
    assert!(names.iter().all(|n| !n.contains('~')), "{names:?}");
}

/// The plain name belongs to this mount's last word: an overwrite and an `mv` onto a
/// name whose old copy cannot be deleted (injected fault) show the new content under the
/// plain name, and end with one remote file once the fault clears.
#[test]
fn replaced_files_whose_delete_fails_are_hidden_and_deleted_later() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let m = Mount::new(
        &srv,
        &[
            "--upload-retry-secs",
            "1",
            "--dir-ttl",
            "0",
            "--attr-ttl",
            "0",
        ],
    );
    sh(m.path(), "echo old > over.txt; echo old > final.txt");
    srv.set_faults(serde_json::json!({
        "errorRate": 1.0,
        "route": "DELETE /api/v1/media-manager/files/{id}"
    }));
    let out = sh(
        m.path(),
        "echo new > over.txt; echo new > .final.tmp; mv .final.tmp final.txt; \
         cat over.txt final.txt; ls -a",
    );
    assert_eq!(
        out.lines().take(2).collect::<Vec<_>>(),
        ["new", "new"],
        "{out}"
    );
    assert!(!out.contains('~'), "no duplicate shown: {out}");
    assert!(
        remote_files_named(&srv, None, "final.txt").len() >= 2,
        "the old copy lingers"
    );
    srv.clear_faults();
    assert!(
        wait_until(Duration::from_secs(30), || {
            remote_files_named(&srv, None, "final.txt").len() == 1
                && remote_files_named(&srv, None, "over.txt").len() == 1
        }),
        "the deletes are retried until done"
    );
    for n in ["over.txt", "final.txt"] {
        let f = remote_file(&srv, None, n);
        assert_eq!(remote_sha256(&srv, &f.id), sha256(b"new\n"), "{n}");
    }
    // The record goes right after the delete succeeds (the service shows it first).
    let deletes = m.cache_dir.join("deletes");
    let left = || -> Vec<String> {
        std::fs::read_dir(&deletes)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(10), || left().is_empty()),
        "delete records left: {:?}",
        left()
    );
}

const CREATE_FILE: &str = "POST /api/v1/media-manager/files";

/// The one remote file shown as `name` in `folder`, checked through the API: its
/// `fileName` is `name` too, its MIME type `mime`, its bytes `sha`.
fn assert_saved(srv: &Server, folder: Option<&str>, name: &str, mime: &str, sha: &str) {
    let f = remote_file(srv, folder, name);
    let up = f.upload.as_ref().expect("the file has an upload");
    assert_eq!(up.file_name, name, "fileName of {name}");
    assert_eq!(up.mime_type.as_deref(), Some(mime), "mimeType of {name}");
    assert_eq!(remote_sha256(srv, &f.id), sha, "bytes of {name}");
}

/// Every file of `folder` on the service, by `fileName`, sorted.
fn remote_file_names(srv: &Server, folder: Option<&str>) -> Vec<String> {
    let mut v: Vec<String> = srv
        .remote_files(folder)
        .iter()
        .map(|f| {
            f.upload
                .as_ref()
                .map(|u| u.file_name.clone())
                .unwrap_or_default()
        })
        .collect();
    v.sort();
    v
}

/// `sed -i` and python's write-a-temp-file-then-`os.replace` end on the service under the
/// final name, with its MIME type, as one remote file made by one Create File call.
#[test]
fn saves_through_a_temp_file_land_under_the_final_name() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let m = Mount::new(&srv, &[]);
    let local = tempfile::tempdir().unwrap();
    let jpg = local.path().join("src.jpg");
    let jpg_sha = write_random_file(&jpg, 300_000, 11);
    let creates = || srv.route_calls(CREATE_FILE);

    std::fs::write(m.p("notes.txt"), b"old line\n").unwrap();
    srv.reset_stats();
    sh(m.path(), "sed -i s/old/new/ notes.txt");
    assert_eq!(creates(), 1, "sed -i: one Create File");
    assert_saved(
        &srv,
        None,
        "notes.txt",
        "text/plain",
        &sha256(b"new line\n"),
    );

    srv.reset_stats();
    sh(
        m.path(),
        &format!(
            r#"python3 - <<'PY'
import os, shutil, tempfile
fd, tmp = tempfile.mkstemp(dir='.')
with os.fdopen(fd, 'wb') as f, open('{jpg}', 'rb') as s:
    shutil.copyfileobj(s, f)
os.replace(tmp, 'photo.jpg')
with open('data.txt.tmp', 'w') as f:
    f.write('data\n')
os.replace('data.txt.tmp', 'data.txt')
PY"#,
            jpg = jpg.display()
        ),
    );
    assert_eq!(creates(), 2, "two saves, two Create File calls");
    assert_saved(&srv, None, "photo.jpg", "image/jpeg", &jpg_sha);
    assert_saved(&srv, None, "data.txt", "text/plain", &sha256(b"data\n"));
    assert_eq!(
        remote_file_names(&srv, None),
        ["data.txt", "notes.txt", "photo.jpg"],
        "no temporary file left on the service"
    );
    assert_eq!(sha256_file(&m.p("photo.jpg")), jpg_sha);
    assert_eq!(sh(m.path(), "ls -A"), "data.txt\nnotes.txt\nphoto.jpg\n");
}

/// rsync's default temporary names (`.a.jpg.XXXXXX`): a tree copied in, then copied again
/// over two changed files, ends with one remote file per name, each under its own
/// `fileName` and MIME type, one Create File per file sent.
#[test]
fn rsync_saves_land_under_their_final_names_with_one_upload_each() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let m = Mount::new(&srv, &[]);
    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    let mut shas = std::collections::BTreeMap::new();
    for (i, (name, mime)) in [
        ("a.jpg", "image/jpeg"),
        ("b.txt", "text/plain"),
        ("sub/c.png", "image/png"),
        ("sub/d.txt", "text/plain"),
    ]
    .into_iter()
    .enumerate()
    {
        let sha = write_random_file(&src.join(name), 100_000 + i * 5_000, i as u64);
        shas.insert(name, (mime, sha));
    }
    let rsync = || {
        sh(
            local.path(),
            &format!("rsync -a --stats src/ {}/tree/", m.path().display()),
        )
    };
    let check = |shas: &std::collections::BTreeMap<&str, (&str, String)>| {
        let tree = remote_folder(&srv, None, "tree").id;
        let sub = remote_folder(&srv, Some(&tree), "sub").id;
        for (name, (mime, sha)) in shas {
            let (folder, base) = match name.strip_prefix("sub/") {
                Some(b) => (&sub, b),
                None => (&tree, *name),
            };
            assert_saved(&srv, Some(folder), base, mime, sha);
        }
        assert_eq!(remote_file_names(&srv, Some(&tree)), ["a.jpg", "b.txt"]);
        assert_eq!(remote_file_names(&srv, Some(&sub)), ["c.png", "d.txt"]);
    };

    srv.reset_stats();
    let out = rsync();
    assert!(
        out.contains("Number of regular files transferred: 4"),
        "{out}"
    );
    assert_eq!(srv.route_calls(CREATE_FILE), 4, "one Create File per file");
    check(&shas);

    for (name, seed) in [("a.jpg", 100), ("sub/d.txt", 101)] {
        let sha = write_random_file(&src.join(name), 90_000, seed);
        shas.get_mut(name).unwrap().1 = sha;
    }
    srv.reset_stats();
    let out = rsync();
    assert!(
        out.contains("Number of regular files transferred: 2"),
        "{out}"
    );
    assert_eq!(
        srv.route_calls(CREATE_FILE),
        2,
        "one Create File per changed file"
    );
    check(&shas);
}

/// A held temporary file costs nothing when it is deleted; fsync uploads it at once; one
/// never renamed is uploaded under its own name when the delay runs out, or at unmount.
#[test]
fn held_temp_files_upload_on_fsync_delay_or_unmount_and_cost_nothing_when_deleted() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let mut m = Mount::new(&srv, &["--temp-upload-delay", "600"]);
    srv.reset_stats();
    sh(m.path(), "echo x > scratch.tmp; rm scratch.tmp");
    assert_eq!(srv.route_calls(CREATE_FILE), 0, "nothing uploaded");
    assert_eq!(
        srv.route_calls("DELETE /api/v1/media-manager/files/{id}"),
        0
    );

    sh(
        m.path(),
        r#"python3 -c "
import os
with open('synced.tmp', 'w') as f:
    f.write('synced\n')
    f.flush()
    os.fsync(f.fileno())
"
        echo held > held.tmp"#,
    );
    assert_saved(
        &srv,
        None,
        "synced.tmp",
        "application/octet-stream",
        &sha256(b"synced\n"),
    );
    // Held for 600 s: only unmount can upload it now.
    assert!(remote_files_named(&srv, None, "held.tmp").is_empty());
    assert_eq!(sh(m.path(), "cat held.tmp"), "held\n");
    m.unmount();
    assert_saved(
        &srv,
        None,
        "held.tmp",
        "application/octet-stream",
        &sha256(b"held\n"),
    );

    let m = Mount::new(&srv, &["--temp-upload-delay", "1"]);
    sh(m.path(), "echo later > later.tmp");
    assert!(
        wait_landed(&srv, None, "later.tmp", &sha256(b"later\n"), 30),
        "uploaded under its own name once the delay ran out"
    );
}

/// An upload that fails at the rename of a save makes `os.replace` report it; the bytes
/// are kept under the final name and land when the service takes them: while mounted,
/// and after a SIGKILL of the daemon and a remount.
#[test]
fn a_failed_upload_at_rename_is_reported_and_lands_under_the_final_name() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let mut m = Mount::new(&srv, &["--upload-retry-secs", "1"]);
    let save = |name: &str| {
        sh(
            m.path(),
            &format!(
                r#"python3 - <<'PY'
import errno, os, tempfile
fd, tmp = tempfile.mkstemp(dir='.')
with os.fdopen(fd, 'wb') as f:
    f.write(b'{name}\n' * 1000)
try:
    os.replace(tmp, '{name}')
    print('ok')
except OSError as e:
    print(errno.errorcode[e.errno])
PY
ls -A"#
            ),
        )
    };
    let fail_uploads = || {
        srv.set_faults(serde_json::json!({ "errorRate": 1.0, "route": CREATE_FILE }));
    };
    let bytes = |name: &str| format!("{name}\n").repeat(1000).into_bytes();

    fail_uploads();
    let out = save("first.jpg");
    assert_eq!(
        out, "EIO\nfirst.jpg\n",
        "the rename reports the upload failure"
    );
    assert_eq!(sha256_file(&m.p("first.jpg")), sha256(&bytes("first.jpg")));
    assert!(srv.remote_files(None).is_empty());
    srv.clear_faults();
    assert!(wait_landed(
        &srv,
        None,
        "first.jpg",
        &sha256(&bytes("first.jpg")),
        30
    ));

    fail_uploads();
    let out = save("second.jpg");
    assert_eq!(out, "EIO\nfirst.jpg\nsecond.jpg\n");
    m.kill();
    srv.clear_faults();
    m.remount();
    assert!(wait_landed(
        &srv,
        None,
        "second.jpg",
        &sha256(&bytes("second.jpg")),
        30
    ));
    for n in ["first.jpg", "second.jpg"] {
        assert_saved(&srv, None, n, "image/jpeg", &sha256(&bytes(n)));
    }
    assert_eq!(remote_file_names(&srv, None), ["first.jpg", "second.jpg"]);
    assert_eq!(sh(m.path(), "ls -A"), "first.jpg\nsecond.jpg\n");
}

/// A SIGKILL between the upload of an overwrite (and of a save renamed over a file) and
/// the delete of the old copy: after a remount the plain name shows the new content and
/// the service ends with one remote file per name.
#[test]
fn a_crash_between_upload_and_delete_of_the_old_copy_keeps_the_new_content() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let mut m = Mount::new(&srv, &["--dir-ttl", "0", "--attr-ttl", "0"]);
    sh(m.path(), "echo old > over.txt; echo old > final.txt");
    // The old copies' deletes hang until the daemon is killed.
    srv.set_faults(serde_json::json!({
        "latencyMs": 20000,
        "route": "DELETE /api/v1/media-manager/files/{id}"
    }));
    let writers: Vec<std::process::Child> = [
        "open('over.txt', 'w').write('new\\n')",
        "import os; open('final.txt.tmp', 'w').write('new\\n'); os.replace('final.txt.tmp', 'final.txt')",
    ]
    .iter()
    .map(|code| {
        std::process::Command::new("python3")
            .args(["-c", code])
            .current_dir(m.path())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    })
    .collect();
    let both = |n: usize| {
        remote_files_named(&srv, None, "over.txt").len() == n
            && remote_files_named(&srv, None, "final.txt").len() == n
    };
    assert!(
        wait_until(Duration::from_secs(30), || both(2)),
        "both new copies uploaded"
    );
    m.kill();
    for mut w in writers {
        let _ = w.wait();
    }
    assert!(both(2), "the old copies are still there");
    srv.clear_faults();
    m.remount();
    assert_eq!(
        sh(m.path(), "cat over.txt final.txt; ls -A"),
        "new\nnew\nfinal.txt\nover.txt\n"
    );
    for n in ["over.txt", "final.txt"] {
        assert!(wait_landed(&srv, None, n, &sha256(b"new\n"), 30), "{n}");
    }
}

/// A temporary name nobody recognised (`draft-1234`): uploaded at close, then renamed
/// just after. The mount uploads it again under the final name and deletes the copy
/// under the temporary one, so the service ends with one file, final `fileName` and
/// MIME type.
#[test]
fn a_file_renamed_just_after_its_upload_is_uploaded_again_under_the_new_name() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    // The window (the same flag) is long, so the rename surely falls in it.
    let m = Mount::new(&srv, &["--temp-upload-delay", "600"]);
    let local = tempfile::tempdir().unwrap();
    let sha = write_random_file(&local.path().join("src.jpg"), 200_000, 21);
    srv.reset_stats();
    sh(
        m.path(),
        &format!(
            "cp {}/src.jpg draft-1234 && mv draft-1234 final.jpg",
            local.path().display()
        ),
    );
    assert_saved(&srv, None, "final.jpg", "image/jpeg", &sha);
    assert_eq!(remote_file_names(&srv, None), ["final.jpg"]);
    assert_eq!(srv.route_calls(CREATE_FILE), 2, "the upload and the fix");
    assert_eq!(sha256_file(&m.p("final.jpg")), sha);
    assert_eq!(sh(m.path(), "ls -A"), "final.jpg\n");

    // Renamed long after its upload (here: off with a zero window): only the title moves.
    let m2 = Mount::new(&srv, &["--temp-upload-delay", "0"]);
    srv.reset_stats();
    sh(m2.path(), "mv final.jpg renamed.jpg");
    assert_eq!(srv.route_calls(CREATE_FILE), 0);
    let f = remote_file(&srv, None, "renamed.jpg");
    assert_eq!(f.upload.unwrap().file_name, "final.jpg");
}

/// sqlite in the mount (default rollback journal, `synchronous=FULL`): every transaction
/// is correct through the mount and on the service, and the mount uploads no more than
/// sqlite's fsync points ask for (counted with strace): each upload answers an fsync of a
/// changed file, or the last close.
#[test]
fn sqlite_uploads_only_at_its_fsync_points() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let m = Mount::new(&srv, &[]);
    let trace = tempfile::tempdir().unwrap();
    let log = trace.path().join("strace.log");
    srv.reset_stats();
    sh(
        m.path(),
        &format!(
            r#"strace -f -y -e trace=fsync,fdatasync -o {log} python3 - <<'PY'
import sqlite3
db = sqlite3.connect('t.db', isolation_level=None)
db.execute('create table t (i integer, s text)')
for i in range(20):
    db.execute('begin')
    db.execute('insert into t values (?, ?)', (i, 'row %d' % i))
    db.execute('commit')
db.close()
PY"#,
            log = log.display()
        ),
    );
    let mount = m.path().display().to_string();
    let traced = std::fs::read_to_string(&log).unwrap();
    // fsyncs of files in the mount (sqlite also fsyncs the directory: no upload).
    let file_syncs = traced
        .lines()
        .filter(|l| l.contains(&format!("<{mount}/")) && l.contains(" = 0"))
        .count() as u64;
    let creates = srv.route_calls(CREATE_FILE);
    let deletes = srv.route_calls("DELETE /api/v1/media-manager/files/{id}");
    eprintln!(
        "sqlite: 21 transactions, {file_syncs} file fsyncs, {creates} Create File, \
         {deletes} Delete File calls"
    );
    assert!(
        creates <= file_syncs + 1,
        "{creates} uploads for {file_syncs} fsyncs:\n{traced}"
    );
    let rows = sh(m.path(), "python3 -c \"import sqlite3; print(sqlite3.connect('t.db').execute('select count(*), sum(i) from t').fetchone())\"");
    assert_eq!(rows, "(20, 190)\n");
    let f = remote_file(&srv, None, "t.db");
    assert_eq!(remote_sha256(&srv, &f.id), sha256_file(&m.p("t.db")));
    assert_eq!(remote_file_names(&srv, None), ["t.db"], "no journal left");
}

/// A program holding a file open runs other programs: each inherits the descriptor and
/// closes it at exec or exit. Those closes upload nothing (no partial versions, no child waiting
/// for an upload); the shell's own close uploads once. A child that writes after the
/// opener closed gets its bytes uploaded at the last close.
#[test]
fn children_closing_an_inherited_descriptor_do_not_upload() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let m = Mount::new(&srv, &[]);
    srv.reset_stats();
    let uploads = || srv.route_calls("POST /api/v1/media-manager/files");
    sh(
        m.path(),
        r#"
        python3 - <<'PY'
import os, subprocess
with open("log.txt", "w") as f:
    for i in range(1, 7):
        f.write(f"line {i}\n")
        f.flush()
        subprocess.run(["/bin/true"], check=True)
        os.system("ls >/dev/null")
PY
        "#,
    );
    assert_eq!(uploads(), 1, "one upload, at python's close");
    let want: String = (1..=6).map(|i| format!("line {i}\n")).collect();
    let files = srv.remote_files(None);
    let log = files.iter().find(|f| file_name_of(f) == "log.txt").unwrap();
    assert_eq!(srv.remote_bytes(&log.id), want.as_bytes());

    // The opener closes first; a background child still writes, then exits.
    sh(
        m.path(),
        r#"
        exec 3>late.txt
        echo early >&3
        ( sleep 1; echo late >&3 ) &
        exec 3>&-
        wait
        "#,
    );
    let late = || -> Vec<mediafs::api::MediaFile> {
        srv.remote_files(None)
            .into_iter()
            .filter(|f| file_name_of(f) == "late.txt")
            .collect()
    };
    let landed = wait_until(Duration::from_secs(30), || {
        let l = late();
        l.len() == 1 && l[0].size() == 11
    });
    assert!(
        landed,
        "the last close uploads the child's bytes: {:?}",
        late()
    );
    assert_eq!(srv.remote_bytes(&late()[0].id), b"early\nlate\n");
    assert_eq!(std::fs::read(m.p("late.txt")).unwrap(), b"early\nlate\n");
}
