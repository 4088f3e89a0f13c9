//! The uploader: commits, the pending registry with its background retries, recovery,
//! shutdown and the cache dir lock.

use std::collections::HashMap;
use std::fs::{self, File};
use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;
use tracing::Level;
use uuid::Uuid;

use super::backoff::{min_delay, next_delay, quick_retries};
use super::staging::{Dirs, Location, StagedFile};
use super::{create, failure, recovery};
use super::{Deletes, PendingInfo, UploadTarget, WriteConfig};
use crate::api::{ApiError, ApiErrorKind, MediaClient, MediaFile};
use crate::fs::error::{Error, Result};
use crate::fs::name_taken::{self, Renames};
use crate::fs::readers::OpenReaders;

/// A pending upload that landed in the background: the core points the entry at `file`
/// and, once nothing holds `staged`, releases it (see [`Uploader::release`]).
#[derive(Debug)]
pub struct Landed {
    pub target: UploadTarget,
    pub file: MediaFile,
    pub staged: Arc<StagedFile>,
}

/// Background uploads running at once (recovery may find many).
const BACKGROUND_UPLOADS: usize = 2;

/// Turns writes into uploads. One per mounted library (and cache dir).
pub struct Uploader {
    client: Arc<dyn MediaClient>,
    config: WriteConfig,
    dirs: Arc<Dirs>,
    /// Holds `flock` on `<cache_dir>/lock` while open.
    _lock: File,
    landed_tx: tokio::sync::mpsc::UnboundedSender<Landed>,
    landed_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Landed>>>,
    runtime: Handle,
    me: Weak<Uploader>,
    /// Every staged file alive, for stats and the shutdown report.
    live: Mutex<HashMap<Uuid, Weak<StagedFile>>>,
    /// The pending area: uploads that failed and are retried in the background.
    registry: Mutex<HashMap<Uuid, Arc<StagedFile>>>,
    tasks: Mutex<Vec<AbortHandle>>,
    /// Commits running now (the core's and the background ones).
    inflight: AtomicUsize,
    shutting_down: AtomicBool,
    background_slots: Semaphore,
    /// Replaced remote files still open for reading: their delete waits for the last
    /// reader, so readers of the old version are not broken mid-read.
    readers: Arc<OpenReaders>,
    /// Those waiting deletes, recorded durably (retried by the next mount after a crash).
    deletes: Arc<Deletes>,
    /// Overwrites uploaded under a temporary name (unique-names service), waiting for the
    /// old file's delete to take the name.
    renames: Renames,
}

/// Why a commit failed.
enum Failed {
    /// The upload itself failed; the data is kept (`kept`: in the pending area).
    Upload {
        err: ApiError,
        target: UploadTarget,
        size: u64,
        kept: bool,
    },
    Other(Error),
}

impl Failed {
    /// Whether another attempt soon may cure it (decided by the API error alone).
    fn is_transient(&self) -> bool {
        matches!(self, Failed::Upload { err, .. } if err.is_transient())
    }
}

/// What one commit did.
struct Committed {
    file: MediaFile,
    /// The target the upload went to.
    target: UploadTarget,
    /// False when the commit was a no-op (nothing changed since the last one).
    uploaded: bool,
}

struct Busy<'a>(&'a AtomicUsize);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Uploader {
    /// Creates the cache dirs (0700) and takes the cache dir lock. Uploads that land later
    /// in the background are announced on [`Uploader::take_landed`]; replaced files still
    /// counted in `readers` are deleted only after their last reader.
    ///
    /// Must be called inside a Tokio runtime: background retries are spawned on it.
    pub fn new(
        client: Arc<dyn MediaClient>,
        config: WriteConfig,
        readers: Arc<OpenReaders>,
    ) -> Result<Arc<Uploader>> {
        let runtime = Handle::try_current().map_err(|_| {
            Error::new(
                crate::fs::error::Kind::Invalid,
                "the uploader needs a Tokio runtime (none running)",
            )
        })?;
        let dirs = Arc::new(Dirs::new(&config.cache_dir));
        let io = |what: &str, p: &Path, e| dirs.io_error(format!("{what} {}", p.display()), e);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dirs.root)
            .map_err(|e| io("creating cache dir", &dirs.root, e))?;
        let lock_file = recovery::take_lock(&dirs.root)?;
        for d in [&dirs.staging, &dirs.pending] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
                .map_err(|e| io("creating", d, e))?;
            // Staged data is the user's: keep it private even if the dir existed already.
            fs::set_permissions(d, fs::Permissions::from_mode(0o700))
                .map_err(|e| io("chmod", d, e))?;
        }
        let deletes_dir = dirs.root.join("deletes");
        let deletes = Arc::new(
            Deletes::open(deletes_dir.clone()).map_err(|e| io("creating", &deletes_dir, e))?,
        );
        let renames_dir = dirs.root.join("renames");
        let renames =
            Renames::open(renames_dir.clone()).map_err(|e| io("creating", &renames_dir, e))?;
        let (landed_tx, landed_rx) = tokio::sync::mpsc::unbounded_channel();
        Ok(Arc::new_cyclic(|me| Uploader {
            client,
            config,
            dirs,
            _lock: lock_file,
            landed_tx,
            landed_rx: Mutex::new(Some(landed_rx)),
            runtime,
            me: me.clone(),
            live: Mutex::new(HashMap::new()),
            registry: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
            inflight: AtomicUsize::new(0),
            shutting_down: AtomicBool::new(false),
            background_slots: Semaphore::new(BACKGROUND_UPLOADS),
            readers,
            deletes,
            renames,
        }))
    }

    /// The uploads that land later in the background, once (for the core's task that
    /// applies them).
    pub fn take_landed(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Landed>> {
        lock(&self.landed_rx).take()
    }

    /// Deletes a replaced or unlinked remote file whose delete was deferred to its last
    /// reader. Its record stays if the delete fails (the next mount retries it).
    pub async fn delete_replaced_now(&self, old: &str) {
        if self.delete_replaced_inner(old, old).await {
            self.deletes.done(old);
        }
    }

    /// How long a new file with a temporary name waits for its rename (zero: off).
    pub fn temp_upload_delay(&self) -> Duration {
        self.config.temp_upload_delay
    }

    /// The durable record of deferred deletes (shared with the namespace's unlink).
    pub fn deletes(&self) -> Arc<Deletes> {
        self.deletes.clone()
    }

    /// Stages a new, empty file. It is uploaded on commit even if nothing is written to it.
    pub fn stage_new(self: &Arc<Self>, target: UploadTarget) -> Result<Arc<StagedFile>> {
        let staged = StagedFile::create(&self.dirs, target, true, false)?;
        self.add_live(&staged);
        Ok(staged)
    }

    /// Stages a copy of the existing remote file `target.replaces` (of `size` bytes).
    ///
    /// With `truncate` (O_TRUNC) the copy starts empty and `fill` is not called. Otherwise
    /// the file is sized to `size` and `fill` is called with it to write the current bytes
    /// in (through [`StagedFile::write_at`]); those writes do not make it dirty, so a file
    /// opened for writing and closed unchanged is not uploaded again. If `fill` fails, the
    /// staged copy is removed and its error returned.
    pub async fn stage_existing<F, Fut>(
        self: &Arc<Self>,
        target: UploadTarget,
        size: u64,
        truncate: bool,
        fill: F,
    ) -> Result<Arc<StagedFile>>
    where
        F: FnOnce(Arc<StagedFile>) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let staged = StagedFile::create(&self.dirs, target, truncate, !truncate)?;
        self.add_live(&staged);
        if truncate {
            return Ok(staged);
        }
        let filled = match staged.set_len(size) {
            Ok(()) => fill(staged.clone()).await,
            Err(e) => Err(e),
        };
        if let Err(e) = filled {
            staged.discard();
            return Err(e);
        }
        staged.lock().filling = false;
        Ok(staged)
    }

    /// Uploads the staged file if it changed since its last successful commit, else returns
    /// that commit's result. On failure (after retrying transient errors for
    /// `upload_retry_for`) the data is in the pending area, retried in the background, and
    /// the error is returned so that `close()` reports it.
    /// Returns the remote file, and the one it replaced as of that upload (the target
    /// changes with every commit, so a value read before waiting for the commit lock may
    /// be stale).
    pub async fn commit(&self, staged: &StagedFile) -> Result<(MediaFile, Option<String>)> {
        match self
            .commit_inner(staged, self.config.upload_retry_for)
            .await
        {
            Ok(c) => Ok((c.file, c.target.replaces)),
            Err(Failed::Upload {
                err,
                target,
                size,
                kept,
            }) => Err(failure::upload_error(
                &self.dirs,
                &self.config,
                &target,
                size,
                err,
                kept,
            )),
            Err(Failed::Other(e)) => Err(e),
        }
    }

    /// Holds back the upload of a new file with a temporary name (see
    /// [`crate::fs::tempname`]): the rename that usually follows uploads it once, under its
    /// final name. Without a rename it is uploaded after `temp_upload_delay` under the name
    /// it has then (a landing announced as [`Landed`]). Its bytes wait in the staging area
    /// meanwhile, where crash recovery finds them. False when holding is off (delay zero,
    /// or unmounting): the caller commits now.
    pub fn hold(&self, staged: &Arc<StagedFile>) -> bool {
        let delay = self.config.temp_upload_delay;
        if delay.is_zero() || self.is_shutting_down() {
            return false;
        }
        let start = {
            let mut st = staged.lock();
            let start = !st.held;
            st.held = true;
            start
        };
        if start {
            let task = self
                .runtime
                .spawn(upload_held(self.me.clone(), staged.clone(), delay));
            let mut tasks = lock(&self.tasks);
            tasks.retain(|t| !t.is_finished());
            tasks.push(task.abort_handle());
        }
        true
    }

    /// The user of `staged` is done with it (its last handle closed and the namespace let
    /// go of it). Explicit, not in `Drop`, because it does I/O: a clean copy's local files
    /// are removed; one with changes not uploaded goes to the pending area and is retried
    /// in the background (never dropped).
    pub fn release(&self, staged: Arc<StagedFile>) {
        let mut st = staged.lock();
        st.released = true;
        if st.discarded || st.registered {
            return;
        }
        if !st.dirty {
            // Landed (or never changed): the local copy has served its purpose.
            staged.remove_files(&st);
            return;
        }
        tracing::warn!(
            file = %st.target.name,
            size = st.len,
            "staged file released with changes not uploaded; moving it to the pending area"
        );
        if let Err(e) = staged.move_to_pending(&mut st) {
            tracing::error!("{e}; it stays in the staging dir and is uploaded on the next mount");
            return;
        }
        drop(st);
        self.register(staged, Duration::ZERO);
    }

    /// Retries, in the background, every upload left over by an earlier run: the pending
    /// area, and staging files that were being written when the daemon died.
    pub fn recover(self: &Arc<Self>) {
        let live: Vec<Uuid> = lock(&self.live).keys().copied().collect();
        let registered: Vec<Uuid> = lock(&self.registry).keys().copied().collect();
        let skip = |id: &Uuid| live.contains(id) || registered.contains(id);

        // Interrupted writes first: move them to the pending area.
        for (id, path) in recovery::sidecars(&self.dirs.staging) {
            if skip(&id) {
                continue;
            }
            recovery::recover_staging(&self.dirs, id, &path);
        }
        for (id, path) in recovery::sidecars(&self.dirs.pending) {
            if skip(&id) {
                continue;
            }
            match StagedFile::open(&self.dirs, id, Location::Pending) {
                Ok(staged) => {
                    if !staged.is_dirty() {
                        // Landed before the crash: remove the leftovers.
                        staged.remove_files(&staged.lock());
                        continue;
                    }
                    staged.lock().released = true;
                    let target = staged.target();
                    tracing::info!(
                        file = %target.name,
                        size = staged.len(),
                        "retrying upload left pending by an earlier run"
                    );
                    self.add_live(&staged);
                    self.register(staged, Duration::ZERO);
                }
                Err(e) => tracing::error!(
                    "cannot recover pending upload {}: {e} (left in place)",
                    path.display()
                ),
            }
        }
        // Deletes an earlier run deferred to readers and never did: hidden from listings
        // at once, deleted in the background. Read once, before any of them is done: the
        // renames waiting for one of these are finished by its delete, not below.
        let waiting = self.deletes.list();
        for id in waiting.clone() {
            self.readers.hide(&id);
            let me = self.clone();
            let task = self.runtime.spawn(async move {
                if me.delete_replaced_inner(&id, &id).await {
                    me.deletes.done(&id);
                    me.readers.unhide(&id);
                }
            });
            lock(&self.tasks).push(task.abort_handle());
        }
        // Overwrites that waited for a delete already done when the daemon died.
        let me = self.clone();
        let task = self.runtime.spawn(async move {
            name_taken::recover(me.client.as_ref(), &me.renames, &waiting).await;
        });
        lock(&self.tasks).push(task.abort_handle());
        // Orphan data files (no sidecar anywhere) are empty by construction: the sidecar is
        // written before the data file is created.
        for dir in [&self.dirs.staging, &self.dirs.pending] {
            recovery::remove_orphans(dir, &self.dirs);
        }
    }

    /// Uploads waiting in the pending area, by name.
    pub fn pending(&self) -> Vec<PendingInfo> {
        let staged: Vec<Arc<StagedFile>> = lock(&self.registry)
            .values()
            .filter(|s| !s.is_discarded())
            .cloned()
            .collect();
        let mut out: Vec<PendingInfo> = staged.iter().map(|s| info_of(s)).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// For unmount: stops background retries, waits up to `timeout` for uploads in progress,
    /// and returns what has not landed (the pending area, plus files still open with changes
    /// not committed). All of it is retried on the next mount.
    pub async fn shutdown(&self, timeout: Duration) -> Vec<PendingInfo> {
        self.shutting_down.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + timeout;
        // Held uploads go now, under the name they have (their rename did not come).
        let held: Vec<Arc<StagedFile>> = lock(&self.live)
            .values()
            .filter_map(Weak::upgrade)
            .filter(|s| s.unhold() && s.is_dirty())
            .collect();
        for s in held {
            let left = deadline.saturating_duration_since(Instant::now());
            let retry_for = left.min(self.config.upload_retry_for);
            match tokio::time::timeout(left, self.commit_inner(&s, retry_for)).await {
                Ok(Ok(_)) => {}
                Ok(Err(Failed::Upload { err, .. })) => {
                    tracing::warn!(file = %s.target().name, "upload at unmount failed: {err}")
                }
                Ok(Err(Failed::Other(e))) => tracing::warn!("{e}"),
                Err(_) => break,
            }
        }
        while self.inflight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
        let mut out = self.pending();
        let open: Vec<Arc<StagedFile>> = lock(&self.live)
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        for s in &open {
            let st = s.lock();
            if st.dirty && !st.discarded && !st.registered {
                drop(st);
                out.push(info_of(s));
            }
        }
        drop(open);
        if !out.is_empty() {
            tracing::warn!(
                count = out.len(),
                dir = %self.dirs.pending.display(),
                "uploads still pending at unmount; retried on the next mount"
            );
        }
        out
    }

    /// Bytes of staged data on local disk (open files and the pending area).
    pub fn staging_bytes(&self) -> u64 {
        let staged: Vec<Arc<StagedFile>> = lock(&self.live)
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        staged.iter().map(|s| s.len()).sum()
    }

    /// The pending directory (for messages).
    pub fn pending_dir(&self) -> &Path {
        &self.dirs.pending
    }

    fn add_live(&self, staged: &Arc<StagedFile>) {
        let mut live = lock(&self.live);
        // Staged files gone since are swept here, not in a `Drop`.
        live.retain(|_, w| w.strong_count() > 0);
        live.insert(staged.id, Arc::downgrade(staged));
    }

    fn unregister(&self, id: Uuid) {
        lock(&self.registry).remove(&id);
    }

    /// Puts a staged file in the pending registry and starts its background retries.
    fn register(&self, staged: Arc<StagedFile>, first_delay: Duration) {
        let id = staged.id;
        staged.lock().registered = true;
        lock(&self.registry).insert(id, staged);
        let task = self
            .runtime
            .spawn(retry_pending(self.me.clone(), id, first_delay));
        let mut tasks = lock(&self.tasks);
        tasks.retain(|t| !t.is_finished());
        tasks.push(task.abort_handle());
    }

    async fn commit_inner(
        &self,
        staged: &StagedFile,
        retry_for: Duration,
    ) -> std::result::Result<Committed, Failed> {
        self.inflight.fetch_add(1, Ordering::SeqCst);
        let _busy = Busy(&self.inflight);
        let _serial = staged.commit_lock.lock().await;
        loop {
            if let Some(done) = self.commit_once(staged, retry_for).await? {
                return Ok(done);
            }
        }
    }

    /// One upload of `staged`. `None`: the upload was superseded while it ran (the file
    /// was moved onto another one, which it must replace): the copy just made is gone
    /// again and the caller uploads once more.
    async fn commit_once(
        &self,
        staged: &StagedFile,
        retry_for: Duration,
    ) -> std::result::Result<Option<Committed>, Failed> {
        let (target, generation, target_generation, data_path, size, last, maybe_landed) = {
            let st = staged.lock();
            if st.discarded {
                return Err(Failed::Other(
                    Error::new(
                        crate::fs::error::Kind::NotFound,
                        format!("{:?} was deleted while open; not uploaded", st.target.name),
                    )
                    .with_level(Level::DEBUG),
                ));
            }
            (
                st.target.clone(),
                st.generation,
                st.target_generation,
                staged.data_path(&st),
                st.len,
                (!st.dirty).then(|| st.last.clone()),
                st.maybe_landed,
            )
        };
        if last.is_none() && !maybe_landed {
            // A crash during the upload must not lead to a second copy after recovery: until
            // the outcome is known, the sidecar says "look for it first".
            let mut st = staged.lock();
            st.maybe_landed = true;
            if let Err(e) = staged.save_sidecar(&st) {
                tracing::warn!("{e}");
            }
        }
        match last {
            Some(Some(file)) => {
                return Ok(Some(Committed {
                    file,
                    target,
                    uploaded: false,
                }))
            }
            Some(None) => {
                return self
                    .unchanged(staged, target)
                    .await
                    .map(Some)
                    .map_err(Failed::Other)
            }
            None => {}
        }

        let meta = create::new_file(&target);
        let started = Instant::now();
        let mut ambiguous = maybe_landed;
        let result = create::create_with_retry(
            self.client.as_ref(),
            &target,
            &meta,
            &data_path,
            size,
            retry_for,
            &mut ambiguous,
        )
        .await;
        let result = match (result, target.replaces.as_deref()) {
            (Err(e), Some(old)) if e.kind == ApiErrorKind::NameTaken => {
                name_taken::upload_aside(
                    self.client.as_ref(),
                    &self.renames,
                    &meta,
                    &data_path,
                    old,
                )
                .await
            }
            (result, _) => result,
        };
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let file = match result {
            Ok(file) => file,
            Err(err) => {
                tracing::info!(
                    file = %target.name,
                    size,
                    duration_ms = elapsed_ms,
                    outcome = "failed",
                    "upload: {err}"
                );
                let kept = self.keep_pending(staged, &err, ambiguous);
                return Err(Failed::Upload {
                    err,
                    target,
                    size,
                    kept,
                });
            }
        };
        tracing::info!(
            file = %target.name,
            size,
            duration_ms = elapsed_ms,
            outcome = "ok",
            id = %file.id,
            "upload"
        );

        let superseded = {
            let mut st = staged.lock();
            let superseded = !st.discarded && st.target.replaces != target.replaces;
            if superseded {
                st.maybe_landed = false;
            }
            superseded
        };
        if superseded {
            tracing::debug!(file = %target.name, "moved onto another file while uploading: again");
            if let Err(e) = self.client.delete_file(&file.id).await {
                tracing::warn!(file = %target.name, "removing a superseded copy: {e}");
            }
            return Ok(None);
        }

        let (discarded, unregister) = {
            let mut st = staged.lock();
            st.last = Some(file.clone());
            st.target.replaces = Some(file.id.clone());
            st.last_error = None;
            st.maybe_landed = false;
            if st.generation == generation && st.target_generation == target_generation {
                st.dirty = false;
            }
            if let Err(e) = staged.save_sidecar(&st) {
                // Only costs a second upload of the same bytes after a crash.
                tracing::warn!("{e}");
            }
            let unregister = st.registered && !st.dirty;
            if unregister {
                st.registered = false;
            }
            if st.released && !st.dirty {
                // Nobody holds it any more: the local copy has served its purpose.
                staged.remove_files(&st);
            }
            (st.discarded, unregister)
        };
        if discarded {
            // Unlinked while the upload ran: the new copy must not outlive the unlink.
            if let Err(e) = self.client.delete_file(&file.id).await {
                tracing::warn!(file = %target.name, "removing the copy of a deleted file: {e}");
            }
        } else if let Some(old) = target.replaces.as_deref().filter(|o| *o != file.id) {
            self.delete_replaced(old, &target.name).await;
        }
        if unregister {
            self.unregister(staged.id);
        }
        Ok(Some(Committed {
            file,
            target,
            uploaded: true,
        }))
    }

    /// Commit of a file never changed since `stage_existing`: nothing to upload; the result
    /// is the remote file it stands for.
    async fn unchanged(&self, staged: &StagedFile, target: UploadTarget) -> Result<Committed> {
        let Some(id) = target.replaces.clone() else {
            return Err(Error::new(
                crate::fs::error::Kind::Io,
                format!("{:?}: staged file has nothing to upload", target.name),
            ));
        };
        let file = self
            .client
            .get_file(&id)
            .await
            .map_err(|e| Error::api(format!("looking up {:?}", target.name), e))?;
        staged.lock().last = Some(file.clone());
        Ok(Committed {
            file,
            target,
            uploaded: false,
        })
    }

    /// Deletes the remote file a commit replaced. A failure leaves two copies (shown as
    /// duplicates), never none, so it is logged, not returned.
    async fn delete_replaced(&self, old: &str, name: &str) {
        if self.readers.defer_delete_if_open(old) {
            tracing::debug!(file = %name, "old version still open for reading: delete deferred");
            if let Err(e) = self.deletes.record(old) {
                tracing::warn!("could not record the deferred delete of {name:?}: {e}");
            }
            return;
        }
        // Recorded first: a crash or a failure leaves the record, and the next mount (or
        // the retry below) finishes the delete. Meanwhile listings hide the old copy, so
        // the plain name shows the new one.
        if let Err(e) = self.deletes.record(old) {
            tracing::warn!("could not record the delete of the old {name:?}: {e}");
        }
        if self.delete_replaced_inner(old, name).await {
            self.deletes.done(old);
        } else {
            self.retry_delete(old.to_string());
        }
    }

    /// A replaced file whose delete failed: hidden from listings, deleted in the
    /// background (every `upload_retry_for`) until it is gone. Its record stays until then.
    pub fn retry_delete(&self, id: String) {
        self.readers.hide(&id);
        let Some(me) = self.me.upgrade() else { return };
        let task = self.runtime.spawn(async move {
            loop {
                tokio::time::sleep(me.config.upload_retry_for).await;
                if me.delete_replaced_inner(&id, &id).await {
                    me.deletes.done(&id);
                    me.readers.unhide(&id);
                    return;
                }
            }
        });
        lock(&self.tasks).push(task.abort_handle());
    }

    /// True once `old` is gone from the service.
    async fn delete_replaced_inner(&self, old: &str, name: &str) -> bool {
        let started = Instant::now();
        let retry_for = self.config.upload_retry_for;
        let policy = quick_retries(retry_for);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let delay = policy.delay(attempt, None);
            match self.client.delete_file(old).await {
                Ok(()) => return self.deleted(old).await,
                Err(e) if e.kind == ApiErrorKind::NotFound => return self.deleted(old).await,
                Err(e) if e.is_transient() && started.elapsed() + delay <= retry_for => {
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    tracing::warn!(
                        file = %name,
                        "the new version was uploaded but the old one could not be deleted \
                         (both stay visible): {e}"
                    );
                    return false;
                }
            }
        }
    }

    /// `old` is gone: an overwrite waiting for its name takes it. Always true.
    async fn deleted(&self, old: &str) -> bool {
        name_taken::after_delete(self.client.as_ref(), &self.renames, old).await;
        true
    }

    /// After a failed upload: make sure the data is in the pending area and retried.
    /// Returns false if it could not be moved there (it then stays in the staging dir,
    /// which the next mount recovers too).
    fn keep_pending(&self, staged: &StagedFile, err: &ApiError, maybe_landed: bool) -> bool {
        let (spawn, moved) = {
            let mut st = staged.lock();
            if st.discarded {
                return true;
            }
            st.last_error = Some(err.to_string());
            st.maybe_landed = maybe_landed;
            let moved = match staged.move_to_pending(&mut st) {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!("{e}");
                    false
                }
            };
            if let Err(e) = staged.save_sidecar(&st) {
                tracing::warn!("{e}");
            }
            (!st.registered, moved)
        };
        if spawn {
            if let Some(me) = staged.me.upgrade() {
                self.register(me, next_delay(&self.config, u32::from(err.is_transient())));
            }
        }
        moved
    }

    fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}

impl Drop for Uploader {
    fn drop(&mut self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

/// The background retry loop of one pending upload. Holds only a weak reference between
/// attempts, so it never keeps the uploader (and the cache dir lock) alive.
async fn retry_pending(uploader: Weak<Uploader>, id: Uuid, first_delay: Duration) {
    let mut delay = first_delay;
    // Transient failures in a row (0 after any other failure).
    let mut failures = 0u32;
    loop {
        tokio::time::sleep(delay).await;
        let Some(up) = uploader.upgrade() else { return };
        if up.is_shutting_down() {
            return;
        }
        let Some(staged) = lock(&up.registry).get(&id).cloned() else {
            return;
        };
        if staged.is_discarded() {
            // Unlinked: nothing to upload any more.
            up.unregister(id);
            return;
        }
        let Ok(_slot) = up.background_slots.acquire().await else {
            return;
        };
        // The client retries transient failures itself; this loop supplies the patience.
        match up.commit_inner(&staged, Duration::ZERO).await {
            Ok(done) => {
                if done.uploaded {
                    tracing::info!(file = %done.target.name, "pending upload landed");
                    // Nobody listening (tests, shutdown): nothing to apply.
                    let _ = up.landed_tx.send(Landed {
                        target: done.target,
                        file: done.file,
                        staged: staged.clone(),
                    });
                }
                if !staged.lock().registered {
                    return;
                }
                // Changed again while uploading: go on.
                failures = 0;
                delay = min_delay(&up.config);
            }
            Err(f) => {
                match &f {
                    Failed::Upload { err, .. } => {
                        tracing::debug!("pending upload still failing: {err}")
                    }
                    Failed::Other(e) => tracing::debug!("pending upload still failing: {e}"),
                }
                failures = if f.is_transient() { failures + 1 } else { 0 };
                delay = next_delay(&up.config, failures);
            }
        }
    }
}

/// The end of a hold ([`Uploader::hold`]) with no rename: upload under the name it has.
async fn upload_held(uploader: Weak<Uploader>, staged: Arc<StagedFile>, delay: Duration) {
    tokio::time::sleep(delay).await;
    let Some(up) = uploader.upgrade() else { return };
    // At unmount, `shutdown` uploads what is still held.
    if up.is_shutting_down() || !staged.unhold() || !staged.is_dirty() {
        return;
    }
    match up.commit_inner(&staged, up.config.upload_retry_for).await {
        Ok(done) => {
            if done.uploaded {
                let _ = up.landed_tx.send(Landed {
                    target: done.target,
                    file: done.file,
                    staged,
                });
            }
        }
        Err(Failed::Upload { err, target, .. }) => tracing::warn!(
            file = %target.name,
            "upload failed; retried from the pending area: {err}"
        ),
        Err(Failed::Other(e)) => tracing::debug!("{e}"),
    }
}

fn info_of(s: &StagedFile) -> PendingInfo {
    let st = s.lock();
    PendingInfo {
        name: st.target.name.clone(),
        size: st.len,
        data_path: s.data_path(&st),
        last_error: st.last_error.clone(),
    }
}
