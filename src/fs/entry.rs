//! The core's own entry type. Wire types (`MediaFile`, `Folder`) are converted once, where
//! listings and answers arrive: names are resolved and dates parsed here, not on every
//! `getattr`.

use std::time::SystemTime;

use crate::api::{Folder, MediaFile};
use crate::fs::names;

/// A remote folder as the core keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderEntry {
    pub id: String,
    pub name: String,
    /// `createdAt` as sent (RFC 3339): the duplicate rule orders by it.
    pub created_at: Option<String>,
    pub created: SystemTime,
    pub updated: SystemTime,
}

/// A remote file as the core keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub id: String,
    /// The remote name: the title, else `upload.fileName`, else the id.
    pub name: String,
    pub title: Option<String>,
    pub file_name: Option<String>,
    pub mime_type: Option<String>,
    pub size: u64,
    /// The signed URL of the bytes, handed to the read path at open.
    pub url: Option<String>,
    pub description: Option<String>,
    pub alt_text: Option<String>,
    pub is_favorite: Option<bool>,
    pub is_private: Option<bool>,
    pub sort_order: Option<i64>,
    /// `createdAt` as sent (RFC 3339): the duplicate rule orders by it.
    pub created_at: Option<String>,
    pub created: SystemTime,
    pub updated: SystemTime,
}

impl From<Folder> for FolderEntry {
    fn from(f: Folder) -> Self {
        FolderEntry {
            created: parse_time(f.created_at.as_deref()),
            updated: parse_time(f.updated_at.as_deref()),
            id: f.id,
            name: f.name,
            created_at: f.created_at,
        }
    }
}

impl From<MediaFile> for FileEntry {
    fn from(f: MediaFile) -> Self {
        let name = names::file_remote_name(&f);
        let size = f.size();
        let created = parse_time(f.created_at.as_deref());
        let updated = parse_time(f.updated_at.as_deref());
        let (file_name, mime_type, url) = match f.upload {
            Some(u) => (Some(u.file_name), u.mime_type, u.file_url),
            None => (None, None, None),
        };
        FileEntry {
            id: f.id,
            name,
            title: f.title,
            file_name,
            mime_type,
            size,
            url,
            description: f.description,
            alt_text: f.alt_text,
            is_favorite: f.is_favorite,
            is_private: f.is_private,
            sort_order: f.sort_order,
            created_at: f.created_at,
            created,
            updated,
        }
    }
}

/// What an inode stands for.
#[derive(Debug, Clone)]
pub enum Entry {
    Root,
    Folder(FolderEntry),
    File(FileEntry),
    /// A file created through the mount whose upload has not landed yet.
    Local {
        name: String,
        created: SystemTime,
    },
}

impl Entry {
    pub fn folder(f: Folder) -> Entry {
        Entry::Folder(f.into())
    }

    pub fn file(f: MediaFile) -> Entry {
        Entry::File(f.into())
    }

    pub fn is_dir(&self) -> bool {
        matches!(self, Entry::Root | Entry::Folder(_))
    }

    /// The name as the service has it (unescaped, possibly with `/`).
    pub fn remote_name(&self) -> &str {
        match self {
            Entry::Root => "",
            Entry::Folder(f) => &f.name,
            Entry::File(f) => &f.name,
            Entry::Local { name, .. } => name,
        }
    }

    /// `createdAt` for the duplicate rule.
    pub fn created_at(&self) -> Option<String> {
        match self {
            Entry::Folder(f) => f.created_at.clone(),
            Entry::File(f) => f.created_at.clone(),
            // Local files are the newest of all: they sort after every remote duplicate.
            Entry::Local { .. } => Some("9999".into()),
            Entry::Root => None,
        }
    }

    /// The remote id, if the entry has one.
    pub fn id(&self) -> Option<&str> {
        match self {
            Entry::Folder(f) => Some(&f.id),
            Entry::File(f) => Some(&f.id),
            _ => None,
        }
    }
}

fn parse_time(s: Option<&str>) -> SystemTime {
    s.and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| SystemTime::from(t.with_timezone(&chrono::Utc)))
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Upload;

    #[test]
    fn a_file_is_converted_once_with_its_name_and_times() {
        let f = MediaFile {
            id: "f1".into(),
            upload_id: None,
            folder_id: None,
            title: Some(String::new()),
            description: Some("d".into()),
            alt_text: None,
            sort_order: Some(3),
            is_favorite: None,
            is_private: None,
            created_at: Some("2026-01-02T03:04:05Z".into()),
            updated_at: Some("not a date".into()),
            upload: Some(Upload {
                id: None,
                file_name: "x.bin".into(),
                file_size: 7,
                file_url: Some("u".into()),
                mime_type: None,
            }),
        };
        let e = FileEntry::from(f);
        assert_eq!(e.name, "x.bin", "empty title falls back to fileName");
        assert_eq!(e.size, 7);
        assert_eq!(e.url.as_deref(), Some("u"));
        assert_eq!(
            e.created,
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_767_323_045)
        );
        assert_eq!(e.updated, SystemTime::UNIX_EPOCH, "unparsable date");
    }
}
