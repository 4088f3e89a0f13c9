//! The inode table: which remote object each inode is, the cached listing of each
//! directory, and the names shown for them (see [`super::names`]).
//!
//! Pure data, no I/O: the filesystem does the remote calls and applies their results here
//! under one lock, which is never held across an `.await`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::api::{Folder, MediaFile};
use crate::fs::names::{self, Candidate};
use crate::fs::write::StagedFile;

pub type Ino = u64;
pub const ROOT_INO: Ino = 1;

/// What an inode stands for.
#[derive(Debug, Clone)]
pub enum Entry {
    Root,
    Folder(Folder),
    File(MediaFile),
    /// A file created through the mount whose upload has not landed yet.
    Local {
        name: String,
        created: SystemTime,
    },
}

impl Entry {
    pub fn is_dir(&self) -> bool {
        matches!(self, Entry::Root | Entry::Folder(_))
    }

    /// The name as the service has it (unescaped, possibly with `/`).
    pub fn remote_name(&self) -> String {
        match self {
            Entry::Root => String::new(),
            Entry::Folder(f) => f.name.clone(),
            Entry::File(f) => names::file_remote_name(f),
            Entry::Local { name, .. } => name.clone(),
        }
    }

    /// Key under which the remote id is indexed (folders and files are separate id spaces).
    fn id_key(&self) -> Option<String> {
        match self {
            Entry::Folder(f) => Some(format!("d:{}", f.id)),
            Entry::File(f) => Some(format!("f:{}", f.id)),
            _ => None,
        }
    }

    fn created_at(&self) -> Option<String> {
        match self {
            Entry::Folder(f) => f.created_at.clone(),
            Entry::File(f) => f.created_at.clone(),
            // Local files are the newest of all: they sort after every remote duplicate.
            Entry::Local { .. } => Some("9999".into()),
            Entry::Root => None,
        }
    }
}

#[derive(Debug)]
pub struct Inode {
    pub ino: Ino,
    pub parent: Ino,
    /// The name shown in the parent directory.
    pub name: String,
    pub entry: Entry,
    /// When `entry` was last confirmed by the service.
    pub refreshed: Instant,
    /// The staged copy while the file is open for writing or its upload is pending.
    pub staged: Option<Arc<StagedFile>>,
    /// Remote file id seen at the last open: the kernel page cache is kept while it is unchanged.
    pub last_open_id: Option<String>,
}

#[derive(Debug, Default)]
struct Dir {
    members: HashSet<Ino>,
    by_name: HashMap<String, Ino>,
    /// When the listing was last fetched; `None` = never or invalidated.
    fetched: Option<Instant>,
}

#[derive(Debug)]
pub struct Namespace {
    inodes: HashMap<Ino, Inode>,
    by_id: HashMap<String, Ino>,
    dirs: HashMap<Ino, Dir>,
    next_ino: Ino,
}

impl Default for Namespace {
    fn default() -> Self {
        Self::new()
    }
}

impl Namespace {
    pub fn new() -> Self {
        let mut ns = Namespace {
            inodes: HashMap::new(),
            by_id: HashMap::new(),
            dirs: HashMap::new(),
            next_ino: ROOT_INO + 1,
        };
        ns.inodes.insert(
            ROOT_INO,
            Inode {
                ino: ROOT_INO,
                parent: ROOT_INO,
                name: String::new(),
                entry: Entry::Root,
                refreshed: Instant::now(),
                staged: None,
                last_open_id: None,
            },
        );
        ns.dirs.insert(ROOT_INO, Dir::default());
        ns
    }

    pub fn get(&self, ino: Ino) -> Option<&Inode> {
        self.inodes.get(&ino)
    }

    pub fn get_mut(&mut self, ino: Ino) -> Option<&mut Inode> {
        self.inodes.get_mut(&ino)
    }

    /// The folder id a directory inode stands for (`None` = library root).
    pub fn folder_id(&self, dir: Ino) -> Option<Option<String>> {
        match &self.inodes.get(&dir)?.entry {
            Entry::Root => Some(None),
            Entry::Folder(f) => Some(Some(f.id.clone())),
            _ => None,
        }
    }

    pub fn is_fresh(&self, dir: Ino, ttl: Duration) -> bool {
        self.dirs
            .get(&dir)
            .and_then(|d| d.fetched)
            .is_some_and(|t| t.elapsed() < ttl)
    }

    pub fn has_listing(&self, dir: Ino) -> bool {
        self.dirs.get(&dir).is_some_and(|d| d.fetched.is_some())
    }

    /// Keeps serving a stale listing for `retry_in` more before the next attempt
    /// (used when the service is unreachable).
    pub fn extend_listing(&mut self, dir: Ino, ttl: Duration, retry_in: Duration) {
        if let Some(d) = self.dirs.get_mut(&dir) {
            let when = Instant::now()
                .checked_sub(ttl.saturating_sub(retry_in))
                .unwrap_or_else(Instant::now);
            d.fetched = Some(when);
        }
    }

    pub fn child(&self, dir: Ino, name: &str) -> Option<Ino> {
        self.dirs.get(&dir)?.by_name.get(name).copied()
    }

    /// Children sorted by name.
    pub fn children(&self, dir: Ino) -> Vec<&Inode> {
        let mut v: Vec<&Inode> = match self.dirs.get(&dir) {
            Some(d) => d
                .members
                .iter()
                .filter_map(|i| self.inodes.get(i))
                .collect(),
            None => Vec::new(),
        };
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    pub fn is_empty_dir(&self, dir: Ino) -> bool {
        self.dirs.get(&dir).is_none_or(|d| d.members.is_empty())
    }

    /// Replaces what is known of `dir` with a fresh listing. Local entries (uploads not yet
    /// landed) stay. Objects that moved here from another directory move their inode.
    pub fn apply_listing(&mut self, dir: Ino, folders: Vec<Folder>, files: Vec<MediaFile>) {
        let now = Instant::now();
        let mut members: HashSet<Ino> = HashSet::new();
        let entries = folders
            .into_iter()
            .map(Entry::Folder)
            .chain(files.into_iter().map(Entry::File));
        for entry in entries {
            let ino = self.upsert(dir, entry, now);
            members.insert(ino);
        }
        // Keep entries only we know of: files being written or waiting to upload.
        let old: Vec<Ino> = self
            .dirs
            .get(&dir)
            .map(|d| d.members.iter().copied().collect())
            .unwrap_or_default();
        for ino in old {
            if members.contains(&ino) {
                continue;
            }
            let keep = self
                .inodes
                .get(&ino)
                .is_some_and(|i| matches!(i.entry, Entry::Local { .. }));
            if keep {
                members.insert(ino);
            } else {
                self.detach(ino);
            }
        }
        let d = self.dirs.entry(dir).or_default();
        d.members = members;
        d.fetched = Some(now);
        self.rename_all(dir);
    }

    /// Inserts or updates the inode of a remote object under `dir` (without renaming the
    /// directory's entries: callers do that once at the end).
    fn upsert(&mut self, dir: Ino, entry: Entry, now: Instant) -> Ino {
        let key = entry.id_key().expect("remote entries have ids");
        if let Some(&ino) = self.by_id.get(&key) {
            let old_parent = self.inodes[&ino].parent;
            if old_parent != dir {
                self.take_out(old_parent, ino);
            }
            let inode = self.inodes.get_mut(&ino).expect("indexed inode exists");
            inode.parent = dir;
            inode.entry = entry;
            inode.refreshed = now;
            return ino;
        }
        let ino = self.alloc(dir, entry, now);
        self.by_id.insert(key, ino);
        ino
    }

    fn alloc(&mut self, parent: Ino, entry: Entry, now: Instant) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        if entry.is_dir() {
            self.dirs.insert(ino, Dir::default());
        }
        self.inodes.insert(
            ino,
            Inode {
                ino,
                parent,
                name: String::new(),
                entry,
                refreshed: now,
                staged: None,
                last_open_id: None,
            },
        );
        ino
    }

    /// Adds a remote object that the mount itself just created; returns its inode.
    pub fn insert(&mut self, dir: Ino, entry: Entry) -> Ino {
        let ino = match entry.id_key() {
            Some(_) => self.upsert(dir, entry, Instant::now()),
            None => self.alloc(dir, entry, Instant::now()),
        };
        self.dirs.entry(dir).or_default().members.insert(ino);
        self.place(dir, ino);
        ino
    }

    /// Points an inode at a new remote object (after an upload or an update).
    pub fn set_entry(&mut self, ino: Ino, entry: Entry) {
        let Some(inode) = self.inodes.get_mut(&ino) else {
            return;
        };
        let old_key = inode.entry.id_key();
        let new_key = entry.id_key();
        let old_name = inode.entry.remote_name();
        inode.entry = entry;
        inode.refreshed = Instant::now();
        let parent = inode.parent;
        if old_key != new_key {
            if let Some(k) = old_key {
                self.by_id.remove(&k);
            }
            if let Some(k) = new_key {
                // A listing may have seen the new object first: fold that inode into this one.
                if let Some(other) = self.by_id.insert(k, ino) {
                    if other != ino {
                        self.detach(other);
                        self.inodes.remove(&other);
                    }
                }
            }
        }
        // Entries that shared the old name may change theirs (a duplicate gets the plain
        // name back); otherwise only this entry's name is computed again.
        if self.has_namesake(parent, ino, &old_name) {
            self.rename_all(parent);
        } else {
            self.place(parent, ino);
        }
    }

    /// Moves an inode to another directory (its remote object was moved or renamed).
    pub fn reparent(&mut self, ino: Ino, new_parent: Ino) {
        let Some(old_parent) = self.inodes.get(&ino).map(|i| i.parent) else {
            return;
        };
        self.take_out(old_parent, ino);
        self.dirs.entry(new_parent).or_default().members.insert(ino);
        if let Some(i) = self.inodes.get_mut(&ino) {
            i.parent = new_parent;
        }
        self.place(new_parent, ino);
    }

    /// Takes `ino` out of `dir`'s entries. The others are renamed only if one shares its
    /// remote name (a duplicate shown as `name~<id>` gets the plain name back).
    fn take_out(&mut self, dir: Ino, ino: Ino) {
        let Some(inode) = self.inodes.get(&ino) else {
            return;
        };
        let (name, shown) = (inode.entry.remote_name(), inode.name.clone());
        if let Some(d) = self.dirs.get_mut(&dir) {
            d.members.remove(&ino);
            if d.by_name.get(&shown) == Some(&ino) {
                d.by_name.remove(&shown);
            }
        }
        if self.has_namesake(dir, ino, &name) {
            self.rename_all(dir);
        }
    }

    /// Whether another entry of `dir` has the remote name `name`.
    fn has_namesake(&self, dir: Ino, ino: Ino, name: &str) -> bool {
        self.dirs.get(&dir).is_some_and(|d| {
            d.members.iter().any(|m| {
                *m != ino
                    && self
                        .inodes
                        .get(m)
                        .is_some_and(|i| i.entry.remote_name() == name)
            })
        })
    }

    /// Gives `ino`, a member of `dir`, its shown name. Creating a file in a large
    /// directory must not rename all its entries: only when another entry shares this
    /// one's remote or shown name does the whole directory get its names again.
    fn place(&mut self, dir: Ino, ino: Ino) {
        let Some(inode) = self.inodes.get(&ino) else {
            return;
        };
        if self.has_namesake(dir, ino, &inode.entry.remote_name()) {
            self.rename_all(dir);
            return;
        }
        let shown = names::assign_names(&[self.candidate(ino)])
            .pop()
            .expect("one name per entry");
        let old_shown = inode.name.clone();
        let d = self.dirs.entry(dir).or_default();
        if d.by_name.get(&shown).is_some_and(|o| *o != ino) {
            self.rename_all(dir);
            return;
        }
        if d.by_name.get(&old_shown) == Some(&ino) {
            d.by_name.remove(&old_shown);
        }
        d.by_name.insert(shown.clone(), ino);
        if let Some(i) = self.inodes.get_mut(&ino) {
            i.name = shown;
        }
    }

    /// Removes an entry from its directory (deleted). The inode itself stays while the
    /// kernel may still refer to it (open handles keep working on the remote id).
    pub fn remove(&mut self, ino: Ino) {
        let Some(parent) = self.inodes.get(&ino).map(|i| i.parent) else {
            return;
        };
        if let Some(k) = self.inodes[&ino].entry.id_key() {
            if self.by_id.get(&k) == Some(&ino) {
                self.by_id.remove(&k);
            }
        }
        self.take_out(parent, ino);
    }

    fn detach(&mut self, ino: Ino) {
        let Some(inode) = self.inodes.get(&ino) else {
            return;
        };
        let parent = inode.parent;
        if let Some(k) = inode.entry.id_key() {
            if self.by_id.get(&k) == Some(&ino) {
                self.by_id.remove(&k);
            }
        }
        if let Some(d) = self.dirs.get_mut(&parent) {
            if d.members.remove(&ino) {
                d.by_name.retain(|_, v| *v != ino);
            }
        }
    }

    /// Drops every cached listing (SIGHUP): the next access lists again.
    pub fn invalidate_all(&mut self) {
        for d in self.dirs.values_mut() {
            d.fetched = None;
        }
    }

    pub fn invalidate(&mut self, dir: Ino) {
        if let Some(d) = self.dirs.get_mut(&dir) {
            d.fetched = None;
        }
    }

    fn candidate(&self, ino: Ino) -> Candidate {
        let e = &self.inodes[&ino].entry;
        Candidate {
            id: e
                .id_key()
                .map(|k| k[2..].to_string())
                .unwrap_or_else(|| format!("local{ino:08}")),
            is_dir: e.is_dir(),
            remote_name: e.remote_name(),
            created_at: e.created_at(),
        }
    }

    /// Recomputes the shown names of a directory's entries (escaping + duplicate rule).
    fn rename_all(&mut self, dir: Ino) {
        let Some(d) = self.dirs.get(&dir) else { return };
        let mut inos: Vec<Ino> = d.members.iter().copied().collect();
        inos.sort_unstable();
        let cands: Vec<Candidate> = inos.iter().map(|i| self.candidate(*i)).collect();
        let shown = names::assign_names(&cands);
        let mut by_name = HashMap::with_capacity(inos.len());
        for (ino, name) in inos.into_iter().zip(shown) {
            by_name.insert(name.clone(), ino);
            if let Some(i) = self.inodes.get_mut(&ino) {
                i.name = name;
            }
        }
        self.dirs.get_mut(&dir).expect("dir exists").by_name = by_name;
    }

    /// Inodes with a staged copy whose upload target is (`dir`, `name`): used when a
    /// pending upload lands later.
    pub fn find_local(&self, dir: Ino, remote_name: &str) -> Option<Ino> {
        self.dirs.get(&dir)?.members.iter().copied().find(|i| {
            let inode = &self.inodes[i];
            matches!(&inode.entry, Entry::Local { name, .. } if name == remote_name)
        })
    }

    /// The directory inode of a folder id (`None` = root), if known.
    pub fn dir_of_folder(&self, folder_id: Option<&str>) -> Option<Ino> {
        match folder_id {
            None => Some(ROOT_INO),
            Some(id) => self.by_id.get(&format!("d:{id}")).copied(),
        }
    }

    /// Whether `ancestor` is `ino` or one of its parents (to refuse moving a folder into itself).
    pub fn is_ancestor(&self, ancestor: Ino, mut ino: Ino) -> bool {
        loop {
            if ino == ancestor {
                return true;
            }
            if ino == ROOT_INO {
                return false;
            }
            match self.inodes.get(&ino) {
                Some(i) => ino = i.parent,
                None => return false,
            }
        }
    }

    pub fn inode_count(&self) -> usize {
        self.inodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Upload;

    fn folder(id: &str, name: &str, parent: Option<&str>, created: &str) -> Folder {
        Folder {
            id: id.into(),
            name: name.into(),
            parent_id: parent.map(Into::into),
            created_at: Some(created.into()),
            updated_at: Some(created.into()),
        }
    }

    fn file(id: &str, title: &str, folder: Option<&str>, created: &str, size: u64) -> MediaFile {
        MediaFile {
            id: id.into(),
            upload_id: None,
            folder_id: folder.map(Into::into),
            title: Some(title.into()),
            description: None,
            alt_text: None,
            sort_order: None,
            is_favorite: None,
            is_private: None,
            created_at: Some(created.into()),
            updated_at: Some(created.into()),
            upload: Some(Upload {
                id: None,
                file_name: title.into(),
                file_size: size,
                file_url: None,
                mime_type: None,
            }),
        }
    }

    #[test]
    fn listing_assigns_stable_inodes_and_unique_names() {
        let mut ns = Namespace::new();
        let files = vec![
            file(
                "bbbbbbbb-2",
                "a.txt",
                None,
                "2026-01-02T00:00:00.000000Z",
                1,
            ),
            file(
                "aaaaaaaa-1",
                "a.txt",
                None,
                "2026-01-01T00:00:00.000000Z",
                2,
            ),
        ];
        ns.apply_listing(
            ROOT_INO,
            vec![folder(
                "cccccccc-3",
                "a.txt",
                None,
                "2026-01-03T00:00:00.000000Z",
            )],
            files.clone(),
        );
        // A folder beats files: it keeps the plain name and both files get an id suffix.
        let dir = ns.child(ROOT_INO, "a.txt").unwrap();
        assert!(ns.get(dir).unwrap().entry.is_dir());
        let names: Vec<String> = ns
            .children(ROOT_INO)
            .iter()
            .map(|i| i.name.clone())
            .collect();
        assert_eq!(names.len(), 3);
        assert!(names.contains(&"a~aaaaaaaa.txt".to_string()), "{names:?}");
        assert!(names.contains(&"a~bbbbbbbb.txt".to_string()), "{names:?}");
        // Relisting keeps inode numbers.
        let before = ns.child(ROOT_INO, "a~aaaaaaaa.txt").unwrap();
        ns.apply_listing(ROOT_INO, vec![], files);
        assert_eq!(
            ns.child(ROOT_INO, "a.txt"),
            Some(before),
            "oldest file now keeps the plain name"
        );
        assert!(ns.child(ROOT_INO, "a~bbbbbbbb.txt").is_some());
    }

    #[test]
    fn removed_remote_entries_disappear_but_local_ones_stay() {
        let mut ns = Namespace::new();
        ns.apply_listing(
            ROOT_INO,
            vec![],
            vec![file("f1", "x", None, "2026-01-01T00:00:00Z", 1)],
        );
        let local = ns.insert(
            ROOT_INO,
            Entry::Local {
                name: "new".into(),
                created: SystemTime::now(),
            },
        );
        ns.apply_listing(ROOT_INO, vec![], vec![]);
        assert_eq!(ns.child(ROOT_INO, "x"), None);
        assert_eq!(ns.child(ROOT_INO, "new"), Some(local));
        // Its upload lands: same inode, now remote.
        ns.set_entry(
            local,
            Entry::File(file("f2", "new", None, "2026-01-02T00:00:00Z", 3)),
        );
        ns.apply_listing(
            ROOT_INO,
            vec![],
            vec![file("f2", "new", None, "2026-01-02T00:00:00Z", 3)],
        );
        assert_eq!(ns.child(ROOT_INO, "new"), Some(local));
        assert_eq!(ns.children(ROOT_INO).len(), 1);
    }

    #[test]
    fn objects_moved_remotely_keep_their_inode() {
        let mut ns = Namespace::new();
        ns.apply_listing(
            ROOT_INO,
            vec![folder("d1", "dir", None, "2026-01-01T00:00:00Z")],
            vec![file("f1", "x", None, "2026-01-01T00:00:00Z", 1)],
        );
        let dir = ns.child(ROOT_INO, "dir").unwrap();
        let x = ns.child(ROOT_INO, "x").unwrap();
        ns.apply_listing(
            dir,
            vec![],
            vec![file("f1", "x", Some("d1"), "2026-01-01T00:00:00Z", 1)],
        );
        assert_eq!(ns.child(dir, "x"), Some(x));
        assert_eq!(ns.child(ROOT_INO, "x"), None);
        assert!(ns.is_ancestor(ROOT_INO, x));
        assert!(!ns.is_ancestor(x, dir));
    }

    #[test]
    fn escaped_names_are_shown() {
        let mut ns = Namespace::new();
        ns.apply_listing(
            ROOT_INO,
            vec![folder("d1", "AC/DC", None, "2026-01-01T00:00:00Z")],
            vec![],
        );
        assert!(ns.child(ROOT_INO, "AC\u{2215}DC").is_some());
    }

    #[test]
    fn freshness_follows_ttl_and_invalidation() {
        let mut ns = Namespace::new();
        assert!(!ns.is_fresh(ROOT_INO, Duration::from_secs(10)));
        ns.apply_listing(ROOT_INO, vec![], vec![]);
        assert!(ns.is_fresh(ROOT_INO, Duration::from_secs(10)));
        ns.invalidate_all();
        assert!(!ns.is_fresh(ROOT_INO, Duration::from_secs(10)));
        assert!(!ns.has_listing(ROOT_INO));
    }
}
