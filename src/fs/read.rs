//! The read path: remote bytes through a shared LRU block cache with sequential prefetch.
//!
//! - Files are read in fixed-size blocks keyed by `(file_id, block)`. A remote file id names
//!   immutable content, so a cached block never goes stale.
//! - Every block fetch runs in a spawned task and registers an in-flight slot first, so
//!   concurrent readers (or a read and a prefetch) of one block share one request, and a
//!   prefetch proceeds while the kernel is not calling `read`.
//! - Adjacent missing blocks are fetched with one ranged request (up to
//!   [`MAX_REQUEST_BYTES`]) and split.
//! - Per handle, sequential reads grow a readahead window ([`window`]); random reads fetch
//!   only what they need.
//! - Memory: one byte budget for cached blocks and blocks in flight together; bytes in
//!   flight hold permits of one global semaphore (one permit per block), and the cache
//!   keeps what the permits leave; per-handle state is O(1).
//! - Signed URLs are refreshed before they expire and after the CDN rejects them ([`urls`]).

mod cache;
mod urls;
mod window;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::sync::{watch, Semaphore};
use tracing::debug;

use crate::api::{ApiErrorKind, MediaClient};
use crate::fs::error::{Error, Kind, Result};

use cache::{BlockCache, BlockKey};
use urls::FileUrl;
use window::{block_range, blocks_for, Readahead, WindowParams};

const MIB: u64 = 1 << 20;
/// Largest single ranged request: fewer round trips without holding too much per request.
const MAX_REQUEST_BYTES: u64 = 8 * MIB;
/// Sequential-read tolerance around the previous end (the kernel reorders in-flight reads).
const SEQ_BEHIND: u64 = 2 * MIB;
const SEQ_AHEAD: u64 = 8 * MIB;
/// How many times a read refreshes a rejected signed URL before giving up.
const URL_REFRESH_ATTEMPTS: u32 = 3;

/// Tunables of the read path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadConfig {
    /// Total bytes of cached blocks and blocks in flight, all files together.
    pub cache_bytes: u64,
    /// Block size (the unit of caching and of fetching).
    pub block_size: u64,
    /// Largest readahead window of one sequential stream.
    pub max_window: u64,
    /// Prefetched blocks in flight per open handle.
    pub max_inflight_per_handle: usize,
    /// Blocks in flight (demand and prefetch) for the whole mount; bounds fetch buffers.
    /// Their bytes come out of `cache_bytes` (up to half of it).
    pub max_inflight_total: usize,
}

impl Default for ReadConfig {
    fn default() -> Self {
        ReadConfig::with_cache_bytes(256 * MIB)
    }
}

impl ReadConfig {
    /// Defaults for a given cache size: the window is min(64 MiB, cache / 4), so prefetched
    /// blocks are not evicted before they are read.
    pub fn with_cache_bytes(cache_bytes: u64) -> Self {
        ReadConfig {
            cache_bytes,
            block_size: MIB,
            max_window: (64 * MIB).min(cache_bytes / 4),
            // Three 8 MiB requests in flight per reader: with one (8 blocks), each request
            // waited for the previous to be consumed, and a cold sequential read was about
            // 30% slower (BENCHMARKS.md).
            max_inflight_per_handle: 24,
            // A quarter of the budget, at most 64 MiB: 100 files read at once with a 64 MiB
            // cache peaked at 212 MiB of RSS while fetch buffers were not counted.
            max_inflight_total: (cache_bytes / MIB / 4).clamp(1, 64) as usize,
        }
    }
}

/// Why a block could not be fetched; cloned to every reader waiting on that block.
#[derive(Debug, Clone)]
struct FetchFailure {
    kind: Kind,
    message: String,
    /// The fetch was a prefetch: a reader that joined it retries with its own fetch.
    prefetch: bool,
}

impl FetchFailure {
    fn to_error(&self) -> Error {
        Error::new(self.kind, self.message.clone())
    }
}

type BlockResult = std::result::Result<Bytes, FetchFailure>;
/// One block being fetched: readers subscribe and wait for `Some`.
type Slot = watch::Sender<Option<BlockResult>>;

struct Blocks {
    cache: BlockCache,
    inflight: HashMap<BlockKey, Arc<Slot>>,
}

/// The URL state of one remote file, shared by its open handles and fetch tasks.
struct FileState {
    id: Arc<str>,
    url: FileUrl,
    /// One clone per open handle (fetch tasks hold the state, not this): whether a reader
    /// is alone on the file.
    handles: Arc<()>,
}

struct Files {
    /// Weak: the state lives as long as a handle or a fetch task uses it.
    map: HashMap<Arc<str>, Weak<FileState>>,
    /// Dead entries are swept when the map reaches this size (amortised O(1)).
    sweep_at: usize,
}

struct Shared {
    client: Arc<dyn MediaClient>,
    config: ReadConfig,
    params: WindowParams,
    max_run_blocks: u64,
    blocks: Mutex<Blocks>,
    permits: Arc<Semaphore>,
    files: Mutex<Files>,
    /// Blocks asked for by reads that were in the cache, and those that were not.
    hits: AtomicU64,
    misses: AtomicU64,
}

/// The read path of one mount, shared by all its open files.
pub struct Reader {
    shared: Arc<Shared>,
}

/// Per-open-file-handle state; `Send + Sync`, reads may run concurrently on one handle.
pub struct ReadHandle {
    shared: Arc<Shared>,
    file: Arc<FileState>,
    /// This handle's count in `file.handles`.
    _counted: Arc<()>,
    size: u64,
    readahead: Mutex<Readahead>,
    /// Prefetched blocks of this handle still in flight (decremented by the fetch tasks).
    prefetch_inflight: Arc<AtomicUsize>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Critical sections here do not leave data half-updated; keep serving after a panic.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

enum Pending {
    Ready(Bytes),
    Wait(watch::Receiver<Option<BlockResult>>),
}

/// A run of adjacent blocks to fetch with one request, slots already registered.
struct Run {
    first: u64,
    slots: Vec<Arc<Slot>>,
}

impl Reader {
    pub fn new(client: Arc<dyn MediaClient>, config: ReadConfig) -> Arc<Reader> {
        let mut config = config;
        config.block_size = config.block_size.max(1);
        config.max_inflight_total = config.max_inflight_total.clamp(1, Semaphore::MAX_PERMITS);
        let params = WindowParams {
            block_size: config.block_size,
            max_window: config.max_window,
            behind: SEQ_BEHIND,
            ahead: SEQ_AHEAD,
        };
        // What may be in flight is kept free of cached blocks (up to half the budget).
        let in_flight = (config.max_inflight_total as u64)
            .saturating_mul(config.block_size)
            .min(config.cache_bytes / 2);
        let max_run_blocks =
            (MAX_REQUEST_BYTES / config.block_size).clamp(1, config.max_inflight_total as u64);
        let shared = Shared {
            client,
            params,
            max_run_blocks,
            blocks: Mutex::new(Blocks {
                cache: BlockCache::new(config.cache_bytes.saturating_sub(in_flight)),
                inflight: HashMap::new(),
            }),
            permits: Arc::new(Semaphore::new(config.max_inflight_total)),
            files: Mutex::new(Files {
                map: HashMap::new(),
                sweep_at: 64,
            }),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            config,
        };
        Arc::new(Reader {
            shared: Arc::new(shared),
        })
    }

    /// Per-open-file-handle state. `url`: the signed URL from the listing if known (else
    /// fetched on first read). `size`: the file size from the listing.
    pub fn open(self: &Arc<Self>, file_id: &str, size: u64, url: Option<String>) -> ReadHandle {
        let file = {
            let mut files = lock(&self.shared.files);
            match files.map.get(file_id).and_then(Weak::upgrade) {
                Some(file) => {
                    if let Some(url) = &url {
                        file.url.offer(url);
                    }
                    file
                }
                None => {
                    if files.map.len() >= files.sweep_at {
                        files.map.retain(|_, w| w.strong_count() > 0);
                        files.sweep_at = (files.map.len() * 2).max(64);
                    }
                    let file = Arc::new(FileState {
                        id: Arc::from(file_id),
                        url: FileUrl::new(url),
                        handles: Arc::new(()),
                    });
                    files
                        .map
                        .insert(Arc::clone(&file.id), Arc::downgrade(&file));
                    file
                }
            }
        };
        ReadHandle {
            shared: Arc::clone(&self.shared),
            _counted: Arc::clone(&file.handles),
            file,
            size,
            readahead: Mutex::new(Readahead::default()),
            prefetch_inflight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Starts fetching a file that fits in one block as it is opened. An open of a small
    /// file is nearly always followed by a read of all of it, and the round trips between
    /// the two (the open's reply, the opener's ioctl and fstat, the read) then overlap the
    /// GET. Larger files wait for their first read: where it lands is unknown.
    pub fn fetch_if_small(&self, handle: &ReadHandle) {
        debug_assert!(Arc::ptr_eq(&self.shared, &handle.shared));
        if handle.size > 0 && handle.size <= self.shared.config.block_size {
            self.shared.prefetch(handle, 0..handle.size);
        }
    }

    /// Reads up to `size` bytes at `offset`: empty past EOF, the short tail across it.
    /// Must be called within a tokio runtime (fetches run in spawned tasks).
    pub async fn read(&self, handle: &ReadHandle, offset: u64, size: u32) -> Result<Bytes> {
        debug_assert!(Arc::ptr_eq(&self.shared, &handle.shared));
        let shared = &handle.shared;
        if size == 0 || offset >= handle.size {
            return Ok(Bytes::new());
        }
        let end = offset.saturating_add(u64::from(size)).min(handle.size);
        let bs = shared.config.block_size;
        let (ahead, sequential) = {
            let mut ra = lock(&handle.readahead);
            let ahead = ra.on_read(&shared.params, offset, end, handle.size);
            (ahead, ra.is_sequential())
        };
        let (first, last) = blocks_for(offset, end, bs);
        let pending = shared.demand(handle, first, last);
        // Prefetch after the demand fetches are registered, so they are first in line.
        if let Some(range) = ahead {
            shared.prefetch(handle, range);
        }

        let mut parts = Vec::with_capacity(pending.len());
        for (block, p) in (first..=last).zip(pending) {
            let mut result = wait(p).await;
            // A reader that joined a failed prefetch gets one fetch of its own.
            if let Err(f) = &result {
                if f.prefetch {
                    let retry = shared
                        .demand(handle, block, block)
                        .pop()
                        .expect("one block");
                    result = wait(retry).await;
                }
            }
            let data = result.map_err(|f| f.to_error())?;
            let range = block_range(block, bs, handle.size);
            let lo = offset.max(range.start) - range.start;
            let hi = end.min(range.end) - range.start;
            if (data.len() as u64) < hi {
                return Err(Error::new(
                    crate::fs::error::Kind::Io,
                    format!(
                        "file {}: block {block} has {} bytes, expected {hi}",
                        handle.file.id,
                        data.len()
                    ),
                ));
            }
            parts.push(data.slice(lo as usize..hi as usize));
        }
        // Drop-behind: a lone reader streaming a file larger than the readahead window does
        // not read its blocks again (the kernel's page cache has them), so blocks that fell
        // more than the reordering tolerance behind the stream leave the block cache. Memory
        // then stays near the window instead of the whole cache, new buffers reuse the freed
        // ones (a cold 1 GiB `dd`: 4x fewer page faults, 15 % less daemon CPU), and a stream
        // does not evict other files' blocks.
        if sequential
            && handle.size > shared.params.max_window
            && Arc::strong_count(&handle.file.handles) == 2
        {
            let behind = shared.params.behind;
            let from = (offset.saturating_sub(behind) / bs).saturating_sub(1);
            let to = end.saturating_sub(behind) / bs;
            let mut blocks = lock(&shared.blocks);
            for b in from..to {
                blocks.cache.remove(&BlockKey::new(&handle.file.id, b));
            }
        }
        if parts.len() == 1 {
            return Ok(parts.pop().expect("one part"));
        }
        let mut out = BytesMut::with_capacity((end - offset) as usize);
        for part in parts {
            out.extend_from_slice(&part);
        }
        Ok(out.freeze())
    }

    /// Learns a fresher URL (e.g. from a new listing) without a call. Ignored when no
    /// handle of the file is open (the next open passes its URL anyway).
    pub fn offer_url(&self, file_id: &str, url: &str) {
        let file = lock(&self.shared.files)
            .map
            .get(file_id)
            .and_then(Weak::upgrade);
        if let Some(file) = file {
            file.url.offer(url);
        }
    }

    /// Drops the cached blocks of one file. Fetches in flight finish but are not cached.
    pub fn invalidate(&self, file_id: &str) {
        let mut blocks = lock(&self.shared.blocks);
        blocks.cache.remove_file(file_id);
        blocks.inflight.retain(|k, _| &*k.file != file_id);
    }

    /// Drops every cached block.
    pub fn clear(&self) {
        let mut blocks = lock(&self.shared.blocks);
        blocks.cache.clear();
        blocks.inflight.clear();
    }

    /// Bytes held by the block cache now.
    pub fn cached_bytes(&self) -> u64 {
        lock(&self.shared.blocks).cache.used()
    }

    /// Blocks asked for by reads so far: (found in the cache, not found).
    pub fn cache_counts(&self) -> (u64, u64) {
        (
            self.shared.hits.load(Ordering::Relaxed),
            self.shared.misses.load(Ordering::Relaxed),
        )
    }
}

impl Drop for ReadHandle {
    fn drop(&mut self) {
        // Last user of the file's URL state: forget it. Upgrades happen under this lock, so
        // the count cannot grow meanwhile; when a fetch task still holds it, the dead entry
        // is swept later by `open`.
        let mut files = lock(&self.shared.files);
        if Arc::strong_count(&self.file) == 1 {
            let ours = files
                .map
                .get(&self.file.id)
                .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(&self.file)));
            if ours {
                files.map.remove(&self.file.id);
            }
        }
    }
}

async fn wait(p: Pending) -> BlockResult {
    match p {
        Pending::Ready(data) => Ok(data),
        Pending::Wait(mut rx) => match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone().expect("waited for Some"),
            // The fetch task's guard always sends; this is a runtime shutting down.
            Err(_) => Err(FetchFailure {
                kind: Kind::Io,
                message: "block fetch abandoned".into(),
                prefetch: false,
            }),
        },
    }
}

impl Shared {
    /// Blocks `[first, last]` for a read: cached ones now, in-flight ones joined, missing ones
    /// fetched (adjacent ones by one request each).
    fn demand(self: &Arc<Self>, h: &ReadHandle, first: u64, last: u64) -> Vec<Pending> {
        let mut out = Vec::with_capacity((last - first + 1) as usize);
        let mut runs: Vec<Run> = Vec::new();
        {
            let mut blocks = lock(&self.blocks);
            let mut prev_fetched = false;
            for b in first..=last {
                let key = BlockKey::new(&h.file.id, b);
                if let Some(data) = blocks.cache.get(&key) {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    out.push(Pending::Ready(data));
                    prev_fetched = false;
                } else if let Some(slot) = blocks.inflight.get(&key) {
                    self.misses.fetch_add(1, Ordering::Relaxed);
                    out.push(Pending::Wait(slot.subscribe()));
                    prev_fetched = false;
                } else {
                    self.misses.fetch_add(1, Ordering::Relaxed);
                    let slot = Arc::new(watch::channel(None).0);
                    out.push(Pending::Wait(slot.subscribe()));
                    blocks.inflight.insert(key, Arc::clone(&slot));
                    self.push_to_runs(&mut runs, prev_fetched, b, slot);
                    prev_fetched = true;
                }
            }
        }
        for run in runs {
            self.spawn_fetch(h, run, None);
        }
        out
    }

    /// Appends block `b` to the last run if adjacent and not full, else starts a new run.
    fn push_to_runs(&self, runs: &mut Vec<Run>, adjacent: bool, b: u64, slot: Arc<Slot>) {
        match runs.last_mut() {
            Some(run) if adjacent && (run.slots.len() as u64) < self.max_run_blocks => {
                run.slots.push(slot)
            }
            _ => runs.push(Run {
                first: b,
                slots: vec![slot],
            }),
        }
    }

    /// Starts fetches of the missing blocks of `range`, within the per-handle limit and
    /// while global permits are free (so prefetch does not queue ahead of later demand).
    fn prefetch(self: &Arc<Self>, h: &ReadHandle, range: Range<u64>) {
        let bs = self.config.block_size;
        let (first, last) = blocks_for(range.start, range.end, bs);
        let mut runs: Vec<Run> = Vec::new();
        let mut walked_to = first;
        {
            let mut blocks = lock(&self.blocks);
            let mut budget = self
                .config
                .max_inflight_per_handle
                .saturating_sub(h.prefetch_inflight.load(Ordering::Relaxed))
                .min(self.permits.available_permits());
            let mut prev_fetched = false;
            for b in first..=last {
                let key = BlockKey::new(&h.file.id, b);
                if blocks.cache.contains(&key) || blocks.inflight.contains_key(&key) {
                    prev_fetched = false;
                } else if budget == 0 {
                    break;
                } else {
                    budget -= 1;
                    let slot = Arc::new(watch::channel(None).0);
                    blocks.inflight.insert(key, Arc::clone(&slot));
                    self.push_to_runs(&mut runs, prev_fetched, b, slot);
                    prev_fetched = true;
                }
                walked_to = b + 1;
            }
        }
        lock(&h.readahead).mark_issued((walked_to * bs).min(h.size));
        for run in runs {
            h.prefetch_inflight
                .fetch_add(run.slots.len(), Ordering::Relaxed);
            self.spawn_fetch(h, run, Some(Arc::clone(&h.prefetch_inflight)));
        }
    }

    /// `prefetch_counter`: set for prefetches (the handle's in-flight count to decrement).
    fn spawn_fetch(
        self: &Arc<Self>,
        h: &ReadHandle,
        run: Run,
        prefetch_counter: Option<Arc<AtomicUsize>>,
    ) {
        let guard = RunGuard {
            shared: Arc::clone(self),
            file_id: Arc::clone(&h.file.id),
            file: Some(Arc::clone(&h.file)),
            size: h.size,
            first: run.first,
            slots: run.slots,
            prefetch_counter,
            done: false,
        };
        tokio::spawn(guard.run());
    }

    /// Reads a byte range in blocks, refreshing the signed URL before expiry and after
    /// rejection.
    async fn fetch_range(&self, file: &FileState, range: Range<u64>) -> Result<Vec<Bytes>> {
        let client = &*self.client;
        let (mut url, mut version) = file.url.get(client, &file.id).await?;
        let mut refreshes = 0;
        let len = range.end - range.start;
        loop {
            match client
                .read_range_pieces(&url, range.start, len, self.config.block_size)
                .await
            {
                Ok(data) => return Ok(data),
                Err(e)
                    if e.kind == ApiErrorKind::UrlExpired && refreshes < URL_REFRESH_ATTEMPTS =>
                {
                    refreshes += 1;
                    debug!(file_id = %file.id, refreshes, "signed URL rejected, refreshing");
                    (url, version) = file.url.refresh(client, &file.id, version).await?;
                }
                Err(e) => {
                    return Err(Error::api(
                        format_args!("read file {} bytes {}..{}", file.id, range.start, range.end),
                        e,
                    ))
                }
            }
        }
    }
}

/// Owns the slots of one run until they are completed; completes them with an error if the
/// task is dropped first, so no reader waits forever and no slot stays registered.
struct RunGuard {
    shared: Arc<Shared>,
    file_id: Arc<str>,
    /// Let go before the readers are woken: a reader that closes its handle at once must
    /// find itself the file's last user.
    file: Option<Arc<FileState>>,
    size: u64,
    first: u64,
    slots: Vec<Arc<Slot>>,
    prefetch_counter: Option<Arc<AtomicUsize>>,
    done: bool,
}

impl RunGuard {
    async fn run(mut self) {
        let shared = Arc::clone(&self.shared);
        let bs = shared.config.block_size;
        let n = self.slots.len() as u64;
        let last = self.first + n - 1;
        let range =
            block_range(self.first, bs, self.size).start..block_range(last, bs, self.size).end;
        let prefetch = self.prefetch_counter.is_some();
        // In-flight buffers are bounded globally: one permit per block.
        let _permit = Arc::clone(&shared.permits)
            .acquire_many_owned(n as u32)
            .await
            .expect("semaphore never closed");
        let started = Instant::now();
        let file = Arc::clone(self.file.as_ref().expect("held until complete"));
        let fetched = shared.fetch_range(&file, range.clone()).await;
        drop(file);
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let results: Vec<BlockResult> = match fetched {
            Ok(data) => {
                debug!(file_id = %self.file_id, first_block = self.first, last_block = last,
                       bytes = data.iter().map(Bytes::len).sum::<usize>(), elapsed_ms,
                       prefetch, "block fetch");
                split_blocks(
                    &self.file_id,
                    data,
                    &range,
                    self.first,
                    n,
                    bs,
                    self.size,
                    prefetch,
                )
            }
            Err(e) => {
                debug!(file_id = %self.file_id, first_block = self.first, last_block = last,
                       elapsed_ms, prefetch, error = %e, "block fetch failed");
                let f = FetchFailure {
                    kind: e.kind,
                    message: e.message,
                    prefetch,
                };
                vec![Err(f); n as usize]
            }
        };
        self.complete(results);
    }

    fn complete(&mut self, results: Vec<BlockResult>) {
        self.done = true;
        {
            let mut blocks = lock(&self.shared.blocks);
            for (i, (slot, result)) in self.slots.iter().zip(&results).enumerate() {
                let key = BlockKey::new(&self.file_id, self.first + i as u64);
                // Not ours any more after invalidate/clear: then the data is not cached.
                if blocks
                    .inflight
                    .get(&key)
                    .is_some_and(|s| Arc::ptr_eq(s, slot))
                {
                    blocks.inflight.remove(&key);
                    if let Ok(data) = result {
                        blocks.cache.insert(key, data.clone());
                    }
                }
            }
        }
        self.file = None;
        for (slot, result) in self.slots.iter().zip(results) {
            slot.send_replace(Some(result));
        }
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if !self.done {
            let failure = FetchFailure {
                kind: Kind::Io,
                message: format!("file {}: block fetch cancelled", self.file_id),
                prefetch: self.prefetch_counter.is_some(),
            };
            self.complete(vec![Err(failure); self.slots.len()]);
        }
        if let Some(counter) = &self.prefetch_counter {
            counter.fetch_sub(self.slots.len(), Ordering::Relaxed);
        }
    }
}

/// Checks the pieces of a run's response against its blocks. A response shorter than the
/// file size says it should be is an error (EIO) for the blocks it does not fully cover,
/// not a silent truncation. Each piece is its own allocation (see
/// [`MediaClient::read_range_pieces`]), so evicting a block frees its memory.
#[allow(clippy::too_many_arguments)]
fn split_blocks(
    file_id: &str,
    pieces: Vec<Bytes>,
    range: &Range<u64>,
    first: u64,
    n: u64,
    bs: u64,
    size: u64,
    prefetch: bool,
) -> Vec<BlockResult> {
    let expected = range.end - range.start;
    let got: u64 = pieces.iter().map(|p| p.len() as u64).sum();
    let mut pieces = pieces.into_iter();
    (first..first + n)
        .map(|b| {
            let r = block_range(b, bs, size);
            match pieces.next() {
                Some(p) if p.len() as u64 == r.end - r.start => Ok(p),
                _ => Err(FetchFailure {
                    kind: Kind::Io,
                    message: format!(
                        "file {file_id}: short read at bytes {}..{}: got {got} of {expected} bytes",
                        range.start, range.end
                    ),
                    prefetch,
                }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
