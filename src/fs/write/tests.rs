//! Tests of the write path against the in-memory client.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use sha2::{Digest, Sha256};

use super::staging::Dirs;
use super::*;
use crate::api::mock::MockClient;
use crate::api::{ApiErrorKind, FileUpdate, MediaClient};

type Landed = Arc<Mutex<Vec<(UploadTarget, MediaFile)>>>;

struct Env {
    dir: tempfile::TempDir,
    mock: Arc<MockClient>,
    up: Arc<Uploader>,
    landed: Landed,
}

fn config(dir: &Path) -> WriteConfig {
    WriteConfig {
        cache_dir: dir.to_path_buf(),
        upload_retry_for: Duration::from_millis(300),
        shutdown_timeout: Duration::from_secs(1),
        temp_upload_delay: Duration::from_millis(200),
    }
}

fn uploader(mock: &Arc<MockClient>, dir: &Path) -> (Arc<Uploader>, Landed) {
    let landed: Landed = Arc::default();
    let sink = landed.clone();
    let up = Uploader::new(mock.clone(), config(dir), Arc::default()).unwrap();
    let mut rx = up.take_landed().unwrap();
    tokio::spawn(async move {
        while let Some(l) = rx.recv().await {
            sink.lock().unwrap().push((l.target, l.file));
        }
    });
    (up, landed)
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockClient::new();
    let (up, landed) = uploader(&mock, dir.path());
    Env {
        dir,
        mock,
        up,
        landed,
    }
}

fn target(name: &str, parent: Option<&str>) -> UploadTarget {
    UploadTarget {
        parent_folder_id: parent.map(str::to_string),
        name: name.to_string(),
        replaces: None,
        carry: Carry::default(),
    }
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Files in a cache subdirectory, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

fn files_named(mock: &MockClient, name: &str) -> Vec<MediaFile> {
    mock.files()
        .into_iter()
        .filter(|f| f.title.as_deref() == Some(name))
        .collect()
}

#[tokio::test]
async fn new_file_uploads_identical_bytes_with_name_and_mime() {
    let e = env();
    let folder = e.mock.add_folder("pics", None);
    let data = random_bytes(1, 300_000);
    let staged =
        e.up.stage_new(target("photo.png", Some(&folder.id)))
            .unwrap();
    for (i, chunk) in data.chunks(64 * 1024).enumerate() {
        staged.write_at((i * 64 * 1024) as u64, chunk).unwrap();
    }
    assert_eq!(staged.len(), data.len() as u64);
    assert_eq!(e.up.staging_bytes(), data.len() as u64);

    let file = e.up.commit(&staged).await.unwrap().0;
    assert!(!staged.is_dirty());
    assert_eq!(sha(&e.mock.file_bytes(&file.id).unwrap()), sha(&data));
    let stored = &e.mock.files()[0];
    assert_eq!(stored.title.as_deref(), Some("photo.png"));
    let upload = stored.upload.as_ref().unwrap();
    assert_eq!(upload.file_name, "photo.png");
    assert_eq!(upload.mime_type.as_deref(), Some("image/png"));
    assert_eq!(stored.folder_id.as_deref(), Some(folder.id.as_str()));
    assert_eq!(staged.target().replaces.as_deref(), Some(file.id.as_str()));

    // Reads back from the staged copy after the upload too.
    assert_eq!(
        sha(&staged.read_at(0, data.len() as u32 + 10).unwrap()),
        sha(&data)
    );

    // The last reference of a committed file removes its local files.
    e.up.release(staged);
    assert!(listing(&e.dir.path().join("staging")).is_empty());
    assert!(listing(&e.dir.path().join("pending")).is_empty());
    assert_eq!(e.up.staging_bytes(), 0);
}

#[tokio::test]
async fn unknown_extension_gets_octet_stream_and_empty_file_uploads() {
    let e = env();
    let staged = e.up.stage_new(target("notes.zzqx", None)).unwrap();
    let file = e.up.commit(&staged).await.unwrap().0;
    let upload = file.upload.as_ref().unwrap();
    assert_eq!(
        upload.mime_type.as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(upload.file_size, 0);
    assert_eq!(file.folder_id, None);
}

#[tokio::test]
async fn random_writes_truncate_and_append_match_a_vec_model() {
    let e = env();
    for seed in 0..6u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let name = format!("model-{seed}.bin");
        let staged = e.up.stage_new(target(&name, None)).unwrap();
        let mut model: Vec<u8> = Vec::new();
        for _ in 0..200 {
            match rng.gen_range(0..10) {
                0..=5 => {
                    let off = rng.gen_range(0..=model.len() + 5000);
                    let len = rng.gen_range(0..9000);
                    let data = random_bytes(rng.gen(), len);
                    staged.write_at(off as u64, &data).unwrap();
                    if model.len() < off + len {
                        model.resize(off + len, 0);
                    }
                    model[off..off + len].copy_from_slice(&data);
                }
                6 | 7 => {
                    let len = rng.gen_range(0..=model.len() + 7000);
                    staged.set_len(len as u64).unwrap();
                    model.resize(len, 0);
                }
                8 => {
                    // Append: write at the current end.
                    let data = random_bytes(rng.gen(), rng.gen_range(1..3000));
                    staged.write_at(model.len() as u64, &data).unwrap();
                    model.extend_from_slice(&data);
                }
                _ => {
                    let off = rng.gen_range(0..=model.len());
                    let size = rng.gen_range(0..20000u32);
                    let got = staged.read_at(off as u64, size).unwrap();
                    let end = (off + size as usize).min(model.len());
                    assert_eq!(sha(&got), sha(&model[off..end]), "seed {seed}");
                }
            }
            assert_eq!(staged.len(), model.len() as u64, "seed {seed}");
        }
        let file = e.up.commit(&staged).await.unwrap().0;
        assert_eq!(
            sha(&e.mock.file_bytes(&file.id).unwrap()),
            sha(&model),
            "seed {seed}"
        );
    }
}

#[tokio::test]
async fn commit_without_changes_is_a_noop() {
    let e = env();
    let staged = e.up.stage_new(target("a.txt", None)).unwrap();
    staged.write_at(0, b"hello").unwrap();
    let first = e.up.commit(&staged).await.unwrap().0;
    let again = e.up.commit(&staged).await.unwrap().0;
    let third = e.up.commit(&staged).await.unwrap().0;
    assert_eq!(e.mock.calls("create_file"), 1);
    assert_eq!(first.id, again.id);
    assert_eq!(first.id, third.id);

    // A change after a commit uploads a new version that replaces the first.
    staged.write_at(5, b" world").unwrap();
    let second = e.up.commit(&staged).await.unwrap().0;
    assert_eq!(e.mock.calls("create_file"), 2);
    assert_ne!(second.id, first.id);
    let remaining = e.mock.files();
    assert_eq!(remaining.len(), 1);
    assert_eq!(remaining[0].id, second.id);
    assert_eq!(
        sha(&e.mock.file_bytes(&second.id).unwrap()),
        sha(b"hello world")
    );
}

#[tokio::test]
async fn replace_carries_metadata_and_deletes_old_only_after_new_exists() {
    let e = env();
    let folder = e.mock.add_folder("docs", None);
    let original = random_bytes(2, 50_000);
    let old = e.mock.add_file(Some(&folder.id), "report.pdf", &original);
    let old = e
        .mock
        .update_file(
            &old.id,
            &FileUpdate {
                description: Some("quarterly".into()),
                alt_text: Some("alt".into()),
                is_favorite: Some(true),
                is_private: Some(true),
                sort_order: Some(7),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    let mock = e.mock.clone();
    let old_id = old.id.clone();
    let staged =
        e.up.stage_existing(
            UploadTarget {
                parent_folder_id: Some(folder.id.clone()),
                name: "report.pdf".into(),
                replaces: Some(old.id.clone()),
                carry: Carry::from_file(&old),
            },
            old.size(),
            false,
            |s| async move {
                let bytes = mock.file_bytes(&old_id).unwrap();
                s.write_at(0, &bytes).map(|_| ())
            },
        )
        .await
        .unwrap();
    assert!(
        !staged.is_dirty(),
        "copying the current bytes in is no change"
    );
    assert_eq!(sha(&staged.read_at(0, 60_000).unwrap()), sha(&original));

    // Watch the library while the commit runs: at every moment one copy must exist.
    e.mock.set_latency(Duration::from_millis(20));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (mock, stop, folder_id) = (e.mock.clone(), stop.clone(), folder.id.clone());
        tokio::spawn(async move {
            let mut saw_both = false;
            while !stop.load(Ordering::SeqCst) {
                let n = mock
                    .files()
                    .iter()
                    .filter(|f| f.folder_id.as_deref() == Some(folder_id.as_str()))
                    .count();
                assert!(n >= 1, "a moment with no copy of the file");
                saw_both |= n == 2;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            saw_both
        })
    };

    let mut expected = original.clone();
    expected[100..104].copy_from_slice(b"EDIT");
    staged.write_at(100, b"EDIT").unwrap();
    let new = e.up.commit(&staged).await.unwrap().0;
    stop.store(true, Ordering::SeqCst);
    assert!(watcher.await.unwrap(), "old and new never coexisted");

    let files = e.mock.files();
    assert_eq!(files.len(), 1, "old copy not deleted");
    let f = &files[0];
    assert_eq!(f.id, new.id);
    assert_eq!(sha(&e.mock.file_bytes(&f.id).unwrap()), sha(&expected));
    assert_eq!(f.title.as_deref(), Some("report.pdf"));
    assert_eq!(f.description.as_deref(), Some("quarterly"));
    assert_eq!(f.alt_text.as_deref(), Some("alt"));
    assert_eq!(f.is_favorite, Some(true));
    assert_eq!(f.is_private, Some(true));
    assert_eq!(f.sort_order, Some(7));
}

#[tokio::test]
async fn unchanged_existing_file_is_not_uploaded_and_truncate_is() {
    let e = env();
    let old = e.mock.add_file(None, "x.txt", b"original");
    let t = UploadTarget {
        replaces: Some(old.id.clone()),
        carry: Carry::from_file(&old),
        ..target("x.txt", None)
    };
    let mock = e.mock.clone();
    let id = old.id.clone();
    let staged =
        e.up.stage_existing(t.clone(), old.size(), false, |s| async move {
            s.write_at(0, &mock.file_bytes(&id).unwrap()).map(|_| ())
        })
        .await
        .unwrap();
    let got = e.up.commit(&staged).await.unwrap().0;
    assert_eq!(got.id, old.id);
    assert_eq!(e.mock.calls("create_file"), 0);
    e.up.release(staged);

    // O_TRUNC: fill is not called, the empty file replaces the old one.
    let staged =
        e.up.stage_existing(t, old.size(), true, |_| async {
            panic!("fill called with truncate")
        })
        .await
        .unwrap();
    assert!(staged.is_dirty());
    assert_eq!(staged.len(), 0);
    let new = e.up.commit(&staged).await.unwrap().0;
    assert_eq!(new.size(), 0);
    assert_eq!(e.mock.files().len(), 1);
    assert_eq!(e.mock.files()[0].id, new.id);
}

#[tokio::test]
async fn failed_fill_removes_the_staged_copy() {
    let e = env();
    let old = e.mock.add_file(None, "y.txt", b"data");
    let t = UploadTarget {
        replaces: Some(old.id.clone()),
        ..target("y.txt", None)
    };
    let err =
        e.up.stage_existing(t, 4, false, |_| async {
            Err(crate::fs::error::Error::new(
                crate::fs::error::Kind::Io,
                "read failed",
            ))
        })
        .await
        .unwrap_err();
    assert_eq!(err.errno(), libc::EIO);
    assert!(listing(&e.dir.path().join("staging")).is_empty());
    assert!(listing(&e.dir.path().join("pending")).is_empty());
}

#[tokio::test]
async fn offline_commit_fails_keeps_data_pending_and_lands_later() {
    let e = env();
    let data = random_bytes(3, 10_000);
    let staged = e.up.stage_new(target("offline.jpg", None)).unwrap();
    staged.write_at(0, &data).unwrap();
    e.mock.set_offline(true);
    let err = e.up.commit(&staged).await.unwrap_err();
    assert_eq!(err.errno(), libc::EIO);
    assert!(err.message.contains("offline.jpg"), "{}", err.message);
    assert!(
        e.mock.calls("create_file") >= 2,
        "transient errors are retried"
    );

    let pending = e.up.pending();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].name, "offline.jpg");
    assert_eq!(pending[0].size, data.len() as u64);
    assert!(pending[0].last_error.is_some());
    assert!(pending[0]
        .data_path
        .starts_with(e.dir.path().join("pending")));
    assert_eq!(
        sha(&std::fs::read(&pending[0].data_path).unwrap()),
        sha(&data)
    );
    assert!(listing(&e.dir.path().join("staging")).is_empty());
    // Closing the file must not lose it.
    e.up.release(staged);
    assert_eq!(e.up.pending().len(), 1);

    e.mock.set_offline(false);
    let landed = e.landed.clone();
    wait_for("background upload", || !landed.lock().unwrap().is_empty()).await;
    let (t, f) = landed.lock().unwrap()[0].clone();
    assert_eq!(t.name, "offline.jpg");
    assert_eq!(sha(&e.mock.file_bytes(&f.id).unwrap()), sha(&data));
    assert_eq!(e.mock.files().len(), 1);
    wait_for("pending area emptied", || {
        listing(&e.dir.path().join("pending")).is_empty()
    })
    .await;
    assert!(e.up.pending().is_empty());
}

#[tokio::test]
async fn too_large_gives_efbig_keeps_data_and_does_not_hot_loop() {
    let e = env();
    e.mock.set_max_upload_size(1000);
    let data = random_bytes(4, 5000);
    let staged = e.up.stage_new(target("big.mov", None)).unwrap();
    staged.write_at(0, &data).unwrap();
    let err = e.up.commit(&staged).await.unwrap_err();
    assert_eq!(err.errno(), libc::EFBIG);
    assert!(err.message.contains("5000 bytes"), "{}", err.message);
    e.up.release(staged);

    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        e.mock.calls("create_file"),
        1,
        "a rejected upload is not retried at once"
    );
    let pending = e.up.pending();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        sha(&std::fs::read(&pending[0].data_path).unwrap()),
        sha(&data)
    );
    assert!(e.landed.lock().unwrap().is_empty());
}

#[tokio::test]
async fn invalid_input_and_missing_folder_keep_data() {
    let e = env();
    e.mock
        .fail_next("create_file", ApiErrorKind::InvalidInput, 1);
    let staged = e.up.stage_new(target("bad.txt", None)).unwrap();
    staged.write_at(0, b"keep me").unwrap();
    let err = e.up.commit(&staged).await.unwrap_err();
    assert_eq!(err.errno(), libc::EINVAL);
    assert_eq!(
        e.mock.calls("create_file"),
        1,
        "rejected input is not retried"
    );

    let staged2 =
        e.up.stage_new(target("orphan.txt", Some("no-such-folder")))
            .unwrap();
    staged2.write_at(0, b"mine").unwrap();
    let err = e.up.commit(&staged2).await.unwrap_err();
    assert_eq!(err.errno(), libc::ENOENT);
    assert!(err.message.contains("no-such-folder"), "{}", err.message);

    let pending = e.up.pending();
    let names: Vec<&str> = pending.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["bad.txt", "orphan.txt"]);
    assert_eq!(
        sha(&std::fs::read(&pending[0].data_path).unwrap()),
        sha(b"keep me")
    );
    assert_eq!(
        sha(&std::fs::read(&pending[1].data_path).unwrap()),
        sha(b"mine")
    );
}

#[tokio::test]
async fn transient_failure_within_retry_window_succeeds() {
    let e = env();
    e.mock.fail_next("create_file", ApiErrorKind::Server, 2);
    let staged = e.up.stage_new(target("flaky.txt", None)).unwrap();
    staged.write_at(0, b"eventually").unwrap();
    let f = e.up.commit(&staged).await.unwrap().0;
    assert_eq!(e.mock.calls("create_file"), 3);
    assert_eq!(sha(&e.mock.file_bytes(&f.id).unwrap()), sha(b"eventually"));
    assert!(e.up.pending().is_empty());
}

#[tokio::test]
async fn crash_recovery_uploads_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockClient::new();
    let data = random_bytes(5, 70_000);
    {
        let (up, _) = uploader(&mock, dir.path());
        let staged = up.stage_new(target("crash.bin", None)).unwrap();
        staged.write_at(0, &data).unwrap();
        // A file opened for writing but unchanged: must not be uploaded after the crash.
        let old = mock.add_file(None, "same.txt", b"same");
        let m2 = mock.clone();
        let same = up
            .stage_existing(
                UploadTarget {
                    replaces: Some(old.id.clone()),
                    ..target("same.txt", None)
                },
                4,
                false,
                |s| async move { s.write_at(0, &m2.file_bytes(&old.id).unwrap()).map(|_| ()) },
            )
            .await
            .unwrap();
        // SIGKILL: no commit, no destructors for the open files.
        std::mem::forget(staged);
        std::mem::forget(same);
        drop(up);
    }
    assert_eq!(listing(&dir.path().join("staging")).len(), 4);
    assert_eq!(mock.calls("create_file"), 0);

    let (up, landed) = uploader(&mock, dir.path());
    up.recover();
    wait_for("recovered upload", || !landed.lock().unwrap().is_empty()).await;
    let got = files_named(&mock, "crash.bin");
    assert_eq!(got.len(), 1);
    assert_eq!(sha(&mock.file_bytes(&got[0].id).unwrap()), sha(&data));
    assert_eq!(landed.lock().unwrap()[0].0.name, "crash.bin");
    assert_eq!(
        mock.calls("create_file"),
        1,
        "the unchanged file was uploaded"
    );
    wait_for("cache emptied", || {
        listing(&dir.path().join("staging")).is_empty()
            && listing(&dir.path().join("pending")).is_empty()
    })
    .await;
}

#[tokio::test]
async fn pending_uploads_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockClient::new();
    {
        let (up, _) = uploader(&mock, dir.path());
        let staged = up.stage_new(target("later.txt", None)).unwrap();
        staged.write_at(0, b"not yet").unwrap();
        mock.set_offline(true);
        up.commit(&staged).await.unwrap_err();
        up.release(staged);
        let left = up.shutdown(Duration::from_millis(100)).await;
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].name, "later.txt");
        assert_eq!(left[0].size, 7);
    }
    mock.set_offline(false);
    let (up, landed) = uploader(&mock, dir.path());
    assert_eq!(up.pending().len(), 0, "nothing registered before recover()");
    up.recover();
    wait_for("upload after restart", || {
        !landed.lock().unwrap().is_empty()
    })
    .await;
    let f = &files_named(&mock, "later.txt")[0];
    assert_eq!(sha(&mock.file_bytes(&f.id).unwrap()), sha(b"not yet"));
}

#[tokio::test]
async fn released_without_commit_goes_to_pending_and_lands() {
    let e = env();
    let staged = e.up.stage_new(target("forgotten.txt", None)).unwrap();
    staged.write_at(0, b"do not lose").unwrap();
    e.up.release(staged);
    let landed = e.landed.clone();
    wait_for("adopted upload", || !landed.lock().unwrap().is_empty()).await;
    let f = &files_named(&e.mock, "forgotten.txt")[0];
    assert_eq!(sha(&e.mock.file_bytes(&f.id).unwrap()), sha(b"do not lose"));
}

#[tokio::test]
async fn lock_excludes_a_second_uploader() {
    let e = env();
    let err = Uploader::new(e.mock.clone(), config(e.dir.path()), Arc::default())
        .err()
        .expect("second uploader on the same cache dir");
    assert_eq!(err.errno(), libc::EBUSY);
    assert!(
        err.message.contains("in use by another mediafs"),
        "{}",
        err.message
    );
    drop(e.up);
    Uploader::new(e.mock.clone(), config(e.dir.path()), Arc::default())
        .expect("lock released with the first uploader");
}

#[tokio::test]
async fn shutdown_reports_pending_and_stops_retrying() {
    let e = env();
    e.mock.set_offline(true);
    let a = e.up.stage_new(target("a.txt", None)).unwrap();
    a.write_at(0, b"aaaa").unwrap();
    e.up.commit(&a).await.unwrap_err();
    // Open and changed but never committed: also reported.
    let b = e.up.stage_new(target("b.txt", None)).unwrap();
    b.write_at(0, b"bb").unwrap();

    let left = e.up.shutdown(Duration::from_millis(200)).await;
    let summary: Vec<(&str, u64)> = left.iter().map(|p| (p.name.as_str(), p.size)).collect();
    assert_eq!(summary, [("a.txt", 4), ("b.txt", 2)]);
    for p in &left {
        assert!(p.data_path.exists(), "{}", p.data_path.display());
    }

    let calls = e.mock.calls("create_file");
    e.mock.set_offline(false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(e.mock.calls("create_file"), calls, "retried after shutdown");
}

#[tokio::test]
async fn shutdown_waits_for_an_upload_in_progress() {
    let e = env();
    e.mock.set_latency(Duration::from_millis(200));
    let staged = e.up.stage_new(target("slow.txt", None)).unwrap();
    staged.write_at(0, b"slow").unwrap();
    let (up, s) = (e.up.clone(), staged.clone());
    let commit = tokio::spawn(async move { up.commit(&s).await.map(|(f, _)| f) });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let left = e.up.shutdown(Duration::from_secs(5)).await;
    assert!(left.is_empty(), "{left:?}");
    let f = commit.await.unwrap().unwrap();
    assert_eq!(sha(&e.mock.file_bytes(&f.id).unwrap()), sha(b"slow"));
}

#[tokio::test]
async fn discard_uploads_nothing_and_removes_files() {
    let e = env();
    let staged = e.up.stage_new(target("gone.txt", None)).unwrap();
    staged.write_at(0, b"temporary").unwrap();
    assert!(staged.is_dirty());
    staged.discard();
    assert!(!staged.is_dirty(), "the core would commit it on close");
    // Still usable like an unlinked open file.
    assert_eq!(staged.read_at(0, 100).unwrap(), b"temporary");
    let err = e.up.commit(&staged).await.unwrap_err();
    assert_eq!(err.errno(), libc::ENOENT);
    e.up.release(staged);
    assert_eq!(e.mock.calls("create_file"), 0);
    assert!(listing(&e.dir.path().join("staging")).is_empty());
    assert!(listing(&e.dir.path().join("pending")).is_empty());
}

#[tokio::test]
async fn discard_of_a_pending_upload_stops_it() {
    let e = env();
    e.mock.set_offline(true);
    let staged = e.up.stage_new(target("tmp.txt", None)).unwrap();
    staged.write_at(0, b"x").unwrap();
    e.up.commit(&staged).await.unwrap_err();
    staged.discard();
    assert!(e.up.pending().is_empty());
    e.up.release(staged);
    assert!(listing(&e.dir.path().join("pending")).is_empty());
    e.mock.set_offline(false);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(e.mock.files().is_empty());
}

#[tokio::test]
async fn retarget_rewrites_sidecar_and_uploads_under_new_name() {
    let e = env();
    let folder = e.mock.add_folder("dst", None);
    let staged = e.up.stage_new(target("old.txt", None)).unwrap();
    staged.write_at(0, b"moved").unwrap();
    staged.retarget(target("new.md", Some(&folder.id))).unwrap();
    let staging = e.dir.path().join("staging");
    let sidecar = listing(&staging)
        .into_iter()
        .find(|n| n.ends_with(".json"))
        .unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(staging.join(sidecar)).unwrap()).unwrap();
    assert_eq!(json["name"], "new.md");
    assert_eq!(json["parent_folder_id"], folder.id.as_str());
    assert_eq!(json["mime_type"], "text/markdown");
    assert_eq!(json["synced"], false);

    let f = e.up.commit(&staged).await.unwrap().0;
    assert_eq!(f.title.as_deref(), Some("new.md"));
    assert_eq!(f.folder_id.as_deref(), Some(folder.id.as_str()));
    assert!(files_named(&e.mock, "old.txt").is_empty());
}

#[tokio::test]
async fn cache_dir_permissions_are_private() {
    let e = env();
    let staged = e.up.stage_new(target("p.txt", None)).unwrap();
    staged.write_at(0, b"secret").unwrap();
    for d in ["staging", "pending"] {
        let mode = std::fs::metadata(e.dir.path().join(d))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "{d}");
    }
    let staging = e.dir.path().join("staging");
    for name in listing(&staging) {
        let mode = std::fs::metadata(staging.join(&name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
}

#[test]
fn full_disk_maps_to_enospc_naming_the_cache_dir() {
    let dirs = Dirs::new(Path::new("/var/cache/mediafs/lib"));
    let err = dirs.io_error(
        "writing to staged file \"x\"",
        std::io::Error::from_raw_os_error(libc::ENOSPC),
    );
    assert_eq!(err.errno(), libc::ENOSPC);
    assert!(
        err.message.contains("/var/cache/mediafs/lib"),
        "{}",
        err.message
    );
}

#[test]
fn writes_to_a_full_device_report_enospc() {
    // /dev/full fails every write with ENOSPC: the same path as a full staging disk.
    let Ok(file) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        return;
    };
    use std::os::unix::fs::FileExt;
    let io = file.write_all_at(b"x", 0).unwrap_err();
    let err = Dirs::new(Path::new("/c")).io_error("w", io);
    assert_eq!(err.errno(), libc::ENOSPC);
}

#[test]
fn uploader_needs_a_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let err = Uploader::new(MockClient::new(), config(dir.path()), Arc::default())
        .err()
        .expect("no runtime");
    assert_eq!(err.errno(), libc::EINVAL);
}

#[test]
fn carry_from_file_copies_metadata() {
    let f = MediaFile {
        id: "1".into(),
        upload_id: None,
        folder_id: None,
        title: Some("t".into()),
        description: Some("d".into()),
        alt_text: Some("a".into()),
        sort_order: Some(3),
        is_favorite: Some(false),
        is_private: Some(true),
        created_at: None,
        updated_at: None,
        upload: None,
    };
    assert_eq!(
        Carry::from_file(&f),
        Carry {
            description: Some("d".into()),
            alt_text: Some("a".into()),
            is_favorite: Some(false),
            is_private: Some(true),
            sort_order: Some(3),
        }
    );
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<StagedFile>();
    is::<Uploader>();
}

/// Delegates to the mock, but the first `lose` Create File calls store the file and then
/// fail as if the connection broke before the answer arrived.
struct LostAnswers {
    inner: Arc<MockClient>,
    lose: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl MediaClient for LostAnswers {
    async fn list_folders(
        &self,
        p: &crate::api::Parent,
    ) -> crate::api::ApiResult<Vec<crate::api::Folder>> {
        self.inner.list_folders(p).await
    }
    async fn get_folder(&self, id: &str) -> crate::api::ApiResult<crate::api::Folder> {
        self.inner.get_folder(id).await
    }
    async fn create_folder(
        &self,
        n: &str,
        p: Option<&str>,
    ) -> crate::api::ApiResult<crate::api::Folder> {
        self.inner.create_folder(n, p).await
    }
    async fn update_folder(
        &self,
        id: &str,
        u: &crate::api::FolderUpdate,
    ) -> crate::api::ApiResult<crate::api::Folder> {
        self.inner.update_folder(id, u).await
    }
    async fn delete_folder(&self, id: &str) -> crate::api::ApiResult<()> {
        self.inner.delete_folder(id).await
    }
    async fn list_files(&self, p: &crate::api::Parent) -> crate::api::ApiResult<Vec<MediaFile>> {
        self.inner.list_files(p).await
    }
    async fn get_file(&self, id: &str) -> crate::api::ApiResult<MediaFile> {
        self.inner.get_file(id).await
    }
    async fn create_file(
        &self,
        m: &crate::api::NewFile,
        c: &Path,
    ) -> crate::api::ApiResult<MediaFile> {
        let f = self.inner.create_file(m, c).await?;
        let lose = self.lose.load(Ordering::SeqCst);
        if lose > 0 {
            self.lose.store(lose - 1, Ordering::SeqCst);
            return Err(crate::api::ApiError::new(
                ApiErrorKind::Transport,
                "connection reset after the request was sent",
            ));
        }
        Ok(f)
    }
    async fn update_file(&self, id: &str, u: &FileUpdate) -> crate::api::ApiResult<MediaFile> {
        self.inner.update_file(id, u).await
    }
    async fn delete_file(&self, id: &str) -> crate::api::ApiResult<()> {
        self.inner.delete_file(id).await
    }
    async fn read_range(&self, url: &str, o: u64, l: u64) -> crate::api::ApiResult<bytes::Bytes> {
        self.inner.read_range(url, o, l).await
    }
}

#[tokio::test]
async fn lost_answer_is_found_instead_of_uploading_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockClient::new();
    let folder = mock.add_folder("f", None);
    // Same name and size, other bytes: must not be mistaken for the lost upload.
    let decoy = mock.add_file(Some(&folder.id), "clip.mp4", &random_bytes(7, 20_000));
    let client = Arc::new(LostAnswers {
        inner: mock.clone(),
        lose: 1.into(),
    });
    let up = Uploader::new(client, config(dir.path()), Arc::default()).unwrap();
    let data = random_bytes(8, 20_000);
    let staged = up.stage_new(target("clip.mp4", Some(&folder.id))).unwrap();
    staged.write_at(0, &data).unwrap();
    let (f, _) = up.commit(&staged).await.unwrap();
    assert_eq!(mock.calls("create_file"), 1, "uploaded again");
    assert_ne!(f.id, decoy.id);
    assert_eq!(sha(&mock.file_bytes(&f.id).unwrap()), sha(&data));
    assert_eq!(files_named(&mock, "clip.mp4").len(), 2, "decoy and ours");
    assert!(up.pending().is_empty());
}

#[tokio::test]
async fn failure_before_storing_is_retried_despite_a_same_size_decoy() {
    let e = env();
    e.mock.add_file(None, "d.txt", b"AAAA");
    e.mock.fail_next("create_file", ApiErrorKind::Transport, 1);
    let staged = e.up.stage_new(target("d.txt", None)).unwrap();
    staged.write_at(0, b"BBBB").unwrap();
    let f = e.up.commit(&staged).await.unwrap().0;
    assert_eq!(e.mock.calls("create_file"), 2);
    assert_eq!(sha(&e.mock.file_bytes(&f.id).unwrap()), sha(b"BBBB"));
    assert_eq!(files_named(&e.mock, "d.txt").len(), 2);
}

#[tokio::test]
async fn sidecar_says_maybe_landed_while_an_upload_runs() {
    let e = env();
    e.mock.set_latency(Duration::from_millis(200));
    let staged = e.up.stage_new(target("inflight.txt", None)).unwrap();
    staged.write_at(0, b"abc").unwrap();
    let sidecar = || -> serde_json::Value {
        let dir = e.dir.path().join("staging");
        let name = listing(&dir)
            .into_iter()
            .find(|n| n.ends_with(".json"))
            .unwrap();
        serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap()
    };
    assert_eq!(sidecar()["maybe_landed"], false);
    let (up, s) = (e.up.clone(), staged.clone());
    let commit = tokio::spawn(async move { up.commit(&s).await.map(|(f, _)| f) });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A crash now must make recovery look for the copy before uploading another.
    assert_eq!(sidecar()["maybe_landed"], true);
    let f = commit.await.unwrap().unwrap();
    let after = sidecar();
    assert_eq!(after["maybe_landed"], false);
    assert_eq!(after["synced"], true);
    assert_eq!(after["replaces"], f.id.as_str());
}

#[tokio::test]
async fn crash_during_upload_does_not_duplicate_after_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockClient::new();
    let data = random_bytes(9, 4096);
    {
        let client = Arc::new(LostAnswers {
            inner: mock.clone(),
            lose: 1.into(),
        });
        let up = Uploader::new(client, config(dir.path()), Arc::default()).unwrap();
        let staged = up.stage_new(target("once.bin", None)).unwrap();
        staged.write_at(0, &data).unwrap();
        // The file is stored, the answer lost; then the daemon dies before the next attempt
        // can find it: simulated by forgetting the staged file and dropping the uploader
        // while the sidecar still says the upload may have landed.
        let meta = crate::api::NewFile {
            file_name: "once.bin".into(),
            mime_type: "application/octet-stream".into(),
            title: Some("once.bin".into()),
            ..Default::default()
        };
        let path = dir
            .path()
            .join("staging")
            .join(format!("{}.data", staged.id));
        mock.create_file(&meta, &path).await.unwrap();
        {
            let mut st = staged.lock();
            st.maybe_landed = true;
            staged.save_sidecar(&st).unwrap();
        }
        std::mem::forget(staged);
        drop(up);
    }
    let (up, landed) = uploader(&mock, dir.path());
    up.recover();
    wait_for("recovery", || !landed.lock().unwrap().is_empty()).await;
    assert_eq!(mock.calls("create_file"), 1, "uploaded a second copy");
    let files = files_named(&mock, "once.bin");
    assert_eq!(files.len(), 1);
    assert_eq!(sha(&mock.file_bytes(&files[0].id).unwrap()), sha(&data));
}

/// An uploader whose holds last longer than any test.
fn env_long_hold() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockClient::new();
    let mut c = config(dir.path());
    c.temp_upload_delay = Duration::from_secs(600);
    let up = Uploader::new(mock.clone(), c, Arc::default()).unwrap();
    Env {
        dir,
        mock,
        up,
        landed: Arc::default(),
    }
}

#[tokio::test]
async fn a_held_file_renamed_uploads_once_under_the_final_name() {
    let e = env_long_hold();
    let staged = e.up.stage_new(target("sedAb12Cd", None)).unwrap();
    staged.write_at(0, b"saved").unwrap();
    assert!(e.up.hold(&staged));
    assert!(e.mock.files().is_empty(), "held: not uploaded");
    staged.retarget(target("photo.jpg", None)).unwrap();
    assert!(staged.unhold());
    let f = e.up.commit(&staged).await.unwrap().0;
    assert_eq!(f.title.as_deref(), Some("photo.jpg"));
    let up = f.upload.clone().unwrap();
    assert_eq!(up.file_name, "photo.jpg");
    assert_eq!(up.mime_type.as_deref(), Some("image/jpeg"));
    assert_eq!(e.mock.files().len(), 1);
    assert!(!staged.unhold(), "the hold is over");
}

#[tokio::test]
async fn a_held_file_uploads_under_its_name_when_the_delay_runs_out() {
    let e = env();
    let staged = e.up.stage_new(target("draft.tmp", None)).unwrap();
    staged.write_at(0, b"kept").unwrap();
    assert!(e.up.hold(&staged));
    wait_for("the held upload", || e.landed.lock().unwrap().len() == 1).await;
    let (t, f) = e.landed.lock().unwrap()[0].clone();
    assert_eq!(t.name, "draft.tmp");
    assert_eq!(f.title.as_deref(), Some("draft.tmp"));
    assert!(!staged.is_dirty());
}

#[tokio::test]
async fn shutdown_uploads_held_files() {
    let e = env_long_hold();
    let staged = e.up.stage_new(target("index.lock", None)).unwrap();
    staged.write_at(0, b"ref").unwrap();
    assert!(e.up.hold(&staged));
    let left = e.up.shutdown(Duration::from_secs(5)).await;
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(files_named(&e.mock, "index.lock").len(), 1);
}

#[test]
fn a_sidecar_is_rewritten_in_place_and_reads_back_whatever_its_length() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let mut side = staging::Sidecar {
        parent_folder_id: Some("folder".into()),
        name: "a.txt".into(),
        mime_type: "text/plain".into(),
        replaces: None,
        carry: Carry::default(),
        created: 1,
        synced: false,
        last_error: Some("x".repeat(900)),
        maybe_landed: true,
    };
    side.create(&path).unwrap();
    assert!(side.create(&path).is_err(), "create makes a new file only");
    let ino = std::fs::metadata(&path).unwrap().ino();
    // Shorter: padded to the old length, same inode, and it parses as the new one.
    side.last_error = None;
    side.maybe_landed = false;
    side.write(&path).unwrap();
    assert_eq!(staging::Sidecar::read(&path).unwrap(), side);
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), ino);
    // Longer than a page: through a temporary file and a rename.
    side.last_error = Some("y".repeat(5000));
    side.write(&path).unwrap();
    assert_eq!(staging::Sidecar::read(&path).unwrap(), side);
    assert_ne!(std::fs::metadata(&path).unwrap().ino(), ino);
    assert_eq!(listing(dir.path()), vec!["s.json"]);
    // ... and back to a short one, in place again.
    side.last_error = None;
    side.write(&path).unwrap();
    assert_eq!(staging::Sidecar::read(&path).unwrap(), side);
}

#[tokio::test]
async fn recovery_removes_a_torn_first_sidecar_but_keeps_one_with_data() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockClient::new();
    let staging = dir.path().join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    // A crash in the middle of the first sidecar write: no data file yet.
    let torn = uuid::Uuid::now_v7();
    std::fs::write(staging.join(format!("{torn}.json")), b"{\n  \"parent_fo").unwrap();
    // An unreadable sidecar next to data: not ours to throw away.
    let kept = uuid::Uuid::now_v7();
    std::fs::write(staging.join(format!("{kept}.json")), b"{\n  \"na").unwrap();
    std::fs::write(staging.join(format!("{kept}.data")), b"bytes").unwrap();
    let (up, _) = uploader(&mock, dir.path());
    up.recover();
    let left = listing(&staging);
    assert!(!left.contains(&format!("{torn}.json")), "{left:?}");
    assert!(left.contains(&format!("{kept}.json")), "{left:?}");
    assert!(left.contains(&format!("{kept}.data")), "{left:?}");
    assert_eq!(mock.calls("create_file"), 0);
}
