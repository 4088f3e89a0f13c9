//! The superblock: the namespace ([`Namespace`]) behind its one lock, the listings and
//! their freshness, and the namespace transactions (mkdir, unlink, rmdir, rename).
//!
//! Lock discipline: the namespace lock is never held across an `.await`. A transaction
//! plans under the lock (resolve names, check types and emptiness), makes its remote call
//! without it, then applies the result under the lock in one step, checking again what
//! may have changed meanwhile.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::api::{ApiErrorKind, FileUpdate, FolderUpdate, MediaClient, MediaFile, Parent};
use crate::err;
use crate::fs::attr::{self, Attr, Caller, Change, DirEntry};
use crate::fs::config::FsConfig;
use crate::fs::entry::{Entry, FileEntry, FolderEntry};
use crate::fs::error::{Error, Result};
use crate::fs::local_attrs::{LocalAttrs, Stored};
use crate::fs::name_taken;
use crate::fs::names;
use crate::fs::namespace::{Ino, Inode, Namespace};
use crate::fs::read::Reader;
use crate::fs::readers::OpenReaders;
use crate::fs::write::{Deletes, Landed, StagedFile};

pub struct Superblock {
    ns: Mutex<Namespace>,
    client: Arc<dyn MediaClient>,
    reader: Arc<Reader>,
    readers: Arc<OpenReaders>,
    /// One listing at a time per directory: concurrent lookups wait for it instead of listing too.
    listing_locks: Mutex<HashMap<Ino, Arc<tokio::sync::Mutex<()>>>>,
    config: FsConfig,
    /// Mode, owner and times set on this machine, by remote id (`None`: memory only).
    attrs: Option<LocalAttrs>,
    /// The root's time until something changes in it (the service keeps none for it).
    mounted: std::time::SystemTime,
    /// Deletes deferred to the last reader, recorded durably (`None`: read-only).
    deletes: Option<Arc<Deletes>>,
}

/// The key of an entry's local attributes: folders and files are separate id spaces.
fn attr_key(e: &Entry) -> Option<String> {
    match e {
        Entry::Root => Some("root".into()),
        Entry::Folder(f) => Some(format!("d:{}", f.id)),
        Entry::File(f) => Some(format!("f:{}", f.id)),
        Entry::Local { .. } => None,
    }
}

fn db_error(e: rusqlite::Error) -> Error {
    err!(Io, "local attributes database: {e}")
}

/// What a rename does, decided under the lock.
struct RenamePlan {
    ino: Ino,
    entry: Entry,
    staged: Option<Arc<StagedFile>>,
    /// The entry it replaces.
    target: Option<Ino>,
    new_folder: Option<String>,
}

enum Planned {
    Go(Box<RenamePlan>),
    /// Renaming an entry onto itself.
    Nothing,
    /// The target directory's listing is needed to tell whether it is empty.
    List(Ino),
}

fn utf8(name: &OsStr) -> Result<&str> {
    name.to_str()
        .ok_or_else(|| err!(NotFound, "non-UTF-8 name"))
}

impl Superblock {
    pub fn new(
        client: Arc<dyn MediaClient>,
        reader: Arc<Reader>,
        readers: Arc<OpenReaders>,
        config: FsConfig,
        attrs: Option<LocalAttrs>,
        deletes: Option<Arc<Deletes>>,
    ) -> Self {
        Superblock {
            ns: Mutex::new(Namespace::new()),
            client,
            reader,
            readers,
            listing_locks: Mutex::new(HashMap::new()),
            config,
            attrs,
            mounted: std::time::SystemTime::now(),
            deletes,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Namespace> {
        self.ns.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn config(&self) -> &FsConfig {
        &self.config
    }

    pub fn client(&self) -> &Arc<dyn MediaClient> {
        &self.client
    }

    pub fn attr(&self, ino: Ino) -> Result<Attr> {
        let ns = self.lock();
        let inode = ns
            .get(ino)
            .ok_or_else(|| err!(NotFound, "unknown inode {ino}"))?;
        Ok(self.attr_of(&ns, inode))
    }

    /// What is stored locally for `inode`: the row of its remote object, with what is held
    /// in memory on top. While it has changes not uploaded, a stored mtime is the old
    /// version's and does not apply.
    fn stored(&self, inode: &Inode) -> Stored {
        let row = match (&self.attrs, attr_key(&inode.entry)) {
            (Some(a), Some(k)) => a.get(&k),
            _ => Stored::default(),
        };
        let mut s = row.merged(&inode.local);
        if inode.staged.as_ref().is_some_and(|s| s.is_dirty()) {
            s.mtime = inode.local.mtime;
        }
        if matches!(inode.entry, Entry::Root) {
            s.mtime.get_or_insert(self.mounted);
            s.ctime.get_or_insert(self.mounted);
        }
        s
    }

    pub fn attr_of(&self, ns: &Namespace, inode: &Inode) -> Attr {
        let nlink = if inode.entry.is_dir() {
            ns.subdirs(inode.ino).map_or(1, |n| 2u32.saturating_add(n))
        } else if ns.is_linked(inode.ino) {
            1
        } else {
            0 // unlinked while open
        };
        attr::of(inode, &self.config, &self.stored(inode), nlink)
    }

    /// An entry of `dir` was created, removed or renamed through the mount: its mtime and
    /// ctime move to now, stored like a `touch` so they survive a remount.
    pub fn dir_changed(&self, dir: Ino) {
        let now = std::time::SystemTime::now();
        let update = Stored {
            mtime: Some(now),
            ctime: Some(now),
            ..Default::default()
        };
        let mut ns = self.lock();
        let Some(inode) = ns.get_mut(dir) else { return };
        match (&self.attrs, attr_key(&inode.entry)) {
            (Some(a), Some(k)) => {
                a.set_soon(&k, &update);
            }
            _ => inode.local = inode.local.merged(&update),
        }
    }

    /// Writes the directory times [`Superblock::dir_changed`] kept in memory.
    pub fn flush_attrs(&self) {
        if let Some(a) = &self.attrs {
            if let Err(e) = a.flush() {
                warn!(error = %e, "could not store directory times");
            }
        }
    }

    /// chmod, chown, utimens: checked as a local disk does (the owner changes mode and
    /// times, only root gives a file away), then stored under the remote id, or in memory
    /// while the file has no remote version of its current bytes.
    pub fn set_attrs(&self, ino: Ino, change: &Change, caller: Caller) -> Result<Attr> {
        let mut ns = self.lock();
        let inode = ns
            .get(ino)
            .ok_or_else(|| err!(NotFound, "unknown inode {ino}"))?;
        if change.is_empty() {
            return Ok(self.attr_of(&ns, inode));
        }
        let now = std::time::SystemTime::now();
        let shown = self.attr_of(&ns, inode);
        let root = caller.uid == 0;
        let owner = root || caller.uid == shown.uid;
        let explicit_time = matches!(change.atime, Some(attr::SetTime::At(_)))
            || matches!(change.mtime, Some(attr::SetTime::At(_)));
        if (change.mode.is_some() || explicit_time) && !owner {
            return Err(err!(
                NotPermitted,
                "only the owner may change mode or times"
            ));
        }
        if change.uid.is_some_and(|u| u != shown.uid) && !root {
            return Err(err!(NotPermitted, "only root may change the owner"));
        }
        if change
            .gid
            .is_some_and(|g| g != shown.gid && !(root || (owner && g == caller.gid)))
        {
            return Err(err!(
                NotPermitted,
                "may not change the group to {:?}",
                change.gid
            ));
        }
        let update = Stored {
            mode: change.mode.map(|m| m & 0o7777),
            uid: change.uid,
            gid: change.gid,
            atime: change.atime.map(|t| t.resolve()),
            mtime: change.mtime.map(|t| t.resolve()),
            ctime: Some(now),
        };
        self.store_local(&mut ns, ino, &update)?;
        Ok(self.attr_of(&ns, ns.get(ino).expect("checked above")))
    }

    /// Keeps `update` for `ino`: in `attrs.db` under its remote id, or in memory while it
    /// has none (not uploaded) or has changes not uploaded (stored when they land).
    fn store_local(&self, ns: &mut Namespace, ino: Ino, update: &Stored) -> Result<()> {
        let Some(inode) = ns.get_mut(ino) else {
            return Ok(());
        };
        let dirty = inode.staged.as_ref().is_some_and(|s| s.is_dirty());
        match (&self.attrs, attr_key(&inode.entry)) {
            (Some(a), Some(k)) if !dirty => {
                a.set(&k, update).map_err(db_error)?;
            }
            _ => inode.local = inode.local.merged(update),
        }
        Ok(())
    }

    /// The permission bits a create or mkdir asked for (the caller's umask applied), kept
    /// like a chmod; the default mode is not stored.
    pub fn set_created_mode(&self, ino: Ino, mode: u32) -> Result<()> {
        let mode = mode & 0o7777;
        let mut ns = self.lock();
        let Some(inode) = ns.get(ino) else {
            return Ok(());
        };
        let default = if inode.entry.is_dir() {
            self.config.dir_mode
        } else {
            self.config.file_mode
        };
        if mode == u32::from(default) {
            return Ok(());
        }
        let update = Stored {
            mode: Some(mode),
            ..Stored::default()
        };
        self.store_local(&mut ns, ino, &update)
    }

    /// Bytes were written to `ino`: a time set before the write no longer holds.
    pub fn wrote(&self, ino: Ino) {
        if let Some(i) = self.lock().get_mut(ino) {
            i.local.mtime = None;
        }
    }

    /// An upload of `ino` landed as `file`, replacing `replaced`: its local attributes
    /// move to the new id, with the time of the write as mtime unless one was set after it.
    pub fn uploaded(&self, ino: Ino, replaced: Option<&str>, file: MediaFile) {
        let mut ns = self.lock();
        self.move_attrs(&mut ns, ino, replaced, &file.id);
        let shown = ns.get(ino).map(|i| i.name.clone());
        ns.set_entry(ino, Entry::file(file));
        if let Some(shown) = shown {
            ns.claim_name(ino, &shown);
        }
    }

    fn move_attrs(&self, ns: &mut Namespace, ino: Ino, replaced: Option<&str>, new_id: &str) {
        let new_key = format!("f:{new_id}");
        if let (Some(a), Some(inode)) = (&self.attrs, ns.get_mut(ino)) {
            let local = std::mem::take(&mut inode.local);
            let old = replaced.filter(|o| *o != new_id).map(|o| format!("f:{o}"));
            let carried = old.as_deref().map(|k| a.get(k)).unwrap_or_default();
            if !carried.is_empty() || !local.is_empty() {
                let now = std::time::SystemTime::now();
                let fresh = Stored {
                    mtime: Some(now),
                    ctime: Some(now),
                    ..Default::default()
                };
                let row = carried.merged(&fresh).merged(&local);
                if let Err(e) = a.set(&new_key, &row) {
                    warn!(error = %e, "could not store local attributes");
                }
            }
            if let Some(k) = old {
                if let Err(e) = a.remove(&k) {
                    warn!(error = %e, "could not drop local attributes");
                }
            }
        }
    }

    /// The bytes of `ino` are about to be uploaded again unchanged (under a new name):
    /// its stored attributes, mtime included, go with them as if set on the inode.
    pub fn keep_attrs_for_reupload(&self, ino: Ino) {
        let Some(a) = &self.attrs else { return };
        let mut ns = self.lock();
        let Some(inode) = ns.get_mut(ino) else { return };
        let Some(key) = attr_key(&inode.entry) else {
            return;
        };
        let stored = a.get(&key);
        inode.local = stored.merged(&inode.local);
    }

    /// The remote object of `entry` is gone: so are its local attributes.
    fn forget_attrs(&self, entry: &Entry) {
        if let (Some(a), Some(k)) = (&self.attrs, attr_key(entry)) {
            if let Err(e) = a.remove(&k) {
                warn!(error = %e, "could not drop local attributes");
            }
        }
    }

    /// Whether a read handle of remote file `id` is open.
    pub fn is_read(&self, id: &str) -> bool {
        self.readers.is_open(id)
    }

    /// The remote folder id of directory `dir` (`None` = root).
    pub fn folder_id(&self, dir: Ino) -> Result<Option<String>> {
        self.lock()
            .folder_id(dir)
            .ok_or_else(|| err!(NotDir, "inode {dir} is not a directory"))
    }

    pub fn child_of(&self, parent: Ino, name: &OsStr) -> Result<Ino> {
        let name = utf8(name)?;
        self.lock()
            .child(parent, name)
            .ok_or_else(|| err!(NotFound, "no entry {name:?}"))
    }

    // ----- listings -------------------------------------------------------------------

    /// Makes sure `dir`'s listing is fresh (fetching it if needed). While the service is
    /// unreachable a stale listing keeps answering.
    pub async fn ensure_listing(&self, dir: Ino) -> Result<()> {
        let ttl = self.config.dir_ttl;
        let parent = {
            let ns = self.lock();
            if ns.is_fresh(dir, ttl) {
                return Ok(());
            }
            let id = ns
                .folder_id(dir)
                .ok_or_else(|| err!(NotDir, "inode {dir} is not a directory"))?;
            Parent::from_id(id.as_deref())
        };
        let lock = self
            .listing_locks
            .lock()
            .unwrap()
            .entry(dir)
            .or_default()
            .clone();
        let result = {
            let _guard = lock.lock().await;
            self.list(dir, &parent).await
        };
        // The per-directory lock goes with its last user: a walk over many directories
        // must not leave one behind per directory.
        drop(lock);
        self.listing_locks
            .lock()
            .unwrap()
            .retain(|_, l| Arc::strong_count(l) > 1);
        result
    }

    async fn list(&self, dir: Ino, parent: &Parent) -> Result<()> {
        let ttl = self.config.dir_ttl;
        let mark = {
            let mut ns = self.lock();
            if ns.is_fresh(dir, ttl) {
                return Ok(()); // someone else listed it while we waited
            }
            ListingMark {
                sb: self,
                mark: ns.begin_listing(),
            }
        };
        let (folders, files) = tokio::join!(
            self.client.list_folders(parent),
            self.client.list_files(parent)
        );
        match folders.and_then(|f| files.map(|x| (f, x))) {
            Ok((folders, files)) => {
                // Converted once, here, outside the lock. Old versions of overwritten files
                // kept for their readers are not entries.
                let folders: Vec<FolderEntry> = folders.into_iter().map(Into::into).collect();
                let files: Vec<FileEntry> = files
                    .into_iter()
                    .filter(|f| !self.readers.is_deferred(&f.id))
                    .map(Into::into)
                    .collect();
                debug!(dir, folders = folders.len(), files = files.len(), "listed");
                for f in &files {
                    if let Some(url) = &f.url {
                        self.reader.offer_url(&f.id, url);
                    }
                }
                self.lock()
                    .apply_listing_since(dir, mark.mark, folders, files);
                Ok(())
            }
            Err(e) => {
                let mut ns = self.lock();
                if e.is_transient() && ns.has_listing(dir) {
                    warn!(dir, error = %e, "listing failed; serving the cached listing");
                    ns.extend_listing(dir, ttl, Duration::from_secs(5));
                    Ok(())
                } else {
                    if e.kind == ApiErrorKind::NotFound {
                        // The folder itself is gone.
                        ns.remove(dir);
                    }
                    Err(Error::api(format!("listing directory {dir}"), e))
                }
            }
        }
    }

    /// `lookup`: the entry's attributes, and one more kernel reference to it.
    pub async fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Attr> {
        if name.len() > names::MAX_NAME_BYTES {
            return Err(err!(NameTooLong, "name of {} bytes", name.len()));
        }
        let name = utf8(name)?;
        self.ensure_listing(parent).await?;
        let mut ns = self.lock();
        let ino = ns
            .child(parent, name)
            .ok_or_else(|| err!(NotFound, "no entry {name:?} in {parent}"))?;
        ns.remember(ino);
        Ok(self.attr_of(&ns, ns.get(ino).expect("child exists")))
    }

    /// The entries of `ino` with `.` and `..`, for an open directory.
    pub async fn dir_entries(&self, ino: Ino) -> Result<Vec<DirEntry>> {
        self.ensure_listing(ino).await?;
        let ns = self.lock();
        let me = ns
            .get(ino)
            .ok_or_else(|| err!(NotFound, "unknown inode {ino}"))?;
        let parent = ns.get(me.parent).unwrap_or(me);
        let children = ns.children(ino);
        let mut v = Vec::with_capacity(children.len() + 2);
        v.push(DirEntry {
            ino,
            name: ".".into(),
            attr: self.attr_of(&ns, me),
        });
        v.push(DirEntry {
            ino: parent.ino,
            name: "..".into(),
            attr: self.attr_of(&ns, parent),
        });
        for child in children {
            v.push(DirEntry {
                ino: child.ino,
                name: child.name.clone(),
                attr: self.attr_of(&ns, child),
            });
        }
        Ok(v)
    }

    /// The kernel's references, for a batch of readdirplus entries under one lock.
    pub fn references(&self) -> References<'_> {
        References(self.lock())
    }

    pub fn forget(&self, ino: Ino, n: u64) {
        self.lock().forget(ino, n);
    }

    /// Points `ino` at the remote file it now is (after an upload or an update).
    pub fn set_file(&self, ino: Ino, file: MediaFile) {
        let entry = Entry::file(file);
        self.lock().set_entry(ino, entry);
    }

    /// A pending upload landed later: the entry it was written as is that file now. Returns
    /// the inode it landed for, if still known.
    pub fn landed(&self, landed: &Landed) -> Option<Ino> {
        let entry = Entry::file(landed.file.clone());
        let mut ns = self.lock();
        let dir = ns.dir_of_folder(landed.target.parent_folder_id.as_deref())?;
        let ino = ns.find_local(dir, &landed.target.name).or_else(|| {
            ns.children(dir)
                .iter()
                .find(|i| {
                    i.staged
                        .as_ref()
                        .is_some_and(|s| Arc::ptr_eq(s, &landed.staged))
                })
                .map(|i| i.ino)
        });
        if let Some(ino) = ino {
            let replaced = landed.target.replaces.as_deref();
            self.move_attrs(&mut ns, ino, replaced, &landed.file.id);
            ns.set_entry(ino, entry);
            ns.unstage(ino, &landed.staged);
        }
        ns.invalidate(dir);
        ino
    }

    /// SIGHUP: every listing is fetched again on next use.
    pub fn invalidate_all(&self) {
        self.lock().invalidate_all();
        self.client.forget_listings();
    }

    // ----- transactions ---------------------------------------------------------------

    /// `mode`: the permission bits asked for, the umask applied.
    pub async fn mkdir(&self, parent: Ino, name: &OsStr, mode: u32) -> Result<Attr> {
        let remote_name =
            names::unescape(name).map_err(|k| Error::new(k, format!("invalid name {name:?}")))?;
        self.ensure_listing(parent).await?;
        if self.child_of(parent, name).is_ok() {
            return Err(err!(Exists, "{name:?} exists"));
        }
        let parent_id = self.folder_id(parent)?;
        let folder = self
            .client
            .create_folder(&remote_name, parent_id.as_deref())
            .await
            .map_err(|e| Error::api(format!("mkdir {name:?}"), e))?;
        let entry = Entry::folder(folder);
        let mut ns = self.lock();
        let ino = ns.insert(parent, entry);
        // A new folder is empty: no need to list it.
        ns.apply_listing(ino, Vec::<FolderEntry>::new(), Vec::<FileEntry>::new());
        ns.remember(ino);
        drop(ns);
        // The folder exists now: a mode that could not be stored is logged, not an error.
        if let Err(e) = self.set_created_mode(ino, mode) {
            warn!("mkdir {name:?}: could not keep mode {mode:o}: {e}");
        }
        self.dir_changed(parent);
        self.attr(ino)
    }

    /// A file created through the mount, not uploaded yet; one kernel reference.
    pub fn insert_local(&self, parent: Ino, name: String, staged: Arc<StagedFile>) -> Ino {
        let mut ns = self.lock();
        let ino = ns.insert(
            parent,
            Entry::Local {
                name,
                created: std::time::SystemTime::now(),
            },
        );
        ns.get_mut(ino).expect("just inserted").staged = Some(staged);
        ns.remember(ino);
        drop(ns);
        self.dir_changed(parent);
        ino
    }

    pub async fn unlink(&self, parent: Ino, name: &OsStr) -> Result<()> {
        self.ensure_listing(parent).await?;
        let ino = self.child_of(parent, name)?;
        let (entry, staged) = {
            let ns = self.lock();
            let i = ns.get(ino).expect("child exists");
            (i.entry.clone(), i.staged.clone())
        };
        match entry {
            Entry::Root | Entry::Folder(_) => return Err(err!(IsDir, "{name:?} is a directory")),
            // Still read through an open handle: the delete waits for the last close
            // (recorded, so a crash in between does not bring the name back).
            Entry::File(ref f) if self.readers.defer_delete_if_open(&f.id) => {
                if let Some(d) = &self.deletes {
                    if let Err(e) = d.record(&f.id) {
                        warn!("could not record the deferred delete of {name:?}: {e}");
                    }
                }
                self.forget_attrs(&entry);
            }
            Entry::File(ref f) => match self.client.delete_file(&f.id).await {
                Ok(()) => {
                    self.reader.invalidate(&f.id);
                    self.forget_attrs(&entry);
                }
                Err(e) if e.kind == ApiErrorKind::NotFound => {}
                Err(e) => return Err(Error::api(format!("unlink {name:?}"), e)),
            },
            // A new file moved onto a remote file replaces it when its upload lands
            // (`retarget_moved`); unlinked before that, the file it replaced goes now, or
            // it would come back on the next mount.
            Entry::Local { .. } => {
                let replaced = staged.as_ref().and_then(|s| s.target().replaces);
                if let Some(old) = replaced {
                    if self.readers.defer_delete_if_open(&old) {
                        if let Some(d) = &self.deletes {
                            if let Err(e) = d.record(&old) {
                                warn!("could not record the deferred delete of {name:?}: {e}");
                            }
                        }
                    } else {
                        match self.client.delete_file(&old).await {
                            Ok(()) => self.reader.invalidate(&old),
                            Err(e) if e.kind == ApiErrorKind::NotFound => {}
                            Err(e) => return Err(Error::api(format!("unlink {name:?}"), e)),
                        }
                    }
                }
            }
        }
        if let Some(s) = staged {
            s.discard();
        }
        self.lock().remove(ino);
        self.dir_changed(parent);
        Ok(())
    }

    pub async fn rmdir(&self, parent: Ino, name: &OsStr) -> Result<()> {
        self.ensure_listing(parent).await?;
        let ino = self.child_of(parent, name)?;
        let id = match self.lock().get(ino).map(|i| i.entry.clone()) {
            Some(Entry::Folder(f)) => f.id,
            Some(Entry::Root) => return Err(err!(Busy, "cannot remove the root")),
            _ => return Err(err!(NotDir, "{name:?} is not a directory")),
        };
        self.ensure_listing(ino).await?;
        if !self.lock().is_empty_dir(ino) {
            return Err(err!(NotEmpty, "{name:?} is not empty"));
        }
        match self.client.delete_folder(&id).await {
            Ok(()) => {
                if let Some(e) = self.lock().get(ino).map(|i| i.entry.clone()) {
                    self.forget_attrs(&e);
                }
            }
            Err(e) if e.kind == ApiErrorKind::NotFound => {}
            Err(e) => {
                // Someone added something remotely: relist so the user sees it.
                self.lock().invalidate(ino);
                return Err(Error::api(format!("rmdir {name:?}"), e));
            }
        }
        self.lock().remove(ino);
        self.dir_changed(parent);
        Ok(())
    }

    /// rename(2). Onto an existing entry: move first, then delete the old target, so
    /// there is never a moment where neither exists; a file not uploaded yet deletes the
    /// old target only once its upload lands (see `retarget_moved`). Returns the id of a
    /// replaced file whose delete failed (recorded and hidden; the caller retries it).
    pub async fn rename(
        &self,
        parent: Ino,
        name: &OsStr,
        new_parent: Ino,
        new_name: &OsStr,
        flags: u32,
    ) -> Result<Option<String>> {
        if flags & libc::RENAME_EXCHANGE != 0 {
            return Err(err!(Invalid, "RENAME_EXCHANGE is not supported"));
        }
        let new_remote = names::unescape(new_name)
            .map_err(|k| Error::new(k, format!("invalid name {new_name:?}")))?;
        self.ensure_listing(parent).await?;
        self.ensure_listing(new_parent).await?;
        let mut listed = false;
        let plan = loop {
            match self.plan_rename(parent, name, new_parent, new_name, flags, listed)? {
                Planned::Go(plan) => break *plan,
                Planned::Nothing => return Ok(None),
                Planned::List(dir) => {
                    self.ensure_listing(dir).await?;
                    listed = true;
                }
            }
        };

        // The remote call, without the lock.
        let moved = parent != new_parent;
        let context = || format!("rename {name:?} -> {new_name:?}");
        let entry = match &plan.entry {
            Entry::Root => return Err(err!(Busy, "cannot rename the root")),
            Entry::Folder(f) => {
                let update = FolderUpdate {
                    name: Some(new_remote.clone()),
                    parent_id: moved.then(|| plan.new_folder.clone()),
                };
                let target = self.entry_of(plan.target);
                let folder = name_taken::update_folder(
                    self.client.as_ref(),
                    &f.id,
                    &update,
                    target.as_ref(),
                    plan.new_folder.as_deref(),
                )
                .await
                .map_err(|e| Error::api(context(), e))?;
                Entry::folder(folder)
            }
            Entry::File(f) => {
                let update = FileUpdate {
                    title: Some(new_remote.clone()),
                    folder_id: moved.then(|| plan.new_folder.clone()),
                    ..Default::default()
                };
                let target = self.entry_of(plan.target);
                let file =
                    name_taken::update_file(self.client.as_ref(), &f.id, &update, target.as_ref())
                        .await
                        .map_err(|e| Error::api(context(), e))?;
                Entry::file(file)
            }
            Entry::Local { created, .. } => Entry::Local {
                name: new_remote.clone(),
                created: *created,
            },
        };

        // Apply in one step. The target goes only if it still is the entry of that name.
        let target = {
            let mut ns = self.lock();
            let target = plan.target.filter(|t| {
                ns.get(plan.ino).is_some()
                    && ns.child(new_parent, &new_name.to_string_lossy()) == Some(*t)
            });
            let target = target.and_then(|t| {
                let taken = ns.get(t).map(|i| (i.entry.clone(), i.staged.clone()));
                ns.remove(t);
                taken
            });
            ns.reparent(plan.ino, new_parent);
            ns.set_entry(plan.ino, entry);
            ns.claim_name(plan.ino, &new_name.to_string_lossy());
            target
        };

        // A copy being written follows the file to its new place and name.
        let replaced_on_upload = match &plan.staged {
            Some(s) => self.retarget_moved(s, plan.new_folder.clone(), &new_remote, &target)?,
            None => None,
        };
        let mut leftover = None;
        if let Some((entry, staged)) = target {
            if let Some(s) = staged {
                s.discard();
            }
            if replaced_on_upload.is_some() {
                // Its delete follows the upload of the file moved over it.
                self.forget_attrs(&entry);
                self.dir_changed(parent);
                if new_parent != parent {
                    self.dir_changed(new_parent);
                }
                info!(from = ?name, to = ?new_name, "renamed");
                return Ok(None);
            }
            let replaced_file = entry.id().filter(|_| !entry.is_dir()).map(str::to_string);
            let result = match entry {
                Entry::Folder(f) => self.client.delete_folder(&f.id).await,
                Entry::File(f) => {
                    self.reader.invalidate(&f.id);
                    self.client.delete_file(&f.id).await
                }
                _ => Ok(()),
            };
            if let Err(e) = result {
                if e.kind != ApiErrorKind::NotFound {
                    warn!(error = %e, "rename: could not delete the replaced {new_name:?}");
                    match replaced_file {
                        // Recorded and hidden: the plain name shows what was moved there;
                        // the caller retries the delete until it is done.
                        Some(id) => {
                            if let Some(d) = &self.deletes {
                                if let Err(e) = d.record(&id) {
                                    warn!("could not record the delete of {id}: {e}");
                                }
                            }
                            self.readers.hide(&id);
                            leftover = Some(id);
                        }
                        // A folder lingers as a duplicate.
                        None => self.lock().invalidate(new_parent),
                    }
                }
            }
        }
        self.dir_changed(parent);
        if new_parent != parent {
            self.dir_changed(new_parent);
        }
        info!(from = ?name, to = ?new_name, "renamed");
        Ok(leftover)
    }

    /// Points the staged copy of a moved file at its new place and name. A file never
    /// uploaded that is moved onto a remote file replaces it when its upload lands (upload
    /// first, then delete: never a moment with neither); until then the old copy is hidden
    /// from listings. Returns the id it replaces that way.
    fn retarget_moved(
        &self,
        staged: &Arc<StagedFile>,
        folder: Option<String>,
        name: &str,
        target: &Option<(Entry, Option<Arc<StagedFile>>)>,
    ) -> Result<Option<String>> {
        let mut t = staged.target();
        t.parent_folder_id = folder;
        t.name = name.to_string();
        let mut replaced = None;
        if let Some((Entry::File(old), _)) = target {
            if staged.is_new() {
                self.readers.hide(&old.id);
                t.replaces = Some(old.id.clone());
                replaced = Some(old.id.clone());
            }
        }
        staged.retarget(t)?;
        Ok(replaced)
    }

    /// Resolves and checks a rename under one lock. `listed`: the target directory's
    /// listing was just fetched (do not ask again).
    fn plan_rename(
        &self,
        parent: Ino,
        name: &OsStr,
        new_parent: Ino,
        new_name: &OsStr,
        flags: u32,
        listed: bool,
    ) -> Result<Planned> {
        let ns = self.lock();
        let name_s = utf8(name)?;
        let ino = ns
            .child(parent, name_s)
            .ok_or_else(|| err!(NotFound, "no entry {name_s:?}"))?;
        let target = new_name.to_str().and_then(|n| ns.child(new_parent, n));
        if target == Some(ino) {
            return Ok(Planned::Nothing);
        }
        if ns.is_ancestor(ino, new_parent) {
            return Err(err!(Invalid, "cannot move {name:?} into itself"));
        }
        let inode = ns.get(ino).expect("child exists");
        if let Some(t) = target {
            if flags & libc::RENAME_NOREPLACE != 0 {
                return Err(err!(Exists, "{new_name:?} exists"));
            }
            let t_is_dir = ns.get(t).is_some_and(|i| i.entry.is_dir());
            match (inode.entry.is_dir(), t_is_dir) {
                (true, false) => return Err(err!(NotDir, "{new_name:?} is not a directory")),
                (false, true) => return Err(err!(IsDir, "{new_name:?} is a directory")),
                (true, true) => {
                    if !listed && !ns.is_fresh(t, self.config.dir_ttl) {
                        return Ok(Planned::List(t));
                    }
                    if !ns.is_empty_dir(t) {
                        return Err(err!(NotEmpty, "{new_name:?} is not empty"));
                    }
                }
                (false, false) => {}
            }
        }
        let new_folder = ns
            .folder_id(new_parent)
            .ok_or_else(|| err!(NotDir, "inode {new_parent} is not a directory"))?;
        Ok(Planned::Go(Box::new(RenamePlan {
            ino,
            entry: inode.entry.clone(),
            staged: inode.staged.clone(),
            target,
            new_folder,
        })))
    }

    /// The entry of `ino`, if still known.
    fn entry_of(&self, ino: Option<Ino>) -> Option<Entry> {
        ino.and_then(|i| self.lock().get(i).map(|inode| inode.entry.clone()))
    }

    pub fn inode_count(&self) -> usize {
        self.lock().inode_count()
    }
}

/// A listing being fetched ([`Namespace::begin_listing`]); ended when dropped, even if the
/// fetch is cancelled. Must not be dropped while the namespace lock is held.
struct ListingMark<'a> {
    sb: &'a Superblock,
    mark: u64,
}

impl Drop for ListingMark<'_> {
    fn drop(&mut self) {
        self.sb.lock().end_listing(self.mark);
    }
}

/// The namespace lock, held while a readdirplus reply is filled: each entry sent counts as
/// a lookup. Held for memory work only (no I/O, no `.await`).
pub struct References<'a>(MutexGuard<'a, Namespace>);

impl References<'_> {
    /// The kernel got `ino` from a readdirplus entry: false if it is gone meanwhile.
    pub fn remember(&mut self, ino: Ino) -> bool {
        self.0.remember(ino)
    }

    /// The entry was not sent after all.
    pub fn forget(&mut self, ino: Ino, n: u64) {
        self.0.forget(ino, n);
    }
}
