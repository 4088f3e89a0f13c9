//! Helpers shared by the write-side mount tests: looking at the library through the API
//! (never through the mount) and walking trees for comparison.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use mediafs::api::{ApiErrorKind, FileUpdate, Folder, MediaClient, MediaFile, Parent};
use sha2::{Digest, Sha256};

use crate::common::{wait_until, Server};

/// One node of a tree: a directory, or a file with the SHA-256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File(String),
}

/// The name a remote file is shown under: its title, else the upload's file name.
pub fn file_name_of(f: &MediaFile) -> String {
    match f.title.as_deref() {
        Some(t) if !t.is_empty() => t.to_string(),
        _ => f
            .upload
            .as_ref()
            .map(|u| u.file_name.clone())
            .unwrap_or_default(),
    }
}

/// Files of `folder` (`None` = root) whose shown name is `name`, through the API.
pub fn remote_files_named(srv: &Server, folder: Option<&str>, name: &str) -> Vec<MediaFile> {
    srv.remote_files(folder)
        .into_iter()
        .filter(|f| file_name_of(f) == name)
        .collect()
}

/// The one file of `folder` named `name`; panics unless there is exactly one.
pub fn remote_file(srv: &Server, folder: Option<&str>, name: &str) -> MediaFile {
    let mut v = remote_files_named(srv, folder, name);
    assert_eq!(
        v.len(),
        1,
        "expected exactly one remote file {name:?} in {folder:?}, got {v:#?}"
    );
    v.remove(0)
}

/// The one folder of `parent` named `name`; panics unless there is exactly one.
pub fn remote_folder(srv: &Server, parent: Option<&str>, name: &str) -> Folder {
    let mut v: Vec<Folder> = srv
        .remote_folders(parent)
        .into_iter()
        .filter(|f| f.name == name)
        .collect();
    assert_eq!(
        v.len(),
        1,
        "expected exactly one remote folder {name:?} in {parent:?}, got {v:#?}"
    );
    v.remove(0)
}

/// A remote file by id; `None` once it is deleted.
pub fn remote_get(srv: &Server, id: &str) -> Option<MediaFile> {
    let c = srv.client();
    let id = id.to_string();
    match srv.block(async move { c.get_file(&id).await }) {
        Ok(f) => Some(f),
        Err(e) if e.kind == ApiErrorKind::NotFound => None,
        Err(e) => panic!("get file: {e}"),
    }
}

pub fn remote_update(srv: &Server, id: &str, update: FileUpdate) -> MediaFile {
    let c = srv.client();
    let id = id.to_string();
    srv.block(async move { c.update_file(&id, &update).await })
        .expect("update file")
}

/// SHA-256 of a remote file's bytes, streamed through the API + CDN in 8 MiB ranges (so a
/// 200 MiB file is never held in memory at once).
pub fn remote_sha256(srv: &Server, id: &str) -> String {
    try_remote_sha256(srv, id).unwrap_or_else(|e| panic!("reading remote file {id}: {e}"))
}

/// Like [`remote_sha256`], for polling: a file deleted while being read is an error, not a
/// panic.
pub fn try_remote_sha256(srv: &Server, id: &str) -> Result<String, String> {
    let c = srv.client();
    let id = id.to_string();
    srv.block(async move {
        let f = c.get_file(&id).await.map_err(|e| e.to_string())?;
        let url = f.url().ok_or("file has no URL")?.to_string();
        let mut h = Sha256::new();
        let mut off = 0u64;
        loop {
            let chunk = c
                .read_range(&url, off, 8 << 20)
                .await
                .map_err(|e| e.to_string())?;
            if chunk.is_empty() {
                break;
            }
            off += chunk.len() as u64;
            h.update(&chunk);
        }
        if off != f.size() {
            return Err(format!("read {off} bytes of {}", f.size()));
        }
        Ok(hex::encode(h.finalize()))
    })
}

/// The library below `folder`, through the API: relative path → node. Panics on two
/// entries with one name in a folder (the write path must never leave duplicates).
pub fn remote_tree(srv: &Server, folder: Option<&str>) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    walk_remote(srv, folder, "", &mut out);
    out
}

fn walk_remote(srv: &Server, folder: Option<&str>, prefix: &str, out: &mut BTreeMap<String, Node>) {
    for d in srv.remote_folders(folder) {
        let path = format!("{prefix}{}", d.name);
        assert!(
            out.insert(path.clone(), Node::Dir).is_none(),
            "duplicate remote entry {path:?}"
        );
        walk_remote(srv, Some(&d.id), &format!("{path}/"), out);
    }
    for f in srv.remote_files(folder) {
        let path = format!("{prefix}{}", file_name_of(&f));
        let sha = remote_sha256(srv, &f.id);
        assert!(
            out.insert(path.clone(), Node::File(sha)).is_none(),
            "duplicate remote entry {path:?}"
        );
    }
}

/// A local tree (or a tree seen through the mount): relative path → node.
pub fn local_tree(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    walk_local(root, "", &mut out);
    out
}

fn walk_local(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Node>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.unwrap())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = format!("{prefix}{name}");
        if e.file_type().unwrap().is_dir() {
            out.insert(path.clone(), Node::Dir);
            walk_local(&e.path(), &format!("{path}/"), out);
        } else {
            out.insert(path, Node::File(crate::common::sha256_file(&e.path())));
        }
    }
}

/// Files waiting in `<cache_dir>/pending`: the SHA-256 of each `*.data` file.
pub fn pending_data(cache_dir: &Path) -> Vec<String> {
    let dir = cache_dir.join("pending");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "data"))
        .map(|p| crate::common::sha256_file(&p))
        .collect();
    v.sort();
    v
}

/// Waits (up to `secs`) for exactly one remote file `name` in `folder` with bytes `sha`.
pub fn wait_landed(srv: &Server, folder: Option<&str>, name: &str, sha: &str, secs: u64) -> bool {
    wait_until(Duration::from_secs(secs), || {
        let v = remote_files_named(srv, folder, name);
        // The replaced copy may vanish while it is read: keep polling.
        v.len() == 1 && try_remote_sha256(srv, &v[0].id).is_ok_and(|s| s == sha)
    })
}

/// The parent of a remote listing by id (for tests that need `Parent` directly).
pub fn parent(id: Option<&str>) -> Parent {
    Parent::from_id(id)
}
