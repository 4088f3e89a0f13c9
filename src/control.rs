//! The daemon's status socket and `mediafs status`.
//!
//! Transport: a unix socket at a path derived from the mountpoint (a hash of its absolute
//! path) in a private runtime directory: `/run/mediafs` for root, else
//! `$XDG_RUNTIME_DIR/mediafs`, else `/tmp/mediafs-<uid>`; the directory is 0700 and the
//! socket 0600, so only the owner (and root) can connect. Why not the cache dir: `status`
//! is given only the mountpoint, and the cache dir cannot be derived from it (--cache-dir).
//! Why not an xattr on the mount root: with --allow-other every user could read it, and a
//! hung mount would hang `status` too. The daemon writes one JSON [`Status`] per
//! connection and closes it.

use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::stats::{Sources, Status, UploadInfo};

/// The private directory holding the status sockets of this user's mounts.
pub fn runtime_dir() -> PathBuf {
    let uid = unsafe { libc::geteuid() };
    if uid == 0 {
        return PathBuf::from("/run/mediafs");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("mediafs"),
        _ => std::env::temp_dir().join(format!("mediafs-{uid}")),
    }
}

/// The absolute path of a mountpoint without touching the mount itself (a dead or hung
/// mount must not make `status` fail or hang): its parent is resolved, not the mount root.
pub fn absolute_mountpoint(path: &Path) -> std::io::Result<PathBuf> {
    let abs = std::path::absolute(path)?;
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) if name != ".." => Ok(std::fs::canonicalize(parent)?.join(name)),
        _ => std::fs::canonicalize(&abs),
    }
}

/// The status socket of the mount at `mountpoint` (absolute, see [`absolute_mountpoint`]).
pub fn socket_path(mountpoint: &Path) -> PathBuf {
    let digest = Sha256::digest(mountpoint.as_os_str().as_encoded_bytes());
    runtime_dir().join(format!("{}.sock", hex::encode(&digest[..12])))
}

/// Creates the runtime directory (0700) or checks that an existing one is ours and private.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() || meta.uid() != unsafe { libc::geteuid() } {
        bail!("{} is not a directory of ours", dir.display());
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// The daemon side: serves [`Status`] on the mount's socket until the returned guard's
/// [`Listener::close`]. Must be called within a Tokio runtime.
pub struct Listener {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Listener {
    pub fn start(sources: Arc<Sources>) -> anyhow::Result<Listener> {
        let path = socket_path(&sources.mountpoint);
        private_dir(path.parent().expect("socket in a directory"))?;
        // Left over by a daemon that was killed: nobody can be serving this mountpoint now
        // (we are about to mount it).
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path)
            .with_context(|| format!("status socket {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    // Out of file descriptors, most likely: do not spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let status = sources.status();
                tokio::spawn(async move {
                    if let Ok(json) = serde_json::to_vec(&status) {
                        let _ = conn.write_all(&json).await;
                    }
                    let _ = conn.shutdown().await;
                });
            }
        });
        Ok(Listener { path, task })
    }

    /// Stops serving and removes the socket.
    pub fn close(self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The client side: asks the daemon of `mountpoint` for its status.
pub fn query(mountpoint: &Path) -> anyhow::Result<Status> {
    let abs = absolute_mountpoint(mountpoint)
        .with_context(|| format!("mountpoint {}", mountpoint.display()))?;
    let path = socket_path(&abs);
    let mut conn = std::os::unix::net::UnixStream::connect(&path).with_context(|| {
        format!(
            "no mediafs daemon answers for {} (status socket {})",
            abs.display(),
            path.display()
        )
    })?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::new();
    conn.read_to_end(&mut buf)
        .with_context(|| format!("reading the status of {}", abs.display()))?;
    serde_json::from_slice(&buf).context("the daemon's answer is not a status report")
}

/// `mediafs status MOUNTPOINT [--json]`: returns the exit code (1: daemon unreachable).
pub fn status_command(mountpoint: &Path, json: bool) -> i32 {
    match query(mountpoint) {
        Ok(st) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&st).expect("status serialises")
                );
            } else {
                print!("{}", render(&st));
            }
            0
        }
        Err(e) => {
            eprintln!("mediafs: {e:#}");
            1
        }
    }
}

fn size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

fn upload_line(kind: &str, u: &UploadInfo) -> String {
    let mut line = format!(
        "    {kind:<9} {}  {}  {} ago",
        u.name,
        size(u.size),
        duration(u.age_secs)
    );
    if let Some(e) = &u.last_error {
        line.push_str(&format!("  last error: {e}"));
    }
    if let Some(p) = &u.data_path {
        line.push_str(&format!("  data: {}", p.display()));
    }
    line.push('\n');
    line
}

/// The human-readable form of a status report.
pub fn render(st: &Status) -> String {
    let mut out = format!("mediafs {} on {}\n", st.version, st.mountpoint.display());
    out.push_str(&format!("  remote:    {}\n", st.remote));
    out.push_str(&format!(
        "  daemon:    pid {}, up {} (since {}), {}\n",
        st.pid,
        duration(st.uptime_secs),
        st.started_at,
        if st.read_only {
            "read-only"
        } else {
            "read-write"
        }
    ));
    let unfinished = st.unfinished();
    out.push_str(&format!(
        "  uploads:   {} pending ({} being sent now)\n",
        unfinished.len(),
        st.uploads_in_flight.len()
    ));
    for (u, sending) in unfinished {
        out.push_str(&upload_line(
            if sending { "uploading" } else { "pending" },
            u,
        ));
    }
    let rate = st
        .cache
        .hit_rate
        .map_or("n/a".to_string(), |r| format!("{:.1}%", r * 100.0));
    out.push_str(&format!(
        "  cache:     {} of {} used, hit rate {rate} ({} hits, {} misses)\n",
        size(st.cache.used_bytes),
        size(st.cache.capacity_bytes),
        st.cache.hits,
        st.cache.misses
    ));
    let list = |m: &std::collections::BTreeMap<String, u64>| {
        if m.is_empty() {
            "none".to_string()
        } else {
            m.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    out.push_str(&format!("  requests:  {}\n", list(&st.requests)));
    out.push_str(&format!("  errors:    {}\n", list(&st.errors)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::CacheInfo;

    fn upload(name: &str, size: u64) -> UploadInfo {
        UploadInfo {
            name: name.into(),
            size,
            age_secs: 3,
            last_error: None,
            data_path: None,
        }
    }

    fn status(pending: Vec<UploadInfo>, in_flight: Vec<UploadInfo>) -> Status {
        Status {
            version: "0".into(),
            pid: 1,
            mountpoint: "/m".into(),
            remote: "http://x".into(),
            read_only: false,
            started_at: "2026-01-01T00:00:00Z".into(),
            uptime_secs: 1,
            pending_uploads: pending,
            uploads_in_flight: in_flight,
            cache: CacheInfo {
                used_bytes: 0,
                capacity_bytes: 1,
                hits: 0,
                misses: 0,
                hit_rate: None,
            },
            requests: Default::default(),
            errors: Default::default(),
            errors_by_request: vec![],
        }
    }

    #[test]
    fn an_upload_being_sent_is_listed_once() {
        let out = render(&status(
            vec![upload("a.bin", 5), upload("b.bin", 7)],
            vec![upload("a.bin", 5)],
        ));
        assert!(
            out.contains("uploads:   2 pending (1 being sent now)"),
            "{out}"
        );
        assert_eq!(out.matches("a.bin").count(), 1, "{out}");
        assert!(out.contains("uploading a.bin"), "{out}");
        assert!(out.contains("pending   b.bin"), "{out}");
    }

    #[test]
    fn an_upload_in_flight_outside_the_pending_list_still_counts() {
        let out = render(&status(vec![], vec![upload("c.bin", 1)]));
        assert!(
            out.contains("uploads:   1 pending (1 being sent now)"),
            "{out}"
        );
        assert!(out.contains("uploading c.bin"), "{out}");
    }
}
