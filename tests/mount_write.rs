//! Writing through a real mount with real programs (cp, mv, rm, mkdir, tar, rsync, shell
//! redirections, setfattr), each result checked through the API, not only the mount.

mod common;
mod write_support;

use std::path::Path;

use common::*;
use futures::StreamExt as _;
use mediafs::api::{FileUpdate, MediaClient, NewFile};
use write_support::*;

const FOLDER_PATCH: &str = "PATCH /api/v1/media-manager/folders/{id}";
const FILE_PATCH: &str = "PATCH /api/v1/media-manager/files/{id}";
const FILE_POST: &str = "POST /api/v1/media-manager/files";
const FILE_DELETE: &str = "DELETE /api/v1/media-manager/files/{id}";

/// A local tree of sources: nested dirs, an empty file, small and odd-sized files.
fn make_source_tree(root: &Path) -> Vec<(&'static str, String)> {
    let files: [(&str, usize); 7] = [
        ("top.txt", 13),
        ("empty.bin", 0),
        ("a/one.bin", 4097),
        ("a/two.bin", 70_000),
        ("a/b/deep.bin", 1),
        ("a/b/c/deeper.bin", 300_001),
        ("z/lonely.dat", 12_345),
    ];
    std::fs::create_dir_all(root.join("a/b/c")).unwrap();
    std::fs::create_dir_all(root.join("z")).unwrap();
    std::fs::create_dir_all(root.join("emptydir")).unwrap();
    files
        .iter()
        .enumerate()
        .map(|(i, (rel, len))| {
            (
                *rel,
                write_random_file(&root.join(rel), *len, 100 + i as u64),
            )
        })
        .collect()
}

#[test]
fn cp_in_of_files_from_0_bytes_to_5_mib_lands_byte_exact() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let m = Mount::new(&srv, &[]);
    let src = tempfile::tempdir().unwrap();
    let sizes = [0usize, 1, 4097, 5 << 20];
    for (i, size) in sizes.iter().enumerate() {
        let name = format!("f{size}.bin");
        let sha = write_random_file(&src.path().join(&name), *size, i as u64 + 1);
        sh(
            m.path(),
            &format!("cp {}/{name} {name}", src.path().display()),
        );
        // Through the API: one file, title = fileName = the entry name, the same bytes.
        let f = remote_file(&srv, None, &name);
        assert_eq!(f.title.as_deref(), Some(name.as_str()));
        assert_eq!(f.upload.as_ref().unwrap().file_name, name);
        assert_eq!(f.size(), *size as u64);
        assert_eq!(remote_sha256(&srv, &f.id), sha, "{name} via the API");
        // And through the mount.
        assert_eq!(sha256_file(&m.p(&name)), sha, "{name} via the mount");
        assert_eq!(
            sh(m.path(), &format!("stat -c %s {name}")).trim(),
            size.to_string()
        );
    }
    assert_eq!(srv.remote_files(None).len(), sizes.len());
}

#[test]
fn cp_in_of_a_200_mib_file_lands_byte_exact() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let m = Mount::new(&srv, &[]);
    let src = tempfile::tempdir().unwrap();
    let sha = write_random_file(&src.path().join("big.bin"), 200 << 20, 7);
    sh(
        m.path(),
        &format!("cp {}/big.bin big.bin", src.path().display()),
    );
    let f = remote_file(&srv, None, "big.bin");
    assert_eq!(f.size(), 200 << 20);
    assert_eq!(remote_sha256(&srv, &f.id), sha);
    // Dropping the staged copy and reading back through the mount gives the same bytes.
    assert_eq!(sha256_file(&m.p("big.bin")), sha);
}

#[test]
fn cp_r_of_a_tree_arrives_with_its_structure() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let m = Mount::new(&srv, &[]);
    let src = tempfile::tempdir().unwrap();
    let files = make_source_tree(&src.path().join("tree"));
    sh(m.path(), &format!("cp -r {}/tree .", src.path().display()));
    sh(
        m.path(),
        &format!("diff -r {}/tree tree", src.path().display()),
    );

    // The remote library holds exactly the source tree.
    let tree = remote_folder(&srv, None, "tree");
    let remote = remote_tree(&srv, Some(&tree.id));
    assert_eq!(remote, local_tree(&src.path().join("tree")));
    for (rel, sha) in &files {
        assert_eq!(remote.get(*rel), Some(&Node::File(sha.clone())), "{rel}");
    }
    assert_eq!(remote.get("emptydir"), Some(&Node::Dir));
}

#[test]
fn mv_of_files_within_and_across_folders_is_one_update_each() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let a = srv.put_folder(None, "A");
    let b = srv.put_folder(None, "B");
    let bytes = pseudo_random(10_000, 3);
    let orig = srv.put_file(Some(&a), "x.bin", &bytes);
    let m = Mount::new(&srv, &[]);
    sh(m.path(), "ls A B >/dev/null");

    // Within a folder: a rename, same remote file (no new upload).
    srv.reset_stats();
    sh(m.path(), "mv A/x.bin A/y.bin");
    assert_eq!(srv.route_calls(FILE_PATCH), 1);
    assert_eq!(srv.route_calls(FILE_POST), 0);
    assert_eq!(srv.route_calls(FILE_DELETE), 0);
    let f = remote_file(&srv, Some(&a), "y.bin");
    assert_eq!(f.id, orig.id);
    assert!(remote_files_named(&srv, Some(&a), "x.bin").is_empty());

    // Across folders, with a new name.
    srv.reset_stats();
    sh(m.path(), "mv A/y.bin B/z.bin");
    assert_eq!(srv.route_calls(FILE_PATCH), 1);
    assert_eq!(srv.route_calls(FILE_POST), 0);
    let f = remote_file(&srv, Some(&b), "z.bin");
    assert_eq!(f.id, orig.id);
    assert_eq!(f.folder_id.as_deref(), Some(b.as_str()));
    assert!(srv.remote_files(Some(&a)).is_empty());
    assert_eq!(remote_sha256(&srv, &f.id), sha256(&bytes));
    assert_eq!(sha256_file(&m.p("B/z.bin")), sha256(&bytes));
    assert!(!m.p("A/y.bin").exists());

    // To the root, keeping the name.
    sh(m.path(), "mv B/z.bin .");
    let f = remote_file(&srv, None, "z.bin");
    assert_eq!(f.id, orig.id);
    assert!(srv.remote_files(Some(&b)).is_empty());

    // Onto an existing file: it is replaced, one file of that name is left.
    // (Created through the mount: a remote change made elsewhere shows only after the TTL.)
    sh(m.path(), "echo old > A/victim.bin");
    let other = remote_file(&srv, Some(&a), "victim.bin");
    sh(m.path(), "mv z.bin A/victim.bin");
    let f = remote_file(&srv, Some(&a), "victim.bin");
    assert_eq!(f.id, orig.id);
    assert!(
        remote_get(&srv, &other.id).is_none(),
        "replaced file deleted"
    );
    assert_eq!(sha256_file(&m.p("A/victim.bin")), sha256(&bytes));
    assert_eq!(
        sh(m.path(), "ls A").trim(),
        "victim.bin",
        "no duplicate suffix left"
    );

    // A directory within the root and into another folder.
    sh(
        m.path(),
        "mkdir D && echo hi > D/f.txt && mv D E && mv E B/",
    );
    let e = remote_folder(&srv, Some(&b), "E");
    assert_eq!(remote_tree(&srv, Some(&e.id)).len(), 1);
    assert_eq!(
        srv.remote_bytes(&remote_file(&srv, Some(&e.id), "f.txt").id),
        b"hi\n"
    );
    assert_eq!(sh(m.path(), "cat B/E/f.txt"), "hi\n");
}

#[test]
fn mv_of_a_directory_holding_1000_files_is_exactly_one_api_call() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let src = srv.put_folder(None, "Src");
    let dst = srv.put_folder(None, "Dst");
    let big = srv.put_folder(Some(&src), "Big");
    // 1,000 files through the API, 16 at a time.
    let client = srv.client();
    let tmp = tempfile::tempdir().unwrap();
    let created: Vec<String> = srv.block(async {
        futures::stream::iter(0..1000)
            .map(|i| {
                let client = client.clone();
                let big = big.clone();
                let path = tmp.path().join(format!("{i}"));
                async move {
                    std::fs::write(&path, format!("file {i}\n")).unwrap();
                    let meta = NewFile {
                        file_name: format!("f{i:04}.txt"),
                        title: Some(format!("f{i:04}.txt")),
                        mime_type: "text/plain".into(),
                        folder_id: Some(big),
                        ..Default::default()
                    };
                    client.create_file(&meta, &path).await.unwrap().id
                }
            })
            .buffer_unordered(16)
            .collect()
            .await
    });
    assert_eq!(created.len(), 1000);
    let m = Mount::new(&srv, &[]);
    assert_eq!(sh(m.path(), "ls Src/Big | wc -l").trim(), "1000");

    srv.reset_stats();
    sh(m.path(), "mv Src/Big Dst/");
    assert_eq!(srv.route_calls(FOLDER_PATCH), 1, "{}", srv.stats());
    assert_eq!(srv.route_calls(FILE_PATCH), 0, "{}", srv.stats());
    assert_eq!(srv.route_calls(FILE_POST), 0);
    assert_eq!(srv.route_calls(FILE_DELETE), 0);

    // Through the API: the folder moved with all its files.
    let moved = remote_folder(&srv, Some(&dst), "Big");
    assert_eq!(moved.id, big);
    assert!(srv.remote_folders(Some(&src)).is_empty());
    let files = srv.remote_files(Some(&big));
    assert_eq!(files.len(), 1000);
    // And through the mount.
    assert_eq!(sh(m.path(), "ls Dst/Big | wc -l").trim(), "1000");
    assert_eq!(sh(m.path(), "cat Dst/Big/f0999.txt"), "file 999\n");
    assert!(!m.p("Src/Big").exists());
}

#[test]
fn rm_rm_r_mkdir_p_and_rmdir_change_the_library() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let m = Mount::new(&srv, &[]);

    sh(m.path(), "mkdir -p p/q/r");
    let p = remote_folder(&srv, None, "p");
    let q = remote_folder(&srv, Some(&p.id), "q");
    let r = remote_folder(&srv, Some(&q.id), "r");
    assert!(srv.remote_folders(Some(&r.id)).is_empty());
    // mkdir -p on an existing path is fine and creates nothing.
    sh(m.path(), "mkdir -p p/q/r");
    assert_eq!(srv.remote_folders(Some(&q.id)).len(), 1);
    // mkdir on an existing name is EEXIST.
    let out = sh_out(m.path(), "mkdir p");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("File exists"));

    sh(
        m.path(),
        "echo one > p/q/r/one.txt && echo two > p/q/two.txt",
    );
    assert_eq!(
        srv.remote_bytes(&remote_file(&srv, Some(&r.id), "one.txt").id),
        b"one\n"
    );

    // rmdir of a non-empty directory: ENOTEMPTY, nothing removed.
    let out = sh_out(m.path(), "rmdir p/q/r");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Directory not empty"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(srv.remote_files(Some(&r.id)).len(), 1);

    // rm of a file, then rmdir of the emptied directory.
    let one = remote_file(&srv, Some(&r.id), "one.txt");
    sh(m.path(), "rm p/q/r/one.txt");
    assert!(remote_get(&srv, &one.id).is_none());
    sh(m.path(), "rmdir p/q/r");
    assert!(srv.remote_folders(Some(&q.id)).is_empty());
    assert!(!m.p("p/q/r").exists());

    // rm of a directory without -r fails; rm -r removes the whole subtree.
    let out = sh_out(m.path(), "rm p");
    assert!(!out.status.success());
    sh(m.path(), "mkdir p/s && echo x > p/s/x && echo y > p/y");
    sh(m.path(), "rm -r p");
    assert!(srv.remote_folders(None).is_empty());
    assert!(srv.remote_files(None).is_empty());
    assert_eq!(sh(m.path(), "ls -A | wc -l").trim(), "0");
    // rm of a missing file is ENOENT.
    let out = sh_out(m.path(), "rm nope");
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such file"));
}

#[test]
fn overwrite_with_cp_and_redirect_keeps_title_and_metadata() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let folder = srv.put_folder(None, "docs");
    let old = srv.put_file(Some(&folder), "note.txt", b"old contents\n");
    remote_update(
        &srv,
        &old.id,
        FileUpdate {
            description: Some("keep me".into()),
            alt_text: Some("alt".into()),
            is_favorite: Some(true),
            ..Default::default()
        },
    );
    let m = Mount::new(&srv, &[]);
    assert_eq!(sh(m.path(), "cat docs/note.txt"), "old contents\n");

    // Overwrite with cp.
    let src = tempfile::tempdir().unwrap();
    let sha = write_random_file(&src.path().join("new"), 100_000, 9);
    sh(
        m.path(),
        &format!("cp {}/new docs/note.txt", src.path().display()),
    );
    let f = remote_file(&srv, Some(&folder), "note.txt");
    assert_ne!(f.id, old.id, "new bytes are a new remote file");
    assert!(remote_get(&srv, &old.id).is_none(), "old file deleted");
    assert_eq!(f.title.as_deref(), Some("note.txt"));
    assert_eq!(f.description.as_deref(), Some("keep me"));
    assert_eq!(f.alt_text.as_deref(), Some("alt"));
    assert_eq!(f.is_favorite, Some(true));
    assert_eq!(remote_sha256(&srv, &f.id), sha);
    assert_eq!(sha256_file(&m.p("docs/note.txt")), sha);

    // Overwrite with a shell redirection.
    sh(m.path(), "echo replaced > docs/note.txt");
    let g = remote_file(&srv, Some(&folder), "note.txt");
    assert_ne!(g.id, f.id);
    assert!(remote_get(&srv, &f.id).is_none());
    assert_eq!(g.description.as_deref(), Some("keep me"));
    assert_eq!(g.is_favorite, Some(true));
    assert_eq!(srv.remote_bytes(&g.id), b"replaced\n");
    assert_eq!(sh(m.path(), "cat docs/note.txt"), "replaced\n");
    assert_eq!(srv.remote_files(Some(&folder)).len(), 1);
}

#[test]
fn append_and_truncate_edit_the_remote_bytes() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let base = pseudo_random(5000, 11);
    srv.put_file(None, "log.bin", &base);
    let m = Mount::new(&srv, &[]);

    // >> on a remote file: the remote bytes, then the new ones.
    sh(m.path(), "printf 'tail\\n' >> log.bin");
    let mut want = base.clone();
    want.extend_from_slice(b"tail\n");
    let f = remote_file(&srv, None, "log.bin");
    assert_eq!(remote_sha256(&srv, &f.id), sha256(&want));
    // >> twice in a row, and on a file created through the mount.
    sh(
        m.path(),
        "printf 'more' >> log.bin; printf a > new.txt; printf b >> new.txt",
    );
    want.extend_from_slice(b"more");
    assert_eq!(
        remote_sha256(&srv, &remote_file(&srv, None, "log.bin").id),
        sha256(&want)
    );
    assert_eq!(
        srv.remote_bytes(&remote_file(&srv, None, "new.txt").id),
        b"ab"
    );

    // truncate -s: shrink, grow (zeros), and to zero.
    sh(m.path(), "truncate -s 100 log.bin");
    want.truncate(100);
    assert_eq!(
        remote_sha256(&srv, &remote_file(&srv, None, "log.bin").id),
        sha256(&want)
    );
    assert_eq!(sha256_file(&m.p("log.bin")), sha256(&want));
    sh(m.path(), "truncate -s 70000 log.bin");
    want.resize(70_000, 0);
    let f = remote_file(&srv, None, "log.bin");
    assert_eq!(f.size(), 70_000);
    assert_eq!(remote_sha256(&srv, &f.id), sha256(&want));
    sh(m.path(), "truncate -s 0 log.bin");
    let f = remote_file(&srv, None, "log.bin");
    assert_eq!(f.size(), 0);
    assert_eq!(sh(m.path(), "stat -c %s log.bin").trim(), "0");
    assert_eq!(srv.remote_files(None).len(), 2);
}

#[test]
fn tar_x_and_rsync_a_into_the_mount() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let m = Mount::new(&srv, &[]);
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let files = make_source_tree(&src);
    sh(work.path(), "tar cf tree.tar -C src .");

    sh(
        m.path(),
        &format!("mkdir t && tar xf {}/tree.tar -C t", work.path().display()),
    );
    sh(m.path(), &format!("diff -r {} t", src.display()));
    let t = remote_folder(&srv, None, "t");
    let remote = remote_tree(&srv, Some(&t.id));
    assert_eq!(remote, local_tree(&src));
    for (rel, sha) in files.iter().take(4) {
        assert_eq!(remote.get(*rel), Some(&Node::File(sha.clone())), "{rel}");
    }

    // rsync writes temporary files and renames them over the targets.
    sh(m.path(), &format!("rsync -a {}/ r/", src.display()));
    sh(m.path(), &format!("diff -r {} r", src.display()));
    let r = remote_folder(&srv, None, "r");
    assert_eq!(remote_tree(&srv, Some(&r.id)), local_tree(&src));

    // A second rsync after a change sends only the change and leaves no temporary files.
    write_random_file(&src.join("a/one.bin"), 5000, 999);
    sh(m.path(), &format!("rsync -a {}/ r/", src.display()));
    sh(m.path(), &format!("diff -r {} r", src.display()));
    assert_eq!(remote_tree(&srv, Some(&r.id)), local_tree(&src));
}

#[test]
fn setfattr_description_round_trips_through_the_api() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let m = Mount::new(&srv, &["--dir-ttl", "1"]);
    sh(m.path(), "echo pic > photo.jpg");
    sh(
        m.path(),
        "setfattr -n user.mediafs.description -v 'a red boat, 1999' photo.jpg",
    );
    assert_eq!(
        sh(
            m.path(),
            "getfattr --only-values -n user.mediafs.description photo.jpg"
        ),
        "a red boat, 1999"
    );
    let f = remote_file(&srv, None, "photo.jpg");
    assert_eq!(f.description.as_deref(), Some("a red boat, 1999"));
    let listed = sh(m.path(), "getfattr -n user.mediafs.id photo.jpg");
    assert!(listed.contains("user.mediafs.id"), "{listed}");
    assert!(listed.contains(&f.id), "{listed}");

    // The other way round: set through the API, read through the mount (after the TTL).
    remote_update(
        &srv,
        &f.id,
        FileUpdate {
            is_favorite: Some(true),
            ..Default::default()
        },
    );
    assert!(
        wait_until(std::time::Duration::from_secs(10), || sh(
            m.path(),
            "getfattr --only-values -n user.mediafs.is_favorite photo.jpg"
        ) == "true"),
        "a remote metadata change shows after the TTL"
    );
    sh(
        m.path(),
        "setfattr -n user.mediafs.is_favorite -v false photo.jpg",
    );
    assert_eq!(
        remote_file(&srv, None, "photo.jpg").is_favorite,
        Some(false)
    );
    // Read-only and unknown attributes are refused.
    let out = sh_out(m.path(), "setfattr -n user.mediafs.id -v x photo.jpg");
    assert!(!out.status.success());
    let out = sh_out(
        m.path(),
        "setfattr -n user.mediafs.is_private -v maybe photo.jpg",
    );
    assert!(!out.status.success());
    assert_eq!(
        remote_file(&srv, None, "photo.jpg").is_private,
        f.is_private
    );
}

#[test]
fn touch_creates_an_empty_remote_file() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let m = Mount::new(&srv, &[]);
    sh(m.path(), "mkdir d && touch d/empty.txt");
    let d = remote_folder(&srv, None, "d");
    let f = remote_file(&srv, Some(&d.id), "empty.txt");
    assert_eq!(f.size(), 0);
    assert_eq!(f.upload.as_ref().unwrap().file_name, "empty.txt");
    assert_eq!(remote_sha256(&srv, &f.id), sha256(b""));
    // touch on an existing file changes nothing remotely.
    srv.reset_stats();
    sh(m.path(), "touch d/empty.txt");
    assert_eq!(srv.route_calls(FILE_POST), 0);
    assert_eq!(remote_file(&srv, Some(&d.id), "empty.txt").id, f.id);
}

#[test]
fn names_with_a_division_slash_arrive_with_a_slash() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    // The rename below follows the upload at once: with the default window it would be
    // uploaded again under the new name (SEMANTICS.md, saves through a temporary file),
    // and this test is about the rename itself.
    let m = Mount::new(&srv, &["--temp-upload-delay", "0"]);
    sh(
        m.path(),
        "mkdir 'AC∕DC' && echo riff > 'AC∕DC/back∕in black.txt'",
    );
    let folder = remote_folder(&srv, None, "AC/DC");
    let f = remote_file(&srv, Some(&folder.id), "back/in black.txt");
    assert_eq!(f.upload.as_ref().unwrap().file_name, "back/in black.txt");
    assert_eq!(srv.remote_bytes(&f.id), b"riff\n");
    assert_eq!(sh(m.path(), "ls 'AC∕DC'").trim(), "back∕in black.txt");
    // Renames carry the escape too.
    sh(
        m.path(),
        "mv 'AC∕DC/back∕in black.txt' 'AC∕DC/high∕voltage'",
    );
    assert_eq!(remote_file(&srv, Some(&folder.id), "high/voltage").id, f.id);
}

#[test]
fn open_files_follow_renames_unlinks_and_fsync() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let m = Mount::new(&srv, &[]);
    sh(m.path(), "mkdir sub");

    // Renamed (into another folder) while open for writing: lands once, under the new name.
    sh(
        m.path(),
        r#"python3 - <<'PY'
import os
f = open('w1.txt', 'w'); f.write('one'); f.flush()
os.rename('w1.txt', 'sub/w2.txt')
f.write('two'); f.close()
PY"#,
    );
    let sub = remote_folder(&srv, None, "sub");
    assert_eq!(
        srv.remote_bytes(&remote_file(&srv, Some(&sub.id), "w2.txt").id),
        b"onetwo"
    );
    assert!(srv.remote_files(None).is_empty(), "nothing left as w1.txt");
    assert_eq!(sh(m.path(), "cat sub/w2.txt"), "onetwo");

    // Unlinked while open: never lands.
    sh(
        m.path(),
        r#"python3 - <<'PY'
import os
f = open('gone.txt', 'w'); f.write('x' * 10000); f.flush()
os.unlink('gone.txt')
f.write('y'); f.close()
PY"#,
    );
    assert!(srv.remote_files(None).is_empty());
    assert!(!m.p("gone.txt").exists());

    // fsync uploads while the file stays open; a reader sees the bytes written so far; the
    // close uploads the rest as a replacement (one file in the end).
    let out = sh(
        m.path(),
        r#"python3 - <<'PY'
import os
f = open('sync.txt', 'w'); f.write('abc'); f.flush(); os.fsync(f.fileno())
# Uploaded: the file has a remote id now.
print(os.getxattr('sync.txt', 'user.mediafs.id').decode())
print(open('sync.txt').read())
f.write('def'); f.close()
PY"#,
    );
    let (first_id, read) = out.trim().split_once('\n').unwrap();
    assert_eq!(read, "abc");
    assert!(
        remote_get(&srv, first_id).is_none(),
        "the fsynced copy was replaced"
    );
    let f = remote_file(&srv, None, "sync.txt");
    assert_ne!(f.id, first_id);
    assert_eq!(srv.remote_bytes(&f.id), b"abcdef");
    assert_eq!(srv.remote_files(None).len(), 1);
}

/// fallocate reserves and extends as on a local disk (installers, torrent clients and
/// `rsync --preallocate` use it); modes that punch holes have no meaning for a whole-file
/// upload and answer EOPNOTSUPP without touching the file.
#[test]
fn fallocate_extends_or_reserves_and_refuses_hole_punching() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let m = Mount::new(&srv, &[]);
    sh(m.path(), "fallocate -l 1MiB grown.bin");
    assert_eq!(std::fs::metadata(m.p("grown.bin")).unwrap().len(), 1 << 20);
    let f = remote_file(&srv, None, "grown.bin");
    assert_eq!(f.size(), 1 << 20);
    assert_eq!(remote_sha256(&srv, &f.id), sha256(&vec![0u8; 1 << 20]));

    // Preallocation then writing, as `rsync --preallocate` and python do.
    sh(
        m.path(),
        "python3 -c \"import os; fd = os.open('pre.txt', os.O_CREAT | os.O_WRONLY); \
         os.posix_fallocate(fd, 0, 4096); os.write(fd, b'hello'); os.ftruncate(fd, 5); \
         os.close(fd)\"",
    );
    assert_eq!(std::fs::read(m.p("pre.txt")).unwrap(), b"hello");
    let f = remote_file(&srv, None, "pre.txt");
    assert_eq!(remote_sha256(&srv, &f.id), sha256(b"hello"));

    // KEEP_SIZE reserves only.
    std::fs::write(m.p("kept.txt"), b"abc").unwrap();
    sh(m.path(), "fallocate -n -l 64KiB kept.txt");
    assert_eq!(std::fs::read(m.p("kept.txt")).unwrap(), b"abc");

    // util-linux words EOPNOTSUPP of PUNCH_HOLE|KEEP_SIZE as "keep size mode is unsupported".
    let out = sh_out(m.path(), "fallocate -p -o 0 -l 2 kept.txt");
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unsupported"),
        "{out:?}"
    );
    assert_eq!(std::fs::read(m.p("kept.txt")).unwrap(), b"abc");
    let f = remote_file(&srv, None, "kept.txt");
    assert_eq!(remote_sha256(&srv, &f.id), sha256(b"abc"));
    assert_eq!(srv.remote_files(None).len(), 3);
}
