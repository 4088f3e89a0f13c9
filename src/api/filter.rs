//! Keeping the objects of one folder out of a list answer.
//!
//! The documented API names no filter for Get Folders / Get Files; a service may ignore
//! `parentId`/`folderId` and answer with the whole library. The client therefore keeps only
//! the objects whose own `parentId`/`folderId` is the folder asked about, and says once in
//! the log when it sees a service do that (every listing then walks the whole library).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};

use super::types::Parent;

/// Set once a list answer held an object of another folder.
static FILTER_IGNORED_LOGGED: AtomicBool = AtomicBool::new(false);

/// The objects of `items` whose parent is `parent`, each id once (objects shift between
/// pages when the library changes during a walk), in their order.
pub fn children<T>(
    mut items: Vec<T>,
    parent: &Parent,
    id_of: fn(&T) -> &str,
    parent_of: fn(&T) -> Option<&str>,
) -> Vec<T> {
    let want = parent.as_id();
    let before = items.len();
    let mut foreign = false;
    let mut seen = HashSet::new();
    items.retain(|i| {
        let mine = parent_of(i) == want;
        foreign |= !mine;
        mine && seen.insert(id_of(i).to_string())
    });
    if foreign && !FILTER_IGNORED_LOGGED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            listed = before,
            kept = items.len(),
            "the service ignores the parentId/folderId filter of its list calls: mediafs \
             keeps each folder's own objects, but every directory listing now reads the \
             whole library"
        );
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(t: &(String, Option<String>)) -> &str {
        &t.0
    }
    fn parent(t: &(String, Option<String>)) -> Option<&str> {
        t.1.as_deref()
    }

    #[test]
    fn keeps_own_children_once_in_order() {
        let items = vec![
            ("1".to_string(), Some("d".to_string())),
            ("2".to_string(), None),
            ("3".to_string(), Some("d".to_string())),
            ("1".to_string(), Some("d".to_string())),
            ("4".to_string(), Some("e".to_string())),
        ];
        let got = children(items.clone(), &Parent::Folder("d".into()), id, parent);
        let ids: Vec<_> = got.iter().map(|t| t.0.as_str()).collect();
        assert_eq!(ids, ["1", "3"]);
        let root = children(items, &Parent::Root, id, parent);
        assert_eq!(root.len(), 1);
        assert_eq!(root[0].0, "2");
    }
}
