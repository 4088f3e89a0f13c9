//! Extended attributes: the service's own fields under `user.mediafs.` (SEMANTICS.md,
//! "Metadata"). Reading them is pure; writing one turns into a [`FileUpdate`].

use crate::api::FileUpdate;
use crate::err;
use crate::fs::entry::Entry;
use crate::fs::error::Result;
use tracing::Level;

pub const NAMES: [&str; 9] = [
    "title",
    "description",
    "alt_text",
    "is_favorite",
    "is_private",
    "sort_order",
    "id",
    "file_name",
    "mime_type",
];
const WRITABLE: [&str; 6] = [
    "title",
    "description",
    "alt_text",
    "is_favorite",
    "is_private",
    "sort_order",
];
const PREFIX: &str = "user.mediafs.";

/// The value of attribute `key` (without prefix), if the entry has it.
pub fn value(entry: &Entry, key: &str) -> Option<String> {
    match entry {
        Entry::File(f) => match key {
            "title" => f.title.clone(),
            "description" => f.description.clone(),
            "alt_text" => f.alt_text.clone(),
            "is_favorite" => f.is_favorite.map(|b| b.to_string()),
            "is_private" => f.is_private.map(|b| b.to_string()),
            "sort_order" => f.sort_order.map(|n| n.to_string()),
            "id" => Some(f.id.clone()),
            "file_name" => f.file_name.clone(),
            "mime_type" => f.mime_type.clone().or_else(|| {
                Some(
                    mime_guess::from_path(&f.name)
                        .first_or_octet_stream()
                        .to_string(),
                )
            }),
            _ => None,
        },
        Entry::Folder(f) => match key {
            "id" => Some(f.id.clone()),
            "title" => Some(f.name.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// What copy tools copy: the writable service fields that are set. `title` is left out
/// (a copy carrying its source's title would be renamed to it), and so are the read-only
/// `id`, `file_name` and `mime_type`; all stay readable by name.
const LISTED: [&str; 5] = [
    "description",
    "alt_text",
    "is_favorite",
    "is_private",
    "sort_order",
];

/// `listxattr`: the names listed (see [`LISTED`]) that are set, NUL-terminated.
pub fn list(entry: &Entry) -> Vec<u8> {
    let mut out = Vec::new();
    for key in LISTED {
        if value(entry, key).is_some() {
            out.extend_from_slice(PREFIX.as_bytes());
            out.extend_from_slice(key.as_bytes());
            out.push(0);
        }
    }
    out
}

/// `getxattr`. Only the `user.` namespace is kept: a name in another one (`ls -l` asks
/// for `security.selinux` and `system.posix_acl_access` of every entry) is ENOTSUP, which
/// `ls` remembers per filesystem, so it stops asking; ENODATA would cost two round trips
/// to the daemon per entry on every `ls -l`.
pub fn get(entry: &Entry, name: &std::ffi::OsStr) -> Result<Vec<u8>> {
    if !name.as_encoded_bytes().starts_with(b"user.") {
        return Err(
            err!(NotSupported, "no {name:?}: only user.* attributes").with_level(Level::DEBUG)
        );
    }
    name.to_str()
        .and_then(|n| n.strip_prefix(PREFIX))
        .and_then(|k| value(entry, k))
        .map(String::into_bytes)
        .ok_or_else(|| err!(NoAttribute, "no attribute {name:?}"))
}

/// `setxattr`: the update that stores `value` in the attribute `name` of `entry`;
/// `None` when it changes nothing (an attribute set to the value it has, as a copy tool
/// restoring `title` or `id` does).
pub fn update(entry: &Entry, name: &std::ffi::OsStr, value: &[u8]) -> Result<Option<FileUpdate>> {
    let key = name
        .to_str()
        .and_then(|n| n.strip_prefix(PREFIX))
        .ok_or_else(|| err!(NotSupported, "only user.mediafs.* attributes are stored"))?;
    let value = std::str::from_utf8(value)
        .map_err(|_| err!(Invalid, "attribute value is not UTF-8"))?
        .trim_end_matches('\0');
    let current = match key {
        "title" => Some(entry.remote_name().to_string()),
        _ => self::value(entry, key),
    };
    if current.as_deref() == Some(value) {
        return Ok(None);
    }
    if !WRITABLE.contains(&key) {
        return Err(err!(NotPermitted, "user.mediafs.{key} is read-only"));
    }
    let bad = |what: &str| err!(Invalid, "user.mediafs.{key} must be {what}, got {value:?}");
    let parse_bool = |v: &str| match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(bad("true or false")),
    };
    let mut update = FileUpdate::default();
    match key {
        "title" => update.title = Some(value.to_string()),
        "description" => update.description = Some(value.to_string()),
        "alt_text" => update.alt_text = Some(value.to_string()),
        "is_favorite" => update.is_favorite = Some(parse_bool(value)?),
        "is_private" => update.is_private = Some(parse_bool(value)?),
        "sort_order" => update.sort_order = Some(value.parse().map_err(|_| bad("an integer"))?),
        _ => unreachable!("checked above"),
    }
    Ok(Some(update))
}
