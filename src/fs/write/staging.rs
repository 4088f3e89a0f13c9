//! Staged files: the local copy of a file open for writing, and its JSON sidecar.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Carry, UploadTarget};
use crate::api::MediaFile;
use crate::fs::error::{Error, Result};

/// The cache dir layout.
#[derive(Debug)]
pub(super) struct Dirs {
    pub root: PathBuf,
    pub staging: PathBuf,
    pub pending: PathBuf,
}

/// Which of the two areas a staged file's files are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Location {
    Staging,
    Pending,
}

impl Dirs {
    pub fn new(root: &Path) -> Dirs {
        Dirs {
            root: root.to_path_buf(),
            staging: root.join("staging"),
            pending: root.join("pending"),
        }
    }

    pub fn dir(&self, loc: Location) -> &Path {
        match loc {
            Location::Staging => &self.staging,
            Location::Pending => &self.pending,
        }
    }

    pub fn data_path(&self, loc: Location, id: Uuid) -> PathBuf {
        self.dir(loc).join(format!("{id}.data"))
    }

    pub fn meta_path(&self, loc: Location, id: Uuid) -> PathBuf {
        self.dir(loc).join(format!("{id}.json"))
    }

    /// An I/O failure in the cache dir. A full disk gets its own log line naming the
    /// directory, since the user has to act on it.
    pub fn io_error(&self, context: impl std::fmt::Display, err: std::io::Error) -> Error {
        if err.raw_os_error() == Some(libc::ENOSPC) {
            tracing::error!(
                cache_dir = %self.root.display(),
                "{context}: no space left in the cache dir"
            );
            return Error::io(
                format!(
                    "{context}: no space left in the cache dir {}",
                    self.root.display()
                ),
                err,
            );
        }
        Error::io(context, err)
    }
}

/// The sidecar: everything needed to upload the data file after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Sidecar {
    pub parent_folder_id: Option<String>,
    pub name: String,
    pub mime_type: String,
    pub replaces: Option<String>,
    #[serde(default)]
    pub carry: Carry,
    /// Unix seconds.
    pub created: u64,
    /// The data equals the remote file `replaces`: nothing to upload.
    #[serde(default)]
    pub synced: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// An upload failed in a way that may have stored it anyway (connection lost after
    /// sending): look for it before uploading again.
    #[serde(default)]
    pub maybe_landed: bool,
}

impl Sidecar {
    pub fn target(&self) -> UploadTarget {
        UploadTarget {
            parent_folder_id: self.parent_folder_id.clone(),
            name: self.name.clone(),
            replaces: self.replaces.clone(),
            carry: self.carry.clone(),
        }
    }

    pub fn read(path: &Path) -> std::io::Result<Sidecar> {
        let bytes = fs::read(path)?;
        serde_json::from_slice(&bytes).map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))
    }

    /// Writes the first sidecar of a staged file, straight into a new file. A crash in the
    /// middle leaves an unreadable sidecar and no data file (the data file is created after
    /// it): recovery removes such a pair.
    pub fn create(&self, path: &Path) -> std::io::Result<()> {
        let body = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(&body)
    }

    /// Replaces the sidecar at `path` so that a crash of this process leaves the old or the
    /// new one. A sidecar of up to a page is rewritten in place by one write at offset 0,
    /// padded with spaces to its old length (JSON allows trailing whitespace): the kernel
    /// copies a write within one page all at once, and no inode is created and evicted per
    /// update, which was most of the daemon's cost of a small upload. A larger one goes
    /// through a temporary file and a rename.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        const PAGE: u64 = 4096;
        let mut body = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        if body.len() as u64 <= PAGE {
            match OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
            {
                Ok(f) => {
                    let old = f.metadata()?.len();
                    if old <= PAGE {
                        body.resize(body.len().max(old as usize), b' ');
                        let n = f.write_at(&body, 0)?;
                        if n == body.len() {
                            return Ok(());
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        self.replace(path, &body)
    }

    /// Temporary file + rename.
    fn replace(&self, path: &Path, body: &[u8]) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(body)?;
        drop(f);
        fs::rename(&tmp, path)
    }
}

/// `mimeType` of an upload: guessed from the name's extension.
pub(super) fn mime_for(name: &str) -> String {
    mime_guess::from_path(name)
        .first_or_octet_stream()
        .essence_str()
        .to_string()
}

pub(super) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Mutable state of a staged file.
#[derive(Debug)]
pub(super) struct State {
    pub target: UploadTarget,
    pub location: Location,
    pub len: u64,
    /// Changed since the last successful commit (or never committed).
    pub dirty: bool,
    /// `stage_existing` is copying the remote bytes in: writes do not make the file dirty.
    pub filling: bool,
    /// Bumped after every change of the bytes; a commit that saw another value leaves the
    /// file dirty.
    pub generation: u64,
    /// Bumped on every retarget, for the same reason.
    pub target_generation: u64,
    pub last: Option<MediaFile>,
    pub discarded: bool,
    /// In the uploader's pending registry (a background task retries it).
    pub registered: bool,
    /// Its user is done with it ([`super::Uploader::release`]): once uploaded, the local
    /// copy goes.
    pub released: bool,
    pub last_error: Option<String>,
    /// See [`Sidecar::maybe_landed`].
    pub maybe_landed: bool,
    /// Its upload is held back for a rename (a new file with a temporary name, see
    /// [`super::Uploader::hold`]). In memory only: after a crash it uploads at once.
    pub held: bool,
}

/// A file open for writing, staged on local disk. `Send + Sync`; all methods take `&self`.
///
/// Its local files are removed only on an explicit [`super::Uploader::release`] (or
/// [`StagedFile::discard`]); dropping it does no I/O. A staged file dropped without release
/// leaves its files for the next mount's recovery, so nothing is lost.
pub struct StagedFile {
    pub(super) id: Uuid,
    file: File,
    created: u64,
    pub(super) dirs: Arc<Dirs>,
    /// For registering `self` in the pending area from `&self` methods.
    pub(super) me: Weak<StagedFile>,
    pub(super) state: Mutex<State>,
    /// Serialises commits (the core's and the background task's).
    pub(super) commit_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for StagedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedFile")
            .field("id", &self.id)
            .field("state", &*self.lock())
            .finish_non_exhaustive()
    }
}

impl StagedFile {
    /// A new empty staging file. `dirty`: it must be uploaded even if nothing is written
    /// (a new file); otherwise it stands for the unchanged remote file `target.replaces`.
    pub(super) fn create(
        dirs: &Arc<Dirs>,
        target: UploadTarget,
        dirty: bool,
        filling: bool,
    ) -> Result<Arc<StagedFile>> {
        let id = Uuid::now_v7();
        let created = now_secs();
        let loc = Location::Staging;
        let state = State {
            target,
            location: loc,
            len: 0,
            dirty,
            filling,
            generation: 0,
            target_generation: 0,
            last: None,
            discarded: false,
            registered: false,
            released: false,
            last_error: None,
            maybe_landed: false,
            held: false,
        };
        // Sidecar first: a data file without one is empty by construction.
        let meta_path = dirs.meta_path(loc, id);
        sidecar_of(&state, created)
            .create(&meta_path)
            .map_err(|e| dirs.io_error(format!("writing {}", meta_path.display()), e))?;
        let data_path = dirs.data_path(loc, id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&data_path)
            .map_err(|e| {
                let _ = fs::remove_file(&meta_path);
                dirs.io_error(format!("creating {}", data_path.display()), e)
            })?;
        Ok(Arc::new_cyclic(|me| StagedFile {
            id,
            file,
            created,
            dirs: dirs.clone(),
            me: me.clone(),
            state: Mutex::new(state),
            commit_lock: tokio::sync::Mutex::new(()),
        }))
    }

    /// Re-opens a staged file of an earlier run from `loc` (its data may still be in the
    /// staging dir if a move was interrupted; it is moved next to the sidecar).
    pub(super) fn open(dirs: &Arc<Dirs>, id: Uuid, loc: Location) -> Result<Arc<StagedFile>> {
        let meta_path = dirs.meta_path(loc, id);
        let sidecar = Sidecar::read(&meta_path)
            .map_err(|e| dirs.io_error(format!("reading {}", meta_path.display()), e))?;
        let data_path = dirs.data_path(loc, id);
        if !data_path.exists() {
            for other in [Location::Staging, Location::Pending] {
                let p = dirs.data_path(other, id);
                if other != loc && p.exists() {
                    fs::rename(&p, &data_path).map_err(|e| {
                        dirs.io_error(format!("moving {} to {}", p.display(), loc_name(loc)), e)
                    })?;
                }
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&data_path)
            .map_err(|e| dirs.io_error(format!("opening {}", data_path.display()), e))?;
        let len = file
            .metadata()
            .map_err(|e| dirs.io_error(format!("stat {}", data_path.display()), e))?
            .len();
        let state = State {
            target: sidecar.target(),
            location: loc,
            len,
            dirty: !sidecar.synced,
            filling: false,
            generation: 0,
            target_generation: 0,
            last: None,
            discarded: false,
            registered: false,
            released: false,
            last_error: sidecar.last_error,
            maybe_landed: sidecar.maybe_landed,
            held: false,
        };
        Ok(Arc::new_cyclic(|me| StagedFile {
            id,
            file,
            created: sidecar.created,
            dirs: dirs.clone(),
            me: me.clone(),
            state: Mutex::new(state),
            commit_lock: tokio::sync::Mutex::new(()),
        }))
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough state (plain fields);
        // refusing all further I/O on the file would be worse.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `data` at `offset` (extending the file, with a hole if past the end).
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<usize> {
        let mut st = self.lock();
        self.before_change(&mut st)?;
        self.file
            .write_all_at(data, offset)
            .map_err(|e| self.dirs.io_error(what("writing to", &st), e))?;
        st.len = st.len.max(offset.saturating_add(data.len() as u64));
        st.generation += 1;
        Ok(data.len())
    }

    /// Reads up to `size` bytes at `offset`; fewer only at the end of the file.
    pub fn read_at(&self, offset: u64, size: u32) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; size as usize];
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(self.dirs.io_error(what("reading", &self.lock()), e)),
            }
        }
        buf.truncate(done);
        Ok(buf)
    }

    /// Truncates or extends (with zeros).
    pub fn set_len(&self, len: u64) -> Result<()> {
        let mut st = self.lock();
        self.before_change(&mut st)?;
        self.file
            .set_len(len)
            .map_err(|e| self.dirs.io_error(what("resizing", &st), e))?;
        st.len = len;
        st.generation += 1;
        Ok(())
    }

    /// fallocate: reserves local disk for the range, so that writing it later cannot fail
    /// for lack of space in the cache dir, and extends the file unless `keep_size`.
    pub fn allocate(&self, offset: u64, len: u64, keep_size: bool) -> Result<()> {
        let mut st = self.lock();
        let end = offset.saturating_add(len);
        let grows = !keep_size && end > st.len;
        if grows {
            self.before_change(&mut st)?;
        }
        let mode = if keep_size {
            libc::FALLOC_FL_KEEP_SIZE
        } else {
            0
        };
        let (off, n) = (
            i64::try_from(offset).unwrap_or(i64::MAX),
            i64::try_from(len).unwrap_or(i64::MAX),
        );
        // SAFETY: a plain syscall on a descriptor this struct owns.
        if unsafe { libc::fallocate(self.file.as_raw_fd(), mode, off, n) } != 0 {
            let e = std::io::Error::last_os_error();
            // A cache dir on a filesystem without fallocate: the size is all we can give.
            if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
                return Err(self.dirs.io_error(what("allocating space for", &st), e));
            }
            if grows {
                self.file
                    .set_len(end)
                    .map_err(|e| self.dirs.io_error(what("resizing", &st), e))?;
            }
        }
        if grows {
            st.len = end;
            st.generation += 1;
        }
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.lock().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Holds changes not uploaded yet. False once discarded: nothing is left to upload,
    /// so closing an unlinked file commits nothing and reports no error.
    pub fn is_dirty(&self) -> bool {
        let st = self.lock();
        st.dirty && !st.discarded
    }

    /// In the pending area: a failed upload that the background task retries.
    pub fn is_pending(&self) -> bool {
        self.lock().registered
    }

    /// Makes a clean copy dirty without changing its bytes: the next commit uploads it
    /// again (to re-create the remote file under a new name).
    pub fn mark_changed(&self) -> Result<()> {
        let mut st = self.lock();
        self.before_change(&mut st)?;
        st.generation += 1;
        Ok(())
    }

    /// Ends a hold ([`super::Uploader::hold`]); true if the upload was held back.
    pub fn unhold(&self) -> bool {
        std::mem::take(&mut self.lock().held)
    }

    /// The `fileName` of its last upload by this mount, if any.
    pub fn uploaded_name(&self) -> Option<String> {
        let st = self.lock();
        let last = st.last.as_ref()?;
        last.upload.as_ref().map(|u| u.file_name.clone())
    }

    /// Never uploaded: a new file whose first upload has not landed.
    pub fn is_new(&self) -> bool {
        let st = self.lock();
        st.target.replaces.is_none() && st.last.is_none()
    }

    /// Unlinked while open: nothing will be uploaded.
    pub fn is_discarded(&self) -> bool {
        self.lock().discarded
    }

    /// The file was renamed while open: later uploads go to the new parent and name.
    /// Keep `replaces` as [`StagedFile::target`] returns it (it follows the uploads).
    pub fn retarget(&self, target: UploadTarget) -> Result<()> {
        let mut st = self.lock();
        st.target = target;
        st.target_generation += 1;
        self.save_sidecar(&st)
    }

    pub fn target(&self) -> UploadTarget {
        self.lock().target.clone()
    }

    /// Unlinked while open: reads and writes still work on the open file, but nothing is
    /// uploaded and the local files are removed now. A pending upload of it stops (its
    /// background task sees the flag).
    pub fn discard(&self) {
        let mut st = self.lock();
        if st.discarded {
            return;
        }
        st.discarded = true;
        self.remove_files(&st);
    }

    /// Path of the data file now (it moves to the pending area when an upload fails).
    pub(super) fn data_path(&self, st: &State) -> PathBuf {
        self.dirs.data_path(st.location, self.id)
    }

    /// The first change after a clean state marks the sidecar unsynced before the data
    /// changes, so a crash can never leave modified data flagged as already uploaded.
    fn before_change(&self, st: &mut State) -> Result<()> {
        if st.filling || st.dirty {
            return Ok(());
        }
        st.dirty = true;
        if let Err(e) = self.save_sidecar(st) {
            st.dirty = false;
            return Err(e);
        }
        Ok(())
    }

    pub(super) fn save_sidecar(&self, st: &State) -> Result<()> {
        if st.discarded {
            return Ok(());
        }
        let path = self.dirs.meta_path(st.location, self.id);
        sidecar_of(st, self.created)
            .write(&path)
            .map_err(|e| self.dirs.io_error(format!("writing {}", path.display()), e))
    }

    /// Moves data and sidecar to the pending area (data first: recovery finds a sidecar's
    /// data in either area). Syncs the data first, so the pending copy survives a power loss
    /// too.
    pub(super) fn move_to_pending(&self, st: &mut State) -> Result<()> {
        if st.location == Location::Pending {
            return Ok(());
        }
        if let Err(e) = self.file.sync_data() {
            tracing::warn!(file = %st.target.name, "fsync of staged data failed: {e}");
        }
        let to = Location::Pending;
        for (from_p, to_p) in [
            (
                self.dirs.data_path(st.location, self.id),
                self.dirs.data_path(to, self.id),
            ),
            (
                self.dirs.meta_path(st.location, self.id),
                self.dirs.meta_path(to, self.id),
            ),
        ] {
            fs::rename(&from_p, &to_p).map_err(|e| {
                self.dirs.io_error(
                    format!("moving {} to the pending area", from_p.display()),
                    e,
                )
            })?;
        }
        st.location = to;
        Ok(())
    }

    pub(super) fn remove_files(&self, st: &State) {
        for p in [
            self.dirs.data_path(st.location, self.id),
            self.dirs.meta_path(st.location, self.id),
        ] {
            if let Err(e) = fs::remove_file(&p) {
                if e.kind() != ErrorKind::NotFound {
                    tracing::warn!("removing {}: {e}", p.display());
                }
            }
        }
    }
}

fn sidecar_of(st: &State, created: u64) -> Sidecar {
    Sidecar {
        parent_folder_id: st.target.parent_folder_id.clone(),
        name: st.target.name.clone(),
        mime_type: mime_for(&st.target.name),
        replaces: st.target.replaces.clone(),
        carry: st.target.carry.clone(),
        created,
        synced: !st.dirty,
        last_error: st.last_error.clone(),
        maybe_landed: st.maybe_landed,
    }
}

fn what(verb: &str, st: &State) -> String {
    format!("{verb} staged file {:?}", st.target.name)
}

fn loc_name(loc: Location) -> &'static str {
    match loc {
        Location::Staging => "the staging area",
        Location::Pending => "the pending area",
    }
}
