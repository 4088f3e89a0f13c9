//! `MediaFs`: the filesystem operations, in terms of inodes and file handles, without FUSE
//! types. The FUSE layer (`crate::fuse`) calls one method per kernel request.
//!
//! Remote calls happen outside the namespace lock; their results are applied under it.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tracing::{debug, info, warn};

use crate::api::{ApiErrorKind, FileUpdate, FolderUpdate, MediaClient, Parent};
use crate::err;
use crate::fs::error::{Error, Result};
use crate::fs::names;
use crate::fs::namespace::{Entry, Ino, Namespace};
use crate::fs::read::{ReadHandle, Reader};
use crate::fs::write::{Carry, OnLanded, PendingInfo, StagedFile, UploadTarget, Uploader};

/// Settings of the filesystem core.
#[derive(Debug, Clone)]
pub struct FsConfig {
    pub uid: u32,
    pub gid: u32,
    pub file_mode: u16,
    pub dir_mode: u16,
    /// How long a directory listing is trusted before it is fetched again.
    pub dir_ttl: Duration,
    pub read_only: bool,
}

impl Default for FsConfig {
    fn default() -> Self {
        FsConfig {
            uid: unsafe { libc::getuid() },
            gid: unsafe { libc::getgid() },
            file_mode: 0o644,
            dir_mode: 0o755,
            dir_ttl: Duration::from_secs(30),
            read_only: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// File attributes as the kernel needs them.
#[derive(Debug, Clone)]
pub struct Attr {
    pub ino: Ino,
    pub kind: Kind,
    pub size: u64,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub crtime: SystemTime,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone)]
pub struct DirEntry {
    pub ino: Ino,
    pub name: String,
    pub attr: Attr,
}

/// Filesystem statistics for `statfs` (`df`).
#[derive(Debug, Clone)]
pub struct FsStats {
    pub blocks: u64,
    pub bfree: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
}

enum Handle {
    Read {
        file_id: String,
        reader: Arc<ReadHandle>,
    },
    Write {
        ino: Ino,
        staged: Arc<StagedFile>,
    },
    /// Opened read-only while the file has a staged copy: reads that copy and never
    /// uploads (its close must not report, nor retry, the writer's upload).
    StagedRead {
        staged: Arc<StagedFile>,
    },
    Dir {
        entries: Arc<Vec<DirEntry>>,
    },
}

/// What `open` tells the kernel.
pub struct Opened {
    pub fh: u64,
    /// The remote bytes are the ones the kernel may have cached from an earlier open.
    pub keep_cache: bool,
}

pub struct MediaFs {
    client: Arc<dyn MediaClient>,
    reader: Arc<Reader>,
    uploader: Option<Arc<Uploader>>,
    ns: Arc<Mutex<Namespace>>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    /// Open read handles per remote file id: a replaced file is deleted only once nobody
    /// reads it any more.
    readers: Arc<Mutex<HashMap<String, usize>>>,
    /// One listing at a time per directory: concurrent lookups wait for it instead of listing too.
    listing_locks: Mutex<HashMap<Ino, Arc<tokio::sync::Mutex<()>>>>,
    config: FsConfig,
}

const BLOCK: u64 = 4096;

fn parse_time(s: Option<&str>) -> SystemTime {
    s.and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| SystemTime::from(t.with_timezone(&chrono::Utc)))
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

impl MediaFs {
    /// `uploader` is `None` in read-only mode.
    pub fn new(
        client: Arc<dyn MediaClient>,
        reader: Arc<Reader>,
        uploader: Option<Arc<Uploader>>,
        ns: Arc<Mutex<Namespace>>,
        config: FsConfig,
    ) -> Self {
        let readers: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        if let Some(u) = &uploader {
            let r = readers.clone();
            u.set_in_use(Box::new(move |id| r.lock().unwrap().contains_key(id)));
        }
        MediaFs {
            client,
            reader,
            uploader,
            ns,
            readers,
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            listing_locks: Mutex::new(HashMap::new()),
            config,
        }
    }

    /// Callback for the uploader: a pending upload of (`folder`, `name`) landed later.
    pub fn landed_callback(ns: Arc<Mutex<Namespace>>) -> OnLanded {
        Box::new(move |target, file| {
            let mut ns = ns.lock().unwrap();
            let Some(dir) = ns.dir_of_folder(target.parent_folder_id.as_deref()) else {
                return;
            };
            if let Some(ino) = ns.find_local(dir, &target.name) {
                ns.set_entry(ino, Entry::File(file.clone()));
                if let Some(i) = ns.get_mut(ino) {
                    i.staged = None;
                }
            }
            ns.invalidate(dir);
        })
    }

    pub fn config(&self) -> &FsConfig {
        &self.config
    }

    // ----- attributes ---------------------------------------------------------------

    fn attr_of(&self, inode: &crate::fs::namespace::Inode) -> Attr {
        let c = &self.config;
        let (kind, size, mtime, crtime) = match &inode.entry {
            Entry::Root => (
                Kind::Dir,
                BLOCK,
                SystemTime::UNIX_EPOCH,
                SystemTime::UNIX_EPOCH,
            ),
            Entry::Folder(f) => (
                Kind::Dir,
                BLOCK,
                parse_time(f.updated_at.as_deref()),
                parse_time(f.created_at.as_deref()),
            ),
            Entry::File(f) => (
                Kind::File,
                f.size(),
                parse_time(f.updated_at.as_deref()),
                parse_time(f.created_at.as_deref()),
            ),
            Entry::Local { created, .. } => (Kind::File, 0, *created, *created),
        };
        // A file being written shows its staged size.
        let size = inode.staged.as_ref().map_or(size, |s| s.len());
        let mtime = if inode.staged.as_ref().is_some_and(|s| s.is_dirty()) {
            SystemTime::now()
        } else {
            mtime
        };
        Attr {
            ino: inode.ino,
            kind,
            size,
            mtime,
            ctime: mtime,
            crtime,
            perm: if kind == Kind::Dir {
                c.dir_mode
            } else {
                c.file_mode
            },
            nlink: if kind == Kind::Dir { 2 } else { 1 },
            uid: c.uid,
            gid: c.gid,
        }
    }

    fn attr(&self, ino: Ino) -> Result<Attr> {
        let ns = self.ns.lock().unwrap();
        let inode = ns
            .get(ino)
            .ok_or_else(|| err!(libc::ENOENT, "unknown inode {ino}"))?;
        Ok(self.attr_of(inode))
    }

    // ----- listings -----------------------------------------------------------------

    /// Makes sure `dir`'s listing is fresh (fetching it if needed). While the service is
    /// unreachable a stale listing keeps answering.
    async fn ensure_listing(&self, dir: Ino) -> Result<()> {
        let ttl = self.config.dir_ttl;
        let parent = {
            let ns = self.ns.lock().unwrap();
            if ns.is_fresh(dir, ttl) {
                return Ok(());
            }
            let id = ns
                .folder_id(dir)
                .ok_or_else(|| err!(libc::ENOTDIR, "inode {dir} is not a directory"))?;
            Parent::from_id(id.as_deref())
        };
        let lock = self
            .listing_locks
            .lock()
            .unwrap()
            .entry(dir)
            .or_default()
            .clone();
        let _guard = lock.lock().await;
        if self.ns.lock().unwrap().is_fresh(dir, ttl) {
            return Ok(()); // someone else listed it while we waited
        }
        let (folders, files) = tokio::join!(
            self.client.list_folders(&parent),
            self.client.list_files(&parent)
        );
        match folders.and_then(|f| files.map(|x| (f, x))) {
            Ok((folders, mut files)) => {
                // Old versions of overwritten files kept for their readers are not entries.
                if let Some(u) = &self.uploader {
                    files.retain(|f| !u.is_deferred_delete(&f.id));
                }
                debug!(dir, folders = folders.len(), files = files.len(), "listed");
                for f in &files {
                    if let Some(url) = f.url() {
                        self.reader.offer_url(&f.id, url);
                    }
                }
                self.ns.lock().unwrap().apply_listing(dir, folders, files);
                Ok(())
            }
            Err(e) => {
                let mut ns = self.ns.lock().unwrap();
                if e.is_transient() && ns.has_listing(dir) {
                    warn!(dir, error = %e, "listing failed; serving the cached listing");
                    ns.extend_listing(dir, ttl, Duration::from_secs(5));
                    Ok(())
                } else {
                    if e.kind == ApiErrorKind::NotFound {
                        // The folder itself is gone.
                        let ino = dir;
                        ns.remove(ino);
                    }
                    Err(Error::api(format!("listing directory {dir}"), e))
                }
            }
        }
    }

    fn check_writable(&self) -> Result<&Arc<Uploader>> {
        match &self.uploader {
            Some(u) if !self.config.read_only => Ok(u),
            _ => Err(err!(libc::EROFS, "read-only mount")),
        }
    }

    /// The remote folder id of directory `dir` (`None` = root).
    fn folder_id(&self, dir: Ino) -> Result<Option<String>> {
        self.ns
            .lock()
            .unwrap()
            .folder_id(dir)
            .ok_or_else(|| err!(libc::ENOTDIR, "inode {dir} is not a directory"))
    }

    // ----- lookups ------------------------------------------------------------------

    pub async fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Attr> {
        if name.len() > names::MAX_NAME_BYTES {
            return Err(err!(libc::ENAMETOOLONG, "name of {} bytes", name.len()));
        }
        let name = name
            .to_str()
            .ok_or_else(|| err!(libc::ENOENT, "non-UTF-8 name"))?;
        self.ensure_listing(parent).await?;
        let ns = self.ns.lock().unwrap();
        let ino = ns
            .child(parent, name)
            .ok_or_else(|| err!(libc::ENOENT, "no entry {name:?} in {parent}"))?;
        Ok(self.attr_of(ns.get(ino).expect("child exists")))
    }

    pub async fn getattr(&self, ino: Ino) -> Result<Attr> {
        self.attr(ino)
    }

    pub async fn readdir_snapshot(&self, ino: Ino) -> Result<u64> {
        self.ensure_listing(ino).await?;
        let entries = {
            let ns = self.ns.lock().unwrap();
            let me = ns
                .get(ino)
                .ok_or_else(|| err!(libc::ENOENT, "unknown inode {ino}"))?;
            let parent = ns.get(me.parent).unwrap_or(me);
            let mut v = vec![
                DirEntry {
                    ino,
                    name: ".".into(),
                    attr: self.attr_of(me),
                },
                DirEntry {
                    ino: parent.ino,
                    name: "..".into(),
                    attr: self.attr_of(parent),
                },
            ];
            for child in ns.children(ino) {
                v.push(DirEntry {
                    ino: child.ino,
                    name: child.name.clone(),
                    attr: self.attr_of(child),
                });
            }
            v
        };
        Ok(self.add_handle(Handle::Dir {
            entries: Arc::new(entries),
        }))
    }

    /// The entries of an open directory, as snapshotted at opendir (the kernel pages
    /// through them by index).
    pub fn readdir(&self, fh: u64) -> Result<Arc<Vec<DirEntry>>> {
        match self.handles.lock().unwrap().get(&fh) {
            Some(Handle::Dir { entries }) => Ok(entries.clone()),
            _ => Err(err!(libc::EBADF, "bad directory handle {fh}")),
        }
    }

    pub fn release_handle(&self, fh: u64) {
        self.handles.lock().unwrap().remove(&fh);
    }

    /// The last reader of `id` is gone: if `id` was replaced meanwhile, delete it now.
    fn reader_closed(&self, id: &str) {
        let last = {
            let mut r = self.readers.lock().unwrap();
            match r.get_mut(id) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                _ => {
                    r.remove(id);
                    true
                }
            }
        };
        if let Some(u) = self
            .uploader
            .as_ref()
            .filter(|u| last && u.take_deferred_delete(id))
        {
            let (u, id) = (u.clone(), id.to_string());
            tokio::spawn(async move { u.delete_replaced_now(&id).await });
        }
    }

    /// Whether some handle still has `staged` open for writing.
    fn has_writer(&self, staged: &Arc<StagedFile>) -> bool {
        self.handles
            .lock()
            .unwrap()
            .values()
            .any(|h| matches!(h, Handle::Write { staged: s, .. } if Arc::ptr_eq(s, staged)))
    }

    fn add_handle(&self, h: Handle) -> u64 {
        if let Handle::Read { file_id, .. } = &h {
            *self
                .readers
                .lock()
                .unwrap()
                .entry(file_id.clone())
                .or_default() += 1;
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().unwrap().insert(fh, h);
        fh
    }

    // ----- open / read / write --------------------------------------------------------

    pub async fn open(&self, ino: Ino, flags: i32) -> Result<Opened> {
        let acc = flags & libc::O_ACCMODE;
        let writing = acc == libc::O_WRONLY || acc == libc::O_RDWR;
        if writing {
            return self.open_for_write(ino, flags).await;
        }
        // A file being written is read from its staged copy.
        let (file, staged) = {
            let ns = self.ns.lock().unwrap();
            let inode = ns
                .get(ino)
                .ok_or_else(|| err!(libc::ENOENT, "unknown inode {ino}"))?;
            if inode.entry.is_dir() {
                return Err(err!(libc::EISDIR, "inode {ino} is a directory"));
            }
            let file = match &inode.entry {
                Entry::File(f) => Some((f.clone(), inode.refreshed)),
                _ => None,
            };
            (file, inode.staged.clone())
        };
        if let Some(staged) = staged {
            return Ok(Opened {
                fh: self.add_handle(Handle::StagedRead { staged }),
                keep_cache: false,
            });
        }
        let (mut file, refreshed) =
            file.ok_or_else(|| err!(libc::EIO, "inode {ino} has no remote file"))?;
        // Refresh what is stale: the file may have been deleted or changed remotely.
        if refreshed.elapsed() >= self.config.dir_ttl {
            match self.client.get_file(&file.id).await {
                Ok(f) => {
                    self.ns
                        .lock()
                        .unwrap()
                        .set_entry(ino, Entry::File(f.clone()));
                    file = f;
                }
                Err(e) if e.kind == ApiErrorKind::NotFound => {
                    self.ns.lock().unwrap().remove(ino);
                    return Err(Error::api(format!("opening {ino}"), e));
                }
                Err(e) => {
                    warn!(ino, error = %e, "could not refresh file before open; using cached metadata")
                }
            }
        }
        let keep_cache = {
            let mut ns = self.ns.lock().unwrap();
            let inode = ns.get_mut(ino).expect("inode exists");
            let keep = inode.last_open_id.as_deref() == Some(file.id.as_str());
            inode.last_open_id = Some(file.id.clone());
            keep
        };
        let handle = self
            .reader
            .open(&file.id, file.size(), file.url().map(str::to_string));
        Ok(Opened {
            fh: self.add_handle(Handle::Read {
                file_id: file.id.clone(),
                reader: Arc::new(handle),
            }),
            keep_cache,
        })
    }

    async fn open_for_write(&self, ino: Ino, flags: i32) -> Result<Opened> {
        let uploader = self.check_writable()?.clone();
        let truncate = flags & libc::O_TRUNC != 0;
        let staged = self.stage(ino, &uploader, truncate).await?;
        if truncate {
            staged.set_len(0)?;
        }
        Ok(Opened {
            fh: self.add_handle(Handle::Write { ino, staged }),
            keep_cache: false,
        })
    }

    /// The staged copy of a file, created (and filled with the remote bytes unless
    /// `truncate`) if the file has none yet.
    async fn stage(
        &self,
        ino: Ino,
        uploader: &Arc<Uploader>,
        truncate: bool,
    ) -> Result<Arc<StagedFile>> {
        let (file, parent) = {
            let ns = self.ns.lock().unwrap();
            let inode = ns
                .get(ino)
                .ok_or_else(|| err!(libc::ENOENT, "unknown inode {ino}"))?;
            if let Some(s) = &inode.staged {
                return Ok(s.clone());
            }
            match &inode.entry {
                Entry::File(f) => (f.clone(), inode.parent),
                Entry::Root | Entry::Folder(_) => {
                    return Err(err!(libc::EISDIR, "inode {ino} is a directory"))
                }
                Entry::Local { .. } => {
                    return Err(err!(libc::EIO, "local file {ino} lost its staged copy"))
                }
            }
        };
        let target = UploadTarget {
            parent_folder_id: self.folder_id(parent)?,
            name: names::file_remote_name(&file),
            replaces: Some(file.id.clone()),
            carry: Carry::from_file(&file),
        };
        let reader = self.reader.clone();
        let size = file.size();
        let fill_file = file.clone();
        let staged = uploader
            .stage_existing(
                target,
                size,
                truncate,
                move |staged: Arc<StagedFile>| async move {
                    let handle =
                        reader.open(&fill_file.id, size, fill_file.url().map(str::to_string));
                    let mut off = 0u64;
                    while off < size {
                        let chunk = reader.read(&handle, off, 1 << 20).await?;
                        if chunk.is_empty() {
                            return Err(err!(
                                libc::EIO,
                                "remote file ended early at {off} of {size}"
                            ));
                        }
                        staged.write_at(off, &chunk)?;
                        off += chunk.len() as u64;
                    }
                    Ok(())
                },
            )
            .await?;
        let mut ns = self.ns.lock().unwrap();
        let inode = ns
            .get_mut(ino)
            .ok_or_else(|| err!(libc::ENOENT, "inode {ino} vanished"))?;
        // Another open may have staged it meanwhile: keep the first.
        Ok(inode.staged.get_or_insert(staged).clone())
    }

    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Bytes> {
        enum Src {
            Remote(Arc<ReadHandle>),
            Staged(Arc<StagedFile>),
        }
        let src = match self.handles.lock().unwrap().get(&fh) {
            Some(Handle::Read { reader, .. }) => Src::Remote(reader.clone()),
            Some(Handle::Write { staged, .. } | Handle::StagedRead { staged }) => {
                Src::Staged(staged.clone())
            }
            _ => return Err(err!(libc::EBADF, "bad file handle {fh}")),
        };
        match src {
            Src::Remote(h) => self.reader.read(&h, offset, size).await,
            Src::Staged(s) => Ok(Bytes::from(s.read_at(offset, size)?)),
        }
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<usize> {
        let staged = match self.handles.lock().unwrap().get(&fh) {
            Some(Handle::Write { staged, .. }) => staged.clone(),
            Some(_) => return Err(err!(libc::EBADF, "handle {fh} is not open for writing")),
            None => return Err(err!(libc::EBADF, "bad file handle {fh}")),
        };
        staged.write_at(offset, data)
    }

    pub async fn create(&self, parent: Ino, name: &OsStr, flags: i32) -> Result<(Attr, Opened)> {
        let uploader = self.check_writable()?.clone();
        let remote_name = names::unescape(name).map_err(|e| err!(e, "invalid name {name:?}"))?;
        self.ensure_listing(parent).await?;
        let existing = self
            .ns
            .lock()
            .unwrap()
            .child(parent, &name.to_string_lossy());
        if let Some(existing) = existing {
            if flags & libc::O_EXCL != 0 {
                return Err(err!(libc::EEXIST, "{name:?} exists"));
            }
            // O_CREAT on an existing file: open it (truncating if asked).
            let opened = self
                .open_for_write(existing, flags | libc::O_WRONLY)
                .await?;
            return Ok((self.attr(existing)?, opened));
        }
        let target = UploadTarget {
            parent_folder_id: self.folder_id(parent)?,
            name: remote_name.clone(),
            replaces: None,
            carry: Carry::default(),
        };
        let staged = uploader.stage_new(target)?;
        let ino = {
            let mut ns = self.ns.lock().unwrap();
            let ino = ns.insert(
                parent,
                Entry::Local {
                    name: remote_name,
                    created: SystemTime::now(),
                },
            );
            ns.get_mut(ino).expect("just inserted").staged = Some(staged.clone());
            ino
        };
        let fh = self.add_handle(Handle::Write { ino, staged });
        Ok((
            self.attr(ino)?,
            Opened {
                fh,
                keep_cache: false,
            },
        ))
    }

    /// flush/fsync: uploads the staged copy if it changed. The upload's result is the result.
    pub async fn flush(&self, fh: u64) -> Result<()> {
        let (ino, staged) = match self.handles.lock().unwrap().get(&fh) {
            Some(Handle::Write { ino, staged }) => (*ino, staged.clone()),
            _ => return Ok(()),
        };
        self.commit(ino, &staged).await
    }

    async fn commit(&self, ino: Ino, staged: &Arc<StagedFile>) -> Result<()> {
        if !staged.is_dirty() {
            return Ok(());
        }
        let uploader = self.check_writable()?;
        let replaced = staged.target().replaces;
        let file = uploader.commit(staged).await?;
        if let Some(old) = replaced {
            if old != file.id {
                self.reader.invalidate(&old);
            }
        }
        if let Some(url) = file.url() {
            self.reader.offer_url(&file.id, url);
        }
        let mut ns = self.ns.lock().unwrap();
        ns.set_entry(ino, Entry::File(file));
        Ok(())
    }

    pub async fn release(&self, fh: u64) -> Result<()> {
        let handle = self.handles.lock().unwrap().remove(&fh);
        if let Some(Handle::Read { file_id, .. }) = &handle {
            self.reader_closed(file_id);
        }
        let Some(Handle::Write { ino, staged }) = handle else {
            return Ok(());
        };
        // Normally flush already uploaded; this catches writes after the last flush. A
        // failed upload is already in the pending area, retried in the background.
        let result = if staged.is_pending() {
            Ok(())
        } else {
            self.commit(ino, &staged).await
        };
        if !self.has_writer(&staged) && !staged.is_dirty() {
            let mut ns = self.ns.lock().unwrap();
            if let Some(inode) = ns.get_mut(ino) {
                if inode
                    .staged
                    .as_ref()
                    .is_some_and(|s| Arc::ptr_eq(s, &staged))
                {
                    inode.staged = None;
                }
            }
        }
        result
    }

    // ----- setattr --------------------------------------------------------------------

    /// Only the size is stored; mode, owner and times are accepted without effect.
    pub async fn setattr(&self, ino: Ino, fh: Option<u64>, size: Option<u64>) -> Result<Attr> {
        if let Some(size) = size {
            let uploader = self.check_writable()?.clone();
            let from_handle = fh.and_then(|fh| match self.handles.lock().unwrap().get(&fh) {
                Some(Handle::Write { staged, .. }) => Some(staged.clone()),
                _ => None,
            });
            match from_handle {
                Some(staged) => staged.set_len(size)?,
                None => {
                    // `truncate -s` on a closed file: stage, resize, upload now.
                    let staged = self.stage(ino, &uploader, size == 0).await?;
                    staged.set_len(size)?;
                    let open_elsewhere = self.has_writer(&staged);
                    if !open_elsewhere {
                        self.commit(ino, &staged).await?;
                        let mut ns = self.ns.lock().unwrap();
                        if let Some(inode) = ns.get_mut(ino) {
                            inode.staged = None;
                        }
                    }
                }
            }
        }
        self.attr(ino)
    }

    // ----- namespace changes ----------------------------------------------------------

    fn child_of(&self, parent: Ino, name: &OsStr) -> Result<Ino> {
        let name = name
            .to_str()
            .ok_or_else(|| err!(libc::ENOENT, "non-UTF-8 name"))?;
        self.ns
            .lock()
            .unwrap()
            .child(parent, name)
            .ok_or_else(|| err!(libc::ENOENT, "no entry {name:?}"))
    }

    pub async fn mkdir(&self, parent: Ino, name: &OsStr) -> Result<Attr> {
        self.check_writable()?;
        let remote_name = names::unescape(name).map_err(|e| err!(e, "invalid name {name:?}"))?;
        self.ensure_listing(parent).await?;
        if self.child_of(parent, name).is_ok() {
            return Err(err!(libc::EEXIST, "{name:?} exists"));
        }
        let parent_id = self.folder_id(parent)?;
        let folder = self
            .client
            .create_folder(&remote_name, parent_id.as_deref())
            .await
            .map_err(|e| Error::api(format!("mkdir {name:?}"), e))?;
        let ino = {
            let mut ns = self.ns.lock().unwrap();
            let ino = ns.insert(parent, Entry::Folder(folder));
            // A new folder is empty: no need to list it.
            ns.apply_listing(ino, vec![], vec![]);
            ino
        };
        self.attr(ino)
    }

    pub async fn unlink(&self, parent: Ino, name: &OsStr) -> Result<()> {
        self.check_writable()?;
        self.ensure_listing(parent).await?;
        let ino = self.child_of(parent, name)?;
        let (entry, staged) = {
            let ns = self.ns.lock().unwrap();
            let i = ns.get(ino).expect("child exists");
            (i.entry.clone(), i.staged.clone())
        };
        match entry {
            Entry::Root | Entry::Folder(_) => {
                return Err(err!(libc::EISDIR, "{name:?} is a directory"))
            }
            Entry::File(f) => match self.client.delete_file(&f.id).await {
                Ok(()) => self.reader.invalidate(&f.id),
                Err(e) if e.kind == ApiErrorKind::NotFound => {}
                Err(e) => return Err(Error::api(format!("unlink {name:?}"), e)),
            },
            Entry::Local { .. } => {}
        }
        if let Some(s) = staged {
            s.discard();
        }
        self.ns.lock().unwrap().remove(ino);
        Ok(())
    }

    pub async fn rmdir(&self, parent: Ino, name: &OsStr) -> Result<()> {
        self.check_writable()?;
        self.ensure_listing(parent).await?;
        let ino = self.child_of(parent, name)?;
        self.remove_dir(ino, name).await
    }

    async fn remove_dir(&self, ino: Ino, name: &OsStr) -> Result<()> {
        let id = match self.ns.lock().unwrap().get(ino).map(|i| i.entry.clone()) {
            Some(Entry::Folder(f)) => f.id,
            Some(Entry::Root) => return Err(err!(libc::EBUSY, "cannot remove the root")),
            _ => return Err(err!(libc::ENOTDIR, "{name:?} is not a directory")),
        };
        self.ensure_listing(ino).await?;
        if !self.ns.lock().unwrap().is_empty_dir(ino) {
            return Err(err!(libc::ENOTEMPTY, "{name:?} is not empty"));
        }
        match self.client.delete_folder(&id).await {
            Ok(()) => {}
            Err(e) if e.kind == ApiErrorKind::NotFound => {}
            Err(e) => {
                // Someone added something remotely: relist so the user sees it.
                self.ns.lock().unwrap().invalidate(ino);
                return Err(Error::api(format!("rmdir {name:?}"), e));
            }
        }
        self.ns.lock().unwrap().remove(ino);
        Ok(())
    }

    /// rename(2). Onto an existing entry: move first, then delete the old target, so
    /// there is never a moment where neither exists.
    pub async fn rename(
        &self,
        parent: Ino,
        name: &OsStr,
        new_parent: Ino,
        new_name: &OsStr,
        flags: u32,
    ) -> Result<()> {
        self.check_writable()?;
        if flags & libc::RENAME_EXCHANGE != 0 {
            return Err(err!(libc::EINVAL, "RENAME_EXCHANGE is not supported"));
        }
        let new_remote =
            names::unescape(new_name).map_err(|e| err!(e, "invalid name {new_name:?}"))?;
        self.ensure_listing(parent).await?;
        self.ensure_listing(new_parent).await?;
        let ino = self.child_of(parent, name)?;
        let target = self.child_of(new_parent, new_name).ok();
        if target == Some(ino) {
            return Ok(());
        }
        let (entry, staged) = {
            let ns = self.ns.lock().unwrap();
            if ns.is_ancestor(ino, new_parent) {
                return Err(err!(libc::EINVAL, "cannot move {name:?} into itself"));
            }
            let i = ns.get(ino).expect("child exists");
            (i.entry.clone(), i.staged.clone())
        };
        if let Some(t) = target {
            if flags & libc::RENAME_NOREPLACE != 0 {
                return Err(err!(libc::EEXIST, "{new_name:?} exists"));
            }
            let t_is_dir = self
                .ns
                .lock()
                .unwrap()
                .get(t)
                .is_some_and(|i| i.entry.is_dir());
            match (entry.is_dir(), t_is_dir) {
                (true, false) => {
                    return Err(err!(libc::ENOTDIR, "{new_name:?} is not a directory"))
                }
                (false, true) => return Err(err!(libc::EISDIR, "{new_name:?} is a directory")),
                (true, true) => {
                    self.ensure_listing(t).await?;
                    if !self.ns.lock().unwrap().is_empty_dir(t) {
                        return Err(err!(libc::ENOTEMPTY, "{new_name:?} is not empty"));
                    }
                }
                (false, false) => {}
            }
        }
        let new_folder = self.folder_id(new_parent)?;
        let moved = parent != new_parent;
        match &entry {
            Entry::Root => return Err(err!(libc::EBUSY, "cannot rename the root")),
            Entry::Folder(f) => {
                let update = FolderUpdate {
                    name: Some(new_remote.clone()),
                    parent_id: moved.then(|| new_folder.clone()),
                };
                let folder = self
                    .client
                    .update_folder(&f.id, &update)
                    .await
                    .map_err(|e| Error::api(format!("rename {name:?} -> {new_name:?}"), e))?;
                let mut ns = self.ns.lock().unwrap();
                ns.reparent(ino, new_parent);
                ns.set_entry(ino, Entry::Folder(folder));
            }
            Entry::File(f) => {
                let update = FileUpdate {
                    title: Some(new_remote.clone()),
                    folder_id: moved.then(|| new_folder.clone()),
                    ..Default::default()
                };
                let file = self
                    .client
                    .update_file(&f.id, &update)
                    .await
                    .map_err(|e| Error::api(format!("rename {name:?} -> {new_name:?}"), e))?;
                let mut ns = self.ns.lock().unwrap();
                ns.reparent(ino, new_parent);
                ns.set_entry(ino, Entry::File(file));
            }
            Entry::Local { created, .. } => {
                let created = *created;
                let mut ns = self.ns.lock().unwrap();
                ns.reparent(ino, new_parent);
                ns.set_entry(
                    ino,
                    Entry::Local {
                        name: new_remote.clone(),
                        created,
                    },
                );
            }
        }
        // A copy being written follows the file to its new place and name.
        if let Some(s) = staged {
            let mut t = s.target();
            t.parent_folder_id = new_folder.clone();
            t.name = new_remote.clone();
            s.retarget(t)?;
        }
        if let Some(t) = target {
            let t_entry = self
                .ns
                .lock()
                .unwrap()
                .get(t)
                .map(|i| (i.entry.clone(), i.staged.clone()));
            let result = match t_entry {
                Some((Entry::Folder(f), _)) => self.client.delete_folder(&f.id).await,
                Some((Entry::File(f), staged)) => {
                    if let Some(s) = staged {
                        s.discard();
                    }
                    self.reader.invalidate(&f.id);
                    self.client.delete_file(&f.id).await
                }
                Some((Entry::Local { .. }, Some(s))) => {
                    s.discard();
                    Ok(())
                }
                _ => Ok(()),
            };
            self.ns.lock().unwrap().remove(t);
            if let Err(e) = result {
                if e.kind != ApiErrorKind::NotFound {
                    // The move succeeded; the replaced entry lingers as a duplicate.
                    warn!(error = %e, "rename: could not delete the replaced {new_name:?}");
                    self.ns.lock().unwrap().invalidate(new_parent);
                }
            }
        }
        info!(from = ?name, to = ?new_name, "renamed");
        Ok(())
    }

    // ----- extended attributes -------------------------------------------------------

    pub const XATTRS: [&'static str; 9] = [
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
    const WRITABLE_XATTRS: [&'static str; 6] = [
        "title",
        "description",
        "alt_text",
        "is_favorite",
        "is_private",
        "sort_order",
    ];
    const XATTR_PREFIX: &'static str = "user.mediafs.";

    fn xattr_value(entry: &Entry, key: &str) -> Option<String> {
        match entry {
            Entry::File(f) => match key {
                "title" => f.title.clone(),
                "description" => f.description.clone(),
                "alt_text" => f.alt_text.clone(),
                "is_favorite" => f.is_favorite.map(|b| b.to_string()),
                "is_private" => f.is_private.map(|b| b.to_string()),
                "sort_order" => f.sort_order.map(|n| n.to_string()),
                "id" => Some(f.id.clone()),
                "file_name" => f.upload.as_ref().map(|u| u.file_name.clone()),
                "mime_type" => f
                    .upload
                    .as_ref()
                    .and_then(|u| u.mime_type.clone())
                    .or_else(|| {
                        Some(
                            mime_guess::from_path(names::file_remote_name(f))
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

    pub fn listxattr(&self, ino: Ino) -> Result<Vec<u8>> {
        let ns = self.ns.lock().unwrap();
        let inode = ns
            .get(ino)
            .ok_or_else(|| err!(libc::ENOENT, "unknown inode {ino}"))?;
        let mut out = Vec::new();
        for key in Self::XATTRS {
            if Self::xattr_value(&inode.entry, key).is_some() {
                out.extend_from_slice(Self::XATTR_PREFIX.as_bytes());
                out.extend_from_slice(key.as_bytes());
                out.push(0);
            }
        }
        Ok(out)
    }

    pub fn getxattr(&self, ino: Ino, name: &OsStr) -> Result<Vec<u8>> {
        let ns = self.ns.lock().unwrap();
        let inode = ns
            .get(ino)
            .ok_or_else(|| err!(libc::ENOENT, "unknown inode {ino}"))?;
        let key = name
            .to_str()
            .and_then(|n| n.strip_prefix(Self::XATTR_PREFIX));
        key.and_then(|k| Self::xattr_value(&inode.entry, k))
            .map(String::into_bytes)
            .ok_or_else(|| err!(libc::ENODATA, "no attribute {name:?}"))
    }

    pub async fn setxattr(&self, ino: Ino, name: &OsStr, value: &[u8]) -> Result<()> {
        self.check_writable()?;
        let key = name
            .to_str()
            .and_then(|n| n.strip_prefix(Self::XATTR_PREFIX))
            .ok_or_else(|| err!(libc::ENOTSUP, "only user.mediafs.* attributes are stored"))?;
        if !Self::WRITABLE_XATTRS.contains(&key) {
            return Err(err!(libc::EPERM, "user.mediafs.{key} is read-only"));
        }
        let value = std::str::from_utf8(value)
            .map_err(|_| err!(libc::EINVAL, "attribute value is not UTF-8"))?
            .trim_end_matches('\0');
        let bad = |what: &str| {
            err!(
                libc::EINVAL,
                "user.mediafs.{key} must be {what}, got {value:?}"
            )
        };
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
        let id = match self.ns.lock().unwrap().get(ino).map(|i| i.entry.clone()) {
            Some(Entry::File(f)) => f.id,
            Some(Entry::Local { .. }) => return Err(err!(libc::EAGAIN, "file not uploaded yet")),
            Some(_) => return Err(err!(libc::ENOTSUP, "folders have no writable attributes")),
            None => return Err(err!(libc::ENOENT, "unknown inode {ino}")),
        };
        let file = self
            .client
            .update_file(&id, &update)
            .await
            .map_err(|e| Error::api(format!("setxattr {key}"), e))?;
        self.ns.lock().unwrap().set_entry(ino, Entry::File(file));
        Ok(())
    }

    // ----- misc -----------------------------------------------------------------------

    pub fn statfs(&self) -> FsStats {
        let files = self.ns.lock().unwrap().inode_count() as u64;
        // The service publishes no quota: report a large, mostly free volume so tools that
        // check free space before copying (cp, rsync, installers) go ahead.
        let blocks = 1u64 << 40; // 4 PiB of 4 KiB blocks
        let used = self.uploader.as_ref().map_or(0, |u| u.staging_bytes()) / BLOCK;
        FsStats {
            blocks,
            bfree: blocks - used,
            files: files + (1 << 32),
            ffree: 1 << 32,
            bsize: BLOCK as u32,
            namelen: 255,
        }
    }

    /// SIGHUP: forget every cached listing and block; the next access asks the service.
    pub fn drop_caches(&self) {
        self.ns.lock().unwrap().invalidate_all();
        self.reader.clear();
        info!("caches dropped");
    }

    /// Unmount: wait (bounded) for uploads in progress; returns what is still pending.
    pub async fn shutdown(&self, timeout: Duration) -> Vec<PendingInfo> {
        match &self.uploader {
            Some(u) => u.shutdown(timeout).await,
            None => Vec::new(),
        }
    }

    #[cfg(test)]
    pub(crate) fn ns_for_tests(&self) -> &Arc<Mutex<Namespace>> {
        &self.ns
    }
}
