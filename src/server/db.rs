//! Library metadata in SQLite (`<data-dir>/library.db`, WAL mode).
//!
//! One connection behind a mutex, used from `spawn_blocking`: the server is a test and
//! single-user tool, and serialising metadata statements makes every check-then-write
//! (parent exists, folder empty, no cycle) atomic without explicit locking elsewhere.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::error::{HttpError, HttpResult};

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS folders (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    parent_id  TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS folders_by_parent ON folders(parent_id, created_at, id);
CREATE INDEX IF NOT EXISTS folders_by_created ON folders(created_at, id);
CREATE TABLE IF NOT EXISTS files (
    id          TEXT PRIMARY KEY,
    upload_id   TEXT NOT NULL UNIQUE,
    folder_id   TEXT,
    title       TEXT NOT NULL,
    description TEXT,
    alt_text    TEXT,
    sort_order  INTEGER NOT NULL DEFAULT 0,
    is_favorite INTEGER NOT NULL DEFAULT 0,
    is_private  INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    file_name   TEXT NOT NULL,
    file_size   INTEGER NOT NULL,
    mime_type   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS files_by_folder ON files(folder_id, created_at, id);
CREATE INDEX IF NOT EXISTS files_by_created ON files(created_at, id);
";

/// Timestamp format of the API: RFC 3339, UTC, microseconds, `Z`. Fixed width, so string
/// order is time order (the lists sort on it).
pub fn format_ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

pub fn now_ts() -> String {
    format_ts(Utc::now())
}

/// A new `updatedAt` that is strictly later than `previous`, so an update is always
/// visible even when two land within one microsecond.
fn next_ts(previous: &str) -> String {
    let now = Utc::now();
    match DateTime::parse_from_rfc3339(previous) {
        Ok(prev) if prev.with_timezone(&Utc) >= now => {
            format_ts(prev.with_timezone(&Utc) + ChronoDuration::microseconds(1))
        }
        _ => format_ts(now),
    }
}

/// Which objects a list call wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParentFilter {
    /// No filter: every object.
    All,
    /// Top level (`root`).
    Root,
    /// Children of this folder.
    Id(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderRow {
    pub id: String,
    pub name: String,
    pub parent_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl FolderRow {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(FolderRow {
            id: r.get(0)?,
            name: r.get(1)?,
            parent_id: r.get(2)?,
            created_at: r.get(3)?,
            updated_at: r.get(4)?,
        })
    }
}

const FOLDER_COLS: &str = "id, name, parent_id, created_at, updated_at";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    pub id: String,
    pub upload_id: String,
    pub folder_id: Option<String>,
    pub title: String,
    pub description: Option<String>,
    pub alt_text: Option<String>,
    pub sort_order: i64,
    pub is_favorite: bool,
    pub is_private: bool,
    pub created_at: String,
    pub updated_at: String,
    pub file_name: String,
    pub file_size: u64,
    pub mime_type: String,
}

const FILE_COLS: &str = "id, upload_id, folder_id, title, description, alt_text, sort_order, \
     is_favorite, is_private, created_at, updated_at, file_name, file_size, mime_type";

impl FileRow {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(FileRow {
            id: r.get(0)?,
            upload_id: r.get(1)?,
            folder_id: r.get(2)?,
            title: r.get(3)?,
            description: r.get(4)?,
            alt_text: r.get(5)?,
            sort_order: r.get(6)?,
            is_favorite: r.get(7)?,
            is_private: r.get(8)?,
            created_at: r.get(9)?,
            updated_at: r.get(10)?,
            file_name: r.get(11)?,
            file_size: r.get::<_, i64>(12)? as u64,
            mime_type: r.get(13)?,
        })
    }
}

/// Changes of Update Folder; `None` leaves a field alone.
#[derive(Debug, Default, Clone)]
pub struct FolderPatch {
    pub name: Option<String>,
    /// `Some(None)` moves the folder to the root.
    pub parent_id: Option<Option<String>>,
}

/// Changes of Update File; `None` leaves a field alone.
#[derive(Debug, Default, Clone)]
pub struct FilePatch {
    pub title: Option<String>,
    pub description: Option<Option<String>>,
    pub alt_text: Option<Option<String>>,
    pub sort_order: Option<i64>,
    pub is_favorite: Option<bool>,
    pub is_private: Option<bool>,
    /// `Some(None)` moves the file to the root.
    pub folder_id: Option<Option<String>>,
}

/// One page of a list.
#[derive(Debug)]
pub struct Page<T> {
    pub total: u64,
    pub items: Vec<T>,
}

#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
}

impl Db {
    /// Opens the database, creating the schema if needed. The flag is true when the
    /// library is new (so the caller may seed it).
    pub fn open(path: &Path) -> anyhow::Result<(Db, bool)> {
        // SQLite creates files 0644 and gives -wal/-shm the database's mode: create the
        // database 0600 first, and make files of older versions private.
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            crate::private_files::fix_file(Path::new(&p))?;
        }
        match crate::private_files::create_new(path) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(e).with_context(|| format!("creating {}", path.display()))
            }
            _ => {}
        }
        let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        anyhow::ensure!(
            version <= SCHEMA_VERSION,
            "{} was written by a newer mediafs (schema {version})",
            path.display()
        );
        conn.execute_batch(SCHEMA)?;
        let created = version == 0;
        if created {
            conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        Ok((
            Db {
                conn: Arc::new(Mutex::new(conn)),
            },
            created,
        ))
    }

    /// Runs `f` with the connection on the blocking pool.
    pub async fn call<F, R>(&self, f: F) -> HttpResult<R>
    where
        F: FnOnce(&mut Connection) -> HttpResult<R> + Send + 'static,
        R: Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave SQLite inconsistent (statements
            // are atomic), so a poisoned lock is still usable.
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| HttpError::from(anyhow::anyhow!("database task failed: {e}")))?
    }

    /// The HMAC secret of the signed URLs: random, created once per library so URLs stay
    /// valid across restarts.
    pub async fn signing_secret(&self) -> anyhow::Result<Vec<u8>> {
        self.call(|c| {
            let existing: Option<Vec<u8>> = c
                .query_row("SELECT value FROM meta WHERE key = 'url_secret'", [], |r| {
                    r.get(0)
                })
                .optional()?;
            if let Some(s) = existing {
                return Ok(s);
            }
            let secret: [u8; 32] = rand::random();
            c.execute(
                "INSERT INTO meta (key, value) VALUES ('url_secret', ?1)",
                params![secret.to_vec()],
            )?;
            Ok(secret.to_vec())
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
    }
}

fn filter_clause(column: &str, filter: &ParentFilter) -> (String, Option<String>) {
    match filter {
        ParentFilter::All => (String::new(), None),
        ParentFilter::Root => (format!("WHERE {column} IS NULL"), None),
        ParentFilter::Id(id) => (format!("WHERE {column} = ?1"), Some(id.clone())),
    }
}

pub fn get_folder(c: &Connection, id: &str) -> HttpResult<Option<FolderRow>> {
    Ok(c.query_row(
        &format!("SELECT {FOLDER_COLS} FROM folders WHERE id = ?1"),
        params![id],
        FolderRow::from_row,
    )
    .optional()?)
}

fn require_folder(c: &Connection, id: &str, what: &str) -> HttpResult<FolderRow> {
    get_folder(c, id)?.ok_or_else(|| HttpError::not_found(format!("{what} {id} not found")))
}

pub fn list_folders(
    c: &Connection,
    filter: &ParentFilter,
    page: u64,
    page_size: u64,
) -> HttpResult<Page<FolderRow>> {
    list_page(
        c,
        "folders",
        FOLDER_COLS,
        "parent_id",
        filter,
        page,
        page_size,
        FolderRow::from_row,
    )
}

/// One page of a table's rows under a parent, in a stable order (createdAt, then id), with
/// the total count.
#[allow(clippy::too_many_arguments)]
fn list_page<T>(
    c: &Connection,
    table: &str,
    cols: &str,
    parent_col: &str,
    filter: &ParentFilter,
    page: u64,
    page_size: u64,
    from_row: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> HttpResult<Page<T>> {
    let (clause, arg) = filter_clause(parent_col, filter);
    let args: Vec<&dyn rusqlite::ToSql> = match &arg {
        Some(a) => vec![a],
        None => vec![],
    };
    let total: i64 = c.query_row(
        &format!("SELECT COUNT(*) FROM {table} {clause}"),
        args.as_slice(),
        |r| r.get(0),
    )?;
    let offset = (page - 1).saturating_mul(page_size);
    let mut stmt = c.prepare(&format!(
        "SELECT {cols} FROM {table} {clause} ORDER BY created_at, id \
         LIMIT {page_size} OFFSET {offset}"
    ))?;
    let items = stmt
        .query_map(args.as_slice(), from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Page {
        total: total as u64,
        items,
    })
}

pub fn insert_folder(c: &Connection, name: &str, parent_id: Option<&str>) -> HttpResult<FolderRow> {
    if let Some(p) = parent_id {
        require_folder(c, p, "parent folder")?;
    }
    let now = now_ts();
    let row = FolderRow {
        id: uuid::Uuid::now_v7().to_string(),
        name: name.to_string(),
        parent_id: parent_id.map(str::to_string),
        created_at: now.clone(),
        updated_at: now,
    };
    c.execute(
        "INSERT INTO folders (id, name, parent_id, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            row.id,
            row.name,
            row.parent_id,
            row.created_at,
            row.updated_at
        ],
    )?;
    Ok(row)
}

pub fn update_folder(c: &Connection, id: &str, patch: &FolderPatch) -> HttpResult<FolderRow> {
    let mut row = require_folder(c, id, "folder")?;
    if let Some(new_parent) = &patch.parent_id {
        if let Some(p) = new_parent {
            require_folder(c, p, "parent folder")?;
            // Walk up from the new parent: meeting the folder itself means a cycle.
            let mut cursor = Some(p.clone());
            while let Some(cur) = cursor {
                if cur == id {
                    return Err(HttpError::unprocessable(
                        "cannot move a folder into itself or one of its descendants",
                    ));
                }
                cursor = get_folder(c, &cur)?.and_then(|f| f.parent_id);
            }
        }
        row.parent_id = new_parent.clone();
    }
    if let Some(name) = &patch.name {
        row.name = name.clone();
    }
    row.updated_at = next_ts(&row.updated_at);
    c.execute(
        "UPDATE folders SET name = ?2, parent_id = ?3, updated_at = ?4 WHERE id = ?1",
        params![row.id, row.name, row.parent_id, row.updated_at],
    )?;
    Ok(row)
}

pub fn delete_folder(c: &Connection, id: &str) -> HttpResult<FolderRow> {
    let row = require_folder(c, id, "folder")?;
    let children: i64 = c.query_row(
        "SELECT (SELECT COUNT(*) FROM folders WHERE parent_id = ?1) + \
                (SELECT COUNT(*) FROM files WHERE folder_id = ?1)",
        params![id],
        |r| r.get(0),
    )?;
    if children > 0 {
        return Err(HttpError::conflict(format!(
            "folder {id} is not empty ({children} entries)"
        )));
    }
    c.execute("DELETE FROM folders WHERE id = ?1", params![id])?;
    Ok(row)
}

pub fn get_file(c: &Connection, id: &str) -> HttpResult<Option<FileRow>> {
    Ok(c.query_row(
        &format!("SELECT {FILE_COLS} FROM files WHERE id = ?1"),
        params![id],
        FileRow::from_row,
    )
    .optional()?)
}

fn require_file(c: &Connection, id: &str) -> HttpResult<FileRow> {
    get_file(c, id)?.ok_or_else(|| HttpError::not_found(format!("file {id} not found")))
}

/// The upload with this id, for the CDN: `(file name, size, mime type)`.
pub fn get_upload(c: &Connection, upload_id: &str) -> HttpResult<Option<(String, u64, String)>> {
    Ok(c.query_row(
        "SELECT file_name, file_size, mime_type FROM files WHERE upload_id = ?1",
        params![upload_id],
        |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?)),
    )
    .optional()?)
}

pub fn list_files(
    c: &Connection,
    filter: &ParentFilter,
    page: u64,
    page_size: u64,
) -> HttpResult<Page<FileRow>> {
    list_page(
        c,
        "files",
        FILE_COLS,
        "folder_id",
        filter,
        page,
        page_size,
        FileRow::from_row,
    )
}

/// Inserts a file whose blob is already in place. `row.folder_id` must exist (404).
pub fn insert_file(c: &Connection, row: &FileRow) -> HttpResult<()> {
    if let Some(f) = &row.folder_id {
        require_folder(c, f, "folder")?;
    }
    c.execute(
        &format!(
            "INSERT INTO files ({FILE_COLS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
        ),
        params![
            row.id,
            row.upload_id,
            row.folder_id,
            row.title,
            row.description,
            row.alt_text,
            row.sort_order,
            row.is_favorite,
            row.is_private,
            row.created_at,
            row.updated_at,
            row.file_name,
            row.file_size as i64,
            row.mime_type
        ],
    )?;
    Ok(())
}

pub fn update_file(c: &Connection, id: &str, patch: &FilePatch) -> HttpResult<FileRow> {
    let mut row = require_file(c, id)?;
    if let Some(folder) = &patch.folder_id {
        if let Some(f) = folder {
            require_folder(c, f, "folder")?;
        }
        row.folder_id = folder.clone();
    }
    if let Some(t) = &patch.title {
        row.title = t.clone();
    }
    if let Some(d) = &patch.description {
        row.description = d.clone();
    }
    if let Some(a) = &patch.alt_text {
        row.alt_text = a.clone();
    }
    if let Some(s) = patch.sort_order {
        row.sort_order = s;
    }
    if let Some(f) = patch.is_favorite {
        row.is_favorite = f;
    }
    if let Some(p) = patch.is_private {
        row.is_private = p;
    }
    row.updated_at = next_ts(&row.updated_at);
    c.execute(
        "UPDATE files SET folder_id = ?2, title = ?3, description = ?4, alt_text = ?5, \
         sort_order = ?6, is_favorite = ?7, is_private = ?8, updated_at = ?9 WHERE id = ?1",
        params![
            row.id,
            row.folder_id,
            row.title,
            row.description,
            row.alt_text,
            row.sort_order,
            row.is_favorite,
            row.is_private,
            row.updated_at
        ],
    )?;
    Ok(row)
}

/// Deletes the row; the caller removes the blob.
pub fn delete_file(c: &Connection, id: &str) -> HttpResult<FileRow> {
    let row = require_file(c, id)?;
    c.execute("DELETE FROM files WHERE id = ?1", params![id])?;
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let (db, created) = Db::open(&dir.path().join("library.db")).unwrap();
        assert!(created);
        let conn = Arc::try_unwrap(db.conn).unwrap().into_inner().unwrap();
        (dir, conn)
    }

    #[test]
    fn folder_moves_refuse_cycles() {
        let (_d, c) = db();
        let a = insert_folder(&c, "a", None).unwrap();
        let b = insert_folder(&c, "b", Some(&a.id)).unwrap();
        let cc = insert_folder(&c, "c", Some(&b.id)).unwrap();
        for target in [&a.id, &b.id, &cc.id] {
            let err = update_folder(
                &c,
                &a.id,
                &FolderPatch {
                    parent_id: Some(Some(target.clone())),
                    ..Default::default()
                },
            )
            .unwrap_err();
            assert_eq!(err.status.as_u16(), 422, "{target}");
        }
        let moved = update_folder(
            &c,
            &cc.id,
            &FolderPatch {
                parent_id: Some(None),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(moved.parent_id, None);
        assert!(moved.updated_at > cc.updated_at);
    }

    #[test]
    fn timestamps_have_microseconds_and_z() {
        let t = now_ts();
        let re = regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$").unwrap();
        assert!(re.is_match(&t), "{t}");
        let later = next_ts("2999-01-01T00:00:00.000000Z");
        assert_eq!(later, "2999-01-01T00:00:00.000001Z");
    }
}
