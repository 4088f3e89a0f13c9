//! Settings of the filesystem core, one struct per layer (built from the mount flags in
//! one place, `mount::core_config`).

use std::path::PathBuf;
use std::time::Duration;

use crate::fs::read::ReadConfig;
use crate::fs::write::WriteConfig;

/// Settings of the namespace and the attributes it shows.
#[derive(Debug, Clone)]
pub struct FsConfig {
    pub uid: u32,
    pub gid: u32,
    pub file_mode: u16,
    pub dir_mode: u16,
    /// How long a directory listing is trusted before it is fetched again.
    pub dir_ttl: Duration,
    pub read_only: bool,
    /// The database of local attributes (`chmod`, `chown`, `utimens`): opened by a
    /// writable mount, and by a read-only one if it exists. `None`: kept in memory only.
    pub attrs_db: Option<PathBuf>,
}

impl Default for FsConfig {
    fn default() -> Self {
        FsConfig {
            uid: unsafe { libc::getuid() },
            gid: unsafe { libc::getgid() },
            file_mode: 0o644,
            dir_mode: 0o755,
            dir_ttl: Duration::from_secs(30),
            read_only: false,
            attrs_db: None,
        }
    }
}

/// Settings of the whole core. `write` is `None` for a read-only mount (no cache dir is
/// created or locked then).
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub fs: FsConfig,
    pub read: ReadConfig,
    pub write: Option<WriteConfig>,
}
