//! `fuser::Filesystem` glue: a few lines per operation over [`MediaFs`].
//!
//! Every request that may touch the network is handed to the tokio runtime and answered
//! from there, so FUSE worker threads never wait on the network and concurrent readers
//! of different files progress in parallel. Reads of state (lookup, getattr, read-only
//! open, read) run on the FUSE thread until they first have to wait: what is answered
//! from memory then costs no handoff to another thread, which on a busy machine is a
//! wakeup that can wait milliseconds for a core.

use std::ffi::OsStr;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use fuser::{
    CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, Notifier, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use tokio::runtime::Handle;
use tracing::{event, Instrument, Level};

use crate::fs::attr::{Attr, Caller, Change, Kind, SetTime};
use crate::fs::error::Error;
use crate::fs::filesystem::MediaFs;

pub struct FuseFs {
    fs: Arc<MediaFs>,
    rt: Handle,
    /// How long the kernel may cache attributes and names.
    ttl: Duration,
    /// Tells the kernel to drop what it cached; set once the session exists.
    notifier: Arc<OnceLock<Notifier>>,
}

impl FuseFs {
    pub fn new(
        fs: Arc<MediaFs>,
        rt: Handle,
        ttl: Duration,
        notifier: Arc<OnceLock<Notifier>>,
    ) -> Self {
        FuseFs {
            fs,
            rt,
            ttl,
            notifier,
        }
    }

    /// Runs `f` on the runtime inside a span named after the operation.
    fn spawn<F>(&self, op: &'static str, ino: u64, f: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let span = tracing::debug_span!("fuse", op, ino);
        self.rt.spawn(f.instrument(span));
    }

    /// Like [`Self::spawn`], but runs `f` here until it first has to wait, and only then
    /// on the runtime. For reads of state (lookup, getattr, a read-only open, read, and the
    /// flush and release of a read handle), where
    /// it saves a wakeup of another thread when the answer is in memory; changes keep
    /// their order through the runtime. The first poll's waker is a no-op; the spawned
    /// task polls again at once, so a wakeup in between is not lost.
    fn run_here<F>(&self, op: &'static str, ino: u64, f: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let span = tracing::debug_span!("fuse", op, ino);
        let mut fut = Box::pin(f.instrument(span));
        let _rt = self.rt.enter();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if fut.as_mut().poll(&mut cx).is_pending() {
            self.rt.spawn(fut);
        }
    }
}

fn to_file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.crtime,
        kind: match a.kind {
            Kind::Dir => FileType::Directory,
            Kind::File => FileType::RegularFile,
        },
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: 1 << 20,
        flags: 0,
    }
}

/// Logs a failed operation once, at the error's own level, and returns its errno.
fn fail(op: &str, e: &Error) -> Errno {
    let chain = e
        .source
        .as_ref()
        .map(|s| format!("{s:#}"))
        .unwrap_or_default();
    match e.level {
        Level::ERROR => event!(
            Level::ERROR,
            op,
            errno = e.errno(),
            "{}{}",
            e.message,
            chain_suffix(&chain)
        ),
        Level::WARN => event!(
            Level::WARN,
            op,
            errno = e.errno(),
            "{}{}",
            e.message,
            chain_suffix(&chain)
        ),
        Level::INFO => event!(
            Level::INFO,
            op,
            errno = e.errno(),
            "{}{}",
            e.message,
            chain_suffix(&chain)
        ),
        _ => event!(
            Level::DEBUG,
            op,
            errno = e.errno(),
            "{}{}",
            e.message,
            chain_suffix(&chain)
        ),
    }
    Errno::from_i32(e.errno())
}

fn chain_suffix(chain: &str) -> String {
    if chain.is_empty() {
        String::new()
    } else {
        format!(" ({chain})")
    }
}

macro_rules! reply_err {
    ($reply:expr, $op:expr, $e:expr) => {
        $reply.error(fail($op, &$e))
    };
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // readdirplus: `ls -l` gets names and attributes in one pass, no lookup per entry.
        let _ = config
            .add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO);
        let _ =
            config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS | InitFlags::FUSE_ASYNC_READ);
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        let _ = config.set_max_write(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let (fs, ttl, name) = (self.fs.clone(), self.ttl, name.to_owned());
        self.run_here("lookup", parent.0, async move {
            match fs.lookup(parent.0, &name).await {
                Ok(a) => reply.entry(&ttl, &to_file_attr(&a), Generation(0)),
                Err(e) => reply_err!(reply, "lookup", e),
            }
        });
    }

    /// The kernel dropped references to an inode (also called for each node of a
    /// `batch_forget`, whose default implementation in fuser does that).
    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let (fs, ttl) = (self.fs.clone(), self.ttl);
        self.run_here("getattr", ino.0, async move {
            match fs.getattr(ino.0).await {
                Ok(a) => reply.attr(&ttl, &to_file_attr(&a)),
                Err(e) => reply_err!(reply, "getattr", e),
            }
        });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let (fs, ttl) = (self.fs.clone(), self.ttl);
        let time = |t: TimeOrNow| match t {
            TimeOrNow::Now => SetTime::Now,
            TimeOrNow::SpecificTime(t) => SetTime::At(t),
        };
        let change = Change {
            mode,
            uid,
            gid,
            atime: atime.map(time),
            mtime: mtime.map(time),
        };
        let caller = Caller {
            uid: req.uid(),
            gid: req.gid(),
        };
        self.spawn("setattr", ino.0, async move {
            match fs
                .setattr(ino.0, fh.map(|f| f.0), size, &change, caller)
                .await
            {
                Ok(a) => reply.attr(&ttl, &to_file_attr(&a)),
                Err(e) => reply_err!(reply, "setattr", e),
            }
        });
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let (fs, ttl, name) = (self.fs.clone(), self.ttl, name.to_owned());
        self.spawn("mkdir", parent.0, async move {
            match fs.mkdir(parent.0, &name, mode & !umask).await {
                Ok(a) => reply.entry(&ttl, &to_file_attr(&a), Generation(0)),
                Err(e) => reply_err!(reply, "mkdir", e),
            }
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let (fs, name) = (self.fs.clone(), name.to_owned());
        self.spawn("unlink", parent.0, async move {
            match fs.unlink(parent.0, &name).await {
                Ok(()) => reply.ok(),
                Err(e) => reply_err!(reply, "unlink", e),
            }
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let (fs, name) = (self.fs.clone(), name.to_owned());
        self.spawn("rmdir", parent.0, async move {
            match fs.rmdir(parent.0, &name).await {
                Ok(()) => reply.ok(),
                Err(e) => reply_err!(reply, "rmdir", e),
            }
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (fs, name, newname) = (self.fs.clone(), name.to_owned(), newname.to_owned());
        self.spawn("rename", parent.0, async move {
            match fs
                .rename(parent.0, &name, newparent.0, &newname, flags.bits())
                .await
            {
                Ok(()) => reply.ok(),
                Err(e) => reply_err!(reply, "rename", e),
            }
        });
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let (fs, pid, notifier) = (self.fs.clone(), req.pid(), self.notifier.clone());
        let read_only = flags.0 & libc::O_ACCMODE == libc::O_RDONLY;
        let task = async move {
            match fs.open(ino.0, flags.0, pid).await {
                Ok(o) => {
                    if o.stale_attrs {
                        // Attributes only (offset -1): the pages go with the open's reply.
                        if let Some(Err(e)) = notifier.get().map(|n| n.inval_inode(ino, -1, 0)) {
                            event!(Level::DEBUG, ino = ino.0, "inval_inode: {e}");
                        }
                    }
                    let mut f = FopenFlags::empty();
                    if o.keep_cache {
                        f |= FopenFlags::FOPEN_KEEP_CACHE;
                    }
                    if o.direct_io {
                        f |= FopenFlags::FOPEN_DIRECT_IO;
                    }
                    if read_only {
                        // A read handle's close has nothing to do: no FLUSH round trip.
                        f |= FopenFlags::FOPEN_NOFLUSH;
                    }
                    reply.opened(FileHandle(o.fh), f)
                }
                Err(e) => reply_err!(reply, "open", e),
            }
        };
        if read_only {
            self.run_here("open", ino.0, task);
        } else {
            self.spawn("open", ino.0, task);
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let fs = self.fs.clone();
        self.run_here("read", ino.0, async move {
            match fs.read(fh.0, offset, size).await {
                Ok(data) => reply.data(&data),
                Err(e) => reply_err!(reply, "read", e),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // Local disk only: answered on the FUSE thread.
        match self.fs.write(fh.0, offset, data) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply_err!(reply, "write", e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        // Local disk only, like write.
        match self.fs.fallocate(fh.0, offset, length, mode) {
            Ok(()) => reply.ok(),
            Err(e) => reply_err!(reply, "fallocate", e),
        }
    }

    fn flush(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let (fs, pid) = (self.fs.clone(), req.pid());
        let task = async move {
            match fs.flush(fh.0, pid).await {
                Ok(()) => reply.ok(),
                Err(e) => reply_err!(reply, "flush", e),
            }
        };
        // A read handle's flush changes nothing, and its release only drops the handle:
        // both are answered here, without waking a runtime thread. A write handle's may
        // upload, and keep their order with other changes on the runtime.
        if self.fs.is_writer(fh.0) {
            self.spawn("flush", ino.0, task);
        } else {
            self.run_here("flush", ino.0, task);
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        let task = async move {
            match fs.release(fh.0).await {
                Ok(()) => reply.ok(),
                Err(e) => reply_err!(reply, "release", e),
            }
        };
        if self.fs.is_writer(fh.0) {
            self.spawn("release", ino.0, task);
        } else {
            self.run_here("release", ino.0, task);
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        self.spawn("fsync", ino.0, async move {
            match fs.fsync(fh.0).await {
                Ok(()) => reply.ok(),
                Err(e) => reply_err!(reply, "fsync", e),
            }
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let fs = self.fs.clone();
        self.spawn("opendir", ino.0, async move {
            match fs.readdir_snapshot(ino.0).await {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply_err!(reply, "opendir", e),
            }
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.fs.readdir(fh.0) {
            Ok(entries) => {
                for (i, e) in entries.iter().enumerate().skip(offset as usize) {
                    let kind = if e.attr.kind == Kind::Dir {
                        FileType::Directory
                    } else {
                        FileType::RegularFile
                    };
                    if reply.add(INodeNo(e.ino), i as u64 + 1, kind, &e.name) {
                        break;
                    }
                }
                reply.ok()
            }
            Err(e) => reply_err!(reply, "readdir", e),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        match self.fs.readdir(fh.0) {
            Ok(entries) => {
                let mut refs = self.fs.references();
                for (i, e) in entries.iter().enumerate().skip(offset as usize) {
                    // Every entry but `.` and `..` counts as a lookup in the kernel: count it
                    // once it is in the reply; leave out one that is gone meanwhile.
                    let counted = i < 2;
                    if !counted && !refs.remember(e.ino) {
                        continue;
                    }
                    if reply.add(
                        INodeNo(e.ino),
                        i as u64 + 1,
                        &e.name,
                        &self.ttl,
                        &to_file_attr(&e.attr),
                        Generation(0),
                    ) {
                        if !counted {
                            // Not sent (the buffer is full): not a reference after all.
                            refs.forget(e.ino, 1);
                        }
                        break;
                    }
                }
                drop(refs);
                reply.ok()
            }
            Err(e) => reply_err!(reply, "readdirplus", e),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.release_handle(fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.fs.statfs();
        reply.statfs(
            s.blocks, s.bfree, s.bfree, s.files, s.ffree, s.bsize, s.namelen, s.bsize,
        );
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let (fs, name, value) = (self.fs.clone(), name.to_owned(), value.to_vec());
        self.spawn("setxattr", ino.0, async move {
            match fs.setxattr(ino.0, &name, &value).await {
                Ok(()) => reply.ok(),
                Err(e) => reply_err!(reply, "setxattr", e),
            }
        });
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.fs.getxattr(ino.0, name) {
            Ok(v) => xattr_reply(reply, &v, size),
            Err(e) => reply_err!(reply, "getxattr", e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.fs.listxattr(ino.0) {
            Ok(v) => xattr_reply(reply, &v, size),
            Err(e) => reply_err!(reply, "listxattr", e),
        }
    }

    /// No ioctls (a `TCGETS` from every `isatty` check lands here): ENOTTY, as a local
    /// file answers, without fuser's warning per call.
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        reply.error(Errno::from_i32(libc::ENOTTY));
    }

    /// No symlinks (the service has none). `git init` probes for them; fuser's default
    /// answers EPERM too, but with a warning each time.
    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::from_i32(libc::EPERM));
    }

    /// No hard links (a remote file has one name). git tries link() before rename() for
    /// every object it writes; fuser's default answers EPERM too, but with a warning each.
    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::from_i32(libc::EPERM));
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::from_i32(libc::ENOTSUP));
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    // Not implemented, answered without fuser's multi-line warning (sqlite, cp and
    // mkfifo reach these). ENOSYS makes the kernel stop asking: fsyncdir then succeeds,
    // copy_file_range and lseek fall back to the kernel's generic code.
    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: i64,
        _whence: i32,
        reply: ReplyLseek,
    ) {
        reply.error(Errno::ENOSYS);
    }

    /// Device nodes and FIFOs: not supported (SEMANTICS.md).
    #[allow(clippy::too_many_arguments)]
    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        event!(
            Level::DEBUG,
            ?name,
            mode = format_args!("{mode:o}"),
            "mknod: not supported"
        );
        reply.error(Errno::ENOSYS);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let (fs, ttl, name, pid) = (self.fs.clone(), self.ttl, name.to_owned(), req.pid());
        self.spawn("create", parent.0, async move {
            match fs.create(parent.0, &name, mode & !umask, flags, pid).await {
                Ok((a, o)) => reply.created(
                    &ttl,
                    &to_file_attr(&a),
                    Generation(0),
                    FileHandle(o.fh),
                    FopenFlags::empty(),
                ),
                Err(e) => reply_err!(reply, "create", e),
            }
        });
    }
}

/// getxattr/listxattr protocol: size 0 asks for the length; too small a buffer is ERANGE.
fn xattr_reply(reply: ReplyXattr, value: &[u8], size: u32) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(Errno::from_i32(libc::ERANGE));
    } else {
        reply.data(value);
    }
}
