//! Files and directories private to their owner: directories 0700, files 0600, never
//! following a symbolic link planted where mediafs writes.
//!
//! Policy for what already exists: a directory or file owned by the running user with
//! group/other permission bits gets them removed (older mediafs versions created 0755/0644;
//! the fix is logged); anything owned by another user, a symbolic link where a file is
//! expected, or a directory writable by others (e.g. /tmp) is refused with a message that
//! says why.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context as _};

fn euid() -> u32 {
    unsafe { libc::geteuid() }
}

/// Creates `dir` and missing parents with mode 0700, or makes an existing one private.
pub fn ensure_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let meta = std::fs::metadata(dir).with_context(|| format!("checking {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    if meta.uid() != euid() {
        bail!(
            "{} belongs to uid {}, not to you (uid {}): refusing to keep private data there",
            dir.display(),
            meta.uid(),
            euid()
        );
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o1002 != 0 {
        bail!(
            "{} is writable by other users (mode {mode:o}): choose a private directory",
            dir.display()
        );
    }
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o700))
            .with_context(|| format!("making {} private", dir.display()))?;
        tracing::info!(path = %dir.display(), "was mode {mode:o}; now private (0700)");
    }
    Ok(())
}

/// Checks an existing file that must be private and fixes its mode; a missing file is
/// fine. Refuses a symbolic link, a non-regular file and another user's file.
pub fn fix_file(path: &Path) -> anyhow::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("checking {}", path.display())),
    };
    check_file(path, &meta)?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700))
            .with_context(|| format!("making {} private", path.display()))?;
        tracing::info!(path = %path.display(), "was mode {mode:o}; now private (0600)");
    }
    Ok(())
}

fn check_file(path: &Path, meta: &std::fs::Metadata) -> anyhow::Result<()> {
    if meta.file_type().is_symlink() {
        bail!(
            "{} is a symbolic link: refusing to follow it (remove it)",
            path.display()
        );
    }
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    if meta.uid() != euid() {
        bail!(
            "{} belongs to uid {}, not to you (uid {}): refusing to use it",
            path.display(),
            meta.uid(),
            euid()
        );
    }
    Ok(())
}

/// Opens `path` for appending (a log), creating it 0600. A symbolic link is never
/// followed; an existing file must be a regular file of the running user, and loses
/// group/other permissions.
pub fn open_append(path: &Path) -> anyhow::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        // NONBLOCK: a planted FIFO must not hang the open; regular files ignore it.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                anyhow::anyhow!(
                    "{} is a symbolic link: refusing to follow it (remove it)",
                    path.display()
                )
            } else {
                anyhow::Error::new(e).context(format!("opening {}", path.display()))
            }
        })?;
    let meta = file.metadata()?;
    check_file(path, &meta)?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(mode & 0o700))?;
        tracing::info!(path = %path.display(), "was mode {mode:o}; now private (0600)");
    }
    Ok(file)
}

/// Creates a new file with mode 0600; fails if anything (file or link) is at `path`.
pub fn create_new(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Replaces `path` with a new 0600 file holding `bytes`: written to a fresh file next to
/// it, then renamed over it, so a file or link planted at `path` is replaced, never
/// written through, and never lends its mode.
pub fn replace(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let temp = path.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        uuid::Uuid::new_v4().simple()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = create_new(&temp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn dirs_are_created_private_and_loose_ones_fixed() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b");
        ensure_dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
        assert_eq!(mode(&t.path().join("a")), 0o700);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let e = ensure_dir(&d).unwrap_err().to_string();
        assert!(e.contains("writable by other users"), "{e}");
    }

    #[test]
    fn files_fixed_links_refused() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        fix_file(&f).unwrap();
        assert_eq!(mode(&f), 0o600);
        fix_file(&t.path().join("missing")).unwrap();
        let target = t.path().join("target");
        std::fs::write(&target, b"keep").unwrap();
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(fix_file(&link)
            .unwrap_err()
            .to_string()
            .contains("symbolic link"));
        let e = open_append(&link).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert!(create_new(&link).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    }

    #[test]
    fn append_creates_0600_and_fixes_mode() {
        let t = tempfile::tempdir().unwrap();
        let log = t.path().join("log");
        drop(open_append(&log).unwrap());
        assert_eq!(mode(&log), 0o600);
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(open_append(&log).unwrap());
        assert_eq!(mode(&log), 0o600);
    }

    #[test]
    fn replace_never_writes_through_a_planted_file_or_link() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("token");
        std::fs::write(&p, b"planted").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        replace(&p, b"secret").unwrap();
        assert_eq!(mode(&p), 0o600);
        assert_eq!(std::fs::read(&p).unwrap(), b"secret");
        let target = t.path().join("target");
        std::fs::write(&target, b"keep").unwrap();
        std::fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink(&target, &p).unwrap();
        replace(&p, b"secret").unwrap();
        assert_eq!(mode(&p), 0o600);
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 2);
    }
}
