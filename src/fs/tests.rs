//! The filesystem core driven without FUSE, against the in-memory client: call counts,
//! names, writes, renames and offline behaviour.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

use crate::api::faulty::{FaultyClient, Inject, Op};
use crate::api::mock::MockClient;
use crate::api::MediaClient;
use crate::fs::attr::Kind;
use crate::fs::filesystem::MediaFs;
use crate::fs::namespace::ROOT_INO;
use crate::fs::read::ReadConfig;
use crate::fs::write::WriteConfig;
use crate::fs::{Core, CoreConfig, FsConfig};

struct Fixture {
    mock: Arc<MockClient>,
    fs: Arc<MediaFs>,
    _cache: tempfile::TempDir,
}

impl Fixture {
    /// The mount's owner, as a caller of chmod, chown and utimens.
    fn owner(&self) -> crate::fs::attr::Caller {
        crate::fs::attr::Caller {
            uid: self.fs.config().uid,
            gid: self.fs.config().gid,
        }
    }
}

fn fixture(read_only: bool) -> Fixture {
    let mock = MockClient::new();
    fixture_over(mock.clone(), mock, read_only)
}

/// A fixture whose calls go through a [`FaultyClient`] around the mock.
fn faulty_fixture() -> (Fixture, Arc<FaultyClient>) {
    let mock = MockClient::new();
    let faulty = FaultyClient::wrap(mock.clone());
    (fixture_over(mock, faulty.clone(), false), faulty)
}

fn fixture_over(mock: Arc<MockClient>, client: Arc<dyn MediaClient>, read_only: bool) -> Fixture {
    let cache = tempfile::tempdir().unwrap();
    let write = (!read_only).then(|| {
        let mut wc = WriteConfig::new(cache.path().join("c"));
        wc.upload_retry_for = Duration::from_millis(300);
        wc
    });
    let config = CoreConfig {
        fs: FsConfig {
            dir_ttl: Duration::from_secs(60),
            read_only,
            attrs_db: (!read_only).then(|| cache.path().join("attrs.db")),
            ..FsConfig::default()
        },
        read: ReadConfig::with_cache_bytes(8 << 20),
        write,
    };
    let fs = Core::build(config, client).unwrap();
    Fixture {
        mock,
        fs,
        _cache: cache,
    }
}

/// The caller of the operations these tests make: this process.
fn me() -> u32 {
    std::process::id()
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

async fn read_all(fs: &MediaFs, ino: u64) -> Vec<u8> {
    let fh = fs.open(ino, libc::O_RDONLY, me()).await.unwrap().fh;
    let mut out = Vec::new();
    loop {
        let chunk = fs.read(fh, out.len() as u64, 128 << 10).await.unwrap();
        if chunk.is_empty() {
            break;
        }
        out.extend_from_slice(&chunk);
    }
    fs.release(fh).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn listing_answers_lookups_without_further_calls() {
    let f = fixture(false);
    for i in 0..50 {
        f.mock.add_file(None, &format!("f{i}.txt"), b"x");
    }
    f.mock.add_folder("dir", None);
    let a = f.fs.lookup(ROOT_INO, os("f7.txt")).await.unwrap();
    assert_eq!(a.size, 1);
    assert_eq!(f.mock.calls("list_files"), 1);
    assert_eq!(f.mock.calls("list_folders"), 1);
    f.mock.reset_calls();
    // Within the TTL: present and absent names, getattr and readdir make no call.
    assert_eq!(
        f.fs.lookup(ROOT_INO, os("dir")).await.unwrap().kind,
        Kind::Dir
    );
    let err = f.fs.lookup(ROOT_INO, os("absent")).await.unwrap_err();
    assert_eq!(err.errno(), libc::ENOENT);
    let fh = f.fs.readdir_snapshot(ROOT_INO).await.unwrap();
    assert_eq!(f.fs.readdir(fh).unwrap().len(), 53, ". .. and 51 entries");
    assert_eq!(f.mock.total_calls(), 0);
    // SIGHUP: the next lookup lists again.
    f.fs.drop_caches();
    f.fs.lookup(ROOT_INO, os("f1.txt")).await.unwrap();
    assert_eq!(f.mock.calls("list_files"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicates_are_all_visible_and_readable() {
    let f = fixture(false);
    let old = f.mock.add_file(None, "same.txt", b"old");
    let new = f.mock.add_file(None, "same.txt", b"newer");
    let plain = f.fs.lookup(ROOT_INO, os("same.txt")).await.unwrap();
    assert_eq!(read_all(&f.fs, plain.ino).await, b"old");
    let suffixed = format!("same~{}.txt", &new.id[..8]);
    let other = f.fs.lookup(ROOT_INO, os(&suffixed)).await.unwrap();
    assert_eq!(read_all(&f.fs, other.ino).await, b"newer");
    assert_ne!(old.id, new.id);
}

#[tokio::test(flavor = "multi_thread")]
async fn create_write_flush_uploads_once_with_the_entry_name() {
    let f = fixture(false);
    let (attr, opened) =
        f.fs.create(ROOT_INO, os("a∕b.txt"), 0o644, libc::O_WRONLY, me())
            .await
            .unwrap();
    assert_eq!(attr.size, 0);
    f.fs.write(opened.fh, 0, b"hello ").unwrap();
    f.fs.write(opened.fh, 6, b"world").unwrap();
    f.fs.flush(opened.fh, me()).await.unwrap();
    f.fs.flush(opened.fh, me()).await.unwrap(); // nothing changed: no second upload
    f.fs.release(opened.fh).await.unwrap();
    assert_eq!(f.mock.calls("create_file"), 1);
    let files = f.mock.files();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].title.as_deref(), Some("a/b.txt"));
    assert_eq!(f.mock.file_bytes(&files[0].id).unwrap(), b"hello world");
    let a = f.fs.lookup(ROOT_INO, os("a∕b.txt")).await.unwrap();
    assert_eq!(a.size, 11);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_close_by_another_process_leaves_the_upload_to_the_opener_or_the_last_close() {
    let f = fixture(false);
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let (_, o) =
        f.fs.create(ROOT_INO, os("log.txt"), 0o644, libc::O_WRONLY, me())
            .await
            .unwrap();
    f.fs.write(o.fh, 0, b"first").unwrap();
    // A child's copy of the descriptor closes (its exit, or its exec): no upload.
    f.fs.flush(o.fh, child.id()).await.unwrap();
    assert_eq!(f.mock.calls("create_file"), 0);
    // The opener's close uploads.
    f.fs.flush(o.fh, me()).await.unwrap();
    assert_eq!(f.mock.calls("create_file"), 1);
    // Written after that, closed by the child last: the release uploads.
    f.fs.write(o.fh, 5, b" second").unwrap();
    f.fs.flush(o.fh, child.id()).await.unwrap();
    assert_eq!(f.mock.calls("create_file"), 1);
    f.fs.release(o.fh).await.unwrap();
    assert_eq!(f.mock.calls("create_file"), 2);
    let files = f.mock.files();
    assert_eq!(files.len(), 1);
    assert_eq!(f.mock.file_bytes(&files[0].id).unwrap(), b"first second");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn overwrite_carries_metadata_and_replaces_the_old_file() {
    let f = fixture(false);
    let old = f.mock.add_file(None, "doc.txt", b"version one");
    let update = crate::api::FileUpdate {
        description: Some("keep me".into()),
        is_favorite: Some(true),
        ..Default::default()
    };
    f.mock.update_file(&old.id, &update).await.unwrap();
    let ino = f.fs.lookup(ROOT_INO, os("doc.txt")).await.unwrap().ino;
    let o =
        f.fs.open(ino, libc::O_WRONLY | libc::O_APPEND, me())
            .await
            .unwrap();
    f.fs.write(o.fh, 11, b", two").unwrap();
    f.fs.flush(o.fh, me()).await.unwrap();
    f.fs.release(o.fh).await.unwrap();
    let files = f.mock.files();
    assert_eq!(files.len(), 1, "old file deleted after the new one landed");
    let new = &files[0];
    assert_ne!(new.id, old.id);
    assert_eq!(new.title.as_deref(), Some("doc.txt"));
    assert_eq!(new.description.as_deref(), Some("keep me"));
    assert_eq!(new.is_favorite, Some(true));
    assert_eq!(f.mock.file_bytes(&new.id).unwrap(), b"version one, two");
    // Same inode, new bytes.
    assert_eq!(f.fs.lookup(ROOT_INO, os("doc.txt")).await.unwrap().ino, ino);
    assert_eq!(read_all(&f.fs, ino).await, b"version one, two");
}

#[tokio::test(flavor = "multi_thread")]
async fn renames_are_one_call_and_replace_targets() {
    let f = fixture(false);
    let d = f.mock.add_folder("big", None);
    for i in 0..20 {
        f.mock.add_file(Some(&d.id), &format!("{i}"), b"x");
    }
    f.mock.add_folder("dest", None);
    f.mock.add_file(None, "a", b"A");
    f.mock.add_file(None, "b", b"B");
    let dest = f.fs.lookup(ROOT_INO, os("dest")).await.unwrap().ino;
    f.fs.lookup(dest, os("x")).await.unwrap_err();
    f.mock.reset_calls();
    f.fs.rename(ROOT_INO, os("big"), dest, os("moved"), 0)
        .await
        .unwrap();
    assert_eq!(f.mock.calls("update_folder"), 1);
    assert_eq!(f.mock.total_calls(), 1, "one call for a whole directory");
    // Replace: a -> b leaves one file named b holding A.
    f.fs.rename(ROOT_INO, os("a"), ROOT_INO, os("b"), 0)
        .await
        .unwrap();
    let b = f.fs.lookup(ROOT_INO, os("b")).await.unwrap();
    assert_eq!(read_all(&f.fs, b.ino).await, b"A");
    assert_eq!(
        f.fs.lookup(ROOT_INO, os("a")).await.unwrap_err().errno(),
        libc::ENOENT
    );
    let roots: Vec<_> = f
        .mock
        .files()
        .into_iter()
        .filter(|x| x.folder_id.is_none())
        .collect();
    assert_eq!(roots.len(), 1);
    // An empty directory target is replaced; a non-empty one is refused.
    f.mock.add_folder("empty", None);
    f.fs.drop_caches();
    f.fs.rename(dest, os("moved"), ROOT_INO, os("empty"), 0)
        .await
        .unwrap();
    let full = f.fs.lookup(ROOT_INO, os("empty")).await.unwrap().ino;
    assert_eq!(
        f.fs.readdir(f.fs.readdir_snapshot(full).await.unwrap())
            .unwrap()
            .len(),
        22
    );
    f.mock.add_folder("other", None);
    f.fs.drop_caches();
    let err =
        f.fs.rename(ROOT_INO, os("other"), ROOT_INO, os("empty"), 0)
            .await
            .unwrap_err();
    assert_eq!(err.errno(), libc::ENOTEMPTY);
    let err = f.fs.rmdir(ROOT_INO, os("empty")).await.unwrap_err();
    assert_eq!(err.errno(), libc::ENOTEMPTY);
}

#[tokio::test(flavor = "multi_thread")]
async fn offline_serves_stale_listings_and_keeps_new_files_pending() {
    let f = fixture(false);
    f.mock.add_file(None, "kept.txt", b"data");
    f.fs.lookup(ROOT_INO, os("kept.txt")).await.unwrap();
    f.fs.drop_caches();
    f.mock.set_offline(true);
    // The listing was dropped: with no cached copy, an error (not a hang).
    assert!(f.fs.lookup(ROOT_INO, os("kept.txt")).await.is_err());
    f.mock.set_offline(false);
    f.fs.lookup(ROOT_INO, os("kept.txt")).await.unwrap();
    // Make the listing stale rather than dropped, then go offline.
    f.fs.superblock()
        .lock()
        .extend_listing(ROOT_INO, Duration::from_secs(60), Duration::ZERO);
    f.mock.set_offline(true);
    assert_eq!(
        f.fs.lookup(ROOT_INO, os("kept.txt")).await.unwrap().size,
        4,
        "stale rather than EIO"
    );
    let (_, o) =
        f.fs.create(ROOT_INO, os("new.txt"), 0o644, libc::O_WRONLY, me())
            .await
            .unwrap();
    f.fs.write(o.fh, 0, b"written offline").unwrap();
    let err = f.fs.flush(o.fh, me()).await.unwrap_err();
    assert_eq!(err.errno(), libc::EIO);
    f.fs.release(o.fh).await.ok();
    // Still visible while pending; lands when the service is back.
    assert!(f.fs.lookup(ROOT_INO, os("new.txt")).await.is_ok());
    f.mock.set_offline(false);
    let mut landed = false;
    for _ in 0..200 {
        if f.mock
            .files()
            .iter()
            .any(|x| x.title.as_deref() == Some("new.txt"))
        {
            landed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(landed, "pending upload landed after the service came back");
}

#[tokio::test(flavor = "multi_thread")]
async fn read_only_refuses_every_change() {
    let f = fixture(true);
    f.mock.add_file(None, "x", b"1");
    let ino = f.fs.lookup(ROOT_INO, os("x")).await.unwrap().ino;
    let e = |r: Result<(), crate::fs::Error>| r.unwrap_err().errno();
    assert_eq!(
        e(f.fs.mkdir(ROOT_INO, os("d"), 0o755).await.map(|_| ())),
        libc::EROFS
    );
    assert_eq!(e(f.fs.unlink(ROOT_INO, os("x")).await), libc::EROFS);
    assert_eq!(
        e(f.fs.rename(ROOT_INO, os("x"), ROOT_INO, os("y"), 0).await),
        libc::EROFS
    );
    assert_eq!(
        e(f.fs
            .create(ROOT_INO, os("n"), 0o644, 0, me())
            .await
            .map(|_| ())),
        libc::EROFS
    );
    assert_eq!(
        e(f.fs.open(ino, libc::O_WRONLY, me()).await.map(|_| ())),
        libc::EROFS
    );
    assert_eq!(
        e(f.fs
            .setxattr(ino, os("user.mediafs.description"), b"d")
            .await),
        libc::EROFS
    );
    assert_eq!(read_all(&f.fs, ino).await, b"1");
    assert_eq!(f.mock.calls("create_file") + f.mock.calls("update_file"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn xattrs_show_and_update_service_fields() {
    let f = fixture(false);
    f.mock.add_file(None, "pic.png", b"png");
    let ino = f.fs.lookup(ROOT_INO, os("pic.png")).await.unwrap().ino;
    let list = String::from_utf8(f.fs.listxattr(ino).unwrap()).unwrap();
    assert!(
        !list.contains("user.mediafs.id\0"),
        "id is read by name: {list:?}"
    );
    assert!(!f
        .fs
        .getxattr(ino, os("user.mediafs.id"))
        .unwrap()
        .is_empty());
    assert_eq!(
        f.fs.getxattr(ino, os("user.mediafs.mime_type")).unwrap(),
        b"image/png"
    );
    f.fs.setxattr(ino, os("user.mediafs.description"), b"a red pixel")
        .await
        .unwrap();
    f.fs.setxattr(ino, os("user.mediafs.is_favorite"), b"true")
        .await
        .unwrap();
    assert_eq!(
        f.fs.getxattr(ino, os("user.mediafs.description")).unwrap(),
        b"a red pixel"
    );
    let remote = &f.mock.files()[0];
    assert_eq!(remote.description.as_deref(), Some("a red pixel"));
    assert_eq!(remote.is_favorite, Some(true));
    let bad =
        f.fs.setxattr(ino, os("user.mediafs.sort_order"), b"many")
            .await
            .unwrap_err();
    assert_eq!(bad.errno(), libc::EINVAL);
    let ro =
        f.fs.setxattr(ino, os("user.mediafs.id"), b"x")
            .await
            .unwrap_err();
    assert_eq!(ro.errno(), libc::EPERM);
    assert_eq!(
        f.mock.calls("update_file"),
        2,
        "rejected values send nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn readers_of_a_replaced_file_finish_reading_the_old_version() {
    let f = fixture(false);
    let old_bytes: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 251) as u8).collect();
    let old = f.mock.add_file(None, "movie.bin", &old_bytes);
    let ino = f.fs.lookup(ROOT_INO, os("movie.bin")).await.unwrap().ino;
    let reader = f.fs.open(ino, libc::O_RDONLY, me()).await.unwrap().fh;
    let first = f.fs.read(reader, 0, 4096).await.unwrap();
    assert_eq!(&first[..], &old_bytes[..4096]);
    // Overwrite while the reader is mid-file.
    let w =
        f.fs.open(ino, libc::O_WRONLY | libc::O_TRUNC, me())
            .await
            .unwrap()
            .fh;
    f.fs.write(w, 0, b"new").unwrap();
    f.fs.flush(w, me()).await.unwrap();
    f.fs.release(w).await.unwrap();
    assert!(
        f.mock.file_bytes(&old.id).is_some(),
        "old version kept while read"
    );
    // The reader finishes the old bytes (well past what was cached).
    let mut got = first.to_vec();
    loop {
        let chunk =
            f.fs.read(reader, got.len() as u64, 128 << 10)
                .await
                .unwrap();
        if chunk.is_empty() {
            break;
        }
        got.extend_from_slice(&chunk);
    }
    assert!(got == old_bytes, "reader saw the old version whole");
    f.fs.release(reader).await.unwrap();
    let mut gone = false;
    for _ in 0..100 {
        if f.mock.file_bytes(&old.id).is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "old version deleted once its last reader closed");
    assert_eq!(read_all(&f.fs, ino).await, b"new");
}

#[tokio::test(flavor = "multi_thread")]
async fn forgotten_entries_are_freed_and_found_again_as_the_same_object() {
    let f = fixture(false);
    let dir = f.mock.add_folder("d", None);
    let file = f.mock.add_file(Some(&dir.id), "x.txt", b"bytes");
    let d = f.fs.lookup(ROOT_INO, os("d")).await.unwrap();
    let x = f.fs.lookup(d.ino, os("x.txt")).await.unwrap();
    let before = f.fs.statfs().files;
    f.fs.forget(x.ino, 1);
    f.fs.forget(d.ino, 1);
    assert_eq!(f.fs.statfs().files, before - 1, "x is freed");
    assert_eq!(f.fs.getattr(x.ino).await.unwrap_err().errno(), libc::ENOENT);
    // Looked up again: the same remote object, its bytes readable.
    let d2 = f.fs.lookup(ROOT_INO, os("d")).await.unwrap();
    assert_eq!(d2.ino, d.ino, "still an entry of the root listing");
    let x2 = f.fs.lookup(d2.ino, os("x.txt")).await.unwrap();
    let id = f.fs.getxattr(x2.ino, os("user.mediafs.id")).unwrap();
    assert_eq!(id, file.id.as_bytes());
    assert_eq!(read_all(&f.fs, x2.ino).await, b"bytes");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_file_survives_forget() {
    let f = fixture(false);
    let dir = f.mock.add_folder("d", None);
    f.mock.add_file(Some(&dir.id), "x.txt", b"bytes");
    let d = f.fs.lookup(ROOT_INO, os("d")).await.unwrap();
    let x = f.fs.lookup(d.ino, os("x.txt")).await.unwrap();
    let fh = f.fs.open(x.ino, libc::O_RDONLY, me()).await.unwrap().fh;
    f.fs.forget(x.ino, 1);
    f.fs.forget(d.ino, 1);
    assert_eq!(f.fs.getattr(x.ino).await.unwrap().size, 5);
    assert_eq!(&f.fs.read(fh, 0, 100).await.unwrap()[..], b"bytes");
    f.fs.release(fh).await.unwrap();
    assert_eq!(
        f.fs.getattr(x.ino).await.unwrap_err().errno(),
        libc::ENOENT,
        "closed and forgotten: freed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_being_written_survives_forget_and_lands() {
    let f = fixture(false);
    let (attr, o) =
        f.fs.create(ROOT_INO, os("new.txt"), 0o644, libc::O_WRONLY, me())
            .await
            .unwrap();
    f.fs.forget(attr.ino, 1);
    f.fs.write(o.fh, 0, b"data").unwrap();
    assert_eq!(f.fs.getattr(attr.ino).await.unwrap().size, 4);
    f.fs.flush(o.fh, me()).await.unwrap();
    f.fs.release(o.fh).await.unwrap();
    assert_eq!(f.mock.files().len(), 1);
    // Still an entry of the root listing: found under its inode, now the remote file.
    let again = f.fs.lookup(ROOT_INO, os("new.txt")).await.unwrap();
    assert_eq!(again.ino, attr.ino);
    assert_eq!(read_all(&f.fs, again.ino).await, b"data");
}

#[tokio::test(flavor = "multi_thread")]
async fn lookups_create_and_mkdir_count_one_reference_each() {
    let f = fixture(false);
    f.mock.add_file(None, "x.txt", b"x");
    let x = f.fs.lookup(ROOT_INO, os("x.txt")).await.unwrap();
    f.fs.lookup(ROOT_INO, os("x.txt")).await.unwrap();
    let d = f.fs.mkdir(ROOT_INO, os("d"), 0o755).await.unwrap();
    let (c, o) =
        f.fs.create(d.ino, os("c"), 0o644, libc::O_WRONLY, me())
            .await
            .unwrap();
    f.fs.release(o.fh).await.unwrap();
    let ns = f.fs.superblock().lock();
    assert_eq!(ns.lookups(x.ino), Some(2));
    assert_eq!(ns.lookups(d.ino), Some(1));
    assert_eq!(ns.lookups(c.ino), Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn local_attributes_follow_writes_uploads_and_overwrites() {
    use crate::fs::attr::{Caller, Change, SetTime};
    use std::time::{Duration, SystemTime};
    let f = fixture(false);
    let owner = f.owner();
    let t = |s| SetTime::At(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
    let set = |mtime, mode| Change {
        mtime,
        mode,
        ..Change::default()
    };
    let (attr, o) =
        f.fs.create(ROOT_INO, os("a.txt"), 0o644, libc::O_WRONLY, me())
            .await
            .unwrap();
    let ino = attr.ino;
    f.fs.write(o.fh, 0, b"one").unwrap();
    // A time set before a write does not hold; one set after it does, through the upload.
    f.fs.setattr(ino, None, None, &set(Some(t(100)), None), owner)
        .await
        .unwrap();
    f.fs.write(o.fh, 3, b"two").unwrap();
    let a =
        f.fs.setattr(ino, None, None, &set(Some(t(200)), Some(0o100600)), owner)
            .await
            .unwrap();
    assert_eq!(a.mtime, SystemTime::UNIX_EPOCH + Duration::from_secs(200));
    f.fs.flush(o.fh, me()).await.unwrap();
    f.fs.release(o.fh).await.unwrap();
    let a = f.fs.getattr(ino).await.unwrap();
    assert_eq!(
        (
            a.perm,
            a.mtime
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        ),
        (0o600, 200)
    );
    // An overwrite: the mode moves to the new id, the mtime is the write's.
    let o =
        f.fs.open(ino, libc::O_WRONLY | libc::O_TRUNC, me())
            .await
            .unwrap();
    f.fs.write(o.fh, 0, b"three").unwrap();
    f.fs.release(o.fh).await.unwrap();
    let a = f.fs.getattr(ino).await.unwrap();
    assert_eq!(a.perm, 0o600);
    assert!(
        a.mtime > SystemTime::now() - Duration::from_secs(60),
        "{:?}",
        a.mtime
    );
    // Only root gives a file away; only the owner changes its mode.
    let other = Caller {
        uid: owner.uid + 1,
        gid: owner.gid + 1,
    };
    let chown = Change {
        uid: Some(owner.uid + 7),
        ..Change::default()
    };
    if owner.uid != 0 {
        let e =
            f.fs.setattr(ino, None, None, &chown, owner)
                .await
                .unwrap_err();
        assert_eq!(e.errno(), libc::EPERM);
    }
    let e =
        f.fs.setattr(ino, None, None, &set(None, Some(0o644)), other)
            .await
            .unwrap_err();
    assert_eq!(e.errno(), libc::EPERM);
    let e =
        f.fs.setattr(ino, None, None, &chown, other)
            .await
            .unwrap_err();
    assert_eq!(e.errno(), libc::EPERM);
    let root = Caller { uid: 0, gid: 0 };
    let a = f.fs.setattr(ino, None, None, &chown, root).await.unwrap();
    assert_eq!(a.uid, owner.uid + 7);
}

/// A truncate is a write: a time set before it does not hold, through a handle or without
/// one (found by tests/model.rs with MEDIAFS_MODEL_SEED=115).
#[tokio::test(flavor = "multi_thread")]
async fn a_truncate_after_utimens_makes_mtime_now_again() {
    use crate::fs::attr::{Change, SetTime};
    use std::time::{Duration, SystemTime};
    let f = fixture(false);
    let owner = f.owner();
    let at_100 = Change {
        mtime: Some(SetTime::At(
            SystemTime::UNIX_EPOCH + Duration::from_secs(100),
        )),
        ..Change::default()
    };
    let recent = |t: SystemTime| t > SystemTime::now() - Duration::from_secs(60);
    let (attr, o) =
        f.fs.create(ROOT_INO, os("t.bin"), 0o644, libc::O_RDWR, me())
            .await
            .unwrap();
    let ino = attr.ino;
    f.fs.write(o.fh, 0, b"0123456789").unwrap();
    // ftruncate on the open handle.
    f.fs.setattr(ino, Some(o.fh), None, &at_100, owner)
        .await
        .unwrap();
    let a =
        f.fs.setattr(ino, Some(o.fh), Some(4), &Change::default(), owner)
            .await
            .unwrap();
    assert_eq!(a.size, 4);
    assert!(recent(a.mtime), "{:?}", a.mtime);
    f.fs.release(o.fh).await.unwrap();
    // truncate(2) of the closed file.
    f.fs.setattr(ino, None, None, &at_100, owner).await.unwrap();
    let a =
        f.fs.setattr(ino, None, Some(2), &Change::default(), owner)
            .await
            .unwrap();
    assert_eq!(a.size, 2);
    assert!(recent(a.mtime), "{:?}", a.mtime);
    let files = f.mock.files();
    assert_eq!(f.mock.file_bytes(&files[0].id).unwrap(), b"01");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_file_moved_onto_a_remote_one_then_unlinked_takes_the_old_one_with_it() {
    let f = fixture(false);
    let old = f.mock.add_file(None, "b.txt", b"old");
    f.fs.lookup(ROOT_INO, os("b.txt")).await.unwrap();
    // A new file, still open and never uploaded, is moved onto b.txt and then removed.
    let (_, o) =
        f.fs.create(ROOT_INO, os("n.txt"), 0o644, libc::O_RDWR, me())
            .await
            .unwrap();
    f.fs.write(o.fh, 0, b"new").unwrap();
    f.fs.rename(ROOT_INO, os("n.txt"), ROOT_INO, os("b.txt"), 0)
        .await
        .unwrap();
    assert!(
        f.mock.file_bytes(&old.id).is_some(),
        "the old file stays until the new one lands"
    );
    f.fs.unlink(ROOT_INO, os("b.txt")).await.unwrap();
    f.fs.release(o.fh).await.unwrap();
    // Gone from the service too, not only from this mount's view: a remount shows no b.txt.
    assert!(f.mock.file_bytes(&old.id).is_none());
    assert!(f.mock.files().is_empty(), "{:?}", f.mock.files());
    f.fs.drop_caches();
    assert_eq!(
        f.fs.lookup(ROOT_INO, os("b.txt"))
            .await
            .unwrap_err()
            .errno(),
        libc::ENOENT
    );
}

/// Waits (bounded) until `faulty` has seen `n` calls of `op`.
async fn calls_reach(faulty: &FaultyClient, op: Op, n: u64) {
    for _ in 0..500 {
        if faulty.calls(op) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("{op:?} was not called {n} times");
}

fn names(fs: &MediaFs, fh: u64) -> Vec<String> {
    let mut v: Vec<String> = fs
        .readdir(fh)
        .unwrap()
        .iter()
        .map(|e| e.name.clone())
        .collect();
    v.sort();
    v
}

/// Runs `change` with its call `op` held back 100 ms and, while it is held, drops the
/// cached listings and starts listing each of `dirs` with answers that arrive 250 ms late:
/// listings taken before the change reaches the service and applied after it has.
/// Returns the directory handles.
async fn change_during_late_listings(
    f: &Fixture,
    faulty: &FaultyClient,
    op: Op,
    change: impl std::future::Future<Output = crate::fs::Result<()>> + Send + 'static,
    dirs: &[u64],
) -> Vec<u64> {
    faulty.push(op, Inject::pass().after(Duration::from_millis(100)));
    let change = tokio::spawn(change);
    calls_reach(faulty, op, 1).await;
    f.fs.drop_caches();
    faulty.set_hook(|call| match call.op {
        Op::ListFiles => Inject::pass().answered_after(Duration::from_millis(250)),
        _ => Inject::pass(),
    });
    let listings: Vec<_> = dirs
        .iter()
        .map(|&d| {
            let fs = f.fs.clone();
            tokio::spawn(async move { fs.readdir_snapshot(d).await })
        })
        .collect();
    change.await.unwrap().unwrap();
    let mut handles = Vec::new();
    for l in listings {
        handles.push(l.await.unwrap().unwrap());
    }
    handles
}

#[tokio::test(flavor = "multi_thread")]
async fn a_listing_taken_before_a_delete_does_not_bring_the_file_back() {
    let (f, faulty) = faulty_fixture();
    f.mock.add_file(None, "gone.txt", b"x");
    f.mock.add_file(None, "stays.txt", b"y");
    f.fs.lookup(ROOT_INO, os("gone.txt")).await.unwrap();
    let fs = f.fs.clone();
    let unlink = async move { fs.unlink(ROOT_INO, os("gone.txt")).await };
    let fh = change_during_late_listings(&f, &faulty, Op::DeleteFile, unlink, &[ROOT_INO]).await;
    assert_eq!(names(&f.fs, fh[0]), [".", "..", "stays.txt"]);
    let err = f.fs.lookup(ROOT_INO, os("gone.txt")).await.unwrap_err();
    assert_eq!(err.errno(), libc::ENOENT);
    assert_eq!(f.mock.files().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_listing_taken_before_an_upload_landed_does_not_hide_the_file() {
    let (f, faulty) = faulty_fixture();
    f.mock.add_file(None, "old.txt", b"y");
    let (_, opened) =
        f.fs.create(ROOT_INO, os("new.txt"), 0o644, libc::O_WRONLY, me())
            .await
            .unwrap();
    f.fs.write(opened.fh, 0, b"hello").unwrap();
    let fs = f.fs.clone();
    let close = async move {
        fs.flush(opened.fh, me()).await?;
        fs.release(opened.fh).await
    };
    let fh = change_during_late_listings(&f, &faulty, Op::CreateFile, close, &[ROOT_INO]).await;
    assert_eq!(names(&f.fs, fh[0]), [".", "..", "new.txt", "old.txt"]);
    let a = f.fs.lookup(ROOT_INO, os("new.txt")).await.unwrap();
    assert_eq!(read_all(&f.fs, a.ino).await, b"hello");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_listing_taken_before_a_rename_does_not_undo_it() {
    let (f, faulty) = faulty_fixture();
    f.mock.add_file(None, "old.txt", b"x");
    let dir = f.mock.add_folder("dir", None);
    f.fs.lookup(ROOT_INO, os("old.txt")).await.unwrap();
    let d = f.fs.lookup(ROOT_INO, os("dir")).await.unwrap().ino;
    f.fs.readdir_snapshot(d).await.unwrap();
    let fs = f.fs.clone();
    let mv = async move {
        fs.rename(ROOT_INO, os("old.txt"), d, os("new.txt"), 0)
            .await
    };
    let fh = change_during_late_listings(&f, &faulty, Op::UpdateFile, mv, &[ROOT_INO, d]).await;
    assert_eq!(names(&f.fs, fh[0]), [".", "..", "dir"]);
    assert_eq!(names(&f.fs, fh[1]), [".", "..", "new.txt"]);
    let stored = f.mock.files();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].title.as_deref(), Some("new.txt"));
    assert_eq!(stored[0].folder_id.as_deref(), Some(dir.id.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn create_and_mkdir_keep_the_mode_asked_for() {
    let f = fixture(false);
    let (a, opened) =
        f.fs.create(ROOT_INO, os("key"), 0o600, libc::O_WRONLY, me())
            .await
            .unwrap();
    assert_eq!(a.perm, 0o600);
    f.fs.write(opened.fh, 0, b"secret").unwrap();
    f.fs.flush(opened.fh, me()).await.unwrap();
    f.fs.release(opened.fh).await.unwrap();
    let (run, opened) =
        f.fs.create(ROOT_INO, os("run.sh"), 0o755, libc::O_WRONLY, me())
            .await
            .unwrap();
    assert_eq!(run.perm, 0o755);
    f.fs.release(opened.fh).await.unwrap();
    let d = f.fs.mkdir(ROOT_INO, os("private"), 0o700).await.unwrap();
    assert_eq!(d.perm, 0o700);
    // Uploaded, listed again: the modes stay (stored under the remote ids).
    f.fs.drop_caches();
    for (name, perm) in [("key", 0o600), ("run.sh", 0o755), ("private", 0o700)] {
        assert_eq!(
            f.fs.lookup(ROOT_INO, os(name)).await.unwrap().perm,
            perm,
            "{name}"
        );
    }
    assert_eq!(f.mock.files().len(), 2);
    // O_CREAT on an existing file leaves its mode alone, as on a local disk.
    let (again, opened) =
        f.fs.create(ROOT_INO, os("key"), 0o644, libc::O_WRONLY, me())
            .await
            .unwrap();
    assert_eq!(again.perm, 0o600);
    f.fs.release(opened.fh).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_plain_name_shows_what_was_written_or_moved_there_over_older_duplicates() {
    let f = fixture(false);
    f.mock.add_file(None, "todo.txt", b"oldest");
    let older = f.mock.add_file(None, "todo.txt", b"older duplicate");
    f.mock.add_file(None, "other.txt", b"moved");
    let plain = f.fs.lookup(ROOT_INO, os("todo.txt")).await.unwrap();
    let (_, opened) =
        f.fs.create(
            ROOT_INO,
            os("todo.txt"),
            0o644,
            libc::O_WRONLY | libc::O_TRUNC,
            me(),
        )
        .await
        .unwrap();
    f.fs.write(opened.fh, 0, b"written").unwrap();
    f.fs.flush(opened.fh, me()).await.unwrap();
    f.fs.release(opened.fh).await.unwrap();
    // The upload is newer than the remaining duplicate; the name stays with it.
    let a = f.fs.lookup(ROOT_INO, os("todo.txt")).await.unwrap();
    assert_eq!(a.ino, plain.ino);
    assert_eq!(read_all(&f.fs, a.ino).await, b"written");
    let suffixed = format!("todo~{}.txt", &older.id[..8]);
    let dup = f.fs.lookup(ROOT_INO, os(&suffixed)).await.unwrap();
    assert_eq!(read_all(&f.fs, dup.ino).await, b"older duplicate");

    f.fs.rename(ROOT_INO, os("other.txt"), ROOT_INO, os("todo.txt"), 0)
        .await
        .unwrap();
    let a = f.fs.lookup(ROOT_INO, os("todo.txt")).await.unwrap();
    assert_eq!(read_all(&f.fs, a.ino).await, b"moved");
    let fh = f.fs.readdir_snapshot(ROOT_INO).await.unwrap();
    assert_eq!(names(&f.fs, fh), [".", "..", "todo.txt", suffixed.as_str()]);
}
