//! Open files: opening a file for reading (over the read path) or for writing (over a
//! staged copy of the write path), reads, writes, commits on flush and close, and the
//! release of staged copies once nothing holds them.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use tracing::{debug, warn};

use crate::api::ApiErrorKind;
use crate::err;
use crate::fs::attr::{Attr, Caller, Change};
use crate::fs::config::FsConfig;
use crate::fs::entry::{Entry, FileEntry};
use crate::fs::error::{Error, Result};
use crate::fs::handles::{Handle, Handles, Source};
use crate::fs::names;
use crate::fs::namespace::Ino;
use crate::fs::process;
use crate::fs::read::Reader;
use crate::fs::superblock::Superblock;
use crate::fs::tempname;
use crate::fs::write::{Carry, Landed, StagedFile, UploadTarget, Uploader};

/// Files larger than this are not uploaded again when renamed just after their upload
/// (see [`OpenFiles::renamed`]): the fix would cost a download and an upload.
const REUPLOAD_MAX_BYTES: u64 = 64 << 20;

/// What `open` tells the kernel.
pub struct Opened {
    pub fh: u64,
    /// The remote bytes are the ones the kernel may have cached from an earlier open.
    pub keep_cache: bool,
    /// The kernel may hold attributes of another version of the file: a read through a
    /// handle still on the old version shortens its idea of the size. They must be
    /// dropped, or this open reads the new version only up to the old size.
    pub stale_attrs: bool,
    /// Another version of the file is still read through an older handle: this handle
    /// bypasses the kernel's page cache, which the two would otherwise share.
    pub direct_io: bool,
}

pub struct OpenFiles {
    sb: Arc<Superblock>,
    pub(crate) handles: Handles,
    reader: Arc<Reader>,
    /// `None` on a read-only mount.
    uploader: Option<Arc<Uploader>>,
    /// Remote files this mount uploaded, by id, with when (only the last
    /// `temp_upload_delay` matter).
    recent: Mutex<HashMap<String, Instant>>,
}

impl OpenFiles {
    pub fn new(
        sb: Arc<Superblock>,
        handles: Handles,
        reader: Arc<Reader>,
        uploader: Option<Arc<Uploader>>,
    ) -> Self {
        OpenFiles {
            sb,
            handles,
            reader,
            uploader,
            recent: Mutex::new(HashMap::new()),
        }
    }

    fn config(&self) -> &FsConfig {
        self.sb.config()
    }

    pub fn uploader(&self) -> Option<&Arc<Uploader>> {
        self.uploader.as_ref()
    }

    pub fn check_writable(&self) -> Result<&Arc<Uploader>> {
        match &self.uploader {
            Some(u) if !self.config().read_only => Ok(u),
            _ => Err(err!(ReadOnly, "read-only mount")),
        }
    }

    /// Adds a file handle; the inode stays while it is open.
    fn add(&self, ino: Ino, h: Handle) -> u64 {
        self.sb.lock().opened(ino);
        self.handles.add(h)
    }

    /// Opens `ino` for thread `pid` (the caller of a FUSE request).
    pub async fn open(&self, ino: Ino, flags: i32, pid: u32) -> Result<Opened> {
        let acc = flags & libc::O_ACCMODE;
        if acc == libc::O_WRONLY || acc == libc::O_RDWR {
            return self.open_for_write(ino, flags, pid).await;
        }
        // A file being written is read from its staged copy.
        let (file, staged) = {
            let ns = self.sb.lock();
            let inode = ns
                .get(ino)
                .ok_or_else(|| err!(NotFound, "unknown inode {ino}"))?;
            if inode.entry.is_dir() {
                return Err(err!(IsDir, "inode {ino} is a directory"));
            }
            let file = match &inode.entry {
                Entry::File(f) => Some((f.clone(), inode.refreshed)),
                _ => None,
            };
            (file, inode.staged.clone())
        };
        if let Some(staged) = staged {
            return Ok(Opened {
                fh: self.add(ino, Handle::StagedRead { ino, staged }),
                keep_cache: false,
                stale_attrs: false,
                direct_io: false,
            });
        }
        let (mut file, refreshed) =
            file.ok_or_else(|| err!(Io, "inode {ino} has no remote file"))?;
        // Refresh what is stale: the file may have been deleted or changed remotely.
        if refreshed.elapsed() >= self.config().dir_ttl {
            match self.sb.client().get_file(&file.id).await {
                Ok(f) => {
                    file = f.clone().into();
                    self.sb.set_file(ino, f);
                }
                Err(e) if e.kind == ApiErrorKind::NotFound => {
                    self.sb.lock().remove(ino);
                    return Err(Error::api(format!("opening {ino}"), e));
                }
                Err(e) => {
                    warn!(ino, error = %e, "could not refresh file before open; using cached metadata")
                }
            }
        }
        let (keep_cache, stale_attrs, direct_io) = {
            let mut ns = self.sb.lock();
            let inode = ns
                .get_mut(ino)
                .ok_or_else(|| err!(NotFound, "inode {ino} vanished"))?;
            let keep = inode.last_open_id.as_deref() == Some(file.id.as_str());
            let changed = !keep && inode.last_open_id.is_some();
            let mixed = changed
                && inode
                    .last_open_id
                    .as_deref()
                    .is_some_and(|old| self.sb.is_read(old));
            // While the old version is read, the page cache may hold its pages: the next
            // open must not keep them.
            if !mixed {
                inode.last_open_id = Some(file.id.clone());
            }
            (keep, changed, mixed)
        };
        let handle = self.reader.open(&file.id, file.size, file.url.clone());
        if !keep_cache {
            // With the kernel's pages kept, a read may never reach us.
            self.reader.fetch_if_small(&handle);
        }
        let h = Handle::Read {
            ino,
            file_id: file.id.clone(),
            reader: Arc::new(handle),
        };
        Ok(Opened {
            fh: self.add(ino, h),
            keep_cache,
            stale_attrs,
            direct_io,
        })
    }

    async fn open_for_write(&self, ino: Ino, flags: i32, pid: u32) -> Result<Opened> {
        let uploader = self.check_writable()?.clone();
        let truncate = flags & libc::O_TRUNC != 0;
        let opener = process::process_of(pid);
        for _ in 0..8 {
            let staged = self.stage(ino, &uploader, truncate).await?;
            let fh = self.add(
                ino,
                Handle::Write {
                    ino,
                    staged: staged.clone(),
                    opener,
                },
            );
            // The staged copy may have been let go between `stage` and `add` (a release of
            // the previous handle, see `let_go_if_unused`): then stage it again.
            let kept = self
                .sb
                .lock()
                .get(ino)
                .is_some_and(|i| i.staged.as_ref().is_some_and(|s| Arc::ptr_eq(s, &staged)));
            if !kept {
                self.handles.remove(fh);
                self.sb.lock().closed(ino);
                debug!(ino, "staged copy let go while opening; staging again");
                continue;
            }
            if truncate {
                staged.set_len(0)?;
            }
            return Ok(Opened {
                fh,
                keep_cache: false,
                stale_attrs: false,
                direct_io: false,
            });
        }
        Err(err!(
            Io,
            "inode {ino}: its staged copy kept being let go while opening"
        ))
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
            let ns = self.sb.lock();
            let inode = ns
                .get(ino)
                .ok_or_else(|| err!(NotFound, "unknown inode {ino}"))?;
            if let Some(s) = &inode.staged {
                return Ok(s.clone());
            }
            match &inode.entry {
                Entry::File(f) => (f.clone(), inode.parent),
                Entry::Root | Entry::Folder(_) => {
                    return Err(err!(IsDir, "inode {ino} is a directory"))
                }
                Entry::Local { .. } => {
                    return Err(err!(Io, "local file {ino} lost its staged copy"))
                }
            }
        };
        let target = UploadTarget {
            parent_folder_id: self.sb.folder_id(parent)?,
            name: file.name.clone(),
            replaces: Some(file.id.clone()),
            carry: Carry::from_entry(&file),
        };
        let reader = self.reader.clone();
        let size = file.size;
        let staged = uploader
            .stage_existing(
                target,
                size,
                truncate,
                move |staged: Arc<StagedFile>| async move {
                    let handle = reader.open(&file.id, size, file.url.clone());
                    let mut off = 0u64;
                    while off < size {
                        let chunk = reader.read(&handle, off, 1 << 20).await?;
                        if chunk.is_empty() {
                            return Err(err!(Io, "remote file ended early at {off} of {size}"));
                        }
                        staged.write_at(off, &chunk)?;
                        off += chunk.len() as u64;
                    }
                    Ok(())
                },
            )
            .await?;
        let mut ns = self.sb.lock();
        let inode = ns
            .get_mut(ino)
            .ok_or_else(|| err!(NotFound, "inode {ino} vanished"))?;
        // Another open may have staged it meanwhile: keep the first, drop ours unused.
        let kept = inode.staged.get_or_insert_with(|| staged.clone()).clone();
        if !Arc::ptr_eq(&kept, &staged) {
            staged.discard();
        }
        Ok(kept)
    }

    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Bytes> {
        match self.handles.source(fh)? {
            Source::Remote(h) => self.reader.read(&h, offset, size).await,
            Source::Staged(s) => Ok(Bytes::from(s.read_at(offset, size)?)),
        }
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<usize> {
        let (ino, staged) = self.handles.writer(fh)?;
        let n = staged.write_at(offset, data)?;
        self.sb.wrote(ino);
        Ok(n)
    }

    /// fallocate on a file open for writing: mode 0 (reserve and extend) and KEEP_SIZE
    /// (reserve); hole punching and the like have no meaning for a whole-file upload.
    pub fn fallocate(&self, fh: u64, offset: u64, len: u64, mode: i32) -> Result<()> {
        if mode & !libc::FALLOC_FL_KEEP_SIZE != 0 {
            return Err(err!(NotSupported, "fallocate mode {mode:#x}"));
        }
        let (ino, staged) = self.handles.writer(fh)?;
        staged.allocate(offset, len, mode & libc::FALLOC_FL_KEEP_SIZE != 0)?;
        self.sb.wrote(ino);
        Ok(())
    }

    pub async fn create(
        &self,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        flags: i32,
        pid: u32,
    ) -> Result<(Attr, Opened)> {
        let uploader = self.check_writable()?.clone();
        let remote_name =
            names::unescape(name).map_err(|k| Error::new(k, format!("invalid name {name:?}")))?;
        self.sb.ensure_listing(parent).await?;
        let existing = self.sb.lock().child(parent, &name.to_string_lossy());
        if let Some(existing) = existing {
            if flags & libc::O_EXCL != 0 {
                return Err(err!(Exists, "{name:?} exists"));
            }
            // O_CREAT on an existing file: open it (truncating if asked).
            let opened = self
                .open_for_write(existing, flags | libc::O_WRONLY, pid)
                .await?;
            self.sb.lock().remember(existing);
            return Ok((self.sb.attr(existing)?, opened));
        }
        let target = UploadTarget {
            parent_folder_id: self.sb.folder_id(parent)?,
            name: remote_name.clone(),
            replaces: None,
            carry: Carry::default(),
        };
        let staged = uploader.stage_new(target)?;
        let ino = self.sb.insert_local(parent, remote_name, staged.clone());
        // Held in memory until the upload lands (no remote id yet): no I/O to fail here.
        self.sb.set_created_mode(ino, mode)?;
        let opener = process::process_of(pid);
        let fh = self.add(
            ino,
            Handle::Write {
                ino,
                staged,
                opener,
            },
        );
        let opened = Opened {
            fh,
            keep_cache: false,
            stale_attrs: false,
            direct_io: false,
        };
        Ok((self.sb.attr(ino)?, opened))
    }

    /// flush (each close of a descriptor, by thread `pid`): uploads the staged copy if it
    /// changed; the upload's result is the result. A new file with a temporary name is
    /// held back instead, for the rename that usually follows (see
    /// [`OpenFiles::renamed`]). So is a close by another process than the opener (a
    /// child's copy of the descriptor, see [`process`]): the opener's close, or the last
    /// close, uploads.
    pub async fn flush(&self, fh: u64, pid: u32) -> Result<()> {
        match self.handles.writer_and_opener(fh) {
            Ok((_, staged, opener)) if !process::closed_by_opener(opener, pid) => {
                debug!(file = %staged.target().name, pid, "close of an inherited descriptor: the opener's close uploads");
                Ok(())
            }
            Ok((_, staged, _)) if self.hold(&staged) => Ok(()),
            Ok((ino, staged, _)) => self.commit(ino, &staged).await,
            Err(_) => Ok(()),
        }
    }

    /// fsync: uploads now, whatever the name (the caller asked for durability).
    pub async fn fsync(&self, fh: u64) -> Result<()> {
        match self.handles.writer(fh) {
            Ok((ino, staged)) => {
                staged.unhold();
                self.commit(ino, &staged).await
            }
            Err(_) => Ok(()),
        }
    }

    /// Holds back the upload of `staged` if it is a new file with a temporary name.
    fn hold(&self, staged: &Arc<StagedFile>) -> bool {
        let Some(u) = &self.uploader else {
            return false;
        };
        staged.is_dirty()
            && staged.is_new()
            && tempname::is_temp_name(&staged.target().name)
            && u.hold(staged)
    }

    /// After `ino` was renamed: a held upload of a file that now has its final name goes
    /// now, under that name, and its result is the rename's result (the bytes stay in the
    /// pending area if it fails). So is a file whose last writer is gone but that was not
    /// uploaded yet (its hold ran out during the rename).
    ///
    /// Fallback for temporary names [`tempname`] does not know: a file this mount
    /// uploaded within the last `temp_upload_delay`, renamed now, still has its old
    /// `fileName` and `mimeType` on the service; it is uploaded again under the new name
    /// (its bytes read back through the read path) and the copy under the old name
    /// deleted (recorded, retried). The rename itself is done either way, so a failure of
    /// that fix is logged and retried from the pending area, not reported.
    pub async fn renamed(&self, ino: Ino) -> Result<()> {
        let (staged, file) = {
            let ns = self.sb.lock();
            let Some(i) = ns.get(ino) else { return Ok(()) };
            let file = match &i.entry {
                Entry::File(f) => Some(f.clone()),
                _ => None,
            };
            (i.staged.clone(), file)
        };
        match (staged, file) {
            (Some(staged), _) => self.upload_renamed(ino, staged).await,
            (None, Some(f)) => {
                self.reupload_if_just_uploaded(ino, f).await;
                Ok(())
            }
            (None, None) => Ok(()),
        }
    }

    async fn reupload_if_just_uploaded(&self, ino: Ino, f: FileEntry) {
        let Ok(uploader) = self.check_writable().cloned() else {
            return;
        };
        let window = uploader.temp_upload_delay();
        let recent = self
            .recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&f.id)
            .is_some_and(|t| t.elapsed() <= window);
        let same_name = f.file_name.as_deref().is_none_or(|n| n == f.name);
        if !recent || same_name || f.size > REUPLOAD_MAX_BYTES || tempname::is_temp_name(&f.name) {
            return;
        }
        tracing::info!(file = %f.name, "renamed just after its upload: uploading it under the new name");
        let staged = match self.stage(ino, &uploader, false).await {
            Ok(s) => s,
            Err(e) => {
                warn!(file = %f.name, "could not re-upload under the new name: {e}");
                return;
            }
        };
        self.sb.keep_attrs_for_reupload(ino);
        if let Err(e) = staged.mark_changed() {
            warn!(file = %f.name, "could not re-upload under the new name: {e}");
        } else if let Err(e) = self.commit(ino, &staged).await {
            warn!(file = %f.name, "re-upload under the new name failed (retried): {e}");
        }
        self.let_go_if_unused(ino, staged);
    }

    /// The held (or not yet uploaded) file `staged` was renamed.
    async fn upload_renamed(&self, ino: Ino, staged: Arc<StagedFile>) -> Result<()> {
        if tempname::is_temp_name(&staged.target().name) || staged.is_pending() {
            return Ok(());
        }
        let held = staged.unhold();
        if !staged.is_dirty() {
            // Uploaded under its old name just before (its hold ran out): again, under
            // the new one (the old copy is replaced).
            let name = staged.target().name;
            if staged.uploaded_name().is_none_or(|n| n == name) {
                return Ok(());
            }
            staged.mark_changed()?;
        } else if !held && self.handles.has_writer(&staged) {
            return Ok(());
        }
        let result = self.commit(ino, &staged).await;
        self.let_go_if_unused(ino, staged);
        result
    }

    async fn commit(&self, ino: Ino, staged: &Arc<StagedFile>) -> Result<()> {
        if !staged.is_dirty() {
            return Ok(());
        }
        let uploader = self.check_writable()?;
        // What this upload replaced, as the uploader saw it: another commit of the same
        // file may land while this one waits, and attributes go from the file replaced.
        let (file, replaced) = uploader.commit(staged).await?;
        if let Some(old) = &replaced {
            if *old != file.id {
                self.reader.invalidate(old);
            }
        }
        if let Some(url) = file.url() {
            self.reader.offer_url(&file.id, url);
        }
        self.just_uploaded(&file.id);
        self.sb.uploaded(ino, replaced.as_deref(), file);
        Ok(())
    }

    pub async fn release(&self, fh: u64) -> Result<()> {
        let (handle, delete_now) = self.handles.remove(fh);
        if let (Some(id), Some(u)) = (delete_now, &self.uploader) {
            let u = u.clone();
            tokio::spawn(async move { u.delete_replaced_now(&id).await });
        }
        let (ino, staged) = match handle {
            Some(Handle::Write { ino, staged, .. }) => (ino, staged),
            Some(Handle::Read { ino, .. } | Handle::StagedRead { ino, .. }) => {
                self.sb.lock().closed(ino);
                return Ok(());
            }
            Some(Handle::Dir { .. }) | None => return Ok(()),
        };
        // Normally flush already uploaded; this catches writes after the last flush. A
        // failed upload is already in the pending area, retried in the background.
        let result = if staged.is_pending() || self.hold(&staged) {
            Ok(())
        } else {
            self.commit(ino, &staged).await
        };
        self.let_go_if_unused(ino, staged);
        self.sb.lock().closed(ino);
        result
    }

    /// Hands `staged` back to the write path if no handle writes to it and it has nothing
    /// left to upload. Checked and unstaged under the namespace lock, the lock under which
    /// an open for writing picks the staged copy up and checks it again once its handle is
    /// in the table (see [`OpenFiles::open_for_write`]): a release the kernel sends without
    /// waiting cannot delete the copy of an open that follows it.
    fn let_go_if_unused(&self, ino: Ino, staged: Arc<StagedFile>) {
        {
            let mut ns = self.sb.lock();
            if self.handles.has_writer(&staged) || staged.is_dirty() {
                return;
            }
            ns.unstage(ino, &staged);
        }
        if let Some(u) = &self.uploader {
            u.release(staged);
        }
    }

    /// Remembers an upload of this mount (for [`OpenFiles::renamed`]).
    fn just_uploaded(&self, id: &str) {
        let window = self
            .uploader
            .as_ref()
            .map_or(std::time::Duration::ZERO, |u| u.temp_upload_delay());
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.retain(|_, t| t.elapsed() <= window);
        if !window.is_zero() {
            recent.insert(id.to_string(), Instant::now());
        }
    }

    /// A pending upload landed in the background.
    pub fn landed(&self, landed: Landed) {
        self.just_uploaded(&landed.file.id);
        self.sb.landed(&landed);
        if !self.handles.has_writer(&landed.staged) {
            if let Some(u) = &self.uploader {
                u.release(landed.staged);
            }
        }
    }

    /// truncate, then chmod/chown/utimens (kept as local attributes).
    pub async fn setattr(
        &self,
        ino: Ino,
        fh: Option<u64>,
        size: Option<u64>,
        change: &Change,
        caller: Caller,
    ) -> Result<Attr> {
        if let Some(size) = size {
            self.check_writable()?;
            match fh.and_then(|fh| self.handles.writer(fh).ok()) {
                Some((_, staged)) => {
                    staged.set_len(size)?;
                    // A truncate is a write: mtime is "now" again, as after `write`.
                    self.sb.wrote(ino);
                }
                None => {
                    // Without a handle (`truncate -s`, or the kernel's truncate of an open
                    // with O_TRUNC): resize through a handle of its own, so that a racing
                    // release cannot let the staged copy go (see `open_for_write`). The
                    // upload is now unless a writer has the file open (its close uploads).
                    let flags = libc::O_WRONLY | if size == 0 { libc::O_TRUNC } else { 0 };
                    let o = self.open_for_write(ino, flags, 0).await?;
                    let (_, staged) = self.handles.writer(o.fh)?;
                    let resized = staged.set_len(size);
                    self.sb.wrote(ino);
                    self.handles.remove(o.fh);
                    let uploaded = if resized.is_ok() && !self.handles.has_writer(&staged) {
                        self.commit(ino, &staged).await
                    } else {
                        Ok(())
                    };
                    self.let_go_if_unused(ino, staged);
                    self.sb.lock().closed(ino);
                    resized?;
                    uploaded?;
                }
            }
        }
        if !change.is_empty() {
            self.check_writable()?;
        }
        self.sb.set_attrs(ino, change, caller)
    }

    /// A new directory handle over a snapshot of the entries.
    pub fn add_dir(&self, entries: Vec<crate::fs::attr::DirEntry>) -> u64 {
        self.handles.add(Handle::Dir {
            entries: Arc::new(entries),
        })
    }
}
