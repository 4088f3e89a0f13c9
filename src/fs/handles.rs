//! The open-handle table: what each file handle the kernel holds reads from or writes to.
//! Read handles are counted per remote file id in [`OpenReaders`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::err;
use crate::fs::attr::DirEntry;
use crate::fs::error::Result;
use crate::fs::namespace::Ino;
use crate::fs::read::ReadHandle;
use crate::fs::readers::OpenReaders;
use crate::fs::write::StagedFile;

pub enum Handle {
    Read {
        ino: Ino,
        file_id: String,
        reader: Arc<ReadHandle>,
    },
    Write {
        ino: Ino,
        staged: Arc<StagedFile>,
        /// The process that opened it (see [`crate::fs::process`]); `None` if unknown.
        opener: Option<u32>,
    },
    /// Opened read-only while the file has a staged copy: reads that copy and never
    /// uploads (its close must not report, nor retry, the writer's upload).
    StagedRead {
        ino: Ino,
        staged: Arc<StagedFile>,
    },
    Dir {
        entries: Arc<Vec<DirEntry>>,
    },
}

/// Where a read handle's bytes come from.
pub enum Source {
    Remote(Arc<ReadHandle>),
    Staged(Arc<StagedFile>),
}

pub struct Handles {
    table: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    readers: Arc<OpenReaders>,
}

impl Handles {
    pub fn new(readers: Arc<OpenReaders>) -> Self {
        Handles {
            table: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            readers,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Handle>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add(&self, h: Handle) -> u64 {
        if let Handle::Read { file_id, .. } = &h {
            self.readers.opened(file_id);
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(fh, h);
        fh
    }

    /// Takes the handle out of the table. For a read handle, also returns the remote id to
    /// delete now if it was replaced while open and this was its last reader.
    pub fn remove(&self, fh: u64) -> (Option<Handle>, Option<String>) {
        let h = self.lock().remove(&fh);
        let delete = match &h {
            Some(Handle::Read { file_id, .. }) if self.readers.closed(file_id) => {
                Some(file_id.clone())
            }
            _ => None,
        };
        (h, delete)
    }

    /// The entries of an open directory, as snapshotted at opendir.
    pub fn dir_entries(&self, fh: u64) -> Result<Arc<Vec<DirEntry>>> {
        match self.lock().get(&fh) {
            Some(Handle::Dir { entries }) => Ok(entries.clone()),
            _ => Err(err!(BadHandle, "bad directory handle {fh}")),
        }
    }

    pub fn source(&self, fh: u64) -> Result<Source> {
        match self.lock().get(&fh) {
            Some(Handle::Read { reader, .. }) => Ok(Source::Remote(reader.clone())),
            Some(Handle::Write { staged, .. } | Handle::StagedRead { staged, .. }) => {
                Ok(Source::Staged(staged.clone()))
            }
            _ => Err(err!(BadHandle, "bad file handle {fh}")),
        }
    }

    /// The staged file of a handle open for writing.
    pub fn writer(&self, fh: u64) -> Result<(Ino, Arc<StagedFile>)> {
        self.writer_and_opener(fh)
            .map(|(ino, staged, _)| (ino, staged))
    }

    /// [`Self::writer`], and the process that opened the handle.
    pub fn writer_and_opener(&self, fh: u64) -> Result<(Ino, Arc<StagedFile>, Option<u32>)> {
        match self.lock().get(&fh) {
            Some(Handle::Write {
                ino,
                staged,
                opener,
            }) => Ok((*ino, staged.clone(), *opener)),
            Some(_) => Err(err!(BadHandle, "handle {fh} is not open for writing")),
            None => Err(err!(BadHandle, "bad file handle {fh}")),
        }
    }

    /// Whether some handle still has `staged` open for writing.
    pub fn has_writer(&self, staged: &Arc<StagedFile>) -> bool {
        self.lock()
            .values()
            .any(|h| matches!(h, Handle::Write { staged: s, .. } if Arc::ptr_eq(s, staged)))
    }
}
