//! Wire types of the Media Manager API (as openapi.yaml describes them).
//!
//! Tolerant by design: unknown fields are ignored, everything not strictly needed is
//! optional, both list envelopes (paged and bare `{"data": [...]}`) are accepted, envelope
//! extras (`requestId`, `success`) are ignored, and numbers may come as strings
//! (`"fileSize": "70"`). Timestamps stay strings; their readers accept RFC 3339 with or
//! without fractional seconds.

use serde::{Deserialize, Serialize};

/// A folder as the service describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Folder {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub parent_id: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// The stored upload behind a file: its original name, size and signed URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Upload {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub file_name: String,
    #[serde(default, deserialize_with = "lenient_u64::plain")]
    pub file_size: u64,
    #[serde(default)]
    pub file_url: Option<String>,
    /// Not in the documented example; the emulator sends it, the client tolerates its absence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
}

/// A file (media item) as the service describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaFile {
    pub id: String,
    #[serde(default)]
    pub upload_id: Option<String>,
    #[serde(default)]
    pub folder_id: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub alt_text: Option<String>,
    #[serde(default)]
    pub sort_order: Option<i64>,
    #[serde(default)]
    pub is_favorite: Option<bool>,
    #[serde(default)]
    pub is_private: Option<bool>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
    #[serde(default)]
    pub upload: Option<Upload>,
}

impl MediaFile {
    /// Size in bytes (`upload.fileSize`), 0 when the service sent no upload.
    pub fn size(&self) -> u64 {
        self.upload.as_ref().map_or(0, |u| u.file_size)
    }

    /// The signed URL for the bytes, if the service sent one.
    pub fn url(&self) -> Option<&str> {
        self.upload.as_ref().and_then(|u| u.file_url.as_deref())
    }
}

/// `{"data": T}`: the single-object envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataEnvelope<T> {
    pub data: T,
}

/// A list page. Paging fields are optional: a bare `{"data": [...]}` is one complete page.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListPage<T> {
    #[serde(default = "Vec::new")]
    pub data: Vec<T>,
    #[serde(default, deserialize_with = "lenient_u64::option")]
    pub total: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64::option")]
    pub page: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64::option")]
    pub page_size: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64::option")]
    pub last_page: Option<u64>,
}

/// Which folder a list call is about: the library root or a folder id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Parent {
    Root,
    Folder(String),
}

impl Parent {
    /// The value of the `parentId`/`folderId` query filter.
    pub fn query_value(&self) -> &str {
        match self {
            Parent::Root => "root",
            Parent::Folder(id) => id,
        }
    }

    /// The id as it appears in an object's `parentId`/`folderId` field.
    pub fn as_id(&self) -> Option<&str> {
        match self {
            Parent::Root => None,
            Parent::Folder(id) => Some(id),
        }
    }

    pub fn from_id(id: Option<&str>) -> Parent {
        match id {
            None => Parent::Root,
            Some(id) => Parent::Folder(id.to_string()),
        }
    }
}

/// Metadata of a Create File call; the bytes travel separately (streamed, see `api::upload`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewFile {
    pub file_name: String,
    pub mime_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alt_text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_private: Option<bool>,
    /// Serialised always: `null` means the library root.
    pub folder_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_favorite: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sort_order: Option<i64>,
}

/// Body of Update File: only the fields that are `Some` are sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileUpdate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alt_text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sort_order: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_favorite: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_private: Option<bool>,
    /// `Some(None)` moves the file to the root (sends `"folderId": null`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "double_option"
    )]
    pub folder_id: Option<Option<String>>,
}

/// Body of Update Folder: only the fields that are `Some` are sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FolderUpdate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `Some(None)` moves the folder to the root (sends `"parentId": null`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "double_option"
    )]
    pub parent_id: Option<Option<String>>,
}

/// Body of Create Folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewFolder {
    pub name: String,
    pub parent_id: Option<String>,
}

/// Serde helpers: a count as a JSON number or a decimal string (`70` or `"70"`); `null`
/// counts as absent.
pub(crate) mod lenient_u64 {
    use serde::{de::Error, Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrText {
        Num(u64),
        Text(String),
    }

    pub fn option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Option::<NumOrText>::deserialize(d)? {
            None => Ok(None),
            Some(NumOrText::Num(n)) => Ok(Some(n)),
            Some(NumOrText::Text(t)) => t
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| D::Error::custom(format!("expected a count, got {t:?}"))),
        }
    }

    pub fn plain<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        Ok(option(d)?.unwrap_or(0))
    }
}

/// Serde helper: distinguishes an absent field from an explicit `null`.
pub(crate) mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Option<String>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            None => s.serialize_none(),
            Some(inner) => inner.serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<String>>, D::Error> {
        Ok(Some(Option::<String>::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_documented_file_example_and_ignores_unknown_fields() {
        let body = r#"{"requestId":"x","data":{"id":"a11ff961","uploadId":"u1","folderId":null,
          "title":"Red Pixel Test","description":"d","altText":"a","sortOrder":0,
          "isFavorite":true,"isPrivate":false,"createdAt":"2026-02-20T11:29:59.000000Z",
          "updatedAt":"2026-02-20T11:29:59.000000Z","somethingNew":[1,2],
          "upload":{"id":"u1","fileName":"red-pixel.png","fileSize":70,
          "fileUrl":"https://cdn/x.png?Expires=1&Signature=s&Key-Pair-Id=k"}}}"#;
        let f: DataEnvelope<MediaFile> = serde_json::from_str(body).unwrap();
        assert_eq!(f.data.size(), 70);
        assert_eq!(f.data.folder_id, None);
        assert_eq!(f.data.title.as_deref(), Some("Red Pixel Test"));
        assert!(f.data.url().unwrap().contains("Expires=1"));
    }

    #[test]
    fn accepts_bare_and_paged_list_envelopes() {
        let bare: ListPage<Folder> =
            serde_json::from_str(r#"{"data":[{"id":"1","name":"a"}]}"#).unwrap();
        assert_eq!(bare.data.len(), 1);
        assert_eq!(bare.last_page, None);
        let paged: ListPage<Folder> = serde_json::from_str(
            r#"{"total":65,"page":1,"pageSize":100,"lastPage":1,"data":[],"success":true}"#,
        )
        .unwrap();
        assert_eq!(paged.last_page, Some(1));
        assert_eq!(paged.total, Some(65));
    }

    #[test]
    fn accepts_wrapped_answers_string_sizes_and_whole_second_timestamps() {
        let body = r#"{"success":true,"requestId":"r-1","data":{"id":"f1","folderId":"d1",
          "createdAt":"2026-02-20T11:29:59Z","updatedAt":"2026-02-20T11:30:00Z",
          "upload":{"fileName":"a.png","fileSize":"70","fileUrl":null}}}"#;
        let f: DataEnvelope<MediaFile> = serde_json::from_str(body).unwrap();
        assert_eq!(f.data.size(), 70);
        let t = chrono::DateTime::parse_from_rfc3339(f.data.created_at.as_deref().unwrap());
        assert!(t.is_ok());
        let null_size: Upload = serde_json::from_str(r#"{"fileSize":null}"#).unwrap();
        assert_eq!(null_size.file_size, 0);
        assert!(serde_json::from_str::<Upload>(r#"{"fileSize":"lots"}"#).is_err());
        let page: ListPage<Folder> = serde_json::from_str(
            r#"{"success":true,"requestId":"r","total":"3","pageSize":"50","data":[]}"#,
        )
        .unwrap();
        assert_eq!(
            (page.total, page.page_size, page.last_page),
            (Some(3), Some(50), None)
        );
    }

    #[test]
    fn update_distinguishes_absent_from_null() {
        let to_root = FileUpdate {
            folder_id: Some(None),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&to_root).unwrap(),
            r#"{"folderId":null}"#
        );
        let title_only = FileUpdate {
            title: Some("b".into()),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&title_only).unwrap(),
            r#"{"title":"b"}"#
        );
        let parsed: FolderUpdate = serde_json::from_str(r#"{"parentId":null}"#).unwrap();
        assert_eq!(parsed.parent_id, Some(None));
        let parsed: FolderUpdate = serde_json::from_str(r#"{"name":"x"}"#).unwrap();
        assert_eq!(parsed.parent_id, None);
    }
}
