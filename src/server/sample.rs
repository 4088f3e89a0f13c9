//! The starter library `mediafs serve --sample` (and a fresh default mount) shows a
//! newcomer: a few folders, a README, a tiny PNG, a title with a `/`, and two files with
//! one title in one folder (the duplicate-name rule). Well under 100 KiB.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::blobs::BlobStore;
use super::db::{self, Db, FileRow};

const README: &str = "\
Welcome to mediafs
==================

This directory tree is a Media Manager library mounted with FUSE.

- Folders are directories; files are regular files named by their title.
- Copy a file in to upload it; rm deletes it; mv renames or moves it.
- Reading fetches bytes on demand through signed URLs, with a local block cache.
- Service metadata (title, description, alt text, favourite, ...) is available as
  extended attributes: getfattr -d -m user.mediafs. FILE

This sample library was created by `mediafs serve --sample`.
";

/// A 1x1 red PNG (the API documentation's example image).
const RED_PIXEL_PNG: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

struct SampleFile {
    folder: Option<usize>,
    title: &'static str,
    file_name: &'static str,
    mime: &'static str,
    bytes: Vec<u8>,
    description: Option<&'static str>,
}

/// Adds the sample library. Called only when the database was just created.
pub async fn seed(db: &Db, blobs: &BlobStore) -> anyhow::Result<()> {
    // (name, index of parent in this list)
    let folders: [(&str, Option<usize>); 4] = [
        ("Welcome", None),
        ("Photos", None),
        ("Documents", None),
        ("Notes", Some(2)),
    ];
    let mut ids: Vec<String> = Vec::new();
    for (name, parent) in folders {
        let parent_id = parent.map(|i| ids[i].clone());
        let row = db
            .call(move |c| db::insert_folder(c, name, parent_id.as_deref()))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        ids.push(row.id);
    }
    let png = STANDARD.decode(RED_PIXEL_PNG)?;
    let files = vec![
        SampleFile {
            folder: Some(0),
            title: "README.txt",
            file_name: "README.txt",
            mime: "text/plain",
            bytes: README.as_bytes().to_vec(),
            description: Some("What mediafs is and how to use it"),
        },
        SampleFile {
            folder: Some(1),
            title: "red-pixel.png",
            file_name: "red-pixel.png",
            mime: "image/png",
            bytes: png,
            description: Some("A tiny test image"),
        },
        SampleFile {
            folder: Some(3),
            title: "AC/DC notes.txt",
            file_name: "acdc-notes.txt",
            mime: "text/plain",
            bytes: b"A title may hold a slash; the mount shows it as U+2215.\n".to_vec(),
            description: None,
        },
        SampleFile {
            folder: Some(3),
            title: "todo.txt",
            file_name: "todo-1.txt",
            mime: "text/plain",
            bytes: b"The older of two files titled todo.txt: it keeps the plain name.\n".to_vec(),
            description: None,
        },
        SampleFile {
            folder: Some(3),
            title: "todo.txt",
            file_name: "todo-2.txt",
            mime: "text/plain",
            bytes: b"The newer todo.txt: shown as todo~<id>.txt.\n".to_vec(),
            description: None,
        },
    ];
    for f in files {
        let upload_id = uuid::Uuid::new_v4().to_string();
        let temp = blobs.temp_path();
        let mut file = super::blobs::create_temp(&temp).await?;
        tokio::io::AsyncWriteExt::write_all(&mut file, &f.bytes).await?;
        drop(file);
        blobs.commit(&temp, &upload_id).await?;
        let now = db::now_ts();
        let row = FileRow {
            id: uuid::Uuid::new_v4().to_string(),
            upload_id,
            folder_id: f.folder.map(|i| ids[i].clone()),
            title: f.title.to_string(),
            description: f.description.map(str::to_string),
            alt_text: None,
            sort_order: 0,
            is_favorite: false,
            is_private: false,
            created_at: now.clone(),
            updated_at: now,
            file_name: f.file_name.to_string(),
            file_size: f.bytes.len() as u64,
            mime_type: f.mime.to_string(),
        };
        db.call(move |c| db::insert_file(c, &row))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(())
}
