//! File attributes as the kernel needs them, built from the core's own entries (dates were
//! parsed when the entry arrived).

use std::time::SystemTime;

use crate::fs::config::FsConfig;
use crate::fs::entry::Entry;
use crate::fs::local_attrs::Stored;
use crate::fs::namespace::{Ino, Inode};

/// Block size reported by `stat` and `statfs`.
pub const BLOCK: u64 = 4096;

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
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub crtime: SystemTime,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
}

/// One entry of an open directory.
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

/// A time `utimens` sets.
#[derive(Debug, Clone, Copy)]
pub enum SetTime {
    Now,
    At(SystemTime),
}

impl SetTime {
    pub fn resolve(self) -> SystemTime {
        match self {
            SetTime::Now => SystemTime::now(),
            SetTime::At(t) => t,
        }
    }
}

/// What `chmod`, `chown` and `utimens` ask to change (`None`: unchanged).
#[derive(Debug, Clone, Copy, Default)]
pub struct Change {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.mode.is_none()
            && self.uid.is_none()
            && self.gid.is_none()
            && self.atime.is_none()
            && self.mtime.is_none()
    }
}

/// Who asks (the FUSE request's credentials).
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

/// The attributes of `inode`, with the locally `stored` ones (see
/// [`crate::fs::local_attrs`]) on top of the service's. A file with changes not uploaded
/// shows "now" as mtime and ctime unless a time was set after its last write. `nlink`
/// comes from the namespace.
pub fn of(inode: &Inode, c: &FsConfig, stored: &Stored, nlink: u32) -> Attr {
    let (kind, size, mtime, crtime) = match &inode.entry {
        Entry::Root => (
            Kind::Dir,
            BLOCK,
            SystemTime::UNIX_EPOCH,
            SystemTime::UNIX_EPOCH,
        ),
        Entry::Folder(f) => (Kind::Dir, BLOCK, f.updated, f.created),
        Entry::File(f) => (Kind::File, f.size, f.updated, f.created),
        Entry::Local { created, .. } => (Kind::File, 0, *created, *created),
    };
    let size = inode.staged.as_ref().map_or(size, |s| s.len());
    let dirty = inode.staged.as_ref().is_some_and(|s| s.is_dirty());
    let service_mtime = if dirty { SystemTime::now() } else { mtime };
    let mtime = stored.mtime.unwrap_or(service_mtime);
    let ctime = if dirty {
        SystemTime::now()
    } else {
        stored.ctime.unwrap_or(service_mtime)
    };
    let default_perm = if kind == Kind::Dir {
        c.dir_mode
    } else {
        c.file_mode
    };
    Attr {
        ino: inode.ino,
        kind,
        size,
        atime: stored.atime.unwrap_or(mtime),
        mtime,
        ctime,
        crtime,
        perm: stored.mode.map_or(default_perm, |m| (m & 0o7777) as u16),
        nlink,
        uid: stored.uid.unwrap_or(c.uid),
        gid: stored.gid.unwrap_or(c.gid),
    }
}

/// `statfs`: the service publishes no quota, so report a large, mostly free volume, so tools
/// that check free space before copying (cp, rsync, installers) go ahead. `staged_bytes`
/// are in use.
pub fn stats(inodes: u64, staged_bytes: u64) -> FsStats {
    let blocks = 1u64 << 40; // 4 PiB of 4 KiB blocks
    FsStats {
        blocks,
        bfree: blocks - staged_bytes / BLOCK,
        files: inodes + (1 << 32),
        ffree: 1 << 32,
        bsize: BLOCK as u32,
        namelen: 255,
    }
}
