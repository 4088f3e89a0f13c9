//! A service with unique names: it answers 409 ([`ApiErrorKind::NameTaken`]) to Create
//! File, Create Folder and renames when the name is taken in that folder. Overwrites and
//! renames onto an existing name make room instead of failing:
//!
//! - an overwrite uploads the new bytes under a temporary title (hidden: `.mediafs-…`,
//!   the final `fileName` kept where the service allows it); the old file is deleted as
//!   every replaced file is ([`crate::fs::write::Deletes`]), and once it is gone the new
//!   file takes the name. The rename waits in a durable record ([`Renames`]) so a crash in
//!   between ends on the next mount;
//! - a rename onto an existing file moves that file aside to a temporary title first (put
//!   back if the rename fails), so its bytes exist until the rename has happened; the
//!   caller then deletes it as for any rename onto a name. An empty folder in the way is
//!   deleted first (it holds nothing), and recreated if the rename fails.
//!
//! The first 409 of this kind is logged once.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use crate::api::{
    ApiError, ApiErrorKind, ApiResult, FileUpdate, Folder, FolderUpdate, MediaClient, MediaFile,
    NewFile, Parent,
};
use crate::fs::entry::Entry;

static DETECTED: AtomicBool = AtomicBool::new(false);

/// Logs, once per process, that the service refuses duplicate names.
fn detected(what: &str) {
    if !DETECTED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "the service refuses duplicate names ({what} answered 409): overwrites upload \
             under a temporary name and take the name once the old file is deleted; renames \
             onto a name move the old file aside first"
        );
    }
}

/// A temporary title for `name`, unique and hidden from `ls` (the extension is kept).
pub fn temp_name(name: &str) -> String {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    format!(".mediafs-{}.{name}", &tag[..8])
}

/// True for the temporary titles of [`temp_name`].
pub fn is_temp_name(name: &str) -> bool {
    name.strip_prefix(".mediafs-")
        .is_some_and(|rest| rest.len() > 9 && rest.as_bytes()[8] == b'.')
}

// ---------------------------------------------------------------- overwrite

/// An upload made under a temporary title that takes its final title once the file
/// holding that title (`after`) is deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WaitingRename {
    /// The uploaded file; `None` until Create File answered (then it is found by `temp`).
    pub id: Option<String>,
    pub folder_id: Option<String>,
    pub temp: String,
    pub title: String,
    /// The id of the old file that holds `title`.
    pub after: String,
}

/// Durable [`WaitingRename`]s, one JSON file each under `<cache_dir>/renames/`.
pub struct Renames {
    dir: PathBuf,
}

impl Renames {
    /// Creates the directory (0700) if needed.
    pub fn open(dir: PathBuf) -> std::io::Result<Renames> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        Ok(Renames { dir })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    /// Writes the record durably (temporary file, fsync, rename).
    fn save(&self, key: &str, r: &WaitingRename) -> std::io::Result<()> {
        let tmp = self.dir.join(format!("{key}.tmp"));
        let mut f = fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec(r).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        fs::rename(&tmp, self.path(key))?;
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    fn done(&self, key: &str) {
        match fs::remove_file(self.path(key)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("could not clear the rename record {key}: {e}"),
        }
    }

    /// Every record, with its key.
    pub fn list(&self) -> Vec<(String, WaitingRename)> {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        rd.filter_map(|e| e.ok())
            .filter_map(|e| {
                let path = e.path();
                let key = path
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".json")?
                    .to_string();
                let r = read_record(&path)?;
                Some((key, r))
            })
            .collect()
    }
}

fn read_record(path: &Path) -> Option<WaitingRename> {
    let bytes = fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!("unreadable rename record {}: {e}", path.display());
            None
        }
    }
}

/// Create File of `meta` answered 409: uploads it under a temporary title (and, if the
/// service refuses that too, a temporary `fileName`), recorded to take `meta`'s title once
/// `old` (the file holding it) is deleted. The answer carries the final title, as the
/// file will show once the caller has deleted `old` (see [`after_delete`]).
pub async fn upload_aside(
    client: &dyn MediaClient,
    renames: &Renames,
    meta: &NewFile,
    data: &Path,
    old: &str,
) -> ApiResult<MediaFile> {
    detected("Create File");
    let title = meta.title.clone().unwrap_or_else(|| meta.file_name.clone());
    let temp = temp_name(&title);
    let key = uuid::Uuid::new_v4().simple().to_string();
    // `old` may itself be an earlier version still waiting under a temporary title (a
    // file closed twice, e.g. by `echo x > f`: once empty after the O_TRUNC open, once
    // written). The title is still held by the file that one waits for: this version
    // waits for that file too, and the earlier version's record goes, as it is replaced.
    let superseded: Vec<(String, WaitingRename)> = renames
        .list()
        .into_iter()
        .filter(|(_, r)| r.id.as_deref() == Some(old))
        .collect();
    let after = superseded
        .first()
        .map_or_else(|| old.to_string(), |(_, r)| r.after.clone());
    let mut record = WaitingRename {
        id: None,
        folder_id: meta.folder_id.clone(),
        temp: temp.clone(),
        title: title.clone(),
        after,
    };
    // Recorded before the upload: a crash during it still ends in the final name.
    renames.save(&key, &record).map_err(local)?;
    for (k, _) in &superseded {
        renames.done(k);
    }
    let mut aside = NewFile {
        title: Some(temp.clone()),
        ..meta.clone()
    };
    let mut result = client.create_file(&aside, data).await;
    if matches!(&result, Err(e) if e.kind == ApiErrorKind::NameTaken) {
        // Unique on `fileName` as well.
        aside.file_name = temp.clone();
        result = client.create_file(&aside, data).await;
    }
    let mut file = match result {
        Ok(f) => f,
        // The answer may be lost while the file landed: look once, so a retry does not
        // leave a copy under a temporary title behind.
        Err(e) if matches!(e.kind, ApiErrorKind::Transport | ApiErrorKind::Server) => {
            match landed_aside(client, &record, data).await {
                Some(f) => f,
                None => {
                    renames.done(&key);
                    return Err(e);
                }
            }
        }
        Err(e) => {
            renames.done(&key);
            return Err(e);
        }
    };
    record.id = Some(file.id.clone());
    if let Err(e) = renames.save(&key, &record) {
        // The record without an id still finds the file by its temporary title.
        tracing::warn!("could not update the rename record of {title:?}: {e}");
    }
    file.title = Some(title);
    Ok(file)
}

/// `old` is deleted: the uploads waiting for its title take it now. A failure leaves the
/// record for the next mount.
pub async fn after_delete(client: &dyn MediaClient, renames: &Renames, old: &str) {
    for (key, r) in renames.list() {
        if r.after == old {
            finish(client, renames, &key, &r).await;
        }
    }
}

/// On mount: the records whose old file is gone (not among the deletes still `waiting`)
/// are finished now; the others when their delete is done.
pub async fn recover(client: &dyn MediaClient, renames: &Renames, waiting: &[String]) {
    for (key, r) in renames.list() {
        if !waiting.contains(&r.after) {
            finish(client, renames, &key, &r).await;
        }
    }
}

async fn finish(client: &dyn MediaClient, renames: &Renames, key: &str, r: &WaitingRename) {
    let id = match &r.id {
        Some(id) => id.clone(),
        None => match find_by_title(client, r).await {
            Ok(Some(id)) => id,
            // The upload never landed: nothing to rename.
            Ok(None) => return renames.done(key),
            Err(e) => {
                tracing::warn!(file = %r.title, "looking for an upload to rename: {e}");
                return;
            }
        },
    };
    let update = FileUpdate {
        title: Some(r.title.clone()),
        ..Default::default()
    };
    match client.update_file(&id, &update).await {
        Ok(_) => {
            tracing::debug!(file = %r.title, %id, "the new version took its name");
            renames.done(key);
        }
        Err(e) if e.kind == ApiErrorKind::NotFound => renames.done(key),
        Err(e) => tracing::warn!(
            file = %r.title,
            temp = %r.temp,
            "the new version could not take its name (retried on the next mount): {e}"
        ),
    }
}

/// The upload of `r` (the bytes of `data`), if it landed although its answer was lost.
async fn landed_aside(
    client: &dyn MediaClient,
    r: &WaitingRename,
    data: &Path,
) -> Option<MediaFile> {
    let id = find_by_title(client, r).await.ok()??;
    let f = client.get_file(&id).await.ok()?;
    let len = fs::metadata(data).ok()?.len();
    (f.size() == len).then_some(f)
}

async fn find_by_title(client: &dyn MediaClient, r: &WaitingRename) -> ApiResult<Option<String>> {
    let parent = match &r.folder_id {
        Some(id) => Parent::Folder(id.clone()),
        None => Parent::Root,
    };
    Ok(client
        .list_files(&parent)
        .await?
        .into_iter()
        .find(|f| f.title.as_deref() == Some(r.temp.as_str()))
        .map(|f| f.id))
}

fn local(e: std::io::Error) -> ApiError {
    ApiError::new(
        ApiErrorKind::Local,
        format!("recording an upload under a temporary name: {e}"),
    )
    .with_source(e)
}

// ---------------------------------------------------------------- renames onto a name

/// Update File `update` of `id`; when the service answers that the new title is taken by
/// `target` (the file the rename replaces), that file is moved aside to a temporary title
/// first, and put back if the rename still fails. The caller deletes `target` afterwards.
pub async fn update_file(
    client: &dyn MediaClient,
    id: &str,
    update: &FileUpdate,
    target: Option<&Entry>,
) -> ApiResult<MediaFile> {
    let err = match client.update_file(id, update).await {
        Err(e) if e.kind == ApiErrorKind::NameTaken => e,
        other => return other,
    };
    detected("a rename");
    let Some(Entry::File(t)) = target else {
        return Err(err);
    };
    let aside = FileUpdate {
        title: Some(temp_name(&t.name)),
        ..Default::default()
    };
    client.update_file(&t.id, &aside).await?;
    match client.update_file(id, update).await {
        Ok(f) => Ok(f),
        Err(e) => {
            let back = FileUpdate {
                title: Some(t.name.clone()),
                ..Default::default()
            };
            if let Err(b) = client.update_file(&t.id, &back).await {
                tracing::warn!(
                    file = %t.name,
                    "a file moved aside for a rename could not get its name back: {b}"
                );
            }
            Err(e)
        }
    }
}

/// Update Folder `update` of `id`; when the service answers that the new name is taken by
/// `target`, an empty folder (the only kind a rename may replace), that folder is deleted
/// first, and recreated if the rename still fails.
pub async fn update_folder(
    client: &dyn MediaClient,
    id: &str,
    update: &FolderUpdate,
    target: Option<&Entry>,
    target_parent: Option<&str>,
) -> ApiResult<Folder> {
    let err = match client.update_folder(id, update).await {
        Err(e) if e.kind == ApiErrorKind::NameTaken => e,
        other => return other,
    };
    detected("a rename");
    let Some(Entry::Folder(t)) = target else {
        return Err(err);
    };
    match client.delete_folder(&t.id).await {
        Ok(()) => {}
        Err(e) if e.kind == ApiErrorKind::NotFound => {}
        Err(_) => return Err(err),
    }
    match client.update_folder(id, update).await {
        Ok(f) => Ok(f),
        Err(e) => {
            if let Err(c) = client.create_folder(&t.name, target_parent).await {
                tracing::warn!(folder = %t.name, "an empty folder in the way of a rename could not be recreated: {c}");
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::mock::MockClient;

    fn title_of(m: &MockClient, id: &str) -> String {
        let f = m
            .files()
            .into_iter()
            .find(|f| f.id == id)
            .expect("file exists");
        f.title.unwrap_or_default()
    }

    #[tokio::test]
    async fn an_upload_aside_takes_the_name_once_the_old_file_is_gone() {
        let m = MockClient::new();
        let old = m.add_file(None, "a.txt", b"old");
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        fs::write(&data, b"new bytes").unwrap();
        let renames = Renames::open(tmp.path().join("renames")).unwrap();
        let meta = NewFile {
            file_name: "a.txt".into(),
            title: Some("a.txt".into()),
            ..Default::default()
        };
        // Unique on fileName too: the second attempt takes a temporary fileName as well.
        m.fail_next("create_file", ApiErrorKind::NameTaken, 1);
        let f = upload_aside(m.as_ref(), &renames, &meta, &data, &old.id)
            .await
            .unwrap();
        assert_eq!(
            f.title.as_deref(),
            Some("a.txt"),
            "the caller sees the final name"
        );
        assert!(is_temp_name(&title_of(&m, &f.id)));
        let stored = m.files().into_iter().find(|x| x.id == f.id).unwrap();
        assert!(is_temp_name(&stored.upload.unwrap().file_name));
        assert_eq!(m.file_bytes(&f.id).unwrap(), b"new bytes");

        // The old file's delete still waits: a recovery leaves the record alone.
        recover(m.as_ref(), &renames, std::slice::from_ref(&old.id)).await;
        assert!(is_temp_name(&title_of(&m, &f.id)));
        assert_eq!(renames.list().len(), 1);

        m.delete_file(&old.id).await.unwrap();
        after_delete(m.as_ref(), &renames, &old.id).await;
        assert_eq!(title_of(&m, &f.id), "a.txt");
        assert!(renames.list().is_empty());
    }

    #[tokio::test]
    async fn recovery_finds_an_upload_whose_answer_never_came() {
        let m = MockClient::new();
        let temp = temp_name("b.txt");
        let landed = m.add_file(None, &temp, b"b");
        let tmp = tempfile::tempdir().unwrap();
        let renames = Renames::open(tmp.path().join("renames")).unwrap();
        let record = WaitingRename {
            id: None,
            folder_id: None,
            temp,
            title: "b.txt".into(),
            after: "gone-already".into(),
        };
        renames.save("k", &record).unwrap();
        recover(m.as_ref(), &renames, &[]).await;
        assert_eq!(title_of(&m, &landed.id), "b.txt");
        assert!(renames.list().is_empty());
    }

    #[tokio::test]
    async fn a_rename_onto_a_taken_name_moves_the_target_aside() {
        let m = MockClient::new();
        let a = m.add_file(None, "a.txt", b"a");
        let b = m.add_file(None, "b.txt", b"b");
        let update = FileUpdate {
            title: Some("b.txt".into()),
            ..Default::default()
        };
        m.fail_next("update_file", ApiErrorKind::NameTaken, 1);
        let target = Entry::file(b.clone());
        let moved = update_file(m.as_ref(), &a.id, &update, Some(&target))
            .await
            .unwrap();
        assert_eq!(moved.title.as_deref(), Some("b.txt"));
        assert!(is_temp_name(&title_of(&m, &b.id)), "the target waits aside");
        // Without a known target there is nothing to make room with.
        m.fail_next("update_file", ApiErrorKind::NameTaken, 1);
        let e = update_file(m.as_ref(), &b.id, &update, None)
            .await
            .unwrap_err();
        assert_eq!(e.kind, ApiErrorKind::NameTaken);
    }

    #[test]
    fn temp_names_are_hidden_unique_and_recognised() {
        let a = temp_name("photo.jpg");
        let b = temp_name("photo.jpg");
        assert_ne!(a, b);
        assert!(
            a.starts_with(".mediafs-") && a.ends_with(".photo.jpg"),
            "{a}"
        );
        assert!(is_temp_name(&a));
        assert!(!is_temp_name("photo.jpg"));
        assert!(!is_temp_name(".mediafs-x"));
    }

    #[test]
    fn records_survive_reopen_until_done() {
        let tmp = tempfile::tempdir().unwrap();
        let r = Renames::open(tmp.path().join("renames")).unwrap();
        let w = WaitingRename {
            id: Some("new".into()),
            folder_id: None,
            temp: temp_name("a.txt"),
            title: "a.txt".into(),
            after: "old".into(),
        };
        r.save("k1", &w).unwrap();
        r.save("k2", &w).unwrap();
        r.done("k2");
        let r = Renames::open(tmp.path().join("renames")).unwrap();
        assert_eq!(r.list(), vec![("k1".to_string(), w)]);
    }
}
