//! The inode table: which remote object each inode is, the cached listing of each
//! directory, the names shown for them (see [`super::names`]), and what references each
//! inode (the kernel's lookup count, open handles, a staged copy).
//!
//! Pure data, no I/O: the superblock does the remote calls and applies their results here
//! under one lock, which is never held across an `.await`.
//!
//! A listing is fetched without the lock, so the mount may change the directory meanwhile
//! (a delete, a rename, an upload that lands). Such a change stamps its inode, and a
//! removed object's id is kept while listings are in flight; a listing taken before a
//! change leaves what that change made alone ([`Namespace::apply_listing_since`]).
//!
//! Memory follows what the kernel references: an inode nobody references (lookup count 0,
//! not open, nothing staged) is dropped once it is no longer an entry of a listing, and a
//! directory the kernel forgot drops its listing when nothing in it is referenced. Inode
//! numbers are stable for an object while it is referenced (remote id → inode map).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fs::entry::{Entry, FileEntry, FolderEntry};
use crate::fs::local_attrs::Stored;
use crate::fs::names::{self, Candidate};
use crate::fs::write::StagedFile;

pub type Ino = u64;
pub const ROOT_INO: Ino = 1;

/// One member more with remote name `name` (a key is allocated only for a new name).
fn count(counts: &mut HashMap<String, u32>, name: &str) {
    match counts.get_mut(name) {
        Some(n) => *n += 1,
        None => {
            counts.insert(name.to_string(), 1);
        }
    }
}

/// One member fewer with remote name `name`.
fn uncount(counts: &mut HashMap<String, u32>, name: &str) {
    if let Some(n) = counts.get_mut(name) {
        *n -= 1;
        if *n == 0 {
            counts.remove(name);
        }
    }
}

/// Key under which the remote id is indexed (folders and files are separate id spaces).
fn id_key(e: &Entry) -> Option<String> {
    match e {
        Entry::Folder(f) => Some(format!("d:{}", f.id)),
        Entry::File(f) => Some(format!("f:{}", f.id)),
        _ => None,
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
    /// Local attributes set while the inode has no remote object to key them by (not
    /// uploaded yet, or changes not uploaded): stored under the new id when it lands.
    pub local: Stored,
    /// The kernel's lookup count: entries handed out by lookup, create, mkdir and
    /// readdirplus, minus those it forgot.
    lookups: u64,
    /// Open file handles.
    opens: u32,
    /// The mount wrote or moved this entry under its plain name ([`Candidate::claimed`]).
    claimed: bool,
    /// When the mount last changed this entry (a [`Namespace::begin_listing`] mark): a
    /// listing taken before that does not undo the change.
    changed: u64,
}

impl Inode {
    fn new(ino: Ino, parent: Ino, entry: Entry, now: Instant) -> Inode {
        Inode {
            ino,
            parent,
            name: String::new(),
            entry,
            refreshed: now,
            staged: None,
            last_open_id: None,
            local: Stored::default(),
            lookups: 0,
            opens: 0,
            claimed: false,
            changed: 0,
        }
    }

    /// Nothing holds it: the kernel forgot it, no handle is open, nothing is staged.
    fn unreferenced(&self) -> bool {
        self.ino != ROOT_INO && self.lookups == 0 && self.opens == 0 && self.staged.is_none()
    }
}

#[derive(Debug, Default)]
struct Dir {
    members: HashSet<Ino>,
    by_name: HashMap<String, Ino>,
    /// How many members have each remote name: finding a namesake is O(1), not a walk of
    /// the directory at every create (kept by `add_member`, `remove_member`, `set_inode_entry`).
    remote_names: HashMap<String, u32>,
    /// How many members are directories (the link count), kept like `remote_names`.
    subdirs: u32,
    /// When the listing was last fetched; `None` = never or invalidated.
    fetched: Option<Instant>,
}

#[derive(Debug)]
pub struct Namespace {
    inodes: HashMap<Ino, Inode>,
    by_id: HashMap<String, Ino>,
    dirs: HashMap<Ino, Dir>,
    next_ino: Ino,
    /// Changes made through the mount so far (the clock of `Inode::changed`).
    changes: u64,
    /// Marks of the listings being fetched now.
    listings: Vec<u64>,
    /// Remote objects the mount removed while listings were in flight (id key → change):
    /// a listing taken before the removal must not bring them back.
    buried: HashMap<String, u64>,
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
            changes: 0,
            listings: Vec::new(),
            buried: HashMap::new(),
        };
        ns.inodes.insert(
            ROOT_INO,
            Inode::new(ROOT_INO, ROOT_INO, Entry::Root, Instant::now()),
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

    /// How many of `dir`'s entries are directories (`None` while it is not listed).
    pub fn subdirs(&self, dir: Ino) -> Option<u32> {
        self.dirs
            .get(&dir)
            .filter(|d| d.fetched.is_some() || !d.members.is_empty())
            .map(|d| {
                debug_assert_eq!(
                    d.subdirs as usize,
                    d.members
                        .iter()
                        .filter(|m| self.inodes.get(m).is_some_and(|i| i.entry.is_dir()))
                        .count()
                );
                d.subdirs
            })
    }

    pub fn is_empty_dir(&self, dir: Ino) -> bool {
        self.dirs.get(&dir).is_none_or(|d| d.members.is_empty())
    }

    // ----- references -----------------------------------------------------------------

    /// The kernel got `ino` (lookup, create, mkdir, a readdirplus entry): one more
    /// reference. False if the inode is gone (it is then not handed out).
    pub fn remember(&mut self, ino: Ino) -> bool {
        match self.inodes.get_mut(&ino) {
            Some(i) => {
                i.lookups += 1;
                true
            }
            None => false,
        }
    }

    /// FUSE `forget`: the kernel dropped `n` references to `ino`.
    pub fn forget(&mut self, ino: Ino, n: u64) {
        let Some(inode) = self.inodes.get_mut(&ino) else {
            return;
        };
        inode.lookups = inode.lookups.saturating_sub(n);
        self.collect_up(ino);
    }

    /// A handle of `ino` was opened: it stays while the handle is open.
    pub fn opened(&mut self, ino: Ino) {
        if let Some(i) = self.inodes.get_mut(&ino) {
            i.opens += 1;
        }
    }

    /// A handle of `ino` was closed.
    pub fn closed(&mut self, ino: Ino) {
        if let Some(i) = self.inodes.get_mut(&ino) {
            i.opens = i.opens.saturating_sub(1);
        }
        self.collect_up(ino);
    }

    /// The staged copy of `ino` is done with (uploaded, or released clean), if it is still
    /// `staged`.
    pub fn unstage(&mut self, ino: Ino, staged: &Arc<StagedFile>) {
        if let Some(i) = self.inodes.get_mut(&ino) {
            if i.staged.as_ref().is_some_and(|s| Arc::ptr_eq(s, staged)) {
                i.staged = None;
            }
        }
        self.collect_up(ino);
    }

    /// Lookup counts of the inodes, for tests.
    #[cfg(test)]
    pub fn lookups(&self, ino: Ino) -> Option<u64> {
        self.inodes.get(&ino).map(|i| i.lookups)
    }

    /// [`Self::collect`] for `ino`, then for its directory: the kernel may forget a
    /// directory before its entries (or close them later), and the last entry to go lets
    /// the directory's listing go too.
    fn collect_up(&mut self, ino: Ino) {
        let parent = self.inodes.get(&ino).map(|i| i.parent);
        self.collect(ino);
        if let Some(p) = parent.filter(|p| *p != ino) {
            if self.inodes.get(&p).is_some_and(Inode::unreferenced) {
                self.collect(p);
            }
        }
    }

    /// Frees what nobody references: an unreferenced inode that is no entry of a listing
    /// goes entirely; an unreferenced directory drops its listing when nothing in it is
    /// referenced either (it is listed again when the kernel comes back).
    fn collect(&mut self, ino: Ino) {
        if !self.inodes.get(&ino).is_some_and(Inode::unreferenced) {
            return;
        }
        if self.dirs.contains_key(&ino) {
            if !self.subtree_unreferenced(ino) {
                return;
            }
            self.drop_listing(ino);
        }
        if !self.attached(ino) {
            self.drop_inode(ino);
        }
    }

    /// Whether `ino` still has a name (not unlinked or replaced while open).
    pub fn is_linked(&self, ino: Ino) -> bool {
        ino == ROOT_INO || (self.inodes.contains_key(&ino) && self.attached(ino))
    }

    /// Whether `ino` is an entry of its parent's listing.
    fn attached(&self, ino: Ino) -> bool {
        let parent = self.inodes[&ino].parent;
        self.dirs
            .get(&parent)
            .is_some_and(|d| d.members.contains(&ino))
    }

    fn subtree_unreferenced(&self, dir: Ino) -> bool {
        self.dirs.get(&dir).is_none_or(|d| {
            d.members.iter().all(|m| {
                self.inodes
                    .get(m)
                    .is_none_or(|i| i.unreferenced() && self.subtree_unreferenced(*m))
            })
        })
    }

    /// Drops `dir`'s listing and every inode in it (all unreferenced: checked by the caller).
    fn drop_listing(&mut self, dir: Ino) {
        let Some(d) = self.dirs.remove(&dir) else {
            return;
        };
        for m in d.members {
            self.drop_listing(m);
            self.drop_inode(m);
        }
    }

    fn drop_inode(&mut self, ino: Ino) {
        if let Some(inode) = self.inodes.remove(&ino) {
            if let Some(k) = id_key(&inode.entry) {
                if self.by_id.get(&k) == Some(&ino) {
                    self.by_id.remove(&k);
                }
            }
        }
        self.dirs.remove(&ino);
    }

    // ----- listings and changes -------------------------------------------------------

    /// Replaces what is known of `dir` with a fresh listing. Local entries (uploads not yet
    /// landed) stay. Objects that moved here from another directory move their inode.
    pub fn apply_listing<D: Into<FolderEntry>, F: Into<FileEntry>>(
        &mut self,
        dir: Ino,
        folders: Vec<D>,
        files: Vec<F>,
    ) {
        self.apply_listing_since(dir, self.changes, folders, files);
    }

    /// Starts fetching a listing: its mark, for [`Namespace::apply_listing_since`]. Every
    /// mark must be ended with [`Namespace::end_listing`].
    pub fn begin_listing(&mut self) -> u64 {
        self.listings.push(self.changes);
        self.changes
    }

    pub fn end_listing(&mut self, mark: u64) {
        if let Some(i) = self.listings.iter().position(|&m| m == mark) {
            self.listings.swap_remove(i);
        }
        match self.listings.iter().min() {
            Some(&oldest) => self.buried.retain(|_, &mut c| c > oldest),
            None => self.buried.clear(),
        }
    }

    /// Applies a listing fetched after `mark`: what the mount changed after the mark stays
    /// as the mount made it (removed objects stay removed, renamed or moved ones keep their
    /// new place, landed uploads stay), the rest follows the listing.
    pub fn apply_listing_since<D: Into<FolderEntry>, F: Into<FileEntry>>(
        &mut self,
        dir: Ino,
        mark: u64,
        folders: Vec<D>,
        files: Vec<F>,
    ) {
        if !self.inodes.contains_key(&dir) {
            return; // forgotten while the listing was fetched
        }
        let now = Instant::now();
        let mut members: HashSet<Ino> = HashSet::new();
        let entries = folders
            .into_iter()
            .map(|f| Entry::Folder(f.into()))
            .chain(files.into_iter().map(|f| Entry::File(f.into())));
        // Nothing changed through the mount while the listing was fetched (the usual case):
        // no entry needs the checks below.
        let overtaken = mark < self.changes;
        for entry in entries {
            let key = id_key(&entry).expect("remote entries have ids");
            if overtaken {
                if self.buried.get(&key).is_some_and(|&c| c > mark) {
                    continue;
                }
                if let Some(&ino) = self.by_id.get(&key) {
                    let inode = &self.inodes[&ino];
                    if inode.changed > mark {
                        if inode.parent == dir && self.attached(ino) {
                            members.insert(ino);
                        }
                        continue;
                    }
                }
            }
            let ino = self.upsert(dir, key, entry, now);
            members.insert(ino);
        }
        // Keep entries only we know of: files being written or waiting to upload.
        let old: Vec<Ino> = self
            .dirs
            .get(&dir)
            .map(|d| d.members.iter().copied().collect())
            .unwrap_or_default();
        let mut gone = Vec::new();
        for ino in old {
            if members.contains(&ino) {
                continue;
            }
            let keep = self
                .inodes
                .get(&ino)
                .is_some_and(|i| matches!(i.entry, Entry::Local { .. }) || i.changed > mark);
            if keep {
                members.insert(ino);
            } else {
                self.detach(ino);
                gone.push(ino);
            }
        }
        let mut remote_names: HashMap<String, u32> = HashMap::with_capacity(members.len());
        let mut subdirs = 0;
        for m in &members {
            if let Some(i) = self.inodes.get(m) {
                count(&mut remote_names, i.entry.remote_name());
                subdirs += u32::from(i.entry.is_dir());
            }
        }
        let d = self.dirs.entry(dir).or_default();
        d.members = members;
        d.remote_names = remote_names;
        d.subdirs = subdirs;
        d.fetched = Some(now);
        self.rename_all(dir);
        for ino in gone {
            self.collect(ino);
        }
    }

    /// Inserts or updates the inode of a remote object (`key`: its [`id_key`]) under `dir`
    /// (without renaming the directory's entries: callers do that once at the end).
    fn upsert(&mut self, dir: Ino, key: String, entry: Entry, now: Instant) -> Ino {
        if let Some(&ino) = self.by_id.get(&key) {
            let old_parent = self.inodes[&ino].parent;
            if old_parent != dir {
                self.take_out(old_parent, ino);
            }
            let inode = self.inodes.get_mut(&ino).expect("indexed inode exists");
            inode.parent = dir;
            inode.refreshed = now;
            self.set_inode_entry(ino, entry);
            return ino;
        }
        let ino = self.alloc(dir, entry, now);
        self.by_id.insert(key, ino);
        ino
    }

    fn alloc(&mut self, parent: Ino, entry: Entry, now: Instant) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, Inode::new(ino, parent, entry, now));
        ino
    }

    /// Adds an object that the mount itself just created; returns its inode.
    pub fn insert(&mut self, dir: Ino, entry: Entry) -> Ino {
        let ino = match id_key(&entry) {
            Some(key) => self.upsert(dir, key, entry, Instant::now()),
            None => self.alloc(dir, entry, Instant::now()),
        };
        self.stamp(ino);
        self.add_member(dir, ino);
        self.place(dir, ino);
        ino
    }

    /// Points an inode at a new remote object (after an upload or an update).
    pub fn set_entry(&mut self, ino: Ino, entry: Entry) {
        let Some(inode) = self.inodes.get_mut(&ino) else {
            return;
        };
        let old_key = id_key(&inode.entry);
        let new_key = id_key(&entry);
        let old_name = inode.entry.remote_name().to_string();
        inode.refreshed = Instant::now();
        let parent = inode.parent;
        self.set_inode_entry(ino, entry);
        self.stamp(ino);
        if old_key != new_key {
            if let Some(k) = old_key {
                self.by_id.remove(&k);
                self.bury(k);
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
        if let Some(i) = self.inodes.get_mut(&ino) {
            i.parent = new_parent;
        }
        self.stamp(ino);
        self.add_member(new_parent, ino);
        self.place(new_parent, ino);
    }

    /// Takes `ino` out of `dir`'s entries. The others are renamed only if one shares its
    /// remote name (a duplicate shown as `name~<id>` gets the plain name back).
    fn take_out(&mut self, dir: Ino, ino: Ino) {
        let Some(inode) = self.inodes.get(&ino) else {
            return;
        };
        let (name, shown) = (inode.entry.remote_name().to_string(), inode.name.clone());
        self.remove_member(dir, ino);
        if let Some(d) = self.dirs.get_mut(&dir) {
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
        let Some(d) = self.dirs.get(&dir) else {
            return false;
        };
        let mut n = d.remote_names.get(name).copied().unwrap_or(0);
        if d.members.contains(&ino)
            && self
                .inodes
                .get(&ino)
                .is_some_and(|i| i.entry.remote_name() == name)
        {
            n = n.saturating_sub(1);
        }
        debug_assert_eq!(
            n > 0,
            d.members.iter().any(|m| *m != ino
                && self
                    .inodes
                    .get(m)
                    .is_some_and(|i| i.entry.remote_name() == name)),
            "the count of remote names of directory {dir} is off for {name:?}"
        );
        n > 0
    }

    /// Gives `ino`, a member of `dir`, its shown name. Creating a file in a large
    /// directory must not rename all its entries: only when another entry shares this
    /// one's remote or shown name does the whole directory get its names again.
    fn place(&mut self, dir: Ino, ino: Ino) {
        let Some(inode) = self.inodes.get(&ino) else {
            return;
        };
        if self.has_namesake(dir, ino, inode.entry.remote_name()) {
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

    /// Makes `ino` a member of `dir` (its `parent` must be `dir`).
    fn add_member(&mut self, dir: Ino, ino: Ino) {
        let d = self.dirs.entry(dir).or_default();
        if d.members.insert(ino) {
            if let Some(i) = self.inodes.get(&ino) {
                count(&mut d.remote_names, i.entry.remote_name());
                d.subdirs += u32::from(i.entry.is_dir());
            }
        }
    }

    /// Takes `ino` out of `dir`'s members; returns whether it was one.
    fn remove_member(&mut self, dir: Ino, ino: Ino) -> bool {
        let Some(d) = self.dirs.get_mut(&dir) else {
            return false;
        };
        if !d.members.remove(&ino) {
            return false;
        }
        if let Some(i) = self.inodes.get(&ino) {
            uncount(&mut d.remote_names, i.entry.remote_name());
            d.subdirs -= u32::from(i.entry.is_dir());
        }
        true
    }

    /// Gives `ino` a new entry, keeping its directory's count of remote names.
    fn set_inode_entry(&mut self, ino: Ino, entry: Entry) {
        let Some(inode) = self.inodes.get_mut(&ino) else {
            return;
        };
        let parent = inode.parent;
        let old = std::mem::replace(&mut inode.entry, entry);
        let new_name = inode.entry.remote_name();
        let is_dir = inode.entry.is_dir();
        if old.remote_name() == new_name && old.is_dir() == is_dir {
            return;
        }
        if let Some(d) = self.dirs.get_mut(&parent) {
            if d.members.contains(&ino) {
                uncount(&mut d.remote_names, old.remote_name());
                count(&mut d.remote_names, new_name);
                d.subdirs = d.subdirs + u32::from(is_dir) - u32::from(old.is_dir());
            }
        }
    }

    /// The mount changed `ino`: listings taken before now leave it alone.
    fn stamp(&mut self, ino: Ino) {
        self.changes += 1;
        if let Some(i) = self.inodes.get_mut(&ino) {
            i.changed = self.changes;
        }
    }

    /// The mount removed the remote object `key`: listings in flight must not bring it back.
    fn bury(&mut self, key: String) {
        if !self.listings.is_empty() {
            self.changes += 1;
            self.buried.insert(key, self.changes);
        }
    }

    /// Removes an entry from its directory (deleted). The inode itself stays while the
    /// kernel may still refer to it (open handles keep working on the remote id).
    pub fn remove(&mut self, ino: Ino) {
        let Some(parent) = self.inodes.get(&ino).map(|i| i.parent) else {
            return;
        };
        if let Some(k) = id_key(&self.inodes[&ino].entry) {
            if self.by_id.get(&k) == Some(&ino) {
                self.by_id.remove(&k);
            }
            self.bury(k);
        }
        self.stamp(ino);
        self.take_out(parent, ino);
        self.collect(ino);
    }

    fn detach(&mut self, ino: Ino) {
        let Some(inode) = self.inodes.get(&ino) else {
            return;
        };
        let parent = inode.parent;
        if let Some(k) = id_key(&inode.entry) {
            if self.by_id.get(&k) == Some(&ino) {
                self.by_id.remove(&k);
            }
        }
        if self.remove_member(parent, ino) {
            if let Some(d) = self.dirs.get_mut(&parent) {
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
                .id()
                .map(str::to_string)
                .unwrap_or_else(|| format!("local{ino:08}")),
            is_dir: e.is_dir(),
            remote_name: e.remote_name().to_string(),
            created_at: e.created_at(),
            claimed: self.inodes[&ino].claimed,
        }
    }

    /// The mount wrote or moved `ino` under the name `shown`: if that is its plain name and
    /// a namesake competes for it, `ino` keeps it over older namesakes (SEMANTICS.md: the
    /// plain name shows what was written or moved there) while the mount runs. Without a
    /// namesake there is nothing to decide (and no folder-wide renaming on every upload).
    pub fn claim_name(&mut self, ino: Ino, shown: &str) {
        let Some(inode) = self.inodes.get(&ino) else {
            return;
        };
        let parent = inode.parent;
        if inode.claimed
            || !self.has_namesake(parent, ino, inode.entry.remote_name())
            || names::base_name(&self.candidate(ino)) != shown
        {
            return;
        }
        self.inodes.get_mut(&ino).expect("checked above").claimed = true;
        self.rename_all(parent);
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
    use std::time::SystemTime;

    use super::*;
    use crate::api::{Folder, MediaFile, Upload};

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
        ns.apply_listing(ROOT_INO, Vec::<Folder>::new(), files);
        assert_eq!(
            ns.child(ROOT_INO, "a.txt"),
            Some(before),
            "oldest file now keeps the plain name"
        );
        assert!(ns.child(ROOT_INO, "a~bbbbbbbb.txt").is_some());
    }

    #[test]
    fn a_listing_older_than_a_removal_does_not_undo_it_and_the_removal_is_then_forgotten() {
        let mut ns = Namespace::new();
        let t = "2026-01-01T00:00:00Z";
        let listing = || vec![file("f1", "a", None, t, 1), file("f2", "b", None, t, 1)];
        ns.apply_listing(ROOT_INO, Vec::<Folder>::new(), listing());
        let mark = ns.begin_listing();
        let a = ns.child(ROOT_INO, "a").unwrap();
        ns.remove(a);
        ns.apply_listing_since(ROOT_INO, mark, Vec::<Folder>::new(), listing());
        assert_eq!(ns.child(ROOT_INO, "a"), None);
        assert!(ns.child(ROOT_INO, "b").is_some());
        ns.end_listing(mark);
        assert!(
            ns.buried.is_empty(),
            "kept only while listings are in flight"
        );
        // A listing taken after the removal that has the object again is believed.
        ns.apply_listing(ROOT_INO, Vec::<Folder>::new(), listing());
        assert!(ns.child(ROOT_INO, "a").is_some());
        // With no listing in flight, nothing is kept of a removal.
        let a = ns.child(ROOT_INO, "a").unwrap();
        ns.remove(a);
        assert!(ns.buried.is_empty());
    }

    #[test]
    fn removed_remote_entries_disappear_but_local_ones_stay() {
        let mut ns = Namespace::new();
        ns.apply_listing(
            ROOT_INO,
            Vec::<Folder>::new(),
            vec![file("f1", "x", None, "2026-01-01T00:00:00Z", 1)],
        );
        let local = ns.insert(
            ROOT_INO,
            Entry::Local {
                name: "new".into(),
                created: SystemTime::now(),
            },
        );
        ns.apply_listing(ROOT_INO, Vec::<Folder>::new(), Vec::<MediaFile>::new());
        assert_eq!(ns.child(ROOT_INO, "x"), None);
        assert_eq!(ns.child(ROOT_INO, "new"), Some(local));
        // Its upload lands: same inode, now remote.
        ns.set_entry(
            local,
            Entry::file(file("f2", "new", None, "2026-01-02T00:00:00Z", 3)),
        );
        ns.apply_listing(
            ROOT_INO,
            Vec::<Folder>::new(),
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
            Vec::<Folder>::new(),
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
            Vec::<MediaFile>::new(),
        );
        assert!(ns.child(ROOT_INO, "AC\u{2215}DC").is_some());
    }

    #[test]
    fn freshness_follows_ttl_and_invalidation() {
        let mut ns = Namespace::new();
        assert!(!ns.is_fresh(ROOT_INO, Duration::from_secs(10)));
        ns.apply_listing(ROOT_INO, Vec::<Folder>::new(), Vec::<MediaFile>::new());
        assert!(ns.is_fresh(ROOT_INO, Duration::from_secs(10)));
        ns.invalidate_all();
        assert!(!ns.is_fresh(ROOT_INO, Duration::from_secs(10)));
        assert!(!ns.has_listing(ROOT_INO));
    }

    fn tree() -> (Namespace, Ino, Ino) {
        let mut ns = Namespace::new();
        ns.apply_listing(
            ROOT_INO,
            vec![folder("d1", "dir", None, "2026-01-01T00:00:00Z")],
            Vec::<MediaFile>::new(),
        );
        let dir = ns.child(ROOT_INO, "dir").unwrap();
        ns.remember(dir);
        ns.apply_listing(
            dir,
            Vec::<Folder>::new(),
            vec![
                file("f1", "x", Some("d1"), "2026-01-01T00:00:00Z", 1),
                file("f2", "y", Some("d1"), "2026-01-01T00:00:00Z", 2),
            ],
        );
        let x = ns.child(dir, "x").unwrap();
        ns.remember(x);
        (ns, dir, x)
    }

    #[test]
    fn a_forgotten_directory_drops_its_listing_and_comes_back_as_the_same_object() {
        let (mut ns, dir, x) = tree();
        assert_eq!(ns.inode_count(), 4);
        ns.forget(x, 1);
        assert!(
            ns.get(x).is_some(),
            "still an entry of a referenced listing"
        );
        ns.forget(dir, 1);
        assert!(ns.get(x).is_none(), "the listing of a forgotten dir goes");
        assert_eq!(
            ns.inode_count(),
            2,
            "root and the dir entry of the root listing"
        );
        assert!(!ns.has_listing(dir));
        // Looked up again: the same folder, the same inode; its files listed anew.
        assert_eq!(ns.child(ROOT_INO, "dir"), Some(dir));
        ns.remember(dir);
        ns.apply_listing(
            dir,
            Vec::<Folder>::new(),
            vec![file("f1", "x", Some("d1"), "2026-01-01T00:00:00Z", 1)],
        );
        let x2 = ns.child(dir, "x").unwrap();
        assert_eq!(ns.get(x2).unwrap().entry.id(), Some("f1"));
    }

    #[test]
    fn forgetting_the_directory_first_waits_for_its_entries() {
        let (mut ns, dir, x) = tree();
        ns.forget(dir, 1);
        assert!(ns.get(x).is_some(), "x is still referenced");
        assert_eq!(ns.lookups(x), Some(1));
        ns.forget(x, 1);
        assert!(ns.get(x).is_none());
        assert!(!ns.has_listing(dir));
        assert!(ns.get(dir).is_some());
    }

    #[test]
    fn open_or_staged_entries_survive_forget_and_removal() {
        let (mut ns, dir, x) = tree();
        ns.opened(x);
        ns.remove(x);
        ns.forget(x, 1);
        assert!(ns.get(x).is_some(), "open: survives forget after unlink");
        ns.forget(dir, 1);
        ns.closed(x);
        assert!(ns.get(x).is_none(), "closed, forgotten and unlinked: gone");
    }

    #[test]
    fn lookups_count_up_and_forget_counts_down() {
        let (mut ns, dir, x) = tree();
        ns.remember(x);
        ns.forget(x, 1);
        ns.forget(dir, 1);
        assert_eq!(ns.lookups(x), Some(1), "one reference left");
        ns.forget(x, 1);
        assert!(ns.get(x).is_none());
        assert!(!ns.remember(x), "a dropped inode is not handed out");
        ns.forget(x, 1); // a forget for an unknown inode is ignored
    }

    #[test]
    fn entries_removed_remotely_and_unreferenced_are_freed() {
        let (mut ns, dir, _x) = tree();
        let y = ns.child(dir, "y").unwrap();
        ns.apply_listing(
            dir,
            Vec::<Folder>::new(),
            vec![file("f1", "x", Some("d1"), "2026-01-01T00:00:00Z", 1)],
        );
        assert!(ns.get(y).is_none());
        assert_eq!(ns.inode_count(), 3);
    }
}
