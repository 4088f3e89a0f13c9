//! Crash recovery helpers of the write path: staging leftovers, sidecar discovery,
//! orphan cleanup, and the cache dir lock (two daemons never share a cache dir).

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use uuid::Uuid;

use super::staging::{Dirs, Location, Sidecar};
use crate::fs::error::{Error, Result};

/// Staging leftovers of a crashed run: anything with changes goes to the pending area.
pub(super) fn recover_staging(dirs: &Dirs, id: Uuid, meta: &Path) {
    let data = [Location::Staging, Location::Pending]
        .into_iter()
        .map(|l| dirs.data_path(l, id))
        .find(|p| p.exists());
    let sidecar = match Sidecar::read(meta) {
        Ok(s) => s,
        Err(e) => {
            if data.is_none() {
                // A crash while the first sidecar was written (the data file comes after it).
                tracing::warn!(
                    "{}: interrupted sidecar without data, removed",
                    meta.display()
                );
                let _ = fs::remove_file(meta);
            } else {
                tracing::error!("cannot read {}: {e} (left in place)", meta.display());
            }
            return;
        }
    };
    let Some(data) = data else {
        tracing::warn!("{}: sidecar without data, removed", meta.display());
        let _ = fs::remove_file(meta);
        return;
    };
    if sidecar.synced {
        let _ = fs::remove_file(&data);
        let _ = fs::remove_file(meta);
        return;
    }
    let size = fs::metadata(&data).map_or(0, |m| m.len());
    let to_data = dirs.data_path(Location::Pending, id);
    let to_meta = dirs.meta_path(Location::Pending, id);
    let moved = fs::rename(&data, &to_data).and_then(|()| fs::rename(meta, &to_meta));
    match moved {
        Ok(()) => tracing::info!(
            file = %sidecar.name,
            size,
            "a write interrupted by a crash is uploaded with what had been written"
        ),
        Err(e) => tracing::error!("moving {} to the pending area: {e}", meta.display()),
    }
}

/// `<uuid>.json` sidecars in `dir`, oldest first (ids are UUIDv7).
pub(super) fn sidecars(dir: &Path) -> Vec<(Uuid, std::path::PathBuf)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            let name = path.file_name()?.to_str()?;
            let id = Uuid::parse_str(name.strip_suffix(".json")?).ok()?;
            Some((id, path))
        })
        .collect();
    out.sort();
    out
}

/// Removes interrupted sidecar writes and data files without a sidecar anywhere.
pub(super) fn remove_orphans(dir: &Path, dirs: &Dirs) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(".json.tmp") {
            let _ = fs::remove_file(&path);
            continue;
        }
        let Some(id) = name
            .strip_suffix(".data")
            .and_then(|s| Uuid::parse_str(s).ok())
        else {
            continue;
        };
        let has_sidecar = [Location::Staging, Location::Pending]
            .into_iter()
            .any(|l| dirs.meta_path(l, id).exists());
        if has_sidecar {
            continue;
        }
        match fs::metadata(&path) {
            Ok(m) if m.len() == 0 => {
                let _ = fs::remove_file(&path);
            }
            _ => tracing::warn!(
                "{}: data without a sidecar, left in place (cannot tell where it belongs)",
                path.display()
            ),
        }
    }
}

/// `flock(LOCK_EX | LOCK_NB)` on `<cache_dir>/lock`, held as long as the file stays open.
pub(super) fn take_lock(root: &Path) -> Result<File> {
    let path = root.join("lock");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(Error::new(
                crate::fs::error::Kind::Busy,
                format!(
                    "cache dir {} in use by another mediafs (lock {} is held)",
                    root.display(),
                    path.display()
                ),
            ));
        }
        return Err(Error::io(format!("locking {}", path.display()), err));
    }
    Ok(file)
}
