//! `MediaFs`: the filesystem operations, in terms of inodes and file handles, without FUSE
//! types. The FUSE layer (`crate::fuse`) calls one method per kernel request; each
//! delegates to the module that owns the concern:
//!
//! - names, listings and namespace changes: [`Superblock`];
//! - open files, reads, writes and uploads: [`OpenFiles`] (over the read and write paths);
//! - attributes: [`crate::fs::attr`]; extended attributes: [`crate::fs::xattr`].

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tracing::info;

use crate::err;
use crate::fs::attr::{self, Attr, Caller, Change, DirEntry, FsStats};
use crate::fs::entry::Entry;
use crate::fs::error::{Error, Result};
use crate::fs::files::{OpenFiles, Opened};
use crate::fs::namespace::Ino;
use crate::fs::read::Reader;
use crate::fs::superblock::{References, Superblock};
use crate::fs::write::PendingInfo;
use crate::fs::xattr;

pub struct MediaFs {
    sb: Arc<Superblock>,
    files: Arc<OpenFiles>,
    reader: Arc<Reader>,
}

impl MediaFs {
    /// The core's parts, assembled by [`crate::fs::Core::build`].
    pub(crate) fn from_parts(
        sb: Arc<Superblock>,
        files: Arc<OpenFiles>,
        reader: Arc<Reader>,
    ) -> Self {
        MediaFs { sb, files, reader }
    }

    /// The read path (its cache counters are part of `mediafs status`).
    pub fn reader(&self) -> &Arc<Reader> {
        &self.reader
    }

    /// The write path, `None` on a read-only mount (its pending uploads are part of
    /// `mediafs status`).
    pub fn uploader(&self) -> Option<&Arc<crate::fs::write::Uploader>> {
        self.files.uploader()
    }

    pub fn config(&self) -> &crate::fs::config::FsConfig {
        self.sb.config()
    }

    fn check_writable(&self) -> Result<()> {
        self.files.check_writable().map(|_| ())
    }

    // ----- names and attributes -------------------------------------------------------

    pub async fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Attr> {
        self.sb.lookup(parent, name).await
    }

    /// FUSE `forget`: the kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: Ino, n: u64) {
        self.sb.forget(ino, n);
    }

    /// Readdirplus entries handed to the kernel count as lookups: remembered under one
    /// lock per reply (an inode gone meanwhile is left out).
    pub fn references(&self) -> References<'_> {
        self.sb.references()
    }

    pub async fn getattr(&self, ino: Ino) -> Result<Attr> {
        self.sb.attr(ino)
    }

    /// truncate (`size`), and chmod/chown/utimens (`change`), kept as local attributes.
    pub async fn setattr(
        &self,
        ino: Ino,
        fh: Option<u64>,
        size: Option<u64>,
        change: &Change,
        caller: Caller,
    ) -> Result<Attr> {
        self.files.setattr(ino, fh, size, change, caller).await
    }

    // ----- directories ----------------------------------------------------------------

    /// opendir: snapshots the entries (the kernel pages through them by index).
    pub async fn readdir_snapshot(&self, ino: Ino) -> Result<u64> {
        let entries = self.sb.dir_entries(ino).await?;
        Ok(self.files.add_dir(entries))
    }

    /// The entries of an open directory, as snapshotted at opendir.
    pub fn readdir(&self, fh: u64) -> Result<Arc<Vec<DirEntry>>> {
        self.files.handles.dir_entries(fh)
    }

    /// Whether `fh` is open for writing: only then may its flush upload (the others answer
    /// at once; the FUSE layer runs those on its own thread).
    pub fn is_writer(&self, fh: u64) -> bool {
        self.files.handles.writer(fh).is_ok()
    }

    pub fn release_handle(&self, fh: u64) {
        self.files.handles.remove(fh);
    }

    // ----- files ------------------------------------------------------------------------

    /// `pid`: the calling thread (only a write handle's opener is kept, see `flush`).
    pub async fn open(&self, ino: Ino, flags: i32, pid: u32) -> Result<Opened> {
        self.files.open(ino, flags, pid).await
    }

    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Bytes> {
        self.files.read(fh, offset, size).await
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<usize> {
        self.files.write(fh, offset, data)
    }

    pub fn fallocate(&self, fh: u64, offset: u64, len: u64, mode: i32) -> Result<()> {
        self.files.fallocate(fh, offset, len, mode)
    }

    pub async fn create(
        &self,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        flags: i32,
        pid: u32,
    ) -> Result<(Attr, Opened)> {
        self.files.create(parent, name, mode, flags, pid).await
    }

    /// flush: uploads the staged copy if it changed (or holds back a temporary file's
    /// upload for its rename, or leaves a child's close of an inherited descriptor to the
    /// opener's); the upload's result is the result.
    pub async fn flush(&self, fh: u64, pid: u32) -> Result<()> {
        self.files.flush(fh, pid).await
    }

    /// fsync: uploads the staged copy now if it changed.
    pub async fn fsync(&self, fh: u64) -> Result<()> {
        self.files.fsync(fh).await
    }

    pub async fn release(&self, fh: u64) -> Result<()> {
        self.files.release(fh).await
    }

    // ----- namespace changes ------------------------------------------------------------

    /// `mode`: the permission bits asked for, the caller's umask applied.
    pub async fn mkdir(&self, parent: Ino, name: &OsStr, mode: u32) -> Result<Attr> {
        self.check_writable()?;
        self.sb.mkdir(parent, name, mode).await
    }

    pub async fn unlink(&self, parent: Ino, name: &OsStr) -> Result<()> {
        self.check_writable()?;
        self.sb.unlink(parent, name).await
    }

    pub async fn rmdir(&self, parent: Ino, name: &OsStr) -> Result<()> {
        self.check_writable()?;
        self.sb.rmdir(parent, name).await
    }

    pub async fn rename(
        &self,
        parent: Ino,
        name: &OsStr,
        new_parent: Ino,
        new_name: &OsStr,
        flags: u32,
    ) -> Result<()> {
        let uploader = self.files.check_writable()?.clone();
        let leftover = self
            .sb
            .rename(parent, name, new_parent, new_name, flags)
            .await?;
        if let Some(id) = leftover {
            uploader.retry_delete(id);
        }
        // A save through a temporary file: its upload goes now, under the final name.
        match self.sb.child_of(new_parent, new_name) {
            Ok(ino) => self.files.renamed(ino).await,
            Err(_) => Ok(()),
        }
    }

    // ----- extended attributes ----------------------------------------------------------

    pub fn listxattr(&self, ino: Ino) -> Result<Vec<u8>> {
        let ns = self.sb.lock();
        let inode = ns
            .get(ino)
            .ok_or_else(|| err!(NotFound, "unknown inode {ino}"))?;
        Ok(xattr::list(&inode.entry))
    }

    pub fn getxattr(&self, ino: Ino, name: &OsStr) -> Result<Vec<u8>> {
        let ns = self.sb.lock();
        let inode = ns
            .get(ino)
            .ok_or_else(|| err!(NotFound, "unknown inode {ino}"))?;
        xattr::get(&inode.entry, name)
    }

    /// Sets a writable service field. A file being written keeps it in its upload target
    /// too, so the Create File call sends it (and an overwrite carries it).
    pub async fn setxattr(&self, ino: Ino, name: &OsStr, value: &[u8]) -> Result<()> {
        self.check_writable()?;
        let (entry, staged) = {
            let ns = self.sb.lock();
            let inode = ns
                .get(ino)
                .ok_or_else(|| err!(NotFound, "unknown inode {ino}"))?;
            (inode.entry.clone(), inode.staged.clone())
        };
        let Some(update) = xattr::update(&entry, name, value)? else {
            return Ok(()); // already so
        };
        if entry.is_dir() {
            return Err(err!(NotSupported, "folders have no writable attributes"));
        }
        if let Some(s) = &staged {
            if update.title.is_some() {
                return Err(err!(TryAgain, "file open for writing: rename it instead"));
            }
            let mut t = s.target();
            let c = &mut t.carry;
            c.description = update.description.clone().or(c.description.take());
            c.alt_text = update.alt_text.clone().or(c.alt_text.take());
            c.is_favorite = update.is_favorite.or(c.is_favorite);
            c.is_private = update.is_private.or(c.is_private);
            c.sort_order = update.sort_order.or(c.sort_order);
            s.retarget(t)?;
        }
        let id = match entry {
            Entry::File(f) => f.id,
            _ => return Ok(()), // not uploaded yet: sent with Create File
        };
        let file = self
            .sb
            .client()
            .update_file(&id, &update)
            .await
            .map_err(|e| Error::api(format!("setxattr {name:?}"), e))?;
        self.sb.set_file(ino, file);
        Ok(())
    }

    // ----- the mount as a whole ---------------------------------------------------------

    pub fn statfs(&self) -> FsStats {
        let staged = self.files.uploader().map_or(0, |u| u.staging_bytes());
        attr::stats(self.sb.inode_count() as u64, staged)
    }

    /// SIGHUP: forget every cached listing and block; the next access asks the service.
    pub fn drop_caches(&self) {
        self.sb.invalidate_all();
        self.reader.clear();
        info!("caches dropped");
    }

    /// Unmount: wait (bounded) for uploads in progress; returns what is still pending.
    pub async fn shutdown(&self, timeout: Duration) -> Vec<PendingInfo> {
        let pending = match self.files.uploader() {
            Some(u) => u.shutdown(timeout).await,
            None => Vec::new(),
        };
        self.sb.flush_attrs();
        pending
    }

    #[cfg(test)]
    pub(crate) fn superblock(&self) -> &Superblock {
        &self.sb
    }
}
